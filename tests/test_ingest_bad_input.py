"""Bad input, one small fixture per case (issue 3, item 4). Each case either stops the load with a
blocking error that names the file, line, column and rule, or quarantines the offending records
with their reason while the rest loads. Nothing crashes, nothing is dropped silently.

The cases whose fixtures already live in tests/test_ingest.py (unknown, missing and duplicate
columns, missing file, header only) are referenced there; the end-to-end cases (subject not in
demographics; a failed load keeps the earlier outputs) are in tests/test_ingest_e2e.py and
tests/test_pipeline.py.
"""

import codecs
import datetime as dt
from pathlib import Path

import duckdb
import pytest

from clinical.crf import form
from clinical.ingest import ExportFileError, IngestSettings, ingest_settings
from clinical.sources import ExportSource, load_form
from clinical.study import load_study

ROOT = Path(__file__).resolve().parent.parent
CFG = load_study(ROOT / "studies" / "im83.yaml")
IM83 = ingest_settings(CFG)
GB = IngestSettings(**{**IM83.__dict__, "encodings": ("utf-8", "gb18030")})
UTF8_ONLY = IngestSettings(**{**IM83.__dict__, "encodings": ("utf-8",)})
INF = "SUBJID,EXSTDAT,DOSELVL,EXDOSE\n"
AE_FIELDS = [f.name for f in form("ae").fields]
DM = "STUDYID,SITEID,SUBJID,AGE,SEX,RACE,ETHNIC,COUNTRY\n"


def ae_row(subj="01-001", spid="1", term="Fatigue", start="2025-03-02", grade="1", **over) -> str:
    row = dict(zip(AE_FIELDS, [subj, spid, term, term, "General disorders", "OTHER", start, "", grade, "N",
                               "NOT RELATED", "RECOVERED/RESOLVED", "N", *[""] * 8]))
    row.update(over)
    return ",".join(_q(row[f]) for f in AE_FIELDS) + "\n"


def _q(v: str) -> str:
    return '"' + v.replace('"', '""') + '"' if any(c in v for c in ',"\n\r') else v


AE = ",".join(AE_FIELDS) + "\n"


def load(tmp_path: Path, form_id: str, data: bytes | str, settings: IngestSettings = IM83, name: str | None = None):
    path = tmp_path / (name or f"{form_id}.csv")
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    con = duckdb.connect()
    return con, load_form(con, form(form_id), path, "EXP1", settings)


def quarantined(con) -> list[tuple]:
    return con.execute('SELECT line, "column", rule FROM raw.quarantine ORDER BY line, "column", rule').fetchall()


def blocked(tmp_path, form_id, data, settings=IM83) -> str:
    with pytest.raises(ExportFileError) as err:
        load(tmp_path, form_id, data, settings)
    return str(err.value)


# --- the file itself ---------------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"\xef\xbb\xbf", b"\r\n\r\n", b"   \n"], ids=["zero-bytes", "bom-only", "blank-lines", "spaces"])
def test_empty_file_is_blocking(tmp_path, data):
    assert blocked(tmp_path, "inf", data) == "inf.csv: line 1: file is empty (rule FILE-EMPTY)"


def test_header_only_is_zero_records_not_an_error(tmp_path):
    con, res = load(tmp_path, "ds", "SUBJID,DSDECOD,DSSTDAT,DTHDAT,DTHCAUS\r\n")
    assert (res.rows_received, res.rows_staged) == (0, 0)
    assert con.execute("SELECT count(*) FROM stage.ds").fetchone() == (0,)
    assert [c[1] for c in con.execute("DESCRIBE stage.ds").fetchall()][3:] == ["VARCHAR", "VARCHAR", "DATE", "DATE", "VARCHAR"]


def test_truncated_last_line_is_blocking(tmp_path):
    message = blocked(tmp_path, "inf", INF + "01-001,2025-03-01,DL1,510000000\n01-002,2025-04-01,DL2")
    assert message == (
        "inf.csv: line 3: column EXDOSE: the last record ends after 3 of 4 fields and the file has no final line "
        "break: the file looks truncated (rule FILE-TRUNCATED)"
    )


