"""`signal-agent evals`: replay variants over history, report on a run, and judge a variant for promotion.

- `evals run CONFIG`: replay the variants file (evals.replay.run_evals) into a new run folder under
  the runs dir (config `[evals].runs_dir`, default ./evals-runs) and say where it is and how to report it;
- `evals report RUN`: Markdown + self-contained HTML under `<run>/report/` (RUN: a folder or a run id);
- `evals gate VARIANT [--run RUN]`: the promotion gate on the out-of-sample part; exit 0 pass, 1 fail,
  writes `<run>/gate/<variant>.json`; without --run, the newest run (by manifest update time) that
  has the variant;
- `evals list`: the runs in the runs dir with their status;
- `evals cache [--prune] [--unused-days N]`: the shared features cache (theory results reused across
  runs; config `[evals].features_cache`): its file, size and entries; `--prune` deletes what no run of
  this code can hit (entries made by other code) and, with --unused-days, entries unused that long.

Errors the user can fix (no such run, unknown variant, a broken manifest) exit 2 with one line.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from agent.commands import UsageError
from agent.config import ConfigError, Settings, load_settings
from theories.candles import iso

NAME = "evals"
HELP = "replay variants over history and compare them honestly (run, report, gate, list, cache)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Evals: replay prompt, theory and model variants over history, compare, and gate."
    sub = parser.add_subparsers(dest="evals_command", required=True, metavar="{run,report,gate,list,cache}")

    run = sub.add_parser("run", help="replay the variants of a TOML file into a new run folder")
    run.add_argument("config", metavar="CONFIG", help="the variants file (TOML)")
    run.add_argument("--runs-dir", metavar="DIR", help="where runs are kept (default: [evals].runs_dir)")
    run.add_argument("--run-id", metavar="ID", help="name of the run folder (default: made from the time); an "
                                                    "existing run of that id resumes")
    run.add_argument("--workers", type=int, default=2, metavar="N", help="processes replaying in parallel (default 2)")
    run.add_argument("--yes", action="store_true", help="spend money without asking when the estimate is not zero")
    run.add_argument("--features-cache", metavar="PATH|off",
                     help="shared theory-results cache file, or 'off' for one in the run's folder "
                          "(default: [evals].features_cache, else <data_dir>/evals/features.sqlite)")

    report = sub.add_parser("report", help="write the Markdown and HTML report of a run")
    report.add_argument("run_dir", metavar="RUN", help="a run folder, or a run id in the runs dir")

    gate = sub.add_parser("gate", help="promotion gate on a variant's out-of-sample results (exit 0 pass, 1 fail)")
    gate.add_argument("variant", metavar="VARIANT", help="the variant's name in the run")
    gate.add_argument("--run", metavar="RUN", help="a run folder or id (default: the newest run with the variant)")

    sub.add_parser("list", help="the runs in the runs dir with their status")
    cache = sub.add_parser("cache", help="the shared features cache: size and entries; --prune to shrink it")
    cache.add_argument("--features-cache", metavar="PATH", help="the cache file (default: [evals].features_cache, "
                                                                "else <data_dir>/evals/features.sqlite)")
    cache.add_argument("--prune", action="store_true",
                       help="delete the entries made by other code (no run of this code can hit them)")
    cache.add_argument("--unused-days", type=float, metavar="N",
                       help="with --prune: also delete the entries no run has used for N days")
    for p in (run, report, gate, sub.choices["list"], cache):
        p.add_argument("--settings", metavar="PATH",
                       help="settings file for the [evals] section (default: $SIGNAL_AGENT_CONFIG or ~/.config)"
                       + ("; LLM hosts, prices and budget come from the variants file's `settings` key, else the "
                          "same default" if p is run else ""))
        if p not in (run, cache):
            p.add_argument("--runs-dir", metavar="DIR", help="where runs are kept (default: [evals].runs_dir)")


def _settings(args: argparse.Namespace) -> Settings:
    try:
        return load_settings(getattr(args, "settings", None))
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


def runs_dir(args: argparse.Namespace, settings: Settings) -> Path:
    return Path(args.runs_dir) if getattr(args, "runs_dir", None) else Path(settings.evals.runs_dir)


def resolve_run(text: str, root: Path) -> Path:
    """A run folder given as a path, or as a run id under the runs dir."""
    for candidate in (Path(text), root / text):
        if (candidate / "manifest.json").is_file():
            return candidate
    if Path(text).is_dir():
        raise UsageError(f"{text} is not an eval run folder (no manifest.json)")
    raise UsageError(f"no eval run {text!r}: neither a folder nor a run id in {root}")


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from evals.replay import CostNotConfirmed, EvalsError, run_evals
    from evals.variants import VariantsError

    if args.workers < 1:
        raise UsageError(f"--workers {args.workers}: at least 1")
    config = Path(args.config)
    if not config.is_file():
        raise UsageError(f"variants file {config} does not exist")
    root = runs_dir(args, settings)
    try:
        manifest = run_evals(config, root, run_id=args.run_id, workers=args.workers, progress=True, yes=args.yes,
                             features_cache=features_cache_setting(args, settings))
    except CostNotConfirmed as exc:
        raise UsageError(f"{exc} (pass --yes to spend it)") from None
    except (VariantsError, EvalsError) as exc:
        raise UsageError(str(exc)) from None
    folder = root / manifest.run_id
    done = sum(v.status == "completed" for v in manifest.variants)
    print(f"Run {manifest.run_id}: {manifest.status}, {done} of {len(manifest.variants)} variants completed.")
    print(manifest.features.summary())
    print(f"Folder: {folder}")
    print(f"Report: signal-agent evals report {folder}")
    print(f"Gate:   signal-agent evals gate VARIANT --run {folder}")
    return 0 if manifest.status == "completed" else 1


# What the terminal shows of the report; the files hold everything.
TERMINAL_SECTIONS = ("Summary", "Verdicts", "Lookahead audit", "Comparison", "Decisions and the risk gate",
                     "Promotion gate")


def cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    from evals.compare import StatsOptions
    from evals.render import Report, terminal_summary
    from evals.report import RunError, write_run_report

    folder = resolve_run(args.run_dir, runs_dir(args, settings))
    e = settings.evals
    options = StatsOptions(level=e.confidence_level, n_boot=e.bootstrap_samples, seed=e.seed)
    try:
        md, html, report = write_run_report(folder, e.gate, options)
    except RunError as exc:
        raise UsageError(str(exc)) from None
    brief = [s for s in report.sections if s.heading in TERMINAL_SECTIONS]
    print(terminal_summary(Report(title=report.title, subtitle=report.subtitle, sections=brief)))
    print(f"\nThe full report (curves, calibration, per symbol and regime, walk-forward, versions):\n  {md}\n  {html}")
    return 0


def newest_run_with(root: Path, variant: str) -> Path:
    from evals.report import RunError, read_manifest

    found = []
    if root.is_dir():
        for folder in sorted(p for p in root.iterdir() if (p / "manifest.json").is_file()):
            try:
                m = read_manifest(folder)
            except RunError:
                continue
            if any(v.name == variant for v in m.variants):
                found.append((m.updated_ms, folder))
    if not found:
        raise UsageError(f"no eval run in {root} has a variant {variant!r} (give one with --run)")
    return max(found)[1]


def cmd_gate(args: argparse.Namespace, settings: Settings) -> int:
    from evals.gate import gate_variants, render_gate
    from evals.report import RunError, load_run_data
    from evals.trials import count_trials

    root = runs_dir(args, settings)
    folder = resolve_run(args.run, root) if args.run else newest_run_with(root, args.variant)
    try:
        run = load_run_data(folder)
    except RunError as exc:
        raise UsageError(str(exc)) from None
    names = [v.name for v in run.manifest.variants]
    if args.variant not in names:
        raise UsageError(f"no variant {args.variant!r} in run {run.manifest.run_id}; its variants: {', '.join(names)}")
    if args.variant in run.missing:
        raise UsageError(f"variant {args.variant!r} of run {run.manifest.run_id} has no results: "
                         f"{run.missing[args.variant]}")
    m = run.manifest
    trials = count_trials(folder.parent, m, (v.name for v in run.variants))
    gates = gate_variants(run.variants, settings.evals.gate, run_id=m.run_id, period_start_ms=m.period_start_ms,
                          period_end_ms=m.period_end_ms, in_sample_until_ms=m.in_sample_until_ms, trials=trials)
    result = gates[args.variant]
    out = folder / "gate" / f"{args.variant}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(result.model_dump_json(indent=2), encoding="utf-8")
    tmp.replace(out)  # atomic: a reader never sees half a file
    print(render_gate(result))
    if m.status != "completed":
        print(f"\nNote: run {m.run_id} is {m.status}: the gate judged the decisions recorded so far.")
    print(f"\nWrote {out}")
    return 0 if result.passed else 1


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    from evals.report import RunError, read_manifest

    root = runs_dir(args, settings)
    folders = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if not folders:
        print(f"No eval runs in {root}.")
        return 0
    print(f"{'run':<28} {'status':<10} {'period':<37} {'cadence':<8} {'variants':>8} {'decisions':>14}  updated")
    for folder in folders:
        try:
            m = read_manifest(folder)
        except RunError as exc:
            print(f"{folder.name:<28} {'unreadable':<10} {exc}")
            continue
        done = sum(v.decisions_done for v in m.variants)
        total = sum(v.decisions_total for v in m.variants)
        period = f"{iso(m.period_start_ms)[:16]} .. {iso(m.period_end_ms)[:16]}"
        print(f"{m.run_id:<28} {m.status:<10} {period:<37} {m.cadence:<8} {len(m.variants):>8} "
              f"{f'{done}/{total}':>14}  {iso(m.updated_ms)}")
    return 0


def features_cache_setting(args: argparse.Namespace, settings: Settings) -> str:
    """--features-cache, else [evals].features_cache resolved against this settings file's data_dir, else 'off'."""
    from evals.features import resolve_features_cache

    if getattr(args, "features_cache", None):
        return args.features_cache
    path = resolve_features_cache(settings.evals.features_cache, settings.data_dir)
    return "off" if path is None else str(path)


