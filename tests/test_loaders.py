import gzip

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from agent.market import SAMPLE_DIR, bundled_sample, load_candle_file, load_candles, parse_symbols, symbol_from_path
from theories.candles import HOUR_MS, CandleDataError

HEADER = "time,open,high,low,close,volume\n"
GOOD = [
    "1700000000000,10,11,9,10.5,3\n",
    "1700003600000,10.5,11.5,10,11,4\n",
    "1700007200000,11,12,10.5,11.5,5\n",
]


def write(path, rows, header=HEADER, gz=False):
    text = header + "".join(rows)
    if gz:
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    return path


def test_csv_and_csv_gz_load_to_the_same_candles(tmp_path):
    a = load_candle_file(write(tmp_path / "BTC_USDT.csv", GOOD))
    b = load_candle_file(write(tmp_path / "BTC_USDT.csv.gz", GOOD, gz=True))
    assert a.symbol == b.symbol == "BTC/USDT"
    for col in ("time", "open", "high", "low", "close", "volume"):
        assert np.array_equal(getattr(a, col), getattr(b, col))
    assert a.time.dtype == np.int64 and a.interval_ms == HOUR_MS
    assert a.close.tolist() == [10.5, 11.0, 11.5]


def test_parquet_with_int_or_timestamp_time_loads_the_same(tmp_path):
    ref = load_candle_file(write(tmp_path / "ETH_USDT.csv", GOOD))
    cols = {c: getattr(ref, c) for c in ("open", "high", "low", "close", "volume")}
    pq.write_table(pa.table({"time": ref.time, **cols}), tmp_path / "ETH_USDT.parquet")
    stamps = pa.array(ref.time * 1000, type=pa.timestamp("us", tz="UTC"))
    pq.write_table(pa.table({"time": stamps, **cols}), tmp_path / "SOL_USDT.parquet")
    for name in ("ETH_USDT.parquet", "SOL_USDT.parquet"):
        got = load_candle_file(tmp_path / name)
        assert np.array_equal(got.time, ref.time) and np.array_equal(got.close, ref.close)


def test_a_non_numeric_cell_names_file_row_and_column(tmp_path):
    rows = [*GOOD[:2], "1700007200000,11,12,oops,11.5,5\n"]
    with pytest.raises(CandleDataError, match=r"XRP_USDT.csv row 3: low must be a number \(got 'oops'\)"):
        load_candle_file(write(tmp_path / "XRP_USDT.csv", rows))


def test_times_in_seconds_are_rejected_not_read_as_1970(tmp_path):
    rows = ["1700000000,10,11,9,10.5,3\n", "1700003600,10.5,11.5,10,11,4\n"]
    with pytest.raises(CandleDataError, match="row 1: time must be UTC epoch milliseconds between 2000 and 2100"):
        load_candle_file(write(tmp_path / "BTC_USDT.csv", rows))


def test_a_rule_violation_in_a_file_names_the_file(tmp_path):
    rows = [GOOD[0], "1700003600000,10.5,10.6,10,11,4\n"]  # high below close
    with pytest.raises(CandleDataError) as err:
        load_candle_file(write(tmp_path / "ADA_USDT.csv", rows))
    assert err.value.source.endswith("ADA_USDT.csv") and err.value.row == 2
    assert err.value.rule == "high must be >= max(open, close)"


@pytest.mark.parametrize(
    ("content", "message"),
    [("", "the file is empty"), (HEADER, "holds no candles"), ("time,open,close\n1,2,3\n", "missing columns")],
)
def test_empty_or_headerless_files_are_clear_errors(tmp_path, content, message):
    p = tmp_path / "BAD_USDT.csv"
    p.write_text(content)
    with pytest.raises(CandleDataError, match=message):
        load_candle_file(p)


def test_corrupt_gzip_is_a_clear_error(tmp_path):
    p = tmp_path / "BAD_USDT.csv.gz"
    p.write_bytes(b"not gzip at all")
    with pytest.raises(CandleDataError, match="not a readable CSV file"):
        load_candle_file(p)


def test_a_folder_loads_every_candle_file_and_symbols_select(tmp_path):
    write(tmp_path / "BTC_USDT.csv", GOOD)
    write(tmp_path / "ETH_USDT.csv.gz", GOOD, gz=True)
    (tmp_path / "notes.txt").write_text("ignored")
    assert sorted(load_candles(tmp_path)) == ["BTC/USDT", "ETH/USDT"]
    assert list(load_candles(tmp_path, ["eth"])) == ["ETH/USDT"]
    with pytest.raises(KeyError, match="'DOGE' is not in the data; available: BTC/USDT, ETH/USDT"):
        load_candles(tmp_path, ["DOGE"])
    with pytest.raises(CandleDataError, match="no such file or folder"):
        load_candles(tmp_path / "missing")


def test_symbol_names_follow_the_file_names():
    from pathlib import Path

    assert symbol_from_path(Path("x/btc_usdt.csv.gz")) == "BTC/USDT"
    assert parse_symbols(["BTC", "ETH/USDT", "btc_usdt"], ["BTC/USDT", "ETH/USDT"]) == ["BTC/USDT", "ETH/USDT"]


def test_bundled_sample_is_90_days_of_five_real_pairs_without_gaps():
    sample = bundled_sample()
    assert sorted(sample) == ["ADA/USDT", "BTC/USDT", "ETH/USDT", "SOL/USDT", "XRP/USDT"]
    for c in sample.values():
        assert len(c) == 90 * 24 and c.interval_ms == HOUR_MS and c.gaps() == []
        assert c.last_close_time == 1763251200000  # 2025-11-16T00:00Z
    assert (SAMPLE_DIR.parent / "SOURCE.md").is_file()


def test_bundled_sample_rows_equal_the_shared_data(shared_data):
    src = shared_data / "candles" / "binance-spot-1h" / "BTC_USDT.csv.gz"
    full = load_candle_file(src)
    sample = bundled_sample(["BTC"])["BTC/USDT"]
    tail = full.tail(len(sample))
    for col in ("time", "open", "high", "low", "close", "volume"):
        assert np.array_equal(getattr(tail, col), getattr(sample, col))


# Files whose time column is not epoch ms, whatever the data README says: two with a truncated
# column (7-digit values 3 or 4 apart) and one in seconds. They must be rejected with the rule
# that names the problem, never read as 1970.
CORRUPT = {
    "binance-usdm-1h/BTC_USDT.csv.gz",
    "binance-usdm-1h/ETH_USDT.csv.gz",
    "coinbase-spot-1h/BTC_USD.csv.gz",
}


def test_every_shared_candle_file_loads_and_reports_its_gaps(shared_data):
    files = sorted((shared_data / "candles").glob("*/*.csv.gz"))
    assert files
    total_gaps = 0
    for f in files:
        if f"{f.parent.name}/{f.name}" in CORRUPT:
            with pytest.raises(CandleDataError, match="row 1: time must be UTC epoch milliseconds"):
                load_candle_file(f)
            continue
        c = load_candle_file(f)
        assert len(c) > 100
        total_gaps += len(c.gaps())
    assert total_gaps > 0  # the README warns of exchange outages: they must show up
