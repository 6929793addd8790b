"""Serve MiniWoB++ task pages (from PyPI's `miniwob`) over loopback HTTP, and drive episodes.

A task page loaded plainly in a browser shows a black "START" cover (`#sync-task-cover`,
made by `core.startEpisode()` on window.onload); no task exists until
`core.startEpisodeReal()` runs `genProblem()`. The gymnasium env never clicks the cover: on
reset it runs `core.endEpisode(0)` (a no-op unless an episode is running),
`Math.seedrandom(seed)`, `core.setDataMode("train")` and `core.startEpisodeReal()`, then
polls `WOB_TASK_READY`. START_EPISODE_JS does the same, and also lengthens
`core.EPISODE_MAX_TIME` (default 10 s in core.js, 7-30 s per task), which is read when the
episode starts. The reward is scaled by elapsed / EPISODE_MAX_TIME, so a long limit keeps
`reward` close to `raw_reward`.

Usage with Playwright::

    with serve_miniwob() as base:
        await page.goto(task_url(base, "login-user"))
        await page.wait_for_function(PAGE_READY_JS)
        await page.evaluate(START_EPISODE_JS, start_args(seed=1))
        utterance = await page.evaluate(UTTERANCE_JS)
        ...  # act on the page
        state = await page.evaluate(EPISODE_STATE_JS)  # {"reward", "raw_reward", "done", ...}

Each constant is a JS arrow function, so `page.evaluate(fn, arg)` calls it; `js_call` renders
`(fn)(arg)` as one expression for drivers that only evaluate expressions.
"""

from __future__ import annotations

import importlib.util
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypedDict

# One hour, in ms: far above any task's own limit (setTimeout allows up to 2**31 - 1).
LONG_EPISODE_MS = 3_600_000

# True once core.js has loaded and window.onload has run core.startEpisode(), which makes the
# cover div that core.startEpisodeReal() hides. Use with page.wait_for_function.
PAGE_READY_JS = "() => typeof core !== 'undefined' && core.cover_div !== null"

# Start a seeded episode, as the gymnasium env's reset does. Argument: see start_args().
# Math.seedrandom(x) replaces Math.random; the number 1 and the string "1" give different
# streams, so pass an int to get the instance that `gym.make(...).reset(seed=1)` gets.
# Returns WOB_TASK_READY (always true for the miniwob/*.html tasks; only flight tasks set it).
START_EPISODE_JS = """({seed, maxTimeMs, dataMode}) => {
  core.endEpisode(0);
  Math.seedrandom(seed);
  core.setDataMode(dataMode);
  core.EPISODE_MAX_TIME = maxTimeMs;
  core.startEpisodeReal();
  return WOB_TASK_READY;
}"""

# The instruction: core.getUtterance() is #query's text with whitespace collapsed; a few
# tasks (email-inbox-*-nl*) override it to return {utterance, fields}.
UTTERANCE_JS = """() => {
  const u = core.getUtterance();
  return typeof u === 'string' ? u : u.utterance;
}"""

# The globals core.endEpisode(reward, timeProportional, reason) sets. Before the episode
# ends: done false, rewards 0. raw_reward is the task's verdict (1 = solved; -1 = wrong;
# some tasks give fractions); reward is raw_reward scaled down by elapsed time when the task
# asks for that (usually only when raw_reward > 0). A timeout gives -1 with reason
# "timed out". After the end the START cover is shown again: clicking it starts an unseeded
# episode and zeroes these globals.
EPISODE_STATE_JS = """() => ({
  reward: WOB_REWARD_GLOBAL,
  raw_reward: WOB_RAW_REWARD_GLOBAL,
  done: WOB_DONE_GLOBAL,
  reason: WOB_REWARD_REASON === undefined ? null : WOB_REWARD_REASON,
  episode_id: WOB_EPISODE_ID,
})"""


class StartArgs(TypedDict):
    """The argument START_EPISODE_JS takes."""

    seed: int | str
    maxTimeMs: int
    dataMode: str


class EpisodeState(TypedDict):
    """What EPISODE_STATE_JS returns."""

    reward: float
    raw_reward: float
    done: bool
    reason: Any
    episode_id: int


def start_args(
    seed: int | str, max_time_ms: int = LONG_EPISODE_MS, data_mode: str = "train"
) -> StartArgs:
    """The argument for START_EPISODE_JS; data_mode "train" is the gymnasium env's default."""
    return {"seed": seed, "maxTimeMs": max_time_ms, "dataMode": data_mode}


def js_call(fn: str, arg: object = None) -> str:
    """One JS expression that calls `fn` (one of the constants) with JSON-encoded `arg`."""
    return f"({fn})({json.dumps(arg)})"


def html_dir() -> Path:
    """The installed miniwob package's html/ directory (found without importing miniwob)."""
    spec = importlib.util.find_spec("miniwob")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the miniwob package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "html"


def task_url(base_url: str, task: str) -> str:
    """URL of a task page, e.g. task_url(base, "login-user") -> base + "miniwob/login-user.html".

    Pages load ../core/*.js and ../common/*.js, so they need the whole html/ tree served.
    """
    return f"{base_url}miniwob/{task}.html"


class _QuietHandler(SimpleHTTPRequestHandler):
    """Serves files without logging every request to stderr."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def serve_miniwob(root: Path | None = None) -> Iterator[str]:
    """Serve `root` (default: html_dir()) on 127.0.0.1 at an ephemeral port in a thread.

    Yields the base URL, "http://127.0.0.1:<port>/"; stops the server on exit.
    """
    handler = partial(_QuietHandler, directory=str(root or html_dir()))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="miniwob-http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
