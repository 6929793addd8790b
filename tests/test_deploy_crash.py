"""kill -9 of the runner at each of four points around an approved deploy: after `agent resume`,
the engine runs exactly one deployment of that version, and the approval was used once.

The runner dies at a failpoint (base/failpoints.py), so each crash lands exactly where it is meant
to; the order of the four is shuffled with a printed seed. Real Docker, real CLI processes.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import docker
import pytest

from agent.events import ApprovalDecided, IntentRecorded, ToolResulted
from agent.store import Store
from sandbox._services import DEPLOYMENT, VERSION, container_name

from .conftest import REPO, write_script
from .deploying import TASK_CONFIG, deploy_turns

APP = (
    "import os\nfrom http.server import BaseHTTPRequestHandler, HTTPServer\n\n\n"
    "class Hi(BaseHTTPRequestHandler):\n    def do_GET(self):\n        self.send_response(200)\n"
    "        self.end_headers()\n        self.wfile.write(b'hi')\n\n\n"
    "if __name__ == '__main__':\n"
    "    HTTPServer(('0.0.0.0', int(os.environ['PORT'])), Hi).serve_forever()\n"
)
#: where the runner dies, and what its resume must do about the deploy it was making
POINTS = {
    "intent:before": None,  # approved, not intended: it runs on resume, under the approval
    "intent:after": "rerun",  # intended, nothing made: the key finds nothing, so it runs
    "deploy:started": "reconciled",  # its container runs: found by the key, carried to its end
    "result:after": None,  # done and recorded: nothing to do
}


#: what the log holds when the runner dies there: (an intent for the deploy, its result)
LANDED = {
    "intent:before": (False, False),
    "intent:after": (True, False),
    "deploy:started": (True, False),
    "result:after": (True, True),
}


def logged(home: Path, task: str) -> dict[type, list[Any]]:
    """The deploy's intent and result in the task's log (the only approved call of the task)."""
    with Store.open(home / "events.db") as store:
        events = [stored.event for stored in store.events(task)]
    intents = [e for e in events if isinstance(e, IntentRecorded) and e.approval_id]
    refs = {e.ref for e in intents}
    return {
        IntentRecorded: intents,
        ToolResulted: [e for e in events if isinstance(e, ToolResulted) and e.ref in refs],
    }


def running_versions(client: docker.DockerClient, name: str) -> list[str]:
    """The probe: the versions of `name` the engine runs."""
    found = client.containers.list(filters={"label": f"{DEPLOYMENT}={name}"})
    return sorted(c.labels[VERSION] for c in found if VERSION in c.labels)


def cli(home: Path, *args: str, failpoint: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AGENT_HOME": str(home), "PYTHONPATH": str(REPO)}
    env.pop("AGENT_FAILPOINT", None)
    if failpoint is not None:
        env["AGENT_FAILPOINT"] = failpoint
    command = [sys.executable, "-m", "frontends.cli", *args, "--json"]
    return subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=300, check=False
    )


def last_json(result: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(result.stdout.strip().splitlines()[-1])


def crash_and_resume(
    client: docker.DockerClient, tmp_path: Path, config: Path, point: str, name: str
) -> None:
    """Deploy `name` in a task, die at `point` once the reviewer approves, resume; check."""
    home = tmp_path / point.replace(":", "-")
    model = f"scripted:{write_script(tmp_path / f'{name}.json', deploy_turns(name, APP))}"
    started = cli(home, "run", "deploy it", "--deploy", "--model", model, "--config", str(config))
    assert started.returncode == 3, started.stderr  # the deploy waits for a reviewer
    stopped = last_json(started)
    task, pending = stopped["task_id"], stopped["pending_approval"]
    decision = ["approve", task, pending["approval_id"], pending["call_hash"][:8]]
    crashed = cli(home, *decision, "--config", str(config), failpoint=point)
    # The crash landed where it was meant to, and the log at the crash is what that point
    # means: an intent and no result for the two between them, neither before, both after.
    assert crashed.returncode == -signal.SIGKILL, (point, crashed.stderr)
    before = logged(home, task)
    assert (bool(before[IntentRecorded]), bool(before[ToolResulted])) == LANDED[point]
    made = running_versions(client, name)
    assert made == (["1"] if point in ("deploy:started", "result:after") else []), point

    resumed = cli(home, "resume", task, "--config", str(config))
    assert resumed.returncode == 0, (point, resumed.stderr)
    assert last_json(resumed)["status"] == "done"
    assert running_versions(client, name) == ["1"], point
    with Store.open(home / "events.db") as store:
        events = [stored.event for stored in store.events(task)]
    approved = [e for e in events if isinstance(e, ApprovalDecided) and e.approved]
    after = logged(home, task)
    assert len(approved) == 1, point
    assert len(after[IntentRecorded]) == 1, point  # the approval was used once
    assert after[IntentRecorded][0].approval_id == approved[0].approval_id
    [result] = after[ToolResulted]
    assert result.ok, result.content
    # And the recovery each point calls for is the one that happened.
    assert result.recovery == POINTS[point], (point, result.recovery)
    print(f"{point}: one deployment of v1; recovery {result.recovery}")


def test_kill_9_around_an_approved_deploy_leaves_one_deployment(tmp_path: Path) -> None:
    seed = int(os.environ.get("CRASH_SEED", "0")) or random.randrange(1, 2**32)
    print(f"\nCRASH_SEED={seed} (set it to replay this run's order of the four points)")
    order = list(POINTS)
    random.Random(seed).shuffle(order)
    client = docker.from_env()
    config = tmp_path / "agent.toml"
    config.write_text(TASK_CONFIG)
    names = [f"crash-{secrets.token_hex(3)}" for _ in order]
    try:
        for point, name in zip(order, names, strict=True):
            crash_and_resume(client, tmp_path, config, point, name)
        # The positive control: a second container of a version is what the probe would see.
        extra = client.containers.run(
            "agent-sandbox:latest",
            ["sleep", "60"],
            detach=True,
            labels={DEPLOYMENT: names[0], VERSION: "1"},
            network_mode="none",
            cap_drop=["ALL"],
            read_only=True,
        )
        try:
            assert running_versions(client, names[0]) == ["1", "1"]
        finally:
            extra.remove(force=True)
    finally:
        for name in names:
            for container in client.containers.list(
                all=True, filters={"label": f"{DEPLOYMENT}={name}"}
            ):
                container.remove(force=True)
            for network in client.networks.list(names=[container_name(name)]):
                network.remove()


@pytest.fixture(autouse=True)
def _no_failpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENT_FAILPOINT", raising=False)
