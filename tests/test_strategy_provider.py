"""The `strategy:<name>` provider: one seed rule alone, through the synthesiser, the gate and the paper broker.

Snapshots are real: the bundled Binance sample (and, for the FTX-week funding extreme, the shared
data), cut at hours where each rule was found to fire or not. Edge cases edit a real snapshot's
rule result (a target moved, a stop removed) rather than inventing one.
"""

from __future__ import annotations

import json
import math

import pytest

from agent.brokers.paper import PaperBroker
from agent.config import LLMSettings
from agent.cycle import CycleDeps, CycleSettings, FileMarketData, run_cycle
from agent.llm.base import request_key
from agent.llm.budget import CostBudget
from agent.llm.prompt import PromptTemplate
from agent.llm.providers import make_provider
from agent.llm.records import CallRecords
from agent.llm.strategy_provider import StrategyProvider, strategy_names, strategy_signal
from agent.llm.synthesis import Synthesiser
from agent.market.funding import SAMPLE_FUNDING_DIR, load_funding
from agent.market.loaders import bundled_sample
from agent.signal import SignalRules, SnapshotFacts, parse_signal, signal_json_schema
from agent.snapshot import build_snapshot
from agent.store import Store
from agent.store.tables import DecisionRow, GateDecisionRow, OrderRow, SignalRow
from risk import RiskConfig, RiskGate
from risk.config import RegimeFilterConfig, RegimePolicy, SizingConfig
from theories.montecarlo import closed_form_odds
from theories.regime import REGIMES

H = 3_600_000
RULES = SignalRules()
REGIME = {"fit_window": 300, "search_reps": 0}  # a quicker fit, as the cycle tests use
SEEDS = ("atr_breakout", "funding_extremes", "momentum", "rsi_bollinger", "vwap_reversion")
# (symbol, decision time, strategy, theory params, vote): hours on the bundled sample where the rule fires
FIRES = [
    ("ADA/USDT", 1763067600000, "rsi_bollinger", None, 1),
    ("ADA/USDT", 1763060400000, "momentum", None, -1),
    ("ETH/USDT", 1761062400000, "momentum", None, 1),
    ("BTC/USDT", 1762282800000, "atr_breakout", None, -1),
    ("ADA/USDT", 1760252400000, "funding_extremes", None, 1),
    # the seed's EMA(50) filter never agrees with its 50-bar VWAP; EMA(200) fires (module docstring there)
    ("SOL/USDT", 1758585600000, "vwap_reversion", {"trend_ema": 200}, 1),
]
QUIET = ("BTC/USDT", 1763251200000)  # the sample's last close: no rule fires there


@pytest.fixture(scope="module")
def sample():
    return bundled_sample(), load_funding(SAMPLE_FUNDING_DIR)


def snap(sample, symbol: str, at: int, strategy: str | tuple[str, ...], params=None, extra=("montecarlo", "regime")):
    universe, funding = sample
    names = (strategy,) if isinstance(strategy, str) else strategy
    theories = {**dict.fromkeys(names, params), **{name: REGIME if name == "regime" else None for name in extra}}
    return build_snapshot(symbol, universe, at, theories, funding=funding)


@pytest.fixture(scope="module")
def fired(sample):
    return {(s, t, name): snap(sample, s, t, name, params) for s, t, name, params, _ in FIRES}


def validated(signal: dict, snapshot, rules: SignalRules = RULES):
    return parse_signal(json.dumps(signal), SnapshotFacts.of(snapshot), rules)


def test_the_provider_offers_exactly_the_five_seed_strategies():
    assert strategy_names() == SEEDS


@pytest.mark.parametrize(("symbol", "at", "strategy", "params", "vote"), FIRES, ids=[f[2] for f in FIRES])
def test_a_firing_rule_gives_its_direction_and_levels_and_passes_the_synthesisers_checks(
        fired, symbol, at, strategy, params, vote):
    snapshot = fired[(symbol, at, strategy)]
    rule = snapshot.theories[strategy]
    assert rule.vote == vote
    signal = validated(strategy_signal(snapshot, strategy), snapshot)
    assert signal.direction == ("LONG" if vote > 0 else "SHORT")
    assert signal.entry == snapshot.last_price
    mc = snapshot.theories["montecarlo"]
    expected_stop = rule.stop if rule.stop is not None else (mc.long_stop if vote > 0 else mc.short_stop)
    assert signal.stop == pytest.approx(expected_stop, rel=1e-12)
    risk = abs(signal.entry - signal.stop)
    if rule.target is not None:
        assert signal.target == pytest.approx(rule.target, rel=1e-12)
    else:  # the proxy target: 2 R from the entry
        assert signal.target == pytest.approx(signal.entry + vote * 2.0 * risk, rel=1e-12)
    hours = rule.max_hold_bars * 1.0 if rule.max_hold_bars is not None else RULES.max_horizon_hours
    assert signal.horizon_hours == hours
    assert signal.theories[0] == strategy and set(signal.theories) <= {strategy, "montecarlo"}
    assert signal.reasoning.startswith(f"No LLM used: {strategy} rule alone")


