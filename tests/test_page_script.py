"""The page script (browser/page.js) in real Chromium, on the pages of tests/pages served over HTTP
on loopback: two servers of the same directory give a second origin for a cross-origin iframe."""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Browser, FilePayload, Frame, Page, async_playwright

from browser._script import (
    LISTENERS,
    Candidate,
    FormField,
    PageScriptError,
    TargetError,
    find,
    form_of,
    marks,
    snapshot_frame,
)

PAGES = Path(__file__).resolve().parent / "pages"
CHROMIUM = "/usr/bin/chromium"

pytestmark = pytest.mark.asyncio(loop_scope="module")


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def origins() -> Iterator[tuple[str, str]]:
    """Two loopback servers of tests/pages: two origins (the ports differ)."""
    servers = [
        ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(PAGES)))
        for _ in range(2)
    ]
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for t in threads:
        t.start()
    first, second = (f"http://127.0.0.1:{s.server_address[1]}" for s in servers)
    yield first, second
    for s in servers:
        s.shutdown()
        s.server_close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        await b.close()


@pytest_asyncio.fixture(loop_scope="module")
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context()
    yield await context.new_page()
    await context.close()


@pytest.fixture
def base(origins: tuple[str, str]) -> str:
    return origins[0]


async def open_page(page: Page, base: str, name: str, query: str = "") -> Frame:
    await page.goto(f"{base}/{name}.html{query}")
    return page.main_frame


async def snap(frame: Frame, max_chars: int = 20_000) -> str:
    snapshot = await snapshot_frame(frame, "e", max_chars)
    assert not snapshot.truncated
    return snapshot.text


def line_of(text: str, role_and_name: str) -> str:
    """The one line of a snapshot for the element with this role and name."""
    found = [line for line in text.splitlines() if f"] {role_and_name}" in line]
    assert len(found) == 1, (role_and_name, text)
    return found[0]


def ref_in(line: str) -> str:
    m = re.match(r"\s*\[(\w+)\] ", line)
    assert m is not None, line
    return m.group(1)


async def only(frame: Frame, target: dict[str, str]) -> Candidate:
    candidates = await find(frame, target)
    assert len(candidates) == 1, candidates
    return candidates[0]


# --- snapshot ------------------------------------------------------------------------------------


async def test_form_page_lines(page: Page, base: str) -> None:
    text = await snap(await open_page(page, base, "form"))
    lines = [re.sub(r"\[e\d+\]", "[e]", line) for line in text.splitlines()]
    assert lines[0] == f'page "Sign up" url={base}/form.html'
    expected = [
        "# Create your account",
        "Fill in the form below. All fields marked * are required.",
        '[e] textbox "Email" type=email value="a@b.c" required',
        '[e] textbox "Full name"',
        '[e] textbox "Password" type=password value=(hidden, 7 chars)',
        '[e] textbox "Nickname"',
        '[e] textbox "City of birth"',
        '[e] textbox "About you" multiline value="Hello"',
        '[e] combobox "Country" value="FR" options: "France"=FR*, "Spain"=ES',
        '[e] checkbox "Remember me" checked',
        '[e] checkbox "Newsletter"',
        '[e] radio "Free"',
        '[e] radio "Pro" checked',
        '[e] textbox "Start date" type=date value="2025-05-01" min=2024-01-01 max=2030-12-31',
        '[e] textbox "Time" type=time value="09:30"',
        '[e] file "CV"',
        '[e] textbox "Locked" value="fixed" disabled',
        '[e] textbox "Code" value="X1" readonly',
        '[e] button "Create account"',
        '[e] button "Preview"',
        '[e] button "Save draft"',
        '[e] link "Sign in" href=/login',
        '[e] clickable "Help"',
        '[e] clickable "Pointer thing"',
        '[e] textbox "Notes" value="Draft notes"',
        '[e] switch "Dark mode" checked',
        '[e] button "More" collapsed',
        "- First item",
        "- Second item",
        '  [e] link "external" href=https://example.org/x',
        "1. Step one",
        "2. Step two",
        "| Plan | Price |",
        '| Free | 0 [e] button "Choose" |',
        "## Elsewhere",
        '[e] textbox "Outside"',
    ]
    # In this order, each exactly once.
    assert [line for line in lines if line in expected] == expected
    # Labels are not repeated as text, nor is the hidden input or what closed details hold.
    assert "Email" not in lines
    assert "Remember me" not in lines
    assert "csrf" not in text
    assert "tok123" not in text
    assert "Details body text" not in text
    assert "hunter2" not in text


