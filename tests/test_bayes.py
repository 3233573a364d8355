import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from scipy.stats import beta

from theories.base import TheoryContext, TheoryError
from theories.bayes import (
    THEORY,
    BayesParams,
    bayes,
    break_even_win_rate,
    count_wins,
    win_rate_posterior,
)
from theories.candles import Candles


def binomial_tail(n: int, k: int, x: float) -> float:
    """P(Binomial(n, x) >= k), by hand."""
    return sum(math.comb(n, j) * x**j * (1 - x) ** (n - j) for j in range(k, n + 1))


def test_beta_posterior_numbers_match_hand_calculation():
    # 7 wins, 3 losses, uniform prior: posterior Beta(8, 4), mean 8/12
    res = bayes([1.5] * 7 + [-1.0] * 3, BayesParams(reward_risk=1.5))
    assert (res.n, res.wins, res.losses) == (10, 7, 3)
    assert (res.posterior_a, res.posterior_b) == (8.0, 4.0)
    assert res.mean == pytest.approx(8 / 12, rel=1e-15)
    assert res.break_even == pytest.approx(0.4, rel=1e-15)
    # for whole a, b the Beta cdf is a binomial tail: P(p <= x) = P(Binomial(a + b - 1, x) >= a)
    assert res.p_edge == pytest.approx(1 - binomial_tail(11, 8, 0.4), rel=1e-12)
    # 165 .4^8 .6^3 + 55 .4^9 .6^2 + 11 .4^10 .6 + .4^11 = 0.0292814848
    assert res.p_edge == pytest.approx(1 - 0.0292814848, abs=1e-10)
    lo, hi = beta.ppf([0.025, 0.975], 8, 4)
    assert (res.lower, res.upper) == (pytest.approx(lo, rel=1e-12), pytest.approx(hi, rel=1e-12))
    assert binomial_tail(11, 8, res.lower) == pytest.approx(0.025, abs=1e-10)
    assert binomial_tail(11, 8, res.upper) == pytest.approx(0.975, abs=1e-10)
    assert res.label.startswith("edge likely")


def test_zero_outcomes_give_the_prior():
    res = bayes([])
    assert (res.n, res.posterior_a, res.posterior_b) == (0, 1.0, 1.0)
    # the uniform prior: mean 1/2, quantiles are the probabilities themselves, P(p > 0.4) = 0.6
    assert res.mean == 0.5
    assert res.lower == pytest.approx(0.025, abs=1e-12) and res.upper == pytest.approx(0.975, abs=1e-12)
    assert res.p_edge == pytest.approx(0.6, abs=1e-12)
    assert res.label == "no trades: prior only"
    assert res.summary() == "0 trades; break-even win rate .40 at 1.5R -> no trades: prior only"


def test_an_informative_prior_with_no_trades_is_returned_unchanged():
    res = bayes([], BayesParams(prior_wins=4, prior_losses=6))
    assert res.mean == pytest.approx(0.4) and res.p_edge == pytest.approx(beta.sf(0.4, 4, 6))


def test_break_even_win_rate_is_one_over_one_plus_reward_risk():
    assert break_even_win_rate(1.0) == 0.5
    assert break_even_win_rate(2.0) == pytest.approx(1 / 3)
    assert break_even_win_rate(1.5) == pytest.approx(0.4)
    with pytest.raises(TheoryError):
        break_even_win_rate(0.0)


def test_booleans_and_r_multiples_count_the_same_and_a_scratch_is_a_loss():
    assert count_wins([True, False, True]) == (2, 1)
    assert count_wins([2.0, -1.0, 0.5, 0.0]) == (2, 2)
    assert bayes([True, False, True]).mean == bayes([1.0, -1.0, 3.0]).mean == pytest.approx(3 / 5)


def test_updating_in_two_batches_equals_one_batch():
    first = win_rate_posterior(3, 5)
    both = win_rate_posterior(4, 2, prior_wins=first.a, prior_losses=first.b)
    once = win_rate_posterior(7, 7)
    assert (both.a, both.b, both.lower, both.upper) == (once.a, once.b, once.lower, once.upper)


def test_credible_interval_holds_its_mass_and_narrows_with_more_trades():
    small, large = win_rate_posterior(6, 4, mass=0.9), win_rate_posterior(60, 40, mass=0.9)
    for post in (small, large):
        inside = beta.cdf(post.upper, post.a, post.b) - beta.cdf(post.lower, post.a, post.b)
        assert inside == pytest.approx(0.9, abs=1e-10)
        assert post.lower < post.mean < post.upper
    assert large.upper - large.lower < 0.5 * (small.upper - small.lower)


def test_labels_follow_the_thresholds():
    assert bayes([1.0] * 30 + [-1.0] * 10).label.startswith("edge likely")
    assert bayes([1.0] * 5 + [-1.0] * 35).label.startswith("no edge likely")
    assert bayes([1.0] * 2 + [-1.0] * 3).label.startswith("edge uncertain")
    # the same record at a higher reward:risk clears a lower break-even
    record = [1.0] * 4 + [-1.0] * 6
    assert bayes(record, BayesParams(reward_risk=1.0)).p_edge < bayes(record, BayesParams(reward_risk=3.0)).p_edge


def test_non_finite_outcomes_and_bad_counts_are_errors():
    with pytest.raises(TheoryError, match="finite"):
        bayes([1.0, float("nan")])
    with pytest.raises(TheoryError):
        win_rate_posterior(-1, 3)
    with pytest.raises(ValueError):
        BayesParams(prior_wins=0)


def test_theory_runs_on_real_data_context(shared_data):
    df = pd.read_csv(shared_data / "candles" / "binance-spot-1h" / "BTC_USDT.csv.gz").tail(2000)
    history = Candles(df.time, df.open, df.high, df.low, df.close, df.volume, symbol="BTC/USDT")
    outcomes = tuple(np.random.default_rng(5).choice([2.0, -1.0], size=25, p=[0.45, 0.55]))
    ctx = TheoryContext(
        symbol="BTC/USDT", at_ms=history.last_close_time, candles=history.tail(500), history=history,
        outcomes=outcomes,
    )
    res = THEORY(ctx, {"reward_risk": 2.0})
    assert res.n == 25 and res.wins == sum(o > 0 for o in outcomes)
    assert res.break_even == pytest.approx(1 / 3)
    assert 0 < res.lower < res.mean < res.upper < 1
    assert res.summary().endswith(res.label)
    assert THEORY(replace(ctx, outcomes=())).label == "no trades: prior only"


def test_memoised_results_follow_the_counts_and_every_parameter():
    # the result is cached per (wins, losses, params): a changed parameter or count must not reuse one
    outcomes = [1.0] * 6 + [-1.0] * 4
    base = bayes(outcomes, BayesParams(reward_risk=1.5))
    assert bayes(list(outcomes), BayesParams(reward_risk=1.5)) == base
    other = bayes(outcomes, BayesParams(reward_risk=2.0))
    assert other.break_even == pytest.approx(1 / 3) and other.p_edge > base.p_edge
    sceptic = bayes(outcomes, BayesParams(reward_risk=1.5, prior_wins=4.0, prior_losses=6.0))
    assert (sceptic.posterior_a, sceptic.posterior_b) == (10.0, 10.0)
    strict = bayes(outcomes, BayesParams(reward_risk=1.5, edge_likely=0.99))
    assert strict.p_edge == base.p_edge and base.label == "edge likely"  # P(edge) is ~0.90 here
    assert strict.label == "edge uncertain"
    assert bayes([*outcomes, 1.0], BayesParams(reward_risk=1.5)).wins == 7
