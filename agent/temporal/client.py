"""Talking to the Temporal service: connecting, starting a task's workflow, and a person's
decisions sent as updates (refused by the workflow as the embedded inbox refuses them).

    AgentError
    └── EngineError           the service cannot be reached, or the task has no workflow there
    (a refused decision is raised as the embedded inbox's own error: NotPending, Expired, ...)
"""

from __future__ import annotations

from datetime import timedelta

from temporalio.client import (
    Client,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, TLSConfig
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_fixed

from agent import always, approvals, steering
from agent.config import EngineConfig
from agent.temporal import _wire as w
from base.errors import AgentError, ErrorCode

#: the errors a refused update is raised as, by the name the workflow gives them
_REFUSALS: dict[str, type[AgentError]] = {
    cls.__name__: cls
    for cls in (
        approvals.NothingToApprove,
        approvals.NotPending,
        approvals.Expired,
        approvals.Escalated,
        approvals.AlreadyGiven,
        approvals.EditRefused,
        always.RuleRefused,
        steering.NotSteerable,
    )
}


class EngineError(AgentError):
    code = ErrorCode.AGENT_ERROR
    retryable = True


async def connect(engine: EngineConfig) -> Client:
    """A client of the configured service. Raises `EngineError` saying what to run when none
    answers."""
    tls: TLSConfig | bool = False
    if engine.tls is not None:
        t = engine.tls
        tls = TLSConfig(
            server_root_ca_cert=t.ca.read_bytes() if t.ca else None,
            client_cert=t.cert.read_bytes() if t.cert else None,
            client_private_key=t.key.read_bytes() if t.key else None,
            domain=t.server_name,
        )
    try:
        return await Client.connect(
            engine.address,
            namespace=engine.namespace,
            tls=tls,
            data_converter=pydantic_data_converter,
        )
    except RuntimeError as exc:  # the SDK's core raises this for a service that is not there
        raise EngineError(
            f"no Temporal service answers at {engine.address} ({exc}); start one with "
            "`agent engine dev`, or set [engine] address in agent.toml"
        ) from None


async def start(client: Client, engine: EngineConfig, task_id: str) -> WorkflowHandle[None, str]:
    """The task's workflow, started unless it runs already."""
    handle: WorkflowHandle[None, str] = await client.start_workflow(
        w.WORKFLOW,
        w.Start(task_id=task_id),
        id=task_id,
        task_queue=engine.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        result_type=str,
        # A task waits for reviewers for days; its run holds nothing meanwhile.
        execution_timeout=None,
        task_timeout=timedelta(seconds=10),
    )
    return handle


async def decide(client: Client, task_id: str, decision: w.Decide) -> str:
    """Send a reviewer's decision to the task's workflow; "approved" or "denied" once it is
    recorded. Raises the embedded inbox's error for a decision it would refuse."""
    return await _update(client, task_id, "decide", decision)


async def steer(client: Client, task_id: str, steer: w.Steer) -> str:
    """Go on with a paused or stuck task, or cancel it; its status after."""
    return await _update(client, task_id, "steer", steer)


async def _update(client: Client, task_id: str, name: str, given: w.Decide | w.Steer) -> str:
    """Send the update. One that reaches a workflow still folding its log (refused as
    `NotReady`) is sent again once it has: every 0.1 s, for 5 s at most."""
    handle = client.get_workflow_handle(task_id)
    try:
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(_not_ready),
            wait=wait_fixed(0.1),
            stop=stop_after_attempt(50),
            reraise=True,
        ):
            with attempt:
                result: str = await handle.execute_update(name, given, result_type=str)
    except WorkflowUpdateFailedError as exc:
        raise _refusal(task_id, exc) from None
    except RPCError as exc:
        raise EngineError(
            f"task {task_id} has no running workflow on the Temporal service ({exc.message}): "
            f"`agent resume {task_id}` starts it",
            task_id=task_id,
        ) from None
    return result


def _not_ready(exc: BaseException) -> bool:
    cause = exc.cause if isinstance(exc, WorkflowUpdateFailedError) else None
    return isinstance(cause, ApplicationError) and cause.type == "NotReady"


def _refusal(task_id: str, exc: WorkflowUpdateFailedError) -> AgentError:
    """The error a refused update is raised as: the embedded inbox's own, by its name."""
    cause = exc.cause
    if isinstance(cause, ApplicationError):
        error = _REFUSALS.get(cause.type or "", AgentError)
        return error(cause.message, task_id=task_id)
    return EngineError(f"task {task_id}: {cause or exc}", task_id=task_id)
