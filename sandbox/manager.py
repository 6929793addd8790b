"""Sandboxes: one container per task, a warm pool of started ones, and reaping what is left over.

    sandboxes = Sandboxes(SandboxConfig(), scope=store_scope(store.path))
    sandbox = await sandboxes.for_task(task_id)   # the same container on every call, and after a
                                                  # restart of the runner
    ...
    await sandboxes.release(task_id)              # when the task is over
    await sandboxes.aclose()                      # waits for the pool to be refilled

A task's container is named `agent-<scope>-<task id>`, the scope being a digest of the store, so
that two stores on one machine never share a container. A pooled container is named
`agent-pool-<limits>-<random>` once it is ready (until then `agent-prep-...`: a browser being
started in it, its forwarder being made). It is claimed by renaming it to the task's name under a
lock (sandbox/_claim.py): two runners never get the same one, and no task's command has run in a
container with a pool name.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import docker
import docker.errors

from base.errors import ErrorCode, SandboxError
from sandbox._claim import claim, host_lock_applies
from sandbox._docker import LABEL, connect, docker_time, mapped, owned_by, owner_labels
from sandbox._hardening import hardened
from sandbox.container import Sandbox
from sandbox.egress import Egress, EgressListener, Forwarder, remove_orphan_networks, teardown
from sandbox.limits import SandboxConfig, SandboxLimits

POOL_PREFIX = "agent-pool-"
#: a pool container being prepared (not claimable yet)
PREPARING = "agent-prep-"
#: seconds after which a container still being prepared is taken for a crashed runner's
PREPARE_GRACE = 300.0
#: seconds a volume with no container is given before a reap removes it
VOLUME_GRACE = 60.0


def store_scope(where: Path | str, host: str = "") -> str:
    """A short digest naming the containers of a store, at a path (SQLite) or a URL (shared:
    PostgreSQL), on `host` (when one machine holds several workers' hosts, as a test of many
    hosts does)."""
    named = str(where.resolve() if isinstance(where, Path) else where) + (
        f"@{host}" if host else ""
    )
    return hashlib.sha256(named.encode()).hexdigest()[:8]


class Sandboxes:
    """The sandboxes of one store's tasks. Does no I/O until a method is awaited."""

    def __init__(
        self, config: SandboxConfig, *, scope: str, on_egress: EgressListener | None = None
    ) -> None:
        self.config = config
        self.scope = scope
        #: the proxy and networks of tasks whose network is "proxy"; `on_egress` hears each
        #: decision of the proxy
        self.egress = Egress(on_egress, allow_private=config.allow_private)
        self._client: docker.DockerClient | None = None
        self._image_id: str | None = None
        self._open: dict[str, Sandbox] = {}
        #: the forwarders this process made for its pooled proxied sandboxes, by container id
        self._forwarders: dict[str, Forwarder] = {}
        self._refill: asyncio.Future[int] | None = None

    def name_of(self, task_id: str) -> str:
        return f"agent-{self.scope}-{task_id}"

    async def client(self) -> docker.DockerClient:
        """The Docker client. Raises `DockerUnavailable` when no daemon answers."""
        if self._client is None:
            self._client = await asyncio.to_thread(connect)
        return self._client

    async def for_task(self, task_id: str, limits: SandboxLimits | None = None) -> Sandbox:
        """The task's sandbox: its container if it has one (after a restart too), else one from
        the warm pool, else a new one.

        Raises `SandboxError`, `DockerUnavailable` or `ImageMissing`, with `nothing_ran`
        set: no command of the caller's has run.
        """
        if (open_ := self._open.get(task_id)) is not None:
            return open_
        limits = limits or self.config.limits
        try:
            client = await self.client()
            sandbox, pool_name = await asyncio.to_thread(
                self._find_or_make, client, task_id, limits
            )
            if limits.network == "proxy":
                forwarder = self._forwarders.pop(sandbox.id, None)
                if pool_name is not None and forwarder is not None:
                    # Claimed from this process's pool: its forwarder is ready, and goes on.
                    await asyncio.to_thread(Egress.rename, client, pool_name, sandbox.name)
                    opened = self.egress.register(task_id, forwarder, limits.allow_domains)
                else:
                    opened = await self.egress.open(
                        client, task_id, sandbox.name, limits.allow_domains
                    )
                sandbox.env, sandbox.devtools = opened.env, opened.devtools
                sandbox.host_proxy = opened.host_proxy
        except SandboxError as exc:
            exc.nothing_ran = True  # the caller's command never reached a container
            raise
        self._open[task_id] = sandbox
        if limits == self.config.limits and self.config.pool_size and self._refill is None:
            # Start the next task's sandbox now, while this one works.
            self._refill = refill = asyncio.ensure_future(self.fill_pool())
            refill.add_done_callback(self._refilled)
        return sandbox

    def _find_or_make(
        self, client: docker.DockerClient, task_id: str, limits: SandboxLimits
    ) -> tuple[Sandbox, str | None]:
        """The task's sandbox, and the pool name it had if it was just claimed from the pool."""
        name = self.name_of(task_id)
        # One listing finds both the task's own container and the pool's: the fast path is a
        # handful of milliseconds, and each call to the daemon counts.
        listed = self._listed(client)
        own = next((c for c in listed if f"/{name}" in c["Names"]), None)
        if own is not None:
            stopped = own["State"] not in ("running", "paused")
            with mapped(f"restarting the sandbox of task {task_id}"):
                if own["State"] == "paused":  # a runner died while claiming it from the pool
                    client.api.unpause(own["Id"])
                elif stopped:
                    client.api.start(own["Id"])
            sandbox = Sandbox(client, own["Id"], name, limits, fresh=False, restarted=stopped)
            return sandbox, None
        claimed = self._claim(client, name, listed, limits)
        if claimed is not None:
            container_id, pool_name = claimed
            return Sandbox(client, container_id, name, limits, fresh=True), pool_name
        created = self._create(client, name, limits, task_id)
        return Sandbox(client, created, name, limits, fresh=True), None

    def _claim(
        self,
        client: docker.DockerClient,
        name: str,
        listed: list[dict[str, Any]],
        limits: SandboxLimits,
    ) -> tuple[str, str] | None:
        """Rename a started pool container to `name`; its id and pool name, or None if the pool
        has none that fits."""
        names = {str(c["Id"]): c["Names"] for c in listed}
        host = host_lock_applies(client)
        for container_id in self._pool(client, listed, limits):
            pool_name = next(
                n.lstrip("/") for n in names[container_id] if n.lstrip("/").startswith(POOL_PREFIX)
            )
            try:
                if claim(client, container_id, pool_name, name, host=host):
                    return container_id, pool_name
            except SandboxError as exc:
                if exc.code != ErrorCode.SANDBOX_GONE:
                    raise
                # removed while being claimed (a prune of the pool): try the next one
        return None

    def _pool(
        self, client: docker.DockerClient, listed: list[dict[str, Any]], limits: SandboxLimits
    ) -> list[str]:
        """The ids of the waiting pool containers that fit `limits` and the current image."""
        wanted = {"agent.limits": limits.key(), "agent.image": self._current_image(client)}
        fitting = [
            str(c["Id"])
            for c in listed
            if c["State"] == "running"
            and any(n.lstrip("/").startswith(POOL_PREFIX) for n in c["Names"])
            and all(c["Labels"].get(k) == v for k, v in wanted.items())
        ]
        # This process's own first: their forwarders (and browsers) are ready for it.
        return sorted(fitting, key=lambda c: c not in self._forwarders)

    def _listed(self, client: docker.DockerClient) -> list[dict[str, Any]]:
        with mapped("listing sandboxes"):
            found: list[dict[str, Any]] = client.api.containers(
                all=True, filters={"label": f"{LABEL}=1"}
            )
        return found

    def _current_image(self, client: docker.DockerClient) -> str:
        if self._image_id is None:
            with mapped("finding the runtime image", image=self.config.image):
                self._image_id = str(client.images.get(self.config.image).id)
        return self._image_id

    def _create(
        self, client: docker.DockerClient, name: str, limits: SandboxLimits, task_id: str
    ) -> str:
        """Start a container for `task_id` ("" for the pool), its network and volumes labelled
        as this scope's."""
        image_id = self._current_image(client)
        owner = owner_labels(self.scope, task_id)
        labels = {**owner, "agent.limits": limits.key(), "agent.image": image_id}
        network = "none"
        if limits.network != "none":
            network = Egress.make_network(client, name, owner)
        with mapped(f"starting sandbox {name}", image=self.config.image):
            container = client.containers.run(
                image_id,
                name=name,
                detach=True,
                labels=labels,
                **hardened(limits, owner, network=network),
            )
        return str(container.id)

    def _refilled(self, refill: asyncio.Future[int]) -> None:
        if self._refill is refill:
            self._refill = None  # the next claim refills again
        if not refill.cancelled():
            refill.exception()  # a failed refill leaves the pool smaller, nothing else

    def holds(self, task_id: str) -> bool:
        """Whether this process has the task's sandbox open (a call of the task used it)."""
        return task_id in self._open

    def done_running(self, task_id: str) -> None:
        """The task's run in this process is over (it may resume later, anywhere): forget its
        sandbox here, and take its token from the egress proxy, so that nothing it left running
        reaches out unrecorded."""
        self._open.pop(task_id, None)
        self.egress.forget(task_id)

    async def fill_pool(self) -> int:
        """Start pool containers until `pool_size` are waiting; return how many were started."""
        return len(await self.fill(self.config.limits, self.config.pool_size))

    async def waiting(self, limits: SandboxLimits) -> set[str]:
        """The ids of the pool's containers that fit `limits`, waiting to be claimed."""
        client = await self.client()
        listed = await asyncio.to_thread(self._listed, client)
        return set(await asyncio.to_thread(self._pool, client, listed, limits))

    def browser_limits(self) -> SandboxLimits:
        """The limits of the browser pool's sandboxes: the default ones, with network "proxy"."""
        return self.config.limits.model_copy(update={"network": "proxy", "allow_domains": ()})

    async def fill(
        self,
        limits: SandboxLimits,
        size: int,
        *,
        own: int | None = None,
        prepare: Callable[[Sandbox], Awaitable[object]] | None = None,
    ) -> list[Sandbox]:
        """Start pool containers with `limits` until `size` are waiting (or, given `own`, until
        this process has `size` of its own, `own` being how many it has); return those started.

        A proxied one gets its forwarder now (the proxy refuses what comes through it until a
        task claims it), so that its `devtools` address is known. With `prepare`, each is
        prepared (a browser started) under another name first: a container is claimable only
        once its name says it is in the pool, and a claim may pause it, which no command in flight
        must see.
        """
        client = await self.client()
        if own is None:
            listed = await asyncio.to_thread(self._listed, client)
            own = len(await asyncio.to_thread(self._pool, client, listed, limits))
        started = []
        for _ in range(size - own):
            suffix = limits.key() + "-" + secrets.token_hex(4)
            # A proxied one is not ready before its forwarder is.
            preparing = prepare is not None or limits.network == "proxy"
            name = (PREPARING if preparing else POOL_PREFIX) + suffix
            container_id = await asyncio.to_thread(self._create, client, name, limits, "")
            sandbox = Sandbox(client, container_id, name, limits, fresh=True)
            if limits.network == "proxy":
                forwarder = await self.egress.prepare(client, name)
                self._forwarders[container_id] = forwarder
                sandbox.devtools = self.egress.devtools(forwarder)
            if prepare is not None:
                try:
                    await prepare(sandbox)
                except BaseException:
                    self._forwarders.pop(container_id, None)
                    await asyncio.to_thread(teardown, client, name)
                    raise
            if preparing:
                await asyncio.to_thread(self._enter_pool, client, sandbox, POOL_PREFIX + suffix)
            started.append(sandbox)
        return started

    @staticmethod
    def _enter_pool(client: docker.DockerClient, sandbox: Sandbox, pool_name: str) -> None:
        with mapped(f"putting {sandbox.name} in the pool"):
            if sandbox.limits.network == "proxy":
                Egress.rename(client, sandbox.name, pool_name)
            client.api.rename(sandbox.id, pool_name)
        sandbox.name = pool_name

    async def release(self, task_id: str) -> bool:
        """Remove the task's container and its volumes; False if it had none."""
        self._open.pop(task_id, None)
        self.egress.forget(task_id)
        client = await self.client()
        return await asyncio.to_thread(teardown, client, self.name_of(task_id))

    async def reap(self, is_over: Callable[[str], bool], *, pool: bool = False) -> list[str]:
        """Remove this store's containers whose task `is_over` (and, with `pool`, every pooled
        container, and pooled containers of an old image regardless); return their names."""
        client = await self.client()
        return await asyncio.to_thread(self._reap, client, is_over, pool)

    def _reap(
        self, client: docker.DockerClient, is_over: Callable[[str], bool], pool: bool
    ) -> list[str]:
        mine = f"agent-{self.scope}-"
        current = self._image_id_or_none(client)
        doomed = []
        for container in self._listed(client):
            name = container["Names"][0].lstrip("/") if container["Names"] else ""
            if container["Labels"].get("agent.role") == "egress":
                continue  # a forwarder goes with its sandbox
            if name.startswith(mine):
                if is_over(name[len(mine) :]):
                    doomed.append(name)
            elif (
                name.startswith(POOL_PREFIX)
                and (
                    pool
                    # Paused is being claimed (for milliseconds) by another runner: leave it.
                    or container["State"] not in ("running", "paused")
                    or container["Labels"].get("agent.image") != current
                )
            ) or (
                # Still being prepared after that long: its runner is gone.
                name.startswith(PREPARING)
                and (pool or container["Created"] < time.time() - PREPARE_GRACE)
            ):
                doomed.append(name)
        removed = []
        for name in doomed:
            try:
                if teardown(client, name):
                    removed.append(name)
            except SandboxError as exc:
                if exc.code not in (
                    ErrorCode.SANDBOX_BUSY,
                    ErrorCode.SANDBOX_GONE,
                ):  # being removed
                    raise
        with mapped("removing volumes left behind"):
            # The daemon now and then fails to remove a container's volumes with it. Old enough
            # that no container being made right now can be about to take it.
            cutoff = time.time() - VOLUME_GRACE
            for volume in client.volumes.list(filters={"label": f"{LABEL}=1", "dangling": True}):
                if not owned_by(volume.attrs.get("Labels"), self.scope):
                    continue  # another runner's
                try:
                    when = docker_time(str(volume.attrs.get("CreatedAt", "")))
                except ValueError:
                    continue
                if when < cutoff:
                    with contextlib.suppress(docker.errors.APIError):
                        volume.remove()
                        removed.append(f"volume {volume.name}")
        removed += remove_orphan_networks(client, self.scope, cutoff)
        return removed

    def _image_id_or_none(self, client: docker.DockerClient) -> str | None:
        try:
            return self._current_image(client)
        except SandboxError:
            return None

    async def aclose(self) -> None:
        """Wait for the pool's refill; then nothing of this object is left running."""
        refill, self._refill = self._refill, None
        if refill is not None:
            # The pool is a speed-up: a failed refill leaves it smaller, nothing else.
            with contextlib.suppress(SandboxError):
                await refill
        # The proxy goes with this object's event loop; a later run opens the sandboxes again.
        self._open.clear()
        self._forwarders.clear()
        await self.egress.aclose()
        if self._client is not None:
            self._client.close()
            self._client = None
