"""The store: real SQLite in WAL mode, one transaction per decision, replays that record nothing twice."""

from __future__ import annotations

import json
import sqlite3
import threading
from contextlib import nullcontext

import numpy as np
import pytest
from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from agent.brokers.base import AccountSnapshot, ClosedTrade, Fill, Mismatch
from agent.brokers.paper import PaperBroker, PaperSettings
from agent.store import RowValues, Store, StoreError, StoreSettings, order_row
from agent.store.tables import (
    TABLES,
    AccountSnapshotRow,
    BreakerEventRow,
    ClosedTradeRow,
    CycleRow,
    DecisionCallRow,
    DecisionRow,
    FillRow,
    GateDecisionRow,
    MismatchRow,
    OrderRow,
    PositionRow,
    SignalRow,
    StateRow,
)
from tests.test_paper_broker import T0, H, bars, intent

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
    return DecisionRow(**{"decision_id": decision_id, "cycle_id": "paper@t1", "symbol": "X/USDT", "decision_ms": T0,
                          "outcome": outcome, "created_ms": T0, **kw})


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


# --- the per-cycle writes on compiled statements write what the ORM session wrote ----------------------


def _orm_start_cycle(store: Store, row: CycleRow) -> CycleRow:
    with store.session() as s:
        found = s.get(CycleRow, row.cycle_id)
        if found is None:
            s.add(row)
            found = row
        elif found.status != "completed":
            found.attempts += 1
            s.add(found)
        s.commit()
        s.refresh(found)
        return found


def _orm_finish_cycle(store: Store, cycle_id: str, finished_ms: int, account: AccountSnapshot) -> None:
    with store.session() as s:
        row = s.get(CycleRow, cycle_id)
        row.status, row.finished_ms = "completed", finished_ms
        s.add(row)
        s.add(AccountSnapshotRow(cycle_id=cycle_id, stage="end", **account.model_dump()))
        s.commit()


def _orm_record_sync(store: Store, cycle_id, run, now_ms, fills, closed, orders, positions, account, states,
                     mismatches) -> None:
    """The sync as an ORM session wrote it (the reference the compiled statements must match)."""
    with store.session() as s:
        for o in orders:
            row = s.get(OrderRow, o.client_order_id)
            if row is not None:
                row.status, row.filled_quantity, row.average_price = o.status, o.filled_quantity, o.average_price
                row.exchange_order_id, row.updated_ms, row.message = o.exchange_order_id, o.updated_ms, o.message
                s.add(row)
        s.flush()
        for f in fills:
            if s.get(FillRow, f.fill_id) is None:
                order = s.get(OrderRow, f.client_order_id)
                if order is None:
                    s.add(MismatchRow(cycle_id=cycle_id, time_ms=f.time_ms, kind="fill_of_unknown_order",
                                      client_order_id=f.client_order_id, symbol=f.symbol,
                                      detail=f"fill {f.model_dump_json()}"))
                    continue
                s.add(FillRow(cycle_id=cycle_id, decision_id=order.decision_id, **f.model_dump()))
        for t in closed:
            if s.get(ClosedTradeRow, t.client_order_id) is None:
                if s.get(OrderRow, t.client_order_id) is None:
                    s.add(MismatchRow(cycle_id=cycle_id, time_ms=t.closed_ms, kind="trade_of_unknown_order",
                                      client_order_id=t.client_order_id, symbol=t.symbol,
                                      detail=f"closed trade {t.model_dump_json()}"))
                    continue
                d = s.get(DecisionRow, t.decision_id)
                s.add(ClosedTradeRow(cycle_id=cycle_id, regime=d.regime if d else None,
                                     variant=d.variant if d else "", **t.model_dump()))
        for m in mismatches:
            s.add(MismatchRow(cycle_id=cycle_id, **m.model_dump()))
        known = (select(OrderRow.client_order_id).join(CycleRow, CycleRow.cycle_id == OrderRow.cycle_id)
                 .where(CycleRow.run == run))
        s.exec(delete(PositionRow).where(PositionRow.client_order_id.in_(known)))
        for p in positions:
            if s.get(OrderRow, p.client_order_id) is None:
                s.add(MismatchRow(cycle_id=cycle_id, time_ms=now_ms, kind="position_of_unknown_order",
                                  client_order_id=p.client_order_id, symbol=p.symbol,
                                  detail=f"position {p.model_dump_json()}"))
                continue
            s.add(PositionRow(
                client_order_id=p.client_order_id, decision_id=p.decision_id, cycle_id=cycle_id, symbol=p.symbol,
                side=p.side, quantity=p.quantity, entry=p.entry, stop=p.stop, target=p.target, mark=p.mark,
                floating_pnl=p.floating_pnl, opened_ms=p.opened_ms, time_stop_ms=p.time_stop_ms, updated_ms=now_ms))
        s.add(AccountSnapshotRow(cycle_id=cycle_id, stage="sync", **account.model_dump()))
        for key, value in states.items():
            row = s.get(StateRow, key) or StateRow(key=key, value_json="", cycle_id=cycle_id, updated_ms=now_ms)
            row.value_json, row.cycle_id, row.updated_ms = json.dumps(value, sort_keys=True), cycle_id, now_ms
            s.add(row)
        s.commit()


