"""The store ledger: the ONLY code that reads performance out of a Store (review and evals both use it).

`load_ledger(store, run=..., variant=..., since_ms=..., until_ms=...)` reads, in a few SQL queries,
- the closed trades joined with their signal (stated confidence, theories leaned on) -> `metrics.Trade`;
- the account's equity curve: one `AccountSnapshotRow` of stage "end" per completed cycle;
- every decision joined with its signal, gate verdict, LLM calls and snapshot -> `DecisionRecord`;
- what the risk gate did, per rule: how often it refused a trade and how often it shrank one;
- LLM usage (calls, tokens, cost, latency, schema-valid, repair and HOLD-on-failure rates);
- the manual broker's tickets: executed (with the slippage from the ticket's entry to the reported
  fill), skipped, still pending.

Filters: `run` selects the cycles of one run (a store can hold several accounts; the equity curve
needs one, so a store with several runs needs `run`); `variant` keeps the decisions and trades of
one "provider:model:prompt_variant" (the curve stays the run's account: with several variants in one
run the account is shared); `since_ms`/`until_ms` bound decision times for decisions, gate activity,
LLM usage and manual tickets, close times for trades and snapshot times for the curve (both ends inclusive).

Two scores of each LONG/SHORT decision against later candles, both independent of the broker's
fills: `directional_hits` (the move after the horizon went the stated way: directional accuracy)
and `bracket_outcomes` (the target was reached before the stop within the horizon: the event the
signal's confidence states, on which its Brier score and reliability curve are computed).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

import numpy as np
import orjson
import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field

from agent.store.store import Store
from agent.store.tables import (
    AccountSnapshotRow,
    ClosedTradeRow,
    CycleRow,
    DecisionCallRow,
    DecisionRow,
    FillRow,
    GateDecisionRow,
    OrderRow,
    SignalRow,
    SnapshotRow,
)
from evals.metrics import EquityCurve, Trade
from theories.candles import Candles

HOUR_MS = 3_600_000

# Reasons a Rejected verdict lists to explain, not to refuse (risk.gate puts them after the refusals):
# the correlation rule's observations when its action is "shrink". Counted as a refusal only when the
# verdict has no other refusal (then the rule's action must have been "reject").
INFORMATIONAL_CODES = frozenset({"correlation_unknown", "correlated_position"})
NOT_A_TRADE_CODES = frozenset({"hold"})  # a HOLD proposal is not a trade the gate refused


class LedgerError(ValueError):
    """The ledger cannot be read as asked (names what was wrong: an unknown run, several runs, bad bounds)."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class DecisionRecord(_Frozen):
    """One decision joined with its signal, gate verdict, LLM calls and snapshot."""

    decision_id: str
    cycle_id: str
    run: str
    symbol: str
    decision_ms: int
    outcome: str = Field(description="skipped | error | hold | rejected | ordered | order_failed")
    reason: str
    regime: str | None
    variant: str
    direction: str | None = Field(description="LONG | SHORT | HOLD; None without a signal (skipped, error).")
    confidence: float | None
    entry: float | None
    stop: float | None
    target: float | None
    horizon_hours: float | None
    theories: tuple[str, ...]
    last_price: float | None = Field(description="The last close the decision saw (its snapshot), quote.")
    llm_used: bool
    gate_status: str | None = Field(description="approved | rejected; None without a gate verdict.")
    gate_codes: tuple[str, ...]
    calls: int = Field(description="Synthesis calls made (the decision call and any repair).")
    repair_attempted: bool = Field(description="A repair call (attempt >= 1) was made.")
    repaired: bool = Field(description="The accepted signal came from a repair call.")
    schema_valid: bool = Field(description="A call returned an acceptable signal (outcome 'ok').")
    hold_on_failure: bool = Field(description="Fail-closed HOLD: no call returned an acceptable signal.")
    tokens_in: int
    tokens_out: int
    cost_usd: float
    latency_ms: float = Field(description="Sum of the decision's call latencies.")
    call_outcomes: tuple[str, ...] = Field(description="Outcome of each call, in attempt order.")
    cache_hits: int = Field(description="Calls answered from the call records.")
    tokens_estimated_calls: int = Field(description="Calls whose token counts are estimates.")


