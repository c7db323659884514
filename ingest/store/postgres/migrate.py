"""Applying the versioned schema (:data:`~ingest.store.postgres.schema.MIGRATIONS`) to a PostgreSQL database.

Each version runs in its own transaction together with its row in ``schema_migrations``, under a session
advisory lock so that two processes starting at once do not both apply it. Applying again is a no-op. The mode
(TimescaleDB or native partitions) is chosen when version 1 is applied and read back from
``schema_migrations`` afterwards: a database keeps the layout it was created with.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import asyncpg  # type: ignore[import-untyped]

from ingest.store.postgres.schema import MIGRATION_LOCK_KEY, MIGRATIONS, MIGRATIONS_TABLE, Mode

logger = logging.getLogger(__name__)


class SchemaError(RuntimeError):
    """The database holds a schema this code cannot use."""


@dataclass(frozen=True)
class MigrationResult:
    """What :func:`apply_migrations` found and did.

    Attributes
    ----------
    mode : {"timescaledb", "partitioned"}
        The layout of the time-series tables.
    reason : str
        Why this mode: the extension was created, was unavailable (and why), or was recorded earlier.
    applied : tuple of int
        Versions applied by this call (empty when the schema was already current).
    version : int
        The schema version after this call.
    """

    mode: Mode
    reason: str
    applied: tuple[int, ...]
    version: int


async def choose_mode(con: asyncpg.Connection, timescaledb: bool | None) -> tuple[Mode, str]:
    """Pick the layout of a new schema: TimescaleDB when its extension can be created, else native partitions.

    Parameters
    ----------
    con : asyncpg.Connection
        A connection to the target database.
    timescaledb : bool or None
        ``None`` uses TimescaleDB when available; ``False`` never does; ``True`` requires it.

    Returns
    -------
    tuple of (mode, reason)
    """
    if timescaledb is False:
        return "partitioned", "TimescaleDB not requested (timescaledb=False)"
    available = await con.fetchval("SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'")
    if not available:
        reason = "the timescaledb extension is not installed on this server"
    else:
        try:
            async with con.transaction():
                await con.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        except asyncpg.PostgresError as exc:
            reason = f"CREATE EXTENSION timescaledb failed: {exc}"
        else:
            return "timescaledb", "CREATE EXTENSION timescaledb succeeded"
    if timescaledb:
        raise SchemaError(f"timescaledb=True: {reason}")
    return "partitioned", reason


async def apply_migrations(con: asyncpg.Connection, timescaledb: bool | None = None) -> MigrationResult:
    """Bring the schema to the newest version; a no-op when it is current.

    Parameters
    ----------
    con : asyncpg.Connection
        A connection to the target database, not inside a transaction.
    timescaledb : bool or None
        Mode preference for a new schema (see :func:`choose_mode`); ignored once the schema exists.

    Returns
    -------
    MigrationResult

    Raises
    ------
    SchemaError
        The database records a version newer than this code knows, or ``timescaledb=True`` cannot be met.
    """
    await con.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        await con.execute(MIGRATIONS_TABLE)
        rows = await con.fetch("SELECT version, mode FROM schema_migrations ORDER BY version")
        done = {int(r["version"]) for r in rows}
        newest = MIGRATIONS[-1].version
        if done and max(done) > newest:
            raise SchemaError(f"schema_migrations.version={max(done)}: newer than this code's newest version {newest}")
        if rows:
            mode: Mode = "timescaledb" if rows[0]["mode"] == "timescaledb" else "partitioned"
            reason = f"recorded in schema_migrations (version {rows[0]['version']})"
        else:
            mode, reason = await choose_mode(con, timescaledb)
        applied: list[int] = []
        for migration in MIGRATIONS:
            if migration.version in done:
                continue
            async with con.transaction():
                for statement in migration.statements(mode):
                    await con.execute(statement)
                await con.execute(
                    "INSERT INTO schema_migrations (version, name, mode) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    mode,
                )
            logger.info("schema migration %d (%s) applied in mode %s", migration.version, migration.name, mode)
            applied.append(migration.version)
    finally:
        await con.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
    return MigrationResult(mode=mode, reason=reason, applied=tuple(applied), version=newest)
