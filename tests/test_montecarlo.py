import math

import numpy as np
import pandas as pd
import pytest
from scipy.special import zeta
from scipy.stats import norm

from theories.base import TheoryContext, TheoryError
from theories.candles import HOUR_MS, Candles
from theories.montecarlo import (
    BGK_BETA,
    THEORY,
    BarMoves,
    DriftEstimate,
    MonteCarloParams,
    SimulatedPaths,
    _cell_integrals,
    _label,
    _series_terms,
    barrier_probability,
    bracket_odds,
    closed_form_odds,
    drift_and_variance,
    estimate_drift,
    james_stein_factor,
    killed_brownian,
    montecarlo,
    simulate_paths,
)

SUB = 64  # sub-steps per bar of the fine Brownian path the synthetic bars are cut from


def brownian_bars(n_bars: int, mu: float, sigma: float, seed: int, start: float = 100.0):
    """OHLC bars of a Brownian log price with drift `mu` and sd `sigma` per bar, cut from a path of
    SUB Gaussian steps per bar: O = previous close, H / L = max / min of the sub-path with its open,
    C = the last sub-step. Returns (open, high, low, close) prices."""
    steps = np.random.default_rng(seed).normal(mu / SUB, sigma / math.sqrt(SUB), (n_bars, SUB))
    opens = math.log(start) + np.concatenate(([0.0], np.cumsum(steps.sum(axis=1))[:-1]))
    path = opens[:, None] + np.cumsum(steps, axis=1)
    high, low = np.maximum(opens, path.max(axis=1)), np.minimum(opens, path.min(axis=1))
    return tuple(np.exp(x) for x in (opens, high, low, path[:, -1]))


def candles(o, h, lo, c) -> Candles:
    return Candles(1_700_000_000_000 + np.arange(len(c)) * HOUR_MS, o, h, lo, c, np.ones(len(c)))


def gaussian_paths(mu: float, sigma: float, horizon: int, n: int, seed: int) -> SimulatedPaths:
    """Exact Gaussian random walks seen only at closes: the discrete monitoring BGK corrects for."""
    steps = np.random.default_rng(seed).normal(mu, sigma, (horizon, n))
    return SimulatedPaths.from_log_prices(np.cumsum(steps, axis=0))


def checked_sub_times_a_bar(entry, stop, target, horizon, mu, s2):
    """The closed form for a price checked SUB times a bar, as the synthetic bars' highs and lows
    are: Broadie-Glasserman-Kou with dt = 1/SUB bar, by counting time in sub-steps. How far it
    lies from the continuous closed form is the discretisation allowance of the tests below."""
    return closed_form_odds(entry, stop, target, horizon * SUB, mu / SUB, s2 / SUB, discrete_correction=True)


# --- closed form ------------------------------------------------------------------------------


def test_barrier_probability_without_drift_is_stop_distance_over_total():
    for up, down in ((1.0, 1.0), (3.0, 1.5), (0.02, 0.05)):
        assert barrier_probability(0.0, 0.3, up, down) == pytest.approx(down / (up + down), rel=1e-14)


def test_barrier_probability_with_drift_matches_the_gamblers_ruin_formula():
    for mu, s2, a, b in ((0.1, 1.0, 2.0, 1.0), (-0.05, 0.5, 1.0, 3.0), (2e-4, 2.5e-5, 0.02, 0.01)):
        e_b, e_a = math.exp(2 * mu * b / s2), math.exp(-2 * mu * a / s2)
        assert barrier_probability(mu, s2, a, b) == pytest.approx((1 - e_b) / (e_a - e_b), rel=1e-12)
    # upward drift favours the upper barrier; an overwhelming drift makes it certain without overflow
    assert barrier_probability(0.1, 1.0, 1.0, 1.0) > 0.5 > barrier_probability(-0.1, 1.0, 1.0, 1.0)
    assert barrier_probability(10.0, 1e-3, 1.0, 1.0) == 1.0
    assert barrier_probability(-10.0, 1e-3, 1.0, 1.0) == 0.0


def test_finite_horizon_hit_probability_tends_to_the_infinite_horizon_value():
    mu, s2, up, down = 0.02, 1.0, 3.0, 2.0
    p_inf = barrier_probability(mu, s2, up, down)
    p = [killed_brownian(mu, s2, up, down, t)[0] for t in (1, 5, 25, 100, 400, 2000)]
    assert all(np.diff(p) >= 0) and p[-1] < p_inf + 1e-12
    assert abs(p[-1] - p_inf) < 1e-12 and abs(p[-2] - p_inf) < 1e-6 and abs(p[2] - p_inf) > 1e-3


