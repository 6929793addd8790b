"""`map_documents`: every passage indexed goes to the model in parts of bounded size, in bounded
parallel calls, each part's notes kept as an artifact, then combined with their citations; the
calls are counted against the task's budget (and work it cannot pay for refused before the
first); a run again asks only for the parts it has no notes for; a model that cannot be reached
pauses the task; the bundled local model does the whole of it for real."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from agent.backends.base import DeltaSink, ModelBackend, ModelRequest, ModelResponse, Usage
from agent.backends.local import LocalBackend, bundled_model
from agent.backends.scripted import ScriptedBackend, parse_script
from agent.events import ModelResponded, TaskPaused
from agent.runner import Runner
from agent.state import TaskState
from agent.store import Store
from base.errors import BackendError, ErrorCode
from documents.index import Index
from frontends.cli import main
from policies import Gate
from tools.asking import Allowance
from tools.mapping import (
    SOURCES,
    Part,
    cited_part,
    map_documents,
    note_name,
    packed,
    part_room,
    plan,
    reduce_calls,
)
from tools.registry import Registry
from tools.secrets import Secret, Secrets

from .conftest import ALLOW_ALL, run_limits, tool_results

INSTRUCTION = "List each harbour and the hour its boats leave."
#: what a task with no limit may spend, for a plan's figures
FREE_LEFT = Allowance(None, None, 0.0, 0.0)
#: the window the scripted model says it has: small, so a few files make several parts
WINDOW = 2048
#: tokens a part's call reads, where a test says
PART_USAGE = 100


def harbours(folder: Path, count: int = 6) -> Path:
    """`count` files of notes on harbours, about 2,000 characters each."""
    folder.mkdir(parents=True, exist_ok=True)
    for n in range(count):
        body = "\n\n".join(
            f"Quay {q} of harbour {n} is kept by the port authority and its fishing boats."
            for q in range(20)
        )
        leave = f"Boats leave harbour {n} at {5 + n} o'clock."
        (folder / f"harbour-{n}.md").write_text(f"# Harbour {n}\n\n{leave}\n\n{body}\n")
    return folder


def indexed(home: Path, docs: Path) -> Index:
    index = Index.open(home / "index")
    index.add([docs])
    return index


class Watched(ModelBackend):
    """A model at the backend seam: the script's answers, after a pause, counting how many calls
    are under way at once; a call with no tools (a tool's own) fails when `fail_tools_calls`,
    or once `fail_after` of them were answered."""

    def __init__(self, script: ScriptedBackend, *, fail_tools_calls: bool = False) -> None:
        self.script, self.fail = script, fail_tools_calls
        self.name, self.context_window = "watched", WINDOW
        self.now = self.most = self.answered = 0
        #: how many tool calls answer before the rest fail (None: all answer)
        self.fail_after: int | None = None
        #: how long each call takes, in seconds, in turn
        self.delays = [0.02]
        self._made = 0
        #: the tools' own calls begun (a call cancelled half way is not in the script's requests)
        self.begun = 0

    async def complete(
        self, request: ModelRequest, *, on_delta: DeltaSink | None = None
    ) -> ModelResponse:
        failing = self.fail or (self.fail_after is not None and self.answered >= self.fail_after)
        if failing and not request.tools:
            raise BackendError(
                "the server went away", code=ErrorCode.CONNECTION_FAILED, retryable=True
            )
        self.answered += 0 if request.tools else 1
        self.begun += 0 if request.tools else 1
        self.now += 1
        self.most = max(self.most, self.now)
        try:
            self._made += 1
            await asyncio.sleep(self.delays[self._made % len(self.delays)])
            return await self.script.complete(request, on_delta=on_delta)
        finally:
            self.now -= 1


def runner_of(store: Store, backend: ModelBackend) -> Runner:
    return Runner(
        store,
        Registry([map_documents]),
        Gate.from_text(ALLOW_ALL, source="test-policy.toml"),
        planner=backend,
    )


def script(parts: int, rounds: list[int], answer: str, **args: object) -> list[dict[str, object]]:
    """The executor calls map_documents; the model's notes for each part (the second part holds
    nothing); the combining rounds; the task's answer."""
    turns: list[dict[str, object]] = [
        {"tool": "map_documents", "args": {"instruction": INSTRUCTION, **args}}
    ]
    turns += [
        {"text": "NOTHING" if n == 1 else f"harbour notes {n} [cite: harbour-{n}.md:1-17]"}
        for n in range(parts)
    ]
    turns += [{"text": f"combined {r}"} for r in range(sum(rounds) - 1)]
    turns += [{"text": answer}] if rounds else []  # one note: no call combines it
    turns += [{"answer": answer}]
    return turns


