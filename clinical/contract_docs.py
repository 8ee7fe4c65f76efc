"""Artefacts generated from the CRF export contract (``clinical/crf.py``).

Two artefacts, both committed to the repository and checked for drift by a test:

* ``docs/crf-export.md`` -- the export specification for sites and the EDC vendor
  (:func:`render_crf_markdown`).
* ``expectations/<form>.json`` -- one Great Expectations 1.x ExpectationSuite per form, in GX's
  own serialised shape (:func:`build_suite`), run by :mod:`clinical.expectation_runner`.

Everything here is a pure function of the contract: no study configuration, no clock, no GX import
(importing GX costs ~3 s; the suites are plain dicts). Study-specific codelists ("@dose_levels" ...)
stay placeholders in both artefacts and are resolved at run time from the study configuration
(:func:`clinical.crf.study_codelists`, :func:`clinical.expectation_runner.resolve_suite`).

Suite design
------------
The suites validate the raw text as loaded: every column a string, blank cells null, direct
identifiers already dropped. Per form, in this order (rule_id: expectation, severity):

* ``GX-<FORM>-COLUMNS``: expect_table_columns_to_match_set, exact set of loaded fields. ERROR.
* ``GX-<FORM>-KEY``: expect_compound_columns_to_be_unique on the key
  (expect_column_values_to_be_unique for a one-column key). ERROR.
* then per loaded field, in contract order:

  * ``GX-<FORM>-<FIELD>-NOTNULL``: expect_column_values_to_not_be_null, required fields. ERROR.
  * ``GX-<FORM>-<FIELD>-FORMAT``: expect_column_values_to_match_regex: SUBJID pattern
    (``crf.SUBJID_PATTERN``); ISO date that exists on the calendar (2025-02-30 fails), or also
    ``YYYY-MM`` / ``YYYY`` where ``partial=True``; integer or decimal number text. ERROR.
  * ``GX-<FORM>-<FIELD>-CODELIST``: expect_column_values_to_be_in_set. ERROR when the field is
    required, part of the key or uses a study ("@") codelist; WARN for optional fields with a fixed
    codelist (e.g. the ASTCT items of an AE).
  * ``GX-<FORM>-<FIELD>-RANGE``: expect_column_values_to_be_between, the contract's min/max. WARN.

ERROR means the row cannot be typed, keyed or derived from correctly (a wrong structure, key,
identifier, date, number or a value outside a codelist the derivations branch on); WARN means the
value is typed correctly but implausible (a range) or outside an optional fixed codelist (e.g. an
ASTCT item), which the data manager queries without stopping the run. ``<FORM>`` and ``<FIELD>``
are upper case (``GX-AE-AETOXGR-RANGE``); rule ids are stable as long as the contract names are.

Numbers on text: a range check on strings would compare lexicographically ("10" < "5"). So each
numeric field gets two rules: FORMAT, a regex on the raw text (optionally signed digits for int;
a decimal, with an exponent allowed, for float: the syntax ingest accepts), and RANGE, whose ``meta.input``
is ``"numeric"``: the runner evaluates it on a copy of the column cast with
``pandas.to_numeric(errors="coerce")``, where unparseable text became null (and is already reported
by FORMAT) and nulls are ignored.

Each expectation carries ``meta = {"rule_id", "severity" ("ERROR"|"WARN"), "description"}`` (plus
``"input": "numeric"`` where applicable) and GX's own ``severity`` field ("critical" for ERROR,
"warning" for WARN), so GX can load the file unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path

from clinical.crf import FLOAT_TEXT, FORMS, INT_TEXT, SUBJID_PATTERN, Field, Form

DOC_PATH = Path("docs") / "crf-export.md"
EXPECTATIONS_DIR = Path("expectations")

ERROR = "ERROR"
WARN = "WARN"
_GX_SEVERITY = {ERROR: "critical", WARN: "warning"}

# Where each study-specific ("@") codelist comes from in the study configuration
# (mirrors clinical.crf.study_codelists; a test keeps the two in step).
STUDY_CODELIST_SOURCES: dict[str, str] = {
    "@study_id": "study.id",
    "@sites": "study.sites[].id",
    "@dose_levels": "dose_levels[].id",
    "@visits": "visits[].id",
    "@eligibility": "eligibility[].id",
    "@lymphodepletion_agents": "lymphodepletion.agents[].name",
    "@subjid_pattern": "input.subject_id_pattern (default: the contract's site-number pattern)",
}

# ---------------------------------------------------------------------------------------------
# Regular expressions for the text as exported (ASCII digits only: ``\d`` would also accept
# other Unicode digits).
_YEAR = r"[0-9]{4}"
# A real calendar day, leap years included: 2024-02-29 passes, 2025-02-29 and 2025-02-30 fail.
_LEAP_YEAR = r"(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:[02468][048]|[13579][26])00)"
_FULL_DATE_BODY = (
    rf"(?:{_YEAR}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])"
    rf"|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
    rf"|02-(?:0[1-9]|1[0-9]|2[0-8]))"
    rf"|{_LEAP_YEAR}-02-29)"
)
DATE_REGEX = rf"^{_FULL_DATE_BODY}$"
PARTIAL_DATE_REGEX = rf"^(?:{_FULL_DATE_BODY}|{_YEAR}-(?:0[1-9]|1[0-2])|{_YEAR})$"
# The number syntax ingest accepts (clinical.crf INT_TEXT / FLOAT_TEXT).
INT_REGEX = INT_TEXT
FLOAT_REGEX = FLOAT_TEXT

_TYPE_WORDS = {
    "text": "text",
    "code": "code",
    "int": "integer",
    "float": "decimal",
    "date": "date",
    "id": "identifier",
}


def suite_path(form_id: str) -> Path:
    return EXPECTATIONS_DIR / f"{form_id}.json"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def _range_text(f: Field) -> str:
    if f.min is not None and f.max is not None:
        text = f"{_num(f.min)} to {_num(f.max)}"
    elif f.min is not None:
        text = f">= {_num(f.min)}"
    elif f.max is not None:
        text = f"<= {_num(f.max)}"
    else:
        text = ""
    if f.unit:
        text = f"{text} {f.unit}".strip()
    return text


# ---------------------------------------------------------------------------------------------
# Expectation suites


def _codelist_severity(form: Form, f: Field) -> str:
    if f.required or f.name in form.key or isinstance(f.codelist, str):
        return ERROR
    return WARN


def _expectation(type_: str, kwargs: dict, rule_id: str, severity: str, description: str, **meta) -> dict:
    return {
        "type": type_,
        "kwargs": kwargs,
        "meta": {"rule_id": rule_id, "severity": severity, "description": description, **meta},
        "severity": _GX_SEVERITY[severity],
    }


def _format_rule(f: Field) -> tuple[str, str] | None:
    """(regex, what it means) for the field's text, or None when the type has no format."""
    if f.type == "id":
        return "@subjid_pattern", "the study's participant identifier pattern (by default site-number, e.g. 01-007)"
    if f.type == "date":
        if f.partial:
            return PARTIAL_DATE_REGEX, "an ISO 8601 date YYYY-MM-DD on the calendar, or partial YYYY-MM / YYYY"
        return DATE_REGEX, "an ISO 8601 date YYYY-MM-DD on the calendar"
    if f.type == "int":
        return INT_REGEX, "a whole number"
    if f.type == "float":
        return FLOAT_REGEX, ("a decimal number (point as decimal separator, an exponent allowed as in 1.94E9; no units "
                             "or thousands separators)")
    return None


