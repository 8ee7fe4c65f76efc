"""``python -m pipelines run``: materialise the whole graph for one export through Dagster."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import dagster as dg

from clinical.study import StudyConfigError, load_study
from pipelines.resources import export_identity


def _instance() -> dg.DagsterInstance:
    # With DAGSTER_HOME set (make run / make ui do), the run is recorded where the UI shows it.
    return dg.DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else dg.DagsterInstance.ephemeral()


def failed_checks(result: dg.ExecuteInJobResult) -> list[str]:
    lines = []
    for ev in result.get_asset_check_evaluations():
        if ev.passed:
            continue
        meta = {k: v.value for k, v in ev.metadata.items()}
        records = meta.get("first_records") or meta.get("rows") or meta.get("first_rows") or meta.get("examples")
        lines.append(
            f"{ev.severity.value} check {ev.check_name} on {ev.asset_key.to_user_string()} failed: "
            f"{json.dumps(records, ensure_ascii=False, default=str)}"
        )
    return lines


def run_export(study: str, export: str, out: str, data_cut: str = "") -> int:
    """Run the job; 0 on success, 1 when a blocking check or a step failed, 2 on bad arguments."""
    try:
        cfg = load_study(study)
        export_dir = Path(export)
        if not export_dir.is_dir():
            raise ValueError(f"{export}: export folder not found")
        export_id, cut = export_identity(export_dir, data_cut)
    except (StudyConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from pipelines.definitions import defs

    run_config = {
        # The console shows warnings and failures; the full event log is in the Dagster instance.
        "loggers": {"console": {"config": {"log_level": "WARNING"}}},
        "resources": {
            "trial": {
                "config": {
                    "study_config": str(Path(study).resolve()),
                    "export_dir": str(export_dir.resolve()),
                    "output_root": str(Path(out).resolve()),
                    "data_cut": cut.isoformat(),
                }
            }
        }
    }
    job = defs.resolve_job_def("trial_job")
    with _instance() as instance:
        result = job.execute_in_process(run_config=run_config, instance=instance, raise_on_error=False)
    final = Path(out) / cfg.study.id / cut.isoformat()
    problems = failed_checks(result)
    if not result.success:
        print(f"run {result.run_id} for export {export_id} (data cut {cut}) FAILED", file=sys.stderr)
        for ev in result.all_events:
            if ev.is_step_failure:
                print(f"step {ev.step_key} failed: {ev.event_specific_data.error.message.strip()}", file=sys.stderr)
        for line in problems:
            print(line, file=sys.stderr)
        print(f"previous outputs (if any) in {final} are unchanged", file=sys.stderr)
        return 1
    for line in problems:  # WARN checks: the run finished; these became data queries
        print(line)
    print(f"export {export_id}, data cut {cut}: outputs in {final}")
    print(f"manifest: {final / 'manifest.json'}")
    return 0