@pytest.fixture(scope="module")
def quiet(sample):
    return snap(sample, *QUIET, SEEDS)


@pytest.mark.parametrize("strategy", SEEDS)
def test_a_rule_without_a_setup_holds_and_the_hold_is_valid(quiet, strategy):
    snapshot = quiet
    assert snapshot.theories[strategy].vote == 0
    signal = validated(strategy_signal(snapshot, strategy), snapshot)
    assert signal.direction == "HOLD" and signal.entry is None and signal.confidence == 0.0
    assert "no setup" in signal.reasoning


def test_a_rule_missing_from_the_snapshot_holds_and_says_why(fired):
    snapshot = fired[("ETH/USDT", 1761062400000, "momentum")]
    signal = strategy_signal(snapshot, "atr_breakout")
    assert signal["direction"] == "HOLD" and "not in the snapshot's theory set" in signal["reasoning"]


def test_confidence_is_the_closed_form_odds_of_the_rules_own_bracket_under_the_fitted_drift(fired):
    snapshot = fired[("ETH/USDT", 1761062400000, "momentum")]
    s = strategy_signal(snapshot, "momentum")
    mc = snapshot.theories["montecarlo"]
    odds = closed_form_odds(s["entry"], s["stop"], s["target"], 72, mc.drift_used, mc.volatility**2)
    assert s["confidence"] == round(odds.p_target, 4)
    # a 2 R bracket of a driftless walk reaches its target first a third of the time at most
    assert 0 < s["confidence"] < 0.5


def test_without_montecarlo_confidence_is_the_driftless_gambler_ruin_value_in_log_distances(sample):
    snapshot = snap(sample, "ADA/USDT", 1763067600000, "rsi_bollinger", extra=())
    s = validated(strategy_signal(snapshot, "rsi_bollinger"), snapshot)
    by_hand = math.log(s.entry / s.stop) / math.log(s.target / s.stop)  # d / (u + d), long
    assert s.confidence == pytest.approx(by_hand, abs=5e-5)
    assert s.theories == ["rsi_bollinger"]


def test_a_fixed_confidence_replaces_the_odds(fired):
    snapshot = fired[("ETH/USDT", 1761062400000, "momentum")]
    assert strategy_signal(snapshot, "momentum", confidence=0.55)["confidence"] == 0.55


def test_a_rule_without_a_stop_holds_when_there_is_no_atr_bracket_to_borrow_one_from(sample):
    snapshot = snap(sample, "ADA/USDT", 1760252400000, "funding_extremes", extra=())
    assert snapshot.theories["funding_extremes"].vote == 1
    s = strategy_signal(snapshot, "funding_extremes")
    assert s["direction"] == "HOLD" and "names no stop" in s["reasoning"]


def _edited(snapshot, strategy, **update):
    rule = snapshot.theories[strategy].model_copy(update=update)
    return snapshot.model_copy(update={"theories": {**snapshot.theories, strategy: rule}})


def test_a_rules_own_target_below_the_minimum_reward_risk_is_not_taken_nor_stretched(fired):
    snapshot = fired[("ADA/USDT", 1763067600000, "rsi_bollinger")]
    rule = snapshot.theories["rsi_bollinger"]
    near = snapshot.last_price + 1.2 * (snapshot.last_price - rule.stop)  # 1.2 R < 1.5
    s = strategy_signal(_edited(snapshot, "rsi_bollinger", target=near), "rsi_bollinger")
    assert s["direction"] == "HOLD" and "reward:risk 1.20, below the minimum 1.5" in s["reasoning"]
    loose = SignalRules(min_reward_risk=1.1)  # the same target under looser rules is a trade at that target
    ok = validated(strategy_signal(_edited(snapshot, "rsi_bollinger", target=near), "rsi_bollinger", loose),
                   snapshot, loose)
    assert ok.direction == "LONG" and ok.target == pytest.approx(near)


