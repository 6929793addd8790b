"""`agent`: run tasks, watch them, resume them, and decide their approvals.

Exit codes (for scripts):
    0  the task is done
    1  the task failed (or a scripted run left turns of its script unused)
    2  bad usage, config, or environment (nothing ran)
    3  the task is waiting for a reviewer (`agent approve ID REQ HASH` / `agent deny ...`)
    4  the task is paused (a budget ran out, the model failed, Ctrl-C): `agent resume ID`
    5  the task is stuck (it repeated itself): `agent resume ID` to try again
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

from pydantic import ValidationError
from rich.console import Console

from agent import __version__
from agent._ops import add_parsers, doctor, sandbox_command, sandboxes_for, task_is_over
from agent._views import next_move, print_history, print_tasks, print_tools, status_line, summary
from agent.approvals import NothingToApprove, NotPending, Seen, decide, pending_approval
from agent.backends import backend_from_uri, normalize_uri
from agent.backends.base import ModelBackend
from agent.backends.local import BUNDLED, ModelInfo
from agent.backends.openai_compat import OpenAICompatibleBackend
from agent.backends.scripted import ScriptedBackend
from agent.config import Config, find_config, load_config
from agent.events import SHORT_HASH, Attachment, Limits, Status
from agent.render import Renderer
from agent.runner import Price, Runner
from agent.screen import json_line, shown
from agent.state import TaskState
from agent.store import Store
from base.errors import (
    AgentError,
    BackendError,
    ConfigError,
    ConflictingWrite,
    SandboxError,
    TaskBusy,
)
from policies import Gate
from sandbox.limits import SandboxLimits
from sandbox.manager import Sandboxes
from tools.registry import Registry

EXIT = {"done": 0, "failed": 1, "awaiting_approval": 3, "paused": 4, "stuck": 5, "running": 4}
EXIT_USAGE = 2

#: the largest file `--file` takes
MAX_FILE_BYTES = 256_000

FALLBACK_NOTICE = (
    "[yellow]No model is configured, so this runs on the bundled SmolLM2-135M-Instruct: a tiny "
    "fallback model (135 million parameters, on the CPU) that manages only small, simple "
    "tasks.[/] For real work, name a model with --model, $AGENT_MODEL or \\[model] uri in "
    "agent.toml: e.g. anthropic:MODEL, openai:MODEL, or local:PATH.gguf for a GGUF model "
    "(a Mixture-of-Experts model such as Qwen3-30B-A3B runs well on a CPU)."
)

_MODEL_HELP = """model URI: anthropic:MODEL ($ANTHROPIC_API_KEY), openai:MODEL ($OPENAI_API_KEY),
openai-compatible:BASE_URL#MODEL (vLLM, llama.cpp's server, Ollama, Gemini...), local:PATH.gguf
(a GGUF model, dense or MoE, run by llama.cpp in a model worker), local:bundled (the tiny
SmolLM2-135M fallback), scripted:PATH (replay a script). Default: for a new task,
$AGENT_MODEL, else [model] uri in agent.toml, else local:bundled; for an existing task, the model
it started with"""


_ID_HELP = "task id (a unique prefix is enough)"
_TOOLS_HELP = "register the @tool functions of a module or .py file (repeatable)"


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def _common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        type=Path,
        help="agent.toml to use (default: ./agent.toml, then $AGENT_HOME/agent.toml)",
    )
    common.add_argument(
        "--json", action="store_true", help="print JSON instead of text (for scripts)"
    )
    return common


def _running_options(common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of every command that drives a task: run, resume, approve, deny."""
    running = argparse.ArgumentParser(add_help=False, parents=[common])
    running.add_argument("--model", help=_MODEL_HELP)
    running.add_argument(
        "--tools", action="append", default=[], metavar="MODULE_OR_FILE", help=_TOOLS_HELP
    )
    running.add_argument(
        "--policy",
        type=Path,
        help="policy rules file (default: [policy] file in agent.toml, else the packaged "
        "default policy)",
    )
    running.add_argument(
        "--no-prompt",
        action="store_true",
        help="never ask for approvals inline; stop with exit code 3 instead",
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
    box = running.add_argument_group(
        "sandbox (a new task's container; within [sandbox.max] of agent.toml)"
    )
    box.add_argument(
        "--memory",
        type=int,
        dest="memory_mb",
        metavar="MB",
        help="RAM, /workspace and /tmp included (default: [sandbox.limits], else 1024)",
    )
    box.add_argument("--cpus", type=float, help="CPUs (default: [sandbox.limits], else 1)")
    box.add_argument(
        "--pids", type=int, help="processes and threads (default: [sandbox.limits], else 256)"
    )
    box.add_argument(
        "--allow-domain",
        action="append",
        dest="allow_domains",
        metavar="HOST",
        help="let the sandbox reach HOST (or *.domain, HOST:PORT) through the egress proxy "
        "(repeatable; default: no network)",
    )
    return running


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agent",
        description="Run tasks with a model, tools, a policy gate and approvals.",
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"agent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = _common_options()
    running = _running_options(common)

    run = sub.add_parser(
        "run",
        parents=[running],
        help="run a task",
        description="Plan and carry out a task, showing each step live. In a terminal, "
        "approvals are asked inline.",
    )
    run.add_argument("task", help="what to do, in plain words")
    run.add_argument(
        "--file",
        action="append",
        default=[],
        dest="files",
        metavar="PATH",
        help="give the model this text file with the task, e.g. to ask about it (repeatable; "
        f"up to {MAX_FILE_BYTES // 1000:,} kB each; kept in the task's log)",
    )
    run.add_argument(
        "--no-plan",
        action="store_true",
        help="skip the planner: the task is its own single step (the default when no model is "
        "configured and the bundled fallback runs; [model] plan = false in agent.toml sets it "
        "for every task)",
    )

    resume = sub.add_parser("resume", parents=[running], help="continue a task from its log")
    target = resume.add_mutually_exclusive_group(required=True)
    target.add_argument("id", nargs="?", help=_ID_HELP)
    target.add_argument(
        "--all", action="store_true", help="continue every task a crashed runner left running"
    )

    for verb in ("approve", "deny"):
        decide_cmd = sub.add_parser(
            verb, parents=[running], help=f"{verb} a task's pending action, then continue the task"
        )
        decide_cmd.add_argument("id", help=_ID_HELP)
        decide_cmd.add_argument(
            "request", help="the request's id, as shown with it (`agent show ID` shows it)"
        )
        decide_cmd.add_argument(
            "hash",
            help=f"the start of its call's hash, as shown with it ({SHORT_HASH} characters): "
            "a decision on any other request is refused",
        )
        decide_cmd.add_argument(
            "--reason",
            required=verb == "deny",
            default="",
            help="why (shown to the model)" + (" (required)" if verb == "deny" else ""),
        )
        decide_cmd.add_argument(
            "--no-resume", action="store_true", help="record the decision; do not continue here"
        )

    tasks = sub.add_parser("tasks", parents=[common], help="list tasks, newest first")
    tasks.add_argument(
        "--status",
        action="append",
        choices=get_args(Status),
        help="only tasks in this status (repeatable)",
    )
    tasks.add_argument(
        "--limit", type=_positive, default=50, help="show at most this many (default 50)"
    )

    show = sub.add_parser("show", parents=[common], help="print a task's whole event history")
    show.add_argument("id", help=_ID_HELP)

    tools = sub.add_parser("tools", help="the registered tools")
    tools_sub = tools.add_subparsers(dest="tools_command", required=True, metavar="COMMAND")
    tools_list = tools_sub.add_parser("list", parents=[common], help="list the registered tools")
    tools_list.add_argument(
        "--tools", action="append", default=[], metavar="MODULE_OR_FILE", help=_TOOLS_HELP
    )
    add_parsers(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    out = Console(stderr=args.json, highlight=False)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        config = load_config(find_config(args.config))
        return _dispatch(args, config, out)
    except AgentError as exc:
        err.print(f"[bold red]error:[/] {shown(str(exc))}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]: the task is paused (`agent tasks` lists it)")
        return EXIT["paused"]


def _dispatch(args: argparse.Namespace, config: Config, out: Console) -> int:
    command = args.command
    if command == "tools":
        print_tools(_registry([*config.tools.modules, *args.tools]), out, as_json=args.json)
        return 0
    if command == "doctor":
        return doctor(args, config, out)
    if command in ("tasks", "show"):
        with Store.open(read_only=True) as store:  # a read-only store can still be read
            if command == "tasks":
                print_tasks(store, out, statuses=args.status, limit=args.limit, as_json=args.json)
            else:
                print_history(store, store.resolve(args.id), out, as_json=args.json)
            for damage in store.damage:  # what could not be read, said apart from what could
                print(f"agent: {damage}", file=sys.stderr)
            return 1 if store.damage else 0
    with Store.open() as store:
        if command == "sandbox":
            return sandbox_command(args, config, store, out)
        return _drive(args, config, store, out)


@dataclass(frozen=True)
class _Setup:
    """What a task runs with. A new task takes it from the flags and agent.toml; a task that
    exists keeps what it was started with, unless a flag says otherwise."""

    model: str | None
    planner: str | None
    tools: tuple[str, ...]
    policy: str | None

    @classmethod
    def new(cls, args: argparse.Namespace, config: Config) -> _Setup:
        policy = args.policy or config.policy.file
        return cls(
            model=args.model or os.environ.get("AGENT_MODEL") or config.model.uri,
            planner=config.model.planner,
            tools=tuple(_where(t) for t in [*config.tools.modules, *args.tools]),
            policy=str(Path(policy).resolve()) if policy else None,
        )

    @classmethod
    def of(cls, state: TaskState, args: argparse.Namespace) -> _Setup:
        created = state.created
        assert created is not None
        return cls(
            model=args.model or created.model,
            planner=created.planner,
            tools=tuple(_where(t) for t in args.tools) if args.tools else created.tools,
            policy=str(Path(args.policy).resolve()) if args.policy else created.policy,
        )


def _attachments(paths: Sequence[str]) -> tuple[Attachment, ...]:
    """The files given with `--file`, read now. Raises `ConfigError` for one that cannot be
    read, is not UTF-8 text, is too large, or shares its name with another."""
    files: dict[str, Attachment] = {}
    for given in paths:
        path = Path(given).expanduser()
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"--file {given}: {exc.strerror or exc}") from exc
        if len(data) > MAX_FILE_BYTES:
            raise ConfigError(
                f"--file {given} is {len(data):,} bytes; the most is {MAX_FILE_BYTES:,}. For a "
                "larger file, let the task read it in its sandbox"
            )
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"--file {given} is not UTF-8 text") from None
        # Kept as an artifact of this name, which cannot be hidden: .env is kept as _env.
        name = "_" + path.name.lstrip(".") if path.name.startswith(".") else path.name
        if name in files:
            raise ConfigError(f"two files named {name!r} given with --file")
        files[name] = Attachment(name=name, content=text)
    return tuple(files.values())


