"""The cycles `signal-agent serve` runs: one per accepted alert, and the scheduled ones with `--schedule`.

Both go through `agent.cycle.run_cycle` with the same settings, store, broker state and run as
`signal-agent cycle` / `run` (the deps are built as `agent.commands.cycle.execute` builds them);
an alert's cycle differs in two ways only: it decides the alert's symbol alone, and its snapshot
carries the alert as the `tradingview` theory (`agent.webhook.source`).

**Decision times and cycle ids.** A cycle id is `<run>@<decision time to the second>`, and
`run_cycle` refuses a decision time earlier than the run's latest. Scheduled cycles decide at a
candle close C (the data's last close at or before the fire, exactly as `run`). An alert's cycle
decides inside the bar that follows the data's last close C, strictly after C and after the
run's latest decision, in a whole second of its own (`alert_decision_ms`):

- at the alert's receipt time when that lies in the bar (live data), else at the first free
  second after C (data behind the wall clock, such as the bundled sample: `cycle` also decides
  at the data's last close);
- never in the second of C itself (its id would be the scheduled cycle's, which would then be
  read back instead of run) and never at or after the next close C + interval (the scheduled
  cycle of that close would be refused as earlier than the run's latest);
- with `--schedule`, when the scheduled cycle of C has not run yet (the alert came in the
  schedule's delay after the close), it runs first, on the same data: otherwise the alert's
  later decision time would make `run_cycle` refuse it when its tick came.
Every decision time is therefore after the run's latest, no two cycles share a second, and the
candles an alert's cycle sees are exactly the ones the scheduled cycle of C saw.

**Pause.** A paused run (`agent.alerts.control`, set by /pause) runs no new cycle of either kind.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlmodel import SQLModel

from agent.brokers.base import Broker
from agent.brokers.paper import PaperBroker
from agent.commands.cycle import last_close, synthesiser
from agent.config import Settings
from agent.cycle import (
    CycleDeps,
    CycleError,
    CycleResult,
    CycleSettings,
    DecisionEvent,
    FileMarketData,
    SnapshotSource,
    compute_snapshot,
    cycle_id_for,
    run_cycle,
)
from agent.llm.prompt import PromptError, PromptTemplate
from agent.llm.providers import make_provider
from agent.llm.records import CallRecords
from agent.market import parse_symbols
from agent.store import Store
from agent.store.tables import WebhookAlertRow
from agent.webhook.payload import TradingViewAlert
from agent.webhook.source import AlertSnapshotSource
from agent.webhook.theory import ExtraValue, TradingViewResult, tradingview_result
from risk import RiskGate
from theories.base import FitCache
from theories.candles import Candles, iso

log = logging.getLogger(__name__)


class CycleRefused(RuntimeError):
    """The cycle cannot run now (the message says why); nothing was decided."""


class RunPaused(CycleRefused):
    """The run is paused (/pause): no new cycle until /resume."""


def next_second(ms: int) -> int:
    """The start of the first whole second strictly after `ms` (a cycle id has whole seconds)."""
    return (ms // 1000 + 1) * 1000


def alert_decision_ms(received_ms: int, close_ms: int, interval_ms: int, latest_ms: int | None) -> int:
    """The decision time of an alert's cycle (rules in the module docstring), UTC epoch ms.

    `close_ms`: the data's last candle close; `latest_ms`: the run's latest decision time (None
    before its first). Raises CycleRefused when the run has already decided past this bar.
    """
    lo = next_second(max(close_ms, latest_ms if latest_ms is not None else close_ms))
    hi = close_ms + interval_ms - 1000
    if lo > hi:
        raise CycleRefused(f"the run has already decided at {iso(latest_ms or close_ms)}, past the bar after the "
                           f"data's last close {iso(close_ms)}: the alert's cycle would trade an account that moved on")
    return received_ms if lo <= received_ms <= hi else lo


@dataclass(frozen=True)
class Ran:
    """What the worker reports of one cycle."""

    kind: str  # "alert" | "scheduled"
    cycle_id: str
    decision_ms: int
    finished_ms: int
    outcome: str  # the alert's symbol's outcome, or "<symbol> <outcome>, ..." for a scheduled cycle


class CycleRunner:
    """Builds each cycle's deps as `signal-agent cycle` does, and runs alert and scheduled cycles of one run.

    `provider` / `prompt` / `data` / `symbols` are the command line's choices (None: the
    settings'). `broker`: a long-lived broker (live trading), else a paper broker per cycle whose
    memory is read back from the store. `decision_rows`: extra rows per decision (the Telegram
    outbox). `paused()`: whether the run is paused (checked before every cycle).
    """

    def __init__(self, settings: Settings, store: Store, *, run: str, provider: str | None = None,
                 prompt: str | None = None, data: str | None = None, symbols: Sequence[str] = (),
                 broker: Broker | None = None, schedule: bool = False,
                 decision_rows: Callable[[DecisionEvent], Sequence[SQLModel]] | None = None,
                 paused: Callable[[], bool] = lambda: False,
                 wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000) -> None:
        self.settings, self.store, self.run = settings, store, run
        self.broker, self.schedule, self.decision_rows = broker, schedule, decision_rows
        self.paused, self.wall_ms = paused, wall_ms
        self.data_path = data
        llm = settings.llm
        try:  # refused at start, not at the first alert
            self.provider = make_provider(provider or llm.provider, llm)
            self.template = PromptTemplate.load(prompt or llm.prompt)
            self.cycle_settings = CycleSettings.model_validate({**settings.cycle.model_dump(), "run": run})
        except (ValueError, PromptError) as exc:
            raise CycleRefused(str(exc)) from None
        probe = self.market_data()
        wanted = list(symbols) or list(self.cycle_settings.symbols)
        self.symbols: tuple[str, ...] = tuple(parse_symbols(wanted, probe.symbols()) if wanted else probe.symbols())
        self.fit_cache = FitCache()  # fits are keyed by their fit time: safe to share across cycles

    def market_data(self) -> FileMarketData:
        """A fresh source for each cycle: on the wall clock the files grow as candles close."""
        return FileMarketData(self.data_path)

    # --- one cycle ------------------------------------------------------------------------------

    def _deps(self, data: FileMarketData, symbols: Sequence[str], source: SnapshotSource) -> tuple[CycleDeps,
                                                                                                  CallRecords]:
        settings = self.settings
        # SIGNAL_AGENT_KILL_SWITCH can only switch trading off; sized with the fee the paper broker will charge
        risk = settings.risk.with_environment(os.environ).sized_with_fee(settings.paper.taker_fee)
        records = CallRecords(settings.records_path)
        synth = synthesiser(settings, self.provider, self.template, records, self.wall_ms())
        deps = CycleDeps(
            store=self.store, broker=self.broker or PaperBroker(settings.paper), synthesiser=synth,
            gate=RiskGate(risk), data=data, settings=self.cycle_settings.model_copy(update={"symbols": tuple(symbols)}),
            wall_ms=self.wall_ms, fit_cache=self.fit_cache, snapshot_source=source, decision_rows=self.decision_rows,
        )
        return deps, records

    def _run(self, decision_ms: int, data: FileMarketData, symbols: Sequence[str],
             source: SnapshotSource = compute_snapshot) -> CycleResult:
        deps, records = self._deps(data, symbols, source)
        try:
            return run_cycle(decision_ms, deps)
        except CycleError as exc:
            raise CycleRefused(str(exc)) from None
        finally:
            records.close()

    def _refuse_if_paused(self) -> None:
        if self.paused():
            raise RunPaused(f"run {self.run!r} is paused (/resume to let cycles run again)")

    def scheduled(self, fire_ms: int) -> Ran:
        """The scheduled cycle of the last close at or before `fire_ms` (as `signal-agent run` decides it)."""
        self._refuse_if_paused()
        data = self.market_data()
        close = last_close(data, list(self.symbols), fire_ms)
        if close is None:
            raise CycleRefused(f"no symbol has readable candles closed by {iso(fire_ms)}")
        result = self._run(close, data, self.symbols)
        outcomes = ", ".join(f"{r.symbol} {r.outcome}" for r in result.results)
        return Ran("scheduled", result.cycle_id, result.decision_ms, self.wall_ms(), outcomes)

    def alert(self, row: WebhookAlertRow, on_decision_time: Callable[[int], None] = lambda _ms: None) -> Ran:
        """The cycle of one accepted entry alert; `on_decision_time` is told the time before the cycle starts.

        A row that already has a decision time (its cycle was interrupted) resumes at that time.
        """
        if row.symbol is None or row.alert_ms is None or row.price is None:
            raise CycleRefused(f"alert {row.alert_id} is not a complete entry alert")
        data = self.market_data()
        probe = data.candles(row.symbol, 2**62)  # raises CandleDataError naming the file
        interval = probe.interval_ms
        decision_ms = row.decision_ms
        if decision_ms is None:
            self._refuse_if_paused()
            close = last_close(data, list(self.symbols), self.wall_ms())
            if close is None:
                raise CycleRefused("no symbol has readable candles")
            latest = self.store.last_decision_ms(self.run)
            if self.schedule and (latest is None or latest < close) and self.store.cycle(
                    cycle_id_for(self.run, close)) is None:
                ran = self.scheduled(close)  # the close's scheduled cycle first (module docstring)
                log.info("ran the scheduled cycle %s before alert %s", ran.cycle_id, row.alert_id)
                latest = self.store.last_decision_ms(self.run)
            decision_ms = alert_decision_ms(row.received_ms, close, interval, latest)
        on_decision_time(decision_ms)

        def attach(last_price: float, last_close_ms: int, interval_ms: int) -> TradingViewResult:
            return tradingview_result(
                alert_id=row.alert_id, strategy=row.strategy or "", action=row.action or "entry",
                direction=row.direction or "LONG", price=row.price, alert_time_ms=row.alert_ms,
                received_ms=row.received_ms, last_close=last_price, last_close_time_ms=last_close_ms,
                interval_ms=interval_ms, extras=_extras(row.body),
            )

        def context(symbol: str, at_ms: int) -> Candles:
            return data.candles(symbol, at_ms)

        source = AlertSnapshotSource(row.symbol, attach, universe=self.symbols, context=context)
        result = self._run(decision_ms, data, [row.symbol], source)
        mine = next((r for r in result.results if r.symbol == row.symbol), None)
        outcome = mine.outcome if mine is not None else "not decided"
        return Ran("alert", result.cycle_id, result.decision_ms, self.wall_ms(), outcome)


def _extras(body: str) -> dict[str, ExtraValue]:
    """The alert's extra fields, read back from its stored body (validated when it was accepted)."""
    return TradingViewAlert.model_validate_json(body).extras


__all__ = ["CycleRefused", "CycleRunner", "Ran", "RunPaused", "alert_decision_ms", "next_second"]
