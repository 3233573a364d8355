"""The report pictures: equity and drawdown, period-returns heatmaps, calibration, labelled bars.

Used by the paper-trading review (`agent.review`), the evals report and the daily Telegram report.
Every function draws one PNG from already computed numbers (the metrics live in `evals.metrics`)
and returns its path. Drawing is deterministic: a fixed size and resolution, the object-oriented
matplotlib API on an Agg canvas (no pyplot, so no global backend switch and no window ever opens),
and no creation time or software version in the file's metadata, so the same inputs give the same
bytes.

Inputs are `evals.metrics` models: `EquityCurve`, `PeriodReturn` (from `period_returns`) and
`Calibration` (from `calibration`). Times are UTC epoch ms, returns and rates are fractions (drawn
as percent).
"""

from __future__ import annotations

import calendar
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib import colormaps
from matplotlib import dates as mdates
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

if TYPE_CHECKING:  # the shapes only: plotting must not depend on how the metrics are computed
    from evals.metrics import Calibration, EquityCurve, PeriodReturn

DPI = 100
WIDE = (10.0, 6.0)  # inches at DPI: 1000 x 600 px
SQUARE = (7.0, 6.0)
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")
GAIN, LOSS = "#2e7d32", "#c62828"
# PNG text chunks matplotlib would write; None leaves them out (no version, no time: reproducible bytes)
NO_METADATA = {"Software": None}


class PlotError(ValueError):
    """The data cannot be drawn (the message says what was missing or wrong)."""


def _utc(ms: float) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _save(fig: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, format="png", dpi=DPI, metadata=NO_METADATA)
    return path


def _finite(values: Sequence[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else float(v) for v in values], dtype=float)


def equity_drawdown_png(curves: Mapping[str, EquityCurve], path: Path, title: str) -> Path:
    """Equity of each curve on top (quote currency), its drawdown below (percent under the running peak)."""
    drawable = {name: c for name, c in curves.items() if len(c.time_ms) >= 1}
    if not drawable:
        raise PlotError(f"{title}: no equity curve has any point to draw")
    fig = Figure(figsize=WIDE)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": (3, 1.3), "hspace": 0.06})
    for k, (name, curve) in enumerate(drawable.items()):
        if len(curve.time_ms) != len(curve.equity):
            raise PlotError(f"{title}: curve {name!r} has {len(curve.time_ms)} times but {len(curve.equity)} values")
        when = [_utc(t) for t in curve.time_ms]
        colour = PALETTE[k % len(PALETTE)]
        marker = "o" if len(when) == 1 else None  # a single point is otherwise invisible
        top.plot(when, curve.equity, color=colour, lw=1.4, marker=marker, label=name)
        under = -curve.drawdown()  # the metrics module's drawdown, drawn below zero
        bottom.fill_between(when, under, 0.0, color=colour, alpha=0.25 if len(drawable) > 1 else 0.4,
                            step="post", lw=0)
        bottom.plot(when, under, color=colour, lw=0.9, drawstyle="steps-post")
    top.set_title(title)
    top.set_ylabel("equity (quote)")
    top.grid(alpha=0.3)
    top.ticklabel_format(axis="y", style="plain", useOffset=False)
    if len(drawable) > 1 or next(iter(drawable)) != "":
        top.legend(loc="best", fontsize=8, frameon=False)
    bottom.set_ylabel("drawdown")
    bottom.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=1))
    bottom.grid(alpha=0.3)
    locator = mdates.AutoDateLocator(tz=UTC)
    bottom.xaxis.set_major_locator(locator)
    bottom.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=UTC))
    bottom.set_xlabel("time (UTC)")
    fig.subplots_adjust(left=0.1, right=0.97, top=0.93, bottom=0.1)
    return _save(fig, path)


def _cell(r: PeriodReturn) -> float:
    """A period without any curve point inside is drawn blank: its carried return of 0 was not observed."""
    return float("nan") if r.points == 0 else r.ret


def _grid(returns: Sequence[PeriodReturn]) -> tuple[list[str], list[str], np.ndarray, str]:
    """Rows, columns and a values grid (NaN = no period) for monthly (year x month) or daily (month x day) returns."""
    starts = [_utc(r.start_ms) for r in returns]
    monthly = all(d.day == 1 and d.hour == 0 for d in starts) and (
        len(starts) < 2 or min(np.diff(sorted(r.start_ms for r in returns))) >= 27 * 86_400_000
    )
    if monthly:
        years = sorted({d.year for d in starts})
        cols = [calendar.month_abbr[m] for m in range(1, 13)]
        grid = np.full((len(years), 12), np.nan)
        for d, r in zip(starts, returns, strict=True):
            grid[years.index(d.year), d.month - 1] = _cell(r)
        return [str(y) for y in years], cols, grid, "month"
    months = sorted({(d.year, d.month) for d in starts})
    grid = np.full((len(months), 31), np.nan)
    for d, r in zip(starts, returns, strict=True):
        grid[months.index((d.year, d.month)), d.day - 1] = _cell(r)
    return [f"{y}-{m:02d}" for y, m in months], [str(k) for k in range(1, 32)], grid, "day of month"


