"""The browser tools through the real Chromium in a real sandbox, on the pages of tests/site and
tests/pages served on loopback (reached through the task's egress proxy)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from base.artifacts import FolderArtifacts
from base.images import Image
from browser.driver import PageDriver
from browser.manager import Browsers
from sandbox.container import BROWSER_USER, Sandbox
from sandbox.limits import SandboxConfig, SandboxLimits
from sandbox.manager import Sandboxes
from sandbox.proxy import EgressAttempt
from tools import Tool, ToolContext, ToolResult
from tools import browser as bt
from tools import browser_pointer as bp

from .site_server import Site, serve_site
from .test_sandbox import assert_confined_inside, assert_hardened

pytestmark = pytest.mark.asyncio(loop_scope="module")


@dataclass
class Browsing:
    """One task's sandbox and browser, shared by the tests of this module."""

    site: Site
    other: Site
    sandboxes: Sandboxes
    browsers: Browsers
    egress: list[tuple[str, EgressAttempt]]
    artifacts: Path
    task_id: str = "browsing"

    def context(self) -> ToolContext:
        sandbox = self.sandboxes.for_task
        limits = SandboxLimits(
            network="proxy", allow_domains=(self.site.host, self.other.host), memory_mb=1024
        )

        async def box() -> Any:
            return await sandbox(self.task_id, limits)

        async def browser() -> Any:
            return await self.browsers.for_task(self.task_id, await box())

        return ToolContext(
            self.task_id,
            "call-1",
            "key",
            sandbox=box,
            browser=browser,
            artifacts=FolderArtifacts(self.artifacts),
        )

    async def call(self, tool: Tool, **arguments: Any) -> ToolResult:
        return await tool.invoke(arguments, self.context())

    async def ok(self, tool: Tool, **arguments: Any) -> str:
        result = await self.call(tool, **arguments)
        assert result.ok, result.content
        return result.content

    async def fails(self, tool: Tool, code: str, **arguments: Any) -> str:
        result = await self.call(tool, **arguments)
        assert not result.ok, result.content
        assert result.error_code == code, result.content
        return result.content


@pytest.fixture(scope="module")
def sites() -> Iterator[tuple[Site, Site]]:
    with serve_site() as site, serve_site() as other:
        yield site, other


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def web(
    sites: tuple[Site, Site], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Browsing]:
    egress: list[tuple[str, EgressAttempt]] = []
    sandboxes = Sandboxes(
        SandboxConfig(pool_size=0, allow_private=True),  # the test's sites are on loopback
        scope="browsertest",
        on_egress=lambda task, attempt: egress.append((task, attempt)),
    )
    browsers = Browsers()
    artifacts = tmp_path_factory.mktemp("artifacts")
    web = Browsing(sites[0], sites[1], sandboxes, browsers, egress, artifacts)
    try:
        yield web
    finally:
        await browsers.aclose()
        await sandboxes.release(web.task_id)
        await sandboxes.aclose()


async def test_open_and_snapshot_show_every_control_with_stable_references(web: Browsing) -> None:
    opened = await web.ok(bt.browser_open, url=web.site.url("site/form.html"))
    assert "title: 'Sign up'" in opened
    first = await web.ok(bt.browser_snapshot)
    assert first.startswith("<page-content>")
    assert "not as instructions" in first
    for line in (
        '[e1] textbox "Full name" required',
        '[e2] textbox "Email" type=email',
        '[e3] textbox "Your city"',
        '"Spain"=ES',
        '[e6] checkbox "Send me news"',
        'radio "Pro"',
        'button "Create account"',
    ):
        assert line in first
    assert await web.ok(bt.browser_snapshot) == first  # the same references again


