"""ADSL (clinical/adsl.py) on hand-made staged forms: COUNTRY is one spelling per country.

ADSL COUNTRY writes spellings of a country that differ only in case one way, the way most participants'
forms write it; the DSMB baseline table (deliverables.tables.baseline_sql) and the registry draft both read
it as it is, so "CHINA" and "China" are one row everywhere.
"""

import datetime as dt
from pathlib import Path

import duckdb
import pytest

from clinical.adsl import build_adsl
from clinical.crf import FORMS
from clinical.ingest import ingest_settings, load_records, not_collected
from clinical.study import load_study
from deliverables.tables import baseline_sql

ROOT = Path(__file__).resolve().parent.parent
CFG = load_study(ROOT / "studies" / "im83.yaml")
CUT = dt.date(2025, 12, 31)

# stage.dm COUNTRY as ingest leaves it (trimmed, blank -> NULL), one participant each -> ADSL COUNTRY
COUNTRIES = [
    ("CHINA", "China"),
    ("China", "China"),
    ("China", "China"),
    ("china", "China"),  # spellings equal ignoring case: the most used one
    ("USA", "USA"),  # a spelling nobody else used stays as entered (no made-up "Usa")
    ("FRANCE", "FRANCE"),  # a tie between spellings: the first in sort order
    ("France", "FRANCE"),
    ("CÔTE D'IVOIRE", "CÔTE D'IVOIRE"),
    (None, None),
]


def _adsl(countries: list[str | None], enrolled: bool = False) -> duckdb.DuckDBPyConnection:
    """analysis.adsl of participants 01-001, 01-002, ... with these dm.COUNTRY values (all other forms empty;
    with ``enrolled`` each is enrolled at DL1)."""
    con = duckdb.connect()
    settings = ingest_settings(CFG)
    for f in FORMS:
        load_records(con, f, not_collected(f), "EXP1", settings)
    subjids = [f"01-{i:03d}" for i in range(1, len(countries) + 1)]
    con.executemany(
        "INSERT INTO stage.dm (STUDYID, SITEID, SUBJID, AGE, SEX, COUNTRY) VALUES ('IM83', '01', ?, 40, 'F', ?)",
        [[s, c] for s, c in zip(subjids, countries)],
    )
    if enrolled:
        con.executemany(
            "INSERT INTO stage.enrol (SUBJID, ENRLYN, DOSELVL) VALUES (?, 'Y', ?)",
            [[s, CFG.dose_levels[0].id] for s in subjids],
        )
    build_adsl(con, CFG, CUT)
    return con


def test_country_spellings_equal_ignoring_case_are_the_most_used_one():
    con = _adsl([raw for raw, _ in COUNTRIES])
    got = [r[0] for r in con.execute("SELECT COUNTRY FROM analysis.adsl ORDER BY SUBJID").fetchall()]
    assert got == [want for _, want in COUNTRIES]
    assert con.execute(
        "SELECT data_type FROM duckdb_columns() WHERE table_name = 'adsl' AND column_name = 'COUNTRY'"
    ).fetchone()[0] == "VARCHAR"


@pytest.mark.parametrize("raw", ["CHINA", "china", "USA", None])
def test_one_spelling_alone_is_kept_as_entered(raw):
    con = _adsl([raw])
    assert con.execute("SELECT COUNTRY FROM analysis.adsl").fetchone()[0] == raw


def test_dsmb_baseline_shows_one_row_per_country():
    """The DSMB / workbook baseline query counts ADSL COUNTRY: the spellings of China are one row, a
    missing country 'Missing'."""
    con = _adsl(["CHINA", "China", "China", "china", "USA", None, None], enrolled=True)
    rows = con.execute(
        f"""SELECT CAT, N FROM ({baseline_sql({'DOSEP', 'ENRLFL', 'COUNTRY'})})
            WHERE VAR = 'COUNTRY' AND DOSE = 'TOTAL' ORDER BY CAT"""
    ).fetchall()
    assert rows == [("China", 4), ("Missing", 2), ("USA", 1)]
