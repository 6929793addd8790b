"""The sandbox, against a real Docker engine: hardening, limits, timeouts, files, the warm pool.

These never skip: `make test` starts Docker and builds the image first (scripts/ensure-docker).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import secrets
import tarfile
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import docker
import pytest

from base.errors import DockerUnavailable, ImageMissing, SandboxError
from sandbox._docker import LABEL, SCOPE, TASK, owner_labels
from sandbox._hardening import REAPER_CAPABILITIES
from sandbox._services import DEPLOYMENT
from sandbox.container import Sandbox, WorkspaceError
from sandbox.deploy_docker import DockerTarget
from sandbox.egress import FORWARDER_LIMITS, Egress
from sandbox.limits import SandboxConfig, SandboxLimits
from sandbox.manager import POOL_PREFIX, Sandboxes
from sandbox.protocol import ExecResult
from tools import ToolContext
from tools.sandboxed import registry as sandbox_tools

from .deploying import APP, IMAGE, spec_of

SMALL = SandboxLimits(memory_mb=256, pids=64, workspace_mb=32, tmp_mb=16, cpus=1.0)


def project_containers(client: docker.DockerClient, scope: str | None = None) -> list[Any]:
    found = client.containers.list(all=True, filters={"label": f"{LABEL}=1"})
    return [c for c in found if scope is None or (c.name or "").startswith(f"agent-{scope}-")]


@pytest.fixture
async def boxes() -> AsyncIterator[Sandboxes]:
    """Sandboxes of a scope of their own (no pool), all removed afterwards."""
    sandboxes = Sandboxes(SandboxConfig(pool_size=0, limits=SMALL), scope=secrets.token_hex(4))
    yield sandboxes
    await sandboxes.reap(lambda _task: True)
    await sandboxes.aclose()


@pytest.fixture
def client() -> docker.DockerClient:
    return docker.from_env()


def assert_hardened(container: Any, limits: SandboxLimits, *, forwarder: bool = False) -> None:
    """The settings every container of the project must have, read back from Docker. A
    sandbox's own processes (PID 1, agent-init) run as root with only the reaper's capabilities;
    a forwarder's as the unprivileged user, with none."""
    host = container.attrs["HostConfig"]
    config = container.attrs["Config"]
    name = container.name
    assert host["CapDrop"] == ["ALL"], name
    if forwarder:
        assert not host["CapAdd"], name
        assert config["User"] == "1000:1000", name
    else:
        assert sorted(host["CapAdd"]) == sorted(REAPER_CAPABILITIES), name
        assert config["User"] == "0:0", name
    assert host["Privileged"] is False, name
    assert host["ReadonlyRootfs"] is True, name
    assert "no-new-privileges:true" in host["SecurityOpt"], name
    assert not any("seccomp=unconfined" in opt for opt in host["SecurityOpt"]), name
    assert host["NetworkMode"] in ("none",) or host["NetworkMode"].startswith("agent-"), name
    assert (host["PidMode"], host["IpcMode"], host["UTSMode"]) == ("", "private", ""), name
    assert not host["Binds"], name
    assert not host["Devices"], name
    assert all(m["Type"] in ("volume", "tmpfs") for m in container.attrs["Mounts"]), name
    assert not any("docker.sock" in str(m) for m in container.attrs["Mounts"]), name
    assert host["PidsLimit"] == limits.pids, name
    assert host["Memory"] == limits.memory_mb * 2**20 == host["MemorySwap"], name
    assert host["NanoCpus"] == int(limits.cpus * 1e9), name
    assert set(host["Tmpfs"]) == {"/tmp", "/home/sandbox"}, name
    assert f"size={limits.tmp_mb}m" in host["Tmpfs"]["/tmp"], name


