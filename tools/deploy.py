"""Deploy tools: build a folder of the task's workspace and run it as a long-running service,
health-checked, versioned and rolled back (see `sandbox/deploy.py` for how it runs).

A deploy is shown to the gate and the reviewer as a plan (its effect): the folder and a digest
of its files, the Dockerfile or the kind recognised, the base image and its digest, the command,
the port, the names of its environment variables, the health check, the limits, the hosts it
may reach (its egress allowlist; none by default), and the version it replaces. The approval
is bound to that plan: a folder changed after the approval changes the plan, and the reviewer
is asked again. A deploy records its intent with its idempotency key before it starts, and the
key labels all it makes, so after a crash it is found by the key (`settle`), never built and
started blindly again.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, Field

from base.errors import ErrorCode, SandboxError
from sandbox._allowlist import check_entry
from sandbox._recipes import RecipeError, context, digest, files_of, recipe
from sandbox.container import WorkspaceError
from sandbox.deploy import NAME, DeployFailed, DeployTarget, Health, ServiceLimits, Spec, Version
from tools.registry import Registry
from tools.sandboxed import task_sandbox
from tools.tool import ToolContext, ToolError, ToolResult, tool

T = TypeVar("T")
_URL = re.compile(r"https?://([A-Za-z0-9.-]+(?::\d+)?)")
#: the longest a deploy may take: its build, its start and its health check
_DEPLOY_TIMEOUT = 900.0

EnvName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]
AllowEntry = Annotated[str, Field(max_length=300), AfterValidator(check_entry)]
Name = Annotated[
    str,
    Field(
        pattern=NAME.pattern,
        description="the service's name: lowercase letters, digits and dashes, starting with a "
        "letter (at most 40)",
    ),
]


def _target(ctx: ToolContext) -> DeployTarget:
    if ctx.deploy is None:
        raise ToolError(
            "this runner has no deploy target: deploy tools cannot run here",
            code=ErrorCode.NO_SANDBOX,
        )
    return ctx.deploy


async def _files(ctx: ToolContext, folder: str) -> dict[str, bytes]:
    box = await task_sandbox(ctx, for_a_call=False)
    try:
        archive = await box.get_archive(folder)
    except WorkspaceError as exc:
        raise ToolError(f"{folder}: {exc}", code=exc.code) from None
    return files_of(archive)


async def _spec(
    ctx: ToolContext, arguments: dict[str, Any]
) -> tuple[Spec, dict[str, bytes], tuple[str, str]]:
    """What the call would deploy, the folder's files, and the image it is built FROM (its name
    and digest). Raises `ToolError` for a folder that cannot be deployed."""
    folder = str(arguments["folder"])
    files = await _files(ctx, folder)
    base = await _failures(_target(ctx).base_image())
    try:
        found = recipe(files, base[1], arguments.get("port"))
    except RecipeError as exc:
        raise ToolError(f"{folder}: {exc}", code=exc.code) from None
    spec = Spec(
        name=str(arguments["name"]),
        recipe=found,
        files=digest(files),
        folder=folder,
        health=Health(
            path=str(arguments.get("health_path") or "/"),
            command=arguments.get("health_command"),
            timeout=float(arguments.get("health_timeout") or 30.0),
        ),
        limits=ServiceLimits(
            memory_mb=int(arguments.get("memory_mb") or 512),
            cpus=float(arguments.get("cpus") or 1.0),
        ),
        env=dict(arguments.get("env") or {}),
        approved_by=ctx.approved_by,
        host_port=arguments.get("host_port"),
        egress=tuple(sorted(set(arguments.get("egress") or ()))),
    )
    return spec, files, base


async def _plan(ctx: ToolContext, arguments: dict[str, Any]) -> dict[str, Any]:
    """The deploy's plan, as the gate and the reviewer see it (its effect)."""
    spec, _, (base, base_digest) = await _spec(ctx, arguments)
    target = _target(ctx)
    try:
        serving = (await target.status(spec.name)).serving
    except DeployFailed as exc:
        if exc.code != ErrorCode.NOT_FOUND:
            raise ToolError(str(exc), code=exc.code) from None
        serving = None
    recipe_ = spec.recipe
    return {
        "deploy": {
            "folder": spec.folder,
            "files": spec.files[:16],
            "build": recipe_.because,
            "base": f"{base} ({base_digest[:19]})",
            "dockerfile": recipe_.dockerfile,
            "command": recipe_.command,
            "port": recipe_.port,
            "host_port": spec.host_port or "the one it has (a free one the first time)",
            "env": sorted(spec.env),
            "health": spec.health.describe(),
            "limits": f"{spec.limits.memory_mb} MB, {spec.limits.cpus:g} CPU, "
            f"{spec.limits.pids} processes; no capabilities, read-only",
            "egress": list(spec.egress)
            or "none: no way out (name an allowlist to let it reach hosts)",
            "replaces": f"v{serving.number}: {serving.command}" if serving else "nothing",
        }
    }


