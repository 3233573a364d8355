"""Where trading days, weeks and months start, in a configurable time zone, and the balance then.

FTMO's daily loss limit is measured from the balance at midnight Prague time, so the day does
not start at 00:00 UTC: it starts at 23:00 UTC in winter and 22:00 UTC in summer. Local
midnight is found with `zoneinfo` (the IANA database; the `tzdata` package supplies it where
the system lacks it). Weeks start on Monday at local midnight, months on the 1st.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from datetime import time as clock_time
from typing import Literal
from zoneinfo import ZoneInfo

from risk.inputs import BalanceChange

Period = Literal["day", "week", "month"]


def _local_midnight_ms(day: datetime, tz: ZoneInfo) -> int:
    # fold=0: in a zone whose clocks jump at midnight the earlier reading is taken
    return int(datetime.combine(day.date(), clock_time(0), tzinfo=tz).timestamp() * 1000)


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
