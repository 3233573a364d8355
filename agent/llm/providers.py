"""Provider specs to providers: `heuristic`, `strategy:NAME`, `ollama:MODEL`, `openai:MODEL`,
`replay:PROVIDER:MODEL`."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from agent.config import LLMSettings
from agent.llm.base import Provider, ProviderError, Reply
from agent.llm.heuristic import HeuristicProvider
from agent.llm.strategy_provider import StrategyProvider, strategy_names
from agent.signal import SignalRules
from agent.snapshot import FeatureSnapshot

SPEC_HELP = (
    "heuristic | strategy:NAME[:P] | ollama:MODEL | openai:MODEL | replay:ollama:MODEL | replay:openai:MODEL | "
    "replay:heuristic | replay:strategy:NAME"
)


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


def make_provider(
    spec: str,
    settings: LLMSettings,
    *,
    rules: SignalRules | None = None,
    theory_params: Mapping[str, Mapping[str, Any] | None] | None = None,
) -> Provider:
    """Build the provider a spec names; ValueError naming the spec and the accepted forms.

    `strategy:NAME` reads one rule strategy's result from the snapshot (`strategy:NAME:P`: with the
    fixed confidence P instead of the bracket's odds): pass the signal rules the
    synthesiser applies (`rules`) and the variant's theory set with its parameters
    (`theory_params`, name -> parameters) so that the provider's answers and call keys follow them;
    without them it assumes the defaults.
    """
    kind, _, rest = spec.strip().partition(":")
    if kind == "replay":
        if not rest:
            raise ValueError(f"provider {spec!r}: replay needs the recorded provider, e.g. replay:ollama:qwen3:8b")
        return ReplayProvider(make_provider(rest, settings, rules=rules, theory_params=theory_params))
    if kind == "heuristic" and not rest:
        return HeuristicProvider()
    if kind == "strategy":
        name, _, fixed = rest.partition(":")
        if name not in strategy_names():
            what = f"unknown strategy {name!r}" if name else "name the strategy"
            valid = ", ".join(f"strategy:{n}" for n in strategy_names())
            raise ValueError(f"provider {spec!r}: {what}; valid: {valid} (optionally :P, a fixed confidence)")
        confidence = None
        if fixed:
            try:
                confidence = float(fixed)
            except ValueError:
                confidence = math.nan
            if not 0.0 <= confidence <= 1.0:
                raise ValueError(f"provider {spec!r}: the fixed confidence after the strategy must be a number in "
                                 f"[0, 1], got {fixed!r}")
        return StrategyProvider(name, (theory_params or {}).get(name), rules, confidence=confidence)
    # The model clients are imported when a spec names them: importing the openai client takes
    # about 1.2 s and ollama's 0.4 s (measured, -X importtime), which every command and each evals
    # process would otherwise pay even when they run only the heuristic or the rule strategies.
    if kind == "ollama":
        if not rest:
            raise ValueError(f"provider {spec!r}: name the model, e.g. ollama:qwen3:8b")
        from agent.llm.ollama_provider import OllamaProvider

        return OllamaProvider(rest, settings.ollama)
    if kind == "openai":
        if not rest:
            raise ValueError(f"provider {spec!r}: name the model, e.g. openai:gpt-4o-mini")
        from agent.llm.openai_provider import OpenAIProvider

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
