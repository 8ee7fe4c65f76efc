"""Eligibility against the protocol: every inclusion criterion evaluated on the screening values.

``analysis.eligibility``: one row per screened participant (``analysis.adsl``) and criterion of the
study configuration (``eligibility:``), in configuration order.

  SUBJID, SITEID, ENRLYN  the participant; ENRLYN 'Y' when enrolled (enrol ENRLYN = Y).
  CRIT, CRITN, CRITLBL    the criterion id, its order and label.
  SOURCE, PARAM, OP, BASIS, UNIT  as configured: where the value comes from (dm / sc column, or the
                          lb test at the screening visit ``screening_visit``), the comparison the
                          participant must meet, "value" or "xuln" (multiple of the upper limit of
                          normal).
  VALUE                   the staged screening value as text (numbers without a trailing ".0").
  VALUEN                  the value as a number (NULL for coded criteria such as GPC3).
  ULN                     for x ULN criteria: the upper limit of normal of the participant's own
                          screening lab result (lb LBORNRHI), never a textbook value.
  XLIMIT                  the configured limit: the value, or the multiple of ULN for "xuln"; with
                          liver metastases (sc LIVERMET = Y) ``value_liver_metastases`` when configured.
                          Without a LIVERMET answer the standard (stricter) limit applies.
  THRESHOLD               the limit in the value's own unit: XLIMIT, or XLIMIT x ULN (NULL for coded).
  THRESHOLD_TEXT          the requirement in words, e.g. ">= 1.5 10^9/L", "<= 2.5 x ULN (= 100 U/L)".
  MET                     'Y' / 'N'; NULL when it cannot be evaluated (value or ULN missing).
  NOTEVAL                 why MET is NULL.
  HELD                    when the value is missing because its record is held in quarantine
                          (raw.held): the form, line and quarantine rule(s), e.g. "lb line 57:
                          TYPE-FLOAT". The site answers that record's data query; the criterion
                          raises no second query (XF-ELIG-NOT-EVALUABLE skips it).
  IEYN                    the investigator's assessment of the criterion (ie IEYN), NULL if absent.

Comparisons: numbers are compared after rounding both sides to 9 decimals (so 1.5 x 17.1 equals
25.65); coded values ("==" with a text value) by equality of the text.

``analysis.protocol_deviations``: one row per enrolled participant (ENRLYN = 'Y') and criterion not
met (MET = 'N'): SUBJID, SITEID, DOSEP (assigned dose level), ENRLDT, DVCAT ('ELIGIBILITY'), CRIT,
CRITN, CRITLBL, VALUE, THRESHOLD, THRESHOLD_TEXT, IEYN and DVTERM (the deviation in words). A
criterion that cannot be evaluated is not a deviation but a data query (rule XF-ELIG-NOT-EVALUABLE).
"""

from __future__ import annotations

import duckdb

from clinical.study import StudyConfig


def _form_params(cfg: StudyConfig) -> list[tuple[str, str]]:
    """(form, field) of the criteria read from a dm / sc column, sorted."""
    return sorted({(c.source, c.param) for c in cfg.eligibility if c.source in ("dm", "sc")})


def _source_values_sql(cfg: StudyConfig) -> str:
    """One row per (participant, SOURCE, PARAM) with VALUE text and ULN: dm / sc columns, lb tests."""
    parts = []
    for source, param in _form_params(cfg):
        # Only contract field names enter the SQL text (load_study checks a dm / sc param is a field
        # of its form: clinical.study.Criterion); values stay parameters.
        parts.append(
            f"SELECT SUBJID, '{source}' AS SOURCE, '{param}' AS PARAM, \"{param}\"::VARCHAR AS VALUE, "
            f"try_cast(\"{param}\" AS DOUBLE) AS VALUEN, NULL::DOUBLE AS ULN, NULL::VARCHAR AS LABUNIT "
            f"FROM stage.{source}"
        )
    parts.append(
        "SELECT SUBJID, 'lb' AS SOURCE, LBTESTCD AS PARAM, LBORRES::VARCHAR AS VALUE, LBORRES AS VALUEN, "
        "LBORNRHI AS ULN, LBORRESU AS LABUNIT FROM cut.lb WHERE VISIT = $screening_visit"
    )
    return " UNION ALL ".join(parts)