def _where(spec: str) -> str:
    """A tool module as it is recorded: a .py file by its absolute path."""
    return str(Path(spec).resolve()) if spec.endswith(".py") else spec


@dataclass
class _Session:
    """What the commands that drive tasks share: parsed flags, config, store, console."""

    args: argparse.Namespace
    config: Config
    store: Store
    out: Console
    renderer: Renderer | None = None

    def runner(self, setup: _Setup, task_id: str | None = None) -> Runner:
        """A runner for `setup`. Raises `ConfigError` (before anything is recorded) if its model,
        tools or policy cannot be had."""
        if not setup.model:
            self._say(FALLBACK_NOTICE)
        model = normalize_uri(setup.model or BUNDLED)
        planner = normalize_uri(setup.planner) if setup.planner else None
        if planner and planner != model and "scripted" in (model.split(":")[0], planner[:8]):
            raise ConfigError(
                "a scripted model answers the planner and the executor alike (its turns count "
                "every model call): do not combine it with a separate [model] planner"
            )
        try:
            registry = _registry(setup.tools)
        except ConfigError as exc:
            if task_id is None:
                raise
            raise ConfigError(
                f"task {task_id} runs with tools that cannot be loaded now: {exc} "
                "(pass --tools to give it others)"
            ) from exc
        executor = _backend(model, self.config, self._retrying, self._loaded, self._noted)
        runner = Runner(
            self.store,
            registry,
            Gate.from_file(setup.policy) if setup.policy else Gate.default(),
            planner=_backend(planner, self.config, self._retrying, self._loaded, self._noted)
            if planner
            else executor,
            executor=executor,
            prices={name: Price(p.input, p.output) for name, p in self.config.prices.items()},
            sandboxes=sandboxes_for(self.config, self.store),
        )
        if not self.args.json:
            renderer = self.renderer = Renderer(self.out)
            runner.subscribe(renderer)
            runner.subscribe_output(renderer.output)
            runner.subscribe_deltas(renderer.delta)
        return runner

    def _say(self, text: str) -> None:
        """A note for the person, on stderr (so --json output stays one object)."""
        Console(stderr=True, soft_wrap=True, highlight=False).print(text)

    def _loaded(self, info: ModelInfo, seconds: float) -> None:
        self._say(f"[dim]model: {shown(info.summary())}, ready in {seconds:.1f} s[/]")

    def _noted(self, note: str) -> None:
        """Say once what the model's server could not do, and how it is asked instead."""
        self._say(f"[dim]model: {shown(note)}[/]")

    def _retrying(self, error: BackendError, attempt: int, wait: float) -> None:
        """Say that the model is being asked again, so a slow retry is not silence."""
        attempts = error.context.get("attempts", self.config.model.max_attempts)
        if self.renderer is not None:
            self.renderer.restart()
        self._say(
            f"[dim]model: {shown(str(error))} \\[{error.code}]; trying again in {wait:.1f} s "
            f"(attempt {attempt} of {attempts})[/]"
        )


