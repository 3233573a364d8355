"""The body of a TradingView alert: its JSON schema, validated strictly, with field errors a sender can act on.

TradingView fills an alert's message from placeholders (`{{ticker}}`, `{{close}}`, `{{timenow}}`,
`{{strategy.order.action}}`), so the model accepts what they produce: `direction` long/short or
the order action buy/sell (any case); `timestamp` an ISO-8601 time with its zone (`{{timenow}}`
gives `2026-11-21T09:56:00Z`) or epoch seconds or milliseconds; `symbol` as `BTCUSDT`,
`BINANCE:BTCUSDT` or `BTC/USDT`. Extra fields are kept (flat scalars only, bounded) and shown to
the LLM with the alert.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    field_validator,
    model_validator,
)

MAX_EXTRAS = 16
MAX_EXTRA_KEY = 40
MAX_EXTRA_TEXT = 200
# 10**11 seconds is the year 5138: an integer timestamp below it is in seconds, above it in milliseconds
SECONDS_BELOW = 10**11

Scalar = str | StrictInt | float | bool


class TradingViewAlert(BaseModel):
    """A TradingView strategy alert (`POST /webhook/tradingview`)."""

    model_config = ConfigDict(extra="allow", frozen=True, str_strip_whitespace=True, json_schema_extra={
        "examples": [{"strategy": "ema-cross", "action": "entry", "direction": "long", "symbol": "BINANCE:BTCUSDT",
                      "price": 95123.5, "timestamp": "2026-11-21T09:56:00Z", "timeframe": "1h"}]})
    __pydantic_extra__: dict[str, Scalar] = Field(init=False)

    strategy: str = Field(min_length=1, max_length=100, description="Name of the sending strategy (cooldown key).")
    action: Literal["entry", "exit"] = Field(description="entry: the strategy opens a position; exit: it closes one.")
    direction: Literal["long", "short"] = Field(
        description="The side the strategy trades: long | short (buy | sell accepted, any case).")
    symbol: str = Field(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9:/._-]+$",
                        description="BTCUSDT, BINANCE:BTCUSDT or BTC/USDT; must be in the allow-list.")
    price: float = Field(gt=0, allow_inf_nan=False, description="The alert's price, quote currency.")
    timestamp: AwareDatetime | StrictInt = Field(
        description="When the alert fired: ISO-8601 with a zone, or integer epoch seconds or milliseconds (UTC; an "
                    "integer below 10^11 is seconds).")

    @model_validator(mode="before")
    @classmethod
    def _flat_extras(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, value in data.items():
                if key not in cls.model_fields and not isinstance(value, str | int | float | bool):
                    raise ValueError(f"extra field {key!r} must be a string, a number or a boolean")
        return data

    @field_validator("action", mode="before")
    @classmethod
    def _action(cls, v: Any) -> Any:
        return v.strip().lower() if isinstance(v, str) else v

    @field_validator("direction", mode="before")
    @classmethod
    def _direction(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = v.strip().lower()
            return {"buy": "long", "sell": "short"}.get(v, v)
        return v

    @field_validator("timestamp", mode="before")
    @classmethod
    def _string_or_integer(cls, v: Any) -> Any:
        if not isinstance(v, str | int) or isinstance(v, bool):
            raise ValueError("timestamp must be an ISO-8601 time with its zone, or an integer epoch")
        return v

    @field_validator("timestamp")
    @classmethod
    def _positive(cls, v: datetime | int) -> datetime | int:
        if isinstance(v, int) and v <= 0:
            raise ValueError("an epoch timestamp must be positive")
        return v

    @model_validator(mode="after")
    def _bounded_extras(self) -> TradingViewAlert:
        extra = self.__pydantic_extra__ or {}
        if len(extra) > MAX_EXTRAS:
            raise ValueError(f"at most {MAX_EXTRAS} extra fields, got {len(extra)}")
        for key, value in extra.items():
            if len(key) > MAX_EXTRA_KEY:
                raise ValueError(f"extra field name {key[:MAX_EXTRA_KEY]!r}... is longer than {MAX_EXTRA_KEY}")
            if isinstance(value, str) and len(value) > MAX_EXTRA_TEXT:
                raise ValueError(f"extra field {key!r} is longer than {MAX_EXTRA_TEXT} characters")
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"extra field {key!r} is not a finite number")
        return self

    @property
    def time_ms(self) -> int:
        """The timestamp as UTC epoch ms."""
        t = self.timestamp
        if isinstance(t, datetime):
            return round(t.timestamp() * 1000)
        return t * 1000 if t < SECONDS_BELOW else t

    @property
    def side(self) -> Literal["LONG", "SHORT"]:
        return "LONG" if self.direction == "long" else "SHORT"

    @property
    def extras(self) -> dict[str, str | int | float | bool]:
        return dict(self.__pydantic_extra__ or {})


def compact(symbol: str) -> str:
    """A symbol reduced for matching: no exchange prefix, no separators, upper case (`binance:btc/usdt` -> BTCUSDT)."""
    return re.sub(r"[/_.-]", "", symbol.rsplit(":", 1)[-1]).upper()


def resolve_symbol(sent: str, allowed: Iterable[str]) -> str | None:
    """The allowed symbol an alert names (exact match after `compact`), or None.

    Strict on purpose: a perpetual's ticker (`BTCUSDT.P` -> BTCUSDTP) does not match the spot
    symbol, and a bare base (`BTC`) matches nothing, so an alert can only trade what it names.
    """
    wanted = compact(sent)
    return next((s for s in allowed if compact(s) == wanted), None)


def field_errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """pydantic errors as FastAPI reports request validation errors: loc (from "body"), msg, type."""
    return [{"loc": ["body", *e.get("loc", ())], "msg": e.get("msg", ""), "type": e.get("type", "")} for e in errors]
