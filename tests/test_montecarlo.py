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
    MonteCarloParams,
    SimulatedPaths,
    barrier_probability,
    bracket_odds,
    closed_form_odds,
    killed_brownian,
    montecarlo,
    simulate_paths,
)


def gaussian_paths(mu: float, sigma: float, horizon: int, n: int, seed: int) -> SimulatedPaths:
    """Exact Gaussian random walks checked once per bar: the discrete monitoring BGK corrects for."""
    steps = np.random.default_rng(seed).normal(mu, sigma, (horizon, n))
    return SimulatedPaths.from_log_prices(np.cumsum(steps, axis=0))


def candles_from_closes(close: np.ndarray) -> Candles:
    close = np.asarray(close, dtype=np.float64)
    open_ = np.concatenate(([close[0]], close[:-1]))
    spread = 0.002 * close
    return Candles(
        1_700_000_000_000 + np.arange(len(close)) * HOUR_MS, open_, np.maximum(open_, close) + spread,
        np.minimum(open_, close) - spread, close, np.ones(len(close)),
    )


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


# --- discrete monitoring ----------------------------------------------------------------------


def test_bgk_constant_is_minus_zeta_one_half_over_root_two_pi():
    assert BGK_BETA == pytest.approx(-zeta(0.5) / math.sqrt(2 * math.pi), rel=1e-14)


def test_bgk_shift_away_from_the_start_moves_the_closed_form_toward_the_discrete_simulation():
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
    corrected = closed_form_odds(1.0, math.exp(-down), math.exp(up), T, mu, sigma**2)
    for p_sim, p_cf in ((sim.p_target, corrected.p_target), (sim.p_stop, corrected.p_stop)):
        assert abs(p_cf - p_sim) < 4 * math.sqrt(p_sim * (1 - p_sim) / n)


def test_barrier_probability_matches_closed_form_and_simulation_within_sampling_error():
    # iid Gaussian returns resampled one at a time (block 1): the closed form's own assumptions
    rng = np.random.default_rng(21)
    returns = rng.normal(3e-4, 0.006, 200_000)
    n = 40_000
    for stop, target in ((98.5, 103.0), (101.2, 96.4)):
        rep = bracket_odds(100.0, stop, target, 24, returns, n_paths=n, block=1, seed=3)
        cf, sim = rep.closed_form, rep.simulated
        for p_cf, p_sim in ((cf.p_target, sim.p_target), (cf.p_stop, sim.p_stop), (cf.p_neither, sim.p_neither)):
            assert abs(p_cf - p_sim) < 4 * math.sqrt(p_cf * (1 - p_cf) / n)
        # trade returns lie between the two exits, so their sd is at most half that range
        half_range = 0.5 * abs(target - stop) / 100
        assert abs(cf.expected_return - sim.expected_return) < 4 * half_range / math.sqrt(n)


# --- simulation -------------------------------------------------------------------------------


def test_the_same_seed_reproduces_exactly_and_another_seed_differs():
    r = np.random.default_rng(0).standard_t(4, 500) * 0.005
    a = bracket_odds(100.0, 99.0, 102.0, 24, r, seed=7).simulated
    b = bracket_odds(100.0, 99.0, 102.0, 24, r, seed=7).simulated
    c = bracket_odds(100.0, 99.0, 102.0, 24, r, seed=8).simulated
    assert a == b
    assert a != c


def test_bootstrap_blocks_are_runs_of_consecutive_returns_wrapping_round_the_end():
    n, block, horizon = 50, 6, 24
    r = np.arange(1.0, n + 1)  # the return is its own index + 1; all positive, so the running max is the path
    paths = simulate_paths(r, horizon, n_paths=2000, block=block, seed=1)
    # rising paths: the maximum is the latest value and the minimum stays at the first step
    assert np.array_equal(paths.running_max[-1], paths.final)
    assert np.array_equal(paths.running_min[-1], paths.running_min[0])
    steps = np.diff(paths.running_max, axis=0, prepend=0.0)
    within = np.diff(steps, axis=0)[[t - 1 for t in range(1, horizon) if t % block]]  # steps inside a block
    assert np.isin(within, [1.0, 1.0 - n]).all()
    assert (within == 1.0 - n).any()  # some blocks do wrap
    assert set(np.unique(steps[::block])) == set(r)  # block starts cover every return


def test_simulated_odds_of_four_hand_made_paths():
    # log prices after bars 1..3; levels for entry 100: target 103 (log 0.0296), stop 98 (log -0.0202)
    paths = SimulatedPaths.from_log_prices(np.array([
        [0.010, -0.025, 0.005, 0.000],
        [0.035, 0.040, -0.010, -0.030],
        [0.000, 0.040, math.log(1.005), 0.050],
    ]))
    # A: target at bar 2; B: stop at bar 1; C: neither, out at 100.5; D: stop at bar 2, before its later high
    long = paths.odds(100.0, 98.0, 103.0)
    assert (long.p_target, long.p_stop, long.p_neither) == (0.25, 0.5, 0.25)
    assert long.expected_return == pytest.approx((0.03 - 0.02 + 0.005 - 0.02) / 4, abs=1e-12)
    assert long.var95 == pytest.approx(0.02) and long.cvar95 == pytest.approx(0.02)  # exits at the stop, no gap
    # the mirrored short on the same paths: A stopped at 103, B and D reach the target at 98, C loses 0.5%
    short = paths.odds(100.0, 103.0, 98.0)
    assert (short.p_target, short.p_stop, short.p_neither) == (0.5, 0.25, 0.25)
    assert short.expected_return == pytest.approx((-0.03 + 0.02 - 0.005 + 0.02) / 4, abs=1e-12)
    assert short.var95 == pytest.approx(0.03) and short.cvar95 == pytest.approx(0.03)


