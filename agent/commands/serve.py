"""`signal-agent serve`: the long-running process: the TradingView webhook, the schedule, Telegram.

One process, one run: the webhook server (uvicorn, `POST /webhook/tradingview`, `GET /health`,
the OpenAPI document at `/openapi.json`), the scheduled cycles when `--schedule` is given (the
same trigger as `signal-agent run`), and the Telegram alerts service when Telegram is configured.
Every cycle, triggered or scheduled, runs on one worker thread, one at a time (`agent.webhook`).
It takes the same instance lock as `run` (a lock file in the data directory), so `serve` and
`run` never operate a run at once.

It refuses to start without a shared secret (`WEBHOOK_SECRET` in the environment or `.env`).
SIGINT/SIGTERM stop it gracefully: the server finishes the requests in flight, the cycle in
progress may finish (up to `--grace`; a second signal abandons it, and the next start resumes it
from the store), the Telegram service stops, the lock is released.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import threading
from types import FrameType
from typing import TYPE_CHECKING

from agent.commands import UsageError
from agent.commands import cycle as cycle_command
from agent.commands.run import parse_duration
from agent.config import Settings
from agent.scheduler import LOCK_FILE, InstanceLock, LockHeldError, candle_trigger
from agent.store import Store, StoreError

if TYPE_CHECKING:
    from agent.webhook.server import WebhookServer
    from agent.webhook.service import WebhookService

NAME = "serve"
HELP = "the long-running service: signed TradingView webhooks (+ the schedule with --schedule, + Telegram)"

MIN_SECRET_CHARS = 16


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Serve the TradingView webhook (POST /webhook/tradingview, GET /health, /openapi.json): each signed alert "
        "triggers a cycle for its symbol. With --schedule, the scheduled cycles run in the same process. Needs "
        "WEBHOOK_SECRET in the environment or .env."
    )
    parser.add_argument("--config", metavar="PATH", help="settings file (default: $SIGNAL_AGENT_CONFIG or ~/.config)")
    parser.add_argument("--host", metavar="ADDR", help="listen address (default: [webhook] host, 127.0.0.1)")
    parser.add_argument("--port", metavar="N", type=int, help="TCP port, 0 for any free one (default: [webhook] port)")
    parser.add_argument("--schedule", action="store_true",
                        help="also run the scheduled cycles (as `signal-agent run`: every candle close plus --delay)")
    parser.add_argument("--every", metavar="DURATION", help="with --schedule: interval (default: the candle interval)")
    parser.add_argument("--delay", metavar="DURATION", default="30s",
                        help="with --schedule: wait after each candle close before deciding (default 30s)")
    parser.add_argument("--grace", metavar="DURATION", default="60s",
                        help="on SIGINT/SIGTERM, how long the cycle in progress may take to finish (default 60s)")
    parser.add_argument("--run", metavar="NAME", help="run name: its cycles share one paper account (default: paper)")
    parser.add_argument("--symbols", metavar="LIST", help="comma-separated universe (default: all in the data)")
    parser.add_argument("--provider", metavar="SPEC", help="LLM provider spec (default: the config's, else heuristic)")
    parser.add_argument("--prompt", metavar="VARIANT", help="prompt variant in prompts/ (default: baseline)")
    parser.add_argument("--data", metavar="PATH", help="a folder of candle files (default: the bundled sample)")
    parser.add_argument("--store", metavar="URL", help="store URL (default: SQLite in the data directory)")
    cycle_command.add_live_arguments(parser)


def _say(text: str) -> None:
    print(text, flush=True)


def require_secret(settings: Settings) -> None:
    secret = settings.webhook.secret
    value = secret.get_secret_value() if secret is not None else ""
    if not value:
        raise UsageError("WEBHOOK_SECRET is not set: the webhook refuses unsigned alerts, so it needs the shared "
                         "secret the sender signs with. Put WEBHOOK_SECRET=<random string> in the environment or in "
                         ".env (e.g. from `python -c 'import secrets; print(secrets.token_hex(32))'`)")
    if len(value) < MIN_SECRET_CHARS:
        raise UsageError(f"WEBHOOK_SECRET is too short ({len(value)} characters): use at least {MIN_SECRET_CHARS} "
                         "random characters")


class _Signals:
    """The process's own SIGINT/SIGTERM handlers: uvicorn re-raises the signal it caught against these."""

    def __init__(self) -> None:
        self.count = 0
        self.on_first = lambda: None
        self.on_second = lambda: None
        self._previous: dict[int, object] = {}

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self.count += 1
        (self.on_first if self.count == 1 else self.on_second)()


