import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestClassifier

from theories import forest
from theories.base import FitCache, TheoryContext, TheoryError, fit_time
from theories.candles import HOUR_MS, Candles
from theories.forest import (
    FEATURES,
    THEORY,
    WARMUP,
    FlatForest,
    ForestParams,
    fit_forest,
    forest_features,
    forest_importances,
    forest_p_up,
    forest_signal,
    grow_forest,
    last_feature_row,
    purged_split,
    training_set,
)

DAY_MS = 24 * HOUR_MS
T0 = 19675 * DAY_MS  # a UTC midnight, so fit times fall on bar boundaries
FAST = {"n_estimators": 30}  # where only the plumbing is under test, a smaller forest keeps the suite quick


def _candles(log_close: np.ndarray, volume: np.ndarray | None = None, symbol: str = "X/USDT") -> Candles:
    c = np.exp(np.asarray(log_close, dtype=np.float64))
    o = np.concatenate(([c[0]], c[:-1]))
    v = np.full(len(c), 10.0) if volume is None else volume
    t = T0 + np.arange(len(c)) * HOUR_MS
    return Candles(t, o, np.maximum(o, c) * 1.001, np.minimum(o, c) * 0.999, c, v, interval_ms=HOUR_MS, symbol=symbol)


def _noise(n: int, seed: int) -> Candles:
    rng = np.random.default_rng(seed)
    return _candles(np.log(100) + np.cumsum(rng.standard_normal(n) * 0.01), rng.lognormal(3, 0.5, n))


def _ctx(history: Candles, at_ms: int, cache: FitCache | None = None) -> TheoryContext:
    h = history.closed_by(at_ms)
    return TheoryContext(symbol=history.symbol, at_ms=at_ms, candles=h.tail(500), history=h, cache=cache)


def _fit_fields(res) -> tuple:
    return (res.oos_accuracy, res.oos_rows, res.oos_base_rate, res.train_rows, res.top_features, res.top_importances,
            res.fitted_at)


def test_features_of_a_bar_use_only_that_bar_and_earlier():
    c = _noise(600, 1)
    full = forest_features(c.high, c.low, c.close, c.volume)
    for i in (WARMUP, 333, 599):
        prefix = c.closed_by(int(c.close_time[i]))
        assert len(prefix) == i + 1
        row = forest_features(prefix.high, prefix.low, prefix.close, prefix.volume)[-1]
        np.testing.assert_array_equal(row, full[i])
    assert full.shape == (600, len(FEATURES))


def test_features_have_their_stated_values():
    c = _noise(300, 2)
    f = forest_features(c.high, c.low, c.close, c.volume)[-1]
    lc, r = np.log(c.close), np.diff(np.log(c.close))
    assert f[0] == pytest.approx(lc[-1] - lc[-2]) and f[3] == pytest.approx(lc[-1] - lc[-25])
    assert f[4] == pytest.approx(r[-12:].std(ddof=1) / r[-48:].std(ddof=1))
    lo, hi = c.low[-48:].min(), c.high[-48:].max()
    assert f[6] == pytest.approx((c.close[-1] - lo) / (hi - lo))
    lv = np.log1p(c.volume[-48:])
    assert f[7] == pytest.approx((lv[-1] - lv.mean()) / lv.std(ddof=1))


def _same_row(c: Candles) -> None:
    want = forest_features(c.high, c.low, c.close, c.volume)[-1]
    np.testing.assert_array_equal(last_feature_row(c.high, c.low, c.close, c.volume), want)


def test_the_last_row_alone_is_bit_identical_to_the_full_matrix_on_real_data(shared_data):
    for symbol in ("BTC_USDT", "DOGE_USDT", "SOL_USDT"):
        df = pd.read_csv(shared_data / "candles" / "binance-spot-1h" / f"{symbol}.csv.gz").tail(6000)
        hist = Candles(df.time, df.open, df.high, df.low, df.close, df.volume, symbol=symbol.replace("_", "/"))
        for end in range(WARMUP + 1, len(hist), 29):  # the decision's window: WARMUP + 1 bars
            _same_row(hist.closed_by(int(hist.close_time[end - 1])).tail(WARMUP + 1))


