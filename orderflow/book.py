"""An L2 order book for one symbol: price levels with absolute sizes, kept sorted on each side.

Units: prices in the quote currency, sizes in base units (contracts for coin-margined futures,
whose sizes Binance quotes in contracts), spreads and distances as fractions of the mid.

Container: each side is a `sortedcontainers.SortedDict` (ascending prices; the best bid is the
last key). It keeps keys sorted on insertion (O(log n)), updates an existing level as a plain
dict write, reads the best level in O(1) (`peekitem`) and ranges of prices by bisection
(`irange`, `islice`), so top-k and within-x-bps depth never copy the side. The C-backed
`order-book` package (bmoscon) writes faster, but its `SortedDict` re-sorts lazily on read
after an insert or delete: measured on a real Binance futures replay, `index(0)` after each diff
cost ~90 us on a few-thousand-level book, which made per-event features 20x slower. It is used
only as the bare-replay floor in `bench/orderbook.py`, where nothing reads the book.

A book is *crossed* when best bid > best ask and *locked* when they are equal. Exchanges never
publish either, so after an update it means a missed or misapplied message: `is_crossed()`
reports it and the sync layer (`orderflow.binance_sync`, `orderflow.coinbase_sync`) resyncs.
"""

from __future__ import annotations

from collections.abc import Iterable

from sortedcontainers import SortedDict

Level = tuple[float, float]  # (price in quote currency, size in base units)


class BookDataError(ValueError):
    """A level that cannot be a real one: a price or size that is not a finite number >= 0."""


def _number(text: object, what: str) -> float:
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise BookDataError(f"{what} {text!r} is not a number") from None
    if not (value >= 0.0 and value != float("inf")):  # also rejects NaN
        raise BookDataError(f"{what} {text!r} must be a finite number >= 0")
    return value


_INF = float("inf")
_dict_set = dict.__setitem__  # SortedDict is a dict: updating a present key needs no re-sort
_dict_del = dict.__delitem__


def _explain(bids: Iterable, asks: Iterable) -> None:
    """Raise `BookDataError` naming the first bad level (the slow path, for bad input only)."""
    for what, levels in (("bid", bids), ("ask", asks)):
        for level in levels:
            try:
                p, q = level
            except (TypeError, ValueError):
                raise BookDataError(f"{what} level {level!r} is not a [price, size] pair") from None
            if _number(p, f"{what} price") <= 0:
                raise BookDataError(f"{what} price {p!r} must be positive")
            _number(q, f"{what} size")
    raise BookDataError("bad level")


