"""`agent sandbox build|prune|list`: the runtime image and the tasks' containers; and the
parsers of the operator's commands (`agent sandbox`, `agent doctor`)."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable

from rich.console import Console

from agent.config import Config
from agent.store import Store
from base.errors import TaskNotFound
from frontends.screen import print_json, shown
from sandbox._docker import LABEL, connect, mapped
from sandbox.deploy_docker import DockerTarget
from sandbox.image import build_image
from sandbox.manager import Sandboxes, store_scope


def add_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    box = sub.add_parser("sandbox", help="the runtime image and the tasks' containers")
    box_sub = box.add_subparsers(dest="sandbox_command", required=True, metavar="COMMAND")
    build = box_sub.add_parser(
        "build",
        parents=[common],
        help="build the runtime image (from debian:bookworm-slim, or a debootstrap base where "
        "no registry is reachable)",
    )
    build.add_argument(
        "--base",
        choices=("auto", "registry", "debootstrap"),
        default="auto",
        help="where the base comes from (default: auto, the registry's if it answers)",
    )
    build.add_argument("--force", action="store_true", help="build even if it is up to date")
    build.add_argument("--mirror", help="Debian mirror for debootstrap (default: its own)")
    prune = box_sub.add_parser(
        "prune",
        parents=[common],
        help="remove containers left behind: finished tasks', and stale or (--pool) all pooled",
    )
    prune.add_argument("--pool", action="store_true", help="also empty the warm pool")
    box_sub.add_parser("list", parents=[common], help="list the project's containers")
    sub.add_parser(
        "doctor",
        parents=[common],
        help="check Docker, the image, Chromium in it, the model config and the store",
    )


def sandboxes_for(config: Config, store: Store) -> Sandboxes:
    """The sandboxes of `store`'s tasks on this host ([engine] host, when one is named)."""
    return Sandboxes(
        config.sandbox, scope=store_scope(store.shared or store.path, config.engine.host)
    )


def deploy_target(config: Config) -> DockerTarget:
    """Where the deploy tools and `agent deployments` run services ([deploy] in agent.toml)."""
    return DockerTarget(
        config.sandbox.image,
        url=config.deploy.engine or None,
        publish=config.deploy.publish,
        allow_private=config.sandbox.allow_private,
    )


def task_is_over(store: Store) -> Callable[[str], bool]:
    def is_over(task_id: str) -> bool:
        try:
            return store.task(task_id).status in ("done", "failed")
        except TaskNotFound:
            return True

    return is_over


def sandbox_command(args: argparse.Namespace, config: Config, store: Store, out: Console) -> int:
    command = args.sandbox_command
    if command == "build":
        client = connect()
        say = (lambda _line: None) if args.json else (lambda line: out.print(shown(line)))
        image_id = build_image(
            client,
            config.sandbox.image,
            base=args.base,
            force=args.force,
            mirror=args.mirror,
            progress=say,
        )
        if args.json:
            print_json({"image": config.sandbox.image, "id": image_id})
        return 0
    if command == "prune":
        sandboxes = sandboxes_for(config, store)
        removed = asyncio.run(_prune(sandboxes, store, pool=args.pool))
        if args.json:
            print_json({"removed": removed})
        else:
            out.print(f"removed {len(removed)} leftover{'s' if len(removed) != 1 else ''}")
            for name in removed:
                out.print(f"  {name}")
        return 0
    client = connect()
    with mapped("listing sandboxes"):
        found = client.containers.list(all=True, filters={"label": f"{LABEL}=1"})
    rows = [{"name": c.name, "status": c.status, "id": (c.id or "")[:12]} for c in found]
    if args.json:
        print_json(rows)
    else:
        for row in rows:
            out.print(f"{row['name']}  {row['status']}  {row['id']}")
        out.print(f"{len(rows)} container{'s' if len(rows) != 1 else ''}")
    return 0


async def _prune(sandboxes: Sandboxes, store: Store, *, pool: bool) -> list[str]:
    try:
        return await sandboxes.reap(task_is_over(store), pool=pool)
    finally:
        await sandboxes.aclose()
