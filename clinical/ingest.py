"""Load one CRF form into DuckDB: raw text with provenance, typed staging, quarantine.

Any export format (CSV, CDISC ODM, SDTM) is first read into :class:`~clinical.records.FormRecords`
by its reader (:mod:`clinical.sources`); from there every form loads the same way. Three layers per
form, all set-based SQL:

  raw.<form>     every record as received (text, trimmed, blank -> NULL) with provenance: export id,
                 file name and line in the file (CSV, ODM) or record number (SDTM). Only the form's
                 allow-listed fields (the contract's fields that are not direct identifiers) are
                 loaded: identifier columns are dropped before anything reaches DuckDB, a date of
                 birth only fills a blank age at consent first, and ID-card numbers, phone numbers
                 and e-mail addresses typed into free text are removed and queried (the record
                 itself is staged with the text replaced).
  stage.<form>   the records that pass the rules, with typed columns.
  raw.quarantine one row per (record, rule) that keeps a record out of staging (or, for PII-IN-TEXT,
                 records what was removed from it): file, line, column,
                 rule, the offending value (a preview when long) and a message. Nothing is dropped
                 silently, and quarantined rows become data queries.

A form's three layers are replaced in one transaction: a load that fails leaves the database as it
was. Blocking problems with a file (missing, empty, truncated, undecodable, unknown / missing /
duplicate columns, every record from another study) raise ``ExportFileError`` naming the file,
line, column and rule. A form the study does not collect (``forms:`` in the configuration) is
loaded as empty tables with the contract's columns, so everything downstream runs unchanged.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import polars as pl

from clinical.crf import (
    FLOAT_TEXT,
    FORM_IDS,
    INT_TEXT,
    Field,
    Form,
    study_codelists,
)
from clinical.records import (
    DEFAULT_IDENTIFIER_COLUMNS,
    LINE,
    STUDY,
    ExportFileError,
    FormRecords,
    IngestSettings,
    file_error,
    identifier_key,
)

__all__ = [
    "ExportFileError",
    "IngestSettings",
    "LoadResult",
    "ingest_settings",
    "create_ingest_tables",
    "load_records",
    "order_quarantine",
    "sha256_file",
]

ISO_DATE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
# CDASH partial dates: year, year-month (a real month), or a full date.
PARTIAL_DATE = r"^[0-9]{4}(-(0[1-9]|1[0-2])(-[0-9]{2})?)?$"
# Numbers are clinical.crf INT_TEXT / FLOAT_TEXT: "1,5" or "12 g/L" go to quarantine, not to a guess.
# A number written with a unit, a thousands separator or a decimal comma ("12 g/L", "1,000", "1,5").
DECORATED_NUMBER = r"^[+-]?([0-9]{1,3}([ ,'][0-9]{3})+(\.[0-9]+)?|[0-9]+,[0-9]+|[0-9][0-9,. ']*\s*[^0-9\s,.'].*)$"
# Text a spreadsheet would run as a formula (CSV injection): =, +, @, tab or CR first, or "-" + non-digit.
FORMULA_TEXT = r"^([=+@\t\r]|-[^0-9. ])"
# Markup or script in free text.
MARKUP_TEXT = r"(?i)(<\s*/?\s*[a-z!?][^>]*>|javascript\s*:)"
WHITESPACE = " \t\r\n\u00a0\u3000"  # trimmed from both ends (with no-break and ideographic spaces)
# A direct identifier in free text is replaced and queried; the record itself is staged (the one rule
# whose quarantine entry does not hold its record back).
PII_RULE = "PII-IN-TEXT"
PREVIEW = 500  # characters of a long value kept in quarantine (the archive keeps every byte)
REMOVED = "[removed at ingest]"

# Direct identifiers typed into free text: removed before DuckDB, quarantined with the kind only.
PII_PATTERNS: dict[str, str] = {
    "a national ID-card number": r"(^|[^0-9])[1-9][0-9]{5}(18|19|20)[0-9]{2}(0[1-9]|1[0-2])(0[1-9]|[12][0-9]|3[01])[0-9]{3}[0-9Xx]([^0-9]|$)",
    # Written as one run of digits or in groups (138-1234-5678, 138 1234 5678, +86 138 1234 5678).
    "a mobile phone number": r"(^|[^0-9])(\+?86[- ]?)?1[3-9][0-9][- ]?[0-9]{4}[- ]?[0-9]{4}([^0-9]|$)",
    # Area code with or without brackets (020-87654321, (010) 1234 5678, 0755 8765 4321).
    "a telephone number": r"(^|[^0-9])(\(0[0-9]{2,3}\)|0[0-9]{2,3})[- ]?[0-9]{3,4}[- ]?[0-9]{4}([^0-9]|$)",
    "an e-mail address": r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+\.[A-Za-z]{2,}",
}

# The quarantine rows that hold their record out of staging: every rule but PII-IN-TEXT (the text is
# replaced and the record staged). Readers that count records held back read this view.
HELD_DDL = f"CREATE VIEW IF NOT EXISTS raw.held AS SELECT * FROM raw.quarantine WHERE rule <> '{PII_RULE}'"

QUARANTINE_DDL = """CREATE TABLE IF NOT EXISTS raw.quarantine (
     export_id VARCHAR, form VARCHAR, file VARCHAR, line BIGINT, subjid VARCHAR,
     "column" VARCHAR, rule VARCHAR, value VARCHAR, message VARCHAR)"""


@dataclass(frozen=True)
class LoadResult:
    form: str
    file: str
    sha256: str
    rows_received: int
    rows_staged: int
    rows_quarantined: int
    dropped_identifier_columns: tuple[str, ...]
    format: str = "csv"
    encoding: str | None = None
    delimiter: str | None = None
    ages_from_birth_date: int = 0
    collected: bool = True
    # The rows that reached stage.<form>, as loaded text in line order: what the form's suite
    # validates (the rows of expectation_runner.validated_rows_sql), without reading them back.
    validated: pl.DataFrame | None = field(default=None, repr=False, compare=False)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def ingest_settings(cfg) -> IngestSettings:  # cfg: clinical.study.StudyConfig
    """The ingest settings of a study configuration (``input:`` and ``forms:``)."""
    inp = cfg.input
    base = Path(cfg.config_path).resolve().parent if cfg.config_path else Path.cwd()

    def mapping(explicit: str | None, kind: str) -> Path | None:
        if explicit:
            return (base / explicit).resolve()
        conventional = base / "mappings" / f"{cfg.study.id.lower()}_{kind}.yaml"
        return conventional if conventional.is_file() else None

    codelists = study_codelists(cfg)
    return IngestSettings(
        study_id=cfg.study.id,
        codelists=codelists,
        subjid_pattern=codelists.values["@subjid_pattern"][0],  # input.subject_id_pattern or the contract's
        forms=tuple(cfg.forms) if cfg.forms is not None else FORM_IDS,
        encodings=tuple(inp.encodings),
        delimiters=tuple(inp.delimiters),
        max_text_chars=inp.max_text_chars,
        identifier_columns=DEFAULT_IDENTIFIER_COLUMNS | {identifier_key(c) for c in inp.identifier_columns},
        odm_mapping=mapping(inp.odm_mapping, "odm"),
        sdtm_mapping=mapping(inp.sdtm_mapping, "sdtm"),
    )


# ---------------------------------------------------------------------------------------------
# Before DuckDB (Polars): study check, age from date of birth, identifiers out, PII out of free text


def _check_study(recs: FormRecords, settings: IngestSettings) -> None:
    if STUDY not in recs.frame.columns:
        return
    declared = recs.frame.filter(pl.col(STUDY).is_not_null())
    if declared.height and declared.filter(pl.col(STUDY) == settings.study_id).height == 0:
        first = declared.sort(LINE).row(0, named=True)
        raise file_error(
            recs.file, "FILE-OTHER-STUDY",
            f"every record belongs to study {first[STUDY]!r}, not {settings.study_id}: a file from another study",
            line=first[LINE], column="STUDYID",
        )


def age_at(birth: pl.Expr, ref: pl.Expr) -> pl.Expr:
    """Completed years between two ISO date strings (NULL unless both are real full dates)."""
    b = birth.str.to_date("%Y-%m-%d", strict=False)
    r = ref.str.to_date("%Y-%m-%d", strict=False)
    before_birthday = (r.dt.month() * 100 + r.dt.day()) < (b.dt.month() * 100 + b.dt.day())
    return (r.dt.year() - b.dt.year() - before_birthday.cast(pl.Int32)).cast(pl.String)


def _age_from_birth_date(frame: pl.DataFrame, birth: pl.Series | None, consent: pl.DataFrame | None) -> tuple[pl.DataFrame, int]:
    """Fill a blank AGE from the date of birth (BRTHDAT, one value per row of ``frame``, never added to
    it) and the informed-consent date (enrol RFICDAT). ``frame`` is trimmed, blanks NULL."""
    if birth is None or consent is None or "AGE" not in frame.columns:
        return frame, 0
    dates = consent.select(pl.col("SUBJID").str.strip_chars(), pl.col("RFICDAT").str.strip_chars()).unique("SUBJID", keep="none")
    joined = frame.with_columns(birth.str.strip_chars().alias("_birth")).join(dates, on="SUBJID", how="left")
    derived = age_at(pl.col("_birth"), pl.col("RFICDAT"))
    blank = pl.col("AGE").is_null()
    n = joined.filter(blank & derived.is_not_null()).height
    out = joined.with_columns(pl.when(blank).then(derived).otherwise(pl.col("AGE")).alias("AGE")).drop("_birth", "RFICDAT")
    return out, n


def _remove_pii(frame: pl.DataFrame, text_fields: list[str]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Free-text values that look like a direct identifier: replaced, and listed (line, column, kind)."""
    findings = []
    replace = {}
    for name in text_fields:
        kind = pl.lit(None, dtype=pl.String)
        for label, pattern in reversed(PII_PATTERNS.items()):
            kind = pl.when(pl.col(name).str.contains(pattern)).then(pl.lit(label)).otherwise(kind)
        found = frame.select(pl.col(LINE), pl.col("SUBJID"), kind.alias("kind")).filter(pl.col("kind").is_not_null())
        if found.height:
            findings.append(found.with_columns(pl.lit(name).alias("column")))
            replace[name] = pl.when(kind.is_not_null()).then(pl.lit(REMOVED)).otherwise(pl.col(name)).alias(name)
    if not findings:
        return frame, pl.DataFrame()
    found = pl.concat(findings).select(
        pl.col(LINE),
        pl.col("SUBJID"),
        pl.col("column"),
        pl.lit(PII_RULE).alias("rule"),
        pl.lit(REMOVED).alias("value"),
        ("looks like " + pl.col("kind") + ": a direct identifier, removed at ingest and never stored").alias("message"),
    )
    return frame.with_columns(list(replace.values())), found


