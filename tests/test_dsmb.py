"""DSMB report: tables from a hand-made analysis database render to HTML and PDF with the right numbers.

``make_fixture_db(path)`` builds the analysis tables of a small trial whose numbers are known by
hand (see EXPECTED_*): 9 screened, 2 screen failures, 7 enrolled (DL1 3, DL2 4, DL3 0), 6 infused,
5 DLT-evaluable, 1 DLT (DL2), 1 death (DL2, sepsis on day 20), 9 TEAEs.
"""

from __future__ import annotations

import datetime as dt
import re
import sys
from pathlib import Path

import duckdb
import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from clinical.study import load_study  # noqa: E402
from deliverables.dsmb import render_dsmb_html, write_dsmb_pdf  # noqa: E402
from deliverables.tables import (  # noqa: E402
    consistency_problems,
    fmt_npct,
    layout_dose_escalation,
    layout_participant_flow,
    layout_teae_overview,
    load_report_tables,
)

DATA_CUT = dt.date(2025, 12, 31)
XSS = "<script>alert(1)</script>"
FORMULA = '=HYPERLINK("http://x")'
CHINESE = "发热"

# --------------------------------------------------------------------------------------------------
# Fixture database


def make_fixture_db(path: Path | str) -> Path:
    """A DuckDB file with the analysis tables of a small, hand-counted trial."""
    path = Path(path)
    con = duckdb.connect(str(path))
    try:
        con.execute("CREATE SCHEMA IF NOT EXISTS analysis; CREATE SCHEMA IF NOT EXISTS raw;")
        con.execute("CREATE TABLE analysis.dose_levels (DOSE VARCHAR, DOSEN INTEGER, DOSELBL VARCHAR, CELLS DOUBLE)")
        con.executemany(
            "INSERT INTO analysis.dose_levels VALUES (?, ?, ?, ?)",
            [("DL1", 1, "5x10^8 cells", 5e8), ("DL2", 2, "1x10^9 cells", 1e9), ("DL3", 3, "2x10^9 cells", 2e9)],
        )
        con.execute("CREATE TABLE analysis.flow_screening (ROWN INTEGER, ROWLBL VARCHAR, N BIGINT)")
        con.executemany(
            "INSERT INTO analysis.flow_screening VALUES (?, ?, ?)",
            [
                (1, "Screened (assessed for eligibility)", 9),
                (2, "Not enrolled", 2),
                (5, "  Failed: GPC3-positive tumour (IHC)", 1),
                (7, "  Failed: ANC >= 1.5 x10^9/L", 1),
                (1000, "  Not enrolled, no failed criterion recorded", 0),
                (1001, "Enrolled", 7),
            ],
        )
        con.execute(
            """CREATE TABLE analysis.participant_flow (STAGEN INTEGER, STAGE VARCHAR, STAGELBL VARCHAR,
               STAGEKIND VARCHAR, DOSE VARCHAR, DOSEN INTEGER, N BIGINT)"""
        )
        stages = [
            (1, "enrolled", "Enrolled (assigned to a dose level)", "STAGE", (3, 4, 0, 7)),
            (2, "leukapheresed", "Leukapheresed", "STAGE", (3, 4, 0, 7)),
            (3, "released", "Product released", "STAGE", (3, 3, 0, 6)),
            (4, "lymphodepleted", "Lymphodepleted", "STAGE", (3, 3, 0, 6)),
            (5, "infused", "Infused with IM83 CAR-T (safety population)", "STAGE", (3, 3, 0, 6)),
            (6, "completed", "Completed protocol follow-up", "STAGE", (1, 0, 0, 1)),
            (7, "dlt_evaluable", "DLT-evaluable", "ANALYSIS SET", (3, 2, 0, 5)),
        ]
        groups = [("DL1", 1), ("DL2", 2), ("DL3", 3), ("TOTAL", 99)]
        con.executemany(
            "INSERT INTO analysis.participant_flow VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(n, s, lbl, kind, g, gn, ns[i]) for n, s, lbl, kind, ns in stages for i, (g, gn) in enumerate(groups)],
        )
        con.execute(
            """CREATE TABLE analysis.flow_exits (STAGEN INTEGER, STAGE VARCHAR, REASON VARCHAR, DOSE VARCHAR,
               DOSEN INTEGER, N BIGINT, SUBJIDS VARCHAR)"""
        )
        con.executemany(
            "INSERT INTO analysis.flow_exits VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (3, "released", "Ongoing at data cut", "DL2", 2, 1, "007"),
                (3, "released", "Ongoing at data cut", "TOTAL", 99, 1, "007"),
                (6, "completed", "DEATH", "DL2", 2, 1, "005"),
                (6, "completed", "DEATH", "TOTAL", 99, 1, "005"),
                (6, "completed", "Ongoing at data cut", "DL1", 1, 2, "002, 003"),
                (6, "completed", "Ongoing at data cut", "DL2", 2, 2, "004, 006"),
                (6, "completed", "Ongoing at data cut", "TOTAL", 99, 4, "002, 003, 004, 006"),
                (7, "dlt_evaluable", "DLT window open", "DL2", 2, 1, "006"),
                (7, "dlt_evaluable", "DLT window open", "TOTAL", 99, 1, "006"),
            ],
        )
        con.execute(
            "CREATE TABLE analysis.safety_groups (DOSE VARCHAR, DOSEN INTEGER, DOSELBL VARCHAR, N_AT_RISK BIGINT)"
        )
        con.executemany(
            "INSERT INTO analysis.safety_groups VALUES (?, ?, ?, ?)",
            [("DL1", 1, "5x10^8 cells", 3), ("DL2", 2, "1x10^9 cells", 3), ("DL3", 3, "2x10^9 cells", 0),
             ("TOTAL", 99, "Total", 6)],
        )
        con.execute(
            """CREATE TABLE analysis.teae_summary (ROWN INTEGER, ROWLBL VARCHAR, DOSE VARCHAR, DOSEN INTEGER,
               N BIGINT, DENOM BIGINT, PCT DOUBLE)"""
        )
        summary = [  # (row, label, DL1, DL2, DL3, TOTAL)
            (1, "Any TEAE", 2, 3, 0, 5),
            (2, "Any TEAE related to IM83 CAR-T", 1, 3, 0, 4),
            (3, "Any grade >= 3 TEAE", 1, 2, 0, 3),
            (4, "Any serious TEAE", 0, 2, 0, 2),
            (5, "Cytokine release syndrome, any grade", 1, 2, 0, 3),
            (6, "Cytokine release syndrome, grade >= 3", 0, 1, 0, 1),
            (7, "ICANS, any grade", 0, 1, 0, 1),
            (8, "ICANS, grade >= 3", 0, 1, 0, 1),
            (9, "Dose-limiting toxicity (adjudicated)", 0, 1, 0, 1),
            (10, "TEAE leading to death (grade 5)", 0, 1, 0, 1),
        ]
        denoms = {"DL1": 3, "DL2": 3, "DL3": 0, "TOTAL": 6}
        rows = []
        for rown, lbl, *ns in summary:
            for (g, gn), n in zip(groups, ns):
                d = denoms[g]
                rows.append((rown, lbl, g, gn, n, d, round(100.0 * n / d, 1) if d else None))
        for (g, gn), n in zip(groups, (3, 6, 0, 9)):
            rows.append((11, "Number of TEAEs (events)", g, gn, n, None, None))
        con.executemany("INSERT INTO analysis.teae_summary VALUES (?, ?, ?, ?, ?, ?, ?)", rows)

        con.execute(
            """CREATE TABLE analysis.ae_by_term (SCOPE VARCHAR, AEBODSYS VARCHAR, AEDECOD VARCHAR, DOSE VARCHAR,
               DOSEN INTEGER, N_AFFECTED BIGINT, N_EVENTS BIGINT, N_AT_RISK BIGINT)"""
        )
        terms = [  # (scope, soc, pt, (affected, events) per DL1, DL2, DL3, TOTAL)
            ("ALL", "General disorders and administration site conditions", "Pyrexia", [(1, 1), (1, 1), (0, 0), (2, 2)]),
            ("ALL", "Immune system disorders", "Cytokine release syndrome", [(1, 1), (2, 2), (0, 0), (3, 3)]),
            ("ALL", "Infections and infestations", "Sepsis", [(0, 0), (1, 1), (0, 0), (1, 1)]),
            ("ALL", "Investigations", "Neutrophil count decreased", [(1, 1), (1, 1), (0, 0), (2, 2)]),
            ("ALL", "Nervous system disorders", "Immune effector cell-associated neurotoxicity syndrome",
             [(0, 0), (1, 1), (0, 0), (1, 1)]),
            ("SERIOUS", "Immune system disorders", "Cytokine release syndrome", [(0, 0), (2, 2), (0, 0), (2, 2)]),
            ("SERIOUS", "Infections and infestations", "Sepsis", [(0, 0), (1, 1), (0, 0), (1, 1)]),
            ("SERIOUS", "Nervous system disorders", "Immune effector cell-associated neurotoxicity syndrome",
             [(0, 0), (1, 1), (0, 0), (1, 1)]),
        ]
        con.executemany(
            "INSERT INTO analysis.ae_by_term VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(sc, soc, pt, g, gn, a, e, denoms[g]) for sc, soc, pt, ns in terms for (g, gn), (a, e) in zip(groups, ns)],
        )
        con.execute(
            """CREATE TABLE analysis.dose_escalation (DOSE VARCHAR, DOSEN INTEGER, DOSELBL VARCHAR, CELLS DOUBLE,
               ENROLLED BIGINT, INFUSED BIGINT, EVALUABLE BIGINT, DLTS BIGINT, PENDING BIGINT, WINDOW_CLOSES DATE,
               STATUS VARCHAR)"""
        )
        con.executemany(
            "INSERT INTO analysis.dose_escalation VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                ("DL1", 1, "5x10^8 cells", 5e8, 3, 3, 3, 0, 0, None, "Cleared: 0/3 DLT"),
                ("DL2", 2, "1x10^9 cells", 1e9, 4, 3, 2, 1, 1, dt.date(2026, 1, 12), "Open: expanding to 6"),
                ("DL3", 3, "2x10^9 cells", 2e9, 0, 0, 0, 0, 0, None, "Not opened"),
            ],
        )
        con.execute(
            """CREATE TABLE analysis.escalation_decision (VARIANT VARCHAR, NEXT_DOSE VARCHAR, CONTINUE_TRIAL BOOLEAN,
               MTD VARCHAR, MATURE BOOLEAN, REASON VARCHAR)"""
        )
        con.execute(
            """INSERT INTO analysis.escalation_decision VALUES ('escalation-only', 'DL2', TRUE, NULL, FALSE,
               'dose 2: 1/2 DLT; cohort in progress: continue at dose 2 [on complete data; decision awaits DLT '
               || 'window closure of 1 participant(s) (1 at dose 2), closing 2026-01-12]')"""
        )
        con.execute(
            """CREATE TABLE analysis.adsl (STUDYID VARCHAR, SUBJID VARCHAR, AGE INTEGER, SEX VARCHAR, RACE VARCHAR,
               ETHNIC VARCHAR, DOSEP VARCHAR, DOSEPN INTEGER, DOSEA VARCHAR, DOSEAN INTEGER, TRTSDT DATE,
               ENRLFL VARCHAR, SAFFL VARCHAR, DLTFL VARCHAR, DLTEVLFL VARCHAR, DLTEVLRS VARCHAR, DTHDT DATE,
               DTHCAUS VARCHAR)"""
        )
        d = dt.date
        adsl = [
            ("001", 17, "M", "DL1", d(2025, 7, 1), "Y", "N", "Y", None, None, None),
            ("002", 22, "F", "DL1", d(2025, 7, 20), "Y", "N", "Y", None, None, None),
            ("003", 19, "M", "DL1", d(2025, 8, 10), "Y", "N", "Y", None, None, None),
            ("004", 25, "F", "DL2", d(2025, 10, 1), "Y", "N", "Y", None, None, None),
            ("005", 31, "M", "DL2", d(2025, 11, 5), "Y", "Y", "Y", None, d(2025, 11, 25), f"Sepsis {CHINESE}"),
            ("006", 16, "F", "DL2", d(2025, 12, 15), "Y", "N", "N", "DLT window open", None, None),
            ("007", 28, "M", "DL2", None, "N", "N", "N", "Not infused", None, None),
        ]
        con.executemany(
            "INSERT INTO analysis.adsl VALUES ('IM83', ?, ?, ?, 'ASIAN', 'NOT HISPANIC OR LATINO', ?, ?, ?, ?, ?, "
            "'Y', ?, ?, ?, ?, ?, ?)",
            [
                (s, age, sex, dp, int(dp[-1]), dp if trt else None, int(dp[-1]) if trt else None, trt, saf, dlt, ev,
                 rs, dth, cause)
                for s, age, sex, dp, trt, saf, dlt, ev, rs, dth, cause in adsl
            ],
        )
        con.executemany(
            "INSERT INTO analysis.adsl VALUES ('IM83', ?, ?, ?, 'ASIAN', 'NOT HISPANIC OR LATINO', NULL, NULL, NULL, "
            "NULL, NULL, 'N', 'N', 'N', 'N', 'Not infused', NULL, NULL)",
            [("008", 40, "M"), ("009", 35, "F")],
        )
        con.execute(
            """CREATE TABLE analysis.adae (STUDYID VARCHAR, SUBJID VARCHAR, AESPID VARCHAR, AETERM VARCHAR,
               AEDECOD VARCHAR, AEBODSYS VARCHAR, AECAT VARCHAR, ASTDT DATE, AENDT DATE, ADY INTEGER, ATOXGR INTEGER,
               AESER VARCHAR, AEREL VARCHAR, RELFL VARCHAR, AEOUT VARCHAR, DLTFL VARCHAR, TRTEMFL VARCHAR,
               DOSEA VARCHAR, DOSEAN INTEGER, SAFFL VARCHAR)"""
        )
        soc_gen = "General disorders and administration site conditions"
        ae = [  # subj, spid, term, decod, soc, cat, start, end, grade, ser, rel, out, dlt, te, dose
            ("001", "1", f"Fever {CHINESE}", "Cytokine release syndrome", "Immune system disorders", "CRS",
             d(2025, 7, 2), d(2025, 7, 4), 1, "N", "PROBABLE", "RECOVERED/RESOLVED", "N", "Y", "DL1"),
            ("001", "2", "Neutrophil count decreased", "Neutrophil count decreased", "Investigations", None,
             d(2025, 7, 8), d(2025, 7, 20), 3, "N", "POSSIBLE", "RECOVERED/RESOLVED", "N", "Y", "DL1"),
            ("002", "1", "Fever", "Pyrexia", soc_gen, None,
             d(2025, 7, 25), d(2025, 7, 26), 2, "N", "UNLIKELY", "RECOVERED/RESOLVED", "N", "Y", "DL1"),
            ("003", "1", "Back pain", "Back pain", "Musculoskeletal and connective tissue disorders", None,
             d(2025, 8, 1), d(2025, 8, 3), 1, "N", "NOT RELATED", "RECOVERED/RESOLVED", "N", None, "DL1"),
            ("004", "1", XSS, "Cytokine release syndrome", "Immune system disorders", "CRS",
             d(2025, 10, 2), d(2025, 10, 6), 2, "Y", "DEFINITE", "RECOVERED/RESOLVED", "N", "Y", "DL2"),
            ("004", "2", "Neutropenia", "Neutrophil count decreased", "Investigations", None,
             d(2025, 10, 5), None, 4, "N", "PROBABLE", "NOT RECOVERED/NOT RESOLVED", "N", "Y", "DL2"),
            ("005", "1", f"CRS grade 3 {CHINESE}", "Cytokine release syndrome", "Immune system disorders",
             "CRS", d(2025, 11, 8), d(2025, 11, 14), 3, "Y", "DEFINITE", "RECOVERED/RESOLVED", "Y", "Y", "DL2"),
            ("005", "2", FORMULA, "Immune effector cell-associated neurotoxicity syndrome", "Nervous system disorders",
             "ICANS", d(2025, 11, 10), d(2025, 11, 13), 3, "Y", "PROBABLE", "RECOVERED/RESOLVED", "N", "Y", "DL2"),
            ("005", "3", "Sepsis", "Sepsis", "Infections and infestations", None,
             d(2025, 11, 25), d(2025, 11, 25), 5, "Y", "UNLIKELY", "FATAL", "N", "Y", "DL2"),
            ("006", "1", CHINESE, "Pyrexia", soc_gen, None,
             d(2025, 12, 16), d(2025, 12, 17), 1, "N", "POSSIBLE", "RECOVERED/RESOLVED", "N", "Y", "DL2"),
            ("007", "1", "Pneumonia", "Pneumonia", "Infections and infestations", None,
             d(2025, 12, 1), None, 3, "Y", "NOT RELATED", "NOT RECOVERED/NOT RESOLVED", "N", None, None),
        ]
        trt = {s: t for s, _a, _x, _dp, t, *_ in adsl}
        con.executemany(
            "INSERT INTO analysis.adae VALUES ('IM83', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (s, sp, term, dec, soc, cat, st, en, (st - trt[s]).days if trt.get(s) else None, gr, ser, rel,
                 "Y" if rel in ("POSSIBLE", "PROBABLE", "DEFINITE") else "N", out, dlt, te, dose,
                 int(dose[-1]) if dose else None, "Y" if dose else "N")
                for s, sp, term, dec, soc, cat, st, en, gr, ser, rel, out, dlt, te, dose in ae
            ],
        )
        con.execute(
            """CREATE TABLE raw.quarantine (export_id VARCHAR, form VARCHAR, file VARCHAR, line BIGINT,
               subjid VARCHAR, "column" VARCHAR, rule VARCHAR, value VARCHAR, message VARCHAR)"""
        )
        con.executemany(
            "INSERT INTO raw.quarantine VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                ("EXP-2025-12-31", "lb", "lb.csv", 12, "004", "LBORRES", "TYPE", "1,5", "not a number"),
                ("EXP-2025-12-31", "ae", "ae.csv", 7, "002", "AETERM", "CODE", "=1+1\x07", "formula-looking value"),
                ("EXP-2025-12-31", "dm", "dm.csv", 3, None, "SUBJID", "REQUIRED", None, "required value missing"),
            ],
        )
    finally:
        con.close()
    return path


