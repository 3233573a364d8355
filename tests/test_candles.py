import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from theories.candles import HOUR_MS, CandleDataError, Candles, Gap

T0 = 1_700_000_000_000 - 1_700_000_000_000 % HOUR_MS


def make(n=5, times=None, **override):
    t = np.asarray(times if times is not None else T0 + HOUR_MS * np.arange(n))
    n = len(t)
    cols = dict(open=np.full(n, 10.0), high=np.full(n, 11.0), low=np.full(n, 9.0), close=np.full(n, 10.5),
                volume=np.full(n, 3.0))
    for k, v in override.items():
        cols[k] = np.asarray(v, dtype=float)
    return Candles(t, cols["open"], cols["high"], cols["low"], cols["close"], cols["volume"], source="unit.csv")


@pytest.mark.parametrize(
    ("column", "values", "row", "rule"),
    [
        ("high", [11, 11, 10.2, 11, 11], 3, "high must be >= max(open, close)"),
        ("low", [9, 9, 9, 10.4, 9], 4, "low must be <= min(open, close)"),
        ("close", [10.5, np.nan, 10.5, 10.5, 10.5], 2, "close must be a finite positive price"),
        ("open", [10, 10, 10, 10, -1], 5, "open must be a finite positive price"),
        ("volume", [1, 1, -0.5, 1, 1], 3, "volume must be finite and non-negative"),
        ("volume", [1, np.inf, 1, 1, 1], 2, "volume must be finite and non-negative"),
    ],
)
def test_bad_rows_name_the_source_row_and_rule(column, values, row, rule):
    with pytest.raises(CandleDataError) as err:
        make(**{column: values})
    assert err.value.row == row and err.value.rule == rule
    assert str(err.value).startswith(f"unit.csv row {row}: {rule}")


def test_times_must_strictly_increase():
    t = T0 + HOUR_MS * np.array([0, 1, 1, 2])
    with pytest.raises(CandleDataError, match="row 3: times must be strictly increasing"):
        make(times=t)
    with pytest.raises(CandleDataError, match="row 2: times must be strictly increasing"):
        make(times=T0 + HOUR_MS * np.array([1, 0, 2]))


def test_times_off_the_candle_grid_are_rejected():
    t = T0 + np.array([0, HOUR_MS, 2 * HOUR_MS, 2 * HOUR_MS + 1_800_000, 4 * HOUR_MS])
    with pytest.raises(CandleDataError, match="row 4: times must lie on the 3600000 ms candle grid"):
        make(times=t)


def test_gaps_are_reported_not_filled():
    t = T0 + HOUR_MS * np.array([0, 1, 2, 5, 6, 9])
    c = make(times=t)
    assert c.interval_ms == HOUR_MS  # inferred from the most common step, not the gaps
    assert len(c) == 6
    assert c.gaps() == [Gap(after_time=int(t[2]), missing=2), Gap(after_time=int(t[4]), missing=2)]


def test_closed_by_keeps_only_candles_closed_at_that_time():
    c = make(n=10)
    cut = c.closed_by(T0 + 3 * HOUR_MS)  # candles opened at 0, 1, 2 have closed; the one at 3 just opened
    assert len(cut) == 3 and cut.last_close_time == T0 + 3 * HOUR_MS
    assert len(c.closed_by(T0 + 3 * HOUR_MS - 1)) == 2
    assert len(c.closed_by(T0)) == 0


@given(st.integers(min_value=T0 - 2 * HOUR_MS, max_value=T0 + 30 * HOUR_MS))
def test_closed_by_never_includes_an_open_candle(at):
    c = make(n=24)
    cut = c.closed_by(at)
    assert (cut.close_time <= at).all()
    if len(cut) < len(c):
        assert c.close_time[len(cut)] > at


def test_candles_are_immutable():
    c = make()
    with pytest.raises(ValueError):
        c.close[0] = 1.0
    with pytest.raises(AttributeError):
        c.symbol = "X"


def test_float_times_must_be_whole_milliseconds():
    with pytest.raises(CandleDataError, match="row 2: time must be whole epoch milliseconds"):
        make(times=np.array([T0, T0 + 0.5, T0 + 2 * HOUR_MS], dtype=float))


def test_unequal_columns_are_rejected():
    with pytest.raises(CandleDataError, match="equal length"):
        Candles([T0, T0 + HOUR_MS], [1, 1], [1, 1], [1, 1], [1, 1], [1])


def test_log_returns_and_bars_per_year():
    c = make(n=3, close=[10, 11, 12.1], high=[12.2] * 3)
    assert np.allclose(c.log_returns(), np.log([1.1, 1.1]))
    assert c.bars_per_year == 24 * 365


