import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import chi2
from statsmodels.stats.diagnostic import acorr_ljungbox
from statsmodels.tsa.stattools import acf

from theories import autocorr
from theories.autocorr import AutocorrParams, autocorrelation, ljung_box, robust_portmanteau
from theories.base import TheoryContext, TheoryError
from theories.candles import Candles


def ar1(n, phi, seed):
    e = np.random.default_rng(seed).standard_normal(n)
    x = np.empty(n)
    x[0] = e[0]
    for i in range(1, n):
        x[i] = phi * x[i - 1] + e[i]
    return 0.01 * x


def garch11(n, seed, omega=0.05, a=0.10, b=0.85):
    """GARCH(1,1) returns: uncorrelated, but their squares are autocorrelated (Bollerslev 1986)."""
    z = np.random.default_rng(seed).standard_normal(n + 500)
    r = np.empty(n + 500)
    s2 = omega / (1 - a - b)
    for i in range(n + 500):
        r[i] = math.sqrt(s2) * z[i]
        s2 = omega + a * r[i] ** 2 + b * s2
    return 0.01 * r[500:]  # drop the burn-in


def test_ar1_with_phi_one_half_has_lag1_acf_one_half_and_a_tiny_ljung_box_p():
    res = autocorrelation(ar1(5000, 0.5, seed=1), AutocorrParams(lookback=5000))
    assert res.acf[0] == pytest.approx(0.5, abs=0.03)
    assert res.acf[1] == pytest.approx(0.25, abs=0.04)  # phi^2
    assert res.significant_lags[:2] == (1, 2)
    assert res.ljung_box_pvalue < 1e-12
    assert res.label.startswith("serial correlation (momentum at lag 1)")


def test_negative_lag1_correlation_reads_as_reversal():
    res = autocorrelation(ar1(2000, -0.3, seed=2), AutocorrParams(lookback=2000))
    assert res.acf[0] == pytest.approx(-0.3, abs=0.05)
    assert "reversal at lag 1" in res.label


def test_white_noise_shows_no_strong_rejection():
    res = autocorrelation(0.01 * np.random.default_rng(3).standard_normal(500))
    assert res.ljung_box_pvalue > 0.05 and res.ljung_box_squared_pvalue > 0.05
    assert res.label == "no serial correlation; no vol clustering"
    assert len(res.significant_lags) <= 3  # about 1 of 20 lags crosses a 5% band by chance


def test_ljung_box_on_white_noise_rejects_at_its_nominal_rate():
    rng = np.random.default_rng(4)
    p = [autocorrelation(rng.standard_normal(500)).ljung_box_pvalue for _ in range(300)]
    assert 0.02 <= np.mean(np.array(p) < 0.05) <= 0.09


def test_volatility_clustering_rejects_on_squared_returns_but_not_on_returns():
    sq_rejects, raw_rejects = [], []
    for seed in range(40):
        res = autocorrelation(garch11(1000, seed=seed, b=0.80), AutocorrParams(lookback=1000))
        sq_rejects.append(res.ljung_box_squared_pvalue < 0.05)
        raw_rejects.append(res.ljung_box_pvalue < 0.05)
        assert res.label.endswith("; vol clustering") == sq_rejects[-1]
    assert np.mean(sq_rejects) >= 0.95
    # raw returns are uncorrelated; Ljung-Box is somewhat oversized under clustering (~10-20% here, not 5%)
    assert np.mean(raw_rejects) <= 0.25


@pytest.mark.parametrize("square", [False, True])
def test_ljung_box_matches_statsmodels_acorr_ljungbox(square):
    x = garch11(800, seed=6)
    x = x * x if square else x
    res = autocorrelation(garch11(800, seed=6), AutocorrParams(lookback=800, nlags=15))
    ref = acorr_ljungbox(x, lags=[15], return_df=True)
    q, p = (res.ljung_box_squared, res.ljung_box_squared_pvalue) if square else (res.ljung_box, res.ljung_box_pvalue)
    assert q == pytest.approx(ref["lb_stat"].iloc[0], rel=1e-10)
    assert p == pytest.approx(ref["lb_pvalue"].iloc[0], rel=1e-8)


def test_ljung_box_of_one_lag_by_hand():
    # Q = n (n + 2) rho^2 / (n - 1); with n = 100, rho = 0.2: Q = 100 * 102 * 0.04 / 99
    q, p = ljung_box(np.array([0.2]), 100)
    assert q == pytest.approx(100 * 102 * 0.04 / 99, rel=1e-12)
    assert p == pytest.approx(math.erfc(math.sqrt(q / 2)), rel=1e-10)  # chi2(1) tail = P(|Z| > sqrt(Q))


