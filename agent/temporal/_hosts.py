"""A task's sandbox on the host that holds it (the Temporal engine): which host that is, a
snapshot of its workspace after each call that may change files, and the sandbox made again on
another host from that snapshot when its own was given up.

Activity code: each function runs in a worker, for one call of one task. The snapshot is kept
with the task's artifacts (a folder or a bucket every worker reaches), without the values of the
task's secrets; the tar work and the artifact store's I/O run in threads, so the worker's other
activities go on heartbeating meanwhile.
"""

from __future__ import annotations

import asyncio
import tarfile
from typing import TYPE_CHECKING

from temporalio import activity

from agent.effects import LocalEffects
from agent.events import TaskPaused
from agent.state import TaskState
from base.errors import AgentError, SandboxError
from sandbox.container import WORKSPACE, Sandbox
from sandbox.snapshot import SNAPSHOT, restore, snapshot

if TYPE_CHECKING:
    from agent.runner import Runner


def placed(runner: Runner, state: TaskState, host: str) -> str | None:
    """`host` (this worker's), when this worker holds the task's sandbox."""
    held = runner.sandboxes is not None and runner.sandboxes.holds(state.task_id)
    return host if held else None


async def arrive(
    runner: Runner, effects: LocalEffects, state: TaskState, moved_from: str | None, host: str
) -> TaskPaused | None:
    """Make the task's sandbox here when its host `moved_from` was given up: from the snapshot
    of its workspace, if one was kept; the task is told at its next sandbox call (which is not
    run), as after a restart. The pause to record, the call not run, when the sandbox cannot
    be made here (no Docker, a snapshot larger than the workspace); else None."""
    if moved_from is None or moved_from == host or runner.sandboxes is None:
        return None
    try:
        box = await _sandbox(runner, state)
        try:
            archive: bytes | None = await asyncio.to_thread(effects.artifacts.read, SNAPSHOT)
        except KeyError:
            archive = None
        if archive is not None:
            await restore(box, archive)
    except (SandboxError, AgentError) as exc:
        detail = f"the sandbox could not be made again on {host} after {moved_from} was lost: {exc}"
        return TaskPaused(reason="sandbox_error", detail=detail)
    box.note_made_again(moved_note(moved_from, host, restored=archive is not None))
    return None


async def keep_snapshot(runner: Runner, effects: LocalEffects, state: TaskState) -> None:
    """Keep the workspace of the task's sandbox (if this worker holds it) with the task's
    artifacts. A snapshot that cannot be taken or kept is skipped: the call's own outcome
    stands, and the previous snapshot with it."""
    if runner.sandboxes is None or not runner.sandboxes.holds(state.task_id):
        return
    redactor = effects.secrets.redactor() if effects.secrets else None
    try:
        box = await _sandbox(runner, state)
        archive = await snapshot(box, redactor)
        await asyncio.to_thread(effects.artifacts.keep, SNAPSHOT, archive)
    except (AgentError, OSError, tarfile.TarError) as exc:
        activity.logger.warning("no snapshot of task %s's workspace: %s", state.task_id, exc)


def moved_note(lost: str, here: str, *, restored: bool) -> str:
    """What a task is told when its sandbox's host `lost` was given up for `here`."""
    kept = (
        f"from the snapshot of its {WORKSPACE} kept after its last call that finished there: "
        "what changed since is lost"
        if restored
        else f"empty (no snapshot of its {WORKSPACE} was kept)"
    )
    return (
        f"the sandbox's host {lost} stopped answering, so the sandbox was made again on {here}, "
        f"{kept}, and nothing it was running (processes, /tmp, a browser's pages) is left"
    )


async def _sandbox(runner: Runner, state: TaskState) -> Sandbox:
    assert runner.sandboxes is not None
    created = state.created
    limits = created.sandbox if created is not None else None
    return await runner.sandboxes.for_task(state.task_id, limits)
