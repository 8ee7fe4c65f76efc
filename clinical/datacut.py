"""The data cut: the analysis reads the staged data as they stood at the data cut-off date.

An export is pulled some time after the cut-off, so it can hold what happened after it: an
infusion, a dose-limiting toxicity, an end of study. Analysed as they are, such records change the
3+3 decision and the DSMB tables of a cut that was never meant to contain them. Common practice
(admiral's data cut, a DSMB's frozen cut) is to analyse the data as at the cut-off:

* a record whose own date is after the cut-off is not analysed (a screening, a lab or PK sample, a
  leukapheresis, a product release, a lymphodepletion dose, the infusion, a tumour assessment, an
  adverse event or medication that started after it, an end of study after it);
* an end date after the cut-off was not known at the cut: the event is ongoing at the cut (the AE
  or medication end date is blank; a death after the cut-off is blank, with its cause; an
  enrolment decided after the cut-off is blank, with the dose level);
* a participant who gave consent after the cut-off was not yet screened: none of their records is
  analysed (demographics and eligibility carry no date of their own).

Partial dates (AEs and medications: ``YYYY`` or ``YYYY-MM``) are after the cut-off only when their
earliest possible day is: the ISO text compares that way (``'2025-12' <= '2025-12-31'``).

``cut.<form>`` is a view of ``stage.<form>`` with that applied; every analysis derivation reads
``cut.*`` (the cross-form rules read ``stage.*``: a data manager queries every record). The records
the cut leaves out or blanks are listed, one row per record and field, in ``cut.after_cut`` (form,
file, line, participant, field, value, what the cut did), so nothing is lost silently. The study
configuration's ``data_cut.apply: false`` analyses every staged record as it is (the views are then
plain copies and ``cut.after_cut`` is empty).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import duckdb

from clinical.crf import FORMS


@dataclass(frozen=True)
class FormCut:
    """How the cut applies to one form: the date that places a record (``None``: the form has no
    date; its records follow the participant's consent), and the fields blanked when a later date of
    the record is after the cut-off (date field -> the fields it blanks, itself included)."""

    event: str | None
    blank: dict[str, tuple[str, ...]] = field(default_factory=dict)


CONSENT = ("enrol", "RFICDAT")  # the participant's own date: before it, not yet screened

FORM_CUTS: dict[str, FormCut] = {
    "dm": FormCut(None),
    "enrol": FormCut("RFICDAT", {"ENRLDAT": ("ENRLYN", "ENRLDAT", "DOSELVL")}),
    "ie": FormCut(None),
    "sc": FormCut("SCDAT"),
    "lb": FormCut("LBDAT"),
    "apher": FormCut("PRSTDAT"),
    "mfg": FormCut("RELDAT"),
    "ld": FormCut("EXSTDAT"),
    "inf": FormCut("EXSTDAT"),
    "ae": FormCut("AESTDAT", {"AEENDAT": ("AEENDAT",)}),
    "cm": FormCut("CMSTDAT", {"CMENDAT": ("CMENDAT",)}),
    "pc": FormCut("PCDAT"),
    "rs": FormCut("RSDAT"),
    "ds": FormCut("DSSTDAT", {"DTHDAT": ("DTHDAT", "DTHCAUS")}),
}

AFTER_CUT_DDL = """CREATE OR REPLACE TABLE cut.after_cut (
    FORM VARCHAR, FILE VARCHAR, LINE BIGINT, SUBJID VARCHAR, FIELD VARCHAR, VALUE VARCHAR, ACTION VARCHAR)"""


# Partial dates (text): compared as text, which orders them by their earliest day ('2025-12' <= '2025-12-31').
PARTIAL = {f.name for form in FORMS for f in form.loaded_fields if f.type == "date" and f.partial}


def _after(col: str) -> str:
    """The column's date is after the cut-off (a DATE compared as a date; a partial date as text)."""
    if col in PARTIAL:
        return f'("{col}" > (SELECT CAST(CUTDT AS VARCHAR) FROM cut.data_cut))'
    return f'("{col}" > (SELECT CUTDT FROM cut.data_cut))'


def _kept(cut: FormCut) -> str:
    """A record the cut keeps: its own date on or before the cut-off, or none."""
    return f"NOT coalesce({_after(cut.event)}, FALSE)" if cut.event else "TRUE"


def _late_consent() -> str:
    form, col = CONSENT
    return f"SELECT SUBJID FROM stage.{form} WHERE {_after(col)}"


def _view_sql(form_id: str, columns: list[str], apply: bool) -> str:
    if not apply:  # data_cut.apply: false -- every staged record, as it is
        return f"CREATE OR REPLACE VIEW cut.{form_id} AS SELECT * FROM stage.{form_id}"
    cut = FORM_CUTS[form_id]
    blanked = {c: d for d, cols in cut.blank.items() for c in cols}
    select = ", ".join(
        f'CASE WHEN {_after(blanked[c])} THEN NULL ELSE "{c}" END AS "{c}"' if c in blanked else f'"{c}"'
        for c in columns
    )
    where = _kept(cut)
    if cut.event is None:
        where += f" AND SUBJID NOT IN ({_late_consent()})"
    return f"CREATE OR REPLACE VIEW cut.{form_id} AS SELECT {select} FROM stage.{form_id} WHERE {where}"


def _listing_sql(form_id: str) -> str:
    """The records of one form the cut leaves out, and the fields it blanks."""
    cut = FORM_CUTS[form_id]
    parts = []
    if cut.event:
        parts.append(
            f"""SELECT '{form_id}', _file, _line, SUBJID, '{cut.event}', CAST("{cut.event}" AS VARCHAR),
                       'not analysed: dated after the data cut-off' FROM stage.{form_id} WHERE {_after(cut.event)}"""
        )
    else:
        parts.append(
            f"""SELECT '{form_id}', _file, _line, SUBJID, '{CONSENT[1]}', NULL,
                       'not analysed: consent after the data cut-off' FROM stage.{form_id}
                WHERE SUBJID IN ({_late_consent()})"""
        )
    for date_col, cols in cut.blank.items():
        parts.append(
            f"""SELECT '{form_id}', _file, _line, SUBJID, '{date_col}', CAST("{date_col}" AS VARCHAR),
                       'blank at the cut: {", ".join(cols)} after the data cut-off' FROM stage.{form_id}
                WHERE {_after(date_col)} AND {_kept(cut)}"""
        )
    return " UNION ALL ".join(parts)


def apply_data_cut(con: duckdb.DuckDBPyConnection, data_cut: dt.date, apply: bool = True) -> int:
    """Create the ``cut`` schema: the cut-off date, one view per form, and ``cut.after_cut``.
    Returns the number of rows of ``cut.after_cut``."""
    con.execute("CREATE SCHEMA IF NOT EXISTS cut")
    con.execute("CREATE OR REPLACE TABLE cut.data_cut AS SELECT $cut::DATE AS CUTDT, $apply::BOOLEAN AS APPLY",
                {"cut": data_cut, "apply": apply})
    for form in FORMS:
        columns = [r[0] for r in con.execute(
            "SELECT column_name FROM duckdb_columns() WHERE schema_name = 'stage' AND table_name = $t "
            "ORDER BY column_index", {"t": form.id}).fetchall()]
        con.execute(_view_sql(form.id, columns, apply))
    con.execute(AFTER_CUT_DDL)
    if apply:
        con.execute(
            "INSERT INTO cut.after_cut SELECT * FROM ("
            + " UNION ALL ".join(f"({_listing_sql(f.id)})" for f in FORMS)
            + ") ORDER BY 1, 3, 5"
        )
    return con.execute("SELECT count(*) FROM cut.after_cut").fetchone()[0]
