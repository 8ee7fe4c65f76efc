"""Landing area, archive and sensor (issue 3, items 2 and 3): exports arrive as folders, are archived
byte for byte and read-only with a SHA-256 per file, an identical re-delivery is not loaded twice,
the pipeline never modifies a landing folder, and a run starts when a folder is complete."""

import json
import os
import stat
import time
from pathlib import Path

import dagster as dg
import pytest

from clinical.landing import completeness, export_fingerprint, read_delivery
from clinical.records import ExportFileError
from clinical.sources import COMPLETE_MARKER
from pipelines import sensors
from pipelines.archive import (
    ArchiveError,
    archive_delivery,
    archive_files,
    export_archive,
    find_archived,
    verify_archive,
)
from pipelines.resources import export_identity

ROOT = Path(__file__).resolve().parent.parent
STUDY = str(ROOT / "studies" / "im83.yaml")


def _export(folder: Path, cut: str | None = "2025-12-31", marker: bool = True, rows: int = 1) -> Path:
    folder.mkdir(parents=True)
    (folder / "inf.csv").write_bytes(b"SUBJID,EXSTDAT,DOSELVL,EXDOSE\r\n" + b"01-001,2025-03-01,DL1,5\r\n" * rows)
    (folder / "ae.csv").write_bytes("SUBJID,AETERM\n01-001,发热\n".encode("gb18030"))
    (folder / "sub").mkdir()
    (folder / "sub" / "notes.txt").write_text("delivery note")
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    if cut:
        (folder / "export.json").write_text(json.dumps({"export_id": folder.name, "data_cut": cut}))
    if marker:
        (folder / COMPLETE_MARKER).write_text("done 2025-12-31T23:00:00")
    return folder


def _state(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): (p.read_bytes() if p.is_file() else None, p.stat().st_mtime_ns, p.stat().st_mode)
            for p in sorted(folder.rglob("*"))}


def _old(folder: Path, seconds: float = 3600) -> None:
    past = time.time() - seconds
    for p in folder.rglob("*"):
        os.utime(p, (past, past))


def test_completeness_marker_or_a_stable_file_set(tmp_path):
    marked = _export(tmp_path / "a")
    assert completeness(marked, None, 600)[:2] == (True, f"marker {COMPLETE_MARKER} present")
    quiet = _export(tmp_path / "b", marker=False)
    assert completeness(quiet, None, 600)[0] is False  # just written
    _old(quiet)
    ok, _, signature = completeness(quiet, None, 600)
    assert ok
    assert completeness(quiet, signature, 600)[0] is True  # unchanged since the last look
    assert completeness(quiet, [], 600)[:2] == (False, "file set changed since the last look")
    (tmp_path / "empty").mkdir()
    assert completeness(tmp_path / "empty", None, 0)[:2] == (False, "empty")


def test_archive_is_byte_identical_read_only_with_a_sha256_per_file(tmp_path):
    landing = _export(tmp_path / "landing" / "E1")
    before = _state(landing)
    delivery = read_delivery(landing)
    dest = export_archive(tmp_path / "out" / "IM83", delivery.fingerprint, delivery.export_id)
    assert archive_delivery(delivery, dest) is True
    assert _state(landing) == before  # the landing folder is never modified
    for src in landing.rglob("*"):
        copy = dest / src.relative_to(landing)
        if src.is_file():
            assert copy.read_bytes() == src.read_bytes()
            assert stat.S_IMODE(copy.stat().st_mode) == 0o444
        else:
            assert stat.S_IMODE(copy.stat().st_mode) == 0o555
    sums = (dest.parent / "E1.sha256").read_text().splitlines()
    assert sorted(line.split("  ")[1] for line in sums) == [".DS_Store", "_COMPLETE", "ae.csv", "export.json", "inf.csv", "sub/notes.txt"]
    assert [name for name, _, _ in delivery.files] == ["ae.csv", "export.json", "inf.csv", "sub/notes.txt"]  # the content
    assert verify_archive(dest) == []
    assert archive_delivery(delivery, dest) is False  # never overwritten
    assert find_archived(tmp_path / "out" / "IM83", delivery.fingerprint) == dest


def test_one_rule_for_the_export_id_of_a_delivery_and_of_a_run(tmp_path):
    named = _export(tmp_path / "folder")
    (named / "export.json").write_text(json.dumps({"export_id": "EDC-7", "data_cut": "2025-12-31"}))
    assert read_delivery(named).export_id == export_identity(named)[0] == "EDC-7"
    unnamed = _export(tmp_path / "E2", cut=None)
    assert read_delivery(unnamed).export_id == export_identity(unnamed, "2025-12-31")[0] == "E2"
    (unnamed / "export.json").write_text("[]")
    with pytest.raises(ExportFileError, match=r"export.json: must be a JSON object \(rule FILE-PARSE\)"):
        export_identity(unnamed, "2025-12-31")


