"""The data cut (clinical/datacut.py), and EDC data that are valid value by value but not together.

On the simulated demo export (every record on or before the 2025-12-31 cut-off), each test adds
what an export pulled after the cut-off can hold, or an inconsistency an EDC can deliver (a missing
earlier record of an infused participant, a death without its date, a range whose limits are swapped,
a screening sample dated after lymphodepletion), and checks ADSL / ADAE / ADLB / PK and
``cut.after_cut`` exactly; with ``data_cut.apply: false`` every staged record is analysed as before.
"""

import datetime as dt
from pathlib import Path

import pytest

from clinical.adae import build_adae
from clinical.adsl import build_adsl
from clinical.study import load_study
from tests.test_rules import CUT

ROOT = Path(__file__).resolve().parent.parent
CFG = load_study(ROOT / "studies" / "im83.yaml")


@pytest.fixture
def con(rules_con):
    return rules_con


def _derive(con, cfg=CFG, cut: dt.date = CUT) -> None:
    build_adsl(con, cfg, cut)
    build_adae(con, cfg)


def _adsl(con, subjid: str, *cols: str) -> tuple:
    return con.execute(f"SELECT {', '.join(cols)} FROM analysis.adsl WHERE SUBJID = ?", [subjid]).fetchone()


def _infused(con) -> list[tuple[str, dt.date]]:
    return con.execute("SELECT SUBJID, TRTSDT FROM analysis.adsl WHERE SAFFL = 'Y' ORDER BY TRTSDT DESC, SUBJID").fetchall()


def test_the_demo_export_has_nothing_after_the_cut(con):
    _derive(con)
    assert con.execute("SELECT count(*) FROM cut.after_cut").fetchone()[0] == 0
    for form in ("lb", "ae", "ds", "inf"):
        assert con.execute(f"SELECT count(*) FROM cut.{form}").fetchone() == con.execute(
            f"SELECT count(*) FROM stage.{form}").fetchone()


def test_an_infusion_after_the_cut_off_is_not_in_the_cut(con):
    _derive(con)
    subjid = con.execute("SELECT SUBJID FROM analysis.adsl WHERE SAFFL = 'Y' AND MFGSTAT = 'RELEASED' "
                         "ORDER BY TRTSDT DESC, SUBJID LIMIT 1").fetchone()[0]
    n_infused = len(_infused(con))
    con.execute("UPDATE stage.inf SET EXSTDAT = DATE '2026-01-05' WHERE SUBJID = ?", [subjid])
    _derive(con)
    assert _adsl(con, subjid, "SAFFL", "TRTSDT", "LDFL") == ("N", None, "Y")
    assert len(_infused(con)) == n_infused - 1
    assert con.execute("SELECT FORM, SUBJID, FIELD, VALUE, ACTION FROM cut.after_cut").fetchall() == [
        ("inf", subjid, "EXSTDAT", "2026-01-05", "not analysed: dated after the data cut-off")]


def test_an_adverse_event_after_the_cut_off_is_not_analysed_and_a_later_end_is_ongoing(con):
    _derive(con)
    subjid, trt = _infused(con)[0]
    con.execute(
        """INSERT INTO stage.ae (_export_id, _file, _line, SUBJID, AESPID, AETERM, AEDECOD, AEBODSYS, AECAT,
                                 AESTDAT, AEENDAT, AETOXGR, AESER, AEREL, AEOUT, AEDLT)
           VALUES ('X', 'ae.csv', 9001, ?, 901, 'Febrile neutropenia', 'Febrile neutropenia',
                   'Blood and lymphatic system disorders', 'OTHER', '2026-01-10', NULL, 4, 'Y', 'RELATED',
                   'NOT RECOVERED', 'Y'),
                  ('X', 'ae.csv', 9002, ?, 902, 'Headache', 'Headache', 'Nervous system disorders', 'OTHER',
                   '2025-12', '2026-01-03', 1, 'N', 'NOT RELATED', 'RECOVERED', 'N'),
                  ('X', 'ae.csv', 9003, ?, 903, 'Nausea', 'Nausea', 'Gastrointestinal disorders', 'OTHER',
                   '2026', NULL, 1, 'N', 'NOT RELATED', 'NOT RECOVERED', 'N')""",
        [subjid, subjid, subjid],
    )
    _derive(con)
    rows = con.execute("SELECT AESPID, AENDT FROM analysis.adae WHERE SUBJID = ? AND AESPID >= 901 ORDER BY AESPID",
                       [subjid]).fetchall()
    assert rows == [(902, None)]  # started in December 2025 (partial date), ended after the cut: ongoing
    assert _adsl(con, subjid, "DLTFL") == ("N",)
    assert con.execute("SELECT LINE, FIELD, VALUE, ACTION FROM cut.after_cut ORDER BY LINE").fetchall() == [
        (9001, "AESTDAT", "2026-01-10", "not analysed: dated after the data cut-off"),
        (9002, "AEENDAT", "2026-01-03", "blank at the cut: AEENDAT after the data cut-off"),
        (9003, "AESTDAT", "2026", "not analysed: dated after the data cut-off"),
    ]


