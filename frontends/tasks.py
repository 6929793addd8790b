"""Driving tasks from the command line: `agent run`, `resume` and `approve|deny`, with the
inline approval prompt and the report at the end. The exit codes are the CLI's (see
frontends/cli.py)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import time
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import ValidationError
from rich.console import Console

from agent import webhooks
from agent.approvals import (
    Seen,
    account,
    pending_approval,
)
from agent.backends import normalize_uri
from agent.backends.local import BUNDLED, ModelInfo
from agent.backends.scripted import ScriptedBackend
from agent.config import Config, EngineConfig
from agent.effects import library_of
from agent.events import ApprovalDecided, ApprovalGiven, Limits
from agent.inbox import decided_elsewhere, describe, waiting
from agent.prices import Price
from agent.runner import Runner
from agent.state import TaskState
from agent.steering import reviewing_plan
from agent.store import Store
from agent.temporal.runner import TemporalRunner
from base.errors import (
    AgentError,
    BackendError,
    ConfigError,
    SandboxError,
    TaskBusy,
)
from frontends._deciding import decide_on_its_engine
from frontends.always_allow import approve_always
from frontends.engine_commands import temporal_worker
from frontends.inline_prompt import Prompt, ask_inline, review_plan_inline, settle
from frontends.inputs import attachments
from frontends.line_input import LineSource
from frontends.render import Renderer
from frontends.sandbox_commands import deploy_target, sandboxes_for, task_is_over
from frontends.screen import print_json, shown
from frontends.task_setup import (
    Setup,
    artifacts_for,
    backend_for,
    configured_registry,
    limits_with,
    sandbox_limits,
    warn_problems,
)
from frontends.views import next_move, status_line, summary
from policies import Gate
from sandbox.manager import Sandboxes
from tools.registry import Registry
from tools.secrets import Secrets

EXIT = {"done": 0, "failed": 1, "awaiting_approval": 3, "paused": 4, "stuck": 5, "running": 4}
EXIT_USAGE = 2

FALLBACK_NOTICE = (
    "[yellow]No model is configured, so this runs on the bundled SmolLM2-135M-Instruct: a tiny "
    "fallback model (135 million parameters, on the CPU) that manages only small, simple "
    "tasks.[/] For real work, name a model with --model, $AGENT_MODEL or \\[model] uri in "
    "agent.toml: e.g. anthropic:MODEL, openai:MODEL, or local:PATH.gguf for a GGUF model "
    "(a Mixture-of-Experts model such as Qwen3-30B-A3B runs well on a CPU)."
)


@dataclass
class _Session:
    """What the commands that drive tasks share: parsed flags, config, store, console."""

    args: argparse.Namespace
    config: Config
    store: Store
    out: Console
    stdin: LineSource
    renderer: Renderer | None = None

    def runner(
        self,
        setup: Setup,
        task_id: str | None = None,
        *,
        engine: str | None = None,
        registry: Registry | None = None,
    ) -> Runner:
        """A runner for `setup`, on `engine` (by default the configured one; a task keeps the
        one it was started on), with `registry` if given. Raises `ConfigError` (before anything
        is recorded) if its model, tools or policy cannot be had."""
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
            registry = registry or configured_registry(self.config, setup.tools)
        except ConfigError as exc:
            if task_id is None:
                raise
            raise ConfigError(
                f"task {task_id} runs with tools that cannot be loaded now: {exc} "
                "(pass --tools to give it others)"
            ) from exc
        warn_problems(registry, verbose=self.args.verbose)
        if model.startswith("local:") and not self.args.json:
            self._loading(model)
        executor = backend_for(model, self.config, self._retrying, self._loaded, self._noted)
        on_temporal = (engine or self.config.engine.kind) == "temporal"
        make = (
            functools.partial(TemporalRunner, engine=self.config.engine) if on_temporal else Runner
        )
        runner = make(
            self.store,
            registry,
            Gate.from_file(setup.policy) if setup.policy else Gate.default(),
            planner=backend_for(
                planner,
                self.config,
                self._retrying,
                self._loaded,
                self._noted,
                projector=planner == model,  # the projector is made for the acting model
            )
            if planner
            else executor,
            executor=executor,
            prices={name: Price(p.input, p.output) for name, p in self.config.prices.items()},
            sandboxes=sandboxes_for(self.config, self.store),
            deploy=deploy_target(self.config),
            secrets=Secrets.load(self.config.secrets.path()),
            approval_expiry=self.config.approvals.expire_after or None,
            approval_escalation=self.config.approvals.escalation(),
            artifacts=artifacts_for(self.config),
        )
        if not self.args.json:
            renderer = self.renderer = Renderer(self.out)
            runner.subscribe(renderer)
        return runner

    def _say(self, text: str) -> None:
        """A note for the person, on stderr (so --json output stays one object)."""
        Console(stderr=True, soft_wrap=True, highlight=False).print(text)

    def _loading(self, uri: str) -> None:
        """Say a local model is on its way, so its first load (seconds) is not silence."""
        self._say(
            f"[dim]model: {shown(uri)} loads in its worker process (or joins the one running)…[/]"
        )

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


def _on_host(engine: EngineConfig, host: str) -> EngineConfig:
    """`engine` with the host `agent worker --host` names. Raises `ConfigError`."""
    try:
        return EngineConfig.model_validate({**engine.model_dump(), "host": host})
    except ValidationError:
        raise ConfigError(
            f"--host {host!r}: a host's name is letters, digits, '.', '_' and '-'"
        ) from None


def drive(
    args: argparse.Namespace, config: Config, store: Store, out: Console, stdin: LineSource
) -> int:
    if args.command == "worker" and getattr(args, "host", None):
        config = config.model_copy(update={"engine": _on_host(config.engine, args.host)})
    s = _Session(args, config, store, out, stdin)
    given = {k: getattr(args, k) for k in Limits.model_fields if getattr(args, k, None) is not None}

    if args.command == "run":
        return _run_new(s, given)
    if args.command == "worker":
        if (args.engine or config.engine.kind) == "temporal":
            return temporal_worker(args, config, store, out, s.runner)
        return asyncio.run(_work(s))
    if args.command == "resume" and args.all:
        if given:
            raise ConfigError(
                "limits are raised one task at a time: agent resume ID --max-steps N ..."
            )
        return asyncio.run(_resume_all(s))

    task_id = store.resolve(args.id)
    state = TaskState.from_store(store, task_id)
    engine = state.created.engine if state.created is not None else None
    runner = s.runner(Setup.of(state, args), task_id, engine=engine)
    raised = limits_with(state.limits, given) if given else None
    if args.command in ("approve", "deny"):
        decision = _decide(s, state, Seen(args.request, args.hash))
        if not args.json:
            word = "approved" if decision.approved else "denied"
            edited = (
                " with the reviewer's edit (judged again before it runs)" if decision.edited else ""
            )
            more = " (it waits for more reviewers)" if isinstance(decision, ApprovalGiven) else ""
            out.print(f"{word} {decision.approval_id}{edited}{more}")
        if args.no_resume:
            return _report(s, runner, runner.load(task_id))
    return _until_stopped(s, runner, task_id, raised)


def _decide(s: _Session, state: TaskState, seen: Seen) -> ApprovalDecided | ApprovalGiven:
    """`agent approve` or `agent deny`'s decision (with --always: and its rule, saved)."""
    args = s.args
    if getattr(args, "always", None) is None:
        if getattr(args, "yes", False):
            raise ConfigError("--yes answers --always's question: give it with --always")
        return decide_on_its_engine(
            s.store,
            state,
            seen,
            engine=s.config.engine,
            approved=args.command == "approve",
            reason=args.reason,
            reviewer=account(),
            origin="cli",
            edit=getattr(args, "edit", None),
        )
    if args.edit is not None:
        raise ConfigError("--always allows the call as it is: give it without --edit")
    return approve_always(
        s.out,
        s.stdin,
        s.store,
        state,
        seen,
        scope=args.always,
        reviewer=account(),
        origin="cli",
        reason=args.reason,
        asked=True if args.yes else (False if _can_prompt(args, s.stdin) else None),
        engine=s.config.engine,
    )