def _held_values_sql(cfg: StudyConfig) -> str:
    """One row per (participant, SOURCE, PARAM) whose record is held in quarantine (raw.held): the
    raw record, matched to its quarantine rows by line, with "form line n: RULE, RULE"."""
    held = ("JOIN raw.held h ON h.form = '{form}' AND h.export_id = r._export_id AND h.line = r._line")
    label = "'{form} line ' || r._line || ': ' || string_agg(DISTINCT h.rule, ', ' ORDER BY h.rule)"
    parts = [
        f"SELECT r.SUBJID, '{source}' AS SOURCE, '{param}' AS PARAM, {label.format(form=source)} AS HELD "
        f"FROM raw.{source} r {held.format(form=source)} GROUP BY r.SUBJID, r._line"
        for source, param in _form_params(cfg)
    ]
    parts.append(
        f"SELECT r.SUBJID, 'lb' AS SOURCE, r.LBTESTCD AS PARAM, {label.format(form='lb')} AS HELD "
        f"FROM raw.lb r {held.format(form='lb')} WHERE r.VISIT = $screening_visit GROUP BY r.SUBJID, r.LBTESTCD, r._line"
    )
    # A participant's test held on two lines: both named.
    return (f"SELECT SUBJID, SOURCE, PARAM, string_agg(HELD, '; ' ORDER BY HELD) AS HELD "
            f"FROM ({' UNION ALL '.join(parts)}) GROUP BY ALL")


ELIGIBILITY_SQL = """
CREATE OR REPLACE TEMP MACRO elig_num(x) AS
  CASE WHEN x = trunc(x) AND abs(x) < 1e15 THEN x::BIGINT::VARCHAR ELSE round(x, 6)::VARCHAR END;
CREATE OR REPLACE TABLE analysis.eligibility AS
WITH
crit AS (
  SELECT unnest($ids) AS CRIT, generate_subscripts($ids, 1) AS CRITN, unnest($labels) AS CRITLBL,
         unnest($sources) AS SOURCE, unnest($params) AS PARAM, unnest($ops) AS OP,
         unnest($limits) AS LIMITC, unnest($limits_liver) AS LIMIT_LIVER, unnest($units) AS UNIT,
         unnest($bases) AS BASIS),
vals AS ({values}),
held AS ({held}),
subj AS (
  SELECT s.SUBJID, s.SITEID, CASE WHEN e.ENRLYN = 'Y' THEN 'Y' ELSE 'N' END AS ENRLYN, sc.LIVERMET
  FROM analysis.adsl s LEFT JOIN cut.enrol e USING (SUBJID) LEFT JOIN cut.sc sc USING (SUBJID)),
j AS (
  SELECT s.SUBJID, s.SITEID, s.ENRLYN, c.CRIT, c.CRITN, c.CRITLBL, c.SOURCE, c.PARAM, c.OP, c.BASIS,
         coalesce(c.UNIT, v.LABUNIT) AS UNIT,
         CASE WHEN v.VALUEN IS NOT NULL THEN elig_num(v.VALUEN) ELSE v.VALUE END AS VALUE, v.VALUEN,
         CASE WHEN c.BASIS = 'xuln' THEN v.ULN END AS ULN,
         try_cast(c.LIMITC AS DOUBLE) IS NULL AS CODED, c.LIMITC,
         CASE WHEN c.LIMIT_LIVER IS NOT NULL AND s.LIVERMET = 'Y' THEN c.LIMIT_LIVER
              ELSE try_cast(c.LIMITC AS DOUBLE) END AS XLIMIT,
         CASE WHEN v.VALUE IS NULL THEN q.HELD END AS HELD
  FROM subj s CROSS JOIN crit c
  LEFT JOIN vals v ON v.SUBJID = s.SUBJID AND v.SOURCE = c.SOURCE AND v.PARAM = c.PARAM
  LEFT JOIN held q ON q.SUBJID = s.SUBJID AND q.SOURCE = c.SOURCE AND q.PARAM = c.PARAM),
t AS (
  SELECT *, CASE WHEN CODED THEN NULL WHEN BASIS = 'xuln' THEN XLIMIT * ULN ELSE XLIMIT END AS THRESHOLD
  FROM j),
m AS (
  SELECT *,
    CASE WHEN VALUE IS NULL AND HELD IS NOT NULL THEN 'screening value held in quarantine (' || HELD || ')'
         WHEN VALUE IS NULL THEN 'no screening value recorded'
         WHEN NOT CODED AND VALUEN IS NULL THEN 'screening value is not a number'
         WHEN BASIS = 'xuln' AND ULN IS NULL THEN 'no upper limit of normal recorded with the lab result'
    END AS NOTEVAL
  FROM t)
SELECT
  m.SUBJID, m.SITEID, m.ENRLYN, m.CRIT, m.CRITN, m.CRITLBL, m.SOURCE, m.PARAM, m.OP, m.BASIS, m.UNIT,
  m.VALUE, m.VALUEN, m.ULN, m.XLIMIT, m.THRESHOLD,
  CASE WHEN m.CODED THEN m.OP || ' ' || m.LIMITC
       WHEN m.BASIS = 'xuln' THEN m.OP || ' ' || elig_num(m.XLIMIT) || ' x ULN'
            || coalesce(' (= ' || elig_num(m.THRESHOLD) || coalesce(' ' || m.UNIT, '') || ')', '')
       ELSE m.OP || ' ' || elig_num(m.XLIMIT) || coalesce(' ' || m.UNIT, '') END AS THRESHOLD_TEXT,
  CASE WHEN m.NOTEVAL IS NOT NULL THEN NULL
       WHEN m.CODED THEN CASE WHEN m.OP = '==' AND m.VALUE = m.LIMITC THEN 'Y' ELSE 'N' END
       WHEN CASE m.OP
              WHEN '>=' THEN round(m.VALUEN, 9) >= round(m.THRESHOLD, 9)
              WHEN '<=' THEN round(m.VALUEN, 9) <= round(m.THRESHOLD, 9)
              WHEN '>' THEN round(m.VALUEN, 9) > round(m.THRESHOLD, 9)
              WHEN '<' THEN round(m.VALUEN, 9) < round(m.THRESHOLD, 9)
              WHEN '==' THEN round(m.VALUEN, 9) = round(m.THRESHOLD, 9) END THEN 'Y'
       ELSE 'N' END AS MET,
  m.NOTEVAL, m.HELD,
  ie.IEYN
FROM m
LEFT JOIN cut.ie ie ON ie.SUBJID = m.SUBJID AND ie.IETESTCD = m.CRIT
ORDER BY m.SUBJID, m.CRITN
"""