def assert_service_hardened(container: Any) -> None:
    """The settings of every container of a deployment (its versions and its front): a sandbox's
    hardening, with no capability at all, an unprivileged user for every process, and a restart
    with the engine."""
    host = container.attrs["HostConfig"]
    name = container.name
    assert host["CapDrop"] == ["ALL"], name
    assert not host["CapAdd"], name
    assert container.attrs["Config"]["User"] == "1000:1000", name
    assert host["Privileged"] is False, name
    assert host["ReadonlyRootfs"] is True, name
    assert "no-new-privileges:true" in host["SecurityOpt"], name
    assert not any("seccomp=unconfined" in opt for opt in host["SecurityOpt"]), name
    assert (host["PidMode"], host["IpcMode"]) == ("", "private"), name
    assert not host["Binds"], name
    assert not host["Devices"], name
    assert all(m["Type"] in ("volume", "tmpfs") for m in container.attrs["Mounts"]), name
    assert not any("docker.sock" in str(m) for m in container.attrs["Mounts"]), name
    assert host["PidsLimit"], name
    assert host["Memory"] == host["MemorySwap"] > 0, name
    assert host["NanoCpus"] > 0, name
    assert set(host["Tmpfs"]) == {"/tmp"}, name
    assert host["RestartPolicy"]["Name"] == "unless-stopped", name


async def assert_confined_inside(sandbox: Sandbox) -> None:
    result = await sandbox.exec(
        "grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status; id -u", timeout=10
    )
    fields = dict(line.split(":\t") for line in result.stdout.splitlines() if ":\t" in line)
    assert fields == {"CapEff": "0000000000000000", "NoNewPrivs": "1", "Seccomp": "2"}
    assert result.stdout.splitlines()[-1] != "0"  # not root
    denied = await sandbox.exec("touch /usr/x; ls /var/run/docker.sock", timeout=10)
    assert "Read-only file system" in denied.stderr
    assert "No such file" in denied.stderr


async def test_every_container_the_project_makes_is_hardened(
    client: docker.DockerClient,
) -> None:
    scope = secrets.token_hex(4)
    limits = SandboxLimits(memory_mb=300, pids=70, workspace_mb=20, tmp_mb=10, cpus=0.5)
    sandboxes = Sandboxes(SandboxConfig(pool_size=1, limits=limits), scope=scope)
    target, deployed = DockerTarget(IMAGE), f"harden-{scope}"
    try:
        cold = await sandboxes.for_task("cold")  # no pool yet: made on demand
        await sandboxes.aclose()  # waits for the pool's refill
        pooled = await sandboxes.for_task("pooled")  # claimed from the pool
        await sandboxes.aclose()
        proxied_limits = limits.model_copy(
            update={"network": "proxy", "allow_domains": ("x.test",)}
        )
        proxied = await sandboxes.for_task("proxied", proxied_limits)
        assert len({cold.id, pooled.id, proxied.id}) == 3
        for sandbox, its_limits in ((cold, limits), (pooled, limits), (proxied, proxied_limits)):
            assert_hardened(client.containers.get(sandbox.id), its_limits)
            await assert_confined_inside(sandbox)
        forwarder = client.containers.get(Egress.forwarder_name(proxied.name))
        assert_hardened(forwarder, FORWARDER_LIMITS, forwarder=True)
        command = forwarder.attrs["Config"]["Cmd"]
        assert command[:2] == ["sh", "-c"]
        assert command[2].count("socat ") == 2
        # And whatever else carries the project's label, pool included.
        pool = [c for c in project_containers(client) if (c.name or "").startswith(POOL_PREFIX)]
        assert pool
        for container in pool:
            if container.labels.get("agent.limits") == limits.key():
                assert_hardened(container, limits)
        # And every container of a deployment: the one serving, its egress proxy, the standby,
        # the front.
        for version in ("v1", "v2"):
            spec, built = await spec_of(target, deployed, {"app.py": APP.replace("UNSET", version)})
            spec = replace(spec, egress=("x.test",) if version == "v2" else ())
            await target.deploy(spec, built, f"{deployed}-{version}")
        made = client.containers.list(all=True, filters={"label": f"{DEPLOYMENT}={deployed}"})
        assert len(made) == 4
        assert f"agent-deploy-{deployed}-v2-egress" in {c.name for c in made}
        assert all(c.status == "running" for c in made)
        for container in made:
            assert_service_hardened(container)
    finally:
        await sandboxes.reap(lambda _task: True, pool=True)
        await sandboxes.aclose()
        await target.remove(deployed)


