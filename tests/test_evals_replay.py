"""The evals replay engine end to end on the bundled sample: a real replay through the cycle, shared features
computed once, resuming after an interruption (a hook and a SIGKILL), re-runs that are byte-identical, and
later runs that read the machine's shared features cache (warm) writing exactly what a cold run writes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import evals.features as features_mod
from agent.cycle import FileMarketData, compute_snapshot, cycle_id_for
from agent.store import Store
from agent.store.tables import DecisionRow, FillRow, OrderRow
from evals.features import CachedSnapshotSource, FeatureCache, decidable, shared_snapshot
from evals.replay import CostNotConfirmed, EvalsError, Plan, cycle_settings, load_run, run_evals
from evals.variants import load_variants
from tests.llm_servers import ollama_chat, serve

ROOT = Path(__file__).resolve().parents[1]
SMALL_SET = '["montecarlo", "context", "bayes", "rsi_bollinger", "momentum", "atr_breakout", "vwap_reversion", ' \
            '"funding_extremes"]'
CONFIG = f"""
start = 2025-11-13T12:00:00Z
end = 2025-11-14T12:00:00Z
cadence = "4h"
universe = ["BTC", "ETH"]
baseline_theories = {SMALL_SET}
settings = "settings.toml"
# the small theory set has no regime theory (its Markov fits would cost the tests seconds)
risk = {{ regime = {{ require_regime = false }} }}

[[variant]]
name = "heur-small"
provider = "heuristic"
theories = {SMALL_SET}

