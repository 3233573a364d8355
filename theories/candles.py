"""OHLCV candles as validated numpy arrays: the plain data type every analysis module reads.

It lives in `theories/` because that is the lowest layer that consumes it; `orderflow/`,
`risk/` and `agent/` import it from here as plain data. Loading (files, exchanges) is I/O and
lives in `agent/market/`.

Units: `time` is the candle's *open* time in UTC epoch milliseconds; prices are in the quote
currency; volume is in base units. A candle is closed at `time + interval_ms`.

Validation happens once, on construction, and names the source, the row and the rule that
broke. Gaps (missing candles) are legal, because exchanges have outages, but they are reported
by `gaps()` and never filled.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

HOUR_MS = 3_600_000
YEAR_MS = 365 * 24 * HOUR_MS  # crypto trades every day of the year


class DataRuleError(ValueError):
    """Market data broke a validation rule: names the source, the 1-based data row (header excluded) and the rule."""

    def __init__(self, source: str, row: int | None, rule: str, detail: str = "") -> None:
        self.source = source
        self.row = row
        self.rule = rule
        where = f"{source} row {row}" if row is not None else source
        super().__init__(f"{where}: {rule}" + (f" ({detail})" if detail else ""))


class CandleDataError(DataRuleError):
    """Candle data broke a validation rule."""


@dataclass(frozen=True, slots=True)
class Gap:
    """Missing candles between two present ones."""

    after_time: int  # open time of the last candle before the gap, epoch ms
    missing: int  # how many candles are absent


def iso(ms: int) -> str:
    """Epoch milliseconds as an ISO-8601 UTC string (for messages and tables)."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Candles:
    """Validated, immutable OHLCV arrays for one symbol at one interval."""

    __slots__ = (
        "_root", "_start", "_views", "close", "high", "interval_ms", "low", "open", "source", "symbol", "time",
        "volume",
    )

    time: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    interval_ms: int
    symbol: str
    source: str

    def __init__(
        self,
        time,
        open,  # noqa: A002 - the field's name in the field's words
        high,
        low,
        close,
        volume,
        *,
        interval_ms: int | None = None,
        symbol: str = "",
        source: str = "<arrays>",
    ) -> None:
        columns = {
            "time": np.asarray(time),
            "open": np.asarray(open, dtype=np.float64),
            "high": np.asarray(high, dtype=np.float64),
            "low": np.asarray(low, dtype=np.float64),
            "close": np.asarray(close, dtype=np.float64),
            "volume": np.asarray(volume, dtype=np.float64),
        }
        n = len(columns["time"])
        for name, arr in columns.items():
            if arr.ndim != 1:
                raise CandleDataError(source, None, f"column '{name}' must be one-dimensional")
            if len(arr) != n:
                raise CandleDataError(
                    source, None, "columns must have equal length", f"time has {n}, {name} has {len(arr)}"
                )
        t = columns["time"]
        if n and not np.issubdtype(t.dtype, np.integer):
            tf = np.asarray(t, dtype=np.float64)
            bad = ~np.isfinite(tf) | (tf != np.round(tf))
            if bad.any():
                i = int(np.argmax(bad))
                raise CandleDataError(source, i + 1, "time must be whole epoch milliseconds", f"got {t[i]!r}")
            t = tf
        columns["time"] = t = np.asarray(t, dtype=np.int64)

        # The rules nearly always hold: a quick test of all of them, and the broken one looked for
        # (named with its first bad row) only when it fails
        steps = t[1:] - t[:-1]
        if not _valid(columns, steps):
            _validate(columns, source)
        if interval_ms is None:
            interval_ms = _infer_interval(t, source)
        elif interval_ms <= 0:
            raise CandleDataError(source, None, "interval must be positive", f"got {interval_ms} ms")
        if (steps % interval_ms).any():
            _check_grid(t, interval_ms, source)

        for name, arr in columns.items():
            arr = np.ascontiguousarray(arr)
            arr.flags.writeable = False
            object.__setattr__(self, name, arr)
        object.__setattr__(self, "interval_ms", int(interval_ms))
        object.__setattr__(self, "symbol", symbol)
        object.__setattr__(self, "source", source)
        object.__setattr__(self, "_root", self)
        object.__setattr__(self, "_start", 0)
        object.__setattr__(self, "_views", {})

    def __setattr__(self, name, value):  # immutable: analysis must never edit its input
        raise AttributeError("Candles are immutable")

    def __len__(self) -> int:
        return len(self.time)

    def __repr__(self) -> str:
        if not len(self):
            return f"Candles({self.symbol or self.source}, empty)"
        return (
            f"Candles({self.symbol or self.source}, {len(self)} x {self.interval_ms // 60_000}m, "
            f"{iso(int(self.time[0]))} .. {iso(int(self.time[-1]))})"
        )

    # --- views -------------------------------------------------------------------------------

    def _slice(self, sl: slice) -> Candles:
        """A view of the candles in `sl` (a step-1 slice with start and stop in range)."""
        # spelled out, not a loop over the names: a snapshot cuts ~20 views, and the loop's lookups were half the cost
        out = object.__new__(Candles)
        put = object.__setattr__
        put(out, "time", self.time[sl])
        put(out, "open", self.open[sl])
        put(out, "high", self.high[sl])
        put(out, "low", self.low[sl])
        put(out, "close", self.close[sl])
        put(out, "volume", self.volume[sl])
        put(out, "interval_ms", self.interval_ms)
        put(out, "symbol", self.symbol)
        put(out, "source", self.source)
        put(out, "_root", self._root)
        put(out, "_start", self._start + sl.start)
        put(out, "_views", {})
        return out

    def _view(self, key: tuple, sl: slice) -> Candles:
        """The view `_slice(sl)`, remembered under `key` among this object's last few views.

        The theories of one snapshot cut the same views of its candles again and again (four fitted
        models each cut the history at the same fit time; strategies take the same tails). Candles
        are immutable, so a view made once serves them all. The memo is small and bounded: a
        long-lived `Candles` (a symbol's full history, cut at every decision time) must not keep
        every view it ever gave.
        """
        views = self._views
        out = views.get(key)
        if out is None:
            if len(views) >= _VIEWS_MAX:
                views.clear()
            out = views[key] = self._slice(sl)
        return out

    @property
    def origin(self) -> tuple[Candles, int]:
        """The validated `Candles` these are a view of (themselves, unless cut by `closed_by` / `tail`),
        and the index in it of their first candle. Two views with the same origin and length hold
        the same candles, which lets a digest of them be remembered (`theories.base.fingerprint`)."""
        return self._root, self._start

    @property
    def close_time(self) -> np.ndarray:
        """Close time of each candle, epoch ms."""
        return self.time + self.interval_ms

    @property
    def last_close_time(self) -> int:
        """When the newest candle closed: the time a snapshot of these candles describes."""
        if not len(self):
            raise CandleDataError(self.source, None, "no candles")
        return int(self.time[-1]) + self.interval_ms

    def closed_by(self, at_ms: int) -> Candles:
        """Only the candles that had closed at `at_ms` (close time <= at_ms): the no-lookahead cut."""
        # time + interval <= at_ms  <=>  time <= at_ms - interval (integers): no temporary array of close
        # times, which cost a full-history allocation on every call of the replay's hot path
        t = self.time
        limit = at_ms - self.interval_ms
        if not len(t) or t[-1] <= limit:  # nothing to cut (candles already cut at this time): no search
            return self
        return self._view(("closed_by", at_ms), slice(0, int(t.searchsorted(limit, side="right"))))

    def tail(self, n: int) -> Candles:
        """The last `n` candles (all of them when there are fewer)."""
        size = len(self.time)
        if n >= size:  # the whole: the same candles, and the same origin, as a view of all of them would have
            return self
        return self._view(("tail", n), slice(max(size - n, 0), size))

    def log_returns(self) -> np.ndarray:
        """Close-to-close log returns, one fewer than candles. Across a gap it spans the gap."""
        return np.diff(np.log(self.close))

    @property
    def bars_per_year(self) -> float:
        return YEAR_MS / self.interval_ms

    def gaps(self) -> list[Gap]:
        """Every run of missing candles, in time order."""
        n = len(self.time)
        # times are strictly increasing on the interval grid (validated), so a span of exactly n - 1
        # intervals leaves no room for a gap: one subtraction instead of a diff over the window
        if n < 2 or int(self.time[-1] - self.time[0]) == (n - 1) * self.interval_ms:
            return []
        steps = np.diff(self.time) // self.interval_ms
        where = np.flatnonzero(steps > 1)
        return [Gap(after_time=int(self.time[i]), missing=int(steps[i] - 1)) for i in where]


