"""Trade flow as pure functions over arrays of trades: aggressor share, cumulative volume delta,
large trades relative to the recent size distribution, and VWAP.

A trade's side is its *aggressor's* (taker's) side: `+1` a buy that lifted the ask, `-1` a sell
that hit the bid. Binance's `m` ("buyer is the maker") is True for a sell aggressor; Coinbase
`match` messages give the maker's side, so `side: "sell"` there is a buy aggressor.
Units: times UTC epoch ms, prices quote currency, sizes base units.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from theories.candles import Candles


@dataclass(frozen=True)
class Trades:
    """Trades as parallel arrays, oldest first."""

    time: np.ndarray  # int64, UTC epoch ms
    price: np.ndarray  # float64, quote currency
    size: np.ndarray  # float64, base units
    side: np.ndarray  # int8, +1 buy aggressor, -1 sell aggressor

    def __post_init__(self) -> None:
        n = len(self.time)
        for name in ("price", "size", "side"):
            m = len(getattr(self, name))
            if m != n:
                raise ValueError(f"trade arrays must have equal length: time has {n}, {name} {m}")
        if n and (not np.all(np.isfinite(self.price)) or np.any(self.price <= 0)):
            raise ValueError("trade prices must be finite and positive")
        if n and (not np.all(np.isfinite(self.size)) or np.any(self.size < 0)):
            raise ValueError("trade sizes must be finite and non-negative")
        if n and not np.all(np.isin(self.side, (-1, 1))):
            raise ValueError("trade sides must be +1 (buy aggressor) or -1 (sell aggressor)")

    @classmethod
    def from_lists(cls, time, price, size, side) -> Trades:
        return cls(
            np.asarray(time, dtype=np.int64), np.asarray(price, dtype=np.float64),
            np.asarray(size, dtype=np.float64), np.asarray(side, dtype=np.int8),
        )

    def __len__(self) -> int:
        return len(self.time)

    def since(self, t_ms: int) -> Trades:
        """Trades at or after `t_ms`."""
        i = int(np.searchsorted(self.time, t_ms, side="left"))
        return Trades(self.time[i:], self.price[i:], self.size[i:], self.side[i:])


def aggressor_buy_share(trades: Trades) -> float | None:
    """Share of traded volume that was buyer-initiated, in [0, 1]; None with no volume."""
    total = float(trades.size.sum())
    return None if total <= 0 else float(trades.size[trades.side > 0].sum()) / total


def cumulative_volume_delta(trades: Trades) -> np.ndarray:
    """Running sum of signed size (buy aggressor +, sell aggressor -), base units, one per trade."""
    return np.cumsum(trades.size * trades.side)


def vwap(trades: Trades) -> float | None:
    """Volume-weighted average price of the trades, quote currency; None with no volume."""
    total = float(trades.size.sum())
    return None if total <= 0 else float((trades.price * trades.size).sum()) / total


def large_trades(trades: Trades, lookback: int = 500, quantile: float = 0.99, min_history: int = 50) -> np.ndarray:
    """Indices of trades larger than the `quantile` of the sizes of the `lookback` trades before each.

    Only past trades set each threshold (no lookahead); the first `min_history` trades have too
    little history to judge and are never flagged. Quantiles use numpy's default (linear
    interpolation); full windows are computed in vectorised chunks.
    """
    if not 0 < quantile < 1:
        raise ValueError(f"quantile must lie in (0, 1), got {quantile}")
    if lookback < 1 or min_history < 1:
        raise ValueError("lookback and min_history must be at least 1")
    sizes = trades.size
    n = len(sizes)
    out = []
    # trades before the first full lookback: growing windows, one quantile each
    for i in range(min_history, min(lookback, n)):
        if sizes[i] > np.quantile(sizes[:i], quantile):
            out.append(i)
    # full windows: vectorised over chunks of rows (bounded memory: chunk x lookback floats)
    first = max(lookback, min_history)
    if n > first:
        windows = np.lib.stride_tricks.sliding_window_view(sizes[:-1], lookback)  # row j: sizes[j : j + lookback]
        for start in range(first, n, 2048):
            stop = min(start + 2048, n)
            thresholds = np.quantile(windows[start - lookback: stop - lookback], quantile, axis=1)
            hits = np.flatnonzero(sizes[start:stop] > thresholds)
            out.extend((hits + start).tolist())
    return np.asarray(out, dtype=np.int64)


def candles_from_trades(trades: Trades, interval_ms: int = 60_000, symbol: str = "") -> Candles:
    """OHLCV bars of `interval_ms` from trades (bars without a trade are left out, as gaps)."""
    if not len(trades):
        raise ValueError("no trades to build candles from")
    if interval_ms <= 0:
        raise ValueError(f"interval must be positive, got {interval_ms} ms")
    bucket = trades.time - trades.time % interval_ms
    starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
    if np.any(np.diff(bucket[starts]) <= 0):
        raise ValueError("trades must be in time order")
    ends = np.r_[starts[1:], len(bucket)]
    high = np.maximum.reduceat(trades.price, starts)
    low = np.minimum.reduceat(trades.price, starts)
    return Candles(
        bucket[starts], trades.price[starts], high, low, trades.price[ends - 1],
        np.add.reduceat(trades.size, starts), interval_ms=interval_ms, symbol=symbol, source="trades",
    )
