"""The evals replay engine: walk history forward through THE cycle, once per variant, resumably and in parallel.

`run_evals(config_path, runs_dir)` reads a variants file (evals.variants), creates or resumes
the run folder (layout: contracts section 2) and runs four phases:

1. Features: every decidable (symbol, decision time) of every theory set the variants use is
   analysed once (evals.features) in worker processes, in blocks of time that cover every
   symbol, time by time: the universe's candles are cut once per time and the universe-wide
   part of `context` is computed once per time, for all symbols. A block is a whole number of
   every refit period of the set, aligned as the fits are, so each scheduled model fit is made
   once and reused until its refit time. The results go to
   the machine's shared features cache (`[evals] features_cache`, default
   `<data_dir>/evals/features.sqlite`), keyed by the theory set, the code and the data files'
   hashes, so a later run over the same history reads them instead (the manifest's `features`
   says how many came from it and how many this run computed). A run whose data is not plain
   candle files (`data_factory`), runs without the guard, or has the cache turned off keeps
   its own `features.sqlite` in its folder.
2. Cost: an LLM variant that may spend money shows its estimated cost (tokens x the configured
   price) and needs confirmation (`yes=True` skips it); the configured budget applies to every
   call as in live cycles.
3. Replay: each variant walks the decision times through `agent.cycle.run_cycle` (the same
   code as live cycles) with a data source that only hands over candles closed by the decision
   time (evals.lookahead.GuardedMarketData), the paper broker filling on later candles, and its
   own store (`variants/<name>/store.sqlite`, run = the variant's name). The variants are split
   over the worker processes (`lockstep_groups`), and a worker steps its group through the
   decision times in lockstep (`replay_variants`): every variant's cycle at t runs before any
   moves on, so what is the same for every variant at (symbol, t) is done once (the candle cut,
   the cached snapshot's read and parse, its prompt text and JSON); a variant's cycles are
   sequential (one account). LLM calls go through the
   run's call records (`calls.sqlite`): an identical request is answered from them at no cost,
   and the number of calls in flight across processes is bounded.
4. Baselines and audit: buy-and-hold curves (`baselines/<name>.json`, evals.baselines) and the
   lookahead audit (evals.lookahead), whose verdict goes into the manifest. With worker processes
   both run in the main process during phase 3, and phase 4 waits for them.

Resuming: cycles completed in a variant's store are skipped without being touched; the store is
written in transactions of whole cycles (`Store.batch`: one cycle for a model variant, up to
`RULE_CYCLES_PER_COMMIT` for a rule variant), so a cycle interrupted half way left nothing and is
redone whole, with the uncommitted cycles before it (a half cycle in a store written otherwise is
resumed by `run_cycle` itself: deterministic ids, nothing is decided or ordered twice); features
already cached are not recomputed. The
manifest (`manifest.json`) tracks progress and is rewritten atomically. A SIGTERM (or Ctrl-C) ends
the run as `interrupted`; the worker processes end with the run's process however it ends, even
killed (`_exit_with_the_run`), so nothing writes on behind it.

Determinism: inside a replay the store's wall-clock columns hold the simulated decision time,
so two runs of the same file on the same call records write byte-identical stores.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import multiprocessing
import os
import platform
import queue as queue_mod
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from threadpoolctl import threadpool_limits

from agent.brokers.paper import PaperBroker, PaperSettings
from agent.config import ConfigError, Settings, load_settings
from agent.cycle import CycleDeps, CycleSettings, FileMarketData, compute_snapshot, run_cycle
from agent.llm.budget import CostBudget, utc_day_start
from agent.llm.prompt import PromptError, PromptTemplate, render
from agent.llm.providers import make_provider, max_output_tokens
from agent.llm.records import CallRecords
from agent.llm.synthesis import ReplayMissError, Synthesiser
from agent.market import parse_symbols
from agent.snapshot import FeatureSnapshot
from agent.store import Store
from agent.store.tables import CycleRow
from evals.features import (
    OUTCOME_THEORIES,
    UNIDENTIFIED,
    CachedSnapshotSource,
    FeatureCache,
    FeatureCacheError,
    cache_key,
    code_fingerprint,
    compute_features,
    data_fingerprint,
    decidable,
    resolve_features_cache,
    set_fingerprint,
    time_blocks,
)
from evals.lookahead import GuardedMarketData, _differences, audit_prefix_invariance, merge_guard
from evals.variants import (
    BaselineCurveSpec,
    BaselineManifest,
    DataFile,
    EvalConfig,
    EvalManifest,
    LookaheadAudit,
    VariantManifest,
    VariantsError,
    VariantSpec,
    canonical,
    load_variants,
    sha256_text,
    with_baselines,
)
from risk import RiskGate

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
VARIANTS_COPY = "variants.toml"
FEATURES = "features.sqlite"
CALLS = "calls.sqlite"


class EvalsError(RuntimeError):
    """The run cannot go on as asked (the message says why)."""


class CostNotConfirmed(EvalsError):
    """A run that would spend money was not confirmed (pass yes=True, or answer the prompt)."""


# --- the plan every worker receives (picklable) ------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    run_dir: str
    config: EvalConfig
    universe: tuple[str, ...]
    times: tuple[int, ...]
    data_factory: Callable[[EvalConfig], Any] | None = None
    guard: bool = True
    features: str = ""  # the features cache file (shared, or the run's own); "": the run's own
    code: str = ""  # evals.features.code_fingerprint() of the process that made the plan
    data_fingerprint: str = UNIDENTIFIED

    @property
    def features_path(self) -> Path:
        return Path(self.features) if self.features else Path(self.run_dir) / FEATURES

    def cache_key(self, settings: CycleSettings) -> str:
        """The features cache entry of a theory set in this run."""
        return cache_key(settings, self.code or code_fingerprint(), self.data_fingerprint)


@dataclass
class VariantOutcome:
    name: str
    status: str
    cycles_done: int = 0
    decisions_done: int = 0
    seconds: float = 0.0
    reused: int = 0
    misses: int = 0
    guard_violations: int = 0
    guard_examples: list[str] = field(default_factory=list)
    error: str | None = None


_DATA: dict[Any, Any] = {}  # per process: the candle files are read once, whatever the number of tasks


def market_data(plan: Plan) -> Any:
    """The plan's raw data source (files read once per process)."""
    key = (plan.config.data, plan.config.funding, plan.data_factory)
    if key not in _DATA:
        _DATA[key] = plan.data_factory(plan.config) if plan.data_factory else FileMarketData(
            plan.config.data, plan.config.funding)
    return _DATA[key]


