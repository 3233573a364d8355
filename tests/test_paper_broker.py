"""The paper broker's fill and exit rules, bar by bar, with known answers and invariants."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.brokers import paper
from agent.brokers.base import BrokerError, OrderIntent, client_order_id
from agent.brokers.paper import KEEP_FINISHED_MS, KEEP_LEDGER_MS, PaperBroker, PaperSettings
from risk.trading_day import ledger_in_force
from theories.candles import Candles

H = 3_600_000
T0 = 1_700_000_000_000 // H * H  # an hour boundary in 2023
SYMBOL = "X/USDT"
NO_COSTS = PaperSettings(taker_fee=0.0, maker_fee=0.0, slippage=0.0, break_even_trigger=None)


def bars(rows: list[tuple[float, float, float, float]], start: int = T0) -> Candles:
    """Hourly candles from (open, high, low, close) rows, the first opening at `start`."""
    return Candles([start + i * H for i in range(len(rows))], [r[0] for r in rows], [r[1] for r in rows],
                   [r[2] for r in rows], [r[3] for r in rows], [1.0] * len(rows), symbol=SYMBOL)


def intent(side: str = "LONG", stop: float = 95.0, target: float = 110.0, entry: float = 100.0, qty: float = 1.0,
           created: int = T0 + H, horizon_h: int = 100, decision: str = "d1", **kw) -> OrderIntent:
    return OrderIntent(decision_id=decision, cycle_id="c1", client_order_id=client_order_id(decision), symbol=SYMBOL,
                       side=side, quantity=qty, stop=stop, target=target, entry_reference=entry, created_ms=created,
                       time_stop_ms=created + horizon_h * H, **kw)


def run(rows, order: OrderIntent, cfg: PaperSettings = NO_COSTS, now: int | None = None):
    c = bars(rows)
    b = PaperBroker(cfg)
    b.submit(order, order.created_ms)
    rep = b.sync(now if now is not None else c.last_close_time, {SYMBOL: c})
    return b, rep


FLAT = (100.0, 100.5, 99.5, 100.0)


def test_market_order_fills_at_next_bar_open_with_slippage_and_taker_fee():
    cfg = PaperSettings(taker_fee=0.001, maker_fee=0.0002, slippage=0.0005, break_even_trigger=None)
    # bar 0 is the decision bar (opens before the decision): never used for the fill
    b, rep = run([(90, 91, 89, 90), (100, 101, 99, 100.5), FLAT], intent(), cfg)
    entry = rep.fills[0]
    assert entry.time_ms == T0 + H
    assert entry.price == pytest.approx(100 * 1.0005)
    assert entry.fee == pytest.approx(100 * 1.0005 * 0.001)
    assert b.positions()[0].entry == pytest.approx(100.05)


def test_nothing_fills_before_a_bar_has_closed_after_the_decision():
    b, rep = run([FLAT, FLAT], intent(), now=T0 + H)  # decision at T0+H, no later bar closed yet
    assert rep.fills == () and b.order(client_order_id("d1")).status == "pending"


def test_stop_exit_at_stop_less_slippage():
    cfg = NO_COSTS.model_copy(update={"slippage": 0.001})
    _, rep = run([FLAT, FLAT, (100, 100.5, 94, 95)], intent(), cfg)
    t = rep.closed[0]
    assert t.exit_reason == "stop"
    assert t.exit == pytest.approx(95 * 0.999)
    assert t.outcome == "loss" and t.r_multiple < -1  # slippage makes a stop cost a little more than 1 R


def test_an_orders_own_slippage_from_the_book_replaces_the_configured_rate_for_entry_and_exits():
    cfg = NO_COSTS.model_copy(update={"slippage": 0.001})
    _, rep = run([FLAT, FLAT, (100, 100.5, 94, 95)], intent(slippage=0.004), cfg)
    assert rep.fills[0].price == pytest.approx(100 * 1.004)
    assert rep.closed[0].exit == pytest.approx(95 * (1 - 0.004))
    # without one, the configured rate applies
    _, plain = run([FLAT, FLAT, (100, 100.5, 94, 95)], intent(), cfg)
    assert plain.fills[0].price == pytest.approx(100 * 1.001)


def test_target_exit_at_target_is_plus_reward_risk_without_costs():
    _, rep = run([FLAT, FLAT, (100, 111, 99.8, 110.5)], intent())
    t = rep.closed[0]
    assert (t.exit_reason, t.exit) == ("target", 110.0)
    assert t.r_multiple == pytest.approx(2.0)  # (110 - 100) / (100 - 95)
    assert t.pnl == pytest.approx(10.0) and t.outcome == "win"


def test_bar_touching_both_stop_and_target_is_assumed_to_hit_the_stop():
    _, rep = run([FLAT, FLAT, (100, 112, 94, 105)], intent())
    assert rep.closed[0].exit_reason == "stop" and rep.closed[0].exit == 95.0


def test_gap_through_the_stop_fills_at_the_open_not_the_stop():
    _, rep = run([FLAT, FLAT, (90, 92, 89, 91)], intent())
    assert rep.closed[0].exit == 90.0 and rep.closed[0].exit_reason == "stop"


def test_short_mirrors_long():
    _, rep = run([FLAT, FLAT, (100, 100.4, 89, 90)], intent(side="SHORT", stop=105, target=90))
    t = rep.closed[0]
    assert (t.exit_reason, t.exit, t.side) == ("target", 90.0, "SHORT")
    assert t.pnl == pytest.approx(10.0) and t.r_multiple == pytest.approx(2.0)


def test_break_even_moves_the_stop_to_entry_after_a_quarter_percent():
    cfg = NO_COSTS.model_copy(update={"break_even_trigger": 0.0025})
    # bar 1 fills at 100 and reaches 100.3 (+0.3%): stop -> 100; bar 2 trades down to 99.9: out at 100
    _, rep = run([FLAT, (100, 100.3, 99.9, 100.2), (100.2, 100.2, 99.9, 100.0)], intent(), cfg)
    t = rep.closed[0]
    assert (t.exit_reason, t.exit) == ("break_even", 100.0)
    assert t.pnl == pytest.approx(0.0)


def test_break_even_does_not_arm_below_the_trigger():
    cfg = NO_COSTS.model_copy(update={"break_even_trigger": 0.0025})
    b, rep = run([FLAT, (100, 100.2, 99.9, 100.1), (100.1, 100.2, 99.9, 100.0)], intent(), cfg)
    assert rep.closed == () and b.positions()[0].stop == 95.0


def test_trailing_stop_follows_the_best_price_and_never_moves_back():
    cfg = NO_COSTS.model_copy(update={"trailing_stop": 0.02})
    rows = [FLAT, (100, 104, 99.9, 103.5), (103.5, 103.6, 102.5, 103), (103, 103.2, 101.8, 102)]
    _b, rep = run(rows, intent(target=120), cfg)
    t = rep.closed[0]
    assert t.exit_reason == "trailing"
    assert t.exit == pytest.approx(104 * 0.98)  # 2% under the best high 104, hit by the 101.8 low


def test_time_stop_closes_at_the_close_of_the_bar_reaching_it():
    cfg = NO_COSTS.model_copy(update={"slippage": 0.001})
    _, rep = run([FLAT, FLAT, (100, 100.4, 99.7, 100.2), FLAT], intent(horizon_h=2), cfg)
    t = rep.closed[0]
    assert t.exit_reason == "time_stop" and t.closed_ms == T0 + 3 * H
    assert t.exit == pytest.approx(100.2 * 0.999)


def test_limit_entry_fills_only_when_touched_at_the_limit_with_maker_fee():
    cfg = PaperSettings(taker_fee=0.001, maker_fee=0.0002, slippage=0.0005, break_even_trigger=None)
    order = intent(order_type="limit", limit_price=99.0, valid_until_ms=T0 + 5 * H)
    _, rep = run([FLAT, (100, 100.5, 99.5, 100), (100, 100.2, 98.8, 99.5)], order, cfg)
    f = rep.fills[0]
    assert (f.price, f.time_ms) == (99.0, T0 + 2 * H)
    assert f.fee == pytest.approx(99.0 * 0.0002)


def test_limit_not_touched_in_time_expires():
    order = intent(order_type="limit", limit_price=98.0, valid_until_ms=T0 + 3 * H)
    b, rep = run([FLAT, FLAT, FLAT, FLAT], order)
    assert rep.fills == () and b.order(order.client_order_id).status == "expired"


def test_partial_exit_takes_a_share_at_the_first_target_and_trails_the_rest():
    cfg = NO_COSTS.model_copy(update={"partial_fraction": 0.5, "first_target_r": 1.0})
    # first target = 100 + 1 R = 105; then the rest trails at 5 (the initial risk) under the best high
    rows = [FLAT, (100, 105.5, 99.9, 105), (105, 108, 104.5, 107), (107, 107.5, 102.5, 103)]
    _b, rep = run(rows, intent(target=120, qty=2.0), cfg)
    reasons = [f.reason for f in rep.fills]
    assert reasons == ["entry", "partial_target", "trailing"]
    t = rep.closed[0]
    # 1 unit at 105 (+5) and 1 unit at 108 - 5 = 103 (+3): 8 on a risk of 2 x 5 = 10
    assert t.pnl == pytest.approx(8.0) and t.r_multiple == pytest.approx(0.8)
    assert t.exit == pytest.approx(104.0) and t.quantity == 2.0


def test_fees_enter_pnl_and_equity_is_cash_plus_marked_positions():
    cfg = PaperSettings(taker_fee=0.001, maker_fee=0.001, slippage=0.0, break_even_trigger=None)
    b, rep = run([FLAT, FLAT, (100, 111, 99.8, 110.5)], intent(qty=2.0), cfg)
    t = rep.closed[0]
    assert t.fees == pytest.approx(2 * 100 * 0.001 + 2 * 110 * 0.001)
    assert t.pnl == pytest.approx(20 - t.fees)
    a = b.account(T0 + 3 * H)
    assert a.equity == pytest.approx(a.cash) == pytest.approx(10_000 + t.pnl)


def test_submit_is_idempotent_and_refuses_a_changed_intent_under_the_same_id():
    b = PaperBroker()
    first = b.submit(intent(), T0 + H)
    assert b.submit(intent(), T0 + H) == first and len(b.orders()) == 1
    with pytest.raises(BrokerError, match="different intent"):
        b.submit(intent(qty=2.0), T0 + H)


def test_client_order_id_is_derived_from_the_decision_id():
    assert client_order_id("run@t/BTC") == client_order_id("run@t/BTC")
    assert client_order_id("run@t/BTC") != client_order_id("run@t/ETH")
    assert len(client_order_id("x")) == 32
    with pytest.raises(ValueError, match="client_order_id"):
        OrderIntent(**{**intent().model_dump(), "client_order_id": "sa-made-up"})


def test_state_round_trip_resumes_an_open_position_exactly():
    rows = [FLAT, FLAT, (100, 101, 99, 100.5), (100.5, 111, 100, 110)]
    c = bars(rows)
    whole = PaperBroker(NO_COSTS)
    whole.submit(intent(), T0 + H)
    whole.sync(c.last_close_time, {SYMBOL: c})
    first = PaperBroker(NO_COSTS)
    first.submit(intent(), T0 + H)
    first.sync(T0 + 3 * H, {SYMBOL: c})
    second = PaperBroker(NO_COSTS)
    second.load_state(first.export_state())
    rep = second.sync(c.last_close_time, {SYMBOL: c})
    assert rep.closed[0].exit_reason == "target"
    assert second.export_state() == whole.export_state()


def _flat_hours(n: int) -> Candles:
    return bars([FLAT] * n)


def test_a_finished_order_is_forgotten_a_week_after_and_its_decision_is_never_placed_again():
    week = KEEP_FINISHED_MS // H
    c = bars([FLAT, FLAT, (100, 111, 99.5, 110)] + [FLAT] * (2 * week))
    b = PaperBroker(NO_COSTS)
    coid = b.submit(intent(), T0 + H).client_order_id
    b.sync(T0 + 3 * H, {SYMBOL: c})  # filled at bar 1, target at bar 2: finished, first seen now
    assert b.positions() == () and b.order(coid).status == "filled"
    account, ledger = b.account(T0 + 3 * H), b.ledger()
    b.sync(T0 + 3 * H + KEEP_FINISHED_MS - H, {SYMBOL: c})
    assert b.order(coid) is not None  # an hour short of the week
    b.sync(T0 + 3 * H + KEEP_FINISHED_MS, {SYMBOL: c})
    assert b.order(coid) is None and b.orders() == ()
    assert b.account(T0 + 3 * H) == account and b.ledger() == ledger  # the money is not touched
    state = b.export_state()
    assert state["orders"] == {} and state["retired"] == [coid] and state["processed_ms"] == {}
    with pytest.raises(BrokerError, match=f"order {coid} was placed and has finished"):
        b.submit(intent(), T0 + H)
    again = PaperBroker(NO_COSTS)  # and after a restart from the stored memory
    again.load_state(state)
    with pytest.raises(BrokerError, match="not placed again"):
        again.submit(intent(), T0 + H)
    assert again.submit(intent(decision="d2"), T0 + 4 * H).status == "pending"  # other decisions still trade


def test_open_positions_and_working_orders_are_never_forgotten():
    week = KEEP_FINISHED_MS // H
    c = _flat_hours(3 * week)
    b = PaperBroker(NO_COSTS)
    held = b.submit(intent(horizon_h=4 * week), T0 + H).client_order_id  # a flat market never reaches its levels
    resting = b.submit(intent(decision="d2", order_type="limit", limit_price=90.0, stop=85.0,
                              horizon_h=4 * week, valid_until_ms=T0 + 4 * week * H), T0 + H).client_order_id
    for hour in range(2, 3 * week, 24):
        b.sync(T0 + hour * H, {SYMBOL: c})
    assert [p.client_order_id for p in b.positions()] == [held]
    assert b.order(held).status == "filled" and b.order(resting).status == "pending"
    assert b.export_state()["retired"] == []


def test_the_trimmed_ledger_gives_the_risk_gate_what_the_whole_ledger_gives(monkeypatch):
    days = 80  # past KEEP_LEDGER_MS (62 days), across month starts and the end of summer time in Prague
    hours = days * 24
    rng = np.random.default_rng(7)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, hours)))
    open_ = np.r_[100.0, close[:-1]]
    start = 1_727_740_800_000  # 2024-10-01T00:00Z
    c = Candles(start + np.arange(hours) * H, open_, np.maximum(open_, close) * 1.004,
                np.minimum(open_, close) * 0.996, close, np.ones(hours), symbol=SYMBOL)
    trimmed, whole = PaperBroker(NO_COSTS), PaperBroker(NO_COSTS)
    trimmed_ledgers = []
    for b, keep in ((trimmed, KEEP_LEDGER_MS), (whole, 2**62)):
        monkeypatch.setattr(paper, "KEEP_LEDGER_MS", keep)
        views = []
        for k in range(0, hours - 8, 6):  # a trade every 6 hours, closed by its 2-hour time stop at the latest
            at, px = start + (k + 1) * H, float(c.close[k])
            b.submit(intent(decision=f"d{k}", created=at, entry=px, stop=px * 0.99, target=px * 1.01, qty=0.1,
                            horizon_h=2), at)
            now = at + 4 * H
            b.sync(now, {SYMBOL: c})
            views.append((now, list(ledger_in_force(b.ledger(), now, "Europe/Prague"))))
        trimmed_ledgers.append(views)
    assert trimmed_ledgers[0] == trimmed_ledgers[1]  # at every decision, the gate reads the same entries
    # the memory did shrink: it starts with the entry in force at the cutoff (entries come every 6 hours or less)
    cutoff = trimmed_ledgers[0][-1][0] - KEEP_LEDGER_MS
    assert len(trimmed.ledger()) < len(whole.ledger())
    assert cutoff - 6 * H < trimmed.ledger()[0][0] <= cutoff < trimmed.ledger()[1][0]
    assert trimmed.ledger()[-1] == whole.ledger()[-1] and trimmed.account(start) == whole.account(start)


def test_a_stored_memory_from_before_forgetting_existed_still_loads():
    b = PaperBroker(NO_COSTS)
    b.submit(intent(), T0 + H)
    b.sync(T0 + 3 * H, {SYMBOL: bars([FLAT, FLAT, (100, 111, 99.5, 110)])})
    old = {k: v for k, v in b.export_state().items() if k not in ("finished_ms", "retired")}
    again = PaperBroker(NO_COSTS)
    again.load_state(old)
    assert again.orders() == b.orders() and again.export_state()["retired"] == []


def test_a_long_needing_more_cash_than_free_is_rejected():
    b, rep = run([FLAT, FLAT], intent(qty=1000.0))
    assert rep.fills == () and b.order(client_order_id("d1")).status == "rejected"


price_rows = st.lists(
    st.tuples(st.floats(90, 110), st.floats(0, 4), st.floats(0, 4), st.floats(0, 1)), min_size=2, max_size=30
).map(lambda rs: [(o, o + up, o - dn, min(o + up, max(o - dn, o - dn + (up + dn) * w))) for o, up, dn, w in rs])


@settings(max_examples=150, deadline=None)
@given(rows=price_rows, side=st.sampled_from(["LONG", "SHORT"]), risk=st.floats(0.5, 8), rr=st.floats(1, 4),
       trail=st.one_of(st.none(), st.floats(0.005, 0.05)), partial=st.sampled_from([0.0, 0.5]),
       horizon=st.integers(1, 40))
def test_exit_rules_keep_the_books_consistent(rows, side, risk, rr, trail, partial, horizon):
    sign = 1 if side == "LONG" else -1
    cfg = PaperSettings(taker_fee=0.001, maker_fee=0.0005, slippage=0.0005, trailing_stop=trail,
                        partial_fraction=partial)
    order = intent(side=side, stop=100 - sign * risk, target=100 + sign * risk * rr, horizon_h=horizon)
    c = bars([FLAT, *rows])
    b = PaperBroker(cfg)
    b.submit(order, order.created_ms)
    rep = b.sync(c.last_close_time, {SYMBOL: c})
    a = b.account(c.last_close_time)
    # equity = cash + marked positions, and the closed balance misses only the floating P&L
    assert a.equity == pytest.approx(a.cash + sum(p.signed_quantity * p.mark for p in b.positions()))
    assert a.equity == pytest.approx(a.balance + a.floating_pnl)
    for t in rep.closed:
        assert a.cash == pytest.approx(10_000 + t.pnl)  # one trade: its net P&L is all that moved the cash
        assert t.r_multiple == pytest.approx(t.pnl / t.risk_amount)
        assert (t.outcome == "win") == (t.r_multiple > 0)
        assert t.closed_ms <= order.time_stop_ms + H  # never held past the bar reaching the time stop
        lo = min(r[2] for r in rows) * 0.999
        hi = max(r[1] for r in rows) * 1.001
        assert lo <= t.exit <= hi  # exits happen at prices the market traded (up to slippage)
    if not rep.closed and b.positions():
        assert c.last_close_time < order.time_stop_ms


def test_a_sync_over_many_bars_applies_every_order_in_time_order():
    other = "Y/USDT"
    cx = bars([FLAT, FLAT, FLAT, FLAT, (100, 111, 99.8, 110)])  # X: target at bar 4
    cy = Candles(cx.time, cx.open, cx.high, cx.low, cx.close, cx.volume, symbol=other)
    b = PaperBroker(NO_COSTS)
    b.submit(intent(decision="x"), T0 + H)  # X enters at bar 1
    late = intent(decision="y", created=T0 + 2 * H)
    b.submit(OrderIntent(**{**late.model_dump(), "symbol": other}), T0 + 2 * H)  # Y enters at bar 2
    rep = b.sync(cx.last_close_time, {SYMBOL: cx, other: cy})
    times = [f.time_ms for f in rep.fills]
    assert times == sorted(times) and [f.symbol for f in rep.fills] == [SYMBOL, other, SYMBOL, other]
    ledger_times = [t for t, _ in b.ledger()]
    assert ledger_times == sorted(ledger_times)


def test_an_exit_inside_a_bar_and_another_orders_entry_at_its_open_keep_the_ledger_in_time_order():
    """Order A hits its target inside bar 2 (noted at its close); order B, submitted later, enters at
    bar 2's open. The balance ledger must stay time-ordered, or the gate refuses every later trade."""
    b = PaperBroker(NO_COSTS)
    a = intent(decision="a", target=101.0)
    later = intent(decision="b", created=T0 + 2 * H, stop=90.0, target=130.0)
    c = bars([FLAT, FLAT, (100.0, 102.0, 99.5, 100.0), FLAT])
    b.submit(a, a.created_ms)
    b.sync(T0 + 2 * H, {SYMBOL: c})  # A fills at bar 1's open
    b.submit(later, later.created_ms)
    b.sync(c.last_close_time, {SYMBOL: c})  # bar 2: A's target inside the bar, B's entry at the open
    times = [t for t, _ in b.ledger()]
    assert times == sorted(times)
    assert [p.client_order_id for p in b.positions()] == [client_order_id("b")]
    balance = b.ledger()[-1][1]
    assert balance == pytest.approx(10_000.0 + 1.0)  # A won 1 (101 - 100), B open at its entry


