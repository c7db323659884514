"""Event-level evaluation on hand-made flags: found events and their delay, data gaps found on the bar after them,
episodes and precision, calm bars and the false-alert rate, warm-up events left out, bad input refused by name; and
the real-history labels are trading days on which the S&P 500 fell."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from arch.data import sp500

from models.ensemble import KINDS
from models.evaluation import MARKET_EVENTS, Event, Report, evaluate_flags, market_events, walk_reports
from models.walkforward import WalkScores

MINUTE = 60 * 10**9
DAY = 86_400 * 10**9
T0 = 1_704_067_200 * 10**9  # 2024-01-01, midnight UTC


def _ts(n: int) -> np.ndarray:
    return T0 + np.arange(n, dtype=np.int64) * MINUTE


def _flags(n: int, *rows: int) -> np.ndarray:
    out = np.zeros(n, dtype=np.bool_)
    out[list(rows)] = True
    return out


def _event(a: int, b: int, kind: str = "flash_crash", symbol: str = "X") -> Event:
    """An event over the bars [a, b) of the one-minute grid from T0."""
    return Event(symbol, T0 + a * MINUTE, T0 + b * MINUTE, kind)


def _evaluate(ts, flags, events, first=0, **kwargs) -> Report:
    return evaluate_flags("m", {"X": (ts, flags, first)}, events, MINUTE, **kwargs)


def test_an_event_is_found_with_its_delay_in_bars():
    ts = _ts(100)
    report = _evaluate(ts, _flags(100, 23), [_event(20, 25)])
    assert (report.events, report.found, report.delays) == (1, 1, (3,))
    assert report.recall == 1.0
    assert report.median_delay == 3.0
    assert report.found_by_kind == (("flash_crash", 1, 1),)
    # the delay counts the symbol's bars, not minutes: drop two bars inside the window
    keep = np.ones(100, dtype=np.bool_)
    keep[[21, 22]] = False
    report = _evaluate(ts[keep], _flags(100, 23)[keep], [_event(20, 25)])
    assert report.delays == (1,)


def test_a_flag_after_the_tolerance_or_before_the_start_misses_the_event():
    ts = _ts(100)
    event = _event(20, 25)
    assert _evaluate(ts, _flags(100, 29), [event], tolerance_bars=5).found == 1  # end + 4 bars: still in
    assert _evaluate(ts, _flags(100, 30), [event], tolerance_bars=5).found == 0  # end + 5 bars: out
    assert _evaluate(ts, _flags(100, 19), [event]).found == 0  # the bar before the start
    assert _evaluate(ts, _flags(100, 25), [event], tolerance_bars=0).found == 0
    missed = _evaluate(ts, _flags(100), [event])
    assert (missed.events, missed.found, missed.delays, missed.recall) == (1, 0, (), 0.0)
    assert np.isnan(missed.median_delay)
    assert missed.found_by_kind == (("flash_crash", 0, 1),)


def test_a_data_gap_is_found_on_the_bar_after_the_missing_window():
    ts = np.delete(_ts(100), np.arange(30, 40))  # bars 30..39 never came
    gap = _event(30, 40, kind="data_gap")
    first_after = int(np.flatnonzero(ts == T0 + 40 * MINUTE)[0])
    flags = np.zeros(len(ts), dtype=np.bool_)
    flags[first_after] = True
    report = _evaluate(ts, flags, [gap], tolerance_bars=5)
    assert (report.found, report.delays) == (1, (0,))
    # a flag later within the tolerance is found with its delay; beyond it, not
    flags = np.zeros(len(ts), dtype=np.bool_)
    flags[first_after + 4] = True
    assert _evaluate(ts, flags, [gap], tolerance_bars=5).delays == (4,)
    flags = np.zeros(len(ts), dtype=np.bool_)
    flags[first_after + 5] = True
    assert _evaluate(ts, flags, [gap], tolerance_bars=5).found == 0
    # with no tolerance a gap has no bar at all to be found on
    flags = np.zeros(len(ts), dtype=np.bool_)
    flags[first_after] = True
    assert _evaluate(ts, flags, [gap], tolerance_bars=0).found == 0


def test_episodes_precision_calm_bars_and_false_alert_rate_are_counted_exactly():
    n = 100
    ts = _ts(n)
    events = [_event(10, 13), _event(40, 45, kind="volume_anomaly")]
    # episodes: 11-12 (inside the first event), 25 (calm), 53-56 (overlaps the second event's aftermath 45..54),
    # 70 and 72 (calm, two episodes), 99 (calm, at the end)
    flags = _flags(n, 11, 12, 25, 53, 54, 55, 56, 70, 72, 99)
    report = _evaluate(ts, flags, events, tolerance_bars=2, aftermath_bars=10)
    assert report.episodes == 6
    assert report.true_episodes == 2
    assert report.precision == pytest.approx(2 / 6)
    # widened windows: [10, 23) and [40, 55) -> 13 + 15 bars not calm
    assert report.calm_bars == n - 13 - 15
    # calm flagged: 25, 55, 56, 70, 72, 99
    assert report.calm_flagged == 6
    assert report.false_alert_rate == pytest.approx(6 / 72)
    assert (report.scored_bars, report.flagged_bars) == (100, 10)
    assert report.alert_rate == pytest.approx(0.1)
    assert (report.events, report.found) == (2, 1)  # the volume event's window [40, 47) has no flag
    assert report.found_by_kind == (("flash_crash", 1, 1), ("volume_anomaly", 0, 1))
    assert report.f1 == pytest.approx(2 * (2 / 6) * 0.5 / (2 / 6 + 0.5))
    d = report.as_dict()
    assert d["model"] == "m"
    assert d["events"] == 2
    assert d["found"] == 1
    assert d["false_per_1000_calm"] == pytest.approx(round(1000 * 6 / 72, 3))
    assert d["found_by_kind"] == {"flash_crash": [1, 1], "volume_anomaly": [0, 1]}


def test_nothing_flagged_and_nothing_labelled_give_nan_rates_and_zero_f1():
    report = _evaluate(_ts(50), _flags(50), [])
    assert (report.events, report.episodes, report.calm_bars, report.calm_flagged) == (0, 0, 50, 0)
    assert np.isnan(report.recall)
    assert np.isnan(report.precision)
    assert report.f1 == 0.0
    assert report.false_alert_rate == 0.0


def test_events_before_the_first_scored_bar_are_left_out_but_still_not_calm():
    ts = _ts(100)
    warmup_event, live_event = _event(5, 8), _event(50, 52)
    flags = _flags(100, 11, 51)
    report = _evaluate(ts, flags, [warmup_event, live_event], first=10, aftermath_bars=5)
    assert (report.events, report.found, report.delays) == (1, 1, (1,))
    assert report.scored_bars == 90
    # the warm-up event's aftermath [5, 13) covers the scored bars 10..12: the flag at 11 is a true episode
    assert report.calm_bars == 90 - 3 - 7
    assert report.calm_flagged == 0
    assert (report.episodes, report.true_episodes) == (2, 2)
    # an event straddling the first scored bar is left out too; flags before it are not counted at all
    report = _evaluate(ts, _flags(100, 3, 9, 10), [_event(8, 12)], first=10)
    assert (report.events, report.scored_bars, report.flagged_bars, report.episodes) == (0, 90, 1, 1)


def test_symbols_are_summed_and_events_of_other_symbols_ignored():
    ts = _ts(60)
    series = {"A": (ts, _flags(60, 30), 0), "B": (ts, _flags(60, 40), 20)}
    events = [
        _event(30, 31, symbol="A"),
        _event(38, 42, symbol="B"),
        _event(10, 11, symbol="B"),  # in B's warm-up
        _event(30, 31, symbol="C"),  # no such series
    ]
    report = evaluate_flags("m", series, events, MINUTE, tolerance_bars=0, aftermath_bars=0)
    assert (report.events, report.found, report.delays) == (2, 2, (0, 2))
    assert report.scored_bars == 60 + 40
    assert report.calm_bars == (60 - 1) + (40 - 4)


def test_flags_and_times_of_different_lengths_are_refused_naming_the_symbol():
    with pytest.raises(ValueError, match=r"series\['BTC-USD'\]"):
        evaluate_flags("m", {"BTC-USD": (_ts(10), _flags(9), 0)}, [], MINUTE)


def test_walk_reports_flag_alerting_bars_and_score_members_after_the_first_scored_bar():
    n = 60
    ts = _ts(n)
    evidence = {k: np.full(n, np.nan) for k in KINDS}
    evidence["flash_crash"][20:] = 0.5  # scored from bar 20
    alerts = pd.DataFrame({"ts": [ts[30]], "kind": ["flash_crash"]})
    flags = {"garch": _flags(n, 30, 31), "price_jump": _flags(n, 45)}
    out = WalkScores(ts, evidence, flags, alerts)
    events = [_event(29, 32, symbol="S"), _event(5, 6, symbol="S")]  # the second one is in the warm-up
    reports = {r.name: r for r in walk_reports({"S": out}, events, MINUTE, tolerance_bars=0, aftermath_bars=0)}
    assert sorted(reports) == ["ensemble", "garch", "price_jump"]
    assert (reports["ensemble"].events, reports["ensemble"].found, reports["ensemble"].delays) == (1, 1, (1,))
    assert reports["ensemble"].scored_bars == 40
    assert (reports["garch"].found, reports["garch"].episodes, reports["garch"].true_episodes) == (1, 1, 1)
    assert (reports["price_jump"].found, reports["price_jump"].calm_flagged) == (0, 1)


# ---- the real-history labels ------------------------------------------------------------------------
def test_market_events_are_trading_days_on_which_the_sp500_fell():
    close = sp500.load()["Adj Close"]
    change = close.pct_change()
    events = market_events("SP500")
    assert len(events) == len(MARKET_EVENTS) > 0
    assert len({e.start for e in events}) == len(events)
    for event, (day, name) in zip(events, MARKET_EVENTS, strict=True):
        date = pd.Timestamp(event.start, unit="ns", tz="UTC")
        assert date == pd.Timestamp(day, tz="UTC")  # midnight UTC, as daily bars are stamped
        assert event.end - event.start == DAY
        assert (event.symbol, event.kind, event.name) == ("SP500", "flash_crash", name)
        assert event.name
        naive = date.tz_localize(None)
        assert naive in close.index, day  # a trading day of the data
        # the S&P 500 fell that day, by 2.7-9.5 % as documented
        assert -0.095 <= change[naive] <= -0.027, (day, change[naive])
