"""Circuit breakers trip at their loss, halt, recover at half size and release as specified, with every event kept."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from risk import (
    AccountState,
    Approved,
    BalanceChange,
    BreakerState,
    RegimeView,
    Rejected,
    RiskGate,
    RiskRequest,
    TradeHistory,
    TradeProposal,
    WinCount,
    manual_reset,
    update_breakers,
)
from risk.breakers import BreakerStatus
from risk.config import BreakerConfig

HOUR = 3_600_000
DAY = 24 * HOUR
CFG = BreakerConfig()
T0 = int(datetime(2025, 1, 15, 11, tzinfo=UTC).timestamp() * 1000)
DAY0 = int(datetime(2025, 1, 14, 23, tzinfo=UTC).timestamp() * 1000)  # Prague midnight of the 15th
WEEK0 = int(datetime(2025, 1, 12, 23, tzinfo=UTC).timestamp() * 1000)
MONTH0 = int(datetime(2024, 12, 31, 23, tzinfo=UTC).timestamp() * 1000)


def refs(day=100_000.0, week=100_000.0, month=100_000.0, day_start=DAY0, week_start=WEEK0, month_start=MONTH0):
    return {"daily": (day_start, day), "weekly": (week_start, week), "monthly": (month_start, month)}


def step(state, now, equity, **kw):
    return update_breakers(state, CFG, now, equity, refs(**kw))


def test_daily_breaker_trips_at_exactly_three_percent_not_before():
    _, events, status = step(BreakerState(), T0, 97_000.01)
    assert events == () and status.halted_by == ()
    state, events, status = step(BreakerState(), T0, 97_000.0)
    (e,) = events
    assert (e.breaker, e.kind, e.loss, e.limit, e.reference_balance) == ("daily", "trip", 0.03, 0.03, 100_000.0)
    assert status.halted_by == ("daily",)
    assert state.active["daily"].halt_until_ms == T0 + DAY
    assert state.active["daily"].recovery_until_ms == T0 + 3 * DAY
    assert state.events == events


def test_daily_breaker_halts_24h_then_half_size_48h_then_releases():
    state, _, _ = step(BreakerState(), T0, 96_000.0)
    state, events, status = step(state, T0 + DAY - 1, 99_000.0, day_start=DAY0 + DAY)
    assert status.halted_by == ("daily",) and events == ()
    state, events, status = step(state, T0 + DAY, 99_000.0, day_start=DAY0 + DAY)
    assert status.halted_by == () and status.size_multiplier == 0.5
    assert [e.kind for e in events] == ["halt_end"]
    state, events, status = step(state, T0 + 3 * DAY - 1, 99_000.0, day_start=DAY0 + 3 * DAY)
    assert status.size_multiplier == 0.5 and events == ()
    state, events, status = step(state, T0 + 3 * DAY, 99_000.0, day_start=DAY0 + 3 * DAY)
    assert status.size_multiplier == 1.0 and status.halted_by == ()
    assert [e.kind for e in events] == ["recovery_end"] and "daily" not in state.active
    assert [e.kind for e in state.events] == ["trip", "halt_end", "recovery_end"]


def test_a_check_that_skips_the_halt_end_still_records_it():
    state, _, _ = step(BreakerState(), T0, 96_000.0)
    state, events, _ = step(state, T0 + 5 * DAY, 99_000.0, day_start=DAY0 + 5 * DAY)
    assert [e.kind for e in events] == ["halt_end", "recovery_end"]


def test_daily_breaker_trips_once_per_day_and_again_on_a_new_day():
    state, _, _ = step(BreakerState(), T0, 96_000.0)
    state, events, _ = step(state, T0 + HOUR, 95_000.0)
    assert events == ()
    # next trading day, in the half-size recovery, another 3% loss from the new day-start balance
    state, _, _ = step(state, T0 + DAY, 96_000.0, day=96_000.0, day_start=DAY0 + DAY)
    state, events, status = step(state, T0 + DAY + HOUR, 93_120.0, day=96_000.0, day_start=DAY0 + DAY)
    assert [e.kind for e in events] == ["trip"] and status.halted_by == ("daily",)
    assert state.active["daily"].halt_until_ms == T0 + 2 * DAY + HOUR


@pytest.mark.parametrize(("name", "equity"), [("weekly", 93_000.0), ("monthly", 88_000.0)])
def test_weekly_and_monthly_breakers_halt_until_a_manual_reset(name, equity):
    # the shorter periods started lower, so only this breaker sees the loss
    shorter = {"day": equity} if name == "weekly" else {"day": equity, "week": equity}
    state, events, status = step(BreakerState(), T0, equity, **shorter)
    assert [(e.breaker, e.kind) for e in events] == [(name, "trip")]
    assert status.halted_by == (name,)
    later = T0 + 3 * DAY
    state, events, status = step(state, later, equity, day_start=DAY0 + 3 * DAY, **shorter)
    assert status.halted_by == (name,) and events == ()
    state, event = manual_reset(state, name, later + 1, by="risk desk")
    assert event.kind == "manual_reset" and "risk desk" in event.note
    state, events, status = step(state, later + 2, equity, day_start=DAY0 + 3 * DAY, **shorter)
    assert status.halted_by == () and events == ()  # re-armed for the next period, not this one
    assert [e.kind for e in state.events] == ["trip", "manual_reset"]


def test_weekly_breaker_rearms_next_week():
    state, _, _ = step(BreakerState(), T0, 93_000.0, day=93_000.0)
    state, _ = manual_reset(state, "weekly", T0 + HOUR, by="me")
    next_week = WEEK0 + 7 * DAY
    state, events, _ = step(state, next_week + HOUR, 86_000.0, day=86_000.0, week=93_000.0, month=93_000.0,
                            day_start=next_week, week_start=next_week)
    assert [(e.breaker, e.kind) for e in events] == [("weekly", "trip")]
    assert events[0].loss == pytest.approx(7_000 / 93_000)


def test_weekly_breaker_below_its_loss_does_not_trip():
    _, events, _ = step(BreakerState(), T0, 93_000.01, day=93_000.0)
    assert events == ()


def test_manual_reset_of_an_untripped_breaker_is_an_error():
    with pytest.raises(ValueError, match="not tripped"):
        manual_reset(BreakerState(), "weekly", T0, by="me")


def test_state_round_trips_through_json():
    state, _, _ = step(BreakerState(), T0, 85_000.0)
    assert BreakerState.model_validate_json(state.model_dump_json()) == state


# --- through the gate -------------------------------------------------------------------------

GATE = RiskGate()


def request(now_ms, equity, breakers, ledger=()):
    return RiskRequest(
        now_ms=now_ms,
        proposal=TradeProposal(symbol="BTC/USDT", direction="LONG", confidence=0.8, entry=100.0, stop=90.0,
                               target=120.0, horizon_hours=24),
        account=AccountState(initial_balance=100_000.0, balance=equity, equity=equity, cash=equity, ledger=ledger),
        breakers=breakers,
        history=TradeHistory(variant=WinCount(wins=45, losses=55)),
        regime=RegimeView(name="bull trend"),
    )


def test_gate_trips_the_daily_breaker_and_carries_the_state_forward():
    ledger = (BalanceChange(time_ms=T0 - HOUR, balance=96_900.0),)  # a 3.1% loss closed today
    d = GATE.evaluate(request(T0, 96_900.0, BreakerState(), ledger))
    assert isinstance(d, Rejected) and "daily_breaker_halt" in d.codes
    assert [(e.breaker, e.kind) for e in d.events] == [("daily", "trip")]
    halted = GATE.evaluate(request(T0 + DAY - 1, 96_900.0, d.breakers, ledger))
    assert "daily_breaker_halt" in halted.codes and halted.events == ()
    recovering = GATE.evaluate(request(T0 + DAY, 96_900.0, d.breakers, ledger))
    assert isinstance(recovering, Approved) and [e.kind for e in recovering.events] == ["halt_end"]
    assert recovering.risk_amount == pytest.approx(0.5 * 0.02 * 96_900.0)
    r = next(r for r in recovering.reasons if r.code == "breaker_recovery")
    assert r.value == 0.5
    released = GATE.evaluate(request(T0 + 3 * DAY, 96_900.0, recovering.breakers, ledger))
    assert isinstance(released, Approved) and released.risk_amount == pytest.approx(0.02 * 96_900.0)
    assert [e.kind for e in released.breakers.events] == ["trip", "halt_end", "recovery_end"]


def test_an_update_that_raises_no_event_returns_the_state_it_was_given_and_the_idle_status():
    """Without an event nothing in the state changed: the same state comes back (equal to a rebuilt one)."""
    tripped, events, _ = step(BreakerState(), T0, 96_000.0)
    assert [e.kind for e in events] == ["trip"]
    for state, now in ((BreakerState(), T0), (tripped, T0 + HOUR)):
        out, events, _ = step(state, now, 99_000.0)
        assert events == () and out is state
        assert out == BreakerState(active=dict(state.active), last_trip_period_ms=dict(state.last_trip_period_ms),
                                   events=state.events)
    _, _, idle = step(BreakerState(), T0, 99_000.0)
    assert idle == BreakerStatus()
    _, _, halted = step(tripped, T0 + HOUR, 99_000.0)
    assert halted.halted_by == ("daily",)
