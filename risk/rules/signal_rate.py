"""At most `max_signals_per_hour` signals in any hour: counted over (now - 1 h, now], this one included.

A signal exactly one hour old no longer counts.
"""

from __future__ import annotations

from risk.breakers import HOUR_MS
from risk.rules.base import PASS, RiskRule, RuleContext, RuleOutcome


class SignalRate(RiskRule):
    name = "max_signals_per_hour"

    def check(self, ctx: RuleContext) -> RuleOutcome:
        now = ctx.request.now_ms
        earlier = sum(1 for t in ctx.request.recent_signal_ms if now - HOUR_MS < t <= now)
        limit = ctx.config.ftmo.max_signals_per_hour
        if earlier + 1 > limit:
            return self.reject("too_many_signals",
                               f"{earlier} signals in the last hour already, limit {limit} per hour",
                               value=earlier + 1, limit=limit, unit="signals per hour")
        return PASS
