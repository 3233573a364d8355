"""FTMO-style maximum loss, on equity: never below (1 - `total_loss_limit`) x the initial balance.

A trade is refused when equity is already at the floor, or when its stop-out would go below it.
"""

from __future__ import annotations

from risk.decision import Reason
from risk.rules.base import PASS, RiskRule, RuleContext, RuleOutcome, SizedTrade


def total_floor(ctx: RuleContext) -> float:
    """Lowest equity ever allowed, quote currency."""
    return ctx.request.account.initial_balance * (1.0 - ctx.config.ftmo.total_loss_limit)


class TotalLoss(RiskRule):
    name = "total_loss_limit"

    def check(self, ctx: RuleContext) -> RuleOutcome:
        floor, equity = total_floor(ctx), ctx.request.account.equity
        if equity <= floor:
            return self.reject("total_loss_limit_reached", f"equity {equity:.2f} is at or below the floor {floor:.2f}",
                               value=equity, limit=floor, unit="quote")
        return PASS

    def check_sized(self, ctx: RuleContext, trade: SizedTrade) -> tuple[Reason, ...]:
        floor, equity = total_floor(ctx), ctx.request.account.equity
        at_stop = equity - trade.risk_amount
        if at_stop < floor:
            return (self.reason("total_loss_at_stop",
                                f"a stop-out would leave equity {at_stop:.2f}, below the total floor {floor:.2f}",
                                value=at_stop, limit=floor, unit="quote"),)
        return ()
