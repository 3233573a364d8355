"""FTMO-style cap on the number of open positions (default 3)."""

from __future__ import annotations

from risk.rules.base import PASS, RiskRule, RuleContext, RuleOutcome


class OpenPositions(RiskRule):
    name = "max_open_positions"

    def check(self, ctx: RuleContext) -> RuleOutcome:
        n, limit = len(ctx.request.positions), ctx.config.ftmo.max_open_positions
        if n >= limit:
            return self.reject("too_many_open_positions", f"{n} positions open, limit {limit}",
                               value=n, limit=limit, unit="positions")
        return PASS
