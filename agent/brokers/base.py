"""The one broker interface: paper, live (ccxt) and manual brokers all speak it.

The cycle hands a broker an `OrderIntent` built from an approved decision and later asks it to
`sync` to a time; it never needs to know which broker it holds. The contract:

- `client_order_id(decision_id)` derives the exchange client order id from the decision id, so a
  retry or a restart of the same decision can never place a second order: `submit` of an intent
  whose id the broker already knows returns the existing order, and places nothing. A crash can
  fall between an exchange accepting an order and the store committing it, so a live broker
  looks the client order id up on the exchange before placing (the exchange is the truth).
- `sync(now_ms, candles)` advances the broker to `now_ms` with the market data closed by then
  (paper: simulate fills and exits on those bars; live: poll and reconcile with the exchange,
  the exchange being the source of truth). It returns what happened since the last sync.
- `positions()` and `account(marks)`: the account at the last sync; `equity = cash + marked
  positions`, a short counting as a negative quantity.
- `export_state()` / `load_state()`: a JSON-able image of the broker's own memory, saved by the
  cycle in the same store transaction as the decision that changed it, so that a restart resumes
  exactly where the last committed decision left off.

Units: prices in the quote currency, quantities in base units (always positive; the side says
the direction), fees in the quote currency, rates as fractions, times as UTC epoch ms.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from theories.candles import Candles

Side = Literal["LONG", "SHORT"]
OrderType = Literal["market", "limit"]
OrderStatus = Literal[
    "pending",  # accepted by the broker, not yet on the market (paper: waits for the next bar)
    "open",  # resting on the exchange
    "partially_filled",
    "filled",  # the entry filled: a position exists (or existed)
    "cancelled",
    "expired",  # a limit that was never touched within its validity
    "rejected",  # refused by the exchange
    "failed",  # could not be placed after retries; reported
    "awaiting_person",  # manual broker: the person has not answered yet
    "skipped",  # manual broker: the person declined
]
TERMINAL_STATUSES: frozenset[str] = frozenset({"filled", "cancelled", "expired", "rejected", "failed", "skipped"})
ExitReason = Literal["stop", "target", "time_stop", "break_even", "trailing", "partial_target", "manual", "closed"]

CLIENT_ORDER_PREFIX = "sa"


def client_order_id(decision_id: str) -> str:
    """The client order id of a decision: 'sa' + 30 hex digits of sha256(decision id).

    32 characters of [a-z0-9], inside every major exchange's limits (Binance: 36 characters of
    `[.A-Z:/a-z0-9_-]`; Bybit: 36; OKX: 32 alphanumerics), and the same for the same decision
    on every retry and after every restart.
    """
    if not decision_id:
        raise ValueError("client_order_id: the decision id is empty")
    return CLIENT_ORDER_PREFIX + hashlib.sha256(decision_id.encode()).hexdigest()[:30]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class OrderIntent(_Frozen):
    """An approved trade to place: entry order plus its bracket (stop, target, time stop)."""

    decision_id: str = Field(min_length=1, description="The decision this order executes (cycle id + symbol).")
    cycle_id: str = Field(min_length=1)
    client_order_id: str = Field(min_length=1, description="client_order_id(decision_id).")
    symbol: str = Field(min_length=1, description="BASE/QUOTE, e.g. 'BTC/USDT'.")
    side: Side
    quantity: float = Field(gt=0, description="Base units.")
    order_type: OrderType = "market"
    limit_price: float | None = Field(default=None, gt=0, description="Limit price for a limit order, quote.")
    stop: float = Field(gt=0, description="Stop-loss price, quote currency.")
    target: float = Field(gt=0, description="Take-profit price, quote currency.")
    entry_reference: float = Field(gt=0, description="The signal's entry price, quote (risk is measured from it).")
    created_ms: int = Field(description="Decision time, UTC epoch ms: only bars opening at or after it can fill.")
    time_stop_ms: int = Field(description="The position is closed at the first bar close at or after this time.")
    valid_until_ms: int | None = Field(default=None, description="A limit not touched by then expires.")
    slippage: float | None = Field(
        default=None, ge=0, lt=0.5,
        description="Slippage of this order's market fills, fraction: from walking the live order book when one "
        "existed at decision time; None: the broker's configured rate.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> OrderIntent:
        if self.client_order_id != client_order_id(self.decision_id):
            raise ValueError("client_order_id must be client_order_id(decision_id)")
        if self.order_type == "limit" and self.limit_price is None:
            raise ValueError("a limit order needs limit_price")
        if self.order_type == "market" and self.limit_price is not None:
            raise ValueError("a market order takes no limit_price")
        long = self.side == "LONG"
        if long and not self.stop < self.entry_reference < self.target:
            raise ValueError(f"LONG needs stop < entry < target: {self.stop}, {self.entry_reference}, {self.target}")
        if not long and not self.target < self.entry_reference < self.stop:
            raise ValueError(f"SHORT needs target < entry < stop: {self.target}, {self.entry_reference}, {self.stop}")
        if self.time_stop_ms <= self.created_ms:
            raise ValueError("time_stop_ms must be after created_ms")
        return self


class OrderState(_Frozen):
    """What the broker knows of one order."""

    client_order_id: str
    intent: OrderIntent
    status: OrderStatus
    exchange_order_id: str | None = None
    filled_quantity: float = Field(default=0.0, ge=0, description="Base units.")
    average_price: float | None = Field(default=None, description="Average fill price, quote.")
    updated_ms: int
    message: str = Field(default="", description="Why the status is what it is (exchange error, person's note).")

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


class Fill(_Frozen):
    """One execution: an entry or (part of) an exit."""

    fill_id: str = Field(description="Unique and deterministic: client order id + ':' + a per-order sequence tag.")
    client_order_id: str
    symbol: str
    action: Literal["open", "close"]
    side: Side = Field(description="The position's side (a close of a LONG sells).")
    quantity: float = Field(gt=0, description="Base units.")
    price: float = Field(gt=0, description="Execution price after slippage, quote.")
    fee: float = Field(ge=0, description="Quote currency.")
    time_ms: int
    reason: ExitReason | Literal["entry"] = "entry"


class Position(_Frozen):
    """An open position and its live bracket."""

    client_order_id: str
    decision_id: str
    symbol: str
    side: Side
    quantity: float = Field(gt=0, description="Base units still open.")
    initial_quantity: float = Field(gt=0, description="Base units at entry.")
    entry: float = Field(gt=0, description="Average entry price after slippage, quote.")
    stop: float = Field(gt=0, description="Current stop (moved by break-even and trailing), quote.")
    initial_stop: float = Field(gt=0)
    target: float = Field(gt=0)
    opened_ms: int
    time_stop_ms: int
    mark: float = Field(gt=0, description="Last close seen, quote.")
    entry_fee: float = Field(ge=0, description="Fee paid at entry for the quantity still open, quote.")
    realised_pnl: float = Field(default=0.0, description="Net P&L of partial exits already taken, quote.")
    break_even_armed: bool = False
    partial_taken: bool = False
    best_price: float = Field(gt=0, description="Most favourable price since entry (for trailing), quote.")
    slippage: float | None = Field(
        default=None, ge=0, description="Slippage of this position's market exits, from its order; None: the rate."
    )

    @property
    def signed_quantity(self) -> float:
        return self.quantity if self.side == "LONG" else -self.quantity

    @property
    def market_value(self) -> float:
        """Signed marked value, quote: what the position adds to equity on top of cash."""
        return self.signed_quantity * self.mark

    @property
    def floating_pnl(self) -> float:
        """Unrealised P&L before exit fees, quote."""
        return self.signed_quantity * (self.mark - self.entry)


class ClosedTrade(_Frozen):
    """A finished trade with its outcome: the win history of theories.bayes and the risk gate."""

    client_order_id: str
    decision_id: str
    symbol: str
    side: Side
    quantity: float = Field(gt=0, description="Base units entered.")
    entry: float = Field(gt=0, description="Average entry price, quote.")
    exit: float = Field(gt=0, description="Quantity-weighted average exit price, quote.")
    opened_ms: int
    closed_ms: int
    exit_reason: ExitReason = Field(description="Reason of the last exit.")
    fees: float = Field(ge=0, description="Entry and exit fees, quote.")
    pnl: float = Field(description="Net P&L after fees, quote.")
    risk_amount: float = Field(gt=0, description="Initial risk: quantity x |entry - initial stop|, quote.")
    r_multiple: float = Field(description="pnl / risk_amount.")
    outcome: Literal["win", "loss"] = Field(description="win when r_multiple > 0 (risk.inputs.WinCount's rule).")


class AccountSnapshot(_Frozen):
    """The account at a time: equity = cash + sum of signed marked positions."""

    time_ms: int
    cash: float = Field(description="Quote currency held (short proceeds included).")
    balance: float = Field(description="Closed balance: cash + positions at their entry price, quote.")
    equity: float = Field(description="cash + marked positions, quote.")
    positions_value: float = Field(description="Sum of signed quantity x mark, quote.")
    floating_pnl: float
    initial_balance: float


class Mismatch(_Frozen):
    """A difference between the broker's memory and the exchange found by reconciliation."""

    time_ms: int
    kind: str = Field(description="e.g. 'unknown_order', 'missing_order', 'quantity', 'position'.")
    client_order_id: str | None = None
    symbol: str | None = None
    detail: str


