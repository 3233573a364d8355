"""Kalman local linear trend: the filtered level, velocity and acceleration of log price.

Model (Harvey 1989, *Forecasting, Structural Time Series Models and the Kalman Filter*, ch. 2;
Durbin & Koopman 2012, *Time Series Analysis by State Space Methods*, sec. 3.2.1), on
y_t = log close:

    y_t         = level_t + e_t,               e_t ~ N(0, irregular_var)
    level_{t+1} = level_t + slope_t + n_t,     n_t ~ N(0, level_var)
    slope_{t+1} = slope_t + z_t,               z_t ~ N(0, trend_var)

The filter is written out with scalar arithmetic (two states, one observation) for speed, in two
halves: covariances and gains do not depend on the data, so `filter_gains` computes them once per
(noise fit, window length) and each hourly window runs only the state update (compiled). The
prior on (level, slope) is N(0, diffuse_var * I). Its covariance update carries det(P), so the
slope variance is never a difference of two ~diffuse_var numbers (the textbook P11 - P01^2 / F
is 1e6 - 1e6 at the start and loses ~1e-8 in the slope), which keeps it exact for any prior
variance. The default 1e12 is diffuse in effect: it reproduces statsmodels'
`UnobservedComponents(y, level="lltrend", use_exact_diffuse=True)` filtered states to ~1e-15.
With diffuse_var=1e6 it reproduces the default (approximate diffuse, 1e6) model to within
statsmodels' own rounding, provided statsmodels' steady-state shortcut is off
(`ssm.tolerance = 0`): otherwise statsmodels freezes the covariance once it changes by less
than 1e-19, which with a near-zero trend variance happens while the slope variance is still
shrinking.

Noise variances come from maximum likelihood on the log closes of the `fit_bars` candles closed
by the refit time (`fit_time`, every `fit_every_ms`), cached. The fit runs on 100 * (y - y_0) (log
percent from the first close) for conditioning; variances are scaled back by 1e-4. It is
statsmodels' `UnobservedComponents(level="lltrend").fit()` (0.15) done with its own pieces but
our likelihood: its start (two HP filters), its parameter transform (variance = x^2), the same
scipy L-BFGS-B call on minus the mean log-likelihood, and that log-likelihood computed by a
compiled filter (`lltrend_loglike`) that repeats statsmodels' default filter operation for
operation, so it returns the same bits (a test checks it at many points on real windows, and
the fitted variances against statsmodels' fit). Why: measured speed. The same fit took
~150-280 ms CPU through statsmodels (with one BLAS thread; ~500 ms with OpenBLAS's default
threads), nearly all of it per-call overhead around ~200 evaluations of a 500-step recursion,
and takes ~16-20 ms this way (median of 20 real symbol-weeks). Where statsmodels' filter
would change method (a forecast variance below 1e-12: it then switches that step to its
univariate filter) or the data has gaps, the fit is statsmodels' own. If the fit raises or does not converge, the
variances come from a documented rule instead: method of moments on second differences, where

    d2y_t = z_{t-2} + n_{t-1} - n_{t-2} + e_t - 2 e_{t-1} + e_{t-2}

has autocovariances g0 = trend + 2 level + 6 irregular, g1 = -level - 4 irregular,
g2 = irregular; solved in that order (irregular = g2, level = -g1 - 4 irregular,
trend = g0 - 2 level - 6 irregular), each clipped at 0. The result says which source was used.
Starting the MLE from the moment rule's variances halved its cost on most windows but ended at a
worse local optimum on one of six real windows tried (DOGE/USDT, log-likelihood -744.02 instead
of -743.88), so statsmodels' own start is kept; the refit schedule (`fit_every_ms`) is what makes
long replays cheaper.

Reported, at the last bar T (filtered, i.e. using bars up to and including T):
- level: exp(level_{T|T}), a price.
- velocity: slope_{T|T}, log return per bar; velocity_sigma = velocity / sqrt(Var slope_{T|T}).
- acceleration: slope_{T|T} - slope_{T-1|T-1}, the change of filtered velocity over the last
  bar (log return per bar per bar).
- deviation: y_T - level_{T|T} in log units, and deviation_sigma, the same divided by its
  standard deviation given bars up to T-1. With innovation v_T = y_T - level_{T|T-1} and its
  variance F_T, y_T - level_{T|T} = (irregular_var / F_T) v_T, whose standard deviation is
  irregular_var / sqrt(F_T), so deviation_sigma = v_T / sqrt(F_T): the standardised one-step
  innovation, N(0, 1) under the model (defined so also when irregular_var = 0).

With the typical hourly crypto fit (trend_var near 0) the slope is almost constant, so the
velocity is close to the window's average drift and acceleration is tiny: that is the answer.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass

import numpy as np
from pydantic import Field
from scipy.optimize import fmin_l_bfgs_b
from statsmodels.tools.sm_exceptions import ConvergenceWarning
from statsmodels.tsa.filters.hp_filter import hpfilter
from statsmodels.tsa.statespace.structural import UnobservedComponents
from threadpoolctl import ThreadpoolController

from theories.base import (
    BARS,
    LABEL,
    LOG_RETURN,
    PRICE,
    REFIT_EVERY_MS,
    SIGMA,
    Theory,
    TheoryContext,
    TheoryError,
    TheoryParams,
    TheoryResult,
    fingerprint,
    fit_time,
    num,
    pct,
    unit,
)
from theories.jit import compiled
from theories.pairwise import pairwise_sum

DIFFUSE_VAR = 1e12  # prior variance of level and slope: the exact diffuse limit in double precision


class KalmanParams(TheoryParams):
    fit_bars: int = Field(500, ge=100, le=5000, description="Candles closed by the refit time used for the MLE.")
    fit_every_ms: int = Field(REFIT_EVERY_MS, gt=0, description="Refit schedule for the noise variances, ms.")
    lookback: int = Field(500, ge=30, description="Candles filtered, the most recent.")
    trend_sigma: float = Field(
        2.0, gt=0, description="Velocity beyond +/- this many of its standard deviations reads as a trend."
    )
    stretch_sigma: float = Field(
        2.0, gt=0, description="|deviation_sigma| beyond this reads as price stretched from its level."
    )
    speed_change: float = Field(
        0.1, gt=0, description="|acceleration| of at least this fraction of velocity's standard deviation "
        "in one bar reads as gaining or losing speed (only said when there is a trend).",
    )


class KalmanResult(TheoryResult):
    level: float = unit(PRICE, "Filtered trend level at the last bar, as a price: exp of the log level.")
    velocity: float = unit(LOG_RETURN, "Filtered slope at the last bar: log return per bar.")
    velocity_sigma: float = unit(SIGMA, "Velocity divided by its filtered standard deviation.")
    acceleration: float = unit(LOG_RETURN, "Change of filtered velocity over the last bar: log return per bar^2.")
    deviation: float = unit(LOG_RETURN, "log(close / level) at the last bar.")
    deviation_sigma: float = unit(
        SIGMA, "Deviation in its standard deviations given the previous bars (= standardised innovation)."
    )
    irregular_sd: float = unit(LOG_RETURN, "Standard deviation of the observation noise around the level.")
    level_sd: float = unit(LOG_RETURN, "Standard deviation of the level's own shocks per bar.")
    trend_sd: float = unit(LOG_RETURN, "Standard deviation of the slope's shocks per bar.")
    noise_source: str = unit(LABEL, "'mle' (maximum likelihood) or 'rule' (moments of second differences).")
    fit_bars: int = unit(BARS, "Candles the noise variances were estimated from.")
    n: int = unit(BARS, "Candles filtered.")

    def summary(self) -> str:
        # acceleration is judged in the label (gaining / losing speed); its raw value stays in the result
        return (
            f"level {num(self.level, 4)}, slope {pct(self.velocity, 2, True)}/bar "
            f"({num(self.velocity_sigma, 2, True)} sd), close {num(self.deviation_sigma, 2, True)} sd from level "
            f"-> {self.label}"
        )


@dataclass(frozen=True)
class TrendFilter:
    """Filtered states of the local linear trend, one entry per observation."""

    level: np.ndarray  # level_{t|t}
    slope: np.ndarray  # slope_{t|t}
    slope_var: np.ndarray  # Var(slope_{t|t})
    innovation: np.ndarray  # v_t = y_t - level_{t|t-1}
    innovation_var: np.ndarray  # F_t


@dataclass(frozen=True)
class NoiseFit:
    irregular_var: float
    level_var: float
    trend_var: float
    source: str  # "mle" or "rule"
    note: str  # why the rule was used, empty for mle
    bars: int


@dataclass(frozen=True)
class FilterGains:
    """The half of the filter that never sees the data: covariances and gains at each of n steps.

    P_t, F_t and the gains depend only on the noise variances, the prior and the step count, not on
    y. An hourly replay filters a new window of the same length with the same fitted variances every
    hour, so `filter_gains` computes this part once per fit (memoised) and each window then runs only
    the two-number state update, with the same operations in the same order (bit-identical).
    """

    level_gain: np.ndarray  # P00_{t|t-1} / F_t, read-only
    slope_gain: np.ndarray  # P01_{t|t-1} / F_t, read-only
    slope_var: np.ndarray  # Var(slope_{t|t}), read-only
    innovation_var: np.ndarray  # F_t, read-only


@functools.lru_cache(maxsize=64)
def filter_gains(
    n: int, irregular_var: float, level_var: float, trend_var: float, diffuse_var: float = DIFFUSE_VAR
) -> FilterGains:
    """Covariances and gains of the local linear trend filter for n observations (prior N(0, diffuse_var * I)).

    Pure and memoised on its arguments (plain floats), so a cached result is exactly a fresh one.
    """
    h, q_level, q_trend = float(irregular_var), float(level_var), float(trend_var)
    if min(h, q_level, q_trend) < 0 or not all(map(math.isfinite, (h, q_level, q_trend))):
        raise TheoryError(f"noise variances must be finite and >= 0, got {h}, {q_level}, {q_trend}")
    level_gain: list[float] = []
    slope_gain: list[float] = []
    slope_var: list[float] = []
    innov_var: list[float] = []
    p00 = p11 = float(diffuse_var)
    p01 = 0.0
    det = p00 * p11  # det(P), carried so that Var(slope) never comes from a difference of ~diffuse_var terms
    for _ in range(n):
        f = p00 + h
        if not f > 0.0:
            raise TheoryError("Kalman innovation variance is zero: the noise variances are degenerate")
        level_gain.append(p00 / f)
        slope_gain.append(p01 / f)
        innov_var.append(f)
        # update P <- P - P Z' Z P / F. P00 and P01 scale by h / F and so does det(P); then
        # P11 = (det + P01^2) / P00. The textbook P11 - P01^2 / F is 1e6 - 1e6 at the diffuse start.
        if h > 0.0:
            g = h / f
            p00 *= g
            p01 *= g
            det *= g
            p11 = (det + p01 * p01) / p00
        else:  # exact observation: the level is known; P11 - P01^2 / P00 = det / P00
            p11 = det / p00
            p00 = p01 = det = 0.0
        slope_var.append(p11)
        # predict with T = [[1, 1], [0, 1]]: P <- T P T' + diag(level_var, trend_var);
        # det(T P T') = det(P), and adding a diagonal adds level_var * P11 + trend_var * A00 + both
        a00 = p00 + 2.0 * p01 + p11
        det += q_level * p11 + q_trend * a00 + q_level * q_trend
        p00 = a00 + q_level
        p01 += p11
        p11 += q_trend
    frozen = [np.array(v) for v in (level_gain, slope_gain, slope_var, innov_var)]
    for arr in frozen:
        arr.flags.writeable = False  # shared by every window filtered with this fit
    return FilterGains(*frozen)


def local_linear_trend_filter(
    y: np.ndarray, irregular_var: float, level_var: float, trend_var: float, diffuse_var: float = DIFFUSE_VAR
) -> TrendFilter:
    """Kalman filter of the local linear trend with prior N(0, diffuse_var * I) on (level, slope)."""
    y = np.asarray(y, dtype=np.float64)
    gains = filter_gains(len(y), float(irregular_var), float(level_var), float(trend_var), float(diffuse_var))
    level: list[float] = []
    slope: list[float] = []
    innov: list[float] = []
    # every step kept (the hourly path keeps only the last: `filter_last`); plain floats and bound appends
    put_level, put_slope, put_innov = level.append, slope.append, innov.append
    a0 = a1 = 0.0
    for yt, k0, k1 in zip(y.tolist(), gains.level_gain.tolist(), gains.slope_gain.tolist(), strict=True):
        v = yt - a0
        a0 += k0 * v
        a1 += k1 * v
        put_level(a0)
        put_slope(a1)
        put_innov(v)
        a0 += a1  # predict: level + slope; the slope carries over
    return TrendFilter(
        level=np.array(level), slope=np.array(slope), slope_var=gains.slope_var,
        innovation=np.array(innov), innovation_var=gains.innovation_var,
    )


def filter_last(y: np.ndarray, gains: FilterGains) -> tuple[float, float, float, float]:
    """(level, slope, previous slope, innovation) at the last step: `local_linear_trend_filter`'s
    last entries, by the same operations (bit-identical), without keeping every step."""
    y = np.ascontiguousarray(y, dtype=np.float64)
    if len(y) != len(gains.level_gain):
        raise ValueError(f"{len(y)} observations for gains of {len(gains.level_gain)} steps")
    return _state_update_last(y, gains.level_gain, gains.slope_gain)


@compiled
def _state_update_last(y, level_gain, slope_gain):
    """The state half of the filter over all of y, keeping the last step. Compiled: the plain Python
    loop cost ~0.1 ms per 500-bar window, this ~1 us."""
    a0 = a1 = level = prev_slope = v = 0.0
    for t in range(len(y)):
        v = y[t] - a0
        a0 += level_gain[t] * v
        prev_slope = a1
        a1 += slope_gain[t] * v
        level = a0
        a0 += a1  # predict: level + slope; the slope carries over
    return level, a1, prev_slope, v


def moment_noise(y: np.ndarray) -> tuple[float, float, float]:
    """Noise variances (irregular, level, trend) from autocovariances of second differences."""
    d2 = np.diff(np.asarray(y, dtype=np.float64), 2)
    if len(d2) < 10:
        raise TheoryError("the moment rule needs at least 12 observations")
    d2 = d2 - d2.mean()
    m = len(d2)
    g0 = float(d2 @ d2) / m
    g1 = float(d2[1:] @ d2[:-1]) / m
    g2 = float(d2[2:] @ d2[:-2]) / m
    irregular = max(g2, 0.0)
    level = max(-g1 - 4.0 * irregular, 0.0)
    trend = max(g0 - 2.0 * level - 6.0 * irregular, 0.0)
    if level == 0.0 and irregular == 0.0:
        raise TheoryError("the moment rule found no level or observation noise")
    return irregular, level, trend


# statsmodels' defaults for UnobservedComponents(level="lltrend") (0.15), which the fit repeats
SM_INITIAL_VARIANCE = 1e6  # approximate diffuse prior N(0, 1e6 I) (`ssm.initial_variance`)
SM_LOGLIKE_BURN = 2  # `loglikelihood_burn`: the first k_states = 2 terms are left out of the sum
SM_STEADY_TOLERANCE = 1e-19  # `KalmanFilter.tolerance` of the steady-state check
SM_MIN_FORECAST_VAR = 1e-12  # below this statsmodels' filter switches method (`inverse_univariate`)
LOG_2PI = math.log(2.0 * math.pi)


@compiled
def lltrend_loglike(y, irregular_var, level_var, trend_var, terms):
    """(log-likelihood, singular) of the local linear trend as statsmodels' default filter computes
    it for `UnobservedComponents(y, level="lltrend").loglike([irregular, level, trend])`: the same
    bits, by the same operations in the same order (statsmodels 0.15, `_filters/_conventional.pyx.in`
    with `INVERT_UNIVARIATE`, `STABILITY_FORCE_SYMMETRY`, `TIMING_INIT_PREDICTED`). `terms` (len(y))
    receives the per-step terms; their sum skips the burn-in and adds in numpy's order, as
    `np.sum(loglikelihood[burn:])` does. `singular` is True where statsmodels would leave this
    filter (a forecast variance below 1e-12): the log-likelihood is then not statsmodels'.

    Unlike `filter_gains` (which keeps det(P) for exactness), this is statsmodels' textbook
    covariance update with its matrix entries kept apart (P01 and P10 round differently and are
    averaged, as its symmetry step does), and its steady-state shortcut: once the predicted
    covariance P_{t+1} is within SM_STEADY_TOLERANCE (sum of squares) of P_t, the covariance,
    F and log F are frozen; statsmodels stores the step's *input* P_t as the steady one, so the
    next step still reads P_{t+1} and every later step P_t.
    """
    n = len(y)
    a0 = a1 = 0.0  # predicted level and slope
    p00 = p11 = SM_INITIAL_VARIANCE  # predicted covariance, entries as statsmodels stores them
    p10 = p01 = 0.0
    steady = False
    f = log_f = steady00 = steady10 = 0.0
    for t in range(n):
        v = y[t] - a0  # innovation: Z a = a0
        if not steady:
            f = p00 + irregular_var  # F = Z P Z' + H
            log_f = math.log(f)
        if f < SM_MIN_FORECAST_VAR:
            return math.nan, True
        s = 1.0 / f
        u = s * v  # F^-1 v
        a0 = a0 + p00 * u  # filtered state a + P Z' F^-1 v
        a1 = a1 + p10 * u
        terms[t] = -0.5 * (LOG_2PI + log_f) - 0.5 * (v * u)
        a0 = a0 + a1  # predicted state T a
        if steady:
            p00, p10 = steady00, steady10
            continue
        w0 = p00 * s  # P Z' F^-1
        w1 = p10 * s
        f00 = p00 - w0 * p00  # filtered covariance P - (P Z' F^-1)(P Z')'
        f10 = p10 - w1 * p00
        f01 = p01 - w0 * p10
        f11 = p11 - w1 * p10
        n00 = ((f00 + f10) + (f01 + f11)) + level_var  # predicted covariance T P T' + Q
        n11 = f11 + trend_var
        n_off = 0.5 * ((f10 + f11) + (f01 + f11))  # (P + P') / 2 off the diagonal
        if t >= 1:
            d00 = p00 - n00
            d10 = p10 - n_off
            d01 = p01 - n_off
            d11 = p11 - n11
            if ((d00 * d00 + d10 * d10) + d01 * d01) + d11 * d11 < SM_STEADY_TOLERANCE:
                steady = True
                steady00, steady10 = p00, p10
        p00, p10, p01, p11 = n00, n_off, n_off, n11
    return pairwise_sum(terms, SM_LOGLIKE_BURN, n - SM_LOGLIKE_BURN), False


class _LeavesTheFilter(Exception):
    """statsmodels would switch filter method here: the fit is handed to statsmodels."""


@functools.cache
def _blas_threads() -> ThreadpoolController:
    return ThreadpoolController()  # made on first use: it lists the BLAS libraries loaded then


def lltrend_start(scaled: np.ndarray) -> np.ndarray:
    """statsmodels' start variances (irregular, level, trend) for the lltrend model
    (`UnobservedComponents.start_params`): an HP filter's cycle variance, and the variances of the
    cycle and trend of an HP filter of its trend."""
    cycle, trend = hpfilter(scaled)
    cycle2, trend2 = hpfilter(trend)
    return np.array([np.var(cycle), np.std(cycle2) ** 2, np.std(trend2) ** 2])


def _fit_lltrend(scaled: np.ndarray, maxiter: int) -> tuple[np.ndarray, bool]:
    """statsmodels' `MLEModel.fit(method="lbfgs")` with our log-likelihood: (variances, converged).

    The optimiser call is statsmodels' (`base/optimizer.py::_fit_lbfgs` with the defaults
    `MLEModel.fit` sets): scipy's `fmin_l_bfgs_b` on minus the log-likelihood over the number of
    observations, in the unconstrained parameters x (variance = x^2), from the square roots of
    `lltrend_start`, with a forward-difference gradient of step 1e-5, no bounds and scipy's other
    defaults (m=10, factr=1e7, pgtol=1e-5); converged means warnflag 0.
    """
    n = len(scaled)
    terms = np.empty(n)

    def objective(x: np.ndarray) -> float:
        loglike, singular = lltrend_loglike(scaled, x[0] * x[0], x[1] * x[1], x[2] * x[2], terms)
        if singular:
            raise _LeavesTheFilter
        return -loglike / n

    start = lltrend_start(scaled) ** 0.5
    x, _, info = fmin_l_bfgs_b(
        objective, start, approx_grad=True, epsilon=1e-5, maxiter=maxiter, bounds=[(None, None)] * 3
    )
    return x**2, info["warnflag"] == 0


def _statsmodels_fit(scaled: np.ndarray, maxiter: int) -> tuple[np.ndarray, bool]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        # cov_type="none" and low_memory: no parameter covariance and no smoother after the optimiser
        # (neither is used); the optimisation itself, hence the fit, is unchanged
        res = UnobservedComponents(scaled, level="lltrend").fit(
            disp=False, maxiter=maxiter, cov_type="none", low_memory=True
        )
    return np.asarray(res.params, dtype=np.float64), bool(res.mle_retvals.get("converged", False))


def mle_noise(y: np.ndarray, maxiter: int = 200) -> tuple[float, float, float]:
    """Noise variances by maximum likelihood: statsmodels' `UnobservedComponents(level="lltrend")`
    fit, on our compiled log-likelihood (see the module docstring), or statsmodels' own where its
    filter would leave the one we repeat.

    Raises RuntimeError when the optimiser does not converge.
    """
    y = np.asarray(y, dtype=np.float64)
    scaled = 100.0 * (y - y[0])  # log percent: variances near 1 suit the optimiser
    # One BLAS thread for the fit: scipy's L-BFGS-B makes small BLAS calls each iteration, and with
    # OpenBLAS's default threads on a loaded 2-core machine they cost ~13x the CPU (a 3-parameter
    # fit: 24 ms against 1.8 ms). The replay's workers already run on one; this covers the rest.
    with _blas_threads().limit(limits=1, user_api="blas"):
        try:
            if not np.all(np.isfinite(scaled)):  # gaps: statsmodels' filter skips them, ours does not
                raise _LeavesTheFilter
            params, converged = _fit_lltrend(scaled, maxiter)
        except _LeavesTheFilter:
            params, converged = _statsmodels_fit(scaled, maxiter)
    if not converged:
        raise RuntimeError("the likelihood optimiser did not converge")
    params = params * 1e-4
    if params.shape != (3,) or not np.all(np.isfinite(params)) or np.any(params < 0):
        raise RuntimeError(f"the likelihood fit gave unusable variances {params}")
    return float(params[0]), float(params[1]), float(params[2])


def fit_noise(y: np.ndarray) -> NoiseFit:
    """MLE noise variances, or the moment rule (saying why) when the MLE fails."""
    y = np.asarray(y, dtype=np.float64)
    try:
        h, ql, qt = mle_noise(y)
        return NoiseFit(h, ql, qt, "mle", "", len(y))
    except (RuntimeError, ValueError, ArithmeticError, np.linalg.LinAlgError) as exc:
        h, ql, qt = moment_noise(y)
        return NoiseFit(h, ql, qt, "rule", f"MLE failed: {exc}", len(y))


def _label(velocity_sigma: float, acceleration: float, velocity: float, velocity_sd: float,
           deviation_sigma: float, p: KalmanParams) -> str:
    if velocity_sigma >= p.trend_sigma:
        trend = "uptrend"
    elif velocity_sigma <= -p.trend_sigma:
        trend = "downtrend"
    else:
        trend = "no clear trend"
    if trend != "no clear trend" and abs(acceleration) >= p.speed_change * velocity_sd:
        trend += ", gaining speed" if acceleration * velocity > 0 else ", losing speed"
    if deviation_sigma >= p.stretch_sigma:
        stretch = "stretched above level"
    elif deviation_sigma <= -p.stretch_sigma:
        stretch = "stretched below level"
    else:
        stretch = "near level"
    return f"{trend}; {stretch}"


def kalman_trend(close: np.ndarray, noise: NoiseFit, params: KalmanParams | None = None) -> KalmanResult:
    """Filter log `close` with the given noise variances and describe the last bar."""
    p = params or KalmanParams()
    c = np.asarray(close, dtype=np.float64)[-p.lookback :]
    if len(c) < 3:
        raise TheoryError("the Kalman trend needs at least 3 closes")
    if not np.isfinite(c).all() or (c <= 0).any():  # the methods: numpy's function forms add a Python layer
        raise TheoryError("closes must be finite and positive")
    y = np.log(c)
    gains = filter_gains(len(y), noise.irregular_var, noise.level_var, noise.trend_var)
    level, velocity, prev_velocity, innovation = filter_last(y, gains)
    velocity_sd = math.sqrt(max(float(gains.slope_var[-1]), 0.0))
    if velocity_sd == 0.0:
        raise TheoryError("the filtered velocity has zero variance: cannot judge the trend")
    velocity_sigma = velocity / velocity_sd
    acceleration = velocity - prev_velocity
    deviation_sigma = innovation / math.sqrt(float(gains.innovation_var[-1]))
    label = _label(velocity_sigma, acceleration, velocity, velocity_sd, deviation_sigma, p)
    if noise.source != "mle":
        label += f" (noise by moment rule; {noise.note})"  # rare, and the reader must know
    return KalmanResult(
        level=math.exp(level),
        velocity=velocity,
        velocity_sigma=velocity_sigma,
        acceleration=acceleration,
        deviation=float(y[-1]) - level,
        deviation_sigma=deviation_sigma,
        irregular_sd=math.sqrt(noise.irregular_var),
        level_sd=math.sqrt(noise.level_var),
        trend_sd=math.sqrt(noise.trend_var),
        noise_source=noise.source,
        fit_bars=noise.bars,
        n=len(c),
        label=label,
    )


def _run(ctx: TheoryContext, params: KalmanParams) -> KalmanResult:
    ft = fit_time(ctx.at_ms, params.fit_every_ms)
    fit_candles = ctx.history.closed_by(ft).tail(params.fit_bars)
    if len(fit_candles) < 100:
        raise TheoryError(f"kalman needs at least 100 candles closed by the refit time, got {len(fit_candles)}")
    key = ("kalman", ctx.symbol, ft, fingerprint(fit_candles), params)
    noise = ctx.cached(key, lambda: fit_noise(np.log(fit_candles.close)))
    return kalman_trend(ctx.candles.close, noise, params)


THEORY = Theory(
    name="kalman",
    description="Local linear trend Kalman filter on log price, noise by MLE (Harvey 1989; Durbin & Koopman 2012).",
    params=KalmanParams,
    result=KalmanResult,
    run=_run,
    min_bars=30,
)
