"""The per-symbol actor: one :class:`~ingest.asset.AssetProcessor` inside Ray, restartable from checkpoints.

An :class:`AssetActor` is named ``asset:<SYMBOL>`` in the ``sentinel`` namespace. The router sends it one call
per micro-batch, numbered 0, 1, 2, ... per symbol. Calls are applied strictly in that order (an async actor may
start a call whose large argument arrived first), and a number already applied is not applied again: the
stored reply is returned, so a router that re-sends after an error counts nothing twice.

Every ``checkpoint_every`` batches or ``checkpoint_every_s`` seconds the actor saves its processor (with the
number of the last batch applied) to a :class:`~ingest.asset.CheckpointStore`, together with the replies the
router has not acknowledged yet (each call carries ``acked``, the highest batch number up to which the router
holds every reply): a reply lost with a dead process is answered again from the checkpoint. Ray restarts a
dead actor by re-running ``__init__``, which restores the last checkpoint; :meth:`AssetActor.position` tells
the router from which batch to re-send.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import ray

from features.engine import FeatureFrame
from ingest.asset import DEFAULT_INTERVALS_NS, AssetOutput, AssetProcessor, CheckpointStore
from ingest.records import NS_PER_MINUTE, NS_PER_SECOND, BarBatch, QuoteBatch, TickBatch

if TYPE_CHECKING:
    from models.walkforward import WalkForward

#: Ray namespace of every named actor of the system.
NAMESPACE = "sentinel"
#: Unacknowledged replies kept at most (a router that never acknowledges still bounds the actor's memory).
REPLY_CACHE = 256


def asset_actor_name(symbol: str) -> str:
    """The Ray name of a symbol's actor: ``asset:<SYMBOL>``."""
    return f"asset:{symbol}"


class SequenceGapError(RuntimeError):
    """A batch arrived whose predecessors never did (the actor restarted behind the sender).

    Parameters
    ----------
    symbol : str
        The actor's symbol.
    seq : int
        The batch number that waited.
    applied : int
        The last batch number applied (-1 before any); the sender re-sends from ``applied + 1``.
    """

    def __init__(self, symbol: str, seq: int, applied: int) -> None:
        super().__init__(f"seq={seq!r}: symbol {symbol!r} has applied up to {applied}; batches in between are missing")
        self.symbol, self.seq, self.applied = symbol, seq, applied

    def __reduce__(self) -> tuple[type[SequenceGapError], tuple[str, int, int]]:
        return SequenceGapError, (self.symbol, self.seq, self.applied)


@dataclass(frozen=True)
class AssetReply:
    """The answer to one batch.

    Parameters
    ----------
    symbol : str
        The actor's symbol.
    seq : int
        The batch number answered.
    output : AssetOutput
        Bars closed by the batch and their features.
    checkpointed : int
        The last batch number saved in a checkpoint (-1 when none): the sender may forget batches up to it.
    duplicate : bool
        Whether the batch had been applied before (the stored reply is returned).
    """

    symbol: str
    seq: int
    output: AssetOutput
    checkpointed: int
    duplicate: bool = False

    def __reduce__(self) -> tuple[Any, ...]:
        # A reply crosses a process boundary on every call: its bars and features (some 150 small arrays) travel
        # as one block per dtype instead of one buffer each, which costs far less to pickle and unpickle.
        out = self.output
        rest = {f.name: getattr(out, f.name) for f in fields(out) if f.name not in ("bars", "features")}
        bars = {iv: _pack_batch(b) for iv, b in out.bars.items()}
        features = {iv: _pack_frame(f) for iv, f in out.features.items()}
        return _unpack_reply, (self.symbol, self.seq, self.checkpointed, self.duplicate, rest, bars, features)


def _pack_batch(batch: BarBatch) -> Any:
    """A batch as ``(kind, rows, constant object columns, {dtype: (names, 2-D block)})``, or itself."""
    constants: dict[str, Any] = {}
    groups: dict[str, list[str]] = {}
    for name, dtype in batch._DTYPES.items():
        col = getattr(batch, name)
        if dtype is object:
            if len(col) and not (col == col[0]).all():
                return batch  # several values (never for one symbol's bars): as it is
            constants[name] = col[0] if len(col) else None
        else:
            groups.setdefault(np.dtype(dtype).str, []).append(name)
    blocks = {dt: (names, _block([getattr(batch, n) for n in names], len(batch))) for dt, names in groups.items()}
    return type(batch), len(batch), constants, blocks


