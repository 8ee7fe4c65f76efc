"""The CDISC SDTM/ADaM pilot (CDISCPILOT01) through the pipeline from its SDTM, with its own study
configuration (studies/cdiscpilot01.yaml) and SDTM mapping (studies/mappings/cdiscpilot01_sdtm.yaml).

The data are CDISC's (../shared/data/cdiscpilot01, see ../shared/data/README.md): read in place,
never modified, never copied into this repository. Without them these tests are skipped.
"""

import datetime as dt
import hashlib
import json
from pathlib import Path

import duckdb
import pytest
from conftest import require

from clinical.crf import FORMS
from clinical.ingest import ingest_settings
from clinical.sources import ExportSource, ingest_form
from clinical.study import load_study

ROOT = Path(__file__).resolve().parent.parent
SDTM = ROOT.parent / "shared" / "data" / "cdiscpilot01" / "sdtm"
ADAM = ROOT.parent / "shared" / "data" / "cdiscpilot01" / "adam"
STUDY = ROOT / "studies" / "cdiscpilot01.yaml"
CUT = "2015-12-31"
ROLES = {"database", "dsmb_pdf", "dsmb_html", "sponsor_xlsx", "registry_json", "registry_xml", "registry_draft_html", "queries_xlsx"}

@pytest.fixture(autouse=True, scope="module")
def _pilot_data_present():
    require((SDTM / "dm.xpt").is_file(), f"CDISC pilot SDTM not found at {SDTM} (shared test data, see ../shared/data/README.md)")


@pytest.fixture(scope="module")
def cfg():
    return load_study(STUDY)


@pytest.fixture(scope="module")
def pilot(cfg):
    settings = ingest_settings(cfg)
    source = ExportSource(SDTM, settings)
    con = duckdb.connect()
    results = {f.id: ingest_form(con, f, source, "sdtm") for f in FORMS}
    yield con, results, source
    con.close()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_pilot_is_recognised_as_sdtm_and_every_file_described(pilot):
    _, _, source = pilot
    assert source.format == "sdtm"
    files = {f.path: f for f in source.describe()}
    assert files["dm.xpt"].sha256.startswith("7327baea97fd532d") and files["dm.xpt"].format == "sdtm-xpt"
    assert files["define.xml"].format == "define-xml"  # metadata, not clinical data
    assert files["from_pharmaversesdtm/lb.xpt"].format == "sdtm-xpt"  # archived and fingerprinted, not read


def test_pilot_forms_load_with_the_expected_counts(pilot):
    con, results, _ = pilot
    got = {f: (r.file, r.rows_received, r.rows_staged) for f, r in results.items() if r.collected}
    assert got == {
        "dm": ("dm.xpt", 306, 306),
        "enrol": ("dm.xpt", 306, 306),
        "inf": ("ex.xpt", 254, 254),
        "ae": ("ae.xpt", 1191, 1191),
        "ds": ("ds.xpt", 306, 306),
    }
    # Screen failures are not enrolled; the planned arm is the dose level.
    assert con.execute("SELECT ENRLYN, DOSELVL, count(*) FROM stage.enrol GROUP BY ALL ORDER BY ALL").fetchall() == [
        ("N", None, 52), ("Y", "Pbo", 86), ("Y", "Xan_Hi", 84), ("Y", "Xan_Lo", 84),
    ]
    # First exposure is the treatment start; the 12 high-dose participants who stopped during titration show 54 mg.
    assert con.execute("SELECT count(*) FROM stage.inf WHERE DOSELVL = 'Xan_Hi' AND EXDOSE = 54").fetchone() == (12,)
    assert con.execute("SELECT DISTINCT EXDOSE FROM stage.inf WHERE DOSELVL = 'Pbo'").fetchall() == [(0.0,)]
    # The 4 AEs without causality load (they still count in the AE tables) and become data queries
    # through rule XF-AE-NO-CAUSALITY; nothing is quarantined.
    assert con.execute("SELECT count(*) FROM raw.quarantine").fetchone() == (0,)
    assert con.execute("SELECT SUBJID, count(*) FROM stage.ae WHERE AEREL IS NULL GROUP BY ALL ORDER BY 1").fetchall() == [
        ("01-704-1135", 2), ("01-718-1254", 2),
    ]
    # Partial AE start dates are kept (15 YYYY-MM, 11 YYYY), for the derivation to impute and flag.
    assert con.execute("SELECT length(AESTDAT), count(*) FROM raw.ae WHERE length(AESTDAT) < 10 GROUP BY ALL ORDER BY 1").fetchall() == [(4, 11), (7, 15)]
    # Severity is the grade: MILD/MODERATE/SEVERE -> 1/2/3.
    assert con.execute("SELECT AETOXGR, count(*) FROM raw.ae GROUP BY ALL ORDER BY 1").fetchall() == [("1", 770), ("2", 378), ("3", 43)]