_VIEWS_MAX = 8  # views remembered per `Candles` (`Candles._view`)


def _first(mask: np.ndarray) -> int | None:
    """Index of the first True, None when there is none."""
    # any() then argmax(): no index array is built, which made validation the larger part of a
    # resample (two per snapshot) when every rule holds, as it nearly always does
    return int(mask.argmax()) if mask.any() else None


# Plausible epoch-ms range: catches times in seconds or truncated columns instead of silently
# reading them as 1970 (seen in real files).
EARLIEST_MS = 946_684_800_000  # 2000-01-01
LATEST_MS = 4_102_444_800_000  # 2100-01-01


def _valid(c: dict[str, np.ndarray], steps: np.ndarray) -> bool:
    """Whether every rule `_validate` checks holds, in a few whole-array reductions (`steps`: the time steps).

    Equivalent to `_validate` passing, shown rule by rule: NaN fails every comparison (and
    propagates through maximum, minimum, min and max), so a NaN anywhere fails a test here; every
    open and close lies in [low, high] with low > 0 and high finite, so all four prices are finite
    and positive. `Candles` of a few hundred bars (a resampled timeframe, two per snapshot) spent
    most of their construction in `_validate`'s ~30 array passes, each naming its first bad row.
    """
    t, o, h, lo, cl, v = (c[k] for k in ("time", "open", "high", "low", "close", "volume"))
    if not len(t):
        return True
    return bool(
        EARLIEST_MS <= t.min() and t.max() < LATEST_MS  # (first: in this range the steps cannot overflow)
        and (not len(steps) or steps.min() > 0)
        and (h >= np.maximum(o, cl)).all() and (lo <= np.minimum(o, cl)).all()
        and lo.min() > 0 and h.max() < np.inf
        and v.min() >= 0 and v.max() < np.inf
    )


