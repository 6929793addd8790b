"""The browser tools' own cost, and how fast a new task gets a browser.

Tools: each browser tool, called as the runner calls it for a call the gate allows (its effect
reader first, where it has one, then `Tool.invoke`, with the task's sandbox and browser), against
Playwright doing the same work on the same page of the same Chromium (in the same sandbox, over
the same DevTools connection). What each side does is printed once, per tool. Each round calls
the two back to back, alternating which goes first, so that both see the same load; the figure is
the median of the per-round ratios.

A new task's browser: `Sandboxes.for_task` + `Browsers.for_task` for a new task, taking a warm
browser from the pool, against a fresh Chromium launched by Playwright on the host (`launch` and
a first page). The pool's refill and the removal of the task's sandbox are over before the
reference is timed.

Needs a Docker daemon, the runtime image, and Chromium on the host for the reference launch.
"""

from __future__ import annotations

import asyncio
import functools
import secrets
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from _goals import Goals, machine
from playwright.async_api import FilePayload, Locator, Page, async_playwright

from base.artifacts import FolderArtifacts
from base.errors import SandboxError
from browser.manager import Browsers
from sandbox.container import Sandbox
from sandbox.limits import SandboxConfig, SandboxLimits
from sandbox.manager import Sandboxes
from tools import Tool, ToolContext
from tools import browser as bt
from tools import browser_pointer as bp

ROUNDS = 15
LAUNCHES = 7
SITE = Path(__file__).resolve().parent.parent / "tests" / "site"
CHROMIUM = "/usr/bin/chromium"

Timed = Callable[[], Awaitable[object]]
CV_TEXT = b"ten years of tests\n"
CV: FilePayload = {"name": "cv.txt", "mimeType": "text/plain", "buffer": CV_TEXT}


async def _fill_raw(page: Page) -> None:
    await page.get_by_label("Full name").fill("Ann")
    await page.get_by_label("Email").fill("a@b.c")
    await page.get_by_label("Country").select_option("ES")


async def _open_raw(page: Page, url: str) -> str:
    response = await page.goto(url, wait_until="domcontentloaded")
    assert response is not None
    return f"{response.status} {await page.title()}"


async def _upload_raw(page: Page, box: Sandbox) -> None:
    data = await box.read_file("cv.txt")
    await page.get_by_label("CV").set_input_files({**CV, "buffer": data})


async def _drag_raw(page: Page, locator: Locator, dx: float) -> None:
    await locator.scroll_into_view_if_needed()
    box = await locator.bounding_box()
    assert box is not None
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    await page.mouse.move(x, y)
    await page.mouse.down()
    await page.mouse.move(x + 2, y + 2, steps=2)  # as the tool does: past drag code's threshold
    await page.mouse.move(x + dx, y, steps=10)
    await page.mouse.up()


async def _marked_raw(page: Page, path: Path) -> None:
    await page.aria_snapshot(mode="ai")
    await page.screenshot(path=path, type="jpeg", quality=70, scale="css")


async def _tabs_raw(page: Page) -> list[str]:
    return [f"{await p.title()} {p.url}" for p in page.context.pages]


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve() -> tuple[ThreadingHTTPServer, int]:
    handler = functools.partial(_Quiet, directory=str(SITE))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


async def timed(call: Timed) -> float:
    started = time.perf_counter()
    await call()
    return time.perf_counter() - started


#: What the runtime's click and press read before acting (their effect reader, and once more just
#: before the action): the form the element would submit, where to, and its values. Playwright's
#: side reads the same with one evaluate, so that both sides know what the action sends.
FORM_READ = """(el) => {
  const form = el.form;
  if (!form) return null;
  const submitter = el.type === "submit" || el.type === "image" ? el : null;
  const values = [...new FormData(form, submitter)].map(([k, v]) => [k, String(v)]);
  return {action: submitter?.formAction || form.action,
          method: submitter?.formMethod || form.method, values};
}"""

#: what the Playwright side does, per tool; the runtime's side is always the tool as the runner
#: calls it (effect reader, then invoke: find the element by the page script, act, report)
REFERENCE = {
    "open": "page.goto() to DOMContentLoaded, then page.title() (the tool reports both)",
    "snapshot": "page.aria_snapshot(mode='ai'): every element with a ref, values, states, frames",
    "click": "read the button's form (one evaluate), then locator.click()",
    "press": "read the field's form (one evaluate), then locator.press()",
    "extract": "locator.inner_text()",
    "wait": "get_by_text().first.wait_for()",
    "fill_form": "fill, fill, select_option on three labelled fields",
    "upload": "read the file from the sandbox (as the tool does), then set_input_files()",
    "screenshot": "page.screenshot() written to a file on the host, as the tool keeps it",
    "screenshot_marked": "page.aria_snapshot(mode='ai'), then a JPEG page.screenshot() written "
    "to a file (the tool also draws and removes the refs' marks)",
    "tabs": "title and URL of each page of the context",
    "hover": "locator.hover()",
    "drag": "scroll into view, read the box, then press, move in 2 and 10 steps and release",
}


