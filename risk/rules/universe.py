"""The tradable universe: an allow-list of symbols in tiers; each tier caps its positions' size and count."""

from __future__ import annotations

from risk.rules.base import NotionalCap, RiskRule, RuleContext, RuleOutcome


class Universe(RiskRule):
    name = "universe"

    def check(self, ctx: RuleContext) -> RuleOutcome:
        u = ctx.config.universe
        symbol = ctx.request.proposal.symbol
        tier_name = u.symbols.get(symbol)
        if tier_name is None:
            return self.reject("symbol_not_allowed", f"{symbol} is not in the allowed universe")
        tier = u.tiers[tier_name]
        in_tier = sum(1 for p in ctx.request.positions if u.symbols.get(p.symbol) == tier_name)
        if in_tier >= tier.max_open_positions:
            return self.reject(
                "tier_positions_full",
                f"tier {tier_name!r} already holds {in_tier} open positions (limit {tier.max_open_positions})",
                value=in_tier, limit=tier.max_open_positions, unit="positions",
            )
        equity = ctx.request.account.equity
        limit = tier.max_position_notional * equity
        cap = NotionalCap(self.name, "tier_position_cap", limit,
                          f"tier {tier_name!r} caps a position at {tier.max_position_notional:.2%} of equity")
        return RuleOutcome(caps=(cap,))
