"""The frames of the current tab, and the elements a target names in them.

A snapshot names each frame by a reference prefix: "e" for the page itself, "f1e", "f2e"... for
the frames inside it; an element's reference begins with its frame's ("f1e3"). `Frames` keeps
those names from a snapshot to the calls that use them, and finds elements by target in them.
"""

from __future__ import annotations

import contextlib
import textwrap
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Frame, Locator, Page

from base.errors import ErrorCode
from browser import _script
from browser._page_errors import page_errors
from browser.errors import PageError
from browser.target import GUESSES, Target, frame_prefix

_Found = TypeVar("_Found", bound=_script.FindReply)


@dataclass
class Frames:
    """The current tab's frames, by the prefix the last snapshot gave each."""

    by_prefix: dict[str, Frame] = field(default_factory=dict)
    #: each child frame's reference prefix, for as long as the frame lives: never reused
    prefixes: dict[Frame, str] = field(default_factory=dict)
    #: how many times the frames changed between the last two snapshots
    changes: int = 0

    def forget(self) -> None:
        """Another tab, or another page: its frames are named by the next snapshot."""
        self.by_prefix.clear()

    async def text(self, page: Page, max_chars: int, *, boxes: bool = False) -> tuple[str, bool]:
        """The page as text, with each frame's inside it, at most about `max_chars`; and
        whether it was cut. Names the frames afresh. `boxes`: see `snapshot_frame`."""
        self.by_prefix = {"e": page.main_frame}
        self.changes = 0
        return await self._frame_text(page.main_frame, "e", max_chars, boxes)

    async def _frame_text(
        self, frame: Frame, prefix: str, budget: int, boxes: bool
    ) -> tuple[str, bool]:
        shot = await _script.snapshot_frame(frame, prefix, max(budget, 200), boxes=boxes)
        text, truncated = shot.text, shot.truncated
        self.changes += shot.changes
        for ref in shot.frames:
            child = await self._child_frame(frame, ref)
            placeholder = "{{frame " + ref + "}}"
            if child is None:
                text = text.replace(placeholder, "(not loaded)")
                continue
            child_prefix = self.prefixes.setdefault(child, f"f{len(self.prefixes) + 1}e")
            self.by_prefix[child_prefix] = child
            inner, cut = await self._frame_text(child, child_prefix, budget - len(text), boxes)
            truncated = truncated or cut
            text = text.replace(placeholder, "\n" + textwrap.indent(inner, "  "))
        return text, truncated

    @staticmethod
    async def _child_frame(frame: Frame, ref: str) -> Frame | None:
        for child in frame.child_frames:
            with contextlib.suppress(PlaywrightError):
                element = await child.frame_element()
                if await element.get_attribute("data-agent-ref") == ref:
                    return child
        return None

    def for_target(self, page: Page, target: Target) -> list[tuple[str, Frame]]:
        """The frames to look for `target` in (with their prefixes): a reference's own, or
        every frame still there."""
        if target.kind == "ref":
            prefix = frame_prefix(target.value)
            if prefix == "e":
                return [("e", page.main_frame)]
            frame = self.by_prefix.get(prefix)
            if frame is None or frame.is_detached():
                raise PageError(
                    f"{target} is in a frame this page no longer has; take a new snapshot",
                    code=ErrorCode.NOT_FOUND,
                )
            return [(prefix, frame)]
        if not self.by_prefix:
            self.by_prefix = {"e": page.main_frame}
        return [(p, f) for p, f in self.by_prefix.items() if not f.is_detached()]

    def of_ref(self, page: Page, ref: str) -> Frame:
        """The frame an element's reference belongs to."""
        prefix = frame_prefix(ref)
        return page.main_frame if prefix == "e" else self.by_prefix[prefix]

    async def locate(self, page: Page, target: Target) -> tuple[Locator, _script.Candidate]:
        """The one element `target` names. Raises `PageError` listing the candidates when it
        names none or several."""

        async def find(frame: Frame, wanted: dict[str, str], prefix: str) -> _script.FindReply:
            return _script.FindReply(candidates=await _script.find(frame, wanted, prefix=prefix))

        replies = await self._search(target, self.for_target(page, target), find)
        frame, candidate = _pick(target, [(f, c) for f, r in replies for c in r.candidates])
        return frame.locator(f'[data-agent-ref="{candidate.ref}"]'), candidate

    async def _search(
        self,
        target: Target,
        frames: list[tuple[str, Frame]],
        ask: Callable[[Frame, dict[str, str], str], Awaitable[_Found]],
    ) -> list[tuple[Frame, _Found]]:
        """Ask each frame about `target` (a bare one as each of GUESSES in turn, until one finds
        something); the answers that found elements."""
        kinds = (target.kind,) if target.kind is not None else GUESSES
        replies: list[tuple[Frame, _Found]] = []
        with page_errors(f"finding {target}"):
            for kind in kinds:
                for prefix, frame in frames:
                    reply = await ask(frame, {kind: target.value}, prefix)
                    replies += [(frame, reply)] if reply.candidates else []
                if replies:
                    break
        return replies

    async def one(
        self,
        page: Page,
        target: Target,
        op: Literal["text", "rows", "select"],
        arg: str | None = None,
    ) -> tuple[Any, _script.Candidate]:
        """Read the text (`text`) or the rows (`rows`) of the one element `target` names, or
        choose the option `arg` of it (`select`): one round trip, where `locate` and an action
        take two. Raises `PageError` as `locate` does, and for an option that does not fit."""
        frames = self.for_target(page, target)
        if op == "select" and len(frames) > 1:
            # Several frames: setting the first match before knowing it is the only one would
            # be wrong. Find first, then choose.
            _, candidate = await self.locate(page, target)
            ref = candidate.ref
            with page_errors(f"choosing {arg!r}"):
                reply = await _script.one(
                    self.of_ref(page, ref), {"ref": ref}, op, arg, prefix=frame_prefix(ref)
                )
            return _value(reply, arg), candidate

        async def one(frame: Frame, wanted: dict[str, str], prefix: str) -> _script.OneReply:
            return await _script.one(frame, wanted, op, arg, prefix=prefix)

        replies = await self._search(target, frames, one)
        _, candidate = _pick(target, [(f, c) for f, r in replies for c in r.candidates])
        return _value(replies[0][1], arg), candidate