async def test_refs_are_stable_and_on_the_element(page: Page, base: str) -> None:
    frame = await open_page(page, base, "form")
    first = await snap(frame)
    assert await snap(frame) == first
    email = ref_in(line_of(first, 'textbox "Email"'))
    element = page.locator(f'[data-agent-ref="{email}"]')
    assert await element.get_attribute("name") == "email"

    # A new element gets a new ref; the others keep theirs even though the page moved them.
    await page.evaluate(
        """() => {
            const b = document.createElement('button');
            b.textContent = 'New button';
            document.body.prepend(b);
        }"""
    )
    after = await snap(frame)
    assert ref_in(line_of(after, 'textbox "Email"')) == email
    new = ref_in(line_of(after, 'button "New button"'))
    assert new not in first
    assert after.splitlines()[1].startswith(f"[{new}] button")

    # The driver can act through the attribute, and the next snapshot shows the new state.
    remember = ref_in(line_of(after, 'checkbox "Remember me"'))
    await page.locator(f'[data-agent-ref="{remember}"]').click()
    await element.fill("x@y.z")
    now = await snap(frame)
    assert line_of(now, 'checkbox "Remember me"') == f'[{remember}] checkbox "Remember me"'
    assert line_of(now, 'textbox "Email"') == (
        f'[{email}] textbox "Email" type=email value="x@y.z" required focused'
    )


async def test_shadow_dom_content_and_refs(page: Page, base: str) -> None:
    frame = await open_page(page, base, "shadow")
    text = await snap(frame)
    assert text.splitlines()[1:] == [
        "# Shadow host",
        "Inside the shadow",
        '[e1] textbox "Search"',
        '[e2] button "Go"',
        "### Card title",
        "Slotted light text",
        '[e3] button "Open card"',
    ]
    # Playwright's CSS pierces open shadow roots, so the ref attribute reaches in.
    await page.locator('[data-agent-ref="e1"]').fill("cats")
    await page.locator('[data-agent-ref="e2"]').click()
    assert "Searched for cats" in await snap(frame)


async def test_iframes_are_placeholders_snapshotted_per_frame(
    page: Page, origins: tuple[str, str]
) -> None:
    base, other = origins
    frame = await open_page(page, base, "frames", f"?other={other}")
    snapshot = await snapshot_frame(frame, "e", 20_000)
    assert snapshot.text.splitlines()[1:] == [
        "# Frames",
        '[e1] iframe "Same origin" {{frame e1}}',
        '[e2] iframe "inline" {{frame e2}}',
        '[e3] iframe "Cross origin" {{frame e3}}',
        "After the frames",
    ]
    assert snapshot.frames == ("e1", "e2", "e3")
    assert "Child frame text" not in snapshot.text

    # What the driver does: the ref's element gives the Frame, snapshotted with its own prefix.
    children: dict[str, Frame] = {}
    for ref in snapshot.frames:
        handle = await page.locator(f'[data-agent-ref="{ref}"]').element_handle()
        assert handle is not None
        child = await handle.content_frame()
        assert child is not None
        children[ref] = child
    assert children["e3"].url == f"{other}/child.html"

    same = await snapshot_frame(children["e1"], "f1e", 5_000)
    inline = await snapshot_frame(children["e2"], "f2e", 5_000)
    cross = await snapshot_frame(children["e3"], "f3e", 5_000)
    assert same.text.splitlines()[1:] == [
        "Child frame text",
        '[f1e1] button "Child button"',
        '[f1e2] textbox "Child input"',
    ]
    assert inline.text.splitlines()[1:] == ["Srcdoc text", '[f2e1] button "Srcdoc button"']
    assert cross.text.splitlines()[0] == f'page "Child" url={other}/child.html'
    assert '[f3e1] button "Child button"' in cross.text

    spliced = snapshot.text.replace("{{frame e3}}", "\n" + cross.text)
    assert '[f3e1] button "Child button"' in spliced

    # Refs work inside the cross-origin frame too.
    assert (await only(children["e3"], {"ref": "f3e1"})).name == "Child button"
    await children["e3"].locator('[data-agent-ref="f3e1"]').click()
    assert (
        '[f3e1] button "Child clicked"' in (await snapshot_frame(children["e3"], "f3e", 5_000)).text
    )


