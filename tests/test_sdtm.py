"""SDTM exports (SAS transport, CDISC Dataset-JSON) read through a mapping file: small fixtures for every
operation of the mapping grammar and for what a CRO delivery can get wrong."""

import json
from pathlib import Path

import pytest
from conftest import require
from fixtures.exports import write_dataset_json

from clinical.crf import form
from clinical.ingest import IngestSettings, ingest_settings
from clinical.mapping import MappingError
from clinical.records import ExportFileError
from clinical.sdtm import SdtmSource, load_sdtm_mapping, read_dataset_json
from clinical.study import load_study

ROOT = Path(__file__).resolve().parent.parent
PILOT_SDTM = ROOT.parent / "shared" / "data" / "cdiscpilot01" / "sdtm"
IM83 = ingest_settings(load_study(ROOT / "studies" / "im83.yaml"))

MAPPING = """
subject: {from: USUBJID, extract: "^IM83-(.+)$"}
forms:
  enrol:
    dataset: dm
    fields:
      RFICDAT: {from: RFICDTC, date: true}
      ENRLYN: {from: ARMCD, map: {SCRNFAIL: N}, default: Y}
      ENRLDAT: {supp: ENRLDTC}
      DOSELVL: {from: ARMCD, map: {SCRNFAIL: null}}
  inf:
    dataset: ex
    one_row_per_subject: true
    fields:
      EXSTDAT: {from: EXSTDTC, date: true, aggregate: min}
      EXDOSE: {from: EXDOSE, aggregate: max}
      DOSELVL: {from: ARMCD, dataset: dm}
  ae:
    dataset: ae
    fields:
      AESPID: AESEQ
      AETERM: AETERM
      AETOXGR: {from: AESEV, map: {MILD: "1", MODERATE: "2", SEVERE: "3"}}
      AEDLT: {supp: AEDLT}
  sc:
    dataset: sc
    pivot: {name: SCTESTCD, value: SCORRES}
    fields:
      SCDAT: {from: SCDTC, date: true}
      KPS: KPS
      GPC3: GPC3
  ds:
    dataset: ds
    where: {DSCAT: DISPOSITION EVENT}
    fields:
      DSDECOD: DSDECOD
      DSSTDAT: DSSTDTC
"""
S = ["STUDYID", "DOMAIN", "USUBJID"]
SUPP = ["STUDYID", "RDOMAIN", "USUBJID", "IDVAR", "IDVARVAL", "QNAM", "QVAL"]


@pytest.fixture
def export(tmp_path):
    d = tmp_path / "sdtm"
    d.mkdir()
    a, b = "IM83-01-001", "IM83-01-002"
    write_dataset_json(d / "dm.json", "dm", [*S, "RFICDTC", "ARMCD", "AGE"],
                       [["IM83", "DM", a, "2025-01-02T09:30", "DL1", 63.0], ["IM83", "DM", b, "2025-01-05", "SCRNFAIL", 5.397605346934028e-79]])
    write_dataset_json(d / "suppdm.json", "suppdm", SUPP, [["IM83", "DM", a, "", "", "ENRLDTC", "2025-01-10"]])
    write_dataset_json(d / "ex.json", "ex", [*S, "EXSTDTC", "EXDOSE"],
                       [["IM83", "EX", a, "2025-03-08", 54], ["IM83", "EX", a, "2025-03-01T08:00", 100], ["IM83", "EX", a, "2025-03-15", 81]])
    write_dataset_json(d / "ae.json", "ae", [*S, "AESEQ", "AETERM", "AESEV"],
                       [["IM83", "AE", a, 1, "Headache", "MILD"], ["IM83", "AE", a, 2, "Fatigue", "SEVERE"]])
    write_dataset_json(d / "suppae.json", "suppae", SUPP, [["IM83", "AE", a, "AESEQ", "2", "AEDLT", "Y"]])
    write_dataset_json(d / "sc.json", "sc", [*S, "SCTESTCD", "SCORRES", "SCDTC"],
                       [["IM83", "SC", a, "KPS", "80", "2025-01-03"], ["IM83", "SC", a, "GPC3", "POSITIVE", "2025-01-03"],
                        ["IM83", "SC", b, "KPS", "70", "2025-01-06"]])
    write_dataset_json(d / "ds.json", "ds", [*S, "DSCAT", "DSDECOD", "DSSTDTC"],
                       [["IM83", "DS", a, "PROTOCOL MILESTONE", "RANDOMIZED", "2025-01-10"],
                        ["IM83", "DS", a, "DISPOSITION EVENT", "COMPLETED", "2025-12-01"]])
    (tmp_path / "map.yaml").write_text(MAPPING)
    return d