def test_cycle_writes_store_exactly_what_the_orm_session_stored(tmp_path):
    # two cycles of a paper account: orders updated, filled, one closed at its target, one left open, a
    # fill and a position of an order the store does not know, a broker mismatch, a sync replayed, a
    # cycle restarted; the same calls through the Store and through an ORM session must store the same
    # rows, values, storage types and row order
    broker = PaperBroker(PaperSettings(taker_fee=0.001, slippage=0.0005, break_even_trigger=None))
    decisions = {"paper@t1/X/USDT#1": 110.0, "paper@t1/X/USDT#2": 100.4, "paper@t1/X/USDT#3": 120.0}
    orders = [broker.submit(intent(decision=d, target=target).model_copy(update={"cycle_id": "paper@t1"}), T0 + H)
              for d, target in decisions.items()]
    candles = bars([(100.0, 100.5, 99.5, 100.0), (100.0, 100.3, 99.8, 100.1), (100.1, 100.6, 99.9, 100.2)])
    report = broker.sync(candles.last_close_time, {"X/USDT": candles})
    positions, account = broker.positions(), broker.account(candles.last_close_time)
    assert report.fills and report.closed and positions and report.orders  # the scenario covers every kind
    stray = Mismatch(time_ms=T0, kind="quantity", client_order_id=orders[0].client_order_id, symbol="X/USDT",
                     detail="exchange says 0.9")
    stored = []
    for name in ("fast", "orm"):
        path = tmp_path / name / "store.sqlite"
        s = Store.at(path)
        start = s.start_cycle if name == "fast" else lambda row, s=s: _orm_start_cycle(s, row)
        sync = s.record_sync if name == "fast" else lambda *a, s=s: _orm_record_sync(s, *a)
        finish = s.finish_cycle if name == "fast" else lambda *a, s=s: _orm_finish_cycle(s, *a)
        returned = [start(CycleRow(cycle_id="paper@t1", run="paper", decision_ms=T0, started_ms=T0 + 5,
                                   status="running", broker="paper", provider="p", symbols_json="[]"))]
        for order in orders[:2]:  # the third order's decision is not in this store
            s.record_decision([decision(order.intent.decision_id, outcome="ordered", regime="bull", variant="v"),
                               order_row(order, "paper")], {"broker:paper": {"n": 1}}, "paper@t1", T0)
        returned.append(start(CycleRow(cycle_id="paper@t1", run="paper", decision_ms=T0, started_ms=T0 + 9,
                                       status="running", broker="paper", provider="p", symbols_json="[]")))
        for _ in range(2):  # replayed after a crash: nothing twice
            sync("paper@t1", "paper", T0 + 3 * H, report.fills, report.closed, report.orders, positions, account,
                 {"broker:paper": broker.export_state(), "breakers:paper": {"b": 1.5}}, [stray])
        finish("paper@t1", T0 + 3 * H + 1, account)
        returned.append(start(CycleRow(cycle_id="paper@t2", run="paper", decision_ms=T0 + H, started_ms=T0 + H,
                                       status="running", broker="paper", provider="p", symbols_json="[]")))
        sync("paper@t2", "paper", T0 + 4 * H, [], [], [], positions, account, {"broker:paper": {"n": 2}}, [])
        finish("paper@t2", T0 + 4 * H + 1, account)
        returned.append(start(CycleRow(cycle_id="paper@t2", run="paper", decision_ms=T0 + H, started_ms=T0 + H,
                                       status="running", broker="paper", provider="p", symbols_json="[]")))
        stored.append(({t.__tablename__: _columns(path, t.__tablename__) for t in TABLES},
                       [r.model_dump() for r in returned], s.cycle("paper@t1").model_dump()))
        s.close()
    assert stored[0] == stored[1]
    tables = stored[0][0]
    assert [r[1] for r in tables["cycles"][0].items() if r[0] == "attempts"] == [("integer", 2)]
    assert {r["kind"][1] for r in tables["broker_mismatches"]} >= {"fill_of_unknown_order", "quantity",
                                                                    "position_of_unknown_order"}
    assert tables["fills"] and tables["closed_trades"] and tables["positions"]
    assert stored[0][1][1]["attempts"] == 2 and stored[0][1][3]["status"] == "completed"


