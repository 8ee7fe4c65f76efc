"""The DSMB's clinical sections (deliverables.clinical_tables) on hand-made analysis tables whose
numbers are known, plus the open/closed session contents."""

from __future__ import annotations

import datetime as dt

import duckdb
import pytest

from deliverables import clinical_tables as ct
from deliverables.tables import (
    TOTAL,
    ReportTables,
    baseline_sql,
    display_tables,
    load_report_tables,
    pooled,
)

DOSES = [{"DOSE": "DL1", "DOSEN": 1, "DOSELBL": "5x10^8 cells", "CELLS": 5e8},
         {"DOSE": "DL2", "DOSEN": 2, "DOSELBL": "1x10^9 cells", "CELLS": 1e9}]


def _tables(**kw) -> ReportTables:
    base = dict(
        dose_levels=DOSES, flow_screening=[], participant_flow=[], flow_exits=[],
        safety_groups=[{"DOSE": "DL1", "DOSEN": 1, "DOSELBL": "5x10^8 cells", "N_AT_RISK": 2},
                       {"DOSE": "DL2", "DOSEN": 2, "DOSELBL": "1x10^9 cells", "N_AT_RISK": 3},
                       {"DOSE": TOTAL, "DOSEN": 99, "DOSELBL": "Total", "N_AT_RISK": 5}],
        teae_summary=[], ae_by_term=[], dose_escalation=[], escalation_decision=None, dlt_listing=[],
        sae_listing=[], deaths=[],
    )
    base.update(kw)
    return ReportTables(**base)


@pytest.fixture()
def adsl_con():
    """Five enrolled participants (DL1: ages 20, 30, F/M; DL2: ages 16, 40, 70, M/M/F; one KPS missing)
    and one screen failure, which the baseline must not count."""
    con = duckdb.connect()
    con.execute("CREATE SCHEMA analysis")
    con.execute("""CREATE TABLE analysis.adsl AS SELECT * FROM (VALUES
        ('01', 'DL1', 'Y', 20, 'Between 18 and 65 years', 'F', 'ASIAN', 'NOT HISPANIC OR LATINO', 'China', 80),
        ('02', 'DL1', 'Y', 30, 'Between 18 and 65 years', 'M', 'WHITE', 'NOT HISPANIC OR LATINO', 'China', 90),
        ('03', 'DL2', 'Y', 16, '<=18 years', 'M', 'ASIAN', 'UNKNOWN', 'China', NULL),
        ('04', 'DL2', 'Y', 40, 'Between 18 and 65 years', 'M', 'ASIAN', 'NOT HISPANIC OR LATINO', 'China', 70),
        ('05', 'DL2', 'Y', 70, '>=65 years', 'F', 'ASIAN', 'NOT HISPANIC OR LATINO', 'China', 60),
        ('06', NULL, 'N', 99, '>=65 years', 'F', 'WHITE', 'NOT HISPANIC OR LATINO', 'China', 100)
        ) t(SUBJID, DOSEP, ENRLFL, AGE, AGEGR1, SEX, RACE, ETHNIC, COUNTRY, KPS)""")
    yield con
    con.close()


def _rows_by_label(d) -> dict[str, list]:
    out: dict[str, list] = {}
    group = ""
    for row, style in zip(d.rows, d.row_styles):
        if style == "group":
            group = row[0]
            continue
        out[f"{group}/{row[0]}"] = row[1:]
    return out


