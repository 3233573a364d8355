"""What the risk gate is given: plain, typed data, with units, and nothing from `agent/`.

The gate may not import the orchestrator, so the product's `Signal` arrives here as a
`TradeProposal` with the same fields. These models check *types and finiteness* only: a request
that is well typed but inconsistent (a LONG with its stop above the entry, a negative equity) is
not a validation error here but a `Rejected` answer from the gate naming what is wrong, so the
gate never raises on a well-typed input.

Units: prices in the quote currency, sizes in base units, rates as fractions, times as UTC
epoch milliseconds.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from risk.breakers import BreakerState
from theories.candles import Candles

Direction = Literal["LONG", "SHORT", "HOLD"]
Side = Literal["LONG", "SHORT"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class TradeProposal(_Frozen):
    """The LLM's proposal: the fields of the product's `agent.signal.Signal` but its reasoning.

    Build it with `TradeProposal.model_validate(signal.model_dump(exclude={"reasoning"}))`.
    """

    symbol: str = Field(min_length=1, description="Market symbol, BASE/QUOTE, e.g. 'BTC/USDT'.")
    direction: Direction
    confidence: float = Field(ge=0.0, le=1.0, description="The LLM's confidence in [0, 1]; it may only lower p.")
    entry: float | None = Field(default=None, description="Entry price, quote currency (None for HOLD).")
    stop: float | None = Field(default=None, description="Stop-loss price, quote currency (None for HOLD).")
    target: float | None = Field(default=None, description="Take-profit price, quote currency (None for HOLD).")
    horizon_hours: float = Field(description="Time stop: hours the trade may stay open.")
    theories: tuple[str, ...] = Field(default=(), description="Theories the proposal leaned on.")


class OpenPosition(_Frozen):
    """A position already open, marked to market by the caller."""

    symbol: str = Field(min_length=1)
    direction: Side
    quantity: float = Field(description="Base units, positive.")
    entry: float = Field(description="Average entry price, quote currency.")
    mark: float = Field(description="Last price, quote currency.")
    opened_ms: int = Field(description="Opening time, UTC epoch ms.")

    @property
    def notional(self) -> float:
        """Current market value, quote currency."""
        return abs(self.quantity) * self.mark


class BalanceChange(_Frozen):
    """One entry of the balance ledger: the closed (realised) balance from `time_ms` on."""

    time_ms: int
    balance: float = Field(description="Balance after the change, quote currency.")


class AccountState(_Frozen):
    """The account as of the decision time.

    `equity` includes floating P&L of open positions (FTMO measures its limits on equity).
    `ledger` is the history of closed balances, oldest first; the balance at the start of a
    trading day, week or month is read from it (before its first entry: `initial_balance`).
    It must reach back to the start of the current month for the monthly breaker.
    """

    initial_balance: float = Field(description="Balance the account (challenge) started with, quote currency.")
    balance: float = Field(description="Closed balance now, quote currency.")
    equity: float = Field(description="Balance plus floating P&L now, quote currency.")
    cash: float = Field(description="Quote currency free to open new positions.")
    ledger: tuple[BalanceChange, ...] = ()


class WinCount(_Frozen):
    """Closed trades of one slice of the history: wins (result > 0 R) and losses (<= 0 R)."""

    wins: int = Field(default=0, ge=0)
    losses: int = Field(default=0, ge=0)

    @property
    def n(self) -> int:
        return self.wins + self.losses


class TradeHistory(_Frozen):
    """Closed-trade counts of the variant, and of its trades on this symbol and in this regime."""

    variant: WinCount = WinCount()
    symbol: WinCount = WinCount()
    regime: WinCount = WinCount()


class RegimeView(_Frozen):
    """The named regime of the symbol now (`theories.regime`), and a breakout's direction."""

    name: str = Field(description="One of theories.regime.REGIMES.")
    breakout_direction: Side | None = Field(
        default=None, description="For a breakout: LONG if the close left the range upward, SHORT if downward."
    )


class PriceSeries(_Frozen):
    """Closes of one symbol for the correlation rule, oldest first (hourly candles)."""

    time_ms: tuple[int, ...] = Field(description="Close times, UTC epoch ms, increasing.")
    close: tuple[float, ...] = Field(description="Closes, quote currency.")

    @classmethod
    def from_candles(cls, candles: Candles) -> PriceSeries:
        """The closes of candles, stamped with each candle's close time (open time + interval).

        Built without re-validation: `Candles` already guarantees what the fields require (int64
        times, finite positive float64 closes), and validating a month of hourly closes element by
        element cost more than the rest of a gate decision. The values are the plain ints and floats
        validation would produce (tests/test_risk_inputs.py compares the two).
        """
        return cls.model_construct(time_ms=tuple((candles.time + candles.interval_ms).tolist()),
                                   close=tuple(candles.close.tolist()))


class Instrument(_Frozen):
    """Exchange filters of the symbol: the quantity step, the minimum quantity and notional."""

    lot_step: float = Field(default=0.0, ge=0.0, description="Quantity step in base units (0: any quantity).")
    min_quantity: float = Field(default=0.0, ge=0.0, description="Smallest order quantity, base units.")
    min_notional: float = Field(default=0.0, ge=0.0, description="Smallest order value, quote currency.")


class RiskRequest(_Frozen):
    """Everything one gate decision reads. Time is an input: nothing reads a clock."""

    now_ms: int = Field(description="Decision time, UTC epoch ms.")
    proposal: TradeProposal
    account: AccountState
    positions: tuple[OpenPosition, ...] = ()
    recent_signal_ms: tuple[int, ...] = Field(
        default=(), description="Times of earlier signals that counted against the hourly limit, UTC epoch ms."
    )
    breakers: BreakerState = BreakerState()
    history: TradeHistory = TradeHistory()
    regime: RegimeView | None = None
    prices: dict[str, PriceSeries] = Field(default_factory=dict, description="Close series by symbol.")
    instrument: Instrument = Instrument()
