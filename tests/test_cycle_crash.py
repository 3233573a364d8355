"""A cycle killed with SIGKILL at random points never leaves a partial decision or a duplicate order.

A child process (forked from the test, so it starts with the model fits already made and the
kill lands among the cycle's own work, not in imports) runs a few hourly paper cycles against
a SQLite store and is `kill -9`ed at a random moment (seeded, so a failure reproduces). After
each kill the store is checked; the next child resumes; at the end the store must equal an
uninterrupted run's, order for order and fill for fill. To make the dangerous moments likely
targets, the child (test code, not the product) sleeps a little inside each commit and after
each broker submit: an order the broker holds but the store has not committed is exactly the
state that a crash must not turn into a duplicate.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time

from sqlalchemy import event

from agent.brokers.paper import PaperBroker
from agent.cycle import FileMarketData, broker_key, run_cycle
from agent.llm.records import CallRecords
from agent.store import Store
from agent.store.tables import (
    ClosedTradeRow,
    CycleRow,
    DecisionRow,
    FillRow,
    GateDecisionRow,
    OrderRow,
    PositionRow,
    SignalRow,
    SnapshotRow,
)
from tests.test_cycle import HOURS, SHARED_FITS, make_deps
from theories.base import FitCache

CRASH_HOURS = HOURS[:6]  # 13:00 .. 18:00: orders, fills and closed trades happen in these
KILLS = 6
COMMIT_WAIT = 0.05  # seconds each commit of the child waits first (see `_child`)


def _child(store_path: str, calls_path: str, cache: FitCache) -> None:
    real_submit = PaperBroker.submit

    def slow_submit(self, intent, now_ms):
        state = real_submit(self, intent, now_ms)
        time.sleep(0.05)
        return state

    PaperBroker.submit = slow_submit
    store, records = Store.at(store_path), CallRecords(calls_path)
    # every commit of the store, through an ORM session or a plain connection, waits a little first
    # (0.05 s: the product's own work is now a small part of a cycle, so these waits set the child's
    # pace, about 4 s for the six cycles, and most kills, within 1.5 s of a start, land mid-run)
    event.listen(store.engine, "commit", lambda _conn: time.sleep(COMMIT_WAIT))
    deps = make_deps(store, records, FileMarketData(), cache)
    for h in CRASH_HOURS:
        run_cycle(h, deps)
    store.close()
    records.close()


def _run_child(store_path, calls_path, cache, kill_after: float | None) -> str:
    proc = multiprocessing.get_context("fork").Process(target=_child, args=(str(store_path), str(calls_path), cache))
    proc.start()
    try:
        if kill_after is None:
            proc.join(timeout=60)
            assert proc.exitcode == 0, f"the resuming run failed with exit code {proc.exitcode}"
            return "done"
        proc.join(timeout=kill_after)
        if proc.exitcode is not None:
            return "finished before the kill"
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(timeout=10)
        assert proc.exitcode == -signal.SIGKILL
        return "killed"
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=10)


def assert_no_partial_decision(store: Store) -> None:
    for d in store.rows(DecisionRow):
        if d.outcome in ("skipped", "error"):
            continue
        for table in (SnapshotRow, SignalRow, GateDecisionRow):
            assert len(store.rows(table, decision_id=d.decision_id)) == 1, (table.__tablename__, d.decision_id)
        orders = store.rows(OrderRow, decision_id=d.decision_id)
        assert len(orders) == (1 if d.outcome == "ordered" else 0), d.decision_id
    for table in (SnapshotRow, SignalRow, GateDecisionRow, OrderRow):
        for row in store.rows(table):
            assert store.rows(DecisionRow, decision_id=row.decision_id), f"orphan {table.__tablename__} row"
    saved = store.state(broker_key("paper"))
    if saved is not None:  # the broker's memory and the store agree on every order
        broker = PaperBroker()
        broker.load_state(saved)
        assert {o.client_order_id for o in broker.orders()} == {o.client_order_id for o in store.rows(OrderRow)}


def summary(store: Store):
    return (
        [(d.decision_id, d.outcome, d.reason) for d in store.rows(DecisionRow)],
        [(o.client_order_id, o.quantity, o.status, o.average_price) for o in store.rows(OrderRow)],
        [(f.fill_id, f.price, f.quantity) for f in store.rows(FillRow)],
        [(t.client_order_id, round(t.pnl, 9)) for t in store.rows(ClosedTradeRow)],
        [(p.client_order_id, p.quantity) for p in store.rows(PositionRow)],
    )


def test_kill_9_at_random_points_never_leaves_a_partial_decision_or_duplicate_order(tmp_path):
    cache = SHARED_FITS
    reference = Store.at(tmp_path / "reference.sqlite")
    records = CallRecords(tmp_path / "reference-calls.sqlite")
    deps = make_deps(reference, records, FileMarketData(), cache)
    for h in CRASH_HOURS:  # the uninterrupted run; it also makes the fits the children inherit
        run_cycle(h, deps)
    assert summary(reference)[1], "the reference run should place orders, or this test proves little"
    assert summary(reference)[3], "... and close a trade"

    store_path, calls_path = tmp_path / "store.sqlite", tmp_path / "calls.sqlite"
    rng = random.Random(7)
    outcomes = []
    for _ in range(KILLS):
        outcomes.append(_run_child(store_path, calls_path, cache, kill_after=rng.uniform(0.05, 1.5)))
        store = Store.at(store_path)
        assert_no_partial_decision(store)
        store.close()
    assert outcomes.count("killed") >= KILLS // 2, outcomes
    assert _run_child(store_path, calls_path, cache, kill_after=None) == "done"

    crashed = Store.at(store_path)
    assert_no_partial_decision(crashed)
    assert {c.status for c in crashed.rows(CycleRow)} == {"completed"}
    attempts = {c.cycle_id: c.attempts for c in crashed.rows(CycleRow)}
    print(outcomes, attempts)
    assert any(n > 1 for n in attempts.values()), "no kill landed inside a cycle"
    assert summary(crashed) == summary(reference)
    crashed.close()
    reference.close()
    records.close()