class RuleActivity(_Frozen):
    """What one risk rule did to trade proposals (HOLDs excluded)."""

    rule: str
    proposals: int = Field(description="Trade proposals (LONG/SHORT) the gate saw in the ledger.")
    rejected: int = Field(description="Proposals this rule refused (a rejected verdict listing it as a refusal).")
    shrank: int = Field(description="Approved trades this rule clamped (a reason with after < before).")
    rejected_rate: float | None = Field(description="rejected / proposals.")
    shrank_rate: float | None = Field(description="shrank / proposals.")
    codes: dict[str, int] = Field(description="Count per reason code (refusals and clamps).")


class LLMUsage(_Frozen):
    """LLM calls of the decisions that made any (data-skipped decisions make none)."""

    decisions: int = Field(description="Decisions with at least one synthesis call.")
    llm_decisions: int = Field(description="Of them, decided by an LLM provider (not the heuristic or a strategy).")
    calls: int
    cache_hits: int = Field(description="Calls answered from the call records (cost nothing).")
    tokens_estimated_calls: int = Field(description="Calls whose token counts are estimates (the server gave none).")
    tokens_in: int
    tokens_out: int
    cost_usd: float
    latency_ms: float = Field(description="Total latency of all calls.")
    tokens_per_decision: float | None = Field(description="(tokens_in + tokens_out) / decisions.")
    cost_per_decision: float | None
    latency_per_decision_ms: float | None = Field(description="Mean of each decision's summed call latency.")
    latency_p50_ms: float | None = Field(description="Median per-decision latency.")
    latency_p95_ms: float | None = Field(description="95% quantile of per-decision latency.")
    schema_valid_rate: float | None = Field(description="Decisions that got an acceptable signal / decisions.")
    first_attempt_valid_rate: float | None = Field(description="Decisions whose first call was acceptable.")
    repair_rate: float | None = Field(description="Decisions that needed a repair call / decisions.")
    repair_success_rate: float | None = Field(description="Repairs that produced an acceptable signal / repairs.")
    hold_on_failure_rate: float | None = Field(description="Fail-closed HOLDs / decisions.")
    outcomes: dict[str, int] = Field(description="Count of call outcomes (ok, invalid, timeout, ...).")


class ManualFill(_Frozen):
    """One executed manual ticket: the ticket's entry against the fill the person reported."""

    ticket: str = Field(description="Client order id.")
    decision_id: str
    symbol: str
    side: str
    quantity: float = Field(description="Base units the person reported.")
    ticket_entry: float = Field(description="The signal's entry price on the ticket, quote.")
    fill_price: float
    slippage: float = Field(description="Adverse slippage, fraction of the ticket entry: LONG (fill - entry) / entry, "
                            "SHORT (entry - fill) / entry; positive = worse for the trader.")
    slippage_quote: float = Field(description="slippage x entry x quantity: what it cost, quote.")
    delay_ms: int = Field(description="Fill time - ticket time.")


class ManualStats(_Frozen):
    """The manual broker's tickets: orders of broker 'manual'."""

    tickets: int
    executed: int = Field(description="Tickets with an entry fill.")
    skipped: int = Field(description="Tickets the person declined (status skipped).")
    pending: int = Field(description="Tickets still awaiting the person.")
    other: int = Field(description="Withdrawn or otherwise closed without an answer (e.g. cancelled).")
    execution_rate: float | None = Field(description="executed / (executed + skipped): of the answered tickets.")
    mean_slippage: float | None = Field(description="Mean adverse slippage of executed tickets, fraction.")
    median_slippage: float | None
    slippage_cost: float = Field(description="Sum of slippage_quote, quote.")
    fills: tuple[ManualFill, ...]


class Ledger(_Frozen):
    """Everything review and evals read from one store, for one run (and optionally one variant and period)."""

    run: str | None = Field(description="The run read (None only when the store has no cycles).")
    variant: str | None
    since_ms: int | None
    until_ms: int | None
    trades: tuple[Trade, ...] = Field(description="Closed trades, by close time.")
    curve: EquityCurve | None = Field(description="Account equity at the end of each cycle; None without cycles.")
    initial_balance: float | None
    decisions: tuple[DecisionRecord, ...] = Field(description="By decision time, then symbol.")
    gate: dict[str, RuleActivity] = Field(description="Per rule name, sorted.")
    llm: LLMUsage
    manual: ManualStats


