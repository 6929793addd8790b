"""What the deploy tests share: sample apps, a deploy target that cleans up after itself, a
task's sandbox, and small helpers."""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import AsyncIterator
from typing import Any

import docker
import httpx
import pytest

from sandbox._recipes import context, digest, recipe
from sandbox.container import Sandbox
from sandbox.deploy import Health, Spec
from sandbox.deploy_docker import DockerTarget
from sandbox.limits import SandboxConfig, SandboxLimits
from sandbox.manager import Sandboxes
from tools import ToolContext
from tools.deploy import registry as deploy_tools

IMAGE = "agent-sandbox:latest"
SMALL = SandboxLimits(memory_mb=256, pids=64, workspace_mb=32, tmp_mb=16, cpus=1.0)

APP = """\
import os
from http.server import BaseHTTPRequestHandler, HTTPServer


class Hello(BaseHTTPRequestHandler):
    def do_GET(self):
        body = os.environ.get("GREETING", "GREETING-UNSET").encode()
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body)


if __name__ == "__main__":
    HTTPServer(("0.0.0.0", int(os.environ["PORT"])), Hello).serve_forever()
"""
WSGI = """\
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"wsgi says hi"]
"""
OWN_DOCKERFILE = """\
FROM agent-sandbox:latest
COPY app.py /srv/app.py
ENV GREETING="from my own Dockerfile"
EXPOSE 9000
USER 1000:1000
CMD ["python3", "/srv/app.py"]
"""


# -- recognising a folder (no Docker)


#: the sample folders of the acceptance, by name: their files, and what their page says
SAMPLES: dict[str, tuple[dict[str, str], str]] = {
    "python-app": ({"app.py": APP}, "GREETING-UNSET"),
    "wsgi-app": ({"main.py": WSGI}, "wsgi says hi"),
    "static-site": ({"index.html": "<h1>a static site</h1>"}, "a static site"),
    "python-dockerfile": ({"Dockerfile": OWN_DOCKERFILE, "app.py": APP}, "from my own Dockerfile"),
    "static-dockerfile": (
        {
            "Dockerfile": "FROM agent-sandbox:latest\nCOPY site /srv/site\nUSER 1000:1000\n"
            'CMD ["python3", "-m", "http.server", "8000", "--directory", "/srv/site"]\n',
            "site/index.html": "static, with a Dockerfile",
        },
        "static, with a Dockerfile",
    ),
}


@pytest.fixture(name="target")
async def target_fixture() -> AsyncIterator[DockerTarget]:
    made = DockerTarget(IMAGE)
    yield made
    for deployment in await made.deployments():
        if deployment.name.startswith("t-"):
            await made.remove(deployment.name)


@pytest.fixture(name="sandbox")
async def sandbox_fixture() -> AsyncIterator[Sandbox]:
    boxes = Sandboxes(SandboxConfig(pool_size=0, limits=SMALL), scope=secrets.token_hex(4))
    yield await boxes.for_task("deployer")
    await boxes.reap(lambda _task: True)
    await boxes.aclose()


async def fetch(url: str) -> str:
    async with httpx.AsyncClient() as client:
        return (await client.get(url)).text


def named() -> str:
    return f"t-{secrets.token_hex(3)}"


async def spec_of(
    target: DockerTarget, name: str, files: dict[str, str], **health: Any
) -> tuple[Spec, bytes]:
    data = {path: text.encode() for path, text in files.items()}
    _, base = await target.base_image()
    found = recipe(data, base)
    spec = Spec(name, found, digest(data), "app", Health(**health), env={"GREETING": "v1"})
    return spec, context(data, found.dockerfile)


async def call(tool: str, ctx: ToolContext, **arguments: Any) -> str:
    found = deploy_tools.get(tool)
    assert found is not None
    result = await found.invoke(arguments, ctx)
    assert result.ok, result.content
    return result.content


async def put(box: Sandbox, folder: str, files: dict[str, str]) -> None:
    for path, text in files.items():
        await box.write_file(f"{folder}/{path}", text.encode())


#: agent.toml for a task that deploys: small sandboxes, and no pool to wait for
TASK_CONFIG = """
[sandbox]
pool_size = 0
[sandbox.limits]
memory_mb = 256
pids = 64
workspace_mb = 32
"""


def deploy_turns(name: str, app: str = APP) -> list[dict[str, object]]:
    """A scripted task that writes `app` as web/app.py and deploys it as `name`."""
    return [
        {"plan": ["Deploy"]},
        {"tool": "write_file", "args": {"path": "web/app.py", "content": app}},
        {"tool": "deploy", "args": {"folder": "web", "name": name}},
        {"done": "deployed"},
    ]


def bridge_gateway(client: docker.DockerClient) -> str:
    """This host's address on Docker's default bridge. Some engines (Debian's 20.10) leave the
    gateway out of the network's settings: it is then the subnet's first address."""
    [config, *_] = client.networks.get("bridge").attrs["IPAM"]["Config"]
    gateway = config.get("Gateway") or str(next(ipaddress.ip_network(config["Subnet"]).hosts()))
    return str(gateway).split("/")[0]
