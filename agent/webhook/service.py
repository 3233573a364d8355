"""The webhook assembled: settings and store in, the FastAPI app, its intake and its cycle worker out.

`signal-agent serve` builds one and serves its app with uvicorn; tests build one on a temporary
store and serve it on 127.0.0.1. Telegram (engineer T's `agent.alerts`) is optional: when it is
configured, decisions of triggered cycles put their alerts in its outbox, an exit alert becomes a
WARNING message, and the run's pause flag is honoured; without the package, none of that happens.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

from sqlalchemy import text
from sqlmodel import SQLModel

from agent.brokers.base import Broker
from agent.config import Settings
from agent.market import parse_symbols
from agent.store import Store
from agent.store.tables import WebhookAlertRow
from agent.webhook.app import Health, LastCycle, create_app
from agent.webhook.cycles import CycleRunner
from agent.webhook.intake import AlertIntake
from agent.webhook.worker import CycleWorker

log = logging.getLogger(__name__)


def _outbox(settings: Settings):
    """T's outbox module when Telegram is configured, else None."""
    tg = getattr(settings, "telegram", None)
    if tg is None or not getattr(tg, "configured", False):
        return None
    try:
        from agent.alerts import outbox
    except ImportError:  # pragma: no cover - the package ships with the product
        return None
    return outbox


def _pause_flag() -> Callable[[Store, str], bool]:
    """`agent.alerts.control.is_paused` (the flag /pause sets); never paused without the package."""
    try:
        from agent.alerts.control import is_paused
    except ImportError:  # pragma: no cover - the package ships with the product
        return lambda _store, _run: False
    return is_paused


def exit_notice(settings: Settings, row: WebhookAlertRow) -> list[SQLModel]:
    """The Telegram WARNING for an exit alert (none without Telegram): written with the alert's row."""
    outbox = _outbox(settings)
    if outbox is None:
        return []
    from agent.alerts.messages import Alert, level_text

    body = (f"TradingView strategy {row.strategy!r} says exit {row.direction} {row.symbol} at {row.price:g}. "
            "Nothing was closed: open positions keep their stop, target and time stop; act by hand if you agree.")
    alert = Alert(key=f"tradingview_exit:{row.alert_id}", level="WARNING", kind="warning",
                  text=level_text("WARNING", f"exit alert: {row.symbol}", body), silent=True)
    return [outbox.row_of(alert, row.run, row.received_ms)]


@dataclass
class WebhookService:
    settings: Settings
    store: Store
    run: str
    runner: CycleRunner
    intake: AlertIntake
    worker: CycleWorker
    allowed: tuple[str, ...]

    @classmethod
    def build(cls, settings: Settings, store: Store, *, run: str, provider: str | None = None,
              prompt: str | None = None, data: str | None = None, symbols: Sequence[str] = (),
              broker: Broker | None = None, schedule: bool = False, cycle_lock: threading.Lock | None = None,
              wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
              say: Callable[[str], None] = log.info) -> WebhookService:
        """Raises CycleRefused (bad provider or prompt) or KeyError (an allow-listed symbol not in the data)."""
        outbox, flag = _outbox(settings), _pause_flag()

        def paused() -> bool:
            return flag(store, run)

        decision_rows = partial(outbox.outbox_rows, settings=settings) if outbox is not None else None
        runner = CycleRunner(settings, store, run=run, provider=provider, prompt=prompt, data=data, symbols=symbols,
                             broker=broker, schedule=schedule, decision_rows=decision_rows, paused=paused,
                             wall_ms=wall_ms)
        cfg = settings.webhook
        allowed = tuple(parse_symbols(cfg.symbols, runner.market_data().symbols())) if cfg.symbols else runner.symbols
        intake = AlertIntake(store, cfg, allowed, run, now_ms=wall_ms, paused=paused,
                             exit_rows=partial(exit_notice, settings))
        worker = CycleWorker(runner, store, window_s=cfg.timestamp_window_s, wall_ms=wall_ms, say=say,
                             cycle_lock=cycle_lock)
        return cls(settings, store, run, runner, intake, worker, allowed)

    def app(self):
        secret = self.settings.webhook.secret
        if secret is None or not secret.get_secret_value():
            raise ValueError("WEBHOOK_SECRET is not set")
        return create_app(secret=secret, max_body_bytes=self.settings.webhook.max_body_bytes, intake=self.intake,
                          submit=self.worker.submit_alert, health=self.health)

    def health(self) -> Health:
        try:
            with self.store.session() as s:
                s.exec(text("SELECT 1"))
            store_ok = True
        except Exception as exc:  # the answer is the report: say it, do not raise
            log.warning("health: the store is unreachable: %s", exc)
            store_ok = False
        paused: bool | None = None
        if store_ok:
            try:
                paused = self.runner.paused()
            except Exception:  # an unreadable flag is reported as unknown
                paused = None
        last = self.worker.last
        return Health(
            status="ok" if store_ok and self.worker.alive else "degraded", run=self.run, store=store_ok,
            worker=self.worker.alive, paused=paused, queue=self.worker.pending, schedule=self.runner.schedule,
            next_scheduled_ms=self.worker.next_fire_ms(),
            last_cycle=LastCycle(kind=last.kind, cycle_id=last.cycle_id, decision_ms=last.decision_ms,
                                 finished_ms=last.finished_ms, outcome=last.outcome) if last else None,
            refused={},
        )
