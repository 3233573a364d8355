"""The checks an authenticated alert still has to pass, and its row in the store.

The order is fixed, cheapest and least revealing first (the HTTP layer has already done size,
then signature, then payload):

1. timestamp: the alert's time within `timestamp_window_s` of the receipt, either way (401:
   the signature proves who wrote the body, the timestamp proves it is a fresh request; an old
   one is a capture being replayed after its window, a future one could be replayed later). Its
   signature is still recorded as seen, so a future-dated body refused now is a replay when its
   time comes;
2. replay: inserting the signature into `webhook_signatures` is the check (the primary key
   refuses a second one, atomically, across restarts) (409; a replay writes nothing else);
3. allow-list: the symbol resolves to an allowed one (403);
4. an exit alert stops here: recorded (and sent to Telegram when configured), no cycle;
5. cooldown: no accepted entry alert of the same symbol and strategy within `cooldown_s` (409);
6. room in the queue: at most `max_pending` accepted alerts waiting (503);
then the alert is accepted (202) and queued for its cycle, or recorded as not run when the run
is paused (202, status `paused`).
Every verdict from 1 on is one transaction: the seen signature and the alert's row together.
Bodies whose payload is invalid (422) get a row too (one per signature), never a cycle.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import delete, func
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, SQLModel, select

from agent.store import Store
from agent.store.tables import WebhookAlertRow, WebhookSignatureRow
from agent.webhook.payload import TradingViewAlert, resolve_symbol
from agent.webhook.settings import WebhookSettings
from theories.candles import iso

log = logging.getLogger(__name__)

WAITING = ("queued", "running")
PRUNE_EVERY_MS = 60_000


@dataclass(frozen=True)
class Verdict:
    """What the HTTP layer answers: status code, verdict word, message, and the alert's id when stored."""

    http_status: int
    verdict: str
    detail: str
    alert_id: str | None = None
    status: str = "refused"
    symbol: str | None = None

    @property
    def accepted(self) -> bool:
        return self.http_status == 202


def alert_id_for(signature_hex: str) -> str:
    return f"tv-{signature_hex[:20]}"


