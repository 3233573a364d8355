"""`signal-agent run`: the service. A cycle at every candle close (plus a delay), until stopped.

Everything a cycle does is `signal-agent cycle`'s (same flags, same settings, same store); this
command adds the schedule (`agent.scheduler`): one instance per data directory (a lock file
with the pid), a first cycle at start that catches up or resumes the last one, then one per
candle close, and a graceful stop on SIGINT/SIGTERM: the cycle in progress finishes (up to
`--grace` seconds), or is abandoned on a second signal or when the grace runs out; abandoning
rolls back only the decision in progress and the next start resumes the cycle from the store.
Open paper positions keep being managed across restarts: the broker's state is saved with
each decision and read back by the next cycle.

`--simulate-from TIME` replaces the wall clock by one that steps from close to close without
waiting: a paper run through past data, through the same loop.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import threading
from typing import TYPE_CHECKING

from agent.alerts.control import is_paused
from agent.alerts.monitor import crash_alert
from agent.alerts.outbox import enqueue
from agent.commands import UsageError
from agent.commands import cycle as cycle_command
from agent.commands.analyze import parse_time
from agent.config import Settings
from agent.cycle import CycleResult, FileMarketData
from agent.scheduler import (
    LOCK_FILE,
    Clock,
    InstanceLock,
    LockHeldError,
    RealClock,
    Shutdown,
    SimulatedClock,
    candle_trigger,
    run_loop,
)
from agent.store import Store, StoreError
from theories.candles import CandleDataError, iso

if TYPE_CHECKING:
    from agent.alerts.service import ServiceThread

NAME = "run"
HELP = "the service: a decision cycle at every candle close (plus a delay) until SIGINT/SIGTERM"

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str, flag: str) -> float:
    """'90', '90s', '5m', '1h', '1d' -> seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not m:
        raise UsageError(f"{flag} {text!r}: expected a duration such as 30s, 5m, 1h or 1d")
    return float(m.group(1)) * _UNITS[m.group(2) or "s"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    cycle_command.add_arguments(parser)  # every flag of `signal-agent cycle` means the same here
    parser.description = (
        "Run the decision cycle at every candle close plus a delay, until SIGINT/SIGTERM. One instance per data "
        "directory. Flags as for `signal-agent cycle`, plus the schedule below."
    )
    parser.add_argument("--every", metavar="DURATION",
                        help="interval between cycles, UTC-aligned (default: the data's candle interval)")
    parser.add_argument("--delay", metavar="DURATION", default="30s",
                        help="wait after each candle close before deciding, so the candle is in the data (default 30s)")
    parser.add_argument("--once", action="store_true", help="one cycle now, then exit (with the run's lock held)")
    parser.add_argument("--max-cycles", metavar="N", type=int, help="stop after N cycles")
    parser.add_argument("--grace", metavar="DURATION", default="60s",
                        help="on SIGINT/SIGTERM, how long the cycle in progress may take to finish (default 60s)")
    parser.add_argument("--simulate-from", metavar="TIME",
                        help="simulated clock: start at TIME and step from close to close without waiting (paper)")
    parser.add_argument("--until", metavar="TIME", help="stop at TIME (simulated or wall clock)")


def _say(text: str) -> None:
    print(text, flush=True)


def _say_from_handler(text: str) -> None:
    """A signal handler must not call print: it may interrupt a print of the main thread (reentrant-call error)."""
    try:
        os.write(sys.stdout.fileno(), f"{text}\n".encode())
    except (OSError, ValueError):  # stdout closed or not a real file: the message is only a courtesy
        pass


def _candle_interval_s(data: FileMarketData) -> int:
    for symbol in data.symbols():
        try:
            return data.candles(symbol, 2**62).interval_ms // 1000
        except (CandleDataError, OSError, ValueError):
            continue
    raise UsageError("no symbol has readable candles to take the interval from: give --every")


def _simulation_start(args: argparse.Namespace, settings: Settings, delay_ms: int) -> int:
    """The fire of --simulate-from's candle close, or of the run's last cycle if it got further (a restarted
    simulation resumes there); starting at the fire, not the close, keeps the first tick from repeating."""
    start = parse_time(args.simulate_from) + delay_ms
    try:
        store = Store(args.store or settings.store.resolved_url(settings.data_dir))
    except StoreError as exc:
        raise UsageError(str(exc)) from None
    try:
        latest = store.last_decision_ms(cycle_command.run_name(args, settings.cycle))
    finally:
        store.close()
    return max(start, latest + delay_ms) if latest is not None else start


def run(args: argparse.Namespace) -> int:
    if args.at:
        raise UsageError("--at does not apply to `run`: the schedule picks the decision times (see --simulate-from)")
    settings = cycle_command._settings(args)
    if args.max_cycles is not None and args.max_cycles < 1:
        raise UsageError(f"--max-cycles must be at least 1, got {args.max_cycles}")
    simulated = args.simulate_from is not None
    if simulated and (args.live or args.production):
        raise UsageError("--simulate-from is for paper runs through past data; it cannot be combined with --live")
    data = FileMarketData(args.data)
    every_s = parse_duration(args.every, "--every") if args.every else _candle_interval_s(data)
    if every_s != int(every_s) or every_s < 1:
        raise UsageError(f"--every must be a whole number of seconds, at least 1, got {every_s:g}")
    delay_s = parse_duration(args.delay, "--delay")
    grace_s = parse_duration(args.grace, "--grace")
    try:
        trigger = candle_trigger(int(every_s), delay_s)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    clock: Clock = RealClock()
    if simulated:
        clock = SimulatedClock(_simulation_start(args, settings, round(delay_s * 1000)))
    until_ms = parse_time(args.until) if args.until else None
    max_cycles = 1 if args.once else args.max_cycles

    lock = InstanceLock(settings.data_dir / LOCK_FILE)
    try:
        stale = lock.acquire()
    except LockHeldError as exc:
        raise UsageError(str(exc)) from None
    shutdown = Shutdown(grace_s=grace_s, say=_say_from_handler)
    run_as = cycle_command.run_name(args, settings.cycle)
    # One lock around each cycle and each Telegram answer: both read, change and write the broker's memory.
    broker_lock = threading.Lock()
    alerts: ServiceThread | None = None
    control_store: Store | None = None
    try:
        if stale is not None:
            _say(f"recovered a stale lock left by pid {stale}, which is no longer running")
        broker = cycle_command.live_broker(args, settings)  # one exchange session for the whole run
        _say(f"signal-agent run: pid {os.getpid()}, a cycle every {every_s:g}s at +{delay_s:g}s after each close"
             + (f", simulated clock from {iso(clock.now_ms())}" if simulated else "")
             + f"; lock {lock.path}")
        try:
            control_store = Store(args.store or settings.store.resolved_url(settings.data_dir))
        except StoreError as exc:
            raise UsageError(str(exc)) from None
        service = None
        if settings.telegram.configured:  # python-telegram-bot is imported only when it is used
            from agent.alerts.service import ServiceThread, build_alert_service

            service = build_alert_service(settings, control_store, run=run_as, lock=broker_lock)
        if service is not None:
            alerts = ServiceThread(service).start()
            _say(f"Telegram alerts on for run {run_as!r}: tickets, position events, commands from the configured chat")
        shutdown.install()

        def tick(at_ms: int) -> CycleResult:
            # A fresh data source each time on the wall clock: the files grow as candles close.
            source = data if simulated else FileMarketData(args.data)
            with broker_lock:
                result = cycle_command.execute(args, settings, at_ms=at_ms, broker=broker, data=source)
            if alerts is not None:
                alerts.wake()
            if result.results and all(r.resumed for r in result.results):
                _say(f"{iso(at_ms)}: cycle {result.cycle_id} was already completed; waiting for the next close")
            else:
                kind = "live" if broker is not None else "manual" if getattr(args, "manual", False) else "paper"
                _say(cycle_command.render(result, kind))
            return result

        def failed(at_ms: int, exc: Exception) -> None:
            print(f"signal-agent run: the cycle at {iso(at_ms)} failed: {exc}", file=sys.stderr, flush=True)
            if alerts is not None and control_store is not None:
                try:
                    enqueue(control_store, [crash_alert(run_as, at_ms, exc)], run_as, clock.now_ms())
                    alerts.wake()
                except Exception as err:  # the failure is printed above; the alert is a courtesy on top
                    print(f"signal-agent run: could not queue the crash alert: {err}", file=sys.stderr, flush=True)

        def held(at_ms: int) -> None:
            _say(f"{iso(at_ms)}: run {run_as!r} is paused (/pause); no cycle until /resume")

        report = run_loop(tick, trigger, clock, shutdown, max_cycles=max_cycles, until_ms=until_ms, on_error=failed,
                          paused=(lambda: is_paused(control_store, run_as)) if control_store is not None else None,
                          on_paused=held)
    finally:
        shutdown.uninstall()
        if alerts is not None:
            alerts.stop()
        if control_store is not None:
            control_store.close()
        lock.release()
    how = ("the cycle in progress was abandoned (its open decision rolled back; the next start resumes it)"
           if report.abandoned else "stopped by signal" if report.stopped_by_signal else "done")
    paused = f", {report.paused} skipped while paused" if report.paused else ""
    _say(f"signal-agent run: {report.cycles} cycle(s), {report.failures} failed{paused}; {how}")
    bounded = max_cycles is not None or until_ms is not None
    return 1 if bounded and report.failures and not report.stopped_by_signal else 0


def main(argv: list[str] | None = None) -> int:
    """`python -m agent.commands.run ...`: the command on its own, with the CLI's error handling."""
    from agent.cli import main as cli_main

    return cli_main(["run", *(sys.argv[1:] if argv is None else argv)]) if _registered() else _alone(argv)


def _registered() -> bool:
    from agent.cli import COMMANDS

    return any(getattr(c, "NAME", None) == NAME for c in COMMANDS)


def _alone(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="signal-agent run", description=HELP)
    add_arguments(parser)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return run(args)
    except (UsageError, CandleDataError) as exc:
        print(f"signal-agent: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
