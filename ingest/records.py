"""Market-data records: single value types and their columnar batches.

Every event carries an integer-nanosecond UTC timestamp (``ts``) and a per-source arrival sequence number
(``seq``). ``(symbol, ts, seq)`` is the natural key of a trade or a quote: two prints with the same price and
size at the same millisecond are different trades when their sequence numbers differ (the consolidated tape has
many of them), and the same record delivered twice keeps its sequence number.

Two shapes exist for each record kind:

- :class:`Tick`, :class:`Quote`, :class:`Bar` are frozen value types, validated on construction; use them at the
  edges (an adapter's parser, an API payload, a test).
- :class:`TickBatch`, :class:`QuoteBatch`, :class:`BarBatch` hold the same fields as numpy columns; the pipeline
  moves these (validation, bar building and the stores are vectorised over a batch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Self

import numpy as np
import numpy.typing as npt
import pandas as pd

NS_PER_SECOND = 1_000_000_000
NS_PER_MINUTE = 60 * NS_PER_SECOND
NS_PER_DAY = 86_400 * NS_PER_SECOND

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Obj = npt.NDArray[np.object_]
Bool = npt.NDArray[np.bool_]


class InvalidRecordError(ValueError):
    """A record that cannot be represented: names the field, the value and the rule it broke."""

    def __init__(self, field: str, value: object, rule: str) -> None:
        self.field = field
        self.value = value
        self.rule = rule
        super().__init__(f"{field}={value!r}: {rule}")


def _check_ts(ts_ns: int) -> None:
    if not isinstance(ts_ns, int | np.integer) or isinstance(ts_ns, bool):
        raise InvalidRecordError("ts", ts_ns, "must be an integer number of nanoseconds since the epoch (UTC)")


def _check_symbol(symbol: str) -> None:
    if not isinstance(symbol, str) or not symbol:
        raise InvalidRecordError("symbol", symbol, "must be a non-empty string")


def _check_finite(name: str, value: float) -> None:
    if not isinstance(value, int | float | np.integer | np.floating) or not math.isfinite(value):
        raise InvalidRecordError(name, value, "must be a finite number")


def _check_positive(name: str, value: float) -> None:
    _check_finite(name, value)
    if value <= 0:
        raise InvalidRecordError(name, value, "must be > 0")


def _check_non_negative(name: str, value: float) -> None:
    _check_finite(name, value)
    if value < 0:
        raise InvalidRecordError(name, value, "must be >= 0")


@dataclass(frozen=True, slots=True)
class Tick:
    """One trade print.

    Parameters
    ----------
    ts : int
        Trade time, nanoseconds since the epoch, UTC.
    symbol : str
        Instrument identifier, e.g. ``"SPY"``.
    price : float
        Trade price in the instrument's quote currency, > 0.
    size : float
        Traded quantity (shares, coins, contracts), >= 0.
    seq : int
        Arrival sequence number or venue trade id; part of the natural key.
    """

    ts: int
    symbol: str
    price: float
    size: float
    seq: int = 0

    def __post_init__(self) -> None:
        _check_ts(self.ts)
        _check_symbol(self.symbol)
        _check_positive("price", self.price)
        _check_non_negative("size", self.size)


@dataclass(frozen=True, slots=True)
class Quote:
    """Top of book: best bid and ask with their sizes. A crossed quote (bid > ask) is invalid."""

    ts: int
    symbol: str
    bid: float
    ask: float
    bid_size: float
    ask_size: float
    seq: int = 0

    def __post_init__(self) -> None:
        _check_ts(self.ts)
        _check_symbol(self.symbol)
        _check_positive("bid", self.bid)
        _check_positive("ask", self.ask)
        _check_non_negative("bid_size", self.bid_size)
        _check_non_negative("ask_size", self.ask_size)
        if self.bid > self.ask:
            raise InvalidRecordError("bid", self.bid, f"crossed quote: bid > ask ({self.ask!r})")


@dataclass(frozen=True, slots=True)
class Bar:
    """A time bar, labelled by its start time ``ts``; it covers ``[ts, ts + interval_ns)``.

    ``open/high/low/close`` come from trades; a bar with quotes but no trades takes them from the quote
    midpoint (``trade_count == 0``). ``bid``/``ask``/``bid_size``/``ask_size`` are the last quote in the
    bar and ``spread`` is ``ask - bid`` at that quote; all are NaN when the bar saw no quote.
    """

    ts: int
    symbol: str
    interval_ns: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    vwap: float = math.nan
    trade_count: int = 0
    bid: float = math.nan
    ask: float = math.nan
    bid_size: float = math.nan
    ask_size: float = math.nan
    spread: float = math.nan
    quote_count: int = 0
    suspicious_count: int = 0

    def __post_init__(self) -> None:
        _check_ts(self.ts)
        _check_symbol(self.symbol)
        if self.interval_ns <= 0:
            raise InvalidRecordError("interval_ns", self.interval_ns, "must be > 0")
        for name in ("open", "high", "low", "close"):
            _check_positive(name, getattr(self, name))
        _check_non_negative("volume", self.volume)
        if self.high < max(self.open, self.close, self.low):
            raise InvalidRecordError("high", self.high, "must be >= open, close and low")
        if self.low > min(self.open, self.close):
            raise InvalidRecordError("low", self.low, "must be <= open and close")


# --------------------------------------------------------------------------------------------------------
# Columnar batches
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Columns:
    """Shared behaviour of the columnar batches: equal-length numpy columns, one per field."""

    _DTYPES: ClassVar[dict[str, Any]]

    def __post_init__(self) -> None:
        n = None
        for f in fields(self):
            col = getattr(self, f.name)
            want = self._DTYPES[f.name]
            if not isinstance(col, np.ndarray) or col.dtype != want:
                object.__setattr__(self, f.name, np.asarray(col, dtype=want))
                col = getattr(self, f.name)
            if col.ndim != 1:
                raise InvalidRecordError(f.name, col.shape, "columns must be one-dimensional")
            if n is None:
                n = len(col)
            elif len(col) != n:
                raise InvalidRecordError(f.name, len(col), f"column length differs from the others ({n})")

    def __len__(self) -> int:
        return len(getattr(self, next(iter(self._DTYPES))))

    @classmethod
    def _trusted(cls, **columns: Any) -> Self:
        """Build from columns already of the right dtype and length, skipping the checks (internal fast path)."""
        obj = object.__new__(cls)
        for name, col in columns.items():
            object.__setattr__(obj, name, col)
        return obj

    @classmethod
    def empty(cls) -> Self:
        """A batch with no rows."""
        return cls(**{name: np.empty(0, dtype=dt) for name, dt in cls._DTYPES.items()})

    def take(self, index: npt.NDArray[np.bool_] | npt.NDArray[np.intp] | slice) -> Self:
        """Rows selected by a boolean mask, an index array or a slice."""
        return self._trusted(**{name: getattr(self, name)[index] for name in self._DTYPES})

    @classmethod
    def concat(cls, batches: list[Self]) -> Self:
        """Rows of all ``batches``, in order."""
        if not batches:
            return cls.empty()
        if len(batches) == 1:
            return batches[0]
        return cls._trusted(**{name: np.concatenate([getattr(b, name) for b in batches]) for name in cls._DTYPES})

    def to_frame(self) -> pd.DataFrame:
        """A DataFrame with one column per field (timestamps stay integer nanoseconds)."""
        return pd.DataFrame({f.name: getattr(self, f.name) for f in fields(self)})

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> Self:
        """Build from a DataFrame holding every field as a column (extra columns are ignored)."""
        missing = [name for name in cls._DTYPES if name not in frame.columns]
        if missing:
            raise InvalidRecordError(missing[0], None, f"missing column (have {list(frame.columns)})")
        return cls(**{name: frame[name].to_numpy(dtype=dt) for name, dt in cls._DTYPES.items()})

    def equals(self, other: object) -> bool:
        """Exact equality of every column (NaN equals NaN)."""
        if type(other) is not type(self) or len(other) != len(self):
            return False
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if a.dtype.kind == "f":
                if not np.array_equal(a, b, equal_nan=True):
                    return False
            elif not np.array_equal(a, b):
                return False
        return True


@dataclass(frozen=True, eq=False)
class TickBatch(_Columns):
    """Trade prints as columns; ``suspicious`` marks prints kept but flagged by validation."""

    ts: I64
    symbol: Obj
    price: F64
    size: F64
    seq: I64
    suspicious: Bool

    _DTYPES: ClassVar[dict[str, Any]] = {
        "ts": np.int64,
        "symbol": object,
        "price": np.float64,
        "size": np.float64,
        "seq": np.int64,
        "suspicious": np.bool_,
    }

    @classmethod
    def from_ticks(cls, ticks: list[Tick]) -> TickBatch:
        """Columns of a list of :class:`Tick`."""
        return cls(
            ts=np.array([t.ts for t in ticks], dtype=np.int64),
            symbol=np.array([t.symbol for t in ticks], dtype=object),
            price=np.array([t.price for t in ticks], dtype=np.float64),
            size=np.array([t.size for t in ticks], dtype=np.float64),
            seq=np.array([t.seq for t in ticks], dtype=np.int64),
            suspicious=np.zeros(len(ticks), dtype=np.bool_),
        )


@dataclass(frozen=True, eq=False)
class QuoteBatch(_Columns):
    """Top-of-book quotes as columns."""

    ts: I64
    symbol: Obj
    bid: F64
    ask: F64
    bid_size: F64
    ask_size: F64
    seq: I64

    _DTYPES: ClassVar[dict[str, Any]] = {
        "ts": np.int64,
        "symbol": object,
        "bid": np.float64,
        "ask": np.float64,
        "bid_size": np.float64,
        "ask_size": np.float64,
        "seq": np.int64,
    }

    @classmethod
    def from_quotes(cls, quotes: list[Quote]) -> QuoteBatch:
        """Columns of a list of :class:`Quote`."""
        return cls(**{name: np.array([getattr(q, name) for q in quotes], dtype=dt) for name, dt in cls._DTYPES.items()})


@dataclass(frozen=True, eq=False)
class BarBatch(_Columns):
    """Time bars as columns; see :class:`Bar` for the meaning of each field."""

    ts: I64
    symbol: Obj
    interval_ns: I64
    open: F64
    high: F64
    low: F64
    close: F64
    volume: F64
    vwap: F64
    trade_count: I64
    bid: F64
    ask: F64
    bid_size: F64
    ask_size: F64
    spread: F64
    quote_count: I64
    suspicious_count: I64

    _DTYPES: ClassVar[dict[str, Any]] = {
        "ts": np.int64,
        "symbol": object,
        "interval_ns": np.int64,
        "open": np.float64,
        "high": np.float64,
        "low": np.float64,
        "close": np.float64,
        "volume": np.float64,
        "vwap": np.float64,
        "trade_count": np.int64,
        "bid": np.float64,
        "ask": np.float64,
        "bid_size": np.float64,
        "ask_size": np.float64,
        "spread": np.float64,
        "quote_count": np.int64,
        "suspicious_count": np.int64,
    }

    def to_bars(self) -> list[Bar]:
        """One :class:`Bar` per row."""
        names = list(self._DTYPES)
        cols = [getattr(self, n).tolist() for n in names]
        return [Bar(**dict(zip(names, row, strict=True))) for row in zip(*cols, strict=True)]


_ZONED = r"(?:Z|[+-]\d{2}(?::?\d{2})?)$"


def parse_timestamps(values: pd.Series) -> I64:
    """Text timestamps as int64 ns UTC; unreadable or empty values give ``NaT`` (int64 min).

    A value with a zone (``Z``, ``+02:00``) is converted to UTC; a value without one is taken as UTC. The two
    kinds are parsed apart: parsed together, pandas would read naive values in the first value's offset.
    """
    text = values.astype("string").str.strip()
    zoned = text.str.contains(_ZONED, regex=True).fillna(False).to_numpy(dtype=bool)
    out = np.full(len(text), np.iinfo(np.int64).min, dtype=np.int64)
    for mask in (zoned, ~zoned):
        if mask.any():
            part = pd.to_datetime(text[mask], utc=True, errors="coerce", format="ISO8601")
            out[mask] = part.astype("datetime64[ns, UTC]").to_numpy(dtype="datetime64[ns]").view(np.int64)
    return out


def to_ns(values: Any) -> I64:
    """Timestamps (strings, datetimes, pandas values, with a zone or UTC) as int64 nanoseconds UTC.

    Naive timestamps are taken as UTC. Raises :class:`InvalidRecordError` naming the first value that
    cannot be parsed.
    """
    series = values if isinstance(values, pd.Series) else pd.Series(values)
    if series.dtype.kind in "iu":
        return series.to_numpy(dtype=np.int64)
    if series.dtype.kind == "M" or isinstance(series.dtype, pd.DatetimeTZDtype):
        parsed = pd.to_datetime(series, utc=True)
        return parsed.astype("datetime64[ns, UTC]").to_numpy(dtype="datetime64[ns]").view(np.int64).copy()
    out = parse_timestamps(series)
    bad = (out == np.iinfo(np.int64).min) & series.notna().to_numpy()
    if bad.any():
        value = series[bad].iloc[0]
        raise InvalidRecordError("timestamp", value, "not a timestamp")
    return out
