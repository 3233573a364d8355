"""Benchmark: the paper broker's exported memory after many finished trades, and what writing it costs.

The cycle stores the broker's memory (`PaperBroker.export_state`, as JSON) with every decision that
changes it, so its size is paid again at every decision. A finished order is kept for a week, then
forgotten with only its client order id kept (`agent.brokers.paper`, Memory). This script places
one market order every 3 hours on synthetic hourly candles (a seeded random walk, bracket 1% each
side, 2-hour time stop, so every trade finishes within the next sync), syncs after each, and then
times export_state + json.dumps (what `Store._put_state` does) for N finished trades: as the broker
is, and with forgetting turned off (the memory before it existed: every finished order and the
whole balance ledger). Prints a table, then one JSON line.

    python bench/broker_state.py [--trades 100,1000,3000] [--repeat 20]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.brokers import paper  # noqa: E402
from agent.brokers.base import OrderIntent, client_order_id  # noqa: E402
from theories.candles import Candles  # noqa: E402

H = 3_600_000
T0 = 1_700_000_000_000 - 1_700_000_000_000 % H
SYMBOL = "BTC/USDT"


def broker_after(trades: int) -> paper.PaperBroker:
    hours = 3 * trades + 6
    rng = np.random.default_rng(0)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, hours)))
    open_ = np.r_[100.0, close[:-1]]
    c = Candles(T0 + np.arange(hours) * H, open_, np.maximum(open_, close) * 1.004,
                np.minimum(open_, close) * 0.996, close, np.ones(hours), symbol=SYMBOL)
    b = paper.PaperBroker()
    for k in range(trades):
        at, price, decision = T0 + (3 * k + 1) * H, float(c.close[3 * k]), f"cycle{k}/{SYMBOL}"
        b.submit(OrderIntent(decision_id=decision, cycle_id=f"cycle{k}", client_order_id=client_order_id(decision),
                             symbol=SYMBOL, side="LONG", quantity=0.1, stop=price * 0.99, target=price * 1.01,
                             entry_reference=price, created_ms=at, time_stop_ms=at + 2 * H), at)
        b.sync(at + 3 * H, {SYMBOL: c})
    return b


def measure(trades: int, repeat: int, before: bool = False) -> dict:
    """The memory after `trades`; `before`: without the two fields forgetting added (the old memory had neither)."""
    b = broker_after(trades)

    def state() -> dict:
        s = b.export_state()
        return {k: v for k, v in s.items() if k not in ("finished_ms", "retired")} if before else s

    text = json.dumps(state(), sort_keys=True)
    started = time.perf_counter()
    for _ in range(repeat):
        json.dumps(state(), sort_keys=True)
    return {"orders_kept": len(b.orders()), "state_kb": round(len(text) / 1024, 1),
            "write_ms": round((time.perf_counter() - started) / repeat * 1e3, 3),
            "parts_kb": {k: round(len(json.dumps(v)) / 1024, 1) for k, v in json.loads(text).items()
                         if len(json.dumps(v)) >= 1024}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", default="100,1000,3000", help="comma-separated numbers of finished trades")
    parser.add_argument("--repeat", type=int, default=20, help="timed exports per figure (default 20)")
    args = parser.parse_args(argv)
    counts = [int(x) for x in args.trades.split(",")]
    keep, keep_ledger = paper.KEEP_FINISHED_MS, paper.KEEP_LEDGER_MS
    results: dict[str, dict[str, dict]] = {"forgetting": {}, "keeping_all": {}}
    for n in counts:
        results["forgetting"][str(n)] = measure(n, args.repeat)
        # every finished order and ledger entry kept: the memory before forgetting existed
        paper.KEEP_FINISHED_MS = paper.KEEP_LEDGER_MS = 2**62
        try:
            results["keeping_all"][str(n)] = measure(n, args.repeat, before=True)
        finally:
            paper.KEEP_FINISHED_MS, paper.KEEP_LEDGER_MS = keep, keep_ledger
    print(f"{'finished trades':>15}  {'memory':>12}  {'orders kept':>11}  {'state KB':>9}  {'write ms':>9}  "
          "largest parts (KB)")
    for n in counts:
        for mode in ("forgetting", "keeping_all"):
            r = results[mode][str(n)]
            parts = ", ".join(f"{k} {v}" for k, v in sorted(r["parts_kb"].items(), key=lambda kv: -kv[1]))
            print(f"{n:>15}  {mode:>12}  {r['orders_kept']:>11}  {r['state_kb']:>9.1f}  {r['write_ms']:>9.2f}  {parts}")
    print(json.dumps({"keep_finished_days": keep / 86_400_000, "keep_ledger_days": keep_ledger / 86_400_000,
                      **results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