async def test_urls_the_browser_may_not_open_are_refused(web: Browsing) -> None:
    for url in ("file:///etc/passwd", "javascript:alert(1)", "data:text/html,<h1>x</h1>"):
        assert "refused" in await web.fails(bt.browser_open, "refused", url=url)
    # A host outside the allowlist: the egress proxy refuses it, and says so in the log.
    web.egress.clear()
    outside = f"127.0.0.2:{web.site.port}"  # the same server, by a name not allowed
    assert "egress policy" in await web.fails(bt.browser_open, "refused", url=f"http://{outside}/")
    assert any(not a.allowed and a.host == "127.0.0.2" for _, a in web.egress)
    # A page that sends the browser to a file: URL, or to another host, gets nowhere.
    await web.ok(bt.browser_open, url=web.site.url("site/widgets.html"))
    await web.ok(bt.browser_open, url=web.site.url("site/redirect.html?to=file:///etc/passwd"))
    await web.ok(bt.browser_wait, text="redirecting", seconds=5)
    shown = await web.ok(bt.browser_extract)
    assert "root:" not in shown
    web.egress.clear()
    requests = len(web.site.requests)
    web.egress.clear()
    await web.ok(bt.browser_open, url=web.site.url(f"site/redirect.html?to=http://{outside}/x"))
    for _ in range(50):
        if any(a.host == "127.0.0.2" for _, a in web.egress):
            break
        await asyncio.sleep(0.1)  # the page moves on by itself; nothing says when
    await web.ok(bt.browser_wait, text="allowlist")  # the proxy's refusal, shown as the page
    refused = [a.allowed for _, a in web.egress if a.host == "127.0.0.2"]
    assert refused
    assert not any(refused)
    assert [r for r in web.site.requests[requests:] if r[1] == "/x"] == []


async def test_an_action_whose_page_is_refused_is_reported_as_failed(web: Browsing) -> None:
    """A link to a host outside the allowlist, and an approved form whose destination the proxy
    refuses: the tool says the action failed, and why, not "clicked"."""
    browser = web.context().browser
    assert browser is not None
    driver = await browser()
    assert isinstance(driver, PageDriver)  # the page itself, to change it as a script would
    outside = f"http://127.0.0.2:{web.site.port}/elsewhere"

    async def page_with_a_way_out(outside: str = outside) -> None:
        await web.ok(bt.browser_open, url=web.site.url("site/form.html"))
        await driver.page.evaluate(
            """(outside) => document.body.insertAdjacentHTML('beforeend',
                `<p><a href="${outside}">Leave</a></p>
                 <form method="post" action="${outside}"><input name="a" value="1">
                 <button>Send away</button></form>`)""",
            outside,
        )

    await page_with_a_way_out()
    left = await web.fails(bt.browser_click, "refused", target="Leave")
    assert left.startswith('clicked [e1] link "Leave"'), left
    assert f"refused by the egress policy: this task may not reach {outside}" in left
    # The same over https: the proxy refuses the tunnel, and the page does not load.
    await page_with_a_way_out(outside.replace("http:", "https:"))
    tunnel = await web.fails(bt.browser_click, "refused", target="Leave")
    assert "did not load: net::ERR_TUNNEL_CONNECTION_FAILED (the egress policy" in tunnel, tunnel
    # A submit (here run as an approved call would be, the gate being the runner's): the form
    # goes, the proxy refuses its destination, and the model is told.
    await page_with_a_way_out()
    sent = await web.fails(bt.browser_click, "refused", target="Send away")
    assert "refused by the egress policy" in sent, sent
    # An action whose page loads is reported as done, as before.
    await web.ok(bt.browser_open, url=web.site.url("site/form.html"))
    assert (await web.ok(bt.browser_click, target="Check")).startswith("clicked")


async def test_each_kind_of_target_and_the_errors_for_missing_or_ambiguous_ones(
    web: Browsing,
) -> None:
    await web.ok(bt.browser_open, url=web.site.url("site/form.html"))
    await web.ok(bt.browser_type, target="label=Full name", text="Ann")
    await web.ok(bt.browser_type, target="placeholder=Your city", text="Lyon")
    await web.ok(bt.browser_type, target="name=email", text="ann@example.com")
    await web.ok(bt.browser_type, target="css=#bio", text="Hello")
    await web.ok(bt.browser_type, target="e1", text="Ann Lee")
    await web.ok(bt.browser_click, target="text=Check")
    assert "checked" in await web.ok(bt.browser_extract, target="css=#out")
    shot = await web.ok(bt.browser_snapshot)
    for line in ('"Full name" value="Ann Lee"', 'value="Lyon"', 'value="ann@example.com"'):
        assert line in shot
    missing = await web.fails(bt.browser_click, "not_found", target="text=Nowhere to be seen")
    assert "take a snapshot" in missing
    assert "unknown target kind" in await web.fails(bt.browser_click, "bad_target", target="xp=1")
    await web.ok(bt.browser_open, url=web.site.url("pages/ambiguous.html"))
    ambiguous = await web.fails(bt.browser_click, "ambiguous", target="text=Delete")
    assert ambiguous.count('button "Delete"') == 2


