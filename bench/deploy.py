"""What a deploy costs through the runtime, against doing the same by hand.

First deploy: `DockerTarget.deploy` of a small Python web app (a folder with `app.py`, built FROM
the runtime image, run hardened, health-checked, then serving behind its front), timed until it
returns serving. The reference does the same work with the docker SDK by hand: the same build
context and Dockerfile, the same hardened `containers.run` with the port published on loopback,
then polling the health URL from the host (every 25 ms, as the runtime does) until it answers
200. Each round gives both a source with a new line in it, so that neither build is a cache hit.

Unchanged redeploy: the same folder deployed again (a build that hits the cache, and nothing to
change), against that round's first deploy. Rollback: after a second version serves, back to the
first, against that round's first deploy.

Ours and the reference alternate which goes first from round to round; the results are medians
of the per-round ratios, after a warm-up round that is not counted. Everything created is
removed at the end of each round, on error too. Needs Docker and the image.
"""

from __future__ import annotations

import asyncio
import io
import secrets
import statistics
import sys
import time

import docker
import httpx
from _goals import Goals, machine

from sandbox._hardening import service_hardened
from sandbox._recipes import context, digest, recipe
from sandbox.deploy import ServiceLimits, Spec
from sandbox.deploy_docker import DockerTarget

ROUNDS = 7
#: rounds run first and not counted (the engine's caches warm up)
WARMUP = 1
IMAGE = "agent-sandbox:latest"
APP = """\
import os
from http.server import BaseHTTPRequestHandler, HTTPServer

MARK = "{mark}"


class Hello(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(MARK.encode())


if __name__ == "__main__":
    HTTPServer(("0.0.0.0", int(os.environ["PORT"])), Hello).serve_forever()
"""


def folder(mark: str) -> dict[str, bytes]:
    return {"app.py": APP.format(mark=mark).encode()}


async def spec_of(target: DockerTarget, name: str, files: dict[str, bytes]) -> tuple[Spec, bytes]:
    _, base = await target.base_image()
    found = recipe(files, base)
    return Spec(name, found, digest(files), "app"), context(files, found.dockerfile)


def by_hand(client: docker.DockerClient, built: bytes, tag: str) -> tuple[float, str]:
    """Build, run and poll by hand; the seconds it took and the container's id."""
    started = time.perf_counter()
    image, _ = client.images.build(
        fileobj=io.BytesIO(built), custom_context=True, tag=tag, rm=True, network_mode="none"
    )
    settings = {**service_hardened(ServiceLimits()), "ports": {"8000/tcp": ("127.0.0.1", None)}}
    container = client.containers.run(
        str(image.id), detach=True, environment={"PORT": "8000"}, **settings
    )
    container.reload()
    port = container.attrs["NetworkSettings"]["Ports"]["8000/tcp"][0]["HostPort"]
    with httpx.Client() as http:
        while True:
            try:
                if http.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.025)  # as often as the runtime checks
    return time.perf_counter() - started, str(container.id)


async def one_round(
    target: DockerTarget, client: docker.DockerClient, name: str, ours_first: bool
) -> tuple[float, float, float, float]:
    """A first deploy, the same by hand, an unchanged redeploy and a rollback: their seconds."""
    spec, built = await spec_of(target, name, folder(secrets.token_hex(8)))
    _, reference_context = await spec_of(target, name, folder(secrets.token_hex(8)))
    tag = f"agent-bench/{name}:by-hand"
    first = hand = 0.0
    for who in ("ours", "hand") if ours_first else ("hand", "ours"):
        if who == "ours":
            started = time.perf_counter()
            await target.deploy(spec, built, f"{name}-1")
            first = time.perf_counter() - started
        else:
            hand, container = await asyncio.to_thread(by_hand, client, reference_context, tag)
            client.containers.get(container).remove(force=True)
            client.images.remove(tag, force=True)
    started = time.perf_counter()
    again = await target.deploy(spec, built, f"{name}-again")
    redeploy = time.perf_counter() - started
    assert again.number == 1
    second, second_context = await spec_of(target, name, folder(secrets.token_hex(8)))
    await target.deploy(second, second_context, f"{name}-2")
    started = time.perf_counter()
    back = await target.rollback(name)
    rollback = time.perf_counter() - started
    assert back.number == 1
    return first, hand, redeploy, rollback


async def main() -> None:
    print(machine())
    client = docker.from_env()
    target = DockerTarget(IMAGE)
    firsts: list[float] = []
    hands: list[float] = []
    ratios: dict[str, list[float]] = {"first": [], "redeploy": [], "rollback": []}
    for round_ in range(-WARMUP, ROUNDS):
        name = f"bench-{secrets.token_hex(3)}"
        try:
            first, hand, redeploy, rollback = await one_round(target, client, name, round_ % 2 == 0)
        finally:
            await target.remove(name)  # nothing of this round runs on into the next
        if round_ < 0:
            continue
        firsts.append(first)
        hands.append(hand)
        ratios["first"].append(first / hand)
        ratios["redeploy"].append(redeploy / first)
        ratios["rollback"].append(rollback / first)
        print(
            f"round {round_ + 1}: first deploy {first * 1000:.0f} ms, by hand "
            f"{hand * 1000:.0f} ms, unchanged redeploy {redeploy * 1000:.0f} ms, rollback "
            f"{rollback * 1000:.0f} ms"
        )
    print(
        f"for context: median first deploy {statistics.median(firsts) * 1000:.0f} ms, "
        f"by hand {statistics.median(hands) * 1000:.0f} ms"
    )
    goals = Goals()
    print(goals.add("first_deploy_vs_by_hand", statistics.median(ratios["first"]), "<= 1.2x"))
    print(
        goals.add("unchanged_redeploy_vs_first", statistics.median(ratios["redeploy"]), "<= 0.3x")
    )
    print(goals.add("rollback_vs_first", statistics.median(ratios["rollback"]), "<= 0.1x"))
    goals.finish()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
