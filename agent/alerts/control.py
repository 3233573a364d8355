"""Pause control of a run: /pause and /resume set it, every scheduled or triggered cycle checks it first.

Paused means no new cycles; open positions are still managed (the broker's sync runs with the
next cycle after /resume, and a manual position's answers are taken at any time). The flag is
a StateRow `control:<run>`, so it survives restarts and is seen by every process on the store.
"""

from __future__ import annotations

import json

from agent.store.store import Store
from agent.store.tables import StateRow


def control_key(run: str) -> str:
    return f"control:{run}"


def is_paused(store: Store, run: str) -> bool:
    state = store.state(control_key(run))
    return bool(state and state.get("paused"))


def set_paused(store: Store, run: str, paused: bool, by: str, now_ms: int) -> None:
    """Pause or resume `run`, recording who did it and when."""
    with store.session() as s:
        row = s.get(StateRow, control_key(run)) or StateRow(key=control_key(run), value_json="", cycle_id="",
                                                              updated_ms=now_ms)
        row.value_json = json.dumps({"paused": paused, "by": by, "at_ms": now_ms}, sort_keys=True)
        row.updated_ms = now_ms
        s.add(row)
        s.commit()
