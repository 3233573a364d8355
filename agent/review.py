"""The paper-trading review: what a period of paper (or manual) trading did, with pictures, and whether
it still looks like the evals that justified the variant.

Three layers, so the daily Telegram report can reuse the numbers without the pictures:

- `build_review(ledger, ...)` -> `ReviewData`: every number, pure (no I/O). The numbers come from
  the one metrics module (`evals.metrics`) applied to the store ledger (`evals.ledger`); this module
  only chooses what to group and how to present it.
- `paper_vs_evals(ledger, ...)` -> one `PaperVsEvals` per variant: "consistent", "diverging" (with
  the numbers) or "not enough trades yet", against the latest passed promotion gate of the same
  variant signature found in the eval runs folder (`<runs dir>/<run>/gate/<variant>.json`).
- `review_report(data, plots_dir)` -> `evals.render.Report`, drawing the PNGs (`evals.plots`);
  `write_review` writes it as Markdown and self-contained HTML.

Definitions the report states where it shows them:
- The account's figures (Sharpe, Sortino, max drawdown, returns) use the account's equity curve:
  equity at the end of each cycle, positions marked to market, so they are on the cycle grid.
- A group's (variant, symbol, regime, direction) Sharpe, Sortino and max drawdown use the group's
  own realised equity curve (`evals.metrics.realised_curve`): the account's equity at the start of
  the period plus the cumulative net P&L of the group's trades closed by each point of the account's
  grid. Open positions are not marked in it (a group's floating P&L is not recorded per group), and
  the groups of one account share its cash: a group curve measures that group's contribution, it is
  not a separate account.
- A win is a trade with net P&L > 0 (evals.metrics); R multiples are net P&L over the money at risk.
- Calibration: stated confidence against (a) closed trades' wins and (b) the event a signal's
  confidence states, P(target before stop): whether the later candles reached the target before the
  stop within `horizon_hours` (`evals.ledger.bracket_outcomes`), when candles covering the
  horizons are available.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlmodel import select

from agent.config import ReviewSettings, Settings
from agent.store import Store
from agent.store.tables import CycleRow, DecisionRow
from evals import plots
from evals.ledger import DecisionRecord, Ledger, LLMUsage, ManualStats, RuleActivity, bracket_outcomes, load_ledger
from evals.metrics import (
    Calibration,
    CurveStats,
    EquityCurve,
    Performance,
    PeriodReturn,
    Trade,
    TradeStats,
    calibration,
    curve_stats,
    group_stats,
    performance,
    period_returns,
    realised_curve,
    trade_stats,
)
from evals.render import Report, Section, Table, write_report
from theories.candles import Candles, iso

DEFAULT_RUNS_DIR = Path("./evals-runs")
NO_REGIME = "(no regime)"
GROUPINGS = ("variant", "symbol", "regime", "direction", "exit reason")
SHORT_PERIOD_DAYS = 90  # below this, annualised figures are extrapolations and the report says so


class ReviewError(ValueError):
    """Nothing to review as asked (an empty store, a filter that leaves nothing); the message says what and why."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


# --- paper vs evals ---------------------------------------------------------------------------


class EvalOOS(BaseModel):
    """The out-of-sample figures of a gate file (`evals.gate.OOSNumbers`), read leniently."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    trades: int
    win_rate: float | None = None
    avg_r: float | None = None
    profit_factor: float | None = None
    sharpe: float | None = None
    max_drawdown: float | None = None


class GateFile(BaseModel):
    """The fields of `<run>/gate/<variant>.json` (`evals.gate.GateResult`) that paper-vs-evals needs.

    Only these are read (extra fields ignored), so a gate file stays readable when the gate adds
    checks or settings.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    variant: str
    signature: str
    run_id: str
    passed: bool
    oos_start_ms: int
    oos_end_ms: int
    oos: EvalOOS


class MetricComparison(_Frozen):
    """One figure of paper trading against the out-of-sample eval's, with the tolerance band."""

    name: Literal["win_rate", "avg_r", "profit_factor"]
    paper: float | None
    evals: float | None
    low: float | None = Field(description="evals - tolerance x |evals|; None without an eval value.")
    high: float | None = Field(description="evals + tolerance x |evals|.")
    within: bool | None = Field(description="low <= paper <= high; None when either value is missing.")
    note: str = ""


Status = Literal["consistent", "diverging", "not_enough_trades", "no_passed_gate"]


