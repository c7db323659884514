"""Writing a simulation to files that replay through the project's input-file contract."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ingest.records import BarBatch, QuoteBatch, TickBatch
from ingest.synthetic.market import SimulationResult

_UTC_NS = pa.timestamp("ns", tz="UTC")


def _table(columns: dict[str, pa.Array]) -> pa.Table:
    # Built from arrays rather than a DataFrame so the file carries no pandas metadata that could vary.
    return pa.table(columns)


def _timestamp(ts: np.ndarray) -> pa.Array:
    return pa.array(np.asarray(ts, dtype=np.int64), type=pa.int64()).cast(_UTC_NS)


def _trades_table(trades: TickBatch) -> pa.Table:
    return _table(
        {
            "timestamp": _timestamp(trades.ts),
            "symbol": pa.array(trades.symbol.tolist(), type=pa.string()),
            "price": pa.array(trades.price, type=pa.float64()),
            "size": pa.array(trades.size, type=pa.float64()),
            "seq": pa.array(trades.seq, type=pa.int64()),
        }
    )


def _quotes_table(quotes: QuoteBatch) -> pa.Table:
    return _table(
        {
            "timestamp": _timestamp(quotes.ts),
            "symbol": pa.array(quotes.symbol.tolist(), type=pa.string()),
            "bid": pa.array(quotes.bid, type=pa.float64()),
            "ask": pa.array(quotes.ask, type=pa.float64()),
            "bid_size": pa.array(quotes.bid_size, type=pa.float64()),
            "ask_size": pa.array(quotes.ask_size, type=pa.float64()),
            "seq": pa.array(quotes.seq, type=pa.int64()),
        }
    )


def _bars_table(bars: BarBatch) -> pa.Table:
    columns: dict[str, pa.Array] = {
        "timestamp": _timestamp(bars.ts),
        "symbol": pa.array(bars.symbol.tolist(), type=pa.string()),
    }
    for name in ("open", "high", "low", "close", "volume", "vwap"):
        columns[name] = pa.array(getattr(bars, name), type=pa.float64())
    columns["trade_count"] = pa.array(bars.trade_count, type=pa.int64())
    for name in ("bid", "ask", "bid_size", "ask_size", "spread"):
        columns[name] = pa.array(getattr(bars, name), type=pa.float64())
    for name in ("quote_count", "suspicious_count", "interval_ns"):
        columns[name] = pa.array(getattr(bars, name), type=pa.int64())
    return _table(columns)


def _iso(ns: int) -> str:
    return pd.Timestamp(ns, unit="ns", tz="UTC").isoformat()


def _cell(value: object) -> str:
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, float):
        return repr(float(value))
    return str(value)


def write_simulation(result: SimulationResult, out_dir: Path) -> dict[str, Path]:
    """Write ``result`` as Parquet and CSV files under ``out_dir`` (created if missing).

    Files: ``trades.parquet`` (``timestamp, symbol, price, size, seq``), ``quotes.parquet`` (``timestamp,
    symbol, bid, ask, bid_size, ask_size, seq``), ``bars_1min.parquet`` (``timestamp, symbol, open, high, low,
    close, volume`` and the other :class:`~ingest.records.Bar` fields), ``labels.csv`` (``symbol, start, end,
    kind, magnitude`` with ISO-8601 UTC times, ``end`` exclusive) and ``regimes.csv``. ``timestamp`` columns
    are UTC-zoned nanosecond timestamps. The same result always gives the same bytes.

    Parameters
    ----------
    result : SimulationResult
        What :func:`~ingest.synthetic.market.simulate` returned.
    out_dir : pathlib.Path
        Directory to write into; existing files of the same names are replaced.

    Returns
    -------
    dict of str to pathlib.Path
        ``{"trades", "quotes", "bars", "labels", "regimes"}`` to the written files.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "trades": out_dir / "trades.parquet",
        "quotes": out_dir / "quotes.parquet",
        "bars": out_dir / "bars_1min.parquet",
        "labels": out_dir / "labels.csv",
        "regimes": out_dir / "regimes.csv",
    }
    pq.write_table(_trades_table(result.trades), paths["trades"], compression="zstd")
    pq.write_table(_quotes_table(result.quotes), paths["quotes"], compression="zstd")
    pq.write_table(_bars_table(result.bars), paths["bars"], compression="zstd")
    with paths["labels"].open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["symbol", "start", "end", "kind", "magnitude"])
        for lab in result.labels:
            writer.writerow([lab.symbol, _iso(lab.start), _iso(lab.end), lab.kind, repr(lab.magnitude)])
    with paths["regimes"].open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        columns = list(result.regimes.columns)
        writer.writerow(columns)
        for row in result.regimes.itertuples(index=False):
            writer.writerow([_cell(value) for value in row])
    return paths
