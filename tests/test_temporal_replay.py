"""The workflow's decisions, pinned to recorded histories (tests/golden/temporal, recorded by
tests/temporal_histories.py): each replays against the current code with the SDK's replayer, so a
change to the steps that would break a running workflow fails here, not in production.

They cover a plan and a replan with two approvals, a worker killed mid-call (the call then
reconciled), a task continued as new (the run that continues, and the runs that follow), a plan
sent back and rewritten by a person before a call approved with an always-allow rule, and a
task whose sandbox's host was lost (its call sent to another host). As v1-*.json, the first two
as the workflow made them before its bookkeeping became local activities (the patch
`LOCAL_BOOKKEEPING` keeps those running workflows deciding as they did); as v2-*.json, the
first three as the workflow made them before tasks' sandboxes stayed on their hosts."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from agent.temporal._tools import set_registry
from agent.temporal.worker import workflow_runner
from agent.temporal.workflow import TaskWorkflow
from frontends.task_setup import registry_of

from .temporal_histories import GOLDEN, TOOLS

RECORDED = sorted(GOLDEN.glob("*.json"))


def _replay(path: Path, history_json: str | None = None) -> None:
    set_registry(registry_of(TOOLS))
    history = WorkflowHistory.from_json(path.stem, history_json or path.read_text())
    replayer = Replayer(
        workflows=[TaskWorkflow],
        data_converter=pydantic_data_converter,
        workflow_runner=workflow_runner(),
    )
    asyncio.run(replayer.replay_workflow(history))


def test_every_kind_of_history_is_recorded() -> None:
    names = {p.stem for p in RECORDED}
    assert {"approvals", "crash", "continued-1", "continued-2", "steered", "moved"} <= names
    assert {"v1-approvals", "v1-crash", "v2-approvals", "v2-crash", "v2-continued-1"} <= names
    crash = (GOLDEN / "crash.json").read_text()
    assert "agent.reconcile" in crash  # the kill landed mid-call, and the call was reconciled
    continued = (GOLDEN / "continued-1.json").read_text()
    assert "workflowExecutionContinuedAsNewEventAttributes" in continued
    steered = (GOLDEN / "steered.json").read_text()
    assert steered.count('"name": "steer"') == 2  # another plan, then the person's own
    assert steered.count('"name": "decide"') == 1  # approved, with an always-allow rule
    moved = (GOLDEN / "moved.json").read_text()
    assert "TIMEOUT_TYPE_SCHEDULE_TO_START" in moved  # the lost host's queue took nothing
    assert '"name": "agent-tasks@north"' in moved
    assert '"name": "agent-tasks@south"' in moved


@pytest.mark.parametrize("path", RECORDED, ids=[p.stem for p in RECORDED])
def test_a_recorded_history_replays_against_the_current_code(path: Path) -> None:
    _replay(path)


def test_a_history_the_code_would_not_make_fails_to_replay() -> None:
    """The positive control: the replayer sees a decision the code no longer makes. Here the
    recorded history asks a model where the code runs a tool (an activity's name changed)."""
    history = json.loads((GOLDEN / "approvals.json").read_text())
    renamed = 0
    for event in history["events"]:
        scheduled = event.get("activityTaskScheduledEventAttributes")
        if scheduled and scheduled["activityType"]["name"] == "agent.run_tool":
            scheduled["activityType"]["name"] = "agent.ask_model"
            renamed += 1
    assert renamed
    with pytest.raises(Exception, match=r"(?i)nondetermin"):
        _replay(GOLDEN / "approvals.json", json.dumps(history))
