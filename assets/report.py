"""Report: the deliverables, each written into the run's work folder (published by ``assets.publish``)."""


import functools
import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import dagster as dg

from assets.derive import (
    adlb,
    crs_icans,
    data_queries,
    dlt_review,
    dose_escalation,
    eligibility,
    exposure,
    participant_flow,
    pharmacokinetics,
    response,
    safety_tables,
)
from assets.ingest import OWNERS
from clinical.ingest import sha256_file
from deliverables import changes, dsmb, figures, registry, workbooks
from deliverables.tables import display_tables, load_report_tables
from pipelines.resources import DATABASE_NAME, REPO_ROOT, TrialResource

TABLE_ASSETS = [
    participant_flow, dose_escalation, safety_tables, adlb, crs_icans, pharmacokinetics, exposure, dlt_review,
    eligibility, data_queries, response,
]
RRS_XSD = Path(os.environ.get("RRS_XSD", REPO_ROOT.parent / "shared" / "registry" / "RRSUploadSchema.xsd"))
# Defined once for every report asset, here and in assets.publish (the manifest): an asset spec
# takes the group and owners; a step (the reports multi-asset, the manifest asset) also the pool.
SPEC_COMMON = {"group_name": "report", "owners": OWNERS}
COMMON = {**SPEC_COMMON, "pool": "trial_db"}

OUTPUT_FILES = {
    "database": DATABASE_NAME,
    "dsmb_html": "dsmb_report.html",
    "dsmb_pdf": "dsmb_report.pdf",
    "dsmb_open_html": "dsmb_report_open.html",
    "dsmb_open_pdf": "dsmb_report_open.pdf",
    "sponsor_xlsx": "sponsor_workbook.xlsx",
    "registry_json": "registry_results.json",
    "registry_xml": "registry_results.xml",
    "registry_draft_html": "registry_draft.html",
    "queries_xlsx": "data_queries.xlsx",
}


def _path(trial: TrialResource, role: str) -> Path:
    return trial.work_dir / OUTPUT_FILES[role]


def _changes_since_previous_cut(trial: TrialResource, con) -> changes.CutChanges | None:
    """The changes since the latest earlier published cut (None on a first report)."""
    found = changes.compare_with_previous_dir(trial.previous_final_dir(), con, trial.cut, DATABASE_NAME)
    return None if found.first_report else found


def _file_meta(path: Path) -> dict[str, dg.MetadataValue]:
    return {"path": dg.MetadataValue.path(str(path)), "sha256": dg.MetadataValue.text(sha256_file(path))}


def _report_spec(name: str, kinds: set[str], description: str, deps=TABLE_ASSETS) -> dg.AssetSpec:
    return dg.AssetSpec(key=["report", name], deps=deps, kinds=kinds, description=description, **SPEC_COMMON)


dsmb_report = _report_spec(
    "dsmb_report", {"html", "pdf"},
    "DSMB report (HTML and PDF), closed session by dose level with the participant-level listings and figures, "
    "and open session with pooled safety data; changes since the previous published data cut.",
)
sponsor_workbook = _report_spec(
    "sponsor_workbook", {"excel"},
    "Sponsor workbook (xlsx): cover sheet and one sheet per table and listing; values only.",
)
registry_results = _report_spec(
    "registry_results", {"json", "xml"},
    "ClinicalTrials.gov results draft: API v2 resultsSection JSON, PRS upload XML (validated against "
    "RRSUploadSchema.xsd) and a human-readable draft with the pre-check findings.",
)
queries_workbook = _report_spec(
    "queries_workbook", {"excel"},
    "Data-queries workbook for data managers: quarantined rows and failing rule records, by status.",
    deps=[data_queries],
)


def _start_dsmb(trial: TrialResource, pool: ThreadPoolExecutor, tables, closed, svgs, since) -> Future:
    """Write both sessions' HTML and start their PDFs in the pool's thread, from the same report
    context (``closed``: the closed session's display tables, from which the open session's are made)."""
    jobs = []
    for session, html_role, pdf_role in (("Open", "dsmb_open_html", "dsmb_open_pdf"), ("Closed", "dsmb_html", "dsmb_pdf")):
        ctx = dsmb.dsmb_context(tables, trial.cfg, trial.cut, session=session, figures=svgs, changes=since,
                                closed=closed)
        _path(trial, html_role).write_text(dsmb.render_html(ctx), encoding="utf-8")
        jobs.append((ctx, _path(trial, pdf_role)))
    return pool.submit(lambda: [dsmb.write_pdf(ctx, out) for ctx, out in jobs])


def _dsmb_result(trial: TrialResource, since) -> dg.MaterializeResult:
    previous_cut = since.previous_cut if since is not None else "none (first report)"
    meta: dict[str, dg.MetadataValue] = {"previous_cut": dg.MetadataValue.text(str(previous_cut))}
    for session, pdf_role in (("closed", "dsmb_pdf"), ("open", "dsmb_open_pdf")):
        pdf = _file_meta(_path(trial, pdf_role))
        meta[f"{session}_pdf"], meta[f"{session}_pdf_sha256"] = pdf["path"], pdf["sha256"]
    return dg.MaterializeResult(asset_key=dsmb_report.key, metadata=meta)