def test_exported_state_is_the_plain_dump_of_the_book_after_every_step():
    """`export_state` reuses each order's image while the order is unchanged: it must equal the plain dump."""
    import json

    rng = __import__("random").Random(3)
    rows, price = [], 100.0
    for _ in range(120):  # a walk wide enough to hit stops, targets and time stops
        move = rng.uniform(-2.5, 2.5)
        o, c = price, price + move
        rows.append((o, max(o, c) + rng.uniform(0, 1.5), min(o, c) - rng.uniform(0, 1.5), c))
        price = c
    candles = bars(rows)
    broker = PaperBroker(PaperSettings())
    exports = 0
    for k in range(2, len(rows)):
        now = T0 + k * H
        broker.sync(now, {SYMBOL: candles.closed_by(now)})
        if k % 3 == 0:
            last = candles.closed_by(now).close[-1]
            side = "LONG" if k % 2 else "SHORT"
            sign = 1 if side == "LONG" else -1
            broker.submit(intent(side=side, entry=last, stop=last * (1 - 0.02 * sign), target=last * (1 + 0.04 * sign),
                                 qty=0.5, created=now, horizon_h=6, decision=f"d{k}"), now)
        if k % 7 == 0:  # a restart: the book comes back from its exported image
            broker.load_state(json.loads(json.dumps(broker.export_state())))
        for _ in range(2):
            state = broker.export_state()
            assert json.dumps(state) == json.dumps(broker._book.model_dump(mode="json"))
            exports += 1
    statuses = {o.status for o in broker.orders()}
    assert len(broker.orders()) > 30 and {"filled"} <= statuses and exports > 200
