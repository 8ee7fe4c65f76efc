"""An export folder as a source of form records, whatever its format.

An export is a folder. Its format is recognised from its files, never configured per export:

  csv   one ``<form>.csv`` per CRF form (docs/crf-export.md)
  odm   CDISC ODM 1.3 XML with ``ClinicalData`` (Medidata Rave, OpenClinica, REDCap), read through
        the study's ODM mapping (``input.odm_mapping``; :mod:`clinical.odm`)
  sdtm  SDTM datasets as SAS transport (``.xpt``) or CDISC Dataset-JSON (``.json``/``.ndjson``),
        read through the study's SDTM mapping (``input.sdtm_mapping``; :mod:`clinical.sdtm`)

Every file of the folder is described (path, SHA-256, bytes, format, encoding, delimiter) for
``raw.export_files``; files the format does not use (a define.xml, SDTM domains the mapping does
not read) are listed and archived but not loaded. A folder that mixes formats is a blocking error.

Reading and loading meet here: :func:`ingest_form` reads a form and loads it with
:func:`clinical.ingest.load_records`. This module imports the loader, never the other way round.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import duckdb
from lxml import etree

from clinical.crf import Form
from clinical.crf import form as contract_form
from clinical.csvsource import csv_dialect, read_csv_form
from clinical.ingest import LoadResult, load_records, not_collected, sha256_file
from clinical.odm import OdmSource, load_odm_mapping
from clinical.records import ExportFileError, FormRecords, IngestSettings, file_error
from clinical.sdtm import SdtmSource, load_sdtm_mapping

EXPORT_META = "export.json"
COMPLETE_MARKER = "_COMPLETE"  # written by the sender last: the export folder is complete


@dataclass(frozen=True)
class ExportFile:
    path: str  # relative to the export folder, "/"-separated
    sha256: str
    bytes: int
    format: str  # csv | odm | define-xml | xml | sdtm-xpt | dataset-json | export-meta | marker | other
    encoding: str | None = None
    delimiter: str | None = None


def read_meta(export_dir: Path) -> dict:
    path = Path(export_dir) / EXPORT_META
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise file_error(EXPORT_META, "FILE-PARSE", f"not valid UTF-8 JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise file_error(EXPORT_META, "FILE-PARSE", "must be a JSON object")
    return meta


def export_id_of(export_dir: Path, meta: dict | None = None) -> str:
    """An export's id: ``export_id`` in its ``export.json`` (``meta``, read when not given), else the folder's name."""
    meta = read_meta(export_dir) if meta is None else meta
    return str(meta.get("export_id") or Path(export_dir).name)


def list_files(export_dir: Path) -> list[Path]:
    """Every file under the folder (hidden files and folders excluded), sorted by relative path."""
    root = Path(export_dir)
    return sorted(
        (p for p in root.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)),
        key=lambda p: p.relative_to(root).as_posix(),
    )


def _is_odm_clinical(path: Path) -> bool:
    try:
        for _event, el in etree.iterparse(str(path), events=("start",)):
            if etree.QName(el).localname == "ClinicalData":
                return True
    except etree.XMLSyntaxError:
        return path.name.lower() != "define.xml"  # an unreadable XML that is not a define: report it when read
    return False


def _is_dataset_json(path: Path) -> bool:
    with path.open("rb") as fh:
        head = fh.read(8192)
    return b"datasetJSONVersion" in head or b'"clinicalData"' in head or b'"itemGroupData"' in head


def file_format(path: Path, root: Path) -> str:
    rel = path.relative_to(root).as_posix()
    suffix = path.suffix.lower()
    if rel == EXPORT_META:
        return "export-meta"
    if rel == COMPLETE_MARKER:
        return "marker"
    if suffix == ".csv":
        return "csv"
    if suffix == ".xpt":
        return "sdtm-xpt"
    if suffix == ".ndjson" or (suffix == ".json" and _is_dataset_json(path)):
        return "dataset-json"
    if suffix == ".xml":
        if _is_odm_clinical(path):
            return "odm"
        return "define-xml" if path.name.lower() == "define.xml" else "xml"
    return "other"


class ExportSource:
    """The form records of one export folder. Each form is read once; the instance keeps what it read."""

    def __init__(self, export_dir: Path, settings: IngestSettings) -> None:
        self.dir = Path(export_dir)
        self.settings = settings
        self.meta = read_meta(self.dir)
        self._records: dict[str, FormRecords] = {}
        self._sha256: dict[Path, str] = {}
        # (encoding, delimiter) of each form CSV by file name, as describe() found them: the load
        # takes them instead of detecting them again (a full decode of the file).
        self._csv_dialects: dict[str, tuple[str, str]] = {}
        # Forms are read from two threads (the ingest step loads two at a time) and dm reads enrol's
        # records too: a lock per form, so that each form is read once.
        self._form_locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    def sha256(self, path: Path) -> str:
        """A file's SHA-256, computed once per source."""
        if path not in self._sha256:
            self._sha256[path] = sha256_file(path)
        return self._sha256[path]

    @cached_property
    def files(self) -> list[tuple[Path, str]]:
        """(path, format) of every file."""
        return [(p, file_format(p, self.dir)) for p in list_files(self.dir)]

    @cached_property
    def format(self) -> str:
        """csv, odm or sdtm. Only top-level files decide (a subfolder may hold anything)."""
        top = {fmt for p, fmt in self.files if p.parent == self.dir}
        form_csvs = {p.name for p, fmt in self.files if p.parent == self.dir and fmt == "csv"} & {
            f"{i}.csv" for i in self.settings.forms
        }
        found = [name for name, present in (("odm", "odm" in top), ("sdtm", bool(top & {"sdtm-xpt", "dataset-json"}))) if present]
        if form_csvs:
            found.insert(0, "csv")
        if len(found) > 1:
            raise file_error(
                self.dir.name, "FILE-FORMAT",
                f"the export mixes formats ({', '.join(found)}): deliver one format per export",
            )
        return found[0] if found else "csv"

    def check_study(self) -> None:
        """An export.json that names another study is a blocking error."""
        declared = self.meta.get("study")
        if declared and str(declared) != self.settings.study_id:
            raise file_error(EXPORT_META, "FILE-OTHER-STUDY", f"the export is of study {declared!r}, not "
                             f"{self.settings.study_id}", column="study")

    def open(self) -> None:
        """Problems of the whole export, raised once before any form is read: the study's ODM or
        SDTM mapping (``MappingError``) and, for ODM, the one file every form comes from
        (``ExportFileError``), which is parsed here."""
        if self.format == "odm":
            self._odm.parsed  # noqa: B018 - parses the file
        elif self.format == "sdtm":
            self._sdtm  # noqa: B018 - loads the mapping

    def declared_encoding(self, file: str) -> str | None:
        enc = self.meta.get("encoding")
        if isinstance(enc, dict):
            return enc.get(file)
        return enc if isinstance(enc, str) else None

    @cached_property
    def _odm(self) -> OdmSource:
        if self.settings.odm_mapping is None:
            raise file_error(self.dir.name, "FILE-FORMAT", "the export is CDISC ODM but the study has no ODM mapping (input.odm_mapping)")
        files = [p for p, fmt in self.files if fmt == "odm" and p.parent == self.dir]
        return OdmSource(files, load_odm_mapping(self.settings.odm_mapping), self.settings)

    @cached_property
    def _sdtm(self) -> SdtmSource:
        if self.settings.sdtm_mapping is None:
            raise file_error(self.dir.name, "FILE-FORMAT", "the export is SDTM but the study has no SDTM mapping (input.sdtm_mapping)")
        files = [p for p, fmt in self.files if fmt in ("sdtm-xpt", "dataset-json") and p.parent == self.dir]
        return SdtmSource(files, load_sdtm_mapping(self.settings.sdtm_mapping), self.settings)

    def read_form(self, form: Form, export_id: str = "") -> FormRecords:
        """The records of one collected form; raises ExportFileError on a blocking problem."""
        with self._locks_lock:
            lock = self._form_locks.setdefault(form.id, threading.Lock())
        with lock:
            if form.id not in self._records:
                self._records[form.id] = self._read(form, export_id)
            return self._records[form.id]

    def release(self, form_id: str) -> None:
        """Forget a form's records once loaded (the parsed sources stay for the other forms). Not
        before every form that reads them has read them (dm reads enrol's)."""
        self._records.pop(form_id, None)

    def _read(self, form: Form, export_id: str) -> FormRecords:
        if self.format == "csv":
            path = self.dir / form.file
            if not path.is_file():
                raise file_error(form.file, "FILE-MISSING", f"file missing from export {export_id or self.dir.name}")
            dialect = self._csv_dialects.get(form.file)
            return read_csv_form(path, form, self.settings, self.declared_encoding(form.file), dialect)
        # Safe from two threads: after open() ODM only reads its parsed frames; SDTM locks its dataset cache.
        if self.format == "odm":
            return self._odm.read_form(form)
        return self._sdtm.read_form(form)

    def source_path(self, recs: FormRecords) -> Path | None:
        path = self.dir / recs.file
        return path if recs.file and path.is_file() else None

    def describe(self) -> list[ExportFile]:
        """Every file with its fingerprint and, for text formats, the encoding and delimiter detected."""
        out = []
        for path, fmt in self.files:
            if fmt == "marker":  # the sender's completion marker is not part of the export's content
                continue
            rel = path.relative_to(self.dir).as_posix()
            encoding = delimiter = None
            if fmt == "csv" and path.parent == self.dir:
                encoding, delimiter = self._csv_dialect(path)
            elif fmt in ("odm", "define-xml", "xml"):
                encoding = _xml_encoding(path)
            elif fmt in ("dataset-json", "export-meta"):
                encoding = "utf-8"
            out.append(ExportFile(rel, self.sha256(path), path.stat().st_size, fmt, encoding, delimiter))
        return out

    def _csv_dialect(self, path: Path) -> tuple[str | None, str | None]:
        form_id = path.stem
        if form_id not in self.settings.forms:
            return None, None
        if path.name not in self._csv_dialects:
            try:
                self._csv_dialects[path.name] = csv_dialect(
                    path, contract_form(form_id), self.settings, self.declared_encoding(path.name)
                )
            except ExportFileError:
                return None, None  # the form's load reports the problem with its line and column
        return self._csv_dialects[path.name]


