"""Secrets typed by the browser's tools: a value goes into a page of a host it is meant for,
and what the page then shows of it is kept nowhere; a page of another host gets nothing.

Real Chromium in a real sandbox, and a real site on loopback: these never skip in CI."""

from __future__ import annotations

import secrets as random
from pathlib import Path
from typing import Any

from agent.events import ToolResulted
from agent.runner import Runner
from agent.store import Store
from policies import Gate
from sandbox.limits import SandboxLimits
from sandbox.manager import Sandboxes
from tools import Registry
from tools.browser import registry as browser_tools
from tools.secrets import Secret, Secrets

from .apis import kept_files, leaks
from .conftest import ALLOW_ALL, scripted
from .site_server import (  # noqa: F401 - fixtures, used by name
    Site,
    sandboxes_fixture,
    sites_fixture,
)

CANARY = "pw-" + random.token_hex(10)


async def test_a_typed_secret_reaches_its_own_host_only_and_is_kept_nowhere(
    store: Store, home: Path, sandboxes: Sandboxes, sites: tuple[Site, Site]
) -> None:
    site, elsewhere = sites
    turns: list[dict[str, Any]] = [
        {"plan": ["Sign in"]},
        {"tool": "browser_open", "args": {"url": site.url("site/form.html")}},
        {"tool": "browser_type", "args": {"target": "Full name", "text": "{{secret:CANARY}}"}},
        {"tool": "fill_form", "args": {"fields": {"City of birth": "{{secret:CANARY}}"}}},
        {"tool": "browser_extract", "args": {"target": "Full name"}},
        {"tool": "browser_snapshot", "args": {}},
        {"tool": "browser_open", "args": {"url": elsewhere.url("site/form.html")}},
        {"tool": "browser_type", "args": {"target": "Full name", "text": "{{secret:CANARY}}"}},
        {"done": "signed in"},
    ]
    backend = scripted(turns)
    runner = Runner(
        store,
        Registry(browser_tools),
        Gate.from_text(ALLOW_ALL),
        planner=backend,
        sandboxes=sandboxes,
        secrets=Secrets({"CANARY": Secret("CANARY", (site.host,), "file", CANARY)}),
    )
    allow = (site.host, elsewhere.host)
    limits = SandboxLimits(network="proxy", allow_domains=allow)
    task = runner.create("Sign in", sandbox=limits)
    try:
        state = await runner.run(task)
    finally:
        await sandboxes.release(task)
        assert runner.browsers is not None
        await runner.browsers.aclose()
    assert state.status == "done"
    results = [e.event for e in store.events(task) if isinstance(e.event, ToolResulted)]
    said = {i: r.content for i, r in enumerate(results)}
    # It was typed (the page shows it, taken out of what is kept), on its own host only.
    assert "[secret:CANARY]" in said[3] + said[4]
    refused = results[6]
    assert (refused.ok, refused.error_code) == (False, "secret_out_of_scope")
    assert f"not to {elsewhere.host}" in refused.content
    store.close()
    kept = kept_files(home)
    assert "events.db" in kept
    for name, data in kept.items():
        assert leaks(CANARY, data) == [], name
    for request in backend.requests:
        assert leaks(CANARY, request.model_dump_json()) == []
