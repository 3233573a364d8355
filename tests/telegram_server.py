"""A fake Telegram Bot API server on 127.0.0.1, speaking the real wire format, for python-telegram-bot.

`POST /bot<token>/<method>` with a form-encoded or JSON body (PTB sends forms, with `reply_markup`
as a JSON string); replies `{"ok": true, "result": ...}` with real-shaped `User`, `Message` and
`Update` objects, or `{"ok": false, "error_code": ..., "description": ...}`. It records every
request, serves queued updates to `getUpdates` (long-polling up to its `timeout`, capped), and on
demand answers 429 with `parameters.retry_after`, 5xx, or drops the connection without a reply.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

BOT_ID = 7000001
BOT = {"id": BOT_ID, "is_bot": True, "first_name": "Signal Agent", "username": "signal_agent_test_bot"}
MAX_POLL_S = 1.0  # getUpdates waits at most this long for an update (the client asks for more)


@dataclass
class Request:
    method: str
    params: dict[str, Any]
    at: float
    status: int = 200


@dataclass
class Failure:
    kind: str  # "429" | "500" | "502" | "drop" | "400"
    retry_after: int = 1


@dataclass
class FakeBotAPI:
    token: str
    requests: list[Request] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)  # every message the bot sent, in order
    failures: dict[str, list[Failure]] = field(default_factory=dict)  # method -> failures to apply, in order
    down: set[str] = field(default_factory=set)  # methods failing with 502 until brought back
    updates: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Condition = field(default_factory=threading.Condition)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(100))
    _update_ids: Iterator[int] = field(default_factory=lambda: itertools.count(5000))
    url: str = ""

    # --- test controls ------------------------------------------------------------------------

    def fail(self, method: str, *failures: Failure) -> None:
        with self.lock:
            self.failures.setdefault(method, []).extend(failures)

    def calls(self, method: str) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.method == method]

    def sent(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.messages)

    def push_update(self, body: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            update = {"update_id": next(self._update_ids), **body}
            self.updates.append(update)
            self.lock.notify_all()
            return update

    def user_message(self, chat_id: int, text: str, *, reply_to: dict[str, Any] | None = None,
                     user_id: int | None = None) -> dict[str, Any]:
        """A person's message in `chat_id` (a command when it starts with '/')."""
        with self.lock:
            message_id = next(self._ids)
        msg: dict[str, Any] = {"message_id": message_id, "date": int(time.time()),
                               "chat": {"id": chat_id, "type": "private", "first_name": "Trader"},
                               "from": {"id": user_id or chat_id, "is_bot": False, "first_name": "Trader"},
                               "text": text}
        if text.startswith("/"):
            msg["entities"] = [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}]
        if reply_to is not None:
            msg["reply_to_message"] = reply_to
        return self.push_update({"message": msg})

    def button_press(self, message: dict[str, Any], data: str, *, user_id: int | None = None) -> dict[str, Any]:
        """A callback query: someone pressed the button with `data` under `message`."""
        chat_id = message["chat"]["id"]
        return self.push_update({"callback_query": {
            "id": f"cq{next(self._ids)}", "from": {"id": user_id or chat_id, "is_bot": False, "first_name": "Trader"},
            "message": message, "chat_instance": "ci-1", "data": data}})

    def wait_for(self, predicate, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        with self.lock:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.lock.wait(min(left, 0.05))
            return True

    # --- the API ------------------------------------------------------------------------------

    def handle(self, method: str, params: dict[str, Any]) -> tuple[int, dict[str, Any] | None]:
        with self.lock:
            queue = self.failures.get(method)
            failure = queue.pop(0) if queue else None
            if failure is None and method in self.down:
                failure = Failure("502")
            self.requests.append(Request(method, params, time.monotonic(),
                                         int(failure.kind) if failure and failure.kind.isdigit() else 200))
            self.lock.notify_all()
        if failure is not None:
            if failure.kind == "drop":
                return 0, None
            if failure.kind == "429":
                return 429, {"ok": False, "error_code": 429,
                             "description": f"Too Many Requests: retry after {failure.retry_after}",
                             "parameters": {"retry_after": failure.retry_after}}
            code = int(failure.kind)
            words = {400: "Bad Request: can't parse entities", 500: "Internal Server Error", 502: "Bad Gateway"}
            return code, {"ok": False, "error_code": code, "description": words.get(code, "Error")}
        if method == "getMe":
            return 200, {"ok": True, "result": {**BOT, "can_join_groups": True, "can_read_all_group_messages": False,
                                                "supports_inline_queries": False}}
        if method in ("deleteWebhook", "answerCallbackQuery", "setMyCommands"):
            return 200, {"ok": True, "result": True}
        if method == "getUpdates":
            return 200, {"ok": True, "result": self._updates(params)}
        if method == "sendMessage":
            return 200, {"ok": True, "result": self._send(params)}
        if method == "editMessageReplyMarkup":
            with self.lock:
                for m in self.messages:
                    if m["message_id"] == int(params["message_id"]):
                        m.pop("reply_markup", None)
                        return 200, {"ok": True, "result": m}
            return 400, {"ok": False, "error_code": 400, "description": "Bad Request: message to edit not found"}
        return 404, {"ok": False, "error_code": 404, "description": "Not Found"}

    def _send(self, params: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            chat_id = int(params["chat_id"])
            msg: dict[str, Any] = {"message_id": next(self._ids), "date": int(time.time()),
                                   "chat": {"id": chat_id, "type": "private", "first_name": "Trader"},
                                   "from": BOT, "text": params["text"]}
            markup = params.get("reply_markup")
            markup = json.loads(markup) if isinstance(markup, str) else markup
            if markup and "inline_keyboard" in markup:  # Telegram echoes only inline keyboards in a Message
                msg["reply_markup"] = markup
            if params.get("reply_parameters"):
                rp = params["reply_parameters"]
                rp = json.loads(rp) if isinstance(rp, str) else rp
                target = next((m for m in self.messages if m["message_id"] == int(rp["message_id"])), None)
                if target is not None:
                    msg["reply_to_message"] = {k: v for k, v in target.items() if k != "reply_to_message"}
            record = {**msg, "_params": params}
            self.messages.append(record)
            self.lock.notify_all()
            return msg

    def _updates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        offset = int(params.get("offset", 0) or 0)
        wait = min(float(params.get("timeout", 0) or 0), MAX_POLL_S)
        deadline = time.monotonic() + wait
        with self.lock:
            while True:
                if offset:
                    self.updates = [u for u in self.updates if u["update_id"] >= offset]  # confirmed: forget them
                if self.updates:
                    return list(self.updates)
                left = deadline - time.monotonic()
                if left <= 0:
                    return []
                self.lock.wait(left)


def message_view(record: dict[str, Any]) -> dict[str, Any]:
    """A sent message as Telegram would echo it inside an update (without the recorded request)."""
    return {k: v for k, v in record.items() if not k.startswith("_")}


def _handler(api: FakeBotAPI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            prefix = f"/bot{api.token}/"
            if not self.path.startswith(prefix):
                self._reply(401, {"ok": False, "error_code": 401, "description": "Unauthorized"})
                return
            kind = self.headers.get("Content-Type", "")
            if "json" in kind:
                params = json.loads(raw or b"{}")
            else:
                params = dict(parse_qsl(raw.decode(), keep_blank_values=True))
            code, body = api.handle(self.path[len(prefix):], params)
            if body is None:  # drop: close without a reply
                self.close_connection = True
                self.connection.close()
                return
            self._reply(code, body)

        def _reply(self, code: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            try:
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (shutdown mid long-poll)
                self.close_connection = True

    return Handler


@contextmanager
def fake_bot_api(token: str = "123456:TEST-token_abc") -> Iterator[FakeBotAPI]:
    """The server on an ephemeral port for the duration of the block (always shut down)."""
    api = FakeBotAPI(token=token)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(api))
    server.daemon_threads = True
    api.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield api
    finally:
        with api.lock:
            api.lock.notify_all()
        server.shutdown()
        server.server_close()
        thread.join(5)
