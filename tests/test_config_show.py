"""`signal-agent config show`: the effective settings, their sources, and never a secret."""

from __future__ import annotations

import argparse
import json
import os
import tomllib

import pytest

from agent.commands import UsageError
from agent.commands import config as command

SECRET = "sk-test-7f3a9c0d1e2b4a5f"


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return parser.parse_args(argv)


@pytest.fixture
def machine(tmp_path, monkeypatch):
    for k in [k for k in os.environ if k.startswith(("SIGNAL_AGENT_", "OPENAI_", "OLLAMA_"))]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "config" / "signal-agent" / "config.toml"
    path.parent.mkdir(parents=True)
    path.write_text('[llm]\nprovider = "openai:gpt-4o-mini"\n[budget]\ndaily_usd = 3.0\n[live]\nenabled = true\n')
    return tmp_path, path


def test_a_secret_from_the_environment_never_appears_in_either_format(machine, monkeypatch, capsys):
    monkeypatch.setenv("SIGNAL_AGENT_LLM__OPENAI__API_KEY", SECRET)
    assert command.run(parse("show")) == 0
    text = capsys.readouterr().out
    assert SECRET not in text
    assert 'api_key = "**********" # from environment SIGNAL_AGENT_LLM__OPENAI__API_KEY' in text
    assert command.run(parse("show", "--json")) == 0
    out = capsys.readouterr().out
    assert SECRET not in out
    assert json.loads(out)["settings"]["llm"]["openai"]["api_key"] == "**********"


def test_the_clients_own_key_variable_and_a_dotenv_secret_are_masked_too(machine, monkeypatch, capsys):
    tmp_path, _ = machine
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    (tmp_path / ".env").write_text(
        f"SIGNAL_AGENT_EXCHANGE_API_SECRET={SECRET}x\nSIGNAL_AGENT_BUDGET__PER_CYCLE_USD=0.25\n")
    assert command.run(parse("show")) == 0
    text = capsys.readouterr().out
    assert SECRET not in text
    assert 'api_key = "**********" # from environment OPENAI_API_KEY' in text
    assert "per_cycle_usd = 0.25 # from .env SIGNAL_AGENT_BUDGET__PER_CYCLE_USD" in text


def test_show_names_the_file_in_use_and_where_each_changed_key_came_from(machine, monkeypatch, capsys):
    _, path = machine
    monkeypatch.setenv("SIGNAL_AGENT_BUDGET__DAILY_USD", "2")  # the environment beats the file
    assert command.run(parse("show")) == 0
    text = capsys.readouterr().out
    assert f"# config file: {path}" in text.splitlines()[0]
    assert 'provider = "openai:gpt-4o-mini" # from file ' + str(path) in text
    assert "daily_usd = 2.0 # from environment SIGNAL_AGENT_BUDGET__DAILY_USD" in text
    assert "enabled = true # from file" in text
    assert "max_stale_bars = 0\n" in text  # a default: no source
    shown = tomllib.loads(text)  # what it prints is TOML that reads back as the same settings
    assert shown["budget"]["daily_usd"] == 2.0 and shown["live"]["enabled"] is True
    assert shown["cycle"]["data"]["min_candles"] == 300


def test_show_without_a_config_file_says_the_defaults_apply(machine, capsys):
    _, path = machine
    path.unlink()
    assert command.run(parse("show", "--json")) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["config_file"] is None and shown["sources"] == {}
    assert shown["settings"]["llm"]["provider"] == "heuristic"


def test_a_broken_config_is_a_usage_error_naming_the_key(machine):
    _, path = machine
    path.write_text("[budget]\ndaily_usd = -1\n")
    with pytest.raises(UsageError, match=r"budget\.daily_usd"):
        command.run(parse("show"))


def test_config_example_prints_the_documented_defaults(capsys):
    assert command.run(parse("example")) == 0
    out = capsys.readouterr().out
    assert out == command.example_text() and "[live.retry]" in out


def test_sources_name_the_variable_each_secret_came_from(tmp_path):
    """Telegram and webhook secrets set by their own conventional names are traced to them."""
    env = {"TELEGRAM_BOT_TOKEN": "123:abc", "WEBHOOK_SECRET": "s" * 20, "OLLAMA_HOST": "http://127.0.0.1:1"}
    found = command.sources(None, env_file=tmp_path / "none.env", environ=env)
    assert found[("telegram", "bot_token")] == "environment TELEGRAM_BOT_TOKEN"
    assert found[("webhook", "secret")] == "environment WEBHOOK_SECRET"
    assert found[("llm", "ollama", "host")] == "environment OLLAMA_HOST"
    assert ("telegram", "chat_id") not in found
