"""Whether the process that holds a lease is still alive, on this host (a pid is reused: the
process's start time tells it apart)."""

from __future__ import annotations

import os
import socket
from pathlib import Path


def process_start(pid: int) -> str:
    """When the process started (so a reused pid is not mistaken for the old process).

    "" if it cannot be known, or if the process has exited and only its zombie is left (a runner
    killed with -9 stays a zombie until its parent reaps it, but it holds nothing any more).
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    fields = stat.rsplit(")", 1)[1].split()
    return "" if fields[0] in ("Z", "X") else fields[19]


def alive(host: str, pid: int, started: str) -> bool:
    if host != socket.gethostname():
        return True  # a process elsewhere cannot be checked: assume it is alive
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return process_start(pid) == started
