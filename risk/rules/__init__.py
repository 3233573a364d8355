"""The risk rules, one per file, each behind `risk.rules.base.RiskRule`; the gate runs `DEFAULT_RULES` in order."""

from risk.rules.base import NotionalCap, RiskRule, RuleContext, RuleOutcome, SizedTrade
from risk.rules.circuit_breakers import CircuitBreakers
from risk.rules.correlation import Correlation
from risk.rules.daily_loss import DailyLoss
from risk.rules.kill_switch import KillSwitch
from risk.rules.open_positions import OpenPositions
from risk.rules.regime_filter import RegimeFilter
from risk.rules.reward_risk import RewardRisk
from risk.rules.signal_rate import SignalRate
from risk.rules.total_loss import TotalLoss
from risk.rules.universe import Universe

DEFAULT_RULES: tuple[RiskRule, ...] = (
    KillSwitch(),
    Universe(),
    TotalLoss(),
    DailyLoss(),
    CircuitBreakers(),
    OpenPositions(),
    SignalRate(),
    RewardRisk(),
    RegimeFilter(),
    Correlation(),
)

__all__ = [
    "DEFAULT_RULES",
    "CircuitBreakers",
    "Correlation",
    "DailyLoss",
    "KillSwitch",
    "NotionalCap",
    "OpenPositions",
    "RegimeFilter",
    "RewardRisk",
    "RiskRule",
    "RuleContext",
    "RuleOutcome",
    "SignalRate",
    "SizedTrade",
    "TotalLoss",
    "Universe",
]
