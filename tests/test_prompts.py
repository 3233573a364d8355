# ruff: noqa: F811  (pytest fixtures imported from tests.llm_fixtures are re-bound as arguments)
"""Prompt templates: loading rules, rendering (named and anonymised), hashing and the token budget."""

from __future__ import annotations

import pytest

from agent.llm.prompt import (
    PROMPTS_DIR,
    TOKEN_BUDGET,
    OpenPosition,
    PromptError,
    PromptTemplate,
    estimate_tokens,
    messages_hash,
    render,
    scrub_ticker,
)
from agent.signal import SignalRules
from tests.llm_fixtures import btc, sample_snapshots  # noqa: F401
from theories.registry import DEFAULT_SET

VARIANTS = ("baseline", "terse")

GOOD = """# prompt: demo
# version: 3
[system]
Rules: $constraints
Fields: $fields
[user]
$snapshot
"""


def test_both_variants_load_with_a_version_and_a_hash():
    for name in VARIANTS:
        t = PromptTemplate.load(name)
        assert t.variant == name and t.version == "1" and len(t.sha256) == 64
    assert {p.stem for p in PROMPTS_DIR.glob("*.txt")} >= set(VARIANTS)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (GOOD.replace("$snapshot", "$snapshot $price"), "unknown placeholders ['price']"),
        (GOOD.replace("$snapshot", "data"), "must use placeholders ['snapshot']"),
        (GOOD.replace("# version: 3\n", ""), "missing header line '# version"),
        (GOOD.replace("[user]\n", ""), "needs a [system] and a [user] part"),
        (GOOD.replace("Rules:", "Costs $5 Rules:"), "a '$' that is not a placeholder"),
        (GOOD.replace("# prompt: demo", "# prompt: other"), "header names prompt 'other'"),
    ],
)
def test_broken_templates_are_rejected_naming_the_rule(text, message):
    with pytest.raises(PromptError, match=message.replace("[", r"\[").replace("]", r"\]").replace("$", r"\$")):
        PromptTemplate.parse(text, source="demo.txt", variant="demo")


def test_unknown_variant_names_the_known_ones():
    with pytest.raises(PromptError, match="known: baseline, terse"):
        PromptTemplate.load("nonesuch")


def test_rendered_prompt_holds_the_snapshot_rules_positions_and_outcomes(btc):
    positions = [OpenPosition(symbol="ETH/USDT", direction="LONG", entry=3000, stop=2900, target=3200)]
    p = render(PromptTemplate.load("baseline"), btc, SignalRules(), positions, [1.5, -1.0, 2.0])
    assert btc.to_prompt_text() in p.user
    assert "|target-entry|/|entry-stop| >= 1.5" in p.system
    assert "LONG ETH/USDT entry 3000, stop 2900, target 3200" in p.user
    assert "Last closed trades (R, oldest first): +1.5 -1.0 +2.0" in p.user
    assert "\ndirection (LONG|SHORT|HOLD): HOLD means no trade." in p.system
    assert "$" not in p.system + p.user  # every placeholder filled


def test_prompt_hash_changes_with_the_content_and_not_otherwise(btc):
    t = PromptTemplate.load("baseline")
    a, b = render(t, btc, SignalRules()), render(t, btc, SignalRules())
    c = render(t, btc, SignalRules(min_reward_risk=2.0))
    assert a.sha256 == b.sha256 != c.sha256


def test_prompt_hash_is_the_hash_of_its_messages_for_every_prompt_asked(btc):
    """The remembered hash (`_prompt_sha256`) is exactly `messages_hash` of the messages, for each prompt."""
    t = PromptTemplate.load("baseline")
    prompts = [render(t, btc, SignalRules(min_reward_risk=1.5 + k / 10), outcomes=[k]) for k in range(20)]
    for p in prompts + prompts[::-1]:  # more prompts than the memory holds, then asked again
        assert p.sha256 == messages_hash(p.messages)
    assert len({p.sha256 for p in prompts}) == len(prompts)


def test_anonymised_prompt_names_no_ticker_no_date_and_rebases_own_positions(btc):
    k = 100.0 / btc.last_price
    positions = [
        OpenPosition(symbol="BTC/USDT", direction="SHORT", entry=btc.last_price, stop=btc.last_price * 1.01),
        OpenPosition(symbol="ETH/USDT", direction="LONG", entry=3000, stop=2900),
    ]
    p = render(PromptTemplate.load("terse"), btc, SignalRules(), positions, anonymise=True)
    text = p.system + p.user
    for leak in ("BTC", "ETH", "USDT", "2025", f"{btc.last_price:.6g}"):
        assert leak not in text
    assert f"SHORT ASSET entry 100, stop {btc.last_price * 1.01 * k:.6g}" in p.user
    assert "1 position(s) in other assets" in p.user and p.anonymised


WRAPPER_BUDGET = 420  # estimated tokens for everything but the snapshot text: leaves 1,080 for the theories


@pytest.mark.parametrize("variant", VARIANTS)
def test_prompt_around_the_snapshot_leaves_the_theories_at_least_1080_of_the_1500_tokens(variant, btc):
    positions = [OpenPosition(symbol="BTC/USDT", direction="LONG", entry=95000, stop=94000, target=97000)]
    p = render(PromptTemplate.load(variant), btc, SignalRules(), positions, outcomes=[1.0, -1.0] * 10)
    wrapper = p.estimated_tokens - estimate_tokens(btc.to_prompt_text())
    assert wrapper <= WRAPPER_BUDGET, wrapper


@pytest.mark.parametrize("variant", VARIANTS)
def test_prompt_with_every_theory_fits_the_1500_token_budget(variant, sample_snapshots):
    t = PromptTemplate.load(variant)
    for snap in sample_snapshots.values():
        assert set(snap.theories) | set(snap.errors) == set(DEFAULT_SET)  # every theory on
        p = render(t, snap, SignalRules(), outcomes=[1.0, -1.0] * 10)
        assert p.estimated_tokens <= TOKEN_BUDGET, (snap.symbol, p.estimated_tokens)


def test_terse_variant_is_shorter_than_the_baseline(btc):
    base = render(PromptTemplate.load("baseline"), btc, SignalRules())
    terse = render(PromptTemplate.load("terse"), btc, SignalRules())
    assert terse.estimated_tokens < base.estimated_tokens


def test_scrubbing_replaces_every_spelling_of_the_ticker_but_not_words_containing_it():
    text = "BTC/USDT; btc_usdt; BTCUSDT; BTC-led; no funding for BTC/USDT; BTCX stays; SUBTC stays"
    assert scrub_ticker(text, "BTC/USDT") == (
        "ASSET; ASSET; ASSET; ASSET-led; no funding for ASSET; BTCX stays; SUBTC stays"
    )


@pytest.mark.parametrize(
    ("text", "tokens"),
    [("", 0), ("hold", 1), ("stationarity", 3), ("123456", 2), ("0.765", 3), ("a b", 2), ("x\n\ny", 3)],
)
def test_token_estimate_follows_its_stated_rule(text, tokens):
    assert estimate_tokens(text) == tokens
