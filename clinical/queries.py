"""Data queries for data managers, tracked across exports: ``analysis.data_queries``.

A query is one failing record of a WARN rule:

* a cross-form / protocol rule of :mod:`clinical.rules` (SOURCE 'rule');
* a row ingest kept out of staging, ``raw.quarantine`` (SOURCE 'quarantine', RULE_ID 'INGEST-<rule>');
* a row failing a WARN expectation of the form's Great Expectations suite (SOURCE 'expectation',
  RULE_ID 'GX-<FORM>-...'): the suite's WARN expectations (ranges, optional codelists) are listed
  record by record with the same bounds as the suite, as SQL over the rows GX validated.

(ERROR rules block the run before this table is built; their records are in the failed check's
metadata and the run's error output.)

Stable id
---------
``QUERY_ID`` = 'Q-' + the first 10 hex digits of SHA-256 over RULE_ID, SUBJID and RECORD_KEY
(joined by the unit separator). RECORD_KEY names the record by its form key (``AESPID=3``; for
ingest and expectation queries the form, the key and the column: ``ae AESPID=3, column AESTDAT``),
never by a line number or a value, so the same problem in the next export keeps its id. Failing
records with the same id (e.g. the rows sharing a duplicated key) are one query; DETAIL lists them.

History across exports
----------------------
The pipeline builds a fresh database per data cut. The previous cut's ``analysis.data_queries``
(its ``trial.duckdb``, attached read-only) carries the history forward; :func:`next_status` gives
the status of every query from its previous status and whether it fails now:

  previous      failing now   status
  (none)        yes           Open
  Open          yes / no      Open / Closed
  Re-opened     yes / no      Re-opened / Closed
  Closed        yes / no      Re-opened / Closed

Closed queries stay in the table as rows with STATUS 'Closed'. Dates are data cuts, never the clock.

Columns of ``analysis.data_queries`` (one row per QUERY_ID):
  QUERY_ID, RULE_ID, SEVERITY, FORM, SITEID, SUBJID, RECORD_KEY, DETAIL (the latest failing
  detail), STATUS, SOURCE, EXPORT_ID and DATA_CUT (of this run), FIRST_SEEN_EXPORT, FIRST_SEEN_CUT,
  LAST_SEEN_EXPORT, LAST_SEEN_CUT (the last export in which it failed), CLOSED_EXPORT, CLOSED_CUT
  (when STATUS is Closed: the export in which it was first found resolved), REOPENED_EXPORT,
  REOPENED_CUT (when STATUS is Re-opened), DAYS_OPEN (CLOSED_CUT, or DATA_CUT while open, minus
  FIRST_SEEN_CUT, in days).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb

from clinical.crf import FORMS, SUBJID_PATTERN, Form, form
from clinical.expectation_runner import validated_rows_sql
from clinical.rules import RULES, create_rule_macros, record_key_sql, rule_sql
from clinical.study import StudyConfig

OPEN, CLOSED, REOPENED = "Open", "Closed", "Re-opened"
STATUSES = (OPEN, CLOSED, REOPENED)


def query_id_sql(parts: str) -> str:
    """The stable id as a SQL expression over ``parts`` (SQL for a VARCHAR list: RULE_ID, SUBJID or
    '', RECORD_KEY): the first 10 hex digits of SHA-256 over the parts that say what is wrong."""
    return f"'Q-' || upper(left(sha256(array_to_string({parts}, chr(31))), 10))"


COLUMNS = (
    ("QUERY_ID", "VARCHAR"),
    ("RULE_ID", "VARCHAR"),
    ("SEVERITY", "VARCHAR"),
    ("FORM", "VARCHAR"),
    ("SITEID", "VARCHAR"),
    ("SUBJID", "VARCHAR"),
    ("RECORD_KEY", "VARCHAR"),
    ("DETAIL", "VARCHAR"),
    ("STATUS", "VARCHAR"),
    ("SOURCE", "VARCHAR"),
    ("EXPORT_ID", "VARCHAR"),
    ("DATA_CUT", "DATE"),
    ("FIRST_SEEN_EXPORT", "VARCHAR"),
    ("FIRST_SEEN_CUT", "DATE"),
    ("LAST_SEEN_EXPORT", "VARCHAR"),
    ("LAST_SEEN_CUT", "DATE"),
    ("CLOSED_EXPORT", "VARCHAR"),
    ("CLOSED_CUT", "DATE"),
    ("REOPENED_EXPORT", "VARCHAR"),
    ("REOPENED_CUT", "DATE"),
    ("DAYS_OPEN", "INTEGER"),
)
# Columns carried from the previous cut's table (absent ones, from older outputs, read as NULL).
_CARRIED = [c for c, _ in COLUMNS if c not in ("EXPORT_ID", "DATA_CUT", "DAYS_OPEN")] + ["EXPORT_ID"]


def next_status(previous: str | None, failing: bool) -> str | None:
    """The status of a query given its status at the previous cut (None: never seen) and whether
    its record fails now; None means no query."""
    if previous is None:
        return OPEN if failing else None
    if previous in (OPEN, REOPENED):
        return previous if failing else CLOSED
    if previous == CLOSED:
        return REOPENED if failing else CLOSED
    raise ValueError(f"unknown query status {previous!r}")


def status_case_sql(previous: str, failing: str) -> str:
    """:func:`next_status` as a SQL CASE over a previous-status column and a boolean column,
    generated from the function's own truth table (so the two cannot drift)."""
    arms = []
    for prev in (None, *STATUSES):
        for fail in (True, False):
            out = next_status(prev, fail)
            cond_prev = f"{previous} IS NULL" if prev is None else f"{previous} = '{prev}'"
            cond_fail = failing if fail else f"NOT {failing}"
            arms.append(f"WHEN {cond_prev} AND {cond_fail} THEN " + ("NULL" if out is None else f"'{out}'"))
    return "CASE " + " ".join(arms) + " END"


