"""The store: every cycle, decision, order, fill, trade and account snapshot, one transaction per decision.

SQLite in WAL mode by default (readers such as `review` never block the cycle; a killed process
loses at most the transaction in flight, never half of it), PostgreSQL or any SQLAlchemy URL
otherwise. The schema is created on open; migrations (Alembic) come once the schema has users.

The cycle writes in three kinds of transaction, each all-or-nothing:
- `start_cycle`: the cycle row (a rerun of the same cycle counts an attempt);
- `record_sync`: what the broker did since the last cycle (fills, closed trades, order states,
  open positions, an account snapshot) together with the broker's memory;
- `record_decision`: one symbol's decision (snapshot, LLM calls, signal, gate verdict, order,
  breaker events) together with the breaker state and the broker's memory after it.
The broker's memory travels in the same transaction as the rows it explains, so after a crash
the store and the broker can never disagree about an order.

`batch()` joins the writes made inside it into one transaction (the evals replay's cycle: its
unit of resumption); each write call in it stays all-or-nothing on its own (a savepoint, or on
SQLite for a decision its inserted rows deleted again if it fails). Live cycles never use one.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import bindparam, case, delete, event, func, insert, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, SQLModel, create_engine, select

from agent.brokers.base import AccountSnapshot, ClosedTrade, Fill, Mismatch, OrderState, Position
from agent.store.statements import CompiledStatements
from agent.store.tables import (
    LATER_INDEXES,
    TABLES,
    AccountSnapshotRow,
    ClosedTradeRow,
    CycleRow,
    DecisionRow,
    FillRow,
    GateDecisionRow,
    MismatchRow,
    OrderRow,
    PositionRow,
    SignalRow,
    StateRow,
)
from risk.inputs import TradeHistory, WinCount


class StoreError(RuntimeError):
    """The store cannot be opened or a write broke a rule (names the URL or the row)."""


class RowValues(NamedTuple):
    """A row to insert given as its column values, with no ORM object built for it.

    What the cycle writes for every decision: an ORM row's instrumented constructor costs about
    0.1 ms, and a decision writes five or more rows. A column left out takes the table's default;
    the values are the ones an ORM row of the same fields would hold (nothing validates either).
    """

    table: type[SQLModel]
    values: Mapping[str, Any]


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
    cursor.execute("PRAGMA synchronous=NORMAL")  # with WAL: durable across a process crash
    cursor.execute("PRAGMA foreign_keys=ON")  # SQLite leaves them off by default
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


class Store:
    """The store at a SQLAlchemy URL (`sqlite:///path` creates the file and its folder)."""

    def __init__(self, url: str, echo: bool = False) -> None:
        self.url = url
        if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        try:
            self.engine: Engine = create_engine(url, echo=echo)
        except Exception as exc:  # bad URL, missing driver: say which
            raise StoreError(f"cannot open the store {self.display_url}: {exc}") from None
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        SQLModel.metadata.create_all(self.engine, tables=[t.__table__ for t in TABLES])
        for index in LATER_INDEXES:  # `create_all` makes missing tables only: a store made before them lacks these
            index.create(self.engine, checkfirst=True)
        self._sql = CompiledStatements(self.engine.dialect)
        self._held: Connection | None = None  # see `_connection`
        self._held_by: tuple[int, int] | None = None  # (process, thread) that keeps it
        self._reads: dict[tuple, Any] = {}  # see `_kept_read`
        self._states: dict[str, tuple[str, str, int]] = {}  # see `_put_state`
        self._kept_version: int | None = None  # see `_kept_is_current`
        self._batch: Connection | None = None  # see `batch`
        self._batch_by: tuple[int, int] | None = None
        self._batch_checked = False  # the kept answers were checked against other writers in this batch
        self._batch_lost = False  # the database ended the batch's transaction by itself
        self._deferred: dict[str, tuple[Any, str, int]] = {}  # see `_defer_states`

    @classmethod
    def at(cls, path: str | Path) -> Store:
        return cls(f"sqlite:///{Path(path)}")

    @property
    def display_url(self) -> str:
        """The URL with any password masked (safe to print)."""
        try:
            return self.engine.url.render_as_string(hide_password=True)
        except AttributeError:  # engine not created yet
            return self.url.split("@")[-1]

    def close(self) -> None:
        if self._held is not None:
            self._held.close()
            self._held = None
        self.engine.dispose()

    def session(self) -> Session:
        """An ORM session; inside a batch (its thread), on the batch's connection in a savepoint of its own."""
        if self._in_batch():
            # sees the batch's writes; its commit releases its savepoint and its rollback undoes only it.
            # What it may write is unknown: nothing kept is trusted after it (see `_kept_is_current`)
            self._write_deferred(self._batch)
            self._reads.clear()
            self._states.clear()
            return Session(self._batch, expire_on_commit=False, join_transaction_mode="create_savepoint")
        return Session(self.engine, expire_on_commit=False)

    @contextmanager
    def batch(self) -> Iterator[None]:
        """This thread's writes inside the block in one transaction: committed at its end, rolled back if it raises.

        For the evals replay, whose cycle is its unit of resumption: a replay cycle writes about a dozen
        transactions (the cycle, the sync, one per decision, the finish), and a commit costs more than
        a decision's inserts. Inside a batch:
        - each write call (`start_cycle`, `record_sync`, `record_decision`, `finish_cycle`) runs in a
          savepoint (on SQLite `record_decision` deletes its inserted rows instead, see `_inserts_undone`):
          one that raises leaves nothing of itself and the batch goes on, so a caller that
          catches a failed decision and carries on commits the rest without half of that decision. If
          the database ended the transaction by itself (see `_batch_alive`), every later write raises
          StoreError and so does the batch's end: nothing of the batch is committed;
        - reads (and `session()`) use the batch's connection and see its writes;
        - the state rows are written once, with the last value given for each key, when the batch ends
          or before a read of them (see `_defer_states`): a state value handed over inside a batch must
          not be changed afterwards;
        - on SQLite the batch takes the write lock when it starts (`BEGIN IMMEDIATE`): readers are not
          blocked (WAL); another writer waits for the batch, up to the busy timeout.
        A crash loses the whole batch, never a part of it. What this Store kept about the file
        (`_kept_read`, `_put_state`) is forgotten if the batch does not commit. Batches do not nest;
        another thread's calls meanwhile take their own connection and see none of the batch.
        """
        me = (os.getpid(), threading.get_ident())
        if self._in_batch():
            raise StoreError("a batch is already open in this thread (batches do not nest)")
        conn = self._own_connection(me)
        pooled = conn is not self._held
        try:
            with conn.begin():  # commits at the end, rolls back if the block raises
                if conn.dialect.name == "sqlite":
                    # the driver would begin the transaction only before the first INSERT: a savepoint
                    # before it would begin one of its own, which its release would commit
                    conn.connection.dbapi_connection.execute("BEGIN IMMEDIATE")
                self._batch, self._batch_by, self._batch_checked, self._batch_lost = conn, me, False, False
                try:
                    yield
                    self._write_deferred(conn)
                    if not self._batch_alive(conn):
                        raise StoreError("the batch's transaction was lost after a failed write: nothing committed")
                finally:
                    self._batch = self._batch_by = None
        except BaseException:
            self._reads.clear()
            self._states.clear()
            self._deferred.clear()
            raise
        finally:
            if pooled:
                conn.close()

    def _batch_alive(self, conn: Connection) -> bool:
        """Whether the batch's transaction is still open; once lost, it stays lost until the batch ends.

        SQLite ends a transaction by itself after some errors (disk full, I/O): a savepoint made after
        that would begin a new transaction of its own, committed by its release, without the batch's
        earlier writes. Elsewhere a failed statement spoils the transaction but does not end it.
        """
        if not self._batch_lost and conn.dialect.name == "sqlite":
            self._batch_lost = not conn.connection.dbapi_connection.in_transaction
        return not self._batch_lost

    def _in_batch(self) -> bool:
        return self._batch is not None and self._batch_by == (os.getpid(), threading.get_ident())

    def _own_connection(self, me: tuple[int, int]) -> Connection:
        """The kept connection if this thread keeps it (made on first use on SQLite), else a new pooled one."""
        held = self._held
        if held is None and self._held_by is None and self.engine.dialect.name == "sqlite":
            held, self._held_by = self.engine.connect(), me
            self._held = held
        if held is None or self._held_by != me or held.in_transaction():
            return self.engine.connect()
        return held

    @contextmanager
    def _savepoint(self, conn: Connection) -> Iterator[Connection]:
        """One write call inside a batch: all of it or nothing of it, the batch going on either way."""
        if not self._batch_alive(conn):
            raise StoreError("the batch's transaction was lost after a failed write: nothing more can be written")
        cursor = conn.connection.dbapi_connection.cursor()
        try:
            cursor.execute("SAVEPOINT store_write")
            try:
                yield conn
            except BaseException:
                try:
                    cursor.execute("ROLLBACK TO SAVEPOINT store_write")
                    cursor.execute("RELEASE SAVEPOINT store_write")
                except Exception:  # no such savepoint: the database rolled the whole transaction back itself
                    self._batch_lost = True
                raise
            cursor.execute("RELEASE SAVEPOINT store_write")
        finally:
            cursor.close()

    @contextmanager
    def _inserts_undone(self, conn: Connection, inserted: list[tuple[str, int]]) -> Iterator[Connection]:
        """A write call of INSERTs only, inside a batch on SQLite: all of it or nothing of it, with no savepoint.

        A savepoint makes SQLite copy each page before the call's first change to it (its sub-journal,
        spilled to a temporary file past 64 KiB): a replay's decision touches some twenty pages, and
        its savepoint cost a third of `record_decision` (0.29 -> 0.18 ms CPU per decision, the store
        calls of a 4-day replay replayed alone) and a fifth of the bytes written. The caller lists in
        `inserted` each row it inserted, as (table, rowid) (every table here has a rowid); if the call
        raises they are deleted again, newest first, which leaves the tables as a savepoint's rollback
        would: the same rows, and the same next id (no table uses AUTOINCREMENT). A failed INSERT
        itself is undone by SQLite.
        """
        if not self._batch_alive(conn):
            raise StoreError("the batch's transaction was lost after a failed write: nothing more can be written")
        try:
            yield conn
        except BaseException:
            if self._batch_alive(conn):  # else the database rolled everything back itself: nothing to undo
                try:
                    cursor = conn.connection.dbapi_connection.cursor()
                    for table, rowid in reversed(inserted):
                        cursor.execute(f"DELETE FROM {table} WHERE rowid = ?", (rowid,))
                    cursor.close()
                except Exception:  # the batch cannot be trusted to hold only whole calls any more
                    self._batch_lost = True
            raise

    @contextmanager
    def _connection(self, write: bool = False, inserted: list[tuple[str, int]] | None = None
                    ) -> Iterator[Connection]:
        """A connection for the compiled statements; with `write`, in a transaction committed at the end.

        On SQLite, the first thread to ask keeps one connection for its later calls: a pool checkout
        and the reset of its return cost 20-30 us, more than a read's statement, and a cycle makes
        about eight such calls and four more per decision. Nothing is left open on it between calls: a read
        runs outside any transaction (the driver begins one only before a write, as on a pooled
        connection), and a write's transaction ends with the call. Other threads, a forked child
        process, a call made while the held connection is in a transaction, and other databases (a
        read there would leave a transaction open) take a pooled connection as before.
        Inside a batch (its thread), the batch's connection: a write in a savepoint (see `batch`), or, on
        SQLite for a write call that only inserts and lists its rows in `inserted`, undone by deleting
        them if it fails (see `_inserts_undone`).
        """
        if self._in_batch():
            if write and inserted is not None and self._batch.dialect.name == "sqlite":
                with self._inserts_undone(self._batch, inserted) as conn:
                    yield conn
            elif write:
                with self._savepoint(self._batch) as conn:
                    yield conn
            else:
                yield self._batch
            return
        conn = self._own_connection((os.getpid(), threading.get_ident()))
        if conn is not self._held:
            with conn, conn.begin() if write else nullcontext():
                yield conn
        elif write:
            with conn.begin():
                yield conn
        else:
            yield conn

    def _kept_is_current(self, conn: Connection) -> bool:
        """Whether what this Store keeps about the file (`_reads`, `_states`) may be used on `conn`.

        Only on the kept connection, and only while no other connection has committed since it was
        kept: SQLite's `PRAGMA data_version` changes on this connection with every commit made by any
        other (another Store on the file, another process, this Store's ORM sessions and pooled
        connections), never with its own. When it has changed, everything kept is forgotten.
        """
        if conn is not self._held:
            return False
        if self._batch is conn and self._batch_checked:
            return True  # no other connection can commit while the batch holds the write lock
        self._batch_checked = self._batch is conn
        version = conn.connection.dbapi_connection.execute("PRAGMA data_version").fetchone()[0]
        if version != self._kept_version:
            self._reads.clear()
            self._states.clear()
            self._kept_version = version
        return True

    def _kept_answer(self, key: tuple) -> Any:
        """The kept answer of `_kept_read` when it can be used with no connection asked for; else None.

        Inside this thread's batch on the kept connection, once the batch has checked what is kept
        (`_kept_is_current` then answers yes at once: no other connection can commit meanwhile). A
        replay asks three kept reads before each decision, and getting the batch's connection for each
        cost more than the answer (about 10 us of their 15).
        """
        if self._batch_checked and self._batch is self._held and self._in_batch():
            return self._reads.get(key)
        return None

    def _kept_read(self, conn: Connection, key: tuple, read: Callable[[], Any]) -> Any:
        """`read()`, or its answer from an earlier call when what it reads cannot have changed since.

        For the reads asked before every decision of the closed trades (which change a few times a
        day) and of the approved verdicts (see `_changes_kept_reads`). Safe because each way they can
        change empties the kept answers: a commit by any other connection (see `_kept_is_current`,
        checked every time); the kept connection's own writes that can add such a row (`record_sync`
        given closed trades, `record_decision` given one) empty them. On a pooled connection nothing
        is kept. An answer must be immutable (a kept one is shared).
        """
        if not self._kept_is_current(conn):
            return read()
        if key not in self._reads:
            self._reads[key] = read()
        return self._reads[key]

    # --- cycles -------------------------------------------------------------------------------

    # Every cycle calls these (and a replay makes tens of thousands of cycles): they run compiled
    # statements on `_connection`, not an ORM session, whose get/flush/commit cost about 1 ms each.
    # CycleRow and StateRow columns need no result processing (integers and strings).

    def start_cycle(self, row: CycleRow) -> CycleRow:
        """Insert the cycle, or count one more attempt of an existing one; returns the stored row."""
        with self._connection(write=True) as conn:
            found = self._sql.rows(conn, _CYCLE_STATUS, {"c": row.cycle_id})
            if not found:
                self._sql.insert(conn, CycleRow, {c.key: getattr(row, c.key) for c in _CT.columns})
            elif found[0][0] != "completed":
                self._sql.run(conn, _CYCLE_ATTEMPT, {"c": row.cycle_id})
            (stored,) = self._sql.rows(conn, _CYCLE, {"c": row.cycle_id})
        if found:
            return CycleRow(**dict(zip(_CT.columns.keys(), stored, strict=True)))
        # as stored, like the session's refresh; a table row's setattr costs ~20 us (validation, ORM
        # instrumentation) and a new cycle's row already holds every stored value but its defaults
        for key, value in zip(_CT.columns.keys(), stored, strict=True):
            held = getattr(row, key)
            if type(held) is not type(value) or held != value:
                setattr(row, key, value)
        return row

    def finish_cycle(self, cycle_id: str, finished_ms: int, account: AccountSnapshot | None) -> None:
        with self._connection(write=True) as conn:
            if self._sql.run(conn, _CYCLE_FINISH, {"c": cycle_id, "finished_ms": finished_ms}) == 0:
                raise StoreError(f"no cycle {cycle_id!r} to finish")
            if account is not None:
                self._sql.insert(conn, AccountSnapshotRow, _account_values(cycle_id, "end", account))

    def cycle(self, cycle_id: str) -> CycleRow | None:
        with self._connection() as conn:
            found = self._sql.rows(conn, _CYCLE, {"c": cycle_id})
        return CycleRow(**dict(zip(_CT.columns.keys(), found[0], strict=True))) if found else None

    def last_decision_ms(self, run: str) -> int | None:
        """The latest decision time of a run's cycles, or None before its first."""
        with self._connection() as conn:
            ((latest,),) = self._sql.rows(conn, _LAST_DECISION, {"run": run})
        return latest

    def decided_symbols(self, cycle_id: str) -> set[str]:
        with self._connection() as conn:
            return {symbol for (symbol,) in self._sql.rows(conn, _DECIDED, {"c": cycle_id})}

    # --- state --------------------------------------------------------------------------------

    def state(self, key: str) -> dict[str, Any] | None:
        # read from the store every time (no copy kept): another Store on the same file (a resumed
        # run, the manual broker's answer) may have written it since
        with self._connection() as conn:
            if conn is self._batch:
                self._write_deferred(conn)
            found = self._sql.rows(conn, _STATE, {"k": key})
        return json.loads(found[0][0]) if found else None

    def _put_state(self, conn: Connection, states: Mapping[str, Any], cycle_id: str, now_ms: int
                   ) -> dict[str, tuple[str, str, int]]:
        """Write the state rows that differ from the stored ones; returns the rows written, for `_kept_states`.

        A replay's decisions mostly leave the breakers and the broker's memory as they were, and every
        decision of a cycle writes the same cycle id and time: a row this Store knows to be stored
        already, column for column, is not written again (a write rewrites the table's page in the
        log). What it knows are the rows its kept connection committed, forgotten at any commit by
        another connection and at a failed write (see `_kept_is_current`, `_kept_states`).
        """
        # UPDATE, and INSERT only when no row changed: the old value (a broker's memory can be large)
        # is never read back through the ORM just to be overwritten; two portable statements at most
        current = bool(states) and self._kept_is_current(conn)
        kept = self._states if current else {}
        written = {}
        for key, value in states.items():
            row = (json.dumps(value, sort_keys=True), cycle_id, now_ms)
            if kept.get(key) == row:
                continue
            values = {"value_json": row[0], "cycle_id": cycle_id, "updated_ms": now_ms}
            if self._sql.run(conn, _STATE_UPDATE, {"k": key, **values}) == 0:
                self._sql.insert(conn, StateRow, {"key": key, **values})
            written[key] = row
        return written if current else {}  # a pooled connection's commit is another connection's to the kept one

    def _defer_states(self, states: Mapping[str, Any], cycle_id: str, now_ms: int) -> None:
        """Inside a batch, after a write call succeeded: its state rows, to write with `_write_deferred`.

        A replay's every decision hands over the breakers and the broker's memory, and serialising them
        to compare with the stored row costs more than a decision's inserts; the batch commits only the
        last value of each key anyway, with its cycle id and time: the same rows, one serialisation per
        key per batch. A key keeps its place from its first write (a new key's row is inserted in the
        order the plain writes would insert it).
        """
        for key, value in states.items():
            self._deferred[key] = (value, cycle_id, now_ms)

    def _write_deferred(self, conn: Connection) -> None:
        """Write the batch's deferred state rows (in a savepoint: all of them or none, kept if they fail)."""
        if not self._deferred:
            return
        with self._kept_states() as written, self._savepoint(conn):
            for key, (value, cycle_id, now_ms) in self._deferred.items():
                written.update(self._put_state(conn, {key: value}, cycle_id, now_ms))
        self._deferred.clear()

    @contextmanager
    def _kept_states(self) -> Iterator[dict[str, tuple[str, str, int]]]:
        """Around a write transaction that calls `_put_state`: the rows it wrote are known once it committed.

        The caller puts `_put_state`'s answer in the dict given. Nothing is learnt from a write that
        failed (its transaction rolled back, or the commit may not have happened): everything known
        is forgotten, so the next write of every state row goes to the store.
        """
        written: dict[str, tuple[str, str, int]] = {}
        try:
            yield written
        except BaseException:
            self._states.clear()
            raise
        self._states.update(written)

    # --- the two transactional writes ---------------------------------------------------------

    def record_sync(
        self,
        cycle_id: str,
        run: str,
        now_ms: int,
        fills: Sequence[Fill],
        closed: Sequence[ClosedTrade],
        orders: Sequence[OrderState],
        positions: Sequence[Position],
        account: AccountSnapshot,
        states: Mapping[str, Any],
        mismatches: Sequence[Mismatch] = (),
    ) -> None:
        """One transaction: the broker's changes, its open positions, an account snapshot, its memory.

        Fills and closed trades already stored (same id) are left as they are, so a sync replayed
        after a crash records nothing twice.
        """
        # compiled statements, once per cycle: the rows are inserted in the order the ORM session that
        # wrote them before flushed them (each table's rows in the order they are met), so the same
        # autoincrement ids and row order come out
        sql = self._sql
        if closed:
            self._reads.clear()  # see `_kept_read`
        batched = self._in_batch()  # the state rows are written when the batch ends (see `_defer_states`)
        with self._kept_states() as written, self._connection(write=True) as conn:
            for o in orders:  # an order the store does not know is left alone
                sql.run(conn, _ORDER_UPDATE, {
                    "c": o.client_order_id, "status": o.status, "filled_quantity": o.filled_quantity,
                    "average_price": o.average_price, "exchange_order_id": o.exchange_order_id,
                    "updated_ms": o.updated_ms, "message": o.message})
            for f in fills:
                if sql.rows(conn, _FILL_EXISTS, {"k": f.fill_id}):
                    continue
                order = sql.rows(conn, _ORDER_DECISION, {"c": f.client_order_id})
                if not order:  # never silently: an execution the store cannot explain
                    sql.insert(conn, MismatchRow, _mismatch_values(
                        cycle_id, f.time_ms, "fill_of_unknown_order", f.client_order_id, f.symbol,
                        f"fill {f.model_dump_json()}"))
                    continue
                sql.insert(conn, FillRow, {"cycle_id": cycle_id, "decision_id": order[0][0], **f.model_dump()})
            for t in closed:
                if sql.rows(conn, _TRADE_EXISTS, {"k": t.client_order_id}):
                    continue
                if not sql.rows(conn, _ORDER_DECISION, {"c": t.client_order_id}):
                    sql.insert(conn, MismatchRow, _mismatch_values(
                        cycle_id, t.closed_ms, "trade_of_unknown_order", t.client_order_id, t.symbol,
                        f"closed trade {t.model_dump_json()}"))
                    continue
                d = sql.rows(conn, _DECISION_SLICE, {"d": t.decision_id})
                regime, variant = d[0] if d else (None, "")
                sql.insert(conn, ClosedTradeRow, {"cycle_id": cycle_id, "regime": regime, "variant": variant,
                                                  **t.model_dump()})
            for m in mismatches:
                sql.insert(conn, MismatchRow, {"cycle_id": cycle_id, **m.model_dump()})
            # the broker's open positions replace the ones stored for its run
            sql.run(conn, _POSITIONS_OF_RUN_DELETE, {"run": run})
            for p in positions:
                if not sql.rows(conn, _ORDER_DECISION, {"c": p.client_order_id}):
                    sql.insert(conn, MismatchRow, _mismatch_values(
                        cycle_id, now_ms, "position_of_unknown_order", p.client_order_id, p.symbol,
                        f"position {p.model_dump_json()}"))
                    continue
                sql.insert(conn, PositionRow, _position_values(cycle_id, now_ms, p))
            sql.insert(conn, AccountSnapshotRow, _account_values(cycle_id, "sync", account))
            if not batched:
                written.update(self._put_state(conn, states, cycle_id, now_ms))
        if batched:
            self._defer_states(states, cycle_id, now_ms)

    def record_decision(self, rows: Iterable[SQLModel | RowValues], states: Mapping[str, Any], cycle_id: str,
                        now_ms: int) -> None:
        """One transaction: every row of one decision (the DecisionRow first) and the state it changed.

        Rows are ORM rows or `RowValues`. A decision already stored (same decision id) raises
        StoreError: the caller skips decided symbols.
        """
        rows = list(rows)
        first = rows[0] if rows else None
        if isinstance(first, RowValues) and first.table is DecisionRow:
            decision_id = first.values["decision_id"]
        elif isinstance(first, DecisionRow):
            decision_id = first.decision_id
        else:
            raise StoreError("record_decision: the first row must be the DecisionRow")
        if any(_changes_kept_reads(r) for r in rows):
            self._reads.clear()  # see `_kept_read`
        # plain INSERTs in the given order (the decision first: every other row references it, an order
        # before the rows that reference it) on a connection, not an ORM session: a decision is written
        # once per symbol per cycle per variant in a replay, and the unit of work costs several times the
        # writes. `begin` commits at the end or rolls everything back: all of the decision or nothing.
        batched = self._in_batch()  # the state rows are written when the batch ends (see `_defer_states`)
        inserted: list[tuple[str, int]] = []  # inside a batch, undone if the call fails (see `_inserts_undone`)
        with self._kept_states() as written, self._connection(write=True, inserted=inserted) as conn:
            # SQLite keeps its transaction after a failed statement: the decision's INSERT is tried
            # first, and only a refused one asks why (a statement less per decision); elsewhere a
            # failed statement spoils the transaction, so the question comes first
            sqlite = conn.dialect.name == "sqlite"
            if not sqlite and self._sql.rows(conn, _DECISION_EXISTS, {"d": decision_id}):
                raise StoreError(f"decision {decision_id!r} is already stored")
            for i, r in enumerate(rows):
                try:
                    if isinstance(r, RowValues):
                        table, rowid = r.table.__tablename__, self._sql.insert(conn, r.table, r.values)
                    else:
                        table, rowid = r.__tablename__, _insert_row(conn, r)
                    inserted.append((table, rowid))
                except IntegrityError:
                    if i == 0 and sqlite and self._sql.rows(conn, _DECISION_EXISTS, {"d": decision_id}):
                        raise StoreError(f"decision {decision_id!r} is already stored") from None
                    raise
            if not batched:
                written.update(self._put_state(conn, states, cycle_id, now_ms))
        if batched:
            self._defer_states(states, cycle_id, now_ms)

    # --- reads --------------------------------------------------------------------------------

    def rows(self, table: type[SQLModel], **equal: Any) -> list[Any]:
        """Every row of a table (optionally where column == value), in primary-key order."""
        with self.session() as s:
            stmt = select(table)
            for column, value in equal.items():
                stmt = stmt.where(getattr(table, column) == value)
            pk = next(iter(table.__table__.primary_key.columns))
            return list(s.exec(stmt.order_by(pk)).all())

    def trade_history(self, variant: str, symbol: str, regime: str | None) -> TradeHistory:
        """Closed-trade wins/losses of the variant, of it on this symbol, and of it in this regime."""
        # counted in SQL: asked before every decision, and a year's replay closes thousands of trades
        def read() -> TradeHistory:
            ((total, wins, sym, sym_wins, reg, reg_wins),) = self._sql.rows(
                conn, _TRADE_COUNTS, {"variant": variant, "symbol": symbol, "regime": regime})
            return TradeHistory(
                variant=WinCount(wins=wins, losses=total - wins),
                symbol=WinCount(wins=sym_wins, losses=sym - sym_wins),
                regime=WinCount(wins=reg_wins, losses=reg - reg_wins),
            )

        key = ("trade_history", variant, symbol, regime)
        kept = self._kept_answer(key)
        if kept is not None:
            return kept
        with self._connection() as conn:  # the answer is immutable: a kept one can be shared
            return self._kept_read(conn, key, read)

    def recent_outcomes(self, symbol: str, limit: int = 20) -> list[float]:
        """R multiples of the symbol's last closed trades, oldest first (for the prompt and theories.bayes)."""
        def read() -> tuple[float, ...]:
            found = self._sql.rows(conn, _RECENT_OUTCOMES, {"symbol": symbol, "n": limit})
            return tuple(r for (r,) in reversed(found))

        key = ("recent_outcomes", symbol, limit)
        kept = self._kept_answer(key)
        if kept is not None:
            return list(kept)
        with self._connection() as conn:
            return list(self._kept_read(conn, key, read))

    def signal_times(self, run: str, since_ms: int, until_ms: int) -> list[int]:
        """Decision times of approved trades of a run in (since, until]: what counts against the hourly limit."""
        # asked before every decision with the same window by each symbol of a cycle, and changed only
        # by an approved verdict: kept like the closed-trade reads (see `_kept_read`)
        def read() -> tuple[int, ...]:
            return tuple(t for (t,) in self._sql.rows(
                conn, _SIGNAL_TIMES, {"run": run, "since": since_ms, "until": until_ms}))

        key = ("signal_times", run, since_ms, until_ms)
        kept = self._kept_answer(key)
        if kept is not None:
            return list(kept)
        with self._connection() as conn:
            return list(self._kept_read(conn, key, read))

    def signal_of(self, decision_id: str) -> SignalRow | None:
        with self.session() as s:
            return s.get(SignalRow, decision_id)


