"""The report pictures (evals.plots) and the report writer (evals.render): valid, non-blank, deterministic
PNGs placed where the data says; Markdown, self-contained escaped HTML and an aligned terminal summary."""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image as mpimg

from evals import plots
from evals.metrics import EquityCurve, calibration, period_returns
from evals.render import (
    RenderError,
    Report,
    Section,
    Table,
    format_cell,
    terminal_summary,
    to_html,
    to_markdown,
    write_report,
)

H = 3_600_000
JAN_2025 = int(datetime(2025, 1, 1, tzinfo=UTC).timestamp() * 1000)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def ms(*ymd: int) -> int:
    return int(datetime(*ymd, tzinfo=UTC).timestamp() * 1000)


def random_walk(hours: int, seed: int = 0, start_ms: int = JAN_2025) -> EquityCurve:
    rng = np.random.default_rng(seed)
    equity = 10_000 * np.cumprod(1 + rng.normal(0.0001, 0.003, hours))
    return EquityCurve.of([start_ms + k * H for k in range(hours)], equity)


def pixels(path: Path) -> np.ndarray:
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE), f"{path} is not a PNG"
    return mpimg.imread(path)


def assert_drawn(path: Path, min_bytes: int = 5_000) -> None:
    assert path.is_file() and path.stat().st_size > min_bytes
    img = pixels(path)
    assert float(img[..., :3].var()) > 1e-3, f"{path.name} is blank"


# --- plots ------------------------------------------------------------------------------------


def test_equity_drawdown_png_is_a_real_non_blank_picture(tmp_path):
    out = plots.equity_drawdown_png({"paper": random_walk(24 * 60), "buy and hold": random_walk(24 * 60, seed=1)},
                                    tmp_path / "eq.png", "Equity")
    assert out == tmp_path / "eq.png"
    assert_drawn(out)
    assert pixels(out).shape[:2] == (600, 1000)  # the fixed size at the fixed resolution


def test_the_same_data_draws_the_same_bytes(tmp_path):
    curve = random_walk(500)
    a = plots.equity_drawdown_png({"x": curve}, tmp_path / "a.png", "Equity")
    b = plots.equity_drawdown_png({"x": curve}, tmp_path / "b.png", "Equity")
    assert hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest()
    assert b"Software" not in a.read_bytes()[:2000]  # no matplotlib version in the metadata


def test_a_single_point_curve_is_still_drawn(tmp_path):
    assert_drawn(plots.equity_drawdown_png({"x": EquityCurve.of([JAN_2025], [10_000.0])}, tmp_path / "one.png", "One"),
                 min_bytes=2_000)


def test_the_drawdown_panel_shows_the_metrics_drawdown(tmp_path):
    curve = EquityCurve.of([JAN_2025 + k * H for k in range(4)], [100.0, 120.0, 90.0, 130.0])
    assert list(curve.drawdown()) == pytest.approx([0.0, 0.0, 0.25, 0.0])  # what the lower panel draws, negated


def test_monthly_returns_land_in_their_year_and_month_cells():
    curve = EquityCurve.of([ms(2024, 11, 3), ms(2024, 12, 31), ms(2025, 2, 10)], [100.0, 110.0, 99.0])
    rows, cols, grid, _ = plots._grid(period_returns(curve, "M"))
    assert rows == ["2024", "2025"] and cols[0] == "Jan" and cols[11] == "Dec"
    assert grid[0, 10] == pytest.approx(0.0)  # November: from the first point to itself
    assert grid[0, 11] == pytest.approx(0.10)
    assert math.isnan(grid[1, 0])  # January 2025 has no point: blank, not a made-up 0
    assert grid[1, 1] == pytest.approx(99 / 110 - 1)
    assert np.isnan(grid[0, :10]).all()  # before the data


def test_daily_returns_land_in_their_month_and_day_cells():
    curve = EquityCurve.of([ms(2025, 1, 30, 12), ms(2025, 1, 31, 12), ms(2025, 2, 2, 12)], [100.0, 102.0, 101.0])
    rows, cols, grid, xlabel = plots._grid(period_returns(curve, "D"))
    assert rows == ["2025-01", "2025-02"] and len(cols) == 31 and xlabel == "day of month"
    assert grid[0, 30] == pytest.approx(0.02)
    assert math.isnan(grid[1, 0])  # 1 February: no equity observed
    assert grid[1, 1] == pytest.approx(101 / 102 - 1)


def test_returns_heatmaps_are_drawn_for_months_and_days(tmp_path):
    curve = random_walk(24 * 100, seed=3)
    assert_drawn(plots.returns_heatmap_png(period_returns(curve, "M"), tmp_path / "m.png", "Monthly"))
    assert_drawn(plots.returns_heatmap_png(period_returns(curve, "D"), tmp_path / "d.png", "Daily"))


def test_calibration_png_draws_every_set_with_signals(tmp_path):
    rng = np.random.default_rng(5)
    conf = rng.uniform(0.3, 0.8, 300)
    hits = rng.uniform(size=300) < conf
    out = plots.calibration_png({"a": calibration(conf, hits), "b": calibration(conf[:50], hits[:50])},
                                tmp_path / "c.png", "Calibration")
    assert_drawn(out)