def _run_new(s: _Session, given: dict[str, Any]) -> int:
    """`agent run`: record the new task, then run it."""
    if not s.args.task.strip():
        raise ConfigError('the task is empty: say what to do, e.g. agent run "summarise notes.txt"')
    setup = Setup.new(s.args, s.config)
    runner = s.runner(setup)
    new_limits = limits_with(s.config.limits, given)
    if (orphans := len(s.store.orphans())) and not s.args.json:
        s.out.print(
            f"[yellow]{orphans} task{'s were' if orphans > 1 else ' was'} left running by a "
            "runner that stopped[/]; `agent resume --all` continues them"
        )
    if new_limits.max_cost_usd is not None and not _priced(runner, s.config) and not s.args.json:
        s.out.print(
            "[yellow]warning:[/] a cost limit is set but \\[prices] has no price for this "
            "model, so cost is not counted"
        )
    task_id = runner.create(
        s.args.task,
        new_limits,
        tools=setup.tools,
        policy=setup.policy,
        sandbox=sandbox_limits(s.args, s.config),
        files=attachments(
            s.args.files,
            task=s.args.task,
            library=library_of(s.store),
            out=None if s.args.json else s.out,
            transcriber=s.config.documents.transcriber,
            embedder=s.config.documents.embedder,
        ),
        # A tiny model cannot plan: the fallback acts on the task directly.
        plan=not s.args.no_plan
        and s.config.model.plan
        and (setup.model is not None or setup.planner is not None),
        deploy=s.config.deploy.enabled if s.args.deploy is None else s.args.deploy,
        review_plan=s.config.session.review_plan
        if s.args.review_plan is None
        else s.args.review_plan,
    )
    return _until_stopped(s, runner, task_id, None)