def _settings(config: EvalConfig) -> Settings:
    try:
        return load_settings(config.settings)
    except ConfigError as exc:
        raise VariantsError(str(exc)) from None


def cycle_settings(plan: Plan, spec: VariantSpec) -> CycleSettings:
    return CycleSettings(run=spec.name, symbols=plan.universe, window=plan.config.window,
                         theories=spec.resolved_theories(), leader=plan.config.leader)


class _Reporter:
    """Progress from a worker: through a multiprocessing queue, or a direct callback in-process."""

    def __init__(self, sink: Any) -> None:
        self.sink = sink

    def __call__(self, *message: Any) -> None:
        if self.sink is None:
            return
        if callable(self.sink):
            self.sink(message)
        else:
            self.sink.put(message)


class BoundedProvider:
    """A provider whose live calls hold a (cross-process) semaphore: LLM concurrency is bounded."""

    def __init__(self, inner: Any, semaphore: Any) -> None:
        self.inner, self.semaphore = inner, semaphore
        self.name, self.model = inner.name, inner.model
        self.is_llm, self.is_replay = inner.is_llm, getattr(inner, "is_replay", False)

    def parameters(self) -> dict[str, Any]:
        return self.inner.parameters()

    def complete(self, messages, schema, snapshot):
        with self.semaphore:
            return self.inner.complete(messages, schema, snapshot)


# --- phase 1: features ------------------------------------------------------------------------------


def _features_task(plan: Plan, spec: VariantSpec, symbols: Sequence[str], times: Sequence[int],
                   sink: Any) -> tuple[int, float, int, list]:
    report = _Reporter(sink)
    raw = market_data(plan)
    data = GuardedMarketData(raw) if plan.guard else raw
    cs = cycle_settings(plan, spec)

    class _TimedData:  # the guard cuts funding at each decision time, as in the replay
        def __init__(self) -> None:
            self.symbols = data.symbols

        def candles(self, symbol: str, at_ms: int):
            if isinstance(data, GuardedMarketData):
                data.now_ms = at_ms
            return data.candles(symbol, at_ms)

        def funding_rates(self):
            return data.funding_rates() if hasattr(data, "funding_rates") else {}

    meta = {"theories": list(cs.theories), "theory_fingerprint": set_fingerprint(cs), "window": cs.window,
            "leader": cs.leader, "universe": list(plan.universe), "data": plan.config.data or "(bundled sample)",
            "data_fingerprint": plan.data_fingerprint}
    computed, seconds = compute_features(plan.features_path, _TimedData(), plan.universe, symbols, times, cs,
                                         key=plan.cache_key(cs), code=plan.code or None, meta=meta,
                                         progress=lambda n: report("features", n))
    guard = data if isinstance(data, GuardedMarketData) else None
    return computed, seconds, guard.violations if guard else 0, guard.examples if guard else []


# Phase 1's time blocks aim at this many per worker: enough to balance the workers (blocks differ in
# cost: refits, symbols listed late; the last block a worker takes leaves the other cores idle once
# it is alone) and keep the progress bar moving, few enough that each block still spans several
# refit periods (a 1-year run with weekly refits: 18 blocks of about 3 weeks, ~25 s of CPU each;
# with 4 per worker, 8 blocks of 7 weeks left one core idle for 30-40 s at the end of the phase).
BLOCKS_PER_WORKER = 8


