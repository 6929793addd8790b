"""Webhooks: `agent worker` posts a signed notice when a request is queued and when it is
decided, to a receiver on loopback; one that fails is tried again later, and given up after
MAX_ATTEMPTS; the task never waits for it; a webhook with no key is refused at start."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from agent import webhooks
from agent.state import TaskState
from agent.store import Store
from frontends.cli import main

from .conftest import REPO, request_args, write_script

KEY = "k3y-for-the-webhook-test"
TURNS: list[Any] = [
    {"plan": ["Count a visitor"]},
    {"tool": "tally", "args": {"counter": "front", "amount": 1}},
    {"done": "counted"},
]


class Receiver:
    """A webhook receiver on loopback that answers 500 to its first `failures` posts."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.received: list[tuple[dict[str, Any], str, bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append(
                    (json.loads(body), self.headers["X-Agent-Signature"], body)
                )
                failing = receiver.failures > 0
                receiver.failures -= 1
                self.send_response(500 if failing else 204)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self) -> list[str]:
        return [body["event"] for body, _, _ in self.received]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = Receiver(failures=1)
    yield made
    made.server.shutdown()
    made.server.server_close()


def _config(tmp_path: Path, url: str) -> list[str]:
    config = tmp_path / "agent.toml"
    config.write_text(f'[approvals]\nwebhook = "{url}"\n')
    return ["--config", str(config)]


def test_requests_and_decisions_are_posted_signed_and_retried(
    home: Path,
    tmp_path: Path,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("AGENT_WEBHOOK_KEY", KEY)
    config = _config(tmp_path, receiver.url)
    script = write_script(tmp_path / "script.json", TURNS)
    tally = str(REPO / "examples" / "tally_tool.py")
    run = ["run", "--model", f"scripted:{script}", "--tools", tally, *config, "--json"]
    assert main([*run, "Count a visitor"]) == 3
    task = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["task_id"]
    assert main(["worker", "--once", *config]) == 0
    assert receiver.events() == ["approval.requested"]  # it failed (500): tried again later
    assert "1 webhook notice(s) failed" in capsys.readouterr().err
    assert main(["worker", "--once", *config]) == 0
    assert receiver.events() == ["approval.requested"]  # not due yet (1 s later)
    time.sleep(1.1)
    assert main(["worker", "--once", *config]) == 0
    assert receiver.events() == ["approval.requested"] * 2
    body, signature, raw = receiver.received[-1]
    stamp, _, digest = signature.partition(",v1=")
    at = stamp.removeprefix("t=")
    assert abs(int(at) - time.time()) < 60
    expected = hmac.new(KEY.encode(), f"{at}.".encode() + raw, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(digest, expected)
    with Store.open() as store:
        waiting = TaskState.from_store(store, task).awaiting
        assert waiting is not None
        assert waiting.approval is not None
        assert body["request"]["approval_id"] == waiting.approval.approval_id
    assert body["request"]["tool"] == "tally"
    # Decided (by a command that goes on with it): the worker sends the decision.
    assert main(["approve", *request_args(task), *config]) == 0
    assert main(["worker", "--once", *config]) == 0
    assert receiver.events()[-1] == "approval.decided"
    decided = receiver.received[-1][0]["request"]
    assert (decided["approved"], decided["origin"]) == (True, "cli")


def test_a_receiver_that_never_answers_is_given_up_on_and_the_task_goes_on(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENT_WEBHOOK_KEY", KEY)
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    config = _config(tmp_path, f"http://127.0.0.1:{closed}/hook")
    script = write_script(tmp_path / "script.json", TURNS)
    tally = str(REPO / "examples" / "tally_tool.py")
    run = ["run", "--model", f"scripted:{script}", "--tools", tally, *config, "--no-prompt"]
    assert main([*run, "Count a visitor"]) == 3
    with Store.open() as store, store.writing() as db:  # as if tried all but once already
        db.execute("UPDATE outbox SET attempts = ?", (webhooks.MAX_ATTEMPTS - 1,))
    assert main(["worker", "--once", *config]) == 0
    with Store.open() as store:
        [(failed,)] = store.reader().execute("SELECT failed FROM outbox").fetchall()
        [row] = store.tasks()
    assert failed.startswith(f"gave up after {webhooks.MAX_ATTEMPTS} attempts: ConnectError")
    assert row.status == "awaiting_approval"  # the task waits for its reviewer, not the webhook


def test_a_webhook_without_its_key_is_refused(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("AGENT_WEBHOOK_KEY", raising=False)
    assert main(["worker", "--once", *_config(tmp_path, "http://127.0.0.1:9/hook")]) == 2
    assert "$AGENT_WEBHOOK_KEY holds no signing key" in capsys.readouterr().err