def test_a_store_used_from_another_thread_reads_and_writes_on_its_own_connection(store):
    # the connection the first thread keeps is never shared: another thread gets a pooled one
    cycle(store)
    seen = {}

    def other() -> None:
        store.record_decision([decision()], {"breakers:paper": {"x": 2}}, "paper@t1", T0)
        seen["state"] = store.state("breakers:paper")

    worker = threading.Thread(target=other)
    worker.start()
    worker.join()
    assert seen["state"] == {"x": 2} and store.state("breakers:paper") == {"x": 2}
    assert store.decided_symbols("paper@t1") == {"X/USDT"}


def test_a_failed_write_leaves_the_kept_connection_usable(store):
    cycle(store)
    with pytest.raises(StoreError, match="no cycle"):
        store.finish_cycle("paper@nope", T0, ACCOUNT)
    with pytest.raises(IntegrityError):
        store.record_decision([decision("paper@nope/X/USDT", cycle_id="paper@nope")], {}, "paper@t1", T0)
    store.finish_cycle("paper@t1", T0 + 1, ACCOUNT)
    assert store.cycle("paper@t1").status == "completed" and len(store.rows(AccountSnapshotRow)) == 1


def _closed_trade(store: Store, did: str, r: float, closed_ms: int) -> ClosedTrade:
    """An order for `did` stored (with its decision) and the trade it closes, not yet stored."""
    order = PaperBroker().submit(intent(decision=did), T0 + H)
    store.record_decision([decision(did, outcome="ordered", regime="bull", variant="v"), order_row(order, "paper")],
                          {}, "paper@t1", T0)
    return ClosedTrade(client_order_id=order.client_order_id, decision_id=did, symbol="X/USDT", side="LONG",
                       quantity=1, entry=100, exit=100 + 5 * r, opened_ms=T0, closed_ms=closed_ms,
                       exit_reason="target", fees=0, pnl=5 * r, risk_amount=5, r_multiple=r,
                       outcome="win" if r > 0 else "loss")


def test_closed_trade_reads_see_every_new_trade_whoever_stored_it(tmp_path):
    # trade_history and recent_outcomes keep their answers while the closed trades cannot have changed:
    # a trade stored by this Store's sync, by a decision's own rows, or by another Store on the same
    # file (another process, the manual broker's answer) must show at the next read
    path = tmp_path / "store.sqlite"
    store, other = Store.at(path), Store.at(path)
    cycle(store)

    def seen() -> tuple:
        h = store.trade_history("v", "X/USDT", "bull")
        return (h.variant.wins, h.variant.losses, h.symbol.n, h.regime.n), store.recent_outcomes("X/USDT")

    assert seen() == ((0, 0, 0, 0), [])
    t1 = _closed_trade(store, "paper@t1/X/USDT#1", 1.5, T0 + 1)
    assert seen() == ((0, 0, 0, 0), [])  # an order is not a closed trade
    store.record_sync("paper@t1", "paper", T0, [], [t1], [], [], ACCOUNT, {})
    assert seen() == ((1, 0, 1, 1), [1.5])
    t2 = _closed_trade(other, "paper@t1/X/USDT#2", -1.0, T0 + 2)
    other.record_sync("paper@t1", "paper", T0, [], [t2], [], [], ACCOUNT, {})
    assert seen() == ((1, 1, 2, 2), [1.5, -1.0])
    t3 = _closed_trade(store, "paper@t1/X/USDT#3", 0.5, T0 + 3)
    store.record_decision([decision("paper@t1/X/USDT#4"),
                           ClosedTradeRow(cycle_id="paper@t1", regime="bull", variant="v", **t3.model_dump())],
                          {}, "paper@t1", T0)
    assert seen() == ((2, 1, 3, 3), [1.5, -1.0, 0.5])
    with other.session() as s:  # any other writer, even outside the Store's methods
        s.exec(delete(ClosedTradeRow).where(ClosedTradeRow.r_multiple < 0))
        s.commit()
    assert seen() == ((2, 0, 2, 2), [1.5, 0.5])
    store.close()
    other.close()