async def _read_form_then(page_locator: Locator, action: Callable[[], Awaitable[object]]) -> None:
    await page_locator.evaluate(FORM_READ)
    await action()


def pairs(
    page: Page, tool: Callable[..., Awaitable[object]], url: str, box: Sandbox, shots: Path
) -> dict[str, tuple[Timed, Timed]]:
    """For each tool, (the tool's call, the raw Playwright call doing the same work)."""
    form = page.get_by_label
    check = page.get_by_role("button", name="Check")
    return {
        "open": (
            lambda: tool(bt.browser_open, url=url),
            lambda: _open_raw(page, url),
        ),
        "snapshot": (
            lambda: tool(bt.browser_snapshot),
            lambda: page.aria_snapshot(mode="ai"),
        ),
        "type": (
            lambda: tool(bt.browser_type, target="Full name", text="Ann Lee"),
            lambda: form("Full name").fill("Ann Lee"),
        ),
        "press": (
            lambda: tool(bt.browser_press, target="Full name", key="End"),
            lambda: _read_form_then(form("Full name"), lambda: form("Full name").press("End")),
        ),
        "select": (
            lambda: tool(bt.browser_select, target="Country", option="Spain"),
            lambda: form("Country").select_option("ES"),
        ),
        "check": (
            lambda: tool(bt.browser_check, target="Send me news"),
            lambda: form("Send me news").set_checked(True),
        ),
        "choose": (
            lambda: tool(bt.browser_choose, target="Pro"),
            lambda: form("Pro").check(),
        ),
        "set_date": (
            lambda: tool(bt.browser_set_date, target="Start date", value="2026-12-01"),
            lambda: form("Start date").fill("2026-12-01"),
        ),
        "click": (
            lambda: tool(bt.browser_click, target="Check"),
            lambda: _read_form_then(check, check.click),
        ),
        "extract": (
            lambda: tool(bt.browser_extract, target="css=#out"),
            lambda: page.locator("#out").inner_text(),
        ),
        "wait": (
            lambda: tool(bt.browser_wait, text="Sign up"),
            page.get_by_text("Sign up").first.wait_for,
        ),
        "fill_form": (
            lambda: tool(
                bt.fill_form, fields={"Full name": "Ann", "Email": "a@b.c", "Country": "ES"}
            ),
            lambda: _fill_raw(page),
        ),
        "upload": (
            lambda: tool(bt.browser_upload, target="CV", path="cv.txt"),
            lambda: _upload_raw(page, box),
        ),
        "screenshot": (
            lambda: tool(bt.browser_screenshot, marks=False),
            lambda: page.screenshot(path=shots / "reference.png"),
        ),
        "screenshot_marked": (
            lambda: tool(bt.browser_screenshot),
            lambda: _marked_raw(page, shots / "reference.jpg"),
        ),
        "tabs": (
            lambda: tool(bt.browser_tabs),
            lambda: _tabs_raw(page),
        ),
        "hover": (
            lambda: tool(bp.browser_hover, target="Check"),
            check.hover,
        ),
        "drag": (
            lambda: tool(bp.browser_drag, target="Full name", dx=20),
            lambda: _drag_raw(page, form("Full name"), 20),
        ),
        "scroll": (
            lambda: tool(bt.browser_scroll, target="Create account"),
            lambda: page.get_by_role("button", name="Create account").scroll_into_view_if_needed(),
        ),
    }