def test_one_barrier_out_of_reach_gives_the_first_passage_law():
    # first passage of drifted BM to level a by time T: Phi((mu T - a) / sd) + exp(2 mu a / s2) Phi((-a - mu T) / sd)
    mu, s2, a, T = 0.02, 1.0, 3.0, 10.0
    sd = math.sqrt(s2 * T)
    p_up, p_down, _ = killed_brownian(mu, s2, a, 60.0, T)
    expected = norm.cdf((mu * T - a) / sd) + math.exp(2 * mu * a / s2) * norm.cdf((-a - mu * T) / sd)
    assert p_up == pytest.approx(expected, rel=1e-12)
    assert abs(p_down) < 1e-12


def test_survivor_mass_matches_the_method_of_images():
    # without drift, BM on [0, L] killed at both ends: images at y0 + 2kL (positive) and -y0 + 2kL (negative)
    up, down, T = 2.0, 1.0, 1.5
    L, sd = up + down, math.sqrt(T)
    edges = np.linspace(-down, up, 31)
    _, _, mass = killed_brownian(0.0, 1.0, up, down, T, edges)
    k = np.arange(-20, 21)[:, None]
    y = edges + down

    def cdf(shift):
        return norm.cdf((y - shift) / sd)

    images = (cdf(down + 2 * k * L) - cdf(-down + 2 * k * L)).sum(axis=0)
    assert np.allclose(mass, np.diff(images), atol=1e-13)


def test_drift_tilts_the_survivor_density_by_the_girsanov_factor():
    mu, s2, up, down, T = 0.3, 1.0, 2.0, 1.0, 1.5
    edges = np.linspace(-down, up, 3001)
    mid, dx = 0.5 * (edges[1:] + edges[:-1]), edges[1] - edges[0]
    _, _, with_drift = killed_brownian(mu, s2, up, down, T, edges)
    _, _, without = killed_brownian(0.0, s2, up, down, T, edges)
    tilt = np.exp(mu * mid / s2 - mu**2 * T / (2 * s2))
    assert np.allclose(with_drift, without * tilt, atol=1e-7 * dx * 3000)


@pytest.mark.parametrize("correct", [True, False])
@pytest.mark.parametrize(("stop", "target"), [(98.0, 104.0), (103.0, 95.0)])
def test_closed_form_probabilities_sum_to_one(correct, stop, target):
    odds = closed_form_odds(100.0, stop, target, 24, 1e-4, 1e-4, discrete_correction=correct)
    assert odds.p_target + odds.p_stop + odds.p_neither == pytest.approx(1.0, abs=1e-10)
    assert min(odds.p_target, odds.p_stop, odds.p_neither) > 0


def test_a_martingale_price_gives_zero_expected_return_on_both_sides():
    # mu = -s2/2 makes exp(X) a martingale: optional stopping says the bracket cannot make money
    s2 = 1e-4
    long = closed_form_odds(100.0, 92.0, 109.0, 48, -s2 / 2, s2, discrete_correction=False)
    short = closed_form_odds(100.0, 108.0, 91.0, 48, -s2 / 2, s2, discrete_correction=False)
    assert abs(long.expected_return) < 1e-7 and abs(short.expected_return) < 1e-7
    assert long.p_neither > 0.1  # the horizon matters here, so this is not just the infinite case


def test_var_and_cvar_are_the_stop_loss_when_the_stop_is_likely():
    odds = closed_form_odds(100.0, 99.0, 102.0, 24, 0.0, 1e-4)
    assert odds.p_stop > 0.05
    assert odds.var95 == pytest.approx(0.01, rel=1e-12) and odds.cvar95 == pytest.approx(0.01, rel=1e-12)
    short = closed_form_odds(100.0, 101.0, 98.0, 24, 0.0, 1e-4)
    assert short.var95 == pytest.approx(0.01, rel=1e-12) and short.cvar95 == pytest.approx(0.01, rel=1e-12)


