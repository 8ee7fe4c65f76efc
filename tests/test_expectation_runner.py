"""Real Great Expectations runs of the generated suites (clinical.expectation_runner).

GX costs ~2-3 s to import; every test here shares one import and one cached ephemeral context
(module-scoped ``gx_ready`` fixture, and ``xdist_group`` when pytest-xdist is installed, so that
``-n auto --dist loadgroup`` keeps them in one worker process).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import polars as pl
import pytest

from clinical import expectation_runner as runner
from clinical.crf import form, study_codelists
from clinical.study import load_study

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.usefixtures("gx_ready")]
if importlib.util.find_spec("xdist") is not None:
    pytestmark.append(pytest.mark.xdist_group("great_expectations"))


@pytest.fixture(scope="module")
def gx_ready():
    runner.warm_up()


@pytest.fixture(scope="module")
def cfg():
    return load_study(ROOT / "studies" / "im83.yaml")


@pytest.fixture(scope="module")
def codelists(cfg):
    return study_codelists(cfg)


def suite_for(form_id: str, codelists) -> dict:
    return runner.resolve_suite(runner.load_suite(ROOT / "expectations" / f"{form_id}.json"), codelists)


def frame(rows: list[dict], form_id: str) -> pl.DataFrame:
    cols = [f.name for f in form(form_id).loaded_fields]
    return pl.DataFrame([{c: r.get(c) for c in cols} for r in rows], schema={c: pl.String for c in cols})


def ae_rows() -> list[dict]:
    base = dict(
        AETERM="Cytokine release syndrome",
        AEDECOD="Cytokine release syndrome",
        AEBODSYS="Immune system disorders",
        AECAT="CRS",
        AESTDAT="2025-03-01",
        AEENDAT="2025-03-04",
        AETOXGR="2",
        AESER="N",
        AEREL="PROBABLE",
        AEOUT="RECOVERED/RESOLVED",
        AEDLT="N",
        AEFEVER="Y",
        AEHYPOT="NO VASOPRESSOR",
        AEHYPOX="LOW FLOW",
    )
    return [
        {**base, "SUBJID": "01-001", "AESPID": "1"},
        {**base, "SUBJID": "01-001", "AESPID": "2", "AECAT": "ICANS", "AETERM": "ICANS", "AEFEVER": None,
         "AEHYPOT": None, "AEHYPOX": None, "AEICE": "7", "AECONSC": "AWAKENS TO VOICE", "AESEIZ": "NONE",
         "AEMOTOR": "N", "AEEDEMA": "NONE", "AETOXGR": "1"},
        {**base, "SUBJID": "01-002", "AESPID": "1", "AECAT": "OTHER", "AETERM": "Neutropenia",
         "AESTDAT": "2025-03", "AEENDAT": None, "AETOXGR": "4", "AESER": "Y", "AEFEVER": None, "AEHYPOT": None,
         "AEHYPOX": None, "AEOUT": "NOT RECOVERED/NOT RESOLVED"},
        {**base, "SUBJID": "01-003", "AESPID": "1", "AESTDAT": "2024", "AETOXGR": "5", "AEOUT": "FATAL",
         "AEDLT": "Y", "AESER": "Y", "AEENDAT": "2024-02-29"},
    ]


def by_rule(outcomes) -> dict[str, runner.ExpectationOutcome]:
    return {o.rule_id: o for o in outcomes}


def failures(outcomes) -> dict[str, runner.ExpectationOutcome]:
    return {o.rule_id: o for o in outcomes if not o.success}


def test_valid_ae_frame_passes_every_expectation(codelists):
    suite = suite_for("ae", codelists)
    outcomes = runner.run_suite(suite, frame(ae_rows(), "ae"))
    assert [o.rule_id for o in outcomes] == [e["meta"]["rule_id"] for e in suite["expectations"]]
    assert failures(outcomes) == {}
    assert not any(o.errored for o in outcomes)
    grade = by_rule(outcomes)["GX-AE-AETOXGR-RANGE"]
    assert (grade.severity, grade.expectation_type, grade.column) == ("WARN", "expect_column_values_to_be_between", "AETOXGR")
    assert grade.element_count == 4 and grade.unexpected_count == 0


def _one_failure(codelists, form_id: str, rows: list[dict], rule_id: str) -> runner.ExpectationOutcome:
    fails = failures(runner.run_suite(suite_for(form_id, codelists), frame(rows, form_id)))
    assert set(fails) == {rule_id}, {k: (v.unexpected_count, v.examples) for k, v in fails.items()}
    return fails[rule_id]


def test_grade_7_fails_the_range_rule(codelists):
    rows = ae_rows()
    rows[2]["AETOXGR"] = "7"
    o = _one_failure(codelists, "ae", rows, "GX-AE-AETOXGR-RANGE")
    assert (o.severity, o.unexpected_count, o.element_count) == ("WARN", 1, 4)
    assert o.examples == ["7"]  # raw text, not the cast 7.0
    assert o.rows == ["SUBJID=01-002, AESPID=1"] and o.row_indices == [2]


def test_non_numeric_grade_fails_format_not_range(codelists):
    rows = ae_rows()
    rows[0]["AETOXGR"] = "G3"
    o = _one_failure(codelists, "ae", rows, "GX-AE-AETOXGR-FORMAT")
    assert (o.severity, o.unexpected_count, o.examples) == ("ERROR", 1, ["G3"])


def test_missing_aeterm_fails_notnull_and_names_the_row(codelists):
    rows = ae_rows()
    rows[1]["AETERM"] = None
    o = _one_failure(codelists, "ae", rows, "GX-AE-AETERM-NOTNULL")
    assert (o.severity, o.unexpected_count) == ("ERROR", 1)
    assert o.examples == ["SUBJID=01-001, AESPID=2"]


def test_duplicated_key_fails_the_key_rule(codelists):
    rows = ae_rows()
    rows.append({**rows[0], "AETERM": "Fever"})
    o = _one_failure(codelists, "ae", rows, "GX-AE-KEY")
    assert o.expectation_type == "expect_compound_columns_to_be_unique"
    # GX counts every row of a duplicated key: both rows are unexpected.
    assert (o.severity, o.unexpected_count, o.element_count) == ("ERROR", 2, 5)
    assert o.examples == ["SUBJID=01-001, AESPID=1"] * 2
    assert o.row_indices == [0, 4]


def test_bad_dates_fail_the_format_rule(codelists):
    rows = ae_rows()
    rows[0]["AESTDAT"] = "2025-02-30"
    rows[3]["AESTDAT"] = "25/03/2025"
    o = _one_failure(codelists, "ae", rows, "GX-AE-AESTDAT-FORMAT")
    assert (o.severity, o.unexpected_count) == ("ERROR", 2)
    assert o.examples == ["2025-02-30", "25/03/2025"]
    assert o.rows == ["SUBJID=01-001, AESPID=1", "SUBJID=01-003, AESPID=1"]


def test_partial_date_rejected_where_not_allowed(codelists):
    rows = [{"SUBJID": "01-001", "EXSTDAT": "2025-03", "DOSELVL": "DL1", "EXDOSE": "510000000"}]
    o = _one_failure(codelists, "inf", rows, "GX-INF-EXSTDAT-FORMAT")
    assert o.examples == ["2025-03"]


def test_dose_level_not_in_the_configuration(codelists, cfg):
    rows = [
        {"SUBJID": "01-001", "EXSTDAT": "2025-03-10", "DOSELVL": cfg.dose_ids[0], "EXDOSE": "500000000"},
        {"SUBJID": "01-002", "EXSTDAT": "2025-04-10", "DOSELVL": "DL9", "EXDOSE": "1000000000.0"},
    ]
    o = _one_failure(codelists, "inf", rows, "GX-INF-DOSELVL-CODELIST")
    assert (o.severity, o.unexpected_count, o.examples, o.rows) == ("ERROR", 1, ["DL9"], ["SUBJID=01-002"])


def test_optional_dose_level_outside_the_configuration_is_still_an_error(codelists):
    rows = [
        {"SUBJID": "01-001", "RFICDAT": "2025-01-10", "ENRLYN": "Y", "ENRLDAT": "2025-01-20", "DOSELVL": "DL9"},
        {"SUBJID": "01-002", "RFICDAT": "2025-01-11", "ENRLYN": "N"},
    ]
    o = _one_failure(codelists, "enrol", rows, "GX-ENROL-DOSELVL-CODELIST")
    assert (o.severity, o.examples) == ("ERROR", ["DL9"])


def test_optional_fixed_codelist_is_a_warning(codelists):
    rows = ae_rows()
    rows[0]["AEHYPOX"] = "CPAP"
    o = _one_failure(codelists, "ae", rows, "GX-AE-AEHYPOX-CODELIST")
    assert (o.severity, o.examples) == ("WARN", ["CPAP"])


def test_missing_column_is_reported_and_dependent_rules_error(codelists):
    df = frame(ae_rows(), "ae").drop("AETOXGR").with_columns(pl.lit("x").alias("EXTRA"))
    fails = failures(runner.run_suite(suite_for("ae", codelists), df))
    cols = fails.pop("GX-AE-COLUMNS")
    assert not cols.errored and cols.unexpected_count == 2
    assert cols.examples == ["unexpected column: EXTRA", "missing column: AETOXGR"]
    assert set(fails) == {"GX-AE-AETOXGR-NOTNULL", "GX-AE-AETOXGR-FORMAT", "GX-AE-AETOXGR-RANGE"}
    assert all(o.errored and "AETOXGR" in (o.error_message or "") for o in fails.values())


def test_empty_form_passes(codelists):
    outcomes = runner.run_suite(suite_for("ae", codelists), frame([], "ae"))
    assert failures(outcomes) == {}


def test_resolve_suite_replaces_placeholders_and_run_refuses_unresolved(codelists, cfg):
    raw = runner.load_suite(ROOT / "expectations" / "inf.json")
    resolved = runner.resolve_suite(raw, codelists)
    value_sets = {e["meta"]["rule_id"]: e["kwargs"].get("value_set") for e in resolved["expectations"]}
    assert value_sets["GX-INF-DOSELVL-CODELIST"] == cfg.dose_ids
    assert {e["kwargs"].get("value_set") for e in raw["expectations"]} >= {"@dose_levels"}  # input untouched
    with pytest.raises(ValueError, match="unresolved"):
        runner.run_suite(raw, frame([], "inf"))
    with pytest.raises(KeyError, match="@dose_levels"):
        runner.resolve_suite(raw, type(codelists)({}))


def test_examples_are_capped_at_20(codelists):
    rows = [{**ae_rows()[0], "AESPID": str(i), "AESER": "maybe"} for i in range(1, 31)]
    o = _one_failure(codelists, "ae", rows, "GX-AE-AESER-CODELIST")
    assert o.unexpected_count == 30 and len(o.examples) == 20 and len(o.rows) == 20


# --------------------------------------------------------------------------------------------------
# Large frames: GX validates the suspect rows and a sample; the outcome must be GX's on the whole frame


def _big_ae(n: int = 60) -> list[dict]:
    base = ae_rows()[0]
    return [{**base, "SUBJID": f"01-{i // 5 + 1:03d}", "AESPID": str(i % 5 + 1)} for i in range(n)]


def _plain(outcomes):
    import dataclasses

    return [dataclasses.replace(o, gx_rows=None) for o in outcomes]


@pytest.mark.parametrize(
    "damage",
    [
        {},  # nothing wrong
        {7: {"AETOXGR": "7"}, 31: {"AETOXGR": "G3"}},  # range (numeric copy) and format
        {3: {"AETERM": None}, 44: {"AESER": "maybe"}, 50: {"AESTDAT": "2025-02-30"}},  # not-null, codelist, date
        {10: {"AESPID": "1", "SUBJID": "01-001"}},  # duplicated key (compound unique)
        {i: {"AESER": "maybe"} for i in range(0, 60, 2)},  # many failures: examples capped at 20
    ],
)
def test_reduced_frame_gives_the_whole_frame_outcome(codelists, monkeypatch, damage):
    rows = _big_ae()
    for i, change in damage.items():
        rows[i] = {**rows[i], **change}
    suite = suite_for("ae", codelists)
    df = frame(rows, "ae")
    whole = runner.run_suite(suite, df)
    assert whole[0].gx_rows == len(rows)
    monkeypatch.setattr(runner, "FULL_GX_ROWS", 10)
    monkeypatch.setattr(runner, "SAMPLE_ROWS", 5)
    reduced = runner.run_suite(suite, df)
    assert reduced[0].gx_rows < len(rows)  # GX saw the suspect rows and the sample only
    assert _plain(reduced) == _plain(whole)


def test_reduced_frame_falls_back_when_the_prefilter_misses_a_row(codelists, monkeypatch):
    rows = _big_ae()
    rows[0] = {**rows[0], "AESER": "maybe"}  # row 0 is always in the sample
    suite = suite_for("ae", codelists)
    df = frame(rows, "ae")
    monkeypatch.setattr(runner, "FULL_GX_ROWS", 10)
    monkeypatch.setattr(runner, "SAMPLE_ROWS", 5)
    real = runner._suspect

    def blind(exp, fr):  # a pre-filter that misses every failing value
        return pl.lit(False) if exp["meta"]["rule_id"] == "GX-AE-AESER-CODELIST" else real(exp, fr)

    monkeypatch.setattr(runner, "_suspect", blind)
    outcomes = runner.run_suite(suite, df)
    assert outcomes[0].gx_rows == len(rows)  # the check caught it: GX validated the whole frame
    o = by_rule(outcomes)["GX-AE-AESER-CODELIST"]
    assert (o.success, o.unexpected_count, o.row_indices) == (False, 1, [0])


def test_the_suite_worker_gives_the_same_outcomes_and_a_dead_worker_falls_back(codelists):
    """GX in the worker process: the outcomes equal those of run_suite here; if the worker dies,
    outcomes_of runs the suite in this process."""
    import os
    import signal

    suite = suite_for("ae", codelists)
    rows = ae_rows()
    rows[2]["AETOXGR"] = "7"
    rows[0]["AESTDAT"] = "2025-13-45"
    data = frame(rows, "ae")
    here = runner.run_suite(suite, data)
    try:
        worker = runner.start_worker()
        assert worker is not None and runner.start_worker() is worker and runner.worker_running()
        future = runner.submit_suite(suite, data)
        assert runner.outcomes_of(future, suite, data) == here
        assert any(not o.success for o in here)
        [pid] = worker.pids()
        assert pid != os.getpid()
        os.kill(pid, signal.SIGKILL)
        late = runner.submit_suite(suite, data)
        assert runner.outcomes_of(late, suite, data) == here
    finally:
        runner.stop_worker()
    assert not runner.worker_running() and runner.submit_suite(suite, data) is None


def test_the_worker_gets_only_the_rows_gx_validates_and_gives_the_whole_frame_outcome(codelists, monkeypatch):
    """Above FULL_GX_ROWS the pre-filter runs in the caller and only the suspect and sampled rows
    travel to the worker; the outcome is still GX's on the whole frame, also when the pre-filter
    misses a row (the worker then validates the whole frame)."""
    rows = _big_ae()
    rows[7] = {**rows[7], "AETOXGR": "7"}
    rows[0] = {**rows[0], "AESER": "maybe"}
    suite = suite_for("ae", codelists)
    df = frame(rows, "ae")
    whole = runner.run_suite(suite, df)
    monkeypatch.setattr(runner, "FULL_GX_ROWS", 10)
    monkeypatch.setattr(runner, "SAMPLE_ROWS", 5)
    task = runner.prepare_suite(suite, df)
    assert task.positions is not None and task.frame.height < len(rows) and task.n_rows == len(rows)
    try:
        assert runner.start_worker() is not None
        got = runner.outcomes_of(runner.submit_suite(suite, df), suite, df)
        assert _plain(got) == _plain(whole) and got[0].gx_rows < len(rows)
        real = runner._suspect
        monkeypatch.setattr(  # a pre-filter that misses the failing value: the worker's check catches it
            runner, "_suspect", lambda e, fr: pl.lit(False) if e["meta"]["rule_id"] == "GX-AE-AESER-CODELIST" else real(e, fr)
        )
        again = runner.outcomes_of(runner.submit_suite(suite, df), suite, df)
        assert _plain(again) == _plain(whole) and again[0].gx_rows == len(rows)
    finally:
        runner.stop_worker()


def test_the_worker_loads_scipy_and_altair_only_when_used():
    """The worker defers GX's unused heavy imports; a deferred module still works when read."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from clinical import expectation_runner as r\n"
        "r._defer_imports(r.DEFERRED_IMPORTS)\n"
        "r.warm_up()\n"
        "lazy = sorted(n for n in ('scipy.stats', 'altair') if type(sys.modules[n]).__name__ == '_LazyModule')\n"
        "print(lazy, round(float(sys.modules['scipy.stats'].norm.cdf(0)), 2))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.stdout.split("\n")[0] == "['altair', 'scipy.stats'] 0.5"
