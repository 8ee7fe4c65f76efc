"""Laboratory analysis tables: ``analysis.adlb``, ``analysis.lab_toxicity``, ``analysis.lab_summary``.

``analysis.adlb`` (ADLB-like): one row per staged lab result (``cut.lb``) of every participant,
infused or not (screen failures included; their ADY, DOSEA are empty).
  ADY      LBDAT - TRTSDT (protocol day, day 0 = infusion); NULL when not infused.
  VISITDY  the visit's nominal day from the study configuration (NULL for unscheduled-day visits).
  PARAMCD  LBTESTCD; AVAL, AVALU, ANRLO, ANRHI the result, its unit and the site's normal range.
  BASE     the participant's value of the same test at the baseline visit (``baseline_visit``,
           SCREENING by default): the last value before lymphodepletion in this protocol. ABLFL marks
           that record. A baseline-visit sample dated on or after the start of lymphodepletion (or of
           the infusion, without one) is no baseline: BASE is then empty (XF-LB-BASELINE-LATE).
  ATOXGR   CTCAE grade (version ``safety.ctcae_version``) from the one cut-point table in
           clinical/grading.py, applied by the generated ``ctcae_grade`` macro; NULL when not
           gradable (no rule for the test, no value, or a range limit the grade needs is missing; the
           grader treats a range whose lower limit is above its upper limit, or whose upper limit is
           <= 0, as missing: clinical.grading.range_unusable_sql).
           BASE is passed to the grader for every record except the baseline record itself (a value
           is not graded against itself), so an abnormal baseline ALT/AST/BILI (BASE above the graded
           record's ULN) switches to multiples of the baseline and creatinine can use its baseline multiple.
  ATOXDIR  L (decreased) / H (increased) for gradable tests; ATOXTERM the CTCAE term.

``analysis.lab_toxicity``: one row per infused participant (SAFFL = 'Y') and PARAMCD with at least
one post-infusion value. Post-infusion means ADY >= 0 (day 0 included, as for treatment-emergent AEs
and the ICAHT D0-30 window; the lb form has no sampling time to separate pre- and post-infusion
samples on day 0).
  WORSTGR            worst post-infusion CTCAE grade (NULL when no post-infusion value is gradable).
  NADIR, NADIRDY     lowest post-infusion value and the first day it was seen; PEAK, PEAKDY likewise.
  ANCRECDY, ANCRECFL NEUT only, when the nadir is below 0.5 x10^9/L. Simplification of "ANC > 0.5
           (x10^9/L) on 3 consecutive days" for visit-based sampling: recovery is the first visit after
           the nadir with ANC >= 0.5 whose value and all later values are >= 0.5 (ANCRECDY = its ADY).
           ANCRECFL = 'Y' recovered, 'N' not (yet) recovered; both NULL when the nadir is >= 0.5.
  D28DY, D28GR       the post-infusion sample used for day 28: the one nearest to day 28 among graded
           samples on days 21-35 (a tie goes to the later day, i.e. on or after day 28).
  CYTOPENIA_D28      decreased (cytopenia) tests: 'Y' when D28GR >= 3, 'N' when D28GR < 3, NULL when
           no graded sample in days 21-35. NULL for increased tests.

``analysis.lab_summary``: per gradable PARAMCD, DOSE (dose level actually received, or 'TOTAL'
with DOSEN 99) and worst post-infusion grade (WORSTGR 0-4): participants N, the denominator DENOM
(infused participants with at least one graded post-infusion value of that test in that column)
and PCT. Every test x column x grade cell is present (zeros included). HGB grade 4 is clinical in
CTCAE, so its count is always 0.
"""

from __future__ import annotations

import duckdb

from clinical.grading import (
    CTCAE_VERSIONS,
    create_ctcae_macros,
    ctcae_terms,
    ctcae_tests_reading,
)
from clinical.study import StudyConfig

TOTAL = "TOTAL"
TOTAL_DOSEN = 99
BASELINE_VISIT = "SCREENING"
ANC_RECOVERY = 0.5  # x10^9/L
D28_TARGET, D28_LO, D28_HI = 28, 21, 35
GRADES = (0, 1, 2, 3, 4)

