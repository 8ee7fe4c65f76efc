"""Data queries tracked across exports (clinical/queries.py): status transitions, stable ids, the
history carried from the previous data cut, WARN expectations as queries, and three successive
simulated exports run through the whole Dagster job."""

from __future__ import annotations

import csv
import datetime as dt
import shutil
import sys
from pathlib import Path

import duckdb
import pytest

from clinical.crf import FORMS, study_codelists
from clinical.expectation_runner import load_suite, resolve_suite, run_suite
from clinical.queries import (
    CLOSED,
    COLUMNS,
    OPEN,
    REOPENED,
    build_queries,
    expectation_query_sql,
    next_status,
    query_id_sql,
    status_case_sql,
)
from clinical.rules import RULES, run_rule
from clinical.study import load_study

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from test_rules import STUDY, derive

CUT1, CUT2, CUT3 = dt.date(2025, 12, 31), dt.date(2026, 1, 31), dt.date(2026, 2, 28)


@pytest.fixture(scope="module")
def cfg():
    return load_study(STUDY)


@pytest.fixture(scope="module")
def suites(cfg):
    return {f.id: resolve_suite(load_suite(ROOT / "expectations" / f"{f.id}.json"), study_codelists(cfg)) for f in FORMS}


# --------------------------------------------------------------------------------------------------
# Status transitions: a pure function, and the SQL generated from it


def test_next_status_truth_table():
    assert next_status(None, True) == OPEN
    assert next_status(None, False) is None
    assert next_status(OPEN, True) == OPEN
    assert next_status(OPEN, False) == CLOSED
    assert next_status(CLOSED, True) == REOPENED
    assert next_status(CLOSED, False) == CLOSED
    assert next_status(REOPENED, True) == REOPENED
    assert next_status(REOPENED, False) == CLOSED
    with pytest.raises(ValueError):
        next_status("Pending", True)


def test_status_sql_equals_the_function():
    con = duckdb.connect()
    sql = status_case_sql("p", "f")
    for prev in (None, OPEN, CLOSED, REOPENED):
        for failing in (True, False):
            got = con.execute(f"SELECT {sql} FROM (SELECT ?::VARCHAR AS p, ?::BOOLEAN AS f)", [prev, failing]).fetchall()
            assert got == [(next_status(prev, failing),)], (prev, failing)


def test_query_id_uses_rule_participant_and_record_only():
    con = duckdb.connect()

    def qid(*parts):
        return con.execute(f"SELECT {query_id_sql('?::VARCHAR[]')}", [list(parts)]).fetchall()[0][0]

    a = qid("XF-AE-NOT-CODED", "01-001", "AESPID=4")
    assert a == qid("XF-AE-NOT-CODED", "01-001", "AESPID=4") and a.startswith("Q-") and len(a) == 12
    assert len({a, qid("XF-AE-NOT-CODED", "01-001", "AESPID=5"), qid("XF-AE-NOT-CODED", "01-002", "AESPID=4"),
                qid("XF-FATAL-NOT-SERIOUS", "01-001", "AESPID=4")}) == 4


# --------------------------------------------------------------------------------------------------
# History across data cuts (fixture databases, no Dagster)


def _cut_db(rules_db: Path, path: Path, cfg, *edits: str) -> duckdb.DuckDBPyConnection:
    shutil.copyfile(rules_db, path)
    con = duckdb.connect(str(path))
    for sql in edits:
        con.execute(sql)
    derive(con, cfg)
    return con


def _queries(path: Path) -> dict[str, dict]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        cur = con.execute("SELECT * FROM analysis.data_queries")
        names = [d[0] for d in cur.description]
        return {r[0]: dict(zip(names, r)) for r in cur.fetchall()}
    finally:
        con.close()


def _by_rule(queries: dict[str, dict]) -> dict[tuple[str, str, str], dict]:
    return {(q["RULE_ID"], q["SUBJID"], q["RECORD_KEY"]): q for q in queries.values()}


NOT_CODED = ("XF-AE-NOT-CODED", "01-001", "AESPID=4")
FATAL = ("XF-FATAL-NOT-SERIOUS", "01-003", "AESPID=8")
QUARANTINED = ("INGEST-TYPE-FLOAT", "01-001", "lb VISIT=D7, LBTESTCD=ALT, column LBORRES")
LD_DOSE = ("XF-LD-DOSE", "01-003", "EXTRT=FLUDARABINE, EXSTDAT=2024-08-22")

