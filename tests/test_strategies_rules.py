"""Each seed rule fires on a series built to trigger it and stays silent on one built not to."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from theories.base import PRICE, TheoryContext, TheoryError, field_unit
from theories.candles import Candles
from theories.strategies import atr_breakout, momentum, rsi_bollinger, vwap_reversion
from theories.strategies.atr_breakout import AtrBreakoutParams
from theories.strategies.momentum import MomentumParams
from theories.strategies.rsi_bollinger import RsiBollingerParams
from theories.strategies.rule import StrategyResult
from theories.timeframes import resample

H = 3_600_000
T0 = 1_700_000_000_000 // (4 * H) * (4 * H)  # on the 4h grid


def make_candles(close, volume=None, *, open_=None, interval=H, symbol="TEST/USDT") -> Candles:
    """Candles from closes: each opens at the previous close, with a 0.1% wick either side."""
    close = np.asarray(close, float)
    o = np.concatenate(([close[0]], close[:-1])) if open_ is None else np.asarray(open_, float)
    v = np.full(len(close), 100.0) if volume is None else np.asarray(volume, float)
    return Candles(
        T0 + np.arange(len(close)) * interval, o, np.maximum(o, close) * 1.001, np.minimum(o, close) * 0.999,
        close, v, interval_ms=interval, symbol=symbol,
    )


def mirrored(c: Candles, pivot: float) -> Candles:
    """The price path reflected about `pivot`: every long setup becomes the matching short one."""
    return Candles(c.time, 2 * pivot - c.open, 2 * pivot - c.low, 2 * pivot - c.high, 2 * pivot - c.close, c.volume,
                   interval_ms=c.interval_ms, symbol=c.symbol)


def ctx_of(c: Candles) -> TheoryContext:
    return TheoryContext(symbol=c.symbol, at_ms=c.last_close_time, candles=c.tail(500), history=c)


def calm(n: int, level: float = 100.0) -> np.ndarray:
    """A quiet oscillation around `level` (RSI near 50, tiny returns)."""
    return level * (1 + 0.002 * np.sin(np.arange(n) / 2.0))


# --- RSI + Bollinger ------------------------------------------------------------------------------

def rsi_bb_series(drop: bool) -> Candles:
    p = list(calm(200))
    for _ in range(8 if drop else 0):
        p.append(p[-1] * 0.988)
    return make_candles(p)


def test_rsi_bollinger_goes_long_on_an_oversold_close_below_the_lower_band():
    r = rsi_bollinger.THEORY(ctx_of(rsi_bb_series(drop=True)))
    assert r.vote == 1
    assert r.rsi < 30 and r.entry < r.bb_lower
    assert r.stop == pytest.approx(r.entry - 2 * r.atr)
    assert r.target == pytest.approx(r.bb_upper) and not r.target_is_limit
    assert 0.5 <= r.strength <= 1.0
    assert {"rsi<30", "c<bb_lo", "var ok"} <= set(r.conditions)


def test_rsi_bollinger_is_silent_on_a_quiet_market():
    r = rsi_bollinger.THEORY(ctx_of(rsi_bb_series(drop=False)))
    assert r.vote == 0 and r.strength == 0 and r.stop is None


def test_rsi_bollinger_skips_the_setup_when_var_is_above_its_threshold():
    r = rsi_bollinger.THEORY(ctx_of(rsi_bb_series(drop=True)), {"var_max": 0.001})
    assert r.vote == 0
    assert r.var > 0.001
    assert any(code.startswith("var ") and ">" in code for code in r.conditions)
    assert "VaR" in r.label


def test_rsi_bollinger_is_long_only_unless_shorts_are_enabled():
    up = mirrored(rsi_bb_series(drop=True), 100.0)
    assert rsi_bollinger.THEORY(ctx_of(up)).vote == 0
    short = rsi_bollinger.THEORY(ctx_of(up), {"shorts": True})
    assert short.vote == -1 and short.stop > short.entry


def test_rsi_bollinger_raises_the_exit_flag_when_overbought():
    up = mirrored(rsi_bb_series(drop=True), 100.0)
    assert rsi_bollinger.THEORY(ctx_of(up)).exit_long


# --- VWAP mean reversion ----------------------------------------------------------------------------

def vwap_series(up_bar: bool) -> Candles:
    """4h bars: a thin-volume rise, a heavy-volume plateau, then a dip well below the VWAP band."""
    close = [100.0] * 20 + list(np.linspace(100, 150, 40)) + [150.0] * 10
    volume = [1.0] * 60 + [1000.0] * 10
    opens = list(np.concatenate(([100.0], close[:-1])))
    close.append(144.0)
    opens.append(143.0 if up_bar else 145.0)
    volume.append(1000.0)
    return make_candles(close, volume, open_=opens, interval=4 * H)


def test_vwap_reversion_buys_an_up_close_below_the_band_in_an_uptrend():
    r = vwap_reversion.THEORY(ctx_of(vwap_series(up_bar=True)))
    assert r.vote == 1
    assert r.z < -2 and r.entry > r.ema
    assert r.target == pytest.approx(r.vwap)
    assert r.stop == pytest.approx(r.entry * 0.97)
    assert r.conditions == ("c<vwap-band", "c>ema", "up bar")


def test_vwap_reversion_waits_for_a_bar_that_closes_up():
    r = vwap_reversion.THEORY(ctx_of(vwap_series(up_bar=False)))
    assert r.vote == 0 and "up bar" not in r.conditions


def test_vwap_reversion_mirror_image_is_a_short():
    r = vwap_reversion.THEORY(ctx_of(mirrored(vwap_series(up_bar=True), 200.0)))
    assert r.vote == -1
    assert r.stop == pytest.approx(r.entry * 1.03)


def test_vwap_reversion_runs_on_complete_4h_bars_built_from_hourly_candles():
    four_hour = vwap_series(up_bar=True)
    hourly = []  # each 4h bar as four hourly candles with the same open, extremes and close
    for o, hi, lo, c, v in zip(four_hour.open, four_hour.high, four_hour.low, four_hour.close, four_hour.volume,
                               strict=True):
        hourly += [(o, hi, o, o, v / 4), (o, o, lo, o, v / 4), (o, o, o, o, v / 4), (o, max(o, c), min(o, c), c, v / 4)]
    o_, h_, l_, c_, v_ = (np.array(col) for col in zip(*hourly, strict=True))
    h_ = np.maximum.reduce([h_, o_, c_])
    l_ = np.minimum.reduce([l_, o_, c_])
    hc = Candles(T0 + np.arange(len(c_)) * H, o_, h_, l_, c_, v_, interval_ms=H, symbol="TEST/USDT")
    assert vwap_reversion.THEORY(ctx_of(hc)).vote == 1
    # one hour before the last 4h bar completes, that bar does not exist yet: no setup
    early = hc.closed_by(hc.last_close_time - H)
    assert vwap_reversion.THEORY(ctx_of(early)).vote == 0


# --- momentum --------------------------------------------------------------------------------------

def momentum_series(spike: bool, pullback: int = 10) -> Candles:
    p = list(100 * np.exp(np.arange(300) * 0.004))
    for _ in range(pullback):
        p.append(p[-1] * 0.995)
    for _ in range(3):
        p.append(p[-1] * 1.012)
    v = np.full(len(p), 100.0)
    if spike:
        v[-1] = 400.0
    return make_candles(p, v)


def test_momentum_goes_long_when_every_confirmation_agrees():
    r = momentum.THEORY(ctx_of(momentum_series(spike=True)))
    assert r.vote == 1
    assert len(r.conditions) == 6
    assert r.stop == pytest.approx(r.entry - 1.5 * r.atr)
    assert r.trail_atr == pytest.approx(r.atr)
    assert r.trail_schedule == ((1.0, 1.2), (2.0, 1.0), (3.0, 0.8))
    assert r.max_hold_bars == 72


def test_momentum_needs_the_volume_confirmation():
    r = momentum.THEORY(ctx_of(momentum_series(spike=False)))
    assert r.vote == 0 and "vol>1.5x" not in r.conditions and len(r.conditions) == 5


def test_momentum_needs_an_ema_cross():
    r = momentum.THEORY(ctx_of(momentum_series(spike=True, pullback=4)))
    assert r.vote == 0 and "ema cross up" not in r.conditions


def test_momentum_needs_the_higher_timeframe_to_agree():
    c = momentum_series(spike=True)
    falling = make_candles(np.linspace(200, 100, 80), interval=4 * H)
    r = momentum.momentum(c.tail(300), falling, MomentumParams())
    assert r.vote == 0 and r.higher_trend == -1 and "htf up" not in r.conditions
    agreeing = momentum.momentum(c.tail(300), resample(c, 4 * H), MomentumParams())
    assert agreeing.vote == 1 and agreeing.higher_trend == 1


def test_momentum_mirror_image_is_a_short():
    c = momentum_series(spike=True)
    r = momentum.THEORY(ctx_of(mirrored(c, float(c.close.max()) + 50.0)))
    assert r.vote == -1 and r.stop > r.entry


# --- ATR breakout ----------------------------------------------------------------------------------

def breakout_series(volume_mult: float, jump: float = 1.04) -> Candles:
    p = list(calm(100))
    p.append(p[-1] * jump)
    v = np.full(len(p), 100.0)
    v[-1] = 100.0 * volume_mult
    return make_candles(p, v)


def test_atr_breakout_goes_long_on_a_loud_close_beyond_the_channel():
    r = atr_breakout.THEORY(ctx_of(breakout_series(3.0)))
    assert r.vote == 1
    assert r.entry > r.upper == pytest.approx(r.sma + 3 * r.atr)
    assert r.stop == pytest.approx(r.entry - 3 * r.atr)
    assert r.volume_ratio == pytest.approx(3.0)


def test_atr_breakout_ignores_a_quiet_breakout():
    r = atr_breakout.THEORY(ctx_of(breakout_series(1.5)))
    assert r.vote == 0 and r.conditions == ("c>sma+atr",)


def test_atr_breakout_ignores_loud_volume_inside_the_channel():
    r = atr_breakout.THEORY(ctx_of(breakout_series(3.0, jump=1.001)))
    assert r.vote == 0


def test_atr_breakout_mirror_image_is_a_short_and_the_sma_exit_can_be_switched_off():
    down = mirrored(breakout_series(3.0), 150.0)
    r = atr_breakout.THEORY(ctx_of(down))
    assert r.vote == -1 and r.stop == pytest.approx(r.entry + 3 * r.atr)
    assert not r.exit_short  # still below the SMA
    assert not atr_breakout.THEORY(ctx_of(down), AtrBreakoutParams(exit_at_sma=False)).exit_long


# --- the shared contract ---------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("theory", "series"),
    [
        (rsi_bollinger.THEORY, lambda: rsi_bb_series(True)),
        (vwap_reversion.THEORY, lambda: vwap_series(True)),
        (momentum.THEORY, lambda: momentum_series(True)),
        (atr_breakout.THEORY, lambda: breakout_series(3.0)),
    ],
)
def test_every_strategy_keeps_the_shared_result_contract(theory, series):
    r = theory(ctx_of(series()))
    assert isinstance(r, StrategyResult) and r.vote != 0
    assert len(r.summary()) <= 120
    for name in ("entry", "stop", "target", "trail_atr"):
        assert field_unit(type(r), name) == PRICE  # rebased when anonymised
    # the vote is the one the rule gives on the same candles as of their last close
    assert r.entry == pytest.approx(float(series().close[-1]))


def test_a_vote_outside_minus_one_to_one_is_rejected():
    r = atr_breakout.THEORY(ctx_of(breakout_series(3.0)))
    with pytest.raises(ValidationError, match="vote"):
        type(r).model_validate({**r.model_dump(), "vote": 2})


def test_too_little_history_is_a_theory_error_not_a_guess():
    short = make_candles(calm(40))
    for theory in (rsi_bollinger.THEORY, momentum.THEORY, vwap_reversion.THEORY):
        with pytest.raises(TheoryError):
            theory(ctx_of(short))


def test_parameters_are_validated():
    with pytest.raises(ValidationError):
        RsiBollingerParams(oversold=80, overbought=70)
    with pytest.raises(ValidationError):
        MomentumParams(fast=30, slow=21)
    with pytest.raises(ValidationError):
        MomentumParams(trail_schedule=((2.0, 1.0), (1.0, 1.2)))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 100_000), jump=st.floats(-0.08, 0.08), loud=st.floats(0.5, 4.0))
def test_atr_breakout_votes_the_opposite_way_on_the_mirror_image(seed, jump, loud):
    rng = np.random.default_rng(seed)
    p = list(100 * np.exp(np.cumsum(rng.normal(0, 0.004, 80))))
    p.append(p[-1] * (1 + jump))
    v = np.full(len(p), 100.0)
    v[-1] = 100.0 * loud
    c = make_candles(p, v)
    up, down = atr_breakout.THEORY(ctx_of(c)), atr_breakout.THEORY(ctx_of(mirrored(c, 300.0)))
    assert down.vote == -up.vote
    assert down.strength == pytest.approx(up.strength)


def test_mean_of_previous_is_numpys_mean_to_the_bit_and_last_finite_refuses_warm_up_values(shared_data):
    from agent.market import load_candle_file
    from theories.strategies.rule import last_finite, mean_of_previous

    volume = load_candle_file(shared_data / "candles" / "binance-spot-1h" / "SOL_USDT.csv.gz").volume[-3000:]
    for end in range(30, len(volume), 37):
        for n in (20, 7):
            assert mean_of_previous(volume[:end], n) == float(np.mean(volume[end - n - 1 : end - 1]))
    assert last_finite("x", np.array([np.nan, 1.0, 2.0]), 2).tolist() == [1.0, 2.0]
    for bad in (np.nan, np.inf, -np.inf):
        with pytest.raises(TheoryError, match="warm-up"):
            last_finite("x", np.array([1.0, bad, 2.0]), 2)
    with pytest.raises(TheoryError, match="warm-up"):
        last_finite("x", np.array([1.0]), 2)


def test_vwap_reversion_is_worked_out_once_per_primary_bar_with_a_cache_and_answers_the_same(shared_data):
    from agent.market import load_candle_file
    from theories.base import FitCache

    history = load_candle_file(shared_data / "candles" / "binance-spot-1h" / "BTC_USDT.csv.gz").tail(3000)
    cache = FitCache()
    start = (history.last_close_time - 48 * H) // (4 * H) * (4 * H)
    for at in range(start, start + 48 * H, H):
        plain = TheoryContext(symbol="BTC/USDT", at_ms=at, candles=history.closed_by(at).tail(500),
                              history=history.closed_by(at))
        cached = TheoryContext(**{**plain.__dict__, "cache": cache})
        assert vwap_reversion.THEORY(cached) == vwap_reversion.THEORY(plain)
    assert cache.misses == 12 and cache.hits == 36  # a new 4h bar every 4 hours
