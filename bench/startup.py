"""How fast `agent` starts: `agent --help`, and `agent` alone in a terminal until its prompt is on
the screen, each against a bare interpreter start (`python -c pass`) measured in the same run.

Each is the installed `agent` command (the console script a user runs), started ROUNDS times in
turn with the reference, nothing else of ours running; the medians are compared. The prompt is
timed in a pseudo-terminal from the fork to the moment "agent> " is read from it. The goal the
issue sets: the prompt ready within 5x a bare interpreter start.
"""

from __future__ import annotations

import os
import pty
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _goals import Goals, machine

ROUNDS = 15
AGENT = str(Path(sys.executable).with_name("agent"))


def _bare() -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return time.perf_counter() - started


def _help() -> float:
    started = time.perf_counter()
    subprocess.run([AGENT, "--help"], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def _prompt(home: str) -> float:
    """From the fork to "agent> " on the terminal; the session is then ended (Ctrl-D)."""
    started = time.perf_counter()
    pid, fd = pty.fork()
    if pid == 0:
        os.environ.update({"AGENT_HOME": home, "TERM": "xterm", "PROMPT_TOOLKIT_NO_CPR": "1"})
        os.execv(AGENT, [AGENT])
    seen = b""
    took = 0.0
    deadline = started + 30
    while b"agent> " not in seen:
        assert time.perf_counter() < deadline, f"no prompt: {seen[-300:]!r}"
        if select.select([fd], [], [], 1)[0]:
            seen += os.read(fd, 4096)
    took = time.perf_counter() - started
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    os.close(fd)
    return took


def main() -> None:
    print(machine())
    bare: list[float] = []
    helped: list[float] = []
    prompted: list[float] = []
    with tempfile.TemporaryDirectory() as home:
        _prompt(home)  # the first run writes the store and warms the file cache
        for _ in range(ROUNDS):
            bare.append(_bare())
            helped.append(_help())
            prompted.append(_prompt(home))
    reference = statistics.median(bare)
    help_time = statistics.median(helped)
    prompt_time = statistics.median(prompted)
    print(f"python -c pass: median {reference * 1000:.0f} ms over {ROUNDS}")
    print(f"agent --help: median {help_time * 1000:.0f} ms")
    print(f"agent, to its prompt in a terminal: median {prompt_time * 1000:.0f} ms")
    print(f"for context: agent --help vs python -c pass: {help_time / reference:.1f}x")
    goals = Goals()
    print(goals.add("prompt_ready_vs_python", prompt_time / reference, "<= 5.0x"))
    goals.finish()


if __name__ == "__main__":
    main()
