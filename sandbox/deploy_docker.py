"""Deployments on a Docker engine named by URL (the local one by default; `tcp://` or `ssh://`
for another host, through the docker SDK).

    engine
      network agent-deploy-NAME (internal: no way out, and no address of the host on it)
        front   agent-deploy-NAME        socat, published on 127.0.0.1:PORT -> NAME-live:APP_PORT
        v1      agent-deploy-NAME-v1     stopped, kept for a rollback
        v2      agent-deploy-NAME-v2     running: the standby (the version the live one replaced)
        v3      agent-deploy-NAME-live   serving
        (proxy  agent-deploy-NAME-v3-egress: the way out of v3, if its deploy named an allowlist;
                see `sandbox/_service_egress.py`)

The front sends each connection to the container named `agent-deploy-NAME-live` (Docker's DNS
follows a rename): a new version starts beside the one serving, and takes the live name only
once its health check passes; a failing one is removed, and the old one never stops serving.
The one it replaced runs on (the standby): a rollback is two renames. The front's port, and so
the URL, stays the same. Every container of a deploy carries the deploy's idempotency key as a
label: after a crash the deploy is found by its key (`settle`), never run blindly again.
Containers restart with the engine (`unless-stopped`).

`DockerTarget` implements `sandbox.deploy.DeployTarget`.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from dataclasses import asdict
from typing import Any

import docker
import docker.errors

from base import failpoints
from base.errors import ErrorCode
from sandbox._deploy_view import DeploymentsView, not_found
from sandbox._docker import mapped
from sandbox._hardening import service_hardened
from sandbox._service_egress import kill_version, remove_version, start_proxy, start_version
from sandbox._services import (
    DEPLOYMENT,
    FRONT_PORT,
    KEY,
    PLAN,
    VERSION,
    build_image,
    container_name,
    ensure_network,
    is_serving,
    live_name,
    published_port,
    remove_container,
    restarting,
    start_front,
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


class DockerTarget(DeploymentsView):
    """Deployments on a Docker engine: what `DeploymentsView` reads of them, and the changes
    (deploy, rollback, stop, removal, and carrying a deploy to its end after a crash)."""

    async def deploy(
        self,
        spec: Spec,
        context: bytes,
        key: str,
        *,
        on_output: BuildOutput | None = None,
        egress: BuildEgress | None = None,
    ) -> Version:
        async with self._changing(spec.name):
            return await self._deploy(spec, context, key, on_output, egress)

    async def _deploy(
        self,
        spec: Spec,
        context: bytes,
        key: str,
        on_output: BuildOutput | None,
        egress: BuildEgress | None,
    ) -> Version:
        client = await asyncio.to_thread(self.client)
        # The front (the first time) is made while the image builds: it does not need it.
        built = asyncio.to_thread(build_image, client, spec, context, on_output, egress)
        fronted = asyncio.to_thread(
            functools.partial(
                self._front, client, spec.name, spec.recipe.port, host_port=spec.host_port
            )
        )
        outcome = await asyncio.gather(built, fronted, return_exceptions=True)
        for failed in outcome:
            if isinstance(failed, BaseException):
                await asyncio.to_thread(self._forget_if_empty, client, spec.name)
                raise failed
        image = str(outcome[0])
        versions = await asyncio.to_thread(self._versions, client, spec.name)
        current = next((c for c in versions if is_serving(c, spec.name)), None)
        if current is not None and unchanged(current, spec, image):
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
                # Nothing serves, nor holds the name of the one serving (a stopped deployment's
                # last live version does): it may take what traffic there is, as it comes up.
                live=not any(c.name == live_name(spec.name) for c in versions),
            )
        )
        failpoints.reached("deploy:started")
        try:
            return await self._take_over(client, spec.name, container, spec.health)
        except DeployFailed:
            await asyncio.to_thread(self._forget_if_empty, client, spec.name)
            raise

    def _start(
        self,
        client: docker.DockerClient,
        spec: Spec,
        *,
        image: str,
        number: int,
        key: str,
        base: str,
        live: bool,
    ) -> Any:
        """Start a version, named as the one serving if `live` (else by its number)."""
        network = ensure_network(client, spec.name)
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
            egress=spec.egress,
        )
        labels = {
            DEPLOYMENT: spec.name,
            VERSION: str(number),
            KEY: key,
            PLAN: json.dumps(asdict(version)),
        }
        try:
            # No way out, unless the deploy names an allowlist: then through a proxy of its own.
            egress = (
                start_proxy(
                    client,
                    self.runtime_image,
                    name=spec.name,
                    number=number,
                    key=key,
                    allow=spec.egress,
                    own=self.engine_addresses(),
                    allow_private=self.allow_private,
                )
                if spec.egress
                else {}
            )
            with mapped(f"starting {spec.name} v{number}"):
                return client.containers.run(
                    image,
                    name=live_name(spec.name) if live else container_name(spec.name, number),
                    detach=True,
                    labels=labels,
                    environment={**spec.env, **egress, "PORT": str(spec.recipe.port)},
                    network=network,
                    **restarting(service_hardened(spec.limits)),
                )
        except BaseException:
            # what it made of this version (its proxy, say), so that none of it is left
            for left in client.containers.list(all=True, filters={"label": f"{KEY}={key}"}):
                remove_container(left)
            raise

    async def _take_over(
        self,
        client: docker.DockerClient,
        name: str,
        container: Any,
        health: Health,
        *,
        keep: bool = False,
    ) -> Version:
        """Check `container`'s health; healthy, make it the one serving (and the one it replaces
        the standby); unhealthy, take it out (stopped if `keep`, else removed) and raise
        `DeployFailed` (what served goes on serving)."""
        version = version_of(container, "starting")
        front = await asyncio.to_thread(self._front, client, name, version.port)
        await asyncio.to_thread(container.reload)
        alone = is_serving(container, name)  # then the deployment's URL reaches it alone
        try:
            url = await asyncio.to_thread(self._probe_url, front, alone)
            await wait_healthy(front, container, version, health, url=url)
        except DeployFailed:
            await asyncio.to_thread(kill_version if keep else remove_version, client, container)
            raise
        others = await asyncio.to_thread(self._serve, client, name, container)
        await asyncio.to_thread(self._retire, client, others)
        if front.labels.get("agent.port") != str(version.port):  # it sent to the port before
            await asyncio.to_thread(self._front, client, name, version.port, replace=True)
        return version_of(container, "serving")

    def _probe_url(self, front: Any, alone: bool) -> str | None:
        """Where a health check reaches the version being checked from this process: its
        deployment's URL, when that version alone is behind it and the engine is this host's;
        else None (the check runs in the front)."""
        if not alone or not self._local:
            return None
        front.reload()
        port = published_port(front)
        return None if port is None else f"http://{self.url_host}:{port}"

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
        published port. Raises `DeployFailed` if it is published elsewhere than `host_port`."""
        ensure_network(client, name)
        with mapped(f"starting the front of {name}"):
            for found in self._fronts(client, name):
                if host_port is not None and published_port(found) not in (None, host_port):
                    raise DeployFailed(
                        f"{name} is published on port {published_port(found)} of this host; to "
                        f"publish it on {host_port}, remove it first (agent deployments stop "
                        f"{name} --remove), or leave host_port out",
                        code=ErrorCode.BAD_ARGUMENTS,
                    )
                same_port = found.labels.get("agent.port") == str(port)
                if same_port or not replace:
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
                    f"TCP:{live_name(name)}:{port}",
                ],
                name=container_name(name),
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

    def _serve(self, client: docker.DockerClient, name: str, container: Any) -> list[Any]:
        """Make `container` the one the front sends to: it takes the live name, which the one
        serving until now gives back. The other versions that still run, each with whether it
        was the one serving, returned."""
        live = live_name(name)
        others: list[Any] = []
        with mapped(f"switching {name} over"):
            for other in self._versions(client, name):
                if other.id == container.id:
                    continue
                was_live = other.name == live
                if was_live:
                    client.api.rename(other.id, container_name(name, int(other.labels[VERSION])))
                if other.status == "running":
                    others.append((other, was_live))
            if container.name != live:
                client.api.rename(container.id, live)
                container.reload()
        return others

    def _retire(self, client: docker.DockerClient, others: list[Any]) -> None:
        """Stop the versions that no longer get requests (killed at once: nothing reaches them),
        but the newest: it runs on as the standby, so that going back to it is a switch. (After
        a deploy that is the one that served until now; after a rollback, the one rolled back
        from; after a crash, whichever it was.)"""
        running = sorted((other for other, _ in others), key=lambda c: int(c.labels[VERSION]))
        with mapped("stopping the versions that no longer serve"):
            for other in running[:-1]:
                kill_version(client, other)

    # -- after a crash

    async def settle(self, key: str) -> Version | None:
        client = await asyncio.to_thread(self.client)

        def find() -> Any:
            with mapped("looking for a deploy by its key"):
                found = client.containers.list(all=True, filters={"label": f"{KEY}={key}"})
            # the version, not its egress proxy (which carries the key too)
            return next((c for c in found if VERSION in c.labels), None)

        container = await asyncio.to_thread(find)
        if container is None:
            return None
        version = version_of(container, "stopped")
        async with self._changing(version.name):
            return await self._settle(client, container, version)

    async def _settle(
        self, client: docker.DockerClient, container: Any, version: Version
    ) -> Version | None:
        try:  # as it is now that no other change is under way
            await asyncio.to_thread(container.reload)
        except docker.errors.NotFound:
            return None
        health = Health(**json.loads(version.health))
        if container.status != "running":
            await asyncio.to_thread(start_version, client, container)
        # Serving or not, it is checked: a crash may have come before its health check.
        return await self._take_over(client, version.name, container, health)

    # -- what is deployed

    async def stop(self, name: str) -> Deployment:
        client = await asyncio.to_thread(self.client)

        def stop() -> None:
            with mapped(f"stopping {name}"):
                for container in self._containers(client, name):
                    if container.status == "running":
                        container.stop(timeout=5)

        async with self._changing(name):
            await asyncio.to_thread(stop)
        return await self.status(name)

    async def rollback(self, name: str) -> Version:
        async with self._changing(name):
            return await self._rollback(name)

    async def _rollback(self, name: str) -> Version:
        client = await asyncio.to_thread(self.client)
        versions = await asyncio.to_thread(self._versions, client, name)
        if not versions:
            raise not_found(name)
        # The version to go back from: the one serving, or for a stopped deployment the one
        # that served last (it keeps the live name).
        live = live_name(name)
        serving = next((int(c.labels[VERSION]) for c in versions if c.name == live), None)
        below = [c for c in versions if serving is None or int(c.labels[VERSION]) < serving]
        if not below:
            raise DeployFailed(
                f"{name} has no earlier version to roll back to"
                + (f" (v{serving} is its first)" if serving else ""),
                code=ErrorCode.NO_EARLIER_VERSION,
            )
        container = below[-1]
        health = Health(**json.loads(version_of(container, "stopped").health))
        if container.status != "running":
            await asyncio.to_thread(start_version, client, container)
            return await self._take_over(client, name, container, health, keep=True)
        # The standby: it was healthy, so it serves at once and is checked there. The version
        # rolled back from becomes the standby in its turn (a deploy again is then a switch);
        # should the check fail, it serves again.
        others = await asyncio.to_thread(self._serve, client, name, container)
        version = version_of(container, "starting")
        front = await asyncio.to_thread(
            functools.partial(self._front, client, name, version.port, replace=True)
        )
        try:
            url = await asyncio.to_thread(self._probe_url, front, True)
            await wait_healthy(front, container, version, health, url=url)
        except DeployFailed:
            if before := next((other for other, was_live in others if was_live), None):
                await asyncio.to_thread(self._serve, client, name, before)
            raise
        await asyncio.to_thread(self._retire, client, others)
        return version_of(container, "serving")

    async def remove(self, name: str) -> None:
        client = await asyncio.to_thread(self.client)
        async with self._changing(name):
            await asyncio.to_thread(self._remove_all, client, name)

    def _remove_all(self, client: docker.DockerClient, name: str) -> None:
        with mapped(f"removing {name}"):
            for container in self._containers(client, name):
                remove_container(container)
            for network in client.networks.list(names=[container_name(name)]):
                network.remove()

    def _forget_if_empty(self, client: docker.DockerClient, name: str) -> None:
        """After a first deploy that failed: take away the front and network made for it."""
        if not self._versions(client, name):
            self._remove_all(client, name)
