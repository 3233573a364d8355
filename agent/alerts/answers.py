"""A person's answers to tickets, applied to the manual broker and recorded against the decision.

Executed (with the fill price), Skipped, Closed (with the exit price) and the expiry of an
unanswered ticket each: load the manual broker's memory from the store, apply the answer
(`agent.brokers.manual.ManualBroker`), store what changed with `agent.cycle.record_answer` (one
transaction: order state, fill, closed trade, positions, account, the broker's memory), then mark
the ticket and queue its confirmation alert.

Concurrency: the broker's memory is read, changed and written back, so a cycle of the same run
must not run meanwhile (it would write back the memory it loaded before the answer). Callers
pass the process's `lock`, which `signal-agent run` (and `serve`) also hold around each cycle.
Idempotency: if a crash fell between the broker's record and the ticket's, the next answer finds
the order already answered in the broker's memory and brings the ticket in line instead of
answering twice.
"""

from __future__ import annotations

import math
import re
import threading
from contextlib import nullcontext
from html import escape

from pydantic import BaseModel, ConfigDict
from sqlmodel import select

from agent.alerts.messages import Alert, close_button, closed_text, entry_text, price
from agent.alerts.outbox import enqueue
from agent.brokers.base import BrokerError
from agent.brokers.manual import ManualBroker
from agent.cycle import broker_key, record_answer
from agent.store.store import Store
from agent.store.tables import TicketRow


class AnswerError(ValueError):
    """The answer cannot be applied; the message is what the person is told."""


class AnswerResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    reply: str  # plain text for the person
    ticket: TicketRow


def parse_price(text: str) -> float:
    """A price as a person types it: '91234.5', '91,234.5', '91 234.5', '0.5123'. A lone comma is refused
    (decimal comma or thousands separator? 1,234 is ambiguous)."""
    t = text.strip().replace(" ", "").replace("_", "")
    if "," in t and "." in t:
        t = t.replace(",", "")
    elif "," in t:
        raise AnswerError(f"{text.strip()!r}: write the price with a decimal point, e.g. 91234.5")
    if not re.fullmatch(r"\d+(\.\d+)?|\.\d+", t):
        raise AnswerError(f"{text.strip()!r} is not a price: reply with a number such as 91234.5")
    value = float(t)
    if not (value > 0 and math.isfinite(value)):
        raise AnswerError("the price must be a positive number")
    return value


def check_band(ticket: TicketRow, value: float, band: float, what: str) -> None:
    """Refuse a price further than `band` from the ticket's entry: almost always a typo (a missing digit)."""
    deviation = value / ticket.entry - 1
    if abs(deviation) > band:
        raise AnswerError(f"{what} {price(value)} is {deviation:+.1%} from the ticket entry {price(ticket.entry)}, "
                          f"outside the ±{band:.0%} band: check the number and reply again")


def ticket(store: Store, ticket_id: str) -> TicketRow:
    with store.session() as s:
        row = s.get(TicketRow, ticket_id)
    if row is None:
        raise AnswerError(f"unknown ticket {ticket_id}")
    return row


def ticket_for_prompt(store: Store, message_id: int) -> TicketRow | None:
    """The ticket whose 'reply with the price' prompt (or whose alert) has this message id."""
    from agent.store.tables import OutboxRow

    with store.session() as s:
        row = s.exec(select(TicketRow).where(TicketRow.prompt_message_id == message_id)).first()
        if row is not None:
            return row
        alert = s.exec(select(OutboxRow).where(OutboxRow.message_id == message_id,
                                               OutboxRow.ticket_id.is_not(None))).first()
        return s.get(TicketRow, alert.ticket_id) if alert else None


def set_prompt(store: Store, ticket_id: str, message_id: int, action: str) -> None:
    with store.session() as s:
        row = s.get(TicketRow, ticket_id)
        row.prompt_message_id, row.prompt_action = message_id, action
        s.add(row)
        s.commit()


def _save_ticket(store: Store, row: TicketRow) -> TicketRow:
    with store.session() as s:
        s.add(row)
        s.commit()
        s.refresh(row)
        return row


def _broker(store: Store, run: str, initial_cash: float) -> ManualBroker:
    broker = ManualBroker(initial_cash)
    state = store.state(broker_key(run))
    if state is None:
        raise AnswerError(f"run {run!r} has no broker memory in the store: was its cycle run with --manual?")
    broker.load_state(state)
    return broker


