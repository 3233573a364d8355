"""Finds what makes a well-typed request senseless; the gate refuses it before any rule computes on it.

A LONG needs stop < entry < target and a SHORT the mirror; prices, the horizon, the initial
balance and equity must be positive; the ledger must be in time order, not from the future, and
end at the current balance.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import numpy as np

from risk.decision import Reason
from risk.inputs import RiskRequest

RULE = "well_formed"


def malformed(found: list[str]) -> tuple[Reason, ...]:
    """One machine-readable reason per problem."""
    return tuple(Reason(rule=RULE, code="malformed_input", message=p) for p in found)


def problems(r: RiskRequest) -> list[str]:
    """Every inconsistency of the request, in words (empty when it is sound). A HOLD's prices are not checked."""
    s, a = r.proposal, r.account
    out: list[str] = []
    if s.direction == "HOLD":
        pass
    elif s.entry is None or s.stop is None or s.target is None:
        out.append(f"a {s.direction} needs entry, stop and target, got {s.entry}, {s.stop}, {s.target}")
    elif min(s.entry, s.stop, s.target) <= 0:
        out.append(f"prices must be positive: entry {s.entry}, stop {s.stop}, target {s.target}")
    elif s.direction == "LONG" and not s.stop < s.entry < s.target:
        out.append(f"a LONG needs stop < entry < target, got stop {s.stop}, entry {s.entry}, target {s.target}")
    elif s.direction == "SHORT" and not s.target < s.entry < s.stop:
        out.append(f"a SHORT needs target < entry < stop, got target {s.target}, entry {s.entry}, stop {s.stop}")
    if s.direction != "HOLD" and not s.horizon_hours > 0:
        out.append(f"horizon_hours must be positive, got {s.horizon_hours}")
    if not a.initial_balance > 0:
        out.append(f"initial_balance must be positive, got {a.initial_balance}")
    if not a.equity > 0:
        out.append(f"equity must be positive, got {a.equity}")
    if a.cash < 0:
        out.append(f"cash must not be negative, got {a.cash}")
    times = [c.time_ms for c in a.ledger]
    if not _ordered(times, strict=False):
        out.append("account ledger is not in time order")
    if times and times[-1] > r.now_ms:
        out.append(f"account ledger has an entry at {times[-1]}, after the decision time {r.now_ms}")
    # the period-start balances are read from the ledger: one that does not end at the balance is incomplete
    last = a.ledger[-1].balance if a.ledger else a.initial_balance
    if abs(last - a.balance) > 1e-9 * max(abs(a.balance), 1.0):
        out.append(f"account ledger ends at balance {last} but the balance is {a.balance}: the ledger is incomplete")
    for p in r.positions:
        if not (p.quantity > 0 and p.entry > 0 and p.mark > 0):
            out.append(f"open position {p.symbol} needs positive quantity, entry and mark")
    if any(t > r.now_ms for t in r.recent_signal_ms):
        out.append("a recent signal time is after the decision time")
    # vectorised: a month of hourly closes per symbol is checked on every decision
    for sym, series in r.prices.items():
        if len(series.time_ms) != len(series.close):
            out.append(f"price series {sym}: {len(series.time_ms)} times but {len(series.close)} closes")
        elif (np.asarray(series.close, dtype=np.float64) <= 0).any():
            out.append(f"price series {sym} has a close <= 0")
        elif not _ordered(series.time_ms, strict=True):
            out.append(f"price series {sym} times are not increasing")
    return out


def _ordered(times: Sequence[int], strict: bool) -> bool:
    """Whether the times never decrease (strict: always increase); vectorised, exact for any Python int."""
    if len(times) < 2:  # most ledgers of a replay's decisions: nothing to compare, no array to build
        return True
    try:
        t = np.asarray(times, dtype=np.int64)
    except OverflowError:  # beyond int64: compare as Python ints
        return all(t1 > t0 if strict else t1 >= t0 for t0, t1 in pairwise(times))
    return bool((t[1:] > t[:-1]).all() if strict else (t[1:] >= t[:-1]).all())  # no subtraction: no wrap-around
