"""Local servers speaking Binance's and Coinbase's market-data protocols, on loopback, for the adapters' tests.

:class:`FakeBinance` replays a real capture over a combined stream and answers ``/api/v3/depth`` on the same
port (plain HTTP requests are answered by the WebSocket server's ``process_request`` hook) from a book it keeps
from the events it has sent, as the exchange does. It continues where it stopped when a client reconnects, and
can drop a connection or go silent at a chosen message.

:class:`FakeCoinbase` answers a ``subscribe`` with the ``subscriptions`` acknowledgement, then sends
``last_match``, ``match``, ``ticker`` and ``heartbeat`` messages in Coinbase's documented shapes, or an
``error`` for a product it does not list.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import random
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response


class FakeBinance:
    """A combined-stream server replaying a capture, with the REST depth snapshot beside it.

    Parameters
    ----------
    capture : Path
        The recorded capture (``<ns> <JSON>`` lines); its snapshot line seeds the server's book.
    drop_at, silent_at : int or None
        On the first connection, abort the TCP connection (no close frame) / stop sending without closing,
        once this many messages were sent in total.
    """

    def __init__(self, capture: Path, drop_at: int | None = None, silent_at: int | None = None) -> None:
        self.messages: list[str] = []
        self.symbols: set[str] = set()
        snapshot = None
        with gzip.open(capture, "rt") as lines:
            for line in lines:
                payload = line.split(" ", 1)[1].strip()
                if payload.startswith('{"lastUpdateId"'):
                    snapshot = json.loads(payload)
                else:
                    self.messages.append(payload)
        if snapshot is None:
            raise ValueError(f"{capture}: no snapshot line to seed the book")
        self.bids = {float(p): q for p, q in snapshot["bids"]}
        self.asks = {float(p): q for p, q in snapshot["asks"]}
        self.last_update_id: int = snapshot["lastUpdateId"]
        self.drop_at, self.silent_at = drop_at, silent_at
        self.cursor = 0
        self.connections = 0
        self.snapshot_requests = 0
        self._server: Server | None = None
        self.port = 0

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> FakeBinance:
        self._server = await serve(self._stream, "127.0.0.1", 0, process_request=self._rest)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def _apply(self, data: dict[str, Any]) -> None:
        if data["u"] <= self.last_update_id:
            return
        for side, levels in ((self.bids, data["b"]), (self.asks, data["a"])):
            for price, qty in levels:
                if float(qty) == 0:
                    side.pop(float(price), None)
                else:
                    side[float(price)] = qty
        self.last_update_id = data["u"]

    def _rest(self, connection: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        if url.path != "/api/v3/depth":
            return None  # a WebSocket handshake
        self.snapshot_requests += 1
        query = parse_qs(url.query)
        if query.get("symbol") != ["BTCUSDT"]:
            return connection.respond(HTTPStatus.BAD_REQUEST, '{"code":-1121,"msg":"Invalid symbol."}')
        limit = int(query.get("limit", ["100"])[0])
        body = {
            "lastUpdateId": self.last_update_id,
            "bids": [[f"{p:.8f}", q] for p, q in sorted(self.bids.items(), reverse=True)[:limit]],
            "asks": [[f"{p:.8f}", q] for p, q in sorted(self.asks.items())[:limit]],
        }
        return connection.respond(HTTPStatus.OK, json.dumps(body))

    async def _stream(self, ws: ServerConnection) -> None:
        self.connections += 1
        first = self.connections == 1
        assert ws.request is not None
        streams = parse_qs(urlsplit(ws.request.path).query).get("streams", [""])[0].split("/")
        if not any(s.startswith("btcusdt@") for s in streams):
            await ws.wait_closed()  # Binance sends nothing for a symbol it does not list
            return
        while self.cursor < len(self.messages):
            if first and self.drop_at is not None and self.cursor >= self.drop_at:
                ws.transport.abort()
                return
            if first and self.silent_at is not None and self.cursor >= self.silent_at:
                await ws.wait_closed()
                return
            payload = self.messages[self.cursor]
            self.cursor += 1
            if '"depthUpdate"' in payload:
                self._apply(json.loads(payload)["data"])
            await ws.send(payload)
            if self.cursor % 200 == 0:
                await asyncio.sleep(0)  # let the snapshot requests in
        await ws.wait_closed()


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class FakeCoinbase:
    """A ``ws-feed`` server: subscription handshake, then trades and tickers of each product.

    Parameters
    ----------
    products : set of str
        The products it lists; subscribing to another gets an ``error``.
    matches : int
        ``match`` messages per product (each followed by a ``ticker``, as Coinbase does).
    """

    START = datetime(2024, 8, 8, 23, 54, 15, 123456, tzinfo=UTC)

    def __init__(self, products: frozenset[str] = frozenset({"BTC-USD", "ETH-USD"}), matches: int = 200) -> None:
        self.products = products
        self.matches = matches
        self.subscribe_requests: list[dict[str, Any]] = []
        self.sent: list[dict[str, Any]] = []
        self._server: Server | None = None
        self.port = 0

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def __aenter__(self) -> FakeCoinbase:
        self._server = await serve(self._feed, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def script(self, products: list[str]) -> list[dict[str, Any]]:
        """The messages sent after the acknowledgement: a last_match, then match + ticker pairs, heartbeats."""
        rng = random.Random(7)  # noqa: S311 - made-up market data, not a secret
        out: list[dict[str, Any]] = []
        price = {"BTC-USD": 61_800.0, "ETH-USD": 2_650.0}
        sequence = dict.fromkeys(products, 1_000_000)
        trade_id = dict.fromkeys(products, 50_000)
        for i in range(self.matches + 1):
            for product in products:
                t = self.START + timedelta(microseconds=250_000 * i + rng.randrange(1000))
                p = round(price.get(product, 1.0) * (1 + rng.gauss(0, 2e-4)), 2)
                size = f"{rng.uniform(0.0001, 0.5):.8f}"
                sequence[product] += 1
                trade_id[product] += 1
                side = rng.choice(["buy", "sell"])
                out.append(
                    {
                        "type": "last_match" if i == 0 else "match",
                        "trade_id": trade_id[product],
                        "maker_order_id": f"m-{product}-{i}",
                        "taker_order_id": f"t-{product}-{i}",
                        "side": side,
                        "size": size,
                        "price": f"{p:.2f}",
                        "product_id": product,
                        "sequence": sequence[product],
                        "time": _iso(t),
                    }
                )
                if i == 0:
                    continue
                out.append(
                    {
                        "type": "ticker",
                        "sequence": sequence[product],
                        "product_id": product,
                        "price": f"{p:.2f}",
                        "open_24h": "61000.00",
                        "volume_24h": "12345.67890000",
                        "low_24h": "60500.00",
                        "high_24h": "62500.00",
                        "volume_30d": "400000.00000000",
                        "best_bid": f"{p - 0.01:.2f}",
                        "best_bid_size": f"{rng.uniform(0.01, 3):.8f}",
                        "best_ask": f"{p:.2f}",
                        "best_ask_size": f"{rng.uniform(0.01, 3):.8f}",
                        "side": side,
                        "time": _iso(t),
                        "trade_id": trade_id[product],
                        "last_size": size,
                    }
                )
                if i % 20 == 0:
                    out.append(
                        {
                            "type": "heartbeat",
                            "sequence": sequence[product],
                            "last_trade_id": trade_id[product],
                            "product_id": product,
                            "time": _iso(t),
                        }
                    )
        return out

    async def _feed(self, ws: ServerConnection) -> None:
        request = json.loads(await ws.recv())
        self.subscribe_requests.append(request)
        products = request.get("product_ids", [])
        unknown = [p for p in products if p not in self.products]
        if request.get("type") != "subscribe" or unknown:
            reason = f"{unknown[0]} is not a valid product" if unknown else "type must be subscribe"
            await ws.send(json.dumps({"type": "error", "message": "Failed to subscribe", "reason": reason}))
            await ws.close()
            return
        channels = [{"name": c, "product_ids": products} for c in request["channels"]]
        await ws.send(json.dumps({"type": "subscriptions", "channels": channels}))
        for message in self.script(products):
            self.sent.append(message)
            await ws.send(json.dumps(message))
        await ws.wait_closed()