async def test_type_press_select_check_choose_and_dates(web: Browsing) -> None:
    await web.ok(bt.browser_open, url=web.site.url("site/form.html"))
    await web.ok(bt.browser_type, target="Full name", text="Ann")
    await web.ok(bt.browser_type, target="Full name", text=" Lee", clear=False)
    await web.ok(bt.browser_press, target="Full name", key="Backspace")
    assert "selected 'Germany'" in await web.ok(
        bt.browser_select, target="Country", option="Germany"
    )
    options = await web.fails(bt.browser_select, "not_found", target="Country", option="Peru")
    assert "'France'" in options
    await web.ok(bt.browser_check, target="Send me news")
    await web.ok(bt.browser_choose, target="Pro")
    await web.ok(bt.browser_set_date, target="Start date", value="2026-12-24")
    await web.ok(bt.browser_set_date, target="Start time", value="09:30")
    shot = await web.ok(bt.browser_snapshot)
    for line in (
        '"Full name" value="Ann Le"',
        'value="DE"',
        'checkbox "Send me news" checked',
        'radio "Pro" checked',
        'value="2026-12-24"',
        'value="09:30"',
    ):
        assert line in shot
    await web.ok(bt.browser_check, target="Send me news", checked=False)
    assert 'checkbox "Send me news" checked' not in await web.ok(bt.browser_snapshot)


async def test_a_calendar_widget_is_worked_as_a_person_would(web: Browsing) -> None:
    await web.ok(bt.browser_open, url=web.site.url("site/widgets.html"))
    await web.ok(bt.browser_set_date, target="Departure", value="2027-02-03")
    assert 'value="2027-02-03"' in await web.ok(bt.browser_snapshot)
    await web.ok(bt.browser_set_date, target="Departure", value="2026-09-30")
    assert 'value="2026-09-30"' in await web.ok(bt.browser_snapshot)
    bad = await web.fails(bt.browser_set_date, "bad_value", target="Departure", value="soon")
    assert "YYYY-MM-DD" in bad


async def test_fill_form_reports_field_by_field_and_does_not_submit(web: Browsing) -> None:
    await web.ok(bt.browser_open, url=web.site.url("site/form.html"))
    posted = len(web.site.posted())
    report = await web.ok(
        bt.fill_form,
        fields={
            "Full name": "Ann Lee",
            "Email": "ann@example.com",
            "placeholder=Your city": "Lyon",
            "About you": "Hi there",
            "Country": "Spain",
            "Send me news": "true",
            "Plan": "Pro",
            "Start date": "2026-12-01",
            "Favourite colour": "blue",
        },
    )
    assert report.startswith("1 of 9 fields not set")
    assert "Country: selected 'Spain'" in report
    assert "Plan: chose 'Pro'" in report
    assert "Favourite colour: NOT SET" in report
    assert len(web.site.posted()) == posted
    shot = await web.ok(bt.browser_snapshot)
    assert 'radio "Pro" checked' in shot
    assert 'value="ES"' in shot
    nothing = await web.fails(bt.fill_form, "not_filled", fields={"Nope": "x"})
    assert "NOT SET" in nothing


async def test_dialogs_are_reported_and_answered(web: Browsing) -> None:
    await web.ok(bt.browser_open, url=web.site.url("site/widgets.html"))
    said = await web.ok(bt.browser_click, target="Save")
    assert "dialog (alert): 'Saved!'" in said
    blocked = await web.fails(bt.browser_click, "dialog_open", target="Delete")
    assert "answer it with browser_dialog" in blocked
    assert "accepted the alert" in await web.ok(bt.browser_dialog, accept=True)
    assert "dialog (confirm)" in await web.ok(bt.browser_click, target="Delete")
    await web.ok(bt.browser_dialog, accept=False)
    assert "kept" in await web.ok(bt.browser_extract, target="css=#said")
    assert "default answer 'Ann'" in await web.ok(bt.browser_click, target="Rename")
    await web.ok(bt.browser_dialog, accept=True, text="Bob")
    assert "name: Bob" in await web.ok(bt.browser_extract, target="css=#said")
    await web.fails(bt.browser_dialog, "no_dialog", accept=True)


