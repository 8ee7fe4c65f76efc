"""Start a run when a new export folder is complete in the landing area.

``landing_sensor`` looks at ``<landing>/<study>/*/`` every minute (``TRIAL_LANDING``, default
``landing/`` in the repository; the study and output root as for the job, ``TRIAL_STUDY`` and
``TRIAL_OUTPUT``). A folder that is complete (``clinical.landing.completeness``: the
``_COMPLETE`` marker, or a file set unchanged between two looks and quiet for the settling time,
``TRIAL_LANDING_SETTLE_SECONDS``, default 600) is archived byte for byte and read-only under
``<output>/<study>/archive/exports/`` and a run of ``trial_job`` is requested on the archived copy,
with the export fingerprint as run key. An export is loaded once:

* the same fingerprint never launches two runs (the cursor, and Dagster's run keys);
* an identical re-delivery, under any folder name, is found in the archive and its fingerprint in
  the manifest of its data cut: it is reported, not loaded again.

The data cut comes from the export's ``export.json``; an export without one is archived but not run
(a cut is never guessed). The nightly schedule is the fallback: ``scheduled_intake`` gives it the
requests for complete exports the sensor did not run (e.g. while the daemon was down).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from clinical.landing import SETTLE_SECONDS, completeness, read_delivery
from clinical.records import ExportFileError
from clinical.study import load_study
from pipelines.archive import ArchiveError, archive_delivery, export_archive, find_archived
from pipelines.resources import (
    DEFAULT_OUTPUT,
    DEFAULT_STUDY,
    REPO_ROOT,
    STUDY_TAG,
    export_identity,
    trial_run_config,
)


def settings() -> dict:
    """Study, landing root, output root and settling time, from the environment at evaluation time."""
    return {
        "study_config": os.environ.get("TRIAL_STUDY", DEFAULT_STUDY),
        "landing_root": os.environ.get("TRIAL_LANDING", str(REPO_ROOT / "landing")),
        "output_root": os.environ.get("TRIAL_OUTPUT", DEFAULT_OUTPUT),
        "settle_seconds": float(os.environ.get("TRIAL_LANDING_SETTLE_SECONDS", SETTLE_SECONDS)),
    }


@dataclass(frozen=True)
class ExportRequest:
    run_key: str
    export_id: str
    export_dir: str  # the archived copy
    data_cut: str
    fingerprint: str


@dataclass
class Intake:
    requests: list[ExportRequest] = field(default_factory=list)
    cursor: dict = field(default_factory=dict)
    log: list[str] = field(default_factory=list)


def _published(study_root: Path, cut: str, fingerprint: str) -> bool:
    manifest = study_root / cut / "manifest.json"
    try:
        return json.loads(manifest.read_text(encoding="utf-8")).get("export_sha256") == fingerprint
    except (OSError, ValueError):
        return False


def scan_landing(
    study_config: str,
    landing_root: str,
    output_root: str,
    cursor: dict | None = None,
    settle_seconds: float = SETTLE_SECONDS,
    now: float | None = None,
) -> Intake:
    """Archive every complete, new export of the study's landing folder; the runs to request."""
    cfg = load_study(study_config)
    study = cfg.study.id
    study_root = Path(output_root) / study
    folder_root = Path(landing_root) / study
    cursor = cursor or {}
    seen: dict = cursor.get("signatures", {})
    requested = set(cursor.get("requested", []))
    intake = Intake(cursor={"signatures": {}, "requested": []})
    this_look: dict[str, str] = {}
    folders = sorted(d for d in folder_root.iterdir() if d.is_dir() and not d.name.startswith(".")) if folder_root.is_dir() else []
    for folder in folders:
        # Without a cursor (the nightly fallback) the file set only has to be quiet for the settling time.
        previous = seen.get(folder.name) if cursor else None
        if cursor and folder.name not in seen:
            previous = []  # first look at this folder: wait for a second one unless it has a marker
        complete, why, signature = completeness(folder, previous, settle_seconds, now)
        intake.cursor["signatures"][folder.name] = signature
        if not complete:
            intake.log.append(f"{folder.name}: not complete yet ({why})")
            continue
        try:
            delivery = read_delivery(folder)
            if delivery.fingerprint in requested:
                if delivery.fingerprint in this_look:  # two identical folders side by side
                    intake.log.append(f"{folder.name}: identical to {this_look[delivery.fingerprint]}; not loaded twice")
                continue
            archived = find_archived(study_root, delivery.fingerprint)
            if archived is None:
                archived = export_archive(study_root, delivery.fingerprint, delivery.export_id)
                archive_delivery(delivery, archived)
                intake.log.append(f"{folder.name}: archived as {archived} ({why})")
            elif archived.name != delivery.export_id or folder.name != delivery.export_id:
                intake.log.append(f"{folder.name}: identical to the export archived as {archived}")
            export_id, cut = export_identity(archived)
        except (ArchiveError, ExportFileError, ValueError, OSError) as exc:
            intake.log.append(f"{folder.name}: not loaded: {exc}")
            continue
        requested.add(delivery.fingerprint)
        this_look[delivery.fingerprint] = folder.name
        if _published(study_root, cut.isoformat(), delivery.fingerprint):
            intake.log.append(f"{folder.name}: export {export_id} was already loaded for data cut {cut}; not loaded twice")
            continue
        intake.requests.append(ExportRequest(f"{study}:{delivery.fingerprint}", export_id, str(archived), cut.isoformat(), delivery.fingerprint))
    intake.cursor["requested"] = sorted(requested)
    return intake


