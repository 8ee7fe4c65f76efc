"""The Dagster code location: assets, checks, the job, the nightly schedule and the resource."""


import dagster as dg

from assets.derive import derived
from assets.ingest import export_files, ingest_assets
from assets.publish import publish
from assets.report import report_assets
from assets.validate import checks
from pipelines.alerts import alert_on_run_failure
from pipelines.audit import audit_log_on_success
from pipelines.resources import TrialResource
from pipelines.schedules import nightly_schedule, trial_job
from pipelines.sensors import landing_sensor

defs = dg.Definitions(
    assets=[*export_files, *ingest_assets, *derived, *report_assets, *publish],
    asset_checks=checks,
    jobs=[trial_job],
    schedules=[nightly_schedule],
    # Failure alerts and audit-log entries for runs the daemon or the UI launched.
    sensors=[alert_on_run_failure, audit_log_on_success, landing_sensor],
    resources={"trial": TrialResource()},
    # One process, one DuckDB writer: no cross-process file locks, and ~10x less step overhead.
    executor=dg.in_process_executor,
)