def _drive(args: argparse.Namespace, config: Config, store: Store, out: Console) -> int:
    s = _Session(args, config, store, out)
    given = {k: getattr(args, k) for k in Limits.model_fields if getattr(args, k, None) is not None}

    if args.command == "run":
        if not args.task.strip():
            raise ConfigError(
                'the task is empty: say what to do, e.g. agent run "summarise notes.txt"'
            )
        setup = _Setup.new(args, config)
        runner = s.runner(setup)
        new_limits = _limits(config.limits, given)
        if (orphans := len(store.orphans())) and not args.json:
            out.print(
                f"[yellow]{orphans} task{'s were' if orphans > 1 else ' was'} left running by a "
                "runner that stopped[/]; `agent resume --all` continues them"
            )
        if new_limits.max_cost_usd is not None and not _priced(runner, config) and not args.json:
            out.print(
                "[yellow]warning:[/] a cost limit is set but \\[prices] has no price for this "
                "model, so cost is not counted"
            )
        task_id = runner.create(
            args.task,
            new_limits,
            tools=setup.tools,
            policy=setup.policy,
            sandbox=_sandbox_limits(args, config),
            files=_attachments(args.files),
            # A tiny model cannot plan: the fallback acts on the task directly.
            plan=not args.no_plan
            and config.model.plan
            and (setup.model is not None or setup.planner is not None),
        )
        return _until_stopped(s, runner, task_id, None)
    if args.command == "resume" and args.all:
        if given:
            raise ConfigError(
                "limits are raised one task at a time: agent resume ID --max-steps N ..."
            )
        return asyncio.run(_resume_all(s))

    task_id = store.resolve(args.id)
    state = TaskState.from_store(store, task_id)
    runner = s.runner(_Setup.of(state, args), task_id)
    raised = _limits(state.limits, given) if given else None
    if args.command in ("approve", "deny"):
        decision = decide(
            store,
            state,
            Seen(args.request, args.hash),
            approved=args.command == "approve",
            reason=args.reason,
            reviewer=getpass.getuser(),
        )
        if not args.json:
            word = "approved" if decision.approved else "denied"
            out.print(f"{word} {decision.approval_id}")
        if args.no_resume:
            return _report(s, runner, runner.load(task_id))
    return _until_stopped(s, runner, task_id, raised)