def _features_tasks(plan: Plan, spec: VariantSpec, workers: int) -> list[tuple[VariantSpec, list[str], list[int]]]:
    """Phase 1's tasks for one theory set: (spec, symbols, times), time blocks covering every symbol.

    Blocks are whole refit periods (`time_blocks`), so no fit is made twice. A period too short
    for enough blocks to keep the workers busy (a few days with weekly refits) is also split by
    symbol: each group still cuts the universe once per time, and fits are per symbol anyway.
    """
    times = list(plan.times)
    if not times:
        return []
    wanted = max(workers, 1) * BLOCKS_PER_WORKER
    blocks = time_blocks(times, cycle_settings(plan, spec), max((times[-1] - times[0]) // wanted, 1))
    least = 2 * workers if workers > 1 else 1  # tasks that keep every worker busy (one process: no split)
    groups = min(len(plan.universe), -(-least // len(blocks)))
    symbols = list(plan.universe)
    return [(spec, symbols[g::groups], block) for block in blocks for g in range(groups)]


# --- phase 3: the variants' replays, in lockstep -----------------------------------------------------


def _completed_times(store: Store, run: str) -> set[int]:
    from sqlmodel import select

    with store.session() as s:
        rows = s.exec(select(CycleRow.decision_ms).where(CycleRow.run == run, CycleRow.status == "completed"))
        return set(rows.all())


class _CutsAtTime:
    """A data source for the variants one worker replays in lockstep: each symbol's candles cut once per time.

    The variants step through the decision times together, so the cut made for the first
    variant's cycle at a time serves the others' (the same Candles object: nothing writes to
    one). Only the current time's cuts are kept; a source error is not kept (each read raises it
    again). Each variant still reads through its own lookahead guard, which counts its reads.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self._at: int | None = None
        self._cuts: dict[str, Any] = {}

    def symbols(self) -> list[str]:
        return self.inner.symbols()

    def candles(self, symbol: str, at_ms: int) -> Any:
        if at_ms != self._at:
            self._at, self._cuts = at_ms, {}
        got = self._cuts.get(symbol)
        if got is None:
            got = self._cuts[symbol] = self.inner.candles(symbol, at_ms)
        return got

    def funding_rates(self) -> Any:
        get = getattr(self.inner, "funding_rates", None)
        return get() if get is not None else {}


# A rule variant's cycles per store transaction (see `_VariantReplay`): measured on a 30-day warm replay,
# 24 took ~8% off the replay's time against 1; a crash or an interruption redoes at most this many cycles.
RULE_CYCLES_PER_COMMIT = 24


class _VariantReplay:
    """One variant inside a lockstep group: its own store, broker, gate, synthesiser and guard; its outcome.

    `step(t)` runs its cycle at t (nothing if that cycle is completed, or the variant has stopped).
    A failure, in the set-up or in a cycle, ends this variant only: it is recorded in the outcome
    and the variant's resources are closed; the others go on.

    Store transactions: a model variant commits each cycle (`Store.batch`): its cycles are slow
    (model calls), so a commit costs nothing next to them, and an interruption loses at most the
    cycle in progress. A rule variant (the heuristic, a seed strategy: no model) commits every
    `RULE_CYCLES_PER_COMMIT` cycles: its cycle costs ~10-15 ms of CPU, of which a commit was ~1.5
    ms, and one transaction over several cycles also writes each shared page (the indexes' last
    leaves, the state rows) once instead of once per cycle. Its outcome counts a cycle as done only
    once committed; a cycle that raises rolls the whole open transaction back (the cycles since the
    last commit) and the variant fails; an interruption loses the open transaction. Either way
    a resumed run redoes those cycles whole from the store, as first attempts (the ids are derived,
    and a rule variant spends nothing), so the stores end as an uninterrupted run's.
    """

    def __init__(self, plan: Plan, spec: VariantSpec, report: _Reporter, semaphore: Any, stop_after: int | None,
                 cuts: _CutsAtTime, sources: dict[str, CachedSnapshotSource], features: list[FeatureCache]) -> None:
        self.plan, self.spec, self.report, self.stop_after = plan, spec, report, stop_after
        self.out = VariantOutcome(name=spec.name, status="running")
        self.store: Store | None = None
        self.records: CallRecords | None = None
        self.data: Any = None
        self.source: Any = None
        self.running = self.closed = False
        self.ran = 0
        self.cycles_per_commit = 1
        self.batch: Any = None  # the store transaction open across this variant's cycles (a rule variant)
        self.uncommitted = self.uncommitted_decisions = 0  # cycles run in it, and their decisions
        started = time.perf_counter()
        try:
            self._set_up(semaphore, cuts, sources, features)
            self.running = True
        except Exception as exc:
            self._fail(exc)
        self.out.seconds += time.perf_counter() - started

    def _set_up(self, semaphore: Any, cuts: _CutsAtTime, sources: dict[str, CachedSnapshotSource],
                features: list[FeatureCache]) -> None:
        plan, spec = self.plan, self.spec
        config = plan.config
        settings = _settings(config)
        run_dir = Path(plan.run_dir)
        provider = make_provider(spec.provider, settings.llm)
        self.cycles_per_commit = 1 if provider.is_llm else RULE_CYCLES_PER_COMMIT
        if provider.is_llm and not getattr(provider, "is_replay", False) and semaphore is not None:
            provider = BoundedProvider(provider, semaphore)
        template = PromptTemplate.load(spec.prompt)
        cs = cycle_settings(plan, spec)
        self.store = Store.at(run_dir / "variants" / spec.name / "store.sqlite")
        # only model calls go to the records (the cache and the budget's ledger); a rule provider's
        # answer is recomputed for free and its call summary is still in the variant's store
        self.records = CallRecords(run_dir / CALLS) if provider.is_llm else None
        self.clock = {"now": plan.times[0] if plan.times else 0}
        self.synth = Synthesiser(
            provider=provider, template=template, rules=settings.signal,
            price=settings.price_for(provider.name, provider.model),
            budget=CostBudget(daily_usd=settings.budget.daily_usd, per_cycle_usd=settings.budget.per_cycle_usd),
            records=self.records, anonymise=spec.anonymised, repair_retries=settings.llm.repair_retries, cache=True,
            max_output_tokens=max_output_tokens(provider, settings.llm),
        )
        self.data = GuardedMarketData(cuts) if plan.guard else cuts
        key = plan.cache_key(cs)
        if key not in sources:  # one source per theory set in the group: the variants of a set share its reads
            features.append(FeatureCache(plan.features_path))
            sources[key] = CachedSnapshotSource(features[-1], cs, key=key)
        self.source = sources[key].view()
        self.deps = CycleDeps(store=self.store, broker=PaperBroker(config.paper_for(spec)), synthesiser=self.synth,
                              gate=RiskGate(config.risk_for(spec)), data=self.data, settings=cs,
                              wall_ms=lambda: self.clock["now"], snapshot_source=self.source)
        self.done = _completed_times(self.store, spec.name)
        self.out.cycles_done = len(self.done)
        self.out.decisions_done = len(self.done) * len(plan.universe)
        self.report("replay-start", spec.name, len(self.done), self.out.decisions_done)
        self.product_spend = 0.0
        if provider.is_llm:
            self.product_spend = CallRecords(settings.records_path).spent_since(utc_day_start(_wall_ms()))

    def step(self, t: int) -> None:
        if not self.running or t in self.done:
            return
        started = time.perf_counter()
        try:
            self.clock["now"] = t
            if isinstance(self.data, GuardedMarketData):
                self.data.now_ms = t
            self.synth.budget.spent_cycle_usd = 0.0
            if self.records is not None:
                self.synth.budget.spent_today_usd = (self.product_spend
                                                     + self.records.spent_since(utc_day_start(_wall_ms())))
            # the replay's unit of resumption is a store transaction of whole cycles (see the class): a
            # cycle that raises leaves nothing of the open transaction in the store, and the variant fails;
            # its broker (which moved during those cycles) is dropped with it, and a resumed run reloads
            # it from the store
            if self.batch is None:
                self.batch = self.store.batch()
                self.batch.__enter__()
            result = run_cycle(t, self.deps)
            self.uncommitted += 1
            self.uncommitted_decisions += len(result.results)
            self.ran += 1
            stopping = self.stop_after is not None and self.ran >= self.stop_after
            if self.uncommitted >= self.cycles_per_commit or stopping:
                self._commit()
            if stopping:
                self.finish()
        except BaseException as exc:
            self._roll_back(exc)
            if not isinstance(exc, Exception):
                raise
            self._fail(exc)
        finally:
            self.out.seconds += time.perf_counter() - started

    def _commit(self) -> None:
        """End the open transaction: its cycles are stored, and counted as done (raises if the commit fails)."""
        batch, self.batch = self.batch, None
        cycles, decisions = self.uncommitted, self.uncommitted_decisions
        self.uncommitted = self.uncommitted_decisions = 0
        if batch is not None:
            batch.__exit__(None, None, None)
            self.out.cycles_done += cycles
            self.out.decisions_done += decisions
            self.report("replay", self.spec.name, cycles, decisions)  # the progress shown is what is stored

    def _roll_back(self, exc: BaseException) -> None:
        """Undo the open transaction (all of its cycles) after `exc`, which the caller goes on to handle."""
        batch, self.batch = self.batch, None
        self.uncommitted = self.uncommitted_decisions = 0
        if batch is not None:
            try:
                batch.__exit__(type(exc), exc, exc.__traceback__)  # rolls back; `exc` is the caller's to raise
            except BaseException as other:
                if other is not exc:
                    log.warning("variant %s: rolling its open cycles back failed too (%s: %s)", self.spec.name,
                                type(other).__name__, other)

    def _fail(self, exc: Exception) -> None:
        if isinstance(exc, ReplayMissError):
            self.out.status, self.out.error = "failed", f"replay: {exc}"
        else:  # one variant's failure must not stop the others; it is recorded, with its cause
            log.exception("variant %s failed", self.spec.name, exc_info=exc)
            self.out.status, self.out.error = "failed", f"{type(exc).__name__}: {exc}"
        self.finish()

    def finish(self) -> VariantOutcome:
        """Stop this variant (once), close its resources and return its outcome."""
        if not self.closed:
            self.running, self.closed = False, True
            if self.batch is not None:  # whole cycles only: a cycle that raised has rolled its transaction back
                try:
                    self._commit()
                except Exception as exc:
                    log.exception("variant %s: committing its last cycles failed", self.spec.name, exc_info=exc)
                    self.out.status, self.out.error = "failed", f"{type(exc).__name__}: {exc}"
            if self.out.status != "failed":
                self.out.status = "completed" if self.out.cycles_done >= len(self.plan.times) else "running"
            if self.source is not None:
                self.out.reused, self.out.misses = self.source.reused, self.source.misses
            if isinstance(self.data, GuardedMarketData):
                self.out.guard_violations, self.out.guard_examples = self.data.violations, list(self.data.examples)
            for resource in (self.records, self.store):
                if resource is not None:
                    resource.close()
        return self.out


def replay_variants(plan: Plan, specs: Sequence[VariantSpec], sink: Any = None, semaphore: Any = None,
                    stop_after: int | None = None) -> list[VariantOutcome]:
    """Walk some variants through every decision time not yet completed, in lockstep. Never raises.

    Time by time, each variant's cycle at t runs before any variant moves on, so what is the
    same for every variant at (symbol, t) is done once: the candle cut (`_CutsAtTime`), the cached
    snapshot's read and parse, and its completion for a given outcome list (`CachedSnapshotSource`),
    with the prompt text and JSON memoised on the snapshot itself. Each variant keeps its own
    store, broker, gate, synthesiser and lookahead guard; its completed cycles are skipped (the
    variants may have got to different times); one that fails is recorded as failed and the
    others go on. `stop_after` (tests) ends each variant's walk after that many cycles, as an
    interruption would. Returns the outcomes in the order of `specs`.
    """
    report = _Reporter(sink)
    cuts = _CutsAtTime(market_data(plan))
    sources: dict[str, CachedSnapshotSource] = {}
    features: list[FeatureCache] = []
    runs: list[_VariantReplay] = []
    try:
        runs = [_VariantReplay(plan, spec, report, semaphore, stop_after, cuts, sources, features) for spec in specs]
        for t in plan.times:
            if not any(r.running for r in runs):
                break
            for r in runs:
                r.step(t)
        return [r.finish() for r in runs]
    finally:
        for r in runs:
            r.finish()
        for cache in features:
            cache.close()


def replay_variant(plan: Plan, spec: VariantSpec, sink: Any = None, semaphore: Any = None,
                   stop_after: int | None = None) -> VariantOutcome:
    """Walk one variant through every decision time not yet completed. Never raises: failures are the outcome."""
    return replay_variants(plan, [spec], sink, semaphore, stop_after)[0]


def lockstep_groups(plan: Plan, specs: Sequence[VariantSpec], workers: int) -> list[list[VariantSpec]]:
    """Phase 3's split of the variants over the workers: one group per worker (at most one per variant).

    Group sizes differ by at most one. The variants are ordered by theory set first (stable), and
    the groups are consecutive runs of that order, so variants of one set, which share the
    reading of its snapshots, land together where the sizes allow.
    """
    count = max(1, min(workers, len(specs)))
    ordered = sorted(specs, key=lambda s: set_fingerprint(cycle_settings(plan, s)))
    size, extra = divmod(len(ordered), count)
    groups, start = [], 0
    for g in range(count):
        end = start + size + (1 if g < extra else 0)
        groups.append(ordered[start:end])
        start = end
    return groups


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


# --- phase 4: baselines and the audit ---------------------------------------------------------------


def write_baseline(plan: Plan, spec: BaselineCurveSpec) -> BaselineManifest:
    """A passive benchmark on the decision grid, as baselines/<name>.json (evals.baselines.BaselineCurve)."""
    from evals import baselines

    rel = f"baselines/{spec.name}.json"
    entry = BaselineManifest(name=spec.name, kind=spec.kind, symbols=spec.symbols, path=rel)
    try:
        config = plan.config
        paper = PaperSettings.model_validate({"initial_cash": config.initial_cash, **config.paper})
        b = baselines.BaselineSpec(name=spec.name, kind=spec.kind, spec=f"{spec.kind}:{'+'.join(spec.symbols)}",
                                   provider=None, symbols=spec.symbols)
        curve = baselines.baseline_curve(b, market_data(plan), plan.times, paper, config.initial_cash)
        path = Path(plan.run_dir) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(path, curve.model_dump_json())
        entry.status = "completed"
    except Exception as exc:  # a benchmark that cannot be built is reported, the run goes on
        entry.status, entry.error = "failed", f"{type(exc).__name__}: {exc}"
    return entry


def _audit_task(plan: Plan, spec: VariantSpec, samples: int, k_bars: int) -> LookaheadAudit:
    cs = cycle_settings(plan, spec)
    raw = market_data(plan)
    features = FeatureCache(plan.features_path)
    key = plan.cache_key(cs)
    try:
        def cached(symbol: str, t: int) -> FeatureSnapshot | None:
            text = features.get(key, symbol, t)
            return None if text is None else FeatureSnapshot.model_validate_json(text)

        def shared_diff(hit: FeatureSnapshot, fresh: FeatureSnapshot) -> set[str]:
            return _differences(hit, fresh) - OUTCOME_THEORIES

        return audit_prefix_invariance(
            compute_snapshot, raw, plan.universe, plan.times, cs, k_bars=k_bars, samples=samples, cached=cached,
            compare_cached=shared_diff,
            eligible=lambda u, s, t: decidable(u, s, t, cs.data, cs.window))
    finally:
        features.close()


# --- the run ----------------------------------------------------------------------------------------


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parents[1],
                             capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("crypto-signal-agent")
    except PackageNotFoundError:
        return "unknown"


def _data_files(data: Any, universe: Sequence[str]) -> list[DataFile]:
    files: list[Path] = []
    table = getattr(data, "_files", {})
    files += [Path(table[s]) for s in universe if s in table]
    funding = getattr(data, "_funding_path", None)
    if funding is not None and Path(funding).exists():
        root = Path(funding)
        files += sorted(p for p in root.iterdir() if p.is_file()) if root.is_dir() else [root]
    return [DataFile(path=str(p), sha256=_sha256_file(p), bytes=p.stat().st_size) for p in files]


def _variant_manifest(plan: Plan, spec: VariantSpec, settings: Settings) -> VariantManifest:
    try:
        provider = make_provider(spec.provider, settings.llm)
        template = PromptTemplate.load(spec.prompt)
    except (ValueError, PromptError) as exc:
        raise VariantsError(f"variant {spec.name!r}, field 'provider'/'prompt': {exc}") from None
    cs = cycle_settings(plan, spec)
    risk = plan.config.risk_for(spec).model_dump(mode="json")
    return VariantManifest(
        name=spec.name, signature=f"{provider.name}:{provider.model}:{template.variant}", provider_spec=spec.provider,
        provider=provider.name, model=provider.model, provider_parameters=provider.parameters(),
        prompt_variant=template.variant, prompt_version=template.version, prompt_sha256=template.sha256,
        theories=dict(cs.theories), theory_fingerprint=set_fingerprint(cs), window=cs.window,
        anonymise=spec.anonymised, risk=risk, risk_sha256=sha256_text(canonical(risk)),
        paper=plan.config.paper_for(spec).model_dump(mode="json"), baseline=spec.baseline,
        llm=bool(provider.is_llm), store=f"variants/{spec.name}/store.sqlite",
        cycles_total=len(plan.times), decisions_total=len(plan.times) * len(plan.universe),
    )


def _new_run_id(config_path: Path) -> str:
    return f"{config_path.stem}-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}"


class _Progress:
    """tqdm bars on stderr, fed by worker messages; keeps the manifest's counters up to date."""

    def __init__(self, enabled: bool, manifest: EvalManifest, save: Callable[[], None]) -> None:
        self.enabled, self.manifest, self.save = enabled, manifest, save
        self.bar = None
        self.last_save = time.monotonic()

    def start(self, desc: str, total: int, initial: int = 0) -> None:
        self.close()
        if self.enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, unit="dec" if desc == "replay" else "snap",
                            file=sys.stderr, dynamic_ncols=True, smoothing=0.05)

    def handle(self, message: tuple) -> None:
        """("features", n) | ("replay-start", variant, cycles done, decisions done) | ("replay", variant, cycles, n)."""
        kind = message[0]
        if kind == "features":
            step = message[1]
        else:
            _, name, cycles, decisions = message
            v = self.manifest.variant(name)
            v.status = "running"
            if kind == "replay-start":
                v.cycles_done, v.decisions_done = cycles, decisions
            else:
                v.cycles_done += cycles
                v.decisions_done += decisions
            step = decisions
        if self.bar is not None:
            self.bar.update(step)
        if time.monotonic() - self.last_save > 2.0:
            self.save()
            self.last_save = time.monotonic()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def run_evals(config_path: str | Path, runs_dir: str | Path, *, run_id: str | None = None, workers: int = 2,
              progress: bool = True, yes: bool = False, confirm: Callable[[str], bool] | None = None,
              audit_samples: int = 12, audit_k_bars: int = 3, data_factory: Callable[[EvalConfig], Any] | None = None,
              guard: bool = True, only: Sequence[str] | None = None, stop_after: int | None = None,
              calls_from: str | Path | None = None, features_cache: str | Path | None = None) -> EvalManifest:
    """Run (or resume) the eval a variants file declares; returns the final manifest.

    `run_id` names the run folder under `runs_dir` (default: the file's stem and the UTC time);
    an existing folder is resumed, provided its copy of the variants file is the same. `workers`
    processes share the work (1: everything in this process). `yes` skips the cost confirmation;
    `confirm(message)` asks it otherwise (default: a y/N prompt on a terminal, CostNotConfirmed
    when there is none). `audit_samples`/`audit_k_bars` size the lookahead audit (0 samples: no
    audit). `data_factory(config)` replaces the candle files (tests); `guard=False` removes the
    lookahead guard (only the canary test does that); `only` limits the replay to some variants;
    `stop_after` (tests) interrupts each variant after that many cycles. `calls_from` seeds a new
    run's call records with an earlier run's `calls.sqlite`, so its LLM requests are answered from
    them (a `replay:` provider answers from nothing else). `features_cache` is the shared theory-results
    cache file, or "off" for the run's own (default: the settings' `[evals] features_cache`).
    """
    t_setup = time.perf_counter()
    config_path = Path(config_path)
    config = load_variants(config_path)
    text = config_path.read_text(encoding="utf-8")
    settings = _settings(config)
    run_id = run_id or _new_run_id(config_path)
    if not _valid_name(run_id):
        raise EvalsError(f"run id {run_id!r}: use letters, digits, '.', '_' or '-'")
    run_dir = Path(runs_dir) / run_id
    manifest_path = run_dir / MANIFEST
    previous: EvalManifest | None = None
    if manifest_path.is_file():
        previous = EvalManifest.model_validate_json(manifest_path.read_text(encoding="utf-8"))
        if previous.config_sha256 != sha256_text(text):
            raise EvalsError(f"run {run_id} was started from a different variants file; "
                             "start a new run (another run id) to evaluate this one")
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / VARIANTS_COPY).exists():
        _atomic_write(run_dir / VARIANTS_COPY, text)
    if calls_from is not None and not (run_dir / CALLS).exists():
        if not Path(calls_from).is_file():
            raise EvalsError(f"no call records at {calls_from}")
        _copy_sqlite(Path(calls_from), run_dir / CALLS)

    probe = Plan(str(run_dir), config, (), (), data_factory, guard)
    data = market_data(probe)
    try:
        universe = tuple(parse_symbols(config.universe, data.symbols()) if config.universe else data.symbols())
    except KeyError as exc:
        raise VariantsError(f"{config_path}: field 'universe': {exc.args[0]}") from None
    times = tuple(config.decision_times())
    if not times:
        raise VariantsError(f"{config_path}: no decision time on the {config.cadence} grid in [start, end)")
    files = _data_files(data, universe)
    features = _features_plan(run_dir, features_cache if features_cache is not None else
                              settings.evals.features_cache, settings, data, universe, files, data_factory, guard)
    plan = Plan(str(run_dir), config, universe, times, data_factory, guard, features["path"], features["code"],
                features["data"])

    variants, curves = with_baselines(config, list(universe))
    entries: list[VariantManifest] = []
    replayed: list[VariantSpec] = []
    skipped: dict[str, str] = {}
    for spec in variants:
        try:
            entries.append(_variant_manifest(plan, spec, settings))
            replayed.append(spec)
        except VariantsError as exc:
            if not spec.baseline:
                raise VariantsError(f"{config_path}: {exc}") from None
            skipped[spec.name] = str(exc)
    now = _wall_ms()
    manifest = EvalManifest(
        run_id=run_id, created_ms=previous.created_ms if previous else now, updated_ms=now,
        config_sha256=sha256_text(text), period_start_ms=config.start, period_end_ms=config.end,
        cadence=config.cadence, cadence_ms=config.cadence_ms, decision_times=len(times), universe=universe,
        in_sample_until_ms=config.in_sample_until, initial_cash=config.initial_cash,
        data_dir=str(getattr(data, "root", config.data or "")), funding_dir=_funding_dir(data),
        data_files=files, package_version=_package_version(), git_commit=_git_commit(),
        python=platform.python_version(), variants=entries, skipped_baselines=skipped,
        baselines=[BaselineManifest(name=c.name, kind=c.kind, symbols=c.symbols, path=f"baselines/{c.name}.json")
                   for c in curves],
    )
    if previous is not None:
        for v in manifest.variants:
            with contextlib.suppress(KeyError):
                old = previous.variant(v.name)
                v.cycles_done, v.decisions_done, v.seconds = old.cycles_done, old.decisions_done, old.seconds
        manifest.features = previous.features
    selected = [s for s in replayed if only is None or s.name in only]
    f = manifest.features
    f.cache_path, f.shared, f.note = str(plan.features_path), features["shared"], features["note"]
    f.code_fingerprint, f.data_fingerprint = plan.code, plan.data_fingerprint
    keys = {set_fingerprint(cs): plan.cache_key(cs) for cs in (cycle_settings(plan, s) for s in selected)}
    f.keys = keys

    save_lock = threading.Lock()  # the progress thread saves too

    def save() -> None:
        with save_lock:
            manifest.updated_ms = _wall_ms()
            _atomic_write(manifest_path, manifest.model_dump_json(indent=2))

    save()
    manifest.phases_s["setup"] = round(time.perf_counter() - t_setup, 3)
    bars = _Progress(progress, manifest, save)
    pool: ProcessPoolExecutor | None = None
    beside: ThreadPoolExecutor | None = None  # this process's work during the workers' replay
    sink: Any = bars.handle
    drain: threading.Thread | None = None
    lifeline_end: Any = None
    stop_drain = threading.Event()
    if workers > 1:
        # forkserver: one clean process imports the stack once and forks the workers from it
        # (fast start, no threads inherited); the progress queue and the LLM semaphore reach the
        # workers at their start (initargs), the only way multiprocessing shares them
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["evals.replay"])
        queue = ctx.Queue()
        semaphore = ctx.BoundedSemaphore(config.llm_concurrency or settings.evals.llm_concurrency)
        # the workers' lifeline: this process holds its only write end, so the workers see it close
        # when this process ends, however it ends (see `_exit_with_the_run`)
        lifeline, lifeline_end = ctx.Pipe(duplex=False)
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init,
                                   initargs=(queue, semaphore, lifeline))

        def pump() -> None:
            while not stop_drain.is_set():
                try:
                    bars.handle(queue.get(timeout=0.2))
                except queue_mod.Empty:
                    continue
                except (EOFError, OSError, ValueError):
                    return

        drain = threading.Thread(target=pump, daemon=True)
        drain.start()
    else:
        semaphore = threading.BoundedSemaphore(config.llm_concurrency or settings.evals.llm_concurrency)
    restore_sigterm = _sigterm_ends_the_run()
    try:
        # phase 1: shared features, one task per (theory set, time block[, symbol group])
        t1 = time.perf_counter()
        sets: dict[str, VariantSpec] = {}
        for spec in selected:
            sets.setdefault(set_fingerprint(cycle_settings(plan, spec)), spec)
        guard_violations, guard_examples = 0, []
        bars.start("features", len(sets) * len(universe) * len(times))
        tasks = [task for spec in sets.values() for task in _features_tasks(plan, spec, workers)]
        results = (_map(pool, _features_in_worker, [(plan, *task) for task in tasks]) if pool else
                   [_features_task(plan, *task, sink) for task in tasks])
        for computed, _seconds, violations, examples in results:
            manifest.features.computed += computed
            guard_violations += violations
            guard_examples += examples
        bars.close()
        manifest.features.cached = _cached(plan, keys)
        # what the run needs and did not compute itself came from the cache (an earlier run's work)
        manifest.features.from_cache = max(manifest.features.cached - manifest.features.computed, 0)
        manifest.features.seconds = round(manifest.features.seconds + time.perf_counter() - t1, 3)
        manifest.phases_s["features"] = round(time.perf_counter() - t1, 3)
        save()

        # phase 2: what it may cost
        estimate, lines = estimate_cost(plan, selected, manifest, settings)
        manifest.cost_estimate_usd = round(estimate, 6)
        save()
        if estimate > 0 and not yes:
            message = "\n".join(lines) + f"\nEstimated LLM cost of this run: up to ${estimate:.2f}. Proceed?"
            if not (confirm or _ask)(message):
                raise CostNotConfirmed(f"not confirmed: the run could spend up to ${estimate:.2f} "
                                       "(pass yes=True / --yes to run it)")

        # phase 3: the replays (and the audit alongside them)
        t3 = time.perf_counter()
        bars.start("replay", sum(len(times) * len(universe) for _ in selected))
        for spec in selected:
            manifest.variant(spec.name).status = "running"
        save()
        audit_spec = next((s for s in selected if not s.baseline), selected[0] if selected else None)
        audit_future: Future | None = None
        baselines_future: Future | None = None
        audit: LookaheadAudit | None = None
        if pool is not None:
            # the buy-and-hold curves and the audit run in this (otherwise idle) process while the
            # workers replay, one after the other in one thread: in a worker the audit would hold back
            # the whole lockstep group queued behind it, and after the replay either would run on one
            # core while the other idles (the curves: ~10 s of a year's run)
            beside = ThreadPoolExecutor(max_workers=1)
            baselines_future = beside.submit(lambda: [write_baseline(plan, c) for c in curves])
            if audit_spec is not None and audit_samples > 0:
                audit_future = beside.submit(_audit_in_thread, plan, audit_spec, audit_samples, audit_k_bars)
        # each worker replays its group of variants in lockstep (one process: all of them)
        outcomes = ([out for group in _map(pool, _replay_in_worker, [(plan, group, stop_after) for group in
                                                                      lockstep_groups(plan, selected, workers)],
                                           unordered=True) for out in group]
                    if pool else replay_variants(plan, selected, sink, semaphore, stop_after))
        if drain is not None:  # every progress message in, before the outcomes set the final counts
            stop_drain.set()
            drain.join(timeout=10)
            with contextlib.suppress(queue_mod.Empty, EOFError, OSError, ValueError):
                while True:
                    bars.handle(queue.get_nowait())
        for out in outcomes:
            v = manifest.variant(out.name)
            v.status, v.error = out.status, out.error  # type: ignore[assignment]
            v.cycles_done, v.decisions_done = out.cycles_done, out.decisions_done
            v.seconds = round(v.seconds + out.seconds, 3)
            manifest.features.reused += out.reused
            manifest.features.misses += out.misses
            guard_violations += out.guard_violations
            guard_examples += out.guard_examples
            save()
        bars.close()
        manifest.phases_s["replay"] = round(time.perf_counter() - t3, 3)

        # phase 4: baselines and the audit
        t4 = time.perf_counter()
        manifest.baselines = (baselines_future.result() if baselines_future is not None
                              else [write_baseline(plan, c) for c in curves])
        manifest.phases_s["baselines"] = round(time.perf_counter() - t4, 3)
        t5 = time.perf_counter()
        if audit_future is not None:
            audit = audit_future.result()
        elif audit_spec is not None and audit_samples > 0:
            audit = _audit_task(plan, audit_spec, audit_samples, audit_k_bars)
        manifest.phases_s["audit"] = round(time.perf_counter() - t5, 3)
        manifest.lookahead = merge_guard(audit or LookaheadAudit(k_bars=audit_k_bars), guard_violations,
                                         guard_examples)
        manifest.features.cached = _cached(plan, keys)
        manifest.status = "completed" if all(v.status == "completed" for v in manifest.variants
                                             if only is None or v.name in only) else "running"
        if any(v.status == "failed" for v in manifest.variants):
            manifest.status = "failed"
        save()
        return manifest
    except BaseException as exc:
        if lifeline_end is not None:  # the workers stop now, in whatever task they were (see _exit_with_the_run)
            lifeline_end.close()
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            manifest.status = "interrupted"
            for v in manifest.variants:  # their counts are what their stores hold (reported at each commit)
                if v.status == "running":
                    v.status = "interrupted"
            save()
        raise
    finally:
        restore_sigterm()
        bars.close()
        stop_drain.set()
        if drain is not None:
            drain.join(timeout=2)
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        if lifeline_end is not None:
            lifeline_end.close()
        if beside is not None:
            beside.shutdown(wait=True, cancel_futures=True)


