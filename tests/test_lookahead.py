"""The lookahead canary: a planted lookahead (a data source that leaks the next candle, a theory that reads
funding past the decision time, a snapshot source that ignores the cut) changes results AND is flagged; the
clean run is not flagged."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from agent.cycle import CycleSettings, FileMarketData, compute_snapshot
from agent.snapshot import build_snapshot
from evals.lookahead import GuardedMarketData, LookaheadError, audit_prefix_invariance
from evals.replay import run_evals
from evals.variants import resolve_theories
from tests.llm_servers import serve
from tests.test_evals_replay import CONFIG, long_reply, write_config
from theories.base import FRACTION, Theory, TheoryParams, TheoryResult, unit
from theories.registry import THEORIES

HOUR = 3_600_000
T = 1762776000000  # 2025-11-10T12:00Z, a decision time inside the bundled sample
SYMBOLS = ["BTC/USDT", "ETH/USDT"]


class LeakyData:
    """A planted lookahead: hands over the candle that closes one hour AFTER the decision time too."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def symbols(self):
        return self.inner.symbols()

    def candles(self, symbol, at_ms):
        return self.inner.candles(symbol, at_ms + HOUR)

    def funding_rates(self):
        return self.inner.funding_rates()


def leaky(config):
    return LeakyData(FileMarketData(config.data, config.funding))


def test_the_guard_refuses_and_counts_a_candle_that_closes_after_the_decision_time():
    clean = GuardedMarketData(FileMarketData())
    assert clean.candles("BTC/USDT", T).last_close_time == T and clean.violations == 0
    guarded = GuardedMarketData(LeakyData(FileMarketData()))
    with pytest.raises(LookaheadError, match="1 candle"):
        guarded.candles("BTC/USDT", T)
    assert guarded.violations == 1 and "BTC/USDT" in guarded.examples[0]
    # funding settlements are cut at the decision time as well
    full = FileMarketData().funding_rates()["BTC/USDT"]
    assert full.time[-1] > T
    clean.now_ms = T
    assert clean.funding_rates()["BTC/USDT"].time[-1] <= T


def _rows(store: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(store) as db:
        return db.execute(sql).fetchall()


@pytest.fixture
def model_server():
    """The scripted model that always goes long (so the variant trades and the broker's view matters)."""
    with serve("/api/chat") as server:
        server.push(*[long_reply] * 1000)
        yield server


def test_a_planted_data_leak_changes_the_results_and_is_flagged_while_the_clean_run_passes(tmp_path, model_server):
    config = write_config(tmp_path / "cfg", CONFIG, f'[llm.ollama]\nhost = "{model_server.url}"\n')
    runs = tmp_path / "runs"
    kw = dict(workers=1, progress=False, audit_samples=6, only=["qwen"])
    clean = run_evals(config, runs, run_id="clean", **kw)
    assert clean.lookahead.passed and clean.lookahead.guard_violations == 0
    assert clean.lookahead.samples > 0 and clean.lookahead.flagged == {} and clean.lookahead.cache_mismatches == 0

    # unguarded, the leak changes the results: the broker sees (and fills, exits, marks on) a bar from the future
    leaked = run_evals(config, runs, run_id="leaked", data_factory=leaky, guard=False, **kw)
    store = "variants/qwen/store.sqlite"
    money = "SELECT cycle_id, stage, equity, cash FROM account_snapshots ORDER BY id"
    trades = "SELECT client_order_id, time_ms, price, quantity, reason FROM fills ORDER BY fill_id"
    clean_rows = (_rows(runs / "clean" / store, money), _rows(runs / "clean" / store, trades))
    leaked_rows = (_rows(runs / "leaked" / store, money), _rows(runs / "leaked" / store, trades))
    assert clean_rows[1] and clean_rows != leaked_rows
    # ... and the audit flags it even without the guard: the source offers candles from after the decision
    assert not leaked.lookahead.passed and leaked.lookahead.flagged.get("data_source", 0) > 0
    assert leaked.lookahead.guard_violations == 0  # (no guard ran)

    # guarded (the default), the leaking source is refused at every decision and the run says so
    guarded = run_evals(config, runs, run_id="guarded", data_factory=leaky, **kw)
    assert not guarded.lookahead.passed and guarded.lookahead.guard_violations > 0
    assert "closing after the decision time" in guarded.lookahead.guard_examples[0]
    reasons = _rows(runs / "guarded" / store, "SELECT outcome, reason FROM decisions")
    assert reasons and all(o == "skipped" and "lookahead" in r for o, r in reasons)
    assert _rows(runs / "guarded" / store, trades) == []


class PeekParams(TheoryParams):
    pass


class PeekResult(TheoryResult):
    rate: float = unit(FRACTION, "The newest funding rate in the data, whenever it settled (a planted bug).")


def _peek(ctx, params):
    rates = ctx.funding.rate if ctx.funding is not None else ()
    return PeekResult(label="planted lookahead", rate=float(rates[-1]) if len(rates) else 0.0)


PEEK = Theory(name="peek", description="planted: reads funding past the decision time", params=PeekParams,
              result=PeekResult, run=_peek, min_bars=1)


def _settings(names: list[str]) -> CycleSettings:
    return CycleSettings(run="audit", symbols=tuple(SYMBOLS), theories=resolve_theories(names))


def test_the_audit_flags_a_theory_that_reads_past_the_decision_time_and_passes_the_clean_set(monkeypatch):
    monkeypatch.setitem(THEORIES, "peek", PEEK)
    data = FileMarketData()
    times = [T + i * 4 * HOUR for i in range(3)]
    clean_set = ["montecarlo", "context", "rsi_bollinger", "funding_extremes"]
    clean = audit_prefix_invariance(compute_snapshot, data, SYMBOLS, times, _settings(clean_set), k_bars=24,
                                    samples=6)
    assert clean.samples == 6 and clean.flagged == {} and clean.passed
    planted = audit_prefix_invariance(compute_snapshot, data, SYMBOLS, times, _settings([*clean_set, "peek"]),
                                      k_bars=24, samples=6)
    assert not planted.passed and set(planted.flagged) == {"peek"} and planted.flagged["peek"] > 0
    # the leak changes results: with the whole funding history the planted theory answers differently
    universe = {s: data.candles(s, T) for s in SYMBOLS}
    cs = _settings(["peek"])
    everything = compute_snapshot("BTC/USDT", universe, T, cs, outcomes=(), funding=data.funding_rates(), cache=None)
    guard = GuardedMarketData(data)
    guard.now_ms = T
    as_replayed = compute_snapshot("BTC/USDT", universe, T, cs, outcomes=(), funding=guard.funding_rates(), cache=None)
    assert everything.theories["peek"].rate != as_replayed.theories["peek"].rate
    settled = data.funding_rates()["BTC/USDT"].settled_by(T)
    assert as_replayed.theories["peek"].rate == float(settled.rate[-1])  # the replay's guard cut it


def test_the_audit_flags_a_snapshot_source_that_ignores_the_decision_time():
    def careless(symbol, universe, decision_ms, settings, *, outcomes, funding, cache):
        # planted: analyses as of the newest candle it was given instead of the decision time
        return build_snapshot(symbol, universe, None, settings.theories, window=settings.window, outcomes=outcomes,
                              cache=cache, leader=settings.leader, funding=funding)

    report = audit_prefix_invariance(careless, FileMarketData(), SYMBOLS, [T], _settings(["montecarlo", "context"]),
                                     k_bars=3, samples=2)
    assert not report.passed and report.flagged.get("snapshot") == 2 and report.flagged.get("montecarlo") == 2
