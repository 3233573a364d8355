import math
from decimal import Decimal, localcontext

import numpy as np
import pandas as pd
import pytest
from statsmodels.tsa.statespace.structural import UnobservedComponents

from theories import kalman
from theories.base import FitCache, TheoryContext, TheoryError
from theories.candles import HOUR_MS, Candles
from theories.kalman import (
    KalmanParams,
    NoiseFit,
    filter_gains,
    filter_last,
    fit_noise,
    kalman_trend,
    local_linear_trend_filter,
    moment_noise,
)


def simulate_trend(n, irregular, level, trend, seed, start=10.0, slope0=1e-4):
    """A local linear trend with known noise variances (the model the filter assumes)."""
    rng = np.random.default_rng(seed)
    slope = slope0 + np.cumsum(rng.standard_normal(n)) * math.sqrt(trend)
    lvl = start + np.cumsum(slope + rng.standard_normal(n) * math.sqrt(level))
    return lvl + rng.standard_normal(n) * math.sqrt(irregular)


VARIANCES = [(1e-5, 2e-5, 1e-8), (1.1e-6, 2.2e-5, 2.5e-15), (1e-4, 1e-6, 1e-9)]


@pytest.mark.parametrize("h, ql, qt", VARIANCES)
def test_filter_matches_statsmodels_exact_diffuse_filtered_state(h, ql, qt):
    y = simulate_trend(500, h, ql, qt, seed=1)
    uc = UnobservedComponents(y, level="lltrend", use_exact_diffuse=True)
    uc.ssm.tolerance = 0  # no steady-state shortcut: compare every step's covariance
    ref = uc.filter([h, ql, qt])
    kf = local_linear_trend_filter(y, h, ql, qt)  # default prior variance 1e12
    # the first two bars are statsmodels' diffuse period; from then on the filters are one
    np.testing.assert_allclose(kf.level[2:], ref.filtered_state[0, 2:], rtol=1e-13)
    np.testing.assert_allclose(kf.slope[2:], ref.filtered_state[1, 2:], rtol=0, atol=1e-13)
    np.testing.assert_allclose(kf.slope_var[2:], ref.filtered_state_cov[1, 1, 2:], rtol=1e-10)
    np.testing.assert_allclose(kf.innovation[2:], ref.forecasts_error[0, 2:], rtol=0, atol=1e-13)
    np.testing.assert_allclose(kf.innovation_var[2:], ref.forecasts_error_cov[0, 0, 2:], rtol=1e-10)


@pytest.mark.parametrize("h, ql, qt", VARIANCES)
def test_filter_matches_statsmodels_default_approximate_diffuse_model(h, ql, qt):
    # statsmodels' default prior is N(0, 1e6 I); its textbook covariance update loses ~1e-8 in the
    # slope to cancellation right after that prior (see the 60-digit test), hence the slope tolerance
    y = simulate_trend(500, h, ql, qt, seed=2)
    uc = UnobservedComponents(y, level="lltrend")
    uc.ssm.tolerance = 0
    ref = uc.filter([h, ql, qt])
    kf = local_linear_trend_filter(y, h, ql, qt, diffuse_var=1e6)
    np.testing.assert_allclose(kf.level[3:], ref.filtered_state[0, 3:], rtol=1e-8)
    np.testing.assert_allclose(kf.slope[3:], ref.filtered_state[1, 3:], rtol=0, atol=5e-8)
    np.testing.assert_allclose(kf.slope_var[3:], ref.filtered_state_cov[1, 1, 3:], rtol=1e-5)


def textbook_filter_60_digits(y, h, ql, qt, kappa):
    """The textbook Kalman recursion in 60-digit decimal arithmetic: the exact answer to compare to."""
    with localcontext() as ctx:
        ctx.prec = 60
        h, ql, qt, kappa = Decimal(h), Decimal(ql), Decimal(qt), Decimal(kappa)
        a0 = a1 = p01 = Decimal(0)
        p00 = p11 = kappa
        level, slope = [], []
        for yt in y:
            v = Decimal(float(yt)) - a0
            f = p00 + h
            k0, k1 = p00 / f, p01 / f
            a0, a1 = a0 + k0 * v, a1 + k1 * v
            p00, p01, p11 = p00 - p00 * k0, p01 - p00 * k1, p11 - p01 * k1
            level.append(float(a0))
            slope.append(float(a1))
            a0 = a0 + a1
            p00, p01, p11 = p00 + 2 * p01 + p11 + ql, p01 + p11, p11 + qt
    return np.array(level), np.array(slope)


