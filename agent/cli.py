"""`agent`: run tasks, watch them, resume them, and decide their approvals.

Exit codes (for scripts):
    0  the task is done
    1  the task failed
    2  bad usage, config, or environment (nothing ran)
    3  the task is waiting for a reviewer (`agent approve ID` / `agent deny ID`)
    4  the task is paused (a budget ran out, the model failed, Ctrl-C): `agent resume ID`
    5  the task is stuck (it repeated itself): `agent resume ID` to try again
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from agent import __version__
from agent.approvals import decide, pending_approval
from agent.backends import backend_from_uri, normalize_uri
from agent.backends.base import ModelBackend
from agent.backends.scripted import ScriptedBackend
from agent.config import Config, api_key, find_config, load_config
from agent.errors import AgentError, ConfigError, TaskBusy
from agent.events import Limits
from agent.render import Renderer
from agent.runner import Price, Runner
from agent.state import TaskState
from agent.store import Store
from policies import Gate
from tools.registry import Registry

EXIT = {"done": 0, "failed": 1, "awaiting_approval": 3, "paused": 4, "stuck": 5, "running": 4}
EXIT_USAGE = 2

_MODEL_HELP = """model URI: scripted:PATH (replay a script), openai:MODEL ($OPENAI_API_KEY),
openai-compatible:BASE_URL#MODEL (vLLM, llama.cpp's server, Ollama...); default: [model] uri
in agent.toml, else $AGENT_MODEL"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agent",
        description="Run tasks with a model, tools, a policy gate and approvals.",
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"agent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        type=Path,
        help="agent.toml to use (default: ./agent.toml, then $AGENT_HOME/agent.toml)",
    )
    common.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object at the end instead of live output",
    )
    running = argparse.ArgumentParser(add_help=False, parents=[common])
    running.add_argument("--model", help=_MODEL_HELP)
    running.add_argument(
        "--tools",
        action="append",
        default=[],
        metavar="MODULE_OR_FILE",
        help="register the @tool functions of a module or .py file (repeatable)",
    )
    running.add_argument(
        "--policy",
        type=Path,
        help="policy rules file (default: [policy] file "
        "in agent.toml, else the packaged default policy)",
    )
    limits = running.add_argument_group("limits (per task)")
    limits.add_argument("--max-steps", type=int, help="executor turns (default 50)")
    limits.add_argument("--max-tokens", type=int, help="model tokens, in and out (default 500000)")
    limits.add_argument(
        "--max-seconds", type=float, help="time spent in the model and tools (default 1800)"
    )
    limits.add_argument(
        "--max-cost",
        type=float,
        dest="max_cost_usd",
        help="US dollars, where [prices] are known (default: none)",
    )

    run = sub.add_parser(
        "run",
        parents=[running],
        help="run a task",
        description="Plan and carry out a task, showing each step live. In a "
        "terminal, approvals are asked inline.",
    )
    run.add_argument("task", help="what to do, in plain words")
    run.add_argument(
        "--no-prompt",
        action="store_true",
        help="never ask for approvals inline; stop with exit code 3 instead",
    )

    resume = sub.add_parser("resume", parents=[running], help="continue a task from its log")
    target = resume.add_mutually_exclusive_group(required=True)
    target.add_argument("id", nargs="?", help="task id (a unique prefix is enough)")
    target.add_argument(
        "--all", action="store_true", help="continue every task a crashed runner left running"
    )
    resume.add_argument("--no-prompt", action="store_true", help=argparse.SUPPRESS)

    for name, verb in (("approve", "approve"), ("deny", "deny")):
        p = sub.add_parser(
            name, parents=[running], help=f"{verb} a task's pending action, then continue the task"
        )
        p.add_argument("id", help="task id (a unique prefix is enough)")
        p.add_argument(
            "--reason",
            required=name == "deny",
            default="",
            help="why (shown to the model)" + (" (required)" if name == "deny" else ""),
        )
        p.add_argument(
            "--no-resume",
            action="store_true",
            help="record the decision only; do not continue the task here",
        )
        p.add_argument(
            "--no-prompt", action="store_true", help="never ask for later approvals inline"
        )

    tasks = sub.add_parser("tasks", parents=[common], help="list tasks, newest first")
    tasks.add_argument("--status", action="append", help="only tasks in this status (repeatable)")
    tasks.add_argument("--limit", type=int, default=50)

    show = sub.add_parser("show", parents=[common], help="print a task's whole event history")
    show.add_argument("id", help="task id (a unique prefix is enough)")

    tools = sub.add_parser("tools", help="the registered tools")
    tools_sub = tools.add_subparsers(dest="tools_command", required=True, metavar="COMMAND")
    tools_list = tools_sub.add_parser("list", parents=[common], help="list the registered tools")
    tools_list.add_argument(
        "--tools",
        action="append",
        default=[],
        metavar="MODULE_OR_FILE",
        help="also register the tools of a module or .py file",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    out = Console(stderr=args.json, highlight=False)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        config = load_config(find_config(args.config))
        return _dispatch(args, config, out)
    except AgentError as exc:
        err.print(f"[bold red]error:[/] {exc}", markup=True, highlight=False)
        return EXIT_USAGE
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]: the task is paused; `agent resume ID` continues it")
        return EXIT["paused"]


