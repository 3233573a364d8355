"""The RiskGate end to end: each rule refuses at its limit and not before, and every answer explains itself."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from risk import (
    KILL_SWITCH_ENV,
    AccountState,
    Approved,
    BalanceChange,
    Instrument,
    OpenPosition,
    RegimeView,
    Rejected,
    RiskConfig,
    RiskGate,
    RiskRequest,
    TradeHistory,
    TradeProposal,
    WinCount,
)
from risk.rules import DailyLoss, RiskRule, RuleOutcome, SizedTrade, TotalLoss

HOUR = 3_600_000
NOW = int(datetime(2025, 1, 15, 11, 0, tzinfo=UTC).timestamp() * 1000)  # 12:00 in Prague
GATE = RiskGate()


def proposal(**kw) -> TradeProposal:
    base = dict(symbol="BTC/USDT", direction="LONG", confidence=0.8, entry=100.0, stop=90.0, target=120.0,
                horizon_hours=24.0, theories=("regime", "kalman"))
    base.update(kw)
    return TradeProposal(**base)


def account(**kw) -> AccountState:
    base = dict(initial_balance=100_000.0, balance=100_000.0, equity=100_000.0, cash=100_000.0)
    base.update(kw)
    return AccountState(**base)


def request(**kw) -> RiskRequest:
    base = dict(now_ms=NOW, proposal=proposal(), account=account(),
                history=TradeHistory(variant=WinCount(wins=45, losses=55)), regime=RegimeView(name="bull trend"))
    base.update(kw)
    return RiskRequest(**base)


def position(symbol="ETH/USDT", direction="SHORT", quantity=1.0, mark=100.0, **kw) -> OpenPosition:
    return OpenPosition(symbol=symbol, direction=direction, quantity=quantity, entry=mark, mark=mark,
                        opened_ms=NOW - 5 * HOUR, **kw)


def codes(decision) -> list[str]:
    return [r.code for r in decision.reasons]


def test_sound_trade_is_approved_at_the_risk_cap_with_its_reasons():
    d = GATE.evaluate(request())
    assert isinstance(d, Approved)
    # p = (4 + 45) / 110, R = 2: f* = 0.168, quarter Kelly 4.2% of equity, capped at 2%
    assert d.win_probability == pytest.approx(49 / 110)
    assert d.kelly_fraction == pytest.approx(49 / 110 - (61 / 110) / 2)
    assert d.risk_amount == pytest.approx(2000.0)
    assert d.quantity == pytest.approx(200.0) and d.notional == pytest.approx(20_000.0)
    assert codes(d) == ["win_probability", "kelly", "risk_per_trade_cap"]
    cap = d.reasons[-1]
    assert cap.rule == "sizing" and cap.limit == pytest.approx(2000.0) and cap.before > cap.after


def test_hold_is_rejected_without_error():
    d = GATE.evaluate(request(proposal=proposal(direction="HOLD", entry=None, stop=None, target=None)))
    assert isinstance(d, Rejected) and codes(d) == ["hold"]


def test_long_without_prices_is_malformed():
    d = GATE.evaluate(request(proposal=proposal(stop=None)))
    assert codes(d) == ["malformed_input"] and "needs entry, stop and target" in d.reasons[0].message


def test_proposal_accepts_the_signal_wire_shape():
    signal = {"symbol": "BTC/USDT", "direction": "LONG", "confidence": 0.8, "entry": 100.0, "stop": 90.0,
              "target": 120.0, "horizon_hours": 24.0, "theories": ["regime", "kalman"]}
    assert TradeProposal.model_validate(signal) == proposal()


@pytest.mark.parametrize(
    ("kw", "fragment"),
    [
        ({"stop": 105.0}, "stop < entry < target"),
        ({"direction": "SHORT"}, "target < entry < stop"),
        ({"entry": -1.0}, "positive"),
        ({"horizon_hours": 0.0}, "horizon_hours"),
    ],
)
def test_inconsistent_proposal_is_rejected_with_what_is_wrong(kw, fragment):
    d = GATE.evaluate(request(proposal=proposal(**kw)))
    assert isinstance(d, Rejected) and codes(d)[0] == "malformed_input"
    assert fragment in d.reasons[0].message


def test_inconsistent_account_is_rejected():
    d = GATE.evaluate(request(account=account(equity=-5.0)))
    assert codes(d) == ["malformed_input"] and "equity" in d.reasons[0].message
    future = account(ledger=(BalanceChange(time_ms=NOW + 1, balance=100_000.0),))
    assert "after the decision time" in GATE.evaluate(request(account=future)).reasons[0].message
    incomplete = account(balance=97_000.0)  # a loss was closed but the ledger does not show it
    assert "ledger is incomplete" in GATE.evaluate(request(account=incomplete)).reasons[0].message


def test_malformed_plain_data_is_rejected_not_raised():
    raw = request().model_dump()
    raw["proposal"]["confidence"] = 1.7
    raw["account"]["equity"] = float("nan")
    del raw["now_ms"]
    d = GATE.evaluate(raw)
    assert isinstance(d, Rejected)
    where = " ".join(r.message for r in d.reasons)
    assert "proposal.confidence" in where and "account.equity" in where and "now_ms" in where


def test_plain_data_round_trip_gives_the_same_answer():
    req = request()
    assert GATE.evaluate(req.model_dump(mode="json")) == GATE.evaluate(req)


def test_a_rule_that_raises_rejects_the_trade():
    class Broken(RiskRule):
        name = "broken"

        def check(self, ctx):
            raise ZeroDivisionError("oops")

    d = RiskGate(rules=(Broken(),)).evaluate(request())
    assert isinstance(d, Rejected) and d.reasons[0].rule == "broken" and d.reasons[0].code == "rule_failed"


def test_every_refusing_rule_is_reported_not_just_the_first():
    d = GATE.evaluate(request(proposal=proposal(symbol="PEPE/USDT", confidence=0.5, target=110.0)))
    assert {"symbol_not_allowed", "reward_risk_too_low", "confidence_too_low"} <= set(codes(d))


# --- kill switch ---------------------------------------------------------------------------


def test_kill_switch_in_config_rejects_everything():
    d = RiskGate(RiskConfig(kill_switch=True)).evaluate(request())
    assert isinstance(d, Rejected) and "kill_switch_on" in codes(d)


@pytest.mark.parametrize(("value", "on"), [("1", True), ("true", True), ("YES", True), ("0", False), ("", False)])
def test_kill_switch_from_environment(value, on):
    cfg = RiskConfig().with_environment({KILL_SWITCH_ENV: value})
    assert cfg.kill_switch is on
    assert RiskConfig(kill_switch=True).with_environment({KILL_SWITCH_ENV: "0"}).kill_switch  # env never unsets


def test_a_config_without_a_fee_sizes_with_the_brokers_and_one_with_its_own_keeps_it():
    base = RiskConfig()
    assert base.sizing.fee_rate == 0
    sized = base.sized_with_fee(0.001)
    assert sized.sizing.fee_rate == 0.001 and base.sizing.fee_rate == 0  # a copy: the original is unchanged
    assert sized.model_dump(exclude={"sizing"}) == base.model_dump(exclude={"sizing"})
    own = RiskConfig.model_validate({"sizing": {"fee_rate": 0.0004}})
    assert own.sized_with_fee(0.001).sizing.fee_rate == 0.0004
    # fees shrink the quantity the same risk buys
    approved = [RiskGate(c).evaluate(request()) for c in (base, sized)]
    assert all(isinstance(d, Approved) for d in approved)
    assert approved[1].quantity < approved[0].quantity


# --- universe ------------------------------------------------------------------------------


def test_symbol_outside_the_universe_is_rejected():
    assert "symbol_not_allowed" in codes(GATE.evaluate(request(proposal=proposal(symbol="FOO/USDT"))))


def test_tier_caps_position_size_and_count():
    d = GATE.evaluate(request(proposal=proposal(symbol="DOGE/USDT")))  # minor tier: 8% of equity
    assert isinstance(d, Approved) and d.notional == pytest.approx(8000.0)
    assert "tier_position_cap" in codes(d)
    held = (position(symbol="LTC/USDT", direction="SHORT"),)  # minor tier holds one position at most
    assert "tier_positions_full" in codes(GATE.evaluate(request(proposal=proposal(symbol="DOGE/USDT"),
                                                                 positions=held)))


# --- FTMO-style limits ---------------------------------------------------------------------


def test_max_open_positions_boundary():
    two = tuple(position(symbol=s) for s in ("ETH/USDT", "SOL/USDT"))
    assert isinstance(GATE.evaluate(request(positions=two)), Approved)
    three = (*two, position(symbol="XRP/USDT"))
    d = GATE.evaluate(request(positions=three))
    r = next(r for r in d.reasons if r.code == "too_many_open_positions")
    assert (r.value, r.limit) == (3, 3)


def test_signals_per_hour_boundary():
    two = (NOW - HOUR + 1, NOW - 10)
    assert isinstance(GATE.evaluate(request(recent_signal_ms=two)), Approved)  # this is the third
    three = (*two, NOW)
    assert "too_many_signals" in codes(GATE.evaluate(request(recent_signal_ms=three)))
    an_hour_old = (NOW - HOUR, NOW - 10, NOW - 5)  # exactly one hour old: no longer counts
    assert isinstance(GATE.evaluate(request(recent_signal_ms=an_hour_old)), Approved)


def test_min_reward_risk_boundary():
    assert isinstance(GATE.evaluate(request(proposal=proposal(target=115.0))), Approved)  # exactly 1.5
    d = GATE.evaluate(request(proposal=proposal(target=114.99)))
    r = next(r for r in d.reasons if r.code == "reward_risk_too_low")
    assert r.value == pytest.approx(1.499) and r.limit == 1.5


def test_stop_out_exactly_at_the_daily_floor_is_allowed_a_cent_below_is_not():
    # day-start balance 102 500 (floor 98 000), a loss closed today: balance and equity 100 000, risk 2 000
    ledger = (BalanceChange(time_ms=NOW - 30 * HOUR, balance=102_500.0), BalanceChange(time_ms=NOW - HOUR,
                                                                                      balance=100_000.0))
    at_floor = GATE.evaluate(request(account=account(ledger=ledger)))
    assert isinstance(at_floor, Approved) and at_floor.risk_amount == 2000.0
    below = GATE.evaluate(request(account=account(ledger=ledger, equity=99_999.0, cash=99_999.0)))
    r = next(r for r in below.reasons if r.code == "daily_loss_at_stop")
    assert r.limit == 98_000.0 and r.value == pytest.approx(99_999.0 * 0.98)


def test_the_kept_period_references_serve_only_the_same_account_at_the_same_time():
    """A gate that keeps the last account's references answers as a fresh gate does, account after account."""
    gate = RiskGate()
    high = account(equity=99_999.0, cash=99_999.0, ledger=(BalanceChange(time_ms=NOW - 30 * HOUR, balance=102_500.0),
                                                           BalanceChange(time_ms=NOW - HOUR, balance=100_000.0)))
    flat = account(equity=99_999.0, cash=99_999.0)  # the day started at 100 000, not 102 500: its floor is lower
    asks = [request(account=high), request(account=high), request(account=flat), request(account=high),
            request(account=high, now_ms=NOW + 24 * HOUR), request(account=flat, now_ms=NOW + 24 * HOUR)]
    answers = [gate.evaluate(r) for r in asks]
    assert answers == [RiskGate().evaluate(r) for r in asks]
    assert "daily_loss_at_stop" in codes(answers[0]) and isinstance(answers[2], Approved)


