"""Detection quality and scoring speed of the anomaly ensemble and of each detector alone.

Quality (``models.evaluation``):

- **synthetic**: simulated markets of the 19-asset universe with labelled anomalies (flash crashes, volatility
  spikes, volume surges, spread blow-outs, regime changes, data gaps), several seeds; every symbol's 1-minute
  bars go through the walk-forward ensemble (fitted on its first 1,500 bars spanning two days at least, never
  on a label), then each labelled anomaly after the warm-up is an event. Event recall, precision, false alerts
  per calm bar and the delay, for the ensemble and for every member alone (a member alerts where its own
  validation-calibrated severity passes its threshold).
- **real history**: daily S&P 500 and NASDAQ bars 1999-2018 shipped with ``arch``, walk-forward (first fit on
  1999-2000, a refit every 250 days on the latest 2,500), against the documented list of well-known sell-offs
  (``models.evaluation.MARKET_EVENTS``): flagged on the day itself, and the share of all days that alert.

The LSTM autoencoder, an opt-in member (slow to train), is compared on the first seed in a pass of its own.

Speed, on one core: a fitted ensemble scores 1-minute BTC-USD bars as a stream, one bar per call (live) and 100
bars per call (replay), bars per second; each member alone the same way (and the autoencoder); beside it, the
baseline measured in the same run: the feature engine's streaming step over the same bars (the work every bar
costs before any model).

``--quick``: one seed of 6 days, no autoencoder pass, S&P 500 only, fewer timed bars. Prints one JSON object on
its last line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks._common import machine, pin_one_core
from features.engine import FeatureEngine
from features.sets import default_feature_set
from ingest.records import NS_PER_MINUTE
from ingest.synthetic.market import SimulationConfig, simulate
from models.ensemble import DEFAULT_MEMBERS, KNOWN_MEMBERS, Ensemble
from models.evaluation import DAILY_ALERT_RATE, Report, bar_observations, evaluate_index, evaluate_synthetic
from models.walkforward import WalkForward


def _rows(reports: list[Report]) -> None:
    print(f"{'model':18} {'events':>6} {'found':>5} {'recall':>6} {'prec':>6} {'F1':>5} {'false/1k':>8} {'delay':>5}")
    for r in reports:
        print(
            f"{r.name:18} {r.events:6d} {r.found:5d} {r.recall:6.3f} {r.precision:6.3f} {r.f1:5.3f} "
            f"{1000 * r.false_alert_rate:8.2f} {r.median_delay:5.1f}"
        )


def _speed(n_bars: int) -> dict[str, float]:
    result = simulate(SimulationConfig(seed=3, days=6, activity=0.3, assets=("BTC-USD",)))
    obs = bar_observations(result.bars)["BTC-USD"]
    cut = 3000
    history, stream = obs.take(slice(0, cut)), obs.take(slice(cut, cut + n_bars))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = Ensemble().fit(history)

    def per_second(step: Any, batch: int) -> float:
        state = step.init_state()
        t0 = time.perf_counter()
        for i in range(0, len(stream), batch):
            step.update(state, stream.take(slice(i, i + batch)))
        return len(stream) / (time.perf_counter() - t0)

    out = {"ensemble_bars_per_s": per_second(model, 1), "ensemble_bars_per_s_batch100": per_second(model, 100)}
    for name, detector in zip(model.member_names_, model.detectors_, strict=True):
        out[f"{name}_bars_per_s"] = per_second(detector, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        autoencoder = KNOWN_MEMBERS["lstm_autoencoder"].build().fit(history)
    out["lstm_autoencoder_bars_per_s"] = per_second(autoencoder, 1)
    out["lstm_autoencoder_bars_per_s_batch100"] = per_second(autoencoder, 100)
    # baseline: the feature engine's streaming step over the same bars, one bar per call
    bars = result.bars.take(slice(cut, cut + n_bars))
    engine = FeatureEngine(default_feature_set(NS_PER_MINUTE), NS_PER_MINUTE)
    state = engine.init_state()
    t0 = time.perf_counter()
    for i in range(len(bars)):
        engine.step(state, bars.take(slice(i, i + 1)))
    out["baseline_features_bars_per_s"] = len(bars) / (time.perf_counter() - t0)
    return out


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one seed, S&P 500 only, fewer timed bars")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    seeds = [1] if args.quick else [1, 2, 3]
    days = 6 if args.quick else 8
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run = evaluate_synthetic(seeds, days=days)
    print(
        f"\nsynthetic: seeds {seeds}, {days} days, {run.bars:,} bars, {run.scored_bars:,} scored after warm-up "
        f"({time.perf_counter() - t0:.0f} s)"
    )
    _rows(run.reports)
    ensemble = run.reports[0]
    figures: dict[str, object] = {
        "synthetic_event_recall": round(ensemble.recall, 4),
        "synthetic_false_alert_rate": round(ensemble.false_alert_rate, 5),
        "synthetic_precision": round(ensemble.precision, 4),
        "synthetic_median_delay_bars": ensemble.median_delay,
        "synthetic_flash_crash_median_delay_bars": ensemble.median_delay_of("flash_crash"),
        "synthetic_events": ensemble.events,
        "synthetic_found_by_kind": {k: [f, t] for k, f, t in ensemble.found_by_kind},
        "synthetic_best_single_model_recall": max((r.recall for r in run.reports[1:]), default=float("nan")),
    }
    if not args.quick:
        # the LSTM autoencoder is an opt-in member (slow to train): compared on the first seed alone
        t0 = time.perf_counter()
        members = (*DEFAULT_MEMBERS, KNOWN_MEMBERS["lstm_autoencoder"])
        walk = WalkForward(Ensemble(members), warmup=1500, window=6000, min_span_ns=2 * 86_400 * 10**9)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with_ae = evaluate_synthetic(seeds[:1], days=days, walk=walk)
        print(f"\nsynthetic, seed {seeds[0]}, with the LSTM autoencoder ({time.perf_counter() - t0:.0f} s)")
        _rows(with_ae.reports)
        rows = {r.name: r for r in with_ae.reports}
        figures["seed1_ensemble_with_lstm_recall"] = round(rows["ensemble"].recall, 4)
        figures["seed1_ensemble_with_lstm_false_alert_rate"] = round(rows["ensemble"].false_alert_rate, 5)
        figures["seed1_lstm_autoencoder_recall"] = round(rows["lstm_autoencoder"].recall, 4)
    for index in ["sp500"] if args.quick else ["sp500", "nasdaq"]:
        walk = WalkForward(Ensemble(alert_rate=DAILY_ALERT_RATE), warmup=500, refit_every=250, window=2500)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reports, out = evaluate_index(index, walk)
        r = reports[0]
        flagged = sorted(str(np.datetime64(int(t), "ns").astype("datetime64[D]")) for t in out.alerts["ts"].tolist())
        print(f"\n{index}: {r.found}/{r.events} events flagged, {r.alert_rate:.2%} of days alert")
        _rows(reports)
        figures[f"{index}_events_flagged"] = r.found
        figures[f"{index}_events_total"] = r.events
        figures[f"{index}_alert_rate"] = round(r.alert_rate, 5)
        figures[f"{index}_alert_days"] = len(set(flagged))
    pinned = pin_one_core()
    speed = _speed(2000 if args.quick else 10_000)
    print(f"\nspeed (bars/s, {'one core' if pinned else 'whole machine'}):")
    for k, v in speed.items():
        print(f"  {k:40} {v:12,.0f}")
    figures.update({k: round(v) for k, v in speed.items()})
    figures["machine"] = machine()
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