def test_baseline_counts_enrolled_by_planned_dose(adsl_con):
    rows = [dict(zip([c[0] for c in cur.description], r))
            for cur in [adsl_con.execute(baseline_sql({"DOSEP", "ENRLFL", "AGE", "AGEGR1", "SEX", "RACE", "ETHNIC", "COUNTRY", "KPS"}))]
            for r in cur.fetchall()]
    flow = [{"STAGE": "enrolled", "DOSE": "DL1", "N": 2}, {"STAGE": "enrolled", "DOSE": "DL2", "N": 3},
            {"STAGE": "enrolled", "DOSE": TOTAL, "N": 5}]
    d = ct.layout_baseline(_tables(baseline=rows, participant_flow=flow))
    assert d.columns == ["Characteristic", "DL1 5x10^8 cells (N=2)", "DL2 1x10^9 cells (N=3)", "Total (N=5)"]
    r = _rows_by_label(d)
    assert r["Age (years)/n"] == [2, 3, 5]
    assert r["Age (years)/Mean (SD)"] == ["25.0 (7.07)", "42.0 (27.06)", "35.2 (21.57)"]  # sqrt(1464/2), sqrt(1860.8/4)
    assert r["Age (years)/Median"] == ["25.0", "40.0", "30.0"]
    assert r["Age (years)/Min, max"] == ["20, 30", "16, 70", "16, 70"]
    assert r["Karnofsky performance status/n"] == [2, 2, 4]  # one KPS missing
    assert r["Age group/<=18 years"] == ["0", "1 (33.3%)", "1 (20.0%)"]
    assert r["Age group/>=65 years"] == ["0", "1 (33.3%)", "1 (20.0%)"]
    assert r["Sex/Female"] == ["1 (50.0%)", "1 (33.3%)", "2 (40.0%)"]
    assert r["Race/White"] == ["1 (50.0%)", "0", "1 (20.0%)"]  # a zero n (%) cell reads "0" as text, like the others
    assert r["Ethnicity/Unknown or Not Reported"] == ["0", "1 (33.3%)", "1 (20.0%)"]
    # Registry order: Asian before White; Age groups in their natural order.
    labels = [row[0] for row in d.rows]
    assert labels.index("Asian") < labels.index("White")
    assert labels.index("<=18 years") < labels.index("Between 18 and 65 years") < labels.index(">=65 years")
    assert d.dose_columns == [1, 2]


def test_baseline_without_optional_columns(adsl_con):
    sql = baseline_sql({"DOSEP", "ENRLFL", "AGE", "SEX"})
    assert "KPS" not in sql and "GPC3" not in sql
    kinds = {(r[0], r[1]) for r in adsl_con.execute(sql).fetchall()}
    assert kinds == {("CAT", "SEX"), ("CONT", "AGE")}


def test_baseline_enrolled_without_planned_dose_is_in_one_total_row(adsl_con):
    """An enrolled participant without DOSEP is a null-DOSE group of its own (GROUPING SETS), not a
    second TOTAL row: one TOTAL row per category and per continuous variable, counting everyone."""
    adsl_con.execute("""INSERT INTO analysis.adsl VALUES
        ('07', NULL, 'Y', 50, 'Between 18 and 65 years', 'F', 'ASIAN', 'NOT HISPANIC OR LATINO', 'China', 80)""")
    cur = adsl_con.execute(baseline_sql({"DOSEP", "ENRLFL", "AGE", "AGEGR1", "SEX", "COUNTRY", "KPS"}))
    rows = [dict(zip([c[0] for c in cur.description], r)) for r in cur.fetchall()]
    totals = [(r["KIND"], r["VAR"], r["CAT"]) for r in rows if r["DOSE"] == TOTAL]
    assert len(totals) == len(set(totals))
    assert set(totals) == {(r["KIND"], r["VAR"], r["CAT"]) for r in rows}
    by = {(r["VAR"], r["CAT"]): r for r in rows if r["DOSE"] == TOTAL}
    assert (by[("SEX", "F")]["N"], by[("SEX", "F")]["DENOM"], by[("SEX", "F")]["PCT"]) == (3, 6, 50.0)
    assert by[("COUNTRY", "China")]["N"] == 6
    assert by[("AGE", None)]["N"] == 6 and by[("AGE", None)]["MAX"] == 70
    assert by[("KPS", None)]["N"] == 5


