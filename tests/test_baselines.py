"""Baselines: the names and specs of every baseline, and buy-and-hold curves computed by the paper broker.

Known answers by hand: the quantity is the cash after slippage and the taker fee at the open of
the bar after the first decision, and the equity is cash left plus that quantity at each close.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.brokers.paper import PaperSettings
from agent.config import LLMSettings
from agent.cycle import FileMarketData
from agent.llm.providers import make_provider
from agent.market.loaders import bundled_sample
from evals.baselines import (
    BaselineCurve,
    baseline_curve,
    baseline_name,
    baseline_specs,
    buy_and_hold,
    buy_and_hold_curve,
    equal_weight,
    equal_weight_curve,
    hold_quantity,
)
from evals.metrics import EquityCurve
from theories.candles import Candles

H = 3_600_000
T0 = 1_735_689_600_000  # 2025-01-01 00:00 UTC
PAPER = PaperSettings()  # the variants' defaults: 0.1% taker fee, 0.05% slippage, 10,000 cash


def bars(opens, closes, symbol="X/USDT", start=T0) -> Candles:
    o, c = np.asarray(opens, float), np.asarray(closes, float)
    return Candles(start + np.arange(len(o)) * H, o, np.maximum(o, c) + 1, np.minimum(o, c) - 1, c,
                   np.ones(len(o)), interval_ms=H, symbol=symbol)


@pytest.fixture(scope="module")
def sample():
    return bundled_sample()


@pytest.fixture(scope="module")
def grid(sample):
    end = sample["BTC/USDT"].last_close_time
    return list(range(end - 30 * 24 * H, end + 1, 4 * H))  # 30 days, a decision every 4 h


def test_buy_and_hold_equity_is_the_hand_computation_on_a_small_series():
    c = bars([100, 101, 104, 99, 110], [101, 103, 98, 108, 120])
    times = [T0 + H, T0 + 2 * H, T0 + 4 * H, T0 + 5 * H]  # the first decision at the close of bar 0
    curve = buy_and_hold_curve({"X/USDT": c}, "X/USDT", times, PAPER)
    price = 101 * 1.0005  # bar 1's open plus slippage
    q = 10_000 / (price * 1.001)
    left = 10_000 - q * price * 1.001
    assert curve.time_ms == tuple(times)
    assert curve.equity[0] == 10_000  # at the first decision the order has not filled yet
    assert curve.equity[1:] == pytest.approx([left + q * 103, left + q * 108, left + q * 120], rel=1e-12)


def test_buy_and_hold_on_real_candles_matches_the_hand_computation_at_every_decision(sample, grid):
    held = buy_and_hold(sample, "BTC/USDT", grid, PAPER)
    c = sample["BTC/USDT"]
    i = int(np.searchsorted(c.time, grid[0]))
    assert c.time[i] == grid[0]  # decisions are on bar closes: the fill is the bar opening at the decision
    price = c.open[i] * 1.0005
    q = 10_000 / (price * 1.001)
    left = 10_000 - q * price * 1.001
    expected = [10_000.0] + [left + q * c.closed_by(t).close[-1] for t in grid[1:]]
    assert held.curve.equity == pytest.approx(expected, rel=1e-12)
    ((symbol, when, fill_price, quantity),) = held.fills
    assert (symbol, when) == ("BTC/USDT", grid[0]) and fill_price == pytest.approx(price, rel=1e-15)
    assert quantity == pytest.approx(q, rel=1e-15)
    assert left >= 0 and left < 1e-6  # all the money is invested, never more


def test_the_variants_fees_and_slippage_are_what_the_holding_pays(sample, grid):
    free = buy_and_hold_curve(sample, "ETH/USDT", grid, PaperSettings(taker_fee=0, slippage=0))
    costly = buy_and_hold_curve(sample, "ETH/USDT", grid, PaperSettings(taker_fee=0.002, slippage=0.001))
    c = sample["ETH/USDT"]
    gross = c.closed_by(grid[-1]).close[-1] / c.open[np.searchsorted(c.time, grid[0])]
    assert free.equity[-1] == pytest.approx(10_000 * gross, rel=1e-12)
    assert costly.equity[-1] == pytest.approx(10_000 * gross / (1.001 * 1.002), rel=1e-12)


def test_equal_weight_is_the_sum_of_two_half_money_holdings_bought_once_and_never_rebalanced(sample, grid):
    basket = equal_weight(sample, ["BTC/USDT", "ETH/USDT"], grid, PAPER)
    half = [buy_and_hold_curve(sample, s, grid, PAPER, initial_cash=5_000) for s in ("BTC/USDT", "ETH/USDT")]
    full = [buy_and_hold_curve(sample, s, grid, PAPER) for s in ("BTC/USDT", "ETH/USDT")]
    assert basket.curve.equity == pytest.approx([a + b for a, b in zip(half[0].equity, half[1].equity, strict=True)],
                                                rel=1e-12)
    assert basket.curve.equity == pytest.approx([(a + b) / 2 for a, b in zip(full[0].equity, full[1].equity,
                                                                              strict=True)], rel=1e-12)
    assert [f[0] for f in basket.fills] == ["BTC/USDT", "ETH/USDT"]
    assert {f[1] for f in basket.fills} == {grid[0]}  # one purchase each, at the start, and nothing after
    assert basket.name == "equal_weight.BTC_ETH" and basket.kind == "equal_weight"
    assert equal_weight_curve(sample, ["BTC/USDT", "ETH/USDT"], grid, PAPER) == basket.curve


def test_a_data_source_gives_the_same_curve_as_the_candles_themselves(sample, grid):
    assert buy_and_hold_curve(FileMarketData(), "SOL/USDT", grid, PAPER) == buy_and_hold_curve(sample, "SOL/USDT",
                                                                                                grid, PAPER)


def test_the_curve_is_the_json_the_run_folder_holds(sample, grid):
    held = buy_and_hold(sample, "XRP/USDT", grid, PAPER, initial_cash=2_500)
    again = BaselineCurve.model_validate_json(held.model_dump_json())
    assert again == held and again.curve.equity[0] == 2_500 and again.paper.initial_cash == 2_500
    assert isinstance(again.curve, EquityCurve)
    assert again.paper.break_even_trigger is None and again.paper.trailing_stop is None  # a hold has no exits
    assert again.paper.taker_fee == PAPER.taker_fee and again.paper.slippage == PAPER.slippage


def test_a_symbol_with_no_bar_after_the_first_decision_is_an_error_naming_it():
    c = bars([100, 101], [101, 102])
    with pytest.raises(ValueError, match="X/USDT has no bar opening at or after"):
        buy_and_hold_curve({"X/USDT": c}, "X/USDT", [T0 + 2 * H, T0 + 3 * H])
    with pytest.raises(KeyError, match="no candles for Y/USDT"):
        buy_and_hold_curve({"X/USDT": c}, "Y/USDT", [T0 + H])
    with pytest.raises(ValueError, match="no decision times"):
        buy_and_hold_curve({"X/USDT": c}, "X/USDT", [])
    with pytest.raises(ValueError, match="distinct"):
        equal_weight_curve({"X/USDT": c}, ["X/USDT", "X/USDT"], [T0 + H])


def test_a_young_coin_is_bought_at_its_first_bar_after_the_start():
    c = bars([50, 55, 60], [55, 60, 66], start=T0 + 10 * H)  # listed ten hours after the first decision
    curve = buy_and_hold_curve({"X/USDT": c}, "X/USDT", [T0, T0 + 12 * H, T0 + 13 * H], PaperSettings(
        taker_fee=0, slippage=0))
    assert curve.equity == pytest.approx((10_000, 10_000 / 50 * 60, 10_000 / 50 * 66))


@settings(max_examples=40, deadline=None)
@given(
    money=st.floats(1.0, 1e9),
    price=st.floats(1e-6, 1e6),
    fee=st.floats(0, 0.0499),
    slip=st.floats(0, 0.0499),
)
def test_the_quantity_spends_the_money_and_never_a_hair_more(money, price, fee, slip):
    s = PaperSettings(taker_fee=fee, slippage=slip)
    q = hold_quantity(money, price, s)
    fill = price * (1 + slip)  # the paper broker's arithmetic, operation for operation
    assert q * fill + q * fill * fee <= money  # its cash check passes
    assert q * fill * (1 + fee) == pytest.approx(money, rel=1e-12)  # and the money is spent


# --- names and specs ------------------------------------------------------------------------------

def test_baseline_specs_hold_every_baseline_the_issue_requires_with_valid_variant_names():
    specs = baseline_specs(["BTC/USDT", "SOL/USDT"])
    names = [s.name for s in specs]
    assert names == ["heuristic", "strategy.atr_breakout", "strategy.funding_extremes", "strategy.momentum",
                     "strategy.rsi_bollinger", "strategy.vwap_reversion", "buy_and_hold.BTC_USDT",
                     "buy_and_hold.SOL_USDT", "equal_weight.BTC_ETH"]
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+", n) for n in names)
    assert all(baseline_name(s.spec) == s.name for s in specs)
    replayed = [s for s in specs if s.replayed]
    assert [s.kind for s in replayed] == ["heuristic"] + ["strategy"] * 5
    variants = {f"{p.name}:{p.model}" for p in (make_provider(s.provider, LLMSettings()) for s in replayed)}
    assert len(variants) == 6  # six distinct DecisionRow.variant signatures
    assert specs[-1].symbols == ("BTC/USDT", "ETH/USDT") and specs[-1].provider is None


def test_baseline_curve_builds_the_passive_kinds_and_refuses_the_replayed_ones(sample, grid):
    specs = {s.name: s for s in baseline_specs(["ETH/USDT"])}
    got = baseline_curve(specs["buy_and_hold.ETH_USDT"], sample, grid, PAPER)
    assert got.curve == buy_and_hold_curve(sample, "ETH/USDT", grid, PAPER) and got.kind == "buy_and_hold"
    assert baseline_curve(specs["equal_weight.BTC_ETH"], sample, grid, PAPER).symbols == ("BTC/USDT", "ETH/USDT")
    with pytest.raises(ValueError, match="replayed through the cycle"):
        baseline_curve(specs["strategy.momentum"], sample, grid, PAPER)


def test_baseline_names_map_specs_and_refuse_anything_else():
    assert baseline_name("equal_weight:BTC/USDT+ETH/USDT+SOL/USDT") == "equal_weight.BTC_ETH_SOL"
    assert baseline_name("equal_weight:BTC/USDT+ETH/BTC") == "equal_weight.BTC_USDT_ETH_BTC"
    for bad in ("strategy:nope", "buy_and_hold:", "equal_weight:BTC/USDT", "hodl"):
        with pytest.raises(ValueError):
            baseline_name(bad)