async def test_everything_a_sandbox_makes_names_its_owner(
    client: docker.DockerClient, boxes: Sandboxes
) -> None:
    limits = SMALL.model_copy(update={"network": "proxy", "allow_domains": ("x.test",)})
    sandbox = await boxes.for_task("owned", limits)
    container = client.containers.get(sandbox.id)
    volumes = [
        client.volumes.get(m["Name"]) for m in container.attrs["Mounts"] if m["Type"] == "volume"
    ]
    assert len(volumes) == 2  # the workspace and the control volume
    made = [
        ("container", container.labels),
        ("forwarder", client.containers.get(Egress.forwarder_name(sandbox.name)).labels),
        ("network", client.networks.get(Egress.network_name(sandbox.name)).attrs["Labels"]),
        *((f"volume {v.name}", v.attrs["Labels"]) for v in volumes),
    ]
    for what, labels in made:
        owner = (labels.get(LABEL), labels.get(SCOPE), labels.get(TASK))
        assert owner == ("1", boxes.scope, "owned"), (what, labels)


async def test_a_command_gives_its_output_and_exit_code_and_streams_as_it_runs(
    boxes: Sandboxes,
) -> None:
    sandbox = await boxes.for_task("t")
    chunks: list[tuple[float, str, str]] = []
    started = time.monotonic()
    result = await sandbox.exec(
        "echo first; echo oops >&2; sleep 1; echo second; exit 3",
        timeout=10,
        on_output=lambda stream, text: chunks.append((time.monotonic() - started, stream, text)),
    )
    assert (result.exit_code, result.stdout, result.stderr) == (3, "first\nsecond\n", "oops\n")
    assert not result.ok
    assert result.problem is None
    first = next(t for t, stream, text in chunks if "first" in text)
    assert first < 0.9  # shown while the command still ran
    assert ("stderr", "oops\n") in [(s, t) for _, s, t in chunks]


async def test_a_spinner_that_ignores_sigterm_is_gone_within_timeout_plus_2s(
    boxes: Sandboxes,
) -> None:
    sandbox = await boxes.for_task("t")
    started = time.monotonic()
    # Left running by an earlier command: not this command's, so it is spared.
    await sandbox.exec("nohup sleep 300 >/dev/null 2>&1 &", timeout=10)
    result = await sandbox.exec(
        "trap '' TERM; (trap '' TERM; while :; do :; done) & setsid sh -c 'sleep 300' & "
        # a process that drops the token and leaves the session is caught by when it started
        "setsid env -u AGENT_EXEC sh -c 'trap \"\" TERM; while :; do :; done' >/dev/null 2>&1 & "
        "while :; do :; done",
        timeout=1,
    )
    elapsed = time.monotonic() - started
    assert result.timed_out
    assert elapsed < 1 + 2, elapsed
    assert result.problem is not None
    assert "timed out after 1 s" in result.problem
    left = await sandbox.exec(
        "ps -eo args= | grep -vE '^(ps|grep|sh -c)'", timeout=10, record=False
    )
    assert sorted(left.stdout.splitlines()) == [
        "/sbin/docker-init -- /opt/agent/bin/agent-init",
        "/usr/bin/python3 /opt/agent/bin/agent-init",
        "sleep 300",  # the earlier command's
    ], left

    # A command that tries to stop agent-init first is killed all the same.
    started = time.monotonic()
    stopped = await sandbox.exec(
        "kill -STOP $(pgrep -f 'python3 /opt/agent/bin/agent-init'); sleep 100", timeout=1
    )
    assert stopped.timed_out
    assert "Operation not permitted" in stopped.stderr
    assert time.monotonic() - started < 1 + 2


#: what a command tries against its container's PID 1 and agent-init (root's): kill them all,
#: stop them, trace them
_AT_THE_REAPER = r"""
import ctypes, os, subprocess
reaper = int(subprocess.run(["pgrep", "-f", "python3 /opt/agent/bin/[a]gent-init"],
                            capture_output=True, text=True).stdout.split()[0])
killed = subprocess.run(["pkill", "-9", "-f", "bin/[a]gent-init"], capture_output=True, text=True)
print("pkill", killed.returncode, killed.stderr.strip().splitlines()[-1:])
for pid, name in ((1, "init"), (reaper, "reaper")):
    for sig in (9, 19):
        try:
            os.kill(pid, sig)
            print(name, sig, "sent")
        except OSError as exc:
            print(name, sig, type(exc).__name__)
    libc = ctypes.CDLL(None, use_errno=True)
    print(name, "ptrace", libc.ptrace(16, pid, 0, 0), ctypes.get_errno())
"""


