"""The instance's event log (pipelines/dagster.yaml -> pipelines.event_log): Dagster's SQLite files
and schema, written through kept-open connections without an fsync per event, and readable by
Dagster's own SQLite event log class (the webserver and daemon of an older set-up)."""

import shutil
from pathlib import Path

import dagster as dg
import sqlalchemy as sa
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

from pipelines.event_log import FastSqliteEventLogStorage

ROOT = Path(__file__).resolve().parent.parent


@dg.asset
def numbers() -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"dagster/row_count": 3})


@dg.asset_check(asset=numbers, blocking=True)
def numbers_not_empty() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=True)


def _instance(home: Path, monkeypatch) -> dg.DagsterInstance:
    home.mkdir()
    shutil.copyfile(ROOT / "pipelines" / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return dg.DagsterInstance.get()


def test_the_instance_writes_dagster_sqlite_files_readable_by_dagsters_own_class(tmp_path, monkeypatch):
    home = tmp_path / "home"
    with _instance(home, monkeypatch) as instance:
        storage = instance.event_log_storage
        assert isinstance(storage, FastSqliteEventLogStorage)
        result = dg.materialize([numbers, numbers_not_empty], instance=instance)
        assert result.success
        run_id = result.run_id
        ours = [e.dagster_event_type for e in instance.all_logs(run_id) if e.dagster_event]
        # One engine per shard, kept open, with synchronous=NORMAL (1) on its connections.
        with storage.run_connection(run_id) as conn:
            assert conn.execute(sa.text("PRAGMA synchronous")).scalar() == 1
            assert conn.execute(sa.text("PRAGMA journal_mode")).scalar() == "wal"
        assert storage._engine(run_id) is storage._engine(run_id)
    # The same files where Dagster's default storage keeps them, read with Dagster's own class.
    base = home / "history" / "runs"
    assert (base / f"{run_id}.db").is_file() and (base / "index.db").is_file()
    stock = SqliteEventLogStorage(str(base))
    theirs = [e.dagster_event_type for e in stock.get_logs_for_run(run_id) if e.dagster_event]
    assert theirs == ours
    assert dg.DagsterEventType.ASSET_CHECK_EVALUATION in theirs
    # The check execution is in the table Dagster asks about before each check event (the answer
    # is remembered), as the stock class records it.
    assert storage.has_table("asset_check_executions") and "asset_check_executions" in storage._tables_seen
    assert not storage.has_table("no_such_table") and "no_such_table" not in storage._tables_seen
    [execution] = stock.get_asset_check_execution_history(numbers_not_empty.check_key, limit=5)
    assert execution.run_id == run_id
    evaluation = stock.get_latest_materialization_events([numbers.key])[numbers.key]
    assert evaluation is not None and evaluation.run_id == run_id


def test_a_run_shard_stays_open_only_while_recent(tmp_path):
    storage = FastSqliteEventLogStorage(str(tmp_path / "runs"))
    for i in range(8):
        with storage.run_connection(f"run{i}") as conn:
            conn.execute(sa.text("SELECT 1"))
    open_shards = set(storage._engines)
    assert "index" in open_shards and len(open_shards - {"index"}) <= 4
    storage.wipe()  # closes every engine before Dagster deletes the files (then empties the index)
    assert set(storage._engines) <= {"index"} and not list((tmp_path / "runs").glob("run*.db"))
    storage.dispose()
