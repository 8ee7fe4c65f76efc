"""Freeze a data cut for a DSMB meeting (read-only; a later run is refused) and verify it by
regenerating it from the archived export (every byte compared)."""

import json
import os
import shutil
import stat

import dagster as dg
import duckdb
import pytest
from conftest import DEMO_CUT, ROOT, STUDY

from pipelines import audit
from pipelines.freeze import FROZEN, compare_dirs, freeze, verify


@pytest.fixture(scope="module")
def frozen(demo_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("freeze") / "out"
    shutil.copytree(demo_run.out, out)
    assert freeze(str(out), str(STUDY), DEMO_CUT, reason="DSMB meeting 2026-01-20") == 0
    return out, out / "IM83" / DEMO_CUT


def _modes(folder):
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()}


def test_freeze_makes_the_cut_read_only(frozen):
    out, final = frozen
    record = json.loads((final / FROZEN).read_text())
    assert record["reason"] == "DSMB meeting 2026-01-20" and record["data_cut"] == DEMO_CUT
    assert set(_modes(final).values()) == {0o444}
    assert stat.S_IMODE(final.stat().st_mode) == 0o555
    assert "archive/exports" in record["export_archive"]
    events = [(r["event"], r["status"]) for r in audit.read_log(out / "IM83")]
    assert events[-1] == ("freeze", "FROZEN") and audit.verify_log(out / "IM83") == []
    assert freeze(str(out), str(STUDY), DEMO_CUT) == 0  # idempotent


def test_a_later_run_cannot_overwrite_a_frozen_cut(frozen, demo_run, capsys, monkeypatch):
    from pipelines.definitions import defs
    from pipelines.run import EXIT_FROZEN, run_export

    out, final = frozen
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    before = {p.name: p.read_bytes() for p in final.iterdir()}
    assert run_export(str(STUDY), str(demo_run.export), str(out), DEMO_CUT) == EXIT_FROZEN
    assert "is frozen (DSMB meeting 2026-01-20" in capsys.readouterr().err
    # A run launched by the daemon or the UI is refused by the resource before it writes anything.
    trial = {"study_config": str(STUDY), "export_dir": str(demo_run.export), "output_root": str(out),
             "data_cut": DEMO_CUT}
    result = defs.resolve_job_def("trial_job").execute_in_process(
        run_config={"resources": {"trial": {"config": trial}}}, raise_on_error=False,
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "RESOURCE_INIT_FAILURE")
    error, text = failure.event_specific_data.error, []
    while error is not None:
        text.append(error.message)
        error = error.cause
    assert "is frozen" in "\n".join(text)
    assert {p.name: p.read_bytes() for p in final.iterdir()} == before
    assert [r["status"] for r in audit.read_log(out / "IM83")][-1] == "FROZEN"


def _pin_code(monkeypatch, code_version: str, code_sha256: str) -> None:
    """The regeneration's manifest records this code (commit, hash of the source files) instead of
    the checkout's. Other engineers edit and commit in the same tree while the suite runs, and the
    published cut was made by the session's demo run, possibly minutes before: without this a file
    saved (or a commit made) in between would be reported as a code difference."""
    import assets.publish

    monkeypatch.setattr(assets.publish, "code_version", lambda: code_version)
    monkeypatch.setattr(assets.publish, "code_sha256", lambda: code_sha256)


@pytest.mark.slow
def test_verify_regenerates_every_byte(frozen, capsys, monkeypatch):
    out, final = frozen
    # The code the published cut was made with, for the regeneration too: this test proves that the
    # same code regenerates every byte; test_verify_notes_a_different_code proves that verify
    # notices other code.
    published = json.loads((final / "manifest.json").read_text())
    _pin_code(monkeypatch, published["code_version"], published["code_sha256"])
    assert verify(str(out), str(STUDY), DEMO_CUT, keep=True) == 0
    printed = capsys.readouterr().out
    for name in ("trial.duckdb", "dsmb_report.pdf", "sponsor_workbook.xlsx", "registry_results.xml", "manifest.json"):
        assert f"{name}: identical" in printed, printed
    assert "VERIFIED: IM83 2025-12-31" in printed
    row = audit.read_log(out / "IM83")[-1]
    assert (row["event"], row["status"]) == ("verify", "IDENTICAL") and json.loads(row["detail"])["frozen"]


