"""The TradingView webhook over real HTTP: a real uvicorn server on 127.0.0.1, a real SQLite store, real cycles.

Every request is made with the standard library's HTTP client against the running server, so what
is tested is the wire: headers, status codes, chunked bodies, the JSON the sender gets back. The
cycles run on the bundled sample with the heuristic provider and a small theory set (fast), and
the default data policy.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.config import load_settings
from agent.cycle import cycle_id_for
from agent.snapshot import FeatureSnapshot
from agent.store import Store
from agent.store.tables import CycleRow, DecisionRow, SnapshotRow, WebhookAlertRow, WebhookSignatureRow
from agent.webhook.server import WebhookServer
from agent.webhook.service import WebhookService
from agent.webhook.signature import sign
from agent.webhook.theory import TradingViewResult

SECRET = "test-secret-0123456789abcdef"
PATH = "/webhook/tradingview"
THEORIES = "{ montecarlo = {}, context = {}, hurst = {}, autocorr = {} }"


def write_config(folder: Path, webhook: str = "") -> Path:
    path = folder / "config.toml"
    path.write_text(
        f'data_dir = "{folder / "data"}"\n'
        f"[cycle]\ntheories = {THEORIES}\n"
        f"[webhook]\n{webhook}\n"
    )
    return path


@contextlib.contextmanager
def clean_env(secret: str | None = SECRET, **extra: str) -> Iterator[None]:
    """Only the test's settings: no SIGNAL_AGENT_*, Telegram or webhook variables from the machine."""
    with pytest.MonkeyPatch.context() as mp:
        for k in list(os.environ):
            if k.startswith(("SIGNAL_AGENT_", "TELEGRAM_")) or k == "WEBHOOK_SECRET":
                mp.delenv(k)
        if secret is not None:
            mp.setenv("WEBHOOK_SECRET", secret)
        for k, v in extra.items():
            mp.setenv(k, v)
        yield


@dataclass
class Running:
    service: WebhookService
    server: WebhookServer
    store: Store

    @property
    def port(self) -> int:
        return self.server.port

    def rows(self) -> list[WebhookAlertRow]:
        return self.store.rows(WebhookAlertRow)

    def row(self, alert_id: str) -> WebhookAlertRow:
        return self.store.rows(WebhookAlertRow, alert_id=alert_id)[0]


@contextlib.contextmanager
def serving(folder: Path, *, webhook: str = "", worker: bool = True, schedule: bool = False,
            wall_ms=None, symbols: tuple[str, ...] = (), env: dict[str, str] | None = None) -> Iterator[Running]:
    """The webhook of a run on the store in `folder`, served on a free port of 127.0.0.1; always stopped."""
    folder.mkdir(parents=True, exist_ok=True)
    config = write_config(folder, webhook)
    with clean_env(**(env or {})):
        settings = load_settings(config, env_file=None)
    store = Store(settings.store.resolved_url(settings.data_dir))
    extra = {"wall_ms": wall_ms} if wall_ms is not None else {}
    service = WebhookService.build(settings, store, run="paper", schedule=schedule, symbols=symbols, **extra)
    server = WebhookServer(service.app(), "127.0.0.1", 0)
    if worker:
        service.worker.start()
    server.start_thread()
    try:
        yield Running(service, server, store)
    finally:
        server.stop_thread()
        service.worker.stop(60)
        store.close()


def alert(**overrides) -> dict:
    body = {"strategy": "ema-cross", "action": "entry", "direction": "long", "symbol": "BINANCE:BTCUSDT",
            "price": 90_000.0, "timestamp": int(time.time()), "timeframe": "1h", "bars": 3}
    body.update(overrides)
    return body


@dataclass
class Reply:
    status: int
    body: dict

    def __getitem__(self, key: str):
        return self.body[key]


def post(port: int, body: bytes | dict, *, signature: str | None = "sign", headers: dict | None = None) -> Reply:
    """POST the raw bytes (a dict is JSON-encoded), signed with SECRET unless a signature (or None) is given."""
    raw = json.dumps(body).encode() if isinstance(body, dict) else body
    hdrs = {"Content-Type": "application/json"}
    if signature == "sign":
        hdrs["X-Signature"] = sign(SECRET, raw)
    elif signature is not None:
        hdrs["X-Signature"] = signature
    hdrs.update(headers or {})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", PATH, body=raw, headers=hdrs)
        resp = conn.getresponse()
        return Reply(resp.status, json.loads(resp.read() or b"{}"))
    finally:
        conn.close()


