"""Changes since the previous data cut (deliverables.changes): known answers on hand-built analysis
databases, the first report, hostile text, and end to end: two data cuts of the simulated trial run
through the pipeline give exactly the changes the simulator made between them.

``expected_changes(truth_prev, truth_cur, cfg)`` computes the expected :class:`CutChanges` from the
simulator's two truth dicts only (never from analysis data); the DSMB rendering test can reuse it
(``from tests.test_changes import expected_changes, E2E_CUTS``) or the ``two_cuts`` fixture.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pytest

from clinical.escalation import parse_outcomes, recommend
from clinical.study import StudyConfig
from deliverables.changes import (
    CATEGORY_KEYS,
    FIRST_REPORT_NOTE,
    ChangeRow,
    CutChanges,
    EscalationChange,
    EscalationState,
    compare_cuts,
    compare_with_previous_dir,
    layout_changes,
    row_sort_key,
)

ROOT = Path(__file__).resolve().parent.parent
STUDY = ROOT / "studies" / "im83.yaml"
D = dt.date

# The two cuts of the end-to-end test (seed 83). Between them the simulator screens 01-015..01-020,
# enrols 01-015, 01-018, 01-019, 01-020, infuses 01-014, 01-015, 01-019, 01-020, records one DLT
# (01-019 AE 2), one SAE (01-012 AE 9), two deaths (01-010, 01-011), 13 grade >= 3 TEAEs and six
# end-of-study statuses, and the escalation moves from "continue at DL2" to "continue at DL3".
# The simulator records every AE once at its final grade: there is no grade change to find.
E2E_SEED = 83
E2E_CUTS = ("2025-05-31", "2025-12-31")


# --------------------------------------------------------------------------------------------------
# Expected changes from the simulator's truth


def _date(s: str | None) -> dt.date | None:
    return None if s is None else dt.date.fromisoformat(s)


def _truth_decision(truth: dict[str, Any], cfg: StudyConfig) -> EscalationState:
    """The 3+3 decision on the complete DLT data at the cut (the truth's notation)."""
    ids = cfg.dose_ids
    d = recommend(parse_outcomes(truth["escalation"]), len(ids), variant=cfg.escalation.variant,
                  require_six_at_mtd=cfg.escalation.require_six_at_mtd, strict=False)
    return EscalationState(
        outcomes=truth["escalation"],
        next_dose=ids[d.next_dose - 1] if d.next_dose else None,
        continue_trial=d.continue_trial,
        mtd=ids[d.mtd - 1] if d.mtd else None,
        determined=True,
    )


def _totals(truth: dict[str, Any]) -> dict[str, int]:
    parts = truth["participants"]
    aes = [a for p in parts for a in p["adverse_events"]]
    return {
        "screened": len(parts),
        "enrolled": sum(p["enrolled"] for p in parts),
        "infused": sum(p["infused"] for p in parts),
        "dlts": sum(a["dlt"] for a in aes),
        "saes": sum(a["serious"] for a in aes),
        "deaths": sum(p["died"] for p in parts),
        "teae_grade3": sum(a["treatment_emergent"] and a["grade"] >= 3 for a in aes),
        "disposition": sum(p["disposition"] is not None for p in parts),
    }


def expected_changes(truth_prev: dict[str, Any] | None, truth_cur: dict[str, Any], cfg: StudyConfig) -> CutChanges:
    """The changes between two data cuts of one simulated trial, from the two truth dicts alone.

    truth_prev None: the first report. The simulator never records a worsening (each AE is one row
    at its final grade), so a grade change can only be the same AE graded differently."""
    cur_cut = dt.date.fromisoformat(truth_cur["data_cut"])
    if truth_prev is None:
        return CutChanges(current_cut=cur_cut, previous_cut=None, first_report=True,
                          escalation=EscalationChange(None, _truth_decision(truth_cur, cfg)),
                          totals={k: (None, v) for k, v in _totals(truth_cur).items()})
    prev = {p["SUBJID"]: p for p in truth_prev["participants"]}
    cur = {p["SUBJID"]: p for p in truth_cur["participants"]}
    prev_ae = {(p["SUBJID"], a["AESPID"]): a for p in prev.values() for a in p["adverse_events"]}
    out: dict[str, list[ChangeRow]] = {k: [] for k in CATEGORY_KEYS}

    for s, p in cur.items():
        q = prev.get(s)
        dose = p["dose_level"]
        if q is None:
            # consent date: from the enrolment form, entered once screening is decided
            consent = p["consent_date"] if p["screen_failure"] is not None else None
            out["screened"].append(ChangeRow(s, dose, _date(consent)))
        if p["enrolled"] and not (q and q["enrolled"]):
            out["enrolled"].append(ChangeRow(s, dose, _date(p["enrolment_date"])))
        if p["infused"] and not (q and q["infused"]):
            out["infused"].append(ChangeRow(s, dose, _date(p["infusion_date"])))
        if p["died"] and not (q and q["died"]):
            out["deaths"].append(ChangeRow(s, dose, _date(p["death_date"]), DETAIL=p["death_cause"]))
        before = q["disposition"] if q else None
        if p["disposition"] != before:
            out["disposition"].append(ChangeRow(s, dose, _date(p["disposition_date"]), PREVIOUS=before,
                                                CURRENT=p["disposition"]))
        for a in p["adverse_events"]:
            b = prev_ae.get((s, a["AESPID"]))

            def ae_row(previous: str | None = None, current: str | None = None, detail: str | None = None,
                       a: dict[str, Any] = a, s: str = s, dose: str | None = dose) -> ChangeRow:
                return ChangeRow(s, dose, _date(a["start"]), a["AESPID"], a["term"], a["decod"], a["grade"],
                                 previous, current, detail)

            if a["dlt"] and not (b and b["dlt"]):
                out["dlts"].append(ae_row("not a DLT" if b else None))
            if a["serious"] and not (b and b["serious"]):
                out["saes"].append(ae_row("not serious" if b else None))
            g3 = a["treatment_emergent"] and a["grade"] >= 3
            if g3 and not (b and b["treatment_emergent"] and b["grade"] >= 3):
                was = None if b is None else f"grade {b['grade']}" + ("" if b["treatment_emergent"] else ", not treatment-emergent")
                out["teae_grade3"].append(ae_row(was))
            if b is not None and b["grade"] != a["grade"]:
                how = "grade increased" if a["grade"] > b["grade"] else "grade decreased"
                out["grade_changes"].append(ae_row(str(b["grade"]), str(a["grade"]), how))
    # A later cut extends an earlier one; nothing the previous cut had may disappear.
    for s, q in prev.items():
        if s not in cur:
            out["removed"].append(ChangeRow(s, q["dose_level"], None, PREVIOUS="screened",
                                            DETAIL="participant no longer in the data"))
    for (s, n), b in prev_ae.items():
        if s in cur and all(a["AESPID"] != n for a in cur[s]["adverse_events"]):
            out["removed"].append(ChangeRow(s, cur[s]["dose_level"], _date(b["start"]), n, b["term"], b["decod"],
                                            b["grade"], "reported", None, "adverse event no longer in the data"))
    prev_totals, cur_totals = _totals(truth_prev), _totals(truth_cur)
    return CutChanges(
        current_cut=cur_cut,
        previous_cut=dt.date.fromisoformat(truth_prev["data_cut"]),
        first_report=False,
        **{k: sorted(v, key=row_sort_key) for k, v in out.items()},
        escalation=EscalationChange(_truth_decision(truth_prev, cfg), _truth_decision(truth_cur, cfg)),
        totals={k: (prev_totals[k], v) for k, v in cur_totals.items()},
    )


# --------------------------------------------------------------------------------------------------
# Hand-built analysis databases

ADSL_DDL = """CREATE TABLE analysis.adsl (STUDYID VARCHAR, SUBJID VARCHAR, RFICDT DATE, ENRLDT DATE, ENRLFL VARCHAR,
    DOSEP VARCHAR, TRTSDT DATE, SAFFL VARCHAR, DOSEA VARCHAR, DTHDT DATE, DTHCAUS VARCHAR, EOSSTT VARCHAR, EOSDT DATE)"""
ADAE_DDL = """CREATE TABLE analysis.adae (STUDYID VARCHAR, SUBJID VARCHAR, AESPID BIGINT, AETERM VARCHAR,
    AEDECOD VARCHAR, ASTDT DATE, AENDT DATE, ATOXGR BIGINT, AESER VARCHAR, TRTEMFL VARCHAR, DLTFL VARCHAR)"""
DECISION_DDL = """CREATE TABLE analysis.escalation_decision (VARIANT VARCHAR, OUTCOMES VARCHAR, NEXT_DOSE VARCHAR,
    CONTINUE_TRIAL BOOLEAN, MTD VARCHAR, MATURE BOOLEAN, REASON VARCHAR, DETERMINED BOOLEAN)"""


CONSENT = dt.date(2024, 1, 2)


@dataclass
class P:
    """A participant row of analysis.adsl (the columns compare_cuts reads)."""

    SUBJID: str
    RFICDT: dt.date | None = CONSENT
    ENRLDT: dt.date | None = None
    DOSEP: str | None = None
    TRTSDT: dt.date | None = None
    DTHDT: dt.date | None = None
    DTHCAUS: str | None = None
    EOSSTT: str | None = None
    EOSDT: dt.date | None = None
    STUDYID: str = "IM83"

    def row(self) -> tuple:
        enrolled = self.DOSEP is not None
        infused = self.TRTSDT is not None
        return (self.STUDYID, self.SUBJID, self.RFICDT, self.ENRLDT, "Y" if enrolled else "N", self.DOSEP,
                self.TRTSDT, "Y" if infused else "N", self.DOSEP if infused else None, self.DTHDT, self.DTHCAUS,
                self.EOSSTT, self.EOSDT)


@dataclass
class A:
    """An AE row of analysis.adae."""

    SUBJID: str
    AESPID: int
    AETERM: str
    ASTDT: dt.date
    ATOXGR: int
    AENDT: dt.date | None = None
    AESER: str = "N"
    TRTEMFL: str | None = "Y"
    DLTFL: str = "N"
    AEDECOD: str | None = None

    def row(self) -> tuple:
        return ("IM83", self.SUBJID, self.AESPID, self.AETERM, self.AEDECOD or self.AETERM, self.ASTDT, self.AENDT,
                self.ATOXGR, self.AESER, self.TRTEMFL, self.DLTFL)


def make_db(path: Path | None, participants: list[P], aes: list[A], decision: tuple | None = None,
            ) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(str(path) if path else ":memory:")
    con.execute("CREATE SCHEMA analysis")
    con.execute(ADSL_DDL)
    con.execute(ADAE_DDL)
    con.executemany("INSERT INTO analysis.adsl VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [p.row() for p in participants])
    if aes:
        con.executemany("INSERT INTO analysis.adae VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [a.row() for a in aes])
    if decision is not None:
        con.execute(DECISION_DDL)
        con.execute("INSERT INTO analysis.escalation_decision VALUES (?, ?, ?, ?, ?, ?, ?, ?)", list(decision))
    return con


CONTINUE_DL1 = ("escalation-only", "", "DL1", True, None, False, "start", True)
CONTINUE_DL2 = ("escalation-only", "1NNN", "DL2", True, None, True, "escalate", True)

# The previous cut: 001 infused at DL1 with two AEs; 002 enrolled; 003 in screening; 004 infused.
PREV_PEOPLE = [
    P("01-001", ENRLDT=D(2024, 1, 10), DOSEP="DL1", TRTSDT=D(2024, 2, 1)),
    P("01-002", ENRLDT=D(2024, 1, 20), DOSEP="DL1"),
    P("01-003", RFICDT=None),
    P("01-004", ENRLDT=D(2024, 1, 11), DOSEP="DL1", TRTSDT=D(2024, 2, 3), DTHDT=D(2024, 2, 20),
      DTHCAUS="Sepsis", EOSSTT="DEATH", EOSDT=D(2024, 2, 20)),
    P("01-009", ENRLDT=D(2024, 1, 12), DOSEP="DL1"),
]
PREV_AES = [
    A("01-001", 1, "Fever", D(2024, 2, 2), 2, AENDT=None, AEDECOD="Pyrexia"),
    A("01-001", 2, "Neutropenia", D(2024, 2, 5), 4, AENDT=D(2024, 2, 12), DLTFL="Y", AESER="Y",
      AEDECOD="Neutrophil count decreased"),
    A("01-001", 3, "Rash", D(2024, 2, 6), 3, AENDT=D(2024, 2, 9)),
    A("01-004", 1, "Sepsis", D(2024, 2, 15), 5, AESER="Y", AENDT=D(2024, 2, 20)),
    A("01-009", 1, "Pain", D(2024, 1, 15), 1, TRTEMFL=None, AENDT=D(2024, 1, 20)),
]
# The current cut.
CUR_PEOPLE = [
    P("01-001", ENRLDT=D(2024, 1, 10), DOSEP="DL1", TRTSDT=D(2024, 2, 1), EOSSTT="WITHDRAWAL BY SUBJECT",
      EOSDT=D(2024, 3, 20)),
    P("01-002", ENRLDT=D(2024, 1, 20), DOSEP="DL1", TRTSDT=D(2024, 3, 1), DTHDT=D(2024, 3, 25),
      DTHCAUS="Disease progression", EOSSTT="DEATH", EOSDT=D(2024, 3, 25)),
    P("01-003", RFICDT=D(2024, 1, 30), EOSSTT="SCREEN FAILURE", EOSDT=D(2024, 2, 4)),
    P("01-004", ENRLDT=D(2024, 1, 11), DOSEP="DL1", TRTSDT=D(2024, 2, 3), DTHDT=D(2024, 2, 20),
      DTHCAUS="Sepsis", EOSSTT="DEATH", EOSDT=D(2024, 2, 20)),
    P("01-005", RFICDT=D(2024, 3, 2), ENRLDT=D(2024, 3, 9), DOSEP="DL2"),
    P("01-006", RFICDT=None),
]
CUR_AES = [
    # the fever went on (ended 2024-03-03) and worsened from 2024-03-04: CDASH, a new row
    A("01-001", 1, "Fever", D(2024, 2, 2), 2, AENDT=D(2024, 3, 3), AEDECOD="Pyrexia"),
    # the neutropenia is no longer a DLT nor serious after adjudication (a correction)
    A("01-001", 2, "Neutropenia", D(2024, 2, 5), 4, AENDT=D(2024, 2, 12), AEDECOD="Neutrophil count decreased"),
    # the rash was regraded down, 3 -> 2
    A("01-001", 3, "Rash", D(2024, 2, 6), 2, AENDT=D(2024, 2, 9)),
    A("01-001", 4, "Fever", D(2024, 3, 4), 3, AESER="Y", AEDECOD="Pyrexia"),
    A("01-002", 1, "Cytokine release syndrome", D(2024, 3, 3), 3, AESER="Y", DLTFL="Y"),
    A("01-002", 2, "Nausea", D(2024, 2, 25), 3, TRTEMFL=None, AENDT=D(2024, 2, 27)),
    A("01-004", 1, "Sepsis", D(2024, 2, 15), 5, AESER="Y", AENDT=D(2024, 2, 20)),
    # 01-009's pain record was deleted, and 01-009 too
]


def _pair():
    prev = make_db(None, PREV_PEOPLE, PREV_AES, CONTINUE_DL1)
    cur = make_db(None, CUR_PEOPLE, CUR_AES, CONTINUE_DL2)
    return prev, cur


def test_known_answer_per_category():
    prev, cur = _pair()
    ch = compare_cuts(prev, cur, D(2024, 2, 29), D(2024, 3, 31))
    assert not ch.first_report and ch.note == ""
    assert ch.previous_cut == D(2024, 2, 29) and ch.current_cut == D(2024, 3, 31)
    assert ch.screened == [ChangeRow("01-005", "DL2", D(2024, 3, 2)), ChangeRow("01-006", None, None)]
    assert ch.enrolled == [ChangeRow("01-005", "DL2", D(2024, 3, 9))]
    assert ch.infused == [ChangeRow("01-002", "DL1", D(2024, 3, 1))]
    crs = ("01-002", "DL1", D(2024, 3, 3), 1, "Cytokine release syndrome", "Cytokine release syndrome", 3)
    assert ch.dlts == [ChangeRow(*crs)]
    fever4 = ("01-001", "DL1", D(2024, 3, 4), 4, "Fever", "Pyrexia", 3)
    assert ch.saes == [ChangeRow(*crs), ChangeRow(*fever4)]
    assert ch.deaths == [ChangeRow("01-002", "DL1", D(2024, 3, 25), DETAIL="Disease progression")]
    assert ch.grade_changes == [
        ChangeRow("01-001", "DL1", D(2024, 2, 6), 3, "Rash", "Rash", 2, "3", "2", "grade decreased"),
        ChangeRow(*fever4, "2", "3", "worsening recorded as a new row (continues AE 1)"),
    ]
    # new grade >= 3 TEAEs: the CRS and the fever's worsening; not the nausea (before infusion)
    assert ch.teae_grade3 == [ChangeRow(*crs), ChangeRow(*fever4)]
    assert ch.disposition == [
        ChangeRow("01-003", None, D(2024, 2, 4), PREVIOUS=None, CURRENT="SCREEN FAILURE"),
        ChangeRow("01-001", "DL1", D(2024, 3, 20), PREVIOUS=None, CURRENT="WITHDRAWAL BY SUBJECT"),
        ChangeRow("01-002", "DL1", D(2024, 3, 25), PREVIOUS=None, CURRENT="DEATH"),
    ]
    neut = ("01-001", "DL1", D(2024, 2, 5), 2, "Neutropenia", "Neutrophil count decreased", 4)
    assert ch.removed == [
        ChangeRow("01-009", "DL1", D(2024, 1, 2), PREVIOUS="screened", DETAIL="participant no longer in the data"),
        ChangeRow("01-009", "DL1", D(2024, 1, 15), 1, "Pain", "Pain", 1, "reported", None,
                  "adverse event no longer in the data"),
        ChangeRow(*neut, "DLT", "not a DLT", "DLT withdrawn"),
        ChangeRow(*neut, "serious", "not serious", "seriousness withdrawn"),
    ]
    assert ch.escalation.changed
    assert ch.escalation.previous == EscalationState("", "DL1", True, None, True)
    assert ch.escalation.current == EscalationState("1NNN", "DL2", True, None, True)
    assert ch.counts == {"screened": 2, "enrolled": 1, "infused": 1, "dlts": 1, "saes": 2, "deaths": 1,
                         "grade_changes": 2, "teae_grade3": 2, "disposition": 3, "removed": 4, "escalation": 1}
    assert ch.totals == {"screened": (5, 6), "enrolled": (4, 4), "infused": (2, 3), "dlts": (1, 1),
                         "saes": (2, 3), "deaths": (1, 2), "teae_grade3": (3, 4), "disposition": (1, 4)}


def test_equal_cuts_have_no_changes():
    _, cur = _pair()
    ch = compare_cuts(cur, cur, None, D(2024, 3, 31))
    assert not ch.any_change
    assert all(before == now for before, now in ch.totals.values())


def test_layout_lists_every_change_and_the_totals():
    prev, cur = _pair()
    ch = compare_cuts(prev, cur, D(2024, 2, 29), D(2024, 3, 31))
    labels = {"DL1": "DL1 5x10^8 cells", "DL2": "DL2 1x10^9 cells"}
    summary, listing = layout_changes(ch, lambda d: labels.get(d, d or ""))
    assert summary.id == "changes_summary" and listing.id == "changes_listing" and listing.kind == "listing"
    assert summary.columns[-2:] == ["At 2024-02-29", "At 2024-03-31"]
    by_cat = {r[0]: r for r in summary.rows}
    assert by_cat["New participants screened"][1:] == [2, "Participants screened", 5, 6]
    assert by_cat["Adverse-event grade changes"][1:] == [2, "", None, None]
    assert by_cat["Escalation decision changed"][1:] == [1, "Next step", "Continue at DL1 5x10^8 cells",
                                                          "Continue at DL2 1x10^9 cells"]
    assert len(listing.rows) == sum(ch.counts.values())
    assert listing.rows[-1][0] == "Escalation decision changed"
    assert ["New deaths", "01-002", "DL1 5x10^8 cells", "2024-03-25"] == listing.rows[
        [r[0] for r in listing.rows].index("New deaths")][:4]
    assert all(len(t.sheet) <= 31 for t in (summary, listing))


def test_first_report_lists_nothing_as_new():
    _, cur = _pair()
    ch = compare_cuts(None, cur, None, D(2024, 3, 31))
    assert ch.first_report and ch.previous_cut is None
    assert ch.note == FIRST_REPORT_NOTE and ch.note.startswith("First report: no previous data cut")
    assert not ch.any_change and all(ch.rows(k) == [] for k in CATEGORY_KEYS)
    assert ch.escalation.previous is None and ch.escalation.current.next_dose == "DL2"
    assert ch.totals["screened"] == (None, 6)
    summary, listing = layout_changes(ch)
    assert summary.rows == [] and listing.rows == []
    assert summary.empty_text == listing.empty_text == FIRST_REPORT_NOTE
    assert summary.title == "Changes since the previous data cut"
    assert compare_with_previous_dir(None, cur, D(2024, 3, 31)) == ch


def test_bad_arguments():
    prev, cur = _pair()
    with pytest.raises(ValueError, match="not before"):
        compare_cuts(prev, cur, D(2024, 3, 31), D(2024, 3, 31))
    with pytest.raises(ValueError, match="without"):
        compare_cuts(None, cur, D(2024, 2, 29), D(2024, 3, 31))
    other = make_db(None, [P("01-001", STUDYID="OTHER")], [])
    with pytest.raises(ValueError, match="different studies"):
        compare_cuts(other, cur, None, D(2024, 3, 31))
    empty = duckdb.connect()
    from deliverables.changes import MissingCutData

    with pytest.raises(MissingCutData, match="previous cut's database has no analysis.adsl"):
        compare_cuts(empty, cur, None, D(2024, 3, 31))


def test_an_older_previous_database_without_some_columns_and_tables():
    """A previous cut produced before DLTFL and the escalation decision existed: still compared."""
    prev, cur = _pair()
    prev.execute("ALTER TABLE analysis.adae DROP COLUMN DLTFL")
    prev.execute("DROP TABLE analysis.escalation_decision")
    ch = compare_cuts(prev, cur, D(2024, 2, 29), D(2024, 3, 31))
    assert [r.SUBJID for r in ch.dlts] == ["01-002"]  # nothing was a DLT before
    assert ch.escalation.previous is None and not ch.escalation.changed
    assert layout_changes(ch)[0].rows[-1][3] == "not available"


HOSTILE = [
    "Robert'); DROP TABLE analysis.adae;--",
    '<script>alert("x")</script> & </td></tr>',
    "{{ 7*7 }} {% raw %}",
    "line\nbreak\ttab \u202eRTL \u4e2d\u6587 \x00nul",
]


def test_hostile_text_and_paths(tmp_path):
    """Free text and ids with quotes, SQL, HTML, Jinja and control characters come through unchanged
    in the rows and escaped in the HTML; a previous database under a folder name with quotes opens."""
    root = tmp_path / "out 'quoted\" dir; DROP" / "IM83"
    (root / "2024-02-29").mkdir(parents=True)
    sid = "01-'9\""
    prev = make_db(root / "2024-02-29" / "trial.duckdb",
                   [P(sid, ENRLDT=D(2024, 1, 3), DOSEP="DL1", TRTSDT=D(2024, 1, 20))],
                   [A(sid, 1, HOSTILE[0], D(2024, 1, 21), 1, AEDECOD=HOSTILE[1])], CONTINUE_DL1)
    prev.close()
    cur = make_db(None, [P(sid, ENRLDT=D(2024, 1, 3), DOSEP="DL1", TRTSDT=D(2024, 1, 20), DTHDT=D(2024, 3, 1),
                           DTHCAUS=HOSTILE[3], EOSSTT=HOSTILE[2], EOSDT=D(2024, 3, 1))],
                  [A(sid, 1, HOSTILE[0], D(2024, 1, 21), 3, AEDECOD=HOSTILE[1], AESER="Y"),
                   A(sid, 2, HOSTILE[2], D(2024, 2, 1), 4, DLTFL="Y", AEDECOD=HOSTILE[1])], CONTINUE_DL2)
    ch = compare_with_previous_dir(root / "2024-02-29", cur, D(2024, 3, 31))
    assert ch.previous_cut == D(2024, 2, 29)
    assert ch.deaths == [ChangeRow(sid, "DL1", D(2024, 3, 1), DETAIL=HOSTILE[3])]
    assert ch.disposition[0].CURRENT == HOSTILE[2]
    assert [(r.AESPID, r.AETERM, r.AEDECOD) for r in ch.saes] == [(1, HOSTILE[0], HOSTILE[1])]
    assert [(r.AESPID, r.AETERM) for r in ch.dlts] == [(2, HOSTILE[2])]
    assert [(r.AESPID, r.DETAIL) for r in ch.grade_changes] == [
        (1, "grade increased"), (2, "worsening recorded as a new row (continues AE 1)")]
    # the databases are unchanged: both still hold their tables, nothing was registered on them
    assert cur.execute("SELECT count(*) FROM analysis.adae").fetchone()[0] == 2
    assert cur.execute("SELECT count(*) FROM duckdb_views() WHERE NOT internal").fetchone()[0] == 0
    again = duckdb.connect(str(root / "2024-02-29" / "trial.duckdb"), read_only=True)
    assert again.execute("SELECT AETERM FROM analysis.adae").fetchall() == [(HOSTILE[0],)]
    again.close()

    from deliverables.dsmb import _environment, report_chapters

    tables = layout_changes(ch)
    chapter = next(c for c in report_chapters([], None, tables, "Closed") if c["anchor"] == "sec-changes")
    html = _environment().from_string(
        '{% import "dsmb_macros.html.j2" as m %}{% for i in items %}{{ m.display_table(i, cut) }}{% endfor %}'
    ).render(items=chapter["items"] + chapter["landscape_items"], cut="2024-03-31")
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "&lt;/td&gt;&lt;/tr&gt;" in html
    assert "{{ 7*7 }}" in html and "49" not in html
    assert "Robert&#39;); DROP TABLE analysis.adae;--" in html


def test_section_is_numbered_in_the_report_and_a_first_report_says_so():
    from deliverables.dsmb import report_chapters

    prev, cur = _pair()
    summary, listing = layout_changes(compare_cuts(prev, cur, D(2024, 2, 29), D(2024, 3, 31)))
    chapter = report_chapters([], None, [summary, listing], "Closed")[0]
    assert chapter["anchor"] == "sec-changes" and chapter["number"] == 2
    labelled = [(i["label"], i["t"].title) for i in chapter["items"] + chapter["landscape_items"]]
    assert labelled == [("Table 1", "Changes since the previous data cut (2024-02-29)"),
                        ("Listing 1", "Listing of changes since the previous data cut (2024-02-29)")]
    first = report_chapters([], None, None, "Closed")[0]
    assert [i["kind"] for i in first["items"]] == ["note"] and "first report" in first["items"][0]["text"]


# --------------------------------------------------------------------------------------------------
# End to end: two data cuts of the simulated trial through the pipeline


@dataclass(frozen=True)
class TwoCuts:
    out: Path
    finals: tuple[Path, Path]
    truths: tuple[dict[str, Any], dict[str, Any]]


@pytest.fixture(scope="module")
def two_cuts(tmp_path_factory, cfg) -> TwoCuts:
    """Seed 83 simulated at both E2E_CUTS and run through the whole job into one output root."""
    from clinical.simulate import simulate, write_export, write_truth
    from pipelines.run import run_export

    base = tmp_path_factory.mktemp("changes")
    truths = []
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("DAGSTER_HOME", raising=False)
        for cut in E2E_CUTS:
            trial = simulate(cfg, seed=E2E_SEED, data_cut=dt.date.fromisoformat(cut))
            write_export(trial, base / f"export-{cut}")
            write_truth(trial, base / f"truth-{cut}.json")
            rc = run_export(str(STUDY), str(base / f"export-{cut}"), str(base / "out"), cut)
            assert rc == 0, f"pipeline run of the {cut} cut failed"
            truths.append(json.loads((base / f"truth-{cut}.json").read_text(encoding="utf-8")))
    finals = tuple(base / "out" / cfg.study.id / cut for cut in E2E_CUTS)
    return TwoCuts(out=base / "out", finals=finals, truths=tuple(truths))


def test_later_cut_lists_exactly_the_changes_the_simulator_made(two_cuts, cfg):
    first, second = two_cuts.finals
    cur = duckdb.connect(str(second / "trial.duckdb"), read_only=True)
    try:
        got = compare_with_previous_dir(first, cur, dt.date.fromisoformat(E2E_CUTS[1]))
    finally:
        cur.close()
    want = expected_changes(*two_cuts.truths, cfg)
    for key in CATEGORY_KEYS:
        assert got.rows(key) == want.rows(key), key
    assert got.escalation == want.escalation
    assert got.totals == want.totals
    assert got == want
    # the cuts were chosen so that every kind of change the simulator makes occurs
    for key in ("screened", "enrolled", "infused", "dlts", "saes", "deaths", "teae_grade3", "disposition"):
        assert got.rows(key), f"no {key} change between {E2E_CUTS}: choose other cuts"
    assert got.escalation.changed
    assert got.grade_changes == [] and got.removed == []  # the simulator neither regrades nor deletes
    assert {r.SUBJID for r in got.dlts} == {"01-019"} and {r.SUBJID for r in got.saes} == {"01-012"}
    assert {r.SUBJID for r in got.deaths} == {"01-010", "01-011"}


def test_later_cut_dsmb_report_and_workbook_list_the_changes(two_cuts, cfg):
    """What the DSMB reads: the later cut's PDF and the sponsor workbook list every expected change."""
    import re

    import openpyxl
    from pypdf import PdfReader

    first, second = two_cuts.finals
    want = expected_changes(*two_cuts.truths, cfg)
    pdf = re.sub(r"\s+", " ", " ".join(p.extract_text() or "" for p in PdfReader(str(second / "dsmb_report.pdf")).pages))
    assert f"Changes since the previous data cut ({E2E_CUTS[0]})" in pdf
    assert f"Compared with the data cut-off of {E2E_CUTS[0]}" in pdf
    wb = openpyxl.load_workbook(second / "sponsor_workbook.xlsx", read_only=True)
    listing = [r for r in wb["Changes listing"].iter_rows(values_only=True)]
    for key in ("screened", "enrolled", "infused", "dlts", "saes", "deaths"):
        for row in want.rows(key):
            assert row.SUBJID in pdf, (key, row)
            assert any(row.SUBJID in [str(v) for v in r if v is not None] for r in listing), (key, row)
    summary = {r[0]: r[1] for r in wb["Changes summary"].iter_rows(values_only=True) if len(r) > 1 and r[0]}
    for label, key in (("New dose-limiting toxicities", "dlts"), ("New deaths", "deaths"),
                       ("New serious adverse events", "saes"), ("New participants infused", "infused")):
        assert summary[label] == want.counts[key] == len(want.rows(key)), label
    # The first cut is a first report: its DSMB report says so and lists nothing as new.
    first_pdf = " ".join(p.extract_text() or "" for p in PdfReader(str(first / "dsmb_report.pdf")).pages)
    assert "this is the first report" in re.sub(r"\s+", " ", first_pdf)


def test_first_cut_is_a_first_report(two_cuts, cfg):
    first, _ = two_cuts.finals
    con = duckdb.connect(str(first / "trial.duckdb"), read_only=True)
    try:
        got = compare_cuts(None, con, None, dt.date.fromisoformat(E2E_CUTS[0]))
    finally:
        con.close()
    assert got == expected_changes(None, two_cuts.truths[0], cfg)
    assert got.first_report and not any(got.rows(k) for k in CATEGORY_KEYS)


def test_summary_asks_the_dsmb_to_review_the_changes():
    from deliverables.dsmb import _changes_ask

    prev, cur = _pair()
    ch = compare_cuts(prev, cur, D(2024, 2, 29), D(2024, 3, 31))
    ask = _changes_ask(ch)
    summary = layout_changes(ch)[0]
    for label, n in ((r[0], r[1]) for r in summary.rows if r[1] > 0):
        assert f"{label[:1].lower()}{label[1:]}: {n}" in ask
    assert _changes_ask(None) is None
    assert "nothing reportable changed" in _changes_ask(compare_cuts(cur, cur, D(2024, 2, 29), D(2024, 3, 31)))


def test_the_ask_names_the_non_zero_counts_of_the_changes():
    """The DSMB's request to review the changes names each non-zero count of the summary, in the
    summary's order, from the CutChanges the table is laid out from (deliverables.changes.summary_lines)."""
    from deliverables.changes import summary_lines
    from deliverables.dsmb import _changes_ask

    ch = CutChanges(
        current_cut=D(2024, 3, 31), previous_cut=D(2024, 2, 29), first_report=False,
        screened=[ChangeRow("01-005"), ChangeRow("01-006")],
        dlts=[ChangeRow("01-002", "DL1", D(2024, 3, 3), 1, "CRS", "Cytokine release syndrome", 3)],
        removed=[ChangeRow("01-001", DETAIL="participant no longer in the data")],
        escalation=EscalationChange(EscalationState("DL1:0/3", "DL1", True, None),
                                    EscalationState("DL1:0/3", "DL2", True, None)),
    )  # enrolled, infused, SAEs, deaths, grade changes, grade >= 3 TEAEs, disposition: none
    expected = ("Review the changes since the previous data cut (section 2): new participants screened: 2; "
                "new dose-limiting toxicities: 1; records or flags no longer in the data: 1; "
                "escalation decision changed: 1.")
    summary = layout_changes(ch)[0]
    assert _changes_ask(ch) == expected
    # The table shows the counts the sentence reads, line for line.
    assert [r[:2] for r in summary.rows] == [
        ["New participants screened", 2], ["New participants enrolled", 0], ["New participants infused", 0],
        ["New dose-limiting toxicities", 1], ["New serious adverse events", 0], ["New deaths", 0],
        ["Adverse-event grade changes", 0], ["New treatment-emergent adverse events of grade >= 3", 0],
        ["End-of-study status changes", 0], ["Records or flags no longer in the data", 1],
        ["Escalation decision changed", 1]]
    assert [line.n for line in summary_lines(ch)] == [2, 0, 0, 1, 0, 0, 0, 0, 0, 1, 1]
    nothing = CutChanges(current_cut=D(2024, 3, 31), previous_cut=D(2024, 2, 29), first_report=False)
    same = "Note that nothing reportable changed since the previous data cut (section 2)."
    assert _changes_ask(nothing) == same
    assert [line.n for line in summary_lines(nothing)] == [0] * 11

    first = CutChanges(current_cut=D(2024, 3, 31), previous_cut=None, first_report=True)
    assert summary_lines(first) == [] and layout_changes(first)[0].rows == []
    assert _changes_ask(first) is None and _changes_ask(None) is None


def test_open_session_shows_the_summary_of_changes_but_not_the_participant_listing():
    from deliverables.dsmb import report_chapters

    prev, cur = _pair()
    tables = layout_changes(compare_cuts(prev, cur, D(2024, 2, 29), D(2024, 3, 31)))
    opened = report_chapters([], None, tables, "Open")[0]
    kinds = [(i["kind"], i["t"].id if i["kind"] == "table" else "") for i in opened["items"] + opened["landscape_items"]]
    assert kinds == [("table", "changes_summary"), ("note", "")]
    closed = report_chapters([], None, tables, "Closed")[0]
    assert [i["t"].id for i in closed["items"] + closed["landscape_items"]] == ["changes_summary", "changes_listing"]


def test_a_long_listing_of_changes_is_summarised_in_the_pdf_and_complete_in_the_workbook():
    """The changes listing keeps to the PDF's page budget like every other listing."""
    from dataclasses import replace

    from deliverables.tables import PDF_LISTING_ROWS, within_budget

    prev, cur = _pair()
    summary, listing = layout_changes(compare_cuts(prev, cur, D(2024, 2, 29), D(2024, 3, 31)))
    long = replace(listing, rows=listing.rows * (PDF_LISTING_ROWS // len(listing.rows) + 1),
                   row_styles=listing.row_styles * (PDF_LISTING_ROWS // len(listing.rows) + 1))
    shown_summary, shown = within_budget([summary, long])
    assert shown_summary is summary and shown.title.endswith("(summary; complete listing in the sponsor workbook)")
    assert shown.columns[0] == "Change" and shown.rows[-1][-1] == len(long.rows)
    assert f"{len(long.rows):,} changes" in shown.intro
    assert within_budget([summary, listing]) == [summary, listing]
