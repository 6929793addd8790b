"""The inventory service `inventory.yaml` describes, in memory, for trying the OpenAPI tools:

    python examples/openapi/inventory_server.py --port 8710 --key-env INVENTORY_KEY

Every route but /health wants the key in `X-Api-Key` (401 without it). `serve` runs it in a
thread, for tests and examples.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_ITEM = re.compile(r"^/items/(\d+)(/tags)?$")


@dataclass
class Inventory:
    key: str
    items: dict[int, dict[str, Any]] = field(default_factory=dict)
    tags: dict[int, list[str]] = field(default_factory=dict)
    #: every request, as (method, path, query, headers), for tests to read
    seen: list[tuple[str, str, dict[str, str], dict[str, str]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        if path == "/items" and method == "GET":
            found = sorted(self.items.values(), key=lambda i: -int(i["id"]))
            if "status" in query:
                found = [i for i in found if i["status"] == query["status"]]
            return 200, found[: int(query.get("limit", 100))]
        if path == "/items" and method == "POST":
            number = max(self.items, default=0) + 1
            self.items[number] = {"id": number, "status": "in_stock", "note": None, **body}
            return 201, self.items[number]
        if path == "/search":
            text = query.get("q", "").lower()
            return 200, [i for i in self.items.values() if text in str(i["name"]).lower()]
        if path == "/stats":
            counts: dict[str, int] = {}
            for item in self.items.values():
                counts[item["status"]] = counts.get(item["status"], 0) + 1
            worth = sum(float(i["price"]) for i in self.items.values())
            return 200, {"items": len(self.items), "by_status": counts, "worth": worth}
        route = _ITEM.match(path)
        if route is None:
            return 404, {"error": f"no route {method} {path}"}
        number, tags = int(route.group(1)), bool(route.group(2))
        if number not in self.items:
            return 404, {"error": f"no item {number}"}
        if tags:
            if method == "POST":
                self.tags.setdefault(number, []).append(str(body["tag"]))
            return 200, self.tags.get(number, [])
        if method == "GET":
            return 200, self.items[number]
        if method == "DELETE":
            del self.items[number]
            return 204, None
        if method == "PUT":
            self.items[number] = {"id": number, "status": "in_stock", "note": None, **body}
        else:  # PATCH
            self.items[number].update(body)
        return 200, self.items[number]


def _handler(inventory: Inventory) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _any(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            query = dict(urllib.parse.parse_qsl(url.query))
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            status: int
            data: Any
            with inventory.lock:
                inventory.seen.append((self.command, url.path, query, dict(self.headers.items())))
                if url.path == "/health":
                    status, data = 200, {"up": True}
                elif self.headers.get("X-Api-Key") != inventory.key:
                    status, data = 401, {"error": "a valid X-Api-Key is needed"}
                else:
                    try:
                        body = json.loads(raw) if raw else {}
                    except ValueError:
                        body = None
                    if body is None:
                        status, data = 400, {"error": "the body is not JSON"}
                    else:
                        status, data = inventory.answer(self.command, url.path, query, body)
            sent = b"" if data is None else json.dumps(data).encode()
            self.send_response(status)
            if request_id := self.headers.get("X-Request-Id"):
                self.send_header("X-Request-Id", request_id)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(sent)))
            self.end_headers()
            self.wfile.write(sent)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any

    return Handler


def serve(
    key: str, port: int = 0, items: list[dict[str, Any]] | None = None
) -> tuple[ThreadingHTTPServer, Inventory]:
    """Start the service on loopback in a thread, holding `items` to begin with: the server (its
    port in `server_address`) and its inventory. Stop it with `server.shutdown()`."""
    inventory = Inventory(key)
    for number, item in enumerate(items or [], start=1):
        inventory.items[number] = {"id": number, "status": "in_stock", "note": None, **item}
    server = ThreadingHTTPServer(("127.0.0.1", port), _handler(inventory))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, inventory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8710)
    parser.add_argument("--key-env", default="INVENTORY_KEY", help="the variable with its key")
    args = parser.parse_args()
    key = os.environ.get(args.key_env)
    if not key:
        parser.error(f"set ${args.key_env} to the key clients must send")
    server, _ = serve(key, args.port)
    print(f"inventory serves on http://127.0.0.1:{server.server_address[1]}")
    threading.Event().wait()


if __name__ == "__main__":
    main()
