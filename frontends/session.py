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
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from prompt_toolkit import PromptSession
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.history import FileHistory
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from rich.console import Console

from agent.approvals import pending_approval
from agent.config import Config, EngineConfig
from agent.events import ToolResulted
from agent.home import default_home
from agent.state import TaskState
from agent.steering import add_instruction, cancel, reviewing_plan
from agent.store import Store
from agent.temporal._wire import PlanAction, Steer
from agent_runtime import INTRO, PROMPT, PROMPT_SHOWN
from base.errors import AgentError
from frontends._deciding import on_temporal, plan_on_its_engine, steer_on_temporal
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
    "/plan": "the current plan; /plan edit: rewrite it (paused); /plan new WHY: ask for "
    "another; /plan review | /plan off: show new plans before they run",
    "/tell": "TEXT: tell the current task's model (what a line typed while it is paused does)",
    "/cancel": "end the current task here",
    "/last": "the last tool call's result at length, as agent show prints it (Ctrl-O too)",
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
    #: a person at a terminal (not lines piped in)
    interactive: bool = False
    #: where a task of the Temporal engine is steered
    engine: EngineConfig = field(default_factory=EngineConfig)

    def interrupted(self) -> bool:
        """Whether the last command's task was paused by a Ctrl-C."""
        return self.paused_at is not None

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
    session = Session(
        _guarded(run),
        out,
        stdin,
        _flags(args),
        review_plan=config.session.review_plan,
        engine=config.engine,
    )
    # The same test as `agent`'s own, which drew the prompt before the program loaded.
    interactive = stdin.isatty() and sys.stdout.isatty() and not args.json
    drawn = os.environ.pop(PROMPT_SHOWN, "")
    if interactive and drawn:
        # The input line takes over the line the prompt is on (what was typed meanwhile is
        # still to be read, and is shown there again).
        sys.stdout.write("\r\x1b[K")
        sys.stdout.flush()
    elif interactive:
        out.print(f"[bold]{INTRO}[/]")
    elif drawn:
        sys.stdout.write("\n")
    session.interactive = interactive
    lines = _typed(session, config) if interactive else _piped(stdin)
    for line in lines:
        try:
            if not _handle(session, line.strip()):
                break
        except KeyboardInterrupt:
            out.print("[yellow]interrupted[/]")
            if not interactive:
                break  # a batch stops, as `agent run` does
        except AgentError as exc:
            out.print(f"[yellow]{shown(exc.message)}[/]")
        if not interactive and session.interrupted():
            break  # a Ctrl-C paused its task: the rest of the batch does not run
    return session.code


def _guarded(run: Callable[[list[str]], int]) -> Callable[[list[str]], int]:
    """`run`, with the exit a command's bad arguments make turned into its code."""

    def guarded(argv: list[str]) -> int:
        try:
            return run(argv)
        except SystemExit as exc:  # argparse refused the arguments, and said why
            return exc.code if isinstance(exc.code, int) else 2

    return guarded


def _flags(args: argparse.Namespace) -> list[str]:
    """The session's own options, given again to each new task it runs."""
    flags: list[str] = []
    for name, flag in (
        ("config", "--config"),
        ("policy", "--policy"),
        ("model", "--model"),
        ("max_steps", "--max-steps"),
        ("max_tokens", "--max-tokens"),
        ("max_seconds", "--max-seconds"),
        ("max_cost_usd", "--max-cost"),
        ("memory_mb", "--memory"),
        ("cpus", "--cpus"),
        ("pids", "--pids"),
    ):
        if getattr(args, name, None) is not None:
            flags += [flag, str(getattr(args, name))]
    for module in args.tools:
        flags += ["--tools", module]
    for host in args.allow_domains or ():
        flags += ["--allow-domain", host]
    if args.no_prompt:
        flags.append("--no-prompt")
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
            # A Ctrl-C at an empty line, soon after one paused a task, cancels it; one that
            # clears a half-typed line does not.
            recent = session.paused_at is not None
            recent = recent and time.monotonic() - (session.paused_at or 0) < CANCEL_WINDOW
            if recent and not prompt.default_buffer.text:
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
    if session.interactive and state is not None and _steerable(state):
        _tell(session, state, line)  # while a task is paused, what is typed is for its model
        return True
    _run_task(session, line)
    return True