[[variant]]
name = "qwen"
provider = "ollama:qwen3:8b"
theories = {SMALL_SET}
risk = {{ sizing = {{ max_risk_per_trade = 0.005 }} }}
"""
CYCLES, SYMBOLS = 6, 2
VARIANTS = 7  # two declared + five seed strategies (the heuristic is declared)
# wall-clock-free comparison: latency is the only measured time in a decision's rows
VOLATILE = {"decision_llm_calls": {"latency_ms", "id", "record_id"}}
SOME = ["qwen", "heur-small"]  # the tests that run again replay these two only (time)


def write_config(folder: Path, text: str = CONFIG, settings: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "settings.toml").write_text(f'data_dir = "{folder / "data"}"\n{settings}', encoding="utf-8")
    path = folder / "variants.toml"
    path.write_text(text, encoding="utf-8")
    return path


def dump(store: Path, volatile: dict[str, set[str]] = VOLATILE) -> dict[str, list[tuple]]:
    """Every row of every table, in a stable order, without the columns that hold measured times."""
    out = {}
    with sqlite3.connect(store) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
        for table in tables:
            cols = [r[1] for r in db.execute(f"PRAGMA table_info({table})") if r[1] not in volatile.get(table, set())]
            rows = db.execute(f"SELECT {', '.join(f'[{c}]' for c in cols)} FROM [{table}]").fetchall()
            out[table] = sorted(rows, key=repr)
    return out


def dump_run(run_dir: Path, only: list[str] | None = None, **kw) -> dict[str, dict]:
    return {p.parent.name: dump(p, **kw) for p in sorted((run_dir / "variants").glob("*/store.sqlite"))
            if only is None or p.parent.name in only}


def long_reply(body: dict):
    """The scripted model: always LONG at the (anonymised, rebased to 100) last close, 1.5% stop, 2 R target."""
    return ollama_chat(json.dumps({
        "symbol": "ASSET", "direction": "LONG", "confidence": 0.7, "entry": 100.0, "stop": 98.5, "target": 103.0,
        "horizon_hours": 8, "reasoning": "Scripted test model: always long.", "theories": ["montecarlo"],
    }))


def slow_long_reply(body: dict):
    """The scripted model, answering after 0.4 s."""
    reply = long_reply(body)
    reply.delay_s = 0.4
    return reply


@pytest.fixture(scope="module")
def llm_server():
    with serve("/api/chat") as server:
        server.push(*[long_reply] * 10_000)
        yield server


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, llm_server):
    """One uninterrupted run, counting every snapshot computation."""
    folder = tmp_path_factory.mktemp("evals")
    config = write_config(folder, CONFIG, f'[llm.ollama]\nhost = "{llm_server.url}"\n')
    calls = []
    real = features_mod.build_snapshot

    def counting(symbol, universe, at_ms=None, *args, **kw):
        calls.append((symbol, at_ms))
        return real(symbol, universe, at_ms, *args, **kw)

    features_mod.build_snapshot = counting
    try:
        manifest = run_evals(config, folder / "runs", run_id="first", workers=1, progress=False, audit_samples=2)
    finally:
        features_mod.build_snapshot = real
    return config, folder, manifest, calls


def test_a_small_replay_runs_every_variant_through_the_cycle_and_records_what_it_ran_with(first_run):
    config, folder, m, _ = first_run
    assert m.status == "completed", [(v.name, v.error) for v in m.variants]
    assert len(m.variants) == VARIANTS and not m.skipped_baselines
    assert {v.name for v in m.variants} >= {"heur-small", "qwen", "strategy.momentum"}
    assert m.decision_times == CYCLES and m.universe == ("BTC/USDT", "ETH/USDT")
    run = load_run(folder / "runs" / "first")
    with run:
        for v in m.variants:
            assert (v.status, v.cycles_done, v.decisions_done) == ("completed", CYCLES, CYCLES * SYMBOLS)
            decisions = run.stores[v.name].rows(DecisionRow)
            assert len(decisions) == CYCLES * SYMBOLS
            assert {d.cycle_id.split("@")[0] for d in decisions} == {v.name}  # run name = variant name
            analysed = [d for d in decisions if d.outcome != "skipped"]
            assert analysed and all(d.variant == v.signature for d in analysed)
            # the decision time is the simulated clock: a replay's rows carry no wall-clock time
            assert all(d.created_ms == d.decision_ms for d in decisions)
        assert set(run.baselines) == {"buy_and_hold.BTC_USDT", "buy_and_hold.ETH_USDT", "equal_weight.BTC_ETH"}
        curve = run.baselines["equal_weight.BTC_ETH"]["curve"]
        assert curve["equity"][0] == 10_000 and len(curve["time_ms"]) == len(curve["equity"]) == CYCLES
    heur = m.variant("heur-small")
    assert heur.signature == "heuristic:rules-v1:baseline" and heur.anonymise is False
    from agent.llm.prompt import PromptTemplate

    assert heur.prompt_sha256 == PromptTemplate.load("baseline").sha256
    assert list(heur.theories) == json.loads(SMALL_SET) and heur.theories["montecarlo"]["n_paths"] == 10000
    qwen = m.variant("qwen")
    assert qwen.risk["sizing"]["max_risk_per_trade"] == 0.005 and qwen.risk_sha256 != heur.risk_sha256
    assert (qwen.signature, qwen.anonymise, qwen.llm) == ("ollama:qwen3:8b:baseline", True, True)
    # the scripted model trades: orders filled on later candles by the paper broker
    with load_run(folder / "runs" / "first") as run:
        orders = run.stores["qwen"].rows(OrderRow)
        fills = run.stores["qwen"].rows(FillRow)
    created = {o.client_order_id: o.created_ms for o in orders}
    assert orders and fills and all(f.time_ms >= created[f.client_order_id] for f in fills)
    files = {Path(f.path).name for f in m.data_files}
    assert {"BTC_USDT.csv.gz", "ETH_USDT.csv.gz"} <= files and all(len(f.sha256) == 64 for f in m.data_files)
    assert (folder / "runs" / "first" / "variants.toml").read_text() == config.read_text()
    assert m.lookahead is not None and m.lookahead.passed and m.lookahead.samples >= 1


def test_shared_features_are_computed_once_and_read_by_every_variant(first_run):
    _config, _folder, m, calls = first_run
    # every variant uses the same set: one computation per decidable (symbol, time), none repeated
    assert len(calls) == len(set(calls)) == m.features.computed == m.features.cached
    assert 0 < m.features.computed <= CYCLES * SYMBOLS
    assert m.features.misses == 0
    assert m.features.reused == VARIANTS * m.features.computed


def _last_time_of(first_run):
    """The first run's first variant's settings, its last decision time and the universe's candles then."""
    config, folder, m, _ = first_run
    c = load_variants(config)
    data = FileMarketData()
    plan = Plan(str(folder / "runs" / "first"), c, m.universe, tuple(c.decision_times()))
    t = c.decision_times()[-1]
    return data, cycle_settings(plan, c.variants[0]), t, {s: data.candles(s, t) for s in m.universe}


def test_the_cached_source_gives_exactly_the_snapshot_build_snapshot_gives_with_the_variants_own_outcomes(first_run):
    _config, folder, m, _ = first_run
    data, cs, t, universe = _last_time_of(first_run)
    assert decidable(universe, "ETH/USDT", t, cs.data, cs.window)
    outcomes = [1.2, -1.0, 2.0, -1.0]  # this variant's own closed trades: bayes must see them
    assert m.features.shared and Path(m.features.cache_path) == folder / "data" / "evals" / "features.sqlite"
    cache = FeatureCache(m.features.cache_path)
    try:
        source = CachedSnapshotSource(cache, cs, key=m.features.keys[m.variant("qwen").theory_fingerprint])
        got = source("ETH/USDT", universe, t, cs, outcomes=outcomes, funding=data.funding_rates(), cache=None)
    finally:
        cache.close()
    assert (source.reused, source.misses) == (1, 0)  # read from the cache, not computed
    fresh = compute_snapshot("ETH/USDT", universe, t, cs, outcomes=outcomes, funding=data.funding_rates(), cache=None)
    assert got.model_dump_json() == fresh.model_dump_json()
    assert got.to_prompt_text() == fresh.to_prompt_text()
    assert "bayes" in got.theories and "bayes" not in shared_snapshot(
        "ETH/USDT", universe, t, cs, funding=data.funding_rates(), cache=None).theories


