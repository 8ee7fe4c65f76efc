"""Freeze a data cut for a DSMB meeting, and verify it by regenerating it.

``python -m pipelines freeze --study S --data-cut D [--reason TEXT]``
    Checks every output of ``<out>/<study>/<D>`` against its manifest, makes sure the export and the
    configuration it was made from are archived, writes ``FROZEN.json`` and makes the folder
    read-only. From then on a run for that data cut is refused (by the run command, by the ``trial``
    resource at run start and by the manifest asset before it publishes) with a message naming the
    freeze; the file permissions stop other users' tools. Logged in the study's audit log.

``python -m pipelines verify --study S --data-cut D [--keep]``
    Re-runs the archived export with the archived configuration into a scratch folder and compares
    every output with the published one byte for byte. Exit status 0 when every output and the
    manifest's data are identical; otherwise every differing file is listed with its size, the
    offset of its first differing byte and how many bytes differ (for text files the first
    differing line, for workbooks the differing members). Differences in the code or library
    versions recorded in the manifest are reported as notes. Logged in the audit log.
"""

from __future__ import annotations

import difflib
import json
import os
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from clinical.ingest import sha256_file
from pipelines.archive import ArchiveError, archive_files, config_archive, export_archive

FROZEN = "FROZEN.json"
MANIFEST = "manifest.json"
# Manifest fields that describe the software, not the data: a difference there is a note.
SOFTWARE_FIELDS = ("code_version", "code_sha256", "environment")


def frozen_record(final_dir: Path) -> dict[str, Any] | None:
    path = Path(final_dir) / FROZEN
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return {"reason": "FROZEN.json unreadable", "frozen_at": "?"}


def frozen_message(study: str, cut: str, record: dict[str, Any]) -> str:
    return (
        f"data cut {cut} of study {study} is frozen ({record.get('reason') or 'DSMB'}; frozen at "
        f"{record.get('frozen_at')}): its outputs are read-only and will not be overwritten. "
        f"Run a new data cut instead, or check the frozen one with `python -m pipelines verify`."
    )


def _paths(out_root: str, study_config: str, cut: str) -> tuple[Any, Path, Path]:
    from clinical.study import load_study

    cfg = load_study(study_config)
    study_root = Path(out_root) / cfg.study.id
    return cfg, study_root, study_root / cut


def _check_against_manifest(final: Path, manifest: dict) -> list[str]:
    problems = []
    for out in manifest["outputs"]:
        path = final / out["path"]
        if not path.is_file():
            problems.append(f"{out['path']}: missing")
        elif sha256_file(path) != out["sha256"]:
            problems.append(f"{out['path']}: sha256 differs from the manifest")
    return problems


def _archived_export(study_root: Path, manifest: dict, export: str | None) -> tuple[Path | None, list[str]]:
    """The archived export folder of this manifest (archiving ``export`` first if given)."""
    dest = export_archive(study_root, manifest["export_sha256"], manifest["export_id"])
    if not dest.is_dir() and export:
        try:
            # True: archived just now, every copy checked against the manifest's SHA-256 (else it
            # raised), so there is nothing left to check. False: it already existed; checked below.
            if archive_files(Path(export), [(i["path"], i["sha256"]) for i in manifest["inputs"]], dest):
                return dest, []
        except (ArchiveError, OSError) as exc:
            return None, [f"the export could not be archived: {exc}"]
    if not dest.is_dir():
        return None, [f"no archived export under {dest.parent}; pass --export with the export folder"]
    problems = [
        f"archived export {i['path']}: sha256 differs from the manifest"
        for i in manifest["inputs"]
        if not (dest / i["path"]).is_file() or sha256_file(dest / i["path"]) != i["sha256"]
    ]
    return dest, problems


