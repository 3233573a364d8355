"""The promotion gate on hand-built ledgers: a pass, each threshold failing alone, out-of-sample slicing."""

from __future__ import annotations

import json

import numpy as np
import pytest

from agent.config import PromotionThresholds
from evals.compare import VariantData
from evals.gate import GateResult, evaluate_gate, gate_variants, oos_span, render_gate
from evals.metrics import DAY_MS, EquityCurve
from tests.test_evals_compare import T0, curve_from_trades, decision, make_ledger, trade

DAYS = 800  # over two 365-day years
END = T0 + DAYS * DAY_MS


def daily_variant(name: str, pnls: np.ndarray) -> VariantData:
    """One BTC trade a day (opened at midnight, closed at noon) with the given P&L; equity marked daily."""
    decisions, trades = [], []
    for i, pnl in enumerate(pnls):
        d = decision(name, "BTC/USDT", T0 + i * DAY_MS)
        decisions.append(d)
        trades.append(trade(d, float(pnl), hold_ms=DAY_MS // 2))
    times = [T0 + i * DAY_MS for i in range(len(pnls) + 1)]
    return VariantData(name=name, signature=f"ollama:m:{name}", kind="llm",
                       ledger=make_ledger(name, decisions, trades, curve_from_trades(trades, times)))


def good_pnls(n: int = DAYS, seed: int = 7) -> np.ndarray:
    """60% wins of +30, 40% losses of -20: profit factor 2.25, a steady climb on 10,000."""
    wins = np.random.default_rng(seed).random(n) < 0.6
    return np.where(wins, 30.0, -20.0)


def weak_pnls(n: int = DAYS, seed: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 25.0, n)


@pytest.fixture(scope="module")
def run_variants() -> list[VariantData]:
    return [daily_variant("good", good_pnls()), daily_variant("weak", weak_pnls()),
            daily_variant("weaker", weak_pnls(seed=9) - 2.0)]


DEFAULTS = PromotionThresholds()


def gate(variants, thresholds=DEFAULTS, in_sample_until=None) -> dict[str, GateResult]:
    return gate_variants(variants, thresholds, run_id="r1", period_start_ms=T0, period_end_ms=END,
                         in_sample_until_ms=in_sample_until)


def test_a_variant_meeting_every_threshold_out_of_sample_passes(run_variants):
    result = gate(run_variants)["good"]
    assert result.passed, render_gate(result)
    assert [c.name for c in result.checks] == ["trades", "years", "win_rate", "profit_factor", "max_drawdown",
                                               "sharpe", "deflated_sharpe"]
    assert all(c.passed for c in result.checks)
    assert result.oos.trades == DAYS and result.n_trials == 3
    assert result.oos.win_rate == pytest.approx(float(np.mean(good_pnls() > 0)))
    assert result.oos_basis.startswith("the whole run")


def test_weak_variants_fail_and_the_answer_says_that_is_normal(run_variants):
    result = gate(run_variants)["weak"]
    assert not result.passed
    text = render_gate(result)
    assert "FAILED" in text and "normal outcome" in text
    for c in result.checks:
        assert c.name in text


@pytest.mark.parametrize(("override", "failing"), [
    ({"min_trades": 1000}, "trades"),
    ({"min_years": 3.0}, "years"),
    ({"min_win_rate": 0.9}, "win_rate"),
    ({"min_profit_factor": 3.0}, "profit_factor"),
    ({"max_drawdown": 0.001}, "max_drawdown"),
    ({"min_sharpe": 50.0}, "sharpe"),
])
def test_each_threshold_fails_the_gate_alone(run_variants, override, failing):
    result = gate(run_variants, PromotionThresholds(**override))["good"]
    assert not result.passed
    assert [c.name for c in result.failed] == [failing]


def test_a_sharpe_that_many_trials_could_reach_by_luck_fails_only_the_deflated_sharpe(run_variants):
    good = run_variants[0]
    # trials whose Sharpe ratios spread widely: the best of them by luck would beat this one
    result = evaluate_gate("good", good.signature, "r1", good.ledger, PromotionThresholds(), period_start_ms=T0,
                           period_end_ms=END, in_sample_until_ms=None, n_trials=1000, trial_sharpes=[-2.0, 0.0, 2.0])
    assert [c.name for c in result.failed] == ["deflated_sharpe"]


def test_a_drawdown_in_the_data_fails_the_drawdown_check():
    pnls = good_pnls()
    pnls[300:330] = -80.0  # a month of losses: 2,400 down from about 12,000
    result = gate([daily_variant("dd", pnls), daily_variant("weak", weak_pnls())])["dd"]
    dd = next(c for c in result.checks if c.name == "max_drawdown")
    assert not dd.passed and dd.value > 0.15 and dd.op == "<" and dd.threshold == 0.15


def test_only_the_out_of_sample_part_is_judged(run_variants):
    # brilliant in sample, losing out of sample: the gate must see only the losses
    split = T0 + 400 * DAY_MS
    pnls = good_pnls()
    pnls[400:] = -np.abs(pnls[400:])
    v = daily_variant("overfit", pnls)
    whole = gate([v, *run_variants[1:]])["overfit"]
    oos = gate([v, *run_variants[1:]], in_sample_until=split)["overfit"]
    assert oos.oos_start_ms == split and oos.oos_end_ms == END and "in_sample_until" in oos.oos_basis
    assert oos.oos.trades == DAYS - 400  # trades opened at or after the split
    assert oos.oos.win_rate == 0.0
    assert oos.oos.profit_factor == 0.0
    assert not oos.passed and whole.oos.trades == DAYS
    years = next(c for c in oos.checks if c.name == "years")
    assert years.value == pytest.approx(400 / 365) and not years.passed


def test_a_trade_opened_in_sample_and_closed_out_of_sample_is_left_out():
    v = daily_variant("v", good_pnls(10))
    split = T0 + 3 * DAY_MS + DAY_MS // 4  # during the fourth trade (opened at day 3, closed at noon)
    result = evaluate_gate("v", v.signature, "r", v.ledger, PromotionThresholds(), period_start_ms=T0,
                           period_end_ms=T0 + 10 * DAY_MS, in_sample_until_ms=split, n_trials=1, trial_sharpes=[])
    assert result.oos.trades == 6


def test_out_of_sample_span_rules():
    assert oos_span(0, 100, None) == (0, 100, "the whole run: it declares no in-sample part (in_sample_until)")
    assert oos_span(0, 100, 40)[:2] == (40, 100)
    with pytest.raises(ValueError, match="no out-of-sample part"):
        oos_span(0, 100, 100)


def test_numbers_that_cannot_be_computed_fail_their_checks():
    v = VariantData(name="idle", signature="heuristic:h:baseline", kind="heuristic",
                    ledger=make_ledger("idle", [], [], EquityCurve.of([T0, END], [10_000.0, 10_000.0])))
    result = evaluate_gate("idle", v.signature, "r", v.ledger, PromotionThresholds(), period_start_ms=T0,
                           period_end_ms=END, in_sample_until_ms=None, n_trials=1, trial_sharpes=[])
    by = {c.name: c for c in result.checks}
    assert by["win_rate"].value is None and not by["win_rate"].passed
    assert by["profit_factor"].note == "no trades"
    assert by["sharpe"].value is None and not by["sharpe"].passed
    assert not by["deflated_sharpe"].passed and "at least 3" in by["deflated_sharpe"].note


def test_the_gate_file_carries_what_paper_trading_is_compared_with(run_variants):
    result = gate(run_variants)["good"]
    data = json.loads(result.model_dump_json())
    assert {"variant", "signature", "run_id", "passed", "oos_start_ms", "oos_end_ms", "checks", "oos"} <= set(data)
    assert set(data["oos"]) == {"trades", "win_rate", "avg_r", "profit_factor", "sharpe", "max_drawdown"}
    assert set(data["checks"][0]) >= {"name", "value", "threshold", "op", "passed"}
    assert GateResult.model_validate_json(result.model_dump_json()) == result
