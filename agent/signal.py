"""The Signal: what a synthesiser proposes, and the checks that keep a malformed one out.

`Signal` holds only what a trade proposal is: symbol, direction, confidence, entry, stop, target,
horizon, a short reasoning and the theories it leaned on. Its own validators enforce what holds
whatever the market: a LONG has stop < entry < target, a SHORT the reverse, a HOLD carries no
levels. `check_signal` adds what depends on the moment and the settings (`SignalRules`): the
symbol is the snapshot's, the entry lies within a band of the last price, reward:risk is at
least the minimum, the stop is not absurdly far, the horizon is within bounds, and every cited
theory answered in the snapshot. `parse_signal` does all of it on raw model output and never
lets anything but `SignalRejected` escape.

`signal_json_schema()` is the schema sent to providers: generated from the same model, with every
field required and no extra keys, which is what OpenAI's strict structured outputs demand.
"""

from __future__ import annotations

import json
import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

Direction = Literal["LONG", "SHORT", "HOLD"]
# Limits are compared with this slack so that a level placed exactly on a limit (entry 1% away,
# reward:risk exactly 1.5) is not rejected for a rounding error of the last binary digit.
TOLERANCE = 1e-9


class SignalRules(BaseModel):
    """The settings a signal is checked against (config section `[signal]`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    entry_band: float = Field(
        0.01, gt=0, lt=1, description="Entry within this fraction of the last price (0.01 = 1%): no stale levels."
    )
    min_reward_risk: float = Field(
        1.5, gt=0, description="Reward:risk |target - entry| / |entry - stop| at least this."
    )
    max_stop_distance: float = Field(
        0.15, gt=0, lt=1, description="Stop within this fraction of the entry: a wider stop is not an hourly trade."
    )
    min_horizon_hours: float = Field(1.0, gt=0)
    max_horizon_hours: float = Field(168.0, gt=0)
    max_reasoning_chars: int = Field(600, gt=0)

    @model_validator(mode="after")
    def _bounds_ordered(self) -> SignalRules:
        if self.min_horizon_hours > self.max_horizon_hours:
            raise ValueError("min_horizon_hours is above max_horizon_hours")
        return self

    def in_words(self) -> str:
        """The constraints as a prompt states them (compact: every token counts against the budget)."""
        return (
            f"entry within {self.entry_band:.2%} of the last close; LONG: stop < entry < target; "
            f"SHORT: target < entry < stop; |target-entry|/|entry-stop| >= {self.min_reward_risk:g}; "
            f"stop within {self.max_stop_distance:.0%} of entry; horizon {self.min_horizon_hours:g}-"
            f"{self.max_horizon_hours:g} h; HOLD: entry, stop, target null; cite only listed theories; "
            f"reasoning <= {self.max_reasoning_chars} chars."
        )


class Signal(BaseModel):
    """A trade proposal. Prices in the quote currency (rebased to 100 when the prompt was anonymised)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, title="Signal")

    symbol: str = Field(min_length=1, max_length=40, description="As named in the features.")
    direction: Direction = Field(description="HOLD means no trade.")
    confidence: float = Field(ge=0, le=1, description="P(target hit before stop), 0-1.")
    entry: float | None = Field(gt=0, description="Price; null for HOLD.")
    stop: float | None = Field(gt=0, description="Price; null for HOLD.")
    target: float | None = Field(gt=0, description="Price; null for HOLD.")
    horizon_hours: float = Field(gt=0, description="Hours the idea holds.")
    reasoning: str = Field(min_length=1, max_length=2000, description="Short, plain words.")
    theories: list[str] = Field(max_length=32, description="Names of the theories relied on.")

    @field_validator("entry", "stop", "target", "confidence", "horizon_hours")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v

    @field_validator("theories")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        return list(dict.fromkeys(v))  # citing a theory twice adds nothing; keep first-seen order

    @model_validator(mode="after")
    def _geometry(self) -> Signal:
        levels = (self.entry, self.stop, self.target)
        if self.direction == "HOLD":
            if any(x is not None for x in levels):
                raise ValueError("a HOLD carries no levels: entry, stop and target must be null")
            return self
        if any(x is None for x in levels):
            raise ValueError(f"a {self.direction} needs entry, stop and target")
        entry, stop, target = levels
        if self.direction == "LONG" and not stop < entry < target:
            raise ValueError(
                f"a LONG needs stop < entry < target, got stop {stop:g}, entry {entry:g}, target {target:g}"
            )
        if self.direction == "SHORT" and not target < entry < stop:
            raise ValueError(
                f"a SHORT needs target < entry < stop, got target {target:g}, entry {entry:g}, stop {stop:g}"
            )
        return self

    @property
    def reward_risk(self) -> float | None:
        """|target - entry| / |entry - stop|; None for HOLD."""
        if self.direction == "HOLD":
            return None
        return abs(self.target - self.entry) / abs(self.entry - self.stop)

    def rebased(self, factor: float, symbol: str) -> Signal:
        """The same signal with prices multiplied by `factor` and the symbol replaced (undo anonymising)."""
        scale = {k: getattr(self, k) * factor for k in ("entry", "stop", "target") if getattr(self, k) is not None}
        return Signal.model_validate({**self.model_dump(), **scale, "symbol": symbol})

    @classmethod
    def hold(cls, symbol: str, reason: str, horizon_hours: float, max_chars: int = 600) -> Signal:
        """The fail-closed answer: no trade, with the reason."""
        text = reason.strip() or "HOLD"
        if len(text) > max_chars:
            text = text[: max_chars - 3] + "..."
        return cls(
            symbol=symbol, direction="HOLD", confidence=0.0, entry=None, stop=None, target=None,
            horizon_hours=horizon_hours, reasoning=text, theories=[],
        )


