"""The store's tables (sqlmodel). Every row of a decision carries its cycle id and decision id.

Ids: a cycle is `<run>@<decision time ISO>` and a decision `<cycle id>/<symbol>`, both derived
from their inputs, so that a rerun of the same cycle after a crash finds what was already decided
and an order's client order id (derived from the decision id) is the same on every attempt.

Times are UTC epoch ms, prices quote currency, quantities base units, rates fractions. JSON
columns hold pydantic models' `model_dump_json()` so nothing is lost of the snapshot, the reasons
or the broker's memory.
"""

from __future__ import annotations

from sqlalchemy import Index
from sqlmodel import Field, SQLModel


class CycleRow(SQLModel, table=True):
    __tablename__ = "cycles"
    # the run's cycles in a time window (the hourly signal limit, every decision) and its latest cycle
    __table_args__ = (Index("ix_cycles_run_decision_ms", "run", "decision_ms"),)

    cycle_id: str = Field(primary_key=True)
    run: str = Field(index=True, description="Name of the run (e.g. 'paper'); cycles of one run share a broker.")
    decision_ms: int = Field(index=True, description="The decision time: only candles closed by then were used.")
    started_ms: int = Field(description="Wall clock at the first start.")
    finished_ms: int | None = None
    status: str = Field(description="running | completed")
    attempts: int = Field(default=1, description="Starts of this cycle (more than one: resumed after a crash).")
    broker: str
    provider: str
    symbols_json: str = Field(description="The universe asked for, JSON list.")


class DecisionRow(SQLModel, table=True):
    """One symbol's decision in one cycle. Its presence means every other row of it is there too."""

    __tablename__ = "decisions"

    decision_id: str = Field(primary_key=True)
    cycle_id: str = Field(index=True, foreign_key="cycles.cycle_id")
    symbol: str = Field(index=True)
    decision_ms: int = Field(index=True)
    outcome: str = Field(description="skipped | hold | rejected | ordered | order_failed")
    reason: str = Field(default="", description="Why: the skip's data problem, the hold or the gate's codes.")
    regime: str | None = Field(default=None, description="Named regime at decision time (win history slice).")
    variant: str = Field(default="", description="provider:model:prompt variant (win history slice).")
    created_ms: int


class SnapshotRow(SQLModel, table=True):
    __tablename__ = "feature_snapshots"

    decision_id: str = Field(primary_key=True, foreign_key="decisions.decision_id")
    cycle_id: str = Field(index=True)
    symbol: str
    time_ms: int | None = Field(description="Close time of the last candle used.")
    last_price: float
    snapshot_json: str
    prompt_text: str = Field(description="The snapshot as the prompt showed it.")


class DecisionCallRow(SQLModel, table=True):
    """An LLM call of a decision: its summary here, the full request/reply in the call records (`record_id`)."""

    __tablename__ = "decision_llm_calls"

    id: int | None = Field(default=None, primary_key=True)
    decision_id: str = Field(index=True, foreign_key="decisions.decision_id")
    cycle_id: str = Field(index=True)
    record_id: int | None = Field(default=None, description="Id in the LLM call records (llm_calls table).")
    attempt: int
    provider: str
    model: str
    prompt_variant: str
    template_version: str
    prompt_hash: str
    request_key: str
    outcome: str
    error: str | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    tokens_estimated: bool = False
    latency_ms: float = 0.0
    cost_usd: float = 0.0
    cache_hit: bool = False


class SignalRow(SQLModel, table=True):
    __tablename__ = "signals"

    decision_id: str = Field(primary_key=True, foreign_key="decisions.decision_id")
    cycle_id: str = Field(index=True)
    symbol: str
    direction: str
    confidence: float
    entry: float | None = None
    stop: float | None = None
    target: float | None = None
    horizon_hours: float
    reasoning: str
    theories_json: str
    hold_reason: str | None = None
    prompt_variant: str
    prompt_version: str
    prompt_hash: str = Field(description="sha256 of the rendered prompt.")
    llm_used: bool


class GateDecisionRow(SQLModel, table=True):
    __tablename__ = "gate_decisions"

    decision_id: str = Field(primary_key=True, foreign_key="decisions.decision_id")
    cycle_id: str = Field(index=True)
    symbol: str
    status: str = Field(description="approved | rejected")
    quantity: float | None = None
    risk_amount: float | None = None
    notional: float | None = None
    win_probability: float | None = None
    reward_risk: float | None = None
    kelly_fraction: float | None = None
    codes: str = Field(description="Reason codes, comma-separated (for queries).")
    reasons_json: str = Field(description="Every reason with its numbers.")
    request_json: str = Field(description="The RiskRequest the gate saw (replayable).")


