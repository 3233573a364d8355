"""Statements of the per-decision path, compiled once per engine and run on the driver's cursor.

A replay runs about ten statements per decision for hundreds of thousands of decisions.
`Connection.execute(statement)` costs 40-110 us per statement in SQLAlchemy itself (the compiled
cache lookup, the parameters, the result's set-up), `exec_driver_sql` still 20-50 us; the
driver's own cursor takes 3-10 us. So the statements here are compiled once for the engine's
dialect and sent to the driver on the connection's current transaction, and what SQLAlchemy
would add is done here: the statement's own values (a `LIMIT 1`, a `status = 'approved'`) go
with the parameters, each column type's bind processor (a Float column's `float()`, a Boolean's
check) is applied, and a driver error is raised as SQLAlchemy's (an `IntegrityError` stays an
`IntegrityError`). Rows come back as the driver gives them: no result processors (a Boolean
column reads 0/1), so these are for statements whose columns need none.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import exc, insert
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.sql import ClauseElement
from sqlmodel import SQLModel


class _Compiled:
    __slots__ = ("names", "positional", "processors", "sql", "values")

    def __init__(self, statement: ClauseElement, dialect: Dialect, column_keys: list[str] | None) -> None:
        compiled = statement.compile(dialect=dialect, column_keys=column_keys)
        self.sql = str(compiled)
        self.positional = bool(dialect.positional)
        binds = compiled.binds
        # a positional dialect takes one value per placeholder, in order (a name may repeat)
        self.names: tuple[str, ...] = tuple(compiled.positiontup) if self.positional else tuple(binds)
        # the statement's own values (literals, LIMIT/OFFSET), under the caller's
        self.values = {name: b.effective_value for name, b in binds.items() if not b.required}
        procs = {name: b.type.bind_processor(dialect) for name, b in binds.items()}
        # each placeholder's name with its processor (None: the value goes as it is), looked up once: in
        # placeholder order for a positional dialect (a repeated name is processed again), else once per name
        self.processors: tuple[tuple[str, Callable[[Any], Any] | None], ...] = tuple(
            (name, procs[name]) for name in (self.names if self.positional else dict.fromkeys(self.names)))

    def params(self, given: Mapping[str, Any]) -> tuple[Any, ...] | dict[str, Any]:
        values = {**self.values, **given} if self.values else given
        if self.positional:
            return tuple([values[name] if proc is None else proc(values[name]) for name, proc in self.processors])
        return {name: values[name] if proc is None else proc(values[name]) for name, proc in self.processors}


class CompiledStatements:
    """Statements compiled for one engine's dialect on first use, run on a connection's driver cursor.

    The statements are module-level constants (they key the cache). `rows` runs a SELECT, `run` any
    other statement; `insert` writes one row of a table from its column values.
    """

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self._cache: dict[Any, _Compiled] = {}
        self._defaults: dict[str, tuple[dict[str, Any], frozenset[str]]] = {}

    def rows(self, conn: Connection, statement: ClauseElement, params: Mapping[str, Any]) -> list[tuple]:
        """Every row of a SELECT, as tuples."""
        cursor = self._execute(conn, self._compiled(statement), params)
        try:
            return cursor.fetchall()
        finally:
            cursor.close()

    def run(self, conn: Connection, statement: ClauseElement, params: Mapping[str, Any]) -> int:
        """Run an UPDATE/DELETE/INSERT; returns the count of rows it changed."""
        cursor = self._execute(conn, self._compiled(statement), params)
        count = cursor.rowcount
        cursor.close()
        return count

    def insert(self, conn: Connection, table: type[SQLModel], values: Mapping[str, Any]) -> int | None:
        """INSERT one row of `table` with these column values; returns the new row's id where the driver gives it.

        A column not named takes the table's default (as an ORM row would), or NULL; a primary key
        given as None is left out for the database to assign (SQLite's `lastrowid` is returned).
        """
        name = table.__tablename__
        found = self._defaults.get(name)
        if found is None:
            columns = table.__table__.columns
            if any(c.default is not None and not c.default.is_scalar for c in columns):
                raise ValueError(f"{name}: a column default that is not a constant needs an ORM insert")
            defaults = {c.key: c.default.arg for c in columns if c.default is not None}
            found = self._defaults[name] = (defaults, frozenset(c.key for c in table.__table__.primary_key))
        defaults, keys = found
        row = {**defaults, **values}
        for k in keys:
            if k in row and row[k] is None:
                del row[k]
        key = (name, tuple(row))
        c = self._cache.get(key)
        if c is None:
            c = self._cache[key] = _Compiled(insert(table.__table__), self.dialect, list(row))
        cursor = self._execute(conn, c, row)
        row_id = cursor.lastrowid
        cursor.close()
        return row_id

    def _compiled(self, statement: ClauseElement) -> _Compiled:
        c = self._cache.get(statement)
        if c is None:
            c = self._cache[statement] = _Compiled(statement, self.dialect, None)
        return c

    def _execute(self, conn: Connection, c: _Compiled, given: Mapping[str, Any]) -> Any:
        params = c.params(given)
        cursor = conn.connection.dbapi_connection.cursor()
        try:
            cursor.execute(c.sql, params)
        except self.dialect.loaded_dbapi.Error as e:
            cursor.close()
            raise exc.DBAPIError.instance(c.sql, params, e, self.dialect.loaded_dbapi.Error,
                                          dialect=self.dialect) from e
        return cursor