def test_baseline_null_race_and_ethnicity_are_the_registrys_unknown_category(adsl_con):
    """A null (or empty) race or ethnicity is counted in the registry's "Unknown or Not Reported", with
    the UNKNOWN code, not as a separate 'Missing' row; a null sex stays 'Missing' (the registry has no
    such category and refuses it). Codes are matched case-insensitively, as the registry does."""
    adsl_con.execute("UPDATE analysis.adsl SET RACE = NULL, ETHNIC = '' WHERE SUBJID = '01'")
    adsl_con.execute("UPDATE analysis.adsl SET SEX = NULL, RACE = 'white' WHERE SUBJID = '04'")
    cur = adsl_con.execute(baseline_sql({"DOSEP", "ENRLFL", "SEX", "RACE", "ETHNIC"}))
    rows = [dict(zip([c[0] for c in cur.description], r)) for r in cur.fetchall()]
    flow = [{"STAGE": "enrolled", "DOSE": d, "N": n} for d, n in (("DL1", 2), ("DL2", 3), (TOTAL, 5))]
    d = ct.layout_baseline(_tables(baseline=rows, participant_flow=flow))
    r = _rows_by_label(d)
    assert r["Race/Unknown or Not Reported"] == ["1 (50.0%)", "0", "1 (20.0%)"]
    assert r["Ethnicity/Unknown or Not Reported"] == ["1 (50.0%)", "1 (33.3%)", "2 (40.0%)"]  # '' and 'UNKNOWN'
    assert r["Race/White"] == ["1 (50.0%)", "1 (33.3%)", "2 (40.0%)"]
    assert r["Sex/Missing"] == ["0", "1 (33.3%)", "1 (20.0%)"]
    assert not any(k.startswith(("Race/Missing", "Ethnicity/Missing")) for k in r)


def test_a_dose_level_without_a_label_is_shown_by_its_id():
    """Column headers and the escalation table name a dose level by ReportTables.dose_label: its id
    alone when analysis.dose_levels has no label for it (never 'DL1 None')."""
    from deliverables.tables import _group_order, layout_dose_escalation, safety_headers

    doses = [{**DOSES[0], "DOSELBL": None}, DOSES[1]]
    groups = [{"DOSE": "DL1", "DOSEN": 1, "DOSELBL": None, "N_AT_RISK": 2},
              {"DOSE": "DL2", "DOSEN": 2, "DOSELBL": "1x10^9 cells", "N_AT_RISK": 3},
              {"DOSE": TOTAL, "DOSEN": 99, "DOSELBL": "Total", "N_AT_RISK": 5}]
    esc = [{"DOSE": "DL1", "DOSEN": 1, "DOSELBL": None, "CELLS": 5e8, "ENROLLED": 2, "INFUSED": 2, "EVALUABLE": 2,
            "DLTS": 0, "PENDING": 0, "WINDOW_CLOSES": None, "STATUS": "cleared"}]
    flow = [{"STAGE": "enrolled", "DOSE": d, "N": n} for d, n in (("DL1", 2), ("DL2", 3), (TOTAL, 5))]
    t = _tables(dose_levels=doses, safety_groups=groups, dose_escalation=esc, participant_flow=flow)
    assert [h for _, h in _group_order(t)] == ["DL1", "DL2 1x10^9 cells", "Total"]
    assert [h for _, h in safety_headers(t)] == ["DL1 (N=2)", "DL2 1x10^9 cells (N=3)", "Total (N=5)"]
    assert [h for _, h in ct.enrolled_headers(t)] == ["DL1 (N=2)", "DL2 1x10^9 cells (N=3)", "Total (N=5)"]
    assert layout_dose_escalation(t).rows[0][0] == "DL1"
    assert "DL1; DL2 1x10^9 cells" in ct.layout_exposure(t).footnote