def test_export_fingerprint_is_sha256sum_of_the_files():
    import hashlib

    files = [("b.csv", "2" * 64), ("sub/a.csv", "1" * 64)]
    text = f"{'2' * 64}  b.csv\n{'1' * 64}  sub/a.csv\n"
    assert export_fingerprint(files) == hashlib.sha256(text.encode()).hexdigest()


def test_fingerprint_ignores_the_completion_marker(tmp_path):
    delivery = read_delivery(_export(tmp_path / "E1"))
    pairs = [(name, sha) for name, sha, _ in delivery.files]
    assert delivery.fingerprint == export_fingerprint(pairs)
    # The sender's completion marker is not content: the same files without it are the same export.
    twin = _export(tmp_path / "twin", marker=False)
    (twin / "export.json").write_text((tmp_path / "E1" / "export.json").read_text())
    assert read_delivery(twin).fingerprint == delivery.fingerprint


def test_an_export_changing_while_archived_is_not_archived(tmp_path):
    delivery = read_delivery(_export(tmp_path / "E1"))
    (tmp_path / "E1" / "inf.csv").write_bytes(b"SUBJID,EXSTDAT,DOSELVL,EXDOSE\n")  # the sender is still writing
    dest = export_archive(tmp_path / "out", delivery.fingerprint, "E1")
    with pytest.raises(ArchiveError, match="changed while it was being archived"):
        archive_delivery(delivery, dest)
    assert not dest.exists() and not dest.with_name("E1.partial").exists()


def test_scan_archives_and_requests_each_export_once(tmp_path):
    landing, out = tmp_path / "landing", tmp_path / "out"
    _export(landing / "IM83" / "E1")
    first = sensors.scan_landing(STUDY, str(landing), str(out), cursor={"signatures": {}, "requested": []})
    assert [(r.export_id, r.data_cut) for r in first.requests] == [("E1", "2025-12-31")]
    req = first.requests[0]
    assert req.run_key == f"IM83:{req.fingerprint}"
    assert Path(req.export_dir) == export_archive(out / "IM83", req.fingerprint, "E1") and Path(req.export_dir).is_dir()
    # The next look: nothing new. An identical re-delivery under another folder name: recognised, not loaded.
    again = sensors.scan_landing(STUDY, str(landing), str(out), cursor=first.cursor)
    assert again.requests == []
    _export(landing / "IM83" / "E1-resent")
    (landing / "IM83" / "E1-resent" / "export.json").write_text((landing / "IM83" / "E1" / "export.json").read_text())
    resent = sensors.scan_landing(STUDY, str(landing), str(out), cursor=first.cursor)
    assert resent.requests == []
    fresh = sensors.scan_landing(STUDY, str(landing), str(out), cursor=None, settle_seconds=0)
    assert [r.export_id for r in fresh.requests] == ["E1"]
    assert "E1-resent: identical to E1; not loaded twice" in fresh.log
    assert len(list((out / "IM83" / "archive" / "exports").iterdir())) == 1


def test_an_export_already_published_is_not_loaded_again(tmp_path):
    landing, out = tmp_path / "landing", tmp_path / "out"
    _export(landing / "IM83" / "E1")
    req = sensors.scan_landing(STUDY, str(landing), str(out)).requests[0]
    (out / "IM83" / "2025-12-31").mkdir(parents=True)
    (out / "IM83" / "2025-12-31" / "manifest.json").write_text(json.dumps({"export_sha256": req.fingerprint}))
    again = sensors.scan_landing(STUDY, str(landing), str(out))  # no cursor: e.g. the nightly fallback
    assert again.requests == []
    assert "E1: export E1 was already loaded for data cut 2025-12-31; not loaded twice" in again.log


def test_an_export_without_a_data_cut_is_archived_but_not_run(tmp_path):
    landing, out = tmp_path / "landing", tmp_path / "out"
    _export(landing / "IM83" / "E2", cut=None)
    intake = sensors.scan_landing(STUDY, str(landing), str(out))
    assert intake.requests == []
    assert any(line.startswith("E2: not loaded:") and "no data cut" in line for line in intake.log)
    assert find_archived(out / "IM83", read_delivery(landing / "IM83" / "E2").fingerprint) is not None


