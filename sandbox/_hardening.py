"""The settings that make a container a sandbox. Every container the project starts gets them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from docker.types import DriverConfig, Mount

from sandbox._docker import LABEL
from sandbox.container import CONTROL, USER, WORKSPACE
from sandbox.limits import HOME_MB, SandboxLimits


def hardened(
    limits: SandboxLimits, owner: Mapping[str, str], *, network: str = "none"
) -> dict[str, Any]:
    """The container settings every sandbox gets (`containers.run` keyword arguments), its
    volumes labelled with `owner` (see `owner_labels`); the container's labels are the caller's
    to give."""
    memory = f"{limits.memory_mb}m"
    return {
        "init": True,  # Docker's init as PID 1 reaps orphans
        "user": USER,
        "read_only": True,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],  # and the default seccomp profile
        "privileged": False,
        "network_mode": network,
        "ipc_mode": "private",
        "pids_limit": limits.pids,
        "mem_limit": memory,
        "memswap_limit": memory,  # swap equal to memory: no swapping past the limit
        "nano_cpus": int(limits.cpus * 1e9),
        "tmpfs": {
            "/tmp": f"size={limits.tmp_mb}m,mode=1777,nosuid,nodev",
            "/home/sandbox": f"size={HOME_MB}m,uid=1000,gid=1000,mode=0700,nosuid,nodev",
        },
        "mounts": [
            _tmpfs_volume(WORKSPACE, limits.workspace_mb, owner),
            _tmpfs_volume(CONTROL, 1, owner),
        ],
        "hostname": "sandbox",
    }


def _tmpfs_volume(target: str, size_mb: int, owner: Mapping[str, str]) -> Mount:
    # An anonymous volume, removed with its container; the archive API (files in and out) can
    # reach a volume where it cannot reach a tmpfs mount. Sized, so a disk filler stops at it.
    options = {"type": "tmpfs", "device": "tmpfs", "o": f"size={size_mb}m,uid=1000,gid=1000"}
    return Mount(
        target=target,
        source=None,
        type="volume",
        driver_config=DriverConfig("local", options),
        labels={**owner, LABEL: "1"},
    )