# --- reading ---------------------------------------------------------------------------------------


def _t(model: type) -> sa.Table:
    return model.__table__


def _rows(conn: sa.Connection, stmt: sa.Select) -> list[Mapping[str, Any]]:
    return [r._mapping for r in conn.execute(stmt)]


def _runs(conn: sa.Connection) -> list[str]:
    c = _t(CycleRow)
    return [r[0] for r in conn.execute(sa.select(c.c.run).distinct().order_by(c.c.run))]


@contextmanager
def _snapshot(store: Store) -> Iterator[sa.Connection]:
    """A connection whose reads all see one state of the store, while a running cycle keeps writing.

    SQLite (WAL): an explicit BEGIN holds one read snapshot until the end (the driver would otherwise
    run each SELECT in its own); PostgreSQL: REPEATABLE READ. Nothing is written: rolled back.
    """
    with store.engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN")
        elif conn.dialect.name == "postgresql":
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        try:
            yield conn
        finally:
            conn.rollback()


def load_ledger(store: Store, *, run: str | None = None, variant: str | None = None, since_ms: int | None = None,
                until_ms: int | None = None) -> Ledger:
    """The ledger of one run of `store` (see the module docstring for the filters)."""
    if since_ms is not None and until_ms is not None and until_ms < since_ms:
        raise LedgerError(f"until_ms {until_ms} is before since_ms {since_ms}")
    cyc, dec, sig, gate = _t(CycleRow), _t(DecisionRow), _t(SignalRow), _t(GateDecisionRow)
    calls_t, snap, ct, acct = _t(DecisionCallRow), _t(SnapshotRow), _t(ClosedTradeRow), _t(AccountSnapshotRow)
    with _snapshot(store) as conn:
        runs = _runs(conn)
        if run is None:
            if len(runs) > 1:
                raise LedgerError(f"the store {store.display_url} holds the runs {runs}: choose one (run=...), "
                                  "each has its own account")
            run = runs[0] if runs else None
        elif run not in runs:
            raise LedgerError(f"no run {run!r} in the store {store.display_url}; its runs: {runs}")

        def in_run(stmt: sa.Select, cycle_col: sa.Column) -> sa.Select:
            return stmt.join(cyc, cyc.c.cycle_id == cycle_col).where(cyc.c.run == run)

        # decisions, with signal, gate verdict and snapshot (outer joins: a skipped decision has none)
        stmt = (sa.select(dec, cyc.c.run, sig.c.direction, sig.c.confidence, sig.c.entry, sig.c.stop, sig.c.target,
                          sig.c.horizon_hours, sig.c.theories_json, sig.c.hold_reason, sig.c.llm_used,
                          gate.c.status.label("gate_status"), gate.c.codes.label("gate_codes"),
                          gate.c.reasons_json, snap.c.last_price)
                .join(cyc, cyc.c.cycle_id == dec.c.cycle_id)
                .outerjoin(sig, sig.c.decision_id == dec.c.decision_id)
                .outerjoin(gate, gate.c.decision_id == dec.c.decision_id)
                .outerjoin(snap, snap.c.decision_id == dec.c.decision_id)
                .where(cyc.c.run == run))
        if variant is not None:
            stmt = stmt.where(dec.c.variant == variant)
        if since_ms is not None:
            stmt = stmt.where(dec.c.decision_ms >= since_ms)
        if until_ms is not None:
            stmt = stmt.where(dec.c.decision_ms <= until_ms)
        drows = _rows(conn, stmt.order_by(dec.c.decision_ms, dec.c.symbol))

        cstmt = in_run(sa.select(calls_t).join(dec, dec.c.decision_id == calls_t.c.decision_id), dec.c.cycle_id)
        if variant is not None:
            cstmt = cstmt.where(dec.c.variant == variant)
        if since_ms is not None:
            cstmt = cstmt.where(dec.c.decision_ms >= since_ms)
        if until_ms is not None:
            cstmt = cstmt.where(dec.c.decision_ms <= until_ms)
        calls_by: dict[str, list[Mapping[str, Any]]] = {}
        for c in _rows(conn, cstmt.order_by(calls_t.c.decision_id, calls_t.c.attempt, calls_t.c.id)):
            calls_by.setdefault(c["decision_id"], []).append(c)

        # closed trades (the recording cycle belongs to the run) with their signal
        tstmt = in_run(sa.select(ct, sig.c.confidence, sig.c.theories_json)
                       .outerjoin(sig, sig.c.decision_id == ct.c.decision_id), ct.c.cycle_id)
        if variant is not None:
            tstmt = tstmt.where(ct.c.variant == variant)
        if since_ms is not None:
            tstmt = tstmt.where(ct.c.closed_ms >= since_ms)
        if until_ms is not None:
            tstmt = tstmt.where(ct.c.closed_ms <= until_ms)
        trows = _rows(conn, tstmt.order_by(ct.c.closed_ms, ct.c.client_order_id))

        # the account curve: one "end" snapshot per completed cycle
        astmt = in_run(sa.select(acct.c.time_ms, acct.c.equity, acct.c.initial_balance), acct.c.cycle_id)
        astmt = astmt.where(acct.c.stage == "end")
        if since_ms is not None:
            astmt = astmt.where(acct.c.time_ms >= since_ms)
        if until_ms is not None:
            astmt = astmt.where(acct.c.time_ms <= until_ms)
        arows = _rows(conn, astmt.order_by(acct.c.time_ms, acct.c.id))

        manual = _manual_stats(conn, run, variant, since_ms, until_ms)

    decisions = tuple(_decision(d, calls_by.get(d["decision_id"], [])) for d in drows)
    trades = tuple(_trade(t) for t in trows)
    curve = None
    if arows:
        times, equity = [], []
        for a in arows:  # one per cycle; a duplicate time would be a store defect: keep the later row
            if times and a["time_ms"] == times[-1]:
                equity[-1] = a["equity"]
                continue
            times.append(a["time_ms"])
            equity.append(a["equity"])
        curve = EquityCurve.of(times, equity)
    return Ledger(
        run=run, variant=variant, since_ms=since_ms, until_ms=until_ms, trades=trades, curve=curve,
        initial_balance=float(arows[0]["initial_balance"]) if arows else None, decisions=decisions,
        gate=gate_activity(drows), llm=llm_usage(decisions), manual=manual,
    )


