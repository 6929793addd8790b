"""`agent inbox`: every request waiting for a reviewer, across all tasks, oldest first."""

from __future__ import annotations

import argparse
import json
import time

from rich.console import Console
from rich.table import Table

from agent.approvals import decide_command, duration
from agent.events import SHORT_HASH
from agent.inbox import Waiting, waiting
from agent.store import Store
from frontends.screen import print_json, shown


def add_inbox_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    parser = sub.add_parser(
        "inbox",
        parents=[common],
        help="the requests waiting for a reviewer, across all tasks, oldest first",
    )
    add_filters(parser)


def add_filters(parser: argparse.ArgumentParser) -> None:
    """The options that choose which waiting requests are shown."""
    parser.add_argument("--task", metavar="ID", help="only this task's (the start of its id)")
    parser.add_argument(
        "--tool", action="append", default=[], metavar="NAME", help="only calls of this tool"
    )
    parser.add_argument(
        "--risk",
        action="append",
        default=[],
        choices=("read", "write", "external", "deploy"),
        help="only calls of tools that touch this (repeat for more)",
    )
    parser.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")


def inbox_command(args: argparse.Namespace, out: Console) -> int:
    with Store.open(read_only=True) as store:
        task = store.resolve(args.task) if args.task else None
        found = waiting(
            store.reader(), task=task, tools=args.tool, risks=args.risk, limit=args.limit
        )
    if args.json:
        print_json([as_json(w) for w in found])
        return 0
    print_listing(out, found)
    if found:
        first = found[0]
        out.print(
            f"[dim]the oldest: agent show {first.task_id}; then "
            f"{shown(decide_command(first.task_id, first))}[/]",
            soft_wrap=True,
        )
    return 0


def print_listing(out: Console, found: list[Waiting], *, numbered: bool = False) -> None:
    """The requests as a table (numbered, for `agent review` to open by number)."""
    if not found:
        out.print("nothing is waiting for a reviewer")
        return
    now = time.time()
    table = Table(box=None)
    names = ("task", "request", "tool", "risk", "waiting", "expires in", "why")
    for name in ("#", *names) if numbered else names:
        # Nothing cut short: a request's id and hash are what a decision names.
        table.add_column(name, overflow="fold", ratio=3 if name == "why" else None)
    for number, request in enumerate(found, 1):
        why = request.reason.strip().splitlines()[0] if request.reason.strip() else ""
        if (deciders := escalated_to(request)) is not None:
            why = f"escalated to {', '.join(deciders)}: {why}"
        row = [
            request.task_id,
            f"{request.approval_id} {request.call_hash[:SHORT_HASH]}",
            shown(request.tool or "?"),
            request.risk or "?",
            duration(now - request.asked),
            _expires(request, now),
            shown(why if len(why) <= 60 else why[:57] + "..."),
        ]
        table.add_row(*([str(number)] if numbered else []), *row)
    out.print(table)


def as_json(request: Waiting) -> dict[str, object]:
    return {
        "task_id": request.task_id,
        "approval_id": request.approval_id,
        "call_hash": request.call_hash,
        "asked": request.asked,
        "tool": request.tool,
        "risk": request.risk,
        "rule": request.rule,
        "reason": request.reason,
        "preview": request.preview,
        "cause": request.cause,
        "expires": request.expires,
        "expired": request.expires is not None and request.expires <= time.time(),
        "escalated_to": escalated_to(request),
    }


def escalated_to(request: Waiting) -> list[str] | None:
    """The reviewers the request was escalated to (who alone may decide it); None: not."""
    if request.escalated_to is None:
        return None
    names = json.loads(request.escalated_to)
    return [str(name) for name in names]


def _expires(request: Waiting, now: float) -> str:
    if request.expires is None:
        return "never"
    if request.expires <= now:
        return f"expired: agent resume {request.task_id} denies it"
    return duration(request.expires - now)
