"""The form guard: each document request of a tab (and of its same-origin frames) is held until
it is known to send no form that a reviewer did not see."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from playwright.async_api import CDPSession, Page
from playwright.async_api import Error as PlaywrightError

from browser.submission import Submission


@dataclass
class FormGuard:
    """Holds each document request for `_check`; counts those it lets through."""

    #: tells the next report what was blocked
    tell: Callable[[str], None]
    #: the submission the current action may send, once (see `_check`)
    allowed: Submission | None = None
    #: document requests let through so far: an action that started one waits for it to settle
    documents: int = 0
    _running: set[asyncio.Future[None]] = field(default_factory=set)

    async def watch(self, page: Page) -> None:
        """Hold each document request of the page (and of its same-origin frames) for `_check`.
        Only documents: holding every request would slow every page down."""
        session = await page.context.new_cdp_session(page)

        session.on("Fetch.requestPaused", lambda event: self.spawn(self._check(session, event)))
        pattern = {"urlPattern": "*", "resourceType": "Document", "requestStage": "Request"}
        await session.send("Fetch.enable", {"patterns": [pattern]})

    async def _check(self, session: CDPSession, event: dict[str, Any]) -> None:
        """Let a document request through, unless it sends a form (POST and the like) that no
        approved call is sending: a page script cannot submit what a reviewer did not see."""
        request, held = event["request"], {"requestId": event["requestId"]}
        method, url = str(request["method"]), str(request["url"])
        headers = {k.lower(): str(v) for k, v in dict(request.get("headers") or {}).items()}
        body = _body(request)
        with contextlib.suppress(PlaywrightError):  # the page or the browser went meanwhile
            if method != "GET":
                allowed, self.allowed = self.allowed, None
                sends = headers.get("content-type", ""), body
                if allowed is None or not allowed.matches(method, url, *sends):
                    self.tell(
                        f"the page tried to send a form ({method} to {url}) that no approval "
                        "covers (sent by a script, or changed after it was read), and it was "
                        "blocked; submit with browser_click on its submit button or "
                        "browser_submit, which ask a reviewer first"
                    )
                    # 204 No Content: the navigation ends where it began, the page as it was.
                    answer = {**held, "responseCode": 204, "responseHeaders": []}
                    await session.send("Fetch.fulfillRequest", answer)
                    return
            self.documents += 1
            await session.send("Fetch.continueRequest", held)

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` from an event callback, keeping hold of it until it is done."""
        task = asyncio.ensure_future(work)
        self._running.add(task)
        task.add_done_callback(self._running.discard)


def _body(request: dict[str, Any]) -> bytes:
    """A paused request's body, as DevTools gives it (whole, or in entries)."""
    entries = request.get("postDataEntries")
    if entries:
        return b"".join(base64.b64decode(str(e.get("bytes") or "")) for e in entries)
    return str(request.get("postData") or "").encode("utf-8", errors="surrogateescape")
