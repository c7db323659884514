"""What every live feed shares: reconnection with backoff and jitter, stale-feed detection, rate limits.

A live adapter subclasses :class:`LiveSource` and implements :meth:`LiveSource.session`, one connection's life
(connect, subscribe, then yield :class:`~ingest.sources.base.RawBatch` es converted from the venue's own format at
the boundary). :meth:`LiveSource.batches` runs sessions forever: when one ends or fails, it waits per
:class:`Backoff` and reconnects; when no message arrives for ``stale_after_s`` the session is treated as dead
(a silent socket is the most common failure of a market-data connection) and restarted. Clocks and sleeps are
injectable, so the policies are tested without waiting.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from ingest.sources.base import RawBatch

log = logging.getLogger(__name__)
T = TypeVar("T")


class FeedError(RuntimeError):
    """A live feed failed in a way a reconnect may cure (dropped connection, bad handshake, server error)."""


class StaleFeedError(FeedError):
    """No message for longer than the feed's stale limit."""


class FatalFeedError(RuntimeError):
    """A failure a reconnect cannot cure (bad API key, unknown symbol, exhausted daily quota)."""


@dataclass
class Backoff:
    """Exponential backoff with full jitter: the n-th wait is uniform in ``[0, min(cap, base * 2**n)]``.

    Parameters
    ----------
    base_s, cap_s : float
        First ceiling and largest ceiling of the wait, seconds.
    rng : random.Random
        Source of jitter (seed it in tests).
    """

    base_s: float = 0.5
    cap_s: float = 30.0
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.base_s <= self.cap_s:
            raise ValueError(f"base_s={self.base_s!r}, cap_s={self.cap_s!r}: need 0 < base_s <= cap_s")

    def next_delay(self) -> float:
        """The wait before the next attempt, seconds; advances the attempt counter."""
        ceiling = min(self.cap_s, self.base_s * (2.0**self.attempt))
        self.attempt += 1
        return self.rng.uniform(0.0, ceiling)

    def reset(self) -> None:
        """After a healthy session: start again from the first ceiling."""
        self.attempt = 0


class RateLimiter:
    """Sliding-window limits, e.g. 5 calls a minute and 500 a day: :meth:`acquire` waits until a call fits.

    Parameters
    ----------
    limits : sequence of (calls, period_s)
        Every limit must hold at every moment.
    clock, sleep : callables
        Monotonic time in seconds and an async sleep (injectable for tests).
    """

    def __init__(
        self,
        limits: Sequence[tuple[int, float]],
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        for calls, period in limits:
            if calls < 1 or period <= 0:
                raise ValueError(f"limit=({calls!r}, {period!r}): need calls >= 1 and period > 0")
        self.limits = [(int(c), float(p)) for c, p in limits]
        self._clock, self._sleep = clock, sleep
        self._calls: deque[float] = deque()
        self._longest = max((p for _, p in self.limits), default=0.0)

    def wait_time(self) -> float:
        """Seconds until one more call fits every limit (0 when it fits now)."""
        now = self._clock()
        while self._calls and self._calls[0] <= now - self._longest:
            self._calls.popleft()
        wait = 0.0
        for calls, period in self.limits:
            recent = [t for t in self._calls if t > now - period]
            if len(recent) >= calls:
                wait = max(wait, recent[-calls] + period - now)
        return wait

    async def acquire(self) -> None:
        """Wait until a call fits, then record it."""
        while (wait := self.wait_time()) > 0:
            await self._sleep(wait)
        self._calls.append(self._clock())


async def with_stale_limit(items: AsyncIterator[T], stale_after_s: float) -> AsyncGenerator[T, None]:
    """Pass ``items`` through, raising :class:`StaleFeedError` when the next one takes over ``stale_after_s``."""
    while True:
        try:
            item = await asyncio.wait_for(anext(items), timeout=stale_after_s)
        except StopAsyncIteration:
            return
        except TimeoutError as exc:
            raise StaleFeedError(f"no message for {stale_after_s:.1f} s") from exc
        yield item


class LiveSource(ABC):
    """A live market-data feed: sessions run forever, reconnecting with backoff and dropping stale ones.

    Parameters
    ----------
    name : str
        Shown in progress and written to quarantined rows.
    stale_after_s : float
        A session with no message for this long is restarted.
    backoff : Backoff
        Waits between sessions.
    max_failures : int or None
        Give up (raise) after this many consecutive failed sessions; ``None`` never gives up.
    """

    def __init__(
        self,
        name: str,
        stale_after_s: float = 30.0,
        backoff: Backoff | None = None,
        max_failures: int | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if stale_after_s <= 0:
            raise ValueError(f"stale_after_s={stale_after_s!r}: must be > 0")
        self.name = name
        self.stale_after_s = stale_after_s
        self.backoff = backoff or Backoff()
        self.max_failures = max_failures
        self._sleep = sleep
        self.sessions = 0
        self.failures = 0

    @abstractmethod
    def session(self) -> AsyncIterator[RawBatch]:
        """One connection's life: connect, subscribe, yield batches until the connection ends."""

    async def batches(self) -> AsyncGenerator[RawBatch, None]:
        """Batches from session after session, until cancelled or a fatal error."""
        consecutive = 0
        while True:
            self.sessions += 1
            received = False
            try:
                async for batch in with_stale_limit(aiter(self.session()), self.stale_after_s):
                    if not received:
                        received = True
                        self.backoff.reset()
                        consecutive = 0
                    yield batch
                log.info("%s: session ended by the server; reconnecting", self.name)
            except FatalFeedError:
                raise
            except (FeedError, OSError) as exc:
                self.failures += 1
                consecutive += 1
                log.warning("%s: session failed (%s); reconnecting", self.name, exc)
                if self.max_failures is not None and consecutive >= self.max_failures:
                    raise FeedError(f"{self.name}: {consecutive} sessions failed in a row; last: {exc}") from exc
            await self._sleep(self.backoff.next_delay())
