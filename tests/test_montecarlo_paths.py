"""The simulation prices a bracket from each block's extremes and a look inside one block, in compiled
loops; these tests read the same paths bar by bar, the plain way, and build them the way numpy did,
and ask for exactly the same numbers."""

import math

import numba
import numpy as np
import pandas as pd
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from theories.base import TheoryError
from theories.jit import compiled
from theories.montecarlo import (
    TAIL,
    BarMoves,
    MonteCarloParams,
    SimulatedPaths,
    _path_levels,
    _smallest,
    bracket_odds,
    estimate_drift,
    montecarlo,
    simulate_paths,
)


def bar_by_bar_odds(paths: SimulatedPaths, entry: float, stop: float, target: float) -> dict[str, float]:
    """The exit rules of `SimulatedPaths.odds` on the (bars, paths) running high and low: the first
    bar whose range reaches a level decides; a gap exits at its open; a bar reaching both is the stop."""
    long = stop < entry
    up, down = (math.log(target / entry), math.log(entry / stop)) if long else \
        (math.log(stop / entry), math.log(entry / target))
    horizon = paths.horizon
    t_up = (paths.running_high < up).sum(axis=0)  # bars before the running high reaches the upper level
    t_down = (paths.running_low > -down).sum(axis=0)
    t = np.minimum(t_up, t_down)
    hit = t < horizon
    open_at = paths.open_at(np.minimum(t, horizon - 1))
    gap_up, gap_down = open_at >= up, open_at <= -down
    if long:
        upper = (t_up < t_down) | gap_up
        lower = hit & ~upper
    else:
        lower = (t_down < t_up) | gap_down
        upper = hit & ~lower
    exit_log = np.where(hit, np.where(gap_up | gap_down, open_at, np.where(upper, up, -down)), paths.final)
    exit_price = entry * np.exp(exit_log)
    r = exit_price / entry - 1.0 if long else 1.0 - exit_price / entry
    tail = TAIL * len(r)
    k = math.ceil(tail)
    worst = np.sort(r)[:k]
    p_up, p_down = np.count_nonzero(upper) / len(r), np.count_nonzero(lower) / len(r)
    return {
        "p_target": p_up if long else p_down,
        "p_stop": p_down if long else p_up,
        "p_neither": 1.0 - p_up - p_down,
        "expected_return": float(r.mean()),
        "var95": -float(worst[-1]),
        "cvar95": -float((worst[:-1].sum() + (tail - (k - 1)) * worst[-1]) / tail),
    }


def brackets(entry: float, scale: float, seed: int, n: int = 12):
    """Long and short brackets from close to the entry (exits in the first block) to out of reach."""
    rng = np.random.default_rng(seed)
    for near, far in rng.uniform(0.2, 12.0, (n, 2)) * scale:
        yield entry * math.exp(-near), entry * math.exp(far)  # long: stop, target
        yield entry * math.exp(near), entry * math.exp(-far)  # short


@pytest.mark.parametrize(("horizon", "block"), [(24, 6), (22, 6), (5, 8), (30, 1)])
def test_block_exits_are_the_bar_by_bar_exits_on_real_bars(shared_data, horizon, block):
    df = pd.read_csv(shared_data / "candles" / "binance-spot-1h" / "ETH_USDT.csv.gz").tail(501)
    moves = BarMoves.from_ohlc(df.open, df.high, df.low, df.close)
    drift = estimate_drift(moves.close)
    paths = simulate_paths(moves, horizon, 10_000, block, seed=3, drift=drift.used)
    entry = float(df.close.iloc[-1])
    for stop, target in brackets(entry, drift.volatility, seed=horizon):
        assert paths.odds(entry, stop, target).model_dump() == bar_by_bar_odds(paths, entry, stop, target)



def real_windows(shared_data, per_symbol: int = 4, bars: int = 500):
    """Windows of `bars` hourly bars of every symbol, ending at hours spread over its last 4000."""
    for csv in sorted((shared_data / "candles" / "binance-spot-1h").glob("*.csv.gz")):
        df = pd.read_csv(csv).tail(4000)
        for end in np.linspace(bars, len(df), per_symbol).astype(int):
            yield csv.name, df.iloc[end - bars:end]


