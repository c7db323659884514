"""Redis for the integration tests: a redis-server per test session on a free port, started by pytest-redis.

``SENTINEL_TEST_REDIS_URL`` points the tests at an existing server instead. Without either, the tests that need
Redis are skipped with the reason, except under CI (``CI=true``), where a missing redis-server is a failure.
Each test works under its own key namespace, so tests never see each other's streams and an existing server
keeps its data.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
from port_for import get_port
from pytest_redis import factories
from pytest_redis.executor import RedisExecutor

URL_VARIABLE = "SENTINEL_TEST_REDIS_URL"

# port=None asks port-for for any free port (documented by pytest-redis, missing from its type hints)
redis_server_proc = factories.redis_proc(port=None)  # type: ignore[arg-type]


def redis_server_path() -> str:
    """The redis-server executable; skips the test when there is none, fails instead under CI."""
    path = shutil.which("redis-server")
    if path is None:
        message = f"redis-server is not installed (apt-get install redis-server) and {URL_VARIABLE} is not set"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def redis_url(request: pytest.FixtureRequest) -> str:
    """URL of the session's Redis: ``SENTINEL_TEST_REDIS_URL``, or a redis-server started for the session."""
    url = os.environ.get(URL_VARIABLE)
    if url:
        return url
    redis_server_path()
    proc: RedisExecutor = request.getfixturevalue("redis_server_proc")
    return f"redis://{proc.host}:{proc.port}/0"


@pytest.fixture
def redis_namespace(redis_url: str) -> Iterator[str]:
    """A key namespace no other test uses; its keys are deleted after the test."""
    namespace = f"sentinel-test:{uuid.uuid4().hex}"
    yield namespace
    with redis.Redis.from_url(redis_url) as client:
        keys = list(client.scan_iter(match=f"{namespace}*", count=1000))
        if keys:
            client.delete(*keys)


def free_port() -> int:
    """A TCP port nothing listens on."""
    port = get_port(None)
    if port is None:
        raise RuntimeError("port=None: port-for found no free TCP port")
    return port


@contextmanager
def durable_redis(datadir: Path) -> Iterator[RedisExecutor]:
    """A redis-server of its own with ``appendonly yes`` and ``appendfsync always``, its files in ``datadir``.

    The executor can be killed (``kill(sig=signal.SIGKILL)``) and started again on the same port and files.
    """
    executor = RedisExecutor(
        executable=redis_server_path(),
        databases=1,
        redis_timeout=30,
        loglevel="warning",
        host="127.0.0.1",
        port=free_port(),
        appendonly="yes",
        datadir=datadir,
    )
    executor.command_parts = [*executor.command_parts, "--appendfsync", "always", "--save", ""]
    executor.command = " ".join(executor.command_parts)
    executor.start()
    try:
        yield executor
    finally:
        executor.stop()
