"""A worker of the Temporal engine: it runs tasks' workflows, their activities, or both.

    await run_worker(make_worker(client, engine, activities, registry), stop_event)

Concurrency follows the machine: each core runs a few activities at once (they mostly wait on
a model, a sandbox or a page) and workflow tasks, which only decide, are cheap. A worker that
runs activities also serves its host's own task queue (`_wire.host_queue`): the calls of the
tasks whose sandbox is on this host.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Literal

from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from agent.config import EngineConfig
from agent.temporal._tools import set_registry
from agent.temporal._wire import host_queue
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
) -> list[Worker]:
    """The SDK's workers of one `agent worker`: the task queue's, and its host's when it runs
    activities."""
    set_registry(registry)
    most_activities, most_workflow_tasks = concurrency()
    shared = Worker(
        client,
        task_queue=engine.task_queue,
        workflows=[TaskWorkflow] if role != "activities" else [],
        # Bookkeeping on every role: workflows started before LOCAL_BOOKKEEPING still ask a
        # worker of the queue for it as ordinary activities.
        activities=activities.bookkeeping() + (activities.effects() if role != "workflows" else []),
        workflow_runner=workflow_runner(),
        max_concurrent_activities=max_activities or most_activities,
        max_concurrent_workflow_tasks=most_workflow_tasks,
        # A worker of workflows runs its bookkeeping as local activities: it must not take
        # the queue's effects, which it has not registered.
        no_remote_activities=role == "workflows",
    )
    if role == "workflows":
        return [shared]
    on_host = Worker(
        client,
        task_queue=host_queue(engine.task_queue, activities.host),
        activities=activities.on_host(),
        max_concurrent_activities=max_activities or most_activities,
    )
    return [shared, on_host]


async def run_worker(workers: list[Worker], stop: asyncio.Event | None = None) -> None:
    """Run `workers` until `stop` is set (or for ever); on stop, they finish what they
    started."""
    async with contextlib.AsyncExitStack() as running:
        for worker in workers:
            await running.enter_async_context(worker)
        await (stop or asyncio.Event()).wait()
