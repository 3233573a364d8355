"""Book synchronisation rules (Binance spot and futures, Coinbase level2) and the recording formats."""

from __future__ import annotations

import gzip
import json

import pytest

from orderflow.binance_feed import BinanceFeed
from orderflow.binance_sync import BinanceBookSync, DepthEvent, DepthSnapshot
from orderflow.coinbase_sync import CoinbaseL2Feed
from orderflow.recording import CONNECT, REST, SENT, WS, RecordingError, parse_line, read_recording

SNAP = DepthSnapshot(100, [["99", "1"], ["98", "2"]], [["101", "1"], ["102", "2"]])


def spot(first, last, bids=(), asks=()):
    return DepthEvent(first, last, None, [list(b) for b in bids], [list(a) for a in asks], 0)


def fut(first, last, prev, bids=(), asks=()):
    return DepthEvent(first, last, prev, [list(b) for b in bids], [list(a) for a in asks], 0)


def test_spot_sync_drops_events_in_the_snapshot_and_needs_the_first_to_straddle():
    s = BinanceBookSync("X")
    assert s.needs_snapshot
    for ev in (spot(90, 95), spot(96, 100), spot(101, 103, bids=[("99.5", "1")]), spot(104, 104)):
        s.on_event(ev)
    s.on_snapshot(SNAP)
    assert s.synced and s.last_update_id == 104
    assert s.stats.stale_dropped == 2 and s.stats.applied_events == 2
    assert s.book.best_bid() == (99.5, 1.0)


def test_spot_sync_rejects_a_snapshot_older_than_every_buffered_event():
    s = BinanceBookSync("X")
    s.on_event(spot(105, 110))
    s.on_snapshot(SNAP)  # L + 1 = 101 < U = 105: events 101..104 are lost
    assert not s.synced and s.needs_snapshot
    assert s.stats.stale_snapshots == 1 and s.stats.resyncs == 1


def test_spot_gap_forces_a_counted_resync_and_the_next_snapshot_recovers():
    s = BinanceBookSync("X")
    s.on_snapshot(SNAP)
    assert s.on_event(spot(101, 102))
    assert not s.on_event(spot(104, 105))  # 103 is missing
    assert s.stats.gaps == 1 and s.stats.resyncs == 1 and s.needs_snapshot and len(s.book) == 0
    s.on_event(spot(106, 107))
    s.on_snapshot(DepthSnapshot(105, [["99", "1"]], [["101", "1"]]))
    assert s.synced and s.last_update_id == 107


def test_futures_sync_links_events_by_pu_not_by_consecutive_ids():
    s = BinanceBookSync("X")
    s.on_event(fut(95, 100, 90))  # u == L: futures keep it (U <= L <= u)
    s.on_event(fut(150, 160, 100))  # U jumps: futures ids are shared across symbols
    s.on_snapshot(SNAP)
    assert s.synced and s.stats.applied_events == 2 and s.stats.gaps == 0
    assert not s.on_event(fut(170, 180, 165))  # pu != previous u
    assert s.stats.gaps == 1


def test_crossed_book_after_an_update_is_an_error_that_forces_resync():
    s = BinanceBookSync("X")
    s.on_snapshot(SNAP)
    assert not s.on_event(spot(101, 101, bids=[("101", "1")]))  # bid at the ask: locked
    assert s.stats.crossed == 1 and s.stats.resync_reasons == {"crossed or locked book": 1}
    assert not s.synced and len(s.book) == 0


def test_buffer_is_bounded_and_counts_what_it_dropped():
    s = BinanceBookSync("X", max_buffer=3)
    for i in range(10):
        s.on_event(spot(101 + i, 101 + i))
    assert s.stats.overflows == 7
    s.on_snapshot(SNAP)  # the first kept event starts at 108 > 101: the snapshot must be fetched again
    assert s.needs_snapshot


def test_feed_rejects_malformed_messages_and_counts_them():
    feed = BinanceFeed("X")
    feed.on_text(json.dumps({"lastUpdateId": 100, "bids": [["99", "1"]], "asks": [["101", "1"]]}))
    good = {"stream": "x@depth", "data": {"e": "depthUpdate", "E": 1, "U": 101, "u": 101, "b": [], "a": []}}
    for bad in ("{not json", json.dumps(good)[:40], json.dumps({"data": {"e": "depthUpdate", "U": "a"}}), "[1, 2]",
                json.dumps({"data": {"e": "depthUpdate", "U": 101, "u": 101, "b": [["x", "1"]], "a": []}})):
        feed.on_text(bad)
    assert feed.rejected == 4
    # a diff whose levels cannot be read is lost content: rejected by the sync, and the book resynced
    assert feed.sync.stats.rejected == 1 and feed.sync.stats.resyncs == 1 and feed.sync.needs_snapshot


# --- recordings ---------------------------------------------------------------------------------------