def run_request(req: ExportRequest, study_config: str, output_root: str, launched_by: str) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=req.run_key,
        run_config=trial_run_config(study_config, req.export_dir, output_root, req.data_cut),
        tags={
            STUDY_TAG: load_study(study_config).study.id,
            "trial/export_id": req.export_id,
            "trial/export_sha256": req.fingerprint,
            "trial/launched_by": launched_by,
        },
    )


@dg.sensor(
    name="landing_sensor",
    job_name="trial_job",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Archives each new complete export folder of the landing area (read-only, SHA-256 per file) and "
    "runs trial_job on the archived copy; an identical re-delivery is not loaded twice.",
)
def landing_sensor(context: dg.SensorEvaluationContext):
    cursor = json.loads(context.cursor) if context.cursor else {"signatures": {}, "requested": []}
    cfg = settings()
    intake = scan_landing(cursor=cursor, **cfg)
    for line in intake.log:
        context.log.info(line)
    context.update_cursor(json.dumps(intake.cursor, sort_keys=True))
    if not intake.requests:
        return dg.SkipReason("; ".join(intake.log) or "no new complete export in the landing area")
    return [run_request(r, cfg["study_config"], cfg["output_root"], "landing_sensor") for r in intake.requests]


def scheduled_intake(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest] | dg.SkipReason:
    """The nightly fallback: runs for complete exports (quiet for the settling time) not loaded yet."""
    cfg = settings()
    intake = scan_landing(cursor=None, **cfg)
    for line in intake.log:
        context.log.info(line)
    if not intake.requests:
        return dg.SkipReason("; ".join(intake.log) or "no export waiting in the landing area")
    return [run_request(r, cfg["study_config"], cfg["output_root"], "nightly_schedule") for r in intake.requests]


def cli_intake(argv: list[str]) -> int:
    """``python -m pipelines intake``: what the sensor does, once, from the command line; runs in process."""
    import argparse

    from pipelines.run import run_export

    parser = argparse.ArgumentParser(prog="python -m pipelines intake")
    env = settings()
    parser.add_argument("--study", default=env["study_config"], help="study configuration YAML")
    parser.add_argument("--landing", default=env["landing_root"], help="landing root holding <study>/<export id>/ folders")
    parser.add_argument("--out", default="output", help="output root (default: output/); the archive is under it")
    parser.add_argument("--settle", type=float, default=env["settle_seconds"],
                        help="seconds a folder without a marker must be quiet")
    args = parser.parse_args(argv)
    intake = scan_landing(args.study, args.landing, args.out, cursor=None, settle_seconds=args.settle)
    for line in intake.log:
        print(line)
    status = 0
    for req in intake.requests:
        print(f"running export {req.export_id} (data cut {req.data_cut}) from {req.export_dir}")
        status = max(status, run_export(args.study, req.export_dir, args.out, req.data_cut))
    if not intake.requests:
        print("nothing new to run")
    return status
