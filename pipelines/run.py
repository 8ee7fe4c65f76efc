"""``python -m pipelines run``: materialise the whole graph for one export through Dagster.

Exit status: 0 success; 1 a blocking check or a step failed (previous outputs unchanged);
2 bad arguments; 3 another run of the study is writing (refused, nothing changed; ``--wait``
queues behind it instead); 4 the data cut is frozen (refused, nothing changed).
Every run, refused ones included, is appended to the study's audit log.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

import dagster as dg

from clinical.study import StudyConfigError, load_study
from pipelines.resources import STUDY_TAG, export_identity, trial_run_config

EXIT_BUSY = 3
EXIT_FROZEN = 4


def _instance(ephemeral: bool = False) -> dg.DagsterInstance:
    # With DAGSTER_HOME set (make run / make ui do), the run is recorded where the UI shows it.
    if ephemeral or not os.environ.get("DAGSTER_HOME"):
        return dg.DagsterInstance.ephemeral()
    return dg.DagsterInstance.get()


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


def _refusal(study_root: Path, status: str, message: str, trial_config: dict, cfg) -> None:
    from pipelines import audit

    try:
        audit.append(
            study_root,
            {
                "event": "run",
                "status": status,
                "study": cfg.study.id,
                "data_cut": trial_config["data_cut"],
                "export_dir": trial_config["export_dir"],
                "config_path": cfg.config_path,
                "config_sha256": cfg.config_sha256,
                "started_at": audit.now_iso(),
                "finished_at": audit.now_iso(),
                "detail": {"message": message},
            },
        )
    except Exception as exc:  # noqa: BLE001  the refusal must reach the user even if the log is unavailable
        print(f"warning: could not append to the audit log: {exc}", file=sys.stderr)


def run_export(study: str, export: str, out: str, data_cut: str = "", wait: float = 0.0, ephemeral: bool = False,
               instance: dg.DagsterInstance | None = None) -> int:
    """Run the job; see the module docstring for the exit status. ``instance``: the Dagster instance
    to record the run in (the caller's, left open), else the one of DAGSTER_HOME or an ephemeral one."""
    try:
        cfg = load_study(study)
        export_dir = Path(export)
        if not export_dir.is_dir():
            raise ValueError(f"{export}: export folder not found")
        export_id, cut = export_identity(export_dir, data_cut)
    except (StudyConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from pipelines import audit, lock

    run_config = trial_run_config(study, export_dir, out, cut.isoformat())
    trial_config = run_config["resources"]["trial"]["config"]
    study_root = Path(out).resolve() / cfg.study.id
    final = Path(out) / cfg.study.id / cut.isoformat()
    try:
        recovered = lock.open_for_run(study_root, cfg.study.id, final,
                                      purpose=f"run of export {export_id}, data cut {cut}", wait=wait)
    except (lock.StudyBusyError, lock.StudyFrozenError) as exc:
        print(f"refused: {exc}", file=sys.stderr)
        busy = isinstance(exc, lock.StudyBusyError)
        _refusal(study_root, "REFUSED" if busy else "FROZEN", str(exc), trial_config, cfg)
        return EXIT_BUSY if busy else EXIT_FROZEN
    try:
        for line in recovered:
            print(f"recovered: {line}")
        from clinical.expectation_runner import start_worker

        # Great Expectations imports in its worker process while the code location loads, Dagster
        # creates the run and the export loads (the trial resource stops it when the run ends;
        # stop_worker below in any case).
        start_worker()
        from pipelines.definitions import defs
        # The console shows warnings and failures; the full event log is in the Dagster instance.
        run_config["loggers"] = {"console": {"config": {"log_level": "WARNING"}}}
        tags = {STUDY_TAG: cfg.study.id, "trial/data_cut": cut.isoformat(), "trial/export_id": export_id,
                "trial/launched_by": "cli"}
        job = defs.resolve_job_def("trial_job")
        with contextlib.nullcontext(instance) if instance is not None else _instance(ephemeral) as instance:
            result = job.execute_in_process(run_config=run_config, instance=instance, tags=tags, raise_on_error=False)
            try:
                audit.record_run(instance, result.run_id)
            except Exception as exc:  # noqa: BLE001  a log problem must not mask the run's outcome
                print(f"warning: could not append run {result.run_id} to the audit log: {exc}", file=sys.stderr)
    finally:
        from clinical.expectation_runner import stop_worker

        stop_worker()
        lock.release(study_root)
    problems = failed_checks(result)
    if not result.success:
        print(f"run {result.run_id} for export {export_id} (data cut {cut}) FAILED", file=sys.stderr)
        for ev in result.all_events:
            if ev.is_step_failure:
                print(f"step {ev.step_key} failed: {audit.step_error_text(ev.event_specific_data.error)}", file=sys.stderr)
        for line in problems:
            print(line, file=sys.stderr)
        print(f"previous outputs (if any) in {final} are unchanged", file=sys.stderr)
        return 1
    for line in problems:  # WARN checks: the run finished; these became data queries
        print(line)
    print(f"export {export_id}, data cut {cut}: outputs in {final}")
    print(f"manifest: {final / 'manifest.json'}")
    return 0
