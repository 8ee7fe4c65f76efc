"""ADAE derivations on hand-made rows: imputation (admiral rules), day numbering, period, TEAE flag."""

import datetime as dt
from pathlib import Path

import duckdb
import pytest

from clinical.adae import build_adae
from clinical.adsl import SETUP_SQL
from clinical.study import load_study

CFG = load_study(Path(__file__).resolve().parent.parent / "studies" / "im83.yaml")
D = dt.date


def _con(ae_rows):
    con = duckdb.connect()
    con.execute(SETUP_SQL)
    con.execute("CREATE SCHEMA cut")
    con.execute(
        """CREATE TABLE analysis.adsl AS SELECT * FROM (VALUES
             ('IM83', '01-001', DATE '2025-03-10', DATE '2025-03-05', 'DL1', 1, 'Y', DATE '2025-04-07',
              CAST(NULL AS DATE), CAST(NULL AS DATE)),
             ('IM83', '01-002', NULL, NULL, NULL, NULL, 'N', NULL, NULL, DATE '2025-02-20'))
           t(STUDYID, SUBJID, TRTSDT, LDSTDT, DOSEA, DOSEAN, SAFFL, DLTWEND, DTHDT, EOSDT)"""
    )
    con.execute(
        """CREATE TABLE cut.ae (SUBJID VARCHAR, AESPID BIGINT, AETERM VARCHAR, AEDECOD VARCHAR, AEBODSYS VARCHAR,
             AECAT VARCHAR, AESTDAT VARCHAR, AEENDAT VARCHAR, AETOXGR BIGINT, AESER VARCHAR, AEREL VARCHAR,
             AEOUT VARCHAR, AEDLT VARCHAR, AEFEVER VARCHAR, AEHYPOT VARCHAR, AEHYPOX VARCHAR, AEICE BIGINT,
             AECONSC VARCHAR, AESEIZ VARCHAR, AEMOTOR VARCHAR, AEEDEMA VARCHAR)"""
    )
    con.executemany(
        "INSERT INTO cut.ae VALUES (?, ?, ?, ?, 'SOC', 'OTHER', ?, ?, ?, 'N', ?, 'RECOVERED/RESOLVED', ?,"
        " NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
        ae_rows,
    )
    return con


ROWS = [
    # SUBJID, AESPID, AETERM, AEDECOD, AESTDAT, AEENDAT, grade, AEREL, AEDLT
    ("01-001", 1, "Fatigue", "Fatigue", "2025-02-01", "2025-02-03", 1, "NOT RELATED", "N"),  # pre-treatment
    ("01-001", 2, "Nausea", "Nausea", "2025-03-06", "2025-03-07", 2, "UNLIKELY", "N"),  # during LD, ended before
    ("01-001", 3, "Fever", "Pyrexia", "2025-03", None, 2, "PROBABLE", "N"),  # month of infusion -> infusion date
    ("01-001", 4, "Fever", "Pyrexia", "2025-03-12", "2025-03", 3, "DEFINITE", "Y"),  # worst pyrexia; end imputed last
    ("01-001", 5, "Headache", "Headache", "2025", None, 1, "POSSIBLE", "N"),  # year only, year of infusion
    ("01-001", 6, "Cough", "Cough", None, None, 1, "NOT RELATED", "N"),  # no start date: TE (conservative)
    ("01-002", 1, "Rash", "Rash", "2025-02-10", None, 1, "NOT RELATED", "N"),  # not treated: never TE
]


def _adae(con):
    build_adae(con, CFG)
    cols = "SUBJID, AESPID, ASTDT, ASTDTF, AENDT, AENDTF, ADY, ASTDY, APERIOD, TRTEMFL, RELFL, DLTFL, WORSTFL"
    return {(r[0], r[1]): r[2:] for r in con.execute(f"SELECT {cols} FROM analysis.adae").fetchall()}


def test_admiral_imputation_day_numbering_period_and_te_flag():
    got = _adae(_con(ROWS))
    assert got[("01-001", 1)] == (D(2025, 2, 1), None, D(2025, 2, 3), None, -37, -37, "PRE-TREATMENT", None, "N", "N", "N")
    assert got[("01-001", 2)] == (D(2025, 3, 6), None, D(2025, 3, 7), None, -4, -4, "LYMPHODEPLETION", None, "N", "N", "N")
    # Infusion (2025-03-10) lies in March 2025: admiral's min_dates imputes the start to the infusion date.
    assert got[("01-001", 3)] == (D(2025, 3, 10), "D", None, None, 0, 1, "POST-INFUSION", "Y", "Y", "N", "N")
    assert got[("01-001", 4)] == (D(2025, 3, 12), None, D(2025, 3, 31), "D", 2, 3, "POST-INFUSION", "Y", "Y", "Y", "Y")
    assert got[("01-001", 5)] == (D(2025, 3, 10), "M", None, None, 0, 1, "POST-INFUSION", "Y", "Y", "N", "Y")
    assert got[("01-001", 6)] == (None, None, None, None, None, None, None, "Y", "N", "N", "Y")
    assert got[("01-002", 1)][7] is None


def test_day_only_imputation_leaves_year_only_dates_missing():
    cfg = CFG.model_copy(update={"safety": CFG.safety.model_copy(update={"date_imputation": "D"})})
    con = _con(ROWS)
    build_adae(con, cfg)
    row = con.execute("SELECT ASTDT, ASTDTF, TRTEMFL FROM analysis.adae WHERE SUBJID = '01-001' AND AESPID = 5").fetchone()
    # No start date after imputation: treatment-emergent by the conservative rule.
    assert row == (None, None, "Y")


@pytest.mark.parametrize("anchor, expected", [("infusion", None), ("lymphodepletion_start", "Y")])
def test_anchor_setting_moves_the_treatment_emergent_boundary(anchor, expected):
    cfg = CFG.model_copy(update={"safety": CFG.safety.model_copy(update={"treatment_emergent_anchor": anchor})})
    con = _con([("01-001", 9, "Vomiting", "Vomiting", "2025-03-06", "2025-03-11", 1, "NOT RELATED", "N")])
    build_adae(con, cfg)
    assert con.execute("SELECT TRTEMFL FROM analysis.adae").fetchone()[0] == expected


def test_worsening_of_a_pre_existing_event_is_treatment_emergent():
    """CDASH records a change of grade as a new AE row from the day it worsened: the grade-1 episode
    that started before infusion is not treatment-emergent, its grade-3 worsening after infusion is."""
    con = _con([
        ("01-001", 7, "Diarrhoea", "Diarrhoea", "2025-03-01", "2025-03-11", 1, "NOT RELATED", "N"),
        ("01-001", 8, "Diarrhoea", "Diarrhoea", "2025-03-12", "2025-03-15", 3, "POSSIBLE", "N"),
    ])
    build_adae(con, CFG)
    assert con.execute("SELECT AESPID, TRTEMFL, WORSTFL FROM analysis.adae ORDER BY AESPID").fetchall() == [
        (7, None, "N"), (8, "Y", "Y"),
    ]