ADLB_SQL = """
CREATE OR REPLACE TABLE analysis.adlb AS
WITH
visits AS (SELECT unnest($visit_ids) AS VISIT, unnest($visit_days) AS VISITDY),
terms AS (SELECT unnest($term_tests) AS PARAMCD, unnest($term_names) AS ATOXTERM, unnest($term_dirs) AS ATOXDIR),
-- The baseline visit's sample counts as baseline only when taken before lymphodepletion (or, without
-- one, before infusion): a screening sample dated later is no baseline (XF-LB-BASELINE-LATE asks for it).
base AS (
  SELECT l.SUBJID, l.LBTESTCD, l.LBORRES AS BASE
  FROM cut.lb l LEFT JOIN analysis.adsl s USING (SUBJID)
  WHERE l.VISIT = $baseline_visit AND NOT coalesce(l.LBDAT >= coalesce(s.LDSTDT, s.TRTSDT), FALSE)),
lb AS MATERIALIZED (
  SELECT l.*, b.BASE, s.TRTSDT, s.DOSEA, s.DOSEAN, s.SAFFL,
         CASE WHEN l.VISIT = $baseline_visit AND b.SUBJID IS NOT NULL THEN 'Y' END AS ABLFL,
         -- the baseline as the grader sees it: not for the baseline record itself, and only for tests
         -- whose grading reads a baseline (so that the distinct inputs below stay few)
         CASE WHEN l.VISIT IS DISTINCT FROM $baseline_visit AND list_contains($base_tests, l.LBTESTCD)
              THEN b.BASE END AS GBASE
  FROM cut.lb l
  LEFT JOIN base b ON b.SUBJID = l.SUBJID AND b.LBTESTCD = l.LBTESTCD
  LEFT JOIN analysis.adsl s ON s.SUBJID = l.SUBJID
),
-- Each distinct grader input is graded once: lab values repeat (a million results of a 10,000-participant
-- export have ~20,000 distinct test/value/range/baseline combinations).
inputs AS (SELECT DISTINCT LBTESTCD, LBORRES, LBORNRLO, LBORNRHI, GBASE FROM lb),
graded AS (SELECT *, ctcae_grade(LBTESTCD, $version, LBORRES, LBORNRLO, LBORNRHI, GBASE) AS ATOXGR FROM inputs)
SELECT
  lb.SUBJID, lb.VISIT, v.VISITDY, lb.LBDAT, lb.LBDAT - lb.TRTSDT AS ADY,
  lb.LBTESTCD AS PARAMCD, t.ATOXTERM, t.ATOXDIR,
  lb.LBORRES AS AVAL, lb.LBORRESU AS AVALU, lb.LBORNRLO AS ANRLO, lb.LBORNRHI AS ANRHI,
  lb.BASE, lb.ABLFL,
  g.ATOXGR,
  lb.TRTSDT, lb.DOSEA, lb.DOSEAN, coalesce(lb.SAFFL, 'N') AS SAFFL
FROM lb
LEFT JOIN graded g
  ON g.LBTESTCD IS NOT DISTINCT FROM lb.LBTESTCD AND g.LBORRES IS NOT DISTINCT FROM lb.LBORRES
 AND g.LBORNRLO IS NOT DISTINCT FROM lb.LBORNRLO AND g.LBORNRHI IS NOT DISTINCT FROM lb.LBORNRHI
 AND g.GBASE IS NOT DISTINCT FROM lb.GBASE
LEFT JOIN visits v USING (VISIT)
LEFT JOIN terms t ON t.PARAMCD = lb.LBTESTCD
ORDER BY lb.SUBJID, lb.LBTESTCD, lb.LBDAT, lb.VISIT
"""

LAB_TOXICITY_SQL = """
CREATE OR REPLACE TABLE analysis.lab_toxicity AS
WITH
post AS (SELECT * FROM analysis.adlb WHERE SAFFL = 'Y' AND ADY >= 0 AND AVAL IS NOT NULL),
agg AS (
  SELECT SUBJID, PARAMCD, any_value(ATOXTERM) AS ATOXTERM, any_value(ATOXDIR) AS ATOXDIR,
         any_value(DOSEA) AS DOSEA, any_value(DOSEAN) AS DOSEAN,
         count(*) AS NPOST, count(ATOXGR) AS NGRADED, max(ATOXGR) AS WORSTGR,
         min(AVAL) AS NADIR, arg_min(ADY, (AVAL, ADY)) AS NADIRDY,
         max(AVAL) AS PEAK, arg_min(ADY, (-AVAL, ADY)) AS PEAKDY
  FROM post GROUP BY SUBJID, PARAMCD),
neut AS (
  SELECT p.SUBJID, p.ADY, a.NADIR, a.NADIRDY,
         -- lowest value from this day to the last sample (RANGE frame: same-day samples included)
         min(p.AVAL) OVER (PARTITION BY p.SUBJID ORDER BY p.ADY DESC) AS MIN_FROM_HERE
  FROM post p JOIN agg a USING (SUBJID, PARAMCD)
  WHERE p.PARAMCD = 'NEUT'),
rec AS (
  SELECT SUBJID, 'NEUT' AS PARAMCD, min(ADY) AS ANCRECDY FROM neut
  WHERE NADIR < $anc AND ADY > NADIRDY AND MIN_FROM_HERE >= $anc
  GROUP BY SUBJID),
d28 AS (
  SELECT SUBJID, PARAMCD, ADY AS D28DY, ATOXGR AS D28GR FROM post
  WHERE ATOXGR IS NOT NULL AND ADY BETWEEN $d28_lo AND $d28_hi
  QUALIFY row_number() OVER (PARTITION BY SUBJID, PARAMCD ORDER BY abs(ADY - $d28), ADY DESC) = 1)
SELECT
  a.SUBJID, a.DOSEA, a.DOSEAN, a.PARAMCD, a.ATOXTERM, a.ATOXDIR, a.NPOST, a.NGRADED, a.WORSTGR,
  a.NADIR, a.NADIRDY, a.PEAK, a.PEAKDY,
  r.ANCRECDY,
  CASE WHEN a.PARAMCD = 'NEUT' AND a.NADIR < $anc THEN CASE WHEN r.ANCRECDY IS NULL THEN 'N' ELSE 'Y' END
       END AS ANCRECFL,
  d.D28DY, d.D28GR,
  CASE WHEN a.ATOXDIR = 'L' THEN CASE WHEN d.D28GR >= 3 THEN 'Y' WHEN d.D28GR IS NOT NULL THEN 'N' END
       END AS CYTOPENIA_D28
FROM agg a
LEFT JOIN rec r USING (SUBJID, PARAMCD)
LEFT JOIN d28 d USING (SUBJID, PARAMCD)
ORDER BY a.SUBJID, a.PARAMCD
"""

