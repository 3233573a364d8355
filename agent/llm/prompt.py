"""Prompt templates: load a variant from `prompts/`, render it from a snapshot, hash it, size it.

A template is a plain text file `prompts/<variant>.txt`: header lines `# prompt: NAME`,
`# version: N` (and any other `# key: value`), then a `[system]` part and a `[user]` part.
Placeholders are `string.Template` names (`$snapshot`); a template must use only the names in
`PLACEHOLDERS` and must use `$snapshot`, `$constraints` and `$fields`, so no variant can forget
the data, the rules or the answer format.

Token counts: providers report the real count and it is recorded with each call. Offline,
`estimate_tokens` gives a documented, deliberately high estimate (see its docstring).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from string import Template
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from agent.signal import Signal, SignalRules
from agent.snapshot import ANONYMOUS_SYMBOL, FeatureSnapshot

PROMPTS_DIR = Path(__file__).resolve().parents[2] / "prompts"
PLACEHOLDERS = frozenset({"symbol", "snapshot", "positions", "outcomes", "constraints", "fields"})
REQUIRED = frozenset({"snapshot", "constraints", "fields"})
TOKEN_BUDGET = 1500  # input tokens per decision, one symbol, every theory on (issue 5)
MAX_OUTCOMES_SHOWN = 10


class PromptError(ValueError):
    """A template that cannot be used; the message names the file and the rule."""


class PromptTemplate(BaseModel):
    model_config = ConfigDict(frozen=True)

    variant: str
    version: str
    system: str
    user: str
    sha256: str = Field(description="Hash of the template file's text.")

    @classmethod
    def load(cls, variant: str, directory: Path = PROMPTS_DIR) -> PromptTemplate:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", variant):
            raise PromptError(f"prompt variant {variant!r}: use letters, digits, '.', '_' or '-'")
        path = directory / f"{variant}.txt"
        if not path.is_file():
            known = sorted(p.stem for p in directory.glob("*.txt"))
            raise PromptError(f"no prompt variant {variant!r} in {directory}; known: {', '.join(known) or 'none'}")
        return cls.parse(path.read_text(encoding="utf-8"), source=str(path), variant=variant)

    @classmethod
    def parse(cls, text: str, source: str, variant: str) -> PromptTemplate:
        header: dict[str, str] = {}
        parts: dict[str, list[str]] = {}
        current = None
        for line in text.splitlines():
            if current is None and line.startswith("#"):
                key, _, value = line[1:].partition(":")
                header[key.strip()] = value.strip()
            elif line.strip() in ("[system]", "[user]"):
                current = line.strip()[1:-1]
                if current in parts:
                    raise PromptError(f"{source}: [{current}] appears twice")
                parts[current] = []
            elif current is not None:
                parts[current].append(line)
            elif line.strip():
                raise PromptError(f"{source}: text before [system]: {line[:60]!r}")
        for key in ("prompt", "version"):
            if not header.get(key):
                raise PromptError(f"{source}: missing header line '# {key}: ...'")
        if header["prompt"] != variant:
            raise PromptError(f"{source}: header names prompt {header['prompt']!r}, file is {variant!r}")
        if set(parts) != {"system", "user"}:
            raise PromptError(f"{source}: needs a [system] and a [user] part, found {sorted(parts)}")
        system, user = ("\n".join(parts[k]).strip() for k in ("system", "user"))
        names: set[str] = set()
        for part in (system, user):
            t = Template(part)
            if not t.is_valid():
                raise PromptError(f"{source}: a '$' that is not a placeholder (write '$$' for a dollar sign)")
            names |= set(t.get_identifiers())
        if unknown := names - PLACEHOLDERS:
            raise PromptError(f"{source}: unknown placeholders {sorted(unknown)}; allowed: {sorted(PLACEHOLDERS)}")
        if missing := REQUIRED - names:
            raise PromptError(f"{source}: must use placeholders {sorted(missing)}")
        return cls(
            variant=variant, version=header["version"], system=system, user=user,
            sha256=hashlib.sha256(text.encode()).hexdigest(),
        )


class OpenPosition(BaseModel):
    """An open trade the prompt mentions. Prices in the quote currency."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    symbol: str
    direction: Literal["LONG", "SHORT"]
    entry: float = Field(gt=0)
    stop: float = Field(gt=0)
    target: float | None = Field(None, gt=0)


class RenderedPrompt(BaseModel):
    """What is sent: the two messages, which template made them, and their hash."""

    model_config = ConfigDict(frozen=True)

    variant: str
    version: str
    template_sha256: str
    system: str
    user: str
    anonymised: bool
    snapshot_text: str = Field(default="", description="The snapshot as the prompt shows it ($snapshot).")

    @property
    def messages(self) -> list[dict[str, str]]:
        return [{"role": "system", "content": self.system}, {"role": "user", "content": self.user}]

    @property
    def sha256(self) -> str:
        return _prompt_sha256(self.system, self.user)

    @property
    def estimated_tokens(self) -> int:
        return estimate_messages_tokens(self.messages)


def messages_hash(messages: Sequence[dict[str, str]]) -> str:
    return hashlib.sha256(json.dumps(list(messages), sort_keys=True, ensure_ascii=False).encode()).hexdigest()


@functools.lru_cache(maxsize=16)
def _prompt_sha256(system: str, user: str) -> str:
    """`messages_hash` of a prompt's two messages, remembered by their text: a decision asks for it
    twice (the call's key, then the signal's record), and encoding a few kilobytes of prompt costs."""
    return messages_hash([{"role": "system", "content": system}, {"role": "user", "content": user}])


