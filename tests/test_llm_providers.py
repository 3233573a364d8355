# ruff: noqa: F811  (pytest fixtures imported from tests.llm_fixtures are re-bound as arguments)
"""The real `ollama` and `openai` clients against loopback servers speaking their wire formats.

Every scenario of issue 5 ends in a valid Signal or a recorded HOLD, never an exception.
"""

from __future__ import annotations

import json

import pytest

from agent.llm.ollama_provider import OllamaProvider
from agent.llm.openai_provider import OpenAIProvider
from agent.signal import Signal
from tests.llm_fixtures import (  # noqa: F401  (fixtures)
    btc,
    long_json,
    long_signal,
    ollama_settings,
    openai_settings,
    sample_snapshots,
    synthesiser,
)
from tests.llm_servers import ollama_chat, ollama_error, openai_chat, openai_error, serve

BROKEN = '{"symbol": "BTC/USDT", "direction": "LONG", "confidence": 0.6, "entry": 9'


@pytest.fixture
def ollama_server():
    with serve("/api/chat") as server:
        yield server


@pytest.fixture
def openai_server():
    with serve("/v1/chat/completions") as server:
        yield server


def ollama(server, **kw):
    return OllamaProvider("qwen3:8b", ollama_settings(server.url, **kw))


def openai_(server, **kw):
    return OpenAIProvider("gpt-4o-mini", openai_settings(server.url, **kw))


def stored(synth):
    return synth.records.all()


# --- a valid signal, and what went over the wire ------------------------------------------------


def test_ollama_valid_reply_becomes_the_signal_and_the_request_carries_schema_options_and_no_thinking(
    ollama_server, btc, tmp_path
):
    ollama_server.push(ollama_chat(long_json(btc), prompt_eval_count=812, eval_count=96))
    synth = synthesiser(ollama(ollama_server), tmp_path)
    decision = synth.decide(btc)
    assert decision.signal == Signal.model_validate(long_signal(btc))
    assert decision.hold_reason is None
    body = ollama_server.requests[0]
    assert body["model"] == "qwen3:8b" and body["stream"] is False
    assert body["format"]["required"] == list(Signal.model_fields)
    assert body["options"]["temperature"] == 0.0 and body["think"] is False
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    (call,) = stored(synth)
    assert (call.outcome, call.tokens_in, call.tokens_out, call.tokens_estimated) == ("ok", 812, 96, False)
    assert json.loads(call.reply_json)["text"] == long_json(btc)