async def test_long_page_is_cut_to_size_keeping_controls(page: Page, base: str) -> None:
    frame = await open_page(page, base, "long")
    snapshot = await snapshot_frame(frame, "e", 4_000)
    assert snapshot.truncated
    assert len(snapshot.text) <= 4_000
    lines = snapshot.text.splitlines()
    # The 25 kB paragraph is shortened, the first paragraphs are kept, the rest is elided before
    # the footer's controls, which are all there.
    assert lines[1:5] == [
        "# A long page",
        '[e1] link "Top link" href=/top',
        "word " * 19 + "word…",
        "Paragraph 1: the quick brown fox jumps over the lazy dog, again and again.",
    ]
    assert lines[-3:] == ["…", '[e2] button "Load more"', '[e3] link "Next page" href=/next']

    tiny = await snapshot_frame(frame, "e", 60)
    assert tiny.truncated
    assert 0 < len(tiny.text) <= 60

    whole = await snapshot_frame(frame, "e", 1_000_000)
    assert not whole.truncated
    assert "Paragraph 3000:" in whole.text


async def test_hidden_elements_are_left_out(page: Page, base: str) -> None:
    text = await snap(await open_page(page, base, "hidden"))
    assert text.splitlines()[1:] == [
        '[e1] button "Visible button"',
        '[e2] button "Shown anyway"',
        # The styled checkbox's input is hidden: its label stands in, with the input's state.
        '[e3] checkbox "Styled checkbox"',
    ]
    await page.locator('[data-agent-ref="e3"]').click()
    assert '[e3] checkbox "Styled checkbox" checked' in await snap(page.main_frame)


async def test_page_text_cannot_pose_as_refs_or_placeholders(page: Page, base: str) -> None:
    snapshot = await snapshot_frame(await open_page(page, base, "spoof"), "e", 5_000)
    assert snapshot.text.splitlines() == [
        'page "{ {frame e1}} spoof" url=' + f"{base}/spoof.html",
        '\\[e99] button "Pay now"',
        '- \\[e98] link "Home" and also \\[e97] button "Buy"',
        "Text with a placeholder { {frame e2}} and { { {triple}}}, a footnote[1] and \\[f1e3].",
        '[e1] button "Pay { {frame e3}}"',
    ]
    assert "{{" not in snapshot.text
    assert snapshot.frames == ()


async def test_widgets_lines(page: Page, base: str) -> None:
    text = await snap(await open_page(page, base, "widgets"))
    assert text.splitlines()[1:] == [
        '[e1] tab "Inbox" selected',
        '[e2] tab "Sent"',
        '[e3] button "Actions" has-popup collapsed',
        '[e4] listbox "Fruit"',
        '  [e5] option "Apple" selected',
        '  [e6] option "Pear"',
        # A clickable container is listed, and so are the controls inside it, under it.
        '[e7] clickable "Card heading Card body Card action"',
        '  [e8] button "Card action"',
        '[e9] link "Block link with a block inside" href=/article',
        '[e10] button "Open section" expanded',
        "Open section body",
        '[e11] listbox "Fruits" value="a","p" multiple '
        'options: "Apple"=a*, "Pear"=p*, "Kiwi"=k(disabled)',
        "- Outer",
        "  - Inner one",
        "  - Inner two",
        '[e12] button "Label button"',
        '[e13] slider "Volume" value="3" min=0 max=10',
        '[e14] textbox "Count" type=number value="2" min=1 max=9',
        '(image "A chart")',
        '[e15] button "Go on"',
    ]


