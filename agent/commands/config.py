"""`signal-agent config`: the effective settings (secrets masked, each changed key's source), and the example file.

`config show` prints what `agent.config.load_settings` produced, as TOML (or `--json`), with the
config file in use and, next to every key that is not at its default, where it came from: the
environment, the `.env` file or the config file. Secrets (`SecretStr`) print as `**********`.
`config example` prints the documented example, every key with its default and meaning: the
repository's `config.example.toml` is this output, and a test keeps the two identical.

The TOML is written with tomlkit (it keeps comments, quotes keys and escapes strings correctly).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tomlkit
from dotenv import dotenv_values
from pydantic import BaseModel
from tomlkit.items import Table

from agent.commands import UsageError
from agent.config import (
    CONFIG_ENV,
    DEFAULT_PRICES,
    ENV_PREFIX,
    ClientEnvSource,
    ConfigError,
    Settings,
    default_config_path,
    load_settings,
)

NAME = "config"
HELP = "show the effective settings with secrets masked (config show), or the documented example (config example)"

Path_ = tuple[str, ...]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="config_command", required=True, metavar="{show,example}")
    show = sub.add_parser("show", help="the effective settings: file, environment and .env merged; secrets masked")
    show.add_argument("--config", metavar="PATH", help="settings file (default: $SIGNAL_AGENT_CONFIG or ~/.config)")
    show.add_argument("--json", action="store_true", help="JSON instead of TOML")
    sub.add_parser("example", help="every key with its default and meaning (what config.example.toml holds)")


# -- where values came from ---------------------------------------------------------------------


def config_path_in_use(config: str | None) -> tuple[Path, bool]:
    """The file `load_settings` reads (same rule), and whether it exists."""
    path = Path(config if config is not None else os.environ.get(CONFIG_ENV) or default_config_path())
    return path, path.is_file()


def _flatten(data: Mapping[str, Any], prefix: Path_ = ()) -> dict[Path_, str]:
    out: dict[Path_, str] = {}
    for key, value in data.items():
        if isinstance(value, Mapping) and value:
            out.update(_flatten(value, (*prefix, key)))
        else:
            out[(*prefix, key)] = ""
    return out


def sources(config_file: Path | None, env_file: str | Path = ".env",
            environ: Mapping[str, str] | None = None) -> dict[Path_, str]:
    """Dotted key path -> where its value was set, highest priority winning (as `load_settings` ranks them)."""
    env = os.environ if environ is None else environ
    found: dict[Path_, str] = {}
    if config_file is not None and config_file.is_file():
        import tomllib

        try:
            found.update(dict.fromkeys(_flatten(tomllib.loads(config_file.read_text(encoding="utf-8"))),
                                       f"file {config_file}"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError):  # load_settings has already refused it
            pass
    dotenv = {k: v for k, v in dotenv_values(env_file).items() if v} if Path(env_file).is_file() else {}
    for origin, values in ((f"{env_file}", dotenv), ("environment", env)):
        for name, path in ClientEnvSource.MAP.items():
            if values.get(name):
                found[path] = f"{origin} {name}"
    for origin, values in ((f"{env_file}", dotenv), ("environment", env)):
        for name in values:
            if name.upper().startswith(ENV_PREFIX) and name.upper() != CONFIG_ENV and values[name]:
                path = tuple(name[len(ENV_PREFIX):].lower().split("__"))
                for known in list(found):  # a whole section from the environment overrides the file's keys in it
                    if known[: len(path)] == path:
                        del found[known]
                found[path] = f"{origin} {name}"
    return {k: v for k, v in found.items() if k[0] in Settings.model_fields}  # not the exchange keys' names


def _source_of(path: Path_, found: Mapping[Path_, str]) -> str | None:
    for n in range(len(path), 0, -1):
        if path[:n] in found:
            return found[path[:n]]
    return None


# -- TOML -----------------------------------------------------------------------------------------


def _comment_lines(table: Table, text: str) -> None:
    for line in text.splitlines():
        table.add(tomlkit.comment(line))


def _plain(value: Any) -> Any:
    """JSON data -> TOML data: TOML has no null, so a None inside a mapping (a theory's "defaults") is {}."""
    if isinstance(value, dict):
        return {k: ({} if v is None else _plain(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _is_model_map(value: Any) -> bool:
    return isinstance(value, Mapping) and bool(value) and all(isinstance(v, BaseModel) for v in value.values())


def _fill(table: Table, model: BaseModel, data: Mapping[str, Any], path: Path_, describe: bool,
          found: Mapping[Path_, str] | None, omit: frozenset[str] = frozenset()) -> None:
    fields = type(model).model_fields
    later: list[str] = []
    for name, info in fields.items():  # TOML: a table's own keys come before its sub-tables
        if name in omit:
            continue
        value = getattr(model, name)
        if isinstance(value, BaseModel) or _is_model_map(value):
            later.append(name)
            continue
        if describe and info.description:
            _comment_lines(table, info.description)
        item_data = data.get(name)
        source = _source_of((*path, name), found) if found is not None else None
        if item_data is None:
            table.add(tomlkit.comment(f"{name} =    (unset)" + (f"    # from {source}" if source else "")))
            continue
        item = tomlkit.item(_plain(item_data))
        if source:
            item.comment(f"from {source}")
        table.add(name, item)
    for name in later:
        value, info = getattr(model, name), fields[name]
        sub = tomlkit.table()
        if describe and info.description:
            _comment_lines(sub, info.description)
        if isinstance(value, BaseModel):
            _fill(sub, value, data[name], (*path, name), describe, found)
        else:
            for key, member in value.items():
                inner = tomlkit.table()
                _fill(inner, member, data[name][key], (*path, name, key), describe, found)
                sub.add(key, inner)
        table.add(name, sub)


def render_toml(settings: Settings, *, describe: bool, found: Mapping[Path_, str] | None = None,
                header: str = "", omit: frozenset[str] = frozenset()) -> str:
    """The settings as TOML; secrets masked (pydantic dumps a SecretStr as '**********')."""
    doc = tomlkit.document()
    if header:
        for line in header.splitlines():
            doc.add(tomlkit.comment(line))
        doc.add(tomlkit.nl())
    body = tomlkit.table()
    _fill(body, settings, settings.model_dump(mode="json"), (), describe, found, omit)
    for key, value in body.value.body:
        if key is None:
            doc.add(value)
        else:
            doc.add(key, value)
    return tomlkit.dumps(doc)


EXAMPLE_HEADER = """\
signal-agent configuration: every key, at its default, with its meaning.

Copy to ~/.config/signal-agent/config.toml (or pass --config PATH, or set SIGNAL_AGENT_CONFIG)
and keep only the keys you change. Every key can also be set in the environment or in a .env
file: SIGNAL_AGENT_ + the key path joined by "__", e.g. SIGNAL_AGENT_BUDGET__DAILY_USD=2.
Secrets never go in this file: OPENAI_API_KEY (or SIGNAL_AGENT_LLM__OPENAI__API_KEY), the
exchange keys SIGNAL_AGENT_EXCHANGE_API_KEY / SIGNAL_AGENT_EXCHANGE_API_SECRET,
TELEGRAM_BOT_TOKEN / TELEGRAM_CHAT_ID and WEBHOOK_SECRET come from the environment or .env.
Keys shown as "(unset)" have no value by default; TOML has no null.
Maps replace their default as a whole: the [cycle.theories.*] tables you write ARE the theory set
(an empty table: the theory with its default parameters), and [risk.regime.policies.*] must
name all six regimes.

This file is generated by `signal-agent config example`; a test keeps it identical.

data_dir: where the store, the call records and the run lock live.
data_dir = "/var/lib/signal-agent"    (default: $XDG_DATA_HOME/signal-agent, else ~/.local/share/signal-agent)

prices: USD per million tokens by "provider:model" or "provider:*"; paid models must be priced here,
e.g. [prices."openai:gpt-4o-mini"] input_per_million = 0.15, output_per_million = 0.60
(check the provider's price page). Local models and the heuristic cost nothing (below).\
"""


def example_settings() -> Settings:
    """The defaults, untouched by this machine's environment and files."""
    return Settings.model_construct(prices=dict(DEFAULT_PRICES))


def example_text() -> str:
    # data_dir's default depends on the machine: the header documents it instead of a value
    return render_toml(example_settings(), describe=True, header=EXAMPLE_HEADER, omit=frozenset({"data_dir"}))


def run(args: argparse.Namespace) -> int:
    if args.config_command == "example":
        print(example_text(), end="")
        return 0
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    path, exists = config_path_in_use(args.config)
    found = sources(path if exists else None)
    where = f"config file: {path}" if exists else f"config file: none ({path} does not exist; defaults apply)"
    if args.json:
        print(json.dumps({
            "config_file": str(path) if exists else None,
            "settings": settings.model_dump(mode="json"),
            "sources": {".".join(k): v for k, v in sorted(found.items())},
        }, indent=2, sort_keys=True))
        return 0
    legend = ("secrets are masked; '# from ...' marks each key set by the file, the environment or .env "
              "(the others: defaults)")
    print(render_toml(settings, describe=False, found=found, header=f"{where}\n{legend}"), end="")
    return 0
