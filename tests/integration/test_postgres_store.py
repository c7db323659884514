"""The PostgreSQL store against a real server: the DuckDB store's behaviours, partitions, migrations, secrets."""

from __future__ import annotations

import asyncio
import logging

import asyncpg  # type: ignore[import-untyped]
import numpy as np
import pandas as pd
import psycopg
import pytest

from cluster.config import Settings
from cluster.stores import open_store
from ingest.bars import build_bars
from ingest.pipeline import IngestPipeline
from ingest.records import NS_PER_DAY, NS_PER_MINUTE, NS_PER_SECOND, QuoteBatch, TickBatch
from ingest.sources.base import RawBatch
from ingest.store import DuckDBStore, Store, TimeRange
from ingest.store.postgres import MIGRATIONS, PostgresStore, SchemaError, apply_migrations
from ingest.validation import QuarantineBatch, ValidationConfig
from tests.conftest import shared_data

pytestmark = pytest.mark.integration

S = NS_PER_SECOND
DAY_2013_10_08 = 1_381_190_400 * S  # 2013-10-08T00:00:00Z


def _ticks(n: int = 100, symbol: str = "SPY", start: int = 0, step: int = S) -> TickBatch:
    return TickBatch(
        ts=start + np.arange(n) * step,
        symbol=np.array([symbol] * n),
        price=100 + np.arange(n) / 100,
        size=np.full(n, 10.0),
        seq=np.arange(n),
        suspicious=np.arange(n) % 10 == 0,
    )


@pytest.fixture
def store(postgres_url):
    with PostgresStore(postgres_url, timescaledb=False) as s:
        yield s


def _rows_in(url: str, relation: str) -> int:
    with psycopg.connect(url) as con:
        row = con.execute(f"SELECT count(*) FROM {relation}").fetchone()  # noqa: S608 - test relation names
    assert row is not None
    return int(row[0])


# ------------------------------------------------------------------------------- the Store behaviours
def test_postgres_store_implements_the_store_interface(store):
    assert isinstance(store, Store)


def test_writing_the_same_ticks_twice_stores_them_once(store):
    t = _ticks()
    assert store.write_ticks(t) == 100
    assert store.write_ticks(t) == 0
    assert store.write_ticks(TickBatch.concat([t.take(slice(50, 100)), _ticks(120).take(slice(100, 120))])) == 20
    assert store.counts()["ticks"] == 120


def test_a_batch_repeating_a_key_within_itself_stores_it_once(store):
    t = _ticks(10)
    assert store.write_ticks(TickBatch.concat([t, t.take(slice(0, 3))])) == 10


def test_a_large_batch_written_in_parallel_parts_stays_idempotent(store):
    t = _ticks(60_000, step=1_000_000)
    # the last part repeats keys of the first: the parts run at once on separate connections
    batch = TickBatch.concat([t, t.take(slice(0, 5_000))])
    assert store.write_ticks(batch) == 60_000
    assert store.write_ticks(batch) == 0
    assert store.counts()["ticks"] == 60_000


def test_range_query_is_half_open_and_ordered_by_symbol_and_time(store):
    shuffled = TickBatch.concat([_ticks(50, "B"), _ticks(50, "A")]).take(np.random.default_rng(0).permutation(100))
    store.write_ticks(shuffled)
    got = store.read_ticks("A", TimeRange(10 * S, 20 * S))
    assert got.ts.tolist() == [i * S for i in range(10, 20)]
    assert set(got.symbol) == {"A"}
    assert got.equals(_ticks(50, "A").take(slice(10, 20)))
    assert store.read_ticks("A", TimeRange(start=45 * S)).ts.tolist() == [i * S for i in range(45, 50)]
    assert len(store.read_ticks("A", TimeRange(end=0))) == 0
    assert store.symbols() == ["A", "B"]


