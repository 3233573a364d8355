"""The store: real SQLite in WAL mode, one transaction per decision, replays that record nothing twice."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
from sqlalchemy.exc import IntegrityError

from agent.brokers.base import AccountSnapshot, ClosedTrade, Fill
from agent.brokers.paper import PaperBroker
from agent.store import RowValues, Store, StoreError, StoreSettings, order_row
from agent.store.tables import (
    BreakerEventRow,
    ClosedTradeRow,
    CycleRow,
    DecisionRow,
    FillRow,
    GateDecisionRow,
    SignalRow,
)
from tests.test_paper_broker import T0, H, intent

ACCOUNT = AccountSnapshot(time_ms=T0, cash=10_000, balance=10_000, equity=10_000, positions_value=0,
                          floating_pnl=0, initial_balance=10_000)


@pytest.fixture
def store(tmp_path):
    s = Store.at(tmp_path / "data" / "store.sqlite")
    yield s
    s.close()


def cycle(store: Store, cycle_id: str = "paper@t1") -> CycleRow:
    return store.start_cycle(CycleRow(cycle_id=cycle_id, run="paper", decision_ms=T0, started_ms=T0, status="running",
                                      broker="paper", provider="heuristic:rules", symbols_json="[]"))


def decision(decision_id: str = "paper@t1/X/USDT", outcome: str = "hold", **kw) -> DecisionRow:
    return DecisionRow(decision_id=decision_id, cycle_id="paper@t1", symbol="X/USDT", decision_ms=T0,
                       outcome=outcome, created_ms=T0, **kw)


def signal(decision_id: str = "paper@t1/X/USDT") -> SignalRow:
    return SignalRow(decision_id=decision_id, cycle_id="paper@t1", symbol="X/USDT", direction="HOLD", confidence=0,
                     horizon_hours=1, reasoning="r", theories_json="[]", prompt_variant="baseline",
                     prompt_version="1", prompt_hash="h", llm_used=False)


def test_sqlite_store_is_created_in_its_folder_in_wal_mode(tmp_path, store):
    path = tmp_path / "data" / "store.sqlite"
    assert path.is_file()
    with sqlite3.connect(path) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_default_url_is_the_sqlite_file_in_the_data_directory(tmp_path):
    assert StoreSettings().resolved_url(tmp_path) == f"sqlite:///{tmp_path}/signal_agent.sqlite"
    assert StoreSettings(url="postgresql+psycopg://u:p@h/db").resolved_url(tmp_path) == "postgresql+psycopg://u:p@h/db"


def test_a_decision_is_written_whole_or_not_at_all(store):
    cycle(store)
    bad = signal()
    bad.reasoning = None  # NOT NULL: the transaction must fail after the decision row was flushed
    with pytest.raises(IntegrityError):
        store.record_decision([decision(), bad], {"breakers:paper": {"x": 1}}, "paper@t1", T0)
    assert store.rows(DecisionRow) == [] and store.rows(SignalRow) == []
    assert store.state("breakers:paper") is None
    store.record_decision([decision(), signal()], {"breakers:paper": {"x": 1}}, "paper@t1", T0)
    assert len(store.rows(DecisionRow)) == 1 and store.state("breakers:paper") == {"x": 1}


def test_a_decision_cannot_be_recorded_twice(store):
    cycle(store)
    store.record_decision([decision()], {}, "paper@t1", T0)
    with pytest.raises(StoreError, match="already stored"):
        store.record_decision([decision()], {}, "paper@t1", T0)
    assert store.decided_symbols("paper@t1") == {"X/USDT"}


def test_rows_of_a_decision_need_their_cycle(store):
    with pytest.raises(IntegrityError):  # foreign keys are on: no orphan decision
        store.record_decision([decision()], {}, "paper@t1", T0)


def test_restarting_a_cycle_counts_the_attempt(store):
    assert cycle(store).attempts == 1
    assert cycle(store).attempts == 2
    store.finish_cycle("paper@t1", T0 + 1, ACCOUNT)
    assert cycle(store).status == "completed"


def test_a_replayed_sync_records_fills_and_trades_once(store):
    cycle(store)
    b = PaperBroker()
    order = b.submit(intent(decision="paper@t1/X/USDT"), T0 + H)
    store.record_decision([decision(outcome="ordered"), order_row(order, "paper")], {}, "paper@t1", T0)
    fill = Fill(fill_id=f"{order.client_order_id}:entry", client_order_id=order.client_order_id, symbol="X/USDT",
                action="open", side="LONG", quantity=1, price=100, fee=0.1, time_ms=T0 + H)
    trade = ClosedTrade(client_order_id=order.client_order_id, decision_id="paper@t1/X/USDT", symbol="X/USDT",
                        side="LONG", quantity=1, entry=100, exit=110, opened_ms=T0 + H, closed_ms=T0 + 3 * H,
                        exit_reason="target", fees=0.2, pnl=9.8, risk_amount=5, r_multiple=1.96, outcome="win")
    for _ in range(2):
        store.record_sync("paper@t1", "paper", T0 + 3 * H, [fill], [trade], [], [], ACCOUNT, {"broker:paper": {}})
    assert len(store.rows(FillRow)) == 1 and len(store.rows(ClosedTradeRow)) == 1
    assert store.rows(FillRow)[0].decision_id == "paper@t1/X/USDT"


def test_trade_history_counts_wins_and_losses_by_variant_symbol_and_regime(store):
    cycle(store)
    for i, (sym, regime, r) in enumerate([("A/USDT", "bull trend", 1.5), ("A/USDT", "bear trend", -1.0),
                                          ("B/USDT", "bull trend", -1.0), ("B/USDT", "bull trend", 0.0)]):
        did = f"paper@t1/{sym}#{i}"
        b = PaperBroker()
        order = b.submit(intent(decision=did), T0 + H)
        store.record_decision([decision(did, outcome="ordered", regime=regime, variant="v"),
                               order_row(order, "paper")], {}, "paper@t1", T0)
        t = ClosedTrade(client_order_id=order.client_order_id, decision_id=did, symbol=sym, side="LONG", quantity=1,
                        entry=100, exit=100 + 5 * r, opened_ms=T0, closed_ms=T0 + i, exit_reason="target", fees=0,
                        pnl=5 * r, risk_amount=5, r_multiple=r, outcome="win" if r > 0 else "loss")
        store.record_sync("paper@t1", "paper", T0, [], [t], [], [], ACCOUNT, {})
    h = store.trade_history("v", "B/USDT", "bull trend")
    assert (h.variant.wins, h.variant.losses) == (1, 3)
    assert (h.symbol.wins, h.symbol.losses) == (0, 2)  # a 0 R trade is a loss, as risk.inputs.WinCount says
    assert (h.regime.wins, h.regime.losses) == (1, 2)
    assert store.trade_history("other", "B/USDT", None).variant.n == 0
    assert store.recent_outcomes("A/USDT") == [1.5, -1.0]


def test_unusable_url_is_a_store_error_that_does_not_print_the_password():
    with pytest.raises(StoreError) as err:
        Store("nosuchdialect://user:hunter2@127.0.0.1/db")
    assert "hunter2" not in str(err.value)


def test_a_fill_of_an_order_the_store_does_not_know_is_recorded_as_a_mismatch(store):
    from agent.store.tables import MismatchRow

    cycle(store)
    fill = Fill(fill_id="sa1:entry", client_order_id="sa1", symbol="X/USDT", action="open", side="LONG",
                quantity=1, price=100, fee=0.1, time_ms=T0 + H)
    store.record_sync("paper@t1", "paper", T0 + H, [fill], [], [], [], ACCOUNT, {})
    assert store.rows(FillRow) == []
    (m,) = store.rows(MismatchRow)
    assert (m.kind, m.client_order_id) == ("fill_of_unknown_order", "sa1")


def _columns(path, table: str) -> list[dict]:
    """Rows as SQLite holds them: every value with its storage type, so an INTEGER stored for a REAL shows."""
    with sqlite3.connect(path) as con:
        names = [r[1] for r in con.execute(f"PRAGMA table_info({table})")]
        quoted = [f'"{n}"' for n in names]  # "limit" is a column name
        got = con.execute(f"SELECT {', '.join(f'typeof({q}), {q}' for q in quoted)} FROM {table} ORDER BY rowid")
        return [{n: (row[2 * i], row[2 * i + 1]) for i, n in enumerate(names)} for row in got]


def test_rows_given_as_values_are_stored_exactly_as_orm_rows(tmp_path):
    # the per-decision path inserts column values on the driver's cursor: the stored bytes and types
    # must be the ORM insert's, numpy numbers, defaults, booleans and autoincrement keys included
    decision_values = {"decision_id": "paper@t1/X/USDT", "cycle_id": "paper@t1", "symbol": "X/USDT",
                       "decision_ms": T0, "outcome": "hold", "created_ms": T0}
    signal_values = {"decision_id": "paper@t1/X/USDT", "cycle_id": "paper@t1", "symbol": "X/USDT",
                     "direction": "LONG", "confidence": np.float64(0.25), "entry": 100, "stop": np.float64(99.5),
                     "target": 102, "horizon_hours": np.int64(6), "reasoning": "r", "theories_json": "[]",
                     "prompt_variant": "baseline", "prompt_version": "1", "prompt_hash": "h", "llm_used": True}
    breaker_values = {"cycle_id": "paper@t1", "decision_id": "paper@t1/X/USDT", "breaker": "daily", "kind": "tripped",
                      "at_ms": T0, "loss": 12, "limit": np.float64(500.0), "reference_balance": None, "id": None}
    stored = []
    for name, as_values in (("orm", False), ("values", True)):
        path = tmp_path / name / "store.sqlite"
        s = Store.at(path)
        cycle(s)
        rows = [(DecisionRow, decision_values), (SignalRow, signal_values), (BreakerEventRow, breaker_values)]
        s.record_decision([RowValues(t, v) if as_values else t(**v) for t, v in rows], {"k": {"b": [1.5, 2]}},
                          "paper@t1", T0)
        stored.append({t: _columns(path, t) for t in ("decisions", "signals", "breaker_events", "agent_state")})
        s.close()
    assert stored[0] == stored[1]
    assert stored[1]["signals"][0]["horizon_hours"] == ("real", 6.0)
    assert stored[1]["breaker_events"][0]["note"] == ("text", "") and stored[1]["breaker_events"][0]["id"][1] == 1


def test_a_decision_given_as_values_is_written_whole_or_not_at_all(store):
    cycle(store)
    good = RowValues(DecisionRow, {"decision_id": "paper@t1/X/USDT", "cycle_id": "paper@t1", "symbol": "X/USDT",
                                   "decision_ms": T0, "outcome": "hold", "created_ms": T0})
    bad = RowValues(SignalRow, {**signal().model_dump(), "reasoning": None})  # NOT NULL
    with pytest.raises(IntegrityError):  # the driver's error, raised as SQLAlchemy's
        store.record_decision([good, bad], {"breakers:paper": {"x": 1}}, "paper@t1", T0)
    assert store.rows(DecisionRow) == [] and store.state("breakers:paper") is None
    with pytest.raises(IntegrityError):  # foreign keys are on for this path too
        store.record_decision([RowValues(DecisionRow, {**good.values, "cycle_id": "nope"})], {}, "paper@t1", T0)
    store.record_decision([good], {}, "paper@t1", T0)
    with pytest.raises(StoreError, match="already stored"):
        store.record_decision([good], {}, "paper@t1", T0)


def test_signal_times_finds_the_runs_approved_decisions_in_the_window(store):
    for k in range(3):
        cid = f"paper@t{k}"
        store.start_cycle(CycleRow(cycle_id=cid, run="paper", decision_ms=T0 + k * H, started_ms=T0,
                                   status="running", broker="paper", provider="p", symbols_json="[]"))
        for sym, status in (("A/USDT", "approved"), ("B/USDT", "rejected")):
            did = f"{cid}/{sym}"
            store.record_decision([
                DecisionRow(decision_id=did, cycle_id=cid, symbol=sym, decision_ms=T0 + k * H, outcome="x",
                            created_ms=T0),
                GateDecisionRow(decision_id=did, cycle_id=cid, symbol=sym, status=status, codes="", reasons_json="[]",
                                request_json="{}"),
            ], {}, cid, T0)
    assert store.signal_times("paper", T0, T0 + 2 * H) == [T0 + H, T0 + 2 * H]  # (since, until]
    assert store.signal_times("paper", T0 - 1, T0) == [T0]
    assert store.signal_times("other", T0 - 1, T0 + 2 * H) == []


def test_a_store_made_before_an_index_existed_gets_it_on_open(tmp_path):
    path = tmp_path / "old.sqlite"
    Store.at(path).close()
    with sqlite3.connect(path) as con:
        con.execute("DROP INDEX ix_cycles_run_decision_ms")
    Store.at(path).close()
    with sqlite3.connect(path) as con:
        names = {r[1] for r in con.execute("PRAGMA index_list(cycles)")}
        plan = " ".join(r[3] for r in con.execute(
            "EXPLAIN QUERY PLAN SELECT 1 FROM cycles WHERE run = 'r' AND decision_ms > 1 AND decision_ms <= 2"))
    assert "ix_cycles_run_decision_ms" in names
    assert "ix_cycles_run_decision_ms (run=? AND decision_ms>? AND decision_ms<?)" in plan