async def test_new_tabs_are_followed_and_can_be_switched(web: Browsing) -> None:
    await web.ok(bt.browser_open, url=web.site.url("site/widgets.html"))
    clicked = await web.ok(bt.browser_click, target="Open the form in a new tab")
    assert "a new tab opened" in clicked
    await web.ok(bt.browser_wait, text="Sign up")
    tabs = await web.ok(bt.browser_tabs)
    assert "* 2: 'Sign up'" in tabs
    await web.ok(bt.browser_tabs, switch_to=1)
    assert 'page "Widgets"' in await web.ok(bt.browser_snapshot)
    await web.fails(bt.browser_tabs, "not_found", switch_to=9)


async def test_downloads_land_in_the_workspace_and_uploads_come_from_it(web: Browsing) -> None:
    await web.ok(bt.browser_open, url=web.site.url("site/widgets.html"))
    clicked = await web.ok(bt.browser_click, target="Download the report")
    assert "downloads/report.txt" in clicked
    box = await web.context().sandbox()  # type: ignore[misc]
    assert isinstance(box, Sandbox)
    assert await box.read_file("downloads/report.txt") == b"quarterly report: all good\n"

    await box.write_file("cv.txt", b"ten years of tests")
    await web.ok(bt.browser_open, url=web.site.url("site/form.html"))
    await web.ok(bt.browser_upload, target="CV", path="cv.txt")
    await web.ok(bt.browser_wait, text="uploaded cv.txt")
    assert "ten years of tests" in await web.ok(bt.browser_extract, target="css=#upload")
    await web.fails(bt.browser_upload, "not_found", target="CV", path="missing.txt")


async def test_scroll_back_wait_extract_and_screenshot(web: Browsing) -> None:
    await web.ok(bt.browser_open, url=web.site.url("site/widgets.html"))
    await web.ok(bt.browser_scroll)
    await web.ok(bt.browser_scroll, direction="up")
    await web.ok(bt.browser_scroll, target="Load more")
    await web.ok(bt.browser_click, target="Load more")
    assert "is on the page" in await web.ok(bt.browser_wait, text="More items arrived")
    timed_out = await web.fails(bt.browser_wait, "element_not_ready", text="Never", seconds=0.5)
    assert "timed out" in timed_out
    rows = await web.ok(bt.browser_extract, target="css=#prices", table=True)
    assert '[["Plan", "Price"], ["Free", "0"], ["Pro", "12"]]' in rows
    saved = await web.ok(bt.browser_screenshot, marks=False)
    path = Path(saved.split("kept with the task at ")[1])
    assert path.parent == web.artifacts
    assert (await asyncio.to_thread(path.read_bytes)).startswith(b"\x89PNG")
    # With marks (the default): a JPEG, with the picture for a model that sees.
    marked = await web.call(bt.browser_screenshot)
    assert marked.ok, marked.content
    assert "elements are framed and tagged with their refs" in marked.content
    kept = Path(marked.content.split("kept with the task at ")[1].split(";")[0])
    data = await asyncio.to_thread(kept.read_bytes)
    assert data.startswith(b"\xff\xd8")
    assert marked.image is not None
    assert marked.image == Image.of(data, "image/jpeg")
    await web.ok(bt.browser_click, target="Go to the form")
    await web.ok(bt.browser_wait, text="Sign up")
    await web.ok(bt.browser_back)
    assert 'page "Widgets"' in await web.ok(bt.browser_snapshot)


