"""Market regime: a two-state Markov switching model of returns, and six named regimes from rules.

(a) Markov switching (Hamilton 1989, Econometrica 57(2); statsmodels `MarkovRegression`): hourly
    log returns in percent follow N(mu_s, sigma2_s) with the state s following a two-state Markov
    chain. The states are identified by their variance, so state 0 is always the low-volatility
    one whichever way the fit labelled them. The fit is maximum likelihood by EM (statsmodels' EM
    steps, after its seeded random start search), run until the likelihood's relative change per
    iteration is 1e-8, without statsmodels' BFGS polish (see `fit_markov`; evidence below). It is
    computed by our compiled loops, not by statsmodels, because that is ~28x cheaper (below); they
    agree with statsmodels' to 1e-9 on every symbol-week of a year's replay, and a test checks
    them against statsmodels on real windows. It is refreshed once per `refit_every_ms` on candles
    closed by that fit time only, and cached.
    The current window is then run through a hand-written two-state Hamilton filter with the
    cached parameters. Only *filtered* probabilities P(s_t | r_1..r_t) are reported: smoothed ones
    use later returns. When the fit is impossible (too little history), fails or does not converge
    within its EM iterations, or is degenerate (a zero variance, an absorbing state), the Markov
    fields are None, `markov_status` says why and the named-regime part is still reported.
    Cost (CPU, the 1000-bar fits of a year's replay, 10 symbols, 2-core machine): a median 8 ms per
    fit (statsmodels: 224 ms), 5 ms of it the start search (10 draws x 5 EM iterations), the rest
    12-218 EM iterations (median 48) of ~0.1 ms each.
    A warm start from the previous period's parameters would make each fit depend on which fits
    ran before it in the process, so a resumed or split replay would differ from an uninterrupted
    one; it is not used. For long replays the refit schedule is the lever.
    Evidence for EM without BFGS, against the BFGS-polished fit it replaced (4 symbols x 4 weeks,
    2,688 hourly snapshots, Oct-Nov 2025, statsmodels' EM): CPU per fit 351 -> 151 ms (mean);
    every fit converged in both; log-likelihood lower by 0.003 on average (at most 0.016);
    named-regime labels (they carry the Markov state) identical on 99.8% of hours; |P(high-vol)
    difference| 0.0016 on average (at most 0.014). Without the start search (`search_reps=0`) a fit
    costs about half (compiled: 4 ms) with the same agreement on these data (labels 99.7%).

(b) Six named regimes, classified bar by bar over the window from these rules, first match wins:
    1. breakout: the close is beyond the high (low) of the prior `breakout_lookback` bars and
       volatility is expanding: the RMS return of the last `fast_vol_window` bars is at least
       `vol_expansion` times that of the `vol_window` bars before them;
    2. bull trend / bear trend: trend score z >= `trend_threshold` / z <= -`trend_threshold`, where
       z = (ln C_t - ln C_{t-L}) / (sigma sqrt(L)), L = `trend_lookback` and sigma the standard
       deviation of all the window's returns: the L-bar move in units of the window's typical L-bar
       move. It is about N(0, 1) for a driftless random walk, so the default 1.5 is passed by ~13%
       of its bars (and by ~12% of real hourly bars of BTC, ETH and SOL, 2018-2025, in 500-bar
       windows). A move small against the window's volatility is not a trend, however smooth;
    3. consolidation: volatility percentile <= `consolidation_vol_pct` and |z| < `consolidation_trend`;
    4. high-vol range if the volatility percentile is above `high_vol_pct`, else low-vol range.
    The volatility percentile is the rank of the `vol_window`-bar realised volatility among its
    values over the window (share at or below). The empirical transition matrix of consecutive
    labels, with an additive (Laplace) prior of `transition_prior` per cell, gives P(stay in the
    current regime) and the most likely different next regime. It is row-stochastic,
    P[i, j] = P(next = j | now = i), unlike statsmodels' column-stochastic `regime_transition`.

Label wording: P(stay) >= 0.8 "persistent", >= 0.5 "may persist", else "likely to change";
Markov P(high-vol) >= 0.8 "high-vol state", <= 0.2 "low-vol state", else "between vol states".
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import Field, model_validator
from statsmodels.tools.rng_qrng import check_random_state
from statsmodels.tsa.regime_switching.markov_regression import MarkovRegression

from theories.base import (
    BARS,
    LABEL,
    LOG_RETURN,
    PROBABILITY,
    RATIO,
    REFIT_EVERY_MS,
    SIGMA,
    TIME,
    Theory,
    TheoryContext,
    TheoryError,
    TheoryParams,
    TheoryResult,
    dec,
    fingerprint,
    fit_time,
    num,
    unit,
)
from theories.candles import HOUR_MS
from theories.jit import compiled
from theories.pairwise import sample_std

BREAKOUT = "breakout"
BULL_TREND = "bull trend"
BEAR_TREND = "bear trend"
CONSOLIDATION = "consolidation"
HIGH_VOL_RANGE = "high-vol range"
LOW_VOL_RANGE = "low-vol range"
REGIMES: tuple[str, ...] = (BULL_TREND, BEAR_TREND, HIGH_VOL_RANGE, LOW_VOL_RANGE, BREAKOUT, CONSOLIDATION)
_CODE = {name: i for i, name in enumerate(REGIMES)}

MIN_LABELLED_BARS = 100  # fewer classified bars give a transition matrix of mostly prior
_DEGENERATE_P = 1e-6  # a state that (almost) never leaves or has (almost) no variance is not a fit


class RegimeParams(TheoryParams):
    # (a) Markov switching fit
    fit_window: int = Field(1000, ge=200, le=20_000, description="Most recent candles the Markov fit uses, in bars.")
    min_fit_bars: int = Field(300, ge=100, description="Fewer candles closed by the fit time: no Markov part.")
    refit_every_ms: int = Field(REFIT_EVERY_MS, ge=HOUR_MS, description="Refit schedule of the Markov model, ms.")
    search_reps: int = Field(10, ge=0, le=100, description="Random start-parameter draws (5 EM steps each) before EM.")
    seed: int = Field(0, ge=0, description="Seed of the start-parameter search, so fits are reproducible.")
    # (b) named regimes
    trend_lookback: int = Field(48, ge=5, le=1000, description="L: bars of the trend score's move.")
    trend_threshold: float = Field(1.5, gt=0, description="|trend score| at or above this is a trend, in sigma.")
    vol_window: int = Field(24, ge=5, le=1000, description="Bars of the realised volatility that is ranked.")
    high_vol_pct: float = Field(0.5, gt=0, lt=1, description="Volatility percentile above this: high-vol range.")
    consolidation_vol_pct: float = Field(0.2, gt=0, lt=1, description="Volatility percentile at or below this, ...")
    consolidation_trend: float = Field(1.0, gt=0, description="... and |trend score| below this: consolidation.")
    breakout_lookback: int = Field(24, ge=2, le=1000, description="Prior bars whose high/low range a breakout leaves.")
    fast_vol_window: int = Field(6, ge=2, le=200, description="Recent bars whose RMS return tests expansion.")
    vol_expansion: float = Field(1.5, gt=1, description="Recent / prior RMS return at or above this: expanding.")
    transition_prior: float = Field(1.0, gt=0, description="Additive (Laplace) count added to every transition.")

    @model_validator(mode="after")
    def _consolidation_is_quieter_than_high_vol(self) -> RegimeParams:
        if self.consolidation_vol_pct > self.high_vol_pct:
            raise ValueError("consolidation_vol_pct must not exceed high_vol_pct")
        if self.min_fit_bars > self.fit_window:
            raise ValueError("min_fit_bars must not exceed fit_window")
        return self

    @property
    def warmup(self) -> int:
        """Index of the first bar with every input of the rules defined."""
        return max(self.trend_lookback, self.vol_window, self.fast_vol_window + self.vol_window, self.breakout_lookback)


class RegimeResult(TheoryResult):
    # (b) named regimes
    regime: str = unit(LABEL, f"Named regime of the last bar, one of: {', '.join(REGIMES)}.")
    breakout_direction: Literal["up", "down"] | None = unit(
        LABEL, "For a breakout: which side of the prior range the close left by; None otherwise."
    )
    trend_score: float = unit(SIGMA, "L-bar log move over (the window's return std x sqrt(L)).")
    vol_percentile: float = unit(PROBABILITY, "Share of the window's realised-volatility values at or below the last.")
    vol_expansion: float | None = unit(
        RATIO, "RMS return of the last `fast_vol_window` bars over that of the `vol_window` before (None: flat)."
    )
    regime_age: int = unit(BARS, "Consecutive bars, up to the last, classified in the current regime.")
    p_stay: float = unit(PROBABILITY, "Empirical (smoothed) probability the next bar is in the same regime.")
    next_regime: str = unit(LABEL, "Most likely different regime for the next bar.")
    p_next: float = unit(PROBABILITY, "Empirical (smoothed) probability of moving to `next_regime` next bar.")
    labelled_bars: int = unit(BARS, "Bars classified (the window less the warm-up).")
    # (a) Markov switching, None when the fit is unavailable (see markov_status)
    markov_status: str = unit(LABEL, "'ok', or why there is no Markov part.")
    p_high_vol: float | None = unit(PROBABILITY, "Filtered probability of the high-volatility state at the last bar.")
    high_vol_share: float | None = unit(PROBABILITY, "Share of window bars with filtered P(high-vol) above one half.")
    low_vol_mean: float | None = unit(LOG_RETURN, "Mean log return per bar in the low-volatility state.")
    low_vol_sigma: float | None = unit(LOG_RETURN, "Std of log returns per bar in the low-volatility state.")
    high_vol_mean: float | None = unit(LOG_RETURN, "Mean log return per bar in the high-volatility state.")
    high_vol_sigma: float | None = unit(LOG_RETURN, "Std of log returns per bar in the high-volatility state.")
    p_stay_low: float | None = unit(PROBABILITY, "P(low-vol state next bar | low-vol state now).")
    p_stay_high: float | None = unit(PROBABILITY, "P(high-vol state next bar | high-vol state now).")
    low_vol_duration: float | None = unit(BARS, "Expected stay in the low-vol state, 1 / (1 - p_stay_low).")
    high_vol_duration: float | None = unit(BARS, "Expected stay in the high-vol state, 1 / (1 - p_stay_high).")
    fit_bars: int | None = unit(BARS, "Returns the Markov fit used (one fewer than its candles).")
    fit_time: int | None = unit(TIME, "The Markov fit used candles closed by this time, epoch ms.")

    def summary(self) -> str:
        # the regime's name is in the label; the numbers part carries only what the label does not say.
        # Its volatility percentile (24-bar vol ranked over the window) is the one the variance line shows.
        named = (
            f"age {self.regime_age}, trend z {num(self.trend_score, 2, True)}; "
            f"stay {dec(self.p_stay)}, next {self.next_regime} {dec(self.p_next)}"
        )
        if self.p_high_vol is None:
            markov = "markov n/a"  # the label says why
        else:
            markov = f"markov P(hi-vol) {dec(self.p_high_vol)}"  # the states' parameters stay in the result
        return f"{named}; {markov} -> {self.label}"


# --- (a) Markov switching -------------------------------------------------------------------


@dataclass(frozen=True)
class MarkovFit:
    """A two-state fit on returns in *percent*, states ordered by variance (0 = low volatility).

    `status` is "ok" or why there are no parameters; the arrays are None unless it is "ok".
    """

    status: str
    n: int
    mean: tuple[float, float] | None = None  # percent per bar
    sigma2: tuple[float, float] | None = None  # percent squared per bar
    p_stay: tuple[float, float] | None = None  # P(s_t = i | s_t-1 = i)
    loglike: float | None = None
    em_iterations: int | None = None  # EM iterations the fit took

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def order_by_variance(
    mean: tuple[float, float], sigma2: tuple[float, float], p_stay: tuple[float, float]
) -> tuple[tuple[float, float], tuple[float, float], tuple[float, float]]:
    """The same two-state model with state 0 the lower-variance one (labels swap between fits)."""
    if sigma2[0] <= sigma2[1]:
        return mean, sigma2, p_stay
    return (mean[1], mean[0]), (sigma2[1], sigma2[0]), (p_stay[1], p_stay[0])


EM_TOLERANCE = 1e-8  # relative change of the log-likelihood between EM iterations that ends a fit
EM_MAX_FALL = 1e-6  # a larger relative fall of the log-likelihood in the last EM iteration is a failed fit
EM_MAX_ITER = 1000  # a fit still changing after this many EM iterations has not converged (real ones take 24-77)


def fit_markov(returns: np.ndarray, search_reps: int = 10, seed: int = 0, max_iter: int = EM_MAX_ITER) -> MarkovFit:
    """Fit `MarkovRegression(100 r, k_regimes=2, trend="c", switching_variance=True)` by EM.

    Returns in percent keep the fit well scaled. The start is statsmodels' random start search
    (`search_reps` draws around its default start, 5 EM iterations each, the best likelihood kept),
    seeded so the same data give the same fit; then EM runs until the log-likelihood's relative change
    between iterations, 2 (l_i - l_{i-1}) / |l_i + l_{i-1}|, is `EM_TOLERANCE` or less (statsmodels'
    rule). A fit still changing after `max_iter` iterations, or whose likelihood fell by more than
    `EM_MAX_FALL` in its last iteration, is reported as not converged, never used.

    statsmodels' public `fit` runs EM only for a fixed number of iterations, or until the likelihood
    stops rising at all (tolerance 0: ~2.5x the CPU of the 1e-8 tolerance on real data), before its
    BFGS stage, and does not report whether EM converged. So the fit is that of the two private
    methods `fit` itself calls, `_start_params_search` and `_fit_em`, computed by `_em_search_and_fit`
    (compiled; `_statsmodels_em_fit` calls statsmodels where a value on the way is not finite). The
    tests check the compiled fit against those methods, and those against the public `fit`.
    """
    y = 100.0 * np.asarray(returns, dtype=np.float64)
    n = len(y)
    if not np.all(np.isfinite(y)):
        return MarkovFit("returns are not finite", n)
    if n < 2 or np.ptp(y) == 0:
        return MarkovFit("returns are constant", n)
    fitted = _em_search_and_fit(y, search_reps, seed, max_iter)
    if fitted is None:  # statsmodels' own path decides what a fit through non-finite values gives
        try:
            fitted = _statsmodels_em_fit(y, search_reps, seed, max_iter)
        except (ValueError, np.linalg.LinAlgError, FloatingPointError) as e:
            return MarkovFit(f"fit failed: {e}", n)
    params, llf, iterations, loglike = fitted
    change = 2 * (llf[-1] - llf[-2]) / abs(llf[-1] + llf[-2]) if len(llf) >= 2 else math.inf
    # statsmodels' EM holds the initial state at the chain's stationary distribution, so its steps are
    # not exact maximisers and the likelihood can dip by ~1e-8 near the optimum; that ends the
    # iterations too. A larger fall is not convergence.
    if not -EM_MAX_FALL <= change <= EM_TOLERANCE:
        return MarkovFit("fit did not converge", n)
    p00, p10, const0, const1, var0, var1 = (float(v) for v in params)
    mean, sigma2, p_stay = order_by_variance((const0, const1), (var0, var1), (p00, 1.0 - p10))
    values = (*mean, *sigma2, *p_stay)
    if not all(math.isfinite(v) for v in values):
        return MarkovFit("fit gave non-finite parameters", n)
    if min(sigma2) <= _DEGENERATE_P * max(sigma2):
        return MarkovFit("degenerate fit: a state has no variance", n)
    if max(p_stay) >= 1.0 - _DEGENERATE_P:
        return MarkovFit("degenerate fit: a state never ends", n)
    return MarkovFit("ok", n, mean=mean, sigma2=sigma2, p_stay=p_stay, loglike=float(loglike),
                     em_iterations=int(iterations))


# Parameters in statsmodels' order (`MarkovRegression.param_names` for this model):
# p[0->0], p[1->0], const[0], const[1], sigma2[0], sigma2[1].
_SEARCH_EM_ITER = 5  # `_start_params_search`'s default EM iterations per draw
_SEARCH_TOLERANCE = 1e-6  # `_fit_em`'s default tolerance, which the search's EM runs use


def _statsmodels_em_fit(
    y: np.ndarray, search_reps: int, seed: int, max_iter: int
) -> tuple[np.ndarray, np.ndarray, int, float]:
    """statsmodels' search and EM: (parameters, log-likelihood before each iteration, iterations, the
    log-likelihood at the parameters). May raise what statsmodels raises."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # overflow and rescaling warnings: fit_markov checks the result instead
        model = MarkovRegression(y, k_regimes=2, trend="c", switching_variance=True)
        start = model._start_params_search(search_reps, rng=seed) if search_reps else model.start_params
        res = model._fit_em(start, maxiter=max_iter, tolerance=EM_TOLERANCE)
    return np.asarray(res.params, dtype=np.float64), res.mle_retvals.llf, res.mle_retvals.iter, res.llf


