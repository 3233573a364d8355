"""The baselines every eval includes, and the buy-and-hold curves computed by the paper broker.

Every claim about a variant is measured against these (issue 9). Two kinds:

- replayed baselines, run through the cycle exactly like any variant (snapshot, synthesiser
  validation, risk gate, paper broker, store): the heuristic synthesiser (`heuristic`) and each
  seed strategy alone (`strategy:<name>`, `agent.llm.strategy_provider`);
- passive benchmarks, with no decisions: buy-and-hold of each symbol and the equal-weight
  BTC/ETH basket, written as equity curves (`baselines/<name>.json` in the run folder).

Names (variant names match ``^[A-Za-z0-9_.-]+$``, so a provider spec is mapped, `baseline_name`):

    heuristic                        heuristic
    strategy.<name>                  strategy:<name>
    buy_and_hold.<BASE>_<QUOTE>      buy_and_hold:<BASE>/<QUOTE>      e.g. buy_and_hold.BTC_USDT
    equal_weight.<BASE>_<BASE>...    equal_weight:<A>+<B>...          equal_weight.BTC_ETH

Buy-and-hold, as computed here (the usual definition):
- at the first decision time t0 a market order per symbol goes to a `PaperBroker` with the
  variants' own fees and slippage (`PaperSettings`: taker fee, slippage; the starting cash);
  it fills at the open of the first bar opening at or after t0, plus slippage, paying the taker
  fee. The quantity spends the symbol's share of the cash exactly: q = cash / (open x (1 +
  slippage) x (1 + taker fee)), rounded down in the last binary digit so the broker never finds
  the cash short. Sizing from the fill bar's open is the definition of "invest the money", not a
  decision, so reading that open is not lookahead;
- the basket puts equal money in each symbol at t0 and is never rebalanced;
- the position has no exits: the broker's break-even, trailing and partial exits are switched
  off, its stop and target are placed out of reach (`OrderIntent` requires a bracket) and its
  time stop after the period;
- equity at each decision time is the broker's account, cash plus positions marked at the last
  close by then; nothing is sold at the end (as the variants' end-of-cycle account snapshots,
  which mark open positions without exit costs). The curve's first point is the starting cash
  at t0, before the order fills.
A symbol with no bar after t0 within the period is an error naming it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from agent.brokers.base import OrderIntent, client_order_id
from agent.brokers.paper import PaperBroker, PaperSettings
from agent.llm.strategy_provider import strategy_names
from evals.metrics import EquityCurve
from theories.candles import Candles, iso

BASKET: tuple[str, ...] = ("BTC/USDT", "ETH/USDT")
BaselineKind = Literal["heuristic", "strategy", "buy_and_hold", "equal_weight"]
_OUT_OF_REACH = 1e12  # stop at price / this, target at price x this: a hold has no exits
_YEAR_MS = 365 * 24 * 3_600_000


class CandleSource(Protocol):
    """A market-data source as the cycle uses it (`agent.cycle.MarketData`): candles closed by a time."""

    def candles(self, symbol: str, at_ms: int) -> Candles: ...


Data = Mapping[str, Candles] | CandleSource


class BaselineSpec(BaseModel):
    """One baseline: its variant name, kind, provider spec (replayed kinds) and symbols (curves)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="Variant name in the run folder.")
    kind: BaselineKind
    spec: str = Field(description="heuristic | strategy:<name> | buy_and_hold:<SYMBOL> | equal_weight:<A>+<B>")
    provider: str | None = Field(description="Provider spec for the replayed kinds; None for the curves.")
    symbols: tuple[str, ...] = Field(default=(), description="The held symbols (curves only).")

    @property
    def replayed(self) -> bool:
        return self.provider is not None


