"""`agent deployments list|logs|stop|rollback`: the deploy tools' powers, outside a task."""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import asdict

from rich.console import Console

from agent.config import Config
from frontends.sandbox_commands import deploy_target
from frontends.screen import print_json, say, shown
from sandbox.deploy import DeployFailed, Deployment


def add_deploy_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    deployments = sub.add_parser(
        "deployments", help="the services deployed by tasks: list, logs, stop, rollback"
    )
    commands = deployments.add_subparsers(dest="deploy_command", required=True, metavar="COMMAND")
    commands.add_parser("list", parents=[common], help="each deployment, its URL and versions")
    logs = commands.add_parser("logs", parents=[common], help="the last lines of its log")
    logs.add_argument("name")
    logs.add_argument("--lines", type=int, default=100, help="how many (default: 100)")
    logs.add_argument(
        "--egress",
        action="store_true",
        help="what its egress proxy let through and refused (a JSON object a line)",
    )
    stop = commands.add_parser("stop", parents=[common], help="stop it serving (versions kept)")
    stop.add_argument("name")
    stop.add_argument(
        "--remove", action="store_true", help="remove it: its versions, front and network"
    )
    rollback = commands.add_parser(
        "rollback", parents=[common], help="serve the version before, with no rebuild"
    )
    rollback.add_argument("name")


def deployments_command(args: argparse.Namespace, config: Config, out: Console) -> int:
    target = deploy_target(config)
    command = args.deploy_command
    try:
        if command == "list":
            found = asyncio.run(target.deployments())
            if args.json:
                print_json([_as_json(d) for d in found])
            elif not found:
                out.print("no deployments")
            for deployment in [] if args.json else found:
                _print(deployment, out)
        elif command == "logs":
            text = asyncio.run(target.logs(args.name, args.lines, egress=args.egress))
            print_json({"name": args.name, "logs": text}) if args.json else out.print(shown(text))
        elif command == "stop":
            if args.remove:
                asyncio.run(target.remove(args.name))
                say(args.json, out, {"name": args.name, "removed": True}, f"removed {args.name}")
            else:
                asyncio.run(target.stop(args.name))
                say(args.json, out, {"name": args.name, "stopped": True}, f"stopped {args.name}")
        else:
            version = asyncio.run(target.rollback(args.name))
            url = asyncio.run(target.status(args.name)).url
            say(
                args.json,
                out,
                {"name": args.name, "version": version.number, "url": url},
                f"{args.name}: v{version.number} serves at {url}",
            )
    except DeployFailed as exc:
        print(f"error: {exc} [{exc.code}]", file=sys.stderr)
        if exc.logs:
            print(exc.logs.rstrip(), file=sys.stderr)
        return 1
    return 0


def _print(deployment: Deployment, out: Console) -> None:
    out.print(f"{shown(deployment.name)}  {deployment.url or 'stopped'}")
    for v in deployment.versions:
        who = f"  (approved by {shown(v.approved_by)})" if v.approved_by else ""
        egress = f"  egress: {shown(', '.join(v.egress))}" if v.egress else ""
        out.print(f"  v{v.number}  {v.state:8}  {shown(v.kind)}: {shown(v.command)}{who}{egress}")


def _as_json(deployment: Deployment) -> dict[str, object]:
    return {
        "name": deployment.name,
        "url": deployment.url,
        "versions": [asdict(v) for v in deployment.versions],
    }
