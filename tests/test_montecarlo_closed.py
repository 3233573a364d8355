"""The closed form's arithmetic runs in compiled loops, with numpy's exp, sums and products left to
numpy; these tests compute it the plain numpy way, as it was written before, and ask for exactly
the same floats on real brackets."""

import math

import numpy as np
import pandas as pd
import pytest

from theories.montecarlo import (
    _MAX_CELLS,
    _MIN_CELLS,
    BGK_BETA,
    BarMoves,
    BracketOdds,
    _bracket_levels,
    _cell_returns,
    _grid,
    _series_terms,
    _tail_risk,
    _trade_returns,
    barrier_probability,
    closed_form_odds,
    estimate_drift,
    killed_brownian,
)


def plain_killed_brownian(mu, s2, up, down, horizon, edges=None):
    """killed_brownian in numpy array operations (no checks)."""
    width = up + down
    n = _series_terms(s2, width, horizon)
    c = mu / s2
    w = n * math.pi / width
    k = mu * mu / (2.0 * s2) + s2 * w * w / 2.0
    kt = k * horizon
    sin0 = np.sin(w * down)
    n_sin0 = n * sin0
    pre = s2 * math.pi / width**2
    p_up_inf = barrier_probability(mu, s2, up, down)
    mass = np.empty(0)
    tail_down = pre * float(np.sum(n_sin0 * np.exp(-c * down - kt) / k))
    n_sin0[1::2] *= -1.0
    tail_up = pre * float(np.sum(n_sin0 * np.exp(c * up - kt) / k))
    if edges is not None:
        y = np.asarray(edges, dtype=np.float64) + down
        wy = np.outer(w, y)
        anti = np.exp(c * (y - down)) * (c * np.sin(wy) - w[:, None] * np.cos(wy)) / (c * c + w * w)[:, None]
        mass = ((2.0 / width) * sin0 * np.exp(-kt)) @ np.diff(anti, axis=1)
    return p_up_inf - tail_up, (1.0 - p_up_inf) - tail_down, mass


def plain_closed_form_odds(entry, stop, target, horizon, mu, s2, discrete_correction=False):
    """closed_form_odds in numpy array operations."""
    side, up, down = _bracket_levels(entry, stop, target)
    shift = BGK_BETA * math.sqrt(s2) if discrete_correction else 0.0
    up_k, down_k = up + shift, down + shift
    cells = int(min(max(_MIN_CELLS, math.ceil(40 * (up + down) / math.sqrt(s2 * horizon))), _MAX_CELLS))
    inner = np.linspace(-down, up, cells + 1)
    edges = np.concatenate(([-down_k], inner, [up_k])) if shift else inner
    p_up, p_down, mass = plain_killed_brownian(mu, s2, up_k, down_k, horizon, edges)
    mass = np.maximum(mass, 0.0)
    if shift:
        p_down, p_up, mass = p_down + mass[0], p_up + mass[-1], mass[1:-1]
    p_up, p_down = max(p_up, 0.0), max(p_down, 0.0)
    r_down = _trade_returns(side, entry, entry * math.exp(-down))
    r_up = _trade_returns(side, entry, entry * math.exp(up))
    r_edges = _trade_returns(side, entry, entry * np.exp(inner))
    r_edges[0], r_edges[-1] = r_down, r_up
    r_mid = _trade_returns(side, entry, entry * np.exp(0.5 * (inner[:-1] + inner[1:])))
    lo = np.concatenate(([r_down], np.minimum(r_edges[:-1], r_edges[1:]), [r_up]))
    hi = np.concatenate(([r_down], np.maximum(r_edges[:-1], r_edges[1:]), [r_up]))
    var95, cvar95 = _tail_risk(lo, hi, np.concatenate(([p_down], mass, [p_up])))
    expected = p_down * r_down + p_up * r_up + float(np.dot(r_mid, mass))
    p_target, p_stop = (p_up, p_down) if side == "long" else (p_down, p_up)
    return BracketOdds(p_target=p_target, p_stop=p_stop, p_neither=float(mass.sum()), expected_return=expected,
                       var95=var95, cvar95=cvar95)


