"""Significance statistics for comparing variants: bootstrap intervals, McNemar, Diebold-Mariano, PSR and DSR.

Pure and seeded: the same input and seed always give the same answer. Every result is a frozen
pydantic model without inf/NaN (None, with the reason in `note`, where a number is undefined).

Sources and conventions:
- Stationary bootstrap (Politis & Romano 1994, JASA 89:1303): resamples blocks of geometric length
  with mean `mean_block`, wrapping around the end, so the resampled series stays stationary and keeps
  the serial dependence within blocks. The resampling is arch's `StationaryBootstrap`. The mean block
  length, unless given, is the automatic choice of Politis & White (2004, Econometric Reviews 23:53)
  with the correction of Patton, Politis & White (2009), arch's `optimal_block_length` ("stationary"
  column), floored at 1 (1 = the iid bootstrap) and capped at n. Intervals are percentile intervals
  of the resampled statistic.
- Paired bootstrap: the SAME resampled time indices for both series (one bootstrap over the pairs), so
  the interval of stat(b) - stat(a) keeps the correlation between the two variants at each time.
- McNemar (1947) on paired hits: exact two-sided binomial test on the discordant pairs when there are
  fewer than 25 of them, else chi-square (1 df) with the continuity correction (Edwards 1948);
  statsmodels' `mcnemar`.
- Diebold & Mariano (1995) on loss differences d_t = loss_a,t - loss_b,t with the small-sample
  correction of Harvey, Leybourne & Newbold (1997, IJF 13:281): the long-run variance is
  gamma_0 + 2 sum_{k=1}^{h-1} gamma_k (autocovariances with divisor n), DM = mean(d) / sqrt(V / n),
  DM* = DM sqrt((n + 1 - 2h + h(h - 1) / n) / n), p-value two-sided from Student's t with n - 1 df.
  Positive statistic: B's losses are smaller.
- Probabilistic Sharpe ratio (Bailey & López de Prado 2012, J. Risk 15(2)): per-period Sharpe SR
  (mean / std with ddof 1, not annualised), skewness g3 and raw (non-excess) kurtosis g4 of the returns
  (population moments), PSR(SR*) = Phi((SR - SR*) sqrt(n - 1) / sqrt(1 - g3 SR + (g4 - 1) / 4 SR^2)).
- Deflated Sharpe ratio (Bailey & López de Prado 2014, JPM 40(5):94): SR0 = sqrt(V[SR_n]) ((1 - gamma)
  Phi^-1(1 - 1/N) + gamma Phi^-1(1 - 1/(N e))), gamma = Euler-Mascheroni, V[SR_n] the variance (ddof 1)
  of the N trials' per-period Sharpe ratios; DSR = PSR(SR0). The trials' Sharpe ratios must be on the
  same per-period scale as the returns.

Libraries do the resampling (arch), the block length (arch), McNemar (statsmodels) and the
distributions (scipy). Diebold-Mariano with the HLN correction, PSR and DSR are written here: neither
statsmodels, arch nor scipy has them, and each is a few lines of the papers' formulas.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
from arch.bootstrap import StationaryBootstrap, optimal_block_length
from pydantic import BaseModel, ConfigDict, Field
from scipy import stats as sps
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar

EULER_MASCHERONI = 0.5772156649015329
EXACT_BELOW = 25  # discordant pairs below which McNemar uses the exact binomial test

Stat = Callable[[np.ndarray], float | None]  # None or NaN on a resample: that resample is left out


def _num(v: float | None) -> float:
    return math.nan if v is None else float(v)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


def _series(x: Sequence[float] | np.ndarray, name: str, min_n: int = 2) -> np.ndarray:
    a = np.asarray(x, dtype=float)
    if a.ndim != 1:
        raise ValueError(f"{name}: a flat series of numbers is needed, got shape {a.shape}")
    if a.size < min_n:
        raise ValueError(f"{name}: {a.size} observation(s), at least {min_n} needed")
    bad = np.flatnonzero(~np.isfinite(a))
    if bad.size:
        raise ValueError(f"{name}: value at position {int(bad[0])} is {a[bad[0]]}, not a finite number")
    return a


# --- bootstrap -------------------------------------------------------------------------------------


class Interval(_Frozen):
    """A bootstrap confidence interval of a statistic."""

    estimate: float = Field(description="The statistic on the observed data.")
    low: float
    high: float
    level: float = Field(description="Confidence level, e.g. 0.95.")
    n: int = Field(description="Observations (time points).")
    method: str = Field(description="How it was computed, in words.")
    mean_block: float = Field(description="Mean block length of the stationary bootstrap, observations.")
    n_boot: int = Field(description="Resamples drawn.")
    dropped: int = Field(default=0, description="Resamples whose statistic was not a finite number (left out).")
    seed: int

    @property
    def excludes_zero(self) -> bool:
        """The interval lies entirely above or below 0: significant at its level."""
        return self.low > 0 or self.high < 0


MIN_AUTO_BLOCK_N = 12  # below this, the automatic block length is not estimable


def mean_block_length(x: Sequence[float] | np.ndarray) -> float:
    """Politis & White (2004) automatic mean block length for the stationary bootstrap (arch), in [1, n].

    A constant series has no dependence to keep: 1. Below `MIN_AUTO_BLOCK_N` observations the
    Politis-White estimate is undefined (arch fails on its autocorrelation lags), so the block is
    the usual n^(1/3) rule of thumb instead.
    """
    a = _series(x, "mean_block_length")
    if np.ptp(a) == 0:
        return 1.0
    if a.size < MIN_AUTO_BLOCK_N:
        return float(max(1.0, a.size ** (1 / 3)))
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        b = float(optimal_block_length(a)["stationary"].iloc[0])
    if not math.isfinite(b):
        return 1.0
    return float(min(max(b, 1.0), a.size))


def _check_level(level: float, n_boot: int) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_boot < 10:
        raise ValueError(f"n_boot must be at least 10, got {n_boot}")


def _percentile(estimate: float, draws: np.ndarray, level: float, n: int, block: float, n_boot: int, seed: int,
                what: str) -> Interval:
    ok = draws[np.isfinite(draws)]
    dropped = int(draws.size - ok.size)
    if ok.size < max(10, draws.size // 2):
        raise ValueError(f"{what}: the statistic is undefined on {dropped} of {draws.size} resamples "
                         "(e.g. a ratio of a series that is often constant)")
    alpha = (1 - level) / 2
    low, high = (float(v) for v in np.quantile(ok, [alpha, 1 - alpha]))
    method = (f"stationary bootstrap (Politis & Romano 1994), mean block {block:.3g}, {n_boot} resamples, "
              f"percentile interval")
    return Interval(estimate=estimate, low=min(low, high), high=max(low, high), level=level, n=n, method=method,
                    mean_block=block, n_boot=n_boot, dropped=dropped, seed=seed)


def _finite_or_raise(v: float | None, what: str) -> float:
    v = _num(v)
    if not math.isfinite(v):
        raise ValueError(f"{what}: the statistic of the observed data is {v}, not a finite number")
    return v


def stationary_bootstrap_ci(x: Sequence[float] | np.ndarray, stat: Stat = np.mean, *, mean_block: float | None = None,
                            n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> Interval:
    """Percentile interval of `stat(x)` by the stationary bootstrap (module docstring for the sources)."""
    a = _series(x, "stationary_bootstrap_ci")
    _check_level(level, n_boot)
    block = mean_block_length(a) if mean_block is None else float(mean_block)
    if not 1 <= block <= a.size:
        raise ValueError(f"mean_block must be in [1, {a.size}], got {mean_block}")
    estimate = _finite_or_raise(stat(a), "stationary_bootstrap_ci")
    bs = StationaryBootstrap(block, a, seed=np.random.default_rng(seed))
    draws = np.array([_num(stat(pos[0])) for pos, _ in bs.bootstrap(n_boot)])
    return _percentile(estimate, draws, level, a.size, block, n_boot, seed, "stationary_bootstrap_ci")


def paired_bootstrap_ci(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, stat: Stat = np.mean, *,
                        mean_block: float | None = None, n_boot: int = 2000, level: float = 0.95,
                        seed: int = 0) -> Interval:
    """Percentile interval of stat(b) - stat(a), resampling the SAME time indices for both series.

    `a` and `b` are aligned in time (a[t] and b[t] happened at the same time). The mean block length,
    unless given, is the Politis-White choice for the difference b - a (the series whose dependence
    matters for a difference of means), or for the more dependent of the two when b - a is constant.
    """
    xa, xb = _series(a, "paired_bootstrap_ci (a)"), _series(b, "paired_bootstrap_ci (b)")
    if xa.size != xb.size:
        raise ValueError(f"paired_bootstrap_ci: the series are not aligned, {xa.size} vs {xb.size} observations")
    _check_level(level, n_boot)
    if mean_block is None:
        d = xb - xa
        block = mean_block_length(d) if np.ptp(d) > 0 else max(mean_block_length(xa), mean_block_length(xb))
    else:
        block = float(mean_block)
    if not 1 <= block <= xa.size:
        raise ValueError(f"mean_block must be in [1, {xa.size}], got {mean_block}")
    estimate = _finite_or_raise(_num(stat(xb)) - _num(stat(xa)), "paired_bootstrap_ci")
    bs = StationaryBootstrap(block, xa, xb, seed=np.random.default_rng(seed))
    draws = np.array([_num(stat(pos[1])) - _num(stat(pos[0])) for pos, _ in bs.bootstrap(n_boot)])
    return _percentile(estimate, draws, level, xa.size, block, n_boot, seed, "paired_bootstrap_ci")


# --- McNemar -------------------------------------------------------------------------------------


class McNemar(_Frozen):
    """McNemar's test of paired hits: did A and B hit equally often on the same decisions?"""

    n: int = Field(description="Paired observations.")
    both: int = Field(description="Both hit.")
    a_only: int = Field(description="A hit, B missed.")
    b_only: int = Field(description="B hit, A missed.")
    neither: int
    hit_rate_a: float
    hit_rate_b: float
    statistic: float = Field(description="Exact: min(a_only, b_only); chi2: (|a_only - b_only| - 1)^2 / discordant.")
    p_value: float = Field(description="Two-sided.")
    method: Literal["exact", "chi2"] = Field(description="exact binomial (discordant < 25) or chi2 with continuity.")


