"""The manual broker: an approved trade awaits the person; their answer executes or skips it."""

from __future__ import annotations

import pytest

from agent.brokers.base import BrokerError
from agent.brokers.manual import ManualBroker
from agent.brokers.paper import KEEP_FINISHED_MS
from tests.test_paper_broker import FLAT, SYMBOL, T0, H, bars, intent


def test_submitted_trade_awaits_the_person_and_fills_nothing_on_its_own():
    b = ManualBroker()
    state = b.submit(intent(), T0 + H)
    assert state.status == "awaiting_person"
    rep = b.sync(T0 + 4 * H, {SYMBOL: bars([FLAT, FLAT, (100, 120, 80, 100), FLAT])})
    assert rep.fills == () and b.positions() == ()
    assert b.submit(intent(), T0 + H) == state  # idempotent


def test_executed_answer_opens_at_the_persons_price_and_is_marked_to_market():
    b = ManualBroker(initial_cash=1_000)
    coid = b.submit(intent(qty=2), T0 + H).client_order_id
    rep = b.executed(coid, price=101.0, at_ms=T0 + 2 * H, fee=0.2)
    assert rep.fills[0].price == 101.0 and b.order(coid).status == "filled"
    b.sync(T0 + 3 * H, {SYMBOL: bars([FLAT, FLAT, (101, 104, 100, 103)])})
    a = b.account(T0 + 3 * H)
    assert a.cash == pytest.approx(1_000 - 202 - 0.2)
    assert a.equity == pytest.approx(a.cash + 2 * 103)
    assert a.floating_pnl == pytest.approx(2 * (103 - 101))


def test_closed_answer_makes_the_closed_trade_with_its_r_multiple():
    b = ManualBroker()
    coid = b.submit(intent(qty=2, stop=95), T0 + H).client_order_id
    b.executed(coid, price=100.0, at_ms=T0 + 2 * H)
    rep = b.closed(coid, price=107.5, at_ms=T0 + 5 * H, fee=0.5)
    t = rep.closed[0]
    assert t.exit_reason == "manual" and t.pnl == pytest.approx(15 - 0.5)
    assert t.r_multiple == pytest.approx(14.5 / 10) and t.outcome == "win"
    assert b.positions() == () and b.account(T0 + 5 * H).equity == pytest.approx(10_000 + 14.5)


def test_skipped_answer_marks_the_order_and_a_second_answer_is_refused():
    b = ManualBroker()
    coid = b.submit(intent(), T0 + H).client_order_id
    b.skipped(coid, T0 + 2 * H, "too late")
    assert b.order(coid).status == "skipped" and b.order(coid).message == "too late"
    with pytest.raises(BrokerError, match="skipped, not awaiting"):
        b.executed(coid, 100.0, T0 + 3 * H)


def test_an_answer_for_an_unknown_order_or_a_price_beyond_the_stop_is_refused():
    b = ManualBroker()
    with pytest.raises(BrokerError, match="no order"):
        b.executed("sa0", 100.0, T0)
    coid = b.submit(intent(stop=95), T0 + H).client_order_id
    with pytest.raises(BrokerError, match="beyond the stop"):
        b.executed(coid, 94.0, T0 + 2 * H)


def test_state_round_trip_keeps_the_awaiting_order():
    b = ManualBroker()
    coid = b.submit(intent(), T0 + H).client_order_id
    again = ManualBroker()
    again.load_state(b.export_state())
    assert again.order(coid).status == "awaiting_person"
    again.executed(coid, 100.0, T0 + 2 * H)
    assert again.positions()[0].entry == 100.0


def test_a_skipped_ticket_is_forgotten_after_a_week_but_an_executed_open_one_is_kept():
    b = ManualBroker()
    skipped = b.submit(intent(), T0 + H).client_order_id
    held = b.submit(intent(decision="d2"), T0 + H).client_order_id
    b.skipped(skipped, T0 + 2 * H)
    b.executed(held, price=100.0, at_ms=T0 + 2 * H)
    c = bars([FLAT] * 3)
    b.sync(T0 + 3 * H, {SYMBOL: c})
    b.sync(T0 + 3 * H + KEEP_FINISHED_MS, {SYMBOL: c})
    assert b.order(skipped) is None and b.order(held).status == "filled"
    assert b.export_state()["retired"] == [skipped]
    with pytest.raises(BrokerError, match="not placed again"):
        b.submit(intent(), T0 + H)
