"""Eligibility against the protocol (clinical/eligibility.py): every criterion of the study
configuration on the screening values, x ULN from the lab's own range, protocol deviations."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from clinical.eligibility import build_eligibility
from clinical.study import load_study

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from test_rules import STUDY


@pytest.fixture(scope="module")
def cfg():
    return load_study(STUDY)


@pytest.fixture
def db(rules_con):
    return rules_con


def _elig(con, subjid, crit):
    return con.execute(
        """SELECT VALUE, VALUEN, ULN, XLIMIT, THRESHOLD, THRESHOLD_TEXT, MET, NOTEVAL, IEYN
           FROM analysis.eligibility WHERE SUBJID = ? AND CRIT = ?""",
        [subjid, crit],
    ).fetchall()[0]


def test_every_criterion_for_every_screened_participant(db, cfg):
    n_subj = db.execute("SELECT count(*) FROM analysis.adsl").fetchall()[0][0]
    assert db.execute("SELECT count(*) FROM analysis.eligibility").fetchall()[0][0] == n_subj * len(cfg.eligibility)
    crits = db.execute("SELECT DISTINCT CRIT, CRITN FROM analysis.eligibility ORDER BY CRITN").fetchall()
    assert [c for c, _ in crits] == [c.id for c in cfg.eligibility]


def test_demo_agrees_with_investigator_and_has_no_deviation(db):
    # The simulator's screen failures miss exactly one criterion, which the investigator marked N.
    assert db.execute("SELECT count(*) FROM analysis.eligibility WHERE MET IS NULL OR MET <> IEYN").fetchall()[0][0] == 0
    failed = db.execute(
        "SELECT SUBJID, CRIT, ENRLYN FROM analysis.eligibility WHERE MET = 'N' ORDER BY SUBJID"
    ).fetchall()
    assert failed and all(e == "N" for _, _, e in failed)
    screen_failures = {s for (s,) in db.execute("SELECT SUBJID FROM stage.enrol WHERE ENRLYN = 'N'").fetchall()}
    assert {s for s, _, _ in failed} == screen_failures
    assert db.execute("SELECT count(*) FROM analysis.protocol_deviations").fetchall()[0][0] == 0


def test_xuln_uses_the_labs_own_upper_limit(db, cfg):
    _, _, uln, limit, threshold, text, met, _, _ = _elig(db, "01-001", "ALT")
    lab_uln = db.execute(
        "SELECT LBORNRHI FROM stage.lb WHERE SUBJID = '01-001' AND VISIT = 'SCREENING' AND LBTESTCD = 'ALT'"
    ).fetchall()[0][0]
    assert (uln, limit, threshold, met) == (lab_uln, 2.5, 2.5 * lab_uln, "Y")
    assert text == f"<= 2.5 x ULN (= {2.5 * lab_uln:g} U/L)"
    # The same ALT against a laboratory with a lower range misses the criterion.
    db.execute("UPDATE stage.lb SET LBORNRHI = 10 WHERE SUBJID = '01-001' AND VISIT = 'SCREENING' AND LBTESTCD = 'ALT'")
    build_eligibility(db, cfg)
    assert _elig(db, "01-001", "ALT")[4:7] == (25.0, "<= 2.5 x ULN (= 25 U/L)", "N")


def test_liver_metastases_switch_alt_ast_limit(db, cfg):
    db.execute("UPDATE stage.lb SET LBORRES = 4 * LBORNRHI WHERE SUBJID = '01-001' AND VISIT = 'SCREENING' AND LBTESTCD IN ('ALT', 'AST')")
    build_eligibility(db, cfg)
    assert [_elig(db, "01-001", c)[6] for c in ("ALT", "AST")] == ["N", "N"]
    db.execute("UPDATE stage.sc SET LIVERMET = 'Y' WHERE SUBJID = '01-001'")
    build_eligibility(db, cfg)
    alt = _elig(db, "01-001", "ALT")
    assert (alt[3], alt[6]) == (5.0, "Y")
    assert _elig(db, "01-001", "AST")[6] == "Y"
    # BILI has no liver-metastases limit: unchanged at 1.5 x ULN.
    assert _elig(db, "01-001", "BILI")[3] == 1.5


def test_threshold_is_met_on_the_boundary(db, cfg):
    db.execute("UPDATE stage.lb SET LBORRES = 1.5 WHERE SUBJID = '01-001' AND VISIT = 'SCREENING' AND LBTESTCD = 'NEUT'")
    db.execute("UPDATE stage.lb SET LBORRES = 25.65, LBORNRHI = 17.1 WHERE SUBJID = '01-001' AND VISIT = 'SCREENING' AND LBTESTCD = 'BILI'")
    db.execute("UPDATE stage.sc SET KPS = 60 WHERE SUBJID = '01-001'")
    build_eligibility(db, cfg)
    assert [_elig(db, "01-001", c)[6] for c in ("ANC", "BILI", "KPS")] == ["Y", "Y", "Y"]
    db.execute("UPDATE stage.sc SET KPS = 50 WHERE SUBJID = '01-001'")
    build_eligibility(db, cfg)
    assert _elig(db, "01-001", "KPS")[6] == "N"


def test_enrolled_participant_missing_a_criterion_is_a_protocol_deviation(db, cfg):
    db.execute("UPDATE stage.sc SET GPC3 = 'NEGATIVE', LVEF = 45.0 WHERE SUBJID = '01-003'")
    counts = build_eligibility(db, cfg)
    assert counts["protocol_deviations"] == 2
    rows = db.execute(
        """SELECT SUBJID, DOSEP, CRIT, CRITLBL, VALUE, THRESHOLD, THRESHOLD_TEXT, IEYN, DVCAT, DVTERM
           FROM analysis.protocol_deviations ORDER BY CRITN"""
    ).fetchall()
    assert [r[:8] for r in rows] == [
        ("01-003", "DL1", "GPC3", "GPC3-positive tumour (IHC)", "NEGATIVE", None, "== POSITIVE", "Y"),
        ("01-003", "DL1", "LVEF", "LVEF >= 50%", "45", 50.0, ">= 50 %", "Y"),
    ]
    assert rows[1][8] == "ELIGIBILITY"
    assert rows[1][9] == (
        "enrolled without meeting inclusion criterion LVEF (LVEF >= 50%): screening value 45 %, required >= 50 %"
    )


def test_screen_failure_is_not_a_deviation_and_missing_value_is_not_evaluable(db, cfg):
    db.execute("DELETE FROM stage.lb WHERE SUBJID = '01-001' AND VISIT = 'SCREENING' AND LBTESTCD = 'HGB'")
    build_eligibility(db, cfg)
    row = _elig(db, "01-001", "HGB")
    assert row[6] is None and row[7].startswith("no screening value")
    assert db.execute("SELECT count(*) FROM analysis.protocol_deviations").fetchall()[0][0] == 0


def test_thresholds_come_from_the_configuration(db, cfg):
    stricter = cfg.model_copy(
        update={"eligibility": [c.model_copy(update={"value": 99}) if c.id == "KPS" else c for c in cfg.eligibility]}
    )
    build_eligibility(db, stricter)
    n_enrolled = db.execute("SELECT count(*) FROM stage.enrol WHERE ENRLYN = 'Y'").fetchall()[0][0]
    kps = db.execute("SELECT count(*) FROM analysis.protocol_deviations WHERE CRIT = 'KPS'").fetchall()[0][0]
    assert 0 < kps <= n_enrolled
    assert db.execute("SELECT DISTINCT THRESHOLD_TEXT FROM analysis.eligibility WHERE CRIT = 'KPS'").fetchall() == [(">= 99 %",)]


def test_screening_visit_comes_from_the_configuration(db, cfg):
    other = cfg.model_copy(update={"screening_visit": "LD"})
    build_eligibility(db, other)
    # Participants without an LD lab visit (screen failures) have no lab values to evaluate.
    sf = db.execute("SELECT SUBJID FROM stage.enrol WHERE ENRLYN = 'N' LIMIT 1").fetchall()[0][0]
    assert _elig(db, sf, "ANC")[6] is None


def test_value_held_in_quarantine_is_one_query_not_two(db, cfg):
    """A screening lab held in quarantine (e.g. "12 g/L", TYPE-FLOAT) is asked about by its own data
    query; the criterion says where the value is and XF-ELIG-NOT-EVALUABLE does not ask again. A value
    that was never recorded is still asked for."""
    from clinical.rules import RULES_BY_ID, run_rule

    line = db.execute(
        "SELECT _line FROM raw.lb WHERE SUBJID = '01-001' AND VISIT = 'SCREENING' AND LBTESTCD = 'HGB'").fetchall()[0][0]
    export = db.execute("SELECT any_value(_export_id) FROM raw.lb").fetchall()[0][0]
    # What ingest does with a refused value: the quarantine row, and the record kept out of stage.
    db.execute("INSERT INTO raw.quarantine VALUES (?, 'lb', 'lb.csv', ?, '01-001', 'LBORRES', 'TYPE-FLOAT', '12 g/L', 'x')",
               [export, line])
    db.execute("DELETE FROM stage.lb WHERE _line = ?", [line])
    db.execute("DELETE FROM stage.lb WHERE SUBJID = '01-002' AND VISIT = 'SCREENING' AND LBTESTCD = 'HGB'")
    build_eligibility(db, cfg)
    rows = db.execute(
        "SELECT SUBJID, MET, NOTEVAL, HELD FROM analysis.eligibility WHERE CRIT = 'HGB' AND SUBJID IN ('01-001', '01-002') "
        "ORDER BY SUBJID").fetchall()
    assert rows == [
        ("01-001", None, f"screening value held in quarantine (lb line {line}: TYPE-FLOAT)", f"lb line {line}: TYPE-FLOAT"),
        ("01-002", None, "no screening value recorded", None),
    ]
    asked = run_rule(db, RULES_BY_ID["XF-ELIG-NOT-EVALUABLE"], cfg)
    assert [(s, k) for s, k, _ in asked] == [("01-002", "CRIT=HGB")]