def mcnemar(hit_a: Sequence[bool], hit_b: Sequence[bool]) -> McNemar:
    """McNemar on aligned hits (hit_a[i] and hit_b[i] are the same decision); statsmodels computes the test."""
    ha, hb = np.asarray(hit_a, dtype=bool), np.asarray(hit_b, dtype=bool)
    if ha.ndim != 1 or ha.shape != hb.shape:
        raise ValueError(f"mcnemar: the hits are not aligned, {ha.size} vs {hb.size}")
    if ha.size == 0:
        raise ValueError("mcnemar: no paired observations")
    both, a_only = int(np.sum(ha & hb)), int(np.sum(ha & ~hb))
    b_only, neither = int(np.sum(~ha & hb)), int(np.sum(~ha & ~hb))
    exact = a_only + b_only < EXACT_BELOW
    res = sm_mcnemar([[both, a_only], [b_only, neither]], exact=exact, correction=True)
    return McNemar(n=int(ha.size), both=both, a_only=a_only, b_only=b_only, neither=neither,
                   hit_rate_a=float(ha.mean()), hit_rate_b=float(hb.mean()), statistic=float(res.statistic),
                   p_value=float(min(1.0, res.pvalue)), method="exact" if exact else "chi2")


# --- Diebold-Mariano -----------------------------------------------------------------------------