def test_the_last_row_alone_keeps_the_flat_cases_of_the_full_matrix():
    flat = _candles(np.full(WARMUP + 1, np.log(100.0)))  # no spread, no range, constant volume
    _same_row(flat)
    row = last_feature_row(flat.high, flat.low, flat.close, flat.volume)
    assert np.isnan(row[4]) and row[7] == 0.0  # 0 / 0 volatility ratio is undefined; constant volume z is 0
    _same_row(_noise(60, 5))  # the shortest input whose windows are all full
    with pytest.raises(ValueError):
        last_feature_row(*(np.ones(48),) * 4)


def test_training_labels_are_the_sign_of_the_next_horizon_return_known_by_the_last_close():
    c = _noise(700, 3)
    ts = training_set(c, 4)
    lc = np.log(c.close)
    assert ts.bar[0] == WARMUP and ts.bar[-1] == len(c) - 1 - 4  # the last 4 bars have no label yet
    np.testing.assert_array_equal(ts.y, (lc[ts.bar + 4] > lc[ts.bar]).astype(int))
    np.testing.assert_array_equal(ts.label_end_ms, c.close_time[ts.bar + 4])
    assert ts.label_end_ms.max() == c.last_close_time


def test_purged_split_trains_only_on_labels_that_end_by_the_folds_first_bar():
    bar = np.arange(200, 1000)
    train, fold = purged_split(bar, horizon=4, fold_rows=100)
    assert fold.sum() == 100 and bar[fold][0] == 900
    assert (bar[train] + 4 <= 900).all()
    assert bar[train].max() == 896  # nothing purged that did not have to be
    assert not (train & fold).any()


def test_flat_forest_gives_sklearns_probabilities():
    c = _noise(1200, 4)
    p = ForestParams(**FAST, validation_rows=200)
    fit = fit_forest(c, p, c.last_close_time)
    ts = training_set(c, p.horizon)
    expected = forest_p_up(fit.trees, ts.X)  # scikit-learn's predict_proba (tested below)
    got = np.array([fit.flat.predict_up(x) for x in ts.X])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    assert isinstance(fit.flat, FlatForest) and fit.flat.depth <= p.max_depth


def test_flat_forest_sends_each_row_to_the_leaves_scikit_learn_does_on_real_data(shared_data):
    # the compiled walk must land in each tree's own leaf (Tree.apply), so its mean of the leaves' up
    # shares is the numpy walk's to the bit
    df = pd.read_csv(shared_data / "candles" / "binance-spot-1h" / "ETH_USDT.csv.gz").tail(2000)
    c = Candles(df.time, df.open, df.high, df.low, df.close, df.volume, symbol="ETH/USDT")
    fit = fit_forest(c, ForestParams(), c.last_close_time)
    flat = fit.flat
    for x in training_set(c, 4).X[::7]:
        x32 = np.asarray(x, dtype=np.float32)
        want = np.array([t.apply(x32[None, :])[0] + flat.roots[i] for i, t in enumerate(fit.trees)])
        got = forest._leaves(x32.astype(np.float64), flat.roots, flat.left, flat.right, flat.feature, flat.threshold)
        np.testing.assert_array_equal(got, want)
        assert flat.predict_up(x) == float(flat.p_up[want].mean())


def _sklearn_forest(X: np.ndarray, y: np.ndarray, p: ForestParams) -> RandomForestClassifier:
    forest = RandomForestClassifier(n_estimators=p.n_estimators, max_depth=p.max_depth,
                                    min_samples_leaf=p.min_samples_leaf, max_features="sqrt",
                                    random_state=p.random_state, n_jobs=1)
    return forest.fit(X, y)


def test_grown_trees_are_scikit_learns_forest_to_the_bit_on_real_data(shared_data):
    # both fits of a real refit (validation training rows, then all rows), default parameters and a variant
    variant = ForestParams(n_estimators=20, max_depth=8, min_samples_leaf=5, random_state=3)
    for symbol, params in (("ETH_USDT", ForestParams()), ("DOGE_USDT", variant)):
        df = pd.read_csv(shared_data / "candles" / "binance-spot-1h" / f"{symbol}.csv.gz").tail(2000)
        c = Candles(df.time, df.open, df.high, df.low, df.close, df.volume, symbol=symbol.replace("_", "/"))
        ts = training_set(c, params.horizon)
        train, fold = purged_split(ts.bar, params.horizon, params.validation_rows)
        for rows in (train, np.ones(len(ts.y), dtype=bool)):
            want = _sklearn_forest(ts.X[rows], ts.y[rows], params)
            got = grow_forest(ts.X[rows], ts.y[rows], params)
            assert len(got) == len(want.estimators_) == params.n_estimators
            for tree, est in zip(got, want.estimators_, strict=True):
                for name in ("children_left", "children_right", "feature", "threshold", "value", "impurity",
                             "n_node_samples", "weighted_n_node_samples"):
                    np.testing.assert_array_equal(getattr(tree, name), getattr(est.tree_, name), err_msg=name)
            np.testing.assert_array_equal(forest_importances(got, len(FEATURES)), want.feature_importances_)
            np.testing.assert_array_equal(forest_p_up(got, ts.X[fold]), want.predict_proba(ts.X[fold])[:, 1])


