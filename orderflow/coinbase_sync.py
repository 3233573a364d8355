"""Coinbase level-2 books from raw messages: Advanced Trade `level2` and the older Pro feed.

- Advanced Trade (`wss://advanced-trade-ws.coinbase.com`): every message carries the
  connection's `sequence_num`, one more than the previous message's *on any channel*
  (heartbeats included). `l2_data` messages hold events of type `snapshot` (the whole book,
  replacing ours) or `update`, each with `updates: [{side: bid|offer, price_level,
  new_quantity}]`, quantities absolute, 0 deletes. A skipped `sequence_num` means a lost message:
  every book is dropped and the caller must resubscribe (`needs_resubscribe`), which brings a
  fresh snapshot.
- Coinbase Pro (`ws-feed.pro.coinbase.com`, the captures in `multi-exchange-raw`): `snapshot`
  with `bids`/`asks`, then `l2update` with `changes: [[buy|sell, price, size]]`; no sequence
  numbers on level2, so only the crossed-book check guards it. `match` messages are trades, and
  their `side` is the *maker's*: a `sell` maker means a buy aggressor.

Pure: text in, books and counters out. A crossed or locked book after an update drops that
product's book and asks for a resubscribe, like a gap.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import orjson

from orderflow.binance_sync import MessageError
from orderflow.book import BookDataError, OrderBook, _number

log = logging.getLogger(__name__)


@dataclass
class CoinbaseStats:
    messages: int = 0
    snapshots: int = 0
    level_updates: int = 0
    gaps: int = 0
    crossed: int = 0
    rejected: int = 0
    resubscribes: int = 0
    heartbeats: int = 0
    trades: int = 0
    ignored: int = 0  # tickers, subscription acks and other channels


class CoinbaseL2Feed:
    """Books for every product on one Coinbase connection."""

    def __init__(self) -> None:
        self.books: dict[str, OrderBook] = {}
        self.stats = CoinbaseStats()
        self.last_sequence: int | None = None
        self.needs_resubscribe = False
        self.trades: list[tuple[int | None, str, float, float, int]] = []  # (trade id, product, price, size, side)

    def synced(self, product: str) -> bool:
        return product in self.books and not self.needs_resubscribe

    def resubscribed(self) -> None:
        """The caller resubscribed: expect snapshots and a new sequence."""
        self.needs_resubscribe = False
        self.last_sequence = None
        self.books.clear()

    def _lose_sync(self, why: str) -> None:
        if not self.needs_resubscribe:
            self.stats.resubscribes += 1
            log.warning("coinbase level2 resubscribe: %s", why)
        self.needs_resubscribe = True
        self.books.clear()

    # --- input ---------------------------------------------------------------------------------

    def on_text(self, text: str | bytes) -> None:
        self.stats.messages += 1
        try:
            obj = orjson.loads(text)
            if not isinstance(obj, dict):
                raise MessageError("expected a JSON object")
            self.on_message(obj)
        except (orjson.JSONDecodeError, MessageError, BookDataError) as exc:
            self.stats.rejected += 1
            log.warning("rejected coinbase message: %s", exc)

    def on_message(self, obj: dict) -> None:
        if "channel" in obj:
            self._advanced(obj)
        else:
            self._legacy(obj)

    def _advanced(self, obj: dict) -> None:
        seq = obj.get("sequence_num")
        if type(seq) is not int:
            raise MessageError("Advanced Trade message without an integer sequence_num")
        if self.last_sequence is not None and seq != self.last_sequence + 1:
            self.stats.gaps += 1
            self._lose_sync(f"sequence_num {seq} after {self.last_sequence}")
            self.last_sequence = seq
            return
        self.last_sequence = seq
        channel = obj["channel"]
        if channel == "heartbeats":
            self.stats.heartbeats += 1
            return
        if channel != "l2_data":
            self.stats.ignored += 1
            return
        if self.needs_resubscribe:
            return  # books are void until the caller resubscribes
        events = obj.get("events")
        if not isinstance(events, list):
            raise MessageError("l2_data without an events list")
        for ev in events:
            try:
                kind, product, updates = ev["type"], ev["product_id"], ev["updates"]
                levels = [
                    (u["side"], _number(u["price_level"], "price_level"), _number(u["new_quantity"], "new_quantity"))
                    for u in updates
                ]
            except (KeyError, TypeError) as exc:
                raise MessageError(f"l2_data event lacks a field: {exc}") from None
            if any(side not in ("bid", "offer") for side, _, _ in levels):
                raise MessageError("l2_data update side must be bid or offer")
            if kind == "snapshot":
                self.books[product] = OrderBook(product)
                self.stats.snapshots += 1
            elif kind != "update":
                raise MessageError(f"unknown l2_data event type {kind!r}")
            elif product not in self.books:
                raise MessageError(f"update for {product} before its snapshot")
            book = self.books[product]
            for side, price, qty in levels:
                book.set_level(side == "bid", price, qty)
            self.stats.level_updates += len(levels) if kind == "update" else 0
            self._check(product)

    def _legacy(self, obj: dict) -> None:
        kind = obj.get("type")
        product = obj.get("product_id")
        if kind == "snapshot":
            book = OrderBook(product or "")
            try:
                book.load_snapshot(obj["bids"], obj["asks"])
            except (KeyError, ValueError) as exc:
                raise MessageError(f"snapshot without valid bids/asks: {exc}") from None
            self.books[product] = book
            self.stats.snapshots += 1
            self._check(product)
        elif kind == "l2update":
            if product not in self.books:
                raise MessageError(f"l2update for {product} before its snapshot")
            try:
                changes = [(s, _number(p, "price"), _number(q, "size")) for s, p, q in obj["changes"]]
            except (KeyError, TypeError, ValueError) as exc:
                raise MessageError(f"l2update without valid changes: {exc}") from None
            if any(s not in ("buy", "sell") for s, _, _ in changes):
                raise MessageError("l2update side must be buy or sell")
            book = self.books[product]
            for side, price, qty in changes:
                book.set_level(side == "buy", price, qty)
            self.stats.level_updates += len(changes)
            self._check(product)
        elif kind in ("match", "last_match"):
            try:
                price, size = _number(obj["price"], "price"), _number(obj["size"], "size")
                maker = obj["side"]
            except KeyError as exc:
                raise MessageError(f"match lacks {exc}") from None
            self.stats.trades += 1
            self.trades.append((obj.get("trade_id"), product or "", price, size, 1 if maker == "sell" else -1))
        else:
            self.stats.ignored += 1

    def _check(self, product: str) -> None:
        book = self.books[product]
        if book.is_crossed():
            self.stats.crossed += 1
            self._lose_sync(f"{product} book crossed or locked")