def test_every_table_round_trips_with_nan_floats_and_rows_without_a_time(postgres_url):
    q = QuoteBatch(
        ts=np.array([1, 2]),
        symbol=np.array(["X", "X"]),
        bid=np.array([1.0, 1.1]),
        ask=np.array([1.2, 1.3]),
        bid_size=np.array([1.0, 2.0]),
        ask_size=np.array([3.0, 4.0]),
        seq=np.array([0, 1]),
    )
    bars = build_bars(_ticks(300), q)
    assert np.isnan(bars.vwap).any() or np.isnan(bars.bid).any()  # bars without quotes carry NaN
    rejected = QuarantineBatch(
        ts=np.array([np.iinfo(np.int64).min, 5]),
        symbol=np.array(["", "X"]),
        seq=np.array([0, 1]),
        kind=np.array(["tick", "quote"]),
        reason=np.array(["missing_field", "crossed_quote"]),
        field=np.array(["timestamp", "bid"]),
        value=np.array(["None", "1.5"]),
        payload=np.array(['{"a": 1}', '{"b": 2}']),
    )
    alerts = pd.DataFrame(
        {
            "ts": [5, 7],
            "symbol": ["X", "Y"],
            "kind": ["flash_crash", "spread"],
            "detector": ["jump", "spread"],
            "score": [0.9, np.nan],
            "severity": ["critical", "info"],
            "details": ['{"drop": 0.05}', None],
        }
    )
    signals = pd.DataFrame(
        {
            "ts": [6],
            "symbol": ["X"],
            "model": ["lgbm"],
            "action": ["buy"],
            "confidence": [0.7],
            "horizon_ns": [60 * S],
            "explanation": ["{}"],
        }
    )
    with PostgresStore(postgres_url, timescaledb=False) as store:
        assert store.write_quotes(q) == 2
        assert store.write_bars(bars) == len(bars)
        assert store.write_bars(bars) == 0
        assert store.write_quarantine(rejected) == 2
        assert store.write_quarantine(rejected) == 0
        assert store.write_alerts(alerts) == 2
        assert store.write_alerts(alerts) == 0
        assert store.write_signals(signals) == 1
        assert store.write_signals(signals) == 0
    with PostgresStore(postgres_url) as store:  # persisted: a new store on the same database reads it back
        assert store.read_quotes("X").equals(q)
        assert store.read_bars("SPY", bars.interval_ns[0]).equals(bars.take(bars.symbol == "SPY"))
        assert store.read_quarantine().equals(rejected)  # no time first, then by time
        assert store.read_quarantine(TimeRange(0, 10)).reason.tolist() == ["crossed_quote"]
        got = store.read_alerts()
        assert got["kind"].tolist() == ["flash_crash", "spread"]
        assert np.isnan(got["score"].iloc[1])
        assert got["details"].iloc[1] is None
        assert got["ts"].dtype == np.int64
        assert store.read_alerts("Y", TimeRange(0, 7)).empty
        pd.testing.assert_frame_equal(store.read_signals("X"), signals)
        expected = {"ticks": 0, "quotes": 2, "bars": len(bars), "quarantine": 2, "alerts": 2, "signals": 1}
        assert store.counts() == expected
        assert store.symbols() == ["SPY", "X"]


def test_alerts_without_a_required_column_are_refused_naming_it(store):
    with pytest.raises(ValueError, match="'score'"):
        store.write_alerts(
            pd.DataFrame(
                {"ts": [1], "symbol": ["X"], "kind": ["k"], "detector": ["d"], "severity": ["info"], "details": [""]}
            )
        )


def test_async_methods_work_from_another_event_loop(store):
    async def scenario() -> tuple[int, int, TickBatch]:
        first, again = await asyncio.gather(store.awrite_ticks(_ticks(30)), store.awrite_ticks(_ticks(30)))
        return first, again, await store.aread_ticks("SPY")

    first, again, got = asyncio.run(scenario())
    assert sorted([first, again]) == [0, 30]
    assert got.equals(_ticks(30))


# ------------------------------------------------------------------------------------------ partitions
def test_a_batch_spanning_several_days_gets_a_partition_per_day_before_it_lands(store, postgres_url):
    ticks = _ticks(4 * 24, start=DAY_2013_10_08, step=3600 * S)  # hourly over four days
    assert store.write_ticks(ticks) == len(ticks)
    assert store.partitions("ticks") == [
        "ticks_default",
        "ticks_p20131008",
        "ticks_p20131009",
        "ticks_p20131010",
        "ticks_p20131011",
    ]
    assert _rows_in(postgres_url, "ticks_default") == 0
    assert _rows_in(postgres_url, "ticks_p20131009") == 24
    bars = build_bars(ticks, interval_ns=NS_PER_MINUTE)
    store.write_bars(bars)
    assert store.partitions("bars") == ["bars_default", "bars_p201310"]  # bars: one partition per month


def test_a_batch_for_a_day_without_a_partition_lands_and_rows_caught_by_the_default_move_in(store, postgres_url):
    store.write_ticks(_ticks(10, start=DAY_2013_10_08))
    later = _ticks(10, start=DAY_2013_10_08 + 30 * NS_PER_DAY)  # 2013-11-07: no partition yet
    # two of its rows already sit in the default partition, as a writer without partition upkeep leaves them
    with psycopg.connect(postgres_url) as con:
        for i in (0, 1):
            con.execute(
                "INSERT INTO ticks_default (symbol, ts, seq, price, size, suspicious) VALUES (%s, %s, %s, %s, %s, %s)",
                ("SPY", int(later.ts[i]), int(later.seq[i]), float(later.price[i]), 10.0, bool(later.suspicious[i])),
            )
    assert store.write_ticks(later) == 8  # the two are not stored twice
    assert "ticks_p20131107" in store.partitions("ticks")
    assert _rows_in(postgres_url, "ticks_default") == 0
    assert _rows_in(postgres_url, "ticks_p20131107") == 10
    assert store.read_ticks("SPY", TimeRange(start=int(later.ts[0]))).equals(later)


