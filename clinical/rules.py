"""Cross-form and protocol rules, as SQL over the staged forms and the analysis tables.

Each rule is a query returning the failing records (SUBJID, DETAIL). ERROR rules block every report
that depends on the guarded table; WARN rules let the run finish and become data queries.
Parameters come from the study configuration, never pasted into the SQL text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import duckdb

from clinical.crf import FORMS
from clinical.study import StudyConfig


@dataclass(frozen=True)
class Rule:
    id: str
    severity: Literal["ERROR", "WARN"]
    form: str
    description: str
    sql: str


_ALL_SUBJECTS = " UNION ".join(
    f"SELECT '{f.id}' AS form, SUBJID FROM stage.{f.id}" for f in FORMS if f.id != "dm"
)

RULES: tuple[Rule, ...] = (
    Rule(
        "XF-SUBJ-NOT-IN-DM",
        "ERROR",
        "dm",
        "Every participant in any form exists in demographics.",
        f"SELECT x.SUBJID, 'in form ' || x.form || ' but not in demographics' AS DETAIL "
        f"FROM ({_ALL_SUBJECTS}) x ANTI JOIN stage.dm d USING (SUBJID)",
    ),
    Rule(
        "XF-INF-NOT-ENROLLED",
        "ERROR",
        "inf",
        "An infused participant is enrolled with an assigned dose level.",
        "SELECT i.SUBJID, 'infused but not enrolled with a dose level' AS DETAIL FROM stage.inf i "
        "LEFT JOIN stage.enrol e USING (SUBJID) WHERE e.ENRLYN IS DISTINCT FROM 'Y' OR e.DOSELVL IS NULL",
    ),
    Rule(
        "XF-CHRONOLOGY",
        "WARN",
        "inf",
        "Consent <= leukapheresis <= lymphodepletion start <= end < infusion.",
        """SELECT SUBJID, concat_ws('; ',
              CASE WHEN APHDT < RFICDT THEN 'leukapheresis ' || APHDT || ' before consent ' || RFICDT END,
              CASE WHEN LDSTDT < APHDT THEN 'lymphodepletion ' || LDSTDT || ' before leukapheresis ' || APHDT END,
              CASE WHEN TRTSDT <= LDENDT THEN 'infusion ' || TRTSDT || ' not after lymphodepletion end ' || LDENDT END
           ) AS DETAIL
           FROM analysis.adsl WHERE APHDT < RFICDT OR LDSTDT < APHDT OR TRTSDT <= LDENDT""",
    ),
    Rule(
        "XF-LD-DAYS",
        "WARN",
        "ld",
        "Lymphodepletion is given on the protocol days before infusion (days -5 to -3 for IM83).",
        "SELECT l.SUBJID, l.EXTRT || ' on day ' || (l.EXSTDAT - i.EXSTDAT) AS DETAIL "
        "FROM stage.ld l JOIN stage.inf i USING (SUBJID) "
        "WHERE (l.EXSTDAT - i.EXSTDAT) NOT BETWEEN $ld_start AND $ld_end",
    ),
    Rule(
        "XF-DOSE-TOLERANCE",
        "WARN",
        "inf",
        "Cells infused lie within the configured tolerance of the dose level.",
        "SELECT SUBJID, 'cells infused ' || CELLS || ' deviate ' || round(100 * DOSEDEV, 1) || '% from ' || DOSEA "
        "AS DETAIL FROM analysis.adsl WHERE SAFFL = 'Y' AND abs(DOSEDEV) > $dose_tolerance",
    ),
    Rule(
        "XF-DLT-OUTSIDE-WINDOW",
        "WARN",
        "ae",
        "The investigator flags DLTs only inside the DLT window.",
        "SELECT SUBJID, 'AE ' || AESPID || ' flagged DLT on protocol day ' || coalesce(ADY::VARCHAR, 'unknown') "
        "AS DETAIL FROM analysis.adae WHERE AEDLT = 'Y' AND DLTFL = 'N'",
    ),
    Rule(
        "XF-G5-NO-DEATH",
        "WARN",
        "ae",
        "A grade-5 AE has a death record.",
        "SELECT a.SUBJID, 'AE ' || a.AESPID || ' is grade 5 but no date of death is recorded' AS DETAIL "
        "FROM analysis.adae a JOIN analysis.adsl s USING (SUBJID) WHERE a.ATOXGR = 5 AND s.DTHDT IS NULL",
    ),
    Rule(
        "XF-FATAL-NOT-SERIOUS",
        "WARN",
        "ae",
        "A fatal AE is serious.",
        "SELECT SUBJID, 'AE ' || AESPID || ' has outcome FATAL but is not serious' AS DETAIL "
        "FROM analysis.adae WHERE AEOUT = 'FATAL' AND AESER <> 'Y'",
    ),
    Rule(
        "XF-AE-NOT-CODED",
        "WARN",
        "ae",
        "Every AE is MedDRA-coded (preferred term and system organ class).",
        "SELECT SUBJID, 'AE ' || AESPID || ' (' || AETERM || ') is not MedDRA-coded' AS DETAIL "
        "FROM analysis.adae WHERE AEDECOD IS NULL OR AEBODSYS IS NULL",
    ),
)


def rule_parameters(cfg: StudyConfig) -> dict[str, object]:
    return {
        "ld_start": cfg.lymphodepletion.start_day,
        "ld_end": cfg.lymphodepletion.end_day,
        "dose_tolerance": cfg.escalation.dose_tolerance,
    }


def run_rule(con: duckdb.DuckDBPyConnection, rule: Rule, cfg: StudyConfig) -> list[tuple[str, str]]:
    """The failing records of one rule, as (SUBJID, DETAIL), sorted."""
    params = {k: v for k, v in rule_parameters(cfg).items() if f"${k}" in rule.sql}
    return con.execute(f"SELECT SUBJID, DETAIL FROM ({rule.sql}) ORDER BY SUBJID, DETAIL", params).fetchall()
