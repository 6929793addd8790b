"""The egress matrix: from a sandbox, nothing but the egress proxy can be reached, and the proxy
lets through only the task's allowlist. "Blocked" is checked where it matters, at listeners on
every address a sandbox might try: zero bytes arrive. The addresses probed: a stand-in public
address and the metadata address (IPv4), a stand-in public IPv6 address, the host's own address,
every gateway of Docker's bridges and of the task's own network (IPv4 and, where there is one,
IPv6), the host's link-local IPv6 address on the task's bridge, another sandbox's listener and
its forwarder. The listeners, on the host, take IPv4 and IPv6 on every address; a failure names
the address that was reached. The same probes from an ordinary container (and, for IPv6, from
one on the host's network) do reach them, so the listeners would see a leak.

Every address probed is one this test made or this machine holds: nothing outside it.

Needs root on the host (the test gives the host the stand-in addresses and the metadata
address, on its loopback device), as CI has.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import json
import socket
import subprocess
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import docker
import pytest

from agent.events import EgressDecided, ToolResulted
from agent.runner import Runner
from agent.store import Store
from policies import Gate
from sandbox.egress import FORWARDERS, Egress
from sandbox.limits import SandboxConfig, SandboxLimits
from sandbox.manager import Sandboxes, store_scope
from tools import Registry
from tools.sandboxed import registry as sandbox_tools

from .conftest import ALLOW_ALL, scripted

PUBLIC = "203.0.113.7"  # TEST-NET-3: stands in for a host on the internet
PUBLIC6 = "2001:db8::7"  # the IPv6 documentation prefix: the same, for IPv6
METADATA = "169.254.169.254"
DNS = 53
DOCKER_API = 2375
#: the allowlisted test server is on the host's loopback, which the operator must open
LOOPBACK_ALLOWED = SandboxConfig(pool_size=0, allow_private=True)

# Run inside a container: try each target, TCP and UDP, at once; print what happened.
PROBE = """
import json, socket, sys, threading
targets = json.loads(sys.argv[1])
results = {}
def tcp(host, port):
    try:
        with socket.create_connection((host, port), timeout=3) as s:
            s.sendall(b"LEAK " + host.encode())
            results[f"tcp {host}:{port}"] = "sent"
    except OSError as exc:
        results[f"tcp {host}:{port}"] = type(exc).__name__
def udp(host, port):
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.sendto(b"LEAK " + host.encode(), address)
            results[f"udp {host}:{port}"] = "sent"
    except OSError as exc:
        results[f"udp {host}:{port}"] = type(exc).__name__
threads = [threading.Thread(target=tcp if kind == "tcp" else udp, args=(h, p))
           for kind, h, p in targets]
[t.start() for t in threads]
[t.join() for t in threads]
print(json.dumps(results))
"""


@dataclass
class Listeners:
    """A TCP and a UDP listener on every address of the host, IPv4 and IPv6, counting what
    arrives by the address it was sent to."""

    port: int
    received: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def total(self) -> int:
        return sum(self.received.values())

    def leaks(self) -> str:
        """What arrived, each naming the address it was sent to ("" for nothing)."""
        return "; ".join(f"{what}: {size} bytes" for what, size in self.received.items())


def _plain(address: str) -> str:
    return address.removeprefix("::ffff:")  # an IPv4 client of a dual-stack socket


def _sent_to(data: bytes) -> str:
    """The address a probe says it was sent to (it sends b"LEAK <address>")."""
    text = data.decode(errors="replace")
    return text.removeprefix("LEAK ") if text.startswith("LEAK ") else "?"


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, listeners: Listeners, label: str) -> None:
        self.listeners, self.label = listeners, label

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        key = f"{self.label} to {_sent_to(data)} from {_plain(str(addr[0]))}"
        self.listeners.received[key] += len(data)


def _dual_stack(kind: int, port: int) -> socket.socket:
    """A socket bound to every address, IPv4 and IPv6."""
    sock = socket.socket(socket.AF_INET6, kind)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("::", port))
    return sock


@pytest.fixture
def host_addresses() -> Iterator[None]:
    """The stand-in public addresses and the metadata address, on the host's loopback."""
    added = []
    try:
        for address, bits in ((PUBLIC, 32), (METADATA, 32), (PUBLIC6, 128)):
            subprocess.run(["ip", "addr", "add", f"{address}/{bits}", "dev", "lo"], check=True)
            added.append(f"{address}/{bits}")
        yield
    finally:
        for address in added:
            subprocess.run(["ip", "addr", "del", address, "dev", "lo"], check=False)


