"""CDISC ODM 1.3 exports: a real OpenClinica export loads what its mapping maps, and small fixtures for
what an ODM file can get wrong."""

from pathlib import Path

import duckdb
import pytest
from conftest import require

from clinical.crf import ResolvedCodelists, form
from clinical.ingest import IngestSettings, ingest_settings, load_records
from clinical.mapping import MappingError
from clinical.odm import OdmSource, load_odm_mapping
from clinical.records import ExportFileError
from clinical.sources import ExportSource
from clinical.study import load_study

ROOT = Path(__file__).resolve().parent.parent
SHARED_ODM = ROOT.parent / "shared" / "data" / "odm" / "openclinica_odm1.3_full_example_optimal.xml"
IM83_MAPPING = ROOT / "studies" / "mappings" / "im83_odm.yaml"
IM83 = ingest_settings(load_study(ROOT / "studies" / "im83.yaml"))
IM83 = IngestSettings(**{**IM83.__dict__, "odm_mapping": IM83_MAPPING})

HEAD = '<?xml version="1.0" encoding="UTF-8"?>\n<ODM xmlns="http://www.cdisc.org/ns/odm/v1.3" FileType="{type}" ODMVersion="1.3.2" FileOID="F1" CreationDateTime="2025-12-31T00:00:00">\n'
INF = """  <ClinicalData StudyOID="{study}" MetaDataVersionOID="1">
    <SubjectData SubjectKey="01-001">
      <SiteRef LocationOID="01"/>
      <StudyEventData StudyEventOID="SE_STUDY">
        <FormData FormOID="F_INF">
          <ItemGroupData ItemGroupOID="IG_INF" ItemGroupRepeatKey="1">
            <ItemData ItemOID="I_INF_EXSTDAT" Value="2025-03-01"/>
            <ItemData ItemOID="I_INF_DOSELVL" Value="DL1"/>
            <ItemData ItemOID="I_INF_EXDOSE" Value="500000000"/>
            <ItemData ItemOID="I_INF_NOTE" Value="call 13812345678"/>
          </ItemGroupData>
        </FormData>
      </StudyEventData>
    </SubjectData>
    <SubjectData SubjectKey="01-002">
      <StudyEventData StudyEventOID="SE_STUDY">
        <FormData FormOID="F_INF">
          <ItemGroupData ItemGroupOID="IG_INF" ItemGroupRepeatKey="1">
            <ItemData ItemOID="I_INF_EXSTDAT" Value="2025-04-01"/>
            <ItemData ItemOID="I_INF_DOSELVL" Value="DL2"/>
            <ItemData ItemOID="I_INF_EXDOSE" IsNull="Yes"/>
          </ItemGroupData>
        </FormData>
      </StudyEventData>
    </SubjectData>
  </ClinicalData>
"""


def odm(tmp_path: Path, body: str = INF, study: str = "IM83", file_type: str = "Snapshot") -> Path:
    folder = tmp_path / "export"
    folder.mkdir(exist_ok=True)
    (folder / "odm.xml").write_text(HEAD.format(type=file_type) + body.format(study=study) + "</ODM>\n", encoding="utf-8")
    return folder


def read(folder: Path, form_id: str = "inf"):
    return ExportSource(folder, IM83).read_form(form(form_id))