def test_crs_icans_grades_and_management():
    summ = [{"AECAT": "CRS", "AECATN": 1, "DOSE": d, "DOSEN": n, "DENOM": den, "N_ANY": a, "PCT_ANY": p,
             "N_GR1": g1, "N_GR2": 0, "N_GR3": g3, "N_GR4": 0, "N_GR5": 0, "ONSET_MEDIAN": 2.0, "ONSET_MIN": 1,
             "ONSET_MAX": 3, "DUR_N": a, "DUR_MEDIAN": 4.5, "DUR_MIN": 3, "DUR_MAX": 6, "N_TOCI": toci,
             "N_STEROID": 0, "N_DISCORD": 0}
            for d, n, den, a, p, g1, g3, toci in (("DL1", 1, 2, 1, 50.0, 1, 0, 0), ("DL2", 2, 3, 2, 66.7, 1, 1, 1),
                                                  (TOTAL, 99, 5, 3, 60.0, 2, 1, 1))]
    r = _rows_by_label(ct.layout_crs_icans(_tables(crs_icans_summary=summ)))
    key = "Cytokine release syndrome (CRS)/"
    assert r[key + "Any grade"] == ["1 (50.0%)", "2 (66.7%)", "3 (60.0%)"]
    assert r[key + "Grade >= 3"] == ["0", "1 (33.3%)", "1 (20.0%)"]
    assert r[key + "Treated with tocilizumab"] == ["0", "1 (33.3%)", "1 (20.0%)"]
    assert r[key + "Duration, days: median (min, max)"] == ["5 (3, 6)"] * 3  # 4.5 rounds half up, as every report number


def test_listings_dose_level_and_yes_no_as_the_other_listings():
    """The exposure listing's dose level is tables._listing_dose (the DLT/SAE/deaths listings'): the
    level received, else 'Not infused (<assigned>)', else 'Not enrolled' (never 'Not infused (None)');
    the CRS/ICANS listing's flags read Yes/No as tables._yn does."""
    exp = [{"DOSEA": a, "DOSEP": p, "SUBJID": s, "LDSTDT": None, "FLUDAYS": None, "FLUCUM": None, "CYDAYS": None,
            "CYCUM": None, "TRTSDT": None, "CELLS": None, "CELLSPCT": None, "V2VDAYS": None}
           for a, p, s in (("DL1", "DL1", "01"), (None, "DL2", "02"), (None, None, "03"))]
    d = ct.layout_exposure_listing(_tables(exposure=exp))
    assert [r[0] for r in d.rows] == ["DL1", "Not infused (DL2)", "Not enrolled"]
    crs = [{"DOSEA": "DL1", "SUBJID": "01", "AESPID": 1, "AECAT": "CRS", "ASTDT": None, "ADY": 1, "DURATION": 3,
            "AENDT": None, "ATOXGR": 2, "ASTCTGR": 2, "TOCIFL": "Y", "STERFL": "N", "AESER": None, "AEOUT": None}]
    row = ct.layout_crs_icans_listing(_tables(crs_icans=crs)).rows[0]
    assert row[9:12] == ["Yes", "No", ""]
    assert ct.layout_pk(_tables()).columns == ["Parameter", "DL1 5x10^8 cells", "DL2 1x10^9 cells", "Total"]


def test_haematology_recovery_from_lab_toxicity():
    con = duckdb.connect()
    con.execute("CREATE SCHEMA analysis")
    con.execute("""CREATE TABLE analysis.lab_toxicity AS SELECT * FROM (VALUES
        ('01', 'DL1', 'NEUT', 'L', 'Y', 14, 'N'),
        ('02', 'DL1', 'NEUT', 'L', 'N', NULL, 'Y'),
        ('03', 'DL2', 'NEUT', 'L', NULL, NULL, NULL),
        ('04', 'DL2', 'NEUT', 'L', 'Y', 10, 'N'),
        ('04', 'DL2', 'PLAT', 'L', NULL, NULL, 'Y'),
        ('04', 'DL2', 'ALT', 'H', NULL, NULL, NULL)
        ) t(SUBJID, DOSEA, PARAMCD, ATOXDIR, ANCRECFL, ANCRECDY, CYTOPENIA_D28)""")
    from deliverables.tables import OPTIONAL_QUERIES

    cur = con.execute(OPTIONAL_QUERIES["haem_recovery"])
    rows = {(r[0], r[1]): r for r in cur.fetchall()}
    assert rows[("ANC_LT05", "DL1")][2] == 2 and rows[("ANC_LT05", TOTAL)][2] == 3
    assert rows[("ANC_REC", TOTAL)][2:] == (2, None, 12.0, 10, 14)
    assert rows[("D28_NEUT", "DL1")][2:4] == (1, 2) and rows[("D28_NEUT", TOTAL)][2:4] == (1, 3)
    assert rows[("D28_PLAT", TOTAL)][2:4] == (1, 1)
    assert not any(k[0] == "D28_ALT" for k in rows)  # increased tests have no cytopenia