DEVIATIONS_SQL = """
CREATE OR REPLACE TABLE analysis.protocol_deviations AS
SELECT e.SUBJID, e.SITEID, s.DOSEP, s.ENRLDT, 'ELIGIBILITY' AS DVCAT, e.CRIT, e.CRITN, e.CRITLBL,
       e.VALUE, e.UNIT, e.THRESHOLD, e.THRESHOLD_TEXT, e.IEYN,
       'enrolled without meeting inclusion criterion ' || e.CRIT || ' (' || e.CRITLBL || '): screening value '
         || e.VALUE || coalesce(' ' || e.UNIT, '') || ', required ' || e.THRESHOLD_TEXT AS DVTERM
FROM analysis.eligibility e
LEFT JOIN analysis.adsl s USING (SUBJID)
WHERE e.ENRLYN = 'Y' AND e.MET = 'N'
ORDER BY e.SUBJID, e.CRITN
"""


def eligibility_parameters(cfg: StudyConfig) -> dict[str, object]:
    """The criteria as query parameters; already checked when the study configuration loaded
    (clinical.study.Criterion: a coded value has op '==')."""
    return {
        "ids": [c.id for c in cfg.eligibility],
        "labels": [c.label for c in cfg.eligibility],
        "sources": [c.source for c in cfg.eligibility],
        "params": [c.param for c in cfg.eligibility],
        "ops": [c.op for c in cfg.eligibility],
        "limits": [str(c.value) for c in cfg.eligibility],
        "limits_liver": [None if c.value_liver_metastases is None else float(c.value_liver_metastases) for c in cfg.eligibility],
        "units": [c.unit for c in cfg.eligibility],
        "bases": [c.basis for c in cfg.eligibility],
        "screening_visit": cfg.screening_visit,
    }


def build_eligibility(con: duckdb.DuckDBPyConnection, cfg: StudyConfig) -> dict[str, int]:
    """Write analysis.eligibility and analysis.protocol_deviations; return row counts."""
    con.execute("CREATE SCHEMA IF NOT EXISTS analysis")
    params = eligibility_parameters(cfg)
    sql = ELIGIBILITY_SQL.replace("{values}", _source_values_sql(cfg)).replace("{held}", _held_values_sql(cfg))
    con.execute(sql, params)
    con.execute(DEVIATIONS_SQL)
    return {
        "eligibility": con.execute("SELECT count(*) FROM analysis.eligibility").fetchall()[0][0],
        "not_met": con.execute("SELECT count(*) FROM analysis.eligibility WHERE MET = 'N'").fetchall()[0][0],
        "not_evaluable": con.execute("SELECT count(*) FROM analysis.eligibility WHERE MET IS NULL").fetchall()[0][0],
        "protocol_deviations": con.execute("SELECT count(*) FROM analysis.protocol_deviations").fetchall()[0][0],
    }
