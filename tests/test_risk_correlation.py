"""Correlation rule: rolling 30-day return correlation with same-direction positions shrinks or refuses a trade."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from agent.market.loaders import bundled_sample
from risk import (
    AccountState,
    Approved,
    OpenPosition,
    PriceSeries,
    RegimeView,
    Rejected,
    RiskConfig,
    RiskGate,
    RiskRequest,
    TradeHistory,
    TradeProposal,
    WinCount,
)
from risk.rules.correlation import rolling_correlation

HOUR = 3_600_000
DAY = 24 * HOUR
N = 24 * 60  # 60 days of hourly closes
NOW = 1_736_938_800_000 + N * HOUR  # some hour in 2025, after the last close


def series(returns: np.ndarray, times: np.ndarray | None = None) -> PriceSeries:
    t = times if times is not None else NOW - HOUR * np.arange(len(returns), 0, -1) + HOUR
    return PriceSeries(time_ms=tuple(int(x) for x in t), close=tuple((100 * np.exp(np.cumsum(returns))).tolist()))


def correlated_pair(rho: float, seed: int = 7) -> tuple[PriceSeries, PriceSeries]:
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((2, N))
    a = 0.01 * z[0]
    b = 0.01 * (rho * z[0] + np.sqrt(1 - rho * rho) * z[1])
    return series(a), series(b)


def test_known_correlation_is_recovered():
    a, b = correlated_pair(0.9)
    rho, n = rolling_correlation(a, b, NOW, 30 * DAY)
    assert n == 30 * 24 - 1 and rho == pytest.approx(0.9, abs=0.03)
    indep = rolling_correlation(*correlated_pair(0.0), NOW, 30 * DAY)[0]
    assert abs(indep) < 4 / np.sqrt(n)  # four standard errors of a zero correlation
    assert rolling_correlation(a, a, NOW, 30 * DAY)[0] == pytest.approx(1.0)


def test_only_the_window_before_the_decision_counts():
    rng = np.random.default_rng(3)
    z = 0.01 * rng.standard_normal((2, N))
    b = z[1].copy()
    b[: N - 30 * 24] = z[0][: N - 30 * 24]  # identical long ago, independent in the last 30 days
    rho, _ = rolling_correlation(series(z[0]), series(b), NOW, 30 * DAY)
    assert abs(rho) < 0.15
    older, _ = rolling_correlation(series(z[0]), series(b), NOW - 31 * DAY, 20 * DAY)
    assert older == pytest.approx(1.0)


def test_gaps_pair_returns_over_the_same_span_only():
    a, b = correlated_pair(0.9)
    keep = np.ones(N, dtype=bool)
    keep[N - 100 : N - 90] = False  # ten hours missing from b
    b_gap = PriceSeries(time_ms=tuple(np.asarray(b.time_ms)[keep].tolist()),
                        close=tuple(np.asarray(b.close)[keep].tolist()))
    rho, n = rolling_correlation(a, b_gap, NOW, 30 * DAY)
    assert n == 30 * 24 - 1 - 10 and rho == pytest.approx(0.9, abs=0.03)


def test_real_hourly_correlation_matches_pandas():
    candles = bundled_sample(["BTC/USDT", "ETH/USDT"])
    btc, eth = (PriceSeries.from_candles(candles[s]) for s in ("BTC/USDT", "ETH/USDT"))
    now = max(btc.time_ms[-1], eth.time_ms[-1])
    rho, n = rolling_correlation(btc, eth, now, 30 * DAY)
    frame = pd.DataFrame({"btc": pd.Series(btc.close, index=btc.time_ms),
                          "eth": pd.Series(eth.close, index=eth.time_ms)})
    frame = frame.dropna()
    frame = frame[frame.index > now - 30 * DAY]
    expected = np.log(frame).diff().dropna().corr().loc["btc", "eth"]
    assert rho == pytest.approx(expected, abs=1e-12) and n == len(frame) - 1
    assert rho > 0.7  # BTC and ETH moved together over the sample's last month


# --- through the gate -------------------------------------------------------------------------


def request(prices, positions, direction="LONG", **kw):
    geometry = dict(entry=100.0, stop=90.0, target=120.0) if direction == "LONG" else \
        dict(entry=100.0, stop=110.0, target=80.0)
    return RiskRequest(
        now_ms=NOW,
        proposal=TradeProposal(symbol="BTC/USDT", direction=direction, confidence=0.8, horizon_hours=24, **geometry),
        account=AccountState(initial_balance=100_000.0, balance=100_000.0, equity=100_000.0, cash=100_000.0),
        positions=positions, prices=prices, history=TradeHistory(variant=WinCount(wins=45, losses=55)),
        regime=RegimeView(name="low-vol range"), **kw,
    )


def eth(direction="LONG", notional=10_000.0):
    return OpenPosition(symbol="ETH/USDT", direction=direction, quantity=notional / 100.0, entry=100.0, mark=100.0,
                        opened_ms=NOW - DAY)


GATE = RiskGate()


def test_correlated_same_direction_trade_is_shrunk_and_capped():
    btc, eth_prices = correlated_pair(0.9)
    prices = {"BTC/USDT": btc, "ETH/USDT": eth_prices}
    alone = GATE.evaluate(request(prices, ()))
    d = GATE.evaluate(request(prices, (eth(notional=10_000.0),)))
    assert isinstance(d, Approved)
    assert d.risk_amount == pytest.approx(alone.risk_amount * 0.5)
    note = next(r for r in d.reasons if r.code == "correlated_position")
    assert note.value == pytest.approx(0.9, abs=0.03) and note.limit == 0.7
    # 35% cap on correlated exposure: 30 000 of ETH leaves 5 000 for BTC, then x0.8 (low-vol range) x0.5
    capped = GATE.evaluate(request(prices, (eth(notional=30_000.0),)))
    assert capped.notional == pytest.approx(5000.0 * 0.8 * 0.5)
    assert "correlated_exposure_cap" in [r.code for r in capped.reasons]


def test_correlation_rule_can_reject_instead():
    btc, eth_prices = correlated_pair(0.9)
    gate = RiskGate(RiskConfig(correlation={"action": "reject"}))
    d = gate.evaluate(request({"BTC/USDT": btc, "ETH/USDT": eth_prices}, (eth(),)))
    assert isinstance(d, Rejected) and "correlated_position" in d.codes


def test_uncorrelated_or_opposite_positions_do_not_shrink():
    btc, eth_prices = correlated_pair(0.2)
    prices = {"BTC/USDT": btc, "ETH/USDT": eth_prices}
    alone = GATE.evaluate(request(prices, ()))
    assert GATE.evaluate(request(prices, (eth(),))).risk_amount == pytest.approx(alone.risk_amount)
    btc, eth_prices = correlated_pair(0.95)
    prices = {"BTC/USDT": btc, "ETH/USDT": eth_prices}
    opposite = GATE.evaluate(request(prices, (eth(direction="SHORT"),)))
    assert opposite.risk_amount == pytest.approx(alone.risk_amount)


def test_threshold_is_configurable():
    btc, eth_prices = correlated_pair(0.6)
    prices = {"BTC/USDT": btc, "ETH/USDT": eth_prices}
    strict = RiskGate(RiskConfig(correlation={"threshold": 0.5}))
    assert "correlated_shrink" in [r.code for r in strict.evaluate(request(prices, (eth(),))).reasons]
    assert "correlated_shrink" not in [r.code for r in GATE.evaluate(request(prices, (eth(),))).reasons]


def test_missing_or_short_price_history_counts_as_correlated():
    btc, _ = correlated_pair(0.0)
    d = GATE.evaluate(request({"BTC/USDT": btc}, (eth(),)))
    note = next(r for r in d.reasons if r.code == "correlation_unknown")
    assert "no price series" in note.message and "correlated_shrink" in [r.code for r in d.reasons]
    a, b = correlated_pair(0.0)
    short = PriceSeries(time_ms=b.time_ms[-50:], close=b.close[-50:])
    d = GATE.evaluate(request({"BTC/USDT": a, "ETH/USDT": short}, (eth(),)))
    assert "49 common returns" in next(r for r in d.reasons if r.code == "correlation_unknown").message


def test_adding_to_a_position_in_the_same_symbol_counts_as_correlated():
    btc_pos = OpenPosition(symbol="BTC/USDT", direction="LONG", quantity=100.0, entry=100.0, mark=100.0,
                           opened_ms=NOW - DAY)
    d = GATE.evaluate(request({}, (btc_pos,)))
    codes = [r.code for r in d.reasons]
    assert "correlated_position" in codes and "correlation_unknown" not in codes
    assert next(r for r in d.reasons if r.code == "correlated_position").value == 1.0


def test_price_series_from_candles_equals_the_validated_series():
    """`from_candles` skips validation: on real candles it must give exactly what validation gives."""
    candles = bundled_sample(["BTC/USDT", "ETH/USDT"])
    for c in candles.values():
        for cut in (c, c.tail(721), c.tail(1), c.tail(0)):
            fast = PriceSeries.from_candles(cut)
            plain = PriceSeries(time_ms=tuple((cut.time + cut.interval_ms).tolist()), close=tuple(cut.close.tolist()))
            assert fast == plain
            assert fast.model_dump_json() == plain.model_dump_json()
            assert all(type(t) is int for t in fast.time_ms) and all(type(x) is float for x in fast.close)
            assert fast.model_fields_set == plain.model_fields_set