def test_a_rerun_is_byte_identical(first_run, tmp_path):
    config, folder, _m, _ = first_run
    again = run_evals(config, tmp_path / "runs", run_id="again", workers=1, progress=False, audit_samples=0,
                      only=SOME)
    assert again.status == "completed"
    assert dump_run(tmp_path / "runs" / "again") == dump_run(folder / "runs" / "first", SOME)


def test_resuming_a_finished_run_redoes_nothing(first_run):
    config, folder, m, _ = first_run
    before = dump_run(folder / "runs" / "first", volatile={})
    again = run_evals(config, folder / "runs", run_id="first", workers=1, progress=False, audit_samples=0)
    assert again.status == "completed" and again.features.computed == m.features.computed
    assert dump_run(folder / "runs" / "first", volatile={}) == before  # not one row added or changed


def test_an_interrupted_run_resumes_without_duplicates_and_ends_as_an_uninterrupted_one(first_run, tmp_path):
    config, folder, _m, _ = first_run
    part = run_evals(config, tmp_path / "runs", run_id="cut", workers=1, progress=False, audit_samples=0,
                     stop_after=2, only=SOME)
    assert part.status == "running"
    assert all(part.variant(n).status == "running" and part.variant(n).cycles_done == 2 for n in SOME)
    done = run_evals(config, tmp_path / "runs", run_id="cut", workers=1, progress=False, audit_samples=0, only=SOME)
    assert done.status == "completed" and all(done.variant(n).cycles_done == CYCLES for n in SOME)
    assert dump_run(tmp_path / "runs" / "cut") == dump_run(folder / "runs" / "first", SOME)


@contextlib.contextmanager
def _run_on_a_slow_model(first_run, tmp_path, only: list[str], workers: int, replies: int, stderr=subprocess.DEVNULL):
    """The run 'killed' of the variants `only`, started in a process of its own on a model taking 0.4 s a reply.

    Phase 1 reads the first run's features cache. Yields the process, the model server and the runs folder;
    kills the process on the way out if it still runs.
    """
    config = first_run[0]
    runs = tmp_path / "runs"
    with serve("/api/chat") as slow:
        slow.push(*[slow_long_reply] * replies)
        slow_config = write_config(tmp_path / "cfg", config.read_text(encoding="utf-8"),
                                   f'[llm.ollama]\nhost = "{slow.url}"\n')
        script = ("import sys; from evals.replay import run_evals; "
                  f"run_evals(sys.argv[1], sys.argv[2], run_id='killed', workers={workers}, progress=False, "
                  f"audit_samples=0, only={only!r}, features_cache=sys.argv[3])")
        proc = subprocess.Popen([sys.executable, "-c", script, str(slow_config), str(runs), _first_cache(first_run)],
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            yield proc, slow, runs
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)


def _first_cache(first_run) -> str:
    """The first run's features cache."""
    return str(first_run[1] / "data" / "evals" / "features.sqlite")


def test_a_run_killed_mid_way_resumes_without_duplicates(first_run, tmp_path):
    config, folder, _m, _ = first_run
    # a slow model: the 8 decisions left after the third take seconds, so the kill lands mid-way however
    # fast the machine is (with a quick model the run could end between the look and the kill)
    with _run_on_a_slow_model(first_run, tmp_path, ["qwen"], workers=1, replies=100) as (proc, _slow, runs):
        store = runs / "killed" / "variants" / "qwen" / "store.sqlite"
        deadline = time.monotonic() + 240  # generous: a loaded CI machine starts the run's process slowly
        decided = 0
        while time.monotonic() < deadline and proc.poll() is None and decided < 3:
            if store.exists():
                try:
                    with sqlite3.connect(store, timeout=1) as db:
                        decided = db.execute("SELECT COUNT(*) FROM decisions").fetchone()[0]
                except sqlite3.OperationalError:
                    pass
            time.sleep(0.05)
        assert proc.poll() is None, "the run finished before it could be killed"
        assert decided >= 3, "the run stored no decision in time: nothing mid-way to kill"
        os.kill(proc.pid, signal.SIGKILL)
    manifest = json.loads((runs / "killed" / "manifest.json").read_text())
    assert manifest["status"] == "running"
    done = run_evals(config, runs, run_id="killed", workers=1, progress=False, audit_samples=0, only=["qwen"],
                     features_cache=_first_cache(first_run))
    assert done.status == "completed"
    # A replay's cycle is one store transaction (Store.batch): the cycle killed half way left nothing, and
    # the resumed run redoes it whole, as a first attempt; every row is the one of an uninterrupted run.
    # A reply recorded just before the kill answers the resumed decision from the records (cache hit, no cost).
    resumed = {"decision_llm_calls": {"latency_ms", "id", "record_id", "cache_hit", "cost_usd"}}
    got, want = dump_run(runs / "killed", **{"volatile": resumed}), dump_run(folder / "runs" / "first", ["qwen"],
                                                                              volatile=resumed)
    assert got == want
    with sqlite3.connect(runs / "killed" / "variants" / "qwen" / "store.sqlite") as db:
        ends = db.execute("SELECT cycle_id, COUNT(*) FROM account_snapshots WHERE stage='end' GROUP BY cycle_id")
        assert sorted(n for _, n in ends) == [1] * CYCLES