def test_var_and_cvar_are_lognormal_when_the_levels_are_out_of_reach():
    mu, s2, T = 2e-4, 1e-4, 24
    m, v = mu * T, s2 * T
    far = 20 * math.sqrt(v)
    odds = closed_form_odds(100.0, 100 * math.exp(-far), 100 * math.exp(far), T, mu, s2)
    z = norm.ppf(0.05)
    assert odds.p_neither == pytest.approx(1.0, abs=1e-12)
    assert odds.expected_return == pytest.approx(math.exp(m + v / 2) - 1, abs=1e-7)
    assert odds.var95 == pytest.approx(1 - math.exp(m + z * math.sqrt(v)), rel=1e-4)
    shortfall = 1 - math.exp(m + v / 2) * norm.cdf(z - math.sqrt(v)) / 0.05
    assert odds.cvar95 == pytest.approx(shortfall, rel=1e-4)


# --- discrete and continuous monitoring -------------------------------------------------------


def test_bgk_constant_is_minus_zeta_one_half_over_root_two_pi():
    assert BGK_BETA == pytest.approx(-zeta(0.5) / math.sqrt(2 * math.pi), rel=1e-14)


def test_bgk_shift_away_from_the_start_moves_the_closed_form_toward_the_close_only_simulation():
    mu, sigma, up, down, T, n = 0.0, 1.0, 3.0, 2.0, 24, 200_000
    sim = gaussian_paths(mu, sigma, T, n, seed=11).odds(1.0, math.exp(-down), math.exp(up))
    se = math.sqrt(sim.p_neither * (1 - sim.p_neither) / n)
    shift = BGK_BETA * sigma

    def neither(delta):
        p_up, p_down, _ = killed_brownian(mu, sigma**2, up + delta, down + delta, T)
        return 1 - p_up - p_down

    continuous, outward, inward = neither(0.0), neither(shift), neither(-shift)
    # checks once per bar miss crossings: the continuous formula overstates hits, so fewer paths survive
    assert continuous < sim.p_neither - 20 * se
    # moving both barriers away from the start (BGK) fixes it; moving them inward makes it worse
    assert abs(outward - sim.p_neither) < 4 * se
    assert abs(outward - sim.p_neither) < abs(continuous - sim.p_neither) < abs(inward - sim.p_neither)
    corrected = closed_form_odds(1.0, math.exp(-down), math.exp(up), T, mu, sigma**2, discrete_correction=True)
    for p_sim, p_cf in ((sim.p_target, corrected.p_target), (sim.p_stop, corrected.p_stop)):
        assert abs(p_cf - p_sim) < 4 * math.sqrt(p_sim * (1 - p_sim) / n)


@pytest.mark.parametrize("mu", [0.0, 4e-4, -6e-4])
def test_simulation_of_brownian_bars_matches_the_continuous_closed_form(mu):
    # bars cut from a fine Brownian path, resampled one at a time (block 1: the closed form's iid
    # assumption) with the raw drift. Intra-bar triggers are continuous monitoring, so the closed
    # form WITHOUT the BGK shift must match, within 4 standard errors plus what a maximum over 64
    # points a bar misses (the gap to the closed form checked 64 times a bar: at most 0.012 here)
    bars = brownian_bars(20_000, mu, 0.01, seed=0)
    n = 40_000
    for stop, target in ((98.0, 104.0), (101.5, 96.0), (97.0, 102.0)):
        rep = bracket_odds(100.0, stop, target, 24, bars, lookback=20_000, n_paths=n, block=1, seed=3,
                           shrink_drift=False)
        cf, sim, d = rep.closed_form, rep.simulated, rep.drift
        fine = checked_sub_times_a_bar(100.0, stop, target, 24, d.used, d.volatility**2)
        for f in ("p_target", "p_stop", "p_neither"):
            p_cf, p_sim, allowance = getattr(cf, f), getattr(sim, f), abs(getattr(cf, f) - getattr(fine, f))
            assert allowance < 0.012
            assert abs(p_cf - p_sim) < 4 * math.sqrt(p_cf * (1 - p_cf) / n) + allowance
        # trade returns lie between the two exits (no gaps here), so their sd is at most half that range
        half_range = 0.5 * abs(target - stop) / 100
        allowance = abs(cf.expected_return - fine.expected_return)
        assert abs(cf.expected_return - sim.expected_return) < 4 * half_range / math.sqrt(n) + allowance