def _features_plan(run_dir: Path, setting: str | Path | None, settings: Settings, data: Any, universe: Sequence[str],
                   files: Sequence[DataFile], data_factory: Any, guard: bool) -> dict[str, Any]:
    """Which features cache the run uses (checked now: a file that is not one stops the run before any work)."""
    code = code_fingerprint()
    shared = resolve_features_cache(setting, settings.data_dir)
    note = None
    if shared is None:
        note = "the shared features cache is turned off: this run keeps its own"
    elif data_factory is not None or not guard:
        note = ("the data is not plain candle files read through the lookahead guard, so it cannot be named: "
                "this run keeps its own features cache")
        shared = None
    fingerprint = UNIDENTIFIED
    if data_factory is None:
        # `files` holds the universe's candle files (data._files) and then every funding file
        by_symbol = {str(p): s for s, p in getattr(data, "_files", {}).items() if s in universe}
        candles = {by_symbol[f.path]: f.sha256 for f in files if f.path in by_symbol}
        funding = {Path(f.path).name: f.sha256 for f in files if f.path not in by_symbol}
        fingerprint = data_fingerprint(universe, candles, funding)
    path = shared if shared is not None else run_dir / FEATURES
    try:
        FeatureCache(path).close()
    except FeatureCacheError as exc:
        raise EvalsError(str(exc)) from None
    return {"path": str(path), "shared": shared is not None, "note": note, "code": code, "data": fingerprint}


