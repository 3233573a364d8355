# ruff: noqa: F811  (pytest fixtures imported from tests.llm_fixtures are re-bound as arguments)
"""The decision flow: heuristic baseline, the record as cache and replay source, budgets, anonymising."""

from __future__ import annotations

import json
import sqlite3

import pytest

from agent.config import LLMSettings, ModelPrice
from agent.llm.budget import DAY_MS, CostBudget, utc_day_start
from agent.llm.heuristic import HeuristicProvider, heuristic_signal, votes
from agent.llm.openai_provider import OpenAIProvider
from agent.llm.providers import ReplayProvider, make_provider
from agent.llm.records import CallRecords
from agent.llm.synthesis import ReplayMissError, decision_json
from agent.signal import SignalRules, SnapshotFacts, check_signal
from tests.llm_fixtures import btc, long_json, openai_settings, sample_snapshots, synthesiser  # noqa: F401
from tests.llm_servers import openai_chat, serve

NOW = 1_763_251_200_000 + 3_600_000  # 2025-11-16T01:00Z


@pytest.fixture
def openai_server():
    with serve("/v1/chat/completions") as server:
        yield server


def openai_(server):
    return OpenAIProvider("gpt-4o-mini", openai_settings(server.url))


# --- heuristic ---------------------------------------------------------------------------------


def test_heuristic_gives_a_valid_signal_on_every_bundled_symbol_and_says_no_llm_was_used(sample_snapshots, tmp_path):
    assert len(sample_snapshots) == 5
    for symbol, snap in sample_snapshots.items():
        decision = synthesiser(HeuristicProvider(), tmp_path / symbol.replace("/", "_")).decide(snap)
        s = decision.signal
        assert decision.hold_reason is None, decision.hold_reason  # the heuristic's own output passed validation
        assert s.reasoning.startswith("No LLM used") and not decision.llm_used
        assert check_signal(s, SnapshotFacts.of(snap), SignalRules()) == []
        assert decision.calls[0].cost_usd == 0 and decision.calls[0].tokens_in == 0


def test_heuristic_on_the_btc_sample_is_short_by_three_votes_with_the_montecarlo_short_bracket(btc):
    v = votes(btc)
    assert v == {"montecarlo": -1, "kalman": -1, "regime": 0, "forest": 0, "context": -1}
    s = heuristic_signal(btc)
    mc = btc.theories["montecarlo"]
    assert s["direction"] == "SHORT"
    assert (s["entry"], s["stop"], s["target"]) == (mc.entry, mc.short_stop, mc.short_target)
    assert s["confidence"] == round(mc.short_p_target_closed, 4)
    assert s["horizon_hours"] == mc.horizon * 1.0  # hourly candles


def test_heuristic_holds_without_the_montecarlo_theory(btc):
    snap = btc.model_copy(update={"theories": {k: v for k, v in btc.theories.items() if k != "montecarlo"}})
    s = heuristic_signal(snap)
    assert s["direction"] == "HOLD" and "montecarlo" in s["reasoning"] and s["entry"] is None


# --- cache and replay ---------------------------------------------------------------------------


def test_second_identical_run_is_answered_from_the_records_byte_identical_and_free(openai_server, btc, tmp_path):
    openai_server.push(openai_chat(long_json(btc)))
    first = synthesiser(openai_(openai_server), tmp_path).decide(btc)
    second = synthesiser(openai_(openai_server), tmp_path).decide(btc)
    assert len(openai_server.requests) == 1
    assert decision_json(first) == decision_json(second)
    assert first.calls[0].cost_usd > 0 and not first.calls[0].cache_hit
    assert second.calls[0].cost_usd == 0 and second.calls[0].cache_hit
    rows = CallRecords(tmp_path / "calls.sqlite").all()
    assert [r.answered_by for r in rows] == [None, rows[0].id]


def test_failed_calls_are_recorded_but_never_reused(openai_server, btc, tmp_path):
    openai_server.push(openai_chat(long_json(btc), delay_s=1.0))
    synth = synthesiser(OpenAIProvider("gpt-4o-mini", openai_settings(openai_server.url, timeout_s=0.2)), tmp_path)
    assert synth.decide(btc).signal.direction == "HOLD"
    openai_server.push(openai_chat(long_json(btc)))
    assert synthesiser(openai_(openai_server), tmp_path).decide(btc).signal.direction == "LONG"
    assert len(openai_server.requests) == 2


