"""Circuit breakers as a rule: a halted breaker refuses; the daily breaker's recovery halves the size.

The gate advances the breaker state (risk.breakers.update_breakers) before the rules run, so a
trip seen by this very decision already refuses it.
"""

from __future__ import annotations

from risk.rules.base import PASS, RiskRule, RuleContext, RuleOutcome


class CircuitBreakers(RiskRule):
    name = "circuit_breakers"

    def check(self, ctx: RuleContext) -> RuleOutcome:
        status = ctx.breakers
        if status.halted_by:
            active = ctx.breaker_state.active
            reasons = []
            for name in status.halted_by:
                trip = active.get(name)
                until = "a manual reset" if name != "daily" else "the end of the 24 h halt"
                reasons.append(self.reason(f"{name}_breaker_halt", f"the {name} circuit breaker is tripped: halt until "
                                           f"{until}" + (f" (tripped at {trip.at_ms})" if trip else "")))
            return RuleOutcome(rejections=tuple(reasons))
        if status.size_multiplier != 1.0:
            m = status.size_multiplier
            return RuleOutcome(multiplier=m, multiplier_reason=self.reason(
                "breaker_recovery", f"daily breaker recovery until {status.recovery_until_ms}: size x{m:g}",
                value=m, unit="multiplier"))
        return PASS
