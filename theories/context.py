"""Market context: the universe around the symbol, read from the universe's own candles.

- Breadth: the share of symbols whose last close is above their EMA(`trend_span`) (the classic
  "percent above moving average" breadth gauge). Each EMA runs over the symbol's last
  10 x `trend_span` candles, so it does not depend on how much history a symbol happens to carry
  (the seed keeps a weight below e^-19).
- Leader: the universe's leader (`TheoryContext.leader`, by default the largest coin): close vs its
  EMA, log return over `trend_bars`, and its named regime (one of the six of the `regime` theory,
  classified by the same rules on the leader's last `leader_window` candles, with that
  classification's trend score and volatility percentile), so that "the leader is in a bear
  trend" means the same thing everywhere in the product.
- Correlation: the mean of the pairwise Pearson correlations of one-bar log returns over the last
  `corr_lookback` bars, on the bar times common to all symbols. Symbols have gaps, so returns are
  aligned by time, never by position, and a return spanning a gap (a multi-bar move) is dropped.
  Also the symbol's own correlation with the leader on the same common times.

Which symbols count: the universe's candles are cut at the decision time again (no lookahead even
if a caller forgets); a symbol is left out when its last candle closed more than `max_stale_bars`
before the decision (delisted or halted), when its candles have another interval, or when it has
fewer than `trend_span` candles; it is left out of the correlation alone when it covers less than
`min_coverage` of the correlation window or its returns do not move. The symbol itself joins from
`ctx.history` when the universe lacks it.

A universe of only the symbol itself (after those exclusions) has no context to give: TheoryError.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import Field

from theories.base import (
    BARS,
    COUNT,
    FLAG,
    FRACTION,
    LABEL,
    LOG_RETURN,
    RATIO,
    SIGMA,
    FitCache,
    Theory,
    TheoryContext,
    TheoryError,
    TheoryParams,
    TheoryResult,
    num,
    pct,
    unit,
)
from theories.candles import Candles
from theories.indicators import ema
from theories.regime import REGIMES, RegimeParams, classify_regimes
from theories.regime import THEORY as REGIME_THEORY

REGIME_MIN_BARS = REGIME_THEORY.min_bars


class ContextParams(TheoryParams):
    trend_span: int = Field(50, ge=2, description="EMA span defining each symbol's trend, in bars.")
    trend_bars: int = Field(168, ge=10, description="Bars over which the leader's return and trend score are taken.")
    corr_lookback: int = Field(168, ge=24, description="One-bar returns in the correlation window.")
    min_common_returns: int = Field(48, ge=10, description="Fewer common return times than this: an error.")
    min_coverage: float = Field(
        0.8, gt=0, le=1, description="Share of the correlation window a symbol must cover to be correlated."
    )
    max_stale_bars: int = Field(24, ge=0, description="Symbols whose last candle is older than this are left out.")
    leader_window: int = Field(500, ge=150, description="Leader candles classified into a named regime.")
    broad_breadth: float = Field(0.7, gt=0.5, le=1, description="Breadth at or above: broad strength; mirror: weak.")
    high_correlation: float = Field(0.7, gt=0, le=1, description="Average correlation at or above: moving as one.")
    low_correlation: float = Field(0.3, ge=-1, lt=1, description="Average correlation at or below: dispersed.")


class ContextResult(TheoryResult):
    breadth: float = unit(FRACTION, "Share of the universe's symbols whose close is above their trend EMA.")
    n_above: int = unit(COUNT, "Symbols above their trend EMA.")
    n_symbols: int = unit(COUNT, "Symbols counted in the breadth (the symbol itself included).")
    n_excluded: int = unit(COUNT, "Universe symbols left out: stale, too short, or another candle interval.")
    avg_correlation: float = unit(RATIO, "Mean pairwise correlation of one-bar log returns on common times.")
    n_correlated: int = unit(COUNT, "Symbols in the correlation.")
    common_returns: int = unit(BARS, "Return times common to all correlated symbols.")
    symbol_is_leader: bool = unit(FLAG, "True when the analysed symbol is the leader itself.")
    symbol_leader_correlation: float | None = unit(
        RATIO, "Correlation of the symbol's returns with the leader's on the common times; None if it is the leader."
    )
    leader_above_trend: bool | None = unit(FLAG, "Leader's close above its trend EMA; None if no leader data.")
    leader_trend_gap: float | None = unit(FRACTION, "Leader's close / trend EMA - 1.")
    leader_return: float | None = unit(LOG_RETURN, "Leader's log return over trend_bars.")
    leader_trend_score: float | None = unit(SIGMA, "Trend score of the leader's regime classification.")
    leader_vol_percentile: float | None = unit(FRACTION, "Volatility percentile of the leader's regime classification.")
    leader_regime: str | None = unit(
        LABEL, f"Leader's named regime, one of: {', '.join(REGIMES)}; None if no leader data."
    )

    def summary(self) -> str:
        # the leader's volatility shows in its regime, named in the label
        lead = "leader n/a" if self.leader_trend_score is None else (
            f"leader trend z {num(self.leader_trend_score, 2, True)}, {pct(self.leader_trend_gap, 2, True)} vs EMA"
        )
        own = "" if self.symbol_leader_correlation is None else f", to leader {num(self.symbol_leader_correlation, 2)}"
        among = "" if self.n_correlated == self.n_symbols else f" of {self.n_correlated}"
        return (
            f"{self.n_above}/{self.n_symbols} above EMA; avg corr {num(self.avg_correlation, 2)}{among}{own}; "
            f"{lead} -> {self.label}"
        )


def breadth(closes: Sequence[np.ndarray], span: int) -> tuple[int, int]:
    """(symbols whose last close is above their EMA(span), symbols with at least `span` closes)."""
    by_length: dict[int, list[np.ndarray]] = {}  # series of one length are smoothed together, one row each
    for c in closes:
        c = np.asarray(c, dtype=np.float64)[-10 * span :]
        if len(c) >= span:
            by_length.setdefault(len(c), []).append(c)
    above = n = 0
    for rows in by_length.values():
        m = np.stack(rows)
        n += len(rows)
        above += int(np.count_nonzero(m[:, -1] > ema(m, span)[:, -1]))
    return above, n


def window_returns(
    time: np.ndarray, close: np.ndarray, interval_ms: int, end_ms: int, lookback: int
) -> tuple[np.ndarray, np.ndarray]:
    """One-bar log returns ending in the `lookback` bar slots up to `end_ms` (an open time).

    A return is stamped with the open time of the bar it ends on; a return across a gap is dropped.
    `time` lies on the interval's grid, as candle open times do.
    """
    start = end_ms - (lookback - 1) * interval_ms
    t = np.asarray(time)
    if len(t) > lookback and t[-1] == end_ms and t[-lookback - 1] == start - interval_ms:
        # the usual case: no gap in the window (times rise on the interval's grid, so lookback + 1 of
        # them spanning lookback intervals are every slot), and every return is kept
        return t[-lookback:], np.diff(np.log(np.asarray(close, dtype=np.float64)[-lookback - 1 :]))
    lo = np.searchsorted(t, start - interval_ms, side="left")
    hi = np.searchsorted(t, end_ms, side="right")
    t, lc = t[lo:hi], np.log(np.asarray(close, dtype=np.float64)[lo:hi])
    keep = (np.diff(t) == interval_ms) & (t[1:] >= start)
    return t[1:][keep], np.diff(lc)[keep]


def align(series: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """(times common to all, returns matrix [times x series]) from (times, returns) pairs, by time."""
    common = series[0][0]
    if all(np.array_equal(t, common) for t, _ in series[1:]):  # the usual case, no gap anywhere: nothing to match
        return common, np.column_stack([r for _, r in series])
    for t, _ in series[1:]:
        common = np.intersect1d(common, t, assume_unique=True)
    matrix = np.empty((len(common), len(series)))
    for j, (t, r) in enumerate(series):
        matrix[:, j] = r[np.searchsorted(t, common)]
    return common, matrix


def aligned_returns(
    times: Sequence[np.ndarray], closes: Sequence[np.ndarray], interval_ms: int, end_ms: int, lookback: int
) -> tuple[np.ndarray, np.ndarray]:
    """One-bar log returns of several symbols over the window, on the times they all share."""
    return align([window_returns(t, c, interval_ms, end_ms, lookback) for t, c in zip(times, closes, strict=True)])


def average_correlation(matrix: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean of the off-diagonal Pearson correlations of the columns, and the correlation matrix."""
    corr = np.corrcoef(matrix, rowvar=False)
    iu = np.triu_indices(corr.shape[0], k=1)
    return float(corr[iu].mean()), corr