def test_long_and_short_brackets_reuse_the_same_paths():
    # with R = 1 the short bracket is the long one mirrored: on the same paths its target is the long stop
    close = 100 * np.exp(np.cumsum(np.random.default_rng(4).normal(0, 0.01, 300)))
    res = montecarlo(close, close * 1.004, close * 0.996, MonteCarloParams(reward_risk=1.0))
    assert res.short_p_target_sim == res.long_p_stop_sim
    assert res.short_p_stop_sim == res.long_p_target_sim
    assert res.short_expected_return_sim == pytest.approx(-res.long_expected_return_sim, abs=1e-15)


# --- errors and the theory --------------------------------------------------------------------


def test_a_bracket_on_the_wrong_side_is_an_error():
    r = np.random.default_rng(0).normal(0, 0.01, 200)
    with pytest.raises(TheoryError, match="not a bracket"):
        bracket_odds(100.0, 101.0, 102.0, 24, r)


def test_constant_returns_and_short_samples_are_errors_not_numbers():
    with pytest.raises(TheoryError, match="constant"):
        bracket_odds(100.0, 99.0, 102.0, 24, np.zeros(200))
    with pytest.raises(TheoryError, match="at least 30"):
        bracket_odds(100.0, 99.0, 102.0, 24, np.full(10, 0.01))
    ctx_short = candles_from_closes(100 + np.arange(50.0))
    ctx = TheoryContext("X/USDT", ctx_short.last_close_time, ctx_short, ctx_short)
    with pytest.raises(TheoryError, match="at least 100"):
        THEORY(ctx)


def test_params_require_at_least_ten_thousand_paths():
    with pytest.raises(ValueError):
        MonteCarloParams(n_paths=5000)


def test_theory_runs_on_real_data(shared_data):
    df = pd.read_csv(shared_data / "candles" / "binance-spot-1h" / "BTC_USDT.csv.gz").tail(2000)
    history = Candles(df.time, df.open, df.high, df.low, df.close, df.volume, symbol="BTC/USDT")
    ctx = TheoryContext(symbol="BTC/USDT", at_ms=history.last_close_time, candles=history.tail(500), history=history)
    res = THEORY(ctx)
    assert res.entry == history.close[-1]
    assert res.long_stop < res.entry < res.long_target and res.short_target < res.entry < res.short_stop
    assert res.long_target - res.entry == pytest.approx(2 * (res.entry - res.long_stop))
    for side in ("long", "short"):
        for method in ("closed", "sim"):
            p = [getattr(res, f"{side}_{f}_{method}") for f in ("p_target", "p_stop", "p_neither")]
            assert all(0 <= x <= 1 for x in p) and sum(p) == pytest.approx(1.0, abs=1e-9)
            assert getattr(res, f"{side}_cvar95_{method}") >= getattr(res, f"{side}_var95_{method}") - 1e-12
        # the two methods share drift and variance; fat tails move them apart, but not wildly
        assert abs(getattr(res, f"{side}_p_target_closed") - getattr(res, f"{side}_p_target_sim")) < 0.15
    assert res == THEORY(ctx)  # seeded: the snapshot reproduces
    assert res.summary().endswith(res.label)


def test_label_favours_the_side_the_drift_helps_and_says_when_the_drift_is_noise():
    rng = np.random.default_rng(9)
    up = 100 * np.exp(np.cumsum(rng.normal(0.003, 0.01, 500)))  # t of the drift about 6.7
    res = montecarlo(up, up * 1.004, up * 0.996)
    assert res.drift_t > 2 and res.long_expected_r > res.short_expected_r
    assert res.label.startswith("long bracket favoured") and "insignificant" not in res.label
    # driftless walks: the seed's first gives a drift of t = 0.15 (no edge), its second t = 1.1
    quiet, lucky = (100 * np.exp(np.cumsum(rng.normal(0.0, 0.01, 500))) for _ in range(2))
    res = montecarlo(quiet, quiet * 1.004, quiet * 0.996)
    assert abs(res.drift_t) < 0.5 and res.label.startswith("no edge between the long and short brackets")
    # both sides look slightly positive: the shared optimism of booking exits at the levels
    assert res.long_expected_r > 0 and res.short_expected_r > 0
    res = montecarlo(lucky, lucky * 1.004, lucky * 0.996)
    assert 0.5 < res.drift_t < 2 and res.label.startswith("long bracket favoured, but on an insignificant drift")
