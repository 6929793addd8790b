"""Shared fixtures: a store in a temporary home, and a runner built from real parts."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.approvals import pending_approval
from agent.backends.scripted import ScriptedBackend, parse_script
from agent.events import ApprovalRequested, Limits, ToolResulted
from agent.runner import Runner
from agent.state import TaskState
from agent.store import Store
from examples import tally_tool
from policies import Gate
from tools import Registry
from tools.builtin import registry as builtin

from .miniwob_site import serve_miniwob

REPO = Path(__file__).resolve().parent.parent
ALLOW_ALL = '[default]\naction = "allow"\n'


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty AGENT_HOME (and tally ledger) for one test."""
    monkeypatch.setenv("AGENT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TALLY_LEDGER", str(tmp_path / "tally.jsonl"))
    monkeypatch.delenv("AGENT_MODEL", raising=False)
    # a shared store the developer uses is never written by a test (tests that want one say)
    monkeypatch.delenv("AGENT_STORE_URL", raising=False)
    return tmp_path / "home"


@pytest.fixture
def store(home: Path) -> Iterator[Store]:
    with Store.open(home / "events.db") as s:
        yield s


def tools() -> Registry:
    registry = Registry()
    registry.include(builtin)
    registry.add(tally_tool.tally)
    return registry


def scripted(turns: list[Any]) -> ScriptedBackend:
    return ScriptedBackend(parse_script(turns))


def make_runner(
    store: Store,
    turns: list[Any],
    *,
    policy: str | None = ALLOW_ALL,
    registry: Registry | None = None,
) -> tuple[Runner, ScriptedBackend]:
    backend = scripted(turns)
    gate = Gate.from_text(policy, source="test-policy.toml") if policy else Gate.default()
    return Runner(store, registry or tools(), gate, planner=backend), backend


def write_script(path: Path, turns: list[Any]) -> Path:
    path.write_text(json.dumps({"turns": turns}))
    return path


def tool_results(store: Store, task_id: str) -> list[ToolResulted]:
    """The task's tool results, in order."""
    return [e.event for e in store.events(task_id) if isinstance(e.event, ToolResulted)]


def run_limits(**overrides: Any) -> Limits:
    return Limits().model_copy(update=overrides)


def pending(state: TaskState) -> ApprovalRequested:
    """The request the task waits on, as a reviewer is shown it (the test fails if none)."""
    request = pending_approval(state)
    assert request is not None, f"task {state.task_id} waits for no approval ({state.status})"
    return request


def request_args(task_id: str, db: Path | None = None) -> list[str]:
    """`agent approve`/`deny`'s arguments for the task's pending request, as a reviewer copies
    them from what they were shown: the task, the request's id, its short hash."""
    with Store.open(db) as store:
        request = pending(TaskState.from_store(store, store.resolve(task_id)))
    return [task_id, request.approval_id, request.short_hash]


def told(runner: Runner) -> str:
    """Everything the runner's executor model was last sent, as JSON text."""
    backend = runner.backends["act"]
    assert isinstance(backend, ScriptedBackend)
    return json.dumps([m.model_dump() for m in backend.requests[-1].messages])


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    """MiniWoB++'s pages, served on loopback (see `miniwob_site`)."""
    with serve_miniwob() as base:
        yield base