def test_a_stop_beyond_the_rules_maximum_distance_holds(fired):
    snapshot = fired[("ADA/USDT", 1763067600000, "rsi_bollinger")]
    far = snapshot.last_price * 0.8  # 20% away; the rules allow 15%
    s = strategy_signal(_edited(snapshot, "rsi_bollinger", stop=far), "rsi_bollinger")
    assert s["direction"] == "HOLD" and "at most 15%" in s["reasoning"]


def test_the_proxy_target_is_never_below_the_rules_minimum(fired):
    snapshot = fired[("ETH/USDT", 1761062400000, "momentum")]
    strict = SignalRules(min_reward_risk=2.5)
    s = validated(strategy_signal(snapshot, "momentum", strict), snapshot, strict)
    assert s.reward_risk == pytest.approx(2.5)


def test_an_anonymised_snapshot_gives_the_same_trade_once_rebased(fired):
    snapshot = fired[("BTC/USDT", 1762282800000, "atr_breakout")]
    real = strategy_signal(snapshot, "atr_breakout")
    anon = strategy_signal(snapshot.anonymised_copy(), "atr_breakout")
    factor = snapshot.last_price / 100.0
    assert anon["symbol"] == "ASSET" and anon["direction"] == real["direction"] == "SHORT"
    for level in ("entry", "stop", "target"):
        assert anon[level] * factor == pytest.approx(real[level], rel=1e-12)
    assert anon["confidence"] == real["confidence"]


def test_a_snapshot_read_back_from_json_gives_the_same_answer(fired):
    """Evals share snapshots through a cache as JSON: the rule's typed result must survive the trip."""
    snapshot = fired[("ADA/USDT", 1760252400000, "funding_extremes")]
    again = type(snapshot).model_validate_json(snapshot.model_dump_json())
    assert strategy_signal(again, "funding_extremes") == strategy_signal(snapshot, "funding_extremes")
    assert strategy_signal(again, "funding_extremes")["direction"] == "LONG"


def test_through_the_synthesiser_the_rules_answer_is_one_valid_call_with_no_repair(fired, tmp_path):
    snapshot = fired[("ADA/USDT", 1763060400000, "momentum")]
    records = CallRecords(tmp_path / "calls.sqlite")
    synth = Synthesiser(provider=make_provider("strategy:momentum", LLMSettings()),
                        template=PromptTemplate.load("baseline"), rules=RULES, price=None,
                        budget=CostBudget(daily_usd=0, per_cycle_usd=0), records=records, anonymise=True)
    d = synth.decide(snapshot)
    assert d.signal.direction == "SHORT" and d.signal.symbol == "ADA/USDT" and not d.llm_used
    assert d.signal.stop == pytest.approx(snapshot.theories["momentum"].stop, rel=1e-9)  # rebased back
    (call,) = d.calls
    assert (call.provider, call.model, call.outcome, call.cost_usd) == ("strategy", "momentum-v1", "ok", 0.0)
    again = synth.decide(snapshot)  # an identical request is answered from the records
    assert again.calls[0].cache_hit and again.signal == d.signal
    records.close()


def test_each_strategy_is_its_own_variant_and_its_parameters_are_in_the_call_key():
    providers = [make_provider(f"strategy:{n}", LLMSettings()) for n in SEEDS]
    assert len({f"{p.name}:{p.model}" for p in providers}) == len(SEEDS)
    assert all(p.name == "strategy" and not p.is_llm and not p.is_replay for p in providers)
    schema = signal_json_schema()
    default = StrategyProvider("vwap_reversion")
    tuned = make_provider("strategy:vwap_reversion", LLMSettings(),
                          theory_params={"vwap_reversion": {"trend_ema": 200}})
    assert tuned.parameters()["rule_params"]["trend_ema"] == 200
    keys = {request_key(p.name, p.model, "h", p.parameters(), schema) for p in (default, tuned)}
    assert len(keys) == 2
    stricter = StrategyProvider("vwap_reversion", rules=SignalRules(min_reward_risk=2.0))
    assert request_key(stricter.name, stricter.model, "h", stricter.parameters(), schema) not in keys


def test_make_provider_names_the_valid_strategies_for_an_unknown_one():
    with pytest.raises(ValueError, match="unknown strategy 'nope'") as err:
        make_provider("strategy:nope", LLMSettings())
    for name in SEEDS:
        assert f"strategy:{name}" in str(err.value)
    with pytest.raises(ValueError, match="name the strategy"):
        make_provider("strategy:", LLMSettings())
    with pytest.raises(ValueError, match=r"in \[0, 1\], got '1.5'"):
        make_provider("strategy:momentum:1.5", LLMSettings())
    fixed = make_provider("strategy:momentum:0.6", LLMSettings())
    assert (fixed.model, fixed.confidence) == ("momentum-v1-c0.6", 0.6)
    replay = make_provider("replay:strategy:momentum", LLMSettings())
    assert replay.is_replay and (replay.name, replay.model) == ("strategy", "momentum-v1")