class BaselineCurve(BaseModel):
    """What `baselines/<name>.json` holds: a passive benchmark's equity on the decision grid."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    kind: Literal["buy_and_hold", "equal_weight"]
    symbols: tuple[str, ...] = Field(description="One symbol, or the basket's symbols (equal money each).")
    curve: EquityCurve
    fills: tuple[tuple[str, int, float, float], ...] = Field(
        description="(symbol, fill time ms, price after slippage, quantity) of each purchase.")
    paper: PaperSettings = Field(description="The broker settings used (exits off).")


def _ticker_part(symbol: str) -> str:
    return symbol.replace("/", "_").replace(":", "_")


def baseline_name(spec: str) -> str:
    """The variant name of a baseline spec (the table in the module docstring); ValueError otherwise."""
    kind, _, rest = spec.strip().partition(":")
    if kind == "heuristic" and not rest:
        return "heuristic"
    if kind == "strategy" and rest in strategy_names():
        return f"strategy.{rest}"
    if kind == "buy_and_hold" and rest:
        return f"buy_and_hold.{_ticker_part(rest)}"
    if kind == "equal_weight" and rest:
        legs = rest.split("+")
        if len(legs) < 2 or not all(legs):
            raise ValueError(f"baseline {spec!r}: an equal-weight basket needs two or more symbols joined by '+'")
        quotes = {leg.partition("/")[2] for leg in legs}
        parts = [leg.partition("/")[0] if len(quotes) == 1 else _ticker_part(leg) for leg in legs]
        return "equal_weight." + "_".join(parts)
    raise ValueError(f"not a baseline spec: {spec!r}; use heuristic, strategy:<{'|'.join(strategy_names())}>, "
                     "buy_and_hold:<SYMBOL> or equal_weight:<SYMBOL>+<SYMBOL>")


def baseline_specs(symbols: Sequence[str], basket: Sequence[str] = BASKET) -> list[BaselineSpec]:
    """All baselines of a run over `symbols`: the heuristic, each seed strategy alone, buy-and-hold of
    each symbol, and the equal-weight basket (BTC/ETH by default; kept even when the universe
    leaves one leg out, since the benchmark is the market's, and the curve then needs its data)."""
    out = [BaselineSpec(name="heuristic", kind="heuristic", spec="heuristic", provider="heuristic")]
    for name in strategy_names():
        spec = f"strategy:{name}"
        out.append(BaselineSpec(name=baseline_name(spec), kind="strategy", spec=spec, provider=spec))
    for symbol in dict.fromkeys(symbols):
        spec = f"buy_and_hold:{symbol}"
        out.append(BaselineSpec(name=baseline_name(spec), kind="buy_and_hold", spec=spec, provider=None,
                                symbols=(symbol,)))
    spec = "equal_weight:" + "+".join(basket)
    out.append(BaselineSpec(name=baseline_name(spec), kind="equal_weight", spec=spec, provider=None,
                            symbols=tuple(basket)))
    return out


def _full_candles(data: Data, symbol: str, until_ms: int) -> Candles:
    if isinstance(data, Mapping):
        if symbol not in data:
            raise KeyError(f"no candles for {symbol}; have {sorted(data)}")
        return data[symbol].closed_by(until_ms)
    return data.candles(symbol, until_ms)


def hold_settings(paper: PaperSettings | None, initial_cash: float | None) -> PaperSettings:
    """The variants' fees, slippage and cash, with every exit rule switched off."""
    paper = paper or PaperSettings()
    return paper.model_copy(update={
        "initial_cash": paper.initial_cash if initial_cash is None else float(initial_cash),
        "break_even_trigger": None, "trailing_stop": None, "partial_fraction": 0.0,
    })


def hold_quantity(money: float, open_price: float, settings: PaperSettings) -> float:
    """Base units that `money` buys at `open_price` with slippage and the taker fee, never a hair more."""
    price = open_price * (1 + settings.slippage)
    q = money / (price * (1 + settings.taker_fee))
    while q * price + q * price * settings.taker_fee > money:  # the broker's own cash check, same arithmetic
        q = math.nextafter(q, 0.0)
    return q


def _hold(name: str, kind: Literal["buy_and_hold", "equal_weight"], data: Data, symbols: Sequence[str],
          times: Sequence[int], paper: PaperSettings | None, initial_cash: float | None) -> BaselineCurve:
    grid = [int(t) for t in times]
    if not grid:
        raise ValueError(f"{name}: no decision times")
    if not symbols or len(set(symbols)) != len(symbols):
        raise ValueError(f"{name}: the symbols must be distinct and at least one, got {list(symbols)}")
    settings = hold_settings(paper, initial_cash)
    t0, end = grid[0], grid[-1]
    candles = {s: _full_candles(data, s, end) for s in symbols}
    broker = PaperBroker(settings)
    money = settings.initial_cash / len(symbols)
    cycle_id = f"{name}@{iso(t0)}"
    for s, c in list(candles.items()):
        i = int(c.time.searchsorted(t0, side="left"))
        if i >= len(c):
            raise ValueError(f"{name}: {s} has no bar opening at or after {iso(t0)} and closed by {iso(end)}")
        reference = float(c.close[i - 1]) if i else float(c.open[i])  # the last close seen at t0
        # the broker needs the bars from the fill on (and one before it, for the first mark): years of
        # earlier history would only slow every sync down
        c = candles[s] = c.tail(len(c) - max(i - 1, 0))
        i = min(i, 1)
        decision_id = f"{cycle_id}/{s}"
        broker.submit(OrderIntent(
            decision_id=decision_id, cycle_id=cycle_id, client_order_id=client_order_id(decision_id), symbol=s,
            side="LONG", quantity=hold_quantity(money, float(c.open[i]), settings), order_type="market",
            stop=reference / _OUT_OF_REACH, target=reference * _OUT_OF_REACH, entry_reference=reference,
            created_ms=t0, time_stop_ms=end + 100 * _YEAR_MS,
        ), t0)
    equity: list[float] = []
    fills: list[tuple[str, int, float, float]] = []
    for t in grid:
        report = broker.sync(t, candles)
        for order in report.orders:
            if order.status != "filled":  # cannot happen with the sizing above; never hide it
                raise RuntimeError(f"{name}: the paper broker {order.status} the purchase of {order.intent.symbol}: "
                                   f"{order.message}")
        fills += [(f.symbol, f.time_ms, f.price, f.quantity) for f in report.fills]
        equity.append(broker.account(t).equity)
    return BaselineCurve(name=name, kind=kind, symbols=tuple(symbols), curve=EquityCurve(time_ms=tuple(grid),
                         equity=tuple(equity)), fills=tuple(fills), paper=settings)


def buy_and_hold(data: Data, symbol: str, times: Sequence[int], paper_settings: PaperSettings | None = None,
                 initial_cash: float | None = None) -> BaselineCurve:
    """Buy `symbol` with all the cash at the first decision time and hold (module docstring), with its fills."""
    return _hold(baseline_name(f"buy_and_hold:{symbol}"), "buy_and_hold", data, (symbol,), times, paper_settings,
                 initial_cash)


def equal_weight(data: Data, symbols: Sequence[str], times: Sequence[int],
                 paper_settings: PaperSettings | None = None, initial_cash: float | None = None) -> BaselineCurve:
    """Equal money in each symbol at the first decision time, never rebalanced, with its fills."""
    return _hold(baseline_name("equal_weight:" + "+".join(symbols)), "equal_weight", data, symbols, times,
                 paper_settings, initial_cash)


def buy_and_hold_curve(data: Data, symbol: str, times: Sequence[int], paper_settings: PaperSettings | None = None,
                       initial_cash: float | None = None) -> EquityCurve:
    """Buy-and-hold equity of one symbol on the decision grid `times` (UTC epoch ms, ascending)."""
    return buy_and_hold(data, symbol, times, paper_settings, initial_cash).curve


def equal_weight_curve(data: Data, symbols: Sequence[str], times: Sequence[int],
                       paper_settings: PaperSettings | None = None, initial_cash: float | None = None) -> EquityCurve:
    """Equal-weight basket equity on the decision grid `times` (bought once at the first time, not rebalanced)."""
    return equal_weight(data, symbols, times, paper_settings, initial_cash).curve


def baseline_curve(spec: BaselineSpec, data: Data, times: Sequence[int], paper_settings: PaperSettings | None = None,
                   initial_cash: float | None = None) -> BaselineCurve:
    """The curve of a passive baseline (buy_and_hold or equal_weight); ValueError for a replayed one."""
    if spec.kind == "buy_and_hold":
        return buy_and_hold(data, spec.symbols[0], times, paper_settings, initial_cash)
    if spec.kind == "equal_weight":
        return equal_weight(data, spec.symbols, times, paper_settings, initial_cash)
    raise ValueError(f"baseline {spec.name} ({spec.kind}) is replayed through the cycle, not computed as a curve")
