"""Reading what is deployed on a Docker engine: its deployments, their versions and URLs, their
logs, and which a task may reach; and the lock under which `DockerTarget` changes one."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import tempfile
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import docker

from base.errors import ErrorCode
from sandbox._addresses import host_addresses
from sandbox._claim import host_lock
from sandbox._docker import connect, mapped
from sandbox._service_egress import proxy_of
from sandbox._services import (
    DEPLOYMENT,
    KEY,
    VERSION,
    container_name,
    is_serving,
    log_tail,
    published_port,
    state_of,
    version_of,
)
from sandbox.deploy import DeployFailed, Deployment


class DeploymentsView:
    """What is deployed on a Docker engine named by URL (`url` None for $DOCKER_HOST, default:
    the local socket), read without changing anything, and the lock under which it is
    changed. `publish` is the host address fronts are published on. Does no I/O until awaited."""

    def __init__(
        self,
        runtime_image: str,
        *,
        url: str | None = None,
        publish: str = "127.0.0.1",
        url_host: str | None = None,
        allow_private: bool = False,
    ) -> None:
        self.runtime_image = runtime_image
        self.url = url
        self.publish = publish
        self.url_host = url_host or ("127.0.0.1" if publish in ("0.0.0.0", "") else publish)
        #: a service's egress allowlist may reach a private or the engine host's own address it
        #: names outright ([sandbox] allow_private, as for a task's)
        self.allow_private = allow_private
        self._client: docker.DockerClient | None = None
        #: whether the engine is this host's (its published ports are this host's)
        where = url or os.environ.get("DOCKER_HOST") or "unix://"
        self._local = where.startswith("unix://")

    def client(self) -> docker.DockerClient:
        if self._client is None:
            if self.url is None:
                self._client = connect()
            else:
                with mapped(f"connecting to the Docker engine at {self.url}"):
                    self._client = docker.DockerClient(base_url=self.url, timeout=120)
                    self._client.ping()
        return self._client

    @contextlib.asynccontextmanager
    async def _changing(self, name: str) -> AsyncIterator[None]:
        """One change to a deployment at a time (a deploy, a rollback, a stop, a removal), by
        every runner of this host: a file lock per name. (An engine of another host is not
        locked: its runners' temporary folders are not this one.)"""
        if not self._local:
            yield
            return
        held = host_lock(Path(tempfile.gettempdir()) / f"agent-deploy-{name}.lock")
        await asyncio.to_thread(held.__enter__)
        try:
            yield
        finally:
            held.__exit__(None, None, None)

    def engine_addresses(self) -> list[str]:
        """The addresses of the engine's host, which a service's egress proxy refuses (as a
        task's refuses this host's): this host's interfaces for the local engine; for another
        engine, the addresses its URL's host name resolves to (the ones this host knows)."""
        if self._local:
            return host_addresses()
        host = urllib.parse.urlsplit(self.url or os.environ.get("DOCKER_HOST", "")).hostname
        if host is None:
            return []
        try:
            return sorted({str(info[4][0]) for info in socket.getaddrinfo(host, None)})
        except OSError:
            return []

    async def base_image(self) -> tuple[str, str]:
        def read() -> tuple[str, str]:
            with mapped("reading the runtime image", self.runtime_image):
                return self.runtime_image, str(self.client().images.get(self.runtime_image).id)

        return await asyncio.to_thread(read)

    def _containers(self, client: docker.DockerClient, name: str) -> list[Any]:
        """Every container of a deployment: its versions, their egress proxies, its front."""
        with mapped(f"listing the containers of {name}"):
            return list(client.containers.list(all=True, filters={"label": f"{DEPLOYMENT}={name}"}))

    def _versions(self, client: docker.DockerClient, name: str) -> list[Any]:
        found = self._containers(client, name)
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
            for front in self._fronts(client, name):
                if front.status == "running" and (port := published_port(front)) is not None:
                    url = f"http://{self.url_host}:{port}/"
        if not versions:
            raise not_found(name)
        return Deployment(
            name, url if any(v.state == "serving" for v in versions) else None, versions
        )

    async def deployments(self) -> list[Deployment]:
        client = await asyncio.to_thread(self.client)

        def names() -> list[str]:
            with mapped("listing deployments"):
                found = client.containers.list(all=True, filters={"label": DEPLOYMENT})
            return sorted({c.labels[DEPLOYMENT] for c in found})

        found: list[Deployment] = []
        for name in await asyncio.to_thread(names):
            with contextlib.suppress(DeployFailed):  # a front with no version yet: not one
                found.append(await self.status(name))
        return found

    async def logs(self, name: str, lines: int = 100, *, egress: bool = False) -> str:
        client = await asyncio.to_thread(self.client)
        versions = await asyncio.to_thread(self._versions, client, name)
        if not versions:
            raise not_found(name)
        chosen = next((c for c in versions if is_serving(c, name)), versions[-1])
        if not egress:
            return await asyncio.to_thread(log_tail, chosen, lines)
        proxy = await asyncio.to_thread(proxy_of, client, chosen)
        if proxy is None:
            number = chosen.labels[VERSION]
            return f"(v{number} has no way out: its deploy named no egress allowlist)"
        return await asyncio.to_thread(log_tail, proxy, lines)

    def _fronts(self, client: docker.DockerClient, name: str) -> list[Any]:
        """The deployment's front (none, or one), whatever its state."""
        return list(
            client.containers.list(all=True, filters={"name": f"^/{container_name(name)}$"})
        )

    async def reachable_by(self, task_id: str) -> frozenset[tuple[str, int]]:
        client = await asyncio.to_thread(self.client)

        def find() -> frozenset[tuple[str, int]]:
            with mapped("listing a task's deployments"):
                versions = client.containers.list(filters={"label": KEY})
                names = {
                    c.labels[DEPLOYMENT]
                    for c in versions
                    # what serves is the task's own (not a version it made that another replaced)
                    if c.labels[KEY].startswith(f"{task_id}/")
                    and is_serving(c, c.labels[DEPLOYMENT])
                }
                fronts = [f for name in names for f in self._fronts(client, name)]
            ports = (published_port(front) for front in fronts if front.status == "running")
            return frozenset((self.url_host, port) for port in ports if port is not None)

        if not self._local:
            # Its ports are another host's: the same address here would be this host's own.
            return frozenset()
        return await asyncio.to_thread(find)


def not_found(name: str) -> DeployFailed:
    return DeployFailed(f"no deployment is named {name!r}", code=ErrorCode.NOT_FOUND)