# --- statements of the per-decision path, built once (SQLAlchemy caches their compiled form) ---------

_ST, _DT, _GT, _CT, _TT = (StateRow.__table__, DecisionRow.__table__, GateDecisionRow.__table__,
                           CycleRow.__table__, ClosedTradeRow.__table__)
_STATE_UPDATE = update(_ST).where(_ST.c.key == bindparam("k")).values(
    value_json=bindparam("value_json"), cycle_id=bindparam("cycle_id"), updated_ms=bindparam("updated_ms"))
_DECISION_EXISTS = select(_DT.c.decision_id).where(_DT.c.decision_id == bindparam("d"))
_DECISION_SLICE = select(_DT.c.regime, _DT.c.variant).where(_DT.c.decision_id == bindparam("d"))
_STATE = select(_ST.c.value_json).where(_ST.c.key == bindparam("k"))
_CYCLE = select(*_CT.columns).where(_CT.c.cycle_id == bindparam("c"))
_CYCLE_STATUS = select(_CT.c.status).where(_CT.c.cycle_id == bindparam("c"))
_CYCLE_ATTEMPT = update(_CT).where(_CT.c.cycle_id == bindparam("c")).values(attempts=_CT.c.attempts + 1)
_CYCLE_FINISH = update(_CT).where(_CT.c.cycle_id == bindparam("c")).values(
    status="completed", finished_ms=bindparam("finished_ms"))