def _state_rows(path) -> list[tuple]:
    with sqlite3.connect(path) as con:
        return con.execute("SELECT key, value_json, cycle_id, updated_ms FROM agent_state ORDER BY key").fetchall()


def _state_writes(store: Store) -> list[str]:
    """The statements on the store's kept connection that write agent_state, from now on."""
    seen: list[str] = []
    store.cycle("paper@t1")  # the kept connection exists from the first call
    store._held.connection.dbapi_connection.set_trace_callback(
        lambda sql: seen.append(sql) if "agent_state" in sql and not sql.startswith("SELECT") else None)
    return seen


def test_state_rows_already_stored_are_not_written_again_and_the_rows_are_the_same(tmp_path, monkeypatch):
    # a decision writes the breakers and the broker's memory: those of every decision of a cycle mostly
    # repeat (same values, same cycle, same time) and are skipped; the stored rows must be exactly the
    # ones of a store that writes every time, whatever else wrote to the file in between
    def calls(store: Store, other: Store) -> list:
        cycle(store)
        cycle(store, "paper@t2")
        def decide(by: Store, did: str, states: dict, cycle_id: str = "paper@t1", at: int = T0):
            return lambda: by.record_decision([decision(did, cycle_id=cycle_id)], states, cycle_id, at)

        both = {"breakers:paper": {"x": 1}, "broker:paper": {"o": [1]}}
        moved = {"breakers:paper": {"x": 1}, "broker:paper": {"o": [2]}}
        acts = [
            lambda: store.record_sync("paper@t1", "paper", T0, [], [], [], [], ACCOUNT, {"broker:paper": {"o": [1]}}),
            decide(store, "paper@t1/A", both),
            decide(store, "paper@t1/B", both),
            decide(store, "paper@t1/C", moved),
            decide(other, "paper@t1/D", {"breakers:paper": {"x": 9}}),  # another Store on the file changes a row
            decide(store, "paper@t1/E", moved),  # the same values must go to the store again
            decide(store, "paper@t2/A", moved, "paper@t2", T0 + H),  # a new cycle: new cycle id and time
        ]
        rows = []
        for act in acts:
            act()
            rows.append(_state_rows(store.url.removeprefix("sqlite:///")))
        return rows

    plain_dir, kept_dir = tmp_path / "plain", tmp_path / "kept"
    kept, kept_other = Store.at(kept_dir / "s.sqlite"), Store.at(kept_dir / "s.sqlite")
    writes = _state_writes(kept)
    with_skips = calls(kept, kept_other)
    monkeypatch.setattr(Store, "_kept_is_current", lambda self, conn: False)  # nothing known: every row written
    plain, plain_other = Store.at(plain_dir / "s.sqlite"), Store.at(plain_dir / "s.sqlite")
    assert calls(plain, plain_other) == with_skips
    # statements: a new key is an UPDATE and an INSERT; the sync 2, A 2 (the new breakers; the memory as
    # stored), B 0, C 1 (the memory), E 2 (after another Store's commit nothing is known), t2 2
    assert len(writes) == 2 + 2 + 0 + 1 + 2 + 2
    assert with_skips[-1] == [("breakers:paper", '{"x": 1}', "paper@t2", T0 + H),
                              ("broker:paper", '{"o": [2]}', "paper@t2", T0 + H)]
    for s in (kept, kept_other, plain, plain_other):
        s.close()