def _priced(runner: Runner, config: Config) -> bool:
    return all(
        backend.runs_locally or backend.name in config.prices
        for backend in runner.backends.values()
    )


def _until_stopped(s: _Session, runner: Runner, task_id: str, limits: Limits | None) -> int:
    """Run the task; in a terminal, ask each approval inline and go on.

    Each stretch of running gets its own event loop, and the prompt happens between them, so a
    Ctrl-C at the prompt is an ordinary interrupt: the task simply keeps waiting.
    """
    try:
        state = runner.load(task_id)
        if not (reviewing_plan(state) and _can_prompt(s.args, s.stdin)):
            state = asyncio.run(_run_once(runner, task_id, limits, reap=True))
            limits = None
        engine = s.config.engine if isinstance(runner, TemporalRunner) else None
        prompt = Prompt(s.out, s.stdin, s.store, s.renderer, engine)
        while _can_prompt(s.args, s.stdin):
            if reviewing_plan(state):
                on_workflow = engine is not None
                if not review_plan_inline(prompt, s.stdin, state, limits if on_workflow else None):
                    break  # the plan keeps waiting, durably
                # A task's workflow went on with the answer (and the limits): it is followed.
                state = asyncio.run(
                    _run_once(
                        runner, task_id, None if on_workflow else limits, reap=True,
                        follow=on_workflow,
                    )
                )  # fmt: skip
                limits = None  # given once: a later stretch keeps them from the log
                continue
            if state.status != "awaiting_approval":
                break
            asked = pending_approval(state)
            assert asked is not None
            try:
                answer = ask_inline(s.out, s.stdin, s.store, task_id)
            except KeyboardInterrupt:
                answer = None
            if answer is None:
                s.out.print()
                break  # the task keeps waiting, durably
            state, again = settle(
                prompt,
                asked,
                answer,
                load=lambda: runner.load(task_id),
                run_on=lambda: asyncio.run(_run_once(runner, task_id, None)),
            )
            if not again:
                break
    except KeyboardInterrupt:
        state = runner.load(task_id)  # the runner recorded the pause (if it was running)
    return _report(s, runner, state)


async def _run_once(
    runner: Runner,
    task_id: str,
    limits: Limits | None,
    *,
    reap: bool = False,
    follow: bool = False,
) -> TaskState:
    """One stretch of running; `reap` first (once per process: later stretches follow an inline
    approval, with nothing new to remove). `follow`: a paused task is not resumed (it went on
    already, or waits for what was asked)."""
    try:
        if reap and runner.sandboxes is not None:
            await _reap(runner.sandboxes, runner.store)
        return await runner.resume(task_id, limits, continue_only=follow)
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


def print_error(message: str) -> None:
    # Escaped: messages quote TOML ("[model] uri") that rich would take for markup.
    Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {shown(message)}")