def test_pk_significant_figures_and_days():
    assert [ct.fmt_sig(x) for x in (18415.3, 0.060944, 8.5, 1525.3, 0, None)] == ["18,400", "0.0609", "8.50", "1,530",
                                                                                   "0", "NE"]
    # Halves round up (as the registry), of the value as written; a carry does not add a digit.
    assert [ct.fmt_sig(x) for x in (45.25, 18450, 0.06125, -45.25, 99.95, 999.5)] == [
        "45.3", "18,500", "0.0613", "-45.3", "100", "1,000"]
    pk = [{"PARAMCD": c, "PARAMN": n, "PARAM": p, "DOSE": d, "DOSEN": 1, "N": 2, "GEOMEAN": g, "GEOCV": cv,
           "MEDIAN": m, "MIN": lo, "MAX": hi}
          for c, n, p, g, cv, m, lo, hi in (("CMAX", 1, "Cmax", 18415.3, 34.64, 18382.2, 13177.4, 26914.6),
                                            ("TMAX", 2, "Tmax (day)", None, None, 8.5, 7.0, 10.0))
          for d in ("DL1", TOTAL)]
    r = _rows_by_label(ct.layout_pk(_tables(pk_summary=pk)))
    assert r["Cmax/Geometric mean"] == ["18,400", "", "18,400"]
    assert r["Cmax/Geometric CV%"] == ["34.6", "", "34.6"]
    assert r["Cmax/Min, max"] == ["13,200, 26,900", "", "13,200, 26,900"]
    assert r["Tmax (day)/Median"] == ["8.5", "", "8.5"]
    assert "Tmax (day)/Geometric mean" not in r


def test_pk_times_in_days_read_as_in_the_registry():
    """Tmax (and the other times in days) round like every PK value, to 3 significant figures with
    halves up (deliverables.tables.round_sig), and read as the registry reports them (registry._num):
    a median of 7.25 days is '7.25' (float formatting would give '7.2'), whole and half days are
    unchanged ('10', '8.5')."""
    from deliverables.registry import _num

    pk = [{"PARAMCD": c, "PARAMN": n, "PARAM": p, "DOSE": d, "DOSEN": 1, "N": 4, "GEOMEAN": None, "GEOCV": None,
           "MEDIAN": m, "MIN": lo, "MAX": hi}
          for c, n, p, d, m, lo, hi in (("TMAX", 2, "Tmax (day)", "DL1", 7.25, 7.0, 10.0),
                                        ("TMAX", 2, "Tmax (day)", "DL2", 10.0, 10.0, 14.0),
                                        ("TMAX", 2, "Tmax (day)", TOTAL, 8.5, 7.0, 14.0),
                                        ("TLAST", 5, "Tlast (day)", "DL1", 133.0, 59.5, 180.0),
                                        ("THALF", 8, "Half-life (day)", "DL1", 21.6731599, 3.88, 112.954242))]
    r = _rows_by_label(ct.layout_pk(_tables(pk_summary=pk)))
    assert r["Tmax (day)/Median"] == ["7.25", "10", "8.5"]
    assert r["Tmax (day)/Min, max"] == ["7, 10", "10, 14", "7, 14"]
    assert r["Tlast (day)/Median"] == ["133", "", ""]
    assert r["Tlast (day)/Min, max"] == ["59.5, 180", "", ""]
    assert r["Half-life (day)/Median"] == ["21.7", "", ""]
    assert r["Half-life (day)/Min, max"] == ["3.88, 113", "", ""]
    # The registry's strings, value for value (the DSMB adds only thousands separators).
    for x in (7.25, 10.0, 8.5, 7.0, 14.0, 133.0, 59.5, 180.0, 21.6731599, 3.88, 112.954242, 2.05, 0.06125, 1234.5):
        assert ct.fmt_sig(x, trailing_zeros=False).replace(",", "") == _num(x), x
    assert ct.fmt_sig(1234.5, trailing_zeros=False) == "1,230"
    assert ct.fmt_sig(None, trailing_zeros=False) == ct.fmt_sig(float("nan"), trailing_zeros=False) == "NE"


