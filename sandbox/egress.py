"""The way out for a sandbox whose network is "proxy": the only route from it leads to the egress
proxy on the host, which allows the task's domains and refuses everything else.

    sandbox ──(its own internal network)── forwarder ──(agent-egress)── EgressProxy on the host

The task's network is internal (no route out) and the host has no address on it, so from the
sandbox nothing answers but the forwarder: not the host, not the Docker API, not the gateway,
not another sandbox (each task has its own network), not a metadata address. The forwarder, a
hardened container running socat with a fixed command, passes TCP to the proxy's port on the
gateway of the `agent-egress` network and nothing else. The proxy judges each request against
the task's allowlist before a byte reaches a target, and tells the runner of every decision.

The proxy lives in the runner's process and its port changes with each process, so a task's
forwarder is made again by every runner that opens its sandbox, and the proxy's address and token
reach commands through each `exec`'s environment, not the container's.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors

from agent.errors import SandboxError
from sandbox._docker import LABEL, mapped
from sandbox._hardening import hardened
from sandbox.limits import SandboxLimits
from sandbox.proxy import USER, EgressAttempt, EgressProxy

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


@dataclass(frozen=True)
class Opened:
    """A proxied sandbox's way out, as opened by one runner."""

    #: the environment that sends a command's HTTP(S) through the proxy
    env: dict[str, str]
    #: where the host reaches the sandbox's browser DevTools (when a browser runs there)
    devtools: str


class Egress:
    """The host's egress proxy and the tasks' networks and forwarders. No I/O until used."""

    def __init__(self, listener: EgressListener | None = None) -> None:
        self.listener = listener
        self._proxy: EgressProxy | None = None
        self._gateway: str | None = None
        self._tokens: dict[str, str] = {}

    async def _ensure_proxy(self, client: docker.DockerClient) -> tuple[str, int]:
        if self._proxy is None:
            self._gateway = await asyncio.to_thread(_egress_network, client)
            proxy = EgressProxy(self._gateway, 0)
            await proxy.start()
            self._proxy = proxy
        assert self._gateway is not None
        return self._gateway, self._proxy.port

    @staticmethod
    def network_name(container_name: str) -> str:
        return f"{container_name}-net"

    @staticmethod
    def forwarder_name(container_name: str) -> str:
        return f"{container_name}-egress"

    @staticmethod
    def make_network(client: docker.DockerClient, container_name: str) -> str:
        """Create the task's internal network (before its container); return its name."""
        name = Egress.network_name(container_name)
        with mapped(f"making the network of {container_name}"):
            try:
                client.networks.get(name)
            except docker.errors.NotFound:
                client.networks.create(
                    name,
                    driver="bridge",
                    internal=True,
                    labels={LABEL: "1"},
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
        gateway, port = await self._ensure_proxy(client)
        forwarder_ip, outside_ip = await asyncio.to_thread(
            self._start_forwarder, client, container_name, gateway, port
        )
        assert self._proxy is not None
        self.forget(task_id)  # a token from an earlier opening
        listener = self.listener

        def record(attempt: EgressAttempt) -> None:
            if listener is not None:
                listener(task_id, attempt)

        # A browser cannot send the proxy's credentials: what comes from the task's forwarder
        # is the task's, token or not.
        token = self._proxy.register(task_id, list(allow), record, source=outside_ip)
        self._tokens[task_id] = token
        url = f"http://{USER}:{token}@{forwarder_ip}:{PROXY_PORT_IN_SANDBOX}"
        env = {
            "HTTP_PROXY": url,
            "HTTPS_PROXY": url,
            "http_proxy": url,
            "https_proxy": url,
            "NO_PROXY": "",
            "no_proxy": "",
        }
        return Opened(env, f"http://{outside_ip}:{DEVTOOLS_PORT}")

    def _start_forwarder(
        self, client: docker.DockerClient, container_name: str, gateway: str, port: int
    ) -> tuple[str, str]:
        """Start the forwarder; return its addresses on the task's network and on the
        forwarders' network."""
        name = self.forwarder_name(container_name)
        with mapped(f"starting the egress forwarder of {container_name}"):
            with contextlib.suppress(docker.errors.NotFound):
                client.containers.get(name).remove(force=True, v=True)
            sandbox = client.containers.get(container_name)
            image = sandbox.attrs["Image"]
            network, endpoint = next(iter(sandbox.attrs["NetworkSettings"]["Networks"].items()))
            settings: dict[str, Any] = hardened(FORWARDER_LIMITS, network=FORWARDERS)
            settings.pop("mounts")
            # Two relays, each to one fixed address: the sandbox's HTTP(S) to the proxy, and the
            # host's DevTools connection to the sandbox's browser.
            relays = (
                f"socat TCP-LISTEN:{DEVTOOLS_PORT},fork,reuseaddr "
                f"TCP:{endpoint['IPAddress']}:{DEVTOOLS_PORT} & "
                f"exec socat TCP-LISTEN:{PROXY_PORT_IN_SANDBOX},fork,reuseaddr TCP:{gateway}:{port}"
            )
            forwarder = client.containers.run(
                image,
                ["sh", "-c", relays],
                name=name,
                detach=True,
                labels={LABEL: "1", "agent.role": "egress"},
                **settings,
            )
            client.networks.get(network).connect(forwarder, aliases=[EGRESS_ALIAS])
            forwarder.reload()
            networks = forwarder.attrs["NetworkSettings"]["Networks"]
        return str(networks[network]["IPAddress"]), str(networks[FORWARDERS]["IPAddress"])

    def forget(self, task_id: str) -> None:
        """Refuse the task's clients from now on (they get 407 until it is opened again)."""
        if self._proxy is not None and (token := self._tokens.pop(task_id, None)):
            self._proxy.unregister(token)

    def close_task(self, client: docker.DockerClient, task_id: str, container_name: str) -> None:
        """Remove the task's forwarder and network (its container must be gone first)."""
        self.forget(task_id)
        remove_network_of(client, container_name)

    async def aclose(self) -> None:
        proxy, self._proxy = self._proxy, None
        self._tokens.clear()
        if proxy is not None:
            await proxy.aclose()


def remove_network_of(client: docker.DockerClient, container_name: str) -> None:
    """Remove a task's forwarder and network, if it has them."""
    with mapped(f"removing the network of {container_name}"):
        with contextlib.suppress(docker.errors.NotFound):
            client.containers.get(Egress.forwarder_name(container_name)).remove(force=True, v=True)
        with contextlib.suppress(docker.errors.NotFound):
            client.networks.get(Egress.network_name(container_name)).remove()


def _egress_network(client: docker.DockerClient) -> str:
    """The forwarders' network (made once), and the host's address on it, where the proxy listens.
    Not Docker's default bridge: there, older engines do not report the gateway."""
    with mapped("finding the egress network"):
        try:
            network = client.networks.get(FORWARDERS)
        except docker.errors.NotFound:
            network = client.networks.create(FORWARDERS, driver="bridge", labels={LABEL: "1"})
        network.reload()
    for config in network.attrs.get("IPAM", {}).get("Config") or []:
        if gateway := config.get("Gateway"):
            return str(gateway).split("/")[0]
    raise SandboxError(f"Docker's network {FORWARDERS} has no gateway address for the egress proxy")
