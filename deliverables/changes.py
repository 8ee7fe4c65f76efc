"""Changes since the previous data cut, for the DSMB report (issue 6).

    changes = compare_cuts(previous_con, current_con, previous_cut, current_cut)
    tables = layout_changes(changes, report_tables.dose_label)   # [summary, listing]

``compare_cuts`` compares the analysis data of two data cuts: ``analysis.adsl``, ``analysis.adae``
and ``analysis.escalation_decision`` of the previous cut's database and of the current one. The
columns it needs are read from each connection by fixed queries (no value is ever written into
SQL text), into Arrow tables, and compared set-based in a private in-memory DuckDB connection.
Neither database is written to and nothing is registered on the callers' connections, so the
previous cut's ``trial.duckdb`` can be opened read-only. No path goes into SQL either: the
previous database is a connection the caller opened (``compare_with_previous_dir`` opens it with
``duckdb.connect(path, read_only=True)``) rather than an ATTACH, whose path DuckDB cannot take as a
prepared parameter. The only text formatted into SQL is the constant column and table names below.

Categories (each a list of :class:`ChangeRow`, sorted by date, participant, AE number):

  screened       participants in ADSL now and not at the previous cut (date: informed consent,
                 RFICDT, blank while the enrolment form is not yet entered)
  enrolled       ENRLFL = 'Y' now, not at the previous cut (date: ENRLDT)
  infused        SAFFL = 'Y' now, not at the previous cut (date: TRTSDT)
  dlts           AEs with DLTFL = 'Y' now that were not DLTs (or not reported) at the previous cut
  saes           AEs with AESER = 'Y' now that were not serious (or not reported) before
  deaths         DTHDT recorded now, not at the previous cut (detail: DTHCAUS)
  grade_changes  the same AE (SUBJID + AESPID) with a different ATOXGR; and a worsening recorded as
                 a new row (CDASH: a change of grade is a new AE row from the day it worsened; see
                 ``clinical.adae``): a new row of the same participant and term (AEDECOD, else
                 AETERM) with a higher grade than a row reported at the previous cut, starting on or
                 after that row's onset and at the latest the day after it ended (or while ongoing)
  teae_grade3    treatment-emergent AEs of grade >= 3 now that were not (new events, or events
                 whose grade or treatment-emergent flag changed)
  disposition    end-of-study status (EOSSTT) different from the previous cut's (previous blank
                 for participants new at this cut)
  removed        what the previous cut had and this one no longer has: a participant or an AE
                 record, or a DLT, serious, enrolled, infused or death flag withdrawn. These are
                 data corrections the DSMB should hear about.

The escalation decision (analysis.escalation_decision) is compared as a whole: the next step
(continue at a dose level, or stop with an MTD) of the previous cut against the current one.

Dose level of a row: the dose level received (DOSEA) for infused participants, else the assigned
one (DOSEP), else blank (not enrolled), from the current cut's ADSL.

When there is no previous cut (first report) nothing is listed as new: ``CutChanges.first_report``
is True and ``note`` says "First report: no previous data cut".
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import duckdb

from deliverables.tables import STEP_SHORT, Cell, DisplayTable, fmt_date, next_step_text

FIRST_REPORT_NOTE = "First report: no previous data cut. Every participant and event is new; see the tables of this report."


# --------------------------------------------------------------------------------------------------
# Result types


@dataclass(frozen=True)
class ChangeRow:
    """One change. Fields that do not apply to the category are None.

    SUBJID; DOSE: dose level id (received, else assigned); DATE: the date of the change's event
    (consent, enrolment, infusion, AE onset, death, end of study); AESPID, AETERM, AEDECOD, GRADE
    (current ATOXGR) for AE rows; PREVIOUS / CURRENT: the value at the previous cut and now, as
    text, where a value changed (grade, end-of-study status, flag); DETAIL: cause of death, what
    kind of change, what was removed.
    """

    SUBJID: str
    DOSE: str | None = None
    DATE: dt.date | None = None
    AESPID: int | None = None
    AETERM: str | None = None
    AEDECOD: str | None = None
    GRADE: int | None = None
    PREVIOUS: str | None = None
    CURRENT: str | None = None
    DETAIL: str | None = None


@dataclass(frozen=True)
class EscalationState:
    """One row of analysis.escalation_decision (the fields that make the next step)."""

    outcomes: str | None
    next_dose: str | None
    continue_trial: bool | None
    mtd: str | None
    determined: bool | None = True

    def step(self, dose_label: Callable[[str | None], str] = lambda d: d or "") -> str:
        """The next step in a few words: 'Continue at DL2 5x10^8 cells', 'Stop escalation: MTD DL1 ...'."""
        return next_step_text(self.determined, self.continue_trial, self.next_dose, self.mtd, dose_label, STEP_SHORT)

    @property
    def decision(self) -> tuple[Any, ...]:
        """What counts as the decision: a change in any of these is an escalation change."""
        return (self.determined, self.continue_trial, self.next_dose, self.mtd)


@dataclass(frozen=True)
class EscalationChange:
    previous: EscalationState | None
    current: EscalationState | None

    @property
    def changed(self) -> bool:
        if self.previous is None or self.current is None:
            return False
        return self.previous.decision != self.current.decision


@dataclass(frozen=True)
class Category:
    key: str
    label: str  # what a change of this category is
    total_label: str | None  # the running total compared in the summary (None: no total)


CATEGORIES: tuple[Category, ...] = (
    Category("screened", "New participants screened", "Participants screened"),
    Category("enrolled", "New participants enrolled", "Participants enrolled"),
    Category("infused", "New participants infused", "Participants infused (safety population)"),
    Category("dlts", "New dose-limiting toxicities", "DLTs (events)"),
    Category("saes", "New serious adverse events", "Serious adverse events (events)"),
    Category("deaths", "New deaths", "Deaths"),
    Category("grade_changes", "Adverse-event grade changes", None),
    Category("teae_grade3", "New treatment-emergent adverse events of grade >= 3", "TEAEs of grade >= 3 (events)"),
    Category("disposition", "End-of-study status changes", "Participants who ended the study"),
    Category("removed", "Records or flags no longer in the data", None),
)
CATEGORY_KEYS = tuple(c.key for c in CATEGORIES)
ESCALATION_LABEL = "Escalation decision changed"


@dataclass
class CutChanges:
    """The changes between two data cuts. ``first_report``: there was no previous cut."""

    current_cut: dt.date
    previous_cut: dt.date | None
    first_report: bool
    screened: list[ChangeRow] = field(default_factory=list)
    enrolled: list[ChangeRow] = field(default_factory=list)
    infused: list[ChangeRow] = field(default_factory=list)
    dlts: list[ChangeRow] = field(default_factory=list)
    saes: list[ChangeRow] = field(default_factory=list)
    deaths: list[ChangeRow] = field(default_factory=list)
    grade_changes: list[ChangeRow] = field(default_factory=list)
    teae_grade3: list[ChangeRow] = field(default_factory=list)
    disposition: list[ChangeRow] = field(default_factory=list)
    removed: list[ChangeRow] = field(default_factory=list)
    escalation: EscalationChange = field(default_factory=lambda: EscalationChange(None, None))
    # category key -> (total at the previous cut or None, total now), for categories with a total
    totals: dict[str, tuple[int | None, int]] = field(default_factory=dict)

    @property
    def note(self) -> str:
        return FIRST_REPORT_NOTE if self.first_report else ""

    def rows(self, key: str) -> list[ChangeRow]:
        if key not in CATEGORY_KEYS:
            raise KeyError(key)
        return getattr(self, key)

    @property
    def counts(self) -> dict[str, int]:
        """Number of changes per category, plus 'escalation' (1 when the decision changed)."""
        out = {k: len(self.rows(k)) for k in CATEGORY_KEYS}
        out["escalation"] = int(self.escalation.changed)
        return out

    @property
    def any_change(self) -> bool:
        return any(self.counts.values())


class SummaryLine(NamedTuple):
    """One line of the changes summary: the category key ('escalation' for the escalation decision),
    what changed, and the number of changes."""

    key: str
    label: str
    n: int


def summary_lines(changes: CutChanges) -> list[SummaryLine]:
    """The counted lines of the changes summary, in the summary table's order: each category, then
    whether the escalation decision changed (1 or 0). No lines on a first report (nothing is listed as new).

    The one source of the counts the summary table shows (:func:`layout_changes`) and of the DSMB
    report's request to review them (``deliverables.dsmb._changes_ask``), so the two cannot disagree."""
    if changes.first_report:
        return []
    counts = changes.counts
    return [SummaryLine(c.key, c.label, counts[c.key]) for c in CATEGORIES] + [
        SummaryLine("escalation", ESCALATION_LABEL, counts["escalation"])]


