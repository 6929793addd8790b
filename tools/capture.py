"""What a tool prints, caught per call: kept with its result (so the task's log has it), passed on
as it comes to whoever shows the task live, and never mixed into the process's own output (a
`--json` document on stdout stays one object).

`sys.stdout` and `sys.stderr` are wrapped once by a `_Dispatch` that looks up the call it is
printed from in a context variable; outside a call (and in threads a tool starts itself, which do
not inherit the context) text goes where it went before."""

from __future__ import annotations

import contextvars
import sys
import threading
from collections.abc import Callable
from typing import Any, Literal, TextIO

Stream = Literal["stdout", "stderr"]
#: told of each piece a tool prints, as it comes (from the thread it was printed in)
OnPrint = Callable[[Stream, str], None]

#: how much of what one call prints is kept with its result; the rest is counted
PRINTED_KEPT = 16_000

_current: contextvars.ContextVar[Capture | None] = contextvars.ContextVar(
    "agent_tool_capture", default=None
)
_installing = threading.Lock()


class Capture:
    """What one call printed (stdout and stderr in the order they came, as a terminal would show
    them), with a note of what was left out past `PRINTED_KEPT`. As a context manager, it catches
    what is printed in its block's context (and in the threads that context's copies run in)."""

    __slots__ = ("_dropped", "_kept", "_on_print", "_parts", "_token", "relaying")

    def __init__(self, on_print: OnPrint | None) -> None:
        self._token: contextvars.Token[Capture | None] | None = None
        self._parts: list[str] = []
        self._kept = 0
        self._dropped = 0
        self._on_print = on_print
        #: set while the text is passed on: what that prints is not the tool's
        self.relaying = False

    def add(self, stream: Stream, text: str) -> None:
        # No lock (this is made for every call): threads of one call that print at once may
        # keep a little more or less than the limit, never lose what is kept.
        kept = text[: max(PRINTED_KEPT - self._kept, 0)]
        self._parts.append(kept)
        self._kept += len(kept)
        self._dropped += len(text) - len(kept)
        if self._on_print is not None:
            self.relaying = True
            try:
                self._on_print(stream, text)
            finally:
                self.relaying = False

    def __enter__(self) -> Capture:
        _install()
        self._token = _current.set(self)
        return self

    def __exit__(self, *_: object) -> None:
        if self._token is not None:
            _current.reset(self._token)

    def text(self) -> str:
        if not self._parts:
            return ""
        text = "".join(self._parts)
        if self._dropped:
            text += f"\n({self._dropped:,} more characters printed, not kept)"
        return text


class _Dispatch:
    """A stand-in for `sys.stdout` or `sys.stderr` that sends a tool's writes to its call's
    `Capture`, and everything else to the stream it replaced."""

    def __init__(self, name: Stream, inner: TextIO) -> None:
        self._name: Stream = name
        self._inner = inner

    def write(self, text: str) -> int:
        capture = _current.get()
        if capture is None or capture.relaying:
            return self._inner.write(text)
        capture.add(self._name, text)
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if _current.get() is None:
            self._inner.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _install() -> None:
    """Wrap `sys.stdout` and `sys.stderr`, unless they are wrapped already (or were replaced
    since, as a test's capture does: then the new ones are wrapped)."""
    if isinstance(sys.stdout, _Dispatch) and isinstance(sys.stderr, _Dispatch):
        return  # the usual case, on every call: no lock
    with _installing:
        if not isinstance(sys.stdout, _Dispatch):
            sys.stdout = _Dispatch("stdout", sys.stdout)
        if not isinstance(sys.stderr, _Dispatch):
            sys.stderr = _Dispatch("stderr", sys.stderr)


def uncaptured(show: Callable[[], None]) -> None:
    """Run `show` with nothing caught: what it prints is the runtime's own, though it runs in a
    tool's call (a listener showing a sandbox command's output as it comes)."""
    token = _current.set(None)
    try:
        show()
    finally:
        _current.reset(token)
