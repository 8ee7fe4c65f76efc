"""One source for every figure: the three main tables read the same in the analysis data, the DSMB
PDF, the sponsor workbook and both registry files (on the simulated demo run through Dagster)."""

import json
import re

import duckdb
import openpyxl
import pytest
from lxml import etree
from pypdf import PdfReader

from deliverables.tables import layout_dose_escalation, layout_participant_flow, layout_teae_overview, load_report_tables

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
