"""From a win probability and a bracket to a quantity: fractional Kelly, then the caps, then the lot.

Order, each step reported when it changes the size:
1. loss per unit at the stop |entry - stop| + fees on both sides, gain per unit at the target
   |target - entry| - fees; net R = gain / loss (fees at `fee_rate` of each side's notional);
2. Kelly f* = p - (1 - p) / R; no trade when f* <= 0; risk = kelly_multiplier x f* x equity;
3. quantity = risk / loss per unit, then the caps: the risk at the stop at most
   `max_risk_per_trade` x equity; the notional of one position (`max_position_notional`), of
   all open positions incl. this one (`max_open_exposure`), cash kept free (`cash_reserve`),
   and every cap a rule set (tier, correlated exposure). A clamp lowers the quantity and never
   moves anything elsewhere;
4. the rule multipliers (regime, breaker recovery, correlation) scale the *capped* quantity,
   so "half size" halves what would otherwise be traded even when a cap binds; the caps are
   applied again, which only matters for a multiplier above 1 (breakout x1.2);
5. round the quantity *down* to the exchange's lot step, so rounding never increases risk;
   below the exchange's minimum quantity or notional, or `min_position_notional`: no trade.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from risk.config import SizingConfig
from risk.decision import Reason
from risk.inputs import Instrument
from risk.kelly import kelly_fraction
from risk.rules.base import NotionalCap


@dataclass(frozen=True)
class Bracket:
    """Per-unit economics of the bracket, fees included (quote currency per base unit)."""

    loss_per_unit: float
    gain_per_unit: float

    @property
    def reward_risk(self) -> float:
        return self.gain_per_unit / self.loss_per_unit


def bracket(entry: float, stop: float, target: float, fee_rate: float) -> Bracket:
    """Loss at the stop and gain at the target per unit, each net of an entry and an exit fee."""
    return Bracket(
        loss_per_unit=abs(entry - stop) + fee_rate * (entry + stop),
        gain_per_unit=abs(target - entry) - fee_rate * (entry + target),
    )


@dataclass(frozen=True)
class Multiplier:
    value: float
    reason: Reason


@dataclass(frozen=True)
class Sizing:
    quantity: float  # base units; 0 when refused
    risk_amount: float  # quote currency
    notional: float  # quote currency
    kelly_fraction: float  # full Kelly f*
    reward_risk: float  # net R
    reasons: tuple[Reason, ...]  # everything that shaped the size
    refusals: tuple[Reason, ...]  # non-empty: no trade


def _reason(code: str, message: str, **numbers: float | str | None) -> Reason:
    return Reason(rule="sizing", code=code, message=message, **numbers)


def round_to_lot(quantity: float, step: float) -> float:
    """The largest multiple of `step` at or below `quantity` (any quantity when step is 0)."""
    if step <= 0:
        return quantity
    lots = math.floor(quantity / step)
    q = lots * step
    while q > quantity and lots > 0:  # floating point: lots * step can land a hair above
        lots -= 1
        q = lots * step
    return q


def size_trade(
    *,
    p: float,
    entry: float,
    stop: float,
    target: float,
    equity: float,
    cash: float,
    open_exposure: float,
    cfg: SizingConfig,
    instrument: Instrument,
    multipliers: tuple[Multiplier, ...] = (),
    caps: tuple[NotionalCap, ...] = (),
) -> Sizing:
    """Size one bracketed trade; every input in the units the module docstring gives."""
    reasons: list[Reason] = []
    b = bracket(entry, stop, target, cfg.fee_rate)

    def refuse(*why: Reason) -> Sizing:
        r = b.reward_risk if b.gain_per_unit > 0 else 0.0
        return Sizing(0.0, 0.0, 0.0, f_star, r, tuple(reasons), tuple(why))

    f_star = 0.0
    if b.gain_per_unit <= 0:
        return refuse(_reason("no_edge", f"fees {cfg.fee_rate:.3%} per side eat the whole target move",
                              value=b.gain_per_unit, limit=0.0, unit="quote"))
    R = b.reward_risk
    f_star = kelly_fraction(p, R)
    if f_star <= 0:
        return refuse(_reason("no_edge", f"Kelly f* = {p:.4f} - {1 - p:.4f} / {R:.4f} = {f_star:.4f} <= 0: no edge",
                              value=f_star, limit=0.0, unit="fraction"))
    f = cfg.kelly_multiplier * f_star
    risk = f * equity
    reasons.append(_reason("kelly", f"p {p:.4f}, net R {R:.4f}: f* {f_star:.4f} x {cfg.kelly_multiplier:g} = {f:.4%} "
                           f"of equity at risk ({risk:.2f})", value=f, after=risk, unit="quote"))

    cap = cfg.max_risk_per_trade * equity
    limits = [
        NotionalCap("sizing", "position_notional_cap", cfg.max_position_notional * equity,
                    f"one position at most {cfg.max_position_notional:.2%} of equity"),
        NotionalCap("sizing", "open_exposure_cap", cfg.max_open_exposure * equity - open_exposure,
                    f"open exposure {open_exposure:.2f} plus this trade at most {cfg.max_open_exposure:.2%} of equity"),
        NotionalCap("sizing", "cash_reserve", cash - cfg.cash_reserve * equity,
                    f"cash {cash:.2f} must keep {cfg.cash_reserve:.2%} of equity free"),
        *caps,
    ]

    def capped(qty: float) -> float:
        risk = qty * b.loss_per_unit
        if risk > cap:
            reasons.append(_reason("risk_per_trade_cap", f"risk {risk:.2f} capped at {cfg.max_risk_per_trade:.2%} "
                                   f"of equity ({cap:.2f})", limit=cap, before=risk, after=cap, unit="quote"))
            qty = cap / b.loss_per_unit
        for c in limits:
            notional = qty * entry
            if notional > c.limit:
                after = max(c.limit, 0.0)
                reasons.append(Reason(rule=c.rule, code=c.code,
                                      message=f"{c.message}: notional {notional:.2f} -> {after:.2f}",
                                      limit=c.limit, before=notional, after=after, unit="quote"))
                qty = after / entry
        return qty

    qty = capped(risk / b.loss_per_unit)
    if multipliers:
        for m in multipliers:
            before, qty = qty, qty * m.value
            reasons.append(m.reason.model_copy(update={"before": before * b.loss_per_unit,
                                                       "after": qty * b.loss_per_unit, "unit": "quote"}))
        qty = capped(qty)  # binds only when the multipliers enlarge the trade

    lot = round_to_lot(qty, instrument.lot_step)
    if lot < qty:
        reasons.append(_reason("lot_rounding", f"quantity {qty:.10g} rounded down to the lot step "
                               f"{instrument.lot_step:g}: {lot:.10g}", before=qty, after=lot, unit="base"))
    qty = lot
    notional = qty * entry
    refusals = []
    if qty <= 0:
        refusals.append(_reason("zero_quantity", "the caps leave no room for this trade", value=qty, unit="base"))
    elif qty < instrument.min_quantity:
        refusals.append(_reason("below_exchange_min_quantity", f"quantity {qty:.10g} is below the exchange minimum "
                                f"{instrument.min_quantity:g}", value=qty, limit=instrument.min_quantity, unit="base"))
    elif notional < instrument.min_notional:
        refusals.append(_reason("below_exchange_min_notional", f"notional {notional:.2f} is below the exchange minimum "
                                f"{instrument.min_notional:g}", value=notional, limit=instrument.min_notional,
                                unit="quote"))
    elif notional < cfg.min_position_notional:
        refusals.append(_reason("below_min_position", f"notional {notional:.2f} is below the minimum position "
                                f"{cfg.min_position_notional:g}", value=notional, limit=cfg.min_position_notional,
                                unit="quote"))
    if refusals:
        return refuse(*refusals)
    return Sizing(qty, qty * b.loss_per_unit, notional, f_star, R, tuple(reasons), ())