def row_sort_key(r: ChangeRow) -> tuple[Any, ...]:
    """Chronological, then participant, AE number, detail: the order of every category's list."""
    return (
        r.DATE is None, r.DATE or dt.date.min, r.SUBJID,
        r.AESPID is not None, r.AESPID if r.AESPID is not None else 0,
        r.DETAIL or "", r.PREVIOUS or "", r.CURRENT or "",
    )


# --------------------------------------------------------------------------------------------------
# Reading the two cuts

# Columns read from each database, with the type used when an older database lacks a column.
ADSL_COLUMNS: tuple[tuple[str, str], ...] = (
    ("STUDYID", "VARCHAR"), ("SUBJID", "VARCHAR"), ("RFICDT", "DATE"), ("ENRLDT", "DATE"), ("ENRLFL", "VARCHAR"),
    ("DOSEP", "VARCHAR"), ("TRTSDT", "DATE"), ("SAFFL", "VARCHAR"), ("DOSEA", "VARCHAR"), ("DTHDT", "DATE"),
    ("DTHCAUS", "VARCHAR"), ("EOSSTT", "VARCHAR"), ("EOSDT", "DATE"),
)
ADAE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("SUBJID", "VARCHAR"), ("AESPID", "BIGINT"), ("AETERM", "VARCHAR"), ("AEDECOD", "VARCHAR"), ("ASTDT", "DATE"),
    ("AENDT", "DATE"), ("ATOXGR", "BIGINT"), ("AESER", "VARCHAR"), ("TRTEMFL", "VARCHAR"), ("DLTFL", "VARCHAR"),
)
DECISION_COLUMNS: tuple[tuple[str, str], ...] = (
    ("OUTCOMES", "VARCHAR"), ("NEXT_DOSE", "VARCHAR"), ("CONTINUE_TRIAL", "BOOLEAN"), ("MTD", "VARCHAR"),
    ("DETERMINED", "BOOLEAN"),
)


