"""Random forest on past-bar features: the probability that the next `horizon` bars close up.

Method: Breiman (2001) random forest (scikit-learn `RandomForestClassifier`), trained walk-forward
with purging (Lopez de Prado 2018, Advances in Financial Machine Learning, ch. 7).

Features of bar i use candles up to and including bar i only (`FEATURES`, windows in bars):
  ret_1, ret_4, ret_12, ret_24   log return of the close over the last 1 / 4 / 12 / 24 bars
  vol_ratio_12_48                std of one-bar log returns over 12 bars / over 48 bars
  ema48_gap_atr                  (close - EMA(48) of close) / Wilder ATR(14)
  range_pos_48                   (close - lowest low) / (highest high - lowest low) over 48 bars; 0.5 if flat
  volume_z_48                    z-score of log(1 + volume) against its 48-bar mean and std; 0 if constant
Training rows start `WARMUP` bars into the training history, and the row scored at decision time is
computed on the last `WARMUP` + 1 bars, so in both the EMA and ATR seeds have decayed to a weight
below 3e-4: a row is (to that precision) the same whichever window it is computed on.

Label of bar i: 1 when log(close[i + horizon] / close[i]) > 0, else 0 (a flat move counts as not up).
It is known only when bar i + horizon has closed, so at a given time only rows with
i + horizon <= the last closed bar are labelled; the last `horizon` bars are never trained on.

Walk-forward: the fit runs on a schedule (`every_ms`, default weekly: `theories.base.REFIT_EVERY_MS`)
on the last `train_bars` candles closed by the fit time, cached by (symbol, fit time, data fingerprint, params).
- Validation fold: the last `validation_rows` labelled rows. Its model trains only on rows whose
  label ends at or before the fold's first bar (i + horizon <= first fold bar: the purge gap), so
  no training label overlaps the fold's future. Reported: accuracy on the fold, its size, and its
  base rate (share of up labels), since an accuracy means little next to always guessing one side.
- Final model: all labelled rows; it scores the feature row of the last bar of the analysis window.
Importances are scikit-learn's impurity-based (mean decrease in impurity, summing to 1); they
favour features with many distinct values and say nothing about the sign of the effect.

Prediction speed: scikit-learn's `predict_proba` on one row costs ~9 ms for 100 trees (per-tree
Python and validation overhead), too slow for the snapshot budget. The fitted trees are therefore
flattened into arrays once per fit and traversed for all trees at once in numpy (`FlatForest`),
which gives the same probabilities (tested to 1e-12) in well under a millisecond.
Fit speed: two fits cost ~0.6-0.8 s CPU for 2000 candles, nearly all inside scikit-learn's tree
building. Growing the same trees one by one (bit-identical, checked) saved only ~8%, not worth
leaving the library's own ensemble; the refit schedule (`every_ms`) is the lever for long replays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import Field, model_validator
from sklearn.ensemble import RandomForestClassifier

from theories.base import (
    BARS,
    FRACTION,
    LABEL,
    PROBABILITY,
    REFIT_EVERY_MS,
    TIME,
    Theory,
    TheoryContext,
    TheoryError,
    TheoryParams,
    TheoryResult,
    dec,
    fingerprint,
    fit_time,
    pct,
    unit,
)
from theories.candles import Candles
from theories.indicators import atr, ema, rolling_std, sma

FEATURES: tuple[str, ...] = (
    "ret_1",
    "ret_4",
    "ret_12",
    "ret_24",
    "vol_ratio_12_48",
    "ema48_gap_atr",
    "range_pos_48",
    "volume_z_48",
)
WARMUP = 200  # bars before the first usable feature row: (47/49)^200 < 3e-4 of the EMA seed remains


class ForestParams(TheoryParams):
    horizon: int = Field(4, ge=1, le=48, description="Bars ahead whose return sign is predicted.")
    train_bars: int = Field(2000, ge=500, description="Latest candles closed by the fit time used for training.")
    validation_rows: int = Field(250, ge=50, description="Labelled rows in the latest validation fold.")
    min_train_rows: int = Field(300, ge=50, description="Fewer training rows than this (either model): an error.")
    every_ms: int = Field(REFIT_EVERY_MS, gt=0, description="Refit schedule: a new fit per period of this length.")
    n_estimators: int = Field(100, ge=10, le=500, description="Trees in the forest.")
    max_depth: int = Field(5, ge=1, le=12, description="Depth limit of each tree (keeps it from memorising noise).")
    min_samples_leaf: int = Field(25, ge=1, description="Fewest training rows in a leaf.")
    random_state: int = Field(7, description="Seed of the forest (bootstrap and feature sampling).")
    top_k: int = Field(4, ge=1, le=len(FEATURES), description="Feature importances reported.")
    lean_p: float = Field(0.55, gt=0.5, lt=1, description="P(up) at or above: 'leans up' (mirror for down).")
    strong_p: float = Field(0.60, gt=0.5, lt=1, description="P(up) at or above: 'favours up' (mirror for down).")
    min_edge: float = Field(
        0.03, ge=0, lt=0.5, description="Fold accuracy must beat always-guessing the commoner side by this much."
    )

    @model_validator(mode="after")
    def _strong_is_beyond_lean(self) -> ForestParams:
        if self.strong_p < self.lean_p:
            raise ValueError("strong_p must be at least lean_p")
        return self


class ForestResult(TheoryResult):
    p_up: float = unit(PROBABILITY, "Forest probability that the close rises over the next `horizon` bars.")
    horizon: int = unit(BARS, "Bars ahead the prediction is for.")
    oos_accuracy: float = unit(FRACTION, "Share of correct up/down calls on the latest purged validation fold.")
    oos_rows: int = unit(BARS, "Rows (bars) in that validation fold.")
    oos_base_rate: float = unit(FRACTION, "Share of up labels in the fold: always-up would score this.")
    oos_edge: float = unit(FRACTION, "Fold accuracy minus the accuracy of always guessing the fold's commoner side.")
    train_rows: int = unit(BARS, "Labelled rows the final model was trained on.")
    top_features: tuple[str, ...] = unit(LABEL, "Most important features, most important first (see FEATURES).")
    top_importances: tuple[float, ...] = unit(FRACTION, "Their impurity-based importances (all features sum to 1).")
    fitted_at: int = unit(TIME, "Fit time: the model saw only candles closed by then, UTC epoch ms.")

    def summary(self) -> str:
        # naive = always guessing the fold's commoner side. The top features and their importances stay
        # in the result (tables, JSON): they explain the model, they do not change the trade.
        majority = max(self.oos_base_rate, 1 - self.oos_base_rate)
        return (
            f"P(up {self.horizon} bars) {dec(self.p_up)}; OOS hit rate {pct(self.oos_accuracy)} "
            f"of {self.oos_rows} vs {pct(majority)} naive -> {self.label}"
        )


def forest_features(high: np.ndarray, low: np.ndarray, close: np.ndarray, volume: np.ndarray) -> np.ndarray:
    """Feature matrix (bars x len(FEATURES)), row i from bars <= i only; NaN where a window is not full."""
    high, low, close, volume = (np.asarray(a, dtype=np.float64) for a in (high, low, close, volume))
    n = len(close)
    out = np.full((n, len(FEATURES)), np.nan)
    lc = np.log(close)
    for col, k in enumerate((1, 4, 12, 24)):
        out[k:, col] = lc[k:] - lc[:-k]
    r = out[:, 0]
    sd12 = np.concatenate(([np.nan], rolling_std(r[1:], 12)))
    sd48 = np.concatenate(([np.nan], rolling_std(r[1:], 48)))
    ok = sd48 > 0  # NaN compares False
    out[ok, 4] = sd12[ok] / sd48[ok]
    a = atr(high, low, close, 14)
    ok = a > 0
    out[ok, 5] = (close[ok] - ema(close, 48)[ok]) / a[ok]
    if n >= 48:
        hi = np.lib.stride_tricks.sliding_window_view(high, 48).max(axis=1)
        lo = np.lib.stride_tricks.sliding_window_view(low, 48).min(axis=1)
        c = close[47:]
        span = hi - lo
        out[47:, 6] = np.where(span > 0, (c - lo) / np.where(span > 0, span, 1.0), 0.5)
    lv = np.log1p(volume)
    mean, sd = sma(lv, 48), rolling_std(lv, 48)
    full = np.isfinite(sd)
    out[full, 7] = np.where(sd[full] > 0, (lv[full] - mean[full]) / np.where(sd[full] > 0, sd[full], 1.0), 0.0)
    return out


LAST_ROW_MIN_BARS = 49  # 48 one-bar returns fill every window of the last row


def last_feature_row(high: np.ndarray, low: np.ndarray, close: np.ndarray, volume: np.ndarray) -> np.ndarray:
    """`forest_features(...)[-1]`, the row scored at decision time, computed for that row only.

    Bit-identical to the full matrix's last row (tested): the recursive and cumulative parts (EMA,
    ATR, the SMA's running sum) still run over every bar, as there; only the sliding-window
    statistics, most of the full matrix's cost, are taken on the last window alone (`np.std` of one
    window sums in the same order as `rolling_std`'s row of it, without the window view's overhead).
    """
    high, low, close, volume = (np.asarray(a, dtype=np.float64) for a in (high, low, close, volume))
    if len(close) < LAST_ROW_MIN_BARS:
        raise ValueError(f"the last feature row needs {LAST_ROW_MIN_BARS} bars, got {len(close)}")
    row = np.full(len(FEATURES), np.nan)
    lc = np.log(close)
    for col, k in enumerate((1, 4, 12, 24)):
        row[col] = lc[-1] - lc[-1 - k]
    r = np.diff(lc[-49:])  # the last 48 one-bar returns
    sd12, sd48 = np.std(r[-12:], ddof=1), np.std(r, ddof=1)
    if sd48 > 0:
        row[4] = sd12 / sd48
    a = atr(high, low, close, 14)[-1]
    if a > 0:
        row[5] = (close[-1] - ema(close, 48)[-1]) / a
    lo, hi = low[-48:].min(), high[-48:].max()
    row[6] = (close[-1] - lo) / (hi - lo) if hi - lo > 0 else 0.5
    lv = np.log1p(volume)
    sd = np.std(lv[-48:], ddof=1)
    row[7] = (lv[-1] - sma(lv, 48)[-1]) / sd if sd > 0 else 0.0
    return row


@dataclass(frozen=True)
class TrainingSet:
    """Labelled feature rows. `bar` indexes the candles; `label_end_ms` is when each label became known."""

    X: np.ndarray
    y: np.ndarray
    bar: np.ndarray
    label_end_ms: np.ndarray


def training_set(candles: Candles, horizon: int) -> TrainingSet:
    """Every row whose features are warm and whose label is already known by the last candle's close."""
    feats = forest_features(candles.high, candles.low, candles.close, candles.volume)
    lc = np.log(candles.close)
    bar = np.arange(WARMUP, len(candles) - horizon)
    bar = bar[np.isfinite(feats[bar]).all(axis=1)]
    y = (lc[bar + horizon] - lc[bar] > 0).astype(np.int64)
    return TrainingSet(X=feats[bar], y=y, bar=bar, label_end_ms=candles.close_time[bar + horizon])


