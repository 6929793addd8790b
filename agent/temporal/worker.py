"""A worker of the Temporal engine: it runs tasks' workflows, their activities, or both.

    await run_worker(client, engine, activities, registry, stop=stop_event)

Concurrency follows the machine: each core runs a few activities at once (they mostly wait on
a model, a sandbox or a page) and workflow tasks, which only decide, are cheap.
"""

from __future__ import annotations

import asyncio
import os
from typing import Literal

from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from agent.config import EngineConfig
from agent.temporal._tools import set_registry
from agent.temporal.activities import TaskActivities
from agent.temporal.workflow import TaskWorkflow
from tools.registry import Registry

Role = Literal["both", "workflows", "activities"]

#: the project's packages, imported once outside the workflow sandbox: the steps are
#: deterministic code, and their modules (pydantic models, the registry) are shared
PASSED_THROUGH = ("agent", "base", "policies", "tools", "browser", "sandbox", "pydantic")


def workflow_runner() -> SandboxedWorkflowRunner:
    """Temporal's workflow sandbox, with the project's own modules passed through."""
    restrictions = SandboxRestrictions.default.with_passthrough_modules(*PASSED_THROUGH)
    return SandboxedWorkflowRunner(restrictions=restrictions)


def concurrency(cores: int | None = None) -> tuple[int, int]:
    """(activities, workflow tasks) at once for a machine of `cores` cores."""
    cores = cores or os.cpu_count() or 1
    return 4 * cores, 2 * cores


def make_worker(
    client: Client,
    engine: EngineConfig,
    activities: TaskActivities,
    registry: Registry,
    *,
    role: Role = "both",
    max_activities: int | None = None,
) -> Worker:
    set_registry(registry)
    most_activities, most_workflow_tasks = concurrency()
    return Worker(
        client,
        task_queue=engine.task_queue,
        workflows=[TaskWorkflow] if role != "activities" else [],
        activities=(activities.bookkeeping() if role != "activities" else [])
        + (activities.effects() if role != "workflows" else []),
        workflow_runner=workflow_runner(),
        max_concurrent_activities=max_activities or most_activities,
        max_concurrent_workflow_tasks=most_workflow_tasks,
    )


async def run_worker(worker: Worker, stop: asyncio.Event | None = None) -> None:
    """Run `worker` until `stop` is set (or for ever); on stop, it finishes what it started."""
    async with worker:
        await (stop or asyncio.Event()).wait()