async def tool_latency(
    browsers: Browsers, sandboxes: Sandboxes, port: int
) -> dict[str, list[float]]:
    task_id = "bench-tools"
    limits = SandboxLimits(network="proxy", allow_domains=(f"127.0.0.1:{port}",))

    async def box() -> Any:
        return await sandboxes.for_task(task_id, limits)

    async def browser() -> Any:
        return await browsers.for_task(task_id, await box())

    artifacts = Path(tempfile.mkdtemp(prefix="bench-browser-"))
    ctx = ToolContext(
        task_id,
        "bench",
        "bench",
        sandbox=box,
        browser=browser,
        artifacts=FolderArtifacts(artifacts),
    )

    async def tool(t: Tool, **given: Any) -> object:
        # As the runner calls it for a call the gate allows: validated arguments, the effect
        # reader (what the call would send), then the call.
        arguments = t.validate(given).model_dump(mode="json")
        if t.effect is not None:
            await t.effect(ctx, arguments)
        result = await t.invoke(arguments, ctx)
        assert result.ok, result.content
        return result

    url = f"http://127.0.0.1:{port}/form.html"
    driver = await browser()
    sandbox = await box()
    await sandbox.write_file("cv.txt", CV_TEXT)
    await tool(bt.browser_open, url=url)
    ratios: dict[str, list[float]] = {}
    try:
        for round_ in range(ROUNDS):
            for name, (ours, raw) in pairs(driver.page, tool, url, sandbox, artifacts).items():
                await ours()  # once each first: the same state for both timings
                await raw()
                if round_ % 2:
                    mine, theirs = await timed(ours), await timed(raw)
                else:
                    theirs, mine = await timed(raw), await timed(ours)
                ratios.setdefault(name, []).append(mine / theirs)
    finally:
        await browsers.forget(task_id)
        await sandboxes.release(task_id)
        shutil.rmtree(artifacts, ignore_errors=True)
    return ratios


async def new_browser(browsers: Browsers, sandboxes: Sandboxes) -> tuple[list[float], list[float]]:
    """(seconds to a new task's browser from the pool, seconds to a fresh launch) per round."""
    limits = sandboxes.browser_limits()
    warm, fresh = [], []
    async with async_playwright() as playwright:
        for _ in range(LAUNCHES):
            await browsers.fill_pool()
            task_id = "bench-" + secrets.token_hex(3)

            async def claim(task_id: str = task_id) -> None:
                box = await sandboxes.for_task(task_id, limits)
                driver = await browsers.for_task(task_id, box)
                assert driver.page is not None

            warm.append(await timed(claim))
            # Nothing of ours runs while the reference is timed: the claim's refill is waited
            # for, and the task's sandbox removed.
            await browsers.settled()
            await browsers.forget(task_id)
            await sandboxes.release(task_id)

            started = time.perf_counter()
            launched = await playwright.chromium.launch(
                executable_path=CHROMIUM, args=["--no-sandbox"]
            )
            await launched.new_page()
            fresh.append(time.perf_counter() - started)
            await launched.close()
    return warm, fresh


async def bench() -> None:
    server, port = serve()
    # The bench's site is on this host's loopback, which a task reaches only if config says so.
    config = SandboxConfig(pool_size=0, browser_pool=1, allow_private=True)
    sandboxes = Sandboxes(config, scope="bench-browser")
    browsers = Browsers(sandboxes)
    try:
        ratios = await tool_latency(browsers, sandboxes, port)
        warm, fresh = await new_browser(browsers, sandboxes)
    finally:
        await browsers.aclose()
        await sandboxes.reap(lambda _task: True)  # its own tasks; the pool stays, as a runner's
        await sandboxes.aclose()
        server.shutdown()
    print(machine())
    print(f"rounds: {ROUNDS} per tool; {LAUNCHES} new browsers per method")
    print("threads: one event loop and one Playwright connection, shared by both sides")
    print(
        "each tool: the runtime's side is the tool as the runner calls it (effect reader where "
        "it has one, then invoke: find the element by the page script, act, report what the "
        "action caused); Playwright's side, on the same page over the same connection:"
    )
    for name in ratios:
        print(f"  {name + ':':10} {REFERENCE.get(name, 'the locator call that does the same')}")
    print(
        "new browser: the runtime claims a pooled sandbox with Chromium started and connected; "
        "the reference launches Chromium on the host and opens a page, with the pool's refill "
        "finished and nothing of ours running"
    )
    for name, values in ratios.items():
        print(
            f"  {name + ':':10} median {statistics.median(values):.2f}x "
            f"(range {min(values):.2f}-{max(values):.2f})"
        )
    print(f"new task's browser from the pool: {statistics.median(warm) * 1e3:7.1f} ms (median)")
    print(f"fresh Chromium launch (host):     {statistics.median(fresh) * 1e3:7.1f} ms (median)")
    worst = max(ratios, key=lambda n: statistics.median(ratios[n]))
    print(f"worst tool ({worst}): {statistics.median(ratios[worst]):.2f}x")
    goals = Goals()
    for name, values in ratios.items():
        print(goals.add(f"tool_{name}_vs_playwright", statistics.median(values), "<= 1.5x"))
    ratio = statistics.median(warm) / statistics.median(fresh)
    print(goals.add("new_browser_vs_fresh_launch", ratio, "<= 0.1x"))
    goals.finish()


def main() -> None:
    try:
        asyncio.run(bench())
    except SandboxError as exc:
        print(f"browser bench: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
