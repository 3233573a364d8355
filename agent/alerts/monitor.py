"""Alerts raised by watching the store and each cycle's result, not by a single decision.

- `store_events`: position events the brokers recorded (entry fills, closed trades with P&L and
  the exit reason) and reconciliation mismatches (CRITICAL), from the run's rows recorded since
  alerts were first switched on for the run (no flood of history on the first start). Keys are
  the rows' own ids, so rescanning queues nothing twice.
- `manual_position_events`: a manual position is never exited by the broker; the person is told
  when a closed candle touched the stop or the target, or the time stop passed.
- `cycle_events`: WARNINGs for stale, gapped or unreadable data, failed analyses and failed LLM calls
  (fail-closed HOLDs: API errors, timeouts, the budget, unusable output), a CRITICAL
  when the kill switch refused trades, and WARNINGs when a loss or exposure limit is nearly used.
  Keys carry the symbol or limit and the UTC day: at most one such alert per day each.
- `risk_status`: how much of each FTMO-style limit is used (for the warnings and the daily report),
  with the limits from `RiskConfig` and the trading day of `risk.trading_day`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime

import numpy as np
from pydantic import BaseModel, ConfigDict
from sqlmodel import select

from agent.alerts.messages import (
    Alert,
    close_button,
    closed_text,
    entry_text,
    level_text,
    reached_text,
    ticket_id_for,
)
from agent.store.store import Store
from agent.store.tables import (
    AccountSnapshotRow,
    ClosedTradeRow,
    CycleRow,
    FillRow,
    MismatchRow,
    OrderRow,
    PositionRow,
    SignalRow,
    StateRow,
)
from risk.config import RiskConfig
from risk.inputs import BalanceChange
from risk.trading_day import balance_at, period_start_ms
from theories.candles import CandleDataError, iso


def since_key(run: str) -> str:
    return f"alerts:since:{run}"


def alerts_since(store: Store, run: str, now_ms: int) -> int:
    """When alerts were switched on for `run` (recorded on the first call): older rows are history."""
    state = store.state(since_key(run))
    if state is not None:
        return int(state["since_ms"])
    with store.session() as s:
        if s.get(StateRow, since_key(run)) is None:
            s.add(StateRow(key=since_key(run), value_json=json.dumps({"since_ms": now_ms}), cycle_id="",
                           updated_ms=now_ms))
            s.commit()
    return int(store.state(since_key(run))["since_ms"])


def _run_cycles(run: str):
    return select(CycleRow.cycle_id).where(CycleRow.run == run)


def store_events(store: Store, run: str, now_ms: int) -> list[Alert]:
    since = alerts_since(store, run, now_ms)
    out: list[Alert] = []
    with store.session() as s:
        fills = s.exec(select(FillRow, OrderRow).join(OrderRow, OrderRow.client_order_id == FillRow.client_order_id)
                       .where(FillRow.cycle_id.in_(_run_cycles(run)), FillRow.time_ms >= since,
                              FillRow.action == "open").order_by(FillRow.time_ms)).all()
        for f, o in fills:
            sig = s.get(SignalRow, f.decision_id)
            tid = ticket_id_for(f.decision_id) if o.broker == "manual" else None
            out.append(Alert(key=f"fill:{f.fill_id}", level="TRADE", kind="position", silent=True,
                             text=entry_text(f.symbol, f.side, f.quantity, f.price, sig.entry if sig else None,
                                             o.stop, o.target, f.fee, tid, f.time_ms),
                             buttons=close_button(tid) if tid else (), decision_id=f.decision_id, ticket_id=tid))
        trades = s.exec(select(ClosedTradeRow).where(ClosedTradeRow.cycle_id.in_(_run_cycles(run)),
                                                     ClosedTradeRow.closed_ms >= since)
                        .order_by(ClosedTradeRow.closed_ms)).all()
        for t in trades:
            out.append(Alert(key=f"closed:{t.client_order_id}", level="TRADE", kind="position", silent=False,
                             text=closed_text(t.symbol, t.side, t.quantity, t.entry, t.exit, t.pnl, t.r_multiple,
                                              t.fees, t.exit_reason, t.closed_ms),
                             decision_id=t.decision_id))
        mismatches = s.exec(select(MismatchRow).where(MismatchRow.cycle_id.in_(_run_cycles(run)),
                                                      MismatchRow.time_ms >= since).order_by(MismatchRow.id)).all()
        for m in mismatches:
            what = f"{m.kind}" + (f" {m.symbol}" if m.symbol else "") + (f" order {m.client_order_id}"
                                                                          if m.client_order_id else "")
            out.append(Alert(key=f"mismatch:{m.id}", level="CRITICAL", kind="critical",
                             text=level_text("CRITICAL", f"reconciliation mismatch: {what}",
                                             f"{m.detail} (the exchange's view was adopted)")))
    return out


def manual_position_events(store: Store, run: str, candles: Mapping[str, object], now_ms: int) -> list[Alert]:
    """Stop / target touched by a closed candle since the position opened, or the time stop passed."""
    out: list[Alert] = []
    with store.session() as s:
        stmt = (select(PositionRow, OrderRow).join(OrderRow, OrderRow.client_order_id == PositionRow.client_order_id)
                .where(OrderRow.broker == "manual", OrderRow.cycle_id.in_(_run_cycles(run))))
        rows = s.exec(stmt).all()
    for p, o in rows:
        tid = ticket_id_for(p.decision_id)
        sign = 1 if p.side == "LONG" else -1
        risk = p.quantity * abs(p.entry - o.stop)
        c = candles.get(p.symbol)
        if c is not None:
            try:
                done = c.closed_by(now_ms)
            except (CandleDataError, ValueError):
                done = None
            if done is not None and len(done):
                after = done.time + done.interval_ms > p.opened_ms  # bars that closed after the entry
                lows, highs, times = done.low[after], done.high[after], done.time[after]
                adverse = lows if sign > 0 else highs
                favourable = highs if sign > 0 else lows
                hit_stop = np.nonzero(sign * (adverse - p.stop) <= 0)[0]
                hit_target = np.nonzero(sign * (favourable - p.target) >= 0)[0]
                for what, hits, level, series in (("stop", hit_stop, p.stop, adverse),
                                                  ("target", hit_target, p.target, favourable)):
                    if len(hits):
                        i = int(hits[0])
                        at = int(times[i]) + done.interval_ms
                        out.append(Alert(
                            key=f"reached:{p.client_order_id}:{what}", level="TRADE", kind="position",
                            text=reached_text(p.symbol, p.side, what, level, float(series[i]), p.entry, p.quantity,
                                              risk, at, tid),
                            buttons=close_button(tid), decision_id=p.decision_id, ticket_id=tid))
        if now_ms >= p.time_stop_ms:
            out.append(Alert(key=f"reached:{p.client_order_id}:time_stop", level="TRADE", kind="position",
                             text=reached_text(p.symbol, p.side, "time_stop", None, p.mark, p.entry, p.quantity, risk,
                                               p.time_stop_ms, tid),
                             buttons=close_button(tid), decision_id=p.decision_id, ticket_id=tid))
    return out


class LimitStatus(BaseModel):
    """How much of one limit is used: `used` = 1 means at the limit."""

    model_config = ConfigDict(frozen=True)

    name: str  # daily_loss | total_loss | open_exposure
    value: float  # loss or exposure now, quote currency
    limit: float  # the limit, quote currency
    used: float  # value / limit (negative: a gain)
    detail: str


def risk_status(store: Store, run: str, risk: RiskConfig, now_ms: int) -> list[LimitStatus]:
    """Daily loss (from the day-start closed balance, on equity), total loss (from the initial balance) and
    open exposure (notional / equity), each against its `RiskConfig` limit. Empty before the first cycle."""
    with store.session() as s:
        snaps = s.exec(select(AccountSnapshotRow).where(AccountSnapshotRow.cycle_id.in_(_run_cycles(run)),
                                                        AccountSnapshotRow.time_ms <= now_ms)
                       .order_by(AccountSnapshotRow.time_ms, AccountSnapshotRow.id)).all()
        positions = s.exec(select(PositionRow).join(OrderRow, OrderRow.client_order_id == PositionRow.client_order_id)
                           .where(OrderRow.cycle_id.in_(_run_cycles(run)))).all()
    if not snaps:
        return []
    last = snaps[-1]
    initial, equity = last.initial_balance, last.equity
    ledger = [BalanceChange(time_ms=a.time_ms, balance=a.balance) for a in snaps]
    day_start = period_start_ms(now_ms, "day", risk.ftmo.timezone)
    day_balance = balance_at(ledger, day_start, initial)  # FTMO: the closed balance at local midnight
    daily_limit = risk.ftmo.daily_loss_limit * initial
    total_limit = risk.ftmo.total_loss_limit * initial
    exposure = sum(abs(p.quantity * p.mark) for p in positions)
    exposure_limit = risk.sizing.max_open_exposure * equity if equity > 0 else 0.0
    daily_loss, total_loss = day_balance - equity, initial - equity
    return [
        LimitStatus(name="daily_loss", value=daily_loss, limit=daily_limit, used=daily_loss / daily_limit,
                    detail=f"equity {equity:,.2f} vs day-start balance {day_balance:,.2f}; floor "
                           f"{day_balance - daily_limit:,.2f} ({risk.ftmo.daily_loss_limit:.1%} of initial)"),
        LimitStatus(name="total_loss", value=total_loss, limit=total_limit, used=total_loss / total_limit,
                    detail=f"equity {equity:,.2f} vs initial {initial:,.2f}; floor {initial - total_limit:,.2f} "
                           f"({risk.ftmo.total_loss_limit:.1%})"),
        LimitStatus(name="open_exposure", value=exposure, limit=exposure_limit,
                    used=exposure / exposure_limit if exposure_limit > 0 else 0.0,
                    detail=f"open notional {exposure:,.2f} vs {risk.sizing.max_open_exposure:.0%} of equity"),
    ]


def _day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d")


DATA_WORDS = ("stale", "gapped", "invalid data", "only ")


def cycle_events(result, store: Store, risk: RiskConfig, near_limit: float) -> list[Alert]:
    """Warnings and criticals from one cycle's result (`agent.cycle.CycleResult`) and the account after it."""
    day = _day(result.decision_ms)
    out: list[Alert] = []
    for r in result.results:
        if r.resumed:
            continue
        if r.outcome == "skipped" and any(w in r.reason for w in DATA_WORDS):
            out.append(Alert(key=f"data:{result.run}:{r.symbol}:{day}", level="WARNING", kind="warning", silent=True,
                             text=level_text("WARNING", f"data problem: {r.symbol}", r.reason)))
        elif r.outcome == "error":
            out.append(Alert(key=f"error:{r.decision_id}", level="WARNING", kind="warning", silent=True,
                             text=level_text("WARNING", f"analysis failed: {r.symbol}", r.reason),
                             decision_id=r.decision_id))
        if any(x.code == "kill_switch_on" for x in r.reasons):
            out.append(Alert(key=f"kill_switch:{result.run}:{day}", level="CRITICAL", kind="critical",
                             text=level_text("CRITICAL", "kill switch is on",
                                             "every trade is refused until it is switched off (config [risk] "
                                             "kill_switch, or SIGNAL_AGENT_KILL_SWITCH)")))
    with store.session() as s:  # fail-closed HOLDs: the LLM call failed (API error, timeout, budget, bad output)
        failed = s.exec(select(SignalRow).where(SignalRow.cycle_id == result.cycle_id,
                                                SignalRow.hold_reason.is_not(None))).all()
    if failed:
        body = "; ".join(f"{f.symbol}: {f.hold_reason}" for f in failed)
        out.append(Alert(key=f"llm:{result.cycle_id}", level="WARNING", kind="warning", silent=True,
                         text=level_text("WARNING", f"LLM failed for {len(failed)} symbol(s); held (fail-closed)",
                                         body)))
    for status in risk_status(store, result.run, risk, result.decision_ms):
        if status.used >= near_limit:
            out.append(Alert(key=f"limit:{result.run}:{status.name}:{day}", level="WARNING", kind="warning",
                             silent=True,
                             text=level_text("WARNING", f"{status.name.replace('_', ' ')} at {status.used:.0%} "
                                             "of its limit", status.detail)))
    return out


def crash_alert(run: str, at_ms: int, error: BaseException) -> Alert:
    return Alert(key=f"crash:{run}:{at_ms}", level="CRITICAL", kind="critical",
                 text=level_text("CRITICAL", f"the cycle at {iso(at_ms)} failed",
                                 f"{type(error).__name__}: {error}"))