def _em_search_and_fit(
    y: np.ndarray, search_reps: int, seed: int, max_iter: int
) -> tuple[np.ndarray, np.ndarray, int, float] | None:
    """`_statsmodels_em_fit` computed by the compiled `_em`: the same start, the same random draws
    (statsmodels' generator and calls), the same EM steps and stopping rules. None where the EM
    from the chosen start meets a value that is not finite: statsmodels then raises or ends on a
    NaN, and `fit_markov` asks statsmodels itself what that gives.

    Why: statsmodels spends ~1.7 ms of Python per EM iteration on a 1000-bar window (its filter and
    smoother in log space, wrapped in array bookkeeping): a median 224 ms per fit of the replay's
    windows (CPU), this 8 ms. It is not bit-identical (sums in another order, probabilities instead
    of their logs), but EM converges to its fixed point whatever the rounding on the way: on all 530
    symbol-weeks of a year's replay (10 symbols, Nov 2024 - Nov 2025) the statuses and iteration
    counts are statsmodels', the parameters agree to 6e-11 relative and the log-likelihoods to 3e-15
    (tests/test_regime_em.py checks real windows).
    """
    work = np.empty((len(y), 2, 2))  # the filter's backward weights, reused by every pass
    if search_reps:
        start = _search_start(y, search_reps, seed, work)
    else:
        start = _default_start(y)
    llf = np.empty(max(max_iter, 0))
    params, iterations, finite = _em(y, start, max_iter, EM_TOLERANCE, llf, work)
    if not finite:
        return None
    loglike = _filter_pass(y, params, work)[0]
    if not math.isfinite(loglike):
        return None
    return params, llf[:iterations], iterations, loglike


