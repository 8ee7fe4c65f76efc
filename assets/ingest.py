"""Ingest: the export files as external assets, the export snapshot, and one raw table per CRF form."""


import shutil
from pathlib import Path

import dagster as dg

from clinical.crf import FORMS, Form
from clinical.ingest import ExportFileError, load_form, sha256_file
from pipelines.resources import DATABASE_NAME, TrialResource

OWNERS = ["team:clinical-data-engineering"]

export_files = [
    dg.AssetSpec(
        key=["export", form.id],
        description=f"CRF export file `{form.file}`: {form.title} (delivered by the EDC; never modified).",
        group_name="export",
        kinds={"csv"},
        owners=OWNERS,
    )
    for form in FORMS
]


@dg.asset(
    key=["ingest", "export_snapshot"],
    deps=[spec.key for spec in export_files],
    group_name="ingest",
    kinds={"duckdb"},
    owners=OWNERS,
    pool="trial_db",
    description="Fingerprints every file of the export (SHA-256, bytes) and starts a clean work folder for this run.",
)
def export_snapshot(context: dg.AssetExecutionContext, trial: TrialResource) -> dg.MaterializeResult:
    work = trial.work_dir
    # A run always rebuilds from the export: clear what a failed earlier run may have left.
    shutil.rmtree(work)
    work.mkdir(parents=True)
    export = trial.export_dir
    files = sorted(p for p in Path(export).iterdir() if p.is_file())
    rows = [(trial.export_id, p.name, sha256_file(p), p.stat().st_size) for p in files]
    with trial.connect() as con:
        con.execute("CREATE SCHEMA IF NOT EXISTS raw")
        con.execute(
            "CREATE OR REPLACE TABLE raw.export_files (export_id VARCHAR, file VARCHAR, sha256 VARCHAR, bytes BIGINT)"
        )
        if rows:
            con.executemany("INSERT INTO raw.export_files VALUES (?, ?, ?, ?)", rows)
    context.log.info(f"export {trial.export_id}: {len(rows)} files, data cut {trial.cut}")
    return dg.MaterializeResult(
        metadata={
            "export_id": trial.export_id,
            "data_cut": trial.cut.isoformat(),
            "files": len(rows),
            "database": dg.MetadataValue.path(str(trial.work_dir / DATABASE_NAME)),
        }
    )


def _raw_asset(form: Form) -> dg.AssetsDefinition:
    @dg.asset(
        name=form.id,
        key_prefix=["raw"],
        deps=[dg.AssetKey(["export", form.id]), export_snapshot],
        group_name="ingest",
        kinds={"duckdb"},
        owners=OWNERS,
        pool="trial_db",
        description=(
            f"{form.title}: `raw.{form.id}` holds every row of `{form.file}` as received with its line number; "
            f"`stage.{form.id}` the typed rows; rows breaking a typing rule go to `raw.quarantine` with the reason."
        ),
    )
    def _load(context: dg.AssetExecutionContext, trial: TrialResource) -> dg.MaterializeResult:
        path = Path(trial.export_dir) / form.file
        with trial.connect() as con:
            try:
                result = load_form(con, form, path, trial.export_id, trial.codelists)
            except ExportFileError as exc:
                # A blocking file problem: fail this step with the message a data manager can act on.
                raise dg.Failure(description=str(exc), metadata={"file": form.file, "rule": str(exc)}) from None
        if result.rows_quarantined:
            context.log.warning(f"{form.file}: {result.rows_quarantined} row(s) quarantined, see raw.quarantine")
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": result.rows_staged,
                "rows_received": result.rows_received,
                "rows_quarantined": result.rows_quarantined,
                "file_sha256": result.sha256,
                "identifier_columns_dropped": ", ".join(result.dropped_identifier_columns) or "none",
            }
        )

    return _load


raw_forms = [_raw_asset(form) for form in FORMS]
