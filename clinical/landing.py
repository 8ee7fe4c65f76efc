"""The landing area: exports arrive as folders; when is one complete, and what is its fingerprint.

    landing/<study>/<export id>/...     where the EDC or CRO drops an export (never modified)

The export fingerprint is the SHA-256 over the ``sha256  path`` lines of its content files, sorted
by path: one hash per export, the one the manifest and the audit log record and the archive
(``pipelines.archive``) is keyed by, so an identical re-delivery, under any folder name, is found
and not loaded twice. ``pipelines.sensors`` and ``python -m pipelines intake`` drive the landing area.

A landing folder is complete when the sender has written the marker file ``_COMPLETE`` into it,
or, without a marker, when its file set (names, sizes, modification times) has not changed between
two looks and nothing in it is younger than the settling time. Nothing here deletes or modifies a
landing folder; the pipeline reads only the archived copy.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

from clinical.ingest import sha256_file
from clinical.sources import COMPLETE_MARKER, export_id_of, list_files

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
        return export_id_of(self.folder)


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
