"""Odds of a stop/target bracket: which level is hit first, and what the trade returns.

For a trade entered at `entry` with a stop and a target, held at most `horizon` bars, two methods
give P(target first), P(stop first), P(neither within the horizon), the expected simple return
of the trade, and VaR95 / CVaR95 of that return (losses as positive fractions of the entry).
Stops and targets are resting orders: they trigger inside a bar, the moment the price touches
them, not at the next close. Both methods price that.

(a) Closed form: the log price is Brownian motion with drift `mu` and variance `s2` per bar
    (`s2` the variance of close-to-close log returns; `mu` a mean log return, so it already holds
    the -s2/2 term). With the barriers at +u and -d in log distance, the infinite-horizon hit
    probability is the gambler's-ruin formula P(+u before -d) = (1 - exp(2 mu d / s2)) /
    (exp(-2 mu u / s2) - exp(2 mu d / s2)), d / (u + d) when mu = 0 (Karlin & Taylor, A First
    Course in Stochastic Processes, 1975, ch. 7). The finite horizon uses the eigenfunction
    (sine-series) expansion of the density of drifted Brownian motion killed at both barriers
    (Cox & Miller, The Theory of Stochastic Processes, 1965, sec. 5.7): the flux through each
    barrier integrates in time in closed form, and the surviving density is integrated exactly
    over the cells of a grid, which gives the whole return distribution: atoms at the stop and
    the target, density in between. The snapshot monitors the barriers CONTINUOUSLY, because
    intra-bar triggers are continuous monitoring (to the resolution of the exchange's trades).
    For a price checked only at closes, `discrete_correction` applies Broadie, Glasserman & Kou
    (1997, Mathematical Finance 7(4)): each barrier moves AWAY from the start by
    beta * sigma * sqrt(dt), beta = -zeta(1/2) / sqrt(2 pi) = 0.5826 (dt = 1 bar), and survivors
    that end beyond a real level are booked as a hit of it (the last check would have seen them).
(b) Simulation: whole bars are resampled, not just closes. Each recent bar is kept as its log
    moves from the previous close: o = ln(O/C_prev), h = ln(H/C_prev), l = ln(L/C_prev),
    c = ln(C/C_prev). A circular block bootstrap (Politis & Romano 1992; blocks of `block` bars
    keep short serial dependence and volatility clusters), from a seeded numpy Generator, draws
    bar indices for `n_paths` (>= 10,000) paths of `horizon` bars. A path's close level is the
    running sum of c; within bar k the price opens at level[k-1] + o and reaches level[k-1] + h
    and level[k-1] + l. For a long (mirror for a short) the first bar whose range touches a level
    decides the exit:
      - a bar that OPENS beyond a level (a gap) exits at its open: worse than the stop, better
        than the target;
      - a bar whose range touches both levels exits at the STOP: the bar does not say which came
        first, and the stop is the conservative guess (the paper broker books the same rule);
      - otherwise the exit is at the level touched (no slippage);
      - a path that touches neither within the horizon exits at the last close.
    Long and short brackets reuse the same paths.

Drift. The mean of ~500 hourly log returns usually has |t| < 2, yet over 24 bars a drift with
|t| ~ 1 moves the expected return by ~0.4 R and so decides which side looks favoured. Both methods
therefore use a positive-part James-Stein shrinkage of the drift toward zero,
    mu_used = mu_hat * max(0, 1 - 1 / t^2),   t = mu_hat / (sd / sqrt(n)),
the empirical-Bayes form of Stein's rule (Efron & Morris, JASA 68, 1973, and JASA 70, 1975): with
a prior mu ~ N(0, tau^2) the posterior mean is mu_hat tau^2 / (tau^2 + se^2), and estimating
tau^2 + se^2 by mu_hat^2 gives the factor above, cut at zero. For a single mean this is a noise
filter, not Stein's dominance result (that needs three or more means): |t| <= 1 gives no drift,
|t| = 2 keeps 3/4 of it, |t| = 3 keeps 8/9. `shrink_drift=False` uses the raw mean. In the
simulation the resampled c are de-meaned and mu_used added back; o, h and l move by the same
amount, so each bar keeps its shape.

Returns are simple returns of the trade as fractions of the entry price: exit / entry - 1 for a
long, 1 - exit / entry for a short. The closed form exits exactly at the levels, so when P(stop)
is at least 5% its VaR95 and CVaR95 both equal the stop distance; the simulation adds the gaps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from theories.base import (
    BARS,
    COUNT,
    FRACTION,
    LABEL,
    LOG_RETURN,
    PRICE,
    PROBABILITY,
    RATIO,
    STATISTIC,
    Theory,
    TheoryContext,
    TheoryError,
    TheoryParams,
    TheoryResult,
    dec,
    num,
    unit,
)
from theories.candles import Candles
from theories.indicators import atr
from theories.jit import compiled as _compiled

BGK_BETA = 0.5825971579390106  # -zeta(1/2) / sqrt(2 pi), Broadie, Glasserman & Kou (1997)
TAIL = 0.05  # VaR95 / CVaR95 look at the worst 5% of outcomes
_SERIES_DECAY = 50.0  # sine-series terms kept until exp(-lambda_n T) < exp(-50)
_MAX_TERMS = 20_000
_MIN_CELLS = 400
_MAX_CELLS = 20_000


class MonteCarloParams(TheoryParams):
    k_stop: float = Field(1.5, gt=0, le=20, description="Stop distance from the last close, in ATRs.")
    reward_risk: float = Field(2.0, gt=0, le=20, description="Target distance / stop distance (R).")
    horizon: int = Field(24, ge=1, le=1000, description="Longest holding time, in bars.")
    atr_period: int = Field(14, ge=2, le=200, description="ATR length (Wilder), in bars.")
    lookback: int = Field(500, ge=30, description="Recent bars used for drift, variance and resampling.")
    n_paths: int = Field(10_000, ge=10_000, le=1_000_000, description="Simulated paths.")
    block: int = Field(6, ge=1, le=100, description="Bootstrap block length, in bars.")
    seed: int = Field(0, ge=0, description="Seed of the simulation's random generator.")
    shrink_drift: bool = Field(
        True, description="Shrink the drift toward zero by the positive-part James-Stein factor max(0, 1 - 1/t^2)."
    )
    discrete_correction: bool = Field(
        False,
        description=(
            "Closed form for a price checked only at closes (Broadie-Glasserman-Kou shift). Off: stops and targets "
            "trigger inside the bar, which is continuous monitoring."
        ),
    )
    edge_r: float = Field(
        0.1, gt=0, description="Half the gap in simulated expected return between the sides, in R, to favour one."
    )
    drift_t: float = Field(
        2.0, gt=0, description="|t| of the raw drift below which the label calls a kept drift weak."
    )
    near_zero: float = Field(
        0.25, ge=0, lt=1, description="Shrinkage factor at or below which the label says the drift was shrunk to ~0."
    )
    disagreement: float = Field(
        0.05, gt=0, description="Gap between the two methods' P(target), P(stop) or P(neither) worth pointing out."
    )


class BracketOdds(BaseModel):
    """What one method says about one bracket."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    p_target: float = unit(PROBABILITY, "P(the target is reached before the stop, within the horizon).")
    p_stop: float = unit(PROBABILITY, "P(the stop is reached before the target, within the horizon).")
    p_neither: float = unit(PROBABILITY, "P(neither level is reached within the horizon).")
    expected_return: float = unit(FRACTION, "Expected simple return of the trade, fraction of entry.")
    var95: float = unit(FRACTION, "95% value at risk of the trade's return: a loss, as a positive fraction.")
    cvar95: float = unit(FRACTION, "Mean loss in the worst 5% of outcomes (expected shortfall), positive fraction.")


