"""`signal-agent alerts`: check the Telegram setup, see the outbox, send what waits, print the daily report.

- `alerts test`: queue one message and send it now: the quickest proof that the token and chat id work;
- `alerts list`: the alerts not sent yet (and with `--all`, every one), with their attempts and last error;
- `alerts flush`: send what is due, for up to `--timeout` seconds (`signal-agent run` does this continuously);
- `alerts report`: the daily report now (`--send` also queues and sends it).
"""

from __future__ import annotations

import argparse
import re
import time

from sqlmodel import select

from agent.commands import UsageError
from agent.config import ConfigError, Settings, load_settings
from agent.store import Store, StoreError
from agent.store.tables import OutboxRow
from theories.candles import iso

NAME = "alerts"
HELP = "Telegram alerts: send a test message, list the outbox, flush it, print the daily report"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="PATH", help="settings file (default: $SIGNAL_AGENT_CONFIG or ~/.config)")
    parser.add_argument("--store", metavar="URL", help="store URL (default: SQLite in the data directory)")
    parser.add_argument("--run", metavar="NAME", help="run name (default: the config's, else paper)")
    sub = parser.add_subparsers(dest="alerts_command", required=True, metavar="{test,list,flush,report}")
    test = sub.add_parser("test", help="send a test message to the configured chat now")
    test.add_argument("--timeout", type=float, default=15.0, help="seconds to try (default 15)")
    listing = sub.add_parser("list", help="alerts waiting to be sent (or every alert with --all)")
    listing.add_argument("--all", action="store_true", help="every alert, sent ones included")
    listing.add_argument("--limit", type=int, default=50, help="at most this many, newest last (default 50)")
    flush = sub.add_parser("flush", help="send the alerts that are due")
    flush.add_argument("--timeout", type=float, default=30.0, help="seconds to try (default 30)")
    report = sub.add_parser("report", help="print the daily report now")
    report.add_argument("--send", action="store_true", help="also queue it and send it to the chat")


def _settings(args: argparse.Namespace) -> Settings:
    try:
        return load_settings(args.config)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


def _store(args: argparse.Namespace, settings: Settings) -> Store:
    try:
        return Store(args.store or settings.store.resolved_url(settings.data_dir))
    except StoreError as exc:
        raise UsageError(str(exc)) from None


def _needs_telegram(settings: Settings) -> None:
    if not settings.telegram.configured:
        raise UsageError("Telegram is not configured: set TELEGRAM_BOT_TOKEN and TELEGRAM_CHAT_ID "
                         "(environment or .env), see README 'Telegram alerts'")


def _plain(html: str) -> str:
    return re.sub(r"<[^>]+>", "", html).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def run(args: argparse.Namespace) -> int:
    settings = _settings(args)
    run_name = args.run or settings.cycle.run
    now = time.time_ns() // 1_000_000
    store = _store(args, settings)
    try:
        if args.alerts_command == "list":
            with store.session() as s:
                stmt = select(OutboxRow)
                if not args.all:
                    stmt = stmt.where(OutboxRow.status.in_(("pending", "failed")))
                rows = list(s.exec(stmt.order_by(OutboxRow.id.desc()).limit(max(args.limit, 1))).all())[::-1]
            if not rows:
                print("No alerts waiting." if not args.all else "No alerts.")
            for r in rows:
                print(f"#{r.id} {iso(r.created_ms)} {r.level:<8} {r.status:<8} {r.key}  attempts {r.attempts}"
                      + (f"; last error: {r.last_error}" if r.last_error else ""))
            return 0
        if args.alerts_command == "report":
            from agent.alerts.report import daily_report

            risk = settings.risk.with_environment(__import__("os").environ)
            text = daily_report(store, run_name, risk, settings.telegram, now, settings)
            print(_plain(text))
            if not args.send:
                return 0
            _needs_telegram(settings)
            from agent.alerts.messages import Alert
            from agent.alerts.outbox import enqueue

            enqueue(store, [Alert(key=f"report:{run_name}:now:{now}", level="WARNING", kind="report", text=text,
                                  silent=True)], run_name, now)
            timeout = 15.0
        elif args.alerts_command == "test":
            _needs_telegram(settings)
            from agent.alerts.messages import Alert
            from agent.alerts.outbox import enqueue

            enqueue(store, [Alert(key=f"test:{now}", level="WARNING", kind="test", silent=True,
                                  text=f"✅ signal-agent test message ({iso(now)}): alerts reach this chat.")],
                    run_name, now)
            timeout = args.timeout
        else:
            _needs_telegram(settings)
            timeout = args.timeout
        from agent.alerts.sender import flush

        report = flush(settings.telegram, store, run_name, timeout)
        print(report.line())
        return 0 if report.error == "" or report.waiting == 0 else 1
    finally:
        store.close()
