"""The inline prompt of `agent run` and `agent resume` in a terminal: a request for approval is
answered where the task runs, or decided in another process (`agent review`, the web inbox, the
API) while the prompt waits; then the task goes on either way.

The prompt watches the task while nothing is typed (about once a second): once the task no
longer waits for a reviewer, it says who decided, and from where, and goes on. An answer typed
for a request that another process decided meanwhile decides nothing; what is pending then is
shown and asked anew.
"""

from __future__ import annotations

import functools
import json
import os
import shlex
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from rich.console import Console

from agent import inbox
from agent.always import RuleRefused, Scope
from agent.approvals import (
    AlreadyGiven,
    EditRefused,
    Escalated,
    Expired,
    NothingToApprove,
    NotPending,
    Seen,
    account,
    pending_approval,
)
from agent.config import EngineConfig
from agent.events import ApprovalDecided, ApprovalGiven, ApprovalRequested, Limits
from agent.state import TaskState
from agent.steering import NotSteerable
from agent.store import Store
from agent.temporal.client import EngineError
from base.errors import ConfigError, ConflictingWrite, StoreError, TaskBusy
from frontends._deciding import decide_on_its_engine, plan_on_its_engine
from frontends.always_allow import approve_always
from frontends.line_input import LineSource, read_line, wait_for_line
from frontends.render import Renderer
from frontends.screen import plain, shown

#: the answer when the request was decided in another process while the prompt waited
ELSEWHERE: Final = "elsewhere"


@dataclass(frozen=True)
class Reply:
    """A decision typed at the prompt: the same decisions as the reviewers' inbox."""

    approved: bool
    reason: str = ""
    #: approve with these arguments changed
    edit: dict[str, Any] | None = None
    #: approve, and always allow calls exactly like it (in this task, or the project)
    always: Scope | None = None


Answer = Reply | Literal["elsewhere"]
ASK = (
    "[bold yellow]Approve?[/] \\[y]es / \\[n]o (optionally with a reason) / \\[e]dit "
    'JSON (e {"amount": 2}) / \\[a]lways task|project > '
)


@dataclass(frozen=True)
class Prompt:
    """Where the prompt shows what it says and reads answers, and the task's store."""

    out: Console
    stdin: LineSource
    store: Store
    renderer: Renderer | None
    #: the Temporal service a decision on a task of that engine is sent to
    engine: EngineConfig | None = None


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
            out.print(ASK, end="")
            typed = wait_for_line(stdin, decided_elsewhere)
        except EOFError:
            return None
        if typed is None:
            return ELSEWHERE
        reply = _reply(typed)
        if isinstance(reply, Reply):
            return reply
        out.print(f"{reply} (Ctrl-C stops here; the task keeps waiting for a reviewer)")


def _reply(typed: str) -> Reply | str:
    """The decision typed, or what is wrong with it."""
    word, _, rest = typed.strip().partition(" ")
    rest = rest.strip()
    match word.lower():
        case "y" | "yes":
            return Reply(True, rest)
        case "n" | "no":
            return Reply(False, rest)
        case "e" | "edit":
            try:
                edit = json.loads(rest)
            except (ValueError, RecursionError) as exc:
                return f'not JSON ({exc}): e {{"name": value}}'
            if not isinstance(edit, dict):
                return 'give the arguments to change as a JSON object: e {"name": value}'
            return Reply(True, edit=edit)
        case "a" | "always":
            if rest not in ("task", "project"):
                return "always for this task or the project: a task, or a project"
            return Reply(True, always="task" if rest == "task" else "project")
    return "please answer y, n, e JSON or a task|project"


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
    # The answer is about the request shown: if another process decided it, or the task asks
    # something else now, it decides nothing, and what is pending is asked anew.
    state = load()
    try:
        decision = _record(prompt, state, asked, answer)
    except (AlreadyGiven, Escalated) as exc:
        out.print(f"    [yellow]{shown(exc.message)}[/]")
        return load(), False  # it waits for another reviewer, durably
    except EngineError as exc:
        out.print(f"    [yellow]{shown(exc.message)}[/]")
        return load(), False  # it waits, durably: decide it once the service answers
    except (EditRefused, RuleRefused, ConfigError) as exc:
        out.print(f"    [yellow]{shown(exc.message)}[/]")
        return load(), True  # nothing decided: asked again
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


