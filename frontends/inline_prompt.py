"""The inline prompt of `agent run` and `agent resume` in a terminal: a request for approval is
answered where the task runs, or decided in another process (`agent review`, the web inbox, the
API) while the prompt waits; then the task goes on either way.

The prompt watches the task while nothing is typed (about once a second): once the task no
longer waits for a reviewer, it says who decided, and from where, and goes on. An answer typed
for a request that another process decided meanwhile decides nothing; what is pending then is
shown and asked anew.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

from rich.console import Console

from agent import inbox
from agent.approvals import (
    AlreadyGiven,
    Escalated,
    Expired,
    NothingToApprove,
    NotPending,
    account,
    decide,
    pending_approval,
)
from agent.events import ApprovalGiven, ApprovalRequested
from agent.state import TaskState
from agent.steering import NotSteerable, accept_plan, another_plan, edit_plan
from agent.store import Store
from base.errors import ConflictingWrite, TaskBusy
from frontends.line_input import LineSource, read_line, wait_for_line
from frontends.render import Renderer
from frontends.screen import shown

#: the answer when the request was decided in another process while the prompt waited
ELSEWHERE: Final = "elsewhere"
Answer = tuple[bool, str] | Literal["elsewhere"]


@dataclass(frozen=True)
class Prompt:
    """Where the prompt shows what it says, and the task's store."""

    out: Console
    store: Store
    renderer: Renderer | None


def ask_inline(out: Console, stdin: LineSource, store: Store, task_id: str) -> Answer | None:
    """Ask until the answer is yes or no; None at the end of input; ELSEWHERE once the task no
    longer waits for a reviewer while nothing is typed."""
    last = time.monotonic()

    def decided_elsewhere() -> bool:
        nonlocal last
        if time.monotonic() - last < 1.0:
            return False
        last = time.monotonic()
        return store.task(task_id).status != "awaiting_approval"

    while True:
        try:
            out.print(
                "[bold yellow]Approve?[/] \\[y]es / \\[n]o, optionally followed by a reason > ",
                end="",
            )
            typed = wait_for_line(stdin, decided_elsewhere)
        except EOFError:
            return None
        if typed is None:
            return ELSEWHERE
        word, _, reason = typed.strip().partition(" ")
        if word.lower() in ("y", "yes"):
            return True, reason.strip()
        if word.lower() in ("n", "no"):
            return False, reason.strip()
        out.print("please answer y or n (Ctrl-C stops here; the task keeps waiting for a reviewer)")


def settle(
    prompt: Prompt,
    asked: ApprovalRequested,
    answer: Answer,
    *,
    load: Callable[[], TaskState],
    run_on: Callable[[], TaskState],
) -> tuple[TaskState, bool]:
    """Act on the answer to `asked` (record it, or follow a decision made elsewhere) and run the
    task on; its state then, and whether to prompt again (False: it waits, durably)."""
    out = prompt.out
    if answer == ELSEWHERE:
        out.print(f"\n    [yellow]{shown(_fate(prompt.store, asked.approval_id))}[/]")
        state = load()
        if state.status == "awaiting_approval":
            show_pending(prompt, state)
            return state, True
        try:
            return run_on(), True
        except TaskBusy:
            out.print("    [dim]another process (agent worker) carries it on[/]")
            return load(), False
    approved, reason = answer
    # The answer is about the request shown: if another process decided it, or the task asks
    # something else now, it decides nothing, and what is pending is asked anew.
    state = load()
    try:
        decision = decide(
            prompt.store,
            state,
            asked,
            approved=approved,
            reason=reason,
            reviewer=account(),
            origin="terminal",
        )
    except (AlreadyGiven, Escalated) as exc:
        out.print(f"    [yellow]{shown(exc.message)}[/]")
        return load(), False  # it waits for another reviewer, durably
    except Expired as exc:
        out.print(f"    [yellow]{shown(exc.message)}[/]")
        return run_on(), True  # the model is told
    except (NotPending, NothingToApprove, ConflictingWrite):
        state = load()
        out.print("    [yellow]the request changed while the prompt was open[/]")
        show_pending(prompt, state)
        return state, True
    word = "approved" if decision.approved else "denied"
    out.print(f"    {word} {decision.approval_id} {asked.short_hash}")
    if isinstance(decision, ApprovalGiven):
        out.print("    [dim]it waits for more reviewers[/]")
        return load(), False
    return run_on(), True


def show_pending(prompt: Prompt, state: TaskState) -> None:
    """Show the request pending now (what a reviewer is asked), as the run showed the first."""
    request = pending_approval(state)
    if request is None or prompt.renderer is None:
        return
    for stored in prompt.store.events(state.task_id):
        if stored.event == request:
            prompt.renderer(stored)
            return


def _fate(store: Store, approval_id: str) -> str:
    """Who decided a request, and from where, as the inbox holds it."""
    row = inbox.describe(store.reader(), approval_id) or {}
    if row.get("decided") is None:
        return f"request {approval_id} was decided elsewhere"
    word = "approved" if row["approved"] else "denied"
    who = f"{row['reviewer'] or 'no reviewer'} ({row['origin'] or '?'})"
    return f"request {approval_id} was {word} elsewhere, by {who}"


def review_plan_inline(prompt: Prompt, stdin: LineSource, state: TaskState) -> bool:
    """Ask what to do with the plan waiting for review: accept it, edit it, or ask for another;
    whether to run on (False: at the end of input or Ctrl-C, the plan keeps waiting)."""
    out = prompt.out
    while True:
        out.print(
            "[bold yellow]Plan?[/] \\[a]ccept / \\[e]dit / \\[n]ew plan, optionally followed by "
            "why > ",
            end="",
        )
        try:
            word, _, why = read_line(stdin).strip().partition(" ")
        except (EOFError, KeyboardInterrupt):
            out.print()
            return False
        try:
            match word.lower():
                case "a" | "accept":
                    accept_plan(prompt.store, state)
                case "n" | "new":
                    another_plan(prompt.store, state, why)
                case "e" | "edit":
                    steps = _edited_steps(out, stdin, state.plan)
                    if steps is None:
                        continue
                    edit_plan(prompt.store, state, steps)
                case _:
                    out.print("please answer a, e or n (Ctrl-C stops here; the plan keeps waiting)")
                    continue
        except NotSteerable as exc:
            out.print(f"    [yellow]{shown(exc.message)}[/]")
            continue
        return True


def _edited_steps(out: Console, stdin: LineSource, plan: tuple[str, ...]) -> list[str] | None:
    """The plan as the user rewrites it: in $EDITOR when there is one (and a terminal), else
    typed here, one step a line, an empty line to end; None to keep the plan as it was."""
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR")
    if editor and stdin.isatty():
        with tempfile.NamedTemporaryFile("w+", suffix=".txt", encoding="utf-8") as draft:
            draft.write("\n".join(plan) + "\n")
            draft.flush()
            if subprocess.run([*shlex.split(editor), draft.name], check=False).returncode != 0:
                out.print("[yellow]the editor failed: the plan is unchanged[/]")
                return None
            draft.seek(0)
            return draft.read().splitlines()
    out.print("type the plan, one step a line; an empty line ends it:")
    steps: list[str] = []
    while True:
        try:
            line = read_line(stdin)
        except (EOFError, KeyboardInterrupt):
            return None
        if not line.strip():
            return steps or None
        steps.append(line)
