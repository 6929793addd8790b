"""`agent` with no command (or `agent session`): a session to stay in.

Type a task and watch it run (the plan, each step, each call and its result, inline approvals,
as `agent run` shows them); then a status line with what it used. Ctrl-C pauses the task at the
next safe point (a second Ctrl-C within two seconds cancels it); while it is paused, what is typed
is an instruction the model sees when it resumes (`/resume`), and `/budget`, `/model` and `/plan`
change how it goes on. A line starting with `/` is a command (`/help` lists them); `@path` in a
task gives that file with it.

In a terminal the input line is prompt_toolkit's (history across sessions, editing, completion
of commands and task ids). Piped in (not a terminal), each line is a task or a command, output is
plain text with no escape codes, and the exit code is the last task's, as `agent run`'s.
"""

from __future__ import annotations

import argparse
import os
import shlex
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from prompt_toolkit import PromptSession
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.history import FileHistory
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from rich.console import Console

from agent.approvals import pending_approval
from agent.config import Config
from agent.events import ToolResulted
from agent.home import default_home
from agent.state import TaskState
from agent.steering import NotSteerable, add_instruction, cancel, edit_plan, reviewing_plan
from agent.store import Store
from agent_runtime import INTRO, PROMPT, PROMPT_SHOWN
from base.errors import AgentError
from frontends.inline_prompt import edited_steps
from frontends.line_input import LineSource, read_line
from frontends.render import Renderer
from frontends.screen import shown

#: the commands, with what each does (for /help and completion)
COMMANDS = {
    "/tasks": "list tasks, newest first",
    "/show": "[ID] a task's whole history (default: the current task)",
    "/resume": "[ID] go on with a paused, stuck or waiting task (default: the current task)",
    "/approve": "[reason] approve the current task's pending request",
    "/deny": "reason: deny the current task's pending request (the model reads why)",
    "/plan": "the current plan; /plan edit: rewrite it (paused); /plan review | /plan off: "
    "show new plans before they run",
    "/last": "the last tool call's result, whole (Ctrl-O too)",
    "/budget": "the current task's use and limits; /budget steps=N tokens=N cost=USD time=S",
    "/model": "[URI] the model of new tasks (and of /resume)",
    "/policy": "the policy file tasks run with",
    "/tools": "the tools tasks are offered",
    "/new": "forget the current task: what is typed next starts a new one",
    "/help": "this list",
    "/exit": "leave (Ctrl-D too); tasks keep their state",
}
#: a second Ctrl-C this soon after a pause cancels the task
CANCEL_WINDOW = 2.0
_LIMIT_FLAGS = {
    "steps": "--max-steps",
    "tokens": "--max-tokens",
    "cost": "--max-cost",
    "time": "--max-seconds",
}


@dataclass
class Session:
    """What the session remembers between lines."""

    run: Callable[[list[str]], int]
    out: Console
    stdin: LineSource
    flags: list[str]
    review_plan: bool
    model: str | None = None
    task: str | None = None
    #: limits given with /budget, for the next /resume
    limits: list[str] = field(default_factory=list)
    #: when the current task was last paused by a Ctrl-C (for a second one to cancel it)
    paused_at: float | None = None
    code: int = 0

    def state(self) -> TaskState | None:
        if self.task is None:
            return None
        with Store.open() as store:
            return TaskState.from_store(store, self.task)


def session_command(
    args: argparse.Namespace,
    config: Config,
    out: Console,
    stdin: LineSource,
    run: Callable[[list[str]], int],
) -> int:
    """Read tasks and commands until /exit or the end of input; the last task's exit code."""
    flags = _flags(args)
    session = Session(run, out, stdin, flags, review_plan=config.session.review_plan)
    interactive = stdin.isatty() and out.is_terminal
    lines = _typed(session, config) if interactive else _piped(stdin)
    if interactive and os.environ.pop(PROMPT_SHOWN, ""):
        # `agent` drew the prompt before it loaded: the input line takes over the line it is
        # on (what was typed meanwhile is still to be read, and is shown there again).
        out.file.write("\r\x1b[K")
    elif interactive:
        out.print(f"[bold]{INTRO}[/]")
    for line in lines:
        if not _handle(session, line.strip()):
            break
    return session.code


def _flags(args: argparse.Namespace) -> list[str]:
    """The session's own options, given again to each task it runs."""
    flags: list[str] = []
    if args.config:
        flags += ["--config", str(args.config)]
    for module in args.tools:
        flags += ["--tools", module]
    if args.policy:
        flags += ["--policy", str(args.policy)]
    if args.model:
        flags += ["--model", args.model]
    return flags


def _piped(stdin: LineSource) -> Iterator[str]:
    while True:
        try:
            yield read_line(stdin)
        except EOFError:
            return


