"""Comparisons of eval variants: each variant's metrics, and paired tests between variants on the same decisions.

Pure: ledgers (`evals.ledger.Ledger`), candles and baseline curves in, pydantic models out. Every
metric comes from `evals.metrics` and every test statistic from `evals.stats`; this module only
decides WHAT is compared with WHAT, aligns the data and words the verdicts.

What is compared with what:
- every variant against the heuristic baseline (the variant whose provider spec is `heuristic`),
  and every pair of LLM variants; with no heuristic variant in the run, only the LLM pairs (said
  in the notes);
- variants are aligned ON THE SAME DECISIONS: a decision is (symbol, decision time); only
  decisions both variants made (neither skipped for bad data nor failed) take part, and the
  comparison says how many there were.

The tests, per pair (A = the baseline or the first LLM variant, B = the other; differences are B - A):
- paired block bootstrap of the mean realised P&L per decision time (the sum over the aligned
  symbols of each decision's closed-trade P&L, net of fees, quote currency; a decision with no
  trade, or whose trade had not closed when the run ended, counts 0). Resampling whole decision
  times in blocks keeps the cross-symbol and serial dependence of the P&L (Politis & Romano 1994
  stationary bootstrap, `evals.stats.paired_bootstrap_ci`). This interval is the verdict's.
- paired block bootstrap of the mean daily return of the two equity curves (UTC days both cover);
- McNemar on directional hits, over the aligned decisions where BOTH stated a direction (LONG or
  SHORT) and the hit is known (the close `horizon_hours` later is in the data);
- Diebold-Mariano with the Harvey-Leybourne-Newbold small-sample correction on two losses:
  (1) the negative realised R per decision time (the sum over aligned symbols of each decision's
  R multiple; a decision without a closed trade counts 0), an economic loss; and
  (2) the Brier loss (confidence - target first)^2 on the decisions where both stated a direction
  and both brackets resolved, a forecast-quality loss: a signal's confidence is its stated
  P(target before stop), so it is scored on whether the target was reached before the stop
  within the horizon (`evals.ledger.bracket_outcomes`), not on the direction of the move.
  A positive DM statistic means A's loss is larger (B is better).
- each variant's probabilistic Sharpe ratio (vs 0) and deflated Sharpe ratio on its daily
  returns, with n_trials = every distinct variant tried on this history (`evals.trials`: this run's
  and those of other runs over overlapping periods in the runs folder; this run's alone when no
  count is given) and the spread of this run's Sharpe ratios (Bailey & Lopez de Prado 2012, 2014).

Per symbol and per regime the TRADE metrics and the signal metrics are given; the curve metrics
(Sharpe, drawdown, ...) exist only for the whole account, because the symbols share one account
and its equity cannot be split among them honestly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from agent.cycle import Outcome
from evals import stats
from evals.ledger import DecisionRecord, Ledger, LLMUsage, RuleActivity, bracket_outcomes, directional_hits
from evals.metrics import (
    YEAR_MS,
    Calibration,
    CurveStats,
    DrawdownDistribution,
    EquityCurve,
    Performance,
    PeriodStats,
    TradeStats,
    calibration,
    curve_stats,
    group_stats,
    performance,
    period_returns,
    period_stats,
    reshuffled_drawdowns,
    trade_stats,
)
from evals.trials import TrialCount
from theories.candles import Candles

VariantKind = Literal["heuristic", "strategy", "llm", "other"]
# Decisions that never reached a signal: not comparable between variants.
NOT_DECIDED = frozenset({"skipped", "error"})
DIRECTIONS = frozenset({"LONG", "SHORT"})
MIN_ALIGNED = 5  # below this a test is not run: the answer would be noise dressed as a number
# A block bootstrap needs room for blocks: below 10 time points its interval is not worth printing
# (and the automatic block length of Politis & White cannot be estimated).
MIN_BOOTSTRAP = 10


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def variant_kind(provider_spec: str) -> VariantKind:
    """heuristic | strategy (`strategy:<name>`) | llm (ollama, openai, replay of either) | other."""
    spec = provider_spec.strip()
    kind = spec.partition(":")[0]
    if spec == "heuristic" or spec == "replay:heuristic":
        return "heuristic"
    if kind == "strategy":
        return "strategy"
    if kind in ("ollama", "openai") or (kind == "replay" and spec.split(":")[1:2] in (["ollama"], ["openai"])):
        return "llm"
    return "other"


class StatsOptions(_Frozen):
    """How the intervals are computed (config `[evals]`)."""

    level: float = Field(0.95, gt=0.5, lt=1)
    n_boot: int = Field(2000, ge=100)
    seed: int = 0
    reshuffles: int = Field(2000, ge=100, description="Monte Carlo trade-order reshuffles per variant.")


class VariantData(BaseModel):
    """One variant of a run as the comparisons need it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    signature: str = Field(description="provider:model:prompt_variant (DecisionRow.variant).")
    kind: VariantKind
    ledger: Ledger


