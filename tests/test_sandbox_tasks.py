"""Tasks that use the sandbox, end to end: the tools through the runner and the CLI, a runner
killed mid-task, leftovers reaped, and a missing daemon or image said plainly."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import docker
import pytest

from agent.events import Limits, TaskCreated, TaskFinished, ToolResulted
from agent.live import CommandOutput, Live
from agent.runner import Runner
from agent.state import TaskState
from agent.store import Store
from frontends.cli import main
from policies import Gate
from sandbox.limits import SandboxConfig, SandboxLimits
from sandbox.manager import Sandboxes, store_scope
from tools import Registry
from tools.sandboxed import registry as sandbox_tools

from .conftest import REPO, scripted, tool_results, write_script

CONFIG = """
[sandbox]
pool_size = 0
[sandbox.limits]
memory_mb = 256
pids = 64
workspace_mb = 32
[sandbox.max]
memory_mb = 512
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(CONFIG)
    return path


def _containers(store_path: Path) -> list[Any]:
    prefix = f"agent-{store_scope(store_path)}-"
    found = docker.from_env().containers.list(
        all=True, filters={"label": "agent.sandbox=1"}, ignore_removed=True
    )  # another test's container may go between the listing and its inspection
    return [c for c in found if (c.name or "").startswith(prefix)]


async def _run_task(store: Store, task: str, turns: list[Any]) -> tuple[str, TaskState]:
    """Run `task` on the sandbox tools and the default policy, scripted by `turns`."""
    sandboxes = Sandboxes(SandboxConfig(pool_size=0), scope=store_scope(store.path))
    runner = Runner(
        store, Registry(sandbox_tools), Gate.default(), planner=scripted(turns), sandboxes=sandboxes
    )
    task_id = runner.create(task)
    try:
        return task_id, await runner.run(task_id)
    finally:
        await sandboxes.aclose()


async def test_a_task_uses_every_sandbox_tool_and_its_container_goes_when_it_ends(
    store: Store,
) -> None:
    turns = [
        {"plan": ["Write the program", "Run and fix it", "Report"]},
        {"tool": "write_file", "args": {"path": "app/main.py", "content": "print(1 + 1)\n"}},
        {"done": "written"},
        {"tool": "shell", "args": {"command": "cd app && python3 main.py && echo to-stderr >&2"}},
        {"tool": "patch_file", "args": {"path": "app/main.py", "old": "1 + 1", "new": "6 * 7"}},
        {"tool": "python", "args": {"file": "app/main.py"}},
        {"done": "fixed"},
        {"tool": "list_files", "args": {"path": "."}},
        {"tool": "read_file", "args": {"path": "app/main.py"}},
        {"done": "the program prints 42"},
    ]
    sandboxes = Sandboxes(
        SandboxConfig(pool_size=0, limits=SandboxLimits(memory_mb=256, workspace_mb=64)),
        scope=store_scope(store.path),
    )
    runner = Runner(
        store, Registry(sandbox_tools), Gate.default(), planner=scripted(turns), sandboxes=sandboxes
    )
    streamed: list[tuple[str, str]] = []

    def keep(item: Live) -> None:
        if isinstance(item, CommandOutput):
            streamed.append((item.stream, item.text))

    runner.subscribe(keep)
    task_id = runner.create("write a program that prints 42")
    state = await runner.run(task_id)
    await sandboxes.aclose()

    assert state.status == "done", state.pause
    results = [r.content for r in tool_results(store, task_id)]
    assert results[0] == "wrote 13 bytes to /workspace/app/main.py"
    assert "stdout:\n2\n" in results[1]
    assert "stderr:\nto-stderr\n" in results[1]
    assert results[2] == "replaced 1 occurrence in app/main.py"
    assert "stdout:\n42\n" in results[3]
    assert "app/\napp/main.py 13\n" in results[4]
    assert results[5] == "print(6 * 7)\n"
    assert ("stdout", "2\n") in streamed
    assert ("stderr", "to-stderr\n") in streamed
    assert _containers(store.path) == []