def test_replay_returns_the_recorded_signal_byte_identical_without_a_server(openai_server, btc, tmp_path):
    openai_server.push(openai_chat(long_json(btc)))
    live = synthesiser(openai_(openai_server), tmp_path).decide(btc)
    replayed = synthesiser(ReplayProvider(openai_(openai_server)), tmp_path, cache=False).decide(btc)
    again = synthesiser(ReplayProvider(openai_(openai_server)), tmp_path, cache=False).decide(btc)
    assert decision_json(live) == decision_json(replayed) == decision_json(again)
    assert len(openai_server.requests) == 1


def test_strict_replay_miss_is_an_error_and_lenient_replay_holds(btc, tmp_path):
    spec = make_provider("replay:openai:gpt-4o-mini", LLMSettings())
    with pytest.raises(ReplayMissError, match="no recorded call for openai:gpt-4o-mini"):
        synthesiser(spec, tmp_path).decide(btc)
    decision = synthesiser(spec, tmp_path, strict_replay=False).decide(btc)
    assert decision.signal.direction == "HOLD" and decision.calls[0].outcome == "replay_miss"


def test_replay_of_a_repaired_decision_replays_both_calls(openai_server, btc, tmp_path):
    openai_server.push(openai_chat("not json"), openai_chat(long_json(btc)))
    live = synthesiser(openai_(openai_server), tmp_path).decide(btc)
    replayed = synthesiser(ReplayProvider(openai_(openai_server)), tmp_path).decide(btc)
    assert [c.outcome for c in replayed.calls] == ["invalid", "ok"]
    assert decision_json(live) == decision_json(replayed)


def test_records_are_kept_in_wal_mode(btc, tmp_path):
    synthesiser(HeuristicProvider(), tmp_path).decide(btc)
    with sqlite3.connect(tmp_path / "calls.sqlite") as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        row = con.execute("SELECT provider, prompt_variant, template_version, outcome FROM llm_calls").fetchone()
    assert row == ("heuristic", "baseline", "1", "ok")


# --- budgets ------------------------------------------------------------------------------------


def test_daily_budget_spent_stops_further_calls_and_says_why(openai_server, btc, tmp_path):
    budget = CostBudget(daily_usd=5.0, per_cycle_usd=1.0, spent_today_usd=4.9999)
    decision = synthesiser(openai_(openai_server), tmp_path, budget=budget).decide(btc)
    assert decision.signal.direction == "HOLD" and "daily LLM budget" in decision.hold_reason
    assert openai_server.requests == [] and decision.calls[0].outcome == "budget"


def test_per_cycle_budget_stops_the_repair_call(openai_server, btc, tmp_path):
    openai_server.push(openai_chat("not json", prompt_tokens=1000, completion_tokens=100))
    # worst case of one call: ~1,400 tokens in x $0.15/M + 600 out x $0.60/M = ~$0.00057
    budget = CostBudget(daily_usd=5.0, per_cycle_usd=0.0007)
    decision = synthesiser(openai_(openai_server), tmp_path, budget=budget).decide(btc)
    assert [c.outcome for c in decision.calls] == ["invalid", "budget"]
    assert "per-cycle LLM budget" in decision.hold_reason and len(openai_server.requests) == 1


def test_a_model_without_a_price_is_never_called(openai_server, btc, tmp_path):
    decision = synthesiser(openai_(openai_server), tmp_path, price=None).decide(btc)
    assert decision.calls[0].outcome == "unpriced" and openai_server.requests == []


def test_spend_is_summed_per_utc_day_from_the_records(openai_server, btc, tmp_path):
    openai_server.push(openai_chat(long_json(btc), prompt_tokens=1000, completion_tokens=100))
    synthesiser(openai_(openai_server), tmp_path, now_ms=lambda: NOW).decide(btc)
    records = CallRecords(tmp_path / "calls.sqlite")
    assert records.spent_since(utc_day_start(NOW)) == pytest.approx(0.00021)
    assert records.spent_since(utc_day_start(NOW) + DAY_MS) == 0.0


def test_free_local_models_are_not_stopped_by_an_exhausted_budget(btc, tmp_path):
    budget = CostBudget(daily_usd=1.0, per_cycle_usd=1.0, spent_today_usd=2.0)
    decision = synthesiser(HeuristicProvider(), tmp_path, budget=budget, price=ModelPrice(
        input_per_million=0, output_per_million=0)).decide(btc)
    assert decision.hold_reason is None


# --- anonymised prompts ---------------------------------------------------------------------------