def test_equity_at_the_daily_floor_rejects_before_sizing():
    d = GATE.evaluate(request(account=account(equity=95_500.0, cash=95_500.0)))  # 100 000 - 4.5% of initial
    assert "daily_loss_limit_reached" in codes(d)
    assert isinstance(GATE.evaluate(request(account=account(equity=98_000.01, cash=98_000.0))), Approved)


def test_total_loss_floor_on_equity():
    # losses closed last month: day/week/month start at 92 000 (daily floor 87 500), so the total floor binds
    ledger = (BalanceChange(time_ms=NOW - 40 * 24 * HOUR, balance=92_000.0),)
    d = GATE.evaluate(request(account=account(balance=92_000.0, equity=91_000.0, cash=91_000.0, ledger=ledger)))
    assert "total_loss_limit_reached" in codes(d)
    d = GATE.evaluate(request(account=account(balance=92_000.0, equity=92_000.0, cash=92_000.0, ledger=ledger)))
    r = next(r for r in d.reasons if r.code == "total_loss_at_stop")
    assert r.limit == 91_000.0 and r.value == pytest.approx(92_000.0 - 1840.0)


@pytest.mark.parametrize("rule", [DailyLoss(), TotalLoss()])
def test_loss_rules_allow_a_stop_exactly_at_the_floor(rule):
    ctx, _ = GATE.context(request())
    floor = 95_500.0 if isinstance(rule, DailyLoss) else 91_000.0
    room = 100_000.0 - floor
    assert rule.check_sized(ctx, SizedTrade(quantity=1.0, risk_amount=room, notional=1.0)) == ()
    (r,) = rule.check_sized(ctx, SizedTrade(quantity=1.0, risk_amount=room + 0.01, notional=1.0))
    assert r.limit == floor


