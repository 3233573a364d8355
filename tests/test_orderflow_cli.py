"""`signal-agent book replay`: the report a quant reads before trusting the book."""

from __future__ import annotations

import argparse
import json

import pytest

from agent.commands import UsageError, book


def run(argv, capsys) -> str:
    parser = argparse.ArgumentParser(prog="signal-agent")
    sub = parser.add_subparsers(dest="command", required=True)
    book.add_arguments(sub.add_parser(book.NAME, help=book.HELP))
    args = parser.parse_args(argv)
    assert book.run(args) == 0
    return capsys.readouterr().out


def test_replay_of_a_binance_recording_reports_sync_agreement_and_features(shared_data, capsys):
    path = shared_data / "orderbook" / "binance-raw" / "history" / "usdm" / "btcusdt_20240718.gz"
    report = json.loads(run(["book", "replay", str(path), "--json"], capsys))
    assert report["venue"] == "binance" and report["snapshots"] == 1
    assert report["gaps"] == 0 and report["resyncs"] == 0 and report["crossed"] == 0 and report["rejected"] == 0
    assert report["level_updates"] > 50_000 and report["synced_at_end"]
    assert report["tickers_compared"] > 100 and report["top_of_book_agreement"] == 1.0
    feats = report["features"]
    assert feats["book"]["best_bid"] < feats["book"]["best_ask"]
    assert feats["trade_flow"]["trades"] > 0 and feats["volume_profile"] is not None
    assert feats["unavailable"] == {}


def test_a_continuation_recording_needs_its_predecessor_and_says_so(shared_data, capsys):
    usdm = shared_data / "orderbook" / "binance-raw" / "history" / "usdm"
    out = run(["book", "replay", str(usdm / "btcusdt_20240719.gz")], capsys)
    assert "no snapshot in this recording" in out and "book: unavailable" in out
    report = json.loads(run(["book", "replay", str(usdm / "btcusdt_20240719.gz"), "--after",
                             str(usdm / "btcusdt_20240718.gz"), "--json"], capsys))
    assert report["synced_at_end"] and report["gaps"] == 0 and report["crossed"] == 0
    assert report["top_of_book_agreement"] == 1.0 and report["features"]["book"] is not None


def test_replay_of_the_coinbase_capture_builds_every_book(shared_data, capsys):
    out = run(["book", "replay", str(shared_data / "orderbook" / "multi-exchange-raw" / "COINBASE.ws.28.0")], capsys)
    assert "(coinbase)" in out and "crossed books          0" in out
    assert out.count(" levels, ") == 10


def test_missing_or_broken_recordings_are_user_errors(tmp_path, capsys):
    with pytest.raises(UsageError, match="no such recording"):
        run(["book", "replay", str(tmp_path / "absent.gz")], capsys)
    bad = tmp_path / "bad.txt"
    bad.write_text("this is not a recording\n")
    with pytest.raises(UsageError, match="line 1"):
        run(["book", "replay", str(bad)], capsys)
