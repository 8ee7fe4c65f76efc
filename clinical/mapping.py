"""Mapping files: how an ODM or SDTM export becomes the CRF forms (``studies/mappings/*.yaml``).

A mapping file says, per CRF form, where its records come from (an ODM form and item group, or an
SDTM dataset) and, per contract field, where its value comes from. A field is one of:

  AETERM: AETERM                     the source item (ODM ItemOID) or variable (SDTM), as text
  AECAT: {value: OTHER}              a constant
  AETOXGR: {from: AESEV, map: {MILD: "1", MODERATE: "2", SEVERE: "3"}}
                                     a source value translated; values not in ``map`` pass unchanged,
                                     unless ``default`` is given (``default: null`` blanks them)
  AESTDAT: {from: AESTDTC, date: true}
                                     the date part of an ISO 8601 date-time (before "T")
  AETERM: {from: I_AE_TERM, decode: true}
                                     ODM: the CodeList decode of a coded value (metadata in the file)
  EXSTDAT: {from: EXSTDTC, date: true, aggregate: min}
                                     SDTM forms with ``one_row_per_subject``: min, max or first
  DOSELVL: {from: ARMCD, dataset: dm}
                                     SDTM: a variable of another dataset with one row per subject
  ENRLDAT: {supp: ENRLDAT}           SDTM: a supplemental qualifier (SUPP-- QNAM) of the record
  SUBJID: {from: USUBJID, extract: "^IM83-(.+)$"}
                                     the first group of a regular expression (a value it does not
                                     match passes unchanged, so ingest shows it in quarantine)

Nothing in a mapping file reaches SQL: mappings are evaluated with Polars expressions, and every
value still passes the same ingest rules as a CSV value. Unmapped contract fields are blank.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl
import yaml

from clinical.crf import FORM_IDS
from clinical.crf import form as contract_form

FIELD_KEYS = {"from", "value", "map", "default", "date", "decode", "aggregate", "dataset", "supp", "extract"}
_UNSET = object()


class MappingError(ValueError):
    """The mapping file is missing or invalid; the message names the file and the key."""


@dataclass(frozen=True)
class FieldSpec:
    name: str
    source: str | None = None
    value: str | None = None
    map: tuple[tuple[str, str | None], ...] | None = None
    default: object = _UNSET  # _UNSET: unmapped values pass unchanged
    date: bool = False
    decode: bool = False
    aggregate: str | None = None
    dataset: str | None = None
    supp: str | None = None
    extract: str | None = None


def _text(v) -> str | None:
    if v is None:
        return None
    if isinstance(v, bool):
        return "Y" if v else "N"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def parse_field(name: str, spec, where: str) -> FieldSpec:
    if isinstance(spec, str):
        return FieldSpec(name, source=spec)
    if not isinstance(spec, dict):
        raise MappingError(f"{where}: a source name or a mapping of {sorted(FIELD_KEYS)}")
    unknown = set(spec) - FIELD_KEYS
    if unknown:
        raise MappingError(f"{where}: unknown key(s) {sorted(unknown)}; allowed {sorted(FIELD_KEYS)}")
    if sum(k in spec for k in ("from", "value", "supp")) != 1:
        raise MappingError(f"{where}: exactly one of from, value, supp")
    if spec.get("aggregate") not in (None, "min", "max", "first"):
        raise MappingError(f"{where}.aggregate: min, max or first")
    extract = spec.get("extract")
    if extract is not None:
        import re

        try:
            if re.compile(str(extract)).groups != 1:
                raise MappingError(f"{where}.extract: a regular expression with exactly one group")
        except re.error as exc:
            raise MappingError(f"{where}.extract: not a regular expression: {exc}") from None
    values = spec.get("map")
    if values is not None and not isinstance(values, dict):
        raise MappingError(f"{where}.map: a mapping of source value to form value")
    return FieldSpec(
        name,
        source=_text(spec.get("from")),
        value=_text(spec.get("value")),
        map=tuple((_text(k), _text(v)) for k, v in values.items()) if values else None,
        default=_text(spec["default"]) if "default" in spec else _UNSET,
        date=bool(spec.get("date", False)),
        decode=bool(spec.get("decode", False)),
        aggregate=spec.get("aggregate"),
        dataset=spec.get("dataset"),
        supp=_text(spec.get("supp")),
        extract=_text(extract),
    )


def field_expr(spec: FieldSpec, column: str | None = None) -> pl.Expr:
    """The Polars expression of a field over a frame that holds its source as ``column`` (text)."""
    if spec.value is not None:
        return pl.lit(spec.value, dtype=pl.String).alias(spec.name)
    base = pl.col(column or spec.source or spec.supp).cast(pl.String)
    if spec.extract:
        base = pl.coalesce(base.str.extract(spec.extract, 1), base)
    if spec.date:
        base = base.str.split("T").list.first()
    if spec.map is not None:
        old = [k for k, _ in spec.map]
        new = [v for _, v in spec.map]
        default = base if spec.default is _UNSET else pl.lit(spec.default, dtype=pl.String)
        base = pl.when(base.is_null()).then(pl.lit(None, dtype=pl.String)).otherwise(
            base.replace_strict(old, new, default=default, return_dtype=pl.String)
        )
    return base.alias(spec.name)


def load_yaml(path: Path, kind: str) -> dict:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise MappingError(f"{path}: cannot read the {kind} mapping ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise MappingError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("forms"), dict):
        raise MappingError(f"{path}: needs a 'forms' mapping of CRF form id to its source")
    unknown = set(data["forms"]) - set(FORM_IDS)
    if unknown:
        raise MappingError(f"{path}: forms: unknown form(s) {sorted(unknown)}")
    return data


def parse_fields(form_id: str, fields, where: str) -> tuple[FieldSpec, ...]:
    if not isinstance(fields, dict):
        raise MappingError(f"{where}: a mapping of contract field to source")
    names = {f.name for f in contract_form(form_id).fields}
    unknown = set(fields) - names
    if unknown:
        raise MappingError(f"{where}: field(s) {sorted(unknown)} are not in the {form_id} contract")
    return tuple(parse_field(name, spec, f"{where}.{name}") for name, spec in fields.items())
