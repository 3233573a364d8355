"""`signal-agent cycle` on a fresh machine: bundled data, heuristic provider, paper broker, a table."""

from __future__ import annotations

import argparse
import json

import pytest

from agent.commands import UsageError
from agent.commands import cycle as command
from agent.store import Store
from agent.store.tables import DecisionRow


@pytest.fixture
def fresh_machine(tmp_path, monkeypatch):
    """No config file, no .env, empty data directory."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.delenv("SIGNAL_AGENT_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return parser.parse_args(argv)


def test_cycle_with_no_configuration_prints_the_decisions_and_where_the_store_is(fresh_machine, capsys, monkeypatch):
    monkeypatch.setenv("SIGNAL_AGENT_KILL_SWITCH", "1")  # the environment can halt trading
    assert command.run(parse("--symbols", "BTC")) == 0
    out = capsys.readouterr().out
    assert "BTC/USDT" in out and "SHORT" in out and "kill_switch" in out  # the heuristic's short, refused
    store_file = fresh_machine / "data" / "signal-agent" / "signal_agent.sqlite"
    assert "Cycle paper@2025-11-16T00:00:00Z" in out  # as of the bundled sample's last close
    assert "symbol" in out and "gate" in out and "BTC/USDT" in out
    assert "Paper account: equity 10000.00" in out
    assert f"Store: sqlite:///{store_file}" in out
    store = Store.at(store_file)
    (d,) = store.rows(DecisionRow)
    assert d.symbol == "BTC/USDT" and d.outcome in ("hold", "rejected", "ordered")
    assert d.outcome in out
    store.close()

    assert command.run(parse("--symbols", "BTC", "--json")) == 0  # the same cycle again: read back
    again = json.loads(capsys.readouterr().out)
    assert again["attempt"] == 1 and again["results"][0]["resumed"] is True  # completed: nothing redone


def test_a_time_before_the_data_skips_the_symbol_with_the_reason(fresh_machine, capsys):
    assert command.run(parse("--symbols", "ETH", "--at", "2025-08-20T00:00:00Z")) == 0
    out = capsys.readouterr().out
    assert "skipped" in out and "candles closed by" in out


def test_bad_input_is_a_usage_error_naming_it(fresh_machine):
    with pytest.raises(UsageError, match="unknown provider"):
        command.run(parse("--provider", "nonsense"))
    with pytest.raises(KeyError, match="DOGE"):
        command.run(parse("--symbols", "DOGE"))
    with pytest.raises(UsageError, match="run"):
        command.run(parse("--run", "no spaces allowed"))
