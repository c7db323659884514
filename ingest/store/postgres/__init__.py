"""The PostgreSQL history store (asyncpg): TimescaleDB hypertables when available, native time partitions otherwise.

Imported on its own (``from ingest.store.postgres import PostgresStore``) so that the embedded default never
loads a database client.
"""

from ingest.store.postgres.migrate import MigrationResult, SchemaError, apply_migrations
from ingest.store.postgres.schema import MIGRATIONS, PARTITION_UNIT, Mode
from ingest.store.postgres.store import PostgresStore, mask_url

__all__ = [
    "MIGRATIONS",
    "PARTITION_UNIT",
    "MigrationResult",
    "Mode",
    "PostgresStore",
    "SchemaError",
    "apply_migrations",
    "mask_url",
]