def test_a_planted_volume_signal_is_learned_out_of_sample_and_read_on_the_last_bar():
    # the next bar rises exactly when this bar's volume is high (log volume 2 above the low state)
    n, rng = 2400, np.random.default_rng(5)
    state = rng.integers(0, 2, n)
    volume = np.exp(1 + 2 * state + 0.05 * rng.standard_normal(n))
    r = (2 * state[:-1] - 1) * (0.002 + np.abs(rng.standard_normal(n - 1)) * 0.01)
    c = _candles(np.log(100) + np.concatenate(([0.0], np.cumsum(r))), volume)
    p = ForestParams(horizon=1, n_estimators=50)
    ft = fit_time(c.last_close_time, p.every_ms)
    fit = fit_forest(c.closed_by(ft), p, ft)
    assert fit.oos_accuracy > 0.9 and fit.oos_rows == 250
    window = c.tail(500)
    high, low = (Candles(window.time, window.open, window.high, window.low, window.close,
                         np.concatenate((window.volume[:-1], [v])), interval_ms=HOUR_MS) for v in (np.e**3, np.e))
    up, down = forest_signal(fit, high, p), forest_signal(fit, low, p)
    assert up.p_up > 0.8 and down.p_up < 0.2
    assert up.top_features[0] == "volume_z_48"
    assert up.label.startswith("favours up") and "validated" in up.label


def test_a_sine_wave_is_called_up_on_its_rising_side_and_down_on_its_falling_side():
    # period 64 bars: rising through phase 0, falling through phase 32; the 4-bar-ahead sign is
    # predictable from past returns except within a few bars of the turns
    n, rng = 2432, np.random.default_rng(6)
    i = np.arange(n)
    c = _candles(np.log(100) + 0.03 * np.sin(2 * np.pi * i / 64) + 0.001 * rng.standard_normal(n))
    p = ForestParams(n_estimators=50)
    fit = fit_forest(c, p, c.last_close_time)
    assert fit.oos_accuracy > 0.85
    rising = forest_signal(fit, c.closed_by(int(c.close_time[n - 64])), p)  # bar n - 64 is at phase 0
    falling = forest_signal(fit, c.closed_by(int(c.close_time[n - 32])), p)  # phase 32
    assert rising.p_up > 0.8 and falling.p_up < 0.2


def test_pure_noise_gives_out_of_sample_accuracy_near_one_half():
    # 1000 fold rows with 4-bar overlapping labels: the accuracy's spread is about 0.03, so 0.08 is ~2.5 sd
    c = _noise(3000, 7)
    p = ForestParams(train_bars=3000, validation_rows=1000, n_estimators=50)
    res = THEORY(_ctx(c, c.last_close_time), p)
    assert res.oos_rows == 1000
    assert abs(res.oos_accuracy - 0.5) <= 0.08
    assert abs(res.oos_base_rate - 0.5) <= 0.08
    assert 0.25 < res.p_up < 0.75


def test_altering_candles_after_the_decision_time_leaves_the_result_unchanged():
    c = _noise(2600, 8)
    at = int(c.close_time[2400])  # a decision in the middle of a fit period
    assert at % DAY_MS != 0
    future = c.time > at - HOUR_MS
    lc = np.log(c.close) + np.where(future, 0.5, 0.0)  # a huge jump after the decision
    altered = _candles(lc, np.where(future, c.volume * 50, c.volume))
    p = ForestParams(**FAST)
    assert THEORY(_ctx(c, at), p) == THEORY(_ctx(altered, at), p)


