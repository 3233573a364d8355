"""The outbox: alerts as store rows, written with what caused them, delivered once and in order.

- `outbox_rows(event, settings)` gives a decision's alert rows (the ticket, a breaker trip, a
  failed order) for `CycleDeps.decision_rows`: they commit in the decision's own transaction, so
  the alert exists exactly when the decision does. Their keys contain the decision id, which the
  store writes at most once, so they can never collide.
- `enqueue(store, alerts)` queues alerts raised outside a decision (position events, warnings, the
  daily report); a key already queued is skipped (INSERT OR IGNORE semantics, checked inside the
  transaction), which is what makes repeated scans and restarts harmless.
- The sender (`agent.alerts.sender`) takes the oldest pending row (`next_row`), marks an attempt
  before sending (`mark_attempt`), and marks it sent with Telegram's message id (`mark_sent`) in
  one transaction. INFO rows are never sent alone: `roll_digest` folds the pending ones into one
  digest row when the oldest has waited `digest_minutes`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from html import escape

from sqlalchemy import func
from sqlmodel import SQLModel, select

from agent.alerts.messages import (
    Alert,
    Ticket,
    digest_text,
    level_text,
    signal_text,
    ticket_buttons,
    ticket_id_for,
    top_theories,
)
from agent.alerts.settings import TelegramSettings
from agent.store.store import Store
from agent.store.tables import OutboxRow, TicketRow

IN_FLIGHT = "in flight"  # last_error of a row whose send started and has no known outcome


def _settings(settings: object) -> TelegramSettings:
    """Accepts the whole Settings or its [telegram] section."""
    return settings if isinstance(settings, TelegramSettings) else getattr(settings, "telegram", TelegramSettings())


def row_of(alert: Alert, run: str, now_ms: int) -> OutboxRow:
    return OutboxRow(key=alert.key, run=run, level=alert.level, kind=alert.kind, text=alert.text,
                     buttons_json=json.dumps([[list(b) for b in row] for row in alert.buttons]), silent=alert.silent,
                     decision_id=alert.decision_id, ticket_id=alert.ticket_id, created_ms=now_ms, next_attempt_ms=0)


def outbox_rows(event, settings) -> list[SQLModel]:  # event: agent.cycle.DecisionEvent
    """The alert rows of one decision (empty when Telegram is not configured).

    An approved decision gets its signal alert, and with the manual broker a ticket (buttons
    Executed / Skipped); a breaker tripped by the decision is CRITICAL; an order the broker
    refused is a WARNING; a directional signal the gate refused is an INFO note for the digest.
    """
    tg = _settings(settings)
    if not tg.configured:
        return []
    r, run = event.result, event.run
    now = time.time_ns() // 1_000_000  # when queued (wall clock); the decision time is in the text
    rows: list[SQLModel] = []
    verdict = event.verdict
    if verdict.status == "approved" and r.outcome == "ordered":
        manual = r.order_status == "awaiting_person"
        tid = ticket_id_for(r.decision_id)
        summaries = {name: res.summary() for name, res in event.snapshot.theories.items()}
        decision_ms = event.account.time_ms
        expires = decision_ms + round(tg.ticket_expiry_bars * event.interval_ms)
        s = event.signal
        ticket = Ticket(
            decision_id=r.decision_id, ticket_id=tid, run=run, symbol=r.symbol, direction=verdict.direction,
            entry=s.entry, stop=s.stop, target=s.target, reward_risk_net=verdict.reward_risk,
            quantity=verdict.quantity, notional=verdict.notional, risk_amount=verdict.risk_amount,
            equity=event.account.equity, confidence=s.confidence, win_probability=verdict.win_probability,
            regime=r.regime, theories=tuple(top_theories(s.theories, summaries)), reasoning=s.reasoning,
            decision_ms=decision_ms, expires_ms=expires, manual=manual, order_status=r.order_status,
        )
        alert = Alert(key=f"signal:{r.decision_id}", level="TRADE", kind="signal",
                      text=signal_text(ticket), buttons=ticket_buttons(tid) if manual else (), silent=not manual,
                      decision_id=r.decision_id, ticket_id=tid if manual else None)
        rows.append(row_of(alert, run, now))
        if manual:
            rows.append(TicketRow(ticket_id=tid, decision_id=r.decision_id, client_order_id=r.client_order_id or "",
                                  run=run, symbol=r.symbol, side=verdict.direction, entry=s.entry, stop=s.stop,
                                  target=s.target, quantity=verdict.quantity, created_ms=now, expires_ms=expires))
    elif r.outcome == "order_failed":
        rows.append(row_of(Alert(key=f"order_failed:{r.decision_id}", level="WARNING", kind="warning",
                                 text=level_text("WARNING", f"order failed: {r.symbol}", r.reason), silent=True,
                                 decision_id=r.decision_id), run, now))
    elif r.outcome == "rejected" and r.direction in ("LONG", "SHORT"):
        rows.append(row_of(Alert(key=f"rejected:{r.decision_id}", level="INFO", kind="info",
                                 text=escape(f"{r.symbol} {r.direction} refused by the gate: {r.reason}"),
                                 decision_id=r.decision_id), run, now))
    for e in verdict.events:
        if e.kind == "trip":
            body = (f"{e.breaker} breaker tripped at {e.at_ms}: loss {e.loss if e.loss is not None else 'n/a'} vs "
                    f"limit {e.limit if e.limit is not None else 'n/a'} (equity {e.equity}); {e.note}")
            rows.append(row_of(Alert(key=f"breaker:{r.decision_id}:{e.breaker}", level="CRITICAL", kind="critical",
                                     text=level_text("CRITICAL", f"{e.breaker} circuit breaker tripped", body),
                                     decision_id=r.decision_id), run, now))
    return rows


def enqueue(store: Store, alerts: Iterable[Alert], run: str, now_ms: int) -> int:
    """Queue alerts whose key is new, in one transaction; returns how many were queued."""
    alerts = list(alerts)
    if not alerts:
        return 0
    added = 0
    with store.session() as s:
        keys = [a.key for a in alerts]
        known = set(s.exec(select(OutboxRow.key).where(OutboxRow.key.in_(keys))).all())
        for a in alerts:
            if a.key in known:
                continue
            known.add(a.key)
            s.add(row_of(a, run, now_ms))
            added += 1
        s.commit()
    return added


def queued(store: Store, key: str) -> bool:
    with store.session() as s:
        return s.exec(select(OutboxRow.id).where(OutboxRow.key == key)).first() is not None


def next_row(store: Store) -> OutboxRow | None:
    """The oldest pending row that is sent on its own (not INFO): order is by id, whatever its backoff."""
    with store.session() as s:
        stmt = (select(OutboxRow).where(OutboxRow.status == "pending", OutboxRow.level != "INFO")
                .order_by(OutboxRow.id).limit(1))
        return s.exec(stmt).first()


def mark_attempt(store: Store, row_id: int, now_ms: int) -> None:
    """Before a send: count the attempt and mark it in flight (a crash now leaves the mark, see sender)."""
    with store.session() as s:
        row = s.get(OutboxRow, row_id)
        row.attempts += 1
        row.last_error = IN_FLIGHT
        s.add(row)
        s.commit()


def mark_sent(store: Store, row_id: int, message_id: int, now_ms: int) -> None:
    """One transaction: the row is sent, with Telegram's message id (and a ticket learns its message)."""
    with store.session() as s:
        row = s.get(OutboxRow, row_id)
        row.status, row.sent_ms, row.message_id, row.last_error = "sent", now_ms, message_id, ""
        s.add(row)
        s.commit()


