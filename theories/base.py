"""The contract every theory keeps: typed parameters in, a small documented result out.

A theory module holds three things: the pure analysis function(s) with explicit array
arguments, a `Params` model (validated, defaulted), and a result model derived from
`TheoryResult`. It exposes them as `THEORY = Theory(...)`, whose `run(ctx, params)` adapts the
shared `TheoryContext` to the pure function. The registry collects the `THEORY` objects.

Every result field declares its unit with `unit(...)`. The unit is what lets a snapshot be
anonymised generically: fields in `PRICE` units (levels and distances in the quote currency)
are rebased so that the last close is 100, `VOLUME` fields are rescaled so that the window's
mean candle volume is 1, and fields in `TIME` units are zeroed.
"""

from __future__ import annotations

import copy
import hashlib
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache, cached_property
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from theories.candles import Candles
from theories.funding import FundingRates

# Units a result field can carry. Keep this list short and in the field's words.
PRICE = "price"  # quote currency: a level or a distance between levels (rebased when anonymised)
VOLUME = "volume"  # base units (rescaled to the window's mean candle volume when anonymised)
TIME = "time_ms"  # UTC epoch ms (dropped when anonymised)
FRACTION = "fraction"  # a plain fraction, 0.01 = 1%
LOG_RETURN = "log_return"  # natural-log return
PROBABILITY = "probability"  # in [0, 1]
SIGMA = "sigma"  # standard deviations
BARS = "bars"  # a count of candles
COUNT = "count"
RATIO = "ratio"  # dimensionless
STATISTIC = "statistic"  # a test statistic
PVALUE = "p_value"
ANNUALISED = "annualised_fraction"  # e.g. annualised volatility, 0.6 = 60%
LABEL = "label"  # plain words
FLAG = "flag"  # true / false


def unit(u: str, description: str, **kw: Any) -> Any:
    """A pydantic Field that documents its meaning and carries its unit in the JSON schema."""
    return Field(description=description, json_schema_extra={"unit": u}, **kw)


def field_unit(model: type[BaseModel], name: str) -> str | None:
    extra = model.model_fields[name].json_schema_extra
    return extra.get("unit") if isinstance(extra, dict) else None


@cache
def field_units(model: type[BaseModel]) -> tuple[tuple[str, str | None], ...]:
    """Every field of `model` with its unit (None without one), in declaration order.

    Read once per class: looking each unit up per instance was most of the time of anonymising a
    snapshot (~0.7 ms).
    """
    return tuple((name, field_unit(model, name)) for name in model.model_fields)


def num(x: float | None, sig: int = 3, sign: bool = False) -> str:
    """A number for a summary line: `sig` significant digits, no leading zero (.85), "n/a" for None.

    Summaries go into a token-budgeted prompt, so the form is the shortest unambiguous one: numbers
    of `sig` or more integer digits are shown whole (95596, not 9.56e+04), tiny ones in short
    scientific form (4e-5).
    """
    if x is None:
        return "n/a"
    if not math.isfinite(x):
        return str(x)
    plus = "+" if sign else ""
    if abs(x) >= 10 ** (sig - 1):
        return f"{x:{plus}.0f}"
    text = f"{x:{plus}.{sig}g}"
    if "e" in text:  # 4e-05 -> 4e-5
        mant, _, exp = text.partition("e")
        text = f"{mant}e{int(exp)}"
    return _drop_leading_zero(text)


def dec(x: float | None, places: int = 2, sign: bool = False) -> str:
    """A number to fixed decimal places, no leading zero: probabilities (.05, .30) and R multiples (-.06)."""
    if x is None:
        return "n/a"
    if not math.isfinite(x):
        return str(x)
    text = f"{round(x, places) + 0.0:{'+' if sign else ''}.{places}f}"  # + 0.0: no "-0.00"
    return _drop_leading_zero(text)


def _drop_leading_zero(text: str) -> str:
    """"0.85" -> ".85", "-0.5" -> "-.5", "+0.5" -> "+.5"; anything else as it is.

    Plain string tests rather than a regex substitution: summaries format a few hundred numbers
    per prompt, and `re.sub` was most of `to_prompt_text`'s time.
    """
    if text.startswith("0."):
        return text[1:]
    if text.startswith(("-0.", "+0.")):
        return text[0] + text[2:]
    return text