def test_teae_by_highest_grade_prunes_grades_nobody_had():
    g = [{"AEBODSYS": soc, "AEDECOD": pt, "DOSE": d, "DOSEN": 1, "GRADE": gr, "N": n, "N_AT_RISK": risk}
         for soc, pt, gr, d, n, risk in (
             ("Any TEAE", None, 3, "DL1", 1, 2), ("Any TEAE", None, 3, TOTAL, 1, 5),
             ("Any TEAE", None, 4, "DL1", 0, 2), ("Any TEAE", None, 4, TOTAL, 0, 5),
             ("Cardiac disorders", "Sinus tachycardia", 1, "DL2", 2, 3), ("Cardiac disorders", "Sinus tachycardia", 1, TOTAL, 2, 5),
         )]
    d = ct.layout_teae_by_grade(_tables(ae_by_grade=g))
    assert [r[0] for r in d.rows] == ["Any TEAE, by highest grade", "Grade 3", "Cardiac disorders",
                                      "Sinus tachycardia", "Grade 1"]
    assert d.rows[1][1:] == ["1 (50.0%)", "0", "1 (20.0%)"]
    assert d.rows[4][1:] == ["0", "2 (66.7%)", "2 (40.0%)"]


def test_open_session_pools_and_leaves_out_participant_listings():
    t = _tables(teae_summary=[{"ROWN": 1, "ROWLBL": "Any TEAE", "DOSE": d, "DOSEN": 1, "N": n, "DENOM": den, "PCT": p}
                              for d, n, den, p in (("DL1", 1, 2, 50.0), ("DL2", 3, 3, 100.0), (TOTAL, 4, 5, 80.0))],
                sae_listing=[{"DOSEA": "DL1", "DOSEP": "DL1", "SUBJID": "01", "AESPID": 1, "AETERM": "x", "AEDECOD": "x",
                              "AEBODSYS": "s", "ASTDT": dt.date(2025, 1, 1), "AENDT": None, "ADY": 3, "ATOXGR": 3,
                              "AESER": "Y", "AEREL": "RELATED", "AEOUT": "RECOVERED", "DLTFL": "N", "TRTEMFL": "Y"}])
    closed = {d.id: d for d in display_tables(t, "Closed")}
    opened = {d.id: d for d in display_tables(t, "Open")}
    assert "sae_listing" in closed and "sae_listing" not in opened
    assert not any(d.kind == "listing" for d in opened.values())
    assert closed["teae_overview"].rows[0] == ["Any TEAE", "1 (50.0%)", "3 (100.0%)", "4 (80.0%)"]
    assert opened["teae_overview"].rows[0] == ["Any TEAE", "4 (80.0%)"]
    assert opened["teae_overview"].columns == ["Participants with at least one", "Total (N=5)"]
    # Flow and escalation stay by dose level in the open session (the design, not the safety data).
    assert opened["participant_flow"].columns == closed["participant_flow"].columns
    assert pooled(closed["dose_escalation"]) is closed["dose_escalation"]
    with pytest.raises(ValueError):
        display_tables(t, "Semi-open")


