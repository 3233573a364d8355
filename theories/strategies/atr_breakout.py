"""ATR breakout: a close beyond SMA(20) +/- 3 x ATR(20) on more than twice the average volume.

Long when the close is above SMA(20) + 3 ATR(20) and the bar's volume exceeds 2 x the mean of the
20 bars before it; short mirrored. Stop 3 x ATR from the entry. The seed rule names no target;
here the breakout is abandoned when the close falls back through the SMA (`exit_at_sma`, the
channel mid-line, the usual Keltner-style exit), which can be switched off.
Strength measures the close's distance beyond the channel edge, in units of 3 ATR.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from theories.base import PRICE, RATIO, Theory, TheoryContext, TheoryError, TheoryParams, unit
from theories.candles import Candles
from theories.strategies import ta
from theories.strategies.rule import StrategyResult, last_finite, mean_of_previous, plan_label, strength


class AtrBreakoutParams(TheoryParams):
    sma_period: int = Field(20, ge=2, description="Channel mid-line SMA period, bars.")
    atr_period: int = Field(20, ge=2, description="ATR period, bars (Wilder).")
    channel_atr: float = Field(3.0, gt=0, description="Channel half-width in ATRs.")
    volume_period: int = Field(20, ge=2, description="Bars in the volume average (before the signal bar).")
    volume_mult: float = Field(2.0, gt=0, description="Volume must exceed this multiple of its average.")
    stop_atr: float = Field(3.0, gt=0, description="Stop distance in ATRs.")
    exit_at_sma: bool = Field(True, description="Leave when the close crosses back through the SMA.")
    bars: int = Field(200, ge=50, description="Bars read (Wilder warm-up).")


class AtrBreakoutResult(StrategyResult):
    sma: float = unit(PRICE, "Channel mid-line.")
    atr: float = unit(PRICE, "ATR at the last close.")
    upper: float = unit(PRICE, "SMA + channel_atr x ATR.")
    lower: float = unit(PRICE, "SMA - channel_atr x ATR.")
    volume_ratio: float = unit(RATIO, "Last volume / mean of the previous bars.")


def atr_breakout(candles: Candles, params: AtrBreakoutParams | None = None) -> AtrBreakoutResult:
    """The rule as of the last closed candle."""
    p = params or AtrBreakoutParams()
    need = max(p.sma_period, p.atr_period, p.volume_period) + 2
    if len(candles) < need:
        raise TheoryError(f"atr_breakout needs {need} candles, got {len(candles)}")
    h, lo, c = (np.asarray(a, float) for a in (candles.high, candles.low, candles.close))
    sma = last_finite(f"SMA({p.sma_period})", ta.SMA(c, timeperiod=p.sma_period))[0]
    atr = last_finite(f"ATR({p.atr_period})", ta.ATR(h, lo, c, timeperiod=p.atr_period))[0]
    vol_ratio = float(candles.volume[-1]) / mean_of_previous(np.asarray(candles.volume, float), p.volume_period)
    upper, lower = sma + p.channel_atr * atr, sma - p.channel_atr * atr
    close = float(c[-1])
    loud = f"vol>{p.volume_mult:g}x"
    long_conds = {"c>sma+atr": close > upper, loud: vol_ratio > p.volume_mult}
    short_conds = {"c<sma-atr": close < lower, loud: vol_ratio > p.volume_mult}
    vote = 1 if all(long_conds.values()) else -1 if all(short_conds.values()) else 0
    side = short_conds if vote == -1 or (vote == 0 and close < sma) else long_conds
    fired = tuple(name for name, ok in side.items() if ok)
    beyond = close - upper if vote == 1 else lower - close
    return AtrBreakoutResult(
        label=plan_label(vote, len(fired), len(side)),
        vote=vote,
        strength=strength(vote, beyond / (p.channel_atr * atr)) if atr > 0 else 0.0,
        conditions=fired,
        entry=close,
        stop=close - vote * p.stop_atr * atr if vote else None,
        target=None,
        target_is_limit=True,
        trail_atr=None,
        trail_schedule=(),
        min_hold_bars=None,
        max_hold_bars=None,
        exit_long=bool(p.exit_at_sma and close < sma),
        exit_short=bool(p.exit_at_sma and close > sma),
        sma=float(sma),
        atr=float(atr),
        upper=float(upper),
        lower=float(lower),
        volume_ratio=vol_ratio,
    )


def _run(ctx: TheoryContext, params: AtrBreakoutParams) -> AtrBreakoutResult:
    return atr_breakout(ctx.history.tail(params.bars), params)


THEORY = Theory(
    name="atr_breakout",
    description="Close beyond SMA(20) +/- 3 ATR(20) on volume above 2x its average; 3 ATR stop",
    params=AtrBreakoutParams,
    result=AtrBreakoutResult,
    run=_run,
    min_bars=22,
)
