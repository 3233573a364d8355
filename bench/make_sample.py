"""Rebuild the bundled sample in agent/data/sample from ../shared/data (see SOURCE.md there).

Copies the last ROWS rows of each pair verbatim (text unchanged) and gzips with a fixed mtime,
so a rebuild from the same data gives byte-identical files.
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT.parent / "shared" / "data" / "candles" / "binance-spot-1h"
TARGET = ROOT / "agent" / "data" / "sample" / "binance-spot-1h"
PAIRS = ("BTC_USDT", "ETH_USDT", "SOL_USDT", "XRP_USDT", "ADA_USDT")
ROWS = 90 * 24


def main() -> int:
    if not SOURCE.is_dir():
        print(f"no shared data at {SOURCE}", file=sys.stderr)
        return 1
    TARGET.mkdir(parents=True, exist_ok=True)
    for pair in PAIRS:
        with gzip.open(SOURCE / f"{pair}.csv.gz", "rt") as f:
            header, *rows = f.read().splitlines()
        with gzip.GzipFile(TARGET / f"{pair}.csv.gz", "wb", mtime=0) as out:
            out.write(("\n".join([header, *rows[-ROWS:]]) + "\n").encode())
        print(f"{pair}: {ROWS} rows")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
