"""One instrument's streaming state: bars per interval and their features, one step per micro-batch.

An :class:`AssetProcessor` holds everything a symbol carries between micro-batches: a
:class:`~ingest.bars.BarBuilder` and a :class:`~features.engine.FeatureEngine` (with its state) per bar
interval, and running counts. :meth:`AssetProcessor.process` folds one micro-batch of validated trades, quotes
and bars into that state and returns the bars it closed and their feature values. Any split of a symbol's
records into micro-batches gives the bars and features of one call, bit for bit: bars are aggregated once, when
they close, and the feature engine's step is exact over any split of the closed bars.

The processor is plain Python (no Ray): the Ray actor in ``actors/asset.py`` wraps it, and the state survives a
restart through :meth:`AssetProcessor.checkpoint` and :meth:`AssetProcessor.restore`, kept by a
:class:`CheckpointStore`.
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar, runtime_checkable
from urllib.parse import quote

import numpy as np
import pandas as pd

from features.engine import EngineState, FeatureEngine, FeatureFrame, FeatureSet
from features.sets import default_feature_set
from ingest.bars import BarBuilder
from ingest.records import NS_PER_MINUTE, NS_PER_SECOND, BarBatch, QuoteBatch, TickBatch
from ingest.store.base import ALERT_COLUMNS
from models.base import Observations

if TYPE_CHECKING:
    from models.walkforward import WalkForward, WalkState

#: Bar lengths built by default: 1 s and 1 min, in nanoseconds.
DEFAULT_INTERVALS_NS: tuple[int, ...] = (NS_PER_SECOND, NS_PER_MINUTE)
_R = TypeVar("_R", TickBatch, QuoteBatch, BarBatch)
_NO_TS = int(np.iinfo(np.int64).min)


@dataclass(frozen=True)
class AssetOutput:
    """What one micro-batch produced for one symbol.

    Parameters
    ----------
    symbol : str
        The instrument.
    bars : dict of int to BarBatch
        Bars closed by the micro-batch, by bar length in ns; sorted by time within each length. Lengths that
        closed nothing are absent.
    features : dict of int to FeatureFrame
        Feature values of those bars, row for row, by bar length in ns.
    records : int
        Rows (trades, quotes and input bars) the micro-batch carried.
    alerts : pandas.DataFrame, optional
        Alerts raised by the micro-batch (columns :data:`~ingest.store.base.ALERT_COLUMNS`), ``None`` when none.
    last_ts : int, optional
        The latest record time of the symbol after the micro-batch, ns UTC (``None`` before any record).
    last_price : float
        The last trade price (mid quote when the symbol has no trades yet; NaN before any).
    """

    symbol: str
    bars: dict[int, BarBatch] = field(default_factory=dict)
    features: dict[int, FeatureFrame] = field(default_factory=dict)
    records: int = 0
    alerts: pd.DataFrame | None = None
    last_ts: int | None = None
    last_price: float = float("nan")

    @property
    def alert_count(self) -> int:
        """Alerts in this output."""
        return 0 if self.alerts is None else len(self.alerts)

    @property
    def bar_count(self) -> int:
        """Bars of every length in this output."""
        return sum(len(b) for b in self.bars.values())

    @staticmethod
    def concat(outputs: Sequence[AssetOutput]) -> AssetOutput:
        """The outputs of consecutive micro-batches of one symbol as one output.

        Raises
        ------
        ValueError
            When ``outputs`` is empty or mixes symbols (naming the symbol).
        """
        if not outputs:
            raise ValueError("outputs: nothing to concatenate")
        symbol = outputs[0].symbol
        for out in outputs:
            if out.symbol != symbol:
                raise ValueError(f"symbol={out.symbol!r}: outputs of one symbol ({symbol!r}) expected")
        intervals = sorted({iv for out in outputs for iv in out.bars})
        bars = {iv: BarBatch.concat([o.bars[iv] for o in outputs if iv in o.bars]) for iv in intervals}
        features = {
            iv: FeatureFrame.concat([o.features[iv] for o in outputs if iv in o.features])
            for iv in intervals
            if any(iv in o.features for o in outputs)
        }
        found = [o.alerts for o in outputs if o.alerts is not None and len(o.alerts)]
        alerts = pd.concat(found, ignore_index=True) if found else None
        last = outputs[-1]
        return AssetOutput(
            symbol, bars, features, sum(o.records for o in outputs), alerts, last.last_ts, last.last_price
        )

    def equals(self, other: AssetOutput) -> bool:
        """Exact equality of symbol, record count, bars, features and alerts (NaN equals NaN)."""
        if (self.symbol, self.records, sorted(self.bars), sorted(self.features)) != (
            other.symbol,
            other.records,
            sorted(other.bars),
            sorted(other.features),
        ):
            return False
        if not all(self.bars[iv].equals(other.bars[iv]) for iv in self.bars):
            return False
        if self.alert_count != other.alert_count:
            return False
        if (
            self.alerts is not None
            and other.alerts is not None
            and not self.alerts.reset_index(drop=True).equals(other.alerts.reset_index(drop=True))
        ):
            return False
        return all(frames_equal(self.features[iv], other.features[iv]) for iv in self.features)


def frames_equal(a: FeatureFrame, b: FeatureFrame) -> bool:
    """Exact equality of two feature frames: times, columns in order, values (NaN equals NaN)."""
    if list(a.values) != list(b.values) or not np.array_equal(a.ts, b.ts):
        return False
    return all(np.array_equal(a.values[c], b.values[c], equal_nan=True) for c in a.values)


@dataclass
class AssetCounters:
    """Running counts of one symbol (rows, not batches, unless said).

    ``last_ts`` is the latest record time seen, ns UTC (the smallest int64 before any record).
    """

    batches: int = 0
    ticks: int = 0
    quotes: int = 0
    bars_in: int = 0
    bars_out: dict[int, int] = field(default_factory=dict)
    alerts: int = 0
    last_ts: int = _NO_TS

    @property
    def records(self) -> int:
        """Rows received, all kinds."""
        return self.ticks + self.quotes + self.bars_in

    def as_dict(self) -> dict[str, object]:
        """A JSON-friendly copy."""
        return {
            "batches": self.batches,
            "ticks": self.ticks,
            "quotes": self.quotes,
            "bars_in": self.bars_in,
            "bars_out": {str(k): v for k, v in self.bars_out.items()},
            "alerts": self.alerts,
            "last_ts": None if self.last_ts == _NO_TS else self.last_ts,
        }


class AssetProcessor:
    """The streaming state of one symbol: bars per interval, their features, and counts.

    Parameters
    ----------
    symbol : str
        The instrument; every row given to :meth:`process` must carry it.
    intervals_ns : sequence of int
        Bar lengths built from trades and quotes, in nanoseconds.
    lateness_ns : int
        How long a bar waits for late rows after its end, in nanoseconds; the validator's out-of-order
        tolerance.
    feature_sets : mapping of int to FeatureSet, optional
        The feature set per bar length; :func:`~features.sets.default_feature_set` for lengths not given (also
        for lengths of input bars).
    detection : WalkForward, optional
        The anomaly ensemble on its walk-forward schedule (:class:`~models.ensemble.WalkForward`), run on the
        bars of ``detect_interval_ns`` built from trades and quotes and on input bars of any length (a state per
        length); its alerts join the output's (detector ``ensemble``). ``None``: no detection.
    detect_interval_ns : int
        Length of the built bars the detection scores.

    Attributes
    ----------
    position : object
        Where the caller's input stood when the last batch was applied (a buffer entry id, a batch sequence
        number); set by :meth:`process` and kept in checkpoints, ``None`` at first.

    Examples
    --------
    >>> ticks = TickBatch(ts=[0, 10**9, 61 * 10**9], symbol=["X"] * 3, price=[10.0, 11.0, 9.0],
    ...                   size=[1.0, 1.0, 2.0], seq=[0, 1, 2], suspicious=[False] * 3)
    >>> proc = AssetProcessor("X", intervals_ns=(NS_PER_MINUTE,), lateness_ns=0)
    >>> out = proc.process(ticks, position=0)
    >>> out.bars[NS_PER_MINUTE].close.tolist(), proc.flush().bars[NS_PER_MINUTE].close.tolist()
    ([11.0], [9.0])
    """

    def __init__(
        self,
        symbol: str,
        intervals_ns: Sequence[int] = DEFAULT_INTERVALS_NS,
        lateness_ns: int = NS_PER_SECOND,
        feature_sets: Mapping[int, FeatureSet] | None = None,
        detection: WalkForward | None = None,
        detect_interval_ns: int = NS_PER_MINUTE,
    ) -> None:
        if not isinstance(symbol, str) or not symbol:
            raise ValueError(f"symbol={symbol!r}: must be a non-empty string")
        if len(set(intervals_ns)) != len(intervals_ns):
            raise ValueError(f"intervals_ns={tuple(intervals_ns)!r}: an interval appears more than once")
        self.symbol = symbol
        self.intervals_ns = tuple(int(iv) for iv in intervals_ns)
        self.lateness_ns = lateness_ns
        self._feature_sets = dict(feature_sets or {})
        self._builders = {iv: BarBuilder(iv, lateness_ns=lateness_ns) for iv in self.intervals_ns}
        self._engines: dict[int, tuple[FeatureEngine, EngineState]] = {}
        for iv in self.intervals_ns:
            self._engine(iv)
        self.counters = AssetCounters()
        self.position: object = None
        self._last_price = float("nan")
        self._last_good_price = float("nan")
        self._has_trades = False
        self.detection = detection
        self.detect_interval_ns = detect_interval_ns
        self._detect_states: dict[int, WalkState] = {}
        self._detected: list[pd.DataFrame] = []

    # ---------------------------------------------------------------------------------------------------
    def process(
        self,
        ticks: TickBatch | None = None,
        quotes: QuoteBatch | None = None,
        bars: BarBatch | None = None,
        position: object = None,
    ) -> AssetOutput:
        """Fold one micro-batch of validated rows of this symbol; return the bars it closed and their features.

        Parameters
        ----------
        ticks, quotes : TickBatch, QuoteBatch, optional
            Validated trades and quotes, in arrival order.
        bars : BarBatch, optional
            Validated bars from the source (any lengths); each length gets its own feature engine and must
            arrive in increasing time.
        position : object, optional
            The caller's input position after this batch, kept in :attr:`position` (``None`` keeps the last).

        Raises
        ------
        ValueError
            When a row carries another symbol, or input bars of one length go back in time (naming the value).
        """
        ticks = self._checked("ticks", ticks)
        quotes = self._checked("quotes", quotes)
        bars = self._checked("bars", bars)
        c = self.counters
        c.batches += 1
        out = AssetOutput(self.symbol)
        records = 0
        if ticks is not None or quotes is not None:
            for iv, builder in self._builders.items():
                self._emit(out, iv, builder.update(ticks, quotes))
        for name, rows in (("ticks", ticks), ("quotes", quotes), ("bars", bars)):
            if rows is not None:
                records += len(rows)
                c.last_ts = max(c.last_ts, int(rows.ts.max()))
                if name == "ticks":
                    c.ticks += len(rows)
                elif name == "quotes":
                    c.quotes += len(rows)
                else:
                    c.bars_in += len(rows)
        if bars is not None:
            lengths = np.unique(bars.interval_ns)
            for iv in lengths.tolist():
                one = bars if len(lengths) == 1 else bars.take(bars.interval_ns == iv)
                if len(one) > 1 and not (np.diff(one.ts) > 0).all():
                    one = one.take(np.argsort(one.ts, kind="stable"))
                self._emit(out, int(iv), one, source=True)
        if ticks is not None:
            alerts = self._suspicious_prints(ticks)
            if alerts is not None:
                out = AssetOutput(self.symbol, out.bars, out.features, alerts=alerts)
                c.alerts += len(alerts)
            self._last_price = float(ticks.price[-1])
        elif quotes is not None and not self._has_trades:
            self._last_price = float((quotes.bid[-1] + quotes.ask[-1]) / 2)
        elif bars is not None and not self._has_trades:
            self._last_price = float(bars.close[-1])
        self._has_trades = self._has_trades or ticks is not None
        if position is not None:
            self.position = position
        return self._output(out, records)

    def close_until(self, ts_ns: int, position: object = None) -> AssetOutput:
        """Close the bars that end at or before ``ts_ns`` (ns UTC): a timer for a symbol gone quiet."""
        out = AssetOutput(self.symbol)
        for iv, builder in self._builders.items():
            self._emit(out, iv, builder.close_until(ts_ns))
        if position is not None:
            self.position = position
        return self._output(out, 0)

    def flush(self, position: object = None) -> AssetOutput:
        """Close every open bar (end of stream) and return them with their features."""
        out = AssetOutput(self.symbol)
        for iv, builder in self._builders.items():
            self._emit(out, iv, builder.flush())
        if position is not None:
            self.position = position
        return self._output(out, 0)

    # ---------------------------------------------------------------------------------------------------
    def checkpoint(self, position: object = None) -> bytes:
        """The whole state as bytes (pickle), with the caller's input position (``None`` keeps the last).

        :meth:`restore` of the bytes gives a processor that continues exactly where this one stands.
        """
        if position is not None:
            self.position = position
        return pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def restore(cls, blob: bytes) -> AssetProcessor:
        """The processor a :meth:`checkpoint` saved.

        Only restore bytes this system wrote (its own checkpoint store): unpickling runs code.

        Raises
        ------
        TypeError
            When the bytes hold something else (naming its type).
        """
        # the blob comes from the system's own checkpoint store, never from outside
        obj = pickle.loads(blob)  # noqa: S301
        if not isinstance(obj, cls):
            raise TypeError(f"blob: holds a {type(obj).__name__}, not an {cls.__name__}")
        return obj

    @property
    def pending_rows(self) -> int:
        """Rows held for bars that are still open, over every interval."""
        return sum(b.pending_rows for b in self._builders.values())

    @property
    def late_rows(self) -> int:
        """Rows that arrived after their bar closed (not in any bar), over every interval."""
        return sum(b.late_rows for b in self._builders.values())

    # ---------------------------------------------------------------------------------------------------
    def _engine(self, interval_ns: int) -> tuple[FeatureEngine, EngineState]:
        pair = self._engines.get(interval_ns)
        if pair is None:
            fs = self._feature_sets.get(interval_ns) or default_feature_set(interval_ns)
            engine = FeatureEngine(fs, interval_ns)
            pair = self._engines[interval_ns] = (engine, engine.init_state())
        return pair

    def _output(self, out: AssetOutput, records: int) -> AssetOutput:
        last = self.counters.last_ts
        alerts = out.alerts
        if self._detected:
            found = ([] if alerts is None else [alerts]) + self._detected
            alerts = pd.concat(found, ignore_index=True) if len(found) > 1 else found[0]
            self.counters.alerts += sum(len(a) for a in self._detected)
            self._detected = []
        return AssetOutput(
            self.symbol,
            out.bars,
            out.features,
            records,
            alerts,
            None if last == _NO_TS else last,
            self._last_price,
        )

    def _suspicious_prints(self, ticks: TickBatch) -> pd.DataFrame | None:
        """An alert per print that validation kept but flagged (far from the recent median price).

        The score is the print's log distance from the last unflagged price before it (NaN when none yet).
        """
        good = ~ticks.suspicious
        if good.all():
            self._last_good_price = float(ticks.price[good][-1]) if len(ticks) else self._last_good_price
            return None
        # the last unflagged price before each row: a running maximum of unflagged row indices, carried over
        idx = np.where(good, np.arange(len(ticks)), -1)
        before = np.concatenate(([-1], np.maximum.accumulate(idx)[:-1]))
        prices = np.concatenate(([self._last_good_price], ticks.price))
        reference = prices[before + 1]
        if good.any():
            self._last_good_price = float(ticks.price[good][-1])
        rows = np.flatnonzero(~good)
        price, ref, size = ticks.price[rows], reference[rows], ticks.size[rows]
        with np.errstate(divide="ignore", invalid="ignore"):
            score = np.abs(np.log(price / ref))
        details = [
            json.dumps({"price": p, "reference": None if r != r else r, "size": z, "seq": q})
            for p, r, z, q in zip(price.tolist(), ref.tolist(), size.tolist(), ticks.seq[rows].tolist(), strict=True)
        ]
        return pd.DataFrame(
            {
                "ts": ticks.ts[rows],
                "symbol": self.symbol,
                "kind": "price_outlier",
                "detector": "fat_finger",
                "score": score,
                "severity": "warning",
                "details": details,
            },
            columns=list(ALERT_COLUMNS),
        )

    def _emit(self, out: AssetOutput, interval_ns: int, bars: BarBatch, source: bool = False) -> None:
        if not len(bars):
            return
        engine, state = self._engine(interval_ns)
        frame, _ = engine.step(state, bars)
        out.bars[interval_ns] = bars
        out.features[interval_ns] = frame
        self.counters.bars_out[interval_ns] = self.counters.bars_out.get(interval_ns, 0) + len(bars)
        if self.detection is not None and (source or interval_ns == self.detect_interval_ns):
            walk_state = self._detect_states.get(interval_ns)
            if walk_state is None:
                walk_state = self._detect_states[interval_ns] = self.detection.init_state()
            scores = self.detection.update(walk_state, Observations.from_bars(bars, frame))
            if len(scores.alerts):
                self._detected.append(store_alerts(scores.alerts))

    def _checked(self, name: str, rows: _R | None) -> _R | None:
        if rows is None or not len(rows):
            return None
        wrong = rows.symbol != self.symbol
        if wrong.any():
            raise ValueError(f"{name}.symbol={rows.symbol[wrong][0]!r}: this processor holds {self.symbol!r}")
        return rows


def store_alerts(alerts: pd.DataFrame) -> pd.DataFrame:
    """Ensemble alerts (:data:`~models.ensemble.ALERT_FRAME_COLUMNS`) as rows of the alerts table.

    Detector ``ensemble``; the level is ``critical`` at a severity of 0.999 or more, else ``warning``; the details
    (JSON) keep the severity in [0, 1], the contributing models and the explanation.
    """
    details = [
        json.dumps({"severity": sev, "models": models, "explanation": text})
        for sev, models, text in zip(
            alerts["severity"].tolist(), alerts["models"].tolist(), alerts["explanation"].tolist(), strict=True
        )
    ]
    return pd.DataFrame(
        {
            "ts": alerts["ts"].to_numpy(np.int64),
            "symbol": alerts["symbol"].to_numpy(object),
            "kind": alerts["kind"].to_numpy(object),
            "detector": "ensemble",
            "score": alerts["score"].to_numpy(np.float64),
            "severity": np.where(alerts["severity"].to_numpy(np.float64) >= 0.999, "critical", "warning"),
            "details": details,
        },
        columns=list(ALERT_COLUMNS),
    )


# --------------------------------------------------------------------------------------------------------
@runtime_checkable
class CheckpointStore(Protocol):
    """Where checkpoints of per-symbol state are kept: the latest bytes under a key (a symbol)."""

    def save(self, key: str, blob: bytes) -> None:
        """Keep ``blob`` as the latest checkpoint of ``key``, replacing the previous one atomically."""
        ...

    def load(self, key: str) -> bytes | None:
        """The latest checkpoint of ``key``, or ``None`` when there is none."""
        ...


class FileCheckpointStore:
    """Checkpoints as files in one directory, one file per key, replaced atomically (write, then rename).

    Parameters
    ----------
    directory : str or Path
        Created when absent; must be reachable by every process that saves or loads (shared storage on a
        cluster).
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def path(self, key: str) -> Path:
        """The file of ``key`` (any characters: the key is percent-encoded)."""
        if not key:
            raise ValueError(f"key={key!r}: must be non-empty")
        return self.directory / f"{quote(key, safe='')}.ckpt"

    def save(self, key: str, blob: bytes) -> None:
        """Keep ``blob`` as the latest checkpoint of ``key``; a reader sees the old file or the new, never half."""
        target = self.path(key)
        self.directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=target.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(blob)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def load(self, key: str) -> bytes | None:
        """The latest checkpoint of ``key``, or ``None``."""
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError:
            return None

    def __repr__(self) -> str:
        return f"FileCheckpointStore({str(self.directory)!r})"
