"""Order-book features as pure functions: order-flow imbalance, depth imbalance, microprice,
spread, and the cost of a market order walked through the book.

Units: prices in the quote currency, sizes in base units, spreads, impact and slippage as
fractions of a price (0.0001 = 1 bp) unless a name says `_bps`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from orderflow.book import Level, OrderBook


def ofi_contribution(
    prev_bid: float, prev_bid_size: float, prev_ask: float, prev_ask_size: float,
    bid: float, bid_size: float, ask: float, ask_size: float,
) -> float:
    """One event's order-flow imbalance e_n (Cont, Kukanov & Stoikov 2014, eq. 2), base units.

    e_n = 1{Pb_n >= Pb_n-1} qb_n - 1{Pb_n <= Pb_n-1} qb_n-1 - 1{Pa_n <= Pa_n-1} qa_n + 1{Pa_n >= Pa_n-1} qa_n-1:
    a higher bid adds its whole size, a lower bid removes the old size, an unchanged bid adds
    the size change; mirrored on the ask, where added size is selling pressure.
    """
    e = 0.0
    if bid >= prev_bid:
        e += bid_size
    if bid <= prev_bid:
        e -= prev_bid_size
    if ask <= prev_ask:
        e -= ask_size
    if ask >= prev_ask:
        e += prev_ask_size
    return e


def order_flow_imbalance(tops: np.ndarray) -> tuple[float, float]:
    """OFI over a window of top-of-book states, and OFI normalised by the average depth.

    `tops` has one row per state: (bid price, bid size, ask price, ask size), oldest first.
    Returns (sum of e_n over consecutive pairs, in base units; that sum divided by the mean
    top-of-book depth (qb + qa) / 2 over the window, dimensionless), as in CKS 2014 sec. 3, where
    the price impact of OFI scales with 1 / depth. Fewer than two states give (0, nan).
    """
    t = np.asarray(tops, dtype=np.float64)
    if t.ndim != 2 or t.shape[1] != 4:
        raise ValueError(f"tops must have shape (n, 4), got {t.shape}")
    if len(t) < 2:
        return 0.0, float("nan")
    pb, qb, pa, qa = t[:-1].T
    nb, nqb, na, nqa = t[1:].T
    e = (nb >= pb) * nqb - (nb <= pb) * qb - (na <= pa) * nqa + (na >= pa) * qa
    ofi = float(e.sum())
    depth = float(((t[:, 1] + t[:, 3]) / 2.0).mean())
    return ofi, (ofi / depth if depth > 0 else float("nan"))


class RollingOFI:
    """OFI over the last `window_ms` of top-of-book states, updated in O(1) per event.

    Keeps each event's contribution and depth in deques; the sum and the depth total are
    updated incrementally so the feature can be recomputed on every book event.
    """

    def __init__(self, window_ms: int = 10_000) -> None:
        if window_ms <= 0:
            raise ValueError(f"window_ms must be positive, got {window_ms}")
        self.window_ms = window_ms
        self._prev: tuple[float, float, float, float] | None = None
        self._items: deque[tuple[int, float, float]] = deque()  # (time ms, e_n, depth)
        self._sum = 0.0
        self._depth_sum = 0.0

    def reset(self) -> None:
        """Forget the previous state (after a resync the chain of states is broken)."""
        self._prev = None
        self._items.clear()
        self._sum = 0.0
        self._depth_sum = 0.0

    def update(self, time_ms: int, bid: float, bid_size: float, ask: float, ask_size: float) -> None:
        prev = self._prev
        self._prev = (bid, bid_size, ask, ask_size)
        if prev is None:
            return
        e = ofi_contribution(prev[0], prev[1], prev[2], prev[3], bid, bid_size, ask, ask_size)
        depth = (bid_size + ask_size) / 2.0
        items = self._items
        items.append((time_ms, e, depth))
        self._sum += e
        self._depth_sum += depth
        cutoff = time_ms - self.window_ms
        while items and items[0][0] <= cutoff:
            _, old_e, old_d = items.popleft()
            self._sum -= old_e
            self._depth_sum -= old_d

    @property
    def events(self) -> int:
        return len(self._items)

    @property
    def ofi(self) -> float:
        """Sum of e_n over the window, base units."""
        return self._sum if self._items else 0.0

    @property
    def normalised(self) -> float | None:
        """OFI divided by the window's average top-of-book depth; None with no events."""
        if not self._items or self._depth_sum <= 0:
            return None
        return self._sum / (self._depth_sum / len(self._items))


