"""The rule checks of assets.validate against what the data_queries derivation writes.

The WARN rules of the tables of the ``derive`` step run twice: as the ``derive_rules`` asset checks
and inside ``analysis.data_queries`` (clinical.queries). The two agree on every rule's outcome and
on which records fail, but the table is not a copy of the checks' results: it holds one query per
(rule, participant, record key), with the DETAIL of the records sharing that key joined, while a
check counts and lists every failing record. And a run may check the tables without rebuilding
the query table (the derive step can be subset). So the checks run their own SQL rather than read
their outcome from analysis.data_queries.
"""

import json
import shutil
import sys
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from clinical.queries import OPEN, build_queries
from clinical.rules import RULE_COLUMNS, RULES_BY_ID, check_name, run_rule
from pipelines.resources import DATABASE_NAME, TrialResource

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from test_rules import CUT, EXPORT_ID, STUDY, build_fixture_db, derive  # noqa: E402

# Three failing WARN rules of derive_rules: an AE without its MedDRA codes (one record), and two PK
# samples of one date with time points that are not post-infusion (two records of XF-PC-NO-TIMEPOINT,
# keyed by the sample date: one record key), which the NCA cannot take either (XF-PC-SAME-DAY: that
# participant's PK parameters are not derived, the rest are).
EDITS = (
    "UPDATE stage.ae SET AEBODSYS = NULL WHERE SUBJID = '01-001' AND AESPID = 4",
    "UPDATE stage.pc SET PCTPT = 'LEUKAPHERESIS' WHERE SUBJID = '01-001' AND PCTPT = 'D7'",
    "UPDATE stage.pc SET PCTPT = 'SCREENING', PCDAT = '2024-07-29' WHERE SUBJID = '01-001' AND PCTPT = 'D10'",
)


@pytest.fixture(scope="module")
def trial(tmp_path_factory) -> TrialResource:
    """A trial resource whose run database is the rules' fixture with EDITS, its analysis tables and
    analysis.data_queries derived (as the derive step does before derive_rules runs)."""
    from clinical.study import load_study

    cfg = load_study(STUDY)
    base = tmp_path_factory.mktemp("validate")
    export = base / "export"
    export.mkdir()
    (export / "export.json").write_text(json.dumps({"export_id": EXPORT_ID, "data_cut": CUT.isoformat()}))
    resource = TrialResource(study_config=str(STUDY), export_dir=str(export), output_root=str(base / "out"))
    db = resource.database
    shutil.copyfile(build_fixture_db(base / "clean.duckdb", cfg), db)
    con = duckdb.connect(str(db))
    try:
        for sql in EDITS:
            con.execute(sql)
        derive(con, cfg)
        build_queries(con, cfg, EXPORT_ID, CUT)
    finally:
        con.close()
    assert db.name == DATABASE_NAME
    return resource


def _derive_rules_results(trial: TrialResource) -> dict[str, dg.AssetCheckResult]:
    from assets.validate import checks

    [derive_rules] = [c for c in checks if c.node_def.name == "derive_rules"]
    return {r.check_name: r for r in derive_rules(trial=trial)}


def _open_queries(trial: TrialResource) -> dict[str, list[tuple[str, str, str]]]:
    con = duckdb.connect(str(trial.database), read_only=True)
    try:
        rows = con.execute(
            "SELECT RULE_ID, SUBJID, RECORD_KEY, DETAIL FROM analysis.data_queries WHERE STATUS = ? "
            "ORDER BY ALL", [OPEN]
        ).fetchall()
    finally:
        con.close()
    out: dict[str, list[tuple[str, str, str]]] = {}
    for rule_id, *rest in rows:
        out.setdefault(rule_id, []).append(tuple(rest))
    return out


def test_derive_rules_warn_checks_agree_with_the_query_table(trial):
    """Every WARN check of derive_rules fails exactly when analysis.data_queries has open queries of
    its rule, and its failing records are those queries' participants and record keys."""
    from assets.validate import _rules_by_step

    results = _derive_rules_results(trial)
    queries = _open_queries(trial)
    warn = [r for r in _rules_by_step()["derive_rules"] if r.severity == "WARN"]
    assert warn and set(results) == {check_name(r.id) for r in _rules_by_step()["derive_rules"]}
    for rule in warn:
        result = results[check_name(rule.id)]
        first = result.metadata["first_records"].value
        assert result.severity == dg.AssetCheckSeverity.WARN
        assert result.passed == (rule.id not in queries), rule.id
        assert {(r["SUBJID"], r["RECORD_KEY"]) for r in first} == {(s, k) for s, k, _ in queries.get(rule.id, [])}, rule.id
    assert {rid for rid, q in queries.items() if RULES_BY_ID.get(rid) in warn} == {
        "XF-AE-NOT-CODED", "XF-PC-NO-TIMEPOINT", "XF-PC-SAME-DAY"}


def test_a_failing_warn_rule_has_the_same_count_in_the_check_and_the_table(trial):
    results = _derive_rules_results(trial)
    queries = _open_queries(trial)
    result = results["xf_ae_not_coded"]
    assert not result.passed and result.metadata["failing_records"].value == 1 == len(queries["XF-AE-NOT-CODED"])
    [(subjid, key, detail)] = queries["XF-AE-NOT-CODED"]
    assert result.metadata["first_records"].value == [dict(zip(RULE_COLUMNS, (subjid, key, detail)))]


def test_records_sharing_a_record_key_are_one_query_but_each_a_failing_record_of_the_check(trial):
    """Why derive_rules runs the rule SQL instead of reading analysis.data_queries: two PK samples of
    one date with wrong time points are two failing records of the check (count and list), and one
    query (one RECORD_KEY, the stable id) whose DETAIL joins both -- the table cannot give back the
    check's count or records."""
    from clinical.study import load_study

    results = _derive_rules_results(trial)
    queries = _open_queries(trial)
    result = results["xf_pc_no_timepoint"]
    con = duckdb.connect(str(trial.database), read_only=True)
    try:
        failing = run_rule(con, RULES_BY_ID["XF-PC-NO-TIMEPOINT"], load_study(STUDY))
    finally:
        con.close()
    assert len(failing) == 2 and len({(s, k) for s, k, _ in failing}) == 1
    assert not result.passed and result.metadata["failing_records"].value == 2
    assert result.metadata["first_records"].value == [dict(zip(RULE_COLUMNS, r)) for r in failing]
    [(subjid, key, detail)] = queries["XF-PC-NO-TIMEPOINT"]
    assert (subjid, key) == failing[0][:2] and detail == "; ".join(d for _, _, d in failing)


def test_derive_rules_can_run_without_the_query_table_being_rebuilt():
    """The tables the rules read re-materialised with their checks, without analysis/data_queries:
    a valid run (the derive step is subsettable), in which analysis.data_queries is the previous
    build's -- a check reading its outcome from there would report the tables as they were."""
    from assets.validate import checks
    from pipelines.definitions import defs

    [derive_rules] = [c for c in checks if c.node_def.name == "derive_rules"]
    guarded = {k.asset_key for k in derive_rules.check_keys}
    assert dg.AssetKey(["analysis", "data_queries"]) not in guarded
    job = defs.resolve_job_def("trial_job").get_subset(asset_selection=guarded,
                                                      asset_check_selection=set(derive_rules.check_keys))
    assert {n.name for n in job.graph.node_defs} == {"derive", "derive_rules"}
    assert job.asset_layer.selected_asset_keys == guarded
