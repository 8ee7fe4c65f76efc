"""The whole-graph job and its nightly schedule, in the study's own time zone.

- Retries: a step that raises (a DuckDB file briefly locked, a full disk being cleaned, an SMTP or
  network hiccup) is retried twice, after 1 s and 2 s (exponential backoff with jitter). Failures
  that say so (``dg.Failure(allow_retries=False)``: a frozen data cut, an export that changed
  during the run) and failed blocking checks are not retried: re-running them cannot help.
- Alerts: ``alert_on_failure`` writes every failed step to the study's alert log (and mails it
  when SMTP is configured); see ``pipelines.alerts``.
- No collisions: every run carries the tag ``trial/study``; the instance's run queue
  (``pipelines/dagster.yaml``, ``deploy/dagster.yaml``) runs at most one run per study value at a
  time, the ``trial_db`` pool serialises DuckDB-writing steps across runs, and the study lock in the
  ``trial`` resource refuses a run that a command-line run is already writing.
"""

from __future__ import annotations

import dagster as dg

from clinical.study import load_study
from pipelines.alerts import alert_on_failure
from pipelines.faults import pause_after_step
from pipelines.resources import DEFAULT_STUDY, STUDY_TAG

_study = load_study(DEFAULT_STUDY).study

RETRY_POLICY = dg.RetryPolicy(max_retries=2, delay=1, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)

# Every asset and check, from the export files to the manifest.
trial_job = dg.define_asset_job(
    name="trial_job",
    selection=dg.AssetSelection.all(),
    description="Ingest, validate and derive one CRF export, then write every deliverable.",
    executor_def=dg.in_process_executor,
    hooks={alert_on_failure, pause_after_step},
    op_retry_policy=RETRY_POLICY,
    run_tags={STUDY_TAG: _study.id},
)


def _nightly(context: dg.ScheduleEvaluationContext):
    # The complete exports of the landing area that no run has loaded yet (pipelines.sensors): the
    # nightly safety net behind the export-arrival sensor. Imported here: sensors imports this module.
    from pipelines.sensors import scheduled_intake

    result = scheduled_intake(context)
    yield from result if isinstance(result, list) else [result]


# 04:00 local time: outside the 01:00-03:00 window that daylight-saving changes skip or repeat.
nightly_schedule = dg.ScheduleDefinition(
    name="nightly_schedule",
    job=trial_job,
    cron_schedule="0 4 * * *",
    execution_timezone=_study.time_zone,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    execution_fn=_nightly,
    description=f"Nightly at 04:00 {_study.time_zone}: a run of {_study.id} for each complete export in the landing "
    "area not loaded yet (the export-arrival sensor's safety net); one run per study at a time (run queue tag "
    "trial/study).",
)