async def test_a_command_cannot_stop_its_container_and_the_workspace_stays(
    boxes: Sandboxes, client: docker.DockerClient
) -> None:
    sandbox = await boxes.for_task("t")
    await sandbox.write_file("notes.txt", b"the task's data")
    tried = await sandbox.exec(["python3", "-c", _AT_THE_REAPER], timeout=30)
    assert tried.stdout.splitlines()[1:] == [
        "init 9 PermissionError",
        "init 19 PermissionError",
        "init ptrace -1 1",  # EPERM
        "reaper 9 PermissionError",
        "reaper 19 PermissionError",
        "reaper ptrace -1 1",
    ], tried
    assert "Operation not permitted" in tried.stdout.splitlines()[0], tried
    # Also as a shell would: every process it may signal.
    await sandbox.exec("kill -9 -1", timeout=10)
    container = client.containers.get(sandbox.id)
    assert container.status == "running"
    assert await sandbox.read_file("notes.txt") == b"the task's data"
    # And agent-init still ends a command that outlives its timeout.
    late = await sandbox.exec("sleep 100", timeout=1)
    assert late.timed_out
    assert (await sandbox.exec("echo fine", timeout=10)).stdout == "fine\n"


async def test_fork_memory_and_disk_bombs_end_as_clear_errors_and_others_stay_responsive(
    boxes: Sandboxes,
) -> None:
    victim, neighbour = await boxes.for_task("bomber"), await boxes.for_task("neighbour")

    async def responsive() -> float:
        started = time.monotonic()
        assert (await neighbour.exec("echo alive", timeout=10)).stdout == "alive\n"
        return time.monotonic() - started

    fork = asyncio.create_task(victim.exec("bash -c ':(){ :|:& };:'", timeout=3))
    await asyncio.sleep(1)
    assert await responsive() < 2.0  # during the fork bomb
    result = await fork
    assert (result.problem or "").startswith("process limit:"), result
    assert "64 processes" in (result.problem or "")

    memory = await victim.exec(
        "python3 -c 'x = bytearray(2 * 10**9); x[::4096] = b\"x\" * len(x[::4096])'", timeout=30
    )
    assert memory.problem == "out of memory: the process was killed at the 256 MiB limit", memory

    disk = await victim.exec("dd if=/dev/zero of=/workspace/fill bs=1M", timeout=30)
    assert (disk.problem or "").startswith("disk full:"), disk
    assert "/workspace holds 32 MiB" in (disk.problem or "")
    assert await responsive() < 2.0
    # The sandbox itself goes on working after each of them.
    assert (await victim.exec("rm /workspace/fill && echo ok", timeout=10)).stdout == "ok\n"


SHELL_BOMB = "b(){ b|b & }; b"
PYTHON_BOMB = "python3 -c 'import os\nwhile True:\n    try: os.fork()\n    except OSError: pass'"


async def test_after_a_fork_bomb_on_a_loaded_machine_the_next_command_runs(
    boxes: Sandboxes,
) -> None:
    """A shell fork bomb whose children outlive it, while another sandbox runs a Python fork
    bomb (the load): each time, the command after it runs, and is not killed with the bomb."""
    victim = await boxes.for_task("victim", SandboxLimits())
    load = await boxes.for_task("load", SandboxLimits())

    async def keep_loaded() -> None:
        while True:
            await load.exec(PYTHON_BOMB, timeout=3)

    loading = asyncio.ensure_future(keep_loaded())
    try:
        for round_ in range(5):
            bomb = await victim.exec(SHELL_BOMB, timeout=3)
            after = await victim.exec("echo next-ok", timeout=30)
            assert (after.exit_code, after.stdout) == (0, "next-ok\n"), (round_, bomb, after)
    finally:
        loading.cancel()
        with contextlib.suppress(asyncio.CancelledError, SandboxError):
            await loading


