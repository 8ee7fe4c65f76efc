"""The whole-graph job and its nightly schedule, in the study's own time zone."""

from __future__ import annotations

import dagster as dg

from clinical.study import load_study
from pipelines.resources import DEFAULT_STUDY

# Every asset and check, from the export files to the manifest.
trial_job = dg.define_asset_job(
    name="trial_job",
    selection=dg.AssetSelection.all(),
    description="Ingest, validate and derive one CRF export, then write every deliverable.",
    executor_def=dg.in_process_executor,
)

# 04:00 local time: outside the 01:00-03:00 window that daylight-saving changes skip or repeat.
nightly_schedule = dg.ScheduleDefinition(
    name="nightly_schedule",
    job=trial_job,
    cron_schedule="0 4 * * *",
    execution_timezone=load_study(DEFAULT_STUDY).study.time_zone,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Nightly run on the latest export, in the study's time zone.",
)
