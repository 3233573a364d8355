"""The gate's answer, and the machine-readable reasons every answer carries.

A `Reason` names its rule, a stable `code` to match on, a sentence for people, and the numbers:
`value` (what was measured) against `limit`, and for a clamp `before` and `after`. An
`Approved` lists everything that shaped the size (the Kelly inputs, every multiplier, every cap
that bound, the rounding); a `Rejected` lists every rule that refused, not just the first.
Both carry the breaker state after the decision, which the caller stores for the next one.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from risk.breakers import BreakerEvent, BreakerState


class Reason(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    rule: str = Field(description="The rule or sizing step that produced this reason.")
    code: str = Field(description="Stable machine-readable code, e.g. 'daily_loss_at_stop'.")
    message: str = Field(description="The same in words, with the numbers.")
    value: float | None = Field(default=None, description="The measured quantity.")
    limit: float | None = Field(default=None, description="The limit it was compared with (same unit).")
    before: float | None = Field(default=None, description="For a clamp: the amount before it.")
    after: float | None = Field(default=None, description="For a clamp: the amount after it.")
    unit: str | None = Field(default=None, description="Unit of value/limit/before/after: 'quote', 'base', ...")


class Approved(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    status: Literal["approved"] = "approved"
    symbol: str
    direction: Literal["LONG", "SHORT"]
    quantity: float = Field(description="Order quantity, base units, on the exchange's lot step.")
    risk_amount: float = Field(description="Loss at the stop, fees included, quote currency.")
    notional: float = Field(description="quantity x entry, quote currency.")
    win_probability: float = Field(description="p used for Kelly, after the confidence ceiling.")
    reward_risk: float = Field(description="Net reward:risk R used for Kelly.")
    kelly_fraction: float = Field(description="Full-Kelly fraction of equity at risk, p - (1 - p) / R.")
    reasons: tuple[Reason, ...]
    breakers: BreakerState
    events: tuple[BreakerEvent, ...] = Field(default=(), description="Breaker events raised by this decision.")

    @property
    def approved(self) -> bool:
        return True


class Rejected(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    status: Literal["rejected"] = "rejected"
    reasons: tuple[Reason, ...]
    breakers: BreakerState = BreakerState()
    events: tuple[BreakerEvent, ...] = ()

    @property
    def approved(self) -> bool:
        return False

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(r.code for r in self.reasons)


Decision = Approved | Rejected