class DieboldMariano(_Frozen):
    """Diebold-Mariano test of equal expected loss, with the Harvey-Leybourne-Newbold correction."""

    n: int
    h: int = Field(description="Forecast horizon in observations: autocovariances up to lag h - 1 enter.")
    mean_difference: float = Field(description="mean(loss_a - loss_b): positive when B's losses are smaller.")
    statistic: float | None = Field(description="HLN-corrected DM statistic; None when the variance is 0 (see note).")
    statistic_uncorrected: float | None
    p_value: float | None = Field(description="Two-sided, Student's t with n - 1 df.")
    note: str | None = None


def diebold_mariano(loss_a: Sequence[float] | np.ndarray, loss_b: Sequence[float] | np.ndarray,
                    h: int = 1) -> DieboldMariano:
    """DM (1995) with the HLN (1997) correction on aligned per-decision losses (module docstring)."""
    la, lb = _series(loss_a, "diebold_mariano (a)", 3), _series(loss_b, "diebold_mariano (b)", 3)
    if la.size != lb.size:
        raise ValueError(f"diebold_mariano: the losses are not aligned, {la.size} vs {lb.size}")
    n = la.size
    if not 1 <= h < n:
        raise ValueError(f"diebold_mariano: h must be in [1, {n - 1}], got {h}")
    d = la - lb
    mean = float(d.mean())
    c = d - mean
    gamma = [float(c[k:] @ c[: n - k]) / n for k in range(h)]
    v = gamma[0] + 2 * sum(gamma[1:])
    note = None
    if v <= 0 < gamma[0]:  # the truncated long-run variance can go negative: fall back to gamma_0
        v, note = gamma[0], f"the long-run variance with {h - 1} lag(s) was not positive: gamma_0 alone is used"
    if v <= 0:
        return DieboldMariano(n=n, h=h, mean_difference=mean, statistic=None, statistic_uncorrected=None,
                              p_value=None, note="the loss difference is constant: no variance to test against")
    dm = mean / math.sqrt(v / n)
    dm_star = dm * math.sqrt((n + 1 - 2 * h + h * (h - 1) / n) / n)
    p = float(2 * sps.t.sf(abs(dm_star), df=n - 1))
    return DieboldMariano(n=n, h=h, mean_difference=mean, statistic=dm_star, statistic_uncorrected=dm, p_value=p,
                          note=note)