def pct(x: float | None, sig: int = 2, sign: bool = False) -> str:
    """A fraction as a percentage with `sig` significant digits: 0.0027 -> ".27%", 0.34 -> "34%"."""
    return "n/a" if x is None else num(100.0 * x, sig, sign) + "%"


def pval(p: float, bound: str = "=") -> str:
    """A p-value, short: "<.001" below 0.001; a table bound ("<" / ">") is kept in front."""
    if bound in ("<", ">"):
        return f"{bound}{num(p, 2)}"
    return "<.001" if p < 0.001 else num(p, 2)


class TheoryResult(BaseModel):
    """Base of every theory's output. `label` says in plain words what the numbers mean."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    label: str = unit(LABEL, "What the numbers say, in plain words.")

    def summary(self) -> str:
        """One compact line for a prompt or a table: the key numbers, then the label.

        Subclasses override this to pick their key numbers; the default lists every scalar.
        """
        parts = []
        for name in type(self).model_fields:
            if name == "label":
                continue
            value = getattr(self, name)
            if isinstance(value, float):
                parts.append(f"{name}={value:.4g}")
            elif isinstance(value, int | str | bool):
                parts.append(f"{name}={value}")
        return "; ".join(parts) + f" -> {self.label}"


class TheoryParams(BaseModel):
    """Base of every theory's parameters: typed, validated, defaulted, immutable."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class TheoryError(ValueError):
    """A theory cannot give an honest answer for this input (too little data, a failed fit)."""


class FitCache:
    """Memo of expensive model fits (Markov switching, random forest, Kalman noise by MLE).

    Keys must name everything the fit depends on, including the *fit time*: fits are refreshed on
    a schedule (see `fit_time`) and use only candles closed by that time, so a cached fit never
    holds information from after the decision it is reused for. Bounded LRU, in memory.
    """

    def __init__(self, max_entries: int = 4096) -> None:
        self._store: OrderedDict[Hashable, Any] = OrderedDict()
        self.max_entries = max_entries
        self.hits = 0
        self.misses = 0

    def get_or_fit(self, key: Hashable, fit: Callable[[], Any]) -> Any:
        if key in self._store:
            self._store.move_to_end(key)
            self.hits += 1
            return self._store[key]
        self.misses += 1
        value = fit()
        self._store[key] = value
        if len(self._store) > self.max_entries:
            self._store.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._store)


def fingerprint(candles: Candles) -> str:
    """A short digest of the candles' times and prices, for cache keys of fits made from them.

    Remembered per view: hashing is ~0.1 us per candle, and a replay asks for the same digests every
    hour (a fit window until the next refit, each universe member's recent candles for every symbol's
    context), about 0.5 ms of each snapshot. Candles are immutable, so a view's digest is fixed by
    where it lies in the validated `Candles` it was cut from (`Candles.origin`) and its length.
    """
    root, start = candles.origin
    key = (id(root), start, len(candles))
    with _DIGESTS_LOCK:
        known = _DIGESTS.get(key)
        if known is not None:
            _DIGESTS.move_to_end(key)
            return known[1]
    h = hashlib.blake2b(digest_size=12)
    for arr in (candles.time, candles.open, candles.high, candles.low, candles.close, candles.volume):
        h.update(arr)  # the array's own buffer (candle columns are C-contiguous): no copy
    digest = h.hexdigest()
    with _DIGESTS_LOCK:
        # the entry holds `root`, so while it is remembered no other object can take its id
        _DIGESTS[key] = (root, digest)
        if len(_DIGESTS) > _DIGESTS_MAX:
            _DIGESTS.popitem(last=False)
    return digest


# fingerprint's memo: (id of the origin, start, length) -> (the origin, digest); bounded LRU
_DIGESTS: OrderedDict[tuple[int, int, int], tuple[Candles, str]] = OrderedDict()
_DIGESTS_MAX = 1024
_DIGESTS_LOCK = threading.Lock()