class MissingCutData(LookupError):
    """A database lacks analysis.adsl or analysis.adae: the cuts cannot be compared."""


def _columns(con: duckdb.DuckDBPyConnection, table: str) -> set[str] | None:
    rows = con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'analysis' AND table_name = ?",
        [table],
    ).fetchall()
    return {r[0].upper() for r in rows} or None


def _extract(con: duckdb.DuckDBPyConnection, table: str, columns: Sequence[tuple[str, str]], what: str):
    """The listed columns of analysis.<table> as an Arrow table; a column the database does not have
    (an older schema) reads as NULL. Table and column names come from the constants above only."""
    have = _columns(con, table)
    if have is None:
        raise MissingCutData(f"{what} database has no analysis.{table}: the data cuts cannot be compared")
    select = ", ".join(
        f'CAST("{name}" AS {typ}) AS "{name}"' if name in have else f'CAST(NULL AS {typ}) AS "{name}"'
        for name, typ in columns
    )
    return con.sql(f"SELECT {select} FROM analysis.{table}").to_arrow_table()


def _decision(con: duckdb.DuckDBPyConnection) -> EscalationState | None:
    have = _columns(con, "escalation_decision")
    if have is None:
        return None
    select = ", ".join(
        f'CAST("{n}" AS {t})' if n in have else (f"CAST(TRUE AS {t})" if n == "DETERMINED" else f"CAST(NULL AS {t})")
        for n, t in DECISION_COLUMNS
    )
    rows = con.execute(f"SELECT {select} FROM analysis.escalation_decision").fetchall()
    if len(rows) != 1:
        return None
    o, nd, ct, mtd, det = rows[0]
    return EscalationState(o, nd, ct, mtd, True if det is None else det)


