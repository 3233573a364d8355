"""When `signal-agent run` calls the cycle: on candle closes, one instance at a time, stoppable.

The cycle (`agent.cycle.run_cycle`) decides what to do; this module only decides *when* to call
it and with which time, and how the process starts and stops around it:

- **Schedule.** APScheduler's `IntervalTrigger`, started at the UTC epoch plus a delay, fires at
  every candle close plus the delay (every hour at :00:30 for 1 h candles and a 30 s delay):
  UTC-aligned intervals of 1 m .. 1 d all divide the epoch evenly. In real time a
  `BackgroundScheduler` fires the trigger (coalescing missed fires, one at a time) and hands
  the fire to the main thread; with a `SimulatedClock` the same trigger is stepped without
  waiting, so tests and paper runs over past data go through the very same loop.
- **One instance.** `InstanceLock`: a lock file in the data directory holding the pid, locked
  with `flock`; the kernel drops the lock when the process dies, however it dies, so a lock
  file left behind by a dead process is recovered on the next start, while a second instance
  is refused with the holder's pid.
- **Shutdown.** The cycle runs in the main thread. The first SIGINT/SIGTERM lets the cycle in
  progress finish (up to a grace period), then the loop stops; a second signal, or the grace
  period running out, abandons it by raising `CycleAbandoned` (a BaseException, so the
  cycle's per-symbol error handling does not record it as an outcome). Abandoning is safe
  because each decision is one store transaction: the open one rolls back, the decided ones
  stay, and the next start resumes the cycle from the store (ids derive from the run and the
  decision time, so nothing is decided or ordered twice).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Protocol

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

LOCK_FILE = "signal-agent-run.lock"


class LockHeldError(RuntimeError):
    """Another live process holds the instance lock; the message names its pid and the file."""


class CycleAbandoned(BaseException):  # a control-flow signal like KeyboardInterrupt, not an error
    """Raised in the main thread to abandon the cycle in progress at shutdown."""


def _read_pid(fd: int) -> int | None:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 64).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None


class InstanceLock:
    """A pid file locked with `flock(LOCK_EX | LOCK_NB)`: at most one holder per file, released at death.

    `acquire` returns the pid found in a stale lock file it recovered (None when there was none).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    def acquire(self) -> int | None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(10):  # a holder may unlink the file between our open and our flock: retry
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_pid(fd)
                os.close(fd)
                who = f"pid {holder}" if holder is not None else "another process"
                raise LockHeldError(
                    f"another `signal-agent run` ({who}) is running with this data directory: it holds {self.path}"
                ) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # we locked a file its last holder had already removed
                os.close(fd)
                continue
            stale = _read_pid(fd)
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, f"{os.getpid()}\n".encode("ascii"))
            os.fsync(fd)
            self._fd = fd
            return stale if stale != os.getpid() else None
        raise LockHeldError(f"could not take the lock {self.path}: it keeps being replaced")

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # unlink before unlocking: a newcomer then never locks a doomed file for long
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> InstanceLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def candle_trigger(every_s: int, delay_s: float = 0.0) -> IntervalTrigger:
    """Fires at every UTC-aligned multiple of `every_s` plus `delay_s` (0 <= delay < every)."""
    if every_s <= 0:
        raise ValueError(f"the interval must be positive, got {every_s} s")
    if not 0 <= delay_s < every_s:
        raise ValueError(f"the delay must be at least 0 s and shorter than the interval ({every_s} s), got {delay_s}")
    start = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=delay_s)
    return IntervalTrigger(seconds=every_s, start_date=start, timezone=UTC)


def next_fire_ms(trigger: IntervalTrigger, after_ms: int) -> int:
    """The trigger's first fire strictly after `after_ms` (UTC epoch ms)."""
    now = datetime.fromtimestamp(after_ms / 1000, UTC)
    fire = trigger.get_next_fire_time(None, now)
    if fire is None:  # pragma: no cover - an interval trigger without an end always has a next fire
        raise ValueError("the trigger has no further fire time")
    ms = round(fire.timestamp() * 1000)
    if ms <= after_ms:
        fire = trigger.get_next_fire_time(fire, now + timedelta(milliseconds=1))
        ms = round(fire.timestamp() * 1000) if fire is not None else ms
    return ms


class Clock(Protocol):
    """Where the loop's time comes from, and how it waits for the next fire."""

    def now_ms(self) -> int: ...

    def fires(self, trigger: IntervalTrigger, stop: threading.Event) -> Iterator[int]:
        """The times (UTC epoch ms) of successive fires, each yielded once its time has come; ends at `stop`."""
        ...


class RealClock:
    """Wall time; fires come from an APScheduler `BackgroundScheduler` running the trigger."""

    def __init__(self, misfire_grace_s: int = 3600) -> None:
        self.misfire_grace_s = misfire_grace_s

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def fires(self, trigger: IntervalTrigger, stop: threading.Event) -> Iterator[int]:
        fired: queue.SimpleQueue[int] = queue.SimpleQueue()
        scheduler = BackgroundScheduler(timezone=UTC)
        # The job only hands the fire to the main thread, which runs the cycle (and can abandon it);
        # coalesce: fires missed while a cycle ran late are run once, not once each.
        scheduler.add_job(lambda: fired.put(self.now_ms()), trigger, coalesce=True, max_instances=1,
                          misfire_grace_time=self.misfire_grace_s, id="cycle")
        scheduler.start()
        try:
            while not stop.is_set():
                try:
                    at = fired.get(timeout=0.2)
                except queue.Empty:
                    continue
                while True:  # fires queued while the previous cycle ran: one cycle, at the latest
                    try:
                        at = fired.get_nowait()
                    except queue.Empty:
                        break
                yield at
        finally:
            scheduler.shutdown(wait=False)