def test_adsl_age_group_follows_the_registry_categories(demo_run):
    """AGEGR1 of every participant of the demo: <=18, 19-64, >=65 (18-year-olds in the first group)."""
    con = duckdb.connect(str(demo_run.final / "trial.duckdb"), read_only=True)
    try:
        rows = con.execute("SELECT AGE, AGEGR1 FROM analysis.adsl").fetchall()
    finally:
        con.close()
    want = {a: ("<=18 years" if a <= 18 else "Between 18 and 65 years" if a <= 64 else ">=65 years") for a, _ in rows}
    assert rows and all(g == want[a] for a, g in rows)
    assert {g for _, g in rows} >= {"<=18 years", "Between 18 and 65 years"}  # the demo has both sides of 18


def test_clinical_tables_from_the_demo_database_agree_with_the_analysis_tables(demo_run):
    """The demo database: every number of the new sections is a value of an analysis table."""
    con = duckdb.connect(str(demo_run.final / "trial.duckdb"), read_only=True)
    try:
        t = load_report_tables(con)
        crs_total = con.execute("SELECT N_ANY FROM analysis.crs_icans_summary WHERE AECAT = 'CRS' AND DOSE = 'TOTAL'").fetchone()[0]
        enrolled = con.execute("SELECT DOSEP, count(*) FROM analysis.adsl WHERE ENRLFL = 'Y' GROUP BY 1").fetchall()
        cells_n = con.execute("SELECT count(*) FROM analysis.exposure WHERE CELLS IS NOT NULL").fetchone()[0]
    finally:
        con.close()
    tabs = {d.id: d for d in display_tables(t)}
    crs = _rows_by_label(tabs["crs_icans"])
    assert crs["Cytokine release syndrome (CRS)/Any grade"][-1].startswith(f"{crs_total} (")
    truth = demo_run.truth["counts"]
    base = _rows_by_label(tabs["baseline"])
    assert base["Age (years)/n"] == [dict(enrolled).get(d["DOSE"], 0) for d in t.dose_levels] + [sum(n for _, n in enrolled)]
    assert _rows_by_label(tabs["exposure"])["Cells infused (x10^6)/n"][-1] == cells_n
    assert sum(n for _, n in enrolled) == truth["enrolled"]


def test_form_completeness_counts_expected_participants_without_a_record():
    """Three screened, two enrolled; leukapheresis expected of the enrolled, one has no record; one
    apher row quarantined (two quarantine messages on the same line count once)."""
    from deliverables.tables import form_completeness_rows, layout_form_completeness

    con = duckdb.connect()
    con.execute("CREATE SCHEMA analysis; CREATE SCHEMA raw; CREATE SCHEMA stage")
    con.execute("""CREATE TABLE analysis.adsl AS SELECT * FROM (VALUES ('01', 'Y', 'Y'), ('02', 'Y', 'Y'), ('03', 'Y', 'N'))
                   t(SUBJID, SCRNFL, ENRLFL)""")
    con.execute("CREATE TABLE raw.apher AS SELECT * FROM (VALUES ('01', 2), ('02', 3)) t(SUBJID, _line)")
    con.execute("CREATE TABLE stage.apher AS SELECT * FROM (VALUES ('01')) t(SUBJID)")
    con.execute("CREATE TABLE raw.ae AS SELECT * FROM (VALUES ('03')) t(SUBJID)")
    con.execute("CREATE TABLE stage.ae AS SELECT * FROM raw.ae")
    con.execute("""CREATE TABLE raw.quarantine AS SELECT * FROM (VALUES ('apher', 3, 'R1'), ('apher', 3, 'R2'))
                   t(form, line, rule)""")
    rows = form_completeness_rows(con, {"apher": "ENRLFL"})
    assert [(r["FORM"], r["RECEIVED"], r["ACCEPTED"], r["QUARANTINED"], r["AFTER_CUT"], r["SUBJECTS"], r["EXPECTED"],
             r["EXPECTED_WITH"]) for r in rows] == [("apher", 2, 1, 1, None, 1, 2, 1), ("ae", 1, 1, 0, None, 1, None, None)]
    d = layout_form_completeness(_tables(form_completeness=rows))
    assert d.rows[0] == ["Leukapheresis (apher)", 2, 1, 1, None, 1, "Enrolled", 2, "1 (50.0%)"]
    assert d.rows[1][6:] == ["(none)", None, ""]
    # The records the data cut leaves out (clinical/datacut.py), per form: an AE after the cut-off.
    con.execute("CREATE SCHEMA cut")
    con.execute("""CREATE TABLE cut.after_cut AS SELECT * FROM (VALUES
                     ('ae', 'not analysed: dated after the data cut-off'),
                     ('ae', 'blank at the cut: AEENDAT after the data cut-off')) t(FORM, ACTION)""")
    assert [(r["FORM"], r["AFTER_CUT"]) for r in form_completeness_rows(con, {"apher": "ENRLFL"})] == [
        ("apher", 0), ("ae", 1)]
    with pytest.raises(ValueError, match="unknown flag"):
        form_completeness_rows(con, {"apher": "ENRLFL'; DROP TABLE x; --"})


