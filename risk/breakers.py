"""Circuit breakers: a loss over a day, a week or a month stops new trades, and says so.

- daily: equity `daily_loss` (3%) below the day-start balance halts new trades for
  `daily_halt_hours` (24 h) from the trip, then allows them at `recovery_multiplier` (half) size
  for `daily_recovery_hours` (48 h), then releases by itself;
- weekly (7%) and monthly (12%): halt until a person resets them (`manual_reset`).

Losses are measured on equity (floating P&L included) against the closed balance at the start
of the period, the same reference the FTMO daily limit uses. A breaker trips at most once per
period: a manual reset re-arms it for the next period, not for the loss that has already been
seen (otherwise it would trip again on the very next check).

The state is a value: `update_breakers` takes the old state and returns the new one with the
events it raised; the caller stores it. Every trip, release and reset is an event with its
numbers, and the state keeps the full event log.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from risk.config import BreakerConfig

BreakerName = Literal["daily", "weekly", "monthly"]
BREAKERS: tuple[BreakerName, ...] = ("daily", "weekly", "monthly")
HOUR_MS = 3_600_000


class BreakerEvent(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    breaker: BreakerName
    kind: Literal["trip", "halt_end", "recovery_end", "manual_reset"]
    at_ms: int = Field(description="When the event happened (the decision time that saw it), UTC epoch ms.")
    loss: float | None = Field(default=None, description="Loss from the period-start balance, fraction.")
    limit: float | None = Field(default=None, description="The breaker's loss limit, fraction.")
    reference_balance: float | None = Field(default=None, description="Period-start balance, quote currency.")
    equity: float | None = Field(default=None, description="Equity when it happened, quote currency.")
    note: str = ""


class Trip(BaseModel):
    """An active trip. Daily trips carry their halt and recovery ends; the others wait for a reset."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    at_ms: int
    period_start_ms: int
    halt_until_ms: int | None = None
    recovery_until_ms: int | None = None
    halt_ended: bool = False


class BreakerState(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    active: dict[BreakerName, Trip] = Field(default_factory=dict)
    last_trip_period_ms: dict[BreakerName, int] = Field(
        default_factory=dict, description="Start of the period each breaker last tripped in."
    )
    events: tuple[BreakerEvent, ...] = ()


class BreakerStatus(BaseModel):
    """What the breakers mean for a trade now."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    halted_by: tuple[BreakerName, ...] = ()
    size_multiplier: float = 1.0
    recovery_until_ms: int | None = None


NO_TRIP = BreakerStatus()  # the status with no breaker active (frozen, so shared)


def _limit(cfg: BreakerConfig, name: BreakerName) -> float:
    return {"daily": cfg.daily_loss, "weekly": cfg.weekly_loss, "monthly": cfg.monthly_loss}[name]


def update_breakers(
    state: BreakerState,
    cfg: BreakerConfig,
    now_ms: int,
    equity: float,
    references: dict[BreakerName, tuple[int, float]],
) -> tuple[BreakerState, tuple[BreakerEvent, ...], BreakerStatus]:
    """Advance the breakers to `now_ms` with the current equity.

    `references` maps each breaker to (start of its current period, closed balance then).
    Returns the new state, the events raised now, and the status for a trade now.
    """
    active = dict(state.active)
    last = dict(state.last_trip_period_ms)
    new: list[BreakerEvent] = []

    # time-based release of the daily breaker
    trip = active.get("daily")
    if trip is not None and trip.halt_until_ms is not None and trip.recovery_until_ms is not None:
        if now_ms >= trip.recovery_until_ms:
            del active["daily"]
            if not trip.halt_ended:
                new.append(BreakerEvent(breaker="daily", kind="halt_end", at_ms=now_ms, equity=equity))
            new.append(BreakerEvent(breaker="daily", kind="recovery_end", at_ms=now_ms, equity=equity))
        elif now_ms >= trip.halt_until_ms and not trip.halt_ended:
            active["daily"] = trip.model_copy(update={"halt_ended": True})
            new.append(BreakerEvent(breaker="daily", kind="halt_end", at_ms=now_ms, equity=equity,
                                    note=f"half-size recovery until {trip.recovery_until_ms}"))

    # trips: once per period
    for name in BREAKERS:
        start, reference = references[name]
        if last.get(name) == start or not reference > 0:
            continue
        loss = (reference - equity) / reference
        limit = _limit(cfg, name)
        if loss < limit:
            continue
        if name == "daily":
            halt_until = now_ms + round(cfg.daily_halt_hours * HOUR_MS)
            recovery_until = halt_until + round(cfg.daily_recovery_hours * HOUR_MS)
            active[name] = Trip(at_ms=now_ms, period_start_ms=start, halt_until_ms=halt_until,
                                recovery_until_ms=recovery_until)
            note = f"halt until {halt_until}, then x{cfg.recovery_multiplier:g} size until {recovery_until}"
        else:
            active[name] = Trip(at_ms=now_ms, period_start_ms=start)
            note = "halt until a manual reset"
        last[name] = start
        new.append(BreakerEvent(breaker=name, kind="trip", at_ms=now_ms, loss=loss, limit=limit,
                                reference_balance=reference, equity=equity, note=note))

    halted: list[BreakerName] = []
    multiplier = 1.0
    recovery_until: int | None = None
    for name, t in active.items():
        if name != "daily" or t.halt_until_ms is None or now_ms < t.halt_until_ms:
            halted.append(name)
        else:
            multiplier = cfg.recovery_multiplier
            recovery_until = t.recovery_until_ms
    events = tuple(new)
    # Every change of the active trips or the trip periods raises an event: without one the state is
    # the old one, returned as it is (most decisions; a new state validates the whole event log).
    out = BreakerState(active=active, last_trip_period_ms=last, events=state.events + events) if events else state
    if not active:
        return out, events, NO_TRIP
    status = BreakerStatus(halted_by=tuple(n for n in BREAKERS if n in halted), size_multiplier=multiplier,
                           recovery_until_ms=recovery_until)
    return out, events, status


def manual_reset(state: BreakerState, name: BreakerName, at_ms: int, by: str) -> tuple[BreakerState, BreakerEvent]:
    """Release a breaker by hand (who did it is recorded). It re-arms at its next period."""
    if name not in state.active:
        raise ValueError(f"the {name} breaker is not tripped")
    active = {k: v for k, v in state.active.items() if k != name}
    event = BreakerEvent(breaker=name, kind="manual_reset", at_ms=at_ms, note=f"reset by {by}")
    return BreakerState(active=active, last_trip_period_ms=state.last_trip_period_ms,
                        events=(*state.events, event)), event
