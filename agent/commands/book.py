"""`signal-agent book replay FILE`: replay a raw websocket recording through the order book.

Reads a Binance recording (`orderbook/binance-raw/...`: depth diffs, the REST snapshot,
`bookTicker`, trades) through the same feed a live client uses, as fast as possible, and prints
what a quant checks before trusting the book: messages and level updates applied, resyncs,
gaps, crossed books, agreement of the top of book with the recorded `bookTicker` at the same
update id, throughput, and the final order-flow features (the volume profile from 1-minute bars
built from the recorded trades). A Coinbase capture (`multi-exchange-raw/COINBASE...`) is
replayed into its per-product books.

A recording that continues an earlier one (the second day of a capture holds no snapshot) can be
chained with `--after EARLIER_FILE`: the earlier file is replayed first, its counts discarded.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from agent.commands import UsageError
from orderflow.binance_feed import BinanceFeed
from orderflow.coinbase_sync import CoinbaseL2Feed
from orderflow.recording import CONNECT, REST, SENT, WS, RecordingError, read_recording
from orderflow.trades import candles_from_trades

NAME = "book"
HELP = "order-book tools: replay a raw websocket recording through the book"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Order-book tools."
    sub = parser.add_subparsers(dest="book_command", required=True)
    replay = sub.add_parser("replay", help="replay a recording through the book and report sync and features")
    replay.add_argument("file", metavar="FILE", help="a recording from ../shared/data/orderbook/")
    replay.add_argument("--after", metavar="EARLIER", help="replay this earlier recording first (a continuation)")
    replay.add_argument("--order-size", type=float, default=1.0, help="market-order size for impact, base units")
    replay.add_argument("--json", action="store_true", help="print the report as JSON")


def _messages(path: Path):
    try:
        for msg in read_recording(path):
            if msg.kind in (WS, REST):
                yield msg.text
    except RecordingError as exc:
        raise UsageError(str(exc)) from None
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: not a readable recording ({exc})") from None


def _is_coinbase(path: Path) -> bool:
    for msg in read_recording(path):
        if msg.kind in (CONNECT, SENT):
            return "coinbase" in msg.text or "coinbase" in path.name.lower()
        return "coinbase" in path.name.lower()
    return False


def replay_binance(path: Path, after: Path | None, order_size: float) -> dict[str, Any]:
    feed = BinanceFeed()
    if after is not None:
        for text in _messages(after):
            feed.on_text(text)
        feed.reset_counters()
    start = time.perf_counter()
    for text in _messages(path):
        feed.on_text(text)
    elapsed = time.perf_counter() - start
    s, a = feed.sync.stats, feed.agreement
    trades = feed.trades()
    candles = None
    if len(trades) >= 2:
        try:
            candles = candles_from_trades(trades, 60_000)
        except ValueError:
            candles = None
    snap = feed.snapshot(candles, order_size=order_size)
    return {
        "file": str(path),
        "venue": "binance",
        "messages": feed.messages,
        "rejected": feed.rejected,
        "depth_events": s.events,
        "applied_events": s.applied_events,
        "level_updates": s.level_updates,
        "snapshots": s.snapshots,
        "stale_dropped": s.stale_dropped,
        "resyncs": s.resyncs,
        "resync_reasons": s.resync_reasons,
        "gaps": s.gaps,
        "crossed": s.crossed,
        "synced_at_end": feed.sync.synced,
        "tickers": feed.tickers,
        "tickers_compared": a.compared,
        "tickers_not_comparable": a.not_comparable,
        "top_of_book_agreement": a.rate,
        "top_price_agreement": a.price_rate,
        "trades": feed.trades_seen,
        "seconds": elapsed,
        "level_updates_per_s": s.level_updates / elapsed if elapsed > 0 else None,
        "features": snap.model_dump(mode="json"),
        "features_text": snap.summary(),
    }


def replay_coinbase(path: Path) -> dict[str, Any]:
    feed = CoinbaseL2Feed()
    start = time.perf_counter()
    for text in _messages(path):
        feed.on_text(text)
    elapsed = time.perf_counter() - start
    s = feed.stats
    return {
        "file": str(path),
        "venue": "coinbase",
        "messages": s.messages,
        "rejected": s.rejected,
        "snapshots": s.snapshots,
        "level_updates": s.level_updates,
        "resyncs": s.resubscribes,
        "gaps": s.gaps,
        "crossed": s.crossed,
        "trades": s.trades,
        "seconds": elapsed,
        "level_updates_per_s": s.level_updates / elapsed if elapsed > 0 else None,
        "books": {
            p: {"levels": len(b), "best_bid": (t := b.top()) and t[0], "best_ask": t and t[2]}
            for p, b in sorted(feed.books.items())
        },
    }


def render(report: dict[str, Any]) -> str:
    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.2%}"

    lines = [f"Replay of {report['file']} ({report['venue']})"]
    rows = [
        ("messages", f"{report['messages']:,} ({report['rejected']} rejected)"),
        ("level updates applied", f"{report['level_updates']:,}"),
        ("snapshots", report["snapshots"]),
        ("resyncs", f"{report['resyncs']} {report.get('resync_reasons') or ''}".strip()),
        ("gaps detected", report["gaps"]),
        ("crossed books", report["crossed"]),
    ]
    if report["venue"] == "binance":
        rows += [
            ("depth events", f"{report['depth_events']:,} ({report['applied_events']:,} applied, "
                             f"{report['stale_dropped']} already in the snapshot)"),
            ("top of book vs bookTicker",
             f"{pct(report['top_of_book_agreement'])} of {report['tickers_compared']:,} tickers at the same update "
             f"id (prices {pct(report['top_price_agreement'])}); "
             f"{report['tickers_not_comparable']:,} fell inside an aggregated diff"),
            ("trades", f"{report['trades']:,}"),
        ]
        if not report["synced_at_end"] and report["snapshots"] == 0:
            rows.append(("NOTE", "no snapshot in this recording: chain it with --after EARLIER_FILE"))
    rate = report["level_updates_per_s"]
    rows.append(("throughput", "n/a" if rate is None else f"{rate:,.0f} level updates/s ({report['seconds']:.2f} s)"))
    width = max(len(k) for k, _ in rows) + 2
    lines += [k.ljust(width) + str(v) for k, v in rows]
    if report["venue"] == "binance":
        lines += ["", "order flow at the end:"] + ["  " + part for part in report["features_text"].split(" | ")]
    else:
        lines += ["", "books at the end:"] + [
            f"  {p}: {b['levels']} levels, {b['best_bid']} / {b['best_ask']}" for p, b in report["books"].items()
        ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.is_file():
        raise UsageError(f"no such recording: {path}")
    after = Path(args.after) if args.after else None
    if after is not None and not after.is_file():
        raise UsageError(f"no such recording: {after}")
    if args.order_size <= 0:
        raise UsageError(f"--order-size must be positive, got {args.order_size}")
    logging.getLogger("orderflow").setLevel(logging.ERROR)  # counts are reported; no warning per message
    try:
        coinbase = _is_coinbase(path)
    except (RecordingError, OSError, EOFError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: not a readable recording ({exc})") from None
    report = replay_coinbase(path) if coinbase else replay_binance(path, after, args.order_size)
    if args.json:
        report.pop("features_text", None)
        print(json.dumps(report, indent=2))
    else:
        print(render(report))
    return 0