# ---------------------------------------------------------------------------------------------
# In DuckDB: raw, quarantine, stage


def _type_rule(f: Field) -> tuple[str, str] | None:
    """SQL predicate over the text column that is TRUE when the value is invalid, and the rule id."""
    col = f'"{f.name}"'
    if f.type == "id":
        return f"NOT regexp_full_match({col}, $subjid_pattern)", "TYPE-ID"
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


def _used(params: dict[str, object], sql: str) -> dict[str, object]:
    """The parameters a statement names (DuckDB rejects unused named parameters)."""
    names = set(re.findall(r"\$([A-Za-z_][A-Za-z0-9_]*)", sql))
    return {k: v for k, v in params.items() if k in names}


def _preview(expr: str) -> str:
    return f"CASE WHEN length({expr}) > {PREVIEW} THEN left({expr}, {PREVIEW}) || '... (' || length({expr}) || ' characters)' ELSE {expr} END"


def _checks(form: Form, settings: IngestSettings, has_study: bool) -> tuple[list[str], dict[str, object]]:
    """One SELECT (line, subjid, column, rule, value, message) per rule; messages and values are parameters."""
    table = f"raw.{form.id}"
    params: dict[str, object] = {"subjid_pattern": settings.subjid_pattern.strip("^$")}
    checks: list[str] = []

    def add(column: str, rule: str, where: str, message: str | tuple[str, str, str]) -> None:
        n = len(checks)
        if isinstance(message, tuple):  # (condition, message if true, message if false)
            cond, yes, no = message
            params[f"m{n}a"], params[f"m{n}b"] = yes, no
            msg = f"CASE WHEN {cond} THEN $m{n}a ELSE $m{n}b END"
        else:
            params[f"m{n}"] = message
            msg = f"$m{n}"
        val = _preview(f'"{column}"')
        checks.append(f"SELECT _line, \"SUBJID\", '{column}', '{rule}', {val}, {msg} FROM {table} WHERE {where}")

    for f in form.loaded_fields:
        col = f'"{f.name}"'
        if f.required:
            add(f.name, "REQUIRED", f"{col} IS NULL", f"{f.label} is required")
        rule = _type_rule(f)
        if rule is not None:
            predicate, rule_id = rule
            if f.type == "code":
                params[f"{f.name}_codes"] = settings.codelists.resolve(f.codelist)
            if f.type == "id":
                # The same participant written another way (case, spaces inside): say so.
                normalised = f"regexp_replace(upper({col}), '\\s', '', 'g')"
                add(f.name, "SUBJID-VARIANT",
                    f"{col} IS NOT NULL AND {predicate} AND regexp_full_match({normalised}, $subjid_pattern)",
                    f"{f.label}: the participant identifier written with other case or spaces; the EDC must use one spelling")
                predicate = f"{predicate} AND NOT regexp_full_match({normalised}, $subjid_pattern)"
                add(f.name, rule_id, f"{col} IS NOT NULL AND {predicate}",
                    f"{f.label}: does not match the participant identifier pattern {settings.subjid_pattern}")
                continue
            if f.type in ("int", "float"):
                params["decorated"] = DECORATED_NUMBER[1:-1]
                message = (
                    f"regexp_full_match({col}, $decorated)",
                    f"{f.label}: a number with a unit, thousands separator or decimal comma ("
                    + ("only digits" if f.type == "int" else "only digits, a decimal point and an exponent as in 1.94E9") + ")",
                    f"{f.label}: not a {'whole number' if f.type == 'int' else 'number'}",
                )
            elif f.type == "date":
                message = (
                    f"regexp_full_match({col}, '{ISO_DATE[1:-1]}')",
                    f"{f.label}: not a date on the calendar",
                    f"{f.label}: not an ISO 8601 date YYYY-MM-DD" + (" (or YYYY-MM, YYYY when partly unknown)" if f.partial else ""),
                )
            else:
                message = f"{f.label}: value not in the codelist {f.codelist if isinstance(f.codelist, str) else ''}".rstrip()
            add(f.name, rule_id, f"{col} IS NOT NULL AND {predicate}", message)
            if f.type in ("int", "float") and (f.min is not None or f.max is not None):
                lo = f.min if f.min is not None else float("-inf")
                hi = f.max if f.max is not None else float("inf")
                params[f"lo{len(checks)}"], params[f"hi{len(checks)}"] = lo, hi
                n = len(checks)
                add(f.name, "RANGE",
                    f"{col} IS NOT NULL AND NOT ({predicate}) AND try_cast({col} AS DOUBLE) NOT BETWEEN $lo{n} AND $hi{n}",
                    f"{f.label}: outside the contract's range {f.min if f.min is not None else ''} to {f.max if f.max is not None else ''}"
                    + (f" {f.unit}" if f.unit else ""))
        if f.type == "text":
            params["max_text"] = settings.max_text_chars
            add(f.name, "TEXT-TOO-LONG", f"length({col}) > $max_text",
                f"{f.label}: longer than {settings.max_text_chars} characters (input.max_text_chars)")
            params["formula"] = FORMULA_TEXT
            add(f.name, "TEXT-FORMULA", f"regexp_matches({col}, $formula)",
                f"{f.label}: starts like a spreadsheet formula (=, +, -, @): never passed on as a formula")
            params["markup"] = MARKUP_TEXT
            add(f.name, "TEXT-MARKUP", f"regexp_matches({col}, $markup)",
                f"{f.label}: contains HTML markup or script")
    checks.append(_duplicate_check(form, table, params, len(checks)))
    if has_study and "STUDYID" not in {f.name for f in form.fields}:
        n = len(checks)
        params[f"m{n}"] = f"record of another study (the study is {settings.study_id})"
        params["study_id"] = settings.study_id
        checks.append(
            f"SELECT _line, \"SUBJID\", 'STUDYID', 'OTHER-STUDY', {STUDY}, $m{n} "
            f"FROM _src WHERE {STUDY} IS NOT NULL AND {STUDY} <> $study_id"
        )
    return checks, params


