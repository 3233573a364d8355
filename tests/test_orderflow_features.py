"""Order-flow features: known answers for OFI, depth, microprice, market-order cost, trade flow and
the volume profile, and properties of the book against a plain reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.signal import find_peaks

from agent.market import load_candle_file
from orderflow.book import BookDataError, OrderBook
from orderflow.features import (
    RollingOFI,
    depth_imbalance,
    market_order_cost,
    microprice,
    ofi_contribution,
    order_flow_imbalance,
    spread_bps,
    walk_book,
)
from orderflow.snapshot import build_orderflow_snapshot
from orderflow.trades import (
    Trades,
    aggressor_buy_share,
    candles_from_trades,
    cumulative_volume_delta,
    large_trades,
    vwap,
)
from orderflow.volume_profile import (
    VolumeProfileParams,
    _grow_value_area,
    gaussian_weights,
    profile_histogram,
    prominent_peaks,
    value_area,
    volume_profile,
)
from theories.candles import Candles

PREV = (100.0, 5.0, 101.0, 7.0)  # bid, bid size, ask, ask size


@pytest.mark.parametrize(
    ("case", "new", "expected"),
    [
        ("bid price up: the new bid size is added", (100.5, 3.0, 101.0, 7.0), 3.0),
        ("bid price unchanged: the size change counts", (100.0, 8.0, 101.0, 7.0), 3.0),
        ("bid price down: the old bid size is removed", (99.5, 4.0, 101.0, 7.0), -5.0),
        ("ask price down: the new ask size is selling pressure", (100.0, 5.0, 100.8, 2.0), -2.0),
        ("ask price unchanged: the size change counts, negated", (100.0, 5.0, 101.0, 10.0), -3.0),
        ("ask price up: the old ask size is removed, buying pressure", (100.0, 5.0, 101.5, 6.0), 7.0),
    ],
)
def test_ofi_contribution_matches_cont_kukanov_stoikov_in_all_six_cases(case, new, expected):
    assert ofi_contribution(*PREV, *new) == pytest.approx(expected), case


def test_ofi_over_a_window_sums_the_events_and_normalises_by_mean_depth():
    tops = np.array([PREV, (100.5, 3.0, 101.0, 7.0), (100.5, 3.0, 100.8, 2.0)])
    ofi, norm = order_flow_imbalance(tops)
    assert ofi == pytest.approx(3.0 - 2.0)
    mean_depth = np.mean([(5 + 7) / 2, (3 + 7) / 2, (3 + 2) / 2])
    assert norm == pytest.approx(1.0 / mean_depth)


def test_rolling_ofi_equals_the_batch_sum_and_forgets_events_older_than_the_window():
    rng = np.random.default_rng(7)
    tops = np.column_stack([
        100 + rng.integers(-2, 3, 200) * 0.5, rng.uniform(1, 5, 200), 102 + rng.integers(-2, 3, 200) * 0.5,
        rng.uniform(1, 5, 200),
    ])
    roll = RollingOFI(window_ms=50_000)
    for i, row in enumerate(tops):
        roll.update(i * 1000, *row)
    batch, _ = order_flow_imbalance(tops[-51:])  # events at t in (199000 - 50000, 199000]: the last 50 pairs
    assert roll.events == 50
    assert roll.ofi == pytest.approx(batch)


def test_microprice_leans_toward_the_ask_when_the_bid_is_heavier():
    assert microprice(100.0, 3.0, 101.0, 1.0) == pytest.approx(100.75)
    assert microprice(100.0, 1.0, 101.0, 1.0) == pytest.approx(100.5)


def test_spread_in_bps_of_the_mid():
    assert spread_bps(99.95, 100.05) == pytest.approx(10.0)


def book_from(bids, asks) -> OrderBook:
    book = OrderBook("TEST")
    book.load_snapshot(bids, asks)
    return book


def test_book_keeps_levels_sorted_and_zero_deletes_a_level():
    book = book_from([["99", "1"], ["100", "2"], ["98", "3"]], [["102", "1"], ["101", "4"]])
    assert book.top() == (100.0, 2.0, 101.0, 4.0)
    book.apply([["100", "0"], ["97", "0"]], [["101", "1.5"]])  # 97 was absent: deleting it is legal
    assert book.levels(True) == [(99.0, 1.0), (98.0, 3.0)]
    assert book.levels(False, 1) == [(101.0, 1.5)]
    assert book.mid() == pytest.approx(100.0) and book.spread() == pytest.approx(2.0)


def test_a_bad_level_is_rejected_and_leaves_the_book_untouched():
    book = book_from([["100", "1"]], [["101", "1"]])
    for bad in ([["100.5", "abc"]], [["100.5", "-1"]], [["nan", "1"]], [["100.5"]]):
        with pytest.raises(BookDataError):
            book.apply(bad, [["101", "9"]])
        assert book.top() == (100.0, 1.0, 101.0, 1.0)


def test_crossed_and_locked_books_are_flagged():
    assert book_from([["101", "1"]], [["101", "1"]]).is_crossed()
    assert book_from([["102", "1"]], [["101", "1"]]).is_crossed()
    assert not book_from([["100", "1"]], [["101", "1"]]).is_crossed()


def test_depth_and_imbalance_over_top_levels_and_within_bps():
    book = book_from([["99.9", "1"], ["99.8", "2"], ["99.0", "10"]], [["100.1", "3"], ["101.0", "5"]])
    assert book.depth(True, 2) == pytest.approx(3.0)
    assert depth_imbalance(book, levels=2) == pytest.approx((3 - 8) / 11)
    # mid 100: 25 bps reaches 99.75 / 100.25
    assert book.depth(True, within_bps=25) == pytest.approx(3.0)
    assert book.depth(False, within_bps=25) == pytest.approx(3.0)
    assert depth_imbalance(book, within_bps=25) == pytest.approx(0.0)


def test_walking_the_book_gives_average_price_impact_and_slippage():
    asks = [(101.0, 1.0), (102.0, 1.0), (104.0, 10.0)]
    cost = walk_book(asks, 3.0, mid=100.0)
    assert cost.complete
    assert cost.average_price == pytest.approx((101 + 102 + 104) / 3)
    assert cost.worst_price == 104.0
    assert cost.impact == pytest.approx(0.04)
    assert cost.slippage == pytest.approx(((101 + 102 + 104) / 3 - 101) / 101)
    thin = walk_book(asks, 20.0, mid=100.0)
    assert not thin.complete and thin.filled == pytest.approx(12.0)


def test_market_sell_walks_the_bids_from_the_best():
    book = book_from([["99", "1"], ["98", "1"]], [["101", "1"]])
    cost = market_order_cost(book, 1.5, buy=False)
    assert cost.average_price == pytest.approx((99 + 0.5 * 98) / 1.5)
    assert cost.worst_price == 98.0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(1, 60), st.sampled_from([0, 0, 1, 2, 3.5])), max_size=80))
def test_book_matches_a_plain_dict_reference_after_any_updates(updates):
    book, ref = OrderBook(), {True: {}, False: {}}
    for is_bid, tick, size in updates:
        price = tick * 0.5
        (book.apply([[price, size]], []) if is_bid else book.apply([], [[price, size]]))
        if size:
            ref[is_bid][price] = float(size)
        else:
            ref[is_bid].pop(price, None)
    assert book.levels(True) == sorted(ref[True].items(), reverse=True)
    assert book.levels(False) == sorted(ref[False].items())


# a message: bid levels and ask levels as [price string, size string], prices on a 0.5 grid so
# both sides overlap (crossed states happen) and a price can repeat inside one message
_LEVEL = st.tuples(st.integers(1, 60), st.sampled_from(["0", "0.000", "1", "2", "3.5", "0.125"]))
_MESSAGE = st.tuples(st.lists(_LEVEL, max_size=8), st.lists(_LEVEL, max_size=8))


def _reference_apply(ref: dict, is_bid: bool, levels) -> None:
    for tick, size in levels:
        if float(size):
            ref[is_bid][tick * 0.5] = float(size)
        else:
            ref[is_bid].pop(tick * 0.5, None)


def _as_wire(levels) -> list[list[str]]:
    return [[repr(tick * 0.5), size] for tick, size in levels]


@settings(max_examples=150, deadline=None)
@given(
    st.lists(_LEVEL, max_size=30), st.lists(_LEVEL, max_size=30), st.lists(_MESSAGE, max_size=40),
    st.integers(0, 12), st.floats(0.0, 5000.0), st.floats(0.25, 40.0),
)
def test_every_book_reading_matches_a_plain_dict_reference_after_snapshot_and_multi_level_messages(
    snap_bids, snap_asks, messages, n, bps, order_size
):
    """The sorted-list book against a dict-only book, message by message, through every reader."""
    book, ref = OrderBook(), {True: {}, False: {}}
    book.load_snapshot(_as_wire(snap_bids), _as_wire(snap_asks))
    _reference_apply(ref, True, snap_bids)
    _reference_apply(ref, False, snap_asks)
    for bids, asks in [((), ()), *messages]:
        assert book.apply(_as_wire(bids), _as_wire(asks)) == len(bids) + len(asks)
        _reference_apply(ref, True, bids)
        _reference_apply(ref, False, asks)
        want_bids = sorted(ref[True].items(), reverse=True)
        want_asks = sorted(ref[False].items())
        assert book.levels(True) == want_bids and book.levels(False) == want_asks
        assert list(book.iter_levels(True)) == want_bids and list(book.iter_levels(False)) == want_asks
        assert book.levels(True, n) == want_bids[:n] and book.levels(False, n) == want_asks[:n]
        assert book.prices(False, n) == [p for p, _ in want_asks[:n]]
        assert book.best_bid() == (want_bids[0] if want_bids else None)
        assert book.best_ask() == (want_asks[0] if want_asks else None)
        assert len(book) == len(want_bids) + len(want_asks)
        # depth sums in ascending price order, exactly as the reference does here
        assert book.depth(True, n) == sum(q for _, q in sorted(want_bids[:n]))
        assert book.depth(False, n) == sum(q for _, q in want_asks[:n])
        assert book.depth(True) == sum(q for _, q in sorted(want_bids))
        assert book.depth(False) == sum(q for _, q in want_asks)
        if not (want_bids and want_asks):
            assert book.top() is None and book.mid() is None and not book.is_crossed()
            assert book.levels_within(True, bps) == [] and market_order_cost(book, order_size, True) is None
            continue
        assert book.top() == (*want_bids[0], *want_asks[0])
        assert book.is_crossed() == (want_bids[0][0] >= want_asks[0][0])
        mid = (want_bids[0][0] + want_asks[0][0]) / 2.0
        assert book.levels_within(True, bps) == [(p, q) for p, q in want_bids if p >= mid * (1.0 - bps / 1e4)]
        assert book.levels_within(False, bps) == [(p, q) for p, q in want_asks if p <= mid * (1.0 + bps / 1e4)]
        assert market_order_cost(book, order_size, True) == walk_book(want_asks, order_size, mid)
        assert market_order_cost(book, order_size, False) == walk_book(want_bids, order_size, mid)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(1, 60), st.sampled_from([0, 0, 1, 2, 3.5])), max_size=80))
def test_set_level_matches_a_plain_dict_reference(updates):
    book, ref = OrderBook(), {True: {}, False: {}}
    for is_bid, tick, size in updates:
        book.set_level(is_bid, tick * 0.5, float(size))
        _reference_apply(ref, is_bid, [(tick, str(size))])
    assert book.levels(True) == sorted(ref[True].items(), reverse=True)
    assert book.levels(False) == sorted(ref[False].items())


def test_infinite_and_overflowing_numbers_are_rejected_and_leave_the_book_untouched():
    book = book_from([["100", "1"]], [["101", "1"]])
    for bad in ([["inf", "1"]], [["100.5", "1e999"]], [["100.5", "-inf"]], [["0", "1"]], [[None, "1"]], ["1"]):
        with pytest.raises(BookDataError):
            book.apply([["99", "2"]], bad)
        assert book.levels(True) == [(100.0, 1.0)] and book.levels(False) == [(101.0, 1.0)]


# --- trades -------------------------------------------------------------------------------------------

TRADES = Trades.from_lists([1, 2, 3, 4], [100, 101, 102, 101], [1.0, 3.0, 2.0, 4.0], [1, -1, 1, -1])


def test_aggressor_share_cvd_and_vwap_known_answers():
    assert aggressor_buy_share(TRADES) == pytest.approx(3 / 10)
    assert cumulative_volume_delta(TRADES).tolist() == [1.0, -2.0, 0.0, -4.0]
    assert vwap(TRADES) == pytest.approx((100 + 303 + 204 + 404) / 10)


def test_large_trades_are_judged_against_past_sizes_only():
    sizes = [1.0] * 100 + [50.0] + [1.0] * 10 + [50.0]
    tr = Trades.from_lists(range(len(sizes)), [100.0] * len(sizes), sizes, [1] * len(sizes))
    assert large_trades(tr, lookback=50, quantile=0.99).tolist() == [100, 111]
    assert large_trades(tr, lookback=50, quantile=0.99, min_history=200).tolist() == []


def test_trades_reject_bad_sides_and_prices():
    with pytest.raises(ValueError, match="side"):
        Trades.from_lists([1], [100], [1], [0])
    with pytest.raises(ValueError, match="price"):
        Trades.from_lists([1], [-1], [1], [1])


def test_candles_from_trades_are_ohlcv_per_interval():
    t0 = 1_700_000_040_000  # a whole minute
    times = [t0 + dt for dt in (0, 10, 59_999, 60_000, 120_500)]
    tr = Trades.from_lists(times, [10, 12, 11, 9, 8], [1, 2, 3, 4, 5], [1, 1, -1, 1, -1])
    c = candles_from_trades(tr, 60_000)
    assert c.time.tolist() == [t0, t0 + 60_000, t0 + 120_000]
    assert c.open.tolist() == [10, 9, 8] and c.high.tolist() == [12, 9, 8]
    assert c.low.tolist() == [10, 9, 8] and c.close.tolist() == [11, 9, 8]
    assert c.volume.tolist() == [6, 4, 5]


# --- volume profile ---------------------------------------------------------------------------------


def two_peak_candles() -> Candles:
    """Narrow bars at 100 (heavy) and 110 (lighter), and a few wide light bars across 99-111."""
    close = np.array([100.0] * 30 + [105.0] * 4 + [110.0] * 20)
    high = np.r_[np.full(30, 100.4), np.full(4, 111.0), np.full(20, 110.4)]
    low = np.r_[np.full(30, 99.6), np.full(4, 99.0), np.full(20, 109.6)]
    volume = np.r_[np.full(30, 10.0), np.full(4, 5.0), np.full(20, 8.0)]
    return Candles(np.arange(len(close)) * 3_600_000 + 1_700_000_000_000, close, high, low, close, volume)


def test_volume_profile_of_two_peaks_finds_poc_value_area_and_nodes():
    vp = volume_profile(two_peak_candles(), VolumeProfileParams(bins=40, smoothing_bins=1.0))
    assert vp.poc == pytest.approx(100.0, abs=0.5)
    assert vp.value_area_low <= 100.0 <= vp.value_area_high
    assert vp.value_area_share >= 0.7
    assert len(vp.high_volume_nodes) == 2
    assert vp.high_volume_nodes[0] == pytest.approx(100.0, abs=0.5)
    assert vp.high_volume_nodes[1] == pytest.approx(110.0, abs=0.5)
    assert len(vp.low_volume_nodes) == 1 and 101 < vp.low_volume_nodes[0] < 109
    inside = vp.value_area_low <= vp.last_price <= vp.value_area_high
    assert vp.position == ("inside value area" if inside else "above value area")
    assert vp.nearest_hvn == pytest.approx(110.0, abs=0.5)


def test_value_area_grows_from_the_poc_toward_the_larger_neighbour():
    hist = np.array([1.0, 2.0, 10.0, 4.0, 3.0, 1.0])
    assert value_area(hist, 2, 0.7) == (2, 4)  # 10, then 4 (> 2), then 3 (> 2): 17 / 21 >= 0.7
    assert value_area(hist, 2, 0.5) == (2, 3)


def _value_area_in_python(hist, poc, share):
    """The compiled loop's own source run by Python over Python floats: what the compiled `value_area` must give."""
    lo, hi = _grow_value_area.py_func(hist.tolist(), poc, share * hist.sum())
    return int(lo), int(hi)


