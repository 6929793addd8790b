"""`agent audit verify|head|export`: checking and reading the audit log (see agent/audit.py)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console

from agent import audit
from agent._db import Db
from agent.store import Store
from base.errors import ConfigError
from frontends.screen import print_json, shown

#: `agent audit verify`'s exit code when the log does not hold
EXIT_BROKEN = 1


def add_audit_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    parser = sub.add_parser(
        "audit",
        help="the audit log: every gate decision, approval, intent and result, chained by hash",
    )
    commands = parser.add_subparsers(dest="audit_command", required=True, metavar="COMMAND")
    verify = commands.add_parser(
        "verify",
        parents=[common],
        help="recompute the chain; name the first entry changed, removed, reordered or cut "
        "(exit 1 if there is one)",
    )
    verify.add_argument(
        "--head",
        metavar="N:SHA256",
        help="a head printed by `agent audit head` and kept elsewhere: the log must still hold it",
    )
    commands.add_parser(
        "head",
        parents=[common],
        help="the newest entry's number and hash (N:SHA256), to keep elsewhere",
    )
    export = commands.add_parser(
        "export", parents=[common], help="every entry with its event, a JSON object a line"
    )
    export.add_argument(
        "--output", "-o", type=Path, metavar="FILE", help="write to FILE (default: standard output)"
    )


def audit_command(args: argparse.Namespace, out: Console) -> int:
    with Store.open(read_only=True) as store:
        return _command(args, store.reader(), out)


def _command(args: argparse.Namespace, db: Db, out: Console) -> int:
    command = args.audit_command
    if command == "head":
        head = audit.head(db)
        if args.json:
            print_json({"n": head.n, "hash": head.hash})
        else:
            out.print(str(head), soft_wrap=True)
        return 0
    if command == "export":
        return _export(db, args.output)
    try:
        pinned = audit.Head.parse(args.head) if args.head else None
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    verdict = audit.verify(db, pinned)
    if args.json:
        print_json(
            {
                "ok": verdict.ok,
                "entries": verdict.entries,
                "head": str(verdict.head),
                "problem": verdict.problem,
            }
        )
    elif verdict.ok:
        out.print(
            f"[green]ok[/]: {verdict.entries} entries hold; head {verdict.head}", soft_wrap=True
        )
    else:
        out.print(
            f"[bold red]broken[/]: {shown(verdict.problem or '')}\n"
            f"(the {verdict.entries} entries before it hold)",
            soft_wrap=True,
        )
    return 0 if verdict.ok else EXIT_BROKEN


def _export(db: Db, output: Path | None) -> int:
    try:
        stream = output.open("w", encoding="utf-8") if output is not None else sys.stdout
    except OSError as exc:
        raise ConfigError(f"cannot write {output}: {exc.strerror or exc}") from None
    try:
        for entry in audit.entries(db):
            stream.write(json.dumps(entry, ensure_ascii=False) + "\n")
    finally:
        if output is not None:
            stream.close()
    return 0
