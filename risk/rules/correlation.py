"""Correlation with open positions in the same direction: shrink (or refuse) a correlated trade, cap the cluster.

The correlation is Pearson's, of hourly log returns over the last `window_days` before the
decision, on the times both symbols have (numpy.corrcoef on the intersection). Fewer than
`min_overlap` common returns, or a missing series, count as correlated: without data the
rule assumes the worst (fail closed). A position in the same symbol and direction is perfectly
correlated by definition. The notional of the correlated same-direction positions plus this
trade is capped at `max_correlated_exposure` of equity.
"""

from __future__ import annotations

import math

import numpy as np

from risk.breakers import HOUR_MS
from risk.inputs import PriceSeries
from risk.rules.base import NotionalCap, RiskRule, RuleContext, RuleOutcome

DAY_MS = 24 * HOUR_MS


def rolling_correlation(a: PriceSeries, b: PriceSeries, now_ms: int, window_ms: int) -> tuple[float | None, int]:
    """(correlation, common returns) of two close series' log returns in (now - window, now].

    Returns are taken between consecutive common times, so a gap in either series never pairs
    returns over different spans. None when fewer than 3 returns or either is constant.
    """
    ta, tb = np.asarray(a.time_ms, dtype=np.int64), np.asarray(b.time_ms, dtype=np.int64)
    common, ia, ib = np.intersect1d(ta, tb, assume_unique=True, return_indices=True)
    keep = (common > now_ms - window_ms) & (common <= now_ms)
    ia, ib = ia[keep], ib[keep]
    if len(ia) < 4:
        return None, max(len(ia) - 1, 0)
    ra = np.diff(np.log(np.asarray(a.close, dtype=np.float64)[ia]))
    rb = np.diff(np.log(np.asarray(b.close, dtype=np.float64)[ib]))
    if np.ptp(ra) == 0 or np.ptp(rb) == 0:
        return None, len(ra)
    c = float(np.corrcoef(ra, rb)[0, 1])
    return (c if math.isfinite(c) else None), len(ra)


class Correlation(RiskRule):
    name = "correlation"

    def check(self, ctx: RuleContext) -> RuleOutcome:
        cfg = ctx.config.correlation
        r = ctx.request
        s = r.proposal
        window = round(cfg.window_days * DAY_MS)
        correlated_notional = 0.0
        notes = []
        for pos in r.positions:
            if pos.direction != s.direction:
                continue
            mine, theirs = r.prices.get(s.symbol), r.prices.get(pos.symbol)
            if pos.symbol == s.symbol:
                rho, n = 1.0, None
            elif mine is None or theirs is None:
                rho, n = None, 0
            else:
                rho, n = rolling_correlation(mine, theirs, r.now_ms, window)
            if n is not None and (rho is None or n < cfg.min_overlap):
                why = "no price series" if mine is None or theirs is None else f"{n} common returns"
                notes.append(self.reason("correlation_unknown", f"correlation with {pos.symbol} unknown ({why}, need "
                                         f"{cfg.min_overlap}): treated as correlated", value=n, limit=cfg.min_overlap))
            elif rho is not None and rho > cfg.threshold:
                notes.append(self.reason("correlated_position",
                                         f"{pos.symbol} {pos.direction}: correlation {rho:.2f} above {cfg.threshold:g}",
                                         value=rho, limit=cfg.threshold, unit="correlation"))
            else:
                continue
            correlated_notional += pos.notional
        if not notes:
            return RuleOutcome()
        if cfg.action == "reject":
            return RuleOutcome(rejections=tuple(notes))
        equity = r.account.equity
        room = cfg.max_correlated_exposure * equity - correlated_notional
        cap = NotionalCap(self.name, "correlated_exposure_cap", room,
                          f"correlated same-direction exposure {correlated_notional:.2f} leaves {room:.2f} of the "
                          f"{cfg.max_correlated_exposure:.2%} cap")
        shrink = self.reason("correlated_shrink", f"correlated with open {s.direction} positions: size x"
                             f"{cfg.shrink_multiplier:g}", value=cfg.shrink_multiplier, unit="multiplier")
        return RuleOutcome(multiplier=cfg.shrink_multiplier, multiplier_reason=shrink, caps=(cap,), notes=tuple(notes))