def _config_for(study_root: Path, manifest: dict) -> tuple[Path | None, str]:
    cfg = manifest["config"]
    current = Path(cfg["path"])
    if current.is_file() and sha256_file(current) == cfg["sha256"]:
        return current, ""
    archived = config_archive(study_root, cfg["sha256"]) / current.name
    if archived.is_file() and sha256_file(archived) == cfg["sha256"]:
        return archived, f"note: {cfg['path']} changed since this cut was made; regenerated with the archived copy {archived}"
    return None, f"the study configuration of this cut (sha256 {cfg['sha256'][:16]}) is neither at {cfg['path']} nor archived"


def freeze(out_root: str, study_config: str, cut: str, reason: str = "", export: str | None = None) -> int:
    from pipelines import audit, lock

    cfg, study_root, final = _paths(out_root, study_config, cut)
    manifest_path = final / MANIFEST
    if not manifest_path.is_file():
        print(f"error: {final}: no published outputs (manifest.json) to freeze", file=sys.stderr)
        return 2
    try:
        with lock.study_lock(study_root, cfg.study.id, purpose=f"freeze {cut}"):
            existing = frozen_record(final)
            if existing:
                print(f"{final} is already frozen ({existing.get('reason')}, {existing.get('frozen_at')})")
                return 0
            manifest, archived, _config, _note, problems = _published(study_root, final, export)
            if problems:
                for p in problems:
                    print(f"error: {p}", file=sys.stderr)
                print(f"{final} NOT frozen", file=sys.stderr)
                return 1
            record = {
                "study": cfg.study.id,
                "data_cut": cut,
                "reason": reason or "DSMB meeting",
                "frozen_at": audit.now_iso(),
                "frozen_by": os.environ.get("USER") or str(os.getuid()),
                "manifest_sha256": sha256_file(manifest_path),
                "export_id": manifest["export_id"],
                "export_sha256": manifest["export_sha256"],
                "export_archive": str(archived),
                "outputs": [{"path": o["path"], "sha256": o["sha256"]} for o in manifest["outputs"]],
            }
            (final / FROZEN).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
            for p in final.iterdir():
                p.chmod(0o444)
            final.chmod(0o555)
            audit.append(
                study_root,
                {
                    "event": "freeze",
                    "status": "FROZEN",
                    "study": cfg.study.id,
                    "data_cut": cut,
                    "export_id": manifest["export_id"],
                    "export_dir": str(archived),
                    "export_sha256": manifest["export_sha256"],
                    "config_path": manifest["config"]["path"],
                    "config_sha256": manifest["config"]["sha256"],
                    "code_version": manifest.get("code_version"),
                    "outputs": record["outputs"] + [{"path": MANIFEST, "sha256": record["manifest_sha256"]}],
                    "detail": {"reason": record["reason"], "frozen_by": record["frozen_by"]},
                },
            )
    except lock.StudyBusyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    print(f"frozen: {final} ({len(record['outputs'])} outputs + manifest, read-only); reason: {record['reason']}")
    return 0


# -- comparing two folders byte for byte -------------------------------------------------------


def _first_diff(a: bytes, b: bytes) -> int:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def describe_difference(published: Path, regenerated: Path,
                        expected: bytes | None = None, actual: bytes | None = None) -> list[str]:
    """How two versions of an output file differ: where, how many bytes, and what for text,
    workbooks (zip members) and DuckDB files (tables, columns, rows). ``expected`` and ``actual``:
    the two files' bytes when the caller has already read them (else they are read here)."""
    name = published.name
    if expected is None:
        expected = published.read_bytes()
    if actual is None:
        actual = regenerated.read_bytes()
    offset = _first_diff(expected, actual)
    differing = sum(x != y for x, y in zip(expected, actual)) + abs(len(expected) - len(actual))
    lines = [
        (
            f"{name}: DIFFERS: {len(expected)} vs {len(actual)} bytes, first difference at byte {offset} "
            f"(0x{offset:x}), {differing} byte(s) differ"
        )
    ]
    if name.endswith((".html", ".json", ".xml", ".csv", ".txt")):
        diff = difflib.unified_diff(
            expected.decode("utf-8", "replace").splitlines(),
            actual.decode("utf-8", "replace").splitlines(),
            "published", "regenerated", n=0, lineterm="",
        )
        lines += [f"    {d}" for d in list(diff)[2:12]]
    elif name.endswith(".xlsx"):
        import io

        with zipfile.ZipFile(io.BytesIO(expected)) as za, zipfile.ZipFile(io.BytesIO(actual)) as zb:
            members = sorted(set(za.namelist()) | set(zb.namelist()))
            for m in members:
                ma = za.read(m) if m in za.namelist() else None
                mb = zb.read(m) if m in zb.namelist() else None
                if ma != mb:
                    lines.append(f"    member {m} differs")
    elif name.endswith(".duckdb"):
        lines += [f"    {d}" for d in database_differences(published, regenerated)]
    return lines


