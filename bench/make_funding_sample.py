"""Rebuild the bundled funding sample in agent/data/sample/funding/binance-usdm from ../shared/data.

For each bundled candle pair, copies verbatim (row text unchanged) the Binance USD-M funding rows
settled from 16 h before the first bundled candle opens (so the first decision already knows a
rate) to the close of the last bundled candle, and gzips with a fixed mtime so a rebuild from the
same data is byte-identical. A pair whose source file holds no rows (SOL in the shared set) gets
no file, and says so.
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT.parent / "shared" / "data" / "funding" / "binance-usdm"
CANDLES = ROOT / "agent" / "data" / "sample" / "binance-spot-1h"
TARGET = ROOT / "agent" / "data" / "sample" / "funding" / "binance-usdm"
PAIRS = ("BTC_USDT", "ETH_USDT", "SOL_USDT", "XRP_USDT", "ADA_USDT")
HOUR_MS = 3_600_000
LEAD_MS = 16 * HOUR_MS  # two 8 h intervals: the funding strategy's default staleness limit


def _candle_span(pair: str) -> tuple[int, int]:
    with gzip.open(CANDLES / f"{pair}.csv.gz", "rt") as f:
        rows = f.read().splitlines()[1:]
    return int(rows[0].split(",")[0]), int(rows[-1].split(",")[0]) + HOUR_MS


def main() -> int:
    if not SOURCE.is_dir():
        print(f"no shared funding data at {SOURCE}", file=sys.stderr)
        return 1
    TARGET.mkdir(parents=True, exist_ok=True)
    for pair in PAIRS:
        first_open, last_close = _candle_span(pair)
        with gzip.open(SOURCE / f"{pair}.csv.gz", "rt") as f:
            header, *rows = f.read().splitlines()
        kept = [r for r in rows if first_open - LEAD_MS <= int(r.split(",")[0]) <= last_close]
        if not kept:
            print(f"{pair}: the source holds no funding rows for the sample span: no file written")
            (TARGET / f"{pair}.csv.gz").unlink(missing_ok=True)
            continue
        with gzip.GzipFile(TARGET / f"{pair}.csv.gz", "wb", mtime=0) as out:
            out.write(("\n".join([header, *kept]) + "\n").encode())
        print(f"{pair}: {len(kept)} rows")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
