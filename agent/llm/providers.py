"""Provider specs to providers: `heuristic`, `ollama:MODEL`, `openai:MODEL`, `replay:PROVIDER:MODEL`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agent.config import LLMSettings
from agent.llm.base import Provider, ProviderError, Reply
from agent.llm.heuristic import HeuristicProvider
from agent.llm.ollama_provider import OllamaProvider
from agent.llm.openai_provider import OpenAIProvider
from agent.snapshot import FeatureSnapshot

SPEC_HELP = "heuristic | ollama:MODEL | openai:MODEL | replay:ollama:MODEL | replay:openai:MODEL | replay:heuristic"


class ReplayProvider:
    """Answers only from recorded calls, keyed exactly as the recorded provider keyed them.

    It takes the recorded provider's name, model and parameters, never its transport: `complete`
    is never reached, because the synthesiser looks every replayed request up in the records.
    """

    is_replay = True

    def __init__(self, recorded: Provider) -> None:
        self.recorded = recorded
        self.name = recorded.name
        self.model = recorded.model
        self.is_llm = recorded.is_llm

    def parameters(self) -> dict[str, Any]:
        return self.recorded.parameters()

    def complete(
        self, messages: Sequence[dict[str, str]], schema: dict[str, Any], snapshot: FeatureSnapshot
    ) -> Reply:
        raise ProviderError("replay_miss", "replay answers only from the call records")


def make_provider(spec: str, settings: LLMSettings) -> Provider:
    """Build the provider a spec names; ValueError naming the spec and the accepted forms."""
    kind, _, rest = spec.strip().partition(":")
    if kind == "replay":
        if not rest:
            raise ValueError(f"provider {spec!r}: replay needs the recorded provider, e.g. replay:ollama:qwen3:8b")
        return ReplayProvider(make_provider(rest, settings))
    if kind == "heuristic" and not rest:
        return HeuristicProvider()
    if kind == "ollama":
        if not rest:
            raise ValueError(f"provider {spec!r}: name the model, e.g. ollama:qwen3:8b")
        return OllamaProvider(rest, settings.ollama)
    if kind == "openai":
        if not rest:
            raise ValueError(f"provider {spec!r}: name the model, e.g. openai:gpt-4o-mini")
        return OpenAIProvider(rest, settings.openai)
    raise ValueError(f"unknown provider {spec!r}; use {SPEC_HELP}")


def max_output_tokens(provider: Provider, settings: LLMSettings) -> int:
    """The output-token cap of a provider's calls (for the worst-case budget check)."""
    name = provider.name
    if name == "ollama":
        return settings.ollama.max_output_tokens
    if name == "openai":
        return settings.openai.max_output_tokens
    return 0
