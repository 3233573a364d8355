import math

import numpy as np
import pandas as pd
import pytest

from tests.synthetic import fgn, fgn_autocovariance
from theories.base import TheoryContext, TheoryError
from theories.candles import Candles
from theories.hurst import (
    THEORY,
    HurstParams,
    _dfa_and_rs,
    _layout,
    dfa_fluctuation,
    dfa_hurst,
    dfa_null,
    expected_rs,
    hurst,
    hurst_label,
    log_scales,
    rescaled_range,
    rs_hurst,
)

# --- the fractional Gaussian noise generator ------------------------------------------------------


def test_fgn_autocovariance_has_its_closed_form_values():
    assert fgn_autocovariance(np.array([0]), 0.7)[0] == 1.0
    assert np.allclose(fgn_autocovariance(np.arange(1, 6), 0.5), 0.0)
    # H = 0.75: gamma(1) = 0.5 (2^1.5 - 2)
    assert fgn_autocovariance(np.array([1]), 0.75)[0] == pytest.approx(0.5 * (2**1.5 - 2), rel=1e-12)


@pytest.mark.parametrize("h", [0.3, 0.7, 0.8])
def test_fgn_covariance_matrix_on_short_series_is_the_fgn_toeplitz_matrix(h):
    # exactness of Davies-Harte shows at every lag up to n - 1, where a truncated method would fail
    x = fgn(6, h, np.random.default_rng(11), size=50_000)
    sample = x.T @ x / len(x)
    lags = np.abs(np.subtract.outer(np.arange(6), np.arange(6)))
    # sampling sd of an entry is at most sqrt(2 / 50000) = 0.0063
    assert np.abs(sample - fgn_autocovariance(lags, h)).max() < 0.03


@pytest.mark.parametrize("h", [0.3, 0.7])
def test_fgn_sample_autocovariance_of_a_long_series_matches_gamma_at_lags_1_to_3(h):
    x = fgn(2**17, h, np.random.default_rng(12))
    for k in (1, 2, 3):
        # the mean is known to be 0; the sampling sd at these lags is ~0.004 for n = 2^17
        assert np.mean(x[:-k] * x[k:]) == pytest.approx(fgn_autocovariance(np.array([k]), h)[0], abs=0.015)
    assert x.var() == pytest.approx(1.0, abs=0.03)


def test_fgn_with_hurst_one_half_is_white_noise():
    n = 2**16
    x = fgn(n, 0.5, np.random.default_rng(13))
    for k in (1, 2, 3):
        assert abs(np.mean(x[:-k] * x[k:])) < 4 / math.sqrt(n)
    assert x.var() == pytest.approx(1.0, abs=4 * math.sqrt(2 / n))


def test_fgn_rejects_hurst_outside_the_unit_interval():
    with pytest.raises(ValueError):
        fgn(100, 1.0, np.random.default_rng(0))


# --- DFA-1 --------------------------------------------------------------------------------------


def _naive_dfa(x, s):
    """F(s) written the slow, obvious way: polyfit a line in each forward and backward window."""
    y = np.cumsum(x - x.mean())
    n, m = len(y), len(y) // s
    t = np.arange(s)
    msq = []
    for start in [i * s for i in range(m)] + [n - (i + 1) * s for i in range(m)]:
        w = y[start : start + s]
        fit = np.polyval(np.polyfit(t, w, 1), t)
        msq.append(np.mean((w - fit) ** 2))
    return math.sqrt(np.mean(msq))


def test_dfa_fluctuation_matches_a_naive_polyfit_loop():
    x = np.random.default_rng(1).standard_normal(97)  # 97 is prime: forward and backward windows differ
    scales = np.array([5, 8, 13, 24])
    f = dfa_fluctuation(x, scales)
    assert f == pytest.approx([_naive_dfa(x, int(s)) for s in scales], rel=1e-10)


def test_dfa_fluctuation_of_a_batch_equals_each_series_alone():
    x = np.random.default_rng(2).standard_normal((3, 300))
    scales = log_scales(300)
    batch = dfa_fluctuation(x, scales)
    for i in range(3):
        assert batch[i] == pytest.approx(dfa_fluctuation(x[i], scales), rel=1e-12)


def test_dfa_fluctuation_is_zero_when_the_profile_is_a_line_in_every_window():
    # profile y_k = x_0 + ... + x_k is a line on bars 20j .. 20j+19 when x_{20j+1} .. x_{20j+19} are
    # equal: block-constant increments shifted by one bar. Windows of 10 and 20 bars then hold lines.
    x = np.roll(np.repeat(np.random.default_rng(1).standard_normal(10), 20), 1)
    assert dfa_fluctuation(x, np.array([10, 20])) == pytest.approx([0.0, 0.0], abs=1e-12)
    assert dfa_fluctuation(x, np.array([40]))[0] > 0.1  # a 40-bar window holds a kink