# --- one variant --------------------------------------------------------------------------------


class SignalQuality(_Frozen):
    """The signals themselves, traded or not: direction right or wrong, and how honest the confidence was."""

    decisions: int = Field(description="Decisions that reached a signal (not skipped, not failed).")
    directional: int = Field(description="Signals that said LONG or SHORT.")
    holds: int
    scored: int = Field(description="Directional signals whose direction is scored (horizon inside the data).")
    hits: int = Field(description="Of them, the close horizon_hours later moved the stated way.")
    accuracy: float | None = Field(description="hits / scored; None when nothing was scored.")
    bracket_scored: int = Field(0, description="Directional signals with a confidence whose bracket is resolved "
                                "(`evals.ledger.bracket_outcomes`): the calibration's sample.")
    targets_first: int = Field(0, description="Of them, the target was reached before the stop within the horizon.")
    calibration: Calibration | None = Field(description="Stated confidence, which is P(target before stop), against "
                                            "the target reached first; None when no bracket was resolved.")


class DecisionFunnel(_Frozen):
    """Where a variant's decisions went, from the data check to a closed trade.

    Every count is of stored decisions (a decision is one symbol at one decision time), by the
    decision's outcome: skipped + errors + holds + proposals = decisions, and a proposal (a LONG or
    SHORT signal, which always goes to the risk gate) ends rejected, ordered or order_failed.
    `refusals` says which risk rules refused the rejected proposals (a proposal refused by two
    rules counts for both), so a variant without trades shows whether it never proposed one or
    the risk rules stopped every one.
    """

    decisions: int = Field(description="Every stored decision of the variant.")
    skipped: int = Field(description="Not decided: the data check failed (stale, gapped or missing candles).")
    errors: int = Field(description="Not decided: the decision failed (recorded with its reason).")
    holds: int = Field(description="The signal was HOLD.")
    proposals: int = Field(description="LONG or SHORT signals, each judged by the risk gate.")
    rejected: int = Field(description="Proposals the risk gate refused.")
    ordered: int = Field(description="Proposals the gate approved and the broker accepted.")
    order_failed: int = Field(description="Approved proposals the broker refused.")
    closed_trades: int = Field(description="Ordered proposals whose trade closed by the end of the run.")
    refusals: dict[str, RuleActivity] = Field(description="Per risk rule that refused any proposal: how many, "
                                              "with its reason codes (the ledger's gate activity).")
    refused_confidence: tuple[float, float] | None = Field(
        None, description="Median and maximum stated confidence of the refused proposals; None without any.")

    def refused_by(self) -> str:
        """The refusing rules, most refusals first, each with its reason codes: 'regime_filter 792:
        confidence_too_low 792, direction_not_allowed 22; exposure 3: max_open_positions 3'."""
        rules = sorted((r for r in self.refusals.values() if r.rejected), key=lambda r: (-r.rejected, r.rule))
        return "; ".join(f"{r.rule} {r.rejected}: " + ", ".join(
            f"{code} {n}" for code, n in sorted(r.codes.items(), key=lambda kv: (-kv[1], kv[0]))) for r in rules)


