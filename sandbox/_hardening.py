"""The settings that make a container a sandbox. Every container the project starts gets them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from docker.types import DriverConfig, Mount

from sandbox._docker import LABEL
from sandbox.container import CONTROL, WORKSPACE
from sandbox.deploy import ServiceLimits
from sandbox.limits import HOME_MB, SandboxLimits

#: what agent-init (root in the container) may do to end a command of the sandbox's user: signal
#: it, and read its environment (to find the processes of one command). Commands, which run as
#: that user, get none of them (no-new-privileges, and no file capabilities in the image).
REAPER_CAPABILITIES = ("KILL", "SYS_PTRACE", "DAC_READ_SEARCH")


def hardened(
    limits: SandboxLimits,
    owner: Mapping[str, str],
    *,
    network: str = "none",
    user: str = "0:0",
    capabilities: tuple[str, ...] = REAPER_CAPABILITIES,
) -> dict[str, Any]:
    """The container settings every sandbox gets (`containers.run` keyword arguments), its
    volumes labelled with `owner` (see `owner_labels`); the container's labels are the caller's
    to give. `user` runs the container's own processes (a sandbox's PID 1 and agent-init run as
    root, with only `capabilities`; commands arrive with `docker exec` as the sandbox's user)."""
    memory = f"{limits.memory_mb}m"
    return {
        "init": True,  # Docker's init as PID 1 reaps orphans
        "user": user,
        "read_only": True,
        "cap_drop": ["ALL"],
        "cap_add": list(capabilities),
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
            # the sandbox's, and its group's (the browser keeps its downloads there)
            _tmpfs_volume(WORKSPACE, limits.workspace_mb, owner, mode="0775"),
            _tmpfs_volume(CONTROL, 1, owner, uid=0, mode="0755"),
        ],
        "hostname": "sandbox",
    }


def service_hardened(limits: ServiceLimits) -> dict[str, Any]:
    """What every deployment container gets: the sandbox's hardening, with no capability at all
    and an unprivileged user for every process in it."""
    memory = f"{limits.memory_mb}m"
    return {
        "init": True,
        "user": "1000:1000",
        "read_only": True,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
        "privileged": False,
        "ipc_mode": "private",
        "pids_limit": limits.pids,
        "mem_limit": memory,
        "memswap_limit": memory,
        "nano_cpus": int(limits.cpus * 1e9),
        "tmpfs": {"/tmp": "size=64m,mode=1777,nosuid,nodev"},
    }


def _tmpfs_volume(
    target: str, size_mb: int, owner: Mapping[str, str], *, uid: int = 1000, mode: str
) -> Mount:
    # An anonymous volume, removed with its container; the archive API (files in and out) can
    # reach a volume where it cannot reach a tmpfs mount. Sized, so a disk filler stops at it.
    # The control folder is root's (only agent-init reads it; only the runtime writes it).
    options = {
        "type": "tmpfs",
        "device": "tmpfs",
        "o": f"size={size_mb}m,uid={uid},gid={uid},mode={mode}",
    }
    return Mount(
        target=target,
        source=None,
        type="volume",
        driver_config=DriverConfig("local", options),
        labels={**owner, LABEL: "1"},
    )
