import math

import numpy as np
import pandas as pd
import pytest

from theories import regime as REGIME
from theories.base import FitCache, TheoryContext, TheoryError
from theories.candles import HOUR_MS, Candles
from theories.context import (
    THEORY,
    ContextParams,
    aligned_returns,
    average_correlation,
    breadth,
    market_context,
)
from theories.indicators import ema

T0 = 19675 * 24 * HOUR_MS
LEADER = "LEAD/USDT"


def _candles(log_close: np.ndarray, symbol: str, times: np.ndarray | None = None) -> Candles:
    c = np.exp(np.asarray(log_close, dtype=np.float64))
    t = T0 + np.arange(len(c)) * HOUR_MS if times is None else times
    o = np.concatenate(([c[0]], c[:-1]))
    return Candles(t, o, np.maximum(o, c), np.minimum(o, c), c, np.ones(len(c)), interval_ms=HOUR_MS, symbol=symbol)


def _walk(n: int, rng: np.random.Generator, drift: float = 0.0) -> np.ndarray:
    return np.log(100) + np.cumsum(drift + 0.01 * rng.standard_normal(n))


def _ctx(symbol: str, universe: dict[str, Candles], at_ms: int | None = None) -> TheoryContext:
    at = at_ms if at_ms is not None else max(c.last_close_time for c in universe.values())
    own = universe[symbol].closed_by(at)
    return TheoryContext(
        symbol=symbol, at_ms=at, candles=own.tail(500), history=own,
        universe={s: c.closed_by(at) for s, c in universe.items()}, leader=LEADER,
    )


def test_breadth_counts_the_symbols_above_their_ema():
    n = 300
    rising = [np.linspace(100, 120, n) * (1 + 0.001 * k) for k in range(3)]
    falling = [np.linspace(120, 100, n) * (1 + 0.001 * k) for k in range(2)]
    short = [np.linspace(100, 120, 30)]  # fewer than span closes: not counted
    assert breadth(rising + falling + short, 50) == (3, 5)


def test_breadth_of_a_constructed_universe_runs_through_the_theory():
    rng = np.random.default_rng(1)
    n = 600
    universe = {LEADER: _candles(_walk(n, rng), LEADER)}
    for k in range(4):  # four symbols end with a jump up: above their EMA
        lc = _walk(n, rng)
        universe[f"UP{k}/USDT"] = _candles(np.concatenate((lc[:-1], [lc[-1] + 0.3])), f"UP{k}/USDT")
    for k in range(3):  # three end with a drop: below it
        lc = _walk(n, rng)
        universe[f"DN{k}/USDT"] = _candles(np.concatenate((lc[:-1], [lc[-1] - 0.3])), f"DN{k}/USDT")
    leader_above = bool(universe[LEADER].close[-1] > _ema_last(universe[LEADER].close, 50))
    res = THEORY(_ctx("UP0/USDT", universe))
    assert res.n_symbols == 8 and res.n_above == 4 + leader_above
    assert res.breadth == pytest.approx((4 + leader_above) / 8)
    assert res.leader_above_trend is leader_above


def _ema_last(x: np.ndarray, span: int) -> float:
    a, y = 2 / (span + 1), x[-10 * span]
    for v in x[-10 * span + 1 :]:
        y = a * v + (1 - a) * y
    return y


def test_average_correlation_matches_pandas_pairwise_mean():
    m = np.random.default_rng(2).standard_normal((200, 4)) @ np.array(
        [[1, 0.5, 0.2, 0], [0, 1, 0.3, 0.1], [0, 0, 1, 0.4], [0, 0, 0, 1.0]]
    )
    avg, corr = average_correlation(m)
    c = pd.DataFrame(m).corr().to_numpy()
    assert avg == pytest.approx(c[np.triu_indices(4, 1)].mean(), rel=1e-12)
    np.testing.assert_allclose(corr, c, atol=1e-12)


def test_correlation_of_identical_series_is_one():
    lc = _walk(400, np.random.default_rng(3))
    universe = {LEADER: _candles(lc, LEADER), "B/USDT": _candles(lc + 1.0, "B/USDT")}  # same returns, other level
    res = THEORY(_ctx("B/USDT", universe))
    assert res.avg_correlation == pytest.approx(1.0, abs=1e-12)
    assert res.symbol_leader_correlation == pytest.approx(1.0, abs=1e-12)
    assert res.common_returns == 168 and res.n_correlated == 2


