"""Rows sharing a form key. An exact copy of an earlier row (the EDC exported one record twice) is
one record: the first copy is staged and every later copy is quarantined DUPLICATE-RECORD, naming
the line it copies. Rows that share the key with different content are all held DUPLICATE-KEY (we
cannot choose between them). Nothing is dropped silently: raw.<form> keeps every row, and each
held row is in raw.quarantine and becomes a data query."""

from pathlib import Path

import duckdb

from clinical.crf import form
from clinical.ingest import ingest_settings
from clinical.queries import quarantine_queries_sql
from clinical.sources import load_form
from clinical.study import load_study

ROOT = Path(__file__).resolve().parent.parent
IM83 = ingest_settings(load_study(ROOT / "studies" / "im83.yaml"))
DS = "SUBJID,DSDECOD,DSSTDAT,DTHDAT,DTHCAUS\n"
DEATH = "01-001,DEATH,2025-04-10,2025-04-10,Disease progression\n"
LOADED = "; the first copy is loaded"
HELD = "; not loaded: other rows with this key differ (DUPLICATE-KEY)"
KEY_TWICE = "key (SUBJID) occurs on more than one row"
AE_FIELDS = [f.name for f in form("ae").fields]


def ae_row(spid="1", term="Neutropenia", grade="4", dlt="Y") -> str:
    row = ["01-001", spid, term, term, "Blood and lymphatic system disorders", "OTHER", "2025-03-05", "", grade, "Y",
           "PROBABLE", "RECOVERING/RESOLVING", dlt, *[""] * 8]
    assert len(row) == len(AE_FIELDS)
    return ",".join(row) + "\n"


def load(tmp_path: Path, form_id: str, text: str):
    path = tmp_path / f"{form_id}.csv"
    path.write_text(text, encoding="utf-8")
    con = duckdb.connect()
    return con, load_form(con, form(form_id), path, "EXP1", IM83)


def quarantine(con) -> list[tuple]:
    return con.execute(
        'SELECT line, subjid, "column", rule, value, message FROM raw.quarantine ORDER BY line, rule'
    ).fetchall()


def staged_lines(con, form_id: str) -> list[int]:
    return [r[0] for r in con.execute(f"SELECT _line FROM stage.{form_id} ORDER BY _line").fetchall()]


def test_two_identical_rows_are_one_record_staged_from_the_first_line(tmp_path):
    # The tester's case: a participant's death exported twice must not vanish from the analysis.
    con, res = load(tmp_path, "ds", DS + DEATH + DEATH)
    assert (res.rows_received, res.rows_staged, res.rows_quarantined) == (2, 1, 1)
    assert staged_lines(con, "ds") == [2]
    assert con.execute("SELECT SUBJID, DSDECOD, DTHDAT::VARCHAR FROM stage.ds").fetchall() == [("01-001", "DEATH", "2025-04-10")]
    assert quarantine(con) == [(3, "01-001", "SUBJID", "DUPLICATE-RECORD", "01-001", "exact copy of line 2" + LOADED)]
    assert con.execute("SELECT _line FROM raw.ds ORDER BY _line").fetchall() == [(2,), (3,)]  # raw keeps both
    assert res.validated.rows() == [("01-001", "DEATH", "2025-04-10", "2025-04-10", "Disease progression")]


def test_three_copies_stage_the_first_and_quarantine_the_other_two(tmp_path):
    other = "01-002,COMPLETED,2025-05-01,,\n"
    con, res = load(tmp_path, "ds", DS + DEATH + other + DEATH + DEATH)
    assert (res.rows_received, res.rows_staged, res.rows_quarantined) == (4, 2, 2)
    assert staged_lines(con, "ds") == [2, 3]
    assert quarantine(con) == [
        (4, "01-001", "SUBJID", "DUPLICATE-RECORD", "01-001", "exact copy of line 2" + LOADED),
        (5, "01-001", "SUBJID", "DUPLICATE-RECORD", "01-001", "exact copy of line 2" + LOADED),
    ]


def test_two_different_rows_with_one_key_are_both_held(tmp_path):
    con, res = load(tmp_path, "ds", DS + DEATH + "01-001,COMPLETED,2025-04-10,,\n")
    assert (res.rows_staged, res.rows_quarantined) == (0, 2)
    assert quarantine(con) == [
        (2, "01-001", "SUBJID", "DUPLICATE-KEY", "01-001", KEY_TWICE),
        (3, "01-001", "SUBJID", "DUPLICATE-KEY", "01-001", KEY_TWICE),
    ]