def _block(cols: list[np.ndarray[Any, Any]], rows: int) -> np.ndarray[Any, Any]:
    """Columns of one dtype and length as the rows of one 2-D array (one copy, no per-column buffers)."""
    return np.concatenate(cols).reshape(len(cols), rows)


def _unpack_batch(packed: Any) -> BarBatch:
    if not isinstance(packed, tuple):
        return cast(BarBatch, packed)
    kind, rows, constants, blocks = packed
    columns = {name: np.full(rows, value, dtype=object) for name, value in constants.items()}
    for names, block in blocks.values():
        columns.update(zip(names, block, strict=True))
    return cast(BarBatch, kind._trusted(**columns))


def _pack_frame(frame: FeatureFrame) -> Any:
    """A feature frame as ``(ts, names, 2-D block)``, or itself when its columns are not all float64 rows."""
    cols = list(frame.values.values())
    if not cols or [f.name for f in fields(frame)] != ["ts", "values"]:
        return frame
    if {c.dtype for c in cols} != {np.dtype(np.float64)} or {c.shape for c in cols} != {frame.ts.shape}:
        return frame
    return frame.ts, tuple(frame.values), _block(cols, len(frame.ts))


def _unpack_frame(packed: Any) -> FeatureFrame:
    if not isinstance(packed, tuple):
        return cast(FeatureFrame, packed)
    ts, names, block = packed
    return FeatureFrame(ts, dict(zip(names, block, strict=True)))


def _unpack_reply(
    symbol: str,
    seq: int,
    checkpointed: int,
    duplicate: bool,
    rest: dict[str, Any],
    bars: dict[int, Any],
    features: dict[int, Any],
) -> AssetReply:
    output = AssetOutput(
        bars={iv: _unpack_batch(b) for iv, b in bars.items()},
        features={iv: _unpack_frame(f) for iv, f in features.items()},
        **rest,
    )
    return AssetReply(symbol, seq, output, checkpointed, duplicate)


@dataclass(frozen=True)
class AssetPosition:
    """Where an actor stands: the last batch applied and the last checkpointed, and what it restored at start."""

    symbol: str
    applied: int
    checkpointed: int
    restored: int
    restarted: bool


@dataclass(frozen=True)
class _Saved:
    """What an actor checkpoints: its processor's bytes and the replies not yet acknowledged, by batch number."""

    processor: bytes
    replies: dict[int, AssetReply]


