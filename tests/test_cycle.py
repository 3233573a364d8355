"""The cycle end to end on the bundled sample: heuristic and replay providers, paper broker, real SQLite.

The theory set is cut to what the heuristic votes with (montecarlo, regime, kalman, context) and
the regime filter is relaxed (any direction, no confidence floor) so that a day of cycles trades;
everything else is the product's own code and defaults.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest

from agent.brokers.base import client_order_id
from agent.brokers.paper import PaperBroker
from agent.cycle import CycleDeps, CycleSettings, FileMarketData, run_cycle
from agent.llm.budget import CostBudget
from agent.llm.heuristic import HeuristicProvider
from agent.llm.prompt import PromptTemplate
from agent.llm.providers import ReplayProvider
from agent.llm.records import CallRecords
from agent.llm.synthesis import Synthesiser
from agent.market.loaders import SAMPLE_DIR
from agent.signal import SignalRules
from agent.store import Store
from agent.store.tables import (
    AccountSnapshotRow,
    BreakerEventRow,
    ClosedTradeRow,
    CycleRow,
    DecisionCallRow,
    DecisionRow,
    FillRow,
    GateDecisionRow,
    OrderRow,
    PositionRow,
    SignalRow,
    SnapshotRow,
)
from risk import RiskConfig, RiskGate
from risk.config import RegimeFilterConfig, RegimePolicy, SizingConfig
from theories.base import FitCache
from theories.regime import REGIMES

H = 3_600_000
SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")
THEORIES = {"montecarlo": None, "regime": {"fit_window": 300, "search_reps": 0}, "kalman": None, "context": None}
RELAXED = RiskConfig(
    sizing=SizingConfig(fee_rate=0.0),  # sized gross of fees: with them the heuristic finds no edge here
    regime=RegimeFilterConfig(
        policies={r: RegimePolicy(directions="both", multiplier=1.0, min_confidence=0.0) for r in REGIMES}
    ),
)
SAMPLE_END = 1763251200000  # the bundled sample's last close, 2025-11-16T00:00Z
HOURS = [SAMPLE_END - (11 - k) * H for k in range(10)]  # 2025-11-15 13:00 .. 22:00: the heuristic trades


def make_deps(store: Store, records: CallRecords, data: FileMarketData, cache: FitCache | None,
              replay: bool = False, symbols=SYMBOLS) -> CycleDeps:
    provider = ReplayProvider(HeuristicProvider()) if replay else HeuristicProvider()
    synth = Synthesiser(provider=provider, template=PromptTemplate.load("baseline"), rules=SignalRules(),
                        price=None, budget=CostBudget(daily_usd=1, per_cycle_usd=1), records=records)
    return CycleDeps(store=store, broker=PaperBroker(), synthesiser=synth, gate=RiskGate(RELAXED), data=data,
                     settings=CycleSettings(symbols=symbols, theories=THEORIES), fit_cache=cache,
                     wall_ms=lambda: 1_800_000_000_000)


SHARED_FITS = FitCache()  # keyed by the data's fingerprint: safe to share between the cycle test modules


@pytest.fixture(scope="module")
def fits() -> FitCache:
    return SHARED_FITS  # model fits shared by the cycles, as one long-running process shares them


@pytest.fixture(scope="module")
def day(tmp_path_factory, fits):
    """Ten hourly cycles on the bundled sample with the heuristic provider; the store and call records."""
    root = tmp_path_factory.mktemp("day")
    store, records = Store.at(root / "store.sqlite"), CallRecords(root / "calls.sqlite")
    deps = make_deps(store, records, FileMarketData(), fits)
    results = [run_cycle(t, deps) for t in HOURS]
    yield store, records, results, deps
    store.close()
    records.close()


def test_every_decision_is_complete_and_traceable_to_its_snapshot_and_prompt(day):
    store, _, _results, _ = day
    decisions = store.rows(DecisionRow)
    assert len(decisions) == len(HOURS) * len(SYMBOLS)
    for d in decisions:
        assert d.decision_id == f"{d.cycle_id}/{d.symbol}"
        assert d.outcome != "skipped", d.reason  # the bundled sample is complete and fresh at every hour
        for table in (SnapshotRow, SignalRow, GateDecisionRow):
            (row,) = store.rows(table, decision_id=d.decision_id)
            assert row.cycle_id == d.cycle_id
        calls = store.rows(DecisionCallRow, decision_id=d.decision_id)
        assert calls and all(c.cycle_id == d.cycle_id and c.record_id is not None for c in calls)
    assert {c.status for c in store.rows(CycleRow)} == {"completed"}


def test_orders_come_only_from_approved_decisions_with_ids_derived_from_them(day):
    store = day[0]
    orders = store.rows(OrderRow)
    assert orders, "the heuristic should have traded in this day of cycles"
    for o in orders:
        (gate,) = store.rows(GateDecisionRow, decision_id=o.decision_id)
        (d,) = store.rows(DecisionRow, decision_id=o.decision_id)
        assert gate.status == "approved" and gate.quantity == o.quantity
        assert d.outcome == "ordered" and o.cycle_id == d.cycle_id
        assert o.client_order_id == client_order_id(o.decision_id)
    approved = {g.decision_id for g in store.rows(GateDecisionRow) if g.status == "approved"}
    assert approved == {o.decision_id for o in orders}


def test_fills_happen_on_later_candles_and_closed_trades_match_their_fills(day):
    store = day[0]
    orders = {o.client_order_id: o for o in store.rows(OrderRow)}
    trades = store.rows(ClosedTradeRow)
    assert trades, "at least one trade should close within the day"
    for f in store.rows(FillRow):
        assert f.time_ms >= orders[f.client_order_id].created_ms  # never on the bar the decision saw
    for t in trades:
        fills = store.rows(FillRow, client_order_id=t.client_order_id)
        sign = 1 if t.side == "LONG" else -1
        cash = sum((sign if f.action == "close" else -sign) * f.quantity * f.price - f.fee for f in fills)
        assert t.pnl == pytest.approx(cash, abs=1e-9)
        assert t.r_multiple == pytest.approx(t.pnl / t.risk_amount)
        (decision,) = store.rows(DecisionRow, decision_id=t.decision_id)
        assert (t.variant, t.regime) == (decision.variant, decision.regime)  # the win history's slices


def test_equity_is_cash_plus_marked_positions_at_every_account_snapshot(day):
    store, _, results, _ = day
    snaps = store.rows(AccountSnapshotRow)
    assert len(snaps) == 2 * len(HOURS)  # after the sync and at the end of each cycle
    for a in snaps:
        assert a.equity == pytest.approx(a.cash + a.positions_value, abs=1e-9)
        assert a.equity == pytest.approx(a.balance + a.floating_pnl, abs=1e-9)
    last = results[-1].account
    closed_pnl = sum(t.pnl for t in store.rows(ClosedTradeRow))
    open_fees = sum(f.fee for p in store.rows(PositionRow)
                    for f in store.rows(FillRow, client_order_id=p.client_order_id))
    assert last.balance == pytest.approx(10_000 + closed_pnl - open_fees, abs=1e-6)
    marked = sum((1 if p.side == "LONG" else -1) * p.quantity * p.mark for p in store.rows(PositionRow))
    assert last.positions_value == pytest.approx(marked)


def test_replay_provider_reproduces_the_day_from_the_call_records(day, tmp_path, fits):
    store, records, _, _ = day
    replay_store = Store.at(tmp_path / "replay.sqlite")
    deps = make_deps(replay_store, records, FileMarketData(), fits, replay=True)
    for t in HOURS:
        run_cycle(t, deps)

    def key(s: Store):
        return ([(d.decision_id, d.outcome, d.reason) for d in s.rows(DecisionRow)],
                [(o.client_order_id, o.quantity, o.status) for o in s.rows(OrderRow)],
                [(t.client_order_id, t.pnl) for t in s.rows(ClosedTradeRow)])

    assert key(replay_store) == key(store)
    assert all(c.cache_hit for c in replay_store.rows(DecisionCallRow))
    replay_store.close()


def test_rerunning_a_completed_cycle_reads_it_back_and_records_nothing_new(day):
    store, _, results, deps = day
    before = (len(store.rows(DecisionRow)), len(store.rows(OrderRow)), len(store.rows(FillRow)))
    again = run_cycle(HOURS[-1], deps)
    assert all(r.resumed for r in again.results)
    assert [(r.symbol, r.outcome) for r in again.results] == [(r.symbol, r.outcome) for r in results[-1].results]
    assert (len(store.rows(DecisionRow)), len(store.rows(OrderRow)), len(store.rows(FillRow))) == before


def _copy_sample(dest: Path) -> Path:
    dest.mkdir()
    for s in SYMBOLS:
        name = s.replace("/", "_") + ".csv.gz"
        shutil.copy(SAMPLE_DIR / name, dest / name)
    return dest


def _rewrite(path: Path, edit) -> None:
    lines = gzip.decompress(path.read_bytes()).decode().splitlines()
    path.write_bytes(gzip.compress(("\n".join(edit(lines)) + "\n").encode()))


def test_a_corrupted_symbol_is_skipped_with_its_reason_and_the_others_are_decided(tmp_path, fits):
    data_dir = _copy_sample(tmp_path / "candles")

    def high_below_low(lines):
        t, o, _h, low, c, v = lines[-5].split(",")
        lines[-5] = ",".join([t, o, str(float(low) - 1), low, c, v])
        return lines

    _rewrite(data_dir / "ETH_USDT.csv.gz", high_below_low)
    store, records = Store.at(tmp_path / "s.sqlite"), CallRecords(tmp_path / "c.sqlite")
    result = run_cycle(HOURS[-1] + H, make_deps(store, records, FileMarketData(data_dir), fits))
    by = {r.symbol: r for r in result.results}
    assert by["ETH/USDT"].outcome == "skipped"
    assert "invalid data" in by["ETH/USDT"].reason and "ETH_USDT.csv.gz row" in by["ETH/USDT"].reason
    assert by["BTC/USDT"].outcome != "skipped" and by["SOL/USDT"].outcome != "skipped"
    (eth,) = store.rows(DecisionRow, symbol="ETH/USDT")
    assert eth.reason == by["ETH/USDT"].reason
    assert store.rows(SignalRow, symbol="ETH/USDT") == []
    store.close()
    records.close()


def test_stale_and_gapped_symbols_are_skipped_with_the_reason(tmp_path, fits):
    data_dir = _copy_sample(tmp_path / "candles")
    _rewrite(data_dir / "SOL_USDT.csv.gz", lambda lines: lines[:-3])  # ends three hours early
    _rewrite(data_dir / "ETH_USDT.csv.gz", lambda lines: lines[:-10] + lines[-8:])  # two hours missing
    store, records = Store.at(tmp_path / "s.sqlite"), CallRecords(tmp_path / "c.sqlite")
    result = run_cycle(SAMPLE_END, make_deps(store, records, FileMarketData(data_dir), fits))
    by = {r.symbol: r for r in result.results}
    assert by["SOL/USDT"].outcome == "skipped" and by["SOL/USDT"].reason.startswith("stale")
    assert by["ETH/USDT"].outcome == "skipped" and by["ETH/USDT"].reason.startswith("gapped: 2 of the last 48")
    assert by["BTC/USDT"].outcome != "skipped"
    store.close()
    records.close()


def test_manual_broker_in_the_cycle_awaits_the_person_and_records_the_answer(tmp_path, fits):
    from agent.brokers.manual import ManualBroker
    from agent.cycle import broker_key, record_answer

    store, records = Store.at(tmp_path / "s.sqlite"), CallRecords(tmp_path / "c.sqlite")
    deps = make_deps(store, records, FileMarketData(), fits)
    deps.broker = ManualBroker()
    result = run_cycle(HOURS[1], deps)  # 14:00: the heuristic's SOL trade is approved
    (ordered,) = [r for r in result.results if r.outcome == "ordered"]
    assert ordered.order_status == "awaiting_person"
    (order,) = store.rows(OrderRow)
    assert order.status == "awaiting_person" and order.broker == "manual"

    person = ManualBroker()  # a later process: the broker's memory comes back from the store
    person.load_state(store.state(broker_key("paper")))
    price = (order.stop + order.target) / 2  # inside the bracket whichever the side
    report = person.executed(order.client_order_id, price=price, at_ms=HOURS[1] + 600_000, fee=0.1)
    record_answer(store, "paper", person, report, HOURS[1] + 600_000)
    (order,) = store.rows(OrderRow)
    (fill,) = store.rows(FillRow)
    (pos,) = store.rows(PositionRow)
    assert order.status == "filled" and fill.price == pytest.approx(price) and fill.fee == 0.1
    assert pos.client_order_id == order.client_order_id and fill.cycle_id == order.cycle_id
    store.close()
    records.close()


def test_an_order_not_yet_filled_counts_as_open_for_the_next_gate_decision(tmp_path, fits):
    from agent.brokers.base import OrderIntent
    from risk.inputs import RiskRequest

    store, records = Store.at(tmp_path / "s.sqlite"), CallRecords(tmp_path / "c.sqlite")
    deps = make_deps(store, records, FileMarketData(), fits)
    t = HOURS[0]
    did = "earlier/BTC/USDT"  # approved earlier in the same cycle: pending until the next bar opens
    deps.broker.submit(OrderIntent(decision_id=did, cycle_id="earlier", client_order_id=client_order_id(did),
                                   symbol="BTC/USDT", side="LONG", quantity=0.01, stop=90_000, target=110_000,
                                   entry_reference=96_000, created_ms=t, time_stop_ms=t + 24 * H), t)
    run_cycle(t, deps)
    for gate in store.rows(GateDecisionRow):
        request = RiskRequest.model_validate_json(gate.request_json)
        (pending,) = request.positions
        assert (pending.symbol, pending.quantity, pending.entry) == ("BTC/USDT", 0.01, 96_000)
        assert request.account.cash == pytest.approx(10_000 - 0.01 * 96_000)
        # the correlation rule compares a trade with what is open: it gets both series, a HOLD none
        if request.proposal.direction == "HOLD":
            assert request.prices == {}
        else:
            bars = int(deps.gate.config.correlation.window_days * 24) + 1
            assert sorted(request.prices) == sorted({"BTC/USDT", gate.symbol})
            assert all(len(p.close) == bars and p.time_ms[-1] <= t for p in request.prices.values())
    assert any(RiskRequest.model_validate_json(g.request_json).prices for g in store.rows(GateDecisionRow))
    store.close()
    records.close()


def test_with_nothing_open_the_gate_request_carries_no_price_series(tmp_path, fits):
    from risk.inputs import RiskRequest

    store, records = Store.at(tmp_path / "s.sqlite"), CallRecords(tmp_path / "c.sqlite")
    deps = make_deps(store, records, FileMarketData(), fits)
    run_cycle(HOURS[0], deps)
    requests = [RiskRequest.model_validate_json(g.request_json) for g in store.rows(GateDecisionRow)]
    assert requests and all(not r.positions and r.prices == {} for r in requests)
    assert len(requests[0].model_dump_json()) < 2_000  # was ~17 KB: a month of closes the rule never read
    store.close()
    records.close()


def test_a_cycle_earlier_than_the_runs_last_one_is_refused(day):
    from agent.cycle import CycleError

    store, _, _, deps = day
    with pytest.raises(CycleError, match="already decided at 2025-11-15T22:00:00Z"):
        run_cycle(HOURS[0] - H, deps)
    assert store.cycle("paper@2025-11-15T12:00:00Z") is None


def test_an_analysis_failure_is_recorded_as_that_symbols_error_and_the_cycle_completes(tmp_path, fits):
    store, records = Store.at(tmp_path / "s.sqlite"), CallRecords(tmp_path / "c.sqlite")
    deps = make_deps(store, records, FileMarketData(), fits)
    deps.settings = CycleSettings(symbols=SYMBOLS, theories={"no_such_theory": None})
    result = run_cycle(HOURS[0], deps)
    assert [r.outcome for r in result.results] == ["error"] * len(SYMBOLS)
    assert all("snapshot failed" in r.reason and "no_such_theory" in r.reason for r in result.results)
    assert store.cycle(result.cycle_id).status == "completed"
    store.close()
    records.close()


def test_book_slippage_walks_the_live_book_from_the_mid():
    from agent.cycle import book_slippage
    from orderflow.book import OrderBook

    book = OrderBook("X/USDT")
    book.load_snapshot(bids=[("99", "1"), ("98", "2")], asks=[("100", "1"), ("101", "1")])
    mid = 99.5
    # buying 1.5 takes 1 at 100 and 0.5 at 101: average 100.333..., 0.838% above the mid
    assert book_slippage(book, "LONG", 1.5) == pytest.approx((100 + 0.5 * 101) / 1.5 / mid - 1, rel=1e-12)
    # selling 1 takes the best bid: half the spread
    assert book_slippage(book, "SHORT", 1.0) == pytest.approx(1 - 99 / mid, rel=1e-12)
    # more than the visible book: the last level's distance is a floor
    assert book_slippage(book, "LONG", 5.0) >= 101 / mid - 1
    assert book_slippage(None, "LONG", 1.0) is None


def test_a_live_book_sets_each_orders_slippage_and_without_one_the_configured_rate_applies(tmp_path, fits):
    from dataclasses import replace

    from agent.cycle import book_slippage
    from orderflow.book import OrderBook

    def book_around(price: float) -> OrderBook:  # a thin book: ten levels 2 bp apart, small sizes
        b = OrderBook()
        b.load_snapshot(bids=[(price * (1 - 2e-4 * (k + 1)), 0.02) for k in range(10)],
                        asks=[(price * (1 + 2e-4 * (k + 1)), 0.02) for k in range(10)])
        return b

    store, records = Store.at(tmp_path / "s.sqlite"), CallRecords(tmp_path / "c.sqlite")
    plain = make_deps(store, records, FileMarketData(), fits)
    last = {s: float(FileMarketData().candles(s, HOURS[0]).close[-1]) for s in SYMBOLS}
    books = {s: book_around(last[s]) for s in SYMBOLS}
    deps = replace(plain, books=books)
    for t in HOURS[:4]:
        run_cycle(t, deps)
    orders = deps.broker.orders()
    assert orders, "the relaxed gate approves some heuristic signals in these hours"
    for o in orders:
        expected = book_slippage(books[o.intent.symbol], o.intent.side, o.intent.quantity)
        assert o.intent.slippage == pytest.approx(expected) and expected > 0
    store.close()
    records.close()


def test_a_snapshot_source_and_decision_rows_plug_into_each_decisions_transaction(tmp_path, fits):
    """The two hooks: a custom snapshot source is the one decided on, and the extra rows of a
    decision are stored with it (one per decided symbol, none for a skipped one)."""
    from agent.cycle import DecisionEvent, compute_snapshot

    seen: list[tuple[str, int]] = []
    events: list[DecisionEvent] = []

    def source(symbol, universe, decision_ms, settings, **kw):
        seen.append((symbol, decision_ms))
        return compute_snapshot(symbol, universe, decision_ms, settings, **kw)

    def extra(event: DecisionEvent):
        events.append(event)
        return [BreakerEventRow(cycle_id=event.result.decision_id.split("/")[0], decision_id=event.result.decision_id,
                                breaker="hook", kind="test", at_ms=event.account.time_ms, note=event.signal.direction)]

    data = FileMarketData(SAMPLE_DIR)
    store, records = Store.at(tmp_path / "s.sqlite"), CallRecords(tmp_path / "c.sqlite")
    deps = make_deps(store, records, data, fits)
    deps.snapshot_source, deps.decision_rows = source, extra
    result = run_cycle(HOURS[0], deps)
    decided = [r for r in result.results if r.outcome != "skipped"]
    assert decided
    assert sorted(seen) == sorted((r.symbol, HOURS[0]) for r in decided)
    assert [e.result.decision_id for e in events] == [r.decision_id for r in decided]
    rows = store.rows(BreakerEventRow, breaker="hook")
    assert sorted(r.decision_id for r in rows) == sorted(r.decision_id for r in decided)
    assert {r.note for r in rows} <= {"LONG", "SHORT", "HOLD"}
    store.close()
    records.close()


def test_a_decision_inside_a_bar_counts_the_same_recent_candles_as_one_on_the_bars_close():
    """An alert-triggered cycle decides between closes: its recent-bar count must not lose the oldest bar."""
    from agent.cycle import DataPolicy, data_problem
    from agent.market.loaders import load_candle_file

    candles = load_candle_file(sorted(SAMPLE_DIR.iterdir())[0]).closed_by(SAMPLE_END)
    close = candles.last_close_time
    assert data_problem(candles, close, DataPolicy(), 500) is None
    for offset in (1, 1000, H // 2, H - 1):
        assert data_problem(candles, close + offset, DataPolicy(), 500) is None
    # a truly missing recent candle is still caught off the grid
    holed = candles.tail(10)
    assert data_problem(holed, close + 1000, DataPolicy(min_candles=1, recent_bars=12), 10) is not None


def _data_problem_plain(candles, decision_ms, policy, window):
    """`data_problem` as first written (every time compared, every gap listed): the reference of the fast one."""
    from theories.candles import iso

    if len(candles) < policy.min_candles:
        return f"only {len(candles)} candles closed by {iso(decision_ms)}, {policy.min_candles} needed"
    stale = (decision_ms - candles.last_close_time) // candles.interval_ms
    if stale > policy.max_stale_bars:
        return (f"stale: the last candle closed at {iso(candles.last_close_time)}, "
                f"{stale} bars before the decision time {iso(decision_ms)}")
    recent = candles.closed_by(decision_ms)
    aligned = decision_ms - decision_ms % candles.interval_ms
    first_recent = aligned - policy.recent_bars * candles.interval_ms
    missing_recent = policy.recent_bars - int((recent.time >= first_recent).sum())
    if missing_recent > policy.max_missing_recent:
        return f"gapped: {missing_recent} of the last {policy.recent_bars} candles are missing"
    tail = candles.tail(window)
    missing = sum(g.missing for g in tail.gaps())
    if missing > policy.max_missing_window * len(tail):
        return f"gapped: {missing} candles missing in the {len(tail)}-candle window"
    return None


def test_data_problem_gives_the_plain_answer_on_real_candles_with_holes():
    """The binary-search `data_problem` against the plain one: real candles, punched holes, many policies."""
    import numpy as np

    from agent.cycle import DataPolicy, data_problem
    from agent.market.loaders import load_candle_file
    from theories.candles import Candles

    rng = np.random.default_rng(9)
    full = load_candle_file(sorted(SAMPLE_DIR.iterdir())[0])
    answers = set()
    for trial in range(300):
        keep = rng.random(len(full)) > rng.choice([0.0, 0.01, 0.1, 0.5])
        if trial % 3 == 0:  # a run of missing candles near the end
            end = int(rng.integers(1, 40))
            keep[-end - int(rng.integers(1, 30)):-end] = False
        holed = Candles(full.time[keep], full.open[keep], full.high[keep], full.low[keep], full.close[keep],
                        full.volume[keep], interval_ms=full.interval_ms)
        cut = holed.closed_by(int(full.time[-int(rng.integers(1, 200))]) + H * int(rng.integers(0, 3)))
        if not len(cut):
            continue
        decision = cut.last_close_time + int(rng.choice([0, 1, H // 2, H, 3 * H, 7 * H]))
        policy = DataPolicy(min_candles=int(rng.choice([1, 50, 400, 10**6])), recent_bars=int(rng.integers(1, 30)),
                            max_stale_bars=int(rng.choice([0, 1, 8])),
                            max_missing_recent=int(rng.integers(0, 3)),
                            max_missing_window=float(rng.choice([0.0, 0.01, 0.05])))
        window = int(rng.choice([1, 10, 500, 5000]))
        got = data_problem(cut, decision, policy, window)
        assert got == _data_problem_plain(cut, decision, policy, window)
        answers.add((got or "none").split(":")[0].split(" ")[0])
    assert answers == {"none", "only", "stale", "gapped"}  # every branch was compared


def test_the_gate_s_proposal_of_a_signal_is_the_one_validated_from_its_dump():
    """`proposal_of` passes the signal's fields as they are: the same proposal as from the signal's dump."""
    from agent.cycle import proposal_of
    from agent.signal import Signal
    from risk.inputs import TradeProposal

    signals = [
        Signal.hold("BTC/USDT", "nothing to do", 1.0),
        Signal(symbol="ETH/USDT", direction="LONG", confidence=0.61, entry=3000.5, stop=2950.0, target=3101.5,
               horizon_hours=24.0, reasoning="r", theories=["montecarlo", "kalman"]),
        Signal(symbol="SOL/USDT", direction="SHORT", confidence=1.0, entry=150.0, stop=153.0, target=141.0,
               horizon_hours=0.5, reasoning="r", theories=[]),
    ]
    for s in signals:
        fast, plain = proposal_of(s), TradeProposal.model_validate(s.model_dump(exclude={"reasoning"}))
        assert fast == plain and fast.model_dump_json() == plain.model_dump_json()
        assert isinstance(fast.theories, tuple)


def test_the_cycles_broker_view_gives_the_brokers_own_answers_until_an_order_moves_it(day):
    """`_BrokerView` against the plain reads, on the broker of a traded day; `moved` renews every value."""
    from agent.brokers.base import OrderIntent
    from agent.cycle import _BrokerView, open_exposure
    from risk.trading_day import ledger_in_force

    *_, deps = day
    broker, t = deps.broker, HOURS[-1]
    assert broker.orders() and broker.ledger()  # the day traded: orders, and a ledger to cut

    def plain() -> tuple:
        marks = {p.symbol: p.mark * 1.01 for p in broker.positions()} | {"BTC/USDT": 95_000.0}
        account = broker.account(t, marks)
        exposure, committed = open_exposure(broker, marks)
        ledger = tuple(ledger_in_force(broker.ledger(), t, "Europe/Prague"))
        return marks, (account, broker.positions(), exposure, account.cash - committed, ledger, broker.export_state())

    def seen(view: _BrokerView) -> tuple:
        a = view.account_state
        return (view.account, view.positions, view.exposure[0], a.cash,
                tuple((c.time_ms, c.balance) for c in a.ledger), view.state)

    marks, before = plain()
    view = _BrokerView(broker, t, marks, "Europe/Prague")
    assert seen(view) == before
    did = "later/BTC/USDT"
    broker.submit(OrderIntent(decision_id=did, cycle_id="later", client_order_id=client_order_id(did),
                              symbol="BTC/USDT", side="LONG", quantity=0.01, stop=90_000, target=110_000,
                              entry_reference=96_000, created_ms=t, time_stop_ms=t + 24 * H), t)
    _, after = plain()
    assert after != before and seen(view) == before  # kept until told
    view.moved()
    assert seen(view) == after
