"""The shared theory-results cache: each snapshot computed once per machine, read by every variant of every run.

A snapshot's theory outputs depend on the candles closed by the decision time, the theory set
with its parameters, the window and the leader; not on the variant, with one exception: a
theory that reads the variant's own closed-trade outcomes (`TheoryContext.outcomes`, today only
`bayes`). So the cache holds, per (symbol, decision time, cache key), the snapshot of the set
WITHOUT the outcome-dependent theories; each variant's cycle adds those from its own trades
(`CachedSnapshotSource`), in the set's order, so the result equals what `build_snapshot` would
have produced for that variant (a test checks the equality). Every other input of a theory
(`TheoryContext`: candles, history, universe, leader, funding, the fit cache) is the same for
every variant of a run. Anonymisation is applied later, by the synthesiser, so one cached
snapshot serves named and anonymised variants alike.

Across runs. The cache lives in one file per machine (`[evals] features_cache`, default
`<data_dir>/evals/features.sqlite`), so a second run over the same history, with other prompts
or models, reads its snapshots instead of computing them. A cached snapshot is reused only when
it is provably what a fresh computation would give, so its key (`cache_key`) names every input:

- the theory set: names in order, full parameters, window and leader (`set_fingerprint`);
- the code that computes it (`code_fingerprint`): the sha256 of the source of every module a
  snapshot's computation and its prompt text run (`CODE_PATHS`: theories/, orderflow/, the candle
  and funding loaders, agent/snapshot.py, the cycle's market-data reader, this module and the
  lookahead guard; a test checks that list against a trace of a real computation) and the versions of
  Python and of the numerical libraries. Any edit of these files is a miss, even one that
  changes no number: recomputing is cheap next to a wrong hit;
- the data (`data_fingerprint`): the universe in order and the sha256 of every candle file of
  the universe and every funding file (the hashes the run's manifest records anyway). Appending
  candles to a file changes its hash and so misses the whole file's snapshots, including those
  before the new candles: a per-prefix hash would keep them, but would cost a hash per decision.

The fit cache (`FitCache`) adds no input: a scheduled fit is keyed by its fit time and trained
on candles closed by it, so it is the same whichever decision, in whichever run, asks first (a
test replays a shifted period on a warm cache and compares it with a cold one). Data from any
source other than plain candle files (a test's factory), or read without the lookahead guard,
cannot be named this way: such a run keeps its own cache in its folder, as does a run with the
cache turned off (`features_cache = "off"`, `--features-cache off`).

Storage: SQLite (stdlib `sqlite3`) in WAL mode, so runs and their worker processes fill and read
it at once; writes take the lock up front (BEGIN IMMEDIATE) and are retried while another
writer holds it; inserts are idempotent (a snapshot already there is kept: two writers computed
the same thing). An `entries` row per key describes it (theories, universe, data files, code
fingerprint, last use) for `signal-agent evals cache`, which shows the file and prunes entries
no current run can hit. A snapshot is its JSON (`FeatureSnapshot.model_dump_json`, a lossless
round trip), a NUL and its prompt text (`to_prompt_text`), compressed together with zlib level 3
and a preset dictionary: the entry's first snapshot, stored once. The prompt text is rendered
once, here, instead of once per replay worker and run (~0.2 ms a snapshot); a reader's parsed
snapshot takes the JSON and the text as its memos (`FeatureSnapshot.from_cache`), so it neither
renders nor dumps it again. Snapshots of a set share their keys and labels, and the dictionary
about halves the size (2.3 KB a snapshot instead of 4.3 KB with plain zlib at level 6, measured on
the 10-symbol data with every theory on). Level 3 compresses in two thirds of level 6's time
(~0.12 ms a snapshot less) for blobs ~7% larger; SQLite pages of 16 KB (`PAGE_SIZE`) hold six or
seven of them, about 2.7 KB a snapshot on disk (a 4 KB page would hold one): a 1-year hourly
10-symbol set takes about 240 MB. Copying a stream primed with the dictionary costs what priming a
fresh one does (the copy is the whole deflate state). Binary floats would not pay: the JSON's
digits already compress to about their 8 bytes, and the snapshot's JSON is what the readers parse.
zlib's checksum catches a damaged blob, which is then treated as a miss, never used.

A file that is not a features cache (not SQLite, or another program's tables) is refused before
any work with an error naming it; a features cache of another format version (or the per-run
cache of earlier versions) is emptied with a warning. Damage met during a run is a warning and a
miss, never a crash and never a wrong hit. Reads are batched: a cycle's miss loads the next
`prefetch_ms` of decision times for every symbol at once, so a replay costs one query per block
of cycles, not one per decision.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import platform
import sqlite3
import sys
import time
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from agent.cycle_settings import CycleSettings, DataPolicy
from agent.snapshot import FeatureSnapshot, build_snapshot
from evals.variants import sha256_text, theory_fingerprint
from theories.base import FitCache, TheoryContext, TheoryError, TheoryResult
from theories.candles import CandleDataError, Candles, iso
from theories.funding import FundingRates
from theories.registry import THEORIES

log = logging.getLogger(__name__)

# Theories whose output depends on the variant's own trading (TheoryContext.outcomes): never cached.
OUTCOME_THEORIES = frozenset({"bayes"})

ROOT = Path(__file__).resolve().parents[1]
# The source a shared snapshot's computation runs, relative to the checkout: folders are taken whole
# (every .py below them). tests/test_evals_cache.py traces a computation with every theory on and
# fails when it runs a project file outside this list.
CODE_PATHS = ("theories", "orderflow", "agent/market", "agent/snapshot.py", "agent/cycle.py",
              "agent/webhook/theory.py", "evals/features.py", "evals/lookahead.py")
# Libraries whose version can change a number of a snapshot (or its JSON).
LIBRARIES = ("numpy", "scipy", "pandas", "pyarrow", "statsmodels", "scikit-learn", "TA-Lib", "pydantic",
             "pydantic-core", "orjson")
# The data fingerprint of a source that is not plain candle files: only a run's own cache may use it.
UNIDENTIFIED = "unidentified"

FORMAT_VERSION = 3  # PRAGMA user_version of a features cache; another value: emptied and rebuilt
APPLICATION_ID = 0x53414643  # PRAGMA application_id: "SAFC", a signal-agent features cache
LEVEL = 3
# SQLite page size of a new cache file (an existing file keeps its own: WAL mode cannot change it). A stored
# snapshot with its prompt text is ~2.3 KB: one to a 4 KB page (the default), six or seven to a 16 KB one.
PAGE_SIZE = 16384

_SCHEMA = """
CREATE TABLE entries (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    code TEXT NOT NULL,
    meta TEXT NOT NULL,
    zdict BLOB,
    created_ms INTEGER NOT NULL,
    used_ms INTEGER NOT NULL
);
CREATE TABLE snapshots (
    entry INTEGER NOT NULL REFERENCES entries(id) ON DELETE CASCADE,
    time_ms INTEGER NOT NULL,
    symbol TEXT NOT NULL,
    blob BLOB NOT NULL,
    PRIMARY KEY (entry, time_ms, symbol)
);
"""


class FeatureCacheError(RuntimeError):
    """A features cache file that cannot be used (the message names it and says what to do)."""


def shared_theories(theories: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a theory set that is the same for every variant (outcome-dependent theories removed)."""
    return {n: p for n, p in theories.items() if n not in OUTCOME_THEORIES}


