"""Excel deliverables (openpyxl): the sponsor workbook and the data-queries workbook.

    write_sponsor_workbook(tables, cfg, data_cut, path)   one sheet per DisplayTable (the same
                                                          objects the DSMB PDF renders)
    write_queries_workbook(con, cfg, data_cut, path)      data queries by status + quarantined rows

Safety: every value that comes from data is written by :func:`set_cell`, which cleans it with
:func:`safe_cell_value` (illegal XML control characters removed) and keeps text as text: a string
starting with "=" would otherwise become a formula (openpyxl infers data_type "f"), so the cell's
data type is forced to "s", and text starting with = + - @ tab or CR also gets the quotePrefix
style so that Excel keeps it as text when the cell is edited. The display sheets' data rows are
written by :class:`_SheetRows` (the same cells, without a cell object per value): cleaned by
safe_cell_value, every text an inline string, the same styles.

Determinism: no wall clock. The document properties (created / modified) are the data cut-off at
00:00 UTC, and the zip entries are written with that timestamp in a fixed order, so two writes of
the same tables give byte-identical files.
"""

from __future__ import annotations

import datetime as dt
import io
import math
import zipfile
from copy import copy
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
from lxml import etree
from openpyxl import LXML, Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE, Cell
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.styles.cell_style import StyleArray
from openpyxl.utils import get_column_letter, quote_sheetname
from openpyxl.worksheet.hyperlink import Hyperlink
from openpyxl.worksheet.worksheet import Worksheet
from openpyxl.writer.excel import ExcelWriter

from clinical.queries import quarantine_queries_sql
from clinical.study import StudyConfig
from deliverables.tables import DisplayTable, ReportTables, as_date, display_tables

# Text starting with one of these is a formula (or DDE) trigger in a spreadsheet application.
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
MAX_CELL_CHARS = 32767  # Excel's limit for one cell
GENERATOR = "im83-pipeline deliverables.workbooks"

HEADER_FONT = Font(bold=True)
HEADER_FILL = PatternFill("solid", fgColor="DFE7EF")
TITLE_FONT = Font(bold=True, size=12)
GROUP_FONT = Font(bold=True)
NOTE_FONT = Font(italic=True)
LINK_FONT = Font(color="0563C1", underline="single")


# --------------------------------------------------------------------------------------------------
# Cells


def safe_cell_value(v: Any) -> Any:
    """A value openpyxl can store without error or surprise.

    Text: XML-illegal control characters removed, truncated to Excel's 32,767 characters.
    NaN / infinity become empty cells; Decimal becomes float; other objects become their text.
    (Formula protection needs the cell: see :func:`set_cell`.)
    """
    if v is None or isinstance(v, (bool, int)):
        return v
    if isinstance(v, float):
        return None if math.isnan(v) or math.isinf(v) else v
    if isinstance(v, Decimal):
        return safe_cell_value(float(v))
    if isinstance(v, (dt.datetime, dt.date, dt.time)):
        return v
    if type(v) is str and v.isascii() and v.isprintable() and len(v) <= MAX_CELL_CHARS:
        return v  # most text: nothing to remove or cut
    text = v if isinstance(v, str) else str(v)
    text = ILLEGAL_CHARACTERS_RE.sub("", text)
    # Lone surrogates cannot be encoded as UTF-8 XML either.
    text = text.encode("utf-8", "replace").decode("utf-8")
    if len(text) > MAX_CELL_CHARS:
        text = text[: MAX_CELL_CHARS - 1] + "…"
    return text


def set_cell(ws: Worksheet, row: int, column: int, value: Any, number_format: str | None = None) -> Cell:
    """Write one value from data: cleaned, and text stays text (never a formula or an error code)."""
    v = safe_cell_value(value)
    cell = ws.cell(row=row, column=column)
    cell.value = v
    if isinstance(v, str):
        if cell.data_type != "s":  # "=..." was inferred as a formula, "#N/A" as an error
            cell.data_type = "s"
        if v.startswith(FORMULA_TRIGGERS):
            cell.quotePrefix = True
    elif isinstance(v, dt.datetime):
        cell.number_format = "yyyy-mm-dd hh:mm"
    elif isinstance(v, dt.date):
        cell.number_format = "yyyy-mm-dd"
    if number_format is not None and not isinstance(v, str):
        cell.number_format = number_format
    return cell


def _sheet_title(name: str, used: set[str]) -> str:
    clean = "".join("_" if ch in '[]:*?/\\' else ch for ch in name).strip("'")[:31] or "Sheet"
    title, i = clean, 2
    while title.lower() in used:
        suffix = f" ({i})"
        title, i = clean[: 31 - len(suffix)] + suffix, i + 1
    used.add(title.lower())
    return title


def _header_text(text: str) -> str:
    # Header/footer codes start with "&": a literal ampersand is written "&&".
    return safe_cell_value(text).replace("&", "&&")


