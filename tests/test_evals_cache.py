"""The shared features cache (evals.features): what its key covers, how it treats a damaged, foreign or busy file,
two processes filling it at once, and `signal-agent evals cache`."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
import sqlite3
import sys
import threading
import time
import zlib
from pathlib import Path

import pytest

import evals.features as features_mod
from agent.cli import main
from agent.cycle import FileMarketData, compute_snapshot
from agent.cycle_settings import CycleSettings
from evals.features import (
    CODE_PATHS,
    ROOT,
    CachedSnapshotSource,
    FeatureCache,
    FeatureCacheError,
    cache_key,
    code_fingerprint,
    compute_features,
    data_fingerprint,
    decidable,
    resolve_features_cache,
    shared_snapshot,
    universe_at,
)
from evals.lookahead import GuardedMarketData
from evals.replay import EvalsError, run_evals
from evals.variants import resolve_theories
from tests.test_evals_replay import CONFIG, SMALL_SET, write_config
from theories.base import FitCache
from theories.registry import THEORIES

SYMBOLS = ("BTC/USDT", "ETH/USDT")
T0 = 1762776000000  # 2025-11-10T12:00Z, inside the bundled sample
TIMES = [T0 + i * 4 * 3_600_000 for i in range(4)]


def small_settings(**kw) -> CycleSettings:
    return CycleSettings(run="t", symbols=SYMBOLS, theories=resolve_theories(json.loads(SMALL_SET)), **kw)


def fresh(symbol: str, t: int, settings: CycleSettings, whole: bool = False) -> str:
    """A fresh computation's JSON: the shared part, or (`whole`) the cycle's whole snapshot with no outcomes."""
    data = GuardedMarketData(FileMarketData())
    data.now_ms = t
    universe = universe_at(data, SYMBOLS, t)
    if whole:
        return compute_snapshot(symbol, universe, t, settings, outcomes=(), funding=data.funding_rates(),
                                cache=None).model_dump_json()
    return shared_snapshot(symbol, universe, t, settings, funding=data.funding_rates(),
                           cache=FitCache()).model_dump_json()


class Timed:
    """The phase-1 data view: the guard cut at each decision time (as evals.replay does)."""

    def __init__(self) -> None:
        self.data = GuardedMarketData(FileMarketData())

    def candles(self, symbol, at_ms):
        self.data.now_ms = at_ms
        return self.data.candles(symbol, at_ms)

    def funding_rates(self):
        return self.data.funding_rates()


def fill(path: Path, key: str) -> int:
    """Phase 1 over the test's times (in this process or a worker)."""
    return compute_features(path, Timed(), SYMBOLS, SYMBOLS, TIMES, small_settings(), key=key)[0]


# --- the key ----------------------------------------------------------------------------------------


def test_the_key_changes_with_every_input_of_a_snapshot():
    base = small_settings()
    key = cache_key(base, "code", "data")
    assert key == cache_key(small_settings(), "code", "data")  # the same inputs: the same entry
    params = dict(base.theories)
    params["montecarlo"] = {**params["montecarlo"], "n_paths": 5000}
    others = [
        cache_key(base, "other code", "data"),
        cache_key(base, "code", "other data"),
        cache_key(small_settings(window=300), "code", "data"),
        cache_key(small_settings(leader="ETH/USDT"), "code", "data"),
        cache_key(base.model_copy(update={"theories": params}), "code", "data"),
        cache_key(base.model_copy(update={"theories": dict(reversed(list(base.theories.items())))}), "code", "data"),
    ]
    assert key not in others and len(set(others)) == len(others)


def test_the_data_fingerprint_names_the_universe_in_order_and_every_file_hash():
    fp = data_fingerprint(["A", "B"], {"A": "1", "B": "2"}, {"A.csv": "3"})
    assert fp == data_fingerprint(["A", "B"], {"B": "2", "A": "1"}, {"A.csv": "3"})
    assert fp != data_fingerprint(["B", "A"], {"A": "1", "B": "2"}, {"A.csv": "3"})
    assert fp != data_fingerprint(["A", "B"], {"A": "1", "B": "9"}, {"A.csv": "3"})
    assert fp != data_fingerprint(["A", "B"], {"A": "1", "B": "2"}, {"A.csv": "4"})
    assert fp != data_fingerprint(["A", "B"], {"A": "1", "B": "2"}, {})


