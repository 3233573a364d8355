"""Load candles from files into validated `Candles`.

Format (see `../shared/data/README.md`): CSV, optionally gzip, header
`time,open,high,low,close,volume`, `time` the candle's open time in UTC epoch ms, prices in the
quote currency, volume in base units; or Parquet with the same columns (`time` may also be a
timestamp column). The symbol comes from the file name: `BTC_USDT.csv.gz` is `BTC/USDT`.

Every problem is reported as a `CandleDataError` naming the file, the row and the rule.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from theories.candles import CandleDataError, Candles

COLUMNS = ("time", "open", "high", "low", "close", "volume")
SUFFIXES = (".csv.gz", ".csv", ".parquet")
SAMPLE_DIR = Path(__file__).resolve().parent.parent / "data" / "sample" / "binance-spot-1h"


def symbol_from_path(path: Path) -> str:
    """`.../BTC_USDT.csv.gz` -> `BTC/USDT` (ccxt's spelling of a pair)."""
    name = path.name
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return name.replace("_", "/").upper()


def _is_candle_file(path: Path) -> bool:
    return path.is_file() and path.name.endswith(SUFFIXES)


def _read_csv(path: Path) -> dict[str, np.ndarray]:
    try:
        frame = pd.read_csv(path, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise CandleDataError(str(path), None, "the file is empty") from None
    except (OSError, EOFError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise CandleDataError(str(path), None, "not a readable CSV file", str(exc)) from None
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise CandleDataError(
            str(path), None, f"missing columns {missing}", f"header has {list(frame.columns)}; expected {list(COLUMNS)}"
        )
    if frame.empty:
        raise CandleDataError(str(path), None, "the file holds no candles")
    out = {}
    for name in COLUMNS:
        column = frame[name]
        if column.dtype.kind in "iuf" and not column.isna().any():
            out[name] = column.to_numpy()
            continue
        # slow path, only for a broken column: find the first cell that is not a number
        values = pd.to_numeric(column, errors="coerce")
        bad = values.isna().to_numpy()
        i = int(np.argmax(bad))
        shown = "an empty cell" if pd.isna(column.iloc[i]) else repr(str(column.iloc[i]))
        raise CandleDataError(str(path), i + 1, f"{name} must be a number", f"got {shown}")
    return out


def _read_parquet(path: Path) -> dict[str, np.ndarray]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise CandleDataError(str(path), None, "not a readable Parquet file", str(exc)) from None
    names = {n.lower(): n for n in table.column_names}
    missing = [c for c in COLUMNS if c not in names]
    if missing:
        raise CandleDataError(str(path), None, f"missing columns {missing}", f"columns are {table.column_names}")
    out = {}
    for name in COLUMNS:
        col = table.column(names[name])
        if name == "time" and pa.types.is_timestamp(col.type):
            col = col.cast(pa.timestamp("ms", tz=col.type.tz)).cast(pa.int64())
        arr = col.to_numpy(zero_copy_only=False)
        if arr.dtype == object:
            bad = np.array([v is None for v in arr])
            i = int(np.argmax(bad)) if bad.any() else 0
            raise CandleDataError(str(path), i + 1, f"{name} must be a number", "got a null value")
        out[name] = arr
    return out


def load_candle_file(path: str | Path, symbol: str | None = None, interval_ms: int | None = None) -> Candles:
    """One file -> `Candles`. Raises `CandleDataError` naming the file, row and rule."""
    path = Path(path)
    if not path.is_file():
        raise CandleDataError(str(path), None, "no such candle file")
    if path.name.endswith(".parquet"):
        cols = _read_parquet(path)
    elif path.name.endswith((".csv", ".csv.gz")):
        cols = _read_csv(path)
    else:
        raise CandleDataError(str(path), None, f"unknown candle file type; expected one of {SUFFIXES}")
    if not len(cols["time"]):
        raise CandleDataError(str(path), None, "the file holds no candles")
    return Candles(
        cols["time"], cols["open"], cols["high"], cols["low"], cols["close"], cols["volume"],
        interval_ms=interval_ms, symbol=symbol or symbol_from_path(path), source=str(path),
    )


def load_candles(path: str | Path | None = None, symbols: Iterable[str] | None = None) -> dict[str, Candles]:
    """A candle file or a folder of them -> {symbol: Candles}; no path means the bundled sample.

    `symbols` keeps only those (as `BTC/USDT` or just `BTC`); a requested symbol that is not
    there is an error naming what is.
    """
    root = Path(path) if path is not None else SAMPLE_DIR
    if root.is_dir():
        files = sorted(p for p in root.iterdir() if _is_candle_file(p))
        if not files:
            raise CandleDataError(str(root), None, f"the folder holds no candle files ({', '.join(SUFFIXES)})")
    elif root.exists():
        files = [root]
    else:
        raise CandleDataError(str(root), None, "no such file or folder")
    available = {symbol_from_path(p): p for p in files}
    wanted = parse_symbols(symbols, available) if symbols else list(available)
    return {s: load_candle_file(available[s], symbol=s) for s in wanted}


def parse_symbols(requested: Iterable[str], available: Iterable[str]) -> list[str]:
    """Resolve `BTC`, `btc/usdt` or `BTC_USDT` against the available symbols, keeping order.

    Raises `KeyError` naming the symbol and what is available.
    """
    available = list(available)
    out = []
    for raw in requested:
        key = raw.strip().upper().replace("_", "/")
        if not key:
            continue
        matches = [s for s in available if s == key or s.split("/")[0] == key]
        if len(matches) != 1:
            why = "is ambiguous" if matches else "is not in the data"
            raise KeyError(f"symbol {raw!r} {why}; available: {', '.join(available) or 'none'}")
        if matches[0] not in out:
            out.append(matches[0])
    return out


def bundled_sample(symbols: Iterable[str] | None = None) -> dict[str, Candles]:
    """The real hourly candles shipped with the package (see `agent/data/sample/SOURCE.md`)."""
    return load_candles(SAMPLE_DIR, symbols)