def _default_start(y: np.ndarray) -> np.ndarray:
    """`MarkovRegression.start_params`: equal transition probabilities, means 0 and half the OLS
    constant, variances a tenth of and all of the residual variance."""
    beta = float(np.mean(y))  # the OLS constant, `pinv(ones) @ y`
    variance = float(np.var(y - beta))
    return np.array([0.5, 0.5, 0.0 * beta, 0.5 * beta, variance / 10.0, variance])


def _transform(u: np.ndarray) -> np.ndarray:
    """statsmodels' `transform_params`: logistic transition probabilities, squared variances."""
    p = u.copy()
    for i in (0, 1):
        top = max(0.0, u[i])  # logsumexp([0, u_i]) with the maximum taken out
        p[i] = math.exp(u[i] - (top + math.log(math.exp(-top) + math.exp(u[i] - top))))
    p[4:] = u[4:] ** 2
    return p


def _untransform(p: np.ndarray) -> np.ndarray:
    """statsmodels' `untransform_params`, the inverse of `_transform`."""
    with np.errstate(divide="ignore", invalid="ignore"):  # p = 0 or 1 map to infinities, as there
        u = p.copy()
        u[:2] = -np.log(1.0 / p[:2] - 1.0)
        u[4:] = p[4:] ** 0.5
    return u