def test_the_code_fingerprint_changes_when_any_snapshot_source_file_changes(tmp_path, monkeypatch):
    copy = tmp_path / "checkout"
    for rel in CODE_PATHS:
        src, dst = ROOT / rel, copy / rel
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dst)
    monkeypatch.setattr(features_mod, "ROOT", copy)
    assert features_mod.code_fingerprint.__wrapped__() == code_fingerprint()  # the same source, the same print
    target = copy / "theories" / "strategies" / "momentum.py"
    target.write_text(target.read_text() + "\n# an edit that changes no number is a miss as well\n")
    assert features_mod.code_fingerprint.__wrapped__() != code_fingerprint()


def test_the_fingerprinted_code_covers_everything_a_snapshot_computation_runs():
    """Trace a shared snapshot with every theory on, from the files through the guard to the JSON round trip and
    the prompt text stored with it: any project file it runs outside CODE_PATHS would let an edit of that file
    give a stale hit."""
    settings = CycleSettings(run="t", symbols=SYMBOLS, theories=resolve_theories(list(THEORIES)))
    ran: set[str] = set()

    def profile(frame, event, arg):
        name = frame.f_code.co_filename
        # project files only: a virtualenv inside the checkout (CI's .venv) holds libraries, not our code
        if name.startswith(str(ROOT)) and "/tests/" not in name and not name.startswith(sys.prefix) \
                and "site-packages" not in name:
            ran.add(Path(name).relative_to(ROOT).as_posix())

    data = GuardedMarketData(FileMarketData())  # a new reader: the candle and funding files are loaded inside
    t = TIMES[-1]
    sys.setprofile(profile)
    try:
        data.now_ms = t
        universe = universe_at(data, SYMBOLS, t)
        assert decidable(universe, "BTC/USDT", t, settings.data, settings.window)
        snap = shared_snapshot("BTC/USDT", universe, t, settings, funding=data.funding_rates(), cache=FitCache())
        text, prompt = snap.model_dump_json(), snap.to_prompt_text()
        parsed = features_mod.FeatureSnapshot.model_validate_json(text)
        parsed.to_prompt_text()
    finally:
        sys.setprofile(None)
    # what FeatureSnapshot.from_cache relies on, with every theory on: a parsed dump dumps and renders the same text
    assert parsed.model_dump_json() == text and parsed.to_prompt_text() == prompt
    assert_fast_parse_is_the_plain_one(text)
    covered = [p for p in CODE_PATHS]
    outside = sorted(f for f in ran if not any(f == c or f.startswith(c + "/") for c in covered))
    assert not outside, f"add these to evals.features.CODE_PATHS: {outside}"
    assert {"theories/montecarlo.py", "agent/market/loaders.py", "agent/snapshot.py"} <= ran  # the trace works


# --- storage ----------------------------------------------------------------------------------------


def test_snapshots_round_trip_exactly_and_the_entry_dictionary_makes_them_small(tmp_path):
    settings = small_settings()
    key = cache_key(settings, code_fingerprint(), "d")
    assert fill(tmp_path / "c.sqlite", key) == len(TIMES) * len(SYMBOLS)
    cache = FeatureCache(tmp_path / "c.sqlite")
    try:
        assert cache.count(key) == cache.count() == len(TIMES) * len(SYMBOLS)
        assert cache.times(key, "ETH/USDT") == set(TIMES)
        got = cache.get_range(key, TIMES[0], TIMES[-1] + 1)
        for (symbol, t), text in got.items():
            assert text == fresh(symbol, t, settings)  # exactly a fresh computation's JSON
        blobs = [r[0] for r in cache.db.execute("SELECT blob FROM snapshots")]
        stored = cache.get_range(key, TIMES[0], TIMES[-1] + 1, prompts=True)  # the same text, plainly compressed:
        plain = sum(len(zlib.compress("\0".join(texts).encode(), 6)) for texts in stored.values())
        assert sum(map(len, blobs)) < 0.8 * plain and cache.db.execute("PRAGMA page_size").fetchone()[0] == 16384
        # idempotent: storing again keeps what is there
        cache.put_many(key, [("ETH/USDT", TIMES[0], "not stored")])
        assert cache.get(key, "ETH/USDT", TIMES[0]) == got[("ETH/USDT", TIMES[0])]
        assert cache.count(key, ["ETH/USDT"], TIMES[:2]) == 2 and cache.count("no such key") == 0
    finally:
        cache.close()


