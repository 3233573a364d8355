"""The Markov fit's compiled EM (theories.regime._em_search_and_fit) against statsmodels' own.

`fit_markov` is statsmodels' seeded start search (`_start_params_search`) then its EM (`_fit_em`) for
`MarkovRegression(100 r, k_regimes=2, trend="c", switching_variance=True)`, computed by compiled
loops for speed. Not bit for bit (probabilities instead of their logs, sums in another order), so the
parameters, log-likelihoods and iteration counts must agree to 1e-9 relative, on the windows the
replay fits (the last 1000 hourly candles closed by a weekly fit time).
"""

import warnings

import numpy as np
import pandas as pd
import pytest
from statsmodels.tsa.regime_switching.markov_regression import MarkovRegression

from theories.base import REFIT_EVERY_MS
from theories.regime import (
    EM_MAX_ITER,
    EM_TOLERANCE,
    _em,
    _em_search_and_fit,
    _filter_pass,
    _search_start,
    _statsmodels_em_fit,
    fit_markov,
)

WEEK = REFIT_EVERY_MS
# weekly fit times (ms) of the year replay, 2024-11-15..2025-11-15; the BTC one of 2025-08-28 has a
# start-search draw whose EM fails in statsmodels (it skips the draw; so must we)
SYMBOL_WEEKS = (
    ("BTC", 1756339200000), ("ETH", 1740614400000), ("SOL", 1731542400000), ("DOGE", 1760572800000),
    ("ADA", 1755734400000), ("AVAX", 1747872000000), ("XRP", 1744243200000), ("LTC", 1736985600000),
)
FAILING_DRAW = ("BTC", 1756339200000)


@pytest.fixture(scope="module")
def closes(shared_data):
    """Each symbol's hourly (open time, close) columns."""
    out = {}
    for s in {s for s, _ in SYMBOL_WEEKS}:
        df = pd.read_csv(shared_data / "candles" / "binance-spot-1h" / f"{s}_USDT.csv.gz")
        out[s] = df.time.to_numpy(), df.close.to_numpy(dtype=np.float64)
    return out


def fit_window(closes, symbol: str, fit_ms: int) -> np.ndarray:
    """The fit's data as `markov_fit_for` cuts it: returns in percent of the last 1000 candles closed by fit_ms."""
    time, close = closes[symbol]
    n = int(np.searchsorted(time, fit_ms - 3_600_000, side="right"))
    return 100.0 * np.diff(np.log(close[n - 1000 : n]))


def model(y: np.ndarray) -> MarkovRegression:
    return MarkovRegression(y, k_regimes=2, trend="c", switching_variance=True)


def assert_same_fit(got, want):
    """(params, llf per iteration, iterations, loglike) of the compiled and the statsmodels fit."""
    assert got is not None  # the compiled path answered itself
    params, llf, iterations, loglike = got
    assert iterations == want[2]
    np.testing.assert_allclose(llf, want[1], rtol=1e-9, atol=0)
    np.testing.assert_allclose(params, want[0], rtol=1e-9, atol=0)
    assert loglike == pytest.approx(want[3], rel=1e-9, abs=0)


@pytest.mark.parametrize(("symbol", "fit_ms"), SYMBOL_WEEKS)
def test_the_compiled_fit_is_statsmodels_search_and_em_on_real_symbol_weeks(closes, symbol, fit_ms):
    y = fit_window(closes, symbol, fit_ms)
    assert_same_fit(_em_search_and_fit(y, 10, 0, EM_MAX_ITER), _statsmodels_em_fit(y, 10, 0, EM_MAX_ITER))


def test_the_search_skips_a_draw_whose_em_fails_in_statsmodels(closes):
    y = fit_window(closes, *FAILING_DRAW)
    m = model(y)
    u = m.untransform_params(m.start_params)
    draws = np.random.default_rng(0).uniform(-0.5, 0.5, size=(6, 10)).T  # statsmodels' draws for rng=0
    with warnings.catch_warnings(), pytest.raises(np.linalg.LinAlgError):  # the case really is covered
        warnings.simplefilter("ignore")
        m._fit_em(u + draws[1], transformed=False, maxiter=5, return_params=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = m._start_params_search(10, rng=0)
    np.testing.assert_allclose(_search_start(y, 10, 0, np.empty((len(y), 2, 2))), want, rtol=1e-9, atol=0)


def test_one_em_iteration_is_statsmodels_from_a_rough_start(closes):
    y = fit_window(closes, "ETH", SYMBOL_WEEKS[1][1])
    m = model(y)
    start = np.array([0.9, 0.2, -0.05, 0.1, 0.2, 1.5])
    result, want = m._em_iteration(start)
    llf = np.empty(1)
    got, iterations, finite = _em(y, start, 1, EM_TOLERANCE, llf, np.empty((len(y), 2, 2)))
    assert finite and iterations == 1
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=0)
    assert llf[0] == pytest.approx(result.llf, rel=1e-12)


def test_the_log_likelihood_is_statsmodels_and_nan_where_statsmodels_underflows(closes):
    y = fit_window(closes, "SOL", SYMBOL_WEEKS[2][1])
    m = model(y)
    work = np.empty((len(y), 2, 2))
    for params in ([0.95, 0.1, 0.01, -0.2, 0.3, 2.0], [0.5, 0.5, 0.0, 0.0, 1.0, 1.0], [1.0, 0.0, 0.1, 0.0, 0.5, 3.0]):
        params = np.array(params)
        assert _filter_pass(y, params, work)[0] == pytest.approx(m.loglike(params), rel=1e-12)
    # variances so small that a move of a few percent is below exp(-745) in both states: statsmodels'
    # log-space filter gets a zero likelihood (its log-sum-exp starts its maximum at 0), then NaN
    tiny = np.array([0.9, 0.1, 0.0, 0.0, 1e-4, 2e-4])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert np.isnan(m.loglike(tiny))
    assert np.isnan(_filter_pass(y, tiny, work)[0])


def test_without_search_and_without_convergence_it_is_still_statsmodels(closes):
    y = fit_window(closes, "DOGE", SYMBOL_WEEKS[3][1])
    assert_same_fit(_em_search_and_fit(y, 0, 0, EM_MAX_ITER), _statsmodels_em_fit(y, 0, 0, EM_MAX_ITER))
    assert_same_fit(_em_search_and_fit(y, 10, 0, 3), _statsmodels_em_fit(y, 10, 0, 3))
    assert_same_fit(_em_search_and_fit(y, 3, 7, EM_MAX_ITER), _statsmodels_em_fit(y, 3, 7, EM_MAX_ITER))


def test_a_fit_through_non_finite_values_is_statsmodels_own_answer():
    # mostly flat prices: a state's variance collapses, statsmodels' EM raises, and so fit_markov says
    r = np.concatenate((np.zeros(500), [0.01], np.zeros(497), [-0.02]))
    assert _em_search_and_fit(100 * r, 10, 0, EM_MAX_ITER) is None
    with pytest.raises(np.linalg.LinAlgError) as raised:
        _statsmodels_em_fit(100 * r, 10, 0, EM_MAX_ITER)
    assert fit_markov(r).status == f"fit failed: {raised.value}"
