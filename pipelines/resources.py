"""The one resource every asset uses: which study, which export, where outputs go.

Outputs of a run are written into a work folder and moved into place only when the whole run
has succeeded (see ``assets.report.manifest``), so a failed run leaves the previous good outputs
of that data cut untouched.
"""


import contextlib
import datetime as dt
import os
import re
import threading
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
from pydantic import PrivateAttr

from clinical.crf import ResolvedCodelists, study_codelists
from clinical.sources import EXPORT_META, export_id_of, read_meta
from clinical.study import StudyConfig, load_study

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_STUDY = os.environ.get("TRIAL_STUDY", str(REPO_ROOT / "studies" / "im83.yaml"))
DEFAULT_EXPORT = os.environ.get("TRIAL_EXPORT", str(REPO_ROOT / "demo" / "export"))
DEFAULT_OUTPUT = os.environ.get("TRIAL_OUTPUT", str(REPO_ROOT / "output"))
DATABASE_NAME = "trial.duckdb"


def export_identity(export_dir: Path, data_cut: str = "") -> tuple[str, dt.date]:
    """(export id, data cut) of an export folder.

    From ``export.json`` ({"export_id": ..., "data_cut": "YYYY-MM-DD"}) when the EDC wrote one,
    else the folder name and the explicit ``data_cut``. A cut is never guessed from the clock.
    """
    meta = read_meta(export_dir)  # raises ExportFileError (a ValueError) when it is not a JSON object
    export_id = export_id_of(export_dir, meta)
    cut = data_cut or meta.get("data_cut")
    if not cut:
        raise ValueError(
            f"{export_dir}: no data cut: pass --data-cut or put {{\"data_cut\": \"YYYY-MM-DD\"}} in {EXPORT_META}"
        )
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(cut)):
        raise ValueError(f"{export_dir}: data cut {cut!r} is not YYYY-MM-DD")
    return export_id, dt.date.fromisoformat(str(cut))


