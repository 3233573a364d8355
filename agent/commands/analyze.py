"""`signal-agent analyze`: the full feature snapshot of each symbol, as a table or JSON.

With no `--data` it reads only the bundled sample, offline.
"""

from __future__ import annotations

import argparse
import json
import textwrap
from collections.abc import Sequence
from datetime import UTC, datetime

from agent.commands import UsageError
from agent.market import SAMPLE_DIR, load_candles, parse_symbols
from agent.market.funding import load_funding
from agent.snapshot import DEFAULT_WINDOW, FeatureSnapshot, build_snapshot
from theories.base import FitCache
from theories.candles import iso
from theories.registry import DEFAULT_SET, THEORIES

NAME = "analyze"
HELP = "the full feature snapshot for each symbol"


def parse_time(text: str) -> int:
    """ISO-8601 (UTC when no zone is given) or epoch milliseconds -> epoch ms."""
    text = text.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--at {text!r} is neither an ISO-8601 time (2025-11-01T12:00Z) nor epoch ms") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def split_list(values: Sequence[str] | None) -> list[str] | None:
    """`["BTC,ETH", "SOL"]` -> `["BTC", "ETH", "SOL"]`: lists may be comma- or space-separated."""
    if not values:
        return None
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Run every theory on each symbol's candles and print the feature snapshots."
    parser.add_argument("--data", metavar="PATH", help="a candle file or folder (default: the bundled sample)")
    parser.add_argument(
        "--funding", metavar="PATH",
        help="perpetual funding rates, a file or folder (default: the bundled sample when --data is not given)",
    )
    parser.add_argument("--symbols", nargs="+", metavar="SYM", help="symbols to analyse: BTC, ETH/USDT, ...")
    parser.add_argument("--at", metavar="TIME", help="analyse as of this time: only candles closed by then")
    parser.add_argument(
        "--theories", nargs="+", metavar="NAME", help=f"theory set (default all: {', '.join(DEFAULT_SET)})"
    )
    parser.add_argument("--window", type=int, default=DEFAULT_WINDOW, help="candles per analysis window")
    parser.add_argument("--anonymise", action="store_true", help="no ticker, no dates, prices rebased to 100")
    parser.add_argument("--json", action="store_true", help="print the snapshots as JSON")


def snapshots(args: argparse.Namespace) -> list[FeatureSnapshot]:
    universe = load_candles(args.data, None)  # the whole universe feeds the context theory
    symbols = split_list(args.symbols)
    chosen = parse_symbols(symbols, universe) if symbols else list(universe)
    theory_set = split_list(args.theories) or list(DEFAULT_SET)
    unknown = [t for t in theory_set if t not in THEORIES]
    if unknown:
        raise UsageError(f"unknown theories {unknown}; known: {', '.join(THEORIES)}")
    if args.window < 50:
        raise UsageError(f"--window {args.window} is too small: at least 50 candles")
    at_ms = parse_time(args.at) if args.at else None
    if args.funding:
        funding = load_funding(args.funding)
    else:
        funding = load_funding() if args.data is None else {}
    cache = FitCache()
    snapshots = []
    for symbol in chosen:
        when = at_ms if at_ms is not None else universe[symbol].last_close_time
        first_close = int(universe[symbol].close_time[0])
        if when < first_close:
            raise UsageError(f"--at {iso(when)} is before the first {symbol} candle closed ({iso(first_close)})")
        snap = build_snapshot(symbol, universe, when, theory_set, window=args.window, cache=cache, funding=funding)
        snapshots.append(snap.anonymised_copy() if args.anonymise else snap)
    return snapshots


def render_table(snapshots: Sequence[FeatureSnapshot], source: str, width: int = 110) -> str:
    out = [f"Data: {source}"]
    name_w = max((len(n) for s in snapshots for n in (*s.theories, *s.errors)), default=8) + 2
    for snap in snapshots:
        q = snap.quality
        when = iso(snap.time) if snap.time is not None else "(time hidden)"
        head = (
            f"{snap.symbol} as of {when}  last {snap.last_price:,.6g}  "
            f"{q.candles} candles x {q.interval_ms // 60_000}m, {q.missing_candles} missing"
            + (f", STALE by {q.stale_bars} bars" if q.stale_bars else "")
        )
        out += ["", head, "-" * min(len(head), width)]
        rows = [(n, r.summary()) for n, r in snap.theories.items()]
        rows += [(n, f"UNAVAILABLE: {why}") for n, why in snap.errors.items()]
        if snap.orderflow is not None:
            rows.append(("orderflow", snap.orderflow.summary()))
        for name, text in rows:
            wrapped = textwrap.wrap(text, width=width - name_w) or [""]
            out.append(name.ljust(name_w) + wrapped[0])
            out += [" " * name_w + more for more in wrapped[1:]]
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    snaps = snapshots(args)
    if args.json:
        print(json.dumps([s.model_dump(mode="json") for s in snaps], indent=2))
    else:
        print(render_table(snaps, args.data or f"bundled sample ({SAMPLE_DIR.name}, offline)"))
    return 0
