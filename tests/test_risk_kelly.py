"""Kelly fraction of a bracket, and the win probability it is fed (posterior mean, capped by confidence)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from risk.config import SizingConfig
from risk.inputs import TradeHistory, WinCount
from risk.kelly import kelly_fraction, win_probability


def test_kelly_known_answer_p045_r2_is_0175():
    assert kelly_fraction(0.45, 2.0) == pytest.approx(0.175, abs=1e-15)


@pytest.mark.parametrize(("p", "r", "f"), [(0.5, 1.0, 0.0), (0.6, 1.0, 0.2), (0.4, 1.5, 0.0), (0.25, 4.0, 0.0625)])
def test_kelly_known_answers(p, r, f):
    assert kelly_fraction(p, r) == pytest.approx(f, abs=1e-12)


def test_kelly_is_zero_at_break_even_win_rate():
    for r in (0.5, 1.5, 2.0, 3.7):
        assert kelly_fraction(1.0 / (1.0 + r), r) == pytest.approx(0.0, abs=1e-12)


def test_kelly_rejects_impossible_inputs():
    with pytest.raises(ValueError, match="win probability"):
        kelly_fraction(1.2, 2.0)
    with pytest.raises(ValueError, match="reward:risk"):
        kelly_fraction(0.5, 0.0)


@settings(max_examples=500, deadline=None)
@given(st.floats(0.01, 0.99), st.floats(0.1, 10), st.floats(0.1, 10))
def test_kelly_maximises_expected_log_growth(p, r, _):
    f = kelly_fraction(p, r)
    if f <= 0 or f >= 1:
        return

    def growth(x: float) -> float:
        return p * math.log1p(x * r) + (1 - p) * math.log1p(-x)

    g = growth(f)
    for x in (f * 0.9, f * 1.1 if f * 1.1 < 1 else (f + 1) / 2):
        assert g >= growth(x) - 1e-12


def test_posterior_mean_with_uniform_prior_is_laplace_rule():
    cfg = SizingConfig(prior_wins=1, prior_losses=1)
    wp = win_probability(TradeHistory(variant=WinCount(wins=7, losses=3)), 1.0, cfg)
    assert wp.posterior_mean == pytest.approx(8 / 12)
    assert wp.source == "variant" and wp.trades == 10


def test_short_history_stays_near_the_prior():
    cfg = SizingConfig()  # Beta(4, 6): prior mean 0.4
    two_wins = win_probability(TradeHistory(variant=WinCount(wins=2, losses=0)), 1.0, cfg)
    assert two_wins.p == pytest.approx(6 / 12)  # not the raw 100%


def test_confidence_only_lowers_p():
    cfg = SizingConfig()
    h = TradeHistory(variant=WinCount(wins=60, losses=40))
    mean = win_probability(h, 1.0, cfg).p
    assert win_probability(h, 0.99, cfg).p == pytest.approx(mean)  # high confidence does not raise p
    low = win_probability(h, 0.3, cfg)
    assert low.p == 0.3 and low.confidence_binds


def test_symbol_slice_refines_p_only_with_enough_trades():
    cfg = SizingConfig(min_slice_trades=30, slice_prior_strength=20)
    variant = WinCount(wins=46, losses=54)  # with Beta(4, 6): mean 50 / 110
    few = TradeHistory(variant=variant, symbol=WinCount(wins=29, losses=0))
    assert win_probability(few, 1.0, cfg).source == "variant"
    many = TradeHistory(variant=variant, symbol=WinCount(wins=20, losses=10))
    wp = win_probability(many, 1.0, cfg)
    m = 50 / 110
    assert wp.source == "symbol"
    assert wp.p == pytest.approx((20 * m + 20) / (20 + 30))


def test_regime_slice_used_when_symbol_slice_is_short():
    cfg = SizingConfig(min_slice_trades=30)
    h = TradeHistory(variant=WinCount(wins=50, losses=50), symbol=WinCount(wins=5, losses=5),
                     regime=WinCount(wins=10, losses=30))
    wp = win_probability(h, 1.0, cfg)
    assert wp.source == "regime" and wp.trades == 40


@settings(max_examples=500, deadline=None)
@given(st.integers(0, 500), st.integers(0, 500), st.floats(0, 1))
def test_p_never_exceeds_confidence_nor_posterior_mean(w, losses, conf):
    wp = win_probability(TradeHistory(variant=WinCount(wins=w, losses=losses)), conf, SizingConfig())
    assert wp.p <= conf and wp.p <= wp.posterior_mean and 0 < wp.posterior_mean < 1