def test_an_end_of_study_after_the_cut_off_leaves_the_participant_on_study(con):
    _derive(con)
    on_study = con.execute(
        "SELECT SUBJID FROM analysis.adsl WHERE SAFFL = 'Y' AND EOSDT IS NULL ORDER BY SUBJID").fetchall()
    subjid = on_study[0][0]
    con.execute(
        """INSERT INTO stage.ds (_export_id, _file, _line, SUBJID, DSDECOD, DSSTDAT, DTHDAT, DTHCAUS)
           VALUES ('X', 'ds.csv', 9001, ?, 'WITHDRAWAL BY SUBJECT', DATE '2026-01-05', NULL, NULL)""", [subjid])
    _derive(con)
    assert _adsl(con, subjid, "EOSSTT", "EOSDT") == (None, None)


def test_a_death_after_the_cut_off_is_blank_at_the_cut(con):
    _derive(con)
    subjid = con.execute("SELECT min(SUBJID) FROM analysis.adsl WHERE SAFFL = 'Y' AND EOSDT IS NULL").fetchone()[0]
    con.execute(
        """INSERT INTO stage.ds (_export_id, _file, _line, SUBJID, DSDECOD, DSSTDAT, DTHDAT, DTHCAUS)
           VALUES ('X', 'ds.csv', 9001, ?, 'LOST TO FOLLOW-UP', DATE '2025-12-20', DATE '2026-02-01', 'Unknown')""",
        [subjid])
    _derive(con)
    assert _adsl(con, subjid, "EOSSTT", "DTHDT", "DTHCAUS", "DTHDTSRC") == ("LOST TO FOLLOW-UP", None, None, None)
    assert con.execute("SELECT FIELD, ACTION FROM cut.after_cut").fetchall() == [
        ("DTHDAT", "blank at the cut: DTHDAT, DTHCAUS after the data cut-off")]


def test_a_cut_off_before_every_infusion_has_no_one_infused(con):
    _derive(con, cut=dt.date(2024, 7, 1))
    assert _infused(con) == []
    assert con.execute("SELECT count(*) FROM analysis.adae").fetchone()[0] == con.execute(
        "SELECT count(*) FROM cut.ae").fetchone()[0]


def test_consent_after_the_cut_off_means_not_yet_screened(con):
    _derive(con)
    n = con.execute("SELECT count(*) FROM analysis.adsl").fetchone()[0]
    last = con.execute("SELECT SUBJID FROM stage.enrol ORDER BY RFICDAT DESC, SUBJID LIMIT 1").fetchone()[0]
    con.execute("UPDATE stage.enrol SET RFICDAT = DATE '2026-01-02' WHERE SUBJID = ?", [last])
    _derive(con)
    assert con.execute("SELECT count(*) FROM analysis.adsl").fetchone()[0] == n - 1
    assert ("dm", last, "not analysed: consent after the data cut-off") in con.execute(
        "SELECT FORM, SUBJID, ACTION FROM cut.after_cut").fetchall()


def test_apply_false_analyses_every_staged_record(con):
    cfg = CFG.model_copy(update={"data_cut": CFG.data_cut.model_copy(update={"apply": False})})
    _derive(con, cfg)
    subjid, _ = _infused(con)[0]
    con.execute("UPDATE stage.inf SET EXSTDAT = DATE '2026-01-05' WHERE SUBJID = ?", [subjid])
    _derive(con, cfg)
    assert _adsl(con, subjid, "SAFFL", "TRTSDT") == ("Y", dt.date(2026, 1, 5))
    assert con.execute("SELECT count(*) FROM cut.after_cut").fetchone()[0] == 0


# -- ADSL: the funnel of an infused participant, deaths without a date, PK-evaluable ---------------


