"""SDTM datasets (SAS transport ``.xpt``, CDISC Dataset-JSON) as CRF form records.

For studies whose data arrive from a CRO as SDTM. The mapping file (``input.sdtm_mapping``) names,
per CRF form, the dataset its records come from and where each field comes from
(:mod:`clinical.mapping`)::

    subject: USUBJID                  # the participant identifier in every dataset
    forms:
      ae:
        dataset: ae                   # ae.xpt, ae.json or ae.ndjson
        fields:
          AESPID: AESEQ
          AETOXGR: {from: AESEV, map: {MILD: "1", MODERATE: "2", SEVERE: "3"}}
      inf:
        dataset: ex
        one_row_per_subject: true     # aggregate the dataset's records per participant
        fields:
          EXSTDAT: {from: EXSTDTC, date: true, aggregate: min}
          DOSELVL: {from: ARMCD, dataset: dm}
      ds:
        dataset: ds
        where: {DSCAT: DISPOSITION EVENT}
      sc:
        dataset: sc
        pivot: {name: SCTESTCD, value: SCORRES}   # findings: one column per test code
        fields:
          KPS: KPS
          SCDAT: {from: SCDTC, date: true}

Values are read as text exactly as stored: character variables as they are (XPORT pads with blanks,
which ingest trims), numbers without a float artefact (``63.0`` -> ``63``; XPORT's smallest IBM
float, which some writers store for zero, -> ``0``). Character data are decoded as UTF-8, or as the
first further encoding the study accepts (``input.encodings``), and the encoding is recorded.
Provenance: the record number in the dataset (1-based); for an aggregated form the first record
of the participant.

Supplemental qualifiers (``supp--``) are joined to their parent records (IDVAR/IDVARVAL, or the
participant when IDVAR is blank) when a field asks for one (``{supp: QNAM}``).
"""

from __future__ import annotations

import json
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from clinical.crf import Form
from clinical.mapping import (
    FieldSpec,
    MappingError,
    field_expr,
    load_yaml,
    parse_field,
    parse_fields,
)
from clinical.records import LINE, STUDY, FormRecords, IngestSettings, file_error

SUFFIXES = (".xpt", ".json", ".ndjson")
IBM_ZERO = 1e-70  # below this an XPORT number is the IBM-float encoding of zero, not a value


@dataclass(frozen=True)
class SdtmFormMap:
    form: str
    dataset: str
    where: tuple[tuple[str, tuple[str, ...]], ...]
    one_row_per_subject: bool
    fields: tuple[FieldSpec, ...]
    pivot: tuple[str, str] | None = None  # (test-code variable, result variable)


@dataclass(frozen=True)
class SdtmMapping:
    path: Path
    subject: FieldSpec
    study_column: str
    forms: dict[str, SdtmFormMap]


def load_sdtm_mapping(path: Path) -> SdtmMapping:
    data = load_yaml(path, "SDTM")
    forms = {}
    for form_id, spec in data["forms"].items():
        where = f"{path}: forms.{form_id}"
        if not isinstance(spec, dict) or "dataset" not in spec or "fields" not in spec:
            raise MappingError(f"{where}: needs dataset and fields")
        pivot = spec.get("pivot")
        if pivot is not None and (not isinstance(pivot, dict) or set(pivot) != {"name", "value"}):
            raise MappingError(f"{where}.pivot: {{name: <test code variable>, value: <result variable>}}")
        filters = spec.get("where") or {}
        if not isinstance(filters, dict):
            raise MappingError(f"{where}.where: a mapping of variable to value(s)")
        forms[form_id] = SdtmFormMap(
            form_id,
            str(spec["dataset"]).lower(),
            tuple((str(k), tuple(str(x) for x in (v if isinstance(v, list) else [v]))) for k, v in filters.items()),
            bool(spec.get("one_row_per_subject", False)),
            parse_fields(form_id, spec["fields"], f"{where}.fields"),
            (str(pivot["name"]), str(pivot["value"])) if pivot else None,
        )
    return SdtmMapping(
        Path(path), parse_field("SUBJID", data.get("subject", "USUBJID"), f"{path}: subject"),
        str(data.get("study_column", "STUDYID")), forms,
    )


def _as_text(frame: pl.DataFrame) -> pl.DataFrame:
    """Every column as text: numbers without float artefacts, NaN and blanks as they come (NaN -> null)."""
    exprs = []
    for name, dtype in frame.schema.items():
        col = pl.col(name)
        if dtype.is_numeric():
            x = col.cast(pl.Float64)
            exprs.append(
                pl.when(x.is_null() | x.is_nan()).then(pl.lit(None, dtype=pl.String))
                .when(x.abs() < IBM_ZERO).then(pl.lit("0"))
                .when(x == x.round(0)).then(x.cast(pl.Int64).cast(pl.String))
                .otherwise(x.cast(pl.String)).alias(name)
            )
        elif dtype == pl.String:
            exprs.append(col)
        else:
            exprs.append(col.cast(pl.String))
    return frame.select(exprs)


