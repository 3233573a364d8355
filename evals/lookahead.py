"""The lookahead canary: an eval must never see a candle (or a funding settlement) from after its decision.

Two independent checks, both recorded in the run's manifest and shown by the report:

1. A guard on the replay's data source (`GuardedMarketData`): every candle set it hands the
   cycle must end at or before the decision time. One that does not is refused (the symbol is
   recorded as skipped with the reason, as any bad data is) and counted as a violation. Funding
   settlements are cut at the decision time as well, so a theory that forgets to cut them cannot
   see the future in a replay.
2. A prefix-invariance audit (`audit_prefix_invariance`): for a seeded sample of decision times
   the data source is asked again (a source offering a later candle is flagged as "data_source"),
   the snapshot is computed twice, once from data as of the decision and once with `k_bars` more
   bars (and funding) appended after it. Analysis as of time t must not depend on anything after
   t, so every theory whose output differs is flagged. The cached snapshots the variants read are
   compared with the fresh computation too (a cache filled from leaked data is caught).

The audit is a sample, not a proof: it catches a theory that reads past the decision time at the
sampled times. Combined with the guard (which covers every decision), a planted lookahead is
caught either way (tests/test_lookahead.py plants both kinds).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from agent.cycle_settings import CycleSettings
from agent.snapshot import FeatureSnapshot
from evals.variants import LookaheadAudit
from theories.base import FitCache
from theories.candles import CandleDataError, Candles, iso
from theories.funding import FundingRates


class LookaheadError(CandleDataError):
    """A data source offered candles that closed after the decision time."""


class GuardedMarketData:
    """A MarketData that refuses any candle closing after the decision time, and counts the attempts.

    `now_ms` is the decision time of the cycle being run (set by the replay before each cycle);
    funding settlements are cut at it.
    """

    def __init__(self, inner: Any, max_examples: int = 5) -> None:
        self.inner = inner
        self.now_ms: int | None = None
        self.violations = 0
        self.examples: list[str] = []
        self.max_examples = max_examples
        self._funding: Mapping[str, FundingRates] | None = None

    def symbols(self) -> list[str]:
        return self.inner.symbols()

    def candles(self, symbol: str, at_ms: int) -> Candles:
        got = self.inner.candles(symbol, at_ms)
        if len(got) and got.last_close_time > at_ms:
            late = int((got.close_time > at_ms).sum())
            self.violations += 1
            message = (f"{symbol}: {late} candle(s) closing after the decision time {iso(at_ms)} "
                       f"(last closes {iso(got.last_close_time)})")
            if len(self.examples) < self.max_examples:
                self.examples.append(message)
            raise LookaheadError(got.source, None, "lookahead refused", message)
        return got

    def funding_rates(self) -> Mapping[str, FundingRates]:
        if self._funding is None:
            get = getattr(self.inner, "funding_rates", None)
            self._funding = dict(get()) if get is not None else {}
        if self.now_ms is None:
            return self._funding
        return {s: f.settled_by(self.now_ms) for s, f in self._funding.items()}


SnapshotFn = Callable[..., FeatureSnapshot]


def _differences(a: FeatureSnapshot, b: FeatureSnapshot) -> set[str]:
    """Names of the theories (and "snapshot" for the header, "orderflow") whose output differs."""
    out: set[str] = set()
    for name in set(a.theories) | set(b.theories) | set(a.errors) | set(b.errors):
        ra, rb = a.theories.get(name), b.theories.get(name)
        same = (ra.model_dump_json() == rb.model_dump_json()) if ra is not None and rb is not None else (ra is rb)
        if not same or a.errors.get(name) != b.errors.get(name):
            out.add(name)
    if (a.time, a.last_price, a.quality) != (b.time, b.last_price, b.quality):
        out.add("snapshot")
    oa = a.orderflow.model_dump_json() if a.orderflow is not None else None
    ob = b.orderflow.model_dump_json() if b.orderflow is not None else None
    if oa != ob:
        out.add("orderflow")
    return out


def audit_prefix_invariance(
    source: SnapshotFn,
    data: Any,
    symbols: Sequence[str],
    decision_times: Sequence[int],
    settings: CycleSettings,
    *,
    k_bars: int = 3,
    samples: int = 12,
    seed: int = 0,
    cached: Callable[[str, int], FeatureSnapshot | None] | None = None,
    compare_cached: Callable[[FeatureSnapshot, FeatureSnapshot], set[str]] | None = None,
    eligible: Callable[[Mapping[str, Candles], str, int], bool] | None = None,
) -> LookaheadAudit:
    """Recompute sampled snapshots with `k_bars` later bars present and flag every theory that changes.

    `source` is a SnapshotSource (e.g. `agent.cycle.compute_snapshot`); `data` the raw (unguarded)
    data source, asked for candles closed by t + k bars; `cached(symbol, t)` returns the snapshot
    the variants read for that decision (None when not cached), compared with the fresh one by
    `compare_cached` (default: every difference). `eligible(universe, symbol, t)` says whether the
    cycle would analyse that symbol then (default: it has candles).
    """
    report = LookaheadAudit(k_bars=k_bars)
    rng = random.Random(seed)
    pairs = [(s, t) for t in decision_times for s in symbols]
    picks = sorted(rng.sample(pairs, min(samples, len(pairs))), key=lambda p: (p[0], p[1]))
    fits_now, fits_later = FitCache(), FitCache()
    all_funding = getattr(data, "funding_rates", lambda: {})()
    compare = compare_cached or _differences
    for symbol, t in picks:
        try:
            offered = data.candles(symbol, t)
        except (CandleDataError, OSError, ValueError):
            offered = None
        if offered is not None and len(offered) and offered.last_close_time > t:
            # the source itself hands over the future (the replay's guard refuses it; count it here too)
            report.flagged["data_source"] = report.flagged.get("data_source", 0) + 1
            if len(report.examples) < 10:
                report.examples.append(f"{symbol} at {iso(t)}: the data source offered candles closing up to "
                                       f"{iso(offered.last_close_time)}")
        now = _universe(data, symbols, t)
        if symbol not in now or (eligible is not None and not eligible(now, symbol, t)):
            continue
        later_ms = t + k_bars * now[symbol].interval_ms
        later = _universe(data, symbols, later_ms)
        funding_now = {s: f.settled_by(t) for s, f in all_funding.items()}
        funding_later = {s: f.settled_by(later_ms) for s, f in all_funding.items()}
        a = source(symbol, now, t, settings, outcomes=(), funding=funding_now, cache=fits_now)
        b = source(symbol, later, t, settings, outcomes=(), funding=funding_later, cache=fits_later)
        report.samples += 1
        changed = _differences(a, b)
        for name in sorted(changed):
            report.flagged[name] = report.flagged.get(name, 0) + 1
        if changed and len(report.examples) < 10:
            report.examples.append(f"{symbol} at {iso(t)}: {', '.join(sorted(changed))} changed with "
                                   f"{k_bars} later bar(s) present")
        if cached is not None:
            hit = cached(symbol, t)
            if hit is not None:
                diff = compare(hit, a)
                if diff:
                    report.cache_mismatches += 1
                    if len(report.examples) < 10:
                        report.examples.append(f"{symbol} at {iso(t)}: the cached snapshot differs from a fresh "
                                               f"computation in {', '.join(sorted(diff))}")
    report.passed = not report.flagged and not report.cache_mismatches
    return report


def _universe(data: Any, symbols: Sequence[str], at_ms: int) -> dict[str, Candles]:
    out: dict[str, Candles] = {}
    for s in symbols:
        try:
            c = data.candles(s, at_ms)
        except (CandleDataError, OSError, ValueError):
            continue
        out[s] = c.closed_by(at_ms)  # the audit's own cut: it must not trust the source it audits
    return out


def merge_guard(report: LookaheadAudit, violations: int, examples: Sequence[str]) -> LookaheadAudit:
    """The audit with the replay guard's count folded in (the run passes only if both are clean)."""
    report.guard_violations += violations
    report.guard_examples = [*report.guard_examples, *examples][:10]
    report.passed = not report.flagged and not report.cache_mismatches and not report.guard_violations
    return report


__all__ = ["GuardedMarketData", "LookaheadError", "audit_prefix_invariance", "merge_guard"]