class SyncReport(_Frozen):
    """What changed during one `sync`."""

    time_ms: int
    fills: tuple[Fill, ...] = ()
    closed: tuple[ClosedTrade, ...] = ()
    orders: tuple[OrderState, ...] = Field(default=(), description="Orders whose status changed.")
    mismatches: tuple[Mismatch, ...] = ()


class BrokerError(RuntimeError):
    """A broker could not do what was asked (bad input, unreachable exchange after retries)."""


class Broker(ABC):
    """The interface every broker implements. See the module docstring for the contract."""

    name: str = "broker"

    @abstractmethod
    def submit(self, intent: OrderIntent, now_ms: int) -> OrderState:
        """Place the intent, idempotently: an intent whose client order id is known returns its state."""

    @abstractmethod
    def sync(self, now_ms: int, candles: Mapping[str, Candles]) -> SyncReport:
        """Advance to `now_ms` using bars closed by then (and/or the exchange); report the changes."""

    @abstractmethod
    def cancel(self, client_order_id: str, now_ms: int) -> OrderState:
        """Cancel an order that has not filled; the state of an unknown id is a BrokerError."""

    @abstractmethod
    def order(self, client_order_id: str) -> OrderState | None:
        """The order with this client order id, or None."""

    @abstractmethod
    def orders(self) -> tuple[OrderState, ...]:
        """Every order known, oldest first."""

    @abstractmethod
    def positions(self) -> tuple[Position, ...]:
        """Open positions as of the last sync."""

    @abstractmethod
    def account(self, now_ms: int, marks: Mapping[str, float] | None = None) -> AccountSnapshot:
        """The account at `now_ms`, positions marked at `marks` (symbol -> price) or their last mark."""

    @abstractmethod
    def ledger(self) -> tuple[tuple[int, float], ...]:
        """(time_ms, closed balance after the change), oldest first: risk.inputs.BalanceChange's source."""

    @abstractmethod
    def export_state(self) -> dict[str, Any]:
        """A JSON-able image of the broker's memory, stored with the decision that changed it."""

    @abstractmethod
    def load_state(self, state: Mapping[str, Any]) -> None:
        """Restore from `export_state()`'s output (after a restart)."""

    def reconcile(self, now_ms: int) -> tuple[Mismatch, ...]:
        """Compare with the exchange and adopt its view; brokers without an exchange find nothing."""
        return ()
