"""Publish: the manifest, then the run's outputs moved into place together.

The manifest asset runs last: it fingerprints every input and output and only then moves the work
folder into place, so readers never see a half-written set and a failed run leaves the previous
outputs of that data cut as they were.
"""

import json
import shutil
from pathlib import Path

import dagster as dg

from assets.ingest import OWNERS
from assets.report import OUTPUT_FILES, dsmb_report, queries_workbook, registry_results, sponsor_workbook
from clinical.crf import FORMS
from clinical.ingest import sha256_file
from pipelines.resources import REPO_ROOT, TrialResource

COMMON = dict(group_name="report", owners=OWNERS, pool="trial_db")


def code_version() -> str:
    """The commit the pipeline ran from, when it runs from a git checkout (else the package version)."""
    head = REPO_ROOT / ".git" / "HEAD"
    try:
        ref = head.read_text().strip()
        if ref.startswith("ref: "):
            return (REPO_ROOT / ".git" / ref[5:]).read_text().strip()
        return ref
    except OSError:
        from importlib.metadata import version

        return version("im83-pipeline")


@dg.asset(
    key=["report", "manifest"],
    deps=[dsmb_report, sponsor_workbook, registry_results, queries_workbook],
    kinds={"json"},
    description="manifest.json: every input (path, sha256, rows) and output (role, path, sha256); then the run's "
    "outputs are moved into place together.",
    **COMMON,
)
def manifest(context: dg.AssetExecutionContext, trial: TrialResource) -> dg.MaterializeResult:
    work, final = trial.work_dir, trial.final_dir
    with trial.connect() as con:
        rows = dict(
            con.execute(
                " UNION ALL ".join(f"SELECT '{f.file}', count(*) FROM raw.{f.id}" for f in FORMS)
            ).fetchall()
        )
        files = con.execute("SELECT file, sha256, bytes FROM raw.export_files ORDER BY file").fetchall()
    export_dir = Path(trial.export_dir).resolve()
    doc = {
        "study": trial.cfg.study.id,
        "nct_id": trial.cfg.study.nct_id,
        "export_id": trial.export_id,
        "data_cut": trial.cut.isoformat(),
        "config": {"path": trial.cfg.config_path, "sha256": trial.cfg.config_sha256},
        "code_version": code_version(),
        "inputs": [
            {"path": str(export_dir / name), "sha256": sha, "bytes": size, "rows": rows.get(name)}
            for name, sha, size in files
        ],
        "outputs": [
            {"role": role, "path": name, "sha256": sha256_file(work / name)}
            for role, name in OUTPUT_FILES.items()
        ],
    }
    (work / "manifest.json").write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    # Swap the finished work folder into place; the previous outputs stay until this point.
    if final.exists():
        old = final.with_name(f".{final.name}.previous")
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
        work.rename(final)
        shutil.rmtree(old)
    else:
        work.rename(final)
    context.log.info(f"outputs in {final}")
    return dg.MaterializeResult(
        metadata={"manifest": dg.MetadataValue.path(str(final / "manifest.json")), "outputs": len(OUTPUT_FILES)}
    )


publish = [manifest]