def _page_setup(ws, cfg: StudyConfig, cut: dt.date, landscape: bool = True) -> None:
    ws.oddHeader.left.text = _header_text(f"{cfg.study.id} · {cfg.study.nct_id}")
    ws.oddHeader.center.text = _header_text(f"Data cut-off: {cut.isoformat()}")
    ws.oddHeader.right.text = _header_text(cfg.study.protocol_id)
    ws.oddFooter.left.text = _header_text(cfg.study.confidentiality)
    ws.oddFooter.right.text = "Page &P of &N"
    ws.page_setup.orientation = "landscape" if landscape else "portrait"
    ws.page_setup.paperSize = Worksheet.PAPERSIZE_A4
    ws.page_setup.fitToWidth = 1
    ws.page_setup.fitToHeight = 0
    ws.sheet_properties.pageSetUpPr.fitToPage = True
    ws.print_options.gridLines = False


class _Styles:
    """Cell styles of one workbook, each combination resolved once.

    openpyxl hashes every font, fill and alignment object on assignment to find its index in the
    workbook; for tens of thousands of cells that dominates the write. Here a combination
    (font, fill, alignment, number format, quote prefix) is resolved once on a scratch cell and
    its index array copied onto every cell that uses it.
    """

    def __init__(self, ws) -> None:
        self.ws = ws
        self.cache: dict[tuple, Any] = {}

    def get(self, font: Font | None, fill: PatternFill | None, alignment: Alignment | None,
            number_format: str | None, quote: bool) -> Any:
        key = (font, fill, alignment, number_format, quote)
        arr = self.cache.get(key)
        if arr is None:
            scratch = WriteOnlyCell(self.ws)
            if font is not None:
                scratch.font = font
            if fill is not None:
                scratch.fill = fill
            if alignment is not None:
                scratch.alignment = alignment
            if number_format is not None:
                scratch.number_format = number_format
            if quote:
                scratch.quotePrefix = True
            arr = self.cache[key] = scratch._style
        return arr


def _align(**kwargs: Any) -> Alignment:
    key = tuple(sorted(kwargs.items()))
    found = _ALIGNMENTS.get(key)
    if found is None:
        found = _ALIGNMENTS[key] = Alignment(**kwargs)
    return found


_ALIGNMENTS: dict[tuple, Alignment] = {}


def write_cell(ws, styles: _Styles, value: Any, number_format: str | None = None, *, font: Font | None = None,
               fill: PatternFill | None = None, alignment: Alignment | None = None, clean: bool = False) -> Any:
    """:func:`set_cell` for a write-only sheet: a detached cell, cleaned, text kept as text.

    A value that needs no style and that openpyxl would store as it is (numbers without a format,
    text that does not look like a formula or an error code) is returned as the bare value: the
    write-only sheet writes it the same, several times faster. ``clean``: the value already went
    through :func:`safe_cell_value`.
    """
    v = value if clean else safe_cell_value(value)
    if font is None and fill is None and alignment is None and number_format is None:
        if v is None or (isinstance(v, str) and not v.startswith(FORMULA_TRIGGERS) and not v.startswith("#")):
            return v
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return v
    cell = WriteOnlyCell(ws)
    cell.value = v
    quote = False
    fmt = None
    if isinstance(v, str):
        if cell.data_type != "s":  # "=..." was inferred as a formula, "#N/A" as an error
            cell.data_type = "s"
        quote = v.startswith(FORMULA_TRIGGERS)
    elif isinstance(v, dt.datetime):
        fmt = "yyyy-mm-dd hh:mm"
    elif isinstance(v, dt.date):
        fmt = "yyyy-mm-dd"
    if number_format is not None and not isinstance(v, str):
        fmt = number_format
    if font is not None or fill is not None or alignment is not None or fmt is not None or quote:
        cell._style = copy(styles.get(font, fill, alignment, fmt, quote))
    return cell


def _text_width(value: Any) -> int:
    if value is None:
        return 0
    if type(value) is str and value.isascii() and value.isprintable():
        return len(value)  # one line, one column per character
    if isinstance(value, dt.date):
        return 10
    if isinstance(value, float):
        return len(f"{value:.1f}")
    text = str(value)
    n = max((len(line) for line in text.splitlines()), default=0)
    # Wide (CJK) characters take about two columns.
    if not text.isascii():
        n += sum(1 for ch in text if ord(ch) > 0x2E80)
    return n


# Column widths are estimated from the header and the first rows of a sheet: a listing of hundreds of
# thousands of rows need not be measured cell by cell to choose a width capped at 60 characters.
WIDTH_SAMPLE_ROWS = 2000


def _column_widths(rows: list[list[Any]], min_width: int = 6, max_width: int = 60) -> dict[int, float]:
    """Column widths (1-based) from the longest text of each column of the first
    :data:`WIDTH_SAMPLE_ROWS` of ``rows`` (cleaned values; the header is the first row)."""
    widths: dict[int, int] = {}
    for row in rows[:WIDTH_SAMPLE_ROWS]:
        for j, v in enumerate(row, start=1):
            if v is None:
                continue
            n = _text_width(v)
            if n > widths.get(j, -1):
                widths[j] = n
    return {j: max(min_width, min(max_width, n + 2)) for j, n in widths.items()}


