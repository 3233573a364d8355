"""Profile of a historical replay's hot path: hourly cycles over the 10 symbols of ../shared/data.

A replay-like loop (issue 9, "Scale and speed"): `run_cycle` every hour for `--days` days, the
heuristic provider, the paper broker, a SQLite store in a temporary folder (each cycle one
transaction, `Store.batch`, as in the evals replay: its begin and commit count in the store
stage), the product's default theory set and risk gate, funding rates from ../shared/data/funding. The fit
cache is the cycle's own, so the scheduled refits (Markov, Kalman MLE, forest, unit-root tests)
happen inside the loop exactly as in a replay (weekly by default, `theories.base.REFIT_EVERY_MS`;
the default period starts at a refit boundary so that one refit is measured). The heuristic's calls
are not recorded (the evals replay records only model calls). The first cycle is a warm-up (candle
files read, first fits) and is not timed.

Printed: ms per decision by cycle stage (data, sync, snapshot, llm, gate, broker, store), the
snapshot's ms per theory split into refit cycles (the first cycle of each fit period, which pays
the fits) and the other cycles, and a projection of the issue's target run: a 1-year, 10-symbol,
hourly replay of 6 variants (the heuristic and five seed strategies) where the snapshot is computed
once per (symbol, hour) and shared by the variants, and the rest of the cycle runs per variant,
over `--workers` processes, with the default weekly refits and, for comparison, daily ones (the
theories' `every_ms` / `refit_every_ms` / `fit_every_ms` set to a day in a variant's theory set; a
fit costs the same whatever its schedule). Times are this process's CPU time by default (`--clock
cpu`): the machine is shared, and wall time would charge other people's work to the replay. BLAS
runs one thread, as in an evals replay worker. The last line is one JSON line with the figures.

`--dump FILE` writes every decision (outcome, signal, gate verdict, snapshot), fill and closed
trade as JSON, to compare two versions of the code on the same replay (`--compare A B`).

    python bench/replay_profile.py [--days 3] [--start 2025-06-01] [--dump out.json] [--profile] [--permissive]
    python bench/replay_profile.py --compare before.json after.json
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import math
import pstats
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # before bench/ itself, whose theories.py would shadow the package

from theories.base import REFIT_EVERY_MS as REFIT  # noqa: E402  (the default refit period)

H = 3_600_000
DAY = 24 * H
YEAR_HOURS = 365 * 24
VARIANTS = 6  # the heuristic and the five seed strategies
TARGET_S = 600.0
STAGES = ("data", "sync", "snapshot", "llm", "gate", "broker", "store")


def _snapshot_source(timings: dict[str, float], timer):
    """The default snapshot source, with per-theory time (by `timer`) collected into `timings`."""
    import inspect

    from agent.snapshot import build_snapshot

    clock = {"timer": timer} if "timer" in inspect.signature(build_snapshot).parameters else {}  # older code

    def source(symbol, universe, decision_ms, settings, *, outcomes, funding, cache):
        return build_snapshot(symbol, universe, decision_ms, settings.theories, window=settings.window,
                              outcomes=outcomes, cache=cache, leader=settings.leader, funding=funding,
                              timings=timings, **clock)

    return source


def _gate(permissive: bool):
    """The default risk gate; `permissive`: no minimum confidence in any regime, so that trades happen."""
    from risk import RiskGate
    from risk.config import RiskConfig

    cfg = RiskConfig()
    if permissive:
        policies = {k: v.model_copy(update={"min_confidence": 0.0}) for k, v in cfg.regime.policies.items()}
        cfg = cfg.model_copy(update={"regime": cfg.regime.model_copy(update={"policies": policies})})
    return RiskGate(cfg)


def replay(data_dir: Path, days: float, start_ms: int | None, dump: Path | None, profile: bool,
           permissive: bool = False, clock: str = "cpu") -> dict:
    from agent.brokers.paper import PaperBroker
    from agent.cycle import CycleDeps, CycleSettings, FileMarketData, run_cycle
    from agent.llm.budget import CostBudget
    from agent.llm.heuristic import HeuristicProvider
    from agent.llm.prompt import PromptTemplate
    from agent.llm.synthesis import Synthesiser
    from agent.signal import SignalRules
    from agent.store import Store

    candles_dir, funding_dir = data_dir / "candles" / "binance-spot-1h", data_dir / "funding" / "binance-usdm"
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.at(Path(tmp) / "store.sqlite")
        data = FileMarketData(candles_dir, funding_dir)
        symbols = data.symbols()
        last = min(data.candles(s, 2**62).last_close_time for s in symbols)
        hours = round(days * 24)
        first = start_ms if start_ms is not None else (last - hours * H) // REFIT * REFIT - H
        synth = Synthesiser(provider=HeuristicProvider(), template=PromptTemplate.load("baseline"),
                            rules=SignalRules(), price=None, budget=CostBudget(daily_usd=0, per_cycle_usd=0),
                            records=None, now_ms=lambda: 0)
        theory_ms: dict[str, float] = {}
        timer = time.process_time if clock == "cpu" else time.perf_counter
        deps = CycleDeps(store=store, broker=PaperBroker(), synthesiser=synth, gate=_gate(permissive), data=data,
                         settings=CycleSettings(symbols=tuple(symbols)), wall_ms=lambda: 0, timer=timer,
                         snapshot_source=_snapshot_source(theory_ms, timer))
        run_cycle(first, deps)  # warm-up: files read, first fits
        theory_ms.clear()
        stage_s = dict.fromkeys(STAGES, 0.0)
        refit_theory: dict[str, float] = defaultdict(float)
        other_theory: dict[str, float] = defaultdict(float)
        refit_cycles = other_cycles = decided = other_decided = 0
        snap_other_s = 0.0
        outcomes: dict[str, int] = defaultdict(int)
        prof = cProfile.Profile() if profile else None
        wall, cpu = time.perf_counter(), time.process_time()
        for k in range(1, hours + 1):
            at = first + k * H
            theory_ms.clear()
            profiled = prof is not None and at % REFIT != 0  # the hourly path; refits are profiled apart
            if profiled:
                prof.enable()
            # one store transaction per cycle, as the evals replay writes it (older code: one per write)
            started = timer()
            with store.batch() if hasattr(store, "batch") else contextlib.nullcontext():
                began = timer()
                result = run_cycle(at, deps)
                ended = timer()
            stage_s["store"] += began - started + timer() - ended  # the batch's begin and commit
            if profiled:
                prof.disable()
            for s in STAGES:
                stage_s[s] += result.timings.get(s, 0.0)
            refit = at % REFIT == 0
            refit_cycles += refit
            other_cycles += not refit
            if not refit:
                snap_other_s += result.timings.get("snapshot", 0.0)
                other_decided += sum(x.outcome != "skipped" for x in result.results)
            for name, sec in theory_ms.items():
                (refit_theory if refit else other_theory)[name] += sec
            for r in result.results:
                outcomes[r.outcome] += 1
                decided += r.outcome != "skipped"
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        state_bytes = len(json.dumps(deps.broker.export_state()))  # written with every decision
        dumped = _dump(store, dump) if dump else None
        store.close()

    per_dec = {s: 1000 * v / max(decided, 1) for s, v in stage_s.items()}
    n_sym = len(symbols)
    per_refit = {n: 1000 * v / max(refit_cycles * n_sym, 1) for n, v in refit_theory.items()}
    per_other = {n: 1000 * v / max(other_cycles * n_sym, 1) for n, v in other_theory.items()}
    return {
        "symbols": n_sym, "hours": hours, "first_ms": first, "decisions": decided, "outcomes": dict(outcomes),
        "wall_s": wall, "cpu_s": cpu, "broker_state_bytes": state_bytes, "clock": clock,
        "stage_ms_per_decision": per_dec, "theory_ms_refit": per_refit,
        "theory_ms_other": per_other, "refit_cycles": refit_cycles, "other_cycles": other_cycles,
        "snapshot_ms_other": 1000 * snap_other_s / max(other_decided, 1),
        "profile": prof, "dumped": dumped,
    }


def _dump(store, path: Path) -> int:
    """Every decision with its signal, verdict and snapshot; fills; closed trades (wall-clock fields dropped)."""
    from agent.store.tables import ClosedTradeRow, DecisionRow, FillRow, GateDecisionRow, SignalRow, SnapshotRow

    def plain(row, drop=("created_ms", "id", "started_ms", "finished_ms", "updated_ms")):
        return {k: v for k, v in row.model_dump().items() if k not in drop}

    by_id: dict[str, dict] = defaultdict(dict)
    for d in store.rows(DecisionRow):
        by_id[d.decision_id]["decision"] = plain(d)
    for table, key in ((SignalRow, "signal"), (GateDecisionRow, "gate"), (SnapshotRow, "snapshot")):
        for r in store.rows(table):
            row = plain(r)
            if key == "snapshot":
                row["snapshot_json"] = json.loads(row["snapshot_json"])
            if key == "gate":
                row["request_json"] = json.loads(row["request_json"])
            by_id[r.decision_id][key] = row
    out = {
        "decisions": by_id,
        "fills": [plain(f) for f in store.rows(FillRow)],
        "closed": [plain(t) for t in store.rows(ClosedTradeRow)],
    }
    path.write_text(json.dumps(out, sort_keys=True, default=str))
    return len(by_id)


def _close(a, b, rel: float = 1e-9) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isfinite(a) and math.isfinite(b) and abs(a - b) <= rel * max(abs(a), abs(b), 1e-12))
    return a == b


def _diff(a, b, path: str, out: list[str], rel: float) -> None:
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                out.append(f"{path}.{k}: only in {'after' if k not in a else 'before'}")
            else:
                _diff(a[k], b[k], f"{path}.{k}", out, rel)
    elif isinstance(a, Sequence) and isinstance(b, Sequence) and not isinstance(a, str) and not isinstance(b, str):
        if len(a) != len(b):
            out.append(f"{path}: length {len(a)} != {len(b)}")
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            _diff(x, y, f"{path}[{i}]", out, rel)
    elif not _close(a, b, rel):
        out.append(f"{path}: {a!r} != {b!r}")


def compare(before: Path, after: Path, rel: float) -> int:
    """Differences between two dumps: decisions (outcome, signal, gate), fills and trades; snapshot by theory."""
    a, b = json.loads(before.read_text()), json.loads(after.read_text())
    diffs: list[str] = []
    theory_diffs: dict[str, int] = defaultdict(int)
    for did in sorted(set(a["decisions"]) | set(b["decisions"])):
        da, db = a["decisions"].get(did), b["decisions"].get(did)
        if da is None or db is None:
            diffs.append(f"{did}: only in {'after' if da is None else 'before'}")
            continue
        for part in ("decision", "signal", "gate"):
            _diff(da.get(part), db.get(part), f"{did}/{part}", diffs, rel)
        sa, sb = (d.get("snapshot", {}).get("snapshot_json", {}) for d in (da, db))
        for name in sorted(set(sa.get("theories", {})) | set(sb.get("theories", {}))):
            got: list[str] = []
            _diff(sa.get("theories", {}).get(name), sb.get("theories", {}).get(name), name, got, rel)
            theory_diffs[name] += bool(got)
        got = []
        _diff(sa.get("errors"), sb.get("errors"), "errors", got, rel)
        theory_diffs["errors"] += bool(got)
    _diff(a["fills"], b["fills"], "fills", diffs, rel)
    _diff(a["closed"], b["closed"], "closed", diffs, rel)
    print(f"{len(a['decisions'])} vs {len(b['decisions'])} decisions; {len(a['closed'])} vs {len(b['closed'])} "
          f"closed trades; relative tolerance {rel:g}")
    print("snapshots differing, by theory:", dict(theory_diffs) or "none")
    print(f"decision/signal/gate/fill/trade differences: {len(diffs)}")
    for line in diffs[:60]:
        print("  ", line)
    print(json.dumps({"decision_differences": len(diffs), "snapshot_differences": dict(theory_diffs)}))
    return 0


def projection(r: dict, workers: int, refit_days: float = REFIT / DAY) -> dict:
    """Seconds of the issue's target run from the measured per-decision costs (see the module docstring).

    Snapshots: the snapshot stage of the cycles without refits, per (symbol, hour). Fits: what the
    theories cost more in a refit cycle than in the others, once per symbol per `refit_days`.
    """
    per = r["stage_ms_per_decision"]
    snap_refit = sum(r["theory_ms_refit"].values())
    fit_extra = max(snap_refit - sum(r["theory_ms_other"].values()), 0.0)
    decisions = YEAR_HOURS * r["symbols"]
    snapshot_s = decisions * (per["snapshot"] if r["other_cycles"] == 0 else r["snapshot_ms_other"]) / 1000
    fits_s = 365 / refit_days * r["symbols"] * fit_extra / 1000
    rest_ms = sum(v for s, v in per.items() if s != "snapshot")
    rest_s = VARIANTS * decisions * rest_ms / 1000
    total = (snapshot_s + fits_s + rest_s) / workers
    return {"snapshots_s": snapshot_s, "fits_s": fits_s, "refit_days": refit_days, "decisions_s": rest_s,
            "workers": workers,
            "total_s": total, "decisions_per_s": VARIANTS * decisions / total if total else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=float, default=3.0, help="days of hourly cycles (default 3)")
    parser.add_argument("--start", help="first cycle's day, YYYY-MM-DD (default: the data's last days)")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data", help="shared data folder")
    parser.add_argument("--dump", type=Path, help="write the replay's decisions, fills and trades as JSON here")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"), help="compare two dumps")
    parser.add_argument("--rel", type=float, default=1e-9, help="relative tolerance of --compare")
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                        help="time stages by this process's CPU time (default: the machine is shared) or wall time")
    parser.add_argument("--workers", type=int, default=2, help="processes assumed by the projection")
    parser.add_argument("--permissive", action="store_true",
                        help="no minimum confidence in the gate, so trades happen (for --dump comparisons)")
    parser.add_argument("--profile", action="store_true",
                        help="print the cProfile top functions of the cycles without refits")
    args = parser.parse_args()
    if args.compare:
        return compare(*args.compare, args.rel)
    if not (args.data / "candles" / "binance-spot-1h").is_dir():
        print(f"skipped: no shared data at {args.data}")
        print(json.dumps({"skipped": f"no shared data at {args.data}"}))
        return 0
    start_ms = None
    if args.start:
        from datetime import UTC, datetime

        start_ms = int(datetime.strptime(args.start, "%Y-%m-%d").replace(tzinfo=UTC).timestamp() * 1000) - H
    from threadpoolctl import threadpool_limits

    # one BLAS/OpenMP thread, as in each evals replay worker (`evals.replay._worker_init`): the
    # projection assumes processes that each use one core, and the fits' small BLAS calls are far
    # slower with threads fighting for a loaded machine's cores
    with threadpool_limits(1):
        r = replay(args.data, args.days, start_ms, args.dump, args.profile, args.permissive, args.clock)
    if r["profile"] is not None:
        pstats.Stats(r["profile"]).sort_stats("cumulative").print_stats(40)
    from theories.candles import iso

    print(f"{r['symbols']} symbols x {r['hours']} hourly cycles from {iso(r['first_ms'] + H)}: "
          f"{r['decisions']} decisions in {r['wall_s']:.1f} s wall, {r['cpu_s']:.1f} s CPU; outcomes {r['outcomes']}")
    print(f"\n{'stage':<10}{'ms/decision':>12}   ({r['clock']} time)")
    for s, v in r["stage_ms_per_decision"].items():
        print(f"{s:<10}{v:>12.2f}")
    print(f"{'TOTAL':<10}{sum(r['stage_ms_per_decision'].values()):>12.2f}")
    names = sorted(set(r["theory_ms_refit"]) | set(r["theory_ms_other"]),
                   key=lambda n: -r["theory_ms_other"].get(n, 0.0))
    print(f"\n{'theory':<18}{'refit cycle ms':>15}{'other ms':>10}   (per symbol; {r['refit_cycles']} refit "
          f"and {r['other_cycles']} other cycles)")
    for n in names:
        print(f"{n:<18}{r['theory_ms_refit'].get(n, 0.0):>15.2f}{r['theory_ms_other'].get(n, 0.0):>10.2f}")
    print(f"{'TOTAL':<18}{sum(r['theory_ms_refit'].values()):>15.2f}{sum(r['theory_ms_other'].values()):>10.2f}")
    p = projection(r, args.workers)
    daily = projection(r, args.workers, 1.0)
    for q in (p, daily):
        print(f"\nprojected 1-year, {r['symbols']}-symbol hourly replay of {VARIANTS} variants (snapshots shared) on "
              f"{q['workers']} processes, refits every {q['refit_days']:g} day(s): snapshots {q['snapshots_s']:.0f} s "
              f"+ fits {q['fits_s']:.0f} s + decisions {q['decisions_s']:.0f} s CPU -> {q['total_s']:.0f} s wall "
              f"(target {TARGET_S:.0f} s)")
    print(f"the paper broker's memory, written with every decision, is {r['broker_state_bytes']} bytes at the end")
    if r["dumped"] is not None:
        print(f"dumped {r['dumped']} decisions to {args.dump}")
    print(json.dumps({
        "symbols": r["symbols"], "hours": r["hours"], "decisions": r["decisions"],
        "broker_state_bytes": r["broker_state_bytes"], "wall_s": round(r["wall_s"], 2),
        "cpu_s": round(r["cpu_s"], 2), "clock": r["clock"],
        "stage_ms_per_decision": {k: round(v, 3) for k, v in r["stage_ms_per_decision"].items()},
        "theory_ms_refit": {k: round(v, 3) for k, v in r["theory_ms_refit"].items()},
        "theory_ms_other": {k: round(v, 3) for k, v in r["theory_ms_other"].items()},
        "snapshot_ms_other": round(r["snapshot_ms_other"], 3),
        "projected_year_s": round(p["total_s"], 1),
        "projected_decisions_per_s": round(p["decisions_per_s"], 1) if p["decisions_per_s"] else None,
        "projection": {k: round(v, 1) for k, v in p.items() if k != "decisions_per_s"},
        "projected_year_daily_refits_s": round(daily["total_s"], 1),
        "target_s": TARGET_S, "target_met": p["total_s"] <= TARGET_S,
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
