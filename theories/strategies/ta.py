"""The TA-Lib functions the strategies use, called without the wrapper `talib` adds for pandas and polars.

When pandas or polars is importable, `talib` wraps each function so that it also takes their Series: a
few isinstance scans of the arguments, ~2 us a call, about as long as the indicator itself on a few
hundred bars. The strategies pass plain float64 arrays (a dozen calls per snapshot), for which the
wrapper only forwards to the function it wraps; these are those functions (`__wrapped__`), so the
values are the same.
"""

from __future__ import annotations

import talib


def _bare(function):
    return getattr(function, "__wrapped__", function)


ADX = _bare(talib.ADX)
ATR = _bare(talib.ATR)
BBANDS = _bare(talib.BBANDS)
EMA = _bare(talib.EMA)
MACD = _bare(talib.MACD)
RSI = _bare(talib.RSI)
SMA = _bare(talib.SMA)
