"""The snapshot source of an alert-triggered cycle: the usual snapshot, plus the alert as the `tradingview` theory.

It wraps any `SnapshotSource` (agent.cycle, contracts section 5) and changes nothing else: the
theories are computed exactly as in a scheduled cycle, then the alert is placed against the
snapshot's last close. An alert-triggered cycle decides one symbol, so the cycle hands the source
a universe of that symbol alone; the other symbols of the run's universe are added back here,
cut at the decision time like every candle a theory sees, so that cross-asset theories (the
market leader's context) read the same data as in a scheduled cycle.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from agent.cycle import SnapshotSource, compute_snapshot
from agent.cycle_settings import CycleSettings
from agent.snapshot import FeatureSnapshot
from agent.webhook.theory import THEORY_NAME, TradingViewResult
from theories.base import FitCache
from theories.candles import CandleDataError, Candles
from theories.funding import FundingRates

# (last close, its close time, candle interval) -> the result for that snapshot
AlertResult = Callable[[float, int, int], TradingViewResult]


class AlertSnapshotSource:
    """`SnapshotSource` for one alert: `inner`'s snapshot of `symbol` with the alert attached; other symbols untouched.

    `context(symbol, decision_ms)` gives the candles of another universe symbol closed by the
    decision time (None when it has none); it fills in what the one-symbol cycle did not load.
    """

    def __init__(self, symbol: str, result: AlertResult, *, universe: Sequence[str] = (),
                 context: Callable[[str, int], Candles | None] | None = None,
                 inner: SnapshotSource = compute_snapshot) -> None:
        self.symbol = symbol
        self.result = result
        self.universe = tuple(universe)
        self.context = context
        self.inner = inner

    def __call__(self, symbol: str, universe: Mapping[str, Candles], decision_ms: int, settings: CycleSettings, *,
                 outcomes: Sequence[float], funding: Mapping[str, FundingRates],
                 cache: FitCache | None) -> FeatureSnapshot:
        full = dict(universe)
        if self.context is not None:
            for other in self.universe:
                if other not in full:
                    try:
                        candles = self.context(other, decision_ms)
                    except (CandleDataError, OSError, ValueError):  # as in a scheduled cycle: that symbol is absent
                        candles = None
                    if candles is not None and len(candles):
                        full[other] = candles.closed_by(decision_ms)
        snapshot = self.inner(symbol, full, decision_ms, settings, outcomes=outcomes, funding=funding, cache=cache)
        if symbol != self.symbol or snapshot.time is None:
            return snapshot
        attached = self.result(snapshot.last_price, snapshot.time, snapshot.quality.interval_ms)
        # model_copy does not re-validate: every theory in it is a validated result already
        return snapshot.model_copy(update={"theories": {**snapshot.theories, THEORY_NAME: attached}})
