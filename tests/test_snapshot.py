"""The FeatureSnapshot: no lookahead, honest errors, JSON round trip, anonymisation."""

import json

import numpy as np
import pytest
from pydantic import BaseModel

from agent.market import bundled_sample, load_candle_file
from agent.market.funding import load_funding
from agent.snapshot import DataQuality, FeatureSnapshot, build_snapshot, scrub_identity
from theories.base import LABEL, PRICE, RATIO, TIME, VOLUME, FitCache, TheoryResult, field_unit, unit
from theories.candles import Candles
from theories.registry import DEFAULT_SET, THEORIES

SAMPLE = bundled_sample()
AT = 1762992000000  # 2025-11-13T00:00Z, three days before the sample ends


def altered_after(c: Candles, at_ms: int) -> Candles:
    """The same candles with everything that closed after `at_ms` changed beyond recognition."""
    later = c.close_time > at_ms
    scale = np.where(later, 3.0, 1.0)
    wider = np.where(later, 1.05, 1.0)
    return Candles(c.time, c.open * scale, c.high * scale * wider, c.low * scale / wider, c.close * scale,
                   c.volume * np.where(later, 10.0, 1.0), symbol=c.symbol, source=c.source)


def test_snapshot_at_t_ignores_every_candle_after_t():
    honest = build_snapshot("ETH/USDT", SAMPLE, AT)
    tampered_universe = {s: altered_after(c, AT) for s, c in SAMPLE.items()}
    tampered = build_snapshot("ETH/USDT", tampered_universe, AT)
    assert honest.time == AT
    assert honest.model_dump() == tampered.model_dump()


def test_altering_a_candle_before_t_does_change_the_snapshot():
    # the lookahead test above must be able to fail: history does matter
    c = SAMPLE["ETH/USDT"]
    earlier = c.close_time <= AT
    scale = np.where(earlier & (c.close_time > AT - 48 * 3_600_000), 1.2, 1.0)
    moved = Candles(c.time, c.open * scale, c.high * scale, c.low * scale, c.close * scale, c.volume,
                    symbol=c.symbol, source=c.source)
    a = build_snapshot("ETH/USDT", SAMPLE, AT)
    b = build_snapshot("ETH/USDT", {**SAMPLE, "ETH/USDT": moved}, AT)
    assert a.model_dump() != b.model_dump()


def test_every_registered_theory_answers_on_the_bundled_sample():
    cache = FitCache()
    funding = load_funding()
    for symbol in SAMPLE:
        snap = build_snapshot(symbol, SAMPLE, cache=cache, funding=funding)
        if symbol == "SOL/USDT":  # the source publishes no SOL funding history: said, not guessed
            assert snap.errors == {"funding_extremes": "no funding rates given for SOL/USDT (perpetuals only)"}
        else:
            assert snap.errors == {}, f"{symbol}: {snap.errors}"
        assert list(snap.theories) == [n for n in DEFAULT_SET if n not in snap.errors]
        assert snap.quality.candles == 500 and snap.quality.stale_bars == 0


def test_every_registered_theory_answers_on_the_shared_data(shared_data):
    folder = shared_data / "candles" / "binance-spot-1h"
    universe = {c.symbol: c for c in (load_candle_file(folder / f"{s}_USDT.csv.gz") for s in ("BTC", "ETH", "DOGE"))}
    funding = load_funding(shared_data / "funding" / "binance-usdm")
    cache = FitCache()
    # three eras: the 2018 bear market, the 2021 bull market, and the latest data
    for at in (1_530_000_000_000, 1_620_000_000_000, universe["BTC/USDT"].last_close_time):
        for symbol in ("BTC/USDT", "DOGE/USDT") if at > 1_600_000_000_000 else ("BTC/USDT",):
            snap = build_snapshot(symbol, universe, at, cache=cache, funding=funding)
            errors = dict(snap.errors)
            # no perpetual before Sept 2019, and the source's DOGE funding file is empty: said, not guessed
            if at < 1_567_000_000_000 or symbol == "DOGE/USDT":
                assert "funding" in errors.pop("funding_extremes")
            assert errors == {}, f"{symbol} at {at}: {snap.errors}"
    other = shared_data / "candles" / "binance-spot-1h-2021"
    eth21 = {f"{s}/USDT": load_candle_file(other / f"{s}_USDT.csv.gz") for s in ("ETH", "BTC")}
    assert build_snapshot("ETH/USDT", eth21, cache=cache, funding=funding).errors == {}


def test_too_little_data_is_reported_per_theory_not_guessed():
    short = {s: c.tail(40) for s, c in SAMPLE.items()}
    snap = build_snapshot("BTC/USDT", short)
    short_of_data = {n for n, t in THEORIES.items() if t.min_bars > 40}
    assert short_of_data <= set(snap.errors)
    assert all("needs at least" in snap.errors[n] for n in short_of_data)
    assert not set(snap.errors) & set(snap.theories)


def test_a_time_before_any_candle_closed_is_an_error():
    from theories.candles import CandleDataError

    with pytest.raises(CandleDataError, match="no candle of BTC/USDT had closed"):
        build_snapshot("BTC/USDT", SAMPLE, int(SAMPLE["BTC/USDT"].time[0]))