def test_quoted_value_never_closed_is_blocking(tmp_path):
    text = AE + ae_row() + '01-001,2,"Rash on both arms, spreading\n'
    message = blocked(tmp_path, "ae", text)
    assert message.startswith("ae.csv: line 3: column AETERM: a quoted value opened here is never closed")
    assert message.endswith("(rule FILE-TRUNCATED)")


def test_quoted_line_breaks_keep_line_numbers(tmp_path):
    # A value with a line break inside quotes: the next record starts two lines further down.
    con, _ = load(tmp_path, "ae", AE + ae_row(term="Rash\non both arms", AEDECOD="Rash") + ae_row(spid="2", grade="9"))
    assert con.execute("SELECT _line, AETERM FROM raw.ae ORDER BY _line").fetchall() == [(2, "Rash\non both arms"), (4, "Fatigue")]
    assert quarantined(con) == [(4, "AETOXGR", "RANGE")]


def test_a_line_break_inside_a_quoted_column_name_is_blocking(tmp_path):
    # The header record then spans two lines: an unknown column, named, not a parser crash.
    header = AE.replace("AEDECOD", '"AE\nDECOD"', 1)
    message = blocked(tmp_path, "ae", header + ae_row())
    assert message == "ae.csv: line 1: column 'AE\\nDECOD': not in the ae contract (rule FILE-UNKNOWN-COLUMN)"


@pytest.mark.parametrize(
    "header, delimiter",
    [("SUBJID\tEXSTDAT\tDOSELVL\tEXDOSE\n", "tab"), ("SUBJID|EXSTDAT|DOSELVL|EXDOSE\n", "pipe")],
)
def test_wrong_delimiter_is_blocking(tmp_path, header, delimiter):
    message = blocked(tmp_path, "inf", header + "01-001\t2025-03-01\tDL1\t510000000\n")
    assert message == (
        f"inf.csv: line 1: columns are separated by {delimiter}; the study accepts comma, semicolon "
        "(input.delimiters) (rule FILE-DELIMITER)"
    )


def test_data_separated_unlike_the_header_is_blocking(tmp_path):
    message = blocked(tmp_path, "inf", INF + "01-001;2025-03-01;DL1;510000000\n01-002;2025-04-01;DL2;1000000000\n")
    assert message.startswith("inf.csv: line 2: no data record has the header's 4 fields")
    assert message.endswith("(rule FILE-FIELD-COUNT)")


def test_a_record_with_the_wrong_number_of_fields_is_quarantined(tmp_path):
    con, res = load(tmp_path, "inf", INF + "01-001,2025-03-01,DL1,510000000\n01-002,2025-04-01,DL2,1,000,000\n01-003,2025-04-02,DL2\n")
    assert (res.rows_received, res.rows_staged, res.rows_quarantined) == (3, 1, 2)
    assert con.execute('SELECT line, "column", rule, value, message FROM raw.quarantine ORDER BY line').fetchall() == [
        (3, None, "CSV-FIELD-COUNT", "01-002,2025-04-01,DL2,1,000,000", "record has 6 fields, the header has 4"),
        (4, "EXDOSE", "CSV-FIELD-COUNT", "01-003,2025-04-02,DL2", "record has 3 fields, the header has 4"),
    ]


def test_semicolon_and_crlf_are_accepted_and_recorded(tmp_path):
    _, res = load(tmp_path, "inf", (INF.replace(",", ";") + "01-001;2025-03-01;DL1;510000000\n").replace("\n", "\r\n"))
    assert (res.rows_staged, res.delimiter, res.encoding) == (1, ";", "utf-8")


# --- encodings ----------------------------------------------------------------------------------


def test_undeclared_encoding_is_blocking_naming_line_and_column(tmp_path):
    data = (AE + ae_row() + ae_row(spid="2", term="发热")).encode("gb18030")
    message = blocked(tmp_path, "ae", data, UTF8_ONLY)  # a study that accepts only UTF-8
    assert message.startswith("ae.csv: line 3: column AETERM: byte 0xB7 is not UTF-8")
    assert message.endswith("declare its encoding (input.encodings, or \"encoding\" in export.json) (rule FILE-ENCODING)")


def test_latin1_is_not_taken_for_gb18030(tmp_path):
    data = (DM + "IM83,01,01-001,23,M,WHITE,NOT HISPANIC OR LATINO,Café, Paris\n").encode("cp1252")
    assert "(rule FILE-ENCODING)" in blocked(tmp_path, "dm", data, GB)


