"""Fork bombs, many times over: each ends as a plain error with a note, and the sandbox goes on.

    .venv/bin/python -m tests.soak_bombs [--runs 20]

For each of the two shapes of bomb (a shell one whose children outlive it, a Python one), `--runs`
times on an idle machine and as many on a loaded one (another sandbox running a Python fork bomb
meanwhile): the command must not pause the task (no `SandboxError`), must carry a note saying
what happened (the process limit, or the timeout), and the next command in the same sandbox must
run. Prints one line per case and a summary; exits 1 if any run failed. Too long for the test
suite (about 6 minutes for 20 runs), it is run by hand and its figures quoted where they matter.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import sys
import time

from base.errors import SandboxError
from sandbox.container import Sandbox
from sandbox.limits import SandboxConfig, SandboxLimits
from sandbox.manager import Sandboxes

from .test_sandbox import PYTHON_BOMB, SHELL_BOMB

SHAPES = {"shell": SHELL_BOMB, "python": PYTHON_BOMB}


async def _one(sandboxes: Sandboxes, task: str, bomb: str) -> str | None:
    """Run one bomb then a plain command; None if all went as it should, else what did not."""
    box = await sandboxes.for_task(task, SandboxLimits())
    try:
        result = await box.exec(bomb, timeout=3)
    except SandboxError as exc:
        return f"paused: {exc}"
    if not result.problem:
        return f"no note (exit {result.exit_code}, stderr {result.stderr[-200:]!r})"
    try:
        after = await box.exec("echo next-ok", timeout=30)
    except SandboxError as exc:
        return f"the next command paused: {exc}"
    if (after.exit_code, after.stdout) != (0, "next-ok\n"):
        return f"the next command failed: {after}"
    return None


async def _keep_loaded(load: Sandbox) -> None:
    """Another sandbox running Python fork bombs, one after another: the load."""
    while True:
        with contextlib.suppress(SandboxError):
            await load.exec(PYTHON_BOMB, timeout=3)


async def main(runs: int) -> int:
    sandboxes = Sandboxes(SandboxConfig(pool_size=0), scope=f"soak-{secrets.token_hex(3)}")
    failures = 0
    try:
        for loaded in (False, True):
            loading = None
            if loaded:
                load = await sandboxes.for_task("load", SandboxLimits())
                loading = asyncio.ensure_future(_keep_loaded(load))
            try:
                for shape, bomb in SHAPES.items():
                    for run in range(runs):
                        started = time.monotonic()
                        wrong = await _one(sandboxes, f"{shape}-{loaded}-{run}", bomb)
                        await sandboxes.release(f"{shape}-{loaded}-{run}")
                        failures += wrong is not None
                        print(
                            f"{'loaded' if loaded else 'idle':6} {shape:6} run {run + 1:2}: "
                            f"{wrong or 'ok'} ({time.monotonic() - started:.1f} s)",
                            flush=True,
                        )
            finally:
                if loading is not None:
                    loading.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await loading
    finally:
        await sandboxes.reap(lambda _task: True)
        await sandboxes.aclose()
    total = 2 * len(SHAPES) * runs
    print(
        f"bombs: {total - failures} of {total} ended as a plain error with a note, and the "
        "next command ran"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="runs of each shape, each way")
    sys.exit(asyncio.run(main(parser.parse_args().runs)))
