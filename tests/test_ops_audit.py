"""The study's audit log: append-only by a hash chain, kept beside (not inside) the data-cut folders."""

import itertools
import json
import os
import stat

import duckdb
import pytest

from pipelines import audit


def _entry(i: int) -> dict:
    return {
        "event": "run",
        "status": "SUCCESS",
        "run_id": f"run-{i}",
        "study": "IM83",
        "data_cut": "2025-12-31",
        "export_id": "export",
        "export_sha256": "ab" * 32,
        "outputs": [{"role": "database", "path": "trial.duckdb", "sha256": "cd" * 32}],
        "validation": {"checks": 3, "passed": 3, "failed": []},
    }


@pytest.fixture
def log(tmp_path):
    root = tmp_path / "IM83"
    for i in range(1, 4):
        audit.append(root, _entry(i))
    return root


def _tamper(root, sql):
    path = root / audit.AUDIT_DB
    os.chmod(path, 0o644)
    con = duckdb.connect(str(path))
    con.execute(sql)
    con.close()


def test_rows_are_chained_and_intact(log):
    rows = audit.read_log(log)
    assert [r["seq"] for r in rows] == [1, 2, 3]
    assert rows[0]["prev_hash"] == audit.GENESIS
    assert all(b["prev_hash"] == a["row_hash"] for a, b in itertools.pairwise(rows))
    assert json.loads(rows[0]["outputs"])[0]["role"] == "database"
    assert audit.verify_log(log) == []
    # Read-only between appends: other users' tools cannot write it.
    assert not os.stat(log / audit.AUDIT_DB).st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)


def test_an_update_is_detected(log):
    _tamper(log, "UPDATE run_log SET status = 'FAILURE' WHERE seq = 2")
    assert audit.verify_log(log) == ["seq 2: row changed after it was written (hash mismatch)"]


def test_deleting_a_row_in_the_middle_is_detected(log):
    _tamper(log, "DELETE FROM run_log WHERE seq = 2")
    problems = audit.verify_log(log)
    assert "seq 2..2: row(s) missing (deleted)" in problems
    assert "seq 3: chain broken (prev_hash does not match the row before it)" in problems


def test_deleting_the_last_row_is_detected_by_the_head(log):
    _tamper(log, "DELETE FROM run_log WHERE seq = 3")
    assert audit.verify_log(log) == [
        "log ends at seq 2 but audit.head records seq 3: rows removed from the end or the log replaced"
    ]


def test_rewriting_the_chain_consistently_still_breaks_the_head(log):
    # Even a forger who recomputes every hash after an UPDATE is caught by the head file's hash.
    _tamper(log, "UPDATE run_log SET status = 'FAILURE' WHERE seq = 3")
    rows = audit.read_log(log)
    rows[-1]["row_hash"] = audit.row_hash(rows[-1])
    _tamper(log, f"UPDATE run_log SET row_hash = '{rows[-1]['row_hash']}' WHERE seq = 3")
    assert audit.verify_log(log) == [
        "log ends at seq 3 but audit.head records seq 3: rows removed from the end or the log replaced"
    ]


def test_a_run_is_logged_once(log):
    assert audit.append(log, _entry(2), unique_run=True) is None
    assert audit.append(log, _entry(4), unique_run=True)["seq"] == 4
    assert audit.verify_log(log) == []


def test_a_failed_run_logs_the_fingerprint_the_archive_and_manifest_use(tmp_path):
    """Without a manifest the export is fingerprinted from its folder: sub-folders included, the
    sender's completion marker and hidden files left out, as the landing area and the manifest do."""
    import datetime as dt
    from types import SimpleNamespace

    from clinical.landing import read_delivery

    export = tmp_path / "E1"
    (export / "sub").mkdir(parents=True)
    (export / "ae.csv").write_text("SUBJID\n01-001\n")
    (export / "sub" / "notes.txt").write_text("x")
    (export / "_COMPLETE").write_text("")
    (export / ".DS_Store").write_text("")
    cfg = SimpleNamespace(study=SimpleNamespace(id="IM83"), config_path="im83.yaml", config_sha256="0" * 64)
    trial = SimpleNamespace(export_dir=str(export), cfg=cfg, export_id="E1", cut=dt.date(2025, 12, 31),
                            final_dir=tmp_path / "never-published")
    entry = audit.export_entry(trial, {}, published=False)
    assert entry["export_sha256"] == read_delivery(export).fingerprint
    (export / "_COMPLETE").unlink()
    (export / ".DS_Store").unlink()
    assert audit.export_entry(trial, {}, published=False)["export_sha256"] == entry["export_sha256"]


def test_the_demo_run_is_in_its_study_log(demo_run):
    root = demo_run.out / "IM83"
    rows = [r for r in audit.read_log(root) if r["event"] == "run" and r["status"] == "SUCCESS"]
    assert rows, "the demo run was not logged"
    row = rows[0]
    manifest = json.loads((demo_run.final / "manifest.json").read_text())
    assert row["export_sha256"] == manifest["export_sha256"]
    assert row["config_sha256"] == manifest["config"]["sha256"]
    assert row["code_version"].startswith(manifest["code_version"])
    assert row["started_at"] <= row["finished_at"]
    outputs = {o["role"]: o["sha256"] for o in json.loads(row["outputs"])}
    assert {o["role"]: o["sha256"] for o in manifest["outputs"]}.items() <= outputs.items()
    validation = json.loads(row["validation"])
    assert validation["checks"] > 200 and validation["failed"] == []
    assert audit.verify_log(root) == []