def test_stale_data_is_flagged():
    at = SAMPLE["BTC/USDT"].last_close_time + 5 * 3_600_000 + 1
    assert build_snapshot("BTC/USDT", SAMPLE, at, ["entropy"]).quality.stale_bars == 5


def test_json_round_trip_restores_each_theorys_own_type():
    snap = build_snapshot("SOL/USDT", SAMPLE, AT)
    again = FeatureSnapshot.model_validate(json.loads(snap.model_dump_json()))
    assert again == snap
    for name, result in again.theories.items():
        assert type(result) is THEORIES[name].result


def test_scrubbing_removes_ticker_spellings_and_dates():
    text = "no BTC/USDT candle closed by 2025-11-13T00:00:00Z; btc_usdt file; BTCUSDT; BTC alone; BITCOIN kept"
    assert scrub_identity(text, "BTC/USDT") == (
        "no ASSET candle closed by <time>; ASSET file; ASSET; ASSET alone; BITCOIN kept"
    )


def _price_fields(model: BaseModel, path=""):
    for name in type(model).model_fields:
        value = getattr(model, name)
        if field_unit(type(model), name) == PRICE:
            yield f"{path}{name}", value
        elif isinstance(value, BaseModel):
            yield from _price_fields(value, f"{path}{name}.")


def _get(model, dotted):
    for part in dotted.split("."):
        model = getattr(model, part)
    return model


def test_anonymised_snapshot_has_no_ticker_no_dates_and_prices_rebased_to_100():
    snap = build_snapshot("BTC/USDT", SAMPLE, AT)
    anon = snap.anonymised_copy()
    text = anon.to_prompt_text()
    assert anon.last_price == 100 and anon.time is None and anon.quality.first_open_ms is None
    assert "BTC" not in text and "USDT" not in text and "2025" not in text
    assert "BTC" not in anon.model_dump_json() and "2025" not in anon.model_dump_json()
    assert anon.errors["funding_extremes"] == "no funding rates given for ASSET (perpetuals only)"
    factor = 100 / snap.last_price
    n_prices = 0
    for name, result in snap.theories.items():
        for dotted, value in _price_fields(result):
            got = _get(anon.theories[name], dotted)
            if value is None:
                assert got is None
                continue
            n_prices += 1
            if isinstance(value, list | tuple):
                assert list(got) == pytest.approx([v * factor for v in value], rel=1e-12)
            else:
                assert got == pytest.approx(value * factor, rel=1e-12)
    # the same non-price numbers
    assert anon.theories["entropy"] == snap.theories["entropy"]
    if {"montecarlo", "kalman", "variance"} & set(snap.theories):
        assert n_prices > 0  # theories that report price levels were rebased


def test_prompt_text_is_compact_with_one_line_per_theory():
    snap = build_snapshot("XRP/USDT", SAMPLE, AT)
    lines = snap.to_prompt_text().splitlines()
    assert lines[0].startswith("XRP/USDT at 2025-11-13T00:00:00Z")
    assert len(lines) == 1 + len(DEFAULT_SET) + 1  # header, one per theory, order flow
    assert lines[-1].startswith("orderflow: profile: POC")
    # a rough budget: the whole snapshot must leave room in a 1,500-token prompt (~4 chars a token)
    assert len(snap.to_prompt_text()) < 4 * 900


def _fresh_text(snap: FeatureSnapshot) -> str:
    """The prompt text rendered from nothing: a new object parsed from the snapshot's JSON (no memo)."""
    return FeatureSnapshot.model_validate_json(BaseModel.model_dump_json(snap)).to_prompt_text()


def test_memoised_text_json_and_anonymised_copy_are_what_a_fresh_snapshot_gives_and_stay_out_of_its_value():
    snap = build_snapshot("BTC/USDT", SAMPLE, AT)
    plain = FeatureSnapshot.model_validate_json(BaseModel.model_dump_json(snap))  # never rendered
    text, json_text, anon = snap.to_prompt_text(), snap.model_dump_json(), snap.anonymised_copy()
    assert snap.to_prompt_text() is text and snap.model_dump_json() is json_text and snap.anonymised_copy() is anon
    assert text == plain.to_prompt_text() and json_text == BaseModel.model_dump_json(plain)
    assert anon == plain.anonymised_copy() and anon.to_prompt_text() == plain.anonymised_copy().to_prompt_text()
    assert snap.model_dump_json(indent=1) == BaseModel.model_dump_json(plain, indent=1)  # options: not the memo
    # the memos are no part of the value: equality, dump, iteration and repr see the fields only
    fresh = FeatureSnapshot.model_validate_json(json_text)
    assert snap == fresh and fresh == snap and snap.model_dump() == fresh.model_dump()
    assert dict(snap).keys() == dict(fresh).keys() == set(FeatureSnapshot.model_fields) and repr(snap) == repr(fresh)
    # a copy with other fields renders its own fields, not the memo of the snapshot it was copied from
    moved = snap.model_copy(update={"symbol": "ETH/USDT", "last_price": 1.0})
    assert moved.to_prompt_text().startswith("ETH/USDT at") and "last close 1," in moved.to_prompt_text()
    assert '"symbol":"ETH/USDT"' in moved.model_dump_json() and moved.anonymised_copy() is not anon
    fewer = snap.model_copy(update={"theories": {"entropy": snap.theories["entropy"]}})
    assert fewer.to_prompt_text() == _fresh_text(fewer) != text