class PaperVsEvals(_Frozen):
    """Paper results of one variant against the out-of-sample eval that passed its promotion gate."""

    variant: str = Field(description="The signature 'provider:model:prompt_variant' (DecisionRow.variant).")
    status: Status
    paper_trades: int
    min_trades: int
    tolerance: float = Field(description="Relative: a figure is consistent within evals x (1 +/- tolerance).")
    gate_file: str | None = None
    eval_run: str | None = None
    eval_variant: str | None = Field(default=None, description="The variant's name in the eval run.")
    eval_trades: int | None = None
    metrics: tuple[MetricComparison, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def line(self) -> str:
        """One line for a terminal or a Telegram message."""
        return f"{self.variant}: {self.summary}"

    @property
    def summary(self) -> str:
        if self.status == "no_passed_gate":
            return "no passed promotion gate found for this variant: nothing to compare with"
        figures = "; ".join(_comparison_text(m) for m in self.metrics)
        source = f" (eval run {self.eval_run}, {self.eval_trades} out-of-sample trades)"
        if self.status == "not_enough_trades":
            return f"not enough trades yet: {self.paper_trades} of {self.min_trades}{source}"
        return f"{self.status} after {self.paper_trades} trades: {figures}{source}"


def _comparison_text(m: MetricComparison) -> str:
    fmt = _pct if m.name == "win_rate" else _num2
    label = {"win_rate": "win rate", "avg_r": "avg R", "profit_factor": "profit factor"}[m.name]
    if m.within is None:
        return f"{label} paper {fmt(m.paper)} vs evals {fmt(m.evals)} (not comparable: {m.note})"
    verdict = "within" if m.within else ("ABOVE" if m.paper > m.high else "BELOW")
    return f"{label} paper {fmt(m.paper)} vs evals {fmt(m.evals)} [{fmt(m.low)}, {fmt(m.high)}] {verdict}"


def find_passed_gate(runs_dir: Path, signature: str) -> tuple[Path, GateFile] | tuple[None, None]:
    """The latest (by out-of-sample end, then run id) passed gate file of `signature` under `runs_dir`."""
    best: tuple[tuple[int, str], Path, GateFile] | None = None
    for path in sorted(Path(runs_dir).glob("*/gate/*.json")):
        gate = read_gate_file(path)
        if gate is None or not gate.passed or gate.signature != signature:
            continue
        key = (gate.oos_end_ms, gate.run_id)
        if best is None or key > best[0]:
            best = (key, path, gate)
    return (best[1], best[2]) if best else (None, None)


def read_gate_file(path: Path) -> GateFile | None:
    """A gate file, or None when it cannot be read as one (a partial write, another format)."""
    try:
        return GateFile.model_validate_json(Path(path).read_bytes())
    except (OSError, ValidationError, ValueError):
        return None


def unreadable_gate_files(runs_dir: Path) -> list[Path]:
    return [p for p in sorted(Path(runs_dir).glob("*/gate/*.json")) if read_gate_file(p) is None]


def _compare(name: Literal["win_rate", "avg_r", "profit_factor"], paper: float | None, evals: float | None,
             tolerance: float, paper_note: str | None = None) -> MetricComparison:
    if evals is None:
        return MetricComparison(name=name, paper=paper, evals=None, low=None, high=None, within=None,
                                note="the eval has no value")
    band = tolerance * abs(evals)
    low, high = evals - band, evals + band
    if paper is None:
        return MetricComparison(name=name, paper=None, evals=evals, low=low, high=high, within=None,
                                note=paper_note or "no paper value")
    return MetricComparison(name=name, paper=paper, evals=evals, low=low, high=high, within=low <= paper <= high)


def compare_with_eval(variant: str, paper: TradeStats, gate: GateFile | None, *, tolerance: float, min_trades: int,
                      gate_path: Path | None = None) -> PaperVsEvals:
    """The comparison of one variant's paper trade statistics with its gate's out-of-sample figures (pure).

    Consistent: every figure (win rate, average R, profit factor) within the relative tolerance of the
    eval's. Diverging: any figure outside it, either way (doing much better than the eval is also a sign
    that live conditions differ), or a figure paper trading cannot produce (e.g. no losing trade yet,
    so no profit factor). Not enough trades: fewer closed paper trades than `min_trades`.
    """
    base = {"variant": variant, "paper_trades": paper.trades, "min_trades": min_trades, "tolerance": tolerance}
    if gate is None:
        return PaperVsEvals(status="no_passed_gate", **base)
    metrics = (
        _compare("win_rate", paper.win_rate, gate.oos.win_rate, tolerance),
        _compare("avg_r", paper.avg_r, gate.oos.avg_r, tolerance),
        _compare("profit_factor", paper.profit_factor, gate.oos.profit_factor, tolerance, paper.profit_factor_note),
    )
    found = {"gate_file": str(gate_path) if gate_path else None, "eval_run": gate.run_id,
             "eval_variant": gate.variant, "eval_trades": gate.oos.trades, "metrics": metrics}
    if paper.trades < min_trades:
        return PaperVsEvals(status="not_enough_trades", **base, **found)
    notes = tuple(f"{m.name}: not comparable ({m.note}), counted as diverging" for m in metrics if m.within is None)
    status: Status = "consistent" if all(m.within for m in metrics) else "diverging"
    return PaperVsEvals(status=status, notes=notes, **base, **found)


def resolved_runs_dir(settings: Settings | None) -> Path:
    """`[review] runs_dir`, else `[evals] runs_dir`, else ./evals-runs."""
    if settings is None:
        return DEFAULT_RUNS_DIR
    review = getattr(settings, "review", None)
    if review is not None and review.runs_dir is not None:
        return Path(review.runs_dir)
    evals = getattr(settings, "evals", None)
    return Path(evals.runs_dir) if evals is not None else DEFAULT_RUNS_DIR


def paper_vs_evals(source: Ledger | Store, settings: Settings | None = None, *, run: str | None = None,
                   runs_dir: Path | str | None = None, tolerance: float | None = None,
                   min_trades: int | None = None) -> list[PaperVsEvals]:
    """One comparison per variant that traded or proposed a trade (sorted by variant).

    `source`: a ledger already read, or a store (its ledger is read for `run`, all of its history).
    Settings come from `[review]` (tolerance, min trades, runs dir; the runs dir defaults to
    `[evals] runs_dir`); keyword arguments override them. The daily Telegram report shows each
    result's `line` (`"\n".join(c.line for c in paper_vs_evals(ledger, settings))`).
    """
    ledger = source if isinstance(source, Ledger) else load_ledger(source, run=run)
    review: ReviewSettings = getattr(settings, "review", None) or ReviewSettings()
    tol = review.tolerance if tolerance is None else tolerance
    need = review.min_trades if min_trades is None else min_trades
    folder = Path(runs_dir) if runs_dir is not None else resolved_runs_dir(settings)
    variants = sorted({t.variant for t in ledger.trades}
                      | {d.variant for d in ledger.decisions if d.direction in ("LONG", "SHORT") and d.variant})
    per_variant = group_stats(ledger.trades, key=lambda t: t.variant)
    broken = unreadable_gate_files(folder) if folder.is_dir() else []
    out = []
    for v in variants:
        path, gate = find_passed_gate(folder, v) if folder.is_dir() else (None, None)
        result = compare_with_eval(v, per_variant.get(v) or trade_stats([]), gate, tolerance=tol, min_trades=need,
                                   gate_path=path)
        extra = [f"gate files that could not be read: {', '.join(str(p) for p in broken)}"] if broken else []
        if not folder.is_dir():
            extra.append(f"no eval runs folder at {folder}")
        if extra:
            result = result.model_copy(update={"notes": (*result.notes, *extra)})
        out.append(result)
    return out


# --- the review as numbers --------------------------------------------------------------------


class GroupRow(_Frozen):
    """One group's trades and its realised equity curve (see the module docstring)."""

    group: str
    stats: TradeStats
    curve: CurveStats | None = Field(description="Stats of the group's realised curve; None when it reaches zero "
                                     "equity (the group lost more than the starting equity).")


class TheoryUse(_Frozen):
    """How often the winning and the losing trades' signals leaned on one theory."""

    theory: str
    winners: int = Field(description="Winning trades whose signal named the theory.")
    losers: int
    winner_share: float | None = Field(description="winners / all winning trades.")
    loser_share: float | None = Field(description="losers / all losing trades.")
    stats: TradeStats = Field(description="Statistics of the trades whose signal named the theory.")


class SignalCalibration(_Frozen):
    """Stated confidence against realised hits, for closed trades and for directional signals."""

    trades: Calibration = Field(description="Confidence of each closed trade's signal vs its win (net P&L > 0).")
    signals: Calibration | None = Field(description="Confidence of LONG/SHORT signals vs their target reached "
                                        "before their stop within the horizon; None without candles.")
    signals_scored: int = Field(description="Signals whose bracket the candles resolve (a level reached, or the "
                                "horizon ended).")
    signals_total: int = Field(description="LONG/SHORT signals in the period.")
    candles_source: str | None = None


class ReviewData(_Frozen):
    """Every number of a review (what `build_review` computes; the report and the daily report show it)."""

    store: str
    run: str
    variant: str | None
    since_ms: int | None
    until_ms: int | None
    start_ms: int = Field(description="First point of the account curve in the period.")
    end_ms: int
    cycles: int = Field(description="Points of the account curve (completed cycles) in the period.")
    initial_equity: float = Field(description="Account equity at the first point of the period, quote.")
    final_equity: float
    account_initial_balance: float | None = Field(description="The paper account's starting balance, quote.")
    curve: EquityCurve = Field(description="The account's equity at the end of each cycle in the period.")
    performance: Performance
    groups: dict[str, tuple[GroupRow, ...]] = Field(description="Per variant, symbol, regime, direction and exit "
                                                    "reason.")
    monthly: tuple[PeriodReturn, ...]
    daily: tuple[PeriodReturn, ...]
    outcomes: dict[str, int] = Field(description="Decisions by outcome (ordered, rejected, hold, skipped, ...).")
    calibration: SignalCalibration
    theories: tuple[TheoryUse, ...] = Field(description="By trades leaning on it, most first.")
    gate: dict[str, RuleActivity]
    llm: LLMUsage
    manual: ManualStats
    paper_vs_evals: tuple[PaperVsEvals, ...]
    notes: tuple[str, ...] = ()


def _group_key(name: str):
    return {
        "variant": lambda t: t.variant or "(unnamed)",
        "symbol": lambda t: t.symbol,
        "regime": lambda t: t.regime or NO_REGIME,
        "direction": lambda t: t.side,
        "exit reason": lambda t: t.exit_reason,
    }[name]


def theory_use(trades: Sequence[Trade]) -> tuple[TheoryUse, ...]:
    """Per theory named by any trade's signal: its use among winners and losers, and its trades' statistics."""
    winners = [t for t in trades if t.win]
    losers = [t for t in trades if not t.win]
    out = []
    for theory in sorted({th for t in trades for th in t.theories}):
        leaning = [t for t in trades if theory in t.theories]
        w = sum(1 for t in winners if theory in t.theories)
        lo = sum(1 for t in losers if theory in t.theories)
        out.append(TheoryUse(theory=theory, winners=w, losers=lo, winner_share=w / len(winners) if winners else None,
                             loser_share=lo / len(losers) if losers else None, stats=trade_stats(leaning)))
    return tuple(sorted(out, key=lambda u: (-u.stats.trades, u.theory)))


def signal_calibration(trades: Sequence[Trade], decisions: Sequence[DecisionRecord],
                       candles: Mapping[str, Candles] | None, candles_source: str | None = None) -> SignalCalibration:
    """Calibration of closed trades (hit = net win) and, with candles, of LONG/SHORT signals (hit = the target
    reached before the stop within the horizon: the event the confidence states, `evals.ledger.bracket_outcomes`)."""
    with_conf = [t for t in trades if t.confidence is not None]
    by_trades = calibration([t.confidence for t in with_conf], [t.win for t in with_conf])
    directional = [d for d in decisions if d.direction in ("LONG", "SHORT") and d.confidence is not None]
    signals, scored = None, 0
    if candles is not None:
        hits = dict(bracket_outcomes(directional, candles))
        scored = len(hits)
        conf = {d.decision_id: d.confidence for d in directional}
        signals = calibration([conf[k] for k in hits], list(hits.values()))
    return SignalCalibration(trades=by_trades, signals=signals, signals_scored=scored,
                             signals_total=len(directional), candles_source=candles_source if candles else None)


def build_review(ledger: Ledger, *, store: str, comparisons: Sequence[PaperVsEvals] = (),
                 candles: Mapping[str, Candles] | None = None, candles_source: str | None = None) -> ReviewData:
    """Every number of the review of `ledger` (pure). Raises ReviewError when there is nothing to review."""
    if ledger.run is None:
        raise ReviewError(f"the store {store} holds no cycles: nothing to review yet "
                          "(run `signal-agent cycle` or `signal-agent run` first)")
    window = _window_text(ledger.since_ms, ledger.until_ms)
    if ledger.curve is None:
        raise ReviewError(f"run {ledger.run!r} in {store} has no completed cycle{window}: nothing to review")
    if ledger.variant is not None and not ledger.decisions and not ledger.trades:
        raise ReviewError(f"variant {ledger.variant!r} made no decision in run {ledger.run!r}{window}")
    curve = ledger.curve
    trades = list(ledger.trades)
    start_equity = curve.equity[0]
    groups = {}
    for name in GROUPINGS:
        key = _group_key(name)
        stats = group_stats(trades, key=key)
        rows = []
        for group, s in stats.items():
            members = [t for t in trades if key(t) == group]
            try:
                group_curve = curve_stats(realised_curve(members, curve.time_ms, start_equity))
            except ValueError:  # the group lost more than the whole starting equity: no returns exist
                group_curve = None
            rows.append(GroupRow(group=group, stats=s, curve=group_curve))
        groups[name] = tuple(rows)
    outcomes: dict[str, int] = {}
    for d in ledger.decisions:
        outcomes[d.outcome] = outcomes.get(d.outcome, 0) + 1
    notes = []
    if ledger.variant is not None:
        notes.append(f"Only variant {ledger.variant}: its trades and decisions. The equity curve is still the "
                     "whole account's (variants of one run share it).")
    return ReviewData(
        store=store, run=ledger.run, variant=ledger.variant, since_ms=ledger.since_ms, until_ms=ledger.until_ms,
        start_ms=curve.time_ms[0], end_ms=curve.time_ms[-1], cycles=len(curve), initial_equity=start_equity,
        final_equity=curve.equity[-1], account_initial_balance=ledger.initial_balance,
        curve=curve, performance=performance(trades, curve), groups=groups, monthly=tuple(period_returns(curve, "M")),
        daily=tuple(period_returns(curve, "D")), outcomes=dict(sorted(outcomes.items())),
        calibration=signal_calibration(trades, ledger.decisions, candles, candles_source),
        theories=theory_use(trades), gate=ledger.gate, llm=ledger.llm, manual=ledger.manual,
        paper_vs_evals=tuple(comparisons), notes=tuple(notes),
    )


def _window_text(since_ms: int | None, until_ms: int | None) -> str:
    if since_ms is None and until_ms is None:
        return ""
    parts = ([f" since {iso(since_ms)}"] if since_ms is not None else []) + (
        [f" until {iso(until_ms)}"] if until_ms is not None else [])
    return "".join(parts)


# --- reading the store ------------------------------------------------------------------------


def store_runs(store: Store) -> list[str]:
    """The run names of the store's cycles, sorted."""
    with store.session() as s:
        return sorted(set(s.exec(select(CycleRow.run)).all()))


def store_variants(store: Store, run: str) -> list[str]:
    """The variant signatures of a run's decisions, sorted (empty ones, of skipped decisions, left out)."""
    with store.session() as s:
        stmt = (select(DecisionRow.variant).join(CycleRow, CycleRow.cycle_id == DecisionRow.cycle_id)
                .where(CycleRow.run == run))
        return sorted({v for v in s.exec(stmt).all() if v})


def choose_run(store: Store, run: str | None, configured: str | None = None) -> str:
    """`run` if the store has it; else the store's only run; else the configured run if the store has it."""
    runs = store_runs(store)
    if not runs:
        raise ReviewError(f"the store {store.display_url} holds no cycles: nothing to review yet "
                          "(run `signal-agent cycle` or `signal-agent run` first)")
    if run is not None:
        if run not in runs:
            raise ReviewError(f"the store {store.display_url} has no run {run!r}; its runs: {', '.join(runs)}")
        return run
    if len(runs) == 1:
        return runs[0]
    if configured in runs:
        return configured
    raise ReviewError(f"the store {store.display_url} holds several runs ({', '.join(runs)}): choose one with --run")


def load_review(store: Store, settings: Settings | None = None, *, run: str | None = None, variant: str | None = None,
                since_ms: int | None = None, until_ms: int | None = None,
                candles: Mapping[str, Candles] | None = None, candles_source: str | None = None) -> ReviewData:
    """Read the store (through the ledger), find the eval gates, and build the review's numbers."""
    configured = getattr(getattr(settings, "cycle", None), "run", None)
    chosen = choose_run(store, run, configured)
    if variant is not None:
        known = store_variants(store, chosen)
        if variant not in known:
            raise ReviewError(f"run {chosen!r} has no decisions of variant {variant!r}; its variants: "
                              f"{', '.join(known) or '(none)'}")
    ledger = load_ledger(store, run=chosen, variant=variant, since_ms=since_ms, until_ms=until_ms)
    return build_review(ledger, store=store.display_url, comparisons=paper_vs_evals(ledger, settings),
                        candles=candles, candles_source=candles_source)


# --- the review as a report -------------------------------------------------------------------


def _pct(x: float | None, digits: int = 1) -> str | None:
    return None if x is None else f"{100 * x:.{digits}f}%"


def _num2(x: float | None) -> str | None:
    return None if x is None else f"{x:,.2f}"


def _money(x: float | None) -> str | None:
    return None if x is None else f"{x:+,.2f}"


def _ratio(x: float | None) -> str | None:
    return None if x is None else f"{x:.2f}"


def _duration(ms: float | None) -> str | None:
    if ms is None:
        return None
    hours = ms / 3_600_000
    return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} d"


