"""The live broker: approved decisions become real orders on an exchange's spot market, through ccxt.

Safety rules, each one tested against a local imitation of the exchange with the real ccxt client:

- **Never twice.** Every exchange order carries a client order id derived from the decision id
  (`base.client_order_id`, plus one letter for the later legs of the same decision: 'm' for the
  market fallback, 'x1'.. for exits). Before placing anything the broker asks the exchange
  for that id; when a request fails in a way that leaves the outcome unknown (timeout, server
  error, a reply it cannot read) it asks again before any new attempt. It creates an order only
  after the exchange has answered "no such order".
- **The exchange is the source of truth.** `reconcile` (on `start`, then every
  `reconcile_every_s`) compares open orders and balances with the broker's memory, adopts the
  exchange's view, and returns every difference as a `Mismatch` for the store.
- **Limit first, then market.** The entry rests as a limit at the signal's entry (or the
  intent's limit price); if it has not filled `limit_timeout_s` after placement, the rest is
  cancelled and sent at market. Time is the caller's `now_ms`: nothing here reads a clock.
- **Bounded retries.** ccxt's network errors (timeouts, 5xx, rate limits) are retried with
  full-jitter backoff (`RetryPolicy`); when the tries run out the order is marked `failed` with
  the reason, and the caller reports it. If a request that may have placed it was sent (Binance
  documents that a 503 or a timeout can hide a success), the message says so and each later
  `sync` looks the id up until the exchange either shows the order (adopted: `open`) or proves
  it absent. Waiting goes through the injected `sleep`.
- **No funds move off the account**: the client's withdrawal/transfer methods are refused
  (`live_exchange.connect_exchange`) and this module calls none of them.

Exits are managed by this broker from closed bars at each `sync` (stop first when one bar
touches both stop and target, as the paper broker assumes), then sent at market. Protective
orders resting on the exchange (OCO) are not placed yet: between two syncs a position has no
exchange-side stop. Spot only: a SHORT decision is rejected, because a spot account cannot sell
what it does not hold.

Units: prices in the quote currency, quantities in base units, fees converted to the quote
currency at the fill price (a fee paid in a third asset, e.g. BNB, is not converted: it is
recorded as 0 and said in the order's message), times UTC epoch ms.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeVar

import ccxt
from pydantic import BaseModel, ConfigDict

from agent.brokers.base import (
    TERMINAL_STATUSES,
    AccountSnapshot,
    Broker,
    BrokerError,
    ClosedTrade,
    Fill,
    Mismatch,
    OrderIntent,
    OrderState,
    Position,
    SyncReport,
)
from agent.brokers.live_exchange import REDACTOR, RETRYABLE_ERRORS
from agent.brokers.live_settings import LiveBrokerSettings
from theories.candles import Candles

log = logging.getLogger(__name__)
T = TypeVar("T")

OUR_PREFIX = "sa"  # every client order id this product creates starts with it (base.CLIENT_ORDER_PREFIX)
# Refusals after which the same request would be refused again: no retry, the order is rejected.
DEFINITIVE_ERRORS: tuple[type[Exception], ...] = (
    ccxt.InsufficientFunds,
    ccxt.AuthenticationError,
    ccxt.BadSymbol,
    ccxt.InvalidOrder,
    ccxt.BadRequest,
    ccxt.PermissionDenied,
    ccxt.NotSupported,
)
LegRole = Literal["entry", "entry_market", "exit"]


class ExchangeReplyError(BrokerError):
    """The exchange answered something that is not a usable order (malformed or incomplete)."""


class _Leg(BaseModel):
    """One exchange order of a decision, as last seen."""

    model_config = ConfigDict(extra="forbid")

    client_id: str
    role: LegRole
    order_type: Literal["limit", "market"]
    placed_ms: int
    order_id: str | None = None
    status: str = "open"  # ccxt's unified status: open, closed, canceled, expired, rejected
    filled: float = 0.0  # base units
    cost: float = 0.0  # quote
    fee_quote: float = 0.0  # fees paid in the quote currency
    fee_base: float = 0.0  # fees paid in the base currency (they reduce what is held)
    fills_recorded: int = 0
    exit_reason: str | None = None

    @property
    def open(self) -> bool:
        return self.status == "open"

    @property
    def unknown(self) -> bool:
        """A request for it failed in a way that may have placed it; not yet looked up."""
        return self.status == "unknown"


class _Book(BaseModel):
    """Everything the broker remembers of one decision."""

    model_config = ConfigDict(extra="forbid")

    state: OrderState
    legs: list[_Leg] = []
    position: Position | None = None
    bars_checked_until_ms: int = 0  # exits looked at bars opening before this time
    exit_attempts: int = 0
    position_opened: bool = False
    exit_due: str | None = None  # exit reason seen, kept until an exit order fills (a failed one is retried)


def _number(order: Mapping[str, Any], key: str) -> float:
    value = order.get(key)
    if value is None:
        return 0.0
    if not isinstance(value, int | float) or value != value or value < 0:
        raise ExchangeReplyError(f"exchange order field {key!r} is not a non-negative number: {value!r}")
    return float(value)


def _read_order(order: Any, client_id: str) -> tuple[str, str, float, float]:
    """(order id, status, filled, cost) of a ccxt order structure, or ExchangeReplyError."""
    if not isinstance(order, Mapping):
        raise ExchangeReplyError(f"exchange reply for order {client_id} is not an order: {str(order)[:120]!r}")
    order_id, status = order.get("id"), order.get("status")
    if not order_id or status not in ("open", "closed", "canceled", "expired", "rejected"):
        raise ExchangeReplyError(f"exchange reply for order {client_id} lacks an id or a known status: {status!r}")
    echoed = order.get("clientOrderId")
    if echoed is not None and echoed != client_id:
        raise ExchangeReplyError(f"exchange answered for client order id {echoed!r}, asked for {client_id!r}")
    return str(order_id), str(status), _number(order, "filled"), _number(order, "cost")


class LiveBroker(Broker):
    """`Broker` on a ccxt exchange (spot). Build the client with `live_exchange.connect_exchange`.

    `sleep` waits between retries (seconds), `rng` draws the jitter: both injected so tests and
    replays are deterministic and fast.
    """

    name = "live"

    def __init__(
        self,
        exchange: ccxt.Exchange,
        settings: LiveBrokerSettings,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.exchange = exchange
        self.settings = settings
        self._sleep = sleep
        self._rng = rng if rng is not None else random.Random(0)
        self._books: dict[str, _Book] = {}
        self._closed: list[ClosedTrade] = []
        self._ledger: list[tuple[int, float]] = []
        self._cash: float | None = None
        self._holdings: dict[str, float] = {}
        self._initial_balance: float | None = None
        self._last_reconcile_ms: int | None = None
        self._unreported: list[Fill] = []  # fills seen (by sync or cancel) not yet in a SyncReport

    def __repr__(self) -> str:
        return f"LiveBroker(exchange={self.exchange.id!r}, sandbox={self.settings.sandbox}, orders={len(self._books)})"

    # -- calls to the exchange ------------------------------------------------------------------
    def _retrying(self, what: str, call: Callable[[], T]) -> T:
        """`call()`, retried on network errors with backoff; the last error propagates."""
        policy = self.settings.retry
        for attempt in range(1, policy.max_attempts + 1):
            try:
                return call()
            except RETRYABLE_ERRORS as exc:
                if attempt == policy.max_attempts:
                    raise
                delay = policy.delay_s(attempt, self._rng)
                log.warning("%s: %s (try %d of %d), retrying in %.2f s", what, _describe(exc), attempt,
                            policy.max_attempts, delay)
                self._sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _lookup(self, symbol: str, client_id: str) -> dict[str, Any] | None:
        """The exchange's order with this client id, None when the exchange says there is none.

        A reply that is not a readable order raises ExchangeReplyError: it proves nothing either way.
        """
        try:
            order = self._retrying(
                f"look up {client_id}", lambda: self.exchange.fetch_order(None, symbol, {"clientOrderId": client_id})
            )
        except ccxt.OrderNotFound:
            return None
        _read_order(order, client_id)
        return order

    def _place(
        self, symbol: str, client_id: str, kind: Literal["limit", "market"], side: str, amount: float,
        price: float | None,
    ) -> tuple[dict[str, Any] | None, str, str]:
        """Place one order idempotently: (ccxt order or None, outcome, message).

        outcome: 'placed' (or found already placed), 'rejected' (the exchange refused it),
        'failed' (the tries ran out before any request could have placed it), or 'uncertain'
        (the tries ran out after a request that may have placed it: later syncs look it up).
        """
        policy = self.settings.retry
        last_error = "no attempt made"
        maybe_sent = False
        for attempt in range(1, policy.max_attempts + 1):
            if attempt > 1:
                self._sleep(policy.delay_s(attempt - 1, self._rng))
            try:
                existing = self._lookup(symbol, client_id)
            except Exception as exc:  # the outcome of earlier tries is unknown: never create blindly
                last_error = f"lookup failed: {_describe(exc)}"
                log.warning("order %s: %s (try %d of %d)", client_id, last_error, attempt, policy.max_attempts)
                continue
            if existing is not None:
                return existing, "placed", "found on the exchange"
            try:
                params: dict[str, Any] = {"clientOrderId": client_id}
                if kind == "limit":
                    params["timeInForce"] = "GTC"
                created = self.exchange.create_order(symbol, kind, side, amount, price, params)
                _read_order(created, client_id)
                return created, "placed", "placed"
            except DEFINITIVE_ERRORS as exc:
                if "duplicate" in str(exc).lower():  # placed by an earlier try: the next lookup finds it
                    last_error, maybe_sent = _describe(exc), True
                    continue
                return None, "rejected", _describe(exc)
            except Exception as exc:  # timeout, 5xx, unreadable reply: it may or may not be placed
                last_error, maybe_sent = _describe(exc), True
                log.warning("order %s: %s (try %d of %d); will look it up", client_id, last_error, attempt,
                            policy.max_attempts)
        if maybe_sent:
            return None, "uncertain", (f"gave up after {policy.max_attempts} tries: {last_error}; the exchange may "
                                       "hold the order: the next sync looks it up")
        return None, "failed", f"gave up after {policy.max_attempts} tries: {last_error}"

    def _refresh_leg(self, symbol: str, leg: _Leg, now_ms: int) -> tuple[float, float, float]:
        """Update a leg from the exchange; (new base filled, its quote cost, its fee in quote)."""
        order = self._lookup(symbol, leg.client_id)
        if order is None and leg.status == "unknown":
            leg.status = "rejected"  # now known: no request ever placed it
            return 0.0, 0.0, 0.0
        if order is None:
            raise ExchangeReplyError(f"order {leg.client_id} is unknown to the exchange")
        order_id, status, filled, cost = _read_order(order, leg.client_id)
        leg.order_id, leg.status = order_id, status
        if filled <= leg.filled + 1e-15:
            return 0.0, 0.0, 0.0
        d_qty, d_cost = filled - leg.filled, cost - leg.cost
        fee_quote, fee_base = self._fees(symbol, order_id, order)
        price = d_cost / d_qty
        d_fee = (fee_quote - leg.fee_quote) + (fee_base - leg.fee_base) * price
        leg.filled, leg.cost, leg.fee_quote, leg.fee_base = filled, cost, fee_quote, fee_base
        return d_qty, d_cost, max(d_fee, 0.0)

    def _fees(self, symbol: str, order_id: str, order: Mapping[str, Any]) -> tuple[float, float]:
        """Fees of an order so far: (in quote, in base), from its trades (the order query carries none)."""
        market = self.exchange.market(symbol)
        try:
            trades = self._retrying(f"trades of {order_id}", lambda: self.exchange.fetch_order_trades(order_id, symbol))
        except Exception as exc:
            # Fall back to the market's taker rate on the cost: an estimate, said so in the log.
            log.warning("fees of order %s unknown (%s): estimated at the taker rate", order_id, _describe(exc))
            return _number(order, "cost") * float(market.get("taker") or 0.0), 0.0
        fee_quote = fee_base = 0.0
        for trade in trades:
            for fee in trade.get("fees") or ([trade["fee"]] if trade.get("fee") else []):
                cost = float(fee.get("cost") or 0.0)
                if fee.get("currency") == market["quote"]:
                    fee_quote += cost
                elif fee.get("currency") == market["base"]:
                    fee_base += cost
                else:
                    log.warning("order %s paid a fee of %s %s: not converted", order_id, cost, fee.get("currency"))
        return fee_quote, fee_base

    # -- Broker interface -----------------------------------------------------------------------
    def start(self, now_ms: int) -> tuple[Mismatch, ...]:
        """Load markets and the balance, then reconcile: call once after construction or `load_state`."""
        self._retrying("load markets", self.exchange.load_markets)
        return self.reconcile(now_ms)

    def submit(self, intent: OrderIntent, now_ms: int) -> OrderState:
        book = self._books.get(intent.client_order_id)
        if book is not None:
            return book.state
        state, legs = self._submit_entry(intent, now_ms)
        self._books[intent.client_order_id] = _Book(state=state, legs=legs, bars_checked_until_ms=now_ms)
        return state

    def _submit_entry(self, intent: OrderIntent, now_ms: int) -> tuple[OrderState, list[_Leg]]:
        def refused(status: Literal["rejected", "failed"], message: str) -> tuple[OrderState, list[_Leg]]:
            log.warning("order %s for %s %s: %s", intent.client_order_id, intent.symbol, status, message)
            return OrderState(client_order_id=intent.client_order_id, intent=intent, status=status,
                              updated_ms=now_ms, message=REDACTOR.scrub(message)), []

        if self.exchange.markets is None:
            self._retrying("load markets", self.exchange.load_markets)
        if intent.side == "SHORT":
            return refused("rejected", "a spot account cannot sell short")
        if intent.symbol not in self.exchange.markets:
            return refused("rejected", f"{intent.symbol} is not a market of {self.exchange.id}")
        price_in = intent.limit_price if intent.limit_price is not None else intent.entry_reference
        try:
            amount = float(self.exchange.amount_to_precision(intent.symbol, intent.quantity))
            price = float(self.exchange.price_to_precision(intent.symbol, price_in))
        except ccxt.BaseError as exc:
            return refused("rejected", f"quantity {intent.quantity} or price {price_in}: {_describe(exc)}")
        limits = self.exchange.market(intent.symbol).get("limits") or {}
        min_amount = (limits.get("amount") or {}).get("min") or 0.0
        min_cost = (limits.get("cost") or {}).get("min") or 0.0
        if amount <= 0 or amount < min_amount or amount * price < min_cost:
            return refused("rejected", f"{amount} {intent.symbol} at {price} is below the exchange's minimum "
                                       f"(amount {min_amount}, cost {min_cost})")
        order, outcome, message = self._place(intent.symbol, intent.client_order_id, "limit", "buy", amount, price)
        if outcome == "uncertain":
            state, _ = refused("failed", message)
            return state, [_Leg(client_id=intent.client_order_id, role="entry", order_type="limit", placed_ms=now_ms,
                                status="unknown")]
        if outcome != "placed":
            return refused("rejected" if outcome == "rejected" else "failed", message)
        assert order is not None
        order_id, status, _, _ = _read_order(order, intent.client_order_id)
        leg = _Leg(client_id=intent.client_order_id, role="entry", order_type="limit", placed_ms=now_ms,
                   order_id=order_id, status="open")  # fills are read by sync, one path for every fill
        state = OrderState(client_order_id=intent.client_order_id, intent=intent, status="open",
                           exchange_order_id=order_id, updated_ms=now_ms, message=message)
        log.info("order %s: %s limit buy %s %s at %s (%s)", intent.client_order_id, message, amount,
                 intent.symbol, price, status)
        return state, [leg]

    def sync(self, now_ms: int, candles: Mapping[str, Candles]) -> SyncReport:
        closed: list[ClosedTrade] = []
        changed: list[OrderState] = []
        mismatches: list[Mismatch] = []
        every_ms = self.settings.reconcile_every_s * 1e3
        if self._last_reconcile_ms is None or now_ms - self._last_reconcile_ms >= every_ms:
            mismatches.extend(self.reconcile(now_ms))
        for book in self._books.values():
            before = book.state
            try:
                if not book.state.terminal or any(leg.unknown for leg in book.legs if leg.role != "exit"):
                    self._advance_entry(book, now_ms)
                if book.position is not None:
                    trade = self._manage_position(book, now_ms, candles.get(book.state.intent.symbol))
                    if trade is not None:
                        closed.append(trade)
            except Exception as exc:  # one decision's trouble must not stop the others' upkeep
                message = REDACTOR.scrub(_describe(exc))
                log.warning("sync of order %s: %s", book.state.client_order_id, message)
                mismatches.append(Mismatch(time_ms=now_ms, kind="sync_error", symbol=book.state.intent.symbol,
                                           client_order_id=book.state.client_order_id, detail=message))
            if book.state != before:
                changed.append(book.state)
        fills, self._unreported = tuple(self._unreported), []
        return SyncReport(time_ms=now_ms, fills=fills, closed=tuple(closed), orders=tuple(changed),
                          mismatches=tuple(mismatches))

    def _fill(self, book: _Book, leg: _Leg, qty: float, cost: float, fee: float, now_ms: int,
              action: Literal["open", "close"]) -> None:
        """Record a fill the moment it is seen, so an error later in the same sync cannot lose it."""
        leg.fills_recorded += 1
        coid = book.state.client_order_id
        fill = Fill(fill_id=f"{coid}:{leg.client_id[len(coid):] or 'e'}-{leg.fills_recorded}",
                    client_order_id=book.state.client_order_id, symbol=book.state.intent.symbol, action=action,
                    side=book.state.intent.side, quantity=qty, price=cost / qty, fee=fee, time_ms=now_ms,
                    reason="entry" if action == "open" else leg.exit_reason or "closed")  # type: ignore[arg-type]
        self._unreported.append(fill)

    def _advance_entry(self, book: _Book, now_ms: int) -> None:
        intent = book.state.intent
        for leg in book.legs:
            if leg.role != "exit" and (leg.open or leg.unknown):
                qty, cost, fee = self._refresh_leg(intent.symbol, leg, now_ms)
                if qty > 0:
                    self._fill(book, leg, qty, cost, fee, now_ms, "open")
        entry_legs = [leg for leg in book.legs if leg.role != "exit"]
        limit = entry_legs[0] if entry_legs else None
        timed_out = limit is not None and now_ms - limit.placed_ms >= self.settings.limit_timeout_s * 1e3
        if limit is not None and limit.open and timed_out and len(entry_legs) == 1:
            self._go_to_market(book, limit, now_ms)
        self._set_entry_state(book, now_ms)

    def _go_to_market(self, book: _Book, limit: _Leg, now_ms: int) -> None:
        """Cancel the timed-out limit, then send what is left of the quantity at market."""
        intent = book.state.intent
        try:
            self._retrying(f"cancel {limit.client_id}", lambda: self.exchange.cancel_order(
                limit.order_id, intent.symbol))
        except (ccxt.OrderNotFound, ccxt.OperationRejected):
            pass  # it filled or was cancelled meanwhile: the refresh below says which
        qty, cost, fee = self._refresh_leg(intent.symbol, limit, now_ms)
        if qty > 0:
            self._fill(book, limit, qty, cost, fee, now_ms, "open")
        if limit.open:
            raise ExchangeReplyError(f"limit {limit.client_id} is still open after its cancel")
        rest = float(self.exchange.amount_to_precision(intent.symbol, intent.quantity - limit.filled))
        min_amount = ((self.exchange.market(intent.symbol).get("limits") or {}).get("amount") or {}).get("min") or 0.0
        if limit.status != "canceled" or rest <= 0 or rest < min_amount:
            return
        client_id = intent.client_order_id + "m"
        order, outcome, message = self._place(intent.symbol, client_id, "market", "buy", rest, None)
        leg = _Leg(client_id=client_id, role="entry_market", order_type="market", placed_ms=now_ms,
                   status={"placed": "open", "uncertain": "unknown"}.get(outcome, "rejected"))
        book.legs.append(leg)
        if outcome != "placed":
            note = REDACTOR.scrub(f"market fallback {outcome}: {message}")
            book.state = book.state.model_copy(update={"message": note})
            return
        assert order is not None
        qty, cost, fee = self._refresh_leg(intent.symbol, leg, now_ms)
        if qty > 0:
            self._fill(book, leg, qty, cost, fee, now_ms, "open")

    def _set_entry_state(self, book: _Book, now_ms: int) -> None:
        intent = book.state.intent
        entry_legs = [leg for leg in book.legs if leg.role != "exit"]
        filled = sum(leg.filled for leg in entry_legs)
        cost = sum(leg.cost for leg in entry_legs)
        average = cost / filled if filled > 0 else None
        if any(leg.open for leg in entry_legs):
            status = "partially_filled" if filled > 0 else "open"
        elif any(leg.unknown for leg in entry_legs):
            status = "failed"  # until a lookup finds it or proves it absent
        elif filled > 0:
            status = "filled"
        else:
            last = entry_legs[-1].status if entry_legs else "rejected"
            status = {"canceled": "cancelled", "expired": "expired"}.get(last, "rejected")
        update: dict[str, Any] = {"status": status, "filled_quantity": filled, "average_price": average,
                                  "exchange_order_id": entry_legs[-1].order_id if entry_legs else None}
        if status != book.state.status or filled != book.state.filled_quantity:
            update["updated_ms"] = now_ms
        if status == "filled" and filled < intent.quantity * (1 - 1e-9):
            update["message"] = f"filled {filled} of {intent.quantity}"
        book.state = book.state.model_copy(update=update)
        if status == "filled" and not book.position_opened:
            fee_base = sum(leg.fee_base for leg in entry_legs)
            fee_quote = sum(leg.fee_quote for leg in entry_legs) + fee_base * (average or 0.0)
            held = filled - fee_base
            assert average is not None
            book.position = Position(
                client_order_id=intent.client_order_id, decision_id=intent.decision_id, symbol=intent.symbol,
                side=intent.side, quantity=held, initial_quantity=held, entry=average, stop=intent.stop,
                initial_stop=intent.stop, target=intent.target, opened_ms=now_ms, time_stop_ms=intent.time_stop_ms,
                mark=average, entry_fee=fee_quote, best_price=average,
            )
            book.position_opened = True
            book.bars_checked_until_ms = max(book.bars_checked_until_ms, now_ms)
            self._refresh_cash(now_ms)

    def _exit_reason(self, book: _Book, now_ms: int, candles: Candles | None) -> str | None:
        position = book.position
        assert position is not None
        reason = None
        if candles is not None and len(candles.time):
            closes = candles.time + candles.interval_ms
            new = (candles.time >= book.bars_checked_until_ms) & (closes <= now_ms)
            for i in new.nonzero()[0]:
                position = position.model_copy(update={"mark": float(candles.close[i])})
                if candles.low[i] <= position.stop:  # stop first when one bar touches both
                    reason = "stop"
                elif candles.high[i] >= position.target:
                    reason = "target"
                if reason:
                    break
            if new.any():
                book.bars_checked_until_ms = int(candles.time[new.nonzero()[0][-1]]) + 1
            book.position = position
        if reason is None and now_ms >= position.time_stop_ms:
            reason = "time_stop"
        return reason

    def _manage_position(
        self, book: _Book, now_ms: int, candles: Candles | None
    ) -> ClosedTrade | None:
        position = book.position
        assert position is not None
        intent = book.state.intent
        live_exits = [leg for leg in book.legs if leg.role == "exit" and leg.status in ("open", "closed", "unknown")]
        exit_leg = live_exits[0] if live_exits else None
        if exit_leg is None:
            reason = book.exit_due or self._exit_reason(book, now_ms, candles)
            if reason is None:
                return None
            book.exit_due = reason
            if book.exit_attempts >= 9:
                raise BrokerError(f"exit of {intent.client_order_id} failed 9 times: close it by hand")
            book.exit_attempts += 1
            client_id = f"{intent.client_order_id}x{book.exit_attempts}"
            amount = float(self.exchange.amount_to_precision(intent.symbol, position.quantity))
            order, outcome, message = self._place(intent.symbol, client_id, "market", "sell", amount, None)
            exit_leg = _Leg(client_id=client_id, role="exit", order_type="market", placed_ms=now_ms,
                            status={"placed": "open", "uncertain": "unknown"}.get(outcome, "rejected"),
                            exit_reason=reason)
            book.legs.append(exit_leg)
            if outcome not in ("placed", "uncertain"):
                raise BrokerError(f"{reason} exit {client_id} {outcome}: {message}; retried at the next sync")
            del order
        if exit_leg.open or exit_leg.unknown:
            qty, cost, fee = self._refresh_leg(intent.symbol, exit_leg, now_ms)
            if qty > 0:
                self._fill(book, exit_leg, qty, cost, fee, now_ms, "close")
        if exit_leg.open or exit_leg.unknown:
            return None
        if exit_leg.filled <= 0:
            exit_leg.status = "rejected"  # nothing sold: a fresh exit goes out at the next sync
            return None
        return self._close(book, exit_leg, now_ms)

    def _close(self, book: _Book, exit_leg: _Leg, now_ms: int) -> ClosedTrade:
        position = book.position
        assert position is not None
        entry_legs = [leg for leg in book.legs if leg.role != "exit"]
        paid = sum(leg.cost + leg.fee_quote for leg in entry_legs)  # quote spent on the entry
        exit_fee = exit_leg.fee_quote + exit_leg.fee_base * (exit_leg.cost / exit_leg.filled)
        received = exit_leg.cost - exit_fee
        pnl = received - paid
        risk = position.initial_quantity * abs(position.entry - position.initial_stop)
        trade = ClosedTrade(
            client_order_id=position.client_order_id, decision_id=position.decision_id, symbol=position.symbol,
            side=position.side, quantity=position.initial_quantity, entry=position.entry,
            exit=exit_leg.cost / exit_leg.filled, opened_ms=position.opened_ms, closed_ms=now_ms,
            exit_reason=exit_leg.exit_reason or "closed",  # type: ignore[arg-type]
            fees=position.entry_fee + exit_fee, pnl=pnl, risk_amount=risk, r_multiple=pnl / risk,
            outcome="win" if pnl > 0 else "loss",
        )
        book.position = None
        self._closed.append(trade)
        self._refresh_cash(now_ms)
        return trade

    def _refresh_cash(self, now_ms: int) -> None:
        try:
            balance = self._retrying("fetch balance", self.exchange.fetch_balance)
            self._read_balance(balance)
        except Exception as exc:
            log.warning("balance unknown after a fill: %s", REDACTOR.scrub(_describe(exc)))
            return
        self._ledger.append((now_ms, self._closed_balance()))

    def _read_balance(self, balance: Any) -> None:
        quote = self.settings.quote
        if not isinstance(balance, Mapping) or not isinstance(balance.get("total"), Mapping):
            raise ExchangeReplyError(f"exchange balance reply is not a balance: {str(balance)[:120]!r}")
        totals = balance["total"]
        self._cash = float(totals.get(quote) or 0.0)
        self._holdings = {k: float(v or 0.0) for k, v in totals.items()}
        if self._initial_balance is None:
            self._initial_balance = self._cash

    def _closed_balance(self) -> float:
        return (self._cash or 0.0) + sum(p.quantity * p.entry for p in self.positions())

    def cancel(self, client_order_id: str, now_ms: int) -> OrderState:
        book = self._books.get(client_order_id)
        if book is None:
            raise BrokerError(f"cancel: no order with client order id {client_order_id}")
        if book.state.terminal:
            return book.state
        symbol = book.state.intent.symbol
        for leg in book.legs:
            if leg.role != "exit" and leg.open:
                try:
                    self._retrying(f"cancel {leg.client_id}", lambda leg=leg: self.exchange.cancel_order(
                        leg.order_id, symbol))
                except (ccxt.OrderNotFound, ccxt.OperationRejected):
                    pass  # filled meanwhile: the refresh says so
                qty, cost, fee = self._refresh_leg(symbol, leg, now_ms)
                if qty > 0:
                    self._fill(book, leg, qty, cost, fee, now_ms, "open")  # reported by the next sync
        self._set_entry_state(book, now_ms)
        return book.state

    def order(self, client_order_id: str) -> OrderState | None:
        book = self._books.get(client_order_id)
        return book.state if book else None

    def orders(self) -> tuple[OrderState, ...]:
        return tuple(book.state for book in self._books.values())

    def positions(self) -> tuple[Position, ...]:
        return tuple(book.position for book in self._books.values() if book.position is not None)

    def closed_trades(self) -> tuple[ClosedTrade, ...]:
        return tuple(self._closed)

    def account(self, now_ms: int, marks: Mapping[str, float] | None = None) -> AccountSnapshot:
        """Quote cash on the exchange (free and in orders) plus this broker's positions, marked.

        Other holdings of the account (base assets bought outside this product) are not counted.
        """
        if self._cash is None:
            raise BrokerError("account: the balance is unknown; call start() first")
        marked = [(p, (marks or {}).get(p.symbol, p.mark)) for p in self.positions()]
        value = sum(p.signed_quantity * m for p, m in marked)
        floating = sum(p.signed_quantity * (m - p.entry) for p, m in marked)
        return AccountSnapshot(time_ms=now_ms, cash=self._cash, balance=self._closed_balance(),
                               equity=self._cash + value, positions_value=value, floating_pnl=floating,
                               initial_balance=self._initial_balance or self._cash)

    def ledger(self) -> tuple[tuple[int, float], ...]:
        return tuple(self._ledger)

    # -- reconciliation -------------------------------------------------------------------------
    def reconcile(self, now_ms: int) -> tuple[Mismatch, ...]:
        """Compare open orders and balances with the exchange, adopt the exchange's view, list differences."""
        self._last_reconcile_ms = now_ms
        found: list[Mismatch] = []

        def mismatch(kind: str, detail: str, client_id: str | None = None, symbol: str | None = None) -> None:
            item = Mismatch(time_ms=now_ms, kind=kind, client_order_id=client_id, symbol=symbol,
                            detail=REDACTOR.scrub(detail))
            log.warning("reconcile: %s %s %s: %s", kind, client_id or "", symbol or "", item.detail)
            found.append(item)

        try:
            if self.exchange.markets is None:
                self._retrying("load markets", self.exchange.load_markets)
            open_orders = self._retrying("fetch open orders", self.exchange.fetch_open_orders)
            if not isinstance(open_orders, list) or not all(isinstance(o, Mapping) for o in open_orders):
                raise ExchangeReplyError(f"open orders reply is not a list of orders: {str(open_orders)[:120]!r}")
            balance = self._retrying("fetch balance", self.exchange.fetch_balance)
            self._read_balance(balance)
        except Exception as exc:
            mismatch("reconcile_failed", f"could not read the exchange: {_describe(exc)}")
            return tuple(found)
        on_exchange = {str(o.get("clientOrderId")): o for o in open_orders if o.get("clientOrderId")}
        known = {leg.client_id: (book, leg) for book in self._books.values() for leg in book.legs}
        for client_id, order in on_exchange.items():
            if client_id.startswith(OUR_PREFIX) and client_id not in known:
                mismatch("unknown_order", f"open on the exchange, unknown here: {order.get('side')} "
                         f"{order.get('amount')} at {order.get('price')} (id {order.get('id')})",
                         client_id, order.get("symbol"))
        for client_id, (book, leg) in known.items():
            if leg.open and client_id not in on_exchange:
                symbol = book.state.intent.symbol
                try:
                    order = self._lookup(symbol, client_id)
                except Exception as exc:
                    mismatch("reconcile_failed", f"could not look up {client_id}: {_describe(exc)}", client_id, symbol)
                    continue
                if order is None:
                    mismatch("missing_order", "open here, unknown to the exchange", client_id, symbol)
                    leg.status = "rejected"
                    if leg.role != "exit":
                        self._set_entry_state(book, now_ms)
                else:
                    mismatch("status", f"open here, {order.get('status')} on the exchange "
                             f"(filled {order.get('filled')})", client_id, symbol)
        by_base: dict[str, list[_Book]] = {}
        for book in self._books.values():
            if book.position is not None:
                by_base.setdefault(book.position.symbol.split("/")[0], []).append(book)
        for base, books in by_base.items():
            mine = sum(b.position.quantity for b in books if b.position is not None)
            held = self._holdings.get(base, 0.0)
            if held < mine * (1 - 1e-9) - 1e-12:
                mismatch("position", f"positions hold {mine} {base}, the exchange account {held}: "
                         "positions reduced to what the exchange holds", symbol=books[0].position.symbol
                         if books[0].position else None)
                scale = max(held, 0.0) / mine
                for b in books:
                    assert b.position is not None
                    quantity = b.position.quantity * scale
                    b.position = b.position.model_copy(update={"quantity": quantity}) if quantity > 0 else None
        return tuple(found)

    # -- persistence ----------------------------------------------------------------------------
    def export_state(self) -> dict[str, Any]:
        return {
            "broker": self.name,
            "books": [book.model_dump(mode="json") for book in self._books.values()],
            "closed": [t.model_dump(mode="json") for t in self._closed],
            "ledger": [list(x) for x in self._ledger],
            "cash": self._cash,
            "initial_balance": self._initial_balance,
            "last_reconcile_ms": self._last_reconcile_ms,
            "unreported_fills": [f.model_dump(mode="json") for f in self._unreported],
        }

    def load_state(self, state: Mapping[str, Any]) -> None:
        if state.get("broker") != self.name:
            raise BrokerError(f"load_state: state of broker {state.get('broker')!r}, not {self.name!r}")
        books = [_Book.model_validate(b) for b in state.get("books", [])]
        self._books = {b.state.client_order_id: b for b in books}
        self._closed = [ClosedTrade.model_validate(t) for t in state.get("closed", [])]
        self._ledger = [(int(t), float(v)) for t, v in state.get("ledger", [])]
        self._cash = state.get("cash")
        self._initial_balance = state.get("initial_balance")
        self._unreported = [Fill.model_validate(f) for f in state.get("unreported_fills", [])]
        self._last_reconcile_ms = None  # reconcile at the first sync after a restart


def _describe(exc: BaseException) -> str:
    """An error as one line, secrets scrubbed."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return REDACTOR.scrub(f"{type(exc).__name__}: {text}"[:300])


__all__ = ["TERMINAL_STATUSES", "ExchangeReplyError", "LiveBroker"]