def build_suite(form: Form) -> dict:
    """The form's Great Expectations 1.x ExpectationSuite as a JSON-serialisable dict."""
    fid = form.id.upper()
    loaded = form.loaded_fields
    exps: list[dict] = [
        _expectation(
            "expect_table_columns_to_match_set",
            {"column_set": [f.name for f in loaded], "exact_match": True},
            f"GX-{fid}-COLUMNS",
            ERROR,
            f"{form.file} has exactly the columns of the contract (identifiers dropped): "
            + ", ".join(f.name for f in loaded),
        )
    ]
    if len(form.key) == 1:
        exps.append(
            _expectation(
                "expect_column_values_to_be_unique",
                {"column": form.key[0]},
                f"GX-{fid}-KEY",
                ERROR,
                f"At most one row per {form.key[0]}",
            )
        )
    else:
        exps.append(
            _expectation(
                "expect_compound_columns_to_be_unique",
                {"column_list": list(form.key)},
                f"GX-{fid}-KEY",
                ERROR,
                "At most one row per " + " + ".join(form.key),
            )
        )
    for f in loaded:
        rid = f"GX-{fid}-{f.name}"
        if f.required:
            exps.append(
                _expectation(
                    "expect_column_values_to_not_be_null",
                    {"column": f.name},
                    f"{rid}-NOTNULL",
                    ERROR,
                    f"{f.name} [{f.label}] is required: never blank",
                )
            )
        fmt = _format_rule(f)
        if fmt is not None:
            regex, meaning = fmt
            exps.append(
                _expectation(
                    "expect_column_values_to_match_regex",
                    {"column": f.name, "regex": regex},
                    f"{rid}-FORMAT",
                    ERROR,
                    f"{f.name} [{f.label}], when present, is {meaning}",
                )
            )
        if f.codelist is not None:
            values = f.codelist if isinstance(f.codelist, str) else list(f.codelist)
            where = (
                f"the study codelist {f.codelist} (configuration {STUDY_CODELIST_SOURCES[f.codelist]})"
                if isinstance(f.codelist, str)
                else "its codelist"
            )
            exps.append(
                _expectation(
                    "expect_column_values_to_be_in_set",
                    {"column": f.name, "value_set": values},
                    f"{rid}-CODELIST",
                    _codelist_severity(form, f),
                    f"{f.name} [{f.label}], when present, is a value of {where}",
                )
            )
        if f.min is not None or f.max is not None:
            kwargs: dict = {"column": f.name}
            if f.min is not None:
                kwargs["min_value"] = f.min
            if f.max is not None:
                kwargs["max_value"] = f.max
            exps.append(
                _expectation(
                    "expect_column_values_to_be_between",
                    kwargs,
                    f"{rid}-RANGE",
                    WARN,
                    f"{f.name} [{f.label}], when a number, is {_range_text(f)}",
                    input="numeric",
                )
            )
    placeholders = sorted({f.codelist for f in loaded if isinstance(f.codelist, str)})
    return {
        "name": form.id,
        "expectations": exps,
        "meta": {
            "form": form.id,
            "title": form.title,
            "file": form.file,
            "key": list(form.key),
            "columns": [f.name for f in loaded],
            "study_codelists": placeholders,
            "generated_from": "clinical/crf.py by clinical/contract_docs.py; do not edit by hand",
            "input": "raw text as loaded: all columns strings, blank = null, direct identifiers dropped; "
            'expectations with meta.input "numeric" run on pandas.to_numeric(errors="coerce") of the column',
        },
    }