_LIMIT_FLAGS = {
    "max_steps": "--max-steps",
    "max_tokens": "--max-tokens",
    "max_seconds": "--max-seconds",
    "max_cost_usd": "--max-cost",
}


_SANDBOX_FLAGS = ("memory_mb", "cpus", "pids", "allow_domains")
_SANDBOX_FLAG = {"memory_mb": "memory", "allow_domains": "allow-domain"}


def _sandbox_limits(args: argparse.Namespace, config: Config) -> SandboxLimits | None:
    """The new task's own sandbox limits, if flags ask for any (None: the configured ones)."""
    given = {k: getattr(args, k) for k in _SANDBOX_FLAGS if getattr(args, k, None) is not None}
    if not given:
        return None
    if given.get("allow_domains"):
        given["network"] = "proxy"
    try:
        limits = SandboxLimits.model_validate({**config.sandbox.limits.model_dump(), **given})
    except ValidationError as exc:
        problems = "; ".join(
            (f"--{_SANDBOX_FLAG.get(str(err['loc'][0]), err['loc'][0])}: " if err["loc"] else "")
            + err["msg"].removeprefix("Value error, ")
            for err in exc.errors(include_url=False)
        )
        raise ConfigError(f"invalid sandbox limit: {problems}") from None
    return config.sandbox.max.check(limits)