def test_value_area_is_the_plain_loop_on_random_and_tied_profiles():
    rng = np.random.default_rng(5)
    for k in range(300):
        hist = rng.exponential(1.0, rng.integers(1, 60))
        if k % 3 == 0:
            hist = np.round(hist)  # ties and empty bins
        for poc in {0, int(np.argmax(hist)), len(hist) - 1}:
            for share in (0.01, 0.5, 0.7, 0.999999):
                assert value_area(hist, poc, share) == _value_area_in_python(hist, poc, share)


def test_volume_profile_conserves_volume_across_bins():
    vp = volume_profile(two_peak_candles())
    assert vp.total_volume == pytest.approx(30 * 10 + 4 * 5 + 20 * 8)


def test_snapshot_without_a_book_still_has_the_profile_and_marks_the_rest_unavailable():
    snap = build_orderflow_snapshot(two_peak_candles())
    assert snap.volume_profile is not None
    assert snap.book is None and snap.trade_flow is None
    assert set(snap.unavailable) == {"book", "trade_flow"}
    assert "unavailable" in snap.summary()


def test_snapshot_with_a_book_and_trades_fills_every_part():
    book = book_from([["99.9", "2"], ["99.8", "2"]], [["100.1", "1"], ["100.2", "1"]])
    ofi = RollingOFI()
    ofi.update(0, 99.9, 1.0, 100.1, 1.0)
    ofi.update(1, 99.9, 2.0, 100.1, 1.0)
    snap = build_orderflow_snapshot(two_peak_candles(), book=book, ofi=ofi, book_time_ms=1, trades=TRADES)
    assert snap.unavailable == {}
    assert snap.book.ofi == pytest.approx(1.0)
    assert snap.book.microprice == pytest.approx((100.1 * 2 + 99.9 * 1) / 3)
    assert snap.book.buy_impact == pytest.approx((100.1 - 100.0) / 100.0)
    assert snap.trade_flow.buy_share == pytest.approx(0.3)
    again = type(snap).model_validate_json(snap.model_dump_json())
    assert again == snap


