"""The one config loader: TOML file, environment, .env, the LLM clients' own variables, secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import ConfigError, Settings, default_config_path, load_settings

TOML = """
data_dir = "{data}"
[llm]
provider = "ollama:qwen3:8b"
prompt = "terse"
[llm.ollama]
host = "http://10.0.0.5:11434"
[llm.openai]
api_key = "sk-from-file"
[prices."openai:gpt-4o-mini"]
input_per_million = 0.15
output_per_million = 0.60
[budget]
daily_usd = 2.5
[signal]
min_reward_risk = 2.0
"""


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for name in ("OLLAMA_HOST", "OPENAI_BASE_URL", "OPENAI_API_KEY", "SIGNAL_AGENT_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    import os

    for name in list(os.environ):
        if name.startswith("SIGNAL_AGENT_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.chdir(tmp_path)


def write(tmp_path: Path, text: str = TOML) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text.format(data=tmp_path / "state"))
    return path


def test_defaults_need_no_file_and_no_network(tmp_path):
    s = load_settings()
    assert s.llm.provider == "heuristic" and s.llm.prompt == "baseline"
    assert s.budget.daily_usd == 5.0 and s.signal.min_reward_risk == 1.5
    assert s.data_dir == tmp_path / "xdg-data" / "signal-agent"
    assert s.records_path.name == "llm_calls.sqlite"
    assert default_config_path() == tmp_path / "xdg-config" / "signal-agent" / "config.toml"


def test_toml_file_sets_every_section(tmp_path):
    s = load_settings(write(tmp_path))
    assert s.data_dir == tmp_path / "state"
    assert (s.llm.provider, s.llm.prompt, s.llm.ollama.host) == ("ollama:qwen3:8b", "terse", "http://10.0.0.5:11434")
    assert s.budget.daily_usd == 2.5 and s.signal.min_reward_risk == 2.0
    assert s.price_for("openai", "gpt-4o-mini").input_per_million == 0.15


def test_config_path_from_the_environment_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("SIGNAL_AGENT_CONFIG", str(write(tmp_path)))
    assert load_settings().budget.daily_usd == 2.5


def test_environment_overrides_the_file_with_nested_names(tmp_path, monkeypatch):
    monkeypatch.setenv("SIGNAL_AGENT_BUDGET__DAILY_USD", "1.25")
    monkeypatch.setenv("SIGNAL_AGENT_LLM__OLLAMA__HOST", "http://127.0.0.1:9999")
    s = load_settings(write(tmp_path))
    assert s.budget.daily_usd == 1.25 and s.llm.ollama.host == "http://127.0.0.1:9999"
    assert s.signal.min_reward_risk == 2.0  # untouched by the environment


def test_dotenv_file_is_read(tmp_path):
    (tmp_path / ".env").write_text("SIGNAL_AGENT_BUDGET__PER_CYCLE_USD=0.05\nOPENAI_API_KEY=sk-from-dotenv\n")
    s = load_settings()
    assert s.budget.per_cycle_usd == 0.05
    assert s.llm.openai.api_key.get_secret_value() == "sk-from-dotenv"


def test_the_clients_own_variables_work_and_rank_above_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", "http://gpu-box:11434")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:8000/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    s = load_settings(write(tmp_path))
    assert s.llm.ollama.host == "http://gpu-box:11434"
    assert s.llm.openai.base_url == "http://127.0.0.1:8000/v1"
    assert s.llm.openai.api_key.get_secret_value() == "sk-env"
    monkeypatch.setenv("SIGNAL_AGENT_LLM__OPENAI__API_KEY", "sk-ours")
    assert load_settings(write(tmp_path)).llm.openai.api_key.get_secret_value() == "sk-ours"


def test_secrets_never_show_in_repr_or_dumps(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-very-secret")
    s = load_settings()
    assert "sk-very-secret" not in repr(s) and "sk-very-secret" not in str(s)
    assert "sk-very-secret" not in s.model_dump_json()


def test_explicit_missing_file_is_an_error_naming_it(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.toml does not exist"):
        load_settings(tmp_path / "nope.toml")


def test_broken_toml_and_bad_values_are_errors_naming_the_place(tmp_path):
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write(tmp_path, "[llm\n"))
    with pytest.raises(ConfigError, match=r"budget\.daily_usd"):
        load_settings(write(tmp_path, "[budget]\ndaily_usd = -1\n"))
    with pytest.raises(ConfigError, match=r"llm\.temprature"):
        load_settings(write(tmp_path, "[llm]\ntemprature = 0.2\n"))
    with pytest.raises(ConfigError, match=r"unknown keys \['budgets'\]"):
        load_settings(write(tmp_path, "[budgets]\ndaily_usd = 1\n"))


def test_bad_value_error_does_not_echo_a_secret(tmp_path, monkeypatch):
    monkeypatch.setenv("SIGNAL_AGENT_LLM__OPENAI__TIMEOUT_S", "sk-leaky")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "sk-leaky" not in str(info.value)


def test_prices_keep_the_free_local_defaults_and_match_wildcards(tmp_path):
    s = load_settings(write(tmp_path))
    assert s.price_for("ollama", "anything").cost(10_000, 1_000) == 0
    assert s.price_for("openai", "gpt-unknown") is None
    assert s.price_for("openai", "gpt-4o-mini").cost(1_000_000, 1_000_000) == pytest.approx(0.75)
    with pytest.raises(ConfigError, match="provider:model"):
        load_settings(write(tmp_path, '[prices."gpt-4o"]\ninput_per_million = 1\noutput_per_million = 2\n'))


def test_settings_sections_are_nested_models_so_later_features_can_add_theirs():
    assert set(Settings.model_fields) >= {"data_dir", "llm", "prices", "budget", "signal"}