def _xml_encoding(path: Path) -> str:
    """The encoding an XML file declares in its prolog (UTF-8 when it declares none)."""
    with path.open("rb") as fh:
        head = fh.read(200)
    m = re.match(rb"<\?xml[^>]*encoding=[\"']([A-Za-z0-9._-]+)[\"']", head)
    return m.group(1).decode("ascii").lower() if m else "utf-8"


def ingest_form(
    con: duckdb.DuckDBPyConnection, form: Form, source: ExportSource, export_id: str, release: bool = True,
) -> LoadResult:
    """Read and load one form of an export (empty tables when the study does not collect it).

    ``release``: forget the form's records once loaded. A caller loading forms in parallel passes
    False and releases each form itself once no other form can still need it (dm reads enrol's)."""
    settings = source.settings
    if form.id not in settings.forms:
        return load_records(con, form, not_collected(form), export_id, settings)
    recs = source.read_form(form, export_id)
    consent = None
    if form.id == "dm" and "BRTHDAT" in recs.frame.columns and "enrol" in settings.forms:
        try:
            consent = source.read_form(contract_form("enrol"), export_id).frame
        except ExportFileError:
            consent = None  # the enrol load reports its own problem; AGE stays as exported
    path = source.source_path(recs)
    result = load_records(con, form, recs, export_id, settings, consent, source.sha256(path) if path else "")
    if release:
        source.release(form.id)
    return result


def load_form(
    con: duckdb.DuckDBPyConnection,
    form: Form,
    path: Path,
    export_id: str,
    settings: IngestSettings,
) -> LoadResult:
    """Load one form's CSV file ``<folder>/<form>.csv``: :func:`ingest_form` on its folder."""
    if path.name != form.file:
        raise ValueError(f"{path}: the {form.id} form's file is {form.file}")
    return ingest_form(con, form, ExportSource(path.parent, settings), export_id)
