"""The same trial delivered every way a sponsor receives it gives the same raw and stage tables
(issue 3, item 1): CSV in UTF-8, UTF-8 with BOM, GB18030 with semicolons and CRLF; CDISC ODM 1.3
XML through the study's ODM mapping; SDTM as CDISC Dataset-JSON through the study's SDTM mapping.

The deliveries are written from the simulated demo export (with Chinese free text added) by the
helpers in tests/fixtures/exports.py, the inverse of the mapping files in studies/mappings/.
"""

import shutil

import duckdb
import pytest
from fixtures.exports import (
    ROOT,
    load_export,
    render_odm,
    render_sdtm,
    rewrite_csv,
    rows,
    set_values,
    study_with_input,
)

from clinical.crf import FORMS
from clinical.ingest import ingest_settings
from clinical.sources import ExportSource, ingest_form
from clinical.study import load_study

TERMS = {0: "发热（38.5℃）", 1: "皮疹；瘙痒, on both arms"}


@pytest.fixture(scope="module")
def deliveries(demo_run, tmp_path_factory):
    base = tmp_path_factory.mktemp("deliveries")
    csv = base / "csv"
    shutil.copytree(demo_run.export, csv)
    set_values(csv, "ae", "AETERM", TERMS)
    study = study_with_input(base, {
        "encodings": ["utf-8", "gb18030"],
        "odm_mapping": str(ROOT / "studies" / "mappings" / "im83_odm.yaml"),
        "sdtm_mapping": str(ROOT / "studies" / "mappings" / "im83_sdtm.yaml"),
    })
    out = {
        "csv": csv,
        "csv-bom-crlf": rewrite_csv(csv, base / "bom", encoding="utf-8-sig", delimiter=",", newline="\r\n"),
        "gb18030-semicolon-crlf": rewrite_csv(csv, base / "gb", encoding="gb18030", delimiter=";", newline="\r\n"),
        "odm": render_odm(csv, base / "odm", ROOT / "studies" / "mappings" / "im83_odm.yaml").parent,
        "sdtm-dataset-json": render_sdtm(csv, base / "sdtm"),
    }
    return load_study(study), out


@pytest.fixture(scope="module")
def loaded(deliveries):
    cfg, exports = deliveries
    return {fmt: load_export(path, cfg) for fmt, path in exports.items()}


FORMATS = ["csv-bom-crlf", "gb18030-semicolon-crlf", "odm", "sdtm-dataset-json"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_delivery_gives_the_same_raw_and_stage_tables(loaded, fmt):
    reference, other = loaded["csv"], loaded[fmt]
    for f in FORMS:
        for schema in ("raw", "stage"):
            assert rows(other, f"{schema}.{f.id}") == rows(reference, f"{schema}.{f.id}"), f"{schema}.{f.id}"
    assert rows(other, "raw.quarantine") == rows(reference, "raw.quarantine") == []
    assert sorted(t for (t,) in other.execute("SELECT AETERM FROM stage.ae WHERE AETERM NOT SIMILAR TO '[ -~]*'").fetchall()) == sorted(TERMS.values())


@pytest.mark.parametrize(
    "fmt, expected",
    [
        ("csv", {"ae.csv": ("csv", "utf-8", ",")}),
        ("csv-bom-crlf", {"ae.csv": ("csv", "utf-8-sig", ",")}),
        ("gb18030-semicolon-crlf", {"ae.csv": ("csv", "gb18030", ";"), "lb.csv": ("csv", "utf-8", ";")}),
        ("odm", {"clinical_data.xml": ("odm", "utf-8", None)}),
        ("sdtm-dataset-json", {"ae.json": ("dataset-json", "utf-8", None), "suppae.json": ("dataset-json", "utf-8", None)}),
    ],
)
def test_the_format_encoding_and_delimiter_are_detected_and_recorded(deliveries, fmt, expected):
    cfg, exports = deliveries
    files = {f.path: (f.format, f.encoding, f.delimiter) for f in ExportSource(exports[fmt], ingest_settings(cfg)).describe()}
    assert {k: files[k] for k in expected} == expected


@pytest.mark.parametrize("fmt", ["csv", "csv-bom-crlf", "gb18030-semicolon-crlf"])
def test_the_load_takes_the_dialect_describe_found(deliveries, loaded, fmt, monkeypatch):
    """The pipeline describes the export first; each form's load then takes that file's encoding and
    delimiter instead of decoding the file under each candidate again, and loads the same tables."""
    from clinical import csvsource

    cfg, exports = deliveries
    source = ExportSource(exports[fmt], ingest_settings(cfg))
    described = {f.path: (f.encoding, f.delimiter) for f in source.describe()}
    decoded = []
    real_decode = csvsource.decode
    monkeypatch.setattr(csvsource, "decode", lambda data, file, *a, **k: decoded.append(file) or real_decode(data, file, *a, **k))
    con = duckdb.connect()
    results = [ingest_form(con, f, source, "EXP") for f in FORMS]
    assert decoded == []
    assert {r.file: (r.encoding, r.delimiter) for r in results if r.file} == {r.file: described[r.file] for r in results if r.file}
    for table in [f"{schema}.{f.id}" for f in FORMS for schema in ("raw", "stage")] + ["raw.quarantine"]:
        assert rows(con, table) == rows(loaded[fmt], table), table


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_load_hands_over_the_rows_the_suites_validate(deliveries, fmt):
    """Each load returns the rows that reached stage as loaded text in line order (what the ingest
    step sends to Great Expectations): exactly the rows form_frame reads back from the database."""
    from assets.validate import form_frame

    cfg, exports = deliveries
    source = ExportSource(exports[fmt], ingest_settings(cfg))
    con = duckdb.connect()
    for f in FORMS:
        result = ingest_form(con, f, source, "EXP")
        assert result.validated.equals(form_frame(f, con)), f.id
        assert result.validated.height == result.rows_staged


def test_provenance_is_the_line_or_record_in_each_format(deliveries, loaded):
    _, exports = deliveries
    provenance = {}
    for fmt in ("csv", "odm", "sdtm-dataset-json"):
        provenance[fmt] = loaded[fmt].execute("SELECT _file, _line FROM raw.ae WHERE SUBJID = '01-001' ORDER BY _line LIMIT 2").fetchall()
    assert provenance["csv"] == [("ae.csv", 2), ("ae.csv", 3)]  # line in the file (header is line 1)
    odm_lines = [line for _, line in provenance["odm"]]
    xml = (exports["odm"] / "clinical_data.xml").read_text().splitlines()
    assert all("<ItemGroupData" in xml[line - 1] and 'ItemGroupOID="IG_AE"' in xml[line - 1] for line in odm_lines)
    assert provenance["sdtm-dataset-json"] == [("ae.json", 1), ("ae.json", 2)]  # record number in the dataset


def test_a_mixed_format_export_is_blocking(deliveries, tmp_path):
    from clinical.records import ExportFileError

    cfg, exports = deliveries
    mixed = tmp_path / "mixed"
    shutil.copytree(exports["csv"], mixed)
    shutil.copy(exports["sdtm-dataset-json"] / "ae.json", mixed / "ae.json")
    with pytest.raises(ExportFileError, match=r"mixed: the export mixes formats \(csv, sdtm\).*\(rule FILE-FORMAT\)"):
        _ = ExportSource(mixed, ingest_settings(cfg)).format
