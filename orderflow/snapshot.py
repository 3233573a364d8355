"""`OrderFlowSnapshot`: the order-flow features of one symbol at one moment, for `FeatureSnapshot`.

Three parts, each present only when its input was: the volume profile (from candles, always
possible), book features (needs a synced `OrderBook`, plus the `RollingOFI` kept beside it) and
trade flow (needs recent trades). A part without its input is None and listed in `unavailable`
with the reason: never zeros that would read as "balanced".
"""

from __future__ import annotations

import numpy as np

from orderflow.book import OrderBook
from orderflow.features import RollingOFI, depth_imbalance, market_order_cost, microprice, spread_bps
from orderflow.trades import Trades, aggressor_buy_share, cumulative_volume_delta, large_trades, vwap
from orderflow.volume_profile import VolumeProfile, VolumeProfileParams, volume_profile
from theories.base import COUNT, FRACTION, PRICE, RATIO, TIME, VOLUME, TheoryResult, unit
from theories.candles import Candles

BPS = "bps"  # basis points of a price (1 bp = 0.0001)


class BookFeatures(TheoryResult):
    """The book at one moment: top, spread, imbalances, microprice, OFI, cost of a market order."""

    time: int = unit(TIME, "Time of the last applied book event, UTC epoch ms.")
    best_bid: float = unit(PRICE, "Best bid.")
    best_ask: float = unit(PRICE, "Best ask.")
    mid: float = unit(PRICE, "(best bid + best ask) / 2.")
    microprice: float = unit(PRICE, "Size-weighted mid (Stoikov 2018).")
    spread_bps: float = unit(BPS, "Quoted spread, basis points of the mid.")
    depth_imbalance_top: float | None = unit(RATIO, "(bid - ask) / (bid + ask) size over the top k levels, in [-1, 1].")
    depth_imbalance_bps: float | None = unit(RATIO, "The same over the levels within x bps of the mid.")
    top_levels: int = unit(COUNT, "k: levels per side in depth_imbalance_top.")
    within_bps: float = unit(BPS, "x: the band of depth_imbalance_bps.")
    ofi: float = unit(VOLUME, "Order-flow imbalance over the window (Cont, Kukanov & Stoikov 2014), base units.")
    ofi_normalised: float | None = unit(RATIO, "OFI divided by the window's average top-of-book depth.")
    ofi_events: int = unit(COUNT, "Book events in the OFI window.")
    order_size: float = unit(VOLUME, "Size of the hypothetical market order, base units.")
    buy_impact: float | None = unit(FRACTION, "Market buy: |worst fill - mid| / mid; None if the book is too thin.")
    buy_slippage: float | None = unit(FRACTION, "Market buy: |average fill - best ask| / best ask.")
    sell_impact: float | None = unit(FRACTION, "Market sell: |worst fill - mid| / mid.")
    sell_slippage: float | None = unit(FRACTION, "Market sell: |average fill - best bid| / best bid.")

    def summary(self) -> str:
        def f(x: float | None, fmt: str) -> str:
            return "n/a" if x is None else format(x, fmt)

        return (
            f"mid {self.mid:.6g} spread {self.spread_bps:.3g}bp microprice {self.microprice - self.mid:+.3g} vs mid; "
            f"depth imb top{self.top_levels} {f(self.depth_imbalance_top, '+.2f')}, "
            f"{self.within_bps:g}bp {f(self.depth_imbalance_bps, '+.2f')}; OFI {self.ofi:+.4g} "
            f"(norm {f(self.ofi_normalised, '+.2f')}); {self.order_size:g} market buy impact "
            f"{f(None if self.buy_impact is None else self.buy_impact * 1e4, '.3g')}bp -> {self.label}"
        )


class TradeFlow(TheoryResult):
    """Recent trades: who was aggressive, how much, and the outsized prints."""

    trades: int = unit(COUNT, "Trades in the window.")
    volume: float = unit(VOLUME, "Traded volume, base units.")
    buy_share: float | None = unit(FRACTION, "Share of volume from buy aggressors.")
    cvd: float = unit(VOLUME, "Cumulative volume delta over the window (buys - sells), base units.")
    vwap: float | None = unit(PRICE, "Volume-weighted average trade price.")
    vwap_deviation: float | None = unit(FRACTION, "(last trade price - VWAP) / VWAP.")
    large_trades: int = unit(COUNT, "Trades above the recent size quantile.")
    large_buy_volume: float = unit(VOLUME, "Volume of large buy-aggressor trades.")
    large_sell_volume: float = unit(VOLUME, "Volume of large sell-aggressor trades.")

    def summary(self) -> str:
        share = "n/a" if self.buy_share is None else f"{self.buy_share:.0%}"
        dev = "n/a" if self.vwap_deviation is None else f"{self.vwap_deviation:+.3%}"
        return (
            f"{self.trades} trades, buy share {share}, CVD {self.cvd:+.4g}, vs VWAP {dev}, "
            f"{self.large_trades} large (buy {self.large_buy_volume:.4g} / sell {self.large_sell_volume:.4g}) "
            f"-> {self.label}"
        )


_SHORT = {"volume_profile": "profile", "trade_flow": "trades"}  # the names the present parts are shown under


