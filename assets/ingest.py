"""Ingest: the export's sources as external assets, the export snapshot, and one raw table per CRF form."""


import shutil
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import dagster as dg
import duckdb

from clinical.crf import FORMS, Form
from clinical.ingest import ExportFileError, LoadResult, create_ingest_tables, ingest_settings, order_quarantine
from clinical.mapping import MappingError
from clinical.sources import ExportSource, ingest_form
from pipelines.faults import pause_point
from pipelines.resources import DATABASE_NAME, TrialResource
from pipelines.taskgraph import Task, run_in_order

# Forms loaded at a time: the large lab form's DuckDB statements run beside the small forms'
# Python (docs/performance.md).
INGEST_THREADS = 2

OWNERS = ["team:clinical-data-engineering"]

export_files = [
    dg.AssetSpec(
        key=["export", form.id],
        description=f"Source of {form.title}: `{form.file}` in a CSV export, or the records the study's mapping "
        f"takes from a CDISC ODM or SDTM export (delivered by the EDC or CRO; never modified).",
        group_name="export",
        kinds={"csv"},
        owners=OWNERS,
    )
    for form in FORMS
]


def _fail(exc: ExportFileError | MappingError) -> dg.Failure:
    # A blocking file problem: fail the step with the message a data manager can act on.
    return dg.Failure(description=str(exc), metadata={"rule": str(exc)}, allow_retries=False)


SNAPSHOT_KEY = dg.AssetKey(["ingest", "export_snapshot"])

export_snapshot = dg.AssetSpec(
    key=SNAPSHOT_KEY,
    deps=[spec.key for spec in export_files],
    group_name="ingest",
    kinds={"duckdb"},
    owners=OWNERS,
    description="Fingerprints every file of the export (SHA-256, bytes, format, encoding, delimiter) and starts a "
    "clean work folder for this run.",
)


def _raw_spec(form: Form) -> dg.AssetSpec:
    # Demographics derive an age at consent from a date of birth with the consent date of enrol.
    extra = [dg.AssetKey(["export", "enrol"])] if form.id == "dm" else []
    return dg.AssetSpec(
        key=["raw", form.id],
        deps=[dg.AssetKey(["export", form.id]), *extra, SNAPSHOT_KEY],
        group_name="ingest",
        kinds={"duckdb"},
        owners=OWNERS,
        description=(
            f"{form.title}: `raw.{form.id}` holds every record of the form's source as received with its file and line; "
            f"`stage.{form.id}` the typed rows; rows breaking a rule go to `raw.quarantine` with the reason. Empty "
            f"when the study does not collect the form."
        ),
    )


# One AssetSpec per CRF form (``raw/<form>``): what the UI shows and what checks and derive assets
# depend on. All of them are written by the one ``ingest`` step below.
raw_forms = [_raw_spec(form) for form in FORMS]