def test_a_folder_still_being_written_waits(tmp_path):
    landing, out = tmp_path / "landing", tmp_path / "out"
    _export(landing / "IM83" / "E3", marker=False)
    first = sensors.scan_landing(STUDY, str(landing), str(out), cursor={"signatures": {}, "requested": []}, settle_seconds=0)
    assert first.requests == [] and "E3: not complete yet" in first.log[0]  # first look: wait for a second one
    second = sensors.scan_landing(STUDY, str(landing), str(out), cursor=first.cursor, settle_seconds=0)
    assert [r.export_id for r in second.requests] == ["E3"]


def test_the_sensor_requests_a_run_on_the_archived_copy(tmp_path, monkeypatch):
    landing, out = tmp_path / "landing", tmp_path / "out"
    monkeypatch.setenv("TRIAL_STUDY", STUDY)
    monkeypatch.setenv("TRIAL_LANDING", str(landing))
    monkeypatch.setenv("TRIAL_OUTPUT", str(out))
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(instance=instance)
        assert isinstance(sensors.landing_sensor(context), dg.SkipReason)
        _export(landing / "IM83" / "E1")
        context = dg.build_sensor_context(instance=instance, cursor=context.cursor)
        requests = sensors.landing_sensor(context)
        assert len(requests) == 1
        req = requests[0]
        trial = req.run_config["resources"]["trial"]["config"]
        assert trial["data_cut"] == "2025-12-31" and trial["output_root"] == str(out.resolve())
        assert Path(trial["export_dir"]).parent.parent.name == "exports"
        assert req.tags["trial/study"] == "IM83" and req.tags["trial/launched_by"] == "landing_sensor"
        again = sensors.landing_sensor(dg.build_sensor_context(instance=instance, cursor=context.cursor))
        assert isinstance(again, dg.SkipReason)


def test_the_sensor_is_registered_with_the_job():
    from pipelines.definitions import defs

    sensor = defs.resolve_sensor_def("landing_sensor")
    assert sensor.job_name == "trial_job"
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING


def test_intake_command_runs_each_new_export_once(tmp_path, monkeypatch, capsys):
    import pipelines.run

    calls = []
    monkeypatch.setattr(pipelines.run, "run_export", lambda study, export, out, cut: calls.append((export, cut)) or 0)
    landing, out = tmp_path / "landing", tmp_path / "out"
    _export(landing / "IM83" / "E1")
    args = ["--study", STUDY, "--landing", str(landing), "--out", str(out)]
    assert sensors.cli_intake(args) == 0
    assert len(calls) == 1 and calls[0][1] == "2025-12-31" and "/archive/exports/" in calls[0][0]
    (out / "IM83" / "2025-12-31").mkdir(parents=True)
    fp = read_delivery(landing / "IM83" / "E1").fingerprint
    (out / "IM83" / "2025-12-31" / "manifest.json").write_text(json.dumps({"export_sha256": fp}))
    assert sensors.cli_intake(args) == 0
    assert len(calls) == 1
    assert "not loaded twice" in capsys.readouterr().out


def test_the_nightly_fallback_runs_exports_the_sensor_did_not(tmp_path, monkeypatch):
    landing, out = tmp_path / "landing", tmp_path / "out"
    monkeypatch.setenv("TRIAL_STUDY", STUDY)
    monkeypatch.setenv("TRIAL_LANDING", str(landing))
    monkeypatch.setenv("TRIAL_OUTPUT", str(out))
    with dg.instance_for_test() as instance:
        context = dg.build_schedule_context(instance=instance)
        assert isinstance(sensors.scheduled_intake(context), dg.SkipReason)
        folder = _export(landing / "IM83" / "E1", marker=False)
        _old(folder)  # no marker, but quiet for longer than the settling time
        (req,) = sensors.scheduled_intake(context)
        assert req.run_key.startswith("IM83:") and "/archive/exports/" in req.run_config["resources"]["trial"]["config"]["export_dir"]
        assert req.tags["trial/launched_by"] == "nightly_schedule"
    from pipelines.definitions import defs  # the schedule evaluates through it

    assert defs.resolve_schedule_def("nightly_schedule").cron_schedule == "0 4 * * *"


def test_an_export_archived_at_publishing_keeps_its_sub_folders(tmp_path):
    """`python -m pipelines run` on a folder outside the landing area archives what it read when it
    publishes; files in sub-folders keep their paths, and the archive has its SHA-256 list."""
    src = _export(tmp_path / "E1")
    files = [(name, sha) for name, sha, _ in read_delivery(src).files]
    dest = export_archive(tmp_path / "out", read_delivery(src).fingerprint, "E1")
    assert archive_files(src, files, dest) is True
    assert (dest / "sub" / "notes.txt").read_bytes() == (src / "sub" / "notes.txt").read_bytes()
    assert not (dest / "notes.txt").exists()
    assert verify_archive(dest) == []
    assert stat.S_IMODE(dest.stat().st_mode) == 0o555