def test_a_failed_decision_forgets_the_state_rows_it_knew(store):
    # a state row written in a transaction that rolled back is not stored: it must be written again
    cycle(store)
    writes = _state_writes(store)
    store.record_decision([decision("paper@t1/A")], {"breakers:paper": {"x": 1}}, "paper@t1", T0)
    bad = signal("paper@t1/B")
    bad.reasoning = None  # NOT NULL: fails after the decision row, before the state
    with pytest.raises(IntegrityError):
        store.record_decision([decision("paper@t1/B"), bad], {"breakers:paper": {"x": 2}}, "paper@t1", T0)
    assert store.state("breakers:paper") == {"x": 1}
    store.record_decision([decision("paper@t1/C")], {"breakers:paper": {"x": 1}}, "paper@t1", T0)
    assert len(writes) == 3  # A's UPDATE and INSERT (a new key), none for B, C's (nothing known after the failure)
    store.record_decision([decision("paper@t1/D")], {"breakers:paper": {"x": 1}}, "paper@t1", T0)
    assert len(writes) == 3  # as stored by C
    store.record_decision([decision("paper@t1/E")], {"breakers:paper": {"x": 2}}, "paper@t1", T0)
    assert store.state("breakers:paper") == {"x": 2} and len(writes) == 4


def test_signal_times_see_every_new_approval_whoever_stored_it(tmp_path):
    # the symbols of a cycle ask the same window one after the other: a kept answer must show an approval
    # stored since by this Store, by another Store on the file or by any other writer, and only a
    # rejection may leave it as it was
    path = tmp_path / "store.sqlite"
    store, other = Store.at(path), Store.at(path)
    cycle(store)

    def verdict(by: Store, symbol: str, status: str, as_values: bool = False) -> None:
        did = f"paper@t1/{symbol}"
        gate = {"decision_id": did, "cycle_id": "paper@t1", "symbol": symbol, "status": status, "codes": "",
                "reasons_json": "[]", "request_json": "{}"}
        by.record_decision([decision(did, symbol=symbol),
                            RowValues(GateDecisionRow, gate) if as_values else GateDecisionRow(**gate)],
                           {}, "paper@t1", T0)

    def seen() -> list[int]:
        return store.signal_times("paper", T0 - H, T0)

    assert seen() == []
    verdict(store, "A/USDT", "rejected")
    assert seen() == []
    verdict(store, "B/USDT", "approved")
    assert seen() == [T0]
    verdict(store, "C/USDT", "approved", as_values=True)
    assert seen() == [T0, T0]
    verdict(other, "D/USDT", "approved")
    assert seen() == [T0, T0, T0]
    with other.session() as s:  # any other writer, even outside the Store's methods
        s.exec(delete(GateDecisionRow).where(GateDecisionRow.symbol == "B/USDT"))
        s.commit()
    assert seen() == [T0, T0]
    store.close()
    other.close()


# --- batches: the evals replay's cycle in one transaction ---------------------------------------------


def _on_disk(path) -> dict[str, int]:
    """Row counts as another connection sees them (what is committed)."""
    with sqlite3.connect(path) as con:
        return {t: con.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                for t in ("cycles", "decisions", "signals", "account_snapshots", "agent_state")}


def test_a_batch_commits_its_writes_together_at_its_end_and_reads_inside_it_see_them(tmp_path):
    path = tmp_path / "s.sqlite"
    store = Store.at(path)
    with store.batch():
        cycle(store)
        store.record_decision([decision("paper@t1/A"), signal("paper@t1/A")], {"breakers:paper": {"x": 1}},
                              "paper@t1", T0)
        store.record_decision([decision("paper@t1/B", symbol="B")], {"breakers:paper": {"x": 2}}, "paper@t1", T0)
        # nothing is committed yet; the batch's own reads (compiled statements and ORM sessions) see it all
        assert _on_disk(path) == dict.fromkeys(("cycles", "decisions", "signals", "account_snapshots",
                                                "agent_state"), 0)
        assert store.decided_symbols("paper@t1") == {"X/USDT", "B"}
        assert store.state("breakers:paper") == {"x": 2}
        assert [d.decision_id for d in store.rows(DecisionRow)] == ["paper@t1/A", "paper@t1/B"]
        assert store.signal_of("paper@t1/A") is not None
        store.finish_cycle("paper@t1", T0 + 1, ACCOUNT)
    assert _on_disk(path) == {"cycles": 1, "decisions": 2, "signals": 1, "account_snapshots": 1, "agent_state": 1}
    assert store.cycle("paper@t1").status == "completed" and store.state("breakers:paper") == {"x": 2}
    store.close()