# --------------------------------------------------------------------------------------------------
# Failing records of this export


def _table_exists(con: duckdb.DuckDBPyConnection, schema: str, table: str, database: str | None = None) -> bool:
    sql = "SELECT count(*) FROM duckdb_tables() WHERE schema_name = ? AND table_name = ?"
    params: list[object] = [schema, table]
    if database:
        sql += " AND database_name = ?"
        params.append(database)
    return con.execute(sql, params).fetchall()[0][0] > 0


def _raw_key_expr(f: Form) -> str:
    """'<form> K1=v1, K2=v2' of a raw row (the form and a rule's RECORD_KEY of the row), as SQL over raw.<form>."""
    key = record_key_sql(f)
    return f"'{f.id}'" if key == "''" else f"'{f.id} ' || {key}"


def _quarantine_sql(con: duckdb.DuckDBPyConnection) -> str:
    """Failing records (RULE_ID, SEVERITY, FORM, SUBJID, RECORD_KEY, DETAIL, SOURCE) of the rows of
    raw.quarantine of export $export_id."""
    keyed = [f for f in FORMS if _table_exists(con, "raw", f.id)]
    keys = " UNION ALL ".join(f"SELECT '{f.id}' AS form, _line, {_raw_key_expr(f)} AS rk FROM raw.{f.id}" for f in keyed)
    keys = keys or "SELECT NULL::VARCHAR AS form, NULL::BIGINT AS _line, NULL::VARCHAR AS rk WHERE false"
    return f"""
      SELECT 'INGEST-' || q.rule AS RULE_ID, 'WARN' AS SEVERITY, q.form AS FORM, q.subjid AS SUBJID,
             coalesce(k.rk, q.form) || ', column ' || q."column" AS RECORD_KEY,
             q.file || ' line ' || q.line || ', column ' || q."column" || ': ' || q.message
               || ' (value: ' || coalesce('"' || q.value || '"', 'blank') || ')' AS DETAIL,
             'quarantine' AS SOURCE
      FROM raw.quarantine q LEFT JOIN ({keys}) k ON k.form = q.form AND k._line = q.line
      WHERE q.export_id = $export_id"""