def close_only_booked_at_levels(c: np.ndarray, up: float, down: float, horizon: int, n: int, seed: int) -> np.ndarray:
    """The previous scheme, kept here as the counter-example: de-meaned closes resampled one at a
    time, checked at each close, exits booked AT the level. Log exit per path."""
    x = np.cumsum((c - c.mean())[np.random.default_rng(seed).integers(0, len(c), (horizon, n))], axis=0)
    t_up = np.where((x >= up).any(axis=0), (x >= up).argmax(axis=0), horizon)
    t_down = np.where((x <= -down).any(axis=0), (x <= -down).argmax(axis=0), horizon)
    return np.where(t_up < t_down, up, np.where(t_down < t_up, -down, x[-1]))


def test_a_driftless_walk_gives_both_brackets_no_expected_gain_unlike_booking_close_checks_at_the_levels():
    bars = brownian_bars(4001, 0.0, 0.01, seed=0)
    n = 100_000
    res = montecarlo(*bars, MonteCarloParams(n_paths=n, lookback=4000, block=1))
    assert abs(res.drift_t) < 1 and res.drift_used == 0.0  # shrinkage on: this walk's drift is set to 0
    risk = res.entry - res.long_stop
    closes = BarMoves.from_ohlc(*bars).close
    for side, stop, target in (("long", res.long_stop, res.long_target), ("short", res.short_stop, res.short_target)):
        closed, sim = getattr(res, f"{side}_expected_r_closed"), getattr(res, f"{side}_expected_r_sim")
        # all the closed form keeps is the convexity of exp (sigma^2/2 per bar held): +0.02 R long, -0.02 R short
        assert abs(closed) < 0.025
        # R lies in [-1, 2] so its sd is below 1.5: 4 standard errors are 0.019 R; plus the 64-point
        # discretisation (0.010 R here): a tolerance of 0.029 R
        fine = checked_sub_times_a_bar(res.entry, stop, target, res.horizon, 0.0, res.volatility**2)
        tolerance = 4 * 1.5 / math.sqrt(n) + abs(fine.expected_return * res.entry / risk - closed)
        assert tolerance < 0.035
        assert abs(sim - closed) < tolerance
        # the old scheme on the same bars books +0.06 R (long) and +0.09 R (short) more than the closed form
        up, down = abs(math.log(max(stop, target) / res.entry)), abs(math.log(min(stop, target) / res.entry))
        log_exit = close_only_booked_at_levels(closes, up, down, res.horizon, n, seed=1)
        old = (np.exp(log_exit) - 1 if side == "long" else 1 - np.exp(log_exit)).mean() * res.entry / risk
        assert old - closed > 0.05 > tolerance


# --- the simulation's exits -------------------------------------------------------------------


def test_hand_made_bars_exit_at_levels_at_gap_opens_and_at_the_stop_when_one_bar_reaches_both():
    # levels for entry 100: target 103 (log 0.0296), stop 98 (log -0.0202); log prices after each bar
    lt, ls = math.log(1.03), math.log(0.98)
    o = np.array([[0.0, 0.0, 0.0, 0.0, 0.0],
                  [0.001, -0.025, 0.010, 0.0, 0.035],
                  [0.0, 0.0, 0.0, 0.0, 0.0]])
    h = np.array([[0.035, 0.005, 0.012, 0.008, 0.010],
                  [0.040, 0.0, 0.031, 0.009, 0.040],
                  [0.0, 0.0, 0.0, 0.012, 0.0]])
    lo = np.array([[-0.025, -0.010, -0.005, -0.008, -0.005],
                   [-0.001, -0.030, 0.0, -0.009, 0.0],
                   [-0.010, -0.010, -0.005, 0.0, -0.005]])
    c = np.array([[0.001, -0.005, 0.010, 0.0, 0.005],
                  [0.0, -0.028, 0.020, 0.005, 0.036],
                  [-0.005, -0.010, 0.0, 0.010, 0.0]])
    paths = SimulatedPaths.from_bars(o, h, lo, c)
    # A: bar 1 reaches both levels: the stop. B: bar 2 gaps through the stop, out at its open -2.5%.
    # C: bar 2's high touches the target: out at 103. D: neither, out at the last close. E: bar 2
    # gaps above the target, out at its open +3.5%.
    long = paths.odds(100.0, 98.0, 103.0)
    exits = np.exp([ls, -0.025, lt, 0.010, 0.035]) - 1
    assert (long.p_target, long.p_stop) == (0.4, 0.4) and long.p_neither == pytest.approx(0.2, abs=1e-15)
    assert long.expected_return == pytest.approx(exits.mean(), abs=1e-7)
    assert long.var95 == pytest.approx(1 - math.exp(-0.025), abs=1e-7)  # the gap, worse than the stop
    # the mirrored short: stop 103, target 98. A's bar reaches both: the short's stop, 103. B: the gap
    # opens beyond the target: out at its open. C: stopped at 103. D: out at the last close. E: the
    # gap through the stop fills at the open, worse than 103.
    short = paths.odds(100.0, 103.0, 98.0)
    exits = 1 - np.exp([lt, -0.025, lt, 0.010, 0.035])
    assert (short.p_target, short.p_stop) == (0.2, 0.6) and short.p_neither == pytest.approx(0.2, abs=1e-15)
    assert short.expected_return == pytest.approx(exits.mean(), abs=1e-7)
    assert short.var95 == pytest.approx(math.exp(0.035) - 1, abs=1e-7)