def test_rows_outside_the_partitioned_years_still_land_in_the_default_partition(store, postgres_url):
    far = _ticks(3, start=7_400_000_000 * S)  # year 2204
    assert store.write_ticks(far) == 3
    assert _rows_in(postgres_url, "ticks_default") == 3
    assert store.read_ticks("SPY").equals(far)


# ------------------------------------------------------------------------------ migrations and the mode
def test_migrations_applied_twice_are_a_no_op(postgres_url):
    with PostgresStore(postgres_url) as first:
        assert first.migrations.applied == tuple(m.version for m in MIGRATIONS)
        first.write_ticks(_ticks(5))
    with PostgresStore(postgres_url) as second:
        assert second.migrations.applied == ()
        assert second.counts()["ticks"] == 5

    async def again() -> tuple[int, ...]:
        con = await asyncpg.connect(postgres_url)
        try:
            return (await apply_migrations(con)).applied
        finally:
            await con.close()

    assert asyncio.run(again()) == ()
    with psycopg.connect(postgres_url) as con:
        rows = con.execute("SELECT version, mode FROM schema_migrations ORDER BY version").fetchall()
    assert rows == [(m.version, "partitioned") for m in MIGRATIONS]


def test_the_mode_choice_is_reported_at_start_up(postgres_url, caplog):
    with psycopg.connect(postgres_url) as con:
        row = con.execute("SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'").fetchone()
    timescale = bool(row and row[0])
    with caplog.at_level(logging.INFO, logger="ingest.store.postgres"), PostgresStore(postgres_url) as store:
        pass
    expected = "timescaledb" if timescale else "partitioned"
    assert store.mode == expected
    assert f"mode={expected}" in caplog.text
    if not timescale:
        assert "timescaledb extension is not installed" in store.migrations.reason
        with psycopg.connect(postgres_url, autocommit=True) as con:
            con.execute("DROP TABLE schema_migrations")
        with pytest.raises(SchemaError, match="timescaledb=True"):
            PostgresStore(postgres_url, timescaledb=True)


# ----------------------------------------------------------------------------------------------- secrets
def test_the_password_never_appears_in_repr_or_logs(postgres_server, postgres_url, caplog):
    password = postgres_server.password or "no-password-set"
    with caplog.at_level(logging.DEBUG), PostgresStore(postgres_url, timescaledb=False) as store:
        store.write_ticks(_ticks(5, start=DAY_2013_10_08))
        text = repr(store) + str(store) + store.url
    assert store.url.startswith("postgresql://")
    assert password not in text
    assert password not in caplog.text
    assert "PostgreSQL store postgresql://" in caplog.text


def test_a_failed_connection_names_the_url_with_its_password_masked():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ConnectionError) as info:
        PostgresStore(f"postgresql://sentinel:TopSecret-9@127.0.0.1:{port}/market", connect_timeout=5)
    message = str(info.value) + repr(info.value)
    assert "TopSecret-9" not in message
    assert f"postgresql://sentinel:***@127.0.0.1:{port}/market" in message


# ----------------------------------------------------------------------------------------- the factory
def test_open_store_picks_the_backend_from_the_settings(postgres_url, tmp_path):
    duck = open_store(Settings(data_dir=tmp_path))
    try:
        assert isinstance(duck, DuckDBStore)
    finally:
        duck.close()
    pg = open_store(Settings(data_dir=tmp_path, store="postgres", database_url=postgres_url))
    try:
        assert isinstance(pg, PostgresStore)
        assert pg.write_ticks(_ticks(3)) == 3
    finally:
        pg.close()


# ------------------------------------------------------------------------- the same stream, two stores
@pytest.mark.data
def test_the_real_spy_stream_gives_the_same_tables_in_duckdb_and_postgres(postgres_url, tmp_path):
    raw = pd.read_parquet(shared_data("spy_trade_ticks_20131008.parquet")).rename(columns={"ts": "timestamp"})
    config = ValidationConfig(universe=frozenset({"SPY"}))
    chunks = [RawBatch(trades=raw.iloc[i : i + 25_000]) for i in range(0, len(raw), 25_000)]
    with DuckDBStore(tmp_path / "s.duckdb") as duck, PostgresStore(postgres_url, timescaledb=False) as pg:
        stats = {}
        for name, store in (("duckdb", duck), ("postgres", pg)):
            pipeline = IngestPipeline(store, config)
            for chunk in chunks:
                pipeline.process(chunk)
            pipeline.process(chunks[3])  # a redelivered batch stores nothing new
            stats[name] = pipeline.flush().stored
        assert stats["duckdb"] == stats["postgres"]
        assert duck.counts() == pg.counts()
        assert pg.counts()["ticks"] == len(raw) == 451_545
        for interval in (NS_PER_SECOND, NS_PER_MINUTE):
            expected = duck.read_bars("SPY", interval)
            assert len(expected) > 0
            assert pg.read_bars("SPY", interval).equals(expected)
        window = TimeRange(DAY_2013_10_08 + 14 * 3600 * S, DAY_2013_10_08 + 15 * 3600 * S)
        assert pg.read_ticks("SPY", window).equals(duck.read_ticks("SPY", window))