# The hand-counted display rows (the numbers every output must show).
EXPECTED_FLOW = {
    "Screened (assessed for eligibility)": [None, None, None, 9],
    "Enrolled (assigned to a dose level)": [3, 4, 0, 7],
    "Product released": [3, 3, 0, 6],
    "Infused with IM83 CAR-T (safety population)": [3, 3, 0, 6],
    "Completed protocol follow-up": [1, 0, 0, 1],
    "DLT-evaluable (analysis set)": [3, 2, 0, 5],
    "Did not reach 'Completed protocol follow-up': Ongoing at data cut": [2, 2, 0, 4],
}
EXPECTED_TEAE = {
    "Any TEAE": ["2 (66.7%)", "3 (100.0%)", "0", "5 (83.3%)"],
    "Any TEAE related to IM83 CAR-T": ["1 (33.3%)", "3 (100.0%)", "0", "4 (66.7%)"],
    "Any serious TEAE": ["0", "2 (66.7%)", "0", "2 (33.3%)"],
    "Cytokine release syndrome, grade >= 3": ["0", "1 (33.3%)", "0", "1 (16.7%)"],
    "Dose-limiting toxicity (adjudicated)": ["0", "1 (33.3%)", "0", "1 (16.7%)"],
    "Number of TEAEs (events)": [3, 6, 0, 9],
}
EXPECTED_ESC = {
    "DL1 5x10^8 cells": [3, 3, 3, "0/3", "0", "Cleared: 0/3 DLT"],
    "DL2 1x10^9 cells": [4, 3, 2, "1/2", "1 (window closes 2026-01-12)", "Open: expanding to 6"],
    "DL3 2x10^9 cells": [0, 0, 0, "0/0", "0", "Not opened"],
}