def _search_start(y: np.ndarray, reps: int, seed: int, work: np.ndarray) -> np.ndarray:
    """`_start_params_search(reps, rng=seed)`: uniform(-0.5, 0.5) draws added to the unconstrained
    default start, `_SEARCH_EM_ITER` EM iterations from each, the best likelihood kept. A draw whose
    EM meets a value that is not finite is skipped, as statsmodels skips it (its EM step raises on
    NaN probabilities, and a NaN likelihood is never the better one)."""
    start = _untransform(_default_start(y))
    rng = check_random_state(seed)
    variates = np.zeros((reps, len(start)))
    for i in range(len(start)):  # one parameter's draws at a time, as statsmodels makes them
        variates[:, i] = rng.uniform(-0.5, 0.5, size=reps)  # statsmodels multiplies by its scale, 1.0
    best = start
    best_llf = _filter_pass(y, _transform(start), work)[0]
    llf = np.empty(_SEARCH_EM_ITER)
    for i in range(reps):
        proposed, _, finite = _em(y, _transform(start + variates[i]), _SEARCH_EM_ITER, _SEARCH_TOLERANCE, llf, work)
        proposed_llf = _filter_pass(y, proposed, work)[0] if finite else math.nan
        if proposed_llf > best_llf:  # False for a NaN on either side
            best_llf = proposed_llf
            best = _untransform(proposed)
    return _transform(best)