def test_utf16_is_blocking_unless_accepted(tmp_path):
    data = codecs.BOM_UTF16_LE + (INF + "01-001,2025-03-01,DL1,510000000\n").encode("utf-16-le")
    assert blocked(tmp_path, "inf", data) == (
        "inf.csv: line 1: starts with a UTF-16 byte-order mark, but the study accepts only utf-8, gb18030 "
        "(rule FILE-ENCODING)"
    )


@pytest.mark.parametrize(
    "encoding, bom, expected",
    [("utf-8", b"", "utf-8"), ("utf-8", codecs.BOM_UTF8, "utf-8-sig"), ("gb18030", b"", "gb18030"), ("gbk", b"", "gb18030")],
)
def test_accepted_encodings_are_detected_and_recorded(tmp_path, encoding, bom, expected):
    data = bom + (AE + ae_row(term="发热（38.5℃）；寒战")).replace("\n", "\r\n").encode(encoding)
    con, res = load(tmp_path, "ae", data, GB)
    assert res.encoding == expected
    assert con.execute("SELECT AETERM FROM stage.ae").fetchone() == ("发热（38.5℃）；寒战",)


def test_encoding_declared_in_export_json_is_used(tmp_path):
    (tmp_path / "export.json").write_text('{"encoding": "gb18030"}')
    (tmp_path / "ae.csv").write_bytes((AE + ae_row(term="发热")).encode("gb18030"))
    recs = ExportSource(tmp_path, IM83).read_form(form("ae"))  # IM83 accepts only UTF-8, but the export declares it
    assert (recs.encoding, recs.frame["AETERM"].to_list()) == ("gb18030", ["发热"])


# --- values ---------------------------------------------------------------------------------------


def test_mixed_date_formats_and_impossible_dates_are_quarantined(tmp_path):
    rows = ["01-001,2025-03-01,DL1,5", "01-002,25/03/2025,DL1,5", "01-003,2025-3-5,DL1,5", "01-004,2025-02-30,DL1,5",
            "01-005,2025-03-01T10:00,DL1,5", "01-006,2025-03,DL1,5"]
    con, _ = load(tmp_path, "inf", INF + "\n".join(rows) + "\n")
    assert con.execute("SELECT SUBJID FROM stage.inf").fetchall() == [("01-001",)]
    got = con.execute('SELECT line, rule, value, message FROM raw.quarantine ORDER BY line').fetchall()
    fmt = "Date of infusion (protocol day 0): not an ISO 8601 date YYYY-MM-DD"
    assert got == [
        (3, "TYPE-DATE", "25/03/2025", fmt), (4, "TYPE-DATE", "2025-3-5", fmt),
        (5, "TYPE-DATE", "2025-02-30", "Date of infusion (protocol day 0): not a date on the calendar"),
        (6, "TYPE-DATE", "2025-03-01T10:00", fmt), (7, "TYPE-DATE", "2025-03", fmt),  # no partial date here
    ]


def test_partial_dates_are_kept_where_cdash_allows_them(tmp_path):
    text = AE + ae_row(start="2025-03") + ae_row(spid="2", start="2025") + ae_row(spid="3", start="2025-13")
    con, _ = load(tmp_path, "ae", text)
    assert con.execute("SELECT AESPID, AESTDAT FROM stage.ae ORDER BY AESPID").fetchall() == [(1, "2025-03"), (2, "2025")]
    assert quarantined(con) == [(4, "AESTDAT", "TYPE-DATE")]


