"""One decision: a snapshot in, a validated Signal out, every call recorded and paid for within budget.

The flow (issue 5): render the prompt; one call; if the reply is not an acceptable signal, at most
one repair call that shows the model its own output and every rule it broke; still invalid, a
timeout, a server error, a refusal, a truncation, empty content or an unparseable reply: the
answer is HOLD with the reason, never a guess and never an exception. Before a live call the
records are asked first (an identical request is answered from them at zero cost) and the budget
is checked (the worst case must fit). The replay provider answers only from the records; in
strict mode a miss raises `ReplayMissError`, so an eval can never silently differ from its record.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict

from agent.config import ModelPrice
from agent.llm.base import (
    MAX_REPLY_CHARS,
    Provider,
    ProviderError,
    Reply,
    canonical_json,
    keyed_request,
    schema_hash,
)
from agent.llm.budget import CostBudget, worst_case_cost
from agent.llm.prompt import (
    OpenPosition,
    PromptTemplate,
    RenderedPrompt,
    estimate_messages_tokens,
    estimate_tokens,
    messages_hash,
    render,
)
from agent.llm.records import CallRecords
from agent.signal import Signal, SignalRejected, SignalRules, SnapshotFacts, parse_signal, signal_json_schema
from agent.snapshot import FeatureSnapshot

REPAIR_ECHO_CHARS = 4000  # the model's own output shown back to it, cut so a runaway reply cannot blow the budget
REPAIRABLE = frozenset({"invalid", "empty", "truncated", "too_long"})


class ReplayMissError(LookupError):
    """Strict replay found no recorded call for a request: the eval would not be reproducible."""


class CallSummary(BaseModel):
    """One call as the command prints it and a decision keeps it."""

    model_config = ConfigDict(frozen=True)

    record_id: int | None
    attempt: int
    provider: str
    model: str
    prompt_variant: str
    template_version: str
    prompt_hash: str
    request_key: str
    outcome: str
    error: str | None
    tokens_in: int | None
    tokens_out: int | None
    tokens_estimated: bool
    latency_ms: float
    cost_usd: float
    cache_hit: bool


class Decision(BaseModel):
    """The validated signal (real symbol and prices), the prompt behind it and every call made."""

    model_config = ConfigDict(frozen=True)

    signal: Signal
    prompt: RenderedPrompt
    calls: list[CallSummary]
    hold_reason: str | None = None
    llm_used: bool


@functools.cache
def _schema_json() -> str:
    """The provider schema as JSON, generated once (pydantic's schema generation costs milliseconds)."""
    return json.dumps(signal_json_schema())


def provider_schema() -> dict:
    """A fresh copy of `signal_json_schema()` for one decision (a provider may not change the shared one)."""
    return json.loads(_schema_json())


@functools.cache
def _pristine_schema() -> tuple[dict, str]:
    """The schema as generated, kept apart from every copy handed out, and its hash (computed once)."""
    schema = provider_schema()
    return schema, schema_hash(schema)


def _schema_hash(schema: dict) -> str:
    """The schema's hash for the request key: the one computed once, unless a provider changed its copy."""
    pristine, digest = _pristine_schema()
    return digest if schema == pristine else schema_hash(schema)


class Same:
    """A cache key that matches one object only: a snapshot is a value, but hashing one by value would
    cost a pass over all its theory results (and its dicts are unhashable)."""

    __slots__ = ("obj",)

    def __init__(self, obj: object) -> None:
        self.obj = obj

    def __hash__(self) -> int:
        return id(self.obj)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Same) and other.obj is self.obj


