"""The two local services of the API example (examples/api_demo.json), on loopback:

    INVENTORY_KEY=... python examples/api_services.py

- the inventory (examples/openapi/inventory.yaml) on port 8710, holding three items, which wants
  the key of $INVENTORY_KEY in `X-Api-Key`;
- a reports service on port 8711: POST /reports keeps a JSON report, GET /reports lists them.

`serve_reports` runs the second in a thread, for the test that runs the example.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script, from anywhere

from examples.openapi.inventory_server import serve

INVENTORY_PORT, REPORTS_PORT = 8710, 8711
ITEMS = [
    {"name": "blue lamp", "price": 30},
    {"name": "red chair", "price": 45.5},
    {"name": "oak table", "price": 120, "status": "sold_out"},
]


@dataclass
class Reports:
    kept: list[Any] = field(default_factory=list)


def serve_reports(port: int = REPORTS_PORT) -> tuple[ThreadingHTTPServer, Reports]:
    """Start the reports service on loopback in a thread; the server and what it keeps."""
    reports = Reports()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self._send(200, reports.kept)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            try:
                report = json.loads(self.rfile.read(length) or b"null")
            except ValueError:
                self._send(400, {"error": "the body is not JSON"})
                return
            reports.kept.append(report)
            self._send(201, {"id": len(reports.kept)})

        def _send(self, status: int, data: Any) -> None:
            sent = json.dumps(data).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(sent)))
            self.end_headers()
            self.wfile.write(sent)

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, reports


def main() -> None:
    key = os.environ.get("INVENTORY_KEY")
    if not key:
        sys.exit("set $INVENTORY_KEY to the key the inventory wants (8 characters or more)")
    serve(key, INVENTORY_PORT, ITEMS)
    serve_reports()
    print(
        f"inventory on http://127.0.0.1:{INVENTORY_PORT}, reports on http://127.0.0.1:{REPORTS_PORT}"
    )
    threading.Event().wait()


if __name__ == "__main__":
    main()
