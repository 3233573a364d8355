"""Invariants of the gate over thousands of random account states and proposals (hypothesis).

An approved trade never risks more than the per-trade cap, never takes equity below the daily
or total floor at its stop, never exceeds the position, exposure, tier or cash caps; the gate
never fails inside (no `gate_error`, no `rule_failed`) and gives the same answer to the same input.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from risk import (
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
from theories.regime import REGIMES

HOUR = 3_600_000
CONFIG = RiskConfig(sizing={"fee_rate": 0.001})
GATE = RiskGate(CONFIG)
# with the breakers out of the way, the FTMO floors are what stops a losing account (3% trips first otherwise)
NO_BREAKERS = RiskGate(CONFIG.model_copy(update={"breakers": CONFIG.breakers.model_copy(
    update={"daily_loss": 0.5, "weekly_loss": 0.5, "monthly_loss": 0.5})}))
SYMBOLS = sorted(CONFIG.universe.symbols)
START = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp() * 1000)
END = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp() * 1000)
TOL = 1e-9


def _regime_for(direction: str) -> st.SearchStrategy[RegimeView]:
    allowed = {"LONG": ["bull trend"], "SHORT": ["bear trend"], "HOLD": []}[direction]
    names = [*allowed, "high-vol range", "low-vol range", "consolidation"]
    side = direction if direction != "HOLD" else "LONG"
    return st.one_of(st.builds(RegimeView, name=st.sampled_from(names)),
                     st.just(RegimeView(name="breakout", breakout_direction=side)))


# Each dimension is drawn from its benign strategy (within the limits) four times in five, else from
# anywhere. Strategies are built once: building them per example costs more than the gate itself.
WILD = st.integers(0, 4)
DIMENSIONS: dict[str, tuple[st.SearchStrategy, st.SearchStrategy]] = {
    "equity": (st.floats(0.97, 1.15), st.floats(0.88, 1.15)),
    "balance": (st.floats(0.995, 1.01), st.floats(0.95, 1.05)),
    "old_balance": (st.floats(0.99, 1.02), st.floats(0.95, 1.1)),
    "held": (st.sampled_from(["BTC/USDT", "ETH/USDT", "SOL/USDT", "XRP/USDT"]), st.sampled_from(SYMBOLS)),
    "n_positions": (st.integers(0, 1), st.integers(0, 4)),
    "direction": (st.sampled_from(["LONG", "SHORT"]), st.sampled_from(["LONG", "SHORT", "HOLD"])),
    "reward_risk": (st.floats(1.5, 5.0), st.floats(0.5, 6.0)),
    "symbol": (st.sampled_from(SYMBOLS), st.sampled_from([*SYMBOLS, "PEPE/USDT"])),
    "confidence": (st.floats(0.7, 1.0), st.floats(0.0, 1.0)),
    "cash": (st.floats(0.6, 1.2), st.floats(0.0, 1.2)),
    "n_signals": (st.integers(0, 1), st.integers(0, 4)),
    "wins": (st.integers(100, 300), st.integers(0, 300)),
    "losses": (st.integers(0, 200), st.integers(0, 300)),
}
REGIME_FOR = {d: _regime_for(d) for d in ("LONG", "SHORT", "HOLD")}
ANY_REGIME = st.builds(RegimeView, name=st.sampled_from(REGIMES),
                       breakout_direction=st.sampled_from([None, "LONG", "SHORT"]))
INITIAL = st.sampled_from([10_000.0, 100_000.0, 200_000.0])
SIDE = st.sampled_from(["LONG", "SHORT"])
NOTIONAL = st.floats(0.01, 0.25)
ENTRY = st.floats(0.01, 100_000.0)
STOP_DISTANCE = st.floats(0.001, 0.15)
SLICE = st.integers(0, 60)
LOT = st.sampled_from([0.0, 1e-5, 0.001, 1.0])
MIN_NOTIONAL = st.sampled_from([0.0, 5.0])


@st.composite
def requests(draw) -> RiskRequest:
    """Account states and proposals: each dimension mostly within the limits, sometimes anywhere.

    Hypothesis shrinks towards the benign branch; about a third of the requests are approved,
    so the invariants of approved trades are tested on many of them.
    """

    def pick(name: str):
        benign, anywhere = DIMENSIONS[name]
        return draw(anywhere if draw(WILD) == 4 else benign)

    now = draw(st.integers(START, END))
    initial = draw(INITIAL)
    equity = initial * pick("equity")
    balance = equity * pick("balance")
    # balance history: one change long ago, one within the last two days (it may straddle midnight)
    ledger = (
        BalanceChange(time_ms=now - draw(st.integers(40 * 24 * HOUR, 60 * 24 * HOUR)),
                      balance=equity * pick("old_balance")),
        BalanceChange(time_ms=now - draw(st.integers(0, 48 * HOUR)), balance=balance),
    )
    positions = tuple(
        OpenPosition(symbol=pick("held"), direction=draw(SIDE), quantity=equity * draw(NOTIONAL) / 50.0,
                     entry=50.0, mark=50.0, opened_ms=now - HOUR)
        for _ in range(pick("n_positions"))
    )
    direction = pick("direction")
    entry = draw(ENTRY)
    risk = entry * draw(STOP_DISTANCE)
    reward = risk * pick("reward_risk")
    sign = 1.0 if direction != "SHORT" else -1.0
    regime = draw(ANY_REGIME if draw(WILD) == 4 else REGIME_FOR[direction])
    return RiskRequest(
        now_ms=now,
        proposal=TradeProposal(symbol=pick("symbol"), direction=direction, confidence=pick("confidence"),
                               entry=entry, stop=entry - sign * risk, target=entry + sign * reward, horizon_hours=24.0),
        account=AccountState(initial_balance=initial, balance=balance, equity=equity, cash=equity * pick("cash"),
                             ledger=ledger),
        positions=positions,
        recent_signal_ms=tuple(now - draw(st.integers(0, 2 * HOUR)) for _ in range(pick("n_signals"))),
        history=TradeHistory(variant=WinCount(wins=pick("wins"), losses=pick("losses")),
                             symbol=WinCount(wins=draw(SLICE), losses=draw(SLICE))),
        regime=regime,
        instrument=Instrument(lot_step=draw(LOT), min_notional=draw(MIN_NOTIONAL)),
    )


def day_start_balance(r: RiskRequest) -> float:
    """Independent of risk.trading_day: the closed balance at the last Prague midnight."""
    tz = ZoneInfo("Europe/Prague")
    local = datetime.fromtimestamp(r.now_ms / 1000, tz)
    midnight = int(local.replace(hour=0, minute=0, second=0, microsecond=0).timestamp() * 1000)
    before = [c.balance for c in r.account.ledger if c.time_ms <= midnight]
    return before[-1] if before else r.account.initial_balance


@settings(max_examples=2500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests(), st.sampled_from([GATE, NO_BREAKERS]))
def test_approved_trades_keep_every_limit(r: RiskRequest, gate: RiskGate):
    d = gate.evaluate(r)
    event(d.status)
    for code in set(d.reasons and [x.code for x in d.reasons]):
        event(code)
    assert isinstance(d, Approved | Rejected)
    if isinstance(d, Rejected):
        assert d.reasons
        assert not {"gate_error", "rule_failed"} & set(d.codes), d.reasons
        return
    a, s, cfg = r.account, r.proposal, gate.config
    eq = a.equity
    assert s.direction != "HOLD" and s.symbol in cfg.universe.symbols
    # per-trade risk, fees included
    loss_per_unit = abs(s.entry - s.stop) + cfg.sizing.fee_rate * (s.entry + s.stop)
    assert abs(d.risk_amount - d.quantity * loss_per_unit) <= TOL * max(d.risk_amount, 1.0)
    assert d.risk_amount <= cfg.sizing.max_risk_per_trade * eq * (1 + TOL)
    # never below the daily or total floor at the stop
    assert eq - d.risk_amount >= day_start_balance(r) - cfg.ftmo.daily_loss_limit * a.initial_balance - TOL * eq
    assert eq - d.risk_amount >= a.initial_balance * (1 - cfg.ftmo.total_loss_limit) - TOL * eq
    # position, exposure, tier and cash caps
    tier = cfg.universe.tiers[cfg.universe.symbols[s.symbol]]
    assert d.notional <= min(cfg.sizing.max_position_notional, tier.max_position_notional) * eq * (1 + TOL)
    open_notional = sum(p.notional for p in r.positions)
    assert open_notional + d.notional <= cfg.sizing.max_open_exposure * eq * (1 + TOL)
    assert a.cash - d.notional >= cfg.sizing.cash_reserve * eq - TOL * eq
    assert len(r.positions) < cfg.ftmo.max_open_positions
    # sizing facts
    assert d.win_probability <= s.confidence
    assert d.kelly_fraction > 0 and d.notional >= cfg.sizing.min_position_notional
    step = r.instrument.lot_step
    if step:
        lots = d.quantity / step
        assert abs(lots - round(lots)) <= 1e-6 * max(lots, 1.0)
    # regime: direction allowed and confidence high enough
    policy = cfg.regime.policies[r.regime.name]
    assert s.confidence >= policy.min_confidence
    if policy.directions == "with_breakout":
        assert s.direction == r.regime.breakout_direction


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests())
def test_gate_is_deterministic(r: RiskRequest):
    first = GATE.evaluate(r)
    assert GATE.evaluate(r) == first
    assert RiskGate(RiskConfig.model_validate_json(CONFIG.model_dump_json())).evaluate(
        RiskRequest.model_validate_json(r.model_dump_json())) == first


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests(), st.floats(0.0, 1.0))
def test_lower_confidence_never_increases_the_size(r: RiskRequest, lower: float):
    high = GATE.evaluate(r)
    low = GATE.evaluate(r.model_copy(update={"proposal": r.proposal.model_copy(
        update={"confidence": r.proposal.confidence * lower})}))
    if isinstance(low, Approved):
        assert isinstance(high, Approved) and low.risk_amount <= high.risk_amount * (1 + TOL)