@compiled
def _filter_pass(y, params, weights):
    """Hamilton filter of the two-state model at `params` (statsmodels' order): (log-likelihood,
    P(s_n-1 = 0 | all y), P(s_n-1 = 1 | all y)), and in `weights[t, j, k]` the smoother's
    P(s_t-1 = k | s_t = j, y_..t-1).

    statsmodels' `_filter` computed in probabilities rather than their logs: transition
    probabilities floored at 1e-20 as there, the initial state at the chain's stationary
    distribution (floored at 1e-20) carried one step through the chain (statsmodels' filter tracks
    pairs of states, and so starts from the pair (s_0, s_-1)), and each step's two normal densities
    scaled by the larger so that neither underflows alone. The log-likelihood is NaN where
    statsmodels' would not be finite (numba raises on a division by zero where numpy gives inf or NaN,
    so the divisions are guarded).
    """
    p00, p10, c0, c1, v0, v1 = params[0], params[1], params[2], params[3], params[4], params[5]
    if not (v0 > 0 and v1 > 0):  # statsmodels: the log of a variance <= 0 (or NaN) is not finite
        return math.nan, math.nan, math.nan
    p01, p11 = 1.0 - p00, 1.0 - p10  # p_jk = P(s_t = k | s_t-1 = j)
    if p10 + p01 != 0:
        pi0, pi1 = max(p10 / (p10 + p01), 1e-20), max(p01 / (p10 + p01), 1e-20)
    else:  # both states absorbing: statsmodels' pinv solution of the stationary equations
        pi0 = pi1 = 0.5
    # t_kj = P(s_t = k | s_t-1 = j), floored as statsmodels' log filter does
    t00, t01, t10, t11 = max(p00, 1e-20), max(p10, 1e-20), max(p01, 1e-20), max(p11, 1e-20)
    m0 = t00 * pi0 + t01 * pi1  # P(s_-1 = 0): the stationary start one step on
    m1 = t10 * pi0 + t11 * pi1
    norm0 = 0.5 * math.log(2 * math.pi * v0)
    norm1 = 0.5 * math.log(2 * math.pi * v1)
    llf = 0.0
    for t in range(len(y)):
        a00, a01, a10, a11 = t00 * m0, t01 * m1, t10 * m0, t11 * m1  # P(s_t = j, s_t-1 = k | y_..t-1)
        q0, q1 = a00 + a01, a10 + a11
        weights[t, 0, 0], weights[t, 0, 1] = a00 / q0, a01 / q0
        weights[t, 1, 0], weights[t, 1, 1] = a10 / q1, a11 / q1
        ll0 = -0.5 * (y[t] - c0) ** 2 / v0 - norm0
        ll1 = -0.5 * (y[t] - c1) ** 2 / v1 - norm1
        top = max(ll0, ll1)
        # statsmodels' log-sum-exp of the four log(a_jk) + ll_j starts its running maximum at 0: where
        # all four are below about -745 their exps underflow to 0, its log-likelihood is -inf, then NaN
        # (its EM step raises, its search skips the draw). Possible only where both ll_j are that low.
        if top < -700.0 and (math.exp(math.log(a00) + ll0) + math.exp(math.log(a01) + ll0)
                             + math.exp(math.log(a10) + ll1) + math.exp(math.log(a11) + ll1)) == 0.0:
            return math.nan, m0, m1
        g0, g1 = q0 * math.exp(ll0 - top), q1 * math.exp(ll1 - top)
        total = g0 + g1
        llf += top + math.log(total)
        m0, m1 = g0 / total, g1 / total
    return llf, m0, m1


@compiled
def _em(y, params, max_iter, tolerance, llf, weights):
    """statsmodels' `_fit_em` for this model from `params`: each iteration filters (`_filter_pass`),
    smooths (Kim 1994) and takes the M-step of `MarkovRegression._em_iteration`, until `max_iter`
    iterations or, after two, a relative log-likelihood change of `tolerance` or less.

    Returns (params, iterations, finite) with `llf[i]` the log-likelihood at iteration i's start;
    finite is False if a value on the way was not (the parameters then mean nothing).

    Smoother: with w_t(j, k) = P(s_t-1 = k | s_t = j, y_..t-1) from the filter, the smoothed pair
    P(s_t = j, s_t-1 = k | all y) = P(s_t = j | all y) w_t(j, k), and P(s_t-1 = k | all y) is its
    sum over j; statsmodels' log-space recursion is the same quotient. M-step: the transition
    P(0 | i) is the smoothed pairs (s_t = 0, s_t-1 = i) over t = 0..n-1 (s_-1 the pre-sample state,
    as statsmodels counts them) over the smoothed P(s_t = i) summed; each state's mean and variance
    are the smoothed-probability-weighted mean and variance about that mean.
    """
    n = len(y)
    params = params.copy()
    smoothed = np.empty((n, 2))
    delta = 0.0
    i = 0
    while i < max_iter and (i < 2 or delta > tolerance):
        llf[i], s0, s1 = _filter_pass(y, params, weights)  # s: the smoothed P(s_t = j) at t = n - 1
        if not math.isfinite(llf[i]):
            return params, i, False
        num0 = num1 = den0 = den1 = 0.0
        for t in range(n - 1, -1, -1):
            j00, j01 = s0 * weights[t, 0, 0], s0 * weights[t, 0, 1]
            j10, j11 = s1 * weights[t, 1, 0], s1 * weights[t, 1, 1]
            smoothed[t, 0], smoothed[t, 1] = j00 + j01, j10 + j11
            num0 += j00
            num1 += j01
            den0 += smoothed[t, 0]
            den1 += smoothed[t, 1]
            s0, s1 = j00 + j10, j01 + j11
        if not (den0 > 0 and den1 > 0):  # statsmodels: 0 / 0 gives NaN parameters
            return params, i + 1, False
        p00, p10 = num0 / den0, num1 / den1
        # statsmodels rescales a transition probability that rounding pushed above one
        if p00 > 1.0:
            p00 /= p00 + 1e-6
        if p10 > 1.0:
            p10 /= p10 + 1e-6
        sy0 = sy1 = 0.0
        for t in range(n):
            sy0 += smoothed[t, 0] * y[t]
            sy1 += smoothed[t, 1] * y[t]
        c0, c1 = sy0 / den0, sy1 / den1  # the weighted least squares constants
        ss0 = ss1 = 0.0
        for t in range(n):
            ss0 += (y[t] - c0) ** 2 * smoothed[t, 0]
            ss1 += (y[t] - c1) ** 2 * smoothed[t, 1]
        params[0], params[1], params[2], params[3], params[4], params[5] = p00, p10, c0, c1, ss0 / den0, ss1 / den1
        for v in params:
            if not math.isfinite(v):
                return params, i + 1, False
        if i > 0:
            if llf[i] + llf[i - 1] == 0:  # statsmodels: an infinite or NaN change
                return params, i + 1, False
            delta = 2 * (llf[i] - llf[i - 1]) / abs(llf[i] + llf[i - 1])
        i += 1
    return params, i, True