# Totals per cut, on the tables registered as adsl_<side> / adae_<side>.
TOTALS_SQL = """
SELECT
  (SELECT count(*) FROM adsl_{s}) AS screened,
  (SELECT count(*) FROM adsl_{s} WHERE ENRLFL = 'Y') AS enrolled,
  (SELECT count(*) FROM adsl_{s} WHERE SAFFL = 'Y') AS infused,
  (SELECT count(*) FROM adae_{s} WHERE DLTFL = 'Y') AS dlts,
  (SELECT count(*) FROM adae_{s} WHERE AESER = 'Y') AS saes,
  (SELECT count(*) FROM adsl_{s} WHERE DTHDT IS NOT NULL) AS deaths,
  (SELECT count(*) FROM adae_{s} WHERE TRTEMFL = 'Y' AND ATOXGR >= 3) AS teae_grade3,
  (SELECT count(*) FROM adsl_{s} WHERE EOSSTT IS NOT NULL) AS disposition
"""

# Every query returns the columns of ChangeRow, in its field order. adsl_prev / adae_prev: the
# previous cut; adsl_cur / adae_cur: the current one (all registered Arrow tables).
_DOSE = "coalesce(c.DOSEA, c.DOSEP)"

_AE_FLAG_SQL = """
SELECT a.SUBJID, coalesce(s.DOSEA, s.DOSEP), a.ASTDT, a.AESPID, a.AETERM, a.AEDECOD, a.ATOXGR,
       CASE WHEN p.SUBJID IS NULL THEN NULL ELSE {previous_text} END,
       NULL, NULL
FROM adae_cur a
LEFT JOIN adae_prev p ON p.SUBJID = a.SUBJID AND p.AESPID IS NOT DISTINCT FROM a.AESPID
LEFT JOIN adsl_cur s ON s.SUBJID = a.SUBJID
WHERE ({cond_a}) AND NOT coalesce({cond_p}, FALSE)
"""