class AssetActor:
    """A symbol's streaming state inside Ray.

    Parameters
    ----------
    symbol : str
        The instrument.
    checkpoints : CheckpointStore
        Where the state is saved (picklable: it is sent to the actor's process).
    intervals_ns : tuple of int
        Bar lengths built, in nanoseconds.
    lateness_ns : int
        The validator's out-of-order tolerance, in nanoseconds.
    checkpoint_every : int
        Batches between checkpoints, >= 1.
    checkpoint_every_s : float
        Seconds after which the next batch is checkpointed even if fewer batches were applied, > 0.
    gap_timeout_s : float
        How long a batch waits for its predecessors before the call fails with :class:`SequenceGapError`, > 0.
    detection : WalkForward, optional
        The anomaly ensemble the symbol's bars go through (see :class:`~ingest.asset.AssetProcessor`).
    detect_interval_ns : int
        Length of the built bars the detection scores.
    """

    def __init__(
        self,
        symbol: str,
        checkpoints: CheckpointStore,
        intervals_ns: tuple[int, ...] = DEFAULT_INTERVALS_NS,
        lateness_ns: int = NS_PER_SECOND,
        checkpoint_every: int = 16,
        checkpoint_every_s: float = 5.0,
        gap_timeout_s: float = 5.0,
        detection: WalkForward | None = None,
        detect_interval_ns: int = NS_PER_MINUTE,
    ) -> None:
        if checkpoint_every < 1:
            raise ValueError(f"checkpoint_every={checkpoint_every!r}: must be >= 1")
        if not checkpoint_every_s > 0:
            raise ValueError(f"checkpoint_every_s={checkpoint_every_s!r}: must be > 0")
        if not gap_timeout_s > 0:
            raise ValueError(f"gap_timeout_s={gap_timeout_s!r}: must be > 0")
        self._symbol = symbol
        self._store = checkpoints
        self._every, self._every_s, self._gap_timeout_s = checkpoint_every, checkpoint_every_s, gap_timeout_s
        self._replies: OrderedDict[int, AssetReply] = OrderedDict()
        blob = checkpoints.load(symbol)
        if blob is None:
            self._proc = AssetProcessor(
                symbol, intervals_ns, lateness_ns, detection=detection, detect_interval_ns=detect_interval_ns
            )
            self._proc.position = -1
        else:
            # the blob comes from the system's own checkpoint store, never from outside
            saved = pickle.loads(blob)  # noqa: S301
            if not isinstance(saved, _Saved):
                raise TypeError(f"checkpoint of {symbol!r}: holds a {type(saved).__name__}, not an actor checkpoint")
            self._proc = AssetProcessor.restore(saved.processor)
            self._replies.update(sorted(saved.replies.items()))
        applied = self._proc.position
        if not isinstance(applied, int):
            raise TypeError(f"position={applied!r}: the checkpoint of {symbol!r} does not hold a batch number")
        self._applied = self._checkpointed = self._restored = applied
        self._acked = -1
        self._last_save = time.monotonic()
        self._turn = asyncio.Condition()
        with warnings.catch_warnings():
            # Ray's own property reads a deprecated one inside; the flag itself is supported
            warnings.simplefilter("ignore", DeprecationWarning)
            self._restarted = bool(ray.get_runtime_context().was_current_actor_reconstructed)

    async def process(
        self,
        seq: int,
        ticks: TickBatch | None,
        quotes: QuoteBatch | None,
        bars: BarBatch | None,
        acked: int = -1,
    ) -> AssetReply:
        """Apply micro-batch ``seq`` of this symbol (after every lower number); returns the bars it closed.

        ``acked`` is the highest batch number up to which the caller holds every reply: replies up to it are
        forgotten, later ones are kept (and checkpointed) to answer a re-sent batch.

        Raises
        ------
        SequenceGapError
            When batch ``seq - 1`` has not been applied within ``gap_timeout_s``.
        """
        return await self._apply(seq, acked, lambda: self._proc.process(ticks, quotes, bars, position=seq))

    async def flush(self, seq: int, acked: int = -1) -> AssetReply:
        """Close every open bar (end of stream), as batch ``seq``; checkpoints."""
        return await self._apply(seq, acked, lambda: self._proc.flush(position=seq), force_checkpoint=True)

    async def close_until(self, seq: int, ts_ns: int, acked: int = -1) -> AssetReply:
        """Close the bars that end at or before ``ts_ns`` (ns UTC), as batch ``seq``."""
        return await self._apply(seq, acked, lambda: self._proc.close_until(ts_ns, position=seq))

    async def checkpoint(self) -> int:
        """Save the state now; returns the last batch number it holds."""
        async with self._turn:
            self._save()
            return self._checkpointed

    async def position(self) -> AssetPosition:
        """The last batch applied, the last checkpointed, and the one restored when this process started."""
        return AssetPosition(self._symbol, self._applied, self._checkpointed, self._restored, self._restarted)

    async def where(self) -> dict[str, object]:
        """The process and Ray node hosting the actor: ``{"pid": ..., "node_id": ...}``."""
        return {"pid": os.getpid(), "node_id": ray.get_runtime_context().get_node_id()}

    async def counters(self) -> dict[str, object]:
        """Running counts of the symbol (rows in, bars out, last record time)."""
        return self._proc.counters.as_dict()

    # ------------------------------------------------------------------------------------------------------
    async def _apply(
        self, seq: int, acked: int, step: Callable[[], AssetOutput], force_checkpoint: bool = False
    ) -> AssetReply:
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
            raise ValueError(f"seq={seq!r}: must be an integer >= 0")
        async with self._turn:
            if self._applied < seq - 1:
                # the predecessor has not been applied yet (the usual case is that it has: no timer then)
                try:
                    await asyncio.wait_for(self._turn.wait_for(lambda: self._applied >= seq - 1), self._gap_timeout_s)
                except TimeoutError:
                    # the timer may fire just as the predecessor lands: only a gap that is still there is an error
                    if self._applied < seq - 1:
                        raise SequenceGapError(self._symbol, seq, self._applied) from None
            if acked > self._acked:
                self._acked = acked
                while self._replies and next(iter(self._replies)) <= acked:
                    self._replies.popitem(last=False)
            if seq <= self._applied:
                cached = self._replies.get(seq)
                # a batch the caller acknowledged: it holds the output, an empty one marks the repeat
                output = AssetOutput(self._symbol) if cached is None else cached.output
                return AssetReply(self._symbol, seq, output, self._checkpointed, True)
            output = step()
            self._applied = seq
            reply = AssetReply(self._symbol, seq, output, self._checkpointed)
            self._replies[seq] = reply
            while len(self._replies) > REPLY_CACHE:
                self._replies.popitem(last=False)
            now = time.monotonic()
            if force_checkpoint or seq - self._checkpointed >= self._every or now - self._last_save >= self._every_s:
                self._save()
                reply = AssetReply(self._symbol, seq, output, self._checkpointed)
            self._turn.notify_all()
            return reply

    def _save(self) -> None:
        saved = _Saved(self._proc.checkpoint(position=self._applied), dict(self._replies))
        self._store.save(self._symbol, pickle.dumps(saved, protocol=pickle.HIGHEST_PROTOCOL))
        self._checkpointed = self._applied
        self._last_save = time.monotonic()


