"""The model worker, for real: a separate process per model, shared by every runner on the machine,
whose crash (a real SIGSEGV, sent mid-answer) fails a call, never the runner, and whose CPU path
is chosen from the CPU's flags (AMX: no weight repacking).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.backends._cpu import AMX_FLAGS, choose_path, cpu_flags
from agent.backends.base import Delta, Message, ModelRequest
from agent.backends.local import LocalBackend, bundled_model
from agent.events import Attachment, ModelResponded, TaskPaused, TaskResumed
from agent.live import Live, ModelDelta
from agent.runner import Runner
from agent.store import Store
from base.errors import BackendError
from frontends.cli import main
from policies import Gate
from tests.conftest import REPO
from tools import Registry

SAPPHIRE_RAPIDS = (
    "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Platinum 8481C\n"
    "flags\t\t: fpu sse4_2 avx avx2 fma f16c avx512f avx512bw avx512vl avx512_vnni avx512_bf16 "
    "amx_bf16 amx_tile amx_int8 avx_vnni\n\nprocessor\t: 1\n"
)
ZEN3 = "processor\t: 0\nflags\t\t: fpu sse4_2 avx avx2 fma f16c\n"


def hello(text: str = "Say hello.", turn: int = 0) -> ModelRequest:
    return ModelRequest(
        task_id="t",
        purpose="act",
        turn=turn,
        messages=(Message(role="user", content=text),),
        tools=(),
    )


@pytest.fixture
def short_home(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An AGENT_HOME of its own, short enough that the workers' sockets live inside it: the
    workers a test starts are its own, and are stopped after it."""
    home = Path(tempfile.mkdtemp(prefix="ah", dir="/tmp"))
    monkeypatch.setenv("AGENT_HOME", str(home))
    yield home
    for sock in (home / "models").glob("*.sock"):
        for pid in _pids_serving(sock):
            os.kill(pid, signal.SIGKILL)


def _pids_serving(sock: Path) -> list[int]:
    """The processes whose command line names the socket `sock` (its model workers)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"agent.backends.model_worker" in argv and str(sock).encode() in argv:
            pids.append(int(proc.name))
    return pids


def cli_tools() -> Registry:
    """The tools `agent run` offers: every registered source's."""
    registry = Registry()
    registry.load_entry_points()
    return registry