def decision_funnel(led: Ledger) -> DecisionFunnel:
    """The DecisionFunnel of a ledger (its decisions, closed trades and gate activity)."""
    by: dict[str, int] = {}
    for d in led.decisions:
        by[d.outcome] = by.get(d.outcome, 0) + 1
    known = set(get_args(Outcome))
    if set(by) - known:
        raise ValueError(f"decision outcomes {sorted(set(by) - known)} are not known to the funnel "
                         f"(known: {sorted(known)})")
    proposals = by.get("rejected", 0) + by.get("ordered", 0) + by.get("order_failed", 0)
    ordered = {d.decision_id for d in led.decisions if d.outcome == "ordered"}
    refused = [d.confidence for d in led.decisions if d.outcome == "rejected" and d.confidence is not None]
    return DecisionFunnel(
        decisions=len(led.decisions), skipped=by.get("skipped", 0), errors=by.get("error", 0),
        holds=by.get("hold", 0), proposals=proposals, rejected=by.get("rejected", 0), ordered=len(ordered),
        order_failed=by.get("order_failed", 0),
        closed_trades=len({t.decision_id for t in led.trades} & ordered),
        refusals={name: r for name, r in led.gate.items() if r.rejected},
        refused_confidence=(float(np.median(refused)), max(refused)) if refused else None,
    )


class GroupSummary(_Frozen):
    trades: TradeStats
    signals: SignalQuality


class SharpeSignificance(_Frozen):
    daily_returns: int = Field(description="Daily returns the ratios were computed on.")
    psr: float | None = Field(description="P(true Sharpe > 0), Bailey & Lopez de Prado (2012); None if undefined.")
    dsr: stats.DeflatedSharpe | None = Field(description="Deflated Sharpe ratio given the run's trials; None if "
                                             "undefined (too few returns, flat curve).")
    note: str | None = None


class VariantSummary(_Frozen):
    name: str
    signature: str
    kind: VariantKind
    performance: Performance | None = Field(description="None when the variant has no equity curve yet.")
    by_symbol: dict[str, GroupSummary]
    by_regime: dict[str, GroupSummary]
    by_side: dict[str, TradeStats]
    signals: SignalQuality
    llm: LLMUsage = Field(description="Calls, tokens, cost and latency per decision; schema-valid, repair and "
                        "HOLD-on-failure rates (the ledger's).")
    sharpe: SharpeSignificance
    periods: list[PeriodStats] = Field(description="Walk-forward stability: results per calendar period.")
    period_freq: str = Field(description="M (monthly) for runs under two years, else Q (quarterly).")
    reshuffle: DrawdownDistribution | None = Field(description="Max drawdown over random trade orders; None below "
                                                   "2 closed trades.")
    open_at_end: int = Field(description="Decisions that placed an order but have no closed trade when the run "
                             "ended: still open, or never filled (not in the trade statistics).")
    funnel: DecisionFunnel = Field(description="Where the decisions went: skipped, HOLD, refused by the risk gate, "
                                   "ordered, closed.")


def _decided(decisions: Sequence[DecisionRecord]) -> list[DecisionRecord]:
    return [d for d in decisions if d.outcome not in NOT_DECIDED]


@dataclass(frozen=True)
class Scores:
    """What the candles after its decisions say of one variant's signals, by decision id.

    `direction`: the close horizon_hours later moved the stated way (`evals.ledger.directional_hits`),
    for directional accuracy and McNemar. `bracket`: the target was reached before the stop within the
    horizon (`evals.ledger.bracket_outcomes`): the event a signal's confidence states, so the Brier
    score, the reliability curve and the Diebold-Mariano test on the Brier loss are scored on it.
    """

    direction: Mapping[str, bool] = field(default_factory=dict)
    bracket: Mapping[str, bool] = field(default_factory=dict)


def scores(decisions: Sequence[DecisionRecord], candles: Mapping[str, Candles]) -> Scores:
    return Scores(direction=dict(directional_hits(decisions, candles)),
                  bracket=dict(bracket_outcomes(decisions, candles)))


