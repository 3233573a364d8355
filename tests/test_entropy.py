import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from theories.base import TheoryError
from theories.entropy import (
    EntropyParams,
    entropy,
    gaussian_reference,
    permutation_entropy,
    shannon_entropy,
    sigma_bin_edges,
)


def test_gaussian_reference_matches_exact_bin_probabilities():
    # 14 bins: open tail, 12 half-sigma bins over [-3, 3], open tail
    edges = np.concatenate(([-np.inf], np.arange(-6, 7) * 0.5, [np.inf]))
    p = np.diff(norm.cdf(edges))
    assert len(p) == 14
    assert gaussian_reference(0.5, 3.0) == pytest.approx(-(p * np.log(p)).sum() / math.log(14), rel=1e-12)


def test_shannon_entropy_of_gaussian_data_is_the_gaussian_reference():
    x = np.random.default_rng(1).standard_normal(200_000)
    h, tails = shannon_entropy(x)
    assert h == pytest.approx(gaussian_reference(0.5, 3.0), abs=2e-3)
    assert tails == pytest.approx(2 * norm.sf(3.0), abs=5e-4)


def test_shannon_entropy_of_uniform_data_matches_its_bin_occupancy():
    # a uniform has sd = width / sqrt(12): in sigma units it spans +/- sqrt(3), filling
    # bins (-1.5,-1], ..., (1, 1.5] fully (share 0.5/(2 sqrt 3) each) and the two partial bins
    x = np.random.default_rng(2).uniform(-1, 1, 400_000)
    h, tails = shannon_entropy(x)
    half = math.sqrt(3)
    full = 0.5 / (2 * half)
    partial = (half - 1.5) / (2 * half)
    p = np.array([partial] + [full] * 6 + [partial])
    assert p.sum() == pytest.approx(1.0)
    assert h == pytest.approx(-(p * np.log(p)).sum() / math.log(14), abs=2e-3)
    assert tails == 0


def test_permutation_entropy_of_white_noise_is_near_one_and_of_a_monotone_series_zero():
    rng = np.random.default_rng(3)
    for order in (3, 4, 5):
        assert permutation_entropy(rng.standard_normal(50_000), order) == pytest.approx(1.0, abs=0.005)
        assert permutation_entropy(np.arange(100.0), order) == 0.0


def test_permutation_entropy_of_a_period_two_zigzag_uses_two_patterns():
    x = np.tile([0.0, 1.0], 500)
    assert permutation_entropy(x, 3) == pytest.approx(math.log(2) / math.log(6), abs=1e-9)


def test_bin_edges_are_symmetric_sigma_multiples():
    e = sigma_bin_edges(0.5, 3.0)
    assert e[0] == -3.0 and e[-1] == 3.0 and len(e) == 13


def test_entropy_result_carries_label_and_counts():
    r = np.random.default_rng(4).standard_normal(800)
    res = entropy(r, EntropyParams(lookback=500))
    assert res.n == 500 and res.order == 4
    assert "random-like" in res.label


def test_constant_returns_are_an_error_not_a_number():
    with pytest.raises(TheoryError, match="non-zero spread"):
        entropy(np.zeros(100))


def test_params_are_validated():
    with pytest.raises(ValueError):
        EntropyParams(order=7)


def _numpy_entropies(x: np.ndarray, order: int, delay: int) -> tuple[float, float, float]:
    """Shannon entropy, tail share and permutation entropy as plain numpy writes them (std, searchsorted,
    stable argsort, bincount): the formulation the compiled counts replace."""
    z = (x - x.mean()) / x.std(ddof=1)
    inner = sigma_bin_edges(0.5, 3.0)
    counts = np.bincount(np.searchsorted(inner, z, side="right"), minlength=len(inner) + 1)
    p = counts[counts > 0] / len(x)
    shannon = -(p * np.log(p)).sum() / math.log(len(inner) + 1)
    n = len(x) - (order - 1) * delay
    windows = np.stack([x[i * delay : i * delay + n] for i in range(order)], axis=1)
    codes = np.argsort(windows, axis=1, kind="stable") @ (order ** np.arange(order))
    _, pattern_counts = np.unique(codes, return_counts=True)
    q = pattern_counts / n
    perm = -(q * np.log(q)).sum() / math.log(math.factorial(order))
    return float(shannon), float((counts[0] + counts[-1]) / len(x)), float(perm)


@pytest.mark.parametrize("order,delay", [(3, 1), (4, 1), (5, 2)])
def test_compiled_counts_give_numpys_entropies_bit_for_bit_on_real_returns(shared_data, order, delay):
    close = pd.read_csv(shared_data / "candles" / "binance-spot-1h" / "DOGE_USDT.csv.gz").close.to_numpy()
    r_all = np.diff(np.log(close))
    for start in range(0, len(r_all) - 500, 3500):
        # DOGE's tick size makes many returns repeat exactly: ties in the ordinal patterns
        r = r_all[start : start + 500]
        shannon, tails, perm = _numpy_entropies(r, order, delay)
        assert shannon_entropy(r) == (shannon, tails)
        assert permutation_entropy(r, order, delay) == perm
