"""The noise MLE: our compiled log-likelihood and fit against statsmodels' UnobservedComponents."""

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from statsmodels.tools.sm_exceptions import ConvergenceWarning
from statsmodels.tsa.statespace.structural import UnobservedComponents

from theories import kalman
from theories.kalman import lltrend_loglike, lltrend_start, mle_noise


def real_windows(shared_data, per_symbol, bars=500):
    """`per_symbol` windows of `bars` log closes from each of the ten symbols' hourly candles."""
    windows = []
    for path in sorted((shared_data / "candles" / "binance-spot-1h").glob("*_USDT.csv.gz")):
        y = np.log(pd.read_csv(path).close.to_numpy(dtype=np.float64))
        for end in np.linspace(len(y) // 3, len(y), per_symbol).astype(int):
            windows.append(y[end - bars : end])
    return windows


def statsmodels_fit(scaled, maxiter=200):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        res = UnobservedComponents(scaled, level="lltrend").fit(
            disp=False, maxiter=maxiter, cov_type="none", low_memory=True
        )
    return np.asarray(res.params), res.mle_retvals["converged"]


def test_loglike_is_statsmodels_loglike_bit_for_bit_on_real_windows(shared_data):
    rng = np.random.default_rng(7)
    steady = {True: 0, False: 0}  # both paths of statsmodels' steady-state shortcut must be met
    for y in real_windows(shared_data, per_symbol=2):
        scaled = 100.0 * (y - y[0])
        model = UnobservedComponents(scaled, level="lltrend")
        terms = np.empty(len(scaled))
        # statsmodels' start, and points around the optimum's scale (log-percent variances: the
        # irregular and level ones near 0.01-1, the trend one many decades smaller)
        points = [np.asarray(model.start_params)]
        points += [10.0 ** rng.uniform([-4, -3, -12], [0.5, 0.5, -2]) for _ in range(12)]
        for params in points:
            ours, singular = lltrend_loglike(scaled, *params, terms)
            assert not singular
            assert ours == model.loglike(params)  # the same bits
            model.update(params)
            steady[bool(model.ssm._filter().converged)] += 1
    assert min(steady.values()) >= 20, steady


def test_start_is_statsmodels_start_on_real_windows(shared_data):
    for y in real_windows(shared_data, per_symbol=2):
        scaled = 100.0 * (y - y[0])
        np.testing.assert_array_equal(lltrend_start(scaled), UnobservedComponents(scaled, level="lltrend").start_params)


def test_fit_is_statsmodels_fit_on_real_windows(shared_data):
    for y in real_windows(shared_data, per_symbol=1):
        params, converged = statsmodels_fit(100.0 * (y - y[0]))
        assert converged
        assert mle_noise(y) == tuple(params * 1e-4)  # the same bits: the same optimiser path


def test_a_fit_not_converged_by_maxiter_raises(shared_data):
    y = real_windows(shared_data, per_symbol=1)[0]
    assert not statsmodels_fit(100.0 * (y - y[0]), maxiter=2)[1]
    with pytest.raises(RuntimeError, match="did not converge"):
        mle_noise(y, maxiter=2)


@pytest.mark.parametrize("params", [(0.0, 0.0, 0.0), (1e-14, 1e-14, 0.0), (1e-13, 0.0, 0.0), (1e-11, 0.0, 0.0),
                                    (0.0, 1e-12, 0.0), (0.0, 0.0, 1e-13), (0.0, 0.0, 1e-20)])
def test_singular_is_where_statsmodels_leaves_its_filter(shared_data, params):
    # statsmodels switches a step to its univariate filter where the forecast variance is below 1e-12
    line = 0.1 * np.arange(300.0)
    y = real_windows(shared_data, per_symbol=1)[3]
    for scaled in (100.0 * (y - y[0]), line):
        model = UnobservedComponents(scaled, level="lltrend")
        model.update(np.array(params))
        switched = bool(np.any(model.ssm._filter().univariate_filter))
        assert lltrend_loglike(scaled, *params, np.empty(len(scaled)))[1] == switched


def test_where_statsmodels_leaves_its_filter_the_fit_is_statsmodels_own(shared_data, monkeypatch):
    calls = []
    original = kalman._statsmodels_fit

    def spy(scaled, maxiter):
        calls.append(len(scaled))
        return original(scaled, maxiter)

    monkeypatch.setattr(kalman, "_statsmodels_fit", spy)
    # a gap: statsmodels' filter skips it, ours has no such step
    y = np.cumsum(np.random.default_rng(1).standard_normal(300)) * 0.01
    y[50] = np.nan
    params, converged = statsmodels_fit(100.0 * (y - y[0]))
    assert converged and mle_noise(y) == tuple(params * 1e-4)
    # the optimiser meets a point where statsmodels would switch filters (said by our filter, as if)
    y = real_windows(shared_data, per_symbol=1)[0]
    monkeypatch.setattr(kalman, "lltrend_loglike", lambda *args: (math.nan, True))
    params, converged = statsmodels_fit(100.0 * (y - y[0]))
    assert converged and mle_noise(y) == tuple(params * 1e-4)
    assert calls == [300, 500]
