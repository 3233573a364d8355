import numpy as np
import pytest

from theories.pairwise import pairwise_sum


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 24, 127, 128, 129, 257, 499, 1000, 4099])
def test_pairwise_sum_is_numpys_sum_bit_for_bit(n):
    rng = np.random.default_rng(n)
    # magnitudes over six decades, so any other order of additions shows in the last bits
    x = rng.standard_normal(n + 5) * 10.0 ** rng.uniform(-3, 3, n + 5)
    for lo in (0, 3, 5):
        assert pairwise_sum(x, lo, n) == x[lo : lo + n].sum()
    rows = np.lib.stride_tricks.sliding_window_view(x[: n + 3], max(n, 1)).sum(axis=1)
    assert [pairwise_sum(x, i, max(n, 1)) for i in range(len(rows))] == rows.tolist()
