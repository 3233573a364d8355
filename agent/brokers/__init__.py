"""Brokers: where an approved decision becomes an order. One interface (`base.Broker`): paper, live, manual."""

from agent.brokers.base import (
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
    client_order_id,
)

__all__ = [
    "AccountSnapshot",
    "Broker",
    "BrokerError",
    "ClosedTrade",
    "Fill",
    "Mismatch",
    "OrderIntent",
    "OrderState",
    "Position",
    "SyncReport",
    "client_order_id",
]