def _broken_variants(c: Candles):
    """Columns of `c`, then copies each broken one way: every rule `Candles` checks, at a few rows."""
    base = {k: np.array(getattr(c, k)) for k in ("time", "open", "high", "low", "close", "volume")}
    yield base
    n = len(c)
    for row in (0, n // 2, n - 1):
        for column in ("open", "high", "low", "close", "volume"):
            for bad in (np.nan, np.inf, -np.inf, -1.0) + ((0.0,) if column != "volume" else ()):
                cols = {k: v.copy() for k, v in base.items()}
                cols[column][row] = bad
                yield cols
        cols = {k: v.copy() for k, v in base.items()}
        cols["high"][row] = np.nextafter(max(cols["open"][row], cols["close"][row]), 0)  # just below the body
        yield cols
        cols = {k: v.copy() for k, v in base.items()}
        cols["low"][row] = np.nextafter(min(cols["open"][row], cols["close"][row]), np.inf)  # just above it
        yield cols
        for t in (cols["time"][row - 1] if row else cols["time"][1], 1_600_000_000, 5_000_000_000_000):
            cols = {k: v.copy() for k, v in base.items()}
            cols["time"][row] = t  # a repeated or backward time, seconds, after 2100
            yield cols
    # times whose steps overflow int64 into positive ones: increasing-looking, far out of range
    cols = {k: v[:4].copy() for k, v in base.items()}
    cols["time"][:] = [base["time"][0], 9_000_000_000_000_000_000, -9_000_000_000_000_000_000, base["time"][3]]
    yield cols


def test_the_quick_validity_test_passes_exactly_what_the_rule_by_rule_validation_passes(shared_data):
    from agent.market.loaders import load_candles
    from theories.candles import _valid, _validate
    from theories.timeframes import resample

    btc = load_candles(shared_data / "candles" / "binance-spot-1h", ["BTC/USDT"])["BTC/USDT"]
    checked = failed = 0
    for c in (btc.tail(500), resample(btc.tail(2000), 4 * HOUR_MS)):
        for cols in _broken_variants(c):
            t = cols["time"]
            try:
                _validate(cols, "x")
                ok = True
            except CandleDataError:
                ok = False
            assert _valid(cols, t[1:] - t[:-1]) == ok
            checked += 1
            failed += not ok
    assert failed == checked - 2  # every variant but the two real series breaks a rule


def test_views_hold_the_cut_columns_and_their_origin():
    c = make(40)
    for view, sl in ((c.tail(7), slice(33, 40)), (c.closed_by(T0 + 20 * HOUR_MS), slice(0, 20)),
                     (c.closed_by(T0 + 20 * HOUR_MS).tail(5), slice(15, 20))):
        for name in ("time", "open", "high", "low", "close", "volume"):
            np.testing.assert_array_equal(getattr(view, name), getattr(c, name)[sl])
        assert (view.interval_ms, view.symbol, view.source, view.origin) == (c.interval_ms, c.symbol, c.source,
                                                                              (c, sl.start))


def test_repeated_cuts_share_one_view_and_stay_exact():
    c = make(40)
    assert c.tail(40) is c and c.tail(99) is c  # the whole: no new view
    assert c.closed_by(T0 + 40 * HOUR_MS) is c  # nothing to cut
    first = c.closed_by(T0 + 20 * HOUR_MS)
    assert c.closed_by(T0 + 20 * HOUR_MS) is first and first.tail(5) is first.tail(5)
    # more distinct views than the memo keeps: each is still exactly the slice asked for
    for k in range(1, 3 * 8):
        for view, sl in ((c.tail(k), slice(40 - k, 40)), (c.closed_by(T0 + k * HOUR_MS), slice(0, k))):
            np.testing.assert_array_equal(view.close, c.close[sl])
            np.testing.assert_array_equal(view.time, c.time[sl])
            assert view.origin == (c, sl.start)
    assert len(c._views) <= 8


def test_gaps_quick_answer_agrees_with_the_step_by_step_count(shared_data):
    """`gaps()` answers [] from the span alone; on real windows, with and without gaps, it matches a plain diff."""
    from agent.market.loaders import load_candles

    def plain(c):
        steps = np.diff(c.time) // c.interval_ms
        return [Gap(after_time=int(c.time[i]), missing=int(steps[i] - 1)) for i in np.flatnonzero(steps > 1)]

    universe = load_candles(shared_data / "candles" / "binance-spot-1h")
    with_gaps = 0
    for c in universe.values():
        for end in range(500, len(c), 97):
            window = c.closed_by(int(c.time[end])).tail(500)
            assert window.gaps() == plain(window)
            with_gaps += bool(plain(window))
    assert with_gaps  # the real data has outages: both answers were exercised
    t = T0 + HOUR_MS * np.array([0, 1, 2, 5, 6, 9])
    c = make(times=t)
    assert c.closed_by(T0 + 3 * HOUR_MS).gaps() == [] and c.closed_by(T0 + 6 * HOUR_MS).gaps() == [Gap(int(t[2]), 2)]
