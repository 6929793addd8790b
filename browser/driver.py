"""The seam between the browser tools and a browser: `BrowserDriver`, and its Playwright
implementation, `PageDriver`, driving a task's Chromium over DevTools.

Failures the model should see (a missing or ambiguous target, an element that never becomes
clickable, a refused URL) are `PageError`s, raised here and turned into observations by the tools.
Failures of the program (the browser is gone) are `SandboxError`s: the task pauses.

    page errors:   PageError(code=...)
                   ├─ not_found, ambiguous     the target names no element, or several
                   ├─ element_not_ready        it never became visible, enabled or editable
                   ├─ refused                  a URL the browser may not open
                   └─ page_error               anything else Playwright says about the page
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import textwrap
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar
from urllib.parse import urlsplit

from playwright.async_api import (
    Browser,
    CDPSession,
    Dialog,
    Download,
    Frame,
    Locator,
    Page,
    Request,
    Response,
)
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import TimeoutError as PlaywrightTimeout

from base.errors import SandboxError
from browser import _script
from browser._bodies import grouped, sent_fields
from browser.target import GUESSES, Target, frame_prefix
from sandbox.proxy import REFUSED_HEADER

#: how long an action waits for its element to be visible, enabled and still (ms)
ACTION_TIMEOUT_MS = 5_000
#: how long a navigation may take (ms)
NAVIGATION_TIMEOUT_MS = 30_000
#: how long an action that started loading a document waits for it to load or to become a
#: download before it reports (s)
SETTLE_SECONDS = 2.0
#: how long a download may take to finish (s)
DOWNLOAD_TIMEOUT = 120.0
#: what a snapshot shows at most, unless asked otherwise
SNAPSHOT_CHARS = 12_000
SCHEMES = ("http", "https")
#: the keys that submit a form from its fields (with any modifier: Shift+Enter...)
ENTER_KEYS = ("Enter", "NumpadEnter")
_T = TypeVar("_T")
_Found = TypeVar("_Found", bound=_script.FindReply)


class PageError(Exception):
    """Something about the page the model should know and can act on. `code` says what."""

    def __init__(self, message: str, *, code: str = "page_error") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Submission:
    """What a submit would send, read from the page just before: the approval is bound to it.
    `fields`: every value of every field, by name, in the order the form sends them."""

    action: str
    method: str
    fields: dict[str, list[str]]

    @property
    def origin(self) -> str:
        parts = urlsplit(self.action)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def values(self) -> dict[str, str | list[str]]:
        """The fields as a reviewer reads them: a name's value, or its values where it has
        several."""
        return {n: v[0] if len(v) == 1 else list(v) for n, v in self.fields.items()}

    def matches(self, method: str, url: str, content_type: str = "", body: bytes = b"") -> bool:
        """Whether a request sends this submission: the same method and URL, and a body that
        sends, in whatever form encoding, the approved fields with the approved values (a
        masked password checked by its length), every one of them, and no others. A body that
        cannot be read (an unknown encoding) sends nothing approved."""
        same = url.split("#", maxsplit=1)[0] == self.action.split("#", maxsplit=1)[0]
        if not same or method.upper() != self.method:
            return False
        if not body and not self.fields:
            return True
        sent = sent_fields(content_type, body)
        if sent is None or set(sent) != set(self.fields):
            return False
        return all(
            len(sent[name]) == len(values)
            and all(_same(given, value) for given, value in zip(sent[name], values, strict=True))
            for name, values in self.fields.items()
        )

    def as_effect(self) -> dict[str, Any]:
        return {
            "submits": {
                "origin": self.origin,
                "action": self.action,
                "method": self.method,
                "values": self.values,
            }
        }


def _same(sent: str, approved: str) -> bool:
    """A sent value is the approved one (a password, shown masked, by its length)."""
    return sent == approved or (set(approved) == {"•"} and len(sent) == len(approved))


class BrowserDriver(Protocol):
    """What the browser tools ask of a task's browser (`PageDriver` is the one there is). Each
    method acts on the current tab, and raises `PageError` for what the model should read."""

    @property
    def page(self) -> Page: ...
    async def goto(self, url: str) -> str: ...
    async def snapshot(self, max_chars: int = SNAPSHOT_CHARS) -> str: ...
    async def locate(self, target: Target) -> tuple[Locator, _script.Candidate]: ...
    async def one(
        self, target: Target, op: Literal["text", "rows", "select"], arg: str | None = None
    ) -> tuple[Any, _script.Candidate]: ...
    async def read(self, what: str, run: Callable[[], Awaitable[_T]]) -> _T: ...
    async def wait_for(self, text: str | None, target: Target | None, seconds: float) -> str: ...
    async def tabs(self, switch_to: int | None) -> str: ...
    async def act(
        self, what: str, action: Callable[[], Awaitable[object]], *, new_tab: bool = False
    ) -> str: ...
    async def submission(self, target: Target, *, key: str | None = None) -> Submission | None: ...
    def submitting(self, submission: Submission | None) -> None: ...
    async def answer_dialog(self, accept: bool, text: str | None) -> str: ...


@dataclass
class _Pending:
    """A dialog the page opened, and the action that is waiting for it to be answered."""

    dialog: Dialog
    action: asyncio.Future[object] | None = None


@dataclass
class PageDriver:
    """A task's Chromium, connected over DevTools. One per task, kept between steps, so cookies
    and a login survive. Construct with `PageDriver.attach(browser)`."""

    browser: Browser
    _page: Page
    _prefixes: dict[str, Frame] = field(default_factory=dict)
    #: each child frame's reference prefix, for as long as the frame lives: never reused
    _frame_prefixes: dict[Frame, str] = field(default_factory=dict)
    _dialog: _Pending | None = None
    #: the submission the current action may send (see `_check`)
    _submitting: Submission | None = None
    _checks: set[asyncio.Future[None]] = field(default_factory=set)
    #: document requests let through so far, and set when one has settled (loaded, or became a
    #: download): an action that started one waits for that before it reports
    _documents: int = 0
    _settled: asyncio.Event = field(default_factory=asyncio.Event)
    _dialog_opened: asyncio.Event = field(default_factory=asyncio.Event)
    #: what happened during the last action, for its report (new tabs, downloads)
    _news: list[str] = field(default_factory=list)
    #: downloads started by the current action, saved into the workspace when it ends
    downloads: list[Download] = field(default_factory=list)
    #: why the page the current action led to did not load (the egress proxy refused it, or
    #: its tunnel failed): the action is then reported as failed
    _refused: str | None = None
    #: moves a finished download (its path in the sandbox, its suggested name) into the
    #: workspace; returns where it went (set by `Browsers`)
    keep_download: Callable[[str, str], Awaitable[str]] | None = None

    @classmethod
    async def attach(cls, browser: Browser) -> PageDriver:
        context = browser.contexts[0] if browser.contexts else await browser.new_context()
        page = context.pages[0] if context.pages else await context.new_page()
        driver = cls(browser, page)
        context.on("page", driver._on_new_page)
        driver._watch(page)
        await driver._guard(page)
        return driver

    async def _guard(self, page: Page) -> None:
        """Hold each document request of the page (and of its same-origin frames) for `_check`.
        Only documents: holding every request would slow every page down."""
        session = await page.context.new_cdp_session(page)

        session.on("Fetch.requestPaused", lambda event: self._spawn(self._check(session, event)))
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
                allowed, self._submitting = self._submitting, None
                sends = headers.get("content-type", ""), body
                if allowed is None or not allowed.matches(method, url, *sends):
                    self._news.append(
                        f"the page tried to send a form ({method} to {url}) that no approval "
                        "covers (sent by a script, or changed after it was read), and it was "
                        "blocked; submit with browser_click on its submit button or "
                        "browser_submit, which ask a reviewer first"
                    )
                    # 204 No Content: the navigation ends where it began, the page as it was.
                    answer = {**held, "responseCode": 204, "responseHeaders": []}
                    await session.send("Fetch.fulfillRequest", answer)
                    return
            self._documents += 1
            await session.send("Fetch.continueRequest", held)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` from an event callback, keeping hold of it until it is done."""
        task = asyncio.ensure_future(work)
        self._checks.add(task)
        task.add_done_callback(self._checks.discard)

    def submitting(self, submission: Submission | None) -> None:
        """The next action sends `submission` (read again just before, as approved): let the
        form it sends through, once."""
        self._submitting = submission

    @property
    def page(self) -> Page:
        return self._page

    @property
    def connected(self) -> bool:
        return self.browser.is_connected()

    def _watch(self, page: Page) -> None:
        page.set_default_timeout(ACTION_TIMEOUT_MS)
        page.set_default_navigation_timeout(NAVIGATION_TIMEOUT_MS)
        page.on("dialog", self._on_dialog)
        page.on("download", self._on_download)
        page.on("close", self._on_close)
        page.on("domcontentloaded", lambda _: self._settled.set())
        page.on("response", self._on_response)
        page.on("requestfailed", self._on_request_failed)

    def _on_response(self, response: Response) -> None:
        # The egress proxy's refusal of a page (plain http): an answer it marks as its own.
        if _navigation(response.request) and response.headers.get(REFUSED_HEADER.lower()):
            self._refused = (
                "the page it led to was refused by the egress policy: this task may not reach "
                + response.url
            )

    def _on_request_failed(self, request: Request) -> None:
        # An https page whose tunnel the egress proxy refused, or any page that failed to load.
        # Not an aborted one: a download, or a form the browser held back (said otherwise).
        if _navigation(request) and request.failure and "ERR_ABORTED" not in request.failure:
            why = request.failure
            if "TUNNEL_CONNECTION_FAILED" in why:
                why += " (the egress policy refuses the host, or it cannot be reached)"
            self._refused = f"the page it led to ({request.url}) did not load: {why}"

    def _on_close(self, page: Page) -> None:
        # A popup that closed itself (or a tab the page closed): go on in the last one open.
        if page is not self._page:
            return
        open_ = [p for p in page.context.pages if not p.is_closed()]
        if open_:
            self._page = open_[-1]
            self._prefixes.clear()
            self._news.append(f"the tab closed; the current tab is now {self._page.url}")

    def _on_new_page(self, page: Page) -> None:
        # A popup or a link opened in a new tab: follow it, and say so.
        self._watch(page)
        self._spawn(self._guard(page))
        self._page = page
        self._prefixes.clear()
        self._news.append(f"a new tab opened ({page.url or 'loading'}); it is now the current tab")
        self._settled.set()

    def _on_dialog(self, dialog: Dialog) -> None:
        # Left open until the model answers it (browser_dialog); the page waits meanwhile.
        self._dialog = _Pending(dialog)
        self._dialog_opened.set()

    def _on_download(self, download: Download) -> None:
        self.downloads.append(download)
        self._settled.set()

    async def _keep_downloads(self) -> None:
        """Wait for the action's downloads, and move them into the workspace. Chromium writes a
        download where Playwright tells it to, a temporary folder of the sandbox's."""
        downloads, self.downloads = self.downloads, []
        for download in downloads:
            name = download.suggested_filename
            with _page_errors(f"downloading {name}"):
                failure = await asyncio.wait_for(download.failure(), DOWNLOAD_TIMEOUT)
                if failure is not None:
                    self._news.append(f"the download of {name} failed: {failure}")
                    continue
                path = await download.path()
            if self.keep_download is None:
                self._news.append(f"downloaded {name} (not kept: no workspace)")
                continue
            try:
                kept = await self.keep_download(str(path), name)
            except SandboxError as exc:  # the workspace is full, say: the model can act on it
                self._news.append(f"downloaded {name}, but could not keep it: {exc}")
                continue
            self._news.append(f"downloaded {name} to {kept}")

    def _no_dialog(self) -> None:
        """While a dialog is open the page runs nothing (no script, no click): say so at once
        rather than wait for a timeout."""
        if self._dialog is not None:
            dialog = self._dialog.dialog
            raise PageError(
                f"the page's {dialog.type} dialog is open ({dialog.message!r}); answer it with "
                "browser_dialog first",
                code="dialog_open",
            )

    # ---- reading the page -------------------------------------------------------------------

    async def goto(self, url: str) -> str:
        """Open `url` in the current tab. Raises `PageError` for a refused or failed load."""
        scheme = urlsplit(url).scheme.lower()
        if scheme not in SCHEMES:
            raise PageError(
                f"refused: the browser opens only http and https URLs, not {scheme or 'this'}:",
                code="refused",
            )
        self._no_dialog()
        with _page_errors("opening " + url):
            try:
                response = await self._page.goto(url, wait_until="domcontentloaded")
            except PlaywrightError as exc:
                if "interrupted by another navigation" not in str(exc):
                    raise
                # The page was on its way elsewhere (a redirect of its own): go where asked.
                response = await self._page.goto(url, wait_until="domcontentloaded")
        self._prefixes.clear()
        if response is not None and response.headers.get(REFUSED_HEADER.lower()):
            why = (await response.text()).strip()
            raise PageError(
                f"refused by the egress policy: this task may not reach {url} ({why})",
                code="refused",
            )
        status = f" (HTTP {response.status})" if response is not None else ""
        return f"opened {self._page.url}{status}; title: {await self._page.title()!r}"

    async def snapshot(self, max_chars: int = SNAPSHOT_CHARS) -> str:
        """The current tab as text, at most about `max_chars`, with a note if it was cut."""
        self._no_dialog()
        self._prefixes = {"e": self._page.main_frame}
        with _page_errors("reading the page"):
            text, truncated = await self._frame_text(self._page.main_frame, "e", max_chars)
        tabs = self._page.context.pages
        if len(tabs) > 1:
            text = f"(tab {tabs.index(self._page) + 1} of {len(tabs)})\n{text}"
        if news := self.news():
            text = "\n".join(f"(meanwhile: {line})" for line in news) + "\n" + text
        if truncated:
            text += (
                f"\n[cut here: the page is longer than {max_chars} characters. Scroll, ask for a "
                "larger max_chars, or extract a part of it]"
            )
        return text

    async def _frame_text(self, frame: Frame, prefix: str, budget: int) -> tuple[str, bool]:
        shot = await _script.snapshot_frame(frame, prefix, max(budget, 200))
        text, truncated = shot.text, shot.truncated
        for ref in shot.frames:
            child = await self._child_frame(frame, ref)
            placeholder = "{{frame " + ref + "}}"
            if child is None:
                text = text.replace(placeholder, "(not loaded)")
                continue
            child_prefix = self._frame_prefixes.setdefault(
                child, f"f{len(self._frame_prefixes) + 1}e"
            )
            self._prefixes[child_prefix] = child
            inner, cut = await self._frame_text(child, child_prefix, budget - len(text))
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

    def _frames_for(self, target: Target) -> list[tuple[str, Frame]]:
        if target.kind == "ref":
            prefix = frame_prefix(target.value)
            if prefix == "e":
                return [("e", self._page.main_frame)]
            frame = self._prefixes.get(prefix)
            if frame is None or frame.is_detached():
                raise PageError(
                    f"{target} is in a frame this page no longer has; take a new snapshot",
                    code="not_found",
                )
            return [(prefix, frame)]
        if not self._prefixes:
            self._prefixes = {"e": self._page.main_frame}
        return [(p, f) for p, f in self._prefixes.items() if not f.is_detached()]

    async def locate(self, target: Target) -> tuple[Locator, _script.Candidate]:
        """The one element `target` names. Raises `PageError` listing the candidates when it
        names none or several."""
        self._no_dialog()

        async def find(frame: Frame, wanted: dict[str, str], prefix: str) -> _script.FindReply:
            return _script.FindReply(candidates=await _script.find(frame, wanted, prefix=prefix))

        replies = await self._search(target, self._frames_for(target), find)
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
        with _page_errors(f"finding {target}"):
            for kind in kinds:
                for prefix, frame in frames:
                    reply = await ask(frame, {kind: target.value}, prefix)
                    replies += [(frame, reply)] if reply.candidates else []
                if replies:
                    break
        return replies

    async def one(
        self, target: Target, op: Literal["text", "rows", "select"], arg: str | None = None
    ) -> tuple[Any, _script.Candidate]:
        """Read the text (`text`) or the rows (`rows`) of the one element `target` names, or
        choose the option `arg` of it (`select`): one round trip, where `locate` and an action
        take two. Raises `PageError` as `locate` does, and for an option that does not fit."""
        self._no_dialog()
        frames = self._frames_for(target)
        if op == "select" and len(frames) > 1:
            # Several frames: setting the first match before knowing it is the only one would
            # be wrong. Find first, then choose.
            _, candidate = await self.locate(target)
            ref = candidate.ref
            with _page_errors(f"choosing {arg!r}"):
                reply = await _script.one(
                    self._frame_of(ref), {"ref": ref}, op, arg, prefix=frame_prefix(ref)
                )
            return _value(reply, arg), candidate

        async def one(frame: Frame, wanted: dict[str, str], prefix: str) -> _script.OneReply:
            return await _script.one(frame, wanted, op, arg, prefix=prefix)

        replies = await self._search(target, frames, one)
        _, candidate = _pick(target, [(f, c) for f, r in replies for c in r.candidates])
        return _value(replies[0][1], arg), candidate

    async def read(self, what: str, run: Callable[[], Awaitable[_T]]) -> _T:
        """`run` something that only reads the page, with Playwright's errors said once."""
        self._no_dialog()
        with _page_errors(what):
            return await run()

    async def wait_for(self, text: str | None, target: Target | None, seconds: float) -> str:
        """Wait until `text` shows in the page, or `target` names an element."""
        deadline = asyncio.get_running_loop().time() + seconds
        if text is not None:
            with _page_errors(f"waiting for {text!r}"):
                await self._page.get_by_text(text).first.wait_for(timeout=seconds * 1000)
            return f"{text!r} is on the page"
        assert target is not None
        while True:
            try:
                _, candidate = await self.locate(target)
                return f"{describe(candidate)} is on the page"
            except PageError as exc:
                if exc.code != "not_found" or asyncio.get_running_loop().time() > deadline:
                    raise
            # A page says nothing when an element appears; looking again is the only way.
            await asyncio.sleep(0.2)

    async def tabs(self, switch_to: int | None) -> str:
        """List the tabs; with `switch_to` (1-based), make that one current first."""
        pages = self._page.context.pages
        if switch_to is not None:
            if switch_to > len(pages):
                raise PageError(f"there are {len(pages)} tabs", code="not_found")
            self._page = pages[switch_to - 1]
            self._prefixes.clear()
            with _page_errors("switching tabs"):
                await self._page.bring_to_front()
        lines = []
        for number, page in enumerate(pages, 1):
            mark = "*" if page is self._page else " "
            with _page_errors("listing tabs"):
                lines.append(f"{mark} {number}: {await page.title()!r} {page.url}")
        return "\n".join(lines + self.news()) + "\n(* the current tab)"

    # ---- acting ---------------------------------------------------------------------------

    async def act(
        self, what: str, action: Callable[[], Awaitable[object]], *, new_tab: bool = False
    ) -> str:
        """Run an action on the page; report it, and what it caused (a dialog, a new tab, a
        download). A dialog leaves the action waiting until `answer_dialog`. With `new_tab` (a
        link that opens one), wait for the tab: it opens after the click returns."""
        self._no_dialog()
        self._dialog_opened.clear()
        self._settled.clear()
        self._refused = None
        documents, tabs = self._documents, len(self._page.context.pages)
        running = asyncio.ensure_future(_mapped(what, action))
        opened = asyncio.ensure_future(self._dialog_opened.wait())
        try:
            await asyncio.wait({running, opened}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            opened.cancel()
        if not running.done() and self._dialog is not None:
            self._dialog.action = running
            return self._report(what, done=False)
        await running
        opening = new_tab and len(self._page.context.pages) == tabs
        if (opening or self._documents != documents) and not self._settled.is_set():
            # It started loading something: a page, or a download, which says so only once the
            # answer's headers are in. A moment for that; a slow page goes on loading anyway.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._settled.wait(), SETTLE_SECONDS)
        if self.downloads:
            await self._keep_downloads()
        if self._refused is not None:
            why, self._refused = self._refused, None
            raise PageError(f"{what}, but {why}", code="refused")
        return self._report(what)

    def _report(self, what: str, *, done: bool = True) -> str:
        lines = [what if done else f"{what}: started"]
        if self._dialog is not None:
            dialog = self._dialog.dialog
            lines.append(
                f"the page opened a dialog ({dialog.type}): {dialog.message!r}"
                + (f" (default answer {dialog.default_value!r})" if dialog.default_value else "")
                + "; answer it with browser_dialog"
            )
        return "\n".join(lines + self.news())

    def news(self) -> list[str]:
        """What happened since the last report (a tab opened, a download, a form blocked): said
        once, by whichever call reports next, as some of it comes after the action returns."""
        news, self._news = self._news, []
        return news

    async def disconnect(self) -> None:
        """Let go of the browser; it goes on running in its sandbox. A dialog left open is
        dismissed first: while it is open the page runs nothing, and the next connection to the
        browser would wait for it."""
        pending, self._dialog = self._dialog, None
        if pending is not None:
            if pending.action is not None:
                pending.action.cancel()
            with contextlib.suppress(PlaywrightError):
                await pending.dialog.dismiss()
        with contextlib.suppress(PlaywrightError):
            await self.browser.close()

    async def answer_dialog(self, accept: bool, text: str | None) -> str:
        """Accept (with `text` for a prompt) or dismiss the open dialog; then finish the action
        that was waiting for it."""
        pending = self._dialog
        if pending is None:
            raise PageError("no dialog is open", code="no_dialog")
        self._dialog = None
        with _page_errors("answering the dialog"):
            if accept:
                await pending.dialog.accept(text)
            else:
                await pending.dialog.dismiss()
        said = "accepted" if accept else "dismissed"
        if pending.action is not None:
            # If it is not done by then it goes on; its effects show in the next snapshot.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(pending.action), ACTION_TIMEOUT_MS / 1000)
        return self._report(f"{said} the {pending.dialog.type} dialog")

    async def submission(self, target: Target, *, key: str | None = None) -> Submission | None:
        """What acting on `target` would submit, or None if it submits nothing: a click on a
        submit control, Enter (`key`) in a form's field, or a form named to be submitted
        (`key` "submit")."""
        try:
            _, candidate = await self.locate(target)
            frame = self._frame_of(candidate.ref)
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

    def _frame_of(self, ref: str) -> Frame:
        prefix = frame_prefix(ref)
        return self._page.main_frame if prefix == "e" else self._prefixes[prefix]


def _body(request: dict[str, Any]) -> bytes:
    """A paused request's body, as DevTools gives it (whole, or in entries)."""
    entries = request.get("postDataEntries")
    if entries:
        return b"".join(base64.b64decode(str(e.get("bytes") or "")) for e in entries)
    return str(request.get("postData") or "").encode("utf-8", errors="surrogateescape")


def _navigation(request: Request) -> bool:
    """Whether `request` loads a tab's document (not a frame's, a script's or an image)."""
    try:
        return request.is_navigation_request() and request.frame.parent_frame is None
    except PlaywrightError:  # a service worker's request has no frame
        return False


@contextlib.contextmanager
def _page_errors(what: str) -> Iterator[None]:
    """Playwright's errors, said once, here, for the model; a lost browser is the program's."""
    try:
        yield
    except _script.TargetError as exc:
        raise PageError(f"{what}: {exc}", code="bad_target") from None
    except _script.PageScriptError:
        raise PageError(
            f"{what}: the page interfered with the runtime's page script; try again after "
            "reloading it",
            code="page_error",
        ) from None
    except PlaywrightTimeout as exc:
        raise PageError(
            f"{what}: timed out ({_first_line(exc)})", code="element_not_ready"
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
                code="tab_closed",
            ) from None
        if "ERR_BLOCKED_BY_ADMINISTRATOR" in message:
            raise PageError(
                f"{what}: refused: the browser may not open this URL", code="refused"
            ) from None
        if "ERR_TUNNEL_CONNECTION_FAILED" in message or "ERR_PROXY" in message:
            raise PageError(
                f"{what}: the egress proxy could not connect: the host is not in this task's "
                "allowlist, or it did not answer",
                code="refused",
            ) from None
        raise PageError(f"{what}: {message}") from None


async def _mapped(what: str, action: Callable[[], Awaitable[object]]) -> object:
    with _page_errors(what):
        return await action()


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip() and "=====" not in line]
    return lines[0].removeprefix("Error: ").strip() if lines else type(exc).__name__


