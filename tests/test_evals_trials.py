"""The deflated Sharpe ratio's N counts every variant tried on the same history, across the runs folder."""

from __future__ import annotations

from pathlib import Path

from agent.cli import main
from evals.gate import GateResult
from evals.metrics import DAY_MS
from evals.trials import TrialCount, count_trials, variant_identity
from evals.variants import EvalManifest
from tests.test_evals_cli import DAYS, T0, isolated, passing_run, variant_manifest  # noqa: F401 - fixtures

UNIVERSE = ("BTC/USDT",)


def manifest(run_id: str, variants, start_ms: int = T0, days: int = DAYS, universe=UNIVERSE,
             cadence: str = "1d") -> EvalManifest:
    return EvalManifest(
        run_id=run_id, created_ms=T0, updated_ms=T0, status="completed", config_sha256="c" * 64,
        period_start_ms=start_ms, period_end_ms=start_ms + days * DAY_MS, cadence=cadence, cadence_ms=DAY_MS,
        decision_times=days, universe=universe, in_sample_until_ms=None, initial_cash=10_000.0, data_dir="",
        funding_dir=None, data_files=[], package_version="test", git_commit=None, python="3", variants=list(variants),
    )


def variant(name: str, prompt: str = "p", done: int = DAYS):
    return variant_manifest(name, f"ollama:m:{name}").model_copy(
        update={"prompt_sha256": prompt * 64, "decisions_done": done})


def keep(root: Path, m: EvalManifest) -> None:
    folder = root / m.run_id
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(m.model_dump_json(), encoding="utf-8")


def test_a_variant_is_what_its_results_depend_on_not_its_name():
    a = variant("a")
    assert variant_identity(a, UNIVERSE, "1d") == variant_identity(variant("renamed"), UNIVERSE, "1d")
    assert variant_identity(a, ("ETH/USDT", "BTC/USDT"), "1d") == variant_identity(a, ("BTC/USDT", "ETH/USDT"), "1d")
    others = {variant_identity(variant("a", prompt="q"), UNIVERSE, "1d"),  # another prompt
              variant_identity(a.model_copy(update={"risk_sha256": "s" * 64}), UNIVERSE, "1d"),  # other risk settings
              variant_identity(a.model_copy(update={"anonymise": False}), UNIVERSE, "1d"),
              variant_identity(a, ("ETH/USDT",), "1d"),  # another universe
              variant_identity(a, UNIVERSE, "4h")}  # another cadence
    assert variant_identity(a, UNIVERSE, "1d") not in others and len(others) == 5


def test_trials_of_other_runs_on_overlapping_history_count_once(tmp_path):
    root = tmp_path / "runs"
    now = manifest("now", [variant("a"), variant("b", prompt="b"), variant("no-results", prompt="n")])
    keep(root, now)
    # overlapping: a again (renamed: not new), c new, d never decided anything (not a trial)
    keep(root, manifest("earlier", [variant("a-again"), variant("c", prompt="c"), variant("d", prompt="d", done=0)],
                        start_ms=T0 - 100 * DAY_MS))
    keep(root, manifest("later", [variant("c-again", prompt="c")], start_ms=T0 + 10 * DAY_MS))  # c: counted already
    keep(root, manifest("after", [variant("e", prompt="e")], start_ms=T0 + DAYS * DAY_MS))  # disjoint: no overlap
    keep(root, manifest("other-coin", [variant("a")], universe=("ETH/USDT",)))  # a on ETH: another trial
    (root / "broken").mkdir()
    (root / "broken" / "manifest.json").write_text("{", encoding="utf-8")
    (root / "notes").mkdir()  # no manifest: not a run, ignored

    count = count_trials(root, now, ["a", "b"])
    assert count == TrialCount(n_trials=4, in_run=2, elsewhere=2, runs=("earlier", "other-coin"),
                               unreadable=("broken",))
    note = count.note()
    assert "n_trials = 4" in note and "2 in this run" in note and "2 more in other runs" in note
    assert "earlier, other-coin" in note and "broken" in note and "may be higher" in note


def test_a_run_alone_counts_its_variants_with_results(tmp_path):
    root = tmp_path / "runs"
    alone = manifest("alone", [variant("a"), variant("same-settings")])
    keep(root, alone)
    count = count_trials(root, alone, ["a", "same-settings"])  # two names for one setting: both count, as before
    assert (count.n_trials, count.in_run, count.elsewhere, count.runs) == (2, 2, 0, ())
    assert count_trials(tmp_path / "no-such-folder", alone, ["a"]).n_trials == 1


def test_the_gate_deflates_by_the_trials_of_the_whole_runs_folder(passing_run, capsys):  # noqa: F811
    assert main(["evals", "gate", "good", "--run", str(passing_run)]) == 0
    alone = GateResult.model_validate_json((passing_run / "gate" / "good.json").read_text())
    dsr_alone = next(c.value for c in alone.checks if c.name == "deflated_sharpe")
    assert alone.n_trials == 2 and "n_trials = 2" in capsys.readouterr().out

    # forty more prompts tried on the same history, in runs of their own
    built = EvalManifest.model_validate_json((passing_run / "manifest.json").read_text())
    for k in range(40):
        keep(passing_run.parent, manifest(f"try-{k:02d}", [variant(f"try-{k}", prompt=f"t{k:02d}")]))
    assert count_trials(passing_run.parent, built, ["good", "coin"]).n_trials == 42

    main(["evals", "gate", "good", "--run", str(passing_run)])
    out = capsys.readouterr().out
    searched = GateResult.model_validate_json((passing_run / "gate" / "good.json").read_text())
    dsr_searched = next(c.value for c in searched.checks if c.name == "deflated_sharpe")
    assert searched.n_trials == 42 and "n_trials = 42" in out and "40 more in other runs" in out
    assert dsr_searched < dsr_alone  # the same record is less convincing after forty tries

    assert main(["evals", "report", str(passing_run)]) == 0
    report = (passing_run / "report" / "report.md").read_text(encoding="utf-8")
    assert "n_trials = 42" in report and "40 more in other runs over overlapping periods" in report