class SimulatedClock:
    """A clock that jumps from fire to fire without waiting: paper runs over past data, and tests."""

    def __init__(self, start_ms: int) -> None:
        self._now = start_ms

    def now_ms(self) -> int:
        return self._now

    def fires(self, trigger: IntervalTrigger, stop: threading.Event) -> Iterator[int]:
        while not stop.is_set():
            self._now = next_fire_ms(trigger, self._now)
            yield self._now


@dataclass
class Shutdown:
    """SIGINT/SIGTERM handling for the loop: stop after the cycle in progress, or abandon it.

    `stop` is set by the first signal. While a cycle runs (`in_cycle`), the first signal arms
    a `grace_s` alarm; the alarm or a second signal raises `CycleAbandoned` in the main thread.
    """

    grace_s: float = 30.0
    say: Callable[[str], None] = print
    stop: threading.Event = field(default_factory=threading.Event)
    in_cycle: bool = False
    abandoned: bool = False
    _previous: dict[int, object] = field(default_factory=dict)

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM):
            self._previous[sig] = signal.signal(sig, self._handle)

    def uninstall(self) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if signum == signal.SIGALRM:
            if self.in_cycle:
                self._abandon(f"the cycle in progress did not finish within {self.grace_s:g} s")
            return
        first = not self.stop.is_set()
        self.stop.set()
        if not self.in_cycle:
            if first:
                self.say(f"{name}: stopping")
            return
        if first and self.grace_s > 0:
            self.say(f"{name}: finishing the cycle in progress (up to {self.grace_s:g} s; signal again to abandon it)")
            signal.setitimer(signal.ITIMER_REAL, self.grace_s)
        else:
            self._abandon(f"{name} again")

    def _abandon(self, why: str) -> None:
        self.abandoned = True
        self.in_cycle = False
        raise CycleAbandoned(why)

    @contextlib.contextmanager
    def cycle(self) -> Iterator[None]:
        """Wrap one cycle: signals during it finish or abandon it (see the class docstring)."""
        self.in_cycle = True
        try:
            yield
        finally:
            self.in_cycle = False
            signal.setitimer(signal.ITIMER_REAL, 0)


@dataclass(frozen=True)
class LoopReport:
    cycles: int
    failures: int
    abandoned: bool
    stopped_by_signal: bool
    paused: int = 0  # fires skipped because the run was paused (/pause)


def run_loop(
    tick: Callable[[int], object],
    trigger: IntervalTrigger,
    clock: Clock,
    shutdown: Shutdown,
    *,
    max_cycles: int | None = None,
    until_ms: int | None = None,
    run_first_now: bool = True,
    on_error: Callable[[int, Exception], None] = lambda _at, _exc: None,
    paused: Callable[[], bool] | None = None,
    on_paused: Callable[[int], None] = lambda _at: None,
) -> LoopReport:
    """Call `tick(now_ms)` at each fire of `trigger` until a signal, `max_cycles` ticks or `until_ms`.

    `run_first_now`: tick once at start (catching up after a restart), then on the schedule. A
    tick that raises is reported to `on_error` and the loop goes on: a bad hour must not end
    the service. `CycleAbandoned` ends the loop (the cycle rolled back its open decision).
    `paused` (agent.alerts.control.is_paused for the run) is asked before each tick: while it says
    yes the fire is skipped (reported to `on_paused`, not counted as a cycle), and the loop waits
    for the next one; a question that fails counts as not paused, so a store hiccup cannot stop trading
    management silently.
    """
    cycles = failures = skipped = 0

    def one(at_ms: int) -> bool:
        nonlocal cycles, failures, skipped
        try:
            held = paused is not None and paused()
        except Exception:  # the cycle itself will meet (and report) whatever broke the store
            held = False
        if held:
            skipped += 1
            on_paused(at_ms)  # a skipped fire counts toward max_cycles: `--once` while paused ends, saying so
            return not shutdown.stop.is_set() and (max_cycles is None or cycles + skipped < max_cycles)
        try:
            with shutdown.cycle():
                if shutdown.stop.is_set():  # the signal landed between cycles and said "stopping": start none
                    return False
                tick(at_ms)
        except CycleAbandoned:
            return False
        except Exception as exc:  # reported, the service goes on
            failures += 1
            on_error(at_ms, exc)
        cycles += 1
        return not shutdown.stop.is_set() and (max_cycles is None or cycles + skipped < max_cycles)

    going = True
    if run_first_now and (max_cycles is None or max_cycles > 0) and not shutdown.stop.is_set():
        going = one(clock.now_ms())
    if going and (max_cycles is None or max_cycles > 0):
        for at in clock.fires(trigger, shutdown.stop):
            if until_ms is not None and at > until_ms:
                break
            if not one(at):
                break
    return LoopReport(cycles=cycles, failures=failures, abandoned=shutdown.abandoned,
                      stopped_by_signal=shutdown.stop.is_set(), paused=skipped)
