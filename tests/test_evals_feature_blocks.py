"""Phase 1 in time blocks (evals.features.time_blocks, compute_features time by time): the same snapshots as the
per-symbol order, byte for byte, and no scheduled fit made twice."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import ClassVar

import evals.features as features_mod
from agent.cycle_settings import CycleSettings
from evals.features import FeatureCache, compute_features, refit_periods, time_blocks
from evals.replay import Plan, _features_tasks
from evals.variants import VariantSpec
from tests.test_evals_cache import Timed
from theories.base import FitCache

HOUR = 3_600_000
DAY = 24 * HOUR
SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")
# 2025-11-10T16:00Z every 4 hours to 2025-11-12T12:00Z: two midnights, each a block and a fit-period boundary
TIMES = [1762790400000 + i * 4 * HOUR for i in range(12)]
# every scheduled fit but regime's (a Markov fit costs seconds), on short periods whose lcm is a day
FITTED = {
    "context": {},
    "kalman": {"fit_every_ms": 8 * HOUR, "fit_bars": 200, "lookback": 200},
    "stationarity": {"every_ms": 12 * HOUR, "lookback": 200},
    "forest": {"every_ms": 12 * HOUR, "train_bars": 500, "n_estimators": 10, "validation_rows": 100,
               "min_train_rows": 100},
    "momentum": {},
}


def settings() -> CycleSettings:
    return CycleSettings(run="t", symbols=SYMBOLS, theories=FITTED)


class CountingFitCache(FitCache):
    """A FitCache that records every key it fitted (shared by all instances of a test)."""

    fitted: ClassVar[Counter] = Counter()

    def get_or_fit(self, key, fit):
        if key not in self._store:
            CountingFitCache.fitted[key] = CountingFitCache.fitted[key] + 1
        return super().get_or_fit(key, fit)


def dump(path: Path) -> dict[tuple[str, int], str]:
    cache = FeatureCache(path)
    try:
        key = next(iter(cache.db.execute("SELECT key FROM entries")))[0]
        return cache.get_range(key, 0, 2**62)
    finally:
        cache.close()


def test_refit_periods_resolve_every_schedule_with_its_default():
    every = CycleSettings(run="t", symbols=SYMBOLS, theories={n: None for n in
                                                               ("regime", "kalman", "forest", "stationarity", "hurst")})
    defaults = {features_mod.THEORIES[n].params().model_dump()[f] for n, f in
                (("regime", "refit_every_ms"), ("kalman", "fit_every_ms"), ("forest", "every_ms"),
                 ("stationarity", "every_ms"))}
    assert refit_periods(every) == sorted(defaults)
    assert refit_periods(settings()) == [8 * HOUR, 12 * HOUR]
    assert refit_periods(CycleSettings(run="t", symbols=SYMBOLS, theories={"momentum": None})) == []


def test_time_blocks_are_whole_refit_periods_aligned_to_the_epoch():
    blocks = time_blocks(TIMES, settings(), DAY)
    assert [t for b in blocks for t in b] == TIMES
    assert len(blocks) == 3
    for block in blocks:
        assert len({t // DAY for t in block}) == 1  # the lcm of 8 and 12 hours: a day, from the epoch
    assert time_blocks(TIMES, settings(), 2 * DAY) != blocks  # about two days a block: two periods each
    assert all(len({t // (2 * DAY) for t in b}) == 1 for b in time_blocks(TIMES, settings(), 2 * DAY))
    assert time_blocks(TIMES, settings(), HOUR) == blocks  # never less than one whole period


def test_blocks_give_the_per_symbol_snapshots_byte_for_byte_and_fit_once(tmp_path, monkeypatch):
    monkeypatch.setattr(features_mod, "FitCache", CountingFitCache)
    # the former order: one pass per symbol over every time, one FitCache for it
    CountingFitCache.fitted = Counter()
    for symbol in SYMBOLS:
        compute_features(tmp_path / "symbols.sqlite", Timed(), SYMBOLS, [symbol], TIMES, settings())
    # time blocks of a day, every symbol in each, a FitCache per block
    CountingFitCache.fitted = Counter()
    blocks = time_blocks(TIMES, settings(), DAY)
    for block in blocks:
        compute_features(tmp_path / "blocks.sqlite", Timed(), SYMBOLS, SYMBOLS, block, settings())
    fitted = CountingFitCache.fitted
    by_symbol, by_block = dump(tmp_path / "symbols.sqlite"), dump(tmp_path / "blocks.sqlite")
    assert len(by_symbol) == len(SYMBOLS) * len(TIMES)
    assert by_block == by_symbol
    # the fits really ran (not every theory failing alike) and were made once a (symbol, period) across blocks
    sample = by_block[("ETH/USDT", TIMES[-1])]
    for name in ("kalman", "stationarity", "forest", "context"):
        assert f'"{name}"' in sample and "failed" not in sample
    assert max(fitted.values()) == 1
    kinds = Counter(key[0] if isinstance(key, tuple) and isinstance(key[0], str) else "?" for key in fitted)
    assert kinds["context"] == len(TIMES)  # the universe part once per time, shared by the symbols


def test_phase1_tasks_cover_every_pair_once_and_split_symbols_only_when_blocks_are_few(monkeypatch):
    monkeypatch.setattr("evals.replay.cycle_settings", lambda plan, spec: settings())
    spec = VariantSpec(name="h", provider="heuristic")
    plan = Plan("run", None, SYMBOLS, tuple(TIMES))
    for workers in (1, 2):
        tasks = _features_tasks(plan, spec, workers)
        pairs = Counter((s, t) for _, symbols, times in tasks for s in symbols for t in times)
        assert set(pairs) == {(s, t) for s in SYMBOLS for t in TIMES} and max(pairs.values()) == 1
        assert all(len({t // DAY for t in times}) == 1 for _, _, times in tasks)  # whole periods (lcm: a day)
    assert all(list(symbols) == list(SYMBOLS) for _, symbols, _ in _features_tasks(plan, spec, 1))  # never split
    assert len(_features_tasks(plan, spec, 2)) >= 4  # 3 one-day blocks for 2 workers: the symbols split too