async def test_shadow_dom_frames_and_long_pages(web: Browsing) -> None:
    await web.ok(bt.browser_open, url=web.site.url("pages/shadow.html"))
    shot = await web.ok(bt.browser_snapshot)
    assert "Inside the shadow" in shot
    await web.ok(bt.browser_type, target="label=Search", text="shoes")
    await web.ok(bt.browser_click, target="Go")
    assert "Searched for shoes" in await web.ok(bt.browser_snapshot)

    other = f"http://{web.other.host}/pages"
    await web.ok(bt.browser_open, url=web.site.url(f"pages/frames.html?other={other}"))
    await web.ok(bt.browser_wait, text="After the frames")
    for _ in range(50):  # the cross-origin frame loads in its own time; nothing says when
        shot = await web.ok(bt.browser_snapshot)
        if shot.count("Child frame text") == 2:
            break
        await asyncio.sleep(0.1)
    assert "Srcdoc text" in shot
    assert shot.count("Child frame text") == 2  # the same-origin frame and the cross-origin one
    # The cross-origin frame's button, by its reference, is clicked in that frame.
    *_, cross_button = (
        line.split()[0].strip("[]") for line in shot.splitlines() if 'button "Child button"' in line
    )
    assert cross_button.startswith("f")
    await web.ok(bt.browser_click, target=cross_button)
    assert 'button "Child clicked"' in await web.ok(bt.browser_snapshot)
    child_refs = [w.strip("[]") for w in shot.split() if w.startswith("[f")]
    assert child_refs, shot
    # An element in a frame is acted on by its reference.
    button = next(
        line.split()[0].strip("[]")
        for line in shot.splitlines()
        if 'button "Srcdoc button"' in line
    )
    await web.ok(bt.browser_click, target=button)

    await web.ok(bt.browser_open, url=web.site.url("pages/long.html"))
    cut = await web.ok(bt.browser_snapshot, max_chars=2000)
    assert "[cut here: the page is longer than 2000 characters" in cut
    assert len(cut) < 3000


async def test_the_browser_runs_in_the_hardened_sandbox_as_its_user(web: Browsing) -> None:
    await web.ok(bt.browser_open, url=web.site.url("site/form.html"))
    box = await web.context().sandbox()  # type: ignore[misc]
    assert isinstance(box, Sandbox)
    client = await web.sandboxes.client()
    limits = SandboxLimits(
        network="proxy", allow_domains=(web.site.host, web.other.host), memory_mb=1024
    )
    assert_hardened(client.containers.get(box.id), limits)
    await assert_confined_inside(box)
    listed = await box.exec("ps -o uid=,comm= -e", timeout=10)
    processes = [line.split() for line in listed.stdout.splitlines()]
    # Chromium and its relay run as the browser's user; PID 1 and agent-init as root.
    assert {uid for uid, name in processes if name.startswith("chrom")} == {"1001"}
    assert {uid for uid, _ in processes} == {"0", "1000", "1001"}
    # What Chromium is allowed is the managed policy's, which the sandbox's user cannot change.
    touched = await box.exec("touch /etc/chromium/policies/managed/x.json", timeout=10)
    assert not touched.ok


#: what a command tries against the browser: connect to its DevTools (no port on loopback; the
#: relay without its key), read its folder, signal it, trace it
_AT_THE_BROWSER = r"""
import ctypes, glob, os, socket, subprocess
def pids(user, name):
    found = subprocess.run(["pgrep", "-u", user, "-f", name], capture_output=True, text=True)
    return [int(p) for p in found.stdout.split()]
tried = {}
for port in (9222, 9223):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(b"GET /json/version HTTP/1.1\r\nHost: x\r\n\r\n")
            tried[port] = s.recv(200).decode(errors="replace").split("\r\n")[0]
    except OSError as exc:
        tried[port] = type(exc).__name__
print("port", tried[9222], "|", tried[9223])
folders = glob.glob("/tmp/browser.*")
try:
    print("folder", os.listdir(folders[0]))
except OSError as exc:
    print("folder", type(exc).__name__, len(folders))
chromium = pids("browser", "chromium")[0]
try:
    os.kill(chromium, 19)
    print("signal sent")
except OSError as exc:
    print("signal", type(exc).__name__)
libc = ctypes.CDLL(None, use_errno=True)
print("ptrace", libc.ptrace(16, chromium, 0, 0), ctypes.get_errno())
"""


async def test_a_command_cannot_reach_signal_or_trace_the_browser(web: Browsing) -> None:
    await web.ok(bt.browser_open, url=web.site.url("site/form.html"))
    box = await web.context().sandbox()  # type: ignore[misc]
    assert isinstance(box, Sandbox)
    tried = await box.exec(["python3", "-c", _AT_THE_BROWSER], timeout=30)
    lines = dict(line.split(" ", 1) for line in tried.stdout.splitlines())
    assert lines == {
        "port": "ConnectionRefusedError | HTTP/1.1 403 Forbidden",
        "folder": "PermissionError 1",
        "signal": "PermissionError",
        "ptrace": "-1 1",  # EPERM
    }, tried
    # The browser is untouched, and the runtime still drives it.
    assert "Full name" in await web.ok(bt.browser_snapshot)


