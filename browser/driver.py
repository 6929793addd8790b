"""`PageDriver`: a task's Chromium, driven over DevTools by Playwright; the `BrowserDriver`
(browser/protocol.py) the browser tools use.

Its parts: the connected browser and its tabs, with what happens in them and an action run and
reported (`_tabs.py`); the frames of the current tab and the elements a target names there
(`_frames.py`); the guard that holds back a form no reviewer saw (`_guard.py`); form fields filled
as a person fills them (`forms.py`); Playwright's errors said once (`_page_errors.py`). What the
model should read is a `PageError` (browser/errors.py); a lost browser is a `SandboxError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import mimetypes
from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

from playwright.async_api import Browser, FilePayload, Frame, Locator, Page
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import TimeoutError as PlaywrightTimeout

from base.errors import ErrorCode
from base.images import MAX_BYTES
from browser import _pointer, _script
from browser._bodies import grouped
from browser._frames import describe
from browser._page_errors import page_errors
from browser._tabs import Tabs
from browser.errors import PageError
from browser.forms import (
    NATIVE_DATES,
    as_json,
    choose_radio,
    flag,
    input_type,
    set_date_value,
    submit_form,
)
from browser.protocol import EXTRACT_CHARS, SNAPSHOT_CHARS, BrowserDriver
from browser.submission import Submission
from browser.target import Target, frame_prefix
from sandbox.proxy import REFUSED_HEADER

__all__ = [
    "ENTER_KEYS",
    "SCHEMES",
    "SNAPSHOT_CHARS",
    "BrowserDriver",
    "PageDriver",
    "PageError",
    "Submission",
    "describe",
]

SCHEMES = ("http", "https")
#: the keys that submit a form from its fields (with any modifier: Shift+Enter...)
ENTER_KEYS = ("Enter", "NumpadEnter")
_T = TypeVar("_T")
#: how long a region must be still after a change before the change counts as done
CHANGE_SETTLE_MS = 150


async def _missed(frame: Frame) -> str | None:
    """What the press of the frame's last watched click landed on, when that was not the element
    clicked (None when it was, or when there is nothing to ask: the click led to another page)."""
    try:
        press = await _script.pressed(frame)
    except PlaywrightError:
        return None
    return press.on or "something else" if press.landed is False else None


class PageDriver:
    """A task's Chromium, connected over DevTools. One per task, kept between steps, so cookies
    and a login survive. Construct with `PageDriver.attach(browser)`; the methods the tools use
    are documented on `BrowserDriver`."""

    def __init__(self, tabs: Tabs) -> None:
        self._tabs = tabs

    @classmethod
    async def attach(cls, browser: Browser) -> PageDriver:
        return cls(await Tabs.attach(browser))

    @property
    def page(self) -> Page:
        """The current tab."""
        return self._tabs.page

    @property
    def url(self) -> str:
        return self._tabs.page.url

    @property
    def connected(self) -> bool:
        return self._tabs.connected

    @property
    def keep_download(self) -> Callable[[str, str], Awaitable[str]] | None:
        """Moves a finished download (its path in the sandbox, its suggested name) into the
        workspace; returns where it went (set by `Browsers`)."""
        return self._tabs.keep_download

    @keep_download.setter
    def keep_download(self, keep: Callable[[str, str], Awaitable[str]] | None) -> None:
        self._tabs.keep_download = keep

    @property
    def changing(self) -> bool:
        """Whether the page changed between the last two snapshots (it may be loading still)."""
        return self._tabs.frames.changes > 0

    def tell(self, line: str) -> None:
        """Say `line` with the next tool's report (something that happened to the browser)."""
        self._tabs.tell(line)

    async def disconnect(self) -> None:
        """Let go of the browser; it goes on running in its sandbox (see `Tabs.disconnect`)."""
        await self._tabs.disconnect()

    # ---- reading the page -------------------------------------------------------------------

    async def goto(self, url: str) -> str:
        scheme = urlsplit(url).scheme.lower()
        if scheme not in SCHEMES:
            raise PageError(
                f"refused: the browser opens only http and https URLs, not {scheme or 'this'}:",
                code=ErrorCode.REFUSED,
            )
        self._tabs.no_dialog()
        with page_errors("opening " + url):
            try:
                response = await self.page.goto(url, wait_until="domcontentloaded")
            except PlaywrightError as exc:
                if "interrupted by another navigation" not in str(exc):
                    raise
                # The page was on its way elsewhere (a redirect of its own): go where asked.
                response = await self.page.goto(url, wait_until="domcontentloaded")
        self._tabs.frames.forget()
        if response is not None and response.headers.get(REFUSED_HEADER.lower()):
            why = (await response.text()).strip()
            raise PageError(
                f"refused by the egress policy: this task may not reach {url} ({why})",
                code=ErrorCode.REFUSED,
            )
        status = f" (HTTP {response.status})" if response is not None else ""
        opened = f"opened {self.page.url}{status}; title: {await self.page.title()!r}"
        return "\n".join([opened, *self._tabs.news()])

    async def snapshot(self, max_chars: int = SNAPSHOT_CHARS, *, boxes: bool = False) -> str:
        self._tabs.no_dialog()
        with page_errors("reading the page"):
            text, truncated = await self._tabs.frames.text(self.page, max_chars, boxes=boxes)
        tabs = self.page.context.pages
        if len(tabs) > 1:
            text = f"(tab {tabs.index(self.page) + 1} of {len(tabs)})\n{text}"
        if news := self._tabs.news():
            text = "\n".join(f"(meanwhile: {line})" for line in news) + "\n" + text
        if truncated:
            text += (
                f"\n[cut here: the page is longer than {max_chars} characters. Scroll, ask for a "
                "larger max_chars, or extract a part of it]"
            )
        return text

    async def extract(self, target: Target | None, *, table: bool = False) -> str:
        async def run() -> str:
            if target is None:
                if table:
                    raise PageError(
                        "name the table to read as rows (target=...)", code=ErrorCode.BAD_TARGET
                    )
                text = str(await self.page.inner_text("body"))
                if len(text) > EXTRACT_CHARS:
                    cut = len(text) - EXTRACT_CHARS
                    text = (
                        f"{text[:EXTRACT_CHARS]}\n[cut here: {cut} more characters; extract a part]"
                    )
                return text
            value, _ = await self.one(target, "rows" if table else "text")
            return as_json(value) if table else str(value)

        return await self.read("reading", run)

    async def screenshot(self, *, full_page: bool = False) -> bytes:
        return await self.read(
            "taking a screenshot", lambda: self.page.screenshot(full_page=full_page)
        )

    async def marked_screenshot(self, *, full_page: bool = False) -> tuple[bytes, int]:
        """A JPEG of the page with each element of the snapshot framed and tagged with its ref
        (the snapshot is taken first, so the refs are current), at CSS pixel scale and small
        enough for a model (see `base.images.MAX_BYTES`); and how many elements it marks. The
        marks are on the page only while the picture is taken."""
        await self.snapshot()
        frame = self.page.main_frame

        async def shoot() -> tuple[bytes, int]:
            drawn = await _script.marks(frame, True)
            try:
                for quality in (70, 45, 25):
                    data = await self.page.screenshot(
                        full_page=full_page, type="jpeg", quality=quality, scale="css"
                    )
                    if len(data) <= MAX_BYTES:
                        break
                return data, drawn
            finally:
                await _script.marks(frame, False)

        return await self.read("taking a screenshot", shoot)

    async def locate(self, target: Target) -> tuple[Locator, _script.Candidate]:
        """The one element `target` names. Raises `PageError` listing the candidates when it
        names none or several."""
        self._tabs.no_dialog()
        return await self._tabs.frames.locate(self.page, target)

    async def one(
        self, target: Target, op: Literal["text", "rows", "select"], arg: str | None = None
    ) -> tuple[Any, _script.Candidate]:
        """Read the text (`text`) or the rows (`rows`) of the one element `target` names, or
        choose the option `arg` of it (`select`): one round trip, where `locate` and an action
        take two. Raises `PageError` as `locate` does, and for an option that does not fit."""
        self._tabs.no_dialog()
        return await self._tabs.frames.one(self.page, target, op, arg)

    async def read(self, what: str, run: Callable[[], Awaitable[_T]]) -> _T:
        """`run` something that only reads the page, with Playwright's errors said once."""
        self._tabs.no_dialog()
        with page_errors(what):
            return await run()

    async def wait_for(self, text: str | None, target: Target | None, seconds: float) -> str:
        deadline = asyncio.get_running_loop().time() + seconds
        if text is not None:
            with page_errors(f"waiting for {text!r}"):
                await self.page.get_by_text(text).first.wait_for(timeout=seconds * 1000)
            return f"{text!r} is on the page"
        assert target is not None
        while True:
            try:
                _, candidate = await self.locate(target)
                return f"{describe(candidate)} is on the page"
            except PageError as exc:
                if exc.code != ErrorCode.NOT_FOUND or asyncio.get_running_loop().time() > deadline:
                    raise
            # A page says nothing when an element appears; looking again is the only way.
            await asyncio.sleep(0.2)

    async def wait_state(self, target: Target, state: str, seconds: float) -> str:
        locator, candidate = await self.locate(target)
        with page_errors(f"waiting for {describe(candidate)} to be {state}"):
            reached = await _script.until(locator, state, seconds * 1000)
        if reached is None:
            raise PageError(f"no such state {state!r}", code=ErrorCode.BAD_ARGUMENTS)
        if not reached:
            raise PageError(
                f"{describe(candidate)} was not {state} within {seconds:g} s",
                code=ErrorCode.ELEMENT_NOT_READY,
            )
        return f"{describe(candidate)} is {state}"

    async def wait_text_in(self, target: Target, text: str, seconds: float) -> str:
        locator, candidate = await self.locate(target)
        with page_errors(f"waiting for {text!r} in {describe(candidate)}"):
            shown = await _script.text_in(locator, text, seconds * 1000)
        if not shown:
            raise PageError(
                f"{text!r} did not show in {describe(candidate)} within {seconds:g} s",
                code=ErrorCode.ELEMENT_NOT_READY,
            )
        return f"{text!r} is in {describe(candidate)}"

    async def wait_quiet(self, seconds: float) -> str:
        traffic = self._tabs.traffic
        if await traffic.quiet(seconds):
            return "the network is quiet: no request in flight for half a second"
        urls = sorted({r.url for r in traffic.inflight})
        listed = "".join(f"\n  {url}" for url in urls[:5])
        more = f"\n  …and {len(urls) - 5} more" if len(urls) > 5 else ""
        raise PageError(
            f"the network was not quiet within {seconds:g} s; still in flight:{listed}{more}",
            code=ErrorCode.ELEMENT_NOT_READY,
        )

    async def wait_change(self, target: Target, seconds: float) -> tuple[str, bool]:
        """Wait until `target`'s content changes (a menu opening in it, a result arriving), then
        until it has been still for a moment. What to say, and whether it changed."""
        locator, candidate = await self.locate(target)
        with page_errors(f"waiting for {describe(candidate)} to change"):
            seen = await _script.changes(locator, seconds * 1000, CHANGE_SETTLE_MS)
        if not seen:
            return f"{describe(candidate)} did not change in {seconds:g} s", False
        return f"{describe(candidate)} changed; take a snapshot to see it", True

    async def tabs(self, switch_to: int | None) -> str:
        return await self._tabs.listing(switch_to)

    # ---- acting ---------------------------------------------------------------------------

    async def _on(
        self, target: Target, what: str, action: Callable[[Locator], Awaitable[object]]
    ) -> str:
        """Find `target`, then run `action` on its locator, reported as `what`."""
        locator, candidate = await self.locate(target)
        new_tab = " new-tab" in candidate.line  # a link that opens its page in another tab
        return await self._tabs.act(
            f"{what} {describe(candidate)}", lambda: action(locator), new_tab=new_tab
        )

    async def back(self) -> str:
        # Not until "load": a page restored from the back-forward cache fires none.
        back = functools.partial(self.page.go_back, wait_until="commit")
        return await self._tabs.act("went back", back)

    async def scroll(self, direction: str) -> str:
        sign = "" if direction == "down" else "-"
        return await self._tabs.act(
            f"scrolled {direction}",
            lambda: self.page.evaluate(f"window.scrollBy(0, {sign}window.innerHeight * 0.8)"),
        )

    async def scroll_to(self, target: Target) -> str:
        return await self._on(target, "scrolled to", lambda loc: loc.scroll_into_view_if_needed())

    async def click(self, target: Target) -> str:
        """Click the one control `target` names. Refused, saying why, where the click would not
        do what was asked: text that is no control (perhaps the page's own instructions), named
        other than by its ref; an element holding several controls (the click would land on
        whichever is at its centre); an element something else covers (it would take the
        click)."""
        locator, candidate = await self.locate(target)
        if target.kind != "ref" and candidate.role in ("text", "heading"):
            raise PageError(
                f"{target} matches no control, only the text {describe(candidate)}: it may be "
                "the page's own words (an instruction), not something to click. If it is what "
                f"you mean, click it by its reference: {candidate.ref}",
                code=ErrorCode.BAD_TARGET,
            )
        prefix = frame_prefix(candidate.ref)
        inside = (await _script.click_check(locator, prefix)).controls
        if len(inside) > 1:
            listed = "\n".join(f"  {describe(c)}" for c in inside[:15])
            raise PageError(
                f"{describe(candidate)} holds {len(inside)} controls, and a click on it would "
                f"land on whichever is at its centre; click the one you mean:\n{listed}",
                code=ErrorCode.AMBIGUOUS,
            )

        frame = self._tabs.frames.by_prefix.get(prefix, self.page.main_frame)

        async def clicking() -> None:
            try:
                await locator.click()
                if await _missed(frame):
                    # It moved or changed as the pointer arrived (a hover image loading): now
                    # it rests under the pointer, so a second click lands, as a person's would.
                    await _script.watch_press(locator)
                    await locator.click()
                    if missed := await _missed(frame):
                        raise PageError(
                            f"the click on {describe(candidate)} landed on {missed} instead: "
                            "the element moves or changes under the pointer",
                            code=ErrorCode.ELEMENT_NOT_READY,
                        )
            except PlaywrightTimeout:
                # Playwright waited for the element to take clicks: say what took them instead.
                covered = (await _script.click_check(locator, prefix)).covered
                if covered is None:
                    raise
                raise PageError(
                    f"{describe(candidate)} is covered by {covered}, which takes the click: "
                    "close it or wait for it to go (browser_wait), then click again",
                    code=ErrorCode.ELEMENT_NOT_READY,
                ) from None

        new_tab = " new-tab" in candidate.line
        return await self._tabs.act(f"clicked {describe(candidate)}", clicking, new_tab=new_tab)

    async def hover(self, target: Target) -> str:
        return await self._on(target, "hovered over", lambda loc: loc.hover())

    async def drag(
        self, source: Target, *, to: Target | None = None, dx: float = 0, dy: float = 0
    ) -> str:
        """Drag `source` onto `to`, or by (`dx`, `dy`) CSS pixels (a slider's handle, a list
        item), with the mouse as a person would (see `_pointer.drag`)."""
        grabbed = await self.locate(source)
        onto = await self.locate(to) if to is not None else None
        what = f"dragged {describe(grabbed[1])} " + (
            f"onto {describe(onto[1])}" if onto is not None else f"by ({dx:g}, {dy:g})"
        )
        return await self._tabs.act(what, lambda: _pointer.drag(self.page, grabbed, onto, dx, dy))

    async def select_text(self, target: Target, text: str | None = None) -> str:
        """Select `target`'s text, or the first `text` in it, as a person's mouse would."""
        locator, candidate = await self.locate(target)
        what = f"selected {text!r} in" if text else "selected the text of"
        return await self._tabs.act(
            f"{what} {describe(candidate)}", lambda: _pointer.select_text(locator, candidate, text)
        )

    async def click_at(self, x: float, y: float) -> str:
        """Click the point (`x`, `y`) of the page's viewport, in CSS pixels: for what no element
        names (a canvas, a shape). Says what was there."""
        there = await _pointer.at_point(self.page, x, y)
        return await self._tabs.act(
            f"clicked at ({x:g}, {y:g}), on {there}", lambda: self.page.mouse.click(x, y)
        )

    async def type_text(self, target: Target, text: str, *, clear: bool = True) -> str:
        async def typing(loc: Locator) -> None:
            if clear:
                await loc.fill(text)
            else:
                await loc.press_sequentially(text)

        return await self._on(target, f"typed {text!r} into", typing)

    async def press(self, key: str, target: Target | None = None, *, times: int = 1) -> str:
        """Press `key` (a chord such as Control+A too) `times` times, on `target` or on what has
        focus; the element's value afterwards is said."""
        counted = f"{key} ×{times}" if times > 1 else key
        if target is None:

            async def on_focus() -> None:
                for _ in range(times):
                    await self.page.keyboard.press(key)

            return await self._tabs.act(f"pressed {counted}", on_focus)
        locator, candidate = await self.locate(target)

        async def on_element() -> None:
            for _ in range(times):
                await locator.press(key)

        done = await self._tabs.act(f"pressed {counted} on {describe(candidate)}", on_element)
        with contextlib.suppress(PlaywrightError):
            value = await locator.evaluate(
                "(el) => el.value ?? el.getAttribute('aria-valuenow') ?? null"
            )
            # A field's or a slider's new value; never a password's.
            shows = candidate.role in ("textbox", "slider", "spinbutton", "combobox", "searchbox")
            if isinstance(value, str) and shows and "type=password" not in candidate.line:
                done += f"; its value is now {json.dumps(value)}"
        return done

    async def select(self, target: Target, option: str) -> str:
        return await self._tabs.act(
            f"selected {option!r} in {target}", lambda: self.one(target, "select", option)
        )

    async def set_checked(self, target: Target, checked: bool) -> str:
        what = "checked" if checked else "unchecked"
        return await self._on(target, what, lambda loc: loc.set_checked(checked))

    async def choose(self, target: Target) -> str:
        return await self._on(target, "chose", lambda loc: loc.check())

    async def set_date(self, target: Target, value: str) -> str:
        locator, candidate = await self.locate(target)
        kind = input_type(candidate.line)
        setting = functools.partial(set_date_value, self.page, locator, value, kind)
        return await self._tabs.act(f"set {value!r} in {describe(candidate)}", setting)

    async def upload(self, target: Target, name: str, data: Awaitable[bytes]) -> str:
        # The file and the field at the same time.
        content, (locator, candidate) = await asyncio.gather(data, self.locate(target))
        payload: FilePayload = {
            "name": name,
            "mimeType": mimetypes.guess_type(name)[0] or "application/octet-stream",
            "buffer": content,
        }
        what = f"chose {name} in {describe(candidate)}"
        return await self._tabs.act(what, lambda: locator.set_input_files(payload))

    async def fill_field(self, target: Target, value: str) -> str:
        """Set one field to `value` the way its kind wants; say what was done. What kind it is comes
        from the element as found (its tag, role and snapshot line): no second look."""

        async def fill() -> str:
            locator, found = await self.locate(target)
            kind = input_type(found.line)
            if found.tag == "select":
                chosen, _ = await self.one(Target("ref", found.ref), "select", value)
                return f"selected {chosen!r}"
            if kind == "checkbox" or found.role in ("checkbox", "switch"):
                on = flag(value)
                await locator.set_checked(on)
                return "checked" if on else "unchecked"
            # A radio group is named by one of its radios, or by its fieldset, legend or radiogroup.
            if (
                kind == "radio"
                or found.role in ("radio", "radiogroup", "group")
                or found.tag
                in (
                    "fieldset",
                    "legend",
                )
            ):
                await choose_radio(locator, value)
                return f"chose {value!r}"
            if kind == "file" or found.role == "file":
                raise PageError("a file field: use browser_upload", code=ErrorCode.BAD_FIELD)
            # A date picker's field is often read-only: only its calendar sets it.
            if kind in NATIVE_DATES or " readonly" in found.line:
                await set_date_value(self.page, locator, value, kind)
                return f"set to {value!r}"
            await locator.fill(value)
            return f"set to {value!r}"

        return await self.read(f"filling {target}", fill)

    async def submit(self, target: Target) -> str:
        return await self._on(target, "submitted the form of", submit_form)

    async def answer_dialog(self, accept: bool, text: str | None) -> str:
        return await self._tabs.answer_dialog(accept, text)

    # ---- forms a reviewer sees first ---------------------------------------------------------

    async def submission(self, target: Target, *, key: str | None = None) -> Submission | None:
        try:
            _, candidate = await self.locate(target)
            frame = self._tabs.frames.of_ref(self.page, candidate.ref)
            info = await _script.form_of(frame, candidate.ref)
        except PageError:
            return None  # the call itself will say what is wrong with the target
        if info is None:
            return None
        enter = key is not None and key.split("+")[-1] in ENTER_KEYS
        submits = (
            key == "submit"
            or (key is None and info.submitter)
            or (enter and (candidate.tag == "input" or info.submitter))
            or (key is not None and key.split("+")[-1] == " " and info.submitter)
            or (key == "Space" and info.submitter)
        )  # any other key submits nothing
        if not submits:
            return None
        fields = grouped([(f.name, f.value) for f in info.fields])
        return Submission(info.action, info.method.upper(), fields)

    def submitting(self, submission: Submission | None) -> None:
        self._tabs.submitting(submission)


#: mypy checks here that `PageDriver` is a `BrowserDriver`
_IS_A_BROWSER_DRIVER: type[BrowserDriver] = PageDriver