def test_partial_dates_are_imputed_and_flagged_in_the_derivation(tmp_path):
    """ADAE imputes the missing day and says so (ASTDTF); the ingest keeps the partial text."""
    from clinical.adae import build_adae
    from clinical.adsl import build_adsl
    from clinical.ingest import load_records, not_collected

    con, _ = load(tmp_path, "ae", AE + ae_row(start="2025-03") + ae_row(spid="2", start="2025-03-20"))
    for f in ("dm", "enrol", "inf"):
        (tmp_path / f"{f}.csv").write_text({
            "dm": DM + "IM83,01,01-001,30,M,ASIAN,NOT HISPANIC OR LATINO,China\n",
            "enrol": "SUBJID,RFICDAT,ENRLYN,ENRLDAT,DOSELVL\n01-001,2025-01-02,Y,2025-01-10,DL1\n",
            "inf": INF + "01-001,2025-03-01,DL1,500000000\n",
        }[f])
        load_form(con, form(f), tmp_path / f"{f}.csv", "EXP1", IM83)
    for f in ("ie", "sc", "lb", "apher", "mfg", "ld", "cm", "pc", "rs", "ds"):
        load_records(con, form(f), not_collected(form(f)), "EXP1", IM83)
    build_adsl(con, CFG, dt.date(2025, 12, 31))
    build_adae(con, CFG)
    got = con.execute("SELECT AESPID, AESTDTC, ASTDT, ASTDTF FROM analysis.adae ORDER BY AESPID").fetchall()
    assert got[0][:2] == (1, "2025-03") and got[0][3] == "D" and got[0][2] is not None
    assert got[1] == (2, "2025-03-20", dt.date(2025, 3, 20), None)


def test_numbers_with_units_or_commas_are_quarantined(tmp_path):
    """A decimal is digits, a point and an exponent (EDC systems write cell doses as 1.94E9): staged.
    Units, separators and decimal commas are quarantined, as is an exponent written apart."""
    rows = ["01-001,2025-03-01,DL1,500000000", "01-002,2025-03-01,DL1,\"500,000,000\"", "01-003,2025-03-01,DL1,5e8",
            "01-004,2025-03-01,DL1,5x10^8 cells", "01-005,2025-03-01,DL1,\"4,5\"", "01-006,2025-03-01,DL1,500 000 000",
            "01-007,2025-03-01,DL1,five", "01-008,2025-03-01,DL1,1.94E9", "01-009,2025-03-01,DL1,1.94 E9"]
    con, _ = load(tmp_path, "inf", INF + "\n".join(rows) + "\n")
    unit = ("Viable CAR-T cells infused: a number with a unit, thousands separator or decimal comma (only digits, "
            "a decimal point and an exponent as in 1.94E9)")
    assert con.execute('SELECT line, rule, value, message FROM raw.quarantine ORDER BY line').fetchall() == [
        (3, "TYPE-FLOAT", "500,000,000", unit), (5, "TYPE-FLOAT", "5x10^8 cells", unit),
        (6, "TYPE-FLOAT", "4,5", unit), (7, "TYPE-FLOAT", "500 000 000", unit),
        (8, "TYPE-FLOAT", "five", "Viable CAR-T cells infused: not a number"), (10, "TYPE-FLOAT", "1.94 E9", unit),
    ]
    assert con.execute("SELECT SUBJID, EXDOSE FROM stage.inf ORDER BY SUBJID").fetchall() == [
        ("01-001", 5e8), ("01-003", 5e8), ("01-008", 1.94e9)]


def test_duplicated_key_rows_are_all_quarantined(tmp_path):
    # Two different infusions under one key: we cannot choose, both are held.
    con, res = load(tmp_path, "inf", INF + "01-001,2025-03-01,DL1,500000000\n01-001,2025-03-08,DL1,500000000\n"
                    + "01-002,2025-03-02,DL1,500000000\n")
    assert (res.rows_received, res.rows_staged) == (3, 1)
    assert quarantined(con) == [(2, "SUBJID", "DUPLICATE-KEY"), (3, "SUBJID", "DUPLICATE-KEY")]


def test_an_exactly_repeated_row_is_one_record(tmp_path):
    # The same record exported twice: the first copy is staged, the copy quarantined (tests/test_ingest_duplicates.py).
    same = "01-001,2025-03-01,DL1,500000000\n"
    con, res = load(tmp_path, "inf", INF + same + same + "01-002,2025-03-02,DL1,500000000\n")
    assert (res.rows_received, res.rows_staged) == (3, 2)
    assert quarantined(con) == [(3, "SUBJID", "DUPLICATE-RECORD")]


