"""What the API tests share: sandboxes whose egress proxy reaches this host's loopback (where
their services run), and what secret-hygiene tests look for: a value's forms (see
tools/_redact.py) in what a run kept."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sandbox.limits import SandboxConfig, SandboxLimits
from sandbox.manager import Sandboxes
from tools._redact import forms

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
