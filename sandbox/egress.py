"""The way out for a sandbox whose network is "proxy": the only route from it leads to the egress
proxy on the host, which allows the task's domains and refuses everything else.

    sandbox ──(its own internal network)── forwarder ──(agent-egress)── EgressProxy on the host

The task's network is internal (no route out) and the host has no address on it, so from the
sandbox nothing answers but the forwarder: not the host, not the Docker API, not the gateway,
not another sandbox (each task has its own network), not a metadata address. The forwarder, a
hardened container running socat with a fixed command, passes TCP to the proxy's port on the
gateway of the `agent-egress` network, and relays the host's DevTools connection to the
sandbox's browser (taking it from the host's address only); nothing else. The proxy judges each
request against the task's allowlist before a byte reaches a target, and tells the runner of
every decision. It takes what arrives from a task's forwarder as the task's, with or without
the token (a browser cannot send one).

The proxy lives in the runner's process and its port changes with each process, so a task's
forwarder is made again by every runner that opens its sandbox, and the proxy's address and token
reach commands through each `exec`'s environment, not the container's.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors

from base.errors import SandboxError
from sandbox._docker import LABEL, SCOPE, TASK, docker_time, mapped, owned_by
from sandbox._hardening import hardened
from sandbox.container import USER as USER_ID
from sandbox.limits import SandboxLimits
from sandbox.proxy import USER, EgressAttempt, EgressProxy, ServiceLookup

PROXY_PORT_IN_SANDBOX = 3128
#: where the sandbox's browser relays its DevTools port (see image/bin/agent-browser), and the
#: forwarder's port that relays it on to the host
DEVTOOLS_PORT = 9223
#: the forwarder's name on the task's network: the sandbox reaches the proxy at egress:3128
EGRESS_ALIAS = "egress"
#: the network of the forwarders, where the host (and the proxy) has an address
FORWARDERS = "agent-egress"
EgressListener = Callable[[str, EgressAttempt], None]
"""Told of each of the proxy's decisions: (task id, attempt)."""

FORWARDER_LIMITS = SandboxLimits(memory_mb=64, pids=64, cpus=0.5, workspace_mb=1, tmp_mb=1)


#: a forwarder's label: the id of the sandbox it serves
FORWARDS = "agent.forwards"


@dataclass(frozen=True)
class Forwarder:
    #: its address on the sandbox's network, and on the forwarders' (where the host reaches it)
    inside: str
    outside: str


@dataclass(frozen=True)
class Opened:
    """A proxied sandbox's way out, as opened by one runner."""

    #: the environment that sends a command's HTTP(S) through the proxy
    env: dict[str, str]
    #: where the host reaches the sandbox's browser DevTools (when a browser runs there)
    devtools: str
    #: the proxy as the host reaches it, with the task's credentials
    host_proxy: str