def expectation_query_sql(form_id: str, expectation: dict) -> tuple[str, dict[str, object]] | None:
    """SQL listing the records that fail one WARN expectation (SUBJID, RECORD_KEY, DETAIL), over the
    rows Great Expectations validates (raw text of the staged rows), with the suite's own bounds.
    None for an ERROR expectation (those block the run instead of becoming queries)."""
    meta = expectation["meta"]
    if meta["severity"] != "WARN":
        return None
    kwargs = dict(expectation["kwargs"])
    col = kwargs.pop("column")
    f = form(form_id)
    if col not in {fld.name for fld in f.loaded_fields}:
        raise ValueError(f"{meta['rule_id']}: column {col} is not in the {form_id} contract")
    params: dict[str, object] = {}
    etype = expectation["type"]
    if etype == "expect_column_values_to_be_between":
        lo, hi = kwargs.pop("min_value", None), kwargs.pop("max_value", None)
        conds = []
        if lo is not None:
            conds.append("v < $lo")
            params["lo"] = float(lo)
        if hi is not None:
            conds.append("v > $hi")
            params["hi"] = float(hi)
        # As the runner: the numeric copy of the column; text that is not a number is ignored here.
        predicate = f"try_cast(r.\"{col}\" AS DOUBLE) AS v"
        where = " OR ".join(conds)
    elif etype == "expect_column_values_to_be_in_set":
        params["codes"] = list(kwargs.pop("value_set"))
        predicate = f"r.\"{col}\" AS v"
        where = "v IS NOT NULL AND NOT list_contains($codes, v)"
    else:
        raise ValueError(f"{meta['rule_id']}: no query listing for WARN expectation type {etype}")
    if kwargs:
        raise ValueError(f"{meta['rule_id']}: unsupported expectation arguments {sorted(kwargs)}")
    sql = f"""
      SELECT SUBJID, {_raw_key_expr(f)} || ', column {col}' AS RECORD_KEY,
             _file || ' line ' || _line || ': ' || $description || ' (value: "' || "{col}" || '")' AS DETAIL
      FROM (SELECT r.*, {predicate} FROM ({validated_rows_sql(form_id)}) r)
      WHERE {where}"""
    params["description"] = meta["description"]
    return sql, params


def _insert_current(con, cfg: StudyConfig, export_id: str, suites: dict[str, dict] | None) -> None:
    con.execute(
        """CREATE OR REPLACE TEMP TABLE q_now (RULE_ID VARCHAR, SEVERITY VARCHAR, FORM VARCHAR, SUBJID VARCHAR,
             RECORD_KEY VARCHAR, DETAIL VARCHAR, SOURCE VARCHAR)"""
    )
    create_rule_macros(con)
    # WARN rules only: a failing ERROR rule has stopped the run before this table.
    for rule in (r for r in RULES if r.severity == "WARN"):
        sql, params = rule_sql(rule, cfg)
        con.execute(
            f"INSERT INTO q_now SELECT $rule_id, $severity, $form, SUBJID, RECORD_KEY, DETAIL, 'rule' FROM ({sql})",
            params | {"rule_id": rule.id, "severity": rule.severity, "form": rule.form},
        )
    if _table_exists(con, "raw", "quarantine"):
        con.execute(f"INSERT INTO q_now {_quarantine_sql(con)}", {"export_id": export_id})
    for form_id, suite in (suites or {}).items():
        if not (_table_exists(con, "raw", form_id) and _table_exists(con, "stage", form_id)):
            continue
        for exp in suite["expectations"]:
            listing = expectation_query_sql(form_id, exp)
            if listing is None:
                continue
            sql, params = listing
            con.execute(
                f"INSERT INTO q_now SELECT $rule_id, 'WARN', $form, SUBJID, RECORD_KEY, DETAIL, 'expectation' FROM ({sql})",
                params | {"rule_id": exp["meta"]["rule_id"], "form": form_id},
            )
    con.execute(f"CREATE OR REPLACE TEMP TABLE q_cur AS {_current_sql(con, 'SELECT * FROM q_now')}",
                {"pattern": SUBJID_PATTERN[1:-1]})


