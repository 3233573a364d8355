"""Settings of the Telegram alerts: the `[telegram]` config section.

The bot token and the chat id come from the environment or a `.env` file (`TELEGRAM_BOT_TOKEN`,
`TELEGRAM_CHAT_ID`, read by `agent.config`); they may also be set in the file, but a token in a
file is a token in a backup. `TELEGRAM_API_URL` points the bot at another Bot API server (a
self-hosted one, or the test's fake on 127.0.0.1).
"""

from __future__ import annotations

import re
from datetime import time as clock_time
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

DEFAULT_API_URL = "https://api.telegram.org"


class TelegramSettings(BaseModel):
    """Config section `[telegram]`. Alerts are on when both the token and the chat id are set."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bot_token: SecretStr | None = Field(None, description="Bot token from @BotFather; None: $TELEGRAM_BOT_TOKEN.")
    chat_id: SecretStr | None = Field(
        None, description="The one chat alerts go to and commands are taken from; None: $TELEGRAM_CHAT_ID.")
    api_url: str = Field(DEFAULT_API_URL, description="Bot API base URL ($TELEGRAM_API_URL); the token is appended.")
    report_time: str = Field("08:00", description="Local time of the daily report, HH:MM.")
    timezone: str = Field("UTC", description="IANA zone of report_time and of the report's day.")
    digest_minutes: float = Field(240.0, gt=0, description="INFO alerts are sent together, at most this often.")
    ticket_expiry_bars: float = Field(
        1.0, gt=0, description="A ticket is stale this many candle intervals after its decision time.")
    fill_band: float = Field(
        0.10, gt=0, lt=1, description="A reported fill price must lie within this fraction of the ticket's entry.")
    near_limit: float = Field(
        0.80, gt=0, lt=1, description="WARNING when this fraction of a loss or exposure limit is used.")
    retry_initial_s: float = Field(1.0, gt=0, description="First wait after a failed send, seconds (then doubled).")
    retry_max_s: float = Field(300.0, gt=0, description="Longest wait between send attempts, seconds.")
    retry_jitter: float = Field(0.25, ge=0, le=1, description="Random extra wait, fraction of the backoff.")
    request_timeout_s: float = Field(15.0, gt=0, description="Read timeout of one Bot API request, seconds.")
    poll_timeout_s: int = Field(20, ge=0, le=50, description="getUpdates long-poll timeout, seconds.")

    @field_validator("report_time")
    @classmethod
    def _clock(cls, v: str) -> str:
        if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", v):
            raise ValueError(f"report_time must be HH:MM (24 h), got {v!r}")
        return v

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r} (an IANA name such as 'Europe/Prague')") from None
        return v

    @field_validator("api_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^https?://[^/\s]+", v):
            raise ValueError(f"api_url must be an http(s) URL, got {v!r}")
        return v.rstrip("/")

    @property
    def configured(self) -> bool:
        return bool(self.bot_token and self.bot_token.get_secret_value() and self.chat_id
                    and self.chat_id.get_secret_value())

    @property
    def chat(self) -> str:
        """The configured chat id (not secret in itself, but kept out of logs with the token)."""
        return self.chat_id.get_secret_value() if self.chat_id else ""

    @property
    def report_clock(self) -> clock_time:
        hours, minutes = map(int, self.report_time.split(":"))
        return clock_time(hours, minutes, tzinfo=ZoneInfo(self.timezone))

    def bot_base_url(self) -> str:
        """python-telegram-bot's `base_url`: it appends the token, so this ends in '/bot'."""
        return f"{self.api_url}/bot"
