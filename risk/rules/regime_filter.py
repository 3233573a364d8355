"""Regime filter: per named regime, which directions may trade, a size multiplier and a minimum confidence.

Defaults (issue 6): bull trend long only x1.0 min 0.65; bear trend short only x1.0 min 0.65;
high-vol range both x0.5 min 0.70; low-vol range both x0.8 min 0.60; breakout with the breakout
x1.2 min 0.65; consolidation both x0.8 min 0.65. An unknown regime, or a breakout without its
direction, is refused (fail closed); no regime at all is refused unless `require_regime` is off.
"""

from __future__ import annotations

from risk.rules.base import PASS, RiskRule, RuleContext, RuleOutcome


class RegimeFilter(RiskRule):
    name = "regime_filter"

    def check(self, ctx: RuleContext) -> RuleOutcome:
        cfg = ctx.config.regime
        view = ctx.request.regime
        s = ctx.request.proposal
        if view is None:
            if cfg.require_regime:
                return self.reject("regime_unknown", "no regime was given for the symbol: refused (fail closed)")
            return PASS
        policy = cfg.policies.get(view.name)
        if policy is None:
            return self.reject("regime_unknown", f"regime {view.name!r} is not one of {sorted(cfg.policies)}")
        allowed: set[str]
        if policy.directions == "with_breakout":
            if view.breakout_direction is None:
                return self.reject("breakout_direction_unknown", "breakout regime without its direction: refused")
            allowed = {view.breakout_direction}
        else:
            allowed = {"long": {"LONG"}, "short": {"SHORT"}, "both": {"LONG", "SHORT"}}[policy.directions]
        rejections = []
        if s.direction not in allowed:
            rejections.append(self.reason("direction_not_allowed",
                                          f"{s.direction} is not allowed in {view.name} (allowed: {sorted(allowed)})"))
        if s.confidence < policy.min_confidence:
            rejections.append(self.reason(
                "confidence_too_low",
                f"confidence {s.confidence:.2f} is below {policy.min_confidence:.2f} in {view.name}",
                value=s.confidence, limit=policy.min_confidence, unit="probability"))
        if rejections:
            return RuleOutcome(rejections=tuple(rejections))
        if policy.multiplier == 1.0:
            return PASS
        return RuleOutcome(multiplier=policy.multiplier, multiplier_reason=self.reason(
            "regime_multiplier", f"{view.name}: size x{policy.multiplier:g}", value=policy.multiplier,
            unit="multiplier"))