QUARANTINE_ROW = """INSERT INTO raw.quarantine
  SELECT 'EXP-{n}', 'lb', 'lb.csv', _line, SUBJID, 'LBORRES', 'TYPE-FLOAT', '{value}', 'Result: value not allowed'
  FROM raw.lb WHERE SUBJID = '01-001' AND VISIT = 'D7' AND LBTESTCD = 'ALT'"""


def test_open_closed_reopened_with_stable_ids(rules_db, tmp_path, cfg, suites):
    # Cut 1: three problems.
    c1 = tmp_path / "c1.duckdb"
    con = _cut_db(
        rules_db, c1, cfg,
        "UPDATE stage.ae SET AEBODSYS = NULL WHERE SUBJID = '01-001' AND AESPID = 4",
        "UPDATE stage.ae SET AEOUT = 'FATAL' WHERE SUBJID = '01-003' AND AESPID = 8",
        QUARANTINE_ROW.format(n=1, value="1,5"),
    )
    counts = build_queries(con, cfg, "EXP-1", CUT1, suites=suites)
    con.close()
    assert counts == {"total": 3, "open": 3, "closed": 0, "reopened": 0, "new": 3, "previous": 0}
    q1 = _by_rule(_queries(c1))
    assert set(q1) == {NOT_CODED, FATAL, QUARANTINED}
    for q in q1.values():
        assert (q["STATUS"], q["FIRST_SEEN_CUT"], q["LAST_SEEN_CUT"], q["DAYS_OPEN"], q["SITEID"]) == (OPEN, CUT1, CUT1, 0, "01")
    assert q1[QUARANTINED]["SOURCE"] == "quarantine" and "value: \"1,5\"" in q1[QUARANTINED]["DETAIL"]

    # Cut 2: the uncoded AE is still uncoded (now the PT is missing: same problem, same id), the fatal
    # AE is fixed, the lab value is fixed, a lymphodepletion dose is new.
    c2 = tmp_path / "c2.duckdb"
    con = _cut_db(
        rules_db, c2, cfg,
        "UPDATE stage.ae SET AEDECOD = NULL WHERE SUBJID = '01-001' AND AESPID = 4",
        "UPDATE stage.ld SET EXDOSE = 22.5 WHERE SUBJID = '01-003' AND EXTRT = 'FLUDARABINE' AND EXSTDAT = DATE '2024-08-22'",
    )
    counts = build_queries(con, cfg, "EXP-2", CUT2, previous_db=c1, previous_cut=CUT1, suites=suites)
    con.close()
    assert counts == {"total": 4, "open": 2, "closed": 2, "reopened": 0, "new": 1, "previous": 3}
    q2 = _by_rule(_queries(c2))
    assert q2[NOT_CODED]["QUERY_ID"] == q1[NOT_CODED]["QUERY_ID"]
    assert "missing AEDECOD" in q2[NOT_CODED]["DETAIL"]
    assert (q2[NOT_CODED]["STATUS"], q2[NOT_CODED]["FIRST_SEEN_EXPORT"], q2[NOT_CODED]["LAST_SEEN_EXPORT"],
            q2[NOT_CODED]["DAYS_OPEN"]) == (OPEN, "EXP-1", "EXP-2", 31)
    for key in (FATAL, QUARANTINED):
        q = q2[key]
        assert q["QUERY_ID"] == q1[key]["QUERY_ID"]
        assert (q["STATUS"], q["LAST_SEEN_CUT"], q["CLOSED_CUT"], q["CLOSED_EXPORT"], q["DAYS_OPEN"]) == (
            CLOSED, CUT1, CUT2, "EXP-2", 31)
        assert q["DETAIL"] == q1[key]["DETAIL"]  # the last failing detail is kept
    assert (q2[LD_DOSE]["STATUS"], q2[LD_DOSE]["FIRST_SEEN_CUT"], q2[LD_DOSE]["DAYS_OPEN"]) == (OPEN, CUT2, 0)

    # Cut 3: the fatal AE is wrong again (re-opened), the lab value stays fixed (closed, unchanged),
    # the dose is fixed (closed), the uncoded AE is still open.
    c3 = tmp_path / "c3.duckdb"
    con = _cut_db(
        rules_db, c3, cfg,
        "UPDATE stage.ae SET AEDECOD = NULL WHERE SUBJID = '01-001' AND AESPID = 4",
        "UPDATE stage.ae SET AEOUT = 'FATAL' WHERE SUBJID = '01-003' AND AESPID = 8",
    )
    counts = build_queries(con, cfg, "EXP-3", CUT3, previous_db=c2, previous_cut=CUT2, suites=suites)
    con.close()
    assert counts == {"total": 4, "open": 1, "closed": 2, "reopened": 1, "new": 0, "previous": 4}
    q3 = _by_rule(_queries(c3))
    assert {k: q["QUERY_ID"] for k, q in q3.items()} == {k: q["QUERY_ID"] for k, q in q2.items()}
    assert (q3[FATAL]["STATUS"], q3[FATAL]["FIRST_SEEN_CUT"], q3[FATAL]["REOPENED_CUT"], q3[FATAL]["CLOSED_CUT"],
            q3[FATAL]["DAYS_OPEN"]) == (REOPENED, CUT1, CUT3, None, 59)
    assert (q3[QUARANTINED]["STATUS"], q3[QUARANTINED]["CLOSED_CUT"], q3[QUARANTINED]["DAYS_OPEN"]) == (CLOSED, CUT2, 31)
    assert (q3[LD_DOSE]["STATUS"], q3[LD_DOSE]["CLOSED_CUT"], q3[LD_DOSE]["DAYS_OPEN"]) == (CLOSED, CUT3, 28)
    assert (q3[NOT_CODED]["STATUS"], q3[NOT_CODED]["DAYS_OPEN"]) == (OPEN, 59)
    assert all(q["EXPORT_ID"] == "EXP-3" and q["DATA_CUT"] == CUT3 for q in q3.values())


