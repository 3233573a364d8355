"""The evals report of one run: Markdown and one self-contained HTML file under `<run>/report/`.

What it holds: the run (period, cadence, universe, in-sample split, status), the lookahead audit
from the manifest, the comparison tables (returns and risk, trades, signals and LLM usage), where
each variant's decisions went (HOLD, refused by the risk gate and by which rule, ordered, closed:
a variant without trades is said to be one, with the reason, in the summary), equity
and drawdown curves (variants, and the buy-and-hold baselines), the calibration curves of stated
confidence, a verdict per comparison, the promotion gate of every variant, walk-forward stability,
the trade-order reshuffle, per-symbol and per-regime results, the exact versions of each variant,
and how every number is defined.

Numbers come from `evals.compare` and `evals.gate` (which take them from `evals.metrics` and
`evals.stats`); pictures from `evals.plots`; the files from `evals.render`. This module reads the
run folder, arranges, formats and writes: it computes no statistic of its own.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.config import PromotionThresholds
from agent.market.loaders import load_candles
from evals.compare import (
    GroupSummary,
    PairedComparison,
    RunComparison,
    StatsOptions,
    VariantData,
    VariantSummary,
    compare_run,
    variant_kind,
)
from evals.gate import GateResult, gate_variants
from evals.ledger import LedgerError, load_ledger
from evals.metrics import DAY_MS, EquityCurve, period_returns
from evals.plots import calibration_png, equity_drawdown_png, returns_heatmap_png
from evals.render import Report, Section, Table, write_report
from evals.replay import EvalsError, load_run
from evals.trials import count_trials
from evals.variants import EvalManifest
from theories.candles import CandleDataError, Candles, iso


class RunError(ValueError):
    """The run folder cannot be read (names the folder and what is missing or broken)."""


@dataclass
class LoadedRun:
    """A run folder read for analysis: the manifest, each variant's ledger, the buy-and-hold curves."""

    path: Path
    manifest: EvalManifest
    variants: list[VariantData]
    baselines: dict[str, EquityCurve]
    missing: dict[str, str]  # variant -> why it has no ledger (no store yet, failed before its first cycle)
    notes: list[str] = dataclasses.field(default_factory=list)  # problems the report states (e.g. no candles)


