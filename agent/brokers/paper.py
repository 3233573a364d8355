"""The paper broker: orders filled on later candles, with fees, slippage and the full exit rules.

No backtesting library fits here: the cycle needs a broker it can advance one decision time at a
time, persist between processes and share with the live broker's interface, with these rules
stated exactly (a backtester's vectorised loop over a whole history does none of that).

Entry (an order decided at time t fills only on bars that open at or after t):
- market: the open of the next bar, plus slippage against the trader (the order's own `slippage`,
  estimated from the live order book when one existed at decision time, else `slippage`, a fraction of
  the price), taker fee;
- limit: the first bar whose range reaches the limit (low <= limit for a LONG, high >= limit for
  a SHORT), at the limit or at the open when the bar opens through it; maker fee, no slippage. A
  limit not touched by `valid_until_ms` (or by its time stop) expires.

Exits, bar by bar, with the levels in force at the bar's open:
- a bar that opens through the stop (target) exits at the open: gaps fill at the gap price;
- stop touched (low <= stop for a LONG): exit at the stop less slippage, taker fee. The reason
  is `stop`, or `break_even` / `trailing` when one of those moved it;
- target touched: exit at the target, maker fee (a resting limit);
- **both touched in one bar: the stop is assumed**. Candles do not say which came first, and
  assuming the worse is the only choice that cannot flatter the strategy;
- in the bar the entry itself filled, a market entry (at the open) is exposed to the whole bar;
  a limit entry filled inside the bar is exposed only to its stop there, as its target might
  have been touched before the fill;
- partial exit (optional, `partial_fraction` > 0): at the first target, `first_target_r` times
  the initial risk from the entry, that share closes (maker fee) and the rest keeps running
  with its stop at the entry and trailing (at `trailing_stop`, else at the initial risk distance);
- time stop: still open at the close of the first bar closing at or after the time stop: exit
  at that close less slippage, taker fee.
After the bar the levels move for the next one, using the bar's extreme in the trade's favour:
- break-even: once the price has gone `break_even_trigger` (0.25%) beyond the entry in the
  trade's favour, the stop moves to the entry;
- trailing (`trailing_stop` set): the stop follows the best price at that fraction behind it,
  never moving back.

Memory (the exported state is written with every decision that changes it, so it must not grow
with the account's age; every order, fill and trade is in the store for good):
- a finished order (a terminal status and no open position) is kept for `KEEP_FINISHED_MS`
  (7 days) after the first sync that saw it finished, then forgotten: `order()` no longer knows
  it and `orders()` no longer lists it, while its client order id stays on the `retired` list,
  so the same decision is never placed again (submitting it is a BrokerError);
- the balance ledger keeps `KEEP_LEDGER_MS` (62 days) of entries plus the one in force before
  them. Its one reader, the risk gate, asks for the balance at the start of the day, week and
  month (`risk.trading_day.ledger_in_force`), never more than 32 days back.
Measured by `bench/broker_state.py` (a trade every 3 hours): after 1,000 finished trades the
memory kept whole was 771 KB and a write (export and JSON) 28 ms; with this, 110 KB and 2.6 ms,
and it grows by 34 bytes a trade (the retired id) instead of about 770.

Accounting (quote currency): a LONG pays quantity x price + fee from cash, a SHORT receives
quantity x price - fee; closing reverses it. equity = cash + sum(signed quantity x mark),
balance = cash + sum(signed quantity x entry), so the balance changes only by closed P&L and
fees. A closed trade's P&L is net of both fees; its R multiple is P&L over the initial risk,
quantity x |entry - initial stop|.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from agent.brokers.base import (
    TERMINAL_STATUSES,
    AccountSnapshot,
    Broker,
    BrokerError,
    ClosedTrade,
    ExitReason,
    Fill,
    OrderIntent,
    OrderState,
    OrderStatus,
    Position,
    SyncReport,
)
from theories.candles import Candles

# How long a finished order stays in the broker's memory after the first sync that saw it finished.
KEEP_FINISHED_MS = 7 * 86_400_000
# How far back the balance ledger is kept (with the entry in force before): the gate reads the month's start.
KEEP_LEDGER_MS = 62 * 86_400_000


class PaperSettings(BaseModel):
    """Config section `[paper]`. Rates are fractions (0.001 = 0.1%)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    initial_cash: float = Field(10_000.0, gt=0, description="Starting balance, quote currency.")
    taker_fee: float = Field(0.001, ge=0, lt=0.05, description="Fee of market fills (entries, stops, time stops).")
    maker_fee: float = Field(0.001, ge=0, lt=0.05, description="Fee of resting-limit fills (limit entries, targets).")
    slippage: float = Field(0.0005, ge=0, lt=0.05, description="Market fills move this fraction against the trader.")
    break_even_trigger: float | None = Field(
        0.0025, gt=0, lt=1, description="Move the stop to the entry after this favourable move; None: never."
    )
    trailing_stop: float | None = Field(
        None, gt=0, lt=1, description="Trail the stop this fraction behind the best price; None: no trailing."
    )
    partial_fraction: float = Field(0.0, ge=0, lt=1, description="Share closed at the first target; 0: no partial.")
    first_target_r: float = Field(1.0, gt=0, description="The first target, in initial-risk multiples from the entry.")


