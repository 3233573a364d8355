"""THE cycle: the one impure step that turns market data into recorded, gated, executed decisions.

For each symbol of the universe: candles closed at the decision time -> FeatureSnapshot ->
prompt -> provider -> Signal (agent.llm.synthesis) -> RiskGate (risk/) -> broker -> store. Live
cycles, paper trading and evals all call `run_cycle`; only the clock, the data source and the
broker differ, and all three are parameters.

Failure rules:
- a symbol whose candles are missing, invalid, stale or gapped is skipped with the reason
  recorded; a symbol whose analysis fails is recorded as an error; the others go on;
- each symbol's decision is one store transaction (snapshot, calls, signal, verdict, order,
  breaker events, the breaker state and the broker's memory), so a crash leaves all or nothing;
  the evals replay runs a whole cycle inside one `Store.batch` (each decision a savepoint in its
  transaction), so a crash there leaves nothing of the cycle, and the resumed replay redoes it;
- ids derive from the inputs (cycle: run + decision time; decision: cycle + symbol; client
  order id: from the decision id), so rerunning a cycle after a crash skips what was decided,
  redoes only the rest, and can never place an order twice.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import SQLModel

from agent.brokers.base import (
    AccountSnapshot,
    Broker,
    BrokerError,
    OrderIntent,
    OrderState,
    SyncReport,
    client_order_id,
)
from agent.cycle_settings import CycleSettings, DataPolicy
from agent.llm.prompt import OpenPosition as PromptPosition
from agent.llm.synthesis import Decision as LLMDecision
from agent.llm.synthesis import Same, Synthesiser
from agent.market.funding import SAMPLE_FUNDING_DIR, load_funding
from agent.market.loaders import SAMPLE_DIR, SUFFIXES, load_candle_file, symbol_from_path
from agent.signal import Signal
from agent.snapshot import FeatureSnapshot, build_snapshot
from agent.store.store import RowValues, Store, order_row
from agent.store.tables import (
    BreakerEventRow,
    CycleRow,
    DecisionCallRow,
    DecisionRow,
    GateDecisionRow,
    SignalRow,
    SnapshotRow,
)
from orderflow.book import OrderBook
from orderflow.features import market_order_cost
from risk.breakers import HOUR_MS, BreakerState
from risk.decision import Approved, Decision, Reason, Rejected
from risk.gate import RiskGate
from risk.inputs import (
    AccountState,
    BalanceChange,
    Instrument,
    OpenPosition,
    PriceSeries,
    RegimeView,
    RiskRequest,
    TradeProposal,
)
from risk.trading_day import ledger_in_force
from theories.base import FitCache
from theories.candles import CandleDataError, Candles, iso
from theories.funding import FundingDataError, FundingRates


class CycleError(RuntimeError):
    """The cycle cannot run as asked (the message says why); nothing was recorded."""


Outcome = Literal["skipped", "error", "hold", "rejected", "ordered", "order_failed"]


class MarketData(Protocol):
    """A data source: which symbols it has, their candles as of a time (closed by then), funding rates."""

    def symbols(self) -> list[str]: ...

    def candles(self, symbol: str, at_ms: int) -> Candles:
        """Candles of `symbol` closed by `at_ms`; raises CandleDataError (or OSError) naming the problem."""
        ...

    def funding_rates(self) -> Mapping[str, FundingRates]:
        """Perpetual funding settlements by symbol (the funding theory cuts them at the decision time)."""
        ...


class SnapshotSource(Protocol):
    """How a decision gets its FeatureSnapshot (default: `build_snapshot`, computed now).

    Evals pass one that reads theory results computed once and shared by every variant; the
    webhook passes one that adds a TradingView alert as one more theory. Whatever the source, it
    sees only `universe` as the data source returned it for the decision time.
    """

    def __call__(self, symbol: str, universe: Mapping[str, Candles], decision_ms: int, settings: CycleSettings, *,
                 outcomes: Sequence[float], funding: Mapping[str, FundingRates],
                 cache: FitCache | None) -> FeatureSnapshot: ...


def compute_snapshot(symbol: str, universe: Mapping[str, Candles], decision_ms: int, settings: CycleSettings, *,
                     outcomes: Sequence[float], funding: Mapping[str, FundingRates],
                     cache: FitCache | None) -> FeatureSnapshot:
    """The default snapshot source: every theory of the settings' set, computed now."""
    return build_snapshot(symbol, universe, decision_ms, settings.theories, window=settings.window, outcomes=outcomes,
                          cache=cache, leader=settings.leader, funding=funding)