@pytest.mark.parametrize("h, ql, qt", VARIANCES)
def test_filter_agrees_with_the_recursion_in_60_digit_arithmetic(h, ql, qt):
    y = simulate_trend(300, h, ql, qt, seed=3)
    level, slope = textbook_filter_60_digits(y, h, ql, qt, kappa=1e6)
    kf = local_linear_trend_filter(y, h, ql, qt, diffuse_var=1e6)
    np.testing.assert_allclose(kf.level, level, rtol=1e-14)
    np.testing.assert_allclose(kf.slope, slope, rtol=0, atol=1e-14)


def test_velocity_of_a_noiseless_straight_line_is_its_slope_and_acceleration_zero():
    slope = 2e-3
    close = np.exp(4.0 + slope * np.arange(200))
    noise = NoiseFit(1e-6, 1e-5, 1e-8, "mle", "", 200)
    res = kalman_trend(close, noise, KalmanParams(lookback=200))
    assert res.velocity == pytest.approx(slope, rel=1e-9)
    assert abs(res.acceleration) < 1e-12
    assert res.level == pytest.approx(close[-1], rel=1e-9)
    assert abs(res.deviation_sigma) < 1e-6
    assert res.label.startswith("uptrend")


def test_exact_observations_make_the_level_equal_the_price():
    ql, qt = 1e-5, 1e-8
    y = simulate_trend(100, 0.0, ql, qt, seed=4)
    kf = local_linear_trend_filter(y, 0.0, ql, qt)
    np.testing.assert_allclose(kf.level, y, rtol=1e-12)
    # two exact prices pin slope_0 + level shock: slope_1 = slope_0 + trend shock has variance ql + qt
    assert kf.slope[1] == pytest.approx(y[1] - y[0], rel=1e-9)
    assert kf.slope_var[1] == pytest.approx(ql + qt, rel=1e-9)
    uc = UnobservedComponents(y, level="lltrend", use_exact_diffuse=True)
    uc.ssm.tolerance = 0
    ref = uc.filter([0.0, ql, qt])
    np.testing.assert_allclose(kf.slope_var[2:], ref.filtered_state_cov[1, 1, 2:], rtol=1e-10)
    np.testing.assert_allclose(kf.slope[2:], ref.filtered_state[1, 2:], rtol=0, atol=1e-13)


@pytest.mark.parametrize("jump, side", [(0.05, "above"), (-0.05, "below")])
def test_deviation_sign_follows_a_price_spike(jump, side):
    y = simulate_trend(400, 1e-6, 2e-5, 0.0, seed=5)
    y[-1] = y[-2] + jump  # a 5% move against a per-bar sd of about 0.5%
    noise = NoiseFit(1e-6, 2e-5, 1e-12, "mle", "", 400)
    res = kalman_trend(np.exp(y), noise, KalmanParams(lookback=400))
    assert math.copysign(1, res.deviation) == math.copysign(1, jump)
    assert res.deviation_sigma * math.copysign(1, jump) > 5
    assert f"stretched {side}" in res.label


def test_deviation_sigma_is_the_standardised_innovation_of_the_last_bar():
    y = simulate_trend(300, 1e-5, 2e-5, 1e-9, seed=6)
    h, ql, qt = 1e-5, 2e-5, 1e-9
    kf = local_linear_trend_filter(y, h, ql, qt)
    res = kalman_trend(np.exp(y), NoiseFit(h, ql, qt, "mle", "", 300), KalmanParams(lookback=300))
    # y_T - level_T|T = (h / F_T) v_T: the deviation and its sd are tied to the innovation
    assert res.deviation == pytest.approx(h / kf.innovation_var[-1] * kf.innovation[-1], rel=1e-9)
    assert res.deviation_sigma == pytest.approx(kf.innovation[-1] / math.sqrt(kf.innovation_var[-1]), rel=1e-12)
    assert res.acceleration == pytest.approx(kf.slope[-1] - kf.slope[-2], rel=1e-12)


def test_moment_rule_recovers_the_variances_of_a_simulated_trend():
    h, ql, qt = 1e-4, 2e-4, 5e-5
    got = moment_noise(simulate_trend(400_000, h, ql, qt, seed=7))
    assert got == pytest.approx((h, ql, qt), rel=0.1)


def test_mle_recovers_the_variances_of_a_simulated_trend():
    h, ql = 2e-5, 4e-5
    fit = fit_noise(simulate_trend(1500, h, ql, 0.0, seed=8))
    assert fit.source == "mle" and fit.bars == 1500
    assert fit.level_var == pytest.approx(ql, rel=0.3)
    assert fit.irregular_var == pytest.approx(h, rel=0.4)
    assert fit.trend_var < 1e-8


