"""FeatureSnapshot: every theory's output for one symbol at one time, and how to build it.

The snapshot describes the close time of the last candle it used; every theory sees only
candles closed by the decision time (`Candles.closed_by`), so a snapshot at time t is the same
whatever happened after t. A theory that cannot answer honestly (too little data, a failed fit)
is listed under `errors` with its reason instead of a number: the snapshot never guesses.

A snapshot renders as compact text for a prompt, and can be anonymised (no ticker, no dates,
prices rebased so the last close is 100) so that an LLM cannot recognise a period it has seen.
"""

from __future__ import annotations

import functools
import logging
import re
import time as _time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, TypeAdapter, model_validator
from typing_extensions import TypedDict

from agent.webhook.theory import THEORY_NAME as TRADINGVIEW
from agent.webhook.theory import TradingViewResult
from orderflow.snapshot import OrderFlowSnapshot, build_orderflow_snapshot
from theories.base import PRICE, TIME, VOLUME, FitCache, TheoryContext, TheoryError, TheoryResult, field_units
from theories.candles import CandleDataError, Candles, iso
from theories.funding import FundingRates
from theories.registry import DEFAULT_SET, THEORIES, resolve

log = logging.getLogger(__name__)

DEFAULT_WINDOW = 500  # candles in the analysis window
ANONYMOUS_SYMBOL = "ASSET"
REBASE_TO = 100.0


# Results a snapshot source attaches that no registry theory computes (an external alert), by name.
ATTACHED_RESULTS: dict[str, type[TheoryResult]] = {TRADINGVIEW: TradingViewResult}


