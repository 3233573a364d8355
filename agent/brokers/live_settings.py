"""Settings of the live (ccxt) broker: the `[live]` config section, kept apart from the broker so
that loading the configuration never imports ccxt (about 2 s)."""

from __future__ import annotations

import random

from pydantic import BaseModel, ConfigDict, Field


class RetryPolicy(BaseModel):
    """Bounded retries with full-jitter exponential backoff."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_attempts: int = Field(4, ge=1, le=10, description="Tries of one request, the first included.")
    base_s: float = Field(0.5, gt=0, description="Backoff scale, seconds.")
    cap_s: float = Field(10.0, gt=0, description="Longest single wait, seconds.")

    def delay_s(self, attempt: int, rng: random.Random) -> float:
        """Wait after failed try number `attempt` (1-based): uniform(0, min(cap, base * 2**(attempt-1)))."""
        return rng.uniform(0.0, min(self.cap_s, self.base_s * 2 ** (attempt - 1)))


class LiveBrokerSettings(BaseModel):
    """The `[live]` section of the config file. No keys here: they come from the environment."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = Field(False, description="Allow live trading at all (the command line must ask as well).")
    exchange: str = Field("binance", description="ccxt exchange id; the broker trades its spot markets.")
    sandbox: bool = Field(True, description="Trade on the exchange's testnet; false needs --production too.")
    quote: str = Field("USDT", description="Quote currency of the account: cash and P&L are measured in it.")
    limit_timeout_s: float = Field(60.0, gt=0, description="An entry limit not filled by then goes to market.")
    reconcile_every_s: float = Field(300.0, gt=0, description="Reconcile with the exchange this often.")
    request_timeout_ms: int = Field(10_000, gt=0, description="ccxt's per-request timeout.")
    rate_limit: bool = Field(True, description="ccxt's built-in request throttling.")
    retry: RetryPolicy = RetryPolicy()