async def _settled(ctx: ToolContext) -> ToolResult | None:
    """After a crash: what the deploy with this call's key made, carried to its end."""
    target = _target(ctx)
    try:
        version = await target.settle(ctx.idempotency_key)
    except DeployFailed as exc:
        return ToolResult(False, _failed(exc), exc.code)
    if version is None:
        return None
    note = "(The runner stopped while this ran; the deploy was found by its key.)\n"
    return ToolResult(True, note + await _deployed(target, version))


@tool(
    touches="deploy",
    timeout=_DEPLOY_TIMEOUT,
    effect=_plan,
    reconcile=_settled,
    needs_deploy=True,
)
async def deploy(  # noqa: PLR0917 - a tool's parameters are the model's named arguments
    ctx: ToolContext,
    folder: str,
    name: Name,
    port: Annotated[int, Field(ge=1024, le=65535)] | None = None,
    env: dict[EnvName, str] | None = None,
    health_path: Annotated[str, Field(pattern=r"^/[!-~]*$", max_length=2000)] = "/",
    health_command: str | None = None,
    health_timeout: Annotated[float, Field(gt=0, le=600)] = 30.0,
    memory_mb: Annotated[int, Field(ge=32, le=8192)] = 512,
    cpus: Annotated[float, Field(gt=0, le=16)] = 1.0,
    host_port: Annotated[int, Field(ge=1024, le=65535)] | None = None,
    egress: Annotated[list[AllowEntry], Field(max_length=64)] | None = None,
) -> str:
    """Build a folder of the workspace and run it as a long-running service with a URL. A folder
    with a Dockerfile is built with it; without one, a Python web app (app.py, main.py...: ASGI,
    WSGI or a program serving on $PORT) or a static site (index.html) is recognised. The new
    version takes over only once its health check passes; until then, and if it fails, the
    version before goes on serving. Deploying what already serves, unchanged, changes nothing.

    Args:
        folder: the folder, relative to /workspace.
        name: the service's name; a second deploy with the same name is its next version.
        port: the port the service listens on (default: the Dockerfile's EXPOSE, else 8000,
            given to the service as $PORT).
        env: environment variables for the service.
        health_path: the HTTP path (starting with /) that must answer 2xx or 3xx for the version
            to be healthy.
        health_command: a command run in the service's container that must exit 0 instead.
        health_timeout: seconds the version has to become healthy.
        memory_mb: the service's memory.
        cpus: the service's CPUs.
        host_port: the port of this host its URL is on (default: the one it has, or a free
            one).
        egress: the hosts the service may reach (example.com, *.example.com, an IP address,
            each with an optional :port; without one, 80 and 443), through an egress proxy
            that records each request. Default: none, the service has no way out at all.
    """
    arguments = {
        "folder": folder,
        "name": name,
        "port": port,
        "env": env,
        "health_path": health_path,
        "health_command": health_command,
        "health_timeout": health_timeout,
        "memory_mb": memory_mb,
        "cpus": cpus,
        "host_port": host_port,
        "egress": egress,
    }
    spec, files, _ = await _spec(ctx, arguments)
    target = _target(ctx)
    log: list[str] = []

    def show(text: str) -> None:
        log.append(text)
        if ctx.output is not None:
            ctx.output("stdout", text)

    box = await task_sandbox(ctx, for_a_call=False)
    build_egress = await box.build_egress()
    try:
        version = await target.deploy(
            spec,
            context(files, spec.recipe.dockerfile),
            ctx.idempotency_key,
            on_output=show,
            egress=build_egress,
        )
    except DeployFailed as exc:
        note = _egress_note(exc, online=build_egress is not None)
        raise ToolError(_failed(exc) + note + _kept(ctx, name, log), code=exc.code) from None
    except SandboxError as exc:
        raise ToolError(str(exc), code=exc.code) from None
    return await _deployed(target, version) + _kept(ctx, name, log)


