"""The kill switch: when on (config, or the environment through `RiskConfig.with_environment`), nothing trades."""

from __future__ import annotations

from risk.config import KILL_SWITCH_ENV
from risk.rules.base import PASS, RiskRule, RuleContext, RuleOutcome


class KillSwitch(RiskRule):
    name = "kill_switch"

    def check(self, ctx: RuleContext) -> RuleOutcome:
        if ctx.config.kill_switch:
            return self.reject("kill_switch_on",
                               f"kill switch is on (config or {KILL_SWITCH_ENV}): every trade refused")
        return PASS