def test_a_batch_that_raises_leaves_nothing_and_its_state_rows_are_written_again(tmp_path):
    path = tmp_path / "s.sqlite"
    store = Store.at(path)
    cycle(store)
    store.record_decision([decision("paper@t1/A")], {"breakers:paper": {"x": 1}}, "paper@t1", T0)
    before = _on_disk(path)
    with pytest.raises(RuntimeError, match="planted"), store.batch():
        cycle(store, "paper@t2")
        store.record_sync("paper@t2", "paper", T0 + H, [], [], [], [], ACCOUNT, {"broker:paper": {"o": 1}})
        store.record_decision([decision("paper@t2/A", cycle_id="paper@t2")], {"breakers:paper": {"x": 2}},
                              "paper@t2", T0 + H)
        raise RuntimeError("planted")
    assert _on_disk(path) == before and store.cycle("paper@t2") is None
    assert store.state("breakers:paper") == {"x": 1} and store.state("broker:paper") is None
    # what the rolled-back batch wrote is not known as stored: the same rows go to the store again
    writes = _state_writes(store)
    with store.batch():
        cycle(store, "paper@t2")
        store.record_decision([decision("paper@t2/A", cycle_id="paper@t2")], {"breakers:paper": {"x": 2}},
                              "paper@t2", T0 + H)
    assert store.state("breakers:paper") == {"x": 2} and len(writes) == 1
    assert _state_rows(path) == [("breakers:paper", '{"x": 2}', "paper@t2", T0 + H)]
    store.close()


def test_a_decision_that_fails_inside_a_batch_leaves_nothing_of_itself_and_the_batch_goes_on(tmp_path):
    # each write call in a batch is a savepoint: a caller that catches a failed decision and carries on
    # commits the others whole and nothing of the failed one (not its decision row, not its state)
    path = tmp_path / "s.sqlite"
    store = Store.at(path)
    with store.batch():
        cycle(store)
        store.record_decision([decision("paper@t1/A")], {"breakers:paper": {"x": 1}}, "paper@t1", T0)
        bad = signal("paper@t1/B")
        bad.reasoning = None  # NOT NULL: fails after the decision row
        with pytest.raises(IntegrityError):
            store.record_decision([decision("paper@t1/B"), bad], {"breakers:paper": {"x": 2}}, "paper@t1", T0)
        with pytest.raises(StoreError, match="already stored"):
            store.record_decision([decision("paper@t1/A")], {}, "paper@t1", T0)
        assert store.decided_symbols("paper@t1") == {"X/USDT"} and store.state("breakers:paper") == {"x": 1}
        store.record_decision([decision("paper@t1/C"), signal("paper@t1/C")], {}, "paper@t1", T0)
    assert [d.decision_id for d in store.rows(DecisionRow)] == ["paper@t1/A", "paper@t1/C"]
    assert [s.decision_id for s in store.rows(SignalRow)] == ["paper@t1/C"]
    assert store.state("breakers:paper") == {"x": 1}
    store.close()


def _llm_call(decision_id: str) -> dict:
    return {"decision_id": decision_id, "cycle_id": "paper@t1", "attempt": 1, "provider": "p", "model": "m",
            "prompt_variant": "v", "template_version": "1", "prompt_hash": "h", "request_key": "k", "outcome": "ok"}


def _all_rows(path) -> dict[str, list[tuple]]:
    """Every row of every table, in rowid order, as another connection sees them."""
    with sqlite3.connect(path) as con:
        return {t.__tablename__: con.execute(f"SELECT rowid, * FROM {t.__tablename__} ORDER BY rowid").fetchall()
                for t in TABLES}