def counted(store: Store, task_id: str, tools: Usage) -> tuple[TaskState, int]:
    """The task's state, having checked that its tokens are its own calls' and the tool's
    `tools`; and how many calls of its own it made."""
    state = TaskState.from_store(store, task_id)
    responded = [e.event for e in store.events(task_id) if isinstance(e.event, ModelResponded)]
    own = sum(r.response.usage.total for r in responded)
    assert state.input_tokens + state.output_tokens == own + tools.total
    return state, len(responded)


def work(home: Path, docs: Path) -> tuple[int, list[int]]:
    """How many parts the harbours make for the scripted model, and its combining rounds."""
    with indexed(home, docs) as index:
        parts = len(packed(index.passages(), part_room(WINDOW, INSTRUCTION)))
    return parts, reduce_calls(parts - 1, part_room(WINDOW, INSTRUCTION))


async def test_every_part_is_read_in_bounded_calls_kept_combined_and_counted(
    store: Store, home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parts, rounds = work(home, harbours(tmp_path / "docs"))
    assert parts >= 4
    assert len(rounds) >= 2
    with indexed(home, tmp_path / "docs") as index:
        cites = [index.passages(f"harbour-{n}.md")[0].cite for n in (0, 4)]
    answer = f"Harbour 0 at five [cite: {cites[0]}]; harbour 4 at nine [cite: {cites[1]}]"
    backend = Watched(ScriptedBackend(parse_script(script(parts, rounds, answer, parallel=2))))
    runner = runner_of(store, backend)
    task_id = runner.create("when do the boats leave?", plan=False)

    assert (await runner.run(task_id)).status == "done"
    assert backend.most == 2  # the parts were read two at a time, as asked
    (result,) = tool_results(store, task_id)
    assert result.ok, result.content
    # Where the cited passages are comes first, before anything the model wrote.
    head, _, rest = result.content.partition("\n---\n\n")
    assert head.startswith(SOURCES)
    assert rest.startswith(answer)
    assert f"in {parts} parts ({parts + sum(rounds)} model calls, 0 parts' notes" in result.content
    # Each part's notes, kept under its own name; the empty part's too (so it is not asked again).
    notes = [n for n in runner.artifacts(task_id).names() if n.startswith("map-")]
    assert len(notes) == parts
    assert any(b"harbour notes 0" in runner.artifacts(task_id).read(n) for n in notes)
    # The calls count against the task's budget as its own calls do.
    assert result.model_turns == parts + sum(rounds)
    assert result.model_usage is not None
    assert result.model_usage.input_tokens > 0
    state, own = counted(store, task_id, result.model_usage)
    assert state.turns == own + parts + sum(rounds)
    # The reduce saw only the notes of parts that held something.
    told = [m.content for r in backend.script.requests if not r.tools for m in r.messages]
    assert not any("[part 2]\nNOTHING" in t for t in told)
    # Its answer's citations are the task's: `agent show` lists where they are.
    assert main(["show", task_id]) == 0
    listed = " ".join(capsys.readouterr().out.split()).split("Citations")[1].replace(" ", "")
    for n, cite in zip((0, 4), cites, strict=True):
        assert f"[cite:{cite}]{tmp_path / 'docs' / f'harbour-{n}.md'}" in listed


async def test_one_parts_notes_are_the_answer_with_no_call_to_combine_them(
    store: Store, home: Path, tmp_path: Path
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "harbour-0.md").write_text("# Harbour 0\n\nBoats leave harbour 0 at five.\n")
    parts, rounds = work(home, docs)
    assert (parts, rounds) == (1, [])
    note = "Harbour 0: boats leave at five [cite: harbour-0.md:1-5]"
    turns: list[dict[str, object]] = [
        {"tool": "map_documents", "args": {"instruction": INSTRUCTION}},
        {"text": note},
        {"answer": "at five"},
    ]
    backend = Watched(ScriptedBackend(parse_script(turns)))
    runner = runner_of(store, backend)
    with indexed(home, tmp_path / "docs") as index:
        room = part_room(WINDOW, INSTRUCTION)
        said = plan(packed(index.passages(), room), INSTRUCTION, room, FREE_LEFT)
    assert (said.map_calls, said.reduce_calls) == (1, 0)
    task_id = runner.create("boats?", plan=False)

    assert (await runner.run(task_id)).status == "done"
    (result,) = tool_results(store, task_id)
    assert result.ok, result.content
    assert note in result.content
    assert "in 1 part (1 model call, 0 parts' notes" in result.content
    assert result.model_turns == 1
    assert len([r for r in backend.script.requests if not r.tools]) == 1


async def test_work_the_budget_cannot_pay_for_is_refused_before_any_call(
    store: Store, home: Path, tmp_path: Path
) -> None:
    harbours(tmp_path / "docs")
    room = part_room(WINDOW, INSTRUCTION)
    with indexed(home, tmp_path / "docs") as index:
        work = plan(packed(index.passages(), room), INSTRUCTION, room, Allowance(None, None, 0, 0))
    cheap = {"input_tokens": 10, "output_tokens": 10}
    turns = [
        {"tool": "map_documents", "args": {"instruction": INSTRUCTION, "estimate_only": True}},
        {"tool": "map_documents", "args": {"instruction": INSTRUCTION}, "usage": cheap},
        {"answer": "too big", "usage": cheap},
    ]
    turns[0]["usage"] = cheap
    backend = Watched(ScriptedBackend(parse_script(turns)))
    runner = runner_of(store, backend)
    # Enough for the executor's own three calls; after two of them, 20 tokens short of the work.
    task_id = runner.create("boats?", run_limits(max_tokens=work.tokens + 20), plan=False)

    assert (await runner.run(task_id)).status == "done"
    estimate, refused = tool_results(store, task_id)
    assert estimate.ok, estimate.content
    assert f"would take {work.calls} model calls" in estimate.content
    assert f"at most about {work.tokens:,} tokens" in estimate.content
    assert not refused.ok
    assert refused.content.startswith("not started: mapping over ")
    assert f"and the task has {work.tokens - 20:,} tokens left" in refused.content
    assert all(r.tools for r in backend.script.requests)  # no call but the executor's own
    assert estimate.model_turns == refused.model_turns == 0


async def test_a_part_already_read_is_not_asked_again(
    store: Store, home: Path, tmp_path: Path
) -> None:
    parts, rounds = work(home, harbours(tmp_path / "docs"))
    first = script(parts, rounds, "first answer")[:-1]
    # The same work again: the parts' turns are reserved but never asked (their notes are
    # kept); only the combining is asked again.
    again = [first[0], *({"text": "never asked"} for _ in range(parts))]
    again += [{"text": f"again {r}"} for r in range(sum(rounds) - 1)]
    again += [{"text": "second answer"}, {"answer": "done"}]
    backend = Watched(ScriptedBackend(parse_script(first + again)))
    runner = runner_of(store, backend)
    task_id = runner.create("boats?", plan=False)

    assert (await runner.run(task_id)).status == "done"
    one, two = tool_results(store, task_id)
    assert "---\n\nfirst answer" in one.content
    assert "---\n\nsecond answer" in two.content
    assert f"{parts} parts' notes kept from before" in two.content
    asked = [r.turn for r in backend.script.requests if not r.tools]
    assert len(asked) == parts + 2 * sum(rounds)
    assert two.model_usage is not None
    assert one.model_usage is not None
    assert two.model_usage.total < one.model_usage.total


async def test_a_model_that_cannot_be_reached_pauses_the_task(
    store: Store, home: Path, tmp_path: Path
) -> None:
    parts, rounds = work(home, harbours(tmp_path / "docs"))
    backend = Watched(
        ScriptedBackend(parse_script(script(parts, rounds, "never"))), fail_tools_calls=True
    )
    runner = runner_of(store, backend)
    task_id = runner.create("boats?", plan=False)

    assert (await runner.run(task_id)).status == "paused"
    paused = [e.event for e in store.events(task_id) if isinstance(e.event, TaskPaused)]
    assert paused[-1].reason == "model_error"
    assert "the server went away" in paused[-1].detail
    assert tool_results(store, task_id) == []  # the call is unresolved: a resume runs it


async def test_what_the_calls_took_before_a_pause_counts_against_the_budget(
    store: Store, home: Path, tmp_path: Path
) -> None:
    parts, rounds = work(home, harbours(tmp_path / "docs"))
    backend = Watched(ScriptedBackend(parse_script(script(parts, rounds, "never"))))
    backend.fail_after = parts  # every part read, then the combining fails
    runner = runner_of(store, backend)
    task_id = runner.create("boats?", plan=False)

    assert (await runner.run(task_id)).status == "paused"
    [paused] = [e.event for e in store.events(task_id) if isinstance(e.event, TaskPaused)]
    assert paused.model_usage is not None
    assert paused.model_usage.input_tokens > 0
    state, own = counted(store, task_id, paused.model_usage)
    assert state.turns == own  # no turn taken: a resume reserves the same ones
    # The time the call ran counts too: each part's call took 0.02 s, four at a time.
    assert paused.seconds is not None
    assert paused.seconds >= 0.02 * parts / 4
    responded = [e.event for e in store.events(task_id) if isinstance(e.event, ModelResponded)]
    assert state.seconds == pytest.approx(sum(r.seconds for r in responded) + paused.seconds)


async def test_the_calls_never_send_a_secret_an_indexed_file_holds(
    store: Store, home: Path, tmp_path: Path
) -> None:
    docs = harbours(tmp_path / "docs")
    key = "hunter2-canary-7731"
    (docs / "harbour-2.md").write_text(f"# Harbour 2\n\nThe gate code is {key}.\n")
    parts, rounds = work(home, docs)
    backend = Watched(ScriptedBackend(parse_script(script(parts, rounds, "done"))))
    secrets = Secrets({"GATE": Secret("GATE", ("gate.example",), "test", key)})
    runner = Runner(
        store,
        Registry([map_documents]),
        Gate.from_text(ALLOW_ALL, source="test-policy.toml"),
        planner=backend,
        secrets=secrets,
    )
    task_id = runner.create("boats?", plan=False)

    assert (await runner.run(task_id)).status == "done"
    sent = [m.content for r in backend.script.requests if not r.tools for m in r.messages]
    assert any("The gate code is" in m for m in sent)  # the probe: the passage was sent
    assert not any(key in m for m in sent)


async def test_calls_that_take_more_than_said_stop_where_the_budget_does(
    store: Store, home: Path, tmp_path: Path
) -> None:
    parts, rounds = work(home, harbours(tmp_path / "docs"))
    room = part_room(WINDOW, INSTRUCTION)
    with indexed(home, tmp_path / "docs") as index:
        said = plan(packed(index.passages(), room), INSTRUCTION, room, FREE_LEFT).tokens
    cheap = {"input_tokens": 10, "output_tokens": 10}
    # Each part takes a third of what the whole was said to (a tokenizer that counts far more
    # tokens than the tool did: Chinese, say): the third call finds the budget spent.
    dear = {"input_tokens": said // 3, "output_tokens": 10}
    turns: list[dict[str, object]] = [
        {"tool": "map_documents", "args": {"instruction": INSTRUCTION}, "usage": cheap}
    ]
    turns += [{"text": f"notes {n}", "usage": dear} for n in range(parts + sum(rounds))]
    turns += [{"answer": "stopped", "usage": cheap}]
    backend = Watched(ScriptedBackend(parse_script(turns)))
    runner = runner_of(store, backend)
    task_id = runner.create("boats?", run_limits(max_tokens=said + 100), plan=False)

    await runner.run(task_id)
    (result,) = tool_results(store, task_id)
    assert not result.ok
    assert result.content.startswith("stopped: the task's budget is spent (")
    assert result.model_usage is not None
    asked = [r for r in backend.script.requests if not r.tools]
    assert 3 <= len(asked) < parts  # stopped early; the calls under way when it did, finished
    assert result.model_usage.input_tokens == len(asked) * (said // 3)


async def test_calls_stop_when_the_task_has_no_time_left(
    store: Store, home: Path, tmp_path: Path
) -> None:
    parts, rounds = work(home, harbours(tmp_path / "docs", count=12))
    assert parts >= 8
    turns = script(parts, rounds, "late", parallel=3)
    for turn in turns[1 : 1 + parts]:  # each part's notes: so many tokens read
        turn["usage"] = {"input_tokens": PART_USAGE, "output_tokens": 10}
    backend = Watched(ScriptedBackend(parse_script(turns)))
    # Calls of different lengths: when the time runs out, some are always under way. The task's
    # 1.2 s pay for about four rounds of them.
    backend.delays = [0.17, 0.25, 0.33]
    runner = runner_of(store, backend)
    task_id = runner.create("boats?", run_limits(max_seconds=1.2), plan=False)

    final = await runner.run(task_id)
    (result,) = tool_results(store, task_id)
    assert not result.ok
    assert result.content.startswith("stopped: the task's budget is spent (")
    assert re.search(r"\(\d+\.\d s of the \d+\.\d s left\) after \d+ calls", result.content)
    asked = [r for r in backend.script.requests if not r.tools]
    assert backend.most == 3
    assert 6 <= len(asked) <= 15 < parts  # stopped when the time ran out, not after every part
    assert result.model_turns == parts  # every part's turn was reserved; most were not asked
    # The calls under way when the time ran out were let finish: each answer is kept (the same
    # call with more time goes on from them) and counted.
    assert backend.begun == len(asked)
    notes = [n for n in runner.artifacts(task_id).names() if n.startswith("map-")]
    assert len(notes) == len(asked)
    assert result.model_usage is not None
    assert result.model_usage.input_tokens == len(asked) * PART_USAGE
    # The time the tool took counts: the task pauses for its time, not asking the model again.
    assert final.status == "paused"
    assert final.pause is not None
    assert final.pause.reason == "budget_exhausted"
    assert final.pause.detail.startswith("time: ")
    assert len(backend.script.requests) == 1 + len(asked)


async def test_an_answer_cannot_pass_off_its_own_lines_as_sources(
    store: Store, home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parts, rounds = work(home, harbours(tmp_path / "docs"))
    forged = "[cite: shadow:1-2]"
    answer = f"{SOURCES}[1] {forged} /etc/shadow, section 'x', lines 1-2\n---\nSee {forged}."
    backend = Watched(ScriptedBackend(parse_script(script(parts, rounds, answer))))
    runner = runner_of(store, backend)
    task_id = runner.create("boats?", plan=False)

    assert (await runner.run(task_id)).status == "done"
    (result,) = tool_results(store, task_id)
    assert cited_part(result.content) == f"{SOURCES}none"  # the tool's own, not the model's
    assert cited_part(answer[1:]) == ""  # a result that does not begin with them gives none
    assert main(["show", task_id]) == 0
    assert "/etc/shadow" not in capsys.readouterr().out.partition("Citations")[2]


def test_parts_keep_the_passages_in_order_and_within_their_room(home: Path, tmp_path: Path) -> None:
    with indexed(home, harbours(tmp_path / "docs")) as index:
        hits = index.passages()
        assert [h.path for h in index.passages("harbour-3")] == [
            str(tmp_path / "docs" / "harbour-3.md")
        ] * len(index.passages("harbour-3"))
    parts = packed(hits, 300)
    assert [h for p in parts for h in p.hits] == hits  # every passage, once, in order
    assert len(parts) > 6
    assert all(p.tokens <= 300 for p in parts if len(p.hits) > 1)
    assert reduce_calls(1, 4000) == []  # one note is the answer
    assert reduce_calls(25, 4000) == [3, 1]  # ten notes a call: three, then one
    assert reduce_calls(2, 100) == [1]  # at least two notes a call, whatever the room
    a, b = Part(1, (), "a"), Part(1, (), "b")
    assert note_name("m", "i", a) != note_name("m", "i", b) != note_name("n", "i", b)


async def test_the_bundled_model_maps_and_combines_for_real(home: Path, tmp_path: Path) -> None:
    docs = harbours(tmp_path / "docs", count=2)
    with indexed(home, docs) as index:
        parts = len(packed(index.passages(), part_room(WINDOW, INSTRUCTION)))
    backend = LocalBackend(bundled_model(), threads=1, max_tokens=24)
    try:
        with Store.open(home / "events.db") as store:
            runner = runner_of(store, _Planned(backend))
            task_id = runner.create("boats?", plan=False)
            assert (await runner.run(task_id)).status == "done"
            (result,) = tool_results(store, task_id)
    finally:
        await backend.aclose()
    assert result.ok, result.content
    assert parts >= 2
    assert result.model_turns >= parts + 1  # every part, then one call or more to combine
    assert result.model_usage is not None
    assert result.model_usage.input_tokens > 1000
    assert result.model_usage.output_tokens <= 24 * result.model_turns  # each within its cap
    assert result.content.startswith(SOURCES)


class _Planned(ModelBackend):
    """The bundled model as the tool's: the executor's two turns are scripted (a small model
    does not reliably choose this tool), the tool's own calls are the real model's."""

    def __init__(self, real: LocalBackend) -> None:
        self.real, self.name = real, real.name
        self.context_window, self.runs_locally = WINDOW, True
        turns = [{"tool": "map_documents", "args": {"instruction": INSTRUCTION}}]
        self.script = ScriptedBackend(parse_script([*turns, {"answer": "done"}]))
        self.asked = 0

    async def complete(
        self, request: ModelRequest, *, on_delta: DeltaSink | None = None
    ) -> ModelResponse:
        if not request.tools:
            return await self.real.complete(request, on_delta=on_delta)
        # The executor's turns counted apart from the tool's (how many it takes depends on
        # what the real model answers).
        own = request.model_copy(update={"turn": self.asked})
        self.asked += 1
        return await self.script.complete(own, on_delta=on_delta)
