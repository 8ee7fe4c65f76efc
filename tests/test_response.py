"""Tumour response (clinical.response): best overall response, SD minimum, PD first, NE, ORR, on hand-built data."""

from __future__ import annotations

import datetime as dt

import duckdb
import pytest

from clinical.response import build_response
from clinical.study import Response

D0 = dt.date(2025, 1, 1)


def day(n: int) -> dt.date:
    return D0 + dt.timedelta(days=n)


def _db(adsl: list[tuple], rs: list[tuple]) -> duckdb.DuckDBPyConnection:
    """adsl rows: (SUBJID, DOSEA, SAFFL, TRTSDT day or None, EOSSTT, EOSDT day, DTHDT day, LSTCNDT day);
    rs rows: (SUBJID, VISIT, RSDAT day, RSORRES). Days are offsets from D0."""
    con = duckdb.connect(":memory:")
    con.execute("CREATE SCHEMA cut; CREATE SCHEMA analysis")
    con.execute(
        "CREATE TABLE analysis.dose_levels (DOSE VARCHAR, DOSEN INTEGER, DOSELBL VARCHAR, CELLS DOUBLE)"
    )
    con.execute(
        "INSERT INTO analysis.dose_levels VALUES ('DL1', 1, '5x10^8 cells', 5e8), ('DL2', 2, '1x10^9 cells', 1e9), "
        "('DL3', 3, '2x10^9 cells', 2e9)"
    )
    con.execute(
        """CREATE TABLE analysis.adsl (SUBJID VARCHAR, DOSEA VARCHAR, DOSEAN INTEGER, SAFFL VARCHAR, TRTSDT DATE,
           EOSSTT VARCHAR, EOSDT DATE, DTHDT DATE, LSTCNDT DATE)"""
    )
    con.execute(
        "CREATE TABLE cut.rs (_export_id VARCHAR, _file VARCHAR, _line BIGINT, SUBJID VARCHAR, VISIT VARCHAR, "
        "RSDAT DATE, RSORRES VARCHAR)"
    )
    dosen = {"DL1": 1, "DL2": 2, "DL3": 3, None: None}
    for subj, dose, saffl, trt, eos, eosdt, dth, lst in adsl:
        con.execute(
            "INSERT INTO analysis.adsl VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [subj, dose, dosen[dose], saffl, None if trt is None else day(trt), eos,
             None if eosdt is None else day(eosdt), None if dth is None else day(dth),
             day(lst if lst is not None else 0)],
        )
    for i, (subj, visit, d, res) in enumerate(rs):
        con.execute("INSERT INTO cut.rs VALUES ('x', 'rs.csv', ?, ?, ?, ?, ?)", [i + 2, subj, visit, day(d), res])
    return con


def _bor(con: duckdb.DuckDBPyConnection) -> dict[str, tuple]:
    rows = con.execute("SELECT SUBJID, BOR, BORDY FROM analysis.response ORDER BY SUBJID").fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}


def infused(subj: str, dose: str = "DL1", **kw) -> tuple:
    return (subj, dose, "Y", 0, kw.get("eos"), kw.get("eosdt"), kw.get("dth"), kw.get("lst", 0))


def test_default_sd_minimum_is_28_days():
    assert Response().sd_min_days == 28


def test_bor_is_the_best_response_in_recist_order():
    con = _db(
        [infused("01-001"), infused("01-002"), infused("01-003"), infused("01-004")],
        [
            ("01-001", "D28", 28, "SD"), ("01-001", "M2", 60, "PR"), ("01-001", "M3", 90, "CR"),
            ("01-002", "D28", 28, "PR"), ("01-002", "M3", 90, "SD"),
            ("01-003", "D28", 29, "NE"), ("01-003", "M3", 90, "SD"),
            ("01-004", "D28", 30, "SD"), ("01-004", "M3", 90, "PD"),
        ],
    )
    counts = build_response(con)
    assert counts == {"adrs": 9, "response": 4, "response_summary": 6 * 4}
    assert _bor(con) == {"01-001": ("CR", 90), "01-002": ("PR", 28), "01-003": ("SD", 90), "01-004": ("SD", 30)}