def test_correlation_of_independent_noise_is_near_zero():
    # 6 independent walks, 15 pairs over 4000 returns: each pair's sd is 1/sqrt(4000) = 0.016,
    # their mean's about 0.004; 0.02 is ~5 sd
    rng = np.random.default_rng(4)
    universe = {s: _candles(_walk(4200, rng), s) for s in [LEADER] + [f"S{k}/USDT" for k in range(5)]}
    res = THEORY(_ctx("S0/USDT", universe), {"corr_lookback": 4000})
    assert res.common_returns == 4000
    assert abs(res.avg_correlation) < 0.02
    assert abs(res.symbol_leader_correlation) < 0.06


def test_a_gap_in_one_symbol_does_not_misalign_the_others():
    # B has A's exact returns but misses bars 350-354; aligned by time the correlation stays exactly 1,
    # and the common times lose the 5 missing bars and the one return that spans the gap
    rng = np.random.default_rng(5)
    n = 400
    lc = _walk(n, rng)
    times = T0 + np.arange(n) * HOUR_MS
    keep = np.ones(n, dtype=bool)
    keep[350:355] = False
    a = _candles(lc, LEADER)
    b = _candles(lc[keep], "B/USDT", times[keep])
    assert len(b.gaps()) == 1
    t, m = aligned_returns([a.time, b.time], [a.close, b.close], HOUR_MS, int(times[-1]), 168)
    assert len(t) == 168 - 6
    assert not np.isin(times[350:356], t).any()
    np.testing.assert_allclose(m[:, 0], m[:, 1], atol=1e-15)
    res = THEORY(_ctx("B/USDT", {LEADER: a, "B/USDT": b}))
    assert res.avg_correlation == pytest.approx(1.0, abs=1e-12) and res.common_returns == 162
    # aligned by position instead, the shifted returns would be nearly uncorrelated
    ra, rb = np.diff(a.close[-169:]), np.diff(b.close[-169:])
    assert abs(np.corrcoef(ra, rb)[0, 1]) < 0.5


def test_a_symbol_with_a_different_history_length_aligns_by_time():
    rng = np.random.default_rng(6)
    lc = _walk(600, rng)
    listed_later = _candles(lc[-250:] + 0.5, "NEW/USDT", T0 + np.arange(350, 600) * HOUR_MS)
    universe = {LEADER: _candles(lc, LEADER), "NEW/USDT": listed_later}
    res = THEORY(_ctx("NEW/USDT", universe))
    assert res.symbol_leader_correlation == pytest.approx(1.0, abs=1e-12)


def _regime_of(candles: Candles):
    """The regime theory's own verdict on the same candles, for consistency checks."""
    at = candles.last_close_time
    ctx = TheoryContext(symbol=LEADER, at_ms=at, candles=candles.tail(500), history=candles)
    return REGIME.THEORY(ctx)


