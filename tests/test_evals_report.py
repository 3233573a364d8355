"""The evals report on a real small run folder: `evals.replay.run_evals` on the bundled sample.

The run: 18 hourly decisions on BTC, ETH and SOL (2025-11-15 06:00 to 24:00 UTC); three heuristic
variants: the baseline, an identical copy of it, and one that differs only in risk per trade. The
regime filter is relaxed and fees are zero so that the heuristic trades in so short a span (as the
cycle tests do); in sample until 15:00. The seed strategy baselines stay pending (the replay is
limited to the three variants): the report must say they have no results. The CLI tests reuse
this run.
"""

from __future__ import annotations

import dataclasses
import re
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from agent.config import PromotionThresholds
from evals.compare import compare_run
from evals.gate import gate_variants
from evals.metrics import EquityCurve
from evals.replay import run_evals
from evals.report import build_report, load_run_data, quote_currency, run_candles, write_run_report
from evals.variants import EvalManifest
from theories.candles import Candles
from theories.regime import REGIMES

POLICIES = "\n".join(f'"{r}" = {{directions = "both", multiplier = 1.0, min_confidence = 0.0}}' for r in REGIMES)
THEORIES = '{montecarlo = {}, regime = {fit_window = 300, search_reps = 0}, kalman = {}, context = {}}'
VARIANTS_TOML = f"""
start = "2025-11-15T06:00:00Z"
end = "2025-11-16T00:00:00Z"
cadence = "1h"
universe = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
in_sample_until = "2025-11-15T15:00:00Z"

[paper]
taker_fee = 0.0
maker_fee = 0.0

[risk.sizing]
fee_rate = 0.0

[risk.regime.policies]
{POLICIES}

[[variant]]
name = "heuristic"
provider = "heuristic"
theories = {THEORIES}

[[variant]]
name = "copy"
provider = "heuristic"
theories = {THEORIES}

[[variant]]
name = "half_risk"
provider = "heuristic"
theories = {THEORIES}
risk = {{sizing = {{max_risk_per_trade = 0.005}}}}
"""

_RUNS: dict[str, Path] = {}


@pytest.fixture(scope="session")
def real_run(tmp_path_factory) -> Path:
    """The run folder (built once per session; the CLI tests import this fixture)."""
    if "run" not in _RUNS:
        root = tmp_path_factory.mktemp("evals-runs")
        config = root / "variants.toml"
        config.write_text(VARIANTS_TOML, encoding="utf-8")
        manifest = run_evals(config, root, run_id="sample", workers=1, progress=False, yes=True, audit_samples=0,
                             only=["heuristic", "copy", "half_risk"], features_cache="off")
        assert [v.status for v in manifest.variants[:3]] == ["completed"] * 3
        _RUNS["run"] = root / "sample"
    return _RUNS["run"]


@pytest.fixture(scope="module")
def written(real_run):
    md, html, report = write_run_report(real_run)
    return md, html, report


def test_the_report_is_written_as_markdown_and_self_contained_html(written, real_run):
    md, html, _ = written
    assert md == real_run / "report" / "report.md" and html == real_run / "report" / "report.html"
    page = html.read_text(encoding="utf-8")
    assert "data:image/png;base64," in page
    assert not re.search(r"""(src|href)=["'](?!data:|#)""", page), "the HTML must not load anything from outside"
    text = md.read_text(encoding="utf-8")
    assert (real_run / "report" / "equity_variants.png").is_file() and "](equity_variants.png)" in text


def test_the_report_holds_the_comparison_verdicts_gate_audit_and_versions(written, real_run):
    _, _, report = written
    headings = [s.heading for s in report.sections]
    for h in ("Summary", "Verdicts", "Lookahead audit", "Comparison", "Equity and drawdown",
              "Calibration of stated confidence", "Promotion gate", "Walk-forward stability",
              "Trade-order reshuffle (Monte Carlo)", "Per symbol, regime and direction", "Variant versions", "Method"):
        assert h in headings
    text = (real_run / "report" / "report.md").read_text(encoding="utf-8")
    verdicts = next(s for s in report.sections if s.heading == "Verdicts").paragraphs
    assert len(verdicts) == 2 and all("USDT per decision time" in v for v in verdicts)
    assert verdicts[1].startswith(("no significant difference between half_risk and heuristic", "half_risk beats",
                                   "heuristic beats"))
    run = load_run_data(real_run)
    for v in run.manifest.variants:  # the exact versions: prompt and risk hashes, theory fingerprint
        assert v.prompt_sha256 in text and v.risk_sha256 in text and v.theory_fingerprint in text
    assert "Lookahead audit" in text and ("PASSED" in text or "FAILED" in text)
    f = run.manifest.features  # where the theory results came from: read from a cache or computed
    assert f"Theory results: {f.from_cache} snapshots read from " in text
    assert f"{f.computed} computed by this run" in text
    summary = " ".join(next(s for s in report.sections if s.heading == "Summary").paragraphs)
    pending = [v.name for v in run.manifest.variants if v.status == "pending"]
    assert len(pending) == 5 and "Without results: " in summary
    assert all(f"{name}: no store yet (status pending)" in summary for name in pending)
    assert "Failing is the normal outcome" in summary
    assert "in sample until 2025-11-15T15:00:00Z" in summary