def test_unsynced_book_is_unavailable_not_zero():
    book = book_from([["99.9", "2"]], [["100.1", "1"]])
    snap = build_orderflow_snapshot(None, book=book, book_synced=False)
    assert snap.book is None and "not in sync" in snap.unavailable["book"]
    assert not math.isnan(len(snap.unavailable))


def test_vectorised_large_trade_detection_matches_the_definition_trade_by_trade():
    rng = np.random.default_rng(11)
    sizes = rng.lognormal(0, 1, 3000)
    tr = Trades.from_lists(np.arange(3000), np.full(3000, 100.0), sizes, np.ones(3000))
    expected = [i for i in range(20, 3000) if sizes[i] > np.quantile(sizes[max(0, i - 200): i], 0.95)]
    assert large_trades(tr, lookback=200, quantile=0.95, min_history=20).tolist() == expected


def dense_profile_histogram(low, high, volume, edges):
    """The plain form: a bars x bins matrix of overlap shares, summed over the bars."""
    overlap = np.clip(np.minimum(high[:, None], edges[None, 1:]) - np.maximum(low[:, None], edges[None, :-1]), 0, None)
    span = (high - low)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        weights = np.where(span > 0, overlap / span, 0.0)
    flat = np.flatnonzero(span[:, 0] <= 0)
    weights[flat, np.clip(np.searchsorted(edges, low[flat], side="right") - 1, 0, len(edges) - 2)] = 1.0
    return (weights * volume[:, None]).sum(axis=0)


