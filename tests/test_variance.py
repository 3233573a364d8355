import math

import numpy as np
import pandas as pd
import pytest
from arch.unitroot import VarianceRatio

from theories.base import TheoryContext, TheoryError
from theories.candles import HOUR_MS, Candles
from theories.indicators import atr, percentile_rank, rolling_std
from theories.variance import (
    THEORY,
    VarianceParams,
    VarianceResult,
    chow_denning,
    realised_vol,
    variance,
    variance_ratios,
)

LAGS = (2, 4, 8, 16)
BARS_PER_YEAR = 365 * 24


def _ar1(n: int, phi: float, rng: np.random.Generator) -> np.ndarray:
    """Returns following r_t = phi r_{t-1} + e_t."""
    e = rng.standard_normal(n) * 0.01
    r = np.empty(n)
    r[0] = e[0]
    for t in range(1, n):
        r[t] = phi * r[t - 1] + e[t]
    return r


def _closes(returns: np.ndarray, start: float = 100.0) -> np.ndarray:
    return start * np.exp(np.concatenate(([0.0], np.cumsum(returns))))


def _result(returns: np.ndarray, **params) -> VarianceResult:
    c = _closes(returns)
    return variance(c * 1.001, c * 0.999, c, BARS_PER_YEAR, VarianceParams(**params))


def test_variance_ratios_match_arch_robust_and_homoskedastic_statistics():
    rng = np.random.default_rng(10)
    # heteroskedastic returns (slowly varying scale) with some autocorrelation
    r = _ar1(600, 0.15, rng) * np.exp(np.sin(np.arange(600) / 40))
    x = np.concatenate(([0.0], np.cumsum(r)))
    vr, z_star, z_homo = variance_ratios(x, LAGS)
    for i, q in enumerate(LAGS):
        robust = VarianceRatio(x, lags=q, robust=True, overlap=True, debiased=True)
        plain = VarianceRatio(x, lags=q, robust=False, overlap=True, debiased=True)
        assert vr[i] == pytest.approx(robust.vr, rel=1e-12)
        assert z_star[i] == pytest.approx(robust.stat, rel=1e-10)
        assert z_homo[i] == pytest.approx(plain.stat, rel=1e-10)


def test_variance_ratio_of_a_perfect_zigzag_is_zero_with_hand_computed_robust_z():
    # log prices 0,1,3,4,6: returns 1,2,1,2, mu = 1.5, deviations -+0.5: every 2-bar change is
    # exactly 2 mu, so sigma_c^2(2) = 0 and VR(2) = 0. delta(1) = 4 * 3 * (1/16) / 1^2 = 0.75,
    # theta(2) = 1 * 0.75, z* = sqrt(4) * (0 - 1) / sqrt(0.75) = -4 / sqrt(3); z = 2 * -1 / sqrt(1) = -2.
    vr, z_star, z_homo = variance_ratios(np.array([0.0, 1.0, 3.0, 4.0, 6.0]), (2,))
    assert vr[0] == pytest.approx(0.0, abs=1e-15)
    assert z_star[0] == pytest.approx(-4 / math.sqrt(3), rel=1e-12)
    assert z_homo[0] == pytest.approx(-2.0, rel=1e-12)


def test_an_ar1_series_gives_a_variance_ratio_above_1_near_its_closed_form():
    # For AR(1) returns VR(q) -> 1 + 2 sum_{k<q} (1 - k/q) phi^k  (Lo & MacKinlay 1988, eq. 7 with rho_k = phi^k)
    phi = 0.3
    res = _result(_ar1(40_000, phi, np.random.default_rng(11)), lookback=40_001)
    for q, v, z in zip(res.lags, res.variance_ratios, res.z_robust, strict=True):
        k = np.arange(1, q)
        expected = 1 + 2 * np.sum((1 - k / q) * phi**k)
        assert v > 1 and z > 3
        assert v == pytest.approx(expected, abs=0.05)
    assert res.label.startswith("trending")


def test_an_ar1_series_on_the_default_500_bar_window_is_labelled_trending():
    res = _result(_ar1(499, 0.3, np.random.default_rng(12)))
    assert res.n == 499
    assert all(v > 1 for v in res.variance_ratios)
    assert max(res.z_robust) > res.joint_critical_z
    assert res.label.startswith("trending")


def test_negatively_autocorrelated_returns_are_mean_reverting():
    res = _result(_ar1(499, -0.3, np.random.default_rng(13)))
    assert res.variance_ratios[0] < 0.85 and res.z_robust[0] < -3
    assert res.label.startswith("mean-reverting")


def test_joint_test_keeps_its_size_on_random_walks():
    # Under a random walk the Chow-Denning test at 5% should reject about 5% of the time
    # (Sidak is conservative); 400 walks: a binomial(400, 0.05) exceeds 36 rejections with p < 1e-4.
    rng = np.random.default_rng(14)
    rejections = 0
    for _ in range(400):
        x = np.concatenate(([0.0], np.cumsum(rng.standard_normal(499))))
        _, z, _ = variance_ratios(x, LAGS)
        p, crit = chow_denning(z, 0.05)
        assert (p < 0.05) == (np.max(np.abs(z)) > crit)
        rejections += p < 0.05
    assert 4 <= rejections <= 36


def test_chow_denning_critical_value_is_the_sidak_bound():
    _, crit = chow_denning(np.zeros(4), 0.05)
    # 1 - (1 - 0.05)^(1/4) = 0.012741..., two-sided: Phi^-1(1 - 0.0063707) = 2.4909...
    assert crit == pytest.approx(2.4909, abs=1e-3)
    p, _ = chow_denning(np.array([0.0, 0.0, 1.959963984540054]), 0.05)
    assert p == pytest.approx(1 - 0.95**3, rel=1e-9)


