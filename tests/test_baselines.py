"""Baselines: the temporary fill model's arithmetic, trade management, and buy-and-hold benchmarks."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.market import bundled_sample
from agent.market.funding import load_funding
from evals.baselines import FillModel, buy_and_hold, equal_weight_buy_and_hold, run_strategy
from theories.base import Theory, TheoryContext, TheoryError, TheoryParams
from theories.candles import Candles
from theories.strategies import atr_breakout, funding_extremes, momentum, rsi_bollinger, vwap_reversion
from theories.strategies.rule import StrategyResult

H = 3_600_000
T0 = 1_735_689_600_000
NO_COSTS = FillModel(fee_rate=0.0, slippage=0.0)


def bars(rows: list[tuple[float, float, float, float]]) -> Candles:
    """Hourly candles from (open, high, low, close) rows."""
    o, h, lo, c = (np.array(col, float) for col in zip(*rows, strict=True))
    return Candles(T0 + np.arange(len(rows)) * H, o, h, lo, c, np.ones(len(rows)), interval_ms=H, symbol="X/USDT")


def plan(vote: int = 0, **kw) -> StrategyResult:
    base = dict(label="scripted", vote=vote, strength=0.5 if vote else 0.0, conditions=(), entry=100.0, stop=None,
                target=None, target_is_limit=True, trail_atr=None, trail_schedule=(), min_hold_bars=None,
                max_hold_bars=None, exit_long=False, exit_short=False)
    return StrategyResult(**{**base, **kw})


def scripted(script: dict[int, StrategyResult], seen: list[int] | None = None) -> Theory:
    """A strategy that answers `script[bar index of the last closed candle]`, else no vote."""

    def run(ctx: TheoryContext, _: TheoryParams) -> StrategyResult:
        assert ctx.history.last_close_time <= ctx.at_ms  # never a candle that had not closed
        i = len(ctx.history) - 1
        if seen is not None:
            seen.append(i)
        return script.get(i, plan())

    return Theory(name="scripted", description="test", params=TheoryParams, result=StrategyResult, run=run, min_bars=1)


FLAT = (100.0, 100.5, 99.5, 100.0)


def test_entry_fills_at_the_next_open_and_a_target_fills_at_the_target_with_costs_booked():
    c = bars([FLAT, (101.0, 101.5, 100.5, 101.0), (101.0, 106.0, 100.8, 105.0), FLAT])
    fills = FillModel(fee_rate=0.001, slippage=0.0005)
    run = run_strategy(scripted({0: plan(1, stop=95.0, target=104.0)}), c, fills=fills, initial_equity=10_000)
    (t,) = run.trades
    entry = 101.0 * 1.0005
    qty = 10_000 / entry
    fees = 0.001 * entry * qty + 0.001 * 104.0 * qty
    assert (t.side, t.entry_time, t.entry_price) == ("long", T0 + H, entry)
    assert (t.exit_price, t.exit_reason) == (104.0, "target")
    assert t.signal_time == T0 + H and t.exit_time == T0 + 3 * H
    assert t.quantity == pytest.approx(qty)
    assert t.fees == pytest.approx(fees)
    assert t.pnl == pytest.approx((104.0 - entry) * qty - fees)
    assert t.r_multiple == pytest.approx(t.pnl / ((entry - 95.0) * qty))
    assert run.final_equity == pytest.approx(10_000 + t.pnl)


def test_a_bar_touching_both_stop_and_target_is_read_as_the_stop():
    c = bars([FLAT, FLAT, (100.0, 106.0, 94.0, 100.0), FLAT])
    (t,) = run_strategy(scripted({0: plan(1, stop=95.0, target=104.0)}), c, fills=NO_COSTS).trades
    assert t.exit_reason == "stop" and t.exit_price == 95.0


def test_a_gap_through_the_stop_fills_at_the_open_then_slips():
    c = bars([FLAT, FLAT, (90.0, 91.0, 89.0, 90.5), FLAT])
    fills = FillModel(fee_rate=0.0, slippage=0.001)
    (t,) = run_strategy(scripted({0: plan(1, stop=95.0)}), c, fills=fills).trades
    assert t.exit_price == pytest.approx(90.0 * 0.999)


def test_a_short_is_stopped_above_and_takes_profit_below():
    c = bars([FLAT, FLAT, (100.0, 100.2, 96.0, 97.0), FLAT])
    (t,) = run_strategy(scripted({0: plan(-1, stop=103.0, target=97.5)}), c, fills=NO_COSTS).trades
    assert (t.side, t.exit_reason, t.exit_price) == ("short", "target", 97.5)
    assert t.pnl == pytest.approx(2.5 * t.quantity)


def test_an_entry_whose_open_already_crossed_the_stop_is_skipped():
    c = bars([FLAT, (94.0, 94.5, 93.5, 94.0), FLAT])
    run = run_strategy(scripted({0: plan(1, stop=95.0)}), c, fills=NO_COSTS)
    assert run.trades == [] and run.skipped_entries == 1


def test_the_time_stop_leaves_at_the_open_after_the_holding_limit():
    c = bars([FLAT] * 8)
    (t,) = run_strategy(scripted({0: plan(1, max_hold_bars=3)}), c, fills=NO_COSTS).trades
    assert t.exit_reason == "time_stop"
    assert t.entry_time == T0 + H and t.exit_time == T0 + 4 * H  # held 3 bars


def test_exit_flags_wait_for_the_minimum_hold():
    c = bars([FLAT] * 10)
    script = {0: plan(1, min_hold_bars=3)} | {i: plan(0, exit_long=True) for i in range(1, 10)}
    (t,) = run_strategy(scripted(script), c, fills=NO_COSTS).trades
    assert t.exit_reason == "exit_signal" and t.exit_time == T0 + 4 * H


def test_an_opposite_vote_closes_and_reverses_at_the_same_open():
    c = bars([FLAT] * 6)
    run = run_strategy(scripted({0: plan(1), 2: plan(-1)}), c, fills=NO_COSTS)
    first, second = run.trades
    assert first.exit_reason == "opposite_signal" and first.exit_time == second.entry_time == T0 + 3 * H
    assert second.side == "short" and second.exit_reason == "end_of_data"


def test_the_trailing_stop_tightens_by_the_schedule_and_never_loosens():
    # entry 100, stop 98 (risk 2), ATR 1: after a high of 104 (2R) trail 1.0 ATR -> 103
    rows = [FLAT, FLAT, (100.0, 104.0, 99.9, 103.5), (103.5, 103.8, 102.9, 103.0), FLAT]
    p = plan(1, stop=98.0, trail_atr=1.0, trail_schedule=((1.0, 1.2), (2.0, 1.0), (3.0, 0.8)))
    (t,) = run_strategy(scripted({0: p}), bars(rows), fills=NO_COSTS).trades
    assert t.exit_reason == "trailing_stop" and t.exit_price == pytest.approx(103.0)
    assert t.initial_stop == 98.0


def test_an_open_position_is_closed_at_the_last_close():
    c = bars([FLAT, FLAT, (100.0, 101.0, 99.0, 100.8)])
    run = run_strategy(scripted({0: plan(1)}), c, fills=NO_COSTS)
    (t,) = run.trades
    assert (t.exit_reason, t.exit_price, t.exit_time) == ("end_of_data", 100.8, T0 + 3 * H)
    assert run.equity[-1] == pytest.approx(run.initial_equity * 100.8 / 100.0)


def test_every_close_is_decided_once_from_closed_candles_only_and_errors_are_counted():
    seen: list[int] = []
    c = bars([FLAT] * 6)
    run = run_strategy(scripted({}, seen), c, start_ms=T0 + 3 * H)
    assert seen == [2, 3, 4, 5] and run.decisions == 4

    def failing(ctx: TheoryContext, _: TheoryParams) -> StrategyResult:
        raise TheoryError("not enough data")

    broken = Theory(name="broken", description="", params=TheoryParams, result=StrategyResult, run=failing, min_bars=1)
    run = run_strategy(broken, c)
    assert run.unanswered == 6 and run.trades == [] and "not enough data" in run.first_error


def test_only_rule_strategies_can_be_run():
    from theories import hurst

    with pytest.raises(TypeError, match="not a rule strategy"):
        run_strategy(hurst.THEORY, bars([FLAT] * 3))


# --- buy and hold -----------------------------------------------------------------------------------

def test_buy_and_hold_return_is_last_close_over_first_open_net_of_costs():
    c = bars([(100.0, 101, 99, 100.5), (100.5, 121, 100, 120.0)])
    assert buy_and_hold(c, fills=NO_COSTS).total_return == pytest.approx(0.2)
    f = FillModel(fee_rate=0.001, slippage=0.0005)
    expected = 120.0 * 0.9995 * 0.999 / (100.0 * 1.0005 * 1.001) - 1
    run = buy_and_hold(c, fills=f)
    assert run.total_return == pytest.approx(expected)
    assert run.trades[0].pnl == pytest.approx(run.final_equity - run.initial_equity)


def test_the_equal_weight_basket_averages_its_legs_on_common_bars_only():
    a = bars([(100.0, 101, 99, 100), (100.0, 111, 99, 110), (110.0, 121, 109, 120)])
    b_rows = [(50.0, 51, 49, 50), (50.0, 51, 44, 45), (45.0, 46, 39, 40)]
    o, h, lo, cl = (np.array(col) for col in zip(*b_rows, strict=True))
    b = Candles(T0 + np.array([0, 1, 2]) * H, o, h, lo, cl, np.ones(3), interval_ms=H, symbol="B/USDT")
    b_gap = Candles(b.time[[0, 2]], o[[0, 2]], h[[0, 2]], lo[[0, 2]], cl[[0, 2]], np.ones(2), interval_ms=H)
    run = equal_weight_buy_and_hold({"A": a, "B": b}, ("A", "B"), fills=NO_COSTS)
    assert run.total_return == pytest.approx(0.5 * (0.2 + -0.2))
    assert run.equity == pytest.approx([10_000.0, 5_000 * 1.1 + 5_000 * 0.9, 10_000.0])
    gapped = equal_weight_buy_and_hold({"A": a, "B": b_gap}, ("A", "B"), fills=NO_COSTS)
    assert gapped.equity_time == [T0 + H, T0 + 3 * H]  # the hour B is missing is not marked
    with pytest.raises(KeyError, match="C"):
        equal_weight_buy_and_hold({"A": a}, ("A", "C"))


# --- the real strategies on the bundled sample -------------------------------------------------------

STRATEGIES: list[tuple[Theory, Callable[[str], object]]] = [
    (vwap_reversion.THEORY, lambda s: None),
    (rsi_bollinger.THEORY, lambda s: None),
    (momentum.THEORY, lambda s: None),
    (atr_breakout.THEORY, lambda s: None),
    (funding_extremes.THEORY, lambda s: load_funding().get(s)),
]


@pytest.mark.parametrize(("theory", "funding_for"), STRATEGIES, ids=lambda x: getattr(x, "name", ""))
def test_each_strategy_runs_on_the_bundled_sample_and_its_books_balance(theory, funding_for):
    c = bundled_sample(["ADA"])["ADA/USDT"]
    start = int(c.close_time[-700])
    run = run_strategy(theory, c, funding=funding_for("ADA/USDT"), start_ms=start)
    assert run.unanswered == 0, run.first_error
    assert run.decisions == 700 and len(run.equity) == 700
    assert run.final_equity == pytest.approx(run.initial_equity + sum(t.pnl for t in run.trades))
    for t in run.trades:
        assert t.signal_time <= t.entry_time < t.exit_time
        assert t.fees > 0
    assert 0 <= run.max_drawdown < 1


# --- invariants on random walks -------------------------------------------------------------------

@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), stop_pct=st.floats(0.005, 0.05), every=st.integers(2, 9))
def test_random_walk_books_balance_trades_never_overlap_and_stops_cap_losses(seed, stop_pct, every):
    rng = np.random.default_rng(seed)
    n = 120
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.concatenate(([100.0], close[:-1])) * np.exp(rng.normal(0, 0.002, n))
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.01, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.01, n))
    c = Candles(T0 + np.arange(n) * H, open_, high, low, close, np.ones(n), interval_ms=H, symbol="X/USDT")
    script = {
        i: plan(side, stop=close[i] * (1 - side * stop_pct), target=close[i] * (1 + side * 2 * stop_pct))
        for i in range(0, n, every) for side in [1 if (i // every) % 2 == 0 else -1]
    }
    fills = FillModel(fee_rate=0.001, slippage=0.0005)
    run = run_strategy(scripted(script), c, fills=fills)
    assert run.final_equity == pytest.approx(run.initial_equity + sum(t.pnl for t in run.trades))
    for before, after in zip(run.trades, run.trades[1:], strict=False):
        assert before.exit_time <= after.entry_time
    for t in run.trades:
        assert t.entry_time < t.exit_time
        side = 1 if t.side == "long" else -1
        if t.exit_reason == "stop":
            bar = int(np.searchsorted(c.time, t.exit_time - H))
            worst = min(c.open[bar], t.initial_stop) if side > 0 else max(c.open[bar], t.initial_stop)
            assert t.exit_price == pytest.approx(worst * (1 - side * 0.0005))
        if t.exit_reason == "target":
            assert side * (t.exit_price - t.target) >= -1e-9