def test_schema(rules_db, tmp_path, cfg):
    con = _cut_db(rules_db, tmp_path / "s.duckdb", cfg)
    build_queries(con, cfg, "EXP", CUT1)
    got = con.execute(
        "SELECT column_name, data_type FROM duckdb_columns() WHERE schema_name = 'analysis' AND table_name = 'data_queries'"
    ).fetchall()
    con.close()
    assert got == list(COLUMNS)


def test_previous_table_of_the_older_shape_is_read(rules_db, tmp_path, cfg):
    """Outputs written before history was tracked (8 columns, no RECORD_KEY) still give first seen."""
    old = tmp_path / "old.duckdb"
    con = duckdb.connect(str(old))
    con.execute("CREATE SCHEMA analysis")
    con.execute(
        """CREATE TABLE analysis.data_queries AS SELECT * FROM (VALUES
           ('Q-OLD0000001', 'XF-CHRONOLOGY', 'WARN', 'inf', '01-001', 'old rule', 'Open', 'EXP-0'))
           t(QUERY_ID, RULE_ID, SEVERITY, FORM, SUBJID, DETAIL, STATUS, EXPORT_ID)"""
    )
    con.close()
    con = _cut_db(rules_db, tmp_path / "new.duckdb", cfg)
    counts = build_queries(con, cfg, "EXP-1", CUT2, previous_db=old, previous_cut=CUT1)
    row = con.execute(
        "SELECT STATUS, FIRST_SEEN_EXPORT, FIRST_SEEN_CUT, CLOSED_CUT, DAYS_OPEN, RECORD_KEY FROM analysis.data_queries"
    ).fetchall()
    con.close()
    assert counts["closed"] == 1 and row == [(CLOSED, "EXP-0", CUT1, CUT2, 31, "")]


def test_error_rules_are_not_queries(rules_db, tmp_path, cfg):
    """Only WARN rules become queries: a failing ERROR rule blocks the run before this table."""
    con = _cut_db(
        rules_db, tmp_path / "e.duckdb", cfg,
        "UPDATE stage.enrol SET ENRLYN = 'N' WHERE SUBJID = '01-003'",  # XF-INF-NOT-ENROLLED (ERROR)
        "UPDATE stage.ae SET AEBODSYS = NULL WHERE SUBJID = '01-001' AND AESPID = 4",  # XF-AE-NOT-CODED (WARN)
    )
    rule = next(r for r in RULES if r.id == "XF-INF-NOT-ENROLLED")
    assert rule.severity == "ERROR" and run_rule(con, rule, cfg)  # it fails here
    build_queries(con, cfg, "EXP", CUT1)
    got = con.execute("SELECT RULE_ID, SEVERITY FROM analysis.data_queries ORDER BY ALL").fetchall()
    con.close()
    assert got == [("XF-AE-NOT-CODED", "WARN")]


