"""Excel deliverables (openpyxl): the sponsor workbook and the data-queries workbook.

    write_sponsor_workbook(tables, cfg, data_cut, path)   one sheet per DisplayTable (the same
                                                          objects the DSMB PDF renders)
    write_queries_workbook(con, cfg, data_cut, path)      data queries by status + quarantined rows

Safety: every value that comes from data is written by :func:`set_cell`, which cleans it with
:func:`safe_cell_value` (illegal XML control characters removed) and keeps text as text: a string
starting with "=" would otherwise become a formula (openpyxl infers data_type "f"), so the cell's
data type is forced to "s", and text starting with = + - @ tab or CR also gets the quotePrefix
style so that Excel keeps it as text when the cell is edited.

Determinism: no wall clock. The document properties (created / modified) are the data cut-off at
00:00 UTC, and the zip entries are written with that timestamp in a fixed order, so two writes of
the same tables give byte-identical files.
"""

from __future__ import annotations

import datetime as dt
import io
import math
import zipfile
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
from openpyxl import Workbook
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE, Cell
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter, quote_sheetname
from openpyxl.worksheet.hyperlink import Hyperlink
from openpyxl.worksheet.worksheet import Worksheet
from openpyxl.writer.excel import ExcelWriter

from clinical.study import StudyConfig
from deliverables.tables import DisplayTable, ReportTables, display_tables

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


def _page_setup(ws: Worksheet, cfg: StudyConfig, cut: dt.date, landscape: bool = True) -> None:
    ws.oddHeader.left.text = _header_text(f"{cfg.study.id} · {cfg.study.nct_id}")
    ws.oddHeader.center.text = _header_text(f"Data cut-off: {cut.isoformat()}")
    ws.oddHeader.right.text = _header_text(cfg.study.protocol_id)
    ws.oddFooter.left.text = _header_text(cfg.study.confidentiality)
    ws.oddFooter.right.text = "Page &P of &N"
    ws.page_setup.orientation = "landscape" if landscape else "portrait"
    ws.page_setup.paperSize = ws.PAPERSIZE_A4
    ws.page_setup.fitToWidth = 1
    ws.page_setup.fitToHeight = 0
    ws.sheet_properties.pageSetUpPr.fitToPage = True
    ws.print_options.gridLines = False


def _fit_columns(
    ws: Worksheet, first_row: int, min_width: int = 6, max_width: int = 60, skip_rows: frozenset[int] = frozenset()
) -> None:
    """Column widths from the longest text in the header and data rows (title rows and skip_rows,
    whose text runs across empty neighbours, excluded)."""
    widths: dict[int, int] = {}
    for row in ws.iter_rows(min_row=first_row):
        for c in row:
            if c.value is None or c.row in skip_rows:
                continue
            if isinstance(c.value, dt.date):
                n = 10
            elif isinstance(c.value, float):
                n = len(f"{c.value:.1f}")
            else:
                n = max((len(line) for line in str(c.value).splitlines()), default=0)
                # Wide (CJK) characters take about two columns.
                n += sum(1 for ch in str(c.value) if ord(ch) > 0x2E80)
            widths[c.column] = max(widths.get(c.column, 0), n)
    for col, n in widths.items():
        ws.column_dimensions[get_column_letter(col)].width = max(min_width, min(max_width, n + 2))
    for row in ws.iter_rows(min_row=first_row):
        for c in row:
            if isinstance(c.value, str) and len(c.value) > max_width and c.row not in skip_rows:
                c.alignment = Alignment(
                    wrap_text=True, vertical="top", horizontal=c.alignment.horizontal, indent=c.alignment.indent
                )


def _span(ws: Worksheet, row: int, first_col: int, last_col: int, *, font: Font | None = None,
          italic: bool = False) -> None:
    """Merge a text cell across columns, wrap it, and give the row the height the text needs
    (spreadsheets do not fit the height of merged cells)."""
    if last_col <= first_col:
        return
    cell = ws.cell(row=row, column=first_col)
    text = "" if cell.value is None else str(cell.value)
    width = sum(ws.column_dimensions[get_column_letter(c)].width or 8.43 for c in range(first_col, last_col + 1))
    ws.merge_cells(start_row=row, start_column=first_col, end_row=row, end_column=last_col)
    cell.alignment = Alignment(wrap_text=True, vertical="top")
    if font is not None:
        cell.font = font
    elif italic:
        cell.font = NOTE_FONT
    size = (font.sz if font is not None and font.sz else 11) or 11
    chars_per_line = max(1.0, width * 11 / size * 0.95)
    lines = sum(max(1, math.ceil(len(part) / chars_per_line)) for part in text.split("\n"))
    ws.row_dimensions[row].height = round(lines * size * 1.35 + 2, 1)


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