@dataclass(frozen=True)
class LeaderState:
    above_trend: bool
    trend_gap: float
    log_return: float
    trend_score: float
    vol_percentile: float
    regime: str


def leader_state(candles: Candles, p: ContextParams) -> LeaderState | None:
    """The leader's trend and named regime; None when its history is too short to say."""
    c = candles.tail(p.leader_window)
    if len(c) < max(p.trend_bars + 1, p.trend_span, REGIME_MIN_BARS):
        return None
    close = c.close
    level = ema(close[-10 * p.trend_span :], p.trend_span)[-1]
    try:
        rules = classify_regimes(close, c.high, c.low, RegimeParams())
    except TheoryError:
        return None  # a leader whose price never moved has no regime to report
    code = int(rules.code[-1])
    if code < 0:
        return None
    return LeaderState(
        above_trend=bool(close[-1] > level),
        trend_gap=float(close[-1] / level - 1),
        log_return=float(np.log(close[-1] / close[-1 - p.trend_bars])),
        trend_score=float(rules.trend_score[-1]),
        vol_percentile=float(rules.vol_percentile[-1]),
        regime=REGIMES[code],
    )


def _label(above: int, n: int, avg_corr: float, lead: LeaderState | None, p: ContextParams) -> str:
    share = above / n
    if share >= p.broad_breadth:
        b = "broad strength"
    elif share <= 1 - p.broad_breadth:
        b = "broad weakness"
    else:
        b = "mixed breadth"
    if avg_corr >= p.high_correlation:
        c = "moving as one"
    elif avg_corr <= p.low_correlation:
        c = "moving independently"
    else:
        c = "moderate correlation"
    leader = "leader unavailable" if lead is None else f"leader {lead.regime}"
    return f"{b}; {leader}; {c}"