def test_altering_candles_between_the_fit_and_the_decision_leaves_the_fitted_model_unchanged():
    c = _noise(2600, 9)
    at = int(c.close_time[2400])
    ft = fit_time(at, DAY_MS)
    after_fit = c.time + HOUR_MS > ft
    assert 0 < after_fit[: 2401].sum() < 24  # some bars closed after the fit time but by the decision
    altered = _candles(np.log(c.close) + np.where(after_fit, 0.2, 0.0), c.volume)
    p = ForestParams(**FAST)
    a, b = THEORY(_ctx(c, at), p), THEORY(_ctx(altered, at), p)  # no cache: two independent fits
    assert _fit_fields(a) == _fit_fields(b) and a.fitted_at == ft
    assert a.p_up != b.p_up  # the prediction does read the newest bars


def test_training_rows_never_include_labels_ending_after_the_fit_time(monkeypatch):
    seen = []

    def spy(candles, horizon):
        ts = training_set(candles, horizon)
        seen.append(ts)
        return ts

    monkeypatch.setattr(forest, "training_set", spy)
    c = _noise(2600, 10)
    at = int(c.close_time[2410])
    ft = fit_time(at, ForestParams().every_ms)
    THEORY(_ctx(c, at), ForestParams(**FAST))
    assert len(seen) == 1
    assert seen[0].label_end_ms.max() == ft < at  # every label known by the fit time, and all of them used


def test_the_fit_is_cached_within_its_period_and_refit_after_it():
    c = _noise(2700, 11)
    cache = FitCache()
    p = ForestParams(**FAST)
    period = p.every_ms  # the default schedule
    day = fit_time(int(c.close_time[2400]), period)
    first = THEORY(_ctx(c, day + 3 * HOUR_MS, cache), p)
    second = THEORY(_ctx(c, day + 9 * HOUR_MS, cache), p)
    assert (cache.misses, cache.hits) == (1, 1)
    assert _fit_fields(first) == _fit_fields(second) and first.fitted_at == day
    third = THEORY(_ctx(c, day + period + HOUR_MS, cache), p)
    assert (cache.misses, cache.hits) == (2, 1)
    assert third.fitted_at == day + period


def test_too_little_history_is_an_error_and_is_not_refit_on_every_call():
    c = _noise(700, 12)
    cache = FitCache()
    for _ in range(2):
        with pytest.raises(TheoryError, match="labelled rows"):
            THEORY(_ctx(c, c.last_close_time, cache))
    assert (cache.misses, cache.hits) == (1, 1)


def test_a_series_that_only_rises_has_nothing_to_learn():
    rng = np.random.default_rng(13)
    c = _candles(np.log(100) + np.cumsum(rng.uniform(0.001, 0.01, 1500)))
    with pytest.raises(TheoryError, match="all one side"):
        fit_forest(c, ForestParams(**FAST), c.last_close_time)


def test_fit_refuses_candles_closed_after_the_fit_time():
    c = _noise(1500, 14)
    with pytest.raises(ValueError, match="closed by the fit time"):
        fit_forest(c, ForestParams(**FAST), c.last_close_time - HOUR_MS)


def test_theory_runs_on_real_hourly_data(shared_data):
    df = pd.read_csv(shared_data / "candles" / "binance-spot-1h" / "BTC_USDT.csv.gz").tail(2000)
    history = Candles(
        df.time.to_numpy(), df.open, df.high, df.low, df.close, df.volume, interval_ms=HOUR_MS, symbol="BTC/USDT"
    )
    at = history.last_close_time
    ctx = TheoryContext(symbol="BTC/USDT", at_ms=at, candles=history.tail(500), history=history, cache=FitCache())
    res = THEORY(ctx)
    assert 0 <= res.p_up <= 1 and res.horizon == 4
    assert res.oos_rows == 250 and 0 <= res.oos_accuracy <= 1
    assert res.oos_edge == pytest.approx(res.oos_accuracy - max(res.oos_base_rate, 1 - res.oos_base_rate))
    assert set(res.top_features) <= set(FEATURES) and len(res.top_features) == 4
    assert list(res.top_importances) == sorted(res.top_importances, reverse=True)
    assert res.fitted_at == fit_time(at, ForestParams().every_ms) <= at
    assert res.train_rows > 1000
    assert "P(up" in res.summary()


def test_params_keep_the_strong_threshold_beyond_the_lean_one():
    with pytest.raises(ValueError, match="strong_p"):
        ForestParams(lean_p=0.6, strong_p=0.55)