def apply_answer(store: Store, ticket_id: str, action: str, value: float | None, now_ms: int, *,
                 band: float = 0.10, initial_cash: float = 10_000.0, lock: threading.Lock | None = None
                 ) -> AnswerResult:
    """Apply 'executed' (value: fill price), 'skipped', 'closed' (value: exit price) or 'expired'."""
    with lock or nullcontext():
        t = ticket(store, ticket_id)
        broker = _broker(store, t.run, initial_cash)
        order = broker.order(t.client_order_id)
        if order is None:
            if t.status != "open":  # finished a week ago or more: the broker forgot the order, the ticket did not
                raise AnswerError(f"ticket {ticket_id} is already {t.status}")
            raise AnswerError(f"ticket {ticket_id}: the broker has no order {t.client_order_id}")
        position = next((p for p in broker.positions() if p.client_order_id == t.client_order_id), None)
        alerts: list[Alert] = []
        if action in ("executed", "skipped", "expired"):
            if t.status != "open":
                raise AnswerError(f"ticket {ticket_id} is already {t.status}")
            if order.status != "awaiting_person":  # answered before a crash cut the ticket's update: catch up
                return AnswerResult(reply=f"ticket {ticket_id} was already recorded ({order.status})",
                                    ticket=_save_ticket(store, _caught_up(t, order.status, order.average_price,
                                                                          now_ms)))
            if action == "executed":
                if value is None:
                    raise AnswerError("the fill price is missing")
                if now_ms > t.expires_ms:
                    raise AnswerError(f"ticket {ticket_id} expired; the order was or will be withdrawn")
                check_band(t, value, band, "fill price")
                try:
                    report = broker.executed(t.client_order_id, value, now_ms)
                except BrokerError as exc:
                    raise AnswerError(str(exc)) from None
                t.status, t.fill_price = "executed", value
                alerts.append(Alert(
                    key=f"fill:{t.client_order_id}:entry", level="TRADE", kind="position", silent=True,
                    text=entry_text(t.symbol, t.side, t.quantity, value, t.entry, t.stop, t.target, 0.0, ticket_id,
                                    now_ms),
                    buttons=close_button(ticket_id), decision_id=t.decision_id, ticket_id=ticket_id))
                reply = f"Recorded: {t.side} {t.symbol} executed at {price(value)}"
            elif action == "skipped":
                report = broker.skipped(t.client_order_id, now_ms, "skipped by the person (Telegram)")
                t.status = "skipped"
                reply = f"Recorded: {t.symbol} skipped"
            else:
                report = broker.cancel(t.client_order_id, now_ms)
                report = _as_report(report, now_ms)
                t.status = "expired"
                alerts.append(Alert(key=f"expired:{ticket_id}", level="INFO", kind="info",
                                    text=escape(f"ticket {ticket_id} ({t.side} {t.symbol}) expired unanswered; "
                                                "the order was withdrawn"),
                                    decision_id=t.decision_id, ticket_id=ticket_id))
                reply = f"ticket {ticket_id} expired"
        elif action == "closed":
            if value is None:
                raise AnswerError("the exit price is missing")
            if position is None:
                if t.status == "closed" or order.status == "filled":
                    raise AnswerError(f"ticket {ticket_id}: no open position (already closed?)")
                raise AnswerError(f"ticket {ticket_id}: nothing to close, the ticket is {t.status}")
            low, high = min(t.stop, t.target), max(t.stop, t.target)
            if not low * (1 - band) <= value <= high * (1 + band):
                raise AnswerError(f"exit price {price(value)} is far outside the stop-target range "
                                  f"{price(low)}-{price(high)} (±{band:.0%}): check the number and reply again")
            report = broker.closed(t.client_order_id, value, now_ms)
            trade = report.closed[0]
            t.status, t.exit_price = "closed", value
            alerts.append(Alert(key=f"closed:{t.client_order_id}", level="TRADE", kind="position", silent=True,
                                text=closed_text(t.symbol, t.side, trade.quantity, trade.entry, trade.exit, trade.pnl,
                                                 trade.r_multiple, trade.fees, "manual", now_ms),
                                decision_id=t.decision_id, ticket_id=ticket_id))
            reply = f"Recorded: {t.symbol} closed at {price(value)}, P&L {trade.pnl:+,.2f} ({trade.r_multiple:+.2f} R)"
        else:
            raise AnswerError(f"unknown action {action!r}")
        record_answer(store, t.run, broker, report, now_ms)
        t.answered_ms, t.prompt_message_id, t.prompt_action = now_ms, None, None
        saved = _save_ticket(store, t)
        enqueue(store, alerts, t.run, now_ms)
        return AnswerResult(reply=reply, ticket=saved)


def _as_report(order, now_ms: int):
    from agent.brokers.base import SyncReport

    return SyncReport(time_ms=now_ms, orders=(order,))


def _caught_up(t: TicketRow, status: str, fill: float | None, now_ms: int) -> TicketRow:
    t.status = {"filled": "executed", "skipped": "skipped", "cancelled": "expired"}.get(status, t.status)
    if status == "filled":
        t.fill_price = fill
    t.answered_ms = now_ms
    return t


def expire_tickets(store: Store, now_ms: int, *, initial_cash: float = 10_000.0,
                   lock: threading.Lock | None = None) -> list[str]:
    """Withdraw the orders of open tickets past their expiry; returns the expired ticket ids."""
    with store.session() as s:
        due = list(s.exec(select(TicketRow.ticket_id).where(TicketRow.status == "open",
                                                           TicketRow.expires_ms < now_ms)).all())
    done = []
    for tid in due:
        try:
            apply_answer(store, tid, "expired", None, now_ms, initial_cash=initial_cash, lock=lock)
            done.append(tid)
        except AnswerError:
            continue
    return done

