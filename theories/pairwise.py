"""numpy's pairwise summation, compiled: a compiled loop that adds in numpy's order gets numpy's bits.

`x.sum()` of a float64 array, and each row of `x.sum(axis=-1)`, adds blocks of at most 128 values
with eight interleaved partial sums, and halves longer runs (at a multiple of 8) and adds the two
halves' sums (numpy's `pairwise_sum` in loops_utils.h). `np.add.reduceat` starts a segment at its
first value and adds the pairwise sum of the rest; `sample_std` is `np.std(ddof=1)` on those sums.
The theories' compiled loops use these to stay bit for bit with the numpy formulation they replace
(the tests compare them on real data).
"""

from __future__ import annotations

import math

import numpy as np

from theories.jit import compiled


@compiled
def _block_sum(a: np.ndarray, lo: int, n: int) -> float:
    # on a view, indexed from 0 by range loops: numba then knows no index is negative and skips the
    # wraparound checks that kept these loops ~2x slower
    v = a[lo : lo + n]
    if n < 8:
        total = 0.0
        for i in range(n):
            total += v[i]
        return total
    r0, r1, r2, r3, r4, r5, r6, r7 = v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]
    end8 = n - n % 8
    for i in range(8, end8, 8):
        r0 += v[i]
        r1 += v[i + 1]
        r2 += v[i + 2]
        r3 += v[i + 3]
        r4 += v[i + 4]
        r5 += v[i + 5]
        r6 += v[i + 6]
        r7 += v[i + 7]
    total = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    for i in range(end8, n):
        total += v[i]
    return total


@compiled
def pairwise_sum(a: np.ndarray, lo: int, n: int) -> float:
    """a[lo:lo + n].sum() in numpy's order (1-d float64 `a`)."""
    if n <= 128:
        return _block_sum(a, lo, n)
    # numpy recurses: sum(first half) + sum(second half). numba cannot cache a recursive function, so the
    # same tree is walked with explicit stacks: a task is split (halves pushed right first, so the left
    # one's sum is found first) or, marked by a negative length, combines the two sums on top
    task_lo = np.empty(128, np.int64)
    task_n = np.empty(128, np.int64)
    sums = np.empty(64)
    tasks, found = 1, 0
    task_lo[0], task_n[0] = lo, n
    while tasks:
        tasks -= 1
        start, count = task_lo[tasks], task_n[tasks]
        if count < 0:
            found -= 1
            sums[found - 1] += sums[found]
        elif count <= 128:
            sums[found] = _block_sum(a, start, count)
            found += 1
        else:
            half = count // 2
            half -= half % 8
            task_lo[tasks], task_n[tasks] = start, -1
            task_lo[tasks + 1], task_n[tasks + 1] = start + half, count - half
            task_lo[tasks + 2], task_n[tasks + 2] = start, half
            tasks += 3
    return sums[0]


@compiled
def sample_std(x, end, n, squares):
    """`np.std(x[end - n : end], ddof=1)` bit for bit: numpy's reductions start from 0.0 and sum in
    `pairwise_sum`'s order; the squared deviations go to the same places of `squares` (as long as x).

    (Arguments are never constants at the call sites: numba would compile a copy per constant.)
    """
    start = end - n
    mean = (0.0 + pairwise_sum(x, start, n)) / n
    for i in range(start, end):
        d = x[i] - mean
        squares[i] = d * d
    return math.sqrt((0.0 + pairwise_sum(squares, start, n)) / (n - 1))
