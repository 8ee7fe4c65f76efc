"""The landing area and the archive: exports arrive as folders, are copied unchanged, made read-only.

Layout (``pipelines.sensors`` and ``python -m pipelines intake`` drive it)::

    landing/<study>/<export id>/...                 where the EDC or CRO drops an export (never modified)
    <output>/<study>/archive/exports/<fp16>/<export id>/   the archived copy: byte-identical, read-only
    <output>/<study>/archive/exports/<fp16>/<export id>.sha256   sha256sum lines for every file

``fp16`` is the first 16 hex digits of the export fingerprint: SHA-256 over the ``sha256  path``
lines of its files, sorted by path (the same fingerprint the manifest records,
``pipelines.audit.export_fingerprint``), so an identical re-delivery, under any folder name, is
found in the archive and not loaded twice.

A landing folder is complete when the sender has written the marker file ``_COMPLETE`` into it,
or, without a marker, when its file set (names, sizes, modification times) has not changed between
two looks and nothing in it is younger than the settling time. Nothing here deletes or modifies a
landing folder; the pipeline reads only the archived copy.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from clinical.ingest import sha256_file
from clinical.sources import COMPLETE_MARKER, list_files, read_meta

SETTLE_SECONDS = 600  # default: a folder without a marker is complete after 10 quiet minutes


def export_fingerprint(files: list[tuple[str, str]]) -> str:
    """SHA-256 over ``sha256  path`` lines (sha256sum format), sorted by path: one hash per export."""
    text = "".join(f"{sha}  {name}\n" for name, sha in sorted(files))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Delivery:
    """One landing folder as it is now."""

    folder: Path
    files: tuple[tuple[str, str, int], ...]  # (relative path, sha256, bytes); the marker excluded
    fingerprint: str

    @property
    def export_id(self) -> str:
        return str(read_meta(self.folder).get("export_id") or self.folder.name)


def content_files(folder: Path) -> list[Path]:
    """The files that make an export's content (its fingerprint): every file but hidden ones (``.DS_Store``)
    and the completion marker. The archive keeps those too."""
    folder = Path(folder)
    return [p for p in list_files(folder) if p.relative_to(folder).as_posix() != COMPLETE_MARKER]


def read_delivery(folder: Path) -> Delivery:
    folder = Path(folder)
    files = tuple((p.relative_to(folder).as_posix(), sha256_file(p), p.stat().st_size) for p in content_files(folder))
    return Delivery(folder, files, export_fingerprint([(name, sha) for name, sha, _ in files]))


def listing_signature(folder: Path) -> list[list]:
    """What changes while a sender is still writing: names, sizes and modification times."""
    folder = Path(folder)
    out = []
    for p in list_files(folder):
        st = p.stat()
        out.append([p.relative_to(folder).as_posix(), st.st_size, st.st_mtime_ns])
    return out


def completeness(folder: Path, previous_signature: list | None, settle_seconds: float = SETTLE_SECONDS,
                 now: float | None = None) -> tuple[bool, str, list]:
    """(complete?, why, signature now). ``previous_signature`` is what the last look saw (None: no last look)."""
    folder = Path(folder)
    signature = listing_signature(folder)
    if (folder / COMPLETE_MARKER).is_file():
        return True, f"marker {COMPLETE_MARKER} present", signature
    if not [s for s in signature if s[0] != COMPLETE_MARKER]:
        return False, "empty", signature
    now = time.time() if now is None else now
    youngest = max(s[2] for s in signature) / 1e9
    if now - youngest < settle_seconds:
        return False, f"files changed {now - youngest:.0f} s ago (settling time {settle_seconds:.0f} s)", signature
    if previous_signature is not None and previous_signature != signature:
        return False, "file set changed since the last look", signature
    return True, f"file set stable for {settle_seconds:.0f} s, no marker", signature


def archive_path(study_root: Path, fingerprint: str, export_id: str) -> Path:
    """Where an export is archived (the layout of ``assets.publish.archive_dir``)."""
    return Path(study_root) / "archive" / "exports" / fingerprint[:16] / export_id


def find_archived(study_root: Path, fingerprint: str) -> Path | None:
    """The archived copy of an export with this fingerprint, under whatever export id it arrived."""
    folder = Path(study_root) / "archive" / "exports" / fingerprint[:16]
    found = sorted(p for p in folder.glob("*") if p.is_dir() and not p.name.endswith(".partial")) if folder.is_dir() else []
    return found[0] if found else None


class ArchiveError(RuntimeError):
    """The export changed while it was being copied, or the archive cannot be written."""


def archive_delivery(delivery: Delivery, dest: Path) -> bool:
    """Copy the landing folder to ``dest`` byte for byte, verify every SHA-256, make it read-only.

    Returns False when ``dest`` already exists (nothing is overwritten). The copy is made in
    ``<dest>.partial`` and renamed into place only when complete and verified.
    """
    dest = Path(dest)
    if dest.exists():
        return False
    tmp = dest.with_name(dest.name + ".partial")
    if tmp.exists():
        _make_writable(tmp)
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    expected = {name: sha for name, sha, _ in delivery.files}
    copied: dict[str, str] = {}
    try:
        # Every file, hidden ones and the marker included: the archive keeps every byte delivered.
        for src in sorted(p for p in delivery.folder.rglob("*") if p.is_file()):
            rel = src.relative_to(delivery.folder).as_posix()
            before = expected.get(rel) or sha256_file(src)
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
            copied[rel] = sha256_file(target)
            if copied[rel] != before:
                raise ArchiveError(f"{delivery.folder / rel}: changed while it was being archived; it will be archived "
                                   "once it stops changing")
        missing = set(expected) - set(copied)
        if missing:
            raise ArchiveError(f"{delivery.folder}: {sorted(missing)} disappeared while the export was being archived")
        sums = "".join(f"{sha}  {name}\n" for name, sha in sorted(copied.items()))
        (tmp.parent / f"{dest.name}.sha256").write_text(sums, encoding="utf-8")
        _make_read_only(tmp)
        _fsync_tree(tmp)
        tmp.rename(dest)
        os.chmod(dest.parent / f"{dest.name}.sha256", 0o444)
    except BaseException:
        if tmp.exists():
            _make_writable(tmp)
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    return True


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


def _fsync_tree(root: Path) -> None:
    for path in [*root.rglob("*"), root]:
        if path.is_file():
            with path.open("rb") as fh:
                os.fsync(fh.fileno())
