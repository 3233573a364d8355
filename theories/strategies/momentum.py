"""Momentum: EMA 9/21 cross confirmed by RSI, volume, ADX, MACD and the higher timeframe.

Long when, at the last close: EMA(9) crossed above EMA(21) on one of the last `cross_within` bars
and is still above it; RSI(14) > 55; volume > 1.5 x the mean of the 20 bars before it; ADX(14) >
25; the MACD(12, 26, 9) histogram rose on the bar; and the higher timeframe (`higher_factor` x the
candle interval, 4h for 1h candles, complete bars only) agrees: its EMA(9) is above its EMA(21).
Short mirrored (RSI < 45, histogram falling, higher EMA(9) below EMA(21)).
Plan: initial stop 1.5 x ATR(14); trailing stop tightening to 1.2, 1.0, 0.8 ATR behind the best
price once the trade is 1, 2, 3 x its initial risk in profit; time stop 72 h; no fixed target.
Strength measures ADX above 25, in units of 25 ADX points.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field, model_validator

from theories.base import PRICE, RATIO, Theory, TheoryContext, TheoryError, TheoryParams, unit
from theories.candles import Candles
from theories.strategies import ta
from theories.strategies.rule import StrategyResult, decide, last_finite, mean_of_previous, plan_label, strength
from theories.timeframes import HOUR_MS, complete_bars


class MomentumParams(TheoryParams):
    fast: int = Field(9, ge=2, description="Fast EMA span, bars.")
    slow: int = Field(21, ge=3, description="Slow EMA span, bars.")
    cross_within: int = Field(3, ge=1, description="The cross must have happened on one of the last this many bars.")
    rsi_period: int = Field(14, ge=2, description="RSI period, bars.")
    rsi_long: float = Field(55.0, gt=0, lt=100, description="Long needs RSI above this.")
    rsi_short: float = Field(45.0, gt=0, lt=100, description="Short needs RSI below this.")
    volume_period: int = Field(20, ge=2, description="Bars in the volume average (before the signal bar).")
    volume_mult: float = Field(1.5, gt=0, description="Volume must exceed this multiple of its average.")
    adx_period: int = Field(14, ge=2, description="ADX period, bars.")
    adx_min: float = Field(25.0, gt=0, lt=100, description="ADX must exceed this (a trending market).")
    macd_fast: int = Field(12, ge=2)
    macd_slow: int = Field(26, ge=3)
    macd_signal: int = Field(9, ge=2)
    higher_factor: int = Field(4, ge=2, description="Higher timeframe = this x the candle interval (4h for 1h).")
    atr_period: int = Field(14, ge=2, description="ATR period for stops, bars.")
    stop_atr: float = Field(1.5, gt=0, description="Initial stop distance in ATRs.")
    trail_schedule: tuple[tuple[float, float], ...] = Field(
        ((1.0, 1.2), (2.0, 1.0), (3.0, 0.8)),
        description="(profit in R, ATR multiple): past each profit, trail that many ATRs behind the best price.",
    )
    time_stop_hours: float = Field(72.0, gt=0, description="Leave after this many hours.")
    bars: int = Field(300, ge=60, description="Bars read (indicator warm-up).")

    @model_validator(mode="after")
    def _consistent(self) -> MomentumParams:
        if not self.fast < self.slow:
            raise ValueError(f"fast EMA {self.fast} must be shorter than slow EMA {self.slow}")
        if not self.macd_fast < self.macd_slow:
            raise ValueError("MACD fast period must be shorter than its slow period")
        if not self.rsi_short <= self.rsi_long:
            raise ValueError("rsi_short must not exceed rsi_long")
        steps = [s for s, _ in self.trail_schedule]
        if steps != sorted(steps) or any(s <= 0 or m <= 0 for s, m in self.trail_schedule):
            raise ValueError("trail_schedule needs positive, increasing profit steps and positive ATR multiples")
        return self


class MomentumResult(StrategyResult):
    ema_fast: float = unit(PRICE, "Fast EMA at the last close.")
    ema_slow: float = unit(PRICE, "Slow EMA at the last close.")
    rsi: float = unit(RATIO, "RSI, 0-100.")
    adx: float = unit(RATIO, "ADX, 0-100.")
    volume_ratio: float = unit(RATIO, "Last volume / mean of the previous bars.")
    macd_hist: float = unit(PRICE, "MACD histogram at the last close.")
    higher_trend: int = unit(RATIO, "+1 higher-timeframe EMA fast above slow, -1 below, 0 equal.")
    atr: float = unit(PRICE, "ATR at the last close.")


def _crossed(diff: np.ndarray, within: int, sign: int) -> bool:
    """`diff` (fast - slow) is on the `sign` side now and was not, at some point in the last `within` bars."""
    recent = diff[-(within + 1) :]
    return bool(sign * recent[-1] > 0 and (sign * recent[:-1] <= 0).any())


def momentum(candles: Candles, higher: Candles, params: MomentumParams | None = None) -> MomentumResult:
    """The rule as of the last closed candle; `higher` holds the complete higher-timeframe bars."""
    p = params or MomentumParams()
    need = max(p.slow + p.cross_within, p.macd_slow + p.macd_signal, 2 * p.adx_period, p.volume_period) + 2
    if len(candles) < need:
        raise TheoryError(f"momentum needs {need} candles, got {len(candles)}")
    if len(higher) < p.slow + 1:
        raise TheoryError(f"momentum needs {p.slow + 1} complete higher-timeframe bars, got {len(higher)}")
    h, lo, c = (np.asarray(a, float) for a in (candles.high, candles.low, candles.close))
    fast, slow = ta.EMA(c, timeperiod=p.fast), ta.EMA(c, timeperiod=p.slow)
    k = p.cross_within + 1  # the spread is read over the last k bars only
    diff = last_finite("EMA spread", fast[-k:] - slow[-k:], k)
    rsi = last_finite("RSI", ta.RSI(c, timeperiod=p.rsi_period))[0]
    adx = last_finite("ADX", ta.ADX(h, lo, c, timeperiod=p.adx_period))[0]
    _, _, hist = ta.MACD(c, fastperiod=p.macd_fast, slowperiod=p.macd_slow, signalperiod=p.macd_signal)
    hist_prev, hist_now = last_finite("MACD histogram", hist, 2)
    atr = last_finite("ATR", ta.ATR(h, lo, c, timeperiod=p.atr_period))[0]
    vol_ratio = float(candles.volume[-1]) / mean_of_previous(np.asarray(candles.volume, float), p.volume_period)
    hc = np.asarray(higher.close, float)
    h_spread = ta.EMA(hc, timeperiod=p.fast)[-1:] - ta.EMA(hc, timeperiod=p.slow)[-1:]
    h_diff = last_finite("higher-timeframe EMA spread", h_spread)[0]
    higher_trend = int(np.sign(h_diff))

    shared = {f"vol>{p.volume_mult:g}x": vol_ratio > p.volume_mult, f"adx>{p.adx_min:g}": adx > p.adx_min}
    long_conds = {
        "ema cross up": _crossed(diff, p.cross_within, 1), f"rsi>{p.rsi_long:g}": rsi > p.rsi_long, **shared,
        "macd_h up": hist_now > hist_prev, "htf up": higher_trend > 0,
    }
    short_conds = {
        "ema cross dn": _crossed(diff, p.cross_within, -1), f"rsi<{p.rsi_short:g}": rsi < p.rsi_short, **shared,
        "macd_h dn": hist_now < hist_prev, "htf dn": higher_trend < 0,
    }
    vote, fired, total = decide(long_conds, short_conds)
    close = float(c[-1])
    return MomentumResult(
        label=plan_label(vote, len(fired), total),
        vote=vote,
        strength=strength(vote, (adx - p.adx_min) / p.adx_min),
        conditions=fired,
        entry=close,
        stop=close - vote * p.stop_atr * atr if vote else None,
        target=None,
        target_is_limit=True,
        trail_atr=float(atr) if vote else None,
        trail_schedule=p.trail_schedule if vote else (),
        min_hold_bars=None,
        max_hold_bars=max(1, round(p.time_stop_hours * HOUR_MS / candles.interval_ms)),
        exit_long=False,
        exit_short=False,
        ema_fast=float(fast[-1]),
        ema_slow=float(slow[-1]),
        rsi=float(rsi),
        adx=float(adx),
        volume_ratio=vol_ratio,
        macd_hist=float(hist_now),
        higher_trend=higher_trend,
        atr=float(atr),
    )


def _run(ctx: TheoryContext, params: MomentumParams) -> MomentumResult:
    candles = ctx.history.tail(params.bars)
    higher = complete_bars(ctx.history, params.higher_factor * candles.interval_ms, ctx.at_ms, 4 * params.slow)
    return momentum(candles, higher, params)


THEORY = Theory(
    name="momentum",
    description="EMA 9/21 cross with RSI, volume, ADX, rising MACD histogram and higher-timeframe agreement",
    params=MomentumParams,
    result=MomentumResult,
    run=_run,
    min_bars=60,
)
