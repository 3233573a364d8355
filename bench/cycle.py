"""Benchmark: one full decision cycle for the 10 symbols of ../shared/data, end to end.

Heuristic provider (no LLM), paper broker, SQLite store in a temporary folder, the product's
default theory set and risk gate; funding rates from ../shared/data/funding/binance-usdm.
Target (issue 7): <= 1 s per cycle excluding LLM time.

The first cycle is cold: it reads the candle files and makes the scheduled model fits (Markov,
Kalman MLE, forest), which a long-running agent does once a day. The timed cycles are the next
hours' cycles, as the scheduler runs them, with the fits reused; the figure is their median,
with the breakdown by stage (data, broker sync, snapshot, LLM, gate, broker, store). Prints a
table, then one JSON line whose `cycle_total_s` is the median warm cycle.

    python bench/cycle.py [--cycles 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.brokers.paper import PaperBroker  # noqa: E402
from agent.cycle import CycleDeps, CycleSettings, FileMarketData, run_cycle  # noqa: E402
from agent.llm.budget import CostBudget  # noqa: E402
from agent.llm.heuristic import HeuristicProvider  # noqa: E402
from agent.llm.prompt import PromptTemplate  # noqa: E402
from agent.llm.records import CallRecords  # noqa: E402
from agent.llm.synthesis import Synthesiser  # noqa: E402
from agent.signal import SignalRules  # noqa: E402
from agent.store import Store  # noqa: E402
from risk import RiskGate  # noqa: E402
from theories.candles import iso  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
CANDLES = DATA / "candles" / "binance-spot-1h"
FUNDING = DATA / "funding" / "binance-usdm"
H = 3_600_000
TARGET_S = 1.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=5, help="warm cycles timed (median reported)")
    args = parser.parse_args()
    if not CANDLES.is_dir():
        print(f"skipped: no shared data at {CANDLES}")
        print(json.dumps({"skipped": f"no shared data at {CANDLES}"}))
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        store = Store.at(Path(tmp) / "store.sqlite")
        records = CallRecords(Path(tmp) / "calls.sqlite")
        start = time.perf_counter()
        data = FileMarketData(CANDLES, FUNDING)
        symbols = data.symbols()
        last = min(data.candles(s, 2**62).last_close_time for s in symbols)
        read_s = time.perf_counter() - start
        synth = Synthesiser(provider=HeuristicProvider(), template=PromptTemplate.load("baseline"),
                            rules=SignalRules(), price=None, budget=CostBudget(daily_usd=0, per_cycle_usd=0),
                            records=records)
        deps = CycleDeps(store=store, broker=PaperBroker(), synthesiser=synth, gate=RiskGate(), data=data,
                         settings=CycleSettings(symbols=tuple(symbols)))
        first = last - args.cycles * H
        start = time.perf_counter()
        cold = run_cycle(first, deps)
        cold_s = time.perf_counter() - start
        warm, walls = [], []
        for k in range(1, args.cycles + 1):
            start = time.perf_counter()
            warm.append(run_cycle(first + k * H, deps))
            walls.append(time.perf_counter() - start)
        store.close()
        records.close()

    stages = list(cold.timings)
    med = {s: statistics.median(r.timings[s] for r in warm) for s in stages}
    llm = statistics.median(r.llm_seconds for r in warm)
    total = statistics.median(walls)
    excl_llm = statistics.median(w - r.llm_seconds for w, r in zip(walls, warm, strict=True))
    outcomes: dict[str, int] = {}
    for r in warm:
        for x in r.results:
            outcomes[x.outcome] = outcomes.get(x.outcome, 0) + 1

    print(f"{len(symbols)} symbols, hourly cycles from {iso(first + H)}; median of {args.cycles} warm cycles")
    print(f"reading the candle files once: {read_s:.2f} s; cold first cycle (fits made): {cold_s:.2f} s\n")
    print(f"{'stage':<10}{'cold (s)':>10}{'warm (s)':>10}")
    for s in stages:
        print(f"{s:<10}{cold.timings[s]:>10.3f}{med[s]:>10.3f}")
    print(f"{'TOTAL':<10}{cold_s:>10.3f}{total:>10.3f}")
    print(f"\nLLM time inside: {llm:.4f} s; excluding it: {excl_llm:.3f} s; decisions: {outcomes}")
    ok = excl_llm <= TARGET_S
    print(f"target: <= {TARGET_S:g} s per cycle excluding LLM time: {'met' if ok else 'MISSED'}")
    print(json.dumps({
        "cycle_total_s": round(total, 4),
        "cycle_excluding_llm_s": round(excl_llm, 4),
        "llm_s": round(llm, 4),
        "cold_cycle_s": round(cold_s, 3),
        "read_files_s": round(read_s, 3),
        "stages_s": {s: round(v, 4) for s, v in med.items()},
        "symbols": len(symbols),
        "cycles": args.cycles,
        "target_s": TARGET_S,
        "target_met": ok,
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