GROUP_HEADERS = ["trades", "win rate", "profit factor", "avg R", "P&L", "Sharpe", "Sortino", "max DD", "avg hold"]


def _group_cells(s: TradeStats, c: CurveStats | None) -> list[str | int | None]:
    pf = _ratio(s.profit_factor) if s.profit_factor is not None else ("inf" if s.trades and not s.losses else None)
    return [s.trades, _pct(s.win_rate), pf, _ratio(s.avg_r), _money(s.total_pnl),
            _ratio(c.sharpe) if c else None, _ratio(c.sortino) if c else None, _pct(c.max_drawdown, 2) if c else None,
            _duration(s.avg_holding_ms)]


def summary_table(data: ReviewData) -> Table:
    p = data.performance
    t, c = p.trade, p.curve
    rows = [
        ["period", f"{iso(data.start_ms)} .. {iso(data.end_ms)} ({data.cycles} cycles)"],
        ["equity", f"{data.initial_equity:,.2f} to {data.final_equity:,.2f}"],
        ["total return", _pct(c.total_return, 2)],
        ["annualised return (CAGR)", _pct(c.annualised_return, 1)],
        ["Sharpe (annualised)", _ratio(c.sharpe)],
        ["Sortino (annualised)", _ratio(c.sortino)],
        ["max drawdown", _pct(c.max_drawdown, 2)],
        ["longest drawdown", _duration(c.max_drawdown_duration_ms)],
        ["exposure (time with a position)", _pct(p.exposure)],
        ["closed trades", t.trades],
        ["win rate", _pct(t.win_rate)],
        ["profit factor", _ratio(t.profit_factor)],
        ["average R", _ratio(t.avg_r)],
        ["net P&L of closed trades", _money(t.total_pnl)],
        ["fees", _num2(t.fees)],
        ["decisions", ", ".join(f"{k} {v}" for k, v in data.outcomes.items()) or "none"],
    ]
    return Table(headers=["figure", "value"], rows=rows)


