"""Vectorised validation of incoming trades, quotes and bars, with a quarantine for what it rejects.

A :class:`Validator` is a step over batches with carried state (the latest timestamp per symbol, the keys seen
inside the out-of-order tolerance, the recent prices for the fat-finger check). Validating a stream batch by
batch gives exactly the result of validating it in one call, whatever the batch boundaries.

Every rejected row goes to a :class:`QuarantineBatch` with a reason code, the field and its value, and the
whole raw row as JSON: nothing that arrived is lost, and the stream goes on. The first rule a row breaks, in
the order of :class:`Reason`, is the one reported.

Rules
-----
``missing_field``
    a required column is absent or the row's value is empty/None.
``malformed``
    a value that does not parse (a price of ``"abc"``, a timestamp of ``"yesterday"``, a bad symbol).
``not_finite``
    NaN or infinite number.
``non_positive_price``
    a price (trade price, bid, ask, OHLC) <= 0.
``negative_size``
    a size or volume < 0.
``crossed_quote``
    bid > ask (a locked quote, bid == ask, is accepted).
``inconsistent_bar``
    high below open/close/low, or low above open/close.
``unknown_symbol``
    not in the configured universe (when one is configured).
``future_timestamp``
    more than ``future_tolerance_ns`` (1 s by default) after the injected clock's now.
``out_of_order``
    earlier than the symbol's latest accepted timestamp minus ``out_of_order_tolerance_ns``; later rows within
    the tolerance are accepted (the bar builder waits for them).
``duplicate``
    the natural key ``(symbol, ts, seq)`` of a row already accepted (bars: ``(symbol, ts)``).

Trades far outside the recent range (``|price / median - 1| > suspicious_threshold``, the median of the
symbol's previous ``suspicious_window`` accepted prices) are kept and flagged ``suspicious``: a fat-finger
print and the first print of a real crash look alike at arrival, and dropping the second loses the event.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Generic, Literal, TypeVar

import numpy as np
import numpy.typing as npt
import pandas as pd

from ingest.kernels import trailing_median
from ingest.records import (
    F64,
    I64,
    NS_PER_SECOND,
    BarBatch,
    Bool,
    Obj,
    QuoteBatch,
    TickBatch,
    _Columns,
    parse_timestamps,
)

Kind = Literal["tick", "quote", "bar"]
_NAT = np.iinfo(np.int64).min
SYMBOL_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.\-_/=^:]{0,31}$")


class Reason(StrEnum):
    """Why a row was quarantined, in the order the rules are applied."""

    MISSING_FIELD = "missing_field"
    MALFORMED = "malformed"
    NOT_FINITE = "not_finite"
    NON_POSITIVE_PRICE = "non_positive_price"
    NEGATIVE_SIZE = "negative_size"
    CROSSED_QUOTE = "crossed_quote"
    INCONSISTENT_BAR = "inconsistent_bar"
    UNKNOWN_SYMBOL = "unknown_symbol"
    FUTURE_TIMESTAMP = "future_timestamp"
    OUT_OF_ORDER = "out_of_order"
    DUPLICATE = "duplicate"


_REASONS = list(Reason)
_CODE = {r: i + 1 for i, r in enumerate(_REASONS)}  # 0 = valid


@dataclass(frozen=True, eq=False)
class QuarantineBatch(_Columns):
    """Rejected rows: what kind of record, the reason, the offending field and value, and the raw row (JSON)."""

    ts: I64
    symbol: Obj
    seq: I64
    kind: Obj
    reason: Obj
    field: Obj
    value: Obj
    payload: Obj

    _DTYPES: ClassVar[dict[str, Any]] = {
        "ts": np.int64,
        "symbol": object,
        "seq": np.int64,
        "kind": object,
        "reason": object,
        "field": object,
        "value": object,
        "payload": object,
    }


B = TypeVar("B", TickBatch, QuoteBatch, BarBatch)


@dataclass(frozen=True)
class ValidationResult(Generic[B]):
    """The accepted rows (typed) and the quarantined ones of one batch."""

    accepted: B
    rejected: QuarantineBatch

    def __len__(self) -> int:
        return len(self.accepted) + len(self.rejected)


@dataclass(frozen=True)
class ValidationConfig:
    """Rules of validation.

    Parameters
    ----------
    universe : frozenset of str or None
        Known symbols; rows of any other symbol are rejected. ``None`` accepts every well-formed symbol.
    out_of_order_tolerance_ns : int
        How far behind the symbol's latest accepted timestamp a row may arrive, in nanoseconds.
    future_tolerance_ns : int
        How far ahead of the clock a timestamp may be, in nanoseconds (clock skew).
    suspicious_window : int
        Number of previous accepted prices whose median is the fat-finger reference.
    suspicious_min_periods : int
        Prices needed before the fat-finger check applies.
    suspicious_threshold : float
        Relative distance to the reference median beyond which a print is flagged (0.05 = 5 %).
    """

    universe: frozenset[str] | None = None
    out_of_order_tolerance_ns: int = NS_PER_SECOND
    future_tolerance_ns: int = NS_PER_SECOND
    suspicious_window: int = 50
    suspicious_min_periods: int = 5
    suspicious_threshold: float = 0.05

    def __post_init__(self) -> None:
        if self.out_of_order_tolerance_ns < 0:
            raise ValueError(f"out_of_order_tolerance_ns={self.out_of_order_tolerance_ns!r}: must be >= 0")
        if self.future_tolerance_ns < 0:
            raise ValueError(f"future_tolerance_ns={self.future_tolerance_ns!r}: must be >= 0")
        if self.suspicious_window < 1:
            raise ValueError(f"suspicious_window={self.suspicious_window!r}: must be >= 1")
        if not self.suspicious_threshold > 0:
            raise ValueError(f"suspicious_threshold={self.suspicious_threshold!r}: must be > 0")


@dataclass(frozen=True)
class _KindSpec:
    kind: Kind
    prices: tuple[str, ...]
    sizes: tuple[str, ...]
    has_seq: bool


_SPECS: dict[Kind, _KindSpec] = {
    "tick": _KindSpec("tick", ("price",), ("size",), True),
    "quote": _KindSpec("quote", ("bid", "ask"), ("bid_size", "ask_size"), True),
    "bar": _KindSpec("bar", ("open", "high", "low", "close"), ("volume",), False),
}


@dataclass
class _SymbolState:
    max_ts: int = _NAT
    keys_ts: I64 = field(default_factory=lambda: np.empty(0, np.int64))
    keys_seq: I64 = field(default_factory=lambda: np.empty(0, np.int64))
    recent_prices: F64 = field(default_factory=lambda: np.empty(0, np.float64))


def wall_clock_ns() -> int:
    """The live clock: now, nanoseconds since the epoch, UTC."""
    return time.time_ns()


class Validator:
    """Validates batches of one record kind as a stream, carrying per-symbol state between batches.

    Parameters
    ----------
    kind : {"tick", "quote", "bar"}
        The record kind of the batches.
    config : ValidationConfig
        The rules.
    clock : callable returning int, optional
        Now in nanoseconds UTC, for the future-timestamp rule; the wall clock by default. Inject a fixed
        clock for tests and for replays of data stamped after the wall clock.
    source : str
        Written to the quarantine payload so a rejected row can be traced to where it came from.

    Examples
    --------
    >>> v = Validator("tick", ValidationConfig(universe=frozenset({"SPY"})))
    >>> raw = pd.DataFrame({"timestamp": ["2024-01-02T14:30:00Z"] * 2, "symbol": ["SPY", "SPY"],
    ...                     "price": [470.1, -1.0], "size": [100, 5]})
    >>> res = v.validate(raw)
    >>> len(res.accepted), list(res.rejected.reason)
    (1, ['non_positive_price'])
    """

    def __init__(
        self,
        kind: Kind,
        config: ValidationConfig | None = None,
        clock: Callable[[], int] = wall_clock_ns,
        source: str = "",
    ) -> None:
        if kind not in _SPECS:
            raise ValueError(f"kind={kind!r}: must be one of {sorted(_SPECS)}")
        self.kind: Kind = kind
        self.config = config or ValidationConfig()
        self.clock = clock
        self.source = source
        self._spec = _SPECS[kind]
        self._state: dict[str, _SymbolState] = {}
        self._next_seq = 0

    # ---------------------------------------------------------------------------------------------------
    def validate(self, raw: pd.DataFrame, interval_ns: int | None = None) -> ValidationResult[Any]:
        """Validate one batch (a DataFrame in the input-file contract) and advance the state.

        Columns: ``timestamp`` (or ``ts``), ``symbol`` and, by kind, ``price, size`` / ``bid, ask, bid_size,
        ask_size`` / ``open, high, low, close, volume``; optional ``seq`` (arrival order is numbered when it is
        absent). Bars need ``interval_ns`` (argument or column). Never raises for bad rows: they are returned
        in ``rejected``.
        """
        spec = self._spec
        n = len(raw)
        code = np.zeros(n, dtype=np.int8)
        bad_field = np.full(n, "", dtype=object)

        def mark(mask: npt.NDArray[np.bool_], reason: Reason, name: str) -> None:
            m = mask & (code == 0)
            if m.any():
                code[m] = _CODE[reason]
                bad_field[m] = name

        ts_col = "timestamp" if "timestamp" in raw.columns else "ts"
        ts = self._parse_ts(raw, ts_col, mark)
        symbol, sym_codes, sym_uniques = self._parse_symbol(raw, mark)
        numeric: dict[str, F64] = {}
        for name in (*spec.prices, *spec.sizes):
            numeric[name] = self._parse_number(raw, name, mark)
        for name in spec.prices:
            mark(~np.isfinite(numeric[name]), Reason.NOT_FINITE, name)
        for name in spec.sizes:
            mark(~np.isfinite(numeric[name]), Reason.NOT_FINITE, name)
        for name in spec.prices:
            mark(numeric[name] <= 0, Reason.NON_POSITIVE_PRICE, name)
        for name in spec.sizes:
            mark(numeric[name] < 0, Reason.NEGATIVE_SIZE, name)
        if spec.kind == "quote":
            mark(numeric["bid"] > numeric["ask"], Reason.CROSSED_QUOTE, "bid")
        if spec.kind == "bar":
            o, h, lo, c = (numeric[k] for k in ("open", "high", "low", "close"))
            mark(h < np.maximum(np.maximum(o, c), lo), Reason.INCONSISTENT_BAR, "high")
            mark(lo > np.minimum(o, c), Reason.INCONSISTENT_BAR, "low")
        universe = self.config.universe
        if universe is not None and n:
            known = np.array([u in universe for u in sym_uniques], dtype=bool)
            if not known.all():
                mark(~known[sym_codes], Reason.UNKNOWN_SYMBOL, "symbol")
        mark(ts > self.clock() + self.config.future_tolerance_ns, Reason.FUTURE_TIMESTAMP, "timestamp")

        seq = self._parse_seq(raw, n, mark)
        suspicious = np.zeros(n, dtype=bool)
        self._stream_rules(ts, sym_codes, sym_uniques, seq, code, bad_field, numeric, suspicious)

        ok = code == 0
        accepted = self._build_accepted(raw, ok, ts, symbol, seq, numeric, suspicious, interval_ns)
        rejected = self._quarantine(raw, ~ok, ts, symbol, seq, code, bad_field, ts_col)
        return ValidationResult(accepted=accepted, rejected=rejected)

    # ---------------------------------------------------------------------------------------------------
    @staticmethod
    def _parse_ts(raw: pd.DataFrame, col: str, mark: Callable[..., None]) -> I64:
        n = len(raw)
        if col not in raw.columns:
            mark(np.ones(n, bool), Reason.MISSING_FIELD, "timestamp")
            return np.full(n, _NAT, dtype=np.int64)
        s = raw[col]
        if isinstance(s.dtype, pd.DatetimeTZDtype) or s.dtype.kind == "M":
            # zoned or naive (taken as UTC) datetimes: the epoch offset is zone-independent
            ts = _datetime_ns(s)
            mark(ts == _NAT, Reason.MISSING_FIELD, "timestamp")
            return ts
        if s.dtype.kind in "iu":
            return s.to_numpy(dtype=np.int64)
        missing = s.isna().to_numpy() | (s.astype(str).str.strip() == "").to_numpy()
        mark(missing, Reason.MISSING_FIELD, "timestamp")
        ts = parse_timestamps(s.where(~missing))
        mark(ts == _NAT, Reason.MALFORMED, "timestamp")
        return ts

    @staticmethod
    def _parse_symbol(raw: pd.DataFrame, mark: Callable[..., None]) -> tuple[Obj, I64, Obj]:
        """Symbols, their codes in this batch and the distinct values (checked once each, not per row)."""
        n = len(raw)
        if "symbol" not in raw.columns:
            mark(np.ones(n, bool), Reason.MISSING_FIELD, "symbol")
            return np.full(n, "", dtype=object), np.zeros(n, np.int64), np.array([""], dtype=object)
        sym = raw["symbol"].to_numpy(dtype=object)
        codes, uniques = _factorize(sym)
        missing_u = np.array([not isinstance(u, str) or u == "" for u in uniques], dtype=bool)
        if missing_u.any():
            mark(missing_u[codes], Reason.MISSING_FIELD, "symbol")
            sym = np.where(missing_u[codes], "", sym)
            uniques = np.where(missing_u, "", uniques)
        well_formed = np.array([m or bool(SYMBOL_PATTERN.match(u)) for u, m in zip(uniques, missing_u, strict=True)])
        if not well_formed.all():
            mark(~well_formed[codes], Reason.MALFORMED, "symbol")
        return sym, codes, uniques

    @staticmethod
    def _parse_number(raw: pd.DataFrame, name: str, mark: Callable[..., None]) -> F64:
        n = len(raw)
        if name not in raw.columns:
            mark(np.ones(n, bool), Reason.MISSING_FIELD, name)
            return np.full(n, np.nan)
        s = raw[name]
        if s.dtype.kind in "fiub":
            return s.to_numpy(dtype=np.float64)
        missing = s.isna().to_numpy() | (s.astype(str).str.strip() == "").to_numpy()
        mark(missing, Reason.MISSING_FIELD, name)
        values = pd.to_numeric(s.where(~missing), errors="coerce").to_numpy(dtype=np.float64)
        # A value that pandas could not read as a number and that is not a spelled NaN/inf is malformed;
        # spelled NaN/inf fall through to the not_finite rule.
        unreadable = np.isnan(values) & ~missing
        if unreadable.any():
            spelled = s[unreadable].astype(str).str.strip().str.lower().isin({"nan", "inf", "-inf", "+inf"})
            unreadable[np.flatnonzero(unreadable)[spelled.to_numpy()]] = False
        mark(unreadable, Reason.MALFORMED, name)
        return values

    def _parse_seq(self, raw: pd.DataFrame, n: int, mark: Callable[..., None]) -> I64:
        if not self._spec.has_seq:
            return np.zeros(n, dtype=np.int64)
        if "seq" not in raw.columns:
            seq = np.arange(self._next_seq, self._next_seq + n, dtype=np.int64)
            self._next_seq += n
            return seq
        s = raw["seq"]
        if s.dtype.kind in "iu":
            return s.to_numpy(dtype=np.int64)
        values = pd.to_numeric(s, errors="coerce")
        mark(values.isna().to_numpy(), Reason.MALFORMED, "seq")
        return values.fillna(-1).to_numpy(dtype=np.int64)

    # ---------------------------------------------------------------------------------------------------
    def _stream_rules(
        self,
        ts: I64,
        sym_codes: I64,
        sym_uniques: Obj,
        seq: I64,
        code: npt.NDArray[np.int8],
        bad_field: Obj,
        numeric: dict[str, F64],
        suspicious: Bool,
    ) -> None:
        """Out-of-order, duplicate and fat-finger rules, per symbol in arrival order; updates the state."""
        cfg = self.config
        candidates = np.flatnonzero(code == 0)
        if not len(candidates):
            return
        if len(sym_uniques) == 1:
            groups: list[tuple[str, npt.NDArray[np.intp]]] = [(sym_uniques[0], candidates)]
        else:
            codes = sym_codes[candidates]
            order = np.argsort(codes, kind="stable")
            bounds = np.flatnonzero(np.diff(codes[order])) + 1
            groups = [(sym_uniques[codes[g[0]]], candidates[g]) for g in np.split(order, bounds)]
        tol = cfg.out_of_order_tolerance_ns
        for sym, idx in groups:
            st = self._state.get(sym)
            if st is None:
                st = self._state[sym] = _SymbolState()
            t = ts[idx]
            running = np.maximum.accumulate(t)
            prev_max = np.empty_like(t)
            prev_max[0] = st.max_ts
            prev_max[1:] = np.maximum(running[:-1], st.max_ts)
            late = (t < prev_max - tol) & (prev_max != _NAT)
            if late.any():
                code[idx[late]] = _CODE[Reason.OUT_OF_ORDER]
                bad_field[idx[late]] = "timestamp"
                idx, t = idx[~late], t[~late]
            if not len(idx):
                continue
            s = seq[idx]
            dup = _duplicates(st.keys_ts, st.keys_seq, t, s)
            if dup.any():
                code[idx[dup]] = _CODE[Reason.DUPLICATE]
                bad_field[idx[dup]] = "seq" if self._spec.has_seq else "timestamp"
                idx, t, s = idx[~dup], t[~dup], s[~dup]
            if not len(idx):
                continue
            new_max = max(int(t.max()), st.max_ts)
            keep_state = st.keys_ts >= new_max - tol
            keep_new = t >= new_max - tol
            st.keys_ts = np.concatenate([st.keys_ts[keep_state], t[keep_new]])
            st.keys_seq = np.concatenate([st.keys_seq[keep_state], s[keep_new]])
            st.max_ts = new_max
            if self.kind == "tick":
                self._flag_suspicious(st, numeric["price"][idx], idx, suspicious)

    def _flag_suspicious(self, st: _SymbolState, prices: F64, idx: npt.NDArray[np.intp], out: Bool) -> None:
        cfg = self.config
        w = cfg.suspicious_window
        hist = st.recent_prices
        series = np.concatenate([hist, prices]) if len(hist) else prices
        ref = trailing_median(series, w, cfg.suspicious_min_periods)[len(hist) :]
        with np.errstate(invalid="ignore", divide="ignore"):
            flagged = np.abs(prices / ref - 1.0) > cfg.suspicious_threshold
        out[idx] = flagged
        st.recent_prices = series[-w:].copy()

    # ---------------------------------------------------------------------------------------------------
    def _build_accepted(
        self,
        raw: pd.DataFrame,
        ok: Bool,
        ts: I64,
        symbol: Obj,
        seq: I64,
        numeric: dict[str, F64],
        suspicious: Bool,
        interval_ns: int | None,
    ) -> TickBatch | QuoteBatch | BarBatch:
        if self.kind == "tick":
            return TickBatch(
                ts=ts[ok],
                symbol=symbol[ok],
                price=numeric["price"][ok],
                size=numeric["size"][ok],
                seq=seq[ok],
                suspicious=suspicious[ok],
            )
        if self.kind == "quote":
            return QuoteBatch(
                ts=ts[ok],
                symbol=symbol[ok],
                bid=numeric["bid"][ok],
                ask=numeric["ask"][ok],
                bid_size=numeric["bid_size"][ok],
                ask_size=numeric["ask_size"][ok],
                seq=seq[ok],
            )
        return _bars_from_columns(raw, ok, ts, symbol, numeric, interval_ns)

    def _quarantine(
        self,
        raw: pd.DataFrame,
        bad: Bool,
        ts: I64,
        symbol: Obj,
        seq: I64,
        code: npt.NDArray[np.int8],
        bad_field: Obj,
        ts_col: str,
    ) -> QuarantineBatch:
        rows = np.flatnonzero(bad)
        if not len(rows):
            return QuarantineBatch.empty()
        records = raw.iloc[rows].to_dict(orient="records")
        values: list[str] = []
        payloads: list[str] = []
        for rec, f in zip(records, bad_field[rows], strict=True):
            key = ts_col if f == "timestamp" else f
            values.append(repr(rec.get(key)) if key in rec else "<absent>")
            clean = {str(k): _json_value(v) for k, v in rec.items()}
            if self.source:
                clean["_source"] = self.source
            payloads.append(json.dumps(clean, default=str, allow_nan=False))
        return QuarantineBatch(
            ts=ts[rows],
            symbol=symbol[rows],
            seq=seq[rows],
            kind=np.full(len(rows), self.kind, dtype=object),
            reason=np.array([_REASONS[c - 1].value for c in code[rows]], dtype=object),
            field=bad_field[rows],
            value=np.array(values, dtype=object),
            payload=np.array(payloads, dtype=object),
        )


def _json_value(value: object) -> object:
    """A raw cell as strict JSON: NaN and missing values become null, infinities the text ``inf``/``-inf``."""
    if isinstance(value, float | np.floating):
        if np.isnan(value):
            return None
        return float(value) if np.isfinite(value) else repr(float(value))
    if isinstance(value, np.integer | np.bool_):
        return value.item()
    if value is None or value is pd.NaT:
        return None
    return value


def _datetime_ns(s: pd.Series) -> I64:
    """Nanoseconds since the epoch of a datetime column of any unit, NaT kept as ``_NAT``."""
    values = s.array
    unit = np.datetime_data(values.dtype.base if hasattr(values.dtype, "base") else values.dtype)[0]
    raw = np.asarray(values.asi8 if hasattr(values, "asi8") else values.view("i8"), dtype=np.int64)
    scale = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000}[unit]
    if scale == 1:
        return raw.copy()
    nat = raw == _NAT
    out = raw * scale
    out[nat] = _NAT
    return out


def _factorize(values: Obj) -> tuple[I64, Obj]:
    """Codes and distinct values of an object column; one comparison pass when all rows are equal."""
    n = len(values)
    if n and (values == values[0]).all():
        return np.zeros(n, dtype=np.int64), np.array([values[0]], dtype=object)
    codes, uniques = pd.factorize(values, use_na_sentinel=False)
    return codes.astype(np.int64), np.asarray(uniques, dtype=object)


def _duplicates(state_ts: I64, state_seq: I64, ts: I64, seq: I64) -> Bool:
    """Rows whose key ``(ts, seq)`` is in the state or appears earlier in the batch."""
    n_state = len(state_ts)
    all_ts = np.concatenate([state_ts, ts]) if n_state else ts
    all_seq = np.concatenate([state_seq, seq]) if n_state else seq
    arrival = np.arange(len(all_ts))
    order = np.lexsort((arrival, all_seq, all_ts))
    st, ss = all_ts[order], all_seq[order]
    repeat = np.zeros(len(order), dtype=bool)
    repeat[1:] = (st[1:] == st[:-1]) & (ss[1:] == ss[:-1])
    is_dup = np.empty(len(order), dtype=bool)
    is_dup[order] = repeat
    return is_dup[n_state:]


def _bars_from_columns(
    raw: pd.DataFrame, ok: Bool, ts: I64, symbol: Obj, numeric: dict[str, F64], interval_ns: int | None
) -> BarBatch:
    n = int(ok.sum())
    if interval_ns is None and "interval_ns" in raw.columns:
        interval = raw["interval_ns"].to_numpy(dtype=np.int64)[ok]
    elif interval_ns is not None:
        interval = np.full(n, interval_ns, dtype=np.int64)
    else:
        raise ValueError("interval_ns=None: bars need an interval (argument or column)")

    def opt(name: str, default: float | int, dt: Any) -> Any:
        if name in raw.columns:
            return pd.to_numeric(raw[name], errors="coerce").to_numpy(dtype=np.float64)[ok].astype(dt)
        return np.full(n, default, dtype=dt)

    volume = numeric["volume"][ok]
    return BarBatch(
        ts=ts[ok],
        symbol=symbol[ok],
        interval_ns=interval,
        open=numeric["open"][ok],
        high=numeric["high"][ok],
        low=numeric["low"][ok],
        close=numeric["close"][ok],
        volume=volume,
        vwap=opt("vwap", np.nan, np.float64),
        trade_count=np.nan_to_num(opt("trade_count", 0, np.float64)).astype(np.int64),
        bid=opt("bid", np.nan, np.float64),
        ask=opt("ask", np.nan, np.float64),
        bid_size=opt("bid_size", np.nan, np.float64),
        ask_size=opt("ask_size", np.nan, np.float64),
        spread=opt("spread", np.nan, np.float64),
        quote_count=np.nan_to_num(opt("quote_count", 0, np.float64)).astype(np.int64),
        suspicious_count=np.nan_to_num(opt("suspicious_count", 0, np.float64)).astype(np.int64),
    )