async def test_a_write_through_a_link_out_of_the_workspace_is_an_error_the_model_reads(
    store: Store,
) -> None:
    turns = [
        {"plan": ["Write"]},
        {"tool": "shell", "args": {"command": "ln -s / root && ln -s /home/sandbox home"}},
        {"tool": "write_file", "args": {"path": "root/x.txt", "content": "x"}},
        {"tool": "write_file", "args": {"path": "home/x.txt", "content": "x"}},
        {"tool": "write_file", "args": {"path": "ok.txt", "content": "x"}},
        {"done": "tried"},
    ]
    task_id, state = await _run_task(store, "write files", turns)

    assert state.status == "done", state.pause  # not paused with Docker's 500
    results = tool_results(store, task_id)
    assert [r.ok for r in results] == [True, False, False, True]
    assert "root leads to / (through a symbolic link)" in results[1].content
    assert "home leads to /home/sandbox" in results[2].content
    assert results[3].content == "wrote 1 bytes to /workspace/ok.txt"


async def test_a_bomb_is_an_observation_the_task_goes_on(store: Store) -> None:
    turns = [
        {"plan": ["Try it"]},
        # The bomb ends by itself once its forks are refused (well under a second on an idle
        # machine); the timeout is only a backstop, wide enough for a loaded one, where a 3 s
        # timeout caught the bomb still running (then the code is `command_timeout`).
        {"tool": "shell", "args": {"command": "bash -c ':(){ :|:& };:'", "timeout": 60}},
        {"tool": "shell", "args": {"command": "echo still here"}},
        {"done": "the sandbox survived"},
    ]
    sandboxes = Sandboxes(
        SandboxConfig(pool_size=0, limits=SandboxLimits(pids=64)), scope=store_scope(store.path)
    )
    runner = Runner(
        store, Registry(sandbox_tools), Gate.default(), planner=scripted(turns), sandboxes=sandboxes
    )
    task_id = runner.create("fork")
    state = await runner.run(task_id)
    await sandboxes.aclose()
    assert state.status == "done"
    bomb, after = tool_results(store, task_id)
    assert not bomb.ok
    assert bomb.error_code == "resource_limit"
    assert bomb.content.startswith("process limit: the command tried to run more than 64")
    assert after.ok
    assert "still here" in after.content


