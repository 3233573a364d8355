"""One seed rule strategy alone, behind the provider interface: `strategy:<name>`.

The provider reads the rule's own result from the snapshot (`theories/strategies/*`, a
`StrategyResult`) and answers with a Signal-shaped JSON object. That answer then takes the same
road as any variant's: the Synthesiser validates it against `SignalRules`, the risk gate sizes or
refuses it, the paper broker fills it, the store records it. "Each seed strategy alone" is thus a
variant of the cycle, not a separate simulator. No LLM is used, and the reasoning says so.

Translation (version `STRATEGY_PROVIDER_VERSION`), for a rule that votes +1 / -1 (vote 0 is HOLD):

- direction: the vote. Entry: the snapshot's last close (where a market order acts; it equals the
  rule's own entry for rules on the snapshot's candles, and is the fresher price for rules that
  read resampled bars, such as vwap_reversion's 4h bars).
- stop: the rule's own. A rule without one (funding_extremes) takes the stop of the `montecarlo`
  theory's neutral ATR bracket for its side (k_stop x ATR, 1.5 ATR by default: the bracket the
  heuristic trades); without montecarlo in the snapshot the answer is HOLD, because a trade with
  no stop cannot be sized. A stop beyond `SignalRules.max_stop_distance` is HOLD (the rules would
  refuse it).
- target: the rule's own, when it has one (vwap_reversion: the VWAP; rsi_bollinger: the band it
  reports as indicative). When that target gives a reward:risk below `SignalRules.min_reward_risk`
  the answer is HOLD with the numbers: the product does not take such trades from anyone, and
  moving the rule's target would make it another rule. A rule without a target (momentum's
  trailing exits, atr_breakout's and funding_extremes' exit signals) gets a proxy target at
  `proxy_reward_risk` x its risk (2 R by default, never below the rules' minimum): the same reward
  multiple as the montecarlo bracket the heuristic trades, so rule and heuristic differ in
  direction and stop, not in the payoff they aim for.
- horizon (the paper broker's time stop): the rule's `max_hold_bars` in the snapshot's candles;
  a rule without one holds until its stop or target, so the horizon is the longest the signal
  rules allow (`max_horizon_hours`, 168 h by default). Clipped to the rules' bounds.
- confidence: a rule states no probability of its own. The signal carries P(target before stop
  within the horizon) of the rule's own bracket, in closed form (`theories.montecarlo.
  closed_form_odds`: drifted Brownian motion killed at the two levels, continuous monitoring)
  with the montecarlo theory's fitted drift (James-Stein shrunk) and volatility per bar: the same
  definition the heuristic's confidence uses, so the two baselines differ only in their rules.
  Without montecarlo: the driftless value with no time limit, ln(entry/stop) / ln(target/stop)
  for a long (gambler's ruin, d / (u + d) in log distances). `strategy:NAME:P` states the fixed
  confidence P instead (model `NAME-v1-cP`).
  Consequence, stated plainly: the gate's Kelly uses p = min(the variant's Bayesian win rate,
  confidence), so with the drift shrunk to zero the bracket's p is at most about 1 / (1 + R) and
  Kelly is at most zero: the gate refuses the trade. A rule's setup is traded when the fitted
  drift backs its side. Measured on Binance 1h 2024, BTC/ETH/SOL, a decision every 4 h, default
  rule and signal settings, sizing fee 0.1% per side, prior Beta(4, 6): setups / positive Kelly
  rsi_bollinger 156 / 18, atr_breakout 143 / 22, momentum 26 / 5, funding_extremes 98 / 0 (a 2 R
  bracket over its 72 h time stop: median P(target first) 0.22), vwap_reversion 0 / 0 (its default
  EMA filter never agrees); every setup became a valid signal. `strategy:NAME:1` lets the gate's
  win-rate posterior alone size the rule (and passes any confidence floor). The regime filter's
  confidence floor (`risk.regime`) applies as to every variant.
- cited theories: the strategy, plus montecarlo when its stop or odds were used.

What the rule does that the paper broker cannot do through `OrderIntent` (entry order, stop,
target as a resting limit, time stop), so the replayed baseline differs from the rule on paper:

- ATR trailing schedules (momentum: 1.2 / 1.0 / 0.8 ATR behind the best price past 1 / 2 / 3 R):
  NOT supported per order. The broker's trailing stop is one fraction for every position
  (`[paper].trailing_stop`, off by default), so momentum runs with its initial stop, the proxy
  target and its 72 h time stop.
- exit signals at a close (rsi_bollinger: RSI > 70 or a close above the band; atr_breakout: a
  close back through the SMA; funding_extremes: funding no longer extreme after 24 h): NOT
  supported; nothing re-asks the rule about an open position. They are replaced by the target
  (the indicative band as a resting limit for rsi_bollinger, the proxy target otherwise) and the
  time stop. `min_hold_bars` only gates those flags, so it has no effect.
- reversal on an opposite vote, and "one position at a time": NOT reproduced. A repeated or
  opposite vote while a position is open is a new signal; the gate's open-position, correlation
  (same symbol and side counts as fully correlated) and exposure limits decide, as for every variant.
- max-hold: supported (the time stop). Partial exits: the rules have none; the broker's
  `partial_fraction` and its break-even move (`break_even_trigger`, 0.25% by default) apply to
  every variant's positions alike, this one included, though no seed rule has them.
"""

