"""The HTTP face of the webhook (FastAPI): `POST /webhook/tradingview`, `GET /health`, the OpenAPI document.

The order of the checks on an alert, and why:

1. **size** (413): `Content-Length` above the limit is refused before reading, and the stream is
   counted as it arrives (chunked bodies declare no length), so no sender can make the server
   buffer more than the limit;
2. **signature** (401): HMAC-SHA256 of the raw bytes, before anything looks inside them: JSON from
   an unknown sender is never parsed (a parser is attack surface, and a forged body's fields
   must not reach the store, the logs or the cycle);
3. **payload** (422): the body must be a valid alert (pydantic field errors, FastAPI's shape);
4. **timestamp** (401), **replay** (409), **allow-list** (403), **cooldown** (409), **queue room**
   (503): the checks that need the store, in `agent.webhook.intake` (its docstring says why in
   that order).
An accepted entry alert answers 202 with its id at once; its cycle runs on the worker thread.
Unauthenticated requests (413, 401 before the body is trusted) are logged and counted, never
stored.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, SecretStr, ValidationError
from starlette.requests import ClientDisconnect

from agent.webhook.intake import AlertIntake
from agent.webhook.payload import TradingViewAlert, field_errors
from agent.webhook.signature import HEADER, BodyTooLarge, SignatureError, declared_length, read_limited, verify

log = logging.getLogger(__name__)

PATH = "/webhook/tradingview"


class Accepted(BaseModel):
    verdict: Literal["accepted"] = "accepted"
    alert_id: str = Field(description="Id of the stored alert (webhook_alerts).")
    status: Literal["queued", "recorded", "paused"] = Field(
        description="queued: its cycle will run; recorded: an exit alert (no cycle); paused: the run is paused.")
    symbol: str = Field(description="The alert's symbol resolved to ours, e.g. BTC/USDT.")
    detail: str


class Refusal(BaseModel):
    verdict: str = Field(description="too_large | bad_signature | stale | future | replay | forbidden_symbol | "
                                     "cooldown | busy")
    detail: str = Field(description="What was wrong, in words.")
    alert_id: str | None = Field(default=None, description="Set when the (authenticated) alert was stored.")


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class Invalid(BaseModel):
    verdict: Literal["invalid_payload"] = "invalid_payload"
    detail: list[FieldError]
    alert_id: str | None = None


class LastCycle(BaseModel):
    kind: str = Field(description="alert | scheduled")
    cycle_id: str
    decision_ms: int
    finished_ms: int
    outcome: str


class Health(BaseModel):
    status: Literal["ok", "degraded"] = Field(description="degraded: the store is unreachable or the worker died.")
    run: str
    store: bool = Field(description="The store answered a query.")
    worker: bool = Field(description="The cycle thread is alive.")
    paused: bool | None = Field(description="The run is paused (/pause); None when the store cannot say.")
    queue: int = Field(description="Cycles waiting, plus the one running.")
    schedule: bool = Field(description="Scheduled cycles run in this process (--schedule).")
    next_scheduled_ms: int | None = None
    last_cycle: LastCycle | None = None
    refused: dict[str, int] = Field(description="Refusals since start, by verdict (unauthenticated ones included).")


def _refusal(code: int, verdict: str, detail: str, alert_id: str | None = None) -> JSONResponse:
    return JSONResponse(Refusal(verdict=verdict, detail=detail, alert_id=alert_id).model_dump(), status_code=code)


SIGNATURE_PARAMETER = {
    "name": HEADER, "in": "header", "required": True,
    "description": "sha256=<hex HMAC-SHA256 of the raw request body under the shared secret WEBHOOK_SECRET>",
    "schema": {"type": "string", "pattern": "^sha256=[0-9a-fA-F]{64}$"},
}

RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": Refusal, "description": "Missing, malformed or wrong signature; or a timestamp outside the "
                                           "window (stale or future)."},
    403: {"model": Refusal, "description": "The symbol is not in the allow-list."},
    409: {"model": Refusal, "description": "A replayed signature, or the symbol and strategy are in cooldown."},
    413: {"model": Refusal, "description": "The body is (or declares itself) larger than the limit."},
    422: {"model": Invalid, "description": "The body is not a valid alert: field errors."},
    503: {"model": Refusal, "description": "Too many accepted alerts are waiting for their cycles."},
}


def create_app(*, secret: SecretStr, max_body_bytes: int, intake: AlertIntake, submit: Callable[[str], None],
               health: Callable[[], Health]) -> FastAPI:
    """The application. `submit(alert_id)` queues an accepted entry alert's cycle; `health()` builds /health."""
    app = FastAPI(
        title="signal-agent webhook",
        version="1",
        description="Signed TradingView alerts trigger a decision cycle for their symbol; the alert joins the "
                    "snapshot as the `tradingview` theory and the risk gate still decides. Sign the raw body: "
                    f"`{HEADER}: sha256=<hex HMAC-SHA256(WEBHOOK_SECRET, body)>`.",
    )
    key = secret.get_secret_value().encode()
    refused: dict[str, int] = {}
    lock = threading.Lock()

    def count(verdict: str) -> None:
        with lock:
            refused[verdict] = refused.get(verdict, 0) + 1

    @app.post(
        PATH, status_code=202, response_model=Accepted, responses=RESPONSES, summary="Receive a TradingView alert",
        description=f"Checks in this order: body size (limit {max_body_bytes} bytes), signature, payload, then "
                    "timestamp window, replay, symbol allow-list, cooldown, queue room. An entry alert triggers a "
                    "cycle for its symbol (202 at once, the cycle runs in the background); an exit alert is "
                    "recorded and alerted, and triggers nothing.",
        openapi_extra={
            "parameters": [SIGNATURE_PARAMETER],
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": TradingViewAlert.model_json_schema()}}},
        },
    )
    async def tradingview(request: Request) -> JSONResponse:
        client = request.client.host if request.client else "?"
        try:
            declared_length(request.headers.get("content-length"), max_body_bytes)
            body = await read_limited(request.stream(), max_body_bytes)
        except BodyTooLarge as exc:
            count("too_large")
            log.warning("webhook: 413 from %s: %s", client, exc)
            return _refusal(413, "too_large", str(exc))
        except ClientDisconnect:  # the sender left mid-body: nobody to answer, nothing to judge
            count("disconnected")
            log.info("webhook: %s disconnected before the body was complete", client)
            return JSONResponse({}, status_code=400)
        try:
            signature = verify(key, body, request.headers.get(HEADER))
        except SignatureError as exc:
            count("bad_signature")
            log.warning("webhook: 401 from %s: %s", client, exc)
            return _refusal(401, "bad_signature", str(exc))
        try:
            alert = TradingViewAlert.model_validate_json(body)
        except ValidationError as exc:
            errors = field_errors(exc.errors(include_url=False))
            count("invalid_payload")
            summary = "; ".join(f"{'.'.join(map(str, e['loc'][1:])) or 'body'}: {e['msg']}" for e in errors)
            v = await run_in_threadpool(intake.invalid, body, signature, summary)
            return JSONResponse(Invalid(detail=[FieldError(**e) for e in errors], alert_id=v.alert_id).model_dump(),
                                status_code=422)
        v = await run_in_threadpool(intake.admit, body, signature, alert)
        if not v.accepted:
            count(v.verdict)
            log.info("webhook: %s %s: %s", v.http_status, v.verdict, v.detail)
            return _refusal(v.http_status, v.verdict, v.detail, v.alert_id)
        if v.status == "queued":
            submit(v.alert_id or "")
        log.info("webhook: accepted %s (%s %s %s): %s", v.alert_id, alert.strategy, alert.action, v.symbol, v.status)
        return JSONResponse(Accepted(alert_id=v.alert_id or "", status=v.status, symbol=v.symbol or "",  # type: ignore[arg-type]
                                     detail=v.detail).model_dump(), status_code=202)

    @app.get("/health", response_model=Health, responses={503: {"model": Health, "description": "Degraded."}},
             summary="Liveness and state: store reachable, last cycle, queue length, paused")
    def get_health() -> JSONResponse:
        h = health().model_copy(update={"refused": dict(refused)})
        return JSONResponse(h.model_dump(), status_code=200 if h.status == "ok" else 503)

    return app
