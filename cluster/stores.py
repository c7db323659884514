"""Opening the history store the settings name: the embedded DuckDB file or PostgreSQL."""

from __future__ import annotations

from cluster.config import Settings
from ingest.store import DuckDBStore, Store


def open_store(settings: Settings) -> Store:
    """The history store of ``settings``: :class:`~ingest.store.DuckDBStore` at ``settings.store_path`` when
    ``settings.store == "duckdb"``, :class:`~ingest.store.postgres.PostgresStore` at ``settings.database_url``
    when it is ``"postgres"``.

    Parameters
    ----------
    settings : Settings
        The run's settings.

    Returns
    -------
    Store
        An open store; the caller closes it.

    Raises
    ------
    ValueError
        ``store="postgres"`` without a ``database_url``.
    ConnectionError
        PostgreSQL cannot be reached (the message shows the URL with its password masked).
    """
    if settings.store == "postgres":
        if settings.database_url is None:
            raise ValueError("store='postgres' needs database_url (SENTINEL_DATABASE_URL)")
        from ingest.store.postgres import PostgresStore  # the database client loads only when it is used

        return PostgresStore(settings.database_url)
    return DuckDBStore(settings.store_path)
