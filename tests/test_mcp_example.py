"""The README's MCP example, run as it says: a scripted task calls a tool of the example server,
which runs in a sandbox of its own; the call is an external effect (the server is not trusted),
so a reviewer approves it first. Each command's server ends with the command."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from frontends.cli import main

from .conftest import REPO, request_args

CONFIG = ["--config", str(REPO / "examples" / "mcp.toml")]
COMMAND = (
    "./agentw run --model scripted:examples/mcp_demo.json --config examples/mcp.toml "
    '"Keep a note of the plan"'
)


@pytest.fixture
def servers() -> Iterator[docker.DockerClient]:
    client = docker.from_env()
    yield client
    for container in client.containers.list(all=True, filters={"label": "agent.role=mcp"}):
        container.remove(force=True)


def test_the_readme_mcp_example_runs_as_it_says(
    home: Path, servers: docker.DockerClient, capsys: pytest.CaptureFixture[str]
) -> None:
    assert COMMAND in (REPO / "README.md").read_text()
    script = REPO / "examples" / "mcp_demo.json"
    capsys.readouterr()
    assert main(["tools", "list", *CONFIG]) == 0
    listed = capsys.readouterr().out
    assert "notes_add_note" in listed
    assert "mcp notes" in listed
    run = ["run", "--model", f"scripted:{script}", *CONFIG, "--json", "Keep a note of the plan"]
    assert main(run) == 3  # waiting for a reviewer
    stopped = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert stopped["status"] == "awaiting_approval"
    assert "ship the signup fix on friday" in stopped["pending_approval"]["preview"]
    task = stopped["task_id"]
    assert main(["approve", *request_args(task), *CONFIG]) == 0
    assert main(["resume", task, *CONFIG, "--json"]) == 0
    done = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert done["status"] == "done"
    assert main(["show", task, *CONFIG, "--json"]) == 0
    shown = capsys.readouterr().out
    assert "kept 'plan' (29 characters)" in shown
    # Each command's server ended with it (tests/test_mcp.py looks at one while it runs).
    deadline = time.monotonic() + 10
    while servers.containers.list(all=True, filters={"label": "agent.role=mcp"}):
        assert time.monotonic() < deadline, "an MCP server's container outlived its command"
        time.sleep(0.1)
