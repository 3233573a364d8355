"""What every rule strategy answers: a vote, its strength, the conditions that fired, and the trade plan.

The plan is the rule's own: entry (the last close, where the rule would act), stop and target as
price levels in the quote currency (so anonymisation rebases them), optional ATR trailing
schedule, holding limits in bars of the candles the strategy was given, and exit flags the rule
raises at a close. `evals.baselines` runs any strategy alone from exactly these fields.

Strength convention (shared by every strategy so that the LLM can compare them): 0 without a
vote; with a vote, 0.5 at the trigger threshold rising linearly to 1 when the trigger is twice
as far beyond its threshold (each strategy says which distance it measures).
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import field_validator

from theories.base import BARS, LABEL, PRICE, RATIO, TheoryError, TheoryResult, num, unit

DIRECTION = {1: "LONG", -1: "SHORT", 0: "FLAT"}


class StrategyResult(TheoryResult):
    """A rule strategy's vote and trade plan at one decision time."""

    vote: int = unit(RATIO, "+1 long, -1 short, 0 no trade.")
    strength: float = unit(RATIO, "0 without a vote; 0.5 at the trigger threshold, 1 at twice the distance.")
    conditions: tuple[str, ...] = unit(LABEL, "Short codes of the rule's conditions that held at this close.")
    entry: float | None = unit(PRICE, "Where the rule acts: the last close (filled later at the next open).")
    stop: float | None = unit(PRICE, "Protective stop level; None when the rule has none.")
    target: float | None = unit(PRICE, "Take-profit level; None when the rule has none.")
    target_is_limit: bool = unit(
        LABEL, "True: the target rests as a limit order; False: indicative, the rule exits on its exit flag."
    )
    trail_atr: float | None = unit(PRICE, "ATR the trailing stop is measured in; None: no trailing stop.")
    trail_schedule: tuple[tuple[float, float], ...] = unit(
        RATIO, "(profit in R, ATR multiple) steps: past each profit, trail the stop that many ATRs behind."
    )
    min_hold_bars: int | None = unit(BARS, "Exit flags are ignored before this many bars (stops still apply).")
    max_hold_bars: int | None = unit(BARS, "Time stop: leave after this many bars.")
    exit_long: bool = unit(LABEL, "The rule says close any long at this close.")
    exit_short: bool = unit(LABEL, "The rule says close any short at this close.")

    @field_validator("vote")
    @classmethod
    def _vote_is_a_direction(cls, v: int) -> int:
        if v not in (-1, 0, 1):
            raise ValueError(f"vote must be -1, 0 or +1, got {v}")
        return v

    @field_validator("strength")
    @classmethod
    def _strength_is_a_fraction(cls, v: float) -> float:
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"strength must lie in [0, 1], got {v}")
        return v

    def summary(self) -> str:
        """At most about 120 characters: direction and strength, fired conditions, the levels."""
        # without a vote the label says "no setup" and the strength is 0 by definition: neither is repeated
        head = f"{DIRECTION[self.vote]} {num(self.strength, 2)} " if self.vote else ""
        levels = "".join(
            f" {name} {num(value, 5)}" for name, value in (("stop", self.stop), ("tgt", self.target))
            if value is not None
        )
        conds = f"[{','.join(self.conditions)}]" if self.conditions or self.vote else ""
        text = f"{head}{conds}{levels} -> {self.label}" if head or conds or levels else self.label
        return text if len(text) <= 120 else text[:117] + "..."


def strength(vote: int, overshoot: float) -> float:
    """The shared strength scale: 0 without a vote, else 0.5 + 0.5 * overshoot clipped to [0.5, 1].

    `overshoot` is how far the trigger is beyond its threshold, in units of the threshold distance.
    """
    if vote == 0 or not np.isfinite(overshoot):
        return 0.0
    return float(min(1.0, max(0.5, 0.5 + 0.5 * overshoot)))


def last_finite(name: str, values: np.ndarray, count: int = 1) -> np.ndarray:
    """The last `count` values of an indicator, or TheoryError when any is still warming up (NaN)."""
    tail = np.asarray(values[-count:], dtype=np.float64)
    # Python's isfinite on the few values read: numpy's isfinite-then-all costs more than the rule's logic
    if len(tail) < count or not all(map(math.isfinite, tail.tolist())):
        raise TheoryError(f"{name} is not defined yet on this window (indicator warm-up)")
    return tail


def mean_of_previous(x: np.ndarray, n: int) -> float:
    """Mean of the `n` values before the last one: a spike is compared with a mean it did not inflate."""
    if len(x) < n + 1:
        raise TheoryError(f"need {n + 1} bars for a {n}-bar average before the last, got {len(x)}")
    # np.mean's own sum and division, without its Python layers
    return float(np.add.reduce(np.asarray(x[-n - 1 : -1], dtype=np.float64)) / n)


def plan_label(vote: int, fired: int, total: int, extra: str = "") -> str:
    """Short plain words for the label."""
    if vote:
        return f"{DIRECTION[vote].lower()} setup" + (f" ({extra})" if extra else "")
    return f"no setup ({fired}/{total} met)" + (f"; {extra}" if extra else "")


def decide(long_conds: dict[str, bool], short_conds: dict[str, bool]) -> tuple[int, tuple[str, ...], int]:
    """(vote, fired condition codes, conditions on that side): +1 when every long condition holds,
    -1 when every short one does, else 0 reporting the side that came closer (long on a tie)."""
    vote = 1 if all(long_conds.values()) else -1 if all(short_conds.values()) else 0
    closer_long = sum(long_conds.values()) >= sum(short_conds.values())
    side = long_conds if vote == 1 or (vote == 0 and closer_long) else short_conds
    return vote, tuple(name for name, ok in side.items() if ok), len(side)
