"""The one thread that runs `serve`'s cycles: alerts' and scheduled ones, one at a time, in arrival order.

Cycles of one run must never overlap (they share one broker account and breaker state, and
`run_cycle` orders them by decision time), so every cycle of the process goes through this one
queue. The HTTP handlers only queue an alert's id and answer 202; the store row of the alert
says where it is (`queued` -> `running` with its decision time -> `done` | `failed` | `paused`),
so that a restart resumes exactly: a `running` alert reruns at its recorded decision time (the
cycle resumes from the store, nothing is decided twice), a `queued` one runs if it is still
inside the timestamp window, and is marked `expired` otherwise.

The schedule (`--schedule`) is APScheduler's trigger from `agent.scheduler` (candle close plus a
delay, UTC-aligned); its job only queues a tick here. Ticks coalesce: one waiting tick is enough.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from datetime import UTC

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from agent.cycle import decision_id_for
from agent.store import Store
from agent.store.tables import WebhookAlertRow
from agent.webhook.cycles import CycleRefused, CycleRunner, Ran, RunPaused
from agent.webhook.intake import pending_alerts, update_alert
from theories.candles import iso

log = logging.getLogger(__name__)

Job = tuple[str, object]  # ("alert", alert id) | ("tick", fire ms)


class CycleWorker:
    """A queue and the thread that drains it (see the module docstring)."""

    def __init__(self, runner: CycleRunner, store: Store, *, window_s: float,
                 wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
                 say: Callable[[str], None] = log.info, cycle_lock: threading.Lock | None = None) -> None:
        self.runner, self.store, self.window_s, self.wall_ms, self.say = runner, store, window_s, wall_ms, say
        # held during each cycle: the Telegram service takes it to apply a person's answer to the broker
        self.cycle_lock = cycle_lock or threading.Lock()
        self._abandon = threading.Event()
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._scheduler: BackgroundScheduler | None = None
        self._busy = threading.Event()
        self._tick_waiting = threading.Event()
        self.last: Ran | None = None
        self.failures = 0

    # --- state for /health ------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Jobs waiting, plus the one running."""
        return self._queue.qsize() + (1 if self._busy.is_set() else 0)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # --- control ------------------------------------------------------------------------------------

    def start(self) -> int:
        """Queue the alerts a previous process left (module docstring), start the thread; returns how many."""
        resumed = 0
        window_ms = round(self.window_s * 1000)
        now = self.wall_ms()
        for row in pending_alerts(self.store, self.runner.run):
            if row.status == "queued" and now - row.received_ms > window_ms:
                update_alert(self.store, row.alert_id, status="expired", finished_ms=now,
                             detail=f"not run before the server stopped; received at {iso(row.received_ms)}, "
                                    f"older than the {self.window_s:g} s window now")
                continue
            self._queue.put(("alert", row.alert_id))
            resumed += 1
        self._thread = threading.Thread(target=self._loop, name="signal-agent-cycles", daemon=True)
        self._thread.start()
        return resumed

    def submit_alert(self, alert_id: str) -> None:
        self._queue.put(("alert", alert_id))

    def submit_tick(self, fire_ms: int) -> None:
        if self._tick_waiting.is_set():  # one waiting tick decides at the latest close anyway
            return
        self._tick_waiting.set()
        self._queue.put(("tick", fire_ms))

    def start_schedule(self, trigger: IntervalTrigger, *, run_first_now: bool = True,
                       misfire_grace_s: int = 3600) -> None:
        """Queue a tick at every fire of `trigger` (and one now, catching up after a restart)."""
        scheduler = BackgroundScheduler(timezone=UTC)
        scheduler.add_job(lambda: self.submit_tick(self.wall_ms()), trigger, coalesce=True, max_instances=1,
                          misfire_grace_time=misfire_grace_s, id="cycle")
        scheduler.start()
        self._scheduler = scheduler
        if run_first_now:
            self.submit_tick(self.wall_ms())

    def next_fire_ms(self) -> int | None:
        if self._scheduler is None:
            return None
        job = self._scheduler.get_job("cycle")
        return None if job is None or job.next_run_time is None else round(job.next_run_time.timestamp() * 1000)

    def stop(self, grace_s: float) -> bool:
        """Stop taking jobs; let the cycle in progress finish for up to `grace_s`. True when it did.

        Jobs still queued stay in the store as `queued` and are picked up by the next start. A
        cycle that does not finish in time is left to die with the process: its open decision
        rolls back (one transaction) and the next start resumes it at the same decision time.
        """
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None
        if self._thread is None:
            return True
        while True:  # drop what is waiting: alerts stay queued in the store
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._queue.put(None)
        deadline = time.monotonic() + grace_s
        while self._thread.is_alive() and time.monotonic() < deadline and not self._abandon.is_set():
            self._thread.join(0.1)
        return not self._thread.is_alive()

    def abandon(self) -> None:
        """Make a `stop` in progress return at once (a second signal): the cycle dies with the process."""
        self._abandon.set()

    # --- the thread ---------------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            self._busy.set()
            try:
                kind, value = job
                with self.cycle_lock:
                    self._run_job(kind, value)
            except Exception:  # a bad job must never end the service
                self.failures += 1
                log.exception("cycle job %s failed", job)
            finally:
                self._busy.clear()

    def _run_job(self, kind: str, value: object) -> None:
        if kind == "tick":
            self._tick_waiting.clear()
            self._tick(int(value))  # type: ignore[call-overload]
        else:
            self._alert(str(value))

    def _tick(self, fire_ms: int) -> None:
        try:
            ran = self.runner.scheduled(fire_ms)
        except CycleRefused as exc:
            self.say(f"scheduled cycle at {iso(fire_ms)} not run: {exc}")
            return
        except Exception as exc:
            self.failures += 1
            self.say(f"scheduled cycle at {iso(fire_ms)} failed: {type(exc).__name__}: {exc}")
            return
        self.last = ran
        self.say(f"scheduled cycle {ran.cycle_id}: {ran.outcome}")

    def _alert(self, alert_id: str) -> None:
        with self.store.session() as s:
            row = s.get(WebhookAlertRow, alert_id)
        if row is None or row.status not in ("queued", "running"):
            return

        def started(decision_ms: int) -> None:
            update_alert(self.store, alert_id, status="running", decision_ms=decision_ms)

        try:
            ran = self.runner.alert(row, started)
        except CycleRefused as exc:
            paused = isinstance(exc, RunPaused)
            update_alert(self.store, alert_id, status="paused" if paused else "failed", detail=str(exc)[:2000],
                         finished_ms=self.wall_ms())
            self.say(f"alert {alert_id} ({row.symbol}): no cycle: {exc}")
            return
        except Exception as exc:
            self.failures += 1
            update_alert(self.store, alert_id, status="failed", detail=f"{type(exc).__name__}: {exc}"[:2000],
                         finished_ms=self.wall_ms())
            log.exception("the cycle of alert %s failed", alert_id)
            return
        self.last = ran
        update_alert(self.store, alert_id, status="done", cycle_id=ran.cycle_id, decision_ms=ran.decision_ms,
                     decision_id=decision_id_for(ran.cycle_id, row.symbol or ""), outcome=ran.outcome,
                     finished_ms=ran.finished_ms,
                     detail=f"cycle {ran.cycle_id}: {row.symbol} {ran.outcome}")
        self.say(f"alert {alert_id}: cycle {ran.cycle_id}: {row.symbol} {ran.outcome}")
