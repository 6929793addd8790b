"""What a task runs with, from the command line: its model, tools and policy (from the flags,
agent.toml, or the task's own log), its limits and sandbox limits (validated before anything is
recorded), and the files given with `--file`."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from rich.console import Console

from agent.backends import backend_from_uri
from agent.backends.base import ModelBackend
from agent.backends.local import ModelInfo
from agent.backends.openai_compat import OpenAICompatibleBackend
from agent.config import Config
from agent.events import Limits
from agent.state import TaskState
from base.artifacts import Artifacts
from base.bucket_artifacts import bucket_artifacts
from base.errors import (
    BackendError,
    ConfigError,
)
from frontends.screen import shown
from sandbox.limits import DEFAULT_IMAGE, SandboxLimits
from tools.mcp import MCPSource, mcp_tools
from tools.openapi import OpenAPISource, openapi_tools
from tools.registry import Registry
from tools.sources import ToolSource


@dataclass(frozen=True)
class Setup:
    """What a task runs with. A new task takes it from the flags and agent.toml; a task that
    exists keeps what it was started with, unless a flag says otherwise."""

    model: str | None
    planner: str | None
    tools: tuple[str, ...]
    policy: str | None

    @classmethod
    def new(cls, args: argparse.Namespace, config: Config) -> Setup:
        policy = args.policy or config.policy.file
        return cls(
            model=args.model or os.environ.get("AGENT_MODEL") or config.model.uri,
            planner=config.model.planner,
            tools=tuple(_where(t) for t in [*config.tools.modules, *args.tools]),
            policy=str(Path(policy).resolve()) if policy else None,
        )

    @classmethod
    def of(cls, state: TaskState, args: argparse.Namespace) -> Setup:
        created = state.created
        assert created is not None
        return cls(
            model=args.model or created.model,
            planner=created.planner,
            tools=tuple(_where(t) for t in args.tools) if args.tools else created.tools,
            policy=str(Path(args.policy).resolve()) if args.policy else created.policy,
        )


def _where(spec: str) -> str:
    """A tool module as it is recorded: a .py file by its absolute path."""
    return str(Path(spec).resolve()) if spec.endswith(".py") else spec


_LIMIT_FLAGS = {
    "max_steps": "--max-steps",
    "max_tokens": "--max-tokens",
    "max_seconds": "--max-seconds",
    "max_cost_usd": "--max-cost",
}


_SANDBOX_FLAGS = ("memory_mb", "cpus", "pids", "allow_domains")
_SANDBOX_FLAG = {"memory_mb": "memory", "allow_domains": "allow-domain"}


def sandbox_limits(args: argparse.Namespace, config: Config) -> SandboxLimits | None:
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


def limits_with(base: Limits, given: dict[str, Any]) -> Limits:
    """`base` with the limits given as flags, validated (a bad one would poison the log)."""
    try:
        return Limits.model_validate({**base.model_dump(), **given})
    except ValidationError as exc:
        problems = "; ".join(
            f"{_LIMIT_FLAGS.get(str(err['loc'][0]), err['loc'][0])}: {err['msg']}"
            for err in exc.errors(include_url=False)
        )
        raise ConfigError(f"invalid limit: {problems}") from None


def backend_for(
    uri: str,
    config: Config,
    on_retry: Callable[[BackendError, int, float], None],
    on_load: Callable[[ModelInfo, float], None] | None = None,
    on_note: Callable[[str], None] | None = None,
    *,
    projector: bool = True,
) -> ModelBackend:
    """The backend `uri` names, as `config` sets it up; a local model gets `[model.local]
    mmproj` unless not `projector` (a planner on another file than the projector's model)."""
    mc = config.model
    local = mc.local.model_dump() | ({} if projector else {"mmproj": None})
    backend = backend_from_uri(
        uri,
        api_key_env=mc.api_key_env,
        timeout=mc.timeout,
        max_attempts=mc.max_attempts,
        on_retry=on_retry,
        local=local,
        on_load=on_load,
    )
    if mc.context_window is not None:
        backend.context_window = mc.context_window
    if mc.vision is not None:
        backend.vision = mc.vision
    if isinstance(backend, OpenAICompatibleBackend):
        backend.on_note = on_note
    return backend


def registry_of(
    specs: Sequence[str],
    disable: Sequence[str] = (),
    openapi: Sequence[OpenAPISource] = (),
    mcp: Sequence[MCPSource] = (),
    *,
    runtime_image: str = DEFAULT_IMAGE,
    progress: Callable[[str], None] | None = None,
) -> Registry:
    """The installed tools (a broken package's skipped and kept in `problems`), those of each
    module or file in `specs`, of each OpenAPI spec in `openapi` and of each MCP server in `mcp`
    (those not trusted run in containers of `runtime_image`; `progress`, by default stderr,
    hears of a first build of their image), less those `disable` names.
    Raises `ConfigError` for a spec that cannot be loaded or a name that is not a tool."""
    registry = Registry()
    registry.load_entry_points()
    for spec in specs:
        registry.load_module(spec)
    for source in openapi:
        registry.include_from(openapi_tools(source), ToolSource("openapi", source.spec))
    for server in mcp:
        tools = mcp_tools(server, runtime_image=runtime_image, progress=progress or _on_stderr)
        registry.include_from(tools, ToolSource("mcp", server.name))
    registry.disable(disable)
    return registry


def configured_registry(config: Config, specs: Sequence[str]) -> Registry:
    """`registry_of` the modules and files in `specs`, with agent.toml's [tools] (what it
    disables, its OpenAPI specs and MCP servers) and its sandbox image."""
    return registry_of(
        specs,
        config.tools.disable,
        config.tools.openapi,
        config.tools.mcp,
        runtime_image=config.sandbox.image,
    )


def _on_stderr(text: str) -> None:
    Console(stderr=True, soft_wrap=True, highlight=False).print(f"[dim]{shown(text)}[/]")


def warn_problems(registry: Registry, *, verbose: bool) -> None:
    """Say on stderr, once each, which installed tools were skipped and why, and what the authors
    of the tools that are not built in may want to fix (an undocumented parameter, an undeclared
    effect)."""
    err = Console(stderr=True, soft_wrap=True, highlight=False)
    for problem in registry.problems:
        err.print(f"[yellow]warning:[/] {shown(str(problem))}")
        if verbose:
            err.print(shown(problem.trace.rstrip()))
    if registry.problems and not verbose:
        err.print("[dim](-v shows the traceback; `agent doctor` lists what was skipped)[/]")
    for t in registry:
        source = registry.source_of(t.name)
        if source.kind == "built-in":
            continue
        for warning in t.warnings:
            err.print(f"[yellow]warning:[/] tool {t.name} ({shown(str(source))}): {shown(warning)}")


def artifacts_for(config: Config) -> Artifacts | None:
    """Where tasks keep their artifacts, as [artifacts] says: a bucket, or None for the folder
    beside the store. Raises `ConfigError` when a bucket needs the AWS SDK and it is missing."""
    kept = config.artifacts
    if not kept.bucket:
        return None
    return bucket_artifacts(
        kept.bucket, prefix=kept.prefix, endpoint_url=kept.endpoint_url, region=kept.region
    )
