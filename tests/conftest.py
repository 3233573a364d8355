"""Shared fixtures: where the real data lives, and a clean skip when it is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data` beside the checkout; tests that need it skip, saying why, when it is absent."""
    if not (SHARED_DATA / "candles").is_dir():
        pytest.skip(f"real market data not found at {SHARED_DATA} (it sits beside the checkout in CI)")
    return SHARED_DATA
