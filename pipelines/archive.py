"""The study's archive: every export and study configuration a run used, byte-identical and read-only.

Layout::

    <output>/<study>/archive/exports/<fp16>/<export id>/          the export's files, sub-folders kept
    <output>/<study>/archive/exports/<fp16>/<export id>.sha256    sha256sum lines for every file
    <output>/<study>/archive/configs/<sha16>/<config file>        the study configuration of a run

``fp16`` is the first 16 hex digits of the export fingerprint (``clinical.landing.export_fingerprint``),
so an identical re-delivery, under any folder name, is found and not loaded twice. The landing
sensor archives an export on arrival (``archive_delivery``); a run of ``python -m pipelines run`` on
a folder elsewhere archives what it read when it publishes (``archive_files``), and ``freeze`` from
a given export folder. All three write through ``archive_files``: copied (or hard-linked, below)
into ``<dest>.partial``, every SHA-256 checked, made read-only, fsynced, renamed into place.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from clinical.ingest import sha256_file
from clinical.landing import Delivery
from pipelines.storage import fsync_dir, fsync_tree


class ArchiveError(RuntimeError):
    """A file changed or disappeared while it was being archived, or the archive cannot be written."""


def export_archive(study_root: Path, fingerprint: str, export_id: str) -> Path:
    """Where an export is archived."""
    return Path(study_root) / "archive" / "exports" / fingerprint[:16] / export_id


def config_archive(study_root: Path, config_sha256: str) -> Path:
    """The folder that holds an archived study configuration."""
    return Path(study_root) / "archive" / "configs" / config_sha256[:16]


def find_archived(study_root: Path, fingerprint: str) -> Path | None:
    """The archived copy of an export with this fingerprint, under whatever export id it arrived."""
    folder = Path(study_root) / "archive" / "exports" / fingerprint[:16]
    found = sorted(p for p in folder.glob("*") if p.is_dir() and not p.name.endswith(".partial")) if folder.is_dir() else []
    return found[0] if found else None


def _link_or_copy(src: Path, target: Path) -> None:
    """A hard link to ``src`` when it is already read-only (then neither name can change the shared
    bytes) and on the same file system, else a copy (with its modification time)."""
    if not src.stat().st_mode & 0o222:
        try:
            os.link(src, target)
            return
        except OSError:  # another file system, or links not allowed: copy
            pass
    shutil.copy2(src, target)


def archive_files(src_root: Path, files: list[tuple[str, str | None]], dest: Path) -> bool:
    """Archive ``files`` -- (path relative to ``src_root``, expected SHA-256 or None) -- as ``dest``.

    Relative paths are kept. A file whose copy does not have the expected SHA-256 (or, without one,
    the SHA-256 its source had just before) raises ArchiveError and nothing is left behind. Returns
    False when ``dest`` already exists: an archive is never overwritten."""
    src_root, dest = Path(src_root), Path(dest)
    if dest.exists():
        return False
    tmp = dest.with_name(dest.name + ".partial")
    if tmp.exists():
        _make_writable(tmp)
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    copied: dict[str, str] = {}
    try:
        for rel, expected in files:
            src = src_root / rel
            before = expected or sha256_file(src)
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            _link_or_copy(src, target)
            copied[rel] = sha256_file(target)
            if copied[rel] != before:
                raise ArchiveError(f"{src}: changed while it was being archived (sha256 differs)")
        sums = "".join(f"{sha}  {name}\n" for name, sha in sorted(copied.items()))
        (dest.parent / f"{dest.name}.sha256").write_text(sums, encoding="utf-8")
        _make_read_only(tmp)
        fsync_tree(tmp)
        tmp.rename(dest)
        os.chmod(dest.parent / f"{dest.name}.sha256", 0o444)
        fsync_dir(dest.parent)
    except BaseException:
        if tmp.exists():
            _make_writable(tmp)
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    return True


def archive_delivery(delivery: Delivery, dest: Path) -> bool:
    """Archive a landing folder: every file, hidden ones and the completion marker included (the
    archive keeps every byte delivered); the content files are checked against the SHA-256 read
    when the delivery was found complete."""
    expected = {name: sha for name, sha, _ in delivery.files}
    present = sorted(p.relative_to(delivery.folder).as_posix() for p in delivery.folder.rglob("*") if p.is_file())
    missing = sorted(set(expected) - set(present))
    if missing:
        raise ArchiveError(f"{delivery.folder}: {missing} disappeared while the export was being archived")
    try:
        return archive_files(delivery.folder, [(rel, expected.get(rel)) for rel in present], dest)
    except ArchiveError as exc:
        raise ArchiveError(f"{exc}; it will be archived once it stops changing") from None


def verify_archive(dest: Path) -> list[str]:
    """Files of an archived export whose SHA-256 differs from its ``.sha256`` list (empty: intact)."""
    dest = Path(dest)
    sums = dest.parent / f"{dest.name}.sha256"
    problems = []
    for line in sums.read_text(encoding="utf-8").splitlines():
        sha, name = line.split("  ", 1)
        path = dest / name
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif sha256_file(path) != sha:
            problems.append(f"{name}: sha256 differs")
    return problems


def _make_read_only(root: Path) -> None:
    for path in sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        os.chmod(path, 0o555 if path.is_dir() else 0o444)
    os.chmod(root, 0o555)


def _make_writable(root: Path) -> None:
    os.chmod(root, 0o755)
    for path in root.rglob("*"):
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