def test_failed_mle_falls_back_to_the_rule_and_says_so(monkeypatch):
    def broken(y, maxiter=200):
        raise RuntimeError("the likelihood optimiser did not converge")

    monkeypatch.setattr(kalman, "mle_noise", broken)
    y = simulate_trend(500, 1e-5, 2e-5, 1e-9, seed=9)
    fit = fit_noise(y)
    assert fit.source == "rule" and "did not converge" in fit.note
    assert (fit.irregular_var, fit.level_var, fit.trend_var) == moment_noise(y)
    res = kalman_trend(np.exp(y), fit)
    assert res.noise_source == "rule" and "moment rule" in res.label


def test_a_steady_drift_reads_as_an_uptrend_and_a_random_walk_as_no_clear_trend():
    drift = simulate_trend(500, 1e-6, 1e-5, 0.0, seed=10, slope0=1e-3)  # 0.1%/bar against 0.3% noise
    walk = simulate_trend(500, 1e-6, 1e-5, 0.0, seed=11, slope0=0.0)
    noise = NoiseFit(1e-6, 1e-5, 1e-14, "mle", "", 500)
    up = kalman_trend(np.exp(drift), noise)
    flat = kalman_trend(np.exp(walk), noise)
    assert up.velocity_sigma > 2 and up.label.startswith("uptrend")
    assert abs(flat.velocity_sigma) < 2 and flat.label.startswith("no clear trend")


def test_degenerate_noise_is_an_error():
    with pytest.raises(TheoryError):
        local_linear_trend_filter(np.ones(10), -1.0, 1e-5, 0.0)
    with pytest.raises(TheoryError, match="zero"):
        local_linear_trend_filter(np.ones(10), 0.0, 0.0, 0.0)


def _synthetic_candles(close, start_ms=1_700_000_000_000 - 1_700_000_000_000 % 86_400_000):
    t = start_ms + HOUR_MS * np.arange(len(close))
    return Candles(t, close, close, close, close, np.ones(len(close)), symbol="SIM/USDT")


def test_noise_fit_is_cached_and_ignores_bars_after_the_refit_time():
    close = np.exp(simulate_trend(800, 1e-5, 2e-5, 0.0, seed=12))
    hist = _synthetic_candles(close)
    cache = FitCache()
    at = hist.last_close_time
    ctx = TheoryContext(symbol="SIM/USDT", at_ms=at, candles=hist.tail(500), history=hist, cache=cache)
    first = kalman.THEORY(ctx)
    # a different last bar, same refit time: the fit is reused (the bars after it were not in it)
    assert at % 86_400_000 != 0
    bumped = close.copy()
    bumped[-1] *= 1.02
    hist2 = _synthetic_candles(bumped)
    ctx2 = TheoryContext(symbol="SIM/USDT", at_ms=at, candles=hist2.tail(500), history=hist2, cache=cache)
    second = kalman.THEORY(ctx2)
    assert cache.misses == 1 and cache.hits == 1
    assert second.irregular_sd == first.irregular_sd and second.deviation_sigma > first.deviation_sigma


def test_too_little_history_is_an_error():
    hist = _synthetic_candles(np.exp(simulate_trend(60, 1e-5, 2e-5, 0.0, seed=13)))
    ctx = TheoryContext(symbol="SIM/USDT", at_ms=hist.last_close_time, candles=hist, history=hist)
    with pytest.raises(TheoryError, match="refit time"):
        kalman.THEORY(ctx)


def test_params_are_validated():
    with pytest.raises(ValueError):
        KalmanParams(fit_bars=10)


def test_theory_runs_on_real_btc(shared_data):
    df = pd.read_csv(shared_data / "candles" / "binance-spot-1h" / "BTC_USDT.csv.gz").tail(2000)
    hist = Candles(df.time, df.open, df.high, df.low, df.close, df.volume, symbol="BTC/USDT")
    ctx = TheoryContext(
        symbol="BTC/USDT", at_ms=hist.last_close_time, candles=hist.tail(500), history=hist, cache=FitCache()
    )
    res = kalman.THEORY(ctx)
    assert res.n == 500 and res.fit_bars == 500
    assert res.level == pytest.approx(hist.close[-1], rel=0.02)
    assert abs(res.velocity) < 0.01  # hourly log drift: well under 1% per bar
    for name in ("velocity_sigma", "acceleration", "deviation_sigma", "level_sd"):
        assert math.isfinite(getattr(res, name))
    assert res.noise_source in ("mle", "rule")
    assert "->" in res.summary()


def one_pass_filter(y, h, ql, qt, kappa=kalman.DIFFUSE_VAR):
    """Covariance and state in one loop, step by step: the filter as first written, before its
    data-free half (`filter_gains`) was split out to be computed once per fit."""
    a0 = a1 = 0.0
    p00 = p11 = kappa
    p01 = 0.0
    det = p00 * p11
    out = []
    for yt in y.tolist():
        v = yt - a0
        f = p00 + h
        k1 = p01 / f
        a0 += p00 / f * v
        a1 += k1 * v
        if h > 0.0:
            g = h / f
            p00 *= g
            p01 *= g
            det *= g
            p11 = (det + p01 * p01) / p00
        else:
            p11 = det / p00
            p00 = p01 = det = 0.0
        out.append((a0, a1, p11, v, f))
        a0 += a1
        a00 = p00 + 2.0 * p01 + p11
        det += ql * p11 + qt * a00 + ql * qt
        p00 = a00 + ql
        p01 += p11
        p11 += qt
    return np.array(out).T


