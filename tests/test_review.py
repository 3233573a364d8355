"""`signal-agent review` on a store filled by a replayed paper period: the numbers, the files, the filters.

The period: 24 hourly cycles of `agent.cycle.run_cycle` over the bundled sample (BTC and ETH), the
paper broker, a real SQLite store. Two stand-in "LLM" variants take turns hour by hour in the same
run (one paper account): both are the heuristic's decision with a higher stated confidence and a
1-hour horizon (the position is closed before the next turn), the second one mirrored (it takes
the other side), so the period has LONGs and SHORTs, two variants, two symbols and several
regimes. The risk gate is the product's with the regime filter opened (any direction, no
confidence floor), a prior that lets Kelly size a trade, and one open position at a time.

Every figure checked here is recomputed independently from the store with plain SQL and hand
arithmetic (never with `evals.metrics`).
"""

from __future__ import annotations

import json
import math
import sqlite3
from datetime import UTC, datetime
from html.parser import HTMLParser
from itertools import pairwise
from pathlib import Path

import pytest
from matplotlib import image as mpimg

from agent.brokers.paper import PaperBroker
from agent.cli import main
from agent.config import ModelPrice
from agent.cycle import CycleDeps, CycleSettings, FileMarketData, run_cycle
from agent.llm.base import Reply
from agent.llm.budget import CostBudget
from agent.llm.heuristic import heuristic_signal
from agent.llm.prompt import PromptTemplate
from agent.llm.records import CallRecords
from agent.llm.synthesis import Synthesiser
from agent.review import (
    GateFile,
    ReviewError,
    build_review,
    compare_with_eval,
    find_passed_gate,
    load_review,
    paper_vs_evals,
    review_report,
)
from agent.signal import SignalRules
from agent.store import Store
from evals.ledger import load_ledger
from evals.metrics import realised_curve, trade_stats
from risk import RiskConfig, RiskGate
from risk.config import FtmoConfig, RegimeFilterConfig, RegimePolicy, SizingConfig
from theories.base import FitCache
from theories.regime import REGIMES

H = 3_600_000
SAMPLE_END = 1763251200000  # the bundled sample's last close, 2025-11-16T00:00Z
CYCLES = 24
HOURS = [SAMPLE_END - (CYCLES - 1 - k) * H for k in range(CYCLES)]
THEORIES = {"montecarlo": None, "regime": {"fit_window": 300, "search_reps": 0}, "kalman": None, "context": None}
RISK = RiskConfig(
    sizing=SizingConfig(fee_rate=0.0, prior_wins=6, prior_losses=4),
    ftmo=FtmoConfig(max_open_positions=1),
    regime=RegimeFilterConfig(
        policies={r: RegimePolicy(directions="both", multiplier=1.0, min_confidence=0.0) for r in REGIMES}
    ),
)
PRICE = ModelPrice(input_per_million=1.0, output_per_million=4.0)
FOLLOWER, CONTRARIAN = "fake:follower-1:baseline", "fake:contrarian-1:baseline"
HOURLY_PER_YEAR = 365 * 24
FITS = FitCache()  # keyed by the data's fingerprint: the manual desk's cycles reuse the paper period's model fits


class StandInLLM:
    """Stands in for an LLM: the heuristic's decision, stated more confidently, with a 1-hour horizon.

    `contrarian` mirrors the levels around the entry (a SHORT becomes a LONG with the same distances).
    It reports tokens, so the review has usage and cost to show.
    """

    name = "fake"
    is_llm = True
    is_replay = False

    def __init__(self, model: str, contrarian: bool) -> None:
        self.model, self.contrarian = model, contrarian

    def parameters(self) -> dict:
        return {"contrarian": self.contrarian}

    def complete(self, messages, schema, snapshot) -> Reply:
        s = heuristic_signal(snapshot)
        if s["direction"] != "HOLD":
            s["confidence"] = round(0.4 + 0.5 * s["confidence"], 4)
            s["horizon_hours"] = 1.0
            if self.contrarian:
                e = s["entry"]
                s["direction"] = "LONG" if s["direction"] == "SHORT" else "SHORT"
                s["stop"], s["target"] = 2 * e - s["stop"], 2 * e - s["target"]
        text = json.dumps(s, sort_keys=True)
        return Reply(text=text, finish_reason="stop", tokens_in=1000, tokens_out=100, raw_response=text)


