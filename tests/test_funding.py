"""Funding rates: loading both file formats, the no-lookahead cut, and the funding-extremes rule."""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import numpy as np
import pytest

from agent.market import bundled_sample
from agent.market.funding import SAMPLE_FUNDING_DIR, load_funding, load_funding_file
from theories.base import TheoryContext, TheoryError
from theories.candles import Candles
from theories.funding import FundingDataError, FundingRates
from theories.strategies import funding_extremes
from theories.strategies.funding_extremes import FundingExtremesParams

H = 3_600_000
T0 = 1_735_689_600_000  # 2025-01-01 00:00 UTC


def rates(values, start=T0, step=8 * H, symbol="BTC/USDT") -> FundingRates:
    return FundingRates(start + np.arange(len(values)) * step, values, symbol=symbol)


def test_the_rule_reads_the_latest_settled_rate_against_both_thresholds():
    f = rates([0.0001, -0.00025, 0.0006, -0.0002, 0.0005])
    votes = [funding_extremes.funding_extremes(f, T0 + k * 8 * H, 100.0, H).vote for k in range(5)]
    assert votes == [0, 1, -1, 0, 0]  # the thresholds themselves are not extreme


def test_the_rule_never_uses_a_rate_before_it_settled():
    f = rates([0.0001, 0.0009])
    assert funding_extremes.funding_extremes(f, T0 + 8 * H - 1, 100.0, H).vote == 0
    assert funding_extremes.funding_extremes(f, T0 + 8 * H, 100.0, H).vote == -1


def test_the_plan_holds_24_to_72_hours_without_price_levels():
    r = funding_extremes.funding_extremes(rates([-0.0004]), T0 + H, 100.0, H)
    assert r.vote == 1 and r.entry == 100.0 and r.stop is None and r.target is None
    assert (r.min_hold_bars, r.max_hold_bars) == (24, 72)
    assert r.strength == pytest.approx(1.0)  # twice the threshold
    assert not r.exit_long and r.exit_short
    assert r.rate == pytest.approx(-0.0004) and r.rate_time == T0
    assert len(r.summary()) <= 120


def test_stale_or_missing_funding_is_an_error_not_a_vote():
    f = rates([-0.001])
    with pytest.raises(TheoryError, match="stale"):
        funding_extremes.funding_extremes(f, T0 + 17 * H, 100.0, H)
    with pytest.raises(TheoryError, match="settled"):
        funding_extremes.funding_extremes(f, T0 - 1, 100.0, H)
    with pytest.raises(TheoryError, match="settled"):
        funding_extremes.funding_extremes(FundingRates([], [], symbol="SOL/USDT"), T0, 100.0, H)


