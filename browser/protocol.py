"""The seam between the browser tools and a browser: `BrowserDriver`, what the tools ask of a
task's browser. `PageDriver` (browser/driver.py) is the one there is, Playwright driving the
task's Chromium; another (a remote browser) would implement the same methods. Nothing here
names Playwright: a target is a `Target`, a form's submission a `Submission`, and what a call
did is said as text for the model.

Each method acts on the current tab, and raises `PageError` (browser/errors.py) for what the
model should read and act on; a failure of the program (the browser is gone) is a
`SandboxError`.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Protocol

from browser.submission import Submission
from browser.target import Target

#: what a snapshot shows at most, unless asked otherwise
SNAPSHOT_CHARS = 12_000
#: the most of a whole page's text `extract` returns
EXTRACT_CHARS = 20_000


class BrowserDriver(Protocol):
    """What the browser tools ask of a task's browser. The methods that act report what they
    did and what it caused (a dialog, a new tab, a download, a form held back)."""

    @property
    def url(self) -> str:
        """The current tab's URL."""
        ...

    async def goto(self, url: str) -> str:
        """Open `url` (http or https) in the current tab. Raises `PageError` for a refused or
        failed load."""
        ...

    async def snapshot(self, max_chars: int = SNAPSHOT_CHARS, *, boxes: bool = False) -> str:
        """The current tab as text, at most about `max_chars`, with a note if it was cut:
        every interactive element with its reference (e12); with `boxes`, where each is
        (`box=x,y,width,height` in CSS pixels of its frame)."""
        ...

    async def extract(self, target: Target | None, *, table: bool = False) -> str:
        """The text of the element `target` names, or of the whole page (at most
        EXTRACT_CHARS); with `table`, the element's rows of cells, as JSON."""
        ...

    async def screenshot(self, *, full_page: bool = False) -> bytes:
        """A PNG of what the window shows, or of the whole page."""
        ...

    @property
    def changing(self) -> bool:
        """Whether the page changed between the last two snapshots."""
        ...

    async def marked_screenshot(self, *, full_page: bool = False) -> tuple[bytes, int]:
        """A JPEG with each element the snapshot lists framed and tagged with its ref, at most
        `base.images.MAX_BYTES` if it can be; and how many elements it marks."""
        ...

    async def wait_for(self, text: str | None, target: Target | None, seconds: float) -> str:
        """Wait until `text` shows in the page, or `target` names an element."""
        ...

    async def wait_state(self, target: Target, state: str, seconds: float) -> str:
        """Wait until the element `target` names is in `state` (visible, hidden, enabled,
        disabled, checked, unchecked, expanded, collapsed). Raises `PageError` if it is not
        within `seconds`."""
        ...

    async def wait_text_in(self, target: Target, text: str, seconds: float) -> str:
        """Wait until `text` shows inside the element `target` names (a region, so that the
        page's own instructions never match). Raises `PageError` if it does not."""
        ...

    async def wait_quiet(self, seconds: float) -> str:
        """Wait until no request of the task's pages is in flight for half a second. Raises
        `PageError` naming what is still in flight if that does not happen within `seconds`."""
        ...

    async def wait_change(self, target: Target, seconds: float) -> tuple[str, bool]:
        """Wait until the content of the element `target` names changes and is still again;
        what to say, and whether it changed within `seconds`."""
        ...

    async def tabs(self, switch_to: int | None) -> str:
        """List the tabs; with `switch_to` (1-based), make that one current first."""
        ...

    async def back(self) -> str:
        """Go back to the previous page of the current tab."""
        ...

    async def hover(self, target: Target) -> str:
        """Move the mouse over the element (a menu that opens on hover)."""
        ...

    async def drag(
        self, source: Target, *, to: Target | None = None, dx: float = 0, dy: float = 0
    ) -> str:
        """Drag `source` onto `to`, or by (`dx`, `dy`) CSS pixels."""
        ...

    async def select_text(self, target: Target, text: str | None = None) -> str:
        """Select the element's text, or the first `text` in it."""
        ...

    async def click_at(self, x: float, y: float) -> str:
        """Click a point of the viewport (CSS pixels)."""
        ...

    async def scroll(self, direction: str) -> str:
        """Scroll the page by most of a screen, "down" or "up"."""
        ...

    async def scroll_to(self, target: Target) -> str:
        """Scroll until the element `target` names is in view."""
        ...

    async def click(self, target: Target) -> str:
        """Click the element `target` names."""
        ...

    async def type_text(self, target: Target, text: str, *, clear: bool = True) -> str:
        """Type `text` into a field: in place of its value, or (not `clear`) after it."""
        ...

    async def press(self, key: str, target: Target | None = None, *, times: int = 1) -> str:
        """Press `key` (as Playwright names keys: Enter, Control+A) on the element `target`
        names, or on whatever has the focus."""
        ...

    async def select(self, target: Target, option: str) -> str:
        """Choose an option of a select by its label or its value."""
        ...

    async def set_checked(self, target: Target, checked: bool) -> str:
        """Check or uncheck a checkbox (or a switch)."""
        ...

    async def choose(self, target: Target) -> str:
        """Choose a radio button."""
        ...

    async def set_date(self, target: Target, value: str) -> str:
        """Set a date or time field (YYYY-MM-DD, HH:MM, YYYY-MM-DDTHH:MM): a native one, or a
        text field with a calendar widget."""
        ...

    async def upload(self, target: Target, name: str, data: Awaitable[bytes]) -> str:
        """Choose a file, `name` with the content `data` (awaited while the field is found),
        in a file field."""
        ...

    async def fill_field(self, target: Target, value: str) -> str:
        """Set one field of a form to `value` the way its kind wants (text, select, checkbox,
        radio group, date); say what was done."""
        ...

    async def submit(self, target: Target) -> str:
        """Submit the form of the element `target` names, as its submit button would."""
        ...

    async def submission(self, target: Target, *, key: str | None = None) -> Submission | None:
        """What acting on `target` would submit, or None if it submits nothing: a click on a
        submit control, Enter (`key`) in a form's field, or a form named to be submitted
        (`key` "submit")."""
        ...

    def submitting(self, submission: Submission | None) -> None:
        """The next action sends `submission` (read again just before, as approved): let the
        form it sends through, once. Any other form a page sends is held back."""
        ...

    async def answer_dialog(self, accept: bool, text: str | None) -> str:
        """Accept (with `text` for a prompt) or dismiss the dialog the page opened; raises
        `PageError` (code "no_dialog") if none is open."""
        ...
