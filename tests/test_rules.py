"""Cross-form and protocol rules (clinical/rules.py): every rule passes on the clean demo data and
fails on a fixture that breaks it, naming the participant and the record; boundary cases pass.

The fixture is the demo export (seed 83, data cut 2025-12-31) loaded and derived without Dagster
(ingest, ADSL, ADAE, CRS/ICANS, PK, eligibility). A case edits the staged forms with SQL, derives
the analysis tables again and runs the rule.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pytest

from clinical.adae import build_adae
from clinical.adsl import build_adsl
from clinical.crf import FORMS
from clinical.crs_icans import build_crs_icans
from clinical.eligibility import build_eligibility
from clinical.ingest import ingest_settings
from clinical.pk import build_pk
from clinical.rules import RULES, RULES_BY_ID, rule_parameters, run_rule
from clinical.simulate import simulate, write_export
from clinical.sources import load_form
from clinical.study import StudyConfig, load_study

ROOT = Path(__file__).resolve().parent.parent
STUDY = ROOT / "studies" / "im83.yaml"
SEED = 83
CUT = dt.date(2025, 12, 31)
EXPORT_ID = "EXP-TEST"


def derive(con: duckdb.DuckDBPyConnection, cfg: StudyConfig, cut: dt.date = CUT) -> None:
    """The analysis tables the rules read, from the staged forms."""
    build_adsl(con, cfg, cut)
    build_adae(con, cfg)
    build_crs_icans(con, cfg)
    build_pk(con, cfg)
    build_eligibility(con, cfg)


def load_export(con: duckdb.DuckDBPyConnection, cfg: StudyConfig, export: Path, export_id: str = EXPORT_ID) -> None:
    settings = ingest_settings(cfg)
    for f in FORMS:
        load_form(con, f, export / f.file, export_id, settings)


def build_fixture_db(path: Path, cfg: StudyConfig, seed: int = SEED, cut: dt.date = CUT) -> Path:
    """A trial.duckdb with raw, stage and the analysis tables of a simulated export."""
    export = path.parent / f"export-{seed}-{cut}"
    write_export(simulate(cfg, seed=seed, data_cut=cut), export)
    con = duckdb.connect(str(path))
    try:
        load_export(con, cfg, export)
        derive(con, cfg, cut)
    finally:
        con.close()
    return path


@pytest.fixture(scope="module")
def cfg() -> StudyConfig:
    return load_study(STUDY)


@pytest.fixture(scope="module")
def clean_db(tmp_path_factory, cfg) -> Path:
    return build_fixture_db(tmp_path_factory.mktemp("rules") / "clean.duckdb", cfg)


@pytest.fixture
def broken(clean_db, tmp_path, cfg):
    """Apply SQL edits to a copy of the clean fixture, derive again, return the open connection."""
    cons = []

    def make(*statements: str, config: StudyConfig | None = None) -> duckdb.DuckDBPyConnection:
        path = tmp_path / f"case{len(cons)}.duckdb"
        shutil.copyfile(clean_db, path)
        con = duckdb.connect(str(path))
        cons.append(con)
        for sql in statements:
            con.execute(sql)
        derive(con, config or cfg)
        return con

    yield make
    for con in cons:
        con.close()


@dataclass(frozen=True)
class Case:
    rule: str
    edits: tuple[str, ...]
    # (SUBJID, RECORD_KEY) of the failing records the edit must produce (exactly these).
    expected: tuple[tuple[str, str], ...] = ()
    detail: str = ""  # a fragment the DETAIL of the first failing record contains
    expected_sql: str = ""  # alternatively: a query over the edited database giving the expected keys
    id: str = field(default="")


BREAKING = [
    Case("XF-SUBJ-NOT-IN-DM", ("UPDATE stage.cm SET SUBJID = '01-099' WHERE SUBJID = '01-001' AND CMSPID = 1",),
         (("01-099", "cm"),), "in form cm but not in demographics"),
    Case("XF-INF-NOT-ENROLLED", ("UPDATE stage.enrol SET DOSELVL = NULL WHERE SUBJID = '01-001'",),
         (("01-001", ""),), "not enrolled with a dose level"),
    Case("XF-INF-NOT-ENROLLED", ("UPDATE stage.enrol SET ENRLYN = 'N' WHERE SUBJID = '01-003'",),
         (("01-003", ""),), id="enrlyn-n"),
    # Enrolled, not infused (leukapheresis not done), dose level blank.
    Case("XF-ENROL-NO-DOSE", ("UPDATE stage.enrol SET DOSELVL = NULL WHERE SUBJID = '01-004'",),
         (("01-004", ""),), "enrolled (ENRLYN = Y, enrolment date 2024-08-18, consent 2024-08-11) without an assigned "
         "dose level (DOSELVL blank)"),
    Case("XF-INF-NO-PRIOR-STEP", ("UPDATE stage.apher SET PRYN = 'N' WHERE SUBJID = '01-001'",),
         (("01-001", ""),), "infused on 2024-07-22 but leukapheresis not done (apher PRYN = N)"),
    Case("XF-INF-NO-PRIOR-STEP",
         ("DELETE FROM stage.apher WHERE SUBJID = '01-001'",
          "UPDATE stage.mfg SET RELSTAT = 'FAILED' WHERE SUBJID = '01-003'",
          "DELETE FROM stage.ld WHERE SUBJID = '01-003'",
          "DELETE FROM stage.mfg WHERE SUBJID = '01-005'"),
         (("01-001", ""), ("01-003", ""), ("01-005", "")), "infused on 2024-07-22 but no leukapheresis record (apher)",
         id="missing-records-and-failed-release"),
    Case("XF-CHRON-CONSENT-APHER",
         ("UPDATE stage.enrol SET RFICDAT = DATE '2024-06-30' WHERE SUBJID = '01-001'",),
         (("01-001", ""),), "leukapheresis 2024-06-29 before informed consent 2024-06-30"),
    Case("XF-CHRON-APHER-LD", ("UPDATE stage.apher SET PRSTDAT = DATE '2024-07-18' WHERE SUBJID = '01-001'",),
         (("01-001", ""),), "lymphodepletion start 2024-07-17 before leukapheresis 2024-07-18"),
    Case("XF-CHRON-LD-INF", ("UPDATE stage.inf SET EXSTDAT = DATE '2024-07-19' WHERE SUBJID = '01-001'",),
         (("01-001", ""),), "infusion 2024-07-19 not after lymphodepletion end 2024-07-19"),
    Case("XF-CHRON-INF-EOS", ("UPDATE stage.ds SET DSSTDAT = DATE '2024-08-26' WHERE SUBJID = '01-003'",),
         (("01-003", ""),), "end of study 2024-08-26 (PROGRESSIVE DISEASE) before infusion 2024-08-27"),
    Case("XF-DS-DEATH-DATE", ("UPDATE stage.ds SET DTHDAT = NULL WHERE SUBJID = '01-001'",),
         (("01-001", ""),), "disposition DEATH (end of study 2024-08-16) without a date of death (DTHDAT)"),
    Case("XF-DS-DEATH-DATE", ("UPDATE stage.ds SET DTHDAT = DATE '2024-12-04' WHERE SUBJID = '01-003'",),
         (("01-003", ""),), "date of death 2024-12-04 recorded with disposition PROGRESSIVE DISEASE (end of study "
         "2024-12-04), not DEATH", id="death-date-other-disposition"),
    Case("XF-CHRON-AFTER-DEATH", ("UPDATE stage.cm SET CMSTDAT = '2024-09' WHERE SUBJID = '01-001' AND CMSPID = 1",),
         (("01-001", "cm CMSPID=1"),), "CMSTDAT 2024-09 after death on 2024-08-16"),
    Case("XF-CHRON-AFTER-DEATH",
         ("UPDATE stage.lb SET LBDAT = DATE '2024-08-20' WHERE SUBJID = '01-001' AND VISIT = 'D14'",),
         (("01-001", "lb VISIT=D14"),), "LBDAT 2024-08-20 after death", id="lb-visit-is-one-record"),
    Case("XF-LD-DAYS",
         (("UPDATE stage.ld SET EXSTDAT = DATE '2024-07-16' WHERE SUBJID = '01-001' AND EXTRT = 'CYCLOPHOSPHAMIDE' "
          "AND EXSTDAT = DATE '2024-07-17'"),),
         (("01-001", "EXTRT=CYCLOPHOSPHAMIDE"),), "CYCLOPHOSPHAMIDE given on day(s) outside -5 to -3: 2024-07-16 (day -6)"),
    Case("XF-LD-DOSE", ("UPDATE stage.ld SET EXDOSE = 22.5 WHERE SUBJID = '01-001' AND EXTRT = 'FLUDARABINE'",),
         (("01-001", "EXTRT=FLUDARABINE, EXSTDAT=2024-07-17"), ("01-001", "EXTRT=FLUDARABINE, EXSTDAT=2024-07-18"),
          ("01-001", "EXTRT=FLUDARABINE, EXSTDAT=2024-07-19")), "FLUDARABINE 22.5 mg/m2 on 2024-07-17"),
    Case("XF-LD-DOSE",
         (("UPDATE stage.ld SET EXDOSU = 'mg' WHERE SUBJID = '01-001' AND EXTRT = 'CYCLOPHOSPHAMIDE' "
          "AND EXSTDAT = DATE '2024-07-18'"),),
         (("01-001", "EXTRT=CYCLOPHOSPHAMIDE, EXSTDAT=2024-07-18"),), "298.9 mg on", id="unit"),
    Case("XF-DOSE-TOLERANCE", ("UPDATE stage.inf SET EXDOSE = 7.5e8 WHERE SUBJID = '01-001'",),
         (("01-001", ""),), "deviate 50.0% from assigned DL1"),
    Case("XF-DOSE-TOLERANCE", ("UPDATE stage.inf SET DOSELVL = 'DL2', EXDOSE = 1.0e9 WHERE SUBJID = '01-003'",),
         (("01-003", ""),), "from assigned DL1", id="infused-at-other-level"),
    Case("XF-CHRON-AE-CONSENT", ("UPDATE stage.ae SET AESTDAT = '2024-05' WHERE SUBJID = '01-001' AND AESPID = 1",),
         (("01-001", "AESPID=1"),), "onset 2024-05 before informed consent 2024-06-15"),
    Case("XF-CHRON-AE-END", ("UPDATE stage.ae SET AEENDAT = '2024-07-01' WHERE SUBJID = '01-001' AND AESPID = 2",),
         (("01-001", "AESPID=2"),), "ends 2024-07-01 before its onset 2024-07-24"),
    Case("XF-DLT-OUTSIDE-WINDOW", ("UPDATE stage.ae SET AEDLT = 'Y' WHERE SUBJID = '01-003' AND AESPID = 1",),
         (("01-003", "AESPID=1"),), "flagged DLT with onset on protocol day -2"),
    Case("XF-DLT-OUTSIDE-WINDOW", ("UPDATE stage.ae SET AEDLT = 'Y' WHERE SUBJID = '01-003' AND AESPID = 8",),
         (("01-003", "AESPID=8"),), "protocol day 35", id="after-window"),
    Case("XF-G5-NO-DEATH", ("UPDATE stage.ae SET AETOXGR = 5 WHERE SUBJID = '01-003' AND AESPID = 8",),
         (("01-003", "AESPID=8"),), "is grade 5 but no death is recorded"),
    Case("XF-DEATH-NO-G5", ("UPDATE stage.ds SET DTHCAUS = 'Sepsis' WHERE SUBJID = '01-001'",),
         (("01-001", ""),), "death on 2024-08-16 (cause: Sepsis) without a grade-5 AE"),
    Case("XF-FATAL-NOT-SERIOUS", ("UPDATE stage.ae SET AEOUT = 'FATAL' WHERE SUBJID = '01-003' AND AESPID = 8",),
         (("01-003", "AESPID=8"),), "has outcome FATAL but is not serious"),
    Case("XF-AE-NOT-CODED", ("UPDATE stage.ae SET AEBODSYS = NULL WHERE SUBJID = '01-001' AND AESPID = 4",),
         (("01-001", "AESPID=4"),), "is not MedDRA-coded: missing AEBODSYS"),
    Case("XF-AE-NO-CAUSALITY", ("UPDATE stage.ae SET AEREL = NULL WHERE SUBJID = '01-001' AND AESPID = 4",),
         (("01-001", "AESPID=4"),), "has no relationship to IM83 recorded"),
    Case("XF-CRS-GRADE", ("UPDATE stage.ae SET AETOXGR = 3 WHERE SUBJID = '01-001' AND AESPID = 3",),
         (("01-001", "AESPID=3"),), "CRS AE 3 graded 3 by the investigator, 1 by ASTCT"),
    Case("XF-ICANS-GRADE", ("UPDATE stage.ae SET AEICE = 2 WHERE SUBJID = '01-001' AND AESPID = 5",),
         (("01-001", "AESPID=5"),), "ICANS AE 5 graded 1 by the investigator, 3 by ASTCT"),
    Case("XF-PC-NO-TIMEPOINT", ("UPDATE stage.pc SET PCTPT = 'LEUKAPHERESIS' WHERE SUBJID = '01-001' AND PCTPT = 'D7'",),
         (("01-001", "PCDAT=2024-07-29"),), "PK sample of 2024-07-29 (day 7) has time point LEUKAPHERESIS"),
    Case("XF-PC-BEFORE-INFUSION", ("UPDATE stage.pc SET PCDAT = DATE '2024-07-19' WHERE SUBJID = '01-001' AND PCTPT = 'D7'",),
         (("01-001", "PCTPT=D7"),), "PK sample D7 (protocol day 7) dated 2024-07-19, before infusion 2024-07-22 (day -3)"),
    # The D7 sample dated on D4's date: two levels at NCA time 4 (derive does not fail: tests/test_pk_not_derived.py).
    Case("XF-PC-SAME-DAY", ("UPDATE stage.pc SET PCDAT = PCDAT - 3 WHERE SUBJID = '01-001' AND PCTPT = 'D7'",),
         (("01-001", "PCDAT=2024-07-26"),),
         "PK samples D4, D7 share the date 2024-07-26 (day 4, NCA time 4): the NCA takes one sample per day"),
    Case("XF-LB-RANGE-ORDER",
         ("UPDATE stage.lb SET LBORNRLO = 50, LBORNRHI = 9 WHERE SUBJID = '01-001' AND VISIT = 'D7' AND LBTESTCD = 'ALT'",),
         (("01-001", "VISIT=D7, LBTESTCD=ALT"),),
         "ALT at D7 (sample 2024-07-29, result 34.0 U/L): normal range lower limit 50.0 above upper limit 9.0"),
    Case("XF-LB-RANGE-ORDER",
         ("UPDATE stage.lb SET LBORNRLO = NULL, LBORNRHI = 0 WHERE SUBJID = '01-003' AND VISIT = 'D1' AND LBTESTCD = 'BILI'",),
         (("01-003", "VISIT=D1, LBTESTCD=BILI"),), "normal range upper limit 0.0 not above 0 (lower limit blank)",
         id="upper-limit-zero"),
    Case("XF-LB-BASELINE-LATE",
         ("UPDATE stage.lb SET LBDAT = DATE '2024-07-17' WHERE SUBJID = '01-001' AND VISIT = 'SCREENING'",),
         (("01-001", "VISIT=SCREENING, LBDAT=2024-07-17"),),
         "SCREENING lab sample (12 test(s)) dated 2024-07-17, on or after the start of lymphodepletion 2024-07-17"),
    Case("XF-ELIG-DEVIATION",
         ("UPDATE stage.lb SET LBORRES = 1.2 WHERE SUBJID = '01-001' AND VISIT = 'SCREENING' AND LBTESTCD = 'NEUT'",),
         (("01-001", "CRIT=ANC"),), "inclusion criterion ANC (ANC >= 1.5 x10^9/L): screening value"),
    Case("XF-ELIG-DEVIATION",
         ("UPDATE stage.lb SET LBORNRHI = 10 WHERE SUBJID = '01-001' AND VISIT = 'SCREENING' AND LBTESTCD = 'ALT'",),
         (("01-001", "CRIT=ALT"),), "required <= 2.5 x ULN (= 25 U/L)", id="xuln-from-lab-range"),
    Case("XF-ELIG-NOT-EVALUABLE",
         ("DELETE FROM stage.lb WHERE SUBJID = '01-003' AND VISIT = 'SCREENING' AND LBTESTCD = 'PLAT'",),
         (("01-003", "CRIT=PLAT"),), "cannot be evaluated: no screening value"),
    Case("XF-ELIG-NOT-EVALUABLE",
         ("UPDATE stage.lb SET LBORNRHI = NULL WHERE SUBJID = '01-003' AND VISIT = 'SCREENING' AND LBTESTCD = 'BILI'",),
         (("01-003", "CRIT=BILI"),), "no upper limit of normal", id="no-uln"),
    Case("XF-ELIG-IE-DISAGREE", ("UPDATE stage.ie SET IEYN = 'N' WHERE SUBJID = '01-001' AND IETESTCD = 'KPS'",),
         (("01-001", "CRIT=KPS"),), "investigator IEYN = N, screening value 80 against >= 60 % gives Y"),
    Case("XF-ELIG-IE-DISAGREE", ("DELETE FROM stage.ie WHERE SUBJID = '01-003' AND IETESTCD = 'LVEF'",),
         (("01-003", "CRIT=LVEF"),), "no investigator assessment (ie) of criterion LVEF", id="missing-ie"),
]

# Edits that must NOT break the rule: boundaries, partial dates that may be in order, exempt causes.
PASSING = [
    Case("XF-CHRON-AFTER-DEATH", ("UPDATE stage.cm SET CMSTDAT = '2024-08' WHERE SUBJID = '01-001' AND CMSPID = 1",),
         id="partial-month-of-death"),
    Case("XF-CHRON-AFTER-DEATH", ("UPDATE stage.ae SET AEENDAT = '2024-08-16' WHERE SUBJID = '01-001' AND AESPID = 1",),
         id="ends-on-day-of-death"),
    Case("XF-ENROL-NO-DOSE", ("UPDATE stage.enrol SET ENRLYN = 'N', DOSELVL = NULL WHERE SUBJID = '01-004'",),
         id="not-enrolled"),
    # An out-of-specification product released for infusion counts (as in ADSL).
    Case("XF-INF-NO-PRIOR-STEP", ("UPDATE stage.mfg SET RELSTAT = 'OUT OF SPECIFICATION' WHERE SUBJID = '01-001'",),
         id="out-of-specification"),
    Case("XF-CHRON-INF-EOS", ("UPDATE stage.ds SET DSSTDAT = DATE '2024-08-27' WHERE SUBJID = '01-003'",),
         id="end-on-infusion-day"),
    Case("XF-DS-DEATH-DATE", ("UPDATE stage.ds SET DSDECOD = 'DEATH', DTHDAT = DATE '2024-12-04', "
                              "DTHCAUS = 'Disease progression' WHERE SUBJID = '01-003'",), id="death-with-date"),
    Case("XF-LB-RANGE-ORDER",
         ("UPDATE stage.lb SET LBORNRLO = 50, LBORNRHI = 50 WHERE SUBJID = '01-001' AND VISIT = 'D7' AND LBTESTCD = 'ALT'",
          "UPDATE stage.lb SET LBORNRLO = NULL WHERE SUBJID = '01-001' AND VISIT = 'D7' AND LBTESTCD = 'AST'"),
         id="equal-limits-or-one-missing"),
    Case("XF-LB-BASELINE-LATE",
         ("UPDATE stage.lb SET LBDAT = DATE '2024-07-16' WHERE SUBJID = '01-001' AND VISIT = 'SCREENING'",),
         id="the-day-before-lymphodepletion"),
    Case("XF-LD-DOSE", ("UPDATE stage.ld SET EXDOSE = 27.0 WHERE SUBJID = '01-001' AND EXTRT = 'FLUDARABINE'",
                        "UPDATE stage.ld SET EXDOSE = 330.0, EXDOSU = 'MG/M2' WHERE SUBJID = '01-001' AND EXTRT = 'CYCLOPHOSPHAMIDE'"),
         id="exactly-10-percent"),
    Case("XF-DOSE-TOLERANCE", ("UPDATE stage.inf SET EXDOSE = 6.0e8 WHERE SUBJID = '01-001'",
                               "UPDATE stage.inf SET EXDOSE = 4.0e8 WHERE SUBJID = '01-003'"), id="exactly-20-percent"),
    Case("XF-CHRON-AE-CONSENT", ("UPDATE stage.ae SET AESTDAT = '2024-06' WHERE SUBJID = '01-001' AND AESPID = 1",),
         id="partial-month-of-consent"),
    Case("XF-CHRON-AE-CONSENT", ("UPDATE stage.ae SET AESTDAT = '2024-06-15' WHERE SUBJID = '01-001' AND AESPID = 1",),
         id="day-of-consent"),
    Case("XF-CHRON-AE-END", ("UPDATE stage.ae SET AEENDAT = '2024-07' WHERE SUBJID = '01-001' AND AESPID = 2",),
         id="partial-end-month-of-onset"),
    Case("XF-DLT-OUTSIDE-WINDOW", ("UPDATE stage.ae SET AEDLT = 'Y' WHERE SUBJID = '01-003' AND AESPID = 3",),
         id="inside-window"),
    Case("XF-DEATH-NO-G5", ("UPDATE stage.ds SET DTHCAUS = '  disease PROGRESSION ' WHERE SUBJID = '01-001'",),
         id="configured-cause-any-case"),
    Case("XF-PC-NO-TIMEPOINT", ("UPDATE stage.pc SET PCTPT = 'LEUKAPHERESIS' WHERE SUBJID = '01-001' AND PCTPT = 'D0'",),
         id="infusion-day-sample"),
    # A second sample of one date without a result: the NCA drops the missing level, nothing collides.
    # A day-0 sample dated the day before infusion (pre-dose): not a post-infusion time point.
    Case("XF-PC-BEFORE-INFUSION", ("UPDATE stage.pc SET PCDAT = DATE '2024-07-21' WHERE SUBJID = '01-001' AND PCTPT = 'D0'",),
         id="day-0-sample-day-before"),
    Case("XF-PC-SAME-DAY", ("UPDATE stage.pc SET PCDAT = PCDAT - 3, PCORRES = NULL, PCBLQ = NULL "
                            "WHERE SUBJID = '01-001' AND PCTPT = 'D7'",), id="second-sample-without-result"),
    Case("XF-ELIG-DEVIATION",
         ("UPDATE stage.lb SET LBORRES = 1.5 WHERE SUBJID = '01-001' AND VISIT = 'SCREENING' AND LBTESTCD = 'NEUT'",
          ("UPDATE stage.lb SET LBORRES = 25.65, LBORNRHI = 17.1 WHERE SUBJID = '01-001' AND VISIT = 'SCREENING' "
          "AND LBTESTCD = 'BILI'")),
         id="on-the-threshold"),
    Case("XF-ELIG-DEVIATION",
         ("UPDATE stage.sc SET LIVERMET = 'Y' WHERE SUBJID = '01-001'",
          "UPDATE stage.lb SET LBORRES = 200 WHERE SUBJID = '01-001' AND VISIT = 'SCREENING' AND LBTESTCD = 'ALT'",
          "UPDATE stage.ie SET IEYN = 'Y' WHERE SUBJID = '01-001'"),
         id="liver-metastases-limit"),
]


def _case_id(c: Case) -> str:
    return f"{c.rule}-{c.id}" if c.id else c.rule


def _check_rule_ids(cases: list[Case]) -> None:
    unknown = {c.rule for c in cases} - set(RULES_BY_ID)
    assert not unknown, f"cases for rules that do not exist: {unknown}"


def test_every_rule_has_a_breaking_and_the_clean_fixture():
    _check_rule_ids(BREAKING + PASSING)
    missing = [r.id for r in RULES if r.id not in {c.rule for c in BREAKING}]
    assert not missing, f"rules without a fixture that breaks them: {missing}"


@pytest.mark.parametrize("rule", RULES, ids=[r.id for r in RULES])
def test_rule_passes_on_clean_demo(rule, clean_db, cfg):
    con = duckdb.connect(str(clean_db), read_only=True)
    try:
        assert run_rule(con, rule, cfg) == []
    finally:
        con.close()


@pytest.mark.parametrize("case", BREAKING, ids=[_case_id(c) for c in BREAKING])
def test_rule_fails_on_breaking_fixture(case, broken, cfg):
    con = broken(*case.edits)
    failing = run_rule(con, RULES_BY_ID[case.rule], cfg)
    assert [(s, k) for s, k, _ in failing] == sorted(case.expected), failing
    if case.detail:
        assert case.detail in failing[0][2], failing[0][2]


@pytest.mark.parametrize("case", PASSING, ids=[_case_id(c) for c in PASSING])
def test_rule_passes_on_boundary_fixture(case, broken, cfg):
    con = broken(*case.edits)
    assert run_rule(con, RULES_BY_ID[case.rule], cfg) == []


def test_record_key_does_not_change_when_the_value_changes(broken, cfg):
    """The same problem with a different wrong value: same RECORD_KEY (so the same query id)."""
    rule = RULES_BY_ID["XF-DOSE-TOLERANCE"]
    a = run_rule(broken("UPDATE stage.inf SET EXDOSE = 7.5e8 WHERE SUBJID = '01-001'"), rule, cfg)
    b = run_rule(broken("UPDATE stage.inf SET EXDOSE = 9.0e8 WHERE SUBJID = '01-001'"), rule, cfg)
    assert [(s, k) for s, k, _ in a] == [(s, k) for s, k, _ in b] == [("01-001", "")]
    assert a[0][2] != b[0][2]  # the detail shows the value


def test_ld_days_query_survives_a_wrong_correction(broken, cfg):
    """Correcting the date to another wrong day is still the same problem (same RECORD_KEY)."""
    rule = RULES_BY_ID["XF-LD-DAYS"]
    edit = ("UPDATE stage.ld SET EXSTDAT = DATE '{d}' WHERE SUBJID = '01-001' AND EXTRT = 'CYCLOPHOSPHAMIDE' "
            "AND EXSTDAT = DATE '2024-07-17'")
    a = run_rule(broken(edit.format(d="2024-07-16")), rule, cfg)
    b = run_rule(broken(edit.format(d="2024-07-21")), rule, cfg)
    assert [(s, k) for s, k, _ in a] == [(s, k) for s, k, _ in b] == [("01-001", "EXTRT=CYCLOPHOSPHAMIDE")]
    assert "(day -1)" in b[0][2]


def test_thresholds_come_from_the_study_configuration(broken, cfg):
    """The same data judged under another protocol: the rule follows the configuration."""
    edit = ("UPDATE stage.ld SET EXSTDAT = DATE '2024-07-16' WHERE SUBJID = '01-001' AND EXTRT = 'CYCLOPHOSPHAMIDE' "
            "AND EXSTDAT = DATE '2024-07-17'")
    wider = cfg.model_copy(update={"lymphodepletion": cfg.lymphodepletion.model_copy(update={"start_day": -6})})
    con = broken(edit)
    assert run_rule(con, RULES_BY_ID["XF-LD-DAYS"], cfg)
    assert run_rule(con, RULES_BY_ID["XF-LD-DAYS"], wider) == []
    looser = cfg.model_copy(update={"escalation": cfg.escalation.model_copy(update={"dose_tolerance": 0.6})})
    con = broken("UPDATE stage.inf SET EXDOSE = 7.5e8 WHERE SUBJID = '01-001'")
    assert run_rule(con, RULES_BY_ID["XF-DOSE-TOLERANCE"], cfg)
    assert run_rule(con, RULES_BY_ID["XF-DOSE-TOLERANCE"], looser) == []


def test_forms_not_collected_are_not_required(broken, cfg):
    """XF-INF-NO-PRIOR-STEP asks for leukapheresis, release and lymphodepletion only where the study
    collects the form (configuration forms:), as ADSL's population flags do."""
    rule = RULES_BY_ID["XF-INF-NO-PRIOR-STEP"]
    edits = ("DELETE FROM stage.apher", "DELETE FROM stage.mfg", "DELETE FROM stage.ld")
    con = broken(*edits)
    infused = [(s, "") for (s,) in con.execute("SELECT SUBJID FROM stage.inf ORDER BY SUBJID").fetchall()]
    failing = run_rule(con, rule, cfg)
    assert [(s, k) for s, k, _ in failing] == infused
    assert "no leukapheresis record (apher); no product release record (mfg); no lymphodepletion record (ld)" in failing[0][2]
    not_collected = cfg.model_copy(update={"forms": [f.id for f in FORMS if f.id not in ("apher", "mfg", "ld")]})
    con = broken(*edits, config=not_collected)
    assert run_rule(con, rule, not_collected) == []
    only_ld = cfg.model_copy(update={"forms": [f.id for f in FORMS if f.id not in ("apher", "mfg")]})
    assert [d for _, _, d in run_rule(con, rule, only_ld)][0].endswith(
        "but no lymphodepletion record (ld)")


