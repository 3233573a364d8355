"""Sizing: fractional Kelly, then the caps (each reported with before and after), then the lot rounding."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from risk.config import SizingConfig
from risk.inputs import Instrument
from risk.rules.base import NotionalCap
from risk.sizing import bracket, round_to_lot, size_trade

ANY_LOT = Instrument()
NO_CAPS = SizingConfig(max_risk_per_trade=1.0, max_position_notional=10, max_open_exposure=10, cash_reserve=0,
                       min_position_notional=0)


def size(cfg=NO_CAPS, instrument=ANY_LOT, **kw):
    args = dict(p=0.45, entry=100.0, stop=90.0, target=120.0, equity=10_000.0, cash=1e9, open_exposure=0.0)
    args.update(kw)
    return size_trade(cfg=cfg, instrument=instrument, **args)


def codes(s):
    return [r.code for r in s.reasons]


def test_quarter_kelly_risk_and_quantity_known_answer():
    s = size()  # p 0.45, R 2: f* 0.175, quarter 0.04375 of 10 000 = 437.5 at risk; 10 per unit
    assert s.kelly_fraction == pytest.approx(0.175)
    assert s.risk_amount == pytest.approx(437.5)
    assert s.quantity == pytest.approx(43.75)
    assert s.notional == pytest.approx(4375.0)


def test_no_trade_without_edge():
    s = size(p=0.3)  # R 2: break-even 1/3
    assert s.quantity == 0 and [r.code for r in s.refusals] == ["no_edge"]


def test_fees_lower_reward_risk_and_add_to_the_loss():
    b = bracket(100.0, 90.0, 120.0, 0.001)
    assert b.loss_per_unit == pytest.approx(10 + 0.19)
    assert b.gain_per_unit == pytest.approx(20 - 0.22)
    cfg = NO_CAPS.model_copy(update={"fee_rate": 0.001})
    s = size(cfg=cfg)
    assert s.reward_risk == pytest.approx(19.78 / 10.19)
    assert s.risk_amount == pytest.approx(s.quantity * 10.19)


def test_risk_per_trade_cap_binds_and_is_reported():
    cfg = NO_CAPS.model_copy(update={"max_risk_per_trade": 0.02})
    s = size(cfg=cfg)
    assert s.risk_amount == pytest.approx(200.0)
    cap = next(r for r in s.reasons if r.code == "risk_per_trade_cap")
    assert (cap.before, cap.after, cap.limit) == (pytest.approx(437.5), pytest.approx(200.0), pytest.approx(200.0))


@pytest.mark.parametrize(
    ("update", "kw", "code", "notional"),
    [
        ({"max_position_notional": 0.25}, {}, "position_notional_cap", 2500.0),
        ({"max_open_exposure": 0.5}, {"open_exposure": 3000.0}, "open_exposure_cap", 2000.0),
        ({"cash_reserve": 0.2}, {"cash": 3000.0}, "cash_reserve", 1000.0),
    ],
)
def test_each_notional_cap_binds_and_is_reported(update, kw, code, notional):
    s = size(cfg=NO_CAPS.model_copy(update=update), **kw)
    assert s.notional == pytest.approx(notional)
    r = next(r for r in s.reasons if r.code == code)
    assert r.before == pytest.approx(4375.0) and r.after == pytest.approx(notional)


def test_rule_cap_binds():
    s = size(caps=(NotionalCap("universe", "tier_position_cap", 800.0, "tier"),))
    assert s.notional == pytest.approx(800.0) and "tier_position_cap" in codes(s)


def test_cap_with_no_room_refuses():
    s = size(open_exposure=6000.0, cfg=NO_CAPS.model_copy(update={"max_open_exposure": 0.5}))
    assert [r.code for r in s.refusals] == ["zero_quantity"]


def test_lot_rounding_goes_down_and_is_reported():
    s = size(instrument=Instrument(lot_step=0.5))
    assert s.quantity == 43.5 and s.risk_amount == pytest.approx(435.0)
    r = next(r for r in s.reasons if r.code == "lot_rounding")
    assert r.before == pytest.approx(43.75) and r.after == 43.5


@pytest.mark.parametrize(
    ("instrument", "cfg_update", "code"),
    [
        (Instrument(min_quantity=50), {}, "below_exchange_min_quantity"),
        (Instrument(min_notional=5000), {}, "below_exchange_min_notional"),
        (Instrument(), {"min_position_notional": 5000}, "below_min_position"),
    ],
)
def test_below_minimums_no_trade(instrument, cfg_update, code):
    s = size(instrument=instrument, cfg=NO_CAPS.model_copy(update=cfg_update))
    assert [r.code for r in s.refusals] == [code] and s.quantity == 0


def test_at_exactly_the_minimum_position_trades():
    s = size(cfg=NO_CAPS.model_copy(update={"min_position_notional": 4375.0}))
    assert not s.refusals and s.notional == pytest.approx(4375.0)


@settings(max_examples=1000, deadline=None)
@given(st.floats(1e-6, 1e6), st.sampled_from([0.0, 1e-8, 1e-5, 0.001, 0.01, 0.1, 1.0, 0.3, 7.0]))
def test_rounding_to_the_lot_never_increases_quantity(q, step):
    r = round_to_lot(q, step)
    assert 0 <= r <= q
    if step:
        assert q - r < step * (1 + 1e-9)
        lots = r / step
        assert abs(lots - round(lots)) <= 1e-9 * max(1.0, lots)  # a whole number of lots


@settings(max_examples=1000, deadline=None)
@given(
    p=st.floats(0.0, 1.0), entry=st.floats(0.01, 1e5), stop_frac=st.floats(0.001, 0.5), rr=st.floats(0.2, 8),
    equity=st.floats(100, 1e7), cash_frac=st.floats(0, 2), open_frac=st.floats(0, 1),
    fee=st.sampled_from([0.0, 0.0005, 0.001]), step=st.sampled_from([0.0, 1e-5, 0.001, 1.0]),
)
def test_sized_trade_never_breaks_a_cap(p, entry, stop_frac, rr, equity, cash_frac, open_frac, fee, step):
    cfg = SizingConfig(fee_rate=fee, min_position_notional=0)
    stop = entry * (1 - stop_frac)
    target = entry + rr * (entry - stop)
    s = size_trade(p=p, entry=entry, stop=stop, target=target, equity=equity, cash=cash_frac * equity,
                   open_exposure=open_frac * equity, cfg=cfg, instrument=Instrument(lot_step=step))
    if s.refusals:
        assert s.quantity == 0
        return
    tol = 1 + 1e-9
    b = bracket(entry, stop, target, fee)
    assert s.risk_amount == pytest.approx(s.quantity * b.loss_per_unit)
    assert s.risk_amount <= cfg.max_risk_per_trade * equity * tol
    assert s.notional <= cfg.max_position_notional * equity * tol
    assert open_frac * equity + s.notional <= cfg.max_open_exposure * equity * tol
    assert cash_frac * equity - s.notional >= cfg.cash_reserve * equity - 1e-9 * equity
