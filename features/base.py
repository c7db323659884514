"""The feature contract: a specification, its state, and one step over new rows.

A :class:`Feature` is a specification: a kind (its registry name) and parameters, stored by ``__init__`` and
never changed. Its state is a separate, picklable object made by :meth:`Feature.init_state`. One step,
:meth:`Feature.update`, takes the state and the new rows of one asset and returns the values of those rows,
advancing the state; batch mode is one step over all rows from a fresh state, streaming is many steps. Values
at a row depend only on rows up to it (causal), and a feature is NaN until its warm-up is over.

Inputs arrive as a :class:`BarInput`: the bar columns of one symbol, plus the one-bar log return of the close,
which every feature may share.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar, TypeVar

import numpy as np
import pandas as pd

from ingest.records import F64, I64


@dataclass(frozen=True)
class BarInput:
    """New bars of one symbol, as columns (time-ordered), and the derived one-bar log return.

    Attributes
    ----------
    ts : int64 array
        Bar start, ns UTC, strictly increasing.
    interval_ns : int
        Bar length, ns.
    open, high, low, close, volume, vwap, bid, ask, bid_size, ask_size : float64 arrays
        As in :class:`~ingest.records.BarBatch` (NaN where the bar saw no quote, or no trade for ``vwap``).
    logret : float64 array
        ``log(close / previous close)``; NaN for the first bar of the stream.
    """

    ts: I64
    interval_ns: int
    open: F64
    high: F64
    low: F64
    close: F64
    volume: F64
    vwap: F64
    bid: F64
    ask: F64
    bid_size: F64
    ask_size: F64
    logret: F64

    def __len__(self) -> int:
        return len(self.ts)

    @cached_property
    def log_hl(self) -> F64:
        """``log(high / low)``, shared by the range-based estimators."""
        return np.log(self.high / self.low)

    @cached_property
    def log_co(self) -> F64:
        """``log(close / open)``."""
        return np.log(self.close / self.open)


class Feature(ABC):
    """A feature family with fixed parameters; see the module docstring for the contract.

    Subclasses set :attr:`kind`, store their parameters in ``__init__`` (validated, with errors naming the
    parameter and value) and implement :meth:`columns`, :meth:`init_state` and :meth:`update`.
    """

    kind: ClassVar[str]
    #: The :class:`BarInput` columns the feature reads.
    inputs: ClassVar[tuple[str, ...]] = ("close",)

    @property
    def params(self) -> dict[str, Any]:
        """The parameters this feature was made with (attributes starting with ``_`` are derived, not params)."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    @abstractmethod
    def columns(self, interval_ns: int) -> tuple[str, ...]:
        """Output column names for bars of ``interval_ns`` (stable: they name the feature and its parameters)."""

    @abstractmethod
    def init_state(self, interval_ns: int) -> Any:
        """A fresh state for bars of ``interval_ns``."""

    @abstractmethod
    def update(self, state: Any, bars: BarInput) -> dict[str, F64]:
        """Values of :meth:`columns` for the new bars; advances ``state`` in place."""

    def warmup(self) -> int:
        """Rows before the feature can be finite (documented per feature; 0 when it has none)."""
        return 0

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and isinstance(other, Feature) and other.params == self.params

    def __hash__(self) -> int:
        return hash((type(self), tuple(sorted((k, repr(v)) for k, v in self.params.items()))))


F = TypeVar("F", bound=type[Feature])

#: Every feature kind by name, filled by :func:`register`.
REGISTRY: dict[str, type[Feature]] = {}


def register(cls: F) -> F:
    """Class decorator: make a feature kind available to feature-set configurations by its ``kind``."""
    kind = cls.kind
    if kind in REGISTRY and REGISTRY[kind] is not cls:
        raise ValueError(f"kind={kind!r}: already registered by {REGISTRY[kind].__name__}")
    REGISTRY[kind] = cls
    return cls


def describe_registry() -> list[dict[str, Any]]:
    """Every registered kind with its inputs and the first line of its documentation."""
    out = []
    for kind, cls in sorted(REGISTRY.items()):
        doc = (cls.__doc__ or "").strip().splitlines()
        out.append({"kind": kind, "class": cls.__name__, "inputs": list(cls.inputs), "doc": doc[0] if doc else ""})
    return out


def make_feature(spec: Mapping[str, Any]) -> Feature:
    """A feature from its configuration, e.g. ``{"kind": "volatility", "window": 20, "estimator": "parkinson"}``."""
    if "kind" not in spec:
        raise ValueError(f"feature spec {dict(spec)!r}: missing 'kind' (one of {sorted(REGISTRY)})")
    kind = spec["kind"]
    if kind not in REGISTRY:
        raise ValueError(f"kind={kind!r}: unknown feature kind (known: {sorted(REGISTRY)})")
    params = {k: v for k, v in spec.items() if k != "kind"}
    try:
        return REGISTRY[kind](**params)
    except TypeError as exc:
        raise ValueError(f"kind={kind!r}: bad parameters {params!r} ({exc})") from exc


def check_window(name: str, value: object, minimum: int = 1) -> int:
    """A window length parameter, validated: an int >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name}={value!r}: must be an integer >= {minimum}")
    return int(value)


def safe_div(num: F64, den: F64) -> F64:
    """``num / den`` with NaN where ``den`` is 0 or NaN (never inf).

    Call it under ``np.errstate(divide="ignore", invalid="ignore")`` (the engine sets it once per step).
    """
    out = num / den
    out[~np.isfinite(out)] = np.nan
    return out


def fmt_num(x: float) -> str:
    """A parameter as it appears in a column name: ``2.0 -> 2``, ``0.5 -> 0p5``."""
    return f"{x:g}".replace(".", "p").replace("-", "m")


def session_ids(ts: I64, tz: str) -> I64:
    """The trading session (local calendar day in ``tz``) of each timestamp, as days since the epoch."""
    if tz == "UTC":
        return ts // 86_400_000_000_000
    local = pd.DatetimeIndex(pd.to_datetime(ts, utc=True)).tz_convert(tz).tz_localize(None)
    return np.asarray(local.normalize().asi8 // 86_400_000_000_000, dtype=np.int64)


def check_tz(tz: object) -> str:
    """A time-zone name, validated (``UTC`` or an IANA name such as ``America/New_York``)."""
    try:
        pd.Timestamp(0, tz=str(tz))
    except Exception as exc:  # pytz and zoneinfo raise different types for an unknown zone
        raise ValueError(f"session_tz={tz!r}: not a time zone ({exc})") from exc
    return str(tz)