def test_bootstrapped_bars_that_reach_both_levels_exit_at_the_stop_and_gaps_exit_at_the_open():
    # every bar the same: every path is the same, whatever the seed
    n = 40
    wide = BarMoves(np.zeros(n), np.full(n, 0.05), np.full(n, -0.05), np.zeros(n))
    paths = simulate_paths(wide, 24, 10_000, 6, seed=5)
    long, short = paths.odds(100.0, 98.0, 104.0), paths.odds(100.0, 102.0, 96.0)
    assert long.p_stop == 1.0 and long.expected_return == pytest.approx(-0.02, rel=1e-6)
    assert short.p_stop == 1.0 and short.expected_return == pytest.approx(-0.02, rel=1e-6)
    gap = BarMoves(np.full(n, -0.05), np.full(n, -0.04), np.full(n, -0.06), np.full(n, -0.055))
    paths = simulate_paths(gap, 24, 10_000, 6, seed=5)
    long, short = paths.odds(100.0, 98.0, 104.0), paths.odds(100.0, 102.0, 96.0)
    assert long.p_stop == 1.0 and long.expected_return == pytest.approx(math.expm1(-0.05), rel=1e-6)
    assert short.p_target == 1.0 and short.expected_return == pytest.approx(-math.expm1(-0.05), rel=1e-6)


def test_bootstrap_blocks_are_runs_of_consecutive_bars_wrapping_round_the_end():
    n, block, horizon = 50, 6, 24
    c = np.arange(1.0, n + 1)  # the close move is its own index + 1; all positive, so the running high is the close
    paths = simulate_paths(BarMoves(np.zeros(n), c, np.zeros(n), c), horizon, n_paths=2000, block=block, seed=1)
    assert np.array_equal(paths.running_high[-1], paths.final)
    assert (paths.running_low == 0).all()
    steps = np.diff(paths.running_high, axis=0, prepend=0.0)
    within = np.diff(steps, axis=0)[[t - 1 for t in range(1, horizon) if t % block]]  # steps inside a block
    assert np.isin(within, [1.0, 1.0 - n]).all()
    assert (within == 1.0 - n).any()  # some blocks do wrap
    assert set(np.unique(steps[::block])) == set(c)  # block starts cover every bar
    # each path's open is the level before its bar
    bar = np.random.default_rng(2).integers(0, horizon, paths.n_paths)
    before = np.where(bar > 0, paths.running_high[np.maximum(bar - 1, 0), np.arange(paths.n_paths)], 0.0)
    assert np.array_equal(paths.open_at(bar), before)


def test_simulated_paths_carry_the_drift_used_and_keep_each_bars_shape():
    n = 40
    bars = BarMoves(np.full(n, 0.001), np.full(n, 0.01), np.full(n, -0.02), np.full(n, 0.004))
    paths = simulate_paths(bars, 10, 10_000, 6, seed=0, drift=-0.003)
    # the close moves become -0.003 (0.004 de-meaned, plus the drift); open, high and low move by as much
    assert np.allclose(paths.final, -0.03, atol=1e-6)
    assert np.allclose(paths.running_high[0], 0.01 - 0.007, atol=1e-7)
    assert np.allclose(paths.running_low[-1], -0.003 * 9 - 0.02 - 0.007, atol=1e-6)
    assert np.allclose(paths.open_at(np.full(10_000, 4)), -0.003 * 4 + 0.001 - 0.007, atol=1e-7)
    as_is = simulate_paths(bars, 10, 10_000, 6, seed=0)
    assert np.allclose(as_is.final, 0.04, atol=1e-6)


