"""What every export reader hands to the loader: one form's records as text, with provenance.

The readers (:mod:`clinical.csvsource`, :mod:`clinical.odm`, :mod:`clinical.sdtm`) turn a file of
their format into a :class:`FormRecords`; :func:`clinical.ingest.load_records` loads any of them
into ``raw.<form>``, ``stage.<form>`` and ``raw.quarantine`` the same way. A reader never types,
trims or judges a value: that is the loader's job, so the rules are the same for every format.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from clinical.crf import FORM_IDS, SUBJID_PATTERN, ResolvedCodelists

# Columns of ``FormRecords.frame`` that are not contract fields.
LINE = "_line"  # line of the record in its file (CSV, ODM XML) or record number (SDTM), unique per form
STUDY = "_studyid"  # the study the record says it belongs to, when the source carries one
REJECT_COLUMNS = {"_line": pl.Int64, "column": pl.String, "rule": pl.String, "value": pl.String, "message": pl.String}


class ExportFileError(ValueError):
    """A blocking problem with an export file; the message names file, line, column and rule."""


def file_error(file: str, rule: str, what: str, line: int | None = None, column: str | None = None) -> ExportFileError:
    """``<file>: line <n>: column <c>: <what> (rule <RULE>)``: the one shape of every blocking message."""
    if column and not column.isprintable():
        column = repr(column)  # a line break or tab in a column name stays visible, on one line
    where = "".join(
        [f"{file}: ", f"line {line}: " if line is not None else "", f"column {column}: " if column else ""]
    )
    return ExportFileError(f"{where}{what} (rule {rule})")


def empty_rejects() -> pl.DataFrame:
    return pl.DataFrame(schema=REJECT_COLUMNS)


@dataclass(frozen=True)
class FormRecords:
    """One form's records from one source file, every value as text (None = blank/absent).

    ``frame`` holds the contract fields present in the source (identifier fields included: the
    loader derives what it may from them and drops them before anything reaches DuckDB), ``_line``
    and, when the source carries a study identifier per record, ``_studyid``.
    ``rejects`` are records that could not even be split into fields (CSV rows with the wrong
    number of fields); they go to quarantine with their line.
    """

    file: str
    format: str  # csv | odm | sdtm-xpt | dataset-json
    frame: pl.DataFrame
    encoding: str | None = None
    delimiter: str | None = None
    rejects: pl.DataFrame = field(default_factory=empty_rejects)
    # Source columns that are direct identifiers (contract or recognised by name); never loaded.
    identifier_columns: tuple[str, ...] = ()


# Column names that are direct identifiers wherever they turn up (compared upper-case, letters and
# digits only, so "Date of birth" and "DATE_OF_BIRTH" both match DATEOFBIRTH). A column with one of
# these names is dropped before anything reaches DuckDB; any other column that is not in the form's
# allow-list (the contract) stops the load.
DEFAULT_IDENTIFIER_COLUMNS = frozenset(
    {
        "NAME", "FULLNAME", "SUBJNAME", "PATNAME", "PATIENTNAME", "FIRSTNAME", "LASTNAME", "FAMILYNAME",
        "GIVENNAME", "SURNAME", "INITIALS", "SUBJINIT", "PATINIT",
        "BRTHDAT", "BRTHDTC", "BIRTHDATE", "DATEOFBIRTH", "DOB",
        "IDCARD", "IDCARDNO", "IDNO", "IDNUMBER", "NATIONALID", "SSN", "PASSPORT", "MRN", "HOSPITALNO",
        "PHONE", "PHONENO", "TEL", "TELEPHONE", "MOBILE", "CELLPHONE", "EMAIL",
        "ADDRESS", "ADDR", "STREET", "POSTCODE", "ZIPCODE", "ZIP",
        # Chinese EDC and Excel headers: name, initials, date of birth, ID card, phone, mobile, address.
        "姓名", "患者姓名", "姓名缩写", "出生日期", "身份证号", "身份证号码", "身份证", "电话", "联系电话", "手机",
        "手机号", "地址", "住址", "家庭住址",
    }
)


def identifier_key(name: str) -> str:
    return "".join(ch for ch in name.upper() if ch.isalnum())


@dataclass(frozen=True)
class IngestSettings:
    """What ingest needs from the study configuration (built by ``clinical.ingest.ingest_settings``)."""

    study_id: str
    codelists: ResolvedCodelists
    subjid_pattern: str = SUBJID_PATTERN
    forms: tuple[str, ...] = FORM_IDS  # the forms the study collects; the others load empty
    encodings: tuple[str, ...] = ("utf-8",)
    delimiters: tuple[str, ...] = (",", ";")
    max_text_chars: int = 2000
    identifier_columns: frozenset[str] = DEFAULT_IDENTIFIER_COLUMNS
    odm_mapping: Path | None = None
    sdtm_mapping: Path | None = None

    def is_identifier_column(self, name: str) -> bool:
        return identifier_key(name) in self.identifier_columns
