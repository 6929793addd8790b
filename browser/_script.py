"""The page script (page.js) and typed calls into it.

A call is one evaluate of a small function that calls `window.__agent`. Only when the document
has no agent yet (a fresh document, a new frame) does it answer null, and a second evaluate sends
the whole script, which installs itself and answers. Sending the script on every call would cost
about a millisecond more each time (it is some 25 kB); a driver that adds `SOURCE` as an init
script (`BrowserContext.add_init_script`) makes the second evaluate rare.

The page's own scripts share the main world with the agent and can tamper with `window.__agent`,
so what comes back is validated like any outside data. Two errors:

    AgentError
    └── PageScriptError   the script's answer is malformed (the page replaced the script)
    ValueError
    └── TargetError       a target or ref cannot be used: for the model to see and correct
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final, Literal, TypeVar, get_args

from playwright.async_api import Frame, Locator
from pydantic import BaseModel, ConfigDict, StrictBool, StrictInt, TypeAdapter, ValidationError

from base.errors import AgentError, ErrorCode

SOURCE: Final = resources.files("browser").joinpath("page.js").read_text(encoding="utf-8")
#: the init script that notes which elements the page listens to for input (listeners.js)
LISTENERS: Final = resources.files("browser").joinpath("listeners.js").read_text(encoding="utf-8")

T = TypeVar("T")

TargetKind = Literal["ref", "text", "label", "placeholder", "name", "css"]
TARGET_KINDS: Final[frozenset[str]] = frozenset(get_args(TargetKind))


class PageScriptError(AgentError):
    """The page script answered with something of the wrong shape (the page replaced it?)."""

    code = ErrorCode.BROWSER_PAGE_SCRIPT


class TargetError(ValueError):
    """A target is not exactly one known key, a CSS selector is invalid, or a ref is unknown."""


@dataclass(frozen=True)
class FrameSnapshot:
    """One frame's text view; `frames` are the refs of its iframes whose placeholders
    (`{{frame <ref>}}`) are in `text`, in document order."""

    text: str
    truncated: bool
    frames: tuple[str, ...]
    #: how many times the frame's document changed since its last snapshot (0 the first time)
    changes: int = 0


@dataclass(frozen=True)
class Candidate:
    """An element a target matched: `line` is how the snapshot shows it."""

    ref: str
    role: str
    name: str
    tag: str
    line: str


@dataclass(frozen=True)
class FormField:
    """One name/value pair a form would send (a password's value is masked with bullets)."""

    name: str
    label: str
    type: str
    value: str


@dataclass(frozen=True)
class FormInfo:
    """Where a form would go and what it would send; `submitter` says whether the element asked
    about is the control that submits it (its formaction/formmethod are then applied)."""

    action: str
    method: str
    fields: tuple[FormField, ...]
    submitter: bool


class _Reply(BaseModel):
    model_config = ConfigDict(extra="forbid")
    error: str | None = None


class FindReply(_Reply):
    """What a find answered: the elements it found (at most 20)."""

    candidates: list[Candidate] = []


class _FormReply(_Reply):
    form: FormInfo | None = None


class OneReply(FindReply):
    """What `one` found, and (when it found exactly one element) what it read or set: `value`,
    or why it could not (`refused`, or the select's `options` when none fitted)."""

    value: Any = None
    refused: str | None = None
    options: list[str] | None = None


@dataclass(frozen=True)
class _Call:
    """One method of `window.__agent`, as the two functions an evaluate may send."""

    fast: str
    install: str

    @classmethod
    def of(cls, call: str) -> _Call:
        # page.js is a statement (`window.__agent ??= ...`): as a function body's first statement
        # it installs the agent unless the document has one.
        return cls(
            fast=f"(a) => window.__agent ? window.__agent.{call} : null",
            install=f"(a) => {{\n{SOURCE}\nreturn window.__agent.{call};\n}}",
        )

    async def __call__(self, frame: Frame, arg: Any) -> Any:
        raw = await frame.evaluate(self.fast, arg)
        if raw is None:
            raw = await frame.evaluate(self.install, arg)
        return raw


_SNAPSHOT: Final = _Call.of("snapshot(a)")
_FIND: Final = _Call.of("find(a.target, a.prefix)")
_FORM_OF: Final = _Call.of("formOf(a)")
_ONE: Final = _Call.of("one(a)")

_SNAPSHOT_ADAPTER: Final = TypeAdapter(FrameSnapshot)
_FIND_ADAPTER: Final = TypeAdapter(FindReply)
_FORM_ADAPTER: Final = TypeAdapter(_FormReply)
_ONE_ADAPTER: Final = TypeAdapter(OneReply)


def _parse(adapter: TypeAdapter[T], raw: Any, call: str) -> T:
    try:
        return adapter.validate_python(raw)
    except ValidationError as e:
        raise PageScriptError(
            f"the page script's answer to {call} is malformed", call=call, errors=e.errors()
        ) from e


async def snapshot_frame(
    frame: Frame, prefix: str, max_chars: int, *, boxes: bool = False
) -> FrameSnapshot:
    """Snapshot one frame (not its child frames) as text of at most `max_chars` characters;
    with `boxes`, each control's box in the frame's CSS pixels (`box=x,y,width,height`).

    Refs given in this frame start with `prefix` ("e" for the main frame). Raises
    `PageScriptError` on a malformed answer, and Playwright's `Error` if the frame is detached or
    navigates away during the call.
    """
    raw = await _SNAPSHOT(frame, {"prefix": prefix, "maxChars": max_chars, "boxes": boxes})
    return _parse(_SNAPSHOT_ADAPTER, raw, "snapshot")


async def find(
    frame: Frame, target: Mapping[str, str], *, prefix: str | None = None
) -> list[Candidate]:
    """The visible elements of one frame that `target` matches, at most 20, best first.

    `target` has exactly one of the keys ref, text, label, placeholder, name, css. Elements found
    get refs (with `prefix`, by default the one of this frame's last snapshot). Raises
    `TargetError` for a malformed target or an invalid CSS selector.
    """
    kinds = [k for k in target if k in TARGET_KINDS]
    if len(target) != 1 or len(kinds) != 1:
        raise TargetError(
            f"a target has exactly one of {', '.join(sorted(TARGET_KINDS))}; got {sorted(target)}"
        )
    raw = await _FIND(frame, {"target": dict(target), "prefix": prefix})
    reply = _parse(_FIND_ADAPTER, raw, "find")
    if reply.error is not None:
        raise TargetError(reply.error)
    return reply.candidates


async def form_of(frame: Frame, ref: str) -> FormInfo | None:
    """The form the element `ref` would submit, or None when it is in no form.

    Raises `TargetError` when `ref` names no element attached to this frame's document.
    """
    raw = await _FORM_OF(frame, ref)
    reply = _parse(_FORM_ADAPTER, raw, "formOf")
    if reply.error is not None:
        raise TargetError(reply.error)
    return reply.form


async def one(
    frame: Frame,
    target: Mapping[str, str],
    op: Literal["text", "rows", "select"],
    arg: str | None = None,
    *,
    prefix: str | None = None,
) -> OneReply:
    """Find `target` in one frame and, if it is exactly one element, read its text (`text`), its
    rows of cell texts (`rows`), or choose the option `arg` of it (`select`), in one evaluate.

    Raises `TargetError` for a malformed target or an invalid CSS selector.
    """
    raw = await _ONE(frame, {"target": dict(target), "prefix": prefix, "op": op, "arg": arg})
    reply = _parse(_ONE_ADAPTER, raw, "one")
    if reply.error is not None:
        raise TargetError(reply.error)
    return reply


@dataclass(frozen=True)
class ClickCheck:
    """What a click on an element would meet: the controls inside it, and what covers it."""

    controls: list[Candidate]
    covered: str | None = None


_CHECK_ADAPTER: Final = TypeAdapter(ClickCheck)


class Press(BaseModel):
    """Where the mouse press of a click landed: on the element (`landed`), or on `on`; `landed`
    is None when no press was seen (the page went away, or the script was replaced)."""

    model_config = ConfigDict(frozen=True)
    landed: bool | None
    on: str


_PRESS_ADAPTER: Final = TypeAdapter(Press)


_PRESSED: Final = _Call.of("pressed()")
_MARKS: Final = _Call.of("marks(a)")
_COUNT_ADAPTER: Final = TypeAdapter(StrictInt)
_YES_ADAPTER: Final = TypeAdapter(StrictBool)
_MAYBE_ADAPTER: Final = TypeAdapter(StrictBool | None)


async def _on_element(element: Locator, call: str, arg: Any, default: Any) -> Any:
    """One method of `window.__agent` in the element's document (`call` names the element `el`
    and the argument `a`); `default` when the document has no page script (it was replaced
    meanwhile: a located element's document had one)."""
    fallback = json.dumps(default)
    return await element.evaluate(
        f"(el, a) => window.__agent ? window.__agent.{call} : {fallback}", arg
    )


async def pressed(frame: Frame) -> Press:
    """Where the press of the click since the frame's last `click_check` landed (see `Press`)."""
    return _parse(_PRESS_ADAPTER, await _PRESSED(frame, None), "pressed")


async def changes(element: Locator, ms: float, settle: float) -> int:
    """Wait until something in `element` changes and then stays still for `settle` ms, or `ms`
    at the latest; how many changes it saw (0: none)."""
    raw = await _on_element(element, "changes(el, a[0], a[1])", [ms, settle], 0)
    return _parse(_COUNT_ADAPTER, raw, "changes")


async def until(element: Locator, state: str, ms: float) -> bool | None:
    """Wait until the element is in `state` (visible, hidden, enabled, disabled, checked,
    unchecked, expanded, collapsed): True, False when `ms` passed first, None for no such
    state."""
    raw = await _on_element(element, "until(el, a[0], a[1])", [state, ms], None)
    return _parse(_MAYBE_ADAPTER, raw, "until")


async def text_in(element: Locator, text: str, ms: float) -> bool:
    """Wait until `text` shows inside the element (case and spacing aside): False when `ms`
    passed first."""
    raw = await _on_element(element, "textIn(el, a[0], a[1])", [text, ms], False)
    return _parse(_YES_ADAPTER, raw, "textIn")


async def marks(frame: Frame, on: bool) -> int:
    """Draw each element's ref on the frame (see page.js `marks`), or take the marks away; how
    many it drew."""
    return _parse(_COUNT_ADAPTER, await _MARKS(frame, on), "marks")


async def watch_press(element: Locator) -> None:
    """Watch where the next mouse press lands, as `click_check` does (see `pressed`)."""
    await _on_element(element, "watchPress(el)", None, None)


async def click_check(element: Locator, prefix: str) -> ClickCheck:
    """The controls inside `element` (at most 20, with refs of `prefix`) and what covers its
    centre (None: nothing, or it is out of view); nothing when the element's document has no
    page script (it was replaced meanwhile). Then watches where the next mouse press lands
    (`pressed`)."""
    raw = await _on_element(element, "clickCheck(el, a)", prefix, {"controls": []})
    return _parse(_CHECK_ADAPTER, raw, "clickCheck")