from __future__ import annotations

import hashlib
import importlib
import math
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

from agent.llm.base import Reply, sorted_json
from agent.signal import TOLERANCE, SignalRules
from agent.snapshot import FeatureSnapshot
from theories.base import TheoryError, TheoryParams
from theories.montecarlo import barrier_probability, closed_form_odds
from theories.registry import THEORIES
from theories.strategies.rule import StrategyResult

STRATEGY_PROVIDER_VERSION = "1"
PROXY_REWARD_RISK = 2.0
HOUR_MS = 3_600_000


def strategy_names() -> tuple[str, ...]:
    """Every registered theory whose result is a rule strategy's plan, sorted."""
    return tuple(sorted(name for name, t in THEORIES.items() if issubclass(t.result, StrategyResult)))


@cache
def rule_source_sha256(strategy: str) -> str:
    """sha256 of the rule's module and of the shared rule module: a changed rule changes the call key."""
    digest = hashlib.sha256()
    for module in (THEORIES[strategy].run.__module__, StrategyResult.__module__):
        digest.update(Path(importlib.import_module(module).__file__).read_bytes())
    return digest.hexdigest()


def _levels_probability(side: int, entry: float, stop: float, target: float) -> float:
    """Driftless P(target before stop) with no time limit, in log distances: d / (u + d)."""
    up, down = (math.log(target / entry), math.log(entry / stop)) if side > 0 else (
        math.log(entry / target), math.log(stop / entry))
    return barrier_probability(0.0, 1.0, up, down)


def strategy_signal(
    snapshot: FeatureSnapshot,
    strategy: str,
    rules: SignalRules | None = None,
    *,
    proxy_reward_risk: float = PROXY_REWARD_RISK,
    confidence: float | None = None,
) -> dict[str, Any]:
    """The rule's decision as a plain Signal-shaped dict, prices in the snapshot's units (module docstring)."""
    rules = rules or SignalRules()
    interval_h = snapshot.quality.interval_ms / HOUR_MS
    tag = f"No LLM used: {strategy} rule alone (strategy provider v{STRATEGY_PROVIDER_VERSION})."

    def text(body: str) -> str:
        out = f"{tag} {body}"
        return out if len(out) <= rules.max_reasoning_chars else out[: rules.max_reasoning_chars - 3] + "..."

    def hold(why: str) -> dict[str, Any]:
        return {"symbol": snapshot.symbol, "direction": "HOLD", "confidence": 0.0, "entry": None, "stop": None,
                "target": None, "horizon_hours": rules.min_horizon_hours, "reasoning": text(f"HOLD: {why}."),
                "theories": []}

    result = snapshot.theories.get(strategy)
    if result is None:
        why = snapshot.errors.get(strategy)
        return hold(f"the rule gave no answer ({why})" if why else "the rule is not in the snapshot's theory set")
    if not isinstance(result, StrategyResult):
        return hold(f"{strategy} is not a rule strategy")
    if result.vote == 0:
        return hold(f"no setup: {result.label}")
    side = result.vote
    direction = "LONG" if side > 0 else "SHORT"
    mc = snapshot.theories.get("montecarlo")
    cited = [strategy]
    entry = snapshot.last_price
    notes = [f"{direction} on [{', '.join(result.conditions)}]"]

    stop = result.stop
    if stop is None:
        if mc is None:
            return hold(f"{direction} setup, but the rule names no stop and the snapshot has no montecarlo ATR "
                        "bracket to take one from: a trade without a stop cannot be sized")
        stop = float(mc.long_stop if side > 0 else mc.short_stop)
        cited.append("montecarlo")
        notes.append("stop from the montecarlo ATR bracket (the rule has none)")
    if side * (entry - stop) <= 0:
        return hold(f"{direction} setup, but its stop {stop:.6g} is not on the losing side of the entry {entry:.6g}")
    risk = abs(entry - stop)
    if risk / entry > rules.max_stop_distance + TOLERANCE:
        return hold(f"{direction} setup, but its stop is {risk / entry:.1%} from the entry; at most "
                    f"{rules.max_stop_distance:.0%}")

    target = result.target
    if target is None:
        reward = max(proxy_reward_risk, rules.min_reward_risk)
        target = entry + side * reward * risk
        if target <= 0:
            return hold(f"{direction} setup, but a {reward:g} R target would be below zero")
        notes.append(f"proxy target {reward:g} R (the rule exits by trailing or signal, not at a level)")
    else:
        if side * (target - entry) <= 0:
            return hold(f"{direction} setup, but its target {target:.6g} is already reached from the entry "
                        f"{entry:.6g}")
        rr = abs(target - entry) / risk
        if rr < rules.min_reward_risk - TOLERANCE:
            return hold(f"{direction} setup, but its own target gives reward:risk {rr:.2f}, below the minimum "
                        f"{rules.min_reward_risk:g}: not taken")

    if result.max_hold_bars is not None:
        horizon = result.max_hold_bars * interval_h
        notes.append(f"time stop {horizon:g} h (the rule's)")
    else:
        horizon = rules.max_horizon_hours
        notes.append(f"no time stop in the rule: horizon {horizon:g} h (the longest allowed)")
    horizon = min(max(horizon, rules.min_horizon_hours), rules.max_horizon_hours)

    if confidence is not None:
        p, how = confidence, "fixed"
    else:
        p, how = None, ""
        if mc is not None and mc.volatility > 0:
            try:
                odds = closed_form_odds(entry, stop, target, horizon / interval_h, mc.drift_used, mc.volatility**2)
                p, how = odds.p_target, "closed form, montecarlo drift and volatility"
                if "montecarlo" not in cited:
                    cited.append("montecarlo")
            except TheoryError:
                p = None
        if p is None:
            p, how = _levels_probability(side, entry, stop, target), "driftless, no time limit"
    p = round(min(max(float(p), 0.0), 1.0), 4)
    notes.append(f"P(target first) {p:.2f} ({how})")
    return {
        "symbol": snapshot.symbol, "direction": direction, "confidence": p, "entry": float(entry),
        "stop": float(stop), "target": float(target), "horizon_hours": float(horizon),
        "reasoning": text("; ".join(notes) + "."), "theories": cited,
    }


