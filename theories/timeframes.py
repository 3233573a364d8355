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

import threading
from collections import OrderedDict

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
    whole = _origin_bars(recent, interval_ms) if len(recent) else None
    if whole is None:
        return resample(recent, interval_ms, at_ms=at_ms).tail(count)
    # The bars `resample(recent, ...)` would build are exactly the origin's complete bars lying wholly
    # inside `recent`: a bar starting before its first candle lacks that bar's first constituent there,
    # and one ending after its last close is unfinished; every other bar has the same constituents in
    # both, so the same open, extremes, close and (summed in the same order) volume.
    done = whole.closed_by(recent.last_close_time)
    first = int(np.searchsorted(done.time, recent.time[0], side="left"))
    return done.tail(min(count, len(done) - first))


def _origin_bars(candles: Candles, interval_ms: int) -> Candles | None:
    """Every complete `interval_ms` bar of the validated candles `candles` is a view of, built once.

    A replay asks for the same symbol's 4h bars every hour, from two strategies each time: resampling
    (and validating) its last ~1,200 candles cost ~0.3 ms a call; slicing the bars of the whole series,
    remembered per series (candles are immutable), costs a few microseconds. None when the series
    cannot be resampled at all (times off the epoch grid): the caller's `resample` then says why.
    """
    root, _ = candles.origin
    key = (id(root), interval_ms)
    with _ORIGIN_BARS_LOCK:
        known = _ORIGIN_BARS.get(key)
        if known is not None:
            _ORIGIN_BARS.move_to_end(key)
            return known[1]
    try:
        bars = resample(root, interval_ms)
    except ValueError:
        bars = None
    with _ORIGIN_BARS_LOCK:
        # the entry holds `root`, so while it is remembered no other object can take its id
        _ORIGIN_BARS[key] = (root, bars)
        if len(_ORIGIN_BARS) > _ORIGIN_BARS_MAX:
            _ORIGIN_BARS.popitem(last=False)
    return bars


# _origin_bars' memo: (id of the series, bar interval) -> (the series, its bars); bounded LRU
_ORIGIN_BARS: OrderedDict[tuple[int, int], tuple[Candles, Candles | None]] = OrderedDict()
_ORIGIN_BARS_MAX = 64
_ORIGIN_BARS_LOCK = threading.Lock()


def _empty(interval_ms: int, symbol: str, source: str) -> Candles:
    nothing = np.empty(0)
    return Candles(
        np.empty(0, dtype=np.int64), nothing, nothing, nothing, nothing, nothing,
        interval_ms=interval_ms, symbol=symbol, source=source,
    )
