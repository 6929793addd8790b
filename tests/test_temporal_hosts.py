"""A task's sandbox on many hosts (Temporal engine): its calls go to the host that holds it;
when that host's worker dies (kill -9), the next call waits the host wait, then the sandbox is
made again on another host from the snapshot of its workspace, and the model is told.

Each "host" here is a worker with a host name of its own (`agent worker --host`): on one machine
their sandboxes are told apart by name, as on many machines they are by their Docker engines.
The positive control loses the snapshot before the move: the same probe (the file read back)
then fails, so the probe can see a move that lost the workspace."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from agent.config import EngineConfig
from agent.events import ToolResulted
from agent.state import TaskState
from agent.store import Store
from agent.temporal.client import connect
from frontends.cli import main
from frontends.engine_commands import dev_server
from sandbox.manager import store_scope
from sandbox.snapshot import SNAPSHOT, workspace_relative

from .bucket import SDK_ENV, Bucket, make_bucket, sdk_s3_server
from .conftest import pending, write_script
from .postgres import postgres
from .temporal_env import agent, agent_env, store_of, workers_on_hosts, write_config

__all__ = ["postgres"]  # a fixture, asked for by name

NOTE = "kept on the first host"
TURNS: list[dict[str, object]] = [
    {"plan": ["Keep a note, then read it back"]},
    {"tool": "write_file", "args": {"path": "notes/today.txt", "content": NOTE}},
    {"tool": "shell", "args": {"command": "cat notes/today.txt"}},  # asks a reviewer
    {"tool": "read_file", "args": {"path": "notes/today.txt"}},
    {"done": "read it back"},
]
HOSTS = ("north", "south")
POLICY = """
[[rule]]
action = "ask"
reason = "a reviewer reads each command"
tool = ["shell"]

[[rule]]
action = "allow"
reason = "the files of the task's sandbox"
tool = ["read_file", "write_file"]
"""


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineConfig]:
    with dev_server(tmp_path_factory.mktemp("temporal")) as config:
        yield config.model_copy(update={"host_wait_seconds": 3.0, "heartbeat_seconds": 2.0})


def _open(home: Path) -> Store:
    """The task's store: the shared one the test's environment names, or the home's."""
    return Store.open(None if os.environ.get("AGENT_STORE_URL") else home / "events.db")


def _state(home: Path, task_id: str) -> TaskState:
    with _open(home) as store:
        return TaskState.from_store(store, task_id)


def _until(home: Path, task_id: str, statuses: tuple[str, ...], seconds: float) -> TaskState:
    deadline = time.monotonic() + seconds
    while (state := _state(home, task_id)).status not in statuses:
        assert time.monotonic() < deadline, f"task {task_id} is {state.status}"
        time.sleep(0.1)
    return state


def _sandbox_host(engine: EngineConfig, task_id: str) -> str | None:
    async def ask() -> str | None:
        client = await connect(engine)
        host: str | None = await client.get_workflow_handle(task_id).query("sandbox_host")
        return host

    return asyncio.run(ask())


def _results(home: Path, task_id: str) -> list[ToolResulted]:
    with _open(home) as store:
        return [e.event for e in store.events(task_id) if isinstance(e.event, ToolResulted)]


def _container(env: dict[str, str], host: str, task_id: str) -> str:
    return f"agent-{store_scope(store_of(env), host)}-{task_id}"


def _approve(config: Path, env: dict[str, str], home: Path, task_id: str) -> None:
    request = pending(_state(home, task_id))
    approved = agent(config, env, "approve", task_id, request.approval_id, request.short_hash)
    assert approved.returncode in (0, 3), approved.stderr


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with sdk_s3_server() as url:
        yield url


class _Snapshots:
    """Where a test's task keeps its snapshot: the folder beside the store, or a bucket."""

    def __init__(self, home: Path, bucket: Bucket | None) -> None:
        self.home, self.bucket = home, bucket

    def key(self, task_id: str) -> str:
        return f"{task_id}/{SNAPSHOT}"

    def size(self, task_id: str) -> int:
        if self.bucket is None:
            return (self.home / "artifacts" / self.key(task_id)).stat().st_size
        return len(self.bucket.objects()[self.key(task_id)])

    def lose(self, task_id: str) -> None:
        assert self.bucket is None
        (self.home / "artifacts" / self.key(task_id)).unlink()


