"""A deployed service's way out: none, unless its deploy named an allowlist. Then the version
gets an egress proxy of its own, a container beside it running the task's proxy code
(`sandbox/_egress_main.py`) with that allowlist, and the service's HTTP(S)_PROXY points at it.

    network agent-deploy-NAME (internal)      network agent-deploy-egress (NAT, no traffic
      v3   agent-deploy-NAME-live  ──────►      agent-deploy-NAME-v3-egress   between containers)
                                                 ──► the hosts the allowlist names

The proxy is a container, not the runner's own proxy, because a deployment outlives the runner.
It judges requests as a task's proxy does (the allowlist, then the addresses a name resolves
to: private and special ranges and the host's own addresses refused unless the operator lets an
explicit entry reach them), and prints each decision, which Docker keeps as its log. It comes
and goes with its version: started before it, killed, stopped and removed with it.
"""

from __future__ import annotations

import contextlib
import io
import json
import secrets
from pathlib import Path
from typing import Any

import docker
import docker.errors
import tenacity

from base.errors import ErrorCode
from sandbox._docker import LABEL, docker_time, mapped
from sandbox._egress_main import LISTENING, PORT, TOKEN
from sandbox._hardening import service_hardened
from sandbox._recipes import context, digest
from sandbox._services import (
    DEPLOYMENT,
    KEY,
    PLAN,
    VERSION,
    log_tail,
    remove_container,
    restarting,
)
from sandbox._services import container_name as deployment_network
from sandbox.deploy import DeployFailed, ServiceLimits

#: on a version's proxy: the number of the version it serves
EGRESS_OF = "agent.egress-of"
NETWORK = "agent-deploy-egress"
_SOURCES = ("_addresses.py", "_allowlist.py", "proxy.py", "_egress_main.py")
_LIMITS = ServiceLimits(memory_mb=96, cpus=0.5, pids=64)


def egress_name(name: str, number: int) -> str:
    return f"agent-deploy-{name}-v{number}-egress"


def proxy_image(client: docker.DockerClient, runtime_image: str) -> str:
    """The image of a deployment's proxy: the runtime image with the proxy's code, built the
    first time this code meets that image (its tag is a digest of both)."""
    here = Path(__file__).parent
    sources = {f"sandbox/{name}": (here / name).read_bytes() for name in _SOURCES}
    sources["sandbox/__init__.py"] = b""
    with mapped("reading the runtime image", runtime_image):
        base = str(client.images.get(runtime_image).id)
    tag = f"agent-egress:{digest({**sources, 'FROM': base.encode()})[:16]}"
    with contextlib.suppress(docker.errors.ImageNotFound):
        client.images.get(tag)
        return tag
    dockerfile = (
        f"FROM {runtime_image}\n"
        "COPY sandbox /opt/agent-egress/sandbox\n"
        "ENV PYTHONPATH=/opt/agent-egress PYTHONDONTWRITEBYTECODE=1\n"
    )
    with mapped("building the image of deployments' egress proxies", runtime_image):
        client.images.build(
            fileobj=io.BytesIO(context(sources, dockerfile)),
            custom_context=True,
            tag=tag,
            rm=True,
            network_mode="none",
            labels={LABEL: "1"},
        )
    return tag


def _network(client: docker.DockerClient) -> str:
    """The network every deployment's proxy reaches out on: NAT to the world, and no traffic
    between the containers on it (one service's proxy is not another's way in)."""
    with mapped("making the network of deployments' egress proxies"):
        if not client.networks.list(names=[NETWORK]):
            client.networks.create(
                NETWORK,
                driver="bridge",
                labels={EGRESS_OF: ""},  # not the sandboxes' label: no sandbox's to clean up
                options={"com.docker.network.bridge.enable_icc": "false"},
            )
    return NETWORK


