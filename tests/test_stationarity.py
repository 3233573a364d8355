import warnings

import numpy as np
import pandas as pd
import pytest
from statsmodels.tools.sm_exceptions import InterpolationWarning
from statsmodels.tsa.stattools import adfuller, kpss

from theories import stationarity as st
from theories.base import FitCache, TheoryContext, TheoryError, fit_time
from theories.candles import HOUR_MS, Candles
from theories.stationarity import SeriesTests, StationarityParams, series_tests, stationarity, verdict

DAY_MS = 86_400_000


def white_noise(n, seed):
    return np.random.default_rng(seed).standard_normal(n)


def random_walk(n, seed):
    return np.cumsum(white_noise(n, seed))


def test_adf_rejects_a_unit_root_for_white_noise_and_not_for_a_random_walk():
    for seed in range(3):
        assert series_tests(white_noise(500, seed)).adf_pvalue < 0.01
        assert series_tests(random_walk(500, seed)).adf_pvalue > 0.10


def test_kpss_rejects_stationarity_for_a_random_walk_and_not_for_white_noise():
    for seed in range(3):
        walk = series_tests(random_walk(500, seed))
        assert walk.kpss_bound == "<" and walk.kpss_pvalue == 0.01  # beyond the 1% critical value 0.739
    # for white noise the null is true: KPSS rejects at 5% about 5% of the time (its size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InterpolationWarning)
        p = [kpss(white_noise(500, seed), nlags="auto", result_object=True).pvalue for seed in range(200)]
    rejects = np.array(p) < 0.05
    assert 0.02 <= np.mean(rejects) <= 0.10


def test_adf_statistic_is_the_t_ratio_of_the_dickey_fuller_regression():
    # dy_t = a + b y_{t-1} + sum_i c_i dy_{t-i} + e_t over the sample statsmodels uses; ADF = b / se(b)
    y = np.log(100.0) + 0.01 * np.cumsum(white_noise(400, 7))
    t = series_tests(y)
    k = t.adf_lags
    dy = np.diff(y)
    rows = np.arange(k, len(dy))
    X = np.column_stack([np.ones(len(rows)), y[rows]] + [dy[rows - i] for i in range(1, k + 1)])
    target = dy[rows]
    coef, *_ = np.linalg.lstsq(X, target, rcond=None)
    resid = target - X @ coef
    s2 = resid @ resid / (len(target) - X.shape[1])
    se_b = np.sqrt(s2 * np.linalg.inv(X.T @ X)[1, 1])
    assert t.adf_stat == pytest.approx(coef[1] / se_b, rel=1e-8)


def test_results_are_on_log_price_and_log_returns():
    close = 100 * np.exp(0.01 * random_walk(300, 8))
    res = stationarity(close)
    y = np.log(close)
    for prefix, series in (("price", y), ("returns", np.diff(y))):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", InterpolationWarning)
            ref_kpss = kpss(series, regression="c", nlags="auto", result_object=True)
        ref_adf = adfuller(series, regression="c", autolag="AIC", result_object=True)
        assert getattr(res, f"{prefix}_adf_stat") == pytest.approx(ref_adf.statistic, rel=1e-12)
        assert getattr(res, f"{prefix}_adf_pvalue") == pytest.approx(ref_adf.pvalue, rel=1e-12)
        assert getattr(res, f"{prefix}_kpss_stat") == pytest.approx(ref_kpss.statistic, rel=1e-12)
    assert res.n == 300


def test_a_geometric_random_walk_has_a_unit_root_in_price_and_stationary_returns():
    close = 100 * np.exp(0.01 * random_walk(500, 9))
    res = stationarity(close)
    assert res.price_verdict == "unit root" and res.returns_verdict == "stationary"
    assert res.label == "price unit root; returns stationary"


def test_a_mean_reverting_log_price_is_mostly_judged_stationary():
    verdicts = []
    for seed in range(30):
        rng = np.random.default_rng(100 + seed)
        x = np.zeros(500)
        for i in range(1, 500):
            x[i] = 0.5 * x[i - 1] + 0.01 * rng.standard_normal()  # AR(1) log price around log(1)
        verdicts.append(verdict(series_tests(x), 0.05))
    # ADF always rejects here; KPSS wrongly rejects ~10% of the time at this persistence
    assert verdicts.count("stationary") >= 24
    assert "unit root" not in verdicts