class AlertIntake:
    """Judges authenticated alerts against the store (rules in the module docstring), one at a time.

    `exit_rows(row)` gives extra rows to write with an exit alert (a Telegram notice) and
    `paused()` says whether the run is paused; both default to nothing.
    """

    def __init__(self, store: Store, settings: WebhookSettings, allowed: Sequence[str], run: str, *,
                 now_ms: Callable[[], int], paused: Callable[[], bool] = lambda: False,
                 exit_rows: Callable[[WebhookAlertRow], Sequence[SQLModel]] = lambda _row: ()) -> None:
        self.store, self.settings, self.allowed, self.run = store, settings, tuple(allowed), run
        self.now_ms, self.paused, self.exit_rows = now_ms, paused, exit_rows
        self._lock = threading.Lock()  # check-then-insert of the cooldown and the queue bound is one step
        self._pruned_ms = 0

    # --- the two entry points -------------------------------------------------------------------

    def invalid(self, body: bytes, signature_hex: str, detail: str) -> Verdict:
        """A signed body whose payload is invalid (422): one row per signature, nothing else."""
        alert_id = alert_id_for(signature_hex)
        with self._lock, self.store.session() as s:
            if s.get(WebhookAlertRow, alert_id) is None:
                s.add(self._row(self.now_ms(), alert_id, signature_hex, body, None, "invalid_payload", 422,
                                detail[:2000]))
                s.commit()
        return Verdict(422, "invalid_payload", detail, alert_id)

    def admit(self, body: bytes, signature_hex: str, alert: TradingViewAlert) -> Verdict:
        """Judge a signed, well-formed alert; stores the verdict (except a replay's) and returns it."""
        with self._lock:
            now = self.now_ms()
            self._prune(now)
            window_ms = round(self.settings.timestamp_window_s * 1000)
            alert_id = alert_id_for(signature_hex)
            seen = WebhookSignatureRow(signature=signature_hex, seen_ms=now, expires_ms=alert.time_ms + window_ms)
            skew = now - alert.time_ms
            if abs(skew) > window_ms:
                verdict = "stale" if skew > 0 else "future"
                detail = (f"{verdict} timestamp {iso(alert.time_ms)}: {abs(skew) / 1000:.0f} s "
                          f"{'before' if skew > 0 else 'after'} the receipt at {iso(now)}; the window is "
                          f"{self.settings.timestamp_window_s:g} s either way")
                self._write_once(seen, self._row(now, alert_id, signature_hex, body, alert, verdict, 401, detail))
                return Verdict(401, verdict, detail, alert_id)
            with self.store.session() as s:
                s.add(seen)
                try:
                    s.flush()
                except IntegrityError:
                    s.rollback()
                    return Verdict(409, "replay", "this signature was already received: a replayed request")
                v = self._judge(s, now, body, signature_hex, alert, alert_id)
                s.commit()
                return v

    # --- the rules --------------------------------------------------------------------------------

    def _judge(self, s: Session, now: int, body: bytes, sig: str, alert: TradingViewAlert,
               alert_id: str) -> Verdict:
        cfg = self.settings
        symbol = resolve_symbol(alert.symbol, self.allowed)

        def refuse(code: int, verdict: str, detail: str) -> Verdict:
            s.add(self._row(now, alert_id, sig, body, alert, verdict, code, detail, symbol=symbol))
            return Verdict(code, verdict, detail, alert_id, symbol=symbol)

        if symbol is None:
            return refuse(403, "forbidden_symbol", f"symbol {alert.symbol!r} is not allowed; allowed: "
                                                   f"{', '.join(self.allowed) or 'none'}")
        if alert.action == "exit":
            detail = ("exit alert recorded (and sent to Telegram when configured); it triggers no cycle and closes "
                      "nothing: open positions keep their stop, target and time stop")
            row = self._row(now, alert_id, sig, body, alert, "accepted", 202, detail, symbol=symbol, status="recorded")
            s.add(row)
            for extra in self.exit_rows(row):
                s.add(extra)
            return Verdict(202, "accepted", detail, alert_id, "recorded", symbol)
        if cfg.cooldown_s > 0:
            since = now - round(cfg.cooldown_s * 1000)
            last = s.exec(select(func.max(WebhookAlertRow.received_ms)).where(
                WebhookAlertRow.verdict == "accepted", WebhookAlertRow.action == "entry",
                WebhookAlertRow.symbol == symbol, WebhookAlertRow.strategy == alert.strategy,
                WebhookAlertRow.run == self.run, WebhookAlertRow.status != "paused",
                WebhookAlertRow.received_ms > since)).one()
            if last is not None:
                until = last + round(cfg.cooldown_s * 1000)
                return refuse(409, "cooldown", f"cooldown: strategy {alert.strategy!r} on {symbol} had an alert "
                                               f"accepted at {iso(last)}; the next is accepted from {iso(until)}")
        if self.paused():
            detail = f"run {self.run!r} is paused: alert recorded, no cycle (/resume to let cycles run)"
            s.add(self._row(now, alert_id, sig, body, alert, "accepted", 202, detail, symbol=symbol, status="paused"))
            return Verdict(202, "accepted", detail, alert_id, "paused", symbol)
        waiting = s.exec(select(func.count()).select_from(WebhookAlertRow).where(
            WebhookAlertRow.status.in_(WAITING), WebhookAlertRow.run == self.run)).one()
        if waiting >= cfg.max_pending:
            return refuse(503, "busy", f"{waiting} alerts are waiting for their cycles (limit {cfg.max_pending}); "
                                       "try again later")
        detail = f"accepted: a cycle for {symbol} is queued ({waiting} ahead of it)"
        s.add(self._row(now, alert_id, sig, body, alert, "accepted", 202, detail, symbol=symbol, status="queued"))
        return Verdict(202, "accepted", detail, alert_id, "queued", symbol)

    # --- rows -------------------------------------------------------------------------------------

    def _row(self, now: int, alert_id: str, sig: str, body: bytes, alert: TradingViewAlert | None, verdict: str,
             code: int, detail: str, *, symbol: str | None = None, status: str = "refused") -> WebhookAlertRow:
        return WebhookAlertRow(
            alert_id=alert_id, signature=sig, received_ms=now, body=body.decode("utf-8", "replace"),
            verdict=verdict, http_status=code, detail=detail, run=self.run, status=status, symbol=symbol,
            strategy=alert.strategy if alert else None, action=alert.action if alert else None,
            direction=alert.side if alert else None, symbol_sent=alert.symbol if alert else None,
            price=alert.price if alert else None, alert_ms=alert.time_ms if alert else None,
        )

    def _write_once(self, *rows: SQLModel) -> None:
        """Insert rows whose primary key is not there yet (a stale body sent twice is recorded once)."""
        with self.store.session() as s:
            for row in rows:
                key = row.signature if isinstance(row, WebhookSignatureRow) else row.alert_id
                if s.get(type(row), key) is None:
                    s.add(row)
            s.commit()

    def _prune(self, now: int) -> None:
        """Forget signatures whose timestamp has left the window: the timestamp check refuses them now."""
        if now - self._pruned_ms < PRUNE_EVERY_MS:
            return
        self._pruned_ms = now
        with self.store.session() as s:
            s.exec(delete(WebhookSignatureRow).where(WebhookSignatureRow.expires_ms < now))
            s.commit()


def pending_alerts(store: Store, run: str) -> list[WebhookAlertRow]:
    """Accepted alerts of the run still waiting for (or interrupted in) their cycle, oldest first."""
    with store.session() as s:
        return list(s.exec(select(WebhookAlertRow).where(WebhookAlertRow.status.in_(WAITING),
                                                         WebhookAlertRow.run == run)
                           .order_by(WebhookAlertRow.received_ms)).all())


def update_alert(store: Store, alert_id: str, **values: object) -> None:
    with store.session() as s:
        row = s.get(WebhookAlertRow, alert_id)
        if row is None:
            raise KeyError(f"no webhook alert {alert_id!r}")
        for k, v in values.items():
            setattr(row, k, v)
        s.add(row)
        s.commit()