def get(port: int, path: str) -> Reply:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return Reply(resp.status, json.loads(resp.read()))
    finally:
        conn.close()


def wait_for(predicate, timeout_s: float = 90.0, what: str = "the condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")


# --- a server whose alerts are judged but whose cycles do not run (fast verdict tests) --------------------


@pytest.fixture(scope="module")
def quiet(tmp_path_factory) -> Iterator[Running]:
    folder = tmp_path_factory.mktemp("webhook-quiet")
    with serving(folder, webhook='symbols = ["BTC/USDT", "ETH/USDT"]\nmax_pending = 1000\nmax_body_bytes = 2048',
                 worker=False) as running:
        yield running


def test_a_valid_alert_is_accepted_with_its_id_and_queued(quiet):
    r = post(quiet.port, alert(strategy="valid-one"))
    assert r.status == 202, r.body
    assert r["verdict"] == "accepted" and r["status"] == "queued" and r["symbol"] == "BTC/USDT"
    row = quiet.row(r["alert_id"])
    assert (row.verdict, row.status, row.http_status) == ("accepted", "queued", 202)
    assert (row.strategy, row.action, row.direction, row.symbol, row.symbol_sent, row.price) == (
        "valid-one", "entry", "LONG", "BTC/USDT", "BINANCE:BTCUSDT", 90_000.0)


def test_a_wrong_secret_is_refused_with_401_and_nothing_is_stored(quiet):
    before = len(quiet.rows())
    raw = json.dumps(alert(strategy="forged")).encode()
    r = post(quiet.port, raw, signature=sign("another-secret-0123456789", raw))
    assert r.status == 401 and r["verdict"] == "bad_signature"
    assert "does not match" in r["detail"]
    assert len(quiet.rows()) == before  # an unauthenticated sender never writes to the store


def test_a_body_changed_after_signing_is_refused_with_401(quiet):
    raw = json.dumps(alert(strategy="tampered", price=1.0)).encode()
    signature = sign(SECRET, raw)
    r = post(quiet.port, raw.replace(b"1.0", b"2.0"), signature=signature)
    assert r.status == 401 and r["verdict"] == "bad_signature"


def test_a_missing_or_malformed_signature_is_refused_with_401(quiet):
    missing = post(quiet.port, alert(strategy="unsigned"), signature=None)
    assert missing.status == 401 and "missing X-Signature" in missing["detail"]
    for bad in ("deadbeef", "sha1=" + "0" * 40, "sha256=" + "z" * 64, "sha256=" + "0" * 63):
        r = post(quiet.port, alert(strategy="malformed"), signature=bad)
        assert r.status == 401 and "malformed" in r["detail"], bad


def test_the_same_body_and_signature_again_is_a_replay_409(quiet):
    raw = json.dumps(alert(strategy="replayed")).encode()
    first = post(quiet.port, raw)
    again = post(quiet.port, raw)
    assert first.status == 202
    assert again.status == 409 and again["verdict"] == "replay"
    assert [r.alert_id for r in quiet.rows() if r.strategy == "replayed"] == [first["alert_id"]]


def test_stale_and_future_timestamps_are_refused_with_401_both_ways(quiet):
    now = int(time.time())  # the window is 300 s; margins cover the request's own time on a busy machine
    stale = post(quiet.port, alert(strategy="stale", timestamp=now - 320))
    future = post(quiet.port, alert(strategy="future", timestamp=(now + 320) * 1000))  # epoch ms works too
    inside = post(quiet.port, alert(strategy="inside", timestamp=now - 280))
    assert stale.status == 401 and stale["verdict"] == "stale" and "window is 300 s" in stale["detail"]
    assert future.status == 401 and future["verdict"] == "future"
    assert inside.status == 202
    assert quiet.row(stale["alert_id"]).verdict == "stale"


def test_an_iso_timestamp_with_its_zone_is_read_as_utc(quiet):
    t = time.gmtime(time.time() - 5)
    r = post(quiet.port, alert(strategy="iso", timestamp=time.strftime("%Y-%m-%dT%H:%M:%SZ", t)))
    assert r.status == 202
    assert abs(quiet.row(r["alert_id"]).alert_ms - (time.time() - 5) * 1000) < 2000