@pytest.mark.parametrize(
    "adf_p, kpss_p, bound, alpha, expected",
    [
        (0.001, 0.10, ">", 0.05, "stationary"),
        (0.60, 0.01, "<", 0.05, "unit root"),
        (0.60, 0.01, "<", 0.01, "unit root"),  # "<" means below 0.01: rejects even at the table's edge
        (0.001, 0.02, "=", 0.05, "mixed"),
        (0.30, 0.08, "=", 0.05, "inconclusive"),
        (0.30, 0.03, "=", 0.01, "inconclusive"),
    ],
)
def test_verdict_combines_opposite_nulls(adf_p, kpss_p, bound, alpha, expected):
    t = SeriesTests(adf_stat=0.0, adf_pvalue=adf_p, adf_lags=0, kpss_stat=0.0, kpss_pvalue=kpss_p, kpss_bound=bound)
    assert verdict(t, alpha) == expected


def test_constant_prices_are_an_error():
    with pytest.raises(TheoryError, match="constant"):
        stationarity(np.full(300, 5.0))


def test_params_are_validated():
    with pytest.raises(ValueError):
        StationarityParams(alpha=0.2)


def _synthetic_candles(close, start_ms=1_700_000_000_000 - 1_700_000_000_000 % DAY_MS):
    t = start_ms + HOUR_MS * np.arange(len(close))
    return Candles(t, close, close, close, close, np.ones(len(close)), symbol="SIM/USDT")


def test_tests_use_the_window_closed_by_the_fit_time_and_are_cached():
    hist = _synthetic_candles(100 * np.exp(0.01 * random_walk(700, 11)))
    at = hist.last_close_time
    ft = fit_time(at, st.StationarityParams().every_ms)  # the default schedule
    closed = hist.closed_by(ft)
    cache = FitCache()
    ctx = TheoryContext(symbol="SIM/USDT", at_ms=at, candles=hist.tail(500), history=hist, cache=cache)
    res = st.THEORY(ctx)
    expected = stationarity(closed.tail(500).close)
    assert res.price_adf_stat == expected.price_adf_stat and res.returns_kpss_stat == expected.returns_kpss_stat
    assert res.age_bars == len(hist) - len(closed) > 0
    again = st.THEORY(ctx)
    assert again == res and cache.misses == 1 and cache.hits == 1


def test_theory_runs_on_real_btc(shared_data):
    df = pd.read_csv(shared_data / "candles" / "binance-spot-1h" / "BTC_USDT.csv.gz").tail(2000)
    hist = Candles(df.time, df.open, df.high, df.low, df.close, df.volume, symbol="BTC/USDT")
    ctx = TheoryContext(
        symbol="BTC/USDT", at_ms=hist.last_close_time, candles=hist.tail(500), history=hist, cache=FitCache()
    )
    res = st.THEORY(ctx)
    assert res.n == 500 and 0 <= res.age_bars < st.StationarityParams().every_ms // HOUR_MS
    # hourly returns of a liquid coin: ADF rejects a unit root in returns beyond doubt
    assert res.returns_adf_pvalue < 0.01
    assert res.price_verdict in st.VERDICT_WORDS and res.returns_verdict in st.VERDICT_WORDS
    assert 0 <= res.price_kpss_pvalue <= 1 and res.price_kpss_bound in ("=", "<", ">")
    assert "->" in res.summary()


def test_the_aic_lag_is_adfullers_own_search_on_real_windows(shared_data):
    # the fast lag choice against statsmodels' search (one OLS per lag), on price and returns windows
    # of several coins over the years; where it declines to call (None) adfuller's search decides
    close = pd.read_csv(shared_data / "candles" / "binance-spot-1h" / "ETH_USDT.csv.gz").close.to_numpy()
    y = np.log(close)
    called = 0
    for start in range(0, len(y) - 500, 2500):
        for x in (y[start : start + 500], np.diff(y[start : start + 500])):
            lag = st.adf_aic_lag(x)
            ref = adfuller(x, regression="c", autolag="AIC", result_object=True)
            if lag is not None:
                called += 1
                assert lag == ref.lags
            # and the whole ADF result is statsmodels' own, bit for bit
            assert (series_tests(x).adf_stat, series_tests(x).adf_pvalue) == (ref.statistic, ref.pvalue)
    assert called >= 10


def test_the_aic_lag_declines_a_rank_deficient_regression():
    # a zigzag: every lagged difference is plus or minus the last one, so the columns are collinear
    x = np.tile([0.0, 1.0], 100)
    assert st.adf_aic_lag(x) is None
    ref = adfuller(x, regression="c", autolag="AIC", result_object=True)
    assert series_tests(x).adf_lags == ref.lags  # statsmodels' own search decided
