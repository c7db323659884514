"""The buffer contract, run here on the in-process buffer and in tests/integration on Redis Streams.

:class:`BufferContract` holds the behaviour every buffer must show; a subclass supplies ``make_buffer``, a
callable building a fresh, empty buffer (keyword arguments ``max_deliveries`` and ``on_gap``) inside the running
event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import pytest

from ingest.buffer import (
    Batch,
    Buffer,
    MemoryBuffer,
    Outgoing,
    SequenceGap,
    decode_batch,
    encode_batch,
)
from ingest.buffer.base import next_entry_id, parse_entry_id
from ingest.records import BarBatch, InvalidRecordError, QuoteBatch, TickBatch

MakeBuffer = Callable[..., Buffer]


def run(make_buffer: MakeBuffer, body: Callable[[Buffer], Awaitable[None]], **kwargs: Any) -> None:
    """Run ``body`` on a fresh buffer in a new event loop, closing the buffer afterwards."""

    async def main() -> None:
        buffer = make_buffer(**kwargs)
        try:
            await body(buffer)
        finally:
            await buffer.close()

    asyncio.run(main())


def ticks(n: int, start_seq: int = 0, symbol: str = "SPY") -> TickBatch:
    """``n`` trades with awkward values: NaN-free but with -0.0-adjacent sizes, subnormal-ish prices and flags."""
    rng = np.random.default_rng(start_seq)
    return TickBatch(
        ts=1_381_219_200_000_000_000 + np.arange(n, dtype=np.int64) * 1_000_003,
        symbol=np.array([symbol] * n, dtype=object),
        price=168.0 + rng.standard_normal(n) * 1e-3 + 5e-324,
        size=np.where(rng.random(n) < 0.1, -0.0, rng.integers(1, 10_000, n).astype(np.float64)),
        seq=np.arange(start_seq, start_seq + n, dtype=np.int64),
        suspicious=rng.random(n) < 0.05,
    )


def quotes(n: int) -> QuoteBatch:
    """``n`` quotes over three symbols."""
    rng = np.random.default_rng(7)
    bid = 100 + rng.random(n)
    return QuoteBatch(
        ts=np.arange(n, dtype=np.int64) * 7,
        symbol=np.array(["EURUSD", "BTC-USD", "SPY"] * (n // 3) + ["SPY"] * (n % 3), dtype=object),
        bid=bid,
        ask=bid + rng.random(n) * 1e-2,
        bid_size=rng.random(n) * 1e6,
        ask_size=rng.random(n) * 1e6,
        seq=np.arange(n, dtype=np.int64) + 2**40,
    )


def bars(n: int) -> BarBatch:
    """``n`` one-second bars, half without quotes (NaN quote fields, a NaN with a payload among them)."""
    rng = np.random.default_rng(11)
    close = 50 + rng.random(n)
    nan_payload = np.frombuffer(np.uint64(0x7FF8_0000_DEAD_BEEF).tobytes(), dtype=np.float64)[0]
    quoted = np.arange(n) % 2 == 0
    cols: dict[str, Any] = {
        "ts": np.arange(n, dtype=np.int64) * 1_000_000_000,
        "symbol": np.array(["AAPL"] * n, dtype=object),
        "interval_ns": np.full(n, 1_000_000_000, dtype=np.int64),
        "open": close,
        "high": close + 1,
        "low": close - 1,
        "close": close,
        "volume": rng.random(n) * 1e4,
        "vwap": close,
        "trade_count": rng.integers(0, 100, n),
        "bid": np.where(quoted, close - 0.01, nan_payload),
        "ask": np.where(quoted, close + 0.01, np.nan),
        "bid_size": np.where(quoted, 100.0, np.nan),
        "ask_size": np.where(quoted, 200.0, np.nan),
        "spread": np.where(quoted, 0.02, np.nan),
        "quote_count": quoted.astype(np.int64),
        "suspicious_count": np.zeros(n, dtype=np.int64),
    }
    return BarBatch(**cols)


def same_bits(a: Any, b: Any) -> bool:
    """Every column equal byte for byte (floats compared as their bit patterns)."""
    if type(a) is not type(b) or len(a) != len(b):
        return False
    for name in type(a)._DTYPES:
        x, y = getattr(a, name), getattr(b, name)
        if x.dtype.kind == "O":
            if x.tolist() != y.tolist():
                return False
        elif x.tobytes() != y.tobytes():
            return False
    return True


class BufferContract:
    """Behaviour shared by every :class:`~ingest.buffer.base.Buffer`; subclasses provide ``make_buffer``."""

    def test_round_trip_of_each_batch_kind_is_bit_for_bit(self, make_buffer: MakeBuffer) -> None:
        sent: list[Batch] = [ticks(1000), quotes(301), bars(60), TickBatch.empty()]

        async def body(buf: Buffer) -> None:
            for i, batch in enumerate(sent):
                await buf.append("mixed", batch, source="feed", seq=i)
            entries = await buf.read("g", "c", ["mixed"], count=10)
            assert [e.kind for e in entries] == ["tick", "quote", "bar", "tick"]
            assert [e.seq for e in entries] == [0, 1, 2, 3]
            for entry, batch in zip(entries, sent, strict=True):
                assert same_bits(entry.decode(), batch)

        run(make_buffer, body)

    def test_read_delivers_each_entry_once_per_group_and_to_every_group(self, make_buffer: MakeBuffer) -> None:
        async def body(buf: Buffer) -> None:
            appended = await buf.append_many([Outgoing("SPY", ticks(5, 5 * i), "feed", i) for i in range(5)])
            ids = [a.id for a in appended]
            assert ids == sorted(ids, key=parse_entry_id)
            first = await buf.read("actors", "a1", ["SPY"], count=3)
            second = await buf.read("actors", "a2", ["SPY"], count=10)
            assert [e.id for e in first + second] == ids
            assert await buf.read("actors", "a1", ["SPY"], count=10) == []
            writers = await buf.read("writers", "w1", ["SPY"], count=10)
            assert [e.id for e in writers] == ids

        run(make_buffer, body)

    def test_append_many_keeps_order_within_each_stream(self, make_buffer: MakeBuffer) -> None:
        async def body(buf: Buffer) -> None:
            items = [Outgoing(f"shard-{i % 2}", ticks(3, 3 * i), "feed", i) for i in range(6)]
            await buf.append_many(items)
            entries = await buf.read("g", "c", ["shard-0", "shard-1"], count=10)
            assert sorted((e.stream, e.seq) for e in entries) == [(f"shard-{i % 2}", i) for i in (0, 2, 4, 1, 3, 5)]
            for stream in ("shard-0", "shard-1"):
                seqs = [e.seq for e in entries if e.stream == stream]
                assert seqs == sorted(seqs)
            assert await buf.length("shard-0") == 3

        run(make_buffer, body)

    def test_entries_stay_pending_until_acknowledged(self, make_buffer: MakeBuffer) -> None:
        async def body(buf: Buffer) -> None:
            for i in range(4):
                await buf.append("SPY", ticks(2, 2 * i), source="feed", seq=i)
            entries = await buf.read("g", "c1", ["SPY"], count=4)
            pending = await buf.pending("SPY", "g")
            assert [p.id for p in pending] == [e.id for e in entries]
            assert {p.consumer for p in pending} == {"c1"}
            assert {p.deliveries for p in pending} == {1}
            assert await buf.ack("g", entries[:3]) == 3
            assert await buf.ack("g", entries[:3]) == 0  # acknowledging twice changes nothing
            assert [p.id for p in await buf.pending("SPY", "g")] == [entries[3].id]
            assert buf.metrics.entries_acked == 3

        run(make_buffer, body)

    def test_claim_takes_over_idle_entries_of_a_dead_consumer_and_counts_the_delivery(
        self, make_buffer: MakeBuffer
    ) -> None:
        async def body(buf: Buffer) -> None:
            for i in range(3):
                await buf.append("SPY", ticks(2, 2 * i), source="feed", seq=i)
            lost = await buf.read("g", "dead", ["SPY"], count=3)
            assert (await buf.claim("SPY", "g", "alive", min_idle_ms=60_000)).entries == []
            claimed = await buf.claim("SPY", "g", "alive", min_idle_ms=0)
            assert [e.id for e in claimed.entries] == [e.id for e in lost]
            assert [e.deliveries for e in claimed.entries] == [2, 2, 2]
            assert all(same_bits(c.decode(), d.decode()) for c, d in zip(claimed.entries, lost, strict=True))
            assert {p.consumer for p in await buf.pending("SPY", "g")} == {"alive"}
            await buf.ack("g", claimed.entries)
            assert await buf.pending("SPY", "g") == []

        run(make_buffer, body)

    def test_entry_delivered_more_than_max_deliveries_goes_to_the_dead_letter_stream(
        self, make_buffer: MakeBuffer
    ) -> None:
        async def body(buf: Buffer) -> None:
            poison = ticks(4, 0)
            await buf.append("SPY", poison, source="feed", seq=0)
            await buf.append("SPY", ticks(4, 4), source="feed", seq=1)
            first = await buf.read("g", "c", ["SPY"], count=2)
            await buf.ack("g", first[1:])
            again = await buf.claim("SPY", "g", "c", min_idle_ms=0)  # delivery 2 of 2
            assert [e.deliveries for e in again.entries] == [2]
            assert again.dead == []
            last = await buf.claim("SPY", "g", "c", min_idle_ms=0)  # would be delivery 3
            assert last.entries == []
            [letter] = last.dead
            assert (letter.original_id, letter.group, letter.deliveries) == (first[0].id, "g", 3)
            assert (letter.source, letter.seq, letter.kind) == ("feed", 0, "tick")
            assert same_bits(decode_batch(letter.payload), poison)
            assert await buf.pending("SPY", "g") == []
            assert [d.original_id for d in await buf.dead_letters("SPY")] == [first[0].id]
            assert buf.metrics.entries_dead_lettered == 1
            # another group is not affected by this group's poison
            other = await buf.read("other", "c", ["SPY"], count=10)
            assert [e.id for e in other] == [e.id for e in first]

        run(make_buffer, body, max_deliveries=2)

    def test_trim_removes_only_what_every_group_has_acknowledged(self, make_buffer: MakeBuffer) -> None:
        async def body(buf: Buffer) -> None:
            for i in range(6):
                await buf.append("SPY", ticks(2, 2 * i), source="feed", seq=i)
            assert await buf.trim("SPY") == 0  # no group: nothing acknowledged by anyone
            fast = await buf.read("fast", "f", ["SPY"], count=10)
            await buf.ack("fast", fast)
            slow = await buf.read("slow", "s", ["SPY"], count=4)
            await buf.ack("slow", [slow[0], slow[2]])  # slow[1] still pending
            assert await buf.trim("SPY") == 1
            assert await buf.length("SPY") == 5
            await buf.ack("slow", [slow[1], slow[3]])
            assert await buf.trim("SPY") == 3  # up to what slow has read; the last two it never saw
            rest = await buf.read("slow", "s", ["SPY"], count=10)
            assert [e.seq for e in rest] == [4, 5]
            await buf.ack("slow", rest)
            assert await buf.trim("SPY") == 2
            assert await buf.length("SPY") == 0
            await buf.append("SPY", ticks(2, 12), source="feed", seq=6)
            assert [e.seq for e in await buf.read("fast", "f", ["SPY"])] == [6]

        run(make_buffer, body)

    def test_sequence_gap_is_reported_with_source_expected_and_got(self, make_buffer: MakeBuffer) -> None:
        seen: list[SequenceGap] = []

        async def body(buf: Buffer) -> None:
            results = [await buf.append("SPY", ticks(1, s), source="feed", seq=s) for s in (10, 11, 14, 15)]
            assert [r.gap for r in results] == [None, None, SequenceGap("feed", 12, 14, "SPY"), None]
            late = await buf.append("SPY", ticks(1, 12), source="feed", seq=12)  # a late batch filling the gap
            replay = await buf.append("SPY", ticks(1, 15), source="feed", seq=15)
            assert (late.gap, late.replayed, replay.gap, replay.replayed) == (None, True, None, True)
            other = await buf.append("QQQ", ticks(1, 0), source="other-feed", seq=3)
            assert other.gap is None  # a source's first number is never a gap
            assert await buf.gaps() == [SequenceGap("feed", 12, 14, "SPY")]
            assert (buf.metrics.sequence_gaps, buf.metrics.missing_sequences) == (1, 2)
            assert buf.metrics.entries_replayed == 2
            assert await buf.length("SPY") == 6  # replays are kept: the store dedupes by natural key

        run(make_buffer, body, on_gap=seen.append)
        assert seen == [SequenceGap("feed", 12, 14, "SPY")]
        assert seen[0].missing == 2

    def test_read_blocks_until_an_entry_arrives_or_the_timeout(self, make_buffer: MakeBuffer) -> None:
        async def body(buf: Buffer) -> None:
            await buf.ensure_group("SPY", "g", start_id="$")
            assert await buf.read("g", "c", ["SPY"], block_ms=50) == []

            async def later() -> None:
                await asyncio.sleep(0.05)
                await buf.append("SPY", ticks(1), source="feed", seq=0)

            task = asyncio.create_task(later())
            got = await buf.read("g", "c", ["SPY"], block_ms=5_000)
            await task
            assert [e.seq for e in got] == [0]

        run(make_buffer, body)

    def test_group_created_at_the_end_sees_only_new_entries(self, make_buffer: MakeBuffer) -> None:
        async def body(buf: Buffer) -> None:
            await buf.append("SPY", ticks(1), source="feed", seq=0)
            await buf.ensure_group("SPY", "late", start_id="$")
            await buf.ensure_group("SPY", "late", start_id="0")  # exists already: unchanged
            await buf.append("SPY", ticks(1, 1), source="feed", seq=1)
            assert [e.seq for e in await buf.read("late", "c", ["SPY"])] == [1]

        run(make_buffer, body)

    def test_bad_arguments_name_the_field_and_value(self, make_buffer: MakeBuffer) -> None:
        async def body(buf: Buffer) -> None:
            with pytest.raises(ValueError, match="seq=-1"):
                await buf.append("SPY", ticks(1), source="feed", seq=-1)
            with pytest.raises(ValueError, match="source=''"):
                await buf.append("SPY", ticks(1), source="", seq=0)
            with pytest.raises(ValueError, match="stream='a b'"):
                await buf.append("a b", ticks(1), source="feed", seq=0)
            with pytest.raises(ValueError, match="batch=list"):
                await buf.append("SPY", [1, 2], source="feed", seq=0)  # type: ignore[arg-type]
            with pytest.raises(ValueError, match="count=0"):
                await buf.read("g", "c", ["SPY"], count=0)

        run(make_buffer, body)


class TestMemoryBuffer(BufferContract):
    """The contract on the in-process buffer."""

    @pytest.fixture
    def make_buffer(self) -> MakeBuffer:
        return MemoryBuffer


# --------------------------------------------------------------------------------------------------------
# In-process specifics: the codec, an injected idle clock
# --------------------------------------------------------------------------------------------------------


def test_codec_round_trip_keeps_nan_payloads_and_negative_zero() -> None:
    batch = bars(10)
    out = decode_batch(encode_batch(batch))
    assert same_bits(out, batch)
    trades = decode_batch(encode_batch(ticks(200)))
    assert isinstance(trades, TickBatch)
    assert np.signbit(trades.size).any()


def test_codec_carries_one_symbol_once_and_several_symbols_by_dictionary() -> None:
    one, many = ticks(1000), quotes(999)
    assert len(encode_batch(one)) < 1000 * (4 * 8 + 4 + 1) + 2_000  # four 8-byte columns, int32 codes, bit flags
    assert decode_batch(encode_batch(many)).symbol.tolist() == many.symbol.tolist()


def test_decode_of_a_corrupt_payload_names_the_field() -> None:
    with pytest.raises(InvalidRecordError, match="payload"):
        decode_batch(b"not arrow at all")
    good = encode_batch(ticks(3))
    with pytest.raises(InvalidRecordError):
        decode_batch(good[: len(good) // 2])


def test_encode_of_a_non_string_symbol_names_the_field() -> None:
    batch = ticks(3)
    bad = TickBatch(**{**{n: getattr(batch, n) for n in TickBatch._DTYPES}, "symbol": np.array(["SPY", 5, None])})
    with pytest.raises(InvalidRecordError, match="symbol"):
        encode_batch(bad)


def test_decoded_numeric_columns_are_read_only_views() -> None:
    out = decode_batch(encode_batch(ticks(5)))
    assert isinstance(out, TickBatch)
    with pytest.raises(ValueError, match="read-only"):
        out.price[0] = 1.0


def test_claim_respects_min_idle_with_an_injected_clock() -> None:
    now = [0]

    async def body() -> None:
        buf = MemoryBuffer(idle_clock_ms=lambda: now[0])
        await buf.append("SPY", ticks(1), source="feed", seq=0)
        await buf.read("g", "c1", ["SPY"])
        now[0] = 29_999
        assert (await buf.claim("SPY", "g", "c2", min_idle_ms=30_000)).entries == []
        now[0] = 30_000
        [entry] = (await buf.claim("SPY", "g", "c2", min_idle_ms=30_000)).entries
        assert entry.deliveries == 2
        [p] = await buf.pending("SPY", "g")
        assert (p.consumer, p.idle_ms) == ("c2", 0)

    asyncio.run(body())


def test_entry_ids_increase_within_one_millisecond() -> None:
    async def body() -> list[str]:
        buf = MemoryBuffer(wall_clock_ms=lambda: 1_000)
        return [(await buf.append("SPY", ticks(1), source="f", seq=i)).id for i in range(3)]

    assert asyncio.run(body()) == ["1000-0", "1000-1", "1000-2"]
    assert next_entry_id("1000-2") == "1000-3"
    with pytest.raises(ValueError, match="entry_id='x'"):
        parse_entry_id("x")


def test_memory_buffer_satisfies_the_protocol() -> None:
    assert isinstance(MemoryBuffer(), Buffer)


def test_open_buffer_with_default_settings_gives_the_in_process_buffer() -> None:
    from cluster.buffers import open_buffer
    from cluster.config import Settings

    buffer = open_buffer(Settings(buffer="memory"), max_deliveries=3)
    assert isinstance(buffer, MemoryBuffer)
    assert buffer.max_deliveries == 3
