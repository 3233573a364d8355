"""The scheduler's pieces: candle-close fire times, the instance lock, the loop, and signals during a cycle."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.scheduler import (
    InstanceLock,
    LockHeldError,
    RealClock,
    Shutdown,
    SimulatedClock,
    candle_trigger,
    next_fire_ms,
    run_loop,
)
from theories.candles import iso

H = 3_600_000
T0 = 1_763_200_800_000  # 2025-11-15T10:00:00Z


def test_hourly_trigger_fires_at_the_next_close_plus_the_delay():
    trigger = candle_trigger(3600, 30)
    assert iso(next_fire_ms(trigger, T0 + 15 * 60_000)) == "2025-11-15T11:00:30Z"
    assert iso(next_fire_ms(trigger, T0)) == "2025-11-15T10:00:30Z"
    assert next_fire_ms(trigger, T0 + 30_000) == T0 + H + 30_000  # strictly after: a fire is never repeated


def test_four_hour_and_daily_triggers_are_aligned_to_utc():
    assert iso(next_fire_ms(candle_trigger(4 * 3600, 5), T0 + 1)) == "2025-11-15T12:00:05Z"
    assert iso(next_fire_ms(candle_trigger(86400, 60), T0)) == "2025-11-16T00:01:00Z"


@pytest.mark.parametrize(("every", "delay", "message"), [(0, 0, "positive"), (60, 60, "shorter"), (60, -1, "least")])
def test_a_bad_interval_or_delay_is_refused_naming_it(every, delay, message):
    with pytest.raises(ValueError, match=message):
        candle_trigger(every, delay)


@settings(max_examples=200, deadline=None)
@given(
    every=st.sampled_from([60, 300, 900, 3600, 4 * 3600, 86400]),
    delay_frac=st.floats(0, 0.99),
    after=st.integers(1_500_000_000_000, 2_000_000_000_000),
)
def test_next_fire_is_the_first_aligned_time_after(every, delay_frac, after):
    delay = round(every * delay_frac)
    fire = next_fire_ms(candle_trigger(every, delay), after)
    assert after < fire <= after + every * 1000
    assert (fire - delay * 1000) % (every * 1000) == 0


def test_a_second_holder_is_refused_with_the_first_ones_pid(tmp_path):
    path = tmp_path / "run.lock"
    first = InstanceLock(path)
    assert first.acquire() is None
    assert path.read_text().strip() == str(os.getpid())
    with pytest.raises(LockHeldError, match=rf"pid {os.getpid()}.*run.lock"):
        InstanceLock(path).acquire()  # flock conflicts between open files, even in one process
    first.release()
    assert not path.exists()
    with InstanceLock(path):  # free again
        assert path.exists()


def test_a_lock_left_by_a_dead_process_is_recovered_and_reported(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path = tmp_path / "run.lock"
    path.write_text(f"{dead.pid}\n")
    lock = InstanceLock(path)
    assert lock.acquire() == dead.pid
    assert path.read_text().strip() == str(os.getpid())
    lock.release()


def test_a_lock_held_by_another_live_process_is_refused(tmp_path):
    path = tmp_path / "run.lock"
    code = ("import sys, time; from agent.scheduler import InstanceLock; InstanceLock(sys.argv[1]).acquire(); "
            "print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockHeldError, match=f"pid {holder.pid}"):
            InstanceLock(path).acquire()
        holder.kill()  # SIGKILL: no cleanup runs, the kernel drops the flock
        holder.wait(timeout=10)
        lock = InstanceLock(path)
        assert lock.acquire() == holder.pid
        lock.release()
    finally:
        holder.kill()
        holder.wait(timeout=10)


def test_the_simulated_loop_ticks_at_start_then_at_each_close_up_to_the_bound():
    seen: list[int] = []
    report = run_loop(seen.append, candle_trigger(3600, 30), SimulatedClock(T0 + 5 * 60_000), Shutdown(say=str),
                      max_cycles=4)
    assert [iso(t) for t in seen] == ["2025-11-15T10:05:00Z", "2025-11-15T11:00:30Z", "2025-11-15T12:00:30Z",
                                      "2025-11-15T13:00:30Z"]
    assert report.cycles == 4 and report.failures == 0 and not report.stopped_by_signal


def test_a_failing_tick_is_reported_and_the_loop_goes_on():
    errors: list[tuple[int, str]] = []

    def tick(at: int) -> None:
        if at == T0 + H + 30_000:
            raise ValueError("candles for 11:00 are corrupt")

    report = run_loop(tick, candle_trigger(3600, 30), SimulatedClock(T0), Shutdown(say=str), max_cycles=3,
                      on_error=lambda at, exc: errors.append((at, str(exc))))
    assert report.cycles == 3 and report.failures == 1
    assert errors == [(T0 + H + 30_000, "candles for 11:00 are corrupt")]


def test_until_stops_the_simulated_loop():
    seen: list[int] = []
    run_loop(seen.append, candle_trigger(3600, 0), SimulatedClock(T0), Shutdown(say=str), until_ms=T0 + 3 * H)
    assert seen == [T0, T0 + H, T0 + 2 * H, T0 + 3 * H]


@pytest.fixture
def shutdown():
    said: list[str] = []
    s = Shutdown(grace_s=5, say=said.append)
    s.install()
    s.said = said  # type: ignore[attr-defined]
    yield s
    s.uninstall()


def test_sigterm_during_a_cycle_lets_it_finish_then_stops_the_loop(shutdown):
    finished: list[int] = []

    def tick(at: int) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)  # the handler runs here; the cycle carries on
        finished.append(at)

    report = run_loop(tick, candle_trigger(3600, 0), SimulatedClock(T0), shutdown, max_cycles=5)
    assert finished == [T0] and report.cycles == 1
    assert report.stopped_by_signal and not report.abandoned
    assert "finishing the cycle in progress" in shutdown.said[0]


def test_a_second_signal_abandons_the_cycle_in_progress(shutdown):
    reached: list[str] = []

    def tick(at: int) -> None:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)
        reached.append("after the first signal")
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.5)
        reached.append("after the second signal")  # never: the second signal abandons

    report = run_loop(tick, candle_trigger(3600, 0), SimulatedClock(T0), shutdown, max_cycles=5)
    assert reached == ["after the first signal"]
    assert report.abandoned and report.cycles == 0


def test_a_cycle_that_outlasts_the_grace_period_is_abandoned():
    s = Shutdown(grace_s=0.2, say=str)
    s.install()
    try:
        started = time.monotonic()

        def tick(at: int) -> None:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)

        report = run_loop(tick, candle_trigger(3600, 0), SimulatedClock(T0), s)
        assert report.abandoned and time.monotonic() - started < 2
    finally:
        s.uninstall()


def test_signals_outside_a_cycle_stop_the_loop_without_abandoning(shutdown):
    report = run_loop(lambda at: None, candle_trigger(3600, 0), SimulatedClock(T0), shutdown, max_cycles=1)
    assert report.cycles == 1
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.01)
    assert shutdown.stop.is_set() and not shutdown.abandoned


def test_a_signal_between_cycles_starts_no_further_cycle(shutdown):
    """The gap after a cycle (the pause question, the next fire) is where a signal said "stopping"
    and a cycle then began anyway; now the loop ends there."""
    ticks: list[int] = []
    asked: list[int] = []

    def paused() -> bool:
        asked.append(1)
        if len(asked) == 2:  # between the first and the second cycle
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.01)
        return False

    report = run_loop(ticks.append, candle_trigger(3600, 0), SimulatedClock(T0), shutdown, max_cycles=5,
                      paused=paused)
    assert ticks == [T0] and report.cycles == 1
    assert report.stopped_by_signal and not report.abandoned
    assert shutdown.said == ["SIGTERM: stopping"]


def test_the_real_clock_fires_on_the_apscheduler_trigger_and_stops_on_the_event():
    stop = threading.Event()
    fires: list[int] = []
    started = time.time()
    for at in RealClock().fires(candle_trigger(1, 0), stop):
        fires.append(at)
        if len(fires) == 2:
            stop.set()
    assert len(fires) == 2 and time.time() - started < 5
    assert fires[1] - fires[0] >= 500  # a second apart, give or take the machine's load
