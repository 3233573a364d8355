"""The webhook's rules without the server: signatures, the alert schema, symbols, decision times, the theory."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from agent.snapshot import FeatureSnapshot
from agent.webhook.cycles import CycleRefused, alert_decision_ms, next_second
from agent.webhook.payload import TradingViewAlert, compact, resolve_symbol
from agent.webhook.signature import BodyTooLarge, SignatureError, declared_length, sign, verify
from agent.webhook.theory import TradingViewResult, tradingview_result

HOUR = 3_600_000

# --- signatures ---------------------------------------------------------------------------------------------


def test_the_signature_is_the_hex_hmac_sha256_of_the_raw_body():
    body = b'{"a": 1}'
    expected = hmac.new(b"k" * 20, body, hashlib.sha256).hexdigest()
    assert sign("k" * 20, body) == f"sha256={expected}"
    assert verify("k" * 20, body, f"sha256={expected.upper()}") == expected  # hex case does not matter
    assert verify("k" * 20, body, f"  sha256={expected} ") == expected


@pytest.mark.parametrize("header, why", [
    (None, "missing"), ("", "missing"), ("sha256=abc", "malformed"), ("md5=" + "0" * 64, "malformed"),
    ("sha256=" + "0" * 64, "does not match"), ("sha256=" + "é" * 64, "malformed"),
])
def test_a_bad_signature_header_says_what_is_wrong(header, why):
    with pytest.raises(SignatureError, match=why):
        verify("secret-secret-secret", b"{}", header)


def test_one_changed_byte_breaks_the_signature():
    body = json.dumps({"price": 100.0}).encode()
    header = sign("secret-secret-secret", body)
    with pytest.raises(SignatureError, match="does not match"):
        verify("secret-secret-secret", body.replace(b"100", b"101"), header)


@pytest.mark.parametrize("value, ok", [(None, True), ("0", True), ("2048", True), ("2049", False), ("-1", False),
                                       ("12abc", False), (" 10 ", True), ("1e3", False)])
def test_a_declared_length_must_be_a_byte_count_within_the_limit(value, ok):
    if ok:
        declared_length(value, 2048)
    else:
        with pytest.raises(BodyTooLarge):
            declared_length(value, 2048)


# --- the alert's schema and symbols -------------------------------------------------------------------------

BASE = {"strategy": "s", "action": "entry", "direction": "long", "symbol": "BTCUSDT", "price": 1.0}


@pytest.mark.parametrize("timestamp, ms", [
    (1_763_251_200, 1_763_251_200_000), (1_763_251_200_123, 1_763_251_200_123),
    ("2025-11-16T00:00:00Z", 1_763_251_200_000), ("2025-11-16T01:00:00+01:00", 1_763_251_200_000),
])
def test_timestamps_are_iso_with_a_zone_or_integer_epoch_seconds_or_ms(timestamp, ms):
    assert TradingViewAlert.model_validate({**BASE, "timestamp": timestamp}).time_ms == ms


@pytest.mark.parametrize("timestamp", ["2025-11-16T00:00:00", 1.5, True, 0, -5, None, "yesterday"])
def test_ambiguous_or_impossible_timestamps_are_refused(timestamp):
    with pytest.raises(ValidationError, match="timestamp"):
        TradingViewAlert.model_validate({**BASE, "timestamp": timestamp})


def test_tradingview_order_actions_read_as_directions_and_extras_are_kept():
    a = TradingViewAlert.model_validate_json(json.dumps(
        {**BASE, "action": "EXIT", "direction": "Sell", "timestamp": 1, "tf": "1h", "n": 2, "ok": True, "x": 0.5}))
    assert (a.action, a.side) == ("exit", "SHORT")
    assert a.extras == {"tf": "1h", "n": 2, "ok": True, "x": 0.5}


def test_extras_are_bounded():
    with pytest.raises(ValidationError, match="at most 16 extra fields"):
        TradingViewAlert.model_validate({**BASE, "timestamp": 1, **{f"k{i}": i for i in range(17)}})
    with pytest.raises(ValidationError, match="longer than 200"):
        TradingViewAlert.model_validate({**BASE, "timestamp": 1, "note": "x" * 201})


@pytest.mark.parametrize("sent, resolved", [
    ("BTCUSDT", "BTC/USDT"), ("BINANCE:BTCUSDT", "BTC/USDT"), ("btc/usdt", "BTC/USDT"), ("ETH-USDT", "ETH/USDT"),
    ("BTCUSDT.P", None), ("BTC", None), ("SOLUSDT", None),
])
def test_symbols_resolve_only_to_exactly_what_they_name(sent, resolved):
    assert resolve_symbol(sent, ["BTC/USDT", "ETH/USDT"]) == resolved
    assert compact("coinbase:eth_usdt") == "ETHUSDT"


# --- decision times of alert cycles -------------------------------------------------------------------------

closes = st.integers(400_000, 500_000).map(lambda k: k * HOUR)


@given(close=closes, offset=st.integers(-10 * HOUR, 10 * HOUR), latest_back=st.one_of(
    st.none(), st.integers(-3 * HOUR, HOUR - 2000)))
def test_an_alert_decides_after_the_close_and_the_run_in_a_second_of_its_own_and_before_the_next_close(
        close, offset, latest_back):
    latest = None if latest_back is None else close + latest_back
    received = close + offset
    t = alert_decision_ms(received, close, HOUR, latest)
    assert close < t < close + HOUR  # the same candles as the scheduled cycle of this close
    assert t // 1000 != close // 1000  # never the scheduled cycle's id
    if latest is not None:
        assert t > latest and t // 1000 != latest // 1000  # after the run, in another second
    if next_second(max(close, latest or close)) <= received <= close + HOUR - 1000:
        assert t == received  # live data: the receipt time itself


def test_an_alert_is_refused_when_the_run_already_decided_past_the_bar():
    close = 480_000 * HOUR
    with pytest.raises(CycleRefused, match="already decided"):
        alert_decision_ms(close + 10, close, HOUR, close + HOUR - 500)


def test_alerts_in_one_second_get_successive_seconds():
    close = 480_000 * HOUR
    first = alert_decision_ms(close + 10_500, close, HOUR, None)
    second = alert_decision_ms(close + 10_700, close, HOUR, first)
    assert first == close + 10_500 and second == close + 11_000


# --- the tradingview theory ----------------------------------------------------------------------------------


def _result(**kw) -> TradingViewResult:
    args = dict(alert_id="tv-1", strategy="BTC breakout", action="entry", direction="SHORT", price=99.0,
                alert_time_ms=1_763_251_230_000, received_ms=1_763_251_232_000, last_close=100.0,
                last_close_time_ms=1_763_251_200_000, interval_ms=HOUR, extras={"tf": "1h", "level": 101.5})
    args.update(kw)
    return tradingview_result(**args)


def test_the_theory_places_the_alert_against_the_last_close():
    r = _result()
    assert r.distance == pytest.approx(-0.01)
    assert r.age_s == pytest.approx(2.0)
    assert r.data_lag_bars == pytest.approx(30_000 / HOUR)
    assert r.summary().startswith("SHORT entry from TradingView strategy 'BTC breakout' at 99 (-1% vs last close)")
    assert "tf=1h, level=101.5" in r.summary() and "confirm it or veto it" in r.summary()


def _snapshot_with(result: TradingViewResult) -> FeatureSnapshot:
    return FeatureSnapshot(symbol="BTC/USDT", time=1_763_251_200_000, last_price=100.0, quality={
        "candles": 500, "interval_ms": HOUR, "first_open_ms": 0, "gaps": 0, "missing_candles": 0, "stale_bars": 0,
        "mean_volume": 10.0}, theories={"tradingview": result})


def test_an_anonymised_snapshot_hides_the_strategy_the_extras_and_the_time_and_rebases_the_price():
    anon = _snapshot_with(_result(price=95.0)).anonymised_copy()
    tv = anon.theories["tradingview"]
    assert tv.price == pytest.approx(95.0) and tv.alert_time_ms == 0  # last close 100: rebased to 100 it stays
    text = anon.to_prompt_text()
    assert "BTC" not in text and "breakout" not in text and "level" not in text
    assert "tradingview: SHORT entry from an external strategy at 95" in text


def test_the_theory_round_trips_through_json_on_its_own():
    r = _result()
    assert TradingViewResult.model_validate_json(r.model_dump_json()) == r


def test_a_snapshot_with_the_tradingview_theory_round_trips_through_json():
    snap = _snapshot_with(_result())
    back = FeatureSnapshot.model_validate_json(snap.model_dump_json())
    assert back == snap and isinstance(back.theories["tradingview"], TradingViewResult)
