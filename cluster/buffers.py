"""The buffer the settings ask for: the in-process queue, or Redis Streams at ``settings.redis_url``."""

from __future__ import annotations

from cluster.config import Settings
from ingest.buffer.base import DEFAULT_MAX_DELIVERIES, Buffer, GapCallback
from ingest.buffer.memory import MemoryBuffer


def open_buffer(
    settings: Settings,
    *,
    max_deliveries: int = DEFAULT_MAX_DELIVERIES,
    on_gap: GapCallback | None = None,
) -> Buffer:
    """A new buffer of the kind ``settings.buffer`` names.

    Parameters
    ----------
    settings : Settings
        ``buffer="memory"`` gives a :class:`~ingest.buffer.memory.MemoryBuffer`; ``buffer="redis"`` a
        :class:`~ingest.buffer.redis_streams.RedisStreamBuffer` on its own connection pool to ``redis_url``
        (connections open on first use; close the buffer with ``await buffer.close()``).
    max_deliveries : int
        Deliveries after which an unacknowledged entry goes to the dead letters.
    on_gap : callable, optional
        Called with each source sequence gap detected on append.

    Returns
    -------
    Buffer
        The buffer; the caller owns it.
    """
    if settings.buffer == "memory":
        return MemoryBuffer(max_deliveries=max_deliveries, on_gap=on_gap)
    if settings.buffer == "redis":
        if settings.redis_url is None:
            raise ValueError("redis_url=None: buffer='redis' needs redis_url (SENTINEL_REDIS_URL)")
        from ingest.buffer.redis_streams import RedisStreamBuffer

        return RedisStreamBuffer.from_url(
            settings.redis_url.get_secret_value(), max_deliveries=max_deliveries, on_gap=on_gap
        )
    raise ValueError(f"buffer={settings.buffer!r}: must be 'memory' or 'redis'")
