"""The production profile (deploy/): a PostgreSQL-backed Dagster instance. A job run and a tick of
the nightly schedule on an export in the landing area (its run dequeued and executed by a real ``dagster-daemon``) against a real
local PostgreSQL server, with the run history, the tick and the audit log checked there.

PostgreSQL: ``$TRIAL_TEST_POSTGRES_URL`` (postgresql://user:password@host:port/db) if set, else a
throwaway cluster started with the server binaries from Debian's postgresql package (.ci/run
installs it). Without either the test is skipped, except with CI=true, where it fails.
"""

import contextlib
import datetime as dt
import glob
import json
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from conftest import DEMO_CUT, ROOT, STUDY, copy_export

IN_CI = os.environ.get("CI", "").lower() == "true"


def _need(ok: bool, reason: str) -> None:
    if not ok:
        if IN_CI:
            pytest.fail(f"{reason}; CI=true requires it (.ci/run installs it)")
        pytest.skip(reason)


def _pg_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(p.split("/")[4]))
    return found[-1] if found else shutil.which(name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres():
    """Connection settings {host, port, user, password, db} of a PostgreSQL server for the test."""
    url = os.environ.get("TRIAL_TEST_POSTGRES_URL")
    if url:
        u = urllib.parse.urlparse(url)
        yield {"host": u.hostname, "port": str(u.port or 5432), "user": u.username, "password": u.password or "",
               "db": u.path.lstrip("/")}
        return
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    _need(bool(initdb and pg_ctl), "PostgreSQL server binaries not installed (Debian package postgresql)")
    as_user: list[str] = []
    data_root = Path(tempfile.mkdtemp(prefix="trial-pg-"))
    if os.geteuid() == 0:  # the server refuses to run as root: run it as the postgres user
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            _need(False, "running as root and there is no postgres user to run the server as")
        os.chown(data_root, owner.pw_uid, owner.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = data_root / "data", _free_port()
    subprocess.run([*as_user, initdb, "-D", str(data), "-U", "dagster", "--auth=trust", "-E", "UTF8", "--no-sync"],
                   check=True, capture_output=True)
    subprocess.run(
        [*as_user, pg_ctl, "-D", str(data), "-l", str(data_root / "server.log"), "-w", "-t", "60", "start", "-o",
         f"-p {port} -k {data_root} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"],
        check=True, capture_output=True,
    )
    try:
        import psycopg2

        con = psycopg2.connect(host="127.0.0.1", port=port, user="dagster", dbname="postgres")
        con.autocommit = True
        con.cursor().execute("CREATE DATABASE dagster_test")
        con.close()
        yield {"host": "127.0.0.1", "port": str(port), "user": "dagster", "password": "", "db": "dagster_test"}
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"], capture_output=True, check=False)
        shutil.rmtree(data_root, ignore_errors=True)


def _query(pg: dict, sql: str, args=()):
    import psycopg2

    con = psycopg2.connect(host=pg["host"], port=pg["port"], user=pg["user"], password=pg["password"], dbname=pg["db"])
    try:
        cur = con.cursor()
        cur.execute(sql, args)
        return cur.fetchall()
    finally:
        con.close()


def _wait(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: {proc.args[0]} exited with {proc.returncode}")
        time.sleep(1)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


@pytest.mark.slow
@pytest.mark.skipif(
    not (os.environ.get("TRIAL_TEST_POSTGRES_URL") or (_pg_bin("initdb") and _pg_bin("pg_ctl"))) and not IN_CI,
    reason="no PostgreSQL: neither TRIAL_TEST_POSTGRES_URL nor the server binaries (Debian package postgresql)",
)
def test_job_and_schedule_tick_on_postgres(postgres, demo_run, tmp_path, monkeypatch):
    import dagster as dg

    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "deploy" / "dagster.yaml", home / "dagster.yaml")
    # An export delivered to the landing area, complete (marker), that the nightly schedule picks up.
    export = copy_export(demo_run.export, tmp_path / "landing" / "IM83" / "IM83-nightly")
    (export / "export.json").write_text(json.dumps({"export_id": "IM83-nightly", "data_cut": DEMO_CUT}))
    (export / "_COMPLETE").write_text("")
    env = {
        "DAGSTER_HOME": str(home),
        "DAGSTER_PG_HOST": postgres["host"],
        "DAGSTER_PG_PORT": postgres["port"],
        "DAGSTER_PG_USER": postgres["user"],
        "DAGSTER_PG_PASSWORD": postgres["password"],
        "DAGSTER_PG_DB": postgres["db"],
        "TRIAL_STUDY": str(STUDY),
        "TRIAL_LANDING": str(tmp_path / "landing"),
        "TRIAL_OUTPUT": str(tmp_path / "nightly"),
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    full_env = {**os.environ, **env}

    # 1. A job run from the command line, recorded in PostgreSQL (another output root: it runs while
    #    the scheduled run below runs; the study lock is per output root).
    cli = subprocess.Popen(
        [sys.executable, "-m", "pipelines", "run", "--study", str(STUDY), "--export", str(demo_run.export),
         "--out", str(tmp_path / "cli"), "--data-cut", DEMO_CUT],
        cwd=ROOT, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )

    # 2. A tick of the nightly schedule, evaluated by the scheduler's own code at 04:00 Asia/Shanghai.
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import WorkspaceFileTarget
    from dagster._scheduler.scheduler import launch_scheduled_runs

    logger = logging.getLogger("test_scheduler")
    now = dt.datetime.now(dt.UTC)
    local = now.astimezone(ZoneInfo("Asia/Shanghai"))
    tick = local.replace(hour=4, minute=0, second=0, microsecond=0)
    if tick <= local:
        tick += dt.timedelta(days=1)
    with dg.DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        with WorkspaceProcessContext(instance, WorkspaceFileTarget(paths=[str(ROOT / "workspace.yaml")])) as ctx:
            for end in (now, tick.astimezone(dt.UTC) + dt.timedelta(seconds=30)):
                list(launch_scheduled_runs(ctx, logger, end, iteration_times={}))
        queued = instance.get_runs(dg.RunsFilter(tags={"dagster/schedule_name": "nightly_schedule"}))
        assert len(queued) == 1 and queued[0].status == dg.DagsterRunStatus.QUEUED
        scheduled_id = queued[0].run_id
        assert queued[0].tags["trial/study"] == "IM83"
    # The tick archived the export and the run reads the archived copy; the landing folder can go
    # (and must, here: the daemon's landing sensor would otherwise queue the same export again).
    shutil.rmtree(tmp_path / "landing")

    # 3. The daemon dequeues it (run queue: one per study) and a run worker executes it.
    with open(tmp_path / "daemon.log", "wb") as log:
        daemon = subprocess.Popen(
            [str(Path(sys.executable).with_name("dagster-daemon")), "run", "-w", "workspace.yaml"],
            cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        status = _wait(
            lambda: next(
                (s for (s,) in _query(postgres, "SELECT status FROM runs WHERE run_id = %s", (scheduled_id,))
                 if s in ("SUCCESS", "FAILURE", "CANCELED")),
                None,
            ),
            600, "the scheduled run to finish", daemon,
        )
        assert status == "SUCCESS", (tmp_path / "daemon.log").read_text()[-5000:]
        # 4. The daemon's run-status sensor appends the scheduled run to the study's audit log.
        from pipelines import audit

        row = _wait(
            lambda: next((r for r in audit.read_log(tmp_path / "nightly" / "IM83") if r["run_id"] == scheduled_id), None),
            120, "the audit sensor to log the scheduled run", daemon,
        )
    finally:
        if cli.poll() is None and sys.exc_info()[0] is not None:
            cli.kill()
        os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):  # its code server and run workers too
            os.killpg(daemon.pid, signal.SIGKILL)
        daemon.wait()
    cli_output = cli.communicate(timeout=600)[0]
    assert cli.returncode == 0, cli_output
    assert row["status"] == "SUCCESS" and row["export_id"] == "IM83-nightly"
    assert json.loads((tmp_path / "nightly" / "IM83" / DEMO_CUT / "manifest.json").read_text())["export_id"] == "IM83-nightly"

    # The run history, in PostgreSQL itself.
    runs = dict(_query(postgres, "SELECT run_id, status FROM runs"))
    assert set(runs.values()) == {"SUCCESS"} and len(runs) == 2 and scheduled_id in runs
    tags = dict(_query(postgres, "SELECT key, value FROM run_tags WHERE run_id = %s", (scheduled_id,)))
    assert tags["dagster/schedule_name"] == "nightly_schedule" and tags["trial/study"] == "IM83"
    ticks = _query(postgres, "SELECT type, status, tick_body FROM job_ticks WHERE type = 'SCHEDULE'")
    assert [(t, s) for t, s, _ in ticks] == [("SCHEDULE", "SUCCESS")] and scheduled_id in ticks[0][2]
    materialized = _query(postgres, "SELECT count(DISTINCT asset_key) FROM event_logs WHERE run_id = %s AND "
                                    "dagster_event_type = 'ASSET_MATERIALIZATION'", (scheduled_id,))[0][0]
    assert materialized >= 29
