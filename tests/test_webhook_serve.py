"""`signal-agent serve`: refuses without a secret, shares `run`'s lock, and stops gracefully on SIGTERM."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from agent.cli import main
from agent.scheduler import LOCK_FILE, InstanceLock
from agent.store import Store
from agent.store.tables import WebhookAlertRow
from tests.test_run_command import read_until
from tests.test_webhook import SECRET, THEORIES, alert, post

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A machine whose only configuration is a small test config; the store in a temp data directory."""
    config = tmp_path / "config" / "signal-agent" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(f"[cycle]\ntheories = {THEORIES}\n")
    for k in [k for k in os.environ if k.startswith(("SIGNAL_AGENT_", "TELEGRAM_")) or k == "WEBHOOK_SECRET"]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)  # no stray .env
    return tmp_path / "data" / "signal-agent"


def test_serve_refuses_to_start_without_a_secret_with_exit_2(home, capsys):
    assert main(["serve", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "WEBHOOK_SECRET is not set" in err and "Traceback" not in err
    assert not (home / LOCK_FILE).exists()


def test_serve_refuses_a_short_secret(home, monkeypatch, capsys):
    monkeypatch.setenv("WEBHOOK_SECRET", "short")
    assert main(["serve", "--port", "0"]) == 2
    assert "too short" in capsys.readouterr().err


def test_serve_reads_the_secret_from_a_dot_env_file(home, tmp_path, monkeypatch, capsys):
    (tmp_path / ".env").write_text(f"WEBHOOK_SECRET={SECRET}\n")
    lock = InstanceLock(home / LOCK_FILE)
    lock.acquire()  # ... and then stops at the lock: the secret was found, or it would have said so
    try:
        assert main(["serve", "--port", "0"]) == 2
    finally:
        lock.release()
    err = capsys.readouterr().err
    assert "WEBHOOK_SECRET" not in err and "must not operate the same run at once" in err


def test_serve_and_run_never_operate_at_once(home, monkeypatch, capsys):
    monkeypatch.setenv("WEBHOOK_SECRET", SECRET)
    lock = InstanceLock(home / LOCK_FILE)
    lock.acquire()  # what a running `signal-agent run` holds
    try:
        assert main(["serve", "--port", "0"]) == 2
    finally:
        lock.release()
    assert f"pid {os.getpid()}" in capsys.readouterr().err


def test_sigterm_stops_the_server_gracefully_after_its_alert_cycle(home, tmp_path):
    env = {**os.environ, "WEBHOOK_SECRET": SECRET, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "serve", "--port", "0", "--symbols", "BTC,ETH"],
                            env=env, cwd=tmp_path, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = read_until(proc, "listening on", timeout=90)[-1]
        port = int(re.search(r"127\.0\.0\.1:(\d+)", line).group(1))
        assert (home / LOCK_FILE).exists()
        r = post(port, alert(strategy="sigterm", symbol="ETHUSDT", price=3000.0))
        assert r.status == 202
        read_until(proc, f"alert {r['alert_id']}: cycle", timeout=90)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/health")
        health = json.loads(conn.getresponse().read())
        conn.close()
        assert health["status"] == "ok" and health["last_cycle"]["kind"] == "alert"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 0, err
    assert out.strip().splitlines()[-1] == "signal-agent serve: stopped"
    assert not (home / LOCK_FILE).exists()
    store = Store.at(home / "signal_agent.sqlite")
    try:
        assert store.rows(WebhookAlertRow, alert_id=r["alert_id"])[0].status == "done"
    finally:
        store.close()