def test_ie_assessments_asked_only_where_ie_is_collected(broken, cfg):
    """XF-ELIG-IE-DISAGREE asks for the investigator's assessment of every criterion only where the
    study collects the ie form; a disagreement with the screening values is asked either way."""
    rule = RULES_BY_ID["XF-ELIG-IE-DISAGREE"]
    con = broken("DELETE FROM stage.ie")
    enrolled = con.execute(
        "SELECT DISTINCT SUBJID FROM analysis.eligibility WHERE ENRLYN = 'Y' ORDER BY SUBJID").fetchall()
    assert len(enrolled) == 16
    failing = run_rule(con, rule, cfg)
    assert sorted({s for s, _, _ in failing}) == [s for (s,) in enrolled]
    assert all(d.startswith("no investigator assessment (ie)") for _, _, d in failing)
    no_ie = cfg.model_copy(update={"forms": [f.id for f in FORMS if f.id != "ie"]})
    con = broken("DELETE FROM stage.ie", config=no_ie)
    assert run_rule(con, rule, no_ie) == []


def test_rules_paste_no_protocol_values(cfg):
    """Doses, days, tolerances, agents, dose levels and visits reach the SQL only as parameters."""
    params = rule_parameters(cfg)
    values = {str(v) for v in (params["ld_start"], params["ld_end"], cfg.escalation.dlt_window_days)}
    values |= {str(params["ld_tolerance"]), str(params["dose_tolerance"])}
    values |= {str(int(d)) for d in params["ld_doses"]} | {f"{c:g}" for c in params["dose_cells"]}
    values |= set(params["ld_agents"]) | set(params["dose_ids"]) | {v for v in params["visit_ids"] if len(v) > 2}
    for rule in RULES:
        tokens = set(re.findall(r"[\w.+-]+", rule.sql))
        pasted = sorted(values & tokens)
        assert not pasted, f"{rule.id} pastes protocol values {pasted} into its SQL"