def test_duplicate_key_rows_are_one_query_naming_both_lines(rules_db, tmp_path, cfg):
    con = _cut_db(rules_db, tmp_path / "d.duckdb", cfg)
    con.execute(
        """INSERT INTO raw.quarantine
           SELECT 'EXP', 'ae', 'ae.csv', _line, SUBJID, 'SUBJID+AESPID', 'DUPLICATE-KEY', '01-001|2', 'key twice'
           FROM raw.ae WHERE SUBJID = '01-001' AND AESPID IN ('2', '3')"""
    )
    con.execute("UPDATE raw.ae SET AESPID = '2' WHERE SUBJID = '01-001' AND AESPID = '3'")
    build_queries(con, cfg, "EXP", CUT1)
    rows = con.execute("SELECT RULE_ID, RECORD_KEY, DETAIL FROM analysis.data_queries").fetchall()
    con.close()
    assert len(rows) == 1
    rule, key, detail = rows[0]
    assert (rule, key) == ("INGEST-DUPLICATE-KEY", "ae AESPID=2, column SUBJID+AESPID")
    assert detail.count("ae.csv line") == 2


def test_workbook_without_the_table_lists_the_quarantine_under_the_tables_ids(rules_db, tmp_path, cfg):
    """A database without analysis.data_queries (a failed derive): the queries workbook lists the
    quarantined rows as queries with the ids, keys and details they have in analysis.data_queries."""
    from deliverables.workbooks import QUERY_COLUMNS, load_queries

    path = tmp_path / "w.duckdb"
    con = _cut_db(
        rules_db, path, cfg,
        QUARANTINE_ROW.format(n=1, value="1,5"),
        # two rows sharing a key: one query naming both lines
        """INSERT INTO raw.quarantine
           SELECT 'EXP-1', 'ae', 'ae.csv', _line, SUBJID, 'SUBJID+AESPID', 'DUPLICATE-KEY', '01-001|2', 'key twice'
           FROM raw.ae WHERE SUBJID = '01-001' AND AESPID IN ('2', '3')""",
        "UPDATE raw.ae SET AESPID = '2' WHERE SUBJID = '01-001' AND AESPID = '3'",
        # no participant id
        """INSERT INTO raw.quarantine
           SELECT 'EXP-1', 'dm', 'dm.csv', _line, NULL, 'SUBJID', 'REQUIRED', NULL, 'required value missing'
           FROM raw.dm WHERE SUBJID = '01-002'""",
    )
    build_queries(con, cfg, "EXP-1", CUT1)
    names = ("QUERY_ID", "RULE_ID", "SEVERITY", "FORM", "SUBJID", "DETAIL", "STATUS", "SOURCE", "EXPORT_ID",
             "SITEID", "RECORD_KEY")
    table = {
        r[0]: r
        for r in con.execute(
            f"SELECT {', '.join(names)} FROM analysis.data_queries WHERE SOURCE = 'quarantine'"
        ).fetchall()
    }
    con.execute("DROP TABLE analysis.data_queries")
    con.close()
    assert len(table) == 3

    con = duckdb.connect(str(path), read_only=True)
    try:
        queries, quarantine = load_queries(con)
    finally:
        con.close()
    assert len(quarantine) == 4
    assert all(len(q) == len(QUERY_COLUMNS) for q in queries)
    fallback = {q[0]: tuple(q[: len(names)]) for q in queries}
    assert len(fallback) == len(queries)  # one row per id
    assert fallback == table


# --------------------------------------------------------------------------------------------------
# WARN expectations of the GX suites become queries, with the suite's own bounds


