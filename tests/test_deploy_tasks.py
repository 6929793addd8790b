"""Deploys in tasks: the README's example, a folder changed after the approval, a build that
downloads through the task's egress proxy, and the task's browser reaching its deployment.

Real Docker, the real egress proxy and Chromium; these never skip.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import getpass
import hashlib
import http.server
import json
import secrets
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from browser.manager import Browsers
from frontends.cli import main
from sandbox.container import Sandbox
from sandbox.deploy_docker import DockerTarget
from sandbox.limits import SandboxConfig, SandboxLimits
from sandbox.manager import Sandboxes, store_scope
from sandbox.proxy import NOT_ALLOWLISTED, OWN_SERVICE, EgressAttempt
from tools import ToolContext
from tools.deploy import registry as deploy_tools

from .conftest import REPO, write_script
from .deploying import (
    APP,
    IMAGE,
    SAMPLES,
    SMALL,
    TASK_CONFIG,
    call,
    deploy_turns,
    fetch,
    named,
    put,
    spec_of,
    target_fixture,  # noqa: F401 - a fixture, used by name
)


async def test_the_deploy_example_runs_as_the_readme_says(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    readme = (REPO / "README.md").read_text()
    command = (
        "./agentw run --deploy --model scripted:examples/deploy_demo.json "
        '"Write a hello-world web app and deploy it"'
    )
    assert command in readme
    config = tmp_path / "agent.toml"
    config.write_text(TASK_CONFIG)
    model = f"scripted:{REPO / 'examples' / 'deploy_demo.json'}"
    common = ["--config", str(config), "--json"]
    target = DockerTarget(IMAGE)
    try:
        # Run from a thread: the command runs its own event loop.
        run = ["run", "Deploy hello", "--deploy", "--model", model, *common]
        code = await asyncio.to_thread(main, run)
        assert code == 3  # waiting for a reviewer: the deploy's plan
        stopped = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        pending = stopped["pending_approval"]
        plan = pending["preview"]
        assert "hello" in json.dumps(plan)
        assert "python3 app.py" in json.dumps(plan)
        assert "egress" in plan
        assert "none: no way out" in plan
        task, request, digest_ = stopped["task_id"], pending["approval_id"], pending["call_hash"]
        approve = ["approve", task, request, digest_[:8], *common]
        assert await asyncio.to_thread(main, approve) == 0
        done = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert done["status"] == "done", done
        url = (await target.status("hello-demo")).url
        assert url is not None
        assert await fetch(url) == "hello from a deployed app\n"
        assert await asyncio.to_thread(main, ["deployments", "list", *common]) == 0
        [listed] = [d for d in json.loads(capsys.readouterr().out) if d["name"] == "hello-demo"]
        assert listed["url"] == url
        assert [v["state"] for v in listed["versions"]] == ["serving"]
        assert listed["versions"][0]["approved_by"] == getpass.getuser()
        logs = ["deployments", "logs", "hello-demo", "--egress", *common]
        assert await asyncio.to_thread(main, logs) == 0
        said = json.loads(capsys.readouterr().out)["logs"]
        assert said == "(v1 has no way out: its deploy named no egress allowlist)"
    finally:
        await target.remove("hello-demo")


async def test_the_task_s_browser_reaches_its_own_deployments_and_no_one_else_s(
    target: DockerTarget,
) -> None:
    attempts: list[EgressAttempt] = []
    sandboxes = Sandboxes(
        SandboxConfig(pool_size=0),
        scope=secrets.token_hex(4),
        on_egress=lambda _task, attempt: attempts.append(attempt),
    )
    sandboxes.egress.services = target.reachable_by  # as the runner sets it
    browsers = Browsers()
    limits = SandboxLimits(network="proxy", allow_domains=("x.test",), memory_mb=1024)
    names = {sample: named() for sample in SAMPLES}
    theirs = named()
    try:
        box = await sandboxes.for_task("builder", limits)

        async def opened() -> Sandbox:
            return box

        # Each sample, deployed by the task "builder" from its workspace...
        for sample, (files, _) in SAMPLES.items():
            await put(box, sample, files)
            key = f"builder/{names[sample]}"
            ctx = ToolContext("builder", "c1", key, sandbox=opened, deploy=target)
            await call("deploy", ctx, folder=sample, name=names[sample])
        spec, built = await spec_of(target, theirs, {"app.py": APP})
        await target.deploy(spec, built, f"someone-else/{theirs}")
        # ...is what the task's browser sees at its URL.
        driver = await browsers.for_task("builder", box)
        for sample, (_, expected) in SAMPLES.items():
            await driver.goto(str((await target.status(names[sample])).url))
            assert expected in await driver.snapshot(), sample
        # Another task's deployment is not the task's to reach.
        other = str((await target.status(theirs)).url)
        with contextlib.suppress(Exception):  # the refusal is the proxy's page, or an error
            await driver.goto(other)
        decided = {(a.port, a.allowed, a.reason) for a in attempts}
        mine = (await target.status(names["python-app"])).url
        assert (_port(str(mine)), True, OWN_SERVICE) in decided
        assert (_port(other), False, NOT_ALLOWLISTED) in decided
    finally:
        await browsers.aclose()
        await sandboxes.reap(lambda _task: True)
        await sandboxes.aclose()
        for name in [*names.values(), theirs]:
            await target.remove(name)


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].rstrip("/"))


def _wheel(folder: Path) -> str:
    """A small package's wheel, written by hand (a module and its metadata); its file name."""
    name = "hellolib-1.0-py3-none-any.whl"
    files = {
        "hellolib/__init__.py": b'GREETING = "from a package off the index"\n',
        "hellolib-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: hellolib\nVersion: 1.0\n",
        "hellolib-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: tests\n"
        b"Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = [f"{path},sha256={_digest(data)},{len(data)}" for path, data in files.items()] + [
        "hellolib-1.0.dist-info/RECORD,,"
    ]
    files["hellolib-1.0.dist-info/RECORD"] = ("\n".join(record) + "\n").encode()
    with zipfile.ZipFile(folder / name, "w") as wheel:
        for path, data in files.items():
            wheel.writestr(path, data)
    return name


