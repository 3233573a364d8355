"""Volume profile from candles: where volume traded, the point of control, the value area and
the high- and low-volume nodes, and where the last price sits among them.

Each bar's volume is spread uniformly over its [low, high] range and split among fixed price
bins by overlap (a bar with high == low puts it all in its own bin): candles do not say where
inside the range the volume traded, and the uniform split is the usual assumption.

- Point of control (POC): the bin with the most volume.
- Value area: grown from the POC one bin at a time, adding whichever neighbour (above or below)
  holds more volume, until it holds `value_area_share` (70%) of the total (the Market Profile
  rule, Steidlmayer; CBOT Market Profile handbook).
- High-/low-volume nodes: peaks and troughs of the profile smoothed with a Gaussian kernel
  (`scipy.ndimage.gaussian_filter1d`'s, `gaussian_weights`), found by `prominent_peaks` (the rules
  of `scipy.signal.find_peaks`), keeping those with a prominence of at least `node_prominence` of
  the smoothed maximum.
Prices in the quote currency, volumes in base units.
"""

from __future__ import annotations

from functools import cache

import numpy as np
from pydantic import Field
from scipy.ndimage import correlate1d

from theories.base import COUNT, FRACTION, LABEL, PRICE, VOLUME, TheoryParams, TheoryResult, num, pct, unit
from theories.candles import Candles
from theories.jit import compiled


class VolumeProfileParams(TheoryParams):
    bins: int = Field(50, ge=5, le=1000, description="Price bins between the lowest low and the highest high.")
    value_area_share: float = Field(0.7, gt=0, lt=1, description="Share of volume in the value area.")
    smoothing_bins: float = Field(1.5, ge=0, description="Gaussian sigma, in bins, before finding nodes.")
    node_prominence: float = Field(0.1, gt=0, lt=1, description="Minimum node prominence, share of the peak.")


class VolumeProfile(TheoryResult):
    """The profile's key levels and the last price's place among them."""

    poc: float = unit(PRICE, "Point of control: centre of the bin with the most volume.")
    value_area_low: float = unit(PRICE, "Lower edge of the value area.")
    value_area_high: float = unit(PRICE, "Upper edge of the value area.")
    value_area_share: float = unit(FRACTION, "Share of volume actually inside the value area (>= the target).")
    high_volume_nodes: list[float] = unit(PRICE, "Centres of high-volume nodes, ascending.")
    low_volume_nodes: list[float] = unit(PRICE, "Centres of low-volume nodes, ascending.")
    last_price: float = unit(PRICE, "Close of the last candle.")
    distance_to_poc: float = unit(FRACTION, "(last price - POC) / POC.")
    position: str = unit(LABEL, "Last price vs the value area: above, inside or below.")
    nearest_hvn: float | None = unit(PRICE, "The high-volume node nearest the last price.")
    nearest_lvn: float | None = unit(PRICE, "The low-volume node nearest the last price.")
    bin_width: float = unit(PRICE, "Width of one price bin.")
    total_volume: float = unit(VOLUME, "Volume of all candles in the profile.")
    candles: int = unit(COUNT, "Candles in the profile.")

    def summary(self) -> str:
        def levels(xs: list[float]) -> str:
            """The nearest node below and the nearest above the last price (the full lists are in the result)."""
            below = [x for x in xs if x <= self.last_price]
            above = [x for x in xs if x > self.last_price]
            near = ([max(below)] if below else []) + ([min(above)] if above else [])
            return " ".join(num(x, 4) for x in near) or "none"

        # 4 significant digits (whole numbers above 1000): finer than the default 50 bins resolve
        return (
            f"POC {num(self.poc, 4)} (price {pct(self.distance_to_poc, 2, True)}), VA "
            f"{num(self.value_area_low, 4)}-{num(self.value_area_high, 4)}, HVN {levels(self.high_volume_nodes)}, "
            f"LVN {levels(self.low_volume_nodes)} -> {self.label}"
        )