def _record(
    prompt: Prompt, state: TaskState, asked: ApprovalRequested, reply: Reply
) -> ApprovalDecided | ApprovalGiven:
    if reply.always is not None:
        return approve_always(
            prompt.out,
            prompt.stdin,
            prompt.store,
            state,
            Seen.of(asked),
            scope=reply.always,
            reviewer=account(),
            origin="terminal",
            asked=False,
            engine=prompt.engine,
        )
    return decide_on_its_engine(
        prompt.store,
        state,
        Seen.of(asked),
        engine=prompt.engine,
        approved=reply.approved,
        reason=reply.reason,
        reviewer=account(),
        origin="terminal",
        edit=reply.edit,
    )


def show_pending(prompt: Prompt, state: TaskState) -> None:
    """Show the request pending now (what a reviewer is asked), as the run showed the first."""
    request = pending_approval(state)
    if request is None or prompt.renderer is None:
        return
    for stored in prompt.store.events(state.task_id):
        if stored.event == request:
            prompt.renderer(stored)
            return


def _in_editor(out: Console, editor: str, plan: tuple[str, ...]) -> list[str] | None:
    """The plan as rewritten in `editor`; None when it is left as it was, or the editor fails."""
    with tempfile.TemporaryDirectory() as folder:
        draft = Path(folder) / "plan.txt"
        # The model wrote these steps: what a screen would obey or hide is made visible.
        draft.write_text("\n".join(plain(step) for step in plan) + "\n", encoding="utf-8")
        try:
            ran = subprocess.run([*shlex.split(editor), str(draft)], check=False)
            text = draft.read_text(encoding="utf-8")  # by name: editors save a new file
        except (OSError, ValueError) as exc:
            out.print(f"[yellow]the editor ({shown(editor)}) could not run: {shown(str(exc))}[/]")
            return None
    if ran.returncode != 0:
        out.print("[yellow]the editor failed: the plan is unchanged[/]")
        return None
    steps = [line for line in text.splitlines() if line.strip()]
    return None if tuple(steps) == plan else steps


def _fate(store: Store, approval_id: str) -> str:
    """Who decided a request, and from where, as the inbox holds it."""
    decided = inbox.decision(store.reader(), approval_id)
    if decided is None:
        return f"request {approval_id} was decided elsewhere"
    word = "approved" if decided.approved else "denied"
    who = f"{decided.reviewer or 'no reviewer'} ({decided.origin or '?'})"
    return f"request {approval_id} was {word} elsewhere, by {who}"


def review_plan_inline(
    prompt: Prompt, stdin: LineSource, state: TaskState, limits: Limits | None = None
) -> bool:
    """Ask what to do with the plan waiting for review: accept it, edit it, or ask for another;
    whether to run on (False: at the end of input or Ctrl-C, the plan keeps waiting). A task
    of the Temporal engine goes on at once, with `limits` raised when given."""
    on_its_engine = functools.partial(plan_on_its_engine, prompt.store, state, prompt.engine)
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
                    on_its_engine("accept_plan", limits=limits)
                case "n" | "new":
                    on_its_engine("another_plan", why=why, limits=limits)
                case "e" | "edit":
                    steps = edited_steps(out, stdin, state.plan)
                    if steps is None:
                        continue
                    on_its_engine("edit_plan", steps=steps, limits=limits)
                case _:
                    out.print("please answer a, e or n (Ctrl-C stops here; the plan keeps waiting)")
                    continue
        except NotSteerable as exc:
            out.print(f"    [yellow]{shown(exc.message)}[/]")
            continue
        except (StoreError, EngineError) as exc:  # decided elsewhere, or run by another process
            out.print(f"    [yellow]{shown(exc.message)}[/]")
            return False
        return True


def edited_steps(out: Console, stdin: LineSource, plan: tuple[str, ...]) -> list[str] | None:
    """The plan as the user rewrites it: in $EDITOR when there is one (and a terminal), else
    typed here, one step a line, an empty line to end; None to keep the plan as it was."""
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR")
    if editor and stdin.isatty():
        return _in_editor(out, editor, plan)
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
