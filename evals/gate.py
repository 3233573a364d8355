"""The promotion gate: does a variant's OUT-OF-SAMPLE record meet every threshold of the config?

Out of sample means after the run's `in_sample_until` when the manifest has one (what was decided
before it may have been used to choose the variant), else the whole run, and the result says which.
Inside that span:
- trades: the closed trades OPENED at or after the start (a trade opened in sample and closed out of
  sample belongs to the in-sample record and is left out);
- equity: the account curve from its last point before the start (the base) to the end, so the
  first out-of-sample return is measured from the equity the span began with;
- the span in years is (end - start) / 365 days, from the run's period.

The checks (defaults from the issue, config `[evals.gate]`): trades >= 500, span >= 2 years, win rate
>= 55%, profit factor >= 1.4, max drawdown < 15%, annualised Sharpe > 1.0, deflated Sharpe >= 0.95
(significant at 95%: n_trials = every distinct variant tried on this history, counted over the runs
folder by `evals.trials` (the variants of the run with results when no count is given), deflated by
the spread of the run's per-day Sharpe ratios over the same out-of-sample span). A number that cannot be computed (no
trades, no losing trade for the profit factor, a flat curve) fails its check: the gate promotes only
what it can show. Failing is the normal outcome: these thresholds are meant to be hard.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from agent.config import PromotionThresholds
from evals import stats
from evals.compare import VariantData, daily_returns, variant_sharpe
from evals.ledger import Ledger
from evals.metrics import YEAR_MS, EquityCurve, Trade, curve_stats, trade_stats
from evals.trials import TrialCount
from theories.candles import iso

Op = Literal[">=", ">", "<", "<="]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class GateCheck(_Frozen):
    name: str
    value: float | None = Field(description="The out-of-sample value; None when it cannot be computed (fails).")
    threshold: float
    op: Op
    passed: bool
    note: str = ""


class OOSNumbers(_Frozen):
    """The out-of-sample figures paper trading is later compared with (review's paper-vs-evals)."""

    trades: int
    win_rate: float | None
    avg_r: float | None
    profit_factor: float | None
    sharpe: float | None
    max_drawdown: float | None


class GateResult(_Frozen):
    """`<run>/gate/<variant>.json`."""

    variant: str
    signature: str = Field(description="provider:model:prompt_variant (DecisionRow.variant).")
    run_id: str
    passed: bool
    oos_start_ms: int
    oos_end_ms: int
    oos_basis: str = Field(description="Why this span is the out-of-sample one.")
    checks: list[GateCheck]
    oos: OOSNumbers
    n_trials: int = Field(description="Distinct variants tried on this history (the deflated Sharpe's trials).")
    trials_note: str = Field("", description="How n_trials was counted (`evals.trials.TrialCount.note`).")
    thresholds: PromotionThresholds

    @property
    def failed(self) -> list[GateCheck]:
        return [c for c in self.checks if not c.passed]


def oos_slice(ledger: Ledger, start_ms: int, end_ms: int) -> tuple[list[Trade], EquityCurve | None]:
    """The trades opened in [start_ms, end_ms] and the curve over it (based on the last point before it)."""
    trades = [t for t in ledger.trades if start_ms <= t.opened_ms <= end_ms]
    curve = ledger.curve.between(start_ms, end_ms) if ledger.curve is not None else None
    return trades, curve


def oos_span(period_start_ms: int, period_end_ms: int, in_sample_until_ms: int | None) -> tuple[int, int, str]:
    """(start, end, why): after `in_sample_until` when the run has one, else the whole period."""
    if in_sample_until_ms is not None and in_sample_until_ms >= period_end_ms:
        raise ValueError(f"in_sample_until ({in_sample_until_ms}) is not before the period's end ({period_end_ms}): "
                         "the run has no out-of-sample part")
    if in_sample_until_ms is not None and in_sample_until_ms > period_start_ms:
        return in_sample_until_ms, period_end_ms, "after the run's in_sample_until"
    return period_start_ms, period_end_ms, "the whole run: it declares no in-sample part (in_sample_until)"


def _check(name: str, value: float | None, threshold: float, op: Op, note: str = "") -> GateCheck:
    if value is None:
        return GateCheck(name=name, value=None, threshold=threshold, op=op, passed=False,
                         note=note or "cannot be computed: fails")
    ok = {">=": value >= threshold, ">": value > threshold, "<": value < threshold, "<=": value <= threshold}[op]
    return GateCheck(name=name, value=float(value), threshold=threshold, op=op, passed=bool(ok), note=note)


def evaluate_gate(
    variant: str,
    signature: str,
    run_id: str,
    ledger: Ledger,
    thresholds: PromotionThresholds,
    *,
    period_start_ms: int,
    period_end_ms: int,
    in_sample_until_ms: int | None,
    n_trials: int,
    trial_sharpes: Sequence[float],
    trials_note: str = "",
) -> GateResult:
    """Every check on the out-of-sample part of `ledger` (the variant's full-run ledger).

    `trial_sharpes`: the per-day Sharpe ratio of each variant of the run over the same span (see
    `evals.compare.variant_sharpe`), the spread the deflated Sharpe ratio corrects for.
    """
    start, end, basis = oos_span(period_start_ms, period_end_ms, in_sample_until_ms)
    trades, curve = oos_slice(ledger, start, end)
    ts = trade_stats(trades)
    cs = curve_stats(curve) if curve is not None else None
    returns = np.asarray(list(daily_returns(curve).values()))
    dsr_value, dsr_note = None, ""
    if returns.size < 3:
        dsr_note = f"{returns.size} daily returns out of sample: at least 3 needed"
    elif n_trials < 2 or len(trial_sharpes) < 2:
        dsr_note = ("fewer than 2 trials, or fewer than 2 variants of the run with a Sharpe ratio: nothing to "
                    "deflate against, fails")
    else:
        dsr = stats.deflated_sharpe(returns, n_trials=n_trials, trial_sharpes=list(trial_sharpes))
        dsr_value, dsr_note = dsr.dsr, dsr.note or ""
    years = (end - start) / YEAR_MS
    t = thresholds
    sharpe_why = "no equity curve out of sample" if cs is None else next(
        (n for n in cs.notes if "Sharpe" in n), "annualised on the cycle grid, rf 0")
    checks = [
        _check("trades", ts.trades, t.min_trades, ">="),
        _check("years", years, t.min_years, ">=", "out-of-sample span, 365-day years"),
        _check("win_rate", ts.win_rate, t.min_win_rate, ">=", "" if ts.trades else "no trades"),
        _check("profit_factor", ts.profit_factor, t.min_profit_factor, ">=", ts.profit_factor_note or ""),
        _check("max_drawdown", cs.max_drawdown if cs else None, t.max_drawdown, "<",
               "" if cs else "no equity curve out of sample"),
        _check("sharpe", cs.sharpe if cs else None, t.min_sharpe, ">", sharpe_why),
        _check("deflated_sharpe", dsr_value, t.dsr_confidence, ">=", dsr_note),
    ]
    oos = OOSNumbers(trades=ts.trades, win_rate=ts.win_rate, avg_r=ts.avg_r, profit_factor=ts.profit_factor,
                     sharpe=cs.sharpe if cs else None, max_drawdown=cs.max_drawdown if cs else None)
    return GateResult(variant=variant, signature=signature, run_id=run_id, passed=all(c.passed for c in checks),
                      oos_start_ms=start, oos_end_ms=end, oos_basis=basis, checks=checks, oos=oos,
                      n_trials=n_trials, trials_note=trials_note, thresholds=thresholds)


def gate_variants(variants: Sequence[VariantData], thresholds: PromotionThresholds, *, run_id: str,
                  period_start_ms: int, period_end_ms: int, in_sample_until_ms: int | None,
                  trials: TrialCount | None = None) -> dict[str, GateResult]:
    """The gate for every variant of a run: n_trials is `trials`' count (`evals.trials.count_trials`), else the
    number of variants; the deflation uses the spread of their per-day Sharpe ratios over the same
    out-of-sample span."""
    start, end, _ = oos_span(period_start_ms, period_end_ms, in_sample_until_ms)
    sharpes = [s for s in (variant_sharpe(oos_slice(v.ledger, start, end)[1]) for v in variants) if s is not None]
    return {v.name: evaluate_gate(v.name, v.signature, run_id, v.ledger, thresholds, period_start_ms=period_start_ms,
                                  period_end_ms=period_end_ms, in_sample_until_ms=in_sample_until_ms,
                                  n_trials=len(variants) if trials is None else trials.n_trials,
                                  trial_sharpes=sharpes, trials_note="" if trials is None else trials.note())
            for v in variants}


def _value(c: GateCheck) -> str:
    if c.value is None:
        return "n/a"
    if c.name in ("win_rate", "max_drawdown"):
        return f"{c.value:.2%}"
    if c.name == "trades":
        return f"{c.value:.0f}"
    return f"{c.value:.3f}"


def _threshold(c: GateCheck) -> str:
    if c.name in ("win_rate", "max_drawdown"):
        return f"{c.threshold:.0%}"
    return f"{c.threshold:g}"


def render_gate(result: GateResult) -> str:
    """The gate's answer as the command prints it: every check, then the verdict in plain words."""
    lines = [
        f"Promotion gate for {result.variant} ({result.signature}) in run {result.run_id}",
        f"Out of sample: {iso(result.oos_start_ms)} .. {iso(result.oos_end_ms)} ({result.oos_basis})",
        "",
        f"{'check':<16} {'value':>10}  {'rule':<10} result",
    ]
    for c in result.checks:
        lines.append(f"{c.name:<16} {_value(c):>10}  {c.op + ' ' + _threshold(c):<10} {'pass' if c.passed else 'FAIL'}"
                     + (f"  ({c.note})" if c.note and (not c.passed or c.value is None) else ""))
    lines.append("")
    lines.append(result.trials_note or f"Deflated Sharpe ratio: n_trials = {result.n_trials}.")
    if result.passed:
        lines.append(f"PASSED: {result.variant} meets every threshold out of sample.")
    else:
        names = ", ".join(c.name for c in result.failed)
        lines.append(f"FAILED: {len(result.failed)} of {len(result.checks)} checks ({names}). This is the normal "
                     "outcome: most variants fail these thresholds, which are set to stop luck from being promoted.")
    return "\n".join(lines)


__all__ = ["GateCheck", "GateResult", "OOSNumbers", "evaluate_gate", "gate_variants", "oos_slice", "oos_span",
           "render_gate"]