def test_a_run_id_cannot_be_reused_for_another_variants_file(first_run, tmp_path):
    _config, folder, _m, _ = first_run
    other = write_config(tmp_path / "other", CONFIG.replace("0.005", "0.006"))
    with pytest.raises(EvalsError, match="different variants file"):
        run_evals(other, folder / "runs", run_id="first", workers=1, progress=False)


def test_two_worker_processes_give_the_same_stores_as_one(first_run, tmp_path):
    config, folder, m, _ = first_run
    cold = tmp_path / "cold.sqlite"  # the workers compute every snapshot again, into a cache of their own
    got = run_evals(config, tmp_path / "runs", run_id="parallel", workers=2, progress=False, audit_samples=2,
                    only=SOME, features_cache=cold)
    assert got.status == "completed" and got.features.computed == m.features.computed == got.features.cached
    assert got.features.from_cache == 0 and Path(got.features.cache_path) == cold
    assert got.lookahead is not None and got.lookahead.passed
    assert dump_run(tmp_path / "runs" / "parallel") == dump_run(folder / "runs" / "first", SOME)
    # the buy-and-hold curves, drawn in this process while the workers replay: the one-process run's, byte for byte
    assert [b.model_dump() for b in got.baselines] == [b.model_dump() for b in m.baselines]
    assert got.baselines and all(b.status == "completed" for b in got.baselines)
    for b in got.baselines:
        drawn = (tmp_path / "runs" / "parallel" / b.path).read_bytes()
        assert drawn == (folder / "runs" / "first" / b.path).read_bytes(), b.name


def test_llm_calls_go_through_the_records_anonymised_and_a_rerun_from_them_costs_nothing_and_matches(
        first_run, llm_server, tmp_path):
    config, folder, _m, _ = first_run
    asked = len(llm_server.requests)
    assert asked >= 1
    text = json.dumps(llm_server.requests)
    assert "BTC" not in text and "ETH" not in text and "2025-11" not in text  # anonymised prompts
    rerun = run_evals(config, tmp_path / "runs", run_id="from-cache", workers=1, progress=False,
                      audit_samples=0, only=["qwen"], calls_from=folder / "runs" / "first" / "calls.sqlite")
    assert rerun.variant("qwen").status == "completed"
    assert len(llm_server.requests) == asked  # every request answered from the records: nothing spent
    volatile = {"decision_llm_calls": {"latency_ms", "id", "record_id", "cache_hit", "cost_usd"}}
    a = dump(folder / "runs" / "first" / "variants" / "qwen" / "store.sqlite", volatile)
    b = dump(tmp_path / "runs" / "from-cache" / "variants" / "qwen" / "store.sqlite", volatile)
    assert a == b and a["fills"]
    with sqlite3.connect(tmp_path / "runs" / "from-cache" / "variants" / "qwen" / "store.sqlite") as db:
        assert {r[0] for r in db.execute("SELECT cache_hit FROM decision_llm_calls")} == {1}
        assert {r[0] for r in db.execute("SELECT direction FROM signals")} == {"LONG"}


def test_a_run_that_would_spend_money_needs_confirmation(tmp_path):
    text = CONFIG.split("[[variant]]")[0] + f"""
[[variant]]
name = "gpt"
provider = "openai:gpt-4o-mini"
theories = {SMALL_SET}
"""
    settings = ('[llm.openai]\nbase_url = "http://127.0.0.1:9/v1"\napi_key = "test-key"\n'
                '[prices."openai:gpt-4o-mini"]\ninput_per_million = 0.15\noutput_per_million = 0.60\n')
    config = write_config(tmp_path / "cfg", text, settings)
    asked: list[str] = []  # (no server: the run must stop before any call)
    with pytest.raises(CostNotConfirmed, match=r"\$"):
        run_evals(config, tmp_path / "runs", run_id="paid", workers=1, progress=False, audit_samples=0,
                  only=["gpt"], confirm=lambda message: asked.append(message) or False)
    assert "gpt: 12 decisions" in asked[0] and "Estimated LLM cost of this run: up to $" in asked[0]
    manifest = json.loads((tmp_path / "runs" / "paid" / "manifest.json").read_text())
    assert manifest["cost_estimate_usd"] > 0
    assert not (tmp_path / "runs" / "paid" / "variants" / "gpt").exists()  # nothing was replayed