def test_a_declared_length_over_the_limit_is_refused_before_the_body_is_sent(quiet):
    conn = http.client.HTTPConnection("127.0.0.1", quiet.port, timeout=10)
    try:
        conn.putrequest("POST", PATH)
        conn.putheader("Content-Length", str(10_000_000))
        conn.putheader("X-Signature", "sha256=" + "0" * 64)
        conn.endheaders()  # not one byte of the 10 MB follows: the answer must not wait for it
        resp = conn.getresponse()
        assert resp.status == 413
        assert json.loads(resp.read())["verdict"] == "too_large"
    finally:
        conn.close()


def _chunked(port: int, chunks: list[bytes], signature: str) -> Reply:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest("POST", PATH)
        conn.putheader("Transfer-Encoding", "chunked")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("X-Signature", signature)
        conn.endheaders()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the server may answer and close early
            for c in chunks:
                conn.send(f"{len(c):x}\r\n".encode() + c + b"\r\n")
            conn.send(b"0\r\n\r\n")
        resp = conn.getresponse()
        return Reply(resp.status, json.loads(resp.read() or b"{}"))
    finally:
        conn.close()


def test_a_chunked_body_without_length_is_counted_and_refused_past_the_limit(quiet):
    big = json.dumps(alert(strategy="chunked-big", note="x" * 190, **{f"k{i}": "y" * 150 for i in range(14)})).encode()
    assert len(big) > 2048
    r = _chunked(quiet.port, [big[i:i + 512] for i in range(0, len(big), 512)], sign(SECRET, big))
    assert r.status == 413 and r["verdict"] == "too_large"
    small = json.dumps(alert(strategy="chunked-small")).encode()
    ok = _chunked(quiet.port, [small[:40], small[40:]], sign(SECRET, small))
    assert ok.status == 202  # chunked itself is fine: only the size is refused


def test_a_signed_body_that_is_not_json_is_422(quiet):
    r = post(quiet.port, b"{strategy: nope")
    assert r.status == 422 and r["verdict"] == "invalid_payload"
    assert r["detail"][0]["loc"] == ["body"] and r["detail"][0]["type"] == "json_invalid"


def test_schema_errors_name_every_bad_field(quiet):
    body = alert(strategy="", action="buy", direction="up", price=-5, nested={"a": 1})
    del body["timestamp"]
    r = post(quiet.port, body)
    assert r.status == 422
    bad = {tuple(e["loc"]) for e in r["detail"]}
    assert bad == {("body",)}  # a nested extra is refused first, with its own message
    assert "extra field 'nested'" in r["detail"][0]["msg"]
    del body["nested"]
    r = post(quiet.port, body)
    bad = {tuple(e["loc"]) for e in r["detail"]}
    assert bad == {("body", "strategy"), ("body", "action"), ("body", "direction"), ("body", "price"),
                   ("body", "timestamp")}
    assert quiet.row(r["alert_id"]).verdict == "invalid_payload"


def test_a_symbol_outside_the_allow_list_is_403(quiet):
    for symbol in ("SOLUSDT", "BINANCE:BTCUSDT.P", "BTC", "DOGE/USDT"):
        r = post(quiet.port, alert(strategy=f"deny-{symbol}", symbol=symbol))
        assert r.status == 403 and r["verdict"] == "forbidden_symbol", symbol
        assert "allowed: BTC/USDT, ETH/USDT" in r["detail"]
    assert post(quiet.port, alert(strategy="allow", symbol="eth/usdt")).status == 202


def test_a_second_entry_of_the_same_symbol_and_strategy_within_the_cooldown_is_409(quiet):
    first = post(quiet.port, alert(strategy="cool", price=1.0))
    second = post(quiet.port, alert(strategy="cool", price=2.0))
    other_strategy = post(quiet.port, alert(strategy="cool-2", price=2.0))
    other_symbol = post(quiet.port, alert(strategy="cool", symbol="ETHUSDT", price=2.0))
    assert first.status == 202
    assert second.status == 409 and second["verdict"] == "cooldown" and "next is accepted from" in second["detail"]
    assert other_strategy.status == 202 and other_symbol.status == 202