def _steerable(state: TaskState) -> bool:
    """Whether the task waits for the user to steer it (not for a reviewer, nor its plan)."""
    return state.status in ("paused", "stuck") and not reviewing_plan(state)


def _tell(session: Session, state: TaskState, text: str) -> None:
    if on_temporal(state):
        steer_on_temporal(session.engine, state.task_id, Steer(action="tell", instruction=text))
    else:
        with Store.open() as store:
            add_instruction(store, TaskState.from_store(store, state.task_id), text)
    session.out.print(
        f"[bold]✎ you told it:[/] {shown(text)} [dim]— the model sees it when the task goes "
        "on: /resume (or /new for another task)[/]"
    )


def _run_task(session: Session, text: str) -> None:
    files: list[str] = []
    words = []
    for word in text.split():
        named = word[1:] if word.startswith("@") and Path(word[1:]).is_file() else None
        if named is not None:
            files += ["--file", named]
        words.append(named or word)
    argv = ["run", *session.flags, *files]
    if session.model:
        argv += ["--model", session.model]
    argv.append("--review-plan" if session.review_plan else "--no-review-plan")
    _go(session, [*argv, "--", " ".join(words)], new=True)


def _newest() -> str | None:
    with Store.open() as store:
        rows = store.tasks(limit=1)
    return rows[0].id if rows else None


def _go(session: Session, argv: list[str], *, new: bool = False) -> None:
    """Run a command that drives a task; remember the task and say where it stands."""
    before = _newest() if new else None
    session.code = session.run(argv)
    if new and (made := _newest()) != before:
        session.task = made  # the task this command made (none, if it failed before that)
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
    seconds = f"{state.seconds:.0f}"
    seconds += f"/{limits.max_seconds:.0f} s" if limits.max_seconds is not None else " s"
    parts = [
        f"steps {state.steps_taken}/{limits.max_steps}",
        f"tokens {tokens:,}/{limits.max_tokens:,}" if limits.max_tokens else f"tokens {tokens:,}",
        seconds,
    ]
    if state.priced:
        parts.append(f"${state.cost_usd:.4f}")
    model = session.model or (state.created.model if state.created is not None else "?")
    session.out.print(f"[dim]budget: {' · '.join(parts)} · model {shown(model)}[/]")
    if reviewing_plan(state):
        hint = "the plan waits: /resume runs it as it is; /plan edit; /plan new WHY"
    else:
        hint = {
            "paused": "type an instruction for the model, then /resume; /budget, /model, /plan "
            "edit, /cancel",
            "stuck": "type an instruction for the model, then /resume (or /new)",
            "awaiting_approval": "/approve or /deny REASON (or decide in agent review or the "
            "web inbox)",
        }.get(state.status, "")
    if hint and session.interactive:
        session.out.print(f"[dim]{hint}[/]")


def _cancel(session: Session) -> None:
    state = session.state()
    if state is None:
        session.out.print("[yellow]no current task[/]")
        return
    if on_temporal(state):
        steer_on_temporal(session.engine, state.task_id, Steer(action="cancel"))
    else:
        with Store.open() as store:
            cancel(store, TaskState.from_store(store, state.task_id))
    session.paused_at = None
    session.out.print(f"[red]✘ task {state.task_id} cancelled[/]")


def _command(session: Session, line: str) -> bool:
    name, _, rest = line.partition(" ")
    rest = rest.strip()
    out = session.out
    match name:
        case "/exit" | "/quit":
            return False
        case "/help":
            for command, what in COMMANDS.items():
                out.print(f"  [bold]{command}[/] {shown(what)}")
        case "/tasks":
            session.run(["tasks", *_config(session)])
        case "/show":
            task = _task(session, rest)
            if task is not None:
                session.run(["show", task, *_config(session)])
        case "/resume":
            task = _task(session, rest)
            if task is not None:
                session.task = task
                model = ["--model", session.model] if session.model else []
                _go(session, ["resume", task, *_config(session), *model, *session.limits])
                session.limits = []
        case "/approve" | "/deny":
            _decide(session, name[1:], rest)
        case "/tell":
            _tell_current(session, rest)
        case "/cancel":
            _cancel(session)
        case "/plan":
            _plan(session, rest)
        case "/last":
            _last(session)
        case "/budget":
            _budget(session, rest.split())
        case "/model" | "/policy" | "/tools":
            _setup(session, name, rest)
        case "/new":
            session.task = None
            out.print("[dim]the next task starts afresh[/]")
        case _:
            out.print(f"[yellow]no command {shown(name)}[/]: /help lists them")
    return True