def signal_json_schema() -> dict[str, Any]:
    """The JSON schema sent to providers: every field required, no extra keys (strict-mode ready)."""
    schema = Signal.model_json_schema()
    assert set(schema["required"]) == set(schema["properties"]), "every Signal field must be required"
    assert schema.get("additionalProperties") is False
    return schema


class SignalRejected(ValueError):
    """Raw output that is not an acceptable signal; `reasons` lists every rule it broke."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = reasons


class SnapshotFacts(BaseModel):
    """What `check_signal` needs from a snapshot: kept small so risk/evals can build it without one."""

    model_config = ConfigDict(frozen=True)

    symbol: str
    last_price: float = Field(gt=0)
    theories: frozenset[str]  # theories that answered (not the unavailable ones)

    @classmethod
    def of(cls, snapshot: Any) -> SnapshotFacts:
        return cls(symbol=snapshot.symbol, last_price=snapshot.last_price, theories=frozenset(snapshot.theories))


def check_signal(signal: Signal, facts: SnapshotFacts, rules: SignalRules) -> list[str]:
    """Every rule `signal` breaks against this snapshot and these settings; empty when it is acceptable."""
    problems = []
    if signal.symbol != facts.symbol:
        problems.append(f"symbol must be {facts.symbol!r}, got {signal.symbol!r}")
    unknown = [t for t in signal.theories if t not in facts.theories]
    if unknown:
        problems.append(f"cited theories {unknown} are not in the snapshot; available: {sorted(facts.theories)}")
    if not rules.min_horizon_hours <= signal.horizon_hours <= rules.max_horizon_hours:
        problems.append(
            f"horizon_hours {signal.horizon_hours:g} outside {rules.min_horizon_hours:g}-{rules.max_horizon_hours:g}"
        )
    if len(signal.reasoning) > rules.max_reasoning_chars:
        problems.append(f"reasoning is {len(signal.reasoning)} characters; at most {rules.max_reasoning_chars}")
    if signal.direction == "HOLD":
        return problems
    if not signal.theories:
        problems.append("a trade must cite at least one theory from the snapshot")
    off = abs(signal.entry / facts.last_price - 1)
    if off > rules.entry_band + TOLERANCE:
        problems.append(
            f"entry {signal.entry:g} is {off:.2%} from the last close {facts.last_price:g}; "
            f"at most {rules.entry_band:.2%}"
        )
    rr = signal.reward_risk
    if rr < rules.min_reward_risk - TOLERANCE:
        problems.append(f"reward:risk {rr:.2f} is below the minimum {rules.min_reward_risk:g}")
    stop_distance = abs(signal.entry - signal.stop) / signal.entry
    if stop_distance > rules.max_stop_distance + TOLERANCE:
        problems.append(f"stop is {stop_distance:.1%} from entry; at most {rules.max_stop_distance:.0%}")
    return problems


def _json_object_text(text: str) -> str:
    """The JSON object in a reply, tolerating a Markdown code fence around it (models add them)."""
    s = text.strip()
    if s.startswith("```"):
        s = s.split("\n", 1)[1] if "\n" in s else ""
        s = s.rsplit("```", 1)[0] if s.rstrip().endswith("```") else s
    return s.strip()


def parse_signal(text: str | None, facts: SnapshotFacts, rules: SignalRules) -> Signal:
    """Raw model output -> an acceptable `Signal`, or `SignalRejected` naming every problem. Nothing else escapes."""
    if text is None or not text.strip():
        raise SignalRejected(["empty reply"])
    body = _json_object_text(text)
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise SignalRejected([f"not valid JSON: {exc}"[:300]]) from None
    if not isinstance(data, dict):
        raise SignalRejected([f"expected a JSON object, got {type(data).__name__}"])
    try:
        signal = Signal.model_validate(data)
    except ValidationError as exc:
        raise SignalRejected([_describe(e) for e in exc.errors(include_url=False)][:20]) from None
    except (ValueError, TypeError, RecursionError) as exc:  # defensive: a validator tripped on odd input
        raise SignalRejected([f"invalid signal: {exc}"[:300]]) from None
    problems = check_signal(signal, facts, rules)
    if problems:
        raise SignalRejected(problems)
    return signal


def _describe(error: Any) -> str:
    where = ".".join(str(p) for p in error.get("loc", ())) or "signal"
    message = str(error.get("msg", "invalid"))
    return f"{where}: {message}"[:300]