@pytest.fixture
async def listeners(host_addresses: None) -> AsyncIterator[Listeners]:
    loop = asyncio.get_running_loop()
    box: list[Listeners] = []

    async def on_tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = _plain(writer.get_extra_info("peername")[0])
        to = _plain(writer.get_extra_info("sockname")[0])
        data = await reader.read(65536)
        # A connection counts, even with nothing sent.
        box[0].received[f"tcp to {to} from {peer}"] += max(len(data), 1)
        writer.close()

    server = await asyncio.start_server(on_tcp, sock=_dual_stack(socket.SOCK_STREAM, 0))
    port = server.sockets[0].getsockname()[1]
    found = Listeners(port)
    box.append(found)
    transports = []
    for label, at in (("udp", port), ("dns", DNS)):
        transport, _ = await loop.create_datagram_endpoint(
            functools.partial(_Udp, found, label), sock=_dual_stack(socket.SOCK_DGRAM, at)
        )
        transports.append(transport)
    yield found
    server.close()
    for transport in transports:
        transport.close()


def _targets(port: int, gateways: list[str]) -> list[tuple[str, str, int]]:
    """What every sandbox probes: the stand-in public addresses, the metadata address, the host's
    own address, and `gateways` (the API's port, DNS, and the listeners' port on each)."""
    host_ip = _host_ip()
    targets = [
        ("tcp", PUBLIC, port),
        ("tcp", METADATA, port),
        ("tcp", host_ip, port),  # the host's own services
        ("udp", PUBLIC, DNS),
        ("udp", host_ip, DNS),
        ("udp", PUBLIC, port),
        ("tcp", PUBLIC6, port),
        ("udp", PUBLIC6, port),
        ("udp", PUBLIC6, DNS),
    ]
    for gateway in gateways:  # Docker's gateways: the API, dnsmasq-like services, the host
        targets += [("tcp", gateway, port), ("tcp", gateway, DOCKER_API), ("udp", gateway, DNS)]
    return targets


def _host_ip() -> str:
    out = subprocess.run(
        ["ip", "-4", "-o", "route", "get", "1.1.1.1"], capture_output=True, text=True, check=True
    ).stdout.split()
    return out[out.index("src") + 1]


def _gateways(client: docker.DockerClient, *names: str) -> list[str]:
    """The gateways, IPv4 and IPv6, of Docker's bridges and of the networks `names`, whether or
    not the host holds them."""
    found = []
    for name in ("bridge", FORWARDERS, *names):
        try:
            network = client.networks.get(name)
        except docker.errors.NotFound:
            continue
        for config in network.attrs["IPAM"]["Config"] or []:
            subnet = ipaddress.ip_network(config["Subnet"], strict=False)
            gateway = config.get("Gateway") or str(next(subnet.hosts()))
            found.append(gateway.split("/")[0])
    return found


