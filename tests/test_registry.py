"""ClinicalTrials.gov results draft (deliverables/registry.py) on a hand-made fixture database.

The fixture is a small ``analysis`` schema whose right answers are worked out by hand below:
11 screened, 3 not enrolled, 8 enrolled (DL1 4, DL2 4, DL3 0), 5 infused (DL1 3, DL2 2), 1 completed.

  SUBJID  dose  age sex race                 ethnic        path
  01-001  DL1   17  M   ASIAN                NOT HISP      infused, completed, DLT-evaluable, no DLT
  01-003  DL1   25  F   ASIAN                NOT HISP      infused, DLT, died (DEATH)
  01-004  DL1   19  M   ASIAN                NOT HISP      leukapheresed, manufacturing failure
  01-006  DL1   16  F   UNKNOWN              UNKNOWN       infused, ongoing at cut, DLT-evaluable
  01-007  DL2   30  M   ASIAN                NOT HISP      leukapheresis not performed (venous access)
  01-008  DL2   18  F   ASIAN                NOT HISP      infused, withdrew after the DLT window
  01-010  DL2   66  M   WHITE                NOT HISP      infused, DLT window open, ongoing
  01-011  DL2   41  M   MORE THAN ONE RACE   HISPANIC      lymphodepleted, progressive disease, died (not infused)
  01-002, 01-005, 01-009: screen failures
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from pathlib import Path

import duckdb
import pytest

ROOT = Path(__file__).resolve().parents[1]
if (
    str(ROOT) not in sys.path
):  # deliverables/ is not (yet) in the editable install's package list
    sys.path.insert(0, str(ROOT))

from clinical.study import load_study
from deliverables.registry import (
    Finding,
    build_results_section,
    map_reason,
    precheck,
    render_draft_html,
    results_json,
    results_xml,
    validate_against_oas,
    validate_xml,
)

SHARED = Path(os.environ.get("IM83_SHARED", "/work/shared"))
REGISTRY_DIR = SHARED / "registry"
XSD = REGISTRY_DIR / "RRSUploadSchema.xsd"
OAS = REGISTRY_DIR / "ctg-oas-v2.yaml"
DATA_CUT = dt.date(2025, 12, 31)
CFG = load_study(ROOT / "studies" / "im83.yaml")


def need(path: Path) -> Path:
    """The shared registry file, or skip (fail in CI, where the files must be present)."""
    if not path.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(
                f"{path} is missing (CI=true: shared registry reference files are required)"
            )
        pytest.skip(
            f"{path} not available: /work/shared registry reference files are absent"
        )
    return path


# --------------------------------------------------------------------------------------------------
# Fixture database
# --------------------------------------------------------------------------------------------------

DOSES = [
    ("DL1", 1, "5x10^8 cells", 5e8),
    ("DL2", 2, "1x10^9 cells", 1e9),
    ("DL3", 3, "2x10^9 cells", 2e9),
]
GROUPS = [("DL1", 1), ("DL2", 2), ("DL3", 3), ("TOTAL", 99)]

# SUBJID, AGE, SEX, RACE, ETHNIC, DOSEP, DOSEA, ENRLFL, SAFFL, DLTEVLFL, DLTFL, DTHDT, EOSSTT, COMPLFL
ADSL = [
    (
        "01-001",
        17,
        "M",
        "ASIAN",
        "NOT HISPANIC OR LATINO",
        "DL1",
        "DL1",
        "Y",
        "Y",
        "Y",
        "N",
        None,
        "COMPLETED",
        "Y",
    ),
    (
        "01-002",
        50,
        "F",
        "ASIAN",
        "NOT HISPANIC OR LATINO",
        None,
        None,
        "N",
        "N",
        "N",
        "N",
        None,
        "SCREEN FAILURE",
        "N",
    ),
    (
        "01-003",
        25,
        "F",
        "ASIAN",
        "NOT HISPANIC OR LATINO",
        "DL1",
        "DL1",
        "Y",
        "Y",
        "Y",
        "Y",
        "2025-03-10",
        "DEATH",
        "N",
    ),
    (
        "01-004",
        19,
        "M",
        "ASIAN",
        "NOT HISPANIC OR LATINO",
        "DL1",
        None,
        "Y",
        "N",
        "N",
        "N",
        None,
        "MANUFACTURING FAILURE",
        "N",
    ),
    (
        "01-005",
        22,
        "M",
        "ASIAN",
        "NOT HISPANIC OR LATINO",
        None,
        None,
        "N",
        "N",
        "N",
        "N",
        None,
        "SCREEN FAILURE",
        "N",
    ),
    (
        "01-006",
        16,
        "F",
        "UNKNOWN",
        "UNKNOWN",
        "DL1",
        "DL1",
        "Y",
        "Y",
        "Y",
        "N",
        None,
        None,
        "N",
    ),
    (
        "01-007",
        30,
        "M",
        "ASIAN",
        "NOT HISPANIC OR LATINO",
        "DL2",
        None,
        "Y",
        "N",
        "N",
        "N",
        None,
        "WITHDRAWAL BY SUBJECT",
        "N",
    ),
    (
        "01-008",
        18,
        "F",
        "ASIAN",
        "NOT HISPANIC OR LATINO",
        "DL2",
        "DL2",
        "Y",
        "Y",
        "Y",
        "N",
        None,
        "WITHDRAWAL BY SUBJECT",
        "N",
    ),
    (
        "01-009",
        35,
        "F",
        "ASIAN",
        "NOT HISPANIC OR LATINO",
        None,
        None,
        "N",
        "N",
        "N",
        "N",
        None,
        "SCREEN FAILURE",
        "N",
    ),
    (
        "01-010",
        66,
        "M",
        "WHITE",
        "NOT HISPANIC OR LATINO",
        "DL2",
        "DL2",
        "Y",
        "Y",
        "N",
        "N",
        None,
        None,
        "N",
    ),
    (
        "01-011",
        41,
        "M",
        "MORE THAN ONE RACE",
        "HISPANIC OR LATINO",
        "DL2",
        None,
        "Y",
        "N",
        "N",
        "N",
        "2025-06-01",
        "PROGRESSIVE DISEASE",
        "N",
    ),
]

# STAGE -> N per DL1, DL2, DL3 (TOTAL = sum)
FLOW = {
    "enrolled": (4, 4, 0),
    "leukapheresed": (4, 3, 0),
    "released": (3, 3, 0),
    "lymphodepleted": (3, 3, 0),
    "infused": (3, 2, 0),
    "completed": (1, 0, 0),
    "dlt_evaluable": (3, 1, 0),
}
# STAGEN, STAGE, REASON, DOSE, N, SUBJIDS
EXITS = [
    (
        2,
        "leukapheresed",
        "Leukapheresis not performed: VENOUS ACCESS NOT ADEQUATE",
        "DL2",
        1,
        "01-007",
    ),
    (3, "released", "MANUFACTURING FAILURE", "DL1", 1, "01-004"),
    (5, "infused", "PROGRESSIVE DISEASE", "DL2", 1, "01-011"),
    (6, "completed", "DEATH", "DL1", 1, "01-003"),
    (6, "completed", "Ongoing at data cut", "DL1", 1, "01-006"),
    (6, "completed", "Ongoing at data cut", "DL2", 1, "01-010"),
    (6, "completed", "WITHDRAWAL BY SUBJECT", "DL2", 1, "01-008"),
    (7, "dlt_evaluable", "DLT window open", "DL2", 1, "01-010"),
]

# TEAEs of the safety population: SUBJID, DOSEA, SOC, PT, AESER, grade
ADAE = [
    ("01-001", "DL1", "Immune system disorders", "Cytokine release syndrome", "N", 1),
    (
        "01-001",
        "DL1",
        "General disorders and administration site conditions",
        "Pyrexia",
        "N",
        1,
    ),
    ("01-003", "DL1", "Immune system disorders", "Cytokine release syndrome", "Y", 3),
    ("01-003", "DL1", "Investigations", "Neutrophil count decreased", "N", 4),
    (
        "01-003",
        "DL1",
        "General disorders and administration site conditions",
        "Pyrexia",
        "N",
        2,
    ),
    (
        "01-003",
        "DL1",
        "General disorders and administration site conditions",
        "Pyrexia",
        "N",
        1,
    ),
    (
        "01-006",
        "DL1",
        "General disorders and administration site conditions",
        "Pyrexia",
        "N",
        1,
    ),
    (
        "01-008",
        "DL2",
        "Nervous system disorders",
        "Immune effector cell-associated neurotoxicity syndrome",
        "Y",
        2,
    ),
    ("01-008", "DL2", "Immune system disorders", "Cytokine release syndrome", "N", 2),
    ("01-010", "DL2", "Nervous system disorders", "Headache", "N", 1),
]
AT_RISK = {"DL1": 3, "DL2": 2, "DL3": 0, "TOTAL": 5}
# teae_summary rows 1..11 per DL1, DL2, DL3
TEAE_SUMMARY = {
    1: ("Any TEAE", (3, 2, 0)),
    2: ("Any TEAE related to IM83 CAR-T", (2, 1, 0)),
    3: ("Any grade >= 3 TEAE", (1, 0, 0)),
    4: ("Any serious TEAE", (1, 1, 0)),
    5: ("Cytokine release syndrome, any grade", (2, 1, 0)),
    6: ("Cytokine release syndrome, grade >= 3", (1, 0, 0)),
    7: ("ICANS, any grade", (0, 1, 0)),
    8: ("ICANS, grade >= 3", (0, 0, 0)),
    9: ("Dose-limiting toxicity (adjudicated)", (1, 0, 0)),
    10: ("TEAE leading to death (grade 5)", (0, 0, 0)),
    11: ("Number of TEAEs (events)", (7, 3, 0)),
}


def _ae_by_term() -> list[tuple]:
    """ae_by_term computed from ADAE exactly as clinical/safety_tables.py does (cross join with groups)."""
    scopes = {
        "ALL": ADAE,
        "SERIOUS": [a for a in ADAE if a[4] == "Y"],
        "NON-SERIOUS": [a for a in ADAE if a[4] == "N"],
    }
    out = []
    for scope, rows in scopes.items():
        for soc, pt in sorted({(a[2], a[3]) for a in rows}):
            for dose, dosen in GROUPS:
                hits = [
                    a
                    for a in rows
                    if (a[2], a[3]) == (soc, pt) and (dose == "TOTAL" or a[1] == dose)
                ]
                out.append(
                    (
                        scope,
                        soc,
                        pt,
                        dose,
                        dosen,
                        len({a[0] for a in hits}),
                        len(hits),
                        AT_RISK[dose],
                    )
                )
    return out


def make_fixture_db(path: Path | str) -> Path:
    """Create the analysis tables the registry draft reads, with the hand-made rows above."""
    path = Path(path)
    con = duckdb.connect(str(path))
    con.execute("CREATE SCHEMA analysis")
    con.execute(
        "CREATE TABLE analysis.dose_levels (DOSE VARCHAR, DOSEN INTEGER, DOSELBL VARCHAR, CELLS DOUBLE)"
    )
    con.executemany("INSERT INTO analysis.dose_levels VALUES (?, ?, ?, ?)", DOSES)
    con.execute(
        """CREATE TABLE analysis.adsl (SUBJID VARCHAR, AGE INTEGER, SEX VARCHAR, RACE VARCHAR, ETHNIC VARCHAR,
           COUNTRY VARCHAR, DOSEP VARCHAR, DOSEA VARCHAR, ENRLFL VARCHAR, SAFFL VARCHAR, DLTEVLFL VARCHAR,
           DLTFL VARCHAR, DTHDT DATE, EOSSTT VARCHAR, COMPLFL VARCHAR)"""
    )
    con.executemany(
        "INSERT INTO analysis.adsl VALUES (?, ?, ?, ?, ?, 'China', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        ADSL,
    )
    # ADSL's age group (clinical/adsl.py), stated here by hand: the registry reads it as it is.
    con.execute(
        """ALTER TABLE analysis.adsl ADD COLUMN AGEGR1 VARCHAR;
           UPDATE analysis.adsl SET AGEGR1 = CASE WHEN AGE <= 18 THEN '<=18 years'
                                                  WHEN AGE <= 64 THEN 'Between 18 and 65 years' ELSE '>=65 years' END"""
    )
    con.execute(
        "CREATE TABLE analysis.flow_screening (ROWN INTEGER, ROWLBL VARCHAR, N BIGINT)"
    )
    con.executemany(
        "INSERT INTO analysis.flow_screening VALUES (?, ?, ?)",
        [
            (1, "Screened (assessed for eligibility)", 11),
            (2, "Not enrolled", 3),
            (6, "  Failed: Karnofsky performance status >= 60", 2),
            (7, "  Failed: ANC >= 1.5 x10^9/L", 1),
            (1000, "  Not enrolled, no failed criterion recorded", 1),
            (1001, "Enrolled", 8),
        ],
    )
    con.execute(
        """CREATE TABLE analysis.participant_flow (STAGEN INTEGER, STAGE VARCHAR, STAGELBL VARCHAR,
           STAGEKIND VARCHAR, DOSE VARCHAR, DOSEN INTEGER, N BIGINT)"""
    )
    rows = []
    for i, (stage, ns) in enumerate(FLOW.items(), start=1):
        kind = "ANALYSIS SET" if stage == "dlt_evaluable" else "STAGE"
        for (dose, dosen), n in zip(GROUPS, (*ns, sum(ns))):
            rows.append((i, stage, stage.title(), kind, dose, dosen, n))
    con.executemany(
        "INSERT INTO analysis.participant_flow VALUES (?, ?, ?, ?, ?, ?, ?)", rows
    )
    con.execute(
        """CREATE TABLE analysis.flow_exits (STAGEN INTEGER, STAGE VARCHAR, REASON VARCHAR, DOSE VARCHAR,
           DOSEN INTEGER, N BIGINT, SUBJIDS VARCHAR)"""
    )
    dosen = dict(GROUPS)
    exit_rows = [(s, st, r, d, dosen[d], n, ids) for s, st, r, d, n, ids in EXITS]
    exit_rows += [
        (s, st, r, "TOTAL", 99, n, ids) for s, st, r, d, n, ids in EXITS
    ]  # one dose each: total = row
    con.executemany(
        "INSERT INTO analysis.flow_exits VALUES (?, ?, ?, ?, ?, ?, ?)", exit_rows
    )
    con.execute(
        "CREATE TABLE analysis.safety_groups (DOSE VARCHAR, DOSEN INTEGER, DOSELBL VARCHAR, N_AT_RISK BIGINT)"
    )
    con.executemany(
        "INSERT INTO analysis.safety_groups VALUES (?, ?, ?, ?)",
        [(d, n, lbl, AT_RISK[d]) for d, n, lbl, _ in DOSES]
        + [("TOTAL", 99, "Total", 5)],
    )
    con.execute(
        """CREATE TABLE analysis.ae_by_term (SCOPE VARCHAR, AEBODSYS VARCHAR, AEDECOD VARCHAR, DOSE VARCHAR,
           DOSEN INTEGER, N_AFFECTED BIGINT, N_EVENTS BIGINT, N_AT_RISK BIGINT)"""
    )
    con.executemany(
        "INSERT INTO analysis.ae_by_term VALUES (?, ?, ?, ?, ?, ?, ?, ?)", _ae_by_term()
    )
    con.execute(
        """CREATE TABLE analysis.teae_summary (ROWN INTEGER, ROWLBL VARCHAR, DOSE VARCHAR, DOSEN INTEGER,
           N BIGINT, DENOM BIGINT, PCT DOUBLE)"""
    )
    ts = []
    for rown, (lbl, ns) in TEAE_SUMMARY.items():
        for (dose, dn), n in zip(GROUPS, (*ns, sum(ns))):
            denom = None if rown == 11 else AT_RISK[dose]
            pct = round(100.0 * n / denom, 1) if denom else None
            ts.append((rown, lbl, dose, dn, n, denom, pct))
    con.executemany(
        "INSERT INTO analysis.teae_summary VALUES (?, ?, ?, ?, ?, ?, ?)", ts
    )
    con.execute(
        """CREATE TABLE analysis.dose_escalation (DOSE VARCHAR, DOSEN INTEGER, DOSELBL VARCHAR, CELLS DOUBLE,
           ENROLLED BIGINT, INFUSED BIGINT, EVALUABLE BIGINT, DLTS BIGINT, PENDING BIGINT, WINDOW_CLOSES DATE,
           STATUS VARCHAR)"""
    )
    con.executemany(
        "INSERT INTO analysis.dose_escalation VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            ("DL1", 1, "5x10^8 cells", 5e8, 4, 3, 3, 1, 0, None, "1/3 DLT"),
            (
                "DL2",
                2,
                "1x10^9 cells",
                1e9,
                4,
                2,
                1,
                0,
                1,
                dt.date(2026, 1, 20),
                "0/1 DLT; 1 window(s) open until 2026-01-20",
            ),
            ("DL3", 3, "2x10^9 cells", 2e9, 0, 0, 0, 0, 0, None, "Not opened"),
        ],
    )
    con.execute(
        """CREATE TABLE analysis.adae (SUBJID VARCHAR, AETERM VARCHAR, AEDECOD VARCHAR, AEBODSYS VARCHAR,
           AESER VARCHAR, ATOXGR INTEGER, DOSEA VARCHAR, SAFFL VARCHAR, TRTEMFL VARCHAR)"""
    )
    con.executemany(
        "INSERT INTO analysis.adae VALUES (?, ?, ?, ?, ?, ?, ?, 'Y', 'Y')",
        [(s, pt, pt, soc, ser, gr, d) for s, d, soc, pt, ser, gr in ADAE],
    )
    con.close()
    return path


@pytest.fixture()
def db(tmp_path: Path) -> Path:
    return make_fixture_db(tmp_path / "trial.duckdb")


def build(db_path: Path, cfg=CFG) -> dict:
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        return build_results_section(con, cfg, DATA_CUT)
    finally:
        con.close()


def _stats(items, key="numSubjects"):
    return [x[key] for x in items]


def _measure(rs, title):
    return next(
        m
        for m in rs["baselineCharacteristicsModule"]["measures"]
        if m["title"] == title
    )


def _cats(measure):
    return {
        (c.get("title"), cat.get("title")): {
            x["groupId"]: x for x in cat["measurements"]
        }
        for c in measure["classes"]
        for cat in c["categories"]
    }


# --------------------------------------------------------------------------------------------------
# Exact counts
# --------------------------------------------------------------------------------------------------


def test_participant_flow_counts(db):
    pf = build(db)["participantFlowModule"]
    assert [g["id"] for g in pf["groups"]] == ["FG000", "FG001", "FG002"]
    assert [g["title"] for g in pf["groups"]] == [
        "5x10^8 cells",
        "1x10^9 cells",
        "2x10^9 cells",
    ]
    (period,) = pf["periods"]
    assert period["title"] == "Overall Study"
    ms = {m["type"]: _stats(m["achievements"]) for m in period["milestones"]}
    assert list(ms) == [
        "STARTED",
        "Leukapheresed",
        "Product released",
        "Lymphodepleted",
        "Received IM83 CAR-T infusion",
        "COMPLETED",
        "NOT COMPLETED",
    ]
    assert ms["STARTED"] == ["4", "4", "0"]
    assert ms["Leukapheresed"] == ["4", "3", "0"]
    assert ms["Product released"] == ["3", "3", "0"]
    assert ms["Lymphodepleted"] == ["3", "3", "0"]
    assert ms["Received IM83 CAR-T infusion"] == ["3", "2", "0"]
    assert ms["COMPLETED"] == ["1", "0", "0"]
    assert ms["NOT COMPLETED"] == ["3", "4", "0"]
    reasons = [
        (d["type"], d.get("comment"), _stats(d["reasons"]))
        for d in period["dropWithdraws"]
    ]
    assert reasons == [
        ("Death", None, ["1", "0", "0"]),
        ("Withdrawal by Subject", None, ["0", "1", "0"]),
        (
            "Other",
            "Leukapheresis not performed: venous access not adequate",
            ["0", "1", "0"],
        ),
        ("Other", "Manufacturing failure (product not released)", ["1", "0", "0"]),
        ("Other", "Ongoing at data cut-off", ["1", "1", "0"]),
        ("Other", "Progressive disease", ["0", "1", "0"]),
    ]
    assert (
        "11 participants were screened; 3 were not enrolled"
        in pf["preAssignmentDetails"]
    )
    assert "Karnofsky performance status >= 60 (2)" in pf["preAssignmentDetails"]
    assert "8 eligible participants were enrolled" in pf["preAssignmentDetails"]
    assert (
        "China" in pf["recruitmentDetails"]
        and "31 December 2025" in pf["recruitmentDetails"]
    )
    assert len(pf["recruitmentDetails"]) <= 500


def test_map_reason():
    assert map_reason("LOST TO FOLLOW-UP") == ("Lost to Follow-up", None)
    assert map_reason("PHYSICIAN DECISION") == ("Physician Decision", None)
    assert map_reason("ADVERSE EVENT") == ("Adverse Event", None)
    assert map_reason("Ongoing at data cut") == ("Other", "Ongoing at data cut-off")
    assert map_reason("SOMETHING NEW") == ("Other", "Something new")
    assert map_reason(
        "Leukapheresis not performed: Withdrew consent before leukapheresis"
    ) == ("Withdrawal by Subject", None)
    assert map_reason("Leukapheresis not performed: VENOUS ACCESS NOT ADEQUATE") == (
        "Other",
        "Leukapheresis not performed: venous access not adequate",
    )


def test_baseline_counts(db):
    b = build(db)["baselineCharacteristicsModule"]
    assert [g["id"] for g in b["groups"]] == ["BG000", "BG001", "BG002", "BG003"]
    assert b["groups"][-1]["title"] == "Total"
    assert _stats(b["denoms"][0]["counts"], "value") == ["4", "4", "0", "8"]
    age = _cats(_measure({"baselineCharacteristicsModule": b}, "Age, Continuous"))[
        (None, None)
    ]
    assert age["BG000"] == {
        "groupId": "BG000",
        "value": "18",
        "lowerLimit": "16",
        "upperLimit": "25",
    }
    assert age["BG001"] == {
        "groupId": "BG001",
        "value": "35.5",
        "lowerLimit": "18",
        "upperLimit": "66",
    }
    assert "BG002" not in age  # no participant at DL3: no value
    assert age["BG003"] == {
        "groupId": "BG003",
        "value": "22",
        "lowerLimit": "16",
        "upperLimit": "66",
    }

    def counts(title):
        return {
            k[1] or k[0]: [v[g]["value"] for g in ("BG000", "BG001", "BG002", "BG003")]
            for k, v in _cats(
                _measure({"baselineCharacteristicsModule": b}, title)
            ).items()
        }

    assert counts("Age, Categorical") == {
        "<=18 years": ["2", "1", "0", "3"],
        "Between 18 and 65 years": ["2", "2", "0", "4"],
        ">=65 years": ["0", "1", "0", "1"],
    }
    assert counts("Sex: Female, Male") == {
        "Female": ["2", "1", "0", "3"],
        "Male": ["2", "3", "0", "5"],
    }
    race = counts("Race (NIH/OMB)")
    assert race["Asian"] == ["3", "2", "0", "5"]
    assert race["White"] == ["0", "1", "0", "1"]
    assert race["More than one race"] == ["0", "1", "0", "1"]
    assert race["Unknown or Not Reported"] == ["1", "0", "0", "1"]
    assert race["Black or African American"] == ["0", "0", "0", "0"]
    assert counts("Ethnicity (NIH/OMB)") == {
        "Hispanic or Latino": ["0", "1", "0", "1"],
        "Not Hispanic or Latino": ["3", "3", "0", "6"],
        "Unknown or Not Reported": ["1", "0", "0", "1"],
    }
    assert counts("Region of Enrollment") == {"China": ["4", "4", "0", "8"]}


def test_baseline_categories_read_the_same_in_the_registry_and_the_dsmb_report(db):
    """Sex, race and ethnicity counts by dose level agree between the registry draft and the DSMB
    report / workbook baseline, a null or lower-case race or ethnicity included (both count a null as
    ClinicalTrials.gov's "Unknown or Not Reported"). Both read the rows of tables.baseline_sql; this
    checks the registry's categories against the report's labels, and the counts against the fixture."""
    from deliverables.clinical_tables import layout_baseline
    from deliverables.tables import QUERIES, ReportTables, _rows, baseline_sql

    con = duckdb.connect(str(db))
    con.execute("UPDATE analysis.adsl SET RACE = NULL, ETHNIC = NULL WHERE SUBJID = '01-003'")
    con.execute("UPDATE analysis.adsl SET RACE = 'white', ETHNIC = '' WHERE SUBJID = '01-008'")
    cols = {r[0] for r in con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'analysis' AND table_name = 'adsl'"
    ).fetchall()}
    tables = ReportTables(
        dose_levels=_rows(con, QUERIES["dose_levels"]), participant_flow=_rows(con, QUERIES["participant_flow"]),
        baseline=_rows(con, baseline_sql(cols)),
        flow_screening=[], flow_exits=[], safety_groups=[], teae_summary=[], ae_by_term=[],
        dose_escalation=[], escalation_decision=None, dlt_listing=[], sae_listing=[], deaths=[],
    )
    con.close()
    b = build(db)["baselineCharacteristicsModule"]
    gids = [g["id"] for g in b["groups"]]  # DL1, DL2, DL3, Total
    table = layout_baseline(tables)
    shown: dict[tuple[str, str], list[str]] = {}
    group = ""
    for row, style in zip(table.rows, table.row_styles):
        if style == "group":
            group = row[0]
        else:
            shown[(group, row[0])] = [str(v).split(" ")[0] for v in row[1:]]
    for title, group in (("Sex: Female, Male", "Sex"), ("Race (NIH/OMB)", "Race"), ("Ethnicity (NIH/OMB)", "Ethnicity")):
        for cat in _measure({"baselineCharacteristicsModule": b}, title)["classes"][0]["categories"]:
            registry = [next(m["value"] for m in cat["measurements"] if m["groupId"] == g) for g in gids]
            assert shown.get((group, cat["title"]), ["0"] * len(gids)) == registry, (group, cat["title"])
        assert not any(g == group and label not in {
            c["title"] for c in _measure({"baselineCharacteristicsModule": b}, title)["classes"][0]["categories"]}
            for g, label in shown), group  # no category of the DSMB's that the registry lacks ('Missing')
    assert shown[("Race", "Unknown or Not Reported")] == ["2", "0", "0", "2"]
    assert shown[("Ethnicity", "Unknown or Not Reported")] == ["2", "1", "0", "3"]
    # The registry on its own, worked out by hand: 01-003 (DL1) null race and ethnicity, 01-008 (DL2)
    # 'white' and an empty ethnicity, besides 01-006 (DL1) UNKNOWN and 01-010 (DL2) WHITE.
    def counts(title):
        cats = _cats(_measure({"baselineCharacteristicsModule": b}, title))
        return {k[1]: [v[g]["value"] for g in gids] for k, v in cats.items()}

    race = counts("Race (NIH/OMB)")
    assert race["Unknown or Not Reported"] == ["2", "0", "0", "2"]
    assert race["White"] == ["0", "2", "0", "2"]
    assert race["Asian"] == ["2", "1", "0", "3"]
    ethnic = counts("Ethnicity (NIH/OMB)")
    assert ethnic == {"Hispanic or Latino": ["0", "1", "0", "1"], "Not Hispanic or Latino": ["2", "2", "0", "4"],
                      "Unknown or Not Reported": ["2", "1", "0", "3"]}


def _build_after(db: Path, *sql: str) -> dict:
    con = duckdb.connect(str(db))
    for statement in sql:
        con.execute(statement)
    con.close()
    return build(db)["baselineCharacteristicsModule"]


def test_regions_are_adsl_country_as_is(db):
    """Region of Enrollment: the regions are ADSL COUNTRY as it is (clinical.adsl made one spelling of each
    country, the rows of the DSMB baseline table too; the registry does not respell them); a participant
    without a country is in the region 'Missing', as in the DSMB report."""
    b = _build_after(
        db,
        "UPDATE analysis.adsl SET COUNTRY = 'china' WHERE SUBJID = '01-001'",
        "UPDATE analysis.adsl SET COUNTRY = 'France' WHERE SUBJID IN ('01-003', '01-010')",
        "UPDATE analysis.adsl SET COUNTRY = NULL WHERE SUBJID = '01-011'",
    )
    cats = _cats(_measure({"baselineCharacteristicsModule": b}, "Region of Enrollment"))
    regions = {k[0]: [v[g]["value"] for g in ("BG000", "BG001", "BG002", "BG003")] for k, v in cats.items()}
    assert regions == {
        "China": ["2", "2", "0", "4"],
        "France": ["1", "1", "0", "2"],
        "Missing": ["0", "1", "0", "1"],
        "china": ["1", "0", "0", "1"],
    }


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("UPDATE analysis.adsl SET DOSEP = 'DL9' WHERE SUBJID = '01-010'",
         "adsl: enrolled participant 01-010 has unknown dose level 'DL9'"),
        ("UPDATE analysis.adsl SET DOSEP = NULL WHERE SUBJID = '01-010'",
         "adsl: enrolled participant 01-010 has unknown dose level None"),
        ("UPDATE analysis.adsl SET AGE = NULL WHERE SUBJID IN ('01-006', '01-010')",
         "adsl.AGE missing for enrolled participant 01-006"),
        ("UPDATE analysis.adsl SET SEX = 'u' WHERE SUBJID IN ('01-001', '01-007')",
         "adsl.SEX 'U' of 2 enrolled participant(s) has no Sex: Female, Male category"),
        ("UPDATE analysis.adsl SET SEX = NULL WHERE SUBJID = '01-001'",
         "adsl.SEX 'Missing' of 1 enrolled participant(s) has no Sex: Female, Male category"),
        ("UPDATE analysis.adsl SET RACE = 'OTHER' WHERE SUBJID = '01-001'",
         "adsl.RACE 'OTHER' of 1 enrolled participant(s) has no Race (NIH/OMB) category"),
        ("UPDATE analysis.adsl SET AGEGR1 = NULL WHERE SUBJID = '01-001'",
         "adsl.AGEGR1 'Missing' of 1 enrolled participant(s) has no Age, Categorical category"),
    ],
)
def test_baseline_refuses_what_it_cannot_report(db, sql, message):
    from deliverables.registry import RegistryDataError

    with pytest.raises(RegistryDataError) as err:
        _build_after(db, sql)
    assert str(err.value) == message


def test_baseline_ignores_participants_not_enrolled(db):
    """Screen failures (not enrolled) need no dose level, age or sex."""
    before = build(db)["baselineCharacteristicsModule"]
    after = _build_after(db, "UPDATE analysis.adsl SET DOSEP = 'DL9', AGE = NULL, SEX = NULL WHERE ENRLFL <> 'Y'")
    assert after == before


def test_outcome_measures(db):
    oms = build(db)["outcomeMeasuresModule"]["outcomeMeasures"]
    assert [(m["type"], m["title"]) for m in oms] == [
        ("PRIMARY", "Number of Participants With Dose-limiting Toxicity (DLT)"),
        (
            "PRIMARY",
            "Number of Participants With Treatment-emergent Adverse Events (TEAEs)",
        ),
        (
            "SECONDARY",
            "Number of Participants With Grade 3 or Higher Treatment-emergent Adverse Events (TEAEs)",
        ),
    ]  # no analysis.pk_summary in the fixture: no PK outcomes
    dlt = oms[0]
    assert dlt["timeFrame"] == "Day 0 to Day 28 after infusion"
    assert (
        dlt["paramType"] == "COUNT_OF_PARTICIPANTS"
        and dlt["unitOfMeasure"] == "Participants"
    )
    assert [g["id"] for g in dlt["groups"]] == ["OG000", "OG001", "OG002"]
    assert _stats(dlt["denoms"][0]["counts"], "value") == ["3", "1", "0"]
    assert dlt["classes"][0]["categories"][0]["measurements"] == [
        {"groupId": "OG000", "value": "1"},
        {"groupId": "OG001", "value": "0"},
    ]
    teae, teae3 = oms[1], oms[2]
    assert _stats(teae["denoms"][0]["counts"], "value") == ["3", "2", "0"]
    assert [
        x["value"] for x in teae["classes"][0]["categories"][0]["measurements"]
    ] == ["3", "2"]
    assert [
        x["value"] for x in teae3["classes"][0]["categories"][0]["measurements"]
    ] == ["1", "0"]


PK_ROWS = [  # PARAMCD, PARAM, DOSE, N, GEOMEAN, GEOCV, MEDIAN, MIN, MAX (as clinical/pk.py writes them)
    (
        "CMAX",
        "Cmax (copies/ug gDNA)",
        "DL1",
        3,
        12345.678,
        45.25,
        11000.0,
        8000.0,
        20000.0,
    ),
    (
        "CMAX",
        "Cmax (copies/ug gDNA)",
        "DL2",
        1,
        30000.0,
        None,
        30000.0,
        30000.0,
        30000.0,
    ),
    ("CMAX", "Cmax (copies/ug gDNA)", "DL3", 0, None, None, None, None, None),
    (
        "CMAX",
        "Cmax (copies/ug gDNA)",
        "TOTAL",
        4,
        15000.0,
        50.0,
        15000.0,
        8000.0,
        30000.0,
    ),
    ("TMAX", "Tmax (day)", "DL1", 3, None, None, 10.0, 7.0, 14.0),
    ("TMAX", "Tmax (day)", "DL2", 1, None, None, 7.0, 7.0, 7.0),
    (
        "AUC28",
        "AUC0-28d (copies/ug gDNA*day)",
        "DL1",
        2,
        195096.0,
        24.6,
        190000.0,
        150000.0,
        230000.0,
    ),
    ("AUC28", "AUC0-28d (copies/ug gDNA*day)", "DL2", 1, None, None, 0.0, 0.0, 0.0),
    (
        "AUCLAST",
        "AUClast (copies/ug gDNA*day)",
        "DL1",
        3,
        999999.0,
        10.0,
        999999.0,
        999999.0,
        999999.0,
    ),
    (
        "AUCLAST",
        "AUClast (copies/ug gDNA*day)",
        "DL2",
        1,
        999999.0,
        None,
        999999.0,
        999999.0,
        999999.0,
    ),
    ("THALF", "Terminal half-life (day)", "DL1", 3, None, None, 20.0, 4.0, 60.0),
]


@pytest.mark.parametrize("with_paramcd", [True, False])
def test_pk_outcomes_when_table_exists(db, with_paramcd):
    con = duckdb.connect(str(db))
    con.execute(
        """CREATE TABLE analysis.pk_summary (PARAMCD VARCHAR, PARAM VARCHAR, DOSE VARCHAR, N BIGINT, GEOMEAN DOUBLE,
           GEOCV DOUBLE, MEDIAN DOUBLE, MIN DOUBLE, MAX DOUBLE)"""
    )
    con.executemany(
        "INSERT INTO analysis.pk_summary VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", PK_ROWS
    )
    if (
        not with_paramcd
    ):  # the column list of the brief: PARAM, DOSE, N, GEOMEAN, GEOCV, MEDIAN, MIN, MAX
        con.execute("ALTER TABLE analysis.pk_summary DROP COLUMN PARAMCD")
    con.close()
    rs = build(db)
    oms = rs["outcomeMeasuresModule"]["outcomeMeasures"]
    assert (
        len(oms) == 6
    )  # DLT, TEAE, TEAE >= 3, Cmax, Tmax, AUC0-28 (not AUClast, not half-life)
    cmax, tmax, auc = oms[3], oms[4], oms[5]
    assert (
        cmax["paramType"] == "GEOMETRIC_MEAN"
        and cmax["dispersionType"] == "Geometric Coefficient of Variation"
    )
    assert cmax["unitOfMeasure"] == "copies/ug gDNA"
    assert _stats(cmax["denoms"][0]["counts"], "value") == ["3", "1", "0"]
    meas = cmax["classes"][0]["categories"][0]["measurements"]
    assert meas[0] == {"groupId": "OG000", "value": "12300", "spread": "45.3"}
    assert (
        meas[1]["value"] == "30000"
        and meas[1]["spread"] == "NA"
        and "1 participant" in meas[1]["comment"]
    )
    assert len(meas) == 2  # DL3: nobody analysed, no value
    assert (
        tmax["paramType"] == "MEDIAN"
        and tmax["dispersionType"] == "Full Range"
        and tmax["unitOfMeasure"] == "days"
    )
    assert tmax["classes"][0]["categories"][0]["measurements"][0] == {
        "groupId": "OG000",
        "value": "10",
        "lowerLimit": "7",
        "upperLimit": "14",
    }
    assert "AUC0-28" in auc["title"] and auc["unitOfMeasure"] == "copies/ug gDNA*days"
    assert _stats(auc["denoms"][0]["counts"], "value") == [
        "2",
        "1",
        "0",
    ]  # AUC28 rows, not AUClast
    auc_meas = auc["classes"][0]["categories"][0]["measurements"]
    assert auc_meas[0] == {"groupId": "OG000", "value": "195000", "spread": "24.6"}
    assert (
        auc_meas[1]["value"] == "NA"
        and auc_meas[1]["spread"] == "NA"
        and auc_meas[1]["comment"]
    )
    assert not [f for f in precheck(rs, [], cfg=CFG) if f.severity == "ERROR"]
    assert validate_against_oas(rs, need(OAS)) == []
    assert validate_xml(results_xml(rs, CFG), need(XSD)) == []


def test_pk_half_values_read_the_same_in_the_registry_and_the_dsmb_report(db):
    """A half value of analysis.pk_summary (45.25, 18450, 0.06125) rounds half up to 3 significant
    figures in the registry draft and in the DSMB report / workbook table alike (one helper,
    deliverables.tables.round_sig); the DSMB adds only thousands separators."""
    from deliverables.clinical_tables import layout_pk
    from deliverables.tables import OPTIONAL_QUERIES, QUERIES, ReportTables, _rows

    con = duckdb.connect(str(db))
    con.execute(
        """CREATE TABLE analysis.pk_summary (PARAMCD VARCHAR, PARAMN INTEGER, PARAM VARCHAR, DOSE VARCHAR,
           DOSEN INTEGER, N BIGINT, GEOMEAN DOUBLE, GEOCV DOUBLE, MEDIAN DOUBLE, MIN DOUBLE, MAX DOUBLE)"""
    )
    con.executemany(
        "INSERT INTO analysis.pk_summary VALUES ('CMAX', 1, 'Cmax (copies/ug gDNA)', ?, ?, 3, ?, ?, 1.0, 0.5, 2.0)",
        [("DL1", 1, 45.25, 45.25), ("DL2", 2, 18450.0, 12.35), ("DL3", 3, 0.06125, 104.5)],
    )
    # The DSMB's rows of the two tables, read with the report's own queries.
    tables = ReportTables(
        dose_levels=_rows(con, QUERIES["dose_levels"]), pk_summary=_rows(con, OPTIONAL_QUERIES["pk_summary"]),
        flow_screening=[], participant_flow=[], flow_exits=[], safety_groups=[], teae_summary=[], ae_by_term=[],
        dose_escalation=[], escalation_decision=None, dlt_listing=[], sae_listing=[], deaths=[],
    )
    con.close()
    cmax = build(db)["outcomeMeasuresModule"]["outcomeMeasures"][3]
    meas = cmax["classes"][0]["categories"][0]["measurements"]
    registry = [(m["value"], m["spread"]) for m in meas]
    assert registry == [("45.3", "45.3"), ("18500", "12.4"), ("0.0613", "105")]
    dsmb = {row[0]: row[1:4] for row in layout_pk(tables).rows}  # DL1, DL2, DL3 (Total has no row here)
    shown = list(zip(dsmb["Geometric mean"], dsmb["Geometric CV%"]))
    assert [(g.replace(",", ""), cv) for g, cv in shown] == registry


def test_adverse_events(db):
    ae = build(db)["adverseEventsModule"]
    assert ae["frequencyThreshold"] == "0"
    assert ae["timeFrame"] == CFG.registry.ae_time_frame
    assert "IM83 CAR-T infusion" in ae["description"]
    # The adverse events and the deaths are counted over one period, and both texts say which.
    period = ("IM83 CAR-T infusion (Day 0) to the end of protocol follow-up (Month 12, Day 365) or the data "
              "cut-off (31 December 2025), whichever is earlier")
    assert f"starting from {period}," in ae["description"]
    assert ae["allCauseMortalityComment"].startswith(f"All-cause mortality in the safety population, from {period}.")
    groups = {g["id"]: g for g in ae["eventGroups"]}
    assert list(groups) == ["EG000", "EG001", "EG002"]
    assert {
        k: v for k, v in groups["EG000"].items() if k.endswith(("Affected", "AtRisk"))
    } == {
        "deathsNumAffected": 1,
        "deathsNumAtRisk": 3,
        "seriousNumAffected": 1,
        "seriousNumAtRisk": 3,
        "otherNumAffected": 3,
        "otherNumAtRisk": 3,
    }
    assert {
        k: v for k, v in groups["EG001"].items() if k.endswith(("Affected", "AtRisk"))
    } == {
        "deathsNumAffected": 0,
        "deathsNumAtRisk": 2,
        "seriousNumAffected": 1,
        "seriousNumAtRisk": 2,
        "otherNumAffected": 2,
        "otherNumAtRisk": 2,
    }
    assert groups["EG002"]["otherNumAtRisk"] == 0
    serious = [
        (
            e["organSystem"],
            e["term"],
            [(s["numAffected"], s["numEvents"], s["numAtRisk"]) for s in e["stats"]],
        )
        for e in ae["seriousEvents"]
    ]
    assert serious == [
        (
            "Immune system disorders",
            "Cytokine release syndrome",
            [(1, 1, 3), (0, 0, 2), (0, 0, 0)],
        ),
        (
            "Nervous system disorders",
            "Immune effector cell-associated neurotoxicity syndrome",
            [(0, 0, 3), (1, 1, 2), (0, 0, 0)],
        ),
    ]
    other = [
        (e["term"], [(s["numAffected"], s["numEvents"]) for s in e["stats"]])
        for e in ae["otherEvents"]
    ]
    assert other == [
        ("Pyrexia", [(3, 4), (0, 0), (0, 0)]),
        ("Cytokine release syndrome", [(1, 1), (1, 1), (0, 0)]),
        ("Neutrophil count decreased", [(1, 1), (0, 0), (0, 0)]),
        ("Headache", [(0, 0), (1, 1), (0, 0)]),
    ]  # SOC then PT: General disorders, Immune system, Investigations, Nervous system
    e = ae["seriousEvents"][0]
    assert (
        e["sourceVocabulary"] == "MedDRA 27.0"
        and e["assessmentType"] == "SYSTEMATIC_ASSESSMENT"
    )


def test_frequency_threshold_filters_other_events(db):
    cfg = CFG.model_copy(
        update={
            "safety": CFG.safety.model_copy(
                update={"registry_frequency_threshold": "50"}
            )
        }
    )
    ae = build(db, cfg)["adverseEventsModule"]
    # Neutrophil count decreased: 1/3 = 33% at DL1 only -> below 50% everywhere -> not listed
    assert [e["term"] for e in ae["otherEvents"]] == [
        "Pyrexia",
        "Cytokine release syndrome",
        "Headache",
    ]
    rules = {(f.rule, f.severity) for f in precheck(build(db, cfg), [])}
    assert ("11", "ERROR") in rules  # a threshold above 5 % is not allowed


def test_other_affected_counts_participants_in_duckdb():
    """otherNumAffected: distinct participants per dose received with >= 1 listed non-serious TEAE, on an
    in-memory analysis.adae whose right answer is worked out by hand:

      DL1  A  Nausea (GI, upper-case SOC) and Pyrexia (General): two listed terms -> counted once
      DL1  B  Pyrexia serious (AESER Y) -> not counted
      DL1  C  Pyrexia before infusion (TRTEMFL N) -> not counted
      DL1  D  Pyrexia, not in the safety population (SAFFL N) -> not counted
      DL1  E  Headache: not listed -> not counted
      DL1  F  Nausea twice -> counted once                                       => DL1: A, F = 2
      DL2  G  Nausea under SOC 'gastrointestinal disorders' (lower case) -> counted
      DL2  H  Nausea under another SOC (Investigations) -> not counted: the pair is (SOC, term)
      DL2  I  uncoded AE 'odd rash' (no SOC, no PT) -> listed as ('Uncoded', 'Uncoded: odd rash'), counted
      DL2  J  'my soc' / Fatigue: a SOC not among the PRS names matches exactly only ('My SOC' listed) -> not counted
      DL2  K  'My SOC' / Fatigue -> counted                                      => DL2: G, I, K = 3
      DL3  L  Pyrexia non-serious but TRTEMFL N -> not counted                   => DL3 absent
    """
    from deliverables.registry import _other_affected

    con = duckdb.connect()
    con.execute("CREATE SCHEMA analysis")
    con.execute(
        """CREATE TABLE analysis.adae (SUBJID VARCHAR, DOSEA VARCHAR, AETERM VARCHAR, AEDECOD VARCHAR,
           AEBODSYS VARCHAR, AESER VARCHAR, TRTEMFL VARCHAR, SAFFL VARCHAR)"""
    )
    gi, gen = "Gastrointestinal disorders", "General disorders and administration site conditions"
    con.executemany(
        "INSERT INTO analysis.adae VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            ("A", "DL1", "nausea", "Nausea", gi.upper(), "N", "Y", "Y"),
            ("A", "DL1", "fever", "Pyrexia", gen, "N", "Y", "Y"),
            ("B", "DL1", "fever", "Pyrexia", gen, "Y", "Y", "Y"),
            ("C", "DL1", "fever", "Pyrexia", gen, "N", "N", "Y"),
            ("D", "DL1", "fever", "Pyrexia", gen, "N", "Y", "N"),
            ("E", "DL1", "headache", "Headache", "Nervous system disorders", "N", "Y", "Y"),
            ("F", "DL1", "nausea", "Nausea", gi, "N", "Y", "Y"),
            ("F", "DL1", "nausea again", "Nausea", gi, "N", "Y", "Y"),
            ("G", "DL2", "nausea", "Nausea", gi.lower(), "N", "Y", "Y"),
            ("H", "DL2", "nausea", "Nausea", "Investigations", "N", "Y", "Y"),
            ("I", "DL2", "odd rash", None, None, "N", "Y", "Y"),
            ("J", "DL2", "tired", "Fatigue", "my soc", "N", "Y", "Y"),
            ("K", "DL2", "tired", "Fatigue", "My SOC", "N", "Y", "Y"),
            ("L", "DL3", "fever", "Pyrexia", gen, "N", "N", "Y"),
        ],
    )
    listed = {(gi, "Nausea"), (gen, "Pyrexia"), ("Uncoded", "Uncoded: odd rash"), ("My SOC", "Fatigue")}
    assert _other_affected(con, listed) == {"DL1": 2, "DL2": 3}
    assert _other_affected(con, {(gen, "Pyrexia")}) == {"DL1": 1}
    assert _other_affected(con, set()) == {}
    # the pairs and the SOC names are parameters, not SQL text: a quote in a term is data
    assert _other_affected(con, {(gi, "Nausea' OR '1'='1")}) == {}
    # nothing registered on the connection is left behind
    assert con.execute("SELECT count(*) FROM duckdb_tables() WHERE schema_name <> 'analysis'").fetchone()[0] == 0


# --------------------------------------------------------------------------------------------------
# Conformance: OpenAPI schema, XSD, pre-check
# --------------------------------------------------------------------------------------------------


def test_json_conforms_to_openapi_schema(db):
    spec = need(OAS)
    rs = build(db)
    assert validate_against_oas(rs, spec) == []
    study = json.loads(results_json(rs, CFG))
    assert (
        validate_against_oas(study, spec, "Study", check_order=True) == []
    )  # spec key order kept
    assert study["protocolSection"]["identificationModule"]["nctId"] == "NCT06412458"
    assert study["protocolSection"]["identificationModule"]["orgStudyIdInfo"] == {
        "id": "IM83-002"
    }
    assert study["hasResults"] is False
    assert list(study) == ["protocolSection", "resultsSection", "hasResults"]


def test_openapi_validator_catches_errors():
    spec = need(OAS)
    bad = {
        "participantFlowModule": {"groups": [{"id": "FG000", "colour": "red"}]},
        "adverseEventsModule": {
            "eventGroups": [{"id": "EG000", "deathsNumAffected": "1"}]
        },
        "outcomeMeasuresModule": {
            "outcomeMeasures": [{"type": "Primary", "paramType": "COUNT"}]
        },
    }
    errors = validate_against_oas(bad, spec)
    assert any("colour: unknown key" in e for e in errors)
    assert any("deathsNumAffected: expected integer" in e for e in errors)
    assert any("type: 'Primary' is not one of" in e for e in errors)
    assert any("paramType: 'COUNT' is not one of" in e for e in errors)
    swapped = {"moreInfoModule": {"pointOfContact": {"email": "a@b", "title": "x"}}}
    assert validate_against_oas(swapped, spec) == []
    assert validate_against_oas(swapped, spec, check_order=True) == [
        "ResultsSection.moreInfoModule.pointOfContact: keys ['email', 'title'] are not in the spec's property order"
    ]


def test_openapi_validator_accepts_real_records():
    examples = need(REGISTRY_DIR / "examples")
    for f in sorted(examples.glob("*.json")):
        rs = json.loads(f.read_text(encoding="utf-8"))["resultsSection"]
        assert validate_against_oas(rs, need(OAS)) == [], f.name


def test_xml_validates_against_xsd(db):
    xsd = need(XSD)
    rs = build(db)
    xml = results_xml(rs, CFG)
    assert validate_xml(xml, xsd) == []
    assert xml.startswith(b"<?xml version='1.0' encoding='UTF-8'?>")
    from lxml import etree

    root = etree.fromstring(xml)
    assert (
        root.tag == "{http://clinicaltrials.gov/rrs}result"
        and root.get("partialUpload") == "true"
    )
    assert [c.tag for c in root] == [
        "baseline",
        "limitationsAndCaveats",
        "outcomeMeasures",
        "participantFlow",
        "pointOfContact",
        "reportedEvents",
    ]
    ids = root.xpath("//@id")
    assert len(ids) == len(set(ids))
    assert "OG000_1" in ids and "OG002_3" in ids and "BG003" in ids
    assert set(root.xpath("//reportingGroupId/text()")) <= set(ids)
    assert root.xpath("//baseline/totalBaselineReportingGroup/@id") == ["BG003"]
    assert root.xpath("//totalBaselineReportingGroup/subjectsAnalyzed/text()") == ["8"]
    assert root.xpath("//outcomeMeasure[1]/measureType/text()") == ["Primary"]
    assert root.xpath("//outcomeMeasure[1]/parameterType/text()") == [
        "Count of Participants"
    ]
    assert root.xpath(
        "//baselineMeasure[title='Age, Continuous']/dispersionType/text()"
    ) == ["Full Range"]
    assert root.xpath(
        "//baselineMeasure[title='Age, Continuous']/parameterType/text()"
    ) == ["Median"]
    assert root.xpath("//reportedEvents/assessmentType/text()") == [
        "Systematic Assessment"
    ]
    assert root.xpath("//period/milestones/milestone/titleOther/text()") == [
        "Leukapheresed",
        "Product released",
        "Lymphodepleted",
        "Received IM83 CAR-T infusion",
    ]
    others = root.xpath(
        "//dropWithdrawReason[reasonType='Other']/otherReasonName/text()"
    )
    assert "Ongoing at data cut-off" in others
    assert root.xpath("//interventionGroup[@id='EG000']/numDeaths/text()") == ["1"]


def test_xml_schema_errors_are_reported(db):
    xsd = need(XSD)
    xml = results_xml(build(db), CFG).replace(b"<reasonType>Death</reasonType>", b"")
    errors = validate_xml(xml, xsd)
    assert errors and errors[0].startswith("line ") and "reasonType" in " ".join(errors)
    assert validate_xml(b"<tns:result", xsd)[0].startswith("line 1: not well-formed")
    dup = results_xml(build(db), CFG).replace(b'id="FG001"', b'id="FG000"')
    assert validate_xml(dup, xsd)


def test_precheck_clean_on_fixture(db):
    rs = build(db)
    xml_errors = validate_xml(results_xml(rs, CFG), XSD) if XSD.exists() else []
    findings = precheck(rs, xml_errors, cfg=CFG, actual_enrollment=8)
    assert all(isinstance(f, Finding) for f in findings)
    assert [f for f in findings if f.severity == "ERROR"] == []
    # certain agreements are not in the configuration: reminded as a warning
    assert any(f.rule == "5" and "Certain Agreements" in f.message for f in findings)


def test_precheck_says_what_stops_a_release(db):
    """PRS accepts the draft, but it is not ready to upload: placeholder contact, the draft's own notice
    in public text, participants still on study (interim results), STARTED other than the record's
    planned enrolment. With real values none of these is reported."""
    rs = build(db)
    started = sum(int(a["numSubjects"]) for m in rs["participantFlowModule"]["periods"][0]["milestones"]
                  if m["type"] == "STARTED" for a in m["achievements"])
    ongoing = sum(int(r["numSubjects"]) for dw in rs["participantFlowModule"]["periods"][0]["dropWithdraws"]
                  if dw.get("comment") == "Ongoing at data cut-off" for r in dw["reasons"])
    got = {(f.rule, f.where): f.message for f in precheck(rs, [], cfg=CFG)}
    assert got[("5", "More Information: Results Point of Contact")].startswith(
        "placeholder contact (clinicaltrials@example.org, +86-10-00000000)")
    assert "DRAFT" in got[("21", "More Information: Limitations and Caveats")]
    assert got[("18", "Participant Flow")] == (
        f"total STARTED {started} differs from the planned enrolment {CFG.study.planned_enrolment} of the record: "
        "the record's enrollment becomes the actual number when results are submitted")
    assert ongoing > 0
    assert got[("21", "Participant Flow")].startswith(f"{ongoing} participant(s) still on study at the data cut-off")

    real = CFG.model_copy(update={
        "study": CFG.study.model_copy(update={"planned_enrolment": started}),
        "registry": CFG.registry.model_copy(update={"point_of_contact": CFG.registry.point_of_contact.model_copy(
            update={"email": "ct@sponsor.cn", "phone": "+86-10-12345678"})}),
    })
    final = build(db, real)
    final["moreInfoModule"]["limitationsAndCaveats"]["description"] = "Small phase 1 sample."
    for p in final["participantFlowModule"]["periods"]:
        p["dropWithdraws"] = [dw for dw in p["dropWithdraws"] if dw.get("comment") != "Ongoing at data cut-off"]
    wheres = {(f.rule, f.where) for f in precheck(final, [], cfg=real)}
    assert not wheres & {("5", "More Information: Results Point of Contact"), ("18", "Participant Flow"),
                         ("21", "More Information: Limitations and Caveats"), ("21", "Participant Flow")}


def test_precheck_rule27_reasons_not_summing(db):
    con = duckdb.connect(str(db))
    con.execute(
        "UPDATE analysis.flow_exits SET N = 2 WHERE REASON = 'WITHDRAWAL BY SUBJECT' AND DOSE = 'DL2'"
    )
    con.close()
    findings = precheck(build(db), [], cfg=CFG)
    f27 = [f for f in findings if f.rule == "27"]
    assert len(f27) == 1 and f27[0].severity == "ERROR"
    assert (
        "FG001" in f27[0].where
        and "sum to 5" in f27[0].message
        and "= 4" in f27[0].message
    )


def test_precheck_catches_broken_section(db):
    rs = build(db)
    pf = rs["participantFlowModule"]
    pf["recruitmentDetails"] = "x" * 501
    other = next(d for d in pf["periods"][0]["dropWithdraws"] if d["type"] == "Other")
    del other["comment"]
    pf["periods"][0]["milestones"][1]["achievements"][0]["numSubjects"] = (
        "9"  # Leukapheresed > STARTED
    )
    b = rs["baselineCharacteristicsModule"]
    b["denoms"][0]["counts"][-1]["value"] = "9"  # Total != sum
    b["measures"][0]["classes"][0]["categories"][0]["measurements"][0].pop("lowerLimit")
    rs["outcomeMeasuresModule"]["outcomeMeasures"][0]["unitOfMeasure"] = "Percent"
    ae = rs["adverseEventsModule"]
    ae["seriousEvents"][0]["stats"][0]["numAtRisk"] = 4
    ae["eventGroups"][0]["deathsNumAffected"] = 2
    ae["eventGroups"][1]["title"] = "wrong"
    rules = {(f.rule, f.severity) for f in precheck(rs, ["line 3: boom"], cfg=CFG)}
    for rule in ("1-3", "13", "17", "MILESTONES", "28", "20", "25", "30", "GROUPS"):
        assert (rule, "ERROR") in rules, rule
    assert ("21", "WARNING") in rules  # AE deaths 2 vs 1 'Death' reason in the flow


# --------------------------------------------------------------------------------------------------
# Determinism and HTML
# --------------------------------------------------------------------------------------------------


def test_deterministic_bytes(tmp_path):
    a = make_fixture_db(tmp_path / "a.duckdb")
    b = make_fixture_db(tmp_path / "b.duckdb")
    ra, rb = build(a), build(b)
    assert results_json(ra, CFG) == results_json(rb, CFG)
    assert results_xml(ra, CFG) == results_xml(rb, CFG)
    j = results_json(ra, CFG)
    assert j.endswith(b"}\n") and "×".encode() not in j
    findings = precheck(ra, [])
    assert render_draft_html(ra, findings, CFG, DATA_CUT) == render_draft_html(
        rb, precheck(rb, []), CFG, DATA_CUT
    )


def test_html_escapes_free_text(db):
    con = duckdb.connect(str(db))
    con.execute(
        "UPDATE analysis.ae_by_term SET AEDECOD = '<script>alert(1)</script>' WHERE AEDECOD = 'Headache'"
    )
    con.close()
    rs = build(db)
    findings = [Finding("X", "WARNING", "<b>where</b>", "a & b")]
    html = render_draft_html(rs, findings, CFG, DATA_CUT)
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;b&gt;where&lt;/b&gt;" in html and "a &amp; b" in html
    order = [
        html.index(h)
        for h in (
            "Pre-check findings",
            "Participant Flow",
            "Baseline Characteristics",
            "Outcome Measures",
            "Adverse Events",
            "More Information",
        )
    ]
    assert order == sorted(order)
    assert "5x10^8 cells" in html and "DRAFT" in html
    # XML escapes it too and stays schema-valid
    xml = results_xml(rs, CFG)
    assert b"&lt;script&gt;" in xml
    if XSD.exists():
        assert validate_xml(xml, XSD) == []


# --------------------------------------------------------------------------------------------------
# The demo export run through the whole Dagster job (tests/conftest.py)
# --------------------------------------------------------------------------------------------------


def test_pipeline_database_draft(demo_run):
    con = duckdb.connect(str(demo_run.final / "trial.duckdb"), read_only=True)
    try:
        rs = build_results_section(con, CFG, DATA_CUT)
        enrolled = con.execute(
            "SELECT count(*) FROM analysis.adsl WHERE ENRLFL = 'Y'"
        ).fetchone()[0]
        infused = dict(
            con.execute(
                "SELECT DOSE, N_AT_RISK FROM analysis.safety_groups WHERE DOSE <> 'TOTAL'"
            ).fetchall()
        )
    finally:
        con.close()
    xml_errors = validate_xml(results_xml(rs, CFG), need(XSD))
    assert xml_errors == []
    assert (
        validate_against_oas(
            json.loads(results_json(rs, CFG)), need(OAS), "Study", check_order=True
        )
        == []
    )
    errors = [
        f
        for f in precheck(rs, xml_errors, cfg=CFG, actual_enrollment=enrolled)
        if f.severity == "ERROR"
    ]
    assert errors == []
    started = rs["participantFlowModule"]["periods"][0]["milestones"][0]
    assert sum(int(a["numSubjects"]) for a in started["achievements"]) == enrolled
    at_risk = [g["seriousNumAtRisk"] for g in rs["adverseEventsModule"]["eventGroups"]]
    assert at_risk == [infused[d.id] for d in CFG.dose_levels]


def test_draft_shows_the_prs_screen_wording_not_api_codes(db):
    html = render_draft_html(build(db), [], CFG, DATA_CUT)
    for code, shown in (("COUNT_OF_PARTICIPANTS", "Count of Participants"), ("FULL_RANGE", "Full Range"),
                        ("SYSTEMATIC_ASSESSMENT", "Systematic Assessment")):
        assert code not in html and shown in html
    assert "1. Primary: " in html and "PRIMARY:" not in html


def test_milestones_say_what_they_count(db):
    """COMPLETED and 'Product released' carry the definition a reader needs, in the JSON and the PRS XML."""
    rs = build(db)
    got = {m["type"]: m.get("comment") for m in rs["participantFlowModule"]["periods"][0]["milestones"]}
    assert got["COMPLETED"] == "Completed protocol follow-up (Month 12, Day 365 after infusion)."
    assert got["Product released"] == "Includes an out-of-specification product that was infused."
    assert got["STARTED"] is None and got["Leukapheresed"] is None
    xml = results_xml(rs, CFG)
    assert b"<comment>Completed protocol follow-up (Month 12, Day 365 after infusion).</comment>" in xml
    if XSD.exists():
        assert validate_xml(xml, XSD) == []
