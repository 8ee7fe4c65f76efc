"""Load one CRF export file into DuckDB: raw text with provenance, typed staging, quarantine.

Three layers per form, all set-based SQL:
  raw.<form>     every data row exactly as received (text, trimmed, blank -> NULL), with
                 provenance: export id, file name, line number in the file. Direct identifiers
                 (``Field.identifier``) are dropped here and never reach the database.
  stage.<form>   the rows that pass the typing rules, with typed columns.
  raw.quarantine one row per (row, rule) that keeps a row out of staging: file, line, column,
                 rule and the offending value. Nothing is dropped silently.

Blocking problems with the file itself (missing, empty, header only, unknown / missing /
duplicate columns) raise ``ExportFileError`` naming the file, line, column and rule.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

import duckdb

from clinical.crf import SUBJID_PATTERN, Field, Form, ResolvedCodelists

ISO_DATE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
# CDASH partial dates: year, year-month (a real month), or a full date.
PARTIAL_DATE = r"^[0-9]{4}(-(0[1-9]|1[0-2])(-[0-9]{2})?)?$"
# Whole numbers and plain decimals only: "1,5", "12 g/L" or "1.2e3" go to quarantine, not to a guess.
INT_TEXT = r"^[+-]?[0-9]+$"
FLOAT_TEXT = r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)$"


class ExportFileError(ValueError):
    """A blocking problem with an export file; the message names file, line, column and rule."""


@dataclass(frozen=True)
class LoadResult:
    form: str
    file: str
    sha256: str
    rows_received: int
    rows_staged: int
    rows_quarantined: int
    dropped_identifier_columns: tuple[str, ...]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_header(path: Path) -> list[str]:
    """The header row, checked against nothing yet; raises on an empty file."""
    with path.open("r", encoding="utf-8-sig", newline="") as fh:
        first = fh.readline()
    if not first.strip():
        raise ExportFileError(f"{path.name}: line 1: file is empty (rule FILE-EMPTY)")
    return next(csv.reader([first]))


def check_header(form: Form, path: Path) -> list[str]:
    header = [h.strip() for h in read_header(path)]
    expected = [f.name for f in form.fields]
    seen: set[str] = set()
    for h in header:
        if h in seen:
            raise ExportFileError(f"{path.name}: line 1: column {h}: duplicate column (rule FILE-DUP-COLUMN)")
        seen.add(h)
    unknown = [h for h in header if h not in expected]
    if unknown:
        raise ExportFileError(
            f"{path.name}: line 1: column {unknown[0]}: not in the {form.id} contract (rule FILE-UNKNOWN-COLUMN)"
        )
    required_missing = [f.name for f in form.fields if not f.identifier and f.name not in header]
    if required_missing:
        raise ExportFileError(
            f"{path.name}: line 1: column {required_missing[0]}: missing from the header (rule FILE-MISSING-COLUMN)"
        )
    return header


def _type_rule(f: Field, codelists: ResolvedCodelists) -> tuple[str, str] | None:
    """SQL predicate over the text column ``v`` that is TRUE when the value is invalid, and the rule id."""
    col = f'"{f.name}"'
    if f.type == "id":
        return f"NOT regexp_full_match({col}, '{SUBJID_PATTERN[1:-1]}')", "TYPE-ID"
    if f.type == "int":
        return f"NOT regexp_full_match({col}, '{INT_TEXT[1:-1]}')", "TYPE-INT"
    if f.type == "float":
        return f"NOT regexp_full_match({col}, '{FLOAT_TEXT[1:-1]}')", "TYPE-FLOAT"
    if f.type == "date":
        pattern = PARTIAL_DATE if f.partial else ISO_DATE
        # A well-formed but impossible date (2025-02-30) fails the cast and is caught too.
        full = f"(length({col}) = 10 AND try_cast({col} AS DATE) IS NULL)"
        return f"(NOT regexp_full_match({col}, '{pattern[1:-1]}') OR {full})", "TYPE-DATE"
    if f.type == "code":
        return f"NOT list_contains(${f.name}_codes, {col})", "CODELIST"
    return None


def _typed_expr(f: Field) -> str:
    col = f'"{f.name}"'
    if f.type == "int":
        return f"CAST({col} AS BIGINT) AS {col}"
    if f.type == "float":
        return f"CAST({col} AS DOUBLE) AS {col}"
    if f.type == "date" and not f.partial:
        return f"CAST({col} AS DATE) AS {col}"
    return col


def load_form(
    con: duckdb.DuckDBPyConnection,
    form: Form,
    path: Path,
    export_id: str,
    codelists: ResolvedCodelists,
) -> LoadResult:
    """Load one form file into raw.<form>, stage.<form> and raw.quarantine (replacing that form's rows)."""
    if not path.is_file():
        raise ExportFileError(f"{path.name}: file missing from export {export_id} (rule FILE-MISSING)")
    header = check_header(form, path)
    fields = [f for f in form.fields if not f.identifier]
    dropped = tuple(h for h in header if form.field(h).identifier)
    con.execute("CREATE SCHEMA IF NOT EXISTS raw; CREATE SCHEMA IF NOT EXISTS stage")
    con.execute(
        """CREATE TABLE IF NOT EXISTS raw.quarantine (
             export_id VARCHAR, form VARCHAR, file VARCHAR, line BIGINT, subjid VARCHAR,
             "column" VARCHAR, rule VARCHAR, value VARCHAR, message VARCHAR)"""
    )
    # Every column read as text; file_row_number gives the provenance line (header is line 1).
    read = (
        "read_csv(?, header=true, all_varchar=true, delim=',', quote='\"', escape='\"', "
        "strict_mode=true, null_padding=false, filename=false)"
    )
    cols = ", ".join(
        f"nullif(trim(\"{f.name}\"), '') AS \"{f.name}\"" if f.name in header else f"NULL::VARCHAR AS \"{f.name}\""
        for f in fields
    )
    try:
        con.execute(
            f"""CREATE OR REPLACE TABLE raw.{form.id} AS
                SELECT ?::VARCHAR AS _export_id, ?::VARCHAR AS _file,
                       (row_number() OVER () + 1)::BIGINT AS _line, {cols}
                FROM {read}""",
            [export_id, path.name, str(path)],
        )
    except duckdb.Error as exc:
        raise ExportFileError(f"{path.name}: cannot be parsed as the {form.id} CSV (rule FILE-PARSE): {exc}") from exc
    received = con.execute(f"SELECT count(*) FROM raw.{form.id}").fetchone()[0]

    # One quarantine row per (row, failed rule): required value missing, bad type, bad code, duplicate key.
    # Rows sharing a key are all held back: which of them is right is the site's call, not ours.
    # Messages and codelists are parameters: only contract field names (checked identifiers) enter the SQL text.
    params: dict[str, object] = {"export_id": export_id, "form": form.id, "file": path.name}
    checks = []
    for f in fields:
        col = f'"{f.name}"'
        if f.required:
            params[f"msg{len(checks)}"] = f"{f.label} is required"
            checks.append(
                f"SELECT _line, \"SUBJID\", '{f.name}', 'REQUIRED', {col}, $msg{len(checks)} "
                f"FROM raw.{form.id} WHERE {col} IS NULL"
            )
        rule = _type_rule(f, codelists)
        if rule is not None:
            predicate, rule_id = rule
            if f.type == "code":
                params[f"{f.name}_codes"] = codelists.resolve(f.codelist)
            params[f"msg{len(checks)}"] = f"{f.label}: value not allowed by rule {rule_id}"
            checks.append(
                f"SELECT _line, \"SUBJID\", '{f.name}', '{rule_id}', {col}, $msg{len(checks)} "
                f"FROM raw.{form.id} WHERE {col} IS NOT NULL AND {predicate}"
            )
    key = ", ".join(f'"{k}"' for k in form.key)
    params[f"msg{len(checks)}"] = f"key ({', '.join(form.key)}) occurs on more than one row"
    checks.append(
        f"SELECT _line, \"SUBJID\", '{'+'.join(form.key)}', 'DUPLICATE-KEY', concat_ws('|', {key}), "
        f"$msg{len(checks)} FROM ("
        f"SELECT *, count(*) OVER (PARTITION BY {key}) AS k FROM raw.{form.id}) WHERE k > 1"
    )
    con.execute("DELETE FROM raw.quarantine WHERE export_id = ? AND form = ?", [export_id, form.id])
    con.execute(
        f"""INSERT INTO raw.quarantine
            SELECT $export_id, $form, $file, q.* FROM ({' UNION ALL '.join(checks)}) q""",
        params,
    )
    typed = ", ".join(_typed_expr(f) for f in fields)
    con.execute(
        f"""CREATE OR REPLACE TABLE stage.{form.id} AS
            SELECT _export_id, _file, _line, {typed} FROM raw.{form.id}
            WHERE _line NOT IN (SELECT line FROM raw.quarantine WHERE export_id = ? AND form = ?)
            ORDER BY {key}""",
        [export_id, form.id],
    )
    staged = con.execute(f"SELECT count(*) FROM stage.{form.id}").fetchone()[0]
    return LoadResult(form.id, path.name, sha256_file(path), received, staged, received - staged, dropped)
