"""No text from a model, a page, a tool, a file or a command can forge what a person sees.

A corpus of hostile strings (escape sequences that clear the screen, move the cursor or set the
window title; the 8-bit CSI; bidi overrides and isolates; line separators; rich markup) goes
through every output path: each event as `agent run` and `agent show` render it, a command's
streamed output, a model's streamed answer, the approval panel, an error message, and a whole
`agent run` in a pseudo-terminal. On the screen, nothing of them is obeyed: apart from the
styling rich itself writes (SGR sequences), no control, C1, bidi or separator character is
there, and each is shown as an escape instead. `--json` stays exact JSON: the same strings,
unchanged.
"""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from agent.backends.base import Delta, ModelResponse, ToolCall, Usage
from agent.events import (
    ApprovalRequested,
    EgressDecided,
    Event,
    Limits,
    ModelResponded,
    PlanProposed,
    StepStarted,
    TaskCreated,
    TaskFinished,
    TaskPaused,
    ToolResulted,
)
from agent.store import StoredEvent
from frontends.cli import main
from frontends.render import Renderer
from frontends.screen import plain, shown

from .conftest import write_script
from .terminal import agent_in_terminal, read_until

#: each hostile string, and how it must read on the screen
CORPUS = {
    "\x1b[2J\x1b[H": "\\x1b[2J\\x1b[H",  # clear the screen, cursor home
    "\x1b]0;pwned\x07": "\\x1b]0;pwned\\x07",  # set the window title
    "\x9b31mred": "\\x9b31mred",  # the 8-bit CSI
    "\u202etxt.exe": "<U+202E>txt.exe",  # right-to-left override
    "\u2066a\u2069\u202c\u2067b": "<U+2066>a<U+2069><U+202C><U+2067>b",  # isolates, PDF
    "one\u2028two": "one<U+2028>two",  # line separator
    "next\x85line": "next\\x85line",  # NEL
    "ab\x08\x08cd": "ab\\x08\\x08cd",  # backspaces that would overwrite
    "safe\rforged": "safe\\x0dforged",  # a carriage return that would overwrite the line
    "[bold red]markup[/]": "[bold red]markup[/]",  # shown as text, not as style
}
HOSTILE = "|".join(CORPUS)
#: what a screen must never receive from untrusted text
FORBIDDEN = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200b-\u200f\u202a-\u202e\u2028\u2029\u2060-\u2064"
    "\u2066-\u2069\ufeff]"
)
#: what rich itself writes to a terminal: styles (SGR); with a pty, line endings as CR LF
OWN = re.compile(r"\x1b\[[0-9;]*m|\r(?=\n)")


def problems(screen: str) -> list[str]:
    """The characters on `screen` that untrusted text put there to be obeyed."""
    return sorted({f"U+{ord(c):04X}" for c in FORBIDDEN.findall(OWN.sub("", screen))})


def all_shown(screen: str) -> list[str]:
    """The corpus strings whose visible form is missing from `screen`."""
    flat = OWN.sub("", screen).replace("\n", "")
    return [text for text, visible in CORPUS.items() if visible not in flat]


def test_shown_makes_every_hostile_character_visible_and_markup_inert() -> None:
    for text, visible in CORPUS.items():
        assert plain(text) == visible
        assert problems(shown(text)) == []
    assert plain("tabs\tand\nnewlines\r\nstay") == "tabs\tand\nnewlines\nstay"
    assert plain("ordinary text, é, 漢字, emoji 🙂") == "ordinary text, é, 漢字, emoji 🙂"
    console = Console(file=io.StringIO(), force_terminal=True, width=400)
    console.print(shown("[bold red]markup[/]"))
    assert "[bold red]markup[/]" in OWN.sub("", console.file.getvalue())  # type: ignore[attr-defined]


def _events() -> list[Event]:
    call = ToolCall(id="c1", name="send", arguments=json.dumps({"text": HOSTILE}))
    return [
        TaskCreated(task=HOSTILE, model="scripted:" + HOSTILE, limits=Limits()),
        PlanProposed(steps=(HOSTILE,)),
        StepStarted(index=0, title=HOSTILE),
        ModelResponded(
            purpose="act",
            response=ModelResponse(text=HOSTILE, tool_calls=(call,), usage=Usage()),
            seconds=0.1,
        ),
        ApprovalRequested(
            approval_id="t-1.0", ref="1.0", call_hash="a" * 64, reason=HOSTILE, preview=HOSTILE
        ),
        ToolResulted(ref="1.0", ok=True, content=HOSTILE),
        ToolResulted(ref="1.0", ok=False, content=HOSTILE),
        EgressDecided(
            method="GET", host=HOSTILE, port=80, allowed=False, reason=HOSTILE, address=None
        ),
        TaskPaused(reason="tool_crashed", detail=HOSTILE),
        TaskFinished(answer=HOSTILE),
    ]


