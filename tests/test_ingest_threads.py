"""The ingest step loads two forms at a time from one export source: each form file is read once."""

import contextlib
import threading
import time
from collections import Counter
from pathlib import Path

import duckdb

import clinical.sources
from assets.ingest import load_forms
from clinical.crf import FORMS
from clinical.ingest import LoadResult, create_ingest_tables, ingest_settings
from clinical.sources import ExportSource
from clinical.study import load_study

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = ingest_settings(load_study(ROOT / "studies" / "im83.yaml"))


def test_two_workers_read_every_form_file_once(demo_run, monkeypatch):
    reads: Counter[str] = Counter()
    counting = threading.Lock()
    read_csv_form = clinical.sources.read_csv_form

    def counted(path, *args, **kwargs):
        with counting:
            reads[Path(path).name] += 1
        if Path(path).name == "enrol.csv":
            time.sleep(0.2)  # dm's thread asks for enrol's records while enrol's own thread reads them
        return read_csv_form(path, *args, **kwargs)

    monkeypatch.setattr(clinical.sources, "read_csv_form", counted)
    db = duckdb.connect()
    create_ingest_tables(db)

    @contextlib.contextmanager
    def connect():
        con = db.cursor()
        try:
            yield con
        finally:
            con.close()

    source = ExportSource(demo_run.export, SETTINGS)  # the suite's simulated demo export
    results = {f.id: r for f, r in load_forms(source, connect, "EXP", workers=2)}
    assert list(results) == [f.id for f in FORMS]
    assert all(isinstance(r, LoadResult) for r in results.values()), results
    collected = {f.file for f in FORMS if f.id in SETTINGS.forms}
    assert reads == Counter(dict.fromkeys(collected, 1))
    assert source._records == {}  # every form released once loaded