def test_a_failed_decision_in_a_batch_leaves_the_rows_and_ids_the_batch_would_have_without_it(tmp_path):
    # inside a batch on SQLite a decision's inserts are undone by deleting them (no savepoint): the rows,
    # their rowids and the next autoincrement id must be those of a batch that never saw the failed decision
    def run(store: Store, with_failure: bool) -> None:
        with store.batch():
            cycle(store)
            store.record_decision([decision("paper@t1/A"), RowValues(DecisionCallRow, _llm_call("paper@t1/A")),
                                   signal("paper@t1/A")], {"breakers:paper": {"x": 1}}, "paper@t1", T0)
            if with_failure:
                bad = RowValues(SignalRow, {**signal("paper@t1/B").model_dump(), "reasoning": None})  # NOT NULL
                with pytest.raises(IntegrityError):  # fails after three rows of two kinds (ORM rows, values)
                    store.record_decision([decision("paper@t1/B"), DecisionCallRow(**_llm_call("paper@t1/B")),
                                           RowValues(DecisionCallRow, _llm_call("paper@t1/B")), bad],
                                          {"breakers:paper": {"x": 2}}, "paper@t1", T0)
            store.record_decision([decision("paper@t1/C"), RowValues(DecisionCallRow, _llm_call("paper@t1/C")),
                                   signal("paper@t1/C")], {"breakers:paper": {"x": 3}}, "paper@t1", T0)
            store.finish_cycle("paper@t1", T0 + 1, ACCOUNT)
        store.close()

    run(Store.at(tmp_path / "failed.sqlite"), True)
    run(Store.at(tmp_path / "plain.sqlite"), False)
    failed, plain = _all_rows(tmp_path / "failed.sqlite"), _all_rows(tmp_path / "plain.sqlite")
    assert [r[1] for r in failed["decision_llm_calls"]] == [1, 2]  # C's call took the id B's calls had
    assert failed == plain


def test_kept_reads_in_a_batch_answer_what_the_batch_holds(tmp_path):
    # inside a batch the kept answers are given without asking for a connection: after each write that can
    # change them they must equal the answer read from the batch's rows
    store = Store.at(tmp_path / "s.sqlite")

    def reads() -> tuple:
        return (store.signal_times("paper", T0 - H, T0), store.trade_history("v", "X/USDT", "bull"),
                store.recent_outcomes("X/USDT"))

    def fresh() -> tuple:
        kept = dict(store._reads)
        store._reads.clear()  # read from the batch's rows
        try:
            return reads()
        finally:
            store._reads.update(kept)

    with store.batch():
        cycle(store)
        assert reads() == reads() == fresh() == ([], store.trade_history("v", "X/USDT", "bull"), [])
        for k, status in enumerate(("approved", "rejected", "approved")):
            did = f"paper@t1/X/USDT#{k}"
            order = PaperBroker().submit(intent(decision=did), T0 + H)
            store.record_decision([decision(did, outcome="ordered", regime="bull", variant="v"),
                                   GateDecisionRow(decision_id=did, cycle_id="paper@t1", symbol="X/USDT",
                                                   status=status, codes="", reasons_json="[]", request_json="{}"),
                                   order_row(order, "paper")], {}, "paper@t1", T0)
            assert reads() == fresh()
            r = 1.0 - k
            trade = ClosedTrade(client_order_id=order.client_order_id, decision_id=did, symbol="X/USDT", side="LONG",
                                quantity=1, entry=100, exit=100 + r, opened_ms=T0, closed_ms=T0 + k,
                                exit_reason="target", fees=0, pnl=r, risk_amount=1, r_multiple=r,
                                outcome="win" if r > 0 else "loss")
            store.record_sync("paper@t1", "paper", T0, [], [trade], [], [], ACCOUNT, {})
            assert reads() == fresh()
        times, history, outcomes = reads()
        assert times == [T0, T0] and (history.variant.wins, history.variant.losses) == (1, 2)
        assert outcomes == [1.0, 0.0, -1.0]
    store.close()