def test_same_subject_under_two_ids_whitespace(tmp_path):
    # Leading/trailing spaces are trimmed, so " 01-001" is 01-001: the same key in a one-row-per-subject form
    # (an exact copy of line 2 once trimmed; with other content, both rows would be DUPLICATE-KEY).
    row = "IM83,01,{},30,M,ASIAN,NOT HISPANIC OR LATINO,China\n"
    con, _ = load(tmp_path, "dm", DM + row.format("01-001") + row.format(" 01-001 ") + row.format("01- 002"))
    assert quarantined(con) == [(3, "SUBJID", "DUPLICATE-RECORD"), (4, "SUBJID", "SUBJID-VARIANT")]
    assert "written with other case or spaces" in con.execute("SELECT message FROM raw.quarantine WHERE line = 4").fetchone()[0]
    con, _ = load(tmp_path, "dm", DM + row.format("01-001") + row.format(" 01-001 ").replace(",30,", ",31,"))
    assert quarantined(con) == [(2, "SUBJID", "DUPLICATE-KEY"), (3, "SUBJID", "DUPLICATE-KEY")]


def test_same_subject_under_two_ids_case(tmp_path):
    lettered = IngestSettings(**{**IM83.__dict__, "subjid_pattern": r"^[A-Z]{2}-[0-9]{3}$"})
    con, _ = load(tmp_path, "inf", INF + "AB-001,2025-03-01,DL1,5\nab-002,2025-03-01,DL1,5\nAB_003,2025-03-01,DL1,5\n", lettered)
    assert quarantined(con) == [(3, "SUBJID", "SUBJID-VARIANT"), (4, "SUBJID", "TYPE-ID")]


def test_grade_outside_1_to_5_is_quarantined(tmp_path):
    text = AE + ae_row(grade="3") + ae_row(spid="2", grade="0") + ae_row(spid="3", grade="6") + ae_row(spid="4", grade="2.5")
    con, res = load(tmp_path, "ae", text)
    assert res.rows_staged == 1
    assert quarantined(con) == [(3, "AETOXGR", "RANGE"), (4, "AETOXGR", "RANGE"), (5, "AETOXGR", "TYPE-INT")]
    assert con.execute("SELECT message FROM raw.quarantine WHERE line = 4").fetchone() == (
        "Grade (CTCAE; ASTCT for CRS and ICANS): outside the contract's range 1 to 5",
    )


def test_dose_level_not_in_the_configuration_is_quarantined(tmp_path):
    con, _ = load(tmp_path, "inf", INF + "01-001,2025-03-01,DL4,5\n01-002,2025-03-01,dl1,5\n01-003,2025-03-01,DL1,5\n")
    assert quarantined(con) == [(2, "DOSELVL", "CODELIST"), (3, "DOSELVL", "CODELIST")]


@pytest.mark.parametrize("value", ['=HYPERLINK("http://evil.example","click")', "+cmd|' /C calc'!A0", "@SUM(1+1)", "-cmd|' /C calc'!A0"])
def test_formula_looking_free_text_is_quarantined(tmp_path, value):
    con, _ = load(tmp_path, "ae", AE + ae_row(term=value) + ae_row(spid="2", term="- mild, then resolved"))
    assert quarantined(con) == [(2, "AEDECOD", "TEXT-FORMULA"), (2, "AETERM", "TEXT-FORMULA")]
    assert con.execute("SELECT value FROM raw.quarantine WHERE \"column\" = 'AETERM'").fetchone() == (value,)


@pytest.mark.parametrize("value", ["<script>alert(1)</script>", "<b>Fever</b>", "<img src=x onerror=alert(1)>", "javascript:alert(1)"])
def test_html_or_script_in_free_text_is_quarantined(tmp_path, value):
    con, _ = load(tmp_path, "ae", AE + ae_row(term=value) + ae_row(spid="2", term="ALT <3x ULN, AST > 2x ULN"))
    assert quarantined(con) == [(2, "AEDECOD", "TEXT-MARKUP"), (2, "AETERM", "TEXT-MARKUP")]


def test_chinese_free_text_survives_intact(tmp_path):
    term = "细胞因子释放综合征（CRS）2级，发热 39.2℃；予托珠单抗"
    con, _ = load(tmp_path, "ae", (AE + ae_row(term=term)).encode("gb18030"), GB)
    assert con.execute("SELECT AETERM, AEDECOD FROM stage.ae").fetchone() == (term, term)


def test_a_10_mb_free_text_cell_is_quarantined_with_a_preview(tmp_path):
    big = "x" * (10 * 1024 * 1024)
    con, res = load(tmp_path, "ae", AE + ae_row(term=big) + ae_row(spid="2"))
    assert (res.rows_received, res.rows_staged) == (2, 1)
    rule, value, message = con.execute("SELECT rule, value, message FROM raw.quarantine WHERE \"column\" = 'AETERM'").fetchone()
    assert rule == "TEXT-TOO-LONG" and "longer than 2000 characters" in message
    assert value == "x" * 500 + f"... ({len(big)} characters)"