def _deterministic_save(wb: Workbook, path: Path, cut: dt.date) -> Path:
    """Save with fixed document dates and zip timestamps (openpyxl's save() stamps 'now')."""
    stamp = dt.datetime(cut.year, cut.month, cut.day)
    wb.properties.created = stamp
    wb.properties.modified = stamp
    wb.properties.lastModifiedBy = GENERATOR
    wb.properties.creator = GENERATOR
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, allowZip64=True) as archive:
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


def _as_date(value: dt.date | str) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value))


# --------------------------------------------------------------------------------------------------
# Sponsor workbook

TITLE_ROW, NOTE_ROW, HEADER_ROW = 1, 2, 3
FIRST_DATA_ROW = HEADER_ROW + 1


def _write_display_sheet(ws: Worksheet, t: DisplayTable, cfg: StudyConfig, cut: dt.date) -> None:
    set_cell(ws, TITLE_ROW, 1, f"{t.title} — {cfg.study.id} ({cfg.study.nct_id}) — Data cut-off: {cut.isoformat()}")
    ws.cell(row=TITLE_ROW, column=1).font = TITLE_FONT
    set_cell(ws, NOTE_ROW, 1, t.footnote)
    ws.cell(row=NOTE_ROW, column=1).font = Font(italic=True, size=9)
    columns = list(t.columns) + list(t.extra_columns)
    for j, name in enumerate(columns, start=1):
        c = set_cell(ws, HEADER_ROW, j, name)
        c.font = HEADER_FONT
        c.fill = HEADER_FILL
        c.alignment = Alignment(wrap_text=True, vertical="bottom")
    r = FIRST_DATA_ROW
    for i, row in enumerate(t.rows):
        style = t.row_styles[i]
        values = list(row) + (list(t.extra_rows[i]) if t.extra_columns else [])
        for j, v in enumerate(values, start=1):
            c = set_cell(ws, r, j, v, _number_format(columns[j - 1], v))
            if style == "note":
                c.alignment = Alignment(vertical="top", wrap_text=j > 1)
            elif j == 1:
                c.alignment = Alignment(horizontal="left", indent=2 if style == "indent" else 0)
            elif (t.kind == "table" and j <= len(t.columns)) or isinstance(c.value, (int, float)):
                # Display cells mix numbers and "n (%)" text: centre them like the PDF does.
                c.alignment = Alignment(horizontal="center")
            if style == "group":
                c.font = GROUP_FONT
            elif style in ("note", "set"):
                c.font = NOTE_FONT
        r += 1
    if not t.rows:
        set_cell(ws, r, 1, t.empty_text).font = NOTE_FONT
    last_col = get_column_letter(len(columns))
    ws.freeze_panes = f"B{FIRST_DATA_ROW}"
    notes = frozenset(FIRST_DATA_ROW + i for i, st in enumerate(t.row_styles) if st == "note")
    _fit_columns(ws, HEADER_ROW, skip_rows=notes)
    # Trailing note rows (the escalation decision) stay outside the filter range and span the table.
    n_data = len(t.rows)
    while n_data and t.row_styles[n_data - 1] == "note":
        n_data -= 1
    ws.auto_filter.ref = f"A{HEADER_ROW}:{last_col}{HEADER_ROW + n_data}"
    for note_row in sorted(notes):
        if note_row - FIRST_DATA_ROW >= n_data and len(columns) > 2:
            _span(ws, note_row, 2, len(t.columns), italic=True)
    _span(ws, TITLE_ROW, 1, len(t.columns), font=TITLE_FONT)
    _span(ws, NOTE_ROW, 1, len(t.columns), font=Font(italic=True, size=9))
    _page_setup(ws, cfg, cut, landscape=True)
    ws.print_title_rows = f"{HEADER_ROW}:{HEADER_ROW}"
    # Print what the PDF shows; the numeric companion columns are for filtering on screen.
    ws.print_area = f"A1:{get_column_letter(len(t.columns))}{FIRST_DATA_ROW + max(len(t.rows), 1) - 1}"