def _current_sql(con: duckdb.DuckDBPyConnection, failing: str) -> str:
    """One row per query (QUERY_ID, RULE_ID, SEVERITY, FORM, SITEID, SUBJID, RECORD_KEY, DETAIL,
    SOURCE) over the failing records that the query ``failing`` lists (RULE_ID, SEVERITY, FORM,
    SUBJID, RECORD_KEY, DETAIL, SOURCE). Parameter $pattern: the participant id pattern."""
    site = (
        "(SELECT SUBJID, any_value(SITEID) AS SITEID FROM raw.dm GROUP BY SUBJID)"
        if _table_exists(con, "raw", "dm")
        else "(SELECT NULL::VARCHAR AS SUBJID, NULL::VARCHAR AS SITEID WHERE false)"
    )
    return f"""
      SELECT {query_id_sql("[q.RULE_ID, coalesce(q.SUBJID, ''), q.RECORD_KEY]")} AS QUERY_ID, q.RULE_ID,
             any_value(q.SEVERITY) AS SEVERITY, any_value(q.FORM) AS FORM,
             coalesce(any_value(d.SITEID),
                      CASE WHEN regexp_full_match(q.SUBJID, $pattern) THEN split_part(q.SUBJID, '-', 1) END) AS SITEID,
             q.SUBJID, q.RECORD_KEY,
             string_agg(DISTINCT q.DETAIL, '; ' ORDER BY q.DETAIL) AS DETAIL, any_value(q.SOURCE) AS SOURCE
      FROM ({failing}) q LEFT JOIN {site} d ON d.SUBJID = q.SUBJID
      GROUP BY q.RULE_ID, q.SUBJID, q.RECORD_KEY"""


def quarantine_queries_sql(con: duckdb.DuckDBPyConnection, export_id: str) -> tuple[str, dict[str, object]]:
    """SQL and parameters listing the queries of export ``export_id``'s rows of raw.quarantine as
    :func:`build_queries` finds them (before the history): one row per QUERY_ID with QUERY_ID,
    RULE_ID, SEVERITY, FORM, SITEID, SUBJID, RECORD_KEY, DETAIL and SOURCE, the ids those rows have
    in analysis.data_queries. Needs raw.quarantine, no macro and no write (a read-only connection
    will do: the data-queries workbook of a database without analysis.data_queries)."""
    return _current_sql(con, _quarantine_sql(con)), {"export_id": export_id, "pattern": SUBJID_PATTERN[1:-1]}


# --------------------------------------------------------------------------------------------------
# History from the previous data cut