class OrderBook:
    """Bids (best = highest) and asks (best = lowest), updated by absolute sizes; 0 deletes a level."""

    __slots__ = ("asks", "bids", "symbol")

    def __init__(self, symbol: str = "") -> None:
        self.symbol = symbol
        self.bids = SortedDict()
        self.asks = SortedDict()

    # --- upkeep --------------------------------------------------------------------------------

    def clear(self) -> None:
        self.bids = SortedDict()
        self.asks = SortedDict()

    def load_snapshot(self, bids: Iterable, asks: Iterable) -> int:
        """Replace the whole book with these levels (`[price, size]` pairs, numbers or strings)."""
        self.clear()
        return self.apply(bids, asks)

    def apply(self, bids: Iterable, asks: Iterable) -> int:
        """Set each `[price, size]` level (size absolute, 0 deletes); return how many were applied.

        Validates every number first, so a bad level leaves the book untouched.
        """
        try:  # fast path: one float() per number, then one range check for the whole message
            parsed_bids = [(float(p), float(q)) for p, q in bids]
            parsed_asks = [(float(p), float(q)) for p, q in asks]
        except (TypeError, ValueError):
            _explain(bids, asks)
            raise
        for price, size in parsed_bids + parsed_asks:
            if not (0.0 < price < _INF and 0.0 <= size < _INF):
                _explain(bids, asks)
        for side, levels in ((self.bids, parsed_bids), (self.asks, parsed_asks)):
            # SortedDict keeps a dict and a SortedList of its keys; writing both directly skips a
            # Python-level wrapper per level (`_list_add`/`_list_remove` are the bound methods
            # SortedDict itself uses, stable across sortedcontainers 2.x)
            add, remove = side._list_add, side._list_remove
            for price, size in levels:
                if price in side:
                    if size == 0.0:
                        _dict_del(side, price)
                        remove(price)
                    else:  # an existing level: a plain dict write, the sort order is unchanged
                        _dict_set(side, price, size)
                elif size != 0.0:  # deleting an absent level is legal: it was beyond our depth
                    _dict_set(side, price, size)
                    add(price)
        return len(parsed_bids) + len(parsed_asks)

    def set_level(self, is_bid: bool, price: float, size: float) -> None:
        """One level, already parsed (the Coinbase path, where updates come one side at a time)."""
        side = self.bids if is_bid else self.asks
        if size == 0.0:
            try:
                del side[price]
            except KeyError:
                pass
        else:
            side[price] = size

    # --- reading -------------------------------------------------------------------------------

    def best_bid(self) -> Level | None:
        return self.bids.peekitem(-1) if self.bids else None

    def best_ask(self) -> Level | None:
        return self.asks.peekitem(0) if self.asks else None

    def top(self) -> tuple[float, float, float, float] | None:
        """(bid price, bid size, ask price, ask size), or None when either side is empty."""
        if not (self.bids and self.asks):
            return None
        bp, bq = self.bids.peekitem(-1)
        ap, aq = self.asks.peekitem(0)
        return bp, bq, ap, aq

    def mid(self) -> float | None:
        t = self.top()
        return None if t is None else (t[0] + t[2]) / 2.0

    def spread(self) -> float | None:
        """Best ask minus best bid, quote currency."""
        t = self.top()
        return None if t is None else t[2] - t[0]

    def is_crossed(self) -> bool:
        """Best bid at or above best ask (crossed or locked): the book is wrong, never a signal."""
        if not (self.bids and self.asks):
            return False
        return self.bids.keys()[-1] >= self.asks.keys()[0]

    def levels(self, is_bid: bool, n: int | None = None) -> list[Level]:
        """The best `n` levels of a side (all when None), best first."""
        side = self.bids
        if is_bid:
            keys = side.islice(0 if n is None else max(len(side) - n, 0), len(side), reverse=True)
        else:
            side = self.asks
            keys = side.islice(0, n)
        return [(k, side[k]) for k in keys]

    def levels_within(self, is_bid: bool, bps: float) -> list[Level]:
        """Levels of a side priced within `bps` basis points of the mid, best first."""
        mid = self.mid()
        if mid is None:
            return []
        if is_bid:
            side = self.bids
            keys = side.irange(minimum=mid * (1.0 - bps / 1e4), reverse=True)
        else:
            side = self.asks
            keys = side.irange(maximum=mid * (1.0 + bps / 1e4))
        return [(k, side[k]) for k in keys]

    def depth(self, is_bid: bool, n: int | None = None, within_bps: float | None = None) -> float:
        """Total size (base units) on a side: the best `n` levels, or the levels within `within_bps`."""
        if within_bps is not None:
            return sum(q for _, q in self.levels_within(is_bid, within_bps))
        side = self.bids if is_bid else self.asks
        if is_bid:
            keys = side.islice(0 if n is None else max(len(side) - n, 0), len(side))
        else:
            keys = side.islice(0, n)
        return sum(map(side.__getitem__, keys))

    def __len__(self) -> int:
        return len(self.bids) + len(self.asks)

    def __repr__(self) -> str:
        t = self.top()
        top = "empty" if t is None else f"{t[1]:g} @ {t[0]:g} / {t[3]:g} @ {t[2]:g}"
        return f"OrderBook({self.symbol or '?'}, {len(self.bids)} bids, {len(self.asks)} asks, {top})"
