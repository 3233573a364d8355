"""Hurst exponent of returns: do moves tend to continue (H > 0.5), reverse (H < 0.5), or neither?

Two estimators on the log returns (the increments, not the prices):
- DFA-1, the primary estimate (Peng et al. 1994, Phys. Rev. E 49, 1685). The profile is the
  cumulative sum of demeaned returns. For each scale s (log-spaced from `min_scale` to
  `max_scale_fraction` * n) the profile is cut into non-overlapping windows of s bars, from the
  start and again from the end so no bar is dropped; a least-squares line is removed from each
  window and F(s) is the RMS of what is left. H is the slope of log F(s) against log s.
- Rescaled range (Hurst 1951) with the Anis & Lloyd (1976) correction. Raw R/S is biased upward
  on short samples; subtracting the expected log R/S of iid Gaussian noise (with Peters' 1994
  small-n factor (n - 1/2) / n, which goes with S as the sample standard deviation) removes most
  of it: H_AL = 0.5 + slope of (log R/S(n) - log E[R/S(n)]) against log n (Weron 2002, Physica A
  312, 285). R/S is the secondary estimate: it reads high H low (about 0.69 for H = 0.8 at n = 500).

Uncertainty: `null_sd` is the sampling standard deviation of the DFA estimate on Gaussian white noise
of the same length and scales (seeded simulation, cached per length), i.e. how far H wanders from
0.5 by chance; `hurst_se` is the regression standard error of the slope (which understates the
spread, because F(s) at neighbouring scales share data).

Label: "random walk" when |H - 0.5| < `z_noise` * null_sd; otherwise persistent / trending
(H > 0.5) or anti-persistent / mean-reverting (H < 0.5), "mildly" when |H - 0.5| < `moderate_at`,
"moderately" below `strong_at`, else "strongly".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from pydantic import Field, model_validator
from scipy.special import gammaln

from theories.base import (
    BARS,
    COUNT,
    RATIO,
    SIGMA,
    Theory,
    TheoryContext,
    TheoryError,
    TheoryParams,
    TheoryResult,
    dec,
    num,
    unit,
)
from theories.jit import compiled
from theories.pairwise import pairwise_sum

MIN_SCALES = 4  # fewer points than this do not make a slope worth reporting
MIN_SPAN = 4  # the largest window must be >= 4x the smallest: two octaves of scale for the slope


class HurstParams(TheoryParams):
    lookback: int = Field(500, ge=160, description="Returns used, the most recent.")
    min_scale: int = Field(10, ge=4, description="Smallest window, in bars (DFA-1 is biased below ~10).")
    max_scale_fraction: float = Field(
        0.25, gt=0, le=0.5, description="Largest window as a fraction of the returns used (>= 4 windows per scale)."
    )
    n_scales: int = Field(10, ge=MIN_SCALES, le=40, description="Log-spaced window sizes (fewer if they round alike).")
    null_reps: int = Field(200, ge=50, le=5000, description="White-noise series simulated for the null spread.")
    null_seed: int = Field(20240601, description="Seed of the white-noise simulation (results stay reproducible).")
    z_noise: float = Field(1.96, gt=0, description="|H - 0.5| under this many null sds reads as a random walk.")
    moderate_at: float = Field(0.1, gt=0, lt=0.5, description="|H - 0.5| from which a departure is 'moderate'.")
    strong_at: float = Field(0.2, gt=0, lt=0.5, description="|H - 0.5| from which a departure is 'strong'.")

    @model_validator(mode="after")
    def _ordered_strengths(self) -> HurstParams:
        if self.strong_at <= self.moderate_at:
            raise ValueError("strong_at must exceed moderate_at")
        return self


class HurstResult(TheoryResult):
    hurst: float = unit(RATIO, "Hurst exponent by DFA-1 on log returns; 0.5 = random walk, >0.5 trending.")
    hurst_se: float = unit(RATIO, "Regression standard error of the DFA slope (understates the true spread).")
    null_sd: float = unit(RATIO, "Standard deviation of the DFA estimate on white noise of this length.")
    z: float = unit(SIGMA, "(hurst - 0.5) / null_sd: how many null sds the estimate sits from a random walk.")
    rs_hurst: float = unit(RATIO, "Hurst exponent by rescaled range, Anis-Lloyd-Peters corrected.")
    rs_hurst_raw: float = unit(RATIO, "Hurst exponent by raw rescaled range (biased upward on short samples).")
    n: int = unit(BARS, "Returns used.")
    min_scale: int = unit(BARS, "Smallest window used.")
    max_scale: int = unit(BARS, "Largest window used.")
    n_scales: int = unit(COUNT, "Window sizes in the fits.")

    def summary(self) -> str:
        return (
            f"H_dfa {dec(self.hurst)} (z {num(self.z, 2, True)} vs white noise), H_rs {dec(self.rs_hurst)} "
            f"-> {self.label}"
        )


def log_scales(n: int, min_scale: int = 10, max_scale_fraction: float = 0.25, n_scales: int = 10) -> np.ndarray:
    """Distinct integer window sizes, log-spaced from `min_scale` to `max_scale_fraction` * n (read-only)."""
    return _log_scales(n, min_scale, max_scale_fraction, n_scales)


@lru_cache(maxsize=256)
def _log_scales(n: int, min_scale: int, max_scale_fraction: float, n_scales: int) -> np.ndarray:
    top = int(n * max_scale_fraction)
    if top < MIN_SPAN * min_scale:
        raise TheoryError(
            f"{n} returns are too few: windows of {min_scale} to {top} bars span less than {MIN_SPAN}x"
        )
    scales = np.unique(np.round(np.geomspace(min_scale, top, n_scales)).astype(np.int64))
    if len(scales) < MIN_SCALES:
        raise TheoryError(
            f"only {len(scales)} distinct window sizes between {min_scale} and {top} bars; need {MIN_SCALES}"
        )
    scales.flags.writeable = False
    return scales


@dataclass(frozen=True)
class _Layout:
    """Every window of every scale laid end to end, so one pass of numpy calls covers all the scales.

    At each scale s the series is cut into m = n // s windows of s points from the start and, unless
    they tile it exactly (the backward windows would then repeat the forward ones), m more from the
    end, so no point is dropped. Window after window, scale after scale, `index` lists the positions
    of their points in the series. Per-window sums are `np.add.reduceat` over `starts`, per-scale sums
    over `scale_starts` (they add in another order than a per-scale loop did: the last bits differ).
    """

    scales: tuple[int, ...]
    log_scales: np.ndarray  # (K,) log s, the regressor of the Hurst slopes
    log_scales_centred: np.ndarray  # (K,) log s minus its mean, and its sum of squares (`_centred`)
    log_scales_ss: float
    index: np.ndarray  # (E,) position in the series of each laid-out point
    t: np.ndarray  # (E,) time within the window, centred: k - (s - 1) / 2
    starts: np.ndarray  # (W,) first point of each window
    size: np.ndarray  # (W,) s of each window, as float
    counts: np.ndarray  # (W,) s of each window, as int: np.repeat by it spreads a per-window value over its points
    tt: np.ndarray  # (W,) sum of t^2 over the window
    scale_starts: np.ndarray  # (K,) first point of each scale's windows
    scale_windows: np.ndarray  # (K,) first window of each scale
    scale_points: np.ndarray  # (K,) points laid out at each scale (windows x s)


@lru_cache(maxsize=64)
def _layout(n: int, scales: tuple[int, ...]) -> _Layout:
    index, t, starts, size, tt, scale_starts, scale_windows, scale_points = ([] for _ in range(8))
    points = windows = 0
    for s in scales:
        m = n // s
        firsts = [k * s for k in range(m)]
        if m * s != n:
            firsts += [n - m * s + k * s for k in range(m)]
        ts = np.arange(s) - (s - 1) / 2.0
        scale_starts.append(points)
        scale_windows.append(windows)
        scale_points.append(len(firsts) * s)
        for first in firsts:
            index.append(np.arange(first, first + s))
            t.append(ts)
            starts.append(points)
            points += s
        windows += len(firsts)
        size += [float(s)] * len(firsts)
        tt += [float(ts @ ts)] * len(firsts)
    sizes = np.array(size)
    log_s = np.log(np.array(scales, dtype=np.float64))
    centred, ss = _centred(log_s)
    layout = _Layout(
        scales=scales, log_scales=log_s, log_scales_centred=centred, log_scales_ss=ss, index=np.concatenate(index),
        t=np.concatenate(t), starts=np.array(starts), size=sizes, counts=sizes.astype(np.int64), tt=np.array(tt),
        scale_starts=np.array(scale_starts), scale_windows=np.array(scale_windows),
        scale_points=np.array(scale_points, dtype=np.float64),
    )
    for a in vars(layout).values():
        if isinstance(a, np.ndarray):
            a.flags.writeable = False
    return layout


def _window_deviations(y: np.ndarray, lay: _Layout) -> np.ndarray:
    """Each laid-out window of the series `y` minus its own mean."""
    seg = y[lay.index]
    return seg - np.repeat(np.add.reduceat(seg, lay.starts) / lay.size, lay.counts)


def _dfa_from_deviations(dev: np.ndarray, lay: _Layout) -> np.ndarray:
    # the residual of each window's line: b = sum(t y') / sum(t^2), then y' - b t
    b = np.add.reduceat(dev * lay.t, lay.starts) / lay.tt
    resid = dev - np.repeat(b, lay.counts) * lay.t
    return np.sqrt(np.add.reduceat(resid * resid, lay.scale_starts) / lay.scale_points)


def dfa_fluctuation(x: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """DFA-1 fluctuation F(s) of the increments `x` (last axis; leading axes are independent series).

    Each window's line is removed in closed form: with t centred and y' the window minus its mean, the
    slope is b = sum(t y') / sum(t^2) and the residual y' - b t. (The shortcut sum(y'^2) - b^2 sum(t^2)
    cancels badly when the fit is near perfect, so the residuals are formed.) All scales at once, on
    the windows laid out by `_layout`: a dozen numpy calls instead of a dozen per scale.
    """
    x = np.asarray(x, dtype=np.float64)
    lay = _layout(x.shape[-1], tuple(int(s) for s in scales))
    # one series at a time: gathering the windows of a 2-d batch by fancy index measured several times
    # slower per point than of one series, and batches are only the null simulation (once per length)
    profile = _profile(x).reshape(-1, x.shape[-1])
    out = np.array([_dfa_from_deviations(_window_deviations(row, lay), lay) for row in profile])
    return out.reshape(*x.shape[:-1], len(lay.scales))


def _profile(x: np.ndarray) -> np.ndarray:
    # sums over counts rather than .mean(): at these sizes numpy's mean wrapper costs more than the sums
    return np.cumsum(_demeaned(x), axis=-1)


def _demeaned(x: np.ndarray) -> np.ndarray:
    return x - x.sum(axis=-1, keepdims=True) / x.shape[-1]


def _slope(log_x: np.ndarray, log_y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """OLS slope of log_y (last axis) on log_x and its standard error."""
    return _slope_on_centred(*_centred(log_x), log_y)


def _centred(log_x: np.ndarray) -> tuple[np.ndarray, float]:
    # sums over counts rather than .mean() (the same numbers): the mean wrapper costs more at these sizes
    xc = log_x - log_x.sum() / log_x.shape[-1]
    return xc, float(xc @ xc)


def _slope_on_centred(xc: np.ndarray, sxx: float, log_y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`_slope` given the centred regressor and its sum of squares (`_centred`)."""
    k = xc.shape[-1]
    yc = log_y - log_y.sum(axis=-1, keepdims=True) / k
    slope = (yc @ xc) / sxx
    resid = yc - slope[..., None] * xc
    se = np.sqrt((resid * resid).sum(axis=-1) / (k - 2) / sxx)
    return slope, se


def dfa_hurst(x: np.ndarray, scales: np.ndarray) -> tuple[float, float]:
    """DFA-1 Hurst exponent of the increments `x` and the regression standard error of the slope."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError("dfa_hurst takes one series")
    if not np.all(np.isfinite(x)):
        raise TheoryError("returns contain non-finite values")
    f = dfa_fluctuation(x, scales)
    if not np.all(f > 0):
        raise TheoryError("DFA fluctuation is zero at some scale: the returns have no spread to measure")
    h, se = _slope(np.log(scales.astype(np.float64)), np.log(f))
    return float(h), float(se)


@lru_cache(maxsize=256)
def dfa_null(
    n: int, min_scale: int = 10, max_scale_fraction: float = 0.25, n_scales: int = 10, reps: int = 200,
    seed: int = 20240601,
) -> tuple[float, float]:
    """Mean and standard deviation of the DFA-1 estimate on `reps` seeded Gaussian white-noise series of
    length n: the spread an estimate shows by chance when there is no memory at all."""
    scales = log_scales(n, min_scale, max_scale_fraction, n_scales)
    noise = np.random.default_rng(seed).standard_normal((reps, n))
    h, _ = _slope(np.log(scales.astype(np.float64)), np.log(dfa_fluctuation(noise, scales)))
    return float(h.mean()), float(h.std(ddof=1))


def rescaled_range(x: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Mean R/S of `x` over non-overlapping windows (from the start and from the end) at each scale.

    In each window: Y = cumsum(x - mean), R = max Y - min Y (Y ends at 0, so R spans 0), S = sample
    standard deviation (divisor n - 1). That divisor is what `expected_rs` is exact for: the plain
    Anis-Lloyd value is exact for divisor n, and Peters' factor (n - 1/2)/n ~ sqrt((n - 1)/n) converts
    it (checked by simulation: within 0.3% from n = 10). Windows with zero spread are skipped.

    All windows at once (see `_layout`). Y is one running sum over every window laid end to end: each
    window's Y is then its own plus a constant (the sum of the windows before it, which is ~0 since
    each sums to ~0), and the constant drops out of max - min.
    """
    x = np.asarray(x, dtype=np.float64)
    lay = _layout(len(x), tuple(int(s) for s in scales))
    return _rs_from_deviations(_window_deviations(x, lay), lay, scales)


def _rs_from_deviations(dev: np.ndarray, lay: _Layout, scales: np.ndarray) -> np.ndarray:
    y = np.cumsum(dev)
    r = np.maximum.reduceat(y, lay.starts) - np.minimum.reduceat(y, lay.starts)
    sd = np.sqrt(np.add.reduceat(dev * dev, lay.starts) / (lay.size - 1))
    ok = sd > 0
    count = np.add.reduceat(ok, lay.scale_windows, dtype=np.int64)
    if not count.all():
        s = scales[np.flatnonzero(count == 0)[0]]
        raise TheoryError(f"every {s}-bar window of returns is constant: no rescaled range")
    return np.add.reduceat(np.divide(r, sd, out=np.zeros_like(r), where=ok), lay.scale_windows) / count


def expected_rs(n: np.ndarray | int) -> np.ndarray:
    """Expected R/S of n iid Gaussian values: Anis & Lloyd (1976) with Peters' (1994) factor (n - 1/2) / n.

    E[R/S]_n = (n - 1/2)/n * Gamma((n-1)/2) / (sqrt(pi) Gamma(n/2)) * sum_{i=1}^{n-1} sqrt((n - i) / i).
    The gamma ratio is taken through log-gamma, so no large-n approximation is needed.
    """
    ns = np.atleast_1d(np.asarray(n, dtype=np.int64))
    if np.any(ns < 2):
        raise ValueError("the expected rescaled range needs n >= 2")
    out = np.empty(len(ns))
    for j, m in enumerate(ns):
        i = np.arange(1, m, dtype=np.float64)
        total = np.sqrt((m - i) / i).sum()
        ratio = math.exp(gammaln((m - 1) / 2.0) - gammaln(m / 2.0)) / math.sqrt(math.pi)
        out[j] = (m - 0.5) / m * ratio * total
    return out


@lru_cache(maxsize=256)
def _log_expected_rs(scales: tuple[int, ...]) -> np.ndarray:
    out = np.log(expected_rs(np.array(scales)))
    out.flags.writeable = False
    return out


def rs_hurst(x: np.ndarray, scales: np.ndarray) -> tuple[float, float]:
    """Hurst exponent by rescaled range: (Anis-Lloyd-Peters corrected, raw)."""
    log_n = np.log(scales.astype(np.float64))
    log_rs = np.log(rescaled_range(x, scales))
    raw, _ = _slope(log_n, log_rs)
    excess, _ = _slope(log_n, log_rs - _log_expected_rs(tuple(int(s) for s in scales)))
    return 0.5 + float(excess), float(raw)


def hurst_label(h: float, null_sd: float, p: HurstParams) -> str:
    """Plain words for an estimate H given its null spread, by the thresholds in `HurstParams`."""
    d = h - 0.5
    if abs(d) < p.z_noise * null_sd:
        return "random walk"
    strength = "strongly" if abs(d) >= p.strong_at else "moderately" if abs(d) >= p.moderate_at else "mildly"
    kind = "trending" if d > 0 else "mean-reverting"
    return f"{strength} {kind}"


def hurst(returns: np.ndarray, params: HurstParams | None = None) -> HurstResult:
    """Hurst exponent of the most recent `lookback` returns by DFA-1 and by corrected R/S, labelled."""
    p = params or HurstParams()
    x = np.ascontiguousarray(np.asarray(returns, dtype=np.float64)[-p.lookback :])
    if len(x) < 2 or not np.isfinite(x).all():
        raise TheoryError("Hurst needs finite returns")
    try:
        scales = log_scales(len(x), p.min_scale, p.max_scale_fraction, p.n_scales)
    except TheoryError:
        _check_spread(x, _demeaned(x))  # a constant series is the first thing to say
        raise
    _, null_sd = dfa_null(len(x), p.min_scale, p.max_scale_fraction, p.n_scales, p.null_reps, p.null_seed)
    # what dfa_hurst and rs_hurst compute, in one compiled pass over the windows of every scale; the
    # three slopes (DFA, raw R/S, corrected R/S) are then fitted as one batch
    lay = _layout(len(x), tuple(int(s) for s in scales))
    f, rs_sum, rs_count, spread, size = _dfa_and_rs(x, scales, lay.tt[lay.scale_windows], lay.scale_points)
    if math.sqrt(spread / len(x)) <= 1e-12 * (size / len(x)):
        raise TheoryError(_CONSTANT)
    if not (f > 0).all():
        raise TheoryError("DFA fluctuation is zero at some scale: the returns have no spread to measure")
    if not rs_count.all():
        s = scales[np.flatnonzero(rs_count == 0)[0]]
        raise TheoryError(f"every {s}-bar window of returns is constant: no rescaled range")
    log_f, log_rs = np.log((f, rs_sum / rs_count))
    slopes, ses = _slope_on_centred(
        lay.log_scales_centred, lay.log_scales_ss, np.stack((log_f, log_rs, log_rs - _log_expected_rs(lay.scales)))
    )
    h, se, h_raw, h_al = float(slopes[0]), float(ses[0]), float(slopes[1]), 0.5 + float(slopes[2])
    return HurstResult(
        hurst=h, hurst_se=se, null_sd=null_sd, z=(h - 0.5) / null_sd, rs_hurst=h_al, rs_hurst_raw=h_raw,
        n=len(x), min_scale=int(scales[0]), max_scale=int(scales[-1]), n_scales=len(scales),
        label=hurst_label(h, null_sd, p),
    )


_CONSTANT = "returns are constant: a Hurst exponent needs returns with non-zero spread"


def _check_spread(x: np.ndarray, d: np.ndarray) -> None:
    # x.std() against np.abs(x).mean(), as numpy computes them: constant up to rounding
    # (np.full(n, c).std() is not exactly 0)
    if math.sqrt((d * d).sum() / len(x)) <= 1e-12 * (np.abs(x).sum() / len(x)):
        raise TheoryError(_CONSTANT)


@compiled
def _dfa_and_rs(
    x: np.ndarray, scales: np.ndarray, tt: np.ndarray, scale_points: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
    """DFA-1 F(s), the sum and count of the R/S of the non-constant windows at each scale, sum of squared
    deviations and sum of |x|: what `_dfa_from_deviations`, `_rs_from_deviations` and `_check_spread`
    compute on the `_layout` windows, in the same order of additions, so bit for bit (`tt` is sum t^2
    of a window at each scale). Compiled: the numpy version's ~40 calls and gathers cost ~0.35 ms."""
    n = len(x)
    d = x - pairwise_sum(x, 0, n) / n
    squares = d * d
    spread = pairwise_sum(squares, 0, n)
    size = pairwise_sum(np.abs(x), 0, n)
    profile = np.cumsum(d)
    k = len(scales)
    f, rs_sum, rs_count = np.empty(k), np.empty(k), np.zeros(k, np.int64)
    # per scale, every window's squared detrended residuals, and every window's R/S, laid end to end
    resid2 = np.empty(2 * n)
    ratios = np.empty(2 * (n // scales[0]))
    dev_y, dev_x = np.empty(n), np.empty(n)
    running = 0.0  # the laid-out R/S running sum continues across windows and scales
    for i in range(k):
        s = scales[i]
        m = n // s
        windows = m if m * s == n else 2 * m
        half = (s - 1) / 2.0
        points = 0
        for w in range(windows):
            first = w * s if w < m else n - m * s + (w - m) * s
            # views indexed from 0 by range loops: numba then skips negative-index checks (~2x faster)
            yw, xw, fill = profile[first : first + s], x[first : first + s], resid2[points : points + s]
            # np.add.reduceat sums a segment as its first value plus the pairwise sum of the rest
            mean_y = (yw[0] + pairwise_sum(yw, 1, s - 1)) / s
            mean_x = (xw[0] + pairwise_sum(xw, 1, s - 1)) / s
            for j in range(s):
                dev_y[j] = yw[j] - mean_y
                dev_x[j] = xw[j] - mean_x
                squares[j] = dev_y[j] * (j - half)
            b = (squares[0] + pairwise_sum(squares, 1, s - 1)) / tt[i]
            for j in range(s):
                r = dev_y[j] - b * (j - half)
                fill[j] = r * r
            points += s
            low = high = 0.0
            for j in range(s):
                running += dev_x[j]
                if j == 0 or running > high:
                    high = running
                if j == 0 or running < low:
                    low = running
                squares[j] = dev_x[j] * dev_x[j]
            sd = math.sqrt((squares[0] + pairwise_sum(squares, 1, s - 1)) / (s - 1.0))
            if sd > 0:
                ratios[w] = (high - low) / sd
                rs_count[i] += 1
            else:
                ratios[w] = 0.0
        f[i] = math.sqrt((resid2[0] + pairwise_sum(resid2, 1, points - 1)) / scale_points[i])
        rs_sum[i] = ratios[0] + pairwise_sum(ratios, 1, windows - 1)
    return f, rs_sum, rs_count, spread, size


def _run(ctx: TheoryContext, params: HurstParams) -> HurstResult:
    return hurst(ctx.candles.log_returns(), params)


THEORY = Theory(
    name="hurst",
    description="Hurst exponent of returns by DFA-1 (Peng et al. 1994) and Anis-Lloyd corrected R/S (1976).",
    params=HurstParams,
    result=HurstResult,
    run=_run,
    # default windows run from 10 bars to n/4, which must span 4x: n >= 160 returns, 161 candles
    min_bars=161,
)