def test_realised_vol_of_alternating_returns_has_the_closed_form():
    # returns +a, -a, ...: mean 0 over an even window, sample std = a sqrt(w / (w - 1))
    a, w = 0.01, 24
    r = np.tile([a, -a], 100)
    rv, pct = realised_vol(r, w, 150, BARS_PER_YEAR)
    assert rv == pytest.approx(a * math.sqrt(w / (w - 1)) * math.sqrt(BARS_PER_YEAR), rel=1e-12)
    assert 0 < pct <= 1


def test_a_volatility_burst_ranks_at_the_top_and_reads_high_volatility():
    rng = np.random.default_rng(15)
    r = rng.standard_normal(499) * 0.005
    r[-24:] *= 4
    res = _result(r)
    assert res.vol_percentile == 1.0
    assert res.realised_vol == pytest.approx(np.std(r[-24:], ddof=1) * math.sqrt(BARS_PER_YEAR), rel=1e-12)
    assert res.label.endswith("; high vol")


def test_a_quiet_spell_ranks_at_the_bottom():
    rng = np.random.default_rng(16)
    r = rng.standard_normal(499) * 0.01
    r[-24:] *= 0.1
    res = _result(r)
    assert res.vol_percentile <= 0.01 and res.label.endswith("; low vol")


def test_atr_is_wilders_atr_and_its_fraction_of_the_close():
    rng = np.random.default_rng(17)
    c = _closes(rng.standard_normal(300) * 0.01)
    h, lo = c * (1 + rng.uniform(0, 0.01, c.size)), c * (1 - rng.uniform(0, 0.01, c.size))
    res = variance(h, lo, c, BARS_PER_YEAR)
    expected = atr(h, lo, c, 14)[-1]
    assert res.atr == pytest.approx(expected, rel=1e-12)
    assert res.atr_fraction == pytest.approx(expected / c[-1], rel=1e-12)


def test_lookback_limits_the_returns_used():
    res = _result(np.random.default_rng(18).standard_normal(999) * 0.01, lookback=300)
    assert res.n == 299


def test_a_constant_price_is_an_error_not_a_number():
    c = np.full(300, 50.0)
    with pytest.raises(TheoryError, match="zero variance"):
        variance(c, c, c, BARS_PER_YEAR)


def test_too_few_returns_for_the_longest_lag_is_an_error():
    with pytest.raises(TheoryError, match="at least 128 returns"):
        _result(np.random.default_rng(19).standard_normal(100) * 0.01)


def test_params_reject_a_lag_of_one_and_sort_the_lags():
    with pytest.raises(ValueError):
        VarianceParams(lags=(1, 2))
    assert VarianceParams(lags=(8, 2)).lags == (2, 8)


def test_theory_runs_on_real_hourly_data(shared_data):
    df = pd.read_csv(shared_data / "candles" / "binance-spot-1h" / "BTC_USDT.csv.gz").tail(2000)
    history = Candles(
        df.time.to_numpy(), df.open, df.high, df.low, df.close, df.volume, interval_ms=HOUR_MS, symbol="BTC/USDT"
    )
    ctx = TheoryContext(
        symbol="BTC/USDT", at_ms=history.last_close_time, candles=history.tail(500), history=history
    )
    res = THEORY(ctx)
    assert res.n == 499 and len(res.variance_ratios) == 4
    assert all(0.2 < v < 3 for v in res.variance_ratios)
    assert 0.05 < res.realised_vol < 3  # annualised: BTC's hourly vol is tens of percent a year
    assert 0 < res.vol_percentile <= 1
    assert 0 < res.atr_fraction < 0.1
    assert res.label and "->" in res.summary()


def _numpy_variance_ratios(x: np.ndarray, lags: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """VR(q) and z*(q) as plain numpy writes them (the formulation the compiled sums replace)."""
    nq = len(x) - 1
    mu = (x[-1] - x[0]) / nq
    d = np.diff(x) - mu
    ss = (d * d).sum()
    vr, theta = [], []
    for q in lags:
        dq = x[q:] - x[:-q] - q * mu
        vr.append((dq @ dq) / (q * (nq - q + 1) * (1 - q / nq)) / (ss / (nq - 1)))
        delta = [nq * (d[j:] ** 2 @ d[:-j] ** 2) / ss**2 for j in range(1, q)]
        theta.append(sum((2.0 * (q - j) / q) ** 2 * delta[j - 1] for j in range(1, q)))
    vr = np.array(vr)
    return vr, math.sqrt(nq) * (vr - 1) / np.sqrt(theta)


def test_compiled_variance_ratios_and_realised_vol_match_numpy_on_real_prices(shared_data):
    close = pd.read_csv(shared_data / "candles" / "binance-spot-1h" / "ETH_USDT.csv.gz").close.to_numpy()
    log_close = np.log(close)
    for start in range(0, len(close) - 600, 3000):
        x = log_close[start : start + 500]
        vr, z_star, _ = variance_ratios(x, LAGS)
        ref_vr, ref_z = _numpy_variance_ratios(x, LAGS)
        # the same dot products (BLAS) for VR: the same bits; theta's sums add in another order
        np.testing.assert_array_equal(vr, ref_vr)
        np.testing.assert_allclose(z_star, ref_z, rtol=1e-12)
        # realised vol: each window's std in numpy's order, so bit for bit
        r = np.diff(log_close[start : start + 600])
        rolling = rolling_std(r[-(400 + 24 - 1) :], 24) * math.sqrt(BARS_PER_YEAR)
        assert realised_vol(r, 24, 400, BARS_PER_YEAR) == (rolling[-1], percentile_rank(rolling, rolling[-1]))