def test_both_line_formats_parse_with_their_times_in_ns():
    m = parse_line('1723161253937085768 {"stream":"a","data":{}}', 1)
    assert (m.kind, m.time_ns, m.text) == (WS, 1723161253937085768, '{"stream":"a","data":{}}')
    m = parse_line('1680652800005184 {"lastUpdateId": 5, "bids": [], "asks": []}', 2)
    assert (m.kind, m.time_ns) == (REST, 1680652800005184000)  # µs in the 2023 files
    m = parse_line("wss://ws-feed.pro.coinbase.com <- 1618677817.020616: {\"type\":\"subscribe\"}", 3)
    assert (m.kind, m.time_ns, m.text) == (SENT, 1618677817020616000, '{"type":"subscribe"}')
    assert parse_line("wss://ws-feed.pro.coinbase.com <-> 1618677816.8434298", 4).kind == CONNECT
    m = parse_line('1618677817.061845: {"type":"subscriptions"}', 5)
    assert (m.kind, m.time_ns) == (WS, 1618677817061845000)
    with pytest.raises(RecordingError, match="line 6"):
        parse_line("garbage", 6)


def test_gzip_and_plain_recordings_read_alike(tmp_path):
    lines = '1 {"a":1}\n\n2 {"b":2}\n'
    (tmp_path / "r.gz").write_bytes(gzip.compress(lines.encode()))
    (tmp_path / "r.txt").write_text(lines)
    a = [(m.text, m.line) for m in read_recording(tmp_path / "r.gz")]
    assert a == [(m.text, m.line) for m in read_recording(tmp_path / "r.txt")] == [('{"a":1}', 1), ('{"b":2}', 3)]


# --- Coinbase -----------------------------------------------------------------------------------------


def l2(seq, kind, product, updates):
    return json.dumps({"channel": "l2_data", "sequence_num": seq, "events": [{
        "type": kind, "product_id": product,
        "updates": [{"side": s, "price_level": p, "new_quantity": q} for s, p, q in updates],
    }]})


def test_coinbase_advanced_trade_snapshot_then_updates_build_the_book():
    feed = CoinbaseL2Feed()
    feed.on_text(l2(0, "snapshot", "BTC-USD", [("bid", "99", "1"), ("offer", "101", "2")]))
    feed.on_text(json.dumps({"channel": "heartbeats", "sequence_num": 1, "events": []}))
    feed.on_text(l2(2, "update", "BTC-USD", [("bid", "100", "3"), ("offer", "101", "0"), ("offer", "102", "1")]))
    assert feed.books["BTC-USD"].top() == (100.0, 3.0, 102.0, 1.0)
    assert feed.stats.level_updates == 3 and feed.stats.heartbeats == 1 and not feed.needs_resubscribe


def test_coinbase_sequence_gap_drops_the_books_and_asks_to_resubscribe():
    feed = CoinbaseL2Feed()
    feed.on_text(l2(0, "snapshot", "BTC-USD", [("bid", "99", "1"), ("offer", "101", "2")]))
    feed.on_text(l2(2, "update", "BTC-USD", [("bid", "100", "3")]))
    assert feed.needs_resubscribe and feed.stats.gaps == 1 and feed.books == {}
    feed.resubscribed()
    feed.on_text(l2(3, "snapshot", "BTC-USD", [("bid", "99", "1"), ("offer", "101", "2")]))
    assert feed.synced("BTC-USD")


def test_coinbase_capture_builds_a_consistent_book_per_product(shared_data):
    feed = CoinbaseL2Feed()
    tickers = []
    for msg in read_recording(shared_data / "orderbook" / "multi-exchange-raw" / "COINBASE.ws.28.0"):
        if msg.kind != WS:
            continue
        feed.on_text(msg.text)
        obj = json.loads(msg.text)
        if obj.get("type") == "ticker" and obj["product_id"] in feed.books:
            top = feed.books[obj["product_id"]].top()
            tickers.append((top, float(obj["best_bid"]), float(obj["best_ask"])))
    s = feed.stats
    assert s.snapshots == 10 and s.level_updates == 9719
    assert s.rejected == 0 and s.crossed == 0 and not feed.needs_resubscribe
    for product, book in feed.books.items():
        bid, _, ask, _ = book.top()
        assert bid < ask, product
        assert all(q > 0 for _, q in book.levels(True) + book.levels(False))
    # a ticker is sent with each trade; the book it describes can only be at or inside its quotes'
    # neighbourhood, so the book's bid never sits above the ticker's ask (and vice versa)
    assert tickers and all(top[0] <= ask and top[2] >= bid for top, bid, ask in tickers)


def test_futures_event_whose_pu_is_the_snapshot_id_follows_it_even_when_u_jumps():
    s = BinanceBookSync("X")
    s.on_event(fut(500, 510, 100))
    s.on_snapshot(SNAP)
    assert s.synced and s.stats.stale_snapshots == 0
    t = BinanceBookSync("X")
    t.on_event(fut(500, 510, 99))
    t.on_snapshot(SNAP)
    assert not t.synced and t.stats.stale_snapshots == 1