def test_warn_expectation_listing_agrees_with_great_expectations(rules_db, tmp_path, cfg, suites):
    con = _cut_db(rules_db, tmp_path / "gx.duckdb", cfg)
    con.execute("UPDATE raw.ae SET AETOXGR = '7' WHERE SUBJID = '01-001' AND AESPID = '2'")
    con.execute("UPDATE raw.ae SET AEICE = '11', AEFEVER = 'MAYBE' WHERE SUBJID = '01-001' AND AESPID = '5'")
    con.execute("UPDATE raw.dm SET AGE = '130' WHERE SUBJID = '01-003'")
    for form_id in ("ae", "dm"):
        frame = con.sql(
            f"SELECT * EXCLUDE (_export_id, _file, _line) FROM raw.{form_id} "
            f"WHERE _line IN (SELECT _line FROM stage.{form_id}) ORDER BY _line"
        ).pl()
        gx_failing = {
            (o.rule_id, row) for o in run_suite(suites[form_id], frame) if o.severity == "WARN" and not o.success
            for row in o.rows
        }
        listed = set()
        for exp in suites[form_id]["expectations"]:
            q = expectation_query_sql(form_id, exp)
            if q is None:
                continue
            sql, params = q
            for subjid, key, _ in con.execute(sql, params).fetchall():
                # "ae AESPID=2, column AETOXGR" -> "SUBJID=01-001, AESPID=2" as GX names the row
                keys = key.split(", column ")[0].split(" ", 1)
                listed.add((exp["meta"]["rule_id"], ", ".join([f"SUBJID={subjid}", *keys[1:]])))
        assert listed == gx_failing and listed, form_id
    build_queries(con, cfg, "EXP", CUT1, suites=suites)
    got = con.execute(
        "SELECT RULE_ID, SUBJID, RECORD_KEY, SOURCE FROM analysis.data_queries WHERE SOURCE = 'expectation' ORDER BY ALL"
    ).fetchall()
    con.close()
    assert got == [
        ("GX-AE-AEFEVER-CODELIST", "01-001", "ae AESPID=5, column AEFEVER", "expectation"),
        ("GX-AE-AEICE-RANGE", "01-001", "ae AESPID=5, column AEICE", "expectation"),
        ("GX-AE-AETOXGR-RANGE", "01-001", "ae AESPID=2, column AETOXGR", "expectation"),
        ("GX-DM-AGE-RANGE", "01-003", "dm, column AGE", "expectation"),
    ]


def test_every_warn_expectation_can_be_listed(suites):
    for form_id, suite in suites.items():
        for exp in suite["expectations"]:
            q = expectation_query_sql(form_id, exp)
            assert (q is None) == (exp["meta"]["severity"] == "ERROR"), exp["meta"]["rule_id"]


# --------------------------------------------------------------------------------------------------
# Three successive simulated exports through the whole Dagster job


def _edit_csv(path: Path, match: dict[str, str], changes: dict[str, str]) -> None:
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
        fields = list(rows[0])
    hits = 0
    for row in rows:
        if all(row[k] == v for k, v in match.items()):
            row.update(changes)
            hits += 1
    assert hits == 1, (path.name, match, hits)
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


def _export(cfg, base: Path, cut: dt.date, problems: list[str]) -> Path:
    from clinical.simulate import simulate, write_export

    export = base / f"export-{cut.isoformat()}"
    write_export(simulate(cfg, seed=83, data_cut=cut), export)
    (export / "export.json").write_text(f'{{"export_id": "IM83-{cut:%Y%m%d}", "data_cut": "{cut}"}}')
    edits = {
        # WARN rule XF-AE-NOT-CODED (the SOC missing, then the PT: the same problem)
        "uncoded-soc": ("ae.csv", {"SUBJID": "01-001", "AESPID": "4"}, {"AEBODSYS": ""}),
        "uncoded-pt": ("ae.csv", {"SUBJID": "01-001", "AESPID": "4"}, {"AEDECOD": ""}),
        # quarantined: a decimal comma (INGEST-TYPE-FLOAT)
        "lab-comma": ("lb.csv", {"SUBJID": "01-001", "VISIT": "D7", "LBTESTCD": "ALT"}, {"LBORRES": "1,5"}),
        # WARN rule XF-LD-DOSE
        "ld-dose": ("ld.csv", {"SUBJID": "01-003", "EXTRT": "FLUDARABINE", "EXSTDAT": "2024-08-22"}, {"EXDOSE": "22.5"}),
        # WARN rules XF-ELIG-DEVIATION and XF-ELIG-IE-DISAGREE: enrolled with a screening ANC below 1.5
        "anc": ("lb.csv", {"SUBJID": "01-003", "VISIT": "SCREENING", "LBTESTCD": "NEUT"}, {"LBORRES": "1.2"}),
    }
    for p in problems:
        file, match, changes = edits[p]
        _edit_csv(export / file, match, changes)
    return export


