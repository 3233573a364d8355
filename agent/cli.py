"""`signal-agent`: the command line. Each subcommand lives in its own module in `agent.commands`.

Bad input (a missing file, a broken row, an unknown symbol or theory, a time before the data)
ends with a one-line error naming what was wrong and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from agent.commands import UsageError, alerts, analyze, book, config, cycle, evals, review, run, serve, signal
from theories.candles import CandleDataError
from theories.funding import FundingDataError

COMMANDS = (cycle, run, analyze, signal, book, config, evals, review, serve, alerts)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="signal-agent", description="LLM-orchestrated trading-signal synthesis for crypto."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_arguments(sub.add_parser(command.NAME, help=command.HELP))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = next(c for c in COMMANDS if c.NAME == args.command)
    try:
        return command.run(args)
    except (UsageError, CandleDataError, FundingDataError, KeyError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        print(f"signal-agent: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