def _dispatch(args: argparse.Namespace, config: Config, out: Console) -> int:
    command = args.command
    if command == "tools":
        return _tools_list(args, config, out)
    with Store.open() as store:
        if command == "tasks":
            return _tasks(args, store, out)
        if command == "show":
            return _show(args, store, out)
        return asyncio.run(_drive(args, config, store, out))


@dataclass
class _Session:
    """What the commands that drive tasks share: parsed flags, config, store, tools, gate."""

    args: argparse.Namespace
    config: Config
    store: Store
    out: Console
    registry: Registry
    gate: Gate
    prices: dict[str, Price]

    def runner(self, uri: str | None) -> Runner:
        if not uri:
            raise ConfigError(
                "no model configured: pass --model URI, set [model] uri in "
                "agent.toml, or set $AGENT_MODEL (e.g. --model "
                "scripted:examples/quickstart.json)"
            )
        planner_uri = self.config.model.planner
        executor = _backend(normalize_uri(uri), self.config)
        planner = _backend(normalize_uri(planner_uri), self.config) if planner_uri else None
        runner = Runner(
            self.store,
            self.registry,
            self.gate,
            planner=planner or executor,
            executor=executor,
            prices=self.prices,
        )
        if not self.args.json:
            runner.subscribe(Renderer(self.out))
        return runner


async def _drive(args: argparse.Namespace, config: Config, store: Store, out: Console) -> int:
    policy = args.policy or config.policy.file
    s = _Session(
        args,
        config,
        store,
        out,
        _registry(config, args.tools),
        Gate.from_file(policy) if policy else Gate.default(),
        {name: Price(p.input, p.output) for name, p in config.prices.items()},
    )
    limits_given = {
        k: getattr(args, k) for k in Limits.model_fields if getattr(args, k, None) is not None
    }

    if args.command == "run":
        runner = s.runner(args.model or config.model.uri or os.environ.get("AGENT_MODEL"))
        task_id = runner.create(args.task, config.limits.model_copy(update=limits_given))
        return await _until_stopped(s, runner, task_id, None)
    if args.command == "resume" and args.all:
        return await _resume_all(s)

    task_id = store.resolve(args.id)
    state = _load(store, task_id)
    runner = s.runner(args.model or state.model)
    limits = state.limits.model_copy(update=limits_given) if limits_given else None
    if args.command in ("approve", "deny"):
        decision = decide(
            store,
            state,
            approved=args.command == "approve",
            reason=args.reason,
            reviewer=getpass.getuser(),
        )
        if not args.json:
            word = "approved" if decision.approved else "denied"
            out.print(f"{word} {decision.approval_id}")
        if args.no_resume:
            return _report(s, runner, runner.load(task_id))
    return await _until_stopped(s, runner, task_id, limits)


async def _until_stopped(s: _Session, runner: Runner, task_id: str, limits: Limits | None) -> int:
    """Run the task; in a terminal, ask each approval inline and go on."""
    try:
        state = await runner.resume(task_id, limits)
        while state.status == "awaiting_approval" and _can_prompt(s.args):
            answer = _ask_approval(s.out)
            if answer is None:
                break  # no answer (end of input): the task keeps waiting, durably
            approved, reason = answer
            decision = decide(
                s.store, state, approved=approved, reason=reason, reviewer=getpass.getuser()
            )
            word = "approved" if decision.approved else "denied"
            s.out.print(f"    {word} {decision.approval_id}")
            state = await runner.resume(task_id)
    finally:
        await _close(runner)
    return _report(s, runner, state)


async def _close(runner: Runner) -> None:
    for backend in set(runner.backends.values()):
        await backend.aclose()


def _ask_approval(out: Console) -> tuple[bool, str] | None:
    """Ask until the answer is yes or no; None at the end of input."""
    while True:
        try:
            answer = out.input(
                "[bold yellow]Approve?[/] \\[y]es / \\[n]o, optionally followed by a reason > "
            ).strip()
        except EOFError:
            return None
        word, _, reason = answer.partition(" ")
        if word.lower() in ("y", "yes"):
            return True, reason.strip()
        if word.lower() in ("n", "no"):
            return False, reason.strip()
        out.print("please answer y or n (Ctrl-C pauses the task; it stays waiting for you)")


def _can_prompt(args: argparse.Namespace) -> bool:
    return not args.json and not getattr(args, "no_prompt", False) and sys.stdin.isatty()


async def _resume_all(s: _Session) -> int:
    rows = s.store.tasks(statuses=["running"])
    codes, results = [], []
    for row in reversed(rows):  # oldest first
        runner = s.runner(s.args.model or _load(s.store, row.id).model)
        try:
            state = await runner.run(row.id)
        except TaskBusy as exc:
            s.out.print(f"[dim]{row.id}: {exc}; left to it[/]")
            continue
        finally:
            await _close(runner)
        codes.append(EXIT.get(state.status, 1))
        results.append(_summary(state))
    if s.args.json:
        print(json.dumps({"resumed": results}, ensure_ascii=False))
    elif not rows:
        s.out.print("no unfinished tasks to continue")
    return max(codes, default=0)


