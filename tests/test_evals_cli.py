"""`signal-agent evals`: gate, report, list and run through the real command line, on the real sample run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from agent.cli import main
from agent.store import Store
from agent.store.tables import AccountSnapshotRow, ClosedTradeRow, CycleRow, DecisionRow, OrderRow
from evals.gate import GateResult
from evals.metrics import DAY_MS
from evals.variants import EvalManifest, VariantManifest
from tests.test_evals_report import real_run  # noqa: F401 - the session's sample run folder


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No user configuration, no .env: the defaults (the issue's thresholds)."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("SIGNAL_AGENT_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def runs_dir(real_run, tmp_path):  # noqa: F811
    """A runs dir holding a copy of the sample run (the gate writes into it)."""
    root = tmp_path / "runs"
    shutil.copytree(real_run, root / "sample", ignore=shutil.ignore_patterns("report", "gate"))
    return root


def test_gate_judges_the_out_of_sample_part_fails_plainly_and_writes_its_file(runs_dir, capsys):
    assert main(["evals", "gate", "heuristic", "--run", str(runs_dir / "sample")]) == 1
    out = capsys.readouterr().out
    assert "Promotion gate for heuristic" in out and "after the run's in_sample_until" in out
    for name in ("trades", "years", "win_rate", "profit_factor", "max_drawdown", "sharpe", "deflated_sharpe"):
        assert name in out
    assert "FAILED" in out and "normal outcome" in out
    result = GateResult.model_validate_json((runs_dir / "sample" / "gate" / "heuristic.json").read_text())
    assert not result.passed and result.variant == "heuristic" and result.run_id == "sample"
    assert result.signature == "heuristic:rules-v1:baseline"
    assert result.oos_start_ms == 1763218800000  # 2025-11-15T15:00Z, the run's in_sample_until


def test_gate_without_run_finds_the_newest_run_with_the_variant(runs_dir, capsys):
    assert main(["evals", "gate", "half_risk", "--runs-dir", str(runs_dir)]) == 1
    assert (runs_dir / "sample" / "gate" / "half_risk.json").is_file()


def test_gate_thresholds_come_from_the_settings_file(runs_dir, tmp_path, capsys):
    settings = tmp_path / "settings.toml"
    settings.write_text("[evals.gate]\nmin_trades = 1\nmin_win_rate = 0.0\n", encoding="utf-8")
    main(["evals", "gate", "heuristic", "--run", str(runs_dir / "sample"), "--settings", str(settings)])
    data = json.loads((runs_dir / "sample" / "gate" / "heuristic.json").read_text())
    by = {c["name"]: c for c in data["checks"]}
    assert by["trades"]["threshold"] == 1 and by["trades"]["passed"]
    assert by["win_rate"]["threshold"] == 0.0 and by["win_rate"]["passed"]


def test_an_unknown_variant_is_a_clear_error(runs_dir, capsys):
    assert main(["evals", "gate", "nosuch", "--run", str(runs_dir / "sample")]) == 2
    err = capsys.readouterr().err
    assert "no variant 'nosuch' in run sample" in err and "heuristic, copy, half_risk" in err


def test_a_pending_variant_has_no_results_to_judge(runs_dir, capsys):
    assert main(["evals", "gate", "strategy.momentum", "--run", str(runs_dir / "sample")]) == 2
    assert "has no results" in capsys.readouterr().err


def test_a_missing_run_is_a_clear_error(tmp_path, capsys):
    assert main(["evals", "report", str(tmp_path / "nope"), "--runs-dir", str(tmp_path)]) == 2
    assert "no eval run" in capsys.readouterr().err
    (tmp_path / "plain").mkdir()
    assert main(["evals", "report", str(tmp_path / "plain")]) == 2
    assert "not an eval run folder" in capsys.readouterr().err
    assert main(["evals", "gate", "heuristic", "--runs-dir", str(tmp_path / "empty")]) == 2
    assert "no eval run in" in capsys.readouterr().err


def test_report_by_run_id_prints_the_summary_and_where_the_files_are(runs_dir, capsys):
    assert main(["evals", "report", "sample", "--runs-dir", str(runs_dir)]) == 0
    out = capsys.readouterr().out
    assert "Evals report: sample" in out and "Verdicts" in out and "Promotion gate" in out
    assert "Variant versions" not in out  # the terminal gets the summary, the files get everything
    assert str(runs_dir / "sample" / "report" / "report.html") in out
    assert (runs_dir / "sample" / "report" / "report.md").is_file()


def test_list_shows_each_run_with_its_status(runs_dir, capsys):
    (runs_dir / "broken").mkdir()
    (runs_dir / "broken" / "manifest.json").write_text("{not json", encoding="utf-8")
    assert main(["evals", "list", "--runs-dir", str(runs_dir)]) == 0
    lines = capsys.readouterr().out.splitlines()
    sample = next(line for line in lines if line.startswith("sample"))
    assert "completed" in sample and "1h" in sample and "162/432" in sample
    assert any(line.startswith("broken") and "unreadable" in line for line in lines)


def test_list_of_an_empty_runs_dir_says_so(tmp_path, capsys):
    assert main(["evals", "list", "--runs-dir", str(tmp_path / "none")]) == 0
    assert "No eval runs in" in capsys.readouterr().out


def test_run_refuses_a_missing_or_broken_variants_file(tmp_path, capsys):
    assert main(["evals", "run", str(tmp_path / "missing.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text('start = "2025-11-15T00:00:00Z"\nend = "2025-11-14T00:00:00Z"\n', encoding="utf-8")
    assert main(["evals", "run", str(bad), "--runs-dir", str(tmp_path / "runs")]) == 2
    assert "end must be after start" in capsys.readouterr().err
    assert main(["evals", "run", str(bad), "--workers", "0"]) == 2
    assert "--workers 0" in capsys.readouterr().err


# --- a hand-built run whose variant passes: the store rows a replay would write, 800 daily cycles -------------

T0 = 1_600_000_000_000 - 1_600_000_000_000 % DAY_MS
DAYS = 800


def write_store(path: Path, run: str, signature: str, pnls: np.ndarray) -> None:
    """One BTC trade per daily cycle (opened at the decision, closed 12 h later), equity marked at each cycle end."""
    store = Store.at(path)
    equity = 10_000.0
    rows = []
    for i, pnl in enumerate(pnls):
        t = T0 + i * DAY_MS
        cycle, decision, coid = f"{run}@{i}", f"{run}@{i}/BTC/USDT", f"{run}-{i}"
        rows += [
            CycleRow(cycle_id=cycle, run=run, decision_ms=t, started_ms=t, finished_ms=t, status="completed",
                     broker="paper", provider="ollama", symbols_json='["BTC/USDT"]'),
            DecisionRow(decision_id=decision, cycle_id=cycle, symbol="BTC/USDT", decision_ms=t, outcome="ordered",
                        regime="bull trend", variant=signature, created_ms=t),
            OrderRow(client_order_id=coid, decision_id=decision, cycle_id=cycle, broker="paper", symbol="BTC/USDT",
                     side="LONG", order_type="market", quantity=10.0, stop=90.0, target=130.0, time_stop_ms=t + DAY_MS,
                     status="filled", created_ms=t, updated_ms=t),
            ClosedTradeRow(client_order_id=coid, decision_id=decision, cycle_id=cycle, symbol="BTC/USDT", side="LONG",
                           quantity=10.0, entry=100.0, exit=100.0 + pnl / 10, opened_ms=t, closed_ms=t + DAY_MS // 2,
                           exit_reason="target" if pnl > 0 else "stop", fees=0.0, pnl=float(pnl), risk_amount=100.0,
                           r_multiple=float(pnl) / 100, outcome="win" if pnl > 0 else "loss", regime="bull trend",
                           variant=signature),
        ]
        equity += float(pnl)
        rows.append(AccountSnapshotRow(cycle_id=cycle, stage="end", time_ms=t + DAY_MS - 1, cash=equity,
                                       balance=equity, equity=equity, positions_value=0.0, floating_pnl=0.0,
                                       initial_balance=10_000.0))
    with store.session() as s:
        for table in (CycleRow, DecisionRow, OrderRow, ClosedTradeRow, AccountSnapshotRow):  # parents first
            s.add_all([r for r in rows if isinstance(r, table)])
            s.flush()
        s.commit()
    store.close()


def variant_manifest(name: str, signature: str) -> VariantManifest:
    return VariantManifest(
        name=name, signature=signature, provider_spec="ollama:m", provider="ollama", model="m",
        provider_parameters={"temperature": 0.0}, prompt_variant="baseline", prompt_version="1", prompt_sha256="p" * 64,
        theories={"regime": {}}, theory_fingerprint="f" * 24, window=500, anonymise=True, risk={}, risk_sha256="r" * 64,
        paper={}, baseline=False, llm=True, store=f"variants/{name}/store.sqlite", status="completed",
        decisions_done=DAYS, decisions_total=DAYS,
    )


@pytest.fixture
def passing_run(tmp_path) -> Path:
    run = tmp_path / "runs" / "built"
    rng = np.random.default_rng(7)
    variants = {"good": np.where(rng.random(DAYS) < 0.6, 30.0, -20.0), "coin": rng.normal(0.0, 25.0, DAYS)}
    for name, pnls in variants.items():
        write_store(run / "variants" / name / "store.sqlite", name, f"ollama:m:{name}", pnls)
    manifest = EvalManifest(
        run_id="built", created_ms=T0, updated_ms=T0, status="completed", config_sha256="c" * 64, period_start_ms=T0,
        period_end_ms=T0 + DAYS * DAY_MS, cadence="1d", cadence_ms=DAY_MS, decision_times=DAYS,
        universe=("BTC/USDT",), in_sample_until_ms=None, initial_cash=10_000.0, data_dir="", funding_dir=None,
        data_files=[], package_version="test", git_commit=None, python="3",
        variants=[variant_manifest(n, f"ollama:m:{n}") for n in variants],
    )
    (run / "manifest.json").write_text(manifest.model_dump_json(), encoding="utf-8")
    return run


def test_a_variant_that_meets_every_threshold_passes_with_exit_status_0(passing_run, capsys):
    assert main(["evals", "gate", "good", "--run", str(passing_run)]) == 0
    out = capsys.readouterr().out
    assert "PASSED: good meets every threshold out of sample" in out
    assert "the whole run: it declares no in-sample part" in out
    result = GateResult.model_validate_json((passing_run / "gate" / "good.json").read_text())
    assert result.passed and result.oos.trades == DAYS and result.n_trials == 2
    assert main(["evals", "gate", "coin", "--run", str(passing_run)]) == 1


def test_the_report_of_a_two_year_run_has_quarterly_stability_and_deflated_sharpe(passing_run, capsys):
    assert main(["evals", "report", str(passing_run)]) == 0
    text = (passing_run / "report" / "report.md").read_text(encoding="utf-8")
    assert "Promotion gate: 1 of 2 variants pass (good)" in text
    assert "good: walk-forward stability (quarterly)" in text and "| 2020-Q4 |" in text
    assert "](monthly_good.png)" in text and (passing_run / "report" / "monthly_good.png").is_file()
    assert "good by direction" in text
    assert "signals are not scored" in text  # the hand-built run has no candle folder
    assert "good beats coin" in text or "no significant difference between good and coin" in text
