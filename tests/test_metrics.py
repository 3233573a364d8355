"""evals.metrics against values computed by hand (the arithmetic is in the comments), plus invariants."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from itertools import pairwise

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from evals.metrics import (
    DAY_MS,
    YEAR_MS,
    EquityCurve,
    Trade,
    calibration,
    curve_stats,
    exposure,
    group_stats,
    performance,
    period_returns,
    period_stats,
    r_multiple_stats,
    realised_curve,
    reshuffled_drawdowns,
    reshuffled_paths,
    trade_stats,
)


def ms(y: int, m: int, d: int, h: int = 0) -> int:
    return int(datetime(y, m, d, h, tzinfo=UTC).timestamp() * 1000)


def trade(pnl: float, r: float, *, opened: int = 0, closed: int = 1, side: str = "LONG", exit_: float = 100.0,
          fees: float = 1.0, symbol: str = "BTC/USDT", tid: str | None = None) -> Trade:
    return Trade(trade_id=tid or f"t{opened}-{closed}-{pnl}", decision_id="d", variant="v", symbol=symbol, side=side,
                 regime=None, opened_ms=opened, closed_ms=closed, entry=100.0, exit=exit_, quantity=1.0, fees=fees,
                 pnl=pnl, risk_amount=10.0, r_multiple=r, exit_reason="target")


# Five trades, closed in this order: win, loss, win, loss, break-even (a loss by the store's rule).
FIVE = [
    trade(30, 3.0, closed=1, exit_=131),
    trade(-10, -1.0, closed=2, exit_=91),
    trade(20, 2.0, closed=3, exit_=121, side="SHORT"),
    trade(-10, -1.0, closed=4, exit_=91, side="SHORT"),
    trade(0, 0.0, closed=5, exit_=101),
]


def test_trade_stats_of_five_trades_match_the_hand_computation():
    s = trade_stats(FIVE)
    assert (s.trades, s.wins, s.losses) == (5, 2, 3)
    assert s.win_rate == pytest.approx(0.4)  # 2 / 5
    assert s.gross_profit == 50 and s.gross_loss == 20  # 30 + 20; 10 + 10 + 0
    assert s.profit_factor == pytest.approx(2.5)  # 50 / 20
    assert s.avg_win == pytest.approx(25)  # (30 + 20) / 2
    assert s.avg_loss == pytest.approx(-20 / 3)  # (-10 - 10 + 0) / 3
    assert s.payoff_ratio == pytest.approx(3.75)  # 25 / (20 / 3)
    assert s.avg_r == pytest.approx(0.6)  # (3 - 1 + 2 - 1 + 0) / 5
    assert s.avg_win_r == pytest.approx(2.5) and s.avg_loss_r == pytest.approx(-2 / 3)
    assert s.expectancy_r == pytest.approx(0.6)  # 0.4 x 2.5 + 0.6 x (-2/3) = 1 - 0.4
    assert s.expectancy == pytest.approx(6)  # 30 / 5
    assert s.total_pnl == pytest.approx(30) and s.fees == pytest.approx(5)
    assert s.turnover == pytest.approx(1035)  # 1 x (100+131 + 100+91 + 100+121 + 100+91 + 100+101)
    assert (s.best, s.worst) == (30, -10)
    assert s.max_consecutive_losses == 2  # W L W L L
    assert s.avg_holding_ms == pytest.approx(3)  # opened at 0, closed at 1..5 ms: mean 3


def test_no_trades_give_counts_of_zero_and_none_for_every_ratio():
    s = trade_stats([])
    assert (s.trades, s.wins, s.losses, s.total_pnl, s.turnover) == (0, 0, 0, 0, 0)
    assert s.win_rate is None and s.avg_r is None and s.expectancy_r is None and s.avg_holding_ms is None
    assert s.profit_factor is None and s.profit_factor_note == "no trades"


def test_no_losing_trade_leaves_the_profit_factor_undefined_with_the_reason():
    s = trade_stats([trade(5, 0.5), trade(15, 1.5, closed=2)])
    assert s.profit_factor is None and "no losing trades" in s.profit_factor_note
    assert s.win_rate == 1.0 and s.avg_loss is None and s.payoff_ratio is None
    assert s.expectancy_r == pytest.approx(1.0)  # 1.0 x mean(0.5, 1.5)


def test_one_trade():
    s = trade_stats([trade(-4, -0.4)])
    assert (s.trades, s.wins, s.win_rate, s.profit_factor, s.avg_r) == (1, 0, 0.0, 0.0, -0.4)
    assert r_multiple_stats([trade(-4, -0.4)]).std is None  # a spread needs two


def test_r_multiple_stats_of_the_five_trades():
    r = r_multiple_stats(FIVE)
    # deviations from 0.6: 2.4, -1.6, 1.4, -1.6, -0.6; squares sum 13.2; / 4 = 3.3; std = 1.816590
    assert r.std == pytest.approx(math.sqrt(3.3))
    assert r.sqn == pytest.approx(math.sqrt(5) * 0.6 / math.sqrt(3.3))  # 0.738549
    assert r.median == 0.0 and (r.min, r.max) == (-1.0, 3.0)


def test_group_stats_split_by_direction():
    g = group_stats(FIVE, lambda t: t.side)
    assert list(g) == ["LONG", "SHORT"]
    assert (g["LONG"].trades, g["LONG"].wins, g["LONG"].total_pnl) == (3, 1, 20)  # 30 - 10 + 0
    assert (g["SHORT"].trades, g["SHORT"].wins, g["SHORT"].total_pnl) == (2, 1, 10)  # 20 - 10


def test_a_trade_closed_before_it_opened_is_refused_with_its_id():
    with pytest.raises(ValidationError, match="closed_ms"):
        trade(1, 0.1, opened=10, closed=5, tid="x1")


# --- curve statistics ---------------------------------------------------------------------------

DAILY = EquityCurve.of([0, DAY_MS, 2 * DAY_MS, 3 * DAY_MS], [100.0, 110.0, 99.0, 108.9])  # returns +10%, -10%, +10%


def test_sharpe_sortino_and_volatility_on_a_tiny_daily_curve():
    s = curve_stats(DAILY)
    # r = 0.1, -0.1, 0.1; mean = 0.0333333; deviations 0.0666667, -0.1333333, 0.0666667
    # var (ddof 1) = (0.00444444 + 0.01777778 + 0.00444444) / 2 = 0.01333333; sd = 0.11547005
    # daily grid: 365 periods a year, sqrt(365) = 19.1049732
    assert s.periods == 3 and s.step_ms == DAY_MS and s.periods_per_year == pytest.approx(365)
    assert s.annualised_volatility == pytest.approx(0.11547005 * 19.1049732, rel=1e-6)  # 2.2060
    assert s.sharpe == pytest.approx(0.0333333 / 0.11547005 * 19.1049732, rel=1e-5)  # 5.5151
    # downside deviation over all 3 periods, target 0: sqrt((0 + 0.01 + 0) / 3) = 0.05773503
    assert s.sortino == pytest.approx(0.0333333 / 0.05773503 * 19.1049732, rel=1e-5)  # 11.0303
    assert s.total_return == pytest.approx(0.089)
    # max drawdown: peak 110 -> 99 = 10%, from day 1; still under 110 at the end (day 3): 2 days under water
    assert s.max_drawdown == pytest.approx(0.1)
    assert (s.max_drawdown_peak_ms, s.max_drawdown_trough_ms) == (DAY_MS, 2 * DAY_MS)
    assert s.max_drawdown_duration_ms == 2 * DAY_MS
    # CAGR: 1.089 ** (365 / 3) - 1; Calmar = CAGR / 0.1
    assert s.annualised_return == pytest.approx(1.089 ** (365 / 3) - 1, rel=1e-9)
    assert s.calmar == pytest.approx(s.annualised_return / 0.1)


def test_cagr_of_21_percent_over_two_years_is_10_percent_and_calmar_divides_it_by_the_drawdown():
    s = curve_stats(EquityCurve.of([0, 365 * DAY_MS, 730 * DAY_MS], [100.0, 90.0, 121.0]))
    assert s.annualised_return == pytest.approx(0.1)  # sqrt(1.21) - 1
    assert s.max_drawdown == pytest.approx(0.1)  # 100 -> 90
    assert s.calmar == pytest.approx(1.0)  # 0.1 / 0.1


def test_drawdown_duration_is_the_longest_spell_under_a_peak():
    # 100, 90, 95, 100 | 105, 80, 120: under 100 from day 0 to day 3 (3 days), under 105 from day 4 to 6 (2 days)
    s = curve_stats(EquityCurve.of([k * DAY_MS for k in range(7)], [100, 90, 95, 100, 105, 80, 120]))
    assert s.max_drawdown_duration_ms == 3 * DAY_MS
    assert s.max_drawdown == pytest.approx(1 - 80 / 105)  # 0.238095, the deeper but shorter one
    assert (s.max_drawdown_peak_ms, s.max_drawdown_trough_ms) == (4 * DAY_MS, 5 * DAY_MS)


def test_a_flat_curve_has_no_sharpe_and_says_why():
    s = curve_stats(EquityCurve.of([k * 3_600_000 for k in range(5)], [1000.0] * 5))
    assert s.sharpe is None and s.sortino is None and s.calmar is None
    assert s.max_drawdown == 0 and s.max_drawdown_duration_ms == 0 and s.max_drawdown_peak_ms is None
    assert s.total_return == 0 and s.annualised_return == 0 and s.annualised_volatility == 0
    assert any("Sharpe" in n for n in s.notes) and any("Sortino" in n for n in s.notes)
    s.model_dump_json()  # JSON-able: no inf, no NaN


def test_a_single_point_curve_has_only_its_level():
    s = curve_stats(EquityCurve.of([5], [100.0]))
    assert (s.periods, s.step_ms, s.sharpe, s.annualised_return, s.max_drawdown) == (0, None, None, None, 0.0)


def test_a_very_short_spectacular_curve_gives_no_cagr_instead_of_infinity():
    s = curve_stats(EquityCurve.of([0, 60_000], [100.0, 200.0]))  # +100% in a minute
    assert s.annualised_return is None and s.calmar is None
    assert any("overflows" in n for n in s.notes)


@pytest.mark.parametrize(("times", "equity", "match"), [
    ([0, 0], [1.0, 1.0], "strictly ascending"),
    ([0, 1], [1.0], "2 times but 1"),
    ([], [], "no points"),
    ([0, 1], [1.0, 0.0], "equity must be > 0"),
])
def test_a_malformed_curve_is_refused_with_what_is_wrong(times, equity, match):
    with pytest.raises(ValidationError, match=match):
        EquityCurve.of(times, equity)


# --- exposure, turnover -------------------------------------------------------------------------


def test_exposure_counts_overlapping_trades_once_and_clips_to_the_window():
    ts = [trade(1, 0.1, opened=10, closed=30), trade(1, 0.1, opened=20, closed=40),  # union 10..40 = 30
          trade(1, 0.1, opened=50, closed=60),  # 10
          trade(1, 0.1, opened=90, closed=120),  # clipped to 90..100 = 10
          trade(1, 0.1, opened=-20, closed=5)]  # clipped to 0..5 = 5
    assert exposure(ts, 0, 100) == pytest.approx(0.55)  # (30 + 10 + 10 + 5) / 100
    assert exposure([], 0, 100) == 0
    with pytest.raises(ValueError, match="end_ms"):
        exposure(ts, 100, 100)


def test_performance_turnover_ratio_is_turnover_over_mean_equity():
    p = performance(FIVE, DAILY)
    # turnover 1035; mean equity (100 + 110 + 99 + 108.9) / 4 = 104.475
    assert p.turnover_ratio == pytest.approx(1035 / 104.475)
    assert p.turnover_per_year == pytest.approx(1035 / 104.475 * 365 / 3)
    assert p.exposure == pytest.approx(5 / (3 * DAY_MS))  # trades open 0..1, ..., 0..5 ms: union 0..5


# --- calibration ------------------------------------------------------------------------------


def test_brier_score_and_two_reliability_bins():
    c = calibration([0.1, 0.3, 0.35, 0.8, 0.9], [False, True, False, True, True], bins=2)
    # (0.1-0)^2 + (0.3-1)^2 + (0.35-0)^2 + (0.8-1)^2 + (0.9-1)^2 = 0.01 + 0.49 + 0.1225 + 0.04 + 0.01 = 0.6725
    assert c.brier == pytest.approx(0.6725 / 5)  # 0.1345
    lo, hi = c.bins
    assert (lo.lo, lo.hi, lo.count) == (0.0, 0.5, 3) and (hi.lo, hi.hi, hi.count) == (0.5, 1.0, 2)
    assert lo.mean_confidence == pytest.approx(0.25) and lo.hit_rate == pytest.approx(1 / 3)
    assert hi.mean_confidence == pytest.approx(0.85) and hi.hit_rate == 1.0
    # Murphy: reliability = (3 (0.25 - 1/3)^2 + 2 (0.85 - 1)^2) / 5 = (0.0208333 + 0.045) / 5 = 0.0131667
    assert c.reliability == pytest.approx((3 * (0.25 - 1 / 3) ** 2 + 2 * 0.15**2) / 5)
    assert c.uncertainty == pytest.approx(0.6 * 0.4)


def test_calibration_edges_the_last_bin_holds_one_and_empty_bins_have_none():
    c = calibration([1.0, 0.5], [True, False], bins=4)
    assert [b.count for b in c.bins] == [0, 0, 1, 1]
    assert c.bins[0].hit_rate is None and c.bins[0].mean_confidence is None
    assert calibration([], []).brier is None
    hundred = calibration([0.57, 0.29], [True, True], bins=100).bins
    assert (hundred[28].count, hundred[29].count) == (0, 1)  # 0.29 x 100 = 28.999999999999996: bin [0.29, 0.3)
    assert calibration([0.57], [True], bins=100).bins[57].count == 1  # 0.57 x 100 = 56.99999999999999
    with pytest.raises(ValueError, match="outside"):
        calibration([1.2], [True])
    with pytest.raises(ValueError, match="2 confidences but 1"):
        calibration([0.2, 0.3], [True])


# --- calendar periods ----------------------------------------------------------------------------

MONTHS = EquityCurve.of([ms(2025, 1, 30), ms(2025, 1, 31, 23), ms(2025, 2, 1), ms(2025, 2, 28, 23), ms(2025, 3, 1)],
                        [100.0, 110.0, 99.0, 120.0, 126.0])


def test_monthly_returns_across_month_boundaries_compound_to_the_total():
    pr = period_returns(MONTHS, "M")
    assert [p.label for p in pr] == ["2025-01", "2025-02", "2025-03"]
    assert pr[0].ret == pytest.approx(0.1)  # 110 / 100 (the curve's first point is January's base)
    assert pr[1].ret == pytest.approx(120 / 110 - 1)  # base: January's last equity
    assert pr[2].ret == pytest.approx(0.05)  # 126 / 120
    assert pr[1].start_ms == ms(2025, 2, 1) and pr[1].end_ms == ms(2025, 3, 1)
    assert np.prod([1 + p.ret for p in pr]) == pytest.approx(1.26)


def test_daily_returns_list_a_day_without_points_as_zero():
    c = EquityCurve.of([ms(2025, 3, 1, 5), ms(2025, 3, 3, 5)], [100.0, 90.0])
    pr = period_returns(c, "D")
    assert [(p.label, p.points, p.ret) for p in pr] == [
        ("2025-03-01", 1, 0.0), ("2025-03-02", 0, 0.0), ("2025-03-03", 1, pytest.approx(-0.1))]


def test_period_stats_count_the_trades_closed_in_each_period():
    ts = [trade(5, 0.5, opened=ms(2025, 1, 31), closed=ms(2025, 2, 2)), trade(-3, -0.3, closed=ms(2025, 3, 1, 1))]
    ps = period_stats(ts, MONTHS, "M")
    assert [(p.label, p.trades.trades) for p in ps] == [("2025-01", 0), ("2025-02", 1), ("2025-03", 1)]
    assert ps[1].curve.start_equity == 110 and ps[1].curve.end_equity == 120  # based on January's last point
    assert ps[1].curve.max_drawdown == pytest.approx(0.1)  # 110 -> 99
    q = period_stats(ts, MONTHS, "Q")
    assert [(p.label, p.trades.trades, round(p.ret, 12)) for p in q] == [("2025-Q1", 2, 0.26)]


# --- reshuffled drawdowns -----------------------------------------------------------------------


def test_reshuffled_drawdowns_of_three_trades_take_their_three_possible_values():
    # +100, -50, -50 from 1000: observed 1000 1100 1050 1000 -> 100/1100 = 0.0909;
    # other orders: -50 -50 +100 -> 0.1; -50 +100 -50 -> max(50/1000, 50/1050) = 0.05
    d = reshuffled_drawdowns([100, -50, -50], 1000, n=3000, seed=1)
    assert d.observed == pytest.approx(1 / 11)
    assert d.worst == pytest.approx(0.1) and d.final_equity == 1000
    assert d.q05 == pytest.approx(0.05) and d.q95 == pytest.approx(0.1)
    assert d.share_worse == pytest.approx(1 / 3, abs=0.04)  # only -50 -50 +100 is worse, one order in three


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-500, 500, allow_nan=False), min_size=1, max_size=5), st.integers(0, 10_000))
def test_every_reshuffle_ends_at_the_observed_equity_and_brackets_the_observed_drawdown(pnls, seed):
    paths = reshuffled_paths(pnls, 10_000, n=1500, seed=seed)
    assert np.allclose(paths[:, -1], 10_000 + sum(pnls))
    assert np.all(paths[:, 0] == 10_000)
    d = reshuffled_drawdowns(pnls, 10_000, n=1500, seed=seed)
    # at most 120 orders of 5 trades: 1500 draws miss a given one with probability (119/120)^1500 ~ 4e-6,
    # so the observed order's drawdown lies between the best and the worst reshuffle
    dd = (1 - paths / np.maximum.accumulate(paths, axis=1)).max(axis=1)
    assert dd.min() - 1e-12 <= d.observed <= dd.max() + 1e-12
    assert d.worst == pytest.approx(dd.max())


def test_reshuffles_are_reproducible_with_their_seed_and_refuse_bad_input():
    assert reshuffled_drawdowns([1, -2, 3], 100, n=50, seed=3) == reshuffled_drawdowns([1, -2, 3], 100, n=50, seed=3)
    with pytest.raises(ValueError, match="initial"):
        reshuffled_drawdowns([1], 0)
    with pytest.raises(ValueError, match="position 1"):
        reshuffled_drawdowns([1, float("nan")], 100)
    empty = reshuffled_drawdowns([], 100, n=10)
    assert (empty.observed, empty.worst, empty.final_equity) == (0, 0, 100)


def test_realised_curve_books_each_trade_at_the_first_grid_point_at_or_after_its_close():
    ts = [trade(10, 1, closed=100), trade(-4, -0.4, closed=150), trade(7, 0.7, closed=200), trade(99, 9, closed=301)]
    c = realised_curve(ts, [100, 200, 300], 1000.0)
    # 100: +10 (closed at 100); 200: -4 (150) + 7 (200); 300: nothing (301 is after the last point)
    assert c.equity == (1010.0, 1013.0, 1013.0) and c.time_ms == (100, 200, 300)


def test_year_is_365_days():
    assert YEAR_MS == 365 * DAY_MS


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 40 * DAY_MS), st.floats(1.0, 1e6)), min_size=1, max_size=40),
       st.sampled_from(["D", "M", "Q", "Y"]))
def test_any_positive_curve_gives_finite_json_and_period_returns_that_compound_to_the_total(steps, freq):
    t0 = ms(2024, 12, 30)
    times = t0 + np.cumsum([s for s, _ in steps])
    curve = EquityCurve.of(times, [e for _, e in steps])
    s = curve_stats(curve)
    s.model_dump_json()  # no inf, no NaN anywhere
    assert 0 <= s.max_drawdown < 1 and s.max_drawdown_duration_ms <= s.end_ms - s.start_ms
    pr = period_returns(curve, freq)
    assert np.prod([1 + p.ret for p in pr]) == pytest.approx(1 + s.total_return, rel=1e-9)
    assert sum(p.points for p in pr) == len(curve)
    assert all(a.end_ms == b.start_ms for a, b in pairwise(pr))
