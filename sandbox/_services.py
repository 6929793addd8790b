"""The containers of a deployment as Docker shows them: each version's state, its health check,
and the small settings shared by everything `sandbox/deploy_docker.py` starts."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import json
from dataclasses import asdict
from typing import Any, Literal

import docker
import docker.errors
import httpx
import tenacity

from base.errors import ErrorCode
from sandbox._docker import mapped
from sandbox._recipes import build_failure
from sandbox.deploy import BuildEgress, BuildOutput, DeployFailed, Health, Spec, Version

DEPLOYMENT = "agent.deployment"
VERSION = "agent.version"
KEY = "agent.key"
PLAN = "agent.plan"
#: the port the front listens on inside its container
FRONT_PORT = 8080


def container_name(name: str, number: int | None = None) -> str:
    return f"agent-deploy-{name}" if number is None else f"agent-deploy-{name}-v{number}"


def ensure_network(client: docker.DockerClient, name: str) -> str:
    """The deployment's network, made the first time: internal, with no address of the host on
    it, so that a service reaches nothing but the other containers of its deployment."""
    network = container_name(name)
    with mapped(f"making the network of {name}"):
        if not client.networks.list(names=[network]):
            client.networks.create(
                network,
                driver="bridge",
                internal=True,
                labels={DEPLOYMENT: name},
                options={
                    # no address for the host on it: a service cannot reach the host
                    "com.docker.network.bridge.inhibit_ipv4": "true",
                    "com.docker.network.bridge.enable_ip_masquerade": "false",
                },
            )
    return network


def build_image(
    client: docker.DockerClient,
    spec: Spec,
    context: bytes,
    on_output: BuildOutput | None,
    egress: BuildEgress | None,
) -> str:
    """Build a deploy's image from `context`, its output given to `on_output` as it comes; its
    id. With `egress`, the build joins that network with those proxy settings; else it has no
    network. Raises `DeployFailed` naming the Dockerfile line that failed."""
    lines: list[str] = []
    step = ""
    image: str | None = None
    with mapped(f"building {spec.name}"):
        stream = client.api.build(
            fileobj=io.BytesIO(context),
            custom_context=True,
            tag=f"agent-deploy/{spec.name}:latest",
            rm=True,
            forcerm=True,
            network_mode=egress[0] if egress else "none",
            # Docker's own proxy arguments: seen by RUN, kept out of the image's history
            buildargs=dict(egress[1]) if egress else None,
            decode=True,
        )
        for chunk in stream:
            text = str(chunk.get("stream", ""))
            if text:
                lines.append(text)
                if on_output is not None:
                    on_output(text)
                if text.startswith("Step "):
                    step = text.split(":", 1)[1].strip() if ":" in text else text
            if (aux := chunk.get("aux")) and isinstance(aux, dict):
                image = str(aux.get("ID")) or image  # pyright: ignore[reportUnknownArgumentType]
            if "error" in chunk:
                raise DeployFailed(
                    build_failure(spec.recipe.dockerfile, step, str(chunk["error"])),
                    code=ErrorCode.BUILD_FAILED,
                    logs="".join(lines[-20:]),
                )
    if image is None:
        raise DeployFailed("the build gave no image", code=ErrorCode.BUILD_FAILED)
    return image


async def wait_healthy(
    front: Any, container: Any, version: Version, health: Health, *, url: str | None = None
) -> None:
    """Wait until `container` passes `health`. An HTTP check goes to `url` (the deployment's
    own, when `container` alone is behind it) from this process, else from the deployment's
    `front`, the one container that reaches a version directly. Raises `DeployFailed` when it
    does not pass in time, or the service exits first, with the last lines of its log."""

    def probe() -> None:
        """Return when healthy; else raise `_Unhealthy` with what is wrong (so far), or
        `_Exited` if the service is no longer running."""
        if (found := check()) is None:
            return
        container.reload()
        if container.status not in ("created", "running"):
            code = container.attrs["State"].get("ExitCode")
            raise _Exited(f"the service exited (exit code {code}) before it was healthy")
        raise _Unhealthy(found)

    def check() -> str | None:
        if health.command is not None:
            try:
                result = container.exec_run(["sh", "-c", health.command], user="1000:1000")
            except docker.errors.APIError:  # it is not running (any more): said by `probe`
                return "the service is not running"
            return (
                None if result.exit_code == 0 else f"`{health.command}` exited {result.exit_code}"
            )
        if url is not None:
            try:
                status = str(_http().get(url + health.path).status_code)
            except (httpx.HTTPError, httpx.InvalidURL):
                status = "000"
        else:
            inside = f"http://{container.name}:{version.port}{health.path}"
            result = front.exec_run(
                ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2", inside]
            )
            status = result.output.decode(errors="replace").strip() if result.exit_code == 0 else ""
        if status[:1] in ("2", "3"):
            return None
        return (
            f"GET {health.path} answered {status}"
            if status.isdigit() and status != "000"
            else (f"GET {health.path}: nothing answers on port {version.port}")
        )

    try:
        async for attempt in tenacity.AsyncRetrying(
            stop=tenacity.stop_after_delay(health.timeout),
            # Often at first (a service is up within a second or so), then less.
            wait=tenacity.wait_chain(*[tenacity.wait_fixed(0.025)] * 40, tenacity.wait_fixed(0.25)),
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


@functools.cache
def _http() -> httpx.Client:
    """The client of health checks from this process (made once: a client costs milliseconds).
    Not the environment's proxy: the URL checked is this host's own."""
    # No connection kept between checks: the front would send a kept one on to the version it
    # went to before a switch, not the one to check.
    return httpx.Client(
        timeout=2, trust_env=False, limits=httpx.Limits(max_keepalive_connections=0)
    )


class _Unhealthy(Exception):
    pass


class _Exited(Exception):
    pass


def version_of(
    container: Any, state: Literal["serving", "standby", "stopped", "starting"]
) -> Version:
    plan = json.loads(container.labels[PLAN])
    plan["env_names"] = tuple(plan["env_names"])
    plan["egress"] = tuple(plan.get("egress", ()))
    plan["state"] = state
    return Version(**plan)


def state_of(container: Any, name: str) -> Literal["serving", "standby", "stopped"]:
    if container.status != "running":
        return "stopped"
    return "serving" if is_serving(container, name) else "standby"


def live_name(name: str) -> str:
    """The name of the version that serves: the front sends each connection to whatever
    container is called this on the deployment's network (Docker's DNS follows a rename)."""
    return f"agent-deploy-{name}-live"


def is_serving(container: Any, name: str) -> bool:
    return bool(container.status == "running" and container.name == live_name(name))


def unchanged(container: Any, spec: Spec, image: str) -> bool:
    """Whether deploying `spec` built as `image` would change nothing of what `container` runs:
    the same image, command, port, health check, limits, egress allowlist, and environment (its
    values are read from the container, never kept in a label)."""
    current = version_of(container, "serving")
    env = {f"{k}={v}" for k, v in {**spec.env, "PORT": str(spec.recipe.port)}.items()}
    return (
        current.image == image
        and (current.command, current.port) == (spec.recipe.command, spec.recipe.port)
        and current.env_names == tuple(sorted(spec.env))
        and env <= set(container.attrs["Config"]["Env"] or [])
        and current.health == json.dumps(asdict(spec.health))
        and current.limits == asdict(spec.limits)
        and current.egress == spec.egress
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
