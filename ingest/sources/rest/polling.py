"""What the polled REST feeds share: the request and its error translation, and the polling loop.

:class:`PollingSource` is a :class:`~ingest.sources.live.LiveSource` whose session is an HTTP client that asks
for each symbol's recent one-minute bars in turn, every ``poll_interval_s`` seconds, paced by a
:class:`~ingest.sources.live.RateLimiter`. A subclass says what to ask (:meth:`PollingSource.first_request`) and
converts the answer (:meth:`PollingSource.parse`: one page of a symbol's bars in the provider's format -> a frame
in the input contract, the provider's clock and the next page's request); every page waits for the limiter.
The loop keeps only bars that are complete by the provider's clock (``start + interval <= now``) and not yet
emitted, so polls that overlap never emit a bar twice and a bar still being filled is never emitted.

Every poll round yields a batch, empty when nothing new arrived: the empty batch is the heartbeat that tells
the base class the provider answers (a closed market sends no new bars, and that is not a dead feed). While
the rate limiter holds a call back, the loop yields a heartbeat every half ``stale_after_s``.

Errors: a transport failure, a timeout, HTTP 429 or 5xx, or a body that is not JSON is a
:class:`~ingest.sources.live.FeedError` (reconnect with backoff); HTTP 401/403 (bad key, plan without access),
404 (unknown ticker) and other 4xx are :class:`~ingest.sources.live.FatalFeedError`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from abc import abstractmethod
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import numpy as np
import pandas as pd
from pydantic import SecretStr

from ingest.records import NS_PER_MINUTE, NS_PER_SECOND
from ingest.sources.base import RawBatch
from ingest.sources.live import Backoff, FatalFeedError, FeedError, LiveSource, RateLimiter
from ingest.sources.rest.symbols import TickerMap

log = logging.getLogger(__name__)

BAR_COLUMNS = ["timestamp", "symbol", "open", "high", "low", "close", "volume"]
#: Query parameters whose values are secrets: masked in every URL this package logs or puts in an error.
SECRET_PARAMS = ("apikey", "apiKey", "api_key", "token")
_SECRET_IN_URL = re.compile(r"(?i)\b(apikey|api_key|token)=[^&\s\"']+")


def as_secret(api_key: str | SecretStr | None) -> SecretStr | None:
    """An API key as a :class:`~pydantic.SecretStr` (``None`` and the empty string stay ``None``)."""
    if api_key is None or isinstance(api_key, SecretStr):
        return api_key if api_key is None or api_key.get_secret_value() else None
    return SecretStr(api_key) if api_key else None


def mask_url(url: str | httpx.URL) -> str:
    """``url`` with the values of secret query parameters replaced by ``***``.

    Examples
    --------
    >>> mask_url("https://www.alphavantage.co/query?function=X&apikey=abc123")
    'https://www.alphavantage.co/query?function=X&apikey=***'
    """
    return _SECRET_IN_URL.sub(lambda m: f"{m.group(1)}=***", str(url))


class _MaskSecrets(logging.Filter):
    """Masks secret query parameters in the request lines that httpx logs at INFO."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            args = record.args if isinstance(record.args, tuple) else (record.args,)
            record.args = tuple(mask_url(a) if isinstance(a, httpx.URL | str) else a for a in args)
        return True


def mask_httpx_logs() -> None:
    """Install (once) the filter that keeps API keys sent in query strings out of httpx's request log."""
    logger = logging.getLogger("httpx")
    if not any(isinstance(f, _MaskSecrets) for f in logger.filters):
        logger.addFilter(_MaskSecrets())


def header_clock_ns(response: httpx.Response) -> int | None:
    """The provider's clock from the HTTP ``Date`` header, ns since the epoch UTC (``None`` when absent)."""
    value = response.headers.get("date")
    if not value:
        return None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return int(when.timestamp()) * NS_PER_SECOND


