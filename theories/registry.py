"""Theory names to theories, so a theory set is just a list of names.

Adding a theory is adding a module with a `THEORY` and naming it here.
"""

from __future__ import annotations

from collections.abc import Iterable

from theories import (
    autocorr,
    bayes,
    context,
    entropy,
    forest,
    hurst,
    kalman,
    montecarlo,
    regime,
    stationarity,
    variance,
)
from theories.base import Theory
from theories.strategies import atr_breakout, funding_extremes, momentum, rsi_bollinger, vwap_reversion

THEORIES: dict[str, Theory] = {t.name: t for t in (
        entropy.THEORY,
        hurst.THEORY,
        regime.THEORY,
        kalman.THEORY,
        stationarity.THEORY,
        variance.THEORY,
        autocorr.THEORY,
        montecarlo.THEORY,
        bayes.THEORY,
        forest.THEORY,
        context.THEORY,
        vwap_reversion.THEORY,
        rsi_bollinger.THEORY,
        momentum.THEORY,
        atr_breakout.THEORY,
        funding_extremes.THEORY,
    )}

DEFAULT_SET: tuple[str, ...] = tuple(THEORIES)


def resolve(names: Iterable[str]) -> list[Theory]:
    """The theories for a set of names, in the given order; unknown names are an error naming them."""
    names = list(names)
    unknown = [n for n in names if n not in THEORIES]
    if unknown:
        raise KeyError(f"unknown theories {unknown}; known: {sorted(THEORIES)}")
    return [THEORIES[n] for n in names]
