"""How well the detectors find labelled events: event-level precision, recall, F1, false alerts, delay.

An **event** is a labelled window ``[start, end)`` of one symbol (an injected anomaly of the synthetic market, a
well-known day of real history, :data:`MARKET_EVENTS`). A detector's output is a flag per scored bar.

* An event is **found** when a flagged bar of its symbol lies in ``[start, end + tolerance)``, where the
  tolerance is ``tolerance_bars`` bar lengths (a data gap shows on the first bar after it). Its **delay** is the
  count of the symbol's bars from the first bar at or after ``start`` to the first flagged one (0: at once).
* **Episodes** are runs of consecutive flagged bars; an episode is true when it overlaps an event window widened
  by ``aftermath_bars`` after its end (the market takes a while to calm down after a crash). Precision is the
  share of true episodes.
* **Calm bars** are scored bars outside every widened window; the false-alert rate is the share of calm bars
  that are flagged (and per 1,000 calm bars).

Events before a symbol's first scored bar (its warm-up) are left out. Everything is computed per symbol, then
summed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from features.engine import FeatureEngine
from features.sets import default_feature_set
from ingest.records import I64, BarBatch
from models.base import Observations
from models.ensemble import Ensemble
from models.walkforward import WalkForward, WalkScores

Bool = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Event:
    """A labelled window of one symbol: ``[start, end)`` in ns UTC, with its kind and a name."""

    symbol: str
    start: int
    end: int
    kind: str
    name: str = ""


#: Well-known sell-offs of US equities, 2001-2018, the real-history labels for daily S&P 500 and NASDAQ
#: bars (each one trading day; the index fell by 2.7-9.5 % that day).
MARKET_EVENTS: Final[tuple[tuple[str, str], ...]] = (
    ("2001-09-17", "markets reopen after the September 11 attacks"),
    ("2007-02-27", "Shanghai sell-off and subprime worries"),
    ("2008-09-15", "Lehman Brothers files for bankruptcy"),
    ("2008-09-29", "House rejects the first bank rescue bill"),
    ("2008-10-15", "October 2008 crash, largest fall of the crisis"),
    ("2008-12-01", "NBER declares a recession"),
    ("2010-05-06", "the Flash Crash"),
    ("2011-08-08", "first day after the US credit downgrade"),
    ("2015-08-24", "China devaluation, 'Black Monday' 2015"),
    ("2016-06-24", "Brexit referendum result"),
    ("2018-02-05", "'Volmageddon' volatility spike"),
    ("2018-10-10", "October 2018 sell-off"),
)


def market_events(symbol: str) -> list[Event]:
    """:data:`MARKET_EVENTS` as one-day events of ``symbol`` (dates at midnight UTC, as daily bars are stamped)."""
    out = []
    for day, name in MARKET_EVENTS:
        start = int((dt.date.fromisoformat(day) - dt.date(1970, 1, 1)).days) * 86_400 * 10**9
        out.append(Event(symbol, start, start + 86_400 * 10**9, "flash_crash", name))
    return out


@dataclass(frozen=True)
class Report:
    """Detection quality of one detector over a set of symbols (see the module doc)."""

    name: str
    events: int
    found: int
    episodes: int
    true_episodes: int
    calm_bars: int
    calm_flagged: int
    scored_bars: int
    flagged_bars: int
    delays: tuple[int, ...]
    found_by_kind: tuple[tuple[str, int, int], ...]
    kind_delays: tuple[tuple[str, int], ...] = ()

    @property
    def recall(self) -> float:
        """Share of events found."""
        return self.found / self.events if self.events else float("nan")

    @property
    def precision(self) -> float:
        """Share of episodes that overlap an event."""
        return self.true_episodes / self.episodes if self.episodes else float("nan")

    @property
    def f1(self) -> float:
        """Harmonic mean of precision and recall (0 when either is 0)."""
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p == p and r == r and p + r > 0 else 0.0

    @property
    def false_alert_rate(self) -> float:
        """Share of calm bars flagged."""
        return self.calm_flagged / self.calm_bars if self.calm_bars else float("nan")

    @property
    def alert_rate(self) -> float:
        """Share of all scored bars flagged."""
        return self.flagged_bars / self.scored_bars if self.scored_bars else float("nan")

    @property
    def median_delay(self) -> float:
        """Median delay of the found events, in bars."""
        return float(np.median(self.delays)) if self.delays else float("nan")

    def median_delay_of(self, kind: str) -> float:
        """Median delay of the found events of one kind, in bars (NaN when none was found)."""
        found = [d for k, d in self.kind_delays if k == kind]
        return float(np.median(found)) if found else float("nan")

    def as_dict(self) -> dict[str, object]:
        """The figures as a JSON-friendly dict."""
        return {
            "model": self.name,
            "events": self.events,
            "found": self.found,
            "recall": round(self.recall, 4),
            "precision": round(self.precision, 4),
            "f1": round(self.f1, 4),
            "false_alert_rate": round(self.false_alert_rate, 5),
            "false_per_1000_calm": round(1000 * self.false_alert_rate, 3),
            "alert_rate": round(self.alert_rate, 5),
            "median_delay_bars": self.median_delay,
            "found_by_kind": {k: [f, t] for k, f, t in self.found_by_kind},
            "median_delay_by_kind": {k: self.median_delay_of(k) for k, _, _ in self.found_by_kind},
        }


@dataclass
class _Tally:
    events: int = 0
    found: int = 0
    episodes: int = 0
    true_episodes: int = 0
    calm_bars: int = 0
    calm_flagged: int = 0
    scored: int = 0
    flagged: int = 0


def evaluate_flags(
    name: str,
    series: Mapping[str, tuple[I64, Bool, int]],
    events: Iterable[Event],
    interval_ns: int,
    tolerance_bars: int = 5,
    aftermath_bars: int = 30,
) -> Report:
    """Score one detector's flags against the events (see the module doc).

    Parameters
    ----------
    name : str
        The detector, for the report.
    series : mapping of str to (ts, flags, first_scored)
        Per symbol: its bar times, the detector's flag per bar, and the index of its first scored bar.
    events : iterable of Event
        The labels; events of symbols not in ``series`` are ignored.
    interval_ns : int
        The bar length, ns.
    tolerance_bars, aftermath_bars : int
        Bars after an event's end in which a flag still finds it, and after which bars are calm again.

    Raises
    ------
    ValueError
        When a symbol's flags and times differ in length (naming the symbol).
    """
    by_symbol: dict[str, list[Event]] = {}
    for e in events:
        by_symbol.setdefault(e.symbol, []).append(e)
    t = _Tally()
    delays: list[int] = []
    kind_delays: list[tuple[str, int]] = []
    kinds: dict[str, list[int]] = {}
    for symbol, (ts, flags, first) in series.items():
        if len(ts) != len(flags):
            raise ValueError(f"series[{symbol!r}]: {len(flags)} flags for {len(ts)} bars")
        ts, flags = ts[first:], np.asarray(flags[first:], dtype=np.bool_)
        if not len(ts):
            continue
        t.scored += len(ts)
        t.flagged += int(flags.sum())
        widened = np.zeros(len(ts), dtype=np.bool_)
        for e in by_symbol.get(symbol, []):
            widened |= (ts >= e.start) & (ts < e.end + aftermath_bars * interval_ns)
            if e.start < ts[0]:
                continue
            t.events += 1
            tally = kinds.setdefault(e.kind, [0, 0])
            tally[1] += 1
            window = np.flatnonzero((ts >= e.start) & (ts < e.end + tolerance_bars * interval_ns))
            hit = window[flags[window]]
            if len(hit):
                t.found += 1
                tally[0] += 1
                delays.append(int(hit[0] - window[0]))
                kind_delays.append((e.kind, delays[-1]))
        calm = ~widened
        t.calm_bars += int(calm.sum())
        t.calm_flagged += int((flags & calm).sum())
        starts = np.flatnonzero(flags & ~np.concatenate(([False], flags[:-1])))
        ends = np.flatnonzero(flags & ~np.concatenate((flags[1:], [False]))) + 1
        t.episodes += len(starts)
        t.true_episodes += sum(bool(widened[a:b].any()) for a, b in zip(starts.tolist(), ends.tolist(), strict=True))
    return Report(
        name,
        t.events,
        t.found,
        t.episodes,
        t.true_episodes,
        t.calm_bars,
        t.calm_flagged,
        t.scored,
        t.flagged,
        tuple(delays),
        tuple((k, v[0], v[1]) for k, v in sorted(kinds.items())),
        tuple(kind_delays),
    )


def report_table(reports: Sequence[Report]) -> list[dict[str, object]]:
    """The reports as rows (one per model), for printing or JSON."""
    return [r.as_dict() for r in reports]


# --------------------------------------------------------------------------------------------------------
#: Synthetic label kinds as alert kinds.
LABEL_KINDS: Final[dict[str, str]] = {"volume_surge": "volume_anomaly"}


def walk_reports(
    outputs: Mapping[str, WalkScores],
    events: Sequence[Event],
    interval_ns: int,
    tolerance_bars: int = 5,
    aftermath_bars: int = 30,
) -> list[Report]:
    """One report for the ensemble (a bar alerts when it has an alert) and one per member on its own flags."""
    first = {s: _first_scored(o) for s, o in outputs.items()}
    reports = []
    ens = {s: (o.ts, np.isin(o.ts, o.alerts["ts"].to_numpy()), first[s]) for s, o in outputs.items()}
    reports.append(evaluate_flags("ensemble", ens, events, interval_ns, tolerance_bars, aftermath_bars))
    names = sorted({n for o in outputs.values() for n in o.member_flags})
    for name in names:
        series = {
            s: (o.ts, o.member_flags.get(name, np.zeros(len(o), dtype=np.bool_)), first[s]) for s, o in outputs.items()
        }
        reports.append(evaluate_flags(name, series, events, interval_ns, tolerance_bars, aftermath_bars))
    return reports


def _first_scored(out: WalkScores) -> int:
    scored = np.zeros(len(out), dtype=np.bool_)
    for v in out.evidence.values():
        scored |= np.isfinite(v)
    idx = np.flatnonzero(scored)
    return int(idx[0]) if len(idx) else len(out)


def bar_observations(bars: BarBatch) -> dict[str, Observations]:
    """Per symbol and one bar length: the bars with their default features, as detector input."""
    out = {}
    for symbol in sorted(set(bars.symbol.tolist())):
        one = bars.take(bars.symbol == symbol)
        interval = int(one.interval_ns[0])
        engine = FeatureEngine(default_feature_set(interval), interval)
        out[str(symbol)] = Observations.from_bars(one, engine.batch(one))
    return out


@dataclass(frozen=True)
class SyntheticRun:
    """The reports of a synthetic evaluation and what it covered."""

    reports: list[Report]
    seeds: tuple[int, ...]
    bars: int
    scored_bars: int
    seconds_scoring: float


def evaluate_synthetic(
    seeds: Sequence[int],
    days: int = 8,
    activity: float = 0.3,
    assets: Sequence[str] | None = None,
    walk: WalkForward | None = None,
) -> SyntheticRun:
    """Run the walk-forward ensemble over simulated markets with labelled anomalies, one per seed.

    Every symbol's stream is scored after its warm-up (by default 1,500 bars spanning two days at least: the
    ensemble is fitted on them and never sees a label); the labelled anomalies after it are the events.
    """
    import time

    from ingest.synthetic.market import SimulationConfig, simulate
    from ingest.synthetic.universe import UNIVERSE

    walk = walk or WalkForward(Ensemble(), warmup=1500, refit_every=None, window=6000, min_span_ns=2 * 86_400 * 10**9)
    outputs: dict[str, WalkScores] = {}
    events: list[Event] = []
    bars = scored = 0
    seconds = 0.0
    for seed in seeds:
        config = SimulationConfig(seed=int(seed), days=days, activity=activity, assets=tuple(assets or UNIVERSE))
        result = simulate(config)
        for symbol, obs in bar_observations(result.bars).items():
            t0 = time.perf_counter()
            out = walk.score(obs)
            seconds += time.perf_counter() - t0
            outputs[f"{seed}:{symbol}"] = out
            bars += len(obs)
            scored += len(obs) - _first_scored(out)
        for label in result.labels:
            kind = LABEL_KINDS.get(label.kind, label.kind)
            events.append(Event(f"{seed}:{label.symbol}", label.start, label.end, kind))
    from ingest.records import NS_PER_MINUTE

    reports = walk_reports(outputs, events, NS_PER_MINUTE)
    return SyntheticRun(reports, tuple(int(s) for s in seeds), bars, scored, seconds)


def index_observations(name: str) -> Observations:
    """Daily bars of an index shipped with the ``arch`` package (``sp500`` or ``nasdaq``, 1999-2018).

    Raises
    ------
    ValueError
        For another name (naming it).
    """
    import importlib

    if name not in ("sp500", "nasdaq"):
        raise ValueError(f"index={name!r}: one of 'sp500', 'nasdaq'")
    frame = importlib.import_module(f"arch.data.{name}").load()
    ts = frame.index.tz_localize("UTC").as_unit("ns").asi8
    n = len(frame)
    bars = BarBatch(
        ts=ts,
        symbol=np.full(n, name.upper(), dtype=object),
        interval_ns=np.full(n, 86_400 * 10**9),
        open=frame["Open"].to_numpy(float),
        high=frame["High"].to_numpy(float),
        low=frame["Low"].to_numpy(float),
        close=frame["Adj Close"].to_numpy(float),
        volume=frame["Volume"].to_numpy(float),
        vwap=np.full(n, np.nan),
        trade_count=np.zeros(n, dtype=np.int64),
        bid=np.full(n, np.nan),
        ask=np.full(n, np.nan),
        bid_size=np.full(n, np.nan),
        ask_size=np.full(n, np.nan),
        spread=np.full(n, np.nan),
        quote_count=np.zeros(n, dtype=np.int64),
        suspicious_count=np.zeros(n, dtype=np.int64),
    )
    return bar_observations(bars)[name.upper()]


#: Per-kind alert rate of the ensemble on daily index bars: about 2 % of days over the kinds daily bars have.
DAILY_ALERT_RATE: Final = 0.004


def evaluate_index(name: str, walk: WalkForward | None = None) -> tuple[list[Report], WalkScores]:
    """The walk-forward ensemble over an index's daily bars against :data:`MARKET_EVENTS` (flagged on the day).

    The default schedule fits on the first 500 days (1999-2000) and refits every 250 days (about a year) on the
    latest 2,500, with the per-kind alert rate :data:`DAILY_ALERT_RATE`.
    """
    obs = index_observations(name)
    walk = walk or WalkForward(Ensemble(alert_rate=DAILY_ALERT_RATE), warmup=500, refit_every=250, window=2500)
    out = walk.score(obs)
    events = market_events(obs.symbol)
    return walk_reports({obs.symbol: out}, events, 86_400 * 10**9, tolerance_bars=0, aftermath_bars=0), out
