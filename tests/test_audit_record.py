"""Logging one finished run (pipelines.audit.record_run) from a stand-in Dagster instance: the run
record is read once, and the row appended is the run's entry (run_entry)."""

import json
from pathlib import Path
from types import SimpleNamespace

from pipelines import audit
from pipelines.resources import trial_run_config

STUDY = Path(__file__).resolve().parents[1] / "studies" / "im83.yaml"


class CountingInstance:
    """The two instance methods the audit log uses; counts the run-record reads."""

    def __init__(self, record):
        self.record = record
        self.record_reads = 0

    def get_run_record_by_id(self, run_id):
        assert run_id == self.record.dagster_run.run_id
        self.record_reads += 1
        return self.record

    def get_records_for_run(self, run_id, of_type, limit):
        return SimpleNamespace(records=[])  # no check evaluations, no failed steps


def _failed_run(tmp_path: Path) -> CountingInstance:
    export = tmp_path / "E1"
    export.mkdir()
    (export / "ae.csv").write_text("SUBJID\n01-001\n")
    run = SimpleNamespace(
        run_id="run-1",
        status=SimpleNamespace(value="FAILURE"),
        job_name="trial_job",
        tags={"trial/study": "IM83", "dagster/other": "x"},
        run_config=trial_run_config(STUDY, export, tmp_path / "out", "2025-12-31"),
    )
    return CountingInstance(SimpleNamespace(dagster_run=run, start_time=1767225600.0, end_time=1767225660.0))


def test_record_run_reads_the_run_record_once_and_logs_its_entry(tmp_path):
    instance = _failed_run(tmp_path)
    row = audit.record_run(instance, "run-1")
    assert instance.record_reads == 1
    expected = audit.run_entry(instance, "run-1")
    assert {k: row[k] for k in expected if k not in audit.JSON_FIELDS} == {
        k: v for k, v in expected.items() if k not in audit.JSON_FIELDS
    }
    assert json.loads(row["detail"]) == expected["detail"]
    assert row["study"] == "IM83" and row["data_cut"] == "2025-12-31" and row["export_id"] == "E1"
    assert row["started_at"] == "2026-01-01T00:00:00+00:00" and row["finished_at"] == "2026-01-01T00:01:00+00:00"
    assert json.loads(row["detail"])["tags"] == {"trial/study": "IM83"}
    assert audit.read_log(tmp_path / "out" / "IM83") == [row]
    assert audit.record_run(instance, "run-1") is None  # once per run id