def _priced(runner: Runner, config: Config) -> bool:
    return all(
        backend.runs_locally or backend.name in config.prices
        for backend in runner.backends.values()
    )


def _limits(base: Limits, given: dict[str, Any]) -> Limits:
    """`base` with the limits given as flags, validated (a bad one would poison the log)."""
    try:
        return Limits.model_validate({**base.model_dump(), **given})
    except ValidationError as exc:
        problems = "; ".join(
            f"{_LIMIT_FLAGS.get(str(err['loc'][0]), err['loc'][0])}: {err['msg']}"
            for err in exc.errors(include_url=False)
        )
        raise ConfigError(f"invalid limit: {problems}") from None


def _until_stopped(s: _Session, runner: Runner, task_id: str, limits: Limits | None) -> int:
    """Run the task; in a terminal, ask each approval inline and go on.

    Each stretch of running gets its own event loop, and the prompt happens between them, so a
    Ctrl-C at the prompt is an ordinary interrupt: the task simply keeps waiting.
    """
    try:
        state = asyncio.run(_run_once(runner, task_id, limits, reap=True))
        while state.status == "awaiting_approval" and _can_prompt(s.args):
            shown = pending_approval(state)
            assert shown is not None
            try:
                answer = _ask_approval(s.out)
            except KeyboardInterrupt:
                answer = None
            if answer is None:
                s.out.print()
                break  # the task keeps waiting, durably
            approved, reason = answer
            # The answer is about the request shown: if another process decided it, or the task
            # asks something else now, it decides nothing, and what is pending is asked anew.
            state = runner.load(task_id)
            try:
                decision = decide(
                    s.store,
                    state,
                    shown,
                    approved=approved,
                    reason=reason,
                    reviewer=getpass.getuser(),
                )
            except (NotPending, NothingToApprove, ConflictingWrite):
                state = runner.load(task_id)
                s.out.print("    [yellow]the request changed while the prompt was open[/]")
                _show_pending(s, state)
                continue
            word = "approved" if decision.approved else "denied"
            s.out.print(f"    {word} {decision.approval_id} {shown.short_hash}")
            state = asyncio.run(_run_once(runner, task_id, None))
    except KeyboardInterrupt:
        state = runner.load(task_id)  # the runner recorded the pause (if it was running)
    return _report(s, runner, state)


async def _run_once(
    runner: Runner, task_id: str, limits: Limits | None, *, reap: bool = False
) -> TaskState:
    """One stretch of running; `reap` first (once per process: later stretches follow an inline
    approval, with nothing new to remove)."""
    try:
        if reap and runner.sandboxes is not None:
            await _reap(runner.sandboxes, runner.store)
        return await runner.resume(task_id, limits)
    finally:
        await _close(runner)  # HTTP clients belong to this event loop