def test_a_batch_whose_transaction_the_database_ended_commits_nothing(tmp_path):
    # SQLite rolls the whole transaction back by itself after some errors (disk full, I/O): the savepoint
    # is gone, so no later write may go on as if the batch's earlier writes were still there
    path = tmp_path / "s.sqlite"
    store = Store.at(path)
    with pytest.raises(StoreError, match="lost"), store.batch():
        cycle(store)
        store.record_decision([decision("paper@t1/A")], {}, "paper@t1", T0)
        store._batch.connection.dbapi_connection.rollback()  # as SQLite does on such an error
        with pytest.raises(StoreError, match="lost"):
            store.record_decision([decision("paper@t1/B")], {}, "paper@t1", T0)
        with pytest.raises(StoreError, match="lost"):
            cycle(store, "paper@t2")
    assert _on_disk(path) == dict.fromkeys(("cycles", "decisions", "signals", "account_snapshots", "agent_state"), 0)
    with store.batch():  # the Store is usable again
        cycle(store)
    assert store.cycle("paper@t1") is not None
    store.close()


def test_batches_do_not_nest_and_other_threads_keep_their_own_transactions(tmp_path):
    path = tmp_path / "s.sqlite"
    store = Store.at(path)
    cycle(store)
    seen = {}

    def other() -> None:  # waits for the batch's write lock (busy timeout), then commits on its own
        store.record_decision([decision("paper@t1/T")], {}, "paper@t1", T0)
        seen["other"] = store.decided_symbols("paper@t1")

    with store.batch():
        with pytest.raises(StoreError, match="nest"), store.batch():
            pass
        store.record_decision([decision("paper@t1/A", symbol="A")], {}, "paper@t1", T0)
        worker = threading.Thread(target=other)
        worker.start()
        worker.join(0.2)
        assert worker.is_alive()  # blocked by the batch's write lock, not writing into the batch
    worker.join()
    assert seen["other"] == {"A", "X/USDT"}
    assert store.decided_symbols("paper@t1") == {"A", "X/USDT"}
    store.close()


def test_state_rows_of_a_batch_are_written_once_per_key_and_are_the_rows_the_plain_writes_give(tmp_path):
    # inside a batch the state rows are written when it ends (or before a read of them), each key with
    # the last value given: the stored rows, and the order new keys are inserted in, are the plain ones
    def calls(store: Store, batched: bool) -> list:
        acts = [
            [lambda: cycle(store),
             lambda: store.record_sync("paper@t1", "paper", T0, [], [], [], [], ACCOUNT, {"broker:paper": {"o": [1]}}),
             lambda: store.record_decision([decision("paper@t1/A")], {"breakers:paper": {"x": 1}, "broker:paper": {
                 "o": [1]}}, "paper@t1", T0),
             lambda: store.record_decision([decision("paper@t1/B")], {"broker:paper": {"o": [2]}}, "paper@t1", T0),
             lambda: store.record_decision([decision("paper@t1/C")], {}, "paper@t1", T0)],
            [lambda: cycle(store, "paper@t2"),
             lambda: store.record_decision([decision("paper@t2/A", cycle_id="paper@t2")], {
                 "extra:paper": [0], "breakers:paper": {"x": 1}}, "paper@t2", T0 + H),
             lambda: store.record_decision([decision("paper@t2/B", cycle_id="paper@t2")], {
                 "breakers:paper": {"x": 3}, "broker:paper": {"o": [2]}}, "paper@t2", T0 + H)],
        ]
        seen = []
        for cycle_acts in acts:
            with store.batch() if batched else nullcontext():
                for act in cycle_acts:
                    act()
            with sqlite3.connect(store.url.removeprefix("sqlite:///")) as con:
                seen.append(con.execute("SELECT rowid, * FROM agent_state ORDER BY rowid").fetchall())
        return seen

    plain, batched = Store.at(tmp_path / "plain.sqlite"), Store.at(tmp_path / "batched.sqlite")
    writes = _state_writes(batched)
    assert calls(batched, True) == calls(plain, False)
    # t1: two new keys (an UPDATE and an INSERT each; the broker's two values in t1 make one write);
    # t2: a new key, and the two others changed (the cycle and time at least)
    assert len(writes) == 2 * 2 + 2 + 1 + 1
    for s in (plain, batched):
        s.close()
