"""Deterministic sizing and prop-firm rules: the RiskGate.

The LLM's influence ends at the proposal: this package decides whether a trade is taken and
how large it is, with pure functions over plain typed data (it imports nothing from `agent`),
and every refusal or reduction says which rule did it and with which numbers.
"""

from risk.breakers import BreakerEvent, BreakerState, manual_reset, update_breakers
from risk.config import KILL_SWITCH_ENV, RiskConfig
from risk.decision import Approved, Decision, Reason, Rejected
from risk.gate import RiskGate
from risk.inputs import (
    AccountState,
    BalanceChange,
    Instrument,
    OpenPosition,
    PriceSeries,
    RegimeView,
    RiskRequest,
    TradeHistory,
    TradeProposal,
    WinCount,
)
from risk.kelly import kelly_fraction, win_probability

__all__ = [
    "KILL_SWITCH_ENV",
    "AccountState",
    "Approved",
    "BalanceChange",
    "BreakerEvent",
    "BreakerState",
    "Decision",
    "Instrument",
    "OpenPosition",
    "PriceSeries",
    "Reason",
    "RegimeView",
    "Rejected",
    "RiskConfig",
    "RiskGate",
    "RiskRequest",
    "TradeHistory",
    "TradeProposal",
    "WinCount",
    "kelly_fraction",
    "manual_reset",
    "update_breakers",
    "win_probability",
]
