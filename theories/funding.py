"""Perpetual funding rates as validated arrays: the plain data type the funding strategy reads.

Units: `time` is the funding settlement time in UTC epoch milliseconds; `rate` is the rate paid
per funding interval as a fraction (0.0001 = 0.01%), positive when longs pay shorts. A rate is
known from its settlement time on, so `settled_by(at_ms)` is the no-lookahead cut. Loading
(files) is I/O and lives in `agent/market/funding.py`. An empty series is legal: a venue may
list no funding history for a pair, and the strategy then says so instead of guessing.
"""

from __future__ import annotations

import numpy as np

from theories.candles import EARLIEST_MS, LATEST_MS, DataRuleError, iso


class FundingDataError(DataRuleError):
    """Funding data broke a validation rule."""


class FundingRates:
    """Validated, immutable funding settlements for one perpetual on one venue."""

    __slots__ = ("rate", "source", "symbol", "time")

    time: np.ndarray
    rate: np.ndarray
    symbol: str
    source: str

    def __init__(self, time, rate, *, symbol: str = "", source: str = "<arrays>") -> None:
        t = np.asarray(time)
        r = np.asarray(rate, dtype=np.float64)
        if t.ndim != 1 or r.ndim != 1 or len(t) != len(r):
            raise FundingDataError(source, None, "time and rate must be one-dimensional and of equal length")
        if len(t) and not np.issubdtype(t.dtype, np.integer):
            tf = np.asarray(t, dtype=np.float64)
            bad = ~np.isfinite(tf) | (tf != np.round(tf))
            if bad.any():
                i = int(np.argmax(bad))
                raise FundingDataError(source, i + 1, "time must be whole epoch milliseconds", f"got {t[i]!r}")
            t = tf
        t = np.asarray(t, dtype=np.int64)
        out_of_range = np.flatnonzero((t < EARLIEST_MS) | (t >= LATEST_MS))
        if len(out_of_range):
            i = int(out_of_range[0])
            raise FundingDataError(
                source, i + 1, "time must be UTC epoch milliseconds between 2000 and 2100", f"got {t[i]}"
            )
        not_rising = np.flatnonzero(np.diff(t) <= 0)
        if len(not_rising):
            i = int(not_rising[0]) + 1
            raise FundingDataError(
                source, i + 1, "times must be strictly increasing", f"{iso(int(t[i]))} follows {iso(int(t[i - 1]))}"
            )
        # |rate| >= 1 would mean paying the whole position every interval: a percent column, or garbage.
        bad = np.flatnonzero(~np.isfinite(r) | (np.abs(r) >= 1.0))
        if len(bad):
            i = int(bad[0])
            raise FundingDataError(
                source, i + 1, "rate must be a finite fraction per interval with |rate| < 1", f"got {r[i]!r}"
            )
        for name, arr in (("time", t), ("rate", r)):
            arr = np.ascontiguousarray(arr)
            arr.flags.writeable = False
            object.__setattr__(self, name, arr)
        object.__setattr__(self, "symbol", symbol)
        object.__setattr__(self, "source", source)

    def __setattr__(self, name, value):  # immutable, like Candles
        raise AttributeError("FundingRates are immutable")

    def __len__(self) -> int:
        return len(self.time)

    def __repr__(self) -> str:
        if not len(self):
            return f"FundingRates({self.symbol or self.source}, empty)"
        span = f"{iso(int(self.time[0]))} .. {iso(int(self.time[-1]))}"
        return f"FundingRates({self.symbol or self.source}, {len(self)}, {span})"

    def settled_by(self, at_ms: int) -> FundingRates:
        """Only the settlements at or before `at_ms`: what was known at that time."""
        return self._slice(slice(0, int(np.searchsorted(self.time, at_ms, side="right"))))

    def between(self, start_ms: int, end_ms: int) -> FundingRates:
        """Settlements with start_ms <= time <= end_ms."""
        lo = int(np.searchsorted(self.time, start_ms, side="left"))
        return self._slice(slice(lo, int(np.searchsorted(self.time, end_ms, side="right"))))

    def _slice(self, sl: slice) -> FundingRates:
        """A view of validated data: slicing cannot break the rules, so no re-validation."""
        out = object.__new__(FundingRates)
        for name in ("time", "rate"):
            object.__setattr__(out, name, getattr(self, name)[sl])
        object.__setattr__(out, "symbol", self.symbol)
        object.__setattr__(out, "source", self.source)
        return out

    def interval_ms(self) -> int | None:
        """The usual spacing of settlements (8 h on Binance USD-M for most of its history), or None."""
        if len(self) < 2:
            return None
        steps, counts = np.unique(np.diff(self.time), return_counts=True)
        return int(steps[np.argmax(counts)])
