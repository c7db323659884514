"""The Yahoo, Alpha Vantage and Polygon feeds against local servers speaking each provider's protocol."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pandas as pd
import pytest

from ingest.records import NS_PER_MINUTE
from ingest.sources.base import RawBatch
from ingest.sources.live import Backoff, FatalFeedError, FeedError, LiveSource, RateLimiter
from ingest.sources.rest import LIVE_SOURCES, AlphaVantageBars, PolygonBars, PolygonStream, YahooBars
from ingest.sources.rest.alphavantage import check_notices
from ingest.validation import ValidationConfig, Validator
from tests.integration.fake_providers import (
    AV_MINUTE_NOTE,
    FakeAlphaVantage,
    FakePolygonRest,
    FakePolygonSocket,
    FakeYahoo,
    av_fx_intraday,
    av_intraday,
    polygon_agg,
    quote,
    serve_http,
    trade,
    yahoo_chart,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

AV_KEY = "av-secret-123"
POLY_KEY = "poly-secret-456"
T0 = 1_704_205_800  # 2024-01-02 14:30:00 UTC, seconds


async def _no_sleep(_: float) -> None:
    await asyncio.sleep(0)


class FakeTime:
    """A monotonic clock that only moves when the code under test sleeps; records every sleep."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self.on_sleep: Callable[[float], None] = lambda _: None

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.on_sleep(seconds)
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def _collect(source: LiveSource, until: Callable[[list[RawBatch]], bool], timeout_s: float = 15.0) -> list[RawBatch]:
    """Batches of ``source`` until ``until(batches)`` holds."""

    async def run() -> list[RawBatch]:
        out: list[RawBatch] = []
        gen = source.batches()
        try:
            async for batch in gen:
                out.append(batch)
                if until(out):
                    break
        finally:
            await gen.aclose()
        return out

    return asyncio.run(asyncio.wait_for(run(), timeout_s))


def _raises(source: LiveSource, timeout_s: float = 15.0) -> BaseException:
    """The exception that ends ``source.batches()``."""

    async def run() -> None:
        agen: AsyncIterator[RawBatch] = source.batches()
        async for _ in agen:
            pass

    with pytest.raises((FatalFeedError, FeedError)) as info:
        asyncio.run(asyncio.wait_for(run(), timeout_s))
    return info.value


