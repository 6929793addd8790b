"""What a command ran into, said plainly: a limit of its sandbox (memory, processes, disk) or its
timeout. Which limit it was, the container's counters tell; the command's words only hint."""

from __future__ import annotations

from sandbox.limits import SandboxLimits

#: how shells and Python say that a fork was refused; only a hint, the counters decide
FORK_REFUSED = ("Resource temporarily unavailable", "Cannot fork", "can't fork")
#: prints the container's count of OOM kills and refused forks (cgroup v1 or v2)
COUNTERS = (
    "cat /sys/fs/cgroup/memory/memory.oom_control /sys/fs/cgroup/memory.events "
    "/sys/fs/cgroup/pids/pids.events /sys/fs/cgroup/pids.events 2>/dev/null; true"
)


def parse_counters(printed: str) -> dict[str, int]:
    """The counts of OOM kills and refused forks in what `COUNTERS` printed."""
    found: dict[str, int] = {}
    for line in printed.splitlines():
        name, _, value = line.partition(" ")
        if name in ("oom_kill", "max") and value.strip().isdigit():
            found[name] = int(value)
    return found


def limit_counted(
    before: dict[str, int], after: dict[str, int], limits: SandboxLimits
) -> str | None:
    """Which of the memory and process limits the counters went up for, if any."""
    if after.get("oom_kill", 0) > before.get("oom_kill", 0):
        return out_of_memory(limits)
    if after.get("max", 0) > before.get("max", 0):
        return process_limit(limits)
    return None


def out_of_memory(limits: SandboxLimits) -> str:
    return f"out of memory: the process was killed at the {limits.memory_mb} MiB limit"


def process_limit(limits: SandboxLimits) -> str:
    return (
        f"process limit: the command tried to run more than {limits.pids} processes "
        "and threads at once (a fork bomb?); new ones were refused"
    )


def disk_full(limits: SandboxLimits) -> str:
    return (
        f"disk full: no space left on the device (/workspace holds {limits.workspace_mb} "
        f"MiB, /tmp {limits.tmp_mb} MiB)"
    )


def past_timeout(problem: str | None, limit: float) -> str:
    """What a command killed at its `limit` (in seconds) ran into: `problem`, if any, and the
    timeout."""
    if problem is None:
        return f"timed out after {limit:g} s; the command and every process it started were killed"
    return f"{problem}; it was still running at the {limit:g} s timeout and was killed"