REFIT_EVERY_MS = 7 * 86_400_000
"""Default refit schedule of the fitted models (Markov regime, Kalman noise MLE, forest, unit-root
tests): weekly, periods aligned to the epoch (Thursdays 00:00 UTC). Between refits every snapshot
still filters or scores the newest bars with the cached fit. Measured against daily refits on 4
symbols x 28 days of hourly snapshots (March 2025, 2,688 snapshots): the Markov regime labels were
identical, the heuristic's direction agreed on 97.7% of hours, the Kalman vote on 94%; the forest's
"edge" flag agreed on 79.5%, about its own noise: with daily refits it flips on 20.4% of hours
from one day to the next. Weekly fits cost a seventh: ~1,000 instead of ~7,600 CPU-s over a
1-year, 10-symbol hourly replay. A theory set can still ask for any period per theory."""


def fit_time(decision_ms: int, every_ms: int) -> int:
    """The refit schedule: the latest multiple of `every_ms` at or before the decision time.

    A fit keyed by this time and trained on candles closed by it is the same whichever decision
    in the period asks first, so results stay reproducible and free of lookahead.
    """
    return decision_ms - decision_ms % every_ms


@dataclass(frozen=True)
class TheoryContext:
    """What a theory may see for one symbol at one decision time.

    `candles` and every entry of `universe` hold only candles closed by `at_ms`.
    `candles` is the analysis window (the most recent bars); `history` is everything available
    up to `at_ms`, for theories that train on a longer past (forest, regime fits).
    """

    symbol: str
    at_ms: int
    candles: Candles
    history: Candles
    universe: Mapping[str, Candles] = field(default_factory=dict)
    outcomes: Sequence[float] = ()  # closed-trade results in R multiples, oldest first
    cache: FitCache | None = None
    leader: str = "BTC/USDT"
    funding: FundingRates | None = None  # the symbol's perpetual funding settlements (funding strategy)

    def cached(self, key: Hashable, fit: Callable[[], Any]) -> Any:
        return fit() if self.cache is None else self.cache.get_or_fit(key, fit)


R = TypeVar("R", bound=TheoryResult)
P = TypeVar("P", bound=TheoryParams)


@dataclass(frozen=True)
class Theory(Generic[P, R]):
    """A registry entry: a name, what it computes, and how to run it from a context."""

    name: str
    description: str  # one line: the method and its source
    params: type[P]
    result: type[R]
    run: Callable[[TheoryContext, P], R]
    min_bars: int  # fewer candles than this: TheoryError, never a guess

    @cached_property
    def default_params(self) -> P:
        """The defaults, validated once: parameters are immutable, so every run may share them."""
        return self.params.model_validate({})

    @cached_property
    def _validated(self) -> dict[int, tuple[Mapping[str, Any], Mapping[str, Any], P]]:
        """Parameters validated from mappings (`_params`): id of the mapping -> (it, a deep copy of it, the model)."""
        return {}

    def _params(self, params: Mapping[str, Any]) -> P:
        """`params` validated, remembered while the same mapping holds the same values.

        An evals replay passes every run the same mapping (its set's full parameters, written out
        by `evals.variants.resolve_theories`), and validating it again was ~4 us a theory, ~0.06 ms
        of each snapshot. The memo holds the mapping itself, so its id names no other object while
        remembered, and a deep copy, compared on use: a mapping edited since is validated again.
        """
        memo = self._validated
        known = memo.get(id(params))
        if known is not None and known[0] is params and known[1] == params:
            return known[2]
        p = self.params.model_validate(params)
        if len(memo) >= 64:  # a bound, never reached by a run's few theory sets
            memo.clear()
        memo[id(params)] = (params, copy.deepcopy(params), p)
        return p

    def __call__(self, ctx: TheoryContext, params: P | Mapping[str, Any] | None = None) -> R:
        if isinstance(params, self.params):
            p = params
        elif not params:  # None or {}: the defaults (a snapshot's usual case, 16 theories an hour)
            p = self.default_params
        else:
            p = self._params(params)
        if len(ctx.candles) < self.min_bars:
            raise TheoryError(f"{self.name} needs at least {self.min_bars} candles, got {len(ctx.candles)}")
        return self.run(ctx, p)