# --- Sharpe ratio significance -------------------------------------------------------------------


def sharpe_ratio(returns: Sequence[float] | np.ndarray) -> float | None:
    """Per-period Sharpe ratio mean / std (ddof 1), not annualised, rf 0; None when std is 0 or n < 2."""
    r = _series(returns, "sharpe_ratio", 1)
    if r.size < 2:
        return None
    sd = float(r.std(ddof=1))
    if sd <= 1e-15 * max(1.0, abs(float(r.mean()))):
        return None
    return float(r.mean()) / sd


def psr_from_moments(sharpe: float, n: int, skewness: float, kurtosis: float,
                     sr_benchmark: float = 0.0) -> float | None:
    """PSR of a per-period Sharpe over `n` observations with skewness and RAW kurtosis (normal: 3).

    None when the variance term 1 - g3 SR + (g4 - 1)/4 SR^2 is not positive (possible only with extreme
    skewness) or n < 2.
    """
    if n < 2:
        return None
    var = 1 - skewness * sharpe + (kurtosis - 1) / 4 * sharpe**2
    if not var > 0:
        return None
    return float(sps.norm.cdf((sharpe - sr_benchmark) * math.sqrt(n - 1) / math.sqrt(var)))


def _moments(r: np.ndarray) -> tuple[float, float]:
    """Skewness and raw kurtosis as population moments (the paper's); a constant series: 0 and 3 (moot)."""
    if np.ptp(r) == 0:
        return 0.0, 3.0
    return float(sps.skew(r, bias=True)), float(sps.kurtosis(r, fisher=False, bias=True))


