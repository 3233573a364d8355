"""The live broker against a local Binance spot imitation, through the real ccxt client."""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterator
from decimal import Decimal

import ccxt
import numpy as np
import pytest

from agent.brokers.base import BrokerError, OrderIntent, client_order_id
from agent.brokers.live import LiveBroker
from agent.brokers.live_exchange import (
    KEY_ENV,
    SECRET_ENV,
    ExchangeCredentials,
    LiveDisabledError,
    connect_exchange,
    load_credentials,
    require_live_mode,
)
from agent.brokers.live_settings import LiveBrokerSettings, RetryPolicy
from tests.exchange_server import FakeBinance, Fault
from theories.candles import HOUR_MS, Candles

KEY = "kEyTestAbCdEf0123456789SecretApiKeyValue"
SECRET = "sEcReTtEsT9876543210zyxwvutsrqponmlkjihgf"
T0 = 1_790_000_000_000  # decision time, UTC epoch ms
FORBIDDEN = ("withdraw", "transfer", "capital", "/sapi/")


@pytest.fixture
def fake() -> Iterator[FakeBinance]:
    with FakeBinance(KEY, SECRET) as exchange:
        yield exchange
        touched = [p for p in exchange.paths() if any(f in p.lower() for f in FORBIDDEN)]
        assert touched == [], f"the broker reached fund-moving endpoints: {touched}"


def settings(**overrides: object) -> LiveBrokerSettings:
    values: dict[str, object] = {
        # 2 s: no local request takes that long even on a busy CI machine (at 400 ms, one there timed out where
        # the test expected the fault it had injected), while a deliberately late answer (LATE_S) always does
        "enabled": True, "rate_limit": False, "request_timeout_ms": 2_000, "limit_timeout_s": 60,
        "retry": RetryPolicy(max_attempts=4, base_s=0.5, cap_s=4.0),
    }
    values.update(overrides)
    return LiveBrokerSettings.model_validate(values)


LATE_S = 3.0  # an answer this late is lost: the client has timed out (request_timeout_ms above)


def credentials() -> ExchangeCredentials:
    return ExchangeCredentials(api_key=KEY, secret=SECRET)