def database_differences(published: Path, regenerated: Path) -> list[str]:
    """What differs between two DuckDB files, table by table (tables, columns, rows)."""
    import duckdb

    con = duckdb.connect(":memory:")
    try:
        con.execute("ATTACH ? AS a (READ_ONLY)", [str(published)])
        con.execute("ATTACH ? AS b (READ_ONLY)", [str(regenerated)])
        cols = {
            db: {
                (s, t): c
                for s, t, c in con.execute(
                    "SELECT schema_name, table_name, list(column_name || ' ' || data_type ORDER BY column_index) "
                    "FROM duckdb_columns() WHERE database_name = ? GROUP BY ALL",
                    [db],
                ).fetchall()
            }
            for db in ("a", "b")
        }
        out = []
        for key in sorted(set(cols["a"]) | set(cols["b"])):
            name = ".".join(key)
            if key not in cols["b"]:
                out.append(f"table {name}: not regenerated")
            elif key not in cols["a"]:
                out.append(f"table {name}: new in the regenerated database")
            elif cols["a"][key] != cols["b"][key]:
                out.append(f"table {name}: columns differ: {cols['a'][key]} -> {cols['b'][key]}")
            else:
                q = f'"{key[0]}"."{key[1]}"'
                gone = con.execute(f"SELECT count(*) FROM (FROM a.{q} EXCEPT ALL FROM b.{q})").fetchone()[0]
                new = con.execute(f"SELECT count(*) FROM (FROM b.{q} EXCEPT ALL FROM a.{q})").fetchone()[0]
                if gone or new:
                    out.append(f"table {name}: {gone} row(s) only in the published, {new} only in the regenerated")
        return out or ["same tables, columns and rows: the difference is in the storage layout or header"]
    finally:
        con.close()


def compare_dirs(published: Path, regenerated: Path, names: list[str]) -> tuple[list[str], list[str]]:
    """(differences, identical) between two output folders for the given file names."""
    diffs, same = [], []
    for name in names:
        a, b = published / name, regenerated / name
        if not b.is_file():
            diffs.append(f"{name}: not regenerated")
            continue
        if not a.is_file():
            diffs.append(f"{name}: missing from the published folder")
            continue
        # Read once: a differing file is described from the same bytes.
        expected, actual = a.read_bytes(), b.read_bytes()
        if expected == actual:
            same.append(name)
        else:
            diffs.extend(describe_difference(a, b, expected, actual))
    return diffs, same


def compare_manifests(published: dict, regenerated: dict) -> tuple[list[str], list[str]]:
    """(data differences, software notes) between two manifests, by top-level field."""
    data, notes = [], []
    for key in sorted(set(published) | set(regenerated)):
        a, b = published.get(key), regenerated.get(key)
        if a == b:
            continue
        if key in ("outputs", "inputs") and isinstance(a, list) and isinstance(b, list):
            da, db = {x["path"]: x for x in a}, {x["path"]: x for x in b}
            changed = sorted(p for p in set(da) | set(db) if da.get(p) != db.get(p))
            data.append(f"manifest field {key!r}: entries differ for {', '.join(changed)}")
            continue
        target = notes if key in SOFTWARE_FIELDS else data
        target.append(f"manifest field {key!r}: {json.dumps(a)[:200]} -> {json.dumps(b)[:200]}")
    return data, notes