def hamilton_filter(
    y: np.ndarray, mean: tuple[float, float], sigma2: tuple[float, float], p_stay: tuple[float, float]
) -> np.ndarray:
    """Filtered P(state 1 | y_1..y_t) of a two-state Gaussian switching model (Hamilton 1989).

    Starts from the chain's stationary distribution, as statsmodels does. Each step predicts
    P(s_t = 1) = (1 - p00) (1 - f_{t-1}) + p11 f_{t-1}, then updates by Bayes' rule with the two
    normal densities (scaled by their larger value, so extreme returns do not underflow both).
    """
    y = np.asarray(y, dtype=np.float64)
    p00, p11 = p_stay
    if not (0 <= p00 < 1 and 0 <= p11 < 1) or min(sigma2) <= 0:
        raise TheoryError("Hamilton filter needs 0 <= p_stay < 1 and positive variances")
    # the densities' exponents in compiled code, their exp in numpy (whose exp the filter always used)
    m0, m1, s0, s1 = (float(v) for v in (*mean, *sigma2))
    shifted0, shifted1 = _scaled_log_densities(y, m0, m1, s0, s1, float(np.log(s0)), float(np.log(s1)))
    p01 = 1.0 - p00
    return _hamilton_recursion(np.exp(shifted0), np.exp(shifted1), p01, p11 - p01, p01 / (p01 + 1.0 - p11))


@compiled
def _scaled_log_densities(y, mean0, mean1, sigma2_0, sigma2_1, log_sigma2_0, log_sigma2_1):
    """Each state's log normal density of y (less the common -log(2 pi) / 2), less the larger of the two
    at each step, so that the larger density is exp(0) = 1 and extreme returns do not underflow both."""
    shifted0 = np.empty(len(y))
    shifted1 = np.empty(len(y))
    for t in range(len(y)):
        ll0 = -0.5 * (log_sigma2_0 + (y[t] - mean0) ** 2 / sigma2_0)
        ll1 = -0.5 * (log_sigma2_1 + (y[t] - mean1) ** 2 / sigma2_1)
        top = max(ll0, ll1)
        shifted0[t] = ll0 - top
        shifted1[t] = ll1 - top
    return shifted0, shifted1


@compiled
def _hamilton_recursion(like0, like1, p01, slope, pred):
    """The filter's recursion over the scaled densities, from the stationary P(state 1) `pred`.

    Compiled (with `_scaled_log_densities`): numpy and the Python loop took ~0.35 ms per 500-bar
    window, this ~0.015 ms. numpy keeps the exp (a compiled exp differs from numpy's in the last bit
    on ~5% of values), so the result is bit-identical to the plain formulation's.
    """
    out = np.empty(len(like0))
    for t in range(len(like0)):
        a = pred * like1[t]
        den = a + (1.0 - pred) * like0[t]
        f = a / den if den > 0 else pred
        out[t] = f
        pred = p01 + slope * f
    return out


# --- (b) named regimes ----------------------------------------------------------------------


@compiled
def _rolling_std(x, w, squares):
    """`np.std` (ddof=1) of the w values ending at each index, NaN for the first w - 1, bit for bit.

    numpy sums 8 to 128 values with eight running partial sums (`theories.pairwise`); that case, the
    one the rules use, is written out here with the squared deviations formed on the fly: ~4x
    faster than a `sample_std` call per window. Other lengths go through `sample_std`.
    """
    n = len(x)
    out = np.full(n, np.nan)
    if w < 8 or w > 128:
        for i in range(w - 1, n):
            out[i] = sample_std(x, i + 1, w, squares)
        return out
    blocks_end = w - w % 8
    for i in range(w - 1, n):
        s = i + 1 - w
        a0, a1, a2, a3, a4, a5, a6, a7 = x[s], x[s + 1], x[s + 2], x[s + 3], x[s + 4], x[s + 5], x[s + 6], x[s + 7]
        for k in range(s + 8, s + blocks_end, 8):
            a0 += x[k]
            a1 += x[k + 1]
            a2 += x[k + 2]
            a3 += x[k + 3]
            a4 += x[k + 4]
            a5 += x[k + 5]
            a6 += x[k + 6]
            a7 += x[k + 7]
        total = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))
        for k in range(s + blocks_end, s + w):
            total += x[k]
        mean = (0.0 + total) / w
        d0, d1, d2, d3 = x[s] - mean, x[s + 1] - mean, x[s + 2] - mean, x[s + 3] - mean
        d4, d5, d6, d7 = x[s + 4] - mean, x[s + 5] - mean, x[s + 6] - mean, x[s + 7] - mean
        a0, a1, a2, a3, a4, a5, a6, a7 = d0 * d0, d1 * d1, d2 * d2, d3 * d3, d4 * d4, d5 * d5, d6 * d6, d7 * d7
        for k in range(s + 8, s + blocks_end, 8):
            d0, d1, d2, d3 = x[k] - mean, x[k + 1] - mean, x[k + 2] - mean, x[k + 3] - mean
            d4, d5, d6, d7 = x[k + 4] - mean, x[k + 5] - mean, x[k + 6] - mean, x[k + 7] - mean
            a0 += d0 * d0
            a1 += d1 * d1
            a2 += d2 * d2
            a3 += d3 * d3
            a4 += d4 * d4
            a5 += d5 * d5
            a6 += d6 * d6
            a7 += d7 * d7
        total = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))
        for k in range(s + blocks_end, s + w):
            d0 = x[k] - mean
            total += d0 * d0
        out[i] = math.sqrt((0.0 + total) / (w - 1))
    return out


_BULL, _BEAR, _BREAKOUT = _CODE[BULL_TREND], _CODE[BEAR_TREND], _CODE[BREAKOUT]
_CONSOLIDATION, _HIGH_VOL, _LOW_VOL = _CODE[CONSOLIDATION], _CODE[HIGH_VOL_RANGE], _CODE[LOW_VOL_RANGE]