def test_profile_histogram_equals_the_dense_bars_by_bins_sum_bit_for_bit(shared_data):
    c = load_candle_file(shared_data / "candles" / "binance-spot-1h" / "DOGE_USDT.csv.gz")
    for end in range(500, len(c), 211):
        low, high, vol = c.low[end - 500 : end], c.high[end - 500 : end], c.volume[end - 500 : end]
        edges = np.linspace(low.min(), high.max(), 51)
        assert np.array_equal(profile_histogram(low, high, vol, edges), dense_profile_histogram(low, high, vol, edges))


def test_profile_histogram_handles_flat_bars_bars_on_edges_and_bars_outside_the_edges():
    rng = np.random.default_rng(8)
    for _ in range(300):
        m = int(rng.integers(2, 40))
        low = np.round(rng.uniform(1, 2, m), 1)  # coarse prices: many bars start or end exactly on an edge
        high = low + np.where(rng.random(m) < 0.3, 0.0, np.round(rng.uniform(0, 0.5, m), 1))
        vol = rng.uniform(0, 10, m)
        edges = np.linspace(rng.choice([low.min(), 1.3]), rng.choice([high.max(), 2.2]), int(rng.integers(6, 40)))
        assert np.array_equal(profile_histogram(low, high, vol, edges), dense_profile_histogram(low, high, vol, edges))


