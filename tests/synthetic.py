"""Seeded generators of series with known properties, shared by the theory tests.

Each takes an explicit `numpy.random.Generator`, so a test states its seed and stays reproducible.
"""

from __future__ import annotations

import numpy as np


def fgn_autocovariance(k: np.ndarray, hurst: float) -> np.ndarray:
    """Autocovariance of unit-variance fractional Gaussian noise at integer lags k:
    gamma(k) = 0.5 (|k + 1|^2H - 2 |k|^2H + |k - 1|^2H) (Mandelbrot & Van Ness 1968)."""
    k = np.abs(np.asarray(k, dtype=np.float64))
    h2 = 2.0 * hurst
    return 0.5 * (np.abs(k + 1) ** h2 - 2.0 * k**h2 + np.abs(k - 1) ** h2)


def fgn(n: int, hurst: float, rng: np.random.Generator, size: int | None = None) -> np.ndarray:
    """Exact fractional Gaussian noise (unit variance, mean 0) by circulant embedding (Davies & Harte 1987).

    The n x n Toeplitz covariance is embedded in a 2n x 2n circulant whose eigenvalues are the FFT of
    its first row. With complex white noise w, Re(FFT(sqrt(lambda / 2n) w)) has exactly the circulant
    covariance, so its first n values have exactly the fGn covariance. The eigenvalues are
    non-negative for fGn at every H in (0, 1); a negative one would make the method inexact, so it raises.
    With `size`, returns `size` independent series as rows of a (size, n) array.
    """
    if not 0.0 < hurst < 1.0:
        raise ValueError(f"hurst must lie in (0, 1), got {hurst}")
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    gamma = fgn_autocovariance(np.arange(n + 1), hurst)
    row = np.concatenate((gamma, gamma[-2:0:-1]))  # gamma(0..n), gamma(n-1..1): length 2n
    m = len(row)
    lam = np.fft.fft(row).real
    if lam.min() < -1e-10 * lam.max():
        raise ValueError(f"circulant embedding has a negative eigenvalue ({lam.min():.3g}) for n={n}, H={hurst}")
    lam = np.clip(lam, 0.0, None)
    shape = (m,) if size is None else (size, m)
    w = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    return np.fft.fft(np.sqrt(lam / m) * w, axis=-1).real[..., :n]