@pytest.mark.parametrize(
    "statement",
    [
        "DELETE FROM stage.ld WHERE SUBJID = $s",
        "DELETE FROM stage.apher WHERE SUBJID = $s",
        "UPDATE stage.mfg SET RELSTAT = 'FAILED' WHERE SUBJID = $s",
        "DELETE FROM stage.mfg WHERE SUBJID = $s",
    ],
)
def test_an_infused_participant_stays_in_the_safety_population_without_an_earlier_record(con, statement):
    _derive(con)
    subjid, _ = _infused(con)[0]
    before = con.execute("SELECT SUBJID, APHFL, MFGFL, LDFL, SAFFL FROM analysis.adsl ORDER BY SUBJID").fetchall()
    con.execute(statement, {"s": subjid})
    _derive(con)
    assert _adsl(con, subjid, "APHFL", "MFGFL", "LDFL", "SAFFL") == ("Y", "Y", "Y", "Y")
    assert con.execute("SELECT SUBJID, APHFL, MFGFL, LDFL, SAFFL FROM analysis.adsl ORDER BY SUBJID").fetchall() == before


def test_a_death_without_its_date_counts_with_the_end_of_study_date(con):
    _derive(con)
    subjid, eos = con.execute(
        "SELECT SUBJID, EOSDT FROM analysis.adsl WHERE EOSSTT = 'DEATH' ORDER BY SUBJID LIMIT 1").fetchone()
    deaths = con.execute("SELECT count(*) FROM analysis.adsl WHERE DTHDT IS NOT NULL").fetchone()[0]
    assert _adsl(con, subjid, "DTHDTSRC") == ("DS.DTHDAT",)
    con.execute("UPDATE stage.ds SET DTHDAT = NULL WHERE SUBJID = ?", [subjid])
    _derive(con)
    assert _adsl(con, subjid, "DTHDT", "DTHDTSRC") == (eos, "DS.DSSTDAT")
    assert con.execute("SELECT count(*) FROM analysis.adsl WHERE DTHDT IS NOT NULL").fetchone()[0] == deaths


def test_pk_evaluable_counts_samples_as_the_concentration_table_does(con):
    _derive(con)
    subjid = con.execute("SELECT min(SUBJID) FROM analysis.adsl WHERE PKEVLFL = 'Y'").fetchone()[0]
    # Every sample recorded as quantifiable but below the LLOQ: analysis.adpc reads each as BLQ.
    con.execute("UPDATE stage.pc SET PCBLQ = 'N', PCORRES = 10, PCLLOQ = 50 WHERE SUBJID = ?", [subjid])
    _derive(con)
    assert _adsl(con, subjid, "SAFFL", "PKEVLFL") == ("Y", "N")


# -- dates and ranges that cannot be right give no number, only the data query ----------------------


def test_a_crs_ending_before_it_starts_has_no_duration(con):
    from clinical.crs_icans import build_crs_icans

    _derive(con)
    subjid, spid = con.execute(
        "SELECT SUBJID, AESPID FROM analysis.adae WHERE AECAT = 'CRS' AND AENDT IS NOT NULL AND AENDTF IS NULL "
        "AND ASTDTF IS NULL ORDER BY SUBJID, AESPID LIMIT 1").fetchone()
    con.execute("UPDATE stage.ae SET AEENDAT = strftime(CAST(AESTDAT AS DATE) - 3, '%Y-%m-%d') "
                "WHERE SUBJID = ? AND AESPID = ?", [subjid, spid])
    _derive(con)
    build_crs_icans(con, CFG)
    assert con.execute("SELECT DURATION FROM analysis.crs_icans WHERE SUBJID = ? AND AESPID = ?",
                       [subjid, spid]).fetchone() == (None,)
    assert con.execute("SELECT min(DUR_MIN) FROM analysis.crs_icans_summary").fetchone()[0] >= 1


@pytest.mark.parametrize("statement", [
    "UPDATE stage.lb SET LBORNRLO = LBORNRHI + 1 WHERE SUBJID = $s AND LBTESTCD = 'CREAT'",
    "UPDATE stage.lb SET LBORNRHI = 0, LBORNRLO = 0 WHERE SUBJID = $s AND LBTESTCD = 'CREAT'",
])
def test_a_lab_range_that_cannot_be_one_gives_no_grade(con, statement):
    from clinical.adlb import build_adlb

    _derive(con)
    subjid = con.execute("SELECT min(SUBJID) FROM cut.lb WHERE LBTESTCD = 'CREAT'").fetchone()[0]
    con.execute(statement, {"s": subjid})
    build_adlb(con, CFG)
    grades = con.execute("SELECT DISTINCT ATOXGR FROM analysis.adlb WHERE SUBJID = ? AND PARAMCD = 'CREAT'",
                         [subjid]).fetchall()
    assert grades == [(None,)]


