"""`signal-agent cycle --live`: refused unless the config and the command line both ask, and keys exist;
when they do, the cycle trades through the live broker (here against the local Binance imitation)."""

from __future__ import annotations

import os

import pytest

from agent.cli import main
from agent.store import Store
from agent.store.tables import CycleRow
from tests.exchange_server import FakeBinance

KEY = "kEyLiveFlagsTest0123456789abcdefABCDEF"
SECRET = "sEcReTLiveFlags9876543210zyxwvutsrqpon"


@pytest.fixture
def machine(tmp_path, monkeypatch):
    for k in [k for k in os.environ if k.startswith(("SIGNAL_AGENT_", "OPENAI_", "OLLAMA_"))]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)  # no .env here
    config = tmp_path / "config" / "signal-agent" / "config.toml"
    config.parent.mkdir(parents=True)
    return tmp_path, config


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("signal-agent: error: live trading refused: "), err
    return err


def test_live_without_enabled_in_the_config_is_refused_with_exit_2(machine, capsys):
    assert main(["cycle", "--symbols", "BTC", "--live"]) == 2
    assert "set `enabled = true` in the [live] section" in one_line_error(capsys)
    assert not (machine[0] / "data" / "signal-agent" / "signal_agent.sqlite").exists()  # nothing ran


def test_enabled_config_without_keys_names_the_missing_variables(machine, capsys):
    machine[1].write_text("[live]\nenabled = true\n")
    assert main(["cycle", "--symbols", "BTC", "--live"]) == 2
    err = one_line_error(capsys)
    assert "SIGNAL_AGENT_EXCHANGE_API_KEY and SIGNAL_AGENT_EXCHANGE_API_SECRET" in err


def test_a_key_in_the_environment_is_not_enough_without_the_secret_and_is_never_shown(machine, monkeypatch, capsys):
    machine[1].write_text("[live]\nenabled = true\n")
    monkeypatch.setenv("SIGNAL_AGENT_EXCHANGE_API_KEY", KEY)
    assert main(["cycle", "--symbols", "BTC", "--live"]) == 2
    err = one_line_error(capsys)
    assert "SIGNAL_AGENT_EXCHANGE_API_SECRET" in err and KEY not in err


@pytest.mark.parametrize(
    ("config", "argv", "message"),
    [
        ("[live]\nenabled = true\n", ["--production"], "not asked for on the command line"),
        ("[live]\nenabled = true\n", ["--live", "--production"], "the config has `sandbox = true`"),
        ("[live]\nenabled = true\nsandbox = false\n", ["--live"], "add the production flag"),
    ],
)
def test_production_needs_both_switches(machine, capsys, config, argv, message):
    machine[1].write_text(config)
    assert main(["cycle", "--symbols", "BTC", *argv]) == 2
    assert message in one_line_error(capsys)


def test_a_live_cycle_runs_through_the_live_broker_on_the_sandbox(machine, monkeypatch, capsys):
    import agent.brokers.live_exchange as live_exchange

    tmp_path, config = machine
    config.write_text("[live]\nenabled = true\nrate_limit = false\nrequest_timeout_ms = 2000\n"
                      "[cycle]\ntheories = { regime = { fit_window = 300, search_reps = 0 }, kalman = {} }\n")
    monkeypatch.setenv("SIGNAL_AGENT_EXCHANGE_API_KEY", KEY)
    monkeypatch.setenv("SIGNAL_AGENT_EXCHANGE_API_SECRET", SECRET)
    with FakeBinance(KEY, SECRET) as fake:
        real_connect = live_exchange.connect_exchange
        modes: list[str] = []

        def connect_here(settings, credentials, mode, api_base_url=None):
            modes.append(mode)
            return real_connect(settings, credentials, mode, api_base_url=fake.url)  # the imitation, not Binance

        monkeypatch.setattr(live_exchange, "connect_exchange", connect_here)
        assert main(["cycle", "--symbols", "BTC", "--live"]) == 0
        paths = fake.paths()
    out = capsys.readouterr().out
    assert modes == ["sandbox"]
    assert "Cycle live@2025-11-16T00:00:00Z" in out  # a live run is filed apart from the paper account
    assert "Live account: equity" in out and "Paper account" not in out
    assert any("/api/v3/account" in p for p in paths) and any("openOrders" in p for p in paths)  # reconciled
    store = Store.at(tmp_path / "data" / "signal-agent" / "signal_agent.sqlite")
    (cycle,) = store.rows(CycleRow)
    assert cycle.broker == "live" and cycle.run == "live" and cycle.status == "completed"
    store.close()
    assert KEY not in out and SECRET not in out