def get_or_create_asset_actor(
    symbol: str,
    checkpoints: CheckpointStore,
    intervals_ns: tuple[int, ...] = DEFAULT_INTERVALS_NS,
    lateness_ns: int = NS_PER_SECOND,
    checkpoint_every: int = 16,
    checkpoint_every_s: float = 5.0,
    gap_timeout_s: float = 5.0,
    num_cpus: float = 0.05,
    max_restarts: int = -1,
    namespace: str = NAMESPACE,
    spread: bool = False,
    detection: WalkForward | None = None,
    detect_interval_ns: int = NS_PER_MINUTE,
) -> ray.actor.ActorHandle[AssetActor]:
    """The actor ``asset:<symbol>`` of ``namespace`` (``sentinel``), created when it does not exist yet.

    A twentieth of a CPU by default: Ray counts it when placing actors, so twenty symbols fit a core (each call is
    a vectorised step over a micro-batch; a universe larger than the cluster's CPUs over ``num_cpus`` waits for
    room, so size it to the universe).
    Task events are off: one call per micro-batch, their events are not needed. Ray restarts the actor after a
    crash (``max_restarts``, -1 for always); calls are not retried by Ray (``max_task_retries=0``): the router
    re-sends from the restored position, in order, which a blind retry of a single call cannot do. ``spread``
    places the actors across the cluster's nodes (Ray's ``SPREAD`` strategy) rather than packing the first.
    ``detection`` runs the anomaly ensemble on the symbol's bars (:class:`~ingest.asset.AssetProcessor`).
    """
    remote = ray.remote(AssetActor)
    handle = remote.options(
        name=asset_actor_name(symbol),
        namespace=namespace,
        get_if_exists=True,
        num_cpus=num_cpus,
        max_restarts=max_restarts,
        max_task_retries=0,
        enable_task_events=False,
        scheduling_strategy="SPREAD" if spread else "DEFAULT",
    ).remote(
        symbol,
        checkpoints,
        intervals_ns,
        lateness_ns,
        checkpoint_every,
        checkpoint_every_s,
        gap_timeout_s,
        detection,
        detect_interval_ns,
    )
    if not isinstance(handle, ray.actor.ActorHandle):
        raise TypeError(f"ray.remote(AssetActor).remote returned {type(handle).__name__}, not an actor handle")
    return handle