@pytest.fixture(scope="module")
def fixture_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_fixture_db(tmp_path_factory.mktemp("db") / "trial.duckdb")


@pytest.fixture(scope="module")
def tables(fixture_db: Path):
    con = duckdb.connect(str(fixture_db), read_only=True)
    try:
        return load_report_tables(con)
    finally:
        con.close()


@pytest.fixture(scope="module")
def cfg():
    return load_study(ROOT / "studies" / "im83.yaml")


@pytest.fixture(scope="module")
def html(tables, cfg) -> str:
    return render_dsmb_html(tables, cfg, DATA_CUT)


@pytest.fixture(scope="module")
def pdf_path(tables, cfg, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dsmb_pdf(tables, cfg, DATA_CUT, tmp_path_factory.mktemp("pdf") / "dsmb.pdf")


def pdf_text(path: Path) -> str:
    from pypdf import PdfReader

    reader = PdfReader(str(path))
    return "\n".join(page.extract_text() or "" for page in reader.pages)


def norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def row_text(row: list) -> str:
    return " ".join("" if v is None else str(v) for v in row if v not in (None, ""))


# --------------------------------------------------------------------------------------------------
# Layout: the display tables carry the hand-counted numbers


def test_percent_format():
    assert fmt_npct(0, 0.0) == "0"
    assert fmt_npct(0, None) == "0"
    assert fmt_npct(1, 33.3) == "1 (33.3%)"
    assert fmt_npct(3, 100.0) == "3 (100.0%)"
    assert fmt_npct(5, None) == "5"


def test_flow_layout(tables):
    t = layout_participant_flow(tables)
    assert t.columns == ["Stage", "DL1 5x10^8 cells", "DL2 1x10^9 cells", "DL3 2x10^9 cells", "Total"]
    got = {r[0]: r[1:] for r in t.rows}
    for label, cells in EXPECTED_FLOW.items():
        assert got[label] == cells, label
    # Zero screen-failure reason rows are pruned; the two real reasons remain, indented.
    assert "Not enrolled, no failed criterion recorded" not in got
    assert got["Failed: GPC3-positive tumour (IHC)"] == [None, None, None, 1]
    assert t.row_styles[t.rows.index(next(r for r in t.rows if r[0].startswith("Failed: GPC3")))] == "indent"
    # The exit from "released" sits under "Leukapheresed" and has zeros where nobody left.
    assert got["Did not reach 'Product released': Ongoing at data cut"] == [0, 1, 0, 1]
    assert got["Not DLT-evaluable: DLT window open"] == [0, 1, 0, 1]
    assert got["Did not reach 'Completed protocol follow-up': Death"] == [0, 1, 0, 1]


def test_teae_overview_layout(tables):
    t = layout_teae_overview(tables)
    assert t.columns[1:] == [
        "DL1 5x10^8 cells (N=3)",
        "DL2 1x10^9 cells (N=3)",
        "DL3 2x10^9 cells (N=0)",
        "Total (N=6)",
    ]
    got = {r[0]: r[1:] for r in t.rows}
    for label, cells in EXPECTED_TEAE.items():
        assert got[label] == cells, label
    # The numeric companions hold n and % separately.
    i = [r[0] for r in t.rows].index("Any TEAE")
    assert t.extra_rows[i] == [2, 66.7, 3, 100.0, 0, None, 5, 83.3]


def test_escalation_layout(tables):
    t = layout_dose_escalation(tables)
    got = {r[0]: r[1:] for r in t.rows}
    for label, cells in EXPECTED_ESC.items():
        assert got[label] == cells, label
    note = t.rows[-1]
    assert t.row_styles[-1] == "note"
    assert note[0] == "Next step"
    assert "next participants at DL2 1x10^9 cells" in note[1]
    assert "MTD: not determined" in note[1]
    assert "Provisional" in note[1]


def test_tables_agree(tables):
    assert consistency_problems(tables) == []


def test_listings(tables):
    assert [(r["SUBJID"], r["AESPID"]) for r in tables.dlt_listing] == [("005", "1")]
    # All SAEs, including the one before infusion of a participant not infused (sorted last).
    assert [(r["SUBJID"], r["AESPID"]) for r in tables.sae_listing] == [
        ("004", "1"), ("005", "1"), ("005", "2"), ("005", "3"), ("007", "1")]
    assert [(r["SUBJID"], r["DTHDY"], r["FATALAE"]) for r in tables.deaths] == [("005", 20, "Sepsis")]


# --------------------------------------------------------------------------------------------------
# HTML and PDF


def test_html_escapes_free_text(html):
    assert XSS not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert CHINESE in html
    assert "<script" not in html.lower()


def test_html_title_page_and_sections(html, cfg):
    assert "<th>Report number</th><td>1</td>" in html
    for text in (cfg.study.nct_id, cfg.study.protocol_id, "2025-12-31", "Closed session", "CLOSED SESSION",
                 "Participant flow", "Dose-escalation status", "Listing of serious adverse events",
                 "Listing of deaths", "Decisions for the DSMB"):
        assert text in html, text


def test_the_dlt_key_figure_is_of_the_dlt_evaluable_participants(tables):
    """The summary's DLT rate uses the escalation table's denominator, not the safety population."""
    from deliverables.tables import key_figures

    figures = dict(key_figures(tables))
    dlts = sum(r["DLTS"] for r in tables.dose_escalation)
    evaluable = sum(r["EVALUABLE"] for r in tables.dose_escalation)
    infused = figures["Infused (safety population)"]
    assert (dlts, evaluable, figures["DLT-evaluable"]) == (1, 5, 5) and infused > evaluable
    assert figures["Participants with a DLT"] == "1 of 5 (20.0%)"


def test_report_date_is_data_cut_unless_given(tables, cfg):
    a = render_dsmb_html(tables, cfg, DATA_CUT)
    b = render_dsmb_html(tables, cfg, DATA_CUT)
    assert a == b
    c = render_dsmb_html(tables, cfg, DATA_CUT, report_date=dt.date(2026, 1, 15), session="Closed")
    assert "2026-01-15" in c and "Closed session" in c and "2026-01-15" not in a


def test_display_tables_built_once_give_the_same_reports(tables, cfg):
    """The reports step builds the closed session's display tables once and makes the open
    session's from them: both HTML reports are those built from scratch."""
    from deliverables.tables import display_tables, open_session

    closed = display_tables(tables)
    assert open_session(closed) == display_tables(tables, "Open")
    assert any(d.kind == "listing" for d in closed) and not any(d.kind == "listing" for d in open_session(closed))
    for session in ("Closed", "Open"):
        assert render_dsmb_html(tables, cfg, DATA_CUT, session=session, closed=closed) == render_dsmb_html(
            tables, cfg, DATA_CUT, session=session)


def test_pdf_contains_the_numbers(pdf_path, tables):
    text = norm(pdf_text(pdf_path))
    for layout in (layout_participant_flow, layout_dose_escalation, layout_teae_overview):
        t = layout(tables)
        for row, style in zip(t.rows, t.row_styles):
            if style == "note":
                continue
            assert row_text(row) in text, (t.id, row)
    from pypdf import PdfReader

    pages = PdfReader(str(pdf_path)).pages
    for i, page in enumerate(pages, start=1):
        p = norm(page.extract_text() or "")
        # The running header/footer is on every page, the title page included.
        # The closed session's readers are the board: not the sponsor's wording of the open report.
        for expected in (f"Page {i} of {len(pages)}", "Confidential - closed session: DSMB members only",
                         "Data cut-off: 2025-12-31", "IM83 · NCT06412458", "CLOSED SESSION"):
            assert expected in p, (i, expected)


def _cjk_font_installed() -> bool:
    import shutil
    import subprocess

    if not shutil.which("fc-list"):
        return False
    out = subprocess.run(["fc-list", ":lang=zh", "family"], capture_output=True, text=True, check=False).stdout
    return bool(out.strip())


def test_pdf_chinese_text(pdf_path):
    from conftest import require

    require(_cjk_font_installed(), "no CJK font installed (fonts-wqy-microhei): Chinese text renders as missing glyphs")
    assert CHINESE in pdf_text(pdf_path)


def test_pdf_metadata_and_determinism(pdf_path, tables, cfg, tmp_path):
    from pypdf import PdfReader

    meta = PdfReader(str(pdf_path)).metadata
    assert meta.title.startswith("IM83")
    assert meta["/CreationDate"].startswith("D:20251231")
    assert meta["/ModDate"].startswith("D:20251231")
    again = write_dsmb_pdf(tables, cfg, DATA_CUT, tmp_path / "again.pdf")
    assert pdf_text(again) == pdf_text(pdf_path)
    # Typst writes nothing from the clock once the document date is the data cut (its /ID is a
    # hash of the document): the files are byte-identical.
    assert again.read_bytes() == pdf_path.read_bytes()


def test_missing_tables_strict_and_draft(tmp_path, cfg):
    from deliverables.tables import MissingAnalysisTable

    db = make_fixture_db(tmp_path / "t.duckdb")
    con = duckdb.connect(str(db))
    con.execute("DROP TABLE analysis.escalation_decision; DROP TABLE analysis.dose_escalation")
    with pytest.raises(MissingAnalysisTable, match="analysis.dose_escalation"):
        load_report_tables(con)
    draft = load_report_tables(con, strict=False)
    con.close()
    assert draft.missing == ["dose_escalation", "escalation_decision"]
    html = render_dsmb_html(draft, cfg, DATA_CUT)
    assert "not available" in html.lower()
    pdf = norm(pdf_text(write_dsmb_pdf(draft, cfg, DATA_CUT, tmp_path / "draft.pdf")))
    assert "Not available at this data cut: analysis.dose_escalation, analysis.escalation_decision." in pdf
    assert "Escalation decision not available (analysis.escalation_decision was not produced)." in pdf


# --------------------------------------------------------------------------------------------------
# Page budget: long listings are summarised in the PDF and complete in the workbook


def test_listing_beyond_the_page_budget_is_summarised(tables, cfg, monkeypatch):
    from deliverables import tables as tbl

    full = {t.id: t for t in tbl.display_tables(tables)}
    sae = full["sae_listing"]
    assert len(sae.rows) > 1
    shown = {t.id: t for t in tbl.pdf_tables(tables, budget=1)}
    summary = shown["sae_listing"]
    assert summary.kind == "listing" and summary.sheet == sae.sheet
    assert summary.columns[0] == "Preferred term" and summary.columns[-1] == "Total"
    # Every listed event is counted once: the last row is the total of the listing.
    assert summary.rows[-1][0] == "Total" and summary.rows[-1][-1] == len(sae.rows)
    assert sum(r[-1] for r in summary.rows[:-1]) == len(sae.rows)
    assert f"{len(sae.rows):,} events" in summary.intro and f"sheet '{sae.sheet}'" in summary.intro
    # Within the budget a listing is shown row by row, as before.
    assert {t.id: t.rows for t in tbl.pdf_tables(tables)} == {t.id: t.rows for t in full.values()}
    monkeypatch.setattr(tbl, "PDF_LISTING_ROWS", 1)
    html = render_dsmb_html(tables, cfg, DATA_CUT)
    assert "complete listing is in the sponsor workbook" in html
    assert "(summary; complete listing in the sponsor workbook)" in html


def test_summary_keeps_the_most_frequent_terms_and_counts_the_rest(monkeypatch):
    from deliverables import tables as tbl

    rows = [["DL1", f"01-{i:03d}", "1", "t", f"Term {i % 40:02d}", "SOC", "2025-01-01", 1, 3, "", "", "Yes", "No"]
            for i in range(200)]
    listing = tbl.DisplayTable(id="sae_listing", title="Listing of serious adverse events",
                               columns=["Dose level", "Participant", "AE no.", "Reported term", "Preferred term",
                                        "System organ class", "Onset date", "Day", "Grade", "Relationship",
                                        "Outcome", "TEAE", "DLT"],
                               rows=rows, kind="listing", sheet="SAE listing")
    s = tbl.summarise_listing(listing, budget=60)
    assert len(s.rows) == tbl.SUMMARY_ROWS + 2  # the most frequent, "All other", Total
    assert s.rows[-2][0].startswith("All other (15 ")
    assert s.rows[-1] == ["Total", 200, 200]
    assert "200 events of 200 participants" in s.intro


def test_data_quality_summary_counts_queries_by_status_age_form_and_site(tables):
    import dataclasses

    from deliverables.tables import layout_data_quality

    def q(i, status, form, site, days, first, closed=None):
        return {"QUERY_ID": f"Q-{i}", "RULE_ID": "R", "SEVERITY": "WARN", "FORM": form, "SITEID": site,
                "SUBJID": "01-001", "STATUS": status, "DAYS_OPEN": days, "FIRST_SEEN_CUT": first,
                "CLOSED_CUT": closed, "DATA_CUT": "2025-12-31"}

    cut = "2025-12-31"
    t = dataclasses.replace(tables, data_queries=[
        q(1, "Open", "ae", "01", 0, cut), q(2, "Open", "lb", "01", 45, "2025-11-16"),
        q(3, "Re-opened", "ae", "02", 120, "2025-09-02"), q(4, "Closed", "ae", "01", 30, "2025-11-30", cut),
    ])
    rows = {(r[0]): r[1] for r in layout_data_quality(t).rows}
    assert [rows[k] for k in ("Open", "Re-opened", "Closed", "New at this data cut", "Closed at this data cut")] == [2, 1, 1, 1, 1]
    assert [rows[k] for k in ("0-30 days", "31-60 days", "61-90 days", "> 90 days")] == [1, 1, 0, 1]
    assert (rows["ae"], rows["lb"], rows["01"], rows["02"]) == (2, 1, 2, 1)


def test_pdfs_rendered_in_threads_are_the_bytes_of_a_single_rendering(tables, cfg):
    """The reports step renders the PDFs in a thread while it writes the workbooks (Typst releases
    the GIL): renderings running at the same time give the bytes of one rendering alone."""
    from concurrent.futures import ThreadPoolExecutor

    from deliverables.dsmb import dsmb_context, render_pdf

    contexts = [dsmb_context(tables, cfg, DATA_CUT, session=s) for s in ("Open", "Closed", "Open", "Closed")]
    with ThreadPoolExecutor(max_workers=4) as pool:
        together = list(pool.map(render_pdf, contexts))
    alone = [render_pdf(ctx) for ctx in contexts[:2]]
    assert together == alone + alone
    assert alone[0] != alone[1]


def test_free_text_is_never_typst_markup(tables, cfg, tmp_path):
    """Values reach the Typst template as JSON data and are placed as text: free text that is Typst
    markup or code (a set rule, strong, math, a label, a reference, a line break, a closing bracket)
    comes out literally and changes nothing else."""
    from dataclasses import replace

    from pypdf import PdfReader

    hostile = ["#set page(width: 1cm)", "*bold* $x$ <lbl> @ref \\ ]", '#read("/etc/passwd")', "} ] ) #{"]
    sae = [dict(r, AETERM=hostile[i % len(hostile)]) for i, r in enumerate(tables.sae_listing)]
    deaths = [dict(r, DTHCAUS="#pagebreak() _x_ `raw`") for r in tables.deaths]
    assert len(sae) >= len(hostile)
    pdf = write_dsmb_pdf(replace(tables, sae_listing=sae, deaths=deaths), cfg, DATA_CUT, tmp_path / "hostile.pdf")
    text = norm(pdf_text(pdf))
    for value in [*hostile, "#pagebreak() _x_ `raw`"]:
        assert value in text, value
    pages = PdfReader(str(pdf)).pages
    plain = PdfReader(str(write_dsmb_pdf(tables, cfg, DATA_CUT, tmp_path / "plain.pdf"))).pages
    assert len(pages) == len(plain)
    assert all(sorted(map(round, p.mediabox[2:])) == [595, 842] for p in pages)  # A4, upright or landscape


def test_wide_listings_are_on_landscape_pages_and_the_contents_give_their_pages(pdf_path, tables):
    """A listing with more than LANDSCAPE_COLUMNS columns is printed on landscape pages, the rest on
    portrait; every chapter, table, listing and figure is in the contents with the page it is on."""
    from pypdf import PdfReader

    from deliverables.dsmb import LANDSCAPE_COLUMNS
    from deliverables.tables import pdf_tables

    pages = [norm(p.extract_text() or "") for p in PdfReader(str(pdf_path)).pages]
    landscape = [p.mediabox.width > p.mediabox.height for p in PdfReader(str(pdf_path)).pages]
    wide = [t for t in pdf_tables(tables) if t.kind == "listing" and len(t.columns) > LANDSCAPE_COLUMNS]
    assert wide and any(not t.kind == "listing" for t in pdf_tables(tables))
    contents = pages[1]
    for t in pdf_tables(tables):
        line = re.search(rf"((?:Table|Listing) \d+)\. {re.escape(t.title)} \.+ (\d+)", contents)
        assert line, t.title
        page = int(line.group(2))
        # The caption is on the page the contents give, upright or landscape as the table is wide.
        assert f"{line.group(1)}. {t.title}" in pages[page - 1], (t.title, page)
        assert landscape[page - 1] == (t in wide), (t.title, page)
    assert not landscape[0] and not landscape[1]  # title page and contents
    assert re.search(r"Abbreviations \.+ (\d+)", contents).group(1) == str(len(pages))


def test_the_dsmb_is_told_when_safety_records_are_held_in_quarantine(tables, cfg):
    """An infusion, AE or disposition record in quarantine changes who was infused, which AEs and which
    deaths are analysed: the summary's requests say how many per form; other forms do not."""
    from dataclasses import replace

    from deliverables.dsmb import _quarantine_ask

    assert _quarantine_ask(tables) is None  # the demo holds nothing back
    held = [{"FORMN": n, "FORM": form, "POPULATION": None, "RECEIVED": 9, "ACCEPTED": 9 - q, "QUARANTINED": q,
             "AFTER_CUT": 0, "SUBJECTS": 3, "EXPECTED": None, "EXPECTED_WITH": None}
            for n, (form, q) in enumerate((("lb", 5), ("inf", 1), ("ae", 2), ("ds", 0)), start=1)]
    ask = _quarantine_ask(replace(tables, form_completeness=held))
    assert ask == ("Note that records of the safety forms are held in quarantine and are not analysed in this report "
                   "until the site answers the data query (CAR-T infusion: 1; Adverse events: 2; data quality "
                   "section, data-queries workbook).")
    assert ask in render_dsmb_html(replace(tables, form_completeness=held), cfg, DATA_CUT)


def test_the_summary_says_what_the_open_dlt_windows_decide(tables, cfg):
    """A provisional decision comes with both branches: the pending windows close without a DLT, or one has one."""
    from dataclasses import replace

    from deliverables.tables import decision_summary

    d = dict(tables.escalation_decision, MATURE=False, NEXT_DOSE="DL3", CONTINUE_TRIAL=True, MTD=None,
             NODLT_NEXT_DOSE="DL3", NODLT_CONTINUE=True, NODLT_MTD=None,
             DLT_NEXT_DOSE="DL2", DLT_CONTINUE=False, DLT_MTD="DL2")
    t = replace(tables, escalation_decision=d)
    branches = decision_summary(t)["branches"]
    assert branches == (
        f"What the open windows decide: if they close without a DLT, continue the trial with the next participants "
        f"at {t.dose_label('DL3')}; if one of them has a DLT, stop dose escalation: MTD {t.dose_label('DL2')}.")
    assert branches in render_dsmb_html(t, cfg, DATA_CUT)
    assert decision_summary(replace(tables, escalation_decision=dict(d, MATURE=True)))["branches"] == ""


def test_a_death_within_the_dlt_window_is_named_in_the_summary(tables, cfg):
    """The fixture's 005 (DL2) died of sepsis on day 20, with a DLT: a signal the DSMB reads in the summary,
    by name in the closed session and as a count in the open one; a death without a DLT says so."""
    from dataclasses import replace

    from deliverables.dsmb import _window_deaths_ask

    closed = _window_deaths_ask(tables, 28, "Closed")
    assert closed == (f"Note the death(s) within the 28-day DLT window: 005 ({tables.dose_label('DL2')}, day 20, "
                      "cause: Sepsis 发热).")
    assert _window_deaths_ask(tables, 28, "Open") == (
        "Note the death(s) within the 28-day DLT window: 1 participant(s) (listed in the closed session report).")
    assert _window_deaths_ask(tables, 19, "Closed") is None
    no_dlt = [dict(r, DLTFL="N", DLTEVLFL="N") for r in tables.deaths]  # ADSL's flags, as the 3+3 reads them
    assert _window_deaths_ask(replace(tables, deaths=no_dlt), 28, "Closed").endswith(
        "cause: Sepsis 发热; no DLT recorded, not DLT-evaluable).")
    assert closed in render_dsmb_html(tables, cfg, DATA_CUT)
    # At scale the summary names the first ten and counts the rest (the listing has them all).
    many = [dict(tables.deaths[0], SUBJID=f"{n:03d}") for n in range(1, 13)]
    at_scale = _window_deaths_ask(replace(tables, deaths=many), 28, "Closed")
    assert at_scale.count("cause: Sepsis") == 10 and "; 010 (" in at_scale and "011 (" not in at_scale
    assert at_scale.endswith("; and 2 more of 12 (deaths listing, section 9; sponsor workbook).")


def test_exit_reasons_read_as_sentences():
    """Flow exits: a coded disposition in sentence case, like the stage labels; free text as written."""
    from deliverables.tables import exit_reason

    assert [exit_reason(r) for r in ("PROGRESSIVE DISEASE", "LOST TO FOLLOW-UP", "MANUFACTURING FAILURE", None,
                                     "Leukapheresis not performed: Rapid disease progression", "Ongoing at data cut")] == [
        "Progressive disease", "Lost to follow-up", "Manufacturing failure", "Reason not recorded",
        "Leukapheresis not performed: Rapid disease progression", "Ongoing at data cut"]


def test_serious_teaes_by_term_in_both_sessions(tables):
    """The serious TEAEs by SOC and PT (analysis.ae_by_term, SCOPE SERIOUS): by dose level in the
    closed session, pooled in the open one, where the SAE listing is only a pointer."""
    from deliverables.tables import display_tables, layout_teae_by_soc_pt

    t = layout_teae_by_soc_pt(tables, "SERIOUS")
    assert (t.id, t.sheet) == ("sae_soc_pt", "Serious TEAE by SOC and PT")
    got = {r[0]: r[1:] for r in t.rows}
    assert got["Cytokine release syndrome"] == ["0", "2 (66.7%)", "0", "2 (33.3%)", 2]
    assert got["Sepsis"] == ["0", "1 (33.3%)", "0", "1 (16.7%)", 1]
    assert "Pyrexia" not in got and "Neutrophil count decreased" not in got  # not serious
    # The first line counts participants with any serious TEAE (the overview's row) and serious events.
    overview = {r["DOSE"]: r for r in tables.teae_summary if r["ROWN"] == 4}
    assert t.rows[0][0] == "Any serious TEAE" and "Any TEAE" not in got
    assert t.rows[0][1:-1] == [fmt_npct(overview[d]["N"], overview[d]["PCT"]) for d in ("DL1", "DL2", "DL3", "TOTAL")]
    assert t.rows[0][-1] == 2 + 1 + 1  # the serious events of the three terms
    pooled = next(d for d in display_tables(tables, session="Open") if d.id == "sae_soc_pt")
    assert {r[0]: r[1:] for r in pooled.rows}["Cytokine release syndrome"][0] == "2 (33.3%)"
