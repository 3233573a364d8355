"""The one configuration loader of the product: a TOML file, the environment and a `.env` file.

Where the settings come from, highest priority first:

1. the environment, `SIGNAL_AGENT_` prefix, `__` between nested names
   (`SIGNAL_AGENT_BUDGET__DAILY_USD=2`, `SIGNAL_AGENT_LLM__OPENAI__API_KEY=...`);
2. the same variables in a `.env` file (the current directory's, unless another is named);
3. the LLM clients' own conventions, from the environment or the `.env` file: `OLLAMA_HOST`,
   `OPENAI_BASE_URL`, `OPENAI_API_KEY`; and Telegram's: `TELEGRAM_BOT_TOKEN`, `TELEGRAM_CHAT_ID`,
   `TELEGRAM_API_URL`; and the webhook's shared secret `WEBHOOK_SECRET`;
4. the TOML file: `--config PATH`, else `$SIGNAL_AGENT_CONFIG`, else
   `$XDG_CONFIG_HOME/signal-agent/config.toml` (`~/.config/signal-agent/config.toml`); only the
   default location may be absent;
5. the defaults below.

Secrets are `SecretStr`: they print as `**********` and are revealed only where a client needs them.
Sections are nested models; a later feature adds its section (risk limits, brokers, Telegram) as
one more field of `Settings`.

Example `config.toml`:

    data_dir = "/var/lib/signal-agent"
    [llm]
    provider = "ollama:qwen3:8b"
    [llm.ollama]
    host = "http://127.0.0.1:11434"
    [prices."openai:gpt-4o-mini"]      # USD per million tokens: check the provider's price page
    input_per_million = 0.15
    output_per_million = 0.60
    [budget]
    daily_usd = 5.0
    [signal]
    min_reward_risk = 1.5
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

from dotenv import dotenv_values
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from agent.alerts.settings import TelegramSettings
from agent.brokers.live_settings import LiveBrokerSettings
from agent.brokers.paper import PaperSettings
from agent.cycle_settings import CycleSettings
from agent.signal import SignalRules
from agent.store.settings import StoreSettings
from agent.webhook.settings import WebhookSettings
from risk.config import RiskConfig

ENV_PREFIX = "SIGNAL_AGENT_"
CONFIG_ENV = "SIGNAL_AGENT_CONFIG"
APP_DIR = "signal-agent"


class ConfigError(ValueError):
    """The configuration cannot be used; the message names the file or variable and the rule."""


def default_config_path(environ: Mapping[str, str] | None = None) -> Path:
    """`$XDG_CONFIG_HOME/signal-agent/config.toml`, or `~/.config/signal-agent/config.toml`."""
    env = os.environ if environ is None else environ
    base = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else Path.home() / ".config"
    return base / APP_DIR / "config.toml"


def default_data_dir() -> Path:
    """`$XDG_DATA_HOME/signal-agent`, or `~/.local/share/signal-agent`: the call records live here."""
    env = os.environ
    base = Path(env["XDG_DATA_HOME"]) if env.get("XDG_DATA_HOME") else Path.home() / ".local" / "share"
    return base / APP_DIR


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OllamaSettings(_Section):
    host: str | None = Field(None, description="Ollama server; None: $OLLAMA_HOST, else the client's 127.0.0.1:11434.")
    timeout_s: float = Field(120.0, gt=0, description="Whole-request timeout, seconds (local models can be slow).")
    temperature: float = Field(0.0, ge=0, le=2, description="Sampling temperature; 0 for repeatable answers.")
    max_output_tokens: int = Field(600, gt=0, description="`num_predict`: cap on generated tokens.")
    think: bool = Field(False, description="Let thinking models think; False keeps the answer in `content`.")
    keep_alive: str | None = Field(None, description="How long the server keeps the model loaded, e.g. '10m'.")


class OpenAISettings(_Section):
    base_url: str | None = Field(None, description="None: $OPENAI_BASE_URL, else api.openai.com.")
    api_key: SecretStr | None = Field(None, description="None: $OPENAI_API_KEY.")
    timeout_s: float = Field(60.0, gt=0, description="Whole-request timeout, seconds.")
    temperature: float = Field(0.0, ge=0, le=2)
    max_output_tokens: int = Field(600, gt=0, description="`max_completion_tokens`.")
    structured: Literal["auto", "json_schema", "json_object"] = Field(
        "auto",
        description="Strict JSON schema, JSON mode, or auto: the schema first, JSON mode if the server refuses it.",
    )
    max_retries: int = Field(0, ge=0, le=5, description="The client's own retries of failed HTTP requests.")


class LLMSettings(_Section):
    provider: str = Field("heuristic", description="heuristic | ollama:MODEL | openai:MODEL | replay:PROVIDER:MODEL")
    prompt: str = Field("baseline", description="Prompt variant: a file prompts/<name>.txt.")
    anonymise: bool = Field(False, description="Show the LLM no ticker, no dates, prices rebased to 100.")
    repair_retries: int = Field(1, ge=0, le=1, description="Repair calls after an invalid reply (at most one).")
    cache: bool = Field(True, description="Answer an identical request from the call records at zero cost.")
    ollama: OllamaSettings = OllamaSettings()
    openai: OpenAISettings = OpenAISettings()


class ModelPrice(_Section):
    """What a model costs, USD per million tokens."""

    input_per_million: float = Field(ge=0)
    output_per_million: float = Field(ge=0)

    def cost(self, tokens_in: int, tokens_out: int) -> float:
        return (tokens_in * self.input_per_million + tokens_out * self.output_per_million) / 1e6


# Local inference and the heuristic cost nothing; paid models must be priced in the config file,
# because published prices change and a guessed price would make the budget meaningless.
DEFAULT_PRICES: dict[str, ModelPrice] = {
    "heuristic:*": ModelPrice(input_per_million=0, output_per_million=0),
    "ollama:*": ModelPrice(input_per_million=0, output_per_million=0),
}


class BudgetSettings(_Section):
    daily_usd: float = Field(5.0, ge=0, description="LLM spend per UTC day; further calls are refused.")
    per_cycle_usd: float = Field(0.5, ge=0, description="LLM spend per decision cycle.")


class PromotionThresholds(_Section):
    """What `signal-agent evals gate` demands of a variant's out-of-sample results (config `[evals.gate]`).

    Defaults are the issue's: most variants fail them, and that is the normal outcome.
    """

    min_trades: int = Field(500, ge=1, description="Closed trades out of sample, at least.")
    min_years: float = Field(2.0, gt=0, description="Out-of-sample span in 365-day years, at least.")
    min_win_rate: float = Field(0.55, ge=0, le=1, description="Winning trades / trades, at least (fraction).")
    min_profit_factor: float = Field(1.4, ge=0, description="Gross profit / gross loss, at least.")
    max_drawdown: float = Field(0.15, gt=0, le=1, description="Largest peak-to-trough equity fall, strictly below.")
    min_sharpe: float = Field(1.0, description="Annualised Sharpe ratio of the equity curve, strictly above.")
    dsr_confidence: float = Field(
        0.95, gt=0, lt=1, description="Deflated Sharpe ratio (a probability) at least this: significant at 95%."
    )


class EvalsSettings(_Section):
    """Config section `[evals]`: where eval runs live, LLM concurrency, the statistics and the promotion gate."""

    runs_dir: Path = Field(Path("./evals-runs"), description="Folder of eval runs, one sub-folder per run id.")
    llm_concurrency: int = Field(2, ge=1, le=64, description="LLM calls in flight at once during a replay.")
    features_cache: str | None = Field(
        None, description="Shared cache of theory results, reused by every eval run on this machine; unset: "
        "<data_dir>/evals/features.sqlite; \"off\": each run keeps its own in its folder.")
    confidence_level: float = Field(0.95, gt=0.5, lt=1, description="Level of the comparison intervals.")
    bootstrap_samples: int = Field(2000, ge=200, description="Resamples of each block bootstrap.")
    seed: int = Field(0, description="Seed of the bootstraps and the trade-order reshuffles (reproducible).")
    gate: PromotionThresholds = PromotionThresholds()


class ReviewSettings(_Section):
    """Config section `[review]`: how `signal-agent review` (and the daily report) compares paper with evals."""

    tolerance: float = Field(
        0.10, gt=0, lt=1,
        description="Paper win rate, average R and profit factor must lie within this fraction of the "
        "out-of-sample eval's value (0.10 = +/-10% of it) to count as consistent.",
    )
    min_trades: int = Field(50, ge=1, description="Closed paper trades of a variant before it is compared at all.")
    runs_dir: Path | None = Field(
        None, description="Folder of eval runs searched for gate results; unset: [evals] runs_dir."
    )


class Settings(BaseSettings):
    """Every setting of the product. Build it with `load_settings`, the one loader."""

    model_config = SettingsConfigDict(
        # extra="ignore": a .env file may hold other programs' variables (OPENAI_API_KEY, ...);
        # unknown keys in the TOML file are refused by `load_settings`, nested sections forbid extras.
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="ignore", frozen=True, env_file=None
    )

    data_dir: Path = Field(default_factory=default_data_dir, description="Call records and other state.")
    llm: LLMSettings = LLMSettings()
    prices: dict[str, ModelPrice] = Field(default_factory=dict, description="'provider:model' or 'provider:*'.")
    budget: BudgetSettings = BudgetSettings()
    signal: SignalRules = SignalRules()
    risk: RiskConfig = RiskConfig()
    cycle: CycleSettings = CycleSettings()
    paper: PaperSettings = PaperSettings()
    store: StoreSettings = StoreSettings()
    live: LiveBrokerSettings = LiveBrokerSettings()
    telegram: TelegramSettings = TelegramSettings()
    webhook: WebhookSettings = WebhookSettings()
    evals: EvalsSettings = EvalsSettings()
    review: ReviewSettings = ReviewSettings()

    @field_validator("prices")
    @classmethod
    def _with_default_prices(cls, value: dict[str, ModelPrice]) -> dict[str, ModelPrice]:
        for key in value:
            if ":" not in key:
                raise ValueError(f"price key {key!r} must be 'provider:model' or 'provider:*'")
        return {**DEFAULT_PRICES, **value}

    def price_for(self, provider: str, model: str) -> ModelPrice | None:
        """The exact 'provider:model' entry, else 'provider:*'; None when the model is not priced."""
        return self.prices.get(f"{provider}:{model}") or self.prices.get(f"{provider}:*")

    @property
    def records_path(self) -> Path:
        return self.data_dir / "llm_calls.sqlite"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # `load_settings` passes the TOML file's contents as init values: they rank below the env.
        return (env_settings, dotenv_settings, ClientEnvSource(settings_cls, dotenv_settings), init_settings)


class ClientEnvSource(PydanticBaseSettingsSource):
    """Variables named by other programs' conventions, from the environment or the `.env` file.

    `OLLAMA_HOST`, `OPENAI_BASE_URL`, `OPENAI_API_KEY` (the LLM clients' own), the Telegram bot's
    `TELEGRAM_BOT_TOKEN` / `TELEGRAM_CHAT_ID` / `TELEGRAM_API_URL`, and the webhook's
    `WEBHOOK_SECRET`. `MAP` gives each one's place in the settings.
    """

    MAP: ClassVar[dict[str, tuple[str, ...]]] = {
        "OLLAMA_HOST": ("llm", "ollama", "host"),
        "OPENAI_BASE_URL": ("llm", "openai", "base_url"),
        "OPENAI_API_KEY": ("llm", "openai", "api_key"),
        "TELEGRAM_BOT_TOKEN": ("telegram", "bot_token"),
        "TELEGRAM_CHAT_ID": ("telegram", "chat_id"),
        "TELEGRAM_API_URL": ("telegram", "api_url"),
        "WEBHOOK_SECRET": ("webhook", "secret"),
    }

    def __init__(self, settings_cls: type[BaseSettings], dotenv_source: PydanticBaseSettingsSource) -> None:
        super().__init__(settings_cls)
        self.env_file = getattr(dotenv_source, "env_file", None)

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        found: dict[str, str] = {}
        files = [self.env_file] if isinstance(self.env_file, str | Path) else list(self.env_file or [])
        for file in files:
            if Path(file).is_file():
                found.update({k: v for k, v in dotenv_values(file).items() if k in self.MAP and v})
        found.update({k: v for k, v in os.environ.items() if k in self.MAP and v})
        out: dict[str, Any] = {}
        for name, value in found.items():
            *parents, key = self.MAP[name]
            node = out
            for part in parents:
                node = node.setdefault(part, {})
            node[key] = value
        return out


def load_settings(config: str | Path | None = None, env_file: str | Path | None = ".env") -> Settings:
    """Read the settings (see the module docstring for the order). Raises `ConfigError` naming the problem."""
    explicit = config is not None or bool(os.environ.get(CONFIG_ENV))
    path = Path(config if config is not None else os.environ.get(CONFIG_ENV) or default_config_path())
    values: dict[str, Any] = {}
    if path.is_file():
        try:
            values = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {path}: not valid TOML: {exc}") from None
    elif explicit:
        raise ConfigError(f"config file {path} does not exist")
    unknown = sorted(set(values) - set(Settings.model_fields))
    if unknown:
        raise ConfigError(f"config file {path}: unknown keys {unknown}; known: {sorted(Settings.model_fields)}")
    try:
        return Settings(_env_file=env_file, **values)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"configuration ({path} and the environment): {problems}") from None
