"""Deployments on a Docker engine named by URL (the local one by default; `tcp://` or `ssh://`
for another host, through the docker SDK).

    engine
      network agent-deploy-NAME (internal: no way out)
        front   agent-deploy-NAME       socat, published on 127.0.0.1:PORT -> current:APP_PORT
        v1      agent-deploy-NAME-v1    stopped, kept for a rollback
        v2      agent-deploy-NAME-v2    network alias "current": serving

A new version starts beside the one serving, and takes the alias "current" only once its health
check passes; a failing one is removed and the old one never stops serving. The front's port,
and so the URL, stays the same across versions. Every container of a deploy carries the deploy's
idempotency key as a label, so that after a crash the deploy is found by its key (`settle`),
never run blindly again. Containers restart with the engine (`unless-stopped`).

`DockerTarget` implements `sandbox.deploy.DeployTarget`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import json
import time
from dataclasses import asdict
from typing import Any, Literal

import docker
import docker.errors
import tenacity

from base.errors import ErrorCode
from sandbox._docker import connect, mapped
from sandbox._hardening import service_hardened
from sandbox._recipes import build_failure
from sandbox.deploy import (
    BuildOutput,
    DeployFailed,
    Deployment,
    Health,
    ServiceLimits,
    Spec,
    Version,
)

DEPLOYMENT = "agent.deployment"
VERSION = "agent.version"
KEY = "agent.key"
PLAN = "agent.plan"
#: the port the front listens on inside its container
_FRONT_PORT = 8080


def container_name(name: str, number: int | None = None) -> str:
    return f"agent-deploy-{name}" if number is None else f"agent-deploy-{name}-v{number}"


class DockerTarget:
    """Deployments on a Docker engine: `url` None for $DOCKER_HOST (default: the local socket).
    `publish` is the host address fronts are published on. Does no I/O until awaited."""

    def __init__(
        self,
        runtime_image: str,
        *,
        url: str | None = None,
        publish: str = "127.0.0.1",
        url_host: str | None = None,
    ) -> None:
        self.runtime_image = runtime_image
        self.url = url
        self.publish = publish
        self.url_host = url_host or ("127.0.0.1" if publish in ("0.0.0.0", "") else publish)
        self._client: docker.DockerClient | None = None

    def client(self) -> docker.DockerClient:
        if self._client is None:
            if self.url is None:
                self._client = connect()
            else:
                with mapped(f"connecting to the Docker engine at {self.url}"):
                    self._client = docker.DockerClient(base_url=self.url, timeout=120)
                    self._client.ping()
        return self._client

    async def base_image(self) -> tuple[str, str]:
        def read() -> tuple[str, str]:
            with mapped("reading the runtime image", self.runtime_image):
                return self.runtime_image, str(self.client().images.get(self.runtime_image).id)

        return await asyncio.to_thread(read)

    # -- deploy

    async def deploy(
        self, spec: Spec, context: bytes, key: str, *, on_output: BuildOutput | None = None
    ) -> Version:
        client = await asyncio.to_thread(self.client)
        image = await asyncio.to_thread(self._build, client, spec, context, on_output)
        current = next(
            (
                _version(c, "serving")
                for c in await asyncio.to_thread(self._versions, client, spec.name)
                if _serving(c, spec.name)
            ),
            None,
        )
        if current is not None and _same(current, spec, image):
            return current
        number = await asyncio.to_thread(self._next_number, client, spec.name)
        base = (await self.base_image())[1]
        container = await asyncio.to_thread(
            functools.partial(
                self._start, client, spec, image=image, number=number, key=key, base=base
            )
        )
        return await self._take_over(client, spec.name, container, spec.health)

    def _build(
        self,
        client: docker.DockerClient,
        spec: Spec,
        context: bytes,
        on_output: BuildOutput | None,
    ) -> str:
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
                network_mode="none",
                decode=True,
                labels={DEPLOYMENT: spec.name},
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

    def _next_number(self, client: docker.DockerClient, name: str) -> int:
        numbers = [int(c.labels[VERSION]) for c in self._versions(client, name)]
        return max(numbers, default=0) + 1

    def _start(
        self,
        client: docker.DockerClient,
        spec: Spec,
        *,
        image: str,
        number: int,
        key: str,
        base: str,
    ) -> Any:
        network = self._network(client, spec.name)
        version = Version(
            name=spec.name,
            number=number,
            key=key,
            image=image,
            kind=spec.recipe.kind,
            command=spec.recipe.command,
            port=spec.recipe.port,
            env_names=tuple(sorted(spec.env)),
            health=json.dumps(asdict(spec.health)),
            limits=asdict(spec.limits),
            files=spec.files,
            base=base,
            created=time.time(),
        )
        labels = {
            DEPLOYMENT: spec.name,
            VERSION: str(number),
            KEY: key,
            PLAN: json.dumps(asdict(version)),
        }
        with mapped(f"starting {spec.name} v{number}"):
            return client.containers.run(
                image,
                name=container_name(spec.name, number),
                detach=True,
                labels=labels,
                environment={**spec.env, "PORT": str(spec.recipe.port)},
                network=network,
                **_restarting(service_hardened(spec.limits)),
            )

    def _network(self, client: docker.DockerClient, name: str) -> str:
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

    async def _take_over(
        self, client: docker.DockerClient, name: str, container: Any, health: Health
    ) -> Version:
        """Check `container`'s health; healthy, make it the one serving and stop the one before;
        unhealthy, remove it and raise `DeployFailed` (what served goes on serving)."""
        version = _version(container, "starting")
        front = await asyncio.to_thread(self._front, client, name, version.port)
        try:
            await self._wait_healthy(client, front, container, version, health)
        except DeployFailed:
            await asyncio.to_thread(_remove, container)
            raise
        await asyncio.to_thread(self._switch, client, name, container)
        return _version(container, "serving")

    async def _wait_healthy(
        self,
        client: docker.DockerClient,
        front: Any,
        container: Any,
        version: Version,
        health: Health,
    ) -> None:
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
                    None
                    if result.exit_code == 0
                    else f"`{health.command}` exited {result.exit_code}"
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
                wait=tenacity.wait_fixed(0.2),
                retry=tenacity.retry_if_exception_type(_Unhealthy),
                reraise=True,
            ):
                with (
                    attempt,
                    mapped(f"checking the health of {version.name} v{version.number}"),
                ):
                    await asyncio.to_thread(probe)
        except (_Unhealthy, _Exited) as exc:
            logs = await asyncio.to_thread(_tail, container, 20)
            reason = str(exc) if isinstance(exc, _Exited) else f"{exc} after {health.timeout:g} s"
            raise DeployFailed(
                f"{version.name} v{version.number} is not healthy: {reason}; what served before "
                "goes on serving",
                code=ErrorCode.HEALTH_FAILED,
                logs=logs,
            ) from None

    def _front(self, client: docker.DockerClient, name: str, port: int) -> Any:
        """The deployment's front, started, forwarding to port `port` of the version serving."""
        wanted = container_name(name)
        host_port: int | None = None
        with mapped(f"starting the front of {name}"):
            for found in client.containers.list(all=True, filters={"name": f"^/{wanted}$"}):
                if found.labels.get("agent.port") == str(port):
                    if found.status != "running":
                        found.start()
                    return found
                host_port = _published(found)
                _remove(found)
            front = client.containers.create(
                self.runtime_image,
                command=[
                    "socat",
                    f"TCP-LISTEN:{_FRONT_PORT},fork,reuseaddr",
                    f"TCP:current:{port}",
                ],
                name=wanted,
                labels={DEPLOYMENT: name, "agent.port": str(port), "agent.front": "1"},
                **_restarting(
                    service_hardened(ServiceLimits(memory_mb=64, cpus=0.5, pids=64)),
                    # a port of its own the first time; the same one when it is made again
                    ports={f"{_FRONT_PORT}/tcp": (self.publish, host_port)},
                ),
            )
            client.networks.get(container_name(name)).connect(front)
            front.start()
            front.reload()
            return front

    def _switch(self, client: docker.DockerClient, name: str, container: Any) -> None:
        network = client.networks.get(container_name(name))
        with mapped(f"switching {name} over"):
            network.disconnect(container)
            network.connect(container, aliases=["current"])
            for other in self._versions(client, name):
                if other.id != container.id and other.status == "running":
                    network.disconnect(other)
                    other.stop(timeout=5)
                    network.connect(other)

    # -- after a crash

    async def settle(self, key: str) -> Version | None:
        client = await asyncio.to_thread(self.client)

        def find() -> Any:
            with mapped("looking for a deploy by its key"):
                found = client.containers.list(all=True, filters={"label": f"{KEY}={key}"})
            return found[0] if found else None

        container = await asyncio.to_thread(find)
        if container is None:
            return None
        version = _version(container, "stopped")
        if _serving(container, version.name):
            return _version(container, "serving")
        health = Health(**json.loads(version.health))
        if container.status != "running":
            await asyncio.to_thread(container.start)
        return await self._take_over(client, version.name, container, health)

    # -- what is deployed

    def _versions(self, client: docker.DockerClient, name: str) -> list[Any]:
        with mapped(f"listing the versions of {name}"):
            found = client.containers.list(all=True, filters={"label": f"{DEPLOYMENT}={name}"})
        return sorted(
            (c for c in found if VERSION in c.labels), key=lambda c: int(c.labels[VERSION])
        )

    async def status(self, name: str) -> Deployment:
        client = await asyncio.to_thread(self.client)
        return await asyncio.to_thread(self._status, client, name)

    def _status(self, client: docker.DockerClient, name: str) -> Deployment:
        versions = tuple(
            _version(c, "serving" if _serving(c, name) else "stopped")
            for c in self._versions(client, name)
        )
        url = None
        with mapped(f"reading the front of {name}"):
            for front in client.containers.list(filters={"name": f"^/{container_name(name)}$"}):
                if (port := _published(front)) is not None:
                    url = f"http://{self.url_host}:{port}/"
        if not versions:
            raise DeployFailed(f"no deployment is named {name!r}", code=ErrorCode.NOT_FOUND)
        return Deployment(
            name, url if any(v.state == "serving" for v in versions) else None, versions
        )

    async def deployments(self) -> list[Deployment]:
        client = await asyncio.to_thread(self.client)

        def names() -> list[str]:
            with mapped("listing deployments"):
                found = client.containers.list(all=True, filters={"label": DEPLOYMENT})
            return sorted({c.labels[DEPLOYMENT] for c in found})

        return [await self.status(name) for name in await asyncio.to_thread(names)]

    async def logs(self, name: str, lines: int = 100) -> str:
        client = await asyncio.to_thread(self.client)
        versions = await asyncio.to_thread(self._versions, client, name)
        if not versions:
            raise DeployFailed(f"no deployment is named {name!r}", code=ErrorCode.NOT_FOUND)
        chosen = next((c for c in versions if _serving(c, name)), versions[-1])
        return await asyncio.to_thread(_tail, chosen, lines)

    # -- the user's powers

    async def stop(self, name: str) -> Deployment:
        client = await asyncio.to_thread(self.client)

        def stop() -> None:
            with mapped(f"stopping {name}"):
                for container in [*self._versions(client, name), *self._fronts(client, name)]:
                    if container.status == "running":
                        container.stop(timeout=5)

        await asyncio.to_thread(stop)
        return await self.status(name)

    def _fronts(self, client: docker.DockerClient, name: str) -> list[Any]:
        return list(
            client.containers.list(all=True, filters={"name": f"^/{container_name(name)}$"})
        )

    async def rollback(self, name: str) -> Version:
        client = await asyncio.to_thread(self.client)
        deployment = await self.status(name)
        serving = deployment.serving
        below = [v for v in deployment.versions if serving is None or v.number < serving.number]
        if not below:
            raise DeployFailed(
                f"{name} has no earlier version to roll back to"
                + (f" (v{serving.number} is its first)" if serving else ""),
                code=ErrorCode.NO_EARLIER_VERSION,
            )
        target = below[-1]
        container = await asyncio.to_thread(
            lambda: client.containers.get(container_name(name, target.number))
        )
        if container.status != "running":
            await asyncio.to_thread(container.start)
        return await self._take_over(client, name, container, Health(**json.loads(target.health)))

    async def remove(self, name: str) -> None:
        client = await asyncio.to_thread(self.client)

        def remove() -> None:
            with mapped(f"removing {name}"):
                for container in [*self._versions(client, name), *self._fronts(client, name)]:
                    _remove(container)
                for network in client.networks.list(names=[container_name(name)]):
                    network.remove()

        await asyncio.to_thread(remove)