def _digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


@pytest.fixture
def index(tmp_path: Path) -> Iterator[int]:
    """A package index on loopback holding one package, hellolib; its port."""
    root = tmp_path / "index"
    (root / "simple" / "hellolib").mkdir(parents=True)
    (root / "files").mkdir()
    wheel = _wheel(root / "files")
    link = f'<a href="../../files/{wheel}">{wheel}</a>'
    (root / "simple" / "hellolib" / "index.html").write_text(f"<html><body>{link}</body></html>")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


async def test_a_build_downloads_through_the_task_s_egress_and_nowhere_else(
    target: DockerTarget, index: int
) -> None:
    attempts: list[EgressAttempt] = []
    sandboxes = Sandboxes(
        SandboxConfig(pool_size=0, allow_private=True),  # the index is on this host's loopback
        scope=secrets.token_hex(4),
        on_egress=lambda _task, attempt: attempts.append(attempt),
    )
    limits = SMALL.model_copy(update={"network": "proxy", "allow_domains": (f"127.0.0.1:{index}",)})
    name = named()
    try:
        box = await sandboxes.for_task("builder", limits)

        async def opened() -> Sandbox:
            return box

        ctx = ToolContext("builder", "c1", f"builder/{name}", sandbox=opened, deploy=target)
        app = (
            "from hellolib import GREETING\n\n\ndef app(environ, start_response):\n"
            '    start_response("200 OK", [])\n    return [GREETING.encode()]\n'
        )
        for port, folder in ((index, "good"), (index + 1, "bad")):
            requirements = (
                f"--index-url http://127.0.0.1:{port}/simple/\n--trusted-host 127.0.0.1\nhellolib\n"
            )
            await put(box, folder, {"app.py": app, "requirements.txt": requirements})
        said = await call("deploy", ctx, folder="good", name=name)
        assert "v1 serves at" in said
        url = (await target.status(name)).url
        assert await fetch(str(url)) == "from a package off the index"
        assert any(a.port == index and a.allowed for a in attempts)
        # A requirement from a host the allowlist does not name: refused, and said.
        deploy = deploy_tools.get("deploy")
        assert deploy is not None
        failed = await deploy.invoke({"folder": "bad", "name": name}, ctx)
        assert (failed.ok, failed.error_code) == (False, "build_failed")
        assert "at Dockerfile line 5 (RUN python3 -m pip install" in failed.content
        assert f"it asked for 127.0.0.1:{index + 1}" in failed.content
        assert "reaches only the hosts the task's allowlist names" in failed.content
        assert any(a.port == index + 1 and not a.allowed for a in attempts)
        assert await fetch(str(url)) == "from a package off the index"  # v1 serves on
    finally:
        await sandboxes.reap(lambda _task: True)
        await sandboxes.aclose()
        await target.remove(name)


async def test_a_folder_changed_after_the_approval_is_asked_about_again(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(TASK_CONFIG)
    name = named()
    model = f"scripted:{write_script(tmp_path / 'deploy.json', deploy_turns(name))}"
    common = ["--config", str(config), "--json"]
    target = DockerTarget(IMAGE)

    async def cli(*args: str) -> tuple[int, Any]:
        code = await asyncio.to_thread(main, [*args, *common])
        return code, json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    try:
        code, first = await cli("run", "deploy it", "--deploy", "--model", model)
        assert code == 3
        task, asked = first["task_id"], first["pending_approval"]
        # The folder changes in the task's sandbox after the reviewer read the plan.
        box = docker.from_env().containers.get(f"agent-{store_scope(home / 'events.db')}-{task}")
        changed = box.exec_run(["sh", "-c", "echo '# changed' >> web/app.py"], user="1000:1000")
        assert changed.exit_code == 0
        code, second = await cli("approve", task, asked["approval_id"], asked["call_hash"][:8])
        assert code == 3  # not deployed: asked again, about the plan as it is now
        again = second["pending_approval"]
        assert again["approval_id"] != asked["approval_id"]
        assert (
            "asked again: what it would do changed since the approval: deploy.files"
            in (again["reason"])
        )
        assert name not in {d.name for d in await target.deployments()}
        code, done = await cli("approve", task, again["approval_id"], again["call_hash"][:8])
        assert (code, done["status"]) == (0, "done")
        assert (await target.status(name)).serving is not None
    finally:
        await target.remove(name)