def _pick(
    target: Target, found: list[tuple[Frame, _script.Candidate]]
) -> tuple[Frame, _script.Candidate]:
    """The one element found. Raises `PageError` listing the candidates when there are none or
    several."""
    if not found:
        raise PageError(
            f"no element matches {target}; take a snapshot to see the page's elements",
            code=ErrorCode.NOT_FOUND,
        )
    if len(found) > 1:
        listed = "\n".join(f"  {describe(c)}" for _, c in found[:15])
        more = f"\n  ... and {len(found) - 15} more" if len(found) > 15 else ""
        raise PageError(
            f"{target} matches {len(found)} elements; name one by its reference:\n" + listed + more,
            code=ErrorCode.AMBIGUOUS,
        )
    return found[0]


def _value(reply: _script.OneReply, arg: str | None) -> Any:
    if reply.refused is not None:
        raise PageError(reply.refused, code=ErrorCode.BAD_FIELD)
    if reply.options is not None:
        listed = ", ".join(repr(o) for o in reply.options[:30])
        raise PageError(f"no option {arg!r}; the options are: {listed}", code=ErrorCode.NOT_FOUND)
    return reply.value


def describe(candidate: _script.Candidate) -> str:
    """An element as the model is told of it: `[e12] button "Sign in"`, as in the snapshot."""
    if candidate.line:
        return candidate.line.strip()
    name = f" {candidate.name!r}" if candidate.name else ""
    return f"[{candidate.ref}] {candidate.role or candidate.tag}{name}"
