"""The Signal schema and its checks: known answers for each rule, and properties of the parser."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from agent.signal import (
    Signal,
    SignalRejected,
    SignalRules,
    SnapshotFacts,
    check_signal,
    parse_signal,
    signal_json_schema,
)

FACTS = SnapshotFacts(symbol="BTC/USDT", last_price=100.0, theories=frozenset({"kalman", "montecarlo", "regime"}))
RULES = SignalRules()


def data(**changes):
    d = {
        "symbol": "BTC/USDT", "direction": "LONG", "confidence": 0.6, "entry": 100.0, "stop": 98.0,
        "target": 104.0, "horizon_hours": 24, "reasoning": "trend up", "theories": ["kalman"],
    }
    d.update(changes)
    return d


def problems(**changes):
    return check_signal(Signal.model_validate(data(**changes)), FACTS, RULES)


# --- the schema sent to providers ---------------------------------------------------------------


def test_schema_requires_every_field_and_forbids_extra_keys():
    schema = signal_json_schema()
    assert schema["required"] == list(Signal.model_fields) == [
        "symbol", "direction", "confidence", "entry", "stop", "target", "horizon_hours", "reasoning", "theories",
    ]
    assert schema["additionalProperties"] is False
    assert schema["properties"]["direction"]["enum"] == ["LONG", "SHORT", "HOLD"]
    assert {"type": "null"} in schema["properties"]["target"]["anyOf"]


def test_schema_is_what_the_openai_client_would_make_strict():
    from openai.lib._pydantic import to_strict_json_schema

    strict = to_strict_json_schema(Signal)
    ours = signal_json_schema()
    assert strict["required"] == ours["required"] and strict["additionalProperties"] is False
    assert strict["properties"].keys() == ours["properties"].keys()


# --- geometry, always ---------------------------------------------------------------------------


def test_long_needs_stop_below_entry_below_target():
    with pytest.raises(ValidationError, match="stop < entry < target"):
        Signal.model_validate(data(stop=101.0))
    with pytest.raises(ValidationError, match="stop < entry < target"):
        Signal.model_validate(data(target=99.0))


def test_short_needs_target_below_entry_below_stop():
    assert Signal.model_validate(data(direction="SHORT", stop=102.0, target=96.0)).reward_risk == pytest.approx(2.0)
    with pytest.raises(ValidationError, match="target < entry < stop"):
        Signal.model_validate(data(direction="SHORT"))


def test_hold_carries_no_levels_and_a_trade_needs_all_three():
    assert Signal.model_validate(data(direction="HOLD", entry=None, stop=None, target=None)).reward_risk is None
    with pytest.raises(ValidationError, match="HOLD carries no levels"):
        Signal.model_validate(data(direction="HOLD"))
    with pytest.raises(ValidationError, match="needs entry, stop and target"):
        Signal.model_validate(data(target=None))


def test_confidence_outside_unit_interval_strings_and_booleans_are_rejected():
    for bad in (1.01, -0.1, "0.6", True):
        with pytest.raises(ValidationError):
            Signal.model_validate(data(confidence=bad))


def test_reward_risk_of_a_long_is_reward_over_risk():
    assert Signal.model_validate(data()).reward_risk == pytest.approx(4.0 / 2.0)


def test_rebased_signal_scales_levels_and_renames():
    s = Signal.model_validate(data(symbol="ASSET")).rebased(950.0, "BTC/USDT")
    assert (s.symbol, s.entry, s.stop, s.target) == ("BTC/USDT", 95000.0, 93100.0, 98800.0)


# --- rules against the snapshot and settings ---------------------------------------------------


def test_an_acceptable_signal_breaks_no_rule():
    assert problems() == []


def test_entry_must_lie_within_the_band_of_the_last_price():
    assert problems(entry=101.0, stop=99.0, target=104.0) == []  # 1.00% off: on the edge
    assert "from the last close" in problems(entry=101.5, stop=99.5, target=104.5)[0]


def test_reward_risk_below_the_minimum_is_rejected_and_the_minimum_is_configurable():
    assert "reward:risk 1.25 is below the minimum 1.5" in problems(target=102.5)[0]
    loose = SignalRules(min_reward_risk=1.2)
    assert check_signal(Signal.model_validate(data(target=102.5)), FACTS, loose) == []


def test_horizon_out_of_bounds_is_rejected():
    assert "horizon_hours 500" in problems(horizon_hours=500)[0]
    assert "horizon_hours 0.5" in problems(horizon_hours=0.5)[0]


def test_cited_theories_must_have_answered_in_the_snapshot():
    assert "['forest'] are not in the snapshot" in problems(theories=["kalman", "forest"])[0]
    assert "cite at least one theory" in problems(theories=[])[0]


def test_symbol_must_be_the_snapshots():
    assert "symbol must be 'BTC/USDT'" in problems(symbol="ETH/USDT")[0]


def test_stop_too_far_from_entry_is_rejected():
    assert "stop is 20.0% from entry" in problems(stop=80.0, target=140.0)[0]


def test_duplicate_theories_are_cited_once():
    assert Signal.model_validate(data(theories=["kalman", "kalman"])).theories == ["kalman"]


def test_parse_accepts_a_fenced_json_object():
    text = "```json\n" + json.dumps(data()) + "\n```"
    assert parse_signal(text, FACTS, RULES).direction == "LONG"


def test_parse_lists_every_problem():
    with pytest.raises(SignalRejected) as info:
        parse_signal(json.dumps(data(direction="UP", confidence=3)), FACTS, RULES)
    assert len(info.value.reasons) == 2


def test_non_finite_numbers_are_rejected():
    for text in ('{"entry": NaN}', json.dumps(data(entry=float("inf")))):
        with pytest.raises(SignalRejected):
            parse_signal(text, FACTS, RULES)


# --- properties: nothing escapes, nothing invalid gets through --------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=6),
    max_leaves=12,
)

def _maybe(draw, value, spoil):
    """Usually `value`; sometimes something subtly or grossly wrong in its place."""
    return draw(st.one_of(*[st.just(value)] * 7, spoil))


@st.composite
def near_signals(draw):
    """Signals built to be valid, then spoiled field by field: the region where bugs would let one slip."""
    direction = draw(st.sampled_from(["LONG", "SHORT", "HOLD", "long", "BUY"]))
    entry = draw(st.floats(min_value=98.5, max_value=101.5))
    risk = draw(st.floats(min_value=1e-6, max_value=25))
    rr = draw(st.floats(min_value=0.5, max_value=4))
    sign = -1 if direction == "SHORT" else 1
    bad_price = st.one_of(st.none(), st.floats(min_value=-10, max_value=300), st.sampled_from([math.nan, math.inf]))
    levels = (entry, entry - sign * risk, entry + sign * rr * risk)
    if direction == "HOLD":
        levels = (None, None, None)
    entry, stop, target = (_maybe(draw, x, bad_price) for x in levels)
    return {
        "symbol": _maybe(draw, "BTC/USDT", st.sampled_from(["ETH/USDT", "", "ASSET", 5])),
        "direction": direction,
        "confidence": _maybe(draw, draw(st.floats(0, 1)), st.one_of(st.floats(-1, 2), st.booleans(), st.just("0.5"))),
        "entry": entry, "stop": stop, "target": target,
        "horizon_hours": _maybe(draw, draw(st.integers(1, 168)), st.one_of(st.floats(-5, 400), st.just(None))),
        "reasoning": _maybe(draw, "why", st.text(max_size=3)),
        "theories": _maybe(
            draw, ["kalman", "regime"], st.lists(st.sampled_from(["kalman", "montecarlo", "forest", "x"]), max_size=3)
        ),
    }


def assert_acceptable(s: Signal) -> None:
    """Every invariant an accepted signal must satisfy, restated independently of the code under test."""
    assert s.symbol == FACTS.symbol and 0 <= s.confidence <= 1
    assert RULES.min_horizon_hours <= s.horizon_hours <= RULES.max_horizon_hours
    assert set(s.theories) <= FACTS.theories
    if s.direction == "HOLD":
        assert s.entry is s.stop is s.target is None
        return
    assert all(math.isfinite(x) and x > 0 for x in (s.entry, s.stop, s.target)) and s.theories
    if s.direction == "LONG":
        assert s.stop < s.entry < s.target
    else:
        assert s.direction == "SHORT" and s.target < s.entry < s.stop
    assert abs(s.entry / FACTS.last_price - 1) <= RULES.entry_band + 1e-9
    assert abs(s.target - s.entry) / abs(s.entry - s.stop) >= RULES.min_reward_risk - 1e-9


def parse_or_none(text: str) -> Signal | None:
    try:
        return parse_signal(text, FACTS, RULES)
    except SignalRejected:
        return None


@settings(max_examples=2500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300))
def test_arbitrary_text_never_raises_anything_but_a_rejection(text):
    s = parse_or_none(text)
    if s is not None:
        assert_acceptable(s)


@settings(max_examples=400, deadline=None)
@given(json_values)
def test_arbitrary_json_values_never_raise_and_never_pass_unchecked(value):
    s = parse_or_none(json.dumps(value))
    if s is not None:
        assert_acceptable(s)


@settings(max_examples=500, deadline=None)
@given(near_signals())
def test_near_miss_signals_pass_only_when_every_rule_holds(candidate):
    s = parse_or_none(json.dumps(candidate))
    if s is not None:
        assert_acceptable(s)


def test_near_miss_strategy_reaches_acceptable_signals():
    """Guards the property above against being vacuous: some near misses are acceptable."""
    found = find(
        near_signals(),
        lambda c: parse_or_none(json.dumps(c)) is not None,
        settings=settings(max_examples=3000, database=None, deadline=None),
    )
    assert_acceptable(parse_or_none(json.dumps(found)))