def test_the_first_run_filled_the_shared_cache_and_a_rerun_reads_it_instead_of_computing(first_run, tmp_path):
    config, folder, m, calls = first_run
    assert m.features.shared and m.features.from_cache == 0 and m.features.computed == len(calls)
    again = run_evals(config, tmp_path / "runs", run_id="warm", workers=1, progress=False, audit_samples=2,
                      only=SOME)
    assert again.features.cache_path == m.features.cache_path and again.features.keys == m.features.keys
    assert (again.features.computed, again.features.misses) == (0, 0)
    assert again.features.from_cache == again.features.cached == m.features.computed
    assert again.lookahead.passed and again.lookahead.cache_mismatches == 0  # the audit recomputed some: equal
    assert dump_run(tmp_path / "runs" / "warm") == dump_run(folder / "runs" / "first", SOME)


def test_a_warm_cache_gives_a_shifted_period_exactly_what_a_cold_one_gives(first_run, tmp_path):
    """Another period overlapping the first run's: its overlap comes from the cache, the rest is computed, and
    every variant store equals a run with its own cold cache (so no snapshot depends on which run made it)."""
    config, _folder, _m, _ = first_run
    shifted = config.parent / "shifted.toml"
    shifted.write_text(config.read_text().replace("start = 2025-11-13T12:00:00Z", "start = 2025-11-13T16:00:00Z")
                       .replace("end = 2025-11-14T12:00:00Z", "end = 2025-11-14T16:00:00Z"), encoding="utf-8")
    kw = dict(workers=1, progress=False, audit_samples=0, only=SOME)
    warm = run_evals(shifted, tmp_path / "runs", run_id="warm", **kw)
    cold = run_evals(shifted, tmp_path / "runs", run_id="cold", features_cache="off", **kw)
    assert warm.status == cold.status == "completed"
    assert warm.features.shared and not cold.features.shared and "turned off" in cold.features.note
    assert Path(cold.features.cache_path) == tmp_path / "runs" / "cold" / "features.sqlite"
    assert 0 < warm.features.computed <= SYMBOLS < cold.features.computed  # only the one new decision time
    assert warm.features.from_cache == cold.features.computed - warm.features.computed > 0
    assert dump_run(tmp_path / "runs" / "warm") == dump_run(tmp_path / "runs" / "cold")


def test_other_code_is_a_miss_never_a_stale_hit(first_run, tmp_path, monkeypatch):
    config, _folder, m, _ = first_run
    import evals.replay as replay_mod

    monkeypatch.setattr(replay_mod, "code_fingerprint", lambda: "edited-theories")
    got = run_evals(config, tmp_path / "runs", run_id="edited", workers=1, progress=False, audit_samples=0,
                    only=["heur-small"])
    assert got.features.cache_path == m.features.cache_path and got.features.code_fingerprint == "edited-theories"
    assert got.features.computed == m.features.computed and got.features.from_cache == 0
    assert got.features.keys != m.features.keys


# --- phase 3's lockstep: the variants of a worker share the per-(symbol, time) work ---------------------


def test_variants_in_lockstep_write_exactly_what_each_writes_replayed_alone(first_run, tmp_path):
    """The first run replayed its seven variants in lockstep (one process); replayed one at a time (a group of
    one, the plain walk), each variant writes the same store: nothing one variant did reached another."""
    config, folder, _m, _ = first_run
    for name in SOME:
        alone = run_evals(config, tmp_path / "runs", run_id="alone", workers=1, progress=False, audit_samples=0,
                          only=[name])
        assert alone.variant(name).status == "completed"
    assert dump_run(tmp_path / "runs" / "alone") == dump_run(folder / "runs" / "first", SOME)


def test_variants_at_different_progress_resume_together_each_from_its_own_last_cycle(first_run, tmp_path):
    config, folder, _m, _ = first_run
    kw = dict(workers=1, progress=False, audit_samples=0)
    part = run_evals(config, tmp_path / "runs", run_id="uneven", stop_after=2, only=["qwen"], **kw)
    assert part.variant("qwen").cycles_done == 2 and part.variant("heur-small").cycles_done == 0
    done = run_evals(config, tmp_path / "runs", run_id="uneven", stop_after=3, only=SOME, **kw)
    assert (done.variant("qwen").cycles_done, done.variant("heur-small").cycles_done) == (5, 3)
    done = run_evals(config, tmp_path / "runs", run_id="uneven", only=SOME, **kw)
    assert done.status == "completed" and all(done.variant(n).cycles_done == CYCLES for n in SOME)
    assert dump_run(tmp_path / "runs" / "uneven") == dump_run(folder / "runs" / "first", SOME)


