"""Nothing a tool does can break the runtime: what it prints is kept with its call and never mixed
into `--json`; a synchronous tool that hangs is abandoned without holding the process open; and a
call given up on at its timeout that finishes after all is recorded, and the model told."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from agent.approvals import decide
from agent.events import LateResult
from agent.live import CommandOutput, Live
from agent.store import Store
from tests.conftest import make_runner, pending, tool_results
from tools import Registry, tool

AGENT = Path(sys.executable).parent / "agent"


@tool(touches="read")
def noisy(n: int) -> str:
    """Print some lines.

    Args:
        n: how many.
    """
    for i in range(n):
        print(f"line {i}")
    print("careful", file=sys.stderr)
    return "printed"


@tool(touches="read")
async def noisy_async(word: str) -> str:
    """Print a word.

    Args:
        word: which.
    """
    print(word)
    return "said"


async def test_what_a_tool_prints_is_kept_with_its_call_and_shown_as_it_comes(
    store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    turns: list[Any] = [
        {"plan": ["Print"]},
        {"tool": "noisy", "args": {"n": 2}},
        {"tool": "noisy_async", "args": {"word": "hello"}},
        {"done": "printed"},
    ]
    runner, _ = make_runner(store, turns, registry=Registry([noisy, noisy_async]))
    seen: list[CommandOutput] = []

    def listen(item: Live) -> None:
        if isinstance(item, CommandOutput):
            seen.append(item)

    runner.subscribe(listen)
    task_id = runner.create("print")
    state = await runner.run(task_id)
    assert state.status == "done"
    first, second = tool_results(store, task_id)
    assert first.printed == "line 0\nline 1\ncareful\n"
    assert first.content == "printed"  # the model is given the result, not the prints
    assert second.printed == "hello\n"
    assert "".join(o.text for o in seen) == "line 0\nline 1\ncareful\nhello\n"
    assert {o.source for o in seen} == {"print"}
    assert [o.stream for o in seen if o.text == "careful"] == ["stderr"]
    out, err = capsys.readouterr()
    assert "line 0" not in out
    assert "careful" not in err


TOOL_FILE = '''
import threading
import time

from agent_runtime import tool


@tool(touches="read")
def noisy(n: int) -> str:
    """Print some lines.

    Args:
        n: how many.
    """
    for i in range(n):
        print(f"line {i}")
    threading.Thread(target=lambda: print("from a thread of its own")).start()
    return "printed"


@tool(touches="read", timeout=1)
def hang(seconds: float) -> str:
    """Sleep.

    Args:
        seconds: how long.
    """
    time.sleep(seconds)
    return "woke"
'''


def test_json_stays_one_document_and_a_hung_tool_does_not_hold_the_process(
    home: Path, tmp_path: Path
) -> None:
    tools = tmp_path / "noisy_tools.py"
    tools.write_text(TOOL_FILE)
    script = tmp_path / "s.json"
    script.write_text(
        json.dumps(
            {
                "turns": [
                    {"plan": ["Print, then wait"]},
                    {"tool": "noisy", "args": {"n": 2}},
                    {"tool": "hang", "args": {"seconds": 60}},
                    {"done": "done"},
                ]
            }
        )
    )
    command = [str(AGENT), "run", "x", "--model", f"scripted:{script}", "--tools", str(tools)]
    started = time.monotonic()
    done = subprocess.run(
        [*command, "--json"], capture_output=True, text=True, check=False, timeout=120
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    # The thread sleeps 60 s: the process ended long before, abandoning it.
    assert elapsed < 40, elapsed
    result = json.loads(done.stdout)  # one JSON document: nothing printed got into it
    assert result["status"] == "done"
    assert "from a thread of its own" in done.stderr  # a stray print goes to stderr
    shown = subprocess.run(
        [str(AGENT), "show", result["task_id"]],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "COLUMNS": "200"},
    ).stdout
    assert "│ line 0" in shown
    assert "│ line 1" in shown
    assert "hang timed out after 1 s" in shown


RELEASE = threading.Event()


def join_threads(name: str) -> None:
    """Wait for the threads of that name (a tool's, given up on) to end."""
    for thread in threading.enumerate():
        if thread.name == name:
            thread.join(5)


@tool(touches="read", timeout=0.3)
def slow_lookup(name: str) -> str:
    """Look a name up, slowly.

    Args:
        name: whom.
    """
    RELEASE.wait(10)
    return f"{name} is in room 4"


@tool(touches="read")
async def release_and_wait() -> str:
    """Let the lookup finish, and wait for it."""
    RELEASE.set()
    await asyncio.to_thread(join_threads, "tool slow_lookup")
    return "waited"


async def test_a_late_result_is_recorded_and_the_model_told(store: Store) -> None:
    RELEASE.clear()
    turns: list[Any] = [
        {"plan": ["Find Dana"]},
        {"tool": "slow_lookup", "args": {"name": "Dana"}},
        {"tool": "release_and_wait", "args": {}},
        {"done": "Dana is in room 4"},
    ]
    runner, backend = make_runner(store, turns, registry=Registry([slow_lookup, release_and_wait]))
    task_id = runner.create("find Dana")
    state = await runner.run(task_id)
    assert state.status == "done"
    timed_out = tool_results(store, task_id)[0]
    assert timed_out.content == "slow_lookup timed out after 0.3 s"
    [late] = [e.event for e in store.events(task_id) if isinstance(e.event, LateResult)]
    assert (late.ref, late.ok, late.content) == ("2.0", True, "Dana is in room 4")
    # The model's next turn (the last) is told the truth.
    last = backend.requests[-1].messages
    assert any(
        m.role == "user" and "finished after all" in m.content and "room 4" in m.content
        for m in last
    ), [m.content for m in last]


WROTE = threading.Event()


@tool(touches="write", timeout=0.3)
def write_note(text: str) -> str:
    """Write a note, slowly.

    Args:
        text: what.
    """
    time.sleep(0.8)
    WROTE.set()
    return f"wrote {text!r}"


async def test_a_late_side_effect_after_a_reviewer_said_not_sent_is_told_truly(
    store: Store,
) -> None:
    """A write timed out; a reviewer, asked whether to send it again, said no, so the model was
    about to be told it did not run. It landed after all: the model is told that instead."""
    WROTE.clear()
    turns: list[Any] = [
        {"plan": ["Write"]},
        {"tool": "write_note", "args": {"text": "hi"}},
        {"done": "done"},
    ]
    runner, backend = make_runner(store, turns, registry=Registry([write_note]))
    task_id = runner.create("write")
    state = await runner.run(task_id)
    assert state.status == "awaiting_approval"  # outcome unknown: a reviewer is asked
    assert await asyncio.to_thread(WROTE.wait, 5)
    await asyncio.to_thread(join_threads, "tool write_note")
    decide(store, runner.load(task_id), pending(runner.load(task_id)), approved=False)
    state = await runner.resume(task_id)
    assert state.status == "done"
    [late] = [e.event for e in store.events(task_id) if isinstance(e.event, LateResult)]
    assert late.content == "wrote 'hi'"
    last = backend.requests[-1].messages
    texts = [m.content for m in last if m.role == "user"]
    assert any("finished after all" in t and "wrote 'hi'" in t for t in texts), texts