def real_windows(shared_data, symbol, n=6):
    df = pd.read_csv(shared_data / "candles" / "binance-spot-1h" / f"{symbol}.csv.gz").tail(500 + 300 * n)
    for start in range(0, 300 * n, 300):
        yield df.iloc[start : start + 500]


@pytest.mark.parametrize("symbol", ["BTC_USDT", "DOGE_USDT", "SOL_USDT"])
def test_compiled_closed_form_is_the_numpy_one_to_the_bit_on_real_brackets(shared_data, symbol):
    for window in real_windows(shared_data, symbol):
        drift = estimate_drift(BarMoves.from_ohlc(window.open, window.high, window.low, window.close).close)
        mu, s2, entry = drift.used, drift.volatility**2, float(window.close.iloc[-1])
        for near, far in ((1.5, 3.0), (0.3, 0.5), (4.0, 12.0), (1.0, 1.0)):
            a, b = entry * near * drift.volatility, entry * far * drift.volatility
            for stop, target in ((entry - a, entry + b), (entry + a, entry - b)):
                for horizon in (24, 5, 72.5):
                    for correct in (False, True):
                        args = (entry, stop, target, horizon, mu, s2)
                        assert closed_form_odds(*args, discrete_correction=correct) == \
                            plain_closed_form_odds(*args, correct)
            up, down = math.log(1 + b / entry), math.log(entry / (entry - a))
            for edges in (None, np.linspace(-down, up, 37)):
                fast, plain = killed_brownian(mu, s2, up, down, 24, edges), plain_killed_brownian(mu, s2, up, down, 24,
                                                                                                 edges)
                assert fast[:2] == plain[:2] and np.array_equal(fast[2], plain[2])


def test_grid_is_numpys_linspace_and_its_midpoints():
    rng = np.random.default_rng(3)
    for _ in range(2000):
        down, up = rng.uniform(1e-4, 0.5, 2) * 10.0 ** rng.integers(-3, 2, 2)
        cells = int(rng.integers(1, 3000))
        grid, points = _grid(down, up, cells), np.linspace(-down, up, cells + 1)
        assert np.array_equal(grid[: cells + 1], points)
        assert np.array_equal(grid[cells + 1 :], 0.5 * (points[:-1] + points[1:]))


@pytest.mark.parametrize("symbol", ["ETH_USDT", "XRP_USDT"])
def test_bar_moves_are_the_logs_taken_column_by_column(shared_data, symbol):
    for window in real_windows(shared_data, symbol, n=10):
        cols = [window[c].to_numpy(np.float64) for c in ("open", "high", "low", "close")]
        moves = BarMoves.from_ohlc(*cols)
        prev = np.log(cols[3][:-1])
        for got, col in zip((moves.open, moves.high, moves.low, moves.close), cols, strict=True):
            assert np.array_equal(got, np.log(col[1:]) - prev)



def real_brackets(shared_data, symbol):
    """Long and short brackets (stop 2 volatilities away, target 4) on real windows of `symbol`: for each,
    the entry, the drift estimate and `_bracket_levels`' side and log distances up and down."""
    for window in real_windows(shared_data, symbol, n=3):
        entry = float(window.close.iloc[-1])
        drift = estimate_drift(BarMoves.from_ohlc(window.open, window.high, window.low, window.close).close)
        a = entry * 2.0 * drift.volatility
        for stop, target in ((entry - a, entry + 2 * a), (entry + a, entry - 2 * a)):
            yield entry, drift, *_bracket_levels(entry, stop, target)