def signal_quality(decisions: Sequence[DecisionRecord], scored_by: Scores) -> SignalQuality:
    """Directional accuracy and the calibration of stated confidence of `decisions` (see `Scores`)."""
    decided = _decided(decisions)
    directional = [d for d in decided if d.direction in DIRECTIONS]
    hits = scored_by.direction
    scored = [d for d in directional if d.decision_id in hits and d.confidence is not None]
    hit = [hits[d.decision_id] for d in scored]
    resolved = [d for d in directional if d.decision_id in scored_by.bracket and d.confidence is not None]
    first = [scored_by.bracket[d.decision_id] for d in resolved]
    return SignalQuality(
        decisions=len(decided), directional=len(directional),
        holds=sum(d.direction == "HOLD" for d in decided), scored=len(scored), hits=sum(hit),
        accuracy=sum(hit) / len(hit) if hit else None, bracket_scored=len(resolved), targets_first=sum(first),
        calibration=calibration([d.confidence for d in resolved], first) if resolved else None,
    )


def daily_returns(curve: EquityCurve | None) -> dict[str, float]:
    """UTC-day returns by date label (`evals.metrics.period_returns`), days with no curve point left out."""
    if curve is None or len(curve) < 2:
        return {}
    return {p.label: p.ret for p in period_returns(curve, "D") if p.points > 0}


def variant_sharpe(curve: EquityCurve | None) -> float | None:
    """The Sharpe ratio that enters the deflation: per-day (not annualised) Sharpe of the daily returns."""
    r = list(daily_returns(curve).values())
    if len(r) < 3:
        return None
    return stats.sharpe_ratio(np.asarray(r))


def summarise_variant(v: VariantData, scored_by: Scores, *, n_trials: int,
                      trial_sharpes: Sequence[float], options: StatsOptions) -> VariantSummary:
    """Every metric of one variant (see the module docstring for what is per symbol/regime)."""
    led = v.ledger
    trades = list(led.trades)
    curve = led.curve
    perf = performance(trades, curve) if curve is not None else None
    decided = _decided(led.decisions)

    def groups(key) -> dict[str, GroupSummary]:
        by_trades = group_stats(trades, key)
        decs: dict[str, list[DecisionRecord]] = {}
        for d in decided:
            decs.setdefault(key(d), []).append(d)
        names = sorted(set(by_trades) | set(decs))
        return {g: GroupSummary(trades=by_trades.get(g, trade_stats([])),
                                signals=signal_quality(decs.get(g, []), scored_by)) for g in names}

    span_ms = (curve.time_ms[-1] - curve.time_ms[0]) if curve is not None else 0
    freq = "M" if span_ms < 2 * YEAR_MS else "Q"
    ordered = sorted(trades, key=lambda t: (t.closed_ms, t.trade_id))
    reshuffle = None
    if len(ordered) >= 2 and curve is not None:
        reshuffle = reshuffled_drawdowns([t.pnl for t in ordered], led.initial_balance or curve.equity[0],
                                         n=options.reshuffles, seed=options.seed)
    traded = {t.decision_id for t in trades}
    open_at_end = sum(d.outcome == "ordered" and d.decision_id not in traded for d in decided)
    return VariantSummary(
        name=v.name, signature=v.signature, kind=v.kind, performance=perf,
        by_symbol=groups(lambda x: x.symbol), by_regime=groups(lambda x: x.regime or "none"),
        by_side=group_stats(trades, lambda t: t.side), signals=signal_quality(decided, scored_by),
        llm=led.llm, sharpe=sharpe_significance(curve, n_trials, trial_sharpes),
        periods=period_stats(trades, curve, freq) if curve is not None else [], period_freq=freq,
        reshuffle=reshuffle, open_at_end=open_at_end, funnel=decision_funnel(led),
    )


def sharpe_significance(curve: EquityCurve | None, n_trials: int, trial_sharpes: Sequence[float]) -> SharpeSignificance:
    r = np.asarray(list(daily_returns(curve).values()))
    if r.size < 3:
        return SharpeSignificance(daily_returns=int(r.size), psr=None, dsr=None,
                                  note=f"{r.size} daily returns: at least 3 are needed")
    psr = stats.probabilistic_sharpe(r)
    dsr = None
    note = None
    if n_trials >= 2 and len(trial_sharpes) >= 2:
        dsr = stats.deflated_sharpe(r, n_trials=n_trials, trial_sharpes=list(trial_sharpes))
    else:
        note = (f"{len(trial_sharpes)} of the {n_trials} variants tried have a Sharpe ratio: the deflated Sharpe "
                "ratio needs at least 2")
    return SharpeSignificance(daily_returns=int(r.size), psr=psr, dsr=dsr, note=note)


