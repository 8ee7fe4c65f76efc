"""Cross-form and protocol rules, as set-based SQL over the staged forms and the analysis tables.

Each rule (:class:`Rule`) has an id (``XF-...``), a severity, the CRF form a data manager queries,
the analysis asset it guards (its Dagster asset check runs on that asset), a description and one
SELECT returning the failing records as three columns:

  SUBJID      the participant
  RECORD_KEY  which record of the participant, by its form key without SUBJID ("AESPID=3",
              "EXTRT=FLUDARABINE, EXSTDAT=2024-07-17", "CRIT=ANC"); '' for a participant-level
              record. Never a line number or a value that changes when the problem is fixed (where
              the form key holds the value that gets corrected, another key is used: XF-LD-DAYS is
              per agent, XF-PC-NO-TIMEPOINT per sample date): the stable query id is built from
              rule id + SUBJID + RECORD_KEY (clinical/queries.py).
  DETAIL      what is wrong, with the values, for the data manager.

ERROR rules block every report that depends on the guarded table; WARN rules let the run finish
and become data queries. Study-specific values (windows, doses, tolerances, visits) are query
parameters (``$name``) taken from the study configuration by :func:`rule_parameters`, never pasted
into the SQL text; the only names generated into SQL are CRF contract identifiers (form and field
names from clinical/crf.py).

Partial dates (CDASH ``YYYY-MM`` / ``YYYY``) are compared only when the order is certain: the
macros ``pdate_lo`` / ``pdate_hi`` give the earliest / latest date a partial date can stand for,
so "AE onset before consent" means even the latest possible onset lies before consent.

The rule catalogue ``docs/validation-rules.md`` is generated from this module, the ingest rules
and the Great Expectations suites (:func:`render_catalogue`; ``python -m clinical.rules`` rewrites
it); tests/test_validation_catalogue.py fails when code and catalogue drift apart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import duckdb

from clinical.adsl import FUNNEL_FORMS, collected_params, partial_range_sql
from clinical.crf import FORMS, Form, form
from clinical.expectation_runner import REPO_ROOT, form_suite
from clinical.grading import range_unusable_sql
from clinical.study import StudyConfig

CATALOGUE_PATH = Path("docs") / "validation-rules.md"
RULE_COLUMNS = ("SUBJID", "RECORD_KEY", "DETAIL")

Severity = Literal["ERROR", "WARN"]


@dataclass(frozen=True)
class Rule:
    id: str
    severity: Severity
    form: str  # the CRF form the query is raised on
    asset: str  # the guarded asset, "analysis/adsl"
    description: str
    sql: str  # SELECT SUBJID, RECORD_KEY, DETAIL of the failing records

    @property
    def asset_path(self) -> tuple[str, ...]:
        return tuple(self.asset.split("/"))


# Earliest / latest date a (possibly partial) CDASH date text stands for (YYYY-MM-DD, YYYY-MM, YYYY:
# the range ADSL's imputation uses, clinical.adsl.partial_range_sql with highest 'M'); NULL when not a date.
_PDATE_RANGE = partial_range_sql("s::VARCHAR", "'M'")
RULE_MACROS = f"""
CREATE OR REPLACE TEMP MACRO pdate_lo(s) AS ({_PDATE_RANGE})[1];
CREATE OR REPLACE TEMP MACRO pdate_hi(s) AS ({_PDATE_RANGE})[2];
"""


def record_key_sql(f: Form, fields: tuple[str, ...] | None = None, alias: str = "") -> str:
    """SQL for the RECORD_KEY of a row of ``f``: its key fields other than SUBJID, "NAME=value, ..."."""
    names = [k for k in (fields if fields is not None else f.key) if k != "SUBJID"]
    if not names:
        return "''"
    return "concat_ws(', ', " + ", ".join(f"'{k}=' || coalesce({alias}\"{k}\"::VARCHAR, '')" for k in names) + ")"


_ALL_SUBJECTS = " UNION ".join(
    f"SELECT '{f.id}' AS form, SUBJID FROM stage.{f.id}" for f in FORMS if f.id != "dm"
)

# "Nothing after death": every date field of every form, except the date of death itself and the
# product release decision (a product may be released after the participant died). Lab results
# are one record per visit (all tests of a visit share the sample date).
_AFTER_DEATH_EXCLUDED = {("ds", "DTHDAT"), ("mfg", "RELDAT")}
_AFTER_DEATH_KEYS = {"lb": ("VISIT",)}


def _after_death_sql() -> str:
    parts = []
    for f in FORMS:
        for fld in f.loaded_fields:
            if fld.type != "date" or (f.id, fld.name) in _AFTER_DEATH_EXCLUDED:
                continue
            rk = record_key_sql(f, _AFTER_DEATH_KEYS.get(f.id))
            parts.append(
                f"SELECT SUBJID, '{f.id}' AS form, {rk} AS rk, '{fld.name}' AS field, "
                f"\"{fld.name}\"::VARCHAR AS d FROM stage.{f.id}"
            )
    return f"""SELECT x.SUBJID, trim(x.form || ' ' || x.rk) AS RECORD_KEY,
         x.form || coalesce(' ' || nullif(x.rk, ''), '') || ': '
           || string_agg(DISTINCT x.field || ' ' || x.d, ', ' ORDER BY x.field || ' ' || x.d)
           || ' after death on ' || any_value(ds.DTHDAT) AS DETAIL
       FROM ({' UNION ALL '.join(parts)}) x JOIN stage.ds ds USING (SUBJID)
       WHERE ds.DTHDAT IS NOT NULL AND pdate_lo(x.d) > ds.DTHDAT
       GROUP BY x.SUBJID, x.form, x.rk"""


_AE_KEY = record_key_sql(form("ae"), alias="a.")
_LD_KEY = record_key_sql(form("ld"), alias="l.")
_LB_KEY = record_key_sql(form("lb"), alias="l.")
_PC_KEY = record_key_sql(form("pc"), alias="p.")

RULES: tuple[Rule, ...] = (
    # ---- participants and enrolment (guard ADSL: every report depends on it)
    Rule(
        "XF-SUBJ-NOT-IN-DM",
        "ERROR",
        "dm",
        "analysis/adsl",
        "Every participant in any form exists in demographics (a participant whose demographics row is "
        "quarantined is missing from every analysis table, so this blocks too).",
        f"SELECT x.SUBJID, x.form AS RECORD_KEY, 'in form ' || x.form || ' but not in demographics'"
        f" || CASE WHEN x.SUBJID IN (SELECT SUBJID FROM raw.dm WHERE SUBJID IS NOT NULL)"
        f" THEN ' (its demographics row is quarantined, see raw.quarantine)' ELSE '' END AS DETAIL "
        f"FROM ({_ALL_SUBJECTS}) x ANTI JOIN stage.dm d USING (SUBJID)",
    ),
    Rule(
        "XF-INF-NOT-ENROLLED",
        "ERROR",
        "inf",
        "analysis/adsl",
        "An infused participant is enrolled (ENRLYN = Y) with an assigned dose level.",
        "SELECT i.SUBJID, '' AS RECORD_KEY, 'infused on ' || i.EXSTDAT || ' but not enrolled with a dose level' AS DETAIL "
        "FROM stage.inf i LEFT JOIN stage.enrol e USING (SUBJID) "
        "WHERE e.ENRLYN IS DISTINCT FROM 'Y' OR e.DOSELVL IS NULL",
    ),
    Rule(
        "XF-ENROL-NO-DOSE",
        "WARN",
        "enrol",
        "analysis/adsl",
        "An enrolled participant (ENRLYN = Y) has an assigned dose level (DOSELVL): without one the participant "
        "is not counted as enrolled (ADSL ENRLFL) nor in any dose level (an infused one also fails "
        "XF-INF-NOT-ENROLLED).",
        "SELECT e.SUBJID, '' AS RECORD_KEY, 'enrolled (ENRLYN = Y'"
        " || coalesce(', enrolment date ' || e.ENRLDAT, ', no enrolment date') || ', consent ' || e.RFICDAT"
        " || ') without an assigned dose level (DOSELVL blank)' AS DETAIL "
        "FROM stage.enrol e WHERE e.ENRLYN = 'Y' AND nullif(trim(e.DOSELVL), '') IS NULL",
    ),
    Rule(
        "XF-INF-NO-PRIOR-STEP",
        "WARN",
        "inf",
        "analysis/adsl",
        "An infused participant has a leukapheresis done (apher PRYN = Y), a product release with status "
        "RELEASED or OUT OF SPECIFICATION (mfg RELSTAT) and a lymphodepletion record (ld). ADSL keeps an "
        "infused participant in the flow and the safety population without them, so this query is what asks "
        "for the record. A form the study does not collect (configuration forms:) is not required, as in ADSL.",
        # $<form>_collected: as ADSL's population flags (clinical.adsl.build_adsl).
        """SELECT SUBJID, '' AS RECORD_KEY,
              'infused on ' || EXSTDAT || ' but ' || MISSING AS DETAIL
           FROM (
             SELECT i.SUBJID, i.EXSTDAT, concat_ws('; ',
                 CASE WHEN NOT $apher_collected THEN NULL
                      WHEN a.SUBJID IS NULL THEN 'no leukapheresis record (apher)'
                      WHEN a.PRYN IS DISTINCT FROM 'Y'
                      THEN 'leukapheresis not done (apher PRYN = ' || coalesce(a.PRYN, 'blank') || ')' END,
                 CASE WHEN NOT $mfg_collected THEN NULL
                      WHEN m.SUBJID IS NULL THEN 'no product release record (mfg)'
                      WHEN m.RELSTAT IS NULL OR m.RELSTAT NOT IN ('RELEASED', 'OUT OF SPECIFICATION')
                      THEN 'product release status ' || coalesce(m.RELSTAT, 'blank')
                           || coalesce(' on ' || m.RELDAT, '') || ' (mfg RELSTAT, lot ' || coalesce(m.LOTID, 'blank')
                           || '), not RELEASED or OUT OF SPECIFICATION' END,
                 CASE WHEN NOT $ld_collected THEN NULL
                      WHEN NOT EXISTS (SELECT 1 FROM stage.ld l WHERE l.SUBJID = i.SUBJID)
                      THEN 'no lymphodepletion record (ld)' END) AS MISSING
             FROM stage.inf i
             LEFT JOIN stage.apher a USING (SUBJID)
             LEFT JOIN stage.mfg m USING (SUBJID)
             WHERE i.EXSTDAT IS NOT NULL)
           WHERE MISSING <> ''""",
    ),
    # ---- chronology of the treatment course
    Rule(
        "XF-CHRON-CONSENT-APHER",
        "WARN",
        "apher",
        "analysis/adsl",
        "Informed consent <= leukapheresis.",
        "SELECT a.SUBJID, '' AS RECORD_KEY, "
        "'leukapheresis ' || a.PRSTDAT || ' before informed consent ' || e.RFICDAT AS DETAIL "
        "FROM stage.apher a JOIN stage.enrol e USING (SUBJID) WHERE a.PRSTDAT < e.RFICDAT",
    ),
    Rule(
        "XF-CHRON-APHER-LD",
        "WARN",
        "ld",
        "analysis/adsl",
        "Leukapheresis <= lymphodepletion start (first administration day; start <= end holds by "
        "construction, the end being the last administration day).",
        "SELECT l.SUBJID, '' AS RECORD_KEY, "
        "'lymphodepletion start ' || min(l.EXSTDAT) || ' before leukapheresis ' || any_value(a.PRSTDAT) AS DETAIL "
        "FROM stage.ld l JOIN stage.apher a USING (SUBJID) "
        "GROUP BY l.SUBJID HAVING min(l.EXSTDAT) < any_value(a.PRSTDAT)",
    ),
    Rule(
        "XF-CHRON-LD-INF",
        "WARN",
        "inf",
        "analysis/adsl",
        "Lymphodepletion end (last administration day) < CAR-T infusion.",
        "SELECT i.SUBJID, '' AS RECORD_KEY, "
        "'infusion ' || i.EXSTDAT || ' not after lymphodepletion end ' || max(l.EXSTDAT) AS DETAIL "
        "FROM stage.inf i JOIN stage.ld l USING (SUBJID) "
        "GROUP BY i.SUBJID, i.EXSTDAT HAVING i.EXSTDAT <= max(l.EXSTDAT)",
    ),
    Rule(
        "XF-CHRON-INF-EOS",
        "WARN",
        "ds",
        "analysis/adsl",
        "CAR-T infusion <= end of study (ds DSSTDAT): an end of study before the infusion ends the "
        "participant's time on study (DLT window, follow-up) before it began.",
        "SELECT d.SUBJID, '' AS RECORD_KEY, "
        "'end of study ' || d.DSSTDAT || ' (' || coalesce(d.DSDECOD, 'no disposition') || ') before infusion ' "
        "|| i.EXSTDAT AS DETAIL "
        "FROM stage.ds d JOIN stage.inf i USING (SUBJID) WHERE d.DSSTDAT < i.EXSTDAT",
    ),
    Rule(
        "XF-DS-DEATH-DATE",
        "WARN",
        "ds",
        "analysis/adsl",
        "A disposition of death (DSDECOD = DEATH) has a date of death (DTHDAT), and a date of death is "
        "recorded only with the disposition DEATH. ADSL counts a death without its date with the end-of-study "
        "date (DTHDTSRC = DS.DSSTDAT); a date of death with another disposition gives a death date and an "
        "end-of-study status that disagree.",
        """SELECT d.SUBJID, '' AS RECORD_KEY,
              CASE WHEN d.DSDECOD = 'DEATH'
                   THEN 'disposition DEATH (end of study ' || coalesce(d.DSSTDAT::VARCHAR, 'blank')
                        || ') without a date of death (DTHDAT)'
                   ELSE 'date of death ' || d.DTHDAT || ' recorded with disposition '
                        || coalesce(d.DSDECOD, 'blank') || ' (end of study ' || coalesce(d.DSSTDAT::VARCHAR, 'blank')
                        || '), not DEATH' END AS DETAIL
           FROM stage.ds d
           WHERE (d.DSDECOD = 'DEATH' AND d.DTHDAT IS NULL)
              OR (d.DTHDAT IS NOT NULL AND d.DSDECOD IS DISTINCT FROM 'DEATH')""",
    ),
    Rule(
        "XF-CHRON-AFTER-DEATH",
        "WARN",
        "ds",
        "analysis/adsl",
        "Nothing is dated after death: no date of any form (other than the product release decision) "
        "lies after the date of death; a partial date only when even its earliest possible day does.",
        _after_death_sql(),
    ),
    # ---- protocol: lymphodepletion and cell dose
    Rule(
        "XF-LD-DAYS",
        "WARN",
        "ld",
        "analysis/adsl",
        "Lymphodepletion is given on the protocol days before infusion "
        "(lymphodepletion.start_day to end_day, days -5 to -3 for IM83; day 0 = infusion).",
        # One query per participant and agent (the date is what gets corrected, so it is not the key).
        "SELECT l.SUBJID, 'EXTRT=' || l.EXTRT AS RECORD_KEY, l.EXTRT || ' given on day(s) outside '"
        " || $ld_start || ' to ' || $ld_end || ': ' || string_agg(l.EXSTDAT || ' (day ' || (l.EXSTDAT - i.EXSTDAT) || ')', "
        "', ' ORDER BY l.EXSTDAT) AS DETAIL "
        "FROM stage.ld l JOIN stage.inf i USING (SUBJID) "
        "WHERE (l.EXSTDAT - i.EXSTDAT) NOT BETWEEN $ld_start AND $ld_end GROUP BY l.SUBJID, l.EXTRT",
    ),
    Rule(
        "XF-LD-DOSE",
        "WARN",
        "ld",
        "analysis/adsl",
        "Each lymphodepletion dose per m2 lies within lymphodepletion.dose_tolerance of the protocol dose "
        "of its agent, in the protocol unit.",
        f"""SELECT l.SUBJID, {_LD_KEY} AS RECORD_KEY,
              l.EXTRT || ' ' || l.EXDOSE || ' ' || coalesce(l.EXDOSU, '(no unit)') || ' on ' || l.EXSTDAT
              || ': protocol ' || g.DOSE || ' ' || g.UNIT || ' +/- ' || round(100 * $ld_tolerance, 1) || '%' AS DETAIL
           FROM stage.ld l
           JOIN (SELECT unnest($ld_agents) AS AGENT, unnest($ld_doses) AS DOSE, unnest($ld_units) AS UNIT) g
             ON g.AGENT = l.EXTRT
           WHERE abs(l.EXDOSE - g.DOSE) > $ld_tolerance * g.DOSE
              OR lower(trim(l.EXDOSU)) IS DISTINCT FROM lower(g.UNIT)""",
    ),
    Rule(
        "XF-DOSE-TOLERANCE",
        "WARN",
        "inf",
        "analysis/adsl",
        "Cells infused lie within escalation.dose_tolerance of the participant's assigned dose level.",
        """SELECT i.SUBJID, '' AS RECORD_KEY,
              'cells infused ' || i.EXDOSE || ' deviate ' || round(100 * (i.EXDOSE / g.CELLS - 1), 1)
              || '% from assigned ' || e.DOSELVL || ' (' || g.CELLS || ' cells; tolerance '
              || round(100 * $dose_tolerance, 1) || '%)' AS DETAIL
           FROM stage.inf i JOIN stage.enrol e USING (SUBJID)
           JOIN (SELECT unnest($dose_ids) AS DOSE, unnest($dose_cells) AS CELLS) g ON g.DOSE = e.DOSELVL
           WHERE abs(i.EXDOSE - g.CELLS) > $dose_tolerance * g.CELLS""",
    ),
    # ---- adverse events (guard ADAE)
    Rule(
        "XF-CHRON-AE-CONSENT",
        "WARN",
        "ae",
        "analysis/adae",
        "AE onset >= informed consent (AEs are collected from consent).",
        f"SELECT a.SUBJID, {_AE_KEY} AS RECORD_KEY, "
        "'AE ' || a.AESPID || ' (' || a.AETERM || ') onset ' || a.AESTDAT || ' before informed consent ' || e.RFICDAT "
        "AS DETAIL FROM stage.ae a JOIN stage.enrol e USING (SUBJID) WHERE pdate_hi(a.AESTDAT) < e.RFICDAT",
    ),
    Rule(
        "XF-CHRON-AE-END",
        "WARN",
        "ae",
        "analysis/adae",
        "AE end >= AE onset.",
        f"SELECT a.SUBJID, {_AE_KEY} AS RECORD_KEY, "
        "'AE ' || a.AESPID || ' (' || a.AETERM || ') ends ' || a.AEENDAT || ' before its onset ' || a.AESTDAT "
        "AS DETAIL FROM stage.ae a WHERE pdate_hi(a.AEENDAT) < pdate_lo(a.AESTDAT)",
    ),
    Rule(
        "XF-DLT-OUTSIDE-WINDOW",
        "WARN",
        "ae",
        "analysis/adae",
        "The investigator flags DLTs (AEDLT = Y) only for AEs with onset inside the DLT window "
        "(day 0 to escalation.dlt_window_days).",
        "SELECT a.SUBJID, " + _AE_KEY + " AS RECORD_KEY, "
        "'AE ' || a.AESPID || ' flagged DLT with onset on protocol day ' || coalesce(a.ADY::VARCHAR, 'unknown') "
        "|| ', outside the DLT window' AS DETAIL FROM analysis.adae a WHERE a.AEDLT = 'Y' AND a.DLTFL = 'N'",
    ),
    Rule(
        "XF-G5-NO-DEATH",
        "WARN",
        "ae",
        "analysis/adae",
        "A grade-5 AE has a death record (ds DTHDAT or DSDECOD DEATH).",
        "SELECT a.SUBJID, " + _AE_KEY + " AS RECORD_KEY, "
        "'AE ' || a.AESPID || ' (' || a.AETERM || ') is grade 5 but no death is recorded' AS DETAIL "
        "FROM stage.ae a LEFT JOIN stage.ds d USING (SUBJID) "
        "WHERE a.AETOXGR = 5 AND d.DTHDAT IS NULL AND d.DSDECOD IS DISTINCT FROM 'DEATH'",
    ),
    Rule(
        "XF-DEATH-NO-G5",
        "WARN",
        "ds",
        "analysis/adae",
        "A death record has a grade-5 AE, unless the cause of death is one of "
        "safety.death_causes_not_ae (default: disease progression).",
        """SELECT d.SUBJID, '' AS RECORD_KEY,
              'death on ' || coalesce(d.DTHDAT::VARCHAR, d.DSSTDAT::VARCHAR) || ' (cause: '
              || coalesce(d.DTHCAUS, 'not recorded') || ') without a grade-5 AE' AS DETAIL
           FROM stage.ds d
           WHERE (d.DTHDAT IS NOT NULL OR d.DSDECOD = 'DEATH')
             AND NOT list_contains($death_causes_not_ae, upper(trim(coalesce(d.DTHCAUS, ''))))
             AND NOT EXISTS (SELECT 1 FROM stage.ae a WHERE a.SUBJID = d.SUBJID AND a.AETOXGR = 5)""",
    ),
    Rule(
        "XF-FATAL-NOT-SERIOUS",
        "WARN",
        "ae",
        "analysis/adae",
        "A fatal AE (outcome FATAL) is serious.",
        "SELECT a.SUBJID, " + _AE_KEY + " AS RECORD_KEY, "
        "'AE ' || a.AESPID || ' (' || a.AETERM || ') has outcome FATAL but is not serious' AS DETAIL "
        "FROM stage.ae a WHERE a.AEOUT = 'FATAL' AND a.AESER IS DISTINCT FROM 'Y'",
    ),
    Rule(
        "XF-AE-NOT-CODED",
        "WARN",
        "ae",
        "analysis/adae",
        "Every AE is MedDRA-coded (preferred term and system organ class).",
        "SELECT a.SUBJID, " + _AE_KEY + " AS RECORD_KEY, "
        "'AE ' || a.AESPID || ' (' || a.AETERM || ') is not MedDRA-coded: missing '"
        " || concat_ws(' and ', CASE WHEN a.AEDECOD IS NULL THEN 'AEDECOD' END, "
        "CASE WHEN a.AEBODSYS IS NULL THEN 'AEBODSYS' END) AS DETAIL "
        "FROM stage.ae a WHERE a.AEDECOD IS NULL OR a.AEBODSYS IS NULL",
    ),
    Rule(
        "XF-AE-NO-CAUSALITY",
        "WARN",
        "ae",
        "analysis/adae",
        "Every AE has the investigator's causality; a missing one is analysed as related until answered.",
        "SELECT a.SUBJID, " + _AE_KEY + " AS RECORD_KEY, "
        "'AE ' || a.AESPID || ' (' || a.AETERM || ') has no relationship to IM83 recorded' AS DETAIL "
        "FROM stage.ae a WHERE a.AEREL IS NULL",
    ),
    # ---- CRS and ICANS (guard the re-derived grades)
    Rule(
        "XF-CRS-GRADE",
        "WARN",
        "ae",
        "analysis/crs_icans",
        "The investigator's CRS grade equals the ASTCT 2019 grade re-derived from the recorded items "
        "(fever, hypotension, hypoxia, tocilizumab/steroids).",
        "SELECT c.SUBJID, 'AESPID=' || c.AESPID AS RECORD_KEY, "
        "'CRS AE ' || c.AESPID || ' graded ' || c.ATOXGR || ' by the investigator, ' || c.ASTCTGR "
        "|| ' by ASTCT from the recorded items' AS DETAIL "
        "FROM analysis.crs_icans c WHERE c.AECAT = 'CRS' AND c.AGREE = 'N'",
    ),
    Rule(
        "XF-ICANS-GRADE",
        "WARN",
        "ae",
        "analysis/crs_icans",
        "The investigator's ICANS grade equals the ASTCT 2019 grade re-derived from the recorded items "
        "(ICE score, consciousness, seizure, motor weakness, cerebral oedema).",
        "SELECT c.SUBJID, 'AESPID=' || c.AESPID AS RECORD_KEY, "
        "'ICANS AE ' || c.AESPID || ' graded ' || c.ATOXGR || ' by the investigator, ' || c.ASTCTGR "
        "|| ' by ASTCT from the recorded items' AS DETAIL "
        "FROM analysis.crs_icans c WHERE c.AECAT = 'ICANS' AND c.AGREE = 'N'",
    ),
    # ---- labs (guard ADLB: CTCAE grades and x ULN use the lab's own normal range)
    Rule(
        "XF-LB-RANGE-ORDER",
        "WARN",
        "lb",
        "analysis/adlb",
        "A lab normal range can be one: its lower limit (LBORNRLO) is not above its upper limit (LBORNRHI) "
        "and the upper limit is above 0. ADLB grades no result against a range that cannot be one (no "
        "CTCAE grade until the range is corrected).",
        # The grader's own condition (clinical.grading.range_unusable_sql): every range it ignores is queried.
        f"""SELECT l.SUBJID, {_LB_KEY} AS RECORD_KEY,
              l.LBTESTCD || ' at ' || l.VISIT || ' (sample ' || coalesce(l.LBDAT::VARCHAR, 'undated') || ', result '
              || coalesce(l.LBORRES::VARCHAR, 'blank') || coalesce(' ' || l.LBORRESU, '') || '): normal range '
              || CASE WHEN l.LBORNRLO::DOUBLE > l.LBORNRHI::DOUBLE
                      THEN 'lower limit ' || l.LBORNRLO || ' above upper limit ' || l.LBORNRHI
                      ELSE 'upper limit ' || l.LBORNRHI || ' not above 0 (lower limit '
                           || coalesce(l.LBORNRLO::VARCHAR, 'blank') || ')' END AS DETAIL
           FROM stage.lb l
           WHERE {range_unusable_sql("l.LBORNRLO", "l.LBORNRHI")}""",
    ),
    Rule(
        "XF-LB-BASELINE-LATE",
        "WARN",
        "lb",
        "analysis/adlb",
        "The baseline visit's lab sample is taken before lymphodepletion starts (or, without one, before the "
        "infusion). ADLB takes no baseline from a later sample, so the grades that read a baseline and the "
        "change from baseline wait for the date to be corrected.",
        # One query per sample date (every test of the sample shares it), not one per test.
        """SELECT l.SUBJID, 'VISIT=' || l.VISIT || ', LBDAT=' || l.LBDAT AS RECORD_KEY,
              l.VISIT || ' lab sample (' || count(*) || ' test(s)) dated ' || l.LBDAT || ', on or after the start of '
              || CASE WHEN ld.LDSTDT IS NOT NULL THEN 'lymphodepletion ' || ld.LDSTDT ELSE 'the infusion ' || i.EXSTDAT END
              AS DETAIL
           FROM stage.lb l
           LEFT JOIN (SELECT SUBJID, min(EXSTDAT) AS LDSTDT FROM stage.ld GROUP BY SUBJID) ld USING (SUBJID)
           LEFT JOIN stage.inf i USING (SUBJID)
           WHERE l.VISIT = $baseline_visit AND l.LBDAT >= coalesce(ld.LDSTDT, i.EXSTDAT)
           GROUP BY l.SUBJID, l.VISIT, l.LBDAT, ld.LDSTDT, i.EXSTDAT""",
    ),
    # ---- PK
    Rule(
        "XF-PC-NO-TIMEPOINT",
        "WARN",
        "pc",
        "analysis/pharmacokinetics",
        "A PK sample taken after the infusion day carries a post-infusion nominal time point "
        "(a visit with a protocol day >= 0).",
        # Keyed by the sample date: the time point is what gets corrected.
        """SELECT p.SUBJID, 'PCDAT=' || p.PCDAT AS RECORD_KEY,
              'PK sample of ' || p.PCDAT || ' (day ' || (p.PCDAT - i.EXSTDAT) || ') has time point '
              || coalesce(p.PCTPT, 'none') || ', not a post-infusion time point' AS DETAIL
           FROM stage.pc p JOIN stage.inf i USING (SUBJID)
           LEFT JOIN (SELECT unnest($visit_ids) AS VISIT, unnest($visit_days) AS VISITDY) v ON v.VISIT = p.PCTPT
           WHERE p.PCDAT > i.EXSTDAT AND (v.VISITDY IS NULL OR v.VISITDY < 0)""",
    ),
    Rule(
        "XF-PC-BEFORE-INFUSION",
        "WARN",
        "pc",
        "analysis/pharmacokinetics",
        "A PK sample with a post-infusion nominal time point (a visit with a protocol day > 0) is not dated "
        "before the infusion day (the mirror of XF-PC-NO-TIMEPOINT): the analysis would take it as a "
        "pre-infusion level.",
        # Keyed by the time point (the form key): the date is what is most likely corrected.
        f"""SELECT p.SUBJID, {_PC_KEY} AS RECORD_KEY,
              'PK sample ' || p.PCTPT || ' (protocol day ' || v.VISITDY || ') dated ' || p.PCDAT
              || ', before infusion ' || i.EXSTDAT || ' (day ' || (p.PCDAT - i.EXSTDAT) || ')' AS DETAIL
           FROM stage.pc p JOIN stage.inf i USING (SUBJID)
           JOIN (SELECT unnest($visit_ids) AS VISIT, unnest($visit_days) AS VISITDY) v ON v.VISIT = p.PCTPT
           WHERE p.PCDAT < i.EXSTDAT AND v.VISITDY > 0""",
    ),
    Rule(
        "XF-PC-SAME-DAY",
        "WARN",
        "pc",
        "analysis/pharmacokinetics",
        "An infused participant has at most one PK sample with a result per NCA time (analysis.adpc NCATIME, "
        "the day from infusion): the NCA cannot analyse two levels at one time, so that participant's "
        "PK parameters are not derived (NULL) until the sample dates are corrected.",
        # Samples at one NCATIME share their date (NCATIME is ADY, or 0 for the last pre-infusion date):
        # keyed by that date; the time points listed are the records to check.
        """SELECT SUBJID, 'PCDAT=' || min(PCDAT) AS RECORD_KEY,
              'PK samples ' || string_agg(coalesce(PCTPT, '(no time point)'), ', ' ORDER BY PCTPT)
              || ' share the date ' || min(PCDAT) || ' (day ' || min(ADY) || ', NCA time ' || NCATIME
              || '): the NCA takes one sample per day, so no PK parameters are derived for the participant' AS DETAIL
           FROM analysis.adpc
           WHERE NCATIME IS NOT NULL AND AVAL IS NOT NULL
           GROUP BY SUBJID, NCATIME HAVING count(*) > 1""",
    ),
    # ---- eligibility (guard analysis.eligibility, clinical/eligibility.py)
    Rule(
        "XF-ELIG-DEVIATION",
        "WARN",
        "ie",
        "analysis/eligibility",
        "An enrolled participant meets every numeric inclusion criterion on the screening values "
        "(thresholds from the study configuration); one who does not is a protocol deviation.",
        "SELECT SUBJID, 'CRIT=' || CRIT AS RECORD_KEY, DVTERM AS DETAIL FROM analysis.protocol_deviations",
    ),
    Rule(
        "XF-ELIG-NOT-EVALUABLE",
        "WARN",
        "ie",
        "analysis/eligibility",
        "Every inclusion criterion of an enrolled participant can be evaluated: the screening value "
        "(and, for x ULN criteria, the lab's upper limit of normal) is recorded. A value whose record is "
        "held in quarantine is asked about by that record's query, not again here.",
        "SELECT SUBJID, 'CRIT=' || CRIT AS RECORD_KEY, "
        "'criterion ' || CRIT || ' (' || CRITLBL || ') cannot be evaluated: ' || NOTEVAL AS DETAIL "
        "FROM analysis.eligibility WHERE ENRLYN = 'Y' AND MET IS NULL AND HELD IS NULL",
    ),
    Rule(
        "XF-ELIG-IE-DISAGREE",
        "WARN",
        "ie",
        "analysis/eligibility",
        "The investigator's criterion assessment (ie IEYN) agrees with the criterion evaluated on the "
        "screening values; every enrolled participant has an assessment of every criterion (where the "
        "study collects the ie form).",
        """SELECT SUBJID, 'CRIT=' || CRIT AS RECORD_KEY,
              CASE WHEN IEYN IS NULL THEN 'no investigator assessment (ie) of criterion ' || CRIT || ' (' || CRITLBL || ')'
                   ELSE 'criterion ' || CRIT || ' (' || CRITLBL || '): investigator IEYN = ' || IEYN
                        || ', screening value ' || coalesce(VALUE, 'missing') || ' against ' || THRESHOLD_TEXT
                        || ' gives ' || MET END AS DETAIL
           FROM analysis.eligibility
           WHERE (IEYN IS NOT NULL AND MET IS NOT NULL AND IEYN <> MET) OR (IEYN IS NULL AND ENRLYN = 'Y' AND $ie_collected)""",
    ),
)

RULES_BY_ID: dict[str, Rule] = {r.id: r for r in RULES}


def rule_parameters(cfg: StudyConfig) -> dict[str, object]:
    """Every ``$name`` a rule may use, from the study configuration."""
    return {
        "ld_start": cfg.lymphodepletion.start_day,
        "ld_end": cfg.lymphodepletion.end_day,
        "ld_tolerance": cfg.lymphodepletion.dose_tolerance,
        "ld_agents": [a.name for a in cfg.lymphodepletion.agents],
        "ld_doses": [float(a.dose) for a in cfg.lymphodepletion.agents],
        "ld_units": [a.unit for a in cfg.lymphodepletion.agents],
        "dose_ids": cfg.dose_ids,
        "dose_cells": [float(d.cells) for d in cfg.dose_levels],
        "dose_tolerance": cfg.escalation.dose_tolerance,
        "visit_ids": [v.id for v in cfg.visits],
        "visit_days": [v.day for v in cfg.visits],
        "baseline_visit": cfg.screening_visit,  # ADLB's baseline visit (assets/derive.py)
        # A form the study does not collect (configuration forms:) is loaded empty: as in ADSL, not required.
        **collected_params(cfg, (*FUNNEL_FORMS, "ie")),
        "death_causes_not_ae": [c.strip().upper() for c in cfg.safety.death_causes_not_ae],
    }


def _used(sql: str, params: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in params.items() if re.search(rf"\${k}\b", sql)}


def rule_sql(rule: Rule, cfg: StudyConfig) -> tuple[str, dict[str, object]]:
    """The rule's SELECT (columns SUBJID, RECORD_KEY, DETAIL) and the parameters it uses."""
    return (
        (f"SELECT SUBJID::VARCHAR AS SUBJID, coalesce(RECORD_KEY, '')::VARCHAR AS RECORD_KEY, DETAIL::VARCHAR AS DETAIL "
        f"FROM ({rule.sql})"),
        _used(rule.sql, rule_parameters(cfg)),
    )


