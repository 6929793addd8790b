"""`agent review`: the reviewers' inbox in the terminal.

The list of requests waiting, oldest first (filtered as `agent inbox` is), numbered; a number opens
one: its preview, why it was asked, the rule, and the task's last events; then one letter and Enter
decides it: `a` approve, `e` edit then approve, `d` deny (with a reason the model reads), `r`
approve and always allow calls exactly like it (a rule, shown before it is saved, in the task's
policy file: for this task or for every task). While it waits for a key it watches the store: a
request asked or decided in another process redraws the list. Decisions are the same as `agent
approve`'s (bound to the hash shown, once, in time) and are recorded as the OS user's, from
`review`; a worker (`agent worker`) or `agent resume` carries them out. Everything from a model, a
page or a tool passes the one neutraliser, so nothing in a request can change what the reviewer
sees.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import termios
import time

from rich.console import Console
from rich.panel import Panel

from agent.always import RuleRefused
from agent.approvals import EditRefused, NothingToApprove, NotPending, Seen, account
from agent.config import Config, EngineConfig
from agent.events import SHORT_HASH, ApprovalGiven
from agent.inbox import Waiting, marker, waiting
from agent.state import TaskState
from agent.store import Store
from agent.temporal.client import EngineError
from base.errors import ConfigError, ConflictingWrite
from frontends._deciding import decide_on_its_engine
from frontends.always_allow import approve_always
from frontends.inbox_commands import add_filters, print_listing
from frontends.line_input import LineSource, read_line, wait_for_line
from frontends.render import Renderer
from frontends.screen import shown

#: how many of a task's last events the detail view shows
RECENT = 6


def add_review_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    parser = sub.add_parser(
        "review",
        parents=[common],
        help="the reviewers' inbox in the terminal: open a request, approve, edit, or deny it",
    )
    add_filters(parser)


def review_command(
    args: argparse.Namespace, config: Config, out: Console, stdin: LineSource
) -> int:
    """Work through the inbox until `q`, Ctrl-C or the end of input (all exit 0). A decision
    on a task of the Temporal engine goes to its workflow (`config`'s [engine])."""
    engine = config.engine if config.engine.kind == "temporal" else None
    try:
        return _review(args, out, stdin, engine)
    except (KeyboardInterrupt, EOFError):
        out.print()
        return 0


def _review(
    args: argparse.Namespace, out: Console, stdin: LineSource, engine: EngineConfig | None
) -> int:
    reviewer = account()
    with Store.open() as store:
        task = store.resolve(args.task) if args.task else None

        def listed() -> list[Waiting]:
            found = waiting(store.reader(), task=task, tools=args.tool, risks=args.risk)
            return found[: args.limit]

        while True:
            requests = listed()
            print_listing(out, requests, numbered=True)
            out.print("[dim]a number opens a request · Enter looks again · q quits[/]")
            answer = _ask(stdin, store, marker(store.reader()))
            if answer is None:
                out.print("[dim](the inbox changed)[/]")
                _forget_typed(stdin)  # a number typed for the old list must not open another
                continue
            if answer.strip().lower() in ("q", "quit"):
                return 0
            if not answer.strip():
                continue
            number = answer.strip()
            if not (number.isascii() and number.isdecimal()) or not 1 <= int(number) <= len(
                requests
            ):
                out.print(f"[yellow]not a request's number: {shown(answer.strip())}[/]")
                continue
            _open(store, requests[int(number) - 1], out, stdin, reviewer, engine=engine)


def _ask(stdin: LineSource, store: Store, seen: tuple[object, ...]) -> str | None:
    """A line typed, or None when the inbox changed first from `seen` (looked at about once a
    second while nothing is typed)."""
    last = time.monotonic()

    def idle() -> bool:
        nonlocal last
        if time.monotonic() - last < 1.0:
            return False
        last = time.monotonic()
        return marker(store.reader()) != seen

    return wait_for_line(stdin, idle)


def _forget_typed(stdin: LineSource) -> None:
    """Drop what was typed but not yet read (the list it was typed for is gone)."""
    if stdin.isatty():
        with contextlib.suppress(OSError, termios.error):
            termios.tcflush(stdin.fileno(), termios.TCIFLUSH)


def _always(
    store: Store,
    state: TaskState,
    request: Waiting,
    out: Console,
    stdin: LineSource,
    *,
    reviewer: str,
    engine: EngineConfig | None,
) -> None:
    """Approve the request, saving a rule that allows calls exactly like it, once the reviewer
    has read the rule and said yes."""
    out.print(
        "allow calls exactly like this in [bold]t[/]his task only, or in every task of its "
        "[bold]p[/]olicy file? (t/p, Enter: back)"
    )
    scope = {"t": "task", "p": "project"}.get(read_line(stdin).strip().lower())
    if scope is None:
        return
    try:
        approve_always(
            out,
            stdin,
            store,
            state,
            Seen(request.approval_id, request.call_hash),
            scope="task" if scope == "task" else "project",
            reviewer=reviewer,
            origin="review",
            asked=False,
            engine=engine,
        )
    except (NotPending, NothingToApprove, RuleRefused, ConfigError, EngineError) as exc:
        out.print(f"[yellow]{shown(exc.message)}[/]")
    except ConflictingWrite:
        out.print("[yellow]another decision was recorded first: look again[/]")


def _open(
    store: Store,
    request: Waiting,
    out: Console,
    stdin: LineSource,
    reviewer: str,
    *,
    engine: EngineConfig | None = None,
) -> None:
    """Show one request whole, and take the reviewer's decision on it."""
    _forget_typed(stdin)  # only a key typed once the request is on the screen decides it
    state = TaskState.from_store(store, request.task_id)
    out.rule(f"task {request.task_id}: {shown(state.task)}", align="left", style="dim")
    render = Renderer(out)
    for stored in store.events(request.task_id)[-RECENT:]:
        render(stored)
    title = f"{request.approval_id} · {request.call_hash[:SHORT_HASH]} · {shown(request.tool)}"
    body = (
        f"{shown(request.reason)}\n[dim]rule: {shown(request.rule or '?')} · touches: "
        f"{shown(request.risk or '?')}[/]\n\n{shown(request.preview)}"
    )
    out.print(Panel(body, title=title, title_align="left", border_style="yellow"))
    out.print(
        "[bold]a[/] approve · [bold]e[/] edit then approve · [bold]d[/] deny · "
        "[bold]r[/] approve and always allow calls like this (a rule) · Enter: back"
    )
    key = read_line(stdin).strip().lower()
    if key == "r":
        _always(store, state, request, out, stdin, reviewer=reviewer, engine=engine)
        return
    if key not in ("a", "e", "d"):
        return
    edit = reason = None
    if key == "e":
        out.print('the arguments to change, as JSON (e.g. {"amount": 2}):')
        try:
            edit = json.loads(read_line(stdin))
        except (ValueError, RecursionError) as exc:
            out.print(f"[yellow]not JSON ({shown(str(exc))[:200]}): nothing decided[/]")
            return
        if not isinstance(edit, dict):
            out.print("[yellow]give a JSON object: nothing decided[/]")
            return
    if key == "d":
        out.print("why (the model reads it):")
        reason = read_line(stdin)
    try:
        decided = decide_on_its_engine(
            store,
            state,
            Seen(request.approval_id, request.call_hash),
            engine=engine,
            approved=key != "d",
            reason=reason or "",
            reviewer=reviewer,
            origin="review",
            edit=edit,
        )
    except (NotPending, NothingToApprove, EditRefused, EngineError) as exc:
        out.print(f"[yellow]{shown(exc.message)}[/]")
        return
    except ConflictingWrite:
        out.print("[yellow]another decision was recorded first: look again[/]")
        return
    word = "approved" if decided.approved else "denied"
    if isinstance(decided, ApprovalGiven):
        out.print(f"[green]approved[/] {decided.approval_id}: it waits for more reviewers")
        return
    out.print(
        f"[green]{word}[/] {decided.approval_id}{' with your edit' if decided.edited else ''}; "
        f"`agent worker` (or `agent resume {request.task_id}`) carries it out"
    )
