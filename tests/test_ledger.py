"""evals.ledger on real SQLite stores filled by real cycles, checked against plain SQL on the same file.

Paper: 24 hourly cycles on the bundled sample (BTC, ETH, SOL) with the heuristic synthesiser, the
theory set cut to what it votes with and the regime filter relaxed (any direction, no confidence
floor) so that trades happen. Manual: 10 hourly cycles with the manual broker, then a person
executes one ticket at a reported price, skips one and leaves one pending.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from agent.brokers.manual import ManualBroker
from agent.brokers.paper import PaperBroker
from agent.cycle import CycleDeps, CycleSettings, FileMarketData, broker_key, record_answer, run_cycle
from agent.llm.budget import CostBudget
from agent.llm.heuristic import HeuristicProvider
from agent.llm.prompt import PromptTemplate
from agent.llm.records import CallRecords
from agent.llm.synthesis import Synthesiser
from agent.signal import SignalRules
from agent.store import Store
from agent.store.tables import OrderRow
from evals.ledger import (
    DecisionRecord,
    LedgerError,
    bracket_outcomes,
    directional_hits,
    gate_activity,
    llm_usage,
    load_ledger,
)
from evals.metrics import trade_stats
from risk import RiskConfig, RiskGate
from risk.config import RegimeFilterConfig, RegimePolicy, SizingConfig
from theories.base import FitCache
from theories.candles import Candles
from theories.regime import REGIMES

H = 3_600_000
SAMPLE_END = 1763251200000  # the bundled sample's last close, 2025-11-16T00:00Z
PAPER_HOURS = [SAMPLE_END - (25 - k) * H for k in range(24)]  # 2025-11-15 00:00 .. 23:00
MANUAL_HOURS = PAPER_HOURS[-12:-2]  # the same hours: the shared fit cache answers them
SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")
THEORIES = {"montecarlo": None, "regime": {"fit_window": 300, "search_reps": 0}, "kalman": None, "context": None}
RELAXED = RiskConfig(
    sizing=SizingConfig(fee_rate=0.0),
    regime=RegimeFilterConfig(
        policies={r: RegimePolicy(directions="both", multiplier=1.0, min_confidence=0.0) for r in REGIMES}
    ),
)
FITS = FitCache()
T0 = 1_735_689_600_000  # 2025-01-01T00:00Z


def deps_for(store: Store, records: CallRecords, broker, run: str) -> CycleDeps:
    synth = Synthesiser(provider=HeuristicProvider(), template=PromptTemplate.load("baseline"), rules=SignalRules(),
                        price=None, budget=CostBudget(daily_usd=1, per_cycle_usd=1), records=records)
    return CycleDeps(store=store, broker=broker, synthesiser=synth, gate=RiskGate(RELAXED), data=FileMarketData(),
                     settings=CycleSettings(symbols=SYMBOLS, theories=THEORIES, run=run), fit_cache=FITS,
                     wall_ms=lambda: 1_800_000_000_000)


@pytest.fixture(scope="module")
def paper(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper")
    path = root / "store.sqlite"
    store, records = Store.at(path), CallRecords(root / "calls.sqlite")
    deps = deps_for(store, records, PaperBroker(), "paper")
    for t in PAPER_HOURS:
        run_cycle(t, deps)
    yield store, path
    store.close()
    records.close()


def sql(path: Path, query: str, *args) -> list[sqlite3.Row]:
    con = sqlite3.connect(path)
    con.row_factory = sqlite3.Row
    try:
        return con.execute(query, args).fetchall()
    finally:
        con.close()


def test_trades_equal_the_closed_trades_table_joined_with_their_signals(paper):
    store, path = paper
    ledger = load_ledger(store)
    rows = sql(path, "SELECT t.*, s.confidence AS conf, s.theories_json FROM closed_trades t "
                     "JOIN cycles c ON c.cycle_id = t.cycle_id LEFT JOIN signals s ON s.decision_id = t.decision_id "
                     "WHERE c.run = 'paper' ORDER BY t.closed_ms, t.client_order_id")
    assert rows, "the relaxed heuristic should close trades in 24 hours"
    assert len(ledger.trades) == len(rows)
    for t, r in zip(ledger.trades, rows, strict=True):
        assert (t.trade_id, t.decision_id, t.symbol, t.side, t.variant, t.regime) == (
            r["client_order_id"], r["decision_id"], r["symbol"], r["side"], r["variant"], r["regime"])
        assert (t.opened_ms, t.closed_ms, t.entry, t.exit, t.quantity, t.fees, t.pnl) == (
            r["opened_ms"], r["closed_ms"], r["entry"], r["exit"], r["quantity"], r["fees"], r["pnl"])
        assert (t.risk_amount, t.r_multiple, t.exit_reason) == (r["risk_amount"], r["r_multiple"], r["exit_reason"])
        assert t.confidence == r["conf"] and list(t.theories) == json.loads(r["theories_json"])
        assert t.win == (r["outcome"] == "win")
    (total,) = sql(path, "SELECT SUM(pnl) AS pnl, SUM(fees) AS fees, COUNT(*) AS n FROM closed_trades")
    s = trade_stats(ledger.trades)
    assert s.total_pnl == pytest.approx(total["pnl"]) and s.fees == pytest.approx(total["fees"])


def test_the_curve_is_the_end_of_cycle_equity_one_point_per_cycle(paper):
    store, path = paper
    ledger = load_ledger(store, run="paper")
    rows = sql(path, "SELECT a.time_ms, a.equity, a.initial_balance FROM account_snapshots a "
                     "JOIN cycles c ON c.cycle_id = a.cycle_id WHERE c.run = 'paper' AND a.stage = 'end' "
                     "ORDER BY a.time_ms")
    assert list(ledger.curve.time_ms) == [r["time_ms"] for r in rows] == PAPER_HOURS
    assert list(ledger.curve.equity) == [r["equity"] for r in rows]
    assert ledger.initial_balance == rows[0]["initial_balance"] == 10_000


def test_decisions_are_joined_with_signal_gate_and_calls(paper):
    store, path = paper
    ledger = load_ledger(store)
    rows = sql(path, "SELECT d.decision_id, d.outcome, d.variant, s.direction, s.confidence, s.horizon_hours, "
                     "s.theories_json, g.status, g.codes, f.last_price, "
                     "(SELECT COUNT(*) FROM decision_llm_calls k WHERE k.decision_id = d.decision_id) AS calls "
                     "FROM decisions d LEFT JOIN signals s USING (decision_id) "
                     "LEFT JOIN gate_decisions g USING (decision_id) LEFT JOIN feature_snapshots f USING (decision_id) "
                     "ORDER BY d.decision_ms, d.symbol")
    assert len(ledger.decisions) == len(rows) == len(PAPER_HOURS) * len(SYMBOLS)
    for d, r in zip(ledger.decisions, rows, strict=True):
        assert (d.decision_id, d.outcome, d.variant, d.direction, d.confidence, d.horizon_hours) == (
            r["decision_id"], r["outcome"], r["variant"], r["direction"], r["confidence"], r["horizon_hours"])
        assert (d.gate_status, ",".join(d.gate_codes), d.calls, d.last_price) == (
            r["status"], r["codes"], r["calls"], r["last_price"])
        assert list(d.theories) == json.loads(r["theories_json"])
        assert d.schema_valid and not d.hold_on_failure and not d.llm_used  # the heuristic always answers
    (calls,) = sql(path, "SELECT COUNT(*) AS n, SUM(latency_ms) AS lat FROM decision_llm_calls")
    assert ledger.llm.calls == calls["n"] and ledger.llm.latency_ms == pytest.approx(calls["lat"])
    assert ledger.llm.schema_valid_rate == 1.0 and ledger.llm.cost_usd == 0 and ledger.llm.llm_decisions == 0


def test_gate_activity_counts_each_refusal_code_as_the_table_records_it(paper):
    store, path = paper
    ledger = load_ledger(store)
    assert ledger.gate, "the gate refused or shrank something in 24 hours"
    (no_edge,) = sql(path, "SELECT COUNT(*) AS n FROM gate_decisions g JOIN signals s USING (decision_id) "
                           "WHERE g.status = 'rejected' AND s.direction != 'HOLD' AND ',' || g.codes || ',' "
                           "LIKE '%,no_edge,%'")
    assert ledger.gate["sizing"].codes.get("no_edge", 0) == no_edge["n"]
    (proposals,) = sql(path, "SELECT COUNT(*) AS n FROM signals WHERE direction != 'HOLD'")
    assert {a.proposals for a in ledger.gate.values()} == {proposals["n"]}
    (approved,) = sql(path, "SELECT COUNT(*) AS n FROM gate_decisions WHERE status = 'approved'")
    assert all(a.shrank <= approved["n"] for a in ledger.gate.values())
    assert "gate" not in ledger.gate  # the HOLD 'refusal' is not a rule refusing a trade


def test_filters_by_variant_and_time(paper):
    store, path = paper
    (variant,) = {r["variant"] for r in sql(path, "SELECT DISTINCT variant FROM decisions")}
    assert variant.startswith("heuristic:")
    assert len(load_ledger(store, variant=variant).decisions) == len(PAPER_HOURS) * len(SYMBOLS)
    other = load_ledger(store, variant="openai:gpt:baseline")
    assert other.decisions == () and other.trades == () and other.llm.decisions == 0
    since, until = PAPER_HOURS[10], PAPER_HOURS[20]
    part = load_ledger(store, since_ms=since, until_ms=until)
    assert {d.decision_ms for d in part.decisions} == set(PAPER_HOURS[10:21])
    assert part.curve.time_ms == tuple(PAPER_HOURS[10:21])
    (n,) = sql(path, "SELECT COUNT(*) AS n FROM closed_trades WHERE closed_ms BETWEEN ? AND ?", since, until)
    assert len(part.trades) == n["n"]
    with pytest.raises(LedgerError, match="before since_ms"):
        load_ledger(store, since_ms=until, until_ms=since)


def test_an_unknown_run_and_an_ambiguous_store_are_refused_with_the_runs_it_holds(paper, tmp_path):
    store, _ = paper
    with pytest.raises(LedgerError, match=r"no run 'live'.*\['paper'\]"):
        load_ledger(store, run="live")
    two = Store.at(tmp_path / "two.sqlite")
    records = CallRecords(tmp_path / "calls.sqlite")
    for run in ("a", "b"):
        run_cycle(PAPER_HOURS[-1], deps_for(two, records, PaperBroker(), run))
    with pytest.raises(LedgerError, match=r"\['a', 'b'\]"):
        load_ledger(two)
    assert len(load_ledger(two, run="b").curve) == 1
    two.close()
    records.close()


def test_an_empty_store_gives_an_empty_ledger_not_a_crash(tmp_path):
    store = Store.at(tmp_path / "empty.sqlite")
    ledger = load_ledger(store)
    assert (ledger.run, ledger.curve, ledger.trades, ledger.decisions, ledger.gate) == (None, None, (), (), {})
    assert ledger.llm.decisions == 0 and ledger.llm.schema_valid_rate is None and ledger.manual.tickets == 0
    ledger.model_dump_json()
    store.close()


def test_directional_hits_compare_the_close_after_the_horizon_with_the_price_seen(paper):
    store, _ = paper
    ledger = load_ledger(store)
    data = FileMarketData()
    candles = {s: data.candles(s, SAMPLE_END) for s in SYMBOLS}
    hits = dict(directional_hits(ledger.decisions, candles))
    directional = [d for d in ledger.decisions if d.direction in ("LONG", "SHORT")]
    assert directional and set(hits) <= {d.decision_id for d in directional}
    for d in directional:
        c = candles[d.symbol]
        later = d.decision_ms + round(d.horizon_hours * H)
        closes = c.close[c.close_time >= later]
        if not closes.size:
            assert d.decision_id not in hits  # not known yet
            continue
        up = closes[0] > d.last_price
        assert hits[d.decision_id] == (up if d.direction == "LONG" else closes[0] < d.last_price)


def _candles(closes: list[float]) -> Candles:
    t = T0 + np.arange(len(closes), dtype=np.int64) * H
    c = np.asarray(closes, dtype=float)
    return Candles(time=t, open=c, high=c, low=c, close=c, volume=np.ones_like(c), symbol="X/USDT", interval_ms=H)


def _record(direction: str | None, decision_ms: int, horizon: float | None, last: float | None = None,
            **kw) -> DecisionRecord:
    base = dict(decision_id=f"d{decision_ms}{direction}", cycle_id="c", run="r", symbol="X/USDT",
                decision_ms=decision_ms, outcome="hold", reason="", regime=None, variant="v", direction=direction,
                confidence=0.6, entry=None, stop=None, target=None, horizon_hours=horizon, theories=(),
                last_price=last, llm_used=True, gate_status=None, gate_codes=(), calls=1, repair_attempted=False,
                repaired=False, schema_valid=True, hold_on_failure=False, tokens_in=0, tokens_out=0, cost_usd=0.0,
                latency_ms=0.0, call_outcomes=("ok",), cache_hits=0, tokens_estimated_calls=0)
    base.update(kw)
    return DecisionRecord(**base)


def test_directional_hits_by_hand_on_five_candles():
    # closes 10, 11, 12, 11, 10 for the candles closing at T0 + 1h .. T0 + 5h
    c = {"X/USDT": _candles([10, 11, 12, 11, 10])}
    ds = [
        _record("LONG", T0 + 2 * H, 1.0),  # saw close 11 (closed at 2h); at 3h: 12 > 11: hit
        _record("SHORT", T0 + 2 * H, 2.0),  # at 4h: 11, not below 11: miss (no move)
        _record("SHORT", T0 + 3 * H, 2.0, last=12.0),  # at 5h: 10 < 12: hit
        _record("LONG", T0 + 4 * H, 3.0),  # 7h is beyond the data: unknown
        _record("HOLD", T0 + 2 * H, 1.0),  # not a direction
    ]
    assert directional_hits(ds, c) == [(ds[0].decision_id, True), (ds[1].decision_id, False),
                                       (ds[2].decision_id, True)]


def test_bracket_outcomes_by_hand_on_six_candles():
    # candle k opens at T0 + k h; (open, high, low, close)
    rows = [(100, 100, 100, 100), (100, 103, 99, 102), (102, 104, 97, 98), (98, 99, 90, 91), (91, 92, 90, 91),
            (95, 96, 94, 95)]
    t = T0 + np.arange(len(rows), dtype=np.int64) * H
    o, h, lo, c = (np.array([r[i] for r in rows], dtype=float) for i in range(4))
    candles = {"X/USDT": Candles(time=t, open=o, high=h, low=lo, close=c, volume=np.ones(len(rows)),
                                 symbol="X/USDT", interval_ms=H)}

    def rec(direction: str, ms: int, horizon: float, stop: float | None, target: float | None, tag: str):
        return _record(direction, ms, horizon, decision_id=tag, stop=stop, target=target)

    ds = [
        rec("LONG", T0 + H, 3, 98.5, 102.5, "target"),      # candle 1 reaches 103 >= 102.5 and not the stop: hit
        rec("LONG", T0 + H, 3, 99.0, 105.0, "stop"),        # candle 1's low 99 reaches the stop 99: miss
        rec("LONG", T0 + 2 * H, 3, 97.0, 104.0, "both"),    # candle 2 reaches 104 and 97: the stop is assumed
        rec("SHORT", T0 + 2 * H, 2, 105.0, 95.0, "short"),  # candle 2 low 97, candle 3 low 90 <= 95: hit
        rec("SHORT", T0 + 4 * H, 1, 99.0, 80.0, "neither"),  # candle 4 reaches neither by the horizon: miss
        rec("LONG", T0 + 5 * H, 5, 90.0, 100.0, "open"),    # the data end first with neither reached: unknown
        rec("LONG", T0 + 5 * H, 5, 95.5, 100.0, "early"),   # the data end first, but the stop was reached: miss
        rec("LONG", T0 + H, 3, None, 102.5, "no stop"),     # no bracket to score
        rec("HOLD", T0 + H, 3, None, None, "hold"),
    ]
    assert bracket_outcomes(ds, candles) == [("target", True), ("stop", False), ("both", False), ("short", True),
                                             ("neither", False), ("early", False)]
    assert bracket_outcomes(ds, {}) == []  # no candles for the symbol: nothing is known


def test_llm_usage_rates_from_decision_records():
    ds = [
        _record("LONG", 1, 4, calls=1, call_outcomes=("ok",), tokens_in=100, tokens_out=20, cost_usd=0.01,
                latency_ms=100.0),
        _record("LONG", 2, 4, calls=2, call_outcomes=("invalid", "ok"), repair_attempted=True, repaired=True,
                tokens_in=250, tokens_out=50, cost_usd=0.03, latency_ms=300.0, cache_hits=1),
        _record("HOLD", 3, 4, calls=2, call_outcomes=("invalid", "invalid"), repair_attempted=True,
                schema_valid=False, hold_on_failure=True, tokens_in=250, tokens_out=30, cost_usd=0.02,
                latency_ms=200.0),
        _record("HOLD", 4, 4, calls=1, call_outcomes=("timeout",), schema_valid=False, hold_on_failure=True,
                tokens_in=0, tokens_out=0, cost_usd=0.0, latency_ms=1000.0),
        _record(None, 5, None, calls=0, call_outcomes=(), llm_used=False),  # skipped for data: not counted
    ]
    u = llm_usage(ds)
    assert (u.decisions, u.calls, u.tokens_in, u.tokens_out, u.cache_hits) == (4, 6, 600, 100, 1)
    assert u.cost_usd == pytest.approx(0.06) and u.cost_per_decision == pytest.approx(0.015)
    assert u.tokens_per_decision == pytest.approx(175)  # 700 / 4
    assert u.schema_valid_rate == 0.5 and u.first_attempt_valid_rate == 0.25  # 2 of 4; only the first
    assert u.repair_rate == 0.5 and u.repair_success_rate == 0.5  # 2 repairs, 1 succeeded
    assert u.hold_on_failure_rate == 0.5
    assert u.latency_per_decision_ms == pytest.approx(400) and u.latency_p50_ms == pytest.approx(250)  # 100..1000
    assert u.outcomes == {"invalid": 3, "ok": 2, "timeout": 1}


def _reason(rule: str, code: str, before=None, after=None) -> dict:
    return {"rule": rule, "code": code, "message": "", "value": None, "limit": None, "before": before,
            "after": after, "unit": None}


def test_gate_activity_tells_refusals_from_explanations_and_clamps():
    rows = [
        # refused by sizing and universe; the p clamp and a correlation observation only explain
        {"direction": "LONG", "gate_status": "rejected", "reasons_json": json.dumps([
            _reason("sizing", "no_edge"), _reason("universe", "tier_positions_full"),
            _reason("sizing", "win_probability", 0.5, 0.45), _reason("correlation", "correlated_position")])},
        # the correlation rule in "reject" mode: its observation is the refusal
        {"direction": "SHORT", "gate_status": "rejected", "reasons_json": json.dumps([
            _reason("correlation", "correlated_position"), _reason("sizing", "win_probability", 0.5, 0.5)])},
        # approved, shrunk by the risk cap and by the correlation multiplier; kelly only states the size
        {"direction": "LONG", "gate_status": "approved", "reasons_json": json.dumps([
            _reason("sizing", "kelly", None, 200.0), _reason("sizing", "risk_per_trade_cap", 300.0, 200.0),
            _reason("correlation", "correlated_shrink", 200.0, 100.0),
            _reason("sizing", "win_probability", 0.5, 0.5)])},
        {"direction": "HOLD", "gate_status": "rejected", "reasons_json": json.dumps([_reason("gate", "hold")])},
        {"direction": None, "gate_status": None, "reasons_json": None},  # skipped: never gated
    ]
    g = gate_activity(rows)
    assert sorted(g) == ["correlation", "sizing", "universe"]
    assert (g["sizing"].rejected, g["sizing"].shrank, g["sizing"].codes) == (1, 1, {"no_edge": 1,
                                                                                      "risk_per_trade_cap": 1})
    assert (g["universe"].rejected, g["universe"].shrank) == (1, 0)
    assert (g["correlation"].rejected, g["correlation"].shrank) == (1, 1)
    assert {a.proposals for a in g.values()} == {3} and g["sizing"].rejected_rate == pytest.approx(1 / 3)


# --- the manual broker ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def manual(tmp_path_factory):
    root = tmp_path_factory.mktemp("manual")
    path = root / "store.sqlite"
    store, records = Store.at(path), CallRecords(root / "calls.sqlite")
    deps = deps_for(store, records, ManualBroker(), "manual")
    for t in MANUAL_HOURS:
        run_cycle(t, deps)
    tickets = sorted(store.rows(OrderRow), key=lambda o: o.created_ms)
    assert len(tickets) >= 3, "the relaxed heuristic should send at least three tickets in ten hours"
    at = MANUAL_HOURS[-1] + 600_000
    person = ManualBroker()
    person.load_state(store.state(broker_key("manual")))
    first, second = tickets[0], tickets[1]
    price = first.stop + 0.25 * (first.target - first.stop)  # inside the bracket, whichever the side
    record_answer(store, "manual", person, person.executed(first.client_order_id, price=price, at_ms=at, fee=0.5), at)
    record_answer(store, "manual", person, person.skipped(second.client_order_id, at_ms=at, note="asleep"), at)
    close = first.stop + 0.75 * (first.target - first.stop)
    record_answer(store, "manual", person, person.closed(first.client_order_id, price=close, at_ms=at + H, fee=0.5),
                  at + H)
    yield store, path, tickets, price, at
    store.close()
    records.close()


def test_manual_tickets_executed_skipped_pending_and_the_slippage_to_the_reported_fill(manual):
    store, path, tickets, price, at = manual
    m = load_ledger(store).manual
    assert (m.tickets, m.executed, m.skipped, m.pending, m.other) == (len(tickets), 1, 1, len(tickets) - 2, 0)
    assert m.execution_rate == 0.5  # 1 executed of 2 answered
    (row,) = sql(path, "SELECT o.client_order_id, o.side, o.created_ms, s.entry, f.price, f.quantity FROM orders o "
                       "JOIN signals s USING (decision_id) JOIN fills f ON f.client_order_id = o.client_order_id "
                       "WHERE f.action = 'open'")
    (fill,) = m.fills
    sign = 1 if row["side"] == "LONG" else -1
    assert fill.ticket == row["client_order_id"] == tickets[0].client_order_id
    assert fill.fill_price == pytest.approx(price) and fill.ticket_entry == row["entry"]
    assert fill.slippage == pytest.approx(sign * (row["price"] - row["entry"]) / row["entry"])
    assert fill.slippage_quote == pytest.approx(sign * (row["price"] - row["entry"]) * row["quantity"])
    assert m.mean_slippage == fill.slippage and m.slippage_cost == pytest.approx(fill.slippage_quote)
    assert fill.delay_ms == at - row["created_ms"]


def test_a_manually_closed_trade_is_in_the_ledger_with_its_pnl(manual):
    store, path, tickets, *_ = manual
    (trade,) = load_ledger(store).trades
    (row,) = sql(path, "SELECT * FROM closed_trades")
    assert trade.trade_id == tickets[0].client_order_id and trade.exit_reason == "manual"
    assert trade.pnl == row["pnl"] and trade.fees == pytest.approx(1.0)


def test_a_ledger_read_sees_one_state_of_the_store_while_a_cycle_writes(tmp_path):
    import sqlalchemy as sa

    from agent.store.tables import StateRow
    from evals.ledger import _snapshot

    store = Store.at(tmp_path / "live.sqlite")
    count = sa.text("SELECT COUNT(*) FROM agent_state")
    with _snapshot(store) as conn:
        before = conn.execute(count).scalar()
        with store.session() as writer:  # the cycle commits in the middle of the read
            writer.add(StateRow(key="k", value_json="1", cycle_id="c", updated_ms=1))
            writer.commit()
        assert conn.execute(count).scalar() == before == 0
    with _snapshot(store) as conn:
        assert conn.execute(count).scalar() == 1
    store.close()