def imbalance(bid_size: float, ask_size: float) -> float | None:
    """(bid - ask) / (bid + ask) in [-1, 1]; None when both are zero."""
    total = bid_size + ask_size
    return None if total <= 0 else (bid_size - ask_size) / total


def depth_imbalance(book: OrderBook, levels: int | None = None, within_bps: float | None = None) -> float | None:
    """Depth imbalance of the best `levels` levels per side, or of the levels within `within_bps` of the mid."""
    return imbalance(book.depth(True, levels, within_bps), book.depth(False, levels, within_bps))


def microprice(bid: float, bid_size: float, ask: float, ask_size: float) -> float:
    """Size-weighted mid (Stoikov 2018's first approximation of the micro-price), quote currency.

    (ask * qb + bid * qa) / (qb + qa): a heavy bid pulls the fair price toward the ask.
    """
    total = bid_size + ask_size
    if total <= 0:
        return (bid + ask) / 2.0
    return (ask * bid_size + bid * ask_size) / total


def spread_bps(bid: float, ask: float) -> float:
    """Quoted spread in basis points of the mid."""
    mid = (bid + ask) / 2.0
    return (ask - bid) / mid * 1e4


@dataclass(frozen=True, slots=True)
class MarketOrderCost:
    """What a market order of `size` would pay walking the visible book."""

    size: float  # requested, base units
    filled: float  # base units the visible book can fill
    average_price: float  # quote currency per base unit, over the filled part
    worst_price: float  # the last level touched
    impact: float  # |worst price - mid| / mid: how far the order moves the price, fraction
    slippage: float  # |average price - best price| / best price: cost beyond the touch, fraction
    cost_vs_mid: float  # |average price - mid| / mid: half-spread plus slippage, fraction

    @property
    def complete(self) -> bool:
        return self.filled >= self.size * (1 - 1e-12)


def walk_book(levels: Sequence[Level], size: float, mid: float) -> MarketOrderCost | None:
    """Fill `size` base units against `levels` (best first: asks for a buy, bids for a sell).

    None when the side is empty. When the visible book is too thin, `filled < size` and the
    prices describe the part that could fill.
    """
    if size <= 0:
        raise ValueError(f"order size must be positive, got {size}")
    if not levels:
        return None
    remaining = size
    notional = 0.0
    worst = levels[0][0]
    for price, qty in levels:
        take = qty if qty < remaining else remaining
        notional += take * price
        remaining -= take
        worst = price
        if remaining <= 0:
            break
    filled = size - max(remaining, 0.0)
    avg = notional / filled
    best = levels[0][0]
    return MarketOrderCost(
        size=size, filled=filled, average_price=avg, worst_price=worst,
        impact=abs(worst - mid) / mid, slippage=abs(avg - best) / best, cost_vs_mid=abs(avg - mid) / mid,
    )


def market_order_cost(book: OrderBook, size: float, buy: bool) -> MarketOrderCost | None:
    """`walk_book` on the live book: a buy walks the asks, a sell the bids."""
    mid = book.mid()
    if mid is None:
        return None
    levels: list[Level] = []
    remaining = size
    for level in book.iter_levels(not buy):  # best first, only the levels the order needs
        levels.append(level)
        remaining -= level[1]
        if remaining <= 0:
            break
    return walk_book(levels, size, mid)