def _can_prompt(args: argparse.Namespace, stdin: LineSource) -> bool:
    return not args.json and not args.no_prompt and stdin.isatty()


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
            runner = s.runner(Setup.of(state, s.args), task_id)
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
            print_error(f"{task_id}: {exc}")
            continue
        codes.append(EXIT.get(state.status, 1))
        results.append(summary(state))
    if s.args.json:
        print_json({"resumed": results, "errors": errors})
    elif not orphans:
        s.out.print("no unfinished tasks to continue")
    return max(codes, default=0)


async def _work(s: _Session) -> int:
    """`agent worker`: continue, as they become due, the tasks a reviewer decided over HTTP,
    those whose request expired, and those a runner left running (after `--grace` seconds,
    so as not to take a task from the command that is starting it)."""
    hook = _webhook(s.config)
    leftovers = sandboxes_for(s.config, s.store)
    await _reap(leftovers, s.store)
    await leftovers.aclose()
    s.out.print(f"[dim]worker {os.getpid()}: continuing decided and unfinished tasks[/]")
    failing: dict[str, tuple[int, float]] = {}
    async with httpx.AsyncClient(timeout=10.0, trust_env=False) as client:
        while True:
            await _round(s, hook, client, failing)
            if s.args.once:
                return 0
            await asyncio.sleep(s.args.poll)


def _webhook(config: Config) -> webhooks.Webhook | None:
    """The webhook the config names, with its key. Raises `ConfigError` for a missing key."""
    url, variable = config.approvals.webhook, config.approvals.webhook_key_env
    if url is None:
        return None
    key = os.environ.get(variable, "")
    if len(key) < 16:
        raise ConfigError(
            f"[approvals] webhook is set, but ${variable} holds no signing key of 16 characters "
            "or more: set it (the receiver checks each notice's signature with it)"
        )
    return webhooks.Webhook(url, key.encode())


async def _round(
    s: _Session,
    hook: webhooks.Webhook | None,
    client: httpx.AsyncClient,
    failing: dict[str, tuple[int, float]],
) -> None:
    """One look at the store: the tasks due, then the notices due (theirs included). A task
    that cannot be run is tried again after 1, 2, 4, ... seconds (at most 10 minutes)."""
    now = time.time()
    for task_id in _due(s.store, s.args.grace):
        if failing.get(task_id, (0, 0.0))[1] > now:
            continue
        try:
            state = TaskState.from_store(s.store, task_id)
            runner = s.runner(Setup.of(state, s.args), task_id)
            try:
                state = await runner.run(task_id)
            finally:
                await _close(runner)
        except TaskBusy:
            continue  # another worker (or the command that decided) has it
        except Exception as exc:  # noqa: BLE001 - one task's failure must not stop the worker
            tries = failing.get(task_id, (0, 0.0))[0] + 1
            wait = min(2.0 ** (tries - 1), 600.0)
            failing[task_id] = (tries, time.time() + wait)
            print_error(f"{task_id}: {exc} (tried again in {wait:.0f} s)")
            continue
        failing.pop(task_id, None)
        s.out.print(f"[dim]{task_id}: {state.status}[/]")
    if hook is not None:
        sent = await webhooks.deliver(
            hook, client, s.store.writing, lambda found: describe(s.store.reader(), found)
        )
        if sent.failed:
            print_error(f"{sent.failed} webhook notice(s) failed; they are tried again later")


def _due(store: Store, grace: float) -> list[str]:
    """The tasks a worker should continue now, oldest first."""
    reader = store.reader()
    decided = decided_elsewhere(reader)
    expired = {w.task_id for w in waiting(reader, expired=True)}
    now = time.time()
    left = [t for t in store.orphans() if t in decided or now - store.task(t).updated >= grace]
    return [*left, *sorted(expired - set(left))]


def _report(s: _Session, runner: Runner, state: TaskState) -> int:
    code = EXIT.get(state.status, 1)
    for backend in set(runner.backends.values()):
        if state.status == "done" and isinstance(backend, ScriptedBackend):
            try:
                backend.verify(state.turns)
            except AgentError as exc:
                print_error(str(exc))
                code = 1
    if s.args.json:
        print_json(summary(state))
        return code
    if hint := next_move(state):
        s.out.print(f"[dim]{hint}[/]")
    s.out.print(status_line(state))
    return code