def _typed(session: Session, config: Config) -> Iterator[str]:
    """Lines typed at prompt_toolkit's input line; a Ctrl-C there within two seconds of a
    pause cancels the paused task."""
    history = config.session.history or default_home() / "history"
    history.parent.mkdir(parents=True, exist_ok=True)
    keys = KeyBindings()

    @keys.add("c-o")
    def _expand(event: KeyPressEvent) -> None:
        """Ctrl-O: the last tool call's result, whole (as /last)."""
        event.app.current_buffer.text = "/last"
        event.app.current_buffer.validate_and_handle()

    prompt: PromptSession[str] = PromptSession(
        history=FileHistory(str(history)), completer=_Completer(), key_bindings=keys
    )
    while True:
        try:
            yield prompt.prompt(PROMPT)
        except KeyboardInterrupt:
            if session.paused_at is not None and time.monotonic() - session.paused_at < 2.0:
                _cancel(session)
            continue
        except EOFError:
            return


def _handle(session: Session, line: str) -> bool:
    """Act on one line; False to leave."""
    if not line:
        return True
    if line.startswith("/"):
        return _command(session, line)
    state = session.state()
    if state is not None and state.status in ("paused", "stuck") and not reviewing_plan(state):
        try:
            with Store.open() as store:
                add_instruction(store, TaskState.from_store(store, state.task_id), line)
        except (NotSteerable, AgentError) as exc:
            session.out.print(f"[yellow]{shown(exc.message)}[/]")
            return True
        session.out.print(
            f"[bold]✎ you told it:[/] {shown(line)} [dim]— the model sees it when the task goes "
            "on: /resume (or /new for another task)[/]"
        )
        return True
    _run_task(session, line)
    return True


def _run_task(session: Session, text: str) -> None:
    files: list[str] = []
    for word in text.split():
        if word.startswith("@") and Path(word[1:]).is_file():
            files += ["--file", word[1:]]
    task = " ".join(
        w[1:] if w.startswith("@") and Path(w[1:]).is_file() else w for w in text.split()
    )
    argv = ["run", task, *session.flags]
    if session.model:
        argv += ["--model", session.model]
    if session.review_plan:
        argv.append("--review-plan")
    _go(session, [*argv, *files], new=True)


def _go(session: Session, argv: list[str], *, new: bool = False) -> None:
    """Run a command that drives a task; remember the task and say where it stands."""
    session.code = session.run(argv)
    if new:
        with Store.open() as store:
            newest = store.tasks(limit=1)
        session.task = newest[0].id if newest else session.task
    state = session.state()
    if state is None:
        return
    interrupted = state.status == "paused" and state.pause is not None
    interrupted = interrupted and state.pause is not None and state.pause.reason == "interrupted"
    session.paused_at = time.monotonic() if interrupted else None
    _status_line(session, state)


def _status_line(session: Session, state: TaskState) -> None:
    """The budget used so far, against the task's limits, and the model."""
    limits = state.limits
    tokens = state.input_tokens + state.output_tokens
    parts = [
        f"steps {state.steps_taken}/{limits.max_steps}",
        f"tokens {tokens:,}/{limits.max_tokens:,}" if limits.max_tokens else f"tokens {tokens:,}",
        f"{state.seconds:.0f}/{limits.max_seconds:.0f} s",
    ]
    if state.priced:
        parts.append(f"${state.cost_usd:.4f}")
    model = state.created.model if state.created is not None else "?"
    session.out.print(f"[dim]budget: {' · '.join(parts)} · model {shown(model)}[/]")
    hint = {
        "paused": "type an instruction for the model, then /resume; /budget, /model, /plan",
        "stuck": "type an instruction for the model, then /resume (or /new)",
        "awaiting_approval": "/approve or /deny REASON (or decide in agent review / the web)",
    }.get(state.status)
    if hint:
        session.out.print(f"[dim]{hint}[/]")


def _cancel(session: Session) -> None:
    state = session.state()
    if state is None:
        return
    with Store.open() as store:
        try:
            cancel(store, TaskState.from_store(store, state.task_id))
        except AgentError as exc:
            session.out.print(f"[yellow]{shown(exc.message)}[/]")
            return
    session.paused_at = None
    session.out.print(f"[red]✘ task {state.task_id} cancelled[/]")