@pytest.mark.slow
def test_verify_notes_a_different_code(frozen, capsys, monkeypatch):
    """A regeneration by other code (another source hash, another commit) is not called identical:
    verify names both manifest fields, and the manifest is not listed as identical. As documented
    (pipelines.freeze), a code difference alone is a note: the outputs' bytes decide the verdict."""
    out, final = frozen
    published = json.loads((final / "manifest.json").read_text())
    other_sha, other_commit = "0" * 64, "f" * 40
    assert published["code_sha256"] != other_sha and published["code_version"] != other_commit
    _pin_code(monkeypatch, other_commit, other_sha)
    assert verify(str(out), str(STUDY), DEMO_CUT) == 0
    printed = capsys.readouterr().out
    assert f"note: manifest field 'code_sha256': \"{published['code_sha256']}\" -> \"{other_sha}\"" in printed, printed
    assert f"note: manifest field 'code_version': \"{published['code_version']}\" -> \"{other_commit}\"" in printed
    assert "manifest.json: identical" not in printed
    for name in ("trial.duckdb", "dsmb_report.pdf", "sponsor_workbook.xlsx", "registry_results.xml"):
        assert f"{name}: identical" in printed, printed
    row = audit.read_log(out / "IM83")[-1]
    assert (row["event"], row["status"]) == ("verify", "IDENTICAL")
    notes = json.loads(row["detail"])["notes"]
    assert [n.split(":")[0] for n in notes] == ["manifest field 'code_sha256'", "manifest field 'code_version'"], notes


def test_verify_reports_the_bytes_that_differ(frozen, tmp_path):
    """The comparison verify prints, on a published folder that was tampered with."""
    out, final = frozen
    regenerated = next((out / "IM83" / ".verify").glob(f"*/IM83/{DEMO_CUT}"), None)
    if regenerated is None:  # the verify test did not run (e.g. -k): compare against an identical copy
        regenerated = shutil.copytree(final, tmp_path / "regenerated")
    published = shutil.copytree(final, tmp_path / "published")
    for p in published.iterdir():
        os.chmod(p, 0o644)
    pdf = bytearray((published / "dsmb_report.pdf").read_bytes())
    pdf[1000] ^= 0xFF
    (published / "dsmb_report.pdf").write_bytes(bytes(pdf))
    reg = published / "registry_results.json"
    reg.write_text(reg.read_text().replace('"NCT06412458"', '"NCT00000000"', 1))
    con = duckdb.connect(str(published / "trial.duckdb"))
    con.execute("UPDATE analysis.adsl SET DLTFL = 'Y' WHERE SUBJID = (SELECT min(SUBJID) FROM analysis.adsl WHERE DLTFL = 'N')")
    con.close()
    names = ["dsmb_report.pdf", "registry_results.json", "trial.duckdb", "sponsor_workbook.xlsx"]
    diffs, same = compare_dirs(published, regenerated, names)
    text = "\n".join(diffs)
    assert same == ["sponsor_workbook.xlsx"]
    assert "dsmb_report.pdf: DIFFERS" in text and "first difference at byte 1000 (0x3e8), 1 byte(s) differ" in text
    assert "registry_results.json: DIFFERS" in text
    assert '    -      "nctId": "NCT00000000",' in diffs and '    +      "nctId": "NCT06412458",' in diffs
    assert "table analysis.adsl: 1 row(s) only in the published, 1 only in the regenerated" in text


def test_freeze_refuses_outputs_that_do_not_match_their_manifest(demo_run, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(demo_run.out, out)
    final = out / "IM83" / DEMO_CUT
    os.chmod(final / "data_queries.xlsx", 0o644)
    with open(final / "data_queries.xlsx", "ab") as fh:
        fh.write(b"x")
    assert freeze(str(out), str(STUDY), DEMO_CUT) == 1
    assert "data_queries.xlsx: sha256 differs from the manifest" in capsys.readouterr().err
    assert not (final / FROZEN).exists()


def test_freeze_and_verify_are_commands():
    import subprocess
    import sys

    for command in ("freeze", "verify", "audit"):
        proc = subprocess.run(
            [sys.executable, "-m", "pipelines", command, "--help"], cwd=ROOT, capture_output=True, text=True, check=False
        )
        assert proc.returncode == 0 and "--study" in proc.stdout


def test_freeze_archives_the_export_given_when_none_is_archived(demo_run, tmp_path, capsys):
    """With no archived export, ``--export`` archives it (each copy checked against the manifest's
    SHA-256); an export that is not the one the cut was made from is refused."""
    out = tmp_path / "out"
    shutil.copytree(demo_run.out, out)
    archives = out / "IM83" / "archive" / "exports"
    shutil.rmtree(archives)
    assert freeze(str(out), str(STUDY), DEMO_CUT) == 1
    assert "pass --export with the export folder" in capsys.readouterr().err

    altered = tmp_path / "altered"
    shutil.copytree(demo_run.export, altered)
    with open(altered / "ae.csv", "ab") as fh:
        fh.write(b"\n")
    assert freeze(str(out), str(STUDY), DEMO_CUT, export=str(altered)) == 1
    assert "the export could not be archived" in capsys.readouterr().err

    assert freeze(str(out), str(STUDY), DEMO_CUT, export=str(demo_run.export)) == 0
    [archived] = [p for p in archives.rglob("ae.csv")]
    assert archived.read_bytes() == (demo_run.export / "ae.csv").read_bytes()
