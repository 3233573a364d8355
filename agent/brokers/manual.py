"""The manual broker: an approved trade waits for a person, who later says they executed it or not.

`submit` records the order as `awaiting_person` (the alert that asks the person comes with the
Telegram issue). The person's answer arrives later through `executed` (with the price they got,
and their fee if they give one) or `skipped`. An executed trade is an open position, marked to
market at every `sync` so equity shows its floating P&L; nothing is simulated: the person closes
it and says at what price (`closed`), which makes the closed trade and its R multiple.

Every answer returns a `SyncReport` with the fills, closed trades and order changes, which the
caller stores in one transaction with `export_state()` (agent.store.Store.record_sync).
Accounting is the paper broker's: equity = cash + signed marked positions.
"""

from __future__ import annotations

from collections.abc import Mapping

from agent.brokers.base import BrokerError, ClosedTrade, Fill, OrderIntent, OrderState, Position, SyncReport
from agent.brokers.paper import PaperBroker, PaperSettings, _sign
from theories.candles import Candles


class ManualBroker(PaperBroker):
    """Orders wait for a person's answer; positions are only marked, never exited by the broker."""

    name = "manual"

    def __init__(self, initial_cash: float = 10_000.0) -> None:
        super().__init__(PaperSettings(initial_cash=initial_cash))

    def submit(self, intent: OrderIntent, now_ms: int) -> OrderState:
        return self._accept(intent, now_ms, "awaiting_person", "sent to the person; awaiting their answer")

    def cancel(self, client_order_id: str, now_ms: int) -> OrderState:
        order = self._awaiting(client_order_id, "cancel")
        return self._set(order, status="cancelled", updated_ms=now_ms, message="withdrawn before the person answered")

    def sync(self, now_ms: int, candles: Mapping[str, Candles]) -> SyncReport:
        """Only marks the open positions at the last close by `now_ms`: the person trades, not us."""
        for symbol, c in candles.items():
            done = c.closed_by(now_ms)
            if len(done):
                self._book.marks[symbol] = float(done.close[-1])
        for coid, p in list(self._book.positions.items()):
            mark = self._book.marks.get(p.symbol)
            if mark is not None:
                self._book.positions[coid] = p.model_copy(update={"mark": mark})
        self._book.synced_ms = now_ms
        self._forget_old(now_ms)
        return SyncReport(time_ms=now_ms)

    # --- the person's answers -----------------------------------------------------------------

    def executed(self, client_order_id: str, price: float, at_ms: int, fee: float = 0.0,
                 quantity: float | None = None) -> SyncReport:
        """The person traded at `price` (quote) at `at_ms`, paying `fee` (quote); quantity: the order's by default."""
        order = self._awaiting(client_order_id, "execute")
        if not price > 0 or fee < 0 or (quantity is not None and not quantity > 0):
            raise BrokerError(f"order {client_order_id}: price must be > 0, fee >= 0, quantity > 0")
        i = order.intent
        q = quantity if quantity is not None else i.quantity
        if _sign(i.side) * (price - i.stop) <= 0:
            raise BrokerError(f"order {client_order_id}: fill price {price:g} is beyond the stop {i.stop:g}")
        sign = _sign(i.side)
        self._book.cash -= sign * q * price + fee
        self._book.positions[client_order_id] = Position(
            client_order_id=client_order_id, decision_id=i.decision_id, symbol=i.symbol, side=i.side, quantity=q,
            initial_quantity=q, entry=price, stop=i.stop, initial_stop=i.stop, target=i.target, opened_ms=at_ms,
            time_stop_ms=i.time_stop_ms, mark=price, entry_fee=fee, best_price=price,
        )
        self._note_balance(at_ms)
        new = self._set(order, status="filled", filled_quantity=q, average_price=price, updated_ms=at_ms,
                        message="executed by the person")
        fill = Fill(fill_id=f"{client_order_id}:entry", client_order_id=client_order_id, symbol=i.symbol,
                    action="open", side=i.side, quantity=q, price=price, fee=fee, time_ms=at_ms, reason="entry")
        return SyncReport(time_ms=at_ms, fills=(fill,), orders=(new,))

    def skipped(self, client_order_id: str, at_ms: int, note: str = "") -> SyncReport:
        """The person declined the trade."""
        order = self._awaiting(client_order_id, "skip")
        new = self._set(order, status="skipped", updated_ms=at_ms, message=note or "skipped by the person")
        return SyncReport(time_ms=at_ms, orders=(new,))

    def closed(self, client_order_id: str, price: float, at_ms: int, fee: float = 0.0) -> SyncReport:
        """The person closed the whole position at `price` (quote): the closed trade with its outcome."""
        if client_order_id not in self._book.positions:
            raise BrokerError(f"no open position for order {client_order_id}")
        if not price > 0 or fee < 0:
            raise BrokerError(f"order {client_order_id}: price must be > 0 and fee >= 0")
        fills: list[Fill] = []
        closed: list[ClosedTrade] = []
        self._settle(client_order_id, price, fee, at_ms, "manual", fills, closed)
        return SyncReport(time_ms=at_ms, fills=tuple(fills), closed=tuple(closed))

    def _awaiting(self, client_order_id: str, what: str) -> OrderState:
        order = self._book.orders.get(client_order_id)
        if order is None:
            raise BrokerError(f"cannot {what}: no order {client_order_id}")
        if order.status != "awaiting_person":
            raise BrokerError(f"cannot {what} order {client_order_id}: it is {order.status}, not awaiting the person")
        return order