def returns_heatmap_png(returns: Sequence[PeriodReturn], path: Path, title: str) -> Path:
    """Period returns as a calendar heatmap: year x month for monthly returns, month x day-of-month for daily ones.

    Green is a gain, red a loss, on a scale symmetric around zero; each cell is labelled with its
    return in percent; blank cells are outside the data or had no equity observation.
    """
    if not returns:
        raise PlotError(f"{title}: no period returns to draw")
    rows, cols, grid, xlabel = _grid(returns)
    finite = grid[np.isfinite(grid)]
    bound = float(np.max(np.abs(finite))) if finite.size else 0.0
    bound = bound if bound > 0 else 0.01  # an all-flat period still gets a readable scale
    fig = Figure(figsize=(10.0, max(2.4, 1.2 + 0.45 * len(rows))), layout="constrained")
    ax = fig.subplots()
    cmap = colormaps["RdYlGn"].with_extremes(bad="#f0f0f0")
    image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, norm=TwoSlopeNorm(0.0, -bound, bound), aspect="auto")
    ax.set_xticks(range(len(cols)), cols, fontsize=8 if len(cols) > 12 else 9)
    ax.set_yticks(range(len(rows)), rows, fontsize=9)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.set_xticks(np.arange(-0.5, len(cols)), minor=True)
    ax.set_yticks(np.arange(-0.5, len(rows)), minor=True)
    ax.grid(which="minor", color="white", lw=1.0)
    ax.tick_params(which="minor", length=0)
    small = len(cols) * len(rows) <= 12 * 12 or len(rows) <= 4
    if small:
        for i in range(len(rows)):
            for j in range(len(cols)):
                v = grid[i, j]
                if math.isfinite(v):
                    ax.text(j, i, f"{100 * v:+.1f}", ha="center",
                            va="center", fontsize=8 if len(cols) <= 12 else 5.5,
                            color="black" if abs(v) < 0.6 * bound else "white")
    bar = fig.colorbar(image, ax=ax, fraction=0.03, pad=0.02)
    bar.ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=1))
    return _save(fig, path)


def calibration_png(calibrations: Mapping[str, Calibration], path: Path, title: str) -> Path:
    """Reliability diagram: realised hit rate against stated confidence per bin, with the diagonal.

    A point's area grows with the bin's count; the legend gives each set's Brier score; the lower
    panel shows how many signals fell in each confidence bin.
    """
    usable = {name: c for name, c in calibrations.items() if any(b.count > 0 for b in c.bins)}
    if not usable:
        raise PlotError(f"{title}: no calibration bin holds a signal")
    fig = Figure(figsize=SQUARE)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": (3, 1), "hspace": 0.06})
    top.plot([0, 1], [0, 1], color="#999999", lw=1, ls="--", label="perfectly calibrated")
    n_sets = len(usable)
    for k, (name, cal) in enumerate(usable.items()):
        colour = PALETTE[k % len(PALETTE)]
        bins = [b for b in cal.bins if b.count > 0]
        x = _finite([b.mean_confidence for b in bins])
        y = _finite([b.hit_rate for b in bins])
        counts = np.array([b.count for b in bins], dtype=float)
        brier = "n/a" if cal.brier is None else f"{cal.brier:.3f}"
        label = f"{name} (Brier {brier}, n={int(counts.sum())})" if name else f"Brier {brier}, n={int(counts.sum())}"
        top.plot(x, y, color=colour, lw=1.2, label=label)
        top.scatter(x, y, s=20 + 180 * counts / counts.max(), color=colour, alpha=0.8, zorder=3)
        width = [(b.hi - b.lo) / n_sets for b in cal.bins]
        left = [b.lo + k * w for b, w in zip(cal.bins, width, strict=True)]
        bottom.bar(left, [b.count for b in cal.bins], width=width, align="edge", color=colour, alpha=0.7)
    top.set_xlim(0, 1)
    top.set_ylim(-0.02, 1.02)
    top.set_ylabel("realised hit rate")
    top.set_title(title)
    top.grid(alpha=0.3)
    top.legend(loc="upper left", fontsize=8, frameon=False)
    bottom.set_xlabel("stated confidence")
    bottom.set_ylabel("signals")
    bottom.grid(alpha=0.3)
    fig.subplots_adjust(left=0.12, right=0.97, top=0.93, bottom=0.1)
    return _save(fig, path)


def bars_png(values: Mapping[str, float], path: Path, title: str, xlabel: str = "") -> Path:
    """Horizontal bars in the given order (first on top), green for positive and red for negative, labelled."""
    items = [(str(k), float(v)) for k, v in values.items() if v is not None and math.isfinite(float(v))]
    if not items:
        raise PlotError(f"{title}: no finite value to draw")
    labels = [k for k, _ in items]
    vals = np.array([v for _, v in items])
    fig = Figure(figsize=(9.0, max(2.2, 0.9 + 0.32 * len(items))), layout="constrained")
    ax = fig.subplots()
    y = np.arange(len(items))
    ax.barh(y, vals, color=[GAIN if v >= 0 else LOSS for v in vals], alpha=0.85)
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.axvline(0.0, color="#555555", lw=0.8)
    span = float(np.max(np.abs(vals))) or 1.0
    for yi, v in zip(y, vals, strict=True):
        ax.text(v + (0.01 * span if v >= 0 else -0.01 * span), yi, f"{v:,.4g}", va="center",
                ha="left" if v >= 0 else "right", fontsize=7)
    lo, hi = min(0.0, float(vals.min())), max(0.0, float(vals.max()))
    pad = 0.18 * (hi - lo or 1.0)
    ax.set_xlim(lo - (pad if lo < 0 else 0.0), hi + (pad if hi > 0 else 0.0))
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)

