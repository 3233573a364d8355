"""Minimum reward:risk of the bracket (default 1.5), gross of fees: |target - entry| / |entry - stop|.

A ratio within one part in 1e9 of the limit passes: 1.5 computed from prices in floating point
(e.g. 0.3 / 0.2) may land a hair under it.
"""

from __future__ import annotations

from risk.rules.base import PASS, RiskRule, RuleContext, RuleOutcome


class RewardRisk(RiskRule):
    name = "min_reward_risk"

    def check(self, ctx: RuleContext) -> RuleOutcome:
        limit = ctx.config.ftmo.min_reward_risk
        if ctx.reward_risk < limit * (1.0 - 1e-9):
            return self.reject("reward_risk_too_low", f"reward:risk {ctx.reward_risk:.4g} is below {limit:g}",
                               value=ctx.reward_risk, limit=limit, unit="ratio")
        return PASS
