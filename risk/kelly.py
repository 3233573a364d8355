"""Kelly sizing of a bracketed trade, with p from the Bayesian win-rate posterior.

A bracket wins R for every 1 it risks with probability p and loses 1 otherwise. Maximising the
expected log growth E[ln(1 + f X)] over the fraction f of equity put at risk gives
f* = p - (1 - p) / R (Kelly 1956; Thorp 2006, sec. 2). Full Kelly is violent (p = 0.45, R = 2
risks 17.5% of equity per trade), so a fraction of it is used and the caps come after.

p is the posterior mean of the win rate, the Bayes choice for Kelly under a Beta posterior
(theories/bayes.py). The variant's whole history gives Beta(a0 + w, b0 + l); when the trades on
this symbol (first choice) or in this regime are at least `min_slice_trades`, that slice refines
it, with the variant's mean as its prior worth `slice_prior_strength` trades (empirical-Bayes
shrinkage: a short slice stays near the variant). The LLM's confidence is a ceiling: it can
lower p, never raise it.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from risk.config import SizingConfig
from risk.inputs import TradeHistory
from theories.bayes import win_rate_posterior


def kelly_fraction(p: float, reward_risk: float) -> float:
    """Full-Kelly fraction of equity to risk on a bracket: p - (1 - p) / R (may be <= 0: no bet)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"win probability must lie in [0, 1], got {p}")
    if not reward_risk > 0:
        raise ValueError(f"reward:risk must be positive, got {reward_risk}")
    return p - (1.0 - p) / reward_risk


class WinProbability(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    p: float  # the p Kelly uses: min(posterior mean, confidence)
    posterior_mean: float
    source: str  # "variant", "symbol" or "regime"
    trades: int  # closed trades behind the posterior (of the source slice)
    confidence_binds: bool


def win_probability(history: TradeHistory, confidence: float, cfg: SizingConfig) -> WinProbability:
    """p for Kelly: the posterior mean of the most specific slice with enough trades, capped by confidence."""
    v = history.variant
    base = win_rate_posterior(v.wins, v.losses, cfg.prior_wins, cfg.prior_losses)
    mean, source, trades = base.mean, "variant", v.n
    for name, slice_ in (("symbol", history.symbol), ("regime", history.regime)):
        if slice_.n >= cfg.min_slice_trades:
            k = cfg.slice_prior_strength
            post = win_rate_posterior(slice_.wins, slice_.losses, k * base.mean, k * (1.0 - base.mean))
            mean, source, trades = post.mean, name, slice_.n
            break
    p = min(mean, confidence)
    return WinProbability(p=p, posterior_mean=mean, source=source, trades=trades, confidence_binds=confidence < mean)