async def test_a_replaced_script_is_an_error(page: Page, base: str) -> None:
    frame = await open_page(page, base, "form")
    await page.evaluate("() => { window.__agent = { snapshot: () => ({ text: 42 }) }; }")
    with pytest.raises(PageScriptError) as caught:
        await snapshot_frame(frame, "e", 1_000)
    assert caught.value.code == "browser_page_script"


# --- find ----------------------------------------------------------------------------------------


async def test_find_by_each_kind(page: Page, base: str) -> None:
    frame = await open_page(page, base, "form")
    text = await snap(frame)
    email = ref_in(line_of(text, 'textbox "Email"'))

    by_ref = await only(frame, {"ref": email})
    assert by_ref == Candidate(
        ref=email,
        role="textbox",
        name="Email",
        tag="input",
        line=f'[{email}] textbox "Email" type=email value="a@b.c" required',
    )

    # text: exact (case and spacing aside), the control rather than the text inside it.
    button = await only(frame, {"text": "  create   ACCOUNT "})
    assert (button.role, button.name, button.tag) == ("button", "Create account", "button")
    assert button.ref == ref_in(line_of(text, 'button "Create account"'))
    # text: a substring only when nothing matches exactly.
    assert (await only(frame, {"text": "Sign i"})).role == "link"
    # text: a label's text finds its control.
    assert (await only(frame, {"text": "Remember me"})).name == "Remember me"
    # text: plain text gets a ref of its own.
    plain = await only(frame, {"text": "Step two"})
    assert (plain.role, plain.tag) == ("text", "li")
    assert await page.locator(f'[data-agent-ref="{plain.ref}"]').text_content() == "Step two"

    # label: <label for>, wrapping label, aria-labelledby; exact first, then substring.
    assert (await only(frame, {"label": "email"})).ref == email
    assert (await only(frame, {"label": "Full name"})).tag == "input"
    assert (await only(frame, {"label": "Password"})).line.endswith(
        "type=password value=(hidden, 7 chars)"
    )
    assert (await only(frame, {"label": "about"})).tag == "textarea"
    assert (await only(frame, {"label": "Pro"})).line.endswith('radio "Pro" checked')

    assert (await only(frame, {"placeholder": "nickname"})).name == "Nickname"

    # name: accessible name, or the name / id attribute of a form control.
    assert (await only(frame, {"name": "City of birth"})).tag == "input"
    assert (await only(frame, {"name": "fullname"})).name == "Full name"
    assert (await only(frame, {"name": "bio"})).tag == "textarea"

    country = await only(frame, {"css": "select#country"})
    assert country.role == "combobox"
    assert country.line.endswith('options: "France"=FR*, "Spain"=ES')

    assert await find(frame, {"text": "No such words anywhere"}) == []
    assert await find(frame, {"ref": "e9999"}) == []


async def test_find_reaches_into_shadow_roots(page: Page, base: str) -> None:
    frame = await open_page(page, base, "shadow")
    buttons = await find(frame, {"css": "button"})
    assert [c.name for c in buttons] == ["Go", "Open card"]
    assert (await only(frame, {"label": "Search"})).tag == "input"
    assert (await only(frame, {"text": "Open card"})).role == "button"


async def test_same_text_twice_is_ambiguous(page: Page, base: str) -> None:
    frame = await open_page(page, base, "ambiguous")
    candidates = await find(frame, {"text": "Delete"})
    # Both buttons (not the heading, not "Delete all"), each with its own ref.
    assert [(c.role, c.name, c.tag) for c in candidates] == [("button", "Delete", "button")] * 2
    assert len({c.ref for c in candidates}) == 2
    assert [c.line for c in candidates] == [f'[{c.ref}] button "Delete"' for c in candidates]