def read_manifest(run_dir: str | Path) -> EvalManifest:
    """The manifest alone (listing runs without opening their stores)."""
    path = Path(run_dir) / "manifest.json"
    if not path.is_file():
        raise RunError(f"{run_dir}: not an eval run folder (no manifest.json)")
    try:
        return EvalManifest.model_validate_json(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise RunError(f"{path}: not a readable manifest: {exc}") from None


def load_run_data(run_dir: str | Path) -> LoadedRun:
    """Open the run (`evals.replay.load_run`), read each variant's ledger and the baseline curves, close it."""
    try:
        run = load_run(run_dir)
    except (EvalsError, ValueError) as exc:
        raise RunError(str(exc)) from None
    with run:
        manifest = run.manifest
        variants: list[VariantData] = []
        missing: dict[str, str] = {}
        for vm in manifest.variants:
            store = run.stores.get(vm.name)
            if store is None:
                missing[vm.name] = f"no store yet (status {vm.status})"
                continue
            try:
                ledger = load_ledger(store, run=vm.name)
            except LedgerError as exc:
                missing[vm.name] = f"{exc} (status {vm.status})"
                continue
            variants.append(VariantData(name=vm.name, signature=vm.signature, kind=variant_kind(vm.provider_spec),
                                        ledger=ledger))
        baselines: dict[str, EquityCurve] = {}
        for name, raw in run.baselines.items():
            try:
                baselines[name] = EquityCurve.model_validate(raw["curve"])
            except (ValueError, KeyError, TypeError) as exc:
                raise RunError(f"{run.run_dir}: baseline {name}: not a curve: {exc}") from None
    return LoadedRun(path=Path(run_dir), manifest=manifest, variants=variants, baselines=baselines, missing=missing)


def quote_currency(manifest: EvalManifest) -> str:
    """The universe's quote currency ("USDT" for BTC/USDT, ETH/USDT), or "quote" when they differ."""
    quotes = {s.partition("/")[2] for s in manifest.universe}
    return quotes.pop() if len(quotes) == 1 and "" not in quotes else "quote"


def run_candles(manifest: EvalManifest) -> dict[str, Candles]:
    """The run's candles (to score the signals' directions), from the data folder the manifest records."""
    return load_candles(manifest.data_dir, list(manifest.universe) or None)


# --- formatting ----------------------------------------------------------------------------------


def pct(x: float | None, digits: int = 2) -> str | None:
    return None if x is None else f"{100 * x:.{digits}f}%"


def num(x: float | None, digits: int = 2) -> str | None:
    return None if x is None else f"{x:,.{digits}f}"


def days(ms: float | None) -> str | None:
    return None if ms is None else f"{ms / DAY_MS:.1f} d"


def _interval(iv, scale: float = 1.0, fmt: str = "{:+,.2f}") -> str | None:
    if iv is None:
        return None
    return f"{fmt.format(iv.estimate * scale)} [{fmt.format(iv.low * scale)}, {fmt.format(iv.high * scale)}]"


def _p(x: float | None) -> str | None:
    return None if x is None else f"{x:.3g}"


# --- tables --------------------------------------------------------------------------------------


def returns_table(summaries: Sequence[VariantSummary]) -> Table:
    rows = []
    for s in summaries:
        c = s.performance.curve if s.performance else None
        p = s.performance
        rows.append([
            s.name, s.kind, pct(c.total_return) if c else None, pct(c.annualised_return) if c else None,
            num(c.sharpe) if c else None, num(c.sortino) if c else None, num(c.calmar) if c else None,
            pct(c.max_drawdown) if c else None, days(c.max_drawdown_duration_ms) if c else None,
            pct(p.exposure, 1) if p else None, num(p.turnover_per_year, 1) if p else None,
            _p(s.sharpe.psr), _p(s.sharpe.dsr.dsr) if s.sharpe.dsr else None,
        ])
    return Table(headers=["variant", "kind", "total return", "annualised", "Sharpe", "Sortino", "Calmar",
                          "max DD", "DD duration", "exposure", "turnover x/yr", "PSR", "DSR"], rows=rows,
                 caption="Account level. Sharpe, Sortino annualised on the cycle grid (365-day year, rf 0); PSR and "
                         "DSR on daily returns (DSR deflated for the number of variants tried).")


def trades_table(summaries: Sequence[VariantSummary]) -> Table:
    rows = []
    for s in summaries:
        t = s.performance.trade if s.performance else None
        rows.append([
            s.name, t.trades if t else 0, pct(t.win_rate, 1) if t else None,
            num(t.profit_factor) if t and t.profit_factor is not None else (t.profit_factor_note if t else None),
            num(t.avg_win) if t else None, num(t.avg_loss) if t else None, num(t.avg_r, 3) if t else None,
            num(t.total_pnl) if t else None, num(t.fees) if t else None, num(t.turnover, 0) if t else None,
            s.open_at_end,
        ])
    return Table(headers=["variant", "trades", "win rate", "profit factor", "avg win", "avg loss", "avg R",
                          "net P&L", "fees", "turnover", "orders not closed"], rows=rows,
                 caption="Closed trades, net of fees, quote currency. A win is pnl > 0. Orders still open (or never "
                         "filled) when the run ended are not counted.")


def signals_table(summaries: Sequence[VariantSummary]) -> Table:
    rows = []
    for s in summaries:
        q, u = s.signals, s.llm
        rows.append([
            s.name, q.decisions, q.directional, q.scored, pct(q.accuracy, 1), q.bracket_scored,
            pct(q.targets_first / q.bracket_scored, 1) if q.bracket_scored else None,
            num(q.calibration.brier, 4) if q.calibration else None,
            pct(u.schema_valid_rate, 1), pct(u.repair_rate, 1), pct(u.hold_on_failure_rate, 1),
            num(u.tokens_per_decision, 0), num(u.cost_per_decision, 5), num(u.latency_per_decision_ms, 0),
        ])
    return Table(headers=["variant", "decisions", "directional", "scored", "dir. accuracy", "brackets resolved",
                          "target first", "Brier", "schema-valid", "repaired", "HOLD on failure", "tokens/dec",
                          "USD/dec", "latency ms/dec"],
                 rows=rows,
                 caption="Signal level, traded or not. Scored: directional signals whose horizon ended inside the "
                         "data; accuracy: the close horizon_hours later moved the stated way. Brackets resolved: "
                         "the later candles reached the stop or the target, or the horizon ended; target first: the "
                         "share that reached the target before the stop. Brier: mean (confidence - target first)^2, "
                         "the confidence being the stated P(target before stop). LLM rates over the decisions that "
                         "made a call.")


def funnel_table(summaries: Sequence[VariantSummary]) -> Table:
    rows = []
    for s in summaries:
        f = s.funnel
        rows.append([s.name, f.decisions, f.skipped, f.errors, f.holds, f.proposals, f.rejected, f.ordered,
                     f.order_failed, f.closed_trades, f.refused_by() or None])
    return Table(headers=["variant", "decisions", "skipped", "errors", "HOLD", "proposals", "refused", "ordered",
                          "order failed", "closed trades", "refused by (rule, proposals, codes)"], rows=rows,
                 caption="Every stored decision by its outcome: skipped + errors + HOLD + proposals = decisions; a "
                         "proposal (LONG or SHORT) is refused by the risk gate, ordered, or refused by the broker. "
                         "A proposal two rules refused counts for both rules.")


def _of_proposals(n: int, proposals: int) -> str:
    """n of the proposals, in words: "it" (the only one), "all 5" or "3"."""
    return "it" if proposals == 1 else f"all {n}" if n == proposals else str(n)


def funnel_notes(summaries: Sequence[VariantSummary]) -> list[str]:
    """A sentence for each variant whose trade statistics are empty, saying why: no proposal, or none let through."""
    notes = []
    for s in summaries:
        f = s.funnel
        if not f.decisions:
            continue
        if not f.proposals:
            notes.append(f"{s.name} proposed no trade in {f.decisions} decisions ({f.holds} HOLD, {f.skipped} "
                         f"skipped, {f.errors} failed).")
        elif not f.ordered:
            stated = ""
            if f.refused_confidence is not None:
                median, top = f.refused_confidence
                stated = (f"; stated confidence {top:.2f}" if f.rejected == 1 else
                          f"; stated confidence median {median:.2f}, at most {top:.2f}")
            why = [f"the risk gate refused {_of_proposals(f.rejected, f.proposals)}"
                   + (f" ({f.refused_by()}{stated})" if f.refused_by() else "")] if f.rejected else []
            if f.order_failed:
                why.append(f"the broker refused {_of_proposals(f.order_failed, f.proposals)}")
            of = "its one trade proposal" if f.proposals == 1 else f"its {f.proposals} trade proposals"
            notes.append(f"{s.name} made no trade: of {of}, {' and '.join(why)}. Its trade statistics are empty "
                         "because nothing was let through, not for want of signals.")
    return notes


def group_table(name: str, groups: Mapping[str, GroupSummary], label: str) -> Table:
    rows = []
    for g, s in groups.items():
        t, q = s.trades, s.signals
        rows.append([g, t.trades, pct(t.win_rate, 1), num(t.profit_factor), num(t.avg_win), num(t.avg_loss),
                     num(t.total_pnl), num(t.fees), num(t.turnover, 0), q.directional, pct(q.accuracy, 1),
                     num(q.calibration.brier, 4) if q.calibration else None])
    return Table(headers=[label, "trades", "win rate", "PF", "avg win", "avg loss", "net P&L", "fees", "turnover",
                          "directional", "dir. accuracy", "Brier"], rows=rows, caption=f"{name} by {label}")


def side_table(s: VariantSummary) -> Table:
    rows = [[side, t.trades, pct(t.win_rate, 1), num(t.profit_factor), num(t.avg_win), num(t.avg_loss),
             num(t.avg_r, 3), num(t.total_pnl)] for side, t in s.by_side.items()]
    return Table(headers=["direction", "trades", "win rate", "PF", "avg win", "avg loss", "avg R", "net P&L"],
                 rows=rows, caption=f"{s.name} by direction")


def comparisons_table(comparisons: Sequence[PairedComparison]) -> Table:
    rows = []
    for c in comparisons:
        rows.append([
            f"{c.b} vs {c.a}", c.aligned_decisions, c.aligned_times, _interval(c.pnl_per_time),
            _interval(c.daily_return, 1e4, "{:+.2f}"), c.mcnemar_n,
            _p(c.mcnemar.p_value) if c.mcnemar else None, _p(c.dm_r.p_value) if c.dm_r else None,
            _p(c.dm_brier.p_value) if c.dm_brier else None, "yes" if c.significant else "no",
        ])
    return Table(headers=["B vs A", "aligned decisions", "decision times", "P&L/decision time B-A [CI]",
                          "daily return B-A, bp [CI]", "both directional", "McNemar p", "DM p (-R)",
                          "DM p (Brier)", "significant"], rows=rows,
                 caption="Paired on the same (symbol, decision time). Intervals: stationary block bootstrap.")


def gate_table(gates: Mapping[str, GateResult]) -> Table:
    rows = []
    for name, g in gates.items():
        failed = ", ".join(c.name for c in g.failed) or "-"
        rows.append([name, "PASS" if g.passed else "fail", g.oos.trades, pct(g.oos.win_rate, 1),
                     num(g.oos.profit_factor), num(g.oos.sharpe), pct(g.oos.max_drawdown), failed])
    return Table(headers=["variant", "gate", "OOS trades", "win rate", "PF", "Sharpe", "max DD", "failed checks"],
                 rows=rows)


def periods_table(s: VariantSummary) -> Table:
    rows = [[p.label, pct(p.ret), p.trades.trades, pct(p.trades.win_rate, 1), num(p.trades.profit_factor),
             num(p.curve.sharpe) if p.curve else None, pct(p.curve.max_drawdown) if p.curve else None]
            for p in s.periods]
    return Table(headers=["period", "return", "trades closed", "win rate", "PF", "Sharpe", "max DD"], rows=rows,
                 caption=f"{s.name}: walk-forward stability ({'monthly' if s.period_freq == 'M' else 'quarterly'})")


def reshuffle_table(summaries: Sequence[VariantSummary]) -> Table:
    rows = []
    for s in summaries:
        r = s.reshuffle
        if r is None:
            rows.append([s.name, s.performance.trade.trades if s.performance else 0, None, None, None, None, None])
            continue
        rows.append([s.name, r.trades, pct(r.observed), pct(r.q05), pct(r.q50), pct(r.q95), pct(r.share_worse, 1)])
    return Table(headers=["variant", "trades", "observed max DD", "5%", "median", "95%", "orders worse"], rows=rows,
                 caption="Max drawdown of the closed trades' P&L in random orders (fixed money, not compounded).")


def versions_table(manifest: EvalManifest) -> Table:
    rows = []
    for v in manifest.variants:
        theories = ", ".join(v.theories)
        params = json.dumps(v.provider_parameters, sort_keys=True, separators=(",", ":"))
        rows.append([v.name, v.signature, v.provider_spec, v.model, params, f"{v.prompt_variant} v{v.prompt_version}",
                     v.prompt_sha256, v.theory_fingerprint, theories, v.window, "yes" if v.anonymise else "no",
                     v.risk_sha256, v.status, f"{v.decisions_done}/{v.decisions_total}"])
    return Table(headers=["variant", "signature", "provider spec", "model", "provider parameters", "prompt",
                          "prompt sha256", "theory set fingerprint", "theories", "window", "anonymised",
                          "risk config sha256", "status", "decisions"], rows=rows,
                 caption="Theory parameters, the full risk config and the paper-broker settings of each variant are "
                         "in manifest.json.")


def baselines_table(comparison: RunComparison) -> Table:
    rows = [[b.name, pct(b.curve.total_return), pct(b.curve.annualised_return), num(b.curve.sharpe),
             pct(b.curve.max_drawdown), days(b.curve.max_drawdown_duration_ms)] for b in comparison.baselines]
    return Table(headers=["baseline", "total return", "annualised", "Sharpe", "max DD", "DD duration"], rows=rows,
                 caption="Bought at the first bar's open of the period, marked at every close, never rebalanced.")


# --- the report ----------------------------------------------------------------------------------

METHOD = [
    "Per-decision P&L: the net P&L (fees included) of the trade a decision opened, 0 when it opened none or its "
    "trade had not closed by the end. Variants are compared on the decisions both made, (symbol, decision time) "
    "aligned; the P&L of the aligned symbols is summed per decision time and the mean difference B - A gets a "
    "stationary block-bootstrap interval that resamples whole decision times (Politis & Romano 1994). The verdict "
    "sentence reads that interval: significant when it excludes 0.",
    "Daily returns: UTC-day returns of each account's equity curve; the paired interval of their mean difference "
    "resamples the same days for both variants.",
    "McNemar: directional hits on the aligned decisions where both variants said LONG or SHORT and the outcome is "
    "known (exact binomial when few discordant pairs). A hit: the close horizon_hours later moved the stated way.",
    "Diebold-Mariano (Harvey, Leybourne & Newbold 1997 small-sample correction, t with n - 1 degrees of freedom): "
    "on the loss -(sum of R multiples) per decision time, and on the Brier loss (confidence - target first)^2 on the "
    "aligned decisions where both stated a direction and both brackets resolved.",
    "Calibration: a signal's confidence is its stated P(target before stop). It is scored on the candles after the "
    "decision: from the first candle opening at or after it through the one closing at the horizon, the first candle "
    "reaching the stop (a miss, also when it reaches both levels: candles do not say which came first) or the target "
    "(a hit) decides; neither by the horizon is a miss. Directional accuracy is a separate question: the sign of the "
    "move after horizon_hours.",
    "PSR (Bailey & Lopez de Prado 2012): the probability that the true Sharpe ratio exceeds 0 given the skew and "
    "kurtosis of the daily returns. DSR (Bailey & Lopez de Prado 2014): the same against the Sharpe ratio the best "
    "of n_trials unskilled variants would reach by luck. n_trials counts every distinct variant tried on this "
    "history: this run's, and those of the other runs in the runs folder whose period overlaps (a re-run of the "
    "same variant is not a new trial); the spread of Sharpe ratios comes from this run's variants, measured on "
    "the same span.",
    "Per symbol and per regime: trade and signal metrics only; Sharpe, drawdown and the other curve metrics exist for "
    "the whole account, because the symbols share one account.",
]


def build_report(run: LoadedRun, comparison: RunComparison, gates: Mapping[str, GateResult],
                 out_dir: Path) -> Report:
    """The Report (text, tables, and the PNGs it draws into `out_dir`)."""
    m = run.manifest
    out_dir.mkdir(parents=True, exist_ok=True)
    split = (f"in sample until {iso(m.in_sample_until_ms)}, out of sample after" if m.in_sample_until_ms
             else "no in-sample split declared: the gate judges the whole run")
    statuses = ", ".join(f"{v.name}: {v.status} ({v.decisions_done}/{v.decisions_total})" for v in m.variants)
    summary = [
        f"Run {m.run_id}: {iso(m.period_start_ms)} to {iso(m.period_end_ms)}, a decision every {m.cadence} "
        f"({m.decision_times} decision times) over {', '.join(m.universe)}; {split}. Starting cash "
        f"{m.initial_cash:,.2f} per variant. Run status: {m.status}.",
        f"Variants: {statuses}. With results: {len(run.variants)}.",
    ]
    summary += run.notes
    if run.missing:
        summary.append("Without results: " + "; ".join(f"{k}: {v}" for k, v in run.missing.items()) + ".")
    summary += list(comparison.notes)
    summary += funnel_notes(comparison.variants)
    passed = [n for n, g in gates.items() if g.passed]
    summary.append(
        f"Promotion gate: {len(passed)} of {len(gates)} variants pass ({', '.join(passed) or 'none'}). Failing is "
        "the normal outcome; the thresholds exist to keep luck from being promoted.")
    sections = [Section(heading="Summary", paragraphs=summary)]
    why_missing = [f"{c.b} vs {c.a}: " + "; ".join(c.notes) + "." for c in comparison.comparisons if c.notes]
    sections.append(Section(heading="Verdicts", paragraphs=[c.verdict + "." for c in comparison.comparisons]
                            or ["No comparison: the run needs a heuristic variant or two LLM variants."],
                            tables=[comparisons_table(comparison.comparisons)] if comparison.comparisons else []))
    if why_missing:  # a dash in the table is a test not run, or without a statistic: these say why
        sections.append(Section(heading="Notes on the paired tests", paragraphs=why_missing))
    sections.append(lookahead_section(m))
    sections.append(Section(heading="Comparison", tables=[returns_table(comparison.variants),
                                                          trades_table(comparison.variants),
                                                          signals_table(comparison.variants)]))
    sections.append(Section(heading="Decisions and the risk gate", tables=[funnel_table(comparison.variants)]))
    images = []
    curves = {v.name: v.ledger.curve for v in run.variants if v.ledger.curve is not None and len(v.ledger.curve) > 1}
    if curves:
        images.append(equity_drawdown_png(curves, out_dir / "equity_variants.png", f"{m.run_id}: variants"))
    if run.baselines:
        images.append(equity_drawdown_png(dict(run.baselines), out_dir / "equity_baselines.png",
                                          f"{m.run_id}: buy and hold"))
    sections.append(Section(heading="Equity and drawdown", images=images,
                            paragraphs=[] if images else ["No variant has an equity curve yet."]))
    calibrations = {s.name: s.signals.calibration for s in comparison.variants if s.signals.calibration is not None}
    cal_images = [calibration_png(calibrations, out_dir / "calibration.png",
                                  "Stated P(target before stop) vs the rate it happened")] \
        if calibrations else []
    sections.append(Section(heading="Calibration of stated confidence", images=cal_images,
                            paragraphs=[] if cal_images else ["No directional signal with a resolved bracket."]))
    sections.append(Section(
        heading="Promotion gate", tables=[gate_table(gates)],
        paragraphs=[f"Out of sample: {next(iter(gates.values())).oos_basis}." if gates else "No variant to judge.",
                    "Thresholds: " + thresholds_text(next(iter(gates.values())).thresholds) if gates else ""]))
    heatmaps = []
    for v in run.variants:  # monthly returns as a calendar, once a run spans more than one month
        curve = v.ledger.curve
        if curve is not None and curve.time_ms[-1] - curve.time_ms[0] > 31 * DAY_MS:
            heatmaps.append(returns_heatmap_png(period_returns(curve, "M"), out_dir / f"monthly_{v.name}.png",
                                                f"{v.name}: monthly returns"))
    sections.append(Section(heading="Walk-forward stability", images=heatmaps,
                            tables=[periods_table(s) for s in comparison.variants if s.periods]))
    sections.append(Section(heading="Trade-order reshuffle (Monte Carlo)",
                            tables=[reshuffle_table(comparison.variants)]))
    per_group = []
    for s in comparison.variants:
        if s.by_symbol:
            per_group.append(group_table(s.name, s.by_symbol, "symbol"))
        if s.by_regime:
            per_group.append(group_table(s.name, s.by_regime, "regime"))
        if s.by_side:
            per_group.append(side_table(s))
    sections.append(Section(heading="Per symbol, regime and direction", tables=per_group))
    sections.append(Section(heading="Variant versions", tables=[versions_table(m)], paragraphs=[
        f"Package {m.package_version}, git commit {m.git_commit or 'unknown'}, Python {m.python}. Data: {m.data_dir} "
        f"({len(m.data_files)} files, sha256 each in manifest.json); funding: {m.funding_dir or 'none'}.",
        m.features.summary()]))
    if comparison.baselines:
        sections.append(Section(heading="Baselines: buy and hold", tables=[baselines_table(comparison)]))
    sections.append(Section(heading="Method", paragraphs=METHOD))
    return Report(title=f"Evals report: {m.run_id}",
                  subtitle=f"{iso(m.period_start_ms)} to {iso(m.period_end_ms)}, cadence {m.cadence}",
                  sections=sections)


def thresholds_text(t: PromotionThresholds) -> str:
    return (f"trades >= {t.min_trades} over >= {t.min_years:g} years, win rate >= {t.min_win_rate:.0%}, profit "
            f"factor >= {t.min_profit_factor:g}, max drawdown < {t.max_drawdown:.0%}, Sharpe > {t.min_sharpe:g}, "
            f"deflated Sharpe >= {t.dsr_confidence:.0%}.")


def lookahead_section(m: EvalManifest) -> Section:
    a = m.lookahead
    if a is None:
        return Section(heading="Lookahead audit", paragraphs=["The run recorded no lookahead audit."])
    verdict = "PASSED" if a.passed else "FAILED: results of this run are not trustworthy"
    paras = [
        f"{verdict}. Data guard: {a.guard_violations} candles offered that closed after the decision time. "
        f"Canary: {a.samples} (symbol, decision time) pairs re-analysed with {a.k_bars} later bars appended; "
        f"theories whose output changed: {dict(a.flagged) or 'none'}. Cached snapshots differing from a fresh "
        f"computation: {a.cache_mismatches}.",
    ]
    paras += [f"Example: {e}" for e in (*a.guard_examples, *a.examples)[:5]]
    return Section(heading="Lookahead audit", paragraphs=paras)


def write_run_report(run_dir: str | Path, thresholds: PromotionThresholds | None = None,
                     options: StatsOptions | None = None,
                     candles: Mapping[str, Candles] | None = None) -> tuple[Path, Path, Report]:
    """Read a run, compare, gate and write `<run>/report/report.md` and `report.html`; returns both and the Report."""
    run = load_run_data(run_dir)
    if not run.variants:
        why = "; ".join(f"{k}: {v}" for k, v in run.missing.items())
        raise RunError(f"{run.path}: no variant has results yet ({why})")
    if candles is None:
        try:
            candles = run_candles(run.manifest)
        except (CandleDataError, OSError, ValueError, KeyError) as exc:
            candles = {}
            run.notes.append(f"The run's candles cannot be read ({exc}): signals are not scored, so directional "
                             "accuracy, calibration, McNemar and Diebold-Mariano on the Brier loss are missing.")
    m = run.manifest
    trials = count_trials(run.path.parent, m, (v.name for v in run.variants))
    comparison = compare_run(run.variants, candles, run.baselines, options, quote_currency(m), trials=trials)
    gates = gate_variants(run.variants, thresholds or PromotionThresholds(), run_id=m.run_id,
                          period_start_ms=m.period_start_ms, period_end_ms=m.period_end_ms,
                          in_sample_until_ms=m.in_sample_until_ms, trials=trials)
    out_dir = run.path / "report"
    report = build_report(run, comparison, gates, out_dir)
    md, html = write_report(report, out_dir)
    return md, html, report


__all__ = ["LoadedRun", "RunError", "build_report", "load_run_data", "read_manifest", "run_candles",
           "write_run_report"]
