"""Known values of the indicators the strategies use (TA-Lib and the two hand-written ones)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import talib

from agent.market import load_candle_file
from theories.indicators import atr, ema
from theories.strategies.rsi_bollinger import historical_var, linear_quantile
from theories.strategies.vwap_reversion import rolling_vwap_bands, vwap_bands
from theories.timeframes import HOUR_MS, resample


def test_talib_ema_is_seeded_with_the_sma_of_the_first_span_values():
    x = np.arange(1.0, 11.0)
    out = talib.EMA(x, timeperiod=3)
    assert np.isnan(out[:2]).all()
    assert out[2] == pytest.approx(2.0)  # mean(1, 2, 3)
    # a = 0.5 on a line: each step lands one below the input
    assert out[3:] == pytest.approx(x[3:] - 1.0)


def test_talib_rsi_follows_wilder_smoothing_on_a_hand_worked_example():
    # changes +1 +1 -1 +1 +1; period 2: gains/losses seeded by their mean, then (prev + new) / 2
    out = talib.RSI(np.array([1.0, 2, 3, 2, 3, 4]), timeperiod=2)
    assert np.isnan(out[:2]).all()
    assert out[2:] == pytest.approx([100.0, 50.0, 75.0, 87.5])


def test_talib_bollinger_bands_use_the_population_standard_deviation():
    upper, middle, lower = talib.BBANDS(np.array([1.0, 2, 3, 4, 5]), timeperiod=5, nbdevup=2, nbdevdn=2, matype=0)
    assert middle[-1] == pytest.approx(3.0)
    assert upper[-1] == pytest.approx(3.0 + 2 * math.sqrt(2.0))
    assert lower[-1] == pytest.approx(3.0 - 2 * math.sqrt(2.0))


def test_talib_adx_of_a_one_way_staircase_is_100():
    n = 80
    high = 10.0 + np.arange(n)
    low = high - 1.0
    close = high - 0.5
    assert talib.ADX(high, low, close, timeperiod=14)[-1] == pytest.approx(100.0)


def test_talib_macd_histogram_dies_out_on_a_straight_line():
    _, _, hist = talib.MACD(np.linspace(100, 200, 400), fastperiod=12, slowperiod=26, signalperiod=9)
    assert abs(hist[-1]) < 1e-6


def test_talib_atr_agrees_with_the_hand_written_wilder_atr_once_warmed_up():
    rng = np.random.default_rng(7)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 400)))
    high = close * (1 + rng.uniform(0, 0.01, 400))
    low = close * (1 - rng.uniform(0, 0.01, 400))
    ours, theirs = atr(high, low, close, 14), talib.ATR(high, low, close, timeperiod=14)
    # TA-Lib seeds with the mean of TR[1..14] at bar 14; ours with TR[0..13] at bar 13: different warm-up
    assert ours[14] != pytest.approx(theirs[14], rel=1e-9)
    assert ours[-1] == pytest.approx(theirs[-1], rel=1e-4)  # the seed's weight has decayed by (13/14)^385


def test_talib_ema_agrees_with_the_hand_written_ema_once_warmed_up():
    x = 100 + np.cumsum(np.random.default_rng(3).normal(0, 1, 600))
    assert ema(x, 21)[-1] == pytest.approx(talib.EMA(x, timeperiod=21)[-1], rel=1e-9)


def test_vwap_bands_with_equal_volumes_are_the_mean_and_population_sd_of_the_typical_price():
    close = np.array([10.0, 12, 11, 13, 15])
    vwap, sd = rolling_vwap_bands(close, close, close, np.full(5, 7.0), 5)
    assert np.isnan(vwap[:4]).all()
    assert vwap[-1] == pytest.approx(close.mean())
    assert sd[-1] == pytest.approx(close.std(ddof=0))


def test_vwap_bands_weight_by_volume():
    tp = np.array([10.0, 20.0])
    vwap, sd = rolling_vwap_bands(tp, tp, tp, np.array([1.0, 3.0]), 2)
    assert vwap[-1] == pytest.approx(17.5)
    assert sd[-1] == pytest.approx(math.sqrt((1 * 7.5**2 + 3 * 2.5**2) / 4))


def test_vwap_bands_are_undefined_on_a_window_without_volume():
    tp = np.array([10.0, 11.0, 12.0])
    vwap, _ = rolling_vwap_bands(tp, tp, tp, np.zeros(3), 2)
    assert np.isnan(vwap).all()


def test_historical_var_is_minus_the_empirical_five_percent_quantile():
    returns = np.array([-0.10, -0.08] + [0.01] * 18)
    close = 100 * np.cumprod(np.concatenate(([1.0], 1 + returns)))
    # sorted position 0.05 * 19 = 0.95 between -0.10 and -0.08 (linear interpolation)
    assert historical_var(close, 20, 0.95) == pytest.approx(0.10 - 0.95 * 0.02)


def test_one_window_vwap_bands_are_the_rolling_bands_last_values_bit_for_bit_on_real_4h_bars(shared_data):
    bars = resample(load_candle_file(shared_data / "candles" / "binance-spot-1h" / "ETH_USDT.csv.gz"), 4 * HOUR_MS)
    vwap, sd = rolling_vwap_bands(bars.high, bars.low, bars.close, bars.volume, 50)
    for end in range(50, len(bars), 13):
        w = slice(end - 50, end)
        got = vwap_bands(bars.high[w], bars.low[w], bars.close[w], bars.volume[w])
        assert got == (vwap[end - 1], sd[end - 1])  # exact: the rule must read the same numbers


def test_one_window_vwap_bands_are_undefined_without_volume():
    tp = np.array([10.0, 11.0])
    assert all(math.isnan(x) for x in vwap_bands(tp, tp, tp, np.zeros(2)))


def test_linear_quantile_is_numpys_default_quantile_bit_for_bit(shared_data):
    close = load_candle_file(shared_data / "candles" / "binance-spot-1h" / "SOL_USDT.csv.gz").close
    rng = np.random.default_rng(5)
    samples = [close[e - 100 : e] / close[e - 101 : e - 1] - 1.0 for e in range(101, len(close), 97)]
    samples += [rng.standard_normal(int(rng.integers(1, 200))) for _ in range(500)]
    for x in samples:
        for q in (0.0, 0.01, 0.05, 0.25, 0.5, 0.7, 1.0, float(rng.random())):
            assert linear_quantile(x, q) == np.quantile(x, q)


def test_ema_of_a_matrix_smooths_each_row_exactly_as_alone():
    rows = 100 + np.cumsum(np.random.default_rng(4).normal(0, 1, (5, 300)), axis=1)
    together = ema(rows, 50)
    for row, out in zip(rows, together, strict=True):
        assert np.array_equal(out, ema(row, 50), equal_nan=True)
    assert np.array_equal(ema(rows, alpha=0.1)[2], ema(rows[2], alpha=0.1), equal_nan=True)


def test_bare_talib_functions_are_the_wrapped_ones_with_the_same_values(shared_data):
    from theories.strategies import ta

    c = load_candle_file(shared_data / "candles" / "binance-spot-1h" / "BTC_USDT.csv.gz").tail(400)
    h, lo, cl = (np.asarray(a, float) for a in (c.high, c.low, c.close))
    calls = {
        "ADX": ((h, lo, cl), {"timeperiod": 14}),
        "ATR": ((h, lo, cl), {"timeperiod": 14}),
        "BBANDS": ((cl,), {"timeperiod": 20, "nbdevup": 2.0, "nbdevdn": 2.0, "matype": 0}),
        "EMA": ((cl,), {"timeperiod": 21}),
        "MACD": ((cl,), {"fastperiod": 12, "slowperiod": 26, "signalperiod": 9}),
        "RSI": ((cl,), {"timeperiod": 14}),
        "SMA": ((cl,), {"timeperiod": 20}),
    }
    for name, (args, kw) in calls.items():
        bare, wrapped = getattr(ta, name), getattr(talib, name)
        assert bare is getattr(wrapped, "__wrapped__", wrapped)
        want, got = wrapped(*args, **kw), bare(*args, **kw)
        for w, g in zip(*(x if isinstance(x, tuple) else (x,) for x in (want, got)), strict=True):
            np.testing.assert_array_equal(g, w)
