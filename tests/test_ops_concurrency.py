"""No collisions: at most one run per study writes at a time.

- Two command-line runs started together: one completes, the other is refused at once with a clear
  message and changes nothing; the database and the outputs are intact.
- A run that does not go through the command line (daemon, UI) is refused by the study lock in the
  ``trial`` resource while the command-line run writes.
- ``--wait`` queues behind the running one instead of refusing.
- The instance's run queue: one run at a time, one per ``trial/study`` tag value, pool limit 1.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import yaml
from conftest import DEMO_CUT, ROOT, STUDY

from pipelines import audit, lock


def _cli(export, out, *extra):
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    return subprocess.Popen(
        [sys.executable, "-m", "pipelines", "run", "--study", str(STUDY), "--export", str(export), "--out", str(out),
         "--data-cut", DEMO_CUT, *extra],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


@pytest.mark.slow
def test_two_runs_started_together(demo_run, tmp_path):
    out = tmp_path / "out"
    a, b = _cli(demo_run.export, out), _cli(demo_run.export, out)
    # While the winner writes, a run launched by Dagster itself (as the daemon or the UI would) is refused.
    lock_file = out / "IM83" / ".lock"
    deadline = time.monotonic() + 60
    while not (lock_file.exists() and lock_file.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.05)
    from pipelines.definitions import defs

    trial = {"study_config": str(STUDY), "export_dir": str(demo_run.export), "output_root": str(out),
             "data_cut": DEMO_CUT}
    direct = defs.resolve_job_def("trial_job").execute_in_process(
        run_config={"resources": {"trial": {"config": trial}}}, raise_on_error=False,
        instance=dg.DagsterInstance.ephemeral(),
    )
    results = [(p.wait(timeout=300), p.stdout.read(), p.stderr.read()) for p in (a, b)]
    assert sorted(rc for rc, _, _ in results) == [0, 3], results
    (_, won, _), (_, _, refused) = sorted(results, key=lambda r: r[0])
    assert "outputs in" in won
    assert "refused: study IM83 is busy" in refused and "this run was refused and changed nothing" in refused
    assert "--wait" in refused
    assert not direct.success
    init_failure = [e for e in direct.all_events if e.event_type_value == "RESOURCE_INIT_FAILURE"]
    assert init_failure and "study IM83 is busy" in _messages(init_failure[0].event_specific_data.error)
    # The database and the outputs are intact and agree with the manifest.
    final = out / "IM83" / DEMO_CUT
    manifest = json.loads((final / "manifest.json").read_text())
    from clinical.ingest import sha256_file

    for o in manifest["outputs"]:
        assert sha256_file(final / o["path"]) == o["sha256"], o["role"]
    con = duckdb.connect(str(final / "trial.duckdb"), read_only=True)
    assert con.execute("SELECT count(*) FROM analysis.adsl").fetchone()[0] == demo_run.truth["counts"]["screened"]
    con.close()
    # Both outcomes are in the audit log.
    statuses = sorted(r["status"] for r in audit.read_log(out / "IM83"))
    assert statuses == ["REFUSED", "SUCCESS"] and audit.verify_log(out / "IM83") == []


def _messages(error) -> str:
    out = []
    while error is not None:
        out.append(error.message)
        error = error.cause
    return "\n".join(out)


def _hold_lock(root: Path, seconds: float) -> subprocess.Popen:
    code = (
        "import sys, time; from pipelines import lock; "
        f"lock.acquire(sys.argv[1], 'IM83', purpose='holder'); print('held', flush=True); time.sleep({seconds})"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(root)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_the_lock_refuses_or_waits(tmp_path):
    root = tmp_path / "IM83"
    holder = _hold_lock(root, 2.0)
    try:
        with pytest.raises(lock.StudyBusyError) as busy:
            lock.acquire(root, "IM83", wait=0.3)
        assert f"pid {holder.pid}" in str(busy.value) and "holder" in str(busy.value)
        start = time.monotonic()
        lock.acquire(root, "IM83", wait=30)  # queues behind the holder, then gets it
        assert 1.0 < time.monotonic() - start < 30
        assert lock.is_held_here(root)
        lock.acquire(root, "IM83")  # re-entrant: the command line and its run's resource
        lock.release(root)
        assert lock.is_held_here(root)
        lock.release(root)
        assert not lock.is_held_here(root)
    finally:
        holder.wait(timeout=30)


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    root = tmp_path / "IM83"
    holder = _hold_lock(root, 60)
    holder.kill()
    holder.wait()
    lock.acquire(root, "IM83", wait=5)
    lock.release(root)


@pytest.mark.parametrize("config", ["pipelines/dagster.yaml", "deploy/dagster.yaml"])
def test_run_queue_allows_one_run_per_study(config, tmp_path, monkeypatch):
    doc = yaml.safe_load((ROOT / config).read_text())
    runs = doc["concurrency"]["runs"]
    assert runs["max_concurrent_runs"] >= 1
    assert {"key": "trial/study", "value": {"applyLimitPerUniqueValue": True}, "limit": 1} in runs[
        "tag_concurrency_limits"
    ]
    assert doc["concurrency"]["pools"]["default_limit"] == 1
    if config.startswith("pipelines"):  # the local instance loads as it is (deploy/ needs PostgreSQL)
        (tmp_path / "dagster.yaml").write_text((ROOT / config).read_text())
        monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
        with dg.DagsterInstance.get() as instance:
            queue = instance.get_concurrency_config().run_queue_config
            assert queue.max_concurrent_runs == 1
            assert queue.tag_concurrency_limits[0]["key"] == "trial/study"
            assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
            assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
