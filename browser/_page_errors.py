"""Playwright's errors (and the page script's), said once, here: a `PageError` for the model, or
a `SandboxError` when the browser itself is gone."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator

from playwright.async_api import Error as PlaywrightError
from playwright.async_api import TimeoutError as PlaywrightTimeout

from base.errors import ErrorCode, SandboxError
from browser import _script
from browser.errors import PageError


@contextlib.contextmanager
def page_errors(what: str) -> Iterator[None]:
    """Playwright's errors, said once, here, for the model; a lost browser is the program's."""
    try:
        yield
    except _script.TargetError as exc:
        raise PageError(f"{what}: {exc}", code=ErrorCode.BAD_TARGET) from None
    except _script.PageScriptError:
        raise PageError(
            f"{what}: the page interfered with the runtime's page script; try again after "
            "reloading it",
            code=ErrorCode.PAGE_ERROR,
        ) from None
    except PlaywrightTimeout as exc:
        raise PageError(
            f"{what}: timed out ({_first_line(exc)})", code=ErrorCode.ELEMENT_NOT_READY
        ) from None
    except PlaywrightError as exc:
        message = _first_line(exc)
        if "has been closed" in message or "Target closed" in message:
            if "Browser has been closed" in message or "browser has been closed" in message:
                raise SandboxError(
                    f"the task's browser went away while {what}: {message}"
                ) from None
            raise PageError(
                f"{what}: the tab closed meanwhile; browser_tabs shows those left",
                code=ErrorCode.TAB_CLOSED,
            ) from None
        if "ERR_BLOCKED_BY_ADMINISTRATOR" in message:
            raise PageError(
                f"{what}: refused: the browser may not open this URL", code=ErrorCode.REFUSED
            ) from None
        if "ERR_TUNNEL_CONNECTION_FAILED" in message or "ERR_PROXY" in message:
            raise PageError(
                f"{what}: the egress proxy could not connect: the host is not in this task's "
                "allowlist, or it did not answer",
                code=ErrorCode.REFUSED,
            ) from None
        raise PageError(f"{what}: {message}") from None


async def mapped(what: str, action: Callable[[], Awaitable[object]]) -> object:
    """Run `action`, its errors said as `page_errors` says them."""
    with page_errors(what):
        return await action()


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip() and "=====" not in line]
    return lines[0].removeprefix("Error: ").strip() if lines else type(exc).__name__
