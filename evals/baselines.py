"""Baselines for evals: any rule strategy run alone over history, and buy-and-hold benchmarks.

Every claim about the LLM's value is measured against these. A strategy baseline replays history
bar by bar: at each close the strategy sees only candles closed by then (`Candles.closed_by`) and
funding settled by then; its vote becomes a market order filled at the next bar's open; its own
plan (stop, target, trailing schedule, time stop, exit flags) manages the trade.

FILL MODEL, TEMPORARY: `FillModel` below is a deliberately minimal stand-in for the paper broker
(ARCHITECTURE step 8) and is to be replaced by it once it exists, keeping `TradeRecord` as the
shared output. Its rules:
- market orders (entries, exit signals, time stops, end of data) fill at the next bar's open, or
  at the last close for the end of data, moved against the trade by `slippage` (a fraction);
- a stop triggers when the bar's range touches it and fills at the stop, or at the open when the
  bar opened beyond it (a gap), then slips; a target rests as a limit and fills at the target, or
  at the open when the bar opened beyond it, with no slippage;
- when one bar touches both, the stop is assumed first (the conservative reading of an OHLC bar);
- a fee of `fee_rate` x notional is paid on entry and on exit;
- an entry whose open has already crossed its stop or target is skipped (the broker's geometry
  check would reject it) and counted;
- one position at a time, sized at the whole current equity (1x, no leverage), compounding;
  an opposite vote closes the position and opens the reverse at the same open.
Trailing stops move at closes only (highs and lows of the bar just closed, ATR fixed at entry),
so they act from the next bar. Funding payments are not booked (spot-style P&L).

Buy-and-hold: each symbol bought at the first bar's open of the span and marked at every close;
the BTC/ETH basket puts half the equity in each at the first common bar and is not rebalanced.
Summary figures here (total return, max drawdown, win rate) are the minimum to read a run; the
evals metrics module is where the full statistics will live.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from theories.base import Theory, TheoryContext, TheoryError, TheoryParams
from theories.candles import Candles, iso
from theories.funding import FundingRates
from theories.strategies.rule import StrategyResult

ExitReason = Literal[
    "stop", "trailing_stop", "target", "exit_signal", "opposite_signal", "time_stop", "end_of_data"
]


class FillModel(BaseModel):
    """Fees and slippage of the temporary fill model (see the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    fee_rate: float = Field(0.001, ge=0, lt=0.1, description="Fee per fill as a fraction of notional (0.001 = 0.1%).")
    slippage: float = Field(
        0.0005, ge=0, lt=0.1, description="Adverse price move per market or stop fill, as a fraction of price."
    )


class TradeRecord(BaseModel):
    """One round trip. Prices in quote currency, quantity in base units, times UTC epoch ms."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    symbol: str
    strategy: str
    side: Literal["long", "short"]
    signal_time: int = Field(description="Close time of the bar whose vote opened the trade, ms.")
    entry_time: int = Field(description="Open time of the fill bar, ms.")
    entry_price: float
    quantity: float
    initial_stop: float | None
    target: float | None
    exit_time: int = Field(description="When the exit filled, ms (a bar open, or the last close).")
    exit_price: float
    exit_reason: ExitReason
    fees: float = Field(description="Entry plus exit fees, quote currency.")
    pnl: float = Field(description="Net profit, quote currency, fees included.")
    return_fraction: float = Field(description="Net pnl / entry notional.")
    r_multiple: float | None = Field(description="Net pnl / initial risk (entry to initial stop); None without a stop.")
    bars_held: int


class BaselineRun(BaseModel):
    """A baseline's trades and its equity marked at every bar close of the span."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    symbols: tuple[str, ...]
    fills: FillModel
    initial_equity: float
    equity_time: list[int] = Field(description="Bar close times, ms.")
    equity: list[float] = Field(description="Equity at each close, quote currency.")
    trades: list[TradeRecord]
    decisions: int = Field(0, description="Bar closes at which the strategy was asked.")
    unanswered: int = Field(0, description="Decisions where the strategy gave no answer (TheoryError).")
    skipped_entries: int = Field(0, description="Entries skipped because the open had crossed the stop or target.")
    first_error: str | None = None

    @property
    def final_equity(self) -> float:
        return self.equity[-1] if self.equity else self.initial_equity

    @property
    def total_return(self) -> float:
        return self.final_equity / self.initial_equity - 1.0

    @property
    def max_drawdown(self) -> float:
        """Largest fall from a running peak of the close-marked equity, as a fraction."""
        eq = np.asarray([self.initial_equity, *self.equity])
        return float(np.max(1.0 - eq / np.maximum.accumulate(eq)))

    @property
    def win_rate(self) -> float | None:
        return sum(t.pnl > 0 for t in self.trades) / len(self.trades) if self.trades else None

    def summary_row(self) -> dict[str, Any]:
        wr = self.win_rate
        return {
            "name": self.name, "trades": len(self.trades), "total_return": round(self.total_return, 6),
            "max_drawdown": round(self.max_drawdown, 6), "win_rate": None if wr is None else round(wr, 4),
        }


@dataclass
class _Position:
    side: int
    signal_time: int
    entry_time: int
    entry_bar: int
    entry_price: float
    quantity: float
    entry_fee: float
    initial_stop: float | None
    stop: float | None
    target: float | None
    target_is_limit: bool
    trail_atr: float | None
    trail_schedule: tuple[tuple[float, float], ...]
    min_hold_ms: int | None
    max_hold_ms: int | None
    best: float
    trailing: bool = False


def _span(candles: Candles, start_ms: int | None, end_ms: int | None) -> tuple[int, int]:
    """Indices [first, last] of the bars whose close lies in [start_ms, end_ms]."""
    closes = candles.close_time
    first = 0 if start_ms is None else int(np.searchsorted(closes, start_ms, side="left"))
    last = len(candles) - 1 if end_ms is None else int(np.searchsorted(closes, end_ms, side="right")) - 1
    if first > last:
        raise ValueError(f"{candles.symbol or candles.source}: no bar closes between the given start and end")
    return first, last


def run_strategy(
    theory: Theory,
    candles: Candles,
    *,
    params: TheoryParams | Mapping[str, Any] | None = None,
    funding: FundingRates | None = None,
    fills: FillModel | None = None,
    start_ms: int | None = None,
    end_ms: int | None = None,
    window: int = 500,
    initial_equity: float = 10_000.0,
) -> BaselineRun:
    """Run one rule strategy alone on one symbol over the bars closing in [start_ms, end_ms].

    Candles before `start_ms` are warm-up only. The theory must return a `StrategyResult`.
    """
    if not issubclass(theory.result, StrategyResult):
        raise TypeError(f"{theory.name} is not a rule strategy (its result is not a StrategyResult)")
    if initial_equity <= 0:
        raise ValueError(f"initial equity must be positive, got {initial_equity}")
    fm = fills or FillModel()
    p = params if isinstance(params, theory.params) else theory.params.model_validate(params or {})
    first, last = _span(candles, start_ms, end_ms)
    interval = candles.interval_ms
    o, h, lo, c, t = candles.open, candles.high, candles.low, candles.close, candles.time

    cash = initial_equity
    pos: _Position | None = None
    trades: list[TradeRecord] = []
    eq_time: list[int] = []
    eq: list[float] = []
    decisions = unanswered = skipped = 0
    first_error: str | None = None
    pending: tuple[int, StrategyResult, int] | None = None  # (vote, plan, signal time) to enter at next open
    exit_next: ExitReason | None = None

    def close_position(j: int, price: float, when: int, reason: ExitReason) -> None:
        nonlocal cash, pos
        assert pos is not None
        exit_fee = fm.fee_rate * price * pos.quantity
        gross = pos.side * (price - pos.entry_price) * pos.quantity
        cash += gross - exit_fee
        fees = pos.entry_fee + exit_fee
        pnl = gross - fees
        risk = abs(pos.entry_price - pos.initial_stop) * pos.quantity if pos.initial_stop is not None else 0.0
        trades.append(TradeRecord(
            symbol=candles.symbol, strategy=theory.name, side="long" if pos.side > 0 else "short",
            signal_time=pos.signal_time, entry_time=pos.entry_time, entry_price=pos.entry_price,
            quantity=pos.quantity, initial_stop=pos.initial_stop, target=pos.target, exit_time=when,
            exit_price=price, exit_reason=reason, fees=fees, pnl=pnl,
            return_fraction=pnl / (pos.entry_price * pos.quantity),
            r_multiple=pnl / risk if risk > 0 else None, bars_held=j - pos.entry_bar + (reason == "end_of_data"),
        ))
        pos = None

    for i in range(first, last + 1):
        # 1. orders decided at the previous close fill at this bar's open
        if exit_next is not None and pos is not None:
            close_position(i, o[i] * (1 - pos.side * fm.slippage), int(t[i]), exit_next)
        exit_next = None
        if pending is not None and pos is None:
            vote, plan, signal_time = pending
            fill = o[i] * (1 + vote * fm.slippage)
            crossed = (plan.stop is not None and vote * (fill - plan.stop) <= 0) or (
                plan.target is not None and plan.target_is_limit and vote * (plan.target - fill) <= 0
            )
            if crossed:
                skipped += 1
            else:
                qty = cash / fill
                fee = fm.fee_rate * fill * qty
                cash -= fee
                pos = _Position(
                    side=vote, signal_time=signal_time, entry_time=int(t[i]), entry_bar=i, entry_price=fill,
                    quantity=qty, entry_fee=fee, initial_stop=plan.stop, stop=plan.stop, target=plan.target,
                    target_is_limit=plan.target_is_limit, trail_atr=plan.trail_atr,
                    trail_schedule=plan.trail_schedule, min_hold_ms=_bars_ms(plan.min_hold_bars, interval),
                    max_hold_ms=_bars_ms(plan.max_hold_bars, interval), best=fill,
                )
        pending = None

        # 2. resting stop and target orders inside this bar (stop first when both are touched)
        if pos is not None:
            s = pos.side
            if pos.stop is not None and ((s > 0 and lo[i] <= pos.stop) or (s < 0 and h[i] >= pos.stop)):
                base = min(o[i], pos.stop) if s > 0 else max(o[i], pos.stop)
                close_position(i, base * (1 - s * fm.slippage), int(t[i]) + interval,
                               "trailing_stop" if pos.trailing else "stop")
            elif pos.target is not None and pos.target_is_limit and (
                (s > 0 and h[i] >= pos.target) or (s < 0 and lo[i] <= pos.target)
            ):
                base = max(o[i], pos.target) if s > 0 else min(o[i], pos.target)
                close_position(i, base, int(t[i]) + interval, "target")

        # 3. the strategy decides at this close, from candles closed by then
        at = int(t[i]) + interval
        history = candles.closed_by(at)
        ctx = TheoryContext(symbol=candles.symbol, at_ms=at, candles=history.tail(window), history=history,
                            funding=funding)
        decisions += 1
        try:
            plan: StrategyResult | None = theory(ctx, p)
        except TheoryError as exc:
            plan = None
            unanswered += 1
            first_error = first_error or f"{iso(at)}: {exc}"

        if pos is not None:
            s = pos.side
            pos.best = max(pos.best, h[i]) if s > 0 else min(pos.best, lo[i])
            _trail(pos)
            held = at - pos.entry_time
            may_exit = pos.min_hold_ms is None or held >= pos.min_hold_ms
            if pos.max_hold_ms is not None and held >= pos.max_hold_ms:
                exit_next = "time_stop"
            elif plan is not None and plan.vote == -s:
                exit_next = "opposite_signal"
                pending = (plan.vote, plan, at)
            elif plan is not None and may_exit and (plan.exit_long if s > 0 else plan.exit_short):
                exit_next = "exit_signal"
        elif plan is not None and plan.vote != 0:
            pending = (plan.vote, plan, at)

        eq_time.append(at)
        eq.append(cash if pos is None else cash + pos.side * (c[i] - pos.entry_price) * pos.quantity)

    if pos is not None:  # the span ends: close at the last close
        close_position(last, c[last] * (1 - pos.side * fm.slippage), int(t[last]) + interval, "end_of_data")
        eq[-1] = cash
    return BaselineRun(
        name=theory.name, symbols=(candles.symbol,), fills=fm, initial_equity=initial_equity, equity_time=eq_time,
        equity=eq, trades=trades, decisions=decisions, unanswered=unanswered, skipped_entries=skipped,
        first_error=first_error,
    )


def _bars_ms(bars: int | None, interval_ms: int) -> int | None:
    return None if bars is None else bars * interval_ms


def _trail(pos: _Position) -> None:
    """Tighten the stop by the trailing schedule: past k x initial risk in profit, trail m x ATR behind."""
    if pos.trail_atr is None or not pos.trail_schedule or pos.initial_stop is None or pos.stop is None:
        return
    risk = abs(pos.entry_price - pos.initial_stop)
    if risk <= 0:
        return
    profit_r = pos.side * (pos.best - pos.entry_price) / risk
    mult = None
    for step, m in pos.trail_schedule:
        if profit_r >= step:
            mult = m
    if mult is None:
        return
    candidate = pos.best - pos.side * mult * pos.trail_atr
    if pos.side * (candidate - pos.stop) > 0:  # stops only ever tighten
        pos.stop = candidate
        pos.trailing = True


def buy_and_hold(
    candles: Candles,
    *,
    fills: FillModel | None = None,
    start_ms: int | None = None,
    end_ms: int | None = None,
    initial_equity: float = 10_000.0,
) -> BaselineRun:
    """Buy at the open of the first bar closing in the span, mark at every close, sell at the last close."""
    return equal_weight_buy_and_hold(
        {candles.symbol: candles}, (candles.symbol,), fills=fills, start_ms=start_ms, end_ms=end_ms,
        initial_equity=initial_equity, name=f"buy_and_hold {candles.symbol}",
    )


def equal_weight_buy_and_hold(
    universe: Mapping[str, Candles],
    symbols: Sequence[str] = ("BTC/USDT", "ETH/USDT"),
    *,
    fills: FillModel | None = None,
    start_ms: int | None = None,
    end_ms: int | None = None,
    initial_equity: float = 10_000.0,
    name: str | None = None,
) -> BaselineRun:
    """Equal weights bought at the first bar open common to all symbols, never rebalanced.

    Bars are aligned by time; only bar times present for every symbol count (a gap in one leg
    skips that mark rather than inventing a price), and the interval must be the same for all.
    """
    missing = [s for s in symbols if s not in universe]
    if missing or not symbols:
        raise KeyError(f"no candles for {missing or 'an empty basket'}; have {sorted(universe)}")
    legs = [universe[s] for s in symbols]
    if len({leg.interval_ms for leg in legs}) != 1:
        raise ValueError(f"basket legs have different intervals: {[leg.interval_ms for leg in legs]}")
    interval = legs[0].interval_ms
    common = legs[0].time
    for leg in legs[1:]:
        common = np.intersect1d(common, leg.time)
    closes = common + interval
    keep = np.ones(len(common), bool)
    if start_ms is not None:
        keep &= closes >= start_ms
    if end_ms is not None:
        keep &= closes <= end_ms
    common = common[keep]
    closes = common + interval
    if not len(common):
        raise ValueError(f"no bar of {list(symbols)} closes at a common time in the given span")
    fm = fills or FillModel()
    per_leg = initial_equity / len(legs)
    qty, entry, fee_in, marks = [], [], [], []
    for leg in legs:
        idx = np.searchsorted(leg.time, common)
        price = leg.open[idx[0]] * (1 + fm.slippage)
        q = per_leg / (price * (1 + fm.fee_rate))  # the entry fee comes out of the leg's allocation
        qty.append(q)
        entry.append(price)
        fee_in.append(fm.fee_rate * price * q)
        marks.append(leg.close[idx])
    eq = sum(q * m for q, m in zip(qty, marks, strict=True))
    trades = []
    final = 0.0
    for s, leg_qty, price, fee, m in zip(symbols, qty, entry, fee_in, marks, strict=True):
        exit_price = m[-1] * (1 - fm.slippage)
        exit_fee = fm.fee_rate * exit_price * leg_qty
        pnl = (exit_price - price) * leg_qty - fee - exit_fee
        final += exit_price * leg_qty - exit_fee
        trades.append(TradeRecord(
            symbol=s, strategy=name or "equal_weight", side="long", signal_time=int(common[0]),
            entry_time=int(common[0]), entry_price=price, quantity=leg_qty, initial_stop=None, target=None,
            exit_time=int(closes[-1]), exit_price=exit_price, exit_reason="end_of_data",
            fees=fee + exit_fee, pnl=pnl, return_fraction=pnl / (price * leg_qty), r_multiple=None,
            bars_held=len(common),
        ))
    equity = [float(x) for x in eq]
    equity[-1] = final
    return BaselineRun(
        name=name or "equal_weight " + "/".join(s.split("/")[0] for s in symbols), symbols=tuple(symbols),
        fills=fm, initial_equity=initial_equity, equity_time=[int(x) for x in closes], equity=equity,
        trades=trades,
    )
