"""TrialResource's run database: opened once under a lock by ``connect`` (a step's threads connect at
once), and closed, sealed and reset under the same lock."""

import json
import threading

import duckdb
import pytest

from pipelines.resources import TrialResource

STUDY = "studies/im83.yaml"
CUT = "2025-12-31"
WAIT = 0.3  # how long a call is seen blocked on the lock
DONE = 60.0  # a call that has not returned by then is stuck (deadlock)


@pytest.fixture
def trial(tmp_path) -> TrialResource:
    """A trial resource as inside a run (one shared database, opened by the first ``connect``)."""
    from pipelines.resources import REPO_ROOT

    export = tmp_path / "export"
    export.mkdir()
    (export / "export.json").write_text(json.dumps({"export_id": "EXP-1", "data_cut": CUT}))
    resource = TrialResource(study_config=str(REPO_ROOT / STUDY), export_dir=str(export),
                             output_root=str(tmp_path / "out"))
    resource._run_scoped = True
    with resource.connect() as con:
        con.execute("CREATE TABLE t AS SELECT 1 AS x")
    yield resource
    resource.reset_database()


def _in_thread(fn) -> tuple[threading.Thread, list]:
    errors: list = []

    def run():
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            errors.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, errors


@pytest.mark.parametrize("method", ["close_database", "reset_database", "seal_database"])
def test_the_database_is_not_swapped_while_another_holds_the_lock(trial, method):
    """``connect`` opens the file and hands out connections under ``_db_lock``: closing, resetting
    and sealing wait for it, so a thread connecting meanwhile never gets a database being closed."""
    db = trial._db
    assert db is not None
    with trial._db_lock:
        t, errors = _in_thread(getattr(trial, method))
        t.join(WAIT)
        assert t.is_alive(), f"{method} did not wait for the lock"
        assert trial._db is db and db.execute("SELECT x FROM t").fetchall() == [(1,)]
    t.join(DONE)
    assert not t.is_alive() and not errors, errors
    assert trial._db is None
    with pytest.raises(duckdb.ConnectionException):
        db.execute("SELECT 1")


def test_connect_waits_while_the_database_is_closed(trial):
    """The other way round: a ``connect`` while the lock is held returns only once it is free, with
    a database that is open."""
    got: list = []

    def connect():
        with trial.connect() as con:
            got.append(con.execute("SELECT x FROM t").fetchall())

    with trial._db_lock:
        t, errors = _in_thread(connect)
        t.join(WAIT)
        assert t.is_alive() and not got
        trial._close_locked()  # as close_database does, holding the lock
        assert trial._db is None
    t.join(DONE)
    assert not t.is_alive() and not errors, errors
    assert got == [[(1,)]] and trial._db is not None  # reopened by connect


def test_reset_seal_and_take_take_the_lock_once(trial):
    """reset_database closes the database and seal_database resets it, each under the one
    (non-re-entrant) lock: no call deadlocks, and the sealed database is read-only."""

    def sequence():
        trial.reset_database()
        trial.seal_database()
        with trial.connect() as con:
            assert con.execute("SELECT x FROM t").fetchall() == [(1,)]
            with pytest.raises(duckdb.Error):
                con.execute("CREATE TABLE u AS SELECT 1")
        copy = trial.take_canonical_copy()
        assert copy is not None and copy.is_file()
        trial.close_database()
        trial.reset_database()
        with trial.connect() as con:  # writable again
            con.execute("CREATE TABLE u AS SELECT 2 AS y")

    t, errors = _in_thread(sequence)
    t.join(DONE)
    assert not t.is_alive(), "deadlock"
    assert not errors, errors
    assert not trial._db_lock.locked()

