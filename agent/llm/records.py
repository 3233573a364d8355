"""The LLM call records: audit trail, cache and replay source in one SQLite table (sqlmodel, WAL).

Every call is a row: provider, model, prompt variant and template version, prompt hash, the raw
request and response, tokens in/out, latency, cost, outcome. A row that holds a server's reply
answers an identical later request (same key: provider, model, prompt hash, parameters) at zero
cost; the reuse is recorded too, as a row pointing at the original (`answered_by`). Failures of
the transport (timeouts, 5xx) are recorded but never reused, so the next run asks again.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, event, func
from sqlmodel import Field, Session, SQLModel, create_engine, select

from agent.llm.base import Reply
from agent.store.statements import CompiledStatements


class LLMCall(SQLModel, table=True):
    __tablename__ = "llm_calls"

    id: int | None = Field(default=None, primary_key=True)
    created_ms: int = Field(index=True, description="When the call started, UTC epoch ms.")
    request_key: str = Field(index=True, description="sha256 of provider, model, prompt hash and parameters.")
    provider: str
    model: str
    prompt_variant: str
    template_version: str
    template_sha256: str
    prompt_hash: str
    symbol: str
    attempt: int = Field(description="0 for the decision call, 1 for the repair retry.")
    request_json: str = Field(description="The request as sent: messages, parameters, schema.")
    reply_json: str | None = Field(default=None, description="The reply in provider-neutral form (Reply).")
    tokens_in: int | None = None
    tokens_out: int | None = None
    tokens_estimated: bool = Field(default=False, description="True when the server reported no usage.")
    latency_ms: float = 0.0
    cost_usd: float = 0.0
    outcome: str = Field(description="ok, invalid, refused, truncated, content_filter, empty, timeout, ...")
    error: str | None = None
    answered_by: int | None = Field(default=None, description="Cache hit: the id of the call whose reply was reused.")
    signal_json: str | None = None

    def reply(self) -> Reply | None:
        return Reply.model_validate_json(self.reply_json) if self.reply_json else None


_T = LLMCall.__table__
_FIND_REPLY = (
    select(_T)
    .where(_T.c.request_key == bindparam("key"))
    .where(_T.c.reply_json.is_not(None), _T.c.answered_by.is_(None))
    .order_by(_T.c.id)
    .limit(1)
)


class CallRecords:
    """The store of LLM calls at `path` (a SQLite file, created with its folder when missing)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.engine = create_engine(f"sqlite:///{self.path}")
        event.listen(self.engine, "connect", _sqlite_pragmas)
        SQLModel.metadata.create_all(self.engine, tables=[LLMCall.__table__])
        # the two statements of every call, compiled once: see agent.store.statements
        self._sql = CompiledStatements(self.engine.dialect)

    def add(self, call: LLMCall) -> LLMCall:
        """Insert the call (one short transaction); the call gets its row id."""
        call.id = self.record(call.model_dump(exclude={"id"} if call.id is None else set()))
        return call

    def record(self, values: Mapping[str, Any]) -> int:
        """Insert one call given as its `LLMCall` column values (one short transaction); returns its row id."""
        # a plain INSERT rather than an ORM session: this runs once per decision in a replay, and the
        # session's unit of work and the refresh after commit cost more than the write itself
        with self.engine.begin() as conn:
            row_id = self._sql.insert(conn, LLMCall, values)
        return values["id"] if values.get("id") is not None else int(row_id)

    def find_reply(self, request_key: str) -> LLMCall | None:
        """The first recorded call with this key that holds a server's reply (not a reuse, not a failure)."""
        # asked once per decision, and in a replay it is nearly always a miss
        with self.engine.connect() as conn:
            found = self._sql.rows(conn, _FIND_REPLY, {"key": request_key})
        if not found:
            return None
        return LLMCall.model_validate(dict(zip(_FIND_REPLY.selected_columns.keys(), found[0], strict=True)))

    def spent_since(self, since_ms: int) -> float:
        """USD spent on calls started at or after `since_ms`."""
        with Session(self.engine) as session:
            total = session.exec(select(func.sum(LLMCall.cost_usd)).where(LLMCall.created_ms >= since_ms)).one()
        return float(total or 0.0)

    def all(self) -> list[LLMCall]:
        with Session(self.engine) as session:
            return list(session.exec(select(LLMCall).order_by(LLMCall.id)).all())

    def close(self) -> None:
        self.engine.dispose()


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # WAL: readers (review, evals) never block the writer; NORMAL sync is durable enough with WAL.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()