def test_bars_png_draws_signed_values(tmp_path):
    assert_drawn(plots.bars_png({"kalman": 12.5, "montecarlo": -3.0, "regime": 0.0}, tmp_path / "b.png", "P&L",
                                "quote"), min_bytes=3_000)


@pytest.mark.parametrize("draw", [
    lambda p: plots.equity_drawdown_png({}, p, "t"),
    lambda p: plots.returns_heatmap_png([], p, "t"),
    lambda p: plots.calibration_png({"a": calibration([], [])}, p, "t"),
    lambda p: plots.bars_png({"a": float("nan")}, p, "t"),
])
def test_nothing_to_draw_is_a_plot_error_and_no_file(draw, tmp_path):
    with pytest.raises(plots.PlotError, match="t: no"):
        draw(tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


# --- rendering --------------------------------------------------------------------------------


@pytest.mark.parametrize("value,text", [
    (None, "-"), (float("nan"), "-"), (0.0, "0"), (1234, "1,234"), (12345.678, "12,345.68"), (-0.123456, "-0.1235"),
    (3.14159, "3.142"), (0.00001234, "1.23e-05"), (True, "yes"), ("55.0%", "55.0%"),
])
def test_cells_are_formatted_for_people(value, text):
    assert format_cell(value) == text


def small_report(image: Path | None = None, **kw) -> Report:
    table = Table(headers=["symbol", "trades", "win rate"], rows=[["BTC/USDT", 12, "58.3%"], ["A|B <x>", None, "-"]],
                  caption="per symbol")
    return Report(title=kw.get("title", "Review"), subtitle="a week", sections=[
        Section(heading="Numbers", paragraphs=[kw.get("paragraph", "Plain text.")], tables=[table],
                images=[image] if image else []),
    ])


def test_markdown_escapes_pipes_and_markup_and_right_aligns_number_columns():
    md = to_markdown(small_report(paragraph="1 < 2 & <b>bold</b>"))
    assert "| symbol | trades | win rate |\n|:---|---:|---:|" in md
    assert r"| A\|B &lt;x&gt; | - | - |" in md
    assert "1 &lt; 2 &amp; &lt;b&gt;bold&lt;/b&gt;" in md
    assert "*per symbol*" in md


class Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.urls: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.urls += [v for k, v in attrs if k in ("src", "href", "srcset", "action", "data") and v]

    def handle_data(self, data):
        self.text.append(data)


def test_html_is_self_contained_and_escapes_every_text(tmp_path):
    png = plots.bars_png({"a": 1.0}, tmp_path / "p.png", "t")
    page = to_html(small_report(png, title="<script>alert(1)</script>", paragraph='"quoted" & <i>'))
    parsed = Collect()
    parsed.feed(page)
    assert "script" not in parsed.tags and "i" not in parsed.tags
    assert parsed.urls and all(u.startswith("data:image/png;base64,") for u in parsed.urls)
    assert "<script>alert(1)</script>" in "".join(parsed.text)  # shown as text, not run
    assert '<td class="num">12</td>' in page and "<td>A|B &lt;x&gt;</td>" in page


def test_write_report_copies_outside_images_beside_the_markdown_and_embeds_them_in_the_html(tmp_path):
    elsewhere = tmp_path / "plots"
    a = plots.bars_png({"a": 1.0}, elsewhere / "x.png", "a")
    b = plots.bars_png({"b": -1.0}, elsewhere / "other" / "x.png", "b")
    report = Report(title="R", sections=[Section(heading="S", images=[a, b])])
    md, page = write_report(report, tmp_path / "out", stem="weekly")
    assert (md.name, page.name) == ("weekly.md", "weekly.html")
    assert (tmp_path / "out" / "x.png").read_bytes() == a.read_bytes()
    assert (tmp_path / "out" / "x-2.png").read_bytes() == b.read_bytes()  # same name, not overwritten
    assert "](x.png)" in md.read_text() and "](x-2.png)" in md.read_text()
    assert page.read_text().count("data:image/png;base64,") == 2


def test_write_report_refuses_a_missing_image_or_a_ragged_table(tmp_path):
    with pytest.raises(RenderError, match="does not exist"):
        write_report(Report(title="R", sections=[Section(heading="S", images=[tmp_path / "no.png"])]), tmp_path)
    ragged = Table(headers=["a", "b"], rows=[[1, 2], [3]])
    with pytest.raises(RenderError, match="row 2 has 1 cells for 2 headers"):
        write_report(Report(title="R", sections=[Section(heading="S", tables=[ragged])]), tmp_path)
    assert not (tmp_path / "report.md").exists()


def test_a_non_png_image_is_refused(tmp_path):
    fake = tmp_path / "fake.png"
    fake.write_text("<svg/>")
    with pytest.raises(RenderError, match="not a PNG"):
        to_html(Report(title="R", sections=[Section(heading="S", images=[fake])]))


def test_terminal_summary_aligns_columns_and_lists_the_plots(tmp_path):
    text = terminal_summary(small_report(tmp_path / "p.png"))
    lines = text.splitlines()
    assert lines[:2] == ["Review", "======"]
    header = next(line for line in lines if line.startswith("symbol"))
    row = next(line for line in lines if line.startswith("BTC/USDT"))
    assert header.index("trades") + len("trades") == row.index("12") + 2  # numbers right-aligned under their header
    assert f"[plot] {tmp_path / 'p.png'}" in lines