async def get_json(
    client: httpx.AsyncClient,
    url: str,
    *,
    provider: str,
    symbol: str,
    params: Mapping[str, str] | None = None,
) -> tuple[Any, httpx.Response]:
    """GET ``url`` and decode its JSON body, translating failures into feed errors.

    Parameters
    ----------
    client : httpx.AsyncClient
        The session's client (its base URL, headers and timeout apply).
    url : str
        Path below the client's base URL, or an absolute URL.
    provider, symbol : str
        Named in error messages.
    params : mapping, optional
        Query parameters.

    Returns
    -------
    body, response
        The decoded JSON and the response (for its headers).

    Raises
    ------
    FeedError
        Transport failure, timeout, HTTP 429 or 5xx, or a body that is not JSON.
    FatalFeedError
        HTTP 401/403 (credentials or plan), 404 (unknown ticker) and other 4xx.
    """
    try:
        response = await client.get(url, params=params)
    except httpx.TimeoutException as exc:
        raise FeedError(f"{provider}: symbol={symbol!r}: request timed out ({type(exc).__name__})") from exc
    except httpx.TransportError as exc:
        raise FeedError(f"{provider}: symbol={symbol!r}: transport error {type(exc).__name__}: {exc}") from exc
    where = mask_url(response.request.url.copy_with(query=None))
    status = response.status_code
    if status == 429 or status >= 500:
        raise FeedError(f"{provider}: symbol={symbol!r}: HTTP status={status} from {where}: {_excerpt(response)}")
    if status in (401, 403):
        raise FatalFeedError(
            f"{provider}: HTTP status={status} (credentials or plan refused) from {where}: {_excerpt(response)}"
        )
    if status >= 400:
        raise FatalFeedError(f"{provider}: symbol={symbol!r}: HTTP status={status} from {where}: {_excerpt(response)}")
    try:
        return response.json(), response
    except ValueError as exc:
        raise FeedError(f"{provider}: symbol={symbol!r}: body is not JSON: {_excerpt(response)}") from exc


def _excerpt(response: httpx.Response, limit: int = 200) -> str:
    text = mask_url(response.text.strip().replace("\n", " "))
    return repr(text if len(text) <= limit else text[:limit] + "...")


def bars_frame(
    ts_ns: np.ndarray[Any, Any],
    symbol: str,
    columns: Mapping[str, np.ndarray[Any, Any]],
) -> pd.DataFrame:
    """A bar frame in the input contract: ``timestamp`` (UTC) and ``symbol`` then the given columns."""
    frame = pd.DataFrame({k: np.asarray(v, dtype=np.float64) for k, v in columns.items()})
    frame.insert(0, "symbol", symbol)
    frame.insert(0, "timestamp", pd.to_datetime(np.asarray(ts_ns, dtype=np.int64), unit="ns", utc=True))
    return frame


@dataclass(frozen=True)
class Request:
    """One GET: a path below the base URL (or an absolute URL) and its query parameters."""

    url: str
    params: dict[str, str] | None = None


@dataclass(frozen=True)
class Fetched:
    """One symbol's answer: bars in the input contract (possibly incomplete ones) and the provider's clock.

    ``now_ns`` is the provider's now in ns UTC, or ``None`` when the response did not tell it (the source's
    clock is used then).
    """

    bars: pd.DataFrame
    now_ns: int | None