def test_a_file_from_another_study_is_blocking(tmp_path):
    row = "IM99,01,{},30,M,ASIAN,NOT HISPANIC OR LATINO,China\n"
    message = blocked(tmp_path, "dm", DM + row.format("01-001") + row.format("01-002"))
    assert message == (
        "dm.csv: line 2: column STUDYID: every record belongs to study 'IM99', not IM83: a file from another study "
        "(rule FILE-OTHER-STUDY)"
    )
    # A form without STUDYID in the contract may carry it (EDC exports do): it is checked, never loaded.
    message = blocked(tmp_path, "inf", "STUDYID," + INF + "IM99,01-001,2025-03-01,DL1,5\n")
    assert message.endswith("every record belongs to study 'IM99', not IM83: a file from another study (rule FILE-OTHER-STUDY)")


def test_records_of_another_study_in_a_file_are_quarantined(tmp_path):
    con, _ = load(tmp_path, "inf", "STUDYID," + INF + "IM83,01-001,2025-03-01,DL1,5\nIM99,01-002,2025-03-01,DL1,5\n")
    assert quarantined(con) == [(3, "STUDYID", "OTHER-STUDY")]
    assert "STUDYID" not in [c[0] for c in con.execute("DESCRIBE raw.inf").fetchall()]


def test_export_json_of_another_study_is_blocking(tmp_path):
    (tmp_path / "export.json").write_text('{"export_id": "E1", "study": "IM99", "data_cut": "2025-12-31"}')
    with pytest.raises(ExportFileError, match=r"export.json: column study: the export is of study 'IM99', not IM83 \(rule FILE-OTHER-STUDY\)"):
        ExportSource(tmp_path, IM83).check_study()


def test_subject_in_a_form_but_not_in_demographics_is_a_blocking_rule(tmp_path):
    from clinical.ingest import load_records, not_collected
    from clinical.rules import RULES, run_rule

    con, _ = load(tmp_path, "dm", DM + "IM83,01,01-001,30,M,ASIAN,NOT HISPANIC OR LATINO,China\n")
    (tmp_path / "ae.csv").write_text(AE + ae_row() + ae_row(subj="01-099"))
    load_form(con, form("ae"), tmp_path / "ae.csv", "EXP1", IM83)
    for f in ("enrol", "ie", "sc", "lb", "apher", "mfg", "ld", "inf", "cm", "pc", "rs", "ds"):
        load_records(con, form(f), not_collected(form(f)), "EXP1", IM83)
    rule = next(r for r in RULES if r.id == "XF-SUBJ-NOT-IN-DM")
    assert rule.severity == "ERROR"
    failing = run_rule(con, rule, CFG)
    assert [f[0] for f in failing] == ["01-099"] and "in form ae but not in demographics" in str(failing)


def test_a_failed_load_leaves_the_database_as_it_was(tmp_path, monkeypatch):
    from clinical import ingest

    con, _ = load(tmp_path, "inf", INF + "01-001,2025-03-01,DL1,5\n")
    (tmp_path / "inf.csv").write_text(INF + "01-001,2025-03-01,DL1,5\n01-002,2025")
    with pytest.raises(ExportFileError):  # a bad file stops before the database is touched
        load_form(con, form("inf"), tmp_path / "inf.csv", "EXP1", IM83)
    # A failure half way through the load (here: a broken rule) rolls the form's tables back.
    (tmp_path / "inf.csv").write_text(INF + "01-002,2025-03-02,DL2,5\n")
    real = ingest._checks
    monkeypatch.setattr(ingest, "_checks", lambda *a: (real(*a)[0] + ["SELECT no_such_column"], real(*a)[1]))
    with pytest.raises(duckdb.Error):
        load_form(con, form("inf"), tmp_path / "inf.csv", "EXP1", IM83)
    assert con.execute("SELECT SUBJID FROM raw.inf").fetchall() == [("01-001",)]
    assert con.execute("SELECT SUBJID FROM stage.inf").fetchall() == [("01-001",)]
