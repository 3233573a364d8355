"""evals.stats against textbook tables, hand computations and the papers' worked example; bootstrap properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from evals.stats import (
    EULER_MASCHERONI,
    deflated_sharpe,
    diebold_mariano,
    expected_max_sharpe,
    mcnemar,
    mean_block_length,
    paired_bootstrap_ci,
    probabilistic_sharpe,
    psr_from_moments,
    sharpe_ratio,
    stationary_bootstrap_ci,
)

# --- McNemar ---------------------------------------------------------------------------------------


def test_mcnemar_on_agrestis_presidential_approval_table():
    # Agresti (2002), Categorical Data Analysis, table 10.1: approval at two surveys of the same 1600 people.
    # Discordant 150 (approve then not) and 86: chi2 with continuity = (|150 - 86| - 1)^2 / 236 = 3969 / 236
    a = [True] * 794 + [True] * 150 + [False] * 86 + [False] * 570
    b = [True] * 794 + [False] * 150 + [True] * 86 + [False] * 570
    m = mcnemar(a, b)
    assert (m.both, m.a_only, m.b_only, m.neither, m.method) == (794, 150, 86, 570, "chi2")
    assert m.statistic == pytest.approx(3969 / 236)  # 16.818
    assert m.p_value == pytest.approx(4.11e-5, rel=1e-2)  # chi2(1) tail of 16.818
    assert (m.hit_rate_a, m.hit_rate_b) == (pytest.approx(0.59), pytest.approx(0.55))  # 944 / 1600, 880 / 1600


def test_mcnemar_exact_with_few_discordant_pairs():
    # 1 pair A-only, 9 B-only (10 < 25 discordant): p = 2 P(X <= 1 | Bin(10, 1/2)) = 2 (1 + 10) / 1024
    a = [True] * 5 + [True] + [False] * 9 + [False] * 3
    b = [True] * 5 + [False] + [True] * 9 + [False] * 3
    m = mcnemar(a, b)
    assert m.method == "exact" and m.statistic == 1
    assert m.p_value == pytest.approx(22 / 1024)


def test_mcnemar_of_identical_hits_is_p_one_and_refuses_misaligned_input():
    assert mcnemar([True, False, True], [True, False, True]).p_value == 1.0
    with pytest.raises(ValueError, match="not aligned"):
        mcnemar([True], [True, False])


# --- Diebold-Mariano ------------------------------------------------------------------------------


def test_diebold_mariano_with_the_hln_correction_by_hand():
    # d = a - b = 1, 0, 2, 0; mean 0.75; deviations 0.25, -0.75, 1.25, -0.75
    # gamma_0 = (0.0625 + 0.5625 + 1.5625 + 0.5625) / 4 = 0.6875; DM = 0.75 / sqrt(0.6875 / 4) = 1.809068
    # HLN, h = 1: x sqrt((4 + 1 - 2) / 4) = sqrt(0.75) -> 1.566699; p = 2 P(t_3 > 1.566699)
    dm = diebold_mariano([1, 2, 3, 4], [0, 2, 1, 4])
    assert dm.mean_difference == pytest.approx(0.75)
    assert dm.statistic_uncorrected == pytest.approx(1.809068, abs=1e-6)
    assert dm.statistic == pytest.approx(1.566699, abs=1e-6)
    assert dm.p_value == pytest.approx(2 * sps.t.sf(1.566699, 3), abs=1e-6)  # 0.2152


def test_diebold_mariano_with_h_two_adds_the_lag_one_autocovariance():
    # d = 1, 3, 2, 4, 0: mean 2; deviations -1, 1, 0, 2, -2
    # gamma_0 = (1 + 1 + 0 + 4 + 4) / 5 = 2; gamma_1 = (1x-1 + 0x1 + 2x0 + -2x2) / 5 = -5 / 5 = -1
    # V = 2 + 2(-1) = 0: not positive, so gamma_0 = 2 alone: DM = 2 / sqrt(2 / 5) = 3.162278
    # HLN, h = 2: x sqrt((5 + 1 - 4 + 2 x 1 / 5) / 5) = sqrt(0.48) -> 2.190890
    dm = diebold_mariano([1, 3, 2, 4, 0], [0, 0, 0, 0, 0], h=2)
    assert dm.note and "gamma_0" in dm.note
    assert dm.statistic_uncorrected == pytest.approx(math.sqrt(10))
    assert dm.statistic == pytest.approx(math.sqrt(10) * math.sqrt(0.48))


def test_diebold_mariano_of_a_constant_difference_has_no_statistic():
    dm = diebold_mariano([2, 2, 2, 2], [1, 1, 1, 1])
    assert dm.statistic is None and dm.p_value is None and dm.mean_difference == 1 and "constant" in dm.note
    with pytest.raises(ValueError, match="not aligned"):
        diebold_mariano([1, 2, 3], [1, 2, 3, 4])


# --- Sharpe significance --------------------------------------------------------------------------


def test_deflated_sharpe_reproduces_the_numerical_example_of_bailey_and_lopez_de_prado_2014():
    # The paper's example: N = 100 trials, V[SR_n] = 1/2 annualised, best SR 2.5 annualised, T = 1250 daily
    # returns, skewness -3, kurtosis 10; daily (250 a year): SR0 = sqrt(0.5 / 250) x 2.530540 = 0.1132,
    # DSR = PSR(0.1132) = 0.9004.
    sr0 = expected_max_sharpe(100, 0.5 / 250)
    assert sr0 == pytest.approx(0.1132, abs=1e-4)
    assert psr_from_moments(2.5 / math.sqrt(250), 1250, -3.0, 10.0, sr0) == pytest.approx(0.9004, abs=1e-4)


def test_expected_max_sharpe_by_hand_for_ten_trials_of_unit_variance():
    # (1 - 0.5772157) Phi^-1(0.9) + 0.5772157 Phi^-1(1 - 1/(10 e)); Phi^-1(0.9) = 1.2815516
    z = sps.norm.ppf(1 - 1 / (10 * math.e))  # Phi^-1(0.963212) = 1.789
    assert expected_max_sharpe(10, 1.0) == pytest.approx((1 - EULER_MASCHERONI) * 1.2815516 + EULER_MASCHERONI * z)
    assert expected_max_sharpe(10, 4.0) == pytest.approx(2 * expected_max_sharpe(10, 1.0))
    with pytest.raises(ValueError, match="2 trials"):
        expected_max_sharpe(1, 1.0)


def test_psr_by_hand_on_four_returns():
    # r = 0.01, 0.03, -0.01, 0.01: mean 0.01, std (ddof 1) sqrt((0 + 0.0004 + 0.0004 + 0) / 3) = 0.0163299
    # SR = 0.6123724; population moments: m2 = 0.0002, m3 = 0, m4 = (0.02^4 x 2) / 4 = 8e-8 -> skew 0, kurt 2
    # PSR(0) = Phi(0.6123724 x sqrt(3) / sqrt(1 - 0 + (2 - 1)/4 x 0.375)) = Phi(1.0606602 / 1.0458250) = Phi(1.014185)
    r = [0.01, 0.03, -0.01, 0.01]
    assert sharpe_ratio(r) == pytest.approx(0.6123724, abs=1e-7)
    assert probabilistic_sharpe(r) == pytest.approx(sps.norm.cdf(1.014185), abs=1e-6)  # 0.8448
    assert probabilistic_sharpe(r, sr_benchmark=0.6123724) == pytest.approx(0.5, abs=1e-6)


def test_sharpe_of_a_flat_series_is_undefined_not_infinite():
    assert sharpe_ratio([0.01, 0.01, 0.01]) is None
    assert probabilistic_sharpe([0.0, 0.0, 0.0]) is None
    d = deflated_sharpe([0.0, 0.0, 0.0], n_trials=3, trial_sharpes=[0.1, 0.2, 0.3])
    assert d.dsr is None and d.note and not d.significant()
    d.model_dump_json()


def test_deflated_sharpe_is_below_the_plain_psr_and_falls_as_trials_spread():
    r = np.random.default_rng(5).normal(0.002, 0.01, 400)
    psr = probabilistic_sharpe(r)
    narrow = deflated_sharpe(r, n_trials=10, trial_sharpes=[0.1, 0.11, 0.12])
    wide = deflated_sharpe(r, n_trials=10, trial_sharpes=[0.0, 0.2, 0.4])
    assert wide.dsr < narrow.dsr < psr
    assert narrow.expected_max_sharpe == pytest.approx(expected_max_sharpe(10, np.var([0.1, 0.11, 0.12], ddof=1)))


# --- bootstrap ------------------------------------------------------------------------------------


def test_bootstrap_ci_of_the_mean_covers_the_true_mean_about_95_percent_of_the_time():
    hits = 0
    for seed in range(200):
        x = np.random.default_rng(1000 + seed).normal(0.5, 1.0, 80)
        ci = stationary_bootstrap_ci(x, n_boot=200, seed=seed)
        hits += ci.low <= 0.5 <= ci.high
    # percentile intervals of a mean at n = 80 undercover slightly; binomial sd at 200 draws is ~3 points
    assert 0.86 <= hits / 200 <= 0.99


def test_identical_series_give_a_zero_width_paired_difference():
    x = np.random.default_rng(3).normal(0, 1, 120)
    ci = paired_bootstrap_ci(x, x.copy(), np.mean, n_boot=200)
    assert (ci.estimate, ci.low, ci.high) == (0.0, 0.0, 0.0) and not ci.excludes_zero


def test_paired_bootstrap_uses_the_same_indices_for_both_series():
    # b = a + 1 exactly: every resample of the same indices differs by exactly 1, however noisy a is
    a = np.random.default_rng(4).normal(0, 5, 150)
    ci = paired_bootstrap_ci(a, a + 1.0, np.mean, n_boot=300, seed=9)
    assert ci.low == pytest.approx(1.0) and ci.high == pytest.approx(1.0) and ci.excludes_zero


def test_paired_bootstrap_finds_a_real_difference_and_misses_none():
    rng = np.random.default_rng(8)
    common = rng.normal(0, 1, 400)  # both variants share the market's noise
    a = common + rng.normal(0, 0.1, 400)
    better = common + 0.05 + rng.normal(0, 0.1, 400)
    same = common + rng.normal(0, 0.1, 400)
    assert paired_bootstrap_ci(a, better, n_boot=500).excludes_zero
    assert not paired_bootstrap_ci(a, same, n_boot=500).excludes_zero


def test_bootstrap_is_reproducible_with_its_seed_and_records_how_it_was_made():
    x = np.random.default_rng(6).normal(0, 1, 200)
    one = stationary_bootstrap_ci(x, np.median, n_boot=200, seed=1)
    assert one == stationary_bootstrap_ci(x, np.median, n_boot=200, seed=1)
    assert one != stationary_bootstrap_ci(x, np.median, n_boot=200, seed=2)
    assert (one.n, one.n_boot, one.level, one.seed) == (200, 200, 0.95, 1) and "Politis & Romano" in one.method


def test_automatic_block_length_grows_with_serial_dependence():
    rng = np.random.default_rng(7)
    e = rng.normal(0, 1, 2000)
    ar = np.empty_like(e)
    ar[0] = e[0]
    for t in range(1, e.size):  # AR(1) with phi = 0.9: strongly dependent
        ar[t] = 0.9 * ar[t - 1] + e[t]
    assert mean_block_length(e) < 3 < 10 < mean_block_length(ar) <= e.size
    assert mean_block_length(np.ones(50)) == 1.0
    assert stationary_bootstrap_ci(ar, n_boot=50).mean_block == pytest.approx(mean_block_length(ar))


def test_bad_bootstrap_input_is_refused_with_what_is_wrong():
    with pytest.raises(ValueError, match="position 1"):
        stationary_bootstrap_ci([1.0, float("nan"), 2.0])
    with pytest.raises(ValueError, match="not aligned"):
        paired_bootstrap_ci([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="level"):
        stationary_bootstrap_ci([1.0, 2.0, 3.0], level=95)
    with pytest.raises(ValueError, match="mean_block"):
        stationary_bootstrap_ci([1.0, 2.0, 3.0], mean_block=10)


def test_a_statistic_undefined_on_some_resamples_leaves_them_out_and_counts_them():
    x = np.random.default_rng(2).normal(0.0, 1.0, 100)
    cut = x.mean() + 1.5 * x.std(ddof=1) / 10  # above 1.5 standard errors: undefined (~7% of resamples)

    def capped_mean(a: np.ndarray) -> float | None:
        return None if a.mean() > cut else float(a.mean())

    ci = stationary_bootstrap_ci(x, capped_mean, mean_block=1, n_boot=400)
    assert 0 < ci.dropped < 80 and ci.high <= cut
    with pytest.raises(ValueError, match="undefined on"):
        stationary_bootstrap_ci(x, lambda a: 1.0 if np.array_equal(a, x) else None, n_boot=50)


def test_the_sharpe_ratio_is_a_valid_bootstrap_statistic():
    y = np.random.default_rng(2).normal(0.001, 0.01, 100)
    ci = stationary_bootstrap_ci(y, sharpe_ratio, n_boot=200)
    assert ci.estimate == pytest.approx(sharpe_ratio(y)) and ci.low < ci.estimate < ci.high and ci.dropped == 0


@pytest.mark.parametrize("n", [3, 5, 8, 11, 12, 30])
def test_the_automatic_block_length_is_defined_and_within_the_series_for_short_series(n):
    """arch's Politis-White estimate fails below a dozen points: the n^(1/3) rule stands in, no warning."""
    import warnings

    from evals.stats import mean_block_length

    x = np.arange(float(n)) ** 2 % 5
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        block = mean_block_length(x)
    assert 1.0 <= block <= n
