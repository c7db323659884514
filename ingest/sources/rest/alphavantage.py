"""Alpha Vantage: one-minute bars of equities (``TIME_SERIES_INTRADAY``), FX (``FX_INTRADAY``) and crypto
(``CRYPTO_INTRADAY``), polled within the free tier's call limits.

``GET {base_url}/query?function=TIME_SERIES_INTRADAY&symbol=IBM&interval=1min&outputsize=compact&apikey=KEY``
answers::

    {"Meta Data": {"2. Symbol": "IBM", "3. Last Refreshed": "2024-01-02 16:00:00", "4. Interval": "1min",
                   "6. Time Zone": "US/Eastern", ...},
     "Time Series (1min)": {"2024-01-02 16:00:00": {"1. open": "161.5", "2. high": "161.6",
                                                    "3. low": "161.4", "4. close": "161.5",
                                                    "5. volume": "2125"}, ...}}

FX answers under ``"Time Series FX (1min)"`` without volume (FX has no consolidated volume: the rows get a
volume of 0), crypto under ``"Time Series Crypto (1min)"``; both name their zone in a meta key ending in
``Time Zone`` (UTC for them, US/Eastern for equities). Timestamps are local times of that zone, converted here
to UTC with the zone's daylight-saving rules; a wall time that the zone skips or repeats (the hour of a
clock change) cannot be placed and its row is skipped. A timestamp labels the bar's start.

Limits: the free tier allowed 5 calls a minute and 500 a day (Alpha Vantage has since lowered the free daily
allowance; pass ``calls_per_day`` for your plan). Both windows are enforced by one
:class:`~ingest.sources.live.RateLimiter`; when the daily one would hold the next call back longer than a
minute, the quota is used up and the source raises :class:`~ingest.sources.live.FatalFeedError`.

Answers without data: ``"Note"`` or ``"Information"`` (the throttle messages) are a
:class:`~ingest.sources.live.FeedError` (back off and retry), except the ones that a retry cannot cure, which
are fatal: a message about the daily allowance alone, a premium-only endpoint, or an invalid or demo API key.
``"Error Message"`` (an unknown symbol, an invalid call) is a :class:`~ingest.sources.live.FatalFeedError`
naming the symbol.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import httpx
import numpy as np
import pandas as pd
from pydantic import SecretStr

from ingest.sources.live import Backoff, FatalFeedError, FeedError, RateLimiter
from ingest.sources.rest.polling import (
    BAR_COLUMNS,
    Fetched,
    PollingSource,
    Request,
    as_secret,
    bars_frame,
    header_clock_ns,
    mask_httpx_logs,
)
from ingest.sources.rest.symbols import AssetClass, TickerMap, asset_class, split_pair

ALPHA_VANTAGE_BASE_URL = "https://www.alphavantage.co"
_FIELDS = {"open": "1. open", "high": "2. high", "low": "3. low", "close": "4. close", "volume": "5. volume"}
_DAILY_ONLY = re.compile(r"per day", re.IGNORECASE)
_SHORT_WINDOW = re.compile(r"per (minute|second)|spreading out|sparingly", re.IGNORECASE)
_INCURABLE = re.compile(r"premium endpoint|api ?key is invalid|invalid api ?key|demo api key", re.IGNORECASE)


def request_params(symbol: str, ticker: str) -> dict[str, str]:
    """Query parameters of the intraday call for a symbol (the API key is added by the source).

    ``ticker`` is the Alpha Vantage name: an equity ticker, or the pair (``EURUSD``, ``BTC-USD``) whose
    currencies become ``from_symbol/to_symbol`` (FX) or ``symbol/market`` (crypto).

    Examples
    --------
    >>> request_params("EURUSD", "EURUSD")["function"], request_params("BTC-USD", "BTC-USD")["market"]
    ('FX_INTRADAY', 'USD')
    """
    common = {"interval": "1min", "outputsize": "compact", "datatype": "json"}
    cls = asset_class(ticker)
    if cls is AssetClass.FX:
        base, quote = split_pair(ticker)
        return {"function": "FX_INTRADAY", "from_symbol": base, "to_symbol": quote, **common}
    if cls is AssetClass.CRYPTO:
        base, quote = split_pair(ticker)
        return {"function": "CRYPTO_INTRADAY", "symbol": base, "market": quote, **common}
    return {"function": "TIME_SERIES_INTRADAY", "symbol": ticker, **common}


def check_notices(body: Any, symbol: str) -> None:
    """Raise for an answer that carries a message instead of data.

    Raises
    ------
    FatalFeedError
        ``"Error Message"``; or a ``"Note"``/``"Information"`` that a retry cannot cure.
    FeedError
        Any other ``"Note"``/``"Information"`` (throttling).
    """
    if not isinstance(body, dict):
        raise FeedError(f"alphavantage: symbol={symbol!r}: response is not a JSON object: {str(body)[:200]!r}")
    if "Error Message" in body:
        raise FatalFeedError(f"alphavantage: symbol={symbol!r}: Error Message={body['Error Message']!r}")
    for key in ("Note", "Information"):
        if key in body:
            text = str(body[key])
            daily = bool(_DAILY_ONLY.search(text)) and not _SHORT_WINDOW.search(text)
            if daily or _INCURABLE.search(text):
                raise FatalFeedError(f"alphavantage: symbol={symbol!r}: {key}={text!r}")
            raise FeedError(f"alphavantage: symbol={symbol!r}: throttled: {key}={text!r}")


def parse_intraday(body: Any, symbol: str) -> pd.DataFrame:
    """Convert an intraday answer (stock, FX or crypto) to bars in the input contract, timestamps in UTC.

    Parameters
    ----------
    body : object
        The decoded JSON answer.
    symbol : str
        The project symbol written on the rows.

    Raises
    ------
    FeedError
        When the answer lacks ``Meta Data``, its time zone, or a ``Time Series`` object, or a value is not
        a number.

    Examples
    --------
    >>> body = {"Meta Data": {"6. Time Zone": "US/Eastern"}, "Time Series (1min)": {
    ...     "2024-07-01 09:30:00": {"1. open": "1", "2. high": "2", "3. low": "1", "4. close": "2",
    ...                             "5. volume": "100"}}}
    >>> str(parse_intraday(body, "IBM")["timestamp"][0])
    '2024-07-01 13:30:00+00:00'
    """
    check_notices(body, symbol)
    meta = body.get("Meta Data")
    if not isinstance(meta, dict):
        raise FeedError(f"alphavantage: symbol={symbol!r}: 'Meta Data' is missing: keys={sorted(body)!r}")
    zone = next((v for k, v in meta.items() if k.endswith("Time Zone")), None)
    if not isinstance(zone, str) or not zone:
        raise FeedError(f"alphavantage: symbol={symbol!r}: Meta Data has no time zone: {meta!r}")
    series_key = next((k for k in body if k.startswith("Time Series")), None)
    series = body.get(series_key) if series_key else None
    if not isinstance(series, dict):
        raise FeedError(f"alphavantage: symbol={symbol!r}: no 'Time Series' object: keys={sorted(body)!r}")
    if not series:
        return pd.DataFrame(columns=BAR_COLUMNS)
    stamps = list(series)
    try:
        local = pd.DatetimeIndex(pd.to_datetime(stamps, format="%Y-%m-%d %H:%M:%S"))
        utc = local.tz_localize(zone, ambiguous="NaT", nonexistent="NaT").tz_convert("UTC")
    except (ValueError, KeyError) as exc:
        raise FeedError(f"alphavantage: symbol={symbol!r}: timestamps in zone {zone!r} do not parse: {exc}") from exc
    columns: dict[str, np.ndarray[Any, Any]] = {}
    for name, key in _FIELDS.items():
        raw = [row.get(key, "0" if name == "volume" else None) for row in series.values()]
        try:
            columns[name] = np.array([np.nan if v is None else float(v) for v in raw], dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise FeedError(f"alphavantage: symbol={symbol!r}: field {key!r} is not a number: {exc}") from exc
    placed = ~np.asarray(utc.isna(), dtype=bool)
    ts = utc.asi8[placed]
    frame = bars_frame(ts, symbol, {k: v[placed] for k, v in columns.items()})
    return frame.sort_values("timestamp", kind="stable").reset_index(drop=True)


class AlphaVantageBars(PollingSource):
    """Polls Alpha Vantage's intraday series for one-minute bars, within the call quotas.

    Parameters
    ----------
    symbols : iterable of str
        Project symbols: equities, FX pairs (``EURUSD``) and crypto pairs (``BTC-USD``).
    api_key : str or SecretStr
        The Alpha Vantage key (settings ``alpha_vantage_api_key``); never logged or shown in a repr.
    base_url : str
        Root of the API, ``https://www.alphavantage.co`` by default.
    calls_per_minute, calls_per_day : int
        The plan's limits (free tier: 5 and 500).
    poll_interval_s : float
        Pause between rounds, seconds.
    tickers : mapping, optional
        Overrides ``{project symbol: Alpha Vantage ticker}``.
    limiter : RateLimiter, optional
        Replaces the limiter built from the two limits (inject one with a test clock).
    stale_after_s, backoff, max_failures, sleep, clock, timeout_s
        As in :class:`~ingest.sources.rest.polling.PollingSource`.
    """

    def __init__(
        self,
        symbols: Iterable[str],
        api_key: str | SecretStr,
        base_url: str = ALPHA_VANTAGE_BASE_URL,
        calls_per_minute: int = 5,
        calls_per_day: int = 500,
        poll_interval_s: float = 60.0,
        tickers: Mapping[str, str] | None = None,
        limiter: RateLimiter | None = None,
        stale_after_s: float = 150.0,
        backoff: Backoff | None = None,
        max_failures: int | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], int] = time.time_ns,
        timeout_s: float = 15.0,
        name: str = "alphavantage",
    ) -> None:
        key = as_secret(api_key)
        if key is None:
            raise ValueError("api_key=None: Alpha Vantage needs an API key (setting alpha_vantage_api_key)")
        limiter = limiter or RateLimiter([(calls_per_minute, 60.0), (calls_per_day, 86_400.0)])
        super().__init__(
            name,
            TickerMap.build(symbols, lambda s: s, tickers),
            base_url,
            limiter,
            poll_interval_s,
            # the per-minute window never asks for more than a minute: a longer wait is the daily quota
            quota_wait_s=min(p for _, p in limiter.limits),
            timeout_s=timeout_s,
            headers={"Accept": "application/json"},
            clock=clock,
            stale_after_s=stale_after_s,
            backoff=backoff,
            max_failures=max_failures,
            sleep=sleep,
        )
        self._api_key = key

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, api_key={self._api_key!r})"

    def first_request(self, symbol: str) -> Request:
        """The compact intraday series of the symbol's asset class."""
        mask_httpx_logs()
        params = request_params(symbol, self.tickers.ticker(symbol))
        params["apikey"] = self._api_key.get_secret_value()
        return Request("/query", params)

    def parse(self, symbol: str, body: Any, response: httpx.Response) -> tuple[Fetched, Request | None]:
        """Bars of one answer (one page); the ``Date`` header is the provider's clock."""
        return Fetched(parse_intraday(body, symbol), header_clock_ns(response)), None