def test_an_identical_copy_of_the_baseline_replayed_shows_no_significant_difference(written):
    _, _, report = written
    verdict = next(s for s in report.sections if s.heading == "Verdicts").paragraphs[0]
    assert verdict.startswith("no significant difference between copy and heuristic (copy - heuristic = 0.00 USDT "
                              "per decision time, 95% CI [0.00, 0.00] contains 0)")


def test_report_numbers_are_the_ledgers(written, real_run):
    _, _, report = written
    run = load_run_data(real_run)
    trades_table = next(s for s in report.sections if s.heading == "Comparison").tables[1]
    by_name = {row[0]: row for row in trades_table.rows}
    for v in run.variants:
        assert by_name[v.name][1] == len(v.ledger.trades)
        assert by_name[v.name][7] == f"{sum(t.pnl for t in v.ledger.trades):,.2f}"


def test_every_note_of_a_paired_test_is_in_the_report(written, real_run):
    _, _, report = written
    run = load_run_data(real_run)
    comparison = compare_run(run.variants, run_candles(run.manifest))
    expected = [f"{c.b} vs {c.a}: " + "; ".join(c.notes) + "." for c in comparison.comparisons if c.notes]
    assert expected  # the identical copy's R losses differ by a constant: DM has no statistic, and says so
    notes = next((s for s in report.sections if s.heading == "Notes on the paired tests"), None)
    assert (notes.paragraphs if notes else []) == expected


def test_the_decision_funnel_is_counted_from_the_stores_rows(written, real_run):
    _, _, report = written
    section = next(s for s in report.sections if s.heading == "Decisions and the risk gate")
    rows = {row[0]: row for row in section.tables[0].rows}
    run = load_run_data(real_run)
    assert set(rows) == {v.name for v in run.variants}
    for v in run.variants:  # the same counts straight from SQL on the variant's store
        with sqlite3.connect(real_run / "variants" / v.name / "store.sqlite") as conn:
            by = dict(conn.execute("SELECT outcome, count(*) FROM decisions GROUP BY outcome").fetchall())
            refused = conn.execute("SELECT count(*) FROM gate_decisions g JOIN signals s USING (decision_id) "
                                   "WHERE g.status = 'rejected' AND s.direction != 'HOLD'").fetchone()[0]
            closed = conn.execute("SELECT count(DISTINCT decision_id) FROM closed_trades").fetchone()[0]
        proposals = by.get("rejected", 0) + by.get("ordered", 0) + by.get("order_failed", 0)
        assert rows[v.name][1:10] == [sum(by.values()), by.get("skipped", 0), by.get("error", 0), by.get("hold", 0),
                                      proposals, by.get("rejected", 0), by.get("ordered", 0),
                                      by.get("order_failed", 0), closed]
        assert refused == by.get("rejected", 0)
        assert sum(by.values()) == len(v.ledger.decisions) > 0


def extended(c: Candles, hours: int) -> Candles:
    """The candles plus `hours` made-up bars rising 0.1% an hour after the last one (outcomes for the signals)."""
    t = c.time[-1] + c.interval_ms * np.arange(1, hours + 1)
    close = c.close[-1] * 1.001 ** np.arange(1, hours + 1)
    cat = np.concatenate
    return Candles(cat([c.time, t]), cat([c.open, close]), cat([c.high, close]), cat([c.low, close]),
                   cat([c.close, close]), cat([c.volume, np.ones(hours)]), interval_ms=c.interval_ms, symbol=c.symbol)


def test_baselines_and_calibration_are_drawn_when_present(real_run, tmp_path):
    run = load_run_data(real_run)
    m = run.manifest
    times = np.linspace(m.period_start_ms, m.period_end_ms, 19).astype(int)
    bh = EquityCurve.of(times, np.linspace(10_000, 10_300, 19))
    run = dataclasses.replace(run, baselines={"buy_and_hold.BTC_USDT": bh})
    candles = {s: extended(c, 48) for s, c in run_candles(m).items()}
    comparison = compare_run(run.variants, candles, run.baselines, None, quote_currency(m))
    gates = gate_variants(run.variants, PromotionThresholds(), run_id=m.run_id, period_start_ms=m.period_start_ms,
                          period_end_ms=m.period_end_ms, in_sample_until_ms=m.in_sample_until_ms)
    report = build_report(run, comparison, gates, tmp_path)
    assert (tmp_path / "equity_baselines.png").is_file() and (tmp_path / "calibration.png").is_file()
    section = next(s for s in report.sections if s.heading == "Baselines: buy and hold")
    assert section.tables[0].rows[0][:2] == ["buy_and_hold.BTC_USDT", "3.00%"]
    scored = {v.name: v.signals.scored for v in comparison.variants}
    assert scored == {"heuristic": 54, "copy": 54, "half_risk": 54}  # all directional; outcomes now known
    pair = comparison.comparisons[1]
    assert pair.b == "half_risk" and pair.mcnemar_n == 54 and pair.mcnemar is not None


def test_quote_currency_is_named_only_when_the_universe_shares_one():
    base = EvalManifest.model_construct(universe=("BTC/USDT", "ETH/USDT"))
    assert quote_currency(base) == "USDT"
    assert quote_currency(EvalManifest.model_construct(universe=("BTC/USDT", "ETH/BTC"))) == "quote"