def test_the_variants_of_a_worker_parse_each_snapshot_once_and_each_gets_its_own_outcomes(first_run, monkeypatch):
    m = first_run[2]
    data, cs, t, universe = _last_time_of(first_run)
    funding = data.funding_rates()
    parsed = []
    real = features_mod.FeatureSnapshot.from_cache
    monkeypatch.setattr(features_mod.FeatureSnapshot, "from_cache",
                        lambda text, prompt_text=None: parsed.append(1) or real(text, prompt_text))
    cache = FeatureCache(m.features.cache_path)
    try:
        source = CachedSnapshotSource(cache, cs, key=m.features.keys[m.variant("qwen").theory_fingerprint])
        a, b, c_ = source.view(), source.view(), source.view()
        kw = dict(funding=funding, cache=None)
        got_a = a("ETH/USDT", universe, t, cs, outcomes=[], **kw)
        got_b = b("ETH/USDT", universe, t, cs, outcomes=[], **kw)
        got_c = c_("ETH/USDT", universe, t, cs, outcomes=[1.2, -1.0, 2.0], **kw)
    finally:
        cache.close()
    assert len(parsed) == 1  # one parse for the three variants
    assert got_a is got_b and got_c is not got_a  # the same outcomes share the completed snapshot too
    assert [(v.reused, v.misses) for v in (a, b, c_)] == [(1, 0)] * 3  # each variant counts its own reads
    for got, outcomes in ((got_a, []), (got_c, [1.2, -1.0, 2.0])):
        fresh = compute_snapshot("ETH/USDT", universe, t, cs, outcomes=outcomes, funding=funding, cache=None)
        assert got.model_dump_json() == fresh.model_dump_json()
        assert got.to_prompt_text() == fresh.to_prompt_text()
    assert got_a.theories["bayes"] != got_c.theories["bayes"]


def test_a_variant_failing_mid_way_is_recorded_and_the_others_of_its_group_go_on(first_run, tmp_path, monkeypatch):
    config, folder, _m, _ = first_run
    import evals.replay as replay_mod

    real = replay_mod.run_cycle
    times = load_variants(config).decision_times()

    def failing(t, deps):
        if deps.settings.run == "qwen" and t == times[2]:
            raise RuntimeError("planted failure")
        return real(t, deps)

    monkeypatch.setattr(replay_mod, "run_cycle", failing)
    got = run_evals(config, tmp_path / "runs", run_id="one-fails", workers=1, progress=False, audit_samples=0,
                    only=SOME)
    qwen, heur = got.variant("qwen"), got.variant("heur-small")
    assert got.status == "failed" and qwen.status == "failed" and "planted failure" in qwen.error
    assert qwen.cycles_done == 2 and (heur.status, heur.cycles_done) == ("completed", CYCLES)
    assert dump_run(tmp_path / "runs" / "one-fails", ["heur-small"]) == dump_run(folder / "runs" / "first",
                                                                                 ["heur-small"])


def test_a_cycle_failing_half_way_leaves_no_row_of_itself_and_the_resumed_run_redoes_it_whole(
        first_run, tmp_path, monkeypatch):
    # a replay's cycle is one store transaction (Store.batch): a failure after the cycle row, the broker's
    # sync and the first decision were written leaves none of them; the variant fails, its broker (which
    # moved in that cycle) is dropped, and the resumed run reloads it from the store and redoes the cycle
    config, folder, _m, _ = first_run
    times = load_variants(config).decision_times()
    failed_cycle = cycle_id_for("qwen", times[2])
    real = Store.record_decision
    decided = []

    def failing(self, rows, states, cycle_id, now_ms):
        if cycle_id == failed_cycle:
            decided.append(cycle_id)
            if len(decided) == 2:
                raise RuntimeError("planted failure")
        return real(self, rows, states, cycle_id, now_ms)

    with monkeypatch.context() as m:
        m.setattr(Store, "record_decision", failing)
        got = run_evals(config, tmp_path / "runs", run_id="half", workers=1, progress=False, audit_samples=0,
                        only=["qwen"])
    assert got.variant("qwen").status == "failed" and "planted failure" in got.variant("qwen").error
    store = tmp_path / "runs" / "half" / "variants" / "qwen" / "store.sqlite"
    with sqlite3.connect(store) as db:
        assert db.execute("SELECT COUNT(*) FROM cycles").fetchone()[0] == 2
        for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall():
            if "cycle_id" in {r[1] for r in db.execute(f"PRAGMA table_info({table})")}:
                found = db.execute(f"SELECT COUNT(*) FROM {table} WHERE cycle_id = ?", (failed_cycle,)).fetchone()
                assert found[0] == 0, table
        assert db.execute("SELECT COUNT(*) FROM orders").fetchone()[0] > 0  # the broker's memory matters here
    done = run_evals(config, tmp_path / "runs", run_id="half", workers=1, progress=False, audit_samples=0,
                     only=["qwen"])
    assert done.status == "completed" and done.variant("qwen").cycles_done == CYCLES
    # the first decision's reply was recorded before the failure: the redone decision is answered from the records
    resumed = {"decision_llm_calls": {"latency_ms", "id", "record_id", "cache_hit", "cost_usd"}}
    assert dump_run(tmp_path / "runs" / "half", volatile=resumed) == dump_run(folder / "runs" / "first", ["qwen"],
                                                                              volatile=resumed)