@pytest.mark.parametrize("detailed", [False, True], ids=["run", "show"])
def test_every_event_renders_hostile_text_inert(detailed: bool) -> None:
    file = io.StringIO()
    renderer = Renderer(Console(file=file, force_terminal=True, width=4000), detailed=detailed)
    renderer.limit = 100_000  # nothing cut: every string whole on the screen
    for seq, event in enumerate(_events(), 1):
        renderer(StoredEvent("t", seq, 0.0, event))
        screen = file.getvalue()
        assert problems(screen) == [], (event.kind, problems(screen))
    assert all_shown(file.getvalue()) == []


def test_streamed_output_and_answers_render_hostile_text_inert() -> None:
    file = io.StringIO()
    renderer = Renderer(Console(file=file, force_terminal=True, width=4000))
    for piece in (HOSTILE[:7], HOSTILE[7:40], HOSTILE[40:]):  # split inside sequences
        renderer.output("t", "stdout", piece)
    renderer.output("t", "stderr", HOSTILE)
    renderer.delta("t", "act", Delta(kind="text", text=HOSTILE))
    renderer.delta("t", "act", Delta(kind="tool_call", text=HOSTILE))
    assert problems(file.getvalue()) == []
    assert all_shown(file.getvalue()) == []


SEND_TOOL = '''
from tools import tool

@tool(touches="read")
def echo(text: str) -> str:
    """Say it back.

    Args:
        text: what to say.
    """
    return text

@tool(touches="external")
def send(text: str) -> str:
    """Send it.

    Args:
        text: what to send.
    """
    return "sent"
'''


def _script(tmp_path: Path) -> tuple[str, Path]:
    tools = tmp_path / "send_tool.py"
    tools.write_text(SEND_TOOL)
    turns: list[Any] = [
        {"plan": [HOSTILE]},
        {"tool": "echo", "args": {"text": HOSTILE}},
        {"tool": "send", "args": {"text": HOSTILE}},
        {"answer": HOSTILE},
    ]
    return f"scripted:{write_script(tmp_path / 'hostile.json', turns)}", tools


def test_a_whole_run_in_a_terminal_shows_hostile_text_inert(home: Path, tmp_path: Path) -> None:
    model, tools = _script(tmp_path)
    argv = ("run", HOSTILE, "--model", model, "--tools", str(tools))
    pid, fd = agent_in_terminal(*argv, env={"COLUMNS": "4000"})
    screen = read_until(fd, b"Approve?")
    os.write(fd, b"y\n")
    screen += read_until(fd, b"done")
    os.waitpid(pid, 0)
    text = screen.decode(errors="replace")
    assert problems(text) == [], problems(text)
    assert all_shown(text) == [], all_shown(text)


def test_show_and_errors_show_hostile_text_inert_and_json_stays_exact(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, tools = _script(tmp_path)
    assert main(["run", HOSTILE, "--model", model, "--tools", str(tools), "--json"]) == 3
    result = json.loads(capsys.readouterr().out)  # one JSON object, whatever the text held
    assert result["status"] == "awaiting_approval"
    task_id = result["task_id"]

    assert main(["show", task_id]) == 0
    shown_history = capsys.readouterr().out
    assert problems(shown_history) == []
    assert all_shown(shown_history) == []

    # An error that quotes untrusted text (here, a request id a reviewer pasted from a page).
    assert main(["approve", task_id, HOSTILE, "0" * 8]) == 2
    error = capsys.readouterr().err
    assert problems(error) == []
    assert "\\x1b[2J" in error

    # The JSON is exact: every hostile string comes back as it was.
    assert main(["show", task_id, "--json"]) == 0
    out = capsys.readouterr().out
    assert len(out.splitlines()) == 1, "one line, whatever separators the strings hold"
    events = json.loads(out)
    assert events[0]["task"] == HOSTILE
    assert any(e.get("answer") == HOSTILE or e.get("content") == HOSTILE for e in events)
    assert main(["tasks", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["task"] == HOSTILE
    assert main(["tasks"]) == 0
    listing = capsys.readouterr().out
    assert problems(listing) == []