def test_the_same_seed_reproduces_exactly_and_another_seed_differs():
    bars = brownian_bars(500, 0.0, 0.005, seed=4)
    a = bracket_odds(100.0, 99.0, 102.0, 24, bars, seed=7).simulated
    b = bracket_odds(100.0, 99.0, 102.0, 24, candles(*bars), seed=7).simulated
    c = bracket_odds(100.0, 99.0, 102.0, 24, bars, seed=8).simulated
    assert a == b
    assert a != c


def test_long_and_short_brackets_reuse_the_same_paths():
    # with R = 1 the short bracket is the long one mirrored: on the same paths its target is the long
    # stop (no bar here is wide enough to reach both levels, where the two would differ)
    bars = brownian_bars(300, 0.0, 0.01, seed=4)
    res = montecarlo(*bars, MonteCarloParams(reward_risk=1.0))
    assert res.short_p_target_sim == res.long_p_stop_sim
    assert res.short_p_stop_sim == res.long_p_target_sim
    assert res.short_expected_return_sim == pytest.approx(-res.long_expected_return_sim, abs=1e-15)


def test_reused_paths_price_a_proposed_bracket_like_a_fresh_simulation():
    bars = brownian_bars(600, 1e-4, 0.006, seed=2)
    fresh = bracket_odds(100.0, 98.8, 102.5, 24, bars, seed=1)
    moves = BarMoves.from_ohlc(*bars).tail(500)
    paths = simulate_paths(moves, 24, seed=1, drift=fresh.drift.used)
    assert bracket_odds(100.0, 98.8, 102.5, 24, bars, paths=paths) == fresh
    with pytest.raises(TheoryError, match="horizon"):
        bracket_odds(100.0, 98.8, 102.5, 12, bars, paths=paths)
    assert fresh.drift.used != fresh.drift.raw  # so the raw drift would not fit these paths
    with pytest.raises(TheoryError, match="drift"):
        bracket_odds(100.0, 98.8, 102.5, 24, bars, paths=paths, shrink_drift=False)


# --- drift shrinkage --------------------------------------------------------------------------


def test_james_stein_keeps_no_drift_at_or_below_one_standard_error():
    for t in (0.0, 0.3, -0.9, 1.0, -1.0):
        assert james_stein_factor(t) == 0.0


def test_james_stein_factor_is_one_minus_one_over_t_squared():
    for t in (1.5, -2.0, 3.0, 10.0):
        assert james_stein_factor(t) == pytest.approx(1 - 1 / t**2, rel=1e-15)
    assert james_stein_factor(2.0) == 0.75 and james_stein_factor(-10.0) == pytest.approx(0.99)


def test_estimated_drift_is_the_mean_shrunk_by_its_own_t():
    r = np.random.default_rng(1).normal(0.002, 0.01, 500)
    mean, sd = r.mean(), r.std(ddof=1)
    t = mean / (sd / math.sqrt(500))
    est = estimate_drift(r)
    assert est.raw == pytest.approx(mean, rel=1e-12) and est.t == pytest.approx(t, rel=1e-12)
    assert est.used == pytest.approx(mean * (1 - 1 / t**2), rel=1e-12)
    assert est.volatility == pytest.approx(sd, rel=1e-12) and est.n == 500
    assert t > 4 and 0.93 < est.used / est.raw < 1  # a large |t| leaves the drift nearly as it was
    assert estimate_drift(r, shrink=False).used == est.raw


def test_a_noisy_drift_no_longer_decides_the_favoured_side():
    # a driftless walk whose sample drift has t of about +1.2: kept raw it favours the long bracket
    bars = brownian_bars(501, 0.0, 0.01, seed=9)
    raw = montecarlo(*bars, MonteCarloParams(shrink_drift=False))
    shrunk = montecarlo(*bars)
    assert 1 < shrunk.drift_t < 1.25 and raw.drift_used == raw.drift_raw
    assert raw.label.startswith("long favoured; weak drift t +1.")
    assert 0 < shrunk.drift_used < 0.35 * shrunk.drift_raw
    assert shrunk.label.startswith("no edge; drift t +1.") and "shrunk to ~0" in shrunk.label


# --- errors, labels and the theory ------------------------------------------------------------