def run(args: argparse.Namespace) -> int:
    # the web stack is imported here: the other commands never pay for it
    from agent.webhook.cycles import CycleRefused
    from agent.webhook.server import WebhookServer
    from agent.webhook.service import WebhookService

    settings = cycle_command._settings(args)
    require_secret(settings)
    cfg = settings.webhook
    host = args.host or cfg.host
    port = cfg.port if args.port is None else args.port
    if not 0 <= port <= 65535:
        raise UsageError(f"--port must be 0..65535, got {port}")
    grace_s = parse_duration(args.grace, "--grace")
    run_name = cycle_command.run_name(args, settings.cycle)

    lock = InstanceLock(settings.data_dir / LOCK_FILE)
    try:
        stale = lock.acquire()
    except LockHeldError as exc:
        raise UsageError(f"{exc}; `serve` and `run` must not operate the same run at once") from None
    store: Store | None = None
    try:
        if stale is not None:
            _say(f"recovered a stale lock left by pid {stale}, which is no longer running")
        try:
            store = Store(args.store or settings.store.resolved_url(settings.data_dir), echo=settings.store.echo)
        except StoreError as exc:
            raise UsageError(str(exc)) from None
        broker = cycle_command.live_broker(args, settings)
        cycle_lock = threading.Lock()
        try:
            service = WebhookService.build(
                settings, store, run=run_name, provider=args.provider, prompt=args.prompt, data=args.data,
                symbols=args.symbols.split(",") if args.symbols else (), broker=broker, schedule=args.schedule,
                cycle_lock=cycle_lock, say=_say)
        except CycleRefused as exc:
            raise UsageError(str(exc)) from None
        trigger = None
        if args.schedule:
            every_s = parse_duration(args.every, "--every") if args.every else _interval_s(service)
            try:
                trigger = candle_trigger(int(every_s), parse_duration(args.delay, "--delay"))
            except ValueError as exc:
                raise UsageError(str(exc)) from None
        try:
            server = WebhookServer(service.app(), host, port)
        except OSError as exc:
            raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        return asyncio.run(_serve(service, server, settings, store, cycle_lock, trigger, grace_s))
    finally:
        if store is not None:
            store.close()
        lock.release()


def _interval_s(service: WebhookService) -> int:
    data = service.runner.market_data()
    for symbol in service.runner.symbols:
        with contextlib.suppress(Exception):
            return data.candles(symbol, 2**62).interval_ms // 1000
    raise UsageError("no symbol has readable candles to take the interval from: give --every")


async def _serve(service: WebhookService, server: WebhookServer, settings: Settings, store: Store,
                 cycle_lock: threading.Lock, trigger, grace_s: float) -> int:
    signals = _Signals()
    signals.on_first = server.stop
    signals.on_second = service.worker.abandon
    signals.install()  # before uvicorn's own: its re-raise after the graceful stop lands here
    alerts = None
    try:
        try:
            from agent.alerts import build_alert_service

            alerts = build_alert_service(settings, store, run=service.run, lock=cycle_lock)
        except ImportError:  # pragma: no cover - the package ships with the product
            alerts = None
        if alerts is not None:
            await alerts.start()
        resumed = service.worker.start()
        if trigger is not None:
            service.worker.start_schedule(trigger)
        serving = asyncio.create_task(server.serve())
        while not server.server.started and not serving.done():  # say "listening" only once it is
            await asyncio.sleep(0.02)
        if server.server.started:
            allowed = ", ".join(service.allowed)
            _say(f"signal-agent serve: pid {os.getpid()}, run {service.run!r}, listening on {server.url} "
                 f"(POST /webhook/tradingview, GET /health, /openapi.json); allowed symbols: {allowed}; "
                 f"schedule: {'on' if trigger is not None else 'off'}; Telegram: {'on' if alerts else 'off'}"
                 + (f"; resuming {resumed} alert(s) left by the last process" if resumed else ""))
        await serving
        _say("signal-agent serve: stopping: the cycle in progress may finish "
             f"(up to {grace_s:g} s; signal again to abandon it)")
        finished = await asyncio.to_thread(service.worker.stop, grace_s)
        if not finished:
            _say("signal-agent serve: the cycle in progress was abandoned (its open decision rolls back; "
                 "the next start resumes it)")
    finally:
        if alerts is not None:
            with contextlib.suppress(Exception):
                await alerts.stop()
        signals.uninstall()
    _say("signal-agent serve: stopped")
    return 0


if __name__ == "__main__":  # pragma: no cover
    from agent.cli import main

    sys.exit(main(["serve", *sys.argv[1:]]))
