"""What the HTTP tool costs per call, against the same request made with httpx.

Ours: `http_request.invoke` (arguments validated, secrets filled in, the request sent through
the task's egress proxy, the body read and shaped for the model) of a GET to a small JSON API on
loopback, from a task whose sandbox's allowlist names it. The reference: the same GET with an
`httpx.AsyncClient` through the same proxy (the same credentials, so the same allowlist check
and the same connection to the API), its body read; one client kept across calls, as the tool
keeps one. For context only: the same GET with httpx straight to the API, with no proxy (the
proxy's own cost, which the tool does not add to).

Each round times CALLS calls of each, in an order that alternates from round to round; the
figures are medians of the per-round ratios. Needs Docker and the image.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import statistics
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
from _goals import Goals, machine, per_call

from sandbox.container import Sandbox
from sandbox.limits import SandboxConfig, SandboxLimits
from sandbox.manager import Sandboxes
from tools import ToolContext
from tools.http import http_request

ROUNDS = 7
CALLS = 100
BODY = json.dumps({"items": [{"id": i, "name": f"item {i}"} for i in range(20)]}).encode()


class _Api(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as an API server would
    disable_nagle_algorithm = True  # its head and body leave at once, as a real server does

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args: object) -> None:
        pass


async def main() -> None:
    print(machine())
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Api)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/items"
    limits = SandboxLimits(
        memory_mb=256,
        pids=64,
        workspace_mb=16,
        tmp_mb=16,
        network="proxy",
        allow_domains=(f"127.0.0.1:{server.server_address[1]}",),
    )
    boxes = Sandboxes(
        SandboxConfig(pool_size=0, browser_pool=0, limits=limits, allow_private=True),
        scope=secrets.token_hex(4),
    )
    try:
        box = await boxes.for_task("bench", limits)
        assert box.host_proxy is not None

        async def opened() -> Sandbox:
            return box

        ctx = ToolContext("bench", "c1", "bench/1.0", sandbox=opened)
        proxied = httpx.AsyncClient(proxy=box.host_proxy, trust_env=False)
        direct = httpx.AsyncClient(trust_env=False)

        async def ours() -> None:
            result = await http_request.invoke({"url": url}, ctx)
            assert result.ok, result.content

        async def by_proxy() -> None:
            response = await proxied.get(url)
            assert response.status_code == 200
            assert response.content == BODY

        async def by_hand() -> None:
            response = await direct.get(url)
            assert response.status_code == 200
            assert response.content == BODY

        for warm in (ours, by_proxy, by_hand):  # connections made, code paths warm
            await warm()
        ratios: dict[str, list[float]] = {"proxy": [], "direct": []}
        for number in range(1, ROUNDS + 1):
            order = [ours, by_proxy, by_hand] if number % 2 else [by_hand, by_proxy, ours]
            took = {call.__name__: await per_call(call, CALLS) for call in order}
            ratios["proxy"].append(took["ours"] / took["by_proxy"])
            ratios["direct"].append(took["ours"] / took["by_hand"])
            print(
                f"round {number}: tool {took['ours'] * 1e3:.2f} ms, httpx through the proxy "
                f"{took['by_proxy'] * 1e3:.2f} ms, httpx direct {took['by_hand'] * 1e3:.2f} ms"
            )
        await proxied.aclose()
        await direct.aclose()
    finally:
        await boxes.reap(lambda _task: True)
        await boxes.aclose()
        server.shutdown()
    print(f"for context: tool_vs_httpx_direct: {statistics.median(ratios['direct']):.2f}x")
    goals = Goals()
    print(goals.add("tool_vs_httpx_through_proxy", statistics.median(ratios["proxy"]), "<= 1.2x"))
    goals.finish()


if __name__ == "__main__":
    asyncio.run(main())
