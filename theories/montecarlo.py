"""Odds of a stop/target bracket: which level is hit first, and what the trade returns.

For a trade entered at `entry` with a stop and a target, held at most `horizon` bars, two methods
give P(target first), P(stop first), P(neither within the horizon), the expected simple return
of the trade, and VaR95 / CVaR95 of that return (losses as positive fractions of the entry).

(a) Closed form: the log price is Brownian motion with drift `mu` and variance `s2` per bar,
    estimated from recent log returns (`mu` is their mean, so it already holds the -s2/2 term).
    With the barriers at +u and -d in log distance, the infinite-horizon hit probability is the
    gambler's-ruin formula P(+u before -d) = (1 - exp(2 mu d / s2)) / (exp(-2 mu u / s2) -
    exp(2 mu d / s2)), d / (u + d) when mu = 0 (Karlin & Taylor, A First Course in Stochastic
    Processes, 1975, ch. 7). The finite horizon uses the eigenfunction (sine-series) expansion of
    the density of drifted Brownian motion killed at both barriers (Cox & Miller, The Theory of
    Stochastic Processes, 1965, sec. 5.7): the flux through each barrier integrates in time in
    closed form, and the surviving density is integrated exactly over the cells of a grid, which
    gives the whole return distribution: atoms at the stop and the target, density in between.
    Prices are checked once per bar, and discrete checks miss crossings that happen between
    closes, so the continuous formula overstates hits. Broadie, Glasserman & Kou (1997,
    Mathematical Finance 7(4)) correct this by moving each barrier AWAY from the start by
    beta * sigma * sqrt(dt), beta = -zeta(1/2) / sqrt(2 pi) = 0.5826 (dt = 1 bar). Paths that
    survive the moved barriers but end beyond a real level would have been seen there by the
    final check, so that sliver of mass is booked as a hit of that level.
(b) Simulation: `n_paths` (>= 10,000) paths of `horizon` bars built by a circular block
    bootstrap of the recent log returns (Politis & Romano 1992; blocks of `block` bars keep short
    serial dependence and volatility clusters), from a seeded numpy Generator. Each close is
    checked against the levels; the trade exits at the level it reaches first (no slippage),
    otherwise at the horizon's close. Long and short brackets reuse the same paths.

Returns are simple returns of the trade as fractions of the entry price: exit / entry - 1 for a
long, 1 - exit / entry for a short. Exits are at the levels themselves, so whenever P(stop) is
at least 5% VaR95 and CVaR95 both equal the stop distance: gaps through the stop are not modelled.
Checking closes but booking exits at the levels hands the trade the overshoot past the stop and
takes it away past the target; the stop, being nearer, is hit more often, so expected returns
are flattered (about +0.08R per side for 1.5/3 ATR over 24 hourly bars of a driftless price).
The bias is the same for both sides, so the label compares the sides with each other.
"""

from __future__ import annotations