def test_a_real_openclinica_export_loads_what_maps():
    require(SHARED_ODM.is_file(), f"{SHARED_ODM} is absent (shared test data, see ../shared/data/README.md)")
    settings = IngestSettings(
        study_id="OPTIMAL", subjid_pattern="^[0-9]{3}$", forms=("dm", "enrol", "ae"),
        codelists=ResolvedCodelists({"@study_id": ["OPTIMAL"], "@sites": ["01", "02"], "@dose_levels": ["ARM A"]}),
    )
    source = OdmSource([SHARED_ODM], load_odm_mapping(ROOT / "tests" / "fixtures" / "odm" / "optimal_odm.yaml"), settings)
    con = duckdb.connect()
    for f in ("dm", "enrol", "ae"):
        load_records(con, form(f), source.read_form(form(f)), "OC", settings)
    assert con.execute("SELECT _line, SUBJID, SITEID, AGE, SEX FROM raw.dm ORDER BY _line").fetchall() == [
        (5655, "189", "01", "55", "F"), (6517, "100", "02", "72", "F"),
    ]
    assert con.execute("SELECT SUBJID, RFICDAT FROM raw.enrol ORDER BY SUBJID").fetchall() == [("100", "2015-12-17"), ("189", "2016-06-08")]
    # Acute toxicity with its CTCAE term decoded from the CodeList and its grade: one AE per repeating group.
    assert con.execute("SELECT _line, SUBJID, AESPID, AETERM, AESTDAT, AEENDAT, AETOXGR, AEOUT FROM raw.ae ORDER BY _line").fetchall() == [
        (6213, "189", "1", "Dermatitis radiation", "2016-09-14", "2017-03-08", "2", "RECOVERED/RESOLVED"),
        (7102, "100", "1", "Dermatitis radiation", "2016-01-22", "2016-04-13", "2", "RECOVERED/RESOLVED"),
    ]
    assert con.execute("SELECT _file FROM raw.ae LIMIT 1").fetchone() == (SHARED_ODM.name,)
    # What the study did not collect is quarantined with the reason, not invented.
    assert con.execute("SELECT DISTINCT form, \"column\", rule FROM raw.quarantine ORDER BY ALL").fetchall() == [
        ("ae", "AEDLT", "REQUIRED"), ("ae", "AESER", "REQUIRED"),
        ("dm", "COUNTRY", "REQUIRED"), ("dm", "ETHNIC", "REQUIRED"), ("dm", "RACE", "REQUIRED"),
        ("enrol", "ENRLYN", "REQUIRED"),
    ]
    # The OpenClinica audit trail (EDC user names) is never read.
    dump = str(con.execute("SELECT * FROM raw.ae").fetchall()) + str(con.execute("SELECT * FROM raw.dm").fetchall())
    assert "USR_" not in dump


def test_records_items_and_nulls(tmp_path):
    recs = read(odm(tmp_path))
    assert recs.format == "odm" and recs.file == "odm.xml" and recs.encoding == "utf-8"
    assert recs.frame.select("_line", "SUBJID", "EXSTDAT", "DOSELVL", "EXDOSE").rows() == [
        (8, "01-001", "2025-03-01", "DL1", "500000000"), (20, "01-002", "2025-04-01", "DL2", None),
    ]
    # An item the mapping does not name is never read.
    assert "13812345678" not in str(recs.frame.rows())


def test_another_study_is_blocking(tmp_path):
    con = duckdb.connect()
    with pytest.raises(ExportFileError, match=r"odm.xml: line 8: column STUDYID: every record belongs to study 'IM99'"):
        load_records(con, form("inf"), read(odm(tmp_path, study="IM99")), "E", IM83)


def test_malformed_xml_names_the_line(tmp_path):
    folder = odm(tmp_path, body=INF.replace('<ItemData ItemOID="I_INF_DOSELVL" Value="DL2"/>', '<ItemData ItemOID="I_INF_DOSELVL" Value="DL2">'))
    with pytest.raises(ExportFileError, match=r"odm.xml: line 24: not well-formed XML: .*\(rule FILE-PARSE\)"):
        read(folder)