def source(export: Path, mapping: str | None = None) -> SdtmSource:
    path = export.parent / "map.yaml"
    if mapping is not None:
        path.write_text(mapping)
    return SdtmSource(sorted(export.iterdir()), load_sdtm_mapping(path), IM83)


def frame(export, form_id, **kw):
    return source(export, **kw).read_form(form(form_id)).frame


def test_fields_maps_dates_and_supplemental_qualifiers(export):
    recs = source(export).read_form(form("enrol"))
    assert (recs.file, recs.format, recs.encoding) == ("dm.json", "dataset-json", "utf-8")
    assert recs.frame.rows() == [
        (1, "01-001", "2025-01-02", "Y", "2025-01-10", "DL1", "IM83"),  # subject-level SUPPDM
        (2, "01-002", "2025-01-05", "N", None, None, "IM83"),
    ]
    assert frame(export, "ae").select("_line", "AESPID", "AETOXGR", "AEDLT").rows() == [(1, "1", "1", None), (2, "2", "3", "Y")]


def test_one_row_per_subject_aggregates_numbers_as_numbers(export):
    # min of ISO dates as text; max of doses as numbers (100 > 81 > 54, although "54" > "100" as text)
    assert frame(export, "inf").rows() == [("01-001", 1, "2025-03-01", "100", "DL1", "IM83")]


def test_findings_are_pivoted_to_one_record_per_participant(export):
    assert frame(export, "sc").select("_line", "SUBJID", "SCDAT", "KPS", "GPC3").rows() == [
        (1, "01-001", "2025-01-03", "80", "POSITIVE"), (3, "01-002", "2025-01-06", "70", None),
    ]


def test_where_selects_records(export):
    assert frame(export, "ds").select("_line", "DSDECOD").rows() == [(2, "COMPLETED")]


def test_numbers_are_text_without_float_artefacts(export):
    assert read_dataset_json(export / "dm.json")["AGE"].to_list() == ["63", "0"]  # 5.4e-79: XPORT's IBM zero


def test_dataset_json_1_0_and_ndjson(tmp_path):
    doc = {"clinicalData": {"itemGroupData": {"IG.AE": {
        "records": 1, "name": "AE", "label": "Adverse Events",
        "items": [{"OID": "ITEMGROUPDATASEQ", "name": "ITEMGROUPDATASEQ"}, {"OID": "IT.STUDYID", "name": "STUDYID"},
                  {"OID": "IT.AESEQ", "name": "AESEQ"}, {"OID": "IT.AETERM", "name": "AETERM"}],
        "itemData": [[1, "IM83", 1.0, "Fever"]]}}}}
    (tmp_path / "ae.json").write_text(json.dumps(doc))
    assert read_dataset_json(tmp_path / "ae.json").rows() == [("IM83", "1", "Fever")]
    meta = {"datasetJSONVersion": "1.1.0", "name": "AE", "columns": [{"name": "STUDYID"}, {"name": "AETERM"}]}
    (tmp_path / "ae.ndjson").write_text(json.dumps(meta) + "\n" + json.dumps(["IM83", "发热"]) + "\n")
    assert read_dataset_json(tmp_path / "ae.ndjson").rows() == [("IM83", "发热")]


