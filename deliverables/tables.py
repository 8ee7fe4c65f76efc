"""Report tables: read the analysis tables once, lay them out once, for the PDF and the workbook.

``load_report_tables(con)`` reads the DuckDB ``analysis`` tables into plain Python structures
(lists of dicts, deterministic order). Nothing is recounted here: every number shown comes from a
row of an analysis table, so the DSMB PDF, the sponsor workbook and the registry draft agree.

The ``layout_*`` functions turn those structures into :class:`DisplayTable` objects (title,
column headers, rows of display values, footnote). Both the PDF renderer (``deliverables.dsmb``)
and the workbook writer (``deliverables.workbooks``) take the same ``DisplayTable`` objects, so a
cell reads the same in both.

Conventions (chevron/tern style): one column per dose level plus Total; the header carries the
safety population N of the column ("DL1 5x10^8 cells (N=3)"); percentages are "n (xx.x%)" of that
N with the percentage taken from the analysis table; a zero count is shown as "0".
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import duckdb

from clinical.safety_tables import ANY_TEAE_ROWN, GRADE3_TEAE_ROWN, SERIOUS_TEAE_ROWN, TEAE_EVENTS_ROWN

TOTAL = "TOTAL"

Cell = str | int | float | dt.date | None


# --------------------------------------------------------------------------------------------------
# Data read from the analysis tables


@dataclass
class ReportTables:
    """The analysis tables a DSMB report and the sponsor workbook need, as lists of row dicts."""

    dose_levels: list[dict[str, Any]]
    flow_screening: list[dict[str, Any]]
    participant_flow: list[dict[str, Any]]
    flow_exits: list[dict[str, Any]]
    safety_groups: list[dict[str, Any]]
    teae_summary: list[dict[str, Any]]
    ae_by_term: list[dict[str, Any]]
    dose_escalation: list[dict[str, Any]]
    escalation_decision: dict[str, Any] | None
    dlt_listing: list[dict[str, Any]]
    sae_listing: list[dict[str, Any]]
    deaths: list[dict[str, Any]]
    # Data quality (issue 4 tables; empty when a database predates them).
    data_queries: list[dict[str, Any]] = field(default_factory=list)
    protocol_deviations: list[dict[str, Any]] = field(default_factory=list)
    # Clinical sections (deliverables.clinical_tables); empty when the analysis table is absent.
    baseline: list[dict[str, Any]] = field(default_factory=list)
    exposure_summary: list[dict[str, Any]] = field(default_factory=list)
    exposure: list[dict[str, Any]] = field(default_factory=list)
    crs_icans_summary: list[dict[str, Any]] = field(default_factory=list)
    crs_icans: list[dict[str, Any]] = field(default_factory=list)
    lab_summary: list[dict[str, Any]] = field(default_factory=list)
    haem_recovery: list[dict[str, Any]] = field(default_factory=list)
    pk_summary: list[dict[str, Any]] = field(default_factory=list)
    ae_by_grade: list[dict[str, Any]] = field(default_factory=list)
    form_completeness: list[dict[str, Any]] = field(default_factory=list)
    response_summary: list[dict[str, Any]] = field(default_factory=list)
    ld_ae_summary: list[dict[str, Any]] = field(default_factory=list)
    # Analysis tables that did not exist when the tables were loaded with strict=False.
    missing: list[str] = field(default_factory=list)

    def dose_label(self, dose: str | None) -> str:
        """'DL1 5x10^8 cells' for a dose id, 'Total' for TOTAL, '' for None."""
        return dose_level_label(self.dose_levels, dose)


def dose_level_label(dose_levels: Sequence[dict[str, Any]], dose: str | None) -> str:
    """The label of a dose id among rows of analysis.dose_levels: 'DL1 5x10^8 cells' (the id alone
    when the level has no label), 'Total' for TOTAL, '' for None, the id itself when not listed.
    The report tables' (ReportTables.dose_label) and the figures' (deliverables.figures)."""
    if dose is None:
        return ""
    if dose == TOTAL:
        return "Total"
    for d in dose_levels:
        if d["DOSE"] == dose:
            return f"{d['DOSE']} {d['DOSELBL']}" if d.get("DOSELBL") else str(d["DOSE"])
    return str(dose)


class MissingAnalysisTable(LookupError):
    """An analysis table the report needs does not exist in the database."""


REQUIRED = (
    "dose_levels",
    "flow_screening",
    "participant_flow",
    "flow_exits",
    "safety_groups",
    "teae_summary",
    "ae_by_term",
    "dose_escalation",
    "escalation_decision",
    "adsl",
    "adae",
)

QUERIES: dict[str, str] = {
    "dose_levels": "SELECT DOSE, DOSEN, DOSELBL, CELLS FROM analysis.dose_levels ORDER BY DOSEN, DOSE",
    "flow_screening": "SELECT ROWN, ROWLBL, N FROM analysis.flow_screening ORDER BY ROWN",
    "participant_flow": """SELECT STAGEN, STAGE, STAGELBL, STAGEKIND, DOSE, DOSEN, N
                           FROM analysis.participant_flow ORDER BY STAGEN, DOSEN, DOSE""",
    "flow_exits": """SELECT STAGEN, STAGE, REASON, DOSE, DOSEN, N, SUBJIDS
                     FROM analysis.flow_exits ORDER BY STAGEN, REASON NULLS LAST, DOSEN, DOSE""",
    "safety_groups": "SELECT DOSE, DOSEN, DOSELBL, N_AT_RISK FROM analysis.safety_groups ORDER BY DOSEN, DOSE",
    "teae_summary": """SELECT ROWN, ROWLBL, DOSE, DOSEN, N, DENOM, PCT
                       FROM analysis.teae_summary ORDER BY ROWN, DOSEN, DOSE""",
    "ae_by_term": """SELECT SCOPE, AEBODSYS, AEDECOD, DOSE, DOSEN, N_AFFECTED, N_EVENTS, N_AT_RISK
                     FROM analysis.ae_by_term ORDER BY SCOPE, AEBODSYS, AEDECOD, DOSEN, DOSE""",
    "dose_escalation": """SELECT DOSE, DOSEN, DOSELBL, CELLS, ENROLLED, INFUSED, EVALUABLE, DLTS, PENDING,
                                 WINDOW_CLOSES, STATUS
                          FROM analysis.dose_escalation ORDER BY DOSEN, DOSE""",
    # Every column: DETERMINED (FALSE when the engine could not decide, e.g. > 6 at a dose) is newer.
    "escalation_decision": "SELECT * FROM analysis.escalation_decision",
    # Listings: analysis.adae / analysis.adsl rows as they are, only selected and ordered.
    "dlt_listing": """
        SELECT e.DOSEA, d.DOSEN AS DOSEAN_, s.DOSEP, e.SUBJID, e.AESPID, e.AETERM, e.AEDECOD, e.AEBODSYS,
               e.ASTDT, e.AENDT, e.ADY, e.ATOXGR, e.AESER, e.AEREL, e.AEOUT, e.DLTFL, e.TRTEMFL
        FROM analysis.adae e
        LEFT JOIN analysis.adsl s USING (SUBJID)
        LEFT JOIN analysis.dose_levels d ON d.DOSE = e.DOSEA
        WHERE e.DLTFL = 'Y'
        ORDER BY d.DOSEN NULLS LAST, e.SUBJID, e.ASTDT NULLS LAST, e.AESPID""",
    "sae_listing": """
        SELECT e.DOSEA, d.DOSEN AS DOSEAN_, s.DOSEP, e.SUBJID, e.AESPID, e.AETERM, e.AEDECOD, e.AEBODSYS,
               e.ASTDT, e.AENDT, e.ADY, e.ATOXGR, e.AESER, e.AEREL, e.AEOUT, e.DLTFL, e.TRTEMFL
        FROM analysis.adae e
        LEFT JOIN analysis.adsl s USING (SUBJID)
        LEFT JOIN analysis.dose_levels d ON d.DOSE = e.DOSEA
        WHERE e.AESER = 'Y'
        ORDER BY d.DOSEN NULLS LAST, s.DOSEP NULLS LAST, e.SUBJID, e.ASTDT NULLS LAST, e.AESPID""",
    "deaths": """
        SELECT s.DOSEA, d.DOSEN AS DOSEAN_, s.DOSEP, s.SUBJID, s.AGE, s.SEX, s.TRTSDT, s.DTHDT,
               s.DTHDT - s.TRTSDT AS DTHDY, s.DTHCAUS, s.DLTFL, s.DLTEVLFL,
               (SELECT string_agg(coalesce(e.AEDECOD, e.AETERM), '; ' ORDER BY e.ASTDT, e.AESPID)
                  FROM analysis.adae e
                 WHERE e.SUBJID = s.SUBJID AND (e.ATOXGR = 5 OR upper(e.AEOUT) = 'FATAL')) AS FATALAE
        FROM analysis.adsl s
        LEFT JOIN analysis.dose_levels d ON d.DOSE = s.DOSEA
        WHERE s.DTHDT IS NOT NULL
        ORDER BY d.DOSEN NULLS LAST, s.DOSEP NULLS LAST, s.SUBJID""",
}

# Tables a database may not have (older, or without that part of the pipeline), and summaries counted
# here set-based from one analysis table: no rows when a source table is absent (QUERY_SOURCES).
OPTIONAL_QUERIES: dict[str, str] = {
    "ld_ae_summary": """SELECT ROWN, ROWLBL, DOSE, DOSEN, N, DENOM, PCT
                        FROM analysis.ld_ae_summary ORDER BY ROWN, DOSEN, DOSE""",
    "data_queries": """SELECT QUERY_ID, RULE_ID, SEVERITY, FORM, SITEID, SUBJID, STATUS, DAYS_OPEN,
                              FIRST_SEEN_CUT, CLOSED_CUT, DATA_CUT
                       FROM analysis.data_queries ORDER BY QUERY_ID""",
    "protocol_deviations": """SELECT SUBJID, DOSEP, CRITLBL, VALUE, UNIT, THRESHOLD_TEXT, IEYN
                              FROM analysis.protocol_deviations ORDER BY SUBJID, CRITN""",
    "exposure_summary": """SELECT DOSE, DOSEN, PARAMCD, PARAM, N, MEDIAN, MIN, MAX
                           FROM analysis.exposure_summary ORDER BY DOSEN, DOSE, PARAMCD""",
    "exposure": """SELECT e.*, d.DOSEN AS DOSEN_ FROM analysis.exposure e
                   LEFT JOIN analysis.dose_levels d ON d.DOSE = coalesce(e.DOSEA, e.DOSEP)
                   ORDER BY d.DOSEN NULLS LAST, e.SUBJID""",
    "crs_icans_summary": "SELECT * FROM analysis.crs_icans_summary ORDER BY AECATN, DOSEN, DOSE",
    "crs_icans": """SELECT * FROM analysis.crs_icans ORDER BY DOSEAN NULLS LAST, SUBJID, ASTDT NULLS LAST, AESPID""",
    # The lab summary with each test's CTCAE term and direction (one per PARAMCD in analysis.adlb).
    "lab_summary": """SELECT s.PARAMCD, s.PARAMN, s.DOSE, s.DOSEN, s.WORSTGR, s.N, s.DENOM, s.PCT,
                             m.ATOXTERM, m.ATOXDIR
                      FROM analysis.lab_summary s
                      JOIN (SELECT PARAMCD, min(ATOXTERM) AS ATOXTERM, min(ATOXDIR) AS ATOXDIR
                              FROM analysis.adlb WHERE ATOXDIR IS NOT NULL GROUP BY PARAMCD) m USING (PARAMCD)
                      ORDER BY s.PARAMN, s.DOSEN, s.DOSE, s.WORSTGR""",
    "pk_summary": "SELECT * FROM analysis.pk_summary ORDER BY PARAMN, DOSEN, DOSE",
    "ae_by_grade": """SELECT AEBODSYS, AEDECOD, DOSE, DOSEN, GRADE, N, N_AT_RISK FROM analysis.ae_by_grade
                      ORDER BY AEBODSYS, AEDECOD NULLS FIRST, GRADE, DOSEN, DOSE""",
    "response_summary": "SELECT * FROM analysis.response_summary ORDER BY DOSEN, DOSE",
    # Recovery after infusion, by dose level received and in total: ANC nadir < 0.5 (ANC_LT05),
    # recovered (ANC_REC, with the day of recovery), and grade >= 3 cytopenia at day 28 per
    # decreased test (D28_<PARAMCD>, N of DENOM assessed).
    "haem_recovery": """
        WITH t AS (SELECT * FROM analysis.lab_toxicity WHERE DOSEA IS NOT NULL),
        anc AS (
          SELECT 'ANC_LT05' AS ROW, coalesce(DOSEA, 'TOTAL') AS DOSE, count(*) AS N, NULL::BIGINT AS DENOM,
                 NULL::DOUBLE AS MEDIAN, NULL::DOUBLE AS MIN, NULL::DOUBLE AS MAX
          FROM t WHERE PARAMCD = 'NEUT' AND ANCRECFL IS NOT NULL GROUP BY GROUPING SETS ((DOSEA), ())
          UNION ALL
          SELECT 'ANC_REC', coalesce(DOSEA, 'TOTAL'), count(*), NULL, median(ANCRECDY), min(ANCRECDY), max(ANCRECDY)
          FROM t WHERE PARAMCD = 'NEUT' AND ANCRECFL = 'Y' GROUP BY GROUPING SETS ((DOSEA), ())),
        d28 AS (
          SELECT 'D28_' || PARAMCD AS ROW, coalesce(DOSEA, 'TOTAL') AS DOSE,
                 count(*) FILTER (WHERE CYTOPENIA_D28 = 'Y') AS N, count(CYTOPENIA_D28) AS DENOM,
                 NULL::DOUBLE, NULL::DOUBLE, NULL::DOUBLE
          FROM t WHERE ATOXDIR = 'L' GROUP BY GROUPING SETS ((PARAMCD, DOSEA), (PARAMCD)))
        SELECT * FROM anc UNION ALL SELECT * FROM d28 ORDER BY ROW, DOSE""",
}

# The analysis tables each query reads (by default the one of its name): a query runs when they all
# exist, else its rows are empty. REQUIRED tables missing with strict=False make their queries empty.
QUERY_SOURCES: dict[str, tuple[str, ...]] = {
    "dlt_listing": ("adae", "adsl", "dose_levels"),
    "sae_listing": ("adae", "adsl", "dose_levels"),
    "deaths": ("adsl", "adae", "dose_levels"),
    "exposure": ("exposure", "dose_levels"),
    "lab_summary": ("lab_summary", "adlb"),
    "haem_recovery": ("lab_toxicity",),
}

# Baseline characteristics of the enrolled participants by planned dose level and in total: one row
# per categorical variable x category x column (KIND CAT) and per continuous variable x column (KIND
# CONT). Age groups are ADSL AGEGR1, the registry's categories. Variables that analysis.adsl does
# not have (e.g. KPS or GPC3 of another study) are left out. The one definition of the variables,
# their labels in the baseline table (deliverables.clinical_tables.layout_baseline) and, for the
# continuous ones, the decimals of their mean and median.
BASELINE_CONTINUOUS: tuple[tuple[str, str, int], ...] = (
    ("AGE", "Age (years)", 1),
    ("KPS", "Karnofsky performance status", 1),
)
BASELINE_CATEGORICAL: tuple[tuple[str, str], ...] = (
    ("AGEGR1", "Age group"),
    ("SEX", "Sex"),
    ("RACE", "Race"),
    ("ETHNIC", "Ethnicity"),
    ("COUNTRY", "Region of enrolment"),
    ("GPC3", "GPC3 tumour status"),
)


# One set of baseline counts for the DSMB report, the workbook and the registry draft (which reads
# these rows in registry._baseline_module): sex, race and ethnicity are matched to
# ClinicalTrials.gov's categories case-insensitively, and a null or empty race or
# ethnicity is its "Unknown or Not Reported" category (code UNKNOWN). Any other null is counted as
# 'Missing' (the registry refuses an enrolled participant without sex or age).
BASELINE_REGISTRY_CODED = ("SEX", "RACE", "ETHNIC")
BASELINE_NOT_REPORTED = {"RACE": "UNKNOWN", "ETHNIC": "UNKNOWN"}


def _baseline_category(c: str) -> str:
    value = f"CAST({c} AS VARCHAR)"
    if c in BASELINE_REGISTRY_CODED:
        value = f"nullif(upper({value}), '')"
    return f"coalesce({value}, '{BASELINE_NOT_REPORTED.get(c, 'Missing')}') AS {c}"


# The dose column of a GROUPING SETS row: TOTAL where DOSE is rolled up, the group's DOSE otherwise (so
# an enrolled participant without DOSEP is a null-DOSE group of its own, never a second TOTAL row).
_TOTAL_DOSE = "CASE WHEN grouping(DOSE) = 1 THEN 'TOTAL' ELSE DOSE END"


def baseline_sql(adsl_columns: set[str]) -> str:
    """The baseline query for the ADSL columns present. Only variable names of the two fixed tuples
    above and the fixed codes for a null are put into the SQL text (never data values)."""
    cats = [c for c, _ in BASELINE_CATEGORICAL if c in adsl_columns]
    nums = [c for c, _, _ in BASELINE_CONTINUOUS if c in adsl_columns]
    sel = ", ".join([_baseline_category(c) for c in cats] + [f"CAST({c} AS DOUBLE) AS {c}" for c in nums])
    parts = []
    if cats:
        parts.append(f"""
        SELECT 'CAT' AS KIND, c.VAR, c.CAT, c.DOSE, c.N, d.DENOM, round(100.0 * c.N / d.DENOM, 1) AS PCT,
               NULL::DOUBLE AS MEAN, NULL::DOUBLE AS SD, NULL::DOUBLE AS MEDIAN, NULL::DOUBLE AS MIN,
               NULL::DOUBLE AS MAX
        FROM (SELECT VAR, CAT, {_TOTAL_DOSE} AS DOSE, count(*) AS N
              FROM (UNPIVOT (SELECT DOSE, {', '.join(cats)} FROM s) ON {', '.join(cats)} INTO NAME VAR VALUE CAT)
              GROUP BY GROUPING SETS ((VAR, CAT, DOSE), (VAR, CAT))) c
        JOIN denom d USING (DOSE)""")
    if nums:
        parts.append(f"""
        SELECT 'CONT', VAR, NULL, {_TOTAL_DOSE}, count(X), NULL, NULL, avg(X), stddev_samp(X),
               median(X), min(X), max(X)
        FROM (UNPIVOT (SELECT DOSE, {', '.join(nums)} FROM s) ON {', '.join(nums)} INTO NAME VAR VALUE X)
        GROUP BY GROUPING SETS ((VAR, DOSE), (VAR))""")
    if not parts:
        return "SELECT NULL AS KIND WHERE FALSE"
    return f"""
        WITH s AS (SELECT DOSEP AS DOSE, {sel} FROM analysis.adsl WHERE ENRLFL = 'Y'),
        denom AS (SELECT {_TOTAL_DOSE} AS DOSE, count(*) AS DENOM
                  FROM s GROUP BY GROUPING SETS ((DOSE), ()))
        {' UNION ALL '.join(parts)}
        ORDER BY 1, 2, 3 NULLS FIRST, 4"""


def _existing_tables(con: duckdb.DuckDBPyConnection) -> set[str]:
    rows = con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'analysis'"
    ).fetchall()
    return {r[0].lower() for r in rows}


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
    cur = con.execute(sql, params) if params else con.execute(sql)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


POPULATION_LABELS = {"SCRNFL": "Screened", "ENRLFL": "Enrolled", "APHFL": "Leukapheresed",
                     "MFGFL": "Product released", "LDFL": "Lymphodepleted", "SAFFL": "Infused"}


def form_completeness_rows(con: duckdb.DuckDBPyConnection, expected_forms: dict[str, str]) -> list[dict[str, Any]]:
    """Per CRF form of the contract: records received (raw), accepted (stage), quarantined rows, the
    participants with an accepted record and, for forms with an expected population (an ADSL flag,
    from the study configuration), how many of that population have one. One set-based query;
    the form ids (the contract's) and flags (a fixed list) are the only names put into the SQL text,
    the form id as a value goes as a parameter."""
    from clinical.crf import FORM_IDS
    from clinical.study import POPULATION_FLAGS

    have = {(r[0], r[1]) for r in con.execute(
        "SELECT table_schema, table_name FROM information_schema.tables").fetchall()}
    if ("raw", "quarantine") not in have or ("analysis", "adsl") not in have:
        return []
    # Rows held out of staging (clinical.ingest: raw.held; a database without the view: every row).
    held = "raw.held" if ("raw", "held") in have else "raw.quarantine"
    # Records the analysis leaves out as dated after the cut-off (clinical/datacut.py).
    cut = ("cut", "after_cut") in have
    after_cut = ("(SELECT count(*) FROM cut.after_cut c WHERE c.FORM = ? AND c.ACTION LIKE 'not analysed%')"
                 if cut else "NULL::BIGINT")
    parts, params = [], []
    for n, form in enumerate(FORM_IDS, start=1):
        if ("raw", form) not in have or ("stage", form) not in have:
            continue
        flag = expected_forms.get(form)
        if flag is not None and flag not in POPULATION_FLAGS:
            raise ValueError(f"expected population of {form}: unknown flag {flag!r}")
        expected = (f"(SELECT count(*) FROM analysis.adsl WHERE {flag} = 'Y')" if flag else "NULL::BIGINT")
        with_rec = (f"""(SELECT count(*) FROM analysis.adsl a WHERE a.{flag} = 'Y'
                         AND EXISTS (SELECT 1 FROM stage.{form} f WHERE f.SUBJID = a.SUBJID))""" if flag else "NULL::BIGINT")
        parts.append(f"""
            SELECT {n} AS FORMN, ?::VARCHAR AS FORM, ?::VARCHAR AS POPULATION,
                   (SELECT count(*) FROM raw.{form}) AS RECEIVED, (SELECT count(*) FROM stage.{form}) AS ACCEPTED,
                   (SELECT count(DISTINCT line) FROM {held} q WHERE q.form = ?) AS QUARANTINED,
                   {after_cut} AS AFTER_CUT,
                   (SELECT count(DISTINCT SUBJID) FROM stage.{form}) AS SUBJECTS,
                   {expected} AS EXPECTED, {with_rec} AS EXPECTED_WITH""")
        params += [form, flag, form] + ([form] if cut else [])
    if not parts:
        return []
    return _rows(con, " UNION ALL ".join(parts) + " ORDER BY FORMN", params)


def load_report_tables(
    con: duckdb.DuckDBPyConnection, *, strict: bool = True, expected_forms: dict[str, str] | None = None
) -> ReportTables:
    """Read the analysis tables the reports need.

    strict (default): a missing analysis table raises :class:`MissingAnalysisTable`. With
    strict=False, missing tables load as empty and are named in ``ReportTables.missing`` (the
    PDF and workbook then say the table was not available), which lets a draft be produced while
    the pipeline is being built.

    expected_forms: form -> ADSL population flag for the form-completeness table (the study
    configuration's ``data_quality.expected_forms``; None: its default).
    """
    have = _existing_tables(con)
    missing = [t for t in REQUIRED if t not in have]
    if missing and strict:
        raise MissingAnalysisTable(f"analysis tables missing: {', '.join('analysis.' + t for t in missing)}")
    out: dict[str, Any] = {}
    for name, sql in {**QUERIES, **OPTIONAL_QUERIES}.items():
        present = all(source in have for source in QUERY_SOURCES.get(name, (name,)))
        out[name] = _rows(con, sql) if present else []
    if expected_forms is None:
        from clinical.study import DataQuality

        expected_forms = DataQuality().expected_forms
    out["form_completeness"] = form_completeness_rows(con, expected_forms)
    out["baseline"] = []
    if "adsl" in have:
        cols = {r[0].upper() for r in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'analysis' AND table_name = 'adsl'"
        ).fetchall()}
        if {"DOSEP", "ENRLFL"} <= cols:
            out["baseline"] = _rows(con, baseline_sql(cols))
    decision = out.pop("escalation_decision")
    if len(decision) > 1:
        raise ValueError(f"analysis.escalation_decision has {len(decision)} rows; exactly one expected")
    return ReportTables(**out, escalation_decision=decision[0] if decision else None, missing=missing)


# --------------------------------------------------------------------------------------------------
# Display tables


@dataclass
class DisplayTable:
    """A table as shown to a reader: the same object feeds the PDF and the workbook.

    rows hold display values (text, whole numbers, dates, None for an empty cell).
    row_styles gives one style per row: "" (plain), "indent" (a reason or sub-row), "group"
    (a heading row such as an SOC), "set" (an analysis set, not a funnel stage), "note" (a
    sentence that spans the table: the value in the second cell is the text).
    extra_columns / extra_rows: machine-friendly companions of the display cells (separate n and
    % columns, ISO dates) that the workbook appends to the right of the display columns; the PDF
    does not show them.
    """

    id: str
    title: str
    columns: list[str]
    rows: list[list[Cell]]
    footnote: str = ""
    row_styles: list[str] = field(default_factory=list)
    extra_columns: list[str] = field(default_factory=list)
    extra_rows: list[list[Cell]] = field(default_factory=list)
    kind: str = "table"  # "table" or "listing"
    empty_text: str = "No rows at this data cut."
    # Short sheet name for the workbook (<= 31 characters, no []:*?/\).
    sheet: str = ""
    # A sentence shown above the table in the PDF (e.g. why a listing is summarised there).
    intro: str = ""
    # Indices of the per-dose-level display columns (the open session shows the pooled Total only).
    dose_columns: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.row_styles:
            self.row_styles = [""] * len(self.rows)
        if len(self.row_styles) != len(self.rows):
            raise ValueError(f"{self.id}: {len(self.rows)} rows but {len(self.row_styles)} row styles")
        for r in self.rows:
            if len(r) != len(self.columns):
                raise ValueError(f"{self.id}: row {r!r} does not have {len(self.columns)} cells")
        if self.extra_columns:
            if len(self.extra_rows) != len(self.rows):
                raise ValueError(f"{self.id}: extra_rows must have one row per row")
            for r in self.extra_rows:
                if len(r) != len(self.extra_columns):
                    raise ValueError(f"{self.id}: extra row {r!r} does not have {len(self.extra_columns)} cells")


def fmt_npct(n: int | None, pct: float | None) -> str:
    """'n (xx.x%)' with the percentage as stored; '0' for zero; 'n' when there is no percentage."""
    if n is None:
        return ""
    if n == 0:
        return "0"
    if pct is None:
        return str(n)
    return f"{n} ({float(pct):.1f}%)"


def round_half_up(x: float | Decimal, places: int) -> Decimal:
    """``x`` to ``places`` decimals, halves away from zero, on the number as written (``repr``):
    30.5 -> 31, 898.95 -> 899.0, where Python's format gives 30 and 898.9."""
    d = x if isinstance(x, Decimal) else Decimal(repr(float(x)))
    return d.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)


def pct_half_up(n: int, denom: int | None) -> float | None:
    """100 * n / denom rounded to one decimal, halves away from zero (as DuckDB's round())."""
    if not denom:
        return None
    return float(round_half_up(Decimal(100 * n) / Decimal(denom), 1))


def round_sig(x: float, sig: int = 3) -> Decimal:
    """``x`` rounded to ``sig`` significant figures, halves up (away from zero), as a Decimal whose
    exponent is the last significant place: 45.25 -> 45.3, 18450 -> 1.85E+4, 0.06125 -> 0.0613,
    99.95 -> 100 (not 100.0). The decimal value as printed (``repr``) is rounded, not the binary
    float, so 45.25 and 0.06125 round up as written. The one rounding of significant figures that
    every deliverable uses (DSMB report and workbook: ``clinical_tables.fmt_sig``; registry:
    ``registry._num``); each only formats the result. x must be finite."""
    d = Decimal(repr(float(x)))
    if not d.is_finite():
        raise ValueError(f"round_sig: {x!r} is not a finite number")
    if d == 0:
        return Decimal(0)
    q = d.quantize(Decimal(1).scaleb(d.adjusted() - sig + 1), rounding=ROUND_HALF_UP)
    if q.adjusted() > d.adjusted():  # rounding carried into a new digit (99.95 -> 100.0): one place less
        q = q.quantize(Decimal(1).scaleb(q.adjusted() - sig + 1), rounding=ROUND_HALF_UP)
    return q


def as_date(value: dt.date | str) -> dt.date:
    """A data cut or report date given as a date, datetime or ISO text, as a date."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value))


def fmt_date(d: Any) -> str:
    if d is None:
        return ""
    if isinstance(d, (dt.date, dt.datetime)):
        return d.strftime("%Y-%m-%d")
    return str(d)


def _label_indent(label: str) -> tuple[str, int]:
    """Analysis tables indent sub-rows with leading spaces; return (text, indent level)."""
    stripped = label.lstrip(" ")
    return stripped, (len(label) - len(stripped)) // 2


def _group_order(t: ReportTables) -> list[tuple[str, str]]:
    """(dose id, header text without N) for every dose level, then Total."""
    cols = [(d["DOSE"], t.dose_label(d["DOSE"])) for d in t.dose_levels]
    return cols + [(TOTAL, "Total")]


def safety_headers(t: ReportTables) -> list[tuple[str, str]]:
    """(dose id, 'DL1 5x10^8 cells (N=3)') for the safety columns, from analysis.safety_groups."""
    out = []
    for g in t.safety_groups:
        out.append((g["DOSE"], f"{t.dose_label(g['DOSE'])} (N={g['N_AT_RISK']})"))
    return out


def _missing_note(t: ReportTables, *tables: str) -> str:
    gone = [x for x in tables if x in t.missing]
    return f"Not available at this data cut: analysis.{', analysis.'.join(gone)} was not produced." if gone else ""


def layout_participant_flow(t: ReportTables) -> DisplayTable:
    """Screening (overall), then each funnel stage by planned dose level and in total; under each
    stage, indented, the participants who did not reach the next stage, by reason."""
    groups = _group_order(t)
    columns = ["Stage"] + [h for _, h in groups]
    rows: list[list[Cell]] = []
    styles: list[str] = []

    stage_enrolled_total = None
    for r in t.participant_flow:
        if r["STAGEN"] == 1 and r["DOSE"] == TOTAL:
            stage_enrolled_total = r["N"]
    for r in t.flow_screening:
        label, indent = _label_indent(r["ROWLBL"])
        if indent and not r["N"]:
            continue  # prune zero reason rows (chevron prune_0)
        if label.lower() == "enrolled" and stage_enrolled_total is not None:
            continue  # the first funnel stage says the same with its dose breakdown
        rows.append([label] + [None] * (len(groups) - 1) + [r["N"]])
        styles.append("indent" if indent else "")

    stages: dict[int, dict[str, Any]] = {}
    for r in t.participant_flow:
        s = stages.setdefault(r["STAGEN"], {"label": r["STAGELBL"], "kind": r["STAGEKIND"], "stage": r["STAGE"], "n": {}})
        s["n"][r["DOSE"]] = r["N"]
    exits: dict[int, dict[str, dict[str, int]]] = {}
    for e in t.flow_exits:
        exits.setdefault(e["STAGEN"], {}).setdefault(exit_reason(e["REASON"]), {})[e["DOSE"]] = e["N"]

    def exit_rows(stagen: int, lead: str) -> None:
        for reason, by_dose in exits.get(stagen, {}).items():
            rows.append([f"{lead}: {reason}"] + [by_dose.get(g, 0) for g, _ in groups])
            styles.append("indent")

    order = sorted(stages)
    for i, n in enumerate(order):
        s = stages[n]
        is_set = s["kind"] != "STAGE"
        rows.append([s["label"] + (" (analysis set)" if is_set else "")] + [s["n"].get(g, 0) for g, _ in groups])
        styles.append("set" if is_set else "")
        if is_set:
            exit_rows(n, "Not " + _lower_first(s["label"]))
            continue
        nxt = next((m for m in order[i + 1 :] if stages[m]["kind"] == "STAGE"), None)
        if nxt is not None:
            target = stages[nxt]["label"]
            exit_rows(nxt, "Did not reach '" + _short_stage(target) + "'")

    return DisplayTable(
        id="participant_flow",
        title="Participant flow by planned dose level",
        columns=columns,
        rows=rows,
        row_styles=styles,
        sheet="Participant flow",
        footnote=(
            "Counts are participants. Screening is overall: a dose level is assigned at enrolment. "
            "Funnel stages are by planned dose level (DOSEP) and cumulative; indented rows give the "
            "participants of a stage who had not reached the next stage at the data cut, by reason. "
            "The DLT-evaluable analysis set is a subset of the infused participants. "
            "Source: analysis.flow_screening, analysis.participant_flow, analysis.flow_exits."
            + (" " + _missing_note(t, "flow_screening", "participant_flow", "flow_exits")).rstrip()
        ),
    )


def _lower_first(label: str) -> str:
    """'Infused' -> 'infused' but 'DLT-evaluable' stays (an acronym)."""
    if len(label) > 1 and label[1].islower():
        return label[:1].lower() + label[1:]
    return label


def _short_stage(label: str) -> str:
    """'Infused with IM83 CAR-T (safety population)' -> 'Infused with IM83 CAR-T'."""
    return label.split(" (")[0]


@dataclass(frozen=True)
class StepWording:
    """The words of each kind of next step; ``{dose}`` is replaced by the dose level's label."""

    undetermined: str
    continue_at: str
    continue_trial: str
    stop_mtd: str
    stop: str


# The report's sentence (decision_summary) and the short form of the changes tables
# (deliverables.changes.EscalationState.step).
STEP_SENTENCE = StepWording(
    undetermined="No 3+3 decision: the participants treated do not follow a 3+3 path (see the reason); "
    "the next step is for the DSMB to decide",
    continue_at="Continue the trial with the next participants at {dose}",
    continue_trial="Continue the trial",
    stop_mtd="Stop dose escalation: MTD {dose}",
    stop="Stop dose escalation: no dose level recommended",
)
STEP_SHORT = StepWording(
    undetermined="No 3+3 decision (for the DSMB to decide)",
    continue_at="Continue at {dose}",
    continue_trial="Continue the trial",
    stop_mtd="Stop escalation: MTD {dose}",
    stop="Stop escalation: no dose level recommended",
)


def next_step_text(
    determined: bool | None,
    continue_trial: bool | None,
    next_dose: str | None,
    mtd: str | None,
    dose_label: Callable[[str | None], str],
    wording: StepWording = STEP_SENTENCE,
) -> str:
    """The next step of an escalation decision (the fields of analysis.escalation_decision) in words:
    not determined, continue (at the next dose level), stop with an MTD, or stop without one."""
    if determined is False:
        return wording.undetermined
    if continue_trial:
        return wording.continue_at.format(dose=dose_label(next_dose)) if next_dose else wording.continue_trial
    if mtd:
        return wording.stop_mtd.format(dose=dose_label(mtd))
    return wording.stop


def sentence_case(s: str) -> str:
    """A coded term in sentence case ("PROGRESSIVE DISEASE" -> "Progressive disease"; each part of
    "CODE: CODE" likewise); text that is not all upper case as written. CRF codes are upper case;
    reports and the registry read better in sentence case."""
    if ":" in s:
        head, tail = s.split(":", 1)
        return f"{sentence_case(head)}: {tail.strip().lower() if tail.strip().isupper() else tail.strip()}"
    return s[:1].upper() + s[1:].lower() if s.isupper() else s


def exit_reason(reason: str | None) -> str:
    """A participant-flow exit reason as the tables and the flow diagram show it: in sentence case,
    like the stage labels beside it; no reason as "Reason not recorded"."""
    return "Reason not recorded" if reason is None else sentence_case(reason)


def decision_summary(t: ReportTables) -> dict[str, str]:
    """The escalation decision as short sentences for the report (from analysis.escalation_decision)."""
    d = t.escalation_decision
    if d is None:
        return {
            "next_step": "Escalation decision not available (analysis.escalation_decision was not produced).",
            "mtd": "not determined",
            "maturity": "",
            "branches": "",
            "reason": "",
            "variant": "",
        }
    next_step = next_step_text(d.get("DETERMINED"), d["CONTINUE_TRIAL"], d["NEXT_DOSE"], d["MTD"], t.dose_label)
    if d.get("DETERMINED") is False:
        return {
            "next_step": next_step,
            "mtd": "not determined",
            "maturity": "",
            "branches": "",
            "reason": d["REASON"] or "",
            "variant": d["VARIANT"] or "",
        }
    mtd = t.dose_label(d["MTD"]) if d["MTD"] else ("not determined (trial continuing)" if d["CONTINUE_TRIAL"] else "none")
    maturity = (
        "Final on the data at this cut: all DLT windows are closed."
        if d["MATURE"]
        else "Provisional: at least one DLT window is still open; the decision may change when it closes."
    )
    branches = ""
    if not d["MATURE"] and d.get("NODLT_CONTINUE") is not None and d.get("DLT_CONTINUE") is not None:
        def step(prefix: str) -> str:
            text = next_step_text(True, d[f"{prefix}_CONTINUE"], d[f"{prefix}_NEXT_DOSE"], d[f"{prefix}_MTD"], t.dose_label)
            return text[:1].lower() + text[1:].rstrip(".")
        branches = (f"What the open windows decide: if they close without a DLT, {step('NODLT')}; "
                    f"if one of them has a DLT, {step('DLT')}.")
    return {"next_step": next_step, "mtd": mtd, "maturity": maturity, "branches": branches,
            "reason": d["REASON"] or "", "variant": d["VARIANT"] or ""}


def layout_dose_escalation(t: ReportTables) -> DisplayTable:
    columns = ["Dose level", "Enrolled", "Infused", "DLT-evaluable", "DLTs / evaluable", "Pending DLT windows", "Status"]
    rows: list[list[Cell]] = []
    extra: list[list[Cell]] = []
    styles: list[str] = []
    for r in t.dose_escalation:
        pending = r["PENDING"] or 0
        if pending:
            closes = fmt_date(r["WINDOW_CLOSES"])
            pend = f"{pending} (window closes {closes})" if closes else str(pending)
        else:
            pend = "0"
        rows.append(
            [
                t.dose_label(r["DOSE"]),
                r["ENROLLED"],
                r["INFUSED"],
                r["EVALUABLE"],
                f"{r['DLTS']}/{r['EVALUABLE']}",
                pend,
                r["STATUS"] or "",
            ]
        )
        extra.append([r["CELLS"], r["DLTS"], pending, r["WINDOW_CLOSES"]])
        styles.append("")
    s = decision_summary(t)
    note = f"{s['next_step']}. MTD: {s['mtd']}. {s['maturity']}"
    rows.append(["Next step", note] + [None] * (len(columns) - 2))
    extra.append([None, None, None, None])
    styles.append("note")
    return DisplayTable(
        id="dose_escalation",
        title="Dose-escalation status by dose level",
        columns=columns,
        rows=rows,
        row_styles=styles,
        extra_columns=["Cells (planned)", "DLTs (n)", "Pending (n)", "Window closes"],
        extra_rows=extra,
        sheet="Dose escalation",
        footnote=(
            "DLTs / evaluable: adjudicated dose-limiting toxicities among DLT-evaluable participants. "
            "Pending: infused participants still inside the DLT window without a DLT, with the date the "
            "window closes. "
            + (f"Escalation rule: 3+3, {s['variant']} variant. " if s["variant"] else "")
            + "Source: analysis.dose_escalation, analysis.escalation_decision."
            + (" " + _missing_note(t, "dose_escalation", "escalation_decision")).rstrip()
        ),
    )


def _ae_overview(t: ReportTables, summary: list[dict[str, Any]], **display: Any) -> DisplayTable:
    """An AET01-like overview (analysis.teae_summary, analysis.ld_ae_summary) as a display table:
    n (%) per safety column, the events row as a count, n and % apart in the numeric companions."""
    heads = safety_headers(t)
    by_row: dict[int, dict[str, Any]] = {}
    for r in summary:
        e = by_row.setdefault(r["ROWN"], {"label": r["ROWLBL"], "cells": {}})
        e["cells"][r["DOSE"]] = r
    rows: list[list[Cell]] = []
    extra: list[list[Cell]] = []
    for rown in sorted(by_row):
        e = by_row[rown]
        line: list[Cell] = [e["label"]]
        x: list[Cell] = []
        for dose, _ in heads:
            c = e["cells"].get(dose)
            if c is None:
                line.append(None)
                x += [None, None]
            elif c["DENOM"] is None:  # an event count, not a participant count
                line.append(c["N"])
                x += [c["N"], None]
            else:
                line.append(fmt_npct(c["N"], c["PCT"]))
                x += [c["N"], None if c["PCT"] is None else float(c["PCT"])]
        rows.append(line)
        extra.append(x)
    extra_cols = []
    for dose, _ in heads:
        name = "Total" if dose == TOTAL else dose
        extra_cols += [f"{name} n", f"{name} %"]
    return DisplayTable(
        columns=["Participants with at least one"] + [h for _, h in heads],
        rows=rows,
        extra_columns=extra_cols,
        extra_rows=extra,
        dose_columns=[i + 1 for i, (d, _) in enumerate(heads) if d != TOTAL],
        **display,
    )


def layout_teae_overview(t: ReportTables) -> DisplayTable:
    return _ae_overview(
        t, t.teae_summary,
        id="teae_overview",
        title="Treatment-emergent adverse events: overview by dose level",
        sheet="TEAE overview",
        footnote=(
            "n (%) = participants with at least one event of the row, counted once; % of the safety "
            "population (infused) of the column, N in the header. Columns are the actual dose level "
            "received. The number of TEAEs counts events. "
            "Source: analysis.teae_summary, analysis.safety_groups."
            + (" " + _missing_note(t, "teae_summary", "safety_groups")).rstrip()
        ),
    )


def layout_ld_ae_overview(t: ReportTables) -> DisplayTable:
    """The adverse events of the lymphodepletion period that are not treatment-emergent: the
    chemotherapy's cytopenias and nausea, which the TEAE tables (from infusion) leave out."""
    return _ae_overview(
        t, t.ld_ae_summary,
        id="ld_ae_overview",
        title="Adverse events during lymphodepletion (before infusion): overview by dose level",
        sheet="Lymphodepletion AEs",
        footnote=(
            "Adverse events that started on or after the first day of lymphodepletion and before the "
            "infusion (analysis.adae APERIOD = LYMPHODEPLETION) and are not treatment-emergent (the "
            "treatment-emergent period starts at safety.treatment_emergent_anchor: the infusion by default). "
            "They are not in the TEAE tables; cytopenias of this period are why the laboratory table "
            "(post-infusion grades) and the TEAE tables can differ. n (%) as in the TEAE overview. "
            "Source: analysis.ld_ae_summary; each event is a row of analysis.adae."
            + (" " + _missing_note(t, "ld_ae_summary")).rstrip()
        ),
        empty_text="No adverse event during lymphodepletion outside the treatment-emergent period.",
    )


def layout_teae_by_soc_pt(t: ReportTables, scope: str = "ALL") -> DisplayTable:
    """TEAEs by MedDRA SOC (alphabetical) and PT (by decreasing participants in Total, then name).

    analysis.ae_by_term is counted per PT; the SOC line is a heading without counts because a
    participant with two PTs in one SOC would be counted twice by adding PT rows.
    """
    heads = safety_headers(t)
    terms: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for r in t.ae_by_term:
        if r["SCOPE"] != scope:
            continue
        terms.setdefault((r["AEBODSYS"], r["AEDECOD"]), {})[r["DOSE"]] = r
    socs = sorted({soc for soc, _ in terms}, key=lambda s: (s is None, str(s).lower()))
    rows: list[list[Cell]] = []
    extra: list[list[Cell]] = []
    styles: list[str] = []

    # First line: any (serious) TEAE, from analysis.teae_summary's row, so it matches the overview; the events are the overview's count, or for the serious
    # ones the sum of the terms' events (each event has one preferred term).
    serious = scope == "SERIOUS"
    first = "Any serious TEAE" if serious else "Any TEAE"
    any_row = {r["DOSE"]: r for r in t.teae_summary if r["ROWN"] == (SERIOUS_TEAE_ROWN if serious else ANY_TEAE_ROWN)}
    if any_row:
        if serious:
            events = {d: sum(c[d]["N_EVENTS"] for c in terms.values() if d in c) for d, _ in heads}
        else:
            events = {r["DOSE"]: r["N"] for r in t.teae_summary if r["ROWN"] == TEAE_EVENTS_ROWN}
        rows.append(
            [first]
            + [fmt_npct(any_row[d]["N"], any_row[d]["PCT"]) if d in any_row else None for d, _ in heads]
            + [events.get(TOTAL)]
        )
        extra.append([None, first] + [x for d, _ in heads for x in (any_row[d]["N"] if d in any_row else None, events.get(d))])
        styles.append("")

    def total_key(k: tuple[str, str]) -> tuple[int, str]:
        tot = terms[k].get(TOTAL)
        return (-(tot["N_AFFECTED"] if tot else 0), str(k[1]).lower())

    for soc in socs:
        rows.append([soc] + [None] * (len(heads) + 1))
        extra.append([soc, None] + [None] * (2 * len(heads)))
        styles.append("group")
        for key in sorted((k for k in terms if k[0] == soc), key=total_key):
            cells = terms[key]
            line: list[Cell] = [key[1]]
            x: list[Cell] = [soc, key[1]]
            for dose, _ in heads:
                c = cells.get(dose)
                if c is None:
                    line.append(None)
                    x += [None, None]
                    continue
                pct = pct_half_up(c["N_AFFECTED"], c["N_AT_RISK"])
                line.append(fmt_npct(c["N_AFFECTED"], pct))
                x += [c["N_AFFECTED"], c["N_EVENTS"]]
            tot = cells.get(TOTAL)
            line.append(tot["N_EVENTS"] if tot else None)
            rows.append(line)
            extra.append(x)
            styles.append("indent")
    extra_cols = ["SOC", "PT"]
    for dose, _ in heads:
        name = "Total" if dose == TOTAL else dose
        extra_cols += [f"{name} participants", f"{name} events"]
    return DisplayTable(
        id="sae_soc_pt" if serious else "teae_soc_pt",
        title=("Serious TEAEs by MedDRA system organ class and preferred term" if serious
               else "Treatment-emergent adverse events by MedDRA system organ class and preferred term"),
        columns=["System organ class / Preferred term"] + [h for _, h in heads] + ["Events (Total)"],
        rows=rows,
        row_styles=styles,
        extra_columns=extra_cols,
        extra_rows=extra,
        dose_columns=[i + 1 for i, (d, _) in enumerate(heads) if d != TOTAL],
        sheet="Serious TEAE by SOC and PT" if serious else "TEAE by SOC and PT",
        empty_text=("No serious treatment-emergent adverse event at this data cut." if serious
                    else "No treatment-emergent adverse event at this data cut."),
        footnote=(
            ("Serious (AESER = Y) treatment-emergent events only. " if serious else "")
            + "n (%) = participants with the preferred term, counted once; % of the column N. Events (Total) "
            "counts every event in all dose levels. SOCs in alphabetical order; preferred terms by decreasing "
            "number of participants (Total). SOC lines are headings: a participant may have several terms in one SOC. "
            "Uncoded events are shown as 'Uncoded: <reported term>'. Source: analysis.ae_by_term"
            + (" (SCOPE = SERIOUS)." if serious else ".")
            + (" " + _missing_note(t, "ae_by_term")).rstrip()
        ),
    )


def _listing_dose(r: dict[str, Any]) -> str:
    if r.get("DOSEA"):
        return r["DOSEA"]
    if r.get("DOSEP"):
        return f"Not infused ({r['DOSEP']})"
    return "Not enrolled"


def _duration(r: dict[str, Any]) -> Cell:
    if r.get("ASTDT") and r.get("AENDT"):
        return (r["AENDT"] - r["ASTDT"]).days + 1
    if r.get("ASTDT"):
        return "ongoing"
    return None


def _yn(v: Any) -> str:
    return {"Y": "Yes", "N": "No"}.get(v, "" if v is None else str(v))


def _grade(v: Any) -> Cell:
    if v is None:
        return None
    try:
        return int(v)
    except (TypeError, ValueError):
        return str(v)


def layout_dlt_listing(t: ReportTables) -> DisplayTable:
    cols = ["Dose level", "Participant", "AE no.", "Reported term", "Preferred term", "Onset date",
            "Day", "Grade", "Duration (days)", "Serious", "Relationship", "Outcome"]
    rows = [
        [_listing_dose(r), r["SUBJID"], r["AESPID"], r["AETERM"], r["AEDECOD"], fmt_date(r["ASTDT"]),
         r["ADY"], _grade(r["ATOXGR"]), _duration(r), _yn(r["AESER"]), r["AEREL"], r["AEOUT"]]
        for r in t.dlt_listing
    ]
    return DisplayTable(
        id="dlt_listing",
        title="Listing of dose-limiting toxicities",
        columns=cols,
        rows=rows,
        kind="listing",
        sheet="DLT listing",
        empty_text="No dose-limiting toxicity has been adjudicated at this data cut.",
        footnote=(
            "Adjudicated DLTs: events the investigator assessed as DLT with onset inside the DLT window "
            "(analysis.adae DLTFL = 'Y'). Day: days from infusion (day 0 = infusion). Duration: end date - "
            "onset date + 1; 'ongoing' when no end date. Grade: CTCAE v5.0 / ASTCT 2019 for CRS and ICANS."
            + (" " + _missing_note(t, "adae", "adsl")).rstrip()
        ),
    )


def layout_sae_listing(t: ReportTables) -> DisplayTable:
    cols = ["Dose level", "Participant", "AE no.", "Reported term", "Preferred term", "System organ class",
            "Onset date", "Day", "Grade", "Relationship", "Outcome", "TEAE", "DLT"]
    rows = [
        [_listing_dose(r), r["SUBJID"], r["AESPID"], r["AETERM"], r["AEDECOD"], r["AEBODSYS"],
         fmt_date(r["ASTDT"]), r["ADY"], _grade(r["ATOXGR"]), r["AEREL"], r["AEOUT"],
         _yn(r["TRTEMFL"] or "N"), _yn(r["DLTFL"])]
        for r in t.sae_listing
    ]
    return DisplayTable(
        id="sae_listing",
        title="Listing of serious adverse events",
        columns=cols,
        rows=rows,
        kind="listing",
        sheet="SAE listing",
        empty_text="No serious adverse event has been reported at this data cut.",
        footnote=(
            "All serious adverse events recorded, including those before infusion (TEAE = No). Dose level: "
            "actual dose level received; for participants not infused, the assigned level in brackets. "
            "Day: days from infusion (day 0 = infusion)."
            + (" " + _missing_note(t, "adae", "adsl")).rstrip()
        ),
    )


def layout_deaths_listing(t: ReportTables) -> DisplayTable:
    cols = ["Dose level", "Participant", "Age", "Sex", "Infusion date", "Date of death",
            "Day after infusion", "Cause of death", "Fatal adverse event(s)"]
    rows = [
        [_listing_dose(r), r["SUBJID"], r["AGE"], r["SEX"], fmt_date(r["TRTSDT"]), fmt_date(r["DTHDT"]),
         r["DTHDY"], r["DTHCAUS"], r["FATALAE"]]
        for r in t.deaths
    ]
    return DisplayTable(
        id="deaths",
        title="Listing of deaths",
        columns=cols,
        rows=rows,
        kind="listing",
        sheet="Deaths",
        empty_text="No death has been reported at this data cut.",
        footnote=(
            "All deaths of screened participants. Cause of death as recorded (free text). Fatal adverse "
            "events: preferred terms of grade 5 events or events with fatal outcome."
            + (" " + _missing_note(t, "adsl", "adae")).rstrip()
        ),
    )


SESSIONS = ("Open", "Closed")


def display_tables(t: ReportTables, session: str = "Closed") -> list[DisplayTable]:
    """Every display table in report order (the workbook writes one sheet per table).

    Closed session (the default; the DSMB's closed report and the sponsor workbook): by dose level,
    with the participant-level listings. Open session: the same tables pooled over dose levels
    (Total column only) and no participant-level listing; participant flow and the dose-escalation
    status stay by dose level, because the dose level is the design (open label, every
    investigator knows it) and the DSMB decides on it in the open session."""
    from deliverables import (
        clinical_tables as ct,  # imported here: clinical_tables builds on this module
    )

    if session not in SESSIONS:
        raise ValueError(f"session must be one of {SESSIONS}, got {session!r}")
    tables = [
        layout_participant_flow(t),
        ct.layout_baseline(t),
        ct.layout_exposure(t),
        ct.layout_exposure_listing(t),
        layout_dose_escalation(t),
        layout_dlt_listing(t),
        layout_teae_overview(t),
        layout_teae_by_soc_pt(t),
        ct.layout_teae_by_grade(t),
        layout_ld_ae_overview(t),
        layout_teae_by_soc_pt(t, "SERIOUS"),
        layout_sae_listing(t),
        layout_deaths_listing(t),
        ct.layout_crs_icans(t),
        ct.layout_crs_icans_listing(t),
        ct.layout_haematology(t),
        ct.layout_pk(t),
        ct.layout_response(t),
        layout_data_quality(t),
        layout_form_completeness(t),
        layout_protocol_deviations(t),
    ]
    return tables if session == "Closed" else open_session(tables)


def open_session(closed: list[DisplayTable]) -> list[DisplayTable]:
    """The open session's display tables from the closed session's: pooled, without listings."""
    return [pooled(d) for d in closed if d.kind != "listing"]


def pooled(d: DisplayTable) -> DisplayTable:
    """The table with its per-dose-level columns removed (Total only); the machine-friendly extra
    columns go too (the open report is a PDF; the workbook keeps every column)."""
    if not d.dose_columns:
        return d
    keep = [i for i in range(len(d.columns)) if i not in set(d.dose_columns)]
    return DisplayTable(
        id=d.id,
        title=d.title.replace(" by dose level", "").replace(" by planned dose level", "") + " (pooled)",
        columns=[d.columns[i] for i in keep],
        rows=[[r[i] for i in keep] for r in d.rows],
        footnote=d.footnote + " Open session: all dose levels pooled; by dose level in the closed session.",
        row_styles=list(d.row_styles),
        kind=d.kind,
        empty_text=d.empty_text,
        sheet=d.sheet,
        intro=d.intro,
    )


OPEN_STATUSES = ("Open", "Re-opened")
AGE_BUCKETS = ((0, 30, "0-30 days"), (31, 60, "31-60 days"), (61, 90, "61-90 days"), (91, None, "> 90 days"))


def layout_data_quality(t: ReportTables) -> DisplayTable:
    """Data queries at the cut: by status, and the open ones by days open, form and site."""
    q = t.data_queries
    open_q = [r for r in q if r["STATUS"] in OPEN_STATUSES]
    cut = q[0]["DATA_CUT"] if q else None
    rows: list[list[Cell]] = []
    styles: list[str] = []

    def group(title: str, items: list[tuple[str, int]]) -> None:
        rows.append([title, None])
        styles.append("group")
        for label, n in items or [("None open", 0)]:
            rows.append([label, n])
            styles.append("indent")

    group("By status", [
        ("Open", sum(r["STATUS"] == "Open" for r in q)),
        ("Re-opened", sum(r["STATUS"] == "Re-opened" for r in q)),
        ("Closed", sum(r["STATUS"] == "Closed" for r in q)),
        ("New at this data cut", sum(cut is not None and r["FIRST_SEEN_CUT"] == cut for r in q)),
        ("Closed at this data cut", sum(cut is not None and r["CLOSED_CUT"] == cut for r in q)),
    ])
    group("Open queries by days open", [
        (label, sum(lo <= (r["DAYS_OPEN"] or 0) and (hi is None or (r["DAYS_OPEN"] or 0) <= hi) for r in open_q))
        for lo, hi, label in AGE_BUCKETS
    ])
    forms = sorted({r["FORM"] or "" for r in open_q})
    group("Open queries by form", [(f or "(none)", sum((r["FORM"] or "") == f for r in open_q)) for f in forms])
    sites = sorted({r["SITEID"] or "" for r in open_q})
    group("Open queries by site", [(s or "(none)", sum((r["SITEID"] or "") == s for r in open_q)) for s in sites])
    return DisplayTable(
        id="data_quality",
        title="Data queries at the data cut-off",
        columns=["Measure", "Queries"],
        rows=rows,
        row_styles=styles,
        footnote="Queries: failing records of the validation rules and quarantined rows, tracked across exports "
        "with stable ids (analysis.data_queries); open = Open or Re-opened. Days open: from the data cut at which "
        "the query was first seen. The data-queries workbook lists every query.",
        sheet="Data quality",
    )


def layout_form_completeness(t: ReportTables) -> DisplayTable:
    from clinical.crf import form_label

    rows: list[list[Cell]] = []
    for r in t.form_completeness:
        exp = r["EXPECTED"]
        rows.append([
            form_label(r["FORM"]), r["RECEIVED"], r["ACCEPTED"], r["QUARANTINED"],
            r["AFTER_CUT"], r["SUBJECTS"],
            POPULATION_LABELS.get(r["POPULATION"], "") if r["POPULATION"] else "(none)",
            exp,
            "" if exp is None else fmt_npct(r["EXPECTED_WITH"], pct_half_up(r["EXPECTED_WITH"], exp)) if exp else "",
        ])
    return DisplayTable(
        id="form_completeness",
        title="Form completeness at the data cut-off",
        columns=["Form", "Records received", "Accepted", "Quarantined", "After cut-off", "Participants with a record",
                 "Expected of", "Expected (n)", "Expected with a record"],
        rows=rows,
        footnote="Records received: rows of the export file; accepted: rows that passed ingest; quarantined: rows "
        "held back with a reason (the data-queries workbook lists them); after cut-off: accepted records dated "
        "after the data cut-off, not analysed in this report (cut.after_cut). Expected of: the population (ADSL flag, "
        "study configuration data_quality.expected_forms) that should have at least one record of the form by "
        "the data cut; forms without one (adverse events, medications, disposition) are counted only. "
        "Sources: raw.<form>, stage.<form>, raw.held (the quarantine rows that hold their record back), "
        "cut.after_cut, analysis.adsl.",
        sheet="Form completeness",
        empty_text="Form counts are not available in this database.",
    )


def layout_protocol_deviations(t: ReportTables) -> DisplayTable:
    rows: list[list[Cell]] = [
        [r["SUBJID"], t.dose_label(r["DOSEP"]), r["CRITLBL"],
         "" if r["VALUE"] is None else f"{r['VALUE']}{' ' + r['UNIT'] if r['UNIT'] else ''}",
         r["THRESHOLD_TEXT"], r["IEYN"] or ""]
        for r in t.protocol_deviations
    ]
    return DisplayTable(
        id="protocol_deviations",
        title="Eligibility protocol deviations",
        columns=["Participant", "Dose level", "Criterion", "Screening value", "Threshold", "Investigator: met"],
        rows=rows,
        kind="listing",
        footnote="Enrolled participants whose screening values miss a numeric inclusion criterion of the study "
        "configuration (analysis.protocol_deviations).",
        empty_text="No eligibility deviation among enrolled participants at this data cut.",
        sheet="Protocol deviations",
    )


# --------------------------------------------------------------------------------------------------
# The PDF's page budget: long listings are summarised there and listed in full in the workbook

# A listing longer than this is not printed row by row in the PDF (about three landscape pages):
# the PDF shows a summary of it and the sponsor workbook the complete listing. At the demo's size
# every listing is far below it; at 10,000 participants the SAE listing alone has thousands of rows,
# which would be a PDF of hundreds of pages nobody reads.
PDF_LISTING_ROWS = 60
# Rows of the summary: the most frequent values, then one line for all the others.
SUMMARY_ROWS = 25
# What a summarised listing is counted by (column header of the listing).
SUMMARY_BY = {"dlt_listing": "Preferred term", "sae_listing": "Preferred term", "deaths": "Cause of death",
              "crs_icans_listing": "Category", "exposure_listing": "Fludarabine days",
              "protocol_deviations": "Criterion", "changes_listing": "Change"}
SUMMARY_UNIT = {"dlt_listing": "events", "sae_listing": "events", "deaths": "deaths", "crs_icans_listing": "events",
                "exposure_listing": "participants", "protocol_deviations": "deviations", "changes_listing": "changes"}


def summarise_listing(d: DisplayTable, budget: int | None = None) -> DisplayTable:
    """The PDF stand-in for a listing longer than ``budget`` rows: row counts by the listing's key
    column (preferred term, cause of death) and dose level, most frequent first, with a note that
    the full listing is in the sponsor workbook. Counted from the listing's own display rows, so
    the summary and the workbook sheet cannot disagree."""
    budget = PDF_LISTING_ROWS if budget is None else budget
    by = SUMMARY_BY.get(d.id, d.columns[min(1, len(d.columns) - 1)])
    key_col = d.columns.index(by) if by in d.columns else 0
    subj_col = d.columns.index("Participant") if "Participant" in d.columns else None
    doses: list[str] = []
    counts: dict[str, dict[str, int]] = {}
    people: set[Any] = set()
    dose_col = d.columns.index("Dose level") if "Dose level" in d.columns else 0
    for row in d.rows:
        dose = str(row[dose_col]) if row[dose_col] is not None else ""
        if dose not in doses:
            doses.append(dose)
        key = "" if row[key_col] is None else str(row[key_col])
        cell = counts.setdefault(key, {})
        cell[dose] = cell.get(dose, 0) + 1
        if subj_col is not None:
            people.add(row[subj_col])
    ranked = sorted(counts.items(), key=lambda kv: (-sum(kv[1].values()), kv[0].lower()))
    shown, rest = ranked[:SUMMARY_ROWS], ranked[SUMMARY_ROWS:]
    rows: list[list[Cell]] = []
    styles: list[str] = []
    for key, by_dose in shown:
        rows.append([key or "(blank)"] + [by_dose.get(x, 0) for x in doses] + [sum(by_dose.values())])
        styles.append("")
    if rest:
        other: dict[str, int] = {}
        for _, by_dose in rest:
            for x, n in by_dose.items():
                other[x] = other.get(x, 0) + n
        rows.append([f"All other ({len(rest)} {by.lower()} values)"] + [other.get(x, 0) for x in doses]
                    + [sum(other.values())])
        styles.append("indent")
    rows.append(["Total"] + [sum(c.get(x, 0) for c in counts.values()) for x in doses] + [len(d.rows)])
    styles.append("set")
    unit = SUMMARY_UNIT.get(d.id, "rows")
    who = f" of {len(people):,} participants" if subj_col is not None else ""
    intro = (
        f"This listing has {len(d.rows):,} {unit}{who}, more than the {budget} rows this report lists in full: "
        f"the complete listing is in the sponsor workbook, sheet '{d.sheet}'. Below, the number of {unit} "
        f"by {by.lower()} and dose level, most frequent first."
    )
    return DisplayTable(
        id=d.id,
        title=f"{d.title} (summary; complete listing in the sponsor workbook)",
        columns=[by] + doses + ["Total"],
        rows=rows,
        row_styles=styles,
        footnote=f"Counts are {unit} of the listing, by its {by.lower()} and dose level. About the listing: {d.footnote}",
        kind=d.kind,
        empty_text=d.empty_text,
        sheet=d.sheet,
        intro=intro,
    )


def within_budget(shown: list[DisplayTable], budget: int | None = None) -> list[DisplayTable]:
    """The tables as a PDF shows them: listings beyond ``budget`` rows (default
    :data:`PDF_LISTING_ROWS`) summarised."""
    budget = PDF_LISTING_ROWS if budget is None else budget
    return [summarise_listing(d, budget) if d.kind == "listing" and len(d.rows) > budget else d for d in shown]


def pdf_tables(t: ReportTables, budget: int | None = None, session: str = "Closed",
               closed: list[DisplayTable] | None = None) -> list[DisplayTable]:
    """The display tables as the PDF of ``session`` shows them (:func:`within_budget`). ``closed``:
    the closed session's display tables, if already built (``display_tables(t)``); the open
    session's are made from them."""
    if closed is None:
        shown = display_tables(t, session)
    else:
        shown = closed if session == "Closed" else open_session(closed)
    return within_budget(shown, budget)


# --------------------------------------------------------------------------------------------------
# Flow diagram data and cross-table checks


@dataclass
class FlowBox:
    label: str
    total: int | None
    by_dose: list[tuple[str, int]]  # (dose id, n); empty for overall-only boxes
    side_title: str = ""
    side: list[tuple[str, int]] = field(default_factory=list)  # (reason, n), Total column
    kind: str = "stage"  # "stage" or "set"


def flow_boxes(t: ReportTables) -> list[FlowBox]:
    """CONSORT-style boxes: screened (with screen failures), then each stage with its exits."""
    boxes: list[FlowBox] = []
    scr = {r["ROWN"]: r for r in t.flow_screening}
    screened = scr.get(1)
    if screened is not None:
        reasons = []
        for r in t.flow_screening:
            label, indent = _label_indent(r["ROWLBL"])
            if indent and r["N"]:
                reasons.append((label, r["N"]))
        not_enr = scr.get(2)
        boxes.append(
            FlowBox(
                label=screened["ROWLBL"],
                total=screened["N"],
                by_dose=[],
                side_title=f"{not_enr['ROWLBL']} (n={not_enr['N']})" if not_enr else "",
                side=reasons,
            )
        )
    stages: dict[int, dict[str, Any]] = {}
    for r in t.participant_flow:
        s = stages.setdefault(r["STAGEN"], {"label": r["STAGELBL"], "kind": r["STAGEKIND"], "n": {}})
        s["n"][r["DOSE"]] = r["N"]
    exits: dict[int, list[tuple[str, int]]] = {}
    for e in t.flow_exits:
        if e["DOSE"] == TOTAL:
            exits.setdefault(e["STAGEN"], []).append((exit_reason(e["REASON"]), e["N"]))
    dose_ids = [d["DOSE"] for d in t.dose_levels]
    order = sorted(stages)
    for i, n in enumerate(order):
        s = stages[n]
        box = FlowBox(
            label=s["label"],
            total=s["n"].get(TOTAL),
            by_dose=[(d, s["n"].get(d, 0)) for d in dose_ids],
            kind="set" if s["kind"] != "STAGE" else "stage",
        )
        if box.kind == "set":
            out = exits.get(n, [])
            box.side_title = f"Not {_lower_first(s['label'])} (n={sum(x for _, x in out)})" if out else ""
            box.side = out
        else:
            nxt = next((m for m in order[i + 1 :] if stages[m]["kind"] == "STAGE"), None)
            out = exits.get(nxt, []) if nxt is not None else []
            if out:
                box.side_title = f"Did not reach '{_short_stage(stages[nxt]['label'])}' (n={sum(x for _, x in out)})"
                box.side = out
        boxes.append(box)
    return boxes


def consistency_problems(t: ReportTables) -> list[str]:
    """Cross-table checks the DSMB can rely on: denominators and counts agree between tables."""
    problems: list[str] = []
    flow = {(r["STAGE"], r["DOSE"]): r["N"] for r in t.participant_flow}
    scr = {r["ROWN"]: r["N"] for r in t.flow_screening}
    if 1001 in scr and ("enrolled", TOTAL) in flow and scr[1001] != flow[("enrolled", TOTAL)]:
        problems.append(f"flow_screening enrolled {scr[1001]} != participant_flow enrolled {flow[('enrolled', TOTAL)]}")
    groups = {g["DOSE"]: g["N_AT_RISK"] for g in t.safety_groups}
    for name, summary in (("teae_summary", t.teae_summary), ("ld_ae_summary", t.ld_ae_summary)):
        for r in summary:
            if r["DENOM"] is not None and groups.get(r["DOSE"]) != r["DENOM"]:
                problems.append(f"{name} row {r['ROWN']} {r['DOSE']}: denominator {r['DENOM']} != N at risk "
                                f"{groups.get(r['DOSE'])}")
    for r in t.ae_by_term:
        if groups.get(r["DOSE"]) != r["N_AT_RISK"]:
            problems.append(f"ae_by_term {r['AEDECOD']} {r['DOSE']}: N at risk {r['N_AT_RISK']} != {groups.get(r['DOSE'])}")
            break
    if ("infused", TOTAL) in flow and TOTAL in groups and flow[("infused", TOTAL)] != groups[TOTAL]:
        problems.append(f"infused {flow[('infused', TOTAL)]} (flow) != safety population {groups[TOTAL]}")
    for r in t.dose_escalation:
        for col, stage in (("ENROLLED", "enrolled"), ("INFUSED", "infused"), ("EVALUABLE", "dlt_evaluable")):
            f = flow.get((stage, r["DOSE"]))
            if f is not None and r[col] is not None and f != r[col]:
                problems.append(f"{r['DOSE']}: dose_escalation {col.lower()} {r[col]} != participant_flow {stage} {f}")
    dlt_total = sum(1 for _ in {(r["SUBJID"]) for r in t.dlt_listing})
    esc_dlts = sum((r["DLTS"] or 0) for r in t.dose_escalation)
    if t.dose_escalation and "adae" not in t.missing and dlt_total != esc_dlts:
        problems.append(f"participants in the DLT listing ({dlt_total}) != DLTs in dose_escalation ({esc_dlts})")
    return problems


def key_figures(t: ReportTables) -> list[tuple[str, Cell]]:
    """Headline numbers for the summary, each read from an analysis table."""
    flow = {(r["STAGE"], r["DOSE"]): r["N"] for r in t.participant_flow}
    scr = {r["ROWN"]: r["N"] for r in t.flow_screening}
    summ = {(r["ROWN"], r["DOSE"]): r for r in t.teae_summary}
    out: list[tuple[str, Cell]] = []
    if 1 in scr:
        out.append(("Screened", scr[1]))
    for stage, label in (("enrolled", "Enrolled"), ("infused", "Infused (safety population)"),
                         ("dlt_evaluable", "DLT-evaluable")):
        if (stage, TOTAL) in flow:
            out.append((label, flow[(stage, TOTAL)]))
    if t.dose_escalation:
        # A DLT rate is of the DLT-evaluable participants (the escalation table's and the registry's
        # denominator), not of the safety population the TEAE rows below use.
        dlts, evaluable = (sum(r[k] or 0 for r in t.dose_escalation) for k in ("DLTS", "EVALUABLE"))
        rate = pct_half_up(dlts, evaluable)
        out.append(("Participants with a DLT", f"{dlts} of {evaluable}" + (f" ({rate:.1f}%)" if rate is not None else "")))
    for rown, label in ((SERIOUS_TEAE_ROWN, "Participants with a serious TEAE"),
                        (GRADE3_TEAE_ROWN, "Participants with a grade >= 3 TEAE")):
        r = summ.get((rown, TOTAL))
        if r is not None:
            out.append((label, fmt_npct(r["N"], r["PCT"])))
    if "adsl" not in t.missing:
        out.append(("Deaths (all screened participants)", len(t.deaths)))
    return out