def test_a_truncated_file_is_blocking(tmp_path):
    folder = odm(tmp_path)
    text = (folder / "odm.xml").read_text()
    (folder / "odm.xml").write_text(text[: len(text) // 2])
    with pytest.raises(ExportFileError, match=r"\(rule FILE-PARSE\)"):
        read(folder)


def test_a_transactional_file_is_refused(tmp_path):
    with pytest.raises(ExportFileError, match=r"a transactional ODM file .*export a Snapshot \(rule FILE-FORMAT\)"):
        read(odm(tmp_path, file_type="Transactional"))


def test_an_item_twice_in_one_record_is_blocking(tmp_path):
    body = INF.replace('<ItemData ItemOID="I_INF_DOSELVL" Value="DL1"/>', '<ItemData ItemOID="I_INF_DOSELVL" Value="DL1"/><ItemData ItemOID="I_INF_DOSELVL" Value="DL3"/>')
    with pytest.raises(ExportFileError, match=r"odm.xml: line 8: ItemOID I_INF_DOSELVL occurs twice in one ItemGroupData"):
        read(odm(tmp_path, body=body))


def test_records_on_one_line_are_numbered(tmp_path):
    folder = odm(tmp_path)
    (folder / "odm.xml").write_text(" ".join((folder / "odm.xml").read_text().split("\n")))
    assert read(folder).frame["_line"].to_list() == [1, 2]  # no line breaks: the record's position instead


def test_a_collected_form_missing_from_the_mapping_is_blocking(tmp_path):
    mapping = tmp_path / "m.yaml"
    mapping.write_text("study_oids: [IM83]\nforms:\n  inf:\n    form_oids: [F_INF]\n    fields: {EXDOSE: I_INF_EXDOSE}\n")
    source = OdmSource([odm(tmp_path) / "odm.xml"], load_odm_mapping(mapping), IM83)
    with pytest.raises(ExportFileError, match=r"form ae is collected by the study but not in the ODM mapping m.yaml \(rule FILE-MISSING\)"):
        source.read_form(form("ae"))
    assert source.read_form(form("inf")).frame.columns == ["_line", "SUBJID", "EXDOSE", "_studyid"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("forms: {}\n", "study_oids: the ClinicalData StudyOIDs of this study"),
        ("study_oids: [X]\nforms: {xx: {form_oids: [F], fields: {}}}\n", "forms: unknown form(s) ['xx']"),
        ("study_oids: [X]\nforms: {inf: {form_oids: [F], fields: {DOSE: I}}}\n", "forms.inf.fields: field(s) ['DOSE'] are not in the inf contract"),
        ("study_oids: [X]\nforms: {inf: {form_oids: [F], fields: {EXDOSE: {item: I}}}}\n", "forms.inf.fields.EXDOSE: unknown key(s) ['item']"),
        ("study_oids: [X]\nforms: {inf: {form_oids: [F], fields: {EXDOSE: '@Visit'}}}\n", "forms.inf.fields.EXDOSE: unknown attribute @Visit"),
        ("study_oids: [X]\nsubject: '@Patient'\nforms: {}\n", "subject: unknown attribute @Patient"),
    ],
)
def test_mapping_errors_name_the_file_and_key(tmp_path, text, message):
    path = tmp_path / "m.yaml"
    path.write_text(text)
    with pytest.raises(MappingError) as err:
        load_odm_mapping(path)
    assert str(err.value).startswith(str(path)) and message in str(err.value)


def test_an_odm_export_without_a_mapping_is_blocking(tmp_path):
    settings = IngestSettings(**{**IM83.__dict__, "odm_mapping": None})
    with pytest.raises(ExportFileError, match=r"the export is CDISC ODM but the study has no ODM mapping"):
        ExportSource(odm(tmp_path), settings).read_form(form("inf"))


def test_an_unreadable_odm_file_is_one_problem_of_the_export(tmp_path, monkeypatch):
    """ExportSource.open parses the one ODM file before any form is read: a broken file is reported
    once for the export, not once per form."""
    import clinical.odm

    calls = []
    real = clinical.odm.parse_odm
    monkeypatch.setattr(clinical.odm, "parse_odm", lambda path: calls.append(path) or real(path))
    source = ExportSource(odm(tmp_path), IM83)
    source.open()
    source.read_form(form("inf"))
    assert len(calls) == 1
    (tmp_path / "b").mkdir()
    broken = odm(tmp_path / "b", body=INF.replace("</ItemGroupData>", "", 1))
    with pytest.raises(ExportFileError, match=r"\(rule FILE-PARSE\)"):
        ExportSource(broken, IM83).open()