def test_acf_and_band_follow_their_definitions():
    x = ar1(300, 0.2, seed=7)
    res = autocorrelation(x, AutocorrParams(nlags=10, report_lags=3))
    d = x - x.mean()
    by_hand = [float(d[k:] @ d[:-k] / (d @ d)) for k in range(1, 11)]
    assert res.acf == pytest.approx(by_hand[:3], abs=1e-12)
    assert res.band == pytest.approx(1.96 / math.sqrt(300))
    assert res.significant_lags == tuple(k + 1 for k in range(10) if abs(by_hand[k]) > res.band)
    assert res.n == 300 and res.nlags == 10


def test_constant_returns_are_an_error_not_a_number():
    with pytest.raises(TheoryError, match="constant"):
        autocorrelation(np.zeros(200))


def test_too_few_returns_for_the_lags_is_an_error():
    with pytest.raises(TheoryError, match="needs at least"):
        autocorrelation(np.random.default_rng(8).standard_normal(30), AutocorrParams(nlags=20))


def test_theory_runs_on_real_btc(shared_data):
    df = pd.read_csv(shared_data / "candles" / "binance-spot-1h" / "BTC_USDT.csv.gz").tail(2000)
    hist = Candles(df.time, df.open, df.high, df.low, df.close, df.volume, symbol="BTC/USDT")
    ctx = TheoryContext(symbol="BTC/USDT", at_ms=hist.last_close_time, candles=hist.tail(500), history=hist)
    res = autocorr.THEORY(ctx)
    assert res.n == 499 and len(res.acf) == 5
    assert all(-1 <= v <= 1 for v in res.acf)
    assert 0 <= res.ljung_box_pvalue <= 1 and 0 <= res.ljung_box_squared_pvalue <= 1
    assert all(1 <= k <= 20 for k in res.significant_lags)
    assert "->" in res.summary()


def test_robust_portmanteau_of_one_lag_by_hand():
    x = np.array([0.3, -0.1, 0.4, -0.2, 0.1, 0.0, -0.3, 0.2])
    d = x - x.mean()
    prod = d[1:] * d[:-1]
    gamma, tau = prod.sum() / len(x), (prod**2).sum() / len(x)
    q, p, z = robust_portmanteau(x, 1)
    assert q == pytest.approx(len(x) * gamma**2 / tau, rel=1e-12)
    assert z[0] == pytest.approx(gamma / math.sqrt(tau / len(x)), rel=1e-12)
    assert p == pytest.approx(float(chi2.sf(q, 1)), rel=1e-10)


def test_robust_portmanteau_keeps_its_size_under_volatility_clustering():
    # GARCH returns are uncorrelated: the robust test should reject near 5%, Ljung-Box well above
    robust, plain = [], []
    for seed in range(60):
        res = autocorrelation(garch11(1000, seed=seed, b=0.80), AutocorrParams(lookback=1000))
        robust.append(res.robust_pvalue < 0.05)
        plain.append(res.ljung_box_pvalue < 0.05)
        assert res.label.startswith("no serial correlation") == (res.robust_pvalue >= 0.05)
    assert np.mean(robust) <= 0.10
    assert np.mean(robust) < np.mean(plain)


def test_robust_portmanteau_still_detects_real_autocorrelation():
    res = autocorrelation(ar1(2000, 0.2, seed=11), AutocorrParams(lookback=2000))
    assert res.robust_pvalue < 1e-4 and 1 in res.significant_lags


def test_acf_is_statsmodels_fft_acf_bit_for_bit_and_the_robust_q_its_lag_loop(shared_data):
    # the batched FFT against statsmodels' acf (fft=True), and the matrix form of Q* against a loop
    # over lags, on real returns windows
    close = pd.read_csv(shared_data / "candles" / "binance-spot-1h" / "SOL_USDT.csv.gz").close.to_numpy()
    r_all = np.diff(np.log(close))
    for start in range(0, len(r_all) - 499, 4000):
        r = r_all[start : start + 499]
        res = autocorrelation(r)
        assert res.acf == tuple(acf(r, nlags=20, fft=True)[1:6])
        assert res.acf_squared_1 == acf(r * r, nlags=20, fft=True)[1]
        d = r - r.mean()
        gamma = np.array([(d[k:] * d[:-k]).sum() / len(d) for k in range(1, 21)])
        tau = np.array([((d[k:] * d[:-k]) ** 2).sum() / len(d) for k in range(1, 21)])
        z = gamma / np.sqrt(tau / len(d))
        assert res.robust_q == pytest.approx(float(z @ z), rel=1e-12)
        assert res.significant_lags == tuple(int(k) + 1 for k in np.flatnonzero(np.abs(z) > 1.96))
