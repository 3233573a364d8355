"""Entropy of returns: how much structure is left in the return distribution and its ordering.

Two measures:
- Shannon entropy of standardised log returns over *fixed* bins in units of sigma (Shannon 1948).
  Quantile bins would hold equal counts by construction and always give ~1, so the bins are
  fixed: `bin_width_sigma` wide between +/- `span_sigma`, plus one open tail bin each side.
  It is normalised by log(number of bins); a Gaussian gives a known value
  (`gaussian_reference`), fat tails with a peaked centre give less.
- Permutation entropy (Bandt & Pompe 2002, PRL 88, 174102): the Shannon entropy of the ordinal
  patterns of `order` consecutive returns, normalised by log(order!). White noise gives ~1, a
  monotone series 0; values well below 1 mean the ordering of moves is predictable.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from pydantic import Field
from scipy.stats import norm

from theories.base import (
    BARS,
    PROBABILITY,
    RATIO,
    Theory,
    TheoryContext,
    TheoryError,
    TheoryParams,
    TheoryResult,
    num,
    pct,
    unit,
)


class EntropyParams(TheoryParams):
    bin_width_sigma: float = Field(0.5, gt=0, le=2, description="Width of a Shannon bin in sigma units.")
    span_sigma: float = Field(3.0, gt=0, le=10, description="Fixed bins cover +/- this many sigma.")
    order: int = Field(4, ge=3, le=5, description="Permutation entropy pattern length.")
    delay: int = Field(1, ge=1, le=10, description="Permutation entropy lag between pattern points, in bars.")
    lookback: int = Field(500, ge=50, description="Returns used, the most recent.")


class EntropyResult(TheoryResult):
    shannon: float = unit(RATIO, "Normalised Shannon entropy of standardised returns, fixed sigma bins, in [0, 1].")
    gaussian_reference: float = unit(RATIO, "The value a Gaussian would give with the same bins.")
    permutation: float = unit(RATIO, "Normalised permutation entropy of returns, in [0, 1]; ~1 for white noise.")
    order: int = unit(BARS, "Permutation entropy pattern length.")
    tail_share: float = unit(PROBABILITY, "Share of returns beyond the fixed span (both tails).")
    n: int = unit(BARS, "Returns used.")

    def summary(self) -> str:
        return (
            f"shannon {num(self.shannon)} (gaussian {num(self.gaussian_reference)}) perm{self.order} "
            f"{num(self.permutation)} tails {pct(self.tail_share)} -> {self.label}"
        )


@lru_cache(maxsize=64)
def sigma_bin_edges(bin_width_sigma: float, span_sigma: float) -> np.ndarray:
    """Inner bin edges in sigma units, symmetric about 0; the outer bins are open tails (read-only)."""
    half = math.floor(span_sigma / bin_width_sigma + 1e-9)
    edges = np.arange(-half, half + 1) * bin_width_sigma
    edges.flags.writeable = False
    return edges


@lru_cache(maxsize=64)
def gaussian_reference(bin_width_sigma: float, span_sigma: float) -> float:
    """Normalised Shannon entropy of an exact Gaussian over the same fixed bins."""
    edges = np.concatenate(([-np.inf], sigma_bin_edges(bin_width_sigma, span_sigma), [np.inf]))
    p = np.diff(norm.cdf(edges))
    return float(-(p * np.log(p)).sum() / math.log(len(p)))


def shannon_entropy(x: np.ndarray, bin_width_sigma: float = 0.5, span_sigma: float = 3.0) -> tuple[float, float]:
    """Normalised Shannon entropy of `x` standardised, and the share of points in the tail bins."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if n < 2:
        raise TheoryError("Shannon entropy needs returns with non-zero spread")
    # x.std(ddof=1) and x - x.mean() as numpy computes them (the same numbers) without the wrappers,
    # which cost more than the arithmetic at this size
    d = x - x.sum() / n
    sd = math.sqrt((d * d).sum() / (n - 1))
    if not math.isfinite(sd) or sd == 0:
        raise TheoryError("Shannon entropy needs returns with non-zero spread")
    z = d / sd
    inner = sigma_bin_edges(bin_width_sigma, span_sigma)
    counts = np.bincount(np.searchsorted(inner, z, side="right"), minlength=len(inner) + 1)
    p = counts[counts > 0] / len(z)
    tails = (counts[0] + counts[-1]) / len(z)
    return float(-(p * np.log(p)).sum() / math.log(len(inner) + 1)), float(tails)


def permutation_entropy(x: np.ndarray, order: int = 4, delay: int = 1) -> float:
    """Normalised permutation entropy (Bandt & Pompe 2002). Ties are ranked by position."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x) - (order - 1) * delay
    if n < 1:
        raise TheoryError(f"permutation entropy of order {order} needs more than {(order - 1) * delay} points")
    # the patterns' points side by side, column i = x[t + i * delay] (cheaper than sliding_window_view)
    windows = np.stack([x[i * delay : i * delay + n] for i in range(order)], axis=1)
    ranks = np.argsort(windows, axis=1, kind="stable")
    codes = ranks @ (order ** np.arange(order))  # a unique integer per ordinal pattern, below order**order
    counts = np.bincount(codes)
    p = counts[counts > 0] / n  # in increasing code order, as np.unique gave them
    return float(-(p * np.log(p)).sum() / math.log(math.factorial(order)))


def _label(shannon: float, reference: float, perm: float) -> str:
    if perm < 0.90:
        order = "strong ordinal patterns"
    elif perm < 0.98:
        order = "some ordinal patterns"
    else:
        order = "random-like order"
    if shannon < reference - 0.03:
        shape = "fat tails"
    elif shannon > reference + 0.03:
        shape = "flatter than Gaussian"
    else:
        shape = "near-Gaussian"
    return f"{order}; {shape}"


def entropy(returns: np.ndarray, params: EntropyParams | None = None) -> EntropyResult:
    p = params or EntropyParams()
    r = np.asarray(returns, dtype=np.float64)[-p.lookback :]
    sh, tails = shannon_entropy(r, p.bin_width_sigma, p.span_sigma)
    ref = gaussian_reference(p.bin_width_sigma, p.span_sigma)
    pe = permutation_entropy(r, p.order, p.delay)
    return EntropyResult(
        shannon=sh, gaussian_reference=ref, permutation=pe, order=p.order, tail_share=tails, n=len(r),
        label=_label(sh, ref, pe),
    )


def _run(ctx: TheoryContext, params: EntropyParams) -> EntropyResult:
    return entropy(ctx.candles.log_returns(), params)


THEORY = Theory(
    name="entropy",
    description="Shannon entropy over fixed sigma bins (Shannon 1948) and permutation entropy (Bandt & Pompe 2002).",
    params=EntropyParams,
    result=EntropyResult,
    run=_run,
    min_bars=60,
)
