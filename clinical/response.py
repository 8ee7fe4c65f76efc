"""Tumour response (RECIST 1.1): ``analysis.adrs``, ``analysis.response`` and ``analysis.response_summary``.

Read from ``cut.rs`` (investigator's overall response per assessment), ``analysis.adsl`` and
``analysis.dose_levels``. Only infused participants (safety population, SAFFL = 'Y') are analysed.

``analysis.adrs``: one row per assessment (``cut.rs``) of an infused participant.
  DOSEA, DOSEAN  dose level received (from ADSL).
  VISIT, RSDAT   visit and date of the assessment as recorded.
  ADY            RSDAT - TRTSDT in days (day 0 = infusion).
  AVALC          overall response as recorded (CR, PR, SD, PD, NE).
  AVALN          its rank for the best overall response: CR 1, PR 2, SD 3, PD 4, NE 5.
  ANLFL          'Y' when the assessment counts towards the best overall response: after infusion
                 (ADY >= 1) and on or before the first PD (assessments after progression do not count).
``analysis.response``: one row per infused participant, with or without an assessment.
  TRTSDT         infusion date (day 0).
  BOR, BORN      best overall response (rank as AVALN) over the ANLFL assessments, best first
                 CR > PR > SD > PD > NE, where an assessment counts as
                   CR / PR  when recorded CR / PR and, only if confirmation is required, followed by a
                            CR (for a CR) or a CR or PR (for a PR) at least ``confirm_days`` later;
                   SD       when recorded SD (or an unconfirmed CR / PR) at least ``sd_min_days`` after
                            infusion (RECIST 1.1 minimum duration of SD);
                   PD       when recorded PD;
                   NE       otherwise (NE recorded, or SD earlier than the minimum).
                 A participant without any counting assessment is NE. Settings: the study
                 configuration's ``response`` (clinical.study.Response, to be stated in the SAP); defaults
                 ``sd_min_days`` = 28, no confirmation (``confirm`` = false, the usual reading of a phase 1
                 escalation trial: unconfirmed responses), ``confirm_days`` = 28.
  BORDT, BORDY   date and day (from infusion) of the first assessment that gives the BOR; NULL for
                 NE without any assessment.
  RSPFL          'Y' when BOR is CR or PR (objective response).
  NASSESS        number of assessments counting towards the BOR (ANLFL = 'Y').
  LSTASDT        date of the last response assessment (any).
  LSTCNDT        last contact: ADSL's LSTCNDT (the latest milestone, lab, PK or response assessment date,
                 end of study or death).
  LSTCNDY        LSTCNDT - TRTSDT in days: the length of the participant's bar in the swimmer plot.
  DTHDT, DTHDY   date and day of death (NULL when alive at the data cut).
  EOSSTT, EOSDT  end-of-study status and date from the disposition form (NULL while on study).
  ONGOING        'Y' when the participant is still on study at the data cut (no end of study, alive).
``analysis.response_summary``: per ROW (CR, PR, SD, PD, NE, then ORR = CR + PR) and DOSE (dose level
received, or 'TOTAL' with DOSEN 99); every row x column is present, dose levels without an infused
participant included. DENOM = infused participants in the column (the N of the column header),
N = participants with that BOR, PCT = 100 N / DENOM rounded to one decimal (NULL when DENOM is 0),
as in ``analysis.teae_summary``.
"""

from __future__ import annotations

import duckdb

from clinical.study import Response

TOTAL = "TOTAL"
TOTAL_DOSEN = 99

# (code, rank, label) in best-first order; ORR follows in the summary.
CATEGORIES: tuple[tuple[str, int, str], ...] = (
    ("CR", 1, "Complete response (CR)"),
    ("PR", 2, "Partial response (PR)"),
    ("SD", 3, "Stable disease (SD)"),
    ("PD", 4, "Progressive disease (PD)"),
    ("NE", 5, "Not evaluable (NE)"),
)
ORR = ("ORR", 6, "Objective response rate (CR + PR)")

_RANK = "CASE {x} WHEN 'CR' THEN 1 WHEN 'PR' THEN 2 WHEN 'SD' THEN 3 WHEN 'PD' THEN 4 ELSE 5 END"

ADRS_SQL = f"""
CREATE OR REPLACE TABLE analysis.adrs AS
WITH r AS (
  SELECT s.SUBJID, s.DOSEA, s.DOSEAN, r.VISIT, r.RSDAT, r.RSDAT - s.TRTSDT AS ADY,
         upper(trim(r.RSORRES)) AS AVALC
  FROM cut.rs r JOIN analysis.adsl s USING (SUBJID)
  WHERE s.SAFFL = 'Y' AND s.TRTSDT IS NOT NULL AND r.RSDAT IS NOT NULL),
p AS (
  SELECT *, min(RSDAT) FILTER (WHERE AVALC = 'PD' AND ADY >= 1) OVER (PARTITION BY SUBJID) AS PDDT
  FROM r)
SELECT SUBJID, DOSEA, DOSEAN, VISIT, RSDAT, ADY, AVALC,
       {_RANK.format(x="AVALC")} AS AVALN,
       CASE WHEN ADY >= 1 AND (PDDT IS NULL OR RSDAT <= PDDT) THEN 'Y' ELSE 'N' END AS ANLFL
FROM p
ORDER BY SUBJID, RSDAT, VISIT
"""

