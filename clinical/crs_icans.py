"""CRS and ICANS analysis: ``analysis.crs_icans`` (one row per event) and ``analysis.crs_icans_summary``.

``analysis.crs_icans``: one row per CRS or ICANS adverse event (``analysis.adae`` AECAT CRS/ICANS)
of the safety population (SAFFL = 'Y').
  ATOXGR    investigator grade from the CRF (ASTCT scale for CRS and ICANS).
  ASTCTGR   ASTCT grade re-derived from the CRF items with the rules of clinical/grading.py, applied
            set-based as the SQL generated from the same tables (``crs_grade_sql``,
            ``icans_grade_sql``): CRS from AEFEVER, AEHYPOT, AEHYPOX and whether tocilizumab or a
            corticosteroid was given for the event (then fever is no longer required); ICANS from
            AEICE, AECONSC, AESEIZ, AEMOTOR, AEEDEMA. 0 = the items meet no ASTCT criterion. An
            event with outcome FATAL is grade 5 (death from the event; ASTCT G5).
  AGREE     'Y' when ATOXGR = ASTCTGR, else 'N' (a query for the site).
  ADY       onset day, ASTDT - TRTSDT (day 0 = infusion).
  DURATION  AENDT - ASTDT + 1 days; NULL when ongoing (no end date), when either date is partial
            (imputed: ASTDTF/AENDTF set), since an imputed day cannot give a duration in days, or when
            the end is before the start (XF-CHRON-AE-END asks for the dates).
  TOCIFL    'Y' when tocilizumab (cut.cm CMCLAS TOCILIZUMAB) was given for the event: linked by
            CMAESPID = AESPID, or any tocilizumab whose dates overlap the event (start on or before
            the event's end, or the event ongoing; and end on or after the event's start, or ongoing).
            Medication dates use the same partial-date imputation as the AEs; a medication without a
            start date counts only through CMAESPID.
  STERFL    the same for corticosteroids (CMCLAS CORTICOSTEROID).

``analysis.crs_icans_summary``: per AECAT (CRS, ICANS) and DOSE (dose level received, or 'TOTAL'
with DOSEN 99), over treatment-emergent events (TRTEMFL = 'Y'). DENOM = infused participants in the
column (SAFFL = 'Y'); every category x column row is present.
  N_ANY, PCT_ANY              participants with at least one event.
  N_GR1 ... N_GR5             participants by their maximum investigator grade (ATOXGR).
  ONSET_MEDIAN/MIN/MAX        onset day (ADY) of each participant's first event.
  DUR_N, DUR_MEDIAN/MIN/MAX   duration of every event with a duration (ongoing events not counted).
  N_TOCI, N_STEROID           participants with tocilizumab / corticosteroid for any such event.
  N_DISCORD                   participants with at least one event whose derived grade differs.
"""

from __future__ import annotations

import duckdb

from clinical.grading import crs_grade_sql, icans_grade_sql
from clinical.study import StudyConfig

TOTAL = "TOTAL"
TOTAL_DOSEN = 99
CATEGORIES = ("CRS", "ICANS")


def _crs_icans_sql() -> str:
    treated = "(tx.TOCI OR tx.STER)"
    crs = crs_grade_sql("e.AEFEVER", "e.AEHYPOT", "e.AEHYPOX", treated)
    icans = icans_grade_sql("e.AEICE", "e.AECONSC", "e.AESEIZ", "e.AEMOTOR", "e.AEEDEMA")
    return f"""
CREATE OR REPLACE TABLE analysis.crs_icans AS
WITH
ev AS (SELECT * FROM analysis.adae WHERE AECAT IN ('CRS', 'ICANS') AND SAFFL = 'Y'),
cm AS (
  SELECT SUBJID, CMSPID, CMTRT, CMCLAS, CMAESPID,
         impute_first(CMSTDAT, 'D', NULL) AS CMSTDT, impute_last(CMENDAT, 'D', NULL) AS CMENDT
  FROM cut.cm WHERE CMCLAS IN ('TOCILIZUMAB', 'CORTICOSTEROID')),
tx AS (
  SELECT ev.SUBJID, ev.AESPID,
         bool_or(cm.CMCLAS = 'TOCILIZUMAB') AS TOCI, bool_or(cm.CMCLAS = 'CORTICOSTEROID') AS STER
  FROM ev JOIN cm ON cm.SUBJID = ev.SUBJID
   AND (cm.CMAESPID = ev.AESPID
        OR (cm.CMSTDT IS NOT NULL AND ev.ASTDT IS NOT NULL
            AND (ev.AENDT IS NULL OR cm.CMSTDT <= ev.AENDT)
            AND (cm.CMENDT IS NULL OR cm.CMENDT >= ev.ASTDT)))
  GROUP BY ev.SUBJID, ev.AESPID),
g AS (
  SELECT e.*, coalesce(tx.TOCI, FALSE) AS TOCI, coalesce(tx.STER, FALSE) AS STER,
         CASE WHEN e.AEOUT = 'FATAL' THEN 5
              WHEN e.AECAT = 'CRS' THEN {crs}
              ELSE {icans} END AS ASTCTGR
  FROM ev e LEFT JOIN tx USING (SUBJID, AESPID))
SELECT
  SUBJID, AESPID, AECAT, AETERM, AEDECOD, DOSEA, DOSEAN, TRTSDT, ASTDT, ASTDTF, AENDT, AENDTF, ADY,
  CASE WHEN AENDT >= ASTDT AND ASTDTF IS NULL AND AENDTF IS NULL THEN AENDT - ASTDT + 1 END AS DURATION,
  ATOXGR, ASTCTGR, CASE WHEN ATOXGR = ASTCTGR THEN 'Y' ELSE 'N' END AS AGREE,
  AEFEVER, AEHYPOT, AEHYPOX, AEICE, AECONSC, AESEIZ, AEMOTOR, AEEDEMA,
  CASE WHEN TOCI THEN 'Y' ELSE 'N' END AS TOCIFL,
  CASE WHEN STER THEN 'Y' ELSE 'N' END AS STERFL,
  AESER, AEOUT, AEDLT, TRTEMFL, SAFFL
FROM g
ORDER BY SUBJID, ASTDT, AESPID
"""


