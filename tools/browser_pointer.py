"""The browser's pointer tools: hover, drag, select text, and click at a point. What a person
does with a mouse that no field or button names. Each reports what it did and what it caused, as
the other browser tools do; a form a page would send on its own is held back as always."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from tools.browser import _TIMEOUT, TargetText, _driver, _model_errors, _target
from tools.registry import Registry
from tools.tool import ToolContext, ToolError, tool

#: CSS pixels of the viewport or of a drag's offset
Pixels = Annotated[float, Field(ge=-10_000, le=10_000)]


@tool(needs_network=True, touches="external", timeout=_TIMEOUT)
async def browser_hover(ctx: ToolContext, target: TargetText) -> str:
    """Move the mouse over an element: menus and tooltips that open on hover show then (take a
    snapshot to see them).

    Args:
        target: the element to hover over.
    """
    driver = await _driver(ctx)
    return await _model_errors(driver.hover(_target(target)))


@tool(needs_network=True, touches="external", timeout=_TIMEOUT)
async def browser_drag(
    ctx: ToolContext,
    target: TargetText,
    to: TargetText | None = None,
    dx: Pixels = 0,
    dy: Pixels = 0,
) -> str:
    """Drag an element with the mouse: onto another element (`to`: a drop zone, a place in a
    list), or by an offset in CSS pixels (`dx`, `dy`: a slider's handle).

    Args:
        target: the element to grab.
        to: the element to drop it on (leave out to drag by dx, dy).
        dx: how far right to drag it (left if negative).
        dy: how far down to drag it (up if negative).
    """
    if to is None and dx == 0 and dy == 0:
        raise ToolError("say where to: to=ELEMENT, or an offset dx/dy in pixels")
    driver = await _driver(ctx)
    return await _model_errors(
        driver.drag(_target(target), to=_target(to) if to else None, dx=dx, dy=dy)
    )


@tool(needs_network=True, touches="external", timeout=_TIMEOUT)
async def browser_select_text(ctx: ToolContext, target: TargetText, text: str | None = None) -> str:
    """Select text on the page, as dragging the mouse over it would: all of an element's text,
    or the first place `text` appears in it.

    Args:
        target: the element whose text to select.
        text: the part of it to select (leave out for all of it).
    """
    driver = await _driver(ctx)
    return await _model_errors(driver.select_text(_target(target), text or None))


@tool(needs_network=True, touches="external", timeout=_TIMEOUT)
async def browser_click_at(ctx: ToolContext, x: Pixels, y: Pixels) -> str:
    """Click a point of the page's visible area, in CSS pixels from its top left: for what no
    element names (a shape on a canvas, a cell of a drawn grid). Says what was there.

    Args:
        x: pixels from the left edge.
        y: pixels from the top edge.
    """
    driver = await _driver(ctx)
    return await _model_errors(driver.click_at(x, y))


registry = Registry([browser_hover, browser_drag, browser_select_text, browser_click_at])