def mark_retry(store: Store, row_id: int, next_ms: int, error: str) -> None:
    with store.session() as s:
        row = s.get(OutboxRow, row_id)
        row.next_attempt_ms, row.last_error = next_ms, error[:500]
        s.add(row)
        s.commit()


def mark_failed(store: Store, row_id: int, error: str) -> None:
    """Telegram refused the message itself (400): retrying cannot help; kept with the reason, never deleted."""
    with store.session() as s:
        row = s.get(OutboxRow, row_id)
        row.status, row.last_error = "failed", error[:500]
        s.add(row)
        s.commit()


def roll_digest(store: Store, run: str, digest_ms: float, now_ms: int, force: bool = False) -> int | None:
    """Fold the pending INFO rows into one digest row once the oldest has waited `digest_ms` (or `force`).

    One transaction: the digest row is queued and the INFO rows are marked 'digested', so a note
    is in exactly one digest. Returns the digest row's id, or None when none is due.
    """
    with store.session() as s:
        infos: Sequence[OutboxRow] = s.exec(select(OutboxRow).where(OutboxRow.status == "pending",
                                                                    OutboxRow.level == "INFO")
                                            .order_by(OutboxRow.id)).all()
        if not infos or (not force and now_ms - infos[0].created_ms < digest_ms):
            return None
        digest = OutboxRow(key=f"digest:{infos[0].id}-{infos[-1].id}", run=run, level="WARNING", kind="digest",
                           text=digest_text([(r.created_ms, r.text) for r in infos]), silent=True,
                           created_ms=now_ms, next_attempt_ms=0)
        s.add(digest)
        for r in infos:
            r.status, r.last_error = "digested", ""
            s.add(r)
        s.commit()
        s.refresh(digest)
        return digest.id


def pending_count(store: Store) -> int:
    with store.session() as s:
        return s.exec(select(func.count()).select_from(OutboxRow).where(OutboxRow.status == "pending")).one()