def test_an_exit_alert_is_recorded_without_a_cycle_and_without_cooldown(quiet):
    entry = post(quiet.port, alert(strategy="exiter"))
    exit_ = post(quiet.port, alert(strategy="exiter", action="exit", price=91_000.0))
    assert entry.status == 202 and exit_.status == 202
    assert exit_["status"] == "recorded" and "closes nothing" in exit_["detail"]
    assert quiet.row(exit_["alert_id"]).status == "recorded"


def test_the_openapi_document_describes_the_alert_the_signature_and_every_status(quiet):
    doc = get(quiet.port, "/openapi.json").body
    op = doc["paths"][PATH]["post"]
    header = next(p for p in op["parameters"] if p["in"] == "header")
    assert header["name"] == "X-Signature" and header["required"] is True
    assert header["schema"]["pattern"] == "^sha256=[0-9a-fA-F]{64}$"
    schema = op["requestBody"]["content"]["application/json"]["schema"]
    assert set(schema["required"]) == {"strategy", "action", "direction", "symbol", "price", "timestamp"}
    assert set(op["responses"]) == {"202", "401", "403", "409", "413", "422", "503"}
    assert "/health" in doc["paths"]


def test_an_exit_alert_becomes_a_telegram_warning_in_the_outbox_when_telegram_is_configured(tmp_path):
    from agent.store.tables import OutboxRow

    telegram = {"TELEGRAM_BOT_TOKEN": "123:abc", "TELEGRAM_CHAT_ID": "42"}
    with serving(tmp_path, worker=False, env=telegram) as s:
        r = post(s.port, alert(strategy="tv-exit", action="exit", direction="sell", price=91_000.0))
        assert r.status == 202 and r["status"] == "recorded"
        rows = s.store.rows(OutboxRow, key=f"tradingview_exit:{r['alert_id']}")
        assert len(rows) == 1 and rows[0].level == "WARNING"
        assert "exit SHORT BTC/USDT at 91000" in rows[0].text and "Nothing was closed" in rows[0].text


def test_a_paused_run_records_an_alert_without_queueing_a_cycle(tmp_path):
    from agent.alerts.control import set_paused

    with serving(tmp_path, worker=False) as s:
        set_paused(s.store, "paper", True, "test", int(time.time() * 1000))
        r = post(s.port, alert(strategy="while-paused"))
        assert r.status == 202 and r["status"] == "paused" and "paused" in r["detail"]
        assert s.service.worker.pending == 0
        set_paused(s.store, "paper", False, "test", int(time.time() * 1000))
        again = post(s.port, alert(strategy="while-paused", price=1.0))  # a paused alert started no cooldown
        assert again.status == 202 and again["status"] == "queued"


def test_a_full_queue_refuses_with_503(tmp_path):
    with serving(tmp_path, worker=False, webhook="max_pending = 1") as s:
        assert post(s.port, alert(strategy="first")).status == 202
        r = post(s.port, alert(strategy="second"))
        assert r.status == 503 and r["verdict"] == "busy"


# --- persistence across a restart -------------------------------------------------------------------------


def test_a_replay_is_refused_after_a_restart_too(tmp_path):
    raw = json.dumps(alert(strategy="restart")).encode()
    with serving(tmp_path, worker=False) as first:
        assert post(first.port, raw).status == 202
    with serving(tmp_path, worker=False) as second:  # same store, new process state
        r = post(second.port, raw)
        assert r.status == 409 and r["verdict"] == "replay"


def test_a_future_alert_refused_now_is_a_replay_when_its_time_comes(tmp_path):
    clock = [1_800_000_000_000]
    with serving(tmp_path, worker=False, wall_ms=lambda: clock[0]) as s:
        raw = json.dumps(alert(strategy="early", timestamp=clock[0] + 400_000)).encode()
        assert post(s.port, raw)["verdict"] == "future"
        clock[0] += 400_000  # the alert's time has come: the same bytes must not be accepted now
        r = post(s.port, raw)
        assert r.status == 409 and r["verdict"] == "replay"
        assert len(s.store.rows(WebhookSignatureRow)) == 1


# --- the cycle an alert triggers ----------------------------------------------------------------------------


