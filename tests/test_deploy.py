"""Deployments, against the real Docker engine: a Python web app and a static site, each with
and without a Dockerfile, deployed from a task's workspace through the deploy tools; health
checks that keep the old version serving; rollback; finding a deploy by its key; hardening.

These never skip: `make test` starts Docker and builds the runtime image first.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import docker
import httpx
import pytest

from agent.runner import Runner
from agent.store import Store
from policies import Gate
from sandbox._recipes import RecipeError, build_failure, context, digest, recipe
from sandbox._services import DEPLOYMENT, container_name, live_name
from sandbox.container import Sandbox
from sandbox.deploy import DeployFailed, Spec
from sandbox.deploy_docker import DockerTarget
from tools import InvalidArguments, Registry, ToolContext
from tools.builtin import registry as builtin_tools
from tools.deploy import registry as deploy_tools

from .conftest import scripted
from .deploying import (  # noqa: F401 - fixtures, used by name
    APP,
    IMAGE,
    OWN_DOCKERFILE,
    SAMPLES,
    WSGI,
    bridge_gateway,
    call,
    fetch,
    named,
    put,
    sandbox_fixture,
    spec_of,
    target_fixture,
)


def test_a_folder_is_recognised_by_its_files() -> None:
    program = recipe({"app.py": APP.encode()}, "base")
    assert (program.kind, program.command, program.port) == ("python", "python3 app.py", 8000)
    wsgi = recipe({"main.py": WSGI.encode()}, "base")
    assert "wsgiref" in wsgi.command
    assert "from main import app" in wsgi.command
    static = recipe({"index.html": b"<h1>hi</h1>"}, "base", 8100)
    assert (static.kind, static.port) == ("static", 8100)
    assert static.dockerfile.startswith("FROM base\n")
    assert "USER 1000:1000" in static.dockerfile
    own = recipe({"Dockerfile": OWN_DOCKERFILE.encode(), "app.py": b""}, "base")
    assert (own.kind, own.port, own.command) == ("dockerfile", 9000, '["python3", "/srv/app.py"]')


@pytest.mark.parametrize(
    ("files", "said"),
    [
        ({}, "the folder is empty"),
        ({"notes.txt": b"x"}, "looked for a Dockerfile, a Python app (app.py, main.py"),
        ({"app.py": b"print('hi')\n"}, "cannot tell how to start it"),
        ({"app.py": b"from fastapi import FastAPI\napp = FastAPI()\n"}, "add uvicorn"),
        ({"Dockerfile": b"FROM x\nUSER root\n"}, "last USER is root"),
        ({"Dockerfile": b"FROM x\nVOLUME /data\n"}, "line 2 asks for a VOLUME"),
        ({"Dockerfile": b"FROM x\nRUN --security=insecure id\n"}, "a privileged RUN"),
    ],
)
def test_a_folder_that_cannot_be_deployed_says_why(files: dict[str, bytes], said: str) -> None:
    with pytest.raises(RecipeError, match=None) as caught:
        recipe(files, "base")
    assert said in str(caught.value)


def test_the_digest_follows_the_files_not_their_order() -> None:
    one = digest({"a": b"1", "b": b"2"})
    assert one == digest({"b": b"2", "a": b"1"})
    assert one != digest({"a": b"1", "b": b"3"})


def test_a_failed_build_names_the_dockerfile_line() -> None:
    dockerfile = "FROM x\nCOPY . /srv\nRUN exit 3\n"
    said = build_failure(dockerfile, "RUN exit 3", "returned a non-zero code: 3")
    assert said == "the build failed at Dockerfile line 3 (RUN exit 3): returned a non-zero code: 3"


# -- on the engine


@pytest.mark.parametrize(("files", "expected"), SAMPLES.values(), ids=SAMPLES.keys())
async def test_a_folder_of_the_workspace_is_deployed_healthy_and_reachable(
    target: DockerTarget, sandbox: Sandbox, files: dict[str, str], expected: str
) -> None:
    await put(sandbox, "web", files)

    async def opened() -> Sandbox:
        return sandbox

    name = named()
    ctx = ToolContext("deployer", "c1", f"deployer/{name}", sandbox=opened, deploy=target)
    said = await call("deploy", ctx, folder="web", name=name)
    assert f"{name} v1 serves at http://127.0.0.1:" in said
    url = (await target.status(name)).url
    assert url is not None
    async with httpx.AsyncClient() as client:
        answer = await client.get(url)
    assert answer.status_code == 200
    assert expected in answer.text
    status = await call("deploy_status", ctx, name=name)
    assert "v1  serving" in status
    listed = await call("deployments", ctx)
    assert f"{name}: {url} (v1 serving)" in listed
    logs = await call("deploy_logs", ctx, name=name)
    assert '"GET / HTTP/1.1" 200' in logs  # each of these servers logs each request


async def test_a_failing_version_leaves_the_old_one_serving_and_rollback_restores(
    target: DockerTarget,
) -> None:
    name = named()
    first, first_context = await spec_of(target, name, {"app.py": APP})
    v1 = await target.deploy(first, first_context, f"{name}-1")
    url = (await target.status(name)).url
    assert url is not None
    second_app = APP.replace("GREETING-UNSET", "second")
    second, second_context = await spec_of(
        target, name, {"app.py": second_app.replace('os.environ.get("GREETING", ', "(")}
    )
    v2 = await target.deploy(second, second_context, f"{name}-2")
    assert (v1.number, v2.number) == (1, 2)
    assert (await fetch(url)) == "second"
    # A third version whose health check never passes: reported, and v2 goes on serving.
    third, third_context = await spec_of(
        target, name, {"app.py": APP.replace("200", "503")}, timeout=3
    )
    with pytest.raises(DeployFailed) as failed:
        await target.deploy(third, third_context, f"{name}-3")
    assert failed.value.code == "health_failed"
    assert "GET / answered 503" in str(failed.value)
    assert '"GET / HTTP/1.1" 503' in failed.value.logs
    assert (await fetch(url)) == "second"
    assert [v.number for v in (await target.status(name)).versions] == [1, 2]
    # Rollback: v1 again, with no build, at the same URL.
    back = await target.rollback(name)
    assert back.number == 1
    assert (await fetch(url)) == "v1"
    states = {v.number: v.state for v in (await target.status(name)).versions}
    assert states == {1: "serving", 2: "standby"}  # the one rolled back from runs on
    with pytest.raises(DeployFailed, match="no earlier version"):
        await target.rollback(name)


async def test_an_unchanged_deploy_changes_nothing_and_a_deploy_is_found_by_its_key(
    target: DockerTarget,
) -> None:
    name = named()
    spec, built = await spec_of(target, name, {"app.py": APP})
    first = await target.deploy(spec, built, f"{name}-1")
    again = await target.deploy(spec, built, f"{name}-2")
    assert again.number == first.number == 1
    found = await target.settle(f"{name}-1")
    assert found is not None
    assert (found.number, found.state) == (1, "serving")
    assert await target.settle(f"{name}-never") is None


async def test_a_changed_environment_is_a_new_version(target: DockerTarget) -> None:
    name = named()
    spec, built = await spec_of(target, name, {"app.py": APP})
    await target.deploy(spec, built, f"{name}-1")
    changed = replace(spec, env={"GREETING": "v2"})
    second = await target.deploy(changed, built, f"{name}-2")
    assert second.number == 2  # same image, same names: the value changed, so it is deployed
    assert await fetch(str((await target.status(name)).url)) == "v2"


async def test_a_first_deploy_that_fails_its_check_leaves_nothing_behind(
    target: DockerTarget,
) -> None:
    name = named()
    spec, built = await spec_of(target, name, {"app.py": APP.replace("200", "500")}, timeout=1)
    with pytest.raises(DeployFailed, match="GET / answered 500"):
        await target.deploy(spec, built, f"{name}-1")
    client = docker.from_env()
    assert not client.containers.list(all=True, filters={"label": f"{DEPLOYMENT}={name}"})
    assert not client.networks.list(names=[container_name(name)])
    assert name not in {d.name for d in await target.deployments()}


async def test_a_failed_build_says_which_line(target: DockerTarget) -> None:
    name = named()
    files = {"Dockerfile": b"FROM agent-sandbox:latest\nRUN echo building\nRUN exit 7\n"}
    found = recipe(files, "unused")
    spec = Spec(name, found, digest(files), "app")
    shown: list[str] = []
    with pytest.raises(DeployFailed) as failed:
        await target.deploy(spec, context(files, found.dockerfile), name, on_output=shown.append)
    assert failed.value.code == "build_failed"
    assert "at Dockerfile line 3 (RUN exit 7)" in str(failed.value)
    assert "building" in "".join(shown)  # the build's output streamed as it came


async def test_bad_input_is_the_model_s_to_correct(target: DockerTarget, sandbox: Sandbox) -> None:
    async def opened() -> Sandbox:
        return sandbox

    ctx = ToolContext("deployer", "c1", "deployer/bad", sandbox=opened, deploy=target)
    deploy = deploy_tools.get("deploy")
    assert deploy is not None
    missing = await deploy.invoke({"folder": "nowhere", "name": "ok-name"}, ctx)
    assert (missing.ok, missing.error_code) == (False, "not_found")
    assert "nowhere" in missing.content
    with pytest.raises(InvalidArguments, match="field 'name': String should match pattern"):
        deploy.validate({"folder": "web", "name": "Not A Name"})
    url_not_host = r"not an allowlist entry: 'https://x\.test/' \(a host name, not a URL"
    with pytest.raises(InvalidArguments, match=url_not_host):
        deploy.validate({"folder": "web", "name": "ok-name", "egress": ["https://x.test/"]})
    await put(sandbox, "notes", {"readme.txt": "just text"})
    unknown = await deploy.invoke({"folder": "notes", "name": "ok-name"}, ctx)
    assert not unknown.ok
    assert "looked for a Dockerfile" in unknown.content
    # A host port another program holds.
    await put(sandbox, "web", {"app.py": APP})
    name = named()
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        clash = await deploy.invoke({"folder": "web", "name": name, "host_port": port}, ctx)
    assert (clash.ok, clash.error_code) == (False, "port_taken")
    assert f"port {port} of this host is already taken" in clash.content
    assert name not in {d.name for d in await target.deployments()}  # nothing left behind


async def test_a_service_reaches_nothing_outside_its_deployment(target: DockerTarget) -> None:
    # (Its settings are checked with every other container's in test_sandbox.py.)
    name = named()
    spec, built = await spec_of(target, name, {"app.py": APP})
    await target.deploy(spec, built, f"{name}-1")
    client = docker.from_env()
    service = client.containers.get(live_name(name))
    # Its only network is the deployment's own, which is internal: no way out.
    assert list(service.attrs["NetworkSettings"]["Networks"]) == [container_name(name)]
    assert client.networks.get(container_name(name)).attrs["Internal"] is True
    # Nothing outside answers it: not even a port of this host, which the front (on the
    # engine's bridge) reaches, as the positive control.
    gateway = bridge_gateway(client)
    with socket.create_server(("0.0.0.0", 0)) as listening:
        port = listening.getsockname()[1]
        front = client.containers.get(container_name(name))
        assert _reaches(front, gateway, port)
        assert not _reaches(service, gateway, port)
    status = service.exec_run(["sh", "-c", "grep -E '^(CapEff|NoNewPrivs):' /proc/1/status; id -u"])
    assert isinstance(status.output, bytes)
    text = status.output.decode()
    assert "CapEff:\t0000000000000000" in text
    assert "NoNewPrivs:\t1" in text
    assert text.strip().splitlines()[-1] == "1000"


FETCHER = """\
import os
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qs, urlsplit


