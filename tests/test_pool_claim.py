"""Claiming a pooled sandbox, against a real Docker engine: of many claimers at once exactly one
gets the container, under either claim lock, and a missing lock file is a clear error."""

from __future__ import annotations

import secrets
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import docker
import pytest

from base.errors import SandboxError
from sandbox._claim import claim, host_lock, host_lock_applies
from sandbox.egress import teardown
from sandbox.limits import SandboxConfig, SandboxLimits
from sandbox.manager import Sandboxes

LIMITS = SandboxLimits(memory_mb=128, pids=32, workspace_mb=16, tmp_mb=8, cpus=0.5)
CLAIMERS = 8


@pytest.fixture
def client() -> docker.DockerClient:
    return docker.from_env()


@pytest.fixture
async def pooled(client: docker.DockerClient) -> AsyncIterator[tuple[str, str]]:
    """A pooled sandbox of a scope of its own: (its id, its pool name)."""
    sandboxes = Sandboxes(SandboxConfig(pool_size=0, limits=LIMITS), scope=secrets.token_hex(4))
    [sandbox] = await sandboxes.fill(LIMITS, 1, own=0)
    yield sandbox.id, sandbox.name
    await sandboxes.aclose()
    container = client.containers.get(sandbox.id)
    teardown(client, str(container.name))


def race(claimers: int, one: Callable[[int], bool]) -> list[int]:
    """Run `one(i)` for each claimer at once; the claimers for which it returned True."""
    start = threading.Barrier(claimers)
    won: list[int] = []

    def go(i: int) -> None:
        start.wait()
        if one(i):
            won.append(i)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(claimers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return won


@pytest.mark.parametrize("host", [True, False], ids=["host file lock", "daemon pause"])
def test_of_claimers_racing_for_a_pooled_sandbox_exactly_one_gets_it(
    client: docker.DockerClient, pooled: tuple[str, str], host: bool
) -> None:
    container_id, pool_name = pooled
    won = race(
        CLAIMERS, lambda i: claim(client, container_id, pool_name, f"{pool_name}-t{i}", host=host)
    )
    assert len(won) == 1, won
    container = client.containers.get(container_id)
    assert container.name == f"{pool_name}-t{won[0]}"
    assert container.status == "running"  # not left paused by the claim
    # A claim that comes after finds nothing.
    assert not claim(client, container_id, pool_name, f"{pool_name}-late", host=host)


def test_a_rename_alone_would_hand_one_container_to_several(
    client: docker.DockerClient, pooled: tuple[str, str]
) -> None:
    # The positive control: without the lock, racing renames of one container all succeed, so
    # the test above could have seen more than one winner.
    container_id, pool_name = pooled

    def rename(i: int) -> bool:
        client.api.rename(container_id, f"{pool_name}-r{i}")
        return True

    assert len(race(CLAIMERS, rename)) == CLAIMERS


def test_this_host_claims_with_its_file_lock() -> None:
    assert host_lock_applies(docker.from_env())  # the tests run on the daemon's own host


def test_a_claim_lock_that_cannot_be_opened_says_how_to_fix_it(tmp_path: Path) -> None:
    missing = tmp_path / "no such folder" / "claim.lock"
    with (
        pytest.raises(SandboxError, match="cannot open the pool's claim lock") as caught,
        host_lock(missing),
    ):
        pass
    assert "AGENT_CLAIM_LOCK" in str(caught.value)
