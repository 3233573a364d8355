"""A TradingView alert as one more theory of a snapshot: what an external strategy says, beside our own analysis.

The alert is not computed from candles, so it is not in the theory registry: the webhook's
snapshot source (`agent.webhook.source`) attaches it to the snapshot of the cycle it triggers,
under the name `tradingview`. The LLM sees its summary line with the other theories and may
confirm or veto it; the risk gate decides as for any signal.

Anonymised prompts (no ticker, no dates) must not learn the asset from the alert: its price is
rebased like every PRICE field and its time zeroed, and the free-text parts (the strategy's name
and the extra fields, which may name the asset or a level) are left out of the summary of an
anonymised copy, recognised by its zeroed alert time (a real alert's timestamp is never 0).
"""

from __future__ import annotations

from typing import Literal

from theories.base import BARS, FRACTION, LABEL, PRICE, TIME, TheoryResult, num, pct, unit

THEORY_NAME = "tradingview"
SECONDS = "seconds"

ExtraValue = str | int | float | bool


class TradingViewResult(TheoryResult):
    """A signed TradingView alert that triggered this cycle, placed against the snapshot's last close."""

    alert_id: str = unit(LABEL, "Id of the received alert (the webhook_alerts row).")
    strategy: str = unit(LABEL, "The TradingView strategy that sent the alert.")
    action: Literal["entry", "exit"] = unit(LABEL, "entry: the strategy opens a position; exit: it closes one.")
    direction: Literal["LONG", "SHORT"] = unit(LABEL, "The side the strategy trades.")
    price: float = unit(PRICE, "Price in the alert, quote currency.")
    distance: float = unit(FRACTION, "(alert price - last close) / last close.")
    alert_time_ms: int = unit(TIME, "The alert's own timestamp, UTC epoch ms (0 when anonymised).")
    age_s: float = unit(SECONDS, "Receipt time minus the alert's timestamp, seconds (negative: the sender's clock "
                                 "runs ahead, within the accepted window).")
    data_lag_bars: float = unit(BARS, "Alert time minus the close of the snapshot's last candle, in candle "
                                      "intervals: how far the alert is ahead of the data the theories saw.")
    extras: dict[str, ExtraValue] = unit(LABEL, "The alert's extra fields, as sent.", default_factory=dict)

    @property
    def anonymised(self) -> bool:
        return self.alert_time_ms == 0

    def summary(self) -> str:
        who = "an external strategy" if self.anonymised else f"TradingView strategy {self.strategy!r}"
        line = (f"{self.direction} {self.action} from {who} at {num(self.price, 6)} "
                f"({pct(self.distance, 2, sign=True)} vs last close), {num(self.age_s, 2)}s old on arrival, "
                f"{num(self.data_lag_bars, 2)} bars after the data")
        if self.extras and not self.anonymised:
            line += "; " + ", ".join(f"{k}={v}" for k, v in self.extras.items())
        return f"{line} -> {self.label}"


def alert_label(action: str, direction: str) -> str:
    """The plain-words reading the prompt shows: what the alert asks, and that it is evidence, not an order."""
    if action == "entry":
        return f"an outside {direction} entry call: confirm it or veto it on the evidence above"
    return f"an outside call to exit {direction} positions: weigh it against opening or holding one"


def tradingview_result(*, alert_id: str, strategy: str, action: str, direction: str, price: float,
                       alert_time_ms: int, received_ms: int, last_close: float, last_close_time_ms: int,
                       interval_ms: int, extras: dict[str, ExtraValue] | None = None) -> TradingViewResult:
    """The theory result for one alert against a snapshot whose last candle closed at `last_close_time_ms`."""
    if last_close <= 0 or interval_ms <= 0:
        raise ValueError(f"need a positive last close and interval, got {last_close} and {interval_ms}")
    return TradingViewResult(
        alert_id=alert_id, strategy=strategy, action=action, direction=direction, price=price,
        distance=(price - last_close) / last_close, alert_time_ms=alert_time_ms,
        age_s=(received_ms - alert_time_ms) / 1000, data_lag_bars=(alert_time_ms - last_close_time_ms) / interval_ms,
        extras=dict(extras or {}), label=alert_label(action, direction),
    )
