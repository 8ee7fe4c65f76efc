"""Safety summary tables as data (long format), counted from ``analysis.adsl`` and ``analysis.adae``.

Columns are the actual dose level received (DOSEA) and a TOTAL column; the denominator is the
safety population (infused, SAFFL = 'Y') of that column, so every percentage uses the same N as
the header. Each participant counts once per row (``count(DISTINCT SUBJID)``), at their worst case.

  analysis.teae_summary  AET01-like overview: participants with any TEAE, related, grade >= 3,
                         serious, CRS, ICANS, DLT, fatal; plus the number of events.
  analysis.ld_ae_summary the same overview of the adverse events that started during
                         lymphodepletion and are not treatment-emergent (APERIOD LYMPHODEPLETION;
                         with the infusion as the anchor, the default, every such AE): any, grade
                         >= 3, serious, fatal, events. The chemotherapy's cytopenias are here, so the
                         DSMB can reconcile the AE tables with the post-infusion laboratory grades.
  analysis.ae_by_term    TEAEs by MedDRA SOC and PT, for all, serious and non-serious TEAEs
                         (SCOPE), with participants affected, events and participants at risk;
                         the registry's serious / other adverse-event tables read this.
  analysis.safety_groups the column headers: dose level, label, N at risk.
"""

from __future__ import annotations

import duckdb

TOTAL = "TOTAL"

# (row number, label, predicate on a TEAE row); participants with at least one matching TEAE.
SUMMARY_ROWS: tuple[tuple[int, str, str], ...] = (
    (1, "Any TEAE", "TRUE"),
    (2, "Any TEAE related to IM83 CAR-T", "RELFL = 'Y'"),
    (3, "Any grade >= 3 TEAE", "ATOXGR >= 3"),
    (4, "Any serious TEAE", "AESER = 'Y'"),
    (5, "Cytokine release syndrome, any grade", "AECAT = 'CRS'"),
    (6, "Cytokine release syndrome, grade >= 3", "AECAT = 'CRS' AND ATOXGR >= 3"),
    (7, "ICANS, any grade", "AECAT = 'ICANS'"),
    (8, "ICANS, grade >= 3", "AECAT = 'ICANS' AND ATOXGR >= 3"),
    (9, "Dose-limiting toxicity (adjudicated)", "DLTFL = 'Y'"),
    (10, "TEAE leading to death (grade 5)", "ATOXGR = 5"),
)

GROUPS_SQL = f"""
CREATE OR REPLACE TABLE analysis.safety_groups AS
SELECT d.DOSE, d.DOSEN, d.DOSELBL,
       count(s.SUBJID) AS N_AT_RISK
FROM analysis.dose_levels d LEFT JOIN analysis.adsl s ON s.DOSEA = d.DOSE AND s.SAFFL = 'Y'
GROUP BY ALL
UNION ALL
SELECT '{TOTAL}', 99, 'Total', count(*) FROM analysis.adsl WHERE SAFFL = 'Y'
ORDER BY DOSEN
"""

# Row numbers the reports and the registry read (the events row comes after the rows above).
ANY_TEAE_ROWN, GRADE3_TEAE_ROWN, SERIOUS_TEAE_ROWN = 1, 3, 4
TEAE_EVENTS_ROWN = len(SUMMARY_ROWS) + 1
assert [SUMMARY_ROWS[n - 1][1] for n in (ANY_TEAE_ROWN, GRADE3_TEAE_ROWN, SERIOUS_TEAE_ROWN)] == [
    "Any TEAE", "Any grade >= 3 TEAE", "Any serious TEAE"]

# The lymphodepletion-period overview: (row number, label, predicate) as SUMMARY_ROWS.
LD_SUMMARY_ROWS: tuple[tuple[int, str, str], ...] = (
    (1, "Any adverse event", "TRUE"),
    (2, "Any grade >= 3 adverse event", "ATOXGR >= 3"),
    (3, "Any serious adverse event", "AESER = 'Y'"),
    (4, "Adverse event leading to death (grade 5)", "ATOXGR = 5"),
)


def _grouped(where: str) -> str:
    """ADAE rows of the safety population matching ``where``, once under their dose and once under TOTAL."""
    return f"""
  SELECT a.*, a.DOSEA AS DOSE FROM analysis.adae a WHERE ({where}) AND a.SAFFL = 'Y'
  UNION ALL
  SELECT a.*, '{TOTAL}' AS DOSE FROM analysis.adae a WHERE ({where}) AND a.SAFFL = 'Y'
"""


TEAE_GROUPED = _grouped("a.TRTEMFL = 'Y'")
LD_AE_GROUPED = _grouped("a.APERIOD = 'LYMPHODEPLETION' AND a.TRTEMFL IS DISTINCT FROM 'Y'")