def test_prominent_peaks_are_scipys_find_peaks_with_a_prominence():
    rng = np.random.default_rng(9)
    for _ in range(3000):
        n = int(rng.integers(0, 60))
        # few distinct levels: flat runs (plateaus) of every length, at the ends too, and equal neighbours
        x = np.round(rng.uniform(0, 1, n) * rng.choice([3, 10, 1000]), 0) / 10
        for prominence in (0.1, 0.05, 0.3):
            for y in (x, -x):
                assert np.array_equal(prominent_peaks(y, prominence), find_peaks(y, prominence=prominence)[0])


def test_prominent_peaks_are_scipys_on_real_smoothed_profiles(shared_data):
    from scipy.ndimage import gaussian_filter1d

    c = load_candle_file(shared_data / "candles" / "binance-spot-1h" / "ETH_USDT.csv.gz")
    for end in range(500, len(c), 97):
        low, high, vol = c.low[end - 500 : end], c.high[end - 500 : end], c.volume[end - 500 : end]
        smooth = gaussian_filter1d(profile_histogram(low, high, vol, np.linspace(low.min(), high.max(), 51)), 1.5,
                                   mode="constant")
        smooth = np.round(smooth / smooth.max(), 9)
        for y in (smooth, -smooth):
            assert np.array_equal(prominent_peaks(y, 0.1), find_peaks(y, prominence=0.1)[0])


def test_smoothing_with_the_remembered_kernel_is_gaussian_filter1d_to_the_bit(shared_data):
    from scipy.ndimage import correlate1d, gaussian_filter1d

    c = load_candle_file(shared_data / "candles" / "binance-spot-1h" / "BTC_USDT.csv.gz")
    for end in range(500, len(c), 503):
        low, high, vol = c.low[end - 500 : end], c.high[end - 500 : end], c.volume[end - 500 : end]
        hist = profile_histogram(low, high, vol, np.linspace(low.min(), high.max(), 51))
        for sigma in (1.5, 0.7, 3.0):
            assert np.array_equal(correlate1d(hist, gaussian_weights(sigma), mode="constant"),
                                  gaussian_filter1d(hist, sigma, mode="constant"))