def test_a_rule_variant_commits_whole_cycles_in_transactions_and_a_failure_undoes_only_the_open_one(
        first_run, tmp_path, monkeypatch):
    # a rule variant (no model) writes RULE_CYCLES_PER_COMMIT cycles per store transaction: a cycle failing
    # half way takes the open transaction's earlier cycles with it, never a committed one; the variant's
    # counts are its committed cycles, and the resumed run redoes the rest as first attempts
    config, folder, _m, _ = first_run
    import evals.replay as replay_mod

    monkeypatch.setattr(replay_mod, "RULE_CYCLES_PER_COMMIT", 4)
    times = load_variants(config).decision_times()
    lost = [cycle_id_for("heur-small", t) for t in times[4:]]
    real = Store.record_decision

    def failing(self, rows, states, cycle_id, now_ms):
        if cycle_id == lost[1]:
            raise RuntimeError("planted failure")
        return real(self, rows, states, cycle_id, now_ms)

    with monkeypatch.context() as m:
        m.setattr(Store, "record_decision", failing)
        got = run_evals(config, tmp_path / "runs", run_id="batched", workers=1, progress=False, audit_samples=0,
                        only=["heur-small"])
    heur = got.variant("heur-small")
    assert heur.status == "failed" and "planted failure" in heur.error
    assert (heur.cycles_done, heur.decisions_done) == (4, 4 * SYMBOLS)  # the first transaction's cycles only
    store = tmp_path / "runs" / "batched" / "variants" / "heur-small" / "store.sqlite"
    with sqlite3.connect(store) as db:
        assert db.execute("SELECT COUNT(*) FROM cycles WHERE status = 'completed'").fetchone()[0] == 4
        for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall():
            if "cycle_id" in {r[1] for r in db.execute(f"PRAGMA table_info({table})")}:
                found = db.execute(f"SELECT COUNT(*) FROM {table} WHERE cycle_id IN (?, ?)", lost).fetchone()
                assert found[0] == 0, table  # cycle 5 had succeeded, but its transaction was still open
    done = run_evals(config, tmp_path / "runs", run_id="batched", workers=1, progress=False, audit_samples=0,
                     only=["heur-small"])
    assert done.status == "completed" and done.variant("heur-small").cycles_done == CYCLES
    assert dump_run(tmp_path / "runs" / "batched") == dump_run(folder / "runs" / "first", ["heur-small"])


def test_a_rule_variants_transactions_hold_several_cycles_and_a_models_one(first_run, tmp_path, monkeypatch):
    config, _folder, _m, _ = first_run
    import evals.replay as replay_mod

    monkeypatch.setattr(replay_mod, "RULE_CYCLES_PER_COMMIT", 4)
    commits: dict[str, int] = {}
    real = replay_mod._VariantReplay._commit

    def counted(self):
        if self.batch is not None:
            commits[self.spec.name] = commits.get(self.spec.name, 0) + 1
        return real(self)

    monkeypatch.setattr(replay_mod._VariantReplay, "_commit", counted)
    got = run_evals(config, tmp_path / "runs", run_id="commits", workers=1, progress=False, audit_samples=0,
                    only=SOME)
    assert got.status == "completed"
    assert commits == {"qwen": CYCLES, "heur-small": 2}  # 6 cycles: 4 + 2


def test_the_variants_are_split_over_the_workers_in_balanced_groups_of_a_theory_set_each_where_possible(first_run):
    from evals.replay import lockstep_groups
    from evals.variants import VariantSpec

    config, folder, m, _ = first_run
    c = load_variants(config)
    plan = Plan(str(folder / "runs" / "first"), c, m.universe, tuple(c.decision_times()))
    small = list(c.variants)
    full = [VariantSpec(name=f"full{i}", provider="heuristic") for i in range(3)]  # the default set
    groups = lockstep_groups(plan, [full[0], *small, full[1], full[2]], 2)
    assert sorted(len(g) for g in groups) == [2, 3]
    # sets are ordered by fingerprint, so which set fills the larger group depends on the hashes;
    # with equal sizes each set has a group whatever its hash
    groups = lockstep_groups(plan, [full[0], *small, full[1]], 2)
    assert {frozenset(s.name for s in g) for g in groups} == {frozenset(s.name for s in small),
                                                               frozenset(s.name for s in full[:2])}
    assert [len(g) for g in lockstep_groups(plan, small, 4)] == [1, 1]  # a group of one each: the plain walk
    assert [len(g) for g in lockstep_groups(plan, small + full, 1)] == [5]


