"""The interactive session (`agent` with no command), driven as a person would: in a
pseudo-terminal, a scripted task's plan is shown and edited before it runs; a Ctrl-C pauses it and
an instruction typed then reaches the model (the script checks each request holds it); /resume
goes on; an approval is given inline, another denied with a reason the model works around, and a
third decided from another process, which the session picks up. Piped, the same session is plain
text, checked against a golden file."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agent.approvals import pending_approval
from agent.state import TaskState
from agent.store import Store
from examples.tally_tool import read_ledger
from frontends.cli import main

from .apis import TALLY
from .conftest import REPO, write_script
from .terminal import agent_in_terminal, read_until

NAPS = str(REPO / "tests" / "session_tools.py")
GOLDEN = REPO / "tests" / "golden" / "session_piped.txt"
PROMPT = b"agent>"
ESCAPES = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")

TURNS: list[Any] = [
    {"plan": ["Nap", "Count"]},
    {"tool": "nap", "args": {"seconds": 3}},
    {"done": "napped", "expect": "count the back door too"},
    {"tool": "tally", "args": {"counter": "side", "amount": 1}},
    {"tool": "tally", "args": {"counter": "back", "amount": 1}},
    {"tool": "tally", "args": {"counter": "front", "amount": 1}, "expect": "use the front counter"},
    {"done": "counted"},
]


def _screen(raw: bytes) -> str:
    """What the terminal shows, as text: escape sequences dropped, lines as written."""
    return ESCAPES.sub(b"", raw).decode(errors="replace").replace("\r", "")


def _current_task(home: Path) -> TaskState:
    with Store.open(home / "events.db") as store:
        [row] = store.tasks()
        return TaskState.from_store(store, row.id)


def test_a_session_in_a_terminal_plans_pauses_steers_and_decides(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = write_script(tmp_path / "script.json", TURNS)
    env = {"PROMPT_TOOLKIT_NO_CPR": "1", "TERM": "xterm", "COLUMNS": "120"}
    argv = ["--model", f"scripted:{script}", "--tools", TALLY, "--tools", NAPS]
    pid, fd = agent_in_terminal(*argv, env=env)  # `agent` alone (its options aside)
    read_until(fd, PROMPT)
    os.write(fd, b"/plan review\r")
    read_until(fd, b"shown before they run")
    os.write(fd, b"count visitors\r")
    # The plan is shown, and waits.
    screen = _screen(read_until(fd, b"Plan?"))
    assert "Plan\n  1. Nap\n  2. Count" in screen
    assert "paused (plan_review)" in screen
    os.write(fd, b"e\n")
    read_until(fd, b"an empty line ends it")
    os.write(fd, b"Nap briefly\nCount at the doors\n\n")
    # It runs as edited; a Ctrl-C pauses it at the next safe point.
    screen = _screen(read_until(fd, b"seconds=3"))
    assert _current_task(home).plan == ("Nap briefly", "Count at the doors")
    os.write(fd, b"\x03")
    screen = _screen(read_until(fd, PROMPT))
    assert "type an instruction for the model, then /resume" in screen
    assert _current_task(home).status == "paused"
    os.write(fd, b"count the back door too\r")
    screen = _screen(read_until(fd, b"the model sees it when the task goes on"))
    assert "you told it: count the back door too" in screen
    os.write(fd, b"/resume\r")
    # The model was told (turn 3 checks it); an approval inline...
    screen = _screen(read_until(fd, b"Approve?"))
    assert "step 1 done: napped" in screen
    assert '"counter": "side"' in screen
    os.write(fd, b"y\n")
    # ...a denial the model reads and works around (turn 6 checks it was told why)...
    screen = _screen(read_until(fd, b"Approve?"))
    assert '"counter": "back"' in screen
    os.write(fd, b"n use the front counter\n")
    screen = _screen(read_until(fd, b"Approve?"))
    assert '"counter": "front"' in screen
    # ...and one decided from another process while the prompt waits.
    state = _current_task(home)
    request = pending_approval(state)
    assert request is not None
    named = [state.task_id, request.approval_id, request.short_hash]
    assert main(["approve", *named, "--no-resume"]) == 4
    screen = _screen(read_until(fd, PROMPT))
    assert f"request {request.approval_id} was approved elsewhere" in screen
    assert "done: counted" in screen
    assert "budget: steps" in screen
    os.write(fd, b"\x0f")  # Ctrl-O: the last result, whole
    assert "front is now 1" in _screen(read_until(fd, b"front is now 1"))
    os.write(fd, b"/exit\r")
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert [(e["counter"], e["amount"]) for e in read_ledger()] == [("side", 1), ("front", 1)]
    assert _current_task(home).status == "done"


def test_a_piped_session_is_plain_text(home: Path, tmp_path: Path) -> None:
    turns: list[Any] = [
        {"plan": ["Count a visitor"]},
        {"tool": "tally", "args": {"counter": "front", "amount": 1}},
        {"done": "counted"},
    ]
    script = write_script(tmp_path / "script.json", turns)
    typed = "count a visitor\n/plan\n/approve checked\n/budget\n/nonsense\n/exit\n"
    # Wide, so that no line wraps where a path of another length would not.
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "400", "TERM": "xterm"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "frontends.cli",
            "--model",
            f"scripted:{script.name}",
            "--tools",
            TALLY,
        ],
        cwd=tmp_path,  # the script named as a short path that is the same on every run
        input=typed,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout
    text = re.sub(r"\b[0-9a-f]{8}\b", "TASK", done.stdout)
    text = re.sub(r"\d+(\.\d+)?(/\d+)? s\b", "N s", text).replace(str(tmp_path), "TMP")
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text()
    assert [e["amount"] for e in read_ledger()] == [1]


def test_a_second_ctrl_c_soon_after_a_pause_cancels_the_task(home: Path, tmp_path: Path) -> None:
    script = write_script(
        tmp_path / "script.json",
        [{"plan": ["Nap"]}, {"tool": "nap", "args": {"seconds": 3}}, {"done": "napped"}],
    )
    env = {"PROMPT_TOOLKIT_NO_CPR": "1", "TERM": "xterm", "COLUMNS": "120"}
    pid, fd = agent_in_terminal("--model", f"scripted:{script}", "--tools", NAPS, env=env)
    read_until(fd, PROMPT)
    os.write(fd, b"nap a while\r")
    read_until(fd, b"seconds=3")
    os.write(fd, b"\x03")
    read_until(fd, PROMPT)
    os.write(fd, b"\x03")
    screen = _screen(read_until(fd, b"cancelled"))
    assert "cancelled" in screen
    os.write(fd, b"/exit\r")
    os.waitpid(pid, 0)
    state = _current_task(home)
    assert (state.status, state.end_reason) == ("failed", "cancelled by the user")


def test_the_model_told_nothing_fails_an_expecting_script(home: Path, tmp_path: Path) -> None:
    # The positive control of the script's check: an instruction never given is missed.
    script = write_script(
        tmp_path / "script.json",
        [{"plan": ["Count"]}, {"done": "counted", "expect": "count the back door too"}],
    )
    assert main(["run", "--model", f"scripted:{script}", "--json", "count"]) != 0
    pause = _current_task(home).pause
    assert pause is not None
    assert "expects the model to be told 'count the back door too'" in pause.detail


def test_the_prompt_is_up_before_the_program_loads_and_keeps_what_is_typed(
    home: Path,
) -> None:
    # The installed command, as a person starts it: its prompt is drawn before the program is
    # loaded; keys typed at once (before the input line is ready) are not lost.
    agent = str(Path(sys.executable).with_name("agent"))
    pid, fd = pty.fork()
    if pid == 0:
        os.environ.update({"TERM": "xterm", "PROMPT_TOOLKIT_NO_CPR": "1"})
        os.execv(agent, [agent])
    read_until(fd, b"agent> ")
    os.write(fd, b"/he")
    os.write(fd, b"lp\r")
    screen = _screen(read_until(fd, b"tasks keep their state"))
    assert "/resume [ID]" in screen
    os.write(fd, b"/exit\r")
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