class Egress:
    """The host's egress proxy and the tasks' networks and forwarders. No I/O until used."""

    def __init__(
        self, listener: EgressListener | None = None, *, allow_private: bool = False
    ) -> None:
        self.listener = listener
        self.allow_private = allow_private
        #: where each task's own deployments are (see `EgressProxy`); the runner's to set
        self.services: ServiceLookup | None = None
        self._proxy: EgressProxy | None = None
        self._gateway: str | None = None
        self._tokens: dict[str, str] = {}

    async def _ensure_proxy(self, client: docker.DockerClient) -> tuple[str, int]:
        if self._proxy is None:
            self._gateway = await asyncio.to_thread(_egress_network, client)
            proxy = EgressProxy(
                self._gateway, 0, allow_private=self.allow_private, services=self._services
            )
            await proxy.start()
            self._proxy = proxy
        assert self._gateway is not None
        return self._gateway, self._proxy.port

    async def _services(self, task_id: str) -> frozenset[tuple[str, int]]:
        return frozenset() if self.services is None else await self.services(task_id)

    @staticmethod
    def network_name(container_name: str) -> str:
        return f"{container_name}-net"

    @staticmethod
    def forwarder_name(container_name: str) -> str:
        return f"{container_name}-egress"

    @staticmethod
    def make_network(
        client: docker.DockerClient, container_name: str, owner: Mapping[str, str]
    ) -> str:
        """Create the task's internal network (before its container), labelled with `owner`;
        return its name."""
        name = Egress.network_name(container_name)
        with mapped(f"making the network of {container_name}"):
            try:
                client.networks.get(name)
            except docker.errors.NotFound:
                client.networks.create(
                    name,
                    driver="bridge",
                    internal=True,
                    labels=dict(owner),
                    options={
                        # no address for the host on it: the host is not reachable from it
                        "com.docker.network.bridge.inhibit_ipv4": "true",
                        "com.docker.network.bridge.enable_ip_masquerade": "false",
                    },
                )
        return name

    async def open(
        self, client: docker.DockerClient, task_id: str, container_name: str, allow: tuple[str, ...]
    ) -> Opened:
        """Start the task's forwarder, register its allowlist with the proxy, and return the
        environment that sends a command's HTTP(S) through them."""
        started = await self.prepare(client, container_name)
        return self.register(task_id, started, allow)

    async def prepare(self, client: docker.DockerClient, container_name: str) -> Forwarder:
        """Start a sandbox's forwarder (anew: the proxy's port is this process's). Until
        `register`, the proxy refuses whatever comes through it."""
        gateway, port = await self._ensure_proxy(client)
        return await asyncio.to_thread(self._start_forwarder, client, container_name, gateway, port)

    def register(self, task_id: str, forwarder: Forwarder, allow: tuple[str, ...]) -> Opened:
        """Let what comes through `forwarder` reach the task's allowlist, and tell the proxy's
        decisions to the listener as the task's."""
        assert self._proxy is not None
        self.forget(task_id)  # a token from an earlier opening
        listener = self.listener

        def record(attempt: EgressAttempt) -> None:
            if listener is not None:
                listener(task_id, attempt)

        # A browser cannot send the proxy's credentials: what comes from the task's forwarder
        # is the task's, token or not.
        token = self._proxy.register(task_id, list(allow), record, source=forwarder.outside)
        self._tokens[task_id] = token
        url = f"http://{USER}:{token}@{forwarder.inside}:{PROXY_PORT_IN_SANDBOX}"
        env = {
            "HTTP_PROXY": url,
            "HTTPS_PROXY": url,
            "http_proxy": url,
            "https_proxy": url,
            "NO_PROXY": "",
            "no_proxy": "",
        }
        assert self._gateway is not None
        return Opened(env, self.devtools(forwarder), self._proxy.url(token, self._gateway))

    @staticmethod
    def devtools(forwarder: Forwarder) -> str:
        """Where the host reaches the browser of the sandbox that `forwarder` serves."""
        return f"http://{forwarder.outside}:{DEVTOOLS_PORT}"

    @staticmethod
    def rename(client: docker.DockerClient, old_name: str, new_name: str) -> None:
        """A pooled sandbox was claimed (renamed): its forwarder follows its name."""
        with mapped(f"renaming the forwarder of {new_name}"):
            client.api.rename(Egress.forwarder_name(old_name), Egress.forwarder_name(new_name))

    def _start_forwarder(
        self, client: docker.DockerClient, container_name: str, gateway: str, port: int
    ) -> Forwarder:
        """Start the forwarder, in place of any the sandbox had."""
        name = self.forwarder_name(container_name)
        with mapped(f"starting the egress forwarder of {container_name}"):
            sandbox = client.containers.get(container_name)
            _remove(client, _forwarders_of(client, str(sandbox.id)))
            image = sandbox.attrs["Image"]
            network, endpoint = next(iter(sandbox.attrs["NetworkSettings"]["Networks"].items()))
            # The sandbox's owner is the forwarder's.
            labels = sandbox.attrs["Config"].get("Labels") or {}
            owner = {k: v for k, v in labels.items() if k in (LABEL, SCOPE, TASK)}
            settings: dict[str, Any] = hardened(
                FORWARDER_LIMITS, owner, network=FORWARDERS, user=USER_ID, capabilities=()
            )
            settings.pop("mounts")
            # Two relays, each to one fixed address: the sandbox's HTTP(S) to the proxy, and the
            # host's DevTools connection to the sandbox's browser.
            # The relay takes connections from the host's address on the forwarders' network
            # only; the browser's own relay in the sandbox then asks for its key as well.
            relays = (
                f"socat TCP-LISTEN:{DEVTOOLS_PORT},fork,reuseaddr,range={gateway}/32 "
                f"TCP:{endpoint['IPAddress']}:{DEVTOOLS_PORT} & "
                f"exec socat TCP-LISTEN:{PROXY_PORT_IN_SANDBOX},fork,reuseaddr TCP:{gateway}:{port}"
            )
            forwarder = client.containers.run(
                image,
                ["sh", "-c", relays],
                name=name,
                detach=True,
                labels={**owner, LABEL: "1", "agent.role": "egress", FORWARDS: str(sandbox.id)},
                **settings,
            )
            client.networks.get(network).connect(forwarder, aliases=[EGRESS_ALIAS])
            forwarder.reload()
            networks = forwarder.attrs["NetworkSettings"]["Networks"]
        return Forwarder(
            str(networks[network]["IPAddress"]), str(networks[FORWARDERS]["IPAddress"])
        )

    def forget(self, task_id: str) -> None:
        """Refuse the task's clients from now on (they get 407 until it is opened again)."""
        if self._proxy is not None and (token := self._tokens.pop(task_id, None)):
            self._proxy.unregister(token)

    async def aclose(self) -> None:
        proxy, self._proxy = self._proxy, None
        self._tokens.clear()
        if proxy is not None:
            await proxy.aclose()