def read_xpt(path: Path, encodings: tuple[str, ...]) -> tuple[pl.DataFrame, str]:
    import pandas as pd  # library boundary: pandas reads SAS transport; nothing else uses it

    first_error = None
    for encoding in dict.fromkeys(("utf-8", *encodings)):
        try:
            df = pd.read_sas(path, format="xport", encoding=encoding)
        except UnicodeDecodeError as exc:
            first_error = first_error or exc
            continue
        except (ValueError, OSError, KeyError, IndexError, struct.error) as exc:  # a damaged or non-XPORT file
            raise file_error(path.name, "FILE-PARSE", f"not a readable SAS transport (XPORT v5) file: {exc}") from None
        return _as_text(pl.from_pandas(df)), encoding
    raise file_error(
        path.name, "FILE-ENCODING",
        f"character data are not UTF-8 ({first_error.reason} at byte {first_error.start} of a value) and do not decode "
        f"as any encoding the study accepts ({', '.join(encodings)})",
    )


def read_dataset_json(path: Path) -> pl.DataFrame:
    """CDISC Dataset-JSON 1.1 (``columns``/``rows``, or NDJSON) or 1.0 (``clinicalData.itemGroupData``)."""
    try:
        if path.suffix.lower() == ".ndjson":
            lines = path.read_text(encoding="utf-8").splitlines()
            meta, rows = json.loads(lines[0]), [json.loads(x) for x in lines[1:] if x.strip()]
            names = [c["name"] for c in meta["columns"]]
        else:
            doc = json.loads(path.read_text(encoding="utf-8"))
            if "columns" in doc:
                names, rows = [c["name"] for c in doc["columns"]], doc.get("rows", [])
            else:
                data = doc.get("clinicalData") or doc.get("referenceData")
                group = next(iter(data["itemGroupData"].values()))
                names, rows = [i["name"] for i in group["items"]], group.get("itemData", [])
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, StopIteration, TypeError, IndexError) as exc:
        raise file_error(path.name, "FILE-PARSE", f"not CDISC Dataset-JSON: {exc!r}") from None
    columns = list(zip(*rows)) if rows else [()] * len(names)
    series = []
    for name, values in zip(names, columns):
        numeric = all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in values)
        series.append(pl.Series(name, values, dtype=pl.Float64 if numeric and values else pl.String, strict=False))
    frame = pl.DataFrame(series) if series else pl.DataFrame()
    return _as_text(frame.drop("ITEMGROUPDATASEQ", strict=False))


def _aggregate(name: str, how: str | None) -> pl.Expr:
    """min / max (numerically when the values are numbers, else as ISO text), first non-blank, or first record's."""
    col = pl.col(name)
    if how in ("min", "max"):
        keys = [col.cast(pl.Float64, strict=False), col]
        return col.sort_by(keys, descending=how == "max", nulls_last=True).first()
    if how == "first":
        return col.drop_nulls().first()
    return col.first()


