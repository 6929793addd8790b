"""The requests a task's pages have in flight, for waiting until the network is quiet (a page
that loads its content after it has loaded). Told of every request of every tab by `Tabs`."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from playwright.async_api import Page, Request

#: how long no request may start or be in flight for the network to count as quiet
QUIET_SECONDS = 0.5


@dataclass
class Traffic:
    inflight: set[Request] = field(default_factory=set)
    #: set whenever a request starts or ends
    _moved: asyncio.Event = field(default_factory=asyncio.Event)

    def watch(self, page: Page) -> None:
        page.on("request", self._start)
        page.on("requestfinished", self._end)
        page.on("requestfailed", self._end)

    def _start(self, request: Request) -> None:
        self.inflight.add(request)
        self._moved.set()

    def _end(self, request: Request) -> None:
        self.inflight.discard(request)
        self._moved.set()

    async def quiet(self, seconds: float, still: float = QUIET_SECONDS) -> bool:
        """Wait until no request is in flight and none starts for `still` seconds; False if that
        did not happen within `seconds`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while True:
            self._moved.clear()
            left = deadline - loop.time()
            if left <= 0:
                return False
            idle = not self.inflight
            try:
                await asyncio.wait_for(self._moved.wait(), min(still, left) if idle else left)
            except TimeoutError:
                # Idle all along for `still`: quiet. Otherwise the time is up.
                return idle and left >= still