class _Unhealthy(Exception):
    pass


class _Exited(Exception):
    pass


def _version(container: Any, state: Literal["serving", "stopped", "starting"]) -> Version:
    plan = json.loads(container.labels[PLAN])
    plan["env_names"] = tuple(plan["env_names"])
    plan["state"] = state
    return Version(**plan)


def _serving(container: Any, name: str) -> bool:
    networks = container.attrs["NetworkSettings"]["Networks"] or {}
    aliases = (networks.get(container_name(name)) or {}).get("Aliases") or []
    return container.status == "running" and "current" in aliases


def _same(current: Version, spec: Spec, image: str) -> bool:
    return (
        current.image == image
        and current.env_names == tuple(sorted(spec.env))
        and current.health == json.dumps(asdict(spec.health))
        and current.limits == asdict(spec.limits)
    )


def _published(container: Any) -> int | None:
    ports = container.attrs["NetworkSettings"]["Ports"] or {}
    bound = ports.get(f"{_FRONT_PORT}/tcp") or []
    return int(bound[0]["HostPort"]) if bound else None


def _restarting(settings: dict[str, Any], **more: Any) -> dict[str, Any]:
    """Container settings that make it start again with the engine, unless it was stopped."""
    return {**settings, **more, "restart_policy": {"Name": "unless-stopped"}}


def _tail(container: Any, lines: int) -> str:
    try:
        return bytes(container.logs(tail=lines)).decode(errors="replace")
    except docker.errors.DockerException:
        return ""


def _remove(container: Any) -> None:
    with contextlib.suppress(docker.errors.NotFound):
        container.remove(force=True)
