"""OpenAI and OpenAI-compatible servers (DeepSeek, vLLM, LM Studio, Ollama's /v1) via the `openai` client.

The base URL and key come from the config, else `$OPENAI_BASE_URL` / `$OPENAI_API_KEY` (the
client's own conventions). Output mode: structured outputs with the strict Signal schema, or
JSON mode (`{"type": "json_object"}`) for servers that only have that; `auto` tries the schema
and falls back to JSON mode for good when the server rejects it (HTTP 400/422). Either way the
reply is validated by `parse_signal`.

`chat.completions.create` is used, not `.parse`: `.parse` validates the content against the model
itself, and an invalid reply would then lose the raw text the repair retry must show the model.
Refusals (`message.refusal`), `finish_reason` "length" and "content_filter" are read from the
reply; the client's `LengthFinishReasonError` / `ContentFilterFinishReasonError` sit outside its
`APIError` hierarchy, so `OpenAIError` is caught as well.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import openai
import pydantic

from agent.config import OpenAISettings
from agent.llm.base import ProviderError, Reply
from agent.snapshot import FeatureSnapshot

PLACEHOLDER_KEY = "not-needed"  # local compatible servers ignore the key, the client insists on one


class OpenAIProvider:
    name = "openai"
    is_llm = True
    is_replay = False

    def __init__(self, model: str, settings: OpenAISettings) -> None:
        if not model:
            raise ValueError("openai needs a model name: openai:MODEL, e.g. openai:gpt-4o-mini")
        self.model = model
        self.settings = settings
        self.mode = "json_object" if settings.structured == "json_object" else "json_schema"
        self._client: openai.OpenAI | None = None

    def parameters(self) -> dict[str, Any]:
        s = self.settings
        return {"temperature": s.temperature, "max_completion_tokens": s.max_output_tokens, "structured": s.structured}

    def client(self) -> openai.OpenAI:
        if self._client is None:
            s = self.settings
            key = s.api_key.get_secret_value() if s.api_key is not None else None
            try:
                self._client = openai.OpenAI(
                    api_key=key, base_url=s.base_url, timeout=s.timeout_s, max_retries=s.max_retries
                )
            except openai.OpenAIError as exc:
                if s.base_url is None and not _env_base_url():
                    raise ProviderError("config", f"openai client: {exc}") from None
                # a compatible server without authentication: any key will do
                self._client = openai.OpenAI(
                    api_key=PLACEHOLDER_KEY, base_url=s.base_url, timeout=s.timeout_s, max_retries=s.max_retries
                )
        return self._client

    def _response_format(self, schema: dict[str, Any]) -> dict[str, Any]:
        if self.mode == "json_object":
            return {"type": "json_object"}
        return {"type": "json_schema", "json_schema": {"name": "Signal", "strict": True, "schema": schema}}

    def complete(
        self, messages: Sequence[dict[str, str]], schema: dict[str, Any], snapshot: FeatureSnapshot
    ) -> Reply:
        try:
            return self._complete(messages, schema)
        except openai.BadRequestError as exc:
            if not (self.settings.structured == "auto" and self.mode == "json_schema"):
                raise ProviderError("http_error", f"HTTP 400: {_message(exc)}") from None
            self.mode = "json_object"  # the server has no strict structured outputs: JSON mode from now on
        except openai.UnprocessableEntityError as exc:
            if not (self.settings.structured == "auto" and self.mode == "json_schema"):
                raise ProviderError("http_error", f"HTTP 422: {_message(exc)}") from None
            self.mode = "json_object"
        try:
            return self._complete(messages, schema)
        except openai.APIStatusError as exc:
            raise ProviderError("http_error", f"HTTP {exc.status_code} in JSON mode: {_message(exc)}") from None

    def _complete(self, messages: Sequence[dict[str, str]], schema: dict[str, Any]) -> Reply:
        s = self.settings
        try:
            raw = self.client().chat.completions.with_raw_response.create(
                model=self.model,
                messages=list(messages),
                response_format=self._response_format(schema),
                temperature=s.temperature,
                max_completion_tokens=s.max_output_tokens,
            )
            body = raw.http_response.text
            completion = raw.parse()
        except (openai.BadRequestError, openai.UnprocessableEntityError):
            raise
        except openai.APITimeoutError:
            raise ProviderError("timeout", f"no answer within {s.timeout_s:g} s") from None
        except openai.APIConnectionError as exc:
            raise ProviderError("connection_error", _message(exc)) from None
        except openai.APIStatusError as exc:
            kind = "server_error" if exc.status_code >= 500 else "http_error"
            raise ProviderError(kind, f"HTTP {exc.status_code}: {_message(exc)}") from None
        except openai.LengthFinishReasonError:
            raise ProviderError("bad_response", "truncated: finish_reason length") from None
        except openai.ContentFilterFinishReasonError:
            raise ProviderError("bad_response", "content filter: finish_reason content_filter") from None
        except openai.OpenAIError as exc:
            raise ProviderError("bad_response", f"{type(exc).__name__}: {_message(exc)}") from None
        except (ValueError, TypeError, KeyError, AttributeError, pydantic.ValidationError) as exc:
            raise ProviderError("bad_response", f"not a chat completion: {str(exc)[:300]}") from None
        choices = getattr(completion, "choices", None) or []
        if not choices or getattr(choices[0], "message", None) is None:
            raise ProviderError("bad_response", "the completion has no choices")
        choice = choices[0]
        usage = getattr(completion, "usage", None)
        return Reply(
            text=choice.message.content,
            thinking=getattr(choice.message, "reasoning_content", None),
            finish_reason=choice.finish_reason,
            refusal=choice.message.refusal,
            tokens_in=getattr(usage, "prompt_tokens", None),
            tokens_out=getattr(usage, "completion_tokens", None),
            raw_response=body,
        )


def _env_base_url() -> str | None:
    return os.environ.get("OPENAI_BASE_URL")


def _message(exc: Exception) -> str:
    return str(getattr(exc, "message", None) or exc)[:300]
