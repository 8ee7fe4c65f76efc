"""Ingest of one form file: provenance, identifiers dropped, quarantine with reasons, blocking file errors."""

from pathlib import Path

import duckdb
import pytest

from clinical.crf import form
from clinical.ingest import ExportFileError, ingest_settings
from clinical.sources import load_form
from clinical.study import load_study

ROOT = Path(__file__).resolve().parent.parent
CFG = load_study(ROOT / "studies" / "im83.yaml")
SETTINGS = ingest_settings(CFG)
INF_HEADER = "SUBJID,EXSTDAT,DOSELVL,EXDOSE\n"


def _load(tmp_path: Path, form_id: str, text: str, name: str | None = None):
    path = tmp_path / (name or f"{form_id}.csv")
    path.write_bytes(text.encode("utf-8"))
    con = duckdb.connect()
    return con, load_form(con, form(form_id), path, "EXP1", SETTINGS)


def test_valid_rows_are_staged_typed_with_provenance(tmp_path):
    con, res = _load(tmp_path, "inf", INF_HEADER + "01-001,2025-03-01,DL1,510000000\n01-002,2025-04-01,DL2,980000000\n")
    assert (res.rows_received, res.rows_staged, res.rows_quarantined) == (2, 2, 0)
    assert con.execute("SELECT _file, _line, SUBJID, EXSTDAT, EXDOSE FROM stage.inf ORDER BY _line").fetchall() == [
        ("inf.csv", 2, "01-001", __import__("datetime").date(2025, 3, 1), 510000000.0),
        ("inf.csv", 3, "01-002", __import__("datetime").date(2025, 4, 1), 980000000.0),
    ]


def test_bad_values_are_quarantined_with_file_line_column_rule(tmp_path):
    text = (
        INF_HEADER
        + "01-001,2025-02-30,DL1,5e8\n"  # impossible date; a number in exponent form is a number
        + "01-002,2025-04-01,DL9,1000000000\n"  # dose level not in the configuration
        + "01-003,2025-04-02,DL2,\n"  # required value missing
        + "01-003,2025-04-03,DL2,1000000000\n"  # duplicate key
        + "01-004,2025-04-04,DL3,2000000000\n"
    )
    con, res = _load(tmp_path, "inf", text)
    assert (res.rows_received, res.rows_staged, res.rows_quarantined) == (5, 1, 4)
    got = con.execute('SELECT file, line, subjid, "column", rule, value FROM raw.quarantine ORDER BY line, rule').fetchall()
    assert got == [
        ("inf.csv", 2, "01-001", "EXSTDAT", "TYPE-DATE", "2025-02-30"),
        ("inf.csv", 3, "01-002", "DOSELVL", "CODELIST", "DL9"),
        ("inf.csv", 4, "01-003", "SUBJID", "DUPLICATE-KEY", "01-003"),
        ("inf.csv", 4, "01-003", "EXDOSE", "REQUIRED", None),
        ("inf.csv", 5, "01-003", "SUBJID", "DUPLICATE-KEY", "01-003"),
    ]
    # Both rows sharing a key are held back; nothing is lost: raw keeps every row.
    assert con.execute("SELECT SUBJID FROM stage.inf ORDER BY SUBJID").fetchall() == [("01-004",)]
    assert con.execute("SELECT count(*) FROM raw.inf").fetchone()[0] == 5
    # The rows handed to Great Expectations: the staged one, as loaded text.
    assert res.validated.rows() == [("01-004", "2025-04-04", "DL3", "2000000000")]


def test_identifiers_never_reach_the_database(tmp_path):
    header = "STUDYID,SITEID,SUBJID,SUBJINIT,BRTHDAT,AGE,SEX,RACE,ETHNIC,COUNTRY\n"
    con, res = _load(tmp_path, "dm", header + "IM83,01,01-001,ZXW,2001-05-17,23,M,ASIAN,NOT HISPANIC OR LATINO,China\n")
    assert res.dropped_identifier_columns == ("SUBJINIT", "BRTHDAT")
    dump = str(con.execute("SELECT * FROM raw.dm").fetchall()) + str(con.execute("SELECT * FROM stage.dm").fetchall())
    assert "ZXW" not in dump and "2001-05-17" not in dump
    assert "SUBJINIT" not in [c[0] for c in con.execute("DESCRIBE raw.dm").fetchall()]