def _bars(batches: list[RawBatch]) -> pd.DataFrame:
    frames = [b.bars for b in batches if b.bars is not None and len(b.bars)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _accepts_all(kind: Any, frame: pd.DataFrame, interval_ns: int | None = None) -> None:
    result = Validator(kind, ValidationConfig()).validate(frame, interval_ns=interval_ns)
    assert len(result.rejected) == 0, list(result.rejected.reason)
    assert len(result.accepted) == len(frame)


# ---------------------------------------------------------------------------------------------------------
# Yahoo


def test_yahoo_polls_emit_complete_bars_once_and_skip_null_rows():
    row = (100.0, 101.0, 99.5, 100.5, 1200.0)
    half_null = (None, 101.0, 99.5, None, 0.0)
    first = [row, row, half_null, row, row]  # minute 4 is still running: market time is 4:30 into the hour
    second = [row, row, half_null, row, row, row]  # minute 4 now complete, minute 5 running
    fx = [(1.1, 1.1, 1.1, 1.1, 0.0)] * 3
    fake = FakeYahoo(
        {
            "SPY": [yahoo_chart("SPY", T0, first, T0 + 270), yahoo_chart("SPY", T0, second, T0 + 330)],
            "EURUSD=X": [yahoo_chart("EURUSD=X", T0, fx, T0 + 200)],
        }
    )
    with serve_http(fake.app()) as url:
        source = YahooBars(["SPY", "EURUSD"], base_url=url, poll_interval_s=0.01, sleep=_no_sleep)
        batches = _collect(source, lambda b: len(b) >= 3)
    spy_calls = [q for t, q in fake.requests if t == "SPY"]
    assert spy_calls[0]["interval"] == "1m"
    assert spy_calls[0]["range"] == "1d"
    rounds = [_bars([b]) for b in batches]
    first_spy = rounds[0][rounds[0].symbol == "SPY"]
    minute = pd.Timedelta(minutes=1)
    start = pd.Timestamp(T0, unit="s", tz="UTC")
    assert list(first_spy.timestamp) == [start, start + minute, start + 3 * minute]
    assert list(rounds[0][rounds[0].symbol == "EURUSD"].timestamp) == [start, start + minute, start + 2 * minute]
    assert list(rounds[1].timestamp) == [start + 4 * minute]
    assert len(batches[2]) == 0  # third poll: nothing new, an empty heartbeat
    every = _bars(batches)
    assert not every.duplicated(["symbol", "timestamp"]).any()
    assert not (every[["open", "high", "low", "close"]] == 0).any().any()
    _accepts_all("bar", every, NS_PER_MINUTE)


def test_yahoo_unknown_ticker_is_fatal_and_names_it():
    fake = FakeYahoo({})
    with serve_http(fake.app()) as url:
        error = _raises(YahooBars(["NOPE"], base_url=url, poll_interval_s=0.01, sleep=_no_sleep))
    assert isinstance(error, FatalFeedError)
    assert "symbol='NOPE'" in str(error)
    assert "404" in str(error)


# ---------------------------------------------------------------------------------------------------------
# Alpha Vantage


def test_alphavantage_converts_us_eastern_to_utc_across_dst_and_fx_from_utc():
    rows = {
        "2024-03-08 15:59:00": (170.0, 170.5, 169.8, 170.2, 5000.0),  # EST, UTC-5
        "2024-03-11 09:30:00": (171.0, 171.5, 170.8, 171.2, 8000.0),  # EDT, UTC-4 (DST began 2024-03-10)
    }
    fx = {"2024-03-11 13:30:00": (1.0921, 1.0925, 1.0920, 1.0923)}
    fake = FakeAlphaVantage(AV_KEY, {"AAPL": [av_intraday("AAPL", rows)], "EURUSD": [av_fx_intraday("EUR", "USD", fx)]})
    with serve_http(fake.app()) as url:
        source = AlphaVantageBars(["AAPL", "EURUSD"], AV_KEY, base_url=url, poll_interval_s=0.01, sleep=_no_sleep)
        bars = _bars(_collect(source, lambda b: len(_bars(b)) >= 3))
    aapl = bars[bars.symbol == "AAPL"]
    assert [str(t) for t in aapl.timestamp] == ["2024-03-08 20:59:00+00:00", "2024-03-11 13:30:00+00:00"]
    eur = bars[bars.symbol == "EURUSD"]
    assert [str(t) for t in eur.timestamp] == ["2024-03-11 13:30:00+00:00"]
    assert eur.volume.tolist() == [0.0]
    functions = {r["function"] for r in fake.requests}
    assert functions == {"TIME_SERIES_INTRADAY", "FX_INTRADAY"}
    assert all(r["interval"] == "1min" and r["outputsize"] == "compact" for r in fake.requests)
    _accepts_all("bar", bars, NS_PER_MINUTE)


def test_alphavantage_sixth_call_in_a_minute_waits_for_the_limiter():
    symbols = ["AAPL", "MSFT", "GOOGL", "AMZN", "TSLA", "SPY"]
    body = av_intraday("X", {"2024-03-11 09:30:00": (1.0, 1.0, 1.0, 1.0, 1.0)})
    fake = FakeAlphaVantage(AV_KEY, {s: [body] for s in symbols})
    ft = FakeTime()
    served_at_sleep: list[int] = []
    ft.on_sleep = lambda _: served_at_sleep.append(len(fake.requests))
    limiter = RateLimiter([(5, 60.0), (500, 86_400.0)], clock=ft.clock, sleep=ft.sleep)
    with serve_http(fake.app()) as url:
        source = AlphaVantageBars(
            symbols, AV_KEY, base_url=url, limiter=limiter, sleep=ft.sleep, poll_interval_s=60.0, stale_after_s=1000
        )
        _collect(source, lambda _: len(fake.requests) >= 6)
    assert len(fake.requests) == 6
    # five calls go at once; the sixth waits the rest of the minute, without a real sleep
    assert ft.sleeps[0] == pytest.approx(60.0)
    assert served_at_sleep[0] == 5


def test_alphavantage_daily_quota_used_up_is_fatal():
    fake = FakeAlphaVantage(AV_KEY, {"IBM": [av_intraday("IBM", {"2024-03-11 09:30:00": (1, 1, 1, 1, 1)})]})
    ft = FakeTime()
    with serve_http(fake.app()) as url:
        source = AlphaVantageBars(
            ["IBM"],
            AV_KEY,
            base_url=url,
            limiter=RateLimiter([(5, 60.0), (3, 86_400.0)], clock=ft.clock, sleep=ft.sleep),
            sleep=ft.sleep,
            poll_interval_s=61.0,
            stale_after_s=1000,
        )
        error = _raises(source)
    assert isinstance(error, FatalFeedError)
    assert "quota" in str(error)
    assert len(fake.requests) == 3


def test_alphavantage_throttle_note_backs_off_and_retries():
    data = av_intraday("IBM", {"2024-03-11 09:30:00": (150.0, 151.0, 149.0, 150.5, 900.0)})
    fake = FakeAlphaVantage(AV_KEY, {"IBM": [{"Note": AV_MINUTE_NOTE}, data]})
    ft = FakeTime()
    with serve_http(fake.app()) as url:
        source = AlphaVantageBars(
            ["IBM"], AV_KEY, base_url=url, sleep=ft.sleep, poll_interval_s=1.0, backoff=Backoff(base_s=2.0, cap_s=4.0)
        )
        bars = _bars(_collect(source, lambda b: len(_bars(b)) >= 1))
    assert source.failures == 1
    assert source.sessions == 2
    assert 0.0 <= ft.sleeps[0] <= 2.0  # the first backoff ceiling
    assert bars.close.tolist() == [150.5]


def test_alphavantage_error_message_is_fatal_for_the_symbol():
    fake = FakeAlphaVantage(AV_KEY, {})
    with serve_http(fake.app()) as url:
        error = _raises(AlphaVantageBars(["ZZZZ"], AV_KEY, base_url=url, sleep=_no_sleep, poll_interval_s=1.0))
    assert isinstance(error, FatalFeedError)
    assert "symbol='ZZZZ'" in str(error)
    assert "Error Message" in str(error)


@pytest.mark.parametrize(
    ("text", "fatal"),
    [
        (AV_MINUTE_NOTE, False),
        ("Please consider spreading out your free API requests more sparingly (1 request per second).", False),
        ("Our standard API rate limit is 25 requests per day. Please subscribe to any of the premium plans.", True),
        ("Thank you for using Alpha Vantage! This is a premium endpoint.", True),
    ],
)
def test_alphavantage_notice_classification(text, fatal):
    with pytest.raises(FatalFeedError if fatal else FeedError) as info:
        check_notices({"Information": text}, "IBM")
    assert isinstance(info.value, FatalFeedError) is fatal


def test_api_keys_stay_out_of_reprs_logs_and_errors(caplog):
    caplog.set_level(logging.INFO)
    fake = FakeAlphaVantage(AV_KEY, {"IBM": [{"Note": AV_MINUTE_NOTE}]})
    with serve_http(fake.app()) as url:
        source = AlphaVantageBars(["IBM"], AV_KEY, base_url=url, sleep=_no_sleep, poll_interval_s=1.0, max_failures=2)
        error = _raises(source)
    assert fake.requests[0]["apikey"] == AV_KEY  # it was sent
    assert "apikey=***" in caplog.text  # and httpx's request log masked it
    for text in (caplog.text, str(error), repr(source), repr(PolygonStream(["SPY"], POLY_KEY))):
        assert AV_KEY not in text
        assert POLY_KEY not in text


# ---------------------------------------------------------------------------------------------------------
# Polygon REST


def test_polygon_aggregates_follow_next_url_pages_and_poll_on_from_the_last_bar():
    t0 = T0 * 1000
    pages = [
        [polygon_agg(t0, 470.0, 470.5, 469.9, 470.2, 1000), polygon_agg(t0 + 60_000, 470.2, 470.9, 470.1, 470.8, 800)],
        [polygon_agg(t0 + 120_000, 470.8, 471.0, 470.6, 470.7, 500)],
        [polygon_agg(t0 + 180_000, 470.7, 470.7, 470.1, 470.3, 900)],
    ]
    fake = FakePolygonRest(POLY_KEY, {"SPY": pages, "X:BTCUSD": [[polygon_agg(t0, 42000, 42010, 41990, 42005, 3)]]})
    with serve_http(fake.app()) as url:
        source = LIVE_SOURCES["polygon"](
            ["SPY", "BTC-USD"], api_key=POLY_KEY, mode="bars", base_url=url, poll_interval_s=0.01, sleep=_no_sleep
        )
        assert isinstance(source, PolygonBars)
        batches = _collect(source, lambda b: len(b) >= 2)
    bars = _bars([batches[0]])
    spy = bars[bars.symbol == "SPY"]
    assert [int(t.value // 1_000_000) for t in spy.timestamp] == [t0, t0 + 60_000, t0 + 120_000, t0 + 180_000]
    assert spy.trade_count.tolist() == [12.0] * 4
    assert bars[bars.symbol == "BTC-USD"].close.tolist() == [42005.0]
    spy_calls = [(path, q, auth) for path, q, auth in fake.requests if "/SPY/" in path]
    assert [q.get("cursor") for _, q, _ in spy_calls[:3]] == [None, "1", "2"]
    assert all(auth == f"Bearer {POLY_KEY}" and "apiKey" not in q for _, q, auth in fake.requests)
    # the second round asks from the minute after the last bar emitted, and emits nothing twice
    assert spy_calls[3][0].split("/")[-2] == str(t0 + 240_000)
    assert len(_bars(batches)) == len(bars)
    _accepts_all("bar", bars, NS_PER_MINUTE)


def test_polygon_rest_unknown_key_is_fatal():
    fake = FakePolygonRest(POLY_KEY, {})
    with serve_http(fake.app()) as url:
        error = _raises(PolygonBars(["SPY"], "wrong-key", base_url=url, sleep=_no_sleep, poll_interval_s=1.0))
    assert isinstance(error, FatalFeedError)
    assert "status=401" in str(error)
    assert "wrong-key" not in str(error)


# ---------------------------------------------------------------------------------------------------------
# Polygon WebSocket

T_MS = T0 * 1000


def _rows(batches: list[RawBatch], kind: str) -> pd.DataFrame:
    frames = [getattr(b, kind) for b in batches if getattr(b, kind) is not None]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _stream(url: str, **options: Any) -> PolygonStream:
    options.setdefault("sleep", _no_sleep)
    source = LIVE_SOURCES["polygon"](["SPY", "AAPL"], api_key=POLY_KEY, url=url, **options)
    assert isinstance(source, PolygonStream)
    return source


def test_polygon_stream_authenticates_subscribes_and_batches_trades_and_quotes():
    first = [
        trade("SPY", 470.10, 100, T_MS, 1),
        trade("SPY", 470.10, 100, T_MS, 2),  # same price, size and millisecond: a different print
        quote("SPY", 470.09, 3, 470.11, 5, T_MS + 1, 3),
        trade("AAPL", 185.20, 50, T_MS + 2, 4),
    ]
    second = [quote("AAPL", 185.19, 2, 185.21, 1, T_MS + 5, 5), trade("SPY", 470.11, 10, T_MS + 7, 6)]
    fake = FakePolygonSocket(POLY_KEY, [[first, second]])
    with fake.serve() as url:
        batches = _collect(_stream(url), lambda b: len(_rows(b, "trades")) + len(_rows(b, "quotes")) >= 6)
    assert fake.received[0] == {"action": "auth", "params": POLY_KEY}
    assert fake.received[1] == {"action": "subscribe", "params": "T.SPY,Q.SPY,T.AAPL,Q.AAPL"}
    trades, quotes = _rows(batches, "trades"), _rows(batches, "quotes")
    assert trades.seq.tolist() == [1, 2, 4, 6]
    assert trades.price.tolist() == [470.10, 470.10, 185.20, 470.11]
    assert quotes[["bid", "ask", "bid_size", "ask_size"]].values.tolist() == [
        [470.09, 470.11, 3, 5],
        [185.19, 185.21, 2, 1],
    ]
    assert trades.timestamp.iloc[0] == pd.Timestamp(T_MS, unit="ms", tz="UTC")
    _accepts_all("tick", trades)
    _accepts_all("quote", quotes)


def test_polygon_stream_auth_failure_is_fatal():
    fake = FakePolygonSocket("the-right-key", [[]])
    with fake.serve() as url:
        error = _raises(_stream(url))
    assert isinstance(error, FatalFeedError)
    assert "auth_failed" in str(error)
    assert fake.connections == 1


def test_polygon_stream_reconnects_after_a_dropped_connection():
    fake = FakePolygonSocket(
        POLY_KEY, [[[trade("SPY", 470.0, 1, T_MS, 1)], "drop"], [[trade("SPY", 470.2, 1, T_MS + 9, 2)]]]
    )
    with fake.serve() as url:
        source = _stream(url)
        batches = _collect(source, lambda b: len(_rows(b, "trades")) >= 2)
    assert _rows(batches, "trades").seq.tolist() == [1, 2]
    assert fake.connections == 2
    assert source.failures == 1


def test_polygon_stream_silence_raises_stale_and_reconnects(caplog):
    caplog.set_level(logging.WARNING, logger="ingest.sources.live")
    fake = FakePolygonSocket(POLY_KEY, [["silence"], [[trade("SPY", 470.0, 1, T_MS, 1)]]])
    with fake.serve() as url:
        source = _stream(url, stale_after_s=0.5)
        batches = _collect(source, lambda b: len(_rows(b, "trades")) >= 1)
    assert fake.connections == 2
    assert source.failures == 1
    assert "no message for 0.5 s" in caplog.text
    assert _rows(batches, "trades").price.tolist() == [470.0]


def test_builders_name_the_providers_and_check_keys():
    assert set(LIVE_SOURCES) == {"yahoo", "alphavantage", "polygon"}
    assert isinstance(LIVE_SOURCES["yahoo"](["SPY"]), YahooBars)
    with pytest.raises(ValueError, match="api_key=None"):
        LIVE_SOURCES["polygon"](["SPY"])
    with pytest.raises(ValueError, match="api_key=None"):
        LIVE_SOURCES["alphavantage"](["IBM"], api_key=None)