def _duplicate_check(form: Form, table: str, params: dict[str, object], n: int) -> str:
    """Rows sharing the form key. A row whose every loaded field equals an earlier row's (NULLs
    equal; the provenance _export_id, _file and _line aside) is the same record exported again: the
    first copy (lowest line) stays eligible for staging and each later copy is quarantined
    DUPLICATE-RECORD, naming the line it copies. Rows that share the key with different content
    (each record counted once) cannot be chosen between: every first copy is quarantined DUPLICATE-KEY.

    The window over the key runs on every row, as it always did; the window over the content and the
    count of records per key run only on the rows whose key occurs more than once."""
    key = ", ".join(f'"{k}"' for k in form.key)
    content = ", ".join(f'"{f.name}"' for f in form.loaded_fields)
    params[f"m{n}"] = f"key ({', '.join(form.key)}) occurs on more than one row"
    params[f"m{n}a"] = "exact copy of line "
    params[f"m{n}b"] = "; the first copy is loaded"
    params[f"m{n}c"] = "; not loaded: other rows with this key differ (DUPLICATE-KEY)"
    # first_line: the lowest line with the row's content (PARTITION BY puts NULLs together: IS NOT
    # DISTINCT FROM); records: the distinct contents (first copies) under the row's key.
    return (
        f"SELECT _line, \"SUBJID\", '{'+'.join(form.key)}', "
        f"CASE WHEN _line > first_line THEN 'DUPLICATE-RECORD' ELSE 'DUPLICATE-KEY' END, concat_ws('|', {key}), "
        f"CASE WHEN _line = first_line THEN $m{n} "
        f"ELSE $m{n}a || first_line || CASE WHEN records > 1 THEN $m{n}c ELSE $m{n}b END END "
        f"FROM (SELECT *, count(*) FILTER (WHERE _line = first_line) OVER (PARTITION BY {key}) AS records "
        f"FROM (SELECT *, min(_line) OVER (PARTITION BY {content}) AS first_line "
        f"FROM (SELECT *, count(*) OVER (PARTITION BY {key}) AS k FROM {table}) WHERE k > 1)) "
        f"WHERE _line > first_line OR records > 1"
    )


