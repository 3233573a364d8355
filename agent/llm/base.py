"""The provider interface: one chat request with a JSON schema in, one `Reply` out, or a `ProviderError`.

A provider does I/O only. It never validates the answer (`agent.signal.parse_signal` does) and
never raises anything but `ProviderError`: every failure of the transport or the server is
classified (`kind`) so the caller can turn it into a recorded HOLD.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict

from agent.snapshot import FeatureSnapshot

MAX_REPLY_CHARS = 20_000  # a signal is ~500 characters; anything far larger is a runaway generation


class Reply(BaseModel):
    """What a server answered, in the provider-neutral form the call records keep."""

    model_config = ConfigDict(frozen=True)

    text: str | None = None  # the answer the model gave (message content)
    thinking: str | None = None  # a thinking model's reasoning, kept but never parsed as the answer
    finish_reason: str | None = None  # stop | length | content_filter | ...
    refusal: str | None = None
    tokens_in: int | None = None  # as the server reported them
    tokens_out: int | None = None
    raw_response: str = ""  # the response body as received (JSON text)


class ProviderError(Exception):
    """A call that produced no usable reply. `kind`: timeout, server_error, http_error, connection_error,
    bad_response, config, replay_miss."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


class Provider(Protocol):
    """One interface for every synthesiser: LLM servers, the heuristic and replay."""

    name: str  # "ollama", "openai", "heuristic"
    model: str
    is_llm: bool  # False for the heuristic: the output says no LLM was used
    is_replay: bool  # True: answer only from recorded calls

    def parameters(self) -> dict[str, Any]:
        """Everything besides the prompt that changes the answer (temperature, token cap, output mode)."""
        ...

    def complete(
        self, messages: Sequence[dict[str, str]], schema: dict[str, Any], snapshot: FeatureSnapshot
    ) -> Reply:
        """Send one chat request. `snapshot` is the one the prompt shows (the heuristic reads it directly)."""
        ...


def request_key(provider: str, model: str, prompt_hash: str, parameters: dict[str, Any], schema: dict[str, Any],
                schema_sha256: str | None = None) -> str:
    """The cache and replay key: (provider, model, prompt hash, parameters including the schema's hash).

    `schema_sha256`: `schema`'s hash (`schema_hash(schema)`) when the caller has it already.
    """
    params = {**parameters, "schema_sha256": schema_sha256 or schema_hash(schema)}
    return keyed_request(provider, model, prompt_hash, canonical_json(params))


def keyed_request(provider: str, model: str, prompt_hash: str, parameters_json: str) -> str:
    """`request_key` from the canonical JSON of its parameters (the schema's hash included), which a caller
    making many calls with the same parameters can keep instead of encoding them for every call.

    The bytes hashed are the canonical JSON of the whole request, written out: its keys sorted
    (model, parameters, prompt, provider), compact separators, the parameters' JSON as it is.
    """
    blob = (f'{{"model":{canonical_json(model)},"parameters":{parameters_json},'
            f'"prompt":{canonical_json(prompt_hash)},"provider":{canonical_json(provider)}}}')
    return hashlib.sha256(blob.encode()).hexdigest()


def schema_hash(schema: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(schema).encode()).hexdigest()


# The encoder `json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))` would build
# for every call (it builds one whenever an option differs from the defaults); it keeps no state between calls.
_CANONICAL = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def canonical_json(value: Any) -> str:
    return _CANONICAL.encode(value)


_SORTED = json.JSONEncoder(sort_keys=True)  # likewise for `json.dumps(value, sort_keys=True)`


def sorted_json(value: Any) -> str:
    """`json.dumps(value, sort_keys=True)`: the text a rule provider answers with (one encoder, kept)."""
    return _SORTED.encode(value)
