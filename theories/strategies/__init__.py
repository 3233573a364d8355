"""The seed rule strategies, one module each, every one a theory (`THEORY`) and a baseline.

`vwap_reversion`, `rsi_bollinger`, `momentum`, `atr_breakout`, `funding_extremes`; their shared
result shape is in `rule`. The funding data type is plain data beside `Candles`, in
`theories.funding`.

Indicators come from TA-Lib (`talib`, C, the reference most trading tools agree with). Its
conventions, which these strategies rely on: the first values of each output are NaN until the
look-back is full (`talib.abstract.Function(name).lookback`); EMA is seeded with the SMA of its first `n` inputs; RSI,
ATR and ADX use Wilder smoothing (alpha = 1/n) seeded by a simple sum/mean, so their first values
depend on where the input starts, which is why each strategy reads a fixed-length recent window;
BBANDS uses the population standard deviation (ddof 0).
"""