def _real_log_closes(shared_data, symbol="ETH_USDT", n=3000):
    df = pd.read_csv(shared_data / "candles" / "binance-spot-1h" / f"{symbol}.csv.gz").tail(n)
    return np.log(df.close.to_numpy(dtype=np.float64))


@pytest.mark.parametrize("h, ql, qt", [*VARIANCES, (0.0, 1e-5, 1e-9)])
def test_split_filter_is_bit_identical_to_the_one_pass_filter_on_real_prices(shared_data, h, ql, qt):
    y = _real_log_closes(shared_data)
    for start in range(0, 2500, 500):
        window = y[start : start + 500]
        kf = local_linear_trend_filter(window, h, ql, qt)
        got = np.array([kf.level, kf.slope, kf.slope_var, kf.innovation, kf.innovation_var])
        np.testing.assert_array_equal(got, one_pass_filter(window, h, ql, qt))
        # the hourly path keeps only the last step: the same numbers
        level, slope, prev_slope, innovation = filter_last(window, filter_gains(len(window), h, ql, qt))
        assert (level, slope, prev_slope, innovation) == (kf.level[-1], kf.slope[-1], kf.slope[-2], kf.innovation[-1])


def test_memoised_gains_are_a_fresh_computation_and_read_only():
    cached = filter_gains(300, 1e-5, 2e-5, 1e-8)
    fresh = filter_gains.__wrapped__(300, 1e-5, 2e-5, 1e-8)
    assert filter_gains(300, 1e-5, 2e-5, 1e-8) is cached
    for name in ("level_gain", "slope_gain", "slope_var", "innovation_var"):
        np.testing.assert_array_equal(getattr(cached, name), getattr(fresh, name))
        with pytest.raises(ValueError):
            getattr(cached, name)[0] = 1.0


def test_kalman_trend_reads_the_full_filters_last_steps(shared_data):
    close = np.exp(_real_log_closes(shared_data, "BTC_USDT", 700))
    noise = NoiseFit(2e-6, 3e-5, 1e-12, "mle", "", 500)
    res = kalman_trend(close, noise)
    y = np.log(close[-500:])
    kf = local_linear_trend_filter(y, noise.irregular_var, noise.level_var, noise.trend_var)
    assert res.level == math.exp(kf.level[-1]) and res.velocity == kf.slope[-1]
    assert res.acceleration == kf.slope[-1] - kf.slope[-2]
    assert res.deviation == y[-1] - kf.level[-1]
    assert res.velocity_sigma == kf.slope[-1] / math.sqrt(kf.slope_var[-1])
    assert res.deviation_sigma == kf.innovation[-1] / math.sqrt(kf.innovation_var[-1])


@pytest.mark.parametrize("h, ql, qt", [(2e-6, 3e-5, 1e-12), (1e-5, 2e-5, 1e-8)])
def test_hourly_path_matches_statsmodels_on_real_windows_of_ten_symbols(shared_data, h, ql, qt):
    noise = NoiseFit(h, ql, qt, "mle", "", 500)
    for path in sorted((shared_data / "candles" / "binance-spot-1h").glob("*_USDT.csv.gz")):
        close = pd.read_csv(path).close.to_numpy(dtype=np.float64)[-1500:]
        for end in range(600, 1501, 300):
            res = kalman_trend(close[:end], noise)
            y = np.log(close[end - 500 : end])
            uc = UnobservedComponents(y, level="lltrend", use_exact_diffuse=True)
            uc.ssm.tolerance = 0
            ref = uc.filter([h, ql, qt])
            assert math.log(res.level) == pytest.approx(ref.filtered_state[0, -1], rel=1e-13)
            assert res.velocity == pytest.approx(ref.filtered_state[1, -1], abs=1e-13)
            assert res.acceleration == pytest.approx(ref.filtered_state[1, -1] - ref.filtered_state[1, -2], abs=1e-13)
            assert res.velocity_sigma == pytest.approx(
                ref.filtered_state[1, -1] / math.sqrt(ref.filtered_state_cov[1, 1, -1]), rel=1e-9, abs=1e-9)
            assert res.deviation_sigma == pytest.approx(
                ref.forecasts_error[0, -1] / math.sqrt(ref.forecasts_error_cov[0, 0, -1]), rel=1e-9, abs=1e-9)