def start_proxy(
    client: docker.DockerClient,
    runtime_image: str,
    *,
    name: str,
    number: int,
    key: str,
    allow: tuple[str, ...],
    own: list[str],
    allow_private: bool,
) -> dict[str, str]:
    """Start the proxy of version `number` of `name`, allowing `allow`; the environment that
    sends the service's HTTP and HTTPS through it. `own` are the addresses of the engine's host
    (refused, as private ones are, unless `allow_private` and an entry names one outright).
    Raises `DeployFailed` if it does not start listening."""
    image = proxy_image(client, runtime_image)
    network = _network(client)
    token = secrets.token_urlsafe(24)
    command = ["python3", "-m", "sandbox._egress_main", "--service", f"{name} v{number}"]
    command += [f"--allow={entry}" for entry in allow] + [f"--own={a}" for a in own]
    command += ["--allow-private"] if allow_private else []
    container_name = egress_name(name, number)
    with mapped(f"starting the egress proxy of {name} v{number}"):
        # A proxy left by a deploy that crashed before its version started: that number is new.
        for left in client.containers.list(all=True, filters={"name": f"^/{container_name}$"}):
            remove_container(left)
        proxy = client.containers.create(
            image,
            command=command,
            name=container_name,
            labels={DEPLOYMENT: name, EGRESS_OF: str(number), KEY: key},
            environment={TOKEN: token},
            network=network,
            **restarting(service_hardened(_LIMITS)),
        )
        client.networks.get(deployment_network(name)).connect(proxy)
        _start_listening(proxy)
    url = f"http://agent:{token}@{container_name}:{PORT}"
    local = "localhost,127.0.0.1"
    return {
        **{name: url for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")},
        **{"NO_PROXY": local, "no_proxy": local},
    }


def _start_listening(proxy: Any) -> None:
    """Start `proxy`, and return once it listens, so that the service finds it from its first
    request. Raises `DeployFailed`, with its log, if it exits or does not listen within 20 s."""
    proxy.start()
    proxy.reload()
    # Its log since this start (a proxy started again said it listened before), by the engine's
    # clock, which another host's engine does not share with this one.
    started = docker_time(proxy.attrs["State"]["StartedAt"])

    @tenacity.retry(
        stop=tenacity.stop_after_delay(20),
        wait=tenacity.wait_fixed(0.025),
        retry=tenacity.retry_if_result(lambda state: state == "starting"),
    )
    def state() -> str:
        if LISTENING in bytes(proxy.logs(since=started)).decode(errors="replace"):
            return "listening"
        proxy.reload()
        return "starting" if proxy.status in ("created", "running") else "exited"

    try:
        listening = state() == "listening"
    except tenacity.RetryError:
        listening = False
    if not listening:
        raise DeployFailed(
            f"the egress proxy {proxy.name} did not start",
            code=ErrorCode.SANDBOX_ERROR,
            logs=log_tail(proxy, 20),
        )


def proxy_of(client: docker.DockerClient, version: Any) -> Any | None:
    """The proxy of a version's container, if its deploy named an allowlist."""
    if not json.loads(version.labels[PLAN]).get("egress"):
        return None  # no proxy to look for
    found = client.containers.list(
        all=True,
        filters={
            "label": [
                f"{DEPLOYMENT}={version.labels[DEPLOYMENT]}",
                f"{EGRESS_OF}={version.labels[VERSION]}",
            ]
        },
    )
    return found[0] if found else None


def start_version(client: docker.DockerClient, version: Any) -> None:
    """Start a stopped version, its proxy first."""
    proxy = proxy_of(client, version)
    if proxy is not None and proxy.status != "running":
        _start_listening(proxy)
    version.start()


def kill_version(client: docker.DockerClient, version: Any) -> None:
    """Stop a version at once (nothing reaches it any more), and its proxy."""
    version.kill()
    if (proxy := proxy_of(client, version)) is not None:
        with contextlib.suppress(docker.errors.APIError):  # it is not running
            proxy.kill()


def remove_version(client: docker.DockerClient, version: Any) -> None:
    """Remove a version and its proxy."""
    proxy = proxy_of(client, version)
    remove_container(version)
    if proxy is not None:
        remove_container(proxy)
