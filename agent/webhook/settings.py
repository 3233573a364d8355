"""Settings of the TradingView webhook and `signal-agent serve`: the `[webhook]` config section.

Kept apart from the web code so that the configuration loader imports pydantic only.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class WebhookSettings(BaseModel):
    """Config section `[webhook]`. The secret comes from `WEBHOOK_SECRET` (environment or `.env`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    secret: SecretStr | None = Field(
        None, description="Shared HMAC-SHA256 secret of the alerts: set WEBHOOK_SECRET in the environment or .env, "
                          "never here. `serve` refuses to start without one.")
    host: str = Field("127.0.0.1", description="Address the server listens on (0.0.0.0: every interface).")
    port: int = Field(8080, ge=0, le=65535, description="TCP port (0: any free port, printed at start).")
    timestamp_window_s: float = Field(
        300.0, gt=0, le=86_400, description="An alert's timestamp may differ from the receipt time by at most this "
                                            "many seconds, either way; older or newer alerts are refused.")
    cooldown_s: float = Field(
        900.0, ge=0, description="After an accepted entry alert, further entry alerts of the same symbol and "
                                 "strategy are refused for this many seconds (0: no cooldown).")
    max_body_bytes: int = Field(16_384, ge=256, le=1_048_576, description="Largest request body accepted, bytes.")
    max_pending: int = Field(32, ge=1, le=10_000,
                             description="Accepted alerts waiting for their cycle at most; more are refused (503).")
    symbols: tuple[str, ...] = Field(
        (), description="Symbols an alert may name; empty: the configured universe ([cycle] symbols, else every "
                        "symbol of the data).")