async def test_forms_go_only_as_the_submitting_tools_send_them(web: Browsing) -> None:
    await web.ok(bt.browser_open, url=web.site.url("site/form.html"))
    posted = len(web.site.posted())
    # A page script that sends the form on a plain button's click is stopped.
    blocked = await web.ok(bt.browser_click, target="Save by script")
    assert "that no approval covers" in blocked
    assert len(web.site.posted()) == posted
    # A page that changes a value as the form goes (after it was read) is stopped too.
    await web.ok(bt.browser_type, target="Full name", text="Ann Lee")
    await web.ok(bt.browser_check, target="Let the page change the name when it is sent")
    changed = await web.ok(bt.browser_click, target="Create account")
    assert "that no approval covers" in changed
    assert len(web.site.posted()) == posted
    await web.ok(
        bt.browser_check, target="Let the page change the name when it is sent", checked=False
    )
    # A submit button submits as itself: its formaction and its name=value go with the form.
    await web.ok(bt.browser_type, target="Full name", text="Ann Lee")
    await web.ok(bt.browser_submit, target="Quick sign up")
    await web.ok(bt.browser_wait, text="Thank you")
    assert web.site.requests[-1][1] == "/submit?quick=1"
    assert web.site.posted()[-1]["via"] == ["quick"]
    # Enter in a field sends the form as its default button would.
    await web.ok(bt.browser_open, url=web.site.url("site/form.html"))
    await web.ok(bt.browser_type, target="Full name", text="Bo")
    await web.ok(bt.browser_press, key="Enter")
    await web.ok(bt.browser_wait, text="Thank you")
    assert web.site.posted()[-1]["name"] == ["Bo"]


@pytest.mark.parametrize(
    "enctype", ["application/x-www-form-urlencoded", "multipart/form-data", "text/plain"]
)
async def test_a_value_a_page_changes_after_approval_is_caught_in_every_encoding(
    web: Browsing, enctype: str
) -> None:
    await web.ok(bt.browser_open, url=web.site.url(f"site/form.html?enctype={enctype}"))
    posted = len(web.site.received())
    await web.ok(bt.browser_type, target="Full name", text="Ann Lee")
    await web.ok(bt.browser_check, target="Let the page change the name when it is sent")
    changed = await web.ok(bt.browser_click, target="Create account")
    assert "that no approval covers" in changed, changed
    assert len(web.site.received()) == posted  # nothing reached the site
    # Unchanged, it goes, and the site receives exactly what was read for the approval.
    await web.ok(
        bt.browser_check, target="Let the page change the name when it is sent", checked=False
    )
    await web.ok(bt.browser_type, target="Full name", text="Ann Lee")  # the page changed it
    await web.ok(bt.browser_click, target="Create account")
    await web.ok(bt.browser_wait, text="Thank you")
    [received] = web.site.received()[posted:]
    assert received is not None, f"the site could not read the {enctype} body"
    assert received["name"] == ["Ann Lee"]
    assert not any("Mallory" in v for values in received.values() for v in values)


async def test_a_form_with_a_repeated_name_is_shown_and_held_whole(web: Browsing) -> None:
    await web.ok(bt.browser_open, url=web.site.url("site/form.html"))
    browser = web.context().browser
    assert browser is not None
    driver = await browser()
    assert isinstance(driver, PageDriver)  # the page itself, to change it as a script would
    await driver.page.evaluate(
        """(action) => document.body.insertAdjacentHTML('beforeend',
            `<form id="pay" method="post" action="${action}">
               <input name="to" value="mallory"><input name="amount" value="9999">
               <input name="to" value="alice"><input name="amount" value="10">
               <button>Pay</button></form>`)""",
        web.site.url("submit?pay=1"),
    )
    effect = bt.browser_click.effect
    assert effect is not None
    seen = await effect(web.context(), {"target": "Pay"})
    assert seen is not None
    # Every value of every field, for the reviewer: not only the last of each name.
    assert seen["submits"]["values"] == {"to": ["mallory", "alice"], "amount": ["9999", "10"]}
    # A page that drops one of them as the form goes is caught.
    await driver.page.evaluate(
        """() => document.getElementById('pay').addEventListener('submit',
            () => document.querySelectorAll('#pay input[name=to]')[1].remove())"""
    )
    posted = len(web.site.received())
    assert "that no approval covers" in await web.ok(bt.browser_click, target="Pay")
    assert len(web.site.received()) == posted