# --- pairs of variants --------------------------------------------------------------------------


class PairedComparison(_Frozen):
    """B against A on the decisions both made. Differences are B - A."""

    a: str
    b: str
    aligned_decisions: int = Field(description="(symbol, decision time) pairs both variants decided.")
    aligned_times: int = Field(description="Decision times among them (the bootstrap's time index).")
    only_a: int = Field(description="Decisions A made that B did not (left out).")
    only_b: int
    pnl_per_time: stats.Interval | None = Field(
        description="Mean realised P&L per decision time, B - A, quote currency (sum over aligned symbols).")
    pnl_per_time_pct: tuple[float, float, float] | None = Field(
        description="The same interval as % of A's starting equity: (estimate, low, high).")
    daily_return: stats.Interval | None = Field(description="Mean daily return, B - A, fraction per day.")
    daily_days: int = 0
    mcnemar: stats.McNemar | None = None
    mcnemar_n: int = Field(0, description="Aligned decisions where both stated a direction with a known outcome.")
    dm_r: stats.DieboldMariano | None = Field(default=None, description="Loss: -(sum of R) per decision time.")
    dm_brier: stats.DieboldMariano | None = Field(default=None, description="Loss: (confidence - target first)^2.")
    verdict: str
    significant: bool
    notes: tuple[str, ...] = ()


def _pnl_by_decision(led: Ledger) -> tuple[dict[str, float], dict[str, float]]:
    pnl: dict[str, float] = {}
    r: dict[str, float] = {}
    for t in led.trades:
        pnl[t.decision_id] = pnl.get(t.decision_id, 0.0) + t.pnl
        r[t.decision_id] = r.get(t.decision_id, 0.0) + t.r_multiple
    return pnl, r


def _keyed(led: Ledger) -> dict[tuple[int, str], DecisionRecord]:
    return {(d.decision_ms, d.symbol): d for d in _decided(led.decisions)}


def _fmt_money(x: float) -> str:
    return f"{x:,.2f}"


def verdict_sentence(a: str, b: str, interval: stats.Interval | None, unit: str,
                     pct: tuple[float, float, float] | None = None) -> tuple[str, bool]:
    """"B beats A by x, 95% CI [l, u]" (or A beats B), else "no significant difference"; and whether significant."""
    if interval is None:
        return f"{b} vs {a}: not compared (too few aligned decisions)", False
    level = f"{interval.level:.0%}"
    est, lo, hi = interval.estimate, interval.low, interval.high
    extra = ""
    if lo > 0 or hi < 0:
        winner, loser, sign = (b, a, 1.0) if lo > 0 else (a, b, -1.0)
        x, l_, u_ = sign * est, min(sign * lo, sign * hi), max(sign * lo, sign * hi)
        if pct is not None:
            pe, pl, pu = (sign * v for v in pct)
            extra = f" ({pe:+.3f}% of starting equity, CI [{min(pl, pu):+.3f}%, {max(pl, pu):+.3f}%])"
        return (f"{winner} beats {loser} by {_fmt_money(x)} {unit}, {level} CI [{_fmt_money(l_)}, {_fmt_money(u_)}]"
                f"{extra}", True)
    return (f"no significant difference between {b} and {a} ({b} - {a} = {_fmt_money(est)} {unit}, "
            f"{level} CI [{_fmt_money(lo)}, {_fmt_money(hi)}] contains 0)", False)


