"""The web inbox end to end, in a real browser: Chromium (through Playwright) against `agent
serve` on loopback, with `agent worker` running beside it. A reviewer signs in with a token,
sees a request arrive without reloading, reads its preview (text from the model shown, not
obeyed), edits an argument and approves; the worker runs the edited call and the task finishes;
`agent audit verify` passes, and fails, naming the entry, on copies of the log edited with
sqlite3 (an entry changed, one removed, the last one cut)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Browser, async_playwright, expect

from agent.events import ApprovalDecided
from agent.state import TaskState
from agent.store import Store
from examples.tally_tool import read_ledger
from frontends.cli import main

from .apis import served_fixture, task_waiting  # noqa: F401 - a fixture
from .conftest import REPO

CHROMIUM = "/usr/bin/chromium"
#: what the model asked to count: a bidi override and markup, which the page must show as text
COUNTER = "front \u202eevil <b>bold</b>"


@pytest_asyncio.fixture(name="browser")
async def browser_fixture() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        launched = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        await launched.close()


@pytest.fixture(name="worker")
def worker_fixture(home: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`agent worker` on the test's store, looking for work every 0.2 s."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "AGENT_HOME": str(home)}
    process = subprocess.Popen(
        [sys.executable, "-m", "frontends.cli", "worker", "--poll", "0.2"],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    yield process
    process.terminate()
    process.wait(10)


def _status(task: str) -> str:
    with Store.open() as store:
        return TaskState.from_store(store, task).status


async def test_a_reviewer_edits_and_approves_in_a_browser_and_the_worker_runs_it(
    home: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    served: str,
    worker: subprocess.Popen[bytes],
    browser: Browser,
) -> None:
    assert await asyncio.to_thread(main, ["reviewers", "add", "ann", "--json"]) == 0
    token = json.loads(capsys.readouterr().out)["token"]
    page = await browser.new_page()
    await page.goto(served)
    await expect(page).to_have_url(re.compile(r"/login$"))
    await page.fill("input[name=token]", token)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("header .who")).to_have_text("ann")
    await expect(page.locator("#rows")).to_contain_text("Nothing is waiting")
    # A request arrives while the inbox is open: it is listed with no reload.
    task = await asyncio.to_thread(task_waiting, tmp_path, capsys, counter=COUNTER)
    link = page.locator("#rows a")
    await expect(link).to_have_count(1, timeout=10_000)
    await link.click()
    preview = page.locator("pre.preview")
    await expect(preview).to_contain_text("tally")
    shown = await preview.inner_text()
    assert "front <U+202E>evil <b>bold</b>" in shown  # as text: no reordering, no bold
    assert await preview.locator("b").count() == 0
    box = page.locator("textarea[name=arguments]")
    await box.fill((await box.input_value()).replace('"amount": 1', '"amount": 4'))
    await page.get_by_role("button", name="Approve with my edit").click()
    await expect(page.locator(".banner.ok")).to_contain_text("Approved with your edit")
    deadline = time.monotonic() + 60
    while _status(task) != "done":
        assert time.monotonic() < deadline, f"the worker did not finish the task: {_status(task)}"
        await asyncio.sleep(0.2)
    await page.close()
    assert [(e["counter"], e["amount"]) for e in read_ledger()] == [(COUNTER, 4)]
    with Store.open() as store:
        decided = [e.event for e in store.events(task) if isinstance(e.event, ApprovalDecided)]
    # the reviewer's decision, and the approval of the call as edited, recorded beside it
    assert [(d.reviewer, d.origin, d.edit_of is None) for d in decided] == [
        ("ann", "http 127.0.0.1", True),
        ("ann", "http 127.0.0.1", False),
    ]
    capsys.readouterr()
    assert await asyncio.to_thread(main, ["audit", "verify"]) == 0
    assert re.match(r"ok: \d+ entries hold", capsys.readouterr().out)
    worker.terminate()
    worker.wait(10)
    tampered = (
        (
            'UPDATE events SET body = replace(body, \'"reviewer":"ann"\', \'"reviewer":"eve"\') '
            "WHERE kind = 'approval_decided'",
            r"entry \d+ \(task \w+ event \d+\), approval_decided: it was changed",
        ),
        ("DELETE FROM audit WHERE n = 3", "entry 3 was removed"),
        ("DELETE FROM audit WHERE n = (SELECT MAX(n) FROM audit)", r"the log was cut after entry"),
    )
    for number, (edit, named) in enumerate(tampered):
        copy = tmp_path / f"copy-{number}"
        copy.mkdir()
        with (
            sqlite3.connect(home / "events.db") as source,
            sqlite3.connect(copy / "events.db") as target,
        ):
            source.backup(target)
        with sqlite3.connect(copy / "events.db", isolation_level=None) as db:
            db.executescript(edit)
        monkeypatch.setenv("AGENT_HOME", str(copy))
        assert await asyncio.to_thread(main, ["audit", "verify"]) == 1, edit
        said = capsys.readouterr().out
        assert re.search(named, " ".join(said.split())), said