def test_openai_valid_reply_is_priced_from_reported_usage_and_sent_with_a_strict_schema(openai_server, btc, tmp_path):
    openai_server.push(openai_chat(long_json(btc), prompt_tokens=1000, completion_tokens=100))
    synth = synthesiser(openai_(openai_server), tmp_path)
    decision = synth.decide(btc)
    assert decision.signal.direction == "LONG"
    body = openai_server.requests[0]
    fmt = body["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    assert fmt["json_schema"]["schema"]["additionalProperties"] is False
    assert body["max_completion_tokens"] == 600 and body["temperature"] == 0.0
    (call,) = stored(synth)
    # 1000 x $0.15/M + 100 x $0.60/M
    assert call.cost_usd == pytest.approx(0.00015 + 0.00006)
    assert decision.calls[0].cost_usd == pytest.approx(0.00021)
    assert call.latency_ms > 0


def test_openai_server_without_structured_outputs_falls_back_to_json_mode(openai_server, btc, tmp_path):
    openai_server.push(
        openai_error(400, "response_format json_schema is not supported", "response_format"),
        openai_chat(long_json(btc)),
    )
    decision = synthesiser(openai_(openai_server), tmp_path).decide(btc)
    assert decision.signal.direction == "LONG"
    assert [r["response_format"]["type"] for r in openai_server.requests] == ["json_schema", "json_object"]


def test_openai_reply_without_usage_is_billed_on_estimated_tokens(openai_server, btc, tmp_path):
    openai_server.push(openai_chat(long_json(btc), prompt_tokens=None))
    synth = synthesiser(openai_(openai_server), tmp_path)
    synth.decide(btc)
    (call,) = stored(synth)
    assert call.tokens_estimated and call.tokens_in > 500 and call.tokens_out > 20 and call.cost_usd > 0


# --- invalid output: one repair retry, then HOLD -----------------------------------------------


@pytest.mark.parametrize("protocol", ["ollama", "openai"])
def test_invalid_json_is_repaired_once_showing_the_model_its_output_and_the_error(
    protocol, ollama_server, openai_server, btc, tmp_path
):
    server, provider, reply = (
        (ollama_server, ollama(ollama_server), ollama_chat)
        if protocol == "ollama"
        else (openai_server, openai_(openai_server), openai_chat)
    )
    server.push(reply(BROKEN), reply(long_json(btc)))
    decision = synthesiser(provider, tmp_path).decide(btc)
    assert decision.signal.direction == "LONG"
    assert [c.outcome for c in decision.calls] == ["invalid", "ok"]
    repair = server.requests[1]["messages"]
    assert repair[2] == {"role": "assistant", "content": BROKEN}
    assert "not valid JSON" in repair[3]["content"]


def test_valid_json_that_breaks_the_schema_twice_ends_in_hold_with_both_calls_recorded(openai_server, btc, tmp_path):
    bad = json.dumps({"symbol": "BTC/USDT", "direction": "BUY", "confidence": 2})
    openai_server.push(openai_chat(bad), openai_chat(bad))
    synth = synthesiser(openai_(openai_server), tmp_path)
    decision = synth.decide(btc)
    assert decision.signal.direction == "HOLD" and decision.signal.entry is None
    assert "direction" in decision.hold_reason and "confidence" in decision.hold_reason
    assert [c.outcome for c in stored(synth)] == ["invalid", "invalid"]
    assert len(openai_server.requests) == 2


def test_inconsistent_geometry_is_named_in_the_repair_and_never_passed_on(openai_server, btc, tmp_path):
    p = btc.last_price
    upside_down = long_json(btc, stop=p * 1.01, target=p * 0.98)
    openai_server.push(openai_chat(upside_down), openai_chat(upside_down))
    decision = synthesiser(openai_(openai_server), tmp_path).decide(btc)
    assert decision.signal.direction == "HOLD"
    assert "stop < entry < target" in openai_server.requests[1]["messages"][-1]["content"]


def test_low_reward_risk_is_rejected_against_the_configured_minimum(openai_server, btc, tmp_path):
    p = btc.last_price
    openai_server.push(openai_chat(long_json(btc, target=p * 1.012)), openai_chat(long_json(btc)))
    decision = synthesiser(openai_(openai_server), tmp_path).decide(btc)
    assert decision.signal.reward_risk == pytest.approx(2.0)
    assert "reward:risk 1.20 is below the minimum 1.5" in decision.calls[0].error


# --- refusals, truncation, empty content, server failures ---------------------------------------


def test_openai_refusal_is_a_hold_without_a_repair(openai_server, btc, tmp_path):
    openai_server.push(openai_chat(None, refusal="I can't help with trading decisions."))
    decision = synthesiser(openai_(openai_server), tmp_path).decide(btc)
    assert decision.signal.direction == "HOLD" and "refused" in decision.hold_reason
    assert len(openai_server.requests) == 1


def test_openai_content_filter_is_a_hold(openai_server, btc, tmp_path):
    openai_server.push(openai_chat("", finish_reason="content_filter"))
    decision = synthesiser(openai_(openai_server), tmp_path).decide(btc)
    assert decision.signal.direction == "HOLD" and decision.calls[0].outcome == "content_filter"


@pytest.mark.parametrize("protocol", ["ollama", "openai"])
def test_truncated_reply_twice_is_a_recorded_hold(protocol, ollama_server, openai_server, btc, tmp_path):
    if protocol == "ollama":
        server, provider = ollama_server, ollama(ollama_server)
        server.push(ollama_chat(BROKEN, done_reason="length"), ollama_chat(BROKEN, done_reason="length"))
    else:
        server, provider = openai_server, openai_(openai_server)
        server.push(openai_chat(BROKEN, finish_reason="length"), openai_chat(BROKEN, finish_reason="length"))
    synth = synthesiser(provider, tmp_path)
    decision = synth.decide(btc)
    assert decision.signal.direction == "HOLD"
    assert [c.outcome for c in stored(synth)] == ["truncated", "truncated"]


def test_ollama_empty_content_with_the_answer_in_thinking_is_not_guessed_from(ollama_server, btc, tmp_path):
    ollama_server.push(
        ollama_chat("", thinking=long_json(btc)), ollama_chat("", thinking="Let me think about BTC...")
    )
    synth = synthesiser(ollama(ollama_server), tmp_path)
    decision = synth.decide(btc)
    assert decision.signal.direction == "HOLD"
    assert "thinking" in decision.hold_reason
    assert json.loads(stored(synth)[0].reply_json)["thinking"] == long_json(btc)  # kept for the audit


@pytest.mark.parametrize("protocol", ["ollama", "openai"])
def test_server_error_500_is_a_hold_recorded_as_server_error(protocol, ollama_server, openai_server, btc, tmp_path):
    if protocol == "ollama":
        ollama_server.push(ollama_error(500, "model runner has unexpectedly stopped"))
        provider = ollama(ollama_server)
    else:
        openai_server.push(openai_error(500, "The server had an error"))
        provider = openai_(openai_server)
    synth = synthesiser(provider, tmp_path)
    decision = synth.decide(btc)
    assert decision.signal.direction == "HOLD"
    (call,) = stored(synth)
    assert call.outcome == "server_error" and "500" in call.error and call.reply_json is None


@pytest.mark.parametrize("protocol", ["ollama", "openai"])
def test_slow_server_hits_the_timeout_and_yields_a_hold(protocol, ollama_server, openai_server, btc, tmp_path):
    if protocol == "ollama":
        ollama_server.push(ollama_chat(long_json(btc), delay_s=1.5))
        provider = ollama(ollama_server, timeout_s=0.3)
    else:
        openai_server.push(openai_chat(long_json(btc), delay_s=1.5))
        provider = openai_(openai_server, timeout_s=0.3)
    synth = synthesiser(provider, tmp_path)
    decision = synth.decide(btc)
    assert decision.signal.direction == "HOLD" and decision.calls[0].outcome == "timeout"
    assert 250 <= decision.calls[0].latency_ms < 1400


@pytest.mark.parametrize("protocol", ["ollama", "openai"])
def test_huge_reply_is_refused_without_parsing_and_repaired(protocol, ollama_server, openai_server, btc, tmp_path):
    huge = "{" + '"reasoning": "' + "very long " * 300_000 + '"}'  # ~3 MB
    if protocol == "ollama":
        server, provider = ollama_server, ollama(ollama_server)
        server.push(ollama_chat(huge), ollama_chat(long_json(btc)))
    else:
        server, provider = openai_server, openai_(openai_server)
        server.push(openai_chat(huge), openai_chat(long_json(btc)))
    decision = synthesiser(provider, tmp_path).decide(btc)
    assert [c.outcome for c in decision.calls] == ["too_long", "ok"]
    assert len(server.requests[1]["messages"][2]["content"]) <= 4000  # the echo is cut


def test_garbage_body_from_an_ollama_server_is_a_recorded_hold(ollama_server, btc, tmp_path):
    from tests.llm_servers import Scripted

    ollama_server.push(Scripted(200, b"<html>proxy error</html>", content_type="text/html"))
    synth = synthesiser(ollama(ollama_server), tmp_path)
    decision = synth.decide(btc)
    assert decision.signal.direction == "HOLD" and stored(synth)[0].outcome == "bad_response"


def test_unreachable_server_is_a_connection_error_hold(btc, tmp_path):
    with serve("/api/chat") as server:
        url = server.url
    decision = synthesiser(OllamaProvider("m", ollama_settings(url)), tmp_path).decide(btc)
    assert decision.signal.direction == "HOLD" and decision.calls[0].outcome == "connection_error"