@compiled
def _classify(close, log_close, high, low, trend_lookback, vol_window, fast_vol_window, breakout_lookback, warmup,
              trend_threshold, high_vol_pct, consolidation_vol_pct, consolidation_trend, vol_expansion):
    """The rules of `classify_regimes` over one window: (sigma, code, trend, percentile, expansion, up,
    r), r[i] the log return into bar i (r[0] NaN).

    Compiled loops because the numpy formulation (two dozen array calls, a strided rolling std, two
    scipy extreme filters) cost ~0.6 ms per 500-bar window; this is ~0.03 ms, with the arithmetic
    of that formulation in its order, so every number is bit-identical (tests/test_regime_kernel.py
    checks it on real windows). The arrays mean nothing unless sigma > 0.
    """
    n = len(close)
    nan = np.nan
    r = np.empty(n)  # r[i] is the return into bar i
    r[0] = nan
    for i in range(1, n):
        r[i] = log_close[i] - log_close[i - 1]
    squares = np.empty(n)
    sigma = sample_std(r, n, n - 1, squares) if n > 2 else 0.0
    code = np.full(n, -1, dtype=np.int64)
    trend = np.full(n, nan)
    pct = np.full(n, nan)
    expansion = np.full(n, nan)
    up = np.zeros(n, dtype=np.bool_)
    if not sigma > 0:
        return sigma, code, trend, pct, expansion, up, r

    scale = sigma * math.sqrt(trend_lookback)
    for i in range(trend_lookback, n):
        trend[i] = (log_close[i] - log_close[i - trend_lookback]) / scale

    # realised volatility (NaN while its window reaches back to r[0]), ranked among its finite values
    vol = _rolling_std(r, vol_window, squares)
    known = np.flatnonzero(np.isfinite(vol))
    order = known[np.argsort(vol[known])]
    m = len(order)
    at_or_below = m
    for k in range(m - 1, -1, -1):  # down the sorted values: a tie shares the count up to its last
        if k < m - 1 and vol[order[k]] != vol[order[k + 1]]:
            at_or_below = k + 1
        pct[order[k]] = at_or_below / m

    # mean squared return of the last fast_vol_window bars and of the vol_window bars before them, as
    # differences of running sums (r[0] counts as 0); 0 / 0 (flat prices) is NaN, x / 0 infinite
    f = fast_vol_window
    csum = np.zeros(n + 1)
    for i in range(1, n):
        csum[i + 1] = csum[i] + r[i] * r[i]
    for i in range(f + vol_window, n):
        fast = (csum[i + 1] - csum[i + 1 - f]) / f
        prior = (csum[i + 1 - f] - csum[i + 1 - f - vol_window]) / vol_window
        if prior != 0.0:
            expansion[i] = math.sqrt(fast / prior)
        elif fast != 0.0:
            expansion[i] = np.inf

    for i in range(breakout_lookback, n):  # close above every one of the prior highs (most bars fail at once)
        up[i] = True
        for j in range(i - breakout_lookback, i):
            if not close[i] > high[j]:
                up[i] = False
                break
    for i in range(warmup, n):
        down = i >= breakout_lookback
        for j in range(i - breakout_lookback, i):
            if not close[i] < low[j]:
                down = False
                break
        if (up[i] or down) and expansion[i] >= vol_expansion:  # first match wins: breakout, trends, ...
            code[i] = _BREAKOUT
        elif trend[i] >= trend_threshold:
            code[i] = _BULL
        elif trend[i] <= -trend_threshold:
            code[i] = _BEAR
        elif pct[i] <= consolidation_vol_pct and abs(trend[i]) < consolidation_trend:
            code[i] = _CONSOLIDATION
        elif pct[i] > high_vol_pct:
            code[i] = _HIGH_VOL
        else:
            code[i] = _LOW_VOL
    return sigma, code, trend, pct, expansion, up, r


@dataclass(frozen=True)
class RegimeRules:
    """Per-bar inputs and outputs of the named-regime rules, aligned with the closes."""

    code: np.ndarray  # index into REGIMES, -1 during warm-up
    trend_score: np.ndarray  # sigma
    vol_percentile: np.ndarray  # in [0, 1]
    vol_expansion: np.ndarray  # ratio
    breakout_up: np.ndarray  # bool: close above the prior range
    returns: np.ndarray  # one-bar log returns, one fewer than closes: np.diff(np.log(close)), bit for bit


def _read_only(a: np.ndarray) -> np.ndarray:
    """A read-only contiguous float64 view (or copy) of `a`: candle columns are read-only, and numba
    compiles a function once per kind of array it is given, so every caller passes this one kind."""
    view = np.ascontiguousarray(a, dtype=np.float64).view()
    view.flags.writeable = False
    return view


def classify_regimes(close: np.ndarray, high: np.ndarray, low: np.ndarray, params: RegimeParams) -> RegimeRules:
    """Classify every bar into one of the six named regimes (rules in the module docstring)."""
    p = params
    close, high, low = (_read_only(a) for a in (close, high, low))
    sigma, code, trend, pct, expansion, up, r = _classify(
        close, np.log(close), high, low,
        p.trend_lookback, p.vol_window, p.fast_vol_window, p.breakout_lookback, p.warmup,
        p.trend_threshold, p.high_vol_pct, p.consolidation_vol_pct, p.consolidation_trend, p.vol_expansion,
    )
    if not sigma > 0:
        raise TheoryError("regime needs returns with some spread: the window's returns are constant")
    return RegimeRules(
        code=code, trend_score=trend, vol_percentile=pct, vol_expansion=expansion, breakout_up=up, returns=r[1:]
    )


def transition_matrix(codes: np.ndarray, k: int = len(REGIMES), prior: float = 1.0) -> np.ndarray:
    """Row-stochastic P[i, j] = (n_ij + prior) / (n_i + k prior) from consecutive labels 0..k-1."""
    c = np.asarray(codes, dtype=np.int64)
    counts = np.bincount(c[:-1] * k + c[1:], minlength=k * k).reshape(k, k) + prior
    return counts / counts.sum(axis=1, keepdims=True)