CATEGORY_SQL: dict[str, str] = {
    "screened": f"""
        SELECT c.SUBJID, {_DOSE}, c.RFICDT, NULL, NULL, NULL, NULL, NULL, NULL, NULL
        FROM adsl_cur c WHERE c.SUBJID NOT IN (SELECT SUBJID FROM adsl_prev WHERE SUBJID IS NOT NULL)""",
    "enrolled": f"""
        SELECT c.SUBJID, {_DOSE}, c.ENRLDT, NULL, NULL, NULL, NULL, NULL, NULL, NULL
        FROM adsl_cur c LEFT JOIN adsl_prev p USING (SUBJID)
        WHERE c.ENRLFL = 'Y' AND p.ENRLFL IS DISTINCT FROM 'Y'""",
    "infused": f"""
        SELECT c.SUBJID, {_DOSE}, c.TRTSDT, NULL, NULL, NULL, NULL, NULL, NULL, NULL
        FROM adsl_cur c LEFT JOIN adsl_prev p USING (SUBJID)
        WHERE c.SAFFL = 'Y' AND p.SAFFL IS DISTINCT FROM 'Y'""",
    "dlts": _AE_FLAG_SQL.format(previous_text="'not a DLT'", cond_a="a.DLTFL = 'Y'", cond_p="p.DLTFL = 'Y'"),
    "saes": _AE_FLAG_SQL.format(previous_text="'not serious'", cond_a="a.AESER = 'Y'", cond_p="p.AESER = 'Y'"),
    "deaths": f"""
        SELECT c.SUBJID, {_DOSE}, c.DTHDT, NULL, NULL, NULL, NULL, NULL, NULL, c.DTHCAUS
        FROM adsl_cur c LEFT JOIN adsl_prev p USING (SUBJID)
        WHERE c.DTHDT IS NOT NULL AND p.DTHDT IS NULL""",
    "grade_changes": """
        -- the same event, graded differently
        SELECT a.SUBJID, coalesce(s.DOSEA, s.DOSEP), a.ASTDT, a.AESPID, a.AETERM, a.AEDECOD, a.ATOXGR,
               CAST(p.ATOXGR AS VARCHAR), CAST(a.ATOXGR AS VARCHAR),
               CASE WHEN a.ATOXGR > p.ATOXGR THEN 'grade increased'
                    WHEN a.ATOXGR < p.ATOXGR THEN 'grade decreased' ELSE 'grade changed' END
        FROM adae_cur a
        JOIN adae_prev p ON p.SUBJID = a.SUBJID AND p.AESPID = a.AESPID
        LEFT JOIN adsl_cur s ON s.SUBJID = a.SUBJID
        WHERE a.ATOXGR IS DISTINCT FROM p.ATOXGR
        UNION ALL
        -- a worsening recorded as a new row (CDASH): a new row continuing an earlier, lower-grade
        -- row of the same participant and term, started while that row was ongoing or the day after
        SELECT SUBJID, DOSE, ASTDT, AESPID, AETERM, AEDECOD, ATOXGR, CAST(OLDGR AS VARCHAR),
               CAST(ATOXGR AS VARCHAR), 'worsening recorded as a new row (continues AE ' || OLDSPID || ')'
        FROM (
          SELECT n.SUBJID, coalesce(s.DOSEA, s.DOSEP) AS DOSE, n.ASTDT, n.AESPID, n.AETERM, n.AEDECOD, n.ATOXGR,
                 o.ATOXGR AS OLDGR, o.AESPID AS OLDSPID,
                 row_number() OVER (PARTITION BY n.SUBJID, n.AESPID
                                    ORDER BY o.ASTDT DESC NULLS LAST, o.AESPID DESC) AS k
          FROM adae_cur n
          JOIN adae_prev o
            ON o.SUBJID = n.SUBJID
           AND upper(coalesce(o.AEDECOD, o.AETERM)) = upper(coalesce(n.AEDECOD, n.AETERM))
           AND o.ATOXGR < n.ATOXGR
           AND n.ASTDT >= o.ASTDT
          LEFT JOIN adae_cur oc ON oc.SUBJID = o.SUBJID AND oc.AESPID = o.AESPID
          LEFT JOIN adsl_cur s ON s.SUBJID = n.SUBJID
          WHERE NOT EXISTS (SELECT 1 FROM adae_prev x WHERE x.SUBJID = n.SUBJID AND x.AESPID = n.AESPID)
            AND (coalesce(oc.AENDT, o.AENDT) IS NULL OR n.ASTDT <= coalesce(oc.AENDT, o.AENDT) + 1)
        ) WHERE k = 1""",
    "teae_grade3": _AE_FLAG_SQL.format(
        previous_text="'grade ' || coalesce(CAST(p.ATOXGR AS VARCHAR), 'missing') "
        "|| CASE WHEN p.TRTEMFL = 'Y' THEN '' ELSE ', not treatment-emergent' END",
        cond_a="a.TRTEMFL = 'Y' AND a.ATOXGR >= 3",
        cond_p="p.TRTEMFL = 'Y' AND p.ATOXGR >= 3",
    ),
    "disposition": f"""
        SELECT c.SUBJID, {_DOSE}, c.EOSDT, NULL, NULL, NULL, NULL, p.EOSSTT, c.EOSSTT, NULL
        FROM adsl_cur c LEFT JOIN adsl_prev p USING (SUBJID)
        WHERE c.EOSSTT IS DISTINCT FROM p.EOSSTT""",
    "removed": """
        SELECT p.SUBJID, coalesce(p.DOSEA, p.DOSEP), p.RFICDT, NULL, NULL, NULL, NULL, 'screened', NULL,
               'participant no longer in the data'
        FROM adsl_prev p WHERE p.SUBJID NOT IN (SELECT SUBJID FROM adsl_cur WHERE SUBJID IS NOT NULL)
        UNION ALL
        SELECT p.SUBJID, coalesce(p.DOSEA, p.DOSEP), p.ENRLDT, NULL, NULL, NULL, NULL, 'enrolled', 'not enrolled',
               'enrolment withdrawn'
        FROM adsl_prev p JOIN adsl_cur c USING (SUBJID) WHERE p.ENRLFL = 'Y' AND c.ENRLFL IS DISTINCT FROM 'Y'
        UNION ALL
        SELECT p.SUBJID, coalesce(p.DOSEA, p.DOSEP), p.TRTSDT, NULL, NULL, NULL, NULL, 'infused', 'not infused',
               'infusion withdrawn'
        FROM adsl_prev p JOIN adsl_cur c USING (SUBJID) WHERE p.SAFFL = 'Y' AND c.SAFFL IS DISTINCT FROM 'Y'
        UNION ALL
        SELECT p.SUBJID, coalesce(p.DOSEA, p.DOSEP), p.DTHDT, NULL, NULL, NULL, NULL, 'died', 'no death recorded',
               'death withdrawn'
        FROM adsl_prev p JOIN adsl_cur c USING (SUBJID) WHERE p.DTHDT IS NOT NULL AND c.DTHDT IS NULL
        UNION ALL
        SELECT p.SUBJID, coalesce(s.DOSEA, s.DOSEP, p.DOSEA, p.DOSEP), p.ASTDT, p.AESPID, p.AETERM, p.AEDECOD,
               p.ATOXGR, 'reported', NULL, 'adverse event no longer in the data'
        FROM (SELECT e.*, sp.DOSEA, sp.DOSEP FROM adae_prev e LEFT JOIN adsl_prev sp USING (SUBJID)) p
        LEFT JOIN adsl_cur s USING (SUBJID)
        WHERE NOT EXISTS (SELECT 1 FROM adae_cur a WHERE a.SUBJID = p.SUBJID AND a.AESPID IS NOT DISTINCT FROM p.AESPID)
        UNION ALL
        SELECT a.SUBJID, coalesce(s.DOSEA, s.DOSEP), a.ASTDT, a.AESPID, a.AETERM, a.AEDECOD, a.ATOXGR, 'DLT',
               'not a DLT', 'DLT withdrawn'
        FROM adae_prev p JOIN adae_cur a ON a.SUBJID = p.SUBJID AND a.AESPID = p.AESPID
        LEFT JOIN adsl_cur s ON s.SUBJID = a.SUBJID
        WHERE p.DLTFL = 'Y' AND a.DLTFL IS DISTINCT FROM 'Y'
        UNION ALL
        SELECT a.SUBJID, coalesce(s.DOSEA, s.DOSEP), a.ASTDT, a.AESPID, a.AETERM, a.AEDECOD, a.ATOXGR, 'serious',
               'not serious', 'seriousness withdrawn'
        FROM adae_prev p JOIN adae_cur a ON a.SUBJID = p.SUBJID AND a.AESPID = p.AESPID
        LEFT JOIN adsl_cur s ON s.SUBJID = a.SUBJID
        WHERE p.AESER = 'Y' AND a.AESER IS DISTINCT FROM 'Y'""",
}