class OrderRow(SQLModel, table=True):
    __tablename__ = "orders"

    client_order_id: str = Field(primary_key=True)
    decision_id: str = Field(index=True, unique=True, foreign_key="decisions.decision_id")
    cycle_id: str = Field(index=True)
    broker: str
    symbol: str = Field(index=True)
    side: str
    order_type: str
    quantity: float
    limit_price: float | None = None
    stop: float
    target: float
    time_stop_ms: int
    status: str
    exchange_order_id: str | None = None
    filled_quantity: float = 0.0
    average_price: float | None = None
    created_ms: int
    updated_ms: int
    message: str = ""


class FillRow(SQLModel, table=True):
    __tablename__ = "fills"

    fill_id: str = Field(primary_key=True)
    client_order_id: str = Field(index=True, foreign_key="orders.client_order_id")
    cycle_id: str = Field(index=True, description="The cycle that recorded it.")
    decision_id: str = Field(index=True)
    symbol: str
    action: str
    side: str
    quantity: float
    price: float
    fee: float
    time_ms: int
    reason: str


class PositionRow(SQLModel, table=True):
    """The current open positions (rows leave when a position closes); the cycle that last marked it."""

    __tablename__ = "positions"

    client_order_id: str = Field(primary_key=True, foreign_key="orders.client_order_id")
    decision_id: str = Field(index=True)
    cycle_id: str = Field(index=True)
    symbol: str
    side: str
    quantity: float
    entry: float
    stop: float
    target: float
    mark: float
    floating_pnl: float
    opened_ms: int
    time_stop_ms: int
    updated_ms: int


class ClosedTradeRow(SQLModel, table=True):
    __tablename__ = "closed_trades"

    client_order_id: str = Field(primary_key=True, foreign_key="orders.client_order_id")
    decision_id: str = Field(index=True)
    cycle_id: str = Field(index=True, description="The cycle that recorded the close.")
    symbol: str = Field(index=True)
    side: str
    quantity: float
    entry: float
    exit: float
    opened_ms: int
    closed_ms: int = Field(index=True)
    exit_reason: str
    fees: float
    pnl: float
    risk_amount: float
    r_multiple: float
    outcome: str = Field(description="win | loss (win: r_multiple > 0)")
    regime: str | None = Field(default=None, description="Regime at the decision (win history slice).")
    variant: str = Field(default="", description="provider:model:prompt variant of the decision.")


class AccountSnapshotRow(SQLModel, table=True):
    __tablename__ = "account_snapshots"

    id: int | None = Field(default=None, primary_key=True)
    cycle_id: str = Field(index=True)
    stage: str = Field(description="sync (after the broker caught up) | end (after the cycle's orders)")
    time_ms: int = Field(index=True)
    cash: float
    balance: float
    equity: float
    positions_value: float
    floating_pnl: float
    initial_balance: float


class BreakerEventRow(SQLModel, table=True):
    __tablename__ = "breaker_events"

    id: int | None = Field(default=None, primary_key=True)
    cycle_id: str = Field(index=True)
    decision_id: str = Field(index=True)
    breaker: str
    kind: str
    at_ms: int
    loss: float | None = None
    limit: float | None = None
    reference_balance: float | None = None
    equity: float | None = None
    note: str = ""


class MismatchRow(SQLModel, table=True):
    """A reconciliation mismatch found by a broker (the exchange's view was adopted)."""

    __tablename__ = "broker_mismatches"

    id: int | None = Field(default=None, primary_key=True)
    cycle_id: str = Field(index=True)
    time_ms: int
    kind: str
    client_order_id: str | None = None
    symbol: str | None = None
    detail: str


class StateRow(SQLModel, table=True):
    """Small state values written with the decision that changed them: the breakers, a broker's memory."""

    __tablename__ = "agent_state"

    key: str = Field(primary_key=True, description="'breakers:<run>' or 'broker:<run>'.")
    value_json: str
    cycle_id: str
    updated_ms: int


class OutboxRow(SQLModel, table=True):
    """An alert waiting for (or done with) delivery to Telegram: written with what caused it, sent once.

    `key` is the idempotency key (e.g. 'signal:<decision id>'): a second alert with the same key is
    never queued. The sender takes the oldest due row first (by `id`), and marks it sent together
    with Telegram's message id in one transaction.
    """

    __tablename__ = "alert_outbox"

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(unique=True, description="Idempotency key: one alert per key, ever.")
    run: str = Field(default="", index=True)
    level: str = Field(description="INFO (digest) | WARNING (at once) | CRITICAL (at once) | TRADE (tickets, "
                                   "position events); `silent` says whether it rings")
    kind: str = Field(description="signal | position | warning | critical | report | info ...")
    text: str = Field(description="The message, Telegram HTML.")
    buttons_json: str = Field(default="[]", description="Inline keyboard: rows of [label, callback data].")
    silent: bool = Field(default=False, description="Sent with disable_notification (no sound).")
    decision_id: str | None = Field(default=None, index=True)
    ticket_id: str | None = Field(default=None, index=True)
    created_ms: int
    attempts: int = Field(default=0, description="Send attempts so far.")
    next_attempt_ms: int = Field(default=0, index=True, description="Not before this time (backoff, retry_after).")
    last_error: str = ""
    status: str = Field(default="pending", index=True, description="pending | sent | failed (refused by Telegram)")
    sent_ms: int | None = None
    message_id: int | None = Field(default=None, description="Telegram's message id once sent.")


