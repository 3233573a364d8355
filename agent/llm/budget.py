"""The spending guard: a daily budget (per UTC day) and a per-cycle budget, checked before each call.

A call is allowed only if its worst case (the estimated prompt tokens plus the full output-token
cap, at the model's price) still fits both budgets, so a budget is never overrun by the call that
crosses it. A model with no price in the config is refused: an unknown cost cannot be budgeted.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.config import ModelPrice

DAY_MS = 86_400_000


def utc_day_start(now_ms: int) -> int:
    return now_ms - now_ms % DAY_MS


@dataclass
class CostBudget:
    daily_usd: float
    per_cycle_usd: float
    spent_today_usd: float = 0.0  # from the call records at the start of the cycle
    spent_cycle_usd: float = 0.0

    def refusal(self, worst_case_usd: float) -> str | None:
        """Why a call costing up to `worst_case_usd` may not be made, or None when it may."""
        if self.spent_today_usd + worst_case_usd > self.daily_usd:
            return (
                f"daily LLM budget: spent ${self.spent_today_usd:.4f} of ${self.daily_usd:.2f} today (UTC); "
                f"this call could cost up to ${worst_case_usd:.4f}"
            )
        if self.spent_cycle_usd + worst_case_usd > self.per_cycle_usd:
            return (
                f"per-cycle LLM budget: spent ${self.spent_cycle_usd:.4f} of ${self.per_cycle_usd:.2f} this cycle; "
                f"this call could cost up to ${worst_case_usd:.4f}"
            )
        return None

    def charge(self, usd: float) -> None:
        self.spent_today_usd += usd
        self.spent_cycle_usd += usd


def worst_case_cost(price: ModelPrice, tokens_in: int, max_tokens_out: int) -> float:
    return price.cost(tokens_in, max_tokens_out)