def test_kill_9_mid_command_resumes_in_the_same_container_and_tells_what_the_command_did(
    home: Path, tmp_path: Path, config: Path
) -> None:
    """A runner killed while a command runs: the command goes on in the sandbox. The next runner
    reads what it did from the sandbox's record (waiting for it to end) and tells the model,
    with no reviewer asked and the command not run again."""
    script = write_script(
        tmp_path / "s.json",
        [
            {"plan": ["Write", "Wait", "Read"]},
            {"tool": "write_file", "args": {"path": "state.txt", "content": "written before"}},
            {"done": "written"},
            {"tool": "shell", "args": {"command": "sleep 4; hostname >> waited.txt; echo slept"}},
            {"done": "waited"},
            {"tool": "shell", "args": {"command": "cat state.txt waited.txt"}},
            {"done": "read"},
        ],
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    base = [sys.executable, "-m", "frontends.cli"]
    flags = ["--config", str(config), "--json", "--no-prompt"]
    runner = subprocess.Popen(
        [*base, "run", "write, wait, read", "--model", f"scripted:{script}", *flags],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    store_path = home / "events.db"
    container = _when_running(store_path, "sleep 4")
    runner.send_signal(signal.SIGKILL)
    runner.communicate()

    [left] = _containers(store_path)  # the task's container outlives its runner, files and all
    assert left.id == container.id
    assert left.exec_run(["cat", "/workspace/state.txt"]).output == b"written before"
    # The probe can see a command still running: the one the killed runner started is.
    assert "sleep 4" in left.exec_run(["ps", "-eo", "args"]).output.decode()

    with Store.open(store_path) as store:
        [row] = store.tasks()
    resumed = subprocess.run(
        [*base, "resume", row.id, *flags],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert resumed.returncode == 0, resumed.stderr  # no reviewer asked
    with Store.open(store_path) as store:
        results = tool_results(store, row.id)
        kinds = [e.event.kind for e in store.events(row.id)]
    assert "approval_requested" not in kinds
    waited, read = results[-2], results[-1]
    assert waited.recovery == "reconciled"  # the recovery path ran
    assert waited.ok
    assert "read back from the sandbox" in waited.content
    assert "exit code 0" in waited.content
    assert "slept" in waited.content
    assert read.content.count("sandbox") == 1, read.content  # waited.txt: written once
    assert "written before" in read.content
    assert _containers(store_path) == []  # the task is over: its container is gone


def _when_running(store_path: Path, command: str) -> Any:
    """The task's container, once `command` runs in it."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = _containers(store_path) if store_path.exists() else []
        if found and found[0].status == "running":
            top = found[0].exec_run(["ps", "-eo", "args"]).output.decode()
            if command in top:
                return found[0]
        time.sleep(0.1)
    raise AssertionError(f"{command!r} did not start within 60 s")


def test_a_missing_image_or_daemon_pauses_the_task_with_what_to_run(
    home: Path,
    tmp_path: Path,
    config: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run_true = {"tool": "shell", "args": {"command": "true"}}
    script = [{"plan": ["Run"]}, run_true, run_true, {"done": "ok"}]
    no_image = tmp_path / "no-image.toml"
    no_image.write_text(CONFIG.replace("[sandbox]\n", '[sandbox]\nimage = "agent-sandbox:never"\n'))
    model = f"scripted:{write_script(tmp_path / 's.json', script)}"
    code = main(["run", "use the shell", "--model", model, "--config", str(no_image), "--json"])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 4
    assert out["status"] == "paused"
    assert out["pause_reason"] == "sandbox_error"
    assert "agent sandbox build" in out["reason"]
    with Store.open(home / "events.db") as store:
        [failed] = [e.event for e in store.events(out["task_id"]) if e.event.kind == "tool_result"]
    assert isinstance(failed, ToolResulted)
    assert failed.error_code == "image_missing"
    assert failed.content.startswith("not run: ")

    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    code = main(["resume", out["task_id"], "--config", str(config), "--json"])
    captured = capsys.readouterr()
    again = json.loads(captured.out.strip().splitlines()[-1])
    assert code == 4
    assert "no Docker daemon answers" in again["reason"]
    assert "Traceback" not in captured.err

    assert main(["doctor", "--config", str(config)]) == 1
    report = capsys.readouterr().out
    assert "FAIL docker: no Docker daemon answers" in report
    assert "to fix: start the Docker daemon" in report


def test_doctor_passes_on_a_working_setup(
    home: Path, config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AGENT_MODEL", f"scripted:{REPO / 'examples' / 'quickstart.json'}")
    assert main(["doctor", "--config", str(config), "--json"]) == 0
    checks = {c["name"]: c for c in json.loads(capsys.readouterr().out)}
    assert set(checks) == {"docker", "image", "chromium", "model", "tools", "secrets", "store"}
    assert all(c["ok"] for c in checks.values()), checks
    assert checks["chromium"]["detail"].startswith("Chromium ")


def test_leftovers_of_finished_tasks_are_reaped_and_running_ones_kept(
    home: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with Store.open(home / "events.db") as store:
        done = store.create_task(TaskCreated(task="done", model="scripted:x", limits=Limits()))
        store.append(done, [TaskFinished(answer="ok")])
        live = store.create_task(TaskCreated(task="live", model="scripted:x", limits=Limits()))
        sandboxes = Sandboxes(SandboxConfig(pool_size=0), scope=store_scope(store.path))

    async def leave_behind() -> None:
        # As runners that crashed before removing them leave them; one is of a task this store
        # does not have.
        for task_id in (done, live, "deadbeef"):
            await sandboxes.for_task(task_id)
        await sandboxes.aclose()

    asyncio.run(leave_behind())
    assert len(_containers(home / "events.db")) == 3
    assert main(["sandbox", "prune", "--config", str(config), "--json"]) == 0
    removed = json.loads(capsys.readouterr().out)["removed"]
    removed = [r for r in removed if not r.startswith("volume ")]  # any a daemon left before
    assert sorted(removed) == sorted(sandboxes.name_of(t) for t in (done, "deadbeef"))
    [kept] = _containers(home / "events.db")
    assert kept.name == sandboxes.name_of(live)
    kept.remove(force=True, v=True)


def test_per_task_limits_are_recorded_and_held_to_the_operators_bounds(
    home: Path, tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = [
        {"plan": ["Look"]},
        {"tool": "shell", "args": {"command": "cat /sys/fs/cgroup/memory/memory.limit_in_bytes"}},
        {"done": "seen"},
    ]
    model = f"scripted:{write_script(tmp_path / 's.json', script)}"
    args = ["run", "look", "--model", model, "--config", str(config), "--json"]
    assert main([*args, "--memory", "300"]) == 0
    task_id = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["task_id"]
    with Store.open(home / "events.db") as store:
        events = [e.event for e in store.events(task_id)]
    created = events[0]
    assert created.kind == "task_created"
    assert created.sandbox is not None
    assert created.sandbox.memory_mb == 300
    assert created.sandbox.pids == 64  # the rest from agent.toml
    [result] = [e for e in events if isinstance(e, ToolResulted)]
    assert str(300 * 2**20) in result.content

    assert main([*args, "--memory", "4096"]) == 2
    err = capsys.readouterr().err
    assert "memory_mb 4096 is above the bound of 512" in err
    assert main([*args, "--pids", "3"]) == 2
    assert "--pids: Input should be greater than or equal to 16" in capsys.readouterr().err


def test_the_sandbox_example_runs_as_the_readme_says(
    home: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = f"scripted:{REPO / 'examples' / 'sandbox_demo.json'}"
    args = ["run", "Find the primes below 50", "--model", model, "--config", str(config)]
    assert main([*args, "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["status"] == "done"
    assert out["answer"].startswith("The primes below 50: 2, 3, 5, 7")
    # In a terminal the command's output shows as it comes, and is not repeated after.
    assert main(args) == 0
    screen = capsys.readouterr().out
    assert screen.count("[2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47]") == 2
    assert "← exit code 0" in screen


def test_a_bad_allowed_domain_is_refused_before_anything_runs(
    home: Path, tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = f"scripted:{REPO / 'examples' / 'sandbox_demo.json'}"
    args = ["run", "x", "--model", model, "--config", str(config), "--allow-domain", "bad host"]
    assert main(args) == 2
    assert "--allow-domain: not an allowlist entry: 'bad host'" in capsys.readouterr().err
    with Store.open(home / "events.db") as store:
        assert store.tasks() == []


async def test_patching_a_file_that_is_not_text_is_the_models_to_correct(store: Store) -> None:
    turns = [
        {"plan": ["Edit"]},
        {"tool": "shell", "args": {"command": "printf '\\377\\376abc' > blob.bin"}},
        {"tool": "patch_file", "args": {"path": "blob.bin", "old": "abc", "new": "xyz"}},
        {"tool": "list_files", "args": {"path": "no/such/folder"}},
        {"done": "could not"},
    ]
    task_id, state = await _run_task(store, "edit a binary file", turns)
    assert state.status == "done", state.pause
    _, patched, listed = tool_results(store, task_id)
    assert (patched.ok, patched.error_code) == (False, "not_text")
    assert (listed.ok, listed.error_code) == (False, "not_found")
    assert "no such folder" in listed.content