def _load_previous(con: duckdb.DuckDBPyConnection, previous_db: Path | None, previous_cut: dt.date | None) -> int:
    """Copy the previous cut's queries into TEMP table q_prev (P_<column>); return their number."""
    cols = ", ".join(f"NULL::{t} AS P_{c}" for c, t in COLUMNS)
    con.execute(f"CREATE OR REPLACE TEMP TABLE q_prev AS SELECT {cols} WHERE false")
    if previous_db is None or not Path(previous_db).is_file():
        return 0
    path = str(Path(previous_db).resolve()).replace("'", "''")
    con.execute(f"ATTACH '{path}' AS q_previous (READ_ONLY)")
    try:
        if not _table_exists(con, "analysis", "data_queries", "q_previous"):
            return 0
        have = {
            r[0].upper()
            for r in con.execute(
                "SELECT column_name FROM duckdb_columns() WHERE database_name = 'q_previous' "
                "AND schema_name = 'analysis' AND table_name = 'data_queries'"
            ).fetchall()
        }
        types = dict(COLUMNS)

        def col(name: str) -> str:
            return f"p.\"{name}\"::{types.get(name, 'VARCHAR')}" if name in have else f"NULL::{types.get(name, 'VARCHAR')}"

        select = {c: col(c) for c in _CARRIED}
        # Older tables (before history was tracked) had only the export id: first and last seen there.
        select["FIRST_SEEN_EXPORT"] = f"coalesce({select['FIRST_SEEN_EXPORT']}, {select['EXPORT_ID']})"
        select["LAST_SEEN_EXPORT"] = f"coalesce({select['LAST_SEEN_EXPORT']}, {select['EXPORT_ID']})"
        select["FIRST_SEEN_CUT"] = f"coalesce({select['FIRST_SEEN_CUT']}, $prev_cut)"
        select["LAST_SEEN_CUT"] = f"coalesce({select['LAST_SEEN_CUT']}, $prev_cut)"
        select["CLOSED_CUT"] = f"CASE WHEN p.STATUS = $closed THEN coalesce({select['CLOSED_CUT']}, $prev_cut) END"
        select["STATUS"] = "CASE WHEN p.STATUS IN ($open, $closed, $reopened) THEN p.STATUS ELSE $open END"
        select["RECORD_KEY"] = f"coalesce({select['RECORD_KEY']}, '')"
        names = [c for c, _ in COLUMNS]
        exprs = ", ".join(
            f"{select[c]} AS P_{c}" if c in select else f"NULL::{types[c]} AS P_{c}" for c in names
        )
        con.execute(
            f"INSERT INTO q_prev SELECT {exprs} FROM q_previous.analysis.data_queries p",
            {"prev_cut": previous_cut, "open": OPEN, "closed": CLOSED, "reopened": REOPENED},
        )
        # One row per id (a table written before ids were unique may repeat one): the earliest seen.
        con.execute(
            "CREATE OR REPLACE TEMP TABLE q_prev AS SELECT DISTINCT ON (P_QUERY_ID) * FROM q_prev "
            "ORDER BY P_QUERY_ID, P_FIRST_SEEN_CUT, P_STATUS"
        )
        return con.execute("SELECT count(*) FROM q_prev").fetchall()[0][0]
    finally:
        con.execute("DETACH q_previous")


