"""Binance diff-depth synchronisation: a pure state machine that keeps an `OrderBook` correct.

The rules (Binance "How to manage a local order book correctly", spot and USD-M/COIN-M docs):
buffer depth events, fetch a REST snapshot (`lastUpdateId` L), drop events already contained in
it, require the first applied event to straddle the snapshot, then require every event to
follow its predecessor without a gap:

- spot: drop `u <= L`; the first applied has `U <= L + 1 <= u`; then `U == previous u + 1`.
- futures (the event carries `pu`): drop `u < L`; the first applied has `U <= L + 1` and
  `u >= L` (Binance's own wording is `U <= L <= u`; an event starting exactly at L + 1 is also
  contiguous), or `pu == L` (the event follows the snapshot's state exactly); then
  `pu == previous u` (futures update ids are shared across symbols, so `U` jumps and only `pu`
  links events).

Any break (a gap, a snapshot older than every buffered event, a crossed or locked book after an
update, an overflowing buffer) clears the book, is counted and logged, and asks the caller for a
new snapshot: `needs_snapshot` turns True. The caller does the I/O (websocket, REST); this
module never does, so the live client and the replay share every rule.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from orderflow.book import BookDataError, OrderBook

log = logging.getLogger(__name__)


class MessageError(ValueError):
    """A message that is not what its stream promises (malformed JSON, missing or bad fields)."""


class DepthEvent(NamedTuple):
    """One `depthUpdate`: update ids [first_id, last_id], the previous event's last id (futures)."""

    first_id: int  # U
    last_id: int  # u
    prev_last_id: int | None  # pu (futures only)
    bids: list
    asks: list
    event_time_ms: int  # E


class DepthSnapshot(NamedTuple):
    """A REST depth snapshot: the book as of update id `last_update_id`."""

    last_update_id: int
    bids: list
    asks: list


def parse_depth_event(data: Any) -> DepthEvent:
    """A `depthUpdate` payload (the `data` of a combined-stream message) -> `DepthEvent`."""
    try:
        first, last = data["U"], data["u"]
        bids, asks = data["b"], data["a"]
        prev = data.get("pu")
        event_time = data.get("E", 0)
    except (KeyError, TypeError, AttributeError):
        raise MessageError(f"depthUpdate lacks U, u, b or a: {str(data)[:120]}") from None
    if not (type(first) is int and type(last) is int and first <= last):
        raise MessageError(f"depthUpdate ids must be integers with U <= u, got U={first!r} u={last!r}")
    if prev is not None and type(prev) is not int:
        raise MessageError(f"depthUpdate pu must be an integer, got {prev!r}")
    if not (isinstance(bids, list) and isinstance(asks, list)):
        raise MessageError("depthUpdate b and a must be lists of [price, size]")
    return DepthEvent(first, last, prev, bids, asks, int(event_time) if isinstance(event_time, int) else 0)


def parse_depth_snapshot(data: Any) -> DepthSnapshot:
    """A REST `/depth` answer -> `DepthSnapshot`."""
    try:
        last, bids, asks = data["lastUpdateId"], data["bids"], data["asks"]
    except (KeyError, TypeError):
        raise MessageError(f"depth snapshot lacks lastUpdateId, bids or asks: {str(data)[:120]}") from None
    if type(last) is not int or not isinstance(bids, list) or not isinstance(asks, list):
        raise MessageError("depth snapshot: lastUpdateId must be an integer, bids and asks lists")
    return DepthSnapshot(last, bids, asks)


@dataclass
class SyncStats:
    """Counters a user checks: what was applied, what was dropped, and every resync with its cause."""

    events: int = 0  # depth events received
    applied_events: int = 0
    level_updates: int = 0  # levels applied to the book (snapshot levels excluded)
    snapshots: int = 0
    stale_dropped: int = 0  # events already contained in a snapshot
    gaps: int = 0  # breaks in the update-id chain
    crossed: int = 0  # crossed or locked books after an update
    stale_snapshots: int = 0  # snapshots older than every buffered event
    overflows: int = 0  # events dropped because a buffer was full
    rejected: int = 0  # malformed events
    resyncs: int = 0
    resync_reasons: dict[str, int] = field(default_factory=dict)