def test_the_snapshot_prices_both_brackets_as_bracket_odds_and_bar_by_bar_reading_do_on_real_windows(shared_data):
    # montecarlo prices its two brackets on one set of paths with its own bookkeeping: every field must be
    # the public bracket_odds' number to the bit, and its simulated odds those of reading the paths bar by bar
    p = MonteCarloParams()
    windows = 0
    for name, w in real_windows(shared_data):
        o, h, lo, c = (w[col].to_numpy() for col in ("open", "high", "low", "close"))
        res = montecarlo(o, h, lo, c, p)
        moves = BarMoves.from_ohlc(o, h, lo, c).tail(p.lookback)
        paths = simulate_paths(moves, p.horizon, p.n_paths, p.block, p.seed, res.drift_used)
        risk = p.k_stop * res.atr
        for side in ("long", "short"):
            stop, target = getattr(res, f"{side}_stop"), getattr(res, f"{side}_target")
            report = bracket_odds(res.entry, stop, target, p.horizon, moves, paths=paths)
            assert report.drift.model_dump() == {"raw": res.drift_raw, "t": res.drift_t, "used": res.drift_used,
                                                 "volatility": res.volatility, "n": len(moves)}
            assert report.simulated.model_dump() == bar_by_bar_odds(paths, res.entry, stop, target), (name, side)
            for key, odds in (("closed", report.closed_form), ("sim", report.simulated)):
                for field, value in odds.model_dump().items():
                    assert getattr(res, f"{side}_{field}_{key}") == value, (name, side, field, key)
                assert getattr(res, f"{side}_expected_r_{key}") == odds.expected_return * res.entry / risk
        windows += 1
    assert windows == 40

def test_block_exits_are_the_bar_by_bar_exits_with_gaps_and_bars_reaching_both_levels():
    # wide bars that often gap: opens far from the previous close, ranges wider than the brackets
    rng = np.random.default_rng(8)
    n = 300
    c = rng.normal(0.0, 0.01, n)
    o = rng.normal(0.0, 0.02, n)
    h = np.maximum(o, c) + rng.exponential(0.01, n)
    lo = np.minimum(o, c) - rng.exponential(0.01, n)
    paths = simulate_paths(BarMoves(o, h, lo, c), 22, 10_000, 6, seed=1)
    exits = [paths.odds(100.0, s, t) for s, t in brackets(100.0, 0.01, seed=2)]
    assert any(e.p_stop > 0 and e.p_target > 0 for e in exits)
    for (stop, target), odds in zip(brackets(100.0, 0.01, seed=2), exits, strict=True):
        assert odds.model_dump() == bar_by_bar_odds(paths, 100.0, stop, target)


def test_bars_given_path_by_path_exit_as_when_read_bar_by_bar():
    rng = np.random.default_rng(4)
    close = np.cumsum(rng.normal(0.0, 0.01, (24, 10_000)), axis=0)
    before = np.vstack([np.zeros((1, 10_000)), close[:-1]])
    open_level = before + rng.normal(0.0, 0.004, close.shape)
    high = np.maximum(open_level, close) + rng.exponential(0.004, close.shape)
    low = np.minimum(open_level, close) - rng.exponential(0.004, close.shape)
    paths = SimulatedPaths.from_bars(open_level, high, low, close)
    for stop, target in brackets(100.0, 0.01, seed=5):
        assert paths.odds(100.0, stop, target).model_dump() == bar_by_bar_odds(paths, 100.0, stop, target)


def test_the_smallest_returns_are_a_full_sorts_head_whether_few_many_or_none_sit_below_the_stop():
    rng = np.random.default_rng(6)
    stop = -0.015
    for below, at in ((10, 3000), (0, 600), (700, 50), (40, 300), (0, 0)):
        r = np.concatenate([stop - rng.exponential(0.01, below), np.full(at, stop), rng.uniform(stop, 0.03, 5000)])
        rng.shuffle(r)
        for k in (1, 250, 500):
            no_gaps = np.empty(0, np.intp), np.empty(0)
            assert np.array_equal(_smallest(r.copy(), k, stop, *no_gaps, 100.0, True), np.sort(r)[:k])


@pytest.mark.parametrize("long", [True, False])
def test_the_smallest_returns_book_the_gaps_first_as_numpy_prices_them(long):
    rng = np.random.default_rng(8)
    entry = 97.3
    r = rng.uniform(-0.02, 0.03, 10_000)
    gap = rng.choice(10_000, 40, replace=False)
    growth = np.exp(rng.normal(0.0, 0.03, 40))
    plain = r.copy()
    exits = entry * growth
    plain[gap] = exits / entry - 1.0 if long else 1.0 - exits / entry
    worst = _smallest(r, 500, -0.02, gap, growth, entry, long)
    assert np.array_equal(r, plain)
    assert np.array_equal(worst, np.sort(plain)[:500])