class _Book(BaseModel):
    """The paper broker's whole memory (what `export_state` saves)."""

    model_config = ConfigDict(extra="forbid")

    initial_cash: float
    cash: float
    orders: dict[str, OrderState] = Field(default_factory=dict)
    positions: dict[str, Position] = Field(default_factory=dict)
    marks: dict[str, float] = Field(default_factory=dict)
    mark_times: dict[str, int] = Field(default_factory=dict)
    processed_ms: dict[str, int] = Field(
        default_factory=dict, description="Per client order id: close time of the last bar applied."
    )
    ledger: list[tuple[int, float]] = Field(default_factory=list)
    synced_ms: int | None = None
    partial: dict[str, tuple[float, float, float]] = Field(
        default_factory=dict, description="Per open position: (quantity, notional, fees) of partial exits taken."
    )
    finished_ms: dict[str, int] = Field(
        default_factory=dict, description="Per finished order still kept: the first sync time that saw it finished."
    )
    retired: list[str] = Field(
        default_factory=list, description="Client order ids of the finished orders forgotten: never placed again."
    )


def _sign(side: str) -> float:
    return 1.0 if side == "LONG" else -1.0


class PaperBroker(Broker):
    """Simulated execution on candles (rules in the module docstring)."""

    name = "paper"

    def __init__(self, settings: PaperSettings | None = None) -> None:
        self.settings = settings or PaperSettings()
        self._book = _Book(initial_cash=self.settings.initial_cash, cash=self.settings.initial_cash)
        # each order's JSON image, by client order id, with the order it images (see `export_state`)
        self._order_images: dict[str, tuple[OrderState, dict[str, Any]]] = {}
        self._retired: set[str] = set()  # `_book.retired` as a set

    # --- the interface ------------------------------------------------------------------------

    def submit(self, intent: OrderIntent, now_ms: int) -> OrderState:
        return self._accept(intent, now_ms, "pending")

    def _accept(self, intent: OrderIntent, now_ms: int, status: OrderStatus, message: str = "") -> OrderState:
        """Record a new order, or return the known one: a resubmitted decision never makes a second order."""
        if intent.client_order_id in self._retired:
            raise BrokerError(f"order {intent.client_order_id} was placed and has finished (forgotten "
                              f"{KEEP_FINISHED_MS // 86_400_000} days after): the same decision is not placed again")
        known = self._book.orders.get(intent.client_order_id)
        if known is not None:
            if known.intent != intent:
                raise BrokerError(f"order {intent.client_order_id} already exists with a different intent")
            return known
        state = OrderState(client_order_id=intent.client_order_id, intent=intent, status=status, updated_ms=now_ms,
                           message=message)
        self._book.orders[intent.client_order_id] = state
        return state

    def cancel(self, client_order_id: str, now_ms: int) -> OrderState:
        order = self._book.orders.get(client_order_id)
        if order is None:
            raise BrokerError(f"no order {client_order_id}")
        if order.status not in ("pending", "open"):
            return order
        return self._set(order, status="cancelled", updated_ms=now_ms, message="cancelled before it filled")

    def order(self, client_order_id: str) -> OrderState | None:
        """The order, or None: unknown, or finished and forgotten (the module docstring's Memory)."""
        return self._book.orders.get(client_order_id)

    def orders(self) -> tuple[OrderState, ...]:
        """The orders in memory, in submission order: every working one, and the recently finished."""
        return tuple(self._book.orders.values())

    def positions(self) -> tuple[Position, ...]:
        return tuple(self._book.positions.values())

    def account(self, now_ms: int, marks: Mapping[str, float] | None = None) -> AccountSnapshot:
        b = self._book
        marks = marks or {}
        value = floating = at_entry = 0.0
        for p in b.positions.values():
            mark = marks.get(p.symbol, p.mark)
            value += p.signed_quantity * mark
            at_entry += p.signed_quantity * p.entry
            floating += p.signed_quantity * (mark - p.entry)
        return AccountSnapshot(
            time_ms=now_ms, cash=b.cash, balance=b.cash + at_entry, equity=b.cash + value, positions_value=value,
            floating_pnl=floating, initial_balance=b.initial_cash,
        )

    def ledger(self) -> tuple[tuple[int, float], ...]:
        return tuple(self._book.ledger)

    def export_state(self) -> dict[str, Any]:
        """The book as `_Book.model_dump(mode="json")` gives it, with each order's image reused while
        the order is the same object.

        The state is exported with every decision, and the book holds a week of finished orders
        besides the working ones: dumping them all each time would cost more than the decision. An
        `OrderState` is frozen and every change replaces it (`_set`), so an image made from the very
        same object is still exact. The images are shared between exports: read the state
        (serialise it), do not change it.
        """
        b = self._book
        images = self._order_images
        orders = {}
        for coid, order in b.orders.items():
            known = images.get(coid)
            if known is None or known[0] is not order:
                known = images[coid] = (order, order.model_dump(mode="json"))
            orders[coid] = known[1]
        rest = b.model_dump(mode="json", exclude={"orders"})
        return {name: orders if name == "orders" else rest[name] for name in _Book.model_fields}

    def load_state(self, state: Mapping[str, Any]) -> None:
        self._book = _Book.model_validate(state)
        self._retired = set(self._book.retired)

    def _forget_old(self, now_ms: int) -> None:
        """Forget what the module docstring's Memory says is no longer kept at `now_ms`."""
        b = self._book
        ledger = b.ledger
        if ledger and ledger[0][0] < now_ms - KEEP_LEDGER_MS:
            i = bisect_right(ledger, now_ms - KEEP_LEDGER_MS, key=lambda entry: entry[0])
            del ledger[:i - 1]  # entries at or before the cutoff end at i: the last of them stays in force
        for coid, order in list(b.orders.items()):
            if order.status not in TERMINAL_STATUSES or coid in b.positions:
                continue
            if now_ms - b.finished_ms.setdefault(coid, now_ms) >= KEEP_FINISHED_MS:
                del b.orders[coid]
                del b.finished_ms[coid]
                b.processed_ms.pop(coid, None)
                self._order_images.pop(coid, None)
                b.retired.append(coid)
                self._retired.add(coid)

    def sync(self, now_ms: int, candles: Mapping[str, Candles]) -> SyncReport:
        """Apply every bar closed by `now_ms` to the pending orders and open positions, oldest first."""
        fills: list[Fill] = []
        closed: list[ClosedTrade] = []
        changed: dict[str, OrderState] = {}
        for symbol, c in candles.items():
            done = c.closed_by(now_ms)
            if len(done):
                self._book.marks[symbol] = float(done.close[-1])
                self._book.mark_times[symbol] = done.last_close_time
        # every order's bars in time order (orders in submission order within a bar), so that cash,
        # the balance ledger and the fills follow the clock even when one sync spans many bars
        events: list[tuple[int, int, str, int]] = []
        for seq, (coid, order) in enumerate(self._book.orders.items()):
            if order.status not in ("pending", "open") and coid not in self._book.positions:
                continue
            c = candles.get(order.intent.symbol)
            if c is not None:  # no data for the symbol now: it catches up at a later sync
                events += [(int(c.time[i]), seq, coid, i) for i in self._bars_to_apply(coid, c, now_ms)]
        done: set[str] = set()
        for _, _, coid, i in sorted(events):
            if coid not in done and self._apply_bar(coid, candles[self._book.orders[coid].intent.symbol], i,
                                                    fills, closed, changed):
                done.add(coid)
        for p in list(self._book.positions.values()):  # mark what is still open at the last close
            mark = self._book.marks.get(p.symbol)
            if mark is not None and mark != p.mark:
                self._book.positions[p.client_order_id] = p.model_copy(update={"mark": mark})
        self._book.synced_ms = now_ms if self._book.synced_ms is None else max(self._book.synced_ms, now_ms)
        self._forget_old(self._book.synced_ms)
        return SyncReport(time_ms=now_ms, fills=tuple(fills), closed=tuple(closed), orders=tuple(changed.values()))

    # --- bar by bar ---------------------------------------------------------------------------

    def _set(self, order: OrderState, **update: Any) -> OrderState:
        new = order.model_copy(update=update)
        self._book.orders[order.client_order_id] = new
        return new

    def _bars_to_apply(self, coid: str, c: Candles, now_ms: int) -> range:
        """Indices of the bars opening at or after the decision (or the last applied bar) and closed by now."""
        intent = self._book.orders[coid].intent
        start = max(intent.created_ms, self._book.processed_ms.get(coid, intent.created_ms))
        lo = int(np.searchsorted(c.time, start, side="left"))
        hi = int(np.searchsorted(c.close_time, now_ms, side="right"))
        return range(lo, hi)

    def _apply_bar(
        self, coid: str, c: Candles, i: int, fills: list[Fill], closed: list[ClosedTrade],
        changed: dict[str, OrderState],
    ) -> bool:
        """Apply bar `i` to one order or its position; True when the order needs no more bars."""
        order = self._book.orders[coid]
        intent = order.intent
        t, o, h, low, cl = int(c.time[i]), float(c.open[i]), float(c.high[i]), float(c.low[i]), float(c.close[i])
        close_ms = t + c.interval_ms
        self._book.processed_ms[coid] = close_ms
        limit_fill_in_bar = False
        if order.status in ("pending", "open"):
            price = self._entry_price(intent, o, h, low)
            if price is None:
                deadline = min(intent.valid_until_ms or intent.time_stop_ms, intent.time_stop_ms)
                if close_ms >= deadline:
                    changed[coid] = self._set(order, status="expired", updated_ms=close_ms,
                                              message=f"limit {intent.limit_price:g} not touched in time")
                    return True
                return False
            limit_fill_in_bar = intent.order_type == "limit" and price != o
            fill = self._open(intent, price, t)
            if isinstance(fill, str):
                changed[coid] = self._set(order, status="rejected", updated_ms=t, message=fill)
                return True
            fills.append(fill)
            changed[coid] = self._set(order, status="filled", filled_quantity=intent.quantity,
                                      average_price=fill.price, updated_ms=t)
        if coid in self._book.positions:
            self._bar(coid, t, close_ms, o, h, low, cl, fills, closed, stop_only=limit_fill_in_bar)
        return coid not in self._book.positions

    def _entry_price(self, intent: OrderIntent, o: float, h: float, low: float) -> float | None:
        if intent.order_type == "market":
            return o
        lim = intent.limit_price
        if intent.side == "LONG":
            return min(o, lim) if low <= lim else None
        return max(o, lim) if h >= lim else None

    def _open(self, intent: OrderIntent, raw_price: float, t: int) -> Fill | str:
        """The entry fill, or why it cannot fill (a LONG needs the cash)."""
        s, b = self.settings, self._book
        sign = _sign(intent.side)
        if intent.order_type == "market":
            slip = s.slippage if intent.slippage is None else intent.slippage
            price = raw_price * (1 + sign * slip)
            fee_rate = s.taker_fee
        else:  # a limit fills at its price (or better, at a gap open) as a maker
            price, fee_rate = raw_price, s.maker_fee
        q = intent.quantity
        fee = q * price * fee_rate
        if intent.side == "LONG" and q * price + fee > b.cash:
            return f"insufficient cash: {q * price + fee:.2f} needed, {b.cash:.2f} free"
        b.cash -= sign * q * price + fee
        b.positions[intent.client_order_id] = Position(
            client_order_id=intent.client_order_id, decision_id=intent.decision_id, symbol=intent.symbol,
            side=intent.side, quantity=q, initial_quantity=q, entry=price, stop=intent.stop, initial_stop=intent.stop,
            target=intent.target, opened_ms=t, time_stop_ms=intent.time_stop_ms, mark=price, entry_fee=fee,
            best_price=price, slippage=intent.slippage,
        )
        self._note_balance(t)
        return Fill(fill_id=f"{intent.client_order_id}:entry", client_order_id=intent.client_order_id,
                    symbol=intent.symbol, action="open", side=intent.side, quantity=q, price=price, fee=fee,
                    time_ms=t, reason="entry")

    def _note_balance(self, t: int) -> None:
        """Append the closed balance at `t`, never before the ledger's last time.

        Bars are applied in open-time order, but an exit inside a bar is noted at the bar's close
        while a later order's entry in the same bar is noted at its open. The balance after both is
        the balance at the close, so such an entry is noted there: the ledger stays in time order
        (the gate refuses an unordered one) and loses no event.
        """
        ledger = self._book.ledger
        if ledger and t < ledger[-1][0]:
            t = ledger[-1][0]
        balance = self._book.cash + sum(p.signed_quantity * p.entry for p in self._book.positions.values())
        ledger.append((t, balance))

    def _bar(
        self, coid: str, t: int, close_ms: int, o: float, h: float, low: float, cl: float,
        fills: list[Fill], closed: list[ClosedTrade], stop_only: bool,
    ) -> None:
        s = self.settings
        p = self._book.positions[coid]
        sign = _sign(p.side)
        slip = s.slippage if p.slippage is None else p.slippage  # the book's estimate at entry, when there was one
        favourable, adverse = (h, low) if p.side == "LONG" else (low, h)

        def beyond(price: float, level: float) -> bool:  # price at or past level in the trade's favour
            return sign * (price - level) >= 0

        def through(price: float, level: float) -> bool:  # price at or past level against the trade
            return sign * (price - level) <= 0

        stop_reason: ExitReason = "stop"
        if p.stop == p.entry and p.initial_stop != p.entry:
            stop_reason = "break_even"
        elif beyond(p.stop, p.initial_stop) and p.stop != p.initial_stop and p.stop != p.entry:
            stop_reason = "trailing"
        # 1. a gap through a level at the open
        if sign * (o - p.stop) < 0:
            self._close(coid, p.quantity, o * (1 - sign * slip), s.taker_fee, t, stop_reason, fills, closed)
            return
        if not stop_only and beyond(o, p.target):
            self._close(coid, p.quantity, o, s.maker_fee, t, "target", fills, closed)
            return
        # 2. inside the bar: the stop wins a tie
        if through(adverse, p.stop):
            price = p.stop * (1 - sign * slip)
            self._close(coid, p.quantity, price, s.taker_fee, close_ms, stop_reason, fills, closed)
            return
        if not stop_only and s.partial_fraction > 0 and not p.partial_taken:
            first = p.entry + sign * s.first_target_r * abs(p.entry - p.initial_stop)
            if beyond(favourable, first) and not beyond(first, p.target):
                self._partial(coid, first, close_ms, fills)
                p = self._book.positions[coid]
        if not stop_only and beyond(favourable, p.target):
            self._close(coid, p.quantity, p.target, s.maker_fee, close_ms, "target", fills, closed)
            return
        # 3. time stop at the close
        if close_ms >= p.time_stop_ms:
            self._close(coid, p.quantity, cl * (1 - sign * slip), s.taker_fee, close_ms, "time_stop",
                        fills, closed)
            return
        # 4. move the levels for the next bar
        best = favourable if beyond(favourable, p.best_price) else p.best_price
        stop = p.stop
        armed = p.break_even_armed
        if s.break_even_trigger is not None and not armed and beyond(best, p.entry * (1 + sign * s.break_even_trigger)):
            armed = True
            if not beyond(stop, p.entry):
                stop = p.entry
        trail = s.trailing_stop
        if trail is not None:
            candidate = best * (1 - sign * trail)
        elif p.partial_taken:
            candidate = best - sign * abs(p.entry - p.initial_stop)
        else:
            candidate = None
        if candidate is not None and sign * (candidate - stop) > 0:
            stop = candidate
        self._book.positions[coid] = p.model_copy(
            update={"best_price": best, "stop": stop, "break_even_armed": armed, "mark": cl}
        )

    def _partial(self, coid: str, price: float, t: int, fills: list[Fill]) -> None:
        s, b = self.settings, self._book
        p = b.positions[coid]
        sign = _sign(p.side)
        q = p.initial_quantity * s.partial_fraction
        fee = q * price * s.maker_fee
        b.cash += sign * q * price - fee
        share_fee = p.entry_fee * q / p.quantity
        pnl = sign * q * (price - p.entry) - fee - share_fee
        prev = b.partial.get(coid, (0.0, 0.0, 0.0))
        b.partial[coid] = (prev[0] + q, prev[1] + q * price, prev[2] + fee + share_fee)
        stop = p.stop if sign * (p.stop - p.entry) >= 0 else p.entry  # the rest runs risk-free
        b.positions[coid] = p.model_copy(update={
            "quantity": p.quantity - q, "entry_fee": p.entry_fee - share_fee, "realised_pnl": p.realised_pnl + pnl,
            "partial_taken": True, "stop": stop, "break_even_armed": True,
        })
        self._note_balance(t)
        fills.append(Fill(fill_id=f"{coid}:partial", client_order_id=coid, symbol=p.symbol, action="close",
                          side=p.side, quantity=q, price=price, fee=fee, time_ms=t, reason="partial_target"))

    def _close(
        self, coid: str, q: float, price: float, fee_rate: float, t: int, reason: ExitReason,
        fills: list[Fill], closed: list[ClosedTrade],
    ) -> None:
        self._settle(coid, price, q * price * fee_rate, t, reason, fills, closed)

    def _settle(
        self, coid: str, price: float, fee: float, t: int, reason: ExitReason,
        fills: list[Fill], closed: list[ClosedTrade],
    ) -> None:
        """Close what is left of a position at `price`, paying `fee` (quote), and record the trade."""
        b = self._book
        p = b.positions.pop(coid)
        q = p.quantity
        sign = _sign(p.side)
        b.cash += sign * q * price - fee
        pnl = p.realised_pnl + sign * q * (price - p.entry) - fee - p.entry_fee
        part_q, part_notional, part_fees = b.partial.pop(coid, (0.0, 0.0, 0.0))
        exit_price = (part_notional + q * price) / (part_q + q)
        fees = p.entry_fee + fee + part_fees  # entry (open share + partial's share) and every exit fee
        risk = p.initial_quantity * abs(p.entry - p.initial_stop)
        self._note_balance(t)
        fills.append(Fill(fill_id=f"{coid}:exit", client_order_id=coid, symbol=p.symbol, action="close",
                          side=p.side, quantity=q, price=price, fee=fee, time_ms=t, reason=reason))
        r = pnl / risk
        closed.append(ClosedTrade(
            client_order_id=coid, decision_id=p.decision_id, symbol=p.symbol, side=p.side,
            quantity=p.initial_quantity, entry=p.entry, exit=exit_price, opened_ms=p.opened_ms, closed_ms=t,
            exit_reason=reason, fees=fees, pnl=pnl, risk_amount=risk, r_multiple=r,
            outcome="win" if r > 0 else "loss",
        ))
