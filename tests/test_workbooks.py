"""Sponsor and data-queries workbooks: same numbers as the PDF, text stays text, deterministic."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import duckdb
import pytest
from openpyxl import Workbook, load_workbook

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
for p in (ROOT, TESTS):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from clinical.queries import quarantine_queries_sql
from clinical.study import load_study  # noqa: E402
from deliverables.dsmb import cell_text, write_dsmb_pdf  # noqa: E402
from deliverables.tables import display_tables, load_report_tables  # noqa: E402
from deliverables.workbooks import (  # noqa: E402
    FIRST_DATA_ROW,
    HEADER_ROW,
    safe_cell_value,
    set_cell,
    write_queries_workbook,
    write_sponsor_workbook,
)

try:
    from test_dsmb import CHINESE, DATA_CUT, FORMULA, XSS, make_fixture_db, norm, pdf_text, row_text
except ImportError:  # tests collected as a package
    from tests.test_dsmb import CHINESE, DATA_CUT, FORMULA, XSS, make_fixture_db, norm, pdf_text, row_text

MAIN_TABLES = ("participant_flow", "dose_escalation", "teae_overview")


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_fixture_db(tmp_path_factory.mktemp("wbdb") / "trial.duckdb")


@pytest.fixture(scope="module")
def cfg():
    return load_study(ROOT / "studies" / "im83.yaml")


@pytest.fixture(scope="module")
def tables(db: Path):
    con = duckdb.connect(str(db), read_only=True)
    try:
        return load_report_tables(con)
    finally:
        con.close()


@pytest.fixture(scope="module")
def sponsor_path(tables, cfg, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sponsor_workbook(tables, cfg, DATA_CUT, tmp_path_factory.mktemp("wb") / "sponsor.xlsx")


def sheet_rows(ws, ncols: int) -> list[list]:
    out = []
    for row in ws.iter_rows(min_row=FIRST_DATA_ROW, max_col=ncols, values_only=True):
        out.append(list(row))
    return out


def all_values(path: Path) -> dict[str, list[tuple]]:
    wb = load_workbook(path)
    return {ws.title: [tuple(r) for r in ws.iter_rows(values_only=True)] for ws in wb.worksheets}


# --------------------------------------------------------------------------------------------------
# Cell safety


def test_safe_cell_value_cleans():
    assert safe_cell_value("a\x07b\x00c") == "abc"
    assert safe_cell_value("tab\tnewline\n") == "tab\tnewline\n"
    assert safe_cell_value(float("nan")) is None
    assert safe_cell_value(3) == 3
    assert safe_cell_value(dt.date(2025, 1, 2)) == dt.date(2025, 1, 2)
    assert len(safe_cell_value("x" * 40000)) == 32767


@pytest.mark.parametrize("text", [FORMULA, "+1", "-2+3", "@SUM(A1)", "\t=1", "#N/A", "=1+1"])
def test_formula_looking_text_is_a_string_cell(text, tmp_path):
    wb = Workbook()
    ws = wb.active
    c = set_cell(ws, 1, 1, text)
    assert c.data_type == "s"
    path = tmp_path / "f.xlsx"
    wb.save(path)
    back = load_workbook(path).active["A1"]
    assert back.data_type == "s"
    assert back.value == text
    if text[0] in "=+-@\t":
        assert back.quotePrefix


# --------------------------------------------------------------------------------------------------
# Sponsor workbook


def test_sheets_and_cover(sponsor_path, tables, cfg):
    wb = load_workbook(sponsor_path)
    shown = display_tables(tables)
    assert wb.sheetnames == ["Contents"] + [t.sheet for t in shown]
    cover = wb["Contents"]
    values = [c for row in cover.iter_rows(values_only=True) for c in row if c is not None]
    for text in (cfg.study.id, cfg.study.nct_id, cfg.study.protocol_id):
        assert text in values
    assert dt.datetime(2025, 12, 31) in values  # the data cut, as a date cell
    links = {c.value: c.hyperlink.location for row in cover.iter_rows() for c in row if c.hyperlink}
    for t in shown:
        assert links[t.sheet] == f"'{t.sheet}'!A1"
    # No wall-clock time anywhere: document dates are the data cut.
    assert wb.properties.created == dt.datetime(2025, 12, 31)
    assert wb.properties.modified == dt.datetime(2025, 12, 31)


def test_every_sheet_has_cut_filter_and_frozen_header(sponsor_path, tables):
    wb = load_workbook(sponsor_path)
    for t in display_tables(tables):
        ws = wb[t.sheet]
        assert "Data cut-off: 2025-12-31" in ws["A1"].value
        assert ws.freeze_panes in ("A4", "B4")
        assert ws.auto_filter.ref.startswith(f"A{HEADER_ROW}:")
        header = [c.value for c in ws[HEADER_ROW]]
        assert header[: len(t.columns)] == t.columns
        assert all(c.font.b for c in ws[HEADER_ROW])
        # Printing shows the display columns and every row (the escalation note row included).
        assert ws.print_area.endswith(f"${FIRST_DATA_ROW + max(len(t.rows), 1) - 1}")
        for i, style in enumerate(t.row_styles):
            if style == "indent":
                c = ws.cell(FIRST_DATA_ROW + i, 1)
                assert c.alignment.indent == 2 and c.alignment.horizontal == "left"


def test_workbook_cells_equal_pdf(sponsor_path, tables, cfg, tmp_path):
    """The three main tables: workbook cells == display rows, and each row is in the PDF text."""
    pdf = write_dsmb_pdf(tables, cfg, DATA_CUT, tmp_path / "dsmb.pdf")
    text = norm(pdf_text(pdf))
    wb = load_workbook(sponsor_path)
    shown = {t.id: t for t in display_tables(tables)}
    for tid in MAIN_TABLES:
        t = shown[tid]
        got = sheet_rows(wb[t.sheet], len(t.columns))
        assert len(got) == len(t.rows)
        for expected, cells, style in zip(t.rows, got, t.row_styles):
            assert [cell_text(v) for v in cells] == [cell_text(v) for v in expected], (tid, expected)
            if style != "note":
                assert row_text(cells) in text, (tid, cells)


def test_teae_numbers_stored_as_numbers(sponsor_path, tables):
    wb = load_workbook(sponsor_path)
    t = next(t for t in display_tables(tables) if t.id == "teae_overview")
    ws = wb[t.sheet]
    header = [c.value for c in ws[HEADER_ROW]]
    row = next(r for r in ws.iter_rows(min_row=FIRST_DATA_ROW) if r[0].value == "Any TEAE")
    cells = dict(zip(header, row))
    assert cells["Total (N=6)"].value == "5 (83.3%)"
    assert cells["Total n"].value == 5 and cells["Total n"].data_type == "n"
    assert cells["Total %"].value == 83.3 and cells["Total %"].number_format == "0.0"
    assert cells["DL3 %"].value is None  # N = 0: no percentage


def test_free_text_survives_as_text(sponsor_path):
    wb = load_workbook(sponsor_path)
    sae = wb["SAE listing"]
    header = [c.value for c in sae[HEADER_ROW]]
    col = header.index("Reported term")
    terms = {r[col].value: r[col] for r in sae.iter_rows(min_row=FIRST_DATA_ROW)}
    assert terms[FORMULA].data_type == "s"
    assert terms[XSS].data_type == "s"
    assert any(CHINESE in (v or "") for v in terms)
    deaths = wb["Deaths"]
    assert any(CHINESE in str(c.value) for row in deaths.iter_rows(min_row=FIRST_DATA_ROW) for c in row if c.value)


def test_two_writes_identical(tables, cfg, sponsor_path, tmp_path):
    again = write_sponsor_workbook(tables, cfg, DATA_CUT, tmp_path / "again.xlsx")
    assert all_values(again) == all_values(sponsor_path)
    assert again.read_bytes() == sponsor_path.read_bytes()


# --------------------------------------------------------------------------------------------------
# Data-queries workbook


def test_queries_workbook_from_quarantine_only(db, cfg, tmp_path):
    con = duckdb.connect(str(db), read_only=True)
    path = write_queries_workbook(con, cfg, DATA_CUT, tmp_path / "queries.xlsx")
    con.close()
    wb = load_workbook(path)
    assert wb.sheetnames == ["Contents", "Open", "Closed", "Re-opened", "Quarantine"]
    open_rows = [r for r in wb["Open"].iter_rows(min_row=FIRST_DATA_ROW, values_only=True)]
    assert len(open_rows) == 3  # the quarantined rows are open queries
    assert all(r[14] == "quarantine" and r[1] == "Open" for r in open_rows)  # Source, Status (sheet order)
    header = next(wb["Open"].iter_rows(min_row=HEADER_ROW, max_row=HEADER_ROW, values_only=True))
    assert list(header[:8]) == ["Query ID", "Status", "Site", "Participant", "Form", "Record", "Detail", "Days open"]
    assert all(r[4].endswith(")") and "(" in r[4] for r in open_rows)  # the form by its CRF title, e.g. "Adverse events (ae)"
    q = wb["Quarantine"]
    values = [c for row in q.iter_rows(min_row=FIRST_DATA_ROW) for c in row]
    formula = next(c for c in values if c.value == "=1+1")  # \x07 removed, kept as text
    assert formula.data_type == "s"
    assert wb["Closed"].cell(FIRST_DATA_ROW, 1).value == "No closed queries."
    assert "Data cut-off: 2025-12-31" in wb["Open"]["A1"].value
    assert wb["Open"].auto_filter.ref == f"A{HEADER_ROW}:P{HEADER_ROW + 3}"  # 16 columns, tracking included


def test_queries_workbook_by_status(db, cfg, tmp_path):
    work = tmp_path / "q.duckdb"
    work.write_bytes(Path(db).read_bytes())
    con = duckdb.connect(str(work))
    con.execute(
        """CREATE TABLE analysis.data_queries (QUERY_ID VARCHAR, RULE_ID VARCHAR, SEVERITY VARCHAR, FORM VARCHAR,
           SUBJID VARCHAR, DETAIL VARCHAR, STATUS VARCHAR, EXPORT_ID VARCHAR)"""
    )
    con.executemany(
        "INSERT INTO analysis.data_queries VALUES (?, ?, ?, ?, ?, ?, ?, 'EXP-2025-12-31')",
        [
            ("Q-1", "AE-DATE", "ERROR", "ae", "004", "AE end before start", "Open"),
            ("Q-2", "LB-RANGE", "WARN", "lb", "005", "=cmd|' /C calc'!A0", "Closed"),
            ("Q-3", "DS-DEATH", "ERROR", "ds", "005", "death date missing", "Re-opened"),
            ("Q-4", "EX-DOSE", "WARN", "inf", "006", "dose 20% above level", "Pending review"),
        ],
    )
    # The lb quarantine row is already a query in analysis.data_queries (same stable id).
    sql, params = quarantine_queries_sql(con, "EXP-2025-12-31")
    qid = con.execute(f"SELECT QUERY_ID FROM ({sql}) WHERE FORM = 'lb'", params).fetchone()[0]
    con.execute(
        "INSERT INTO analysis.data_queries VALUES (?, 'INGEST-TYPE', 'WARN', 'lb', '004', 'lb.csv line 12', 'Open', 'X')",
        [qid],
    )
    path = write_queries_workbook(con, cfg, DATA_CUT, tmp_path / "queries.xlsx")
    again = write_queries_workbook(con, cfg, DATA_CUT, tmp_path / "queries2.xlsx")
    con.close()
    wb = load_workbook(path)
    assert wb.sheetnames == ["Contents", "Open", "Closed", "Re-opened", "Status Pending review", "Quarantine"]
    open_ids = [r[0] for r in wb["Open"].iter_rows(min_row=FIRST_DATA_ROW, values_only=True)]
    assert "Q-1" in open_ids and open_ids.count(qid) == 1
    # Only analysis.data_queries is read when it exists: it already holds every quarantined row.
    assert len(open_ids) == 2
    closed = wb["Closed"].cell(FIRST_DATA_ROW, 7)  # Detail: the sheet's 7th column
    assert closed.value == "=cmd|' /C calc'!A0" and closed.data_type == "s"
    assert [r[0] for r in wb["Re-opened"].iter_rows(min_row=FIRST_DATA_ROW, values_only=True)] == ["Q-3"]
    assert again.read_bytes() == path.read_bytes()


# --------------------------------------------------------------------------------------------------
# A listing longer than an Excel sheet continues on numbered sheets (the PDF summarises it)


def test_listing_longer_than_a_sheet_continues_on_numbered_sheets(tables, cfg, tmp_path, monkeypatch):
    from deliverables import workbooks

    sae = next(t for t in display_tables(tables) if t.id == "sae_listing")
    assert len(sae.rows) >= 3
    monkeypatch.setattr(workbooks, "SHEET_DATA_ROWS", 2)
    path = write_sponsor_workbook(tables, cfg, DATA_CUT, tmp_path / "split.xlsx")
    wb = load_workbook(path)
    parts = [n for n in wb.sheetnames if n == "SAE listing" or n.startswith("SAE listing (")]
    assert len(parts) == -(-len(sae.rows) // 2)
    got = []
    for name in parts:
        ws = wb[name]
        assert "part" in ws["A1"].value and "Data cut-off: 2025-12-31" in ws["A1"].value
        got += [list(r) for r in ws.iter_rows(min_row=FIRST_DATA_ROW, max_col=len(sae.columns), values_only=True)]
    assert [[cell_text(v) for v in r] for r in got] == [[cell_text(v) for v in r] for r in sae.rows]
    cover = [r for r in wb["Contents"].iter_rows(values_only=True)]
    assert sum(1 for r in cover if r[0] in parts) == len(parts)


def test_queries_longer_than_a_sheet_continue_on_numbered_sheets(db, cfg, tmp_path, monkeypatch):
    from deliverables import workbooks

    monkeypatch.setattr(workbooks, "SHEET_DATA_ROWS", 2)
    con = duckdb.connect(str(db), read_only=True)
    path = write_queries_workbook(con, cfg, DATA_CUT, tmp_path / "q.xlsx")
    con.close()
    wb = load_workbook(path)
    assert wb.sheetnames[:3] == ["Contents", "Open", "Open (2)"]
    rows = [r for n in ("Open", "Open (2)") for r in wb[n].iter_rows(min_row=FIRST_DATA_ROW, values_only=True)]
    assert len(rows) == 3
