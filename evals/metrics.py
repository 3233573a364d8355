"""Performance metrics: the ONE module that turns trades and equity curves into the numbers review and evals show.

Pure functions over plain data (a list of closed `Trade`s, an `EquityCurve`), frozen pydantic models
out. No output field is ever inf or NaN: an undefined number is None, and the model says why (a
`notes` tuple or a `*_note` field). Units: money in the quote currency, returns and drawdowns as
fractions (0.05 = 5%), times as UTC epoch ms.

Conventions (stated once here, repeated where they matter):
- A win is a trade with pnl > 0 (net of fees); every other trade, break-even included, is a loss
  (the store's rule: `ClosedTradeRow.outcome` is "win" iff r_multiple > 0, and r = pnl / risk, risk > 0).
- Curve returns are simple returns between consecutive points of the curve's own grid
  (r_t = E_t / E_{t-1} - 1). Annualisation: a 365-day year (crypto trades every day), the number of
  periods per year = year / median step of the grid. Risk-free rate 0.
- Sharpe (Sharpe 1994, ex post, rf = 0): mean(r) / std(r, ddof=1) * sqrt(periods per year).
- Sortino (Sortino & Price 1994): mean(r) / DD * sqrt(periods per year), downside deviation
  DD = sqrt(mean over ALL periods of min(r_t, 0)^2) (target 0; periods above target count as 0).
- CAGR: (E_end / E_start) ** (year / (t_end - t_start)) - 1.
- Max drawdown: max over t of 1 - E_t / max_{s <= t} E_s (a positive fraction).
- Calmar (Young 1991): CAGR / max drawdown over the whole curve (not the classic trailing 36 months).
- Profit factor: gross profit / gross loss (sum of winning pnl / -sum of losing pnl).

Hand-written on purpose: these are a few lines of numpy each, and the conventions above (which
library defaults silently differ on: ddof, annualisation, downside target, drawdown duration) must
be exactly the documented ones; the tests pin each against hand-computed values.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

DAY_MS = 86_400_000
YEAR_MS = 365 * DAY_MS  # crypto trades every day of the year


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


def _finite(x: float) -> float | None:
    """x as a float, or None when it is inf/NaN (never let either reach an output model)."""
    x = float(x)
    return x if math.isfinite(x) else None


# --- inputs ---------------------------------------------------------------------------------------


class Trade(_Frozen):
    """One closed trade (a `ClosedTradeRow` joined with its signal)."""

    trade_id: str = Field(description="Client order id.")
    decision_id: str
    variant: str = Field(description="DecisionRow.variant: 'provider:model:prompt_variant'.")
    symbol: str
    side: Literal["LONG", "SHORT"]
    regime: str | None = Field(description="Named regime at the decision, None when the regime theory had none.")
    opened_ms: int = Field(description="Entry fill time, UTC epoch ms.")
    closed_ms: int = Field(description="Time of the last exit, UTC epoch ms.")
    entry: float = Field(gt=0, description="Average entry price, quote.")
    exit: float = Field(gt=0, description="Quantity-weighted average exit price, quote.")
    quantity: float = Field(gt=0, description="Base units entered.")
    fees: float = Field(ge=0, description="Entry and exit fees, quote.")
    pnl: float = Field(description="Net P&L after fees, quote.")
    risk_amount: float = Field(gt=0, description="Money at risk at entry (1 R): quantity x |entry - initial stop|.")
    r_multiple: float = Field(description="pnl / risk_amount.")
    exit_reason: str
    confidence: float | None = Field(default=None, ge=0, le=1, description="The signal's stated confidence.")
    theories: tuple[str, ...] = Field(default=(), description="The theories the signal said it leaned on.")

    @model_validator(mode="after")
    def _times(self) -> Trade:
        if self.closed_ms < self.opened_ms:
            raise ValueError(f"trade {self.trade_id}: closed_ms {self.closed_ms} is before opened_ms {self.opened_ms}")
        return self

    @property
    def win(self) -> bool:
        return self.pnl > 0

    @property
    def notional_traded(self) -> float:
        """Entry plus exit notional, quote (this trade's turnover)."""
        return self.quantity * (self.entry + self.exit)


class EquityCurve(_Frozen):
    """Account equity over time: equity[0] is the start; times strictly ascending (UTC epoch ms); quote currency."""

    time_ms: tuple[int, ...]
    equity: tuple[float, ...]

    @model_validator(mode="after")
    def _shape(self) -> EquityCurve:
        if len(self.time_ms) != len(self.equity):
            raise ValueError(f"equity curve: {len(self.time_ms)} times but {len(self.equity)} equity values")
        if not self.time_ms:
            raise ValueError("equity curve: no points (at least the starting equity is needed)")
        t = np.asarray(self.time_ms, dtype=np.int64)
        bad = np.flatnonzero(np.diff(t) <= 0)
        if bad.size:
            i = int(bad[0]) + 1
            raise ValueError(f"equity curve: times must be strictly ascending, point {i} ({t[i]}) is not after "
                             f"point {i - 1} ({t[i - 1]})")
        e = np.asarray(self.equity, dtype=float)
        bad = np.flatnonzero(e <= 0)
        if bad.size:
            i = int(bad[0])
            raise ValueError(f"equity curve: equity must be > 0 for returns to exist, point {i} at {t[i]} is {e[i]}")
        return self

    @classmethod
    def of(cls, time_ms: Sequence[int] | np.ndarray, equity: Sequence[float] | np.ndarray) -> EquityCurve:
        return cls(time_ms=tuple(int(x) for x in time_ms), equity=tuple(float(x) for x in equity))

    def __len__(self) -> int:
        return len(self.time_ms)

    @property
    def times(self) -> np.ndarray:
        return np.asarray(self.time_ms, dtype=np.int64)

    @property
    def values(self) -> np.ndarray:
        return np.asarray(self.equity, dtype=float)

    def returns(self) -> np.ndarray:
        """Simple returns between consecutive points, E_t / E_{t-1} - 1 (length n - 1)."""
        e = self.values
        return e[1:] / e[:-1] - 1.0

    def drawdown(self) -> np.ndarray:
        """Drawdown at each point, 1 - E_t / running peak (>= 0, same length as the curve)."""
        e = self.values
        return 1.0 - e / np.maximum.accumulate(e)

    def between(self, start_ms: int, end_ms: int) -> EquityCurve | None:
        """Points with start_ms <= t <= end_ms, plus the last point before start_ms as the base; None if none."""
        t = self.times
        lo = int(np.searchsorted(t, start_ms, side="left"))
        hi = int(np.searchsorted(t, end_ms, side="right"))
        lo = max(lo - 1, 0)
        if hi <= lo:
            return None
        return EquityCurve(time_ms=self.time_ms[lo:hi], equity=self.equity[lo:hi])


def realised_curve(trades: Sequence[Trade], grid_ms: Sequence[int] | np.ndarray, start_equity: float) -> EquityCurve:
    """start_equity plus the cumulative net P&L of the trades closed at or before each time of `grid_ms`.

    The realised-P&L curve of a subset of trades (one symbol, regime, direction) on the account's grid,
    so a group gets a Sharpe, Sortino and drawdown on the same grid as the whole account. A trade closed
    between two grid points counts from the next point on; one closed after the last point is not in it.
    Open positions' floating P&L is not in it (the account curve has that).
    """
    grid = np.asarray(grid_ms, dtype=np.int64)
    pnl_at = np.zeros(grid.size)
    for t in trades:
        i = int(np.searchsorted(grid, t.closed_ms, side="left"))
        if i < grid.size:
            pnl_at[i] += t.pnl
    return EquityCurve.of(grid, start_equity + np.cumsum(pnl_at))


# --- trade statistics -----------------------------------------------------------------------------


class TradeStats(_Frozen):
    """Statistics of a list of closed trades. Win: pnl > 0; everything else (break-even too) is a loss."""

    trades: int
    wins: int
    losses: int
    win_rate: float | None = Field(description="wins / trades; None without trades.")
    gross_profit: float = Field(description="Sum of winning pnl, quote.")
    gross_loss: float = Field(description="-(sum of losing pnl), quote, >= 0.")
    profit_factor: float | None = Field(
        description="gross_profit / gross_loss; None with the reason in profit_factor_note.")
    profit_factor_note: str | None = None
    avg_win: float | None = Field(description="Mean pnl of winning trades, quote; None without wins.")
    avg_loss: float | None = Field(description="Mean pnl of losing trades, quote (<= 0); None without losses.")
    payoff_ratio: float | None = Field(description="avg_win / |avg_loss|; None if either is missing or avg_loss is 0.")
    avg_win_r: float | None = None
    avg_loss_r: float | None = None
    avg_r: float | None = Field(description="Mean R multiple; None without trades.")
    expectancy_r: float | None = Field(
        description="win_rate x avg_win_r + (1 - win_rate) x avg_loss_r (Van Tharp); equals avg_r by construction.")
    expectancy: float | None = Field(description="Mean pnl per trade, quote.")
    total_pnl: float = Field(description="Sum of net pnl, quote.")
    fees: float = Field(description="Sum of fees, quote.")
    turnover: float = Field(description="Sum of entry + exit notional, quote.")
    best: float | None = Field(description="Largest pnl, quote.")
    worst: float | None = Field(description="Smallest pnl, quote.")
    max_consecutive_losses: int = Field(description="Longest run of losses in closing order.")
    avg_holding_ms: float | None = Field(description="Mean closed_ms - opened_ms.")


def trade_stats(trades: Sequence[Trade]) -> TradeStats:
    """TradeStats of `trades` (any order; the loss streak is counted in closing-time order)."""
    n = len(trades)
    pnl = np.array([t.pnl for t in trades], dtype=float)
    r = np.array([t.r_multiple for t in trades], dtype=float)
    win = pnl > 0
    wins = int(win.sum())
    losses = n - wins
    gross_profit = float(pnl[win].sum())
    gross_loss = float(-pnl[~win].sum()) + 0.0  # + 0.0: no "-0.0" in the output
    if n == 0:
        pf, pf_note = None, "no trades"
    elif gross_loss == 0:
        pf, pf_note = None, "no losing trades: the gross loss is 0, the profit factor is unbounded"
    else:
        pf, pf_note = gross_profit / gross_loss, None
    avg_win = float(pnl[win].mean()) if wins else None
    avg_loss = float(pnl[~win].mean()) if losses else None
    payoff = avg_win / -avg_loss if avg_win is not None and avg_loss is not None and avg_loss < 0 else None
    avg_win_r = float(r[win].mean()) if wins else None
    avg_loss_r = float(r[~win].mean()) if losses else None
    win_rate = wins / n if n else None
    expectancy_r = None
    if n:
        expectancy_r = win_rate * (avg_win_r or 0.0) + (1 - win_rate) * (avg_loss_r or 0.0)
    streak = longest = 0
    for t in sorted(trades, key=lambda t: (t.closed_ms, t.trade_id)):
        streak = 0 if t.win else streak + 1
        longest = max(longest, streak)
    return TradeStats(
        trades=n, wins=wins, losses=losses, win_rate=win_rate, gross_profit=gross_profit, gross_loss=gross_loss,
        profit_factor=pf, profit_factor_note=pf_note, avg_win=avg_win, avg_loss=avg_loss, payoff_ratio=payoff,
        avg_win_r=avg_win_r, avg_loss_r=avg_loss_r, avg_r=float(r.mean()) if n else None, expectancy_r=expectancy_r,
        expectancy=float(pnl.mean()) if n else None, total_pnl=float(pnl.sum()),
        fees=float(sum(t.fees for t in trades)), turnover=float(sum(t.notional_traded for t in trades)),
        best=float(pnl.max()) if n else None, worst=float(pnl.min()) if n else None,
        max_consecutive_losses=longest,
        avg_holding_ms=float(np.mean([t.closed_ms - t.opened_ms for t in trades])) if n else None,
    )


def group_stats(trades: Sequence[Trade], key: Callable[[Trade], str]) -> dict[str, TradeStats]:
    """TradeStats per group (e.g. key=lambda t: t.symbol / t.regime or "none" / t.side / t.variant), keys sorted."""
    groups: dict[str, list[Trade]] = {}
    for t in trades:
        groups.setdefault(key(t), []).append(t)
    return {k: trade_stats(groups[k]) for k in sorted(groups)}


class RMultipleStats(_Frozen):
    """Distribution of R multiples (pnl / initial risk)."""

    n: int
    mean: float | None
    median: float | None
    std: float | None = Field(description="Sample standard deviation (ddof=1); None below 2 trades.")
    min: float | None
    max: float | None
    q05: float | None = Field(description="5% quantile (numpy's default linear interpolation).")
    q95: float | None
    sqn: float | None = Field(description="System quality number (Van Tharp): sqrt(n) x mean / std; None if std is 0.")


def r_multiple_stats(trades: Sequence[Trade]) -> RMultipleStats:
    r = np.array([t.r_multiple for t in trades], dtype=float)
    n = r.size
    if n == 0:
        return RMultipleStats(n=0, mean=None, median=None, std=None, min=None, max=None, q05=None, q95=None, sqn=None)
    std = float(r.std(ddof=1)) if n > 1 else None
    return RMultipleStats(
        n=n, mean=float(r.mean()), median=float(np.median(r)), std=std, min=float(r.min()), max=float(r.max()),
        q05=float(np.quantile(r, 0.05)), q95=float(np.quantile(r, 0.95)),
        sqn=math.sqrt(n) * float(r.mean()) / std if std else None,
    )


# --- curve statistics -----------------------------------------------------------------------------


class CurveStats(_Frozen):
    """Statistics of an equity curve; formulas and conventions in the module docstring."""

    start_ms: int
    end_ms: int
    start_equity: float
    end_equity: float
    periods: int = Field(description="Number of returns (points - 1).")
    step_ms: float | None = Field(description="Median spacing of the grid; None for a single point.")
    periods_per_year: float | None = Field(description="365-day year / step_ms.")
    total_return: float = Field(description="E_end / E_start - 1.")
    annualised_return: float | None = Field(description="CAGR over a 365-day year; None if the span is 0 or it "
                                            "overflows (a very short span), see notes.")
    annualised_volatility: float | None = Field(description="std(r, ddof=1) x sqrt(periods per year).")
    sharpe: float | None = Field(description="mean(r) / std(r, ddof=1) x sqrt(ppy), rf 0; None if std is 0.")
    sortino: float | None = Field(description="mean(r) / downside deviation x sqrt(ppy), target 0; None if no "
                                  "period is below 0.")
    calmar: float | None = Field(description="CAGR / max_drawdown; None without a drawdown or a CAGR.")
    max_drawdown: float = Field(description="Largest fall from a running peak, positive fraction.")
    max_drawdown_peak_ms: int | None = Field(
        description="Last time at the peak level before the max drawdown's trough; None without a drawdown.")
    max_drawdown_trough_ms: int | None = None
    max_drawdown_duration_ms: int = Field(
        description="Longest time under water: from a peak to the first point back at or above it (or the curve's "
        "end if it never got back). 0 without a drawdown.")
    notes: tuple[str, ...] = Field(default=(), description="Why a field is None.")


def curve_stats(curve: EquityCurve) -> CurveStats:
    """CurveStats of `curve` (see the module docstring for every formula and convention)."""
    t, e = curve.times, curve.values
    notes: list[str] = []
    r = curve.returns()
    n = r.size
    span = int(t[-1] - t[0])
    step = float(np.median(np.diff(t))) if n else None
    ppy = YEAR_MS / step if step else None
    total = float(e[-1] / e[0] - 1.0)
    cagr: float | None = None
    if span <= 0:
        notes.append("annualised return: the curve spans no time")
    else:
        exponent = math.log(e[-1] / e[0]) * YEAR_MS / span
        if exponent > 700:  # exp overflows: a short span extrapolated to a year is meaningless anyway
            notes.append(f"annualised return: overflows when a {span / DAY_MS:.3g}-day return is compounded to a year")
        else:
            cagr = math.expm1(exponent)
    vol = sharpe = sortino = None
    if n < 2:
        notes.append(f"volatility, Sharpe, Sortino: {n} return(s), at least 2 needed")
    else:
        sd = float(r.std(ddof=1))
        mean = float(r.mean())
        vol = sd * math.sqrt(ppy)
        if sd <= 1e-15 * max(1.0, abs(mean)):  # a flat (or constant-return) curve: the ratio is undefined
            notes.append("Sharpe: the returns do not vary (standard deviation 0)")
        else:
            sharpe = mean / sd * math.sqrt(ppy)
        downside = math.sqrt(float(np.mean(np.minimum(r, 0.0) ** 2)))
        if downside == 0:
            notes.append("Sortino: no period returned below 0 (downside deviation 0)")
        else:
            sortino = mean / downside * math.sqrt(ppy)
    dd = curve.drawdown()
    max_dd = float(dd.max())
    peak_ms = trough_ms = None
    if max_dd > 0:
        trough = int(np.argmax(dd))
        peak = trough - int(np.argmax(e[trough::-1]))  # the last point at the peak level before the trough
        peak_ms, trough_ms = int(t[peak]), int(t[trough])
    calmar = None
    if max_dd == 0:
        notes.append("Calmar: no drawdown")
    elif cagr is not None:
        calmar = cagr / max_dd
    return CurveStats(
        start_ms=int(t[0]), end_ms=int(t[-1]), start_equity=float(e[0]), end_equity=float(e[-1]), periods=n,
        step_ms=step, periods_per_year=ppy, total_return=total, annualised_return=_opt(cagr),
        annualised_volatility=_opt(vol), sharpe=_opt(sharpe), sortino=_opt(sortino), calmar=_opt(calmar),
        max_drawdown=max_dd, max_drawdown_peak_ms=peak_ms, max_drawdown_trough_ms=trough_ms,
        max_drawdown_duration_ms=_longest_underwater_ms(t, e), notes=tuple(notes),
    )


def _opt(x: float | None) -> float | None:
    return None if x is None else _finite(x)


def _longest_underwater_ms(t: np.ndarray, e: np.ndarray) -> int:
    """Longest spell from a running peak to the first point at or above it again (or the last point)."""
    longest = 0
    peak_value, peak_time = e[0], t[0]
    under = False
    for ti, ei in zip(t[1:], e[1:], strict=True):
        if ei >= peak_value:
            if under:
                longest = max(longest, int(ti - peak_time))
            peak_value, peak_time, under = ei, ti, False
        else:
            under = True
    if under:
        longest = max(longest, int(t[-1] - peak_time))
    return longest


def exposure(trades: Sequence[Trade], start_ms: int, end_ms: int) -> float:
    """Fraction of [start_ms, end_ms] with at least one position open (overlapping trades count once)."""
    if end_ms <= start_ms:
        raise ValueError(f"exposure: end_ms {end_ms} must be after start_ms {start_ms}")
    spans = sorted((max(t.opened_ms, start_ms), min(t.closed_ms, end_ms)) for t in trades)
    covered = 0
    cur_lo = cur_hi = None
    for lo, hi in spans:
        if hi <= lo:
            continue
        if cur_hi is None or lo > cur_hi:
            if cur_hi is not None:
                covered += cur_hi - cur_lo
            cur_lo, cur_hi = lo, hi
        else:
            cur_hi = max(cur_hi, hi)
    if cur_hi is not None:
        covered += cur_hi - cur_lo
    return covered / (end_ms - start_ms)


class Performance(_Frozen):
    """Everything about one strategy's results: trade statistics, curve statistics, exposure, turnover."""

    trade: TradeStats
    curve: CurveStats
    r_multiples: RMultipleStats
    exposure: float | None = Field(description="Fraction of the curve's span with a position open; None if the "
                                   "curve spans no time.")
    turnover_ratio: float | None = Field(description="Turnover / mean equity of the curve (times the equity traded).")
    turnover_per_year: float | None = Field(description="turnover_ratio scaled to a 365-day year; None if no span.")


def performance(trades: Sequence[Trade], curve: EquityCurve) -> Performance:
    ts = trade_stats(trades)
    cs = curve_stats(curve)
    span = cs.end_ms - cs.start_ms
    ratio = ts.turnover / float(curve.values.mean())
    return Performance(
        trade=ts, curve=cs, r_multiples=r_multiple_stats(trades),
        exposure=exposure(trades, cs.start_ms, cs.end_ms) if span > 0 else None,
        turnover_ratio=_finite(ratio), turnover_per_year=_finite(ratio * YEAR_MS / span) if span > 0 else None,
    )


# --- calibration ----------------------------------------------------------------------------------


class CalibrationBin(_Frozen):
    lo: float
    hi: float = Field(description="Bins are [lo, hi); the last one includes 1.")
    count: int
    mean_confidence: float | None = Field(description="None for an empty bin.")
    hit_rate: float | None = Field(description="None for an empty bin.")


class Calibration(_Frozen):
    """Stated confidence against realised hits: the Brier score (Brier 1950) and the reliability bins."""

    n: int
    brier: float | None = Field(description="mean((confidence - hit)^2); None without observations.")
    mean_confidence: float | None
    hit_rate: float | None
    reliability: float | None = Field(description="Murphy (1973) binned decomposition: sum n_k (c_k - o_k)^2 / n.")
    resolution: float | None = Field(description="sum n_k (o_k - o)^2 / n.")
    uncertainty: float | None = Field(description="o (1 - o). brier = reliability - resolution + uncertainty exactly "
                                      "only when confidences within a bin are equal (binned approximation).")
    bins: tuple[CalibrationBin, ...]


def calibration(confidence: Sequence[float], hit: Sequence[bool], bins: int = 10) -> Calibration:
    """Brier score and `bins` equal-width reliability bins over [0, 1]."""
    c = np.asarray(confidence, dtype=float)
    h = np.asarray(hit, dtype=float)
    if c.shape != h.shape or c.ndim != 1:
        raise ValueError(f"calibration: {c.size} confidences but {h.size} hits")
    if bins < 1:
        raise ValueError(f"calibration: bins must be >= 1, got {bins}")
    bad = np.flatnonzero(~((c >= 0) & (c <= 1)))
    if bad.size:
        raise ValueError(f"calibration: confidence {c[bad[0]]} at position {int(bad[0])} is outside [0, 1]")
    n = c.size
    # rounded before the floor: 0.57 x 100 is 56.99999999999999 in binary floating point, yet belongs to bin 57
    idx = np.minimum(np.floor(np.round(c * bins, 9)).astype(int), bins - 1)
    out: list[CalibrationBin] = []
    rel = res = 0.0
    o = float(h.mean()) if n else 0.0
    for k in range(bins):
        m = idx == k
        cnt = int(m.sum())
        mc = float(c[m].mean()) if cnt else None
        hr = float(h[m].mean()) if cnt else None
        if cnt:
            rel += cnt * (mc - hr) ** 2
            res += cnt * (hr - o) ** 2
        out.append(CalibrationBin(lo=k / bins, hi=(k + 1) / bins, count=cnt, mean_confidence=mc, hit_rate=hr))
    if n == 0:
        return Calibration(n=0, brier=None, mean_confidence=None, hit_rate=None, reliability=None, resolution=None,
                           uncertainty=None, bins=tuple(out))
    return Calibration(
        n=n, brier=float(np.mean((c - h) ** 2)), mean_confidence=float(c.mean()), hit_rate=o,
        reliability=rel / n, resolution=res / n, uncertainty=o * (1 - o), bins=tuple(out),
    )


# --- calendar periods -----------------------------------------------------------------------------


class PeriodReturn(_Frozen):
    """The return of one calendar period (UTC): last equity in it over the last equity before it (or the start)."""

    label: str = Field(description="'2025-11-15' (D), '2025-11' (M), '2025-Q4' (Q) or '2025' (Y).")
    start_ms: int = Field(description="Calendar start of the period, UTC.")
    end_ms: int = Field(description="Calendar end (exclusive), UTC.")
    start_equity: float = Field(description="Equity before the period: the last point before it, or the curve's first.")
    end_equity: float = Field(description="The last point in the period (the previous one carried if none).")
    points: int = Field(description="Curve points inside the period (0: no observation, return 0 carried).")
    ret: float = Field(description="end_equity / start_equity - 1.")


def _period_start(ms: int, freq: str) -> datetime:
    d = datetime.fromtimestamp(ms / 1000, tz=UTC)
    if freq == "D":
        return d.replace(hour=0, minute=0, second=0, microsecond=0)
    if freq == "M":
        return d.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if freq == "Q":
        return d.replace(month=(d.month - 1) // 3 * 3 + 1, day=1, hour=0, minute=0, second=0, microsecond=0)
    if freq == "Y":
        return d.replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0)
    raise ValueError(f"unknown period frequency {freq!r}: use D, M, Q or Y")


def _next_period(d: datetime, freq: str) -> datetime:
    if freq == "D":
        return datetime.fromtimestamp(d.timestamp() + 86_400, tz=UTC)
    months = {"M": 1, "Q": 3, "Y": 12}[freq]
    m = d.month - 1 + months
    return d.replace(year=d.year + m // 12, month=m % 12 + 1)


def _label(d: datetime, freq: str) -> str:
    if freq == "D":
        return d.strftime("%Y-%m-%d")
    if freq == "M":
        return d.strftime("%Y-%m")
    if freq == "Q":
        return f"{d.year}-Q{(d.month - 1) // 3 + 1}"
    return str(d.year)


def _ms(d: datetime) -> int:
    return round(d.timestamp() * 1000)


def _periods(first_ms: int, last_ms: int, freq: str) -> list[tuple[str, int, int]]:
    out = []
    d = _period_start(first_ms, freq)
    while _ms(d) <= last_ms:
        nxt = _next_period(d, freq)
        out.append((_label(d, freq), _ms(d), _ms(nxt)))
        d = nxt
    return out


def period_returns(curve: EquityCurve, freq: Literal["D", "M", "Q", "Y"]) -> list[PeriodReturn]:
    """Calendar-period returns (UTC) from the curve's first point to its last, every period listed.

    The first period's base is the curve's first point (the starting equity); each later period's base
    is the previous period's last equity, so the returns compound exactly to the curve's total return.
    """
    t, e = curve.times, curve.values
    out: list[PeriodReturn] = []
    base = float(e[0])
    for label, lo, hi in _periods(int(t[0]), int(t[-1]), freq):
        i_lo = int(np.searchsorted(t, lo, side="left"))
        i_hi = int(np.searchsorted(t, hi, side="left"))
        end = float(e[i_hi - 1]) if i_hi > 0 else base
        out.append(PeriodReturn(label=label, start_ms=lo, end_ms=hi, start_equity=base, end_equity=end,
                                points=i_hi - i_lo, ret=end / base - 1.0))
        base = end
    return out


class PeriodStats(_Frozen):
    """One calendar period's results (walk-forward stability): trades closed in it and its slice of the curve."""

    label: str
    start_ms: int
    end_ms: int = Field(description="Exclusive.")
    ret: float = Field(description="The period's return (as period_returns).")
    trades: TradeStats = Field(description="Trades closed in [start_ms, end_ms).")
    curve: CurveStats | None = Field(description="Stats of the curve inside the period, based on the last point "
                                     "before it; None when the period has no point.")


def period_stats(trades: Sequence[Trade], curve: EquityCurve, freq: Literal["M", "Q", "Y"]) -> list[PeriodStats]:
    out = []
    for pr in period_returns(curve, freq):
        inside = [t for t in trades if pr.start_ms <= t.closed_ms < pr.end_ms]
        sliced = curve.between(pr.start_ms, pr.end_ms - 1) if pr.points else None
        out.append(PeriodStats(label=pr.label, start_ms=pr.start_ms, end_ms=pr.end_ms, ret=pr.ret,
                               trades=trade_stats(inside), curve=curve_stats(sliced) if sliced is not None else None))
    return out


# --- Monte Carlo reshuffle of trade order ---------------------------------------------------------


class DrawdownDistribution(_Frozen):
    """Max drawdown of the observed trade order against `n` random orders of the same trades.

    Each path is initial + cumulative sum of the trades' money P&L (fixed-money, not compounded), so every
    order ends at the same equity; the drawdown is measured from the running peak, the initial equity
    included. A path that goes below zero has a drawdown above 1.
    """

    trades: int
    n: int = Field(description="Number of reshuffles.")
    seed: int
    initial: float
    final_equity: float = Field(description="initial + sum(pnl): the same for every order.")
    observed: float = Field(description="Max drawdown of the trades in their observed order, fraction.")
    q05: float
    q50: float
    q95: float
    mean: float
    worst: float
    share_worse: float = Field(description="Share of reshuffles whose max drawdown is strictly larger than observed.")


def _max_drawdown_paths(paths: np.ndarray) -> np.ndarray:
    """Max drawdown (fraction of the running peak) of each row of equity paths."""
    peaks = np.maximum.accumulate(paths, axis=1)
    return (1.0 - paths / peaks).max(axis=1)


def _pnls(pnls: Sequence[float], initial: float, n: int) -> np.ndarray:
    p = np.asarray(pnls, dtype=float)
    if p.ndim != 1:
        raise ValueError("reshuffled drawdowns: pnls must be a flat sequence of numbers")
    if not initial > 0:
        raise ValueError(f"reshuffled drawdowns: initial equity must be > 0, got {initial}")
    if n < 1:
        raise ValueError(f"reshuffled drawdowns: n must be >= 1, got {n}")
    bad = np.flatnonzero(~np.isfinite(p))
    if bad.size:
        raise ValueError(f"reshuffled drawdowns: pnl at position {int(bad[0])} is {p[bad[0]]}, not a finite number")
    return p


def reshuffled_paths(pnls: Sequence[float], initial: float, n: int = 2000, seed: int = 0) -> np.ndarray:
    """`n` equity paths (n x (trades + 1)): initial, then the cumulative P&L of a random order of the trades.

    Seeded (numpy's default_rng(seed)), so the same input always gives the same paths.
    """
    p = _pnls(pnls, initial, n)
    rng = np.random.default_rng(seed)
    shuffled = rng.permuted(np.tile(p, (n, 1)), axis=1)
    return np.hstack([np.full((n, 1), float(initial)), initial + np.cumsum(shuffled, axis=1)])


def reshuffled_drawdowns(pnls: Sequence[float], initial: float, n: int = 2000, seed: int = 0) -> DrawdownDistribution:
    """Max drawdown of the trades in observed order against `n` reshuffled orders (see DrawdownDistribution)."""
    p = _pnls(pnls, initial, n)
    observed_path = np.concatenate([[float(initial)], initial + np.cumsum(p)])
    observed = float(_max_drawdown_paths(observed_path[None, :])[0])
    dd = _max_drawdown_paths(reshuffled_paths(p, initial, n, seed))
    q05, q50, q95 = (float(x) for x in np.quantile(dd, [0.05, 0.5, 0.95]))
    return DrawdownDistribution(
        trades=p.size, n=n, seed=seed, initial=float(initial), final_equity=float(observed_path[-1]),
        observed=observed, q05=q05, q50=q50, q95=q95, mean=float(dd.mean()), worst=float(dd.max()),
        share_worse=float((dd > observed + 1e-12).mean()),
    )


__all__ = [
    "DAY_MS",
    "YEAR_MS",
    "Calibration",
    "CalibrationBin",
    "CurveStats",
    "DrawdownDistribution",
    "EquityCurve",
    "Performance",
    "PeriodReturn",
    "PeriodStats",
    "RMultipleStats",
    "Trade",
    "TradeStats",
    "calibration",
    "curve_stats",
    "exposure",
    "group_stats",
    "performance",
    "period_returns",
    "period_stats",
    "r_multiple_stats",
    "realised_curve",
    "reshuffled_drawdowns",
    "reshuffled_paths",
    "trade_stats",
]
