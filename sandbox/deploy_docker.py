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
import functools
import io
import json
import time
from dataclasses import asdict
from typing import Any

import docker
import docker.errors

from base import failpoints
from base.errors import ErrorCode
from sandbox._docker import connect, mapped
from sandbox._hardening import service_hardened
from sandbox._recipes import build_failure
from sandbox._services import (
    FRONT_PORT,
    PLAN,
    container_name,
    is_connected,
    is_serving,
    log_tail,
    published_port,
    remove_container,
    restarting,
    start_front,
    state_of,
    unchanged,
    version_of,
    wait_healthy,
)
from sandbox.deploy import (
    BuildEgress,
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
        self,
        spec: Spec,
        context: bytes,
        key: str,
        *,
        on_output: BuildOutput | None = None,
        egress: BuildEgress | None = None,
    ) -> Version:
        client = await asyncio.to_thread(self.client)
        # The front (the first time) is made while the image builds: it does not need it.
        built = asyncio.to_thread(self._build, client, spec, context, on_output, egress)
        fronted = asyncio.to_thread(
            functools.partial(
                self._front, client, spec.name, spec.recipe.port, host_port=spec.host_port
            )
        )
        try:
            image, _ = await asyncio.gather(built, fronted)
        except DeployFailed:
            await asyncio.to_thread(self._forget_if_empty, client, spec.name)
            raise
        versions = await asyncio.to_thread(self._versions, client, spec.name)
        current = next((c for c in versions if is_serving(c, spec.name)), None)
        if current is not None and unchanged(version_of(current, "serving"), spec, image):
            return version_of(current, "serving")
        number = max((int(c.labels[VERSION]) for c in versions), default=0) + 1
        base = (await self.base_image())[1]
        container = await asyncio.to_thread(
            functools.partial(
                self._start,
                client,
                spec,
                image=image,
                number=number,
                key=key,
                base=base,
                # nothing serves: it may take the traffic there is not, as it comes up
                serve=current is None,
            )
        )
        failpoints.reached("deploy:started")
        return await self._take_over(client, spec.name, container, spec.health, standby=True)

    def _build(
        self,
        client: docker.DockerClient,
        spec: Spec,
        context: bytes,
        on_output: BuildOutput | None,
        egress: BuildEgress | None,
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
                network_mode=egress[0] if egress else "none",
                # Docker's own proxy arguments: seen by RUN, kept out of the image's history
                buildargs=dict(egress[1]) if egress else None,
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

    def _start(
        self,
        client: docker.DockerClient,
        spec: Spec,
        *,
        image: str,
        number: int,
        key: str,
        base: str,
        serve: bool,
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
            approved_by=spec.approved_by,
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
                networking_config={
                    network: client.api.create_endpoint_config(
                        aliases=["current"] if serve else None
                    )
                },
                **restarting(service_hardened(spec.limits)),
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
        self,
        client: docker.DockerClient,
        name: str,
        container: Any,
        health: Health,
        *,
        standby: bool,
    ) -> Version:
        """Check `container`'s health; healthy, make it the one serving (and the one before it
        the standby, if `standby`, else stopped); unhealthy, take it out and raise `DeployFailed`
        (what served goes on serving)."""
        version = version_of(container, "starting")
        front = await asyncio.to_thread(self._front, client, name, version.port)
        try:
            await wait_healthy(front, container, version, health)
        except DeployFailed:
            await asyncio.to_thread(remove_container, container)
            raise
        await asyncio.to_thread(self._switch, client, name, container, standby)
        await asyncio.to_thread(self._front, client, name, version.port, replace=True)
        return version_of(container, "serving")

    def _front(
        self,
        client: docker.DockerClient,
        name: str,
        port: int,
        *,
        replace: bool = False,
        host_port: int | None = None,
    ) -> Any:
        """The deployment's front, started. A new one forwards to port `port` of the version
        serving, published on `host_port` (None: a free one); one that forwards to another port
        is made again only if `replace` (once the version on the new port serves), keeping its
        published port; one published elsewhere than a `host_port` asked for is made again."""
        wanted = container_name(name)
        self._network(client, name)
        with mapped(f"starting the front of {name}"):
            for found in client.containers.list(all=True, filters={"name": f"^/{wanted}$"}):
                moved = host_port is not None and published_port(found) not in (None, host_port)
                same_port = found.labels.get("agent.port") == str(port)
                if (same_port or not replace) and not moved:
                    if found.status != "running":
                        start_front(found, host_port)
                    return found
                host_port = host_port or published_port(found)
                remove_container(found)
            front = client.containers.create(
                self.runtime_image,
                command=[
                    "socat",
                    f"TCP-LISTEN:{FRONT_PORT},fork,reuseaddr",
                    f"TCP:current:{port}",
                ],
                name=wanted,
                labels={DEPLOYMENT: name, "agent.port": str(port), "agent.front": "1"},
                **restarting(
                    service_hardened(ServiceLimits(memory_mb=64, cpus=0.5, pids=64)),
                    # a port of its own the first time; the same one when it is made again
                    ports={f"{FRONT_PORT}/tcp": (self.publish, host_port)},
                ),
            )
            client.networks.get(container_name(name)).connect(front)
            start_front(front, host_port)
            front.reload()
            return front

    def _switch(
        self, client: docker.DockerClient, name: str, container: Any, standby: bool
    ) -> None:
        """Make `container` the one serving. The one that served before is taken off the network
        and, if `standby`, left running (a rollback to it is then a switch); every other running
        version is stopped."""
        network = client.networks.get(container_name(name))
        with mapped(f"switching {name} over"):
            container.reload()
            if not is_serving(container, name):
                if is_connected(container, name):
                    network.disconnect(container)
                network.connect(container, aliases=["current"])
            for other in self._versions(client, name):
                if other.id == container.id or other.status != "running":
                    continue
                was_serving = is_serving(other, name)
                if is_connected(other, name):
                    network.disconnect(other)
                if not (standby and was_serving):
                    other.stop(timeout=5)

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
        version = version_of(container, "stopped")
        health = Health(**json.loads(version.health))
        if container.status != "running":
            await asyncio.to_thread(container.start)
        # Serving or not, it is checked: a crash may have come before its health check.
        return await self._take_over(client, version.name, container, health, standby=True)

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
        versions = tuple(version_of(c, state_of(c, name)) for c in self._versions(client, name))
        url = None
        with mapped(f"reading the front of {name}"):
            for front in client.containers.list(filters={"name": f"^/{container_name(name)}$"}):
                if (port := published_port(front)) is not None:
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
        chosen = next((c for c in versions if is_serving(c, name)), versions[-1])
        return await asyncio.to_thread(log_tail, chosen, lines)

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
        health = Health(**json.loads(target.health))
        if container.status == "running":
            # The standby: it serves at once, beside the one it replaces, then alone if healthy.
            network = await asyncio.to_thread(client.networks.get, container_name(name))
            if not is_connected(container, name):
                await asyncio.to_thread(
                    functools.partial(network.connect, container, aliases=["current"])
                )
        else:
            await asyncio.to_thread(container.start)
        return await self._take_over(client, name, container, health, standby=False)

    async def reachable_by(self, task_id: str) -> frozenset[tuple[str, int]]:
        client = await asyncio.to_thread(self.client)

        def find() -> frozenset[tuple[str, int]]:
            with mapped("listing a task's deployments"):
                versions = client.containers.list(filters={"label": KEY})
                names = {
                    c.labels[DEPLOYMENT]
                    for c in versions
                    if c.labels[KEY].startswith(f"{task_id}/")
                }
                fronts = [f for name in names for f in self._fronts(client, name)]
            ports = (published_port(front) for front in fronts if front.status == "running")
            return frozenset((self.url_host, port) for port in ports if port is not None)

        return await asyncio.to_thread(find)

    async def remove(self, name: str) -> None:
        client = await asyncio.to_thread(self.client)
        await asyncio.to_thread(self._remove_all, client, name)

    def _remove_all(self, client: docker.DockerClient, name: str) -> None:
        with mapped(f"removing {name}"):
            for container in [*self._versions(client, name), *self._fronts(client, name)]:
                remove_container(container)
            for network in client.networks.list(names=[container_name(name)]):
                network.remove()

    def _forget_if_empty(self, client: docker.DockerClient, name: str) -> None:
        """After a first deploy that failed: take away the front and network made for it."""
        if not self._versions(client, name):
            self._remove_all(client, name)
