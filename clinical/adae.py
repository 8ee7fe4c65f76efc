"""ADAE-like adverse-event analysis table ``analysis.adae``: one row per recorded AE.

- ASTDT/AENDT: partial dates imputed as admiral's ADAE template does: start dates to the first
  possible date but not before infusion when infusion lies in the possible range (``min_dates``),
  end dates to the last possible date but not after death or end of study (``max_dates``); the flag
  (ASTDTF/AENDTF) names the highest component imputed ('D' day, 'M' month). The configuration's
  ``safety.date_imputation`` sets the highest level: 'M' (default, admiral's template) or 'D' (a
  year-only date stays missing, as in the CDISC pilot ADAE).
- WORSTFL: the participant's worst-graded treatment-emergent occurrence of each preferred term
  ('N' on every other record).
- TRTEMFL is 'Y' or blank, as ADaM record-level flags are (population flags are 'Y'/'N').
- RELFL: related to the product when the causality is among ``safety.related_values``, or missing
  (conservative, until the site answers the query).
- ADY: protocol day relative to infusion, day 0 = infusion (CAR-T convention).
  ASTDY: CDISC study day relative to infusion, which has no day 0 (day 1 = infusion day).
- APERIOD: PRE-TREATMENT (consent to before lymphodepletion), LYMPHODEPLETION (from its start to
  before infusion), POST-INFUSION (from day 0).
- TRTEMFL: treatment-emergent, PHUSE WP-087 / admiral ``derive_var_trtemfl`` order of rules:
  no anchor date -> not TE; ended before the anchor -> not TE; no start date -> TE (conservative);
  started on or after the anchor (and within the optional end window) -> TE.
  The anchor is the study configuration's ``safety.treatment_emergent_anchor`` (infusion by
  default, or lymphodepletion start). Worsening of a pre-existing event: the CRF records a change
  of grade as a new AE row starting on the day it worsened (CDASH), so a worsening after the anchor
  is treatment-emergent by its own start date while the earlier, lower-grade row is not.
"""

from __future__ import annotations

import duckdb

from clinical.study import StudyConfig

ADAE_SQL = """
CREATE OR REPLACE TABLE analysis.adae AS
WITH a AS (
  SELECT ae.*, s.TRTSDT, s.LDSTDT, s.DOSEA, s.DOSEAN, s.SAFFL, s.DLTWEND,
    impute_first(ae.AESTDAT, $highest, s.TRTSDT) AS ASTDT, impute_flag(ae.AESTDAT, $highest) AS ASTDTF,
    impute_last(ae.AEENDAT, $highest, least(s.DTHDT, s.EOSDT)) AS AENDT, impute_flag(ae.AEENDAT, $highest) AS AENDTF,
    CASE WHEN $anchor = 'infusion' THEN s.TRTSDT ELSE s.LDSTDT END AS ANCHOR
  FROM cut.ae ae JOIN analysis.adsl s USING (SUBJID)
)
SELECT
  STUDYID_ADSL.STUDYID, a.SUBJID, a.AESPID, a.AETERM, a.AEDECOD, a.AEBODSYS, a.AECAT,
  a.AESTDAT AS AESTDTC, a.ASTDT, a.ASTDTF, a.AEENDAT AS AEENDTC, a.AENDT, a.AENDTF,
  a.AETOXGR AS ATOXGR, a.AESER, a.AEREL,
  -- A missing causality counts as related (conservative; rule XF-AE-NO-CAUSALITY queries it).
  CASE WHEN a.AEREL IS NULL OR list_contains($related, a.AEREL) THEN 'Y' ELSE 'N' END AS RELFL,
  a.AEOUT, a.AEDLT,
  a.AEFEVER, a.AEHYPOT, a.AEHYPOX, a.AEICE, a.AECONSC, a.AESEIZ, a.AEMOTOR, a.AEEDEMA,
  a.DOSEA, a.DOSEAN, a.SAFFL, a.TRTSDT,
  a.ASTDT - a.TRTSDT AS ADY,
  CASE WHEN a.ASTDT >= a.TRTSDT THEN a.ASTDT - a.TRTSDT + 1 ELSE a.ASTDT - a.TRTSDT END AS ASTDY,
  CASE WHEN a.ASTDT IS NULL THEN NULL
       WHEN a.TRTSDT IS NOT NULL AND a.ASTDT >= a.TRTSDT THEN 'POST-INFUSION'
       WHEN a.LDSTDT IS NOT NULL AND a.ASTDT >= a.LDSTDT THEN 'LYMPHODEPLETION'
       ELSE 'PRE-TREATMENT' END AS APERIOD,
  CASE WHEN a.ANCHOR IS NULL THEN NULL
       WHEN a.AENDT IS NOT NULL AND a.AENDT < a.ANCHOR THEN NULL
       WHEN a.ASTDT IS NULL THEN 'Y'
       WHEN a.ASTDT >= a.ANCHOR AND ($end_days IS NULL OR a.ASTDT <= a.ANCHOR + $end_days) THEN 'Y'
       END AS TRTEMFL,
  CASE WHEN a.AEDLT = 'Y' AND a.ASTDT BETWEEN a.TRTSDT AND a.DLTWEND THEN 'Y' ELSE 'N' END AS DLTFL,
  -- The participant's worst-graded treatment-emergent occurrence of each preferred term (first by
  -- onset on ties); TRTEMFL is the column above (DuckDB reads a select-list alias).
  CASE WHEN TRTEMFL = 'Y' AND row_number() OVER (PARTITION BY a.SUBJID, coalesce(a.AEDECOD, a.AETERM), TRTEMFL
                               ORDER BY a.AETOXGR DESC, a.ASTDT NULLS LAST, a.AESPID) = 1
       THEN 'Y' ELSE 'N' END AS WORSTFL
FROM a
CROSS JOIN (SELECT any_value(STUDYID) AS STUDYID FROM analysis.adsl) STUDYID_ADSL
ORDER BY a.SUBJID, a.AESPID
"""


def build_adae(con: duckdb.DuckDBPyConnection, cfg: StudyConfig) -> int:
    con.execute(
        ADAE_SQL,
        {
            "anchor": cfg.safety.treatment_emergent_anchor,
            "end_days": cfg.safety.treatment_emergent_end_days,
            "related": cfg.safety.related_values,
            "highest": cfg.safety.date_imputation,
        },
    )
    return con.execute("SELECT count(*) FROM analysis.adae").fetchone()[0]
