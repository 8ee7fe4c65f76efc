"""One writer per study: an exclusive ``flock`` on ``<output root>/<study>/.lock``.

Every run takes it: the command line before the Dagster run starts (so a second run is refused at
once, or waits with ``--wait``), and the ``trial`` resource when a run starts (so runs launched by
the daemon or the UI are covered as well). The lock is re-entrant within one process: the command
line holds it and the resource of the run it starts takes it again.

The kernel drops a ``flock`` when its process dies, so a run killed with ``kill -9`` never leaves a
stale lock behind. The file keeps, for the message a refused run prints, who holds the lock.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

LOCK_NAME = ".lock"
POLL_SECONDS = 0.5

_held: dict[str, list] = {}  # realpath -> [fd, depth]
_guard = threading.Lock()


class StudyBusyError(RuntimeError):
    """Another process is writing this study's outputs."""

    def __init__(self, study: str, lock_path: Path, holder: dict, waited: float):
        self.study, self.lock_path, self.holder, self.waited = study, lock_path, holder, waited
        who = (
            f"pid {holder.get('pid')} on {holder.get('host')}, {holder.get('purpose', 'a run')}, "
            f"since {holder.get('since')}"
            if holder
            else "another process"
        )
        waited_text = f" after waiting {waited:.0f} s" if waited else ""
        super().__init__(
            f"study {study} is busy: {who} holds {lock_path}{waited_text}. Only one run per study writes at a "
            f"time; this run was refused and changed nothing. Retry when that run has finished "
            f"(or pass --wait SECONDS to queue behind it)."
        )


def lock_path(study_root: Path) -> Path:
    return Path(study_root) / LOCK_NAME


def holder(study_root: Path) -> dict:
    """Who holds (or last held) the lock, as written by the holder; {} if unknown."""
    try:
        text = lock_path(study_root).read_text(encoding="utf-8").strip()
        return json.loads(text) if text else {}
    except (OSError, ValueError):
        return {}


def acquire(study_root: Path, study: str, purpose: str = "", wait: float = 0.0) -> None:
    """Take the study lock (re-entrant in this process); raise StudyBusyError if still busy after ``wait`` s."""
    path = lock_path(study_root)
    path.parent.mkdir(parents=True, exist_ok=True)
    key = os.path.realpath(path)
    with _guard:
        if key in _held:
            _held[key][1] += 1
            return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    start = time.monotonic()
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                os.close(fd)
                raise
            waited = time.monotonic() - start
            if waited >= wait:
                os.close(fd)
                raise StudyBusyError(study, path, holder(study_root), waited if wait else 0.0) from None
            time.sleep(min(POLL_SECONDS, max(wait - waited, 0.01)))
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "purpose": purpose or " ".join(sys.argv[:3]),
        "since": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
    with _guard:
        _held[key] = [fd, 1]


def release(study_root: Path) -> None:
    key = os.path.realpath(lock_path(study_root))
    with _guard:
        entry = _held.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] > 0:
            return
        del _held[key]
    fd = entry[0]
    try:
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def is_held_here(study_root: Path) -> bool:
    with _guard:
        return os.path.realpath(lock_path(study_root)) in _held


class StudyFrozenError(RuntimeError):
    """The data cut is frozen for a DSMB meeting (the message says so and what to do instead)."""


def open_for_run(study_root: Path, study: str, final_dir: Path, purpose: str = "", wait: float = 0.0) -> list[str]:
    """Take the study lock for a run. The first holder in this process (the command line, or the
    run's resource when the daemon or the UI launched it) also repairs a publish that was
    interrupted (the lines it returns say what it did) and refuses a frozen data cut
    (StudyFrozenError); a busy study raises StudyBusyError. The lock is released again when this
    raises."""
    from pipelines.freeze import frozen_message, frozen_record
    from pipelines.storage import recover

    first = not is_held_here(study_root)
    acquire(study_root, study, purpose=purpose, wait=wait)
    if not first:
        return []
    try:
        done = recover(study_root)
        frozen = frozen_record(final_dir)
        if frozen:
            raise StudyFrozenError(frozen_message(study, Path(final_dir).name, frozen))
    except BaseException:
        release(study_root)
        raise
    return done


@contextlib.contextmanager
def study_lock(study_root: Path, study: str, purpose: str = "", wait: float = 0.0) -> Iterator[None]:
    acquire(study_root, study, purpose, wait)
    try:
        yield
    finally:
        release(study_root)
