"""Yahoo Finance: one-minute bars of equities, ETFs, FX, crypto and futures, polled from the chart endpoint.

``GET {base_url}/v8/finance/chart/{ticker}?interval=1m&range=1d`` answers::

    {"chart": {"result": [{"meta": {"symbol": "SPY", "regularMarketTime": 1704229200, ...},
                           "timestamp": [1704205800, ...],
                           "indicators": {"quote": [{"open": [...], "high": [...], "low": [...],
                                                     "close": [...], "volume": [...]}]}}],
               "error": null}}

Timestamps are bar starts in seconds since the epoch (UTC). Rows where any of open, high, low, close or
volume is null (minutes without a trade, or not yet filled) are skipped, never turned into zeros. A bar is
complete when its start plus one minute is at or before ``regularMarketTime`` (the time of the newest price
the provider has folded in; the HTTP ``Date`` header, then the local clock, when it is absent); the last row
of a live response, Yahoo's running minute, is therefore held back until a later price passes its end.

This adapter speaks the HTTP endpoint itself with httpx rather than through the ``yfinance`` package:
``yfinance`` hard-codes Yahoo's hosts, so it cannot be pointed at a local server for tests, and it adds a
cookie/crumb dance and a pandas reshaping that the chart endpoint does not need. Yahoo publishes no terms
for this endpoint and no rate limit; the default limiter (60 calls a minute, 2,000 an hour) is a courtesy
that keeps a poller well clear of the throttling (HTTP 429) that heavier clients report.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import httpx
import numpy as np
import pandas as pd

from ingest.records import NS_PER_SECOND
from ingest.sources.live import Backoff, FatalFeedError, FeedError, RateLimiter
from ingest.sources.rest.polling import BAR_COLUMNS, Fetched, PollingSource, Request, bars_frame, header_clock_ns
from ingest.sources.rest.symbols import TickerMap, yahoo_ticker

YAHOO_BASE_URL = "https://query1.finance.yahoo.com"
#: Yahoo turns away requests without a browser-like user agent.
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36"
_OHLCV = ("open", "high", "low", "close", "volume")


def parse_chart(body: Any, symbol: str, ticker: str) -> Fetched:
    """Convert one chart response to bars in the input contract and the provider's clock.

    Parameters
    ----------
    body : object
        The decoded JSON of ``/v8/finance/chart/{ticker}``.
    symbol, ticker : str
        The project symbol written on the rows, and the Yahoo ticker asked for (for messages).

    Returns
    -------
    Fetched
        Bars with nulls skipped (``timestamp`` = bar start, UTC), and ``regularMarketTime`` in ns or ``None``.

    Raises
    ------
    FatalFeedError
        When Yahoo answers with an error (an unknown ticker).
    FeedError
        When the body does not have the chart shape.

    Examples
    --------
    >>> body = {"chart": {"result": [{"meta": {"regularMarketTime": 120},
    ...         "timestamp": [0, 60], "indicators": {"quote": [{"open": [1.0, None], "high": [1.0, 2.0],
    ...         "low": [1.0, 2.0], "close": [1.0, 2.0], "volume": [10, 5]}]}}], "error": None}}
    >>> parse_chart(body, "SPY", "SPY").bars[["symbol", "close"]].values.tolist()
    [['SPY', 1.0]]
    """
    chart = body.get("chart") if isinstance(body, dict) else None
    if not isinstance(chart, dict):
        raise FeedError(f"yahoo: symbol={symbol!r}: response has no 'chart' object: {str(body)[:200]!r}")
    error = chart.get("error")
    if error:
        detail = f"{error.get('code')}: {error.get('description')}" if isinstance(error, dict) else str(error)
        raise FatalFeedError(f"yahoo: symbol={symbol!r} (ticker {ticker!r}): {detail}")
    results = chart.get("result")
    if not isinstance(results, list) or not results or not isinstance(results[0], dict):
        raise FeedError(f"yahoo: symbol={symbol!r}: chart.result={results!r}: expected a list with one result")
    result = results[0]
    meta = result.get("meta") or {}
    market_time = meta.get("regularMarketTime")
    now_ns = int(market_time) * NS_PER_SECOND if isinstance(market_time, int | float) else None
    stamps = result.get("timestamp") or []
    if not stamps:
        return Fetched(pd.DataFrame(columns=BAR_COLUMNS), now_ns)
    try:
        quote = result["indicators"]["quote"][0]
    except (KeyError, IndexError, TypeError) as exc:
        raise FeedError(f"yahoo: symbol={symbol!r}: indicators.quote[0] is missing") from exc
    n = len(stamps)
    columns: dict[str, np.ndarray[Any, Any]] = {}
    for name in _OHLCV:
        values = quote.get(name)
        if values is None:
            values = [None] * n
        if len(values) != n:
            raise FeedError(
                f"yahoo: symbol={symbol!r}: indicators.quote[0].{name} has {len(values)} values for {n} timestamps"
            )
        columns[name] = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    ts = np.asarray(stamps, dtype=np.int64) * NS_PER_SECOND
    whole = np.all([~np.isnan(columns[c]) for c in _OHLCV], axis=0)
    frame = bars_frame(ts[whole], symbol, {c: v[whole] for c, v in columns.items()})
    return Fetched(frame, now_ns)


class YahooBars(PollingSource):
    """Polls Yahoo Finance's chart endpoint for one-minute bars of every symbol.

    Parameters
    ----------
    symbols : iterable of str
        Project symbols (``AAPL``, ``BTC-USD``, ``EURUSD``, ``GLD``); see :mod:`ingest.sources.rest.symbols`.
    base_url : str
        Root of the API, ``https://query1.finance.yahoo.com`` by default.
    poll_interval_s : float
        Pause between rounds, seconds.
    range_ : str
        How far back each poll reaches (Yahoo's ``range``: ``1d`` covers the current session).
    tickers : mapping, optional
        Overrides ``{project symbol: Yahoo ticker}``.
    limiter : RateLimiter, optional
        Call pacing; 60 a minute and 2,000 an hour by default.
    stale_after_s, backoff, max_failures, sleep, clock, timeout_s
        As in :class:`~ingest.sources.rest.polling.PollingSource`.

    Examples
    --------
    >>> YahooBars(["AAPL", "EURUSD"])
    YahooBars(name='yahoo', symbols=['AAPL', 'EURUSD'], base_url='https://query1.finance.yahoo.com')
    """

    def __init__(
        self,
        symbols: Iterable[str],
        base_url: str = YAHOO_BASE_URL,
        poll_interval_s: float = 15.0,
        range_: str = "1d",
        tickers: Mapping[str, str] | None = None,
        limiter: RateLimiter | None = None,
        stale_after_s: float = 60.0,
        backoff: Backoff | None = None,
        max_failures: int | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], int] = time.time_ns,
        timeout_s: float = 10.0,
        name: str = "yahoo",
    ) -> None:
        super().__init__(
            name,
            TickerMap.build(symbols, yahoo_ticker, tickers),
            base_url,
            limiter or RateLimiter([(60, 60.0), (2000, 3600.0)]),
            poll_interval_s,
            quota_wait_s=None,
            timeout_s=timeout_s,
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            clock=clock,
            stale_after_s=stale_after_s,
            backoff=backoff,
            max_failures=max_failures,
            sleep=sleep,
        )
        self.range = range_

    def first_request(self, symbol: str) -> Request:
        """The chart of the current range."""
        return Request(
            f"/v8/finance/chart/{self.tickers.ticker(symbol)}",
            {"interval": "1m", "range": self.range, "includePrePost": "false"},
        )

    def parse(self, symbol: str, body: Any, response: httpx.Response) -> tuple[Fetched, Request | None]:
        """Bars of one chart answer; ``regularMarketTime`` (else the ``Date`` header) is the provider's clock."""
        fetched = parse_chart(body, symbol, self.tickers.ticker(symbol))
        if fetched.now_ns is None:
            fetched = Fetched(fetched.bars, header_clock_ns(response))
        return fetched, None
