"""One participant's PK profile the NCA cannot analyse does not stop the derivation.

The demo export (the rules' fixture, tests/test_rules.py) with 01-001's D7 sample dated on its D4
date (2024-07-26): two levels at NCA time 4. build_pk used to raise ``NcaError`` for the whole table
(so the derive step wrote no analysis table and no report). Now 01-001's ADPP rows are there with
every AVAL NULL, the PK summary counts one participant fewer where 01-001 had a value, every other
participant is derived exactly as on the clean data, XF-PC-SAME-DAY raises the data query and the
derive step's metadata and log name the participant and the reason.
"""

import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import duckdb
import pytest

from clinical.pk import build_pk
from clinical.rules import RULES_BY_ID, run_rule
from clinical.study import load_study

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from test_rules import STUDY, build_fixture_db  # noqa: E402

MOVE_D7_TO_D4 = "UPDATE stage.pc SET PCDAT = PCDAT - 3 WHERE SUBJID = '01-001' AND PCTPT = 'D7'"
REASON = "more than one sample at time 4"


@pytest.fixture(scope="module")
def cfg():
    return load_study(STUDY)


@pytest.fixture(scope="module")
def dbs(tmp_path_factory, cfg):
    """(clean, edited) connections: the demo fixture, and a copy with the D7 sample on D4's date,
    its PK tables rebuilt."""
    base = tmp_path_factory.mktemp("pk_not_derived")
    clean = build_fixture_db(base / "clean.duckdb", cfg)
    shutil.copyfile(clean, base / "edited.duckdb")
    c, e = duckdb.connect(str(clean)), duckdb.connect(str(base / "edited.duckdb"))
    e.execute(MOVE_D7_TO_D4)
    yield c, e
    c.close()
    e.close()


@pytest.fixture(scope="module")
def built(dbs, cfg):
    return build_pk(dbs[1], cfg)  # raised NcaError("subject 01-001: more than one sample at time 4") before


def _adpp(con, where: str) -> list[tuple]:
    return con.execute(f"SELECT * FROM analysis.adpp WHERE {where} ORDER BY SUBJID, PARAMN").fetchall()


def test_clean_demo_derives_everyone(dbs, cfg):
    clean = build_pk(dbs[0], cfg)
    assert clean.not_derived == {}
    assert dbs[0].execute("SELECT count(*) FROM analysis.adpp WHERE SUBJID = '01-001' AND AVAL IS NULL").fetchone() == (1,)


def test_the_participant_gets_null_parameters_and_the_reason(dbs, built):
    clean, edited = dbs
    assert built.not_derived == {"01-001": REASON}
    rows = edited.execute("SELECT PARAMCD, AVAL, DOSEA, PKEVLFL FROM analysis.adpp WHERE SUBJID = '01-001' "
                          "ORDER BY PARAMN").fetchall()
    assert rows == [(p, None, "DL1", "Y") for p in ("CMAX", "TMAX", "AUC28", "AUCLAST", "TLAST", "CLAST", "LAMZ", "THALF")]
    counts = {t: clean.execute(f"SELECT count(*) FROM analysis.{t}").fetchone()[0] for t in ("adpc", "adpp", "pk_summary")}
    assert built.counts == counts  # no row lost


def test_every_other_participant_is_derived_as_before(dbs, built):
    clean, edited = dbs
    others = _adpp(edited, "SUBJID <> '01-001'")
    assert others and others == _adpp(clean, "SUBJID <> '01-001'")


def test_pk_summary_counts_one_participant_fewer_where_they_had_a_value(dbs, built):
    clean, edited = dbs
    had = dict(clean.execute("SELECT PARAMCD, AVAL IS NOT NULL FROM analysis.adpp WHERE SUBJID = '01-001'").fetchall())
    assert had == {"CMAX": True, "TMAX": True, "AUC28": False, "AUCLAST": True, "TLAST": True, "CLAST": True,
                   "LAMZ": True, "THALF": True}  # no sample on or after day 28: AUC28 was NULL already
    sql = "SELECT PARAMCD, DOSE, N FROM analysis.pk_summary ORDER BY PARAMN, DOSEN"
    before = {(p, d): n for p, d, n in clean.execute(sql).fetchall()}
    after = {(p, d): n for p, d, n in edited.execute(sql).fetchall()}
    assert set(after) == set(before)
    expected = {(p, d): n - (1 if d in ("DL1", "TOTAL") and had[p] else 0) for (p, d), n in before.items()}
    assert after == expected
    assert (before[("CMAX", "DL1")], after[("CMAX", "DL1")]) == (4, 3)
    # the other dose levels' rows are identical, statistics included
    other = "SELECT * FROM analysis.pk_summary WHERE DOSE NOT IN ('DL1', 'TOTAL') ORDER BY PARAMN, DOSEN"
    assert edited.execute(other).fetchall() == clean.execute(other).fetchall()


def test_the_rule_names_exactly_that_participant_and_record(dbs, built, cfg):
    clean, edited = dbs
    rule = RULES_BY_ID["XF-PC-SAME-DAY"]
    assert run_rule(clean, rule, cfg) == []
    assert run_rule(edited, rule, cfg) == [(
        "01-001", "PCDAT=2024-07-26",
        "PK samples D4, D7 share the date 2024-07-26 (day 4, NCA time 4): the NCA takes one sample per day, "
        "so no PK parameters are derived for the participant",
    )]
    assert (rule.severity, rule.form, rule.asset) == ("WARN", "pc", "analysis/pharmacokinetics")


def test_the_derive_step_reports_who_and_why(dbs, cfg):
    """The PK builder of the derive step: metadata and log name the participant and the reason."""
    from assets.derive import DERIVATIONS

    [pk] = [d for d in DERIVATIONS if d.spec.key.path == ["analysis", "pharmacokinetics"]]

    class Log:
        def __init__(self):
            self.lines = []

        def info(self, message):
            self.lines.append(message)

    trial = SimpleNamespace(cfg=cfg)
    log = Log()
    meta = pk.build(trial, dbs[1], log)
    assert meta["nca_not_derived"] == 1 and meta["nca_not_derived_reasons"] == f"01-001: {REASON}"
    assert meta["dagster/row_count"] == meta["adpp"] > 0
    assert log.lines == [f"PK: NCA parameters of 01-001 not derived (analysis.adpp AVAL NULL): {REASON}"]
    clean_log = Log()
    clean_meta = pk.build(trial, dbs[0], clean_log)
    assert (clean_meta["nca_not_derived"], clean_meta["nca_not_derived_reasons"], clean_log.lines) == (0, "none", [])
