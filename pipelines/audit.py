"""The study's append-only run log: ``<output root>/<study>/audit.duckdb``, table ``run_log``.

One row per event, never updated or deleted: every pipeline run (success, failure, refused), every
freeze and every verify of a data cut. A row holds the run id, start and end times, the export
(id, folder, SHA-256 over its files), the study configuration and its hash, the code version,
every output with its SHA-256 and the validation outcome (checks run, passed, failed).

The log lives next to the data-cut folders, so rebuilding a cut never touches it. DuckDB has no
triggers or grants, so append-only is enforced by detection: every row carries ``prev_hash`` (the
previous row's hash) and ``row_hash`` = SHA-256 of ``prev_hash`` and the row's canonical JSON, and
``audit.head`` beside the log records the last sequence number and hash. ``verify_log`` finds any
row that was changed (its hash), deleted (a gap or a broken link) or cut off the end (the head).
Between appends the file is read-only (0444), which stops accidental writes by other users.

Who appends: ``python -m pipelines run`` after each run; for runs the daemon or the UI launched,
the run-status sensors below (a run already logged is never logged twice); ``freeze``/``verify``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb

from clinical.landing import read_delivery
from clinical.study import StudyConfigError
from pipelines.provenance import code_sha256, code_version
from pipelines.resources import trial_from_run_config

# What reading a run's study configuration or export identity can raise (a refused or broken run).
SETUP_ERRORS = (StudyConfigError, OSError, ValueError, KeyError)

AUDIT_DB = "audit.duckdb"
HEAD_FILE = "audit.head"
GENESIS = "0" * 64

COLUMNS = [
    ("seq", "BIGINT"),
    ("recorded_at", "VARCHAR"),
    ("event", "VARCHAR"),
    ("status", "VARCHAR"),
    ("run_id", "VARCHAR"),
    ("study", "VARCHAR"),
    ("data_cut", "VARCHAR"),
    ("export_id", "VARCHAR"),
    ("export_dir", "VARCHAR"),
    ("export_sha256", "VARCHAR"),
    ("config_path", "VARCHAR"),
    ("config_sha256", "VARCHAR"),
    ("code_version", "VARCHAR"),
    ("started_at", "VARCHAR"),
    ("finished_at", "VARCHAR"),
    ("outputs", "VARCHAR"),  # JSON: [{"role", "path", "sha256"}]
    ("validation", "VARCHAR"),  # JSON: {"checks", "passed", "failed": [...]}
    ("detail", "VARCHAR"),  # JSON: anything else (failed steps, messages, verify report)
    ("prev_hash", "VARCHAR"),
    ("row_hash", "VARCHAR"),
]
NAMES = [c for c, _ in COLUMNS]
JSON_FIELDS = ("outputs", "validation", "detail")


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def ts_iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat(timespec="seconds")


def _canonical(row: dict[str, Any]) -> str:
    return json.dumps({k: row.get(k) for k in NAMES if k != "row_hash"}, sort_keys=True, ensure_ascii=False)


def row_hash(row: dict[str, Any]) -> str:
    return hashlib.sha256(_canonical(row).encode("utf-8")).hexdigest()


@contextlib.contextmanager
def _exclusive(path: Path, timeout: float = 120.0) -> Iterator[None]:
    """Serialise appenders (the run command, the daemon's sensors, freeze/verify)."""
    lock = path.with_name(path.name + ".lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    start = time.monotonic()
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() - start > timeout:
                    raise TimeoutError(f"{lock}: another process has been appending for {timeout:.0f} s") from None
                time.sleep(0.1)
        yield
    finally:
        os.close(fd)


def _connect(path: Path, read_only: bool) -> duckdb.DuckDBPyConnection:
    # A reader elsewhere (someone inspecting the log) may hold DuckDB's file lock briefly: retry.
    delay = 0.1
    for attempt in range(12):
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.IOException:
            if attempt == 11:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
    raise AssertionError("unreachable")


def append(study_root: Path, entry: dict[str, Any], unique_run: bool = False) -> dict[str, Any] | None:
    """Append one event to the study's log and return the stored row.

    With ``unique_run`` nothing is written (None is returned) if the log already has this run id."""
    study_root = Path(study_root)
    study_root.mkdir(parents=True, exist_ok=True)
    path = study_root / AUDIT_DB
    with _exclusive(path):
        if path.exists():
            os.chmod(path, 0o644)
        try:
            con = _connect(path, read_only=False)
            try:
                cols = ", ".join(f"{c} {t}" for c, t in COLUMNS)
                con.execute(f"CREATE TABLE IF NOT EXISTS run_log ({cols}, PRIMARY KEY (seq))")
                if unique_run and entry.get("run_id"):
                    seen = con.execute(
                        "SELECT count(*) FROM run_log WHERE run_id = ? AND event = ?",
                        [entry["run_id"], entry.get("event", "run")],
                    ).fetchone()[0]
                    if seen:
                        return None
                last = con.execute("SELECT seq, row_hash FROM run_log ORDER BY seq DESC LIMIT 1").fetchone()
                row = {k: None for k in NAMES}
                row.update({k: v for k, v in entry.items() if k in row})
                for k in JSON_FIELDS:
                    if row[k] is not None and not isinstance(row[k], str):
                        row[k] = json.dumps(row[k], sort_keys=True, ensure_ascii=False, default=str)
                row["seq"] = (last[0] + 1) if last else 1
                row["recorded_at"] = row["recorded_at"] or now_iso()
                row["event"] = row["event"] or "run"
                row["prev_hash"] = last[1] if last else GENESIS
                row["row_hash"] = row_hash(row)
                con.execute(
                    f"INSERT INTO run_log ({', '.join(NAMES)}) VALUES ({', '.join('?' * len(NAMES))})",
                    [row[k] for k in NAMES],
                )
            finally:
                con.close()
            head = study_root / HEAD_FILE
            tmp = head.with_name(head.name + ".tmp")
            tmp.write_text(f"{row['seq']} {row['row_hash']}\n", encoding="utf-8")
            os.replace(tmp, head)
            return row
        finally:
            if path.exists():
                os.chmod(path, 0o444)


def read_log(study_root: Path) -> list[dict[str, Any]]:
    path = Path(study_root) / AUDIT_DB
    if not path.exists():
        return []
    con = _connect(path, read_only=True)
    try:
        cur = con.execute(f"SELECT {', '.join(NAMES)} FROM run_log ORDER BY seq")
        return [dict(zip(NAMES, r)) for r in cur.fetchall()]
    finally:
        con.close()


def verify_log(study_root: Path) -> list[str]:
    """Problems found in the log (empty when intact): changed, deleted or truncated rows."""
    problems = []
    rows = read_log(study_root)
    prev, expected_seq = GENESIS, 1
    for row in rows:
        if row["seq"] != expected_seq:
            problems.append(f"seq {expected_seq}..{row['seq'] - 1}: row(s) missing (deleted)")
        if row["prev_hash"] != prev:
            problems.append(f"seq {row['seq']}: chain broken (prev_hash does not match the row before it)")
        if row_hash(row) != row["row_hash"]:
            problems.append(f"seq {row['seq']}: row changed after it was written (hash mismatch)")
        prev, expected_seq = row["row_hash"], row["seq"] + 1
    head_path = Path(study_root) / HEAD_FILE
    if head_path.exists():
        seq, _, digest = head_path.read_text(encoding="utf-8").strip().partition(" ")
        last = rows[-1] if rows else None
        if last is None or int(seq) != last["seq"] or digest != last["row_hash"]:
            problems.append(
                f"log ends at seq {last['seq'] if last else 0} but {HEAD_FILE} records seq {seq}: "
                "rows removed from the end or the log replaced"
            )
    elif rows:
        problems.append(f"{HEAD_FILE} missing")
    return problems


# -- building a run's entry from the Dagster instance ------------------------------------------


def validation_outcome(instance: Any, run_id: str) -> dict[str, Any]:
    from dagster._core.events import DagsterEventType

    records = instance.get_records_for_run(run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION, limit=100000)
    failed, passed = [], 0
    for rec in records.records:
        ev = rec.event_log_entry.dagster_event.event_specific_data
        if ev.passed:
            passed += 1
        else:
            failed.append(
                {"check": ev.check_name, "asset": ev.asset_key.to_user_string(), "severity": ev.severity.value}
            )
    return {
        "checks": passed + len(failed),
        "passed": passed,
        "failed": sorted(failed, key=lambda f: (f["asset"], f["check"])),
        "blocking_failed": any(f["severity"] == "ERROR" for f in failed),
    }


def step_error_text(error) -> str:
    """A failed step's error; after the retry policy gave up, the error of the last attempt."""
    if error is None:
        return ""
    text = error.message.strip()
    if error.cls_name == "RetryRequestedFromPolicy" and error.cause is not None:
        text = f"{error.cause.message.strip()} ({text.lower()})"
    return text


def failed_steps(instance: Any, run_id: str) -> list[dict[str, str]]:
    from dagster._core.events import DagsterEventType

    out = []
    records = instance.get_records_for_run(run_id, of_type=DagsterEventType.STEP_FAILURE, limit=1000)
    for rec in records.records:
        ev = rec.event_log_entry.dagster_event
        out.append({"step": ev.step_key, "error": step_error_text(ev.event_specific_data.error)[:2000]})
    return out


def run_entry(instance: Any, run_id: str) -> dict[str, Any]:
    """The log entry of one finished run, from the Dagster instance and the published manifest."""
    record = instance.get_run_record_by_id(run_id)
    return _run_entry(instance, record, trial_from_run_config(record.dagster_run.run_config))


def _run_entry(instance: Any, record: Any, trial: Any) -> dict[str, Any]:
    """:func:`run_entry` of a run record already read, with the run's ``trial`` resource."""
    run = record.dagster_run
    run_id = run.run_id
    entry: dict[str, Any] = {
        "event": "run",
        "run_id": run_id,
        "status": run.status.value,
        "started_at": ts_iso(record.start_time),
        "finished_at": ts_iso(record.end_time),
        "validation": validation_outcome(instance, run_id),
    }
    detail: dict[str, Any] = {"job": run.job_name, "tags": {k: v for k, v in run.tags.items() if k.startswith("trial/")}}
    steps = failed_steps(instance, run_id)
    if steps:
        detail["failed_steps"] = steps
    entry.update(export_entry(trial, detail, published=run.status.value == "SUCCESS"))
    entry["detail"] = detail
    return entry


def export_entry(trial: Any, detail: dict[str, Any], published: bool) -> dict[str, Any]:
    """Study, export, configuration, code and (if published) outputs of a run's ``trial`` resource."""
    from clinical.ingest import sha256_file

    out: dict[str, Any] = {"export_dir": str(Path(trial.export_dir).resolve())}
    running_code = lambda: f"{code_version()} src:{code_sha256()[:16]}"  # noqa: E731 - only when no manifest says it
    try:
        out["study"] = trial.cfg.study.id
        out["config_path"] = trial.cfg.config_path
        out["config_sha256"] = trial.cfg.config_sha256
        out["export_id"], out["data_cut"] = trial.export_id, trial.cut.isoformat()
    except SETUP_ERRORS as exc:  # a run refused for a bad configuration or export is logged too
        detail["setup_error"] = str(exc)
        out["code_version"] = running_code()
        return out
    manifest_path = trial.final_dir / "manifest.json"
    if published and manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        out["code_version"] = f"{manifest['code_version']} src:{manifest['code_sha256'][:16]}"
        out["export_sha256"] = manifest["export_sha256"]
        out["outputs"] = [
            {"role": o["role"], "path": str(trial.final_dir / o["path"]), "sha256": o["sha256"]}
            for o in manifest["outputs"]
        ] + [{"role": "manifest", "path": str(manifest_path), "sha256": sha256_file(manifest_path)}]
    else:
        out["code_version"] = running_code()
        export = Path(trial.export_dir)
        if export.is_dir():  # the fingerprint the landing area, the archive and a manifest give the export
            out["export_sha256"] = read_delivery(export).fingerprint
    return out


def study_root_of(trial: Any) -> Path:
    try:
        return trial.study_root
    except SETUP_ERRORS:
        return Path(trial.output_root)


def record_run(instance: Any, run_id: str) -> dict[str, Any] | None:
    """Append the entry of a finished run to its study's log, once per run id."""
    # One read of the run record and one trial resource (its study configuration, export identity)
    # serve both the log's location and the entry.
    record = instance.get_run_record_by_id(run_id)
    trial = trial_from_run_config(record.dagster_run.run_config)
    return append(study_root_of(trial), _run_entry(instance, record, trial), unique_run=True)


def print_log(study_root: Path) -> int:
    rows = read_log(study_root)
    for r in rows:
        val = json.loads(r["validation"]) if r["validation"] else {}
        checks = f"checks {val.get('passed', 0)}/{val.get('checks', 0)} passed" if val else ""
        print(
            f"{r['seq']:>4} {r['recorded_at']} {r['event']:<7} {r['status'] or '':<8} {r['data_cut'] or '':<10} "
            f"export {r['export_id'] or '-'} {(r['export_sha256'] or '')[:12]} run {(r['run_id'] or '-')[:8]} {checks}"
        )
    problems = verify_log(study_root)
    for p in problems:
        print(f"AUDIT LOG PROBLEM: {p}")
    print(f"{len(rows)} event(s); chain {'INTACT' if not problems else 'BROKEN'}")
    return 0 if not problems else 1


# -- runs launched by the daemon or the UI -----------------------------------------------------

import dagster as dg


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    name="audit_log_on_success",
    description="Appends every successful run (schedule, sensor or UI launched) to the study's audit log "
    "(output/<study>/audit.duckdb); runs of `python -m pipelines run` are logged by the command itself.",
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=15,
)
def audit_log_on_success(context: dg.RunStatusSensorContext) -> None:
    row = record_run(context.instance, context.dagster_run.run_id)
    if row:
        context.log.info(f"audit log seq {row['seq']}: run {row['run_id']} {row['status']}")