def test_a_bracket_on_the_wrong_side_is_an_error():
    bars = brownian_bars(200, 0.0, 0.01, seed=0)
    with pytest.raises(TheoryError, match="not a bracket"):
        bracket_odds(100.0, 101.0, 102.0, 24, bars)


def test_constant_prices_short_samples_and_broken_bars_are_errors_not_numbers():
    flat = np.full(200, 100.0)
    with pytest.raises(TheoryError, match="constant"):
        bracket_odds(100.0, 99.0, 102.0, 24, (flat, flat * 1.01, flat * 0.99, flat))
    o, h, lo, c = brownian_bars(20, 0.0, 0.01, seed=0)
    with pytest.raises(TheoryError, match="at least 30"):
        bracket_odds(100.0, 99.0, 102.0, 24, (o, h, lo, c))
    with pytest.raises(TheoryError, match="low <= open, close <= high"):
        BarMoves.from_ohlc(o, c, lo, c)  # highs below some opens
    short = candles(*brownian_bars(50, 0.0, 0.01, seed=0))
    ctx = TheoryContext("X/USDT", short.last_close_time, short, short)
    with pytest.raises(TheoryError, match="at least 100"):
        THEORY(ctx)


def test_params_require_at_least_ten_thousand_paths():
    with pytest.raises(ValueError):
        MonteCarloParams(n_paths=5000)


def test_label_favours_the_side_a_real_drift_helps():
    bars = brownian_bars(501, 0.003, 0.01, seed=9)  # t of the drift about 6
    res = montecarlo(*bars)
    assert res.drift_t > 4 and res.long_expected_r_sim > res.short_expected_r_sim + 0.2
    assert res.label == "long favoured"


def test_label_of_a_driftless_walk_says_no_edge_and_that_its_drift_was_set_to_zero():
    bars = brownian_bars(501, 0.0, 0.01, seed=0)
    res = montecarlo(*bars)
    assert abs(res.drift_t) <= 1 and res.drift_used == 0.0
    assert res.label == f"no edge; drift t {res.drift_t:+.1f} shrunk to 0"
    # the closed form priced the long bracket with no drift at all
    up, down = math.log(res.long_target / res.entry), math.log(res.entry / res.long_stop)
    p_up, _, _ = killed_brownian(0.0, res.volatility**2, up, down, res.horizon)
    assert res.long_p_target_closed == pytest.approx(p_up, rel=1e-9)
    assert p_up != pytest.approx(killed_brownian(res.drift_raw, res.volatility**2, up, down, res.horizon)[0], rel=1e-3)


def test_summary_is_one_compact_line_even_with_the_longest_label():
    res = montecarlo(*brownian_bars(501, 0.0, 0.01, seed=0))
    drift = DriftEstimate(raw=-1e-4, t=-1.1, used=-2e-5, volatility=0.01, n=500)
    longest = _label(-0.4, -0.1, drift, 0.2, MonteCarloParams())
    assert longest == "both lose, short less; drift t -1.1 shrunk to ~0; sim and Brownian differ"
    text = res.model_copy(update={"label": longest}).summary()
    assert len(text) <= 200 and "\n" not in text
    assert text.startswith("stop 1.5ATR target 2R 24 bars: sim odds tgt/stop, E[R]: long ")
    odds = f"long {res.long_p_target_sim:.2f}/{res.long_p_stop_sim:.2f} {res.long_expected_r_sim:+.2f}"
    assert odds.replace("0.", ".") in text


def test_theory_runs_on_real_data(shared_data):
    df = pd.read_csv(shared_data / "candles" / "binance-spot-1h" / "BTC_USDT.csv.gz").tail(2000)
    history = Candles(df.time, df.open, df.high, df.low, df.close, df.volume, symbol="BTC/USDT")
    ctx = TheoryContext(symbol="BTC/USDT", at_ms=history.last_close_time, candles=history.tail(500), history=history)
    res = THEORY(ctx)
    assert res.entry == history.close[-1]
    assert res.long_stop < res.entry < res.long_target and res.short_target < res.entry < res.short_stop
    assert res.long_target - res.entry == pytest.approx(2 * (res.entry - res.long_stop))
    assert res.drift_used == pytest.approx(res.drift_raw * james_stein_factor(res.drift_t), rel=1e-12)
    for side in ("long", "short"):
        for method in ("closed", "sim"):
            p = [getattr(res, f"{side}_{f}_{method}") for f in ("p_target", "p_stop", "p_neither")]
            assert all(0 <= x <= 1 for x in p) and sum(p) == pytest.approx(1.0, abs=1e-9)
            assert getattr(res, f"{side}_cvar95_{method}") >= getattr(res, f"{side}_var95_{method}") - 1e-12
        # the two methods share drift and variance; fat tails and clusters move them apart, but not wildly
        assert abs(getattr(res, f"{side}_p_target_closed") - getattr(res, f"{side}_p_target_sim")) < 0.15
    assert res == THEORY(ctx)  # seeded: the snapshot reproduces
    assert res.summary().endswith(res.label) and len(res.summary()) <= 200