class DataQuality(BaseModel):
    """What the analysis window looked like, so a reader can judge the numbers."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    candles: int = Field(description="Candles in the analysis window.")
    interval_ms: int = Field(description="Candle interval, ms.")
    first_open_ms: int | None = Field(description="Open time of the first candle in the window, UTC epoch ms.")
    gaps: int = Field(description="Runs of missing candles inside the window.")
    missing_candles: int = Field(description="Candles missing inside the window (never filled).")
    stale_bars: int = Field(
        description="Whole intervals between the last closed candle and the decision time (0 = fresh)."
    )
    mean_volume: float | None = Field(
        default=None,
        description="Mean candle volume in the window, base units (None when anonymised: volumes are then relative).",
    )


class FeatureSnapshot(BaseModel):
    """Every theory in a set, for one symbol, as of `time` (close of the last candle used)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    symbol: str
    time: int | None = Field(description="Close time of the last candle used, UTC epoch ms; None when anonymised.")
    last_price: float = Field(description="Close of the last candle, quote currency (100 when anonymised).")
    anonymised: bool = False
    quality: DataQuality
    theories: dict[str, SerializeAsAny[TheoryResult]] = Field(default_factory=dict)
    errors: dict[str, str] = Field(default_factory=dict, description="Theories that gave no answer, and why.")
    orderflow: OrderFlowSnapshot | None = Field(
        default=None, description="Volume profile from candles; book and trade flow when a live feed runs."
    )

    @model_validator(mode="before")
    @classmethod
    def _typed_theories(cls, data: Any) -> Any:
        """Rebuild each theory's own result type from plain data (a JSON round trip)."""
        if isinstance(data, dict) and isinstance(data.get("theories"), dict):
            typed = {}
            for name, value in data["theories"].items():
                if isinstance(value, dict):
                    result_type = THEORIES[name].result if name in THEORIES else ATTACHED_RESULTS.get(name)
                    if result_type is None:
                        raise ValueError(f"snapshot holds unknown theory {name!r}")
                    value = result_type.model_validate(value)
                typed[name] = value
            data = {**data, "theories": typed}
        return data

    # --- memoised derivations -----------------------------------------------------------------
    # The snapshot is frozen, so what is derived from it can be computed once: an evals replay hands
    # one parsed snapshot to several variants' cycles, and each renders it, stores its JSON and may
    # anonymise it. The memos are functools.cached_property values, which live in the instance
    # __dict__ beside the fields; pydantic's dump, JSON, iteration, repr and equality read the
    # fields only, and a copy drops the memos (`model_copy(update=...)` changes fields under them).

    def __copy__(self) -> FeatureSnapshot:
        return _without_memos(super().__copy__())

    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> FeatureSnapshot:
        return _without_memos(super().__deepcopy__(memo))

    def model_dump_json(self, **options: Any) -> str:  # type: ignore[override]
        """The snapshot's JSON; the plain form (no options, the one stored with a decision) is computed once."""
        return super().model_dump_json(**options) if options else self._json

    @functools.cached_property
    def _json(self) -> str:
        return super().model_dump_json()

    @classmethod
    def from_cache(cls, text: str, prompt_text: str | None = None) -> FeatureSnapshot:
        """Parse a snapshot's JSON as the features cache stored it, with its prompt text.

        The JSON is validated in one pydantic-core call typed by the last parsed snapshot's theory
        names (`_fast_parse`), kept only if it dumps back to the same text; otherwise, and for the
        first snapshot, by `model_validate_json`.

        The JSON is this snapshot's own `model_dump_json()` (the cache stores exactly that, and the
        dump of a parsed dump is the same text: a test checks it on real data), so it becomes the
        JSON memo. `prompt_text` is the `to_prompt_text()` the writer rendered from the same
        snapshot; it becomes the text memo and, split, each theory's line, unless its lines do not
        match this snapshot's theories, errors and order flow (a foreign writer): then it is dropped
        and the text is rendered when asked, never guessed.
        """
        snapshot = _fast_parse(text)
        if snapshot is None:
            snapshot = cls.model_validate_json(text)
            _last_names[:] = [tuple(snapshot.theories)]
        snapshot.__dict__["_json"] = text
        if prompt_text is not None:
            lines = prompt_text.split("\n")
            n = len(snapshot.theories)
            if len(lines) == 1 + n + len(snapshot.errors) + (snapshot.orderflow is not None):
                named = dict(zip(snapshot.theories, lines[1:1 + n], strict=True))
                if all(line.startswith(f"{name}: ") for name, line in named.items()):
                    snapshot.__dict__["_lines"] = named
                    snapshot.__dict__["_prompt_text"] = prompt_text
        return snapshot

    def derived(self, theories: dict[str, TheoryResult], errors: dict[str, str]) -> FeatureSnapshot:
        """This snapshot with other theory results (unvalidated: the caller built them from valid results).

        The copy renders the results it shares with this snapshot (the same objects) from this
        snapshot's memo: variants that add their own theories to one shared snapshot render the
        shared theories once.
        """
        # this snapshot's copy (its fields, the same objects; no memo) with the new results: what
        # `model_construct(**fields)` makes (every field set), in a third of its time (~0.01 ms)
        out = self.__copy__()
        out.__dict__.update(theories=theories, errors=errors)
        out.__pydantic_fields_set__.update(FeatureSnapshot.model_fields)
        out.__dict__["_base"] = self  # read by `_lines` and `_prompt_text` (a memo source, not part of the value)
        return out

    # --- rendering ---------------------------------------------------------------------------

    @functools.cached_property
    def _lines(self) -> dict[str, str]:
        """Each theory's prompt line, by name (a result shared with the snapshot this one derives from: its line)."""
        base = self.__dict__.get("_base")
        lines = {}
        for name, result in self.theories.items():
            if base is not None and base.theories.get(name) is result:
                lines[name] = base._lines[name]
            else:
                lines[name] = f"{name}: {result.summary()}"
        return lines

    def theory_line(self, name: str) -> str:
        """The prompt's line of one theory, `name: summary` (computed once; KeyError for a theory not held)."""
        return self._lines[name]

    def to_prompt_text(self) -> str:
        """Compact text for a prompt: one header line, one line per theory (computed once)."""
        return self._prompt_text

    @functools.cached_property
    def _prompt_text(self) -> str:
        # A `derived` copy holds its base's header fields and order flow (the same objects): when the base's text
        # is at hand, its first line (header) and last line (order flow) are this text's too (~0.04 ms saved)
        base = self.__dict__.get("_base")
        shared = base.__dict__["_prompt_text"].split("\n") if base is not None and "_prompt_text" in base.__dict__ \
            else None
        if shared is not None:
            lines = [shared[0]]
        else:
            interval_h = self.quality.interval_ms / 3_600_000
            when = f" at {iso(self.time)}" if self.time is not None else ""
            lines = [
                f"{self.symbol}{when}: last close {self.last_price:.6g}, {self.quality.candles} x "
                f"{interval_h:g}h candles, gaps {self.quality.missing_candles}"
                + (f", STALE by {self.quality.stale_bars} bars" if self.quality.stale_bars else "")
            ]
        lines += self._lines.values()
        for name, why in self.errors.items():
            lines.append(f"{name}: unavailable ({why})")
        if self.orderflow is not None:
            lines.append(shared[-1] if shared is not None else f"orderflow: {self.orderflow.summary()}")
        return "\n".join(lines)

    def anonymised_copy(self) -> FeatureSnapshot:
        """The same snapshot with no ticker, no dates and prices rebased so the last close is 100 (made once)."""
        return self if self.anonymised else self._anonymous

    @functools.cached_property
    def _anonymous(self) -> FeatureSnapshot:
        price_factor = REBASE_TO / self.last_price
        mean_volume = self.quality.mean_volume
        volume_factor = 1.0 / mean_volume if mean_volume else 0.0
        return FeatureSnapshot(
            symbol=ANONYMOUS_SYMBOL,
            time=None,
            last_price=REBASE_TO,
            anonymised=True,
            quality=self.quality.model_copy(update={"first_open_ms": None, "mean_volume": None}),
            theories={
                name: _rebase(result, price_factor, volume_factor) for name, result in self.theories.items()
            },
            errors={name: scrub_identity(why, self.symbol) for name, why in self.errors.items()},
            orderflow=None if self.orderflow is None else _rebase(self.orderflow, price_factor, volume_factor),
        )


