"""Candidate DLTs from the configured rules, and the review against the investigator's adjudication."""

import datetime as dt
from pathlib import Path

import duckdb

from clinical.dlt import build_dlt_review
from clinical.study import load_study

CFG = load_study(Path(__file__).resolve().parent.parent / "studies" / "im83.yaml")
CUT = dt.date(2025, 6, 30)
D0 = dt.date(2025, 3, 1)


def _db(ae_rows, lab_rows, dlt_flags):
    con = duckdb.connect()
    con.execute("CREATE SCHEMA analysis")
    con.execute("CREATE TABLE analysis.adsl (SUBJID VARCHAR, DOSEA VARCHAR, TRTSDT DATE, SAFFL VARCHAR, DLTFL VARCHAR)")
    con.executemany("INSERT INTO analysis.adsl VALUES (?, 'DL1', ?, 'Y', ?)", [(s, D0, f) for s, f in dlt_flags.items()])
    con.execute(
        """CREATE TABLE analysis.adae (SUBJID VARCHAR, AESPID BIGINT, AETERM VARCHAR, AEDECOD VARCHAR, AEBODSYS VARCHAR,
             AECAT VARCHAR, ATOXGR BIGINT, ADY BIGINT, ASTDT DATE, AENDT DATE, RELFL VARCHAR, TRTEMFL VARCHAR,
             SAFFL VARCHAR)"""
    )
    con.executemany(
        "INSERT INTO analysis.adae VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'Y', 'Y')",
        [(s, n, t, t, soc, cat, g, dy, D0 + dt.timedelta(dy), None if dur is None else D0 + dt.timedelta(dy + dur - 1), rel)
         for s, n, t, soc, cat, g, dy, dur, rel in ae_rows],
    )
    con.execute("CREATE TABLE analysis.adlb (SUBJID VARCHAR, PARAMCD VARCHAR, ADY BIGINT, ATOXGR INTEGER, SAFFL VARCHAR)")
    con.executemany("INSERT INTO analysis.adlb VALUES (?, ?, ?, ?, 'Y')", lab_rows)
    return con


def test_each_rule_fires_only_on_its_events():
    ae = [
        # SUBJID, AESPID, term, SOC, category, grade, onset day, duration (None = ongoing), related
        ("A", 1, "Cytokine release syndrome", "Immune system disorders", "CRS", 4, 3, 2, "Y"),  # CRS_G4
        ("B", 1, "Cytokine release syndrome", "Immune system disorders", "CRS", 3, 3, 3, "Y"),  # 3 days: resolves in 72 h
        ("C", 1, "Cytokine release syndrome", "Immune system disorders", "CRS", 3, 3, 4, "Y"),  # CRS_G3_72H
        ("D", 1, "Hepatic failure", "Hepatobiliary disorders", "OTHER", 3, 10, None, "Y"),  # ongoing -> NONHEME
        ("E", 1, "Hepatic failure", "Hepatobiliary disorders", "OTHER", 3, 10, 20, "N"),  # not related
        ("F", 1, "Pyrexia", "General disorders and administration site conditions", "OTHER", 3, 1, 9, "Y"),  # excluded
        ("G", 1, "Febrile neutropenia", "Blood and lymphatic system disorders", "OTHER", 3, 8, 9, "Y"),  # heme SOC
        ("H", 1, "Cytokine release syndrome", "Immune system disorders", "CRS", 4, 30, 2, "Y"),  # after the window
    ]
    labs = [("I", "NEUT", 29, 4), ("J", "NEUT", 14, 4), ("J", "NEUT", 28, 3), ("K", "PLAT", 27, 4)]
    flags = {s: "N" for s in "ABCDEFGHIJK"} | {"A": "Y", "J": "Y"}
    con = _db(ae, labs, flags)
    assert build_dlt_review(con, CFG, CUT) == {"candidates": 4, "disagreements": 4}
    assert con.execute("SELECT SUBJID, RULE_ID FROM analysis.dlt_candidates ORDER BY ALL").fetchall() == [
        ("A", "CRS_G4"), ("C", "CRS_G3_72H"), ("D", "NONHEME_G3_7D"), ("I", "HEME_G4_D28"),
    ]
    review = {r[0]: r[1:] for r in con.execute("SELECT SUBJID, CANDFL, DLTFL, AGREEFL, DISCREP FROM analysis.dlt_review").fetchall()}
    assert review["A"] == ("Y", "Y", "Y", None)
    assert review["C"] == ("Y", "N", "N", "Meets a DLT rule but not adjudicated as DLT")
    assert review["J"] == ("N", "Y", "N", "Adjudicated DLT that meets no configured rule")
    assert review["B"] == ("N", "N", "Y", None)
