"""Where trading days, weeks and months start, in a configurable time zone, and the balance then.

FTMO's daily loss limit is measured from the balance at midnight Prague time, so the day does
not start at 00:00 UTC: it starts at 23:00 UTC in winter and 22:00 UTC in summer. Local
midnight is found with `zoneinfo` (the IANA database; the `tzdata` package supplies it where
the system lacks it). Weeks start on Monday at local midnight, months on the 1st.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from datetime import time as clock_time
from functools import lru_cache
from itertools import pairwise
from typing import Literal
from zoneinfo import ZoneInfo

from risk.inputs import BalanceChange

Period = Literal["day", "week", "month"]


def _local_midnight_ms(day: datetime, tz: ZoneInfo) -> int:
    # fold=0: in a zone whose clocks jump at midnight the earlier reading is taken
    return int(datetime.combine(day.date(), clock_time(0), tzinfo=tz).timestamp() * 1000)


@lru_cache(maxsize=256)  # pure; asked six times per decision, and every symbol of a cycle asks the same
def period_start_ms(now_ms: int, period: Period, timezone: str) -> int:
    """UTC epoch ms of the local midnight that starts the day, week (Monday) or month holding `now_ms`."""
    tz = ZoneInfo(timezone)
    local = datetime.fromtimestamp(now_ms / 1000, tz=UTC).astimezone(tz)
    if period == "week":
        local = local - timedelta(days=local.weekday())
    elif period == "month":
        local = local.replace(day=1)
    return _local_midnight_ms(local, tz)


def balance_at(ledger: Sequence[BalanceChange], time_ms: int, initial_balance: float) -> float:
    """The closed balance in force at `time_ms`: the last ledger entry at or before it.

    An entry stamped exactly at midnight belongs to the day it starts (the balance "at midnight"
    includes it). Before the first entry the balance is the initial one.
    """
    balance = initial_balance
    for change in ledger:
        if change.time_ms > time_ms:
            break
        balance = change.balance
    return balance


def ledger_in_force(ledger: Sequence[tuple[int, float]], now_ms: int, timezone: str) -> Sequence[tuple[int, float]]:
    """The part of a (time_ms, balance) ledger the gate reads at `now_ms`: the entry in force at the
    earliest of the day, week and month starts, and every entry after it.

    The gate reads a ledger only through `balance_at` at those starts and through its last entry,
    which are the same on this tail as on the whole ledger; a long replay's ledger grows with every
    closed trade and need not be copied into every request. A ledger out of time order is returned
    whole, so that the gate still sees (and refuses) it.
    """
    if any(t1 < t0 for (t0, _), (t1, _) in pairwise(ledger)):
        return ledger
    first = min(period_start_ms(now_ms, period, timezone) for period in ("day", "week", "month"))
    i = bisect_right(ledger, first, key=lambda entry: entry[0])  # entries at or before `first` end at i
    return ledger[max(i - 1, 0):]
