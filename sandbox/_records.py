"""What agent-exec (image/bin/agent-exec) leaves of each command: a record in the sandbox that a
runner started after a crash reads back, and a line on stderr when a limit was hit."""

from __future__ import annotations

import hashlib
import re

#: the line agent-exec adds to a command's stderr when a limit was hit while it ran
LIMITS_SAID = re.compile(r"\x1eagent-exec limits pids=(\d+) oom=(\d+)\n?")


def limits_said(stderr: str) -> tuple[str, tuple[int, int] | None]:
    """A command's stderr without agent-exec's line, and what that line said: how many forks
    were refused and how many processes the OOM killer took while it ran (None if no line)."""
    found = None
    for match in LIMITS_SAID.finditer(stderr):
        found = (int(match[1]), int(match[2]))
    return LIMITS_SAID.sub("", stderr), found


def tag(key: str) -> str:
    """The part of a command's token that names the call it runs for."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


#: reads the last record of a tag (see image/bin/agent-exec), waiting for a command still running
#: until its deadline; prints it as JSON
READ_RECORD = r"""
import glob, json, os, select, sys, time
runs, tag = "/tmp/.agent-runs", sys.argv[1]
def read(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return None
if not os.path.isdir(runs):
    print(json.dumps({"state": "unknown"}))
    sys.exit()
found = sorted(glob.glob(f"{runs}/*-{tag}.pid"))
if not found:
    print(json.dumps({"state": "not_started"}))
    sys.exit()
record = found[-1][: -len(".pid")]
token = os.path.basename(record)
pid, deadline = (read(f"{record}.pid") or "0 0").split()
def running():
    env = read(f"/proc/{pid}/environ") or ""
    return read(f"{record}.status") is None and f"AGENT_EXEC={token}" in env.split("\0")
if running():
    try:
        fd = os.pidfd_open(int(pid))
        select.select([fd], [], [], max(0.0, float(deadline) - time.time()))
    except OSError:
        pass
def carriers():
    mark = f"AGENT_EXEC={token}"
    return [p for p in os.listdir("/proc")
            if p.isdigit() and mark in (read(f"/proc/{p}/environ") or "").split("\0")]
if not running():
    # What it printed last may still be on its way to the record (through tee).
    waited = time.time() + 2
    while carriers() and time.time() < waited:
        time.sleep(0.05)
status = read(f"{record}.status")
started = int(token.split("-")[0]) / 1e9
print(json.dumps({
    "state": "running" if running() else "ended",
    "token": token,
    "status": int(status) if status and status.strip().isdigit() else None,
    "stdout": read(f"{record}.stdout") or "",
    "stderr": read(f"{record}.stderr") or "",
    "seconds": max(0.0, time.time() - started) if status is None else
        max(0.0, os.stat(f"{record}.status").st_mtime - started),
}))
"""
