"""The one retry layer for HTTP model backends.

A backend maps its transport's failures to `BackendError` once, at its boundary; this layer then
decides on `retryable` and `retry_after` alone, never on the message text. Backends wrap a single
request in `RetryPolicy.run`, so every provider retries the same way.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)
from tenacity.wait import wait_base

from base.errors import BackendError, ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a backend retries a request that failed retryably.

    `attempts` counts the first try. Between attempts the wait is the server's `retry_after`
    when the error carries one, otherwise exponential backoff from `base_delay` plus up to
    `base_delay` of jitter; either way it never exceeds `max_delay` (plus that jitter).
    """

    attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 60.0
    #: told of each retry before its wait: the error, the attempt about to be made, the wait
    on_retry: Callable[[BackendError, int, float], None] | None = None

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ConfigError(f"retry attempts must be at least 1, got {self.attempts}")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ConfigError(
                f"retry delays must not be negative, got base_delay={self.base_delay}, "
                f"max_delay={self.max_delay}"
            )

    async def run(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Await `fn()` until it succeeds, retrying only `BackendError`s marked `retryable`.

        Raises the last `BackendError` once `attempts` are used up, a non-retryable
        `BackendError` at once, and any other exception unchanged and untried again.
        """
        retrying = AsyncRetrying(
            retry=retry_if_exception(_is_retryable),
            stop=stop_after_attempt(self.attempts),
            wait=_WaitForServerOrBackoff(self),
            # Callers key on BackendError.code; tenacity's RetryError would hide it.
            reraise=True,
            before_sleep=self._tell if self.on_retry is not None else None,
        )

        # tenacity decides sync or async by inspecting the function, so a lambda returning a
        # coroutine would come back unawaited; an `async def` wrapper is always recognised.
        async def attempt() -> T:
            return await fn()

        return await retrying(attempt)

    def _tell(self, retry_state: RetryCallState) -> None:
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None else None
        wait = retry_state.next_action.sleep if retry_state.next_action is not None else 0.0
        if self.on_retry is not None and isinstance(error, BackendError):
            self.on_retry(error, retry_state.attempt_number + 1, wait)


def _is_retryable(error: BaseException) -> bool:
    return isinstance(error, BackendError) and error.retryable


class _WaitForServerOrBackoff(wait_base):
    """Wait what the server asked for, if it asked; otherwise back off exponentially."""

    def __init__(self, policy: RetryPolicy) -> None:
        self._max_delay = policy.max_delay
        self._backoff = wait_exponential(
            multiplier=policy.base_delay, max=policy.max_delay
        ) + wait_random(0, policy.base_delay)

    def __call__(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None else None
        if isinstance(error, BackendError) and error.retry_after is not None:
            return min(max(error.retry_after, 0.0), self._max_delay)
        return float(self._backoff(retry_state))


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait according to a `Retry-After` header, or None if absent or unreadable.

    The header is either a number of seconds or an HTTP date; a date in the past means 0.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; a naive result means the zone was absent
        when = when.replace(tzinfo=UTC)
    return max((when - (now or datetime.now(UTC))).total_seconds(), 0.0)