import math
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
    unit,
)
from theories.indicators import atr

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
    lookback: int = Field(500, ge=30, description="Recent log returns used for drift, variance and resampling.")
    n_paths: int = Field(10_000, ge=10_000, le=1_000_000, description="Simulated paths.")
    block: int = Field(6, ge=1, le=100, description="Bootstrap block length, in bars.")
    seed: int = Field(0, ge=0, description="Seed of the simulation's random generator.")
    discrete_correction: bool = Field(
        True, description="Apply the Broadie-Glasserman-Kou shift for once-per-bar checks to the closed form."
    )
    edge_r: float = Field(
        0.1, gt=0, description="Half the gap in expected return between the sides, in R, beyond which one is favoured."
    )
    drift_t: float = Field(
        2.0, gt=0, description="|t| of the mean log return below which a favoured side is flagged as resting on noise."
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


class BracketReport(BaseModel):
    """Both methods' odds for one bracket, with the inputs they used."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    side: str = unit(LABEL, "'long' (stop below entry) or 'short' (stop above entry).")
    entry: float = unit(PRICE, "Entry price.")
    stop: float = unit(PRICE, "Stop price.")
    target: float = unit(PRICE, "Target price.")
    horizon: int = unit(BARS, "Longest holding time, in bars.")
    drift: float = unit(LOG_RETURN, "Mean log return per bar used by the closed form.")
    volatility: float = unit(LOG_RETURN, "Standard deviation of log returns per bar used by the closed form.")
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
    w = n * math.pi / width
    k = mu * mu / (2.0 * s2) + s2 * w * w / 2.0  # decay rate of term n, drift factor included
    sin0 = np.sin(w * down)
    pre = s2 * math.pi / width**2
    sign = np.where(n % 2 == 1, 1.0, -1.0)  # (-1)^(n+1)
    p_up_inf = barrier_probability(mu, s2, up, down)
    mass = np.empty(0)
    with np.errstate(over="ignore", invalid="ignore"):  # a strong drift over tiny variance: checked below
        tail_up = pre * float(np.sum(sign * n * sin0 * np.exp(c * up - k * horizon) / k))
        tail_down = pre * float(np.sum(n * sin0 * np.exp(-c * down - k * horizon) / k))
        if edges is not None:
            # exact integral of exp(c (y - y0)) sin(w y) over each cell: the antiderivative at the edges
            y = np.asarray(edges, dtype=np.float64) + down
            wy = np.outer(w, y)
            anti = np.exp(c * (y - down)) * (c * np.sin(wy) - w[:, None] * np.cos(wy)) / (c * c + w * w)[:, None]
            mass = ((2.0 / width) * sin0 * np.exp(-k * horizon)) @ np.diff(anti, axis=1)
    p_up = p_up_inf - tail_up
    p_down = (1.0 - p_up_inf) - tail_down
    ok = np.isfinite([p_up, p_down]).all() and np.isfinite(mass).all()
    if not ok or min(p_up, p_down) < -1e-9 or p_up + p_down > 1 + 1e-9:
        raise TheoryError("closed form lost precision: drift too strong for the variance and barrier distances")
    return p_up, p_down, mass


def _bracket_levels(entry: float, stop: float, target: float) -> tuple[str, float, float]:
    """Side, and the log distances up and down to the upper and lower level."""
    if not all(math.isfinite(v) and v > 0 for v in (entry, stop, target)):
        raise TheoryError("entry, stop and target must be finite positive prices")
    if stop < entry < target:
        return "long", math.log(target / entry), math.log(entry / stop)
    if target < entry < stop:
        return "short", math.log(stop / entry), math.log(entry / target)
    raise TheoryError(f"not a bracket: need stop < entry < target (long) or the mirror (short); got {stop}, {entry}, "
                      f"{target}")


def _trade_returns(side: str, entry: float, exit_price: np.ndarray | float) -> np.ndarray | float:
    return exit_price / entry - 1.0 if side == "long" else 1.0 - exit_price / entry


def _tail_risk(lo: np.ndarray, hi: np.ndarray, weights: np.ndarray) -> tuple[float, float]:
    """VaR95 and CVaR95 (positive = loss) of a distribution given as atoms (lo == hi) and cells
    with mass spread evenly over [lo, hi]: minus the 5% quantile of the return, and minus the
    average of the quantile function over the worst 5% (Acerbi & Tasche 2002)."""
    order = np.lexsort((hi, lo))
    lo, hi, w = lo[order], hi[order], weights[order]
    cum = np.cumsum(w)
    alpha = TAIL * cum[-1]
    i = min(int(np.searchsorted(cum, alpha)), len(w) - 1)
    below = cum[i - 1] if i else 0.0
    part = alpha - below
    q = lo[i] + (hi[i] - lo[i]) * (part / w[i] if w[i] > 0 else 0.0)
    tail_sum = float(np.dot(0.5 * (lo[:i] + hi[:i]), w[:i]) + part * 0.5 * (lo[i] + q))
    return -float(q), -tail_sum / alpha


def closed_form_odds(
    entry: float, stop: float, target: float, horizon: int, mu: float, s2: float, *, discrete_correction: bool = True
) -> BracketOdds:
    """The bracket's odds when the log price is Brownian motion with drift `mu` and variance `s2`
    per bar, checked once per bar (Broadie-Glasserman-Kou shift) or continuously."""
    side, up, down = _bracket_levels(entry, stop, target)
    shift = BGK_BETA * math.sqrt(s2) if discrete_correction else 0.0
    up_k, down_k = up + shift, down + shift
    sd_t = math.sqrt(s2 * horizon)
    cells = int(min(max(_MIN_CELLS, math.ceil(40 * (up + down) / sd_t)), _MAX_CELLS))
    inner = np.linspace(-down, up, cells + 1)
    edges = np.concatenate(([-down_k], inner, [up_k])) if shift else inner
    p_up, p_down, mass = killed_brownian(mu, s2, up_k, down_k, horizon, edges)
    mass = np.maximum(mass, 0.0)  # truncation noise below 1e-15
    if shift:  # survivors beyond a real level at the horizon were seen there by the last check
        p_down, p_up, mass = p_down + mass[0], p_up + mass[-1], mass[1:-1]
    p_up, p_down = max(p_up, 0.0), max(p_down, 0.0)
    r_down = _trade_returns(side, entry, entry * math.exp(-down))  # exit at the lower level
    r_up = _trade_returns(side, entry, entry * math.exp(up))
    r_edges = _trade_returns(side, entry, entry * np.exp(inner))
    r_edges[0], r_edges[-1] = r_down, r_up  # the same floats as the atoms, so the cells sort beside them
    r_mid = _trade_returns(side, entry, entry * np.exp(0.5 * (inner[:-1] + inner[1:])))
    lo = np.concatenate(([r_down], np.minimum(r_edges[:-1], r_edges[1:]), [r_up]))
    hi = np.concatenate(([r_down], np.maximum(r_edges[:-1], r_edges[1:]), [r_up]))
    weights = np.concatenate(([p_down], mass, [p_up]))
    var95, cvar95 = _tail_risk(lo, hi, weights)
    expected = p_down * r_down + p_up * r_up + float(np.dot(r_mid, mass))
    p_target, p_stop = (p_up, p_down) if side == "long" else (p_down, p_up)
    return BracketOdds(
        p_target=p_target, p_stop=p_stop, p_neither=float(mass.sum()), expected_return=expected,
        var95=var95, cvar95=cvar95,
    )


# --- simulation -------------------------------------------------------------------------------


class SimulatedPaths:
    """What brackets need from simulated log-price paths (log price relative to the entry, one
    column per path, one row per bar): the running maximum and minimum after each bar and the
    final value. Any number of brackets can then be read off the same paths cheaply.

    The extremes are float32, 7 significant digits: a log price of 0.05 is kept to 3e-9, far finer
    than a price tick, and the small footprint keeps a 10,000 x 24 simulation within a few ms.
    """

    def __init__(self, running_max: np.ndarray, running_min: np.ndarray, final: np.ndarray) -> None:
        if running_max.ndim != 2 or running_max.shape != running_min.shape or final.shape != running_max.shape[1:]:
            raise TheoryError("simulated paths need (bars, paths) extremes and one final value per path")
        self.running_max, self.running_min, self.final = running_max, running_min, final

    @classmethod
    def from_log_prices(cls, log_price: np.ndarray) -> SimulatedPaths:
        """From whole paths, `log_price[t, i]` = path i's log price relative to entry after bar t + 1."""
        x = np.asarray(log_price, dtype=np.float64)
        if x.ndim != 2 or not x.size:
            raise TheoryError("simulated paths must be a (bars, paths) array")
        hi, lo = np.empty(x.shape, np.float32), np.empty(x.shape, np.float32)
        x32 = x.astype(np.float32)
        hi[0] = lo[0] = x32[0]
        for t in range(1, len(x)):
            np.maximum(hi[t - 1], x32[t], out=hi[t])
            np.minimum(lo[t - 1], x32[t], out=lo[t])
        return cls(hi, lo, x[-1].copy())

    @property
    def horizon(self) -> int:
        return self.running_max.shape[0]

    @property
    def n_paths(self) -> int:
        return self.running_max.shape[1]

    def odds(self, entry: float, stop: float, target: float) -> BracketOdds:
        side, up, down = _bracket_levels(entry, stop, target)
        # bars before the first close at or beyond each level (= horizon when never reached)
        t_up = _count_rows(self.running_max < up)
        t_down = _count_rows(self.running_min > -down)
        first_up = t_up < t_down  # both cannot happen on the same close
        first_down = t_down < t_up
        exit_price = entry * np.exp(self.final)
        exit_price = np.where(first_up, entry * math.exp(up), np.where(first_down, entry * math.exp(-down), exit_price))
        r = _trade_returns(side, entry, exit_price)
        tail = TAIL * len(r)
        k = math.ceil(tail)
        worst = np.sort(np.partition(r, k - 1)[:k])
        # the quantile function averaged over the worst 5%: a fraction of the k-th worst when 5% of n is not whole
        shortfall = (worst[:-1].sum() + (tail - (k - 1)) * worst[-1]) / tail
        p_up, p_down = np.count_nonzero(first_up) / len(r), np.count_nonzero(first_down) / len(r)
        p_target, p_stop = (p_up, p_down) if side == "long" else (p_down, p_up)
        return BracketOdds(
            p_target=p_target, p_stop=p_stop, p_neither=1.0 - p_up - p_down, expected_return=float(r.mean()),
            var95=-float(worst[-1]), cvar95=-float(shortfall),
        )


def _count_rows(mask: np.ndarray) -> np.ndarray:
    """True entries per column; int16 is enough for the horizon cap and is much faster than int64."""
    return np.add.reduce(mask.view(np.uint8), axis=0, dtype=np.int16 if len(mask) < 32_000 else np.int64)


def simulate_paths(returns: np.ndarray, horizon: int, n_paths: int = 10_000, block: int = 6, seed: int = 0
                   ) -> SimulatedPaths:
    """Circular block bootstrap of `returns` (log returns per bar) into `n_paths` paths of
    `horizon` bars: blocks of `block` consecutive returns from uniform random starts, wrapping
    round the end, laid end to end. Fully vectorised; the same seed gives the same paths."""
    r = np.asarray(returns, dtype=np.float64)
    if horizon < 1 or n_paths < 1 or block < 1:
        raise TheoryError("simulation needs a positive horizon, path count and block length")
    if len(r) < 2 * block:
        raise TheoryError(f"block bootstrap needs at least {2 * block} returns, got {len(r)}")
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, len(r), size=(-(-horizon // block), n_paths))
    wrapped = np.concatenate((r, r[: block - 1]))  # circular: a block may run past the end
    # bar by bar: bar t is return t % block of block t // block. Summing along the slow axis in
    # one numpy call is several times slower than these row operations.
    x = wrapped[starts[0]]  # float64 running sum
    x32 = x.astype(np.float32)  # its float32 copy: mixed-precision ufuncs are several times slower
    hi, lo = np.empty((horizon, n_paths), np.float32), np.empty((horizon, n_paths), np.float32)
    hi[0] = lo[0] = x32
    for t in range(1, horizon):
        j, k = divmod(t, block)
        x += wrapped[starts[j] + k] if k else wrapped[starts[j]]
        x32[...] = x
        np.maximum(hi[t - 1], x32, out=hi[t])
        np.minimum(lo[t - 1], x32, out=lo[t])
    return SimulatedPaths(hi, lo, x)


# --- one bracket, both methods ----------------------------------------------------------------


def drift_and_variance(returns: np.ndarray) -> tuple[float, float]:
    """Mean and sample variance (ddof 1) of log returns per bar; an error when they say nothing."""
    r = np.asarray(returns, dtype=np.float64)
    if len(r) < 30:
        raise TheoryError(f"need at least 30 log returns for drift and variance, got {len(r)}")
    if not np.isfinite(r).all():
        raise TheoryError("log returns contain non-finite values")
    s2 = float(r.var(ddof=1))
    if not s2 > 0:
        raise TheoryError("log returns are constant: no variance to price a bracket with")
    return float(r.mean()), s2


def bracket_odds(
    entry: float,
    stop: float,
    target: float,
    horizon: int,
    returns: np.ndarray,
    *,
    n_paths: int = 10_000,
    block: int = 6,
    seed: int = 0,
    discrete_correction: bool = True,
    paths: SimulatedPaths | None = None,
) -> BracketReport:
    """Odds of any bracket (e.g. a proposed trade) from recent log returns, by both methods.

    `paths` reuses an earlier simulation (it must have the same horizon) instead of drawing anew.
    """
    mu, s2 = drift_and_variance(returns)
    if paths is None:
        paths = simulate_paths(returns, horizon, n_paths, block, seed)
    elif paths.horizon != horizon:
        raise TheoryError(f"reused paths cover {paths.horizon} bars, the bracket's horizon is {horizon}")
    side, _, _ = _bracket_levels(entry, stop, target)
    return BracketReport(
        side=side, entry=entry, stop=stop, target=target, horizon=horizon, drift=mu, volatility=math.sqrt(s2),
        closed_form=closed_form_odds(entry, stop, target, horizon, mu, s2, discrete_correction=discrete_correction),
        simulated=paths.odds(entry, stop, target),
    )


# --- the snapshot: neutral ATR brackets on both sides -----------------------------------------


_ODDS = {
    "p_target": (PROBABILITY, "P(target first within the horizon)"),
    "p_stop": (PROBABILITY, "P(stop first within the horizon)"),
    "p_neither": (PROBABILITY, "P(neither level within the horizon)"),
    "expected_return": (FRACTION, "expected simple return of the trade, fraction of entry"),
    "var95": (FRACTION, "95% VaR of the trade's return, positive = loss, fraction of entry"),
    "cvar95": (FRACTION, "95% CVaR (expected shortfall) of the trade's return, positive = loss, fraction of entry"),
}
_METHODS = {"closed": "Brownian closed form", "sim": "block-bootstrap simulation"}


def _odds_field(side: str, name: str, method: str) -> Any:
    u, text = _ODDS[name]
    return unit(u, f"{side.capitalize()} bracket, {_METHODS[method]}: {text}.")


class MonteCarloResult(TheoryResult):
    entry: float = unit(PRICE, "Entry: the last close.")
    atr: float = unit(PRICE, "ATR at the last bar, quote currency.")
    horizon: int = unit(BARS, "Longest holding time of both brackets.")
    reward_risk: float = unit(RATIO, "Target distance / stop distance of both brackets.")
    long_stop: float = unit(PRICE, "Long bracket's stop: entry - k_stop ATR.")
    long_target: float = unit(PRICE, "Long bracket's target: entry + k_stop R ATR.")
    short_stop: float = unit(PRICE, "Short bracket's stop: entry + k_stop ATR.")
    short_target: float = unit(PRICE, "Short bracket's target: entry - k_stop R ATR.")
    drift: float = unit(LOG_RETURN, "Mean log return per bar over the lookback.")
    volatility: float = unit(LOG_RETURN, "Standard deviation of log returns per bar over the lookback.")
    drift_t: float = unit(STATISTIC, "t statistic of the drift: mean / (sd / sqrt(n)); |t| < 2 is noise.")
    n_paths: int = unit(COUNT, "Simulated paths.")
    long_expected_r: float = unit(RATIO, "Long bracket's simulated expected return in R (stop distances).")
    short_expected_r: float = unit(RATIO, "Short bracket's simulated expected return in R (stop distances).")
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
        def side(name: str) -> str:
            def g(f: str) -> float:
                return getattr(self, f"{name}_{f}")

            return (
                f"{name} P(target/stop) {g('p_target_closed'):.2f}/{g('p_stop_closed'):.2f} "
                f"(sim {g('p_target_sim'):.2f}/{g('p_stop_sim'):.2f}) E {g('expected_r'):+.2f}R"
            )

        k = (self.entry - self.long_stop) / self.atr
        return (
            f"stop {k:.3g} ATR, R {self.reward_risk:.3g}, {self.horizon} bars: {side('long')}; {side('short')} "
            f"-> {self.label}"
        )


def _label(long_r: float, short_r: float, drift_t: float, gap: float, p: MonteCarloParams) -> str:
    # judged on half the gap between the sides: the optimism of booking exits at the levels is
    # common to both sides and cancels, what the drift gives one side it takes from the other
    (best, side), (other, _) = sorted([(long_r, "long"), (short_r, "short")], reverse=True)
    if (best - other) / 2 >= p.edge_r:
        text = f"{side} bracket favoured"
        if abs(drift_t) < p.drift_t:
            text += f", but on an insignificant drift (t {drift_t:+.1f})"
    else:
        text = "no edge between the long and short brackets"
    if gap > p.disagreement:
        text += "; bootstrap differs from Brownian (fat tails, volatility clusters)"
    return text


def montecarlo(
    close: np.ndarray, high: np.ndarray, low: np.ndarray, params: MonteCarloParams | None = None
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
    returns = np.diff(np.log(close))[-p.lookback:]
    mu, s2 = drift_and_variance(returns)
    paths = simulate_paths(returns, p.horizon, p.n_paths, p.block, p.seed)
    kw = dict(discrete_correction=p.discrete_correction, paths=paths)
    long = bracket_odds(entry, entry - risk, entry + reward, p.horizon, returns, **kw)
    short = bracket_odds(entry, entry + risk, entry - reward, p.horizon, returns, **kw)
    fields: dict[str, float] = {}
    for name, rep in (("long", long), ("short", short)):
        for key, odds in (("closed", rep.closed_form), ("sim", rep.simulated)):
            for f in _ODDS:
                fields[f"{name}_{f}_{key}"] = getattr(odds, f)
    drift_t = mu / math.sqrt(s2 / len(returns))
    long_r = long.simulated.expected_return * entry / risk
    short_r = short.simulated.expected_return * entry / risk
    gap = max(
        abs(getattr(r.closed_form, f) - getattr(r.simulated, f))
        for r in (long, short) for f in ("p_target", "p_stop", "p_neither")
    )
    return MonteCarloResult(
        entry=entry, atr=a, horizon=p.horizon, reward_risk=p.reward_risk, long_stop=long.stop,
        long_target=long.target, short_stop=short.stop, short_target=short.target, drift=mu,
        volatility=math.sqrt(s2), n_paths=p.n_paths, long_expected_r=long_r, short_expected_r=short_r,
        drift_t=drift_t, label=_label(long_r, short_r, drift_t, gap, p), **fields,
    )


def _run(ctx: TheoryContext, params: MonteCarloParams) -> MonteCarloResult:
    c = ctx.candles
    return montecarlo(c.close, c.high, c.low, params)


THEORY = Theory(
    name="montecarlo",
    description=(
        "Stop/target bracket odds: drifted Brownian motion killed at two barriers (sine series, "
        "Broadie-Glasserman-Kou 1997 discrete correction) and a block-bootstrap simulation."
    ),
    params=MonteCarloParams,
    result=MonteCarloResult,
    run=_run,
    min_bars=100,
)
