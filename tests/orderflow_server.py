"""A Binance stand-in on 127.0.0.1 that replays a real recording: websocket stream and REST depth.

Messages go out at the recorded pace times `speed` (100 by default), so the server's book, which
answers snapshot requests, is never far ahead of what the client has read, as with a real
exchange. One `websockets` server answers both: a websocket handshake on `/stream` gets the recorded
stream messages in order; a plain `GET /api/v3/depth` (or `/fapi/v1/depth`, `/dapi/v1/depth`)
gets a depth snapshot of the server's own book, kept with plain dicts (an implementation
independent of `orderflow.book`) from the recorded REST snapshot plus every diff sent so far,
with `lastUpdateId` the last update id applied. A resync therefore gets a current snapshot, as
from the exchange.

Knobs for the failure tests: `drop` (indices of stream messages not sent, though the server's
book still applies them, as when the network loses one), `inject` (extra raw texts sent before
the message at an index), `close_after` (close the connection once after that many messages;
the next connection continues where the last stopped).
The first snapshot request gets the recorded snapshot (the state when the recording began);
later ones get the server's current book.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import orjson
from websockets.asyncio.server import serve

from orderflow.recording import REST, WS, read_recording


def load_stream(path: Path) -> tuple[list[tuple[float, str]], dict | None]:
    """The recording's websocket messages as (receive time in s, raw text), and its REST snapshot."""
    messages, snapshot = [], None
    for msg in read_recording(path):
        if msg.kind == REST:
            snapshot = orjson.loads(msg.text)
        elif msg.kind == WS:
            messages.append((msg.time_ns / 1e9, msg.text))
    return messages, snapshot


class ReferenceBook:
    """The exchange's side of the truth: dict levels, keyed by the price *string* as sent."""

    def __init__(self, snapshot: dict | None) -> None:
        self.bids: dict[str, str] = {}
        self.asks: dict[str, str] = {}
        self.last_id: int | None = None
        if snapshot is not None:
            self.bids = {p: q for p, q in snapshot["bids"]}
            self.asks = {p: q for p, q in snapshot["asks"]}
            self.last_id = snapshot["lastUpdateId"]
        self.first_snapshot = self.snapshot_json() if self.last_id is not None else None

    def apply_text(self, text: str) -> None:
        if '"depthUpdate"' not in text:
            return
        data = orjson.loads(text)["data"]
        if self.last_id is None or data["u"] <= self.last_id:
            return  # already in the snapshot (or no snapshot to build on)
        for book, levels in ((self.bids, data["b"]), (self.asks, data["a"])):
            for p, q in levels:
                if float(q) == 0:
                    book.pop(p, None)
                else:
                    book[p] = q
        self.last_id = data["u"]

    def snapshot_json(self) -> str:
        bids = sorted(self.bids.items(), key=lambda kv: -float(kv[0]))
        asks = sorted(self.asks.items(), key=lambda kv: float(kv[0]))
        return json.dumps({"lastUpdateId": self.last_id, "bids": bids, "asks": asks})


class ReplayServer:
    """Serve one recording to one client at a time, as fast as the client reads."""

    def __init__(
        self, messages: list[tuple[float, str]], book: ReferenceBook, *, speed: float | None = 100.0,
        drop: set[int] = frozenset(), inject: dict[int, list[str]] | None = None, close_after: int | None = None,
    ) -> None:
        self.messages = messages
        self.speed = speed
        self.book = book
        self.drop = set(drop)
        self.inject = inject or {}
        self.close_after = close_after
        self.cursor = 0
        self.sent = 0
        self.snapshot_requests = 0
        self.connections = 0
        self.done = asyncio.Event()
        self._server = None
        self.port = 0

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/stream"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v3/depth"

    async def __aenter__(self) -> ReplayServer:
        self._server = await serve(self._handler, "127.0.0.1", 0, process_request=self._rest)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        self._server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 5)

    def _rest(self, connection, request):
        if "/depth" in request.path:
            self.snapshot_requests += 1
            if self.book.last_id is None:
                return connection.respond(503, '{"code":-1,"msg":"no snapshot in this recording"}')
            if self.snapshot_requests == 1 and self.book.first_snapshot is not None:
                # the first answer is the recorded one, fetched when the recording started; the
                # server may have raced ahead of what the client has read by then
                return connection.respond(200, self.book.first_snapshot)
            return connection.respond(200, self.book.snapshot_json())
        return None  # anything else: go on with the websocket handshake

    async def _handler(self, ws) -> None:
        self.connections += 1
        sent_here = 0
        loop = asyncio.get_running_loop()
        start_wall, start_rec = loop.time(), self.messages[self.cursor][0] if self.messages else 0.0
        while self.cursor < len(self.messages):
            i = self.cursor
            for extra in self.inject.get(i, ()):
                await ws.send(extra)
            recorded, text = self.messages[i]
            # the recorded pace, sped up: the server may not race ahead of the stream it pretends to be
            if self.speed is not None:
                delay = start_wall + (recorded - start_rec) / self.speed - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            self.book.apply_text(text)
            self.cursor += 1
            if i not in self.drop:
                await ws.send(text)
                self.sent += 1
                sent_here += 1
            if self.close_after is not None and sent_here >= self.close_after:
                self.close_after = None
                await ws.close()
                return
        self.done.set()
        await ws.wait_closed()