class FileMarketData:
    """Candle files in a folder (default: the bundled sample), each read once; a bad file fails only its symbol.

    Funding rates come from `funding` (a folder of `time,rate` files), or with the bundled candles
    from the bundled funding sample; a funding folder that cannot be read leaves the funding
    theory to report that it has no data, it does not stop the cycle.
    """

    def __init__(self, path: str | Path | None = None, funding: str | Path | None = None) -> None:
        self._funding_path = funding if funding is not None else (SAMPLE_FUNDING_DIR if path is None else None)
        self._funding: dict[str, FundingRates] | None = None
        self.funding_error: str | None = None
        root = Path(path) if path is not None else SAMPLE_DIR
        if root.is_dir():
            files = sorted(p for p in root.iterdir() if p.is_file() and p.name.endswith(SUFFIXES))
        elif root.is_file():
            files = [root]
        else:
            raise CandleDataError(str(root), None, "no such file or folder")
        if not files:
            raise CandleDataError(str(root), None, "the folder holds no candle files")
        self.root = root
        self._files = {symbol_from_path(p): p for p in files}
        self._loaded: dict[str, Candles | Exception] = {}

    def symbols(self) -> list[str]:
        return list(self._files)

    def candles(self, symbol: str, at_ms: int) -> Candles:
        if symbol not in self._files:
            raise CandleDataError(str(self.root), None, f"no candle file for {symbol}")
        if symbol not in self._loaded:
            try:
                self._loaded[symbol] = load_candle_file(self._files[symbol], symbol=symbol)
            except (CandleDataError, OSError, ValueError) as exc:
                self._loaded[symbol] = exc
        got = self._loaded[symbol]
        if isinstance(got, Exception):
            raise got
        return got.closed_by(at_ms)

    def funding_rates(self) -> Mapping[str, FundingRates]:
        if self._funding is None:
            self._funding = {}
            if self._funding_path is not None:
                try:
                    self._funding = load_funding(self._funding_path)
                except (FundingDataError, OSError, ValueError) as exc:
                    self.funding_error = str(exc)
        return self._funding