def stored_with_prompts(tmp_path) -> dict:
    """A filled cache's every (JSON, prompt text) pair, as a replay reads them."""
    key = cache_key(small_settings(), code_fingerprint(), "d")
    fill(tmp_path / "c.sqlite", key)
    cache = FeatureCache(tmp_path / "c.sqlite")
    try:
        return cache.get_range(key, TIMES[0], TIMES[-1] + 1, prompts=True)
    finally:
        cache.close()


def test_the_prompt_text_stored_with_a_snapshot_is_byte_identical_to_a_fresh_rendering(tmp_path):
    got = stored_with_prompts(tmp_path)
    assert len(got) == len(TIMES) * len(SYMBOLS)
    for text, prompt in got.values():
        plain = features_mod.FeatureSnapshot.model_validate_json(text)  # no memo: rendered now
        assert prompt == plain.to_prompt_text()
        read = features_mod.FeatureSnapshot.from_cache(text, prompt)
        assert read == plain and read.model_dump_json() == text == plain.model_dump_json()
        assert read.to_prompt_text() is prompt and all(read.theory_line(n) == plain.theory_line(n)
                                                        for n in plain.theories)
        # a prompt text whose lines do not fit the snapshot (a foreign writer) is dropped: rendered, never guessed
        for wrong in (prompt + "\nextra: line", prompt.replace("\n", " | ", 1), "x"):
            assert features_mod.FeatureSnapshot.from_cache(text, wrong).to_prompt_text() == prompt
        assert features_mod.FeatureSnapshot.from_cache(text).to_prompt_text() == prompt


def assert_fast_parse_is_the_plain_one(text: str) -> None:
    """`from_cache`'s one-call parse of `text` (primed with its own theory names) is the plain parse's snapshot."""
    import agent.snapshot as snapshot_mod

    plain = features_mod.FeatureSnapshot.model_validate_json(text)
    snapshot_mod._last_names[:] = [tuple(plain.theories)]
    fast = snapshot_mod._fast_parse(text)
    assert fast is not None and fast == plain and fast.model_fields_set == plain.model_fields_set
    assert list(fast.theories) == list(plain.theories) and fast.model_dump_json() == text
    assert all(type(fast.theories[n]) is type(r) for n, r in plain.theories.items())
    assert type(fast.quality) is type(plain.quality) and type(fast.orderflow) is type(plain.orderflow)


def test_the_one_call_parse_equals_the_plain_parse_and_falls_back_on_anything_else(tmp_path):
    import agent.snapshot as snapshot_mod

    got = stored_with_prompts(tmp_path)
    for text, _prompt in got.values():
        assert_fast_parse_is_the_plain_one(text)
    text = next(iter(got.values()))[0]
    plain = features_mod.FeatureSnapshot.model_validate_json(text)
    names = list(plain.theories)
    assert len(names) >= 2
    # the theories in another order: the one-call parse (typed in the known order) refuses, from_cache parses plainly
    snapshot_mod._last_names[:] = [tuple(names)]
    swapped = plain.model_construct(**{**dict(plain), "theories": {n: plain.theories[n] for n in reversed(names)}})
    swapped_text = swapped.model_dump_json()
    assert snapshot_mod._fast_parse(swapped_text) is None
    read = features_mod.FeatureSnapshot.from_cache(swapped_text)
    assert list(read.theories) == names[::-1] and read.model_dump_json() == swapped_text
    # a theory the known names do not hold: refused too
    snapshot_mod._last_names[:] = [tuple(names[1:])]
    assert snapshot_mod._fast_parse(text) is None
    assert features_mod.FeatureSnapshot.from_cache(text) == plain
    # after a plain parse the names are that snapshot's: the next parse takes the one-call path
    assert snapshot_mod._last_names == [tuple(names)] and snapshot_mod._fast_parse(text) == plain