def _tell_current(session: Session, text: str) -> None:
    state = session.state()
    if state is None or state.status in ("done", "failed"):
        session.out.print("[yellow]no task to tell: /resume ID first[/]")
    elif text:
        _tell(session, state, text)


def _setup(session: Session, name: str, rest: str) -> None:
    """/model, /policy and /tools: what new tasks run with."""
    out = session.out
    if name == "/model":
        if rest:
            session.model = rest
        out.print(f"model: {shown(session.model or 'as configured')}")
    elif name == "/policy":
        policy = (
            _flag(session.flags, "--policy") or "as configured ([policy] file), else the default"
        )
        out.print(f"policy: {shown(policy)}")
    else:
        flags = session.flags
        modules = [m for i, m in enumerate(flags) if i and flags[i - 1] == "--tools"]
        session.run(["tools", "list", *_config(session), *(f"--tools={m}" for m in modules)])


def _task(session: Session, given: str) -> str | None:
    """The task `given` names (a unique prefix is enough), else the current one."""
    if not given:
        if session.task is None:
            session.out.print("[yellow]no current task: name one (/tasks lists them)[/]")
        return session.task
    with Store.open() as store:
        return store.resolve(given)  # raises TaskNotFound, said to the user


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
    model = ["--model", session.model] if session.model else []
    _go(session, [*argv, *_config(session), *model])


def _plan(session: Session, rest: str) -> None:
    out = session.out
    word, _, why = rest.partition(" ")
    if word == "edit":
        _edit_plan(session)
        return
    if word == "new":
        _another_plan(session, why)
        return
    if word in ("review", "off"):
        session.review_plan = word == "review"
        said = "are shown before they run" if session.review_plan else "run at once"
        out.print(f"new plans {said}")
        return
    state = session.state()
    if state is None or not state.plan:
        out.print("[dim]no plan yet[/]")
        return
    for index, step in enumerate(state.plan):
        done = index < state.step or state.status == "done"
        mark = "✓" if done else ("●" if index == state.step else "☐")
        out.print(f"  {mark} {index + 1}. {shown(step)}")
    if reviewing_plan(state):
        out.print("[dim]it waits for you: /resume runs it as it is[/]")


def _another_plan(session: Session, why: str) -> None:
    state = session.state()
    if state is None:
        session.out.print("[yellow]no current task[/]")
        return
    said = (
        "its workflow asks the planner again now",
        "the planner is asked again when the task goes on: /resume",
    )
    _on_plan(session, state.task_id, "another_plan", said, why=why)


def _edit_plan(session: Session) -> None:
    state = session.state()
    if state is None:
        session.out.print("[yellow]no current task[/]")
        return
    steps = edited_steps(session.out, session.stdin, state.plan)
    if steps is None:
        return
    said = (
        "the plan is yours; its workflow runs it now",
        "the plan is yours; /resume runs it from its first step",
    )
    _on_plan(session, state.task_id, "edit_plan", said, steps=steps)


def _on_plan(
    session: Session,
    task_id: str,
    action: PlanAction,
    said: tuple[str, str],
    *,
    steps: Sequence[str] = (),
    why: str = "",
) -> None:
    """Do `action` to the task's plan on its engine; say what comes of it (`said`: on the
    Temporal engine, which goes on at once, and on the embedded one)."""
    with Store.open() as store:
        current = TaskState.from_store(store, task_id)
        plan_on_its_engine(store, current, session.engine, action, steps=steps, why=why)
    session.out.print(f"[dim]{said[0] if on_temporal(current) else said[1]}[/]")


def _last(session: Session) -> None:
    """The last tool result of the current task, as `agent show` prints it."""
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
    given: list[str] = []
    for item in rest:
        key, _, value = item.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = -1.0
        if key not in _LIMIT_FLAGS or not number > 0 or (key != "cost" and not number.is_integer()):
            out.print(
                f"[yellow]give {', '.join(f'{k}=N' for k in _LIMIT_FLAGS)} (numbers above 0; "
                "cost in dollars)[/]"
            )
            return
        given += [_LIMIT_FLAGS[key], value if key == "cost" else str(int(number))]
    if given:
        session.limits += given
        out.print("[dim]the new limits apply from the next /resume[/]")
    state = session.state()
    if state is not None:
        _status_line(session, state)


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