_LAST_DECISION = select(func.max(_CT.c.decision_ms)).where(_CT.c.run == bindparam("run"))
_DECIDED = select(_DT.c.symbol).where(_DT.c.cycle_id == bindparam("c"))
_OT, _FT, _PT = OrderRow.__table__, FillRow.__table__, PositionRow.__table__
_ORDER_UPDATE = update(_OT).where(_OT.c.client_order_id == bindparam("c")).values(
    {k: bindparam(k) for k in ("status", "filled_quantity", "average_price", "exchange_order_id", "updated_ms",
                               "message")})
_ORDER_DECISION = select(_OT.c.decision_id).where(_OT.c.client_order_id == bindparam("c"))
_FILL_EXISTS = select(_FT.c.fill_id).where(_FT.c.fill_id == bindparam("k"))
_TRADE_EXISTS = select(_TT.c.client_order_id).where(_TT.c.client_order_id == bindparam("k"))
_POSITIONS_OF_RUN_DELETE = delete(_PT).where(_PT.c.client_order_id.in_(
    select(_OT.c.client_order_id).join(_CT, _CT.c.cycle_id == _OT.c.cycle_id).where(_CT.c.run == bindparam("run"))))


def _count(cond: Any) -> Any:
    return func.coalesce(func.sum(case((cond, 1), else_=0)), 0)


