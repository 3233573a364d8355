"""The daily report (and /report): equity and its change, results per variant and per symbol, open
positions with their distance to the stop, each risk limit's use, and the signals sent and executed.

Performance figures come from the one metrics code: `evals.ledger.load_ledger` reads the run's
trades, equity curve and manual tickets out of the store, `evals.metrics.group_stats` aggregates
them; `agent.review.paper_vs_evals` adds its consistency line per variant. Nothing is
computed here beyond a difference of two equity readings and distances to stops.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from html import escape
from zoneinfo import ZoneInfo

from sqlalchemy import func
from sqlmodel import select

from agent.alerts.messages import MAX_TEXT, money, pct, price, quote_of, signed_money
from agent.alerts.monitor import risk_status
from agent.alerts.settings import TelegramSettings
from agent.store.store import Store
from agent.store.tables import CycleRow, OrderRow, OutboxRow, PositionRow
from evals.ledger import LedgerError, load_ledger
from evals.metrics import TradeStats, group_stats
from risk.config import RiskConfig

log = logging.getLogger("signal_agent.alerts")

DAY_MS = 86_400_000


def _stats_line(name: str, s: TradeStats, currency: str) -> str:
    win = "n/a" if s.win_rate is None else f"{s.win_rate:.0%}"
    avg_r = "n/a" if s.avg_r is None else f"{s.avg_r:+.2f} R"
    pnl = signed_money(s.total_pnl, currency)
    return f"• {escape(name)}: {s.trades} trade(s), win {win}, P&amp;L {pnl}, avg {avg_r}"


def _paper_vs_evals(ledger, settings: object | None) -> list[str]:
    """The review's consistency line per variant (`agent.review.paper_vs_evals`, on the ledger already read)."""
    from agent.review import paper_vs_evals

    try:
        return [c.line for c in paper_vs_evals(ledger, settings)]
    except Exception as exc:  # e.g. an unreadable runs folder: the report must still go out, saying so
        log.warning("alerts: paper-vs-evals failed: %s", exc)
        return [f"paper vs evals unavailable: {type(exc).__name__}: {exc}"]


def daily_report(store: Store, run: str, risk: RiskConfig, tg: TelegramSettings, now_ms: int,
                 settings: object | None = None) -> str:
    """The report as Telegram HTML, for the 24 hours before `now_ms` and since the run began."""
    zone = ZoneInfo(tg.timezone)
    local = datetime.fromtimestamp(now_ms / 1000, tz=UTC).astimezone(zone)
    lines = [f"📊 <b>Daily report</b> · run <code>{escape(run)}</code> · {local:%Y-%m-%d %H:%M} {escape(tg.timezone)}"]
    try:
        ledger = load_ledger(store, run=run, until_ms=now_ms)
    except LedgerError as exc:
        return "\n".join([*lines, f"No data yet: {escape(str(exc))}"])
    day_start = now_ms - DAY_MS
    currency = ""
    with store.session() as s:
        positions = s.exec(select(PositionRow).join(OrderRow, OrderRow.client_order_id == PositionRow.client_order_id)
                           .join(CycleRow, CycleRow.cycle_id == OrderRow.cycle_id).where(CycleRow.run == run)
                           .order_by(PositionRow.opened_ms)).all()
        signals_sent = s.exec(select(func.count()).select_from(OutboxRow).where(
            OutboxRow.run == run, OutboxRow.kind == "signal", OutboxRow.status == "sent",
            OutboxRow.sent_ms >= day_start)).one()
    if ledger.trades:
        currency = quote_of(ledger.trades[0].symbol)
    elif positions:
        currency = quote_of(positions[0].symbol)

    curve = ledger.curve
    if curve is not None and curve.equity:
        now_eq = curve.equity[-1]
        before = [e for t, e in zip(curve.time_ms, curve.equity, strict=True) if t <= day_start]
        ref = before[-1] if before else curve.equity[0]
        initial = ledger.initial_balance or curve.equity[0]
        lines.append(f"Equity <b>{money(now_eq, currency)}</b>: {signed_money(now_eq - ref, currency)} "
                     f"({pct(now_eq / ref - 1 if ref else None, sign=True)}) in 24 h, "
                     f"{pct(now_eq / initial - 1 if initial else None, sign=True)} since the start ({money(initial)})")
    else:
        lines.append("Equity: no cycle recorded yet")

    today = [t for t in ledger.trades if t.closed_ms > day_start]
    lines.append(f"<b>Closed trades</b>: {len(today)} in 24 h, {len(ledger.trades)} in all")
    for title, key in (("by variant", lambda t: t.variant), ("by symbol", lambda t: t.symbol)):
        groups = group_stats(ledger.trades, key)
        if groups:
            lines.append(f"<i>{title} (all time)</i>")
            lines += [_stats_line(name, st, currency) for name, st in sorted(groups.items())]

    lines.append(f"<b>Open positions</b>: {len(positions)}")
    for p in positions:
        sign = 1 if p.side == "LONG" else -1
        to_stop = sign * (p.mark - p.stop) / p.mark
        r_now = sign * (p.mark - p.entry) / abs(p.entry - p.stop) if p.entry != p.stop else float("nan")
        lines.append(f"• {escape(p.side)} {escape(p.symbol)} {price(p.quantity)} @ {price(p.entry)}, mark "
                     f"{price(p.mark)}, P&amp;L {signed_money(p.floating_pnl, currency)} ({r_now:+.2f} R); "
                     f"stop {price(p.stop)} is {pct(to_stop)} away")

    status = risk_status(store, run, risk, now_ms)
    if status:
        lines.append("<b>Risk limits</b>")
        for st in status:
            lines.append(f"• {st.name.replace('_', ' ')}: {pct(st.used, 0)} of the limit "
                         f"({money(st.value)} of {money(st.limit)}); {escape(st.detail)}")

    m = ledger.manual
    sent_total = sum(1 for d in ledger.decisions if d.outcome == "ordered")
    lines.append(f"<b>Signals</b>: {signals_sent} alert(s) sent in 24 h; {sent_total} approved order(s) in all")
    if m.tickets:
        rate = "n/a" if m.execution_rate is None else f"{m.execution_rate:.0%}"
        slip = "" if m.mean_slippage is None else f", mean slippage {pct(m.mean_slippage, sign=True)}"
        lines.append(f"Tickets: {m.tickets}, executed {m.executed}, skipped {m.skipped}, pending {m.pending}, "
                     f"withdrawn {m.other} (execution rate {rate}{slip})")
    comparisons = _paper_vs_evals(ledger, settings)
    if comparisons:
        lines.append("<b>Paper vs evals</b>")
        lines += [f"• {escape(line)}" for line in comparisons]
    while len("\n".join(lines)) > MAX_TEXT - 20:  # whole lines only: a cut tag would make Telegram refuse it
        lines.pop(-2 if len(lines) > 2 else -1)
    return "\n".join(lines)


def report_due(tg: TelegramSettings, now_ms: int) -> str | None:
    """The local date whose report is due at `now_ms` (report time passed today), or None before it."""
    local = datetime.fromtimestamp(now_ms / 1000, tz=UTC).astimezone(ZoneInfo(tg.timezone))
    if (local.hour, local.minute) >= (tg.report_clock.hour, tg.report_clock.minute):
        return f"{local:%Y-%m-%d}"
    return None
