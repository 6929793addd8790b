"""What a mouse does that no field names, as a person's hand does it: a drag in steps, a text
selection, a look at what is under a point. `PageDriver`'s pointer actions run these inside its
reported actions (see `_tabs.Tabs.act`)."""

from __future__ import annotations

from playwright.async_api import Locator, Page

from base.errors import ErrorCode
from browser._frames import describe
from browser._script import Candidate
from browser.errors import PageError

#: the mouse moves a drag makes on its way (each a mousemove event the page sees)
DRAG_STEPS = 10
#: CSS pixels a drag onto an element goes past its centre
DRAG_PAST = 6

#: Selects an element's text (or the first `wanted` in it) with a DOM range over its text nodes;
#: the text selected, or null when `wanted` is not in it.
_SELECT_TEXT = """(el, wanted) => {
  const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
  const nodes = [];
  for (let n = walker.nextNode(); n; n = walker.nextNode()) nodes.push(n);
  const whole = nodes.map((n) => n.data).join('');
  const start = wanted ? whole.indexOf(wanted) : 0;
  if (start < 0 || !nodes.length) return null;
  const end = wanted ? start + wanted.length : whole.length;
  const at = (offset) => {
    let seen = 0;
    for (const n of nodes) {
      if (offset <= seen + n.data.length) return [n, offset - seen];
      seen += n.data.length;
    }
    const last = nodes[nodes.length - 1];
    return [last, last.data.length];
  };
  const range = document.createRange();
  range.setStart(...at(start));
  range.setEnd(...at(end));
  const selection = window.getSelection();
  selection.removeAllRanges();
  selection.addRange(range);
  document.dispatchEvent(new Event('selectionchange'));
  return selection.toString();
}"""

#: What is at a point of the viewport, as a person would name it: tag, and its text or label.
_AT_POINT = """([x, y]) => {
  const el = document.elementFromPoint(x, y);
  if (!el) return 'nothing (outside the page)';
  const text = (el.getAttribute('aria-label') || el.innerText || el.textContent || '')
    .replace(/\\s+/g, ' ').trim().slice(0, 60);
  return `<${el.localName}>` + (text ? ` ${JSON.stringify(text)}` : '');
}"""


async def centre(locator: Locator, candidate: Candidate) -> tuple[float, float]:
    """The middle of an element's box, in the viewport's CSS pixels."""
    box = await locator.bounding_box()
    if box is None:
        raise PageError(f"{describe(candidate)} has no box on the page", code=ErrorCode.BAD_TARGET)
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


def _past(start: float, end: float) -> float:
    """How far beyond `end` to go, coming from `start` (0 when there is no way to go)."""
    return 0.0 if abs(end - start) < 1 else DRAG_PAST if end > start else -DRAG_PAST


async def drag(
    page: Page,
    grabbed: tuple[Locator, Candidate],
    onto: tuple[Locator, Candidate] | None,
    dx: float,
    dy: float,
) -> None:
    """Press on `grabbed`, move in steps onto `onto` (a little past its middle, the way it
    travels: sorted lists swap an item as the pointer crosses its middle) or by (`dx`, `dy`),
    and release. The pages' own drag code (jQuery UI's sortable, for one) needs the moves
    between, and starts only past a few pixels."""
    await grabbed[0].scroll_into_view_if_needed()
    x, y = await centre(*grabbed)
    if onto is not None:
        to_x, to_y = await centre(*onto)
        to_x, to_y = to_x + _past(x, to_x), to_y + _past(y, to_y)
    else:
        to_x, to_y = x + dx, y + dy
    mouse = page.mouse
    await mouse.move(x, y)
    await mouse.down()
    await mouse.move(x + (2 if to_x >= x else -2), y + (2 if to_y >= y else -2), steps=2)
    await mouse.move(to_x, to_y, steps=DRAG_STEPS)
    await mouse.up()


async def select_text(locator: Locator, candidate: Candidate, text: str | None) -> None:
    """Select the element's text, or the first `text` in it. Raises `PageError` if it has no
    such text."""
    if await locator.evaluate(_SELECT_TEXT, text) is None:
        raise PageError(
            f"{describe(candidate)} has no text {text!r} to select", code=ErrorCode.NOT_FOUND
        )


async def at_point(page: Page, x: float, y: float) -> str:
    """What is at a point of the viewport, as a person would name it."""
    there: str = await page.evaluate(_AT_POINT, [x, y])
    return there