def test_an_accepted_alert_runs_a_cycle_for_its_symbol_with_the_alert_as_a_theory(tmp_path):
    with serving(tmp_path, webhook="cooldown_s = 0", schedule=True, symbols=("BTC/USDT", "SOL/USDT")) as s:
        r = post(s.port, alert(strategy="trend-up", symbol="SOLUSDT", price=140.0, mood="bullish"))
        assert r.status == 202
        row = wait_for(lambda: (x := s.row(r["alert_id"])).status in ("done", "failed") and x,
                       what="the alert's cycle")
        assert row.status == "done", row.detail

        close = s.service.runner.market_data().candles("SOL/USDT", 2**62).last_close_time
        # --schedule: the close's scheduled cycle ran first (every symbol), then the alert's (its symbol only)
        scheduled = s.store.rows(CycleRow, cycle_id=cycle_id_for("paper", close))
        assert len(scheduled) == 1 and json.loads(scheduled[0].symbols_json) == ["BTC/USDT", "SOL/USDT"]
        assert close < row.decision_ms < close + 3_600_000
        assert row.decision_ms // 1000 != close // 1000  # a cycle id of its own
        decisions = s.store.rows(DecisionRow, cycle_id=row.cycle_id)
        assert [d.symbol for d in decisions] == ["SOL/USDT"]
        assert decisions[0].decision_id == row.decision_id and decisions[0].outcome == row.outcome
        assert row.outcome not in ("skipped", "error"), decisions[0].reason

        snap = s.store.rows(SnapshotRow, decision_id=row.decision_id)[0]
        stored = FeatureSnapshot.model_validate_json(snap.snapshot_json)  # readers can load it back, typed
        assert isinstance(stored.theories["tradingview"], TradingViewResult)
        tv = json.loads(snap.snapshot_json)["theories"]["tradingview"]
        assert (tv["alert_id"], tv["strategy"], tv["action"], tv["direction"], tv["price"]) == (
            r["alert_id"], "trend-up", "entry", "LONG", 140.0)
        assert tv["extras"] == {"timeframe": "1h", "bars": 3, "mood": "bullish"}
        assert tv["distance"] == pytest.approx((140.0 - snap.last_price) / snap.last_price)
        assert "tradingview: LONG entry from TradingView strategy 'trend-up' at 140" in snap.prompt_text

        health = get(s.port, "/health")
        assert health.status == 200 and health["status"] == "ok" and health["queue"] == 0
        assert health["last_cycle"]["cycle_id"] == row.cycle_id and health["paused"] is False

        # the schedule's own tick for that close, coming later, reads the cycle back instead of being refused
        again = s.service.runner.scheduled(close + 30_000)
        assert again.cycle_id == cycle_id_for("paper", close)


def test_an_alert_left_queued_by_a_stopped_server_runs_at_the_next_start(tmp_path):
    with serving(tmp_path, worker=False) as first:
        r = post(first.port, alert(strategy="left-behind", symbol="ETHUSDT", price=3000.0))
        assert first.row(r["alert_id"]).status == "queued"
    with serving(tmp_path, symbols=("BTC/USDT", "ETH/USDT")) as second:
        row = wait_for(lambda: (x := second.row(r["alert_id"])).status in ("done", "failed") and x,
                       what="the resumed alert's cycle")
        assert row.status == "done", row.detail


def test_with_the_schedule_the_first_tick_runs_the_last_close_s_cycle_and_health_shows_the_next_fire(tmp_path):
    from agent.scheduler import candle_trigger

    with serving(tmp_path, schedule=True, symbols=("BTC/USDT",)) as s:
        s.service.worker.start_schedule(candle_trigger(3600, 30))  # a tick now (catch-up), then hourly at :00:30
        ran = wait_for(lambda: s.service.worker.last, what="the first scheduled cycle")
        close = s.service.runner.market_data().candles("BTC/USDT", 2**62).last_close_time
        assert (ran.kind, ran.cycle_id) == ("scheduled", cycle_id_for("paper", close))
        health = get(s.port, "/health").body
        assert health["schedule"] is True and health["last_cycle"]["kind"] == "scheduled"
        fire = health["next_scheduled_ms"]
        assert fire % 3_600_000 == 30_000 and 0 < fire - int(time.time() * 1000) <= 3_600_000