def test_a_group_cuts_each_symbol_once_per_decision_time_and_keeps_no_error():
    from evals.replay import _CutsAtTime
    from theories.candles import CandleDataError

    data = FileMarketData()
    asked = []

    class Counting:  # a source without funding rates, counting its reads
        def symbols(self):
            return data.symbols()

        def candles(self, symbol, at_ms):
            asked.append((symbol, at_ms))
            if symbol == "BAD/USDT":
                raise CandleDataError("bad.csv", None, "unreadable")
            return data.candles(symbol, at_ms)

    cuts = _CutsAtTime(Counting())
    t = 1762992000000
    first = cuts.candles("ETH/USDT", t)
    assert cuts.candles("ETH/USDT", t) is first and asked == [("ETH/USDT", t)]  # the second variant's read
    assert first.last_close_time == data.candles("ETH/USDT", t).last_close_time
    later = cuts.candles("ETH/USDT", t + 3_600_000)
    assert later.last_close_time == t + 3_600_000 and len(asked) == 2  # a new time: a new cut, the old one let go
    for _ in range(2):
        with pytest.raises(CandleDataError):
            cuts.candles("BAD/USDT", t)
    assert asked.count(("BAD/USDT", t)) == 2 and cuts.funding_rates() == {}


def _process_tree(root: int) -> set[int]:
    """The pids below `root` now (children, grandchildren...), read from /proc."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    below, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - below
        below |= frontier
    return below


def _running(pid: int) -> bool:
    """The process exists and is not a zombie (an exited child nobody has reaped yet)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads the process tree from /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_killing_a_run_stops_its_worker_processes_and_the_resumed_run_ends_as_an_uninterrupted_one(
        first_run, tmp_path, sig):
    """The worker processes stop within seconds of the run's process dying, however it died (they used to go on
    replaying into the run's stores for minutes); a SIGTERM ends the run as interrupted; resuming completes it."""
    config, folder, _m, _ = first_run
    # a slow model keeps the workers busy in their replay when the kill comes
    with _run_on_a_slow_model(first_run, tmp_path, ["qwen", "heur-small"], workers=2, replies=1000,
                              stderr=subprocess.PIPE) as (proc, slow, runs):
        store = runs / "killed" / "variants" / "qwen" / "store.sqlite"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None and len(slow.requests) < 2:
            time.sleep(0.05)
        assert proc.poll() is None, "the run finished before it could be killed"
        workers = _process_tree(proc.pid)
        assert len(workers) >= 3  # the forkserver and two workers
        os.kill(proc.pid, sig)
        code = proc.wait(timeout=30)
        gone_by = time.monotonic() + 5
        while time.monotonic() < gone_by and any(_running(pid) for pid in workers):
            time.sleep(0.05)
        left = [pid for pid in workers if _running(pid)]
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        assert not left, f"worker processes still running after the run's process died: {left}"
        asked = len(slow.requests)
        time.sleep(1.0)
        assert len(slow.requests) == asked  # nothing replays on behind the dead run
    manifest = json.loads((runs / "killed" / "manifest.json").read_text())
    if sig == signal.SIGTERM:
        assert code == 128 + signal.SIGTERM, proc.stderr.read().decode()[-2000:]
        assert manifest["status"] == "interrupted"
        variants = {v["name"]: v for v in manifest["variants"]}
        assert variants["qwen"]["status"] == "interrupted"  # it was replaying: not left "running"
        assert "running" not in {v["status"] for v in variants.values()}  # the others: completed or never started
        for name, v in ((n, variants[n]) for n in ("qwen", "heur-small")):  # counted when committed: never more
            with sqlite3.connect(runs / "killed" / "variants" / name / "store.sqlite") as db:
                stored = db.execute("SELECT COUNT(*) FROM cycles WHERE status='completed'").fetchone()[0]
            assert v["cycles_done"] <= stored, name  # than the store holds
    else:
        assert manifest["status"] == "running"  # a SIGKILL leaves no chance to say more
    with sqlite3.connect(store) as db:
        assert db.execute("SELECT COUNT(*) FROM cycles WHERE status='completed'").fetchone()[0] < CYCLES
    done = run_evals(config, runs, run_id="killed", workers=1, progress=False, audit_samples=0, only=SOME,
                     features_cache=_first_cache(first_run))
    assert done.status == "completed"
    resumed = {"decision_llm_calls": {"latency_ms", "id", "record_id", "cache_hit", "cost_usd"}}
    assert dump_run(runs / "killed", volatile=resumed) == dump_run(folder / "runs" / "first", SOME, volatile=resumed)
