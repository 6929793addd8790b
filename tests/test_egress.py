"""The egress matrix: from a sandbox, nothing but the egress proxy can be reached, and the proxy
lets through only the task's allowlist. "Blocked" is checked where it matters, at listeners on
every address a sandbox might try: zero bytes arrive. The same probes from an ordinary container
do reach them, so the listeners would see a leak.

Needs root on the host (the test gives the host a stand-in public address and the metadata
address, on its loopback device), as CI has.
"""

from __future__ import annotations

import asyncio
import functools
import json
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
from sandbox.limits import SandboxConfig, SandboxLimits
from sandbox.manager import Sandboxes, store_scope
from tools import Registry
from tools.sandboxed import registry as sandbox_tools

from .conftest import ALLOW_ALL, scripted

PUBLIC = "203.0.113.7"  # TEST-NET-3: stands in for a host on the internet
METADATA = "169.254.169.254"
DNS = 53

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
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"LEAK " + host.encode(), (host, port))
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
    """A TCP and a UDP listener on every address of the host, counting what arrives."""

    port: int
    received: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def total(self) -> int:
        return sum(self.received.values())


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, listeners: Listeners, label: str) -> None:
        self.listeners, self.label = listeners, label

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self.listeners.received[f"{self.label} from {addr[0]}"] += len(data)


@pytest.fixture
def host_addresses() -> Iterator[None]:
    """The stand-in public address and the metadata address, on the host's loopback."""
    added = []
    try:
        for address in (PUBLIC, METADATA):
            subprocess.run(["ip", "addr", "add", f"{address}/32", "dev", "lo"], check=True)
            added.append(address)
        yield
    finally:
        for address in added:
            subprocess.run(["ip", "addr", "del", f"{address}/32", "dev", "lo"], check=False)


@pytest.fixture
async def listeners(host_addresses: None) -> AsyncIterator[Listeners]:
    loop = asyncio.get_running_loop()
    box: list[Listeners] = []

    async def on_tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")[0]
        data = await reader.read(65536)
        box[0].received[f"tcp from {peer}"] += max(len(data), 1)  # a connection counts too
        writer.close()

    server = await asyncio.start_server(on_tcp, "0.0.0.0", 0)
    port = server.sockets[0].getsockname()[1]
    found = Listeners(port)
    box.append(found)
    transports = []
    for label, at in (("udp", port), ("dns", DNS)):
        transport, _ = await loop.create_datagram_endpoint(
            functools.partial(_Udp, found, label), ("0.0.0.0", at)
        )
        transports.append(transport)
    yield found
    server.close()
    for transport in transports:
        transport.close()


def _targets(port: int, other_sandbox_ip: str, gateways: list[str]) -> list[tuple[str, str, int]]:
    host_ip = _host_ip()
    targets = [
        ("tcp", PUBLIC, port),
        ("tcp", METADATA, port),
        ("tcp", host_ip, port),  # the host's own services
        ("tcp", other_sandbox_ip, 8000),
        ("udp", PUBLIC, DNS),
        ("udp", host_ip, DNS),
        ("udp", PUBLIC, port),
    ]
    for gateway in gateways:  # Docker's gateways: the API, dnsmasq-like services, the host
        targets += [("tcp", gateway, port), ("tcp", gateway, 2375), ("udp", gateway, DNS)]
    return targets


def _host_ip() -> str:
    out = subprocess.run(
        ["ip", "-4", "-o", "route", "get", "1.1.1.1"], capture_output=True, text=True, check=True
    ).stdout.split()
    return out[out.index("src") + 1]


def _gateways(client: docker.DockerClient) -> list[str]:
    found = []
    for name in ("bridge", "agent-egress"):
        try:
            network = client.networks.get(name)
        except docker.errors.NotFound:
            continue
        for config in network.attrs["IPAM"]["Config"] or []:
            subnet = config.get("Gateway") or config["Subnet"].rsplit(".", 1)[0] + ".1"
            found.append(subnet.split("/")[0])
    return found


async def test_from_a_proxied_sandbox_only_the_allowlist_is_reached_and_all_is_recorded(
    store: Store, listeners: Listeners, tmp_path: Path
) -> None:
    client = docker.from_env()
    allowed = await asyncio.start_server(_answer_ok, "127.0.0.1", 0)
    allowed_port = allowed.sockets[0].getsockname()[1]
    limits = SandboxLimits(network="proxy", allow_domains=(f"127.0.0.1:{allowed_port}",))
    sandboxes = Sandboxes(SandboxConfig(pool_size=0), scope=store_scope(store.path))
    try:
        # Another task's sandbox, listening, on its own network.
        other = await sandboxes.for_task("other", limits)
        await other.write_file("listen.sh", b"socat -u TCP-LISTEN:8000,fork OPEN:got,creat,append")
        await other.exec("nohup sh listen.sh >/dev/null 2>&1 &", timeout=10)
        other_ip = _ip_of(client, other.name)
        targets = _targets(listeners.port, other_ip, _gateways(client))
        curl = "curl -sS -m 5 -o /dev/null -w '%{http_code}' -x $HTTP_PROXY"
        turns = [
            {"plan": ["Probe"]},
            {"tool": "write_file", "args": {"path": "probe.py", "content": PROBE}},
            {"tool": "shell", "args": {"command": f"python3 probe.py '{json.dumps(targets)}'"}},
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
        state = await runner.run(task_id)
        assert state.status == "done", state.pause
        events = [e.event for e in store.events(task_id)]
        results = [e for e in events if isinstance(e, ToolResulted)]
        probes = json.loads(results[1].content.split("stdout:\n")[1].split("\n")[0])
        assert "sent" not in {v for k, v in probes.items() if k.startswith("tcp")}, probes
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
        assert got.stdout.strip() == "0"
    finally:
        allowed.close()
        await sandboxes.reap(lambda _task: True)
        await sandboxes.aclose()
    await asyncio.sleep(0.5)  # let anything late arrive
    assert listeners.total() == 0, dict(listeners.received)


async def test_a_sandbox_with_no_network_reaches_nothing_and_an_ordinary_container_would(
    store: Store, listeners: Listeners
) -> None:
    client = docker.from_env()
    sandboxes = Sandboxes(SandboxConfig(pool_size=0), scope=store_scope(store.path))
    try:
        sandbox = await sandboxes.for_task("plain")
        await sandbox.write_file("probe.py", PROBE.encode())
        targets = _targets(listeners.port, "172.17.0.250", _gateways(client))
        result = await sandbox.exec(["python3", "probe.py", json.dumps(targets)], timeout=60)
        assert "sent" not in json.loads(result.stdout).values()
    finally:
        await sandboxes.reap(lambda _task: True)
        await sandboxes.aclose()
    await asyncio.sleep(0.5)
    assert listeners.total() == 0, dict(listeners.received)

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
    sandboxes = Sandboxes(SandboxConfig(pool_size=0), scope=store_scope(store.path))
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
