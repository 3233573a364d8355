"""Reports as data, written three ways: Markdown, one self-contained HTML file, and a terminal summary.

A `Report` is a title and sections; a section holds paragraphs, tables and PNG images. The
review (`agent.review`), the evals report and the daily Telegram report build one and hand it
here, so every report reads and escapes the same way.

- Markdown (`<stem>.md`) links the images by file name; each image is copied beside it when it
  lives elsewhere, so the folder is complete on its own.
- HTML (`<stem>.html`) embeds every image as a base64 `data:` URI and its CSS inline: one file
  that can be mailed or opened offline, with no external `src` or `href`. Every piece of text is
  HTML-escaped (a symbol, a theory or a model name can never inject markup).
- The terminal summary is plain text: headings, wrapped paragraphs, aligned tables (numbers to
  the right), and the images' paths.

Table cells are `str | float | int | None`. Callers format numbers with units themselves
(`"55.0%"`, `"+1,234.50"`); bare numbers are formatted by `format_cell` (None prints "-").
"""

from __future__ import annotations

import base64
import html
import math
import re
import shutil
import textwrap
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

Cell = str | float | int | None
NONE_TEXT = "-"
_NUMERIC = re.compile(r"^[+\-−]?[$€]?[\d,]*\.?\d+(e[+-]?\d+)?\s?(%|R|x|bp|s|ms|min|h|d)?$", re.IGNORECASE)


class Table(BaseModel):
    model_config = ConfigDict(frozen=True)

    headers: list[str]
    rows: list[list[Cell]]
    caption: str = ""


class Section(BaseModel):
    model_config = ConfigDict(frozen=True)

    heading: str
    paragraphs: list[str] = Field(default_factory=list)
    tables: list[Table] = Field(default_factory=list)
    images: list[Path] = Field(default_factory=list)


class Report(BaseModel):
    model_config = ConfigDict(frozen=True)

    title: str
    subtitle: str = ""
    sections: list[Section]


class RenderError(ValueError):
    """A report cannot be written as asked (the message names the table or image)."""


def format_cell(value: Cell) -> str:
    """A cell as text: None (or NaN) -> "-", ints with thousands separators, floats to 4 significant
    digits (from 1,000 up: thousands separators and 2 decimals; below 1e-4: scientific notation)."""
    if value is None:
        return NONE_TEXT
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return NONE_TEXT
        if value == 0:
            return "0"
        if abs(value) >= 1000:
            return f"{value:,.2f}"
        if abs(value) < 1e-4:
            return f"{value:.2e}"
        digits = max(0, 3 - math.floor(math.log10(abs(value))))
        return f"{value:.{digits}f}"
    return str(value)


def _is_numeric(cell: Cell) -> bool:
    if cell is None or isinstance(cell, bool):
        return False
    if isinstance(cell, int | float):
        return True
    return bool(_NUMERIC.match(cell.strip().replace(" ", "")))


def _numeric_columns(table: Table) -> list[bool]:
    """A column is right-aligned when every cell that is not empty is a number (or reads like one)."""
    out = []
    for j in range(len(table.headers)):
        cells = [row[j] for row in table.rows if row[j] is not None and row[j] != NONE_TEXT]
        out.append(bool(cells) and all(_is_numeric(c) for c in cells))
    return out


def _check(report: Report) -> None:
    for section in report.sections:
        for t, table in enumerate(section.tables):
            for i, row in enumerate(table.rows):
                if len(row) != len(table.headers):
                    raise RenderError(f"section {section.heading!r}, table {t + 1}: row {i + 1} has {len(row)} "
                                      f"cells for {len(table.headers)} headers")
        for image in section.images:
            if not Path(image).is_file():
                raise RenderError(f"section {section.heading!r}: image {image} does not exist")


# --- Markdown ---------------------------------------------------------------------------------


def _md_text(text: str) -> str:
    # Markdown passes raw HTML through: escape it so a name can never become markup
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _md_cell(cell: Cell) -> str:
    return _md_text(format_cell(cell)).replace("|", r"\|").replace("\n", " ")


def _md_table(table: Table) -> list[str]:
    numeric = _numeric_columns(table)
    out = [f"*{_md_text(table.caption)}*", ""] if table.caption else []
    out.append("| " + " | ".join(_md_cell(h) for h in table.headers) + " |")
    out.append("|" + "|".join("---:" if n else ":---" for n in numeric) + "|")
    out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in table.rows]
    return [*out, ""]


def to_markdown(report: Report, images: dict[Path, str] | None = None) -> str:
    """The report as Markdown; `images` maps each image to the name it is linked by (default: its file name)."""
    images = images or {}
    out = [f"# {_md_text(report.title)}", ""]
    if report.subtitle:
        out += [_md_text(report.subtitle), ""]
    for section in report.sections:
        out += [f"## {_md_text(section.heading)}", ""]
        for paragraph in section.paragraphs:
            out += [_md_text(paragraph), ""]
        for table in section.tables:
            out += _md_table(table)
        for image in section.images:
            name = images.get(Path(image), Path(image).name)
            out += [f"![{_md_text(Path(image).stem)}]({name})", ""]
    return "\n".join(out).rstrip() + "\n"


