"""`signal-agent review`: how paper trading went, from the store, with pictures; and paper vs evals.

Prints a summary on the terminal and writes `review.md` and a self-contained `review.html` (plots
embedded) with the PNGs into `--out`. `--json` prints every number instead and writes nothing.

Exit status: 0 with a review; 1 when there is nothing to review (no store yet, no cycles, a filter
that leaves nothing), with a one-line message saying why; 2 for input to fix (a bad date, a bad
config file).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pydantic import ValidationError

from agent.commands import UsageError
from agent.commands.analyze import parse_time
from agent.config import ConfigError, Settings, load_settings
from agent.market import SAMPLE_DIR, load_candles
from agent.review import ReviewError, load_review, review_json, terminal_report, write_review
from agent.store import Store, StoreError
from evals.ledger import LedgerError
from evals.render import terminal_summary
from theories.candles import CandleDataError

NAME = "review"
HELP = "paper-trading performance review: tables, plots, calibration, gate, LLM cost, paper vs evals"
NOTHING_TO_REVIEW = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Review the trading recorded in the store: equity and drawdown, period returns, results per variant, symbol, "
        "regime and direction, confidence calibration, theories, risk gate activity, LLM usage and cost, manual "
        "executions, and paper results against the out-of-sample evals of variants that passed the promotion gate."
    )
    parser.add_argument("--since", metavar="DATE", help="from this time (ISO-8601 date or time, UTC; or epoch ms)")
    parser.add_argument("--until", metavar="DATE", help="up to this time, inclusive (same forms; a bare date is its "
                        "midnight)")
    parser.add_argument("--variant", metavar="V", help="only this variant: 'provider:model:prompt_variant'")
    parser.add_argument("--run", metavar="NAME", help="the run to review (default: the store's only run, else the "
                        "config's run)")
    parser.add_argument("--out", metavar="DIR", default="review",
                        help="folder for review.md, review.html and the PNGs (default: ./review)")
    parser.add_argument("--store", metavar="URL", help="store URL (default: the config's, else SQLite in the data "
                        "directory)")
    parser.add_argument("--config", metavar="PATH", help="settings file (default: $SIGNAL_AGENT_CONFIG or ~/.config)")
    parser.add_argument("--data", metavar="PATH", help="candles to score the signals' direction against (default: "
                        "the bundled sample; only signals whose horizon the candles cover are scored)")
    parser.add_argument("--no-candles", action="store_true", help="skip the signal-level (directional) calibration")
    parser.add_argument("--json", action="store_true", help="print every number as JSON; write no files")


def _settings(args: argparse.Namespace) -> Settings:
    try:
        return load_settings(args.config)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


def _bound(text: str | None, flag: str) -> int | None:
    if text is None:
        return None
    try:
        return parse_time(text)
    except UsageError:
        raise UsageError(f"{flag} {text!r} is neither an ISO-8601 date or time (2025-11-01, 2025-11-01T12:00Z) "
                         "nor epoch ms") from None


def _open_store(url: str) -> Store:
    """The store, without creating one: a review of a SQLite file that does not exist has nothing to read."""
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        path = Path(url.removeprefix("sqlite:///"))
        if not path.is_file():
            raise ReviewError(f"no store at {path}: nothing has been recorded yet "
                              "(run `signal-agent cycle` or `signal-agent run` first, or pass --store)")
    try:
        return Store(url)
    except StoreError as exc:
        raise UsageError(str(exc)) from None


def _candles(args: argparse.Namespace) -> tuple[dict | None, str | None]:
    if args.no_candles:
        return None, None
    if args.data:
        return load_candles(args.data), args.data  # an explicit folder that cannot be read is the user's to fix
    try:
        return load_candles(SAMPLE_DIR), f"bundled sample ({SAMPLE_DIR.name})"
    except (CandleDataError, OSError) as exc:  # pragma: no cover - the package ships the sample
        print(f"signal-agent review: the bundled candles cannot be read ({exc}); no signal-level calibration",
              file=sys.stderr)
        return None, None


def run(args: argparse.Namespace) -> int:
    settings = _settings(args)
    since_ms, until_ms = _bound(args.since, "--since"), _bound(args.until, "--until")
    if since_ms is not None and until_ms is not None and until_ms < since_ms:
        raise UsageError(f"--until {args.until} is before --since {args.since}")
    url = args.store or settings.store.resolved_url(settings.data_dir)
    try:
        store = _open_store(url)
        try:
            candles, source = _candles(args)
            data = load_review(store, settings, run=args.run, variant=args.variant, since_ms=since_ms,
                               until_ms=until_ms, candles=candles, candles_source=source)
        finally:
            store.close()
    except (ReviewError, LedgerError) as exc:
        print(f"signal-agent review: {exc}", file=sys.stderr)
        return NOTHING_TO_REVIEW
    except ValidationError as exc:  # a stored row the ledger's models refuse: say which, never a traceback
        first = exc.errors()[0]
        print(f"signal-agent review: the store {url} holds a {exc.title} the review cannot read: "
              f"{'.'.join(map(str, first['loc']))}: {first['msg']} (input {first.get('input')!r})", file=sys.stderr)
        return NOTHING_TO_REVIEW
    if args.json:
        print(review_json(data))
        return 0
    report, md, page = write_review(data, Path(args.out))
    print(terminal_summary(terminal_report(report)), end="")
    print(f"\nReport: {page} (self-contained) and {md}; plots in {Path(args.out)}")
    return 0