async def test_hidden_and_detached_elements_are_not_found(page: Page, base: str) -> None:
    frame = await open_page(page, base, "hidden")
    for target in (
        {"text": "Display none button"},
        {"text": "Visibility hidden button"},
        {"text": "Zero box button"},
        {"text": "Aria hidden link"},
        {"label": "Hidden attribute input"},
        {"css": "#display-none"},
        {"css": "#zero-size"},
        {"css": "input[type=hidden]"},
    ):
        assert await find(frame, target) == [], target
    assert (await only(frame, {"text": "Shown anyway"})).role == "button"
    assert (await only(frame, {"label": "Styled checkbox"})).tag == "label"

    visible = await only(frame, {"css": "#visible"})
    await page.evaluate("() => document.getElementById('visible').remove()")
    assert await find(frame, {"ref": visible.ref}) == []


async def test_bad_targets_raise(page: Page, base: str) -> None:
    frame = await open_page(page, base, "form")
    with pytest.raises(TargetError, match="exactly one"):
        await find(frame, {"text": "a", "css": "b"})
    with pytest.raises(TargetError, match="exactly one"):
        await find(frame, {"xpath": "//a"})
    with pytest.raises(TargetError, match="invalid CSS selector"):
        await find(frame, {"css": "button[["})


# --- formOf --------------------------------------------------------------------------------------


async def test_form_of_describes_what_would_be_sent(page: Page, base: str) -> None:
    frame = await open_page(page, base, "form")
    text = await snap(frame)
    ref = {
        name: ref_in(line_of(text, name))
        for name in (
            'textbox "Email"',
            'file "CV"',
            'button "Create account"',
            'button "Preview"',
            'button "Save draft"',
            'link "Sign in"',
            'textbox "Outside"',
        )
    }
    cv = ref['file "CV"']
    await page.locator(f'[data-agent-ref="{cv}"]').set_input_files(
        FilePayload(name="resume.txt", mimeType="text/plain", buffer=b"hello")
    )

    form = await form_of(frame, ref['textbox "Email"'])
    assert form is not None
    assert (form.action, form.method, form.submitter) == (f"{base}/submit", "POST", False)
    assert form.fields == (
        FormField(name="email", label="Email", type="email", value="a@b.c"),
        FormField(name="fullname", label="Full name", type="text", value=""),
        FormField(name="password", label="Password", type="password", value="•••••••"),
        FormField(name="nickname", label="Nickname", type="text", value=""),
        FormField(name="city", label="City of birth", type="text", value=""),
        FormField(name="bio", label="About you", type="textarea", value="Hello"),
        FormField(name="country", label="Country", type="select-one", value="FR"),
        FormField(name="remember", label="Remember me", type="checkbox", value="on"),
        FormField(name="plan", label="Pro", type="radio", value="pro"),
        FormField(name="start", label="Start date", type="date", value="2025-05-01"),
        FormField(name="at", label="Time", type="time", value="09:30"),
        FormField(name="cv", label="CV", type="file", value="resume.txt"),
        FormField(name="csrf", label="", type="hidden", value="tok123"),
        FormField(name="code", label="Code", type="text", value="X1"),
    )

    create = await form_of(frame, ref['button "Create account"'])
    assert create is not None
    assert (create.action, create.method, create.submitter) == (f"{base}/submit", "POST", True)
    assert create.fields == form.fields

    # A submitter's formaction / formmethod apply, and its own name=value is sent.
    draft = await form_of(frame, ref['button "Save draft"'])
    assert draft is not None
    assert (draft.action, draft.method, draft.submitter) == (f"{base}/draft", "GET", True)
    assert draft.fields[-1] == FormField(
        name="save", label="Save draft", type="submit", value="draft"
    )

    preview = await form_of(frame, ref['button "Preview"'])
    assert preview is not None
    assert not preview.submitter
    assert preview.fields == form.fields

    assert await form_of(frame, ref['link "Sign in"']) is None
    assert await form_of(frame, ref['textbox "Outside"']) is None
    with pytest.raises(TargetError, match="no element with ref e9999"):
        await form_of(frame, "e9999")