def _validate(c: dict[str, np.ndarray], source: str) -> None:
    t = c["time"]
    i = _first((t < EARLIEST_MS) | (t >= LATEST_MS))
    if i is not None:
        raise CandleDataError(
            source, i + 1, "time must be UTC epoch milliseconds between 2000 and 2100",
            f"got {t[i]}: seconds, or a truncated column?",
        )
    if len(t) > 1:
        i = _first(np.diff(t) <= 0)
        if i is not None:
            raise CandleDataError(
                source, i + 2, "times must be strictly increasing", f"{t[i + 1]} follows {t[i]}"
            )
    for name in ("open", "high", "low", "close"):
        arr = c[name]
        i = _first(~np.isfinite(arr) | (arr <= 0))
        if i is not None:
            raise CandleDataError(
                source, i + 1, f"{name} must be a finite positive price", f"got {arr[i]!r} at {iso(int(t[i]))}"
            )
    body_top = np.maximum(c["open"], c["close"])
    i = _first(c["high"] < body_top)
    if i is not None:
        raise CandleDataError(
            source, i + 1, "high must be >= max(open, close)",
            f"high {c['high'][i]!r}, open {c['open'][i]!r}, close {c['close'][i]!r} at {iso(int(t[i]))}",
        )
    body_bottom = np.minimum(c["open"], c["close"])
    i = _first(c["low"] > body_bottom)
    if i is not None:
        raise CandleDataError(
            source, i + 1, "low must be <= min(open, close)",
            f"low {c['low'][i]!r}, open {c['open'][i]!r}, close {c['close'][i]!r} at {iso(int(t[i]))}",
        )
    v = c["volume"]
    i = _first(~np.isfinite(v) | (v < 0))
    if i is not None:
        raise CandleDataError(
            source, i + 1, "volume must be finite and non-negative", f"got {v[i]!r} at {iso(int(t[i]))}"
        )


def _infer_interval(t: np.ndarray, source: str) -> int:
    """The most common step between candles: gaps make some steps longer, never shorter."""
    if len(t) < 2:
        raise CandleDataError(source, None, "cannot infer the candle interval from fewer than 2 candles")
    steps, counts = np.unique(np.diff(t), return_counts=True)
    return int(steps[np.argmax(counts)])


def _check_grid(t: np.ndarray, interval_ms: int, source: str) -> None:
    if len(t) < 2:
        return
    i = _first(np.diff(t) % interval_ms != 0)
    if i is not None:
        raise CandleDataError(
            source, i + 2, f"times must lie on the {interval_ms} ms candle grid",
            f"{iso(int(t[i + 1]))} is {int(t[i + 1] - t[i])} ms after the previous candle",
        )