def test_forms_the_pilot_does_not_collect_are_empty_typed_tables(pilot):
    con, results, _ = pilot
    for f in ("ie", "sc", "lb", "apher", "mfg", "ld", "cm", "pc", "rs"):
        assert not results[f].collected
        assert con.execute(f"SELECT count(*) FROM stage.{f}").fetchone() == (0,)
    assert [c[:2] for c in con.execute("DESCRIBE stage.ld").fetchall()][3:] == [
        ("SUBJID", "VARCHAR"), ("EXTRT", "VARCHAR"), ("EXSTDAT", "DATE"), ("EXDOSE", "DOUBLE"), ("EXDOSU", "VARCHAR"),
    ]


def test_treatment_emergent_aes_match_the_pilot_adam(pilot, cfg):
    """TEAEs per planned arm, derived by the pipeline from SDTM alone, against the pilot's own ADaM ADAE
    (TRTEMFL) by ADSL TRT01P: the same participants, the same events per arm and per preferred term."""
    import pandas as pd  # reading the reference ADaM only

    from clinical.adae import build_adae
    from clinical.adsl import build_adsl

    con, _, _ = pilot
    build_adsl(con, cfg, dt.date.fromisoformat(CUT))
    build_adae(con, cfg)
    te_ours = con.execute(
        "SELECT DOSEP, SUBJID, AEDECOD FROM analysis.adae JOIN analysis.adsl USING (SUBJID) WHERE TRTEMFL = 'Y'"
    ).fetchall()
    adae = pd.read_sas(ADAM / "adae.xpt", format="xport", encoding="utf-8")
    adsl = pd.read_sas(ADAM / "adsl.xpt", format="xport", encoding="utf-8")
    arm = {"Placebo": "Pbo", "Xanomeline Low Dose": "Xan_Lo", "Xanomeline High Dose": "Xan_Hi"}
    te = adae[adae.TRTEMFL == "Y"].merge(adsl[["USUBJID", "TRT01P"]], on="USUBJID")
    te_theirs = [(arm[a], u, pt) for a, u, pt in zip(te.TRT01P, te.USUBJID, te.AEDECOD)]

    def subjects(rows):
        return {a: {s for x, s, _ in rows if x == a} for a in arm.values()}

    def events(rows, by_pt=False):
        out: dict = {}
        for a, _, pt in rows:
            key = (a, pt) if by_pt else a
            out[key] = out.get(key, 0) + 1
        return out

    assert {a: len(s) for a, s in subjects(te_theirs).items()} == {"Pbo": 65, "Xan_Lo": 77, "Xan_Hi": 76}  # published
    assert subjects(te_ours) == subjects(te_theirs)
    assert events(te_ours) == events(te_theirs)
    assert events(te_ours, by_pt=True) == events(te_theirs, by_pt=True)