class Sleeps(list[float]):
    """Records the waits the broker asked for, without waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def broker(fake: FakeBinance, sleeps: Sleeps | None = None, **overrides: object) -> LiveBroker:
    config = settings(**overrides)
    exchange = connect_exchange(config, credentials(), "sandbox", api_base_url=fake.url)
    return LiveBroker(exchange, config, sleep=sleeps if sleeps is not None else Sleeps(), rng=random.Random(7))


def intent(decision: str = "cycle-1:BTC/USDT", entry: float = 49_900.0, quantity: float = 0.01,
           side: str = "LONG") -> OrderIntent:
    long = side == "LONG"
    return OrderIntent(
        decision_id=decision, cycle_id=decision.split(":")[0], client_order_id=client_order_id(decision),
        symbol="BTC/USDT", side=side, quantity=quantity, stop=entry - 900 if long else entry + 900,
        target=entry + 2_000 if long else entry - 2_000, entry_reference=entry, created_ms=T0,
        time_stop_ms=T0 + 24 * HOUR_MS,
    )


def posts(fake: FakeBinance) -> int:
    return sum(1 for r in fake.requests if (r.method, r.path) == ("POST", "/api/v3/order"))


def bars(*rows: tuple[int, float, float, float, float]) -> Candles:
    t, o, h, lo, c = (np.array(col) for col in zip(*rows, strict=True))
    return Candles(t, o, h, lo, c, np.ones(len(rows)), interval_ms=HOUR_MS, symbol="BTC/USDT")


# -- switches, keys and the client ------------------------------------------------------------

def test_live_mode_needs_the_config_and_the_command_line():
    with pytest.raises(LiveDisabledError, match="command line"):
        require_live_mode(settings(enabled=True), cli_live=False)
    with pytest.raises(LiveDisabledError, match="enabled = true"):
        require_live_mode(settings(enabled=False), cli_live=True)
    assert require_live_mode(settings(enabled=True), cli_live=True) == "sandbox"


def test_production_needs_sandbox_off_in_config_and_the_production_flag():
    with pytest.raises(LiveDisabledError, match="production flag"):
        require_live_mode(settings(sandbox=False), cli_live=True)
    with pytest.raises(LiveDisabledError, match="sandbox = true"):
        require_live_mode(settings(sandbox=True), cli_live=True, cli_production=True)
    assert require_live_mode(settings(sandbox=False), cli_live=True, cli_production=True) == "production"


def test_keys_come_from_the_environment_before_the_dotenv_file(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text(f"{KEY_ENV}=from-file-key\n{SECRET_ENV}=from-file-secret\n")
    both = load_credentials(environ={KEY_ENV: "from-env-key"}, env_file=env_file)
    assert both.api_key.get_secret_value() == "from-env-key"
    assert both.secret.get_secret_value() == "from-file-secret"
    assert "from-env-key" not in repr(both) and "from-file-secret" not in str(both)


def test_missing_keys_are_named_without_values(tmp_path):
    with pytest.raises(LiveDisabledError) as error:
        load_credentials(environ={KEY_ENV: "only-the-key"}, env_file=tmp_path / "absent.env")
    assert SECRET_ENV in str(error.value) and "only-the-key" not in str(error.value)


def test_client_uses_the_testnet_in_sandbox_mode_and_the_real_api_only_in_production():
    sandbox = connect_exchange(settings(), credentials(), "sandbox")
    production = connect_exchange(settings(), credentials(), "production")
    assert sandbox.urls["api"]["private"].startswith("https://testnet.binance.vision/")
    assert production.urls["api"]["private"].startswith("https://api")
    assert "testnet" not in production.urls["api"]["private"]


def test_withdrawal_and_transfer_are_refused_by_the_client():
    exchange = connect_exchange(settings(), credentials(), "sandbox")
    for method in ("withdraw", "transfer"):
        with pytest.raises(BrokerError, match="never moves funds"):
            getattr(exchange, method)("USDT", 1.0, "somewhere")


# -- placing orders ---------------------------------------------------------------------------

def test_placed_limit_order_carries_the_decisions_client_id_and_fills_into_a_position(fake):
    live = broker(fake)
    live.start(T0)
    state = live.submit(intent(), T0)
    assert state.status == "open"
    [order] = fake.orders_with_client_id(client_order_id("cycle-1:BTC/USDT"))
    assert (order["side"], order["type"], order["price"], order["origQty"]) == (
        "BUY", "LIMIT", "49900.00000000", "0.01000000")

    fake.set_price("BTCUSDT", "49800")
    report = live.sync(T0 + 60_000, {})
    assert live.order(state.client_order_id).status == "filled"
    [fill] = report.fills
    assert (fill.action, fill.quantity, fill.price) == ("open", 0.01, 49_900.0)
    assert fill.fee == pytest.approx(0.00001 * 49_900)  # 0.1% taken in BTC, valued at the fill price
    [position] = live.positions()
    assert position.quantity == pytest.approx(0.01 - 0.00001)  # what the account really holds
    assert position.entry == 49_900.0


def test_submitting_the_same_decision_again_places_nothing_new(fake):
    live = broker(fake)
    live.start(T0)
    first = live.submit(intent(), T0)
    again = live.submit(intent(), T0 + 1_000)
    assert again == first
    assert posts(fake) == 1


def test_exchange_timeout_after_recording_the_order_then_success_without_duplicate(fake):
    sleeps = Sleeps()
    live = broker(fake, sleeps)
    live.start(T0)
    # The exchange records the order, then answers too late: the client times out.
    fake.inject(Fault("POST", "/api/v3/order", "delay_after", delay_s=LATE_S))
    state = live.submit(intent(), T0)
    assert state.status == "open"
    assert len(fake.orders_with_client_id(state.client_order_id)) == 1
    assert posts(fake) == 1  # the retry looked the id up and found the order
    assert len(sleeps) == 1 and 0 <= sleeps[0] <= 0.5


def test_rate_limit_then_success_places_one_order_after_a_bounded_wait(fake):
    sleeps = Sleeps()
    live = broker(fake, sleeps)
    live.start(T0)
    too_many = '{"code":-1003,"msg":"Too many requests; current limit is 6000 request weight per 1 MINUTE."}'
    fake.inject(Fault("POST", "/api/v3/order", "status", status=429, body=too_many))
    state = live.submit(intent(), T0)
    assert state.status == "open"
    assert posts(fake) == 2  # the refused one and the accepted one
    assert len(fake.orders) == 1
    assert len(sleeps) == 1


def test_exchange_down_is_retried_with_bounded_backoff_then_the_order_is_marked_failed(fake):
    sleeps = Sleeps()
    live = broker(fake, sleeps, retry=RetryPolicy(max_attempts=3, base_s=0.5, cap_s=1.0))
    live.start(T0)
    for _ in range(9):  # every lookup of every try: the broker must never create blindly
        fake.inject(Fault("GET", "/api/v3/order", "status", status=503, body="Service Unavailable"))
    state = live.submit(intent(), T0)
    assert state.status == "failed"
    assert "gave up after 3 tries" in state.message and "ExchangeNotAvailable" in state.message
    assert posts(fake) == 0 and fake.orders == {}
    assert len(sleeps) == 8 and all(0 <= s <= 1.0 for s in sleeps)
    assert live.submit(intent(), T0 + 1) == state  # reported once, not retried behind the caller's back


def test_order_placed_despite_failed_replies_is_marked_uncertain_then_adopted_by_the_next_sync(fake):
    live = broker(fake, retry=RetryPolicy(max_attempts=2, base_s=0.1, cap_s=0.1))
    live.start(T0)
    fake.inject(Fault("GET", "/api/v3/order", "malformed", body="{}"))  # the first lookup proves nothing
    fake.inject(Fault("POST", "/api/v3/order", "delay_after", delay_s=LATE_S))  # placed, answer lost
    state = live.submit(intent(), T0)
    assert state.status == "failed" and "may hold the order" in state.message
    assert len(fake.orders_with_client_id(state.client_order_id)) == 1
    report = live.sync(T0 + 1_000, {})
    assert live.order(state.client_order_id).status == "open"
    assert [o.status for o in report.orders] == ["open"]
    assert posts(fake) == 1


def test_refusal_by_the_exchange_is_not_retried(fake):
    live = broker(fake)
    live.start(T0)
    state = live.submit(intent(quantity=1.0), T0)  # 49,900 USDT with 10,000 on the account
    assert state.status == "rejected"
    assert "InsufficientFunds" in state.message or "insufficient balance" in state.message
    assert posts(fake) == 1


def test_short_and_dust_orders_are_rejected_before_reaching_the_exchange(fake):
    live = broker(fake)
    live.start(T0)
    short = live.submit(intent("cycle-1:short", side="SHORT"), T0)
    dust = live.submit(intent("cycle-1:dust", quantity=0.00005), T0)  # 2.5 USDT, under the 5 USDT minimum
    assert (short.status, dust.status) == ("rejected", "rejected")
    assert "cannot sell short" in short.message and "minimum" in dust.message
    assert posts(fake) == 0


def test_malformed_reply_to_a_new_order_is_looked_up_not_duplicated(fake):
    live = broker(fake)
    live.start(T0)
    fake.inject(Fault("POST", "/api/v3/order", "malformed", body='{"symbol": "BTCUSDT", "orderId": '))
    state = live.submit(intent(), T0)
    assert state.status == "open"
    assert posts(fake) == 1 and len(fake.orders) == 1


def test_malformed_replies_during_sync_are_reported_and_the_next_sync_recovers(fake):
    live = broker(fake)
    live.start(T0)
    state = live.submit(intent(), T0)
    fake.set_price("BTCUSDT", "49800")
    fake.inject(Fault("GET", "/api/v3/openOrders", "malformed", body="<html>502 Bad Gateway</html>"))
    fake.inject(Fault("GET", "/api/v3/order", "malformed", body='{"orderId": 1, "status": 7}'))
    report = live.sync(T0 + 600_000, {})
    kinds = sorted(m.kind for m in report.mismatches)
    assert kinds == ["reconcile_failed", "sync_error"]
    assert live.order(state.client_order_id).status == "open"
    report = live.sync(T0 + 660_000, {})
    assert live.order(state.client_order_id).status == "filled" and len(report.fills) == 1


# -- restarts and reconciliation --------------------------------------------------------------

def test_restart_mid_order_without_saved_state_is_reconciled_without_duplicate(fake):
    first = broker(fake)
    first.start(T0)
    placed = first.submit(intent(), T0)  # ... and the process dies before the store commits

    second = broker(fake)
    mismatches = second.start(T0 + 5_000)
    assert [(m.kind, m.client_order_id) for m in mismatches] == [("unknown_order", placed.client_order_id)]
    resumed = second.submit(intent(), T0 + 5_000)  # the cycle replays the uncommitted decision
    assert resumed.status == "open" and resumed.exchange_order_id == placed.exchange_order_id
    assert posts(fake) == 1
    fake.set_price("BTCUSDT", "49850")
    second.sync(T0 + 3_600_000, {})
    assert second.order(placed.client_order_id).status == "filled"
    assert len(second.positions()) == 1 and posts(fake) == 1


def test_restart_from_saved_state_resumes_the_open_order(fake):
    first = broker(fake)
    first.start(T0)
    placed = first.submit(intent(), T0)
    saved = json.loads(json.dumps(first.export_state()))  # what the store keeps

    second = broker(fake)
    second.load_state(saved)
    assert second.start(T0 + 5_000) == ()
    assert second.submit(intent(), T0 + 5_000) == placed
    fake.set_price("BTCUSDT", "49000")
    report = second.sync(T0 + 10_000, {})
    assert [f.client_order_id for f in report.fills] == [placed.client_order_id]
    assert posts(fake) == 1


def test_position_sold_outside_the_broker_is_reduced_to_what_the_exchange_holds(fake):
    live = broker(fake)
    live.start(T0)
    live.submit(intent(), T0)
    fake.set_price("BTCUSDT", "49800")
    live.sync(T0 + 1_000, {})
    with fake.lock:
        fake.balances["BTC"][0] = Decimal("0.004")  # the person sold part of it by hand
    [mismatch] = live.reconcile(T0 + 2_000)
    assert mismatch.kind == "position" and "0.004" in mismatch.detail
    [position] = live.positions()
    assert position.quantity == pytest.approx(0.004)


# -- limit then market, exits, account ---------------------------------------------------------

def test_unfilled_limit_goes_to_market_after_the_timeout(fake):
    live = broker(fake, limit_timeout_s=60)
    live.start(T0)
    state = live.submit(intent(entry=49_000.0), T0)
    live.sync(T0 + 59_999, {})
    assert live.order(state.client_order_id).status == "open" and posts(fake) == 1
    report = live.sync(T0 + 60_000, {})
    limit = fake.orders_with_client_id(state.client_order_id)[0]
    [market] = fake.orders_with_client_id(state.client_order_id + "m")
    assert limit["status"] == "CANCELED"
    assert (market["type"], market["side"], market["origQty"]) == ("MARKET", "BUY", "0.01000000")
    [fill] = report.fills
    assert fill.price == 50_000.0 and fill.fill_id == f"{state.client_order_id}:m-1"
    assert live.order(state.client_order_id).status == "filled"
    assert live.positions()[0].entry == 50_000.0


def test_partly_filled_limit_sends_only_the_rest_to_market_after_the_timeout(fake):
    live = broker(fake, limit_timeout_s=60)
    live.start(T0)
    state = live.submit(intent(entry=49_900.0), T0)
    fake.fill_partially(state.client_order_id, "0.004")
    first = live.sync(T0 + 30_000, {})
    assert [(f.fill_id, f.quantity, f.price) for f in first.fills] == [(f"{state.client_order_id}:e-1", 0.004, 49_900)]
    assert live.order(state.client_order_id).status == "partially_filled" and live.positions() == ()
    second = live.sync(T0 + 60_000, {})
    [market] = fake.orders_with_client_id(state.client_order_id + "m")
    assert market["origQty"] == "0.00600000"
    assert [(f.quantity, f.price) for f in second.fills] == [(0.006, 50_000.0)]
    done = live.order(state.client_order_id)
    assert done.status == "filled" and done.filled_quantity == pytest.approx(0.01)
    assert done.average_price == pytest.approx((0.004 * 49_900 + 0.006 * 50_000) / 0.01)
    [position] = live.positions()
    assert position.quantity == pytest.approx(0.01 - 0.00001)  # both buys paid 0.1% in BTC
    assert sum(f.fee for f in (*first.fills, *second.fills)) == pytest.approx(0.004 * 0.001 * 49_900
                                                                              + 0.006 * 0.001 * 50_000)


def test_stop_touched_by_a_closed_bar_sells_at_market_and_records_the_trade(fake):
    live = broker(fake)
    live.start(T0)
    state = live.submit(intent(entry=50_000.0), T0)  # marketable: fills at once at 50,000
    live.sync(T0 + 1_000, {})
    [position] = live.positions()
    fake.set_price("BTCUSDT", "49000")
    candles = bars((T0 + HOUR_MS, 50_000, 50_100, 49_050, 49_100), (T0 + 2 * HOUR_MS, 49_100, 49_200, 48_900, 49_000))
    report = live.sync(T0 + 3 * HOUR_MS, {"BTC/USDT": candles})
    [trade] = report.closed
    [sell] = fake.orders_with_client_id(state.client_order_id + "x1")
    assert (sell["side"], sell["type"], sell["origQty"]) == ("SELL", "MARKET", "0.00999000")
    assert trade.exit_reason == "stop" and trade.exit == pytest.approx(49_000.0, rel=1e-12)
    paid = 0.01 * 50_000  # the buy's fee was taken in BTC: 0.00001 BTC less received
    received = 0.00999 * 49_000 * (1 - 0.001)
    assert trade.pnl == pytest.approx(received - paid)
    assert trade.outcome == "loss" and trade.r_multiple == pytest.approx(trade.pnl / (0.00999 * 900))
    assert live.positions() == () and position.client_order_id == trade.client_order_id
    assert live.sync(T0 + 4 * HOUR_MS, {"BTC/USDT": candles}).closed == ()  # closed once


def test_equity_is_cash_plus_marked_positions(fake):
    live = broker(fake)
    live.start(T0)
    live.submit(intent(entry=50_000.0), T0)
    live.sync(T0 + 1_000, {})
    snapshot = live.account(T0 + 1_000, {"BTC/USDT": 51_000.0})
    assert snapshot.cash == pytest.approx(10_000 - 500)
    assert snapshot.equity == pytest.approx(snapshot.cash + 0.00999 * 51_000)
    assert snapshot.initial_balance == 10_000


# -- secrets ------------------------------------------------------------------------------------

def test_keys_never_appear_in_logs_state_reprs_or_errors(fake, caplog):
    caplog.set_level(logging.DEBUG)
    live = broker(fake)
    live.start(T0)
    live.submit(intent(), T0)
    fake.inject(Fault("POST", "/api/v3/order", "status", status=503, body=f"upstream said {KEY} {SECRET}"))
    live.submit(intent("cycle-2:BTC/USDT"), T0)
    wrong = connect_exchange(settings(), ExchangeCredentials(api_key=KEY[::-1], secret=SECRET), "sandbox",
                             api_base_url=fake.url)
    with pytest.raises(ccxt.AuthenticationError) as refused:
        wrong.fetch_balance()
    assert "X-MBX-APIKEY" in caplog.text  # ccxt did log the request headers ...
    seen = [caplog.text, repr(live), json.dumps(live.export_state()), *(o.message for o in live.orders()),
            str(settings()), repr(credentials())]
    for text in seen:  # ... but never a key or the secret
        assert KEY not in text and SECRET not in text and KEY[::-1] not in text
    assert KEY[::-1] not in str(refused.value)


def test_time_stop_sells_at_market_without_any_bar(fake):
    live = broker(fake)
    live.start(T0)
    state = live.submit(intent(entry=50_000.0), T0)
    live.sync(T0 + 1_000, {})
    fake.set_price("BTCUSDT", "50500")
    assert live.sync(T0 + 24 * HOUR_MS - 1, {}).closed == ()
    [trade] = live.sync(T0 + 24 * HOUR_MS, {}).closed
    assert trade.exit_reason == "time_stop" and trade.outcome == "win"
    assert trade.client_order_id == state.client_order_id


def test_refused_exit_is_retried_with_a_new_client_id_at_the_next_sync(fake):
    live = broker(fake)
    live.start(T0)
    state = live.submit(intent(entry=50_000.0), T0)
    live.sync(T0 + 1_000, {})
    fake.set_price("BTCUSDT", "49000")
    refusal = '{"code":-2010,"msg":"Account has insufficient balance for requested action."}'
    fake.inject(Fault("POST", "/api/v3/order", "status", status=400, body=refusal))
    candles = bars((T0 + HOUR_MS, 50_000, 50_100, 48_900, 49_000))
    first = live.sync(T0 + 2 * HOUR_MS, {"BTC/USDT": candles})
    assert first.closed == () and [m.kind for m in first.mismatches] == ["sync_error"]
    assert len(live.positions()) == 1
    [trade] = live.sync(T0 + 2 * HOUR_MS + 60_000, {"BTC/USDT": candles}).closed
    assert trade.exit_reason == "stop"
    assert len(fake.orders_with_client_id(state.client_order_id + "x2")) == 1
    assert fake.orders_with_client_id(state.client_order_id + "x1") == []


def test_cancel_of_a_resting_order_cancels_it_on_the_exchange(fake):
    live = broker(fake)
    live.start(T0)
    state = live.submit(intent(entry=49_000.0), T0)
    cancelled = live.cancel(state.client_order_id, T0 + 1_000)
    assert cancelled.status == "cancelled"
    assert fake.orders_with_client_id(state.client_order_id)[0]["status"] == "CANCELED"
    assert fake.balances["USDT"] == [10_000, 0]  # the locked funds are free again
    with pytest.raises(BrokerError, match="no order"):
        live.cancel("sa-unknown", T0)
