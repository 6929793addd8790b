"""What goes wrong on a page, for the model to read: `PageError`.

Failures the model should see (a missing or ambiguous target, an element that never becomes
clickable, a refused URL) are `PageError`s, raised by a driver and turned into observations by the
tools. Failures of the program (the browser is gone) are `SandboxError`s: the task pauses.

    page errors:   PageError(code=...)
                   ├─ not_found, ambiguous     the target names no element, or several
                   ├─ element_not_ready        it never became visible, enabled or editable
                   ├─ refused                  a URL the browser may not open
                   └─ page_error               anything else Playwright says about the page
"""

from __future__ import annotations

from base.errors import ErrorCode


class PageError(Exception):
    """Something about the page the model should know and can act on. `code` says what."""

    def __init__(self, message: str, *, code: str = ErrorCode.PAGE_ERROR) -> None:
        super().__init__(message)
        self.code = code