class BinanceBookSync:
    """Keeps one symbol's book in sync from depth events and snapshots; does no I/O itself.

    Feed it `on_event(DepthEvent)` for every depth message and `on_snapshot(DepthSnapshot)` when
    it asks (`needs_snapshot`). `book` is valid only while `synced` is True. `max_buffer` bounds the
    events held while waiting for a snapshot: beyond it the oldest are dropped, which is counted,
    and the snapshot then fails to straddle and is fetched again.
    """

    def __init__(self, symbol: str = "", max_buffer: int = 10_000) -> None:
        self.book = OrderBook(symbol)
        self.stats = SyncStats()
        self.synced = False
        self.last_update_id: int | None = None  # u of the last applied event (or L of the snapshot)
        self._awaiting_first = False  # snapshot loaded, first straddling event not yet seen
        self._snapshot_id: int | None = None
        self._buffer: deque[DepthEvent] = deque()
        self._max_buffer = max_buffer

    @property
    def needs_snapshot(self) -> bool:
        return not self.synced and self._snapshot_id is None

    def resync(self, reason: str) -> None:
        """Drop the book and wait for a new snapshot; counted by reason and logged."""
        self.stats.resyncs += 1
        self.stats.resync_reasons[reason] = self.stats.resync_reasons.get(reason, 0) + 1
        log.warning("%s book resync: %s (after update id %s)", self.book.symbol or "?", reason, self.last_update_id)
        self.book.clear()
        self.synced = False
        self._awaiting_first = False
        self._snapshot_id = None
        self.last_update_id = None

    def reset(self) -> None:
        """Forget everything but the counters (a new connection): no resync is counted."""
        self.book.clear()
        self.synced = False
        self._awaiting_first = False
        self._snapshot_id = None
        self.last_update_id = None
        self._buffer.clear()

    # --- input ---------------------------------------------------------------------------------

    def on_event(self, ev: DepthEvent) -> bool:
        """Take one depth event; True when it was applied to the book."""
        self.stats.events += 1
        if self._snapshot_id is None:  # waiting for a snapshot: buffer, bounded
            if len(self._buffer) >= self._max_buffer:
                self._buffer.popleft()
                self.stats.overflows += 1
            self._buffer.append(ev)
            return False
        return self._process(ev)

    def on_snapshot(self, snap: DepthSnapshot) -> None:
        """Load a REST snapshot, then replay the buffered events on top of it."""
        self.stats.snapshots += 1
        try:
            self.book.load_snapshot(snap.bids, snap.asks)
        except BookDataError as exc:
            self.stats.rejected += 1
            self.resync(f"bad snapshot: {exc}")
            return
        self._snapshot_id = snap.last_update_id
        self.last_update_id = snap.last_update_id
        self._awaiting_first = True
        self.synced = False
        buffered, self._buffer = self._buffer, deque()
        for ev in buffered:
            if self._snapshot_id is None:  # a resync happened while replaying: keep the rest buffered
                self._buffer.append(ev)
            else:
                self._process(ev)

    def overflowed(self, dropped: int) -> None:
        """The transport dropped `dropped` depth events (a slow consumer): the chain is broken."""
        self.stats.overflows += dropped
        if self.synced or self._snapshot_id is not None:
            self.resync("queue overflow")

    # --- the rules -----------------------------------------------------------------------------

    def _process(self, ev: DepthEvent) -> bool:
        futures = ev.prev_last_id is not None
        if self._awaiting_first:
            snap = self._snapshot_id
            assert snap is not None
            if ev.last_id < snap or (not futures and ev.last_id == snap):
                self.stats.stale_dropped += 1
                return False
            # futures: an event whose pu is the snapshot's id follows it exactly, however far U jumps
            # (a snapshot taken at the end of a previous capture lands between two events)
            if ev.first_id > snap + 1 and not (futures and ev.prev_last_id == snap):
                self.stats.stale_snapshots += 1
                self.resync("snapshot older than the stream")
                self._buffer.append(ev)
                return False
            self._awaiting_first = False
        else:
            prev = self.last_update_id
            linked = ev.prev_last_id == prev if futures else ev.first_id == prev + 1  # type: ignore[operator]
            if not linked:
                self.stats.gaps += 1
                self.resync("gap in update ids")
                self._buffer.append(ev)
                return False
        try:
            n = self.book.apply(ev.bids, ev.asks)
        except (BookDataError, ValueError, TypeError) as exc:
            self.stats.rejected += 1
            self.resync(f"bad levels: {exc}")
            return False
        self.last_update_id = ev.last_id
        self.stats.applied_events += 1
        self.stats.level_updates += n
        if self.book.is_crossed():
            self.stats.crossed += 1
            self.resync("crossed or locked book")
            return False
        self.synced = True
        return True
