"""Loopback HTTP servers that speak the real Ollama `/api/chat` and OpenAI `/v1/chat/completions` formats.

Each test scripts the replies in order; the server records every request body it received. The
real `ollama` and `openai` clients talk to it over TCP on 127.0.0.1, nothing is mocked.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Scripted:
    status: int
    body: bytes
    delay_s: float = 0.0
    content_type: str = "application/json"


class ScriptedServer:
    def __init__(self, path: str) -> None:
        self.path = path
        self.script: deque[Scripted | Callable[[dict], Scripted]] = deque()
        self.requests: list[dict[str, Any]] = []
        self.url = ""

    def push(self, *replies: Scripted | Callable[[dict], Scripted]) -> None:
        self.script.extend(replies)

    def _next(self, body: dict) -> Scripted:
        if not self.script:
            return Scripted(500, json.dumps({"error": "no scripted reply left"}).encode())
        item = self.script.popleft()
        return item(body) if callable(item) else item


def _handler(server: ScriptedServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # keep test output clean
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            raw = self.rfile.read(length)
            try:
                body = json.loads(raw)
            except ValueError:
                body = {"_unparsed": raw.decode("utf-8", "replace")}
            if self.path != server.path:
                self._send(Scripted(404, json.dumps({"error": f"no route {self.path}"}).encode()))
                return
            server.requests.append(body)
            reply = server._next(body)
            if reply.delay_s:
                time.sleep(reply.delay_s)
            self._send(reply)

        def _send(self, reply: Scripted) -> None:
            try:
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout): nothing to answer

    return Handler


@contextmanager
def serve(path: str) -> Iterator[ScriptedServer]:
    """A scripted server on an ephemeral port of 127.0.0.1, always shut down afterwards."""
    state = ScriptedServer(path)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    httpd.block_on_close = False
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


# --- the wire formats -------------------------------------------------------------------------


def ollama_chat(
    content: str,
    *,
    thinking: str | None = None,
    done_reason: str = "stop",
    prompt_eval_count: int = 812,
    eval_count: int = 96,
    model: str = "qwen3:8b",
    status: int = 200,
    delay_s: float = 0.0,
) -> Scripted:
    """A non-streaming `/api/chat` reply as Ollama sends it (durations in ns)."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if thinking is not None:
        message["thinking"] = thinking
    body = {
        "model": model,
        "created_at": "2025-11-16T00:00:01.123456Z",
        "message": message,
        "done": True,
        "done_reason": done_reason,
        "total_duration": 2_345_000_000,
        "load_duration": 12_000_000,
        "prompt_eval_count": prompt_eval_count,
        "prompt_eval_duration": 400_000_000,
        "eval_count": eval_count,
        "eval_duration": 1_900_000_000,
    }
    return Scripted(status, json.dumps(body).encode(), delay_s)


def ollama_error(status: int, message: str) -> Scripted:
    return Scripted(status, json.dumps({"error": message}).encode())


def openai_chat(
    content: str | None,
    *,
    finish_reason: str = "stop",
    refusal: str | None = None,
    prompt_tokens: int | None = 790,
    completion_tokens: int | None = 88,
    model: str = "gpt-4o-mini-2024-07-18",
    delay_s: float = 0.0,
) -> Scripted:
    """A `/v1/chat/completions` reply as OpenAI sends it, with `usage` unless told otherwise."""
    body: dict[str, Any] = {
        "id": "chatcmpl-abc123",
        "object": "chat.completion",
        "created": 1763251201,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": refusal, "annotations": []},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "system_fingerprint": "fp_test",
    }
    if prompt_tokens is not None:
        body["usage"] = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + (completion_tokens or 0),
        }
    return Scripted(200, json.dumps(body).encode(), delay_s)


def openai_error(status: int, message: str, param: str | None = None) -> Scripted:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": None}}
    return Scripted(status, json.dumps(body).encode())