RESPONSE_SQL = f"""
CREATE OR REPLACE TABLE analysis.response AS
WITH a AS (SELECT * FROM analysis.adrs WHERE ANLFL = 'Y'),
c AS (
  -- whether each CR / PR is confirmed by a later assessment (always TRUE when not required)
  SELECT a.SUBJID, a.RSDAT, a.ADY, a.AVALC,
         NOT $confirm OR EXISTS (
           SELECT 1 FROM a b
           WHERE b.SUBJID = a.SUBJID AND b.RSDAT - a.RSDAT >= $confirm_days
             AND (b.AVALC = 'CR' OR (a.AVALC = 'PR' AND b.AVALC = 'PR'))) AS CONFIRMED
  FROM a),
e AS (
  SELECT SUBJID, RSDAT, ADY,
         CASE WHEN AVALC IN ('CR', 'PR') AND CONFIRMED THEN AVALC
              WHEN AVALC IN ('CR', 'PR', 'SD') AND ADY >= $sd_min_days THEN 'SD'
              WHEN AVALC = 'PD' THEN 'PD'
              ELSE 'NE' END AS CAT
  FROM c),
best AS (
  SELECT SUBJID, CAT AS BOR, RSDAT AS BORDT, ADY AS BORDY
  FROM (SELECT *, row_number() OVER (PARTITION BY SUBJID ORDER BY {_RANK.format(x="CAT")}, RSDAT) AS k FROM e)
  WHERE k = 1),
n AS (
  SELECT SUBJID, count(*) FILTER (WHERE ANLFL = 'Y') AS NASSESS, max(RSDAT) AS LSTASDT
  FROM analysis.adrs GROUP BY SUBJID),
s AS (SELECT * FROM analysis.adsl WHERE SAFFL = 'Y' AND TRTSDT IS NOT NULL),
j AS (
  SELECT s.SUBJID, s.DOSEA, s.DOSEAN, s.TRTSDT,
         coalesce(b.BOR, 'NE') AS BOR, b.BORDT, b.BORDY,
         coalesce(n.NASSESS, 0) AS NASSESS, n.LSTASDT,
         s.LSTCNDT,
         s.DTHDT, s.EOSSTT, s.EOSDT
  FROM s LEFT JOIN best b USING (SUBJID) LEFT JOIN n USING (SUBJID))
SELECT SUBJID, DOSEA, DOSEAN, TRTSDT, BOR, {_RANK.format(x="BOR")} AS BORN, BORDT, BORDY,
       CASE WHEN BOR IN ('CR', 'PR') THEN 'Y' ELSE 'N' END AS RSPFL,
       NASSESS, LSTASDT, LSTCNDT, LSTCNDT - TRTSDT AS LSTCNDY,
       DTHDT, DTHDT - TRTSDT AS DTHDY, EOSSTT, EOSDT,
       CASE WHEN EOSSTT IS NULL AND EOSDT IS NULL AND DTHDT IS NULL THEN 'Y' ELSE 'N' END AS ONGOING
FROM j
ORDER BY DOSEAN NULLS LAST, SUBJID
"""

SUMMARY_SQL = """
CREATE OR REPLACE TABLE analysis.response_summary AS
WITH
rows_ AS (SELECT unnest($codes) AS ROWCD, unnest($ranks) AS ROWN, unnest($labels) AS ROWLBL),
doses AS (
  SELECT DOSE, DOSEN FROM analysis.dose_levels
  UNION ALL SELECT $total, $total_dosen),
r AS (
  SELECT SUBJID, DOSEA AS DOSE, BOR FROM analysis.response
  UNION ALL SELECT SUBJID, $total, BOR FROM analysis.response),
denoms AS (SELECT DOSE, count(DISTINCT SUBJID) AS DENOM FROM r GROUP BY DOSE),
counts AS (
  SELECT DOSE, BOR AS ROWCD, count(DISTINCT SUBJID) AS N FROM r GROUP BY ALL
  UNION ALL
  SELECT DOSE, $orr, count(DISTINCT SUBJID) FROM r WHERE BOR IN ('CR', 'PR') GROUP BY ALL)
SELECT w.ROWN, w.ROWCD, w.ROWLBL, d.DOSE, d.DOSEN,
       coalesce(n.DENOM, 0) AS DENOM, coalesce(c.N, 0) AS N,
       round(100.0 * coalesce(c.N, 0) / nullif(n.DENOM, 0), 1) AS PCT
FROM rows_ w CROSS JOIN doses d
LEFT JOIN denoms n ON n.DOSE = d.DOSE
LEFT JOIN counts c ON c.DOSE = d.DOSE AND c.ROWCD = w.ROWCD
ORDER BY w.ROWN, d.DOSEN, d.DOSE
"""

TABLES = ("adrs", "response", "response_summary")
# The settings of a study configuration without a ``response`` section (clinical.study.Response defaults).
DEFAULT_RESPONSE = Response()


def build_response(con: duckdb.DuckDBPyConnection, rc: Response = DEFAULT_RESPONSE) -> dict[str, int]:
    """Write analysis.adrs, analysis.response and analysis.response_summary with the study's response
    settings ``rc`` (``StudyConfig.response``); return their row counts.

    Needs ``cut.rs``, ``analysis.adsl`` and ``analysis.dose_levels``.
    """
    con.execute(ADRS_SQL)
    con.execute(
        RESPONSE_SQL,
        {"sd_min_days": rc.sd_min_days, "confirm": rc.confirm, "confirm_days": rc.confirm_days},
    )
    rows = [*CATEGORIES, ORR]
    con.execute(
        SUMMARY_SQL,
        {
            "codes": [r[0] for r in rows],
            "ranks": [r[1] for r in rows],
            "labels": [r[2] for r in rows],
            "total": TOTAL,
            "total_dosen": TOTAL_DOSEN,
            "orr": ORR[0],
        },
    )
    return {t: con.execute(f"SELECT count(*) FROM analysis.{t}").fetchall()[0][0] for t in TABLES}
