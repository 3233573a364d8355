"""Load perpetual funding rates from files into validated `FundingRates`.

Two formats (see `../shared/data/README.md`):
- `time,rate` CSV (optionally gzip), one file per pair named like the candles (`BTC_USDT.csv.gz` is
  `BTC/USDT`): `time` the settlement time in UTC epoch ms, `rate` the fraction per interval.
  This is the Binance USD-M set and the bundled sample (`agent/data/sample/funding/`).
- `Symbol,Date,Funding Rate` CSV from supervik/historical-funding-rates-fetcher, named
  `<BASE>-<QUOTE>_<exchange>_<from>_<to>_funding_history.csv`. Its dates carry no zone: the Binance,
  Bybit, MEXC, HTX and KuCoin files are in UTC+3 and Gate and dYdX in UTC (dYdX settles hourly), so
  the exchange in the file name decides the offset; an unknown exchange is an error, never a guess.

A file with a header and no rows is legal and gives an empty `FundingRates` (the shared Binance set
has such files for SOL and DOGE): the strategy then reports that no rate is known. Every other
problem is a `FundingDataError` naming the file, the row and the rule.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from agent.market.loaders import parse_symbols
from theories.funding import FundingDataError, FundingRates

SAMPLE_FUNDING_DIR = Path(__file__).resolve().parent.parent / "data" / "sample" / "funding" / "binance-usdm"
HOUR_MS = 3_600_000
# Hours to subtract from the zone-less dates of the multi-exchange files to reach UTC.
MULTI_EXCHANGE_UTC_OFFSET_H = {"binance": 3, "bybit": 3, "mexc": 3, "htx": 3, "kucoin": 3, "gate": 0, "dydx": 0}
SUFFIXES = (".csv.gz", ".csv")


def _read(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, skipinitialspace=True, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise FundingDataError(str(path), None, "the file is empty (not even a header)") from None
    except (OSError, EOFError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise FundingDataError(str(path), None, "not a readable CSV file", str(exc)) from None
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    return frame


def _numbers(path: Path, frame: pd.DataFrame, column: str) -> np.ndarray:
    values = pd.to_numeric(frame[column], errors="coerce")
    bad = values.isna().to_numpy()
    if bad.any():
        i = int(np.argmax(bad))
        cell = frame[column].iloc[i]
        raise FundingDataError(str(path), i + 1, f"{column} must be a number", f"got {cell!r}" if cell else "empty")
    return values.to_numpy()


def _multi_exchange(path: Path, frame: pd.DataFrame) -> tuple[str, np.ndarray, np.ndarray]:
    parts = path.name.split("_")
    exchange = parts[1].lower() if len(parts) > 1 else ""
    if exchange not in MULTI_EXCHANGE_UTC_OFFSET_H:
        raise FundingDataError(
            str(path), None, f"unknown exchange {exchange!r} in the file name: its time zone is not known",
            f"known: {sorted(MULTI_EXCHANGE_UTC_OFFSET_H)}",
        )
    symbols = frame["symbol"].unique()
    if len(symbols) > 1:
        raise FundingDataError(str(path), None, "one pair per file expected", f"found {list(symbols)[:5]}")
    symbol = (symbols[0] if len(symbols) else parts[0]).replace("-", "/").upper()
    dates = pd.to_datetime(frame["date"], errors="coerce", format="mixed")
    bad = dates.isna().to_numpy()
    if bad.any():
        i = int(np.argmax(bad))
        raise FundingDataError(str(path), i + 1, "date must be a date and time", f"got {frame['date'].iloc[i]!r}")
    local_ms = dates.to_numpy().astype("datetime64[ms]").astype(np.int64)
    time = local_ms - MULTI_EXCHANGE_UTC_OFFSET_H[exchange] * HOUR_MS
    return symbol, time, _numbers(path, frame, "funding rate")


def load_funding_file(path: str | Path, symbol: str | None = None) -> FundingRates:
    """One funding file (either format) -> `FundingRates`. Raises `FundingDataError`."""
    path = Path(path)
    if not path.is_file():
        raise FundingDataError(str(path), None, "no such funding file")
    if not path.name.endswith(SUFFIXES):
        raise FundingDataError(str(path), None, f"unknown funding file type; expected one of {SUFFIXES}")
    frame = _read(path)
    if {"time", "rate"} <= set(frame.columns):
        name = path.name.removesuffix(".gz").removesuffix(".csv")
        found = name.replace("_", "/").upper()
        time, rate = _numbers(path, frame, "time"), _numbers(path, frame, "rate")
    elif {"symbol", "date", "funding rate"} <= set(frame.columns):
        found, time, rate = _multi_exchange(path, frame)
    else:
        raise FundingDataError(
            str(path), None, "unknown funding columns",
            f"header has {list(frame.columns)}; expected time,rate or Symbol,Date,Funding Rate",
        )
    return FundingRates(time, rate, symbol=symbol or found, source=str(path))


def load_funding(path: str | Path | None = None, symbols: Iterable[str] | None = None) -> dict[str, FundingRates]:
    """A folder of `time,rate` files (or one file) -> {symbol: FundingRates}; no path: the bundled sample.

    `symbols` keeps only those (`BTC`, `BTC/USDT`); one that is not there is a KeyError naming what is.
    """
    root = Path(path) if path is not None else SAMPLE_FUNDING_DIR
    if root.is_dir():
        files = sorted(p for p in root.iterdir() if p.is_file() and p.name.endswith(SUFFIXES))
        if not files:
            raise FundingDataError(str(root), None, f"the folder holds no funding files ({', '.join(SUFFIXES)})")
    elif root.exists():
        files = [root]
    else:
        raise FundingDataError(str(root), None, "no such file or folder")
    loaded = [load_funding_file(p) for p in files]
    by_symbol: dict[str, FundingRates] = {}
    for rates in loaded:
        if rates.symbol in by_symbol:
            first = by_symbol[rates.symbol].source
            raise FundingDataError(rates.source, None, f"a second file for {rates.symbol}", f"first: {first}")
        by_symbol[rates.symbol] = rates
    wanted = parse_symbols(symbols, by_symbol) if symbols else list(by_symbol)
    return {s: by_symbol[s] for s in wanted}
