"""The containers of a deployment as Docker shows them: each version's state, its health check,
and the small settings shared by everything `sandbox/deploy_docker.py` starts."""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import asdict
from typing import Any, Literal

import docker
import docker.errors
import tenacity

from base.errors import ErrorCode
from sandbox._docker import mapped
from sandbox.deploy import DeployFailed, Health, Spec, Version

PLAN = "agent.plan"
#: the port the front listens on inside its container
FRONT_PORT = 8080


def container_name(name: str, number: int | None = None) -> str:
    return f"agent-deploy-{name}" if number is None else f"agent-deploy-{name}-v{number}"


async def wait_healthy(front: Any, container: Any, version: Version, health: Health) -> None:
    """Wait until `container` passes `health` (an HTTP check is made from the deployment's
    `front`, the one container that reaches it). Raises `DeployFailed` when it does not in time,
    or exits first, with the last lines of its log."""

    def probe() -> None:
        """Return when healthy; else raise `_Unhealthy` with what is wrong (so far)."""
        if (found := check()) is not None:
            raise _Unhealthy(found)

    def check() -> str | None:
        container.reload()
        if container.status not in ("created", "running"):
            code = container.attrs["State"].get("ExitCode")
            raise _Exited(f"the service exited (exit code {code}) before it was healthy")
        if health.command is not None:
            result = container.exec_run(["sh", "-c", health.command], user="1000:1000")
            return (
                None if result.exit_code == 0 else f"`{health.command}` exited {result.exit_code}"
            )
        url = f"http://{container.name}:{version.port}{health.path}"
        result = front.exec_run(
            ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2", url]
        )
        status = result.output.decode(errors="replace").strip()
        if result.exit_code == 0 and status[:1] in ("2", "3"):
            return None
        return (
            f"GET {health.path} answered {status}"
            if status.isdigit() and status != "000"
            else (f"GET {health.path}: nothing answers on port {version.port}")
        )

    try:
        async for attempt in tenacity.AsyncRetrying(
            stop=tenacity.stop_after_delay(health.timeout),
            wait=tenacity.wait_exponential(multiplier=0.05, max=0.5),
            retry=tenacity.retry_if_exception_type(_Unhealthy),
            reraise=True,
        ):
            with (
                attempt,
                mapped(f"checking the health of {version.name} v{version.number}"),
            ):
                await asyncio.to_thread(probe)
    except (_Unhealthy, _Exited) as exc:
        logs = await asyncio.to_thread(log_tail, container, 20)
        reason = str(exc) if isinstance(exc, _Exited) else f"{exc} after {health.timeout:g} s"
        raise DeployFailed(
            f"{version.name} v{version.number} is not healthy: {reason}; what served before "
            "goes on serving",
            code=ErrorCode.HEALTH_FAILED,
            logs=logs,
        ) from None


class _Unhealthy(Exception):
    pass


class _Exited(Exception):
    pass


def version_of(
    container: Any, state: Literal["serving", "standby", "stopped", "starting"]
) -> Version:
    plan = json.loads(container.labels[PLAN])
    plan["env_names"] = tuple(plan["env_names"])
    plan["state"] = state
    return Version(**plan)


def state_of(container: Any, name: str) -> Literal["serving", "standby", "stopped"]:
    if container.status != "running":
        return "stopped"
    return "serving" if is_serving(container, name) else "standby"


def is_connected(container: Any, name: str) -> bool:
    return container_name(name) in (container.attrs["NetworkSettings"]["Networks"] or {})


def is_serving(container: Any, name: str) -> bool:
    networks = container.attrs["NetworkSettings"]["Networks"] or {}
    aliases = (networks.get(container_name(name)) or {}).get("Aliases") or []
    return container.status == "running" and "current" in aliases


def unchanged(current: Version, spec: Spec, image: str) -> bool:
    return (
        current.image == image
        and current.env_names == tuple(sorted(spec.env))
        and current.health == json.dumps(asdict(spec.health))
        and current.limits == asdict(spec.limits)
    )


def published_port(container: Any) -> int | None:
    ports = container.attrs["NetworkSettings"]["Ports"] or {}
    bound = ports.get(f"{FRONT_PORT}/tcp") or []
    return int(bound[0]["HostPort"]) if bound else None


def restarting(settings: dict[str, Any], **more: Any) -> dict[str, Any]:
    """Container settings that make it start again with the engine, unless it was stopped."""
    return {**settings, **more, "restart_policy": {"Name": "unless-stopped"}}


def log_tail(container: Any, lines: int) -> str:
    try:
        return bytes(container.logs(tail=lines)).decode(errors="replace")
    except docker.errors.DockerException:
        return ""


def remove_container(container: Any) -> None:
    with contextlib.suppress(docker.errors.NotFound):
        container.remove(force=True)


def start_front(front: Any, host_port: int | None) -> None:
    """Start a front; a host port another program holds is said plainly (and the front that
    could not have it is taken away)."""
    try:
        front.start()
    except docker.errors.APIError as exc:
        text = str(exc)
        if "already allocated" not in text and "address already in use" not in text:
            raise
        remove_container(front)
        raise DeployFailed(
            f"port {host_port} of this host is already taken: give another host_port, or none "
            "for a free one",
            code=ErrorCode.PORT_TAKEN,
        ) from None
