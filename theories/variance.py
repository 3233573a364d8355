"""Variance ratios and volatility: does the price wander like a random walk, and how loud is it now?

- Lo & MacKinlay (1988), "Stock market prices do not follow random walks", RFS 1(1):41-66.
  VR(q) compares the variance of overlapping q-bar changes of the LOG PRICE with q times the
  one-bar variance, both bias-corrected (their sigma_a^2 and sigma_c^2(q) with
  m = q (nq - q + 1)(1 - q / nq)). VR > 1: moves persist (trending); VR < 1: moves reverse
  (mean-reverting). Significance uses their heteroskedasticity-robust z*(q) (Theorem 3:
  theta(q) = sum_j [2 (q - j) / q]^2 delta(j)), so volatility clustering does not fake a signal.
- Testing several q at once inflates false alarms, so the label judges significance jointly with
  the Chow & Denning (1993) multiple variance ratio test: max |z*| against the Sidak bound of the
  studentized maximum modulus, critical value Phi^-1(1 - (1 - (1 - alpha)^(1/m)) / 2) for m lags.
- Realised volatility: sample standard deviation of the last `vol_window` one-bar log returns,
  annualised with sqrt(bars per year), and its percentile rank among the rolling values over
  the last `vol_lookback` bars.
- ATR: Wilder's average true range (theories.indicators.atr), in price and as a fraction of the close.

Returns across a gap in the candles span the gap: gaps are rare and short on the exchanges we
read, so they are used as they are rather than filled.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from pydantic import Field, field_validator
from scipy.special import ndtr, ndtri

from theories.base import (
    ANNUALISED,
    BARS,
    FRACTION,
    PRICE,
    PVALUE,
    RATIO,
    STATISTIC,
    Theory,
    TheoryContext,
    TheoryError,
    TheoryParams,
    TheoryResult,
    num,
    pct,
    pval,
    unit,
)
from theories.indicators import atr
from theories.jit import compiled
from theories.pairwise import pairwise_sum


class VarianceParams(TheoryParams):
    lags: tuple[int, ...] = Field((2, 4, 8, 16), description="Holding periods q of the variance ratios, in bars.")
    lookback: int = Field(500, ge=50, description="Log prices used for the variance ratios, the most recent.")
    min_returns_per_lag: int = Field(
        8, ge=4, description="Need at least this many returns per bar of the longest lag (asymptotics need nq >> q)."
    )
    alpha: float = Field(0.05, gt=0, lt=0.5, description="Joint (Chow-Denning) significance level across the lags.")
    vol_window: int = Field(24, ge=2, description="Returns in one realised-volatility estimate, in bars.")
    vol_lookback: int = Field(500, ge=50, description="Bars over which the current realised vol is ranked.")
    high_vol_percentile: float = Field(0.8, gt=0.5, le=1, description="At or above: 'high volatility'.")
    low_vol_percentile: float = Field(0.2, ge=0, lt=0.5, description="At or below: 'low volatility'.")
    atr_period: int = Field(14, ge=2, description="Wilder ATR period, in bars.")

    @field_validator("lags")
    @classmethod
    def _lags_are_distinct_and_above_one(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v or min(v) < 2 or len(set(v)) != len(v):
            raise ValueError("lags must be distinct integers >= 2")
        return tuple(sorted(v))


class VarianceResult(TheoryResult):
    lags: tuple[int, ...] = unit(BARS, "Holding periods q of the variance ratios.")
    variance_ratios: tuple[float, ...] = unit(
        RATIO, "Lo-MacKinlay VR(q) of log prices, one per lag; 1 for a random walk, >1 trending, <1 mean-reverting."
    )
    z_robust: tuple[float, ...] = unit(
        STATISTIC, "Heteroskedasticity-robust z*(q) per lag; ~N(0, 1) under a random walk."
    )
    p_values: tuple[float, ...] = unit(PVALUE, "Two-sided p-value of each z*(q) on its own.")
    joint_p_value: float = unit(
        PVALUE, "Chow-Denning p-value of max |z*| over all lags (Sidak bound): is any lag off a random walk?"
    )
    joint_critical_z: float = unit(STATISTIC, "Critical |z*| for the joint test at the chosen alpha.")
    realised_vol: float = unit(ANNUALISED, "Std of the last vol_window one-bar log returns, annualised.")
    vol_percentile: float = unit(FRACTION, "Share of rolling realised vols over the lookback at or below the current.")
    vol_window: int = unit(BARS, "Returns in one realised-volatility estimate.")
    atr: float = unit(PRICE, "Wilder average true range of the last bar, in quote currency.")
    atr_fraction: float = unit(FRACTION, "ATR divided by the last close.")
    n: int = unit(BARS, "Returns used for the variance ratios.")

    def summary(self) -> str:
        # per-lag z* stay in the result: the joint p-value is the test of them all (Chow-Denning max |z*|)
        lags = "/".join(map(str, self.lags))
        vrs = "/".join(num(v, 2) for v in self.variance_ratios)
        return (
            f"VR{lags} {vrs}, joint p {pval(self.joint_p_value)}; "
            f"vol {pct(self.realised_vol)}/yr, pct {pct(self.vol_percentile)}; ATR {pct(self.atr_fraction)} "
            f"-> {self.label}"
        )


def variance_ratios(log_price: np.ndarray, lags: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lo-MacKinlay (1988) overlapping, bias-corrected VR(q) of a log-price series, for each q in `lags`.

    Returns (VR, robust z*, homoskedastic z) arrays aligned with `lags`. With nq returns and drift
    mu = (x_nq - x_0) / nq:
      sigma_a^2 = sum (x_k - x_{k-1} - mu)^2 / (nq - 1)
      sigma_c^2(q) = sum_{k>=q} (x_k - x_{k-q} - q mu)^2 / m,  m = q (nq - q + 1)(1 - q / nq)
      z(q) = sqrt(nq) (VR - 1) / sqrt(2 (2q - 1)(q - 1) / (3q))
      z*(q) = sqrt(nq) (VR - 1) / sqrt(theta(q)),  theta(q) = sum_{j<q} [2 (q - j) / q]^2 delta(j),
      delta(j) = nq sum_{k>j} d_k^2 d_{k-j}^2 / (sum d_k^2)^2,  d_k = x_k - x_{k-1} - mu.
    """
    x = np.asarray(log_price, dtype=np.float64)
    nq = len(x) - 1
    qmax = max(lags)
    if nq < 2 * qmax:
        raise TheoryError(f"variance ratio at lag {qmax} needs at least {2 * qmax} returns, got {nq}")
    vr, z_star = _ratios_and_robust_z(x, lags)
    return vr, z_star, math.sqrt(nq) * (vr - 1) / np.sqrt(_vr_weights(lags)[1])


