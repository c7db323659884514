"""Fixtures of the integration tier: real servers, started by the fixtures themselves.

Each server has its own block below. A server whose binaries are missing skips its tests with a message saying
what to install, except under CI (``CI=true``), where a missing server is a failure: integration tests are
never silently skipped there.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import quote, urlsplit, urlunsplit

import pytest
from pytest_postgresql import factories

from ingest.store.postgres.local import pg_ctl_executable


def require_server(available: bool, message: str) -> None:
    """Skip the requesting test when a server cannot be started; fail instead under CI."""
    if available:
        return
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{message} (CI is set: integration tests must not be skipped)")
    pytest.skip(message)


# ------------------------------------------------------------------------------------------------ PostgreSQL
#: Set to use an existing server (its role needs CREATEDB): ``postgresql://user:password@host:5432/postgres``.
POSTGRES_URL_ENV = "SENTINEL_TEST_DATABASE_URL"
#: Password of the server the fixture starts, new each session (password authentication is on, so that masking
#: is exercised against a real secret).
POSTGRES_PASSWORD = f"pw-{secrets.token_hex(8)}"


_PG_CTL = pg_ctl_executable()  # as root: a wrapper running pg_ctl as an unprivileged user

# one server per session, on a free port (port=None), started with pg_ctl in a temporary directory
postgresql_sentinel_proc = factories.postgresql_proc(
    executable=_PG_CTL, port=None, password=POSTGRES_PASSWORD, dbname="sentinel_tests"
)


@dataclass(frozen=True)
class PostgresServer:
    """A running PostgreSQL server the tests may create databases on."""

    host: str
    port: int
    user: str
    password: str | None
    admin_db: str

    def url(self, dbname: str) -> str:
        """Connection URL of database ``dbname`` on this server (the password included: a secret)."""
        auth = quote(self.user) + (f":{quote(self.password)}" if self.password else "")
        return urlunsplit(("postgresql", f"{auth}@{self.host}:{self.port}", f"/{dbname}", "", ""))


@pytest.fixture(scope="session")
def postgres_server(request: pytest.FixtureRequest) -> PostgresServer:
    """The server of ``SENTINEL_TEST_DATABASE_URL`` when set, else one started for this session."""
    url = os.environ.get(POSTGRES_URL_ENV)
    if url:
        parts = urlsplit(url)
        return PostgresServer(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 5432,
            user=parts.username or "postgres",
            password=parts.password,
            admin_db=parts.path.lstrip("/") or "postgres",
        )
    require_server(
        _PG_CTL is not None,
        f"PostgreSQL binaries (pg_ctl) not found: install PostgreSQL or set {POSTGRES_URL_ENV}",
    )
    proc = request.getfixturevalue("postgresql_sentinel_proc")
    return PostgresServer(
        host=proc.host, port=int(proc.port), user=proc.user, password=proc.password, admin_db="postgres"
    )


@contextlib.contextmanager
def fresh_database(server: PostgresServer) -> Iterator[str]:
    """A new empty database on ``server``, dropped afterwards; yields its URL."""
    import psycopg

    name = f"sentinel_{uuid.uuid4().hex[:12]}"
    admin = server.url(server.admin_db)
    with psycopg.connect(admin, autocommit=True) as con:
        con.execute(f'CREATE DATABASE "{name}"')
    try:
        yield server.url(name)
    finally:
        with psycopg.connect(admin, autocommit=True) as con:
            con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """URL of a fresh, empty database for one test."""
    with fresh_database(postgres_server) as url:
        yield url


# ------------------------------------------------------------------------------------------------------- Ray
@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """One local Ray for the whole session (starting one costs seconds); tests isolate by namespace."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, namespace="sentinel-test", log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()