def test_different_rows_plus_an_exact_copy_of_one(tmp_path):
    completed = "01-001,COMPLETED,2025-04-10,,\n"
    con, res = load(tmp_path, "ds", DS + DEATH + completed + DEATH)
    assert (res.rows_staged, res.rows_quarantined) == (0, 3)
    assert quarantine(con) == [
        (2, "01-001", "SUBJID", "DUPLICATE-KEY", "01-001", KEY_TWICE),
        (3, "01-001", "SUBJID", "DUPLICATE-KEY", "01-001", KEY_TWICE),
        (4, "01-001", "SUBJID", "DUPLICATE-RECORD", "01-001", "exact copy of line 2" + HELD),
    ]
    # The copy may come right after its first line too: the distinct rows are still the first copies.
    con, _ = load(tmp_path, "ds", DS + DEATH + DEATH + completed)
    assert [(q[0], q[3]) for q in quarantine(con)] == [(2, "DUPLICATE-KEY"), (3, "DUPLICATE-RECORD"), (4, "DUPLICATE-KEY")]
    assert quarantine(con)[1][5] == "exact copy of line 2" + HELD


def test_blank_fields_compare_equal(tmp_path):
    # DTHDAT and DTHCAUS blank (NULL) in both rows; blank, spaces and padding are the same after trimming.
    con, res = load(tmp_path, "ds", DS + "01-002,COMPLETED,2025-05-01,,\n" + " 01-002 ,COMPLETED, 2025-05-01,  ,\t\n")
    assert staged_lines(con, "ds") == [2]
    assert quarantine(con) == [(3, "01-002", "SUBJID", "DUPLICATE-RECORD", "01-002", "exact copy of line 2" + LOADED)]
    # A blank against a value is a difference: both held.
    con, _ = load(tmp_path, "ds", DS + DEATH + "01-001,DEATH,2025-04-10,2025-04-10,\n")
    assert [(q[0], q[3]) for q in quarantine(con)] == [(2, "DUPLICATE-KEY"), (3, "DUPLICATE-KEY")]


def test_a_dose_limiting_toxicity_exported_twice_stays_in_the_analysis(tmp_path):
    # The second case of the defect: an adjudicated DLT with one AE number, twice; another AE number twice
    # with different content stays held.
    rows = [ae_row(), ae_row(), ae_row(spid="2", grade="2", dlt="N"), ae_row(spid="2", grade="3", dlt="N")]
    con, _ = load(tmp_path, "ae", ",".join(AE_FIELDS) + "\n" + "".join(rows))
    assert con.execute("SELECT _line, AESPID, AEDLT FROM stage.ae").fetchall() == [(2, 1, "Y")]
    assert [(q[0], q[2], q[3], q[4]) for q in quarantine(con)] == [
        (3, "SUBJID+AESPID", "DUPLICATE-RECORD", "01-001|1"),
        (4, "SUBJID+AESPID", "DUPLICATE-KEY", "01-001|2"),
        (5, "SUBJID+AESPID", "DUPLICATE-KEY", "01-001|2"),
    ]


def test_a_copy_keeps_its_other_findings(tmp_path):
    # Both copies of a record with an impossible date fail TYPE-DATE; the copy is also DUPLICATE-RECORD.
    bad = "01-003,COMPLETED,2025-02-30,,\n"
    con, res = load(tmp_path, "ds", DS + bad + bad)
    assert res.rows_staged == 0
    assert [(q[0], q[2], q[3]) for q in quarantine(con)] == [
        (2, "DSSTDAT", "TYPE-DATE"), (3, "SUBJID", "DUPLICATE-RECORD"), (3, "DSSTDAT", "TYPE-DATE"),
    ]


def test_each_quarantined_copy_is_a_data_query(tmp_path):
    con, _ = load(tmp_path, "ds", DS + DEATH + DEATH)
    sql, params = quarantine_queries_sql(con, "EXP1")
    got = con.execute(f"SELECT RULE_ID, SUBJID, RECORD_KEY, DETAIL FROM ({sql})", params).fetchall()
    assert got == [(
        "INGEST-DUPLICATE-RECORD", "01-001", "ds, column SUBJID",
        'ds.csv line 3, column SUBJID: exact copy of line 2; the first copy is loaded (value: "01-001")',
    )]