def teardown(client: docker.DockerClient, container_name: str) -> bool:
    """Remove a sandbox with its forwarder and its network, whatever it was named when they were
    made (a pooled sandbox's network keeps the pool's name). False if there was no container."""
    networks = {Egress.network_name(container_name)}
    forwarders = [Egress.forwarder_name(container_name)]
    with mapped(f"removing sandbox {container_name}"):
        try:
            attrs = client.api.inspect_container(container_name)
        except docker.errors.NotFound:
            attrs = None
        if attrs is not None:
            networks |= set(attrs["NetworkSettings"]["Networks"]) - {"none", FORWARDERS}
            forwarders += _forwarders_of(client, attrs["Id"])
            with contextlib.suppress(docker.errors.NotFound):  # removed meanwhile
                client.api.remove_container(attrs["Id"], force=True, v=True)
        _remove_networks(client, networks, forwarders)
    return attrs is not None


def remove_orphan_networks(client: docker.DockerClient, scope: str, older_than: float) -> list[str]:
    """Remove `scope`'s networks (and their forwarders) that no sandbox is on any more, made
    before the time `older_than` (a network is made just before its sandbox)."""
    removed = []
    with mapped("removing networks left behind"):
        for network in client.networks.list(filters={"label": f"{LABEL}=1"}, greedy=True):
            if network.name == FORWARDERS or not owned_by(network.attrs.get("Labels"), scope):
                continue
            # Stopped containers too: the network's own listing shows running ones only, and a
            # stopped sandbox (Docker restarted) needs its network to start again.
            on_it = client.api.containers(all=True, filters={"network": network.id})
            if any(c.get("Labels", {}).get("agent.role") != "egress" for c in on_it):
                continue  # a sandbox is on it
            with contextlib.suppress(ValueError):
                if docker_time(str(network.attrs.get("Created", ""))) < older_than:
                    _remove_networks(client, {str(network.name)}, [c["Id"] for c in on_it])
                    removed.append(str(network.name))
    return removed


def _remove_networks(
    client: docker.DockerClient, networks: set[str], forwarders: list[str]
) -> None:
    _remove(client, forwarders)
    for name in networks:
        try:
            client.networks.get(name).remove()
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if exc.status_code != 403:  # 403: still in use; a later reap removes it
                raise


def _egress_network(client: docker.DockerClient) -> str:
    """The forwarders' network (made once), and the host's address on it, where the proxy listens.
    Not Docker's default bridge: there, older engines do not report the gateway."""
    with mapped("finding the egress network"):
        try:
            network = client.networks.get(FORWARDERS)
        except docker.errors.NotFound:
            # Shared by every runner on the machine: its scope is none of theirs.
            network = client.networks.create(
                FORWARDERS, driver="bridge", labels={LABEL: "1", SCOPE: "shared", TASK: ""}
            )
        network.reload()
    for config in network.attrs.get("IPAM", {}).get("Config") or []:
        if gateway := config.get("Gateway"):
            return str(gateway).split("/")[0]
    raise SandboxError(f"Docker's network {FORWARDERS} has no gateway address for the egress proxy")


def _forwarders_of(client: docker.DockerClient, sandbox_id: str) -> list[str]:
    """The ids of the forwarders made for a sandbox, whatever their names now."""
    found = client.api.containers(all=True, filters={"label": f"{FORWARDS}={sandbox_id}"})
    return [str(c["Id"]) for c in found]


def _remove(client: docker.DockerClient, containers: list[str]) -> None:
    for container in containers:
        with contextlib.suppress(docker.errors.NotFound):
            client.api.remove_container(container, force=True, v=True)