class PollingSource(LiveSource):
    """A polled REST feed of one-minute bars: fetch each symbol in turn, emit bars complete and new.

    Parameters
    ----------
    name : str
        Name of the feed.
    tickers : TickerMap
        Project symbols and their provider tickers.
    base_url : str
        Root of the provider's API (a local server in tests).
    limiter : RateLimiter
        Paces the calls; one call per symbol per round (plus pages).
    poll_interval_s : float
        Pause between rounds, seconds; below ``stale_after_s``.
    quota_wait_s : float or None
        When the limiter asks for a longer wait than this, a long window (a daily quota) is used up: raise
        :class:`FatalFeedError` instead of waiting. ``None`` always waits.
    timeout_s : float
        HTTP timeout per request, seconds.
    headers : mapping, optional
        Sent with every request.
    clock : callable returning int
        Now in ns UTC, used when a response carries no clock.
    stale_after_s, backoff, max_failures, sleep
        As in :class:`~ingest.sources.live.LiveSource`.
    """

    bar_interval_ns = NS_PER_MINUTE
    #: How long an emitted bar is remembered for de-duplication: 8 days, past Yahoo's longest 1-minute range.
    DEDUPE_HORIZON_NS = 8 * 86_400 * NS_PER_SECOND

    def __init__(
        self,
        name: str,
        tickers: TickerMap,
        base_url: str,
        limiter: RateLimiter,
        poll_interval_s: float,
        quota_wait_s: float | None = None,
        timeout_s: float = 10.0,
        headers: Mapping[str, str] | None = None,
        clock: Callable[[], int] = time.time_ns,
        stale_after_s: float = 60.0,
        backoff: Backoff | None = None,
        max_failures: int | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        super().__init__(name, stale_after_s=stale_after_s, backoff=backoff, max_failures=max_failures, sleep=sleep)
        if not 0 < poll_interval_s < stale_after_s:
            raise ValueError(
                f"poll_interval_s={poll_interval_s!r}: must be > 0 and below stale_after_s={stale_after_s!r}"
            )
        if not timeout_s > 0:
            raise ValueError(f"timeout_s={timeout_s!r}: must be > 0")
        self.tickers = tickers
        self.base_url = base_url.rstrip("/")
        self.limiter = limiter
        self.poll_interval_s = poll_interval_s
        self.quota_wait_s = quota_wait_s
        self.timeout_s = timeout_s
        self.headers = dict(headers or {})
        self.clock = clock
        self.calls = 0
        # per symbol: bar starts already emitted that the provider may still send back
        self._emitted: dict[str, set[int]] = {s: set() for s in tickers.symbols}

    @property
    def symbols(self) -> list[str]:
        """The project symbols polled."""
        return self.tickers.symbols

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, symbols={self.symbols!r}, base_url={self.base_url!r})"

    @abstractmethod
    def first_request(self, symbol: str) -> Request:
        """The first request of a round for ``symbol``."""

    @abstractmethod
    def parse(self, symbol: str, body: Any, response: httpx.Response) -> tuple[Fetched, Request | None]:
        """Convert one answer to bars in the input contract (``timestamp`` UTC = bar start) and the provider's
        clock; also return the request of the next page, or ``None`` when the answer is complete."""

    async def call(self) -> AsyncGenerator[RawBatch, None]:
        """Wait for the rate limiter, yielding heartbeats while waiting; record the call.

        Raises
        ------
        FatalFeedError
            When the wait exceeds ``quota_wait_s`` (a daily quota is used up).
        """
        while (wait := self.limiter.wait_time()) > 0:
            if self.quota_wait_s is not None and wait > self.quota_wait_s:
                limits = ", ".join(f"{c} calls per {p:g} s" for c, p in self.limiter.limits)
                raise FatalFeedError(
                    f"{self.name}: call quota used up ({limits}): the next call fits in {wait:.0f} s, "
                    f"longer than quota_wait_s={self.quota_wait_s!r}"
                )
            yield RawBatch()
            await self._sleep(min(wait, self.stale_after_s / 2))
        await self.limiter.acquire()
        self.calls += 1

    async def session(self) -> AsyncGenerator[RawBatch, None]:
        """Poll round after round on one HTTP client until an error ends the session."""
        async with httpx.AsyncClient(base_url=self.base_url, headers=self.headers, timeout=self.timeout_s) as client:
            while True:
                fresh: list[pd.DataFrame] = []
                for symbol in self.symbols:
                    request: Request | None = self.first_request(symbol)
                    while request is not None:
                        async for heartbeat in self.call():
                            yield self._batch(fresh) if fresh else heartbeat
                            fresh = []
                        body, response = await get_json(
                            client, request.url, provider=self.name, symbol=symbol, params=request.params
                        )
                        fetched, request = self.parse(symbol, body, response)
                        new = self.new_complete_bars(symbol, fetched)
                        if len(new):
                            fresh.append(new)
                yield self._batch(fresh)
                await self._sleep(self.poll_interval_s)

    def new_complete_bars(self, symbol: str, fetched: Fetched) -> pd.DataFrame:
        """The bars of ``fetched`` that are complete by the provider's clock and not emitted before.

        Marks them emitted and forgets emitted bars more than :attr:`DEDUPE_HORIZON_NS` older than the newest
        bar of this response (further back than any range a poll asks for).
        """
        bars = fetched.bars
        emitted = self._emitted.setdefault(symbol, set())
        if not len(bars):
            return bars
        now = fetched.now_ns if fetched.now_ns is not None else self.clock()
        start = bars["timestamp"].to_numpy(dtype="datetime64[ns]").astype(np.int64)
        complete = start + self.bar_interval_ns <= now
        new = complete & ~np.isin(start, np.fromiter(emitted, dtype=np.int64, count=len(emitted)))
        horizon = int(start.max()) - self.DEDUPE_HORIZON_NS
        kept = {t for t in emitted if t >= horizon}
        kept.update(int(t) for t in start[new])
        self._emitted[symbol] = kept
        out = bars.loc[new]
        return out.sort_values("timestamp", kind="stable").reset_index(drop=True)

    def _batch(self, frames: list[pd.DataFrame]) -> RawBatch:
        if not frames:
            return RawBatch()
        return RawBatch(bars=pd.concat(frames, ignore_index=True), bar_interval_ns=self.bar_interval_ns)