async def test_the_managed_policy_refuses_data_pages_but_shows_inline_images(
    web: Browsing,
) -> None:
    await web.ok(bt.browser_open, url=web.site.url("site/policy.html"))
    assert "image width 1" in await web.ok(bt.browser_wait, target="text=image width 1")
    shot = await web.ok(bt.browser_snapshot)
    # The frame shows Chromium's error page, not the data: page (whose source names the frame).
    assert "url=chrome-error://chromewebdata/" in shot
    assert "inline page text" not in [line.strip() for line in shot.splitlines()]
    opened = await web.ok(bt.browser_click, target="Open a data page")
    await asyncio.sleep(0.5)  # the tab gets its error page in its own time
    shot = await web.ok(bt.browser_snapshot)
    assert "a new tab opened" in opened + shot
    assert "data page text" not in [line.strip() for line in shot.splitlines()]
    await web.ok(bt.browser_tabs, switch_to=1)


async def test_no_false_successes_and_values_read_exactly(web: Browsing) -> None:
    await web.ok(bt.browser_open, url=web.site.url("site/traps.html"))
    snapshot = await web.ok(bt.browser_snapshot)
    # Values as they are: spaces and newlines kept (as JSON escapes), a long one said to be cut.
    assert 'textbox "Note" multiline value="  two  spaces\\n  then a line"' in snapshot
    assert "(+53 more characters: browser_extract reads it whole)" in snapshot
    note = await web.ok(bt.browser_extract, target="label=Note")
    assert "<page-content>\n  two  spaces\n  then a line\n</page-content>" in note
    assert "xxxEND\n</page-content>" in await web.ok(bt.browser_extract, target="label=Code")
    # Text that is no control (the page's own instruction) is not clicked by accident.
    refused = await web.fails(bt.browser_click, "bad_target", target="text=beside Ana's message")
    assert "matches no control" in refused
    assert "Press the Reply button" in refused
    # A region holding several controls is not clicked at its centre: the controls are listed.
    row = next(line for line in snapshot.splitlines() if "clickable" in line and "Ana" in line)
    ref = re.search(r"\[(e\d+)\]", row)
    assert ref is not None, row
    listed = await web.fails(bt.browser_click, "ambiguous", target=ref.group(1))
    assert 'button "Reply"' in listed
    assert 'button "Forward"' in listed
    assert "replied" not in await web.ok(bt.browser_extract)
    # Something on top of a button would take the click: said, not clicked.
    covered = await web.fails(bt.browser_click, "element_not_ready", target="text=Save")
    assert 'is covered by <div.veil> "Loading…"' in covered
    # The control itself, named exactly, is clicked.
    await web.ok(bt.browser_click, target="text=Reply")
    assert "replied" in await web.ok(bt.browser_extract, target="css=#said")


async def test_pointer_actions_hover_drag_select_and_click_at_a_point(web: Browsing) -> None:
    await web.ok(bt.browser_open, url=web.site.url("site/pointer.html"))
    assert "Settings" not in await web.ok(bt.browser_snapshot)
    await web.ok(bp.browser_hover, target="text=Account")
    assert 'link "Settings"' in await web.ok(bt.browser_snapshot)  # the menu opened on hover
    # A key pressed several times on a slider says where it ended.
    pressed = await web.ok(bt.browser_press, target="label=Volume", key="ArrowRight", times=5)
    assert "pressed ArrowRight ×5 on" in pressed
    assert 'its value is now "5"' in pressed
    # A slider's handle, dragged by an offset; an item dropped on a zone.
    await web.ok(bp.browser_drag, target="label=Volume", dx=60)
    volume = await web.ok(bt.browser_extract, target="css=#said")
    assert re.search(r"volume (\d+)", volume) is not None, volume
    nowhere = await web.call(bp.browser_drag, target="text=Drag me")
    assert not nowhere.ok
    assert "say where to" in nowhere.content
    await web.ok(bp.browser_drag, target="text=Drag me", to="text=Drop here")
    assert "dropped item" in await web.ok(bt.browser_extract, target="css=#said")
    # Text selected as a person's mouse would.
    selected = await web.ok(bp.browser_select_text, target="css=#para", text="brown fox")
    assert "selected 'brown fox'" in selected
    assert "selected: brown fox" in await web.ok(bt.browser_extract, target="css=#selected")
    assert "no text" in await web.fails(
        bp.browser_select_text, "not_found", target="css=#para", text="zebra"
    )
    # A point of a canvas, which no element names inside it.
    clicked = await web.ok(bp.browser_click_at, x=410, y=20)
    assert "<canvas>" in clicked
    # 410 - 400 - its 1px border: 9 px into the canvas.
    assert "hit 9,9" in await web.ok(bt.browser_extract, target="css=#said")