def test_an_out_of_specification_product_counts_as_released_only_when_infused(con):
    _derive(con)
    infused, _ = _infused(con)[0]
    waiting = con.execute(
        "SELECT min(SUBJID) FROM analysis.adsl WHERE MFGFL = 'Y' AND SAFFL = 'N' AND MFGSTAT = 'RELEASED'").fetchone()[0]
    con.execute("UPDATE stage.mfg SET RELSTAT = 'OUT OF SPECIFICATION' WHERE SUBJID IN (?, ?)", [infused, waiting])
    _derive(con)
    assert _adsl(con, infused, "MFGFL", "LDFL", "SAFFL") == ("Y", "Y", "Y")
    assert _adsl(con, waiting, "MFGFL", "LDFL", "SAFFL") == ("N", "N", "N")


def test_a_quantifiable_pre_infusion_level_is_never_the_cmax(con):
    """Without a day-0 sample the last pre-infusion sample is the time-0 level only when below the LLOQ."""
    from clinical.pk import build_pk

    _derive(con)
    subjid = con.execute("SELECT min(SUBJID) FROM analysis.adsl WHERE PKEVLFL = 'Y'").fetchone()[0]
    # The day-0 sample becomes a quantifiable pre-infusion sample (leukapheresis, 3 days before).
    con.execute("""UPDATE stage.pc SET PCTPT = 'LEUKAPHERESIS', PCDAT = PCDAT - 3, PCORRES = 99999, PCBLQ = 'N'
                   WHERE SUBJID = ? AND PCTPT = 'D0'""", [subjid])
    assert con.execute("SELECT count(*) FROM stage.pc WHERE SUBJID = ? AND PCORRES = 99999", [subjid]).fetchone()[0] == 1
    _derive(con)
    build_pk(con, CFG)
    assert con.execute("SELECT count(*) FROM analysis.adpc WHERE SUBJID = ? AND ADY < 0 AND NCATIME IS NOT NULL",
                       [subjid]).fetchone()[0] == 0
    cmax, tmax = con.execute(
        "SELECT max(AVAL) FILTER (WHERE PARAMCD = 'CMAX'), max(AVAL) FILTER (WHERE PARAMCD = 'TMAX') "
        "FROM analysis.adpp WHERE SUBJID = ?", [subjid]).fetchone()
    assert cmax < 99999 and tmax > 0


def test_a_screening_sample_taken_after_lymphodepletion_started_is_no_baseline(con):
    from clinical.adlb import build_adlb

    _derive(con)
    subjid, ld = con.execute("SELECT min(SUBJID), min_by(LDSTDT, SUBJID) FROM analysis.adsl WHERE LDSTDT IS NOT NULL").fetchone()
    build_adlb(con, CFG)
    n = con.execute("SELECT count(*) FROM analysis.adlb WHERE SUBJID = ? AND ABLFL = 'Y'", [subjid]).fetchone()[0]
    assert n > 0 and con.execute(
        "SELECT count(*) FROM analysis.adlb WHERE SUBJID = ? AND BASE IS NOT NULL", [subjid]).fetchone()[0] > 0
    con.execute("UPDATE stage.lb SET LBDAT = ? WHERE SUBJID = ? AND VISIT = 'SCREENING'", [ld, subjid])
    build_adlb(con, CFG)
    assert con.execute("SELECT count(*) FILTER (WHERE ABLFL = 'Y'), count(BASE) FROM analysis.adlb WHERE SUBJID = ?",
                       [subjid]).fetchone() == (0, 0)
    # the day before lymphodepletion is a baseline again
    con.execute("UPDATE stage.lb SET LBDAT = ? WHERE SUBJID = ? AND VISIT = 'SCREENING'", [ld - dt.timedelta(days=1), subjid])
    build_adlb(con, CFG)
    assert con.execute("SELECT count(*) FROM analysis.adlb WHERE SUBJID = ? AND ABLFL = 'Y'", [subjid]).fetchone()[0] == n