class DriftEstimate(BaseModel):
    """The drift and volatility of recent close-to-close log returns, and the drift the methods use."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    raw: float = unit(LOG_RETURN, "Mean log return per bar.")
    t: float = unit(STATISTIC, "t statistic of the mean: mean / (sd / sqrt(n)).")
    used: float = unit(LOG_RETURN, "Drift per bar both methods use: raw * max(0, 1 - 1/t^2), or raw unshrunk.")
    volatility: float = unit(LOG_RETURN, "Standard deviation of log returns per bar (ddof 1).")
    n: int = unit(BARS, "Returns the estimate rests on.")


class BracketReport(BaseModel):
    """Both methods' odds for one bracket, with the inputs they used."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    side: str = unit(LABEL, "'long' (stop below entry) or 'short' (stop above entry).")
    entry: float = unit(PRICE, "Entry price.")
    stop: float = unit(PRICE, "Stop price.")
    target: float = unit(PRICE, "Target price.")
    horizon: int = unit(BARS, "Longest holding time, in bars.")
    drift: DriftEstimate
    closed_form: BracketOdds
    simulated: BracketOdds


# --- closed form ------------------------------------------------------------------------------


def barrier_probability(mu: float, s2: float, up: float, down: float) -> float:
    """P(Brownian motion with drift `mu` and variance `s2` per unit time, started at 0, reaches +up
    before -down), with no time limit: the gambler's-ruin formula, d / (u + d) when mu = 0.

    Written with expm1 in the form that cannot overflow for either sign of the drift.
    """
    if s2 <= 0 or up <= 0 or down <= 0:
        raise TheoryError("barrier probability needs positive variance and barriers on both sides of the start")
    theta = 2.0 * mu / s2
    if theta == 0.0 or abs(theta) * (up + down) < 1e-12:
        return down / (up + down)
    if theta > 0:
        return math.expm1(-theta * down) / math.expm1(-theta * (up + down))
    return math.exp(theta * up) * math.expm1(theta * down) / math.expm1(theta * (up + down))


def _series_terms(s2: float, width: float, horizon: float) -> np.ndarray:
    lam1 = s2 * math.pi**2 / (2.0 * width**2)
    n = math.ceil(math.sqrt(_SERIES_DECAY / (lam1 * horizon))) + 1
    if n > _MAX_TERMS:
        raise TheoryError("horizon too short for the barrier distances: the sine series would not converge")
    return np.arange(1, max(n, 8) + 1, dtype=np.float64)


def killed_brownian(
    mu: float, s2: float, up: float, down: float, horizon: float, edges: np.ndarray | None = None
) -> tuple[float, float, np.ndarray]:
    """Brownian motion with drift killed at +up and -down, started at 0, after `horizon` time units.

    Returns (P(absorbed at +up by the horizon), P(absorbed at -down by the horizon), mass of the
    survivors in each cell between consecutive `edges`, points in [-down, up]). Eigenfunction
    expansion on y = x + down in [0, L], L = up + down (Cox & Miller 1965, sec. 5.7):
        p(t, y) = (2/L) exp(c (y - y0) - g t) sum_n sin(w_n y0) sin(w_n y) exp(-lam_n t),
        c = mu / s2, g = mu^2 / (2 s2), w_n = n pi / L, lam_n = s2 w_n^2 / 2.
    The flux through +up, -(s2/2) dp/dy at y = L, integrates in time term by term; the finite
    horizon is the infinite-horizon probability minus a tail that converges fast in n.
    """
    if s2 <= 0 or up <= 0 or down <= 0 or horizon <= 0:
        raise TheoryError("killed Brownian motion needs positive variance, horizon and barrier distances")
    width = up + down
    n = _series_terms(s2, width, horizon)
    c = mu / s2
    pre = s2 * math.pi / width**2
    p_up_inf = barrier_probability(mu, s2, up, down)
    y = np.empty(0) if edges is None else np.asarray(edges, dtype=np.float64) + down
    # the series' arithmetic is compiled, a few passes instead of some forty small numpy calls; its
    # exponentials are numpy's (one call), whose float64 exp is not the C library's compiled code calls
    w, k, sin0, exponent = _series_exponents(n, width, mu, s2, c, up, down, float(horizon), y)
    with np.errstate(over="ignore", invalid="ignore"):  # a strong drift over tiny variance: checked below
        terms, weights, cells = _series_parts(n, w, k, sin0, np.exp(exponent), y, c, width)
        tail_down = pre * float(terms[0].sum())
        tail_up = pre * float(terms[1].sum())
        mass = weights @ cells if edges is not None else np.empty(0)
    p_up = p_up_inf - tail_up
    p_down = (1.0 - p_up_inf) - tail_down
    ok = math.isfinite(p_up) and math.isfinite(p_down) and np.isfinite(mass).all()
    if not ok or min(p_up, p_down) < -1e-9 or p_up + p_down > 1 + 1e-9:
        raise TheoryError("closed form lost precision: drift too strong for the variance and barrier distances")
    return p_up, p_down, mass