class OrderFlowSnapshot(TheoryResult):
    """Order flow for one symbol: the parts whose inputs existed, and why the others are missing."""

    volume_profile: VolumeProfile | None = None
    book: BookFeatures | None = None
    trade_flow: TradeFlow | None = None
    unavailable: dict[str, str] = unit("label", "Parts with no answer, and why.", default_factory=dict)

    def summary(self) -> str:
        parts = []
        for name, part in (("profile", self.volume_profile), ("book", self.book), ("trades", self.trade_flow)):
            if part is not None:
                parts.append(f"{name}: {part.summary()}")
        by_reason: dict[str, list[str]] = {}  # parts missing for the same reason are named together
        for name, why in self.unavailable.items():
            by_reason.setdefault(why, []).append(_SHORT.get(name, name))
        parts += [f"{', '.join(names)}: unavailable ({why})" for why, names in by_reason.items()]
        return " | ".join(parts)


def book_features(
    book: OrderBook, ofi: RollingOFI, time_ms: int, *, top_levels: int = 10, within_bps: float = 10.0,
    order_size: float = 1.0,
) -> BookFeatures:
    """Features of a synced, uncrossed book. Raises ValueError on an empty or crossed book."""
    top = book.top()
    if top is None:
        raise ValueError("the book has an empty side")
    if book.is_crossed():
        raise ValueError("the book is crossed or locked: it must be resynced, not read")
    bid, bq, ask, aq = top
    mid = (bid + ask) / 2.0
    buy, sell = market_order_cost(book, order_size, True), market_order_cost(book, order_size, False)
    di = depth_imbalance(book, levels=top_levels)
    norm = ofi.normalised
    pressure = norm if norm is not None else (di or 0.0)
    label = "buying pressure" if pressure > 0.5 else "selling pressure" if pressure < -0.5 else "balanced book"
    return BookFeatures(
        label=label,
        time=time_ms,
        best_bid=bid,
        best_ask=ask,
        mid=mid,
        microprice=microprice(bid, bq, ask, aq),
        spread_bps=spread_bps(bid, ask),
        depth_imbalance_top=di,
        depth_imbalance_bps=depth_imbalance(book, within_bps=within_bps),
        top_levels=top_levels,
        within_bps=within_bps,
        ofi=ofi.ofi,
        ofi_normalised=norm,
        ofi_events=ofi.events,
        order_size=order_size,
        buy_impact=buy.impact if buy is not None and buy.complete else None,
        buy_slippage=buy.slippage if buy is not None and buy.complete else None,
        sell_impact=sell.impact if sell is not None and sell.complete else None,
        sell_slippage=sell.slippage if sell is not None and sell.complete else None,
    )


def trade_flow(trades: Trades, lookback: int = 500, quantile: float = 0.99) -> TradeFlow:
    """Trade-flow features of `trades` (pass the window you want). Raises ValueError with no trades."""
    if not len(trades):
        raise ValueError("no trades in the window")
    share = aggressor_buy_share(trades)
    v = vwap(trades)
    big = large_trades(trades, lookback=lookback, quantile=quantile)
    big_side = trades.side[big] if len(big) else np.zeros(0, dtype=np.int8)
    big_size = trades.size[big] if len(big) else np.zeros(0)
    label = (
        "no volume" if share is None
        else "buyers aggressive" if share > 0.6 else "sellers aggressive" if share < 0.4 else "two-sided flow"
    )
    return TradeFlow(
        label=label,
        trades=len(trades),
        volume=float(trades.size.sum()),
        buy_share=share,
        cvd=float(cumulative_volume_delta(trades)[-1]),
        vwap=v,
        vwap_deviation=None if v is None else (float(trades.price[-1]) - v) / v,
        large_trades=len(big),
        large_buy_volume=float(big_size[big_side > 0].sum()),
        large_sell_volume=float(big_size[big_side < 0].sum()),
    )


def build_orderflow_snapshot(
    candles: Candles | None,
    *,
    book: OrderBook | None = None,
    ofi: RollingOFI | None = None,
    book_time_ms: int | None = None,
    book_synced: bool = True,
    trades: Trades | None = None,
    profile_params: VolumeProfileParams | None = None,
    top_levels: int = 10,
    within_bps: float = 10.0,
    order_size: float = 1.0,
) -> OrderFlowSnapshot:
    """Everything that can honestly be computed from what is given; the rest marked unavailable."""
    unavailable: dict[str, str] = {}
    vp = bf = tf = None
    if candles is None or len(candles) < 2:
        unavailable["volume_profile"] = "no candles"
    else:
        try:
            vp = volume_profile(candles, profile_params)
        except ValueError as exc:
            unavailable["volume_profile"] = str(exc)
    if book is None:
        unavailable["book"] = "no live feed"
    elif not book_synced:
        unavailable["book"] = "order book not in sync (awaiting snapshot)"
    else:
        try:
            bf = book_features(
                book, ofi or RollingOFI(), book_time_ms or 0,
                top_levels=top_levels, within_bps=within_bps, order_size=order_size,
            )
        except ValueError as exc:
            unavailable["book"] = str(exc)
    if trades is None:
        unavailable["trade_flow"] = "no live feed"
    elif not len(trades):
        unavailable["trade_flow"] = "no recent trades"
    else:
        tf = trade_flow(trades)
    present = [n for n, part in (("profile", vp), ("book", bf), ("trade flow", tf)) if part is not None]
    return OrderFlowSnapshot(
        label=("from " + ", ".join(present)) if present else "no order-flow input",
        volume_profile=vp, book=bf, trade_flow=tf, unavailable=unavailable,
    )