def render_suite_json(form: Form) -> str:
    return json.dumps(build_suite(form), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


# ---------------------------------------------------------------------------------------------
# Markdown


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _codelist_text(f: Field) -> str:
    if f.codelist is None:
        return _range_text(f)
    if isinstance(f.codelist, str):
        return f"`{f.codelist}` (study configuration `{STUDY_CODELIST_SOURCES[f.codelist]}`)"
    return ", ".join(f"`{v}`" for v in f.codelist)


def _notes(form: Form, f: Field) -> str:
    notes = []
    if f.name in form.key:
        notes.append("key")
    if f.identifier:
        notes.append("direct identifier: dropped at ingest")
    if f.type == "id":
        notes.append(f"pattern `{SUBJID_PATTERN}`")
    if f.type == "date":
        notes.append("partial date allowed (`YYYY-MM`, `YYYY`)" if f.partial else "full date `YYYY-MM-DD`")
    if f.codelist is not None and (f.min is not None or f.max is not None or f.unit):
        notes.append(_range_text(f))
    return "; ".join(notes)


_INTRO = """\
# CRF export contract

<!-- Generated from clinical/crf.py by clinical/contract_docs.py (write_artifacts). Do not edit by
hand: a test fails when this file differs from what the contract generates. -->

This is the contract for the raw CRF export that the pipeline ingests. It is generated from
`clinical/crf.py`, the single source of truth; the validation suites in `expectations/` are
generated from the same source.

## File format

- **One file per form**, named `<form>.csv` (for example `ae.csv`), encoded in **UTF-8**.
- **Header row** with the field names below, then one row per record. **Comma** delimiter;
  standard CSV quoting (RFC 4180) for values that contain commas, quotes or line breaks.
- Columns are matched **by name**. After ingest, a file must have exactly the loaded fields of its
  form (all fields except direct identifiers).
- **Blank = missing.** An empty cell is the only way to say "no value": do not write `NA`, `UNK`,
  `.` or `-`. Required fields must never be blank. Leading and trailing spaces are removed at
  ingest, so a cell of spaces is blank too.
- **Dates** are ISO 8601 `YYYY-MM-DD` and must exist on the calendar (`2025-02-30` is rejected).
  Where a field is marked *partial date allowed*, `YYYY-MM` and `YYYY` are accepted for an unknown
  day or month (CDASH UNK); the derivations impute them and flag the imputation. No other formats
  (`25/03/2025`, `2025-3-5`, times) are accepted.
- **Numbers**: integer fields hold whole numbers (optional sign); decimal fields use a point as the
  decimal separator and may carry an exponent (`500000000`, `5e8`, `1.94E9`), with no thousands separators
  and no units (`500,000,000`, `5x10^8 cells` are rejected).
  Units are fixed by the contract (column *Codelist / range*) or carried in a separate unit field.
- **Codes** are matched exactly, including case and spaces.
- **Participant identifier** `SUBJID` is `site-number`, pattern `{subjid}` (e.g. `01-007`).
- **Direct identifiers** (marked below) may be present in a site's export, but they are **dropped at
  ingest** and never stored, validated or reported.

## Study-specific codelists

A codelist written `@name` is not fixed by the contract: its values come from the study
configuration (`studies/<study>.yaml`, for IM83 `studies/im83.yaml`) and are resolved when the
pipeline runs (`clinical.crf.study_codelists`). They are deliberately not listed here, so this
document does not go stale when the configuration changes.

| Codelist | Configuration key |
|---|---|
{codelists}

## Validation

Each form has a Great Expectations suite, `expectations/<form>.json`, run on the raw text after
ingest. Every rule has a stable identifier and a severity:

| Rule id | Check | Severity |
|---|---|---|
| `GX-<FORM>-COLUMNS` | exactly the loaded columns of the form | ERROR |
| `GX-<FORM>-KEY` | no two rows share the form's key | ERROR |
| `GX-<FORM>-<FIELD>-NOTNULL` | a required field is never blank | ERROR |
| `GX-<FORM>-<FIELD>-FORMAT` | identifier pattern, date, integer or decimal format | ERROR |
| `GX-<FORM>-<FIELD>-CODELIST` | the value is in the codelist | ERROR for required, key and `@` codelists; WARN for other optional fields |
| `GX-<FORM>-<FIELD>-RANGE` | the number is within the contract's min/max | WARN |

ERROR marks data that cannot be typed, keyed or derived correctly; WARN marks values that are typed
correctly but implausible, to be queried with the site. Range checks run on the numeric value (text
that is not a number fails FORMAT instead).

## Forms

| Form | File | Title | Key |
|---|---|---|---|
{forms}
"""


def _form_section(form: Form) -> str:
    lines = [
        f"### `{form.id}`: {form.title}",
        "",
        f"- File: `{form.file}`",
        "- Key: " + ", ".join(f"`{k}`" for k in form.key),
        f"- Validation suite: `{suite_path(form.id).as_posix()}` ({len(build_suite(form)['expectations'])} rules)",
    ]
    if not form.per_subject:
        lines.append("- Not per participant")
    lines.append("")
    if form.description:
        lines += [form.description, ""]
    lines += [
        "| Field | Label | Type | Required | Codelist / range | Notes |",
        "|---|---|---|---|---|---|",
    ]
    for f in form.fields:
        lines.append(
            "| "
            + " | ".join(
                [
                    f"`{f.name}`",
                    _cell(f.label),
                    _TYPE_WORDS[f.type],
                    "yes" if f.required else "no",
                    _cell(_codelist_text(f)),
                    _cell(_notes(form, f)),
                ]
            )
            + " |"
        )
    return "\n".join(lines) + "\n"


def render_crf_markdown() -> str:
    """The full text of docs/crf-export.md (deterministic)."""
    codelists = "\n".join(f"| `{k}` | `{v}` |" for k, v in STUDY_CODELIST_SOURCES.items())
    forms = "\n".join(
        f"| [`{f.id}`](#{f.id}-{_anchor(f.title)}) | `{f.file}` | {_cell(f.title)} | "
        + ", ".join(f"`{k}`" for k in f.key)
        + " |"
        for f in FORMS
    )
    intro = (
        _INTRO.replace("{subjid}", SUBJID_PATTERN).replace("{codelists}", codelists).replace("{forms}", forms)
    )
    return intro + "\n" + "\n".join(_form_section(f) for f in FORMS)


def _anchor(title: str) -> str:
    # GitHub-style heading anchor for "### `ae`: Adverse events" -> "ae-adverse-events".
    out = []
    for ch in title.lower():
        if ch.isalnum() or ch in "-_":
            out.append(ch)
        elif ch == " ":
            out.append("-")
    return "".join(out)


# ---------------------------------------------------------------------------------------------
# Files


def expected_artifacts() -> dict[Path, str]:
    """Relative path -> exact file content, for every generated artefact."""
    files = {DOC_PATH: render_crf_markdown()}
    for f in FORMS:
        files[suite_path(f.id)] = render_suite_json(f)
    return files


def write_artifacts(root: Path) -> list[Path]:
    """Write docs/crf-export.md and expectations/<form>.json under ``root``; return the paths."""
    root = Path(root)
    written = []
    for rel, text in expected_artifacts().items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode("utf-8"))  # bytes: no newline translation on any platform
        written.append(path)
    return written


def check_artifacts(root: Path) -> list[str]:
    """Relative paths (posix) of generated files that are missing or differ from the contract."""
    root = Path(root)
    stale = []
    for rel, text in expected_artifacts().items():
        path = root / rel
        try:
            current = path.read_bytes()
        except OSError:
            current = None
        if current != text.encode("utf-8"):
            stale.append(rel.as_posix())
    return stale


__all__ = [
    "DATE_REGEX",
    "FLOAT_REGEX",
    "INT_REGEX",
    "PARTIAL_DATE_REGEX",
    "STUDY_CODELIST_SOURCES",
    "build_suite",
    "check_artifacts",
    "expected_artifacts",
    "render_crf_markdown",
    "write_artifacts",
]