def _summary_sql(grouped: str, rows: tuple[tuple[int, str, str], ...], events_label: str) -> str:
    """An AET01-like overview (ROWN, ROWLBL, DOSE, DOSEN, N, DENOM, PCT) of the AE rows ``grouped``:
    participants with at least one AE matching each row's predicate, then the number of events."""
    counts = " UNION ALL ".join(
        f"SELECT {n} AS ROWN, '{label}' AS ROWLBL, DOSE, count(DISTINCT SUBJID) FILTER (WHERE {pred}) AS N "
        f"FROM t GROUP BY DOSE"
        for n, label, pred in rows
    )
    labels = " UNION ALL ".join(f"SELECT {n} AS ROWN, '{label}' AS ROWLBL" for n, label, _ in rows)
    return f"""
        WITH t AS ({grouped}), counts AS ({counts}),
             events AS (SELECT DOSE, count(*) AS N FROM t GROUP BY DOSE)
        SELECT r.ROWN, r.ROWLBL, g.DOSE, g.DOSEN, coalesce(c.N, 0) AS N, g.N_AT_RISK AS DENOM,
               round(100.0 * coalesce(c.N, 0) / nullif(g.N_AT_RISK, 0), 1) AS PCT
        FROM ({labels}) r CROSS JOIN analysis.safety_groups g
        LEFT JOIN counts c ON c.ROWN = r.ROWN AND c.DOSE = g.DOSE
        UNION ALL
        SELECT {len(rows) + 1}, '{events_label}', g.DOSE, g.DOSEN, coalesce(e.N, 0), NULL, NULL
        FROM analysis.safety_groups g LEFT JOIN events e ON e.DOSE = g.DOSE
        ORDER BY ROWN, DOSEN
        """


def build_safety_tables(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    con.execute(GROUPS_SQL)
    con.execute("CREATE OR REPLACE TABLE analysis.teae_summary AS "
                + _summary_sql(TEAE_GROUPED, SUMMARY_ROWS, "Number of TEAEs (events)"))
    con.execute("CREATE OR REPLACE TABLE analysis.ld_ae_summary AS "
                + _summary_sql(LD_AE_GROUPED, LD_SUMMARY_ROWS, "Number of adverse events (events)"))
    con.execute(
        f"""
        CREATE OR REPLACE TABLE analysis.ae_by_term AS
        WITH t AS ({TEAE_GROUPED}),
        scoped AS (
          SELECT 'ALL' AS SCOPE, * FROM t
          UNION ALL SELECT 'SERIOUS', * FROM t WHERE AESER = 'Y'
          UNION ALL SELECT 'NON-SERIOUS', * FROM t WHERE AESER = 'N'),
        terms AS (SELECT DISTINCT SCOPE, coalesce(AEBODSYS, 'Uncoded') AS AEBODSYS,
                         coalesce(AEDECOD, 'Uncoded: ' || AETERM) AS AEDECOD FROM scoped),
        counts AS (
          SELECT SCOPE, coalesce(AEBODSYS, 'Uncoded') AS AEBODSYS, coalesce(AEDECOD, 'Uncoded: ' || AETERM) AS AEDECOD,
                 DOSE, count(DISTINCT SUBJID) AS N_AFFECTED, count(*) AS N_EVENTS
          FROM scoped GROUP BY ALL)
        SELECT t.SCOPE, t.AEBODSYS, t.AEDECOD, g.DOSE, g.DOSEN,
               coalesce(c.N_AFFECTED, 0) AS N_AFFECTED, coalesce(c.N_EVENTS, 0) AS N_EVENTS,
               g.N_AT_RISK
        FROM terms t CROSS JOIN analysis.safety_groups g
        LEFT JOIN counts c ON c.SCOPE = t.SCOPE AND c.AEBODSYS = t.AEBODSYS AND c.AEDECOD = t.AEDECOD
                          AND c.DOSE = g.DOSE
        ORDER BY t.SCOPE, t.AEBODSYS, t.AEDECOD, g.DOSEN
        """
    )
    return {
        t: con.execute(f"SELECT count(*) FROM analysis.{t}").fetchone()[0]
        for t in ("safety_groups", "teae_summary", "ld_ae_summary", "ae_by_term")
    }


# AET04-like: participants by the worst grade of each preferred term (and of any TEAE).
AE_BY_GRADE_SQL = f"""
CREATE OR REPLACE TABLE analysis.ae_by_grade AS
WITH t AS ({TEAE_GROUPED}),
worst AS (
  SELECT DOSE, 'Any TEAE' AS AEBODSYS, NULL AS AEDECOD, SUBJID, max(ATOXGR) AS GRADE FROM t GROUP BY ALL
  UNION ALL
  SELECT DOSE, coalesce(AEBODSYS, 'Uncoded'), coalesce(AEDECOD, 'Uncoded: ' || AETERM), SUBJID, max(ATOXGR)
  FROM t GROUP BY ALL),
terms AS (SELECT DISTINCT AEBODSYS, AEDECOD FROM worst),
grades AS (SELECT unnest(range(1, 6)) AS GRADE),
counted AS (
  SELECT r.AEBODSYS, r.AEDECOD, g.DOSE, g.DOSEN, gr.GRADE, count(w.SUBJID) AS N, g.N_AT_RISK
  FROM terms r CROSS JOIN analysis.safety_groups g CROSS JOIN grades gr
  LEFT JOIN worst w ON w.AEBODSYS = r.AEBODSYS AND w.AEDECOD IS NOT DISTINCT FROM r.AEDECOD
                   AND w.DOSE = g.DOSE AND w.GRADE = gr.GRADE
  GROUP BY ALL)
SELECT * FROM counted ORDER BY AEBODSYS <> 'Any TEAE', AEBODSYS, AEDECOD NULLS FIRST, DOSEN, GRADE
"""


def build_ae_by_grade(con: duckdb.DuckDBPyConnection) -> int:
    """Participants counted once per term, at their worst grade; needs analysis.safety_groups."""
    con.execute(AE_BY_GRADE_SQL)
    return con.execute("SELECT count(*) FROM analysis.ae_by_grade").fetchall()[0][0]
