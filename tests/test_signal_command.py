"""`signal-agent signal SYMBOL`: the command end to end, offline, on one bundled file."""

from __future__ import annotations

import argparse
import json

import pytest

from agent.commands import UsageError
from agent.commands import signal as command
from agent.market import SAMPLE_DIR
from tests.llm_servers import ollama_chat, serve

BTC_FILE = SAMPLE_DIR / "BTC_USDT.csv.gz"


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return command.run(parser.parse_args(argv))


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    import os

    for name in list(os.environ):
        if name.startswith(("SIGNAL_AGENT_", "OLLAMA_", "OPENAI_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)


def test_default_run_is_the_heuristic_offline_and_a_second_run_is_a_free_cache_hit(capsys, tmp_path):
    assert run(["BTC", "--data", str(BTC_FILE)]) == 0
    out = capsys.readouterr().out
    for part in ("Snapshot", "Prompt: baseline v1", "budget 1500", "Signal", "no LLM used", "Calls (records:"):
        assert part in out
    assert "heuristic:rules-v1 -> ok" in out
    assert (tmp_path / "data" / "signal-agent" / "llm_calls.sqlite").is_file()
    run(["BTC", "--data", str(BTC_FILE), "--json"])
    again = json.loads(capsys.readouterr().out)
    assert again["calls"][0]["cache_hit"] and again["calls"][0]["cost_usd"] == 0
    signal_lines = out.split("Signal\n------\n", 1)[1].split("\n\nCalls", 1)[0]
    assert f"{again['signal']['symbol']} {again['signal']['direction']}" in signal_lines


def test_ollama_provider_through_the_command_with_host_from_the_environment(capsys, monkeypatch):
    with serve("/api/chat") as server:
        monkeypatch.setenv("OLLAMA_HOST", server.url)
        server.push(ollama_chat("I think BTC will go up!"), ollama_chat('{"direction": "HOLD"}'))
        assert run(["BTC", "--data", str(BTC_FILE), "--provider", "ollama:qwen3:8b", "--prompt", "terse"]) == 0
    out = capsys.readouterr().out
    assert "BTC/USDT HOLD" in out and "HOLD (fail-closed, 2 call(s))" in out
    assert "Prompt: terse v1" in out and "812 reported by the provider" in out
    assert len(server.requests) == 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["BTC", "--provider", "gpt"], "unknown provider 'gpt'"),
        (["BTC", "--provider", "ollama"], "name the model"),
        (["BTC", "--prompt", "fancy"], "no prompt variant 'fancy'"),
        (["BTC", "--config", "missing.toml"], "missing.toml does not exist"),
    ],
)
def test_bad_input_is_a_usage_error_naming_it(argv, message):
    with pytest.raises(UsageError, match=message):
        run([*argv, "--data", str(BTC_FILE)])