def _snapshot(context: dg.AssetExecutionContext, trial: TrialResource, source: ExportSource) -> dg.MaterializeResult:
    work = trial.work_dir
    # A run always rebuilds from the export: clear what a failed earlier run may have left.
    trial.reset_database()
    shutil.rmtree(work)
    work.mkdir(parents=True)
    try:
        source.check_study()
        files = source.describe()
        fmt = source.format
        source.open()
    except (ExportFileError, MappingError) as exc:
        raise _fail(exc) from None
    rows = [(trial.export_id, f.path, f.sha256, f.bytes, f.format, f.encoding, f.delimiter) for f in files]
    with trial.connect() as con:
        con.execute("CREATE SCHEMA IF NOT EXISTS raw")
        con.execute(
            """CREATE OR REPLACE TABLE raw.export_files (export_id VARCHAR, file VARCHAR, sha256 VARCHAR, bytes BIGINT,
                 format VARCHAR, encoding VARCHAR, delimiter VARCHAR)"""
        )
        if rows:
            con.executemany("INSERT INTO raw.export_files VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    encodings = sorted({f"{f.encoding}" for f in files if f.encoding})
    context.log.info(f"export {trial.export_id} ({fmt}): {len(rows)} files, encodings {encodings}, data cut {trial.cut}")
    return dg.MaterializeResult(
        asset_key=SNAPSHOT_KEY,
        metadata={
            "export_id": trial.export_id,
            "data_cut": trial.cut.isoformat(),
            "format": fmt,
            "files": len(rows),
            "encodings": ", ".join(encodings) or "none",
            "database": dg.MetadataValue.path(str(trial.work_dir / DATABASE_NAME)),
        },
    )


def _materialization(context: dg.AssetExecutionContext, form: Form, result: LoadResult) -> dg.MaterializeResult:
    if result.rows_quarantined:
        context.log.warning(f"{result.file}: {result.rows_quarantined} row(s) of {form.id} quarantined, see raw.quarantine")
    if result.dropped_identifier_columns:
        context.log.info(f"{result.file}: identifier columns dropped: {', '.join(result.dropped_identifier_columns)}")
    return dg.MaterializeResult(
        asset_key=dg.AssetKey(["raw", form.id]),
        metadata={
            "dagster/row_count": result.rows_staged,
            "collected": result.collected,
            "source_file": result.file or "none",
            "format": result.format,
            "encoding": result.encoding or "n/a",
            "delimiter": {None: "n/a", "\t": "tab"}.get(result.delimiter, result.delimiter),
            "rows_received": result.rows_received,
            "rows_quarantined": result.rows_quarantined,
            "file_sha256": result.sha256 or "n/a",
            "identifier_columns_dropped": ", ".join(result.dropped_identifier_columns) or "none",
            "ages_from_birth_date": result.ages_from_birth_date,
        },
    )


def load_forms(
    source: ExportSource,
    connect: Callable[[], AbstractContextManager[duckdb.DuckDBPyConnection]],
    export_id: str,
    workers: int = INGEST_THREADS,
    on_loaded: Callable[[Form, LoadResult], None] | None = None,
) -> Iterator[tuple[Form, LoadResult | ExportFileError]]:
    """(form, its load result or blocking file error) of every form, ``workers`` forms loading at a
    time, each on a connection of its own from ``connect``. Results come back in contract order, so
    the run's events and logs are the same on every run.

    ``on_loaded(form, result)`` is called on the loading thread as soon as a form has loaded, before
    its turn comes: the ingest step hands the form to Great Expectations there, so that the suite
    worker validates the small forms while the lab form is still loading (in contract order they
    would all wait for it)."""

    def load(form: Form):
        def run() -> LoadResult | ExportFileError:
            try:
                with connect() as con:  # a connection per thread: each form loads in its own transaction
                    result = ingest_form(con, form, source, export_id, release=False)
            except ExportFileError as exc:
                return exc  # reported in its turn; the other forms still load
            if on_loaded is not None:
                on_loaded(form, result)
            return result

        return run

    tasks = [Task(form.id, frozenset(), load(form)) for form in FORMS]
    for form, (_task, loaded) in zip(FORMS, run_in_order(tasks, workers=workers)):
        yield form, loaded
        # Released only after its turn: dm (before enrol in contract order) reads enrol's records.
        source.release(form.id)


@dg.multi_asset(
    name="ingest",
    specs=[export_snapshot, *raw_forms],
    pool="trial_db",
    can_subset=False,  # the snapshot starts a clean work folder: the forms are always loaded together
    description="The export snapshot, then every CRF form into raw/stage/quarantine tables, in one step.",
)
def ingest(context: dg.AssetExecutionContext, trial: TrialResource):
    """One step for the whole export (one Dagster step instead of 15: docs/performance.md), two
    forms at a time, each in its own transaction.

    A form whose file breaks a blocking rule does not stop the others from loading: the step fails
    at the end, naming every such file, and the forms that loaded are reported as materialised.
    """
    from assets.validate import clear_submitted, submit_form_suite  # (assets.validate imports this module)

    clear_submitted()
    # One reader of the export for the step: an ODM or SDTM export is parsed once for every form.
    source = ExportSource(Path(trial.export_dir), ingest_settings(trial.cfg))
    yield _snapshot(context, trial, source)
    with trial.connect() as con:
        create_ingest_tables(con)

    def to_great_expectations(form: Form, result: LoadResult) -> None:
        # Great Expectations validates this form in the suite worker while the next ones load.
        submit_form_suite(context.run_id, form, trial, result.validated)

    problems: list[str] = []
    for form, loaded in load_forms(source, trial.connect, trial.export_id, on_loaded=to_great_expectations):
        if isinstance(loaded, ExportFileError):
            context.log.error(str(loaded))
            problems.append(str(loaded))
            continue
        yield _materialization(context, form, loaded)
        pause_point(f"raw__{form.id}")  # crash-safety tests: a run killed in the middle of ingest
    with trial.connect() as con:
        order_quarantine(con, [form.id for form in FORMS])
    if problems:
        raise dg.Failure(description="\n".join(problems), metadata={"rule": "\n".join(problems)}, allow_retries=False)


ingest_assets = [ingest]