_WIN = _TT.c.r_multiple > 0
_ON_SYMBOL = _TT.c.symbol == bindparam("symbol")
_IN_REGIME = _TT.c.regime == bindparam("regime")  # NULL = NULL is not true: no regime counts nothing
_TRADE_COUNTS = select(func.count(), _count(_WIN), _count(_ON_SYMBOL), _count(_ON_SYMBOL & _WIN),
                       _count(_IN_REGIME), _count(_IN_REGIME & _WIN)).where(_TT.c.variant == bindparam("variant"))
_RECENT_OUTCOMES = (select(_TT.c.r_multiple).where(_TT.c.symbol == bindparam("symbol"))
                    .order_by(_TT.c.closed_ms.desc()).limit(bindparam("n")))
# A decision's time is its cycle's: the condition on the cycle's time (redundant) lets the run's cycles
# in the window be found on the (run, decision_ms) index; without it every cycle of the run is read,
# about 35 ms per decision at the end of a year's hourly replay
_SIGNAL_TIMES = (
    select(_DT.c.decision_ms)
    .join(_GT, _GT.c.decision_id == _DT.c.decision_id)
    .join(_CT, _CT.c.cycle_id == _DT.c.cycle_id)
    .where(_CT.c.run == bindparam("run"), _GT.c.status == "approved")
    .where(_CT.c.decision_ms > bindparam("since"), _CT.c.decision_ms <= bindparam("until"))
    .where(_DT.c.decision_ms > bindparam("since"), _DT.c.decision_ms <= bindparam("until"))
)
_INSERTS: dict[str, Any] = {}


