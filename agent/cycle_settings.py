"""Settings of the decision cycle: the `[cycle]` config section (kept apart from `agent.cycle` so
that the configuration loader does not import the cycle, which imports the LLM layer)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agent.snapshot import DEFAULT_WINDOW
from theories.registry import DEFAULT_SET


class DataPolicy(BaseModel):
    """When a symbol's candles are not fit to decide on (config section `[cycle.data]`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_stale_bars: int = Field(0, ge=0, description="Whole intervals the last closed candle may lag the decision.")
    recent_bars: int = Field(48, ge=1, description="The most recent bars that must be complete ...")
    max_missing_recent: int = Field(0, ge=0, description="... up to this many missing candles among them.")
    max_missing_window: float = Field(
        0.02, ge=0, lt=1, description="Missing candles in the analysis window, fraction of the window at most."
    )
    min_candles: int = Field(300, ge=1, description="Candles closed by the decision time at least this many.")


class CycleSettings(BaseModel):
    """Config section `[cycle]`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    run: str = Field("paper", min_length=1, pattern=r"^[A-Za-z0-9_.-]+$",
                     description="Name of the run: its cycles share one broker account and breaker state.")
    symbols: tuple[str, ...] = Field((), description="The universe; empty: every symbol the data source has.")
    window: int = Field(DEFAULT_WINDOW, ge=50, description="Candles in each snapshot's analysis window.")
    theories: dict[str, dict[str, Any] | None] = Field(
        default_factory=lambda: dict.fromkeys(DEFAULT_SET),
        description="Theory set: name -> parameters (None: the theory's defaults).",
    )
    leader: str = Field("BTC/USDT", description="The market leader for the context theory.")
    entry_order: Literal["market", "limit"] = Field("market", description="market: next bar's open; limit: at entry.")
    limit_valid_bars: int = Field(1, ge=1, description="Bars a limit entry may wait to be touched.")
    outcomes_shown: int = Field(20, ge=0, description="Last closed-trade R multiples of the symbol shown to the LLM.")
    data: DataPolicy = DataPolicy()
