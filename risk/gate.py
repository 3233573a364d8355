"""The RiskGate: the LLM proposes, this decides whether and how much. Deterministic, and it explains itself.

One call, `RiskGate.evaluate(request)`, and one answer: `Approved(quantity, risk_amount,
notional, reasons)` or `Rejected(reasons)`. Order: the request is validated (a malformed one is
refused with what was wrong); the circuit breakers are advanced to the decision time; every
configured rule runs and *all* refusals are reported, not just the first; the trade is sized
(p from the win-rate posterior, fractional Kelly, multipliers, caps, the lot); then the rules
that depend on the size (a stop-out that would breach the daily or total loss limit) look at it.

Fail closed: a rule that raises refuses the trade with its error; the gate itself never raises
on a well-typed request. No clock, no environment, no randomness: time is `request.now_ms`, and
the same config and request always give the same answer. The updated breaker state travels in
the answer; the caller stores it and passes it back with the next request.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from risk.breakers import BreakerEvent, update_breakers
from risk.config import RiskConfig
from risk.decision import Approved, Decision, Reason, Rejected
from risk.inputs import AccountState, RiskRequest
from risk.kelly import win_probability
from risk.rules import DEFAULT_RULES, NotionalCap, RiskRule, RuleContext, SizedTrade
from risk.rules.base import PeriodReference
from risk.sizing import Multiplier, size_trade
from risk.trading_day import balance_at, period_start_ms
from risk.well_formed import malformed, problems


def _gate_reason(code: str, message: str) -> Reason:
    return Reason(rule="gate", code=code, message=message)


_HOLD = _gate_reason("hold", "the proposal is HOLD: nothing to trade")  # frozen, so one serves every HOLD


def _validation_reasons(err: ValidationError) -> tuple[Reason, ...]:
    return tuple(
        Reason(rule="well_formed", code="malformed_input",
               message=f"{'.'.join(str(x) for x in e['loc']) or 'request'}: {e['msg']}")
        for e in err.errors()
    )


class RiskGate:
    """Runs the configured rules and sizes the trade. Stateless: the breaker state comes with each request
    (it keeps only the last account's period references, a pure function of that account: `_period_references`).
    """

    def __init__(self, config: RiskConfig | None = None, rules: Sequence[RiskRule] = DEFAULT_RULES) -> None:
        self.config = config or RiskConfig()
        self.rules = tuple(rules)
        # the period references of the last account asked (see `_period_references`)
        self._references: tuple[AccountState, int, dict[str, PeriodReference]] | None = None

    def evaluate(self, request: RiskRequest | Mapping[str, Any]) -> Decision:
        """The decision for one request (a `RiskRequest`, or its plain-data form, e.g. parsed JSON)."""
        if not isinstance(request, RiskRequest):
            try:
                request = RiskRequest.model_validate(request)
            except ValidationError as e:
                return Rejected(reasons=_validation_reasons(e))
        try:
            return self._evaluate(request)
        except Exception as e:  # fail closed: a defect must refuse the trade, never let it through
            return Rejected(reasons=(_gate_reason("gate_error", f"the gate failed: {type(e).__name__}: {e}"),),
                            breakers=request.breakers)

    def context(self, r: RiskRequest) -> tuple[RuleContext, tuple[BreakerEvent, ...]]:
        """What the rules see for a well-formed request: period references, breakers advanced to now.

        Also returns the breaker events this advance raised.
        """
        cfg, a, s = self.config, r.account, r.proposal
        refs = self._period_references(a, r.now_ms)
        state, events, status = update_breakers(
            r.breakers, cfg.breakers, r.now_ms, a.equity,
            {"daily": (refs["day"].start_ms, refs["day"].balance),
             "weekly": (refs["week"].start_ms, refs["week"].balance),
             "monthly": (refs["month"].start_ms, refs["month"].balance)},
        )
        reward_risk = 0.0  # a HOLD has no bracket
        if s.entry is not None and s.stop is not None and s.target is not None and s.entry != s.stop:
            reward_risk = abs(s.target - s.entry) / abs(s.entry - s.stop)
        ctx = RuleContext(
            request=r, config=cfg, day=refs["day"], week=refs["week"], month=refs["month"], breakers=status,
            breaker_state=state, reward_risk=reward_risk,
        )
        return ctx, events

    def _period_references(self, a: AccountState, now_ms: int) -> dict[str, PeriodReference]:
        """The day's, week's and month's start and the closed balance then.

        A cycle passes the same (frozen) AccountState with every symbol's request until an order
        moves the account, so the references of the last one asked are kept and given again for
        the very same object at the same time.
        """
        memo = self._references
        if memo is not None and memo[0] is a and memo[1] == now_ms:
            return memo[2]
        refs = {
            period: PeriodReference(start, balance_at(a.ledger, start, a.initial_balance))
            for period in ("day", "week", "month")
            for start in (period_start_ms(now_ms, period, self.config.ftmo.timezone),)
        }
        self._references = (a, now_ms, refs)
        return refs

    def _evaluate(self, r: RiskRequest) -> Decision:
        found = problems(r)
        if found:
            return Rejected(reasons=malformed(found), breakers=r.breakers)
        ctx, events = self.context(r)
        state = ctx.breaker_state
        s = r.proposal
        if s.direction == "HOLD":
            return Rejected(reasons=(_HOLD,), breakers=state, events=events)
        cfg, a = self.config, r.account

        refusals: list[Reason] = []
        notes: list[Reason] = []
        multipliers: list[Multiplier] = []
        caps: list[NotionalCap] = []
        for rule in self.rules:
            try:
                out = rule.check(ctx)
            except Exception as e:
                refusals.append(Reason(rule=rule.name, code="rule_failed", message=f"{type(e).__name__}: {e}"))
                continue
            refusals.extend(out.rejections)
            notes.extend(out.notes)
            caps.extend(out.caps)
            if out.multiplier != 1.0:
                why = out.multiplier_reason or Reason(rule=rule.name, code="multiplier",
                                                      message=f"size x{out.multiplier:g}", value=out.multiplier)
                multipliers.append(Multiplier(out.multiplier, why))
        if refusals:
            return Rejected(reasons=(*refusals, *notes), breakers=state, events=events)

        wp = win_probability(r.history, s.confidence, cfg.sizing)
        p_reason = Reason(
            rule="sizing", code="win_probability",
            message=f"p {wp.p:.4f}: posterior mean {wp.posterior_mean:.4f} from {wp.trades} {wp.source} trades"
            + (f", lowered to the confidence {s.confidence:.2f}" if wp.confidence_binds else ""),
            value=wp.p, before=wp.posterior_mean, after=wp.p, unit="probability",
        )
        sized = size_trade(
            p=wp.p, entry=s.entry, stop=s.stop, target=s.target, equity=a.equity, cash=a.cash,
            open_exposure=sum(pos.notional for pos in r.positions), cfg=cfg.sizing, instrument=r.instrument,
            multipliers=tuple(multipliers), caps=tuple(caps),
        )
        shaped = (p_reason, *notes, *sized.reasons)
        if sized.refusals:
            return Rejected(reasons=(*sized.refusals, *shaped), breakers=state, events=events)

        trade = SizedTrade(quantity=sized.quantity, risk_amount=sized.risk_amount, notional=sized.notional)
        for rule in self.rules:
            try:
                refusals.extend(rule.check_sized(ctx, trade))
            except Exception as e:
                refusals.append(Reason(rule=rule.name, code="rule_failed", message=f"{type(e).__name__}: {e}"))
        if refusals:
            return Rejected(reasons=(*refusals, *shaped), breakers=state, events=events)
        return Approved(
            symbol=s.symbol, direction=s.direction, quantity=sized.quantity, risk_amount=sized.risk_amount,
            notional=sized.notional, win_probability=wp.p, reward_risk=sized.reward_risk,
            kelly_fraction=sized.kelly_fraction, reasons=shaped, breakers=state, events=events,
        )