def test_the_cached_draws_are_a_fresh_generators_and_cannot_be_changed():
    moves = BarMoves(np.zeros(50), np.full(50, 0.01), np.full(50, -0.01), np.zeros(50))
    a = simulate_paths(moves, 24, 10_000, 6, seed=11)
    b = simulate_paths(moves, 24, 10_000, 6, seed=11)
    assert np.array_equal(a.starts, np.random.default_rng(11).integers(0, 50, size=(4, 10_000)))
    assert a.starts is b.starts and not a.starts.flags.writeable
    assert not np.array_equal(simulate_paths(moves, 24, 10_000, 6, seed=12).starts, a.starts)


def numpy_block_paths(moves: BarMoves, horizon: int, n_paths: int, block: int, seed: int, drift: float):
    """The tables, levels and last closes as numpy built them before the compiled loops: every
    block as a sliding window, a cumsum of its closes, and the levels added up block by block."""
    shift = drift - float(moves.close.mean())
    bars = np.stack([moves.open, moves.high, moves.low, moves.close])
    o, h, lo, c = sliding_window_view(np.concatenate([bars, bars[:, : block - 1]], axis=1), block, axis=1) + shift
    after = np.cumsum(c, axis=1)
    before = after - c
    starts = np.random.default_rng(seed).integers(0, len(moves), size=(-(-horizon // block), n_paths))
    last = np.minimum(block, horizon - block * np.arange(len(starts))) - 1
    rise = after.astype(np.float32).take(starts * block + last[:, None])
    base = np.zeros(starts.shape, np.float32)
    for j in range(1, len(starts)):
        base[j] = base[j - 1] + rise[j - 1]
    tables = ((before + o).astype(np.float32), np.maximum.accumulate(before + h, axis=1).astype(np.float32),
              np.minimum.accumulate(before + lo, axis=1).astype(np.float32))
    return tables, base, (base[-1] + rise[-1]).astype(np.float64)


@pytest.mark.parametrize(("horizon", "block"), [(24, 6), (22, 5), (5, 8), (30, 1)])
def test_compiled_block_tables_and_levels_are_numpys_to_the_bit_on_real_bars(shared_data, horizon, block):
    df = pd.read_csv(shared_data / "candles" / "binance-spot-1h" / "SOL_USDT.csv.gz").tail(501)
    moves = BarMoves.from_ohlc(df.open, df.high, df.low, df.close)
    drift = estimate_drift(moves.close).used
    paths = simulate_paths(moves, horizon, 10_000, block, seed=4, drift=drift)
    (open_table, high_table, low_table), base, final = numpy_block_paths(moves, horizon, 10_000, block, 4, drift)
    assert np.array_equal(paths.open_table, open_table) and np.array_equal(paths.high_table, high_table)
    assert np.array_equal(paths.low_table, low_table) and np.array_equal(paths.base, base)
    assert np.array_equal(paths.final, final)


def test_paths_must_start_at_the_entry():
    paths = simulate_paths(BarMoves(np.zeros(50), np.full(50, 0.01), np.full(50, -0.01), np.zeros(50)), 12, 10_000, 6)
    lifted = paths.base.copy()
    lifted[0, 7] = 0.001
    with pytest.raises(TheoryError, match="starting at 0"):
        SimulatedPaths(paths.starts, lifted, paths.open_table, paths.high_table, paths.low_table, paths.final, 12)


def test_without_a_writable_cache_folder_the_loops_are_compiled_all_the_same(monkeypatch):
    # numba's cache locators are where it looks for a writable folder; with none, caching raises
    monkeypatch.setattr(numba.core.caching.CacheImpl, "_locator_classes", [])
    with pytest.raises(RuntimeError, match="no locator"):
        numba.njit(cache=True)(_path_levels.py_func)
    levels = compiled(_path_levels.py_func)
    starts = np.array([[0, 1, 2], [2, 0, 1]])
    closes = np.array([[0.5, 1.0], [0.25, 2.0], [-0.5, 4.0]], np.float32)
    base, final = levels(starts, closes, 4)
    assert base.tolist() == [[0, 0, 0], [1, 2, 4]] and final.tolist() == [5.0, 3.0, 6.0]
