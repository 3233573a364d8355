"""RSI + Bollinger mean reversion with a historical-VaR filter.

Long when RSI(14) < 30 and the close is below the lower Bollinger band (SMA 20 +/- 2 population
sd, TA-Lib BBANDS); the exit signal is RSI > 70 or a close above the upper band. The whole rule is
skipped when the 95% one-bar historical VaR of simple close-to-close returns over the last
`var_lookback` bars (the loss not exceeded in 95% of bars: minus the 5% empirical quantile) is
above `var_max`: mean reversion is not traded into a volatility shock. Stop 2 x ATR(14) from the
entry. The seed rule is long only; `shorts=True` adds the mirror (RSI > 70 above the upper band,
exit at RSI < 30 or below the lower band). The upper band is reported as the indicative target:
the rule exits on its exit signal at a close, not on a resting order.
Strength measures how far RSI is below 30 (above 70), in units of 15 RSI points.
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import Field, model_validator

from theories.base import FRACTION, PRICE, RATIO, Theory, TheoryContext, TheoryError, TheoryParams, unit
from theories.candles import Candles
from theories.strategies import ta
from theories.strategies.rule import StrategyResult, last_finite, plan_label, strength


class RsiBollingerParams(TheoryParams):
    rsi_period: int = Field(14, ge=2, description="RSI period, bars (Wilder).")
    oversold: float = Field(30.0, gt=0, lt=100, description="Long below this RSI.")
    overbought: float = Field(70.0, gt=0, lt=100, description="Exit a long (or short, if enabled) above this RSI.")
    bb_period: int = Field(20, ge=2, description="Bollinger SMA period, bars.")
    bb_k: float = Field(2.0, gt=0, description="Bollinger band half-width in population standard deviations.")
    var_lookback: int = Field(100, ge=20, description="Returns in the historical VaR estimate.")
    var_confidence: float = Field(0.95, gt=0.5, lt=1, description="VaR confidence level.")
    var_max: float = Field(
        0.03, gt=0, lt=1, description="Skip the rule when one-bar VaR exceeds this loss fraction (0.03 = 3% per bar)."
    )
    atr_period: int = Field(14, ge=2, description="ATR period for the stop, bars (Wilder).")
    stop_atr: float = Field(2.0, gt=0, description="Stop distance in ATRs.")
    shorts: bool = Field(False, description="Also trade the mirror image (the seed rule is long only).")
    bars: int = Field(300, ge=50, description="Bars read (Wilder warm-up).")

    @model_validator(mode="after")
    def _thresholds_ordered(self) -> RsiBollingerParams:
        if not self.oversold < self.overbought:
            raise ValueError(f"oversold {self.oversold} must be below overbought {self.overbought}")
        return self


class RsiBollingerResult(StrategyResult):
    rsi: float = unit(RATIO, "RSI at the last close, 0-100.")
    bb_lower: float = unit(PRICE, "Lower Bollinger band.")
    bb_upper: float = unit(PRICE, "Upper Bollinger band.")
    var: float = unit(FRACTION, "One-bar historical VaR of returns at the configured confidence (a loss, > 0).")
    atr: float = unit(PRICE, "ATR at the last close.")


def historical_var(close: np.ndarray, lookback: int, confidence: float) -> float:
    """One-bar historical VaR: minus the (1 - confidence) quantile of the last `lookback` simple returns."""
    c = np.asarray(close, float)
    if len(c) < lookback + 1:
        raise TheoryError(f"VaR needs {lookback + 1} closes, got {len(c)}")
    r = c[-lookback:] / c[-lookback - 1 : -1] - 1.0
    return float(-linear_quantile(r, 1.0 - confidence))


def linear_quantile(x: np.ndarray, q: float) -> float:
    """`np.quantile(x, q)` with its default method, for finite 1-D `x` and 0 <= q <= 1, bit for bit.

    The default is Hyndman & Fan's type 7: the order statistics either side of position (n - 1) q,
    interpolated linearly. Written out because the general function costs ten times more than
    the answer on a hundred returns. The interpolation is taken from whichever end is nearer
    (a + (b - a) g below g = 0.5, b - (b - a)(1 - g) from it), as numpy does: the same roundings.
    """
    pos = (len(x) - 1) * q
    lo = math.floor(pos)
    if lo >= len(x) - 1:
        return float(np.max(x))
    a, b = np.partition(x, (lo, lo + 1))[lo : lo + 2]
    g, d = pos - lo, b - a
    return float(b - d * (1 - g) if g >= 0.5 else a + d * g)


def rsi_bollinger(candles: Candles, params: RsiBollingerParams | None = None) -> RsiBollingerResult:
    """The rule as of the last closed candle."""
    p = params or RsiBollingerParams()
    need = max(p.rsi_period, p.bb_period, p.atr_period, p.var_lookback) + 2
    if len(candles) < need:
        raise TheoryError(f"rsi_bollinger needs {need} candles, got {len(candles)}")
    c = np.asarray(candles.close, float)
    rsi = last_finite(f"RSI({p.rsi_period})", ta.RSI(c, timeperiod=p.rsi_period))[0]
    upper, _, lower = ta.BBANDS(c, timeperiod=p.bb_period, nbdevup=p.bb_k, nbdevdn=p.bb_k, matype=0)
    up, lo = last_finite("upper band", upper)[0], last_finite("lower band", lower)[0]
    atr = last_finite(f"ATR({p.atr_period})", ta.ATR(
        np.asarray(candles.high, float), np.asarray(candles.low, float), c, timeperiod=p.atr_period))[0]
    var = historical_var(c, p.var_lookback, p.var_confidence)
    close = float(c[-1])

    calm = var <= p.var_max
    var_code = "var ok" if calm else f"var {var:.1%}>{p.var_max:.1%}"
    long_conds = {f"rsi<{p.oversold:g}": rsi < p.oversold, "c<bb_lo": close < lo}
    short_conds = {f"rsi>{p.overbought:g}": rsi > p.overbought, "c>bb_up": close > up}
    vote = 0
    if calm and all(long_conds.values()):
        vote = 1
    elif calm and p.shorts and all(short_conds.values()):
        vote = -1
    side = short_conds if vote == -1 or (p.shorts and vote == 0 and any(short_conds.values())) else long_conds
    fired = (*(name for name, ok in side.items() if ok), var_code)
    overshoot = (p.oversold - rsi) / 15.0 if vote == 1 else (rsi - p.overbought) / 15.0
    extra = f"rsi {rsi:.0f}" if calm else "skipped: VaR above threshold"
    return RsiBollingerResult(
        label=plan_label(vote, len(fired) - 1 + int(calm), len(side) + 1, extra),
        vote=vote,
        strength=strength(vote, overshoot),
        conditions=fired,
        entry=close,
        stop=close - vote * p.stop_atr * atr if vote else None,
        target=(up if vote == 1 else lo) if vote else None,
        target_is_limit=False,
        trail_atr=None,
        trail_schedule=(),
        min_hold_bars=None,
        max_hold_bars=None,
        exit_long=bool(rsi > p.overbought or close > up),
        exit_short=bool(p.shorts and (rsi < p.oversold or close < lo)),
        rsi=float(rsi),
        bb_lower=float(lo),
        bb_upper=float(up),
        var=var,
        atr=float(atr),
    )


def _run(ctx: TheoryContext, params: RsiBollingerParams) -> RsiBollingerResult:
    return rsi_bollinger(ctx.history.tail(params.bars), params)


THEORY = Theory(
    name="rsi_bollinger",
    description="RSI(14)<30 below the lower Bollinger band, skipped when 95% historical VaR is high; 2 ATR stop",
    params=RsiBollingerParams,
    result=RsiBollingerResult,
    run=_run,
    min_bars=102,
)
