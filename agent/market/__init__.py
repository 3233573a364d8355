"""Market data at the edge: candle files (CSV, CSV.gz, Parquet) and the bundled offline sample."""

from agent.market.loaders import (
    SAMPLE_DIR,
    bundled_sample,
    load_candle_file,
    load_candles,
    parse_symbols,
    symbol_from_path,
)

__all__ = [
    "SAMPLE_DIR",
    "bundled_sample",
    "load_candle_file",
    "load_candles",
    "parse_symbols",
    "symbol_from_path",
]
