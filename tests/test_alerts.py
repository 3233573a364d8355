"""Telegram alerts end to end: a real cycle queues the ticket, python-telegram-bot delivers it to a fake
Bot API server on 127.0.0.1 (real wire format), and the person's button presses and replies reach the
manual broker through the same client's update polling."""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from pathlib import Path

import pytest

from agent.alerts import outbox
from agent.alerts.control import is_paused
from agent.alerts.messages import Alert, price, ticket_id_for
from agent.alerts.outbox import outbox_rows
from agent.alerts.service import AlertService, ServiceThread
from agent.alerts.settings import TelegramSettings
from agent.brokers.manual import ManualBroker
from agent.cycle import FileMarketData, run_cycle
from agent.llm.records import CallRecords
from agent.store import Store
from agent.store.tables import (
    DecisionRow,
    FillRow,
    GateDecisionRow,
    OrderRow,
    OutboxRow,
    PositionRow,
    SignalRow,
    TicketRow,
)
from tests.telegram_server import Failure, fake_bot_api, message_view
from tests.test_cycle import HOURS, RELAXED, SHARED_FITS, make_deps
from theories.regime import REGIMES

TOKEN = "123456:TEST-token_abc"
CHAT = 4242
STRANGER = 666
DECIDED = HOURS[1]  # 2025-11-15 14:00 UTC: the heuristic's SOL/USDT trade is approved on the bundled sample
ANSWER_AT = DECIDED + 10 * 60_000  # the person answers ten minutes later, inside the ticket's hour


def tg(url: str = "http://127.0.0.1:9", **kw) -> TelegramSettings:
    base = dict(bot_token=TOKEN, chat_id=str(CHAT), api_url=url, retry_initial_s=0.05, retry_max_s=0.2,
                retry_jitter=0.0, poll_timeout_s=1, request_timeout_s=3, report_time="23:59")
    return TelegramSettings(**{**base, **kw})


_DECIDED: dict[str, Path] = {}  # one cycle per test process, shared by the alert test modules (read-only copy)


@pytest.fixture
def decided(tmp_path_factory) -> Path:
    """A store in which a real manual-broker cycle approved one trade and queued its ticket (tests copy it)."""
    if "path" not in _DECIDED:
        _DECIDED["path"] = _decide(tmp_path_factory.mktemp("alerts"))
    return _DECIDED["path"]


def _decide(root: Path) -> Path:
    store, records = Store.at(root / "store.sqlite"), CallRecords(root / "calls.sqlite")
    deps = make_deps(store, records, FileMarketData(), SHARED_FITS)
    deps.broker = ManualBroker()
    settings = tg()
    deps.decision_rows = lambda event: outbox_rows(event, settings)
    run_cycle(DECIDED, deps)
    store.close()
    records.close()
    return root / "store.sqlite"


@pytest.fixture
def store(decided, tmp_path) -> Store:
    path = tmp_path / "store.sqlite"
    shutil.copy(decided, path)
    s = Store.at(path)
    yield s
    s.close()


@pytest.fixture
def api():
    with fake_bot_api(TOKEN) as server:
        yield server


class Service:
    """The alerts service on its own loop in a thread, as `signal-agent run` starts it."""

    def __init__(self, store: Store, settings: TelegramSettings, clock=lambda: ANSWER_AT) -> None:
        self.service = AlertService(settings, store, "paper", risk=RELAXED, clock=clock, tick_s=0.2)
        self.thread = ServiceThread(self.service)

    def __enter__(self) -> AlertService:
        self.thread.start()
        return self.service

    def __exit__(self, *exc) -> None:
        self.thread.stop(timeout=15)


def the_ticket(store: Store) -> TicketRow:
    (ticket,) = store.rows(TicketRow)
    return ticket


