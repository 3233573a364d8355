import numpy as np
import pytest

from theories.indicators import atr, ema, percentile_rank, rolling_std, sma, true_range


def test_ema_matches_its_recursion():
    x = np.random.default_rng(0).normal(100, 5, 300)
    got = ema(x, 10)
    a = 2 / 11
    y = x[0]
    for t in range(1, len(x)):
        y = a * x[t] + (1 - a) * y
        if t >= 9:
            assert got[t] == pytest.approx(y, rel=1e-12)
    assert np.isnan(got[:9]).all()


def test_sma_and_rolling_std_match_direct_windows():
    x = np.arange(1.0, 21.0) ** 1.5
    assert sma(x, 5)[10] == pytest.approx(x[6:11].mean())
    assert rolling_std(x, 5)[10] == pytest.approx(x[6:11].std(ddof=1))
    assert np.isnan(sma(x, 5)[3]) and np.isnan(rolling_std(x, 5)[3])


def test_true_range_covers_gaps_from_previous_close():
    high = np.array([10.0, 12.0, 9.0])
    low = np.array([9.0, 11.0, 8.0])
    close = np.array([9.5, 11.5, 8.5])
    # bar 1 gaps up: TR = 12 - 9.5; bar 2 gaps down: TR = 11.5 - 8
    assert true_range(high, low, close).tolist() == [1.0, 2.5, 3.5]


def test_wilder_atr_known_values():
    high = np.array([10, 11, 12, 13, 14], float)
    low = high - 1
    close = high - 0.5
    out = atr(high, low, close, n=3)
    # TRs: 1, 1.5, 1.5, 1.5, 1.5; seed = mean(1, 1.5, 1.5); then Wilder: (prev*2 + tr)/3
    seed = (1 + 1.5 + 1.5) / 3
    assert out[2] == pytest.approx(seed)
    assert out[3] == pytest.approx((seed * 2 + 1.5) / 3)
    assert out[4] == pytest.approx((out[3] * 2 + 1.5) / 3)


def test_percentile_rank_counts_at_or_below():
    assert percentile_rank(np.array([1.0, 2, 3, 4, np.nan]), 2.0) == 0.5


def test_ema_and_atr_are_scipys_linear_filter_to_the_bit_on_real_data(shared_data):
    from scipy.signal import lfilter

    from agent.market import load_candle_file

    c = load_candle_file(shared_data / "candles" / "binance-spot-1h" / "ETH_USDT.csv.gz").tail(5000)
    for span in (9, 48, 50):
        a = 2.0 / (span + 1)
        y, _ = lfilter([a], [1.0, a - 1.0], c.close[1:], zi=(1 - a) * c.close[:1])
        want = np.concatenate((c.close[:1], y))
        want[: span - 1] = np.nan
        np.testing.assert_array_equal(ema(c.close, span), want)
        rows = np.stack((c.close[-500:], c.high[-500:], c.low[-500:]))  # one series per row, each as alone
        np.testing.assert_array_equal(ema(rows, span), np.stack([ema(r, span) for r in rows]))
    for n in (14, 20):
        tr = true_range(c.high, c.low, c.close)
        seed = tr[:n].mean()
        y, _ = lfilter([1.0 / n], [1.0, 1.0 / n - 1.0], tr[n:], zi=[(1 - 1.0 / n) * seed])
        want = np.concatenate((np.full(n - 1, np.nan), [seed], y))
        np.testing.assert_array_equal(atr(c.high, c.low, c.close, n), want)


@pytest.mark.parametrize("n", [1, 3, 7, 8, 9, 14, 20, 130, 300])
def test_atr_is_the_numpy_formulation_to_the_bit(n):
    rng = np.random.default_rng(n)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 700)))
    high = close * (1 + rng.uniform(0, 0.01, 700))
    low = close * (1 - rng.uniform(0, 0.01, 700))
    for m in (0, n - 1, n, n + 1, 700):
        if m < 1:
            assert len(atr(high[:m], low[:m], close[:m], n)) == 0
            continue
        got = atr(high[:m], low[:m], close[:m], n)
        tr = true_range(high[:m], low[:m], close[:m])
        want = np.full(m, np.nan)
        if m >= n:
            y = tr[:n].mean()
            want[n - 1] = y
            for t in range(n, m):
                y = (1 - 1 / n) * y + (1 / n) * tr[t]
                want[t] = y
        np.testing.assert_array_equal(got, want)
