"""The shared theory-results cache of an eval run: each snapshot computed once, read by every variant.

A snapshot's theory outputs depend on the candles closed by the decision time, the theory set
with its parameters, the window and the leader; not on the variant, with one exception: a
theory that reads the variant's own closed-trade outcomes (`TheoryContext.outcomes`, today only
`bayes`). So the cache holds, per (symbol, decision time, theory-set fingerprint, window), the
snapshot of the set WITHOUT the outcome-dependent theories; each variant's cycle adds those from
its own trades (`CachedSnapshotSource`), in the set's order, so the result equals what
`build_snapshot` would have produced for that variant (a test checks the equality). Every other
input of a theory (`TheoryContext`: candles, history, universe, leader, funding, the fit cache)
is the same for every variant of a run. Anonymisation is applied later, by the synthesiser, so
one cached snapshot serves named and anonymised variants alike.

Storage: one SQLite table (stdlib `sqlite3`, WAL so the two worker processes can write while
others read), the snapshot as its JSON (`FeatureSnapshot.model_dump_json`, a lossless round
trip) compressed with zlib level 1 (about 9 KB of JSON per snapshot with every theory on, so a
1-year hourly 10-symbol run would otherwise hold some 0.8 GB). Reads are batched: a cycle's
miss loads the next `prefetch_ms` of decision times for every symbol at once, so a replay costs
one query per block of cycles, not one per decision.
"""

from __future__ import annotations

import logging
import sqlite3
import zlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from agent.cycle_settings import CycleSettings, DataPolicy
from agent.snapshot import FeatureSnapshot, build_snapshot
from evals.variants import theory_fingerprint
from theories.base import FitCache, TheoryContext, TheoryError, TheoryResult
from theories.candles import CandleDataError, Candles, iso
from theories.funding import FundingRates
from theories.registry import THEORIES

log = logging.getLogger(__name__)

# Theories whose output depends on the variant's own trading (TheoryContext.outcomes): never cached.
OUTCOME_THEORIES = frozenset({"bayes"})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS features (
    symbol TEXT NOT NULL,
    time_ms INTEGER NOT NULL,
    fingerprint TEXT NOT NULL,
    window INTEGER NOT NULL,
    snapshot BLOB NOT NULL,
    PRIMARY KEY (fingerprint, window, time_ms, symbol)
) WITHOUT ROWID
"""


def _pack(text: str) -> bytes:
    return zlib.compress(text.encode(), 1)


def _unpack(blob: bytes) -> str:
    return zlib.decompress(blob).decode()


def shared_theories(theories: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a theory set that is the same for every variant (outcome-dependent theories removed)."""
    return {n: p for n, p in theories.items() if n not in OUTCOME_THEORIES}


def set_fingerprint(settings: CycleSettings) -> str:
    return theory_fingerprint({n: p or {} for n, p in settings.theories.items()}, settings.window, settings.leader)