@pytest.fixture(scope="module")
def paper(tmp_path_factory):
    """The replayed paper period: (store URL, path of the SQLite file)."""
    root = tmp_path_factory.mktemp("paper")
    path = root / "store.sqlite"
    store, records = Store.at(path), CallRecords(root / "calls.sqlite")
    broker, gate, data, fits = PaperBroker(), RiskGate(RISK), FileMarketData(), FITS

    def deps(model: str, contrarian: bool, symbols: tuple[str, ...]) -> CycleDeps:
        synth = Synthesiser(provider=StandInLLM(model, contrarian), template=PromptTemplate.load("baseline"),
                            rules=SignalRules(), price=PRICE, budget=CostBudget(daily_usd=100, per_cycle_usd=10),
                            records=records)
        return CycleDeps(store=store, broker=broker, synthesiser=synth, gate=gate, data=data,
                         settings=CycleSettings(symbols=symbols, theories=THEORIES), fit_cache=fits,
                         wall_ms=lambda: 1_800_000_000_000)

    # the variants take turns each hour; the symbol asked first (it gets the one position) every two hours
    turns = {(v, o): deps(model, v == 1, ("BTC/USDT", "ETH/USDT")[::1 - 2 * o])
             for v, model in enumerate(("follower-1", "contrarian-1")) for o in (0, 1)}
    for k, t in enumerate(HOURS):
        run_cycle(t, turns[k % 2, k // 2 % 2])
    store.close()
    records.close()
    yield f"sqlite:///{path}", path


def sql(path: Path, query: str, *params) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        return conn.execute(query, params).fetchall()


def test_the_replayed_period_is_a_fair_test(paper):
    _, path = paper
    (n,) = sql(path, "SELECT COUNT(*) FROM closed_trades")[0]
    assert n >= 10, f"only {n} closed trades"
    assert {r[0] for r in sql(path, "SELECT DISTINCT variant FROM closed_trades")} == {FOLLOWER, CONTRARIAN}
    assert {r[0] for r in sql(path, "SELECT DISTINCT side FROM closed_trades")} == {"LONG", "SHORT"}
    wins = sql(path, "SELECT SUM(pnl > 0), SUM(pnl <= 0) FROM closed_trades")[0]
    assert all(wins), "the period needs winners and losers"


# --- independent computations from the store (plain SQL, hand arithmetic) ---------------------


def hand_trades(path: Path, where: str = "1=1", *params) -> list[dict]:
    cols = ("id", "variant", "symbol", "side", "regime", "pnl", "r", "closed_ms", "confidence", "theories", "exit")
    rows = sql(path, "SELECT t.client_order_id, t.variant, t.symbol, t.side, t.regime, t.pnl, t.r_multiple, "
               "t.closed_ms, s.confidence, s.theories_json, t.exit_reason FROM closed_trades t "
               f"JOIN signals s ON s.decision_id = t.decision_id WHERE {where} ORDER BY t.closed_ms", *params)
    return [dict(zip(cols, r, strict=True)) for r in rows]


def hand_curve(path: Path, since_ms: int = 0) -> tuple[list[int], list[float]]:
    rows = sql(path, "SELECT time_ms, equity FROM account_snapshots WHERE stage = 'end' AND time_ms >= ? "
               "ORDER BY time_ms", since_ms)
    return [r[0] for r in rows], [r[1] for r in rows]


def hand_trade_figures(trades: list[dict]) -> dict:
    pnl = [t["pnl"] for t in trades]
    gains = sum(p for p in pnl if p > 0)
    losses = -sum(p for p in pnl if p <= 0)
    return {"trades": len(pnl), "win_rate": sum(p > 0 for p in pnl) / len(pnl),
            "profit_factor": gains / losses if losses else None,
            "avg_r": sum(t["r"] for t in trades) / len(trades), "pnl": sum(pnl)}


def hand_curve_figures(equity: list[float], periods_per_year: float) -> dict:
    r = [b / a - 1 for a, b in pairwise(equity)]
    mean = sum(r) / len(r)
    sd = math.sqrt(sum((x - mean) ** 2 for x in r) / (len(r) - 1))
    downside = math.sqrt(sum(min(x, 0.0) ** 2 for x in r) / len(r))
    peak, max_dd = equity[0], 0.0
    for e in equity:
        peak = max(peak, e)
        max_dd = max(max_dd, 1 - e / peak)
    return {"sharpe": mean / sd * math.sqrt(periods_per_year) if sd else None,
            "sortino": mean / downside * math.sqrt(periods_per_year) if downside else None,
            "max_dd": max_dd, "total": equity[-1] / equity[0] - 1}


def approx(x):
    return pytest.approx(x, rel=1e-9, abs=1e-12)


@pytest.fixture(scope="module")
def review(paper):
    url, _ = paper
    from agent.market import bundled_sample

    store = Store(url)
    try:
        yield load_review(store, None, candles=bundled_sample(), candles_source="bundled sample")
    finally:
        store.close()


def test_headline_figures_equal_a_hand_computation_from_the_store(paper, review):
    _, path = paper
    trades = hand_trades(path)
    times, equity = hand_curve(path)
    want, curve = hand_trade_figures(trades), hand_curve_figures(equity, HOURLY_PER_YEAR)
    t, c = review.performance.trade, review.performance.curve
    assert (t.trades, t.win_rate, t.profit_factor, t.avg_r, t.total_pnl) == (
        want["trades"], approx(want["win_rate"]), approx(want["profit_factor"]), approx(want["avg_r"]),
        approx(want["pnl"]))
    assert (c.sharpe, c.sortino, c.max_drawdown, c.total_return) == (
        approx(curve["sharpe"]), approx(curve["sortino"]), approx(curve["max_dd"]), approx(curve["total"]))
    assert (review.start_ms, review.end_ms, review.cycles) == (times[0], times[-1], len(times))
    assert review.initial_equity == equity[0] and review.final_equity == equity[-1]
    outcomes = dict(sql(path, "SELECT outcome, COUNT(*) FROM decisions GROUP BY outcome"))
    assert review.outcomes == outcomes


@pytest.mark.parametrize("grouping,column", [("variant", "variant"), ("symbol", "symbol"), ("regime", "regime"),
                                             ("direction", "side"), ("exit reason", "exit")])
def test_group_tables_equal_plain_sql_per_variant_symbol_regime_direction_and_exit(paper, review, grouping, column):
    _, path = paper
    trades = hand_trades(path)
    groups = sorted({t[column] for t in trades})
    rows = {r.group: r for r in review.groups[grouping]}
    assert sorted(rows) == groups and len(groups) >= (1 if grouping == "exit reason" else 2)
    for g in groups:
        want = hand_trade_figures([t for t in trades if t[column] == g])
        got = rows[g].stats
        assert (got.trades, got.win_rate, got.avg_r, got.total_pnl) == (
            want["trades"], approx(want["win_rate"]), approx(want["avg_r"]), approx(want["pnl"]))
        assert got.profit_factor == (None if want["profit_factor"] is None else approx(want["profit_factor"]))


def test_group_sharpe_sortino_and_drawdown_use_the_groups_realised_equity_curve(paper, review):
    _, path = paper
    trades = hand_trades(path)
    times, equity = hand_curve(path)
    for row in review.groups["variant"]:
        mine = [t for t in trades if t["variant"] == row.group]
        realised = [equity[0] + sum(t["pnl"] for t in mine if t["closed_ms"] <= when) for when in times]
        want = hand_curve_figures(realised, HOURLY_PER_YEAR)
        assert (row.curve.sharpe, row.curve.sortino, row.curve.max_drawdown) == (
            approx(want["sharpe"]), approx(want["sortino"]), approx(want["max_dd"]))
        assert row.curve.end_equity == approx(equity[0] + sum(t["pnl"] for t in mine))


def test_realised_curve_counts_a_trade_from_the_first_grid_point_at_or_after_its_close():
    from evals.metrics import Trade

    def trade(closed_ms: int, pnl: float) -> Trade:
        return Trade(trade_id=f"t{closed_ms}", decision_id="d", variant="v", symbol="BTC/USDT", side="LONG",
                     regime=None, opened_ms=0, closed_ms=closed_ms, entry=100.0, exit=101.0, quantity=1.0, fees=0.0,
                     pnl=pnl, risk_amount=1.0, r_multiple=pnl, exit_reason="target")

    curve = realised_curve([trade(10, 5.0), trade(25, -2.0), trade(40, 1.0), trade(99, 7.0)], [10, 20, 30, 40], 100)
    assert curve.equity == (105.0, 105.0, 103.0, 104.0)  # the trade closed after the grid's end is not in it


def test_daily_and_monthly_returns_come_from_the_last_equity_of_each_utc_period(paper, review):
    _, path = paper
    times, equity = hand_curve(path)
    days: dict[str, float] = {}
    for t, e in zip(times, equity, strict=True):
        days[datetime.fromtimestamp(t / 1000, tz=UTC).strftime("%Y-%m-%d")] = e  # the last one wins
    base, want = equity[0], {}
    for day, last in days.items():
        want[day] = last / base - 1
        base = last
    got = {p.label: p.ret for p in review.daily}
    assert got == {k: approx(v) for k, v in want.items()}
    assert [(p.label, p.ret) for p in review.monthly] == [("2025-11", approx(equity[-1] / equity[0] - 1))]


def test_calibration_brier_scores_equal_a_hand_computation(paper, review):
    _, path = paper
    trades = hand_trades(path)
    brier = sum((t["confidence"] - (t["pnl"] > 0)) ** 2 for t in trades) / len(trades)
    assert review.calibration.trades.brier == approx(brier)
    assert review.calibration.trades.n == len(trades)
    (signals,) = sql(path, "SELECT COUNT(*) FROM signals WHERE direction IN ('LONG', 'SHORT')")[0]
    cal = review.calibration
    assert cal.signals_total == signals
    # a 1-hour horizon: every signal but those of the sample's last hour is scored against a later close
    assert 0 < cal.signals_scored <= signals and cal.signals.n == cal.signals_scored


def test_theories_of_winners_and_losers_equal_plain_sql(paper, review):
    _, path = paper
    trades = hand_trades(path)
    winners = [t for t in trades if t["pnl"] > 0]
    losers = [t for t in trades if t["pnl"] <= 0]
    seen = {th for t in trades for th in json.loads(t["theories"])}
    assert {u.theory for u in review.theories} == seen
    for use in review.theories:
        assert use.winners == sum(use.theory in json.loads(t["theories"]) for t in winners)
        assert use.losers == sum(use.theory in json.loads(t["theories"]) for t in losers)
        assert use.winner_share == approx(use.winners / len(winners))
        leaning = [t for t in trades if use.theory in json.loads(t["theories"])]
        assert use.stats.total_pnl == approx(sum(t["pnl"] for t in leaning))


def test_gate_activity_and_llm_usage_and_cost_equal_plain_sql(paper, review):
    _, path = paper
    (full,) = sql(path, "SELECT COUNT(*) FROM gate_decisions WHERE status = 'rejected' "
                  "AND codes LIKE '%too_many_open_positions%'")[0]
    assert full > 0 and review.gate["max_open_positions"].rejected == full
    (capped,) = sql(path, "SELECT COUNT(*) FROM gate_decisions WHERE status = 'approved' "
                    "AND codes LIKE '%risk_per_trade_cap%'")[0]
    assert review.gate["sizing"].shrank >= capped > 0
    tokens_in, tokens_out, cost, calls = sql(
        path, "SELECT SUM(tokens_in), SUM(tokens_out), SUM(cost_usd), COUNT(*) FROM decision_llm_calls")[0]
    u = review.llm
    assert (u.tokens_in, u.tokens_out, u.calls, u.cost_usd) == (tokens_in, tokens_out, calls, approx(cost))
    assert u.cost_usd == approx(calls * (1000 * 1.0 + 100 * 4.0) / 1e6)  # the price per million tokens
    assert review.manual.tickets == 0


# --- the command: files, filters, nothing to review -------------------------------------------


@pytest.fixture
def config(tmp_path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(f'[review]\nruns_dir = "{tmp_path / "no-runs"}"\n', encoding="utf-8")
    return path


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    status = main(["review", *argv])
    out = capsys.readouterr()
    return status, out.out, out.err


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        self.refs += [(tag, k, v or "") for k, v in attrs if k in ("src", "href", "srcset", "action", "data")]


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_real_png(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE), f"{path.name} is not a PNG"
    assert len(data) > 5_000, f"{path.name} is suspiciously small ({len(data)} bytes)"
    pixels = mpimg.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert float(pixels[..., :3].var()) > 1e-3, f"{path.name} is blank"


def test_review_command_writes_valid_plots_and_a_self_contained_html_and_markdown(paper, config, tmp_path, capsys):
    url, path = paper
    out = tmp_path / "out"
    status, text, err = run_cli(capsys, "--store", url, "--config", str(config), "--out", str(out))
    assert status == 0, err
    for name in ("equity_drawdown", "returns_monthly", "returns_daily", "calibration", "theories_pnl"):
        assert_real_png(out / f"{name}.png")
    page = (out / "review.html").read_text(encoding="utf-8")
    links = Links()
    links.feed(page)
    assert links.refs and all(tag == "img" and k == "src" and v.startswith("data:image/png;base64,")
                              for tag, k, v in links.refs), links.refs
    assert not links.tags & {"script", "link", "iframe", "object", "embed"}
    assert len([r for r in links.refs if r[0] == "img"]) == 5
    md = (out / "review.md").read_text(encoding="utf-8")
    for name in ("equity_drawdown", "returns_monthly", "returns_daily", "calibration", "theories_pnl"):
        assert f"({name}.png)" in md
    # the terminal summary and the files show the hand-computed figures
    want = hand_trade_figures(hand_trades(path))
    row = next(line for line in text.splitlines() if line.startswith(FOLLOWER))
    follower = hand_trade_figures(hand_trades(path, "t.variant = ?", FOLLOWER))
    assert row.split()[1:3] == [str(follower["trades"]), f"{100 * follower['win_rate']:.1f}%"]
    assert f"| closed trades | {want['trades']} |" in md
    assert f"| win rate | {100 * want['win_rate']:.1f}% |" in md
    assert f"| net P&amp;L of closed trades | {want['pnl']:+,.2f} |" in md
    assert f"<td>win rate</td><td>{100 * want['win_rate']:.1f}%</td>" in page
    assert f"Report: {out / 'review.html'}" in text


def test_variant_filter_keeps_only_that_variants_trades_and_decisions(paper, config, capsys):
    url, path = paper
    status, text, err = run_cli(capsys, "--store", url, "--config", str(config), "--variant", CONTRARIAN, "--json",
                                "--no-candles")
    assert status == 0, err
    data = json.loads(text)
    want = hand_trade_figures(hand_trades(path, "t.variant = ?", CONTRARIAN))
    t = data["performance"]["trade"]
    assert (t["trades"], t["win_rate"], t["avg_r"], t["total_pnl"]) == (
        want["trades"], approx(want["win_rate"]), approx(want["avg_r"]), approx(want["pnl"]))
    assert [g["group"] for g in data["groups"]["variant"]] == [CONTRARIAN]
    (decisions,) = sql(path, "SELECT COUNT(*) FROM decisions WHERE variant = ?", CONTRARIAN)[0]
    assert sum(data["outcomes"].values()) == decisions
    assert any("still the whole account" in n for n in data["notes"])


def test_since_filter_keeps_trades_closed_since_then_and_the_curve_from_then(paper, config, capsys):
    url, path = paper
    since = HOURS[12]
    stamp = datetime.fromtimestamp(since / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%MZ")
    status, text, err = run_cli(capsys, "--store", url, "--config", str(config), "--since", stamp, "--json",
                                "--no-candles")
    assert status == 0, err
    data = json.loads(text)
    trades = hand_trades(path, "t.closed_ms >= ?", since)
    assert 0 < len(trades) < len(hand_trades(path))
    want = hand_trade_figures(trades)
    t = data["performance"]["trade"]
    assert (t["trades"], t["total_pnl"]) == (want["trades"], approx(want["pnl"]))
    times, equity = hand_curve(path, since)
    assert (data["start_ms"], data["cycles"], data["initial_equity"]) == (times[0], len(times), equity[0])
    assert data["performance"]["curve"]["max_drawdown"] == approx(hand_curve_figures(equity, HOURLY_PER_YEAR)["max_dd"])


def test_an_empty_store_gives_a_clear_message_and_exit_status_1(tmp_path, config, capsys):
    empty = tmp_path / "empty.sqlite"
    Store.at(empty).close()  # the tables, no cycle
    status, text, err = run_cli(capsys, "--store", f"sqlite:///{empty}", "--config", str(config))
    assert (status, text) == (1, "")
    assert "holds no cycles: nothing to review yet" in err and "Traceback" not in err
    assert not (tmp_path / "review").exists()


def test_a_missing_store_file_is_not_created_and_says_so(tmp_path, config, capsys):
    missing = tmp_path / "nowhere" / "store.sqlite"
    status, _, err = run_cli(capsys, "--store", f"sqlite:///{missing}", "--config", str(config))
    assert status == 1 and f"no store at {missing}" in err
    assert not missing.exists() and not missing.parent.exists()


def test_a_filter_that_leaves_nothing_says_what_is_missing(paper, config, capsys):
    url, _ = paper
    status, _, err = run_cli(capsys, "--store", url, "--config", str(config), "--since", "2030-01-01")
    assert status == 1 and "no completed cycle since 2030-01-01T00:00:00Z" in err
    status, _, err = run_cli(capsys, "--store", url, "--config", str(config), "--variant", "openai:gpt-x:baseline")
    assert status == 1 and "no decisions of variant 'openai:gpt-x:baseline'" in err and FOLLOWER in err
    status, _, err = run_cli(capsys, "--store", url, "--config", str(config), "--since", "last tuesday")
    assert status == 2 and "--since 'last tuesday'" in err


def test_a_store_with_several_runs_needs_a_run_unless_the_config_names_one_it_has(tmp_path, capsys):
    from agent.store.tables import CycleRow

    store = Store.at(tmp_path / "two.sqlite")
    for run in ("alpha", "beta"):
        store.start_cycle(CycleRow(cycle_id=f"{run}@x", run=run, decision_ms=1, started_ms=1, status="completed",
                                   broker="paper", provider="heuristic:rules-v1", symbols_json="[]"))
    store.close()
    cfg = tmp_path / "c.toml"
    cfg.write_text("", encoding="utf-8")
    status, _, err = run_cli(capsys, "--store", f"sqlite:///{tmp_path / 'two.sqlite'}", "--config", str(cfg))
    assert status == 1 and "several runs (alpha, beta): choose one with --run" in err
    status, _, err = run_cli(capsys, "--store", f"sqlite:///{tmp_path / 'two.sqlite'}", "--config", str(cfg),
                             "--run", "beta")
    assert status == 1 and "run 'beta'" in err and "no completed cycle" in err  # chosen, then nothing to show


# --- paper vs evals -----------------------------------------------------------------------------


def write_gate(runs: Path, run_id: str, variant: str, signature: str, *, passed: bool = True, oos_end_ms: int = 2,
               win_rate: float | None, avg_r: float | None, profit_factor: float | None, trades: int = 800) -> Path:
    """A gate file as `signal-agent evals gate` writes it (the contract's fields, plus some the reader ignores)."""
    path = runs / run_id / "gate" / f"{variant}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "variant": variant, "signature": signature, "run_id": run_id, "passed": passed, "oos_start_ms": 1,
        "oos_end_ms": oos_end_ms, "oos_basis": "the whole run", "n_trials": 3,
        "checks": [{"name": "trades", "value": trades, "threshold": 500, "op": ">=", "passed": True}],
        "oos": {"trades": trades, "win_rate": win_rate, "avg_r": avg_r, "profit_factor": profit_factor,
                "sharpe": 1.3, "max_drawdown": 0.08},
    }), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def ledger(paper):
    store = Store(paper[0])
    try:
        yield load_ledger(store)
    finally:
        store.close()


def test_paper_vs_evals_says_consistent_diverging_or_not_enough_trades(paper, ledger, tmp_path):
    _, path = paper
    runs = tmp_path / "runs"
    follower = hand_trade_figures(hand_trades(path, "t.variant = ?", FOLLOWER))
    contrarian = hand_trade_figures(hand_trades(path, "t.variant = ?", CONTRARIAN))
    # the follower's eval: every figure 5% off the paper one (inside +/-10%)
    write_gate(runs, "r1", "follow", FOLLOWER, win_rate=follower["win_rate"] / 1.05,
               avg_r=follower["avg_r"] * 1.05, profit_factor=(follower["profit_factor"] or 1.0) / 1.05)
    # the contrarian's eval: a win rate of twice the paper one
    write_gate(runs, "r1", "contra", CONTRARIAN, win_rate=2 * contrarian["win_rate"], avg_r=contrarian["avg_r"],
               profit_factor=contrarian["profit_factor"])
    got = {c.variant: c for c in paper_vs_evals(ledger, runs_dir=runs, tolerance=0.10, min_trades=5)}
    assert got[FOLLOWER].status == "consistent", got[FOLLOWER].line
    assert all(m.within for m in got[FOLLOWER].metrics)
    c = got[CONTRARIAN]
    assert c.status == "diverging"
    wr = next(m for m in c.metrics if m.name == "win_rate")
    assert (wr.paper, wr.evals, wr.within) == (approx(contrarian["win_rate"]), approx(2 * contrarian["win_rate"]),
                                               False)
    assert (wr.low, wr.high) == (approx(1.8 * contrarian["win_rate"]), approx(2.2 * contrarian["win_rate"]))
    assert f"win rate paper {100 * contrarian['win_rate']:.1f}% vs evals {200 * contrarian['win_rate']:.1f}%" in c.line
    assert "BELOW" in c.line and "diverging after" in c.line
    # the daily report's call: straight from the store, same answer
    store = Store(paper[0])
    try:
        assert paper_vs_evals(store, run="paper", runs_dir=runs, tolerance=0.10, min_trades=5) == list(got.values())
    finally:
        store.close()
    # the default minimum (50 trades) is far above this short period
    waiting = {c.variant: c for c in paper_vs_evals(ledger, runs_dir=runs)}
    assert {c.status for c in waiting.values()} == {"not_enough_trades"}
    assert f"not enough trades yet: {follower['trades']} of 50" in waiting[FOLLOWER].line


def test_paper_vs_evals_uses_the_latest_passed_gate_of_the_same_signature(tmp_path):
    runs = tmp_path / "runs"
    write_gate(runs, "old", "v", FOLLOWER, oos_end_ms=10, win_rate=0.5, avg_r=0.1, profit_factor=1.5)
    newest = write_gate(runs, "new", "v", FOLLOWER, oos_end_ms=20, win_rate=0.6, avg_r=0.2, profit_factor=1.6)
    write_gate(runs, "failed", "v", FOLLOWER, oos_end_ms=30, passed=False, win_rate=0.9, avg_r=0.9, profit_factor=9)
    write_gate(runs, "other", "v", CONTRARIAN, oos_end_ms=40, win_rate=0.7, avg_r=0.3, profit_factor=2.0)
    (runs / "broken" / "gate").mkdir(parents=True)
    (runs / "broken" / "gate" / "v.json").write_text("{not json", encoding="utf-8")
    found, gate = find_passed_gate(runs, FOLLOWER)
    assert found == newest and gate.run_id == "new" and gate.oos.win_rate == 0.6
    assert find_passed_gate(runs, "ollama:qwen3:8b:baseline") == (None, None)


def test_the_tolerance_band_is_relative_to_the_eval_and_two_sided():
    from evals.metrics import Trade

    trades = [Trade(trade_id=f"t{k}", decision_id="d", variant="v", symbol="BTC/USDT", side="LONG", regime=None,
                    opened_ms=k, closed_ms=k + 1, entry=100.0, exit=100.0 + pnl, quantity=1.0, fees=0.0, pnl=pnl,
                    risk_amount=10.0, r_multiple=pnl / 10, exit_reason="target")
              for k, pnl in enumerate([20.0, 20.0, 20.0, -10.0, -10.0])]
    paper = trade_stats(trades)  # win rate 0.6, avg R 0.8, profit factor 3.0
    gate = GateFile(variant="v", signature="v", run_id="r", passed=True, oos_start_ms=0, oos_end_ms=1,
                    oos={"trades": 600, "win_rate": 0.55, "avg_r": 0.9, "profit_factor": 2.5})
    c = compare_with_eval("v", paper, gate, tolerance=0.10, min_trades=5)
    by = {m.name: m for m in c.metrics}
    assert (by["win_rate"].low, by["win_rate"].high, by["win_rate"].within) == (approx(0.495), approx(0.605), True)
    assert (by["avg_r"].low, by["avg_r"].high, by["avg_r"].within) == (approx(0.81), approx(0.99), False)
    assert (by["profit_factor"].high, by["profit_factor"].within) == (approx(2.75), False)  # better is diverging too
    assert c.status == "diverging" and "ABOVE" in c.line and "BELOW" in c.line
    assert compare_with_eval("v", paper, gate, tolerance=0.5, min_trades=5).status == "consistent"
    assert compare_with_eval("v", paper, gate, tolerance=0.5, min_trades=6).status == "not_enough_trades"
    assert compare_with_eval("v", paper, None, tolerance=0.1, min_trades=5).status == "no_passed_gate"
    no_losses = trade_stats(trades[:3])
    c = compare_with_eval("v", no_losses, gate, tolerance=0.5, min_trades=3)
    assert c.status == "diverging" and "profit_factor: not comparable" in c.notes[0]


def test_the_review_command_reports_paper_vs_evals_with_the_configured_tolerance_and_minimum(paper, tmp_path,
                                                                                           capsys):
    url, path = paper
    runs = tmp_path / "runs"
    f = hand_trade_figures(hand_trades(path, "t.variant = ?", FOLLOWER))
    write_gate(runs, "r1", "follow", FOLLOWER, win_rate=f["win_rate"], avg_r=f["avg_r"],
               profit_factor=f["profit_factor"])
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[review]\nruns_dir = "{runs}"\nmin_trades = 3\ntolerance = 0.2\n', encoding="utf-8")
    status, text, err = run_cli(capsys, "--store", url, "--config", str(cfg), "--out", str(tmp_path / "o"),
                                "--no-candles")
    assert status == 0, err
    assert f"{FOLLOWER}: consistent after {f['trades']} trades" in text
    assert f"{CONTRARIAN}: no passed promotion gate found" in text
    md = (tmp_path / "o" / "review.md").read_text(encoding="utf-8")
    assert f"{FOLLOWER}: consistent after" in md


def test_build_review_of_a_ledger_without_cycles_raises_a_clear_error(tmp_path):
    store = Store.at(tmp_path / "s.sqlite")
    try:
        with pytest.raises(ReviewError, match="holds no cycles"):
            build_review(load_ledger(store), store=store.display_url)
    finally:
        store.close()


def test_the_report_escapes_names_that_look_like_markup(review, tmp_path):
    from evals.render import to_html

    hostile = review.model_copy(update={"run": "<script>alert(1)</script>"})
    page = to_html(review_report(hostile, tmp_path))
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


# --- manual executions --------------------------------------------------------------------------


def test_manual_tickets_executed_skipped_and_pending_with_their_slippage(paper, tmp_path, config, capsys):
    """Three cycles through the manual broker; the person executes one ticket (a worse price), skips one,
    leaves one waiting, then closes the executed trade. The review's manual figures equal plain SQL."""
    from agent.brokers.manual import ManualBroker
    from agent.cycle import record_answer

    path = tmp_path / "manual.sqlite"
    store, records = Store.at(path), CallRecords(tmp_path / "calls.sqlite")
    broker = ManualBroker()
    risk = RISK.model_copy(update={"ftmo": FtmoConfig()})  # tickets awaiting the person count as open positions
    synth = Synthesiser(provider=StandInLLM("follower-1", False), template=PromptTemplate.load("baseline"),
                        rules=SignalRules(), price=PRICE, budget=CostBudget(daily_usd=100, per_cycle_usd=10),
                        records=records)
    deps = CycleDeps(store=store, broker=broker, synthesiser=synth, gate=RiskGate(risk), data=FileMarketData(),
                     settings=CycleSettings(symbols=("BTC/USDT", "ETH/USDT"), theories=THEORIES, run="desk"),
                     fit_cache=FITS, wall_ms=lambda: 1_800_000_000_000)
    tickets = []
    for t in HOURS[:4]:
        result = run_cycle(t, deps)
        tickets += [r.client_order_id for r in result.results if r.client_order_id]
    assert len(tickets) >= 3, tickets
    first = broker.order(tickets[0]).intent
    worse = first.entry_reference * (0.998 if first.side == "SHORT" else 1.002)  # 0.2% against the trader
    record_answer(store, "desk", broker, broker.executed(tickets[0], worse, HOURS[4], fee=1.0), HOURS[4])
    record_answer(store, "desk", broker, broker.skipped(tickets[1], HOURS[4]), HOURS[4])
    record_answer(store, "desk", broker, broker.closed(tickets[0], first.entry_reference, HOURS[5]), HOURS[5])
    store.close()
    records.close()

    status, text, err = run_cli(capsys, "--store", f"sqlite:///{path}", "--config", str(config), "--json",
                                "--no-candles")
    assert status == 0, err
    manual = json.loads(text)["manual"]
    statuses = dict(sql(path, "SELECT status, COUNT(*) FROM orders WHERE broker = 'manual' GROUP BY status"))
    assert (manual["tickets"], manual["executed"], manual["skipped"], manual["pending"]) == (
        len(tickets), 1, statuses["skipped"], statuses["awaiting_person"])
    entry, fill, side, qty = sql(path, "SELECT s.entry, f.price, o.side, f.quantity FROM fills f "
                                 "JOIN orders o ON o.client_order_id = f.client_order_id "
                                 "JOIN signals s ON s.decision_id = o.decision_id WHERE f.action = 'open'")[0]
    slip = (fill - entry) / entry * (1 if side == "LONG" else -1)
    assert slip == pytest.approx(0.002, rel=1e-6)
    assert manual["mean_slippage"] == approx(slip)
    assert manual["slippage_cost"] == approx(slip * entry * qty)
    status, text, err = run_cli(capsys, "--store", f"sqlite:///{path}", "--config", str(config), "--no-candles",
                                "--out", str(tmp_path / "o"))
    assert status == 0, err
    assert "mean slippage ticket -> fill  0.200%" in text
    (closed,) = sql(path, "SELECT COUNT(*) FROM closed_trades")[0]
    assert closed == 1


def test_a_period_with_cycles_but_no_closed_trade_still_reviews_and_says_so(paper, config, tmp_path, capsys):
    url, path = paper
    (closed_then,) = sql(path, "SELECT COUNT(*) FROM closed_trades WHERE closed_ms <= ?", HOURS[0])[0]
    assert closed_then == 0
    status, text, err = run_cli(capsys, "--store", url, "--config", str(config), "--until", str(HOURS[0]),
                                "--no-candles", "--out", str(tmp_path / "o"))
    assert status == 0, err
    assert "closed trades                    0" in text and "(1 cycles)" in text
    md = (tmp_path / "o" / "review.md").read_text(encoding="utf-8")
    assert "no calibration bin holds a signal" in md  # said, not drawn
    assert_real_png(tmp_path / "o" / "equity_drawdown.png")


def test_a_stored_row_the_ledger_cannot_read_is_named_not_a_traceback(paper, config, tmp_path, capsys):
    _, path = paper
    copy = tmp_path / "bad.sqlite"
    with sqlite3.connect(path) as src, sqlite3.connect(copy) as dst:
        src.backup(dst)
        dst.execute("UPDATE closed_trades SET risk_amount = 0 WHERE client_order_id = "
                    "(SELECT MIN(client_order_id) FROM closed_trades)")
    status, text, err = run_cli(capsys, "--store", f"sqlite:///{copy}", "--config", str(config), "--no-candles",
                                "--json")
    assert (status, text) == (1, "")
    assert "holds a Trade the review cannot read: risk_amount" in err and "Traceback" not in err
