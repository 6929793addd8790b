"""`agent reviewers add|list|revoke`: who may decide through the HTTP API, with their tokens."""

from __future__ import annotations

import argparse
from datetime import datetime

from rich.console import Console

from agent import reviewers
from agent.store import Store
from frontends.screen import print_json, say


def add_reviewer_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    parser = sub.add_parser(
        "reviewers", help="who may decide through the HTTP API (`agent serve`), by token"
    )
    commands = parser.add_subparsers(dest="reviewers_command", required=True, metavar="COMMAND")
    add = commands.add_parser(
        "add", parents=[common], help="a new reviewer; their token is printed once, and kept hashed"
    )
    add.add_argument("name", help="letters, digits and . _ @ - (it is recorded with each decision)")
    commands.add_parser("list", parents=[common], help="each reviewer, and whether revoked")
    revoke = commands.add_parser(
        "revoke", parents=[common], help="refuse a reviewer's token from now on"
    )
    revoke.add_argument("name")


def reviewers_command(args: argparse.Namespace, out: Console) -> int:
    command = args.reviewers_command
    if command == "list":
        with Store.open(read_only=True) as store:
            found = reviewers.listing(store.reader())
        if args.json:
            print_json(
                [{"name": r.name, "created": r.created, "revoked": r.revoked} for r in found]
            )
        elif not found:
            out.print("no reviewers yet: agent reviewers add NAME")
        for reviewer in [] if args.json else found:
            since = datetime.fromtimestamp(reviewer.created).strftime("%Y-%m-%d %H:%M")
            state = (
                f"revoked {datetime.fromtimestamp(reviewer.revoked):%Y-%m-%d %H:%M}"
                if reviewer.revoked is not None
                else "active"
            )
            out.print(f"{reviewer.name}  since {since}  {state}", soft_wrap=True, markup=False)
        return 0
    if command == "add":
        with Store.open() as store, store.writing() as db:
            token = reviewers.add(db, args.name)
        # Shown once it is stored (a write that failed shows nothing).
        say(
            args.json,
            out,
            {"name": args.name, "token": token},
            f"{args.name} may decide through `agent serve` with this token, shown once:\n{token}",
        )
        return 0
    with Store.open() as store, store.writing() as db:
        reviewers.revoke(db, args.name)
    say(args.json, out, {"name": args.name, "revoked": True}, f"{args.name}'s token is revoked")
    return 0
