"""The alerts around a manual trade without the bot: answers, expiry, stop/target alerts, the daily report,
the pause flag in the scheduler, message formatting, and the settings from the environment."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from sqlmodel import select

from agent.alerts import answers, monitor, outbox
from agent.alerts.control import is_paused, set_paused
from agent.alerts.messages import one_line, price, signal_text, ticket_id_for, top_theories
from agent.alerts.report import daily_report, report_due
from agent.brokers.paper import KEEP_FINISHED_MS
from agent.config import load_settings
from agent.cycle import broker_key
from agent.scheduler import Shutdown, SimulatedClock, candle_trigger, run_loop
from agent.store import Store
from agent.store.tables import ClosedTradeRow, OrderRow, OutboxRow, PositionRow, TicketRow
from tests.test_alerts import ANSWER_AT, DECIDED, decided, tg  # noqa: F401 (the shared fixture)
from tests.test_cycle import RELAXED
from theories.candles import Candles

H = 3_600_000


@pytest.fixture
def store(decided, tmp_path) -> Store:  # noqa: F811 (the fixture above, imported)
    path = tmp_path / "store.sqlite"
    shutil.copy(decided, path)
    s = Store.at(path)
    yield s
    s.close()


def the_ticket(store: Store) -> TicketRow:
    (t,) = store.rows(TicketRow)
    return t


def executed(store: Store, fill: float | None = None) -> TicketRow:
    t = the_ticket(store)
    fill = fill if fill is not None else round((t.entry + t.target) / 2, 4)
    answers.apply_answer(store, t.ticket_id, "executed", fill, ANSWER_AT)
    return the_ticket(store)


def bars(start: int, highs, lows, closes) -> Candles:
    n = len(closes)
    t = start + H * np.arange(n)
    return Candles(t, closes, highs, lows, closes, np.ones(n), interval_ms=H, symbol="SOL/USDT")


# --- answers ----------------------------------------------------------------------------------


def test_an_answer_is_applied_once_and_a_repeat_is_refused(store):
    t = executed(store)
    assert t.status == "executed"
    with pytest.raises(answers.AnswerError, match="already executed"):
        answers.apply_answer(store, t.ticket_id, "executed", t.fill_price, ANSWER_AT + 1)
    assert len(store.rows(PositionRow)) == 1


def test_a_crash_between_the_brokers_record_and_the_tickets_is_caught_up_not_answered_twice(store, monkeypatch):
    t = the_ticket(store)
    monkeypatch.setattr(answers, "_save_ticket", lambda _s, _row: (_ for _ in ()).throw(RuntimeError("crash")))
    with pytest.raises(RuntimeError):
        answers.apply_answer(store, t.ticket_id, "executed", t.entry, ANSWER_AT)
    monkeypatch.undo()
    assert the_ticket(store).status == "open" and store.rows(OrderRow)[0].status == "filled"  # the broker has it
    result = answers.apply_answer(store, t.ticket_id, "executed", t.entry * 1.01, ANSWER_AT + 5)
    assert "already recorded" in result.reply
    t = the_ticket(store)
    assert t.status == "executed" and t.fill_price == pytest.approx(store.rows(OrderRow)[0].average_price)
    assert len(store.rows(PositionRow)) == 1


def test_an_unanswered_ticket_expires_and_its_order_is_withdrawn(store):
    t = the_ticket(store)
    assert answers.expire_tickets(store, t.expires_ms) == []  # not yet: stale only after the expiry
    assert answers.expire_tickets(store, t.expires_ms + 1) == [t.ticket_id]
    assert the_ticket(store).status == "expired" and store.rows(OrderRow)[0].status == "cancelled"
    with pytest.raises(answers.AnswerError, match="already expired"):
        answers.apply_answer(store, t.ticket_id, "executed", t.entry, t.expires_ms + 2)
    assert outbox.queued(store, f"expired:{t.ticket_id}")


def test_a_ticket_answered_after_the_broker_forgot_its_order_says_what_became_of_it(store):
    t = the_ticket(store)
    answers.expire_tickets(store, t.expires_ms + 1)
    broker = answers._broker(store, t.run, 10_000.0)
    cycle_id = broker.order(t.client_order_id).intent.cycle_id
    later = t.expires_ms + KEEP_FINISHED_MS + 2 * H
    broker.sync(t.expires_ms + 2, {})  # the cycles after the expiry: the order is finished, then a week old
    broker.sync(later, {})
    assert broker.order(t.client_order_id) is None
    store.record_sync(cycle_id, t.run, later, (), (), (), broker.positions(), broker.account(later),
                      {broker_key(t.run): broker.export_state()}, ())
    with pytest.raises(answers.AnswerError, match=f"ticket {t.ticket_id} is already expired"):
        answers.apply_answer(store, t.ticket_id, "skipped", None, later + 1)
    assert store.rows(OrderRow)[0].status == "cancelled"  # the store keeps the order


def test_an_executed_answer_after_the_expiry_is_refused(store):
    t = the_ticket(store)
    with pytest.raises(answers.AnswerError, match="expired"):
        answers.apply_answer(store, t.ticket_id, "executed", t.entry, t.expires_ms + 1)
    assert store.rows(OrderRow)[0].status == "awaiting_person"


@pytest.mark.parametrize("text, value", [("141.5", 141.5), (" 91,234.5 ", 91234.5), ("91 234.5", 91234.5),
                                         (".5123", 0.5123)])
def test_prices_are_read_as_people_type_them(text, value):
    assert answers.parse_price(text) == value


@pytest.mark.parametrize("text, why", [("141,5", "decimal point"), ("abc", "not a price"), ("-3", "not a price"),
                                       ("0", "positive"), ("1e400", "not a price")])
def test_unreadable_prices_are_refused_saying_why(text, why):
    with pytest.raises(answers.AnswerError, match=why):
        answers.parse_price(text)


# --- position events --------------------------------------------------------------------------


def test_a_manual_position_touching_its_stop_raises_one_critical_alert_with_the_close_button(store):
    t = executed(store)
    sign = 1 if t.side == "LONG" else -1
    fill = t.fill_price
    mid = (fill + t.stop) / 2
    beyond = t.stop - sign * 0.01 * t.stop  # the second bar trades through the stop
    highs = [max(fill, mid) * 1.001, max(mid, beyond) * 1.001]
    lows = [min(fill, mid) * 0.999, min(mid, beyond) * 0.999]
    c = bars(DECIDED, highs, lows, [mid, mid])
    found = monitor.manual_position_events(store, "paper", {"SOL/USDT": c}, DECIDED + 2 * H)
    (alert,) = [a for a in found if a.key.endswith(":stop")]
    assert alert.level == "TRADE" and not alert.silent and alert.buttons[0][0][1] == f"c:{t.ticket_id}"
    assert "Stop reached" in alert.text and price(t.stop) in alert.text
    pnl = sign * t.quantity * (t.stop - fill)
    assert f"{pnl:+,.2f}" in alert.text  # P&L at the stop, before fees, from the recorded fill
    assert outbox.enqueue(store, found, "paper", 1) == len(found)
    assert outbox.enqueue(store, monitor.manual_position_events(store, "paper", {"SOL/USDT": c}, DECIDED + 3 * H),
                          "paper", 2) == 0  # one alert per event, however often the check runs
    time_stop = store.rows(PositionRow)[0].time_stop_ms
    late = monitor.manual_position_events(store, "paper", {}, time_stop)
    assert [a.key.rsplit(":", 1)[1] for a in late] == ["time_stop"]


def test_closing_a_manual_position_records_the_trade_and_alerts_its_pnl(store):
    t = executed(store)
    exit_price = t.target
    result = answers.apply_answer(store, t.ticket_id, "closed", exit_price, ANSWER_AT + 2 * H)
    (trade,) = store.rows(ClosedTradeRow)
    assert trade.exit == pytest.approx(exit_price) and trade.exit_reason == "manual"
    assert result.ticket.status == "closed" and f"{trade.pnl:+,.2f}" in result.reply
    (row,) = [r for r in store.rows(OutboxRow) if r.key == f"closed:{t.client_order_id}"]
    assert f"{trade.pnl:+,.2f}" in row.text and f"{trade.r_multiple:+.2f} R" in row.text
    assert store.rows(PositionRow) == []
    # the store scan finds the same trade under the same key: nothing is queued twice
    assert outbox.enqueue(store, monitor.store_events(store, "paper", 0), "paper", 3) == 0


def test_store_events_start_at_the_first_scan_not_with_history(store):
    executed(store)  # a fill at ANSWER_AT
    assert monitor.store_events(store, "paper", ANSWER_AT + 1) == []  # alerts switched on after it
    assert monitor.alerts_since(store, "paper", 10**13) == ANSWER_AT + 1  # remembered


# --- the daily report -------------------------------------------------------------------------


def test_the_daily_report_shows_equity_trades_positions_limits_and_tickets_from_the_ledger(store):
    t = executed(store)
    answers.apply_answer(store, t.ticket_id, "closed", t.target, ANSWER_AT + H)
    (trade,) = store.rows(ClosedTradeRow)
    text = daily_report(store, "paper", RELAXED, tg(), ANSWER_AT + 2 * H)
    assert "Daily report" in text and "Equity <b>" in text
    assert "1 in 24 h, 1 in all" in text  # closed trades
    assert f"P&amp;L {trade.pnl:+,.2f} USDT" in text and "SOL/USDT: 1 trade(s)" in text
    assert "daily loss" in text and "total loss" in text and "open exposure" in text
    assert "Tickets: 1, executed 1, skipped 0, pending 0" in text
    assert "Paper vs evals" in text and "heuristic:rules-v1:baseline" in text  # agent.review's line per variant


def test_the_report_is_due_after_its_local_time_and_queued_once_a_day(store):
    settings = tg(report_time="08:00", timezone="Europe/Prague")
    seven_utc = 1763276400000  # 2025-11-16 07:00 UTC = 08:00 in Prague (CET)
    assert report_due(settings, seven_utc - 60_000) is None and report_due(settings, seven_utc) == "2025-11-16"
    from agent.alerts.service import AlertService

    service = AlertService(settings, store, "paper", risk=RELAXED, clock=lambda: seven_utc)
    service.tick()
    service.tick()
    assert [r.key for r in store.rows(OutboxRow) if r.kind == "report"] == ["report:paper:2025-11-16"]


# --- pause --------------------------------------------------------------------------------------


def test_the_scheduler_skips_every_fire_while_the_run_is_paused(store):
    set_paused(store, "paper", True, "test", 1)
    ticks, held = [], []
    report = run_loop(ticks.append, candle_trigger(3600, 30), SimulatedClock(DECIDED), Shutdown(say=str),
                      max_cycles=3, paused=lambda: is_paused(store, "paper"), on_paused=held.append)
    assert ticks == [] and len(held) == 3 and report.paused == 3 and report.cycles == 0
    set_paused(store, "paper", False, "test", 2)
    report = run_loop(ticks.append, candle_trigger(3600, 30), SimulatedClock(DECIDED), Shutdown(say=str),
                      max_cycles=2, paused=lambda: is_paused(store, "paper"))
    assert len(ticks) == 2 and report.paused == 0


# --- formatting ---------------------------------------------------------------------------------


def test_the_theories_shown_are_the_signals_own_first_then_the_highlights():
    available = {"hurst": "h", "regime": "r", "kalman": "k", "montecarlo": "m", "entropy": "e"}
    assert [n for n, _ in top_theories(["entropy", "unknown", "hurst"], available)] == ["entropy", "hurst", "regime"]
    assert [n for n, _ in top_theories([], available)] == ["regime", "kalman", "montecarlo"]
    assert [n for n, _ in top_theories(["a", "b"], {"x": "1"})] == []


def test_free_text_is_escaped_and_prices_keep_their_digits():
    from agent.alerts.messages import Ticket

    t = Ticket(decision_id="run@t/BTC/USDT", ticket_id=ticket_id_for("run@t/BTC/USDT"), run="run", symbol="BTC/USDT",
               direction="LONG", entry=91234.56, stop=90000.0, target=93703.68, reward_risk_net=1.9, quantity=0.0123,
               notional=1122.19, risk_amount=15.18, equity=10_000.0, confidence=0.61, win_probability=0.55,
               regime="trend<up>", theories=(("kalman", "slope > 0 & rising"),), reasoning="Buy <now> & hold. More.",
               decision_ms=DECIDED, expires_ms=DECIDED + H, manual=True)
    text = signal_text(t)
    assert "trend&lt;up&gt;" in text and "slope &gt; 0 &amp; rising" in text and "Buy &lt;now&gt; &amp; hold." in text
    assert "More." not in text  # one line of reasoning
    assert "Entry <b>91,234.56</b>" in text and "Target <b>93,703.68</b>" in text
    assert "Reward:risk 2.00" in text and "0.15% of equity 10,000.00 USDT" in text
    assert price(0.51234567) == "0.51234567" and price(123456789.5) == "123,456,790"
    assert len(ticket_id_for("x")) == 11 and one_line("A; B") == "A;"


def test_telegram_settings_come_from_the_environment_and_the_token_never_prints(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "999:SECRET")
    monkeypatch.setenv("TELEGRAM_CHAT_ID", "4242")
    (tmp_path / ".env").write_text("TELEGRAM_API_URL=http://127.0.0.1:8081/\n")
    settings = load_settings(None)
    assert settings.telegram.configured and settings.telegram.chat == "4242"
    assert settings.telegram.bot_base_url() == "http://127.0.0.1:8081/bot"
    assert "SECRET" not in repr(settings) and "SECRET" not in settings.model_dump_json()
    monkeypatch.delenv("TELEGRAM_CHAT_ID")
    assert not load_settings(None).telegram.configured


def test_a_cycles_data_problems_failed_calls_kill_switch_and_a_nearly_used_limit_become_alerts(store):
    from agent.brokers.base import AccountSnapshot
    from agent.cycle import CycleResult, SymbolResult
    from agent.store.tables import SignalRow
    from risk.decision import Reason

    t = executed(store)  # an open position: exposure is used
    cycle_id = "paper@2025-11-15T14:00:00Z"
    with store.session() as s:  # as if another symbol's LLM call had timed out (a fail-closed HOLD)
        row = s.exec(select(SignalRow).where(SignalRow.decision_id != t.decision_id)).first()
        row.hold_reason = "timeout: no reply within 120 s"
        s.add(row)
        s.commit()
    account = AccountSnapshot(time_ms=DECIDED, cash=1, balance=1, equity=1, positions_value=0, floating_pnl=0,
                              initial_balance=1)
    results = (
        SymbolResult(symbol="ADA/USDT", decision_id=f"{cycle_id}/ADA/USDT", outcome="skipped",
                     reason="stale: the last candle closed at 2025-11-15T10:00:00Z, 4 bars before the decision"),
        SymbolResult(symbol="XRP/USDT", decision_id=f"{cycle_id}/XRP/USDT", outcome="error",
                     reason="snapshot failed: ValueError: boom"),
        SymbolResult(symbol="BTC/USDT", decision_id=f"{cycle_id}/BTC/USDT", outcome="rejected", direction="SHORT",
                     reasons=(Reason(rule="kill_switch", code="kill_switch_on", message="kill switch is on"),)),
    )
    result = CycleResult(cycle_id=cycle_id, run="paper", decision_ms=DECIDED, attempt=1, results=results,
                         account=account, fills=0, closed_trades=0, timings={}, llm_seconds=0.0, store="x")
    alerts = {a.key: a for a in monitor.cycle_events(result, store, RELAXED, near_limit=0.01)}
    day = "2025-11-15"
    stale, kill = alerts[f"data:paper:ADA/USDT:{day}"], alerts[f"kill_switch:paper:{day}"]
    assert stale.level == "WARNING" and stale.silent and "stale" in stale.text
    assert alerts[f"error:{cycle_id}/XRP/USDT"].level == "WARNING"
    assert kill.level == "CRITICAL" and not kill.silent
    assert "timeout: no reply" in alerts[f"llm:{cycle_id}"].text and alerts[f"llm:{cycle_id}"].silent
    exposure = alerts[f"limit:paper:open_exposure:{day}"]
    assert exposure.level == "WARNING" and "of its limit" in exposure.text
    assert f"limit:paper:daily_loss:{day}" not in alerts  # no loss: nothing used
    assert outbox.enqueue(store, alerts.values(), "paper", 1) == len(alerts)
    assert outbox.enqueue(store, monitor.cycle_events(result, store, RELAXED, near_limit=0.01), "paper", 2) == 0