class Fetch(BaseHTTPRequestHandler):
    def do_GET(self):
        asked = parse_qs(urlsplit(self.path).query).get("url")
        body = os.environ.get("GREETING", "")
        if asked:  # through $HTTP_PROXY, as any program would
            try:
                with urllib.request.urlopen(asked[0], timeout=5) as answer:
                    body = f"{answer.status} {answer.read().decode()}"
            except urllib.error.HTTPError as e:
                body = f"{e.code} {e.read().decode(errors='replace')}"
            except OSError as e:
                body = f"failed: {e}"
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body.encode())


if __name__ == "__main__":
    HTTPServer(("0.0.0.0", int(os.environ["PORT"])), Fetch).serve_forever()
"""


@contextlib.contextmanager
def _outside(text: str) -> Iterator[int]:
    """A web server on this host, outside every deployment, answering `text`: its port."""

    class Answer(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(text.encode())

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("0.0.0.0", 0), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


async def test_a_service_reaches_what_its_deploy_allows_through_a_proxy_of_its_own(
    target: DockerTarget,
) -> None:
    client = docker.from_env()
    gateway = bridge_gateway(client)
    # The operator lets explicit entries reach private addresses ([sandbox] allow_private).
    operator = DockerTarget(IMAGE, allow_private=True)
    name = named()
    with _outside("one") as one, _outside("two") as two:
        spec, built = await spec_of(target, name, {"app.py": FETCHER})
        to_one = replace(spec, egress=(f"{gateway}:{one}",))

        async def fetched(port: int) -> str:
            url = (await target.status(name)).url
            return await fetch(f"{url}?url=http://{gateway}:{port}/")

        v1 = await operator.deploy(to_one, built, f"{name}-1")
        assert v1.egress == (f"{gateway}:{one}",)
        assert await fetched(one) == "200 one"
        refused = await fetched(two)  # the same host, not allowlisted: the proxy refuses it
        assert refused.startswith("403 egress to ")
        assert "not in the allowlist" in refused
        decisions = [
            json.loads(line)
            for line in (await target.logs(name, egress=True)).splitlines()
            if '"allowed"' in line
        ]
        assert [(d["host"], d["port"], d["allowed"]) for d in decisions] == [
            (gateway, one, True),
            (gateway, two, False),
        ]
        # Its proxy is told this host's addresses (its own interfaces are a container's).
        proxy = client.containers.get(f"agent-deploy-{name}-v1-egress")
        assert f"--own={gateway}" in proxy.attrs["Config"]["Cmd"]
        # The service's one network is still its deployment's, with no way out.
        service = client.containers.get(live_name(name))
        assert list(service.attrs["NetworkSettings"]["Networks"]) == [container_name(name)]
        assert not _reaches(service, gateway, one)
        # The allowlist is part of the version: unchanged, nothing changes; another is v2.
        assert (await operator.deploy(to_one, built, f"{name}-again")).number == 1
        to_two = replace(spec, egress=(f"{gateway}:{two}",))
        assert (await operator.deploy(to_two, built, f"{name}-2")).number == 2
        assert (await fetched(two), (await fetched(one))[:3]) == ("200 two", "403")
        # A rollback to v1 (the standby, its proxy running on) reaches what v1 was allowed.
        assert (await operator.rollback(name)).number == 1
        assert (await fetched(one), (await fetched(two))[:3]) == ("200 one", "403")
        versions = (await target.status(name)).versions
        assert [v.egress for v in versions] == [(f"{gateway}:{one}",), (f"{gateway}:{two}",)]
        # Without the operator's word, an entry naming a private address does not reach it.
        v3 = replace(to_one, env={"GREETING": "v3"})
        assert (await target.deploy(v3, built, f"{name}-3")).number == 3
        said = await fetched(one)
        assert said.startswith("403 ")
        assert "private or loopback address" in said
        # v1 was retired (the newest other, v2, is the standby): its proxy went with it.
        proxies = {
            c.name: c.status
            for c in client.containers.list(all=True, filters={"label": f"{DEPLOYMENT}={name}"})
            if str(c.name).endswith("-egress")
        }
        assert proxies == {
            f"agent-deploy-{name}-v1-egress": "exited",
            f"agent-deploy-{name}-v2-egress": "running",
            f"agent-deploy-{name}-v3-egress": "running",
        }
        # Back to v2 (a switch), then to v1, which was stopped: it starts, its proxy first.
        assert (await target.rollback(name)).number == 2
        assert (await target.rollback(name)).number == 1
        assert await fetched(one) == "200 one"
    await target.remove(name)
    assert not client.containers.list(all=True, filters={"label": f"{DEPLOYMENT}={name}"})


def _reaches(container: Any, host: str, port: int) -> bool:
    probe = f"import socket; socket.create_connection(({host!r}, {port}), 3)"
    return bool(container.exec_run(["python3", "-c", probe]).exit_code == 0)


def test_only_a_task_that_may_deploy_is_offered_the_deploy_tools(store: Store) -> None:
    registry = Registry()
    registry.include(builtin_tools)
    registry.include(deploy_tools)
    deploying = {t.name for t in deploy_tools}
    with_target = Runner(
        store, registry, Gate.default(), planner=scripted([]), deploy=DockerTarget(IMAGE)
    )
    without = Runner(store, registry, Gate.default(), planner=scripted([]))
    for runner, may, offered in (
        (with_target, False, set()),
        (with_target, True, deploying),
        (without, True, set()),  # a runner with nowhere to deploy offers none
    ):
        state = runner.load(runner.create("a task", deploy=may))
        names = {spec.name for spec in runner.offered(state)}
        assert names & deploying == offered
        assert "calculate" in names


@pytest.fixture
def engine_over_tcp() -> Iterator[str]:
    """This host's Docker engine, reached over TCP on loopback (as a remote engine would be):
    a relay from a local port to the engine's socket. Its URL."""
    listening = socket.create_server(("127.0.0.1", 0))

    def pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = listening.accept()
                engine = socket.socket(socket.AF_UNIX)
                engine.connect("/var/run/docker.sock")
                for ends in ((client, engine), (engine, client)):
                    threading.Thread(target=pump, args=ends, daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield f"tcp://127.0.0.1:{listening.getsockname()[1]}"
    listening.close()


async def test_a_deploy_target_is_an_engine_named_by_url(engine_over_tcp: str) -> None:
    target = DockerTarget(IMAGE, url=engine_over_tcp)
    name = named()
    try:
        spec, built = await spec_of(target, name, {"app.py": APP})
        deployed = await target.deploy(spec, built, f"owner/{name}")
        assert (deployed.number, deployed.state) == (1, "serving")
        url = str((await target.status(name)).url)
        assert await fetch(url) == "v1"
        # An engine named by a tcp:// URL may be another host's: its ports are not taken for
        # this host's, so a task does not reach them through the proxy (the same deployment,
        # read through the local socket, is the positive control).
        assert await target.reachable_by("owner") == frozenset()
        port = int(url.rsplit(":", 1)[1].rstrip("/"))
        assert await DockerTarget(IMAGE).reachable_by("owner") == {("127.0.0.1", port)}
    finally:
        await target.remove(name)


async def test_changes_to_one_deployment_wait_for_each_other(target: DockerTarget) -> None:
    name = named()
    first, first_context = await spec_of(target, name, {"app.py": APP})
    second, second_context = await spec_of(target, name, {"app.py": APP.replace("UNSET", "2")})
    deployed = await asyncio.gather(
        target.deploy(first, first_context, f"{name}-1"),
        target.deploy(second, second_context, f"{name}-2"),
    )
    assert sorted(v.number for v in deployed) == [1, 2]
    states = {v.number: v.state for v in (await target.status(name)).versions}
    assert sorted(states.values()) == ["serving", "standby"]
