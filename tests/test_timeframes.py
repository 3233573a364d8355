"""Higher-timeframe bars: right values, complete bars only, gaps never papered over."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from theories.candles import Candles
from theories.timeframes import complete_bars, resample

H = 3_600_000
DAY = 24 * H
T0 = 1_735_689_600_000  # 2025-01-01 00:00 UTC


def hourly(n: int, start: int = T0, drop: tuple[int, ...] = ()) -> Candles:
    i = np.array([k for k in range(n) if k not in drop])
    close = 100.0 + i
    return Candles(start + i * H, close - 0.5, close + 1.0 + (i % 3), close - 1.0 - (i % 2), close, 10.0 + i,
                   interval_ms=H, symbol="X/USDT")


def test_four_hour_bars_take_first_open_extremes_last_close_and_summed_volume():
    c = hourly(8)
    four = resample(c, 4 * H)
    assert four.time.tolist() == [T0, T0 + 4 * H]
    assert four.interval_ms == 4 * H
    assert four.open.tolist() == [c.open[0], c.open[4]]
    assert four.close.tolist() == [c.close[3], c.close[7]]
    assert four.high.tolist() == [c.high[:4].max(), c.high[4:].max()]
    assert four.low.tolist() == [c.low[:4].min(), c.low[4:].min()]
    assert four.volume.tolist() == [c.volume[:4].sum(), c.volume[4:].sum()]


def test_a_decision_at_13h_sees_the_8h_to_12h_bar_but_not_the_one_still_forming():
    c = hourly(24)
    four = resample(c, 4 * H, at_ms=T0 + 13 * H)
    assert four.last_close_time == T0 + 12 * H
    assert resample(c, 4 * H, at_ms=T0 + 12 * H).last_close_time == T0 + 12 * H
    assert resample(c, 4 * H, at_ms=T0 + 12 * H - 1).last_close_time == T0 + 8 * H


def test_the_trailing_partial_bar_of_the_data_is_dropped():
    four = resample(hourly(10), 4 * H)  # hours 8 and 9 start a bar that never completed
    assert len(four) == 2


def test_daily_bars_open_at_midnight_utc_even_when_the_data_starts_mid_day():
    c = hourly(60, start=T0 + 5 * H)
    daily = resample(c, DAY)
    assert daily.time.tolist() == [T0 + DAY]  # day 0 lacks its first 5 hours; day 2 is unfinished
    assert daily.open[0] == c.open[19] and daily.close[0] == c.close[19 + 23]


def test_a_bar_missing_a_candle_is_dropped_by_default_and_kept_only_when_allowed():
    c = hourly(12, drop=(5,))
    four = resample(c, 4 * H)
    assert four.time.tolist() == [T0, T0 + 8 * H]
    assert len(four.gaps()) == 1
    lenient = resample(c, 4 * H, max_missing=1)
    assert lenient.time.tolist() == [T0, T0 + 4 * H, T0 + 8 * H]
    assert lenient.volume[1] == c.volume[(c.time >= T0 + 4 * H) & (c.time < T0 + 8 * H)].sum()


def test_bad_targets_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="whole multiple"):
        resample(hourly(8), 90 * 60_000)
    with pytest.raises(ValueError, match="max_missing"):
        resample(hourly(8), 4 * H, max_missing=4)
    with pytest.raises(ValueError, match="coarser"):
        complete_bars(resample(hourly(8), 4 * H), H, T0 + 8 * H, 2)


def test_complete_bars_returns_the_last_n_and_passes_same_interval_candles_through():
    c = hourly(100)
    bars = complete_bars(c, 4 * H, T0 + 50 * H, 5)
    assert len(bars) == 5 and bars.last_close_time == T0 + 48 * H
    same = complete_bars(c, H, T0 + 50 * H, 7)
    assert len(same) == 7 and same.last_close_time == T0 + 50 * H


def test_no_bars_yet_gives_an_empty_series():
    assert len(resample(hourly(3), 4 * H)) == 0
    assert len(resample(hourly(8), 4 * H, at_ms=T0 + H)) == 0


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 120),
    drops=st.sets(st.integers(1, 119), max_size=15),
    cut=st.integers(0, 130),
    factor=st.sampled_from([2, 4, 6, 24]),
)
def test_every_higher_bar_is_complete_closed_by_the_decision_and_exact(n, drops, cut, factor):
    c = hourly(n, drop=tuple(d for d in drops if d < n))
    at = T0 + cut * H
    out = resample(c, factor * H, at_ms=at)
    for k in range(len(out)):
        start, end = int(out.time[k]), int(out.time[k]) + factor * H
        assert end <= at  # closed by the decision time
        inside = (c.time >= start) & (c.time < end)
        assert inside.sum() == factor  # every constituent candle present
        assert out.open[k] == c.open[inside][0] and out.close[k] == c.close[inside][-1]
        assert out.high[k] == c.high[inside].max() and out.low[k] == c.low[inside].min()
        assert out.volume[k] == pytest.approx(c.volume[inside].sum())
    # and no complete, closed bar was left out
    closed = c.closed_by(at)
    starts = np.unique(closed.time // (factor * H) * (factor * H))
    expected = [s for s in starts if s + factor * H <= at
                and ((closed.time >= s) & (closed.time < s + factor * H)).sum() == factor]
    assert out.time.tolist() == expected


def _same_candles(a: Candles, b: Candles) -> bool:
    columns = ("time", "open", "high", "low", "close", "volume")
    return (len(a) == len(b) and all(np.array_equal(getattr(a, f), getattr(b, f)) for f in columns)
            and (a.interval_ms, a.symbol, a.source) == (b.interval_ms, b.symbol, b.source))


@settings(max_examples=80, deadline=None)
@given(
    n=st.integers(1, 160),
    drops=st.sets(st.integers(0, 159), max_size=20),
    cut=st.integers(0, 170),
    count=st.integers(1, 30),
    factor=st.sampled_from([2, 4, 24]),
)
def test_complete_bars_equal_a_resample_of_the_recent_window(n, drops, cut, count, factor):
    # complete_bars slices the bars of the whole series, remembered per series; it must give exactly
    # what resampling just the recent candles gives, gaps and partial first buckets included
    c = hourly(n, drop=tuple(d for d in drops if d < n))
    if not len(c.time):
        return
    at = T0 + cut * H
    recent = c.closed_by(at).tail((count + 1) * factor)
    assert _same_candles(complete_bars(c, factor * H, at, count),
                         resample(recent, factor * H, at_ms=at).tail(count))


def test_complete_bars_equal_a_resample_of_the_recent_window_on_real_data(shared_data):
    from agent.market import load_candle_file

    rng = np.random.default_rng(5)
    for symbol in ("BTC_USDT", "DOGE_USDT"):
        full = load_candle_file(shared_data / "candles" / "binance-spot-1h" / f"{symbol}.csv.gz").tail(20_000)
        keep = rng.random(len(full)) > 0.02  # outages: some 4h bars lose a constituent
        gappy = Candles(full.time[keep], full.open[keep], full.high[keep], full.low[keep], full.close[keep],
                        full.volume[keep], interval_ms=H, symbol=symbol, source="gappy")
        for c in (full, gappy):
            for at in rng.integers(int(c.time[0]), c.last_close_time + 8 * H, 100):
                at = int(at) // H * H
                for count in (84, 300):
                    recent = c.closed_by(at).tail((count + 1) * 4)
                    assert _same_candles(complete_bars(c, 4 * H, at, count),
                                         resample(recent, 4 * H, at_ms=at).tail(count))
