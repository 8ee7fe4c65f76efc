"""What produced a cut's outputs: the code (commit and a hash of the source files) and the versions
of the libraries that can change output bytes. Recorded in the manifest and in the audit log."""

import hashlib
from importlib.metadata import PackageNotFoundError, version

from pipelines.resources import REPO_ROOT

CODE_DIRS = ("pipelines", "assets", "clinical", "deliverables", "report_templates", "expectations")
CODE_SUFFIXES = {".py", ".j2", ".css", ".typ", ".json", ".yaml", ".yml", ".html", ".xsd"}
# Libraries whose version can change output bytes (PDF layout, workbook XML, DuckDB storage);
# matplotlib for the DejaVu Sans it bundles, the DSMB PDF's font.
ENVIRONMENT_PACKAGES = ("duckdb", "polars", "typst", "matplotlib", "openpyxl", "lxml", "jinja2")


def code_version() -> str:
    """The commit the pipeline ran from, when it runs from a git checkout (else the package version)."""
    head = REPO_ROOT / ".git" / "HEAD"
    try:
        ref = head.read_text().strip()
        if ref.startswith("ref: "):
            return (REPO_ROOT / ".git" / ref[5:]).read_text().strip()
        return ref
    except OSError:
        return version("im83-pipeline")


def code_sha256() -> str:
    """SHA-256 over the pipeline's source files (path and content): tells apart uncommitted changes."""
    digest = hashlib.sha256()
    for folder in CODE_DIRS:
        for path in sorted((REPO_ROOT / folder).rglob("*")):
            if path.is_file() and path.suffix in CODE_SUFFIXES and "__pycache__" not in path.parts:
                digest.update(f"{path.relative_to(REPO_ROOT).as_posix()}\n".encode())
                digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def environment() -> dict[str, str]:
    out = {}
    for name in ENVIRONMENT_PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "absent"
    return out