def test_a_damaged_snapshot_is_a_miss_computed_again_never_a_wrong_hit(tmp_path, caplog):
    settings = small_settings()
    key = cache_key(settings, code_fingerprint(), "d")
    fill(tmp_path / "c.sqlite", key)
    with sqlite3.connect(tmp_path / "c.sqlite") as db:  # flip bytes in the middle of one stored snapshot
        (blob,) = db.execute("SELECT blob FROM snapshots WHERE symbol='ETH/USDT' AND time_ms=?", (TIMES[1],)).fetchone()
        bad = blob[:40] + bytes(b ^ 0x55 for b in blob[40:60]) + blob[60:]
        db.execute("UPDATE snapshots SET blob=? WHERE symbol='ETH/USDT' AND time_ms=?", (bad, TIMES[1]))
    data = GuardedMarketData(FileMarketData())
    cache = FeatureCache(tmp_path / "c.sqlite")
    try:
        source = CachedSnapshotSource(cache, settings, key=key)
        out = {}
        for t in TIMES:
            data.now_ms = t
            universe = universe_at(data, SYMBOLS, t)
            snap = source("ETH/USDT", universe, t, settings, outcomes=(), funding=data.funding_rates(), cache=None)
            out[t] = snap.model_dump_json()
    finally:
        cache.close()
    assert (source.reused, source.misses) == (len(TIMES) - 1, 1)
    assert "damaged" in caplog.text
    assert all(out[t] == fresh("ETH/USDT", t, settings, whole=True) for t in TIMES)


def test_a_cache_failing_mid_replay_turns_into_misses_not_a_crash(caplog):
    class Broken:
        path = Path("/nowhere/features.sqlite")

        def get_range(self, *a, **k):
            raise sqlite3.DatabaseError("database disk image is malformed")

    settings = small_settings()
    data = GuardedMarketData(FileMarketData())
    source = CachedSnapshotSource(Broken(), settings, key="k")  # type: ignore[arg-type]
    t = TIMES[0]
    data.now_ms = t
    universe = universe_at(data, SYMBOLS, t)
    snap = source("BTC/USDT", universe, t, settings, outcomes=(), funding=data.funding_rates(), cache=None)
    assert snap.model_dump_json() == fresh("BTC/USDT", t, settings, whole=True) and source.misses == 1
    assert "malformed" in caplog.text and source.cache is None


def test_a_file_that_is_not_a_features_cache_is_refused_by_name(tmp_path):
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database, it is somebody's notes\n" * 200)
    with pytest.raises(FeatureCacheError, match=r"junk\.sqlite: not a features cache"):
        FeatureCache(junk)
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE users (name TEXT)")
    with pytest.raises(FeatureCacheError, match=r"other\.sqlite: not a features cache \(it holds the tables"):
        FeatureCache(other)
    with sqlite3.connect(other) as db:  # untouched
        assert db.execute("SELECT name FROM sqlite_master").fetchall() == [("users",)]


def test_a_run_pointed_at_a_foreign_file_stops_before_any_work(tmp_path):
    config = write_config(tmp_path / "cfg", CONFIG)
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"\x00garbage" * 1000)
    with pytest.raises(EvalsError, match=r"junk\.sqlite: not a features cache"):
        run_evals(config, tmp_path / "runs", run_id="x", workers=1, progress=False, features_cache=junk)
    assert not (tmp_path / "runs" / "x" / "variants").exists()


def test_an_older_features_cache_is_emptied_and_rebuilt_with_a_warning(tmp_path, caplog):
    legacy = tmp_path / "features.sqlite"  # the per-run cache of earlier versions
    with sqlite3.connect(legacy) as db:
        db.execute("CREATE TABLE features (symbol TEXT, time_ms INTEGER, fingerprint TEXT, window INTEGER, "
                   "snapshot BLOB, PRIMARY KEY (fingerprint, window, time_ms, symbol)) WITHOUT ROWID")
        db.execute("INSERT INTO features VALUES ('BTC/USDT', 1, 'f', 200, x'00')")
    with caplog.at_level(logging.WARNING):
        FeatureCache(legacy).close()
    assert "another format" in caplog.text
    newer = tmp_path / "newer.sqlite"
    FeatureCache(newer).close()
    with sqlite3.connect(newer) as db:
        db.execute(f"PRAGMA user_version={features_mod.FORMAT_VERSION + 1}")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        cache = FeatureCache(newer)
    assert "another format" in caplog.text and cache.count() == 0 and cache.entries() == []
    cache.close()


# --- concurrency ------------------------------------------------------------------------------------