def _span_height(text: str, width: float, size: float) -> float:
    """Height of a row whose merged, wrapped cell of ``width`` holds ``text`` (spreadsheets do not
    fit the height of merged cells)."""
    chars_per_line = max(1.0, width * 11 / size * 0.95)
    lines = sum(max(1, math.ceil(len(part) / chars_per_line)) for part in text.split("\n"))
    return round(lines * size * 1.35 + 2, 1)


def _merge(ws, row: int, first_col: int, last_col: int, widths: dict[int, float], text: str, size: float) -> None:
    if last_col <= first_col:
        return
    width = sum(widths.get(c, 8.43) for c in range(first_col, last_col + 1))
    ws.merged_cells.add(f"{get_column_letter(first_col)}{row}:{get_column_letter(last_col)}{row}")
    ws.row_dimensions[row].height = _span_height(text, width, size)


def _number_format(column_name: str, value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return "0"
    if isinstance(value, float):
        if column_name.endswith("%"):
            return "0.0"
        if column_name.lower().startswith("cells"):
            return "0.0E+00"
        return "General"
    return None


# --------------------------------------------------------------------------------------------------
# Rows of a write-only sheet

# Text parsed back by lxml: the characters XML escapes in text (a carriage return would otherwise
# be read as a line feed).
_XML_TEXT_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;"})
# An empty CDATA section parses to an empty text, which lxml writes as <c ...></c>, as openpyxl's
# streaming writer does for an empty cell (an element parsed without it is written <c .../>).
_EMPTY = "<![CDATA[]]>"
_BATCH_CHARS = 1 << 16  # rows are parsed and written some 64 KB of XML at a time (cache-sized)


class _SheetRows:
    """The rows of one write-only sheet, written into openpyxl's worksheet stream.

    ``append(values)`` is ``ws.append(values)``: any value or WriteOnlyCell, row heights, links.
    ``append_plain(values, styles)`` writes a row of text, numbers and empty cells, with the cell
    styles given, for a fraction of the work: a WriteOnlyCell per value and openpyxl's cell writer
    cost several microseconds a cell, most of the sponsor workbook's time (its listings have
    hundreds of thousands of cells). The row is formatted here as the XML openpyxl would write
    (openpyxl.cell._writer.lxml_write_cell: inline strings, numbers as "%.16g"), and lxml parses
    and writes the rows a batch at a time.

    openpyxl internals, used only in this class, as WriteOnlyWorksheet._write_rows uses them
    (openpyxl 3.1): ``ws._get_writer()``, ``ws._writer.xf`` (hands out the sheet's xmlfile and
    takes it back), ``ws._values_to_row`` and ``ws._writer.write_row`` (openpyxl's row writer),
    and ``ws._rows`` (what ``ws.close()`` finishes at save). tests/test_workbook_writer.py
    compares the bytes with ws.append's, so that an openpyxl release that changes any of this
    fails there, not in a deliverable.
    """

    def __init__(self, ws) -> None:
        ws._get_writer()  # writes the sheet's properties, views and columns: set them before
        self.ws = ws
        self.xf = ws._writer.xf.send(True)
        self._sheet_data = self.xf.element("sheetData")
        self._sheet_data.__enter__()
        ws._rows = self  # ws.close() calls close()
        self.rows = 0  # rows written so far
        self._parser = etree.XMLParser(resolve_entities=False)  # not the process-wide default parser
        self._pending: list[str] = []
        self._pending_chars = 0
        self._letters: list[str] = []
        self._style_attrs: dict[int, tuple[StyleArray, str]] = {}

    def append(self, values: list[Any]) -> None:
        """One row as ws.append takes it, written by openpyxl."""
        self._flush()
        self.rows += 1
        self.ws._writer.write_row(self.xf, self.ws._values_to_row(values, self.rows), self.rows)

    def append_plain(self, values: list[Any], styles: list[StyleArray | None]) -> bool:
        """One row of str, int, float and None (an empty cell, written only when styled) values;
        ``styles[j]``: the StyleArray of the cell, None for no style. False, and nothing written,
        for a row with a value of another type or a height (``append`` writes it)."""
        r = self.rows + 1
        # Without lxml (OPENPYXL_LXML=False) openpyxl writes its XML differently: it writes every row.
        if not LXML or r in self.ws.row_dimensions:
            return False
        letters = self._letters
        while len(letters) < len(values):
            letters.append(get_column_letter(len(letters) + 1))
        parts = [f'<row r="{r}">']
        for letter, v, style in zip(letters, values, styles):
            kind = type(v)
            s = "" if style is None else self._style_attr(style)
            if kind is str:
                if not v:
                    parts.append(f'<c r="{letter}{r}"{s} t="inlineStr">{_EMPTY}</c>')
                    continue
                space = "" if v == v.strip() else ' xml:space="preserve"'
                if "&" in v or "<" in v or ">" in v or "\r" in v:
                    v = v.translate(_XML_TEXT_ESCAPES)
                parts.append(f'<c r="{letter}{r}"{s} t="inlineStr"><is><t{space}>{v}</t></is></c>')
            elif kind is int or (kind is float and math.isfinite(v)):
                parts.append(f'<c r="{letter}{r}"{s} t="n"><v>{"%.16g" % v}</v></c>')
            elif v is None:
                if style is not None:
                    parts.append(f'<c r="{letter}{r}"{s} t="n">{_EMPTY}</c>')
            else:
                return False
        if len(parts) == 1:
            parts.append(_EMPTY)
        parts.append("</row>")
        row = "".join(parts)
        self._pending.append(row)
        self._pending_chars += len(row)
        self.rows = r
        if self._pending_chars > _BATCH_CHARS:
            self._flush()
        return True

    def _style_attr(self, style: StyleArray) -> str:
        found = self._style_attrs.get(id(style))
        if found is None:
            # The workbook numbers a cell style when a written cell first uses it, as openpyxl's
            # writer does (the style is kept here, so that its id() stays its own).
            found = self._style_attrs[id(style)] = (style, f' s="{Cell(self.ws, style_array=style).style_id}"')
        return found[1]

    def _flush(self) -> None:
        if self._pending:
            for row in etree.fromstring("<rows>" + "".join(self._pending) + "</rows>", self._parser):
                self.xf.write(row)
            self._pending = []
            self._pending_chars = 0

    def close(self) -> None:
        self._flush()
        self._sheet_data.__exit__(None, None, None)
        self.ws._writer.xf.send(None)


def _deterministic_save(wb: Workbook, path: Path, cut: dt.date) -> Path:
    """Save with fixed document dates and zip timestamps (openpyxl's save() stamps 'now')."""
    stamp = dt.datetime(cut.year, cut.month, cut.day)
    wb.properties.created = stamp
    wb.properties.modified = stamp
    wb.properties.lastModifiedBy = GENERATOR
    wb.properties.creator = GENERATOR
    buf = io.BytesIO()
    # Stored, not deflated: the parts are compressed once, below, when they are re-stamped.
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        ExcelWriter(wb, archive).write_data()
    path.parent.mkdir(parents=True, exist_ok=True)
    zip_time = (max(cut.year, 1980), cut.month, cut.day, 0, 0, 0)
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            fixed = zipfile.ZipInfo(info.filename, date_time=zip_time)
            fixed.compress_type = zipfile.ZIP_DEFLATED
            fixed.external_attr = 0o600 << 16
            fixed.create_system = 0
            dst.writestr(fixed, src.read(info.filename))
    tmp.replace(path)
    return path


# --------------------------------------------------------------------------------------------------
# Sponsor workbook

TITLE_ROW, NOTE_ROW, HEADER_ROW = 1, 2, 3
FIRST_DATA_ROW = HEADER_ROW + 1
EXCEL_MAX_ROWS = 1_048_576
# Data rows one sheet holds; a longer listing continues on "<sheet> (2)", "<sheet> (3)", ...
SHEET_DATA_ROWS = EXCEL_MAX_ROWS - FIRST_DATA_ROW + 1
TITLE_SIZE, NOTE_SIZE = 12, 9
NOTE_FONT_SMALL = Font(italic=True, size=NOTE_SIZE)
# A data cell's font, alignment, number format and the cell style they make (None: no style).
CellFormat = tuple[Font | None, Alignment | None, str | None, StyleArray | None]


def _parts(t: DisplayTable) -> list[tuple[int, int]]:
    """(first, last) row indices of each sheet a display table needs (one unless it exceeds Excel's rows)."""
    n = len(t.rows)
    if n <= SHEET_DATA_ROWS:
        return [(0, n)]
    return [(i, min(i + SHEET_DATA_ROWS, n)) for i in range(0, n, SHEET_DATA_ROWS)]


def _write_display_sheet(ws, styles: _Styles, t: DisplayTable, cfg: StudyConfig, cut: dt.date,
                         part: tuple[int, int] | None = None, n_parts: int = 1) -> None:
    """One display table (or one part of a very long one) on a write-only sheet."""
    first, last = part if part is not None else (0, len(t.rows))
    rows = t.rows[first:last]
    row_styles = t.row_styles[first:last]
    extra = t.extra_rows[first:last] if t.extra_columns else []
    columns = list(t.columns) + list(t.extra_columns)
    title = f"{t.title} — {cfg.study.id} ({cfg.study.nct_id}) — Data cut-off: {cut.isoformat()}"
    footnote = t.footnote
    if n_parts > 1:
        k = first // SHEET_DATA_ROWS + 1
        title += f" — part {k} of {n_parts} (rows {first + 1:,} to {last:,} of {len(t.rows):,})"
        footnote = (f"This listing has more rows than an Excel sheet holds: it continues over {n_parts} sheets. "
                    + footnote)
    values = [[safe_cell_value(v) for v in (list(r) + (list(extra[i]) if t.extra_columns else []))]
              for i, r in enumerate(rows)]
    notes = {i for i, st in enumerate(row_styles) if st == "note"}
    # Column widths: header and data rows (note rows run across their neighbours; the empty text counts).
    widths = _column_widths([columns] + [v for i, v in enumerate(values) if i not in notes]
                            + ([[t.empty_text]] if not rows else []))
    for j, w in widths.items():
        ws.column_dimensions[get_column_letter(j)].width = w
    ws.freeze_panes = f"B{FIRST_DATA_ROW}"  # a write-only sheet writes its view before the rows
    _page_setup(ws, cfg, cut, landscape=True)  # and its sheet properties (fit to page width)
    ncols = len(t.columns)
    # Trailing note rows (the escalation decision) stay outside the filter range and span the table.
    n_data = len(rows)
    while n_data and row_styles[n_data - 1] == "note":
        n_data -= 1
    _merge(ws, TITLE_ROW, 1, ncols, widths, title, TITLE_SIZE)
    _merge(ws, NOTE_ROW, 1, ncols, widths, safe_cell_value(footnote) or "", NOTE_SIZE)
    sheet = _SheetRows(ws)
    sheet.append([write_cell(ws, styles, title, font=TITLE_FONT,
                             alignment=_align(wrap_text=True, vertical="top") if ncols > 1 else None)])
    sheet.append([write_cell(ws, styles, footnote, font=NOTE_FONT_SMALL,
                             alignment=_align(wrap_text=True, vertical="top") if ncols > 1 else None)])
    header_align = _align(wrap_text=True, vertical="bottom")
    sheet.append([write_cell(ws, styles, name, font=HEADER_FONT, fill=HEADER_FILL, alignment=header_align)
                  for name in columns])
    wrap_over = 60

    def cell_format(style: str, j: int, clean: Any) -> CellFormat:
        """Font, alignment and number format of a data cell in column j (1-based) of a row of this
        style, and the cell style they make (None: no style)."""
        font = GROUP_FONT if style == "group" else NOTE_FONT if style in ("note", "set") else None
        fmt = _number_format(columns[j - 1], clean)
        if style == "note":
            align = _align(vertical="top", wrap_text=j > 1)
        elif j == 1:
            align = _align(horizontal="left", indent=2 if style == "indent" else 0)
        elif (t.kind == "table" and j <= ncols) or isinstance(clean, (int, float)) and not isinstance(clean, bool):
            # Display cells mix numbers and "n (%)" text: centre them like the PDF does.
            align = _align(horizontal="center")
        else:
            align = None
        if isinstance(clean, str) and len(clean) > wrap_over and style != "note":
            align = _align(wrap_text=True, vertical="top", horizontal=align.horizontal if align else None,
                           indent=align.indent if align else 0)
        cell = write_cell(ws, styles, clean, fmt, font=font, alignment=align, clean=True)
        return font, align, fmt, cell._style if isinstance(cell, Cell) and cell.has_style else None

    # The format depends on the row style, the column and the kind of value only (its type; for text,
    # whether it is long enough to wrap or starts like a formula): decided once per combination.
    formats: dict[tuple, CellFormat] = {}
    for i, row in enumerate(values):
        style = row_styles[i]
        r = FIRST_DATA_ROW + i
        if i in notes and i >= n_data and len(columns) > 2:
            _merge(ws, r, 2, ncols, widths, safe_cell_value(row[1]) or "" if len(row) > 1 else "", 11)
        row_formats = []
        for j, clean in enumerate(row, start=1):
            kind = type(clean)
            key = ((style, j, kind, len(clean) > wrap_over, clean.startswith(FORMULA_TRIGGERS))
                   if isinstance(clean, str) else (style, j, kind))
            found = formats.get(key)
            if found is None:
                found = formats[key] = cell_format(style, j, clean)
            row_formats.append(found)
        if not sheet.append_plain(row, [f[3] for f in row_formats]):  # a date, a row height, ...
            sheet.append([write_cell(ws, styles, clean, fmt, font=font, alignment=align, clean=True)
                          for clean, (font, align, fmt, _) in zip(row, row_formats)])
    if not rows:
        sheet.append([write_cell(ws, styles, t.empty_text, font=NOTE_FONT)])
    last_col = get_column_letter(len(columns))
    ws.auto_filter.ref = f"A{HEADER_ROW}:{last_col}{HEADER_ROW + n_data}"
    ws.print_title_rows = f"{HEADER_ROW}:{HEADER_ROW}"
    # Print what the PDF shows; the numeric companion columns are for filtering on screen.
    ws.print_area = f"A1:{get_column_letter(ncols)}{FIRST_DATA_ROW + max(len(rows), 1) - 1}"


def _write_cover(
    ws,
    styles: _Styles,
    cfg: StudyConfig,
    cut: dt.date,
    heading: str,
    facts: list[tuple[str, Any]],
    contents: list[tuple[str, str, int]],
) -> None:
    ws.column_dimensions["A"].width = 30
    ws.column_dimensions["B"].width = 90
    ws.column_dimensions["C"].width = 8
    _page_setup(ws, cfg, cut, landscape=False)  # before the rows: a write-only sheet writes its properties first
    ws.append([write_cell(ws, styles, heading, font=Font(bold=True, size=14))])
    ws.append([])
    r = 3
    for label, value in facts:
        lines = max(1, math.ceil(len(cell_text_len(value)) / 110))
        if lines > 1:
            ws.row_dimensions[r].height = 15 * lines
        ws.append([
            write_cell(ws, styles, label, font=HEADER_FONT, alignment=_align(vertical="top")),
            write_cell(ws, styles, value, alignment=_align(horizontal="left", vertical="top", wrap_text=True)),
        ])
        r += 1
    ws.append([])
    ws.append([write_cell(ws, styles, "Contents", font=Font(bold=True, size=12))])
    ws.append([write_cell(ws, styles, name, font=HEADER_FONT, fill=HEADER_FILL) for name in ("Sheet", "Title", "Rows")])
    r += 2  # the blank row, "Contents" and the header row: r is the row before the first sheet line
    for sheet, title, n in contents:
        r += 1
        c = write_cell(ws, styles, sheet, font=LINK_FONT)
        # An internal link: a location inside the workbook, not an external target.
        c.hyperlink = Hyperlink(ref=f"A{r}", location=f"{quote_sheetname(sheet)}!A1", display=sheet)
        ws.append([c, write_cell(ws, styles, title), write_cell(ws, styles, n, "0")])


def cell_text_len(value: Any) -> str:
    if isinstance(value, (dt.date, dt.datetime)):
        return "yyyy-mm-dd"
    return "" if value is None else str(value)


def _study_facts(cfg: StudyConfig, cut: dt.date) -> list[tuple[str, Any]]:
    s = cfg.study
    facts: list[tuple[str, Any]] = [
        ("Study", s.id),
        ("Title", " ".join(s.title.split())),
        ("ClinicalTrials.gov", s.nct_id),
        ("Protocol", s.protocol_id),
        ("Sponsor", s.sponsor),
        ("Data cut-off", cut),
        ("Confidentiality", s.confidentiality),
    ]
    return facts


def write_sponsor_workbook(
    tables: ReportTables,
    cfg: StudyConfig,
    data_cut: dt.date | str,
    path: Path | str,
    first: list[DisplayTable] | tuple[DisplayTable, ...] = (),
    closed: list[DisplayTable] | None = None,
) -> Path:
    """The sponsor workbook: a cover sheet with contents, then one sheet per display table.

    first: tables shown before the report's own (the changes since the previous data cut);
    closed: the closed session's display tables when already built (``display_tables``).

    Every listing is complete here (the DSMB PDF summarises listings beyond its page budget); a
    listing longer than an Excel sheet continues on numbered sheets. Written in openpyxl's
    write-only (streaming) mode.
    """
    cut = as_date(data_cut)
    path = Path(path)
    shown = list(first) + (display_tables(tables) if closed is None else closed)
    wb = Workbook(write_only=True)
    cover = wb.create_sheet("Contents")
    styles = _Styles(cover)
    used = {"contents"}
    plan = []
    for t in shown:
        parts = _parts(t)
        for part in parts:
            title = _sheet_title(t.sheet or t.title, used)
            plan.append((title, t, part, len(parts)))
    contents = [(title, t.title if n == 1 else f"{t.title} (part {part[0] // SHEET_DATA_ROWS + 1} of {n})",
                 part[1] - part[0]) for title, t, part, n in plan]
    facts = _study_facts(cfg, cut) + [
        ("Generated by", f"{GENERATOR}, from the pipeline's analysis tables at data cut-off {cut.isoformat()}"),
        ("Same numbers as", (
            "the DSMB report of this data cut: every sheet is one of its tables or listings "
            "(listings beyond the report's page budget are summarised there and complete here)"
        )),
    ]
    if cfg.config_sha256:
        facts.append(("Study configuration (sha256)", cfg.config_sha256))
    if tables.missing:
        facts.append(("Not available", ", ".join(f"analysis.{m}" for m in tables.missing)))
    _write_cover(cover, styles, cfg, cut, f"{cfg.study.id} sponsor workbook — data cut-off {cut.isoformat()}",
                 facts, contents)
    for title, t, part, n in plan:
        ws = wb.create_sheet(title)
        _write_display_sheet(ws, styles, t, cfg, cut, part, n)
    wb.properties.title = f"{cfg.study.id} sponsor workbook, data cut-off {cut.isoformat()}"
    wb.properties.subject = cfg.study.nct_id
    return _deterministic_save(wb, path, cut)


# --------------------------------------------------------------------------------------------------
# Data-queries workbook

QUERY_COLUMNS = [
    "Query ID", "Rule", "Severity", "Form", "Participant", "Detail", "Status", "Source", "Export",
    "Site", "Record", "First seen (cut)", "Last seen (cut)", "Closed (cut)", "Re-opened (cut)", "Days open",
]
# analysis.data_queries columns behind the query sheets' tracking columns (NULL where a database predates them).
TRACKING_COLUMNS = ("SITEID", "RECORD_KEY", "FIRST_SEEN_CUT", "LAST_SEEN_CUT", "CLOSED_CUT", "REOPENED_CUT", "DAYS_OPEN")
STATUS_SHEETS = (("open", "Open"), ("closed", "Closed"), ("reopened", "Re-opened"))
QUARANTINE_COLUMNS = ["Export", "Form", "File", "Line", "Participant", "Column", "Rule", "Value", "Message"]
# The query sheets as a data manager works them: who and where first (site, participant, form, record),
# then what to ask and how long it has been open; the bookkeeping last.
QUERY_SHEET_COLUMNS = [
    "Query ID", "Status", "Site", "Participant", "Form", "Record", "Detail", "Days open", "Rule",
    "First seen (cut)", "Last seen (cut)", "Closed (cut)", "Re-opened (cut)", "Severity", "Source", "Export",
]


def query_sheet_rows(queries: list[list[Any]]) -> list[list[Any]]:
    """Query rows (QUERY_COLUMNS order) in the sheets' column order, the form by its CRF title."""
    from clinical.crf import form_label

    at = [QUERY_COLUMNS.index(c) for c in QUERY_SHEET_COLUMNS]
    form = QUERY_COLUMNS.index("Form")
    return [[form_label(q[i]) if i == form and q[i] else q[i] for i in at] for q in queries]

def _table_exists(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    return bool(
        con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
            [schema, table],
        ).fetchone()[0]
    )


def _columns(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> set[str]:
    rows = con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = ? AND table_name = ?",
        [schema, table],
    ).fetchall()
    return {r[0].upper() for r in rows}


def _status_key(status: Any) -> str:
    s = "open" if status is None else "".join(ch for ch in str(status).lower() if ch.isalpha())
    return s or "open"


def load_queries(con: duckdb.DuckDBPyConnection) -> tuple[list[list[Any]], list[list[Any]]]:
    """(query rows in QUERY_COLUMNS order, quarantine rows in QUARANTINE_COLUMNS order)."""
    queries: list[list[Any]] = []
    has_queries = _table_exists(con, "analysis", "data_queries")
    if has_queries:
        have = _columns(con, "analysis", "data_queries")
        export = "EXPORT_ID" if "EXPORT_ID" in have else "NULL"
        source = "SOURCE" if "SOURCE" in have else "CASE WHEN RULE_ID LIKE 'INGEST-%' THEN 'quarantine' ELSE 'rule' END"
        tracking = ", ".join(c if c in have else "NULL" for c in TRACKING_COLUMNS)
        days = "DAYS_OPEN DESC NULLS LAST, " if "DAYS_OPEN" in have else ""
        for r in con.execute(
            f"""SELECT QUERY_ID, RULE_ID, SEVERITY, FORM, SUBJID, DETAIL, STATUS, {source}, {export}, {tracking}
                FROM analysis.data_queries
                ORDER BY {days}FORM, SUBJID NULLS FIRST, RULE_ID, DETAIL, QUERY_ID"""
        ).fetchall():
            queries.append(list(r))
    quarantine: list[list[Any]] = []
    if _table_exists(con, "raw", "quarantine"):
        # analysis.data_queries already holds every quarantined row under its stable id; only a
        # database without it (a failed derive) lists the quarantine as open queries here, with
        # the ids, keys and details clinical.queries gives them in that table.
        if not has_queries:
            exports = con.execute("SELECT DISTINCT export_id FROM raw.quarantine ORDER BY export_id").fetchall()
            for (export_id,) in exports:
                sql, params = quarantine_queries_sql(con, export_id)
                queries += [
                    list(r)
                    for r in con.execute(
                        f"""SELECT QUERY_ID, RULE_ID, SEVERITY, FORM, SUBJID, DETAIL, 'Open', SOURCE, $export_id,
                                   SITEID, RECORD_KEY, NULL, NULL, NULL, NULL, NULL
                            FROM ({sql}) ORDER BY FORM, SUBJID NULLS FIRST, RULE_ID, DETAIL, QUERY_ID""",
                        params,
                    ).fetchall()
                ]
        quarantine = [
            list(r)
            for r in con.execute(
                """SELECT export_id, form, file, line, subjid, "column", rule, value, message
                   FROM raw.quarantine ORDER BY export_id, form, file, line, "column", rule"""
            ).fetchall()
        ]
    return queries, quarantine


def _write_rows_sheet(
    ws, styles: _Styles, cfg: StudyConfig, cut: dt.date, title: str, columns: list[str], rows: list[list[Any]],
    empty: str, note: str | None = None,
) -> None:
    title = f"{title} — {cfg.study.id} ({cfg.study.nct_id}) — Data cut-off: {cut.isoformat()}"
    ints = [[isinstance(v, int) and not isinstance(v, bool) for v in row] for row in rows]
    rows = [[safe_cell_value(v) for v in row] for row in rows]
    widths = _column_widths([columns] + rows + ([[empty]] if not rows else []), max_width=80)
    for j, w in widths.items():
        ws.column_dimensions[get_column_letter(j)].width = w
    ws.freeze_panes = f"A{FIRST_DATA_ROW}"  # before the rows (write-only)
    _page_setup(ws, cfg, cut, landscape=True)  # likewise
    _merge(ws, TITLE_ROW, 1, len(columns), widths, title, TITLE_SIZE)
    ws.append([write_cell(ws, styles, title, font=TITLE_FONT,
                          alignment=_align(wrap_text=True, vertical="top") if len(columns) > 1 else None)])
    ws.append([write_cell(ws, styles, note if note is not None else f"{len(rows)} row(s).")])
    ws.append([write_cell(ws, styles, name, font=HEADER_FONT, fill=HEADER_FILL) for name in columns])
    center = _align(horizontal="center")
    wrap = _align(wrap_text=True, vertical="top")
    for row, is_int in zip(rows, ints):
        cells = []
        for clean, whole in zip(row, is_int):
            is_num = isinstance(clean, (int, float)) and not isinstance(clean, bool)
            align = center if is_num else wrap if isinstance(clean, str) and len(clean) > 80 else None
            cells.append(write_cell(ws, styles, clean, "0" if whole else None, alignment=align, clean=True))
        ws.append(cells)
    if not rows:
        ws.append([write_cell(ws, styles, empty, font=NOTE_FONT)])
    ws.auto_filter.ref = f"A{HEADER_ROW}:{get_column_letter(len(columns))}{max(HEADER_ROW, HEADER_ROW + len(rows))}"
    ws.print_title_rows = f"{HEADER_ROW}:{HEADER_ROW}"


def _rows_sheets(wb, styles: _Styles, used: set[str], cfg: StudyConfig, cut: dt.date, name: str, title: str,
                 columns: list[str], rows: list[list[Any]], empty: str) -> list[tuple[str, str, int]]:
    """One sheet, or numbered sheets when the rows exceed an Excel sheet; their contents lines."""
    n = len(rows)
    chunks = [(0, n)] if n <= SHEET_DATA_ROWS else [(i, min(i + SHEET_DATA_ROWS, n)) for i in range(0, n, SHEET_DATA_ROWS)]
    out = []
    for k, (a, b) in enumerate(chunks, start=1):
        ws = wb.create_sheet(_sheet_title(name, used))
        part_title = title if len(chunks) == 1 else f"{title} (part {k} of {len(chunks)})"
        note = None if len(chunks) == 1 else f"Rows {a + 1:,} to {b:,} of {n:,}: the list continues over {len(chunks)} sheets."
        _write_rows_sheet(ws, styles, cfg, cut, part_title, columns, rows[a:b], empty, note)
        out.append((ws.title, part_title, b - a))
    return out


def write_queries_workbook(
    con: duckdb.DuckDBPyConnection,
    cfg: StudyConfig,
    data_cut: dt.date | str,
    path: Path | str,
) -> Path:
    """Data queries for data managers: one sheet per status (Open / Closed / Re-opened; other
    statuses on their own sheet), quarantined rows counted as Open queries, plus the quarantine
    itself (raw.quarantine) with file, line, column and value."""
    cut = as_date(data_cut)
    path = Path(path)
    queries, quarantine = load_queries(con)
    by_status: dict[str, list[list[Any]]] = {}
    for q in queries:
        by_status.setdefault(_status_key(q[6]), []).append(q)
    sheets: list[tuple[str, str, list[list[Any]], list[str], str]] = []
    for key, name in STATUS_SHEETS:
        sheets.append((name, f"{name} data queries", query_sheet_rows(by_status.pop(key, [])), QUERY_SHEET_COLUMNS,
                       f"No {name.lower()} queries."))
    for key in sorted(by_status):  # statuses outside the three expected ones are shown, not dropped
        rows = by_status[key]
        label = str(rows[0][6])
        sheets.append((f"Status {label}", f"Data queries with status {label!r}", query_sheet_rows(rows),
                       QUERY_SHEET_COLUMNS, ""))
    sheets.append(("Quarantine", "Quarantined rows (raw.quarantine)", quarantine, QUARANTINE_COLUMNS, "No quarantined rows."))
    wb = Workbook(write_only=True)
    cover = wb.create_sheet("Contents")
    styles = _Styles(cover)
    # The contents come first in the workbook but name the sheets after it: plan the names first.
    plan_used = {"contents"}
    contents = []
    for name, title, rows, _cols, _empty in sheets:
        n = len(rows)
        k = 1 if n <= SHEET_DATA_ROWS else math.ceil(n / SHEET_DATA_ROWS)
        for i in range(k):
            part = title if k == 1 else f"{title} (part {i + 1} of {k})"
            shown = part
            if name == "Quarantine":
                shown = part.replace("Quarantined rows (raw.quarantine)",
                                     "Quarantined rows (raw.quarantine): listed as Open queries; each keeps its record out of "
                                     "the analysis but PII-IN-TEXT (the text is replaced, the record analysed)")
            contents.append((_sheet_title(name, plan_used), shown, min(SHEET_DATA_ROWS, n - i * SHEET_DATA_ROWS)))
    facts = _study_facts(cfg, cut) + [
        ("Generated by", f"{GENERATOR}, from analysis.data_queries and raw.quarantine at data cut-off {cut.isoformat()}"),
        ("Queries", len(queries)),
        ("Analysis queries table", "present" if _table_exists(con, "analysis", "data_queries") else "not produced"),
    ]
    _write_cover(cover, styles, cfg, cut, f"{cfg.study.id} data queries — data cut-off {cut.isoformat()}", facts, contents)
    used = {"contents"}
    for name, title, rows, cols, empty in sheets:
        _rows_sheets(wb, styles, used, cfg, cut, name, title, cols, rows, empty)
    wb.properties.title = f"{cfg.study.id} data queries, data cut-off {cut.isoformat()}"
    wb.properties.subject = cfg.study.nct_id
    return _deterministic_save(wb, path, cut)
