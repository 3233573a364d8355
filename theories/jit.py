"""numba compilation for the theories' hot loops, with its machine code cached on disk.

A theory whose per-snapshot cost is a tight loop over bars or paths may compile that loop; the
evals replay computes 87,600 snapshots a year, so microseconds matter there. The compiled code is
cached next to the module (or where NUMBA_CACHE_DIR says): a fresh process then loads it in a
fraction of a second instead of compiling for seconds.
"""

from __future__ import annotations

from collections.abc import Callable

from numba import njit


def compiled(function: Callable) -> Callable:
    """`function` compiled by numba (nopython, no GIL held), cached on disk. Where numba finds no
    writable place for the cache, it is compiled in each process instead of failing the import."""
    try:
        return njit(cache=True, nogil=True)(function)
    except RuntimeError:  # numba: "cannot cache function ...: no locator available"
        return njit(nogil=True)(function)
