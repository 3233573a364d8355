"""The variants file of an eval run, and the run's manifest.

A variants file (TOML, read with `tomllib`, validated with pydantic) declares one replay: the
period `[start, end)`, the decision cadence, the universe, the candle and funding folders, the
starting cash and the variants to compare. A variant is a provider spec, a prompt template, a
theory set, anonymisation, risk overrides and paper-broker settings::

    start = 2025-01-01
    end = 2025-04-01
    cadence = "4h"
    universe = ["BTC/USDT", "ETH/USDT"]
    # data = "../shared/data/candles/binance-spot-1h"     default: the bundled sample
    # funding = "../shared/data/funding/binance-usdm"     default: the bundled funding sample
    in_sample_until = 2025-03-01
    initial_cash = 10000

    [[variant]]
    name = "qwen-terse"
    provider = "ollama:qwen3:8b"
    prompt = "terse"
    theories = ["regime", "kalman", "montecarlo"]      # or a table name -> parameters
    anonymise = true                                   # default: true for LLM providers
    risk = { sizing = { risk_per_trade = 0.005 } }     # merged onto the product's RiskConfig
    paper = { slippage = 0.001 }

Baselines are always added unless declared (same provider spec): the heuristic synthesiser and
each seed strategy alone (`strategy:<name>`) as replayed variants, buy-and-hold of each symbol
and the equal-weight BTC/ETH basket as curves. Errors name the file, the variant and the field.

The manifest (`manifest.json` in the run folder) records the exact version of everything a
result depends on: provider, model and parameters, the prompt template's version and sha256,
the theory set with its resolved parameters and their fingerprint, the full risk config and its
sha256, every data file's sha256, the package version and git commit; and the run's progress.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from agent.brokers.paper import PaperSettings
from agent.snapshot import DEFAULT_WINDOW
from risk.config import RiskConfig
from theories.registry import DEFAULT_SET, THEORIES

NAME_PATTERN = r"^[A-Za-z0-9_.-]+$"
_UNITS_MS = {"m": 60_000, "h": 3_600_000, "d": 86_400_000}


class VariantsError(ValueError):
    """A variants file that cannot be used; the message names the file, the variant and the field."""


def parse_cadence(text: str) -> int:
    """"15m", "1h", "4h", "1d" -> milliseconds."""
    m = re.fullmatch(r"\s*(\d+)\s*([mhd])\s*", str(text))
    if not m or int(m.group(1)) <= 0:
        raise ValueError(f"cadence {text!r}: use a positive whole number and m, h or d, e.g. '1h', '4h', '1d'")
    return int(m.group(1)) * _UNITS_MS[m.group(2)]


def to_ms(value: Any) -> int:
    """A TOML date/datetime, an ISO-8601 string (UTC when no zone) or epoch ms -> UTC epoch ms."""
    if isinstance(value, bool):
        raise ValueError("a time, not a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").isdigit():
            return int(text)
        try:
            value = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"{value!r} is not an ISO-8601 date or time (2025-01-01, 2025-01-01T04:00Z)") from None
    if isinstance(value, datetime):
        dt = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return int(dt.timestamp() * 1000)
    if isinstance(value, date):
        return int(datetime(value.year, value.month, value.day, tzinfo=UTC).timestamp() * 1000)
    raise ValueError(f"{value!r} is not a time")


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` onto `base`, tables merged key by key (a value replaces, a table merges)."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def resolve_theories(theories: list[str] | dict[str, dict[str, Any] | None] | None) -> dict[str, dict[str, Any]]:
    """A theory set (names, or name -> parameters, or None for the product's set) -> name -> full parameters.

    Every parameter is validated by the theory's own `Params` model and written out in full, so
    two spellings of the same set (defaults left out or written) have the same fingerprint.
    """
    wanted = dict.fromkeys(DEFAULT_SET) if theories is None else (
        dict(theories) if isinstance(theories, dict) else dict.fromkeys(theories))
    if not wanted:
        raise ValueError("the theory set is empty")
    unknown = [n for n in wanted if n not in THEORIES]
    if unknown:
        raise ValueError(f"unknown theories {unknown}; known: {sorted(THEORIES)}")
    out: dict[str, dict[str, Any]] = {}
    for name, params in wanted.items():
        try:
            out[name] = THEORIES[name].params.model_validate(params or {}).model_dump(mode="json")
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ValueError(f"theory {name!r} parameter {where!r}: {first['msg']}") from None
    return out


def theory_fingerprint(theories: dict[str, dict[str, Any]], window: int, leader: str) -> str:
    """The identity of a snapshot's inputs other than the candles: the set (in order), parameters, window, leader."""
    return sha256_text(canonical({"theories": list(theories.items()), "window": window, "leader": leader}))[:24]


def _known_theories(value: Any) -> Any:
    resolve_theories(value)
    return value


def _valid_risk(value: dict[str, Any]) -> dict[str, Any]:
    RiskConfig.model_validate(deep_merge(RiskConfig().model_dump(mode="json"), value))
    return value


def _valid_paper(value: dict[str, Any]) -> dict[str, Any]:
    PaperSettings.model_validate(value)
    return value


# The checks a variant and the run-wide defaults share: known theories, overrides that make a valid config.
TheorySetSpec = Annotated[list[str] | dict[str, dict[str, Any] | None] | None, AfterValidator(_known_theories)]
RiskOverrides = Annotated[dict[str, Any], AfterValidator(_valid_risk)]
PaperOverrides = Annotated[dict[str, Any], AfterValidator(_valid_paper)]


class VariantSpec(BaseModel):
    """One `[[variant]]` table."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME_PATTERN, description="Names the variant's folder and its store's run.")
    provider: str = Field(min_length=1, description="heuristic | strategy:NAME | ollama:MODEL | openai:MODEL | "
                                                    "replay:PROVIDER:MODEL")
    prompt: str = Field("baseline", pattern=NAME_PATTERN, description="Prompt template: prompts/<prompt>.txt.")
    theories: TheorySetSpec = Field(
        None, description="Theory set: names, or name -> parameters; None: the product's default set.")
    anonymise: bool | Literal["named"] | None = Field(
        None, description="true: no ticker, dates or absolute prices in the prompt; false or 'named': shown; "
                          "None: true for LLM providers, false otherwise.")
    risk: RiskOverrides = Field(default_factory=dict, description="Overrides merged onto the run's RiskConfig.")
    paper: PaperOverrides = Field(default_factory=dict, description="Overrides of the run's paper-broker settings.")
    baseline: bool = Field(False, description="Added by the run as a baseline (not declared in the file).")

    @property
    def is_llm(self) -> bool:
        kind = self.provider.split(":", 1)[0]
        if kind == "replay":
            kind = self.provider.split(":", 2)[1] if self.provider.count(":") >= 1 else ""
        return kind in ("ollama", "openai")

    @property
    def anonymised(self) -> bool:
        if self.anonymise is None:
            return self.is_llm
        return self.anonymise is True

    def resolved_theories(self) -> dict[str, dict[str, Any]]:
        return resolve_theories(self.theories)


class BaselineCurveSpec(BaseModel):
    """A buy-and-hold benchmark (written as a curve, not replayed through the cycle)."""

    model_config = ConfigDict(frozen=True)

    name: str
    kind: Literal["buy_and_hold", "equal_weight"]
    symbols: tuple[str, ...]


class EvalConfig(BaseModel):
    """A whole variants file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start: int = Field(description="First decision time, UTC epoch ms (TOML date/datetime or ISO string).")
    end: int = Field(description="End of the period (exclusive), UTC epoch ms.")
    cadence: str = Field("4h", description="Decision cadence: '1h', '4h', '1d', ...")
    universe: tuple[str, ...] = Field((), description="Symbols; empty: every symbol in the data folder.")
    data: str | None = Field(None, description="Folder of candle files; None: the bundled sample.")
    funding: str | None = Field(None, description="Folder of funding files; None: the bundled funding sample "
                                                  "with the bundled candles, none otherwise.")
    in_sample_until: int | None = Field(None, description="End of the in-sample part, UTC epoch ms (optional).")
    initial_cash: float = Field(10_000.0, gt=0, description="Starting balance of every variant, quote currency.")
    window: int = Field(DEFAULT_WINDOW, ge=50, description="Candles in each snapshot's analysis window.")
    leader: str = Field("BTC/USDT", description="The market leader for the context theory.")
    llm_concurrency: int | None = Field(None, ge=1, le=64, description="LLM calls in flight at once across all "
                                        "variants; None: the settings' [evals] llm_concurrency.")
    risk: RiskOverrides = Field(default_factory=dict, description="Run-wide overrides of the RiskConfig.")
    paper: PaperOverrides = Field(default_factory=dict, description="Run-wide paper-broker settings.")
    baseline_theories: TheorySetSpec = Field(
        None, description="Theory set of the added heuristic and strategy baselines; None: the product's set "
                          "(which holds every seed strategy and montecarlo, whose bracket the strategies use).")
    settings: str | None = Field(None, description="Settings file for LLM hosts, prices and budget "
                                                   "(default: $SIGNAL_AGENT_CONFIG or ~/.config).")
    variants: tuple[VariantSpec, ...] = Field(default=(), alias="variant")

    @field_validator("start", "end", "in_sample_until", mode="before")
    @classmethod
    def _time(cls, value: Any) -> Any:
        return None if value is None else to_ms(value)

    @field_validator("cadence")
    @classmethod
    def _cadence(cls, value: str) -> str:
        parse_cadence(value)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> EvalConfig:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        if self.in_sample_until is not None and not self.start < self.in_sample_until < self.end:
            raise ValueError("in_sample_until must fall inside (start, end)")
        names = [v.name for v in self.variants]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"variant names must be unique; repeated: {dupes}")
        return self

    @property
    def cadence_ms(self) -> int:
        return parse_cadence(self.cadence)

    def decision_times(self) -> list[int]:
        """Decision times on the cadence grid in [start, end), aligned to the grid of epoch multiples."""
        step = self.cadence_ms
        first = -(-self.start // step) * step
        return list(range(first, self.end, step))

    def risk_for(self, variant: VariantSpec) -> RiskConfig:
        """The product's RiskConfig, the run's overrides, the variant's overrides; sized with the paper taker fee."""
        merged = deep_merge(deep_merge(RiskConfig().model_dump(mode="json"), self.risk), variant.risk)
        return RiskConfig.model_validate(merged).sized_with_fee(self.paper_for(variant).taker_fee)

    def paper_for(self, variant: VariantSpec) -> PaperSettings:
        merged = {"initial_cash": self.initial_cash, **self.paper, **variant.paper}
        return PaperSettings.model_validate(merged)


def with_baselines(config: EvalConfig,
                   symbols: list[str]) -> tuple[tuple[VariantSpec, ...], tuple[BaselineCurveSpec, ...]]:
    """The declared variants plus the replayed baselines not declared, and the buy-and-hold curves.

    The baselines and their names are `evals.baselines.baseline_specs`: the heuristic, each seed
    strategy alone, buy-and-hold of each symbol, the equal-weight BTC/ETH basket. A replayed
    baseline counts as declared when a variant has the same provider spec. Replayed baselines use
    `baseline_theories` (default: the product's set, which holds every seed strategy), so they
    share one feature computation with every variant on that set.
    """
    from evals.baselines import baseline_specs

    declared = {v.provider.strip() for v in config.variants}
    taken = {v.name for v in config.variants}
    added: list[VariantSpec] = []
    curves: list[BaselineCurveSpec] = []
    for b in baseline_specs(symbols):
        if not b.replayed:
            curves.append(BaselineCurveSpec(name=b.name, kind=b.kind, symbols=b.symbols))
            continue
        if b.provider in declared:
            continue
        name = b.name
        while name in taken:
            name = f"{name}.baseline"
        taken.add(name)
        added.append(VariantSpec(name=name, provider=b.provider, theories=config.baseline_theories, baseline=True))
    return (*config.variants, *added), tuple(curves)


def _where(loc: tuple[Any, ...], raw: dict[str, Any]) -> str:
    """'variant "x", field "risk"' from a pydantic error location."""
    parts = list(loc)
    if parts and parts[0] == "variant" and len(parts) > 1 and isinstance(parts[1], int):
        entries = raw.get("variant") or []
        index = parts[1]
        name = entries[index].get("name") if index < len(entries) and isinstance(entries[index], dict) else None
        label = f"variant {name!r}" if name else f"variant #{index + 1}"
        rest = ".".join(str(p) for p in parts[2:])
        return f"{label}, field {rest!r}" if rest else label
    return f"field {'.'.join(str(p) for p in parts)!r}" if parts else "the file"


def parse_variants(text: str, source: str = "<variants>") -> EvalConfig:
    """Parse and validate a variants file's text; VariantsError names the file, variant and field."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise VariantsError(f"{source}: not valid TOML: {exc}") from None
    if "variant" in raw and not isinstance(raw["variant"], list):
        raise VariantsError(f"{source}: variants are declared as [[variant]] tables")
    try:
        return EvalConfig.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            msg = err["msg"].removeprefix("Value error, ")
            problems.append(f"{_where(tuple(err['loc']), raw)}: {msg}")
        raise VariantsError(f"{source}: " + "; ".join(problems)) from None


def load_variants(path: str | Path) -> EvalConfig:
    """Read a variants file (relative data folders are resolved against the file's folder)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise VariantsError(f"{path}: cannot read the variants file: {exc.strerror or exc}") from None
    config = parse_variants(text, str(path))
    update = {}
    for key in ("data", "funding", "settings"):
        value = getattr(config, key)
        if value is not None and not Path(value).expanduser().is_absolute():
            update[key] = str((path.parent / Path(value).expanduser()).resolve())
    return config.model_copy(update=update) if update else config


# --- the manifest --------------------------------------------------------------------------------------

# interrupted: the run was ended (SIGTERM or Ctrl-C) while this variant was replaying; a resumed run goes on
VariantStatus = Literal["pending", "running", "completed", "failed", "interrupted"]


class DataFile(BaseModel):
    path: str
    sha256: str
    bytes: int


class VariantManifest(BaseModel):
    """One replayed variant: exactly what it ran with, and how far it got."""

    name: str
    signature: str = Field(description="provider:model:prompt_variant, as DecisionRow.variant.")
    provider_spec: str
    provider: str
    model: str
    provider_parameters: dict[str, Any]
    prompt_variant: str
    prompt_version: str
    prompt_sha256: str
    theories: dict[str, dict[str, Any]] = Field(description="Theory set in order, with full parameters.")
    theory_fingerprint: str
    window: int
    anonymise: bool
    risk: dict[str, Any]
    risk_sha256: str
    paper: dict[str, Any]
    baseline: bool
    llm: bool
    store: str = Field(description="The store's path relative to the run folder.")
    status: VariantStatus = "pending"
    decisions_done: int = 0
    decisions_total: int = 0
    cycles_done: int = 0
    cycles_total: int = 0
    error: str | None = None
    seconds: float = 0.0


class BaselineManifest(BaseModel):
    name: str
    kind: str
    symbols: tuple[str, ...]
    path: str = Field(description="baselines/<name>.json relative to the run folder.")
    status: Literal["pending", "completed", "failed", "skipped"] = "pending"
    error: str | None = None


class FeatureStats(BaseModel):
    """The shared feature cache: snapshots computed once and reused, by the variants and by later runs."""

    computed: int = Field(0, description="Snapshots computed in this run (all attempts).")
    from_cache: int = Field(0, description="Snapshots the run needed that were in the features cache already "
                                           "(an earlier run's work): the run's snapshots minus those it computed.")
    cached: int = Field(0, description="Snapshots of the run's theory sets, universe and decision times in the "
                                       "features cache at the end.")
    reused: int = Field(0, description="Cache reads by the variants' cycles.")
    misses: int = Field(0, description="Cycle snapshots not found in the cache (computed on the spot).")
    seconds: float = 0.0
    cache_path: str = Field("", description="The features cache file the run used.")
    shared: bool = Field(False, description="Whether it is the machine's shared cache (else the run's own file).")
    note: str | None = Field(None, description="Why the run did not use the shared cache, when it did not.")
    code_fingerprint: str = Field("", description="sha256 of the snapshot code and library versions (cache key part).")
    data_fingerprint: str = Field("", description="sha256 of the universe and its data files (cache key part).")
    keys: dict[str, str] = Field(default_factory=dict, description="Theory fingerprint -> the cache entry's key.")

    def summary(self) -> str:
        """One sentence for the report and the command line."""
        where = f"the shared cache {self.cache_path}" if self.shared else "the run's own cache"
        text = (f"Theory results: {self.from_cache} snapshots read from {where}, {self.computed} computed by this "
                f"run, {self.misses} computed during the replay (misses).")
        return text + (f" ({self.note}.)" if self.note else "")


class LookaheadAudit(BaseModel):
    """The canary's verdict (evals.lookahead)."""

    guard_violations: int = Field(0, description="Requests answered with candles closing after the decision time "
                                                 "(each refused by the guard).")
    guard_examples: list[str] = Field(default_factory=list)
    samples: int = Field(0, description="(symbol, decision time) pairs re-analysed with later data appended.")
    k_bars: int = 0
    flagged: dict[str, int] = Field(default_factory=dict,
                                    description="Theory -> samples whose output changed with later data present.")
    cache_mismatches: int = Field(0, description="Cached snapshots that differ from a fresh computation.")
    examples: list[str] = Field(default_factory=list)
    passed: bool = True


class EvalManifest(BaseModel):
    run_id: str
    created_ms: int
    updated_ms: int
    status: Literal["running", "completed", "failed", "interrupted"] = "running"  # interrupted: SIGTERM or Ctrl-C
    config_sha256: str
    period_start_ms: int
    period_end_ms: int
    cadence: str
    cadence_ms: int
    decision_times: int
    universe: tuple[str, ...]
    in_sample_until_ms: int | None
    initial_cash: float
    data_dir: str
    funding_dir: str | None
    data_files: list[DataFile]
    package_version: str
    git_commit: str | None
    python: str
    variants: list[VariantManifest]
    baselines: list[BaselineManifest] = Field(default_factory=list)
    skipped_baselines: dict[str, str] = Field(default_factory=dict,
                                              description="Baselines that could not be built, and why.")
    features: FeatureStats = FeatureStats()
    lookahead: LookaheadAudit | None = None
    phases_s: dict[str, float] = Field(default_factory=dict)
    cost_estimate_usd: float = 0.0

    def variant(self, name: str) -> VariantManifest:
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(f"no variant {name!r} in run {self.run_id}; have {[v.name for v in self.variants]}")


__all__ = [
    "BaselineCurveSpec", "BaselineManifest", "DataFile", "EvalConfig", "EvalManifest",
    "FeatureStats", "LookaheadAudit", "VariantManifest", "VariantSpec", "VariantsError", "deep_merge",
    "load_variants", "parse_cadence", "parse_variants", "resolve_theories", "theory_fingerprint", "to_ms",
    "with_baselines",
]
