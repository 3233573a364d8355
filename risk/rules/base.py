"""The one interface every risk rule keeps, in the manner of freqtrade's `IProtection`.

A rule looks at a `RuleContext` (the request, the config and what the gate derived once: the
trading-day references, the breaker status, the gross reward:risk) and answers with a
`RuleOutcome`: reasons to refuse, a size multiplier, notional caps, and notes that explain.
A rule may also look at the sized trade (`check_sized`), for limits that depend on the size,
such as a stop-out that would breach the daily loss limit. Adding a rule is adding a file and
listing it in `risk.rules.DEFAULT_RULES`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from risk.breakers import BreakerState, BreakerStatus
from risk.config import RiskConfig
from risk.decision import Reason
from risk.inputs import RiskRequest


@dataclass(frozen=True)
class PeriodReference:
    """Start of the current trading day/week/month (UTC epoch ms) and the closed balance then."""

    start_ms: int
    balance: float


@dataclass(frozen=True)
class RuleContext:
    request: RiskRequest
    config: RiskConfig
    day: PeriodReference
    week: PeriodReference
    month: PeriodReference
    breakers: BreakerStatus  # what the breakers mean for a trade now
    breaker_state: BreakerState  # the state after this decision's update
    reward_risk: float  # gross |target - entry| / |entry - stop|


@dataclass(frozen=True)
class NotionalCap:
    """An upper bound on the new position's notional, quote currency, and who set it."""

    rule: str
    code: str
    limit: float
    message: str


@dataclass(frozen=True)
class RuleOutcome:
    rejections: tuple[Reason, ...] = ()
    multiplier: float = 1.0
    multiplier_reason: Reason | None = None
    caps: tuple[NotionalCap, ...] = ()
    notes: tuple[Reason, ...] = field(default=())


@dataclass(frozen=True)
class SizedTrade:
    """The trade as sized, before the size-dependent rules look at it."""

    quantity: float  # base units
    risk_amount: float  # loss at the stop incl. fees, quote currency
    notional: float  # quantity x entry, quote currency


PASS = RuleOutcome()


class RiskRule(ABC):
    name: str = "rule"

    @abstractmethod
    def check(self, ctx: RuleContext) -> RuleOutcome:
        """Refuse, shrink or cap the trade before it is sized."""

    def check_sized(self, ctx: RuleContext, trade: SizedTrade) -> tuple[Reason, ...]:
        """Reasons to refuse the sized trade (none by default)."""
        return ()

    def reject(self, code: str, message: str, **numbers: float | str | None) -> RuleOutcome:
        return RuleOutcome(rejections=(self.reason(code, message, **numbers),))

    def reason(self, code: str, message: str, **numbers: float | str | None) -> Reason:
        return Reason(rule=self.name, code=code, message=message, **numbers)