@dataclass(frozen=True)
class _CrossSection:
    """What the context says of the universe as a whole at one time: the same for every symbol in it."""

    eligible: tuple[str, ...]
    n_members: int
    error: str | None = None  # why the universe gives no context (raised for every symbol in it)
    n_above: int = 0
    n: int = 0
    names_c: tuple[str, ...] = ()
    common: int = 0
    avg_corr: float = 0.0
    corr: np.ndarray | None = None
    lead: LeaderState | None = None


def _cross_section(cut: Mapping[str, Candles], interval: int, leader: str, at_ms: int,
                   p: ContextParams) -> _CrossSection:
    eligible = {
        s: c for s, c in cut.items()
        if c.interval_ms == interval and len(c) >= p.trend_span
        and c.last_close_time >= at_ms - p.max_stale_bars * interval
    }
    if len(eligible) < 2:
        return _CrossSection(tuple(eligible), len(cut), error=(
            "context needs a universe of at least 2 symbols with recent data; only the symbol has it"))
    names = list(eligible)
    n_above, n = breadth([eligible[s].close for s in names], p.trend_span)

    end = max(int(c.time[-1]) for c in eligible.values())
    windows = {s: window_returns(c.time, c.close, interval, end, p.corr_lookback) for s, c in eligible.items()}
    names_c = [
        s for s in names
        if len(windows[s][0]) >= p.min_coverage * p.corr_lookback and windows[s][1].max() > windows[s][1].min()
    ]
    times, matrix = align([windows[s] for s in names_c]) if names_c else (np.empty(0), np.empty((0, 0)))
    if len(names_c) < 2 or len(times) < p.min_common_returns:
        return _CrossSection(tuple(eligible), len(cut), error=(
            f"context: {len(names_c)} symbols share {len(times)} return times in the last {p.corr_lookback} bars; "
            f"correlation needs 2 symbols and {p.min_common_returns} times"
        ))
    avg_corr, corr = average_correlation(matrix)
    lead = leader_state(eligible[leader], p) if leader in eligible else None
    return _CrossSection(tuple(eligible), len(cut), n_above=n_above, n=n, names_c=tuple(names_c),
                         common=len(times), avg_corr=avg_corr, corr=corr, lead=lead)


def _digest(c: Candles, is_leader: bool, p: ContextParams) -> tuple[int, ...]:
    """A digest of exactly the candle values the universe part reads from one symbol, for the cache key.

    Closes over the breadth EMA, the leader's and the correlation windows, open times over the correlation window
    (its returns are the last `corr_lookback` + 1 bars at most: candles lie on their interval's
    grid), highs and lows of the leader's window for the leader; the count, interval and last close
    time are in the key beside it. Python's hash of the bytes (SipHash, 64 bits, keyed per process)
    is about five times faster than a cryptographic digest of the same bytes, and ample for an
    in-memory cache: this key is made for every symbol of the universe on every call.
    """
    closes = max(10 * p.trend_span, p.leader_window, p.corr_lookback + 1)
    arrays = [c.close[-closes:], c.time[-(p.corr_lookback + 1):]]
    if is_leader:
        arrays += [c.high[-p.leader_window:], c.low[-p.leader_window:]]
    return tuple(hash(a.tobytes()) for a in arrays)