def test_a_rising_leader_is_in_a_bull_trend_by_the_regime_theorys_rules():
    # returns m +/- a alternately: steady drift, constant volatility, so no breakout; over the
    # regime's 48-bar trend lookback the move is 48 m against a noise of about a sqrt(48): z ~ 2.8 > 1.5
    m, a, n = 0.004, 0.01, 600
    r = m + a * np.tile([1.0, -1.0], n // 2)
    lead = _candles(np.log(100) + np.cumsum(r), LEADER)
    other = _candles(_walk(n, np.random.default_rng(7)), "B/USDT")
    res = THEORY(_ctx("B/USDT", {LEADER: lead, "B/USDT": other}))
    assert res.leader_return == pytest.approx(168 * m, rel=1e-9)
    own = _regime_of(lead)
    assert res.leader_regime == own.regime == "bull trend"
    assert res.leader_trend_score == pytest.approx(own.trend_score, rel=1e-12)
    assert res.leader_vol_percentile == pytest.approx(own.vol_percentile, rel=1e-12)
    assert res.leader_above_trend is True and "leader bull trend" in res.label


def test_a_falling_leader_in_a_volatility_burst_is_in_a_bear_trend():
    # drift -0.002 a bar; the last 24 bars swing +/-0.03 alternately (six times the noise): over the
    # 48-bar trend lookback the move is about -0.096 against a window noise of 0.0074 sqrt(48): z ~ -1.9
    rng = np.random.default_rng(8)
    r = -0.002 + 0.005 * rng.standard_normal(600)
    r[-24:] = -0.002 + 0.03 * np.tile([1.0, -1.0], 12)
    lead = _candles(np.log(100) + np.cumsum(r), LEADER)
    res = THEORY(_ctx(LEADER, {LEADER: lead, "B/USDT": _candles(_walk(600, rng), "B/USDT")}))
    assert res.leader_vol_percentile == 1.0
    assert res.leader_regime == _regime_of(lead).regime == "bear trend"
    assert res.symbol_is_leader and res.symbol_leader_correlation is None


def test_without_the_leader_the_leader_fields_are_empty_not_guessed():
    rng = np.random.default_rng(9)
    universe = {s: _candles(_walk(400, rng), s) for s in ("A/USDT", "B/USDT", "C/USDT")}
    res = THEORY(_ctx("A/USDT", universe))
    assert res.leader_regime is None and res.leader_trend_score is None and res.symbol_leader_correlation is None
    assert "leader unavailable" in res.label and "leader n/a" in res.summary()


def test_a_universe_of_only_the_symbol_is_an_error():
    a = _candles(_walk(400, np.random.default_rng(10)), "A/USDT")
    with pytest.raises(TheoryError, match="at least 2 symbols"):
        THEORY(_ctx("A/USDT", {"A/USDT": a}))


def test_a_stale_symbol_is_left_out_and_cannot_make_a_universe():
    rng = np.random.default_rng(11)
    a = _candles(_walk(400, rng), "A/USDT")
    stale = _candles(_walk(300, rng), "OLD/USDT")  # last candle 100 bars before the decision
    with pytest.raises(TheoryError, match="at least 2 symbols"):
        THEORY(_ctx("A/USDT", {"A/USDT": a, "OLD/USDT": stale}))
    b = _candles(_walk(400, rng), "B/USDT")
    res = THEORY(_ctx("A/USDT", {"A/USDT": a, "OLD/USDT": stale, "B/USDT": b}))
    assert res.n_symbols == 2 and res.n_excluded == 1


def test_a_symbol_that_never_moves_counts_in_breadth_but_not_in_correlation():
    rng = np.random.default_rng(12)
    universe = {s: _candles(_walk(400, rng), s) for s in (LEADER, "B/USDT")}
    universe["PEG/USDT"] = _candles(np.zeros(400), "PEG/USDT")
    res = THEORY(_ctx("B/USDT", universe))
    assert res.n_symbols == 3 and res.n_correlated == 2
    assert math.isfinite(res.avg_correlation)


def test_candles_after_the_decision_are_ignored_even_if_the_universe_holds_them():
    rng = np.random.default_rng(13)
    universe = {s: _candles(_walk(500, rng), s) for s in (LEADER, "B/USDT", "C/USDT")}
    at = int(universe[LEADER].close_time[399])
    cut = THEORY(_ctx("B/USDT", universe, at))
    own = universe["B/USDT"].closed_by(at)
    leaky = TheoryContext(symbol="B/USDT", at_ms=at, candles=own.tail(500), history=own, universe=universe,
                          leader=LEADER)
    assert THEORY(leaky) == cut


def test_the_symbol_joins_from_its_history_when_the_universe_lacks_it():
    rng = np.random.default_rng(14)
    a, lead = _candles(_walk(400, rng), "A/USDT"), _candles(_walk(400, rng), LEADER)
    ctx = TheoryContext(symbol="A/USDT", at_ms=a.last_close_time, candles=a.tail(300), history=a,
                        universe={LEADER: lead}, leader=LEADER)
    res = THEORY(ctx)
    assert res.n_symbols == 2 and res.symbol_leader_correlation is not None


def test_market_context_rejects_a_symbol_missing_from_its_members():
    with pytest.raises(TheoryError, match="not among the members"):
        market_context("A/USDT", {}, LEADER, T0, ContextParams())


def test_result_fields_never_name_a_ticker():
    names = " ".join(THEORY.result.model_fields)
    assert "btc" not in names.lower() and "leader" in names


def test_theory_runs_on_a_real_three_symbol_universe(shared_data):
    universe = {}
    for sym in ("BTC", "ETH", "SOL"):
        df = pd.read_csv(shared_data / "candles" / "binance-spot-1h" / f"{sym}_USDT.csv.gz").tail(2000)
        universe[f"{sym}/USDT"] = Candles(
            df.time.to_numpy(), df.open, df.high, df.low, df.close, df.volume, interval_ms=HOUR_MS,
            symbol=f"{sym}/USDT",
        )
    at = min(c.last_close_time for c in universe.values())
    universe = {s: c.closed_by(at) for s, c in universe.items()}
    eth = universe["ETH/USDT"]
    ctx = TheoryContext(symbol="ETH/USDT", at_ms=at, candles=eth.tail(500), history=eth, universe=universe)
    res = THEORY(ctx)
    assert res.n_symbols == 3 and res.n_above in (0, 1, 2, 3)
    assert res.n_correlated == 3 and res.common_returns >= 150
    assert 0.2 < res.avg_correlation < 1  # large coins move together, never perfectly
    assert 0.2 < res.symbol_leader_correlation < 1
    assert res.leader_regime and not res.symbol_is_leader
    assert "->" in res.summary()


def test_with_a_fit_cache_the_universe_part_is_computed_once_per_time_and_each_symbol_gets_the_same_answer():
    rng = np.random.default_rng(9)
    n = 700
    universe = {LEADER: _candles(_walk(n, rng), LEADER)}
    universe |= {f"S{k}/USDT": _candles(_walk(n, rng, 0.001 * (k - 2)), f"S{k}/USDT") for k in range(5)}
    universe["STALE/USDT"] = _candles(_walk(n - 100, rng), "STALE/USDT")  # left out: too old at both times
    cache = FitCache()

    def answer(ctx: TheoryContext):
        try:
            return THEORY.run(ctx, ContextParams())
        except TheoryError as exc:
            return str(exc)

    for at in (T0 + (n - 30) * HOUR_MS, T0 + n * HOUR_MS):
        for symbol in universe:
            ctx = _ctx(symbol, universe, at)
            assert answer(TheoryContext(**{**ctx.__dict__, "cache": cache})) == answer(ctx)
        assert "too little recent data" in answer(_ctx("STALE/USDT", universe, at))
    assert cache.misses == 2 and cache.hits == 2 * len(universe) - 2  # one universe computation per time


def test_the_context_cache_key_follows_the_candles_not_just_their_times():
    rng = np.random.default_rng(10)
    n = 600
    a = {s: _candles(_walk(n, rng), s) for s in (LEADER, "A/USDT", "B/USDT")}
    b = dict(a, **{"B/USDT": _candles(_walk(n, rng), "B/USDT")})  # same times, other prices
    cache, at = FitCache(), T0 + n * HOUR_MS
    first = market_context("A/USDT", a, LEADER, at, cache=cache)
    second = market_context("A/USDT", b, LEADER, at, cache=cache)
    assert cache.misses == 2
    assert second == market_context("A/USDT", b, LEADER, at) and second.avg_correlation != first.avg_correlation


def test_breadth_smooths_series_of_every_length_exactly_as_one_at_a_time():
    rng = np.random.default_rng(12)
    closes = [np.exp(_walk(n, rng, drift)) for n in (60, 200, 500, 500, 800, 800, 49) for drift in (-0.002, 0.002)]
    above = sum(bool(c[-500:][-1] > ema(c[-500:], 50)[-1]) for c in closes if len(c) >= 50)
    assert breadth(closes, 50) == (above, 12)


def test_returns_of_symbols_sharing_every_time_are_stacked_as_they_are():
    rng = np.random.default_rng(13)
    universe = [_candles(_walk(300, rng), s) for s in ("A/USDT", "B/USDT", "C/USDT")]
    end = int(universe[0].time[-1])
    times, matrix = aligned_returns([c.time for c in universe], [c.close for c in universe], HOUR_MS, end, 168)
    assert np.array_equal(times, universe[0].time[-168:])
    assert np.array_equal(matrix, np.column_stack([np.diff(np.log(c.close[-169:])) for c in universe]))


def test_the_context_cache_key_follows_the_leaders_highs_and_lows():
    rng = np.random.default_rng(14)
    n = 600
    a = {s: _candles(_walk(n, rng), s) for s in (LEADER, "A/USDT")}
    lead = a[LEADER]
    wider = Candles(lead.time, lead.open, lead.high * 1.01, lead.low * 0.99, lead.close, lead.volume,
                    interval_ms=HOUR_MS, symbol=LEADER)  # same closes: only the regime's range inputs differ
    cache, at = FitCache(), T0 + n * HOUR_MS
    market_context("A/USDT", a, LEADER, at, cache=cache)
    market_context("A/USDT", {**a, LEADER: wider}, LEADER, at, cache=cache)
    assert cache.misses == 2


def test_the_remembered_universe_key_is_the_digest_of_exactly_the_views_given():
    from theories.context import _digest, _universe_key

    rng = np.random.default_rng(15)
    full = {s: _candles(_walk(700, rng), s) for s in (LEADER, "A/USDT", "B/USDT")}
    p = ContextParams()

    def direct(cut):
        return tuple((s, c.interval_ms, len(c), c.last_close_time, _digest(c, s == LEADER, p)) for s, c in cut.items())

    for hours in (650, 650, 651, 700):  # fresh views of one hour twice, then other hours
        cut = {s: c.closed_by(T0 + hours * HOUR_MS) for s, c in full.items()}
        assert _universe_key(cut, LEADER, p) == direct(cut)
    other = {**full, "B/USDT": _candles(_walk(700, rng), "B/USDT")}  # same shape, other candles
    assert _universe_key(other, LEADER, p) == direct(other) != direct(full)