def _fetch_rows(con: duckdb.DuckDBPyConnection, sql: str) -> list[ChangeRow]:
    rows = [ChangeRow(*r) for r in con.execute(sql).fetchall()]
    return sorted(rows, key=row_sort_key)


def compare_cuts(
    previous: duckdb.DuckDBPyConnection | None,
    current: duckdb.DuckDBPyConnection,
    previous_cut: dt.date | None,
    current_cut: dt.date,
) -> CutChanges:
    """Changes between the previous data cut's analysis data and the current one's.

    ``previous`` None: first report (nothing listed; ``first_report`` True). The connections are
    only read. Raises :class:`MissingCutData` when either database lacks analysis.adsl or
    analysis.adae, ValueError when the previous cut is not before the current one or the two
    databases belong to different studies.
    """
    if previous is None:
        if previous_cut is not None:
            raise ValueError(f"previous_cut {previous_cut} given without the previous cut's database")
    elif previous_cut is not None and previous_cut >= current_cut:
        raise ValueError(f"previous data cut {previous_cut} is not before the current one {current_cut}")
    cur_adsl = _extract(current, "adsl", ADSL_COLUMNS, "the current cut's")
    cur_adae = _extract(current, "adae", ADAE_COLUMNS, "the current cut's")
    cur_decision = _decision(current)
    if previous is None:
        prev_adsl, prev_adae, prev_decision = None, None, None
    else:
        prev_adsl = _extract(previous, "adsl", ADSL_COLUMNS, "the previous cut's")
        prev_adae = _extract(previous, "adae", ADAE_COLUMNS, "the previous cut's")
        prev_decision = _decision(previous)

    work = duckdb.connect()  # private, in memory: the comparison never touches the callers' databases
    try:
        work.register("adsl_cur", cur_adsl)
        work.register("adae_cur", cur_adae)
        cur_totals = _totals(work, "cur")
        result = CutChanges(
            current_cut=current_cut,
            previous_cut=previous_cut if previous is not None else None,
            first_report=previous is None,
            escalation=EscalationChange(prev_decision, cur_decision),
        )
        if previous is None:
            result.totals = {k: (None, v) for k, v in cur_totals.items()}
            return result
        work.register("adsl_prev", prev_adsl)
        work.register("adae_prev", prev_adae)
        studies = {r[0] for r in work.execute(
            "SELECT DISTINCT STUDYID FROM adsl_cur WHERE STUDYID IS NOT NULL "
            "UNION SELECT DISTINCT STUDYID FROM adsl_prev WHERE STUDYID IS NOT NULL").fetchall()}
        if len(studies) > 1:
            raise ValueError(f"the two data cuts belong to different studies: {sorted(studies)}")
        prev_totals = _totals(work, "prev")
        result.totals = {k: (prev_totals[k], v) for k, v in cur_totals.items()}
        for key, sql in CATEGORY_SQL.items():
            setattr(result, key, _fetch_rows(work, sql))
        return result
    finally:
        work.close()