def test_partial_dates_are_kept_where_allowed(tmp_path):
    header = ",".join(f.name for f in form("ae").fields) + "\n"
    base = ["01-001", "1", "Fatigue", "Fatigue", "General disorders and administration site conditions", "OTHER"]
    tail = ["", "1", "N", "NOT RELATED", "RECOVERED/RESOLVED", "N", "", "", "", "", "", "", "", ""]
    rows = [base[:1] + ["1"] + base[2:] + ["2025-03"] + tail, base[:1] + ["2"] + base[2:] + ["2025-13"] + tail]
    con, _ = _load(tmp_path, "ae", header + "".join(",".join(r) + "\n" for r in rows))
    assert con.execute("SELECT AESPID, AESTDAT FROM stage.ae").fetchall() == [(1, "2025-03")]
    assert con.execute('SELECT line, rule FROM raw.quarantine').fetchall() == [(3, "TYPE-DATE")]


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "inf.csv: line 1: file is empty (rule FILE-EMPTY)"),
        ("SUBJID,EXSTDAT,DOSELVL,EXDOSE,NOTE\n", "inf.csv: line 1: column NOTE: not in the inf contract (rule FILE-UNKNOWN-COLUMN)"),
        ("SUBJID,EXSTDAT,DOSELVL\n", "inf.csv: line 1: column EXDOSE: missing from the header (rule FILE-MISSING-COLUMN)"),
        ("SUBJID,EXSTDAT,DOSELVL,EXDOSE,EXDOSE\n", "inf.csv: line 1: column EXDOSE: duplicate column (rule FILE-DUP-COLUMN)"),
    ],
)
def test_blocking_file_errors_name_file_line_column_rule(tmp_path, text, message):
    with pytest.raises(ExportFileError) as err:
        _load(tmp_path, "inf", text)
    assert str(err.value) == message


def test_missing_file_is_blocking(tmp_path):
    with pytest.raises(ExportFileError, match=r"inf.csv: file missing from export EXP1 \(rule FILE-MISSING\)"):
        load_form(duckdb.connect(), form("inf"), tmp_path / "inf.csv", "EXP1", SETTINGS)


def test_header_only_loads_zero_rows(tmp_path):
    _, res = _load(tmp_path, "inf", INF_HEADER)
    assert (res.rows_received, res.rows_staged) == (0, 0)


def test_a_long_malformed_record_is_quarantined_as_a_preview_like_any_value(tmp_path):
    record = "01-001,2025-03-01,DL1," + "9" * 600 + ",5"
    con, res = _load(tmp_path, "inf", INF_HEADER + record + "\n01-002,2025-04-01,DL2,980000000\n")
    assert (res.rows_received, res.rows_staged, res.rows_quarantined) == (2, 1, 1)
    assert con.execute("SELECT line, rule, value FROM raw.quarantine").fetchall() == [
        (2, "CSV-FIELD-COUNT", record[:500] + f"... ({len(record)} characters)")
    ]


def test_quarantine_is_rewritten_in_a_fixed_order_whatever_order_the_forms_committed_in():
    """The ingest step loads two forms at a time: raw.quarantine gets the same row order (forms in
    contract order, then line, column, rule) whichever form committed first."""
    from clinical.ingest import create_ingest_tables, order_quarantine

    rows = [
        ("E", "lb", "lb.csv", 7, "01-002", "LBDAT", "TYPE-DATE", "x", "m"),
        ("E", "ae", "ae.csv", 3, "01-001", "AETOXGR", "RANGE", "9", "m"),
        ("E", "ae", "ae.csv", 2, "01-001", "AESTDAT", "TYPE-DATE", "y", "m"),
        ("E", "dm", "dm.csv", None, None, None, "CSV-FIELD-COUNT", "z", "m"),
        ("E", "ae", "ae.csv", 3, "01-001", "AESER", "CODELIST", "maybe", "m"),
    ]
    orders = []
    for shuffled in (rows, list(reversed(rows))):
        con = duckdb.connect()
        create_ingest_tables(con)
        con.executemany("INSERT INTO raw.quarantine VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", shuffled)
        order_quarantine(con, ["dm", "ae", "lb"])
        orders.append(con.execute('SELECT form, line, "column" FROM raw.quarantine').fetchall())
    assert orders[0] == orders[1] == [
        ("dm", None, None), ("ae", 2, "AESTDAT"), ("ae", 3, "AESER"), ("ae", 3, "AETOXGR"), ("lb", 7, "LBDAT"),
    ]
