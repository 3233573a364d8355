"""What the alerts say: pure functions from decisions, positions and account facts to Telegram HTML.

Every number comes from the record it describes (the decision's signal, the gate's verdict, the
account snapshot, the broker's fill), never recomputed from something else. Text is Telegram HTML
(`parse_mode="HTML"`): every value is escaped with `html.escape`, the only tags are <b>, <i> and
<code>. Messages are capped below Telegram's 4096-character limit by trimming the free text
(reasoning, theory summaries) before escaping, never the numbers.
"""

from __future__ import annotations

import base64
import hashlib
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from html import escape
from typing import Literal

from pydantic import BaseModel, ConfigDict

# INFO: into the digest. WARNING: at once, silent. CRITICAL: at once, with sound (the levels).
# TRADE: a trade ticket or a position event, at once; with sound when it asks the person to act.
Level = Literal["INFO", "WARNING", "CRITICAL", "TRADE"]

MAX_TEXT = 4000  # Telegram refuses messages over 4096 characters (after entity parsing)

# Callback data: "<action>:<ticket id>", far inside Telegram's 64-byte limit.
EXECUTED, SKIPPED, CLOSED = "x", "s", "c"

# Theories shown when the signal cites fewer than three: what a trader reads first (agent.cycle.HIGHLIGHTS).
FALLBACK_THEORIES = ("regime", "kalman", "montecarlo")


class Alert(BaseModel):
    """One message to send: its idempotency key, level, text and inline buttons."""

    model_config = ConfigDict(frozen=True)

    key: str
    level: Level
    kind: str
    text: str
    buttons: tuple[tuple[tuple[str, str], ...], ...] = ()  # rows of (label, callback data)
    silent: bool = False
    decision_id: str | None = None
    ticket_id: str | None = None


def ticket_id_for(decision_id: str) -> str:
    """A short, stable ticket id: 'T' + 10 base32 characters (50 bits) of sha256(decision id)."""
    digest = hashlib.sha256(decision_id.encode()).digest()
    return "T" + base64.b32encode(digest).decode("ascii")[:10]


def price(x: float | None) -> str:
    """A price with enough digits to trade on (8 significant), thousands separated: 91,234.56 / 0.51234567."""
    if x is None or not math.isfinite(x):
        return "n/a"
    if abs(x) >= 1e7:  # whole units are the 8 significant digits' worth, without an exponent
        return f"{x:,.0f}"
    text = f"{x:.8g}"
    if "e" in text:  # tiny prices (below 1e-4) keep the short scientific form
        return text
    whole, _, frac = text.partition(".")
    return f"{int(whole):,}" + (f".{frac}" if frac else "") if whole.lstrip("-").isdigit() else text


def money(x: float | None, currency: str = "") -> str:
    if x is None or not math.isfinite(x):
        return "n/a"
    return f"{x:,.2f}" + (f" {currency}" if currency else "")


def signed_money(x: float, currency: str = "") -> str:
    return f"{x:+,.2f}" + (f" {currency}" if currency else "")


def pct(x: float | None, places: int = 2, sign: bool = False) -> str:
    if x is None or not math.isfinite(x):
        return "n/a"
    return f"{x:+.{places}%}" if sign else f"{x:.{places}%}"


def utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


def quote_of(symbol: str) -> str:
    return symbol.split("/")[1] if "/" in symbol else ""


def base_of(symbol: str) -> str:
    return symbol.split("/")[0]