def _rss_kb(pid: int) -> int:
    for row in Path(f"/proc/{pid}/status").read_text().splitlines():
        if row.startswith("VmRSS:"):
            return int(row.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def _gone(pid: int, within: float) -> bool:
    """Whether process `pid` has ended within `within` seconds (a zombie counts as ended)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
        except (OSError, IndexError):
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


# --- the CPU path ----------------------------------------------------------------------------


def test_the_cpu_flags_are_read_from_cpuinfo() -> None:
    assert cpu_flags(SAPPHIRE_RAPIDS) >= AMX_FLAGS
    assert "avx2" in cpu_flags(ZEN3)
    assert cpu_flags("processor\t: 0\n") == frozenset()


def test_a_cpu_with_amx_loads_weights_unrepacked_and_others_repack() -> None:
    amx = choose_path(cpu_flags(SAPPHIRE_RAPIDS))
    assert not amx.repack
    assert "AMX" in amx.reason
    assert "20824" in amx.reason
    assert choose_path(cpu_flags(ZEN3)).repack
    # A setting wins either way.
    assert choose_path(cpu_flags(SAPPHIRE_RAPIDS), repack=True).repack
    assert not choose_path(cpu_flags(ZEN3), repack=False).repack


async def test_a_worker_on_an_amx_cpu_takes_the_safe_path_and_answers(
    short_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(SAPPHIRE_RAPIDS)
    monkeypatch.setenv("AGENT_CPUINFO", str(cpuinfo))  # the worker inherits it
    backend = LocalBackend(bundled_model(), threads=1, max_tokens=16)
    response = await backend.complete(hello())
    assert backend.worker is not None
    assert backend.worker.repack is False
    assert "amx_tile" in backend.worker.path_reason
    assert "amx_tile" in backend.worker.cpu
    assert response.text
    assert response.usage.output_tokens > 0
    await backend.stop_worker()


# --- one worker, shared ----------------------------------------------------------------------

_RUNNER = """
import asyncio, json, sys
from pathlib import Path
from agent.backends.base import Message, ModelRequest
from agent.backends.local import LocalBackend, bundled_model

def rss():
    for row in Path("/proc/self/status").read_text().splitlines():
        if row.startswith("VmRSS:"):
            return int(row.split()[1])

async def main():
    before = rss()
    backend = LocalBackend(bundled_model(), threads=1, max_tokens=8, idle_seconds=60)
    request = ModelRequest(task_id="t", purpose="act", turn=0, tools=(),
                           messages=(Message(role="user", content="Say hello."),))
    response = await backend.complete(request)
    print(json.dumps({"pid": backend.worker.pid, "before": before, "after": rss(),
                      "tokens": response.usage.output_tokens}), flush=True)

asyncio.run(main())
sys.stdin.readline()  # alive, holding what it holds, until the test has measured
"""


def test_two_runners_share_one_worker_and_one_copy_of_the_model(short_home: Path) -> None:
    env = {**os.environ, "AGENT_HOME": str(short_home)}
    runners = [
        subprocess.Popen(
            [sys.executable, "-c", _RUNNER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env=env,
        )
        for _ in range(2)  # started at once: the start lock lets one of them start the worker
    ]
    try:
        reports = []
        for runner in runners:
            assert runner.stdout is not None
            reports.append(json.loads(runner.stdout.readline()))
        (worker,) = {report["pid"] for report in reports}
        (sock,) = (short_home / "models").glob("*.sock")
        assert _pids_serving(sock) == [worker], "one worker process for the model"
        model_kb = bundled_model().stat().st_size // 1024
        # The worker holds the weights (and its KV caches); each runner holds none of them.
        assert _rss_kb(worker) >= 0.8 * model_kb
        for report in reports:
            assert report["tokens"] > 0
            assert report["after"] - report["before"] < 0.25 * model_kb, report
            print(f"runner RSS {report['before']} -> {report['after']} kB; model {model_kb} kB")
        print(f"worker RSS {_rss_kb(worker)} kB")
    finally:
        for runner in runners:
            runner.communicate("\n", timeout=30)


async def test_the_socket_is_this_users_alone(short_home: Path) -> None:
    backend = LocalBackend(bundled_model(), threads=1)
    await backend.load()
    sock = backend.socket_path
    assert sock.parent == short_home / "models"
    assert stat.S_ISSOCK(sock.stat().st_mode)
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700
    await backend.stop_worker()


async def test_an_idle_worker_exits_and_removes_its_socket(short_home: Path) -> None:
    backend = LocalBackend(bundled_model(), threads=1, max_tokens=4, idle_seconds=1)
    await backend.complete(hello())
    assert backend.worker is not None
    pid, sock = backend.worker.pid, backend.socket_path
    assert _gone(pid, within=30), "the worker outlived its idle time"
    assert not sock.exists()
    # The next call starts another.
    await backend.complete(hello())
    assert backend.worker is not None
    assert backend.worker.pid != pid
    await backend.stop_worker()


async def test_a_line_the_worker_cannot_read_is_refused_and_it_stays_up(short_home: Path) -> None:
    backend = LocalBackend(bundled_model(), threads=1, max_tokens=4)
    await backend.load()
    reader, writer = await asyncio.open_unix_connection(str(backend.socket_path))
    writer.write(b'{"op": "complete", "request": "not a request"}\n')
    await writer.drain()
    reply = json.loads(await reader.readline())
    writer.close()
    assert reply["kind"] == "failed"
    assert reply["code"] == "bad_request"
    assert (await backend.complete(hello())).usage.output_tokens > 0
    await backend.stop_worker()


# --- the KV-cache slots ----------------------------------------------------------------------


async def test_a_planner_and_an_executor_keep_their_own_prefix(short_home: Path) -> None:
    backend = LocalBackend(bundled_model(), threads=1, max_tokens=4)
    planner = "You plan tasks as numbered steps. " * 20
    executor = "You carry out one step with a tool. " * 20

    def ask(system: str, turn: int) -> ModelRequest:
        messages = (
            Message(role="system", content=system),
            Message(role="user", content=f"Task number {turn}."),
        )
        return ModelRequest(task_id="t", purpose="act", turn=turn, messages=messages, tools=())

    await backend.complete(ask(planner, 1))
    await backend.complete(ask(executor, 2))
    await backend.complete(ask(planner, 3))
    assert backend.last is not None
    # The planner's system prompt was still cached after the executor's call.
    assert backend.last.reused_tokens > 0.8 * backend.last.prompt_tokens - 10
    await backend.complete(ask(executor, 4))
    assert backend.last.reused_tokens > 0.8 * backend.last.prompt_tokens - 10
    await backend.stop_worker()


async def test_with_one_slot_they_evict_each_other(short_home: Path) -> None:
    # The positive control of the test above: its probe can see an eviction.
    backend = LocalBackend(bundled_model(), threads=1, max_tokens=4, slots=1)
    first = (Message(role="system", content="You plan tasks as numbered steps. " * 20),)
    other = (Message(role="system", content="You carry out one step with a tool. " * 20),)
    for turn, messages in enumerate((first, other, first)):
        request = ModelRequest(task_id="t", purpose="act", turn=turn, messages=messages, tools=())
        await backend.complete(request)
    assert backend.last is not None
    assert backend.last.reused_tokens < 10
    await backend.stop_worker()


# --- crashes ---------------------------------------------------------------------------------


async def test_a_worker_killed_mid_answer_is_replaced_and_the_call_answered(
    short_home: Path,
) -> None:
    retries: list[BackendError] = []
    backend = LocalBackend(
        bundled_model(),
        threads=1,
        max_tokens=48,
        on_retry=lambda error, _attempt, _wait: retries.append(error),
    )
    await backend.load()
    assert backend.worker is not None
    first = backend.worker.pid
    pieces: list[Delta] = []

    def crash_once(delta: Delta) -> None:
        pieces.append(delta)
        if len(pieces) == 3:
            os.kill(first, signal.SIGSEGV)  # a real segfault's signal, mid-generation

    response = await backend.complete(hello("Tell me about lighthouses."), on_delta=crash_once)

    assert len(pieces) > 3, "the answer went on after the crash"
    (crash,) = retries
    assert crash.code == "worker_crashed"
    assert crash.retryable
    assert "SIGSEGV" in str(crash), str(crash)
    assert backend.worker is not None
    assert backend.worker.pid != first
    assert response.text
    assert response.usage.output_tokens > 0
    await backend.stop_worker()


async def test_a_task_whose_worker_keeps_crashing_pauses_and_resumes_without_asking_twice(
    short_home: Path,
) -> None:
    seed = random.randrange(2**32)
    print(f"seed {seed}")
    rng = random.Random(seed)
    backend = LocalBackend(bundled_model(), threads=1)
    kills: list[int] = []
    crash_after = rng.randint(1, 6)
    seen = 0

    def crash_twice(item: Live) -> None:
        if not isinstance(item, ModelDelta):
            return
        nonlocal seen
        seen += 1
        if len(kills) < 2 and seen >= crash_after and backend.worker is not None:
            pid = backend.worker.pid
            if pid not in kills:
                kills.append(pid)
                os.kill(pid, signal.SIGSEGV)
                seen = 0

    notes = (REPO / "examples" / "notes" / "meeting.txt").read_text()
    with Store.open(short_home / "events.db") as store:
        runner = Runner(store, cli_tools(), Gate.default(), planner=backend)
        runner.subscribe(crash_twice)
        task_id = runner.create(
            "What should I bring to the team meeting?",
            files=(Attachment(name="meeting.txt", content=notes),),
            plan=False,  # as `agent run` does on the bundled model, which cannot plan
        )
        state = await runner.run(task_id)

        # Both crashes landed mid-answer, on two workers; the runner (this process) is up.
        assert len(set(kills)) == 2
        assert state.status == "paused"
        pauses = [e.event for e in store.events(task_id) if isinstance(e.event, TaskPaused)]
        assert pauses[-1].reason == "model_error"
        assert "worker_crashed" in pauses[-1].detail
        assert "SIGSEGV" in pauses[-1].detail
        answered_before = sum(isinstance(e.event, ModelResponded) for e in store.events(task_id))

        # Resumed, on a fresh worker that nobody kills.
        calm = Runner(store, cli_tools(), Gate.default(), planner=backend)
        state = await calm.resume(task_id)
        assert state.status == "done", state
        events = [e.event for e in store.events(task_id)]
        resumed_at = max(i for i, e in enumerate(events) if isinstance(e, TaskResumed))
        answered_after = sum(isinstance(e, ModelResponded) for e in events[resumed_at:])
        assert backend.worker is not None
        assert backend.worker.pid not in kills
        info = await backend._ask_info()
        # Every call the fresh worker answered was recorded: none was asked again.
        assert info.answered == answered_after > 0
        assert answered_before + answered_after == sum(
            isinstance(e, ModelResponded) for e in events
        )
    await backend.stop_worker()


def test_doctor_reports_the_cpu_path_and_runs_a_self_test(
    short_home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(SAPPHIRE_RAPIDS)
    monkeypatch.setenv("AGENT_CPUINFO", str(cpuinfo))
    monkeypatch.setenv("AGENT_MODEL", "local:bundled")
    main(["doctor", "--json"])
    checks = {c["name"]: c for c in json.loads(capsys.readouterr().out)}
    assert checks["model"]["ok"], checks["model"]
    assert "SmolLM2" in checks["model"]["detail"] or "Smollm2" in checks["model"]["detail"]
    cpu = checks["cpu"]["detail"]
    assert "amx_tile" in cpu
    assert "weight repacking off" in cpu
    assert "llama.cpp uses: CPU :" in cpu
    assert checks["self-test"]["ok"], checks["self-test"]
    assert "tokens in" in checks["self-test"]["detail"]
