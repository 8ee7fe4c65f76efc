"""Participant flow (CONSORT-DEFINE style) counted from ``analysis.adsl``.

Tables written:
  analysis.flow_screening   screened, screen failures (by failed criterion), enrolled; overall only,
                            because a dose level is assigned only at enrolment.
  analysis.participant_flow per planned dose level and in total, the progression stages
                            enrolled -> leukapheresed -> product released -> lymphodepleted ->
                            infused -> completed follow-up, plus the DLT-evaluable analysis set
                            (STAGEKIND = 'ANALYSIS SET'), which is a subset of the infused but
                            not a step on the way to completion.
  analysis.flow_exits       for every progression stage, the participants of the previous stage who
                            did not reach it, by reason; and the reasons for not being DLT-evaluable.

Counts come from cumulative ADSL flags, so they cannot increase down the funnel; every count is a
``count(DISTINCT SUBJID)`` of ADSL rows, so each can be traced to its participants.
"""

from __future__ import annotations

import duckdb

# (stage id, ADSL flag, label). Order is the funnel order.
STAGES: tuple[tuple[str, str, str], ...] = (
    ("enrolled", "ENRLFL", "Enrolled (assigned to a dose level)"),
    ("leukapheresed", "APHFL", "Leukapheresed"),
    ("released", "MFGFL", "Product released"),
    ("lymphodepleted", "LDFL", "Lymphodepleted"),
    ("infused", "SAFFL", "Infused with IM83 CAR-T (safety population)"),
    ("completed", "COMPLFL", "Completed protocol follow-up"),
)
ANALYSIS_SET = ("dlt_evaluable", "DLTEVLFL", "DLT-evaluable")

# Why a participant of the previous stage did not reach a stage (first non-null wins).
EXIT_REASON = {
    "leukapheresed": "coalesce(PRREASND_TXT, DCSREAS, 'Ongoing at data cut')",
    "released": "CASE WHEN MFGSTAT = 'FAILED' THEN 'MANUFACTURING FAILURE' "
    "ELSE coalesce(DCSREAS, 'Ongoing at data cut') END",
    "lymphodepleted": "coalesce(DCSREAS, 'Ongoing at data cut')",
    "infused": "coalesce(DCSREAS, 'Ongoing at data cut')",
    "completed": "coalesce(DCSREAS, 'Ongoing at data cut')",
}

TOTAL = "TOTAL"


def _groups_sql() -> str:
    """ADSL rows of enrolled participants once per planned dose and once in the total column."""
    return f"""
      SELECT s.*, s.DOSEP AS GRP, s.DOSEPN AS GRPN FROM analysis.adsl s WHERE s.ENRLFL = 'Y'
      UNION ALL
      SELECT s.*, '{TOTAL}' AS GRP, 99 AS GRPN FROM analysis.adsl s WHERE s.ENRLFL = 'Y'"""


def build_flow(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    con.execute(
        """
        CREATE OR REPLACE TABLE analysis.flow_screening AS
        SELECT 1 AS ROWN, 'Screened (assessed for eligibility)' AS ROWLBL, count(*) AS N FROM analysis.adsl
        UNION ALL
        SELECT 2, 'Not enrolled', count(*) FILTER (WHERE ENRLFL = 'N') FROM analysis.adsl
        UNION ALL
        SELECT 3 + c.CRITN, '  Failed: ' || c.CRITLBL,
               count(s.SUBJID) FROM analysis.criteria c
          JOIN analysis.adsl s ON s.ENRLFL = 'N' AND list_contains(string_split(s.SCRFLRS, '; '), c.CRIT)
          GROUP BY c.CRITN, c.CRITLBL
        UNION ALL
        SELECT 1000, '  Not enrolled, no failed criterion recorded',
               count(*) FILTER (WHERE ENRLFL = 'N' AND SCRFLRS IS NULL) FROM analysis.adsl
        UNION ALL
        SELECT 1001, 'Enrolled', count(*) FILTER (WHERE ENRLFL = 'Y') FROM analysis.adsl
        ORDER BY ROWN
        """
    )
    groups = "SELECT DOSE AS GRP, DOSEN AS GRPN FROM analysis.dose_levels UNION ALL SELECT 'TOTAL', 99"
    stage_rows = [(i + 1, sid, flag, lbl, "STAGE") for i, (sid, flag, lbl) in enumerate(STAGES)]
    stage_rows.append((len(STAGES) + 1, *ANALYSIS_SET, "ANALYSIS SET"))
    selects = " UNION ALL ".join(
        f"""SELECT {n} AS STAGEN, '{sid}' AS STAGE, '{lbl}' AS STAGELBL, '{kind}' AS STAGEKIND, g.GRP AS DOSE,
                   g.GRPN AS DOSEN, count(DISTINCT x.SUBJID) FILTER (WHERE x.{flag} = 'Y') AS N
            FROM ({groups}) g LEFT JOIN ({_groups_sql()}) x ON x.GRP = g.GRP GROUP BY g.GRP, g.GRPN"""
        for n, sid, flag, lbl, kind in stage_rows
    )
    con.execute(f"CREATE OR REPLACE TABLE analysis.participant_flow AS {selects} ORDER BY STAGEN, DOSEN")

    exits = []
    for i, (sid, flag, _lbl) in enumerate(STAGES[1:], start=2):
        prev_flag = STAGES[i - 2][1]
        exits.append(
            f"""SELECT {i} AS STAGEN, '{sid}' AS STAGE, {EXIT_REASON[sid]} AS REASON, GRP AS DOSE, GRPN AS DOSEN,
                       SUBJID FROM x WHERE {prev_flag} = 'Y' AND {flag} = 'N'"""
        )
    exits.append(
        f"""SELECT {len(STAGES) + 1}, '{ANALYSIS_SET[0]}', DLTEVLRS, GRP, GRPN, SUBJID
            FROM x WHERE SAFFL = 'Y' AND DLTEVLFL = 'N'"""
    )
    con.execute(
        f"""CREATE OR REPLACE TABLE analysis.flow_exits AS
            WITH x AS (SELECT *, CASE WHEN PRREASND IS NOT NULL THEN 'Leukapheresis not performed: ' || PRREASND END
                                  AS PRREASND_TXT FROM ({_groups_sql()}))
            SELECT STAGEN, STAGE, REASON, DOSE, DOSEN, count(DISTINCT SUBJID) AS N,
                   string_agg(SUBJID, ', ' ORDER BY SUBJID) AS SUBJIDS
            FROM ({' UNION ALL '.join(exits)}) GROUP BY ALL ORDER BY STAGEN, REASON, DOSEN"""
    )
    return {
        t: con.execute(f"SELECT count(*) FROM analysis.{t}").fetchone()[0]
        for t in ("flow_screening", "participant_flow", "flow_exits")
    }


def funnel_violations(con: duckdb.DuckDBPyConnection) -> list[tuple]:
    """(dose, stage, n, previous n) wherever a progression stage counts more than the one before it."""
    return con.execute(
        """SELECT DOSE, STAGE, N, prev FROM (
             SELECT DOSE, STAGE, N, lag(N) OVER (PARTITION BY DOSE ORDER BY STAGEN) AS prev
             FROM analysis.participant_flow WHERE STAGEKIND = 'STAGE')
           WHERE N > prev ORDER BY DOSE, STAGE"""
    ).fetchall()