def load_records(
    con: duckdb.DuckDBPyConnection,
    form: Form,
    recs: FormRecords,
    export_id: str,
    settings: IngestSettings,
    consent: pl.DataFrame | None = None,
    sha256: str = "",
) -> LoadResult:
    """Load one form's records into raw.<form>, stage.<form> and raw.quarantine (replacing that form's rows).

    ``consent``: the enrol form's records, given with demographics only (a blank AGE from BRTHDAT)."""
    _check_study(recs, settings)
    loaded = [f.name for f in form.loaded_fields]
    # The allow-list: contract fields that are not identifiers, plus provenance. Nothing else is selected.
    # Trimmed and blank -> NULL here, first and once, in Polars (all cores, ~8x cheaper than DuckDB's
    # trim with a character set): every step after this and the raw table (a plain copy) see the same text.
    frame = recs.frame.select(
        pl.col(LINE).cast(pl.Int64),
        *[
            pl.col(n).cast(pl.String).str.strip_chars(WHITESPACE).replace("", None)
            if n in recs.frame.columns else pl.lit(None, dtype=pl.String).alias(n)
            for n in loaded
        ],
        *([pl.col(STUDY)] if STUDY in recs.frame.columns else []),
    )
    birth = recs.frame.get_column("BRTHDAT") if "BRTHDAT" in recs.frame.columns else None
    frame, ages = _age_from_birth_date(frame, birth, consent)
    text_fields = [f.name for f in form.loaded_fields if f.type == "text"]
    frame, pii = _remove_pii(frame, text_fields)
    extra = pl.concat(
        [
            recs.rejects.with_columns(pl.lit(None, dtype=pl.String).alias("SUBJID")).select(
                LINE, "SUBJID", "column", "rule", "value", "message"
            ),
            *([pii] if pii.height else []),
        ]
    )
    dropped = tuple(dict.fromkeys([*recs.identifier_columns, *[f.name for f in form.fields if f.identifier and f.name in recs.frame.columns]]))
    checks, params = _checks(form, settings, STUDY in frame.columns)
    # Rows already in line order (a CSV file always) are written as they are: no sort of a million rows.
    order_by_line = "" if frame[LINE].is_sorted() else "ORDER BY _line"
    cols = ", ".join(f'"{n}"' for n in loaded)
    typed = ", ".join(_typed_expr(f) for f in form.loaded_fields)
    key = ", ".join(f'"{k}"' for k in form.key)
    scope = {"export_id": export_id, "form": form.id, "file": recs.file}
    create_ingest_tables(con)
    con.register("_src", frame.to_arrow())
    con.register("_extra", extra.to_arrow())
    try:
        con.execute("BEGIN TRANSACTION")
        con.execute(
            f"""CREATE OR REPLACE TABLE raw.{form.id} AS
                SELECT $export_id::VARCHAR AS _export_id, $file::VARCHAR AS _file, _line::BIGINT AS _line, {cols}
                FROM _src {order_by_line}""",
            {"export_id": export_id, "file": recs.file},
        )
        con.execute("DELETE FROM raw.quarantine WHERE export_id = $export_id AND form = $form", {"export_id": export_id, "form": form.id})
        sql = f"""INSERT INTO raw.quarantine
                  SELECT $export_id, $form, $file, q.* FROM ({' UNION ALL '.join(checks)}) q"""
        con.execute(sql, _used({**params, **scope}, sql))
        con.execute(
            f"""INSERT INTO raw.quarantine
                SELECT $export_id, $form, $file, _line, SUBJID, "column", rule, {_preview("value")}, message FROM _extra""",
            scope,
        )
        con.execute(
            f"""CREATE OR REPLACE TABLE stage.{form.id} AS
                SELECT _export_id, _file, _line, {typed} FROM raw.{form.id} r
                ANTI JOIN (SELECT line FROM raw.held WHERE export_id = $export_id AND form = $form) q
                  ON r._line = q.line
                ORDER BY {key}, _line""",
            {"export_id": export_id, "form": form.id},
        )
        staged = con.execute(f"SELECT count(*) FROM stage.{form.id}").fetchone()[0]
        held = [line for (line,) in con.execute(
            "SELECT DISTINCT line FROM raw.held WHERE export_id = $export_id AND form = $form AND line IS NOT NULL",
            {"export_id": export_id, "form": form.id},
        ).fetchall()]
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    finally:
        con.unregister("_src")
        con.unregister("_extra")
    received = frame.height + recs.rejects.height  # raw.<form> is a plain copy of the frame
    validated = frame.filter(~pl.col(LINE).is_in(pl.Series(held, dtype=pl.Int64).implode()))
    if order_by_line:
        validated = validated.sort(LINE, maintain_order=True)
    return LoadResult(
        form.id, recs.file, sha256, received, staged, received - staged, dropped,
        recs.format, recs.encoding, recs.delimiter, ages, form.id in settings.forms, validated.select(loaded),
    )


