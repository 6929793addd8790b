"""An event loop of the process's own, in a thread, for connections that outlive the loop of
whoever opened them (an MCP server's session, and the process or container behind it): a
command's loop ends with its command, and a connection's clean-up must not run in a loop that is
shutting down. What is open is closed, in order, when the process exits."""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
#: how long the process waits, as it exits, for what is open to close
CLOSING_SECONDS = 10.0


class Background:
    """The loop, started on first use."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._closers: list[Callable[[], Awaitable[None]]] = []

    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="background", daemon=True).start()
                self._loop = loop
                atexit.register(self._close_all)
            return self._loop

    async def run(self, work: Coroutine[Any, Any, T]) -> T:
        """`work`'s result, run in the background loop, awaited from any other loop (cancelling
        this cancels the work)."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(work, self.loop()))

    def wait(self, work: Coroutine[Any, Any, T], timeout: float) -> T:
        """`work`'s result, for a caller outside any loop. Raises `TimeoutError` after `timeout`
        seconds (the work is cancelled)."""
        future = asyncio.run_coroutine_threadsafe(work, self.loop())
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"no answer in {timeout:g} s") from None

    def on_exit(self, closer: Callable[[], Awaitable[None]]) -> None:
        """Have `closer` run in the background loop when the process exits."""
        self._closers.append(closer)

    def _close_all(self) -> None:
        if self._loop is None or not self._closers:
            return

        async def everything() -> None:
            await asyncio.gather(*(closer() for closer in self._closers), return_exceptions=True)

        future = asyncio.run_coroutine_threadsafe(everything(), self._loop)
        try:
            future.result(CLOSING_SECONDS)
        except (concurrent.futures.TimeoutError, RuntimeError):
            future.cancel()


BACKGROUND = Background()
