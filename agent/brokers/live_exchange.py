"""The live broker's connection to the exchange: settings, the enable check, keys, the ccxt client.

Everything here is about *reaching* the exchange safely; what to do with it is `live.py`.

- Live trading is off unless the config says `enabled = true` *and* the command line asks for
  it (`require_live_mode`); it runs on the exchange's sandbox/testnet unless the config says
  `sandbox = false` *and* the command line says production as well.
- Keys come only from the environment or a `.env` file (`load_credentials`), never from the
  TOML file, and are held as `SecretStr`. They are scrubbed from every log record of ccxt's
  logger and from every error message this package writes (`Redactor`).
- `connect_exchange` builds the ccxt client: spot markets only, withdrawal and transfer methods
  replaced by a refusal (defence in depth: nothing in this product moves funds off the account).
- `RetryPolicy`: exponential backoff with "full jitter" (Brooks, "Exponential Backoff and
  Jitter", AWS Architecture Blog, 2015): sleep uniform(0, min(cap, base * 2**(attempt - 1))).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import ccxt
from dotenv import dotenv_values
from pydantic import BaseModel, ConfigDict, SecretStr

from agent.brokers.base import BrokerError
from agent.brokers.live_settings import LiveBrokerSettings

KEY_ENV = "SIGNAL_AGENT_EXCHANGE_API_KEY"
SECRET_ENV = "SIGNAL_AGENT_EXCHANGE_API_SECRET"

# The errors after which the same request may succeed: ccxt's NetworkError family.
RETRYABLE_ERRORS: tuple[type[Exception], ...] = (
    ccxt.RequestTimeout,
    ccxt.ExchangeNotAvailable,
    ccxt.DDoSProtection,
    ccxt.RateLimitExceeded,
    ccxt.NetworkError,
)
# Methods that move funds off the trading account; the broker must never call them.
FORBIDDEN_METHODS = (
    "withdraw", "transfer", "transfer_in", "transfer_out", "create_deposit_address", "fetch_deposit_address",
)

Mode = Literal["sandbox", "production"]


class LiveDisabledError(BrokerError):
    """Live trading was asked for but is not enabled (or keys are missing); the message says how."""


def require_live_mode(settings: LiveBrokerSettings, cli_live: bool, cli_production: bool = False) -> Mode:
    """The mode live trading may run in, or `LiveDisabledError` saying which switch is missing.

    Both the config (`[live] enabled = true`) and the command line (`cli_live`) must ask for live
    trading; production needs `[live] sandbox = false` *and* `cli_production` as well.
    """
    if not cli_live:
        raise LiveDisabledError("live trading was not asked for on the command line")
    if not settings.enabled:
        raise LiveDisabledError("live trading is disabled: set `enabled = true` in the [live] section of the config")
    if settings.sandbox:
        if cli_production:
            raise LiveDisabledError("production was asked for, but the config has `sandbox = true` in [live]")
        return "sandbox"
    if not cli_production:
        raise LiveDisabledError("the config has `sandbox = false`: add the production flag to trade real funds")
    return "production"


class ExchangeCredentials(BaseModel):
    """API key and secret; they print as '**********'."""

    model_config = ConfigDict(frozen=True)

    api_key: SecretStr
    secret: SecretStr


def load_credentials(
    environ: Mapping[str, str] | None = None, env_file: str | Path | None = ".env"
) -> ExchangeCredentials:
    """Keys from the environment, else from `env_file`; a missing one is named, never shown."""
    env = os.environ if environ is None else environ
    found: dict[str, str] = {}
    if env_file is not None and Path(env_file).is_file():
        found.update({k: v for k, v in dotenv_values(env_file).items() if k in (KEY_ENV, SECRET_ENV) and v})
    found.update({k: v for k, v in env.items() if k in (KEY_ENV, SECRET_ENV) and v})
    missing = [name for name in (KEY_ENV, SECRET_ENV) if not found.get(name)]
    if missing:
        raise LiveDisabledError(f"exchange keys missing: set {' and '.join(missing)} in the environment or .env")
    return ExchangeCredentials(api_key=SecretStr(found[KEY_ENV]), secret=SecretStr(found[SECRET_ENV]))


class Redactor(logging.Filter):
    """Replaces every known secret by '***' in log records and in text this package keeps."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def add(self, *secrets: str) -> None:
        self.secrets.update(s for s in secrets if s)

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            record.msg = self.scrub(record.getMessage())
            record.args = None
        return True


REDACTOR = Redactor()
# ccxt logs every request and its headers (the API key among them) at DEBUG on the logger it is given.
CCXT_LOGGER = logging.getLogger("agent.brokers.ccxt")
CCXT_LOGGER.addFilter(REDACTOR)


def _refuse(name: str) -> Any:
    def refuse(*args: object, **kwargs: object) -> None:
        raise BrokerError(f"{name} is refused: this product never moves funds off the trading account")

    return refuse


def connect_exchange(
    settings: LiveBrokerSettings, credentials: ExchangeCredentials, mode: Mode, api_base_url: str | None = None
) -> ccxt.Exchange:
    """A ccxt client for `settings.exchange`'s spot markets, on its sandbox unless `mode` is production.

    `api_base_url` (scheme://host:port) replaces the host of every REST endpoint: for a local
    imitation of the exchange in tests, or a relay. Markets are loaded by the broker's `start`.
    """
    if settings.exchange not in ccxt.exchanges:
        raise BrokerError(f"unknown exchange {settings.exchange!r}: not a ccxt exchange id")
    api_key, secret = credentials.api_key.get_secret_value(), credentials.secret.get_secret_value()
    REDACTOR.add(api_key, secret)
    exchange: ccxt.Exchange = getattr(ccxt, settings.exchange)({
        "apiKey": api_key,
        "secret": secret,
        "timeout": settings.request_timeout_ms,
        "enableRateLimit": settings.rate_limit,
        "logger": CCXT_LOGGER,
        "options": {
            "defaultType": "spot",
            "fetchMarkets": {"types": ["spot"]},
            "fetchCurrencies": False,
            # reconciliation must see every open order, whatever its symbol
            "fetchOpenOrders": {"warnWithoutSymbol": False},
            "warnOnFetchOpenOrdersWithoutSymbol": False,
        },
    })
    exchange.verbose = False  # verbose mode prints requests, keys included, to stdout
    if mode == "sandbox":
        exchange.set_sandbox_mode(True)
    if api_base_url is not None:
        _point_api_at(exchange, api_base_url.rstrip("/"))
    for name in FORBIDDEN_METHODS:
        if hasattr(exchange, name):
            setattr(exchange, name, _refuse(name))
    return exchange


def _point_api_at(exchange: ccxt.Exchange, base: str) -> None:
    def rewrite(urls: Any) -> Any:
        if isinstance(urls, dict):
            return {k: rewrite(v) for k, v in urls.items()}
        if isinstance(urls, str) and "://" in urls:
            path = urls.partition("://")[2].partition("/")[2]  # drop scheme and host, keep the path
            return f"{base}/{path}" if path else base
        return urls

    exchange.urls["api"] = rewrite(exchange.urls["api"])