def cmd_cache(args: argparse.Namespace, settings: Settings) -> int:
    from evals.features import FeatureCache, FeatureCacheError, code_fingerprint

    if args.unused_days is not None and not args.prune:
        raise UsageError("--unused-days goes with --prune")
    setting = features_cache_setting(args, settings)
    if setting.strip().lower() == "off":
        print("The shared features cache is turned off ([evals] features_cache = \"off\"): each run keeps its own.")
        return 0
    path = Path(setting).expanduser()
    if not path.is_file():
        print(f"No features cache at {path} yet (the first `evals run` makes it).")
        return 0
    try:
        cache = FeatureCache(path)
    except FeatureCacheError as exc:
        raise UsageError(str(exc)) from None
    code = code_fingerprint()
    try:
        if args.prune:
            before = path.stat().st_size
            cutoff = None
            if args.unused_days is not None:
                cutoff = int(time.time() * 1000 - args.unused_days * 86_400_000)
            entries, snapshots = cache.prune(code=code, unused_before_ms=cutoff)
            print(f"Pruned {entries} entries ({snapshots} snapshots): {before / 1e6:.1f} MB -> "
                  f"{path.stat().st_size / 1e6:.1f} MB.")
        rows = cache.entries()
    finally:
        cache.close()
    wal = path.with_name(path.name + "-wal")
    size = path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
    print(f"Features cache {path}: {size / 1e6:.1f} MB, {len(rows)} entries, "
          f"{sum(r['snapshots'] for r in rows)} snapshots.")
    if rows:
        print(f"{'key':<12} {'code':<8} {'snapshots':>9} {'MB':>7}  {'decision times':<35} {'last used':<20} theories")
    for r in rows:
        span = (f"{iso(r['first_ms'])[:16]} .. {iso(r['last_ms'])[:16]}" if r["first_ms"] is not None else "-")
        theories = r["meta"].get("theories", [])
        names = ",".join(theories) if isinstance(theories, list) else str(theories)
        print(f"{r['key'][:12]:<12} {'current' if r['code'] == code else 'old':<8} {r['snapshots']:>9} "
              f"{r['bytes'] / 1e6:>7.1f}  {span:<35} {iso(r['used_ms'])[:19]:<20} {names}")
    if any(r["code"] != code for r in rows):
        print("Entries of 'old' code can never be hit again: `signal-agent evals cache --prune` deletes them.")
    return 0


def run(args: argparse.Namespace) -> int:
    settings = _settings(args)
    handler = {"run": cmd_run, "report": cmd_report, "gate": cmd_gate, "list": cmd_list,
               "cache": cmd_cache}[args.evals_command]
    return handler(args, settings)