def test_sd_before_the_minimum_duration_is_ne_or_pd():
    con = _db(
        [infused("01-001"), infused("01-002"), infused("01-003"), infused("01-004")],
        [
            ("01-001", "D21", 21, "SD"),  # only an early SD: NE
            ("01-002", "D21", 27, "SD"), ("01-002", "M3", 90, "PD"),  # early SD, then PD: PD
            ("01-003", "D28", 28, "SD"),  # exactly the minimum: SD
            ("01-004", "D21", 27, "SD"), ("01-004", "M2", 60, "SD"),  # a later SD qualifies, dated then
        ],
    )
    build_response(con)
    assert _bor(con) == {"01-001": ("NE", 21), "01-002": ("PD", 90), "01-003": ("SD", 28), "01-004": ("SD", 60)}
    # The minimum is a parameter.
    build_response(con, Response(sd_min_days=21))
    assert _bor(con) == {"01-001": ("SD", 21), "01-002": ("SD", 27), "01-003": ("SD", 28), "01-004": ("SD", 27)}


def test_pd_first_and_assessments_after_progression_do_not_count():
    con = _db(
        [infused("01-001"), infused("01-002")],
        [
            ("01-001", "D28", 28, "PD"), ("01-001", "M3", 90, "PR"),  # response after PD ignored
            ("01-002", "D0", 0, "CR"), ("01-002", "D28", 28, "SD"),  # day 0 (baseline) does not count
        ],
    )
    build_response(con)
    assert _bor(con) == {"01-001": ("PD", 28), "01-002": ("SD", 28)}
    anl = con.execute("SELECT SUBJID, VISIT, ADY, ANLFL FROM analysis.adrs ORDER BY SUBJID, RSDAT").fetchall()
    assert anl == [
        ("01-001", "D28", 28, "Y"), ("01-001", "M3", 90, "N"),
        ("01-002", "D0", 0, "N"), ("01-002", "D28", 28, "Y"),
    ]


def test_ne_without_assessment_and_only_infused_participants():
    con = _db(
        [
            infused("01-001", dth=20, eos="DEATH", eosdt=20, lst=20),
            ("01-002", "DL1", "N", None, "ADVERSE EVENT", 5, None, 5),  # not infused
            infused("01-003", lst=10),
        ],
        [("01-002", "D28", 28, "SD")],
    )
    build_response(con)
    rows = con.execute(
        "SELECT SUBJID, BOR, BORN, BORDT, RSPFL, NASSESS, LSTCNDY, DTHDY, ONGOING FROM analysis.response ORDER BY SUBJID"
    ).fetchall()
    assert rows == [
        ("01-001", "NE", 5, None, "N", 0, 20, 20, "N"),
        ("01-003", "NE", 5, None, "N", 0, 10, None, "Y"),
    ]
    assert con.execute("SELECT count(*) FROM analysis.adrs").fetchall() == [(0,)]


def test_confirmation_optional():
    con = _db(
        [infused("01-001"), infused("01-002"), infused("01-003"), infused("01-004")],
        [
            ("01-001", "D28", 28, "PR"), ("01-001", "M3", 90, "PR"),  # confirmed PR
            ("01-002", "D28", 28, "CR"), ("01-002", "M2", 45, "CR"),  # CR repeated only 17 days later: SD
            ("01-003", "D28", 28, "PR"), ("01-003", "M3", 90, "CR"), ("01-003", "M6", 180, "CR"),  # confirmed CR
            ("01-004", "D21", 21, "PR"),  # unconfirmed and before the SD minimum: NE
        ],
    )
    build_response(con)
    assert _bor(con) == {"01-001": ("PR", 28), "01-002": ("CR", 28), "01-003": ("CR", 90), "01-004": ("PR", 21)}
    build_response(con, Response(confirm=True))
    assert _bor(con) == {"01-001": ("PR", 28), "01-002": ("SD", 28), "01-003": ("CR", 90), "01-004": ("NE", 21)}


def test_last_contact_is_adsls():
    # ADSL's LSTCNDT already counts the response assessments and death (clinical.adsl).
    con = _db(
        [infused("01-001", lst=90), infused("01-002", eos="DEATH", eosdt=100, dth=100, lst=100)],
        [("01-001", "M3", 90, "SD"), ("01-002", "D28", 28, "SD")],
    )
    build_response(con)
    rows = con.execute("SELECT SUBJID, LSTCNDT, LSTCNDY, LSTASDT, ONGOING FROM analysis.response ORDER BY SUBJID").fetchall()
    assert rows == [("01-001", day(90), 90, day(90), "Y"), ("01-002", day(100), 100, day(28), "N")]


