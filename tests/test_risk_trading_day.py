"""Trading days start at midnight in the configured zone; the FTMO daily limit resets there, open losses do not."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from risk import (
    AccountState,
    Approved,
    BalanceChange,
    OpenPosition,
    RegimeView,
    Rejected,
    RiskConfig,
    RiskGate,
    RiskRequest,
    TradeHistory,
    TradeProposal,
    WinCount,
)
from risk.trading_day import balance_at, ledger_in_force, period_start_ms

HOUR = 3_600_000


def ms(*args) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)


@pytest.mark.parametrize(
    ("now", "start"),
    [
        (ms(2025, 1, 15, 11), ms(2025, 1, 14, 23)),  # winter: Prague is UTC+1
        (ms(2025, 7, 15, 11), ms(2025, 7, 14, 22)),  # summer: UTC+2
        (ms(2025, 1, 14, 23), ms(2025, 1, 14, 23)),  # exactly midnight starts the new day
        (ms(2025, 1, 14, 23) - 1, ms(2025, 1, 13, 23)),  # a millisecond before is the old day
        (ms(2025, 3, 30, 12), ms(2025, 3, 29, 23)),  # the spring-forward day starts in winter time ...
        (ms(2025, 3, 30, 22), ms(2025, 3, 30, 22)),  # ... and lasts 23 hours
    ],
)
def test_prague_trading_day_start(now, start):
    assert period_start_ms(now, "day", "Europe/Prague") == start


def test_week_starts_monday_and_month_on_the_first_local_midnight():
    wed = ms(2025, 1, 15, 11)
    assert period_start_ms(wed, "week", "Europe/Prague") == ms(2025, 1, 12, 23)
    sunday_late = ms(2025, 1, 19, 22, 30)  # Sunday 23:30 in Prague: still that week
    assert period_start_ms(sunday_late, "week", "Europe/Prague") == ms(2025, 1, 12, 23)
    assert period_start_ms(ms(2025, 1, 19, 23), "week", "Europe/Prague") == ms(2025, 1, 19, 23)
    assert period_start_ms(wed, "month", "Europe/Prague") == ms(2024, 12, 31, 23)


def test_other_zones():
    assert period_start_ms(ms(2025, 1, 15, 11), "day", "UTC") == ms(2025, 1, 15)
    assert period_start_ms(ms(2025, 1, 15, 3), "day", "America/New_York") == ms(2025, 1, 14, 5)


def test_balance_at_takes_the_last_change_at_or_before_and_the_initial_before_any():
    ledger = (BalanceChange(time_ms=100, balance=90.0), BalanceChange(time_ms=200, balance=95.0))
    assert balance_at(ledger, 99, 100.0) == 100.0
    assert balance_at(ledger, 100, 100.0) == 90.0  # stamped exactly at the boundary: belongs to it
    assert balance_at(ledger, 199, 100.0) == 90.0
    assert balance_at(ledger, 10_000, 100.0) == 95.0


# --- the daily reset, with a position open across midnight --------------------------------------

# breakers far away, so only the FTMO daily limit decides
CONFIG = RiskConfig(breakers={"daily_loss": 0.5, "weekly_loss": 0.5, "monthly_loss": 0.5})
GATE = RiskGate(CONFIG)
MIDNIGHT = ms(2025, 1, 14, 23)  # 2025-01-15 00:00 in Prague
LEDGER = (BalanceChange(time_ms=ms(2025, 1, 14, 10), balance=97_000.0),)  # a 3 000 loss closed on the 14th


def eth_short(mark: float) -> OpenPosition:
    # opened on the 14th at 3 000; 1 ETH short marked at `mark` has a floating P&L of 3 000 - mark
    return OpenPosition(symbol="ETH/USDT", direction="SHORT", quantity=1.0, entry=3000.0, mark=mark,
                        opened_ms=ms(2025, 1, 14, 12))


def decide(now_ms: int, mark: float):
    equity = 97_000.0 + 3000.0 - mark
    return GATE.evaluate(RiskRequest(
        now_ms=now_ms,
        proposal=TradeProposal(symbol="BTC/USDT", direction="LONG", confidence=0.8, entry=100.0, stop=90.0,
                               target=120.0, horizon_hours=24),
        account=AccountState(initial_balance=100_000.0, balance=97_000.0, equity=equity, cash=equity,
                             ledger=LEDGER),
        positions=(eth_short(mark),),
        history=TradeHistory(variant=WinCount(wins=45, losses=55)),
        regime=RegimeView(name="bull trend"),
    ))


def test_daily_limit_resets_at_prague_midnight_from_the_closed_balance():
    # equity 96 000 (floating -1 000); risk 2% = 1 920; at the stop 94 080
    before = decide(MIDNIGHT - 1, mark=4000.0)  # day started at 100 000: floor 95 500
    assert isinstance(before, Rejected)
    r = next(r for r in before.reasons if r.code == "daily_loss_at_stop")
    assert r.limit == 95_500.0 and r.value == pytest.approx(94_080.0)
    after = decide(MIDNIGHT, mark=4000.0)  # new day from the closed balance 97 000: floor 92 500
    assert isinstance(after, Approved) and after.risk_amount == pytest.approx(1920.0)


def test_position_open_across_midnight_keeps_its_floating_loss_in_the_new_day():
    # the ETH short loses another 3 000 after midnight: equity 93 000, risk 1 860, at the stop 91 140
    d = decide(MIDNIGHT + HOUR, mark=7000.0)
    r = next(r for r in d.reasons if r.code == "daily_loss_at_stop")
    assert r.limit == 92_500.0 and r.value == pytest.approx(91_140.0)
    # and at 92 500 equity the new day's limit is already reached, an hour into the day
    at_floor = decide(MIDNIGHT + HOUR, mark=7500.0)
    assert "daily_loss_limit_reached" in [x.code for x in at_floor.reasons]


def test_trading_day_zone_is_configurable():
    utc_gate = RiskGate(CONFIG.model_copy(update={"ftmo": CONFIG.ftmo.model_copy(update={"timezone": "UTC"})}))
    ctx, _ = utc_gate.context(RiskRequest(
        now_ms=MIDNIGHT + HOUR - 1,  # 23:59:59.999 UTC: still the 14th in UTC
        proposal=TradeProposal(symbol="BTC/USDT", direction="LONG", confidence=0.8, entry=100.0, stop=90.0,
                               target=120.0, horizon_hours=24),
        account=AccountState(initial_balance=100_000.0, balance=97_000.0, equity=97_000.0, cash=97_000.0,
                             ledger=LEDGER),
    ))
    assert ctx.day.start_ms == ms(2025, 1, 14) and ctx.day.balance == 100_000.0


@settings(max_examples=200, deadline=None)
@given(steps=st.lists(st.integers(0, 20 * 24 * HOUR), max_size=60), start=st.integers(ms(2024, 1, 1), ms(2026, 1, 1)),
       after=st.integers(0, 90 * 24 * HOUR), tz=st.sampled_from(["UTC", "Europe/Prague", "America/New_York"]))
def test_the_ledger_tail_in_force_gives_every_period_start_balance_and_the_last_balance(steps, start, after, tz):
    times = [start + s for s in itertools.accumulate(steps)]
    ledger = tuple((t, 1000.0 + i) for i, t in enumerate(times))
    now = (times[-1] if times else start) + after
    tail = ledger_in_force(ledger, now, tz)
    assert tail == ledger[len(ledger) - len(tail):]  # a tail, never a reordering
    whole = [BalanceChange(time_ms=t, balance=b) for t, b in ledger]
    kept = [BalanceChange(time_ms=t, balance=b) for t, b in tail]
    for period in ("day", "week", "month"):
        at = period_start_ms(now, period, tz)
        assert balance_at(kept, at, 500.0) == balance_at(whole, at, 500.0)
    assert tail[-1:] == ledger[-1:]
    month = period_start_ms(now, "month", tz)
    assert all(t > month - 31 * 24 * HOUR for t, _ in tail[1:])  # nothing older than needed is copied


def test_a_ledger_out_of_time_order_is_kept_whole_so_the_gate_still_refuses_it():
    ledger = ((ms(2024, 1, 1), 1.0), (ms(2023, 1, 1), 2.0), (ms(2024, 6, 1), 3.0))
    assert ledger_in_force(ledger, ms(2024, 6, 2), "UTC") == ledger