@pytest.fixture(scope="module")
def pilot_run(tmp_path_factory):
    """The pilot's SDTM delivery run through the whole job once: (published folder, input hashes before)."""
    from pipelines.run import run_export

    out = tmp_path_factory.mktemp("pilot") / "out"
    before = {p.name: _sha(p) for p in SDTM.glob("*.xpt")}
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("DAGSTER_HOME", raising=False)
        rc = run_export(str(STUDY), str(SDTM), str(out), CUT)
    assert rc == 0
    return out / "CDISCPILOT01" / CUT, before


def test_the_pilot_runs_end_to_end_from_sdtm(pilot_run):
    final, before = pilot_run
    manifest = json.loads((final / "manifest.json").read_text())
    assert ROLES <= {o["role"] for o in manifest["outputs"]}
    inputs = {i["path"]: i["sha256"] for i in manifest["inputs"]}
    assert all(inputs[name] == sha for name, sha in before.items())
    assert {p.name: _sha(p) for p in SDTM.glob("*.xpt")} == before  # the delivery is never modified
    con = duckdb.connect(str(final / "trial.duckdb"), read_only=True)
    assert con.execute("SELECT DOSE, N FROM analysis.teae_summary WHERE ROWN = 1 ORDER BY DOSEN").fetchall() == [
        ("Pbo", 65), ("Xan_Lo", 77), ("Xan_Hi", 76), ("TOTAL", 218),
    ]


def test_the_pilot_deliverables_validate_and_agree(pilot_run):
    """Issue 6 on data nobody here wrote: the registry XML validates against the PRS schema, the JSON
    follows the CT.gov API v2 spec, the pre-check has no error, and the DSMB PDF and the sponsor
    workbook show the same rows of every table."""
    import re

    import openpyxl
    from pypdf import PdfReader

    from deliverables.registry import (
        build_results_section,
        precheck,
        results_json,
        results_xml,
        validate_against_oas,
        validate_xml,
    )
    from deliverables.tables import display_tables, load_report_tables

    registry_dir = ROOT.parent / "shared" / "registry"
    require((registry_dir / "RRSUploadSchema.xsd").is_file(), f"PRS schema and CT.gov spec not found in {registry_dir}")
    final, _ = pilot_run
    cfg = load_study(STUDY)
    con = duckdb.connect(str(final / "trial.duckdb"), read_only=True)
    try:
        rs = build_results_section(con, cfg, dt.date.fromisoformat(CUT))
        enrolled = con.execute("SELECT count(*) FROM analysis.adsl WHERE ENRLFL = 'Y'").fetchone()[0]
        tables = load_report_tables(con)
    finally:
        con.close()
    xml = (final / "registry_results.xml").read_bytes()
    assert xml == results_xml(rs, cfg)
    xml_errors = validate_xml(xml, registry_dir / "RRSUploadSchema.xsd")
    assert xml_errors == []
    study = json.loads((final / "registry_results.json").read_text())
    assert validate_against_oas(study, registry_dir / "ctg-oas-v2.yaml", "Study", check_order=True) == []
    assert study == json.loads(results_json(rs, cfg))
    assert [f for f in precheck(rs, xml_errors, cfg=cfg, actual_enrollment=enrolled) if f.severity == "ERROR"] == []

    pdf = re.sub(r"\s+", " ", " ".join(p.extract_text() or "" for p in PdfReader(str(final / "dsmb_report.pdf")).pages))
    wb = openpyxl.load_workbook(final / "sponsor_workbook.xlsx", read_only=True)
    for table in display_tables(tables):
        if table.kind != "table" or not table.rows:
            continue
        cells = [tuple(r[: len(table.columns)]) for r in wb[table.sheet].iter_rows(values_only=True)]
        for row in table.rows:
            values = " ".join(str(v) for v in row[1:] if v not in (None, ""))
            if values:
                assert values in pdf, (table.id, row)
            assert any(c and c[0] is not None and str(c[0]).strip() == str(row[0]).strip()
                       and [("" if v is None else str(v)) for v in c[1:]] == [("" if v is None else str(v)) for v in row[1:]]
                       for c in cells), (table.id, row)