@_compiled
def _series_exponents(n: np.ndarray, width: float, mu: float, s2: float, c: float, up: float, down: float,
                      horizon: float, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Of the sine series on [0, width] started at `down`: the frequencies w_n, the decay rates k_n,
    sin(w_n down) and, in one array for one call of numpy's exp, the exponents of each term's flux
    through -down, through +up and of its decay (-c down - k_n T, c up - k_n T, -k_n T), then those
    of the tilt at the points `y` (c (y - down)). Each float as numpy computed it, operation by
    operation (sin is the C library's, as numpy's is)."""
    terms = n.shape[0]
    w, k, sin0 = np.empty(terms), np.empty(terms), np.empty(terms)
    exponent = np.empty(3 * terms + y.shape[0])
    g = mu * mu / (2.0 * s2)
    for i in range(terms):
        w[i] = n[i] * math.pi / width
        k[i] = g + s2 * w[i] * w[i] / 2.0
        sin0[i] = math.sin(w[i] * down)
        kt = k[i] * horizon
        exponent[i] = -c * down - kt
        exponent[terms + i] = c * up - kt
        exponent[2 * terms + i] = -kt
    for j in range(y.shape[0]):
        exponent[3 * terms + j] = c * (y[j] - down)
    return w, k, sin0, exponent


@_compiled
def _series_parts(n: np.ndarray, w: np.ndarray, k: np.ndarray, sin0: np.ndarray, e: np.ndarray, y: np.ndarray,
                  c: float, width: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """From the exponentials `e` of `_series_exponents`' exponents: each term of the tails of the
    fluxes through -down and +up ((2, terms), for the caller to add up with numpy's pairwise sum),
    the weight of each term in the surviving density, (2 / width) sin(w_n y0) exp(-k_n T), and each
    term's integral over the cells between the points `y` (`_cell_integrals`; none without points)."""
    terms = n.shape[0]
    tails, weights, scale = np.empty((2, terms)), np.empty(terms), np.empty(terms)
    for i in range(terms):
        n_sin0 = n[i] * sin0[i]
        tails[0, i] = n_sin0 * e[i] / k[i]
        tails[1, i] = (n_sin0 if i % 2 == 0 else n_sin0 * -1.0) * e[terms + i] / k[i]  # times (-1)^(n+1)
        weights[i] = 2.0 / width * sin0[i] * e[2 * terms + i]
        scale[i] = c * c + w[i] * w[i]
    if y.shape[0] == 0:
        return tails, weights, np.empty((terms, 0))
    return tails, weights, _cell_integrals(w, y, e[3 * terms:], c, scale)


@_compiled
def _cell_integrals(w: np.ndarray, y: np.ndarray, tilt: np.ndarray, c: float, scale: np.ndarray) -> np.ndarray:
    """Integral of exp(c (y - y0)) sin(w_n y) over each cell between consecutive points `y`, for each
    frequency w_n: the antiderivative tilt (c sin(w y) - w cos(w y)) / scale at the points (`tilt`
    = exp(c (y - y0)), `scale` = c^2 + w^2), differenced. Compiled for sin and cos in one pass (the
    C library's, as numpy's are), with numpy's order of operations, so the same floats."""
    out = np.empty((w.shape[0], y.shape[0] - 1))
    for n in range(w.shape[0]):
        before = 0.0
        for j in range(y.shape[0]):
            wy = w[n] * y[j]
            anti = tilt[j] * (c * math.sin(wy) - w[n] * math.cos(wy)) / scale[n]
            if j:
                out[n, j - 1] = anti - before
            before = anti
    return out


def _bracket_levels(entry: float, stop: float, target: float) -> tuple[str, float, float]:
    """Side, and the log distances up and down to the upper and lower level."""
    if not (math.isfinite(entry) and math.isfinite(stop) and math.isfinite(target) and min(entry, stop, target) > 0):
        raise TheoryError("entry, stop and target must be finite positive prices")
    if stop < entry < target:
        return "long", math.log(target / entry), math.log(entry / stop)
    if target < entry < stop:
        return "short", math.log(stop / entry), math.log(entry / target)
    raise TheoryError(f"not a bracket: need stop < entry < target (long) or the mirror (short); got {stop}, {entry}, "
                      f"{target}")


def _trade_returns(side: str, entry: float, exit_price: np.ndarray | float) -> np.ndarray | float:
    return exit_price / entry - 1.0 if side == "long" else 1.0 - exit_price / entry


def _tail_risk(lo: np.ndarray, hi: np.ndarray, weights: np.ndarray, in_order: bool = False) -> tuple[float, float]:
    """VaR95 and CVaR95 (positive = loss) of a distribution given as atoms (lo == hi) and cells
    with mass spread evenly over [lo, hi]: minus the 5% quantile of the return, and minus the
    average of the quantile function over the worst 5% (Acerbi & Tasche 2002). `in_order`: the
    atoms and cells are already in the order a stable sort by (lo, hi) would put them."""
    if in_order:
        w = weights
    else:
        order = np.lexsort((hi, lo))
        lo, hi, w = lo[order], hi[order], weights[order]
    i, alpha, below, middle = _tail_cut(lo, hi, w)
    part = alpha - below
    q = lo[i] + (hi[i] - lo[i]) * (part / w[i] if w[i] > 0 else 0.0)
    tail_sum = float(np.dot(middle, w[:i]) + part * 0.5 * (lo[i] + q))
    return -float(q), -tail_sum / alpha


@_compiled
def _tail_cut(lo: np.ndarray, hi: np.ndarray, w: np.ndarray) -> tuple[int, float, float, np.ndarray]:
    """Where the worst 5% of the weights `w` (non-negative, in order) end: the index i of the atom or
    cell holding the 5% point (np.searchsorted's, side left, of alpha = 5% of the total in the
    running sum, at most the last), alpha, the running sum before i, and the middles 0.5 (lo + hi)
    of the atoms and cells before i. The running sum is np.cumsum's (in order, one add each), so
    the same floats; compiled, one pass instead of five numpy calls."""
    cum = np.empty(w.shape[0])
    total = 0.0
    for j in range(w.shape[0]):
        total = w[j] if j == 0 else total + w[j]
        cum[j] = total
    alpha = TAIL * total
    i = min(np.searchsorted(cum, alpha), w.shape[0] - 1)
    middle = np.empty(i)
    for j in range(i):
        middle[j] = 0.5 * (lo[j] + hi[j])
    return i, alpha, cum[i - 1] if i else 0.0, middle


def closed_form_odds(
    entry: float, stop: float, target: float, horizon: int, mu: float, s2: float, *, discrete_correction: bool = False
) -> BracketOdds:
    """The bracket's odds when the log price is Brownian motion with drift `mu` and variance `s2`
    per bar, watched continuously (the default: resting orders trigger inside the bar) or, with
    `discrete_correction`, checked once per bar at the close (Broadie-Glasserman-Kou shift)."""
    return BracketOdds(**_closed_form(entry, stop, target, horizon, mu, s2, discrete_correction))


def _closed_form(entry: float, stop: float, target: float, horizon: int, mu: float, s2: float,
                 discrete_correction: bool) -> dict[str, float]:
    """`closed_form_odds` as a plain dict, for callers that copy the numbers on (the snapshot)."""
    side, up, down = _bracket_levels(entry, stop, target)
    shift = BGK_BETA * math.sqrt(s2) if discrete_correction else 0.0
    up_k, down_k = up + shift, down + shift
    sd_t = math.sqrt(s2 * horizon)
    cells = int(min(max(_MIN_CELLS, math.ceil(40 * (up + down) / sd_t)), _MAX_CELLS))
    grid = _grid(down, up, cells)
    inner = grid[: cells + 1]
    edges = np.concatenate(([-down_k], inner, [up_k])) if shift else inner
    p_up, p_down, mass = killed_brownian(mu, s2, up_k, down_k, horizon, edges)
    mass = np.maximum(mass, 0.0)  # truncation noise below 1e-15
    if shift:  # survivors beyond a real level at the horizon were seen there by the last check
        p_down, p_up, mass = p_down + mass[0], p_up + mass[-1], mass[1:-1]
    p_up, p_down = max(p_up, 0.0), max(p_down, 0.0)
    r_down = _trade_returns(side, entry, entry * math.exp(-down))  # exit at the lower level
    r_up = _trade_returns(side, entry, entry * math.exp(up))
    lo, hi, weights, r_mid, in_order = _cell_returns(np.exp(grid), entry, side == "long", r_down, r_up, p_down,
                                                     p_up, mass)
    var95, cvar95 = _tail_risk(lo, hi, weights, in_order)
    expected = p_down * r_down + p_up * r_up + float(np.dot(r_mid, mass))
    p_target, p_stop = (p_up, p_down) if side == "long" else (p_down, p_up)
    return {"p_target": p_target, "p_stop": p_stop, "p_neither": float(mass.sum()), "expected_return": expected,
            "var95": var95, "cvar95": cvar95}




@_compiled
def _grid(down: float, up: float, cells: int) -> np.ndarray:
    """np.linspace(-down, up, cells + 1), then the midpoints of its cells, in one array (for one
    call of numpy's exp). linspace's arithmetic: point j = j * step + start (j / cells * width when
    the step underflows to zero), the last point exactly `up`; a midpoint is 0.5 * (a + b)."""
    out = np.empty(2 * cells + 1)
    width = up - -down
    step = width / cells
    for j in range(cells):
        out[j] = (j * step if step != 0 else j / cells * width) + -down
    out[cells] = up
    for j in range(cells):
        out[cells + 1 + j] = 0.5 * (out[j] + out[j + 1])
    return out


@_compiled
def _cell_returns(growth: np.ndarray, entry: float, long: bool, r_down: float, r_up: float, p_down: float,
                  p_up: float, mass: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool]:
    """The closed form's return distribution: the atoms at the lower and the upper level and the
    cells between, as (lowest return, highest return, weight), and the return at each cell's middle.
    `growth` is exp of the grid's points, then of the midpoints. The end points' returns are the
    atoms' floats, so the cells beside them sort beside them. numpy's arithmetic (a return is exit /
    entry - 1 for a long, 1 - exit / entry for a short, exit = entry * growth; numpy's minimum and
    maximum), compiled to save a dozen small array operations.

    The atoms and cells come sorted by (lowest, highest) return, as `_tail_risk` needs them, when the
    returns rise strictly along the grid (a long: as they are) or fall strictly (a short: reversed),
    with True: the order a stable sort gives, without sorting; otherwise in grid order, with False."""
    cells = mass.shape[0]
    lo, hi, weights, r_mid = np.empty(cells + 2), np.empty(cells + 2), np.empty(cells + 2), np.empty(cells)
    lo[0] = hi[0] = r_down
    lo[cells + 1] = hi[cells + 1] = r_up
    weights[0], weights[cells + 1] = p_down, p_up
    before = r_down
    for j in range(cells):
        exit_at = entry * growth[j + 1]
        after = r_up if j == cells - 1 else (exit_at / entry - 1.0 if long else 1.0 - exit_at / entry)
        lo[j + 1] = before if before <= after or before != before else after
        hi[j + 1] = before if before >= after or before != before else after
        weights[j + 1] = mass[j]
        exit_mid = entry * growth[cells + 1 + j]
        r_mid[j] = exit_mid / entry - 1.0 if long else 1.0 - exit_mid / entry
        before = after
    rising = falling = True
    for j in range(1, cells + 2):
        rising &= lo[j - 1] < lo[j] or (lo[j - 1] == lo[j] and hi[j - 1] < hi[j])
        falling &= lo[j - 1] > lo[j] or (lo[j - 1] == lo[j] and hi[j - 1] > hi[j])
    if falling:
        return lo[::-1].copy(), hi[::-1].copy(), weights[::-1].copy(), r_mid, True
    return lo, hi, weights, r_mid, rising


# --- bars and drift ---------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class BarMoves:
    """Each bar as log moves from the previous close: open, high, low and close (one array each,
    one entry per bar after the first). What the simulation resamples; `from_ohlc` builds it from
    prices and checks them."""

    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray

    def __post_init__(self) -> None:
        if any(np.ndim(a) != 1 or len(a) != len(self.close) for a in (self.open, self.high, self.low)):
            raise TheoryError("bar moves must be one-dimensional arrays of equal length")

    @classmethod
    def from_ohlc(cls, open: Sequence[float] | np.ndarray, high: Sequence[float] | np.ndarray,  # noqa: A002
                  low: Sequence[float] | np.ndarray, close: Sequence[float] | np.ndarray) -> BarMoves:
        cols = [np.asarray(a, dtype=np.float64) for a in (open, high, low, close)]
        if any(a.ndim != 1 or len(a) != len(cols[0]) for a in cols):
            raise TheoryError("open, high, low and close must be one-dimensional arrays of equal length")
        if len(cols[0]) < 2:
            raise TheoryError("need at least 2 bars to measure moves from a previous close")
        prices, fault = _stacked_prices(*cols)  # one array: the logs in one call, not four
        if fault == 1:
            raise TheoryError("open, high, low and close must be finite positive prices")
        if fault == 2:
            raise TheoryError("bars need low <= open, close <= high")
        logs = np.log(prices)
        return cls(*(logs[:, 1:] - logs[3, :-1]))

    @classmethod
    def from_candles(cls, candles: Candles) -> BarMoves:
        return cls.from_ohlc(candles.open, candles.high, candles.low, candles.close)

    def __len__(self) -> int:
        return len(self.close)

    def tail(self, n: int) -> BarMoves:
        """The last `n` bars (all of them when there are fewer)."""
        k = max(len(self) - n, 0)
        return BarMoves(self.open[k:], self.high[k:], self.low[k:], self.close[k:])


@_compiled
def _stacked_prices(open_price: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray
                    ) -> tuple[np.ndarray, int]:
    """The four price arrays as the rows of one (4, bars) array (np.stack), and what is wrong with
    them: 1 when a price is not finite and positive, else 2 when a bar's high is below its open or
    close or its low above them, else 0. Compiled: one pass where numpy made ten."""
    prices = np.empty((4, close.shape[0]))
    positive = ordered = True
    for t in range(close.shape[0]):
        o, h, lo, c = open_price[t], high[t], low[t], close[t]
        prices[0, t], prices[1, t], prices[2, t], prices[3, t] = o, h, lo, c
        for x in (o, h, lo, c):
            positive &= (x > 0) & (x < math.inf)  # NaN fails both
        ordered &= (h >= o) & (h >= c) & (lo <= o) & (lo <= c)
    return prices, 0 if positive and ordered else 1 if not positive else 2


def drift_and_variance(returns: np.ndarray) -> tuple[float, float]:
    """Mean and sample variance (ddof 1) of log returns per bar; an error when they say nothing."""
    r = np.asarray(returns, dtype=np.float64)
    if len(r) < 30:
        raise TheoryError(f"need at least 30 log returns for drift and variance, got {len(r)}")
    if not np.isfinite(r).all():
        raise TheoryError("log returns contain non-finite values")
    # r.mean() and r.var(ddof=1) with numpy's own steps (a pairwise sum divided by the count; the
    # squared deviations from that mean, summed the same way), sharing the one sum: the same floats
    # without the overhead of two calls, which was most of their cost on ~500 returns (measured)
    n = len(r)
    mu = float(np.add.reduce(r)) / n
    deviation = r - mu
    s2 = float(np.add.reduce(np.square(deviation, out=deviation))) / (n - 1)
    if not s2 > 0:
        raise TheoryError("log returns are constant: no variance to price a bracket with")
    return mu, s2


def james_stein_factor(t: float) -> float:
    """max(0, 1 - 1/t^2): the share of a mean with t statistic `t` that positive-part James-Stein
    shrinkage toward zero keeps (Efron & Morris 1973; see the module docstring)."""
    return max(0.0, 1.0 - 1.0 / (t * t)) if t else 0.0


def estimate_drift(returns: np.ndarray, shrink: bool = True) -> DriftEstimate:
    """Raw drift, its t statistic and volatility of log returns per bar, and the drift to use."""
    mu, s2 = drift_and_variance(returns)
    n = len(returns)
    t = mu / math.sqrt(s2 / n)
    return DriftEstimate(
        raw=mu, t=t, used=mu * james_stein_factor(t) if shrink else mu, volatility=math.sqrt(s2), n=n
    )


# --- simulation -------------------------------------------------------------------------------


class SimulatedPaths:
    """What brackets need from simulated bars, as log prices relative to the entry. Any number of
    brackets can then be read off the same paths cheaply.

    Paths are laid end to end from blocks of B bars, and a bar is stored once per block that can be
    drawn rather than once per path. Row m of the tables is one such block, measured from the level
    it starts at: `open_table[m, k]` is the open of its bar k, `high_table[m, k]` and
    `low_table[m, k]` the highest high and the lowest low of its bars 0 to k. Block j of path i
    (bars jB to jB + B - 1; the horizon may cut the last one short) is row starts[j, i], lifted by
    base[j, i], the path's level where the block begins. At bar t = jB + k of path i:
        open                                 = base[j, i] + open_table[starts[j, i], k]
        highest high since the block's start = base[j, i] + high_table[starts[j, i], k]
    and the highest high since the entry is the larger of that and the same at the end of each
    earlier block (`running_high`). `final` is each path's last close.
    The tables and levels are float32, 7 significant digits: a log price of 0.05 is kept to 3e-9,
    far finer than a price tick. `drift` is the drift per bar the paths were built with, when known.
    The compiled loops trust `starts` to hold rows of the tables (0 to rows - 1), as the bootstrap's
    draws and `from_bars` make them: they check no index.

    A bracket's exit is found without (bars, paths) arrays, by a compiled loop over the paths: the
    running high and low at each block's end give the block where a level is first reached, and
    only that block's bars are looked at (`odds`); `running_high` and `running_low` are built only
    when asked for. Every path starts at the entry: base[0] is zero.
    """

    def __init__(self, starts: np.ndarray, base: np.ndarray, open_table: np.ndarray, high_table: np.ndarray,
                 low_table: np.ndarray, final: np.ndarray, horizon: int, drift: float | None = None) -> None:
        width = open_table.shape[1] if open_table.ndim == 2 and horizon >= 1 else 0
        blocks = (-(-horizon // width), len(final)) if width else None
        if blocks is None or high_table.shape != open_table.shape or low_table.shape != open_table.shape \
                or final.ndim != 1 or starts.shape != blocks or base.shape != blocks or base[0].any():
            raise TheoryError("simulated paths need (rows, bars) block tables, (blocks, paths) block rows and "
                              "levels starting at 0, and one final close per path")
        self.starts, self.base, self.final, self.drift = starts, base, final, drift
        self.open_table, self.high_table, self.low_table = open_table, high_table, low_table
        self._horizon = horizon

    @classmethod
    def from_bars(cls, open_level: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray,
                  drift: float | None = None) -> SimulatedPaths:
        """From whole bars: `x[t, i]` = path i's log price relative to entry at bar t's open, high,
        low or close. Each path is stored as one block of its own."""
        o, h, lo, c = (np.asarray(a, dtype=np.float64) for a in (open_level, high, low, close))
        if o.ndim != 2 or not o.size or not o.shape == h.shape == lo.shape == c.shape:
            raise TheoryError("simulated bars must be (bars, paths) arrays of one shape")
        if (h < np.maximum(o, c)).any() or (lo > np.minimum(o, c)).any():
            raise TheoryError("simulated bars need low <= open, close <= high")
        n = o.shape[1]
        return cls(
            np.arange(n, dtype=np.int32)[None, :], np.zeros((1, n), np.float32), o.T.astype(np.float32, order="C"),
            np.maximum.accumulate(h, axis=0).T.astype(np.float32, order="C"),
            np.minimum.accumulate(lo, axis=0).T.astype(np.float32, order="C"), c[-1].copy(), o.shape[0], drift,
        )

    @classmethod
    def from_log_prices(cls, log_price: np.ndarray) -> SimulatedPaths:
        """A price seen only at closes: `log_price[t, i]` = path i's log price relative to entry after
        bar t + 1, each bar a jump from the previous close. A level passed between closes is caught
        at the next close and exits there, as a gap: close-only monitoring, which BGK corrects for."""
        x = np.asarray(log_price, dtype=np.float64)
        return cls.from_bars(x, x, x, x)

    @property
    def horizon(self) -> int:
        return self._horizon

    @cached_property
    def _exp_final(self) -> np.ndarray:
        """exp of each path's last close: the exits of paths that reach no level, for every bracket."""
        return np.exp(self.final)

    @property
    def n_paths(self) -> int:
        return len(self.final)

    @property
    def running_high(self) -> np.ndarray:
        """The highest high up to each bar, (bars, paths)."""
        return self._running(self.high_table, np.maximum)

    @property
    def running_low(self) -> np.ndarray:
        """The lowest low up to each bar, (bars, paths)."""
        return self._running(self.low_table, np.minimum)

    def _running(self, table: np.ndarray, extreme: np.ufunc) -> np.ndarray:
        width = table.shape[1]
        out = np.empty((self.horizon, self.n_paths), np.float32)
        for j, (rows, lift) in enumerate(zip(self.starts, self.base, strict=True)):
            a, b = j * width, min((j + 1) * width, self.horizon)
            np.add(table.take(rows, axis=0)[:, : b - a].T, lift, out=out[a:b])
            if j:
                extreme(out[a:b], out[a - 1], out=out[a:b])
        return out

    def open_at(self, bar: np.ndarray) -> np.ndarray:
        """Each path's open at bar `bar[i]` (0-based), as a log price relative to the entry."""
        width = self.open_table.shape[1]
        t = np.asarray(bar, dtype=np.intp)
        j = t // width
        return self._open(j * self.n_paths + np.arange(self.n_paths), t - j * width)

    def _open(self, cell: np.ndarray, k: np.ndarray) -> np.ndarray:
        """The open at bar `k` of the block in `cell` (block * paths + path) of each path."""
        # take on flattened arrays: much faster than two-dimensional fancy indexing
        return self.base.take(cell) + self.open_table.take(self.starts.take(cell) * self.open_table.shape[1] + k)

    def odds(self, entry: float, stop: float, target: float) -> BracketOdds:
        return BracketOdds(**self._odds(entry, stop, target))

    def _odds(self, entry: float, stop: float, target: float) -> dict[str, float]:
        """`odds` as a plain dict, for callers that copy the numbers on (the snapshot) without a model."""
        side, up, down = _bracket_levels(entry, stop, target)
        long = side == "long"
        # exits at a level, at a gap's open or at the last close, each priced as entry * exp(log exit), the
        # exp numpy's: an exit's return is then the same float whichever exits it is computed with
        growth = np.exp(np.array([up, -down]))
        r_up = _trade_returns(side, entry, entry * float(growth[0]))
        r_down = _trade_returns(side, entry, entry * float(growth[1]))
        r = np.empty(self.n_paths)
        n_up, n_down, gap, gap_open = _first_exits(
            self.starts, self.base, self.open_table, self.high_table, self.low_table, self.horizon,
            np.float32(up), np.float32(down), long, entry, r_up, r_down, self._exp_final, r,
        )
        tail = TAIL * len(r)
        k = math.ceil(tail)
        worst = _smallest(r, k, min(r_up, r_down), gap, np.exp(gap_open.astype(np.float64)), entry, long)
        # the quantile function averaged over the worst 5%: a fraction of the k-th worst when 5% of n is not whole
        shortfall = (worst[:-1].sum() + (tail - (k - 1)) * worst[-1]) / tail
        p_up, p_down = n_up / len(r), n_down / len(r)
        p_target, p_stop = (p_up, p_down) if long else (p_down, p_up)
        mean = float(np.add.reduce(r)) / len(r)  # r.mean()'s steps without its overhead (see drift_and_variance)
        return {"p_target": p_target, "p_stop": p_stop, "p_neither": 1.0 - p_up - p_down,
                "expected_return": mean, "var95": -float(worst[-1]), "cvar95": -float(shortfall)}


def _smallest(r: np.ndarray, k: int, level: float, gap: np.ndarray, gap_growth: np.ndarray, entry: float,
              long: bool) -> np.ndarray:
    """First books the exits at a gap's open: r[gap] = the return of an exit at entry * gap_growth.
    Then the `k` smallest of `r`, sorted: np.sort(r)[:k]. Many paths exit at the stop, all at the
    same value `level`, and few (gaps) fall below it: when those below and those at it make up k,
    the k smallest are the ones below, sorted, then `level` repeated, without sorting all the paths."""
    below, n_at = _book_gaps(r, level, gap, gap_growth, entry, long)
    if len(below) + n_at < k:
        return np.sort(r)[:k]  # a full sort: faster than partition when many exits share the stop's value
    below.sort()
    return below[:k] if len(below) >= k else np.concatenate((below, np.full(k - len(below), level)))


@_compiled
def _book_gaps(r: np.ndarray, level: float, gap: np.ndarray, gap_growth: np.ndarray, entry: float, long: bool
               ) -> tuple[np.ndarray, int]:
    """r[gap] = the returns of the exits at a gap's open, entry * gap_growth; then the returns below
    `level` (unsorted: numba's sort would cost seconds of compiling) and how many equal it. Compiled:
    numpy needed some eight passes and temporaries for what is here two."""
    for q in range(gap.shape[0]):
        exit_at = entry * gap_growth[q]
        r[gap[q]] = exit_at / entry - 1.0 if long else 1.0 - exit_at / entry
    below = np.empty(r.shape[0])
    n_below = n_at = 0
    for x in r:
        below[n_below] = x  # kept by advancing the count: no branch on the comparison
        n_below += x < level
        n_at += x == level
    return below[:n_below], n_at


@_compiled
def _first_exits(starts: np.ndarray, base: np.ndarray, open_table: np.ndarray, high_table: np.ndarray,
                 low_table: np.ndarray, horizon: int, up: np.float32, down: np.float32, long: bool, entry: float,
                 r_up: float, r_down: float, exp_final: np.ndarray, r: np.ndarray
                 ) -> tuple[int, int, np.ndarray, np.ndarray]:
    """Each path's exit from the bracket with levels at +`up` and -`down` (log distances from the
    entry, float32): the first bar whose range reaches a level. Compiled: numpy needed a dozen
    whole-array passes with temporaries for what is here one pass with a few loads per path.

    Writes each path's trade return into `r` (`r_up` / `r_down` at the upper / lower level, the
    last close for paths that reach neither), except for exits at a gap's open, returned as their
    path indices and float32 open levels for the caller to price (with numpy's exp, as every other
    exit price is). Returns the counts of exits at the upper and at the lower level (gaps included).
    Every sum and comparison is in float32, as the tables and levels are, as numpy did them before
    this loop replaced it: a level counts as reached when the extreme is not below it."""
    n, width, blocks, rows = r.shape[0], open_table.shape[1], starts.shape[0], open_table.shape[0]
    n_up = n_down = n_gaps = 0
    gap = np.empty(n, np.intp)
    gap_open = np.empty(n, np.float32)
    # The exits fall at random, so a branch on one mispredicts often: outcomes are booked with
    # arithmetic instead (counts added, returns picked by index, a gap's entry always written and
    # kept by advancing the count), ~20% faster than branching on them (measured).
    at_level = np.array([r_down, r_up])
    # Every path's first block starts at the entry (base 0: x + 0 is x, so no lift), so its exit
    # there depends on the block's row alone: found once per row (hundreds), not once per path.
    row_exits = np.zeros(rows, np.bool_)
    row_upper = np.zeros(rows, np.bool_)
    row_lower = np.zeros(rows, np.bool_)
    row_gap = np.zeros(rows, np.bool_)
    row_open = np.empty(rows, np.float32)
    row_r = np.empty(rows)
    for m in range(rows):
        for k in range(min(width, horizon)):
            reached_up, reached_down = not high_table[m, k] < up, not -low_table[m, k] < down
            if reached_up or reached_down:
                upper, gapped = _exit_side(reached_up, reached_down, open_table[m, k], up, down, long)
                row_exits[m], row_upper[m], row_lower[m], row_gap[m] = True, upper, not upper, gapped
                row_open[m], row_r[m] = open_table[m, k], at_level[np.intp(upper)]
                break
    left = np.empty(n, np.intp)  # the paths still inside after their first block
    n_left = 0
    for i in range(n):
        m = np.uint64(starts[0, i])  # unsigned: see below
        n_up += row_upper[m]
        n_down += row_lower[m]
        r[i] = row_r[m]  # rewritten below for the paths left inside
        gap[n_gaps], gap_open[n_gaps] = i, row_open[m]
        n_gaps += row_gap[m]
        left[n_left] = i
        n_left += not row_exits[m]
    # The others: the first later block whose extremes (those at its last bar) reach a level, then
    # the bars of that block before either level is reached; the extremes only grow along a path, so
    # both are counts, with no branch to mispredict. Paths and rows are indexed as unsigned numbers:
    # numba then drops its wraparound of negative indices (none here: rows are 0..rows-1), ~15% faster.
    # That block is found one block at a time for all these paths, not one path at a time (a path's
    # blocks then do not wait on each other's loads): ~10% faster (measured).
    exit_block = np.full(n_left, min(1, blocks - 1), np.intp)  # a single block: its bars again, out at the close
    inside = np.ones(n_left, np.bool_)
    for b in range(1, blocks - 1):
        for q in range(n_left):
            i = np.uint64(left[q])
            row, lift = np.uint64(starts[b, i]), base[b, i]
            inside[q] &= (high_table[row, width - 1] + lift < up) & (-low_table[row, width - 1] - lift < down)
            exit_block[q] += inside[q]
    for q in range(n_left):
        i, j = np.uint64(left[q]), exit_block[q]
        row, lift = np.uint64(starts[j, i]), base[j, i]
        length = min(width, horizon - j * width)  # the horizon may cut the last block short
        if j == blocks - 1 and (high_table[row, length - 1] + lift < up) & (-low_table[row, length - 1] - lift < down):
            # neither level within the horizon, out at the last close: the extremes at the horizon say
            # so without counting bars (a branch, yet ~15% faster than counting, measured)
            r[i] = entry * exp_final[i] / entry - 1.0 if long else 1.0 - entry * exp_final[i] / entry
            continue
        k = 0  # the exit bar, < length: block j's extremes at its last bar reach a level
        for bar in range(width):
            k += (high_table[row, bar] + lift < up) & (-low_table[row, bar] - lift < down)
        open_at = open_table[row, k] + lift
        reached_up, reached_down = not high_table[row, k] + lift < up, not -low_table[row, k] - lift < down
        upper, gapped = _exit_side(reached_up, reached_down, open_at, up, down, long)
        n_up += upper
        n_down += not upper
        r[i] = at_level[np.intp(upper)]
        gap[n_gaps], gap_open[n_gaps] = i, open_at
        n_gaps += gapped
    return n_up, n_down, gap[:n_gaps], gap_open[:n_gaps]


@_compiled
def _exit_side(reached_up: bool, reached_down: bool, open_at: np.float32, up: np.float32, down: np.float32,
               long: bool) -> tuple[bool, bool]:
    """At a path's exit bar: whether it exits at the upper level (else the lower), and whether at a
    gap's open. The open is beyond a level only when the bar gaps through it; a bar reaching both
    levels is booked as the stop, unless it opened beyond the target."""
    gap_up, gap_down = open_at >= up, open_at <= -down
    # & and |, not `and` and `or`: no branches on these coin flips
    if long:
        upper = (reached_up & (not reached_down)) | gap_up
    else:
        upper = not ((reached_down & (not reached_up)) | gap_down)
    return upper, gap_up | gap_down


def simulate_paths(moves: BarMoves, horizon: int, n_paths: int = 10_000, block: int = 6, seed: int = 0,
                   drift: float | None = None) -> SimulatedPaths:
    """Circular block bootstrap of whole bars into `n_paths` paths of `horizon` bars: blocks of
    `block` consecutive bars from uniform random starts, wrapping round the end, laid end to end.
    With `drift`, the close moves are de-meaned and `drift` added, and the open, high and low
    moves shifted alike (the bars keep their shapes); without it the bars are used as they are.
    Vectorised across paths; the same seed gives the same paths."""
    if horizon < 1 or n_paths < 1 or block < 1:
        raise TheoryError("simulation needs a positive horizon, path count and block length")
    n = len(moves)
    if n < 2 * block:
        raise TheoryError(f"block bootstrap needs at least {2 * block} bars, got {n}")
    shift = 0.0 if drift is None else drift - float(moves.close.mean())
    open_table, high_table, low_table, block_close = _block_tables(
        moves.open, moves.high, moves.low, moves.close, shift, block
    )
    starts = _bootstrap_draws(seed, n, n_paths, block, horizon)
    base, final = _path_levels(starts, block_close, horizon)
    return SimulatedPaths(starts, base, open_table, high_table, low_table, final, horizon, drift)


@_compiled
def _block_tables(open_move: np.ndarray, high_move: np.ndarray, low_move: np.ndarray, close_move: np.ndarray,
                  shift: float, block: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every possible block, measured from the close before it: bar k of the block starting at bar s
    is bar (s + k) mod n (circular), each move lifted by `shift`. Returns the float32 (n, block)
    tables of the open of each bar, the running high and low within the block, and the close.
    Compiled: the same float64 sums (a running sum of the closes, the level before each bar as
    that sum minus the bar's close) as numpy's cumsum, in one pass instead of a dozen small ones."""
    n = close_move.shape[0]
    open_table = np.empty((n, block), np.float32)
    high_table = np.empty((n, block), np.float32)
    low_table = np.empty((n, block), np.float32)
    block_close = np.empty((n, block), np.float32)
    for s in range(n):
        after = 0.0
        high = low = 0.0
        for k in range(block):
            b = (s + k) % n
            c = close_move[b] + shift
            after = c if k == 0 else after + c
            before = after - c
            h, lo = before + (high_move[b] + shift), before + (low_move[b] + shift)
            high = h if k == 0 else max(high, h)
            low = lo if k == 0 else min(low, lo)
            open_table[s, k] = before + (open_move[b] + shift)
            high_table[s, k], low_table[s, k], block_close[s, k] = high, low, after
    return open_table, high_table, low_table, block_close


@_compiled
def _path_levels(starts: np.ndarray, block_close: np.ndarray, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Each path's level where each of its blocks begins (float32, (blocks, paths)): the closes of
    its earlier blocks added up in order, from 0 at the entry; and its last close, as float64."""
    blocks, n = starts.shape
    width = block_close.shape[1]
    base = np.zeros((blocks, n), np.float32)
    final = np.empty(n)
    for j in range(blocks):
        last = min(width, horizon - j * width) - 1  # the horizon may cut the last block short
        for i in range(n):
            # an unsigned row: numba drops its wraparound of negative indices (as in _first_exits), ~25% faster
            level = base[j, i] + block_close[np.uint64(starts[j, i]), last]
            if j + 1 < blocks:
                base[j + 1, i] = level
            else:
                final[i] = level
    return base, final


@lru_cache(maxsize=8)
def _bootstrap_draws(seed: int, n: int, n_paths: int, block: int, horizon: int) -> np.ndarray:
    """The bar each block of each path starts at, uniform on 0..n-1 from a Generator seeded with `seed`
    ((blocks, paths)). Cached, read-only: hourly snapshots draw the same numbers again and again, and
    drawing them costs more than the rest of the simulation. Kept as int32, the Generator's numbers in
    half its int64's memory: the simulation reads them for every bracket, ~5% faster (measured)."""
    starts = np.random.default_rng(seed).integers(0, n, size=(-(-horizon // block), n_paths)).astype(np.int32)
    starts.flags.writeable = False
    return starts


# --- one bracket, both methods ----------------------------------------------------------------


def _as_moves(bars: Candles | BarMoves | Sequence[np.ndarray]) -> BarMoves:
    if isinstance(bars, BarMoves):
        return bars
    if isinstance(bars, Candles):
        return BarMoves.from_candles(bars)
    if len(bars) != 4:
        raise TheoryError("bars must be Candles, BarMoves or (open, high, low, close) arrays")
    return BarMoves.from_ohlc(*bars)


def _report(entry: float, stop: float, target: float, horizon: int, drift: DriftEstimate, paths: SimulatedPaths,
            discrete_correction: bool) -> BracketReport:
    side, _, _ = _bracket_levels(entry, stop, target)
    cf = closed_form_odds(
        entry, stop, target, horizon, drift.used, drift.volatility**2, discrete_correction=discrete_correction
    )
    return BracketReport(side=side, entry=entry, stop=stop, target=target, horizon=horizon, drift=drift,
                         closed_form=cf, simulated=paths.odds(entry, stop, target))


def bracket_odds(
    entry: float,
    stop: float,
    target: float,
    horizon: int,
    bars: Candles | BarMoves | Sequence[np.ndarray],
    *,
    lookback: int = 500,
    n_paths: int = 10_000,
    block: int = 6,
    seed: int = 0,
    shrink_drift: bool = True,
    discrete_correction: bool = False,
    paths: SimulatedPaths | None = None,
) -> BracketReport:
    """Odds of any bracket (e.g. a proposed trade) by both methods, from the last `lookback` bars
    of `bars`: Candles, BarMoves, or (open, high, low, close) price arrays.

    `paths` reuses an earlier simulation (same horizon, built with the same drift) instead of
    drawing anew: many brackets cost one simulation.
    """
    moves = _as_moves(bars).tail(lookback)
    drift = estimate_drift(moves.close, shrink_drift)
    if paths is None:
        paths = simulate_paths(moves, horizon, n_paths, block, seed, drift.used)
    elif paths.horizon != horizon:
        raise TheoryError(f"reused paths cover {paths.horizon} bars, the bracket's horizon is {horizon}")
    elif paths.drift is not None and not math.isclose(paths.drift, drift.used, rel_tol=1e-9, abs_tol=1e-15):
        raise TheoryError(f"reused paths were built with drift {paths.drift:.3g}, these bars give {drift.used:.3g}")
    return _report(entry, stop, target, horizon, drift, paths, discrete_correction)


# --- the snapshot: neutral ATR brackets on both sides -----------------------------------------


_ODDS = {
    "p_target": (PROBABILITY, "P(target first within the horizon)"),
    "p_stop": (PROBABILITY, "P(stop first within the horizon)"),
    "p_neither": (PROBABILITY, "P(neither level within the horizon)"),
    "expected_return": (FRACTION, "expected simple return of the trade, fraction of entry"),
    "var95": (FRACTION, "95% VaR of the trade's return, positive = loss, fraction of entry"),
    "cvar95": (FRACTION, "95% CVaR (expected shortfall) of the trade's return, positive = loss, fraction of entry"),
}
_METHODS = {"closed": "Brownian closed form", "sim": "bar-bootstrap simulation"}
# each side's and method's result fields, with the odds each copies, and its expected-R field: named once,
# not per snapshot
_FIELDS = {(side, key): (tuple((f"{side}_{f}_{key}", f) for f in _ODDS), f"{side}_expected_r_{key}")
           for side in ("long", "short") for key in _METHODS}


def _odds_field(side: str, name: str, method: str) -> Any:
    u, text = _ODDS[name]
    return unit(u, f"{side.capitalize()} bracket, {_METHODS[method]}: {text}.")


def _r_field(side: str, method: str) -> Any:
    return unit(RATIO, f"{side.capitalize()} bracket, {_METHODS[method]}: expected return in R (stop distances).")


class MonteCarloResult(TheoryResult):
    entry: float = unit(PRICE, "Entry: the last close.")
    atr: float = unit(PRICE, "ATR at the last bar, quote currency.")
    horizon: int = unit(BARS, "Longest holding time of both brackets.")
    reward_risk: float = unit(RATIO, "Target distance / stop distance of both brackets.")
    long_stop: float = unit(PRICE, "Long bracket's stop: entry - k_stop ATR.")
    long_target: float = unit(PRICE, "Long bracket's target: entry + k_stop R ATR.")
    short_stop: float = unit(PRICE, "Short bracket's stop: entry + k_stop ATR.")
    short_target: float = unit(PRICE, "Short bracket's target: entry - k_stop R ATR.")
    drift_raw: float = unit(LOG_RETURN, "Mean log return per bar over the lookback.")
    drift_t: float = unit(STATISTIC, "t statistic of the raw drift: mean / (sd / sqrt(n)); |t| < 2 is noise.")
    drift_used: float = unit(LOG_RETURN, "Drift per bar both methods use: raw * max(0, 1 - 1/t^2) (James-Stein).")
    volatility: float = unit(LOG_RETURN, "Standard deviation of log returns per bar over the lookback.")
    n_paths: int = unit(COUNT, "Simulated paths.")
    long_expected_r_closed: float = _r_field("long", "closed")
    long_expected_r_sim: float = _r_field("long", "sim")
    short_expected_r_closed: float = _r_field("short", "closed")
    short_expected_r_sim: float = _r_field("short", "sim")
    long_p_target_closed: float = _odds_field("long", "p_target", "closed")
    long_p_stop_closed: float = _odds_field("long", "p_stop", "closed")
    long_p_neither_closed: float = _odds_field("long", "p_neither", "closed")
    long_expected_return_closed: float = _odds_field("long", "expected_return", "closed")
    long_var95_closed: float = _odds_field("long", "var95", "closed")
    long_cvar95_closed: float = _odds_field("long", "cvar95", "closed")
    long_p_target_sim: float = _odds_field("long", "p_target", "sim")
    long_p_stop_sim: float = _odds_field("long", "p_stop", "sim")
    long_p_neither_sim: float = _odds_field("long", "p_neither", "sim")
    long_expected_return_sim: float = _odds_field("long", "expected_return", "sim")
    long_var95_sim: float = _odds_field("long", "var95", "sim")
    long_cvar95_sim: float = _odds_field("long", "cvar95", "sim")
    short_p_target_closed: float = _odds_field("short", "p_target", "closed")
    short_p_stop_closed: float = _odds_field("short", "p_stop", "closed")
    short_p_neither_closed: float = _odds_field("short", "p_neither", "closed")
    short_expected_return_closed: float = _odds_field("short", "expected_return", "closed")
    short_var95_closed: float = _odds_field("short", "var95", "closed")
    short_cvar95_closed: float = _odds_field("short", "cvar95", "closed")
    short_p_target_sim: float = _odds_field("short", "p_target", "sim")
    short_p_stop_sim: float = _odds_field("short", "p_stop", "sim")
    short_p_neither_sim: float = _odds_field("short", "p_neither", "sim")
    short_expected_return_sim: float = _odds_field("short", "expected_return", "sim")
    short_var95_sim: float = _odds_field("short", "var95", "sim")
    short_cvar95_sim: float = _odds_field("short", "cvar95", "sim")

    def summary(self) -> str:
        def odds(side: str) -> str:
            def g(f: str) -> float:
                return getattr(self, f"{side}_{f}_sim")

            return f"{side} {dec(g('p_target'))}/{dec(g('p_stop'))} {dec(g('expected_r'), 2, True)}"

        # the bootstrap (real bar shapes) is shown; the Brownian closed form is its cross-check, and the
        # label says when the two disagree
        k = (self.entry - self.long_stop) / self.atr
        return (
            f"stop {num(k, 2)}ATR target {num(self.reward_risk, 2)}R {self.horizon} bars: "
            f"sim odds tgt/stop, E[R]: {odds('long')}, {odds('short')} -> {self.label}"
        )


def _label(long_r: float, short_r: float, drift: DriftEstimate, gap: float, p: MonteCarloParams) -> str:
    """Plain words from the thresholds in MonteCarloParams. A side is favoured when half the gap
    between the sides' simulated expected returns (real bar shapes) is at least `edge_r`: what a
    drift gives one side it mostly takes from the other."""
    (best, side), (other, _) = sorted([(long_r, "long"), (short_r, "short")], reverse=True)
    if (best - other) / 2 < p.edge_r:
        parts = ["no edge"]
    else:
        parts = [f"{side} favoured" if best > 0 else f"both lose, {side} less"]
    kept = drift.used / drift.raw if drift.raw else 0.0
    if kept == 0.0:
        parts.append(f"drift t {drift.t:+.1f} shrunk to 0")
    elif kept <= p.near_zero:
        parts.append(f"drift t {drift.t:+.1f} shrunk to ~0")
    elif abs(drift.t) < p.drift_t:
        parts.append(f"weak drift t {drift.t:+.1f}")
    if gap > p.disagreement:
        parts.append("sim and Brownian differ")
    return "; ".join(parts)


def montecarlo(
    open: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray,  # noqa: A002
    params: MonteCarloParams | None = None,
) -> MonteCarloResult:
    """Neutral ATR brackets on both sides of the last close, priced by both methods on the same paths."""
    p = params or MonteCarloParams()
    close = np.asarray(close, dtype=np.float64)
    a = float(atr(high, low, close, p.atr_period)[-1])
    if not (math.isfinite(a) and a > 0):
        raise TheoryError(f"ATR({p.atr_period}) is undefined or zero: cannot place brackets")
    entry = float(close[-1])
    risk, reward = p.k_stop * a, p.k_stop * p.reward_risk * a
    if max(risk, reward) >= entry:
        raise TheoryError("ATR bracket reaches below zero: the price is too volatile for these multiples")
    moves = BarMoves.from_ohlc(open, high, low, close).tail(p.lookback)
    drift = estimate_drift(moves.close, p.shrink_drift)
    paths = simulate_paths(moves, p.horizon, p.n_paths, p.block, p.seed, drift.used)
    levels = {"long": (entry - risk, entry + reward), "short": (entry + risk, entry - reward)}
    fields: dict[str, float] = {}
    gap = 0.0
    s2 = drift.volatility**2
    for name, (stop, target) in levels.items():  # what bracket_odds reports, without its reports' models
        closed = _closed_form(entry, stop, target, p.horizon, drift.used, s2, p.discrete_correction)
        simulated = paths._odds(entry, stop, target)
        for key, odds in (("closed", closed), ("sim", simulated)):
            names, r_name = _FIELDS[name, key]
            for field, f in names:
                fields[field] = odds[f]
            fields[r_name] = odds["expected_return"] * entry / risk
        gap = max(gap, *(abs(closed[f] - simulated[f]) for f in ("p_target", "p_stop", "p_neither")))
    label = _label(fields["long_expected_r_sim"], fields["short_expected_r_sim"], drift, gap, p)
    return MonteCarloResult(
        entry=entry, atr=a, horizon=p.horizon, reward_risk=p.reward_risk, long_stop=levels["long"][0],
        long_target=levels["long"][1], short_stop=levels["short"][0], short_target=levels["short"][1],
        drift_raw=drift.raw, drift_t=drift.t, drift_used=drift.used, volatility=drift.volatility, n_paths=p.n_paths,
        label=label,
        **fields,
    )


def _run(ctx: TheoryContext, params: MonteCarloParams) -> MonteCarloResult:
    c = ctx.candles
    return montecarlo(c.open, c.high, c.low, c.close, params)


THEORY = Theory(
    name="montecarlo",
    description=(
        "Stop/target bracket odds with intra-bar triggers: drifted Brownian motion killed at two barriers "
        "(sine series, continuous monitoring) and a block bootstrap of whole OHLC bars; drift shrunk by James-Stein."
    ),
    params=MonteCarloParams,
    result=MonteCarloResult,
    run=_run,
    min_bars=100,
)
