"""Exposure: lymphodepletion and CAR-T product actually given, against the protocol.

  analysis.exposure          one row per lymphodepleted or infused participant: for every
                             lymphodepletion agent the days given and the cumulative dose (mg/m2)
                             against the planned cumulative dose (daily dose x planned days); the
                             product's release status, viability and transduction; cells infused
                             against the assigned dose level; vein-to-vein time (leukapheresis to
                             infusion, days).
  analysis.exposure_summary  per actual dose level and in total: n, median (min, max) of cells
                             infused (x10^6), percent of the dose level's target, cumulative
                             fludarabine and cyclophosphamide (mg/m2) and vein-to-vein days.
"""

from __future__ import annotations

import duckdb

from clinical.study import StudyConfig

EXPOSURE_SQL = """
CREATE OR REPLACE TABLE analysis.exposure AS
WITH planned AS (
  SELECT unnest($agents) AS EXTRT, unnest($doses) AS DAILY, ($end_day - $start_day + 1) AS DAYS
),
ld AS (
  SELECT l.SUBJID, l.EXTRT, count(DISTINCT l.EXSTDAT) AS LDDAYS, round(sum(l.EXDOSE), 3) AS LDCUM,
         p.DAILY * p.DAYS AS LDPLAN
  FROM cut.ld l JOIN planned p USING (EXTRT) GROUP BY ALL
),
ld_wide AS (
  SELECT SUBJID,
         map_from_entries(list({'k': EXTRT, 'v': LDCUM})) AS CUM,
         map_from_entries(list({'k': EXTRT, 'v': LDPLAN})) AS PLAN,
         map_from_entries(list({'k': EXTRT, 'v': LDDAYS})) AS DAYS
  FROM ld GROUP BY SUBJID
)
SELECT s.SUBJID, s.DOSEP, s.DOSEA, s.DOSEAN, s.LDSTDT, s.LDENDT, s.TRTSDT,
       w.DAYS[$agent1] AS FLUDAYS, w.CUM[$agent1] AS FLUCUM, w.PLAN[$agent1] AS FLUPLAN,
       w.DAYS[$agent2] AS CYDAYS, w.CUM[$agent2] AS CYCUM, w.PLAN[$agent2] AS CYPLAN,
       m.RELSTAT, m.VIABPCT, m.TRANSPCT,
       s.CELLS, d.CELLS AS CELLSPLAN, round(100.0 * s.CELLS / nullif(d.CELLS, 0), 1) AS CELLSPCT,
       s.TRTSDT - s.APHDT AS V2VDAYS
FROM analysis.adsl s
LEFT JOIN ld_wide w USING (SUBJID)
LEFT JOIN cut.mfg m USING (SUBJID)
LEFT JOIN analysis.dose_levels d ON d.DOSE = s.DOSEP
WHERE s.LDFL = 'Y' OR s.SAFFL = 'Y'
ORDER BY s.SUBJID
"""

SUMMARY_SQL = """
CREATE OR REPLACE TABLE analysis.exposure_summary AS
WITH x AS (
  SELECT e.*, e.DOSEA AS GRP, e.DOSEAN AS GRPN FROM analysis.exposure e WHERE e.TRTSDT IS NOT NULL
  UNION ALL
  SELECT e.*, 'TOTAL', 99 FROM analysis.exposure e WHERE e.TRTSDT IS NOT NULL
),
stats AS (
  SELECT GRP, GRPN, 'CELLS' AS PARAMCD, 'Cells infused (x10^6)' AS PARAM, CELLS / 1e6 AS v FROM x
  UNION ALL SELECT GRP, GRPN, 'CELLSPCT', 'Cells infused, % of dose level', CELLSPCT FROM x
  UNION ALL SELECT GRP, GRPN, 'FLUCUM', 'Fludarabine, cumulative mg/m2', FLUCUM FROM x
  UNION ALL SELECT GRP, GRPN, 'CYCUM', 'Cyclophosphamide, cumulative mg/m2', CYCUM FROM x
  UNION ALL SELECT GRP, GRPN, 'V2VDAYS', 'Leukapheresis to infusion, days', V2VDAYS FROM x
)
SELECT GRP AS DOSE, GRPN AS DOSEN, PARAMCD, PARAM, count(v) AS N,
       median(v) AS MEDIAN, min(v) AS MIN, max(v) AS MAX
FROM stats GROUP BY ALL ORDER BY DOSEN, PARAMCD
"""


def build_exposure(con: duckdb.DuckDBPyConnection, cfg: StudyConfig) -> dict[str, int]:
    agents = cfg.lymphodepletion.agents
    # The two protocol agents are reported as named columns; more agents would need more columns.
    names = [a.name for a in agents] + [""] * max(0, 2 - len(agents))
    con.execute(
        EXPOSURE_SQL,
        {
            "agents": [a.name for a in agents],
            "doses": [a.dose for a in agents],
            "start_day": cfg.lymphodepletion.start_day,
            "end_day": cfg.lymphodepletion.end_day,
            "agent1": names[0],
            "agent2": names[1],
        },
    )
    con.execute(SUMMARY_SQL)
    return {t: con.execute(f"SELECT count(*) FROM analysis.{t}").fetchall()[0][0] for t in ("exposure", "exposure_summary")}