def compare_pair(a: VariantData, b: VariantData, scores_a: Scores, scores_b: Scores,
                 options: StatsOptions, currency: str = "quote") -> PairedComparison:
    """B - A on the decisions both made (see the module docstring for every test and its unit)."""
    hits_a, hits_b = scores_a.direction, scores_b.direction
    first_a, first_b = scores_a.bracket, scores_b.bracket
    ka, kb = _keyed(a.ledger), _keyed(b.ledger)
    keys = sorted(set(ka) & set(kb))
    notes: list[str] = []
    pnl_a, r_a = _pnl_by_decision(a.ledger)
    pnl_b, r_b = _pnl_by_decision(b.ledger)
    times = sorted({k[0] for k in keys})
    index = {t: i for i, t in enumerate(times)}
    per_time = np.zeros((4, len(times)))  # pnl a, pnl b, R a, R b
    for k in keys:
        i = index[k[0]]
        da, db = ka[k].decision_id, kb[k].decision_id
        per_time[:, i] += (pnl_a.get(da, 0.0), pnl_b.get(db, 0.0), r_a.get(da, 0.0), r_b.get(db, 0.0))

    pnl_ci = pct = dm_r = None
    if len(times) >= MIN_BOOTSTRAP:
        pnl_ci = stats.paired_bootstrap_ci(per_time[0], per_time[1], np.mean, n_boot=options.n_boot,
                                           level=options.level, seed=options.seed)
        start = a.ledger.initial_balance or (a.ledger.curve.equity[0] if a.ledger.curve else None)
        if start:
            pct = (100 * pnl_ci.estimate / start, 100 * pnl_ci.low / start, 100 * pnl_ci.high / start)
        dm_r = stats.diebold_mariano(-per_time[2], -per_time[3])
        if dm_r.note:
            notes.append(f"Diebold-Mariano on R: {dm_r.note}")
    else:
        notes.append(f"{len(times)} aligned decision times: at least {MIN_BOOTSTRAP} are needed for the P&L tests")

    ra, rb = daily_returns(a.ledger.curve), daily_returns(b.ledger.curve)
    days = sorted(set(ra) & set(rb))
    daily_ci = None
    if len(days) >= MIN_BOOTSTRAP:
        daily_ci = stats.paired_bootstrap_ci(np.array([ra[d] for d in days]), np.array([rb[d] for d in days]),
                                             np.mean, n_boot=options.n_boot, level=options.level, seed=options.seed)

    both = [k for k in keys if ka[k].direction in DIRECTIONS and kb[k].direction in DIRECTIONS
            and ka[k].decision_id in hits_a and kb[k].decision_id in hits_b]
    mc = None
    if len(both) >= MIN_ALIGNED:
        mc = stats.mcnemar([hits_a[ka[k].decision_id] for k in both], [hits_b[kb[k].decision_id] for k in both])
    elif keys:
        notes.append(f"McNemar: {len(both)} aligned decisions where both stated a direction with a known outcome "
                     f"(at least {MIN_ALIGNED} are needed)")
    with_conf = [k for k in keys if ka[k].direction in DIRECTIONS and kb[k].direction in DIRECTIONS
                 and ka[k].confidence is not None and kb[k].confidence is not None
                 and ka[k].decision_id in first_a and kb[k].decision_id in first_b]
    dm_brier = None
    if len(with_conf) >= MIN_ALIGNED:
        la = np.array([(ka[k].confidence - first_a[ka[k].decision_id]) ** 2 for k in with_conf])
        lb = np.array([(kb[k].confidence - first_b[kb[k].decision_id]) ** 2 for k in with_conf])
        dm_brier = stats.diebold_mariano(la, lb)
        if dm_brier.note:
            notes.append(f"Diebold-Mariano on Brier: {dm_brier.note}")
    elif keys:
        notes.append(f"Diebold-Mariano on Brier: {len(with_conf)} aligned decisions where both stated a direction "
                     f"and a confidence and both brackets resolved (at least {MIN_ALIGNED} are needed)")

    unit = f"{currency} per decision time"
    sentence, significant = verdict_sentence(a.name, b.name, pnl_ci, unit, pct)
    if keys and not any(ka[k].decision_id in pnl_a or kb[k].decision_id in pnl_b for k in keys):
        sentence += f"; neither closed a trade on the {len(keys)} aligned decisions"
    return PairedComparison(
        a=a.name, b=b.name, aligned_decisions=len(keys), aligned_times=len(times), only_a=len(set(ka) - set(kb)),
        only_b=len(set(kb) - set(ka)), pnl_per_time=pnl_ci, pnl_per_time_pct=pct, daily_return=daily_ci,
        daily_days=len(days), mcnemar=mc, mcnemar_n=len(both), dm_r=dm_r, dm_brier=dm_brier, verdict=sentence,
        significant=significant, notes=tuple(notes),
    )


