"""Stationarity of log price and of log returns: ADF and KPSS side by side.

- Augmented Dickey-Fuller (Dickey & Fuller 1979; Said & Dickey 1984): null = unit root.
  `statsmodels.tsa.stattools.adfuller(x, regression="c", autolag="AIC")`: constant, no trend,
  lag order chosen by AIC up to Schwert's 12 (n / 100)^(1/4); p-values from MacKinnon (2010).
- KPSS (Kwiatkowski, Phillips, Schmidt & Shin 1992): null = (level) stationarity.
  `kpss(x, regression="c", nlags="auto")` (Hobijn et al. 1998 bandwidth). Its p-value is
  interpolated from a table covering [0.01, 0.1]; outside it statsmodels returns the table's
  edge with an InterpolationWarning. Here the warning is silenced and the result carries the
  bound instead: `*_kpss_bound` is "<" (true p below 0.01), ">" (above 0.1) or "=".

The nulls are opposite, so the pair gives four verdicts at level `alpha`: ADF rejects and KPSS
does not -> stationary; KPSS rejects and ADF does not -> unit root; both reject -> mixed
(often a break, a trend or long memory); neither -> inconclusive (too little data to tell).

Speed: adfuller with autolag="AIC" fits one statsmodels OLS per candidate lag (18 at 500 points)
and took ~40-75 ms per series here. The lag is chosen here instead from one factorisation of
the largest regression (`adf_aic_lag`, the same AIC), and adfuller then runs once with that
lag fixed (~2 ms), so its statistic and p-value are statsmodels' own. Still far over a per-call
budget of a fraction of a ms, so the tests run on the refit schedule: on the `lookback` candles closed by
`fit_time(at_ms, every_ms)`, cached per (symbol, fit time, fingerprint, params). The result
says how many bars old that window is (`age_bars`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from pydantic import Field
from statsmodels.tools.sm_exceptions import InterpolationWarning
from statsmodels.tsa.stattools import adfuller, kpss, lagmat

from theories.base import (
    BARS,
    LABEL,
    PVALUE,
    REFIT_EVERY_MS,
    STATISTIC,
    Theory,
    TheoryContext,
    TheoryError,
    TheoryParams,
    TheoryResult,
    fingerprint,
    fit_time,
    pval,
    unit,
)

VERDICT_WORDS = {
    "stationary": "stationary",
    "unit root": "unit root",
    "mixed": "mixed (both tests reject)",
    "inconclusive": "inconclusive",
}


class StationarityParams(TheoryParams):
    lookback: int = Field(500, ge=100, le=5000, description="Candles tested, the most recent closed by the fit time.")
    every_ms: int = Field(REFIT_EVERY_MS, gt=0, description="Schedule on which the tests are recomputed, ms.")
    alpha: float = Field(
        0.05, ge=0.01, le=0.10, description="Test level; within KPSS's table so its bounds stay decisive."
    )


class StationarityResult(TheoryResult):
    price_adf_stat: float = unit(STATISTIC, "ADF t-statistic on log price (constant, AIC lags).")
    price_adf_pvalue: float = unit(PVALUE, "ADF p-value on log price (MacKinnon); small = no unit root.")
    price_adf_lags: int = unit(BARS, "Lagged differences in the log-price ADF regression (chosen by AIC).")
    price_kpss_stat: float = unit(STATISTIC, "KPSS level statistic on log price.")
    price_kpss_pvalue: float = unit(PVALUE, "KPSS p-value on log price; small = not stationary. See the bound.")
    price_kpss_bound: str = unit(LABEL, "'=' interpolated; '<' true p below 0.01; '>' true p above 0.1.")
    price_verdict: str = unit(LABEL, "stationary, unit root, mixed or inconclusive (log price).")
    returns_adf_stat: float = unit(STATISTIC, "ADF t-statistic on log returns (constant, AIC lags).")
    returns_adf_pvalue: float = unit(PVALUE, "ADF p-value on log returns.")
    returns_adf_lags: int = unit(BARS, "Lagged differences in the returns ADF regression (chosen by AIC).")
    returns_kpss_stat: float = unit(STATISTIC, "KPSS level statistic on log returns.")
    returns_kpss_pvalue: float = unit(PVALUE, "KPSS p-value on log returns. See the bound.")
    returns_kpss_bound: str = unit(LABEL, "'=' interpolated; '<' true p below 0.01; '>' true p above 0.1.")
    returns_verdict: str = unit(LABEL, "stationary, unit root, mixed or inconclusive (log returns).")
    n: int = unit(BARS, "Candles in the tested window.")
    age_bars: int = unit(BARS, "Candles that closed after the tested window (it is refreshed on a schedule).")

    def summary(self) -> str:
        # the p-values decide the verdicts; the statistics are in the result for whoever checks them
        age = f"; {self.age_bars} bars old" if self.age_bars else ""
        price_kpss = pval(self.price_kpss_pvalue, self.price_kpss_bound)
        returns_kpss = pval(self.returns_kpss_pvalue, self.returns_kpss_bound)
        return (
            f"p-values price ADF {pval(self.price_adf_pvalue)} KPSS {price_kpss}, "
            f"returns ADF {pval(self.returns_adf_pvalue)} KPSS {returns_kpss}{age} -> {self.label}"
        )


@dataclass(frozen=True)
class SeriesTests:
    """ADF and KPSS on one series."""

    adf_stat: float
    adf_pvalue: float
    adf_lags: int
    kpss_stat: float
    kpss_pvalue: float
    kpss_bound: str  # "=", "<" or ">"


# Below this gap between the two smallest AICs, or this small a pivot relative to the largest (a
# rank-deficient regression, whose AIC counts fewer parameters), the lag is left to adfuller's own
# search: the AICs here agree with statsmodels' to ~1e-15 relative (measured), not to the last bit.
AIC_TIE = 1e-9
RANK_TOL = 1e-7


def adf_aic_lag(x: np.ndarray) -> int | None:
    """The lag adfuller(x, regression="c", autolag="AIC") chooses, or None where it is too close to call.

    adfuller fits, on the same rows (those the largest lag leaves), the regression of the difference on
    a constant, the lagged level and the first k lagged differences for k = 0..maxlag (Schwert's
    12 (n / 100)^(1/4)), and keeps the smallest AIC = -2 llf + 2 (k + 2), the lower k on a tie. Those
    regressions are nested, so one factorisation gives every residual sum of squares: with R upper
    triangular and R'R = Z'Z for Z = [regressors | y], the fit on the first c regressors leaves
    ssr = sum of R[c:, -1]^2. Every column but the constant is centred (the same nested spans, and the
    constant drops out) and the regressors scaled to unit norm, so the Gram matrix is well conditioned;
    its Cholesky factor is R. (A QR of Z gives R too, but LAPACK's QR spun OpenBLAS's threads for
    ~25 ms of CPU here on a busy machine, against ~0.05 ms for the Gram product and Cholesky.)
    """
    nobs = len(x)
    maxlag = min(nobs // 2 - 2, int(np.ceil(12.0 * np.power(nobs / 100.0, 1 / 4.0))))  # adfuller's, ntrend 1
    if maxlag < 0:
        return None
    xdiff = np.diff(x)
    z = lagmat(xdiff[:, None], maxlag, trim="both", original="in")
    n = z.shape[0]
    z[:, 0] = x[-n - 1 : -1]  # the level, in place of the undelayed difference
    z = np.column_stack((z, xdiff[-n:]))
    z -= z.sum(axis=0) / n
    norms = np.sqrt((z[:, :-1] ** 2).sum(axis=0))
    if not norms.min() > 0:
        return None
    z[:, :-1] /= norms
    try:
        r = np.linalg.cholesky(z.T @ z).T
    except np.linalg.LinAlgError:
        return None
    pivots = np.abs(np.diag(r)[:-1])
    if pivots.min() <= RANK_TOL * pivots.max():
        return None
    ssr = np.cumsum(r[::-1, -1] ** 2)[::-1]  # ssr[c]: the fit on the constant and the first c regressors
    k = np.arange(maxlag + 1)
    ssr_k = ssr[k + 1]  # the level and k differences
    llf = -n / 2 * np.log(2 * np.pi) - n / 2 * np.log(ssr_k / n) - n / 2
    aic = -2 * llf + 2 * (k + 2)
    order = np.argsort(aic, kind="stable")
    if len(order) > 1 and aic[order[1]] - aic[order[0]] < AIC_TIE * max(1.0, abs(aic[order[0]])):
        return None
    return int(order[0])


def series_tests(x: np.ndarray) -> SeriesTests:
    """ADF (constant, AIC lag) and KPSS (level, auto bandwidth) on one series."""
    x = np.asarray(x, dtype=np.float64)
    if len(x) < 50:
        raise TheoryError(f"ADF and KPSS need at least 50 points, got {len(x)}")
    if not np.all(np.isfinite(x)):
        raise TheoryError("ADF and KPSS need finite values")
    if np.ptp(x) == 0:
        raise TheoryError("ADF and KPSS are undefined for a constant series")
    lag = adf_aic_lag(x)
    if lag is None:  # too close to call from the QR: statsmodels' own search
        adf = adfuller(x, regression="c", autolag="AIC", result_object=True)
    else:
        adf = adfuller(x, maxlag=lag, regression="c", autolag=None, result_object=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InterpolationWarning)
        kp = kpss(x, regression="c", nlags="auto", result_object=True)
    crit = kp.critical_values
    if kp.statistic > crit["1%"]:
        bound = "<"
    elif kp.statistic < crit["10%"]:
        bound = ">"
    else:
        bound = "="
    return SeriesTests(
        adf_stat=float(adf.statistic), adf_pvalue=float(adf.pvalue), adf_lags=int(adf.lags),
        kpss_stat=float(kp.statistic), kpss_pvalue=float(kp.pvalue), kpss_bound=bound,
    )


def verdict(t: SeriesTests, alpha: float) -> str:
    """Combine the two tests at level alpha (alpha within KPSS's table, [0.01, 0.1])."""
    adf_rejects = t.adf_pvalue < alpha
    kpss_rejects = t.kpss_bound == "<" or (t.kpss_bound == "=" and t.kpss_pvalue < alpha)
    if adf_rejects and not kpss_rejects:
        return "stationary"
    if kpss_rejects and not adf_rejects:
        return "unit root"
    return "mixed" if adf_rejects else "inconclusive"


def stationarity(close: np.ndarray, params: StationarityParams | None = None, age_bars: int = 0) -> StationarityResult:
    """ADF and KPSS on log `close` (the last `lookback`) and on its log returns."""
    p = params or StationarityParams()
    c = np.asarray(close, dtype=np.float64)[-p.lookback :]
    if not np.all(np.isfinite(c)) or np.any(c <= 0):
        raise TheoryError("closes must be finite and positive")
    y = np.log(c)
    price, returns = series_tests(y), series_tests(np.diff(y))
    vp, vr = verdict(price, p.alpha), verdict(returns, p.alpha)
    return StationarityResult(
        price_adf_stat=price.adf_stat, price_adf_pvalue=price.adf_pvalue, price_adf_lags=price.adf_lags,
        price_kpss_stat=price.kpss_stat, price_kpss_pvalue=price.kpss_pvalue, price_kpss_bound=price.kpss_bound,
        price_verdict=vp,
        returns_adf_stat=returns.adf_stat, returns_adf_pvalue=returns.adf_pvalue, returns_adf_lags=returns.adf_lags,
        returns_kpss_stat=returns.kpss_stat, returns_kpss_pvalue=returns.kpss_pvalue,
        returns_kpss_bound=returns.kpss_bound, returns_verdict=vr,
        n=len(c), age_bars=age_bars,
        label=f"price {VERDICT_WORDS[vp]}; returns {VERDICT_WORDS[vr]}",
    )


def _run(ctx: TheoryContext, params: StationarityParams) -> StationarityResult:
    ft = fit_time(ctx.at_ms, params.every_ms)
    window = ctx.history.closed_by(ft)
    age = len(ctx.history) - len(window)
    window = window.tail(params.lookback)
    if len(window) < 100:
        raise TheoryError(f"stationarity needs at least 100 candles closed by the fit time, got {len(window)}")
    key = ("stationarity", ctx.symbol, ft, fingerprint(window), params)
    res = ctx.cached(key, lambda: stationarity(window.close, params))
    return res.model_copy(update={"age_bars": age})


THEORY = Theory(
    name="stationarity",
    description="ADF (Said & Dickey 1984) and KPSS (Kwiatkowski et al. 1992) on log price and log returns.",
    params=StationarityParams,
    result=StationarityResult,
    run=_run,
    min_bars=100,
)