def _universe_key(cut: Mapping[str, Candles], leader: str, p: ContextParams) -> tuple:
    """Each member's name, interval, length, last close time and `_digest`: the universe part of the cache key.

    Remembered per set of views: every snapshot of one hour cuts the same views from the same series
    (its own dict, new view objects), and the digests of ten members cost ~50 us a snapshot. A view's
    candles are fixed by its origin, its start in it and its length (`Candles.origin`), so those name it.
    """
    views = tuple((s, id(c.origin[0]), c.origin[1], len(c)) for s, c in cut.items())
    memo_key = (views, leader, p)
    with _KEYS_LOCK:
        known = _KEYS.get(memo_key)
        if known is not None:
            return known[1]
    data = tuple((s, c.interval_ms, len(c), c.last_close_time if len(c) else None, _digest(c, s == leader, p))
                 for s, c in cut.items())
    with _KEYS_LOCK:
        # the entry holds the origins, so while it is remembered no other object can take their ids
        _KEYS[memo_key] = (tuple(c.origin[0] for c in cut.values()), data)
        if len(_KEYS) > _KEYS_MAX:
            _KEYS.popitem(last=False)
    return data


# _universe_key's memo: (views, leader, params) -> (the views' origins, key); bounded, oldest out first
_KEYS: OrderedDict[tuple, tuple[tuple[Candles, ...], tuple]] = OrderedDict()
_KEYS_MAX = 16
_KEYS_LOCK = threading.Lock()


def market_context(
    symbol: str, members: Mapping[str, Candles], leader: str, at_ms: int, params: ContextParams | None = None,
    *, cache: FitCache | None = None,
) -> ContextResult:
    """Breadth, leader state and correlation of `members` (symbol -> candles) at `at_ms`.

    Everything but the symbol's own correlation with the leader describes the universe, and is the
    same for each of its symbols at one time: with `cache`, it is computed once per time and universe
    (keyed by the digest of the candles it reads), not once per symbol.
    """
    p = params or ContextParams()
    if symbol not in members:
        raise TheoryError(f"context: the symbol {symbol!r} is not among the members")
    interval = members[symbol].interval_ms
    cut = {s: c if not len(c) or c.last_close_time <= at_ms else c.closed_by(at_ms) for s, c in members.items()}
    if cache is None:
        cs = _cross_section(cut, interval, leader, at_ms, p)
    else:
        key = ("context", at_ms, interval, leader, p, _universe_key(cut, leader, p))
        cs = cache.get_or_fit(key, lambda: _cross_section(cut, interval, leader, at_ms, p))
    if symbol not in cs.eligible:
        raise TheoryError(f"context: the symbol itself has too little recent data (needs {p.trend_span} candles)")
    if cs.error is not None:
        raise TheoryError(cs.error)

    is_leader = symbol == leader
    own_corr = None
    if not is_leader and symbol in cs.names_c and leader in cs.names_c:
        own_corr = float(cs.corr[cs.names_c.index(symbol), cs.names_c.index(leader)])
    lead = cs.lead
    return ContextResult(
        breadth=cs.n_above / cs.n,
        n_above=cs.n_above,
        n_symbols=cs.n,
        n_excluded=cs.n_members - len(cs.eligible),
        avg_correlation=cs.avg_corr,
        n_correlated=len(cs.names_c),
        common_returns=cs.common,
        symbol_is_leader=is_leader,
        symbol_leader_correlation=own_corr,
        leader_above_trend=None if lead is None else lead.above_trend,
        leader_trend_gap=None if lead is None else lead.trend_gap,
        leader_return=None if lead is None else lead.log_return,
        leader_trend_score=None if lead is None else lead.trend_score,
        leader_vol_percentile=None if lead is None else lead.vol_percentile,
        leader_regime=None if lead is None else lead.regime,
        label=_label(cs.n_above, cs.n, cs.avg_corr, lead, p),
    )


def _run(ctx: TheoryContext, params: ContextParams) -> ContextResult:
    members = dict(ctx.universe)
    members.setdefault(ctx.symbol, ctx.history)
    return market_context(ctx.symbol, members, ctx.leader, ctx.at_ms, params, cache=ctx.cache)


THEORY = Theory(
    name="context",
    description=(
        "Universe breadth (share above EMA), the leader's named regime, and average pairwise "
        "correlation of time-aligned returns."
    ),
    params=ContextParams,
    result=ContextResult,
    run=_run,
    min_bars=50,  # the default trend span; the universe members are checked inside
)