# --- through the cycle --------------------------------------------------------------------------

RELAXED = RiskConfig(
    sizing=SizingConfig(fee_rate=0.0),
    regime=RegimeFilterConfig(
        policies={r: RegimePolicy(directions="both", multiplier=1.0, min_confidence=0.0) for r in REGIMES}),
)


def cycle_deps(tmp_path, spec: str, data: FileMarketData, symbols, theories, risk=RELAXED, name="s"):
    store, records = Store.at(tmp_path / f"{name}.sqlite"), CallRecords(tmp_path / f"{name}-calls.sqlite")
    synth = Synthesiser(provider=make_provider(spec, LLMSettings()), template=PromptTemplate.load("baseline"),
                        rules=RULES, price=None, budget=CostBudget(daily_usd=0, per_cycle_usd=0), records=records)
    deps = CycleDeps(store=store, broker=PaperBroker(), synthesiser=synth, gate=RiskGate(risk), data=data,
                     settings=CycleSettings(symbols=symbols, theories=theories), wall_ms=lambda: 1_800_000_000_000)
    return deps, store, records


def test_a_seed_rule_fires_in_a_cycle_replay_and_the_paper_broker_fills_its_bracket(tmp_path):
    """momentum goes LONG ETH at 2025-10-21 16:00 with P(target first) 0.34 > 1/3 on a 2 R bracket: approved."""
    at = 1761062400000
    theories = {"momentum": None, "montecarlo": None, "regime": REGIME}
    deps, store, records = cycle_deps(tmp_path, "strategy:momentum", FileMarketData(), ("ETH/USDT",), theories)
    first = run_cycle(at, deps)
    (r,) = first.results
    assert (r.outcome, r.direction, r.gate) == ("ordered", "LONG", "approved"), r.reason
    (d,) = store.rows(DecisionRow)
    assert d.variant == "strategy:momentum-v1:baseline"
    (sig,) = store.rows(SignalRow)
    assert not sig.llm_used and json.loads(sig.theories_json)[0] == "momentum"
    (order,) = store.rows(OrderRow)
    assert (order.stop, order.target) == (pytest.approx(r.stop), pytest.approx(r.target))
    intent = deps.broker.order(order.client_order_id).intent
    assert intent.time_stop_ms == at + 72 * H  # the rule's own time stop
    run_cycle(at + H, deps)  # the next cycle's sync fills the order on the bar after the decision
    (filled,) = [o for o in store.rows(OrderRow) if o.client_order_id == order.client_order_id]
    assert filled.status == "filled"
    assert deps.broker.positions()[0].opened_ms == at  # the bar opening at the decision time
    store.close()
    records.close()


def test_the_ftx_week_funding_extreme_is_a_long_signal_and_the_gate_sizes_it_by_its_stated_odds(tmp_path,
                                                                                             shared_data):
    """BTC funding -0.112% settled 2022-11-10 08:00: the rule goes long. With its bracket's odds as
    confidence Kelly is negative and the gate refuses it; with a fixed confidence the prior sizes it."""
    at = 1668070800000  # 2022-11-10 09:00 UTC
    data = FileMarketData(shared_data / "candles" / "binance-spot-1h",
                          funding=shared_data / "funding" / "binance-usdm")
    theories = {"funding_extremes": None, "montecarlo": None, "regime": REGIME}
    deps, store, records = cycle_deps(tmp_path, "strategy:funding_extremes", data, ("BTC/USDT",), theories)
    (r,) = run_cycle(at, deps).results
    assert r.direction == "LONG" and r.confidence < 1 / 3  # a 2 R bracket over 72 h
    assert r.outcome == "rejected"
    (g,) = store.rows(GateDecisionRow)
    assert g.status == "rejected" and "no_edge" in g.codes.split(",")  # Kelly f* = p - (1 - p) / 2 < 0
    store.close()
    records.close()
    deps, store, records = cycle_deps(tmp_path, "strategy:funding_extremes:0.5", data, ("BTC/USDT",), theories,
                                      name="fixed")
    (r,) = run_cycle(at, deps).results
    assert (r.outcome, r.direction, r.confidence) == ("ordered", "LONG", 0.5), r.reason
    (d,) = store.rows(DecisionRow)
    assert d.variant == "strategy:funding_extremes-v1-c0.5:baseline"
    store.close()
    records.close()
