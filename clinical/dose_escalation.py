"""Dose-escalation status tables from ``analysis.adsl`` through the 3+3 engine.

  analysis.dose_escalation      one row per dose level: enrolled, infused, DLT-evaluable with complete
                                data, DLTs, pending windows and when they close, and a status line.
  analysis.escalation_decision  one row: the rule variant, the next dose, continue or stop, the MTD,
                                whether the data are mature, and the engine's reason. DETERMINED is
                                FALSE when the treated participants are no 3+3 path the engine can
                                decide on (e.g. more than 6 at a dose, as in a benchmark export):
                                NEXT_DOSE, CONTINUE_TRIAL and MTD are then NULL and REASON says why.
                                While DLT windows are open (MATURE FALSE), NODLT_* and DLT_* are
                                the decision (next dose, continue, MTD) if every open window closes
                                without a DLT, and if the first of them (infusion order) has one.

Participants count at their assigned dose level (DOSEP). Infused participants who are not
DLT-evaluable for a reason other than an open window are excluded and replaced, as the SAP's 3+3
counts evaluable participants only.
"""

from __future__ import annotations

import duckdb
import polars as pl

from clinical.escalation import ParticipantOutcome, decide_from_participants, pending_branches
from clinical.study import StudyConfig


def build_escalation(con: duckdb.DuckDBPyConnection, cfg: StudyConfig) -> dict[str, object]:
    infused = con.sql(
        """SELECT SUBJID, DOSEPN, DLTEVLFL, WINOPFL, DLTFL, DLTWEND,
                  row_number() OVER (ORDER BY TRTSDT, SUBJID) AS ORD
           FROM analysis.adsl WHERE SAFFL = 'Y' AND DOSEPN IS NOT NULL ORDER BY ORD"""
    ).pl()
    # The 3+3 is a sequential rule over a handful of participants per cohort: records, not a frame.
    records = [
        ParticipantOutcome(
            dose=r["DOSEPN"],
            evaluable=r["DLTEVLFL"] == "Y" or r["WINOPFL"] == "Y",
            dlt=r["DLTFL"] == "Y",
            window_open=r["WINOPFL"] == "Y",
            window_closes=r["DLTWEND"],
            order=r["ORD"],
        )
        for r in infused.iter_rows(named=True)
    ]
    # Bad input (dose out of range, unsupported cohort size) raises EscalationError; a path beyond the
    # 3+3 rules (> 6 at a dose) comes back with status.determined False.
    rules = {
        "num_doses": len(cfg.dose_levels),
        "variant": cfg.escalation.variant,
        "require_six_at_mtd": cfg.escalation.require_six_at_mtd,
        "cohort_size": cfg.escalation.cohort_size,
        "stop_at_two_dlts": cfg.escalation.stop_at_two_dlts,
    }
    status = decide_from_participants(records, **rules)
    # While windows are open: the decision if they all close without a DLT, and if the first has one.
    no_dlt, one_dlt = pending_branches(records, **rules) if status.determined else (None, None)
    determined = status.determined
    ids = cfg.dose_ids
    engine = pl.DataFrame(
        {
            "DOSEN": [d.dose for d in status.doses],
            "EVALUABLE": [d.treated for d in status.doses],
            "DLTS": [d.dlt for d in status.doses],
            "PENDING": [d.pending for d in status.doses],
            "EXCLUDED": [d.excluded for d in status.doses],
            "WINDOW_CLOSES": [d.window_closes_last for d in status.doses],
        },
        schema_overrides={"WINDOW_CLOSES": pl.Date},
    )
    con.register("engine_status", engine)
    con.execute(
        """CREATE OR REPLACE TABLE analysis.dose_escalation AS
           WITH counts AS (
             SELECT d.DOSE, d.DOSEN, d.DOSELBL, d.CELLS,
                    count(s.SUBJID) FILTER (WHERE s.ENRLFL = 'Y') AS ENROLLED,
                    count(s.SUBJID) FILTER (WHERE s.SAFFL = 'Y') AS INFUSED
             FROM analysis.dose_levels d LEFT JOIN analysis.adsl s ON s.DOSEP = d.DOSE
             GROUP BY ALL)
           SELECT c.*, e.EVALUABLE, e.DLTS, e.PENDING, e.EXCLUDED, e.WINDOW_CLOSES,
                  CASE WHEN c.INFUSED = 0 THEN 'Not opened'
                       WHEN e.PENDING > 0 THEN e.DLTS || '/' || e.EVALUABLE || ' DLT; ' || e.PENDING
                            || ' window(s) open until ' || strftime(e.WINDOW_CLOSES, '%Y-%m-%d')
                       ELSE e.DLTS || '/' || e.EVALUABLE || ' DLT' END AS STATUS
           FROM counts c JOIN engine_status e ON e.DOSEN = c.DOSEN
           ORDER BY c.DOSEN"""
    )
    con.unregister("engine_status")
    decision = status.decision
    con.execute(
        """CREATE OR REPLACE TABLE analysis.escalation_decision (
             VARIANT VARCHAR, OUTCOMES VARCHAR, NEXT_DOSE VARCHAR, CONTINUE_TRIAL BOOLEAN, MTD VARCHAR,
             MATURE BOOLEAN, REASON VARCHAR, DETERMINED BOOLEAN,
             NODLT_NEXT_DOSE VARCHAR, NODLT_CONTINUE BOOLEAN, NODLT_MTD VARCHAR,
             DLT_NEXT_DOSE VARCHAR, DLT_CONTINUE BOOLEAN, DLT_MTD VARCHAR)"""
    )

    def branch(d) -> list:
        if d is None:
            return [None, None, None]
        return [ids[d.next_dose - 1] if d.next_dose else None, d.continue_trial, ids[d.mtd - 1] if d.mtd else None]

    con.execute(
        "INSERT INTO analysis.escalation_decision VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            cfg.escalation.variant,
            status.outcomes,
            ids[decision.next_dose - 1] if decision.next_dose else None,
            decision.continue_trial if determined else None,
            ids[decision.mtd - 1] if decision.mtd else None,
            status.mature,
            decision.reason,
            determined,
            *branch(no_dlt),
            *branch(one_dlt),
        ],
    )
    outcomes = status.outcomes if len(status.outcomes) <= 200 else f"{status.outcomes[:200]}... ({len(status.cohorts)} cohorts)"
    return {"outcomes": outcomes, **decision.to_json_dict(), "mature": status.mature, "determined": determined}