async def _reap(sandboxes: Sandboxes, store: Store) -> None:
    """Remove containers that crashed runners left behind for tasks that are over. Best effort:
    with no Docker running there is nothing to remove, and tasks that need it will say so."""
    with contextlib.suppress(SandboxError):
        await sandboxes.reap(task_is_over(store))


async def _close(runner: Runner) -> None:
    for backend in set(runner.backends.values()):
        # A local model stays loaded, with its KV cache, for the stretch after an inline
        # approval; the process's end frees it.
        if not backend.runs_locally:
            await backend.aclose()
    if runner.browsers is not None:
        await runner.browsers.aclose()
    if runner.sandboxes is not None:
        await runner.sandboxes.aclose()


def _show_pending(s: _Session, state: TaskState) -> None:
    """Show the request pending now (what a reviewer is asked), as the run showed the first."""
    request = pending_approval(state)
    if request is None or s.renderer is None:
        return
    for stored in s.store.events(state.task_id):
        if stored.event == request:
            s.renderer(stored)
            return


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
        out.print("please answer y or n (Ctrl-C stops here; the task keeps waiting for a reviewer)")


def _print_error(message: str) -> None:
    # Escaped: messages quote TOML ("[model] uri") that rich would take for markup.
    Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {shown(message)}")


def _can_prompt(args: argparse.Namespace) -> bool:
    return not args.json and not args.no_prompt and sys.stdin.isatty()


async def _resume_all(s: _Session) -> int:
    """Continue every orphaned task; one that cannot start is reported and the rest go on."""
    leftovers = sandboxes_for(s.config, s.store)
    await _reap(leftovers, s.store)
    await leftovers.aclose()
    orphans = s.store.orphans()
    codes: list[int] = []
    results: list[dict[str, Any]] = []
    errors: list[dict[str, str]] = []
    for task_id in orphans:
        try:
            state = TaskState.from_store(s.store, task_id)
            if not s.args.json:
                s.out.rule(f"task {task_id}: {state.task}", align="left", style="dim")
            runner = s.runner(_Setup.of(state, s.args), task_id)
            try:
                state = await runner.run(task_id)
            finally:
                await _close(runner)
        except TaskBusy as exc:  # another runner picked it up meanwhile
            s.out.print(f"[dim]{task_id}: {exc}; left to it[/]")
            continue
        except AgentError as exc:
            errors.append({"task_id": task_id, "error": str(exc)})
            codes.append(EXIT_USAGE)
            _print_error(f"{task_id}: {exc}")
            continue
        codes.append(EXIT.get(state.status, 1))
        results.append(summary(state))
    if s.args.json:
        print(json_line({"resumed": results, "errors": errors}))
    elif not orphans:
        s.out.print("no unfinished tasks to continue")
    return max(codes, default=0)


def _backend(
    uri: str,
    config: Config,
    on_retry: Callable[[BackendError, int, float], None],
    on_load: Callable[[ModelInfo, float], None] | None = None,
    on_note: Callable[[str], None] | None = None,
) -> ModelBackend:
    mc = config.model
    backend = backend_from_uri(
        uri,
        api_key_env=mc.api_key_env,
        timeout=mc.timeout,
        max_attempts=mc.max_attempts,
        on_retry=on_retry,
        local=mc.local.model_dump(),
        on_load=on_load,
    )
    if mc.context_window is not None:
        backend.context_window = mc.context_window
    if isinstance(backend, OpenAICompatibleBackend):
        backend.on_note = on_note
    return backend


def _registry(specs: Sequence[str]) -> Registry:
    registry = Registry()
    registry.load_entry_points()
    for spec in specs:
        registry.load_module(spec)
    return registry


def _report(s: _Session, runner: Runner, state: TaskState) -> int:
    code = EXIT.get(state.status, 1)
    for backend in set(runner.backends.values()):
        if state.status == "done" and isinstance(backend, ScriptedBackend):
            try:
                backend.verify(state.turns)
            except AgentError as exc:
                _print_error(str(exc))
                code = 1
    if s.args.json:
        print(json_line(summary(state)))
        return code
    if hint := next_move(state):
        s.out.print(f"[dim]{hint}[/]")
    s.out.print(status_line(state))
    return code


if __name__ == "__main__":
    sys.exit(main())
