"""Funding-rate extremes on perpetuals: lean against a crowded side.

Long when the latest settled funding rate is below -0.02% per interval (shorts are paying longs:
the crowd is short), short when it is above 0.05% (longs are paying heavily). Hold 24 to 72 hours:
before 24 h only a stop can end the trade; after it, the trade ends once funding is no longer
extreme on its side (the exit flag); at 72 h the time stop ends it. The rule has no price stop or
target. Rates are compared per funding interval as published (8 h on Binance USD-M); a rate is
used only once settled, and a latest settlement older than `max_age_hours` is stale: no answer.
Strength measures the rate beyond its threshold, in units of the threshold.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field, model_validator

from theories.base import FRACTION, TIME, Theory, TheoryContext, TheoryError, TheoryParams, pct, unit
from theories.candles import iso
from theories.funding import FundingRates
from theories.strategies.rule import StrategyResult, plan_label, strength
from theories.timeframes import HOUR_MS


class FundingExtremesParams(TheoryParams):
    long_below: float = Field(-0.0002, lt=0, description="Long when the rate per interval is below this (-0.02%).")
    short_above: float = Field(0.0005, gt=0, description="Short when the rate per interval is above this (0.05%).")
    min_hold_hours: float = Field(24.0, ge=0, description="Exit flags are ignored before this many hours.")
    max_hold_hours: float = Field(72.0, gt=0, description="Time stop, hours.")
    max_age_hours: float = Field(
        16.0, gt=0, description="The latest settlement may be at most this old (two 8 h intervals) to be used."
    )

    @model_validator(mode="after")
    def _hold_ordered(self) -> FundingExtremesParams:
        if self.min_hold_hours > self.max_hold_hours:
            raise ValueError(f"min_hold_hours {self.min_hold_hours} exceeds max_hold_hours {self.max_hold_hours}")
        return self


class FundingExtremesResult(StrategyResult):
    rate: float = unit(FRACTION, "Latest settled funding rate per interval (0.0001 = 0.01%), longs pay when > 0.")
    rate_time: int = unit(TIME, "When that rate settled, UTC epoch ms.")
    mean_rate_3d: float = unit(FRACTION, "Mean settled rate over the last 72 h, per interval.")


def funding_extremes(
    funding: FundingRates, at_ms: int, last_close: float, interval_ms: int, params: FundingExtremesParams | None = None
) -> FundingExtremesResult:
    """The rule at `at_ms` from the settlements known by then; `last_close` is the entry reference."""
    p = params or FundingExtremesParams()
    known = funding.settled_by(at_ms)
    name = funding.symbol or funding.source
    if not len(known):
        raise TheoryError(f"no funding rate of {name} had settled by {iso(at_ms)}")
    t, rate = int(known.time[-1]), float(known.rate[-1])
    if at_ms - t > p.max_age_hours * HOUR_MS:
        raise TheoryError(f"funding data of {name} is stale: last settlement {iso(t)}, decision at {iso(at_ms)}")
    # the settlements of the last 72 h: a search of the rising times, not a mask over the whole history
    recent = known.rate[int(np.searchsorted(known.time, at_ms - 72 * HOUR_MS, side="right")) :]
    vote = 1 if rate < p.long_below else -1 if rate > p.short_above else 0
    threshold = p.long_below if vote >= 0 and rate < 0 else p.short_above
    conds = (f"fund<{p.long_below:.2%}",) if vote == 1 else (f"fund>{p.short_above:.2%}",) if vote == -1 else ()
    bars = lambda hours: max(1, round(hours * HOUR_MS / interval_ms))  # noqa: E731 - two uses, one line
    return FundingExtremesResult(
        label=plan_label(vote, len(conds), 1, f"funding {pct(rate, 2, True)}"),
        vote=vote,
        strength=strength(vote, (abs(rate) - abs(threshold)) / abs(threshold)),
        conditions=conds,
        entry=last_close,
        stop=None,
        target=None,
        target_is_limit=True,
        trail_atr=None,
        trail_schedule=(),
        min_hold_bars=bars(p.min_hold_hours) if p.min_hold_hours else None,
        max_hold_bars=bars(p.max_hold_hours),
        exit_long=bool(rate >= p.long_below),
        exit_short=bool(rate <= p.short_above),
        rate=rate,
        rate_time=t,
        mean_rate_3d=float(recent.mean()) if len(recent) else rate,
    )


def _run(ctx: TheoryContext, params: FundingExtremesParams) -> FundingExtremesResult:
    if ctx.funding is None:
        raise TheoryError(f"no funding rates given for {ctx.symbol} (perpetuals only)")
    if ctx.funding.symbol and ctx.funding.symbol != ctx.symbol:
        raise TheoryError(f"funding rates are for {ctx.funding.symbol}, not {ctx.symbol}")
    return funding_extremes(ctx.funding, ctx.at_ms, float(ctx.candles.close[-1]), ctx.candles.interval_ms, params)


THEORY = Theory(
    name="funding_extremes",
    description="Perpetual funding below -0.02% (long) or above 0.05% (short) per interval; hold 24-72 h",
    params=FundingExtremesParams,
    result=FundingExtremesResult,
    run=_run,
    min_bars=1,
)