async def test_fifty_bombs_and_timeouts_leave_no_container_behind(
    client: docker.DockerClient, boxes: Sandboxes
) -> None:
    bombs = [
        ("bash -c ':(){ :|:& };:'", "process limit:"),
        (
            "python3 -c 'x = bytearray(2 * 10**9); x[::4096] = b\"x\" * len(x[::4096])'",
            "out of memory:",
        ),
        ("dd if=/dev/zero of=/workspace/fill bs=1M", "disk full:"),
        ("trap '' TERM; while :; do :; done", "timed out after"),
    ]
    outcomes = []
    for run in range(50):
        command, expected = bombs[run % len(bombs)]
        sandbox = await boxes.for_task(f"run{run}")
        result = await sandbox.exec(command, timeout=1.5)
        outcomes.append((result.problem or "").startswith(expected))
        assert await boxes.release(f"run{run}")
    assert sum(outcomes) >= 48, outcomes  # a fork bomb may, rarely, end as a timeout first
    assert project_containers(client, boxes.scope) == []
    # Their volumes went too: those of this test's scope, whatever else uses the engine.
    assert client.volumes.list(filters={"label": f"{SCOPE}={boxes.scope}"}) == []


async def test_a_sandbox_docker_started_again_says_so_once_and_runs_nothing_that_time(
    boxes: Sandboxes, client: docker.DockerClient
) -> None:
    sandbox = await boxes.for_task("t")
    await sandbox.write_file("notes.txt", b"the task's data")
    await asyncio.to_thread(client.containers.get(sandbox.id).stop, timeout=1)
    # A later runner (its own Sandboxes) finds the container stopped and starts it again.
    later = Sandboxes(boxes.config, scope=boxes.scope)
    try:
        again = await later.for_task("t")
        assert again.id == sandbox.id

        async def opened() -> Sandbox:
            return again

        ctx = ToolContext("t", "call-1", "t/1", sandbox=opened)
        shell = sandbox_tools.get("shell")
        assert shell is not None
        first = await shell.invoke({"command": "echo ran"}, ctx)
        assert not first.ok
        assert first.error_code == "sandbox_restarted"
        assert "not run:" in first.content
        assert "/workspace and /tmp are empty" in first.content
        second = await shell.invoke({"command": "ls; echo ran"}, ctx)
        assert second.ok, second
        assert "ran" in second.content
        assert "notes.txt" not in second.content  # said, because it is so
        # A sandbox that never stopped has nothing to say.
        assert (await later.for_task("t")).take_restart_note() is None
    finally:
        await later.aclose()


async def _lose_track(sandbox: Sandbox, command: str, limit: float, key: str) -> None:
    """Start a command and stop waiting for it, as a runner that crashes does: it goes on."""
    run = asyncio.ensure_future(sandbox.exec(command, timeout=limit, key=key))
    await asyncio.sleep(0.5)
    run.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await run


async def test_a_command_a_runner_lost_track_of_is_read_back_from_its_record(
    boxes: Sandboxes,
) -> None:
    sandbox = await boxes.for_task("t")
    # A fresh sandbox keeps no records: it cannot tell (as after a restart of the container).
    assert await sandbox.recorded("task/1") == "unknown"
    done = await sandbox.exec("echo out; echo err >&2; exit 3", timeout=10, key="task/1")
    again = await sandbox.recorded("task/1")
    assert isinstance(again, ExecResult)
    assert (again.exit_code, again.stdout, again.stderr) == (3, "out\n", "err\n")
    assert (done.exit_code, done.stdout, done.stderr) == (3, "out\n", "err\n")
    assert await sandbox.recorded("task/never") == "not_started"

    # Still running when asked: waited for, then its outcome.
    await _lose_track(sandbox, "sleep 2; echo finished; touch ran-$RANDOM", 30, "task/2")
    finished = await sandbox.recorded("task/2")
    assert isinstance(finished, ExecResult)
    assert (finished.exit_code, finished.stdout, finished.problem) == (0, "finished\n", None)
    assert finished.seconds >= 2

    # Past its timeout: killed, and said so.
    await _lose_track(sandbox, "echo begun; sleep 60; echo never", 1.5, "task/3")
    late = await sandbox.recorded("task/3")
    assert isinstance(late, ExecResult)
    assert late.timed_out
    assert late.stdout == "begun\n"
    assert late.problem is not None
    assert "killed" in late.problem
    left = await sandbox.exec("pgrep -f '[s]leep 60' || echo none", timeout=10, record=False)
    assert left.stdout == "none\n"
    ran = await sandbox.exec("ls", timeout=10, record=False)
    assert ran.stdout.count("ran-") == 1  # the command ran once, and was not run again

    # Old records go: at most 50 finished ones are kept.
    for i in range(55):
        await sandbox.exec("true", timeout=10, key=f"task/many-{i}")
    kept = await sandbox.exec("ls /tmp/.agent-runs/*.status | wc -l", timeout=10, record=False)
    assert 50 <= int(kept.stdout) <= 52, kept.stdout
    assert await sandbox.recorded("task/1") == "not_started"  # among the oldest, gone