# The table in one statement: this cut's failing records merged with the previous cut's queries
# (the status from next_status, {status}), then DAYS_OPEN, the column types ({columns}) and the order.
# Statuses are parameters $closed, $reopened (CLOSED, REOPENED).
MERGE_SQL = """
CREATE OR REPLACE TABLE analysis.data_queries AS
WITH m AS (
  SELECT coalesce(c.QUERY_ID, p.P_QUERY_ID) AS QUERY_ID, c.QUERY_ID IS NOT NULL AS FAILING,
         c.* EXCLUDE (QUERY_ID), p.*
  FROM q_cur c FULL JOIN q_prev p ON p.P_QUERY_ID = c.QUERY_ID),
s AS (SELECT m.*, {status} AS NEW_STATUS FROM m),
q AS (
SELECT
  s.QUERY_ID,
  coalesce(s.RULE_ID, s.P_RULE_ID) AS RULE_ID,
  coalesce(s.SEVERITY, s.P_SEVERITY) AS SEVERITY,
  coalesce(s.FORM, s.P_FORM) AS FORM,
  coalesce(s.SITEID, s.P_SITEID) AS SITEID,
  coalesce(s.SUBJID, s.P_SUBJID) AS SUBJID,
  coalesce(s.RECORD_KEY, s.P_RECORD_KEY) AS RECORD_KEY,
  coalesce(s.DETAIL, s.P_DETAIL) AS DETAIL,
  s.NEW_STATUS AS STATUS,
  coalesce(s.SOURCE, s.P_SOURCE) AS SOURCE,
  $export_id AS EXPORT_ID,
  $cut::DATE AS DATA_CUT,
  coalesce(s.P_FIRST_SEEN_EXPORT, $export_id) AS FIRST_SEEN_EXPORT,
  coalesce(s.P_FIRST_SEEN_CUT, $cut::DATE) AS FIRST_SEEN_CUT,
  CASE WHEN s.FAILING THEN $export_id ELSE s.P_LAST_SEEN_EXPORT END AS LAST_SEEN_EXPORT,
  CASE WHEN s.FAILING THEN $cut::DATE ELSE s.P_LAST_SEEN_CUT END AS LAST_SEEN_CUT,
  CASE WHEN s.NEW_STATUS = $closed THEN
       CASE WHEN s.P_STATUS = $closed THEN s.P_CLOSED_EXPORT ELSE $export_id END END AS CLOSED_EXPORT,
  CASE WHEN s.NEW_STATUS = $closed THEN
       CASE WHEN s.P_STATUS = $closed THEN coalesce(s.P_CLOSED_CUT, s.P_LAST_SEEN_CUT) ELSE $cut::DATE END END AS CLOSED_CUT,
  CASE WHEN s.NEW_STATUS = $reopened THEN
       CASE WHEN s.P_STATUS = $closed THEN $export_id ELSE s.P_REOPENED_EXPORT END END AS REOPENED_EXPORT,
  CASE WHEN s.NEW_STATUS = $reopened THEN
       CASE WHEN s.P_STATUS = $closed THEN $cut::DATE ELSE s.P_REOPENED_CUT END END AS REOPENED_CUT
FROM s
WHERE s.NEW_STATUS IS NOT NULL)
SELECT {columns} FROM q
ORDER BY FORM, SUBJID NULLS FIRST, RULE_ID, RECORD_KEY, QUERY_ID
"""


def build_queries(
    con: duckdb.DuckDBPyConnection,
    cfg: StudyConfig,
    export_id: str,
    data_cut: dt.date,
    previous_db: Path | None = None,
    previous_cut: dt.date | None = None,
    suites: dict[str, dict] | None = None,
) -> dict[str, int]:
    """Write analysis.data_queries for this export, carrying the history of ``previous_db`` (the
    previous data cut's trial.duckdb, read-only) forward. ``suites``: resolved GX suites by form id,
    whose WARN expectations are listed as queries. Returns counts by status."""
    cut = data_cut
    con.execute("CREATE SCHEMA IF NOT EXISTS analysis")
    _insert_current(con, cfg, export_id, suites)
    n_prev = _load_previous(con, previous_db, previous_cut)
    columns = ", ".join(
        f"(coalesce(CLOSED_CUT, DATA_CUT) - FIRST_SEEN_CUT)::INTEGER AS {c}" if c == "DAYS_OPEN" else f"{c}::{t} AS {c}"
        for c, t in COLUMNS
    )
    con.execute(
        MERGE_SQL.replace("{status}", status_case_sql("P_STATUS", "FAILING")).replace("{columns}", columns),
        {"export_id": export_id, "cut": cut, "closed": CLOSED, "reopened": REOPENED},
    )
    counts = dict(con.execute("SELECT STATUS, count(*) FROM analysis.data_queries GROUP BY STATUS").fetchall())
    new = con.execute(
        "SELECT count(*) FROM analysis.data_queries WHERE FIRST_SEEN_CUT = DATA_CUT AND STATUS = $open",
        {"open": OPEN},
    ).fetchall()[0][0]
    con.execute("DROP TABLE IF EXISTS q_now; DROP TABLE IF EXISTS q_cur; DROP TABLE IF EXISTS q_prev")
    return {
        "total": sum(counts.values()),
        "open": counts.get(OPEN, 0),
        "closed": counts.get(CLOSED, 0),
        "reopened": counts.get(REOPENED, 0),
        "new": new,
        "previous": n_prev,
    }
