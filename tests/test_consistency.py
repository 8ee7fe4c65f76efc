"""One source for every figure: the three main tables read the same in the analysis data, the DSMB
PDF, the sponsor workbook and both registry files (on the simulated demo run through Dagster)."""

import json
import re

import duckdb
import openpyxl
import pytest
from lxml import etree
from pypdf import PdfReader

from deliverables.tables import (
    layout_dose_escalation,
    layout_participant_flow,
    layout_teae_overview,
    load_report_tables,
)

DOSES = ("DL1", "DL2", "DL3")


@pytest.fixture(scope="module")
def facts(demo_run):
    con = duckdb.connect(str(demo_run.final / "trial.duckdb"), read_only=True)
    flow = {(s, d): n for s, d, n in con.execute("SELECT STAGE, DOSE, N FROM analysis.participant_flow").fetchall()}
    esc = {d: (e, x) for d, e, x in con.execute("SELECT DOSE, EVALUABLE, DLTS FROM analysis.dose_escalation").fetchall()}
    teae = {(r, d): (n, den) for r, d, n, den in con.execute("SELECT ROWN, DOSE, N, DENOM FROM analysis.teae_summary").fetchall()}
    deaths = dict(
        con.execute(
            "SELECT DOSEA, count(*) FROM analysis.adsl WHERE SAFFL = 'Y' AND DTHDT IS NOT NULL GROUP BY ALL"
        ).fetchall()
    )
    tables = load_report_tables(con)
    con.close()
    return {"flow": flow, "esc": esc, "teae": teae, "deaths": deaths, "tables": tables}


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _row_text(row) -> str:
    return " ".join(str(v) for v in row if v not in (None, ""))


def test_pdf_and_workbook_show_the_same_rows(demo_run, facts):
    pdf = _norm("\n".join(p.extract_text() or "" for p in PdfReader(str(demo_run.final / "dsmb_report.pdf")).pages))
    wb = openpyxl.load_workbook(demo_run.final / "sponsor_workbook.xlsx", read_only=True)
    for layout, sheet in (
        (layout_participant_flow, "Participant flow"),
        (layout_dose_escalation, "Dose escalation"),
        (layout_teae_overview, "TEAE overview"),
    ):
        table = layout(facts["tables"])
        cells = [tuple(r[: len(table.columns)]) for r in wb[sheet].iter_rows(values_only=True)]
        assert tuple(table.columns) in cells, sheet
        for row, style in zip(table.rows, table.row_styles):
            if style == "note":
                continue
            assert _row_text(row) in pdf, (sheet, row)
            # The workbook holds the same values (labels may carry indentation; numbers are numbers).
            stripped = [c for c in cells if c and c[0] is not None and str(c[0]).strip() == str(row[0]).strip()]
            assert any(
                [("" if v is None else str(v)) for v in c[1:]] == [("" if v is None else str(v)) for v in row[1:]]
                for c in stripped
            ), (sheet, row)


def test_registry_json_matches_the_analysis_data(demo_run, facts):
    rs = json.loads((demo_run.final / "registry_results.json").read_text())["resultsSection"]
    flow = rs["participantFlowModule"]
    groups = [g["id"] for g in flow["groups"]]
    assert len(groups) == len(DOSES)
    ms = {m["type"]: {a["groupId"]: int(a["numSubjects"]) for a in m["achievements"]} for m in flow["periods"][0]["milestones"]}
    for gid, dose in zip(groups, DOSES):
        assert ms["STARTED"][gid] == facts["flow"][("enrolled", dose)]
        assert ms["Received IM83 CAR-T infusion"][gid] == facts["flow"][("infused", dose)]
        assert ms["COMPLETED"][gid] == facts["flow"][("completed", dose)]

    outcomes = {o["title"]: o for o in rs["outcomeMeasuresModule"]["outcomeMeasures"]}
    dlt = outcomes["Number of Participants With Dose-limiting Toxicity (DLT)"]
    denoms = {c["groupId"]: int(c["value"]) for c in dlt["denoms"][0]["counts"]}
    values = {m["groupId"]: int(m["value"]) for m in dlt["classes"][0]["categories"][0]["measurements"]}
    ogs = [g["id"] for g in dlt["groups"]]
    for gid, dose in zip(ogs, DOSES):
        evaluable, dlts = facts["esc"][dose]
        assert denoms[gid] == evaluable
        if evaluable:
            assert values[gid] == dlts

    teae = outcomes["Number of Participants With Treatment-emergent Adverse Events (TEAEs)"]
    values = {m["groupId"]: int(m["value"]) for m in teae["classes"][0]["categories"][0]["measurements"]}
    for g, dose in zip(teae["groups"], DOSES):
        if facts["teae"][(1, dose)][1]:
            assert values[g["id"]] == facts["teae"][(1, dose)][0]

    ae = rs["adverseEventsModule"]
    for g, dose in zip(ae["eventGroups"], DOSES):
        assert g["seriousNumAtRisk"] == facts["teae"][(1, dose)][1]
        assert g["seriousNumAffected"] == facts["teae"][(4, dose)][0]
        assert g["deathsNumAffected"] == facts["deaths"].get(dose, 0)