def _pick(
    target: Target, found: list[tuple[Frame, _script.Candidate]]
) -> tuple[Frame, _script.Candidate]:
    """The one element found. Raises `PageError` listing the candidates when there are none or
    several."""
    if not found:
        raise PageError(
            f"no element matches {target}; take a snapshot to see the page's elements",
            code="not_found",
        )
    if len(found) > 1:
        listed = "\n".join(f"  {describe(c)}" for _, c in found[:15])
        more = f"\n  ... and {len(found) - 15} more" if len(found) > 15 else ""
        raise PageError(
            f"{target} matches {len(found)} elements; name one by its reference:\n" + listed + more,
            code="ambiguous",
        )
    return found[0]


def _value(reply: _script.OneReply, arg: str | None) -> Any:
    if reply.refused is not None:
        raise PageError(reply.refused, code="bad_field")
    if reply.options is not None:
        listed = ", ".join(repr(o) for o in reply.options[:30])
        raise PageError(f"no option {arg!r}; the options are: {listed}", code="not_found")
    return reply.value


def describe(candidate: _script.Candidate) -> str:
    """An element as the model is told of it: `[e12] button "Sign in"`, as in the snapshot."""
    if candidate.line:
        return candidate.line.strip()
    name = f" {candidate.name!r}" if candidate.name else ""
    return f"[{candidate.ref}] {candidate.role or candidate.tag}{name}"