def test_adsl_last_contact_covers_assessments_death_and_infusion(demo_run):
    """analysis.response takes LSTCNDT from ADSL: on the demo run it is never before the infusion,
    death or any tumour assessment of the participant."""
    con = duckdb.connect(str(demo_run.final / "trial.duckdb"), read_only=True)
    try:
        bad = con.execute(
            """SELECT s.SUBJID FROM analysis.adsl s
               LEFT JOIN (SELECT SUBJID, max(RSDAT) AS R FROM cut.rs GROUP BY SUBJID) r USING (SUBJID)
               WHERE s.LSTCNDT IS NULL AND s.TRTSDT IS NOT NULL
                  OR s.LSTCNDT < greatest(s.TRTSDT, s.DTHDT, r.R)"""
        ).fetchall()
        n = con.execute("SELECT count(*) FROM analysis.response").fetchone()[0]
    finally:
        con.close()
    assert n > 0 and bad == []


def test_summary_counts_percentages_and_orr():
    # DL1: CR, PR, SD; DL2: PD, NE, NE, SD; DL3: nobody infused.
    con = _db(
        [infused("01-001"), infused("01-002"), infused("01-003"),
         infused("02-001", "DL2"), infused("02-002", "DL2"), infused("02-003", "DL2"), infused("02-004", "DL2")],
        [
            ("01-001", "D28", 28, "CR"), ("01-002", "D28", 28, "PR"), ("01-003", "D28", 28, "SD"),
            ("02-001", "D28", 28, "PD"), ("02-002", "D28", 28, "NE"), ("02-004", "D28", 28, "SD"),
        ],
    )
    build_response(con)
    rows = con.execute("SELECT ROWCD, DOSE, DOSEN, DENOM, N, PCT FROM analysis.response_summary").fetchall()
    got = {(r[0], r[1]): (r[3], r[4], r[5]) for r in rows}
    assert len(rows) == 6 * 4
    assert [r[0] for r in rows[::4]] == ["CR", "PR", "SD", "PD", "NE", "ORR"]
    assert [r[1] for r in rows[:4]] == ["DL1", "DL2", "DL3", "TOTAL"] and rows[3][2] == 99
    assert got[("CR", "DL1")] == (3, 1, 33.3)
    assert got[("ORR", "DL1")] == (3, 2, 66.7)
    assert got[("NE", "DL2")] == (4, 2, 50.0)
    assert got[("SD", "TOTAL")] == (7, 2, 28.6)
    assert got[("ORR", "TOTAL")] == (7, 2, 28.6)
    assert got[("PD", "TOTAL")] == (7, 1, 14.3)
    assert got[("ORR", "DL3")] == (0, 0, None)
    # Every participant is in exactly one BOR category per column.
    for dose in ("DL1", "DL2", "TOTAL"):
        assert sum(got[(c, dose)][1] for c in ("CR", "PR", "SD", "PD", "NE")) == got[("CR", dose)][0]


def test_rebuild_is_idempotent_and_rejects_bad_parameters():
    con = _db([infused("01-001")], [("01-001", "D28", 28, "SD")])
    first = build_response(con)
    assert build_response(con) == first
    with pytest.raises(ValueError):  # the study configuration's validation
        Response(sd_min_days=-1)
    with pytest.raises(ValueError):
        Response(confirm_days=0)


def test_best_overall_response_matches_the_simulator_truth(demo_run):
    """The demo run: every infused participant's BOR in analysis.response is the one the simulator's
    own (independent) reading of its tumour assessments gives."""
    import duckdb as _duckdb

    want = {s["SUBJID"]: s["best_overall_response"] for s in demo_run.truth["participants"] if s["infused"]}
    con = _duckdb.connect(str(demo_run.final / "trial.duckdb"), read_only=True)
    try:
        got = dict(con.execute("SELECT SUBJID, BOR FROM analysis.response").fetchall())
        orr = con.execute("SELECT N FROM analysis.response_summary WHERE ROWCD = 'ORR' AND DOSE = 'TOTAL'").fetchone()[0]
    finally:
        con.close()
    assert got == want
    assert len(set(want.values())) >= 3  # the demo has several categories, so the comparison can fail
    assert orr == sum(v in ("CR", "PR") for v in want.values())