# A snapshot's theory names in order -> a validator of a whole snapshot with exactly those theories, each
# typed by its result model, so pydantic-core validates it in one call (`_typed_theories` calls each result
# model from Python: ~0.4 ms a snapshot against ~0.2 ms). The names are the last parsed snapshot's.
_parsers: dict[tuple[str, ...], TypeAdapter[Any]] = {}
_last_names: list[tuple[str, ...]] = []


def _parser(names: tuple[str, ...]) -> TypeAdapter[Any] | None:
    if names not in _parsers:
        types = {n: THEORIES[n].result if n in THEORIES else ATTACHED_RESULTS.get(n) for n in names}
        if None in types.values():
            return None
        fields = {n: f.annotation for n, f in FeatureSnapshot.model_fields.items()}
        fields["theories"] = TypedDict("Theories", types, total=False)  # type: ignore[operator]
        shape = TypedDict("Snapshot", fields)  # type: ignore[operator]
        shape.__pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[attr-defined]
        _parsers[names] = TypeAdapter(shape)
    return _parsers[names]


def _fast_parse(text: str) -> FeatureSnapshot | None:
    """The snapshot of `text` validated in one call, or None (then `model_validate_json` decides).

    Accepted only when the result dumps back to `text` exactly: a theory the validator does not
    name, another order or any other difference falls back to the plain parse.
    """
    if not _last_names:
        return None
    parser = _parser(_last_names[0])
    if parser is None:
        return None
    try:
        data = parser.validate_json(text)
    except ValueError:
        return None
    snapshot = FeatureSnapshot.model_construct(**data)
    if BaseModel.model_dump_json(snapshot) != text:
        return None
    return snapshot


# The instance-__dict__ keys FeatureSnapshot keeps beside its fields: its memos, and `derived`'s link.
_MEMOS = ("_prompt_text", "_json", "_anonymous", "_lines", "_base")


def _without_memos(snapshot: FeatureSnapshot) -> FeatureSnapshot:
    for name in _MEMOS:
        snapshot.__dict__.pop(name, None)
    return snapshot


_ISO_TIME = re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2})?Z?)?")


def scrub_identity(text: str, symbol: str) -> str:
    """Remove what would identify the asset or the period from free text: the ticker and dates."""
    names = {symbol, *symbol.split("/"), symbol.replace("/", "_"), symbol.replace("/", "")}
    for name in sorted((n for n in names if n), key=len, reverse=True):
        text = re.sub(rf"\b{re.escape(name)}\b", ANONYMOUS_SYMBOL, text, flags=re.IGNORECASE)
    return _ISO_TIME.sub("<time>", text)


def _rebase(model: BaseModel, price_factor: float, volume_factor: float) -> BaseModel:
    """Scale PRICE and VOLUME fields, zero TIME fields, recursing into nested models."""
    update: dict[str, Any] = {}
    for name, u in field_units(type(model)):
        value = getattr(model, name)
        if u == PRICE and value is not None:
            update[name] = _scale(value, price_factor)
        elif u == VOLUME and value is not None:
            update[name] = _scale(value, volume_factor)
        elif u == TIME and value is not None:
            update[name] = _blank_time(value)
        elif isinstance(value, BaseModel):
            update[name] = _rebase(value, price_factor, volume_factor)
        elif isinstance(value, list | tuple) and value and isinstance(value[0], BaseModel):
            update[name] = type(value)(_rebase(v, price_factor, volume_factor) for v in value)
    return model.model_copy(update=update) if update else model


