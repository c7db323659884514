"""The buffer between ingestion and processing: in-process (:mod:`ingest.buffer.memory`) or Redis Streams
(:mod:`ingest.buffer.redis_streams`, imported on demand so the embedded mode needs no Redis client).
"""

from ingest.buffer.base import (
    DEFAULT_MAX_DELIVERIES,
    Appended,
    Batch,
    Buffer,
    BufferMetrics,
    Claimed,
    DeadLetter,
    Entry,
    Outgoing,
    PendingEntry,
    SequenceGap,
    decode_batch,
    encode_batch,
)
from ingest.buffer.memory import MemoryBuffer

__all__ = [
    "DEFAULT_MAX_DELIVERIES",
    "Appended",
    "Batch",
    "Buffer",
    "BufferMetrics",
    "Claimed",
    "DeadLetter",
    "Entry",
    "MemoryBuffer",
    "Outgoing",
    "PendingEntry",
    "SequenceGap",
    "decode_batch",
    "encode_batch",
]
