"""Live Binance depth, trade and top-of-book streams for one symbol, kept in a synced book.

I/O lives here (the sanctioned exception in `orderflow/`); every rule lives in
`orderflow.binance_feed` and `orderflow.binance_sync`, shared with the replay. The client:

- opens the combined stream `<ws_url>?streams=<sym>@<depth>/<sym>@trade/<sym>@bookTicker`
  (`websockets` package); URLs come from `BinanceStreamConfig`, so tests point them at 127.0.0.1;
- fetches the REST depth snapshot whenever the book needs one (at start, after a gap, a crossed
  book or an overflow), with stdlib `urllib` in a worker thread: one small GET per resync does
  not justify another HTTP client dependency;
- reads into a bounded `Inbox`; a slow consumer drops the oldest messages and resyncs;
- reconnects with exponential backoff and full jitter (seeded `random.Random` passed in),
  resubscribing through the stream URL and resyncing the book from a fresh snapshot;
- stops cleanly on `stop()`: the socket is closed and every task it started is awaited.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from websockets.asyncio.client import connect
from websockets.exceptions import InvalidHandshake, InvalidURI, WebSocketException

from orderflow.binance_feed import BinanceFeed
from orderflow.stream import Backoff, Inbox

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BinanceStreamConfig:
    """Where and what to subscribe. Defaults are Binance spot; USD-M uses fstream/fapi URLs."""

    symbol: str  # e.g. "btcusdt" (any case)
    ws_url: str = "wss://stream.binance.com:9443/stream"
    rest_url: str = "https://api.binance.com/api/v3/depth"
    depth_stream: str = "depth@100ms"  # futures: "depth@0ms" or "depth@100ms"
    trades: bool = True
    book_ticker: bool = True
    snapshot_limit: int = 1000
    inbox_size: int = 20_000
    snapshot_timeout_s: float = 10.0
    open_timeout_s: float = 10.0
    backoff: Backoff = field(default_factory=Backoff)

    def stream_url(self) -> str:
        sym = self.symbol.lower()
        streams = [f"{sym}@{self.depth_stream}"]
        if self.trades:
            streams.append(f"{sym}@trade")
        if self.book_ticker:
            streams.append(f"{sym}@bookTicker")
        return f"{self.ws_url}?streams={'/'.join(streams)}"

    def snapshot_url(self) -> str:
        return f"{self.rest_url}?symbol={self.symbol.upper()}&limit={self.snapshot_limit}"


def _http_get(url: str, timeout: float) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # the URL comes from config
        return resp.read()


@dataclass
class StreamStats:
    connects: int = 0
    disconnects: int = 0
    snapshot_requests: int = 0
    snapshot_failures: int = 0
    inbox_dropped: int = 0


class BinanceStreamClient:
    """Keeps `feed` (book, features, trades) current from the live streams until `stop()`."""

    def __init__(
        self,
        config: BinanceStreamConfig,
        feed: BinanceFeed | None = None,
        *,
        rng: random.Random | None = None,
        fetch: Callable[[str, float], bytes] | None = None,
        on_message: Callable[[BinanceFeed], Awaitable[None] | None] | None = None,
    ) -> None:
        self.config = config
        self.feed = feed or BinanceFeed(config.symbol.upper())
        self.stats = StreamStats()
        self._rng = rng or random.Random(0)
        self._fetch = fetch or _http_get
        self._on_message = on_message
        self._stopping = asyncio.Event()
        self._ws = None
        self._snapshot_task: asyncio.Task | None = None

    def stop(self) -> None:
        """Ask the client to finish: `run()` returns once the socket is closed."""
        self._stopping.set()
        if self._ws is not None:
            asyncio.get_running_loop().create_task(self._ws.close())

    async def run(self) -> None:
        """Connect, keep the book in sync, reconnect on failure; returns after `stop()`."""
        attempt = 0
        while not self._stopping.is_set():
            try:
                async with connect(self.config.stream_url(), open_timeout=self.config.open_timeout_s,
                                   max_queue=None) as ws:
                    self._ws = ws
                    self.stats.connects += 1
                    attempt = 0
                    await self._session(ws)
            except (OSError, TimeoutError, InvalidHandshake, WebSocketException) as exc:
                if isinstance(exc, InvalidURI):
                    raise
                log.warning("binance stream %s: %s: %s", self.config.symbol, type(exc).__name__, exc)
            finally:
                self._ws = None
                await self._cancel_snapshot()
            if self._stopping.is_set():
                break
            self.stats.disconnects += 1
            self.feed.sync.reset()  # a new connection starts a new chain of update ids
            delay = self.config.backoff.delay(attempt, self._rng)
            attempt += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    async def _session(self, ws) -> None:
        inbox = Inbox(self.config.inbox_size)
        reader = asyncio.create_task(self._read(ws, inbox))
        try:
            while True:
                get = asyncio.ensure_future(inbox.get())
                done, _ = await asyncio.wait({get, reader}, return_when=asyncio.FIRST_COMPLETED)
                if get not in done:
                    get.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await get
                    # the reader ended: drain what is left, then report how it ended
                    while len(inbox):
                        self._handle(await inbox.get(), inbox)
                    reader.result()
                    return
                self._handle(get.result(), inbox)
                if self._on_message is not None:
                    result = self._on_message(self.feed)
                    if result is not None:
                        await result
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader

    async def _read(self, ws, inbox: Inbox) -> None:
        async for message in ws:
            inbox.put(message)

    def _handle(self, message, inbox: Inbox) -> None:
        dropped = inbox.take_dropped()
        if dropped:
            self.stats.inbox_dropped += dropped
            self.feed.sync.overflowed(dropped)
        self.feed.on_text(message)
        if self.feed.sync.needs_snapshot and (self._snapshot_task is None or self._snapshot_task.done()):
            self._snapshot_task = asyncio.create_task(self._load_snapshot())

    async def _load_snapshot(self) -> None:
        """Fetch snapshots until one is loaded (or the book no longer needs one), backing off on failure."""
        failures = 0
        while self.feed.sync.needs_snapshot and not self._stopping.is_set():
            self.stats.snapshot_requests += 1
            try:
                body = await asyncio.to_thread(self._fetch, self.config.snapshot_url(), self.config.snapshot_timeout_s)
            except (OSError, urllib.error.URLError, TimeoutError, ValueError) as exc:
                self.stats.snapshot_failures += 1
                log.warning("binance depth snapshot failed: %s", exc)
                await asyncio.sleep(self.config.backoff.delay(failures, self._rng))
                failures += 1
                continue
            # applied synchronously, between two stream messages: buffered events replay on top of it
            self.feed.on_text(body)
            if self.feed.sync.needs_snapshot:  # rejected or older than the stream: ask again, not at once
                await asyncio.sleep(self.config.backoff.delay(failures, self._rng))
                failures += 1

    async def _cancel_snapshot(self) -> None:
        task, self._snapshot_task = self._snapshot_task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
