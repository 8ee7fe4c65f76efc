"""File-level guarantees for published outputs: atomic swap, durability, and a reproducible DuckDB file.

- ``publish_dir(work, final)`` puts a finished work folder in place of the data cut's folder in one
  step (``renameat2(RENAME_EXCHANGE)`` on Linux): a reader, or a run killed at any instant, sees
  either the old set of outputs or the new one, never a mixture and never none. Files are fsynced
  first, so a power cut after the swap cannot leave empty files behind.
- ``recover(study_root)`` repairs what the portable fallback (two renames) can leave when killed
  between its two steps.
- ``canonical_database(path, seed)`` rewrites the run's DuckDB file so that the same data gives the
  same bytes: a single-threaded ``COPY FROM DATABASE`` into a fresh file (the storage layout then
  depends only on the data), and the 16-byte database identifier that DuckDB fills with random
  bytes when it creates a file set from the data (study, data cut, export hash) instead.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import shutil
import struct
from pathlib import Path

import duckdb

PREVIOUS_SUFFIX = ".previous"

# DuckDB main header (storage format of duckdb 1.4-2.0): a 4096-byte block whose first 8 bytes are
# the checksum of the other 4088; "DUCK" at 8; then version, 4 flags, library version (32 bytes),
# source id (32), encryption metadata (8) and the database identifier (16) at 124.
_HEADER_SIZE = 4096
_MAGIC = (8, b"DUCK")
_ENCRYPTION_METADATA = slice(116, 124)
_DB_IDENTIFIER = slice(124, 140)


# -- durability and the atomic swap ------------------------------------------------------------


def fsync_tree(root: Path) -> None:
    """fsync every file and folder under ``root`` (and ``root`` itself)."""
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(dirpath))


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(err, f"renameat2({a}, {b}, RENAME_EXCHANGE): {os.strerror(err)}")


def previous_path(final: Path) -> Path:
    return final.with_name(f".{final.name}{PREVIOUS_SUFFIX}")


def publish_dir(work: Path, final: Path) -> None:
    """Move the finished ``work`` folder to ``final`` in one atomic step; the old ``final`` is removed."""
    fsync_tree(work)
    final.parent.mkdir(parents=True, exist_ok=True)
    if not final.exists():
        work.rename(final)
    elif _exchange(work, final):
        # ``work`` now holds the previous outputs; the new ones are in place.
        shutil.rmtree(work, ignore_errors=True)
    else:  # portable fallback: two renames; ``recover`` repairs a kill between them
        old = previous_path(final)
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
        work.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    fsync_dir(final.parent)


def recover(study_root: Path) -> list[str]:
    """Undo a publish interrupted between the two renames of the fallback; returns what was done."""
    done = []
    if not Path(study_root).is_dir():
        return done
    for old in Path(study_root).glob(f".*{PREVIOUS_SUFFIX}"):
        final = old.with_name(old.name[1 : -len(PREVIOUS_SUFFIX)])
        if final.exists():
            shutil.rmtree(old, ignore_errors=True)
            done.append(f"removed {old} (publish of {final.name} had completed)")
        else:
            old.rename(final)
            done.append(f"restored {final} from {old} (publish was interrupted)")
    return done


# -- a reproducible DuckDB file ----------------------------------------------------------------


def _checksum(block: bytes) -> int:
    mask = (1 << 64) - 1
    result = 5381
    for (word,) in struct.iter_unpack("<Q", block):
        result ^= (word * 0xBF58476D1CE4E5B9) & mask
    return result


def database_identifier(seed: str) -> bytes:
    return hashlib.sha256(seed.encode("utf-8")).digest()[:16]


def set_database_identifier(path: Path, seed: str) -> bool:
    """Replace the random database identifier in the file's header by one derived from ``seed``.

    Returns False, changing nothing, if the header is not the layout this was written for (another
    DuckDB storage version, or an encrypted file)."""
    with open(path, "r+b") as fh:
        header = bytearray(fh.read(_HEADER_SIZE))
        if len(header) < _HEADER_SIZE or header[_MAGIC[0] : _MAGIC[0] + 4] != _MAGIC[1]:
            return False
        if struct.unpack("<Q", header[:8])[0] != _checksum(bytes(header[8:])):
            return False
        if any(header[_ENCRYPTION_METADATA]):
            return False
        header[_DB_IDENTIFIER] = database_identifier(seed)
        header[:8] = struct.pack("<Q", _checksum(bytes(header[8:])))
        fh.seek(0)
        fh.write(header)
        fh.flush()
        os.fsync(fh.fileno())
    return True


def _sql_path(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def table_counts(con: duckdb.DuckDBPyConnection, catalog: str) -> dict[str, int]:
    names = con.execute(
        "SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = ? ORDER BY ALL", [catalog]
    ).fetchall()
    return {
        f"{s}.{t}": con.execute(f'SELECT count(*) FROM "{catalog}"."{s}"."{t}"').fetchone()[0] for s, t in names
    }


def copy_database(path: Path, tmp: Path) -> dict[str, int]:
    """The canonical copy of the DuckDB file at ``path`` written to ``tmp`` (a single-threaded
    ``COPY FROM DATABASE`` into a fresh file), checked table by table; returns the row counts."""
    path, tmp = Path(path), Path(tmp)
    for p in (tmp, Path(f"{tmp}.wal")):
        p.unlink(missing_ok=True)
    con = duckdb.connect(":memory:", config={"threads": 1})
    try:
        con.execute(f"ATTACH {_sql_path(path)} AS src (READ_ONLY)")
        con.execute(f"ATTACH {_sql_path(tmp)} AS dst")
        con.execute("COPY FROM DATABASE src TO dst")
        before, after = table_counts(con, "src"), table_counts(con, "dst")
        if before != after:
            raise RuntimeError(f"canonical copy of {path.name} differs from the original: {before} != {after}")
        con.execute("DETACH dst")
        con.execute("DETACH src")
    finally:
        con.close()
    if Path(f"{tmp}.wal").exists():
        raise RuntimeError(f"canonical copy of {path.name} left a write-ahead log behind")
    return after


def finish_canonical(path: Path, tmp: Path, seed: str) -> bool:
    """Put the canonical copy ``tmp`` in place of ``path`` with the identifier derived from ``seed``."""
    path, tmp = Path(path), Path(tmp)
    reproducible = set_database_identifier(tmp, seed)
    os.replace(tmp, path)
    Path(f"{path}.wal").unlink(missing_ok=True)
    return reproducible


def canonical_database(path: Path, seed: str) -> bool:
    """Rewrite the DuckDB file at ``path`` into its canonical form (see module docstring).

    The copy is checked table by table (same tables, same row counts) before it replaces the
    original. Returns False if the identifier could not be set (the file is then still a faithful,
    compact copy, but its bytes are not reproducible)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".canonical")
    copy_database(path, tmp)
    return finish_canonical(path, tmp, seed)


def _file_state(path: Path) -> tuple[int, int] | None:
    try:
        st = Path(path).stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


class CanonicalCopy:
    """:func:`copy_database` in a background thread, started once the run's last write is done, so
    that the single-threaded copy (3 s at N = 10,000) runs on the other core while the reports are
    written. Its bytes are those of :func:`canonical_database` (the same function, the same file);
    :meth:`take` hands over the copy only if the file did not change since the copy started."""

    def __init__(self, path: Path) -> None:
        import threading

        self.path = Path(path)
        self.tmp = self.path.with_name(self.path.name + ".canonical")
        self.state = _file_state(self.path)
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="canonical-copy", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            copy_database(self.path, self.tmp)
        except BaseException as exc:  # noqa: BLE001 - reported by take()
            self.error = exc

    def wait(self) -> None:
        self._thread.join()

    def take(self) -> Path | None:
        """The finished copy, or None (failed, or the file changed since: copy again)."""
        self.wait()
        if self.error is not None or _file_state(self.path) != self.state or not self.tmp.is_file():
            self.discard()
            return None
        return self.tmp

    def discard(self) -> None:
        self.wait()
        for p in (self.tmp, Path(f"{self.tmp}.wal")):
            p.unlink(missing_ok=True)