def _kept_in(
    kept_in: str, home: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> tuple[dict[str, str], Bucket | None]:
    """The processes' environment, and the bucket of the artifacts if they are in one."""
    env = agent_env(home)
    if kept_in == "shared":  # hosts with no file in common: the store is a PostgreSQL server
        url = request.getfixturevalue("postgres").schema()
        monkeypatch.setenv("AGENT_STORE_URL", url)
        env["AGENT_STORE_URL"] = url
    if kept_in == "folder":
        return env, None
    env.update(SDK_ENV)  # artifacts in an S3-compatible bucket every worker reaches
    return env, make_bucket(request.getfixturevalue("s3_endpoint"), f"hosts-{kept_in}")


@pytest.mark.parametrize(
    ("kept_in", "snapshot_kept"),
    [("folder", True), ("bucket", True), ("shared", True), ("folder", False)],
    ids=["moved", "moved-with-a-bucket", "moved-between-homes", "control-no-snapshot"],
)
def test_a_lost_host_s_sandbox_is_made_again_elsewhere_from_its_snapshot(
    engine: EngineConfig,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    kept_in: str,
    snapshot_kept: bool,
) -> None:
    home = tmp_path / "home"
    env, bucket = _kept_in(kept_in, home, request, monkeypatch)
    snapshots = _Snapshots(home, bucket)
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    more = bucket.toml() if bucket is not None else ""
    config = write_config(tmp_path / "agent.toml", engine, tools=[], policy=policy, more=more)
    script = write_script(tmp_path / "turns.json", TURNS)
    docker_client = docker.from_env()
    with workers_on_hosts(config, env, tmp_path, HOSTS, own_homes=kept_in == "shared") as hosts:
        ran = agent(config, env, "run", "--json", "--model", f"scripted:{script}", "keep a note")
        assert ran.returncode == 3, ran.stderr  # the shell command waits for a reviewer
        with _open(home) as store:
            task_id = store.tasks(limit=1)[0].id
        first = _sandbox_host(engine, task_id)
        assert first in HOSTS  # the note was written on one host, which holds the sandbox
        [survivor] = [h for h in HOSTS if h != first]
        lost_box = docker_client.containers.get(_container(env, first, task_id))
        assert lost_box.status == "running"
        assert snapshots.size(task_id) > 0
        if not snapshot_kept:
            snapshots.lose(task_id)

        os.kill(hosts[first].pid, signal.SIGKILL)  # the host holding the sandbox is lost
        hosts[first].wait()
        _approve(config, env, home, task_id)
        state = _until(home, task_id, ("done", "failed", "paused", "stuck"), 120)
        assert state.status == "done", state.status

        told, read = _results(home, task_id)[1:]
        # The approved command waited for the lost host, was not run, and the model was told.
        assert not told.ok
        assert f"host {first} stopped answering" in told.content
        assert f"made again on {survivor}" in told.content
        assert _sandbox_host(engine, task_id) is None  # the finished task's sandbox is let go
        with pytest.raises(docker.errors.NotFound):
            docker_client.containers.get(_container(env, survivor, task_id))
        # The lost host's container is not the one read from: it is still there, untouched.
        lost_box.reload()
        assert lost_box.status == "running"
        if kept_in == "shared":  # no worker, nor the person, kept a log of their own
            assert not list(tmp_path.glob("home*/events.db"))
        if snapshot_kept:
            assert "from the snapshot of its /workspace" in told.content
            assert (read.ok, read.content) == (True, NOTE)
        else:
            assert "empty (no snapshot" in told.content
            assert not read.ok
            assert "no such file" in read.content
    docker_client.close()


def test_a_host_s_name_is_checked_before_the_worker_starts(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["worker", "--engine", "temporal", "--host", "north/1"]) == 2
    said = " ".join(capsys.readouterr().err.split())
    assert "--host 'north/1': a host's name is letters, digits, '.', '_' and '-'" in said


def test_a_snapshot_holds_the_workspace_s_files_and_nothing_outside_it() -> None:
    # Docker's archive of /workspace, as a sandbox could make it look: a file, a folder, a
    # link; and names that would leave the workspace once put into another sandbox.
    made = _archive(
        {
            "workspace/notes/today.txt": b"kept",
            "workspace/../etc/cron.d/job": b"* * * * * root evil",
            "etc/passwd": b"root::0:0::/:/bin/sh",
        },
        links={"workspace/copy": "workspace/notes/today.txt", "workspace/x": "etc/passwd"},
    )
    relative = workspace_relative(made)
    with tarfile.open(fileobj=io.BytesIO(relative)) as archive:
        members = {m.name: m for m in archive}
        assert sorted(members) == ["copy", "notes/today.txt"]
        assert members["copy"].linkname == "notes/today.txt"
        kept = archive.extractfile(members["notes/today.txt"])
        assert kept is not None
        assert kept.read() == b"kept"


class _Secret:
    """Takes one secret's value out, as the task's redactor does (a different length)."""

    def data(self, data: bytes) -> bytes:
        return data.replace(b"hunter2", b"{{secret:PASSWORD}}")

    def text(self, text: str) -> str:
        return text.replace("hunter2", "{{secret:PASSWORD}}")


def test_a_snapshot_keeps_no_secret_and_stays_a_whole_archive() -> None:
    made = _archive(
        {
            "workspace/.env": b"PASSWORD=hunter2\n",
            "workspace/hunter2.txt": b"named after it",
            "workspace/after.txt": b"a file after them, read whole",
        }
    )
    kept = workspace_relative(made, _Secret())
    assert b"hunter2" not in kept
    with tarfile.open(fileobj=io.BytesIO(kept)) as archive:
        read = {m.name: archive.extractfile(m).read() for m in archive}  # type: ignore[union-attr]
    assert read == {
        ".env": b"PASSWORD={{secret:PASSWORD}}\n",
        "{{secret:PASSWORD}}.txt": b"named after it",
        "after.txt": b"a file after them, read whole",
    }


def _archive(files: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    """A tar archive as Docker gives one: `files` by name, then hard `links` (name: target)."""
    made = io.BytesIO()
    with tarfile.open(fileobj=made, mode="w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            link = tarfile.TarInfo(name)
            link.type, link.linkname = tarfile.LNKTYPE, target
            archive.addfile(link)
    return made.getvalue()
