"""An L2 order book for one symbol: price levels with absolute sizes, kept sorted on each side.

Units: prices in the quote currency, sizes in base units (contracts for coin-margined futures,
whose sizes Binance quotes in contracts), spreads and distances as fractions of the mid.

Container: each side is a plain `dict` (price -> size) plus a sorted `list` of its prices kept
with the standard library's `bisect` (binary search, then one C-level insert or delete; the list
is never re-sorted). Both lists keep the best price at the END: bids ascending, asks as negated
prices ascending, so the levels that change most, near the touch, move only the few entries
behind them. Updating an existing level is a dict write; only a new or emptied level touches the
list. Best bid/ask, top-k and within-x-bps depth are O(1) reads, slices or one bisection.

Why not a library: `sortedcontainers.SortedDict` (used before) does the same work through
several Python-level calls per insert or delete; on the largest real Binance futures replay
(5,000 levels a side, ~37% of level updates adding or emptying a level) it cost ~2.9 us per
add/remove against ~1 us here, and made `apply` the feed's hot spot. The C-backed `order-book`
package (bmoscon) writes faster, but its `SortedDict` re-sorts lazily on read after an insert
or delete: `index(0)` after each diff cost ~90 us on a few-thousand-level book, which made
per-event features 20x slower. It is used only as the bare-replay floor in `bench/orderbook.py`,
where nothing reads the book. Equivalence with a plain dict book is property-tested.

A book is *crossed* when best bid > best ask and *locked* when they are equal. Exchanges never
publish either, so after an update it means a missed or misapplied message: `is_crossed()`
reports it and the sync layer (`orderflow.binance_sync`, `orderflow.coinbase_sync`) resyncs.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterable, Iterator
from math import isfinite

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
    raise BookDataError("bad level (the message's numbers overflow a float when summed)")


def _parse(levels: list) -> tuple[list[float], list[float]]:
    """`[price, size]` pairs -> (prices, sizes) as floats; raises on a malformed pair or number."""
    return [float(p) for p, _ in levels], [float(q) for _, q in levels]


class OrderBook:
    """Bids (best = highest) and asks (best = lowest), updated by absolute sizes; 0 deletes a level.

    `bids` and `asks` map price -> size (unordered: read them in order through `levels`,
    `iter_levels`, `top` and `depth`). `_bid_keys` holds the bid prices ascending and `_ask_keys`
    the negated ask prices ascending, so each side's best price is its list's last entry.
    """

    __slots__ = ("_ask_keys", "_bid_keys", "asks", "bids", "symbol")

    def __init__(self, symbol: str = "") -> None:
        self.symbol = symbol
        self.clear()

    # --- upkeep --------------------------------------------------------------------------------

    def clear(self) -> None:
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}
        self._bid_keys: list[float] = []
        self._ask_keys: list[float] = []

    def load_snapshot(self, bids: Iterable, asks: Iterable) -> int:
        """Replace the whole book with these levels (`[price, size]` pairs, numbers or strings)."""
        self.clear()
        return self.apply(bids, asks)

    @staticmethod
    def _check(bids: list, asks: list) -> tuple[list[float], list[float], list[float], list[float]]:
        """Parse and validate a message's levels; raise `BookDataError` naming the first bad one."""
        try:
            bp, bq = _parse(bids)
            ap, aq = _parse(asks)
        except (TypeError, ValueError):
            _explain(bids, asks)
            raise
        # one C-level pass per list instead of a Python test per number: a NaN or an infinity
        # makes the total non-finite, and with none present min() is exact
        if (
            (bp and not (min(bp) > 0.0 and min(bq) >= 0.0))
            or (ap and not (min(ap) > 0.0 and min(aq) >= 0.0))
            or not isfinite(sum(bp) + sum(bq) + sum(ap) + sum(aq))
        ):
            _explain(bids, asks)
        return bp, bq, ap, aq

    def apply(self, bids: Iterable, asks: Iterable) -> int:
        """Set each `[price, size]` level (size absolute, 0 deletes); return how many were applied.

        Validates every number first, so a bad level leaves the book untouched. Levels apply in
        message order (a price repeated in one message ends at its last size).
        """
        bids = bids if isinstance(bids, list) else list(bids)
        asks = asks if isinstance(asks, list) else list(asks)
        bp, bq, ap, aq = self._check(bids, asks)
        side, keys = self.bids, self._bid_keys
        for price, size in zip(bp, bq, strict=True):
            if size:
                if price not in side:
                    insort(keys, price)
                side[price] = size
            elif price in side:  # deleting an absent level is legal: it was beyond our depth
                del side[price]
                del keys[bisect_left(keys, price)]
        side, keys = self.asks, self._ask_keys
        for price, size in zip(ap, aq, strict=True):
            if size:
                if price not in side:
                    insort(keys, -price)
                side[price] = size
            elif price in side:
                del side[price]
                del keys[bisect_left(keys, -price)]
        return len(bp) + len(ap)

    def set_level(self, is_bid: bool, price: float, size: float) -> None:
        """One level, already parsed (the Coinbase path, where updates come one side at a time)."""
        side, keys, key = (self.bids, self._bid_keys, price) if is_bid else (self.asks, self._ask_keys, -price)
        if size:
            if price not in side:
                insort(keys, key)
            side[price] = size
        elif price in side:
            del side[price]
            del keys[bisect_left(keys, key)]

    # --- reading -------------------------------------------------------------------------------

    def best_bid(self) -> Level | None:
        if not self._bid_keys:
            return None
        p = self._bid_keys[-1]
        return p, self.bids[p]

    def best_ask(self) -> Level | None:
        if not self._ask_keys:
            return None
        p = -self._ask_keys[-1]
        return p, self.asks[p]

    def top(self) -> tuple[float, float, float, float] | None:
        """(bid price, bid size, ask price, ask size), or None when either side is empty."""
        bk, ak = self._bid_keys, self._ask_keys
        if not (bk and ak):
            return None
        bp, ap = bk[-1], -ak[-1]
        return bp, self.bids[bp], ap, self.asks[ap]

    def mid(self) -> float | None:
        t = self.top()
        return None if t is None else (t[0] + t[2]) / 2.0

    def spread(self) -> float | None:
        """Best ask minus best bid, quote currency."""
        t = self.top()
        return None if t is None else t[2] - t[0]

    def is_crossed(self) -> bool:
        """Best bid at or above best ask (crossed or locked): the book is wrong, never a signal."""
        bk, ak = self._bid_keys, self._ask_keys
        return bool(bk and ak) and bk[-1] >= -ak[-1]

    def prices(self, is_bid: bool, n: int | None = None) -> list[float]:
        """The best `n` prices of a side (all when None), best first."""
        keys = self._bid_keys if is_bid else self._ask_keys
        if n is None:
            best = keys[::-1]
        elif n <= 0:
            return []
        else:
            best = keys[: -n - 1 : -1]
        return best if is_bid else [-k for k in best]

    def iter_levels(self, is_bid: bool) -> Iterator[Level]:
        """Every level of a side, best first, lazily (a market order walks only what it needs)."""
        side = self.bids if is_bid else self.asks
        for k in reversed(self._bid_keys if is_bid else self._ask_keys):
            p = k if is_bid else -k
            yield p, side[p]

    def levels(self, is_bid: bool, n: int | None = None) -> list[Level]:
        """The best `n` levels of a side (all when None), best first."""
        side = self.bids if is_bid else self.asks
        return [(p, side[p]) for p in self.prices(is_bid, n)]

    def levels_within(self, is_bid: bool, bps: float) -> list[Level]:
        """Levels of a side priced within `bps` basis points of the mid, best first."""
        mid = self.mid()
        if mid is None:
            return []
        if is_bid:
            keys, side = self._bid_keys, self.bids
            lo = bisect_left(keys, mid * (1.0 - bps / 1e4))  # bids >= the floor
            return [(p, side[p]) for p in keys[: lo - 1 if lo else None : -1]]
        keys, side = self._ask_keys, self.asks
        lo = bisect_left(keys, -(mid * (1.0 + bps / 1e4)))  # negated asks >= -ceiling
        return [(-k, side[-k]) for k in keys[: lo - 1 if lo else None : -1]]

    def depth(self, is_bid: bool, n: int | None = None, within_bps: float | None = None) -> float:
        """Total size (base units) on a side: the best `n` levels, or the levels within `within_bps`."""
        if within_bps is not None:
            return sum(q for _, q in self.levels_within(is_bid, within_bps))
        # summed in ascending price order, as before the container changed (float sums depend on order)
        if is_bid:
            keys = self._bid_keys if n is None else self._bid_keys[-n:] if n > 0 else ()
            return sum(map(self.bids.__getitem__, keys))
        keys = self._ask_keys[::-1] if n is None else self._ask_keys[: -n - 1 : -1] if n > 0 else ()
        asks = self.asks
        return sum([asks[-k] for k in keys])

    def __len__(self) -> int:
        return len(self.bids) + len(self.asks)

    def __repr__(self) -> str:
        t = self.top()
        top = "empty" if t is None else f"{t[1]:g} @ {t[0]:g} / {t[3]:g} @ {t[2]:g}"
        return f"OrderBook({self.symbol or '?'}, {len(self.bids)} bids, {len(self.asks)} asks, {top})"