def _cached(plan: Plan, keys: dict[str, str]) -> int:
    """Snapshots of the run's theory sets, universe and decision times in the features cache."""
    with contextlib.closing(FeatureCache(plan.features_path)) as fc:
        return sum(fc.count(key, plan.universe, plan.times) for key in keys.values())


def _copy_sqlite(source: Path, target: Path) -> None:
    """A consistent copy of a SQLite database (the backup API: it includes what is still in the WAL)."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(source)) as src, contextlib.closing(sqlite3.connect(target)) as dst:
        src.backup(dst)


def _funding_dir(data: Any) -> str | None:
    path = getattr(data, "_funding_path", None)
    return None if path is None else str(path)


def _valid_name(name: str) -> bool:
    import re

    return re.fullmatch(r"[A-Za-z0-9_.-]+", name) is not None


_WORKER: dict[str, Any] = {}


def _worker_init(queue: Any, semaphore: Any, lifeline: Any) -> None:
    _WORKER["sink"], _WORKER["semaphore"] = queue, semaphore
    threading.Thread(target=_exit_with_the_run, args=(lifeline,), name="lifeline", daemon=True).start()
    # One BLAS/OpenMP thread per worker: the workers already fill the cores, and the fits' small
    # LAPACK calls spent more CPU spinning extra threads than computing (QR of a 482 x 21 matrix:
    # 24 ms with OpenBLAS's default threads on a loaded 2-core machine, 0.19 ms with one).
    threadpool_limits(1)


def _exit_with_the_run(lifeline: Any) -> None:
    """A worker's watch (a thread of its own): the worker ends as soon as the run's process does.

    The run's process holds the only write end of the lifeline and never writes to it, so a read
    returns only when that end closes: the run ended (killed, even by SIGKILL, or interrupted; a
    finished run's idle workers have already exited). A worker still replaying then would write
    to the run's stores behind a run that is over, so it exits at once: whatever it was writing is
    an uncommitted SQLite transaction, rolled back, which a resumed run redoes whole (a cycle is
    one transaction, a block of features too). Neither the parent pid nor PR_SET_PDEATHSIG can
    tell: a worker's parent is the forkserver, which lives as long as any worker holds its
    liveness pipe, so it outlived a killed run with its workers.
    """
    with contextlib.suppress(EOFError, OSError):
        lifeline.recv_bytes()
    os._exit(1)


def _sigterm_ends_the_run() -> Callable[[], None]:
    """SIGTERM ends the run as Ctrl-C does: an exception in this process, so the run is marked interrupted and
    its workers stop. Only in the main thread and when nobody handles SIGTERM already; returns the undo."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        return lambda: None

    def end(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)  # the shell's exit status of a process ended by that signal

    signal.signal(signal.SIGTERM, end)
    return lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _audit_in_thread(plan: Plan, spec: VariantSpec, samples: int, k_bars: int) -> LookaheadAudit:
    """The audit beside the replay's workers: one BLAS thread, as in a worker (see `_worker_init`)."""
    with threadpool_limits(1):
        return _audit_task(plan, spec, samples, k_bars)


def _features_in_worker(plan: Plan, spec: VariantSpec, symbols: Sequence[str],
                        times: Sequence[int]) -> tuple[int, float, int, list]:
    return _features_task(plan, spec, symbols, times, _WORKER.get("sink"))


def _replay_in_worker(plan: Plan, specs: Sequence[VariantSpec], stop_after: int | None) -> list[VariantOutcome]:
    return replay_variants(plan, specs, _WORKER.get("sink"), _WORKER.get("semaphore"), stop_after)


def _map(pool: ProcessPoolExecutor | None, fn: Callable, arg_tuples: Sequence[tuple], unordered: bool = False) -> list:
    """Run fn over the argument tuples: in the pool's processes, or here one after the other."""
    if pool is None:
        return [fn(*args) for args in arg_tuples]
    futures = [pool.submit(fn, *args) for args in arg_tuples]
    if unordered:
        return [f.result() for f in as_completed(futures)]
    return [f.result() for f in futures]


def _ask(message: str) -> bool:
    if not sys.stdin or not sys.stdin.isatty():
        raise CostNotConfirmed(message.splitlines()[-1].removesuffix(" Proceed?")
                               + " No terminal to confirm on: pass yes=True (--yes) to run it.")
    print(message + " [y/N] ", end="", file=sys.stderr, flush=True)
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def estimate_cost(plan: Plan, specs: Sequence[VariantSpec], manifest: EvalManifest,
                  settings: Settings) -> tuple[float, list[str]]:
    """Upper-bound USD of the LLM calls still to make: decisions left x (estimated prompt tokens x the input
    price + the output-token cap x the output price). Calls already in the records cost nothing and repairs
    add at most one call per decision (shown separately). Providers without a price are refused early."""
    total, lines = 0.0, []
    sample: FeatureSnapshot | None = None
    for spec in specs:
        provider = make_provider(spec.provider, settings.llm)
        if not provider.is_llm or getattr(provider, "is_replay", False):
            continue
        price = settings.price_for(provider.name, provider.model)
        if price is None:
            raise VariantsError(f"variant {spec.name!r}: no price for {provider.name}:{provider.model} in the "
                                "settings' [prices] table; an unknown cost cannot be budgeted")
        if sample is None:
            sample = _sample_snapshot(plan, spec)
        template = PromptTemplate.load(spec.prompt)
        tokens_in = (render(template, sample, settings.signal, [], [], anonymise=spec.anonymised).estimated_tokens
                     if sample is not None else 1500)
        out_cap = max_output_tokens(provider, settings.llm)
        v = manifest.variant(spec.name)
        left = max(v.decisions_total - v.decisions_done, 0)
        per_call = price.cost(tokens_in, out_cap)
        cost = left * per_call
        total += cost
        lines.append(f"{spec.name}: {left} decisions x ({tokens_in} tokens in, up to {out_cap} out) at "
                     f"{provider.name}:{provider.model} prices = up to ${cost:.2f} (${2 * cost:.2f} if every "
                     "reply needed its repair call)")
    return total, lines


def _sample_snapshot(plan: Plan, spec: VariantSpec) -> FeatureSnapshot | None:
    cs = cycle_settings(plan, spec)
    with contextlib.closing(FeatureCache(plan.features_path)) as fc:
        found = fc.get_range(plan.cache_key(cs), plan.times[0], plan.times[-1] + 1)
    if not found:
        return None
    return FeatureSnapshot.model_validate_json(next(iter(found.values())))


# --- reading a run ----------------------------------------------------------------------------------


@dataclass
class EvalRun:
    """A run folder opened for reading: its manifest, each variant's store and the baseline curves."""

    run_dir: Path
    manifest: EvalManifest
    stores: dict[str, Store]
    baselines: dict[str, dict[str, Any]]

    def close(self) -> None:
        for store in self.stores.values():
            store.close()

    def __enter__(self) -> EvalRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load_run(run_dir: str | Path) -> EvalRun:
    """Open a run folder: EvalsError naming the folder when it holds no manifest."""
    run_dir = Path(run_dir)
    path = run_dir / MANIFEST
    if not path.is_file():
        raise EvalsError(f"{run_dir}: not an eval run (no {MANIFEST})")
    manifest = EvalManifest.model_validate_json(path.read_text(encoding="utf-8"))
    stores = {v.name: Store.at(run_dir / v.store) for v in manifest.variants if (run_dir / v.store).is_file()}
    curves: dict[str, dict[str, Any]] = {}
    for b in manifest.baselines:
        p = run_dir / b.path
        if p.is_file():
            curves[b.name] = json.loads(p.read_text(encoding="utf-8"))
    return EvalRun(run_dir=run_dir, manifest=manifest, stores=stores, baselines=curves)


def remove_run(run_dir: str | Path) -> None:
    """Delete a run folder (only one holding a manifest)."""
    run_dir = Path(run_dir)
    if not (run_dir / MANIFEST).is_file():
        raise EvalsError(f"{run_dir}: not an eval run (no {MANIFEST}); not deleting it")
    shutil.rmtree(run_dir)


__all__ = ["CostNotConfirmed", "EvalRun", "EvalsError", "Plan", "estimate_cost", "load_run", "lockstep_groups",
           "replay_variant", "replay_variants", "run_evals"]