# --- regime filter -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("regime", "direction", "confidence", "expected"),
    [
        ("bull trend", "LONG", 0.65, "ok"),
        ("bull trend", "LONG", 0.6499, "confidence_too_low"),
        ("bull trend", "SHORT", 0.9, "direction_not_allowed"),
        ("bear trend", "SHORT", 0.65, "ok"),
        ("bear trend", "LONG", 0.9, "direction_not_allowed"),
        ("high-vol range", "LONG", 0.70, "ok"),
        ("high-vol range", "SHORT", 0.69, "confidence_too_low"),
        ("low-vol range", "SHORT", 0.60, "ok"),
        ("low-vol range", "LONG", 0.59, "confidence_too_low"),
        ("consolidation", "LONG", 0.65, "ok"),
        ("consolidation", "SHORT", 0.64, "confidence_too_low"),
    ],
)
def test_regime_filter_directions_and_minimum_confidence(regime, direction, confidence, expected):
    geometry = {"entry": 100.0, "stop": 90.0, "target": 120.0} if direction == "LONG" else \
        {"entry": 100.0, "stop": 110.0, "target": 80.0}
    d = GATE.evaluate(request(proposal=proposal(direction=direction, confidence=confidence, **geometry),
                              regime=RegimeView(name=regime)))
    if expected == "ok":
        assert isinstance(d, Approved), codes(d)
    else:
        assert expected in codes(d)