@pytest.mark.parametrize("symbol", ["BTC_USDT", "DOGE_USDT"])
def test_compiled_cell_integrals_are_numpys_to_the_bit_on_real_brackets(shared_data, symbol):
    # the survivor mass of the closed form, as numpy computed it before the compiled loop: an outer
    # product, numpy's sin and cos, the antiderivative and its differences
    df = pd.read_csv(shared_data / "candles" / "binance-spot-1h" / f"{symbol}.csv.gz").tail(501)
    drift = estimate_drift(BarMoves.from_ohlc(df.open, df.high, df.low, df.close).close)
    mu, s2 = drift.used, drift.volatility**2
    for up, down in ((0.02, 0.01), (0.01, 0.02), (0.004, 0.07)):
        width = up + down
        w = _series_terms(s2, width, 24) * math.pi / width
        c = mu / s2
        y = np.linspace(-down, up, 401) + down
        wy = np.outer(w, y)
        anti = np.exp(c * (y - down)) * (c * np.sin(wy) - w[:, None] * np.cos(wy)) / (c * c + w * w)[:, None]
        compiled = _cell_integrals(w, y, np.exp(c * (y - down)), c, c * c + w * w)
        assert np.array_equal(compiled, np.diff(anti, axis=1))


@pytest.mark.parametrize("symbol", ["BTC_USDT", "DOGE_USDT"])
def test_bar_moves_and_drift_are_numpys_stack_checks_logs_mean_and_var_to_the_bit(shared_data, symbol):
    # BarMoves.from_ohlc and drift_and_variance as numpy did them before the compiled stack-and-check
    # pass and the shared sum: np.stack, its checks, np.log; r.mean() and r.var(ddof=1)
    df = pd.read_csv(shared_data / "candles" / "binance-spot-1h" / f"{symbol}.csv.gz").tail(3001)
    cols = [df[k].to_numpy(np.float64) for k in ("open", "high", "low", "close")]
    for end in range(501, 3002, 500):
        window = [a[end - 501:end] for a in cols]
        logs = np.log(np.stack(window))
        moves = BarMoves.from_ohlc(*window)
        assert np.array_equal(np.stack([moves.open, moves.high, moves.low, moves.close]), logs[:, 1:] - logs[3, :-1])
        r = moves.close
        assert drift_and_variance(r) == (float(r.mean()), float(r.var(ddof=1)))
    rng = np.random.default_rng(2)
    for _ in range(200):  # also on returns of other sizes and scales
        r = rng.standard_t(3, rng.integers(30, 3000)) * 10.0 ** rng.uniform(-5, 0) + rng.normal(0, 1e-3)
        assert drift_and_variance(r) == (float(r.mean()), float(r.var(ddof=1)))


def test_broken_bars_are_caught_as_numpys_checks_caught_them_whichever_price_breaks():
    rng = np.random.default_rng(4)
    for _ in range(3000):
        o, h, lo, c = (a[:8].copy() for a in brownian_bars(8, 0.0, 0.01, seed=int(rng.integers(1000))))
        for _ in range(rng.integers(0, 3)):
            a, t = (o, h, lo, c)[rng.integers(4)], rng.integers(8)
            a[t] = rng.choice([np.nan, np.inf, -np.inf, 0.0, -1.0, a[t] * 0.99, a[t] * 1.01])
        prices = np.stack([o, h, lo, c])
        if not (np.isfinite(prices).all() and (prices > 0).all()):
            expected = "finite positive prices"
        elif (h < np.maximum(o, c)).any() or (lo > np.minimum(o, c)).any():
            expected = "low <= open, close <= high"
        else:
            expected = None
        if expected is None:
            BarMoves.from_ohlc(o, h, lo, c)
        else:
            with pytest.raises(TheoryError, match=expected):
                BarMoves.from_ohlc(o, h, lo, c)
