"""Property: whatever the exchange does to a new-order request, a decision is on the exchange at most once."""

from __future__ import annotations

import itertools
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.brokers.live import LiveBroker
from agent.brokers.live_exchange import connect_exchange
from agent.brokers.live_settings import RetryPolicy
from tests.exchange_server import FakeBinance, Fault
from tests.test_live_broker import KEY, SECRET, T0, Sleeps, credentials, intent
from tests.test_live_broker import settings as live_settings

FAULTS = {
    # the request never reaches the book
    "unavailable": lambda method, path: Fault(method, path, "status", status=503, body="Service Unavailable"),
    "rate_limited": lambda method, path: Fault(
        method, path, "status", status=429, body='{"code":-1003,"msg":"Too many requests."}'),
    # the request is handled, the answer is lost or unreadable
    "late": lambda method, path: Fault(method, path, "delay_after", delay_s=0.3),
    "malformed": lambda method, path: Fault(method, path, "malformed", body='{"orderId": '),
}
REQUESTS = [("POST", "/api/v3/order"), ("GET", "/api/v3/order")]


def test_any_sequence_of_exchange_faults_leaves_at_most_one_order_and_a_truthful_status():
    decisions = itertools.count()
    with FakeBinance(KEY, SECRET, balances={"USDT": "1000000", "BTC": "0"}) as fake:
        config = live_settings(request_timeout_ms=200, retry=RetryPolicy(max_attempts=3, base_s=0.1, cap_s=0.5))
        exchange = connect_exchange(config, credentials(), "sandbox", api_base_url=fake.url)
        exchange.load_markets()

        @settings(max_examples=20, deadline=None, derandomize=True)
        @given(st.lists(st.tuples(st.sampled_from(sorted(FAULTS)), st.sampled_from(REQUESTS)), max_size=8))
        def check(faults):
            fake.faults.clear()
            for kind, (method, path) in faults:
                fake.inject(FAULTS[kind](method, path))
            live = LiveBroker(exchange, config, sleep=Sleeps(), rng=random.Random(1))
            order = intent(f"cycle-{next(decisions)}:BTC/USDT")
            state = live.submit(order, T0)
            on_exchange = fake.orders_with_client_id(order.client_order_id)
            assert len(on_exchange) <= 1
            assert state.status in ("open", "failed")
            if state.status == "open":
                assert state.exchange_order_id == str(on_exchange[0]["orderId"])
            elif on_exchange:  # the tries ran out after a request that did place it: said so ...
                assert "may hold the order" in state.message
            fake.faults.clear()
            live.sync(T0 + 1_000, {})  # ... and the next sync adopts what the exchange holds
            synced = live.order(order.client_order_id)
            assert (synced.status == "open") == (len(on_exchange) == 1), (synced, faults)
            assert len(fake.orders_with_client_id(order.client_order_id)) == len(on_exchange)

        check()
        assert not [p for p in fake.paths() if "withdraw" in p or "transfer" in p or "/sapi/" in p]
