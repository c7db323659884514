"""Reading market-data files in the input contract (CSV or Parquet) into raw frames for validation.

Contract columns: bars ``timestamp, symbol, open, high, low, close, volume`` (``symbol`` optional for one
instrument); trades ``timestamp, symbol, price, size``; quotes ``timestamp, symbol, bid, ask, bid_size,
ask_size``. ``ts`` is accepted for ``timestamp``. Timestamps carry a zone or are UTC. Values are not checked
here — that is validation's job, row by row — only the shape of the file is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pandas as pd

from ingest.records import NS_PER_DAY, to_ns

FileKind = Literal["trades", "quotes", "bars"]
_KIND_COLUMNS: dict[FileKind, tuple[str, ...]] = {
    "bars": ("open", "high", "low", "close"),
    "quotes": ("bid", "ask"),
    "trades": ("price", "size"),
}


class FileFormatError(ValueError):
    """A file that is not in the input contract: names the file and what is wrong with it."""


def detect_kind(columns: list[str], path: Path | str = "<frame>") -> FileKind:
    """Which record kind a table holds, from its columns."""
    cols = {c.lower() for c in columns}
    for kind, needed in _KIND_COLUMNS.items():
        if set(needed) <= cols:
            return kind
    raise FileFormatError(
        f"{path}: columns {sorted(columns)} match no record kind; need {list(_KIND_COLUMNS['trades'])} "
        f"(trades), {list(_KIND_COLUMNS['quotes'])} (quotes) or {list(_KIND_COLUMNS['bars'])} (bars), "
        "plus timestamp and symbol"
    )


def read_market_file(path: Path | str, symbol: str | None = None) -> tuple[FileKind, pd.DataFrame]:
    """Read one CSV (optionally gzipped) or Parquet file into a raw frame and say what it holds.

    Parameters
    ----------
    path : Path or str
        ``.csv``, ``.csv.gz`` or ``.parquet``.
    symbol : str, optional
        The instrument of a file without a ``symbol`` column.

    Notes
    -----
    CSV cells are read as text where they do not parse as numbers, so that a bad value reaches validation
    (and the quarantine) with its original spelling instead of failing the whole file. An empty cell is a
    missing field, the text ``nan`` a not-finite number.
    """
    p = Path(path)
    if not p.exists():
        raise FileFormatError(f"{p}: no such file")
    name = p.name.lower()
    if name.endswith(".parquet"):
        frame = pd.read_parquet(p)
    elif name.endswith((".csv", ".csv.gz")):
        frame = pd.read_csv(p, keep_default_na=False, na_values=[""], low_memory=False)
    else:
        raise FileFormatError(f"{p}: unknown file type (use .csv, .csv.gz or .parquet)")
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    if "timestamp" not in frame.columns and "ts" in frame.columns:
        frame = frame.rename(columns={"ts": "timestamp"})
    if "timestamp" not in frame.columns:
        raise FileFormatError(f"{p}: no timestamp column (have {list(frame.columns)})")
    kind = detect_kind(list(frame.columns), p)
    if "symbol" not in frame.columns:
        if symbol is None:
            raise FileFormatError(f"{p}: no symbol column; give the instrument's symbol")
        frame.insert(1, "symbol", symbol)
    return kind, frame


def infer_bar_interval(frame: pd.DataFrame) -> int:
    """The bar length of a bars frame in ns: the most common positive step between a symbol's timestamps.

    Daily bars with weekends and holidays give one day; a frame with a single bar per symbol gives one day.
    """
    ts = pd.Series(to_ns(frame["timestamp"].dropna()), index=frame["symbol"].loc[frame["timestamp"].notna()])
    steps = ts.groupby(level=0).diff().dropna()
    steps = steps[steps > 0]
    if steps.empty:
        return NS_PER_DAY
    return int(steps.mode().iloc[0])