def create_rule_macros(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(RULE_MACROS)


def run_rule(con: duckdb.DuckDBPyConnection, rule: Rule, cfg: StudyConfig) -> list[tuple[str, str, str]]:
    """The failing records of one rule, as (SUBJID, RECORD_KEY, DETAIL), sorted."""
    create_rule_macros(con)
    sql, params = rule_sql(rule, cfg)
    return con.execute(f"{sql} ORDER BY SUBJID, RECORD_KEY, DETAIL", params).fetchall()


# --------------------------------------------------------------------------------------------------
# Ingest rules: quarantine (a record kept out of staging; a WARN data query INGEST-<rule>) and blocking
# file problems (the raw/<form> step fails). Declared here for the catalogue; the ids are the ones the
# ingest code raises or writes, and tests/test_validation_catalogue.py (which reads them from the ingest
# source) keeps the two in step: a new ingest rule needs its line here.

INGEST_RULES: dict[str, tuple[Severity, str]] = {
    "FILE-MISSING": ("ERROR", "The form's file is in the export."),
    "FILE-EMPTY": ("ERROR", "The file is not empty (it has a header line)."),
    "FILE-ENCODING": ("ERROR", ("The file decodes as UTF-8 or as an encoding the study accepts (input.encodings, or "
                               "declared in export.json).")),
    "FILE-DELIMITER": ("ERROR", "Columns are separated by a delimiter the study accepts (input.delimiters)."),
    "FILE-DUP-COLUMN": ("ERROR", "No column occurs twice in the header."),
    "FILE-UNKNOWN-COLUMN": ("ERROR", "Every column of the header is in the form's contract."),
    "FILE-MISSING-COLUMN": ("ERROR", "Every non-identifier column of the contract is in the header."),
    "FILE-TRUNCATED": ("ERROR", ("The file is complete: no quoted value left open, no short last record without a "
                                "final line break.")),
    "FILE-FIELD-COUNT": ("ERROR", ("At least one data record has the header's number of fields (the data is separated "
                                  "like the header).")),
    "FILE-PARSE": ("ERROR", "The file (and export.json) parses in its format."),
    "FILE-FORMAT": ("ERROR", "The export has one format (CSV, CDISC ODM or SDTM), with the study's mapping for it."),
    "FILE-OTHER-STUDY": ("ERROR", "Not every record of the file belongs to another study."),
    "INGEST-CSV-FIELD-COUNT": ("WARN", "A record has the header's number of fields; else it is quarantined with its text."),
    "INGEST-REQUIRED": ("WARN", "A required field is not blank; the record is quarantined otherwise."),
    "INGEST-SUBJID-VARIANT": ("WARN", ("SUBJID is written in the one spelling the EDC uses (not another case or with "
                                      "spaces); else quarantined.")),
    "INGEST-TYPE-ID": ("WARN", "SUBJID matches the participant id pattern site-number; else quarantined."),
    "INGEST-TYPE-INT": ("WARN", ("An integer field holds a whole number (no unit, separator or decimal comma); "
                                "else quarantined.")),
    "INGEST-TYPE-FLOAT": ("WARN", ("A decimal field holds a plain decimal number (point separator, no unit); "
                                  "else quarantined.")),
    "INGEST-TYPE-DATE": ("WARN", ("A date field holds an ISO 8601 date on the calendar (partial where allowed); "
                                 "else quarantined.")),
    "INGEST-CODELIST": ("WARN", ("A coded field holds a value of its codelist (study codelists from the configuration); "
                                "else quarantined.")),
    "INGEST-RANGE": ("WARN", "A number lies within the contract's range for the field; else quarantined."),
    "INGEST-TEXT-TOO-LONG": ("WARN", "Free text is at most input.max_text_chars characters; else quarantined."),
    "INGEST-TEXT-FORMULA": ("WARN", "Free text does not start like a spreadsheet formula (=, +, -, @); else quarantined."),
    "INGEST-TEXT-MARKUP": ("WARN", "Free text contains no HTML markup or script; else quarantined."),
    "INGEST-PII-IN-TEXT": ("WARN", ("Free text holds no direct identifier (ID-card number, phone number, e-mail): "
                                   "removed at ingest and queried; the record is staged with the text replaced.")),
    "INGEST-OTHER-STUDY": ("WARN", "A record belongs to this study (STUDYID); else quarantined."),
    "INGEST-DUPLICATE-KEY": ("WARN", ("The form key occurs on one record only; rows sharing a key with different "
                                     "content are all quarantined (exact copies count once).")),
    "INGEST-DUPLICATE-RECORD": ("WARN", ("A record is exported once: a later exact copy of a row (every loaded field "
                                        "equal) is quarantined, the first copy loaded.")),
}


# --------------------------------------------------------------------------------------------------
# The rule catalogue (docs/validation-rules.md)


def check_name(rule_id: str) -> str:
    """The Dagster asset check name of a rule id ("XF-LD-DAYS" -> "xf_ld_days")."""
    return re.sub(r"[^a-z0-9]+", "_", rule_id.lower()).strip("_")


def gx_expectations(root: Path | None = None) -> list[tuple[str, dict]]:
    """(form id, expectation) of every suite in expectations/, in form and suite order."""
    return [(f.id, e) for f in FORMS for e in form_suite(f.id, root=root)["expectations"]]


def catalogue_ids(root: Path | None = None) -> set[str]:
    """Every rule id that exists in code: cross-form rules, ingest rules and GX expectations."""
    return (
        {r.id for r in RULES}
        | set(INGEST_RULES)
        | {e["meta"]["rule_id"] for _, e in gx_expectations(root)}
    )


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_catalogue(root: Path | None = None) -> str:
    """docs/validation-rules.md: every rule with its id, severity, form, where it runs and its meaning."""
    lines = [
        "# Validation rules",
        "",
        ("<!-- Generated by clinical/rules.py (render_catalogue); do not edit by hand. "
        "Regenerate with: python -m clinical.rules -->"),
        "",
        ("Every rule the pipeline applies to an export, with its id, severity, form and meaning. "
        "`tests/test_validation_catalogue.py` fails when a rule exists in code without being listed "
        "here, or the other way round."),
        "",
        "Severity:",
        "",
        ("- **ERROR** blocks: the Dagster asset check is blocking, so the reports that depend on the "
        "guarded asset are not produced; `python -m pipelines run` exits 1 and prints the rule and the "
        "first failing records. A blocking file rule fails the `raw/<form>` step itself."),
        ("- **WARN** lets the run finish; every failing record becomes a data query "
        "(`analysis.data_queries`, the data-queries workbook)."),
        "",
        "## Data queries",
        "",
        ("Every failing record of a WARN rule (cross-form rules, quarantined rows, Great Expectations "
        "WARN rules) is a query in `analysis.data_queries` with a stable id: `Q-` and the first 10 hex "
        "digits of SHA-256 over rule id, participant and record key (the form key of the record, never "
        "a line number or a value), so the same problem in the next export keeps its id. Status across "
        "data cuts (the previous cut's `trial.duckdb` is read): **Open** (failing, first seen now or "
        "still failing), **Closed** (no longer failing; kept as a row), **Re-opened** (failing again "
        "after it was closed). `DAYS_OPEN` = data cut (or the cut it was closed at) minus the cut it was "
        "first seen at."),
        "",
        "## Cross-form and protocol rules",
        "",
        ("SQL in DuckDB over the staged forms and analysis tables (`clinical/rules.py`); each is its own "
        "asset check on the asset it guards. Thresholds come from the study configuration."),
        "",
        "| Rule | Severity | Form | Asset check | Meaning |",
        "|---|---|---|---|---|",
    ]
    for r in RULES:
        lines.append(
            f"| `{r.id}` | {r.severity} | {r.form} | `{check_name(r.id)}` on `{r.asset}` | {_md(r.description)} |"
        )
    lines += [
        "",
        "## Ingest rules",
        "",
        ("Applied while loading each form file (`clinical/ingest.py`). File rules (ERROR) fail the "
        "`raw/<form>` step; row rules (WARN) keep the row out of `stage.<form>` and put it in "
        "`raw.quarantine` with file, line, column and value (asset check `<form>_quarantine_empty`); "
        "each quarantined value is a data query with rule id `INGEST-<rule>`."),
        "",
        "| Rule | Severity | Form | Asset check | Meaning |",
        "|---|---|---|---|---|",
    ]
    for rid, (sev, meaning) in INGEST_RULES.items():
        where = "step `raw/<form>`" if rid.startswith("FILE-") else "`<form>_quarantine_empty` on `raw/<form>`"
        lines.append(f"| `{rid}` | {sev} | all | {where} | {_md(meaning)} |")
    lines += [
        "",
        "## Form suites (Great Expectations)",
        "",
        ("One suite per CRF form in `expectations/<form>.json`, generated from the contract "
        "(`clinical/contract_docs.py`), run by Great Expectations 1.x on the rows that passed ingest; "
        "each expectation is its own asset check on `raw/<form>` (check name = rule id in lower case "
        "with underscores). Study codelists (`@dose_levels`, `@sites`, ...) come from the study "
        "configuration. Failing records of WARN expectations are data queries."),
        "",
    ]
    current = None
    for fid, e in gx_expectations(root):
        if fid != current:
            current = fid
            lines += [
                "",
                f"### {fid}: {form(fid).title}",
                "",
                "| Rule | Severity | Form | Asset check | Meaning |",
                "|---|---|---|---|---|",
            ]
        m = e["meta"]
        lines.append(
            f"| `{m['rule_id']}` | {m['severity']} | {fid} | `{check_name(m['rule_id'])}` on `raw/{fid}` | "
            f"{_md(m['description'])} (`{e['type']}`) |"
        )
    return "\n".join(lines).replace("\n\n\n", "\n\n") + "\n"


def catalogue_rule_ids(text: str) -> set[str]:
    """The rule ids listed in a catalogue document (first column of its tables)."""
    return set(re.findall(r"^\| `([A-Z][A-Z0-9-]+)` \|", text, flags=re.MULTILINE))


def write_catalogue(root: Path | None = None) -> Path:
    path = (root or REPO_ROOT) / CATALOGUE_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_catalogue(root), encoding="utf-8")
    return path


if __name__ == "__main__":  # python -m clinical.rules
    print(write_catalogue())