def test_a_missing_dataset_or_variable_is_blocking(export):
    (export / "ds.json").unlink()
    with pytest.raises(ExportFileError, match=r"ds.json: dataset DS .*needed for form ds, is missing from the export \(rule FILE-MISSING\)"):
        frame(export, "ds")
    (export / "ae.json").write_text(json.dumps({"columns": [{"name": "USUBJID"}], "rows": [["IM83-01-001"]]}))
    with pytest.raises(ExportFileError, match=r"ae.json: column AESEQ: variable missing from the dataset \(rule FILE-MISSING-COLUMN\)"):
        frame(export, "ae")


def test_broken_supplemental_and_lookup_datasets_are_blocking(export):
    write_dataset_json(export / "suppae.json", "suppae", SUPP, [["IM83", "AE", "IM83-01-001", "AESEQ", "2", "AEDLT", "Y"]] * 2)
    with pytest.raises(ExportFileError, match=r"suppae.json: column QNAM: AEDLT occurs twice for one parent record"):
        frame(export, "ae")
    write_dataset_json(export / "dm.json", "dm", [*S, "ARMCD"], [["IM83", "DM", "IM83-01-001", "DL1"]] * 2)
    with pytest.raises(ExportFileError, match=r"dm.json: column USUBJID: more than one record per participant"):
        frame(export, "inf")


def test_records_of_another_study_are_marked(export):
    write_dataset_json(export / "ds.json", "ds", [*S, "DSCAT", "DSDECOD", "DSSTDTC"],
                       [["IM99", "DS", "IM83-01-001", "DISPOSITION EVENT", "COMPLETED", "2025-12-01"]])
    assert frame(export, "ds")["_studyid"].to_list() == ["IM99"]  # the loader blocks or quarantines it


@pytest.mark.parametrize(
    "text, message",
    [
        ("forms: {ae: {fields: {}}}\n", "forms.ae: needs dataset and fields"),
        ("forms: {ae: {dataset: ae, fields: {AETERM: {from: X, value: Y}}}}\n", "forms.ae.fields.AETERM: exactly one of from, value, supp"),
        ("forms: {ae: {dataset: ae, fields: {AETERM: {from: X, aggregate: sum}}}}\n", "forms.ae.fields.AETERM.aggregate: min, max or first"),
        ("forms: {ae: {dataset: ae, fields: {AETERM: {from: X, extract: '^(a)(b)$'}}}}\n", "extract: a regular expression with exactly one group"),
        ("forms: {sc: {dataset: sc, pivot: {name: X}, fields: {}}}\n", "forms.sc.pivot:"),
    ],
)
def test_mapping_errors_name_the_file_and_key(tmp_path, text, message):
    path = tmp_path / "m.yaml"
    path.write_text(text)
    with pytest.raises(MappingError) as err:
        load_sdtm_mapping(path)
    assert str(err.value).startswith(str(path)) and message in str(err.value)


def test_sas_transport_files_are_read_with_their_encoding():
    require(PILOT_SDTM.is_dir(), f"{PILOT_SDTM} is absent (shared test data, see ../shared/data/README.md)")
    from clinical.sdtm import read_xpt

    ex, encoding = read_xpt(PILOT_SDTM / "ex.xpt", ())
    assert encoding == "utf-8" and ex.height == 591
    assert ex.filter(ex["EXTRT"] == "PLACEBO")["EXDOSE"].unique().to_list() == ["0"]  # IBM-float zero, not 5.4e-79
    with pytest.raises(ExportFileError, match=r"ts.xpt: character data are not UTF-8 .*\(rule FILE-ENCODING\)"):
        read_xpt(PILOT_SDTM / "ts.xpt", ())
    ts, encoding = read_xpt(PILOT_SDTM / "ts.xpt", ("windows-1252",))
    assert encoding == "windows-1252" and any("\u2019" in v for v in ts["TSVAL"].drop_nulls().to_list())


def test_settings_without_an_sdtm_mapping_block_an_sdtm_export(export):
    from clinical.sources import ExportSource

    settings = IngestSettings(**{**IM83.__dict__, "sdtm_mapping": None})
    with pytest.raises(ExportFileError, match=r"the export is SDTM but the study has no SDTM mapping"):
        ExportSource(export, settings).read_form(form("ae"))