def _run_length(codes: np.ndarray) -> int:
    """How many values at the end of `codes` equal the last one."""
    differs = np.flatnonzero(codes != codes[-1])
    return len(codes) - (int(differs[-1]) + 1 if len(differs) else 0)


# --- the result -----------------------------------------------------------------------------


_MARKOV_FIELDS = (
    "p_high_vol", "high_vol_share", "low_vol_mean", "low_vol_sigma", "high_vol_mean", "high_vol_sigma",
    "p_stay_low", "p_stay_high", "low_vol_duration", "high_vol_duration", "fit_bars", "fit_time",
)


def _markov_fields(returns: np.ndarray, fit: MarkovFit | None, fit_at_ms: int | None) -> dict[str, float | int | None]:
    """The Markov part of the result: the window filtered with the fit, in fractions per bar."""
    if fit is None or not fit.ok:
        return dict.fromkeys(_MARKOV_FIELDS)
    filtered = hamilton_filter(100.0 * returns, fit.mean, fit.sigma2, fit.p_stay)
    return {
        "p_high_vol": float(filtered[-1]),
        "high_vol_share": np.count_nonzero(filtered > 0.5) / len(filtered),
        "low_vol_mean": fit.mean[0] / 100.0,
        "low_vol_sigma": math.sqrt(fit.sigma2[0]) / 100.0,
        "high_vol_mean": fit.mean[1] / 100.0,
        "high_vol_sigma": math.sqrt(fit.sigma2[1]) / 100.0,
        "p_stay_low": fit.p_stay[0],
        "p_stay_high": fit.p_stay[1],
        "low_vol_duration": 1.0 / (1.0 - fit.p_stay[0]),
        "high_vol_duration": 1.0 / (1.0 - fit.p_stay[1]),
        "fit_bars": fit.n,
        "fit_time": fit_at_ms,
    }


def _label(name: str, p_stay: float, next_regime: str, p_high: float | None, status: str) -> str:
    persist = "persistent" if p_stay >= 0.8 else "may persist" if p_stay >= 0.5 else "likely to change"
    text = f"{name}, {persist}"
    if p_high is None:
        return f"{text}; no Markov state ({status})"
    state = "high-vol state" if p_high >= 0.8 else "low-vol state" if p_high <= 0.2 else "between vol states"
    return f"{text}; {state}"


def regime(
    close: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    fit: MarkovFit | None,
    params: RegimeParams | None = None,
    fit_at_ms: int | None = None,
) -> RegimeResult:
    """Both parts for one window of candles, given a Markov fit made beforehand (None: no Markov part).

    `fit_at_ms` is the time the fit's candles were cut at, reported as `fit_time`.
    """
    p = params or RegimeParams()
    close = np.asarray(close, dtype=np.float64)
    rules = classify_regimes(close, high, low, p)
    codes = rules.code[rules.code >= 0]
    if len(codes) < MIN_LABELLED_BARS:
        raise TheoryError(
            f"regime needs {MIN_LABELLED_BARS} classified bars after a {p.warmup}-bar warm-up, got {len(codes)}"
        )
    P = transition_matrix(codes, prior=p.transition_prior)
    cur = int(codes[-1])
    others = P[cur].copy()
    others[cur] = -1.0
    nxt = int(others.argmax())
    markov = _markov_fields(rules.returns, fit, fit_at_ms)
    status = "no fit given" if fit is None else fit.status
    name = REGIMES[cur]
    shown = f"{'upward' if rules.breakout_up[-1] else 'downward'} breakout" if name == BREAKOUT else name
    expansion = float(rules.vol_expansion[-1])
    return RegimeResult(
        regime=name,
        breakout_direction=("up" if rules.breakout_up[-1] else "down") if name == BREAKOUT else None,
        trend_score=float(rules.trend_score[-1]),
        vol_percentile=float(rules.vol_percentile[-1]),
        vol_expansion=expansion if math.isfinite(expansion) else None,
        regime_age=_run_length(codes),
        p_stay=float(P[cur, cur]),
        next_regime=REGIMES[nxt],
        p_next=float(P[cur, nxt]),
        labelled_bars=len(codes),
        markov_status=status,
        label=_label(shown, float(P[cur, cur]), REGIMES[nxt], markov["p_high_vol"], status),
        **markov,
    )


def markov_fit_for(ctx: TheoryContext, params: RegimeParams) -> tuple[MarkovFit, int]:
    """The cached fit for the context's refit period: candles closed by the fit time only."""
    p = params
    ft = fit_time(ctx.at_ms, p.refit_every_ms)
    data = ctx.history.closed_by(ft).tail(p.fit_window)
    if len(data) < p.min_fit_bars:
        return MarkovFit(f"too little history for the fit: {len(data)} of {p.min_fit_bars} candles", len(data)), ft
    key = ("regime", ctx.symbol, ft, fingerprint(data), (p.fit_window, p.search_reps, p.seed))
    return ctx.cached(key, lambda: fit_markov(data.log_returns(), p.search_reps, p.seed)), ft


def _run(ctx: TheoryContext, params: RegimeParams) -> RegimeResult:
    fit, ft = markov_fit_for(ctx, params)
    c = ctx.candles
    return regime(c.close, c.high, c.low, fit, params, fit_at_ms=ft)


THEORY = Theory(
    name="regime",
    description=(
        "Two-state Markov switching of returns with filtered probabilities (Hamilton 1989), "
        "and six rule-based named regimes with their empirical transition matrix."
    ),
    params=RegimeParams,
    result=RegimeResult,
    run=_run,
    min_bars=150,
)