def comparison_pairs(variants: Sequence[VariantData]) -> tuple[list[tuple[str, str]], list[str]]:
    """(A, B) name pairs: every variant vs the heuristic baseline, every pair of LLM variants; and notes."""
    notes: list[str] = []
    heuristic = [v.name for v in variants if v.kind == "heuristic"]
    pairs: list[tuple[str, str]] = []
    if heuristic:
        base = heuristic[0]
        if len(heuristic) > 1:
            notes.append(f"{len(heuristic)} heuristic variants: {base} is the baseline, the others are compared to it")
        pairs += [(base, v.name) for v in variants if v.name != base]
    else:
        notes.append("no heuristic variant in this run: only LLM variants are compared, pairwise")
    llm = [v.name for v in variants if v.kind == "llm"]
    pairs += [(llm[i], llm[j]) for i in range(len(llm)) for j in range(i + 1, len(llm))]
    return pairs, notes


# --- the whole run ------------------------------------------------------------------------------


class BaselineSummary(_Frozen):
    name: str
    curve: CurveStats


class RunComparison(_Frozen):
    variants: list[VariantSummary]
    comparisons: list[PairedComparison]
    baselines: list[BaselineSummary] = Field(description="Buy-and-hold curves (no decisions: curve metrics only).")
    n_trials: int = Field(description="Distinct variants tried on this history: the deflated Sharpe's number of "
                                      "trials (`evals.trials`).")
    trial_sharpes: list[float] = Field(description="Per-day Sharpe ratio of each variant with one (deflation input).")
    options: StatsOptions
    notes: tuple[str, ...] = ()


def compare_run(variants: Sequence[VariantData], candles: Mapping[str, Candles],
                baselines: Mapping[str, EquityCurve] | None = None,
                options: StatsOptions | None = None, currency: str = "quote",
                trials: TrialCount | None = None) -> RunComparison:
    """Summaries of every variant, and the paired comparisons `comparison_pairs` chooses.

    `candles` score the signals (`Scores`: their direction, and their bracket); `currency` names the
    quote currency in the verdicts (money amounts are in it). `trials` is the deflated Sharpe's N
    counted over the runs folder (`evals.trials.count_trials`); without it, N is the number of variants.
    """
    opts = options or StatsOptions()
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise ValueError(f"variant names must be unique, got {names}")
    scored = {v.name: scores(v.ledger.decisions, candles) for v in variants}
    sharpes = [s for s in (variant_sharpe(v.ledger.curve) for v in variants)
               if s is not None]
    n_trials = len(variants) if trials is None else trials.n_trials
    summaries = [summarise_variant(v, scored[v.name], n_trials=n_trials, trial_sharpes=sharpes, options=opts)
                 for v in variants]
    pairs, notes = comparison_pairs(variants)
    by_name = {v.name: v for v in variants}
    comparisons = [compare_pair(by_name[a], by_name[b], scored[a], scored[b], opts, currency) for a, b in pairs]
    if comparisons:
        k = len(comparisons)
        notes.append(f"{k} comparison{'s' if k > 1 else ''}, each at {opts.level:.0%} on its own: by chance "
                     f"alone about {(1 - opts.level) * k:.1f} of them would look significant with no real difference")
    if trials is not None:
        notes.append(trials.note())
    base = [BaselineSummary(name=k, curve=curve_stats(c)) for k, c in sorted((baselines or {}).items())]
    return RunComparison(variants=summaries, comparisons=comparisons, baselines=base, n_trials=n_trials,
                         trial_sharpes=sharpes, options=opts, notes=tuple(notes))


__all__ = [
    "BaselineSummary", "GroupSummary", "PairedComparison", "RunComparison", "SharpeSignificance",
    "SignalQuality", "StatsOptions", "VariantData", "VariantKind", "VariantSummary", "compare_pair", "compare_run",
    "comparison_pairs", "daily_returns", "signal_quality", "summarise_variant",
    "variant_kind", "variant_sharpe", "verdict_sentence",
]
