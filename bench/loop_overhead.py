"""The runtime's own cost per step, against a hand-written loop doing the same work.

Both drive the same scripted model for the same 500 tool calls of an async no-op tool, and both
append the same three events per step (model response; gate decision + tool result) to SQLite in
WAL mode with synchronous=NORMAL, in two commits per step, and chain the gate decision and the
result into an audit log (an entry and the head, hashed as `agent.audit` hashes them). What
the runtime adds on top — typed events, the fold, argument validation, the policy gate, budgets,
the stuck detector — is the overhead measured. Per-step times are medians; each side runs
several times, interleaved.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from _goals import Goals, machine

from agent import audit
from agent.backends.base import DeltaSink, Message, ModelRequest, ModelResponse
from agent.backends.scripted import ScriptedBackend, parse_script
from agent.events import Limits
from agent.runner import Runner
from agent.store import Store
from policies import Gate
from tools import Registry, tool


@tool
async def noop(i: int) -> str:
    """Do nothing.

    Args:
        i: which call this is.
    """
    return "ok"


STEPS = 500
ROUNDS = 11
# What the default policy says when it allows a read-only tool, so both sides write the same bytes.
_ALLOWED = Gate.default().evaluate(noop, {"i": 0})
REASON, RULE = _ALLOWED.reason, _ALLOWED.rule


class TimedScript(ScriptedBackend):
    """The scripted model, noting when each executor call arrives."""

    def __init__(self) -> None:
        turns: list[Any] = [{"plan": ["Call noop many times"]}]
        turns += [{"tool": "noop", "args": {"i": i}} for i in range(STEPS)]
        turns.append({"answer": "done"})
        super().__init__(parse_script(turns))
        self.stamps: list[float] = []

    async def complete(
        self, request: ModelRequest, *, on_delta: DeltaSink | None = None
    ) -> ModelResponse:
        if request.purpose == "act":
            self.stamps.append(time.perf_counter())
        return await super().complete(request)


def per_step(stamps: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(stamps)]


async def runtime_run(folder: Path) -> list[float]:
    backend = TimedScript()
    with Store.open(folder / "runtime.db") as store:
        runner = Runner(store, Registry([noop]), Gate.default(), planner=backend)
        task_id = runner.create("call noop", Limits(max_steps=STEPS + 10, max_tokens=None))
        state = await runner.run(task_id)
        assert state.status == "done", state.status
    return per_step(backend.stamps[: STEPS + 1])


async def reference_run(folder: Path) -> list[float]:
    """A 30-line loop: ask the model, record, call the tool, record. It writes the same events
    (the same fields, so the same bytes) but decides nothing: no validation, no policy."""
    backend = TimedScript()
    db = sqlite3.connect(folder / "reference.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute(
        "CREATE TABLE events (task_id TEXT, seq INTEGER, ts REAL, kind TEXT, body TEXT,"
        " PRIMARY KEY (task_id, seq)) WITHOUT ROWID"
    )
    db.executescript(audit.SCHEMA)
    seq, entries, previous = 0, 0, "0" * 64

    def append(*events: dict[str, Any]) -> None:
        nonlocal seq, entries, previous
        db.execute("BEGIN IMMEDIATE")
        now, audited = time.time(), False
        for event in events:
            seq += 1
            body = json.dumps(event)
            db.execute(
                "INSERT INTO events VALUES ('t', ?, ?, ?, ?)", (seq, now, event["kind"], body)
            )
            if event["kind"] in audit.AUDITED:
                entries, audited = entries + 1, True
                previous = audit.link(
                    previous, entries, audit.Entry("t", seq, now, event["kind"], body)
                )
                db.execute("INSERT INTO audit VALUES (?, 't', ?, ?)", (entries, seq, previous))
        if audited:
            db.execute("INSERT OR REPLACE INTO audit_head VALUES (1, ?, ?)", (entries, previous))
        db.execute("COMMIT")

    history: list[Message] = []
    await backend.complete(
        ModelRequest(task_id="t", purpose="plan", turn=0, messages=(), tools=(noop.spec,))
    )
    for turn in range(1, STEPS + 1):
        request = ModelRequest(
            task_id="t",
            purpose="act",
            turn=turn,
            tools=(noop.spec,),
            messages=(Message(role="user", content="go"), *history[-24:]),
        )
        started = time.perf_counter()
        response = await backend.complete(request)
        append(
            {
                "kind": "model_responded",
                "purpose": "act",
                "seconds": time.perf_counter() - started,
                "cost_usd": None,
                "oversized": {},
                "response": response.model_dump(mode="json"),
            }
        )
        call, ref = response.tool_calls[0], f"{turn}.0"
        args = json.loads(call.arguments)
        digest = hashlib.sha256(json.dumps([call.name, args]).encode()).hexdigest()
        started = time.perf_counter()
        result = await noop.fn(**args)
        append(
            {
                "kind": "gate_decided",
                "ref": ref,
                "tool": call.name,
                "arguments": args,
                "call_hash": digest,
                "verdict": "allow",
                "reason": REASON,
                "rule": RULE,
            },
            {
                "kind": "tool_result",
                "ref": ref,
                "ok": True,
                "content": result,
                "error_code": None,
                "seconds": time.perf_counter() - started,
                "recovery": None,
            },
        )
        history += [
            Message(role="assistant", tool_calls=response.tool_calls),
            Message(role="tool", tool_call_id=call.id, content=result),
        ]
    db.close()
    return per_step(backend.stamps)


def main() -> None:
    ratios, runtime, reference, early, late = [], [], [], [], []
    for _ in range(ROUNDS):
        with tempfile.TemporaryDirectory() as tmp:
            ref = statistics.median(asyncio.run(reference_run(Path(tmp))))
            steps = asyncio.run(runtime_run(Path(tmp)))
        rt = statistics.median(steps)
        # Each round's ratio compares the two loops measured back to back, under the same load.
        ratios.append(rt / ref)
        runtime.append(rt)
        reference.append(ref)
        early.append(statistics.median(steps[:50]))
        late.append(statistics.median(steps[-50:]))
    us = 1e6
    print(machine())
    print(f"steps per run: {STEPS}, rounds: {ROUNDS} (medians over rounds)")
    print(
        "runtime: Runner.run over the scripted model and an async no-op tool (typed events, the "
        "fold, validation, the gate, budgets, the stuck check), events to SQLite; reference: a "
        "hand-written loop making the same model and tool calls and writing the same events (and "
        "audit entries) in the same two commits per step, WAL and synchronous=NORMAL on both sides"
    )
    print("threads: one on each side (this process's event loop; SQLite in that thread)")
    print(f"runtime per step:   {statistics.median(runtime) * us:7.1f} us")
    print(f"reference per step: {statistics.median(reference) * us:7.1f} us")
    print(
        f"runtime steps 1-50: {statistics.median(early) * us:7.1f} us; "
        f"steps {STEPS - 49}-{STEPS}: {statistics.median(late) * us:7.1f} us"
    )
    print(f"per-round ratios: {', '.join(f'{r:.2f}' for r in sorted(ratios))}")
    goals = Goals()
    print(goals.add("loop_overhead", statistics.median(ratios), "<= 1.5x"))
    flat = statistics.median(la / ea for la, ea in zip(late, early, strict=True))
    print(goals.add(f"step_{STEPS}_vs_step_1", flat, "<= 1.2x"))
    goals.finish()


if __name__ == "__main__":
    main()