@tool(touches="read", needs_deploy=True)
async def deploy_status(ctx: ToolContext, name: Name) -> str:
    """Say how a deployment is: its URL, the version serving, and the versions kept.

    Args:
        name: the deployment's name.
    """
    deployment = await _failures(_target(ctx).status(name))
    lines = [f"{name}: {deployment.url or 'stopped'}"]
    lines += [
        f"  v{v.number}  {v.state:8}  {v.kind}: {v.command}"
        + (f"  (approved by {v.approved_by})" if v.approved_by else "")
        + (f"  egress: {', '.join(v.egress)}" if v.egress else "")
        for v in deployment.versions
    ]
    return "\n".join(lines)


@tool(touches="read", needs_deploy=True)
async def deploy_logs(
    ctx: ToolContext,
    name: Name,
    lines: Annotated[int, Field(ge=1, le=2000)] = 100,
    egress: bool = False,
) -> str:
    """Read the last lines of a deployment's log (of the version serving, else the newest).

    Args:
        name: the deployment's name.
        lines: how many lines, from the end.
        egress: read its egress proxy's log instead: each request to leave, let through or
            refused, and why.
    """
    found = await _failures(_target(ctx).logs(name, lines, egress=egress))
    return found or "(the log is empty)"


@tool(touches="deploy", needs_deploy=True)
async def deploy_stop(ctx: ToolContext, name: Name) -> str:
    """Stop a deployment: it no longer serves (its versions are kept; a deploy starts it again).

    Args:
        name: the deployment's name.
    """
    await _failures(_target(ctx).stop(name))
    return f"stopped {name}"


@tool(touches="deploy", timeout=_DEPLOY_TIMEOUT, needs_deploy=True)
async def deploy_rollback(ctx: ToolContext, name: Name) -> str:
    """Go back to the version before the one serving, without a rebuild; it takes over once
    its health check passes.

    Args:
        name: the deployment's name.
    """
    target = _target(ctx)
    version = await _failures(target.rollback(name))
    return "rolled back: " + await _deployed(target, version)


@tool(touches="read", needs_deploy=True)
async def deployments(ctx: ToolContext) -> str:
    """List the deployments, with their URLs and the version each serves."""
    found = await _failures(_target(ctx).deployments())
    if not found:
        return "no deployments"
    return "\n".join(
        f"{d.name}: {d.url or 'stopped'}" + (f" (v{d.serving.number} serving)" if d.serving else "")
        for d in found
    )


async def _deployed(target: DeployTarget, version: Version) -> str:
    deployment = await _failures(target.status(version.name))
    return (
        f"{version.name} v{version.number} serves at {deployment.url} "
        f"({version.kind}: {version.command}; image {version.image[:19]})"
    )


async def _failures(op: Awaitable[T]) -> T:
    """Await a deploy target's operation; its failures are the model's to read."""
    try:
        return await op
    except DeployFailed as exc:
        raise ToolError(_failed(exc), code=exc.code) from None


def _failed(exc: DeployFailed) -> str:
    return str(exc) + (f"\nthe last lines of its log:\n{exc.logs.rstrip()}" if exc.logs else "")


def _egress_note(exc: DeployFailed, *, online: bool) -> str:
    """What a failed build may have needed from the network, and what it could reach."""
    if exc.code != ErrorCode.BUILD_FAILED:
        return ""
    hosts = sorted({found.group(1) for found in _URL.finditer(exc.logs)})
    asked = f"it asked for {', '.join(hosts)}; " if hosts else ""
    if not online:
        return (
            f"\n({asked}a build has no network when the task's sandbox has none: give the task "
            "the hosts its package index is on: --allow-domain HOST for each)"
        )
    return (
        f"\n({asked}a build reaches only the hosts the task's allowlist names, through its "
        "egress proxy; `agent show` lists what the proxy refused)"
        if hosts
        else ""
    )


def _kept(ctx: ToolContext, name: str, log: list[str]) -> str:
    """Keep the build's output as an artifact; the note that says where."""
    if ctx.artifacts is None or not log:
        return ""
    data = "".join(log).encode()
    file = f"build-{name}-{hashlib.sha256(data).hexdigest()[:8]}.log"
    ctx.artifacts.keep(file, data)
    return f"\n(the build's output is kept as {file})"


registry = Registry([deploy, deploy_status, deploy_logs, deploy_stop, deploy_rollback, deployments])