# --- HTML -------------------------------------------------------------------------------------

_CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.25em;margin-top:1.8em;border-bottom:1px solid #ddd}
.subtitle{color:#666;margin-top:0}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.88em}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:left;white-space:nowrap}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
caption{caption-side:top;text-align:left;color:#555;font-style:italic;padding-bottom:.3em}
img{max-width:100%;height:auto;display:block;margin:.8em 0}
"""


def _h(text: object) -> str:
    return html.escape(str(text), quote=True)


def _html_table(table: Table) -> list[str]:
    numeric = _numeric_columns(table)
    out = ["<table>"]
    if table.caption:
        out.append(f"<caption>{_h(table.caption)}</caption>")
    out.append("<thead><tr>" + "".join(f"<th>{_h(h)}</th>" for h in table.headers) + "</tr></thead><tbody>")
    for row in table.rows:
        cells = "".join(
            f'<td class="num">{_h(format_cell(c))}</td>' if n else f"<td>{_h(format_cell(c))}</td>"
            for c, n in zip(row, numeric, strict=True)
        )
        out.append(f"<tr>{cells}</tr>")
    out.append("</tbody></table>")
    return out


def _data_uri(path: Path) -> str:
    data = Path(path).read_bytes()
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise RenderError(f"image {path} is not a PNG file")
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def to_html(report: Report) -> str:
    """The report as one self-contained HTML page (inline CSS, images as data URIs, all text escaped)."""
    out = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_h(report.title)}</title>", f"<style>{_CSS}</style>", "</head>", "<body>",
        f"<h1>{_h(report.title)}</h1>",
    ]
    if report.subtitle:
        out.append(f'<p class="subtitle">{_h(report.subtitle)}</p>')
    for section in report.sections:
        out.append(f"<section><h2>{_h(section.heading)}</h2>")
        out += [f"<p>{_h(p)}</p>" for p in section.paragraphs]
        for table in section.tables:
            out += _html_table(table)
        for image in section.images:
            out.append(f'<img alt="{_h(Path(image).stem)}" src="{_data_uri(Path(image))}">')
        out.append("</section>")
    out += ["</body>", "</html>"]
    return "\n".join(out) + "\n"


# --- writing ----------------------------------------------------------------------------------


def write_report(report: Report, out_dir: Path, stem: str = "report") -> tuple[Path, Path]:
    """Write `<stem>.md` and `<stem>.html` into `out_dir` (created); images outside it are copied in.

    Returns the two paths (Markdown, HTML). Raises RenderError for a missing image or a ragged table.
    """
    _check(report)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    images = list(dict.fromkeys(Path(i) for section in report.sections for i in section.images))
    inside = [i for i in images if i.resolve().parent == out_dir.resolve()]
    links: dict[Path, str] = {i: i.name for i in inside}
    taken = set(links.values())
    for image in images:
        if image in links:
            continue
        # copied beside the report so the folder stands alone; two images of one name get distinct names
        name, k = image.name, 1
        while name in taken:
            k += 1
            name = f"{image.stem}-{k}{image.suffix}"
        shutil.copyfile(image, out_dir / name)
        links[image] = name
        taken.add(name)
    md = out_dir / f"{stem}.md"
    page = out_dir / f"{stem}.html"
    md.write_text(to_markdown(report, links), encoding="utf-8")
    page.write_text(to_html(report), encoding="utf-8")
    return md, page


# --- terminal ---------------------------------------------------------------------------------


def _text_table(table: Table) -> list[str]:
    numeric = _numeric_columns(table)
    cells = [[format_cell(c) for c in row] for row in table.rows]
    widths = [max([len(h), *(len(r[j]) for r in cells)]) for j, h in enumerate(table.headers)]

    def line(values: list[str]) -> str:
        parts = [v.rjust(w) if n else v.ljust(w) for v, w, n in zip(values, widths, numeric, strict=True)]
        return "  ".join(parts).rstrip()

    out = [table.caption] if table.caption else []
    out += [line(table.headers), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells]
    return [*out, ""]


def terminal_summary(report: Report, width: int = 110) -> str:
    """The report as plain text for a terminal: headings, wrapped paragraphs, aligned tables, image paths."""
    out = [report.title, "=" * min(len(report.title), width)]
    if report.subtitle:
        out += textwrap.wrap(report.subtitle, width)
    for section in report.sections:
        out += ["", section.heading, "-" * min(len(section.heading), width)]
        for paragraph in section.paragraphs:
            out += [*(textwrap.wrap(paragraph, width) or [""]), ""]
        for table in section.tables:
            out += _text_table(table)
        out += [f"[plot] {image}" for image in section.images]
    while out and out[-1] == "":
        out.pop()
    return "\n".join(out) + "\n"
