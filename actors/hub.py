"""The hub: a named actor that fans results (bars, feature summaries, alerts) out to subscribers.

Publishing never waits for a subscriber: each subscriber has a bounded queue, and when it is full the oldest
item is dropped and counted. A subscriber takes items with :meth:`Hub.poll`, which waits up to a timeout for
the first one.

Order: items of one :meth:`Hub.publish_many` call stay in order. Separate calls may be applied in another order
than they were sent (Ray does not order the calls of an async actor), so a publisher that needs order batches
its items or puts a sequence number or timestamp in each.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import ray

from actors.asset import NAMESPACE

#: Name of the hub actor in the ``sentinel`` namespace.
HUB_ACTOR_NAME = "hub"


@dataclass
class _Subscriber:
    topic: str
    queue: deque[Any]
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    delivered: int = 0
    dropped: int = 0


@dataclass(frozen=True)
class SubscriberStats:
    """Counts of one subscriber: items queued now, taken so far, and dropped because the queue was full."""

    topic: str
    queued: int
    delivered: int
    dropped: int


class Hub:
    """Topic-based fan-out with bounded, drop-oldest queues per subscriber.

    Parameters
    ----------
    max_queue : int
        Items a subscriber's queue holds before the oldest is dropped, >= 1.
    """

    def __init__(self, max_queue: int = 1024) -> None:
        if max_queue < 1:
            raise ValueError(f"max_queue={max_queue!r}: must be >= 1")
        self._max_queue = max_queue
        self._subs: dict[int, _Subscriber] = {}
        self._by_topic: dict[str, set[int]] = {}
        self._ids = itertools.count(1)
        self.published = 0
        self._latest: dict[str, Any] = {}
        self._features: dict[str, dict[str, Any]] = {}
        self._alerts: dict[str, dict[str, Any]] = {}
        self._symbols: set[str] = set()

    async def subscribe(self, topic: str, max_queue: int | None = None) -> int:
        """A new subscriber id for ``topic``; it receives items published from now on."""
        if not topic:
            raise ValueError(f"topic={topic!r}: must be non-empty")
        size = self._max_queue if max_queue is None else max_queue
        if size < 1:
            raise ValueError(f"max_queue={size!r}: must be >= 1")
        sid = next(self._ids)
        self._subs[sid] = _Subscriber(topic, deque(maxlen=size))
        self._by_topic.setdefault(topic, set()).add(sid)
        return sid

    async def unsubscribe(self, subscriber: int) -> None:
        """Forget a subscriber and its queued items (an unknown id is ignored)."""
        sub = self._subs.pop(subscriber, None)
        if sub is not None:
            self._by_topic[sub.topic].discard(subscriber)
            sub.wake.set()

    async def publish(self, topic: str, payload: Any) -> int:
        """Queue ``payload`` for every subscriber of ``topic``; returns how many. Never waits."""
        return self._fan_out(topic, [payload])

    async def publish_many(self, topic: str, payloads: list[Any]) -> int:
        """Queue ``payloads``, in order, for every subscriber of ``topic``; returns how many. Never waits."""
        return self._fan_out(topic, payloads)

    async def publish_topics(self, items: dict[str, list[Any]]) -> int:
        """Queue several topics' payloads in one call (each topic's in order); returns the deliveries queued.

        The latest ``features`` payload of each symbol and bar length is kept for :meth:`latest_features`.
        """
        for payload in items.get("features", ()):
            if isinstance(payload, dict) and "symbol" in payload:
                self._features.setdefault(str(payload["symbol"]), {})[str(payload.get("interval", ""))] = payload
        for payload in items.get("prices", ()):
            if isinstance(payload, dict) and "symbol" in payload:
                self._symbols.add(str(payload["symbol"]))
        for payload in items.get("alerts", ()):
            if isinstance(payload, dict) and "symbol" in payload:
                symbol = str(payload["symbol"])
                self._symbols.add(symbol)
                last = self._alerts.get(symbol)
                if last is None or int(payload.get("ts", 0)) >= int(last.get("ts", 0)):
                    self._alerts[symbol] = payload
        return sum(self._fan_out(topic, payloads) * len(payloads) for topic, payloads in items.items() if payloads)

    async def latest_alert(self, symbol: str) -> tuple[bool, dict[str, Any] | None]:
        """Whether the hub has seen ``symbol`` (a price or an alert) and its latest alert (``None`` when none)."""
        return symbol in self._symbols, self._alerts.get(symbol)

    async def latest_features(self, symbol: str) -> dict[str, Any]:
        """The latest feature payload of ``symbol`` per bar length label (empty when none arrived)."""
        return dict(self._features.get(symbol, {}))

    async def set_latest(self, key: str, value: Any) -> None:
        """Keep ``value`` as the latest of ``key`` (e.g. the stream's status) for :meth:`latest`."""
        self._latest[key] = value

    async def latest(self, key: str) -> Any:
        """The value last kept under ``key`` by :meth:`set_latest`, or ``None``."""
        return self._latest.get(key)

    async def poll(self, subscriber: int, max_items: int = 100, timeout_s: float = 0.0) -> list[Any]:
        """Up to ``max_items`` queued items, oldest first; waits up to ``timeout_s`` seconds for the first.

        Raises
        ------
        KeyError
            When ``subscriber`` is not subscribed (naming the id).
        """
        if max_items < 1:
            raise ValueError(f"max_items={max_items!r}: must be >= 1")
        sub = self._get(subscriber)
        if not sub.queue and timeout_s > 0:
            sub.wake.clear()
            try:
                await asyncio.wait_for(sub.wake.wait(), timeout_s)
            except TimeoutError:
                return []
        items = [sub.queue.popleft() for _ in range(min(max_items, len(sub.queue)))]
        sub.delivered += len(items)
        return items

    async def stats(self, subscriber: int) -> SubscriberStats:
        """Counts of one subscriber."""
        sub = self._get(subscriber)
        return SubscriberStats(sub.topic, len(sub.queue), sub.delivered, sub.dropped)

    def _fan_out(self, topic: str, payloads: list[Any]) -> int:
        self.published += len(payloads)
        ids = self._by_topic.get(topic, ())
        for sid in ids:
            sub = self._subs[sid]
            room = (sub.queue.maxlen or 0) - len(sub.queue)
            sub.dropped += max(0, len(payloads) - room)
            sub.queue.extend(payloads)
            sub.wake.set()
        return len(ids)

    def _get(self, subscriber: int) -> _Subscriber:
        sub = self._subs.get(subscriber)
        if sub is None:
            raise KeyError(f"subscriber={subscriber!r}: not subscribed")
        return sub


def get_or_create_hub(
    max_queue: int = 1024, num_cpus: float = 0.1, namespace: str = NAMESPACE
) -> ray.actor.ActorHandle[Hub]:
    """The hub actor of ``namespace`` (``sentinel``), created when it does not exist yet.

    Restarted after a crash with empty queues (subscribers subscribe again); task events are off (one call per
    published item).
    """
    remote = ray.remote(Hub)
    handle = remote.options(
        name=HUB_ACTOR_NAME,
        namespace=namespace,
        get_if_exists=True,
        num_cpus=num_cpus,
        max_restarts=-1,
        enable_task_events=False,
    ).remote(max_queue)
    if not isinstance(handle, ray.actor.ActorHandle):
        raise TypeError(f"ray.remote(Hub).remote returned {type(handle).__name__}, not an actor handle")
    return handle