@dataclass
class CycleDeps:
    """Everything impure the cycle uses, passed in: the same cycle serves live, paper and evals."""

    store: Store
    broker: Broker
    synthesiser: Synthesiser
    gate: RiskGate
    data: MarketData
    settings: CycleSettings = field(default_factory=CycleSettings)
    instruments: Mapping[str, Instrument] = field(default_factory=dict)
    wall_ms: Callable[[], int] = field(default=lambda: time.time_ns() // 1_000_000)
    timer: Callable[[], float] = time.perf_counter
    fit_cache: FitCache | None = field(default_factory=FitCache)
    books: Mapping[str, OrderBook] = field(default_factory=dict)  # live L2 books by symbol, when a stream runs
    snapshot_source: SnapshotSource = compute_snapshot
    # Extra rows written in each decided symbol's own transaction (e.g. an alert in the outbox), so
    # they exist exactly when the decision does: never lost to a crash, never written twice.
    decision_rows: Callable[[DecisionEvent], Sequence[SQLModel]] | None = None


class SymbolResult(BaseModel):
    """One symbol's decision as the command prints it."""

    model_config = ConfigDict(frozen=True)

    symbol: str
    decision_id: str
    outcome: Outcome
    reason: str = ""
    last_price: float | None = None
    regime: str | None = None
    highlights: str = ""
    direction: str | None = None
    confidence: float | None = None
    entry: float | None = None
    stop: float | None = None
    target: float | None = None
    gate: str | None = Field(default=None, description="approved | rejected")
    reasons: tuple[Reason, ...] = ()
    quantity: float | None = None
    notional: float | None = None
    client_order_id: str | None = None
    order_status: str | None = None
    resumed: bool = Field(default=False, description="Decided by an earlier attempt of this cycle (read back).")


class CycleResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    cycle_id: str
    run: str
    decision_ms: int
    attempt: int
    results: tuple[SymbolResult, ...]
    account: AccountSnapshot
    fills: int = Field(description="Fills the broker reported while catching up to the decision time.")
    closed_trades: int
    timings: dict[str, float] = Field(description="Seconds by stage: data, sync, snapshot, llm, gate, broker, store.")
    llm_seconds: float = Field(description="Wall time inside provider calls (part of 'llm').")
    store: str


class DecisionEvent(BaseModel):
    """One decided symbol, as `CycleDeps.decision_rows` sees it before the decision's transaction."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    result: SymbolResult
    signal: Signal
    verdict: Approved | Rejected
    snapshot: FeatureSnapshot
    account: AccountSnapshot
    interval_ms: int
    run: str


def cycle_id_for(run: str, decision_ms: int) -> str:
    return f"{run}@{iso(decision_ms)}"


def decision_id_for(cycle_id: str, symbol: str) -> str:
    return f"{cycle_id}/{symbol}"


def breaker_key(run: str) -> str:
    return f"breakers:{run}"


def broker_key(run: str) -> str:
    return f"broker:{run}"


def data_problem(candles: Candles, decision_ms: int, policy: DataPolicy, window: int) -> str | None:
    """Why these candles (closed by the decision time) are not fit to decide on, or None."""
    if len(candles) < policy.min_candles:
        return f"only {len(candles)} candles closed by {iso(decision_ms)}, {policy.min_candles} needed"
    stale = (decision_ms - candles.last_close_time) // candles.interval_ms
    if stale > policy.max_stale_bars:
        return (f"stale: the last candle closed at {iso(candles.last_close_time)}, "
                f"{stale} bars before the decision time {iso(decision_ms)}")
    # Candle times strictly increase on the interval's grid (`Candles` validates both), so counts of
    # candles are binary searches and the missing candles of a span are its grid length minus the
    # candles in it: the same numbers as comparing every time or summing `gaps()`, without a pass
    # over the whole history on every decision of a replay.
    times, step = candles.time, candles.interval_ms
    closed = int(np.searchsorted(times, decision_ms - step, side="right"))  # len(candles.closed_by(decision_ms))
    aligned = decision_ms - decision_ms % step  # the last grid close at or before the decision
    first_recent = aligned - policy.recent_bars * step
    present_recent = closed - int(np.searchsorted(times[:closed], first_recent, side="left"))
    missing_recent = policy.recent_bars - present_recent
    if missing_recent > policy.max_missing_recent:
        return f"gapped: {missing_recent} of the last {policy.recent_bars} candles are missing"
    n = max(min(window, len(candles)), 0)  # len(candles.tail(window))
    missing = (int(times[-1]) - int(times[-n])) // step - (n - 1) if n else 0
    if missing > policy.max_missing_window * n:
        return f"gapped: {missing} candles missing in the {n}-candle window"
    return None


def regime_view(snapshot: FeatureSnapshot) -> RegimeView | None:
    """The gate's view of the regime: the regime theory's name, and for a breakout which way it left."""
    result = snapshot.theories.get("regime")
    name = getattr(result, "regime", None)
    if name is None:
        return None
    side = {"up": "LONG", "down": "SHORT"}.get(getattr(result, "breakout_direction", None) or "")
    return RegimeView(name=name, breakout_direction=side)


HIGHLIGHTS = ("regime", "kalman", "montecarlo")


def highlights(snapshot: FeatureSnapshot) -> str:
    """What a trader reads first: the regime, the trend filter, the bracket's odds (each theory's own summary)."""
    parts = [snapshot.theory_line(name) for name in HIGHLIGHTS if name in snapshot.theories]
    if snapshot.errors:
        parts.append(f"unavailable: {', '.join(sorted(snapshot.errors))}")
    return " | ".join(parts)


# The lockstep variants of an evals replay decide on the same shared objects at a (symbol, time): the
# same Candles cut and, for the same outcomes shown, the same snapshot. What the cycle derives from them
# alone is derived once, for the few objects of the current time (matched by identity and held by the
# key, as in `agent.llm.synthesis`); a live cycle's objects are new each time, and simply miss.

@functools.lru_cache(maxsize=64)
def _data_problem(candles: Same, decision_ms: int, policy: DataPolicy, window: int) -> str | None:
    return data_problem(candles.obj, decision_ms, policy, window)


@functools.lru_cache(maxsize=64)
def _snapshot_view(snapshot: Same) -> tuple[RegimeView | None, str]:
    """`regime_view` and `highlights` of one snapshot."""
    return regime_view(snapshot.obj), highlights(snapshot.obj)


def record_answer(store: Store, run: str, broker: Broker, report: SyncReport, now_ms: int) -> None:
    """Store what a broker did outside a cycle (a person's answer to the manual broker), in one transaction.

    The rows are filed under the cycle of the order they concern, with the broker's memory after it.
    """
    coids = {o.client_order_id for o in report.orders} | {f.client_order_id for f in report.fills}
    coids |= {t.client_order_id for t in report.closed}
    if not coids:
        return
    order = broker.order(sorted(coids)[0])
    if order is None:
        raise BrokerError(f"the broker does not know order {sorted(coids)[0]}")
    marks = {p.symbol: p.mark for p in broker.positions()}
    store.record_sync(order.intent.cycle_id, run, now_ms, report.fills, report.closed, report.orders,
                      broker.positions(), broker.account(now_ms, marks), {broker_key(run): broker.export_state()},
                      report.mismatches)


class _BrokerView:
    """What a cycle's decisions read of the broker, read once and kept until the broker moves.

    Between its sync and its end, a cycle changes the broker only through its own `submit`
    calls: the account, the open positions and orders, the ledger in force and the exported
    memory read for one symbol hold for the next one, until an order is submitted (`moved`).
    Reading them once per cycle instead of once per symbol matters on a long replay, where the
    ledger and the order book grow with every trade and each read copies or scans them whole.
    The values are shared by the cycle's decisions: read them, never change them.
    """

    def __init__(self, broker: Broker, decision_ms: int, marks: Mapping[str, float], timezone: str) -> None:
        self.broker, self.decision_ms, self.marks, self.timezone = broker, decision_ms, marks, timezone
        self.moved()

    def moved(self) -> None:
        """The broker may have changed (an order was submitted): read everything again when asked."""
        self._account: AccountSnapshot | None = None
        self._positions: tuple | None = None
        self._exposure: tuple[tuple[OpenPosition, ...], float] | None = None
        self._account_state: AccountState | None = None
        self._state: dict | None = None

    @property
    def account(self) -> AccountSnapshot:
        if self._account is None:
            self._account = self.broker.account(self.decision_ms, self.marks)
        return self._account

    @property
    def positions(self) -> tuple:
        if self._positions is None:
            self._positions = self.broker.positions()
        return self._positions

    @property
    def exposure(self) -> tuple[tuple[OpenPosition, ...], float]:
        """`open_exposure` of the broker at the cycle's marks."""
        if self._exposure is None:
            self._exposure = open_exposure(self.broker, self.marks)
        return self._exposure

    @property
    def account_state(self) -> AccountState:
        """The gate's view of the account: the cash the working LONG orders will take is not free."""
        if self._account_state is None:
            a = self.account
            self._account_state = AccountState(
                initial_balance=a.initial_balance, balance=a.balance, equity=a.equity,
                cash=a.cash - self.exposure[1], ledger=tuple(
                    BalanceChange(time_ms=ms, balance=b)  # the part the gate reads: the ledger grows all replay long
                    for ms, b in ledger_in_force(self.broker.ledger(), self.decision_ms, self.timezone)),
            )
        return self._account_state

    @property
    def state(self) -> dict:
        """The broker's memory as stored with a decision (`Broker.export_state`)."""
        if self._state is None:
            self._state = self.broker.export_state()
        return self._state


class _Stopwatch:
    def __init__(self, timer: Callable[[], float]) -> None:
        self.timer = timer
        self.seconds: dict[str, float] = dict.fromkeys(
            ("data", "sync", "snapshot", "llm", "gate", "broker", "store"), 0.0)

    def add(self, stage: str, start: float) -> float:
        now = self.timer()
        self.seconds[stage] += now - start
        return now


def run_cycle(decision_ms: int, deps: CycleDeps) -> CycleResult:
    """One cycle at `decision_ms` (UTC epoch ms): only candles closed by then are used.

    Rerunning a cycle (same run, same decision time) resumes it: decided symbols are read back,
    the rest are decided. Store errors propagate (nothing can be recorded); everything else about
    one symbol is recorded as that symbol's outcome.
    """
    cfg, store, broker = deps.settings, deps.store, deps.broker
    watch = _Stopwatch(deps.timer)
    t = deps.timer()
    cycle_id = cycle_id_for(cfg.run, decision_ms)
    provider = deps.synthesiser.provider
    symbols = list(cfg.symbols) or deps.data.symbols()
    existing = store.cycle(cycle_id)
    if existing is None:
        latest = store.last_decision_ms(cfg.run)
        if latest is not None and latest > decision_ms:
            raise CycleError(f"run {cfg.run!r} has already decided at {iso(latest)}; a cycle at {iso(decision_ms)} "
                             "would trade an account that has moved past it (use another run name)")
    elif existing.status == "completed":  # read back, write nothing
        saved = store.state(broker_key(cfg.run))
        if saved is not None:
            broker.load_state(saved)
        results = tuple(_read_back(store, decision_id_for(cycle_id, s), s) for s in json.loads(existing.symbols_json)
                        if s in store.decided_symbols(cycle_id))
        return CycleResult(
            cycle_id=cycle_id, run=cfg.run, decision_ms=decision_ms, attempt=existing.attempts, results=results,
            account=broker.account(decision_ms), fills=0, closed_trades=0, timings=watch.seconds, llm_seconds=0.0,
            store=store.display_url,
        )
    cycle = store.start_cycle(CycleRow(
        cycle_id=cycle_id, run=cfg.run, decision_ms=decision_ms, started_ms=deps.wall_ms(), status="running",
        broker=broker.name, provider=f"{provider.name}:{provider.model}", symbols_json=json.dumps(symbols),
    ))
    saved = store.state(broker_key(cfg.run))
    if saved is not None:
        broker.load_state(saved)
    breakers_saved = store.state(breaker_key(cfg.run))
    breakers = BreakerState.model_validate(breakers_saved) if breakers_saved else BreakerState()
    t = watch.add("store", t)

    universe: dict[str, Candles] = {}
    load_errors: dict[str, str] = {}
    funding_rates = getattr(deps.data, "funding_rates", None)
    funding = funding_rates() if funding_rates is not None else {}
    for symbol in symbols:
        try:
            universe[symbol] = deps.data.candles(symbol, decision_ms)
        except (CandleDataError, OSError, ValueError) as exc:
            load_errors[symbol] = f"invalid data: {exc}"
    t = watch.add("data", t)

    report = broker.sync(decision_ms, universe)
    marks = {s: float(c.close[-1]) for s, c in universe.items() if len(c)}
    view = _BrokerView(broker, decision_ms, marks, deps.gate.config.ftmo.timezone)
    t = watch.add("sync", t)
    store.record_sync(cycle_id, cfg.run, decision_ms, report.fills, report.closed, report.orders,
                      view.positions, view.account, {broker_key(cfg.run): view.state}, report.mismatches)
    t = watch.add("store", t)

    decided = store.decided_symbols(cycle_id)
    results: list[SymbolResult] = []
    llm_seconds = 0.0
    for symbol in symbols:
        decision_id = decision_id_for(cycle_id, symbol)
        if symbol in decided:
            results.append(_read_back(store, decision_id, symbol))
            continue
        problem = load_errors.get(symbol)
        if problem is None:
            problem = _data_problem(Same(universe[symbol]), decision_ms, cfg.data, cfg.window)
        if problem is not None:
            row = _decision_values(decision_id, cycle_id, symbol, decision_ms, deps.wall_ms(), "skipped", problem)
            t = deps.timer()
            store.record_decision([RowValues(DecisionRow, row)], {}, cycle_id, decision_ms)
            watch.add("store", t)
            results.append(SymbolResult(symbol=symbol, decision_id=decision_id, outcome="skipped", reason=problem))
            continue
        result, breakers, spent = _decide(symbol, decision_id, cycle_id, decision_ms, universe, view, funding,
                                          breakers, deps, watch)
        llm_seconds += spent
        results.append(result)

    t = deps.timer()
    account = view.account
    store.finish_cycle(cycle_id, deps.wall_ms(), account)
    watch.add("store", t)
    return CycleResult(
        cycle_id=cycle_id, run=cfg.run, decision_ms=decision_ms, attempt=cycle.attempts, results=tuple(results),
        account=account, fills=len(report.fills), closed_trades=len(report.closed), timings=watch.seconds,
        llm_seconds=llm_seconds, store=store.display_url,
    )


def _decide(
    symbol: str, decision_id: str, cycle_id: str, decision_ms: int, universe: Mapping[str, Candles],
    view: _BrokerView, funding: Mapping[str, FundingRates], breakers: BreakerState, deps: CycleDeps,
    watch: _Stopwatch,
) -> tuple[SymbolResult, BreakerState, float]:
    """One symbol, recorded in one transaction. Returns its result, the breaker state after it, LLM seconds.

    `view` is the cycle's reading of the broker (at the universe's last closes), renewed when an order is placed.
    """
    cfg, store, broker, synth = deps.settings, deps.store, deps.broker, deps.synthesiser
    now = deps.wall_ms
    # the DecisionRow's values, filled in as the decision goes (plain values: see `RowValues`)
    base = _decision_values(decision_id, cycle_id, symbol, decision_ms, now(), "error", "")
    t = deps.timer()
    try:
        outcomes = store.recent_outcomes(symbol, cfg.outcomes_shown) if cfg.outcomes_shown else []
        snapshot = deps.snapshot_source(symbol, universe, decision_ms, cfg, outcomes=outcomes, funding=funding,
                                        cache=deps.fit_cache)
    except Exception as exc:  # an analysis defect costs this symbol its decision, never the cycle
        watch.add("snapshot", t)
        base["reason"] = f"snapshot failed: {type(exc).__name__}: {exc}"
        store.record_decision([RowValues(DecisionRow, base)], {}, cycle_id, decision_ms)
        return (SymbolResult(symbol=symbol, decision_id=decision_id, outcome="error", reason=base["reason"]),
                breakers, 0.0)
    t = watch.add("snapshot", t)

    candles = universe[symbol]
    regime, shown = _snapshot_view(Same(snapshot))
    base["regime"] = regime.name if regime else None
    prompt_positions = [PromptPosition(symbol=p.symbol, direction=p.side, entry=p.entry, stop=p.stop, target=p.target)
                        for p in view.positions if p.symbol == symbol]
    llm: LLMDecision = synth.decide(snapshot, prompt_positions, outcomes)
    llm_seconds = sum(c.latency_ms for c in llm.calls) / 1000
    t = watch.add("llm", t)
    signal = llm.signal
    base["variant"] = f"{synth.provider.name}:{synth.provider.model}:{llm.prompt.variant}"

    account = view.account
    exposure = view.exposure[0]
    request = RiskRequest(
        now_ms=decision_ms,
        proposal=proposal_of(signal),
        account=view.account_state,
        positions=exposure,
        recent_signal_ms=tuple(store.signal_times(cfg.run, decision_ms - HOUR_MS, decision_ms)),
        breakers=breakers,
        history=store.trade_history(base["variant"], symbol, base["regime"]),
        regime=regime,
        prices=_price_series(symbol, signal.direction, exposure, universe, deps.gate),
        instrument=deps.instruments.get(symbol, Instrument()),
    )
    verdict: Decision = deps.gate.evaluate(request)
    t = watch.add("gate", t)

    order: OrderState | None = None
    rows: list[SQLModel | RowValues] = []
    if isinstance(verdict, Approved):
        intent = _intent(signal, verdict, decision_id, cycle_id, decision_ms, candles.interval_ms, cfg,
                         book_slippage(deps.books.get(symbol), verdict.direction, verdict.quantity))
        try:
            view.moved()  # whatever the answer, the broker may have changed
            order = broker.submit(intent, decision_ms)
            outcome, reason = "ordered", f"{order.status}: {verdict.quantity:g} {symbol.split('/')[0]}"
            rows.append(order_row(order, broker.name))
        except (BrokerError, ValueError) as exc:
            outcome, reason = "order_failed", f"{type(exc).__name__}: {exc}"
    elif signal.direction == "HOLD":
        outcome, reason = "hold", llm.hold_reason or signal.reasoning[:300]
    else:
        outcome, reason = "rejected", ", ".join(r.code for r in verdict.reasons)
    base["outcome"], base["reason"] = outcome, reason
    t = watch.add("broker", t)

    approved = isinstance(verdict, Approved)
    result = SymbolResult(
        symbol=symbol, decision_id=decision_id, outcome=outcome, reason=reason,
        last_price=snapshot.last_price, regime=base["regime"], highlights=shown,
        direction=signal.direction, confidence=signal.confidence, entry=signal.entry, stop=signal.stop,
        target=signal.target, gate=verdict.status, reasons=verdict.reasons,
        quantity=verdict.quantity if approved else None, notional=verdict.notional if approved else None,
        client_order_id=order.client_order_id if order else None, order_status=order.status if order else None,
    )
    rows = [RowValues(DecisionRow, base), *_decision_rows(decision_id, cycle_id, snapshot, llm, verdict, request),
            *rows]
    rows += [RowValues(BreakerEventRow, {"cycle_id": cycle_id, "decision_id": decision_id, **e.model_dump()})
             for e in verdict.events]
    if deps.decision_rows is not None:
        rows += deps.decision_rows(DecisionEvent(result=result, signal=signal, verdict=verdict, snapshot=snapshot,
                                                 account=account, interval_ms=candles.interval_ms, run=cfg.run))
    store.record_decision(rows, {breaker_key(cfg.run): verdict.breakers.model_dump(mode="json"),
                                 broker_key(cfg.run): view.state}, cycle_id, decision_ms)
    watch.add("store", t)
    return result, verdict.breakers, llm_seconds


def proposal_of(signal: Signal) -> TradeProposal:
    """The gate's view of a signal: its fields but the reasoning, validated as a `TradeProposal`.

    The fields are passed as they are (no dump of the signal into a dict first, on every decision of
    a replay): the same values as `TradeProposal.model_validate(signal.model_dump(exclude={"reasoning"}))`.
    """
    return TradeProposal(
        symbol=signal.symbol, direction=signal.direction, confidence=signal.confidence, entry=signal.entry,
        stop=signal.stop, target=signal.target, horizon_hours=signal.horizon_hours, theories=signal.theories)


WORKING = ("pending", "open", "partially_filled", "awaiting_person")


def open_exposure(broker: Broker, marks: Mapping[str, float]) -> tuple[tuple[OpenPosition, ...], float]:
    """What the gate must count as open: the positions, and the orders that may still fill.

    An order approved earlier in this cycle (or still resting) has no position yet, but counting
    it is what keeps two approvals in one cycle from breaking the position and exposure limits.
    Returns the positions as the gate sees them, and the cash the working LONG orders will take.
    """
    out = [OpenPosition(symbol=p.symbol, direction=p.side, quantity=p.quantity, entry=p.entry,
                        mark=marks.get(p.symbol, p.mark), opened_ms=p.opened_ms) for p in broker.positions()]
    cash = 0.0
    for o in broker.orders():
        if o.status in WORKING:
            i = o.intent
            left = i.quantity - o.filled_quantity
            price = i.limit_price or i.entry_reference
            out.append(OpenPosition(symbol=i.symbol, direction=i.side, quantity=left, entry=price,
                                    mark=marks.get(i.symbol, price), opened_ms=i.created_ms))
            if i.side == "LONG":
                cash += left * price
    return tuple(out), cash


def _price_series(symbol: str, direction: str, positions: Sequence, universe: Mapping[str, Candles],
                  gate: RiskGate) -> dict:
    """The close series the gate's correlation rule may read: the proposal's and the open positions' symbols.

    None when the proposal is HOLD or nothing is open: the rule compares a trade with open positions
    only, so the series would never be read, yet they are most of a stored request (a month of hourly
    closes, ~16 KB of its ~17 KB as JSON, on every decision of a year's replay).
    """
    if direction == "HOLD" or not positions:
        return {}
    bars = int(gate.config.correlation.window_days * 24) + 1
    wanted = {symbol, *(p.symbol for p in positions)}
    # sorted: a set's order follows the per-process string hash, and the request is stored as JSON
    # (a replay in another process must write the same bytes)
    return {s: PriceSeries.from_candles(universe[s].tail(bars)) for s in sorted(wanted)
            if s in universe and len(universe[s])}


def book_slippage(book: OrderBook | None, side: str, quantity: float) -> float | None:
    """Expected slippage of a market order of `quantity`, from walking the live book; None without one.

    The fraction is the average fill's distance from the mid (half the spread plus the depth walked),
    the same measure the paper broker applies to the bar's open. When the visible book cannot fill
    the whole order, the distance of its last level from the mid is used: a floor, since the rest
    would fill further away. A crossed book is never read (it must be resynced first).
    """
    if book is None or book.is_crossed():
        return None
    cost = market_order_cost(book, quantity, buy=side == "LONG")
    if cost is None or cost.filled <= 0:
        return None
    return cost.cost_vs_mid if cost.complete else max(cost.cost_vs_mid, cost.impact)


def _intent(signal, verdict: Approved, decision_id: str, cycle_id: str, decision_ms: int, interval_ms: int,
            cfg: CycleSettings, slippage: float | None = None) -> OrderIntent:
    limit = cfg.entry_order == "limit"
    return OrderIntent(
        decision_id=decision_id, cycle_id=cycle_id, client_order_id=client_order_id(decision_id),
        symbol=signal.symbol, side=verdict.direction, quantity=verdict.quantity, order_type=cfg.entry_order,
        limit_price=signal.entry if limit else None, stop=signal.stop, target=signal.target,
        entry_reference=signal.entry, created_ms=decision_ms,
        time_stop_ms=decision_ms + round(signal.horizon_hours * HOUR_MS),
        valid_until_ms=decision_ms + cfg.limit_valid_bars * interval_ms if limit else None,
        slippage=None if limit else slippage,
    )


def _decision_values(decision_id: str, cycle_id: str, symbol: str, decision_ms: int, created_ms: int, outcome: str,
                     reason: str) -> dict:
    """A DecisionRow's columns, with no regime or variant yet."""
    return {"decision_id": decision_id, "cycle_id": cycle_id, "symbol": symbol, "decision_ms": decision_ms,
            "outcome": outcome, "reason": reason, "regime": None, "variant": "", "created_ms": created_ms}


def _decision_rows(decision_id: str, cycle_id: str, snapshot: FeatureSnapshot, llm: LLMDecision, verdict: Decision,
                   request: RiskRequest) -> list[RowValues]:
    s = llm.signal
    # the snapshot's text is the one the prompt rendered, unless the prompt showed an anonymised copy
    prompt_text = snapshot.to_prompt_text() if llm.prompt.anonymised else llm.prompt.snapshot_text
    rows = [RowValues(SnapshotRow, {
        "decision_id": decision_id, "cycle_id": cycle_id, "symbol": snapshot.symbol, "time_ms": snapshot.time,
        "last_price": snapshot.last_price, "snapshot_json": snapshot.model_dump_json(), "prompt_text": prompt_text,
    })]
    rows += [RowValues(DecisionCallRow, {"decision_id": decision_id, "cycle_id": cycle_id, **c.model_dump()})
             for c in llm.calls]
    rows.append(RowValues(SignalRow, {
        "decision_id": decision_id, "cycle_id": cycle_id, "symbol": s.symbol, "direction": s.direction,
        "confidence": s.confidence, "entry": s.entry, "stop": s.stop, "target": s.target,
        "horizon_hours": s.horizon_hours, "reasoning": s.reasoning, "theories_json": json.dumps(list(s.theories)),
        "hold_reason": llm.hold_reason, "prompt_variant": llm.prompt.variant, "prompt_version": llm.prompt.version,
        "prompt_hash": llm.prompt.sha256, "llm_used": llm.llm_used,
    }))
    approved = isinstance(verdict, Approved)
    rows.append(RowValues(GateDecisionRow, {
        "decision_id": decision_id, "cycle_id": cycle_id, "symbol": s.symbol, "status": verdict.status,
        "quantity": verdict.quantity if approved else None,
        "risk_amount": verdict.risk_amount if approved else None,
        "notional": verdict.notional if approved else None,
        "win_probability": verdict.win_probability if approved else None,
        "reward_risk": verdict.reward_risk if approved else None,
        "kelly_fraction": verdict.kelly_fraction if approved else None,
        "codes": ",".join(r.code for r in verdict.reasons),
        "reasons_json": _reasons_json(tuple(map(Same, verdict.reasons))),
        "request_json": request.model_dump_json(),
    }))
    return rows


@functools.lru_cache(maxsize=32)
def _reasons_json(reasons: tuple[Same, ...]) -> str:
    """The reasons as stored. Reasons are frozen, and the gate answers every HOLD with the same one:
    its JSON is made once, not on every decision of a replay (other reasons are new objects, and miss)."""
    return json.dumps([r.obj.model_dump(mode="json") for r in reasons])


def _read_back(store: Store, decision_id: str, symbol: str) -> SymbolResult:
    """A decision an earlier attempt of this cycle recorded."""
    d = store.rows(DecisionRow, decision_id=decision_id)[0]
    sig = store.signal_of(decision_id)
    gate = store.rows(GateDecisionRow, decision_id=decision_id)
    g = gate[0] if gate else None
    reasons = tuple(Reason.model_validate(r) for r in json.loads(g.reasons_json)) if g else ()
    return SymbolResult(
        symbol=symbol, decision_id=decision_id, outcome=d.outcome, reason=d.reason, regime=d.regime,
        direction=sig.direction if sig else None, confidence=sig.confidence if sig else None,
        entry=sig.entry if sig else None, stop=sig.stop if sig else None, target=sig.target if sig else None,
        gate=g.status if g else None, reasons=reasons, quantity=g.quantity if g else None,
        notional=g.notional if g else None, resumed=True,
        client_order_id=client_order_id(decision_id) if d.outcome == "ordered" else None,
    )


__all__ = [
    "CycleDeps", "CycleError", "CycleResult", "CycleSettings", "DataPolicy", "DecisionEvent", "FileMarketData",
    "MarketData", "SnapshotSource", "SymbolResult", "compute_snapshot", "cycle_id_for", "data_problem",
    "decision_id_for", "record_answer", "run_cycle",
]