def test_hurst_of_white_noise_is_one_half():
    x = fgn(4096, 0.5, np.random.default_rng(3), size=16)
    scales = log_scales(4096)
    dfa = np.mean([dfa_hurst(row, scales)[0] for row in x])
    al = np.mean([rs_hurst(row, scales)[0] for row in x])
    # one series has sd ~0.027 (DFA) and ~0.02 (R/S) at n = 4096; the mean of 16 a quarter of that
    assert dfa == pytest.approx(0.5, abs=0.025)
    assert al == pytest.approx(0.5, abs=0.02)


@pytest.mark.parametrize("h", [0.3, 0.7, 0.8])
def test_dfa_recovers_the_hurst_exponent_of_fractional_gaussian_noise(h):
    x = fgn(4096, h, np.random.default_rng(4), size=16)
    scales = log_scales(4096)
    estimates = np.array([dfa_hurst(row, scales)[0] for row in x])
    # simulated over 60 series: bias <= 0.015 and sd <= 0.036 per series at n = 4096
    assert estimates.mean() == pytest.approx(h, abs=0.04)
    assert np.abs(estimates - h).max() < 0.15


def test_dfa_slope_standard_error_is_small_for_a_clean_power_law_and_positive():
    x = fgn(4096, 0.7, np.random.default_rng(5))
    _, se = dfa_hurst(x, log_scales(4096))
    assert 0 < se < 0.05


def test_dfa_null_is_centred_on_one_half_and_shrinks_with_length():
    m500, sd500 = dfa_null(500)
    _, sd250 = dfa_null(250)
    _, sd2000 = dfa_null(2000)
    assert m500 == pytest.approx(0.5, abs=0.015)
    assert sd250 > sd500 > sd2000
    # NOTES.md: "with 500 points the spread is 0.05-0.1: treat |H - 0.5| < 0.1 as noise"
    assert 0.04 < sd500 < 0.08
    assert 1.96 * sd500 == pytest.approx(0.1, abs=0.03)


# --- rescaled range with the Anis-Lloyd-Peters correction ------------------------------------------


def test_rescaled_range_of_a_hand_example():
    # mean 0, Y = 1, 0, 2, 0: R = 2; sample sd = sqrt(10 / 3)
    assert rescaled_range(np.array([1.0, -1.0, 2.0, -2.0]), np.array([4]))[0] == pytest.approx(
        2 / math.sqrt(10 / 3), rel=1e-12
    )


@pytest.mark.parametrize("m", [10, 20, 50])
def test_expected_rs_is_the_simulated_mean_rescaled_range_of_gaussian_noise(m):
    x = np.random.default_rng(6).standard_normal(400_000)
    simulated = rescaled_range(x, np.array([m]))[0]
    # 400000 / m windows (each counted from both ends); relative sampling sd under 0.2%
    assert simulated == pytest.approx(expected_rs(m)[0], rel=0.006)


def test_expected_rs_approaches_the_brownian_bridge_range_sqrt_n_pi_over_2():
    ratio = [expected_rs(n)[0] / math.sqrt(math.pi * n / 2) for n in (10**2, 10**4, 10**6)]
    assert ratio[0] < ratio[1] < ratio[2] < 1.0
    assert ratio[2] == pytest.approx(1.0, abs=2e-3)


def test_raw_rs_is_biased_upward_on_short_white_noise_and_anis_lloyd_removes_most_of_it():
    x = fgn(500, 0.5, np.random.default_rng(7), size=100)
    scales = log_scales(500)
    al, raw = np.array([rs_hurst(row, scales) for row in x]).T
    raw_bias, al_bias = raw.mean() - 0.5, al.mean() - 0.5
    assert raw_bias > 0.05  # simulated ~0.08 with windows of 10..125 bars
    assert abs(al_bias) < 0.03
    assert abs(al_bias) < abs(raw_bias) / 3


# --- the theory ---------------------------------------------------------------------------------


def test_hurst_is_unchanged_by_scaling_returns_and_adding_a_drift():
    x = fgn(600, 0.6, np.random.default_rng(8))
    a, b = hurst(x), hurst(3.0 * x + 0.01)
    assert b.hurst == pytest.approx(a.hurst, abs=1e-10)
    assert b.rs_hurst == pytest.approx(a.rs_hurst, abs=1e-10)
    assert b.null_sd == a.null_sd


def test_label_says_random_walk_for_white_noise_at_500_bars_about_95_percent_of_the_time():
    x = fgn(500, 0.5, np.random.default_rng(9), size=100)
    share = np.mean([hurst(row).label.startswith("random walk") for row in x])
    assert share >= 0.88  # 1.96 null sds: 95% expected, 100 series


def test_label_says_persistent_for_hurst_08_and_mean_reverting_for_hurst_02_at_500_bars():
    rng = np.random.default_rng(10)
    persistent = [hurst(row) for row in fgn(500, 0.8, rng, size=10)]
    reverting = [hurst(row) for row in fgn(500, 0.2, rng, size=10)]
    assert sum(r.label.endswith(" trending") for r in persistent) >= 9
    assert sum(r.label.endswith(" mean-reverting") for r in reverting) >= 9
    assert all(r.z > 0 for r in persistent) and all(r.z < 0 for r in reverting)