class FeatureCache:
    """features.sqlite: (symbol, decision time, fingerprint, window) -> shared snapshot JSON."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=30.0)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(_SCHEMA)
        self.db.commit()

    def close(self) -> None:
        self.db.close()

    def times(self, fingerprint: str, window: int, symbol: str) -> set[int]:
        rows = self.db.execute("SELECT time_ms FROM features WHERE fingerprint=? AND window=? AND symbol=?",
                               (fingerprint, window, symbol))
        return {r[0] for r in rows}

    def put_many(self, fingerprint: str, window: int, rows: Iterable[tuple[str, int, str]]) -> int:
        """Insert (symbol, time, json) rows in one transaction; rows already there are kept as they are."""
        rows = [(s, t, fingerprint, window, _pack(j)) for s, t, j in rows]
        with self.db:
            self.db.executemany("INSERT OR IGNORE INTO features VALUES (?, ?, ?, ?, ?)", rows)
        return len(rows)

    def get_range(self, fingerprint: str, window: int, start_ms: int, end_ms: int) -> dict[tuple[str, int], str]:
        """Every cached snapshot with start <= time < end, by (symbol, time)."""
        rows = self.db.execute(
            "SELECT symbol, time_ms, snapshot FROM features WHERE fingerprint=? AND window=? "
            "AND time_ms>=? AND time_ms<?", (fingerprint, window, start_ms, end_ms))
        return {(s, t): _unpack(j) for s, t, j in rows}

    def get(self, fingerprint: str, window: int, symbol: str, time_ms: int) -> str | None:
        row = self.db.execute("SELECT snapshot FROM features WHERE fingerprint=? AND window=? AND symbol=? "
                              "AND time_ms=?", (fingerprint, window, symbol, time_ms)).fetchone()
        return None if row is None else _unpack(row[0])

    def count(self, fingerprint: str | None = None) -> int:
        if fingerprint is None:
            return self.db.execute("SELECT COUNT(*) FROM features").fetchone()[0]
        return self.db.execute("SELECT COUNT(*) FROM features WHERE fingerprint=?", (fingerprint,)).fetchone()[0]


def shared_snapshot(symbol: str, universe: Mapping[str, Candles], decision_ms: int, settings: CycleSettings, *,
                    funding: Mapping[str, FundingRates], cache: FitCache | None) -> FeatureSnapshot:
    """The variant-independent snapshot: the set without outcome-dependent theories, computed now."""
    return build_snapshot(symbol, universe, decision_ms, shared_theories(settings.theories), window=settings.window,
                          outcomes=(), cache=cache, leader=settings.leader, funding=funding)


def complete_snapshot(shared: FeatureSnapshot, symbol: str, universe: Mapping[str, Candles], decision_ms: int,
                      settings: CycleSettings, *, outcomes: Sequence[float], funding: Mapping[str, FundingRates],
                      cache: FitCache | None) -> FeatureSnapshot:
    """Add the variant's outcome-dependent theories to a shared snapshot, in the set's order.

    Errors are handled exactly as `build_snapshot` handles them (TheoryError -> its reason; any
    other exception -> "failed: ...", logged), so the result equals a fresh `build_snapshot`.
    """
    own = [n for n in settings.theories if n in OUTCOME_THEORIES]
    if not own:
        return shared
    history = universe[symbol].closed_by(decision_ms)
    cut = {s: c.closed_by(decision_ms) for s, c in universe.items()}
    ctx = TheoryContext(symbol=symbol, at_ms=decision_ms, candles=history.tail(settings.window), history=history,
                        universe={s: c for s, c in cut.items() if len(c)}, outcomes=tuple(outcomes), cache=cache,
                        leader=settings.leader, funding=(funding or {}).get(symbol))
    extra: dict[str, TheoryResult] = {}
    extra_errors: dict[str, str] = {}
    for name in own:
        try:
            extra[name] = THEORIES[name](ctx, settings.theories[name])
        except TheoryError as exc:
            extra_errors[name] = str(exc)
        except Exception as exc:  # as build_snapshot: a theory's bug fails closed, loudly
            log.exception("theory %s failed on %s at %s", name, symbol, iso(decision_ms))
            extra_errors[name] = f"failed: {type(exc).__name__}: {exc}"
    theories = {n: extra[n] if n in extra else shared.theories[n] for n in settings.theories
                if n in extra or n in shared.theories}
    errors = {n: extra_errors[n] if n in extra_errors else shared.errors[n] for n in settings.theories
              if n in extra_errors or n in shared.errors}
    return FeatureSnapshot.model_construct(**{**dict(shared), "theories": theories, "errors": errors})


class CachedSnapshotSource:
    """A `SnapshotSource` that reads the shared snapshot from the cache and adds the variant's own theories.

    A decision not in the cache (phase 1 skipped it, or the cache was cleared) is computed on
    the spot, stored for the others and counted as a miss. `computed` counts every snapshot
    this source had to compute; `reused` every one it read.
    """

    def __init__(self, cache: FeatureCache, settings: CycleSettings, prefetch_ms: int = 7 * 86_400_000) -> None:
        self.cache = cache
        self.fingerprint = set_fingerprint(settings)
        self.window = settings.window
        self.prefetch_ms = prefetch_ms
        self._block: dict[tuple[str, int], str] = {}
        self._block_end = -1
        self.reused = 0
        self.misses = 0
        self._checked: CycleSettings | None = None

    def _lookup(self, symbol: str, decision_ms: int) -> str | None:
        if not (decision_ms < self._block_end and self._block and decision_ms >= self._block_start):
            self._block_start, self._block_end = decision_ms, decision_ms + self.prefetch_ms
            self._block = self.cache.get_range(self.fingerprint, self.window, self._block_start, self._block_end)
        return self._block.get((symbol, decision_ms))

    def __call__(self, symbol: str, universe: Mapping[str, Candles], decision_ms: int, settings: CycleSettings, *,
                 outcomes: Sequence[float], funding: Mapping[str, FundingRates],
                 cache: FitCache | None) -> FeatureSnapshot:
        if settings is not self._checked:  # hashing the set costs more than the lookup: once per settings object
            if set_fingerprint(settings) != self.fingerprint:
                raise ValueError("the cycle's theory set is not the one this feature cache was opened for")
            self._checked = settings
        text = self._lookup(symbol, decision_ms)
        if text is not None:
            self.reused += 1
            shared = FeatureSnapshot.model_validate_json(text)
        else:
            self.misses += 1
            shared = shared_snapshot(symbol, universe, decision_ms, settings, funding=funding, cache=cache)
            self.cache.put_many(self.fingerprint, self.window, [(symbol, decision_ms, shared.model_dump_json())])
        return complete_snapshot(shared, symbol, universe, decision_ms, settings, outcomes=outcomes, funding=funding,
                                 cache=cache)


def universe_at(data: Any, symbols: Sequence[str], decision_ms: int) -> dict[str, Candles]:
    """What the cycle's data step sees: each symbol's candles closed by the decision time; bad ones left out."""
    out: dict[str, Candles] = {}
    for s in symbols:
        try:
            out[s] = data.candles(s, decision_ms)
        except (CandleDataError, OSError, ValueError):
            continue
    return out


def decidable(universe: Mapping[str, Candles], symbol: str, decision_ms: int, policy: DataPolicy,
              window: int) -> bool:
    """Whether the cycle would analyse this symbol (its data passes the cycle's own data rules)."""
    from agent.cycle import data_problem

    return symbol in universe and data_problem(universe[symbol], decision_ms, policy, window) is None


def compute_features(cache_path: str | Path, data: Any, universe_symbols: Sequence[str], symbols: Sequence[str],
                     times: Sequence[int], settings: CycleSettings, *, batch: int = 200,
                     progress: Any = None) -> tuple[int, float]:
    """Phase 1 for some symbols: every decidable (symbol, time) not yet cached, chronologically per symbol.

    Chronological order lets the scheduled fits (FitCache, keyed by fit time) be made once and
    reused until the next refit. Returns (snapshots computed, seconds). `progress`, if given, is
    called with the number of (symbol, time) pairs dealt with since the last call.
    """
    import time as _time

    start = _time.perf_counter()
    cache = FeatureCache(cache_path)
    fp = set_fingerprint(settings)
    fits = FitCache()
    computed = 0
    try:
        for symbol in symbols:
            done = cache.times(fp, settings.window, symbol)
            pending: list[tuple[str, int, str]] = []
            ticked = 0
            for t in times:
                ticked += 1
                if t not in done:
                    universe = universe_at(data, universe_symbols, t)
                    funding = data.funding_rates() if hasattr(data, "funding_rates") else {}
                    if decidable(universe, symbol, t, settings.data, settings.window):
                        snap = shared_snapshot(symbol, universe, t, settings, funding=funding, cache=fits)
                        pending.append((symbol, t, snap.model_dump_json()))
                        computed += 1
                if len(pending) >= batch:
                    cache.put_many(fp, settings.window, pending)
                    pending = []
                if progress is not None and ticked >= 50:
                    progress(ticked)
                    ticked = 0
            cache.put_many(fp, settings.window, pending)
            if progress is not None and ticked:
                progress(ticked)
    finally:
        cache.close()
    return computed, _time.perf_counter() - start


__all__ = [
    "OUTCOME_THEORIES", "CachedSnapshotSource", "FeatureCache", "complete_snapshot", "compute_features",
    "decidable", "set_fingerprint", "shared_snapshot", "shared_theories", "universe_at",
]
