"""`signal-agent run`: real subprocesses on the bundled data, signals, the instance lock, resumption.

The runs use a simulated clock (`--simulate-from`) stepping through the bundled sample's last
hours, or the wall clock (the sample ends in the past, so the schedule then only re-reads the
last cycle: fine for the lock tests). The config relaxes the risk gate and fees so that the
heuristic trades SOL in these hours: resumption then has an open paper position to manage.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.commands import run as command
from agent.cycle import broker_key
from agent.scheduler import LOCK_FILE
from agent.store import Store
from agent.store.tables import ClosedTradeRow, CycleRow, DecisionRow, FillRow, OrderRow, PositionRow
from tests.test_cycle_crash import assert_no_partial_decision
from theories.regime import REGIMES

ROOT = Path(__file__).resolve().parents[1]
START, END = "2025-11-15T13:00:00Z", "2025-11-15T19:00:00Z"


def write_config(path: Path) -> Path:
    policies = "".join(
        f'[risk.regime.policies."{r}"]\ndirections = "both"\nmultiplier = 1.0\nmin_confidence = 0.0\n' for r in REGIMES
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "[cycle]\n"
        'theories = { montecarlo = {}, regime = { fit_window = 300, search_reps = 0 }, kalman = {}, context = {} }\n'
        "[paper]\ntaker_fee = 0.0\nmaker_fee = 0.0\n" + policies
    )
    return path


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A machine whose only configuration is the test config; the store in a temp data directory."""
    write_config(tmp_path / "config" / "signal-agent" / "config.toml")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNAL_AGENT_")}
    env.update(XDG_CONFIG_HOME=str(tmp_path / "config"), XDG_DATA_HOME=str(tmp_path / "data"), PYTHONUNBUFFERED="1")
    for k in [k for k in os.environ if k.startswith("SIGNAL_AGENT_")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("XDG_CONFIG_HOME", env["XDG_CONFIG_HOME"])
    monkeypatch.setenv("XDG_DATA_HOME", env["XDG_DATA_HOME"])
    monkeypatch.chdir(tmp_path)
    data_dir = tmp_path / "data" / "signal-agent"
    return env, data_dir


def start(env: dict[str, str], cwd: Path, *argv: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "agent.commands.run", *argv], env=env, cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def read_until(proc: subprocess.Popen[str], marker: str, timeout: float = 60) -> list[str]:
    """Lines of the child's stdout up to the first containing `marker` (bounded: the child must say it in time)."""
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if marker in line:
            return lines
    err = proc.stderr.read()[-500:] if proc.poll() is not None else "(still running)"  # read() waits for exit
    raise AssertionError(f"{marker!r} not printed in time; got {lines[-5:]} / {err}")


def wait_until_running(path: Path, decision_ms: int, timeout: float = 60) -> None:
    """Poll the child's store (read-only) until the cycle at `decision_ms` is recorded as running.

    Signalling right after the previous cycle's line raced the gap between two cycles (the
    child then rightly stops without starting one); the row says the next cycle has begun, and
    its analysis takes far longer than this poll's 2 ms step.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as db:
            row = db.execute("SELECT status FROM cycles WHERE decision_ms = ?", (decision_ms,)).fetchone()
        if row is not None:
            assert row[0] == "running", f"the cycle at {decision_ms} was already {row[0]} when first seen"
            return
        time.sleep(0.002)
    raise AssertionError(f"no cycle at {decision_ms} began within {timeout:g} s")


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return parser.parse_args(argv)


def test_sigterm_mid_run_exits_0_with_no_partial_decision_and_a_restart_resumes(home, tmp_path, capsys):
    env, data_dir = home
    args = ("--symbols", "SOL", "--simulate-from", START, "--until", END)
    first = start(env, tmp_path, *args)
    try:
        read_until(first, "Cycle paper@2025-11-15T15:00:00Z")  # the order of 14:00 has filled by now
        wait_until_running(data_dir / "signal_agent.sqlite", 1_763_222_400_000)  # the 16:00 cycle has begun
        first.send_signal(signal.SIGTERM)
        out, err = first.communicate(timeout=60)
    finally:
        stop(first)
    assert first.returncode == 0, err
    assert "SIGTERM: finishing the cycle in progress" in out  # it landed mid-cycle, which was then finished
    assert "stopped by signal" in out.splitlines()[-1]
    assert not (data_dir / LOCK_FILE).exists()
    store = Store.at(data_dir / "signal_agent.sqlite")
    assert_no_partial_decision(store)
    assert {c.status for c in store.rows(CycleRow)} == {"completed"}  # the cycle in progress was finished
    stopped_at = store.last_decision_ms("paper")
    assert stopped_at < 1_763_233_200_000  # before 19:00: the run did stop early
    saved = store.state(broker_key("paper"))
    assert saved is not None and saved["positions"], "a paper position should be open across the restart"
    open_at_stop = set(saved["positions"])
    store.close()

    assert command.run(parse(*args)) == 0  # the restart (in-process: the interpreter's start-up is paid above)
    out = capsys.readouterr().out
    assert out.splitlines()[-1].endswith("0 failed; done")
    store = Store.at(data_dir / "signal_agent.sqlite")
    assert_no_partial_decision(store)
    cycles = store.rows(CycleRow)
    assert {c.status for c in cycles} == {"completed"} and all(c.attempts == 1 for c in cycles)
    assert sorted(c.decision_ms for c in cycles) == [1_763_211_600_000 + k * 3_600_000 for k in range(6)]  # 13..18h
    assert len(store.rows(DecisionRow)) == 6  # every hour decided once: nothing lost, nothing twice
    orders = store.rows(OrderRow)
    assert len({o.client_order_id for o in orders}) == len(orders) and orders
    assert store.rows(FillRow)
    later = {c.cycle_id for c in cycles if c.decision_ms > stopped_at}
    managed = {p.client_order_id for p in store.rows(PositionRow) if p.cycle_id in later}
    managed |= {t.client_order_id for t in store.rows(ClosedTradeRow) if t.cycle_id in later}
    assert open_at_stop <= managed, "the restarted run kept marking (or closed) the positions open at the stop"
    store.close()


def test_a_second_instance_is_refused_while_the_first_holds_the_lock(home, tmp_path, capsys):
    env, data_dir = home
    first = start(env, tmp_path, "--symbols", "SOL", "--every", "1h")  # wall clock: waits for the next hour
    try:
        read_until(first, "signal-agent run: pid")  # it holds the lock, its first cycle under way
        assert command.main(["--symbols", "SOL", "--once"]) == 2  # the second instance, through the CLI's handling
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"(pid {first.pid}) is running" in err
        assert str(data_dir / LOCK_FILE) in err
        read_until(first, "Store:")  # its first cycle (as of the sample's last close) is done
        first.send_signal(signal.SIGTERM)  # idle between fires, or still leaving the cycle it has just printed
        out, err = first.communicate(timeout=30)
    finally:
        stop(first)
    assert first.returncode == 0, err
    # "Store:" is printed inside the cycle, so the signal may land before the loop has left it (seen
    # under load): either way the run stops without another cycle
    assert "SIGTERM: stopping" in out or "SIGTERM: finishing the cycle in progress" in out
    assert "stopped by signal" in out and "1 cycle(s)" in out.splitlines()[-1]
    assert not (data_dir / LOCK_FILE).exists()


def test_a_stale_lock_is_recovered(home, capsys):
    _, data_dir = home
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    data_dir.mkdir(parents=True)
    (data_dir / LOCK_FILE).write_text(f"{dead.pid}\n")
    assert command.run(parse("--symbols", "SOL", "--simulate-from", START, "--once")) == 0
    out = capsys.readouterr().out
    assert f"recovered a stale lock left by pid {dead.pid}" in out
    assert "Cycle paper@2025-11-15T13:00:00Z" in out and "1 cycle(s), 0 failed; done" in out
    assert not (data_dir / LOCK_FILE).exists()


def test_an_abandoned_cycle_keeps_its_decided_symbols_and_the_next_start_completes_it(home, capsys, monkeypatch):
    _, data_dir = home
    real = Store.record_decision
    calls = []

    def interrupted(self, *a, **k):  # a second SIGTERM lands before the second decision's transaction
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
        return real(self, *a, **k)

    monkeypatch.setattr(Store, "record_decision", interrupted)
    args = ("--symbols", "BTC,SOL", "--simulate-from", START, "--max-cycles", "3", "--grace", "0")
    assert command.run(parse(*args)) == 0
    out = capsys.readouterr().out
    assert "abandoned (its open decision rolled back; the next start resumes it)" in out
    store = Store.at(data_dir / "signal_agent.sqlite")
    (cycle,) = store.rows(CycleRow)
    assert cycle.status == "running" and len(store.rows(DecisionRow)) == 1
    assert_no_partial_decision(store)
    store.close()

    monkeypatch.setattr(Store, "record_decision", real)
    assert command.run(parse(*args)) == 0
    out = capsys.readouterr().out
    assert "attempt 2" in out
    store = Store.at(data_dir / "signal_agent.sqlite")
    cycles = sorted(store.rows(CycleRow), key=lambda c: c.decision_ms)
    assert [c.status for c in cycles] == ["completed"] * 3 and cycles[0].attempts == 2
    assert len(store.rows(DecisionRow)) == 6
    assert_no_partial_decision(store)
    store.close()


def test_bad_schedule_flags_are_refused_naming_them(home):
    from agent.commands import UsageError

    with pytest.raises(UsageError, match="--every '1x'"):
        command.run(parse("--every", "1x"))
    with pytest.raises(UsageError, match="shorter than the interval"):
        command.run(parse("--every", "1m", "--delay", "2m"))
    with pytest.raises(UsageError, match="--at does not apply"):
        command.run(parse("--at", START))
    with pytest.raises(UsageError, match="cannot be combined with --live"):
        command.run(parse("--simulate-from", START, "--live"))
