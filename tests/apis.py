"""What the API tests share: sandboxes whose egress proxy reaches this host's loopback (where
their services run), and what secret-hygiene tests look for: a value's forms (see
tools/_redact.py) in what a run kept."""

from __future__ import annotations

import secrets
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from sandbox.limits import SandboxConfig, SandboxLimits
from sandbox.manager import Sandboxes
from tools._redact import forms

from .conftest import REPO

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
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, str(NOTES_SERVER), "--http", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/mcp"
    process.terminate()
    process.wait(10)
