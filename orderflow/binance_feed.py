"""Binance combined-stream messages -> a synced book, order-flow features and trade flow.

One code path for live and replay: the websocket client (`orderflow.binance_stream`) and the
replay of a recording both hand every raw message to `BinanceFeed.on_text`. On every applied
depth event the rolling OFI and the top-k depth imbalance are recomputed, and the top of book
is checked against the `bookTicker` stream at the same update id.

Top-of-book agreement: a `bookTicker` carries the update id `t` of the book state it shows. The
local book after an event [U, u] is the state at id u, and it stays so until the next event's
U, so a ticker is comparable when t == u of an applied event, or when it falls between one
event's u and the next event's U (no change to this book in between). A ticker with
U <= t < u falls inside an aggregated diff (spot `@100ms`), whose intermediate states the diff
stream never shows: it is counted as not comparable, never as a disagreement.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass

import numpy as np
import orjson

from orderflow.binance_sync import BinanceBookSync, MessageError, SyncStats, parse_depth_event, parse_depth_snapshot
from orderflow.book import OrderBook
from orderflow.features import RollingOFI, imbalance
from orderflow.snapshot import OrderFlowSnapshot, build_orderflow_snapshot
from orderflow.trades import Trades
from theories.candles import Candles

log = logging.getLogger(__name__)


@dataclass
class TopOfBookAgreement:
    """Tickers compared with the local book at the same update id."""

    compared: int = 0
    agreed: int = 0  # bid price, bid size, ask price and ask size all equal
    price_agreed: int = 0  # best bid and ask prices equal
    not_comparable: int = 0

    @property
    def rate(self) -> float | None:
        return self.agreed / self.compared if self.compared else None

    @property
    def price_rate(self) -> float | None:
        return self.price_agreed / self.compared if self.compared else None


class BinanceFeed:
    """Everything one symbol's Binance streams yield, kept current message by message."""

    def __init__(
        self, symbol: str = "", *, max_buffer: int = 10_000, ofi_window_ms: int = 10_000, top_levels: int = 10,
        max_trades: int = 50_000, max_pending_tickers: int = 10_000,
    ) -> None:
        self.sync = BinanceBookSync(symbol, max_buffer=max_buffer)
        self.ofi = RollingOFI(ofi_window_ms)
        self.top_levels = top_levels
        self.messages = 0
        self.rejected = 0  # malformed or unknown messages
        self.tickers = 0
        self.trades_seen = 0
        self.agreement = TopOfBookAgreement()
        self.last_event_ms = 0
        self.depth_imbalance: float | None = None  # top-k, recomputed on every applied event
        self._prev_top: tuple[float, float, float, float] | None = None
        self._prev_u: int | None = None
        self._pending: deque[tuple[int, str, str, str, str]] = deque(maxlen=max_pending_tickers)
        self._trade_time: deque[int] = deque(maxlen=max_trades)
        self._trade_price: deque[float] = deque(maxlen=max_trades)
        self._trade_size: deque[float] = deque(maxlen=max_trades)
        self._trade_side: deque[int] = deque(maxlen=max_trades)

    @property
    def book(self) -> OrderBook:
        return self.sync.book

    # --- input ---------------------------------------------------------------------------------

    def on_text(self, text: str | bytes) -> None:
        """One raw message (combined-stream JSON or a REST snapshot). Bad ones are counted, not raised."""
        self.messages += 1
        try:
            obj = orjson.loads(text)
        except (orjson.JSONDecodeError, TypeError) as exc:
            self._reject(f"not JSON: {exc}")
            return
        try:
            self.on_message(obj)
        except MessageError as exc:
            self._reject(str(exc))

    def _reject(self, why: str) -> None:
        self.rejected += 1
        log.warning("rejected message: %s", why)

    def on_message(self, obj: object) -> None:
        if not isinstance(obj, dict):
            raise MessageError(f"expected a JSON object, got {type(obj).__name__}")
        if "lastUpdateId" in obj:
            self.on_snapshot(obj)
            return
        data = obj.get("data", obj)
        if not isinstance(data, dict):
            raise MessageError("combined-stream message without a data object")
        event = data.get("e")
        # most frequent first: a futures recording is ~70% bookTicker, ~23% trade, ~7% depthUpdate
        if event == "bookTicker" or (event is None and "b" in data and "A" in data):  # spot tickers carry no e
            self.on_ticker(data)
        elif event == "trade":
            self.on_trade(data)
        elif event == "depthUpdate":
            self.on_depth(data)
        elif event == "markPriceUpdate":
            pass  # funding and mark price: not book data
        else:
            raise MessageError(f"unknown message {str(obj)[:80]}")

    def on_snapshot(self, data: dict) -> None:
        self.sync.on_snapshot(parse_depth_snapshot(data))
        self._after_change(None)

    def on_depth(self, data: dict) -> None:
        ev = parse_depth_event(data)
        applied = self.sync.on_event(ev)
        if ev.event_time_ms:
            self.last_event_ms = ev.event_time_ms
        if applied:
            self._after_change(ev)
        elif not self.sync.synced:
            self._lost_sync()

    def _lost_sync(self) -> None:
        if self._prev_top is not None:
            self.ofi.reset()
        self._prev_top = None
        self._prev_u = None

    def _after_change(self, ev) -> None:
        """Recompute the per-event features and settle the tickers this state answers."""
        if not self.sync.synced:
            if ev is None and self.sync.last_update_id is not None:  # a snapshot loaded, not yet live
                self._prev_top, self._prev_u = None, None
            return
        top = self.book.top()
        if top is None:
            return
        first = ev.first_id if ev is not None else self.sync.last_update_id
        last = self.sync.last_update_id
        self._settle_tickers(first, last, top)
        self._prev_top, self._prev_u = top, last
        self.ofi.update(self.last_event_ms, *top)
        book = self.book
        self.depth_imbalance = imbalance(book.depth(True, self.top_levels), book.depth(False, self.top_levels))

    def _settle_tickers(self, first: int, last: int, top: tuple[float, float, float, float]) -> None:
        pending = self._pending
        if not pending or pending[0][0] > last:
            return
        prev_u, prev_top, compare = self._prev_u, self._prev_top, self._compare
        not_comparable = 0
        while pending and pending[0][0] <= last:
            t, b, bq, a, aq = pending.popleft()
            if prev_u is not None and prev_u <= t < first:
                compare(prev_top, b, bq, a, aq)
            elif t == last:
                compare(top, b, bq, a, aq)
            else:
                not_comparable += 1
        self.agreement.not_comparable += not_comparable

    def _compare(self, top, b: str, bq: str, a: str, aq: str) -> None:
        agr = self.agreement
        agr.compared += 1
        try:
            prices = top[0] == float(b) and top[2] == float(a)
            sizes = top[1] == float(bq) and top[3] == float(aq)
        except ValueError:
            agr.compared -= 1
            self._reject("bookTicker with a non-numeric price")
            return
        agr.price_agreed += prices
        agr.agreed += prices and sizes

    def on_ticker(self, data: dict) -> None:
        try:
            t, b, bq, a, aq = data["u"], data["b"], data["B"], data["a"], data["A"]
        except KeyError:
            raise MessageError("bookTicker lacks u, b, B, a or A") from None
        if type(t) is not int:
            raise MessageError(f"bookTicker u must be an integer, got {t!r}")
        self.tickers += 1
        if self.sync.synced and self._prev_u is not None and t <= self._prev_u:
            # the book already moved past t: comparable only if no event landed after t
            if t == self._prev_u:
                self._compare(self._prev_top, b, bq, a, aq)
            else:
                self.agreement.not_comparable += 1
            return
        self._pending.append((t, b, bq, a, aq))

    def on_trade(self, data: dict) -> None:
        try:
            t, p, q, m = int(data["T"]), float(data["p"]), float(data["q"]), data["m"]
        except (KeyError, TypeError, ValueError):
            raise MessageError(f"trade lacks a valid T, p, q or m: {str(data)[:80]}") from None
        if not (p > 0 and q >= 0 and isinstance(m, bool)):
            raise MessageError(f"trade with price {p}, size {q}, m {m!r}")
        self.trades_seen += 1
        self._trade_time.append(t)
        self._trade_price.append(p)
        self._trade_size.append(q)
        self._trade_side.append(-1 if m else 1)  # m: the buyer was the maker, so the seller aggressed

    # --- output --------------------------------------------------------------------------------

    def trades(self, since_ms: int | None = None) -> Trades:
        tr = Trades(
            np.fromiter(self._trade_time, dtype=np.int64, count=len(self._trade_time)),
            np.fromiter(self._trade_price, dtype=np.float64, count=len(self._trade_price)),
            np.fromiter(self._trade_size, dtype=np.float64, count=len(self._trade_size)),
            np.fromiter(self._trade_side, dtype=np.int8, count=len(self._trade_side)),
        )
        return tr if since_ms is None else tr.since(since_ms)

    def snapshot(
        self, candles: Candles | None = None, trade_window_ms: int = 300_000, order_size: float = 1.0
    ) -> OrderFlowSnapshot:
        """The order-flow snapshot now: book parts only while synced, trades of the last window."""
        trades = self.trades()
        if len(trades):
            trades = trades.since(int(trades.time[-1]) - trade_window_ms)
        return build_orderflow_snapshot(
            candles, book=self.book, ofi=self.ofi, book_time_ms=self.last_event_ms, book_synced=self.sync.synced,
            trades=trades, top_levels=self.top_levels, order_size=order_size,
        )

    def reset_counters(self) -> None:
        """Zero every counter but keep the book and its sync state (after replaying a seed file)."""
        self.sync.stats = SyncStats()
        self.messages = self.rejected = self.tickers = self.trades_seen = 0
        self.agreement = TopOfBookAgreement()