def test_the_theory_reads_funding_from_the_context_and_checks_the_symbol():
    c = Candles([T0, T0 + H], [1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [1.0, 1.0], symbol="BTC/USDT")
    ctx = TheoryContext(symbol="BTC/USDT", at_ms=T0 + 2 * H, candles=c, history=c, funding=rates([0.0008]))
    assert funding_extremes.THEORY(ctx).vote == -1
    with pytest.raises(TheoryError, match="no funding"):
        funding_extremes.THEORY(TheoryContext(symbol="BTC/USDT", at_ms=T0 + 2 * H, candles=c, history=c))
    eth = rates([0.0], symbol="ETH/USDT")
    wrong = TheoryContext(symbol="BTC/USDT", at_ms=T0 + 2 * H, candles=c, history=c, funding=eth)
    with pytest.raises(TheoryError, match="ETH/USDT"):
        funding_extremes.THEORY(wrong)


def test_parameters_are_validated():
    with pytest.raises(ValueError, match="min_hold_hours"):
        FundingExtremesParams(min_hold_hours=80)
    with pytest.raises(ValueError):
        FundingExtremesParams(long_below=0.001)


# --- the data type and the loader -------------------------------------------------------------------

def test_funding_rates_validation_names_the_row_and_rule():
    with pytest.raises(FundingDataError, match="row 2: times must be strictly increasing"):
        FundingRates([T0, T0], [0.0, 0.0], source="f.csv")
    with pytest.raises(FundingDataError, match="row 1: time must be UTC epoch milliseconds"):
        FundingRates([T0 // 1000], [0.0], source="f.csv")
    with pytest.raises(FundingDataError, match="row 2: rate must be a finite fraction"):
        FundingRates([T0, T0 + 1], [0.0, 1.5], source="f.csv")


def write(path: Path, text: str) -> Path:
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    return path


def test_loads_the_time_rate_format_and_names_the_symbol_from_the_file(tmp_path):
    p = write(tmp_path / "ETH_USDT.csv.gz", f"time,rate\n{T0},0.0001\n{T0 + 8 * H},-2.5e-05\n")
    f = load_funding_file(p)
    assert f.symbol == "ETH/USDT" and f.time.tolist() == [T0, T0 + 8 * H]
    assert f.rate.tolist() == [0.0001, -2.5e-05]
    assert f.interval_ms() == 8 * H


def test_a_header_only_file_is_an_empty_series_and_broken_files_name_the_problem(tmp_path):
    assert len(load_funding_file(write(tmp_path / "SOL_USDT.csv", "time,rate\n"))) == 0
    with pytest.raises(FundingDataError, match="row 2: rate must be a number"):
        load_funding_file(write(tmp_path / "A_USDT.csv", f"time,rate\n{T0},0.1\n{T0 + 1},abc\n"))
    with pytest.raises(FundingDataError, match="unknown funding columns"):
        load_funding_file(write(tmp_path / "B_USDT.csv", "when,what\n1,2\n"))
    with pytest.raises(FundingDataError, match="empty"):
        load_funding_file(write(tmp_path / "C_USDT.csv", ""))
    with pytest.raises(FundingDataError, match="no such"):
        load_funding_file(tmp_path / "missing.csv")


def test_multi_exchange_dates_are_shifted_to_utc_by_the_exchange_in_the_file_name(tmp_path):
    body = "Symbol,Date,Funding Rate\nBTC-USDT,2025-01-01 03:00:00.002,0.0001\nBTC-USDT,2025-01-01 11:00:00,0.0002\n"
    binance = load_funding_file(write(tmp_path / "BTC-USDT_binance_2025_2026_funding_history.csv", body))
    assert binance.symbol == "BTC/USDT"
    assert binance.time.tolist() == [T0 + 2, T0 + 8 * H]  # UTC+3 local time; the recorded 2 ms kept
    gate = load_funding_file(write(tmp_path / "BTC-USDT_gate_2025_2026_funding_history.csv", body))
    assert gate.time.tolist() == [T0 + 3 * H + 2, T0 + 11 * H]
    with pytest.raises(FundingDataError, match="time zone is not known"):
        load_funding_file(write(tmp_path / "BTC-USDT_okx_2025_2026_funding_history.csv", body))


def test_the_bundled_sample_covers_the_bundled_candles_and_the_rule_answers_on_it():
    funding = load_funding()
    assert sorted(funding) == ["ADA/USDT", "BTC/USDT", "ETH/USDT", "XRP/USDT"]  # SOL: no source rows
    universe = bundled_sample()
    for symbol, f in funding.items():
        c = universe[symbol]
        assert f.time[0] <= c.close_time[0] and c.last_close_time - f.time[-1] <= 16 * H
        assert f.interval_ms() == 8 * H and (np.diff(f.time) == 8 * H).all()  # no missing settlement
        ctx = TheoryContext(symbol=symbol, at_ms=c.last_close_time, candles=c.tail(500), history=c, funding=f)
        assert funding_extremes.THEORY(ctx).vote in (-1, 0, 1)
    assert SAMPLE_FUNDING_DIR.joinpath("../SOURCE.md").resolve().is_file()


def test_the_bundled_ada_sample_fires_long_on_its_recorded_negative_extremes():
    f = load_funding(symbols=["ADA"])["ADA/USDT"]
    extreme = f.time[f.rate < -0.0002]
    assert len(extreme) == 3
    for t in extreme:
        assert funding_extremes.funding_extremes(f, int(t), 1.0, H).vote == 1


# --- the real shared data ---------------------------------------------------------------------------

def read_rows(path: Path) -> list[tuple[int, float]]:
    with gzip.open(path, "rt") as fh:
        return [(int(r["time"]), float(r["rate"])) for r in csv.DictReader(fh)]


@pytest.mark.parametrize("pair", ["BTC_USDT", "ETH_USDT", "XRP_USDT"])
def test_funding_extremes_fire_exactly_at_the_recorded_threshold_crossings(shared_data, pair):
    path = shared_data / "funding" / "binance-usdm" / f"{pair}.csv.gz"
    rows = read_rows(path)
    f = load_funding_file(path)
    assert len(f) == len(rows)
    for t, rate in rows:
        expected = 1 if rate < -0.0002 else -1 if rate > 0.0005 else 0
        assert funding_extremes.funding_extremes(f, t, 1.0, H).vote == expected, (t, rate)


def test_known_btc_extremes_on_their_recorded_dates(shared_data):
    f = load_funding_file(shared_data / "funding" / "binance-usdm" / "BTC_USDT.csv.gz")
    at = {
        "2019-10-02T16:00Z": (1570032000000, 1),  # -0.0525%
        "2019-10-28T08:00Z": (1572249600000, -1),  # +0.0784%
        "2022-11-10T08:00Z": (1668067200000, 1),  # -0.1120%, the FTX collapse
        "2024-12-05T08:00Z": (1733385600000, -1),  # +0.0724%
    }
    for when, (t, vote) in at.items():
        r = funding_extremes.funding_extremes(f, t, 1.0, H)
        assert r.vote == vote, when
        assert r.rate_time == t
        # eight hours later the next settlement decides
        assert funding_extremes.funding_extremes(f, t + 8 * H - 1, 1.0, H).rate_time == t


def test_multi_exchange_binance_file_matches_the_binance_usdm_set_after_the_utc_shift(shared_data):
    usdm = load_funding_file(shared_data / "funding" / "binance-usdm" / "BTC_USDT.csv.gz")
    multi = load_funding_file(
        shared_data / "funding" / "multi-exchange" / "BTC-USDT_binance_2020-01-01_2024-01-01_funding_history.csv"
    )
    rounded = (multi.time + 500) // 1000 * 1000  # the fetcher recorded a few ms of jitter
    common, i, j = np.intersect1d(usdm.time, rounded, return_indices=True)
    assert len(common) == len(multi)
    assert np.abs(usdm.rate[i] - multi.rate[j]).max() == 0.0


def test_the_empty_shared_files_load_as_empty_series(shared_data):
    loaded = load_funding(shared_data / "funding" / "binance-usdm")
    assert len(loaded["SOL/USDT"]) == 0 and len(loaded["DOGE/USDT"]) == 0
    assert len(loaded["BTC/USDT"]) > 6000


def test_cuts_are_views_of_the_same_validated_data():
    f = rates([0.1, 0.2, 0.3])
    assert f.settled_by(T0 + 8 * H).rate.tolist() == [0.1, 0.2]
    assert f.between(T0 + 1, T0 + 16 * H).rate.tolist() == [0.2, 0.3]
    with pytest.raises(AttributeError):
        f.rate = np.zeros(3)
    with pytest.raises(ValueError):
        f.rate[0] = 1.0


def test_the_three_day_mean_takes_exactly_the_settlements_of_the_last_72_hours(shared_data):
    hour = 3_600_000
    rates = load_funding(shared_data / "funding" / "binance-usdm")["BTC/USDT"]
    rng = np.random.default_rng(3)
    for at in rng.integers(int(rates.time[10]), int(rates.time[-1]), 200):
        at = int(at) // hour * hour
        known = rates.settled_by(at)
        if at - int(known.time[-1]) > 16 * hour:
            continue
        r = funding_extremes.funding_extremes(rates, at, 100.0, hour)
        assert r.mean_rate_3d == float(np.mean(known.rate[known.time > at - 72 * hour]))
