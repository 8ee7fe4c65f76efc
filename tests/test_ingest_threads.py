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


def _connections():
    """A ``connect`` for load_forms: a cursor per call of one in-memory database with the ingest tables."""
    db = duckdb.connect()
    create_ingest_tables(db)

    @contextlib.contextmanager
    def connect():
        con = db.cursor()
        try:
            yield con
        finally:
            con.close()

    return connect


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
    connect = _connections()

    source = ExportSource(demo_run.export, SETTINGS)  # the suite's simulated demo export
    results = {f.id: r for f, r in load_forms(source, connect, "EXP", workers=2)}
    assert list(results) == [f.id for f in FORMS]
    assert all(isinstance(r, LoadResult) for r in results.values()), results
    collected = {f.file for f in FORMS if f.id in SETTINGS.forms}
    assert reads == Counter(dict.fromkeys(collected, 1))
    assert source._records == {}  # every form released once loaded


def test_each_form_is_handed_on_as_soon_as_it_has_loaded(demo_run):
    """``on_loaded`` runs on the loading thread when a form has loaded, not when its turn comes: while
    the first form handed on is held there, the other thread's forms are still loaded and handed on."""
    connect = _connections()

    another = threading.Event()
    handed: list[tuple[str, str]] = []
    released: list[bool] = []
    lock = threading.Lock()

    def on_loaded(form, result):
        assert isinstance(result, LoadResult)
        with lock:
            handed.append((form.id, threading.current_thread().name))
            first = len(handed) == 1
        if first:
            released.append(another.wait(timeout=20))  # held until another form is handed on
        else:
            another.set()

    order = [f.id for f, _ in load_forms(ExportSource(demo_run.export, SETTINGS), connect, "EXP", workers=2,
                                         on_loaded=on_loaded)]
    assert order == [f.id for f in FORMS]  # yielded in contract order
    assert sorted(f for f, _ in handed) == sorted(order)  # every form handed on once
    assert released == [True]  # another form went on while the first was held
    assert all(name.startswith("task") for _, name in handed)  # on the loading threads
