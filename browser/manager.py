"""The tasks' browsers: Chromium in each task's sandbox, driven from the host by Playwright.

    browsers = Browsers()
    driver = await browsers.for_task(task_id, sandbox)   # started in the sandbox on first use,
                                                         # the same one on every later call
    await browsers.forget(task_id)                       # this runner is done with the task
    await browsers.aclose()

The browser is the sandbox's: its limits and its egress policy apply to every page it loads, and it
lives as long as the container (so a resumed task finds its cookies). Only a sandbox whose network
is "proxy" has a way for the host to reach the browser (see `sandbox/egress.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import posixpath
from urllib.parse import urlsplit

from playwright.async_api import Browser, Playwright, async_playwright
from playwright.async_api import Error as PlaywrightError

from base.errors import ErrorCode, SandboxError
from browser.driver import PageDriver, PageError
from sandbox.container import BROWSER_USER, WORKSPACE, Sandbox
from sandbox.manager import Sandboxes

#: the longest Chromium may take to start in a sandbox (the script gives up after about 20 s)
START_TIMEOUT = 40.0
CONNECT_TIMEOUT_MS = 15_000
#: the header that carries the key of the browser's DevTools relay
KEY_HEADER = "X-Agent-Key"


class Browsers:
    """One Playwright client for the runner, and a connected `PageDriver` per task; with
    `sandboxes`, a pool of warm browsers (started and connected) for new tasks. No I/O until a
    method is awaited."""

    def __init__(self, sandboxes: Sandboxes | None = None) -> None:
        self.sandboxes = sandboxes
        self._playwright: Playwright | None = None
        self._drivers: dict[str, PageDriver] = {}
        #: connected browsers of pooled sandboxes, by container id
        self._warm: dict[str, PageDriver] = {}
        self._refill: asyncio.Future[int] | None = None
        self._lock = asyncio.Lock()

    async def _client(self) -> Playwright:
        if self._playwright is None:
            self._playwright = await async_playwright().start()
        return self._playwright

    async def for_task(self, task_id: str, sandbox: Sandbox) -> PageDriver:
        """The task's browser, started in `sandbox` if it is not running there yet.

        Raises `PageError` (code "no_network") if the sandbox has no network for a browser, and
        `SandboxError` if Chromium cannot be started or reached.
        """
        driver = self._drivers.get(task_id)
        if driver is not None and driver.connected:
            return driver
        if sandbox.devtools is None:
            raise PageError(
                "this task's sandbox has no network, and the browser needs one: run the task "
                "with the hosts it may visit (agent run --allow-domain HOST ...)",
                code=ErrorCode.NO_NETWORK,
            )
        driver = self._warm.pop(sandbox.id, None)
        if driver is None or not driver.connected:
            async with self._lock:
                driver = await self._start(sandbox)
        driver.keep_download = functools.partial(_keep, sandbox)
        self._drivers[task_id] = driver
        self._fill_later()
        return driver

    async def _start(self, sandbox: Sandbox) -> PageDriver:
        browser, restarted = await connect_or_restart(await self._client(), sandbox)
        driver = await PageDriver.attach(browser)
        if restarted is not None:
            driver.tell(
                f"the task's browser did not answer ({restarted}) and was started again: the "
                "pages it had open, its cookies and logins are gone"
            )
        return driver

    async def fill_pool(self) -> int:
        """Start browsers in pooled sandboxes until `browser_pool` wait, connected; return how
        many were started."""
        sandboxes = self.sandboxes
        if sandboxes is None or not sandboxes.config.browser_pool:
            return 0
        # Warm means connected from this process: the pool's other containers (another
        # process's) have a browser running, but are cold here. A warm browser whose sandbox
        # another runner (or a task without a browser) claimed is no longer the pool's: let it
        # go, and count only those still waiting.
        limits = sandboxes.browser_limits()
        waiting = await sandboxes.waiting(limits)
        for container_id in [c for c in self._warm if c not in waiting]:
            await self._warm.pop(container_id).disconnect()
        size, own = sandboxes.config.browser_pool, len(self._warm)

        async def warm_up(sandbox: Sandbox) -> None:
            self._warm[sandbox.id] = await self._start(sandbox)

        fresh = await sandboxes.fill(limits, size, own=own, prepare=warm_up)
        return len(fresh)

    def _fill_later(self) -> None:
        """Start the next task's browser now, while this one works."""
        if self.sandboxes is None or self._refill is not None:
            return
        self._refill = refill = asyncio.ensure_future(self.fill_pool())

        def done(future: asyncio.Future[int]) -> None:
            if self._refill is future:
                self._refill = None
            if not future.cancelled():
                future.exception()  # a failed refill leaves the pool smaller, nothing else

        refill.add_done_callback(done)

    async def settled(self) -> None:
        """Wait for the pool's refill in flight, if any (its failure leaves the pool smaller and
        is not raised)."""
        refill = self._refill
        if refill is not None:
            await asyncio.wait({refill})

    async def forget(self, task_id: str) -> None:
        """Disconnect from the task's browser (it keeps running in its sandbox)."""
        driver = self._drivers.pop(task_id, None)
        if driver is not None:
            await driver.disconnect()

    async def aclose(self) -> None:
        """Wait for the pool's refill, then disconnect from every browser (they keep running in
        their sandboxes: a pooled one is found again, if cold, by a later runner)."""
        refill, self._refill = self._refill, None
        if refill is not None:
            with contextlib.suppress(SandboxError, PlaywrightError):
                await refill
        for task_id in list(self._drivers):
            await self.forget(task_id)
        warm, self._warm = list(self._warm.values()), {}
        for driver in warm:
            await driver.disconnect()
        playwright, self._playwright = self._playwright, None
        if playwright is not None:
            await playwright.stop()