def test_label_strength_words_follow_the_stated_thresholds():
    p = HurstParams()  # noise band 1.96 null sds; moderate from 0.1, strong from 0.2
    assert hurst_label(0.58, 0.05, p) == "random walk"
    assert hurst_label(0.58, 0.02, p) == "mildly trending"
    assert hurst_label(0.63, 0.05, p) == "moderately trending"
    assert hurst_label(0.25, 0.05, p) == "strongly mean-reverting"


def test_constant_returns_are_an_error_not_a_number():
    with pytest.raises(TheoryError, match="constant"):
        hurst(np.zeros(500))
    with pytest.raises(TheoryError, match="constant"):
        hurst(np.full(500, 0.001))  # a price rising by the same log step every bar


def test_too_few_returns_are_an_error():
    with pytest.raises(TheoryError, match="too few"):
        hurst(np.random.default_rng(0).standard_normal(150))


def test_params_are_validated():
    with pytest.raises(ValueError):
        HurstParams(moderate_at=0.2, strong_at=0.1)
    with pytest.raises(ValueError):
        HurstParams(lookback=100)


def test_theory_runs_on_real_btc_candles(shared_data):
    df = pd.read_csv(shared_data / "candles" / "binance-spot-1h" / "BTC_USDT.csv.gz").tail(2000)
    history = Candles(
        df["time"], df["open"], df["high"], df["low"], df["close"], df["volume"], symbol="BTC/USDT"
    )
    ctx = TheoryContext(
        symbol="BTC/USDT", at_ms=history.last_close_time, candles=history.tail(500), history=history
    )
    res = THEORY(ctx)
    assert res.n == 499
    assert 0.0 < res.hurst < 1.0 and 0.0 < res.rs_hurst < 1.0
    assert res.null_sd == pytest.approx(dfa_null(499)[1])
    assert res.z == pytest.approx((res.hurst - 0.5) / res.null_sd)
    assert res.label == "random walk" or res.label.endswith((" trending", " mean-reverting"))
    assert f"H_dfa {res.hurst:.2f}".replace(" 0.", " .") in res.summary() and res.summary().endswith(res.label)


def _naive_rs(x: np.ndarray, s: int) -> float:
    """Mean R/S over windows of s from the start and from the end, one window at a time."""
    n = len(x)
    m = n // s
    firsts = sorted({k * s for k in range(m)} | {n - m * s + k * s for k in range(m)})
    ratios = []
    for a in firsts:
        w = x[a : a + s]
        y = np.cumsum(w - w.mean())
        if w.std(ddof=1) > 0:
            ratios.append((y.max() - y.min()) / w.std(ddof=1))
    return float(np.mean(ratios))


def test_hurst_matches_per_window_loops_on_real_returns(shared_data):
    # the all-scales-at-once path against plain per-window loops (polyfit detrending, R/S window by
    # window) and plain regressions, on real returns windows over the years
    close = pd.read_csv(shared_data / "candles" / "binance-spot-1h" / "XRP_USDT.csv.gz").close.to_numpy()
    r_all = np.diff(np.log(close))
    for start in range(0, len(r_all) - 499, 5000):
        x = r_all[start : start + 499]
        scales = log_scales(len(x))
        res = hurst(x)
        log_s = np.log(scales.astype(float))
        log_f = np.log([_naive_dfa(x, int(s)) for s in scales])
        log_rs = np.log([_naive_rs(x, int(s)) for s in scales])
        assert rescaled_range(x, scales) == pytest.approx(np.exp(log_rs), rel=1e-12)
        assert res.hurst == pytest.approx(np.polyfit(log_s, log_f, 1)[0], rel=1e-10)
        assert res.rs_hurst_raw == pytest.approx(np.polyfit(log_s, log_rs, 1)[0], rel=1e-10)
        corrected = 0.5 + np.polyfit(log_s, log_rs - np.log(expected_rs(scales)), 1)[0]
        assert res.rs_hurst == pytest.approx(corrected, rel=1e-10)


def test_compiled_pass_gives_the_numpy_layout_fluctuations_and_rescaled_ranges_bit_for_bit(shared_data):
    # hurst() runs DFA and R/S in one compiled pass; the public numpy functions are its reference
    close = pd.read_csv(shared_data / "candles" / "binance-spot-1h" / "SOL_USDT.csv.gz").close.to_numpy()
    r_all = np.diff(np.log(close))
    for start, n, min_scale in [(s, 500 - s % 37, 4 + s % 9) for s in range(0, len(r_all) - 500, 4111)]:
        x = np.ascontiguousarray(r_all[start : start + n])
        scales = log_scales(n, min_scale)
        lay = _layout(n, tuple(int(s) for s in scales))
        f, rs_sum, rs_count, spread, size = _dfa_and_rs(x, scales, lay.tt[lay.scale_windows], lay.scale_points)
        np.testing.assert_array_equal(f, dfa_fluctuation(x, scales))
        np.testing.assert_array_equal(rs_sum / rs_count, rescaled_range(x, scales))
        d = x - x.mean()
        assert (spread, size) == ((d * d).sum(), np.abs(x).sum())
