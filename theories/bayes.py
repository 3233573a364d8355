"""Win rate of closed trades as a Beta-Binomial posterior: how sure can we be that there is an edge?

Each closed trade is a Bernoulli trial, a win when its result in R multiples is above zero (a
scratch at exactly 0 R counts as a loss: it did not pay). With a Beta(a0, b0) prior on the win
rate p, w wins and l losses give the conjugate posterior Beta(a0 + w, b0 + l) (Gelman et al.,
Bayesian Data Analysis, 3rd ed., sec. 2.4). Reported: the posterior mean (a / (a + b)), the
equal-tailed credible interval from the Beta quantiles, and P(p > break-even), where a bracket
paying R for every 1 risked breaks even at p* = 1 / (1 + R).

The default prior Beta(1, 1) is uniform: every win rate equally plausible before any trade, and
worth two pseudo-trades of evidence. A sceptical prior centred near break-even (say Beta(4, 6)
for R = 1.5) makes the verdict slower to turn.

Labels: P(p > p*) >= `edge_likely` (0.9) "edge likely"; <= `edge_unlikely` (0.1) "no edge
likely"; in between "edge uncertain"; no trades at all "no trade history: prior only".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

from pydantic import BaseModel, ConfigDict, Field
from scipy.stats import beta

from theories.base import (
    COUNT,
    PROBABILITY,
    RATIO,
    Theory,
    TheoryContext,
    TheoryError,
    TheoryParams,
    TheoryResult,
    dec,
    num,
    unit,
)


class BayesParams(TheoryParams):
    prior_wins: float = Field(1.0, gt=0, description="Beta prior a0: pseudo-wins before any trade (1 = uniform).")
    prior_losses: float = Field(1.0, gt=0, description="Beta prior b0: pseudo-losses before any trade (1 = uniform).")
    reward_risk: float = Field(1.5, gt=0, description="Reward:risk R of the trades; break-even win rate 1 / (1 + R).")
    credible_mass: float = Field(0.95, gt=0, lt=1, description="Mass of the equal-tailed credible interval.")
    edge_likely: float = Field(0.9, gt=0.5, lt=1, description="P(win rate > break-even) at or above this: edge likely.")
    edge_unlikely: float = Field(0.1, gt=0, lt=0.5, description="P(win rate > break-even) at or below this: no edge.")


class WinRatePosterior(BaseModel):
    """Beta(a, b) posterior of a win rate, with its mean and equal-tailed credible interval."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    a: float = unit(COUNT, "Posterior a: prior pseudo-wins plus wins.")
    b: float = unit(COUNT, "Posterior b: prior pseudo-losses plus losses.")
    mean: float = unit(PROBABILITY, "Posterior mean win rate, a / (a + b).")
    lower: float = unit(PROBABILITY, "Lower end of the equal-tailed credible interval.")
    upper: float = unit(PROBABILITY, "Upper end of the equal-tailed credible interval.")
    mass: float = unit(PROBABILITY, "Posterior mass inside [lower, upper].")

    def prob_above(self, rate: float) -> float:
        """P(win rate > `rate`) under this posterior."""
        return float(beta.sf(rate, self.a, self.b))


def win_rate_posterior(
    wins: int, losses: int, prior_wins: float = 1.0, prior_losses: float = 1.0, mass: float = 0.95
) -> WinRatePosterior:
    """The conjugate update Beta(a0, b0) -> Beta(a0 + wins, b0 + losses), with mean and interval."""
    if wins < 0 or losses < 0:
        raise TheoryError(f"wins and losses must be counts, got {wins} and {losses}")
    if not (prior_wins > 0 and prior_losses > 0):
        raise TheoryError("a Beta prior needs positive parameters")
    if not 0 < mass < 1:
        raise TheoryError(f"credible mass must lie in (0, 1), got {mass}")
    a, b = prior_wins + wins, prior_losses + losses
    tail = (1.0 - mass) / 2.0
    lower, upper = beta.ppf([tail, 1.0 - tail], a, b)
    return WinRatePosterior(a=a, b=b, mean=a / (a + b), lower=float(lower), upper=float(upper), mass=mass)


