"""Candidate DLTs from the configured rules, and their comparison with the investigator's adjudication.

Each rule of ``safety.dlt_rules`` is evaluated set-based on the analysis data of infused participants
inside the DLT window (protocol day 0 to ``escalation.dlt_window_days``):

  source "ae"   treatment-emergent AEs with onset in the window, at or above ``min_grade``, in the
                rule's categories / preferred terms, outside its excluded SOCs and terms, lasting at
                least ``min_duration_days`` (an ongoing event lasts until the data cut), and related
                to IM83 when ``related`` is set;
  source "lab"  a graded lab value of one of ``params`` at or above ``min_grade`` on or after protocol
                day ``persists_from_day`` (up to a week past the window, for a late day-28 visit),
                e.g. grade 4 neutropenia at day 28.
                Expected lymphodepletion cytopenias inside the window are thereby not candidates.

Tables:
  analysis.dlt_candidates  one row per (participant, rule, event or lab value) that meets a rule.
  analysis.dlt_review      one row per infused participant: candidate (Y/N), adjudicated DLT (ADSL
                           DLTFL), and whether they agree; disagreements go to the medical monitor.
"""

from __future__ import annotations

import datetime as dt

import duckdb

from clinical.study import DltRule, StudyConfig

CANDIDATE_COLUMNS = """
  SUBJID VARCHAR, RULE_ID VARCHAR, RULE_LABEL VARCHAR, SOURCE VARCHAR, AESPID BIGINT, PARAMCD VARCHAR,
  ADY BIGINT, GRADE INTEGER, DETAIL VARCHAR
"""

AE_RULE_SQL = """
INSERT INTO analysis.dlt_candidates
SELECT a.SUBJID, $rule_id, $label, 'ae', a.AESPID, NULL, a.ADY, a.ATOXGR,
       coalesce(a.AEDECOD, a.AETERM) || ', grade ' || a.ATOXGR || ', onset day ' || a.ADY
         || ', ' || coalesce((a.AENDT - a.ASTDT + 1) || ' days', 'ongoing at data cut')
FROM analysis.adae a
WHERE a.SAFFL = 'Y' AND a.TRTEMFL = 'Y' AND a.ADY BETWEEN 0 AND $window
  AND a.ATOXGR >= $min_grade
  AND ($categories IS NULL OR list_contains($categories, a.AECAT))
  AND ($terms IS NULL OR list_contains($terms, a.AEDECOD))
  AND NOT list_contains($exclude_socs, coalesce(a.AEBODSYS, ''))
  AND NOT list_contains($exclude_terms, coalesce(a.AEDECOD, ''))
  AND ($min_duration IS NULL OR coalesce(a.AENDT, $cut) - a.ASTDT + 1 >= $min_duration)
  AND (NOT $related OR a.RELFL = 'Y')
"""

LAB_RULE_SQL = """
INSERT INTO analysis.dlt_candidates
SELECT l.SUBJID, $rule_id, $label, 'lab', NULL, l.PARAMCD, min(l.ADY), max(l.ATOXGR),
       l.PARAMCD || ' grade ' || max(l.ATOXGR) || ' from day ' || min(l.ADY)
FROM analysis.adlb l
WHERE l.SAFFL = 'Y' AND list_contains($params, l.PARAMCD) AND l.ATOXGR >= $min_grade
  -- The day-28 visit may fall a few days late: values up to a week past the window still count.
  AND l.ADY BETWEEN coalesce($from_day, 0) AND $window + 7
GROUP BY l.SUBJID, l.PARAMCD
"""

REVIEW_SQL = """
CREATE OR REPLACE TABLE analysis.dlt_review AS
SELECT s.SUBJID, s.DOSEA, s.TRTSDT,
       CASE WHEN coalesce(c.n, 0) > 0 THEN 'Y' ELSE 'N' END AS CANDFL,
       c.rules AS CANDRULES,
       s.DLTFL,
       CASE WHEN (coalesce(c.n, 0) > 0) = (s.DLTFL = 'Y') THEN 'Y' ELSE 'N' END AS AGREEFL,
       CASE WHEN c.n > 0 AND s.DLTFL = 'N' THEN 'Meets a DLT rule but not adjudicated as DLT'
            WHEN c.n IS NULL AND s.DLTFL = 'Y' THEN 'Adjudicated DLT that meets no configured rule' END AS DISCREP
FROM analysis.adsl s
LEFT JOIN (SELECT SUBJID, count(*) AS n, string_agg(DISTINCT RULE_ID, ', ' ORDER BY RULE_ID) AS rules
           FROM analysis.dlt_candidates GROUP BY SUBJID) c USING (SUBJID)
WHERE s.SAFFL = 'Y'
ORDER BY s.SUBJID
"""


def _params(rule: DltRule, cfg: StudyConfig, data_cut: dt.date) -> dict[str, object]:
    common = {"rule_id": rule.id, "label": rule.label, "window": cfg.escalation.dlt_window_days, "min_grade": rule.min_grade}
    if rule.source == "lab":
        return common | {"params": rule.params or [], "from_day": rule.persists_from_day}
    return common | {
        "categories": rule.categories,
        "terms": rule.terms,
        "exclude_socs": rule.exclude_socs,
        "exclude_terms": rule.exclude_terms,
        "min_duration": rule.min_duration_days,
        "related": rule.related,
        "cut": data_cut,
    }


def build_dlt_review(con: duckdb.DuckDBPyConnection, cfg: StudyConfig, data_cut: dt.date) -> dict[str, int]:
    con.execute(f"CREATE OR REPLACE TABLE analysis.dlt_candidates ({CANDIDATE_COLUMNS})")
    for rule in cfg.safety.dlt_rules:
        sql = LAB_RULE_SQL if rule.source == "lab" else AE_RULE_SQL
        con.execute(sql, _params(rule, cfg, data_cut))
    con.execute("CREATE OR REPLACE TABLE analysis.dlt_candidates AS FROM analysis.dlt_candidates ORDER BY ALL")
    con.execute(REVIEW_SQL)
    return {
        "candidates": con.execute("SELECT count(*) FROM analysis.dlt_candidates").fetchall()[0][0],
        "disagreements": con.execute("SELECT count(*) FROM analysis.dlt_review WHERE AGREEFL = 'N'").fetchall()[0][0],
    }