@lru_cache(maxsize=4096)
def _theories(raw: str | None) -> tuple[str, ...]:
    """A signal's theories_json as a tuple (cached: a run repeats the same few lists many times)."""
    return tuple(orjson.loads(raw)) if raw else ()


def _trade(t: Mapping[str, Any]) -> Trade:
    return Trade(
        trade_id=t["client_order_id"], decision_id=t["decision_id"], variant=t["variant"], symbol=t["symbol"],
        side=t["side"], regime=t["regime"], opened_ms=t["opened_ms"], closed_ms=t["closed_ms"], entry=t["entry"],
        exit=t["exit"], quantity=t["quantity"], fees=t["fees"], pnl=t["pnl"], risk_amount=t["risk_amount"],
        r_multiple=t["r_multiple"], exit_reason=t["exit_reason"], confidence=t["confidence"],
        theories=_theories(t["theories_json"]),
    )


def _decision(d: Mapping[str, Any], calls: Sequence[Mapping[str, Any]]) -> DecisionRecord:
    """One DecisionRecord from the rows the cycle wrote for it."""
    ok = [c for c in calls if c["outcome"] == "ok"]
    has_signal = d["direction"] is not None
    tokens_in = tokens_out = cache_hits = estimated = 0
    cost = latency = 0.0
    for c in calls:
        tokens_in += c["tokens_in"] or 0
        tokens_out += c["tokens_out"] or 0
        cost += c["cost_usd"]
        latency += c["latency_ms"]
        cache_hits += bool(c["cache_hit"])
        estimated += bool(c["tokens_estimated"])
    return DecisionRecord(
        decision_id=d["decision_id"], cycle_id=d["cycle_id"], run=d["run"], symbol=d["symbol"],
        decision_ms=int(d["decision_ms"]), outcome=d["outcome"], reason=d["reason"], regime=d["regime"],
        variant=d["variant"], direction=d["direction"], confidence=_float(d["confidence"]), entry=_float(d["entry"]),
        stop=_float(d["stop"]), target=_float(d["target"]), horizon_hours=_float(d["horizon_hours"]),
        theories=_theories(d["theories_json"]), last_price=_float(d["last_price"]),
        llm_used=bool(d["llm_used"]) if has_signal else False, gate_status=d["gate_status"],
        gate_codes=tuple(x for x in (d["gate_codes"] or "").split(",") if x), calls=len(calls),
        repair_attempted=any(c["attempt"] >= 1 for c in calls), repaired=any(c["attempt"] >= 1 for c in ok),
        schema_valid=bool(ok), hold_on_failure=has_signal and d["hold_reason"] is not None,
        tokens_in=int(tokens_in), tokens_out=int(tokens_out), cost_usd=float(cost), latency_ms=float(latency),
        call_outcomes=tuple(c["outcome"] for c in calls), cache_hits=cache_hits, tokens_estimated_calls=estimated,
    )