def eventually(predicate, timeout: float = 10.0) -> bool:
    """Poll a condition on the store (the client records its side after the server has answered)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def ticket_sent(store: Store) -> bool:
    return any(r.kind == "signal" and r.status == "sent" for r in store.rows(OutboxRow))


def sent_to(api, chat: int) -> list[dict]:
    return [m for m in api.sent() if m["chat"]["id"] == chat]


# --- the outbox written by the cycle ----------------------------------------------------------


def test_a_real_cycle_queues_one_ticket_per_approved_decision_in_the_decisions_transaction(store):
    ordered = {d.decision_id for d in store.rows(DecisionRow) if d.outcome == "ordered"}
    assert len(ordered) == 1
    signals = [r for r in store.rows(OutboxRow) if r.kind == "signal"]
    assert {r.decision_id for r in signals} == ordered
    (row,) = signals
    assert row.key == f"signal:{row.decision_id}" and row.status == "pending" and row.attempts == 0
    ticket = the_ticket(store)
    order = store.rows(OrderRow, decision_id=row.decision_id)[0]
    assert ticket.decision_id == row.decision_id and ticket.client_order_id == order.client_order_id
    assert ticket.ticket_id == ticket_id_for(row.decision_id) == row.ticket_id
    assert ticket.expires_ms == DECIDED + 3_600_000  # one 1 h candle after the decision


def test_outbox_rows_are_empty_when_telegram_is_not_configured(store):
    assert outbox_rows(object(), TelegramSettings()) == []


def test_an_alert_key_is_queued_once_however_often_it_is_raised(store):
    a = Alert(key="warn:x", level="WARNING", kind="warning", text="x")
    assert outbox.enqueue(store, [a, a], "paper", 1) == 1
    assert outbox.enqueue(store, [a], "paper", 2) == 0
    assert len([r for r in store.rows(OutboxRow) if r.key == "warn:x"]) == 1


def test_info_notes_wait_for_the_digest_and_go_out_together_once(store):
    oldest = min(r.created_ms for r in store.rows(OutboxRow, level="INFO"))  # the cycle's gate refusals
    for i in range(3):
        outbox.enqueue(store, [Alert(key=f"info:{i}", level="INFO", kind="info", text=f"note &lt;{i}&gt;")],
                       "paper", oldest + i)
    assert outbox.roll_digest(store, "paper", digest_ms=60_000, now_ms=oldest + 59_000) is None  # too early
    digest_id = outbox.roll_digest(store, "paper", digest_ms=60_000, now_ms=oldest + 60_000)
    digest = store.rows(OutboxRow, id=digest_id)[0]
    assert all(f"note &lt;{i}&gt;" in digest.text for i in range(3)) and digest.silent
    assert "refused by the gate" in digest.text
    assert {r.status for r in store.rows(OutboxRow, level="INFO")} == {"digested"}
    assert outbox.roll_digest(store, "paper", digest_ms=60_000, now_ms=oldest + 10**9) is None  # nothing left


# --- delivery through python-telegram-bot -----------------------------------------------------


def test_the_signal_alert_shows_every_number_of_the_decision_and_the_two_buttons(store, api):
    with Service(store, tg(api.url)):
        assert api.wait_for(lambda: len(api.messages) >= 1)
    (msg,) = sent_to(api, CHAT)
    params = msg["_params"]
    assert params["parse_mode"] == "HTML" and params.get("disable_notification") in (None, "false", False)
    ticket = the_ticket(store)
    sig = store.rows(SignalRow, decision_id=ticket.decision_id)[0]
    gate = store.rows(GateDecisionRow, decision_id=ticket.decision_id)[0]
    text = msg["text"]
    equity = gate.risk_amount / json.loads(gate.request_json)["account"]["equity"]
    for expected in (
        f"{sig.direction} {sig.symbol}", f"Entry <b>{price(sig.entry)}</b>", f"Stop <b>{price(sig.stop)}</b>",
        f"Target <b>{price(sig.target)}</b>", f"net of fees {gate.reward_risk:.2f}",
        f"Reward:risk {abs(sig.target - sig.entry) / abs(sig.entry - sig.stop):.2f}",
        f"Size {price(gate.quantity)} SOL", f"{gate.notional:,.2f} USDT notional",
        f"Risk {gate.risk_amount:,.2f} USDT = {equity:.2%} of equity", f"Confidence {sig.confidence:.2f}",
        f"sized on p = {gate.win_probability:.2f}", ticket.ticket_id, ticket.decision_id, "Valid until", "Why: ",
    ):
        assert expected in text, expected
    cited = json.loads(sig.theories_json)
    shown = [line.split("</i>")[0].split("<i>")[1] for line in text.splitlines() if line.startswith("• <i>")]
    assert len(shown) == 3 and shown[: len(cited[:3])] == cited[:3]  # the signal's own reliance ranks first
    keyboard = json.loads(params["reply_markup"])["inline_keyboard"]
    assert [[b["text"] for b in row] for row in keyboard] == [["Executed", "Skipped"]]
    data = [b["callback_data"] for b in keyboard[0]]
    assert data == [f"x:{ticket.ticket_id}", f"s:{ticket.ticket_id}"]
    assert all(len(d.encode()) <= 64 for d in data)  # Telegram's callback_data limit
    (row,) = [r for r in store.rows(OutboxRow) if r.kind == "signal"]
    assert row.status == "sent" and row.message_id == msg["message_id"] and row.attempts == 1


def test_executed_then_a_reply_with_the_fill_price_opens_the_manual_position_at_that_price(store, api):
    with Service(store, tg(api.url)):
        assert api.wait_for(lambda: len(api.messages) >= 1)
        ticket_msg = message_view(api.sent()[0])
        ticket = the_ticket(store)
        api.button_press(ticket_msg, f"x:{ticket.ticket_id}")
        assert api.wait_for(lambda: len(api.messages) >= 2)
        prompt = api.sent()[1]
        assert json.loads(prompt["_params"]["reply_markup"])["force_reply"] is True
        assert eventually(lambda: the_ticket(store).prompt_message_id == prompt["message_id"])
        assert api.calls("answerCallbackQuery")
        fill = round((ticket.entry + ticket.target) / 2, 4)  # inside the band and beyond the stop's side
        far = ticket.entry * 1.5
        api.user_message(CHAT, "ninety", reply_to=message_view(prompt))
        api.user_message(CHAT, f"{far}", reply_to=message_view(prompt))
        assert api.wait_for(lambda: len(api.messages) >= 4)
        assert store.rows(PositionRow) == []  # neither answer was recorded
        refusals = [m["text"] for m in api.sent()[2:4]]
        assert "not a price" in refusals[0] and "outside the ±10% band" in refusals[1]
        api.user_message(CHAT, f"{fill}", reply_to=message_view(prompt))
        assert api.wait_for(lambda: any("Recorded:" in m["text"] for m in api.sent()))
        assert api.wait_for(lambda: any("Entry filled" in m["text"] for m in api.sent()))
    (pos,) = store.rows(PositionRow)
    (order,) = store.rows(OrderRow)
    (f,) = store.rows(FillRow)
    assert pos.entry == pytest.approx(fill) and pos.quantity == pytest.approx(ticket.quantity)
    assert order.status == "filled" and order.average_price == pytest.approx(fill) and f.price == pytest.approx(fill)
    assert f.time_ms == ANSWER_AT and f.decision_id == ticket.decision_id
    t = the_ticket(store)
    assert t.status == "executed" and t.fill_price == pytest.approx(fill) and t.answered_ms == ANSWER_AT
    confirm = next(m for m in api.sent() if "Entry filled" in m["text"])
    buttons = json.loads(confirm["_params"]["reply_markup"])["inline_keyboard"]
    assert buttons[0][0]["callback_data"] == f"c:{ticket.ticket_id}"  # the close button comes with the fill


def test_skipped_is_recorded_against_the_decision_and_the_buttons_are_removed(store, api):
    with Service(store, tg(api.url)):
        assert api.wait_for(lambda: len(api.messages) >= 1)
        ticket = the_ticket(store)
        api.button_press(message_view(api.sent()[0]), f"s:{ticket.ticket_id}")
        assert api.wait_for(lambda: bool(api.calls("editMessageReplyMarkup")))
        # pressing again is refused: the answer is recorded once
        api.button_press(message_view(api.sent()[0]), f"s:{ticket.ticket_id}")
        assert api.wait_for(lambda: len(api.calls("answerCallbackQuery")) >= 2)
    (order,) = store.rows(OrderRow)
    assert order.status == "skipped" and the_ticket(store).status == "skipped"
    assert "already skipped" in api.calls("answerCallbackQuery")[1].params["text"]


def test_an_outage_then_recovery_delivers_every_queued_alert_exactly_once_and_in_order(store, api):
    keys = [f"warn:{i}" for i in range(6)]
    outbox.enqueue(store, [Alert(key=k, level="WARNING", kind="warning", text=f"alert {k}", silent=True)
                           for k in keys], "paper", 1)
    api.down.add("sendMessage")
    with Service(store, tg(api.url)) as service:
        assert api.wait_for(lambda: len(api.calls("sendMessage")) >= 4)  # retried, with backoff, while down
        assert api.sent() == []
        api.fail("sendMessage", Failure("drop"))  # then a connection lost mid-request: outcome unknown
        with api.lock:
            api.down.clear()
        assert api.wait_for(lambda: len(api.messages) >= 7, timeout=15)
        time.sleep(0.3)  # nothing more may come
        assert service.sender.failures == 0
    texts = [m["text"] for m in sent_to(api, CHAT)]
    order = [next(k for k in ["signal", *keys] if (f"alert {k}" in t if k != "signal" else "ticket" in t))
             for t in texts]
    assert order == ["signal", *keys]  # the ticket was queued first, by the cycle
    assert texts[0].startswith("↻") and not any(t.startswith("↻") for t in texts[1:])  # only the dropped one
    rows = [r for r in store.rows(OutboxRow) if r.key in keys or r.kind == "signal"]
    assert all(r.status == "sent" for r in rows)
    assert sorted(r.message_id for r in rows) == sorted(m["message_id"] for m in sent_to(api, CHAT))


def test_a_429_waits_retry_after_then_resends_the_same_alert_first(store, api):
    outbox.enqueue(store, [Alert(key="warn:after", level="WARNING", kind="warning", text="second")], "paper", 1)
    api.fail("sendMessage", Failure("429", retry_after=1))
    with Service(store, tg(api.url)):
        assert api.wait_for(lambda: len(api.messages) >= 2, timeout=10)
    first, second = api.calls("sendMessage")[:2]
    assert first.status == 429 and second.status == 200
    assert second.at - first.at >= 0.95  # retry_after honoured (the backoff alone would be 0.05 s)
    assert "ticket" in api.sent()[0]["text"] and api.sent()[1]["text"] == "second"  # no reordering


def test_a_message_telegram_refuses_is_kept_as_failed_and_the_queue_moves_on(store, api):
    outbox.enqueue(store, [Alert(key="warn:next", level="WARNING", kind="warning", text="next")], "paper", 1)
    api.fail("sendMessage", Failure("400"))
    with Service(store, tg(api.url)):
        assert api.wait_for(lambda: len(api.messages) >= 1)
    (signal,) = [r for r in store.rows(OutboxRow) if r.kind == "signal"]
    assert signal.status == "failed" and "can't parse entities" in signal.last_error.lower()
    assert api.sent()[0]["text"] == "next"


def test_commands_and_buttons_from_a_strangers_chat_are_ignored(store, api, caplog):
    with Service(store, tg(api.url)) as service:
        assert api.wait_for(lambda: len(api.messages) >= 1)
        ticket = the_ticket(store)
        ticket_msg = message_view(api.sent()[0])
        stranger_view = {**ticket_msg, "chat": {"id": STRANGER, "type": "private", "first_name": "X"}}
        api.user_message(STRANGER, "/pause")
        api.user_message(STRANGER, "/status")
        api.button_press(stranger_view, f"x:{ticket.ticket_id}", user_id=STRANGER)
        assert api.wait_for(lambda: service.ignored >= 3)
        api.user_message(CHAT, "/status")
        assert api.wait_for(lambda: len(sent_to(api, CHAT)) >= 2)
    assert sent_to(api, STRANGER) == [] and not api.calls("answerCallbackQuery")
    assert not is_paused(store, "paper") and the_ticket(store).status == "open"
    assert "running" in sent_to(api, CHAT)[1]["text"]
    assert "ignored an update from chat 666" in caplog.text


def test_pause_resume_positions_and_report_commands_from_the_configured_chat(store, api):
    with Service(store, tg(api.url)):
        assert api.wait_for(lambda: len(api.messages) >= 1)
        api.user_message(CHAT, "/pause")
        assert api.wait_for(lambda: len(api.messages) >= 2)
        assert is_paused(store, "paper")
        for command in ("/positions", "/report", "/resume"):  # handled in order, one update at a time
            api.user_message(CHAT, command)
        assert api.wait_for(lambda: len(api.messages) >= 5)
    replies = [m["text"] for m in api.sent()[1:]]
    assert "paused" in replies[0] and replies[1] == "No open positions."
    assert "Daily report" in replies[2] and "Risk limits" in replies[2] and "Tickets: 1" in replies[2]
    assert "resumed" in replies[3] and not is_paused(store, "paper")


# --- the commands ---------------------------------------------------------------------------------

CONFIG = """
[cycle]
symbols = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
[cycle.theories]
montecarlo = {}
regime = {fit_window = 300, search_reps = 0}
kalman = {}
context = {}
[paper]
taker_fee = 0.0
[risk.sizing]
fee_rate = 0.0
""" + "".join(f'[risk.regime.policies."{r}"]\ndirections = "both"\nmultiplier = 1.0\nmin_confidence = 0.0\n'
              for r in REGIMES)


def test_cycle_manual_queues_the_ticket_with_the_decision_and_flushes_it_to_telegram(api, tmp_path, monkeypatch,
                                                                                     capsys):
    from agent.commands import cycle as command

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("TELEGRAM_CHAT_ID", str(CHAT))
    monkeypatch.setenv("TELEGRAM_API_URL", api.url)
    (tmp_path / "config.toml").write_text(CONFIG)
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    args = parser.parse_args(["--manual", "--at", "2025-11-15T14:00:00Z", "--config", str(tmp_path / "config.toml"),
                              "--store", f"sqlite:///{tmp_path / 'store.sqlite'}"])
    assert command.run(args) == 0
    out = capsys.readouterr().out
    assert "Cycle manual@2025-11-15T14:00:00Z" in out and "awaiting_person" in out
    assert "Telegram: 1 alert(s) sent" in out
    (msg,) = api.sent()
    assert "SOL/USDT" in msg["text"] and "Executed" in msg["_params"]["reply_markup"]
    store = Store(f"sqlite:///{tmp_path / 'store.sqlite'}")
    try:
        (row,) = [r for r in store.rows(OutboxRow) if r.kind == "signal"]
        assert row.status == "sent" and row.message_id == msg["message_id"] and row.run == "manual"
        assert store.rows(TicketRow)[0].run == "manual"
    finally:
        store.close()


def test_alerts_test_sends_a_message_and_list_shows_what_waits(api, tmp_path, monkeypatch, capsys):
    from agent.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.delenv("TELEGRAM_BOT_TOKEN", raising=False)
    monkeypatch.delenv("TELEGRAM_CHAT_ID", raising=False)
    assert main(["alerts", "test"]) == 2
    assert "Telegram is not configured" in capsys.readouterr().err
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("TELEGRAM_CHAT_ID", str(CHAT))
    monkeypatch.setenv("TELEGRAM_API_URL", api.url)
    assert main(["alerts", "test"]) == 0
    assert "Telegram: 1 alert(s) sent, 0 waiting" in capsys.readouterr().out
    (msg,) = api.sent()
    assert "test message" in msg["text"] and msg["chat"]["id"] == CHAT
    api.down.add("sendMessage")
    assert main(["alerts", "test", "--timeout", "1"]) == 1  # Telegram failing: the message waits in the outbox
    assert "1 waiting" in capsys.readouterr().out
    assert main(["alerts", "list"]) == 0
    assert "test:" in capsys.readouterr().out


def test_a_reply_to_the_ticket_itself_with_the_fill_price_records_the_execution(store, api):
    with Service(store, tg(api.url)):
        assert api.wait_for(lambda: len(api.messages) >= 1) and eventually(lambda: ticket_sent(store))
        ticket = the_ticket(store)
        api.user_message(CHAT, f"{ticket.entry}", reply_to=message_view(api.sent()[0]))
        assert api.wait_for(lambda: any("Recorded:" in m["text"] for m in api.sent()))
    (pos,) = store.rows(PositionRow)
    assert pos.entry == pytest.approx(ticket.entry) and the_ticket(store).status == "executed"


def test_the_bot_token_never_reaches_the_logs_even_at_debug(store, api, caplog):
    caplog.set_level(logging.DEBUG)
    with Service(store, tg(api.url)):
        assert api.wait_for(lambda: len(api.messages) >= 1)
    assert "getUpdates" in caplog.text  # httpx logged the requests ...
    assert TOKEN not in caplog.text and "<token>" in caplog.text  # ... without the token


def test_a_bot_api_unreachable_at_start_is_retried_and_the_queue_then_goes_out(store, api):
    api.fail("getMe", Failure("502"), Failure("drop"), Failure("500"))
    with Service(store, tg(api.url)) as service:
        assert api.wait_for(lambda: len(api.messages) >= 1, timeout=10)
        assert service.connected.is_set()
    assert len(api.calls("getMe")) >= 4 and "ticket" in api.sent()[0]["text"]
