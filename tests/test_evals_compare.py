"""Comparisons of eval variants on small hand-made ledgers whose answers are known.

The helpers at the top (`decision`, `trade`, `make_ledger`, `daily_curve`) build ledgers as
`evals.ledger.load_ledger` would return them; the gate tests reuse them.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evals.compare import (
    Scores,
    StatsOptions,
    VariantData,
    compare_pair,
    compare_run,
    comparison_pairs,
    decision_funnel,
    scores,
    signal_quality,
    variant_kind,
    verdict_sentence,
)
from evals.ledger import DecisionRecord, Ledger, ManualStats, RuleActivity, llm_usage
from evals.metrics import DAY_MS, EquityCurve, Trade, trade_stats
from evals.report import funnel_notes
from evals.stats import Interval
from theories.candles import Candles

H = 3_600_000
T0 = 1_700_000_000_000 - 1_700_000_000_000 % DAY_MS  # a UTC midnight
FAST = StatsOptions(n_boot=400, reshuffles=200)
NONE = Scores()  # no candles: nothing scored


def decision(run: str, symbol: str, ms: int, direction: str | None = "LONG", confidence: float | None = 0.6,
             outcome: str = "ordered", horizon: float = 4.0, last_price: float = 100.0, regime: str = "trend_up",
             calls: int = 1) -> DecisionRecord:
    cycle = f"{run}@{ms}"
    return DecisionRecord(
        decision_id=f"{cycle}/{symbol}", cycle_id=cycle, run=run, symbol=symbol, decision_ms=ms, outcome=outcome,
        reason="", regime=regime, variant=f"{run}:m:baseline", direction=direction, confidence=confidence,
        entry=None, stop=None, target=None, horizon_hours=horizon if direction else None, theories=(),
        last_price=last_price, llm_used=calls > 0, gate_status="approved" if outcome == "ordered" else None,
        gate_codes=(), calls=calls, repair_attempted=False, repaired=False, schema_valid=calls > 0,
        hold_on_failure=False, tokens_in=100 * calls, tokens_out=20 * calls, cost_usd=0.0, latency_ms=5.0 * calls,
        call_outcomes=("ok",) * calls, cache_hits=0, tokens_estimated_calls=0,
    )


def trade(d: DecisionRecord, pnl: float, hold_ms: int = 2 * H, side: str = "LONG", risk: float = 100.0) -> Trade:
    return Trade(
        trade_id=f"coid-{d.decision_id}", decision_id=d.decision_id, variant=d.variant, symbol=d.symbol, side=side,
        regime=d.regime, opened_ms=d.decision_ms, closed_ms=d.decision_ms + hold_ms, entry=100.0,
        exit=100.0 + pnl / 10, quantity=10.0, fees=0.1, pnl=pnl, risk_amount=risk, r_multiple=pnl / risk,
        exit_reason="target" if pnl > 0 else "stop", confidence=d.confidence,
    )


def curve_from_trades(trades: list[Trade], times: list[int], initial: float = 10_000.0) -> EquityCurve:
    """Equity at each time: the initial cash plus the P&L of the trades closed by then."""
    order = sorted(trades, key=lambda t: t.closed_ms)
    closed = np.array([t.closed_ms for t in order], dtype=np.int64)
    cum = np.concatenate([[0.0], np.cumsum([t.pnl for t in order])])
    return EquityCurve.of(times, initial + cum[np.searchsorted(closed, times, side="right")])


def make_ledger(run: str, decisions: list[DecisionRecord], trades: list[Trade], curve: EquityCurve | None,
                initial: float = 10_000.0) -> Ledger:
    return Ledger(
        run=run, variant=None, since_ms=None, until_ms=None, trades=tuple(sorted(trades, key=lambda t: t.closed_ms)),
        curve=curve, initial_balance=initial, decisions=tuple(decisions), gate={}, llm=llm_usage(decisions),
        manual=ManualStats(tickets=0, executed=0, skipped=0, pending=0, other=0, execution_rate=None,
                           mean_slippage=None, median_slippage=None, slippage_cost=0.0, fills=()),
    )


def variant(name: str, pnls: np.ndarray, kind: str = "llm", symbols=("BTC/USDT", "ETH/USDT"),
            step: int = 4 * H) -> VariantData:
    """A variant with one decision per symbol every `step`, each traded with the given P&L (rows: times)."""
    decisions, trades = [], []
    times = [T0 + i * step for i in range(pnls.shape[0])]
    for i, ms in enumerate(times):
        for j, s in enumerate(symbols):
            d = decision(name, s, ms)
            decisions.append(d)
            trades.append(trade(d, float(pnls[i, j])))
    curve_times = [T0 - step, *[ms + step for ms in times]]
    return VariantData(name=name, signature=f"{name}:m:baseline", kind=kind,
                       ledger=make_ledger(name, decisions, trades, curve_from_trades(trades, curve_times)))


def noisy_pnls(n: int = 120, seed: int = 1) -> np.ndarray:
    return np.round(np.random.default_rng(seed).normal(5.0, 40.0, size=(n, 2)), 2)


# --- which variants are compared -----------------------------------------------------------------


def test_variant_kind_tells_the_heuristic_strategies_and_llms_apart():
    assert variant_kind("heuristic") == "heuristic"
    assert variant_kind("replay:heuristic") == "heuristic"
    assert variant_kind("strategy:vwap_reversion") == "strategy"
    assert variant_kind("ollama:qwen3:8b") == "llm"
    assert variant_kind("openai:gpt-4o-mini") == "llm"
    assert variant_kind("replay:ollama:qwen3:8b") == "llm"
    assert variant_kind("something:else") == "other"


def test_every_variant_meets_the_heuristic_and_llm_variants_meet_each_other():
    p = noisy_pnls(10)
    vs = [variant("heuristic", p, "heuristic"), variant("strategy.x", p, "strategy"), variant("q", p, "llm"),
          variant("g", p, "llm")]
    pairs, notes = comparison_pairs(vs)
    assert pairs == [("heuristic", "strategy.x"), ("heuristic", "q"), ("heuristic", "g"), ("q", "g")]
    assert notes == []


def test_without_a_heuristic_variant_only_llm_pairs_are_compared_and_the_notes_say_so():
    p = noisy_pnls(10)
    pairs, notes = comparison_pairs([variant("s", p, "strategy"), variant("q", p), variant("g", p)])
    assert pairs == [("q", "g")]
    assert "no heuristic variant" in notes[0]


# --- the paired tests ----------------------------------------------------------------------------


def test_a_variant_identical_to_the_baseline_shows_no_significant_difference():
    p = noisy_pnls()
    a, b = variant("heuristic", p, "heuristic"), variant("copy", p)
    c = compare_pair(a, b, NONE, NONE, FAST)
    assert c.aligned_decisions == 240 and c.aligned_times == 120 and c.only_a == c.only_b == 0
    assert not c.significant
    assert c.verdict.startswith("no significant difference between copy and heuristic")
    for iv in (c.pnl_per_time, c.daily_return):
        assert iv is not None and iv.low <= 0 <= iv.high and iv.estimate == pytest.approx(0, abs=1e-12)
    assert c.dm_r.mean_difference == 0 and c.dm_r.statistic is None
    assert any(n.startswith("Diebold-Mariano on R: the loss difference is constant") for n in c.notes)


def test_a_constant_edge_per_decision_is_significant_with_the_right_sign_and_size():
    p = noisy_pnls()
    a, b = variant("heuristic", p, "heuristic"), variant("better", p + 10.0)
    c = compare_pair(a, b, NONE, NONE, FAST)
    assert c.significant
    # two symbols per decision time, each +10: the mean per decision time differs by exactly 20
    assert c.pnl_per_time.estimate == pytest.approx(20.0)
    assert c.pnl_per_time.low > 0
    assert c.verdict.startswith("better beats heuristic by 20.00 quote per decision time, 95% CI [")
    assert c.pnl_per_time_pct[0] == pytest.approx(100 * 20 / 10_000)
    # the same pair the other way round: A beats B, with the same size
    back = compare_pair(b, a, NONE, NONE, FAST)
    assert back.significant and back.verdict.startswith("better beats heuristic by 20.00")
    assert back.pnl_per_time.estimate == pytest.approx(-20.0)


def test_diebold_mariano_finds_a_noisy_but_real_edge_in_r_multiples():
    p = noisy_pnls(n=200, seed=5)
    jitter = np.round(np.random.default_rng(6).normal(0, 5, size=p.shape), 2)
    c = compare_pair(variant("heuristic", p, "heuristic"), variant("b", p + 10.0 + jitter), NONE, NONE, FAST)
    assert c.dm_r.statistic > 0  # positive: B's losses (-R) are the smaller
    assert c.dm_r.p_value < 1e-6
    assert c.dm_r.mean_difference == pytest.approx(-np.mean((p + 10 + jitter - p).sum(axis=1)) / -100)
    assert c.significant and c.verdict.startswith("b beats heuristic")


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(min_value=0, max_value=10_000), st.floats(min_value=-50, max_value=50))
def test_swapping_a_and_b_negates_the_difference_and_keeps_the_verdict(seed, edge):
    p = noisy_pnls(n=30, seed=seed)
    a, b = variant("heuristic", p, "heuristic"), variant("b", np.round(p + edge, 2))
    ab, ba = compare_pair(a, b, NONE, NONE, FAST), compare_pair(b, a, NONE, NONE, FAST)
    assert ab.pnl_per_time.estimate == pytest.approx(-ba.pnl_per_time.estimate, abs=1e-9)
    assert ab.significant == ba.significant
    assert ab.verdict.split(" (")[0].replace("between b and heuristic", "") == \
        ba.verdict.split(" (")[0].replace("between heuristic and b", "")
    same = compare_pair(a, a.model_copy(update={"name": "copy"}), NONE, NONE, FAST)
    assert not same.significant and same.pnl_per_time.low <= 0 <= same.pnl_per_time.high


def test_a_small_edge_drowned_in_noise_is_not_called_significant():
    p = noisy_pnls(n=40, seed=3)
    noise = np.round(np.random.default_rng(4).normal(0, 60, size=p.shape), 2)
    c = compare_pair(variant("heuristic", p, "heuristic"), variant("noisy", p + noise + 0.5), NONE, NONE, FAST)
    assert not c.significant
    assert c.pnl_per_time.low < 0 < c.pnl_per_time.high


def test_only_the_decisions_both_variants_made_are_compared_and_counted():
    p = noisy_pnls(30)
    a = variant("heuristic", p, "heuristic")
    b = variant("short", p[:20])  # B stopped after 20 decision times
    c = compare_pair(a, b, NONE, NONE, FAST)
    assert (c.aligned_decisions, c.aligned_times, c.only_a, c.only_b) == (40, 20, 20, 0)


def test_skipped_decisions_are_not_aligned():
    p = noisy_pnls(12)
    a = variant("heuristic", p, "heuristic")
    b = variant("b", p)
    led = b.ledger
    first = led.decisions[0]
    skipped = first.model_copy(update={"outcome": "skipped", "direction": None, "confidence": None})
    b2 = b.model_copy(update={"ledger": led.model_copy(update={"decisions": (skipped, *led.decisions[1:])})})
    c = compare_pair(a, b2, NONE, NONE, FAST)
    assert (c.aligned_decisions, c.only_a) == (23, 1)


def test_mcnemar_and_brier_dm_use_the_decisions_where_both_stated_a_direction():
    p = noisy_pnls(30)
    a, b = variant("heuristic", p, "heuristic"), variant("b", p)
    # A is right on every decision, B on none: 60 discordant pairs, all one way
    conf = np.random.default_rng(2).uniform(0.5, 0.9, size=len(a.ledger.decisions))
    a = a.model_copy(update={"ledger": a.ledger.model_copy(update={"decisions": tuple(
        d.model_copy(update={"confidence": float(c)}) for d, c in zip(a.ledger.decisions, conf, strict=True))})})
    hits_a = {d.decision_id: True for d in a.ledger.decisions}
    hits_b = {d.decision_id: False for d in b.ledger.decisions}
    c = compare_pair(a, b, Scores(hits_a, hits_a), Scores(hits_b, hits_b), FAST)
    assert c.mcnemar_n == 60
    assert c.mcnemar.p_value < 1e-6
    assert c.dm_brier is not None and c.dm_brier.p_value < 1e-6
    assert c.dm_brier.statistic < 0  # B's Brier loss is the larger one: A is better


def test_when_neither_variant_traded_the_verdict_says_so():
    def untraded(name: str, kind: str) -> VariantData:
        v = variant(name, np.zeros((12, 2)), kind)
        return v.model_copy(update={"ledger": v.ledger.model_copy(update={"trades": ()})})

    c = compare_pair(untraded("heuristic", "heuristic"), untraded("b", "llm"), NONE, NONE, FAST)
    assert not c.significant
    assert c.verdict.endswith("; neither closed a trade on the 24 aligned decisions")


def test_a_paired_test_without_a_number_says_why():
    p = noisy_pnls(12)
    a, b = variant("heuristic", p, "heuristic"), variant("b", p)
    c = compare_pair(a, b, NONE, NONE, FAST)  # no candles: nothing scored, so neither McNemar nor Brier DM
    assert c.mcnemar is None and c.dm_brier is None
    assert "McNemar: 0 aligned decisions where both stated a direction with a known outcome (at least 5 are " \
           "needed)" in c.notes
    assert any(n.startswith("Diebold-Mariano on Brier: 0 aligned decisions") for n in c.notes)


def test_too_few_aligned_decisions_are_not_tested():
    p = noisy_pnls(9)
    c = compare_pair(variant("heuristic", p, "heuristic"), variant("b", p + 5), NONE, NONE, FAST)
    assert c.pnl_per_time is None and c.daily_return is None and not c.significant
    assert "not compared" in c.verdict and any("at least 10" in n for n in c.notes)


def interval(estimate: float, low: float, high: float, level: float = 0.95) -> Interval:
    return Interval(estimate=estimate, low=low, high=high, level=level, n=100, method="test", mean_block=1.0,
                    n_boot=100, seed=0)


def test_verdict_sentences_read_the_interval():
    iv = interval(1.5, 0.5, 2.5)
    assert verdict_sentence("A", "B", iv, "quote")[0] == "B beats A by 1.50 quote, 95% CI [0.50, 2.50]"
    neg = interval(-1.5, -2.5, -0.5)
    assert verdict_sentence("A", "B", neg, "quote")[0] == "A beats B by 1.50 quote, 95% CI [0.50, 2.50]"
    zero = interval(0.2, -0.1, 0.5, level=0.9)
    text, sig = verdict_sentence("A", "B", zero, "quote")
    assert not sig and text.startswith("no significant difference between B and A") and "90% CI" in text


# --- one variant ---------------------------------------------------------------------------------


def candles_from_closes(symbol: str, closes: list[float], start: int = T0) -> Candles:
    n = len(closes)
    c = np.asarray(closes, dtype=float)
    return Candles(np.arange(n) * H + start, c, c + 0.5, c - 0.5, c, np.ones(n), interval_ms=H, symbol=symbol)


def test_directional_accuracy_and_the_brier_score_of_the_bracket_on_known_outcomes():
    # closes rise 100 -> 110 over candles 0..10, then fall to 100 (candle k opens at T0 + k h; high/low = close +- 0.5)
    closes = [100 + k for k in range(11)] + [110 - k for k in range(1, 11)]
    candles = {"BTC/USDT": candles_from_closes("BTC/USDT", closes)}

    def d(ms: int, direction: str, conf: float, stop: float | None, target: float | None, **kw) -> DecisionRecord:
        return decision("v", "BTC/USDT", ms, direction, conf, **kw).model_copy(update={"stop": stop, "target": target})

    ds = [
        # direction: 102 > 100 after 2 h, a hit; bracket: candle 1 reaches 101.5 >= 101.2 first: target first
        d(T0 + 1 * H, "LONG", 0.8, 99.0, 101.2, last_price=100.0, horizon=2),
        # direction: 107 < 108 after 4 h, a miss; bracket: candle 12's low 107.5 reaches the stop 107.8: a miss
        d(T0 + 9 * H, "LONG", 0.6, 107.8, 111.0, last_price=108.0, horizon=4),
        # direction: 107 < 109, a hit; bracket: candles 12-13 reach neither 110 nor 106 by the horizon: a miss
        d(T0 + 12 * H, "SHORT", 0.7, 110.0, 106.0, last_price=109.0, horizon=2),
        d(T0 + 13 * H, "HOLD", 0.5, None, None, outcome="hold"),
        # beyond the data, and neither level reached in the one candle there is: unknown on both counts
        d(T0 + 20 * H, "LONG", 0.9, 95.0, 105.0, horizon=10),
    ]
    q = signal_quality(ds, scores(ds, candles))
    assert (q.decisions, q.directional, q.holds, q.scored, q.hits) == (5, 4, 1, 3, 2)
    assert q.accuracy == pytest.approx(2 / 3)
    assert (q.bracket_scored, q.targets_first) == (3, 1)
    assert q.calibration.brier == pytest.approx(((0.8 - 1) ** 2 + 0.6 ** 2 + 0.7 ** 2) / 3)


def test_a_run_summary_has_every_metric_per_variant_symbol_and_regime():
    p = noisy_pnls(60)
    vs = [variant("heuristic", p, "heuristic"), variant("q", p + 3.0), variant("g", p - 3.0)]
    run = compare_run(vs, {}, {"buy_and_hold.BTC": EquityCurve.of([T0, T0 + DAY_MS, T0 + 2 * DAY_MS],
                                                                  [10_000, 10_100, 9_900])}, FAST)
    assert run.n_trials == 3 and len(run.trial_sharpes) == 3
    assert [c.b for c in run.comparisons] == ["q", "g", "g"]
    s = {v.name: v for v in run.variants}["q"]
    assert s.performance.trade == trade_stats(list(vs[1].ledger.trades))
    assert set(s.by_symbol) == {"BTC/USDT", "ETH/USDT"} and set(s.by_regime) == {"trend_up"}
    assert s.by_symbol["BTC/USDT"].trades.trades == 60
    assert s.sharpe.psr is not None and s.sharpe.dsr is not None
    assert s.reshuffle is not None and s.reshuffle.trades == 120
    assert s.periods and s.period_freq == "M"
    assert s.llm.calls == 120 and s.llm.tokens_per_decision == pytest.approx(120.0)
    assert run.baselines[0].name == "buy_and_hold.BTC" and run.baselines[0].curve.total_return == pytest.approx(-0.01)
    assert any("3 comparisons" in n for n in run.notes)


def test_orders_whose_trade_had_not_closed_are_counted_as_open_at_the_end():
    p = noisy_pnls(10)
    v = variant("heuristic", p, "heuristic")
    led = v.ledger
    v2 = v.model_copy(update={"ledger": led.model_copy(update={"trades": led.trades[:-3]})})
    run = compare_run([v2], {}, None, FAST)
    assert run.variants[0].open_at_end == 3
    assert run.variants[0].sharpe.dsr is None and "1 of the 1 variants" in run.variants[0].sharpe.note


def test_variant_names_must_be_unique():
    p = noisy_pnls(10)
    with pytest.raises(ValueError, match="unique"):
        compare_run([variant("a", p), variant("a", p)], {}, None, FAST)


# --- where the decisions went ---------------------------------------------------------------------


def _activity(rule: str, proposals: int, rejected: int, codes: dict[str, int]) -> RuleActivity:
    return RuleActivity(rule=rule, proposals=proposals, rejected=rejected, shrank=0,
                        rejected_rate=rejected / proposals, shrank_rate=0.0, codes=codes)


def test_the_funnel_counts_each_decision_by_outcome_and_names_the_refusing_rules():
    outcomes = ["hold", "hold", "hold", "skipped", "error", "rejected", "rejected", "rejected", "ordered", "ordered",
                "order_failed"]
    ds = [decision("v", "BTC/USDT", T0 + i * H, direction=None if o in ("skipped", "error") else
                   "HOLD" if o == "hold" else "LONG", outcome=o) for i, o in enumerate(outcomes)]
    closed = trade(ds[8], 12.0)  # one of the two orders closed; the other is still open at the end
    gate = {"regime_filter": _activity("regime_filter", 6, 3, {"confidence_too_low": 3, "direction_not_allowed": 1}),
            "exposure": _activity("exposure", 6, 1, {"max_open_positions": 1}),
            "sizing": _activity("sizing", 6, 0, {"risk_per_trade_cap": 2})}  # shrank only: not a refusal
    led = make_ledger("v", ds, [closed], None).model_copy(update={"gate": gate})
    f = decision_funnel(led)
    assert (f.decisions, f.skipped, f.errors, f.holds, f.proposals) == (11, 1, 1, 3, 6)
    assert (f.rejected, f.ordered, f.order_failed, f.closed_trades) == (3, 2, 1, 1)
    assert f.skipped + f.errors + f.holds + f.proposals == f.decisions
    assert f.refused_confidence == (0.6, 0.6)  # the three refused proposals all stated 0.6
    assert set(f.refusals) == {"regime_filter", "exposure"}
    assert f.refused_by() == ("regime_filter 3: confidence_too_low 3, direction_not_allowed 1; "
                              "exposure 1: max_open_positions 1")
    s = compare_run([VariantData(name="v", signature="v:m:baseline", kind="llm", ledger=led)], {}, None,
                    FAST).variants[0]
    assert s.funnel == f and s.open_at_end == 1
    assert funnel_notes([s]) == []  # it traded: nothing to explain


def test_a_variant_whose_every_proposal_the_gate_refused_is_said_to_have_been_stopped_by_the_risk_rules():
    ds = [decision("h", "ETH/USDT", T0 + i * H, direction="HOLD" if i % 3 else "SHORT", confidence=0.3 + i / 60,
                   outcome="hold" if i % 3 else "rejected") for i in range(9)]  # refused at 0.30, 0.35, 0.40
    gate = {"regime_filter": _activity("regime_filter", 3, 3, {"confidence_too_low": 3})}
    led = make_ledger("h", ds, [], None).model_copy(update={"gate": gate})
    quiet = make_ledger("q", [decision("q", "ETH/USDT", T0 + i * H, direction="HOLD", outcome="hold")
                              for i in range(4)] + [decision("q", "ETH/USDT", T0 + 9 * H, direction=None,
                                                             outcome="skipped")], [], None)
    run = compare_run([VariantData(name="h", signature="h:m:baseline", kind="heuristic", ledger=led),
                       VariantData(name="q", signature="q:m:baseline", kind="llm", ledger=quiet)], {}, None, FAST)
    assert funnel_notes(run.variants) == [
        "h made no trade: of its 3 trade proposals, the risk gate refused all 3 (regime_filter 3: "
        "confidence_too_low 3; stated confidence median 0.35, at most 0.40). Its trade statistics are empty because "
        "nothing was let through, not for want of signals.",
        "q proposed no trade in 5 decisions (4 HOLD, 1 skipped, 0 failed).",
    ]
    one = make_ledger("o", [decision("o", "ETH/USDT", T0, direction="LONG", outcome="order_failed")], [], None)
    run = compare_run([VariantData(name="o", signature="o:m:baseline", kind="llm", ledger=one)], {}, None, FAST)
    assert funnel_notes(run.variants) == [
        "o made no trade: of its one trade proposal, the broker refused it. Its trade statistics are empty because "
        "nothing was let through, not for want of signals."]


def test_an_outcome_the_funnel_does_not_know_is_refused_by_name():
    led = make_ledger("v", [decision("v", "BTC/USDT", T0, outcome="teleported")], [], None)
    with pytest.raises(ValueError, match="teleported"):
        decision_funnel(led)
