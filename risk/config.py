"""The risk gate's settings, with the issue's defaults, validated at load time.

Percentages are fractions of equity (0.02 = 2%) unless a field says otherwise. The FTMO-style
limits default to a buffer under FTMO's own (4.5% daily and 9% total against 5% and 10%), so a
fill a little worse than the stop does not end a challenge. Everything is immutable: a config is
a value, and the same config and request always give the same answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from theories.regime import BEAR_TREND, BREAKOUT, BULL_TREND, CONSOLIDATION, HIGH_VOL_RANGE, LOW_VOL_RANGE, REGIMES

KILL_SWITCH_ENV = "SIGNAL_AGENT_KILL_SWITCH"
_TRUE = {"1", "true", "yes", "on"}


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class SizingConfig(_Frozen):
    kelly_multiplier: float = Field(0.25, gt=0, le=1, description="Fraction of full Kelly risked (0.25 = quarter).")
    prior_wins: float = Field(4.0, gt=0, description="Beta prior pseudo-wins of the variant's win rate.")
    prior_losses: float = Field(6.0, gt=0, description="Beta prior pseudo-losses (4/6: sceptical, p0 = 0.4).")
    min_slice_trades: int = Field(
        30, ge=1, description="Closed trades a symbol or regime slice needs before it refines the variant's p."
    )
    slice_prior_strength: float = Field(
        20.0, gt=0, description="Pseudo-trades of the variant's p when it is the prior of a symbol/regime slice."
    )
    fee_rate: float = Field(0.0, ge=0, lt=0.05, description="Fee per side as a fraction of notional (0.001 = 0.1%).")
    max_risk_per_trade: float = Field(0.02, gt=0, le=1, description="Loss at the stop, fraction of equity.")
    max_position_notional: float = Field(0.25, gt=0, le=10, description="One position's notional, fraction of equity.")
    max_open_exposure: float = Field(0.50, gt=0, le=10, description="All open notional incl. this trade, of equity.")
    cash_reserve: float = Field(0.20, ge=0, lt=1, description="Cash kept free after the trade, fraction of equity.")
    min_position_notional: float = Field(10.0, ge=0, description="Below this notional (quote): no trade.")


class FtmoConfig(_Frozen):
    timezone: str = Field("Europe/Prague", description="IANA zone whose midnight starts the trading day.")
    daily_loss_limit: float = Field(0.045, gt=0, lt=1, description="Daily loss, fraction of the initial balance.")
    total_loss_limit: float = Field(0.09, gt=0, lt=1, description="Total loss, fraction of the initial balance.")
    max_open_positions: int = Field(3, ge=0)
    max_signals_per_hour: int = Field(3, ge=0, description="Signals in the hour before the decision, this one incl.")
    min_reward_risk: float = Field(1.5, gt=0, description="Gross |target - entry| / |entry - stop| at least this.")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as e:
            raise ValueError(f"unknown time zone {v!r} (is the tzdata package installed?)") from e
        return v

    @model_validator(mode="after")
    def _daily_within_total(self) -> FtmoConfig:
        if self.daily_loss_limit > self.total_loss_limit:
            raise ValueError("daily_loss_limit must not exceed total_loss_limit")
        return self


class BreakerConfig(_Frozen):
    daily_loss: float = Field(0.03, gt=0, lt=1, description="Loss from the day-start balance that trips the breaker.")
    daily_halt_hours: float = Field(24.0, ge=0, description="Hours of full halt after the daily trip.")
    daily_recovery_hours: float = Field(48.0, ge=0, description="Hours of reduced size after the halt.")
    recovery_multiplier: float = Field(0.5, gt=0, le=1, description="Size multiplier during recovery.")
    weekly_loss: float = Field(0.07, gt=0, lt=1, description="Loss from the week-start balance: halt to manual reset.")
    monthly_loss: float = Field(0.12, gt=0, lt=1, description="Loss from the month-start balance: halt to reset.")


class CorrelationConfig(_Frozen):
    window_days: float = Field(30.0, gt=0, description="Rolling window of hourly log returns.")
    threshold: float = Field(0.7, gt=-1, lt=1, description="Correlation above this counts as correlated.")
    action: Literal["shrink", "reject"] = "shrink"
    shrink_multiplier: float = Field(0.5, gt=0, le=1, description="Size multiplier for a correlated trade.")
    max_correlated_exposure: float = Field(
        0.35, gt=0, le=10, description="Notional of same-direction correlated positions incl. this one, of equity."
    )
    min_overlap: int = Field(100, ge=10, description="Common returns needed; fewer: treated as correlated.")


class RegimePolicy(_Frozen):
    directions: Literal["long", "short", "both", "with_breakout"]
    multiplier: float = Field(gt=0, le=5)
    min_confidence: float = Field(ge=0, le=1)


def _default_regimes() -> dict[str, RegimePolicy]:
    return {
        BULL_TREND: RegimePolicy(directions="long", multiplier=1.0, min_confidence=0.65),
        BEAR_TREND: RegimePolicy(directions="short", multiplier=1.0, min_confidence=0.65),
        HIGH_VOL_RANGE: RegimePolicy(directions="both", multiplier=0.5, min_confidence=0.70),
        LOW_VOL_RANGE: RegimePolicy(directions="both", multiplier=0.8, min_confidence=0.60),
        BREAKOUT: RegimePolicy(directions="with_breakout", multiplier=1.2, min_confidence=0.65),
        CONSOLIDATION: RegimePolicy(directions="both", multiplier=0.8, min_confidence=0.65),
    }


class RegimeFilterConfig(_Frozen):
    policies: dict[str, RegimePolicy] = Field(default_factory=_default_regimes)
    require_regime: bool = Field(True, description="No regime given: reject (fail closed).")

    @field_validator("policies")
    @classmethod
    def _six_regimes(cls, v: dict[str, RegimePolicy]) -> dict[str, RegimePolicy]:
        unknown = sorted(set(v) - set(REGIMES))
        missing = sorted(set(REGIMES) - set(v))
        if unknown or missing:
            raise ValueError(
                f"regime policies must cover exactly {list(REGIMES)}: unknown {unknown}, missing {missing}"
            )
        return v


class TierPolicy(_Frozen):
    max_position_notional: float = Field(gt=0, le=10, description="One position's notional, fraction of equity.")
    max_open_positions: int = Field(ge=0, description="Open positions in this tier at most.")


def _default_tiers() -> dict[str, TierPolicy]:
    return {
        "core": TierPolicy(max_position_notional=0.25, max_open_positions=3),
        "major": TierPolicy(max_position_notional=0.15, max_open_positions=2),
        "minor": TierPolicy(max_position_notional=0.08, max_open_positions=1),
    }


def _default_symbols() -> dict[str, str]:
    tiers = {"core": ("BTC", "ETH"), "major": ("SOL", "XRP", "ADA", "AVAX", "LINK"), "minor": ("LTC", "DOGE", "BCH")}
    return {f"{base}/USDT": tier for tier, bases in tiers.items() for base in bases}


class UniverseConfig(_Frozen):
    tiers: dict[str, TierPolicy] = Field(default_factory=_default_tiers)
    symbols: dict[str, str] = Field(default_factory=_default_symbols, description="Allowed symbol -> its tier.")

    @model_validator(mode="after")
    def _tiers_exist(self) -> UniverseConfig:
        bad = sorted(s for s, t in self.symbols.items() if t not in self.tiers)
        if bad:
            raise ValueError(f"symbols {bad} name a tier that is not defined ({sorted(self.tiers)})")
        return self


class RiskConfig(_Frozen):
    kill_switch: bool = Field(False, description="Reject everything.")
    sizing: SizingConfig = SizingConfig()
    ftmo: FtmoConfig = FtmoConfig()
    breakers: BreakerConfig = BreakerConfig()
    correlation: CorrelationConfig = CorrelationConfig()
    regime: RegimeFilterConfig = RegimeFilterConfig()
    universe: UniverseConfig = UniverseConfig()

    def with_environment(self, environ: Mapping[str, str]) -> RiskConfig:
        """This config with the kill switch on if `SIGNAL_AGENT_KILL_SWITCH` is set truthy in `environ`.

        The environment can only switch the kill switch on, never off: a config that says halt halts.
        """
        if environ.get(KILL_SWITCH_ENV, "").strip().lower() in _TRUE:
            return self.model_copy(update={"kill_switch": True})
        return self

    def sized_with_fee(self, taker_fee: float) -> RiskConfig:
        """This config sizing with `taker_fee` when it sets no fee of its own (`sizing.fee_rate` 0).

        The broker that fills the orders charges its taker fee whatever the config says: sizing
        without it would put more than the risk budget at stake once the round trip is paid.
        """
        if self.sizing.fee_rate != 0:
            return self
        return self.model_copy(update={"sizing": self.sizing.model_copy(update={"fee_rate": taker_fee})})
