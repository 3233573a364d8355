"""Live Coinbase Advanced Trade `level2` books (plus `heartbeats`) over one websocket.

I/O only; the rules live in `orderflow.coinbase_sync`. The client subscribes to `level2` and
`heartbeats` (Coinbase closes idle subscriptions, and heartbeats keep `sequence_num` moving on
quiet books), feeds every message to `CoinbaseL2Feed` through a bounded `Inbox`, and when the
feed reports a lost message (a `sequence_num` gap, a crossed book, an inbox overflow) it
unsubscribes and subscribes `level2` again on the same socket, which brings fresh snapshots.
Reconnects use the same backoff with full jitter as the Binance client. Market-data channels
need no authentication; the URL comes from `CoinbaseStreamConfig` so tests use 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from dataclasses import dataclass, field

from websockets.asyncio.client import connect
from websockets.exceptions import InvalidHandshake, WebSocketException

from orderflow.coinbase_sync import CoinbaseL2Feed
from orderflow.stream import Backoff, Inbox

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CoinbaseStreamConfig:
    product_ids: tuple[str, ...]  # e.g. ("BTC-USD",)
    ws_url: str = "wss://advanced-trade-ws.coinbase.com"
    inbox_size: int = 20_000
    open_timeout_s: float = 10.0
    backoff: Backoff = field(default_factory=Backoff)

    def message(self, kind: str, channel: str) -> str:
        return json.dumps({"type": kind, "product_ids": list(self.product_ids), "channel": channel})


class CoinbaseStreamClient:
    """Keeps `feed.books` current from the live `level2` channel until `stop()`."""

    def __init__(self, config: CoinbaseStreamConfig, feed: CoinbaseL2Feed | None = None, *,
                 rng: random.Random | None = None) -> None:
        if not config.product_ids:
            raise ValueError("subscribe to at least one product id")
        self.config = config
        self.feed = feed or CoinbaseL2Feed()
        self._rng = rng or random.Random(0)
        self._stopping = asyncio.Event()
        self._ws = None
        self.connects = 0
        self.resubscribes = 0
        self.inbox_dropped = 0

    def stop(self) -> None:
        self._stopping.set()
        if self._ws is not None:
            asyncio.get_running_loop().create_task(self._ws.close())

    async def run(self) -> None:
        attempt = 0
        while not self._stopping.is_set():
            try:
                async with connect(self.config.ws_url, open_timeout=self.config.open_timeout_s, max_queue=None) as ws:
                    self._ws = ws
                    self.connects += 1
                    attempt = 0
                    self.feed.resubscribed()
                    await ws.send(self.config.message("subscribe", "heartbeats"))
                    await ws.send(self.config.message("subscribe", "level2"))
                    await self._session(ws)
            except (OSError, TimeoutError, InvalidHandshake, WebSocketException) as exc:
                log.warning("coinbase stream: %s: %s", type(exc).__name__, exc)
            finally:
                self._ws = None
            if self._stopping.is_set():
                break
            delay = self.config.backoff.delay(attempt, self._rng)
            attempt += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    async def _session(self, ws) -> None:
        inbox = Inbox(self.config.inbox_size)

        async def read() -> None:
            async for message in ws:
                inbox.put(message)

        reader = asyncio.create_task(read())
        try:
            while True:
                get = asyncio.ensure_future(inbox.get())
                done, _ = await asyncio.wait({get, reader}, return_when=asyncio.FIRST_COMPLETED)
                if get not in done:
                    get.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await get
                    reader.result()
                    return
                dropped = inbox.take_dropped()
                if dropped:
                    self.inbox_dropped += dropped
                    self.feed.needs_resubscribe = True
                self.feed.on_text(get.result())
                if self.feed.needs_resubscribe:
                    self.resubscribes += 1
                    await ws.send(self.config.message("unsubscribe", "level2"))
                    inbox.clear()
                    self.feed.resubscribed()
                    await ws.send(self.config.message("subscribe", "level2"))
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