SUMMARY_SQL = """
CREATE OR REPLACE TABLE analysis.crs_icans_summary AS
WITH
cats AS (SELECT unnest($cats) AS AECAT, generate_subscripts($cats, 1) AS AECATN),
doses AS (
  SELECT unnest($dose_ids) AS DOSE, generate_subscripts($dose_ids, 1) AS DOSEN
  UNION ALL SELECT $total, $total_dosen),
inf AS (
  SELECT SUBJID, DOSEA AS DOSE FROM analysis.adsl WHERE SAFFL = 'Y'
  UNION ALL SELECT SUBJID, $total FROM analysis.adsl WHERE SAFFL = 'Y'),
denoms AS (SELECT DOSE, count(DISTINCT SUBJID) AS DENOM FROM inf GROUP BY DOSE),
ev AS (
  SELECT *, DOSEA AS DOSE FROM analysis.crs_icans WHERE TRTEMFL = 'Y'
  UNION ALL SELECT *, $total FROM analysis.crs_icans WHERE TRTEMFL = 'Y'),
subj AS (
  SELECT AECAT, DOSE, SUBJID, max(ATOXGR) AS MAXGR, min(ADY) AS FIRSTDY,
         bool_or(TOCIFL = 'Y') AS TOCI, bool_or(STERFL = 'Y') AS STER, bool_or(AGREE = 'N') AS DISC
  FROM ev GROUP BY AECAT, DOSE, SUBJID),
s AS (
  SELECT AECAT, DOSE, count(*) AS N_ANY,
         count(*) FILTER (WHERE MAXGR = 1) AS N_GR1, count(*) FILTER (WHERE MAXGR = 2) AS N_GR2,
         count(*) FILTER (WHERE MAXGR = 3) AS N_GR3, count(*) FILTER (WHERE MAXGR = 4) AS N_GR4,
         count(*) FILTER (WHERE MAXGR = 5) AS N_GR5,
         median(FIRSTDY) AS ONSET_MEDIAN, min(FIRSTDY) AS ONSET_MIN, max(FIRSTDY) AS ONSET_MAX,
         count(*) FILTER (WHERE TOCI) AS N_TOCI, count(*) FILTER (WHERE STER) AS N_STEROID,
         count(*) FILTER (WHERE DISC) AS N_DISCORD
  FROM subj GROUP BY AECAT, DOSE),
d AS (
  SELECT AECAT, DOSE, count(DURATION) AS DUR_N, median(DURATION) AS DUR_MEDIAN,
         min(DURATION) AS DUR_MIN, max(DURATION) AS DUR_MAX
  FROM ev GROUP BY AECAT, DOSE)
SELECT
  c.AECAT, c.AECATN, ds.DOSE, ds.DOSEN, coalesce(n.DENOM, 0) AS DENOM,
  coalesce(s.N_ANY, 0) AS N_ANY,
  round(100.0 * coalesce(s.N_ANY, 0) / nullif(n.DENOM, 0), 1) AS PCT_ANY,
  coalesce(s.N_GR1, 0) AS N_GR1, coalesce(s.N_GR2, 0) AS N_GR2, coalesce(s.N_GR3, 0) AS N_GR3,
  coalesce(s.N_GR4, 0) AS N_GR4, coalesce(s.N_GR5, 0) AS N_GR5,
  s.ONSET_MEDIAN::DOUBLE AS ONSET_MEDIAN, s.ONSET_MIN, s.ONSET_MAX,
  coalesce(d.DUR_N, 0) AS DUR_N, d.DUR_MEDIAN::DOUBLE AS DUR_MEDIAN, d.DUR_MIN, d.DUR_MAX,
  coalesce(s.N_TOCI, 0) AS N_TOCI, coalesce(s.N_STEROID, 0) AS N_STEROID,
  coalesce(s.N_DISCORD, 0) AS N_DISCORD
FROM cats c CROSS JOIN doses ds
LEFT JOIN denoms n ON n.DOSE = ds.DOSE
LEFT JOIN s ON s.AECAT = c.AECAT AND s.DOSE = ds.DOSE
LEFT JOIN d ON d.AECAT = c.AECAT AND d.DOSE = ds.DOSE
ORDER BY c.AECATN, ds.DOSEN
"""


def build_crs_icans(con: duckdb.DuckDBPyConnection, cfg: StudyConfig) -> dict[str, int]:
    """Write analysis.crs_icans and analysis.crs_icans_summary; return their row counts."""
    con.execute(_crs_icans_sql())
    con.execute(
        SUMMARY_SQL,
        {"cats": list(CATEGORIES), "dose_ids": cfg.dose_ids, "total": TOTAL, "total_dosen": TOTAL_DOSEN},
    )
    tables = ("crs_icans", "crs_icans_summary")
    return {t: con.execute(f"SELECT count(*) FROM analysis.{t}").fetchall()[0][0] for t in tables}