async def test_files_go_in_and_out_and_stay_in_the_workspace(boxes: Sandboxes) -> None:
    sandbox = await boxes.for_task("t")
    assert await sandbox.write_file("notes/a.txt", "héllo\n".encode()) == "/workspace/notes/a.txt"
    assert await sandbox.read_file("/workspace/notes/a.txt") == "héllo\n".encode()
    listing = await sandbox.exec("stat -c '%U %s' notes/a.txt", timeout=10)
    assert listing.stdout == "sandbox 7\n"

    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        for name, data in {"pkg/__init__.py": b"", "pkg/mod.py": b"X = 1\n"}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    await sandbox.put_archive("src", archive.getvalue())
    ran = await sandbox.exec("cd src && python3 -c 'import pkg.mod; print(pkg.mod.X)'", timeout=10)
    assert ran.stdout == "1\n"
    with tarfile.open(fileobj=io.BytesIO(await sandbox.get_archive("src/pkg"))) as tar:
        assert sorted(tar.getnames()) == ["pkg", "pkg/__init__.py", "pkg/mod.py"]

    for bad in ("../etc/passwd", "/etc/passwd", "/workspace/../root"):
        with pytest.raises(WorkspaceError) as refused:
            await sandbox.read_file(bad)
        assert refused.value.code == "outside_workspace"
    with pytest.raises(WorkspaceError) as missing:
        await sandbox.read_file("nope.txt")
    assert missing.value.code == "not_found"
    with pytest.raises(WorkspaceError) as big:
        await sandbox.read_file("notes/a.txt", max_bytes=3)
    assert big.value.code == "too_large"
    with pytest.raises(WorkspaceError) as in_the_way:
        await sandbox.write_file("notes/a.txt/b.txt", b"x")
    assert in_the_way.value.code == "not_a_directory"
    await sandbox.exec("head -c 31M /dev/zero > fill", timeout=30)
    with pytest.raises(WorkspaceError) as full:
        await sandbox.write_file("more.bin", b"x" * 2 * 2**20)
    assert full.value.code == "disk_full"
    assert str(full.value).startswith("disk full:")


async def test_the_same_task_gets_the_same_container_with_its_files(boxes: Sandboxes) -> None:
    first = await boxes.for_task("t")
    await first.write_file("kept.txt", b"still here")
    # A new runner (a new Sandboxes object, as after a restart) finds it by the task's name.
    again = Sandboxes(boxes.config, scope=boxes.scope)
    try:
        second = await again.for_task("t")
        assert second.id == first.id
        assert await second.read_file("kept.txt") == b"still here"
    finally:
        await again.aclose()


async def test_the_pool_hands_out_each_container_once_and_never_a_used_one(
    client: docker.DockerClient,
) -> None:
    # Limits of its own, so that no other pool's containers count.
    limits = SandboxLimits(
        memory_mb=200, workspace_mb=64, tmp_mb=16, pids=50 + secrets.randbelow(970)
    )
    config = SandboxConfig(pool_size=3, limits=limits)
    scope = secrets.token_hex(4)
    runners = [Sandboxes(config, scope=scope) for _ in range(3)]
    try:
        assert await runners[0].fill_pool() == 3
        waiting = {
            c.id
            for c in client.containers.list(
                filters={"label": f"agent.limits={config.limits.key()}"}
            )
            if (c.name or "").startswith(POOL_PREFIX)
        }
        # Three runners claim at once, for six tasks: three get pooled containers, none twice.
        got = await asyncio.gather(*(r.for_task(f"task{i}") for i, r in enumerate(runners * 2)))
        ids = [s.id for s in got]
        assert len(set(ids)) == 6
        assert len(waiting & set(ids)) == 3
        for sandbox in got:
            await sandbox.write_file("used.txt", b"x")
        for r in runners:
            await r.aclose()  # refills
        fresh = [
            c
            for c in client.containers.list(
                filters={"label": f"agent.limits={config.limits.key()}"}
            )
            if (c.name or "").startswith(POOL_PREFIX)
        ]
        assert len(fresh) >= 3
        assert not {c.id for c in fresh} & set(ids)
        newcomer = await runners[0].for_task("late")
        assert newcomer.id not in ids
        assert (await newcomer.exec("ls /workspace", timeout=10)).stdout == ""
    finally:
        for r in runners:
            await r.aclose()  # refills first, so that none lands after the cleanup
        await runners[0].reap(lambda _task: True, pool=True)
        await runners[0].aclose()


