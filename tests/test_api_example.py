"""The README's API example, run as it says: a scripted task reads the inventory with a secret
(no reviewer: a GET), then writes a report to the second service (a POST: a reviewer approves
it first). The key reaches the inventory and nothing the task keeps."""

from __future__ import annotations

import json
import secrets as random
from collections.abc import Iterator
from pathlib import Path

import pytest

from examples.api_services import INVENTORY_PORT, ITEMS, REPORTS_PORT, Reports, serve_reports
from examples.openapi.inventory_server import Inventory, serve
from frontends.cli import main

from .apis import kept_files, leaks
from .conftest import REPO, request_args

KEY = "inventory-" + random.token_hex(8)
LOCAL = ["--config", str(REPO / "examples" / "local-site.toml")]
COMMAND = (
    "./agentw run --model scripted:examples/api_demo.json --allow-domain 127.0.0.1:8710 "
    "--allow-domain 127.0.0.1:8711 --config examples/local-site.toml "
    '"Report the inventory to the reports service"'
)


@pytest.fixture
def services() -> Iterator[tuple[Inventory, Reports]]:
    inventory_server, inventory = serve(KEY, INVENTORY_PORT, ITEMS)
    reports_server, reports = serve_reports(REPORTS_PORT)
    yield inventory, reports
    for server in (inventory_server, reports_server):
        server.shutdown()
        server.server_close()


def test_the_readme_api_example_runs_as_it_says(
    home: Path,
    services: tuple[Inventory, Reports],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert COMMAND in (REPO / "README.md").read_text()
    inventory, reports = services
    monkeypatch.setenv("INVENTORY_KEY", KEY)
    declare = ["secrets", "set", "INVENTORY_KEY", "--host", f"127.0.0.1:{INVENTORY_PORT}"]
    assert main([*declare, "--env", "INVENTORY_KEY"]) == 0
    script = REPO / "examples" / "api_demo.json"
    allow = ["--allow-domain", f"127.0.0.1:{INVENTORY_PORT}"]
    allow += ["--allow-domain", f"127.0.0.1:{REPORTS_PORT}"]
    run = ["run", "--model", f"scripted:{script}", *allow, *LOCAL, "--json", "Report it"]
    capsys.readouterr()
    assert main(run) == 3  # waiting for a reviewer: the POST
    stopped = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert stopped["status"] == "awaiting_approval"
    assert "127.0.0.1:8711/reports" in stopped["pending_approval"]["preview"]
    assert reports.kept == []
    # The read went out unasked, with the key.
    [(method, path, _, headers)] = inventory.seen
    assert (method, path, headers["X-Api-Key"]) == ("GET", "/stats", KEY)
    task = stopped["task_id"]
    assert main(["approve", *request_args(task), *LOCAL]) == 0
    assert main(["resume", task, *LOCAL, "--json"]) == 0
    done = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert done["status"] == "done"
    assert reports.kept == [{"title": "Inventory", "items": 3, "in_stock": 2, "worth": 195.5}]
    # It reached the inventory (above), and nothing kept holds it.
    for name, data in kept_files(home).items():
        assert leaks(KEY, data) == [], name