@functools.cache
def fields_text() -> str:
    """One line per Signal field: name, JSON type, meaning (the prompt's compact copy of the schema).

    Computed once: the Signal model is fixed at import, and generating its JSON schema costs
    milliseconds, which every decision of a replay would otherwise pay.
    """
    schema = Signal.model_json_schema()["properties"]
    lines = []
    for name, prop in schema.items():
        types = [p.get("type", "") for p in prop.get("anyOf", [prop])]
        kind = "|".join(t for t in types if t) or "string"
        if "enum" in prop:
            kind = "|".join(prop["enum"])
        elif kind == "array":
            kind = "list of names"
        lines.append(f"{name} ({kind}): {prop.get('description', '')}")
    return "\n".join(lines)


def positions_text(positions: Sequence[OpenPosition], symbol: str, factor: float | None = None) -> str:
    """Open positions in words. With `factor` (anonymised prompt) only `symbol`'s positions are shown,
    rebased by `factor` and named as the anonymous asset; other assets are only counted, since their
    tickers and prices would undo the anonymising."""
    if not positions:
        return "none"
    out = []
    others = 0
    for p in positions:
        if factor is not None and p.symbol != symbol:
            others += 1
            continue
        k = 1.0 if factor is None else factor
        name = p.symbol if factor is None else ANONYMOUS_SYMBOL
        tgt = f", target {p.target * k:.6g}" if p.target is not None else ""
        out.append(f"{p.direction} {name} entry {p.entry * k:.6g}, stop {p.stop * k:.6g}{tgt}")
    if others:
        out.append(f"{others} position(s) in other assets")
    return "; ".join(out)


def render(
    template: PromptTemplate,
    snapshot: FeatureSnapshot,
    rules: SignalRules,
    positions: Sequence[OpenPosition] = (),
    outcomes: Sequence[float] = (),
    anonymise: bool = False,
) -> RenderedPrompt:
    """Fill a template from a snapshot (named, or anonymised here), open positions and recent outcomes.

    `outcomes` are closed-trade results in R multiples, oldest first; the last 10 are shown.
    """
    shown = snapshot.anonymised_copy() if anonymise else snapshot
    factor = shown.last_price / snapshot.last_price if shown.anonymised else None
    recent = list(outcomes)[-MAX_OUTCOMES_SHOWN:]
    snapshot_text = shown.to_prompt_text()
    values = {
        "symbol": shown.symbol,
        "snapshot": snapshot_text,
        "positions": positions_text(positions, snapshot.symbol, factor),
        "outcomes": " ".join(f"{r:+.1f}" for r in recent) if recent else "none",
        "constraints": rules.in_words(),
        "fields": fields_text(),
    }
    system, user = (Template(part).substitute(values) for part in (template.system, template.user))
    if shown.anonymised:
        system, user = (scrub_ticker(text, snapshot.symbol) for text in (system, user))
    return RenderedPrompt(
        variant=template.variant,
        version=template.version,
        template_sha256=template.sha256,
        system=system,
        user=user,
        anonymised=shown.anonymised,
        snapshot_text=snapshot_text,
    )


def scrub_ticker(text: str, symbol: str) -> str:
    """Replace any mention of the real ticker (`BTC/USDT`, `BTC_USDT`, `BTCUSDT`, `BTC`) by the anonymous name.

    Defence in depth: `anonymised_copy` rebases numbers, but free text inside a theory's label or
    error message may still name the symbol, and one mention would undo the anonymising.
    """
    base, _, quote = symbol.partition("/")
    names = [symbol, f"{base}_{quote}", f"{base}{quote}", base] if quote else [symbol]
    pattern = "|".join(re.escape(n) for n in sorted(set(names), key=len, reverse=True) if n)
    return re.sub(rf"(?<![A-Za-z0-9])(?:{pattern})(?![A-Za-z0-9])", ANONYMOUS_SYMBOL, text, flags=re.IGNORECASE)


# --- token estimate ------------------------------------------------------------------------------

_PIECES = re.compile(r"[A-Za-z]+|\d+|\s+|[^\sA-Za-z\d]")


def estimate_tokens(text: str) -> int:
    """A deliberately high offline estimate of BPE tokens (GPT-4o / Llama 3 style tokenisers).

    The rule follows how these tokenisers pre-split text: a run of letters counts one token per 5
    letters (rounded up: short common words are one token, long rare words several), a run of
    digits one token per 3 digits (they split numbers into groups of at most 3 digits), every
    other symbol one token, and whitespace nothing except a run of newlines or spaces longer than
    one character, which counts one. Real counts of the bundled prompts are usually lower: this is
    a ceiling for the budget, and the provider-reported counts are recorded with every call.
    """
    total = 0
    for piece in _PIECES.findall(text):
        c = piece[0]
        if c.isalpha():
            total += math.ceil(len(piece) / 5)
        elif c.isdigit():
            total += math.ceil(len(piece) / 3)
        elif c.isspace():
            total += 1 if len(piece) > 1 else 0
        else:
            total += 1
    return total


def estimate_messages_tokens(messages: Sequence[dict[str, str]]) -> int:
    """Estimated input tokens of a chat request: the contents plus 4 per message for the chat template's framing."""
    return sum(estimate_tokens(m["content"]) + 4 for m in messages)
