"""A task's browser, connected: its tabs, one of them current (the one the tools act on), what
happens in them (a dialog, a new tab, a download, a page that did not load), and an action run
and reported with what it caused."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from playwright.async_api import Browser, Dialog, Download, Page, Request, Response
from playwright.async_api import Error as PlaywrightError

from base.errors import ErrorCode, SandboxError
from browser._frames import Frames
from browser._guard import FormGuard
from browser._page_errors import mapped, page_errors
from browser._script import LISTENERS
from browser._traffic import Traffic
from browser.errors import PageError
from browser.submission import Submission
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


@dataclass
class _Pending:
    """A dialog the page opened, and the action that is waiting for it to be answered."""

    dialog: Dialog
    action: asyncio.Future[object] | None = None


@dataclass
class Tabs:
    """A task's Chromium, connected over DevTools, and its tabs; `page` is the current one.
    Construct with `Tabs.attach(browser)`."""

    browser: Browser
    page: Page
    #: the current tab's frames, as its last snapshot named them
    frames: Frames = field(default_factory=Frames)
    #: holds back a form no approval covers (see `submitting`)
    guard: FormGuard = field(init=False)
    _dialog: _Pending | None = None
    #: set when a document request has settled (loaded, or became a download): an action that
    #: started one waits for that before it reports
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

    #: the requests the pages have in flight
    traffic: Traffic = field(default_factory=Traffic)

    def __post_init__(self) -> None:
        self.guard = FormGuard(self.tell)

    @classmethod
    async def attach(cls, browser: Browser) -> Tabs:
        context = browser.contexts[0] if browser.contexts else await browser.new_context()
        # Before any page script runs, so that the snapshot knows what the page listens to.
        await context.add_init_script(LISTENERS)
        page = context.pages[0] if context.pages else await context.new_page()
        tabs = cls(browser, page)
        context.on("page", tabs._on_new_page)
        tabs._watch(page)
        await tabs.guard.watch(page)
        return tabs

    @property
    def connected(self) -> bool:
        return self.browser.is_connected()

    def tell(self, line: str) -> None:
        """Say `line` with the next report (see `news`)."""
        self._news.append(line)

    def submitting(self, submission: Submission | None) -> None:
        """The next action sends `submission` (read again just before, as approved): let the
        form it sends through, once."""
        self.guard.allowed = submission

    def _watch(self, page: Page) -> None:
        page.set_default_timeout(ACTION_TIMEOUT_MS)
        page.set_default_navigation_timeout(NAVIGATION_TIMEOUT_MS)
        page.on("dialog", self._on_dialog)
        page.on("download", self._on_download)
        page.on("close", self._on_close)
        page.on("domcontentloaded", lambda _: self._settled.set())
        page.on("response", self._on_response)
        page.on("requestfailed", self._on_request_failed)
        self.traffic.watch(page)

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
        if page is not self.page:
            return
        open_ = [p for p in page.context.pages if not p.is_closed()]
        if open_:
            self.page = open_[-1]
            self.frames.forget()
            self._news.append(f"the tab closed; the current tab is now {self.page.url}")

    def _on_new_page(self, page: Page) -> None:
        # A popup or a link opened in a new tab: follow it, and say so.
        self._watch(page)
        self.guard.spawn(self.guard.watch(page))
        self.page = page
        self.frames.forget()
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
            with page_errors(f"downloading {name}"):
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

    def no_dialog(self) -> None:
        """While a dialog is open the page runs nothing (no script, no click): say so at once
        rather than wait for a timeout."""
        if self._dialog is not None:
            dialog = self._dialog.dialog
            raise PageError(
                f"the page's {dialog.type} dialog is open ({dialog.message!r}); answer it with "
                "browser_dialog first",
                code=ErrorCode.DIALOG_OPEN,
            )

    async def listing(self, switch_to: int | None) -> str:
        """List the tabs; with `switch_to` (1-based), make that one current first."""
        pages = self.page.context.pages
        if switch_to is not None:
            if switch_to > len(pages):
                raise PageError(f"there are {len(pages)} tabs", code=ErrorCode.NOT_FOUND)
            self.page = pages[switch_to - 1]
            self.frames.forget()
            with page_errors("switching tabs"):
                await self.page.bring_to_front()
        lines = []
        for number, page in enumerate(pages, 1):
            mark = "*" if page is self.page else " "
            with page_errors("listing tabs"):
                lines.append(f"{mark} {number}: {await page.title()!r} {page.url}")
        return "\n".join(lines + self.news()) + "\n(* the current tab)"

    async def act(
        self, what: str, action: Callable[[], Awaitable[object]], *, new_tab: bool = False
    ) -> str:
        """Run an action on the page; report it, and what it caused (a dialog, a new tab, a
        download). A dialog leaves the action waiting until `answer_dialog`. With `new_tab` (a
        link that opens one), wait for the tab: it opens after the click returns."""
        self.no_dialog()
        self._dialog_opened.clear()
        self._settled.clear()
        self._refused = None
        documents, tabs = self.guard.documents, len(self.page.context.pages)
        running = asyncio.ensure_future(mapped(what, action))
        opened = asyncio.ensure_future(self._dialog_opened.wait())
        try:
            await asyncio.wait({running, opened}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            opened.cancel()
        if not running.done() and self._dialog is not None:
            self._dialog.action = running
            return self._report(what, done=False)
        await running
        opening = new_tab and len(self.page.context.pages) == tabs
        if (opening or self.guard.documents != documents) and not self._settled.is_set():
            # It started loading something: a page, or a download, which says so only once the
            # answer's headers are in. A moment for that; a slow page goes on loading anyway.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._settled.wait(), SETTLE_SECONDS)
        if self.downloads:
            await self._keep_downloads()
        if self._refused is not None:
            why, self._refused = self._refused, None
            raise PageError(f"{what}, but {why}", code=ErrorCode.REFUSED)
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

    async def answer_dialog(self, accept: bool, text: str | None) -> str:
        """Accept (with `text` for a prompt) or dismiss the open dialog; then finish the action
        that was waiting for it."""
        pending = self._dialog
        if pending is None:
            raise PageError("no dialog is open", code=ErrorCode.NO_DIALOG)
        self._dialog = None
        with page_errors("answering the dialog"):
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


def _navigation(request: Request) -> bool:
    """Whether `request` loads a tab's document (not a frame's, a script's or an image)."""
    try:
        return request.is_navigation_request() and request.frame.parent_frame is None
    except PlaywrightError:  # a service worker's request has no frame
        return False