async def connect_or_restart(client: Playwright, sandbox: Sandbox) -> tuple[Browser, str | None]:
    """A new DevTools connection to the sandbox's browser (see `connect`); if the browser does not
    answer, it is started again in the same sandbox, once, and connected to. The connection, and
    why the browser was started again (None if it was not). Raises `SandboxError` if Chromium
    cannot be started, or reached even after the restart."""
    try:
        return await connect(client, sandbox), None
    except BrowserUnreachable as exc:
        why = exc.why
    try:
        return await connect(client, sandbox, restart=True), why
    except BrowserUnreachable as exc:
        raise SandboxError(
            f"cannot reach the task's browser at {sandbox.devtools}, even after starting it "
            f"again: {exc.why}"
        ) from None


class BrowserUnreachable(SandboxError):
    """The sandbox's browser runs but does not answer on its DevTools relay."""

    def __init__(self, devtools: str, why: str) -> None:
        super().__init__(f"cannot reach the task's browser at {devtools}: {why}")
        self.why = why


async def connect(client: Playwright, sandbox: Sandbox, *, restart: bool = False) -> Browser:
    """A new DevTools connection to the sandbox's browser, started there first if it is not
    running (or, with `restart`, started afresh). Raises `SandboxError` if Chromium cannot be
    started, and `BrowserUnreachable` if it cannot be reached."""
    assert sandbox.devtools is not None
    started = await sandbox.exec(
        ["agent-browser", *(["--restart"] if restart else [])],
        timeout=START_TIMEOUT,
        user=BROWSER_USER,
        record=False,
    )
    key = next((line[4:] for line in started.stdout.splitlines() if line.startswith("key ")), "")
    if not started.ok or not key:
        raise SandboxError(
            "the task's browser did not start: "
            + (started.problem or started.stderr.strip() or f"exit {started.exit_code}")
        )
    # The browser's relay in the sandbox (see image/bin/agent-browser), at the address the host
    # knows; it takes a connection that carries its key.
    endpoint = f"ws://{urlsplit(sandbox.devtools).netloc}/devtools/browser"
    try:
        return await client.chromium.connect_over_cdp(
            endpoint, timeout=CONNECT_TIMEOUT_MS, headers={KEY_HEADER: key}
        )
    except PlaywrightError as exc:
        raise BrowserUnreachable(sandbox.devtools, _first_line(str(exc))) from None


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "no answer"


#: copies $1 (the browser's) into the folder $3 as $2, or as $2 with a number added if that name
#: is taken, for the sandbox's user to edit (the folder and the copy are the sandbox group's)
_KEEP = """set -e
mkdir -p -m 2775 "$3"
name=$2 base=${2%.*} ext=${2#"${2%.*}"} i=1
while [ -e "$3/$name" ]; do name="$base-$i$ext"; i=$((i + 1)); done
cp -- "$1" "$3/$name"
chmod 664 "$3/$name"
rm -f -- "$1"
echo "downloads/$name ($(stat -c %s "$3/$name") bytes)"
"""


async def _keep(sandbox: Sandbox, path: str, suggested: str) -> str:
    name = posixpath.basename(suggested.replace("\\", "/")).lstrip(".") or "download"
    moved = await sandbox.exec(
        ["sh", "-c", _KEEP, "keep", path, name, f"{WORKSPACE}/downloads"],
        timeout=30,
        user=BROWSER_USER,
    )
    if not moved.ok:
        raise SandboxError(f"could not keep the download {name}: {moved.stderr.strip()}")
    return moved.stdout.strip()