async def test_a_fresh_document_gets_the_script_again(page: Page, base: str) -> None:
    frame = await open_page(page, base, "form")
    await snap(frame)
    await open_page(page, base, "ambiguous")
    assert await page.evaluate("() => window.__agent === undefined")
    # find before any snapshot installs the script too, and refs start over in the new document.
    assert [c.ref for c in await find(frame, {"text": "Delete"})] == ["e1", "e2"]


async def test_every_control_a_person_could_use_is_listed(page: Page, base: str) -> None:
    # The driver installs the listener notes before any page script runs; so does this test.
    await page.context.add_init_script(LISTENERS)
    text = await snap(await open_page(page, base, "controls"))
    assert text.splitlines()[1:] == [
        "Plain words, no control.",
        '[e1] clickable "Listened to"',  # a listener and nothing else marks it
        '[e2] clickable "Focusable span"',  # a tabindex
        '[e3] clickable "Shows a hand on hover"',  # a pointer cursor only on :hover
        '[e4] clickable "trash" (name guessed)',  # an icon: named from its class
        '[e5] box "red" colour=#ff0000 20x20',  # a graphic with nothing to read
        '[e6] draggable "Drag me"',
        "[e7] slider at=74%",  # a handle, and how far along its track it sits
        # A closed folder is named by what shows, not by its hidden files; an open one lists
        # its items under it, each with its own ref.
        '[e8] clickable "Docs"',
        '[e9] clickable "Src main.py"',
        '  [e10] clickable "main.py"',
        # A menu that listens for its items' clicks is no control itself: its items are.
        '[e11] clickable "One"',
        '[e12] clickable "Two"',
        '[e13] clickable "Three"',
        'Rated (icon "star") by readers.',
    ]
    boxed = (await snapshot_frame(page.main_frame, "e", 20_000, boxes=True)).text
    found = re.search(r"\[e7\] slider at=74% box=(\d+),(\d+),16,16", boxed)
    assert found is not None, boxed
    handle = await page.locator('[data-agent-ref="e7"]').bounding_box()
    assert handle is not None
    assert (int(found[1]), int(found[2])) == (round(handle["x"]), round(handle["y"]))


async def test_marks_tag_each_listed_element_with_its_ref_and_then_go(
    page: Page, base: str
) -> None:
    frame = await open_page(page, base, "controls")
    listed = re.findall(r"\[(e\d+)\]", await snap(frame))
    assert await marks(frame, True) == len(listed)
    tags = await page.evaluate(
        "() => [...document.querySelectorAll('[data-agent-marks] span')].map((t) => {"
        "  const r = t.parentElement.getBoundingClientRect();"
        "  return [t.textContent, Math.round(r.left), Math.round(r.top)]; })"
    )
    assert [ref for ref, _, _ in tags] == listed
    for ref, left, top in tags:  # each frame is on its element
        box = await page.locator(f'[data-agent-ref="{ref}"]').bounding_box()
        assert box is not None
        assert (left, top) == (round(box["x"]), round(box["y"])), ref
    assert await marks(frame, False) == 0
    assert await page.locator("[data-agent-marks]").count() == 0
    assert "data-agent-marks" not in await snap(frame)


async def test_drawings_are_described_for_models_that_cannot_see(page: Page, base: str) -> None:
    text = await snap(await open_page(page, base, "drawing"))
    assert text.splitlines()[1:] == [
        '[e1] drawing "Chart" 120x80',
        # Each shape with its colour, size and place in the drawing, and a ref to point at it.
        "  [e2] shape rect colour=red(#ff0000) 30x20 at=10,10",
        "  [e3] shape circle colour=blue(#0000ff) 30x30 at=65,25",
        '  [e4] text "Sales" at=10,56',
        "[e5] canvas 50x40",
    ]
    circle = await only(page.main_frame, {"ref": "e3"})
    assert circle.tag == "circle"