def purged_split(bar: np.ndarray, horizon: int, fold_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Masks (train, fold): the fold is the last `fold_rows` rows; training keeps only rows whose label
    window (bar, bar + horizon] ends at or before the fold's first bar."""
    fold = np.zeros(len(bar), dtype=bool)
    fold[-fold_rows:] = True
    first = bar[-fold_rows]
    return (bar + horizon <= first) & ~fold, fold


@dataclass(frozen=True)
class FlatForest:
    """All trees of a fitted forest in flat arrays, for a fast single-row prediction.

    Node ids are global; `left`/`right` are -1 at leaves; `p_up` is each node's share of up labels.
    Features are compared as float32, as scikit-learn's trees do.
    """

    roots: np.ndarray
    left: np.ndarray
    right: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    p_up: np.ndarray
    depth: int

    @classmethod
    def from_model(cls, model: RandomForestClassifier) -> FlatForest:
        up = int(np.flatnonzero(model.classes_ == 1)[0])
        parts: dict[str, list[np.ndarray]] = {k: [] for k in ("left", "right", "feature", "threshold", "p_up")}
        roots, offset, depth = [], 0, 0
        for est in model.estimators_:
            t = est.tree_
            roots.append(offset)
            leaf = t.children_left < 0
            parts["left"].append(np.where(leaf, -1, t.children_left + offset))
            parts["right"].append(np.where(leaf, -1, t.children_right + offset))
            parts["feature"].append(np.where(leaf, 0, t.feature))
            parts["threshold"].append(t.threshold.astype(np.float64))
            v = t.value[:, 0, :]
            parts["p_up"].append(v[:, up] / v.sum(axis=1))
            offset += t.node_count
            depth = max(depth, t.max_depth)
        cat = {k: np.concatenate(v) for k, v in parts.items()}
        return cls(roots=np.asarray(roots), depth=depth, **cat)

    def predict_up(self, x: np.ndarray) -> float:
        """Mean over trees of the up share in the leaf that the feature row `x` falls into."""
        x = np.asarray(x, dtype=np.float32).astype(np.float64)
        node = self.roots
        for _ in range(self.depth):
            go_left = x[self.feature[node]] <= self.threshold[node]
            child = np.where(go_left, self.left[node], self.right[node])
            node = np.where(child < 0, node, child)
        return float(self.p_up[node].mean())


@dataclass(frozen=True)
class ForestFit:
    """What one scheduled fit produced; cached and reused for every decision in its period."""

    fitted_at: int
    horizon: int
    train_rows: int
    oos_accuracy: float
    oos_rows: int
    oos_base_rate: float
    importances: np.ndarray
    last_label_end_ms: int
    model: RandomForestClassifier
    flat: FlatForest


def _forest(p: ForestParams) -> RandomForestClassifier:
    return RandomForestClassifier(
        n_estimators=p.n_estimators,
        max_depth=p.max_depth,
        min_samples_leaf=p.min_samples_leaf,
        max_features="sqrt",
        random_state=p.random_state,
        n_jobs=1,
    )


def _fit(X: np.ndarray, y: np.ndarray, p: ForestParams, what: str) -> RandomForestClassifier:
    if len(y) < p.min_train_rows:
        raise TheoryError(f"forest {what} has {len(y)} labelled rows, needs at least {p.min_train_rows}")
    if len(np.unique(y)) < 2:
        raise TheoryError(f"forest {what} labels are all one side: nothing to learn")
    return _forest(p).fit(X, y)


def fit_forest(candles: Candles, params: ForestParams, fitted_at: int) -> ForestFit:
    """Validation fold and final model from `candles`, which must all have closed by `fitted_at`."""
    p = params
    if len(candles) and candles.last_close_time > fitted_at:
        raise ValueError("fit candles must all have closed by the fit time")
    ts = training_set(candles, p.horizon)
    if len(ts.y) < p.validation_rows + p.horizon + p.min_train_rows:
        raise TheoryError(
            f"forest needs {p.validation_rows + p.horizon + p.min_train_rows} labelled rows before the fit time, "
            f"got {len(ts.y)} from {len(candles)} candles"
        )
    train, fold = purged_split(ts.bar, p.horizon, p.validation_rows)
    check = _fit(ts.X[train], ts.y[train], p, "validation training")
    up_col = int(np.flatnonzero(check.classes_ == 1)[0])
    called_up = check.predict_proba(ts.X[fold])[:, up_col] > 0.5
    accuracy = float(np.mean(called_up == (ts.y[fold] == 1)))
    final = _fit(ts.X, ts.y, p, "training")
    return ForestFit(
        fitted_at=fitted_at,
        horizon=p.horizon,
        train_rows=len(ts.y),
        oos_accuracy=accuracy,
        oos_rows=int(fold.sum()),
        oos_base_rate=float(ts.y[fold].mean()),
        importances=final.feature_importances_.copy(),
        last_label_end_ms=int(ts.label_end_ms.max()),
        model=final,
        flat=FlatForest.from_model(final),
    )


def _label(p_up: float, edge: float, accuracy: float, base: float, p: ForestParams) -> str:
    if p_up >= p.strong_p:
        lean = "favours up"
    elif p_up >= p.lean_p:
        lean = "leans up"
    elif p_up <= 1 - p.strong_p:
        lean = "favours down"
    elif p_up <= 1 - p.lean_p:
        lean = "leans down"
    else:
        lean = "no lean"
    check = "validated edge" if edge >= p.min_edge else "no proven edge"
    return f"{lean}; {check}"


def forest_signal(fit: ForestFit, candles: Candles, params: ForestParams) -> ForestResult:
    """Score the last bar of `candles` with a fitted forest."""
    p = params
    if len(candles) <= WARMUP:
        raise TheoryError(f"forest features need more than {WARMUP} candles, got {len(candles)}")
    # the last WARMUP + 1 bars give the last row with the same seed decay as the earliest training row
    c = candles.tail(WARMUP + 1)
    x = last_feature_row(c.high, c.low, c.close, c.volume)
    if not np.isfinite(x).all():
        bad = [f for f, v in zip(FEATURES, x, strict=True) if not np.isfinite(v)]
        raise TheoryError(f"forest features undefined on the last bar: {bad}")
    p_up = fit.flat.predict_up(x)
    majority = max(fit.oos_base_rate, 1 - fit.oos_base_rate)
    edge = fit.oos_accuracy - majority
    order = np.argsort(-fit.importances, kind="stable")[: p.top_k]
    return ForestResult(
        p_up=p_up,
        horizon=fit.horizon,
        oos_accuracy=fit.oos_accuracy,
        oos_rows=fit.oos_rows,
        oos_base_rate=fit.oos_base_rate,
        oos_edge=edge,
        train_rows=fit.train_rows,
        top_features=tuple(FEATURES[i] for i in order),
        top_importances=tuple(float(fit.importances[i]) for i in order),
        fitted_at=fit.fitted_at,
        label=_label(p_up, edge, fit.oos_accuracy, fit.oos_base_rate, p),
    )


def _fit_or_error(candles: Candles, p: ForestParams, ft: int) -> ForestFit | TheoryError:
    # a failed fit is cached too, so a symbol without enough history does not refit on every call
    try:
        return fit_forest(candles, p, ft)
    except TheoryError as e:
        return e


def _run(ctx: TheoryContext, params: ForestParams) -> ForestResult:
    ft = fit_time(ctx.at_ms, params.every_ms)
    fit_candles = ctx.history.closed_by(ft).tail(params.train_bars)
    key = ("forest", ctx.symbol, ft, fingerprint(fit_candles), params)
    fit = ctx.cached(key, lambda: _fit_or_error(fit_candles, params, ft))
    if isinstance(fit, TheoryError):
        raise TheoryError(str(fit))
    return forest_signal(fit, ctx.candles, params)


THEORY = Theory(
    name="forest",
    description=(
        "Random forest (Breiman 2001) on past-bar features predicting the sign of the next-horizon return; "
        "walk-forward with a purged validation fold (Lopez de Prado 2018), refit on a schedule."
    ),
    params=ForestParams,
    result=ForestResult,
    run=_run,
    min_bars=WARMUP + 1,
)