def group_table(data: ReviewData, name: str) -> Table:
    rows = [[r.group, *_group_cells(r.stats, r.curve)] for r in data.groups[name]]
    return Table(headers=[name, *GROUP_HEADERS], rows=rows)


def calibration_table(cal: Calibration) -> Table:
    rows = [[f"{b.lo:.1f}-{b.hi:.1f}", b.count, _pct(b.mean_confidence), _pct(b.hit_rate)]
            for b in cal.bins if b.count]
    return Table(headers=["confidence", "count", "mean confidence", "hit rate"], rows=rows,
                 caption=f"Brier score {cal.brier:.4f} over {cal.n}" if cal.brier is not None else "no observations")


def comparison_table(comparisons: Sequence[PaperVsEvals]) -> Table:
    rows: list[list[str | int | None]] = []
    for c in comparisons:
        if not c.metrics:
            rows.append([c.variant, c.status.replace("_", " "), c.paper_trades, None, None, None, None])
            continue
        for m in c.metrics:
            fmt = _pct if m.name == "win_rate" else _ratio
            within = "-" if m.within is None else ("yes" if m.within else "NO")
            rows.append([c.variant, c.status.replace("_", " "), c.paper_trades, m.name.replace("_", " "),
                         fmt(m.paper), f"{fmt(m.evals)} [{fmt(m.low)}, {fmt(m.high)}]", within])
    return Table(headers=["variant", "status", "paper trades", "figure", "paper", "evals [band]", "within"], rows=rows)