def _write_cover(
    ws: Worksheet,
    cfg: StudyConfig,
    cut: dt.date,
    heading: str,
    facts: list[tuple[str, Any]],
    contents: list[tuple[str, str, int]],
) -> None:
    set_cell(ws, 1, 1, heading).font = Font(bold=True, size=14)
    r = 3
    for label, value in facts:
        set_cell(ws, r, 1, label).font = HEADER_FONT
        ws.cell(row=r, column=1).alignment = Alignment(vertical="top")
        c = set_cell(ws, r, 2, value)
        c.alignment = Alignment(horizontal="left", vertical="top", wrap_text=True)
        lines = max(1, math.ceil(len(cell_text_len(value)) / 110))
        if lines > 1:
            ws.row_dimensions[r].height = 15 * lines
        r += 1
    r += 1
    set_cell(ws, r, 1, "Contents").font = Font(bold=True, size=12)
    r += 1
    for j, name in enumerate(("Sheet", "Title", "Rows"), start=1):
        c = set_cell(ws, r, j, name)
        c.font = HEADER_FONT
        c.fill = HEADER_FILL
    header_row = r
    for sheet, title, n in contents:
        r += 1
        c = set_cell(ws, r, 1, sheet)
        # An internal link: a location inside the workbook, not an external target.
        c.hyperlink = Hyperlink(ref=c.coordinate, location=f"{quote_sheetname(sheet)}!A1", display=sheet)
        c.font = LINK_FONT
        set_cell(ws, r, 2, title)
        set_cell(ws, r, 3, n, "0")
    ws.column_dimensions["A"].width = 30
    ws.column_dimensions["B"].width = 90
    ws.column_dimensions["C"].width = 8
    _page_setup(ws, cfg, cut, landscape=False)


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
) -> Path:
    """The sponsor workbook: a cover sheet with contents, then one sheet per display table."""
    cut = _as_date(data_cut)
    path = Path(path)
    shown = display_tables(tables)
    wb = Workbook()
    cover = wb.active
    used = {"contents"}
    cover.title = "Contents"
    contents = []
    for t in shown:
        ws = wb.create_sheet(_sheet_title(t.sheet or t.title, used))
        _write_display_sheet(ws, t, cfg, cut)
        contents.append((ws.title, t.title, len(t.rows)))
    facts = _study_facts(cfg, cut) + [
        ("Generated by", f"{GENERATOR}, from the pipeline's analysis tables at data cut-off {cut.isoformat()}"),
        ("Same numbers as", "the DSMB report of this data cut: every sheet is one of its tables or listings"),
    ]
    if cfg.config_sha256:
        facts.append(("Study configuration (sha256)", cfg.config_sha256))
    if tables.missing:
        facts.append(("Not available", ", ".join(f"analysis.{m}" for m in tables.missing)))
    _write_cover(cover, cfg, cut, f"{cfg.study.id} sponsor workbook — data cut-off {cut.isoformat()}", facts, contents)
    wb.properties.title = f"{cfg.study.id} sponsor workbook, data cut-off {cut.isoformat()}"
    wb.properties.subject = cfg.study.nct_id
    return _deterministic_save(wb, path, cut)


# --------------------------------------------------------------------------------------------------
# Data-queries workbook

QUERY_COLUMNS = ["Query ID", "Rule", "Severity", "Form", "Participant", "Detail", "Status", "Source", "Export"]
STATUS_SHEETS = (("open", "Open"), ("closed", "Closed"), ("reopened", "Re-opened"))
QUARANTINE_COLUMNS = ["Export", "Form", "File", "Line", "Participant", "Column", "Rule", "Value", "Message"]

# The same stable id as clinical.queries (QUERY_ID_MACRO), so a quarantined row already listed in
# analysis.data_queries is not listed twice.
QUARANTINE_AS_QUERIES = """
SELECT 'Q-' || upper(left(sha256(array_to_string(
          ['INGEST-' || rule, form, subjid, "column", coalesce(value, '')], chr(31))), 10)) AS QUERY_ID,
       'INGEST-' || rule AS RULE_ID, 'WARN' AS SEVERITY, form AS FORM, subjid AS SUBJID,
       file || ' line ' || line || ', column ' || "column" || ': ' || message
         || ' (value: ' || coalesce('"' || value || '"', 'blank') || ')' AS DETAIL,
       'Open' AS STATUS, 'quarantine' AS SOURCE, export_id AS EXPORT_ID
FROM raw.quarantine
ORDER BY form, subjid NULLS FIRST, rule, line, "column"
"""


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
    seen: set[str] = set()
    if _table_exists(con, "analysis", "data_queries"):
        export = "EXPORT_ID" if "EXPORT_ID" in _columns(con, "analysis", "data_queries") else "NULL"
        for r in con.execute(
            f"""SELECT QUERY_ID, RULE_ID, SEVERITY, FORM, SUBJID, DETAIL, STATUS,
                       CASE WHEN RULE_ID LIKE 'INGEST-%' THEN 'quarantine' ELSE 'rule' END, {export}
                FROM analysis.data_queries
                ORDER BY FORM, SUBJID NULLS FIRST, RULE_ID, DETAIL, QUERY_ID"""
        ).fetchall():
            queries.append(list(r))
            seen.add(r[0])
    quarantine: list[list[Any]] = []
    if _table_exists(con, "raw", "quarantine"):
        for r in con.execute(QUARANTINE_AS_QUERIES).fetchall():
            if r[0] not in seen:  # quarantined rows count as open queries
                queries.append(list(r))
                seen.add(r[0])
        quarantine = [
            list(r)
            for r in con.execute(
                """SELECT export_id, form, file, line, subjid, "column", rule, value, message
                   FROM raw.quarantine ORDER BY export_id, form, file, line, "column", rule"""
            ).fetchall()
        ]
    return queries, quarantine