def _totals(work: duckdb.DuckDBPyConnection, side: str) -> dict[str, int]:
    assert side in ("cur", "prev")  # the only text ever formatted into the totals query
    cur = work.execute(TOTALS_SQL.format(s=side))
    names = [d[0] for d in cur.description]
    return dict(zip(names, cur.fetchall()[0]))


def compare_with_previous_dir(
    previous_dir: Path | str | None,
    current: duckdb.DuckDBPyConnection,
    current_cut: dt.date,
    database_name: str = "trial.duckdb",
) -> CutChanges:
    """``compare_cuts`` with the previous cut's published folder (``TrialResource.previous_final_dir()``,
    named YYYY-MM-DD): its database is opened read-only and closed again; None: first report."""
    if previous_dir is None:
        return compare_cuts(None, current, None, current_cut)
    previous_dir = Path(previous_dir)
    previous_cut = dt.date.fromisoformat(previous_dir.name)
    con = duckdb.connect(str(previous_dir / database_name), read_only=True)
    try:
        return compare_cuts(con, current, previous_cut, current_cut)
    finally:
        con.close()


# --------------------------------------------------------------------------------------------------
# Display tables


def layout_changes(
    changes: CutChanges,
    dose_label: Callable[[str | None], str] = lambda d: d or "",
) -> list[DisplayTable]:
    """[summary table, listing of the individual changes] for the DSMB report and the workbook.

    ``dose_label``: dose id -> display text (``ReportTables.dose_label``)."""
    prev = fmt_date(changes.previous_cut) or "previous cut"
    since = f"since the previous data cut ({changes.previous_cut.isoformat()})" if changes.previous_cut else (
        "since the previous data cut")
    esc = changes.escalation
    by_key = {c.key: c for c in CATEGORIES}

    rows: list[list[Cell]] = []
    for line in summary_lines(changes):  # none on a first report
        if line.key == "escalation":
            rows.append([
                line.label,
                line.n,
                "Next step",
                esc.previous.step(dose_label) if esc.previous else "not available",
                esc.current.step(dose_label) if esc.current else "not available",
            ])
            continue
        c = by_key[line.key]
        before, now = changes.totals.get(c.key, (None, None)) if c.total_label else (None, None)
        rows.append([line.label, line.n, c.total_label or "", before, now])
    summary = DisplayTable(
        id="changes_summary",
        title=f"Changes {since}",
        columns=["Category", "Changes (n)", "Measure", f"At {prev}", f"At {changes.current_cut.isoformat()}"],
        rows=rows,
        sheet="Changes summary",
        empty_text=FIRST_REPORT_NOTE,
        footnote=(
            "Found by comparing the analysis data of the two data cuts (analysis.adsl, analysis.adae, "
            "analysis.escalation_decision). Measure: the running total at each cut (participants; adverse "
            "events counted per record). A grade change is the same event graded differently, or a worsening "
            "recorded as a new row of the same term. Records or flags no longer in the data are corrections "
            "made since the previous cut. The listing gives every change."
        ),
    )

    lrows: list[list[Cell]] = []
    for c in CATEGORIES:
        for r in changes.rows(c.key):
            lrows.append([
                c.label, r.SUBJID, dose_label(r.DOSE) if r.DOSE else "Not enrolled", fmt_date(r.DATE),
                r.AESPID, r.AEDECOD, r.AETERM, r.GRADE, r.PREVIOUS, r.CURRENT, r.DETAIL,
            ])
    if not changes.first_report and esc.changed:
        lrows.append([
            ESCALATION_LABEL, None, None, None, None, None, None, None,
            esc.previous.step(dose_label), esc.current.step(dose_label),
            f"outcomes {esc.previous.outcomes or '(none)'} -> {esc.current.outcomes or '(none)'}",
        ])
    listing = DisplayTable(
        id="changes_listing",
        title=f"Listing of changes {since}",
        columns=["Change", "Participant", "Dose level", "Date", "AE no.", "Preferred term", "Reported term",
                 "Grade", "Previous", "Current", "Detail"],
        rows=lrows,
        kind="listing",
        sheet="Changes listing",
        empty_text=FIRST_REPORT_NOTE if changes.first_report else "No change since the previous data cut.",
        footnote=(
            "Date: informed consent (screened), enrolment, infusion, adverse-event onset, death or end of "
            "study. Dose level: received, else assigned. Grade: at this data cut (CTCAE v5.0 / ASTCT 2019 "
            "for CRS and ICANS). Previous / Current: the value at the previous and at this data cut where a "
            "value changed; blank Previous for an event new at this cut."
        ),
    )
    return [summary, listing]