async def test_a_missing_daemon_or_image_says_what_to_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    no_image = Sandboxes(
        SandboxConfig(pool_size=0, image="agent-sandbox:never-built"), scope=secrets.token_hex(4)
    )
    with pytest.raises(ImageMissing) as missing:
        await no_image.for_task("t")
    assert "agent sandbox build" in str(missing.value)
    await no_image.aclose()

    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    no_daemon = Sandboxes(SandboxConfig(pool_size=0), scope=secrets.token_hex(4))
    with pytest.raises(DockerUnavailable) as down:
        await no_daemon.for_task("t")
    assert "no Docker daemon answers" in str(down.value)
    assert "dockerd" in str(down.value)
    assert "agent doctor" in str(down.value)


def test_limits_leave_the_commands_memory_and_allowlists_are_checked_up_front() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="the workspace and /tmp are held in memory"):
        SandboxLimits(memory_mb=128, workspace_mb=400)
    with pytest.raises(ValidationError, match="not an allowlist entry: 'bad host'"):
        SandboxLimits(network="proxy", allow_domains=("bad host",))
    with pytest.raises(ValidationError, match='allow_domains needs network = "proxy"'):
        SandboxLimits(allow_domains=("pkgs.example.org",))
    ok = SandboxLimits(network="proxy", allow_domains=("*.files.example.org", "127.0.0.1:8080"))
    assert ok.allow_domains == ("*.files.example.org", "127.0.0.1:8080")


async def test_a_write_that_fills_the_disk_leaves_no_file_behind(boxes: Sandboxes) -> None:
    sandbox = await boxes.for_task("full")
    await sandbox.exec("dd if=/dev/zero of=/workspace/fill bs=1M", timeout=30)
    with pytest.raises(WorkspaceError) as full:
        await sandbox.write_file("big.txt", b"y" * 4_000_000)
    assert full.value.code == "disk_full"
    listing = await sandbox.exec("ls /workspace", timeout=10)
    assert listing.stdout.split() == ["fill"]  # no empty file owned by root
    assert (await sandbox.exec("rm fill && echo ok", timeout=10)).stdout == "ok\n"
    assert await sandbox.write_file("big.txt", b"y" * 1000) == "/workspace/big.txt"


async def test_a_reap_removes_volumes_the_daemon_left_behind(
    client: docker.DockerClient, boxes: Sandboxes, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sandbox import manager

    leaked = client.volumes.create(labels=owner_labels(boxes.scope, "gone"))
    unlabelled_owner = client.volumes.create(labels={LABEL: "1"})  # made by an older version
    others = client.volumes.create(labels=owner_labels("another", "theirs"))
    unrelated = client.volumes.create()
    own_network = client.networks.create(
        f"agent-{boxes.scope}-gone-net", internal=True, labels=owner_labels(boxes.scope, "gone")
    )
    other_network = client.networks.create(
        f"agent-{boxes.scope}-other-net", internal=True, labels=owner_labels("another", "theirs")
    )
    try:
        assert f"volume {leaked.name}" not in await boxes.reap(lambda _task: True)  # too new
        monkeypatch.setattr(manager, "VOLUME_GRACE", 0.0)
        await asyncio.sleep(1.1)  # CreatedAt has whole seconds
        removed = await boxes.reap(lambda _task: True)
        assert f"volume {leaked.name}" in removed
        assert f"volume {unlabelled_owner.name}" in removed
        assert own_network.name in removed
        left = [v.name for v in client.volumes.list()]
        assert leaked.name not in left
        # Another runner's are its own to remove, and what is not the project's is left alone.
        assert others.name in left, removed
        assert unrelated.name in left
        assert other_network.name in [n.name for n in client.networks.list()], removed
    finally:
        for leftover in (others, unrelated, other_network):
            leftover.remove()