class StrategyProvider:
    """One rule strategy behind the provider interface (module docstring: the translation).

    `params` are the rule's parameters in the variant's theory set (the provider reads the rule's
    result from the snapshot; it records the parameters so that the call-record key changes when
    they do). `rules` are the signal rules the synthesiser will apply: the provider holds instead
    of proposing what they would refuse.
    """

    name = "strategy"
    is_llm = False
    is_replay = False

    def __init__(
        self,
        strategy: str,
        params: TheoryParams | Mapping[str, Any] | None = None,
        rules: SignalRules | None = None,
        *,
        proxy_reward_risk: float = PROXY_REWARD_RISK,
        confidence: float | None = None,
    ) -> None:
        valid = strategy_names()
        if strategy not in valid:
            raise ValueError(f"unknown strategy {strategy!r}; valid strategies: {', '.join(valid)}")
        theory = THEORIES[strategy]
        if not proxy_reward_risk > 0:
            raise ValueError(f"proxy_reward_risk must be positive, got {proxy_reward_risk}")
        if confidence is not None and not 0.0 <= confidence <= 1.0:
            raise ValueError(f"a fixed confidence must lie in [0, 1], got {confidence}")
        self.strategy = strategy
        self.params = params if isinstance(params, theory.params) else theory.params.model_validate(params or {})
        self.rules = rules or SignalRules()
        self.proxy_reward_risk = proxy_reward_risk
        self.confidence = confidence
        fixed = "" if confidence is None else f"-c{confidence:g}"
        self.model = f"{strategy}-v{STRATEGY_PROVIDER_VERSION}{fixed}"

    def parameters(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "translation": STRATEGY_PROVIDER_VERSION,
            "rule_params": self.params.model_dump(mode="json"),
            "rule_source_sha256": rule_source_sha256(self.strategy),
            "proxy_reward_risk": self.proxy_reward_risk,
            "confidence": "bracket_odds" if self.confidence is None else self.confidence,
            "signal_rules": self.rules.model_dump(mode="json"),
        }

    def complete(
        self, messages: Sequence[dict[str, str]], schema: dict[str, Any], snapshot: FeatureSnapshot
    ) -> Reply:
        signal = strategy_signal(snapshot, self.strategy, self.rules, proxy_reward_risk=self.proxy_reward_risk,
                                 confidence=self.confidence)
        text = sorted_json(signal)
        return Reply(text=text, finish_reason="stop", tokens_in=0, tokens_out=0, raw_response=text)
