"""The heuristic synthesiser: deterministic, stated rules over the snapshot's theory outputs. No LLM.

It is the offline default and the baseline every LLM variant must beat. The rules:

1. Levels come from the `montecarlo` theory's neutral ATR bracket for the chosen side (entry at
   the last close, its stop and target, its horizon); without `montecarlo` there are no levels
   and the answer is HOLD.
2. Up to six votes, each +1 (long), -1 (short) or 0:
   - montecarlo: the side whose expected R is positive in both the closed form and the bootstrap,
     by at least 0.05 R;
   - kalman: trend velocity at least 1 standard deviation from zero;
   - regime: the named regime is "bull trend" (+1) or "bear trend" (-1);
   - forest: only with a proven out-of-sample edge (accuracy above the base rate):
     P(up) >= 0.55 (+1) or <= 0.45 (-1);
   - context: breadth >= 60% with the leader above its trend (+1), breadth <= 40% with the
     leader below it (-1);
   - tradingview (only in a cycle a signed TradingView alert triggered): an entry alert votes for
     its direction, an exit alert votes 0. It is one vote among the others, so an alert alone
     never makes a trade.
3. Trade when the votes net to at least 2 in one direction AND the montecarlo expected R of that
   side is positive (never trade into a negative expectancy); otherwise HOLD.
4. Confidence is the closed-form P(target before stop) of that side: a probability the theory
   computed, not an opinion.

The reasoning starts with "No LLM used" so nobody mistakes the output for a model's judgement.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agent.llm.base import Reply, sorted_json
from agent.snapshot import FeatureSnapshot

MIN_NET_VOTES = 2
MIN_EXPECTED_R = 0.05
KALMAN_SIGMA = 1.0
FOREST_LONG, FOREST_SHORT = 0.55, 0.45
BREADTH_LONG, BREADTH_SHORT = 0.6, 0.4
HEURISTIC_VERSION = "1"


def _get(snapshot: FeatureSnapshot, theory: str, field: str) -> Any:
    result = snapshot.theories.get(theory)
    return None if result is None else getattr(result, field, None)


def _sign(x: float | None, lo: float, hi: float) -> int:
    if x is None:
        return 0
    return 1 if x >= hi else -1 if x <= lo else 0


def votes(snapshot: FeatureSnapshot) -> dict[str, int]:
    """Each theory's vote, +1 long, -1 short, 0 none (rule 2 of the module docstring)."""
    v: dict[str, int] = {}
    if "montecarlo" in snapshot.theories:
        long_ok, short_ok = (
            all((_get(snapshot, "montecarlo", f"{side}_expected_r_{k}") or 0) >= MIN_EXPECTED_R
                for k in ("closed", "sim"))
            for side in ("long", "short")
        )
        v["montecarlo"] = 1 if long_ok and not short_ok else -1 if short_ok and not long_ok else 0
    if "kalman" in snapshot.theories:
        v["kalman"] = _sign(_get(snapshot, "kalman", "velocity_sigma"), -KALMAN_SIGMA, KALMAN_SIGMA)
    if "regime" in snapshot.theories:
        name = _get(snapshot, "regime", "regime")
        v["regime"] = 1 if name == "bull trend" else -1 if name == "bear trend" else 0
    if "forest" in snapshot.theories:
        edge = _get(snapshot, "forest", "oos_edge")
        p_up = _get(snapshot, "forest", "p_up")
        v["forest"] = _sign(p_up, FOREST_SHORT, FOREST_LONG) if edge is not None and edge > 0 else 0
    if "context" in snapshot.theories:
        breadth = _get(snapshot, "context", "breadth")
        above = _get(snapshot, "context", "leader_above_trend")
        if breadth is not None and breadth >= BREADTH_LONG and above is True:
            v["context"] = 1
        elif breadth is not None and breadth <= BREADTH_SHORT and above is False:
            v["context"] = -1
        else:
            v["context"] = 0
    if "tradingview" in snapshot.theories:
        action, direction = _get(snapshot, "tradingview", "action"), _get(snapshot, "tradingview", "direction")
        v["tradingview"] = 0 if action != "entry" else 1 if direction == "LONG" else -1
    return v


def heuristic_signal(snapshot: FeatureSnapshot) -> dict[str, Any]:
    """The decision as a plain Signal-shaped dict, prices in the snapshot's units."""
    interval_h = snapshot.quality.interval_ms / 3_600_000
    v = votes(snapshot)
    net = sum(v.values())
    tally = ", ".join(f"{k} {x:+d}" for k, x in v.items()) or "no voting theory available"
    hold_horizon = 24.0
    horizon_bars = _get(snapshot, "montecarlo", "horizon")
    horizon = float(horizon_bars) * interval_h if horizon_bars else hold_horizon
    base = {"symbol": snapshot.symbol, "horizon_hours": horizon}

    def hold(why: str) -> dict[str, Any]:
        return {**base, "direction": "HOLD", "confidence": 0.0, "entry": None, "stop": None, "target": None,
                "reasoning": f"No LLM used: heuristic rules v{HEURISTIC_VERSION}. HOLD: {why} (votes: {tally}).",
                "theories": [k for k, x in v.items() if x != 0]}

    if "montecarlo" not in snapshot.theories:
        return hold("the montecarlo theory is unavailable, so there are no bracket levels")
    if abs(net) < MIN_NET_VOTES:
        return hold(f"net vote {net:+d} is short of {MIN_NET_VOTES}")
    side = "long" if net > 0 else "short"
    expected = _get(snapshot, "montecarlo", f"{side}_expected_r_closed")
    if expected is None or expected <= 0:
        return hold(f"votes favour {side.upper()} but its expected R is {expected if expected is not None else 'n/a'}")
    entry = _get(snapshot, "montecarlo", "entry") or snapshot.last_price
    stop = _get(snapshot, "montecarlo", f"{side}_stop")
    target = _get(snapshot, "montecarlo", f"{side}_target")
    p_target = _get(snapshot, "montecarlo", f"{side}_p_target_closed")
    if stop is None or target is None or p_target is None:
        return hold("the montecarlo bracket levels are missing")
    cited = ["montecarlo", *[k for k, x in v.items() if x == (1 if net > 0 else -1) and k != "montecarlo"]]
    return {
        **base,
        "direction": side.upper(),
        "confidence": round(float(p_target), 4),
        "entry": float(entry),
        "stop": float(stop),
        "target": float(target),
        "reasoning": (
            f"No LLM used: heuristic rules v{HEURISTIC_VERSION}. {side.upper()}: net vote {net:+d} ({tally}); "
            f"montecarlo expected {expected:+.2f} R, P(target first) {p_target:.2f}."
        ),
        "theories": cited,
    }


class HeuristicProvider:
    """The heuristic behind the provider interface, so its output goes through the same validation."""

    name = "heuristic"
    model = f"rules-v{HEURISTIC_VERSION}"
    is_llm = False
    is_replay = False

    def parameters(self) -> dict[str, Any]:
        return {"rules": HEURISTIC_VERSION}

    def complete(
        self, messages: Sequence[dict[str, str]], schema: dict[str, Any], snapshot: FeatureSnapshot
    ) -> Reply:
        text = sorted_json(heuristic_signal(snapshot))
        return Reply(text=text, finish_reason="stop", tokens_in=0, tokens_out=0, raw_response=text)
