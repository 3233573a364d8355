"""The regime theory's compiled loops against the numpy / statsmodels formulations they replaced.

The named-regime rules and the Hamilton filter run as compiled loops (theories.jit) on every hourly
snapshot. Their arithmetic is that of the plain formulations below, in the same order, so the
results must be equal bit for bit: any difference fails these tests.
"""

import math

import numpy as np
import pandas as pd
import pytest
from scipy.ndimage import maximum_filter1d, minimum_filter1d
from statsmodels.tsa.regime_switching.markov_regression import MarkovRegression

from theories.indicators import rolling_std
from theories.pairwise import pairwise_sum, sample_std
from theories.regime import (
    BEAR_TREND,
    BREAKOUT,
    BULL_TREND,
    CONSOLIDATION,
    HIGH_VOL_RANGE,
    LOW_VOL_RANGE,
    REGIMES,
    RegimeParams,
    _rolling_std,
    classify_regimes,
    fit_markov,
    hamilton_filter,
)

SYMBOLS = ("ADA", "AVAX", "BCH", "BTC", "DOGE", "ETH", "LINK", "LTC", "SOL", "XRP")


def trailing_mean(x, n):
    """Mean of the `n` values ending at each index (by cumulative sums); NaN for the first n - 1."""
    out = np.full(len(x), np.nan)
    if len(x) >= n:
        c = np.concatenate(([0.0], np.cumsum(x)))
        out[n - 1 :] = (c[n:] - c[:-n]) / n
    return out


