"""History stores: one interface, an embedded DuckDB file by default."""

from ingest.store.base import ALERT_COLUMNS, ALL_TIME, SIGNAL_COLUMNS, Store, TimeRange
from ingest.store.duckdb_store import DuckDBStore

__all__ = ["ALERT_COLUMNS", "ALL_TIME", "SIGNAL_COLUMNS", "DuckDBStore", "Store", "TimeRange"]
