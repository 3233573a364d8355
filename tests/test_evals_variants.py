"""The variants file: parsing, defaults, baselines added, and errors that name the file, variant and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from evals.variants import (
    EvalConfig,
    VariantsError,
    load_variants,
    parse_cadence,
    parse_variants,
    resolve_theories,
    theory_fingerprint,
    to_ms,
    with_baselines,
)
from risk.config import RiskConfig
from theories.registry import DEFAULT_SET

FULL = """
start = 2025-01-01
end = 2025-01-03T00:00:00Z
cadence = "4h"
universe = ["BTC", "ETH"]
in_sample_until = "2025-01-02"
initial_cash = 5000
risk = { sizing = { max_risk_per_trade = 0.004 } }
paper = { slippage = 0.001 }

[[variant]]
name = "qwen-terse"
provider = "ollama:qwen3:8b"
prompt = "terse"
theories = ["regime", "montecarlo"]
risk = { sizing = { max_position_notional = 0.5 } }

[[variant]]
name = "qwen-named"
provider = "ollama:qwen3:8b"
anonymise = "named"

[[variant]]
name = "heur"
provider = "heuristic"
theories = { montecarlo = { n_paths = 20000 }, bayes = {} }
paper = { taker_fee = 0.0005 }
"""


def test_a_full_file_parses_with_times_in_utc_ms_and_the_cadence_grid():
    c = parse_variants(FULL, "v.toml")
    assert c.start == to_ms("2025-01-01T00:00:00Z") == 1735689600000
    assert c.end == c.start + 2 * 86_400_000
    assert c.in_sample_until == c.start + 86_400_000
    assert c.cadence_ms == 4 * 3_600_000
    times = c.decision_times()
    assert times[0] == c.start and times[-1] == c.end - 4 * 3_600_000 and len(times) == 12
    assert [v.name for v in c.variants] == ["qwen-terse", "qwen-named", "heur"]


def test_anonymise_defaults_to_true_for_llm_providers_and_named_mode_turns_it_off():
    c = parse_variants(FULL)
    by = {v.name: v for v in c.variants}
    assert by["qwen-terse"].anonymised is True
    assert by["qwen-named"].anonymised is False
    assert by["heur"].anonymised is False
    replayed = parse_variants(FULL.replace('"ollama:qwen3:8b"\nprompt', '"replay:ollama:qwen3:8b"\nprompt'))
    assert replayed.variants[0].anonymised is True


def test_risk_and_paper_overrides_merge_onto_the_run_and_the_product_defaults():
    c = parse_variants(FULL)
    by = {v.name: v for v in c.variants}
    terse = c.risk_for(by["qwen-terse"])
    assert terse.sizing.max_risk_per_trade == 0.004  # run-wide
    assert terse.sizing.max_position_notional == 0.5  # the variant's
    default = RiskConfig()
    assert terse.breakers == default.breakers  # untouched sections stay the product's
    heur = c.paper_for(by["heur"])
    assert (heur.initial_cash, heur.slippage, heur.taker_fee) == (5000, 0.001, 0.0005)
    assert c.paper_for(by["qwen-terse"]).taker_fee == 0.001
    # sized with the fee the paper broker charges, as the cycle command does
    assert c.risk_for(by["heur"]).sizing.fee_rate in (default.sizing.fee_rate, 0.0005)


def test_theory_sets_resolve_to_full_parameters_so_two_spellings_share_a_fingerprint():
    a = resolve_theories(["montecarlo", "bayes"])
    b = resolve_theories({"montecarlo": {"seed": 0}, "bayes": None})
    assert a == b and a["montecarlo"]["n_paths"] == 10000
    assert theory_fingerprint(a, 500, "BTC/USDT") == theory_fingerprint(b, 500, "BTC/USDT")
    c = resolve_theories({"montecarlo": {"n_paths": 20000}, "bayes": None})
    assert theory_fingerprint(c, 500, "BTC/USDT") != theory_fingerprint(a, 500, "BTC/USDT")
    assert theory_fingerprint(a, 400, "BTC/USDT") != theory_fingerprint(a, 500, "BTC/USDT")
    assert list(resolve_theories(None)) == list(DEFAULT_SET)


def test_baselines_are_always_added_unless_declared():
    c = parse_variants(FULL)
    variants, curves = with_baselines(c, ["BTC/USDT", "ETH/USDT"])
    names = [v.name for v in variants]
    assert names[:3] == ["qwen-terse", "qwen-named", "heur"]
    added = [v for v in variants if v.baseline]
    # the heuristic is declared ("heur"), so not added again; every seed strategy is
    assert [v.provider for v in added] == ["strategy:atr_breakout", "strategy:funding_extremes", "strategy:momentum",
                                           "strategy:rsi_bollinger", "strategy:vwap_reversion"]
    assert added[0].name == "strategy.atr_breakout"
    assert [c.name for c in curves] == ["buy_and_hold.BTC_USDT", "buy_and_hold.ETH_USDT", "equal_weight.BTC_ETH"]
    alone = parse_variants('start = 2025-01-01\nend = 2025-01-02\n')
    variants, curves = with_baselines(alone, ["SOL/USDT"])
    assert next(v.name for v in variants) == "heuristic"
    # the basket is the market's benchmark: kept even when the universe leaves its legs out
    assert [c.name for c in curves] == ["buy_and_hold.SOL_USDT", "equal_weight.BTC_ETH"]


def test_baseline_theories_apply_to_the_added_baselines():
    c = parse_variants('start = 2025-01-01\nend = 2025-01-02\nbaseline_theories = ["montecarlo", "momentum"]\n')
    variants, _ = with_baselines(c, ["BTC/USDT"])
    assert all(list(v.resolved_theories()) == ["montecarlo", "momentum"] for v in variants)


@pytest.mark.parametrize(("text", "expected"), [
    (FULL.replace('theories = ["regime", "montecarlo"]', 'theories = ["regime", "astrology"]'),
     "variant 'qwen-terse', field 'theories'"),
    (FULL.replace("max_position_notional = 0.5", "max_position_notional = -2"),
     "variant 'qwen-terse', field 'risk.sizing.max_position_notional'"),
    (FULL.replace("taker_fee = 0.0005", "taker_fee = 0.5"), "variant 'heur', field 'paper.taker_fee'"),
    (FULL.replace('name = "heur"', 'name = "heur:1"'), "variant 'heur:1', field 'name'"),
    (FULL.replace('name = "heur"', 'name = "qwen-named"'), "names must be unique"),
    (FULL.replace('cadence = "4h"', 'cadence = "4 hours"'), "field 'cadence'"),
    (FULL.replace("end = 2025-01-03T00:00:00Z", "end = 2024-12-01"), "end must be after start"),
    (FULL.replace('provider = "heuristic"\n', ""), "variant 'heur', field 'provider'"),
    (FULL.replace('prompt = "terse"', 'prompt = "terse"\ncolour = "red"'), "variant 'qwen-terse', field 'colour'"),
    (FULL.replace("n_paths = 20000", "n_paths = -1"), "theory 'montecarlo' parameter 'n_paths'"),
    (FULL + "\n[oops\n", "not valid TOML"),
])
def test_errors_name_the_file_the_variant_and_the_field(text, expected):
    with pytest.raises(VariantsError) as err:
        parse_variants(text, "my-variants.toml")
    assert str(err.value).startswith("my-variants.toml: ")
    assert expected in str(err.value)


def test_cadence_forms():
    assert parse_cadence("1h") == 3_600_000 and parse_cadence("15m") == 900_000 and parse_cadence("1d") == 86_400_000
    for bad in ("0h", "h", "1w", "-1h"):
        with pytest.raises(ValueError, match="cadence"):
            parse_cadence(bad)


def test_load_resolves_data_folders_against_the_file_and_names_a_missing_file(tmp_path: Path):
    f = tmp_path / "sub" / "v.toml"
    f.parent.mkdir()
    f.write_text('start = 2025-01-01\nend = 2025-01-02\ndata = "../candles"\n', encoding="utf-8")
    c = load_variants(f)
    assert isinstance(c, EvalConfig) and c.data == str((tmp_path / "candles").resolve())
    with pytest.raises(VariantsError, match=r"nope\.toml: cannot read"):
        load_variants(tmp_path / "nope.toml")


def test_the_example_variants_file_runs_on_the_bundled_sample():
    """The README's example: it parses, its period lies inside the bundled sample, and the
    baselines join its one declared variant."""
    from agent.cycle import FileMarketData

    example = Path(__file__).resolve().parents[1] / "evals" / "examples" / "sample.toml"
    c = load_variants(example)
    data = FileMarketData()
    for symbol in c.universe:
        candles = data.candles(symbol, 2**62)
        assert int(candles.time[0]) + c.window * candles.interval_ms <= c.start  # a full analysis window before it
        assert c.end <= candles.last_close_time
    variants, curves = with_baselines(c, list(c.universe))
    assert [v.name for v in variants][:2] == ["momentum-gate-sized", "heuristic"]
    assert len(curves) == 3
