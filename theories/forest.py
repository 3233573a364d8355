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
Fit speed: `RandomForestClassifier.fit` spent about a third of its ~0.35 s per 2000-row fit building
trees; the rest was per-tree Python around it (estimator cloning and parameter checks, input and
target validation, and above all two `RandomState(seed)` constructions per tree, ~0.3 ms each as
each first builds a default MT19937 state from a fresh `SeedSequence`, then re-seeds it). `grow_forest` drives
scikit-learn's own tree builder (its Cython `Tree`, `Gini`, `BestSplitter`, `DepthFirstTreeBuilder`)
with the inputs the estimator would give it, and one generator re-seeded per tree, so the trees are
the same to the bit (tested against `RandomForestClassifier` on real data) at ~35% of the CPU
(`fit_forest`, both fits: 716 -> 253 ms CPU over 8 real symbol-weeks, 100 trees each).
Those classes are scikit-learn internals: a release that changes them fails that test.
Forest size: 50 trees by default (`n_estimators`). Evidence, against 100 trees on 4 symbols x 4 weeks
(2,688 hourly snapshots, Oct-Nov 2025): `fit_forest` CPU 240 -> 127 ms (mean); the forest's vote agreed
on 90.5% of hours, its "validated edge" flag on 100%, |P(up) difference| 0.010 on average (at most 0.061);
all within the forest's own seed noise (100 trees, seed 7 -> 8: vote 91.1%, edge flag 93.8%, |P(up)
difference| 0.015, at most 0.087). With the regime's EM fit, the heuristic's direction agreed on 99.3%.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import Field, model_validator
from sklearn.tree._criterion import Gini
from sklearn.tree._splitter import BestSplitter
from sklearn.tree._tree import DepthFirstTreeBuilder, Tree

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
from theories.indicators import atr, ema, rolling_std, sma, wilder_atr
from theories.jit import compiled
from theories.pairwise import sample_std

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
    n_estimators: int = Field(50, ge=10, le=500, description="Trees in the forest (evidence for 50: module docstring).")
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
    window sums in the same order as `rolling_std`'s row of it).
    """
    high, low, close, volume = (np.asarray(a, dtype=np.float64) for a in (high, low, close, volume))
    if len(close) < LAST_ROW_MIN_BARS:
        raise ValueError(f"the last feature row needs {LAST_ROW_MIN_BARS} bars, got {len(close)}")
    # the logarithms by numpy (a compiled log may differ from numpy's in the last bit), the rest compiled
    return _last_row(high, low, close, np.log(close), np.log1p(volume), len(FEATURES), 14, 48)


@compiled
def _last_row(high, low, close, lc, lv, n_features, atr_period, span):
    """`last_feature_row`'s arithmetic, in numpy's order (pairwise sums, the EMA and ATR recursions, a
    sequential running sum), from the log closes `lc` and log1p volumes `lv`. Compiled: as ~30 numpy
    calls on 48-value windows it cost ~80 us per snapshot, mostly call overhead."""
    m = len(close)
    row = np.full(n_features, np.nan)
    for col, k in enumerate((1, 4, 12, 24)):
        row[col] = lc[m - 1] - lc[m - 1 - k]
    w = 48  # the volatility, range and volume windows
    r = np.empty(w)
    for i in range(w):  # the last 48 one-bar returns (np.diff's subtraction)
        r[i] = lc[m - w + i] - lc[m - w - 1 + i]
    squares = np.empty(w)
    sd12, sd48 = sample_std(r, w, 12, squares), sample_std(r, w, w, squares)
    if sd48 > 0:
        row[4] = sd12 / sd48
    a = wilder_atr(high, low, close, atr_period)[m - 1]
    if a > 0:
        alpha = 2.0 / (span + 1)  # `ema(close, span)`: the recursion from the first close
        keep = 1.0 - alpha
        level = close[0]
        for t in range(1, m):
            level = keep * level + alpha * close[t]
        row[5] = (close[m - 1] - level) / a
    lo, hi = low[m - w], high[m - w]
    for i in range(m - w + 1, m):  # NaN wins, as in numpy's min and max
        lo = low[i] if low[i] < lo or low[i] != low[i] else lo
        hi = high[i] if high[i] > hi or high[i] != high[i] else hi
    row[6] = (close[m - 1] - lo) / (hi - lo) if hi - lo > 0 else 0.5
    sd = sample_std(lv, m, w, np.empty(m))
    running = lv[0]  # `sma`'s running sum (np.cumsum adds in order), whose last window is its last value
    before = running if m - w - 1 == 0 else 0.0
    for i in range(1, m):
        running += lv[i]
        if i == m - w - 1:
            before = running
    mean = (running - before) / w
    row[7] = (lv[m - 1] - mean) / sd if sd > 0 else 0.0
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
    def from_trees(cls, trees: Sequence[Tree]) -> FlatForest:
        """From `grow_forest`'s trees, whose class columns are (down, up)."""
        parts: dict[str, list[np.ndarray]] = {k: [] for k in ("left", "right", "feature", "threshold", "p_up")}
        roots, offset, depth = [], 0, 0
        for t in trees:
            roots.append(offset)
            leaf = t.children_left < 0
            parts["left"].append(np.where(leaf, -1, t.children_left + offset))
            parts["right"].append(np.where(leaf, -1, t.children_right + offset))
            parts["feature"].append(np.where(leaf, 0, t.feature))
            parts["threshold"].append(t.threshold.astype(np.float64))
            v = t.value[:, 0, :]
            parts["p_up"].append(v[:, UP] / v.sum(axis=1))
            offset += t.node_count
            depth = max(depth, t.max_depth)
        cat = {k: np.concatenate(v) for k, v in parts.items()}
        return cls(roots=np.asarray(roots), depth=depth, **cat)

    def predict_up(self, x: np.ndarray) -> float:
        """Mean over trees of the up share in the leaf that the feature row `x` falls into."""
        x = np.asarray(x, dtype=np.float32).astype(np.float64)
        node = _leaves(x, self.roots, self.left, self.right, self.feature, self.threshold)
        return float(self.p_up[node].mean())