def profile_histogram(low: np.ndarray, high: np.ndarray, volume: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Volume per bin: each bar's volume spread uniformly over [low, high], split by overlap.

    Only the (bar, bin) pairs that overlap are visited: a bar touches the bins from the one holding
    its low to the one holding its high, a few of the profile's bins, so this costs a few entries
    per bar instead of a bars x bins matrix. Each bin's shares are added in bar order, the order a
    bars x bins matrix summed over its bars adds them, so the sums are the same bit for bit.
    """
    columns = (np.asarray(a, dtype=np.float64) for a in (low, high, volume, edges))
    return _spread_volume(*columns)


@compiled
def _spread_volume(low: np.ndarray, high: np.ndarray, volume: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """`profile_histogram`'s loop: bar i adds its overlap share of its volume to the bins it touches.

    Compiled: the same pairs gathered into numpy arrays and summed by `np.bincount` (the same additions
    in the same order) cost ~0.15 ms per 500-bar profile in array set-up; this, a few microseconds.
    """
    nb = len(edges) - 1
    hist = np.zeros(nb)
    for i in range(len(low)):
        span = high[i] - low[i]
        # bins j with edges[j] <= low < edges[j + 1] (first) and edges[j] < high <= edges[j + 1] (last),
        # clipped to the profile; a bar with no range puts all its volume in the bin holding its price
        first = min(max(_edges_below(edges, low[i], True) - 1, 0), nb - 1)
        last = first if span <= 0 else min(max(_edges_below(edges, high[i], False) - 1, first), nb - 1)
        for j in range(first, last + 1):
            if span <= 0:
                share = 1.0
            else:
                share = max(min(high[i], edges[j + 1]) - max(low[i], edges[j]), 0.0) / span
            hist[j] += share * volume[i]
    return hist


@compiled
def _edges_below(edges: np.ndarray, price: float, inclusive: bool) -> int:
    """How many (rising) edges lie below `price`, or at or below it when `inclusive`: np.searchsorted's
    left and right sides, by bisection (numba's own searchsorted costs over a second to compile)."""
    lo, hi = 0, len(edges)
    while lo < hi:
        mid = (lo + hi) // 2
        if edges[mid] < price or (inclusive and edges[mid] == price):
            lo = mid + 1
        else:
            hi = mid
    return lo


@compiled
def prominent_peaks(x: np.ndarray, min_prominence: float) -> np.ndarray:
    """`scipy.signal.find_peaks(x, prominence=min_prominence)[0]`: the same peaks, the same rules (tested).

    A peak is a sample, or the middle (rounded down) of a flat run, higher than both neighbours; the
    first and last samples never are. Its prominence is its height above the higher of the lowest
    points between it and the nearest higher sample on each side (or the array's end). Compiled:
    scipy's general function costs ~45 us per call on the profile's 50 bins, this ~1 us, and the
    profile looks for both peaks and troughs in every snapshot.
    """
    n = len(x)
    found = np.empty(n, dtype=np.int64)
    m = 0
    i = 1
    while i < n - 1:
        if x[i - 1] < x[i]:
            ahead = i + 1
            while ahead < n - 1 and x[ahead] == x[i]:
                ahead += 1
            if x[ahead] < x[i]:
                peak = (i + ahead - 1) // 2
                left_min = x[peak]
                j = peak
                while j >= 0 and x[j] <= x[peak]:
                    left_min = min(left_min, x[j])
                    j -= 1
                right_min = x[peak]
                j = peak
                while j < n and x[j] <= x[peak]:
                    right_min = min(right_min, x[j])
                    j += 1
                if x[peak] - max(left_min, right_min) >= min_prominence:
                    found[m] = peak
                    m += 1
                i = ahead
        i += 1
    return found[:m]


def value_area(hist: np.ndarray, poc: int, share: float) -> tuple[int, int]:
    """Bin indices [lo, hi] of the value area grown from `poc` until it holds `share` of the volume."""
    hist = np.asarray(hist, dtype=np.float64)
    lo, hi = _grow_value_area(hist, poc, share * hist.sum())
    return int(lo), int(hi)


@compiled
def _grow_value_area(h: np.ndarray, poc: int, target: float) -> tuple[int, int]:
    """`value_area`'s loop: one bin at a time from `poc`, the fuller neighbour first, until `target`.
    Compiled: the same additions as a Python loop over the bins' floats, which cost ~15 us a profile."""
    lo = hi = poc
    inside = h[poc]
    last = len(h) - 1
    while inside < target and (lo > 0 or hi < last):
        below = h[lo - 1] if lo > 0 else -1.0
        above = h[hi + 1] if hi < last else -1.0
        if above >= below:  # ties grow upward: a stated, arbitrary rule
            hi += 1
            inside += h[hi]
        else:
            lo -= 1
            inside += h[lo]
    return lo, hi


@cache
def gaussian_weights(sigma: float) -> np.ndarray:
    """The kernel `scipy.ndimage.gaussian_filter1d(x, sigma)` correlates `x` with (truncated at 4 sigma), made
    as it makes it, once per sigma: building it was a third of the smoothing's cost, every snapshot."""
    radius = int(4.0 * sigma + 0.5)
    x = np.arange(-radius, radius + 1)
    phi = np.exp(-0.5 / (sigma * sigma) * x**2)
    weights = (phi / phi.sum())[::-1]
    weights.flags.writeable = False  # shared by every call
    return weights


def volume_profile(candles: Candles, params: VolumeProfileParams | None = None) -> VolumeProfile:
    """The volume profile of `candles` (all of them: pass the window you want)."""
    p = params or VolumeProfileParams()
    if len(candles) < 2:
        raise ValueError(f"a volume profile needs at least 2 candles, got {len(candles)}")
    low, high, vol = candles.low, candles.high, candles.volume
    total = float(vol.sum())
    if total <= 0:
        raise ValueError("the candles hold no volume")
    lo, hi = float(low.min()), float(high.max())
    if hi <= lo:
        hi = lo * (1 + 1e-9) + 1e-12
    edges = np.linspace(lo, hi, p.bins + 1)
    centres = (edges[:-1] + edges[1:]) / 2.0
    hist = profile_histogram(low, high, vol, edges)
    poc = int(hist.argmax())
    va_lo, va_hi = value_area(hist, poc, p.value_area_share)

    smooth = correlate1d(hist, gaussian_weights(p.smoothing_bins), mode="constant") if p.smoothing_bins > 0 else hist
    # in shares of the maximum, rounded: float ripple on a flat stretch must not split one node into many
    # (find_peaks reports a flat plateau once, at its middle)
    smooth = np.round(smooth / float(smooth.max()), 9)
    peaks = prominent_peaks(smooth, p.node_prominence)
    troughs = prominent_peaks(-smooth, p.node_prominence)
    hvn = [float(centres[i]) for i in peaks]
    lvn = [float(centres[i]) for i in troughs]

    last = float(candles.close[-1])
    va_low, va_high = float(edges[va_lo]), float(edges[va_hi + 1])
    position = "above value area" if last > va_high else "below value area" if last < va_low else "inside value area"
    poc_price = float(centres[poc])
    return VolumeProfile(
        label=f"{position}, {'above' if last >= poc_price else 'below'} POC",
        poc=poc_price,
        value_area_low=va_low,
        value_area_high=va_high,
        value_area_share=float(hist[va_lo: va_hi + 1].sum() / hist.sum()),
        high_volume_nodes=hvn,
        low_volume_nodes=lvn,
        last_price=last,
        distance_to_poc=(last - poc_price) / poc_price,
        position=position,
        nearest_hvn=min(hvn, key=lambda x: abs(x - last)) if hvn else None,
        nearest_lvn=min(lvn, key=lambda x: abs(x - last)) if lvn else None,
        bin_width=float(edges[1] - edges[0]),
        total_volume=total,
        candles=len(candles),
    )
