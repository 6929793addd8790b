"""Native code (llama.cpp) run in a child process, so that a crash fails one test, not the run."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from typing import Any

import pytest


def run_native(code: str, *args: str, timeout: float = 300) -> Any:
    """Run `code` (Python) in a fresh interpreter with `args` as `sys.argv[1:]`; return the JSON
    of the last line it prints. A child that dies (a segfault in native code, say) fails the
    calling test, naming the signal and the end of what it wrote to stderr."""
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        how = (
            f"died of {signal.Signals(-done.returncode).name}"
            if done.returncode < 0
            else f"exited with status {done.returncode}"
        )
        pytest.fail(f"the native code's process {how}: {done.stderr[-1500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