class SdtmSource:
    """The records of every mapped form of an SDTM export. Datasets are read once, when first needed."""

    def __init__(self, files: list[Path], mapping: SdtmMapping, settings: IngestSettings) -> None:
        self.files = {p.stem.lower(): p for p in files if p.suffix.lower() in SUFFIXES}
        self.mapping = mapping
        self.settings = settings
        self._datasets: dict[str, tuple[pl.DataFrame, Path, str]] = {}
        # Forms are read from two threads (the ingest step) and share datasets: each is read once.
        self._datasets_lock = threading.Lock()

    def dataset(self, name: str, needed_by: str) -> tuple[pl.DataFrame, Path, str]:
        """(records as text with _line, file, encoding) of one dataset."""
        with self._datasets_lock:
            if name not in self._datasets:
                path = self.files.get(name)
                if path is None:
                    json_export = any(p.suffix.lower() != ".xpt" for p in self.files.values())
                    raise file_error(
                        f"{name}.json" if json_export else f"{name}.xpt", "FILE-MISSING",
                        f"dataset {name.upper()} (.xpt, .json or .ndjson), needed for form {needed_by}, is missing from the export",
                    )
                if path.suffix.lower() == ".xpt":
                    frame, encoding = read_xpt(path, self.settings.encodings)
                else:
                    frame, encoding = read_dataset_json(path), "utf-8"
                self._datasets[name] = (frame.with_row_index(LINE, offset=1).with_columns(pl.col(LINE).cast(pl.Int64)), path, encoding)
            return self._datasets[name]

    def _require(self, frame: pl.DataFrame, path: Path, columns) -> None:
        for c in columns:
            if c not in frame.columns:
                raise file_error(path.name, "FILE-MISSING-COLUMN", "variable missing from the dataset", column=c)

    def _pivot(self, frame: pl.DataFrame, path: Path, subject: str, name: str, value: str) -> pl.DataFrame:
        """Findings (one record per test) as one record per participant with a column per test code;
        the other variables from the participant's first record, provenance its first record number."""
        frame = frame.with_columns(pl.col(name).str.strip_chars())
        dup = frame.group_by(subject, name).len().filter(pl.col("len") > 1)
        if dup.height:
            raise file_error(path.name, "FILE-PARSE", f"test {dup[name][0]} occurs twice for participant {dup[subject][0]}",
                             column=name)
        wide = frame.pivot(on=name, index=subject, values=value)
        rest = frame.sort(LINE).group_by(subject, maintain_order=True).agg(pl.all().exclude(name, value).first())
        return rest.join(wide, on=subject, how="left")

    def _supp(self, parent: pl.DataFrame, dataset: str, qnams: list[str], subject: str, form_id: str) -> pl.DataFrame:
        supp, path, _ = self.dataset(f"supp{dataset}", form_id)
        self._require(supp, path, [subject, "IDVAR", "IDVARVAL", "QNAM", "QVAL"])
        blank_null = [pl.col(c).str.strip_chars().replace("", None).alias(c) for c in ("IDVAR", "IDVARVAL", "QNAM")]
        supp = supp.with_columns(blank_null).filter(pl.col("QNAM").is_in(qnams))
        out = parent
        for idvar in supp["IDVAR"].unique().to_list():
            part = supp.filter(pl.col("IDVAR").is_null() if idvar is None else pl.col("IDVAR") == idvar)
            keys = [subject] if idvar is None else [subject, "IDVARVAL"]
            dup = part.group_by([*keys, "QNAM"]).len().filter(pl.col("len") > 1)
            if dup.height:
                raise file_error(path.name, "FILE-PARSE", f"{dup['QNAM'][0]} occurs twice for one parent record", column="QNAM")
            wide = part.pivot(on="QNAM", index=keys, values="QVAL")
            if idvar is None:
                out = out.join(wide, on=subject, how="left", suffix="_supp")
            else:
                self._require(out, path, [idvar])
                out = out.join(wide, left_on=[subject, pl.col(idvar).str.strip_chars()], right_on=[subject, "IDVARVAL"], how="left", suffix="_supp")
            for q in qnams:  # the same QNAM under two IDVARs: take whichever matched
                if f"{q}_supp" in out.columns:
                    out = out.with_columns(pl.coalesce(q, f"{q}_supp").alias(q)).drop(f"{q}_supp")
        for q in qnams:
            if q not in out.columns:
                out = out.with_columns(pl.lit(None, dtype=pl.String).alias(q))
        return out

    def read_form(self, form: Form) -> FormRecords:
        spec = self.mapping.forms.get(form.id)
        if spec is None:
            raise file_error(
                self.mapping.path.name, "FILE-MISSING",
                f"form {form.id} is collected by the study but not in the SDTM mapping",
            )
        base, path, encoding = self.dataset(spec.dataset, form.id)
        subject = self.mapping.subject
        fields = spec.fields if any(f.name == "SUBJID" for f in spec.fields) else (subject, *spec.fields)
        subj_col = subject.source
        frame = base
        self._require(base, path, [subj_col, *[c for c, _ in spec.where], *(spec.pivot or ())])
        for column, values in spec.where:
            frame = frame.filter(pl.col(column).str.strip_chars().is_in(values))
        if spec.pivot:
            frame = self._pivot(frame, path, subj_col, *spec.pivot)
        own = [f.source for f in fields if f.source and not f.dataset]
        self._require(frame, path, own)
        qnams = sorted({f.supp for f in fields if f.supp})
        if qnams:
            frame = self._supp(frame, spec.dataset, qnams, subj_col, form.id)
        for other in sorted({f.dataset for f in fields if f.dataset}):
            lookup, lpath, _ = self.dataset(other, form.id)
            cols = sorted({f.source for f in fields if f.dataset == other})
            self._require(lookup, lpath, [subj_col, *cols])
            lookup = lookup.select(subj_col, *[pl.col(c).alias(f"{other}.{c}") for c in cols])
            if lookup[subj_col].n_unique() != lookup.height:
                raise file_error(lpath.name, "FILE-PARSE", f"more than one record per participant; cannot look up {cols}", column=subj_col)
            frame = frame.join(lookup, on=subj_col, how="left")
        exprs = [field_expr(f, f"{f.dataset}.{f.source}" if f.dataset else None) for f in fields]
        study_col = self.mapping.study_column
        study = [pl.col(study_col).str.strip_chars().alias(STUDY)] if study_col in frame.columns else []
        out = frame.select(pl.col(LINE), *exprs, *study)
        if spec.one_row_per_subject:
            out = out.sort(LINE).group_by("SUBJID", maintain_order=True).agg(
                pl.col(LINE).min(),
                *[_aggregate(f.name, f.aggregate) for f in fields if f.name != "SUBJID"],
                *([pl.col(STUDY).first()] if study else []),
            )
        return FormRecords(file=path.name, format="sdtm-xpt" if path.suffix.lower() == ".xpt" else "dataset-json",
                           frame=out, encoding=encoding)
