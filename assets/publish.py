"""Publish: the manifest, then the run's outputs moved into place together.

The manifest asset runs last. It

1. refuses to touch a data cut that was frozen for a DSMB meeting (``python -m pipelines freeze``);
2. rewrites the DuckDB file into its canonical, byte-reproducible form (``pipelines.storage``);
3. archives the export and the study configuration the outputs were made from (content-addressed,
   under ``<output root>/<study>/archive/``), so ``python -m pipelines verify`` can regenerate them;
4. fingerprints every input and output into ``manifest.json``;
5. swaps the finished work folder into place in one atomic step: readers never see a half-written
   set, and a failed or killed run leaves the previous outputs of that data cut as they were.

Nothing in the manifest comes from the clock or from where the export or the output folder lie
(input paths are relative to the export folder), so re-running an export gives identical bytes.
"""

import json
from pathlib import Path

import dagster as dg

from assets.report import (
    COMMON,
    OUTPUT_FILES,
    dsmb_report,
    queries_workbook,
    registry_results,
    sponsor_workbook,
)
from clinical.crf import FORMS
from clinical.ingest import sha256_file
from clinical.landing import export_fingerprint
from pipelines.archive import ArchiveError, archive_files, config_archive, export_archive
from pipelines.faults import pause_point
from pipelines.freeze import frozen_message, frozen_record
from pipelines.provenance import code_sha256, code_version, environment
from pipelines.resources import DATABASE_NAME, TrialResource
from pipelines.storage import canonical_database, finish_canonical, publish_dir


def _archive(src_root: Path, files: list[tuple[str, str]], dest: Path) -> None:
    try:
        archive_files(src_root, files, dest)
    except ArchiveError as exc:
        raise dg.Failure(description=f"{exc}: the run used it; the outputs were not published", allow_retries=False) from None


@dg.asset(
    key=["report", "manifest"],
    deps=[dsmb_report, sponsor_workbook, registry_results, queries_workbook],
    kinds={"json"},
    description="manifest.json: every input (path in the export, sha256, rows) and output (role, path, sha256), the "
    "export, configuration and code fingerprints; the DuckDB file made byte-reproducible; the export archived; then "
    "the run's outputs are moved into place together in one atomic step. Refuses a data cut frozen for a DSMB meeting.",
    **COMMON,
)
def manifest(context: dg.AssetExecutionContext, trial: TrialResource) -> dg.MaterializeResult:
    work, final = trial.work_dir, trial.final_dir
    study_root = trial.study_root
    frozen = frozen_record(final)
    if frozen:  # frozen while this run was going (the resource refuses a frozen cut at the start)
        raise dg.Failure(description=frozen_message(trial.cfg.study.id, trial.cut.isoformat(), frozen), allow_retries=False)
    with trial.connect() as con:
        rows = dict(
            con.execute(
                " UNION ALL ".join(f"SELECT '{f.file}', count(*) FROM raw.{f.id}" for f in FORMS)
            ).fetchall()
        )
        files = con.execute("SELECT file, sha256, bytes FROM raw.export_files ORDER BY file").fetchall()
    export_sha = export_fingerprint([(name, sha) for name, sha, _ in files])
    seed = f"{trial.cfg.study.id}|{trial.cut.isoformat()}|{export_sha}"
    # The canonical copy started in the background after the last write (TrialResource.seal_database),
    # else made now; the file is closed before it is replaced.
    copied = trial.take_canonical_copy()
    trial.close_database()
    reproducible = (
        finish_canonical(work / DATABASE_NAME, copied, seed) if copied else canonical_database(work / DATABASE_NAME, seed)
    )
    if not reproducible:
        context.log.warning(f"{DATABASE_NAME}: unknown DuckDB header layout; the file is not byte-reproducible")
    _archive(Path(trial.export_dir).resolve(), [(name, sha) for name, sha, _ in files],
             export_archive(study_root, export_sha, trial.export_id))
    config = Path(trial.cfg.config_path)
    _archive(config.parent, [(config.name, trial.cfg.config_sha256)], config_archive(study_root, trial.cfg.config_sha256))
    outputs = [{"role": role, "path": name, "sha256": sha256_file(work / name)} for role, name in OUTPUT_FILES.items()]
    doc = {
        "study": trial.cfg.study.id,
        "nct_id": trial.cfg.study.nct_id,
        "export_id": trial.export_id,
        "data_cut": trial.cut.isoformat(),
        "config": {"path": trial.cfg.config_path, "sha256": trial.cfg.config_sha256},
        "code_version": code_version(),
        "code_sha256": code_sha256(),
        "environment": environment(),
        "export_sha256": export_sha,
        "inputs": [
            {"path": name, "sha256": sha, "bytes": size, "rows": rows.get(name)} for name, sha, size in files
        ],
        "outputs": outputs,
    }
    (work / "manifest.json").write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    pause_point("publish")
    # Swap the finished work folder into place; the previous outputs stay until this instant.
    publish_dir(work, final)
    context.log.info(f"outputs in {final}")
    table = "\n".join(f"| {o['role']} | `{o['path']}` | `{o['sha256'][:16]}…` |" for o in outputs)
    return dg.MaterializeResult(
        metadata={
            "manifest": dg.MetadataValue.path(str(final / "manifest.json")),
            "output_folder": dg.MetadataValue.path(str(final)),
            "outputs": dg.MetadataValue.md(f"| role | file | sha256 |\n|---|---|---|\n{table}"),
            "export_id": dg.MetadataValue.text(trial.export_id),
            "export_sha256": dg.MetadataValue.text(export_sha),
            "data_cut": dg.MetadataValue.text(trial.cut.isoformat()),
            "database_sha256": dg.MetadataValue.text(outputs[0]["sha256"]),
            "code_version": dg.MetadataValue.text(doc["code_version"]),
        }
    )


publish = [manifest]