def _scale(value: Any, factor: float) -> Any:
    if isinstance(value, list | tuple):
        return type(value)(_scale(v, factor) for v in value)
    return value * factor


def _blank_time(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return type(value)(0 for _ in value)
    return 0


# --- building -----------------------------------------------------------------------------------

TheorySet = Sequence[str] | Mapping[str, Mapping[str, Any] | None]


def build_snapshot(
    symbol: str,
    universe: Mapping[str, Candles],
    at_ms: int | None = None,
    theory_set: TheorySet = DEFAULT_SET,
    *,
    window: int = DEFAULT_WINDOW,
    outcomes: Sequence[float] = (),
    cache: FitCache | None = None,
    leader: str = "BTC/USDT",
    funding: Mapping[str, FundingRates] | None = None,
    orderflow: OrderFlowSnapshot | None = None,
    timings: dict[str, float] | None = None,
    timer: Callable[[], float] = _time.perf_counter,
) -> FeatureSnapshot:
    """Run a theory set on `symbol` as of `at_ms` (default: the last candle's close).

    `universe` holds every symbol's full candles; each is cut at `at_ms` here, so no theory can
    see a candle that had not closed by then. `theory_set` is a list of names or a mapping of
    name -> parameters. `funding` holds perpetual funding settlements by symbol (the funding
    theory cuts them at `at_ms` itself). `orderflow` is a live feed's order-flow snapshot taken at
    `at_ms`; without one, the candle-based part (volume profile) is computed here and the book and
    trade-flow parts are marked unavailable. Per-theory time by `timer` (default: wall time) goes into
    `timings` (seconds).
    """
    if symbol not in universe:
        raise KeyError(f"no candles for {symbol!r}; have {sorted(universe)}")
    full = universe[symbol]
    if at_ms is None:
        at_ms = full.last_close_time
    history = full.closed_by(at_ms)
    if not len(history):
        raise CandleDataError(full.source, None, f"no candle of {symbol} had closed by {iso(at_ms)}")
    candles = history.tail(window)
    cut = {s: c.closed_by(at_ms) for s, c in universe.items()}
    ctx = TheoryContext(
        symbol=symbol,
        at_ms=at_ms,
        candles=candles,
        history=history,
        universe={s: c for s, c in cut.items() if len(c)},
        outcomes=tuple(outcomes),
        cache=cache,
        leader=leader,
        funding=(funding or {}).get(symbol),
    )

    params_for = dict(theory_set) if isinstance(theory_set, Mapping) else dict.fromkeys(theory_set)
    results: dict[str, TheoryResult] = {}
    errors: dict[str, str] = {}
    for theory in resolve(params_for):
        start = timer()
        try:
            results[theory.name] = theory(ctx, params_for[theory.name])
        except TheoryError as exc:
            errors[theory.name] = str(exc)
        except Exception as exc:  # a theory's bug must not take the cycle down: fail closed, loudly
            log.exception("theory %s failed on %s at %s", theory.name, symbol, iso(at_ms))
            errors[theory.name] = f"failed: {type(exc).__name__}: {exc}"
        if timings is not None:
            timings[theory.name] = timings.get(theory.name, 0.0) + timer() - start

    if orderflow is None:
        start = timer()
        orderflow = build_orderflow_snapshot(candles)
        if timings is not None:
            timings["orderflow"] = timings.get("orderflow", 0.0) + timer() - start

    gaps = candles.gaps()
    return FeatureSnapshot(
        symbol=symbol,
        time=history.last_close_time,
        last_price=float(candles.close[-1]),
        quality=DataQuality(
            candles=len(candles),
            interval_ms=candles.interval_ms,
            first_open_ms=int(candles.time[0]),
            gaps=len(gaps),
            missing_candles=sum(g.missing for g in gaps),
            stale_bars=(at_ms - history.last_close_time) // candles.interval_ms,
            mean_volume=float(candles.volume.mean()),
        ),
        theories=results,
        errors=errors,
        orderflow=orderflow,
    )
