"""Shared fixtures for the LLM tests: snapshots of the bundled sample (built once), replies, synthesisers."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest

from agent.config import ModelPrice, OllamaSettings, OpenAISettings
from agent.llm.budget import CostBudget
from agent.llm.prompt import PromptTemplate
from agent.llm.records import CallRecords
from agent.llm.synthesis import Synthesiser
from agent.market import bundled_sample
from agent.signal import SignalRules
from agent.snapshot import FeatureSnapshot, build_snapshot
from theories.base import FitCache

PRICE = ModelPrice(input_per_million=0.15, output_per_million=0.60)


@functools.cache
def _sample_snapshots() -> dict[str, FeatureSnapshot]:
    # built once per process: each test module that imports the fixture gets its own fixture
    # definition, so the session scope alone would rebuild this (seconds of model fits) per module
    universe = bundled_sample()
    cache = FitCache()
    return {s: build_snapshot(s, universe, cache=cache) for s in universe}


@pytest.fixture(scope="session")
def sample_snapshots() -> dict[str, FeatureSnapshot]:
    """Every bundled symbol's snapshot with every theory on."""
    return _sample_snapshots()


@pytest.fixture(scope="session")
def btc(sample_snapshots: dict[str, FeatureSnapshot]) -> FeatureSnapshot:
    return sample_snapshots["BTC/USDT"]


def long_signal(snapshot: FeatureSnapshot, **changes: Any) -> dict[str, Any]:
    """A valid LONG for `snapshot`: entry at the last close, 1% stop, 2% target (reward:risk 2)."""
    p = snapshot.last_price
    data = {
        "symbol": snapshot.symbol, "direction": "LONG", "confidence": 0.55, "entry": p, "stop": p * 0.99,
        "target": p * 1.02, "horizon_hours": 24, "reasoning": "Kalman trend up and Monte Carlo favours longs.",
        "theories": ["kalman", "montecarlo"],
    }
    data.update(changes)
    return data


def long_json(snapshot: FeatureSnapshot, **changes: Any) -> str:
    return json.dumps(long_signal(snapshot, **changes))


def synthesiser(provider: Any, tmp_path: Path, **kw: Any) -> Synthesiser:
    """A synthesiser with real call records in `tmp_path` and a generous budget."""
    defaults: dict[str, Any] = {
        "provider": provider,
        "template": PromptTemplate.load("baseline"),
        "rules": SignalRules(),
        "price": PRICE,
        "budget": CostBudget(daily_usd=5.0, per_cycle_usd=0.5),
        "records": CallRecords(tmp_path / "calls.sqlite"),
        "max_output_tokens": 600,
    }
    defaults.update(kw)
    return Synthesiser(**defaults)


def ollama_settings(url: str, **kw: Any) -> OllamaSettings:
    return OllamaSettings(host=url, timeout_s=kw.pop("timeout_s", 5.0), **kw)


def openai_settings(url: str, **kw: Any) -> OpenAISettings:
    return OpenAISettings(base_url=f"{url}/v1", api_key="sk-test-not-real", timeout_s=kw.pop("timeout_s", 5.0), **kw)