def test_long_listings_of_the_new_sections_are_summarised_by_a_meaningful_column():
    from deliverables.tables import DisplayTable, summarise_listing

    rows = sorted(([[f"01-{i:03d}", "DL1" if i % 3 else "DL2", "ANC >= 1.5", "1.2", ">= 1.5", "Y"] for i in range(90)]),
                  key=lambda r: (r[1], r[0]))  # a listing is sorted by dose level
    d = DisplayTable(id="protocol_deviations", title="Eligibility protocol deviations",
                     columns=["Participant", "Dose level", "Criterion", "Screening value", "Threshold", "Investigator: met"],
                     rows=rows, kind="listing", sheet="Protocol deviations")
    s = summarise_listing(d, 60)
    assert s.columns == ["Criterion", "DL1", "DL2", "Total"]
    assert s.rows[0] == ["ANC >= 1.5", 60, 30, 90]
    assert "90 deviations of 90 participants" in s.intro


@pytest.mark.parametrize(("x", "decimals", "shown"), [
    (30.5, 0, "31"), (4.5, 0, "5"), (898.95, 1, "899.0"), (902.75, 1, "902.8"), (498.95, 1, "499.0"),
    (1234.5, 0, "1,235"), (-2.25, 1, "-2.3"), (7, 1, "7.0"), (None, 1, ""),
])
def test_medians_round_halves_up_as_written(x, decimals, shown):
    """The exposure and CRS medians of the DSMB report: 30.5 days shows as 31, never as 30 (half to even)
    nor as 898.9 for 898.95 (the binary float's)."""
    assert ct.fmt_num(x, decimals) == shown


def test_pk_says_how_many_profiles_end_before_day_28():
    """A profile with a Cmax but no AUC0-28d ends before day 28: the table says how many (the total:
    the open session shows it pooled); none is said when every profile reaches day 28."""
    def row(code, n, dose, count):
        return {"PARAMCD": code, "PARAMN": n, "PARAM": code, "DOSE": dose, "DOSEN": 1, "N": count,
                "GEOMEAN": None, "GEOCV": None, "MEDIAN": 1.0, "MIN": 1.0, "MAX": 1.0}

    pk = [row("CMAX", 1, "DL1", 4), row("CMAX", 1, "DL2", 3), row("CMAX", 1, TOTAL, 7),
          row("AUC28", 3, "DL1", 3), row("AUC28", 3, TOTAL, 3)]
    assert ct.layout_pk(_tables(pk_summary=pk)).footnote.startswith(
        "4 profile(s) end before day 28 (death, withdrawal or an infusion fewer than 28 days before the data cut-off)")
    complete = [row("CMAX", 1, "DL1", 3), row("CMAX", 1, TOTAL, 3), row("AUC28", 3, "DL1", 3), row("AUC28", 3, TOTAL, 3)]
    assert ct.layout_pk(_tables(pk_summary=complete)).footnote.startswith("PK-evaluable participants")
