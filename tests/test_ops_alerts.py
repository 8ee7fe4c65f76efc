"""Scheduling and alerting: retry policy for transient failures, failure hook writing an alert to the
alert log and by SMTP, and a failed run logged in the audit log with what failed."""

import json
import socketserver
import threading
from pathlib import Path

import dagster as dg
import pytest
from conftest import DEMO_CUT, STUDY, copy_export

from pipelines import audit
from pipelines.alerts import alert_on_failure
from pipelines.definitions import defs
from pipelines.resources import TrialResource
from pipelines.resources import STUDY_TAG
from pipelines.schedules import RETRY_POLICY


class _SMTPHandler(socketserver.StreamRequestHandler):
    """Just enough SMTP for smtplib: records every message it receives."""

    def handle(self):
        def say(text):
            self.wfile.write((text + "\r\n").encode())

        say("220 test ESMTP")
        data, lines = False, []
        while line := self.rfile.readline():
            text = line.decode("utf-8", "replace").rstrip("\r\n")
            if data:
                if text == ".":
                    self.server.messages.append("\n".join(lines))
                    data, lines = False, []
                    say("250 queued")
                else:
                    lines.append(text[1:] if text.startswith("..") else text)
                continue
            verb = text[:4].upper()
            if verb in ("EHLO", "HELO"):
                say("250 test")
            elif verb == "DATA":
                data = True
                say("354 end with .")
            elif verb == "QUIT":
                say("221 bye")
                return
            else:
                say("250 ok")


@pytest.fixture
def smtp_server(monkeypatch):
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _SMTPHandler)
    server.daemon_threads = True
    server.messages = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("TRIAL_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("TRIAL_SMTP_PORT", str(server.server_address[1]))
    monkeypatch.setenv("TRIAL_ALERT_TO", "data-management@example.org, safety@example.org")
    yield server
    server.shutdown()
    server.server_close()


def _job(tmp_path, op_fn, **kwargs):
    trial = TrialResource(study_config=str(STUDY), export_dir=str(tmp_path), output_root=str(tmp_path / "out"),
                          data_cut=DEMO_CUT)
    op = dg.op(name="ingest_step", required_resource_keys={"trial"})(op_fn)

    @dg.job(name="tiny", resource_defs={"trial": trial}, hooks={alert_on_failure}, **kwargs)
    def tiny():
        op()

    return tiny


def _alerts(tmp_path):
    path = tmp_path / "out" / "IM83" / "alerts.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_trial_job_retries_alerts_and_is_tagged_per_study():
    job = defs.resolve_job_def("trial_job")
    assert job.op_retry_policy == RETRY_POLICY and RETRY_POLICY.max_retries == 2
    assert {h.name for h in job.hook_defs} >= {"alert_on_failure"}
    assert job.run_tags[STUDY_TAG] == "IM83"
    sensors = {s.name: s for s in defs.sensors}
    assert {"alert_on_run_failure", "audit_log_on_success"} <= set(sensors)
    assert all(sensors[n].default_status == dg.DefaultSensorStatus.RUNNING for n in ("alert_on_run_failure", "audit_log_on_success"))


def test_a_transient_failure_is_retried_and_raises_no_alert(tmp_path):
    attempts = tmp_path / "attempts"

    def flaky(context):
        n = int(attempts.read_text()) + 1 if attempts.exists() else 1
        attempts.write_text(str(n))
        if n == 1:
            raise OSError("database file briefly locked")

    job = _job(tmp_path, flaky, op_retry_policy=dg.RetryPolicy(max_retries=2, delay=0.1))
    result = job.execute_in_process(raise_on_error=False)
    assert result.success and attempts.read_text() == "2"
    assert _alerts(tmp_path) == []


def test_failure_hook_writes_the_alert_log_and_mails_it(tmp_path, smtp_server):
    def broken(context):
        raise RuntimeError("lb.csv: file missing from export (rule FILE-MISSING)")

    result = _job(tmp_path, broken).execute_in_process(raise_on_error=False)
    assert not result.success
    [alert] = _alerts(tmp_path)
    assert alert["step"] == "ingest_step" and alert["run_id"] == result.run_id and alert["study"] == "IM83"
    assert "FILE-MISSING" in alert["body"] and "previous outputs of this data cut are unchanged" in alert["body"]
    [mail] = smtp_server.messages
    assert f"Subject: [IM83] pipeline step ingest_step failed (run {result.run_id[:8]})" in mail
    assert "To: data-management@example.org, safety@example.org" in mail
    assert "FILE-MISSING" in mail


def test_an_unreachable_mail_server_is_logged_not_raised(tmp_path, monkeypatch):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("TRIAL_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("TRIAL_SMTP_PORT", str(port))
    monkeypatch.setenv("TRIAL_ALERT_TO", "safety@example.org")

    def broken(context):
        raise RuntimeError("boom")

    result = _job(tmp_path, broken).execute_in_process(raise_on_error=False)
    assert not result.success
    alerts = _alerts(tmp_path)
    assert len(alerts) == 2 and "boom" in alerts[0]["body"]
    assert alerts[1]["subject"].startswith("could not mail the alert above: ConnectionRefusedError")


def test_a_failed_pipeline_run_alerts_and_is_in_the_audit_log(demo_run, tmp_path, capsys, monkeypatch):
    from pipelines.run import run_export

    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    bad = copy_export(demo_run.export, tmp_path / "nolab")
    (bad / "lb.csv").unlink()
    rc = run_export(str(STUDY), str(bad), str(tmp_path / "out"), DEMO_CUT)
    assert rc == 1
    alerts = {a["step"]: a for a in _alerts(tmp_path)}
    assert "lb.csv: file missing from export nolab (rule FILE-MISSING)" in alerts["ingest"]["body"]
    err = capsys.readouterr().err
    # After the retries, the command still names the original error.
    # (Every form is loaded by the one "ingest" step.)
    assert "step ingest failed: dagster._core.definitions.events.Failure: lb.csv: file missing" in err
    [row] = audit.read_log(Path(tmp_path / "out" / "IM83"))
    assert row["status"] == "FAILURE" and row["export_id"] == "nolab" and row["outputs"] is None
    detail = json.loads(row["detail"])
    assert "ingest" in {s["step"] for s in detail["failed_steps"]}
    assert detail["tags"]["trial/study"] == "IM83"
