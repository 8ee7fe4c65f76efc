"""Re-running an export gives byte-identical outputs, DuckDB file included (a different output root
and a different export folder path do not matter: nothing comes from the clock or from paths)."""

import hashlib
import json
import shutil

import duckdb
from conftest import DEMO_CUT, STUDY

from pipelines.freeze import compare_dirs, compare_manifests
from pipelines.storage import canonical_database, database_identifier


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_rerun_reproduces_every_output_byte_for_byte(demo_run, tmp_path, monkeypatch):
    from pipelines.run import run_export

    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    # The same export at another place (same folder name: it is the export id) into another output root.
    export = shutil.copytree(demo_run.export, tmp_path / "elsewhere" / demo_run.export.name)
    assert run_export(str(STUDY), str(export), str(tmp_path / "out"), DEMO_CUT) == 0
    again = tmp_path / "out" / "IM83" / DEMO_CUT
    first = json.loads((demo_run.final / "manifest.json").read_text())
    second = json.loads((again / "manifest.json").read_text())
    names = [o["path"] for o in first["outputs"]]
    diffs, same = compare_dirs(demo_run.final, again, names)
    assert diffs == [], "\n".join(diffs)
    assert sorted(same) == sorted(names) and "trial.duckdb" in same
    data, notes = compare_manifests(first, second)
    # Only the code fingerprint and commit may differ (other engineers edit and commit during the session).
    assert data == [] and all("code_sha256" in n or "code_version" in n for n in notes), data + notes


def test_the_database_is_canonical_and_opens(demo_run, tmp_path):
    db = demo_run.final / "trial.duckdb"
    manifest = json.loads((demo_run.final / "manifest.json").read_text())
    header = db.read_bytes()[:4096]
    seed = f"IM83|{DEMO_CUT}|{manifest['export_sha256']}"
    assert header[124:140] == database_identifier(seed), "identifier not derived from study, cut and export"
    assert {o["role"]: o["sha256"] for o in manifest["outputs"]}["database"] == _sha(db)
    con = duckdb.connect(str(db), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM analysis.adsl").fetchone()[0] > 0
        assert con.execute("SELECT count(*) FROM duckdb_tables()").fetchone()[0] > 20
    finally:
        con.close()
    assert not db.with_name("trial.duckdb.wal").exists()
    assert _sha(db) == {o["role"]: o["sha256"] for o in manifest["outputs"]}["database"], "reading changed the file"
    # The canonical form is a fixed point: copying what the run published gives the same bytes.
    again = shutil.copyfile(db, tmp_path / "trial.duckdb")
    assert canonical_database(again, seed) and _sha(again) == _sha(db)
    assert sorted(p.name for p in db.parent.iterdir() if p.name.startswith("trial.duckdb")) == ["trial.duckdb"]


def test_pdf_and_workbook_dates_come_from_the_data_cut(demo_run):
    from pypdf import PdfReader

    meta = PdfReader(demo_run.final / "dsmb_report.pdf").metadata
    assert meta["/CreationDate"].startswith("D:20251231000000") and meta["/ModDate"].startswith("D:20251231000000")
    import zipfile

    for name in ("sponsor_workbook.xlsx", "data_queries.xlsx"):
        with zipfile.ZipFile(demo_run.final / name) as z:
            assert "2025-12-31T00:00:00Z" in z.read("docProps/core.xml").decode()
            assert {i.date_time for i in z.infolist()} == {(2025, 12, 31, 0, 0, 0)}


def test_the_background_canonical_copy_equals_the_synchronous_one(tmp_path):
    """The copy the run starts after its last write (TrialResource.seal_database) gives the bytes
    canonical_database gives; a file that changed after the copy started is copied again."""
    from pipelines.storage import CanonicalCopy, canonical_database, finish_canonical

    def make(path):
        con = duckdb.connect(str(path))
        con.execute("CREATE SCHEMA raw; CREATE TABLE raw.t AS SELECT range AS i, 'v' || range AS s FROM range(50000)")
        con.close()

    a, b = tmp_path / "a.duckdb", tmp_path / "b.duckdb"
    make(a)
    make(b)
    assert canonical_database(a, "seed")
    copy = CanonicalCopy(b)
    done = copy.take()
    assert done is not None and finish_canonical(b, done, "seed")
    assert _sha(a) == _sha(b)
    changed = CanonicalCopy(b)
    changed.wait()
    con = duckdb.connect(str(b))
    con.execute("INSERT INTO raw.t VALUES (-1, 'late')")
    con.close()
    assert changed.take() is None and not changed.tmp.exists()