def test_registry_xml_matches_the_json(demo_run, facts):
    root = etree.fromstring((demo_run.final / "registry_results.xml").read_bytes())
    period = root.find("participantFlow/periods/period")
    assert period is not None
    started = period.find(".//{*}startedMilestone")
    got = [int(a.findtext("{*}subjectsAchieve")) for a in started.iter("{*}milestoneAchievement")]
    assert got == [facts["flow"][("enrolled", d)] for d in DOSES]
    groups = root.findall(".//{*}interventionGroup")
    assert [int(g.findtext("{*}partAtRiskSeriousEvents")) for g in groups] == [facts["teae"][(1, d)][1] for d in DOSES]


def _pdf_text(path) -> str:
    return _norm("\n".join(p.extract_text() or "" for p in PdfReader(str(path)).pages))


def test_every_clinical_table_reads_the_same_in_the_closed_pdf_and_the_workbook(demo_run, facts):
    """Baseline, exposure, TEAE by grade, CRS/ICANS, haematology, PK, response and form completeness:
    every row's values appear in the closed-session PDF and, as the same cells, in its workbook sheet."""
    from deliverables.tables import display_tables

    pdf = _pdf_text(demo_run.final / "dsmb_report.pdf")
    wb = openpyxl.load_workbook(demo_run.final / "sponsor_workbook.xlsx", read_only=True)
    ids = ("baseline", "exposure", "teae_by_grade", "crs_icans", "haematology", "pk", "response", "form_completeness")
    shown = {t.id: t for t in display_tables(facts["tables"])}
    for tid in ids:
        table = shown[tid]
        assert table.rows, tid
        cells = [tuple(r[: len(table.columns)]) for r in wb[table.sheet].iter_rows(values_only=True)]
        for row in table.rows:
            values = _row_text(row[1:])
            if values:  # a label wraps in the PDF cell; the values of the row stay together
                assert values in pdf, (tid, row)
            assert any(c and c[0] is not None and str(c[0]).strip() == str(row[0]).strip()
                       and [("" if v is None else str(v)) for v in c[1:]] == [("" if v is None else str(v)) for v in row[1:]]
                       for c in cells), (tid, row)


def test_open_session_pdf_is_pooled_and_has_no_participant_listing(demo_run, facts):
    from deliverables.tables import display_tables

    closed = _pdf_text(demo_run.final / "dsmb_report.pdf")
    opened = _pdf_text(demo_run.final / "dsmb_report_open.pdf")
    assert "OPEN SESSION" in opened and "CLOSED SESSION" in closed
    subjids = [r["SUBJID"] for r in facts["tables"].sae_listing + facts["tables"].deaths]
    assert subjids and all(s in closed for s in subjids)
    assert not any(s in opened for s in subjids)
    pooled = {t.id: t for t in display_tables(facts["tables"], "Open")}
    assert pooled["teae_overview"].columns == ["Participants with at least one", "Total (N=13)"]
    for row in pooled["teae_overview"].rows:
        assert _row_text(row) in opened, row
    # The per-dose headers of the safety tables are in the closed report only.
    assert "DL2 1x10^9 cells (N=6)" in closed
    assert "Listing of serious adverse events" in closed and "Listing of serious adverse events" not in opened


def test_baseline_reads_the_same_in_the_dsmb_report_and_the_registry(demo_run, facts):
    """Both count the enrolled participants by planned dose level."""
    from deliverables.tables import display_tables

    rs = json.loads((demo_run.final / "registry_results.json").read_text())["resultsSection"]
    base = rs["baselineCharacteristicsModule"]
    measures = {m["title"]: m for m in base["measures"]}
    sex = {c["title"]: {x["groupId"]: int(x["value"]) for x in c["measurements"]}
           for c in measures["Sex: Female, Male"]["classes"][0]["categories"]}
    gids = [g["id"] for g in base["groups"]]
    table = {t.id: t for t in display_tables(facts["tables"])}["baseline"]
    rows: dict[str, list] = {}
    group = ""
    for r, style in zip(table.rows, table.row_styles):
        group = r[0] if style == "group" else group
        rows.setdefault(r[0], r[1:])
        rows[f"{group}/{r[0]}"] = r[1:]
    for label in ("Female", "Male"):
        shown = [int(str(v).split(" ")[0]) for v in rows[label]]
        assert shown == [sex[label][g] for g in gids], label
    age = measures["Age, Continuous"]["classes"][0]["categories"][0]["measurements"]
    by_group = {m["groupId"]: float(m["value"]) for m in age}
    assert [float(v) for v in rows["Age (years)/Median"]] == [by_group[g] for g in gids]