def _command(session: Session, line: str) -> bool:
    try:
        name, *rest = shlex.split(line)
    except ValueError as exc:
        session.out.print(f"[yellow]{shown(str(exc))}[/]")
        return True
    out = session.out
    current = [session.task] if session.task else []
    match name:
        case "/exit" | "/quit":
            return False
        case "/help":
            for command, what in COMMANDS.items():
                out.print(f"  [bold]{command}[/] {shown(what)}")
        case "/tasks":
            session.run(["tasks", *_config(session)])
        case "/show":
            session.run(["show", *(rest or current), *_config(session)])
        case "/resume":
            if rest:
                session.task = rest[0]
            if session.task is None:
                out.print("[yellow]no current task: /resume ID[/]")
                return True
            model = ["--model", session.model] if session.model else []
            _go(session, ["resume", session.task, *session.flags, *model, *session.limits])
            session.limits = []
        case "/approve" | "/deny":
            _decide(session, name[1:], " ".join(rest))
        case "/plan":
            _plan(session, rest)
        case "/last":
            _last(session)
        case "/budget":
            _budget(session, rest)
        case "/model":
            if rest:
                session.model = rest[0]
            out.print(f"model: {shown(session.model or 'as configured')}")
        case "/policy":
            policy = _flag(session.flags, "--policy")
            out.print(
                f"policy: {shown(policy or 'as configured ([policy] file), else the default')}"
            )
        case "/tools":
            session.run(["tools", "list", *session.flags])
        case "/new":
            session.task = None
            out.print("[dim]the next task starts afresh[/]")
        case _:
            out.print(f"[yellow]no command {shown(name)}[/]: /help lists them")
    return True


def _config(session: Session) -> list[str]:
    config = _flag(session.flags, "--config")
    return ["--config", config] if config else []


def _flag(flags: list[str], name: str) -> str | None:
    return flags[flags.index(name) + 1] if name in flags else None


def _decide(session: Session, verb: str, reason: str) -> None:
    state = session.state()
    request = pending_approval(state) if state is not None else None
    if state is None or request is None:
        session.out.print("[yellow]the current task waits for no approval[/]")
        return
    if verb == "deny" and not reason:
        session.out.print("[yellow]say why: /deny REASON (the model reads it)[/]")
        return
    argv = [verb, state.task_id, request.approval_id, request.short_hash, "--reason", reason]
    _go(session, [*argv, *session.flags])


def _plan(session: Session, rest: list[str]) -> None:
    out = session.out
    if rest and rest[0] == "edit":
        _edit_plan(session)
        return
    if rest and rest[0] in ("review", "off"):
        session.review_plan = rest[0] == "review"
        out.print(
            f"new plans {'are shown before they run' if session.review_plan else 'run at once'}"
        )
        return
    state = session.state()
    if state is None or not state.plan:
        out.print("[dim]no plan yet[/]")
        return
    done = len(state.completed)
    for index, step in enumerate(state.plan):
        mark = "✓" if index < done else ("●" if index == state.step else "☐")
        out.print(f"  {mark} {index + 1}. {shown(step)}")
    if reviewing_plan(state):
        out.print("[dim]it waits for you: /resume runs it as it is[/]")


def _edit_plan(session: Session) -> None:
    state = session.state()
    if state is None:
        session.out.print("[yellow]no current task[/]")
        return
    steps = edited_steps(session.out, session.stdin, state.plan)
    if steps is None:
        return
    try:
        with Store.open() as store:
            edit_plan(store, TaskState.from_store(store, state.task_id), steps)
    except AgentError as exc:
        session.out.print(f"[yellow]{shown(exc.message)}[/]")
        return
    session.out.print("[dim]the plan is yours; /resume runs it from its first step[/]")


def _last(session: Session) -> None:
    """The last tool result of the current task, as `agent show` prints it (whole)."""
    if session.task is None:
        session.out.print("[yellow]no current task[/]")
        return
    with Store.open() as store:
        results = [e for e in store.events(session.task) if isinstance(e.event, ToolResulted)]
    if not results:
        session.out.print("[dim]no tool has run yet[/]")
        return
    Renderer(session.out, detailed=True)(results[-1])


def _budget(session: Session, rest: list[str]) -> None:
    out = session.out
    for item in rest:
        key, _, value = item.partition("=")
        if key not in _LIMIT_FLAGS or not value:
            out.print(f"[yellow]give {', '.join(f'{k}=N' for k in _LIMIT_FLAGS)}[/]")
            return
        session.limits += [_LIMIT_FLAGS[key], value]
    if rest:
        out.print("[dim]the new limits apply from the next /resume[/]")
    state = session.state()
    if state is not None:
        limits = state.limits
        out.print(
            f"steps {state.steps_taken}/{limits.max_steps} · tokens "
            f"{state.input_tokens + state.output_tokens:,}/{limits.max_tokens or '∞'}"
        )


class _Completer(Completer):
    """Completes commands, and task ids after /show and /resume."""

    def get_completions(
        self, document: Document, complete_event: CompleteEvent
    ) -> Iterator[Completion]:
        text = document.text_before_cursor
        if " " not in text and text.startswith("/"):
            for command in COMMANDS:
                if command.startswith(text):
                    yield Completion(command, start_position=-len(text))
            return
        head, _, word = text.partition(" ")
        if head in ("/show", "/resume") and " " not in word:
            with Store.open() as store:
                for row in store.tasks(limit=30):
                    if row.id.startswith(word):
                        yield Completion(row.id, start_position=-len(word))