def test_anonymised_decision_is_made_on_rebased_prices_and_returned_in_real_ones(openai_server, btc, tmp_path):
    anon = btc.anonymised_copy()
    reply = json.loads(long_json(anon))
    openai_server.push(openai_chat(json.dumps(reply)))
    decision = synthesiser(openai_(openai_server), tmp_path, anonymise=True).decide(btc)
    user = openai_server.requests[0]["messages"][1]["content"]
    assert "BTC" not in user and "2025" not in user and "ASSET" in user
    s = decision.signal
    assert s.symbol == "BTC/USDT"
    assert s.entry == pytest.approx(btc.last_price) and s.stop == pytest.approx(btc.last_price * 0.99)


def test_openai_without_a_key_or_a_server_is_a_config_hold_not_a_crash(btc, tmp_path, monkeypatch):
    from agent.config import OpenAISettings

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    decision = synthesiser(OpenAIProvider("gpt-4o-mini", OpenAISettings()), tmp_path).decide(btc)
    assert decision.signal.direction == "HOLD" and decision.calls[0].outcome == "config"
    assert "credentials" in decision.hold_reason.lower() or "api_key" in decision.hold_reason


def test_heuristic_holds_when_the_votes_are_mixed(btc):
    kalman = btc.theories["kalman"].model_copy(update={"velocity_sigma": 1.5})
    snap = btc.model_copy(update={"theories": {**btc.theories, "kalman": kalman}})
    s = heuristic_signal(snap)
    assert votes(snap)["kalman"] == 1
    assert s["direction"] == "HOLD" and "net vote -1 is short of 2" in s["reasoning"]


def test_a_tradingview_entry_alert_is_one_vote_for_its_direction_and_an_exit_alert_none(btc):
    """BTC's sample is SHORT by three votes: a LONG entry alert cuts the net vote to -2 (still the
    minimum for a trade), a SHORT entry alert makes it -4, an exit alert changes nothing."""
    from agent.webhook.theory import tradingview_result

    def with_alert(action: str, direction: str):
        alert = tradingview_result(alert_id="a1", strategy="s", action=action, direction=direction,
                                   price=btc.last_price, alert_time_ms=btc.time + 1000, received_ms=btc.time + 2000,
                                   last_close=btc.last_price, last_close_time_ms=btc.time, interval_ms=3_600_000)
        return btc.model_copy(update={"theories": {**btc.theories, "tradingview": alert}})

    short, long_, exit_ = with_alert("entry", "SHORT"), with_alert("entry", "LONG"), with_alert("exit", "LONG")
    assert (votes(short)["tradingview"], votes(long_)["tradingview"], votes(exit_)["tradingview"]) == (-1, 1, 0)
    assert "net vote -4" in heuristic_signal(short)["reasoning"]
    assert "tradingview" in heuristic_signal(short)["theories"]
    assert "net vote -2" in heuristic_signal(long_)["reasoning"]
    assert "net vote -3" in heuristic_signal(exit_)["reasoning"]


def test_a_provider_that_changes_its_schema_copy_never_changes_the_next_decisions_schema_or_key(btc, tmp_path):
    """The synthesiser hands out one schema copy while it stays unchanged; a changed copy is replaced."""
    from agent.llm.synthesis import _pristine_schema

    seen: list[dict] = []

    class Meddler(HeuristicProvider):
        def complete(self, messages, schema, snapshot):
            seen.append(json.loads(json.dumps(schema)))
            if len(seen) == 2:
                schema["properties"].pop("reasoning")
                schema["extra"] = True
            return super().complete(messages, schema, snapshot)

    synth = synthesiser(Meddler(), tmp_path, records=None)
    keys = [synth.decide(btc).calls[0].request_key for _ in range(4)]
    pristine = _pristine_schema()[0]
    assert "reasoning" in pristine["properties"] and "extra" not in pristine
    assert seen == [pristine] * 4
    assert len(set(keys)) == 1


# --- work shared between decisions ---------------------------------------------------------------


