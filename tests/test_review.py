"""`agent review` in a pseudo-terminal, as a reviewer uses it: the inbox listed, a request opened
and approved, another denied with a reason, the list redrawn when a task asks in another
process, and a request whose text tries to steer the terminal shown, not obeyed."""

from __future__ import annotations

import asyncio
import getpass
import io
import os
from pathlib import Path
from typing import Any

from agent.events import ApprovalDecided
from agent.runner import Runner
from agent.store import Store
from frontends.cli import main
from policies import Gate

from .conftest import scripted, tools
from .terminal import agent_in_terminal, read_until

PROMPT = b"a number opens a request"
KEYS = b"edit then approve"


def _waiting(counter: str) -> str:
    turns: list[Any] = [
        {"plan": ["Count"]},
        {"tool": "tally", "args": {"counter": counter, "amount": 1}},
        {"done": "counted"},
    ]

    async def run() -> str:
        with Store.open() as store:
            runner = Runner(store, tools(), Gate.default(), planner=scripted(turns))
            task = runner.create(f"Count {counter}")
            assert (await runner.run(task)).status == "awaiting_approval"
            return task

    return asyncio.run(run())


def _decisions(task: str) -> list[ApprovalDecided]:
    with Store.open() as store:
        return [e.event for e in store.events(task) if isinstance(e.event, ApprovalDecided)]


def test_a_reviewer_opens_approves_and_denies_and_sees_new_requests_arrive(home: Path) -> None:
    first = _waiting("front")
    second = _waiting("side")
    pid, fd = agent_in_terminal("review", env={"COLUMNS": "160"})
    screen = read_until(fd, PROMPT)
    assert first.encode() in screen
    assert second.encode() in screen
    os.write(fd, b"1\n")
    screen = read_until(fd, KEYS)
    assert b'"counter": "front"' in screen  # the preview, whole
    os.write(fd, b"a\n")
    read_until(fd, b"carries it out")
    [approved] = _decisions(first)
    assert (approved.approved, approved.reviewer, approved.origin) == (
        True,
        getpass.getuser(),
        "review",
    )
    read_until(fd, PROMPT)
    os.write(fd, b"1\n")  # the first is decided: the side counter is first now
    read_until(fd, KEYS)
    os.write(fd, b"d\n")
    read_until(fd, b"the model reads it")
    os.write(fd, b"not today\n")
    read_until(fd, b"carries it out")
    [denied] = _decisions(second)
    assert (denied.approved, denied.reason) == (False, "not today")
    read_until(fd, PROMPT)
    # Another process's task asks: the list is drawn again with it, untouched.
    third = _waiting("back")
    screen = read_until(fd, third.encode())
    assert b"the inbox changed" in screen
    os.write(fd, b"q\n")
    os.waitpid(pid, 0)


def test_a_request_that_tries_to_steer_the_terminal_is_shown_not_obeyed(home: Path) -> None:
    # The task's text, the model's plan and its call's arguments all carry it.
    hostile = "x \x1b[2J\x1b]0;owned\x07 [bold red]APPROVED[/] \u202eevil"
    turns: list[Any] = [
        {"plan": [hostile]},
        {"tool": "tally", "args": {"counter": hostile, "amount": 1}},
        {"done": "counted"},
    ]

    async def run() -> str:
        with Store.open() as store:
            runner = Runner(store, tools(), Gate.default(), planner=scripted(turns))
            task = runner.create(hostile)
            assert (await runner.run(task)).status == "awaiting_approval"
            return task

    task = asyncio.run(run())
    pid, fd = agent_in_terminal("review", env={"COLUMNS": "200"})
    screen = read_until(fd, PROMPT)
    os.write(fd, b"1\n")
    screen += read_until(fd, KEYS)
    os.write(fd, b"\n")  # back, deciding nothing
    read_until(fd, PROMPT)
    os.write(fd, b"q\n")
    os.waitpid(pid, 0)
    for obeyed in (b"\x1b[2J", b"\x1b]0;owned", b"\x07", "\u202e".encode()):
        assert obeyed not in screen, obeyed
    assert b"\\x1b[2J" in screen  # made visible
    assert b"[bold red]APPROVED[/]" in screen  # markup shown as text
    assert b"<U+202E>" in screen
    assert _decisions(task) == []


def test_the_end_of_input_or_a_stray_key_ends_or_is_refused_calmly(home: Path) -> None:
    _waiting("front")
    assert main(["review"], stdin=io.StringIO("")) == 0  # the end of input: done
    assert main(["review"], stdin=io.StringIO("\u00b2\n9\nq\n")) == 0  # not numbers here
    assert main(["review"], stdin=io.StringIO("1\ne\n" + "[" * 100000 + "\nq\n")) == 0
