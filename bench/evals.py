"""Benchmark: the evals replay of the heuristic and every seed-strategy baseline (issue 9's speed target).

A variants file with no declared variant gets the baselines only: the heuristic synthesiser and
each seed strategy alone (`strategy:<name>`), all on the product's default theory set (so one
shared feature computation serves all six), plus the buy-and-hold curves. The run replays
`--days` days (default 365) ending `--end` at `--cadence` (default hourly) over every symbol of
../shared/data/candles/binance-spot-1h (10), with funding from ../shared/data/funding/binance-usdm,
in `--workers` processes (default 2), through `evals.replay.run_evals` exactly as
`signal-agent evals run` does. Target: a 1-year, 10-symbol, hourly replay in <= 10 minutes.

The run is made twice on one shared features cache (`--features-cache`, default a new file in a
temporary folder): first COLD (every snapshot computed), then WARM (a second run of the same
file, as when comparing another prompt or model on the same history: every snapshot read from
the cache). Prints a table per run (phase timings, decisions, decisions per second), then one
JSON line with the cold run's `decisions_per_s` (decisions of all replayed variants / whole run
wall time) and `replay_total_s` (whole run wall time: features, replay, baselines, audit), and
the warm run's `warm_replay_total_s`, `warm_decisions_per_s` and `warm_phases_s`;
`main_process_cpu_s` / `warm_main_process_cpu_s` are this process's CPU seconds (the whole run's
with `--workers 1`, where nothing runs elsewhere: the figure to trust on a shared machine). A shorter
period (`--days 7`) also prints the full-year figure extrapolated linearly from it, marked as
such. `--no-warm` makes the cold run only. Skips cleanly (a JSON line with "skipped") when
../shared/data is absent.

    python bench/evals.py [--days 365] [--cadence 1h] [--workers 2] [--symbols BTC,ETH] [--no-warm]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHARED = ROOT.parent / "shared" / "data"
CANDLES = SHARED / "candles" / "binance-spot-1h"
FUNDING = SHARED / "funding" / "binance-usdm"
TARGET_S = 600.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=float, default=365.0, help="length of the replayed period (default 365)")
    parser.add_argument("--end", default="2025-11-15", help="end of the period, UTC (default 2025-11-15)")
    parser.add_argument("--cadence", default="1h", help="decision cadence (default 1h)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--symbols", help="comma-separated symbols (default: all in the data folder)")
    parser.add_argument("--audit-samples", type=int, default=6, help="lookahead audit samples (default 6)")
    parser.add_argument("--runs-dir", help="keep the run folder here (default: a temporary folder, deleted)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.add_argument("--features-cache", help="the shared features cache file (default: a new one in a temporary "
                                                 "folder, so the first run is cold)")
    parser.add_argument("--no-warm", action="store_true", help="no second (warm-cache) run")
    args = parser.parse_args(argv)

    if not CANDLES.is_dir():
        why = f"no shared data at {CANDLES}"
        print(f"skipped: {why}")
        print(json.dumps({"skipped": why}))
        return 0

    from evals.replay import run_evals

    end = datetime.fromisoformat(args.end).replace(tzinfo=UTC)
    start = end - timedelta(days=args.days)
    universe = ""
    if args.symbols:
        universe = "universe = [" + ", ".join(json.dumps(s.strip()) for s in args.symbols.split(",")) + "]\n"
    text = (f'start = "{start.isoformat()}"\nend = "{end.isoformat()}"\ncadence = "{args.cadence}"\n{universe}'
            f'data = "{CANDLES}"\nfunding = "{FUNDING if FUNDING.is_dir() else ""}"\n')
    if not FUNDING.is_dir():
        text = text.replace('funding = ""\n', "")

    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(args.runs_dir) if args.runs_dir else Path(tmp) / "runs"
        config = Path(tmp) / "bench-evals.toml"
        config.write_text(text, encoding="utf-8")
        cache = args.features_cache or str(Path(tmp) / "features.sqlite")

        def one_run(run_id: str):
            t0, c0 = time.perf_counter(), time.process_time()
            m = run_evals(config, runs, run_id=run_id, workers=args.workers, progress=not args.no_progress,
                          yes=True, audit_samples=args.audit_samples, features_cache=cache)
            return m, time.perf_counter() - t0, time.process_time() - c0

        stamp = time.strftime("%Y%m%dT%H%M%S")  # new run folders when --runs-dir keeps them
        manifest, total, cpu = one_run(f"bench-{stamp}")
        warm = None if args.no_warm else one_run(f"bench-{stamp}-warm")

    decisions = table(manifest, total, args, "COLD" if manifest.features.from_cache == 0 else
                      "FIRST (the cache already held some snapshots: not cold)")
    full_year = None
    if args.days < 365:
        full_year = total * 365.0 / args.days
        print(f"\nfull year extrapolated linearly from {args.days:g} days: {full_year:.0f} s "
              "(an extrapolation, not a measurement; the model refits are weekly, so a period of a few weeks "
              "over-weights them)")
    target_met = total <= TARGET_S if args.days >= 365 else None
    print(f"target: 1-year, 10-symbol, hourly replay <= {TARGET_S:.0f} s: "
          + ("met" if target_met else "NOT met" if target_met is False else "not measured (shorter period)"))
    result = {
        "decisions_per_s": round(decisions / total, 2), "replay_total_s": round(total, 2), "decisions": decisions,
        "cycles": sum(v.cycles_done for v in manifest.variants), "variants": len(manifest.variants),
        "symbols": len(manifest.universe), "decision_times": manifest.decision_times, "days": args.days,
        "cadence": args.cadence, "workers": args.workers, "phases_s": manifest.phases_s,
        "features_computed": manifest.features.computed, "features_from_cache": manifest.features.from_cache,
        "replay_decisions_per_s": round(decisions / max(manifest.phases_s.get("replay", 0), 1e-9), 2),
        "full_year_extrapolated_s": None if full_year is None else round(full_year, 1),
        "target_s": TARGET_S, "target_met": target_met, "main_process_cpu_s": round(cpu, 2),
    }
    if warm is not None:
        wm, wtotal, wcpu = warm
        print()
        wdecisions = table(wm, wtotal, args, "WARM (a second run on the same features cache)")
        print(f"warm vs cold: {wtotal:.1f} s vs {total:.1f} s whole run")
        result.update({
            "warm_replay_total_s": round(wtotal, 2), "warm_decisions_per_s": round(wdecisions / wtotal, 2),
            "warm_phases_s": wm.phases_s, "warm_features_computed": wm.features.computed,
            "warm_features_from_cache": wm.features.from_cache, "warm_main_process_cpu_s": round(wcpu, 2),
        })
    print(json.dumps(result))
    return 0


def table(manifest, total: float, args: argparse.Namespace, label: str) -> int:
    """Print one run's table; returns its decisions."""
    decisions = sum(v.decisions_done for v in manifest.variants)
    cycles = sum(v.cycles_done for v in manifest.variants)
    phases = manifest.phases_s
    print(f"{label} evals replay: {len(manifest.variants)} variants x {len(manifest.universe)} symbols x "
          f"{manifest.decision_times} decision times ({args.cadence}, {args.days:g} days to {args.end}), "
          f"{args.workers} worker processes")
    print(f"variants: {', '.join(v.name for v in manifest.variants)}")
    if manifest.skipped_baselines:
        print(f"skipped baselines: {manifest.skipped_baselines}")
    print()
    print(f"{'phase':<12} {'seconds':>9}  note")
    notes = {
        "setup": "read the variants file, hash the data files",
        "features": f"{manifest.features.computed} shared snapshots computed "
                    f"({manifest.features.computed / max(phases.get('features', 0), 1e-9):.1f}/s), "
                    f"{manifest.features.from_cache} read from the shared cache",
        "replay": f"{decisions} decisions in {cycles} cycles "
                  f"({decisions / max(phases.get('replay', 0), 1e-9):.1f} decisions/s; "
                  f"{manifest.features.reused} cached snapshots read, {manifest.features.misses} misses)",
        "baselines": f"{len(manifest.baselines)} buy-and-hold curves"
                     + (" (drawn in the main process during the workers' replay: the time is the wait after it)"
                        if args.workers > 1 else ""),
        "audit": f"lookahead audit: {manifest.lookahead.samples if manifest.lookahead else 0} samples, "
                 f"{'passed' if manifest.lookahead and manifest.lookahead.passed else 'FLAGGED'}"
                 + (" (ran in the main process during the workers' replay: the time is the wait after it)"
                    if args.workers > 1 else ""),
    }
    for name in ("setup", "features", "replay", "baselines", "audit"):
        print(f"{name:<12} {phases.get(name, 0.0):>9.2f}  {notes[name]}")
    print(f"{'TOTAL':<12} {total:>9.2f}  {decisions / total:.1f} decisions/s end to end")
    failed = {v.name: v.error for v in manifest.variants if v.status != "completed"}
    if failed:
        print(f"variants not completed: {failed}")
    return decisions


if __name__ == "__main__":
    raise SystemExit(main())