def test_the_request_key_from_kept_parameters_json_is_the_hash_of_the_whole_request_s_canonical_json():
    """`keyed_request` writes the request's JSON out by hand: the bytes of `canonical_json` of the whole."""
    import hashlib

    from agent.llm.base import canonical_json, keyed_request, request_key

    cases = [
        ("ollama", "llama3.1:8b", "ab" * 32, {"temperature": 0.0, "num_ctx": 4096, "format": "json"}),
        ("strategy", "momentum-v1-c0.6", "h", {"rule_params": {"b": [1, 2.5], "a": None}, "z": "é\u2028\"q\""}),
        ("openai", "gpt-4o-mini", "", {}),
    ]
    for provider, model, prompt, params in cases:
        whole = {"provider": provider, "model": model, "prompt": prompt,
                 "parameters": {**params, "schema_sha256": "s" * 64}}
        expected = hashlib.sha256(canonical_json(whole).encode()).hexdigest()
        params_json = canonical_json({**params, "schema_sha256": "s" * 64})
        assert keyed_request(provider, model, prompt, params_json) == expected
        assert request_key(provider, model, prompt, params, {}, "s" * 64) == expected


def test_a_provider_whose_parameters_change_gets_a_new_request_key(btc, tmp_path):
    """The synthesiser keeps the parameters' JSON only while they stay equal to a copy of them."""

    class Tunable(HeuristicProvider):
        def __init__(self) -> None:
            self.params = {"rules": "1", "knob": {"x": 1}}

        def parameters(self):
            return self.params  # the same dict each time, changed in place below

    p = Tunable()
    synth = synthesiser(p, tmp_path, records=None)
    first = synth.decide(btc).calls[0].request_key
    assert synth.decide(btc).calls[0].request_key == first
    p.params["knob"]["x"] = 2
    second = synth.decide(btc).calls[0].request_key
    assert second != first
    p.params["knob"]["x"] = 1
    assert synth.decide(btc).calls[0].request_key == first


def test_variants_deciding_on_one_snapshot_share_its_rendered_prompt_and_only_equal_inputs_do(btc, tmp_path):
    """The rendered prompt is remembered by its inputs (the snapshot by identity): equal inputs, the same
    prompt object; any input that changes the text, a new one equal to a fresh render."""
    from agent.llm.prompt import PromptTemplate, render

    one = synthesiser(HeuristicProvider(), tmp_path, records=None)
    other = synthesiser(HeuristicProvider(), tmp_path, records=None, template=PromptTemplate.load("baseline"))
    a, b = one.decide(btc, outcomes=[1.0]), other.decide(btc, outcomes=[1.0])
    assert a.prompt is b.prompt
    assert a.prompt == render(PromptTemplate.load("baseline"), btc, SignalRules(), (), [1.0])
    # equal but rendered differently: 0.0 and -0.0 are '+0.0' and '-0.0'
    zero, negative_zero = one.decide(btc, outcomes=[0.0]).prompt, one.decide(btc, outcomes=[-0.0]).prompt
    assert "+0.0" in zero.user and "-0.0" in negative_zero.user and zero.sha256 != negative_zero.sha256
    # ... wherever they stand among the outcomes: each order is its own render
    mixes = ([1.0, 0.0, -0.0], [1.0, -0.0, 0.0], [1, -0.0, -0.0], [1.0, 0.0, 0.0])
    prompts = [one.decide(btc, outcomes=m).prompt for m in mixes]
    assert len({p.sha256 for p in prompts}) == len(mixes)
    template = PromptTemplate.load("baseline")
    assert all(p == render(template, btc, SignalRules(), (), m) for p, m in zip(prompts, mixes, strict=True))
    # an equal snapshot that is another object is rendered for itself (and to the same text)
    twin = btc.model_copy()
    assert one.decide(twin).prompt is not one.decide(btc).prompt
    assert one.decide(twin).prompt == one.decide(btc).prompt
    # other rules change the constraints' text
    rules = SignalRules(min_reward_risk=2.0)
    stricter = synthesiser(HeuristicProvider(), tmp_path, records=None, rules=rules)
    assert stricter.decide(btc).prompt.messages != one.decide(btc).prompt.messages
    assert stricter.decide(btc).prompt == render(PromptTemplate.load("baseline"), btc, rules)


def test_the_kept_encoders_write_what_json_dumps_writes(sample_snapshots):
    """`canonical_json` and `sorted_json` keep one encoder each: the text of `json.dumps` with their options."""
    from agent.llm.base import canonical_json, sorted_json

    values = [heuristic_signal(s) for s in sample_snapshots.values()]
    values += [{"b": [1, 2.5, None, True], "a": {"é": "\u2028\"", "n": float("nan")}}, "x", 3, None]
    for v in values:
        assert sorted_json(v) == json.dumps(v, sort_keys=True)
        assert canonical_json(v) == json.dumps(v, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