def _backend(uri: str, config: Config) -> ModelBackend:
    mc = config.model
    default_env = "OPENAI_API_KEY"
    return backend_from_uri(
        uri, api_key=api_key(mc, default_env), timeout=mc.timeout, max_attempts=mc.max_attempts
    )


def _registry(config: Config, extra: list[str]) -> Registry:
    registry = Registry()
    registry.load_entry_points()
    for spec in [*config.tools.modules, *extra]:
        registry.load_module(spec)
    return registry


def _load(store: Store, task_id: str) -> TaskState:
    return TaskState.fold(task_id, [(e.seq, e.event) for e in store.events(task_id)])


def _summary(state: TaskState) -> dict[str, Any]:
    request = pending_approval(state)
    return {
        "task_id": state.task_id,
        "status": state.status,
        "answer": state.answer,
        "reason": state.end_reason or (state.pause.detail if state.pause else None),
        "pause_reason": state.pause.reason if state.pause else None,
        "steps": state.steps_taken,
        "plan": list(state.plan),
        "completed_steps": len(state.completed),
        "replans": state.replans,
        "usage": {
            "input_tokens": state.usage.input_tokens,
            "output_tokens": state.usage.output_tokens,
            "cost_usd": round(state.cost_usd, 6),
            "seconds": round(state.seconds, 3),
        },
        "pending_approval": None
        if request is None
        else {
            "approval_id": request.approval_id,
            "reason": request.reason,
            "preview": request.preview,
        },
    }


def _report(s: _Session, runner: Runner, state: TaskState) -> int:
    args, out = s.args, s.out
    code = EXIT.get(state.status, 1)
    for backend in set(runner.backends.values()):
        if state.status == "done" and isinstance(backend, ScriptedBackend):
            try:
                backend.verify(state.turns)
            except AgentError as exc:
                Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {exc}")
                code = 1
    if args.json:
        print(json.dumps(_summary(state), ensure_ascii=False))
        return code
    hints = {
        "awaiting_approval": f"waiting for a reviewer: agent approve {state.task_id}  |  "
        f"agent deny {state.task_id} --reason '…'",
        "paused": f"continue with: agent resume {state.task_id}"
        + (
            " --max-steps N (or another raised limit)"
            if state.pause and state.pause.reason == "budget_exhausted"
            else ""
        ),
        "stuck": f"try again with: agent resume {state.task_id}",
    }
    if state.status in hints:
        out.print(f"[dim]{hints[state.status]}[/]")
    u = state.usage
    out.print(
        f"[dim]{state.task_id}: {state.status} · {state.steps_taken} steps · "
        f"{u.input_tokens}+{u.output_tokens} tokens · {state.seconds:.1f} s[/]"
    )
    return code


def _tasks(args: argparse.Namespace, store: Store, out: Console) -> int:
    rows = store.tasks(statuses=args.status, limit=args.limit)
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "task_id": r.id,
                        "status": r.status,
                        "task": r.task,
                        "created": r.created,
                        "updated": r.updated,
                    }
                    for r in rows
                ]
            )
        )
        return 0
    if not rows:
        out.print('no tasks yet: agent run "…" starts one')
        return 0
    table = Table("id", "status", "updated", "task", box=None)
    from datetime import datetime  # noqa: PLC0415

    for r in rows:
        when = datetime.fromtimestamp(r.updated).strftime("%Y-%m-%d %H:%M")
        table.add_row(r.id, r.status, when, r.task if len(r.task) < 70 else r.task[:67] + "...")
    out.print(table)
    return 0


def _show(args: argparse.Namespace, store: Store, out: Console) -> int:
    task_id = store.resolve(args.id)
    events = store.events(task_id)
    if args.json:
        print(
            json.dumps(
                [{"seq": e.seq, "ts": e.ts, **e.event.model_dump(mode="json")} for e in events],
                ensure_ascii=False,
            )
        )
        return 0
    render = Renderer(out, detailed=True)
    for stored in events:
        render(stored)
    state = TaskState.fold(task_id, [(e.seq, e.event) for e in events])
    u = state.usage
    out.print(
        f"[dim]{task_id}: {state.status} · {state.steps_taken} steps · "
        f"{u.input_tokens}+{u.output_tokens} tokens · ${state.cost_usd:.4f} · "
        f"{state.seconds:.1f} s · {len(events)} events[/]"
    )
    return 0


def _tools_list(args: argparse.Namespace, config: Config, out: Console) -> int:
    registry = _registry(config, args.tools)
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "name": t.name,
                        "description": t.description,
                        "touches": t.touches,
                        "timeout": t.timeout,
                        "parameters": t.spec.parameters,
                    }
                    for t in registry
                ],
                ensure_ascii=False,
            )
        )
        return 0
    table = Table("tool", "touches", "timeout", "description", box=None)
    for t in registry:
        table.add_row(t.name, t.touches, f"{t.timeout:g} s", t.description)
    out.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
