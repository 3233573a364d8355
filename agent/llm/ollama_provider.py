"""Ollama through the official `ollama` client: `POST /api/chat` with the Signal schema as `format`.

The host comes from the config, else `$OLLAMA_HOST` (the client's own convention), else the
client's default 127.0.0.1:11434. `think=False` keeps a thinking model's answer in `content`.
The client returns the text unvalidated; `parse_signal` validates it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx
import ollama
import pydantic

from agent.config import OllamaSettings
from agent.llm.base import ProviderError, Reply
from agent.snapshot import FeatureSnapshot


class OllamaProvider:
    name = "ollama"
    is_llm = True
    is_replay = False

    def __init__(self, model: str, settings: OllamaSettings) -> None:
        if not model:
            raise ValueError("ollama needs a model name: ollama:MODEL, e.g. ollama:qwen3:8b")
        self.model = model
        self.settings = settings
        self._client: ollama.Client | None = None

    def parameters(self) -> dict[str, Any]:
        s = self.settings
        return {"temperature": s.temperature, "num_predict": s.max_output_tokens, "think": s.think, "format": "schema"}

    def client(self) -> ollama.Client:
        if self._client is None:
            self._client = ollama.Client(host=self.settings.host, timeout=self.settings.timeout_s)
        return self._client

    def complete(
        self, messages: Sequence[dict[str, str]], schema: dict[str, Any], snapshot: FeatureSnapshot
    ) -> Reply:
        s = self.settings
        try:
            response = self.client().chat(
                model=self.model,
                messages=list(messages),
                format=schema,  # a dict: the 0.6.3 client rejects a pydantic class here
                options={"temperature": s.temperature, "num_predict": s.max_output_tokens},
                think=s.think,
                keep_alive=s.keep_alive,
            )
        except ollama.ResponseError as exc:
            kind = "server_error" if exc.status_code >= 500 else "http_error"
            raise ProviderError(kind, f"HTTP {exc.status_code}: {str(exc.error)[:300]}") from None
        except httpx.TimeoutException:
            raise ProviderError("timeout", f"no answer within {s.timeout_s:g} s") from None
        except (httpx.HTTPError, ConnectionError, OSError) as exc:
            raise ProviderError("connection_error", f"{type(exc).__name__}: {str(exc)[:300]}") from None
        except (ValueError, TypeError, KeyError, pydantic.ValidationError) as exc:
            raise ProviderError("bad_response", f"not an Ollama chat response: {str(exc)[:300]}") from None
        message = response.message
        return Reply(
            text=message.content,
            thinking=message.thinking,
            finish_reason=response.done_reason,
            tokens_in=response.prompt_eval_count,
            tokens_out=response.eval_count,
            raw_response=response.model_dump_json(exclude_none=True),
        )