LAB_SUMMARY_SQL = """
CREATE OR REPLACE TABLE analysis.lab_summary AS
WITH
params AS (SELECT unnest($term_tests) AS PARAMCD, generate_subscripts($term_tests, 1) AS PARAMN),
doses AS (
  SELECT unnest($dose_ids) AS DOSE, generate_subscripts($dose_ids, 1) AS DOSEN
  UNION ALL SELECT $total, $total_dosen),
grades AS (SELECT unnest($grades) AS WORSTGR),
tox AS (
  SELECT SUBJID, PARAMCD, DOSEA AS DOSE, WORSTGR FROM analysis.lab_toxicity WHERE WORSTGR IS NOT NULL
  UNION ALL
  SELECT SUBJID, PARAMCD, $total, WORSTGR FROM analysis.lab_toxicity WHERE WORSTGR IS NOT NULL),
counts AS (SELECT PARAMCD, DOSE, WORSTGR, count(DISTINCT SUBJID) AS N FROM tox GROUP BY ALL),
denoms AS (SELECT PARAMCD, DOSE, count(DISTINCT SUBJID) AS DENOM FROM tox GROUP BY ALL)
SELECT p.PARAMCD, p.PARAMN, d.DOSE, d.DOSEN, g.WORSTGR,
       coalesce(c.N, 0) AS N, coalesce(n.DENOM, 0) AS DENOM,
       round(100.0 * coalesce(c.N, 0) / nullif(n.DENOM, 0), 1) AS PCT
FROM params p CROSS JOIN doses d CROSS JOIN grades g
LEFT JOIN counts c ON c.PARAMCD = p.PARAMCD AND c.DOSE = d.DOSE AND c.WORSTGR = g.WORSTGR
LEFT JOIN denoms n ON n.PARAMCD = p.PARAMCD AND n.DOSE = d.DOSE
ORDER BY p.PARAMN, d.DOSEN, g.WORSTGR
"""


def build_adlb(
    con: duckdb.DuckDBPyConnection, cfg: StudyConfig, baseline_visit: str = BASELINE_VISIT
) -> dict[str, int]:
    """Write analysis.adlb, analysis.lab_toxicity and analysis.lab_summary; return their row counts."""
    version = cfg.safety.ctcae_version
    if version not in CTCAE_VERSIONS:
        raise ValueError(f"safety.ctcae_version {version!r}: no cut-point table (have {', '.join(CTCAE_VERSIONS)})")
    if baseline_visit not in {v.id for v in cfg.visits}:
        raise ValueError(f"baseline visit {baseline_visit!r} is not a visit of the study configuration")
    con.execute("CREATE SCHEMA IF NOT EXISTS analysis")
    create_ctcae_macros(con)
    terms = ctcae_terms()
    term_params = {
        "term_tests": [t[0] for t in terms],
        "term_names": [t[1] for t in terms],
        "term_dirs": [t[2] for t in terms],
    }
    con.execute(
        ADLB_SQL,
        {
            "visit_ids": [v.id for v in cfg.visits],
            "visit_days": [v.day for v in cfg.visits],
            "baseline_visit": baseline_visit,
            "version": version,
            "base_tests": list(ctcae_tests_reading(version, "BASE")),
            **term_params,
        },
    )
    con.execute(
        LAB_TOXICITY_SQL, {"anc": ANC_RECOVERY, "d28": D28_TARGET, "d28_lo": D28_LO, "d28_hi": D28_HI}
    )
    con.execute(
        LAB_SUMMARY_SQL,
        {
            "term_tests": term_params["term_tests"],
            "dose_ids": cfg.dose_ids,
            "total": TOTAL,
            "total_dosen": TOTAL_DOSEN,
            "grades": list(GRADES),
        },
    )
    return {
        t: con.execute(f"SELECT count(*) FROM analysis.{t}").fetchall()[0][0]
        for t in ("adlb", "lab_toxicity", "lab_summary")
    }