def test_three_exports_track_queries_through_dagster(tmp_path, cfg, capsys, monkeypatch):
    from pipelines.run import run_export

    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    out = tmp_path / "out"
    db = {c: out / "IM83" / c.isoformat() / "trial.duckdb" for c in (CUT1, CUT2, CUT3)}

    assert run_export(str(STUDY), str(_export(cfg, tmp_path, CUT1, ["uncoded-soc", "lab-comma", "ld-dose"])), str(out)) == 0
    printed = capsys.readouterr().out
    # Only WARN failures: the run finishes, writes every output and lists the failures.
    assert "WARN check xf_ae_not_coded on analysis/adae failed" in printed
    assert "WARN check xf_ld_dose on analysis/adsl failed" in printed
    assert (db[CUT1].parent / "data_queries.xlsx").is_file() and (db[CUT1].parent / "dsmb_report.pdf").is_file()
    q1 = _by_rule(_queries(db[CUT1]))
    assert set(q1) == {NOT_CODED, QUARANTINED, LD_DOSE}
    assert {q["STATUS"] for q in q1.values()} == {OPEN}
    assert {q["EXPORT_ID"] for q in q1.values()} == {"IM83-20251231"}

    assert run_export(str(STUDY), str(_export(cfg, tmp_path, CUT2, ["uncoded-pt", "anc"])), str(out)) == 0
    q2 = _by_rule(_queries(db[CUT2]))
    dev = ("XF-ELIG-DEVIATION", "01-003", "CRIT=ANC")
    ie = ("XF-ELIG-IE-DISAGREE", "01-003", "CRIT=ANC")
    assert set(q2) == {NOT_CODED, QUARANTINED, LD_DOSE, dev, ie}
    assert {k: q["STATUS"] for k, q in q2.items()} == {
        NOT_CODED: OPEN, QUARANTINED: CLOSED, LD_DOSE: CLOSED, dev: OPEN, ie: OPEN}
    con = duckdb.connect(str(db[CUT2]), read_only=True)
    assert con.execute("SELECT SUBJID, CRIT, VALUE, THRESHOLD FROM analysis.protocol_deviations").fetchall() == [
        ("01-003", "ANC", "1.2", 1.5)]
    con.close()
    assert all(q2[k]["QUERY_ID"] == q1[k]["QUERY_ID"] for k in q1)
    assert (q2[NOT_CODED]["FIRST_SEEN_EXPORT"], q2[NOT_CODED]["LAST_SEEN_EXPORT"], q2[NOT_CODED]["DAYS_OPEN"]) == (
        "IM83-20251231", "IM83-20260131", 31)
    assert (q2[LD_DOSE]["CLOSED_EXPORT"], q2[LD_DOSE]["DAYS_OPEN"]) == ("IM83-20260131", 31)

    assert run_export(str(STUDY), str(_export(cfg, tmp_path, CUT3, ["uncoded-pt", "lab-comma"])), str(out)) == 0
    q3 = _by_rule(_queries(db[CUT3]))
    assert {k: q["STATUS"] for k, q in q3.items()} == {
        NOT_CODED: OPEN, QUARANTINED: REOPENED, LD_DOSE: CLOSED, dev: CLOSED, ie: CLOSED}
    assert {k: q["QUERY_ID"] for k, q in q3.items()} == {k: q["QUERY_ID"] for k, q in q2.items()}
    assert (q3[QUARANTINED]["FIRST_SEEN_CUT"], q3[QUARANTINED]["REOPENED_EXPORT"], q3[QUARANTINED]["DAYS_OPEN"]) == (
        CUT1, "IM83-20260228", 59)
    assert (q3[LD_DOSE]["CLOSED_CUT"], q3[dev]["CLOSED_CUT"], q3[dev]["DAYS_OPEN"]) == (CUT2, CUT3, 28)
    assert q3[NOT_CODED]["DAYS_OPEN"] == 59


def test_error_rule_stops_before_the_reports(tmp_path, cfg, capsys, monkeypatch):
    """An infused participant who is not enrolled (ERROR rule XF-INF-NOT-ENROLLED): no reports."""
    from pipelines.run import run_export

    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    export = _export(cfg, tmp_path, CUT1, [])
    _edit_csv(export / "enrol.csv", {"SUBJID": "01-003"}, {"ENRLYN": "N", "DOSELVL": ""})
    out = tmp_path / "out"
    assert run_export(str(STUDY), str(export), str(out)) == 1
    err = capsys.readouterr().err
    assert "ERROR check xf_inf_not_enrolled on analysis/adsl failed" in err
    assert '"SUBJID": "01-003"' in err and "not enrolled with a dose level" in err
    assert not (out / "IM83" / CUT1.isoformat()).exists()
    work = out / "IM83" / ".work" / CUT1.isoformat()
    assert not (work / "dsmb_report.pdf").exists() and not (work / "data_queries.xlsx").exists()