def _published(study_root: Path, final: Path, export: str | None):
    """What freeze and verify both check of a published cut: (manifest, archived export, archived
    configuration, a note on the configuration, problems). The outputs must match the manifest, and
    the archived export and configuration must exist and match their hashes."""
    manifest = json.loads((final / MANIFEST).read_text(encoding="utf-8"))
    problems = _check_against_manifest(final, manifest)
    archived, more = _archived_export(study_root, manifest, export)
    problems += more
    config, note = _config_for(study_root, manifest)
    if config is None:
        problems.append(note)
    return manifest, archived, config, note, problems


def verify(out_root: str, study_config: str, cut: str, keep: bool = False) -> int:
    from pipelines import audit
    from pipelines.run import run_export

    cfg, study_root, final = _paths(out_root, study_config, cut)
    manifest_path = final / MANIFEST
    if not manifest_path.is_file():
        print(f"error: {final}: no published outputs (manifest.json) to verify", file=sys.stderr)
        return 2
    manifest, export, config, note, problems = _published(study_root, final, None)
    if config is not None and note:
        print(note)
    if export is None or config is None:
        for p in problems:
            print(f"error: {p}", file=sys.stderr)
        return 2
    scratch_parent = study_root / ".verify"
    scratch_parent.mkdir(exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f"{cut}-", dir=scratch_parent))
    try:
        # Earlier cuts are visible to the regeneration as they were to the original run.
        (scratch / cfg.study.id).mkdir()
        for other in study_root.glob("[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]"):
            if other.name < cut:
                (scratch / cfg.study.id / other.name).symlink_to(other.resolve())
        print(f"regenerating {cfg.study.id} {cut} from {export} ...")
        rc = run_export(str(config), str(export), str(scratch), cut, ephemeral=True)
        regenerated = scratch / cfg.study.id / cut
        if rc != 0 or not (regenerated / MANIFEST).is_file():
            problems.append(f"the regeneration run failed (exit status {rc})")
            diffs, same, notes = [], [], []
        else:
            names = [o["path"] for o in manifest["outputs"]]
            diffs, same = compare_dirs(final, regenerated, names)
            data, notes = compare_manifests(manifest, json.loads((regenerated / MANIFEST).read_text("utf-8")))
            diffs += data
            if not data and not notes:
                same.append(MANIFEST)
        for name in same:
            print(f"{name}: identical")
        for line in notes:
            print(f"note: {line}")
        for line in problems + diffs:
            print(line)
        ok = not problems and not diffs
        print(
            f"VERIFIED: {cfg.study.id} {cut}: all {len(same)} files byte-identical"
            if ok
            else f"NOT VERIFIED: {cfg.study.id} {cut}: {len(problems) + len([d for d in diffs if not d.startswith('    ')])} "
            "difference(s)"
        )
        if keep:
            print(f"regenerated outputs kept in {regenerated}")
        audit.append(
            study_root,
            {
                "event": "verify",
                "status": "IDENTICAL" if ok else "DIFFERENT",
                "study": cfg.study.id,
                "data_cut": cut,
                "export_id": manifest["export_id"],
                "export_dir": str(export),
                "export_sha256": manifest["export_sha256"],
                "config_path": str(config),
                "config_sha256": manifest["config"]["sha256"],
                "code_version": manifest.get("code_version"),
                "detail": {"identical": same, "differences": problems + diffs, "notes": notes,
                           "frozen": bool(frozen_record(final))},
            },
        )
        return 0 if ok else 1
    finally:
        if not keep:
            shutil.rmtree(scratch, ignore_errors=True)
