"""Higher-timeframe candles built from lower ones, using only bars that were complete at decision time.

A higher bar covers [T, T + H) with T on the grid `anchor_ms + k * H` (anchor 0, the UTC epoch,
puts 4h bars at 00:00, 04:00, ... and daily bars at 00:00 UTC, as exchanges do; weekly bars on
the epoch grid open on Thursdays, so pass a Monday as the anchor for exchange weeks). Its open is
the first constituent's open, close the last one's close, high/low the extremes, volume the sum.

No lookahead: a higher bar is kept only when it had closed by the decision time (T + H <= at_ms,
and never later than the last lower candle's close). So at 13:00 a 1h-based 4h series ends with
the 08:00-12:00 bar; the 12:00-16:00 bar does not exist yet.

Gaps, honestly: a higher bar missing any constituent candle (an exchange outage) has an unknown
true open, high or low, so by default it is dropped and shows up as a gap of the higher series.
`max_missing` > 0 keeps bars missing up to that many constituents, built from those present.
Hand-written because pandas' `resample` keeps incomplete and partially-filled bins silently; the
grouping here is a few vectorised numpy reductions.
"""

from __future__ import annotations

import numpy as np

from theories.candles import Candles

HOUR_MS = 3_600_000


def resample(
    candles: Candles, interval_ms: int, *, at_ms: int | None = None, max_missing: int = 0, anchor_ms: int = 0
) -> Candles:
    """`candles` aggregated to `interval_ms`, complete bars only (see the module docstring)."""
    base = candles.interval_ms
    if interval_ms <= 0 or interval_ms % base:
        raise ValueError(f"cannot build {interval_ms} ms bars from {base} ms candles: not a whole multiple")
    per = interval_ms // base
    if not 0 <= max_missing < per:
        raise ValueError(f"max_missing must lie in [0, {per - 1}] for {per} candles per bar, got {max_missing}")
    c = candles if at_ms is None else candles.closed_by(at_ms)
    source = f"{candles.source} resampled to {interval_ms // 60_000}m"
    if not len(c):
        return _empty(interval_ms, candles.symbol, source)
    if (int(c.time[0]) - anchor_ms) % base:
        raise ValueError(f"{candles.source}: candle times are not on the {base} ms grid of anchor {anchor_ms}")
    cutoff = c.last_close_time if at_ms is None else min(at_ms, c.last_close_time)

    bucket = (c.time - anchor_ms) // interval_ms * interval_ms + anchor_ms
    starts = np.flatnonzero(np.concatenate(([True], bucket[1:] != bucket[:-1])))
    ends = np.concatenate((starts[1:], [len(c)]))
    counts = ends - starts
    keep = (counts >= per - max_missing) & (bucket[starts] + interval_ms <= cutoff)
    s, e = starts[keep], ends[keep]
    if not len(s):
        return _empty(interval_ms, candles.symbol, source)
    return Candles(
        bucket[s],
        c.open[s],
        np.maximum.reduceat(c.high, starts)[keep],
        np.minimum.reduceat(c.low, starts)[keep],
        c.close[e - 1],
        np.add.reduceat(c.volume, starts)[keep],
        interval_ms=interval_ms,
        symbol=candles.symbol,
        source=source,
    )


def complete_bars(candles: Candles, interval_ms: int, at_ms: int, count: int) -> Candles:
    """The last `count` complete `interval_ms` bars as of `at_ms`, from the candles given.

    Candles already at `interval_ms` are returned as they are (cut at `at_ms`); finer candles are
    resampled from just enough recent history; coarser ones cannot be refined: ValueError.
    """
    if candles.interval_ms == interval_ms:
        return candles.closed_by(at_ms).tail(count)
    if interval_ms < candles.interval_ms:
        raise ValueError(f"cannot make {interval_ms} ms bars from coarser {candles.interval_ms} ms candles")
    per = interval_ms // candles.interval_ms
    recent = candles.closed_by(at_ms).tail((count + 1) * per)  # +1: the first bucket may be partial
    return resample(recent, interval_ms, at_ms=at_ms).tail(count)


def _empty(interval_ms: int, symbol: str, source: str) -> Candles:
    nothing = np.empty(0)
    return Candles(
        np.empty(0, dtype=np.int64), nothing, nothing, nothing, nothing, nothing,
        interval_ms=interval_ms, symbol=symbol, source=source,
    )