def test_a_derived_snapshot_renders_its_own_results_and_the_shared_ones_as_a_fresh_render_does():
    shared = build_snapshot("ETH/USDT", SAMPLE, AT, [n for n in DEFAULT_SET if n != "bayes"])
    shared.to_prompt_text()  # the shared lines memoised first, as when another variant rendered it
    for outcomes in ([], [1.5, -1.0, 2.0]):
        own = build_snapshot("ETH/USDT", SAMPLE, AT, ["bayes"], outcomes=outcomes).theories
        derived = shared.derived({**shared.theories, **own}, dict(shared.errors))
        # the value `model_construct` makes of the same fields (every field set), with no memo of the shared one
        constructed = FeatureSnapshot.model_construct(**{**dict(shared), "theories": {**shared.theories, **own}})
        assert derived == constructed and derived.model_fields_set == constructed.model_fields_set
        assert derived.__dict__.keys() == {*constructed.__dict__, "_base"} and "_prompt_text" in shared.__dict__
        assert (derived.__pydantic_extra__, derived.__pydantic_private__) == (None, None)
        assert derived.to_prompt_text() == _fresh_text(derived)
        assert "bayes: " + own["bayes"].summary() in derived.to_prompt_text().splitlines()
        assert derived.model_dump_json() == BaseModel.model_dump_json(derived)
        # its header and order-flow lines are the base text's when the base has one, rendered when not: the same
        unrendered = shared.model_copy().derived({**shared.theories, **own}, dict(shared.errors))
        assert unrendered.to_prompt_text() == derived.to_prompt_text() and derived.orderflow is not None
    # a result the derived snapshot replaces is rendered from the new result, not the shared line of its name
    other = build_snapshot("BTC/USDT", SAMPLE, AT, ["entropy"]).theories["entropy"]
    replaced = shared.derived({**shared.theories, "entropy": other}, dict(shared.errors))
    assert other.summary() != shared.theories["entropy"].summary()
    assert replaced.to_prompt_text() == _fresh_text(replaced) != shared.to_prompt_text()


def test_fit_cache_makes_the_second_symbol_pass_reuse_fits():
    cache = FitCache()
    first = build_snapshot("BTC/USDT", SAMPLE, AT, cache=cache)
    misses = cache.misses
    second = build_snapshot("BTC/USDT", SAMPLE, AT, cache=cache)
    assert cache.misses == misses and first == second


class _Leg(BaseModel):
    stop: float = unit(PRICE, "a price level")
    size: float = unit(VOLUME, "base units")


class _Probe(TheoryResult):
    level: float = unit(PRICE, "a price level")
    levels: tuple[float, ...] = unit(PRICE, "price levels")
    depth: float = unit(VOLUME, "base units")
    seen_at: int = unit(TIME, "epoch ms")
    ratio: float = unit(RATIO, "dimensionless")
    leg: _Leg = unit(LABEL, "a nested model")


def test_anonymising_rebases_prices_rescales_volumes_and_blanks_times_even_when_nested():
    quality = DataQuality(candles=500, interval_ms=3_600_000, first_open_ms=1, gaps=0, missing_candles=0,
                          stale_bars=0, mean_volume=250.0)
    probe = _Probe(label="x", level=50_000.0, levels=(49_000.0, 51_000.0), depth=500.0, seen_at=1_762_992_000_000,
                   ratio=0.3, leg=_Leg(stop=48_000.0, size=25.0))
    snap = FeatureSnapshot(symbol="BTC/USDT", time=AT, last_price=40_000.0, quality=quality, theories={"probe": probe})
    anon = snap.anonymised_copy().theories["probe"]
    assert anon.level == pytest.approx(125.0) and anon.levels == pytest.approx((122.5, 127.5))
    assert anon.depth == pytest.approx(2.0) and anon.leg.size == pytest.approx(0.1)
    assert anon.leg.stop == pytest.approx(120.0)
    assert anon.seen_at == 0 and anon.ratio == 0.3


@pytest.mark.parametrize("symbol", sorted(SAMPLE))
def test_snapshot_text_fits_its_share_of_the_prompt_budget(symbol):
    # a decision prompt (instructions, snapshot, positions, outcomes, constraints) must stay within 1,500
    # estimated input tokens; the snapshot of one symbol, every default theory on, gets at most 700 of them
    from agent.llm.prompt import estimate_tokens

    snap = build_snapshot(symbol, SAMPLE, funding=load_funding())
    assert set(snap.theories) | set(snap.errors) == set(DEFAULT_SET)
    text = snap.to_prompt_text()
    assert estimate_tokens(text) <= 700, text
    assert estimate_tokens(snap.anonymised_copy().to_prompt_text()) <= 700