class TicketRow(SQLModel, table=True):
    """A manual-execution ticket: the short id its buttons carry, and the person's answer."""

    __tablename__ = "alert_tickets"

    ticket_id: str = Field(primary_key=True, description="Short id in callback data (Telegram allows 64 bytes).")
    decision_id: str = Field(unique=True)
    client_order_id: str = Field(index=True)
    run: str = Field(index=True)
    symbol: str
    side: str
    entry: float
    stop: float
    target: float
    quantity: float
    created_ms: int
    expires_ms: int = Field(description="After this the ticket is stale: Executed is refused, the order withdrawn.")
    status: str = Field(default="open", index=True,
                        description="open | executed | skipped | expired | closed")
    fill_price: float | None = None
    exit_price: float | None = None
    answered_ms: int | None = None
    prompt_message_id: int | None = Field(default=None, index=True,
                                          description="The 'reply with the price' message the person answers.")
    prompt_action: str | None = Field(default=None, description="executed | closed: what the price reply means.")


class WebhookAlertRow(SQLModel, table=True):
    """A signed TradingView alert received by the webhook, with the verdict it got and what it triggered.

    Only requests whose signature verified are stored, one row per distinct signature: an
    unauthenticated sender can never write to the store (bad signatures and oversize bodies are
    logged and counted, not kept), and a replayed request is the row already there.
    """

    __tablename__ = "webhook_alerts"

    alert_id: str = Field(primary_key=True, description="'tv-' + the first 20 hex digits of the signature.")
    signature: str = Field(unique=True, description="HMAC-SHA256 of the raw body, hex.")
    received_ms: int = Field(index=True)
    body: str = Field(description="The raw body as received (bounded by the size limit), UTF-8.")
    verdict: str = Field(index=True, description="accepted | invalid_payload | stale | future | forbidden_symbol "
                                                 "| cooldown | busy")
    http_status: int
    detail: str = Field(default="", description="Why, for a refusal; what happens next, for an accepted alert.")
    strategy: str | None = Field(default=None, index=True)
    action: str | None = Field(default=None, description="entry | exit")
    direction: str | None = Field(default=None, description="LONG | SHORT")
    symbol: str | None = Field(default=None, index=True, description="The alert's symbol resolved to ours.")
    symbol_sent: str | None = Field(default=None, description="The symbol as the alert wrote it.")
    price: float | None = None
    alert_ms: int | None = Field(default=None, description="The alert's own timestamp, UTC epoch ms.")
    run: str = Field(default="", index=True, description="The run whose account the triggered cycle trades.")
    status: str = Field(default="refused", index=True,
                        description="refused | recorded (exit) | paused | queued | running | done | failed | expired")
    decision_ms: int | None = Field(default=None, description="Decision time of the triggered cycle.")
    cycle_id: str | None = Field(default=None, index=True)
    decision_id: str | None = None
    outcome: str | None = Field(default=None, description="The symbol's decision outcome (hold, ordered, ...).")
    finished_ms: int | None = None


class WebhookSignatureRow(SQLModel, table=True):
    """A signature already seen: inserting it is the replay check (the primary key refuses a second one).

    Kept until the alert's timestamp has left the accepted window, after which the timestamp
    check alone refuses the body; then it may be pruned.
    """

    __tablename__ = "webhook_signatures"

    signature: str = Field(primary_key=True)
    seen_ms: int
    expires_ms: int = Field(index=True, description="The alert's timestamp plus the window: prunable after.")


TABLES = (
    CycleRow, DecisionRow, SnapshotRow, DecisionCallRow, SignalRow, GateDecisionRow, OrderRow, FillRow,
    PositionRow, ClosedTradeRow, AccountSnapshotRow, BreakerEventRow, MismatchRow, StateRow,
    OutboxRow, TicketRow,
    WebhookAlertRow, WebhookSignatureRow,
)

# Indexes added after stores existed: the store creates them on open when they are missing
LATER_INDEXES = tuple(i for i in CycleRow.__table__.indexes if i.name == "ix_cycles_run_decision_ms")
