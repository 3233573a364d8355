"""Small building blocks several theories share: moving averages, true range, rolling spread.

Each takes plain arrays and returns an array aligned with its input, NaN where the window is
not yet full. Vectorised where the recursion allows; the EMA recursion and the ATR are compiled
loops (`theories.jit`) doing scipy's linear filter's arithmetic.
"""

from __future__ import annotations

import numpy as np

from theories.jit import compiled
from theories.pairwise import pairwise_sum


def ema(x: np.ndarray, span: int | None = None, *, alpha: float | None = None) -> np.ndarray:
    """Exponential moving average, seeded with the first value: y_t = a x_t + (1 - a) y_{t-1}.

    `span` gives a = 2 / (span + 1) (the usual trading EMA); `alpha` sets a directly
    (Wilder smoothing is alpha = 1 / n). The first `span - 1` values are NaN (warm-up).
    A 2-D `x` holds one series per row, each smoothed along the last axis exactly as alone.
    """
    x = np.asarray(x, dtype=np.float64)
    if (span is None) == (alpha is None):
        raise ValueError("give exactly one of span or alpha")
    a = 2.0 / (span + 1) if span is not None else float(alpha)
    warm = span if span is not None else round(1 / a)
    if x.shape[-1] == 0:
        return x.copy()
    rows = np.array(x.reshape(-1, x.shape[-1]))  # a writable C-ordered copy: one compiled variant serves all
    out = _exponential_smoothing(rows, a).reshape(x.shape)
    out[..., : max(warm - 1, 0)] = np.nan
    return out


@compiled
def _exponential_smoothing(rows: np.ndarray, a: float) -> np.ndarray:
    """y_t = (1 - a) y_{t-1} + a x_t along each row of `rows`, from y_0 = x_0.

    The arithmetic of `scipy.signal.lfilter([a], [1, a - 1], ...)` step for step, so the same values to
    the bit (tested); compiled because lfilter's Python wrapper costs ~20 us a call, ten times the
    recursion on a few hundred bars, and indicators are taken on every snapshot.
    """
    out = np.empty_like(rows)
    keep = 1.0 - a
    for r in range(rows.shape[0]):
        y = rows[r, 0]
        out[r, 0] = y
        for t in range(1, rows.shape[1]):
            y = keep * y + a * rows[r, t]
            out[r, t] = y
    return out


def sma(x: np.ndarray, n: int) -> np.ndarray:
    """Simple moving average over `n` values; NaN for the first n - 1."""
    x = np.asarray(x, dtype=np.float64)
    out = np.full(len(x), np.nan)
    if len(x) >= n:
        c = np.cumsum(np.concatenate(([0.0], x)))
        out[n - 1 :] = (c[n:] - c[:-n]) / n
    return out


def true_range(high: np.ndarray, low: np.ndarray, close: np.ndarray) -> np.ndarray:
    """Wilder's true range; the first bar has no previous close and uses high - low."""
    prev = np.concatenate(([close[0]], close[:-1]))
    return np.maximum(high, prev) - np.minimum(low, prev)


def atr(high: np.ndarray, low: np.ndarray, close: np.ndarray, n: int = 14) -> np.ndarray:
    """Average true range with Wilder smoothing (alpha = 1/n), seeded by the mean of the first n.

    Wilder, New Concepts in Technical Trading Systems (1978). In quote currency.
    """
    high, low, close = (np.asarray(a, dtype=np.float64) for a in (high, low, close))
    return wilder_atr(high, low, close, n)


@compiled
def wilder_atr(high: np.ndarray, low: np.ndarray, close: np.ndarray, n: int) -> np.ndarray:
    """`atr` for compiled callers (float64 arrays), in one pass: `true_range`, the seed
    `tr[:n].mean()` and `_exponential_smoothing`'s recursion, each with numpy's arithmetic in its
    order (max and min as np.maximum and np.minimum take them, the seed as numpy's pairwise sum), so
    the same values to the bit (tested against that formulation). Compiled because the array calls
    cost ~40 us per 500 bars, ten times the arithmetic, and three theories take an ATR per snapshot.
    """
    m = len(close)
    out = np.full(m, np.nan)
    if m < n:
        return out
    tr = np.empty(m)
    for i in range(m):
        prev = close[i - 1] if i > 0 else close[0]
        h, lo = high[i], low[i]
        top = h if h >= prev or h != h else prev  # np.maximum: NaN wins
        bottom = lo if lo <= prev or lo != lo else prev  # np.minimum
        tr[i] = top - bottom
    a = 1.0 / n
    keep = 1.0 - a
    y = (0.0 + pairwise_sum(tr, 0, n)) / n
    out[n - 1] = y
    for t in range(n, m):
        y = keep * y + a * tr[t]
        out[t] = y
    return out


def rolling_std(x: np.ndarray, n: int, ddof: int = 1) -> np.ndarray:
    """Standard deviation over a sliding window of `n`; NaN for the first n - 1."""
    x = np.asarray(x, dtype=np.float64)
    out = np.full(len(x), np.nan)
    if len(x) >= n:
        out[n - 1 :] = np.lib.stride_tricks.sliding_window_view(x, n).std(axis=1, ddof=ddof)
    return out


def percentile_rank(history: np.ndarray, value: float) -> float:
    """Share of finite `history` values at or below `value`, in [0, 1] (NaN if none)."""
    h = np.asarray(history, dtype=np.float64)
    h = h[np.isfinite(h)]
    if not len(h):
        return float("nan")
    return float(np.count_nonzero(h <= value) / len(h))