def _changes_kept_reads(row: SQLModel | RowValues) -> bool:
    """Whether storing the row can change an answer `Store._kept_read` keeps: a closed trade (trade_history,
    recent_outcomes) or an approved verdict (signal_times)."""
    if isinstance(row, RowValues):
        table, status = row.table, row.values.get("status")
    else:
        table, status = type(row), getattr(row, "status", None)
    return table is ClosedTradeRow or (table is GateDecisionRow and status == "approved")


def _insert_row(conn: Connection, row: SQLModel) -> int | None:
    """INSERT one table row; a None autoincrement key is left to the database and read back onto the row.

    Returns the new row's id where the driver gives it (SQLite's rowid)."""
    table = row.__table__
    stmt = _INSERTS.get(table.name)
    if stmt is None:
        stmt = _INSERTS[table.name] = insert(table)
    values = {c.key: getattr(row, c.key) for c in table.columns}
    auto = [c.key for c in table.primary_key.columns if values[c.key] is None]
    for key in auto:
        del values[key]
    result = conn.execute(stmt, values)
    if len(auto) == 1:
        setattr(row, auto[0], result.inserted_primary_key[0])
    return result.lastrowid


def order_row(o: OrderState, broker: str) -> OrderRow:
    i = o.intent
    return OrderRow(
        client_order_id=o.client_order_id, decision_id=i.decision_id, cycle_id=i.cycle_id, broker=broker,
        symbol=i.symbol, side=i.side, order_type=i.order_type, quantity=i.quantity, limit_price=i.limit_price,
        stop=i.stop, target=i.target, time_stop_ms=i.time_stop_ms, status=o.status,
        exchange_order_id=o.exchange_order_id, filled_quantity=o.filled_quantity, average_price=o.average_price,
        created_ms=i.created_ms, updated_ms=o.updated_ms, message=o.message,
    )


def _position_values(cycle_id: str, now_ms: int, p: Position) -> dict[str, Any]:
    return {
        "client_order_id": p.client_order_id, "decision_id": p.decision_id, "cycle_id": cycle_id, "symbol": p.symbol,
        "side": p.side, "quantity": p.quantity, "entry": p.entry, "stop": p.stop, "target": p.target, "mark": p.mark,
        "floating_pnl": p.floating_pnl, "opened_ms": p.opened_ms, "time_stop_ms": p.time_stop_ms, "updated_ms": now_ms,
    }


def _account_values(cycle_id: str, stage: str, a: AccountSnapshot) -> dict[str, Any]:
    return {"cycle_id": cycle_id, "stage": stage, **a.model_dump()}


def _mismatch_values(cycle_id: str, time_ms: int, kind: str, client_order_id: str, symbol: str,
                     detail: str) -> dict[str, Any]:
    return {"cycle_id": cycle_id, "time_ms": time_ms, "kind": kind, "client_order_id": client_order_id,
            "symbol": symbol, "detail": detail}
