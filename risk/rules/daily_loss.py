"""FTMO-style daily loss limit, on equity: never below the day-start balance less `daily_loss_limit` x initial.

The day starts at midnight in the configured zone (FTMO: Prague), and its reference is the
*closed balance* then, so a position open across midnight carries its floating loss into the new
day: the limit resets, the loss does not. A trade is refused when equity is already at the floor,
or when its stop-out (fees included) would take equity below it.
"""

from __future__ import annotations

from risk.decision import Reason
from risk.rules.base import PASS, RiskRule, RuleContext, RuleOutcome, SizedTrade


def daily_floor(ctx: RuleContext) -> float:
    """Lowest equity allowed today, quote currency."""
    a = ctx.request.account
    return ctx.day.balance - ctx.config.ftmo.daily_loss_limit * a.initial_balance


class DailyLoss(RiskRule):
    name = "daily_loss_limit"

    def check(self, ctx: RuleContext) -> RuleOutcome:
        floor, equity = daily_floor(ctx), ctx.request.account.equity
        if equity <= floor:
            return self.reject(
                "daily_loss_limit_reached",
                f"equity {equity:.2f} is at or below today's floor {floor:.2f} (day-start balance "
                f"{ctx.day.balance:.2f} less {ctx.config.ftmo.daily_loss_limit:.2%} of the initial balance)",
                value=equity, limit=floor, unit="quote",
            )
        return PASS

    def check_sized(self, ctx: RuleContext, trade: SizedTrade) -> tuple[Reason, ...]:
        floor, equity = daily_floor(ctx), ctx.request.account.equity
        at_stop = equity - trade.risk_amount
        if at_stop < floor:
            return (self.reason(
                "daily_loss_at_stop",
                f"a stop-out would leave equity {at_stop:.2f}, below today's floor {floor:.2f}",
                value=at_stop, limit=floor, unit="quote",
            ),)
        return ()