def test_two_processes_fill_the_same_cache_at_once(tmp_path):
    path = tmp_path / "shared.sqlite"
    key = cache_key(small_settings(), code_fingerprint(), "d")
    ctx = multiprocessing.get_context("spawn")
    env = os.environ.get("PYTHONPATH")
    try:
        os.environ["PYTHONPATH"] = str(ROOT) + (os.pathsep + env if env else "")
        with ctx.Pool(2) as pool:
            computed = pool.starmap(fill, [(path, key), (path, key)])
    finally:
        if env is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = env
    pairs = len(TIMES) * len(SYMBOLS)
    assert pairs <= sum(computed) <= 2 * pairs  # whoever came first stored it; the other kept its rows out
    cache = FeatureCache(path)
    try:
        assert cache.count(key) == pairs and len(cache.entries()) == 1
        assert cache.get(key, "BTC/USDT", TIMES[2]) == fresh("BTC/USDT", TIMES[2], small_settings())
    finally:
        cache.close()


def test_a_writer_waits_for_another_holding_the_lock_and_retries(tmp_path):
    path = tmp_path / "c.sqlite"
    cache = FeatureCache(path, timeout_s=0.02)  # a tiny busy timeout: the retries must carry it
    cache.register("k", {}, "code")
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.3, lambda: holder.execute("COMMIT"))
    release.start()
    try:
        started = time.monotonic()
        cache.put_many("k", [("BTC/USDT", 1, '{"a": 1}')])
        assert time.monotonic() - started >= 0.25  # it waited for the other writer, then stored
        assert cache.get("k", "BTC/USDT", 1) == '{"a": 1}'
    finally:
        release.join()
        holder.close()
        cache.close()


# --- settings and the command -----------------------------------------------------------------------


def test_the_setting_names_the_file_or_turns_the_shared_cache_off(tmp_path):
    assert resolve_features_cache(None, tmp_path) == tmp_path / "evals" / "features.sqlite"
    assert resolve_features_cache("off", tmp_path) is None and resolve_features_cache("OFF", tmp_path) is None
    assert resolve_features_cache(str(tmp_path / "x.sqlite"), "/elsewhere") == tmp_path / "x.sqlite"


def test_evals_cache_shows_the_entries_and_prunes_what_this_code_can_never_hit(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("SIGNAL_AGENT_CONFIG", raising=False)
    path = tmp_path / "c.sqlite"
    assert main(["evals", "cache", "--features-cache", str(path)]) == 0
    assert "No features cache" in capsys.readouterr().out
    current = cache_key(small_settings(), code_fingerprint(), "d")
    fill(path, current)
    cache = FeatureCache(path)
    cache.register("old-entry", {"theories": ["momentum"]}, "old code")
    cache.put_many("old-entry", [("BTC/USDT", TIMES[0], '{"x": 1}')])
    cache.close()
    assert main(["evals", "cache", "--features-cache", str(path)]) == 0
    out = capsys.readouterr().out
    assert "2 entries" in out and f"{len(TIMES) * len(SYMBOLS) + 1} snapshots" in out
    assert current[:12] in out and "old-entry"[:12] in out and "--prune" in out
    assert main(["evals", "cache", "--features-cache", str(path), "--prune"]) == 0
    out = capsys.readouterr().out
    assert "Pruned 1 entries (1 snapshots)" in out and "1 entries" in out
    assert main(["evals", "cache", "--features-cache", str(path), "--prune", "--unused-days", "0"]) == 0
    assert "0 entries, 0 snapshots" in capsys.readouterr().out
    assert main(["evals", "cache", "--unused-days", "3"]) == 2  # only with --prune


def test_evals_run_takes_the_cache_from_its_flag_else_the_settings(tmp_path):
    import argparse

    from agent.commands.evals import features_cache_setting
    from agent.config import Settings

    default = Settings(data_dir=tmp_path)
    off = Settings(data_dir=tmp_path, evals={"features_cache": "off"})
    unset = argparse.Namespace(features_cache=None)
    assert features_cache_setting(unset, default) == str(tmp_path / "evals" / "features.sqlite")
    assert features_cache_setting(unset, off) == "off"
    assert features_cache_setting(argparse.Namespace(features_cache="off"), default) == "off"
    assert features_cache_setting(argparse.Namespace(features_cache="/x/c.sqlite"), off) == "/x/c.sqlite"