class TrialResource(dg.ConfigurableResource):
    """Study configuration, the export being processed and the output folders of this run."""

    study_config: str = DEFAULT_STUDY
    export_dir: str = DEFAULT_EXPORT
    output_root: str = DEFAULT_OUTPUT
    data_cut: str = ""

    # During a run: the database opened once and shared by every step (see ``connect``).
    _run_scoped: bool = PrivateAttr(default=False)
    _db: duckdb.DuckDBPyConnection | None = PrivateAttr(default=None)
    # A step's threads connect at once (derive's tables, ingest's forms): only one may open the file
    # (a second, leaked connection would break seal_database's read-only reopen). Held as well while
    # the database is closed, sealed or reset, so that no thread gets a connection to a database being
    # closed, or reopens the file half-way through (``_close_locked`` / ``_reset_locked``: callers hold it).
    _db_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    # After the last write of the run (``seal_database``): read-only, and the canonical copy under way.
    _sealed: bool = PrivateAttr(default=False)
    _canonical: Any = PrivateAttr(default=None)

    @cached_property
    def cfg(self) -> StudyConfig:
        return load_study(self.study_config)

    @cached_property
    def identity(self) -> tuple[str, dt.date]:
        return export_identity(Path(self.export_dir), self.data_cut)

    @property
    def export_id(self) -> str:
        return self.identity[0]

    @property
    def cut(self) -> dt.date:
        return self.identity[1]

    @property
    def codelists(self) -> ResolvedCodelists:
        return study_codelists(self.cfg)

    @property
    def study_root(self) -> Path:
        """``<output root>/<study>``: the data-cut folders, the study lock, the audit log, the archive."""
        return Path(self.output_root) / self.cfg.study.id

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """At run start: take the study lock (one writer per study), repair an interrupted publish, and
        refuse a data cut frozen for a DSMB meeting. See ``pipelines.lock`` and ``pipelines.freeze``."""
        from pipelines import lock

        run_id = context.run_id if context.dagster_run else "?"
        wait = float(os.environ.get("TRIAL_LOCK_WAIT_SECONDS", "0"))
        try:
            for line in lock.open_for_run(self.study_root, self.cfg.study.id, self.final_dir,
                                          purpose=f"dagster run {run_id}", wait=wait):
                context.log.warning(line)
        except lock.StudyFrozenError as exc:
            raise dg.Failure(description=str(exc), allow_retries=False) from None
        self._run_scoped = True
        # Great Expectations in a process of its own, importing while the export loads
        # (clinical.expectation_runner, "A worker process for the suites"); not for a run that
        # neither loads the export nor runs the form checks (e.g. only a report re-made from the UI).
        steps = context.dagster_run.step_keys_to_execute if context.dagster_run else None
        if steps is None or {"ingest", "form_checks"} & set(steps):
            from clinical.expectation_runner import start_worker

            start_worker()

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        from pipelines import lock

        from clinical.expectation_runner import stop_worker

        try:
            self.reset_database()
            stop_worker()
        finally:
            self._run_scoped = False
            lock.release(self.study_root)

    @property
    def final_dir(self) -> Path:
        """Where the outputs of this study and data cut live once a run has succeeded."""
        return self.study_root / self.cut.isoformat()

    @property
    def work_dir(self) -> Path:
        """Where this run writes; moved to ``final_dir`` by the manifest asset."""
        path = self.study_root / ".work" / self.cut.isoformat()
        path.mkdir(parents=True, exist_ok=True)
        return path

    def previous_final_dir(self) -> Path | None:
        """The outputs of the latest earlier data cut of this study, if any (for changes since then)."""
        root = self.study_root
        cuts = sorted(
            p for p in root.glob("[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]")
            if p.is_dir() and p.name < self.cut.isoformat() and (p / DATABASE_NAME).is_file()
        )
        return cuts[-1] if cuts else None

    @property
    def database(self) -> Path:
        return self.work_dir / DATABASE_NAME

    @contextlib.contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection to the run's database, closed when the block ends (also when it raises).

        Inside a Dagster run (the in-process executor runs every step in this process) the database
        file is opened once, on first use, and every step gets a connection of its own to that one
        database (``cursor()``: its own transaction and settings); opening and closing the file --
        catalog load and checkpoint -- is then paid once per run instead of once per step.
        ``close_database`` checkpoints and closes it (before the file is copied, moved or removed;
        at the latest when the run ends). Outside a run (tests calling an asset directly) every
        call opens and closes the file, and ``read_only`` is honoured.
        """
        if self._run_scoped:
            with self._db_lock:
                if self._db is None:
                    self._db = duckdb.connect(str(self.database), read_only=self._sealed)
                con = self._db.cursor()
        else:
            con = duckdb.connect(str(self.database), read_only=read_only)
        try:
            yield con
        finally:
            con.close()

    def close_database(self) -> None:
        """Checkpoint and close the run's shared database file, if open (``connect`` reopens it)."""
        with self._db_lock:
            self._close_locked()

    def _close_locked(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            db.close()

    def seal_database(self) -> None:
        """The run's last write is done (the ``derive`` step calls this when the run goes on to the
        manifest): the file is checkpointed and reopened read-only for the steps that follow (a
        write from them fails loudly), and its canonical copy (``pipelines.storage.CanonicalCopy``)
        starts in the background for the manifest."""
        if not self._run_scoped:
            return
        from pipelines.storage import CanonicalCopy

        # One critical section: no connect() between the close and the read-only flag reopens the file writable.
        with self._db_lock:
            self._reset_locked()
            self._sealed = True
            self._canonical = CanonicalCopy(self.database)

    def take_canonical_copy(self) -> Path | None:
        """The finished canonical copy of the database started by ``seal_database``, or None."""
        with self._db_lock:
            copy, self._canonical = self._canonical, None
        # Waiting for the copy needs no lock (the copy thread never takes it).
        return copy.take() if copy is not None else None

    def reset_database(self) -> None:
        """Close the database, drop an unused canonical copy and allow writes again."""
        with self._db_lock:
            self._reset_locked()

    def _reset_locked(self) -> None:
        # The copy is waited for under the lock: it reads the file, which connect() must not reopen
        # (writable) before the copy is done. The copy thread never takes the lock: no deadlock.
        copy, self._canonical = self._canonical, None
        if copy is not None:
            copy.discard()
        self._close_locked()
        self._sealed = False


# Tags every run of trial_job carries, whoever launches it (schedule, sensor, UI, command line).
STUDY_TAG = "trial/study"


def trial_run_config(study_config: str | Path, export_dir: str | Path, output_root: str | Path, data_cut: str) -> dict:
    """The run config of ``trial_job`` for one export: the trial resource's settings, paths absolute."""
    return {"resources": {"trial": {"config": {
        "study_config": str(Path(study_config).resolve()),
        "export_dir": str(Path(export_dir).resolve()),
        "output_root": str(Path(output_root).resolve()),
        "data_cut": data_cut,
    }}}}


def trial_from_run_config(run_config: dict | None) -> TrialResource:
    """The trial resource a run was configured with (for the audit log and alerts after the run)."""
    cfg = ((run_config or {}).get("resources") or {}).get("trial", {}).get("config") or {}
    return TrialResource(**cfg)