def probabilistic_sharpe(returns: Sequence[float] | np.ndarray, sr_benchmark: float = 0.0) -> float | None:
    """P(true per-period Sharpe > sr_benchmark), Bailey & López de Prado (2012); None if the Sharpe is undefined."""
    r = _series(returns, "probabilistic_sharpe", 3)
    sr = sharpe_ratio(r)
    if sr is None:
        return None
    g3, g4 = _moments(r)
    return psr_from_moments(sr, r.size, g3, g4, sr_benchmark)


def expected_max_sharpe(n_trials: int, variance: float) -> float:
    """SR0 of Bailey & López de Prado (2014): the expected maximum Sharpe of N unskilled trials.

    sqrt(variance) ((1 - gamma) Phi^-1(1 - 1/N) + gamma Phi^-1(1 - 1/(N e))), gamma = Euler-Mascheroni.
    """
    if n_trials < 2:
        raise ValueError(f"expected_max_sharpe: at least 2 trials are needed, got {n_trials}")
    if not variance >= 0:
        raise ValueError(f"expected_max_sharpe: the variance must be >= 0, got {variance}")
    g = EULER_MASCHERONI
    z = (1 - g) * sps.norm.ppf(1 - 1 / n_trials) + g * sps.norm.ppf(1 - 1 / (n_trials * math.e))
    return float(math.sqrt(variance) * z)


class DeflatedSharpe(_Frozen):
    """The deflated Sharpe ratio: PSR against the Sharpe the best of N unskilled trials would show."""

    sharpe: float | None = Field(description="Per-period Sharpe of the returns (not annualised).")
    observations: int
    skewness: float
    kurtosis: float = Field(description="Raw (normal = 3).")
    n_trials: int
    trial_sharpe_variance: float = Field(description="Variance (ddof 1) of the trials' per-period Sharpe ratios.")
    expected_max_sharpe: float = Field(description="SR0, per period.")
    dsr: float | None = Field(description="PSR(SR0): P(the true Sharpe beats the best unskilled trial); None if "
                              "the Sharpe is undefined.")
    note: str | None = None

    def significant(self, level: float = 0.95) -> bool:
        return self.dsr is not None and self.dsr >= level


def deflated_sharpe(returns: Sequence[float] | np.ndarray, n_trials: int,
                    trial_sharpes: Sequence[float]) -> DeflatedSharpe:
    """DSR of `returns` given the per-period Sharpe ratios of the trials (the variants tried, this one included).

    `n_trials` is the number of independent trials N (at least the number of Sharpe ratios given is
    usual; it may be larger when more were tried than measured); the variance comes from `trial_sharpes`.
    """
    r = _series(returns, "deflated_sharpe", 3)
    ts = _series(trial_sharpes, "deflated_sharpe (trial Sharpe ratios)", 2)
    var = float(ts.var(ddof=1))
    sr0 = expected_max_sharpe(n_trials, var)
    sr = sharpe_ratio(r)
    g3, g4 = _moments(r)
    dsr = psr_from_moments(sr, r.size, g3, g4, sr0) if sr is not None else None
    note = None
    if sr is None:
        note = "the returns do not vary: no Sharpe ratio"
    elif dsr is None:
        note = "1 - skew SR + (kurt - 1)/4 SR^2 is not positive: the PSR is undefined"
    return DeflatedSharpe(sharpe=sr, observations=int(r.size), skewness=g3, kurtosis=g4, n_trials=n_trials,
                          trial_sharpe_variance=var, expected_max_sharpe=sr0, dsr=dsr, note=note)


__all__ = [
    "EULER_MASCHERONI",
    "DeflatedSharpe",
    "DieboldMariano",
    "Interval",
    "McNemar",
    "deflated_sharpe",
    "diebold_mariano",
    "expected_max_sharpe",
    "mcnemar",
    "mean_block_length",
    "paired_bootstrap_ci",
    "probabilistic_sharpe",
    "psr_from_moments",
    "sharpe_ratio",
    "stationary_bootstrap_ci",
]