def _registry_results(context: dg.AssetExecutionContext, trial: TrialResource) -> dg.MaterializeResult:
    with trial.connect() as con:
        section = registry.build_results_section(con, trial.cfg, trial.cut)
        enrolled = con.execute("SELECT count(*) FROM analysis.adsl WHERE ENRLFL = 'Y'").fetchall()[0][0]
    xml = registry.results_xml(section, trial.cfg)
    xml_errors = registry.validate_xml(xml, RRS_XSD) if RRS_XSD.is_file() else []
    if not RRS_XSD.is_file():
        context.log.warning(f"{RRS_XSD} not found: PRS XML written but not validated against the schema")
    if xml_errors:
        raise dg.Failure(
            description="PRS XML does not validate against RRSUploadSchema.xsd",
            metadata={"errors": dg.MetadataValue.json(xml_errors[:20])},
            allow_retries=False,
        )
    findings = registry.precheck(section, xml_errors, cfg=trial.cfg, actual_enrollment=enrolled)
    _path(trial, "registry_json").write_bytes(registry.results_json(section, trial.cfg))
    _path(trial, "registry_xml").write_bytes(xml)
    _path(trial, "registry_draft_html").write_text(
        registry.render_draft_html(section, findings, trial.cfg, trial.cut), encoding="utf-8"
    )
    errors = [f for f in findings if f.severity == "ERROR"]
    return dg.MaterializeResult(
        asset_key=registry_results.key,
        metadata={
            **_file_meta(_path(trial, "registry_xml")),
            "xsd_validated": RRS_XSD.is_file(),
            "precheck_errors": len(errors),
            "precheck_warnings": len(findings) - len(errors),
        },
    )


@dg.multi_asset(
    name="reports",
    specs=[dsmb_report, sponsor_workbook, registry_results, queries_workbook],
    can_subset=True,
    pool=COMMON["pool"],
    description="Every deliverable in one step: the DSMB PDFs render in a thread (Typst) while the workbooks and "
    "the registry draft are written here (docs/performance.md).",
)
def reports(context: dg.AssetExecutionContext, trial: TrialResource):
    """One step for the four deliverables, so that they are written at once: Typst releases the GIL
    while it lays out the DSMB PDFs, openpyxl is single-threaded Python, and the in-process executor
    runs one step at a time. The report tables and the changes since the previous cut are read once
    for the DSMB report and the sponsor workbook."""
    selected = context.selected_asset_keys
    failures: list[tuple[str, Exception]] = []

    def failed(spec: dg.AssetSpec, exc: Exception) -> None:
        context.log.error(f"{spec.key.to_user_string()}: {exc}")
        failures.append((spec.key.to_user_string(), exc))

    @functools.cache
    def inputs() -> tuple:
        """The report tables, their closed-session display tables and the changes since the previous
        cut (the DSMB report's and the sponsor workbook's; built once, or again to raise the same
        error for the second)."""
        with trial.connect() as con:
            tables = load_report_tables(con, expected_forms=trial.cfg.data_quality.expected_forms)
            return tables, display_tables(tables), _changes_since_previous_cut(trial, con)

    def start_dsmb() -> Future:
        tables, closed, since = inputs()
        with trial.connect() as con:
            svgs = figures.render_figures(figures.load_figure_data(con, trial.cut))
        return _start_dsmb(trial, pool, tables, closed, svgs, since)

    def sponsor() -> dg.MaterializeResult:
        tables, closed, since = inputs()
        change_tables = changes.layout_changes(since, tables.dose_label) if since is not None else []
        workbooks.write_sponsor_workbook(tables, trial.cfg, trial.cut, _path(trial, "sponsor_xlsx"),
                                         first=change_tables, closed=closed)
        return dg.MaterializeResult(asset_key=sponsor_workbook.key, metadata=_file_meta(_path(trial, "sponsor_xlsx")))

    def queries() -> dg.MaterializeResult:
        with trial.connect() as con:
            workbooks.write_queries_workbook(con, trial.cfg, trial.cut, _path(trial, "queries_xlsx"))
        return dg.MaterializeResult(asset_key=queries_workbook.key, metadata=_file_meta(_path(trial, "queries_xlsx")))

    def dsmb_pdfs() -> dg.MaterializeResult:
        rendering.result()
        return _dsmb_result(trial, inputs()[2])

    # The PDFs start first, in their thread; the rest is written here meanwhile. Each deliverable
    # fails on its own, as when each had a step: the others are still written and reported, and the
    # step then fails naming every failure (the manifest does not run).
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dsmb-pdf")
    rendering = None
    if dsmb_report.key in selected:
        try:
            rendering = start_dsmb()
        except Exception as exc:  # noqa: BLE001 - reported below with the others
            failed(dsmb_report, exc)
    # What is still to write, in order; the DSMB PDFs last and only if their rendering started (a
    # failed start is already reported).
    parts = [
        (spec, write)
        for spec, write in (
            (sponsor_workbook, sponsor),
            (registry_results, lambda: _registry_results(context, trial)),
            (queries_workbook, queries),
        )
        if spec.key in selected
    ]
    if rendering is not None:
        parts.append((dsmb_report, dsmb_pdfs))
    try:
        for spec, write in parts:
            try:
                result = write()
            except Exception as exc:  # noqa: BLE001 - reported below with the others
                failed(spec, exc)
                continue
            yield result
    finally:  # a rendering under way ends within a second: the step does not leave it behind
        pool.shutdown(wait=True, cancel_futures=True)
    if len(failures) == 1:
        raise failures[0][1]
    if failures:
        raise dg.Failure(description="\n".join(f"{name}: {exc}" for name, exc in failures), allow_retries=False)


report_assets = [reports]
