"""Benchmark: the full feature snapshot for 10 symbols x 500 hourly candles from ../shared/data.

Funding rates are loaded from ../shared/data/funding/binance-usdm, as a live cycle would have them.

Targets (issue 2): <= 50 ms per symbol with cached model fits, <= 0.5 s for all ten.
The first pass runs with an empty fit cache (cold: Markov, Kalman-MLE and forest fits are made);
the following passes reuse the fits, as hourly cycles do between scheduled refits. Each figure
is the median over the warm passes. Prints a table, then one JSON line.

    python bench/theories.py [--runs 7]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.market import load_candles  # noqa: E402
from agent.market.funding import load_funding  # noqa: E402
from agent.snapshot import build_snapshot  # noqa: E402
from theories.base import FitCache  # noqa: E402
from theories.registry import DEFAULT_SET  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "candles" / "binance-spot-1h"
WINDOW = 500


def one_pass(universe, at_ms, cache, funding):
    timings: dict[str, float] = {}
    start = time.perf_counter()
    for symbol in universe:
        snap = build_snapshot(
            symbol, universe, at_ms, DEFAULT_SET, window=WINDOW, cache=cache, funding=funding, timings=timings
        )
        if set(snap.errors) - {"funding_extremes"}:  # SOL and DOGE have no funding history in the source
            raise SystemExit(f"{symbol}: theories failed: {snap.errors}")
    return time.perf_counter() - start, timings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="warm passes (median reported)")
    args = parser.parse_args()
    if not DATA.is_dir():
        print(f"skipped: no shared data at {DATA}")
        print(json.dumps({"skipped": f"no shared data at {DATA}"}))
        return 0
    full = load_candles(DATA)
    funding = load_funding(DATA.parent.parent / "funding" / "binance-usdm")
    at_ms = min(c.last_close_time for c in full.values())
    # the last 2000 candles of each: enough history for the scheduled fits, 500 in each window
    universe = {s: c.closed_by(at_ms).tail(2000) for s, c in full.items()}
    n = len(universe)

    cache = FitCache()
    cold_total, cold = one_pass(universe, at_ms, cache, funding)
    parts = [*DEFAULT_SET, "orderflow"]  # the candle part of order flow (volume profile) runs in every snapshot
    warm_totals, warm = [], {name: [] for name in parts}
    for _ in range(args.runs):
        total, timings = one_pass(universe, at_ms, cache, funding)
        warm_totals.append(total)
        for name, seconds in timings.items():
            warm[name].append(seconds)

    print(f"{n} symbols x {WINDOW} hourly candles, as of {at_ms}; median of {args.runs} warm passes\n")
    print(f"{'theory':<18}{'cold, all (ms)':>16}{'warm / symbol (ms)':>20}{'warm, all (ms)':>16}")
    per_theory = {}
    for name in parts:
        med = statistics.median(warm[name])
        per_theory[name] = round(med / n * 1000, 3)
        print(f"{name:<18}{cold[name] * 1000:>16.1f}{med / n * 1000:>20.2f}{med * 1000:>16.1f}")
    total = statistics.median(warm_totals)
    print(f"{'TOTAL':<18}{cold_total * 1000:>16.1f}{total / n * 1000:>20.2f}{total * 1000:>16.1f}")
    ok = total / n <= 0.050 and total <= 0.5
    print(f"\ntargets: <= 50 ms per symbol, <= 0.5 s for all ten: {'met' if ok else 'MISSED'}")
    print(json.dumps({
        "per_symbol_ms": round(total / n * 1000, 2),
        "ten_symbols_s": round(total, 4),
        "cold_ten_symbols_s": round(cold_total, 3),
        "symbols": n,
        "candles": WINDOW,
        "runs": args.runs,
        "per_theory_ms": per_theory,
        "targets_met": ok,
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
