"""Claiming a pooled sandbox: of runners racing for one container, exactly one gets it.

A claim is a rename of the container from its pool name to the task's, and a rename is no lock:
the daemon lets two renames of one container through. So claims take a lock first, one of two:

- **A file lock on this host** (`flock` on one file in the temporary folder, or the one
  $AGENT_CLAIM_LOCK names), when the daemon is reached through a local socket and is a process
  this one can see: a runner and its daemon on one machine. Runners that share a daemon this way
  must share the file (a service with a private /tmp sets $AGENT_CLAIM_LOCK). It costs
  microseconds, and goes with its holder if that dies.
- **The daemon's pause** otherwise (a remote daemon, or a runner in a container that was handed
  the daemon's socket): the daemon pauses a container under its own lock and refuses to pause a
  paused one. It costs two runc calls, about 45 ms with a browser running.

Under either lock the container is renamed by its pool name, not its id: if another runner took
it since the listing, that name is gone and the rename fails, so the claim moves on to the next.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors

from base.errors import SandboxError
from sandbox._docker import mapped

#: the host's claim lock, in the temporary folder (override: $AGENT_CLAIM_LOCK)
LOCK_NAME = "agent-pool-claim.lock"
#: docker-py's base URL for a daemon reached through a local socket
LOCAL_SOCKET = "http+docker://localhost"
#: what SO_PEERCRED gives: the peer's pid, uid and gid
PEER_CREDENTIALS = struct.Struct("3i")


def lock_path() -> Path:
    return Path(os.environ.get("AGENT_CLAIM_LOCK") or Path(tempfile.gettempdir()) / LOCK_NAME)


def host_lock_applies(client: docker.DockerClient) -> bool:
    """Whether the daemon runs beside this process: reached through a local socket, its process
    is one this process can see (the kernel names the peer of a socket by its pid in the
    reader's namespace, and by 0 when it is not in it)."""
    adapter = getattr(client.api, "_custom_adapter", None)
    path = getattr(adapter, "socket_path", None)
    if str(client.api.base_url) != LOCAL_SOCKET or not isinstance(path, str):
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as peer:
            peer.settimeout(5.0)
            peer.connect(path)
            credentials = peer.getsockopt(
                socket.SOL_SOCKET, socket.SO_PEERCRED, PEER_CREDENTIALS.size
            )
    except OSError:
        return False
    pid: int = PEER_CREDENTIALS.unpack(credentials)[0]
    return pid > 0


@contextlib.contextmanager
def host_lock(path: Path) -> Iterator[None]:
    """Hold the host's claim lock (waiting for it). Anyone may take it: the file is made
    readable by all, and a read-only descriptor is enough for `flock`."""
    flags = os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as exc:
        raise SandboxError(
            f"cannot open the pool's claim lock {path}: {exc.strerror}",
            fix=f"chmod a+r {path}, or set AGENT_CLAIM_LOCK to a file every runner can read",
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def claim(
    client: docker.DockerClient, container_id: str, pool_name: str, name: str, *, host: bool
) -> bool:
    """Rename the pooled container `pool_name` (id `container_id`) to `name` under the claim
    lock (`host`: this host's file lock, else the daemon's pause); False if another runner has
    it, or it is gone."""
    if host:
        with host_lock(lock_path()):
            return _rename(client, pool_name, name)
    try:
        client.api.pause(pool_name)  # by name: a container claimed since the listing is not hit
    except docker.errors.APIError:
        return False  # another runner is claiming it or has claimed it, or it stopped
    try:
        return _rename(client, pool_name, name)
    finally:
        with mapped(f"claiming a pooled sandbox for {name}"):
            client.api.unpause(container_id)


def _rename(client: docker.DockerClient, pool_name: str, name: str) -> bool:
    with mapped(f"claiming a pooled sandbox for {name}"):
        try:
            client.api.rename(pool_name, name)
        except docker.errors.NotFound:
            return False  # claimed by another runner since the listing, or removed
    return True
