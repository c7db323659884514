"""The ingest step: raw batch -> validation -> bar building -> store, with running statistics.

:class:`IngestPipeline` is plain Python over the core (no Ray): ``sentinel ingest`` runs it in-process and
``sentinel up`` runs it inside a Ray actor. Feeding it a stream batch by batch stores exactly what one call with
the whole stream stores.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pandas as pd

from ingest.bars import BarBuilder
from ingest.records import NS_PER_MINUTE, NS_PER_SECOND, BarBatch, QuoteBatch, TickBatch
from ingest.sources.base import RawBatch
from ingest.store.base import Store
from ingest.validation import QuarantineBatch, ValidationConfig, Validator, wall_clock_ns


@dataclass
class PipelineStats:
    """Running counts of an ingest pipeline (rows, not batches, unless said)."""

    batches: int = 0
    received: int = 0
    accepted: Counter[str] = field(default_factory=Counter)
    quarantined: Counter[str] = field(default_factory=Counter)
    suspicious: int = 0
    bars_built: Counter[str] = field(default_factory=Counter)
    stored: Counter[str] = field(default_factory=Counter)
    last_ts: dict[str, int] = field(default_factory=dict)

    @property
    def rejected(self) -> int:
        """Rows quarantined, all reasons."""
        return sum(self.quarantined.values())

    def as_dict(self) -> dict[str, object]:
        """A JSON-friendly copy."""
        return {
            "batches": self.batches,
            "received": self.received,
            "accepted": dict(self.accepted),
            "quarantined": dict(self.quarantined),
            "suspicious": self.suspicious,
            "bars_built": dict(self.bars_built),
            "stored": dict(self.stored),
            "last_ts": dict(self.last_ts),
        }


@dataclass
class Validated:
    """The outcome of validating one raw batch: accepted rows by kind (``None`` when the kind was absent)."""

    ticks: TickBatch | None = None
    quotes: QuoteBatch | None = None
    bars: BarBatch | None = None
    rejected: QuarantineBatch = field(default_factory=QuarantineBatch.empty)


def interval_label(interval_ns: int) -> str:
    """A short label of a bar interval: ``1s``, ``1min``, ``1h``, ``1d``."""
    for unit, ns in (
        ("d", 86_400 * NS_PER_SECOND),
        ("h", 3_600 * NS_PER_SECOND),
        ("min", NS_PER_MINUTE),
        ("s", NS_PER_SECOND),
    ):
        if interval_ns % ns == 0:
            return f"{interval_ns // ns}{unit}"
    return f"{interval_ns}ns"


def parse_interval(text: str) -> int:
    """Nanoseconds of an interval written like ``1s``, ``500ms``, ``1min``, ``5min``, ``1h``, ``1d``."""
    try:
        td = pd.Timedelta(text.strip())
    except ValueError as exc:
        raise ValueError(f"interval={text!r}: not a duration (use e.g. 1s, 1min, 5min, 1h)") from exc
    if td <= pd.Timedelta(0):
        raise ValueError(f"interval={text!r}: must be positive")
    return int(td.value)


class BatchValidation:
    """Validation of raw batches of every record kind, with running statistics (no store involved).

    Used on its own where validation runs in one process and storage in another (``sentinel up`` with the
    Redis buffer between them); :class:`IngestPipeline` runs it in-process.
    """

    def __init__(
        self,
        validation: ValidationConfig | None = None,
        clock: Callable[[], int] = wall_clock_ns,
        source: str = "",
    ) -> None:
        cfg = validation or ValidationConfig()
        self._validators = {k: Validator(k, cfg, clock=clock, source=source) for k in ("tick", "quote", "bar")}
        self.stats = PipelineStats()

    def validate(self, batch: RawBatch) -> Validated:
        """Validate one raw batch: the accepted rows by kind and the rejected ones; counts them."""
        st = self.stats
        st.batches += 1
        st.received += len(batch)
        out = Validated()
        if batch.trades is not None and len(batch.trades):
            res = self._validators["tick"].validate(batch.trades)
            out.ticks, out.rejected = res.accepted, QuarantineBatch.concat([out.rejected, res.rejected])
            st.accepted["trades"] += len(out.ticks)
            st.suspicious += int(out.ticks.suspicious.sum())
        if batch.quotes is not None and len(batch.quotes):
            res = self._validators["quote"].validate(batch.quotes)
            out.quotes, out.rejected = res.accepted, QuarantineBatch.concat([out.rejected, res.rejected])
            st.accepted["quotes"] += len(out.quotes)
        if batch.bars is not None and len(batch.bars):
            res = self._validators["bar"].validate(batch.bars, interval_ns=batch.bar_interval_ns)
            out.bars, out.rejected = res.accepted, QuarantineBatch.concat([out.rejected, res.rejected])
            st.accepted["bars"] += len(out.bars)
        st.quarantined.update(out.rejected.reason.tolist())
        return out


class IngestPipeline:
    """Validates raw batches, builds time bars from trades and quotes, and writes everything to a store.

    Parameters
    ----------
    store : Store
        Where accepted rows, bars and quarantined rows go.
    validation : ValidationConfig
        The validation rules (universe, tolerances, fat-finger threshold).
    bar_intervals_ns : sequence of int
        Bar lengths to build from trades and quotes (e.g. 1 s and 1 min).
    clock : callable returning int
        Now in ns UTC, for the future-timestamp rule.
    source : str
        Name of the source, kept with quarantined rows.
    """

    def __init__(
        self,
        store: Store,
        validation: ValidationConfig | None = None,
        bar_intervals_ns: Sequence[int] = (NS_PER_SECOND, NS_PER_MINUTE),
        clock: Callable[[], int] = wall_clock_ns,
        source: str = "",
    ) -> None:
        self.store = store
        cfg = validation or ValidationConfig()
        self._validation = BatchValidation(cfg, clock=clock, source=source)
        self._builders = [BarBuilder(iv, lateness_ns=cfg.out_of_order_tolerance_ns) for iv in bar_intervals_ns]
        # one set of statistics: validation counts and storage counts side by side
        self.stats = self._validation.stats

    def validate(self, batch: RawBatch) -> Validated:
        """Validate one raw batch (no store writes): the accepted rows by kind and the rejected ones."""
        return self._validation.validate(batch)

    def absorb(
        self, ticks: TickBatch | None = None, quotes: QuoteBatch | None = None, bars: BarBatch | None = None
    ) -> PipelineStats:
        """Store validated rows and the bars they close; returns the running statistics."""
        st = self.stats
        if ticks is not None and len(ticks):
            st.stored["ticks"] += self.store.write_ticks(ticks)
            self._note_last(ticks.symbol, ticks.ts)
        if quotes is not None and len(quotes):
            st.stored["quotes"] += self.store.write_quotes(quotes)
            self._note_last(quotes.symbol, quotes.ts)
        if bars is not None and len(bars):
            self._store_bars(bars, built=False)
            self._note_last(bars.symbol, bars.ts)
        if (ticks is not None and len(ticks)) or (quotes is not None and len(quotes)):
            for builder in self._builders:
                self._store_bars(builder.update(ticks, quotes), built=True)
        return st

    def store_rejected(self, rejected: QuarantineBatch) -> PipelineStats:
        """Store quarantined rows."""
        if len(rejected):
            self.stats.stored["quarantine"] += self.store.write_quarantine(rejected)
        return self.stats

    def process(self, batch: RawBatch) -> PipelineStats:
        """Validate, build bars and store one raw batch; returns the running statistics."""
        v = self.validate(batch)
        self.store_rejected(v.rejected)
        return self.absorb(v.ticks, v.quotes, v.bars)

    def close_until(self, ts_ns: int) -> PipelineStats:
        """Close the bars that end at or before ``ts_ns`` (a timer for quiet symbols) and store them."""
        for builder in self._builders:
            self._store_bars(builder.close_until(ts_ns), built=True)
        return self.stats

    def flush(self) -> PipelineStats:
        """Close and store every open bar (end of stream)."""
        for builder in self._builders:
            self._store_bars(builder.flush(), built=True)
        return self.stats

    def _store_bars(self, bars: BarBatch, built: bool) -> None:
        if not len(bars):
            return
        if built:
            self.stats.bars_built[interval_label(int(bars.interval_ns[0]))] += len(bars)
        self.stats.stored["bars"] += self.store.write_bars(bars)

    def _note_last(self, symbols: object, ts: object) -> None:
        frame = pd.DataFrame({"symbol": symbols, "ts": ts})
        if len(frame):
            for sym, t in frame.groupby("symbol", sort=False)["ts"].max().items():
                self.stats.last_ts[str(sym)] = max(int(t), self.stats.last_ts.get(str(sym), int(t)))