def _link_local(client: docker.DockerClient, name: str, inside: str) -> list[str]:
    """The host's link-local IPv6 addresses on the bridge of network `name`, as a container
    whose interface on it is `inside` reaches them."""
    network = client.networks.get(name)
    bridge = network.attrs["Options"].get("com.docker.network.bridge.name")
    bridge = bridge or f"br-{str(network.id)[:12]}"
    out = subprocess.run(
        ["ip", "-6", "-o", "addr", "show", "dev", bridge, "scope", "link"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    return [f"{out[i + 1].split('/')[0]}%{inside}" for i, w in enumerate(out) if w == "inet6"]


def _reached(probes: dict[str, str]) -> list[str]:
    """The TCP targets a probe connected to and sent to."""
    return sorted(
        target for target, what in probes.items() if target.startswith("tcp") and what == "sent"
    )


async def test_from_a_proxied_sandbox_only_the_allowlist_is_reached_and_all_is_recorded(
    store: Store, listeners: Listeners, tmp_path: Path
) -> None:
    client = docker.from_env()
    allowed = await asyncio.start_server(_answer_ok, "127.0.0.1", 0)
    allowed_port = allowed.sockets[0].getsockname()[1]
    limits = SandboxLimits(network="proxy", allow_domains=(f"127.0.0.1:{allowed_port}",))
    sandboxes = Sandboxes(LOOPBACK_ALLOWED, scope=store_scope(store.path))
    try:
        # Another task's sandbox, listening, on its own network.
        other = await sandboxes.for_task("other", limits)
        await other.write_file("listen.sh", b"socat -u TCP-LISTEN:8000,fork OPEN:got,creat,append")
        await other.exec("nohup sh listen.sh >/dev/null 2>&1 &", timeout=10)
        other_ip = _ip_of(client, other.name)
        curl = "curl -sS -m 5 -o /dev/null -w '%{http_code}' -x $HTTP_PROXY"
        turns = [
            {"plan": ["Probe"]},
            {"tool": "write_file", "args": {"path": "probe.py", "content": PROBE}},
            {"tool": "shell", "args": {"command": 'python3 probe.py "$(cat targets.json)"'}},
            *(
                {
                    "tool": "shell",
                    "args": {"command": f"{curl} {url}"},
                }
                for url in (
                    f"http://127.0.0.1:{allowed_port}/",  # allowlisted, on the host's loopback
                    f"http://{PUBLIC}:{listeners.port}/",
                    f"https://{METADATA}:{listeners.port}/",
                    f"http://{other_ip}:8000/",
                    "http://example.com/",
                )
            ),
            {
                "tool": "shell",
                "args": {"command": "timeout 5 getent hosts example.com || echo no-dns"},
            },
            {"done": "probed"},
        ]
        runner = Runner(
            store,
            Registry(sandbox_tools),
            # The default policy would refuse the metadata address in a command before it ran;
            # here the network itself is under test.
            Gate.from_text(ALLOW_ALL, source="allow-all.toml"),
            planner=scripted(turns),
            sandboxes=sandboxes,
        )
        task_id = runner.create("probe the network", sandbox=limits)
        # The task's sandbox, made first so that its own network's addresses can be probed.
        box = await sandboxes.for_task(task_id, limits)
        # Its network by what Docker says: a sandbox claimed from the pool keeps its pool name's.
        [own_network] = client.containers.get(box.id).attrs["NetworkSettings"]["Networks"]
        client.networks.get(own_network)  # it exists: its addresses are probed below
        other_forwarder = client.containers.get(Egress.forwarder_name(other.name))
        forwarder_ips = [
            n["IPAddress"] for n in other_forwarder.attrs["NetworkSettings"]["Networks"].values()
        ]
        targets = _targets(listeners.port, _gateways(client, own_network))
        targets += [("tcp", ip, port) for ip in forwarder_ips for port in (3128, 9223)]
        targets += [("tcp", other_ip, 8000)]  # another sandbox's own listener
        targets += [("tcp", ll, listeners.port) for ll in _link_local(client, own_network, "eth0")]
        print("probing:", targets)
        await box.write_file("targets.json", json.dumps(targets).encode())
        state = await runner.run(task_id)
        assert state.status == "done", state.pause
        events = [e.event for e in store.events(task_id)]
        results = [e for e in events if isinstance(e, ToolResulted)]
        probes = json.loads(results[1].content.split("stdout:\n")[1].split("\n")[0])
        print("results:", probes)
        assert len(probes) == len(targets), probes
        assert not _reached(probes), f"the sandbox reached {_reached(probes)}"
        codes = [
            r.content.split("stdout:\n")[1][:3] if "stdout:" in r.content else r.content
            for r in results[2:7]
        ]
        # 403 from the proxy; for https, curl reports a refused CONNECT as 000.
        assert codes == ["200", "403", "000", "403", "403"], codes
        assert "no-dns" in results[7].content

        egress = [e for e in events if isinstance(e, EgressDecided)]
        decided = {(e.host, e.port, e.allowed) for e in egress}
        assert ("127.0.0.1", allowed_port, True) in decided
        for host, port in (
            (PUBLIC, listeners.port),
            (METADATA, listeners.port),
            (other_ip, 8000),
            ("example.com", 80),
        ):
            assert (host, port, False) in decided, (host, port, egress)
        assert len(egress) == 5
        got = await other.exec("cat got 2>/dev/null | wc -c", timeout=10)
        assert got.stdout.strip() == "0", f"another sandbox's listener at {other_ip}:8000 got data"
    finally:
        allowed.close()
        await sandboxes.reap(lambda _task: True)
        await sandboxes.aclose()
    await asyncio.sleep(0.5)  # let anything late arrive
    assert listeners.total() == 0, f"reached the host's listeners: {listeners.leaks()}"


async def test_a_sandbox_with_no_network_reaches_nothing_and_an_ordinary_container_would(
    store: Store, listeners: Listeners
) -> None:
    client = docker.from_env()
    sandboxes = Sandboxes(SandboxConfig(pool_size=0), scope=store_scope(store.path))
    try:
        sandbox = await sandboxes.for_task("plain")
        await sandbox.write_file("probe.py", PROBE.encode())
        targets = _targets(listeners.port, _gateways(client))
        targets.append(("tcp", "172.17.0.250", 8000))
        result = await sandbox.exec(["python3", "probe.py", json.dumps(targets)], timeout=60)
        probes = json.loads(result.stdout)
        assert not [t for t, what in probes.items() if what == "sent"], probes
    finally:
        await sandboxes.reap(lambda _task: True)
        await sandboxes.aclose()
    await asyncio.sleep(0.5)
    assert listeners.total() == 0, f"reached the host's listeners: {listeners.leaks()}"

    # The control: the same probes from an ordinary container arrive, so a leak would show.
    image = SandboxConfig().image
    output = await asyncio.to_thread(
        client.containers.run,
        image,
        ["python3", "-c", PROBE, json.dumps(targets)],
        remove=True,
        network_mode="bridge",
    )
    assert isinstance(output, bytes)
    await asyncio.sleep(0.5)
    arrived = dict(listeners.received)
    assert any(k.startswith("tcp") for k in arrived), arrived
    assert any(k.startswith(("udp", "dns")) for k in arrived), arrived
    # And IPv6: an ordinary container on the host's network reaches the IPv6 listeners, which
    # name the address it was sent to.
    await asyncio.to_thread(
        client.containers.run,
        image,
        ["python3", "-c", PROBE, json.dumps([["tcp", PUBLIC6, listeners.port]])],
        remove=True,
        network_mode="host",
    )
    await asyncio.sleep(0.5)
    assert f"tcp to {PUBLIC6} from {PUBLIC6}" in listeners.received, dict(listeners.received)


async def _answer_ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
    await writer.drain()
    writer.close()


def _ip_of(client: docker.DockerClient, name: str) -> str:
    container = client.containers.get(name)
    networks = container.attrs["NetworkSettings"]["Networks"]
    return str(next(iter(networks.values()))["IPAddress"])


async def test_egress_works_again_in_a_later_run_of_the_same_process(store: Store) -> None:
    # As the CLI does between an inline approval and the rest of the task: each stretch of
    # running has its own event loop, and the proxy of the first is gone.
    allowed = await asyncio.start_server(_answer_ok, "127.0.0.1", 0)
    port = allowed.sockets[0].getsockname()[1]
    limits = SandboxLimits(network="proxy", allow_domains=(f"127.0.0.1:{port}",))
    sandboxes = Sandboxes(LOOPBACK_ALLOWED, scope=store_scope(store.path))
    curl = f"curl -sS -m 5 -o /dev/null -w '%{{http_code}}' http://127.0.0.1:{port}/"
    try:
        for _ in range(2):
            sandbox = await sandboxes.for_task("again", limits)
            assert (await sandbox.exec(curl, timeout=20)).stdout == "200"
            await sandboxes.aclose()
    finally:
        allowed.close()
        await sandboxes.reap(lambda _task: True)
        await sandboxes.aclose()