def _plot(draw, *args) -> tuple[Path | None, str | None]:
    try:
        return draw(*args), None
    except plots.PlotError as exc:
        return None, str(exc)


def review_report(data: ReviewData, plots_dir: Path) -> Report:
    """The review as a Report, drawing its PNGs into `plots_dir`."""
    plots_dir = Path(plots_dir)
    p = data.performance
    who = f"run {data.run}" + (f", variant {data.variant}" if data.variant else "")
    sections: list[Section] = []

    summary = [f"Store {data.store}, {who}, {iso(data.start_ms)} to {iso(data.end_ms)}."]
    summary += list(data.notes)
    days = (data.end_ms - data.start_ms) / 86_400_000
    if days < SHORT_PERIOD_DAYS:
        summary.append(f"The period spans {days:.1f} days: the annualised figures (CAGR, Sharpe, Sortino) extrapolate "
                       "it to a year and say little about a period this short.")
    summary.append("Account figures use the account's equity at the end of each cycle, open positions marked to "
                   "market; returns are per cycle, annualised over a 365-day year, risk-free rate 0. A win is a "
                   "trade with net P&L > 0; R is net P&L over the money at risk at entry.")
    sections.append(Section(heading="Summary", paragraphs=summary, tables=[summary_table(data)]))

    images, why = [], []
    img, err = _plot(plots.equity_drawdown_png, {"account": data.curve}, plots_dir / "equity_drawdown.png",
                     f"Equity and drawdown, {who}")
    images += [img] if img else []
    why += [err] if err else []
    sections.append(Section(heading="Equity and drawdown", paragraphs=why or [
        f"Max drawdown {_pct(p.curve.max_drawdown, 2)}; longest time under water "
        f"{_duration(p.curve.max_drawdown_duration_ms)}."], images=images))

    images, why = [], []
    for freq, rets in (("Monthly", data.monthly), ("Daily", data.daily)):
        img, err = _plot(plots.returns_heatmap_png, list(rets), plots_dir / f"returns_{freq.lower()}.png",
                         f"{freq} returns (UTC), {who}")
        images += [img] if img else []
        why += [err] if err else []
    monthly = Table(headers=["month", "return", "equity at end"],
                    rows=[[r.label, _pct(r.ret, 2), _num2(r.end_equity)] for r in data.monthly])
    sections.append(Section(heading="Returns by period", paragraphs=why or [
        "Calendar periods in UTC; each return is the last equity in the period over the last equity before it. "
        "Blank daily cells had no completed cycle."], tables=[monthly], images=images))

    sections.append(Section(
        heading="By variant, symbol, regime, direction and exit reason",
        paragraphs=[
            "Trades, win rate, profit factor, average R and P&L are over the group's closed trades. Sharpe, Sortino "
            "and max drawdown of a group use its realised equity curve: the account's equity at the start of the "
            f"period ({data.initial_equity:,.2f}) plus the cumulative net P&L of the group's trades closed by each "
            "cycle; open positions are not marked in it, and the groups share one account's cash."],
        tables=[group_table(data, name) for name in GROUPINGS]))

    cal = data.calibration
    cal_sets = {"closed trades (hit = net win)": cal.trades}
    paragraphs = ["Stated confidence of the signal, its P(target before stop), against the realised hit rate. "
                  "Closed trades: the hit is a net win. Signals: the hit is the later candles reaching the target "
                  "before the stop within horizon_hours (a candle reaching both counts as the stop)."]
    tables = [calibration_table(cal.trades).model_copy(update={"caption": "Closed trades: "
                                                               + calibration_table(cal.trades).caption})]
    if cal.signals is not None:
        cal_sets["signals (hit = target before stop)"] = cal.signals
        paragraphs.append(f"{cal.signals_scored} of {cal.signals_total} LONG/SHORT signals had their bracket "
                          f"resolved by the candles ({cal.candles_source}).")
        tables.append(calibration_table(cal.signals).model_copy(
            update={"caption": "Signals: " + calibration_table(cal.signals).caption}))
    else:
        paragraphs.append("Signal-level calibration needs candles covering the signals' horizons (--data).")
    img, err = _plot(plots.calibration_png, cal_sets, plots_dir / "calibration.png", f"Calibration, {who}")
    sections.append(Section(heading="Confidence calibration", paragraphs=paragraphs + ([err] if err else []),
                            tables=tables, images=[img] if img else []))

    th_rows = [[u.theory, u.stats.trades, u.winners, _pct(u.winner_share), u.losers, _pct(u.loser_share),
                _pct(u.stats.win_rate), _ratio(u.stats.avg_r), _money(u.stats.total_pnl)] for u in data.theories]
    img, err = _plot(plots.bars_png, {u.theory: u.stats.total_pnl for u in data.theories},
                     plots_dir / "theories_pnl.png", "Net P&L of the trades leaning on each theory", "P&L (quote)")
    sections.append(Section(
        heading="Theories the winners and losers leaned on",
        paragraphs=["A trade counts for every theory its signal named; shares are of all winning / losing trades."]
        + ([err] if err and data.theories else []),
        tables=[Table(headers=["theory", "trades", "winners", "of winners", "losers", "of losers", "win rate",
                               "avg R", "P&L"], rows=th_rows)],
        images=[img] if img else []))

    gate_rows = [[g.rule, g.proposals, g.rejected, _pct(g.rejected_rate), g.shrank, _pct(g.shrank_rate),
                  ", ".join(f"{k} {v}" for k, v in g.codes.items())] for g in data.gate.values()]
    sections.append(Section(
        heading="Risk gate activity",
        paragraphs=["Per rule, over the trade proposals (LONG/SHORT signals) the gate saw: how often it refused the "
                    "trade and how often it shrank an approved one."],
        tables=[Table(headers=["rule", "proposals", "rejected", "rejected %", "shrank", "shrank %", "codes"],
                      rows=gate_rows)]))

    u = data.llm
    sections.append(Section(heading="LLM usage and cost", tables=[Table(headers=["figure", "value"], rows=[
        ["decisions with calls", u.decisions], ["decided by an LLM", u.llm_decisions], ["calls", u.calls],
        ["answered from the call records", u.cache_hits], ["tokens in / out", f"{u.tokens_in:,} / {u.tokens_out:,}"],
        ["cost", f"${u.cost_usd:,.4f}"],
        ["cost per decision", None if u.cost_per_decision is None else f"${u.cost_per_decision:,.5f}"],
        ["latency per decision (mean / p50 / p95)", None if u.latency_per_decision_ms is None else
         f"{u.latency_per_decision_ms:,.0f} / {u.latency_p50_ms:,.0f} / {u.latency_p95_ms:,.0f} ms"],
        ["schema-valid rate", _pct(u.schema_valid_rate)], ["repair rate", _pct(u.repair_rate)],
        ["HOLD on failure rate", _pct(u.hold_on_failure_rate)],
        ["call outcomes", ", ".join(f"{k} {v}" for k, v in u.outcomes.items()) or None],
    ])]))

    m = data.manual
    manual_tables = [Table(headers=["figure", "value"], rows=[
        ["tickets", m.tickets], ["executed", m.executed], ["skipped", m.skipped], ["awaiting the person", m.pending],
        ["other (withdrawn)", m.other], ["executed of answered", _pct(m.execution_rate)],
        ["mean slippage ticket -> fill", _pct(m.mean_slippage, 3)],
        ["median slippage", _pct(m.median_slippage, 3)], ["slippage cost", _money(-m.slippage_cost)],
    ])]
    if m.fills:
        manual_tables.append(Table(
            headers=["ticket", "symbol", "side", "ticket entry", "fill", "slippage", "cost", "delay"],
            rows=[[f.ticket, f.symbol, f.side, f"{f.ticket_entry:,.6g}", f"{f.fill_price:,.6g}", _pct(f.slippage, 3),
                   _money(-f.slippage_quote), _duration(f.delay_ms)] for f in m.fills],
            caption="Executed tickets (slippage positive = worse for the trader)"))
    sections.append(Section(
        heading="Manual executions",
        paragraphs=["Trades the manual broker sent to a person: executed, skipped or still waiting, and the "
                    "slippage between the ticket's entry and the fill the person reported."
                    if m.tickets else "No manual tickets in this period (the paper broker traded by itself)."],
        tables=manual_tables if m.tickets else []))

    pve = list(data.paper_vs_evals)
    sections.append(Section(
        heading="Paper vs evals",
        paragraphs=[c.line for c in pve] + list(dict.fromkeys(n for c in pve for n in c.notes))
        or ["No variant proposed a trade."],
        tables=[comparison_table(pve)] if pve else []))

    title = "Paper-trading review"
    subtitle = f"{who}: {iso(data.start_ms)} to {iso(data.end_ms)}"
    return Report(title=title, subtitle=subtitle, sections=sections)


TERMINAL_SECTIONS = ("Summary", "By variant, symbol, regime, direction and exit reason", "Risk gate activity",
                     "LLM usage and cost", "Manual executions", "Paper vs evals")


def terminal_report(report: Report) -> Report:
    """The parts of the review a terminal shows (the files have everything)."""
    keep = [s.model_copy(update={"images": []}) for s in report.sections if s.heading in TERMINAL_SECTIONS]
    return report.model_copy(update={"sections": keep})


def write_review(data: ReviewData, out_dir: Path, stem: str = "review") -> tuple[Report, Path, Path]:
    """Draw the plots and write `<stem>.md` and `<stem>.html` into `out_dir`; returns the report and both paths."""
    report = review_report(data, Path(out_dir))
    md, page = write_report(report, Path(out_dir), stem)
    return report, md, page


def review_json(data: ReviewData) -> str:
    return json.dumps(data.model_dump(mode="json"), indent=2, sort_keys=True)