def create_ingest_tables(con: duckdb.DuckDBPyConnection) -> None:
    """The schemas and the quarantine table every load writes to (before loads run side by side:
    two transactions creating the same catalog entry would conflict)."""
    con.execute("CREATE SCHEMA IF NOT EXISTS raw; CREATE SCHEMA IF NOT EXISTS stage")
    con.execute(QUARANTINE_DDL)
    con.execute(HELD_DDL)


def order_quarantine(con: duckdb.DuckDBPyConnection, form_ids: list[str]) -> None:
    """Rewrite raw.quarantine in a fixed row order (forms in ``form_ids`` order, then line, column,
    rule, value): forms loaded side by side commit in any order, and the database's bytes must not
    depend on it."""
    con.execute(
        """CREATE OR REPLACE TABLE raw.quarantine AS SELECT q.* FROM raw.quarantine q
           ORDER BY list_position($forms, q.form) NULLS LAST, q.form, q.export_id, q.line NULLS FIRST, q."column", q.rule,
                    q.value, q.message, q.subjid, q.file""",
        {"forms": form_ids},
    )


def not_collected(form: Form) -> FormRecords:
    """The empty records of a form the study does not collect."""
    return FormRecords(
        file="",
        format="not collected",
        frame=pl.DataFrame(schema={LINE: pl.Int64, **{f.name: pl.String for f in form.loaded_fields}}),
    )
