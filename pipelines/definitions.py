"""The Dagster code location: assets, checks, the job, the nightly schedule and the resource."""


import dagster as dg

from assets.derive import derived
from assets.ingest import export_files, export_snapshot, raw_forms
from assets.publish import publish
from assets.report import reports
from assets.validate import checks
from pipelines.resources import TrialResource
from pipelines.schedules import nightly_schedule, trial_job

defs = dg.Definitions(
    assets=[*export_files, export_snapshot, *raw_forms, *derived, *reports, *publish],
    asset_checks=checks,
    jobs=[trial_job],
    schedules=[nightly_schedule],
    resources={"trial": TrialResource()},
    # One process, one DuckDB writer: no cross-process file locks, and ~10x less step overhead.
    executor=dg.in_process_executor,
)
