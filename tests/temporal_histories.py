"""Record the workflow histories the replay test pins the workflow's decisions to.

    .venv/bin/python -m tests.temporal_histories

Runs scripted tasks on a dev server of its own: the quickstart (two approvals given, a replan), a
task whose worker is killed in the middle of a call with a side effect (the call reconciled by
another), a task continued as new at step boundaries, a task whose plan a person reads, sends
back and rewrites before approving a call with an always-allow rule, and a task whose sandbox's
host is lost (its sandbox made again on another host). Each run's history is written to
tests/golden/temporal/NAME.json (NAME-N.json for the runs of one task). Record them again when
the workflow changes: guard the workflows already running with `workflow.patched` (as
`LOCAL_BOOKKEEPING` in agent/temporal/_effects.py does), and keep the histories the older code
made (vN-*.json) beside the new ones, so all stay replayed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import tempfile
import time
from pathlib import Path

from agent.config import EngineConfig
from agent.events import Limits, TaskCreated
from agent.state import TaskState
from agent.store import Store
from agent.temporal._wire import Steer
from agent.temporal.client import connect, start, steer
from frontends.engine_commands import dev_server

from .conftest import REPO, pending, write_script
from .temporal_env import agent, agent_env, start_worker, stop, workers_on_hosts, write_config

GOLDEN = REPO / "tests" / "golden" / "temporal"
# Named by module, not by file: a tool's identity (in every call's hash) holds its module's name,
# which for a file is made from its path, and the histories must replay in any checkout.
TALLY = "examples.tally_tool"
CRASH_TOOLS = "tests.crash_tools"
ENGINE_TOOLS = "tests.engine_tools"
#: the tools every recording's worker runs (the replay test's registry is the same)
TOOLS = (TALLY, CRASH_TOOLS, ENGINE_TOOLS)
#: a short history, so that a task of 60 steps continues as new a few times
HISTORY_EVENTS = 200


def _status(home: Path, task_id: str) -> TaskState:
    with Store.open(home / "events.db") as store:
        return TaskState.from_store(store, task_id)


async def _save(engine: EngineConfig, task_id: str, name: str) -> list[str]:
    client = await connect(engine)
    runs = [run async for run in client.list_workflows(f'WorkflowId = "{task_id}"')]
    saved = []
    for n, run in enumerate(sorted(runs, key=lambda r: r.start_time)):
        history = await client.get_workflow_handle(task_id, run_id=run.run_id).fetch_history()
        path = GOLDEN / (f"{name}.json" if len(runs) == 1 else f"{name}-{n + 1}.json")
        path.write_text(history.to_json())
        saved.append(path.name)
    return saved


def _create(
    home: Path,
    engine: EngineConfig,
    script: Path,
    policy: Path,
    tools: str,
    *,
    review_plan: bool = False,
) -> str:
    with Store.open(home / "events.db") as store:
        task_id = store.create_task(
            TaskCreated(
                task="a recorded task",
                model=f"scripted:{script}",
                limits=Limits(max_steps=500, max_tokens=10_000_000),
                tools=(tools,),
                policy=str(policy),
                engine="temporal",
                review_plan=review_plan,
            )
        )

    async def begin() -> None:
        await start(await connect(engine), engine, task_id)

    asyncio.run(begin())
    return task_id


def _until(home: Path, task_id: str, statuses: tuple[str, ...], seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while _status(home, task_id).status not in statuses:
        if time.monotonic() > deadline:
            raise TimeoutError(f"task {task_id} is {_status(home, task_id).status}")
        time.sleep(0.1)


def record(folder: Path) -> None:
    GOLDEN.mkdir(parents=True, exist_ok=True)
    with dev_server(folder) as served:
        engine = served.model_copy(update={"history_events": HISTORY_EVENTS})
        home, busy = folder / "home", folder / "busy"
        home.mkdir()
        busy.mkdir()
        policy = folder / "policy.toml"
        policy.write_text(
            '[default]\naction = "allow"\n\n[[rule]]\ntool = "tally"\naction = "ask"\n'
        )
        env = agent_env(
            home,
            TALLY_LEDGER=str(folder / "tally.jsonl"),
            CRASH_LEDGER=str(folder / "crash.jsonl"),
            CRASH_BUSY=str(busy),
            CRASH_PAUSE="1.0",
        )
        config = write_config(folder / "agent.toml", engine, tools=list(TOOLS), policy=policy)
        log = folder / "worker.log"
        workers = [start_worker(config, env, log)]
        try:
            # The quickstart: a plan, a replan, two requests approved from the command line.
            quickstart = REPO / "examples" / "quickstart.json"
            task_id = _create(home, engine, quickstart, policy, TALLY)
            for _ in range(2):
                _until(home, task_id, ("awaiting_approval",))
                request = pending(_status(home, task_id))
                agent(config, env, "approve", task_id, request.approval_id, request.short_hash)
            _until(home, task_id, ("done",))
            print(asyncio.run(_save(engine, task_id, "approvals")))

            # A worker killed while it counts: the call is reconciled by the next worker.
            script = write_script(
                folder / "crash.json",
                [
                    {"plan": ["count it"]},
                    {"tool": "count", "args": {"name": "once"}},
                    {"done": "ok"},
                ],
            )
            task_id = _create(home, engine, script, policy, CRASH_TOOLS)
            while not any(busy.iterdir()):
                time.sleep(0.01)
            time.sleep(0.5)
            os.kill(workers[0].pid, signal.SIGKILL)
            workers[0].wait()
            workers = [start_worker(config, env, log)]
            _until(home, task_id, ("done",))
            print(asyncio.run(_save(engine, task_id, "crash")))

            # Sixty steps in a history kept to 200 events: continued as new a few times.
            turns: list[dict[str, object]] = [{"plan": ["tick"]}]
            turns += [{"tool": "tick", "args": {"n": n}} for n in range(60)]
            turns.append({"answer": "ticked"})
            script = write_script(folder / "ticks.json", turns)
            task_id = _create(home, engine, script, policy, ENGINE_TOOLS)
            _until(home, task_id, ("done",))
            print(asyncio.run(_save(engine, task_id, "continued")))

            _steered(folder, home, engine, (config, env))
        finally:
            for worker in workers:
                stop(worker)
        _moved(folder, engine)
    print("recorded in", GOLDEN)


def _steer(engine: EngineConfig, task_id: str, given: Steer) -> None:
    async def send() -> None:
        await steer(await connect(engine), task_id, given)

    asyncio.run(send())


def _steered(
    folder: Path, home: Path, engine: EngineConfig, setup: tuple[Path, dict[str, str]]
) -> None:
    """A plan read first, sent back, rewritten; then a call approved with an always-allow
    rule, and the same call run unasked."""
    config, env = setup
    policy = folder / "steered.toml"
    policy.write_text('[default]\naction = "allow"\n\n[[rule]]\ntool = "tally"\naction = "ask"\n')
    same = {"tool": "tally", "args": {"counter": "front-desk", "amount": 1}}
    script = write_script(
        folder / "steered.json",
        [
            {"plan": ["Count at the side door"]},
            {"plan": ["Count twice"]},
            same,
            same,
            {"done": "2"},
        ],
    )
    task_id = _create(home, engine, script, policy, TALLY, review_plan=True)
    _until(home, task_id, ("paused",))
    _steer(engine, task_id, Steer(action="another_plan", why="count at the front desk"))
    _until(home, task_id, ("paused",))
    _steer(engine, task_id, Steer(action="edit_plan", steps=("Count at the front desk, twice",)))
    _until(home, task_id, ("awaiting_approval",))
    request = pending(_status(home, task_id))
    agent(
        config, env, "approve", task_id, request.approval_id, request.short_hash,
        "--always", "task", "--yes",
    )  # fmt: skip
    _until(home, task_id, ("done",))
    print(asyncio.run(_save(engine, task_id, "steered")))


def _moved(folder: Path, engine: EngineConfig) -> None:
    """A task's sandbox on one host, which is lost while the task waits: the next call waits
    for it, then goes to the other host, which makes the sandbox again from its snapshot."""
    home = folder / "moved-home"
    home.mkdir()
    env = agent_env(home)
    policy = folder / "moved.toml"
    policy.write_text('[default]\naction = "allow"\n\n[[rule]]\ntool = "shell"\naction = "ask"\n')
    fast = engine.model_copy(update={"host_wait_seconds": 3.0})
    config = write_config(folder / "moved.toml.agent", fast, tools=list(TOOLS), policy=policy)
    script = write_script(
        folder / "moved.json",
        [
            {"plan": ["Keep a note, read it back"]},
            {"tool": "write_file", "args": {"path": "note.txt", "content": "kept"}},
            {"tool": "shell", "args": {"command": "cat note.txt"}},
            {"tool": "read_file", "args": {"path": "note.txt"}},
            {"done": "read"},
        ],
    )
    logs = folder / "moved-logs"
    logs.mkdir()
    with workers_on_hosts(config, env, logs, ("north", "south")) as hosts:
        task_id = _create(home, fast, script, policy, ENGINE_TOOLS)
        _until(home, task_id, ("awaiting_approval",))

        async def where() -> str:
            handle = (await connect(fast)).get_workflow_handle(task_id)
            host: str = await handle.query("sandbox_host")
            return host

        lost = hosts[asyncio.run(where())]
        os.kill(lost.pid, signal.SIGKILL)
        lost.wait()
        request = pending(_status(home, task_id))
        agent(config, env, "approve", task_id, request.approval_id, request.short_hash)
        _until(home, task_id, ("done",))
        print(asyncio.run(_save(fast, task_id, "moved")))


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        record(Path(tmp))