def test_cell_returns_come_in_a_stable_sorts_order_or_say_they_do_not(shared_data):
    # real long and short brackets: the returns rise (long) or fall (short) strictly along the grid,
    # and the atoms and cells come as np.lexsort orders the plain arrays; with equal cells (a tie)
    # they stay in grid order and say so, for _tail_risk to sort them
    for entry, _drift, side, up, down in real_brackets(shared_data, "BTC_USDT"):
        r_down = _trade_returns(side, entry, entry * math.exp(-down))
        r_up = _trade_returns(side, entry, entry * math.exp(up))
        mass = np.random.default_rng(1).uniform(0.0, 1e-3, 400)
        for tie in (False, True):
            growth = np.exp(_grid(down, up, 400))
            if tie:
                growth[201] = growth[202] = growth[200]
            r_edges = _trade_returns(side, entry, entry * growth[:401])
            r_edges[0], r_edges[-1] = r_down, r_up
            plain_lo = np.concatenate(([r_down], np.minimum(r_edges[:-1], r_edges[1:]), [r_up]))
            plain_hi = np.concatenate(([r_down], np.maximum(r_edges[:-1], r_edges[1:]), [r_up]))
            plain_w = np.concatenate(([0.3], mass, [0.2]))
            lo, hi, w, _, in_order = _cell_returns(growth, entry, side == "long", r_down, r_up, 0.3, 0.2, mass)
            assert in_order is not tie
            order = np.lexsort((plain_hi, plain_lo)) if in_order else np.arange(402)
            assert np.array_equal(lo, plain_lo[order]) and np.array_equal(hi, plain_hi[order])
            assert np.array_equal(w, plain_w[order])
            assert _tail_risk(lo, hi, w, in_order) == _tail_risk(plain_lo, plain_hi, plain_w)


def plain_tail_risk(lo, hi, weights):
    """VaR95 and CVaR95 as numpy computed them before the compiled running sum: a stable sort,
    np.cumsum, np.searchsorted and the cells' middles."""
    order = np.lexsort((hi, lo))
    lo, hi, w = lo[order], hi[order], weights[order]
    cum = np.cumsum(w)
    alpha = 0.05 * cum[-1]
    i = min(int(np.searchsorted(cum, alpha)), len(w) - 1)
    below = cum[i - 1] if i else 0.0
    part = alpha - below
    q = lo[i] + (hi[i] - lo[i]) * (part / w[i] if w[i] > 0 else 0.0)
    tail_sum = float(np.dot(0.5 * (lo[:i] + hi[:i]), w[:i]) + part * 0.5 * (lo[i] + q))
    return -float(q), -tail_sum / alpha


def test_tail_risk_is_numpys_to_the_bit_on_real_and_random_distributions(shared_data):
    rng = np.random.default_rng(3)
    cases = []
    for entry, drift, side, up, down in real_brackets(shared_data, "DOGE_USDT"):
        edges = _grid(down, up, 400)[:401]
        p_up, p_down, mass = killed_brownian(drift.used, drift.volatility**2, up, down, 24, edges)
        r_down = _trade_returns(side, entry, entry * math.exp(-down))
        r_up = _trade_returns(side, entry, entry * math.exp(up))
        growth = np.exp(_grid(down, up, 400))
        lo, hi, w, _, _ = _cell_returns(growth, entry, side == "long", r_down, r_up, p_down, p_up,
                                        np.maximum(mass, 0.0))
        cases.append((lo, hi, w))
    for n in (2, 3, 50, 1000):  # atoms only, atoms and cells, the 5% point in the first or a later one
        lo = np.sort(rng.normal(0.0, 0.01, n))
        hi = lo + rng.uniform(0.0, 0.002, n) * (rng.random(n) < 0.7)
        cases.append((lo, hi, rng.uniform(0.0, 1.0, n) * (rng.random(n) < 0.8)))
        cases.append((lo, hi, np.concatenate(([0.2], rng.uniform(0.0, 1e-3, n - 1)))))
    for lo, hi, w in cases:
        assert _tail_risk(lo, hi, w) == plain_tail_risk(lo, hi, w)
        order = np.lexsort((hi, lo))
        assert _tail_risk(lo[order], hi[order], w[order], in_order=True) == plain_tail_risk(lo, hi, w)