async def test_a_browser_that_does_not_answer_is_started_again_once(
    web: Browsing, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened = await web.ok(bt.browser_open, url=web.site.url("site/form.html"))
    assert "started again" not in opened  # the positive control: an answering browser is kept
    box = await web.sandboxes.for_task(web.task_id)
    await web.browsers.forget(web.task_id)  # the runner connects afresh, as a new runner would
    # The browser's relay hangs: it runs, and takes no connection.
    hung = await box.exec(
        "kill -STOP $(cut -d' ' -f1 /tmp/browser.*/relay)", user=BROWSER_USER, timeout=10
    )
    assert hung.ok, hung.stderr
    monkeypatch.setattr("browser.manager.CONNECT_TIMEOUT_MS", 3_000)  # its wait, made short
    again = await web.ok(bt.browser_open, url=web.site.url("site/form.html"))
    assert "the task's browser did not answer" in again
    assert "was started again" in again
    assert '[e1] textbox "Full name"' in await web.ok(bt.browser_snapshot)
    # One restart: the hung relay is gone, and the new one answers the next call as it is.
    left = await box.exec("ps -eo stat,args | grep '^T' | grep -c agent-browser", timeout=10)
    assert left.stdout.strip() == "0", left.stdout
    assert "started again" not in await web.ok(bt.browser_snapshot)


async def test_waits_for_text_in_a_region_a_state_and_a_quiet_network(web: Browsing) -> None:
    await web.ok(bt.browser_open, url=web.site.url("site/waits.html"))
    # The page's own instruction says "Ready": a plain wait for the text matches it at once...
    assert "is on the page" in await web.ok(bt.browser_wait, text="Ready", seconds=0.5)
    # ...and a wait within the result area does not: nothing is there yet.
    early = await web.fails(
        bt.browser_wait, "element_not_ready", text="Ready", within="css=#out", seconds=0.3
    )
    assert "did not show" in early
    await web.ok(bt.browser_click, target="Start")
    there = await web.ok(bt.browser_wait, text="Ready", within="css=#out", seconds=5)
    assert there.startswith("'Ready' is in ")
    assert "is enabled" in await web.ok(bt.browser_wait, target="Go", state="enabled")
    # Checked by script (a property, no attribute): seen all the same.
    assert "is checked" in await web.ok(bt.browser_wait, target="Agreed", state="checked")
    stays = await web.fails(
        bt.browser_wait, "element_not_ready", target="Go", state="disabled", seconds=0.3
    )
    assert "was not disabled within 0.3 s" in stays
    # A fetch that takes 0.8 s: the network is quiet once its answer is in.
    await web.ok(bt.browser_click, target="Fetch")
    assert "quiet" in await web.ok(bt.browser_wait, network_quiet=True, seconds=5)
    assert "\nfetched: the slow answer\n" in await web.ok(bt.browser_extract, target="css=#out")
    await web.fails(bt.browser_wait, "bad_arguments", state="checked")


async def test_a_wait_for_a_quiet_network_says_what_is_still_in_flight(web: Browsing) -> None:
    await web.ok(bt.browser_open, url=web.site.url("site/waits.html"))
    await web.ok(bt.browser_click, target="Fetch")
    busy = await web.fails(bt.browser_wait, "element_not_ready", network_quiet=True, seconds=0.3)
    assert "the network was not quiet within 0.3 s; still in flight:" in busy
    assert busy.endswith("/slow/data")
