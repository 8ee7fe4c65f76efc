"""The workbooks' fast row writer (deliverables.workbooks._SheetRows) writes what openpyxl writes.

_SheetRows formats plain data rows as XML itself and uses openpyxl internals to put them into the
sheet's stream. These tests compare its bytes with openpyxl's own writer (ws.append), so that an
openpyxl or lxml release that changes either fails here, not in a deliverable.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import subprocess
import sys
import zipfile
from copy import copy
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
from openpyxl import Workbook, load_workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.worksheet._write_only import WriteOnlyWorksheet
from openpyxl.worksheet._writer import WorksheetWriter

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from clinical.study import load_study  # noqa: E402
from deliverables import workbooks  # noqa: E402
from deliverables.tables import DisplayTable, load_report_tables  # noqa: E402
from deliverables.workbooks import _SheetRows  # noqa: E402

TEXTS = [
    "plain", "", " ", "  two", "lead ", "\xa0nbsp", "\u2028line separator", "tab\tinside", "\ttab first",
    "line\nfeed", "carriage\rreturn", "crlf\r\nend", "\n", "a&b<c>d\"e'f", "]]>", "<![CDATA[x]]>", "&amp;",
    "=1+2", "+1", "-1", "@SUM(A1)", "#N/A", "#REF!", "中文 CJK", "émoji 😀", "x" * 32767,
]
NUMBERS = [0, 1, -7, 10**15, 10**17, 2**63, 1.5, 0.1 + 0.2, -0.0, 1e-20, 1e300, 123456789.123456789]


def _styles(wb: Workbook, ws) -> list:
    """A few cell styles (StyleArrays), made as the workbook writer makes them (workbooks._Styles)."""
    styles = workbooks._Styles(ws)
    return [None] + [styles.get(*combination) for combination in [
        (Font(bold=True), None, None, None, False),
        (None, PatternFill("solid", fgColor="DFE7EF"), Alignment(horizontal="center"), None, False),
        (None, None, Alignment(wrap_text=True, vertical="top"), "0", False),
        (Font(italic=True), None, None, "0.0E+00", True),
        (None, None, None, "0.0", False),
    ]]


def _rows() -> list[list]:
    """Rows of plain values: every text and number above, empty cells, an empty row."""
    values = TEXTS + NUMBERS + [None]
    rows = [[values[(i + k * 5) % len(values)] for k in range(7)] for i in range(len(values))]
    return rows + [[None, None, None], [], ["last"]]


def _openpyxl_cell(ws, value, style):
    """The cell openpyxl writes for a value of a data row (text kept as text, as write_cell does)."""
    cell = WriteOnlyCell(ws, value=value)
    if isinstance(value, str):
        cell.data_type = "s"
    if style is not None:
        cell._style = copy(style)
    return cell


def _sheet_parts(wb: Workbook) -> dict[str, bytes]:
    buf = io.BytesIO()
    wb.save(buf)
    with zipfile.ZipFile(buf) as z:
        return {n: z.read(n) for n in z.namelist() if n.startswith("xl/worksheets/") or n == "xl/styles.xml"}


def _both(write_fast, write_reference) -> tuple[dict[str, bytes], dict[str, bytes]]:
    out = []
    for fast in (True, False):
        wb = Workbook(write_only=True)
        ws = wb.create_sheet("Data")
        ws.column_dimensions["A"].width = 20
        ws.freeze_panes = "B4"
        styles = _styles(wb, ws)
        (write_fast if fast else write_reference)(ws, styles)
        out.append(_sheet_parts(wb))
    return out[0], out[1]


def test_openpyxl_internals_the_row_writer_uses_are_there():
    # If this fails, openpyxl changed how a write-only sheet streams its rows: see _SheetRows.
    for name in ("_get_writer", "_values_to_row", "_rows", "_writer"):
        assert hasattr(WriteOnlyWorksheet, name), f"openpyxl WriteOnlyWorksheet.{name} is gone"
    for name in ("write_row", "get_stream", "write_top"):
        assert hasattr(WorksheetWriter, name), f"openpyxl WorksheetWriter.{name} is gone"


def test_plain_rows_are_the_bytes_openpyxl_writes():
    rows = _rows()

    def style_of(styles, i, j, value):
        return styles[(i + j) % len(styles)]

    def fast(ws, styles):
        sheet = _SheetRows(ws)
        sheet.append(["Title"])
        for i, row in enumerate(rows):
            assert sheet.append_plain(row, [style_of(styles, i, j, v) for j, v in enumerate(row)])

    def reference(ws, styles):
        ws.append(["Title"])
        for i, row in enumerate(rows):
            ws.append([_openpyxl_cell(ws, v, style_of(styles, i, j, v)) for j, v in enumerate(row)])

    got, want = _both(fast, reference)
    assert got == want
    assert b'xml:space="preserve"' in got["xl/worksheets/sheet1.xml"]  # the cases above were written
    assert b"&#13;" in got["xl/worksheets/sheet1.xml"]


def test_rows_plain_rows_do_not_take_are_left_to_openpyxl():
    """A value of another type or a row with a height: append_plain writes nothing, append writes it."""
    others = [dt.date(2025, 1, 2), dt.datetime(2025, 1, 2, 3, 4), True, Decimal("1.5"), float("nan"),
              float("inf"), dt.time(1, 2)]

    def fast(ws, styles):
        sheet = _SheetRows(ws)
        for k, other in enumerate(others):
            row = ["text", 1, other]
            assert not sheet.append_plain(row, [styles[1], None, styles[k % len(styles)]])
            sheet.append([_openpyxl_cell(ws, v, s) for v, s in zip(row, [styles[1], None, styles[k % len(styles)]])])
            assert sheet.append_plain(["after", 2], [None, styles[2]])
        ws.row_dimensions[sheet.rows + 1].height = 30
        assert not sheet.append_plain(["tall"], [None])
        sheet.append(["tall"])
        assert sheet.append_plain(["next"], [None])

    def reference(ws, styles):
        for k, other in enumerate(others):
            row = ["text", 1, other]
            ws.append([_openpyxl_cell(ws, v, s) for v, s in zip(row, [styles[1], None, styles[k % len(styles)]])])
            ws.append([_openpyxl_cell(ws, "after", None), _openpyxl_cell(ws, 2, styles[2])])
        ws.row_dimensions[len(others) * 2 + 1].height = 30
        ws.append(["tall"])
        ws.append([_openpyxl_cell(ws, "next", None)])

    got, want = _both(fast, reference)
    assert got == want


def _tables() -> list[DisplayTable]:
    """Display tables with every row style, kind of value, trailing notes and companion columns."""
    values = TEXTS[:-1] + ["y" * 70] + NUMBERS + [None, True, dt.date(2025, 3, 4), Decimal("2.5"), float("nan")]
    kinds = ["", "indent", "group", "set"]
    rows, styles = [], []
    for i in range(len(values) * 2):
        rows.append([values[(i + k * 7) % len(values)] for k in range(4)])
        styles.append("note" if i % 13 == 5 else kinds[i % 4])
        if styles[-1] == "note":
            rows[-1][1] = f"note {i}"
    rows += [["", "A closing note across the table " * 5, None, None], ["", "another", None, None]]
    styles += ["note", "note"]
    extra = [[values[(i * 3) % len(values)], i, i / 7] for i in range(len(rows))]
    return [
        DisplayTable(id="table", title="A table", columns=["Term", "n (%)", "Cells/kg", "Rate %"], rows=rows,
                     row_styles=styles, footnote="=a footnote & more", extra_columns=["x", "n", "pct"],
                     extra_rows=extra),
        DisplayTable(id="listing", title="A listing", columns=["Term", "n (%)", "Cells/kg", "Rate %"],
                     rows=[r[:] for r in rows], kind="listing"),
        DisplayTable(id="empty", title="Empty", columns=["Only"], rows=[], kind="listing"),
    ]


@pytest.mark.parametrize("sheet_rows", [None, 5], ids=["one sheet each", "listings split over sheets"])
def test_sponsor_workbook_is_the_bytes_of_openpyxls_own_writer(tmp_path, monkeypatch, sheet_rows):
    """The whole workbook with the fast rows, and with every row left to openpyxl: the same bytes."""
    cfg = load_study(ROOT / "studies" / "im83.yaml")
    tables = load_report_tables(duckdb.connect(), strict=False)
    if sheet_rows:
        monkeypatch.setattr(workbooks, "SHEET_DATA_ROWS", sheet_rows)
    fast = workbooks.write_sponsor_workbook(tables, cfg, "2025-12-31", tmp_path / "fast.xlsx", closed=_tables())
    again = workbooks.write_sponsor_workbook(tables, cfg, "2025-12-31", tmp_path / "again.xlsx", closed=_tables())
    monkeypatch.setattr(_SheetRows, "append_plain", lambda self, values, styles: False)
    slow = workbooks.write_sponsor_workbook(tables, cfg, "2025-12-31", tmp_path / "slow.xlsx", closed=_tables())
    assert fast.read_bytes() == slow.read_bytes()
    assert again.read_bytes() == fast.read_bytes()


def test_without_lxml_openpyxl_writes_every_row(tmp_path):
    """OPENPYXL_LXML=False (openpyxl's own XML writer): append_plain leaves every row to openpyxl."""
    script = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
from openpyxl import Workbook, LXML
from deliverables.workbooks import _SheetRows
assert not LXML
wb = Workbook(write_only=True)
ws = wb.create_sheet("Data")
sheet = _SheetRows(ws)
assert not sheet.append_plain(["text", 1], [None, None])
sheet.append(["text", 1])
wb.save({str(tmp_path / "plain.xlsx")!r})
"""
    env = dict(os.environ, OPENPYXL_LXML="False")
    subprocess.run([sys.executable, "-c", script], check=True, env=env)
    ws = load_workbook(tmp_path / "plain.xlsx")["Data"]
    assert [list(r) for r in ws.iter_rows(values_only=True)] == [["text", 1]]