def test_regime_size_multipliers_apply_before_the_caps():
    loose = RiskConfig(sizing={"max_risk_per_trade": 1.0, "max_position_notional": 10, "max_open_exposure": 10,
                               "cash_reserve": 0}, ftmo={"daily_loss_limit": 0.5, "total_loss_limit": 0.5})
    gate = RiskGate(loose)
    kelly_risk = 0.25 * (49 / 110 - (61 / 110) / 2) * 100_000.0
    for name, m in (("bull trend", 1.0), ("high-vol range", 0.5), ("low-vol range", 0.8), ("consolidation", 0.8)):
        d = gate.evaluate(request(proposal=proposal(symbol="BTC/USDT", stop=50.0, target=200.0),
                                  regime=RegimeView(name=name)))
        assert d.risk_amount == pytest.approx(kelly_risk * m), name
        if m == 1.0:
            continue
        r = next(r for r in d.reasons if r.code == "regime_multiplier")
        assert r.value == m and r.after == pytest.approx(r.before * m)
    up = gate.evaluate(request(proposal=proposal(stop=50.0, target=200.0),
                               regime=RegimeView(name="breakout", breakout_direction="LONG")))
    assert up.risk_amount == pytest.approx(kelly_risk * 1.2)


def test_breakout_trades_only_with_the_breakout():
    short = proposal(direction="SHORT", stop=110.0, target=80.0)
    assert "direction_not_allowed" in codes(GATE.evaluate(request(
        proposal=short, regime=RegimeView(name="breakout", breakout_direction="LONG"))))
    assert isinstance(GATE.evaluate(request(proposal=short, regime=RegimeView(name="breakout",
                                                                               breakout_direction="SHORT"))), Approved)
    assert "breakout_direction_unknown" in codes(GATE.evaluate(request(regime=RegimeView(name="breakout"))))