def set_fingerprint(settings: CycleSettings) -> str:
    return theory_fingerprint({n: p or {} for n, p in settings.theories.items()}, settings.window, settings.leader)


def _code_files() -> list[Path]:
    files: list[Path] = []
    for rel in CODE_PATHS:
        path = ROOT / rel
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return files


@functools.cache
def code_fingerprint() -> str:
    """sha256 of the snapshot code (CODE_PATHS) and of the versions of Python and the libraries; once per process."""
    from importlib.metadata import PackageNotFoundError, version

    h = hashlib.sha256()
    for path in _code_files():
        h.update(path.relative_to(ROOT).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    versions = {}
    for lib in LIBRARIES:
        try:
            versions[lib] = version(lib)
        except PackageNotFoundError:
            versions[lib] = None
    h.update(json.dumps({"python": sys.version, "machine": platform.machine(), "libraries": versions},
                        sort_keys=True).encode())
    return h.hexdigest()[:24]


def data_fingerprint(universe: Sequence[str], candles: Mapping[str, str], funding: Mapping[str, str]) -> str:
    """The identity of the data: the universe in order, each symbol's candle-file sha256, each funding file's."""
    return sha256_text(json.dumps({"universe": list(universe), "candles": [candles.get(s) for s in universe],
                                   "funding": sorted(funding.items())}))[:24]


def cache_key(settings: CycleSettings, code: str, data: str) -> str:
    """A cache entry's key: the theory set's fingerprint, the code's and the data's, and the storage format."""
    return sha256_text(json.dumps([FORMAT_VERSION, set_fingerprint(settings), code, data]))[:32]


def resolve_features_cache(setting: str | Path | None, data_dir: str | Path) -> Path | None:
    """The shared cache file a setting names: unset -> <data_dir>/evals/features.sqlite; "off" -> None (per run)."""
    if setting is None or str(setting).strip() == "":
        return Path(data_dir).expanduser() / "evals" / "features.sqlite"
    if str(setting).strip().lower() == "off":
        return None
    return Path(setting).expanduser()


T = TypeVar("T")


def _retry(action: Callable[[], T], attempts: int = 8) -> T:
    """Run an SQLite action, again after a pause while another connection holds the lock (SQLITE_BUSY)."""
    for attempt in range(attempts):
        try:
            return action()
        except sqlite3.OperationalError as exc:
            text = str(exc).lower()
            if attempt == attempts - 1 or ("locked" not in text and "busy" not in text):
                raise
            time.sleep(0.05 * 2 ** attempt)
    raise AssertionError("unreachable")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class FeatureCache:
    """A features cache file: (cache key, decision time, symbol) -> the shared snapshot's JSON.

    Opening checks the file (FeatureCacheError names a file that is not a features cache). An
    entry is registered (`register`) before its first snapshot is stored.
    """

    def __init__(self, path: str | Path, timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE takes the write lock up front,
        # so a writer waits for another instead of failing when it upgrades a read to a write)
        self.db = sqlite3.connect(self.path, timeout=timeout_s, isolation_level=None)
        self._ids: dict[str, int] = {}
        self._zdicts: dict[int, bytes] = {}
        try:
            self._open()
        except sqlite3.DatabaseError as exc:
            self.db.close()
            if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc).lower():
                raise FeatureCacheError(f"{self.path}: the features cache stayed locked by another process "
                                        f"for {timeout_s:g} s") from None
            raise FeatureCacheError(f"{self.path}: not a features cache ({exc}); delete it, or set "
                                    "[evals] features_cache / --features-cache to another file") from None
        except FeatureCacheError:
            self.db.close()
            raise

    def _open(self) -> None:
        self.db.execute(f"PRAGMA page_size={PAGE_SIZE}")  # takes effect only when the file is created (next line)
        if _retry(lambda: self.db.execute("PRAGMA journal_mode=WAL").fetchone()[0]).lower() != "wal":
            raise FeatureCacheError(f"{self.path}: cannot use this file in WAL mode (a network file system?)")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA foreign_keys=ON")
        if self._format() == (APPLICATION_ID, FORMAT_VERSION):
            return
        with self._write():  # first use, or another format: decided under the write lock, once
            app, version = self._format()
            if (app, version) == (APPLICATION_ID, FORMAT_VERSION):
                return
            tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            legacy = app == 0 and tables == {"features"}  # the per-run cache of earlier versions
            if app == APPLICATION_ID or legacy:
                log.warning("%s: a features cache of another format (version %s); emptied and rebuilt", self.path,
                            version if app == APPLICATION_ID else 1)
                for table in tables:
                    self.db.execute(f"DROP TABLE [{table}]")
            elif tables:
                raise FeatureCacheError(f"{self.path}: not a features cache (it holds the tables "
                                        f"{sorted(tables)}); delete it, or set [evals] features_cache / "
                                        "--features-cache to another file")
            for statement in _SCHEMA.split(";"):  # (not executescript: it would commit the open transaction)
                if statement.strip():
                    self.db.execute(statement)
            self.db.execute(f"PRAGMA application_id={APPLICATION_ID}")
            self.db.execute(f"PRAGMA user_version={FORMAT_VERSION}")

    def _format(self) -> tuple[int, int]:
        return (self.db.execute("PRAGMA application_id").fetchone()[0],
                self.db.execute("PRAGMA user_version").fetchone()[0])

    class _Txn:
        def __init__(self, db: sqlite3.Connection) -> None:
            self.db = db

        def __enter__(self) -> None:
            _retry(lambda: self.db.execute("BEGIN IMMEDIATE"))

        def __exit__(self, kind: Any, *exc: Any) -> None:
            self.db.execute("COMMIT" if kind is None else "ROLLBACK")

    def _write(self) -> FeatureCache._Txn:
        return FeatureCache._Txn(self.db)

    def close(self) -> None:
        self.db.close()

    # --- entries ---

    def register(self, key: str, meta: Mapping[str, Any], code: str) -> None:
        """Make sure the entry exists (what it holds: `meta`, shown by `evals cache`) and mark it used now."""
        now = _now_ms()
        with self._write():
            self.db.execute("INSERT OR IGNORE INTO entries (key, code, meta, created_ms, used_ms) "
                            "VALUES (?, ?, ?, ?, ?)", (key, code, json.dumps(meta, sort_keys=True), now, now))
            self.db.execute("UPDATE entries SET used_ms=? WHERE key=?", (now, key))

    def _id(self, key: str) -> int | None:
        if key not in self._ids:
            row = self.db.execute("SELECT id FROM entries WHERE key=?", (key,)).fetchone()
            if row is None:
                return None
            self._ids[key] = row[0]
        return self._ids[key]

    def _zdict(self, entry: int) -> bytes | None:
        if entry not in self._zdicts:
            row = self.db.execute("SELECT zdict FROM entries WHERE id=?", (entry,)).fetchone()
            if row is None or row[0] is None:
                return None
            self._zdicts[entry] = row[0]  # set once, never changed: kept for the connection's life
        return self._zdicts[entry]

    def _pack(self, zdict: bytes, text: str) -> bytes:
        z = zlib.compressobj(LEVEL, zdict=zdict)
        return z.compress(text.encode()) + z.flush()

    def _unpack(self, entry: int, blob: bytes) -> str:
        z = zlib.decompressobj(zdict=self._zdict(entry) or b"")
        return (z.decompress(blob) + z.flush()).decode()

    # --- snapshots ---

    def times(self, key: str, symbol: str) -> set[int]:
        entry = self._id(key)
        if entry is None:
            return set()
        rows = self.db.execute("SELECT time_ms FROM snapshots WHERE entry=? AND symbol=?", (entry, symbol))
        return {r[0] for r in rows}

    def pairs(self, key: str, start_ms: int, end_ms: int) -> set[tuple[str, int]]:
        """The (symbol, time) of every stored snapshot with start <= time < end (stored, not checked for damage)."""
        entry = self._id(key)
        if entry is None:
            return set()
        rows = self.db.execute("SELECT symbol, time_ms FROM snapshots WHERE entry=? AND time_ms>=? AND time_ms<?",
                               (entry, start_ms, end_ms))
        return {(s, t) for s, t in rows}

    def put_many(self, key: str, rows: Iterable[tuple[str, int, str] | tuple[str, int, str, str]]) -> int:
        """Insert (symbol, time, json[, prompt text]) rows in one transaction; rows already there are kept as they are.

        The prompt text, if given, is the snapshot's `to_prompt_text()`: stored after the JSON and a
        NUL (JSON text never holds a raw NUL), compressed with it.
        """
        stored = [(s, t, "\0".join(texts)) for s, t, *texts in rows]
        if not stored:
            return 0
        entry = self._id(key)
        if entry is None:
            raise KeyError(f"{self.path}: no entry {key} (register it first)")
        with self._write():
            zdict = self._zdict(entry)
            if zdict is None:  # the entry's first snapshot becomes its dictionary (under the lock: once)
                zdict = stored[0][2].encode()
                self.db.execute("UPDATE entries SET zdict=? WHERE id=?", (zdict, entry))
                self._zdicts[entry] = zdict
            self.db.executemany("INSERT OR IGNORE INTO snapshots VALUES (?, ?, ?, ?)",
                                [(entry, t, s, self._pack(zdict, text)) for s, t, text in stored])
        return len(stored)

    def get_range(self, key: str, start_ms: int, end_ms: int, *,
                  prompts: bool = False) -> dict[tuple[str, int], Any]:
        """Every cached snapshot with start <= time < end, by (symbol, time); a damaged one is left out (a miss).

        Each is its JSON, or with `prompts` (JSON, prompt text or None if none was stored).
        """
        entry = self._id(key)
        if entry is None:
            return {}
        rows = self.db.execute("SELECT symbol, time_ms, blob FROM snapshots WHERE entry=? AND time_ms>=? "
                               "AND time_ms<?", (entry, start_ms, end_ms))
        out: dict[tuple[str, int], Any] = {}
        for s, t, blob in rows:
            try:
                text = self._unpack(entry, blob)
            except (zlib.error, UnicodeDecodeError):
                log.warning("%s: the snapshot of %s at %s is damaged; computing it again", self.path, s, iso(t))
                continue
            js, nul, prompt = text.partition("\0")
            out[(s, t)] = (js, prompt if nul else None) if prompts else js
        return out

    def get(self, key: str, symbol: str, time_ms: int) -> str | None:
        return self.get_range(key, time_ms, time_ms + 1).get((symbol, time_ms))

    def count(self, key: str | None = None, symbols: Sequence[str] | None = None,
              times: Sequence[int] | None = None) -> int:
        """Snapshots stored (of one entry; of some symbols; at some decision times)."""
        if key is None:
            return self.db.execute("SELECT COUNT(*) FROM snapshots").fetchone()[0]
        entry = self._id(key)
        if entry is None:
            return 0
        sql, args = "SELECT symbol, time_ms FROM snapshots WHERE entry=?", [entry]
        if times:
            sql += " AND time_ms>=? AND time_ms<=?"
            args += [min(times), max(times)]
        wanted_t = set(times) if times is not None else None
        wanted_s = set(symbols) if symbols is not None else None
        return sum(1 for s, t in self.db.execute(sql, args)
                   if (wanted_s is None or s in wanted_s) and (wanted_t is None or t in wanted_t))

    # --- what `signal-agent evals cache` shows and prunes ---

    def entries(self) -> list[dict[str, Any]]:
        """Every entry: key, code fingerprint, meta, snapshots, bytes, first/last decision time, created/used."""
        out = []
        rows = self.db.execute(
            "SELECT e.key, e.code, e.meta, e.created_ms, e.used_ms, COUNT(s.time_ms), "
            "COALESCE(SUM(LENGTH(s.blob)), 0) + COALESCE(LENGTH(e.zdict), 0), MIN(s.time_ms), MAX(s.time_ms) "
            "FROM entries e LEFT JOIN snapshots s ON s.entry=e.id GROUP BY e.id ORDER BY e.used_ms DESC")
        for key, code, meta, created, used, n, size, first, last in rows:
            out.append({"key": key, "code": code, "meta": json.loads(meta), "created_ms": created, "used_ms": used,
                        "snapshots": n, "bytes": size, "first_ms": first, "last_ms": last})
        return out

    def prune(self, *, code: str, unused_before_ms: int | None = None) -> tuple[int, int]:
        """Delete the entries another code made (no run of this code can hit them) and, if given, those not used
        since `unused_before_ms`; then give the space back. Returns (entries, snapshots) deleted."""
        with self._write():
            doomed = [r[0] for r in self.db.execute("SELECT id FROM entries WHERE code!=? OR used_ms<?",
                                                    (code, unused_before_ms if unused_before_ms is not None
                                                     else -1))]
            snaps = 0
            for entry in doomed:
                snaps += self.db.execute("DELETE FROM snapshots WHERE entry=?", (entry,)).rowcount
                self.db.execute("DELETE FROM entries WHERE id=?", (entry,))
        if doomed:
            _retry(lambda: self.db.execute("VACUUM"))
        self._ids.clear()
        self._zdicts.clear()
        return len(doomed), snaps


def shared_snapshot(symbol: str, universe: Mapping[str, Candles], decision_ms: int, settings: CycleSettings, *,
                    funding: Mapping[str, FundingRates], cache: FitCache | None) -> FeatureSnapshot:
    """The variant-independent snapshot: the set without outcome-dependent theories, computed now."""
    return build_snapshot(symbol, universe, decision_ms, shared_theories(settings.theories), window=settings.window,
                          outcomes=(), cache=cache, leader=settings.leader, funding=funding)


def complete_snapshot(shared: FeatureSnapshot, symbol: str, universe: Mapping[str, Candles], decision_ms: int,
                      settings: CycleSettings, *, outcomes: Sequence[float], funding: Mapping[str, FundingRates],
                      cache: FitCache | None) -> FeatureSnapshot:
    """Add the variant's outcome-dependent theories to a shared snapshot, in the set's order.

    Errors are handled exactly as `build_snapshot` handles them (TheoryError -> its reason; any
    other exception -> "failed: ...", logged), so the result equals a fresh `build_snapshot`.
    """
    own = [n for n in settings.theories if n in OUTCOME_THEORIES]
    if not own:
        return shared
    history = universe[symbol].closed_by(decision_ms)
    cut = {s: c.closed_by(decision_ms) for s, c in universe.items()}
    ctx = TheoryContext(symbol=symbol, at_ms=decision_ms, candles=history.tail(settings.window), history=history,
                        universe={s: c for s, c in cut.items() if len(c)}, outcomes=tuple(outcomes), cache=cache,
                        leader=settings.leader, funding=(funding or {}).get(symbol))
    extra: dict[str, TheoryResult] = {}
    extra_errors: dict[str, str] = {}
    for name in own:
        try:
            extra[name] = THEORIES[name](ctx, settings.theories[name])
        except TheoryError as exc:
            extra_errors[name] = str(exc)
        except Exception as exc:  # as build_snapshot: a theory's bug fails closed, loudly
            log.exception("theory %s failed on %s at %s", name, symbol, iso(decision_ms))
            extra_errors[name] = f"failed: {type(exc).__name__}: {exc}"
    theories = {n: extra[n] if n in extra else shared.theories[n] for n in settings.theories
                if n in extra or n in shared.theories}
    errors = {n: extra_errors[n] if n in extra_errors else shared.errors[n] for n in settings.theories
              if n in extra_errors or n in shared.errors}
    return shared.derived(theories, errors)


class CachedSnapshotSource:
    """A `SnapshotSource` that reads the shared snapshot from the cache and adds the variant's own theories.

    A decision not in the cache (phase 1 skipped it, the cache was pruned, or its row is
    damaged) is computed on the spot, stored for the others and counted as a miss; `reused`
    counts every snapshot read. The cache failing during the run (a damaged file) is logged once
    and turns every later decision into a miss: the replay goes on with fresh snapshots.
    `key` is the entry the snapshots are read from and stored to (`cache_key`; default: this
    code, data `UNIDENTIFIED`, as a run's own cache).

    Variants stepping through the decision times together share one source through their own
    `view()` (each counts its own reads): at a decision time every symbol's cached snapshot is
    parsed once, and completed once per distinct outcome list, whichever variant asks first. The
    memo holds the current decision time only. It relies on what makes the cache valid at all:
    every input of a snapshot other than the outcomes (candles, universe, funding, the set) is the
    same for every variant of a run at a given time.
    """

    def __init__(self, cache: FeatureCache, settings: CycleSettings, prefetch_ms: int = 7 * 86_400_000, *,
                 key: str | None = None) -> None:
        self.cache: FeatureCache | None = cache
        self.fingerprint = set_fingerprint(settings)
        self.key = key or cache_key(settings, code_fingerprint(), UNIDENTIFIED)
        self.prefetch_ms = prefetch_ms
        self._block: dict[tuple[str, int], tuple[str, str | None]] = {}  # (symbol, time) -> (JSON, prompt text)
        self._block_start = self._block_end = -1
        self._direct = SnapshotView(self)  # the source called directly: its counts are the source's
        self._now: int | None = None  # the decision time the memos below hold
        self._shared: dict[str, tuple[FeatureSnapshot, bool]] = {}  # symbol -> (shared snapshot, read from cache)
        self._complete: dict[tuple[str, tuple[float, ...]], FeatureSnapshot] = {}  # (symbol, outcomes) -> snapshot

    def view(self) -> SnapshotView:
        """A variant's handle on this source: the same snapshots, its own counts."""
        return SnapshotView(self)

    def _broken(self, exc: Exception) -> None:
        log.warning("features cache %s failed (%s: %s); the rest of this replay computes its snapshots",
                    self.cache.path if self.cache else "?", type(exc).__name__, exc)
        self.cache = None

    def _lookup(self, symbol: str, decision_ms: int) -> tuple[str, str | None] | None:
        if self.cache is None:
            return None
        if not (self._block_start <= decision_ms < self._block_end):
            self._block_start, self._block_end = decision_ms, decision_ms + self.prefetch_ms
            try:
                self._block = self.cache.get_range(self.key, self._block_start, self._block_end, prompts=True)
            except sqlite3.DatabaseError as exc:
                self._broken(exc)
                self._block = {}
        return self._block.get((symbol, decision_ms))

    def _check(self, settings: CycleSettings) -> CycleSettings:
        """The settings, once checked to be the set this cache entry holds (hashing the set costs more than a read)."""
        if set_fingerprint(settings) != self.fingerprint:
            raise ValueError("the cycle's theory set is not the one this feature cache was opened for")
        return settings

    @property
    def reused(self) -> int:
        return self._direct.reused

    @property
    def misses(self) -> int:
        return self._direct.misses

    def __call__(self, symbol: str, universe: Mapping[str, Candles], decision_ms: int, settings: CycleSettings, *,
                 outcomes: Sequence[float], funding: Mapping[str, FundingRates],
                 cache: FitCache | None) -> FeatureSnapshot:
        return self._direct(symbol, universe, decision_ms, settings, outcomes=outcomes, funding=funding, cache=cache)

    def snapshot(self, symbol: str, universe: Mapping[str, Candles], decision_ms: int, settings: CycleSettings, *,
                 outcomes: Sequence[float], funding: Mapping[str, FundingRates],
                 cache: FitCache | None) -> tuple[FeatureSnapshot, bool]:
        """The variant's snapshot, and whether its shared part was read from the cache (False: computed, a miss)."""
        if decision_ms != self._now:
            self._now, self._shared, self._complete = decision_ms, {}, {}
        known = self._shared.get(symbol)
        if known is None:
            known = self._shared[symbol] = self._shared_snapshot(symbol, universe, decision_ms, settings,
                                                                 funding=funding, cache=cache)
        shared, hit = known
        own = (symbol, tuple(outcomes))
        complete = self._complete.get(own)
        if complete is None:
            complete = self._complete[own] = complete_snapshot(shared, symbol, universe, decision_ms, settings,
                                                               outcomes=outcomes, funding=funding, cache=cache)
        return complete, hit

    def _shared_snapshot(self, symbol: str, universe: Mapping[str, Candles], decision_ms: int,
                         settings: CycleSettings, *, funding: Mapping[str, FundingRates],
                         cache: FitCache | None) -> tuple[FeatureSnapshot, bool]:
        found = self._lookup(symbol, decision_ms)
        if found is not None:
            try:
                return FeatureSnapshot.from_cache(*found), True
            except ValueError:  # not a snapshot (a foreign writer): a miss, never a guess
                log.warning("features cache: the snapshot of %s at %s does not parse; computing it again", symbol,
                            iso(decision_ms))
        shared = shared_snapshot(symbol, universe, decision_ms, settings, funding=funding, cache=cache)
        if self.cache is not None and found is None:
            try:
                self.cache.put_many(self.key, [(symbol, decision_ms, shared.model_dump_json(),
                                                shared.to_prompt_text())])
            except (sqlite3.DatabaseError, KeyError) as exc:
                self._broken(exc)
        return shared, False


class SnapshotView:
    """One variant's `SnapshotSource` on a shared `CachedSnapshotSource`: its own reads counted (reused, misses)."""

    def __init__(self, source: CachedSnapshotSource) -> None:
        self.source = source
        self.reused = 0
        self.misses = 0
        self._checked: CycleSettings | None = None

    def __call__(self, symbol: str, universe: Mapping[str, Candles], decision_ms: int, settings: CycleSettings, *,
                 outcomes: Sequence[float], funding: Mapping[str, FundingRates],
                 cache: FitCache | None) -> FeatureSnapshot:
        if settings is not self._checked:
            self._checked = self.source._check(settings)
        snapshot, hit = self.source.snapshot(symbol, universe, decision_ms, settings, outcomes=outcomes,
                                             funding=funding, cache=cache)
        if hit:
            self.reused += 1
        else:
            self.misses += 1
        return snapshot


def universe_at(data: Any, symbols: Sequence[str], decision_ms: int) -> dict[str, Candles]:
    """What the cycle's data step sees: each symbol's candles closed by the decision time; bad ones left out."""
    out: dict[str, Candles] = {}
    for s in symbols:
        try:
            out[s] = data.candles(s, decision_ms)
        except (CandleDataError, OSError, ValueError):
            continue
    return out


def decidable(universe: Mapping[str, Candles], symbol: str, decision_ms: int, policy: DataPolicy,
              window: int) -> bool:
    """Whether the cycle would analyse this symbol (its data passes the cycle's own data rules)."""
    from agent.cycle import data_problem

    return symbol in universe and data_problem(universe[symbol], decision_ms, policy, window) is None


def refit_periods(settings: CycleSettings) -> list[int]:
    """The refit schedules (ms) of the set's scheduled fits, defaults resolved: every `*every_ms` parameter.

    Today regime.refit_every_ms, kalman.fit_every_ms, forest.every_ms and stationarity.every_ms;
    matching on the name keeps a future schedule from being missed (a test checks these four).
    """
    periods = set()
    for name, raw in settings.theories.items():
        params = THEORIES[name].params.model_validate(raw or {})
        periods |= {getattr(params, f) for f in type(params).model_fields if f.endswith("every_ms")}
    return sorted(periods)


def time_blocks(times: Sequence[int], settings: CycleSettings, target_ms: int) -> list[list[int]]:
    """The decision times cut into blocks of about `target_ms`, each a whole number of every refit period.

    A block's span is a multiple of the lcm of the set's refit periods and blocks are aligned to
    the epoch, as `fit_time` is: no fit period straddles two blocks, so no block refits a period
    another block fits too (each fit is ~2 s a symbol). Times are taken in order; empty blocks are left out.
    """
    period = math.lcm(*refit_periods(settings)) or 1
    span = period * max(1, round(target_ms / period))
    blocks: dict[int, list[int]] = {}
    for t in sorted(times):
        blocks.setdefault(t // span, []).append(t)
    return list(blocks.values())


def compute_features(cache_path: str | Path, data: Any, universe_symbols: Sequence[str], symbols: Sequence[str],
                     times: Sequence[int], settings: CycleSettings, *, key: str | None = None, code: str | None = None,
                     meta: Mapping[str, Any] | None = None, batch: int = 200,
                     progress: Any = None) -> tuple[int, float]:
    """Phase 1 for some symbols and times: every decidable (symbol, time) not yet cached, time by time.

    Time-outer, symbol-inner: the universe's candles are cut once per time and shared by the
    symbols, and so is the universe-wide part of `context` (memoised in the FitCache per time).
    The scheduled fits are keyed by fit time, so any order gives the same snapshots; they are made
    once a (symbol, period) if `times` holds whole fit periods (`time_blocks`). The FitCache is a
    plain LRU and each theory asks it for at most one entry a call, so between two uses of an entry
    (the next symbol, or the next time step) at most 2 x (symbols x theories + 1 context) others
    are touched: sized at twice that, it keeps every entry still in use and drops the fits of
    past periods soon (a block may span dozens of periods; a forest is a few hundred KB). `key` is
    the cache entry (default: this code, data `UNIDENTIFIED`), `code` the code fingerprint in it
    (default: this process's) and `meta` what `evals cache` shows of it. Returns (snapshots
    computed, seconds). `progress`, if given, is called with the number of (symbol, time) pairs
    dealt with since the last call. A cache that fails mid-way (a damaged file) is logged and
    left: the snapshots are computed again by the replay, which never crashes for it either.
    """
    start = time.perf_counter()
    cache: FeatureCache | None = FeatureCache(cache_path)
    code = code or code_fingerprint()
    key = key or cache_key(settings, code, UNIDENTIFIED)
    fits = FitCache(max_entries=4 * (len(symbols) * len(settings.theories) + 1))
    computed = 0
    times = sorted(times)

    def store(rows: list[tuple[str, int, str, str]]) -> None:
        nonlocal cache
        if cache is None or not rows:
            return
        try:
            cache.put_many(key, rows)
        except sqlite3.DatabaseError as exc:
            log.warning("features cache %s failed (%s); phase 1 stops filling it", cache_path, exc)
            cache.close()
            cache = None

    try:
        cache.register(key, meta or {"theories": set_fingerprint(settings)}, code)
        done = cache.pairs(key, times[0], times[-1] + 1) if times else set()
        pending: list[tuple[str, int, str, str]] = []
        ticked = 0
        for t in times:
            if cache is None:
                break
            todo = [s for s in symbols if (s, t) not in done]
            if todo:
                universe = universe_at(data, universe_symbols, t)
                funding = data.funding_rates() if hasattr(data, "funding_rates") else {}
                for symbol in todo:
                    if decidable(universe, symbol, t, settings.data, settings.window):
                        snap = shared_snapshot(symbol, universe, t, settings, funding=funding, cache=fits)
                        pending.append((symbol, t, snap.model_dump_json(), snap.to_prompt_text()))
                        computed += 1
            ticked += len(symbols)
            if len(pending) >= batch:
                store(pending)
                pending = []
            if progress is not None and ticked >= 50:
                progress(ticked)
                ticked = 0
        store(pending)
        if progress is not None and ticked:
            progress(ticked)
    finally:
        if cache is not None:
            cache.close()
    return computed, time.perf_counter() - start


__all__ = [
    "CODE_PATHS", "OUTCOME_THEORIES", "UNIDENTIFIED", "CachedSnapshotSource", "FeatureCache", "FeatureCacheError",
    "SnapshotView",
    "cache_key", "code_fingerprint", "complete_snapshot", "compute_features", "data_fingerprint", "decidable",
    "refit_periods", "resolve_features_cache", "set_fingerprint", "shared_snapshot", "shared_theories", "time_blocks",
    "universe_at",
]
