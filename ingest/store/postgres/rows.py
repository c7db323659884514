"""Moving table columns between pandas/numpy and the rows asyncpg sends and fetches."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from ingest.records import BarBatch
from ingest.store.base import ALERT_COLUMNS, SIGNAL_COLUMNS

#: The Python kind a column's values are sent as.
Kind = Literal["text", "int", "float", "bool"]

NAT = np.iinfo(np.int64).min
#: Columns of each table with the Python kind their values are sent as.
COLUMN_KINDS: dict[str, dict[str, Kind]] = {
    "ticks": {"symbol": "text", "ts": "int", "seq": "int", "price": "float", "size": "float", "suspicious": "bool"},
    "quotes": {
        "symbol": "text",
        "ts": "int",
        "seq": "int",
        "bid": "float",
        "ask": "float",
        "bid_size": "float",
        "ask_size": "float",
    },
    "bars": {
        "symbol": "text",
        "interval_ns": "int",
        "ts": "int",
        **{
            c: ("int" if np.dtype(dt).kind == "i" else "float")
            for c, dt in BarBatch._DTYPES.items()
            if c not in ("symbol", "interval_ns", "ts")
        },
    },
    "quarantine": {
        "id": "text",
        "ts": "int",
        "symbol": "text",
        "seq": "int",
        "kind": "text",
        "reason": "text",
        "field": "text",
        "value": "text",
        "payload": "text",
    },
    "alerts": dict(zip(ALERT_COLUMNS, ("int", "text", "text", "text", "float", "text", "text"), strict=True)),
    "signals": dict(zip(SIGNAL_COLUMNS, ("int", "text", "text", "text", "float", "int", "text"), strict=True)),
}
NUMPY_TYPES: dict[Kind, Any] = {"int": np.int64, "float": np.float64, "bool": np.bool_, "text": object}


def to_values(series: pd.Series, kind: Kind) -> list[Any]:
    """Python values of a column as asyncpg sends them: text NULLs as ``None``, numbers as int/float/bool."""
    if kind == "text":
        return [
            None if v is None or v is pd.NA or v != v else v if isinstance(v, str) else str(v) for v in series.tolist()
        ]
    return list(series.to_numpy(dtype=NUMPY_TYPES[kind]).tolist())


def to_text(value: Any) -> str | None:
    """A text value, or ``None`` for a missing one (``None``, ``pd.NA``, NaN)."""
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return None
    return value if isinstance(value, str) else str(value)


def records(table: str, frame: pd.DataFrame) -> list[tuple[Any, ...]]:
    """Rows of ``frame`` as tuples in the column order of ``table``."""
    columns = [to_values(frame[c], kind) for c, kind in COLUMN_KINDS[table].items()]
    return list(zip(*columns, strict=True))


def to_column(values: Iterable[Any], kind: Kind) -> npt.NDArray[Any]:
    """A fetched column as a numpy array; integer NULLs (quarantine rows without a time) become NaT."""
    if kind == "int":
        return np.array([NAT if v is None else v for v in values], dtype=np.int64)
    if kind == "float":
        return np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    if kind == "bool":
        return np.array(list(values), dtype=np.bool_)
    out = np.empty(len(values) if isinstance(values, tuple | list) else 0, dtype=object)
    out[:] = list(values)
    return out


def require_columns(table: str, frame: pd.DataFrame, columns: tuple[str, ...]) -> None:
    """Raise naming the first of ``columns`` that ``frame`` lacks."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{table}: missing column {missing[0]!r} (need {list(columns)}, have {list(frame.columns)})")
