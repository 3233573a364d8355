"""config.example.toml documents every key at its default, and cannot drift from the Settings models."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from agent.commands.config import example_settings, example_text
from agent.config import Settings, load_settings

EXAMPLE = Path(__file__).resolve().parents[1] / "config.example.toml"


def leaf_fields(model: type[BaseModel], prefix: str = ""):
    """Every (dotted path, field name) of the settings tree, map members of model type descended into."""
    for name, info in model.model_fields.items():
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            yield from leaf_fields(ann, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", name


def test_the_repository_example_is_exactly_what_config_example_prints():
    assert EXAMPLE.read_text(encoding="utf-8") == example_text(), (
        "config.example.toml is stale: regenerate it with `signal-agent config example > config.example.toml`"
    )


def test_every_key_of_every_section_appears_with_its_meaning():
    text = EXAMPLE.read_text(encoding="utf-8")
    def documented(path: str, name: str) -> bool:  # a `key = value` line (commented when unset) or a map's table
        line = re.search(rf"^(# )?{re.escape(name)} = ", text, flags=re.MULTILINE)
        return bool(line) or f"[{path}]" in text or f"[{path}." in text

    missing = [path for path, name in leaf_fields(Settings) if not documented(path, name)]
    assert not missing, f"undocumented keys: {missing}"
    for section in ("llm", "llm.ollama", "llm.openai", "budget", "signal", "risk", "risk.sizing", "risk.ftmo",
                    "risk.breakers", "risk.correlation", "risk.regime", "risk.universe.symbols", "cycle", "cycle.data",
                    "paper", "store", "live", "live.retry"):
        assert f"\n[{section}]\n" in text, section
    assert "# Allow live trading at all (the command line must ask as well).\nenabled = false" in text


def test_loading_the_example_gives_the_defaults(tmp_path, monkeypatch):
    for k in [k for k in __import__("os").environ if k.startswith(("SIGNAL_AGENT_", "OPENAI_", "OLLAMA_"))]:
        monkeypatch.delenv(k)
    loaded = load_settings(EXAMPLE, env_file=None)
    defaults = example_settings().model_copy(update={"data_dir": loaded.data_dir})
    got, want = loaded.model_dump(mode="json"), defaults.model_dump(mode="json")
    # TOML has no null: a theory "with its defaults" is written {} (build_snapshot treats both alike)
    want["cycle"]["theories"] = {k: v or {} for k, v in want["cycle"]["theories"].items()}
    assert got == want
    assert loaded.live.enabled is False and loaded.live.sandbox is True  # the safe defaults, explicitly

