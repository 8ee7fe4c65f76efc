"""The code location loads as Dagster and the UI see it."""

import json
import subprocess
import sys
from pathlib import Path

import dagster as dg

from clinical.crf import FORM_IDS
from pipelines.definitions import defs

ROOT = Path(__file__).resolve().parent.parent


def test_definitions_load_and_validate():
    dg.Definitions.validate_loadable(defs)


def test_lineage_runs_from_export_files_to_reports():
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert {"export/ae", "raw/ae", "analysis/adsl", "analysis/adae", "report/dsmb_report", "report/manifest"} <= keys
    upstream = {k.to_user_string() for k in graph.get(dg.AssetKey(["report", "manifest"])).parent_keys}
    assert upstream == {"report/dsmb_report", "report/sponsor_workbook", "report/registry_results", "report/queries_workbook"}
    # Every export file reaches the manifest (walk the graph upwards).
    reached, todo = set(), [dg.AssetKey(["report", "manifest"])]
    while todo:
        key = todo.pop()
        for parent in graph.get(key).parent_keys:
            if parent not in reached:
                reached.add(parent)
                todo.append(parent)
    assert {k.to_user_string() for k in reached if k.path[0] == "export"} == {f"export/{f}" for f in FORM_IDS}


def test_nightly_schedule_in_study_time_zone():
    schedule = defs.resolve_schedule_def("nightly_schedule")
    assert schedule.execution_timezone == "Asia/Shanghai"
    assert schedule.cron_schedule == "0 4 * * *"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING


def test_checks_are_blocking_where_errors():
    graph = defs.resolve_asset_graph()
    specs = {k.name: graph.get_check_spec(k) for k in graph.asset_check_keys}
    assert specs["xf_subj_not_in_dm"].blocking and specs["gx_ae_aetoxgr_format"].blocking
    assert not specs["xf_fatal_not_serious"].blocking and not specs["ae_quarantine_empty"].blocking
    assert specs["gx_ae_aetoxgr_format"].asset_key == dg.AssetKey(["raw", "ae"])
    # One GX check per expectation of every suite, one quarantine check per form, one per SQL rule.
    assert len([n for n in specs if n.startswith("gx_")]) == sum(
        len(json.loads(p.read_text())["expectations"]) for p in (ROOT / "expectations").glob("*.json")
    )
    assert defs.resolve_job_def("trial_job").executor_def.name == "in_process"


def test_dagster_cli_validates_the_workspace():
    exe = Path(sys.executable).with_name("dagster")
    proc = subprocess.run(
        [str(exe), "definitions", "validate", "-w", "workspace.yaml"], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_few_steps_with_every_asset_and_check_in_its_own_right():
    """docs/performance.md: the job runs in 8 steps, while the UI still sees one asset per form and
    per analysis table and one check per expectation, quarantine check and rule."""
    job = defs.resolve_job_def("trial_job")
    steps = {n.name for n in job.graph.node_defs}
    assert steps == {
        "ingest", "form_checks", "analysis__adsl", "adsl_rules", "derive", "derive_rules", "reports", "report__manifest",
    }
    graph = defs.resolve_asset_graph()
    by_node = {}
    for ad in graph.assets_defs:
        if ad.is_executable and ad.keys:
            by_node[ad.node_def.name] = {k.to_user_string() for k in ad.keys}
    assert by_node["ingest"] == {"ingest/export_snapshot", *{f"raw/{f}" for f in FORM_IDS}}
    assert "analysis/adlb" in by_node["derive"] and "analysis/adsl" not in by_node["derive"]
    assert by_node["reports"] == {f"report/{r}" for r in ("dsmb_report", "sponsor_workbook", "registry_results", "queries_workbook")}
    checks = {}
    for ad in graph.assets_defs:
        if not ad.keys and ad.check_keys:
            checks[ad.node_def.name] = {k.name for k in ad.check_keys}
    form_checks = checks["form_checks"]
    assert {f"{f}_quarantine_empty" for f in FORM_IDS} <= form_checks
    assert len([n for n in form_checks if n.startswith("gx_")]) == sum(
        len(json.loads(p.read_text())["expectations"]) for p in (ROOT / "expectations").glob("*.json")
    )
    assert "xf_subj_not_in_dm" in checks["adsl_rules"] and "xf_fatal_not_serious" in checks["derive_rules"]
