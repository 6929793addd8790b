"""What the API tests share: sandboxes whose egress proxy reaches this host's loopback (where
their services run), and what secret-hygiene tests look for: a value's forms (see
tools/_redact.py) in what a run kept."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.state import TaskState
from agent.store import Store
from frontends.cli import main
from frontends.serve import app
from sandbox.limits import SandboxConfig, SandboxLimits
from sandbox.manager import Sandboxes
from tools._redact import forms

from .conftest import REPO, pending, write_script

TALLY = str(REPO / "examples" / "tally_tool.py")
#: the MCP server of the examples, written with the `mcp` SDK
NOTES_SERVER = REPO / "examples" / "mcp" / "notes_server.py"

SMALL = SandboxLimits(memory_mb=256, pids=64, workspace_mb=16, tmp_mb=16, cpus=1.0)


@pytest.fixture(name="boxes")
async def boxes_fixture() -> AsyncIterator[Sandboxes]:
    """Sandboxes (none pooled) whose tasks may reach this host's loopback where their
    allowlist names it (the operator's `allow_private`)."""
    made = Sandboxes(
        SandboxConfig(pool_size=0, browser_pool=0, limits=SMALL, allow_private=True),
        scope=secrets.token_hex(4),
    )
    yield made
    await made.reap(lambda _task: True)
    await made.aclose()


def kept_files(home: Path, artifacts: Path | None = None) -> dict[str, bytes]:
    """The store's files (the log and its write-ahead log) and a task's artifacts, by name."""
    found = {path.name: path.read_bytes() for path in home.glob("events.db*")}
    if artifacts is not None and artifacts.is_dir():
        found |= {f"artifact {p.name}": p.read_bytes() for p in artifacts.iterdir()}
    return found


def leaks(value: str, data: bytes | str) -> list[str]:
    """The forms of `value` found in `data`."""
    raw = data.encode() if isinstance(data, str) else data
    return [form for form in forms(value) if form.encode() in raw]


@pytest.fixture(name="notes_over_http")
def notes_over_http_fixture() -> Iterator[str]:
    """The example MCP server over streamable HTTP on loopback; its URL."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(NOTES_SERVER), "--http", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    listening(port, "the notes server")
    yield f"http://127.0.0.1:{port}/mcp"
    process.terminate()
    process.wait(10)


def free_port() -> int:
    """A loopback port nothing listens on (now)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def listening(port: int, what: str, within: float = 30.0) -> None:
    """Return once something accepts connections on loopback `port`; fail after `within` s."""
    deadline = time.monotonic() + within
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        assert time.monotonic() < deadline, f"{what} did not listen on port {port}"
        time.sleep(0.05)


@pytest.fixture(name="served")
def served_fixture(home: Path) -> Iterator[str]:
    """`agent serve` on a free loopback port, on the test's store; its base URL."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "AGENT_HOME": str(home)}
    server = subprocess.Popen(
        [sys.executable, "-m", "frontends.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    listening(port, "agent serve")
    yield f"http://127.0.0.1:{port}"
    server.terminate()
    server.wait(10)


def decide_over_http(store: Store, task: str, token: str, **body: Any) -> httpx.Response:
    """A reviewer's approval of the task's pending request through the API (in process), with
    `body` added to the decision's."""

    async def post() -> httpx.Response:
        request = pending(TaskState.from_store(store, task))
        transport = httpx.ASGITransport(app=app(store))
        async with httpx.AsyncClient(transport=transport, base_url="http://agent") as api:
            return await api.post(
                f"/api/requests/{request.approval_id}/decision",
                headers={"Authorization": f"Bearer {token}"},
                json={"approved": True, "call_hash": request.call_hash, **body},
            )

    return asyncio.run(post())


def task_waiting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], *config: str, counter: str = "front"
) -> str:
    """A task that `agent run` left at its request to tally `counter` (so that a worker can run
    it on); its id."""
    turns: list[Any] = [
        {"plan": ["Count a visitor"]},
        {"tool": "tally", "args": {"counter": counter, "amount": 1}},
        {"done": "counted"},
    ]
    script = write_script(tmp_path / "script.json", turns)
    run = ["run", "--model", f"scripted:{script}", "--tools", TALLY, *config, "--json"]
    capsys.readouterr()
    assert main([*run, f"Count a visitor at {counter}"]) == 3
    task: str = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["task_id"]
    return task
