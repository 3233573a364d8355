"""Schema-driven fuzzing of the live webhook with schemathesis: no input ever gets a 5xx from a bug.

schemathesis reads the running server's own /openapi.json and generates requests from it, valid
and invalid (negative mode). Half of the generated bodies are signed with the real secret, so the
fuzzing reaches past the signature into the payload and store checks; the others carry whatever
header schemathesis made up. Every response must be a documented status with a body matching its
documented schema. The only 5xx the API may give is a documented 503 (the queue of alerts full,
or /health degraded).
"""

from __future__ import annotations

import json
import time

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from agent.webhook.signature import sign
from tests.test_webhook import SECRET, serving


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    with serving(tmp_path_factory.mktemp("webhook-fuzz"), webhook='max_pending = 5\nsymbols = ["BTC/USDT"]') as running:
        schema = schemathesis.openapi.from_url(f"http://127.0.0.1:{running.port}/openapi.json")
        yield running, schema


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_fuzzed_requests_never_get_an_undocumented_answer_or_a_server_error(api, mode):
    running, schema = api
    base = f"http://127.0.0.1:{running.port}"
    session = requests.Session()
    seen: dict[int, int] = {}

    @given(case=schema.as_strategy(generation_mode=mode), signed=st.booleans(), fresh=st.booleans())
    @settings(max_examples=40, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
    def check(case, signed, fresh):
        kwargs = {}
        body = case.body
        if case.method == "POST" and fresh and isinstance(body, dict):
            # a current time, an allowed symbol and one strategy: deeper than the timestamp check, and
            # the cooldown keeps the cycles this can trigger to one
            body = {**body, "timestamp": int(time.time()), "symbol": "BTCUSDT", "strategy": "fuzz"}
        if case.method == "POST" and (signed or fresh) and body is not None and not isinstance(body, bytes):
            raw = json.dumps(body).encode()
            headers = {**(case.headers or {}), "Content-Type": "application/json"}
            if signed:
                headers["X-Signature"] = sign(SECRET, raw)
            kwargs = {"data": raw, "headers": headers}
        response = case.call(base_url=base, session=session, **kwargs)
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        if response.status_code != 503:  # documented: the queue is full, or /health is degraded
            case.validate_response(response, checks=[not_a_server_error])
        case.validate_response(response, checks=[status_code_conformance, content_type_conformance,
                                                 response_schema_conformance])

    check()
    assert seen, "no request was made"
    assert all(code < 500 or code == 503 for code in seen), seen
