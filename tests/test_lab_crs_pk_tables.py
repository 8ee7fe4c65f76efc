"""build_adlb, build_crs_icans and build_pk on a small hand-made DuckDB whose answers are known."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import duckdb
import pytest

from clinical.adlb import build_adlb
from clinical.adsl import SETUP_SQL
from clinical.crs_icans import build_crs_icans
from clinical.pk import build_pk
from clinical.study import load_study

ROOT = Path(__file__).resolve().parent.parent
CFG = load_study(ROOT / "studies" / "im83.yaml")

D = dt.date
T1, T2, T4 = D(2024, 7, 10), D(2024, 8, 1), D(2024, 9, 1)  # infusion dates of 01-001, 01-002, 01-004


def day(t0: dt.date, n: int) -> dt.date:
    return t0 + dt.timedelta(days=n)


ADSL = [
    # SUBJID, TRTSDT, DOSEA, DOSEAN, SAFFL, PKEVLFL
    ("01-001", T1, "DL1", 1, "Y", "Y"),
    ("01-002", T2, "DL2", 2, "Y", "Y"),
    ("01-003", None, None, None, "N", "N"),  # enrolled, never infused
    ("01-004", T4, "DL1", 1, "Y", "N"),
]

LB = [
    # SUBJID, VISIT, LBDAT, LBTESTCD, LBORRES, LBORRESU, LBORNRLO, LBORNRHI
    # 01-001 ANC: nadir 0.2 on day 7, back >= 0.5 from day 14 on; grade 3 at day 28
    ("01-001", "SCREENING", day(T1, -20), "NEUT", 3.0, "10^9/L", 2.0, 7.5),
    ("01-001", "LD", day(T1, -5), "NEUT", 2.5, "10^9/L", 2.0, 7.5),
    ("01-001", "D0", T1, "NEUT", 1.2, "10^9/L", 2.0, 7.5),
    ("01-001", "D7", day(T1, 7), "NEUT", 0.2, "10^9/L", 2.0, 7.5),
    ("01-001", "D10", day(T1, 10), "NEUT", 0.4, "10^9/L", 2.0, 7.5),
    ("01-001", "D14", day(T1, 14), "NEUT", 0.8, "10^9/L", 2.0, 7.5),
    ("01-001", "D21", day(T1, 21), "NEUT", 1.6, "10^9/L", 2.0, 7.5),
    ("01-001", "D28", day(T1, 28), "NEUT", 0.9, "10^9/L", 2.0, 7.5),
    ("01-001", "M2", day(T1, 60), "NEUT", 2.1, "10^9/L", 2.0, 7.5),
    # platelets: day 21 grade 2, the "D28" visit done late on day 33 grade 3 -> nearest to day 28
    ("01-001", "SCREENING", day(T1, -20), "PLAT", 200.0, "10^9/L", 150.0, 400.0),
    ("01-001", "D21", day(T1, 21), "PLAT", 60.0, "10^9/L", 150.0, 400.0),
    ("01-001", "D28", day(T1, 33), "PLAT", 30.0, "10^9/L", 150.0, 400.0),
    # ALT: abnormal baseline 60 (ULN 40): 170 is grade 1 by baseline multiples (>= 1.5x, not > 3x); G2 by ULN
    ("01-001", "SCREENING", day(T1, -20), "ALT", 60.0, "U/L", 7.0, 40.0),
    ("01-001", "D7", day(T1, 7), "ALT", 170.0, "U/L", 7.0, 40.0),
    ("01-001", "D7", day(T1, 7), "CRCL", 80.0, "mL/min", None, None),
    # 01-002 ANC: nadir 0.3 day 7; 0.6 on day 14 but 0.4 on day 21 -> recovery day 28
    ("01-002", "SCREENING", day(T2, -15), "NEUT", 4.0, "10^9/L", 2.0, 7.5),
    ("01-002", "D7", day(T2, 7), "NEUT", 0.3, "10^9/L", 2.0, 7.5),
    ("01-002", "D14", day(T2, 14), "NEUT", 0.6, "10^9/L", 2.0, 7.5),
    ("01-002", "D21", day(T2, 21), "NEUT", 0.4, "10^9/L", 2.0, 7.5),
    ("01-002", "D28", day(T2, 28), "NEUT", 0.7, "10^9/L", 2.0, 7.5),
    # HGB without LLN: 110 is not gradable, 70 is grade 3
    ("01-002", "D7", day(T2, 7), "HGB", 110.0, "g/L", None, 160.0),
    ("01-002", "D14", day(T2, 14), "HGB", 70.0, "g/L", None, 160.0),
    # not infused: in adlb, not in the toxicity tables
    ("01-003", "SCREENING", D(2024, 7, 1), "NEUT", 1.2, "10^9/L", 2.0, 7.5),
    # 01-004: nadir 1.0 (G2), grade 1 at day 28
    ("01-004", "SCREENING", day(T4, -12), "NEUT", 3.3, "10^9/L", 2.0, 7.5),
    ("01-004", "D7", day(T4, 7), "NEUT", 1.0, "10^9/L", 2.0, 7.5),
    ("01-004", "D28", day(T4, 28), "NEUT", 1.8, "10^9/L", 2.0, 7.5),
]

AE_COLS = ("SUBJID, AESPID, AETERM, AEDECOD, AECAT, ASTDT, ASTDTF, AENDT, AENDTF, ADY, ATOXGR, AESER, AEOUT, "
           "AEDLT, AEFEVER, AEHYPOT, AEHYPOX, AEICE, AECONSC, AESEIZ, AEMOTOR, AEEDEMA, DOSEA, DOSEAN, SAFFL, "
           "TRTSDT, TRTEMFL")
AE = [
    # CRS: fever + ONE VASOPRESSOR + LOW FLOW -> ASTCT 3; investigator 2 -> AGREE N; tocilizumab linked
    ("01-001", 1, "CRS", "Cytokine release syndrome", "CRS", day(T1, 1), None, day(T1, 5), None, 1, 2, "Y",
     "RECOVERED/RESOLVED", "N", "Y", "ONE VASOPRESSOR", "LOW FLOW", None, None, None, None, None, "DL1", 1, "Y", T1, "Y"),
    # ICANS: ICE 3 + rapidly resolving seizure -> 3 = investigator; ongoing; steroid overlapping
    ("01-001", 2, "ICANS", "ICANS", "ICANS", day(T1, 4), None, None, None, 4, 3, "Y",
     "RECOVERING/RESOLVING", "N", None, None, None, 3, "AWAKENS TO VOICE", "RAPIDLY RESOLVING", "N", "NONE",
     "DL1", 1, "Y", T1, "Y"),
    ("01-001", 3, "Nausea", "Nausea", "OTHER", day(T1, 2), None, day(T1, 3), None, 2, 1, "N",
     "RECOVERED/RESOLVED", "N", None, None, None, None, None, None, None, None, "DL1", 1, "Y", T1, "Y"),
    # CRS grade 1, fever only -> agree; 3 days
    ("01-002", 1, "CRS", "Cytokine release syndrome", "CRS", day(T2, 2), None, day(T2, 4), None, 2, 1, "N",
     "RECOVERED/RESOLVED", "N", "Y", "NONE", "NONE", None, None, None, None, None, "DL2", 2, "Y", T2, "Y"),
    # second CRS: no fever, no treatment -> ASTCT 0, AGREE N; partial end date -> no duration
    ("01-002", 2, "CRS", "Cytokine release syndrome", "CRS", day(T2, 9), None, D(2024, 8, 1), "D", 9, 1, "N",
     "RECOVERED/RESOLVED", "N", "N", "NO VASOPRESSOR", "NONE", None, None, None, None, None, "DL2", 2, "Y", T2, "Y"),
    # not infused: excluded
    ("01-003", 1, "CRS", "Cytokine release syndrome", "CRS", D(2024, 7, 5), None, D(2024, 7, 6), None, None, 1, "N",
     "RECOVERED/RESOLVED", "N", "Y", "NONE", "NONE", None, None, None, None, None, None, None, "N", None, None),
    # fatal ICANS -> grade 5
    ("01-004", 1, "ICANS", "ICANS", "ICANS", day(T4, 5), None, day(T4, 7), None, 5, 5, "Y",
     "FATAL", "Y", None, None, None, 0, "UNAROUSABLE", "NONE", "N", "DIFFUSE", "DL1", 1, "Y", T4, "Y"),
]

CM = [
    # SUBJID, CMSPID, CMTRT, CMCLAS, CMSTDAT, CMENDAT, CMAESPID
    ("01-001", 1, "Tocilizumab", "TOCILIZUMAB", "2024-07-12", "2024-07-12", 1),
    ("01-001", 2, "Dexamethasone", "CORTICOSTEROID", "2024-07-16", None, None),
    ("01-001", 3, "Norepinephrine", "VASOPRESSOR", "2024-07-12", "2024-07-13", 1),
]

PC = [
    # SUBJID, PCTPT, PCDAT, PCORRES, PCBLQ, PCLLOQ
    ("01-001", "SCREENING", day(T1, -20), None, "Y", 50.0),
    ("01-001", "D0", T1, None, "Y", 50.0),
    ("01-001", "D4", day(T1, 4), 1000.0, "N", 50.0),
    ("01-001", "D7", day(T1, 7), 5000.0, "N", 50.0),
    ("01-001", "D14", day(T1, 14), 2000.0, "N", 50.0),
    ("01-001", "D28", day(T1, 28), 500.0, "N", 50.0),
    ("01-001", "M2", day(T1, 60), None, "Y", 50.0),
    # no day-0 sample: the lymphodepletion sample is the time-0 level; mono-exponential decline t1/2 7 d
    ("01-002", "LD", day(T2, -5), None, "Y", None),  # blank LLOQ -> configured 50
    ("01-002", "D7", day(T2, 7), 8000.0, "N", 50.0),
    ("01-002", "D14", day(T2, 14), 4000.0, "N", 50.0),
    ("01-002", "D21", day(T2, 21), 2000.0, "N", 50.0),
    ("01-002", "D28", day(T2, 28), 1000.0, "N", 50.0),
    ("01-002", "M2", day(T2, 60), 30.0, "N", 50.0),  # below LLOQ though recorded as quantifiable
    ("01-003", "SCREENING", D(2024, 7, 1), None, "Y", 50.0),
    ("01-004", "D0", T4, None, "Y", 50.0),
    ("01-004", "D7", day(T4, 7), None, "Y", 50.0),
    ("01-004", "D28", day(T4, 28), None, "Y", 50.0),
]


def _database(path: Path, pc: list[tuple] = PC) -> duckdb.DuckDBPyConnection:
    """The hand-made tables (ADSL, ADAE, lab, CM and the PK samples ``pc``) in a new database."""
    c = duckdb.connect(str(path))
    c.execute("CREATE SCHEMA cut; CREATE SCHEMA analysis")
    c.execute(SETUP_SQL)
    c.execute("CREATE TABLE analysis.adsl (SUBJID VARCHAR, TRTSDT DATE, DOSEA VARCHAR, DOSEAN INTEGER, "
              "SAFFL VARCHAR, PKEVLFL VARCHAR, LDSTDT DATE)")
    # lymphodepletion from day -5 of the infusion (ADLB's baseline is a sample before it)
    c.executemany("INSERT INTO analysis.adsl VALUES (?, ?, ?, ?, ?, ?, ?)",
                  [(*r, day(r[1], -5) if r[1] else None) for r in ADSL])
    c.execute("CREATE TABLE cut.lb (SUBJID VARCHAR, VISIT VARCHAR, LBDAT DATE, LBTESTCD VARCHAR, LBORRES DOUBLE, "
              "LBORRESU VARCHAR, LBORNRLO DOUBLE, LBORNRHI DOUBLE)")
    c.executemany("INSERT INTO cut.lb VALUES (?, ?, ?, ?, ?, ?, ?, ?)", LB)
    c.execute("""CREATE TABLE analysis.adae (SUBJID VARCHAR, AESPID INTEGER, AETERM VARCHAR, AEDECOD VARCHAR,
      AECAT VARCHAR, ASTDT DATE, ASTDTF VARCHAR, AENDT DATE, AENDTF VARCHAR, ADY BIGINT, ATOXGR INTEGER,
      AESER VARCHAR, AEOUT VARCHAR, AEDLT VARCHAR, AEFEVER VARCHAR, AEHYPOT VARCHAR, AEHYPOX VARCHAR,
      AEICE INTEGER, AECONSC VARCHAR, AESEIZ VARCHAR, AEMOTOR VARCHAR, AEEDEMA VARCHAR, DOSEA VARCHAR,
      DOSEAN INTEGER, SAFFL VARCHAR, TRTSDT DATE, TRTEMFL VARCHAR)""")
    c.executemany(f"INSERT INTO analysis.adae ({AE_COLS}) VALUES ({', '.join(['?'] * 27)})", AE)
    c.execute("CREATE TABLE cut.cm (SUBJID VARCHAR, CMSPID INTEGER, CMTRT VARCHAR, CMCLAS VARCHAR, "
              "CMSTDAT VARCHAR, CMENDAT VARCHAR, CMAESPID INTEGER)")
    c.executemany("INSERT INTO cut.cm VALUES (?, ?, ?, ?, ?, ?, ?)", CM)
    c.execute("CREATE TABLE cut.pc (SUBJID VARCHAR, PCTPT VARCHAR, PCDAT DATE, PCORRES DOUBLE, PCBLQ VARCHAR, "
              "PCLLOQ DOUBLE)")
    c.executemany("INSERT INTO cut.pc VALUES (?, ?, ?, ?, ?, ?)", pc)
    return c


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    c = _database(tmp_path_factory.mktemp("db") / "t.duckdb")
    pk = build_pk(c, CFG)
    assert pk.not_derived == {}
    counts = {**build_adlb(c, CFG), **build_crs_icans(c, CFG), **pk.counts}
    yield c, counts
    c.close()


@pytest.fixture(scope="module")
def con(built):
    return built[0]


@pytest.fixture(scope="module")
def counts(built):
    return built[1]


def rows(con, sql, params=None) -> list[dict]:
    cur = con.execute(sql, params or {})
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def one(con, sql, params=None) -> dict:
    out = rows(con, sql, params)
    assert len(out) == 1, out
    return out[0]


# ---- adlb ------------------------------------------------------------------------------------------


def test_adlb_one_row_per_result_with_day_baseline_and_grade(con, counts):
    assert counts["adlb"] == len(LB)
    neut = rows(con, "SELECT VISIT, VISITDY, ADY, AVAL, BASE, ABLFL, ATOXGR, DOSEA, SAFFL FROM analysis.adlb "
                     "WHERE SUBJID = '01-001' AND PARAMCD = 'NEUT' ORDER BY LBDAT")
    assert [(r["VISIT"], r["ADY"], r["ATOXGR"]) for r in neut] == [
        ("SCREENING", -20, 0), ("LD", -5, 0), ("D0", 0, 2), ("D7", 7, 4), ("D10", 10, 4),
        ("D14", 14, 3), ("D21", 21, 1), ("D28", 28, 3), ("M2", 60, 0)]
    assert {r["BASE"] for r in neut} == {3.0}
    assert [r["ABLFL"] for r in neut] == ["Y"] + [None] * 8
    assert neut[3]["VISITDY"] == 7 and neut[0]["VISITDY"] is None
    assert {(r["DOSEA"], r["SAFFL"]) for r in neut} == {("DL1", "Y")}


def test_adlb_grades_with_baseline_and_missing_limits(con):
    alt = rows(con, "SELECT VISIT, ATOXGR, ATOXDIR FROM analysis.adlb WHERE SUBJID = '01-001' AND PARAMCD = 'ALT' "
                    "ORDER BY LBDAT")
    # screening 60 > ULN 40: grade 1 (not graded against itself); day 7 170 >= 1.5 x baseline 60 but not > 3 x
    assert [(r["VISIT"], r["ATOXGR"], r["ATOXDIR"]) for r in alt] == [("SCREENING", 1, "H"), ("D7", 1, "H")]
    hgb = rows(con, "SELECT AVAL, ATOXGR FROM analysis.adlb WHERE SUBJID = '01-002' AND PARAMCD = 'HGB' ORDER BY LBDAT")
    assert [(r["AVAL"], r["ATOXGR"]) for r in hgb] == [(110.0, None), (70.0, 3)]
    crcl = one(con, "SELECT ATOXGR, ATOXTERM FROM analysis.adlb WHERE PARAMCD = 'CRCL'")
    assert crcl == {"ATOXGR": None, "ATOXTERM": None}


def test_adlb_keeps_non_infused_participants(con):
    r = one(con, "SELECT ADY, DOSEA, SAFFL, ATOXGR FROM analysis.adlb WHERE SUBJID = '01-003'")
    assert r == {"ADY": None, "DOSEA": None, "SAFFL": "N", "ATOXGR": 2}


# ---- lab_toxicity ----------------------------------------------------------------------------------


def test_anc_nadir_recovery_and_day28_cytopenia(con):
    r = one(con, "SELECT * FROM analysis.lab_toxicity WHERE SUBJID = '01-001' AND PARAMCD = 'NEUT'")
    assert (r["WORSTGR"], r["NADIR"], r["NADIRDY"], r["PEAK"], r["PEAKDY"]) == (4, 0.2, 7, 2.1, 60)
    assert (r["ANCRECDY"], r["ANCRECFL"]) == (14, "Y")
    assert (r["D28DY"], r["D28GR"], r["CYTOPENIA_D28"]) == (28, 3, "Y")
    assert r["NPOST"] == 7  # day 0 counts as post-infusion

    r = one(con, "SELECT * FROM analysis.lab_toxicity WHERE SUBJID = '01-002' AND PARAMCD = 'NEUT'")
    # 0.6 on day 14 is followed by 0.4 on day 21: recovery only on day 28
    assert (r["NADIR"], r["NADIRDY"], r["ANCRECDY"], r["ANCRECFL"], r["CYTOPENIA_D28"]) == (0.3, 7, 28, "Y", "Y")

    r = one(con, "SELECT * FROM analysis.lab_toxicity WHERE SUBJID = '01-004' AND PARAMCD = 'NEUT'")
    assert (r["WORSTGR"], r["NADIR"], r["ANCRECDY"], r["ANCRECFL"], r["D28GR"], r["CYTOPENIA_D28"]) == (
        2, 1.0, None, None, 1, "N")


def test_day28_uses_the_nearest_sample_in_the_window(con):
    r = one(con, "SELECT * FROM analysis.lab_toxicity WHERE SUBJID = '01-001' AND PARAMCD = 'PLAT'")
    assert (r["WORSTGR"], r["NADIR"], r["NADIRDY"], r["D28DY"], r["D28GR"], r["CYTOPENIA_D28"]) == (3, 30.0, 33, 33, 3, "Y")
    r = one(con, "SELECT * FROM analysis.lab_toxicity WHERE SUBJID = '01-001' AND PARAMCD = 'ALT'")
    assert (r["WORSTGR"], r["CYTOPENIA_D28"], r["ANCRECFL"]) == (1, None, None)


def test_lab_toxicity_is_safety_population_only(con):
    subjects = {r["SUBJID"] for r in rows(con, "SELECT DISTINCT SUBJID FROM analysis.lab_toxicity")}
    assert subjects == {"01-001", "01-002", "01-004"}


def test_lab_summary_counts_and_denominators(con, counts):
    got = {(r["DOSE"], r["WORSTGR"]): (r["N"], r["DENOM"], r["PCT"])
           for r in rows(con, "SELECT * FROM analysis.lab_summary WHERE PARAMCD = 'NEUT'")}
    assert len(got) == 4 * 5
    assert got[("DL1", 4)] == (1, 2, 50.0) and got[("DL1", 2)] == (1, 2, 50.0) and got[("DL1", 0)] == (0, 2, 0.0)
    assert got[("DL2", 4)] == (1, 1, 100.0)
    assert got[("DL3", 4)] == (0, 0, None)
    assert got[("TOTAL", 4)] == (2, 3, 66.7) and got[("TOTAL", 2)] == (1, 3, 33.3)
    hgb = {(r["DOSE"], r["WORSTGR"]): r["N"] for r in rows(con, "SELECT * FROM analysis.lab_summary WHERE PARAMCD = 'HGB'")}
    assert hgb[("DL2", 3)] == 1
    assert one(con, "SELECT DOSEN FROM analysis.lab_summary WHERE DOSE = 'TOTAL' AND PARAMCD = 'NEUT' AND WORSTGR = 0")[
        "DOSEN"] == 99
    assert counts["lab_summary"] == 9 * 4 * 5


# ---- crs_icans ---------------------------------------------------------------------------------------


def test_crs_icans_rows_grades_and_treatment(con):
    ev = {(r["SUBJID"], r["AESPID"]): r for r in rows(con, "SELECT * FROM analysis.crs_icans")}
    assert set(ev) == {("01-001", 1), ("01-001", 2), ("01-002", 1), ("01-002", 2), ("01-004", 1)}
    crs = ev[("01-001", 1)]
    assert (crs["ATOXGR"], crs["ASTCTGR"], crs["AGREE"]) == (2, 3, "N")
    assert (crs["ADY"], crs["DURATION"], crs["TOCIFL"], crs["STERFL"]) == (1, 5, "Y", "N")
    icans = ev[("01-001", 2)]
    assert (icans["ATOXGR"], icans["ASTCTGR"], icans["AGREE"]) == (3, 3, "Y")
    assert (icans["ADY"], icans["DURATION"], icans["TOCIFL"], icans["STERFL"]) == (4, None, "N", "Y")
    assert (ev[("01-002", 1)]["ASTCTGR"], ev[("01-002", 1)]["AGREE"], ev[("01-002", 1)]["DURATION"]) == (1, "Y", 3)
    # no fever and no tocilizumab/steroid: no ASTCT criterion met; partial end date: no duration
    assert (ev[("01-002", 2)]["ASTCTGR"], ev[("01-002", 2)]["AGREE"], ev[("01-002", 2)]["DURATION"]) == (0, "N", None)
    assert (ev[("01-004", 1)]["ASTCTGR"], ev[("01-004", 1)]["AGREE"]) == (5, "Y")


def test_crs_icans_summary(con):
    s = {(r["AECAT"], r["DOSE"]): r for r in rows(con, "SELECT * FROM analysis.crs_icans_summary")}
    assert len(s) == 2 * 4
    crs_dl1 = s[("CRS", "DL1")]
    assert (crs_dl1["DENOM"], crs_dl1["N_ANY"], crs_dl1["PCT_ANY"], crs_dl1["N_GR2"]) == (2, 1, 50.0, 1)
    assert (crs_dl1["ONSET_MEDIAN"], crs_dl1["DUR_N"], crs_dl1["DUR_MEDIAN"], crs_dl1["N_TOCI"], crs_dl1["N_DISCORD"]) == (
        1.0, 1, 5.0, 1, 1)
    tot = s[("CRS", "TOTAL")]
    assert (tot["DOSEN"], tot["DENOM"], tot["N_ANY"], tot["N_GR1"], tot["N_GR2"], tot["N_GR3"]) == (99, 3, 2, 1, 1, 0)
    assert (tot["ONSET_MEDIAN"], tot["ONSET_MIN"], tot["ONSET_MAX"]) == (1.5, 1, 2)
    assert (tot["DUR_N"], tot["DUR_MEDIAN"], tot["DUR_MIN"], tot["DUR_MAX"]) == (2, 4.0, 3, 5)
    assert (tot["N_TOCI"], tot["N_STEROID"], tot["N_DISCORD"]) == (1, 0, 2)
    ic = s[("ICANS", "DL1")]
    assert (ic["N_ANY"], ic["N_GR3"], ic["N_GR5"], ic["ONSET_MEDIAN"], ic["ONSET_MIN"], ic["ONSET_MAX"]) == (2, 1, 1, 4.5, 4, 5)
    assert (ic["DUR_N"], ic["DUR_MEDIAN"], ic["N_STEROID"], ic["N_TOCI"], ic["N_DISCORD"]) == (1, 3.0, 1, 0, 0)
    empty = s[("ICANS", "DL3")]
    assert (empty["DENOM"], empty["N_ANY"], empty["PCT_ANY"], empty["ONSET_MEDIAN"]) == (0, 0, None, None)


# ---- PK ------------------------------------------------------------------------------------------------


def test_adpc(con, counts):
    assert counts["adpc"] == len([p for p in PC if p[0] != "01-003"])
    r = rows(con, "SELECT PCTPT, ADY, AVAL, BLQFL, LLOQ, NCATIME FROM analysis.adpc WHERE SUBJID = '01-002' ORDER BY PCDAT")
    assert [(x["PCTPT"], x["ADY"], x["AVAL"], x["BLQFL"], x["LLOQ"], x["NCATIME"]) for x in r] == [
        ("LD", -5, 0.0, "Y", 50.0, 0), ("D7", 7, 8000.0, "N", 50.0, 7), ("D14", 14, 4000.0, "N", 50.0, 14),
        ("D21", 21, 2000.0, "N", 50.0, 21), ("D28", 28, 1000.0, "N", 50.0, 28), ("M2", 60, 0.0, "Y", 50.0, 60)]
    scr = one(con, "SELECT ADY, NCATIME FROM analysis.adpc WHERE SUBJID = '01-001' AND PCTPT = 'SCREENING'")
    assert scr == {"ADY": -20, "NCATIME": None}  # day 0 exists: screening is not used


def _pp(con, subj):
    return {r["PARAMCD"]: r["AVAL"] for r in rows(con, "SELECT PARAMCD, AVAL FROM analysis.adpp WHERE SUBJID = $s", {"s": subj})}


def test_adpp_hand_computed(con):
    p1 = _pp(con, "01-001")
    assert list(p1) == ["CMAX", "TMAX", "AUC28", "AUCLAST", "TLAST", "CLAST", "LAMZ", "THALF"]
    # linear up, log down: 0-4 (0 -> 1000) 2000; 4-7 up 9000; 7-14 7*3000/ln 2.5; 14-28 14*1500/ln 4
    auc = 2000 + 9000 + 7 * 3000 / math.log(2.5) + 14 * 1500 / math.log(4)
    assert (p1["CMAX"], p1["TMAX"], p1["TLAST"], p1["CLAST"]) == (5000.0, 7.0, 28.0, 500.0)
    assert p1["AUC28"] == pytest.approx(auc, rel=1e-12) and p1["AUCLAST"] == pytest.approx(auc, rel=1e-12)
    assert p1["LAMZ"] is None and p1["THALF"] is None  # only 2 points after Tmax

    p2 = _pp(con, "01-002")
    auc2 = 7 * 8000 / 2 + 7 * (4000 + 2000 + 1000) / math.log(2)
    assert (p2["CMAX"], p2["TMAX"], p2["TLAST"], p2["CLAST"]) == (8000.0, 7.0, 28.0, 1000.0)
    assert p2["AUC28"] == pytest.approx(auc2) and p2["AUCLAST"] == pytest.approx(auc2)
    assert p2["LAMZ"] == pytest.approx(math.log(2) / 7) and p2["THALF"] == pytest.approx(7.0)

    p4 = _pp(con, "01-004")  # nothing quantifiable
    assert (p4["CMAX"], p4["AUC28"], p4["AUCLAST"], p4["TMAX"]) == (0.0, 0.0, 0.0, None)
    assert one(con, "SELECT PARAM, AVALU, DOSEA FROM analysis.adpp WHERE SUBJID = '01-001' AND PARAMCD = 'AUC28'") == {
        "PARAM": "AUC0-28d (copies/ug gDNA*day)", "AVALU": "copies/ug gDNA*day", "DOSEA": "DL1"}


def test_pk_summary(con):
    s = {(r["PARAMCD"], r["DOSE"]): r for r in rows(con, "SELECT * FROM analysis.pk_summary")}
    assert len(s) == 8 * 4
    c1 = s[("CMAX", "DL1")]  # 01-004 is not PK-evaluable
    assert (c1["N"], c1["GEOMEAN"], c1["GEOCV"], c1["MEDIAN"], c1["MIN"], c1["MAX"]) == (1, pytest.approx(5000.0), None, 5000.0, 5000.0, 5000.0)
    tot = s[("CMAX", "TOTAL")]
    sd = abs(math.log(8000) - math.log(5000)) / math.sqrt(2)
    assert (tot["DOSEN"], tot["N"], tot["MEDIAN"], tot["MIN"], tot["MAX"]) == (99, 2, 6500.0, 5000.0, 8000.0)
    assert tot["GEOMEAN"] == pytest.approx(math.sqrt(5000 * 8000))
    assert tot["GEOCV"] == pytest.approx(100 * math.sqrt(math.exp(sd**2) - 1))
    assert s[("AUC28", "TOTAL")]["GEOMEAN"] is not None and s[("AUCLAST", "TOTAL")]["GEOCV"] is not None
    tmax = s[("TMAX", "TOTAL")]
    assert (tmax["GEOMEAN"], tmax["MEDIAN"], tmax["N"]) == (None, 7.0, 2)
    assert (s[("THALF", "TOTAL")]["N"], s[("THALF", "TOTAL")]["MEDIAN"]) == (1, pytest.approx(7.0))
    dl3 = s[("CMAX", "DL3")]
    assert (dl3["DOSEN"], dl3["N"], dl3["GEOMEAN"], dl3["MEDIAN"]) == (3, 0, None, None)


def test_pk_profile_the_nca_cannot_analyse(tmp_path, con):
    """01-002 (no day-0 sample) gets a second sample on its last pre-infusion date: two levels at NCA
    time 0. Their parameters are NULL with the reason, XF-PC-SAME-DAY names the date and time points,
    everyone else is derived as before. Two pre-infusion samples of one date are fine when a day-0
    sample exists (neither is an NCA sample: 01-001)."""
    from clinical.rules import RULES_BY_ID, run_rule

    extra = [("01-002", "SCREENING", day(T2, -5), None, "Y", 50.0), ("01-001", "LD", day(T1, -20), None, "Y", 50.0)]
    c = _database(tmp_path / "t.duckdb", PC + extra)
    try:
        pk = build_pk(c, CFG)
        assert pk.not_derived == {"01-002": "more than one sample at time 0"}
        assert pk.counts == {"adpc": len(PC) - 1 + 2, "adpp": 3 * 8, "pk_summary": 8 * 4}
        assert _pp(c, "01-002") == dict.fromkeys(["CMAX", "TMAX", "AUC28", "AUCLAST", "TLAST", "CLAST", "LAMZ", "THALF"])
        assert _pp(c, "01-001") == _pp(con, "01-001") and _pp(c, "01-004") == _pp(con, "01-004")
        s = {(r["PARAMCD"], r["DOSE"]): r for r in rows(c, "SELECT * FROM analysis.pk_summary")}
        assert (s[("CMAX", "DL2")]["N"], s[("CMAX", "DL2")]["MEDIAN"]) == (0, None)
        assert (s[("CMAX", "TOTAL")]["N"], s[("CMAX", "TOTAL")]["MEDIAN"]) == (1, 5000.0)
        assert run_rule(c, RULES_BY_ID["XF-PC-SAME-DAY"], CFG) == [(
            "01-002", "PCDAT=2024-07-27",
            "PK samples LD, SCREENING share the date 2024-07-27 (day -5, NCA time 0): the NCA takes one sample "
            "per day, so no PK parameters are derived for the participant",
        )]
    finally:
        c.close()