@functools.lru_cache(maxsize=64)
def _shown(
    snapshot: Same,
    template: PromptTemplate,
    rules: SignalRules,
    positions: tuple[OpenPosition, ...],
    outcomes: tuple[float, ...],
    negative_zeros: tuple[int, ...],
    anonymise: bool,
) -> tuple[RenderedPrompt, FeatureSnapshot, SnapshotFacts]:
    """The rendered prompt, the snapshot it shows and that snapshot's facts, for one set of prompt inputs.

    Everything here is a pure function of the inputs, and an evals replay asks it once per variant
    for the same shared snapshot (variants that differ only in their provider render the same
    prompt): remembered for the few snapshots of the current decision time, rendered once. The
    snapshot is matched by identity and held by the key, so its id cannot be reused while the entry
    lives. `negative_zeros` (the places of the outcomes that are -0.0) tells apart outcomes that are
    equal but render differently: 0.0 and -0.0 are the only equal floats whose text differs.
    """
    snap = snapshot.obj
    prompt = render(template, snap, rules, positions, outcomes, anonymise=anonymise)
    shown = snap.anonymised_copy() if anonymise else snap
    return prompt, shown, SnapshotFacts.of(shown)


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class Synthesiser:
    """Everything one decision needs; the I/O pieces (provider, records, clocks) are passed in."""

    provider: Provider
    template: PromptTemplate
    rules: SignalRules
    price: ModelPrice | None
    budget: CostBudget
    records: CallRecords | None = None
    anonymise: bool = False
    repair_retries: int = 1
    cache: bool = True
    strict_replay: bool = True
    now_ms: Callable[[], int] = _wall_ms
    timer: Callable[[], float] = time.perf_counter
    max_output_tokens: int = 600
    _summaries: list[CallSummary] = field(default_factory=list, init=False)
    _schema: dict | None = field(default=None, init=False)  # the copy handed to the provider (see `_provider_schema`)
    # the provider's last parameters and schema hash, and their canonical JSON (see `_parameters_json`)
    _parameters: tuple[dict, str, str] | None = field(default=None, init=False)

    def decide(
        self,
        snapshot: FeatureSnapshot,
        positions: Sequence[OpenPosition] = (),
        outcomes: Sequence[float] = (),
    ) -> Decision:
        outcomes = tuple(outcomes)
        # a scan in C, then a pass only when a zero is there (a repr of every outcome cost ~20 us a decision)
        negative_zeros = tuple(i for i, x in enumerate(outcomes) if x == 0 and math.copysign(1.0, x) < 0
                               ) if 0 in outcomes else ()
        prompt, shown, facts = _shown(Same(snapshot), self.template, self.rules, tuple(positions), outcomes,
                                      negative_zeros, self.anonymise)
        schema, digest = self._provider_schema()
        messages = prompt.messages
        self._summaries = []
        reason = "no call was made"
        for attempt in range(1 + self.repair_retries):
            if attempt:  # the provider may have changed its copy of the schema during the last call
                digest = _schema_hash(schema)
            reply, call = self._call(attempt, messages, schema, digest, shown, prompt, snapshot.symbol)
            if reply is None:
                reason = call["error"] or call["outcome"]
                break
            signal, outcome, problem = self._judge(reply, facts)
            call["outcome"], call["error"] = outcome, problem
            if signal is not None and self.records is not None:  # the records keep the signal too
                call["signal_json"] = signal.model_dump_json()
            self._store(call)
            if signal is not None:
                if shown.anonymised:  # back to the real symbol and prices
                    signal = signal.rebased(snapshot.last_price / shown.last_price, snapshot.symbol)
                return Decision(signal=signal, prompt=prompt, calls=self._summaries, llm_used=self.provider.is_llm)
            reason = f"{outcome}: {problem}"
            if outcome not in REPAIRABLE or attempt >= self.repair_retries:
                break
            echo = {"role": "assistant", "content": (reply.text or "")[:REPAIR_ECHO_CHARS]}
            messages = [*messages, echo, _repair_message(problem)]
        why = f"HOLD (fail-closed, {len(self._summaries)} call(s)): {reason}"
        hold = Signal.hold(snapshot.symbol, why, self.rules.min_horizon_hours, self.rules.max_reasoning_chars)
        return Decision(
            signal=hold, prompt=prompt, calls=self._summaries, hold_reason=reason, llm_used=self.provider.is_llm
        )

    def _provider_schema(self) -> tuple[dict, str]:
        """The schema for this decision's calls (equal to the generated one, never the shared original), and its hash.

        The copy made for an earlier decision is handed out again while it is still unchanged (one
        comparison instead of a fresh copy per decision); a provider that changed it gets a new one.
        """
        pristine, digest = _pristine_schema()
        if self._schema is None or self._schema != pristine:
            self._schema = provider_schema()
        return self._schema, digest

    def _parameters_json(self, params: dict[str, Any], digest: str) -> str:
        """The canonical JSON of the request key's parameters (the schema's hash included).

        Kept while the provider's parameters and the schema stay the same (a comparison, instead of
        encoding them again on every decision); kept as a copy, so a provider that changes the dict
        it returned is seen as changed.
        """
        memo = self._parameters
        if memo is None or memo[1] != digest or memo[0] != params:
            memo = self._parameters = (
                copy.deepcopy(params), digest, canonical_json({**params, "schema_sha256": digest}))
        return memo[2]

    # --- one call --------------------------------------------------------------------------------

    def _call(
        self,
        attempt: int,
        messages: list[dict[str, str]],
        schema: dict,
        digest: str,
        shown: FeatureSnapshot,
        prompt: RenderedPrompt,
        symbol: str,
    ) -> tuple[Reply | None, dict[str, Any]]:
        """One call; returns the reply (None when there is none) and the call's record as `LLMCall` column values.

        `digest` is `schema`'s hash.
        The record is plain values, not an `LLMCall` row: a replay makes one call per decision, and
        the row's instrumented constructor cost more than a deterministic provider's whole answer.
        """
        p = self.provider
        params = p.parameters()
        # the first attempt sends the rendered prompt itself, whose hash the decision's record asks again
        prompt_hash = prompt.sha256 if attempt == 0 else messages_hash(messages)
        key = keyed_request(p.name, p.model, prompt_hash, self._parameters_json(params, digest))
        estimated_in = estimate_messages_tokens(messages) if p.is_llm else 0
        call: dict[str, Any] = {
            "created_ms": self.now_ms(), "request_key": key, "provider": p.name, "model": p.model,
            "prompt_variant": prompt.variant, "template_version": prompt.version,
            "template_sha256": prompt.template_sha256, "prompt_hash": prompt_hash, "symbol": symbol,
            "attempt": attempt, "request_json": None, "reply_json": None, "tokens_in": None, "tokens_out": None,
            "tokens_estimated": False, "latency_ms": 0.0, "cost_usd": 0.0, "outcome": "pending", "error": None,
            "answered_by": None, "signal_json": None,
        }
        if self.records is not None:  # the request as sent is kept only where calls are recorded
            call["request_json"] = canonical_json({"messages": messages, "parameters": params, "schema": schema})
        if (self.cache or p.is_replay) and self.records is not None:
            hit = self.records.find_reply(key)
            if hit is not None:
                call["answered_by"], call["reply_json"] = hit.id, hit.reply_json
                call["tokens_in"], call["tokens_out"] = hit.tokens_in, hit.tokens_out
                call["tokens_estimated"] = hit.tokens_estimated
                return hit.reply(), call
        if p.is_replay:
            if self.strict_replay:
                raise ReplayMissError(
                    f"no recorded call for {p.name}:{p.model}, prompt {prompt_hash[:12]}, key {key[:12]}"
                )
            return None, self._fail(call, "replay_miss", "no recorded call for this request")
        if p.is_llm:
            if self.price is None:
                return None, self._fail(
                    call, "unpriced",
                    f"no price for {p.name}:{p.model} in the config's [prices] table: "
                    "an unknown cost cannot be budgeted",
                )
            worst = worst_case_cost(self.price, estimated_in, self.max_output_tokens)
            if worst > 0 and (refusal := self.budget.refusal(worst)):
                return None, self._fail(call, "budget", refusal)
        start = self.timer()
        try:
            reply = p.complete(messages, schema, shown)
        except ProviderError as exc:
            call["latency_ms"] = (self.timer() - start) * 1000
            return None, self._fail(call, exc.kind, exc.message)
        except Exception as exc:  # a provider bug must not take the cycle down: fail closed, recorded
            call["latency_ms"] = (self.timer() - start) * 1000
            return None, self._fail(call, "error", f"{type(exc).__name__}: {str(exc)[:300]}")
        call["latency_ms"] = (self.timer() - start) * 1000
        if self.records is not None:  # the reply as received is kept only where calls are recorded
            call["reply_json"] = reply.model_dump_json()
        tokens_in, tokens_out = reply.tokens_in, reply.tokens_out
        if p.is_llm and (tokens_in is None or tokens_out is None):
            call["tokens_estimated"] = True  # the server reported no usage: bill the estimate
            tokens_in = tokens_in if tokens_in is not None else estimated_in
            tokens_out = tokens_out if tokens_out is not None else estimate_tokens(reply.text or "")
        call["tokens_in"], call["tokens_out"] = tokens_in, tokens_out
        if self.price is not None:
            call["cost_usd"] = self.price.cost(tokens_in or 0, tokens_out or 0)
        self.budget.charge(call["cost_usd"])
        return reply, call

    def _fail(self, call: dict[str, Any], outcome: str, error: str) -> dict[str, Any]:
        call["outcome"], call["error"] = outcome, error
        self._store(call)
        return call

    def _store(self, call: dict[str, Any]) -> None:
        record_id = self.records.record(call) if self.records is not None else None
        self._summaries.append(
            CallSummary(
                record_id=record_id, attempt=call["attempt"], provider=call["provider"], model=call["model"],
                prompt_variant=call["prompt_variant"], template_version=call["template_version"],
                prompt_hash=call["prompt_hash"], request_key=call["request_key"], outcome=call["outcome"],
                error=call["error"], tokens_in=call["tokens_in"], tokens_out=call["tokens_out"],
                tokens_estimated=call["tokens_estimated"], latency_ms=round(call["latency_ms"], 3),
                cost_usd=call["cost_usd"], cache_hit=call["answered_by"] is not None,
            )
        )

    # --- judging a reply -------------------------------------------------------------------------

    def _judge(self, reply: Reply, facts: SnapshotFacts) -> tuple[Signal | None, str, str | None]:
        """(signal, outcome, problem): a signal only when the reply is acceptable."""
        if reply.refusal:
            return None, "refused", f"the model refused: {reply.refusal[:300]}"
        if reply.finish_reason == "content_filter":
            return None, "content_filter", "the server's content filter stopped the reply"
        if reply.finish_reason == "length":
            return None, "truncated", "the reply hit the output-token limit and was cut off; answer more briefly"
        if not (reply.text or "").strip():
            note = " (the model wrote only in `thinking`; the answer must be in the content)" if reply.thinking else ""
            return None, "empty", f"empty reply{note}"
        if len(reply.text) > MAX_REPLY_CHARS:
            return None, "too_long", f"reply of {len(reply.text)} characters; a signal takes under {MAX_REPLY_CHARS}"
        try:
            return parse_signal(reply.text, facts, self.rules), "ok", None
        except SignalRejected as exc:
            return None, "invalid", str(exc)


def _repair_message(problem: str | None) -> dict[str, str]:
    return {
        "role": "user",
        "content": (
            f"Your reply was not an acceptable signal: {problem}. Reply again with one corrected JSON object "
            "only, with exactly the fields specified and the constraints respected."
        ),
    }


def decision_json(decision: Decision) -> str:
    """The decision's signal as canonical JSON (what 'byte-identical on a second run' compares)."""
    return json.dumps(decision.signal.model_dump(mode="json"), sort_keys=True)