def _ratios_and_robust_z(x: np.ndarray, lags: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """VR(q) and z*(q) of `variance_ratios` (x long enough), without the homoskedastic z."""
    vr, theta, ss = _variance_ratio_sums(np.ascontiguousarray(x), _lags_array(lags), _vr_weights(lags)[0])
    if not math.isfinite(ss) or ss <= 1e-300:
        raise TheoryError("variance ratio needs a log price that moves (the returns have zero variance)")
    return vr, math.sqrt(len(x) - 1) * (vr - 1) / np.sqrt(theta)


@lru_cache(maxsize=64)
def _lags_array(lags: tuple[int, ...]) -> np.ndarray:
    out = np.array(lags, dtype=np.int64)
    out.flags.writeable = False
    return out


@compiled
def _variance_ratio_sums(x: np.ndarray, lags: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """VR(q) and theta(q) per lag, and sum d_k^2 (see `variance_ratios`); compiled: the numpy version was
    ~25 calls on 500 points, ~0.15 ms, against ~0.02 ms here. The sums of squares and cross-products are
    added one by one (numpy's BLAS dot adds in another order: the last bits differ, ~1e-16 relative)."""
    nq = len(x) - 1
    mu = (x[nq] - x[0]) / nq
    # loops index views from 0 (x[1:] rather than x[k + 1]): numba then skips negative-index checks
    d2 = np.empty(nq)
    later = x[1:]
    for k in range(nq):
        dk = (later[k] - x[k]) - mu
        d2[k] = dk * dk
    ss = pairwise_sum(d2, 0, nq)  # d2.sum(), as numpy adds it
    vr = np.empty(len(lags))
    theta = np.zeros(len(lags))
    if not (ss > 1e-300 and ss < np.inf):
        return vr, theta, ss
    sigma_a2 = ss / (nq - 1)
    for j in range(1, weights.shape[1] + 1):
        cross = 0.0
        led = d2[j:]
        for k in range(nq - j):
            cross += led[k] * d2[k]
        delta = nq * cross / ss**2
        for i in range(len(lags)):
            theta[i] += weights[i, j - 1] * delta
    for i in range(len(lags)):
        q = lags[i]
        qmu = q * mu
        dq = np.empty(nq + 1 - q)
        ahead = x[q:]
        for k in range(nq + 1 - q):
            dq[k] = (ahead[k] - x[k]) - qmu
        sq = np.dot(dq, dq)
        m = q * (nq - q + 1) * (1 - q / nq)
        vr[i] = sq / m / sigma_a2
    return vr, theta, ss


@lru_cache(maxsize=64)
def _vr_weights(lags: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Per lag q: the weights [2 (q - j) / q]^2 of delta(j), j = 1..max(lags) - 1 (zero from j = q on),
    whose product with delta is theta(q); and the homoskedastic variance 2 (2q - 1)(q - 1) / (3q)."""
    j = np.arange(1, max(lags))
    weights = np.array([np.where(j < q, (2.0 * (q - j) / q) ** 2, 0.0) for q in lags])
    homo_var = np.array([2 * (2 * q - 1) * (q - 1) / (3 * q) for q in lags])
    weights.flags.writeable = homo_var.flags.writeable = False
    return weights, homo_var


def chow_denning(z: np.ndarray, alpha: float) -> tuple[float, float]:
    """Joint test of several variance ratios (Chow & Denning 1993), Sidak bound of the SMM distribution.

    Returns (p-value of max |z|, critical |z| at level alpha).
    """
    m = len(z)
    p_single = 2.0 * ndtr(-np.abs(z).max())
    p_joint = 1.0 - (1.0 - p_single) ** m
    return float(p_joint), _sidak_critical(alpha, m)


@lru_cache(maxsize=64)
def _sidak_critical(alpha: float, m: int) -> float:
    return float(-ndtri((1.0 - (1.0 - alpha) ** (1.0 / m)) / 2.0))


def realised_vol(returns: np.ndarray, window: int, lookback: int, bars_per_year: float) -> tuple[float, float]:
    """Annualised realised vol of the last `window` returns, and its percentile among the rolling
    values whose windows end within the last `lookback` bars."""
    r = np.asarray(returns, dtype=np.float64)
    if len(r) < 2 * window:
        raise TheoryError(f"realised volatility over {window} bars needs at least {2 * window} returns, got {len(r)}")
    return _realised_vol(np.ascontiguousarray(r[-(lookback + window - 1) :]), window, math.sqrt(bars_per_year))


@compiled
def _realised_vol(r: np.ndarray, window: int, annualise: float) -> tuple[float, float]:
    """What `rolling_std(r, window) * annualise` and `percentile_rank` of its last value give, bit for bit
    (each window's std as numpy's does it: pairwise mean, deviations, pairwise sum of their squares);
    compiled: the numpy version cost ~0.14 ms, mostly a std over 500 rows of 24."""
    count = len(r) - window + 1
    rolling = np.empty(count)
    squares = np.empty(window)
    for start in range(count):
        mean = pairwise_sum(r, start, window) / window
        values = r[start : start + window]  # a view indexed from 0: no negative-index checks
        for i in range(window):
            dev = values[i] - mean
            squares[i] = dev * dev
        rolling[start] = math.sqrt(pairwise_sum(squares, 0, window) / (window - 1)) * annualise
    current = rolling[-1]
    finite = at_or_below = 0
    for v in rolling:
        if np.isfinite(v):
            finite += 1
            at_or_below += v <= current
    return current, at_or_below / finite if finite else np.nan


def _label(lags, vr, z, critical: float, vol_pct: float, p: VarianceParams) -> str:
    up = [q for q, v, s in zip(lags, vr, z, strict=True) if abs(s) >= critical and v > 1]
    down = [q for q, v, s in zip(lags, vr, z, strict=True) if abs(s) >= critical and v < 1]
    def bars(qs: list[int]) -> str:
        return ",".join(map(str, qs)) + " bars"

    if up and down:
        walk = f"mixed: trending over {bars(up)}, mean-reverting over {bars(down)}"
    elif up:
        walk = f"trending over {bars(up)}"
    elif down:
        walk = f"mean-reverting over {bars(down)}"
    else:
        walk = "random walk"
    if vol_pct >= p.high_vol_percentile:
        vol = "high vol"
    elif vol_pct <= p.low_vol_percentile:
        vol = "low vol"
    else:
        vol = "normal vol"
    return f"{walk}; {vol}"


def variance(
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    bars_per_year: float,
    params: VarianceParams | None = None,
) -> VarianceResult:
    """Variance ratios of log close, realised vol and its percentile, ATR. Arrays oldest first."""
    p = params or VarianceParams()
    close = np.asarray(close, dtype=np.float64)
    log_close = np.log(close)
    log_price = log_close[-p.lookback :]
    need = p.min_returns_per_lag * max(p.lags)
    if len(log_price) - 1 < need:
        raise TheoryError(
            f"variance ratios up to lag {max(p.lags)} need at least {need} returns, got {len(log_price) - 1}"
        )
    vr, z_star = _ratios_and_robust_z(log_price, p.lags)  # `need` >= 4 max(lags): long enough
    joint_p, critical = chow_denning(z_star, p.alpha)
    returns = log_close[1:] - log_close[:-1]  # np.diff's subtraction, without its Python layer
    rv, rv_pct = realised_vol(returns, p.vol_window, p.vol_lookback, bars_per_year)
    if len(close) < p.atr_period + 1:
        raise TheoryError(f"ATR({p.atr_period}) needs more than {p.atr_period} bars, got {len(close)}")
    a = float(atr(high, low, close, p.atr_period)[-1])
    return VarianceResult(
        lags=p.lags,
        variance_ratios=tuple(vr.tolist()),  # tolist: the same Python floats, one call
        z_robust=tuple(z_star.tolist()),
        p_values=tuple((2.0 * ndtr(-np.abs(z_star))).tolist()),
        joint_p_value=joint_p,
        joint_critical_z=critical,
        realised_vol=rv,
        vol_percentile=rv_pct,
        vol_window=p.vol_window,
        atr=a,
        atr_fraction=a / float(close[-1]),
        n=len(log_price) - 1,
        label=_label(p.lags, vr, z_star, critical, rv_pct, p),
    )


def _run(ctx: TheoryContext, params: VarianceParams) -> VarianceResult:
    c = ctx.candles
    return variance(c.high, c.low, c.close, c.bars_per_year, params)


THEORY = Theory(
    name="variance",
    description=(
        "Lo-MacKinlay (1988) variance ratios with robust z* and Chow-Denning joint test; "
        "realised volatility and its percentile; Wilder ATR."
    ),
    params=VarianceParams,
    result=VarianceResult,
    run=_run,
    min_bars=130,  # 8 returns per bar of the default longest lag (16) plus one, with room for the vol ranks
)
