"""A run killed with SIGKILL in the middle of ingest or of writing the reports leaves the database and
the earlier outputs of the data cut exactly as they were, leaves no stale lock, and the next run
completes. (The run is held at the chosen point by ``pipelines.faults``, then killed.)"""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import duckdb
import pytest
from conftest import DEMO_CUT, ROOT, STUDY, copy_export

from pipelines import audit
from pipelines.storage import previous_path, recover

NEW_EXPORT_ID = "IM83-EDC-0002"


def _tree(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def setting(demo_run, tmp_path_factory):
    """Earlier outputs of the cut (the demo run's) and a newer export of the same cut."""
    base = tmp_path_factory.mktemp("crash")
    final = base / "out" / "IM83" / DEMO_CUT
    shutil.copytree(demo_run.final, final)
    export = copy_export(demo_run.export, base / "newer")
    (export / "export.json").write_text(json.dumps({"export_id": NEW_EXPORT_ID, "data_cut": DEMO_CUT}))
    return base, final, export, _tree(final)


def _kill_at(point, base, export):
    marker = base / f"paused-{point}"
    env = {**os.environ, "TRIAL_TEST_PAUSE": point, "TRIAL_TEST_PAUSE_MARKER": str(marker)}
    env.pop("DAGSTER_HOME", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines", "run", "--study", str(STUDY), "--export", str(export), "--out",
         str(base / "out")],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    deadline = time.monotonic() + 180
    while not marker.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"run never reached {point}: {proc.communicate()[0].decode()[-3000:]}")
        time.sleep(0.1)
    work = base / "out" / "IM83" / ".work" / DEMO_CUT
    in_flight = sorted(p.name for p in work.iterdir())
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    return in_flight


def _assert_untouched(final, before):
    assert _tree(final) == before
    assert not previous_path(final).exists()
    con = duckdb.connect(str(final / "trial.duckdb"), read_only=True)
    try:
        assert con.execute("SELECT DISTINCT _export_id FROM raw.ae").fetchall() == [("export",)]
        assert con.execute("SELECT count(*) FROM analysis.adsl").fetchone()[0] > 0
    finally:
        con.close()


@pytest.mark.slow
def test_killed_in_the_middle_of_ingest(setting):
    base, final, export, before = setting
    in_flight = _kill_at("raw__ae", base, export)
    assert "trial.duckdb" in in_flight and "dsmb_report.pdf" not in in_flight  # ingest had started, not finished
    _assert_untouched(final, before)


@pytest.mark.slow
def test_killed_in_the_middle_of_writing_reports(setting):
    base, final, export, before = setting
    in_flight = _kill_at("reports", base, export)
    assert "dsmb_report.pdf" in in_flight and "manifest.json" not in in_flight
    _assert_untouched(final, before)


@pytest.mark.slow
def test_the_next_run_completes(setting, monkeypatch):
    from pipelines.run import run_export

    base, final, export, before = setting
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    # Whatever test ran first, there is a half-written work folder from a killed run here.
    assert (base / "out" / "IM83" / ".work" / DEMO_CUT).exists()
    assert run_export(str(STUDY), str(export), str(base / "out")) == 0  # lock free, leftovers cleared
    manifest = json.loads((final / "manifest.json").read_text())
    assert manifest["export_id"] == NEW_EXPORT_ID
    after = _tree(final)
    assert after != before
    for out in manifest["outputs"]:
        assert after[out["path"]] == out["sha256"], out["role"]
    assert not (base / "out" / "IM83" / ".work" / DEMO_CUT).exists()
    con = duckdb.connect(str(final / "trial.duckdb"), read_only=True)
    assert con.execute("SELECT DISTINCT _export_id FROM raw.ae").fetchall() == [(NEW_EXPORT_ID,)]
    con.close()
    # Killed runs never reached the log; the completed one did, and the chain is intact.
    rows = audit.read_log(base / "out" / "IM83")
    assert [r["status"] for r in rows] == ["SUCCESS"] and audit.verify_log(base / "out" / "IM83") == []


def test_an_interrupted_fallback_publish_is_repaired(tmp_path):
    """Where the atomic exchange is unavailable, publish renames twice; a kill between the two leaves
    only ``.<cut>.previous``, which the next run puts back before doing anything else."""
    study = tmp_path / "IM83"
    old = previous_path(study / DEMO_CUT)
    old.mkdir(parents=True)
    (old / "manifest.json").write_text("{}")
    assert recover(study) == [f"restored {study / DEMO_CUT} from {old} (publish was interrupted)"]
    assert (study / DEMO_CUT / "manifest.json").exists() and not old.exists()
    old.mkdir()
    assert recover(study)[0].startswith("removed") and not old.exists()


def test_publish_swaps_atomically(tmp_path):
    from pipelines.storage import publish_dir

    final, work = tmp_path / "cut", tmp_path / ".work" / "cut"
    final.mkdir()
    (final / "a").write_text("old")
    work.mkdir(parents=True)
    (work / "a").write_text("new")
    publish_dir(work, final)
    assert (final / "a").read_text() == "new" and not work.exists()