def prior_extreme(x, n, high):
    """Max (or min) of the `n` values *before* each index, x[i-n..i-1]; NaN for the first n."""
    out = np.full(len(x), np.nan)
    if len(x) > n:
        # the filter's window ends at i when shifted (n - 1) // 2 from centred; then lag it one bar
        trailing = (maximum_filter1d if high else minimum_filter1d)(x, n, origin=(n - 1) // 2)
        out[n:] = trailing[n - 1 : -1]
    return out


def plain_rules(close, high, low, p):
    """The named-regime rules as numpy array operations: (code, trend, percentile, expansion, up)."""
    lc = np.log(close)
    r = np.concatenate(([np.nan], np.diff(lc)))
    n = len(close)
    L = p.trend_lookback
    sigma = float(np.std(r[1:], ddof=1)) if n > 2 else 0.0
    assert sigma > 0
    trend = np.full(n, np.nan)
    trend[L:] = (lc[L:] - lc[:-L]) / (sigma * math.sqrt(L))
    vol = rolling_std(r, p.vol_window)
    ranked = np.sort(vol[np.isfinite(vol)])
    pct = np.full(n, np.nan)
    ok = np.isfinite(vol)
    pct[ok] = np.searchsorted(ranked, vol[ok], side="right") / max(len(ranked), 1)
    r2 = r * r
    r2[0] = 0.0
    f = p.fast_vol_window
    ms = trailing_mean(r2, f)
    ms[:f] = np.nan
    ms_prior = np.full(n, np.nan)
    ms_prior[f + p.vol_window :] = trailing_mean(r2, p.vol_window)[p.vol_window : n - f]
    with np.errstate(divide="ignore", invalid="ignore"):
        expansion = np.sqrt(ms / ms_prior)
    up = close > prior_extreme(high, p.breakout_lookback, high=True)
    down = close < prior_extreme(low, p.breakout_lookback, high=False)
    breakout = (up | down) & (expansion >= p.vol_expansion)
    code = np.where(pct > p.high_vol_pct, REGIMES.index(HIGH_VOL_RANGE), REGIMES.index(LOW_VOL_RANGE))
    code = np.where((pct <= p.consolidation_vol_pct) & (np.abs(trend) < p.consolidation_trend),
                    REGIMES.index(CONSOLIDATION), code)
    code = np.where(trend <= -p.trend_threshold, REGIMES.index(BEAR_TREND), code)
    code = np.where(trend >= p.trend_threshold, REGIMES.index(BULL_TREND), code)
    code = np.where(breakout, REGIMES.index(BREAKOUT), code)
    code[: min(p.warmup, n)] = -1
    return code, trend, pct, expansion, up


def plain_hamilton(y, mean, sigma2, p_stay):
    """The Hamilton filter as a plain Python loop over numpy's scaled densities."""
    p00, p11 = p_stay
    ll0 = -0.5 * (np.log(sigma2[0]) + (y - mean[0]) ** 2 / sigma2[0])
    ll1 = -0.5 * (np.log(sigma2[1]) + (y - mean[1]) ** 2 / sigma2[1])
    top = np.maximum(ll0, ll1)
    p01 = 1.0 - p00
    pred = p01 / (p01 + 1.0 - p11)
    out = []
    for l0, l1 in zip(np.exp(ll0 - top).tolist(), np.exp(ll1 - top).tolist(), strict=True):
        a = pred * l1
        den = a + (1.0 - pred) * l0
        f = a / den if den > 0 else pred
        out.append(f)
        pred = p01 + (p11 - p01) * f
    return np.array(out)


@pytest.fixture(scope="module")
def real_candles(shared_data):
    """The last 3000 hourly candles of each of the ten symbols: (close, high, low)."""
    out = {}
    for s in SYMBOLS:
        df = pd.read_csv(shared_data / "candles" / "binance-spot-1h" / f"{s}_USDT.csv.gz").tail(3000)
        out[s] = tuple(df[col].to_numpy(dtype=np.float64) for col in ("close", "high", "low"))
    return out


def windows(candles, length=500, starts=range(0, 2500, 61)):
    close, high, low = candles
    for start in starts:
        yield close[start : start + length], high[start : start + length], low[start : start + length]


def assert_rules_equal(close, high, low, p):
    got = classify_regimes(close, high, low, p)
    code, trend, pct, expansion, up = plain_rules(close, high, low, p)
    np.testing.assert_array_equal(got.code, code)
    np.testing.assert_array_equal(got.trend_score, trend)  # NaN where NaN, every other value equal
    np.testing.assert_array_equal(got.vol_percentile, pct)
    np.testing.assert_array_equal(got.vol_expansion, expansion)
    np.testing.assert_array_equal(got.breakout_up, up)
    np.testing.assert_array_equal(got.returns, np.diff(np.log(close)))  # what the Markov part filters


def test_pairwise_sum_and_sample_std_are_numpys_for_every_length():
    x = np.random.default_rng(3).standard_normal(20_010) * 1e-2 + 1e-3
    squares = np.empty(len(x))
    for n in [*range(2, 300), 499, 500, 1000, 1023, 4097, 20_000]:
        assert 0.0 + pairwise_sum(x, 7, n) == np.add.reduce(x[7 : 7 + n]), n
        assert sample_std(x, 7 + n, n, squares) == np.std(x[7 : 7 + n], ddof=1), n


def test_rolling_std_is_numpys_for_every_window_length(real_candles):
    r = np.concatenate(([np.nan], np.diff(np.log(real_candles["BTC"][0][-600:]))))  # r[0] is NaN, as in the rules
    squares = np.empty(len(r))
    for w in [*range(2, 140), 200, 300]:
        np.testing.assert_array_equal(_rolling_std(r, w, squares), rolling_std(r, w), err_msg=f"window {w}")


def test_compiled_rules_equal_the_numpy_rules_on_real_windows_of_ten_symbols(real_candles):
    p = RegimeParams()
    for candles in real_candles.values():
        for close, high, low in windows(candles):
            assert_rules_equal(close, high, low, p)


def test_compiled_rules_equal_the_numpy_rules_on_consecutive_hourly_windows(real_candles):
    p = RegimeParams()
    for close, high, low in windows(real_candles["BTC"], starts=range(1000, 1048)):
        assert_rules_equal(close, high, low, p)


@pytest.mark.parametrize("params", [
    RegimeParams(trend_lookback=5, vol_window=5, fast_vol_window=2, breakout_lookback=2),
    # windows over 128 bars: numpy sums them in halves, so must the compiled std
    RegimeParams(trend_lookback=300, vol_window=200, fast_vol_window=150, breakout_lookback=250,
                 consolidation_vol_pct=0.4, high_vol_pct=0.6, trend_threshold=0.5, vol_expansion=1.1),
])
def test_compiled_rules_equal_the_numpy_rules_for_other_parameters(real_candles, params):
    for candles in (real_candles["ETH"], real_candles["DOGE"]):
        for close, high, low in windows(candles, length=1000, starts=range(0, 2000, 400)):
            assert_rules_equal(close, high, low, params)


def test_compiled_rules_equal_the_numpy_rules_where_prices_stand_still():
    # flat stretches make 0 / 0 (NaN) and x / 0 (infinite) volatility expansions, and tied ranks
    rng = np.random.default_rng(4)
    close = 100.0 * np.exp(np.cumsum(0.01 * rng.standard_normal(400)))
    close[100:160] = close[100]
    close[250:300] = close[250]
    high, low = close * 1.001, close * 0.999
    high[100:160], low[100:160] = close[100], close[100]
    rules = classify_regimes(close, high, low, RegimeParams())
    assert np.isnan(rules.vol_expansion).sum() > 24 + 6 and np.isinf(rules.vol_expansion).any()
    assert_rules_equal(close, high, low, RegimeParams())


@pytest.mark.parametrize("n", [3, 20, 60])
def test_compiled_rules_equal_the_numpy_rules_on_windows_shorter_than_the_warm_up(real_candles, n):
    close, high, low = (a[-n:] for a in real_candles["SOL"])
    assert_rules_equal(close, high, low, RegimeParams())


@pytest.mark.parametrize("n", [2, 5, 24, 25])
def test_prior_extreme_looks_only_at_the_n_bars_before(n):
    x = np.random.default_rng(n).standard_normal(80)
    hi = prior_extreme(x, n, high=True)
    lo = prior_extreme(x, n, high=False)
    assert np.isnan(hi[:n]).all() and np.isnan(lo[:n]).all()
    for i in range(n, 80):
        assert hi[i] == x[i - n : i].max() and lo[i] == x[i - n : i].min()


@pytest.fixture(scope="module")
def real_fits(real_candles):
    """A Markov fit of each of four symbols' first 1000 hourly returns (the windows below come after)."""
    fits = {}
    for s in ("BTC", "ETH", "DOGE", "LINK"):
        fit = fit_markov(np.diff(np.log(real_candles[s][0][:1000])))
        assert fit.ok
        fits[s] = fit
    return fits


def test_compiled_hamilton_filter_equals_the_python_loop_on_real_windows(real_candles, real_fits):
    for s, fit in real_fits.items():
        for close, _, _ in windows(real_candles[s], starts=range(1000, 2500, 50)):
            y = 100.0 * np.diff(np.log(close))
            args = (fit.mean, fit.sigma2, fit.p_stay)
            np.testing.assert_array_equal(hamilton_filter(y, *args), plain_hamilton(y, *args))


def test_hamilton_filter_matches_statsmodels_on_real_windows(real_candles, real_fits):
    for s, fit in real_fits.items():
        for close, _, _ in windows(real_candles[s], starts=range(1000, 2500, 250)):
            y = 100.0 * np.diff(np.log(close))
            model = MarkovRegression(y, k_regimes=2, trend="c", switching_variance=True)
            # statsmodels' order: p[0->0], p[1->0], const[0], const[1], sigma2[0], sigma2[1]
            params = np.array([fit.p_stay[0], 1.0 - fit.p_stay[1], *fit.mean, *fit.sigma2])
            ref = model.filter(params).filtered_marginal_probabilities[:, 1]
            np.testing.assert_allclose(hamilton_filter(y, fit.mean, fit.sigma2, fit.p_stay), ref, rtol=1e-9, atol=1e-12)