@compiled
def _leaves(x: np.ndarray, roots: np.ndarray, left: np.ndarray, right: np.ndarray, feature: np.ndarray,
            threshold: np.ndarray) -> np.ndarray:
    """The leaf each tree sends the row `x` to (the `FlatForest` layout). A compiled walk: stepping all
    trees a level at a time in numpy cost ~40 numpy calls on 50-element arrays per row, ~0.1 ms; this
    costs a few microseconds."""
    out = np.empty(len(roots), dtype=np.int64)
    for t in range(len(roots)):
        node = roots[t]
        while left[node] >= 0:
            node = left[node] if x[feature[node]] <= threshold[node] else right[node]
        out[t] = node
    return out


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
    trees: tuple[Tree, ...]  # the final model's trees (`grow_forest`)
    flat: FlatForest


MAX_SEED = np.iinfo(np.int32).max  # scikit-learn's bound for the per-tree seeds it draws
UP = 1  # class column of an up label: labels are 0 / 1 and both occur (checked before growing)


def grow_forest(X: np.ndarray, y: np.ndarray, p: ForestParams) -> tuple[Tree, ...]:
    """The trees of `RandomForestClassifier(n_estimators, max_depth, min_samples_leaf, max_features="sqrt",
    random_state, n_jobs=1).fit(X, y)` for finite `X` and 0 / 1 labels `y` with both present, bit-identical.

    The estimator draws one seed per tree from `RandomState(random_state)`; each tree draws its bootstrap
    from a `RandomState(seed)` (row counts as sample weights) and its splitter from another one. Re-seeding
    one generator gives the same streams without constructing 2 generators per tree (most of the saving).
    """
    X32 = np.asarray(X, dtype=np.float32)  # the estimator's own conversion: C order, float32
    y2 = np.asarray(y, dtype=np.float64).reshape(-1, 1)  # 0 / 1 is already the estimator's class encoding
    n, n_features = X32.shape
    classes = np.array([2], dtype=np.intp)
    max_features = max(1, int(np.sqrt(n_features)))  # "sqrt"
    min_samples_split = max(2, 2 * p.min_samples_leaf)  # the estimator's default 2, raised as it raises it
    seeds = np.random.RandomState(p.random_state)
    rng = np.random.RandomState()
    trees = []
    for _ in range(p.n_estimators):
        seed = seeds.randint(MAX_SEED)
        rng.seed(seed)
        weight = np.bincount(rng.randint(0, n, n), minlength=n).astype(np.float64)  # the bootstrap
        rng.seed(seed)  # the splitter draws from a fresh generator of the same seed when the build starts
        splitter = BestSplitter(Gini(1, classes), max_features, p.min_samples_leaf, 0.0, rng, None)
        tree = Tree(n_features, classes, 1)
        DepthFirstTreeBuilder(splitter, min_samples_split, p.min_samples_leaf, 0.0, p.max_depth, 0.0).build(
            tree, X32, y2, weight, None
        )
        trees.append(tree)
    return tuple(trees)


def forest_p_up(trees: Sequence[Tree], X: np.ndarray) -> np.ndarray:
    """P(up) of each row of `X`: `RandomForestClassifier.predict_proba(X)[:, up]`, the same sum in the same order."""
    X32 = np.asarray(X, dtype=np.float32)
    total = np.zeros(len(X32))
    for t in trees:
        total += t.value[t.apply(X32), 0, UP]
    return total / len(trees)


def forest_importances(trees: Sequence[Tree], n_features: int) -> np.ndarray:
    """`RandomForestClassifier.feature_importances_`: the mean of the trees' normalised impurity decreases
    (single-node trees left out), normalised again; zeros when no tree split."""
    each = [t.compute_feature_importances() for t in trees if t.node_count > 1]
    if not each:
        return np.zeros(n_features)
    mean = np.mean(each, axis=0, dtype=np.float64)
    return mean / np.sum(mean)


def _fit(X: np.ndarray, y: np.ndarray, p: ForestParams, what: str) -> tuple[Tree, ...]:
    if len(y) < p.min_train_rows:
        raise TheoryError(f"forest {what} has {len(y)} labelled rows, needs at least {p.min_train_rows}")
    if len(np.unique(y)) < 2:
        raise TheoryError(f"forest {what} labels are all one side: nothing to learn")
    return grow_forest(X, y, p)


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
    called_up = forest_p_up(check, ts.X[fold]) > 0.5
    accuracy = float(np.mean(called_up == (ts.y[fold] == 1)))
    final = _fit(ts.X, ts.y, p, "training")
    return ForestFit(
        fitted_at=fitted_at,
        horizon=p.horizon,
        train_rows=len(ts.y),
        oos_accuracy=accuracy,
        oos_rows=int(fold.sum()),
        oos_base_rate=float(ts.y[fold].mean()),
        importances=forest_importances(final, len(FEATURES)),
        last_label_end_ms=int(ts.label_end_ms.max()),
        trees=final,
        flat=FlatForest.from_trees(final),
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