def trim(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def one_line(reasoning: str, limit: int = 240) -> str:
    """The reasoning's first sentence (or line), trimmed: the ticket's one-line why."""
    first = reasoning.strip().splitlines()[0] if reasoning.strip() else ""
    for stop in (". ", "; "):
        if stop in first:
            first = first.split(stop, 1)[0] + stop.strip()
            break
    return trim(first, limit)


def top_theories(cited: Sequence[str], available: Mapping[str, str], n: int = 3) -> list[tuple[str, str]]:
    """The `n` theories that mattered most, with their summaries.

    Ranking: the theories the signal says it relied on, in the order it cited them (the synthesiser
    names its main reasons first), among those the snapshot holds; then, to fill up, the cycle's
    highlights (regime, trend filter, bracket odds). `available` maps name -> summary.
    """
    picked = [t for t in dict.fromkeys(cited) if t in available][:n]
    for t in FALLBACK_THEORIES:
        if len(picked) >= n:
            break
        if t in available and t not in picked:
            picked.append(t)
    return [(t, available[t]) for t in picked]


class Ticket(BaseModel):
    """The facts of one approved decision a signal alert shows (all from the decision's records)."""

    model_config = ConfigDict(frozen=True)

    decision_id: str
    ticket_id: str
    run: str
    symbol: str
    direction: Literal["LONG", "SHORT"]
    entry: float
    stop: float
    target: float
    reward_risk_net: float
    quantity: float
    notional: float
    risk_amount: float
    equity: float
    confidence: float
    win_probability: float
    regime: str | None
    theories: tuple[tuple[str, str], ...]
    reasoning: str
    decision_ms: int
    expires_ms: int
    manual: bool  # the manual broker waits for the person's answer: buttons
    order_status: str | None = None


def signal_text(t: Ticket) -> str:
    q = quote_of(t.symbol)
    gross_rr = abs(t.target - t.entry) / abs(t.entry - t.stop)
    arrow = "🟢" if t.direction == "LONG" else "🔴"
    lines = [
        f"{arrow} <b>{escape(t.direction)} {escape(t.symbol)}</b>  ·  ticket <code>{escape(t.ticket_id)}</code>",
        f"Entry <b>{price(t.entry)}</b>  ·  Stop <b>{price(t.stop)}</b>  ·  Target <b>{price(t.target)}</b>",
        f"Reward:risk {gross_rr:.2f} (net of fees {t.reward_risk_net:.2f})",
        f"Size {price(t.quantity)} {escape(base_of(t.symbol))} = {money(t.notional, q)} notional",
        f"Risk {money(t.risk_amount, q)} = {pct(t.risk_amount / t.equity if t.equity > 0 else None)} of equity "
        f"{money(t.equity, q)}",
        f"Confidence {t.confidence:.2f} (sized on p = {t.win_probability:.2f})  ·  Regime {escape(t.regime or 'n/a')}",
    ]
    if t.theories:
        lines.append("Theories:")
        lines += [f"• <i>{escape(name)}</i>: {escape(trim(summary, 220))}" for name, summary in t.theories]
    lines.append(f"Why: {escape(one_line(t.reasoning))}")
    lines.append(f"Decision <code>{escape(t.decision_id)}</code> at {utc(t.decision_ms)}")
    if t.manual:
        lines.append(f"Valid until <b>{utc(t.expires_ms)}</b>; after that the ticket is stale, do not trade it.")
        lines.append("Executed? Press the button, then reply with your fill price.")
    else:
        lines.append(f"Order {escape(t.order_status or 'recorded')} in run {escape(t.run)}: the broker executes it, "
                     "no action needed.")
    return "\n".join(lines)[:MAX_TEXT]


def ticket_buttons(ticket_id: str) -> tuple[tuple[tuple[str, str], ...], ...]:
    return ((("Executed", f"{EXECUTED}:{ticket_id}"), ("Skipped", f"{SKIPPED}:{ticket_id}")),)


def close_button(ticket_id: str) -> tuple[tuple[tuple[str, str], ...], ...]:
    return ((("Closed: report exit price", f"{CLOSED}:{ticket_id}"),),)


def entry_text(symbol: str, side: str, quantity: float, fill: float, reference: float | None, stop: float,
               target: float, fee: float, ticket_id: str | None, at_ms: int) -> str:
    slip = ""
    if reference:
        adverse = (fill - reference) / reference * (1 if side == "LONG" else -1)
        slip = f" (ticket entry {price(reference)}, slippage {pct(adverse, sign=True)})"
    tid = f"  ·  ticket <code>{escape(ticket_id)}</code>" if ticket_id else ""
    return (f"✅ <b>Entry filled</b> {escape(side)} {escape(symbol)}{tid}\n"
            f"{price(quantity)} {escape(base_of(symbol))} @ <b>{price(fill)}</b>{slip}, fee {money(fee)}\n"
            f"Stop {price(stop)}  ·  Target {price(target)}  ·  at {utc(at_ms)}")


EXIT_WORDS = {"stop": "🛑 Stop hit", "target": "🎯 Target hit", "time_stop": "⏱ Time stop",
              "break_even": "Break-even stop hit", "trailing": "Trailing stop hit", "partial_target": "Partial target",
              "manual": "Closed by you", "closed": "Closed"}


def closed_text(symbol: str, side: str, quantity: float, entry: float, exit_price: float, pnl: float,
                r_multiple: float, fees: float, reason: str, at_ms: int) -> str:
    q = quote_of(symbol)
    head = EXIT_WORDS.get(reason, escape(reason))
    return (f"<b>{head}</b>: {escape(side)} {escape(symbol)} closed\n"
            f"{price(quantity)} {escape(base_of(symbol))}: entry {price(entry)} → exit <b>{price(exit_price)}</b>\n"
            f"P&amp;L <b>{signed_money(pnl, q)}</b> ({r_multiple:+.2f} R), fees {money(fees, q)}  ·  at {utc(at_ms)}")


def reached_text(symbol: str, side: str, what: Literal["stop", "target", "time_stop"], level: float | None,
                 touched: float | None, entry: float, quantity: float, risk: float, at_ms: int, ticket_id: str) -> str:
    """A manual position's stop or target was touched (or its time stop passed): the person must act."""
    q = quote_of(symbol)
    sign = 1 if side == "LONG" else -1
    exit_at = touched if what == "time_stop" else level
    pnl = sign * quantity * ((exit_at or entry) - entry)
    r = pnl / risk if risk > 0 else float("nan")
    head = {"stop": "🛑 <b>Stop reached</b>", "target": "🎯 <b>Target reached</b>",
            "time_stop": "⏱ <b>Time stop reached</b>"}[what]
    where = (f"price {price(touched)} touched the {what} {price(level)}" if what != "time_stop"
             else f"the idea's horizon ended; last close {price(touched)}")
    return (f"{head}: {escape(side)} {escape(symbol)}  ·  ticket <code>{escape(ticket_id)}</code>\n"
            f"{where} ({utc(at_ms)})\n"
            f"P&amp;L there ≈ <b>{signed_money(pnl, q)}</b> ({r:+.2f} R) before fees, on {price(quantity)} "
            f"{escape(base_of(symbol))} from {price(entry)}\n"
            "Close the position, then press Closed and reply with your exit price.")


def digest_text(items: Sequence[tuple[int, str]]) -> str:
    """INFO alerts gathered into one message: (created ms, text) oldest first."""
    head = f"ℹ️ <b>Digest</b>: {len(items)} note(s)"
    out = [head]
    used = len(head)
    for i, (ms, text) in enumerate(items):
        line = f"• {utc(ms)}: {text}"
        if used + len(line) + 60 > MAX_TEXT:
            out.append(f"… and {len(items) - i} more (see the store)")
            break
        out.append(line)
        used += len(line) + 1
    return "\n".join(out)


def level_text(level: Level, title: str, body: str) -> str:
    icon = {"INFO": "ℹ️", "WARNING": "⚠️", "CRITICAL": "🚨", "TRADE": "💱"}[level]
    return f"{icon} <b>{escape(level)}: {escape(title)}</b>\n{escape(trim(body, 3000))}"[:MAX_TEXT]