def _write_rows_sheet(
    ws: Worksheet, cfg: StudyConfig, cut: dt.date, title: str, columns: list[str], rows: list[list[Any]], empty: str
) -> None:
    set_cell(ws, TITLE_ROW, 1, f"{title} — {cfg.study.id} ({cfg.study.nct_id}) — Data cut-off: {cut.isoformat()}")
    ws.cell(row=TITLE_ROW, column=1).font = TITLE_FONT
    set_cell(ws, NOTE_ROW, 1, f"{len(rows)} row(s).")
    for j, name in enumerate(columns, start=1):
        c = set_cell(ws, HEADER_ROW, j, name)
        c.font = HEADER_FONT
        c.fill = HEADER_FILL
    for i, row in enumerate(rows):
        for j, v in enumerate(row, start=1):
            c = set_cell(ws, FIRST_DATA_ROW + i, j, v, "0" if isinstance(v, int) and not isinstance(v, bool) else None)
            if isinstance(c.value, (int, float)):
                c.alignment = Alignment(horizontal="center")
    if not rows:
        set_cell(ws, FIRST_DATA_ROW, 1, empty).font = NOTE_FONT
    ws.auto_filter.ref = f"A{HEADER_ROW}:{get_column_letter(len(columns))}{max(HEADER_ROW, HEADER_ROW + len(rows))}"
    ws.freeze_panes = f"A{FIRST_DATA_ROW}"
    _fit_columns(ws, HEADER_ROW, max_width=80)
    _span(ws, TITLE_ROW, 1, len(columns), font=TITLE_FONT)
    _page_setup(ws, cfg, cut, landscape=True)
    ws.print_title_rows = f"{HEADER_ROW}:{HEADER_ROW}"


def write_queries_workbook(
    con: duckdb.DuckDBPyConnection,
    cfg: StudyConfig,
    data_cut: dt.date | str,
    path: Path | str,
) -> Path:
    """Data queries for data managers: one sheet per status (Open / Closed / Re-opened; other
    statuses on their own sheet), quarantined rows counted as Open queries, plus the quarantine
    itself (raw.quarantine) with file, line, column and value."""
    cut = _as_date(data_cut)
    path = Path(path)
    queries, quarantine = load_queries(con)
    by_status: dict[str, list[list[Any]]] = {}
    for q in queries:
        by_status.setdefault(_status_key(q[6]), []).append(q)
    wb = Workbook()
    cover = wb.active
    cover.title = "Contents"
    used = {"contents"}
    contents = []
    for key, name in STATUS_SHEETS:
        ws = wb.create_sheet(_sheet_title(name, used))
        rows = by_status.pop(key, [])
        _write_rows_sheet(ws, cfg, cut, f"{name} data queries", QUERY_COLUMNS, rows, f"No {name.lower()} queries.")
        contents.append((ws.title, f"{name} data queries", len(rows)))
    for key in sorted(by_status):  # statuses outside the three expected ones are shown, not dropped
        rows = by_status[key]
        label = str(rows[0][6])
        ws = wb.create_sheet(_sheet_title(f"Status {label}", used))
        _write_rows_sheet(ws, cfg, cut, f"Data queries with status {label!r}", QUERY_COLUMNS, rows, "")
        contents.append((ws.title, f"Data queries with status {label!r}", len(rows)))
    ws = wb.create_sheet(_sheet_title("Quarantine", used))
    _write_rows_sheet(ws, cfg, cut, "Quarantined rows (raw.quarantine)", QUARANTINE_COLUMNS, quarantine,
                      "No quarantined rows.")
    contents.append((ws.title, "Quarantined rows (raw.quarantine): kept out of the analysis, listed as Open queries", len(quarantine)))
    facts = _study_facts(cfg, cut) + [
        ("Generated by", f"{GENERATOR}, from analysis.data_queries and raw.quarantine at data cut-off {cut.isoformat()}"),
        ("Queries", len(queries)),
        ("Analysis queries table", "present" if _table_exists(con, "analysis", "data_queries") else "not produced"),
    ]
    _write_cover(cover, cfg, cut, f"{cfg.study.id} data queries — data cut-off {cut.isoformat()}", facts, contents)
    wb.properties.title = f"{cfg.study.id} data queries, data cut-off {cut.isoformat()}"
    wb.properties.subject = cfg.study.nct_id
    return _deterministic_save(wb, path, cut)