def test_rule_ids_unique_and_well_formed():
    ids = [r.id for r in RULES]
    assert len(ids) == len(set(ids))
    for r in RULES:
        assert r.severity in ("ERROR", "WARN") and r.id.startswith("XF-") and r.asset.startswith("analysis/")
        assert r.form in {f.id for f in FORMS}


@pytest.mark.parametrize(
    "text, lo, hi",
    [
        ("2024-02-29", dt.date(2024, 2, 29), dt.date(2024, 2, 29)),
        ("2024-02", dt.date(2024, 2, 1), dt.date(2024, 2, 29)),
        ("2023-02", dt.date(2023, 2, 1), dt.date(2023, 2, 28)),
        ("2024", dt.date(2024, 1, 1), dt.date(2024, 12, 31)),
        ("2023-02-29", None, None),
        ("2024-13", None, None),
        ("2024-1-01", None, None),
        ("UNK", None, None),
        (None, None, None),
    ],
)
def test_partial_date_bounds_are_adsls_imputation_range(text, lo, hi):
    """pdate_lo / pdate_hi give the range ADSL imputes within (partial_range with highest 'M')."""
    from clinical.adsl import SETUP_SQL
    from clinical.rules import create_rule_macros

    con = duckdb.connect(":memory:")
    con.execute(SETUP_SQL)
    create_rule_macros(con)
    got = con.execute(
        "SELECT pdate_lo($s), pdate_hi($s), partial_range($s, 'M')[1], partial_range($s, 'M')[2]", {"s": text}
    ).fetchone()
    assert got == (lo, hi, lo, hi)
