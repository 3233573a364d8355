import math
import warnings

import numpy as np
import pandas as pd
import pytest
from statsmodels.tsa.regime_switching.markov_regression import MarkovRegression

from theories.base import FitCache, TheoryContext, TheoryError, fit_time
from theories.candles import HOUR_MS, Candles
from theories.indicators import percentile_rank, rolling_std
from theories.regime import (
    BEAR_TREND,
    BREAKOUT,
    BULL_TREND,
    CONSOLIDATION,
    EM_MAX_ITER,
    LOW_VOL_RANGE,
    REGIMES,
    THEORY,
    MarkovFit,
    RegimeParams,
    classify_regimes,
    fit_markov,
    hamilton_filter,
    order_by_variance,
    regime,
    transition_matrix,
)

DAY_MS = 24 * HOUR_MS
T0 = 1_700_006_400_000  # a UTC midnight


def two_regime_returns(n: int, rng: np.random.Generator, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Log returns with Markov-switching volatility: 0.5% / bar (state 0), 2% / bar (state 1).

    P(stay) is 0.98 in the quiet state and 0.95 in the volatile one. Returns (returns, states).
    """
    p_stay = (0.98, 0.95)
    sigma = (0.005, 0.02)
    states = np.empty(n, dtype=np.int64)
    s = start
    u = rng.random(n)
    for t in range(n):
        states[t] = s
        if u[t] > p_stay[s]:
            s = 1 - s
    return rng.standard_normal(n) * np.take(sigma, states), states


def candles_from_returns(r: np.ndarray, start_ms: int = T0, wick: float = 0.001) -> Candles:
    """Hourly candles whose closes follow the log returns `r` from 100 (one more candle than returns)."""
    close = 100.0 * np.exp(np.concatenate(([0.0], np.cumsum(r))))
    open_ = np.concatenate(([close[0]], close[:-1]))
    n = len(close)
    return Candles(
        start_ms + HOUR_MS * np.arange(n), open_, np.maximum(open_, close) * (1 + wick),
        np.minimum(open_, close) * (1 - wick), close, np.ones(n), interval_ms=HOUR_MS, symbol="SIM/USDT",
    )


def context(history: Candles, window: int = 500, cache: FitCache | None = None) -> TheoryContext:
    return TheoryContext(
        symbol=history.symbol, at_ms=history.last_close_time, candles=history.tail(window), history=history,
        cache=cache,
    )


@pytest.fixture(scope="module")
def simulated():
    """2000 two-regime returns; the Markov model is fitted on the first 1000 only."""
    r, states = two_regime_returns(2000, np.random.default_rng(11))
    return r, states, fit_markov(r[:1000])


# --- (a) Markov switching -------------------------------------------------------------------


def test_hamilton_filter_matches_statsmodels_filtered_probabilities():
    r, _ = two_regime_returns(600, np.random.default_rng(1))
    y = 100 * r
    p00, p11, m, s2 = 0.97, 0.9, (0.02, -0.1), (0.3, 3.5)
    model = MarkovRegression(y, k_regimes=2, trend="c", switching_variance=True)
    # statsmodels' order: p[0->0], p[1->0], const[0], const[1], sigma2[0], sigma2[1]
    ref = model.filter(np.array([p00, 1 - p11, *m, *s2])).filtered_marginal_probabilities[:, 1]
    np.testing.assert_allclose(hamilton_filter(y, m, s2, (p00, p11)), ref, atol=1e-10)


def test_filtered_probabilities_at_t_do_not_change_when_later_returns_change():
    r, _ = two_regime_returns(400, np.random.default_rng(2))
    args = ((0.0, 0.0), (0.25, 4.0), (0.98, 0.95))
    before = hamilton_filter(100 * r, *args)
    altered = r.copy()
    altered[250:] = 0.05 * np.random.default_rng(3).standard_normal(150)  # a wild future
    after = hamilton_filter(100 * altered, *args)
    np.testing.assert_array_equal(before[:250], after[:250])
    assert not np.allclose(before[250:], after[250:])


def test_filter_survives_a_return_far_in_both_tails():
    y = np.array([0.1, -0.2, 80.0, 0.05, -500.0, 0.0])  # percent; 500% is 1e4 sigma of the quiet state
    f = hamilton_filter(y, (0.0, 0.0), (0.25, 4.0), (0.98, 0.95))
    assert np.all(np.isfinite(f)) and f[2] == pytest.approx(1.0) and f[4] == pytest.approx(1.0)


def test_a_simulated_two_regime_series_is_classified_mostly_right_out_of_sample(simulated):
    r, states, fit = simulated
    assert fit.ok
    # the fit recovers the simulated parameters (returns in percent)
    assert math.sqrt(fit.sigma2[0]) == pytest.approx(0.5, rel=0.1)
    assert math.sqrt(fit.sigma2[1]) == pytest.approx(2.0, rel=0.15)
    assert fit.p_stay[0] == pytest.approx(0.98, abs=0.02)
    assert fit.p_stay[1] == pytest.approx(0.95, abs=0.04)
    # filtered probabilities on the 1000 returns the fit never saw
    f = hamilton_filter(100 * r[1000:], fit.mean, fit.sigma2, fit.p_stay)
    accuracy = np.mean((f > 0.5) == (states[1000:] == 1))
    assert accuracy > 0.9
    # and they beat the trivial rule "always the more common state"
    assert accuracy > max(np.mean(states[1000:]), 1 - np.mean(states[1000:])) + 0.1


def test_states_are_ordered_by_variance_whichever_state_the_series_starts_in():
    rng = np.random.default_rng(5)
    for start in (0, 1):
        r, _ = two_regime_returns(600, rng, start=start)
        fit = fit_markov(r, search_reps=3, seed=start)
        assert fit.ok and fit.sigma2[0] < fit.sigma2[1]
        assert math.sqrt(fit.sigma2[1] / fit.sigma2[0]) == pytest.approx(4.0, rel=0.3)


def test_order_by_variance_swaps_every_parameter_together():
    got = order_by_variance((0.1, -0.3), (4.0, 0.25), (0.9, 0.97))
    assert got == ((-0.3, 0.1), (0.25, 4.0), (0.97, 0.9))
    assert order_by_variance(*got) == got


def test_markov_fields_report_per_bar_fractions_and_durations(simulated):
    r, _, fit = simulated
    c = candles_from_returns(r[-500:])
    res = regime(c.close, c.high, c.low, fit, fit_at_ms=123)
    assert res.markov_status == "ok" and res.fit_bars == 1000 and res.fit_time == 123
    assert res.low_vol_sigma == pytest.approx(math.sqrt(fit.sigma2[0]) / 100)
    assert res.high_vol_mean == pytest.approx(fit.mean[1] / 100)
    assert res.low_vol_duration == pytest.approx(1 / (1 - fit.p_stay[0]))
    assert res.high_vol_duration == pytest.approx(1 / (1 - fit.p_stay[1]))
    f = hamilton_filter(100 * c.log_returns(), fit.mean, fit.sigma2, fit.p_stay)
    assert res.p_high_vol == pytest.approx(f[-1]) and res.high_vol_share == pytest.approx(np.mean(f > 0.5))


def test_constant_or_broken_returns_give_no_fit_and_say_why():
    assert fit_markov(np.zeros(500)).status == "returns are constant"
    assert fit_markov(np.array([0.01, np.nan] * 200)).status == "returns are not finite"


def test_without_a_fit_the_markov_fields_are_empty_and_the_named_regime_remains(simulated):
    r, _, _ = simulated
    c = candles_from_returns(r[-500:])
    res = regime(c.close, c.high, c.low, MarkovFit("fit did not converge", 1000))
    assert res.p_high_vol is None and res.low_vol_duration is None and res.fit_time is None
    assert res.markov_status == "fit did not converge" and "fit did not converge" in res.label
    assert res.regime in REGIMES and "markov n/a" in res.summary()


# --- the theory: fit schedule, cache, no lookahead --------------------------------------------


def test_theory_fits_once_per_period_on_candles_closed_by_the_fit_time(simulated):
    r, _, _ = simulated
    hist = candles_from_returns(r[:1499])  # 1500 candles from a midnight
    at = hist.last_close_time
    ft = fit_time(at, RegimeParams().refit_every_ms)  # the default schedule
    assert T0 < ft < at  # the last period is partly in the data
    cache = FitCache()
    first = THEORY(context(hist, cache=cache))
    assert first.markov_status == "ok" and first.fit_time == ft
    assert first.fit_bars == 1000 - 1  # returns of the last 1000 candles closed by the fit time
    # an hour earlier, same period: the cached fit is reused
    earlier = hist.closed_by(at - HOUR_MS)
    again = THEORY(context(earlier, cache=cache))
    assert (cache.misses, cache.hits) == (1, 1)
    assert again.p_stay_low == first.p_stay_low
    # candles after the fit time do not change the fit (a fresh cache refits)
    changed = r[:1499].copy()
    n_after = int((at - ft) // HOUR_MS)
    changed[-n_after:] *= 3.0
    other = THEORY(context(candles_from_returns(changed), cache=FitCache()))
    assert other.fit_time == ft
    assert (other.low_vol_sigma, other.p_stay_high) == (first.low_vol_sigma, first.p_stay_high)
    assert other.p_high_vol != first.p_high_vol  # ...but the current window does


def test_too_little_history_for_the_fit_still_gives_the_named_regime():
    r, _ = two_regime_returns(250, np.random.default_rng(6))
    res = THEORY(context(candles_from_returns(r)))
    assert res.p_high_vol is None and "too little history" in res.markov_status
    assert res.regime in REGIMES


# --- (b) named regimes ----------------------------------------------------------------------


def steady(drift: float, n: int = 500, sigma: float = 0.002, seed: int = 7) -> Candles:
    return candles_from_returns(drift + sigma * np.random.default_rng(seed).standard_normal(n - 1))


@pytest.mark.parametrize(("drift", "name"), [(0.002, BULL_TREND), (-0.002, BEAR_TREND)])
def test_steadily_moving_series_is_a_trend(drift, name):
    c = steady(drift)
    res = regime(c.close, c.high, c.low, None)
    assert res.regime == name and abs(res.trend_score) > 1.5
    codes = classify_regimes(c.close, c.high, c.low, RegimeParams()).code
    assert np.mean(codes[codes >= 0] == REGIMES.index(name)) > 0.8
    assert res.p_stay > 0.8 and name in res.label


def test_a_quiet_flat_spell_after_a_volatile_one_is_consolidation_or_low_vol_range():
    rng = np.random.default_rng(8)
    r = np.concatenate((0.02 * rng.standard_normal(300), 0.002 * rng.standard_normal(199)))
    c = candles_from_returns(r)
    rules = classify_regimes(c.close, c.high, c.low, RegimeParams())
    quiet = rules.code[-150:]  # the quiet spell once the volatility window has left the noisy part
    quiet_names = (REGIMES.index(CONSOLIDATION), REGIMES.index(LOW_VOL_RANGE))
    assert np.isin(quiet, quiet_names).mean() > 0.9
    assert (quiet == REGIMES.index(CONSOLIDATION)).mean() > 0.3
    res = regime(c.close, c.high, c.low, None)
    assert res.regime in (CONSOLIDATION, LOW_VOL_RANGE) and res.vol_percentile < 0.45
    assert res.breakout_direction is None


@pytest.mark.parametrize(("jump", "word", "side"), [(0.05, "upward", "up"), (-0.05, "downward", "down")])
def test_a_jump_out_of_a_range_is_a_breakout(jump, word, side):
    rng = np.random.default_rng(9)
    r = 0.003 * rng.standard_normal(499)
    r[-1] = jump
    c = candles_from_returns(r)
    res = regime(c.close, c.high, c.low, None)
    assert res.regime == BREAKOUT and word in res.label and res.breakout_direction == side
    assert res.vol_expansion >= 1.5


def test_new_highs_without_expanding_volatility_are_no_breakout():
    c = steady(0.002)
    p = RegimeParams()
    rules = classify_regimes(c.close, c.high, c.low, p)
    live = rules.code >= 0
    n = p.breakout_lookback
    prior_high = np.array([-np.inf] * n + [c.high[i - n : i].max() for i in range(n, len(c.close))])
    new_high = live & (c.close > prior_high)
    is_breakout = rules.code == REGIMES.index(BREAKOUT)
    assert new_high.mean() > 0.3  # a steady climb keeps making new highs...
    assert is_breakout.mean() < 0.05  # ...but volatility seldom expands, so few are breakouts
    assert np.all(rules.vol_expansion[is_breakout] >= p.vol_expansion)
    assert not np.any(is_breakout & (rules.vol_expansion < p.vol_expansion))


def test_breakout_takes_precedence_over_trend():
    c = steady(0.002)
    r = np.diff(np.log(c.close))
    r[-1] = 0.06
    c = candles_from_returns(r)
    rules = classify_regimes(c.close, c.high, c.low, RegimeParams())
    assert rules.trend_score[-1] > 1.5 and rules.code[-1] == REGIMES.index(BREAKOUT)


def test_trend_score_is_the_lookback_move_over_the_window_sigma_times_root_lookback():
    c = steady(0.001, n=300)
    rules = classify_regimes(c.close, c.high, c.low, RegimeParams(trend_lookback=30))
    lc = np.log(c.close)
    sigma = np.diff(lc).std(ddof=1)
    for i in (30, 200, 299):
        assert rules.trend_score[i] == pytest.approx((lc[i] - lc[i - 30]) / (sigma * math.sqrt(30)), rel=1e-12)
    assert np.isnan(rules.trend_score[:30]).all()


def test_a_random_walk_is_called_a_trend_about_as_often_as_a_normal_passes_the_threshold():
    # z is about N(0, 1) for a driftless walk: P(|z| >= 1.5) = 13.4%
    shares = []
    for seed in range(20):
        c = candles_from_returns(0.01 * np.random.default_rng(100 + seed).standard_normal(499))
        rules = classify_regimes(c.close, c.high, c.low, RegimeParams())
        z = rules.trend_score[rules.code >= 0]
        shares.append(np.mean(np.abs(z) >= 1.5))
    assert np.mean(shares) == pytest.approx(0.134, abs=0.04)


def test_vol_percentile_is_the_rank_of_the_realised_volatility_in_the_window():
    c = steady(0.0, n=400)
    p = RegimeParams()
    rules = classify_regimes(c.close, c.high, c.low, p)
    vol = rolling_std(np.concatenate(([np.nan], np.diff(np.log(c.close)))), p.vol_window)
    for i in (100, 250, 399):
        assert rules.vol_percentile[i] == pytest.approx(percentile_rank(vol, vol[i]))
    assert np.all((rules.vol_percentile[p.vol_window :] > 0) & (rules.vol_percentile[p.vol_window :] <= 1))


def test_transition_matrix_counts_consecutive_labels_with_laplace_smoothing():
    # transitions 0->0, 0->1, 1->0; with +1 per cell: row 0 = (2, 2) / 4, row 1 = (2, 1) / 3
    P = transition_matrix(np.array([0, 0, 1, 0]), k=2, prior=1.0)
    np.testing.assert_allclose(P, [[0.5, 0.5], [2 / 3, 1 / 3]])
    # an unseen regime's row is the uniform prior
    P6 = transition_matrix(np.array([0, 1, 1, 2, 0, 1]))
    np.testing.assert_allclose(P6.sum(axis=1), 1.0)
    np.testing.assert_allclose(P6[5], 1 / 6)


def test_stay_and_next_come_from_the_current_regimes_row(simulated):
    r, _, _ = simulated
    c = candles_from_returns(r[-500:])
    res = regime(c.close, c.high, c.low, None)
    codes = classify_regimes(c.close, c.high, c.low, RegimeParams()).code
    codes = codes[codes >= 0]
    row = transition_matrix(codes)[REGIMES.index(res.regime)]
    assert res.p_stay == pytest.approx(row[REGIMES.index(res.regime)])
    assert res.next_regime != res.regime and res.p_next == pytest.approx(row[REGIMES.index(res.next_regime)])
    assert res.p_next == max(v for j, v in enumerate(row) if REGIMES[j] != res.regime)
    assert 1 <= res.regime_age <= res.labelled_bars == len(codes)
    assert np.all(codes[-res.regime_age :] == codes[-1]) and codes[-res.regime_age - 1] != codes[-1]


def test_constant_closes_are_an_error_not_a_regime():
    c = candles_from_returns(np.zeros(300))
    with pytest.raises(TheoryError, match="constant"):
        regime(c.close, c.high, c.low, None)


def test_too_few_bars_are_an_error():
    r, _ = two_regime_returns(199, np.random.default_rng(4))
    c = candles_from_returns(r)
    with pytest.raises(TheoryError, match="at least"):
        THEORY(context(c, window=100))
    with pytest.raises(TheoryError, match="classified bars"):
        regime(c.close, c.high, c.low, None, RegimeParams(trend_lookback=150))


def test_params_are_validated():
    with pytest.raises(ValueError):
        RegimeParams(consolidation_vol_pct=0.6, high_vol_pct=0.5)
    with pytest.raises(ValueError):
        RegimeParams(fit_window=250, min_fit_bars=300)


# --- real data ------------------------------------------------------------------------------


def test_theory_runs_on_real_btc_candles(shared_data):
    df = pd.read_csv(shared_data / "candles" / "binance-spot-1h" / "BTC_USDT.csv.gz").tail(2000)
    hist = Candles(df.time, df.open, df.high, df.low, df.close, df.volume, symbol="BTC/USDT")
    ctx = context(hist, cache=FitCache())
    res = THEORY(ctx)
    assert res.regime in REGIMES and res.next_regime in REGIMES and res.labelled_bars > 400
    assert res.markov_status == "ok", res.markov_status
    assert 0 <= res.p_high_vol <= 1 and 0 < res.low_vol_sigma < res.high_vol_sigma < 0.05
    assert res.low_vol_duration >= 1 and res.high_vol_duration >= 1
    assert res.fit_time <= ctx.at_ms and res.fit_bars > 900
    assert res.regime in res.summary() and res.label
    assert THEORY(ctx) == res and ctx.cache.hits == 1  # warm: same answer from the cached fit


def _markov_params(model: MarkovRegression, params: np.ndarray) -> np.ndarray:
    """A statsmodels fit's parameters as fit_markov reports them (states ordered by variance)."""
    par = dict(zip(model.param_names, params, strict=True))
    got = order_by_variance((par["const[0]"], par["const[1]"]), (par["sigma2[0]"], par["sigma2[1]"]),
                            (par["p[0->0]"], 1.0 - par["p[1->0]"]))
    return np.array(got).ravel()


def _real_returns(shared_data, symbol: str) -> np.ndarray:
    df = pd.read_csv(shared_data / "candles" / "binance-spot-1h" / f"{symbol}.csv.gz").tail(1001)
    return np.diff(np.log(df.close.to_numpy()))


def test_a_fit_is_statsmodels_own_search_and_em_on_real_data(shared_data):
    # statsmodels' public fit runs the same seeded search, then EM for `em_iter` iterations (stopping
    # early only if the likelihood stops rising), then BFGS: with em_iter = the iterations our fit took
    # and maxiter=0 BFGS does not move, so it must give our fit. This fails if statsmodels changes the
    # private `_start_params_search` / `_fit_em` that fit_markov computes (tests/test_regime_em.py
    # checks our compiled EM against those two).
    for symbol in ("ETH_USDT", "SOL_USDT"):
        r = _real_returns(shared_data, symbol)
        fit = fit_markov(r, search_reps=10, seed=0)
        assert fit.ok and 2 <= fit.em_iterations < EM_MAX_ITER
        model = MarkovRegression(100 * r, k_regimes=2, trend="c", switching_variance=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = model.fit(search_reps=10, rng=0, em_iter=fit.em_iterations, maxiter=0, cov_type="none")
        want = _markov_params(model, res.params)
        # not to the bit: BFGS's stage maps the parameters to its unconstrained space and back (~3e-16)
        np.testing.assert_allclose(np.array((fit.mean, fit.sigma2, fit.p_stay)).ravel(), want, rtol=1e-12)
        assert fit.loglike == pytest.approx(res.llf, rel=1e-12)


def test_the_em_fit_is_at_statsmodels_maximum_likelihood_on_real_data(shared_data):
    # EM stops at a relative likelihood change of 1e-8: a little short of the maximum BFGS polishes to
    for symbol in ("BTC_USDT", "SOL_USDT", "DOGE_USDT"):
        r = _real_returns(shared_data, symbol)
        fit = fit_markov(r)
        model = MarkovRegression(100 * r, k_regimes=2, trend="c", switching_variance=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mle = model.fit(search_reps=10, rng=0, cov_type="none")
        assert fit.ok and mle.mle_retvals["converged"]
        assert mle.llf - 0.05 < fit.loglike <= mle.llf + 1e-6
        np.testing.assert_allclose(np.array((fit.sigma2, fit.p_stay)).ravel(), _markov_params(model, mle.params)[2:],
                                   rtol=0.05)


def test_a_fit_that_has_not_converged_within_its_iterations_is_not_used(simulated):
    r, _, fit = simulated
    assert fit.ok and fit.em_iterations > 3
    assert fit_markov(r[:1000], max_iter=3).status == "fit did not converge"
    assert fit_markov(r[:1000], max_iter=EM_MAX_ITER) == fit