def _float(x: Any) -> float | None:
    return None if x is None else float(x)


# --- gate activity ---------------------------------------------------------------------------------


def _refusals(reasons: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The reasons of a Rejected verdict that refused (not the explanations listed after them).

    A Rejected lists the refusals first, then what explains the size so far: sizing steps and clamps
    (they carry `before`/`after`) and the correlation rule's observations in its "shrink" mode.
    """
    hard = [r for r in reasons if r.get("before") is None and r.get("after") is None]
    refusing = [r for r in hard if r["code"] not in INFORMATIONAL_CODES]
    return refusing or hard  # only correlation observations: the rule itself refused ("reject" mode)


def _clamps(reasons: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Reasons of an Approved verdict that made the trade smaller: a clamp with after < before."""
    return [r for r in reasons if r.get("before") is not None and r.get("after") is not None
            and r["after"] < r["before"]]


def gate_activity(decision_rows: Sequence[Mapping[str, Any]]) -> dict[str, RuleActivity]:
    """Per rule: how many trade proposals it refused and how many approved trades it shrank.

    `decision_rows` carry `direction`, `gate_status` and `reasons_json` (as load_ledger reads them).
    """
    proposals = 0
    rejected: dict[str, int] = {}
    shrank: dict[str, int] = {}
    codes: dict[str, dict[str, int]] = {}
    for d in decision_rows:
        if d.get("gate_status") is None or d.get("direction") not in ("LONG", "SHORT"):
            continue
        proposals += 1
        reasons = orjson.loads(d["reasons_json"] or "[]")
        hits = _refusals(reasons) if d["gate_status"] == "rejected" else _clamps(reasons)
        counter = rejected if d["gate_status"] == "rejected" else shrank
        seen: set[str] = set()
        for r in hits:
            if r["code"] in NOT_A_TRADE_CODES:
                continue
            rule_codes = codes.setdefault(r["rule"], {})
            rule_codes[r["code"]] = rule_codes.get(r["code"], 0) + 1
            if r["rule"] not in seen:  # a rule counts once per proposal, however many reasons it gave
                seen.add(r["rule"])
                counter[r["rule"]] = counter.get(r["rule"], 0) + 1
    out = {}
    for rule in sorted(codes):
        rj, sh = rejected.get(rule, 0), shrank.get(rule, 0)
        out[rule] = RuleActivity(rule=rule, proposals=proposals, rejected=rj, shrank=sh,
                                 rejected_rate=rj / proposals if proposals else None,
                                 shrank_rate=sh / proposals if proposals else None,
                                 codes=dict(sorted(codes[rule].items())))
    return out


# --- LLM usage -------------------------------------------------------------------------------------


def llm_usage(decisions: Sequence[DecisionRecord]) -> LLMUsage:
    """LLMUsage of the decisions that made at least one call (definitions in the field descriptions)."""
    ds = [d for d in decisions if d.calls]
    n = len(ds)
    lat = np.array([d.latency_ms for d in ds], dtype=float)
    outcomes: dict[str, int] = {}
    for d in ds:
        for o in d.call_outcomes:
            outcomes[o] = outcomes.get(o, 0) + 1
    tin, tout = sum(d.tokens_in for d in ds), sum(d.tokens_out for d in ds)
    cost = float(sum(d.cost_usd for d in ds))
    repairs = sum(d.repair_attempted for d in ds)

    def rate(k: int, of: int) -> float | None:
        return k / of if of else None

    return LLMUsage(
        decisions=n, llm_decisions=sum(d.llm_used for d in ds), calls=sum(d.calls for d in ds),
        cache_hits=sum(d.cache_hits for d in ds), tokens_estimated_calls=sum(d.tokens_estimated_calls for d in ds),
        tokens_in=tin, tokens_out=tout, cost_usd=cost,
        latency_ms=float(lat.sum()), tokens_per_decision=rate(tin + tout, n), cost_per_decision=cost / n if n else None,
        latency_per_decision_ms=float(lat.mean()) if n else None,
        latency_p50_ms=float(np.median(lat)) if n else None,
        latency_p95_ms=float(np.quantile(lat, 0.95)) if n else None,
        schema_valid_rate=rate(sum(d.schema_valid for d in ds), n),
        first_attempt_valid_rate=rate(sum(bool(d.call_outcomes) and d.call_outcomes[0] == "ok" for d in ds), n),
        repair_rate=rate(repairs, n), repair_success_rate=rate(sum(d.repaired for d in ds), repairs),
        hold_on_failure_rate=rate(sum(d.hold_on_failure for d in ds), n), outcomes=dict(sorted(outcomes.items())),
    )


# --- manual tickets --------------------------------------------------------------------------------


def _manual_stats(conn: sa.Connection, run: str | None, variant: str | None, since_ms: int | None,
                  until_ms: int | None) -> ManualStats:
    orders, fills, dec, sig, cyc = _t(OrderRow), _t(FillRow), _t(DecisionRow), _t(SignalRow), _t(CycleRow)
    stmt = (sa.select(orders, sig.c.entry.label("ticket_entry"))
            .join(dec, dec.c.decision_id == orders.c.decision_id)
            .join(cyc, cyc.c.cycle_id == dec.c.cycle_id)
            .outerjoin(sig, sig.c.decision_id == orders.c.decision_id)
            .where(cyc.c.run == run, orders.c.broker == "manual"))
    if variant is not None:
        stmt = stmt.where(dec.c.variant == variant)
    if since_ms is not None:
        stmt = stmt.where(dec.c.decision_ms >= since_ms)
    if until_ms is not None:
        stmt = stmt.where(dec.c.decision_ms <= until_ms)
    tickets = _rows(conn, stmt.order_by(orders.c.created_ms, orders.c.client_order_id))
    opens: dict[str, list[Mapping[str, Any]]] = {}
    if tickets:
        fstmt = (sa.select(fills).join(orders, orders.c.client_order_id == fills.c.client_order_id)
                 .join(dec, dec.c.decision_id == orders.c.decision_id)
                 .join(cyc, cyc.c.cycle_id == dec.c.cycle_id)
                 .where(cyc.c.run == run, orders.c.broker == "manual", fills.c.action == "open"))
        for f in _rows(conn, fstmt.order_by(fills.c.time_ms, fills.c.fill_id)):
            opens.setdefault(f["client_order_id"], []).append(f)
    executed: list[ManualFill] = []
    skipped = pending = other = 0
    for o in tickets:
        got = opens.get(o["client_order_id"])
        if got:
            q = sum(f["quantity"] for f in got)
            price = sum(f["quantity"] * f["price"] for f in got) / q
            entry = o["ticket_entry"] or o["limit_price"]
            if entry is None:  # an order without a signal cannot happen in the cycle; never guess an entry
                other += 1
                continue
            sign = 1.0 if o["side"] == "LONG" else -1.0
            slip = sign * (price - entry) / entry
            executed.append(ManualFill(
                ticket=o["client_order_id"], decision_id=o["decision_id"], symbol=o["symbol"], side=o["side"],
                quantity=q, ticket_entry=entry, fill_price=price, slippage=slip, slippage_quote=slip * entry * q,
                delay_ms=int(got[0]["time_ms"] - o["created_ms"]),
            ))
        elif o["status"] == "skipped":
            skipped += 1
        elif o["status"] == "awaiting_person":
            pending += 1
        else:
            other += 1
    slips = np.array([f.slippage for f in executed], dtype=float)
    answered = len(executed) + skipped
    return ManualStats(
        tickets=len(tickets), executed=len(executed), skipped=skipped, pending=pending, other=other,
        execution_rate=len(executed) / answered if answered else None,
        mean_slippage=float(slips.mean()) if slips.size else None,
        median_slippage=float(np.median(slips)) if slips.size else None,
        slippage_cost=float(sum(f.slippage_quote for f in executed)), fills=tuple(executed),
    )


# --- directional accuracy --------------------------------------------------------------------------


def directional_hits(decisions: Sequence[DecisionRecord], candles: Mapping[str, Candles]) -> list[tuple[str, bool]]:
    """(decision id, hit) for each LONG/SHORT decision whose horizon has closed in `candles`.

    Hit: the close of the first candle closing at or after decision time + horizon_hours is above
    (LONG) or below (SHORT) the last close the decision saw (its snapshot's last price, else the last
    candle closed by the decision time). No move counts as a miss. Decisions whose horizon lies beyond
    the data, or whose symbol has no candles, are left out (their outcome is not known yet).
    """
    out: list[tuple[str, bool]] = []
    close_times: dict[str, np.ndarray] = {}
    for d in decisions:
        if d.direction not in ("LONG", "SHORT") or d.horizon_hours is None:
            continue
        c = candles.get(d.symbol)
        if c is None or not len(c):
            continue
        if d.symbol not in close_times:
            close_times[d.symbol] = c.close_time
        close_time = close_times[d.symbol]
        ref = d.last_price
        if ref is None:
            i = int(np.searchsorted(close_time, d.decision_ms, side="right")) - 1
            if i < 0:
                continue
            ref = float(c.close[i])
        j = int(np.searchsorted(close_time, d.decision_ms + round(d.horizon_hours * HOUR_MS), side="left"))
        if j >= len(c):
            continue
        later = float(c.close[j])
        out.append((d.decision_id, later > ref if d.direction == "LONG" else later < ref))
    return out


def bracket_outcomes(decisions: Sequence[DecisionRecord], candles: Mapping[str, Candles]) -> list[tuple[str, bool]]:
    """(decision id, target first) for each LONG/SHORT decision with a stop and a target whose bracket is resolved.

    The event a signal's confidence states (`agent.signal.Signal.confidence`: P(target hit before
    stop)), scored on the candles: from the first candle opening at or after the decision time
    through the first one closing at or after decision time + horizon_hours, the first candle whose
    range reaches the stop or the target decides. Reaching the stop (low <= stop for a LONG, high >=
    stop for a SHORT) is a miss, and so is a candle reaching both, because candles do not say which
    came first (the paper broker's rule). Reaching the target is a hit. Reaching neither by the
    horizon is a miss. A decision is left out when the data end before its horizon with neither
    level reached, or when its symbol has no candles: its outcome is not known yet.
    """
    out: list[tuple[str, bool]] = []
    cut: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}
    for d in decisions:
        if d.direction not in ("LONG", "SHORT") or d.horizon_hours is None or d.stop is None or d.target is None:
            continue
        c = candles.get(d.symbol)
        if c is None or not len(c):
            continue
        if d.symbol not in cut:
            cut[d.symbol] = (c.time, c.close_time, c.high, c.low)
        open_time, close_time, high, low = cut[d.symbol]
        first = int(np.searchsorted(open_time, d.decision_ms, side="left"))
        end = int(np.searchsorted(close_time, d.decision_ms + round(d.horizon_hours * HOUR_MS), side="left"))
        h, lo = high[first:end + 1], low[first:end + 1]
        stop_hit, target_hit = (lo <= d.stop, h >= d.target) if d.direction == "LONG" else (h >= d.stop, lo <= d.target)
        decided = np.flatnonzero(stop_hit | target_hit)
        if decided.size:
            out.append((d.decision_id, not bool(stop_hit[decided[0]])))
        elif end < len(c):  # the horizon's candle is in the data and neither level was reached
            out.append((d.decision_id, False))
    return out


__all__ = [
    "DecisionRecord", "LLMUsage", "Ledger", "LedgerError", "ManualFill", "ManualStats", "RuleActivity",
    "bracket_outcomes", "directional_hits", "gate_activity", "llm_usage", "load_ledger",
]