def test_missing_or_unknown_regime_fails_closed():
    assert "regime_unknown" in codes(GATE.evaluate(request(regime=None)))
    assert "regime_unknown" in codes(GATE.evaluate(request(regime=RegimeView(name="sideways"))))
    lenient = RiskGate(RiskConfig(regime={"require_regime": False}))
    assert isinstance(lenient.evaluate(request(regime=None)), Approved)


# --- exchange filters and minimum position ---------------------------------------------------


def test_lot_rounding_never_increases_risk_in_the_gate():
    d = GATE.evaluate(request(instrument=Instrument(lot_step=0.3)))
    assert isinstance(d, Approved)
    assert d.quantity == pytest.approx(199.8) and d.risk_amount <= 2000.0
    assert "lot_rounding" in codes(d)


def test_trade_below_the_minimum_position_is_refused():
    d = RiskGate(RiskConfig(sizing={"min_position_notional": 20_000.01})).evaluate(request())
    assert "below_min_position" in codes(d)


def test_outcome_defaults_mean_pass():
    assert RuleOutcome() == RuleOutcome(rejections=(), multiplier=1.0)


# --- config validation ----------------------------------------------------------------------


def test_config_rejects_unknown_zone_and_incomplete_regimes():
    with pytest.raises(ValueError, match="unknown time zone"):
        RiskConfig(ftmo={"timezone": "Mars/Olympus"})
    with pytest.raises(ValueError, match="cover exactly"):
        RiskConfig(regime={"policies": {"bull trend": {"directions": "long", "multiplier": 1, "min_confidence": 0.6}}})
    with pytest.raises(ValueError, match="daily_loss_limit"):
        RiskConfig(ftmo={"daily_loss_limit": 0.2, "total_loss_limit": 0.1})
    with pytest.raises(ValueError, match="tier"):
        RiskConfig(universe={"symbols": {"BTC/USDT": "gold"}})


def test_default_config_matches_the_issue():
    c = RiskConfig()
    assert (c.sizing.kelly_multiplier, c.sizing.max_risk_per_trade, c.sizing.max_position_notional,
            c.sizing.max_open_exposure, c.sizing.cash_reserve) == (0.25, 0.02, 0.25, 0.50, 0.20)
    assert (c.ftmo.timezone, c.ftmo.daily_loss_limit, c.ftmo.total_loss_limit, c.ftmo.max_open_positions,
            c.ftmo.max_signals_per_hour, c.ftmo.min_reward_risk) == ("Europe/Prague", 0.045, 0.09, 3, 3, 1.5)
    assert (c.breakers.daily_loss, c.breakers.weekly_loss, c.breakers.monthly_loss) == (0.03, 0.07, 0.12)
    assert (c.correlation.window_days, c.correlation.threshold) == (30.0, 0.7)
    p = c.regime.policies
    assert (p["breakout"].directions, p["breakout"].multiplier, p["breakout"].min_confidence) == \
        ("with_breakout", 1.2, 0.65)


def test_reducing_multiplier_halves_the_capped_size_and_boost_stays_under_the_cap():
    half = GATE.evaluate(request(regime=RegimeView(name="high-vol range"), proposal=proposal(confidence=0.7)))
    assert half.risk_amount == pytest.approx(1000.0)  # x0.5 of the 2% cap, not of the uncapped Kelly
    boost = GATE.evaluate(request(regime=RegimeView(name="breakout", breakout_direction="LONG")))
    assert boost.risk_amount == pytest.approx(2000.0)
    assert [r.code for r in boost.reasons].count("risk_per_trade_cap") == 2  # before and after the x1.2
