"""Alerts when a run fails: a line in the study's alert log, and an e-mail when SMTP is configured.

- ``alert_on_failure`` is a failure hook on every step of ``trial_job``: it fires once per failed
  step (after the retry policy gave up), in whichever process runs the step — the command line,
  ``dagster dev`` or a run worker of the daemon.
- ``alert_on_run_failure`` is a run-failure sensor (needs the daemon): it catches what no step hook
  sees (a run worker that died, a resource that failed to start, e.g. a study already locked or a
  frozen data cut) and logs failed daemon/UI runs in the audit log.

Alert log: ``<output root>/<study>/alerts.log`` (JSON lines), or ``$TRIAL_ALERT_LOG``.
E-mail: set ``TRIAL_SMTP_HOST`` and ``TRIAL_ALERT_TO`` (comma-separated); optional
``TRIAL_SMTP_PORT`` (25), ``TRIAL_SMTP_STARTTLS=1``, ``TRIAL_SMTP_USER``/``TRIAL_SMTP_PASSWORD``,
``TRIAL_ALERT_FROM``. A mail that cannot be sent is itself recorded in the alert log; it never
masks the original failure.
"""

from __future__ import annotations

import fcntl
import json
import os
import smtplib
import socket
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import dagster as dg

from pipelines.audit import SETUP_ERRORS, now_iso, record_run, study_root_of

ALERT_LOG = "alerts.log"


def alert_log_path(study_root: Path) -> Path:
    return Path(os.environ.get("TRIAL_ALERT_LOG") or Path(study_root) / ALERT_LOG)


def _append_line(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def already_alerted(study_root: Path, run_id: str) -> bool:
    path = alert_log_path(study_root)
    if not path.is_file():
        return False
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("run_id") == run_id:
                return True
        except ValueError:
            continue
    return False


def send_mail(subject: str, body: str) -> str | None:
    """Send the alert by SMTP if configured; returns an error text, or None (sent or not configured)."""
    host = os.environ.get("TRIAL_SMTP_HOST")
    recipients = [r.strip() for r in os.environ.get("TRIAL_ALERT_TO", "").split(",") if r.strip()]
    if not host or not recipients:
        return None
    msg = EmailMessage()
    msg["Subject"] = subject
    msg["From"] = os.environ.get("TRIAL_ALERT_FROM", f"trial-pipeline@{socket.gethostname()}")
    msg["To"] = ", ".join(recipients)
    msg.set_content(body)
    try:
        port = int(os.environ.get("TRIAL_SMTP_PORT", "25"))
        with smtplib.SMTP(host, port, timeout=15) as smtp:
            if os.environ.get("TRIAL_SMTP_STARTTLS", "").lower() in ("1", "true", "yes"):
                smtp.starttls()
            if os.environ.get("TRIAL_SMTP_USER"):
                smtp.login(os.environ["TRIAL_SMTP_USER"], os.environ.get("TRIAL_SMTP_PASSWORD", ""))
            smtp.send_message(msg)
    except (OSError, smtplib.SMTPException, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def write_alert(
    study_root: Path, subject: str, body: str, *, study: str = "", run_id: str = "", step: str = ""
) -> Path:
    """Append the alert to the alert log and mail it when SMTP is configured; returns the log path."""
    path = alert_log_path(study_root)
    record = {"time": now_iso(), "severity": "ERROR", "study": study, "run_id": run_id, "step": step,
              "subject": subject, "body": body}
    _append_line(path, record)
    error = send_mail(subject, body)
    if error:
        _append_line(path, {**record, "subject": f"could not mail the alert above: {error}", "body": ""})
    return path


def _study(trial: Any) -> str:
    try:
        return trial.cfg.study.id
    except SETUP_ERRORS:
        return ""


@dg.failure_hook(name="alert_on_failure", required_resource_keys={"trial"})
def alert_on_failure(context: dg.HookContext) -> None:
    trial = context.resources.trial
    study = _study(trial)
    exc = context.op_exception
    message = str(exc).strip() if exc else "step failed"
    subject = f"[{study or 'trial'}] pipeline step {context.step_key} failed (run {context.run_id[:8]})"
    body = (
        f"Study {study}, export {trial.export_dir}, data cut {trial.data_cut or '(from export.json)'}\n"
        f"Run {context.run_id}, job {context.job_name}, step {context.step_key}\n\n{message}\n\n"
        "The previous outputs of this data cut are unchanged."
    )
    path = write_alert(study_root_of(trial), subject, body, study=study, run_id=context.run_id, step=context.step_key)
    context.log.error(f"alert written to {path}")


@dg.run_failure_sensor(
    name="alert_on_run_failure",
    description="For runs launched by the daemon or the UI: writes an alert when a run failed without a step "
    "alert (e.g. a run worker died, or the study was locked or frozen) and logs the run in the audit log.",
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=15,
)
def alert_on_run_failure(context: dg.RunFailureSensorContext) -> None:
    from pipelines.resources import trial_from_run_config

    run = context.dagster_run
    trial = trial_from_run_config(run.run_config)
    root = study_root_of(trial)
    if not already_alerted(root, run.run_id):
        message = context.failure_event.message if context.failure_event else "run failed"
        write_alert(
            root,
            f"[{_study(trial) or 'trial'}] pipeline run {run.run_id[:8]} failed",
            f"Run {run.run_id} of job {run.job_name} failed.\n\n{message}",
            study=_study(trial),
            run_id=run.run_id,
            step="(run)",
        )
    record_run(context.instance, run.run_id)