def break_even_win_rate(reward_risk: float) -> float:
    """Win rate at which a bracket paying `reward_risk` R per win and losing 1 R per loss breaks even."""
    if not reward_risk > 0:
        raise TheoryError(f"reward:risk must be positive, got {reward_risk}")
    return 1.0 / (1.0 + reward_risk)


def count_wins(outcomes: Sequence[float | bool]) -> tuple[int, int]:
    """(wins, losses) of trade results in R multiples (> 0 wins) or booleans (True wins)."""
    wins = losses = 0
    for x in outcomes:
        v = float(x)
        if not math.isfinite(v):
            raise TheoryError(f"trade outcome {x!r} is not a finite number")
        if v > 0:
            wins += 1
        else:
            losses += 1
    return wins, losses


class BayesResult(TheoryResult):
    n: int = unit(COUNT, "Closed trades counted.")
    wins: int = unit(COUNT, "Trades with a result above 0 R.")
    losses: int = unit(COUNT, "Trades with a result at or below 0 R.")
    posterior_a: float = unit(COUNT, "Posterior Beta a: prior pseudo-wins plus wins.")
    posterior_b: float = unit(COUNT, "Posterior Beta b: prior pseudo-losses plus losses.")
    mean: float = unit(PROBABILITY, "Posterior mean win rate.")
    lower: float = unit(PROBABILITY, "Lower end of the equal-tailed credible interval of the win rate.")
    upper: float = unit(PROBABILITY, "Upper end of the equal-tailed credible interval of the win rate.")
    credible_mass: float = unit(PROBABILITY, "Posterior mass inside [lower, upper] (0.95 by default).")
    reward_risk: float = unit(RATIO, "Reward:risk R the break-even is computed for.")
    break_even: float = unit(PROBABILITY, "Break-even win rate 1 / (1 + R).")
    p_edge: float = unit(PROBABILITY, "Posterior P(win rate > break-even).")

    def summary(self) -> str:
        if self.n == 0:  # the posterior is the prior: its numbers say nothing about this agent's trades
            be = dec(self.break_even)
            return f"0 trades; break-even win rate {be} at {num(self.reward_risk)}R -> {self.label}"
        return (
            f"{self.wins}/{self.n} wins, win rate {dec(self.mean)} ({dec(self.lower)}-{dec(self.upper)}) "
            f"vs break-even {dec(self.break_even)} at {num(self.reward_risk)}R, P(edge) {dec(self.p_edge)} "
            f"-> {self.label}"
        )


def _label(n: int, p_edge: float, p: BayesParams) -> str:
    if n == 0:
        return "no trades: prior only"
    if p_edge >= p.edge_likely:
        return "edge likely"
    if p_edge <= p.edge_unlikely:
        return "no edge likely"
    return "edge uncertain"


def bayes(outcomes: Sequence[float | bool], params: BayesParams | None = None) -> BayesResult:
    """Posterior of the win rate from closed-trade outcomes (oldest first; the order does not matter)."""
    p = params or BayesParams()
    return _bayes(*count_wins(outcomes), p)


# A replay asks for the same few (wins, losses) every hour, and scipy's Beta quantiles and tail cost
# ~0.5 ms a call: the result is a pure function of the counts and the (frozen, hashable) parameters.
@lru_cache(maxsize=1024)
def _bayes(wins: int, losses: int, p: BayesParams) -> BayesResult:
    post = win_rate_posterior(wins, losses, p.prior_wins, p.prior_losses, p.credible_mass)
    be = break_even_win_rate(p.reward_risk)
    p_edge = post.prob_above(be)
    return BayesResult(
        n=wins + losses, wins=wins, losses=losses, posterior_a=post.a, posterior_b=post.b, mean=post.mean,
        lower=post.lower, upper=post.upper, credible_mass=post.mass, reward_risk=p.reward_risk, break_even=be,
        p_edge=p_edge, label=_label(wins + losses, p_edge, p),
    )


def _run(ctx: TheoryContext, params: BayesParams) -> BayesResult:
    return bayes(ctx.outcomes, params)


THEORY = Theory(
    name="bayes",
    description="Beta-Binomial posterior of the trade win rate and P(win rate > 1 / (1 + R)) (conjugate Beta prior).",
    params=BayesParams,
    result=BayesResult,
    run=_run,
    min_bars=0,  # reads closed trades, not candles
)
