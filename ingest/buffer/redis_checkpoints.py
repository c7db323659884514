"""Checkpoints of per-symbol state in Redis: one key per symbol, replaced atomically by ``SET``.

For clusters whose nodes share no file system: every AssetActor, wherever Ray restarts it, reads its last
checkpoint from the same Redis. Keys are ``<prefix>:<symbol>``; a run of ``sentinel up`` uses its own prefix, so
the actors of a new run never restore an earlier run's state.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import redis


class RedisCheckpointStore:
    """A :class:`~ingest.asset.CheckpointStore` on a Redis server.

    Parameters
    ----------
    url : str
        ``redis://[:password@]host:port/db``; kept out of the repr (it may carry a password).
    prefix : str
        Key prefix of this run's checkpoints.
    ttl_s : int, optional
        Seconds a checkpoint lives after its last save (``None``: until deleted); a stopped run's checkpoints
        then expire on their own.

    The client connects on first use in each process (the store is pickled to the actors without it).
    """

    def __init__(self, url: str, prefix: str, ttl_s: int | None = 7 * 86_400) -> None:
        if not prefix:
            raise ValueError(f"prefix={prefix!r}: must be non-empty")
        if ttl_s is not None and ttl_s < 1:
            raise ValueError(f"ttl_s={ttl_s!r}: must be >= 1 (or None)")
        self._url = url
        self.prefix = prefix
        self.ttl_s = ttl_s
        self._client: redis.Redis | None = None

    def _redis(self) -> redis.Redis:
        if self._client is None:
            self._client = redis.Redis.from_url(self._url)
        return self._client

    def key(self, symbol: str) -> str:
        """The Redis key of ``symbol``'s checkpoint."""
        return f"{self.prefix}:{symbol}"

    def save(self, key: str, blob: bytes) -> None:
        """Keep ``blob`` as the latest checkpoint of ``key`` (one ``SET``: atomic)."""
        self._redis().set(self.key(key), blob, ex=self.ttl_s)

    def load(self, key: str) -> bytes | None:
        """The latest checkpoint of ``key``, or ``None``."""
        value = self._redis().get(self.key(key))
        if value is None:
            return None
        if not isinstance(value, bytes):
            raise TypeError(f"checkpoint {self.key(key)!r}: Redis returned {type(value).__name__}, not bytes")
        return value

    def delete_all(self) -> int:
        """Delete every checkpoint under the prefix; returns how many."""
        keys = list(self._redis().scan_iter(match=f"{self.prefix}:*", count=1000))
        return int(self._redis().delete(*keys)) if keys else 0

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_client"] = None
        return state

    def __repr__(self) -> str:
        parts = urlsplit(self._url)
        where = f"{parts.hostname}:{parts.port}" if parts.hostname else "?"
        return f"RedisCheckpointStore({where!r}, prefix={self.prefix!r})"
