"""DSMB report: one context, laid out as HTML by Jinja2 and as PDF by Typst.

    ctx = dsmb_context(tables, cfg, data_cut, report_number=1, session="Open", figures=svgs)
    html = render_html(ctx)   # report_templates/dsmb.html.j2, stylesheet inlined
    pdf = render_pdf(ctx)     # report_templates/dsmb.typ, PDF bytes

(``render_dsmb_html`` and ``write_dsmb_pdf`` do both steps.) The context holds
everything the report says: the chapters with their numbered tables, listings and figures, the notes
and pointers to the closed session, the summary's facts, key figures, decision and asks, the flow
diagram's boxes, the data notes. Both templates only lay it out, so the PDF reads as the HTML.

HTML: a complete, self-contained document; every value from the data goes through Jinja2
autoescaping, including free text such as AETERM and DTHCAUS.

PDF: ``dsmb.typ`` is a static Typst template. The context reaches it as JSON in
``sys.inputs.data`` (:func:`typst_data`: display cells through :func:`cell_text`, as the HTML shows
them; the figures' SVG as text, drawn with ``image(bytes(svg), format: "svg")``), and the template
places every value as text, never as markup: no value from the data is ever parsed by Typst. Font:
DejaVu Sans from matplotlib's bundled fonts (the figures' font), ahead of the system's own copy of
it; the other system fonts stay available as fallbacks (Chinese free text).

Determinism: nothing reads the wall clock. The report date is the data cut-off unless an explicit
``report_date`` is given; the PDF's document date (creation and modification) is the data cut-off at
00:00 UTC. With the same input and the same installed fonts, two renders give byte-identical PDFs.
"""

from __future__ import annotations

import atexit
import datetime as dt
import functools
import json
import numbers
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

from clinical.study import StudyConfig
from deliverables.changes import CutChanges, layout_changes, summary_lines
from deliverables.tables import (
    SESSIONS,
    DisplayTable,
    FlowBox,
    ReportTables,
    as_date,
    consistency_problems,
    decision_summary,
    flow_boxes,
    fmt_date,
    key_figures,
    pdf_tables,
    within_budget,
)

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "report_templates"
TEMPLATE = "dsmb.html.j2"
STYLESHEET = "dsmb.css"
TYPST_TEMPLATE = "dsmb.typ"


def cell_text(value: Any) -> str:
    """How a display cell reads in the report (the workbook shows the same text/number)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "Yes" if value else "No"
    if isinstance(value, (dt.date, dt.datetime)):
        return fmt_date(value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def listing_class(value: Any) -> str:
    """How a listing cell wraps: "num" (a number) and "short" (a code or date: at most 12
    characters, no space) stay on one line; "free" text wraps."""
    if isinstance(value, numbers.Number):
        return "num"
    if isinstance(value, str) and len(value) <= 12 and " " not in value:
        return "short"
    return "free"


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATE_DIR)),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["cell"] = cell_text
    env.filters["listing_class"] = listing_class
    return env


# The report's chapters after the summary, in order: (anchor, title, items). An item is a display
# table id, "flow_diagram", "changes" (the tables of deliverables.changes) or "figure:<key>" (an
# SVG of deliverables.figures). Participant-level items (listings, per-participant figures) are
# in the closed session only; the open session says where they are.
CHAPTERS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("sec-changes", "Changes since the previous data cut", ("changes",)),
    ("sec-accrual", "Enrolment and accrual", ("figure:accrual",)),
    ("sec-flow", "Participant flow", ("flow_diagram", "participant_flow")),
    ("sec-baseline", "Baseline characteristics", ("baseline",)),
    ("sec-exposure", "Exposure", ("exposure", "exposure_listing")),
    ("sec-escalation", "Dose-escalation status", ("dose_escalation", "dlt_listing")),
    ("sec-teae", "Treatment-emergent adverse events", ("teae_overview", "teae_soc_pt", "teae_by_grade",
                                                        "ld_ae_overview")),
    ("sec-sae", "Serious adverse events and deaths", ("sae_soc_pt", "sae_listing", "deaths")),
    ("sec-crs", "Cytokine release syndrome and neurotoxicity (ICANS)", ("crs_icans", "crs_icans_listing")),
    ("sec-haem", "Haematological toxicity and recovery", ("haematology",)),
    ("sec-pk", "Cellular kinetics (pharmacokinetics)", ("pk", "figure:transgene")),
    ("sec-response", "Response", ("response", "figure:swimmer")),
    ("sec-quality", "Data quality", ("data_quality", "form_completeness", "protocol_deviations")),
)
# Section numbers: the summary is 1, the chapters follow from 2 in CHAPTERS order.
CHAPTER_NUMBERS: dict[str, int] = {anchor: n for n, (anchor, _, _) in enumerate(CHAPTERS, start=2)}
FIGURE_TITLES = {
    "flow_diagram": "Participant flow (CONSORT-DEFINE style)",
    "accrual": "Enrolment and accrual over time by dose level",
    "transgene": "Transgene copies in blood over time after infusion (log scale), coloured by dose level",
    "swimmer": "Time on study after infusion by participant with response assessments (swimmer plot)",
}
CLOSED_ONLY_FIGURES = ("transgene", "swimmer")
# A listing with more columns than this is printed on landscape pages.
LANDSCAPE_COLUMNS = 9


def _table_item(t: DisplayTable) -> dict[str, Any]:
    """A chapter item for a display table; a listing wider than LANDSCAPE_COLUMNS goes on landscape pages."""
    return {"kind": "table", "t": t, "landscape": t.kind == "listing" and len(t.columns) > LANDSCAPE_COLUMNS}


def report_chapters(
    shown: list[DisplayTable],
    figures: dict[str, str] | None,
    changes: list[DisplayTable] | None,
    session: str,
) -> list[dict[str, Any]]:
    """The chapters as the template renders them, with 'Table n' / 'Listing n' / 'Figure n'
    numbered in reading order. Items not available (no figures given, no previous cut) become
    a sentence saying why; participant-level items of the closed session become a pointer to it."""
    by_id = {t.id: t for t in shown}
    n = {"table": 0, "listing": 0, "figure": 0}
    chapters = []
    for anchor, title, item_ids in CHAPTERS:
        number = CHAPTER_NUMBERS[anchor]
        items: list[dict[str, Any]] = []
        for item in item_ids:
            if item == "changes":
                if changes is None:
                    items.append({"kind": "note", "text": "No previous data cut of this study has been published: "
                                  "this is the first report, so no changes are listed."})
                for t in changes or []:
                    if session == "Open" and t.kind == "listing":
                        items.append({"kind": "note", "text": "The listing of the individual changes names "
                                      "participants: it is in the closed session report and the sponsor workbook."})
                        continue
                    items.append(_table_item(t))
                continue
            if item == "flow_diagram" or item.startswith("figure:"):
                key = item.removeprefix("figure:")
                if session == "Open" and key in CLOSED_ONLY_FIGURES:
                    items.append({"kind": "note", "text": f"The figure of {FIGURE_TITLES[key][0].lower()}"
                                  f"{FIGURE_TITLES[key][1:]} shows individual participants: it is in the closed "
                                  "session report."})
                    continue
                svg = None if key == "flow_diagram" else (figures or {}).get(key)
                if key != "flow_diagram" and svg is None:
                    items.append({"kind": "note", "text": f"Figure not available: {FIGURE_TITLES[key]}."})
                    continue
                items.append({"kind": "flow" if key == "flow_diagram" else "figure", "key": key,
                              "title": FIGURE_TITLES[key],
                              "svg": Markup(svg) if svg is not None else None})
                continue
            t = by_id.get(item)
            if t is None:
                if session == "Open":
                    items.append({"kind": "note", "text": f"The participant-level listing ({item.replace('_', ' ')}) "
                                  "is in the closed session report and the sponsor workbook."})
                continue
            items.append(_table_item(t))
        portrait = [i for i in items if not i.get("landscape")]
        for i in portrait + [i for i in items if i.get("landscape")]:
            kind = "figure" if i["kind"] in ("flow", "figure") else i["t"].kind if i["kind"] == "table" else None
            if kind is not None:
                n[kind] += 1
                i["label"] = f"{kind.title()} {n[kind]}"
        chapters.append({"anchor": anchor, "number": number, "title": title, "items": portrait,
                         "landscape_items": [i for i in items if i.get("landscape")]})
    return chapters


def _changes_ask(changes: CutChanges | None) -> str | None:
    """One sentence on what changed since the previous cut: the non-zero counts of the changes
    summary, through ``summary_lines``, the function the summary table's counts come from (never from
    display cells). None without a previous cut."""
    lines = summary_lines(changes) if changes is not None else []
    if not lines:
        return None
    changed = [f"{line.label[:1].lower()}{line.label[1:]}: {line.n}" for line in lines if line.n > 0]
    if not changed:
        return f"Note that nothing reportable changed since the previous data cut (section {CHAPTER_NUMBERS['sec-changes']})."
    return (f"Review the changes since the previous data cut (section {CHAPTER_NUMBERS['sec-changes']}): "
            + "; ".join(changed) + ".")


# The abbreviations the report uses, defined in its last section (listed in the contents).
ABBREVIATIONS = (
    ("AE", "adverse event"), ("ASTCT", "American Society for Transplantation and Cellular Therapy (CRS and ICANS grading)"),
    ("AUC", "area under the concentration-time curve"), ("CAR-T", "chimeric antigen receptor T cells"),
    ("CRS", "cytokine release syndrome"), ("CTCAE", "NCI Common Terminology Criteria for Adverse Events"),
    ("CV", "coefficient of variation"), ("DL", "dose level"), ("DLT", "dose-limiting toxicity"),
    ("ICANS", "immune effector cell-associated neurotoxicity syndrome"), ("LLOQ", "lower limit of quantification"),
    ("MedDRA", "Medical Dictionary for Regulatory Activities"), ("MTD", "maximum tolerated dose"),
    ("NE", "not evaluable"), ("qPCR", "quantitative polymerase chain reaction"),
    ("RECIST", "Response Evaluation Criteria in Solid Tumours"), ("SAE", "serious adverse event"),
    ("SOC", "MedDRA system organ class"), ("TEAE", "treatment-emergent adverse event"),
    ("Tmax", "time of the maximum level"),
)
# The closed session holds participant-level data by dose level: its readers are the board itself.
CLOSED_CONFIDENTIALITY = "Confidential - closed session: DSMB members only"

# Forms whose quarantined records change who was infused, which AEs and which deaths are analysed.
SAFETY_FORMS = ("inf", "ae", "ds")


def _quarantine_ask(tables: ReportTables) -> str | None:
    """A note when records of the safety forms are held in quarantine (not analysed until the site
    answers the data query): the counts per form, from the form-completeness table."""
    from clinical.crf import form

    held = [f"{form(r['FORM']).title}: {r['QUARANTINED']}" for r in tables.form_completeness
            if r["FORM"] in SAFETY_FORMS and r["QUARANTINED"]]
    if not held:
        return None
    return ("Note that records of the safety forms are held in quarantine and are not analysed in this report until "
            f"the site answers the data query ({'; '.join(held)}; data quality section, data-queries workbook).")


# The summary names at most this many early deaths; the rest are counted (the deaths listing has all).
WINDOW_DEATHS_NAMED = 10


def _window_deaths_ask(tables: ReportTables, window: int, session: str) -> str | None:
    """Deaths from infusion to the end of the DLT window: a safety signal whether or not a DLT was
    recorded (such a participant is not DLT-evaluable and is replaced in the 3+3). The closed session
    names them (the first WINDOW_DEATHS_NAMED, then a count: the summary stays a summary at any
    size); the open session counts them."""
    early = [r for r in tables.deaths if r["DTHDY"] is not None and 0 <= r["DTHDY"] <= window]
    if not early:
        return None
    lead = f"Note the death(s) within the {window}-day DLT window"
    if session != "Closed":
        return f"{lead}: {len(early)} participant(s) (listed in the closed session report)."
    who = "; ".join(
        f"{r['SUBJID']} ({tables.dose_label(r['DOSEA'])}, day {r['DTHDY']}, cause: {r['DTHCAUS'] or 'not recorded'}"
        f"{'' if r['DLTFL'] == 'Y' else '; no DLT recorded' + ('' if r['DLTEVLFL'] == 'Y' else ', not DLT-evaluable')})"
        for r in early[:WINDOW_DEATHS_NAMED]
    )
    more = len(early) - WINDOW_DEATHS_NAMED
    if more > 0:
        who += f"; and {more} more of {len(early)} (deaths listing, section {CHAPTER_NUMBERS['sec-sae']}; sponsor workbook)"
    return f"{lead}: {who}."


def _dsmb_asks(
    tables: ReportTables, figures: dict[str, Any], changes: CutChanges | None = None, session: str = "Closed",
    *, window: int, decision: dict[str, str] | None = None,
) -> list[str]:
    """``decision``: decision_summary(tables) when the caller has it already."""
    s = decision if decision is not None else decision_summary(tables)
    d = tables.escalation_decision
    asks = []
    parts = [f"{figures[k]} {k.lower()}" for k in ("Infused (safety population)",) if k in figures]
    review = "Review the cumulative safety data at the data cut-off"
    if parts:
        review += f" ({figures['Infused (safety population)']} participant(s) infused)"
    where = "listed below" if session == "Closed" else "summarised below (listed in the closed session report)"
    asks.append(review + f", in particular the dose-limiting toxicities, serious adverse events and deaths {where}.")
    for note in (_window_deaths_ask(tables, window, session), _changes_ask(changes), _quarantine_ask(tables)):
        if note:
            asks.append(note)
    if d is None:
        asks.append("The escalation decision was not available for this report: no escalation step can be endorsed.")
    else:
        step = s["next_step"][:1].lower() + s["next_step"][1:]
        mtd = f"; MTD {s['mtd']}" if d["CONTINUE_TRIAL"] else ""
        asks.append(f"Endorse or amend the proposed escalation step (section 1.3): {step}{mtd}.")
        if not d["MATURE"]:
            pend = [
                f"{r['DOSE']}: {r['PENDING']} participant(s), window closes {fmt_date(r['WINDOW_CLOSES'])}"
                if r["WINDOW_CLOSES"] else f"{r['DOSE']}: {r['PENDING']} participant(s)"
                for r in tables.dose_escalation if r["PENDING"]
            ]
            asks.append(
                "Note that the decision is provisional because DLT windows are still open"
                + (f" ({'; '.join(pend)})" if pend else "")
                + ": endorse it conditionally on no further DLT, or defer it until the windows close."
            )
    asks.append("Recommend whether the trial continues unchanged, continues with modifications, or is paused or stopped.")
    return asks


def _study_facts(cfg: StudyConfig) -> list[tuple[str, str]]:
    """Section 1.1: the study and its escalation and grading rules."""
    study, esc, safety = cfg.study, cfg.escalation, cfg.safety
    rule = (f"3+3, {esc.variant} variant; cohorts of {esc.cohort_size}, at most {esc.max_per_dose} per dose level; "
            f"DLT window {esc.dlt_window_days} days after infusion")
    if esc.stop_at_two_dlts:
        rule += "; two DLTs at a dose level settle it at once, its cohort complete or not"
    if esc.wait_for_window_close:
        rule += "; a cohort opens only when every DLT window of the previous cohort has closed"
    return [
        ("Title", study.title),
        ("Design", f"{study.design}; phase {study.phase}; planned enrolment {study.planned_enrolment}"),
        ("Product", study.product),
        ("Dose levels", "; ".join(f"{d.id} {d.label}" for d in cfg.dose_levels)),
        ("Escalation rule", rule),
        ("Safety grading", f"CTCAE v{safety.ctcae_version}; CRS and ICANS: {safety.crs_ics_grading}; "
                           f"MedDRA {safety.meddra_version}"),
    ]


def _flow_box(b: FlowBox) -> dict[str, Any]:
    """A box of the CONSORT-style diagram as it reads (the template joins ``by_dose`` with a middle dot)."""
    return {
        "kind": b.kind,
        "label": b.label + (" (analysis set, subset of the infused)" if b.kind == "set" else ""),
        "n": f"n = {b.total if b.total is not None else ''}",
        "by_dose": [f"{d}: {n}" for d, n in b.by_dose],
        "side_title": b.side_title,
        "side": [f"{reason}: {n}" for reason, n in b.side],
    }


def _checks_note(problems: list[str]) -> str:
    if not problems:
        return ("Cross-table checks passed: participant flow, dose-escalation table, safety denominators and "
                "listings agree.")
    return f"Cross-table checks found {len(problems)} inconsistenc{'y' if len(problems) == 1 else 'ies'}:"


def dsmb_context(
    tables: ReportTables,
    cfg: StudyConfig,
    data_cut: dt.date | str,
    report_number: int = 1,
    session: str = "Closed",
    report_date: dt.date | str | None = None,
    figures: dict[str, str] | None = None,
    changes: CutChanges | None = None,
    closed: list[DisplayTable] | None = None,
) -> dict[str, Any]:
    """Everything the DSMB report shows, for :func:`render_html` and :func:`render_pdf`.

    figures: SVGs by key (deliverables.figures.render_figures); changes: the changes since the
    previous published cut (deliverables.changes.compare_with_previous_dir), None without one;
    closed: the closed session's display tables when already built (``display_tables``; the open
    session's are made from them)."""
    cut = as_date(data_cut)
    rdate = as_date(report_date) if report_date is not None else cut
    sess = session.strip().capitalize()
    if sess not in SESSIONS:
        raise ValueError(f"session must be 'Open' or 'Closed', got {session!r}")
    # Listings beyond the page budget are summarised here; the sponsor workbook lists them in full.
    shown = pdf_tables(tables, session=sess, closed=closed)
    if changes is not None and changes.first_report:
        changes = None
    change_tables = layout_changes(changes, tables.dose_label) if changes is not None else None
    chapters = report_chapters(shown, figures, within_budget(change_tables) if change_tables else None, sess)
    previous_cut = changes.previous_cut.isoformat() if changes is not None else None
    for c in chapters:
        c["lead"] = (f"Compared with the data cut-off of {previous_cut} (the latest earlier published data cut of "
                     "this study)." if c["anchor"] == "sec-changes" and previous_cut else "")
    headline = key_figures(tables)
    decision = decision_summary(tables)
    study = cfg.study
    problems = consistency_problems(tables)
    missing = tables.missing
    return {
        "study": study,
        "title": f"{study.id} DSMB report {report_number} ({sess} session), data cut-off {cut.isoformat()}",
        "description": f"{sess} session report for the Data and Safety Monitoring Board, {study.id} "
                       f"({study.nct_id}), data cut-off {cut.isoformat()}",
        "keywords": [study.id, study.nct_id, study.protocol_id, "DSMB"],
        "cut": cut.isoformat(),
        "report_date": rdate.isoformat(),
        "report_number": report_number,
        "session": sess,
        "created": f"{cut.isoformat()}T00:00:00+00:00",
        "title_facts": [
            ("Study", study.id), ("ClinicalTrials.gov", study.nct_id), ("Protocol", study.protocol_id),
            ("Sponsor", study.sponsor), ("Report number", str(report_number)), ("Data cut-off", cut.isoformat()),
            ("Report date", rdate.isoformat()),
        ],
        "study_facts": _study_facts(cfg),
        "abbreviations": ABBREVIATIONS,
        "confidentiality": CLOSED_CONFIDENTIALITY if sess == "Closed" else study.confidentiality,
        "chapters": chapters,
        "figures": headline,
        "decision": decision,
        "asks": _dsmb_asks(tables, dict(headline), changes, sess, window=cfg.escalation.dlt_window_days,
                           decision=decision),
        "boxes": [_flow_box(b) for b in flow_boxes(tables)],
        "problems": problems,
        "checks_note": _checks_note(problems),
        "missing_note": (f"Not available at this data cut: {', '.join(f'analysis.{t}' for t in missing)}. "
                         "The sections that use them say so.") if missing else "",
    }


def render_html(ctx: dict[str, Any]) -> str:
    """The report as a complete HTML document (report_templates/dsmb.html.j2)."""
    return _environment().get_template(TEMPLATE).render(**ctx, css=Markup(_stylesheet()))


def render_dsmb_html(tables: ReportTables, cfg: StudyConfig, data_cut: dt.date | str, **kwargs: Any) -> str:
    """:func:`dsmb_context` + :func:`render_html`; keyword arguments go to dsmb_context."""
    return render_html(dsmb_context(tables, cfg, data_cut, **kwargs))


def _stylesheet() -> str:
    css = (TEMPLATE_DIR / STYLESHEET).read_text(encoding="utf-8")
    # The stylesheet is inlined in a <style> element: it must not be able to end that element.
    if "</" in css:
        raise ValueError(f"{STYLESHEET} must not contain '</'")
    return css


def _item_data(i: dict[str, Any]) -> dict[str, Any]:
    """A chapter item as plain JSON for the Typst template."""
    if i["kind"] == "table":
        t = i["t"]
        return {
            "kind": "table", "label": i["label"], "id": t.id, "title": t.title, "table_kind": t.kind,
            "columns": list(t.columns),
            "rows": [[cell_text(v) for v in row] for row in t.rows],
            "classes": [[listing_class(v) for v in row] for row in t.rows] if t.kind == "listing" else [],
            "styles": list(t.row_styles),
            "intro": t.intro, "footnote": t.footnote, "empty": t.empty_text,
        }
    if i["kind"] in ("figure", "flow"):
        return {"kind": i["kind"], "key": i["key"], "label": i["label"], "title": i["title"],
                "svg": None if i["svg"] is None else str(i["svg"])}
    return {"kind": "note", "text": i["text"]}


def typst_data(ctx: dict[str, Any]) -> dict[str, Any]:
    """The context as the Typst template reads it (``sys.inputs.data``): plain JSON values only,
    every display cell as the HTML shows it (:func:`cell_text`)."""
    study = ctx["study"]
    cut = as_date(ctx["cut"])
    return {
        "title": ctx["title"], "author": study.sponsor, "description": ctx["description"],
        "keywords": list(ctx["keywords"]), "date": [cut.year, cut.month, cut.day],
        "cut": ctx["cut"], "session": ctx["session"], "report_number": str(ctx["report_number"]),
        "study": {"id": study.id, "nct_id": study.nct_id, "protocol_id": study.protocol_id, "title": study.title},
        "confidentiality": ctx["confidentiality"],
        "title_facts": [list(f) for f in ctx["title_facts"]],
        "study_facts": [list(f) for f in ctx["study_facts"]],
        "key_figures": [[label, cell_text(value)] for label, value in ctx["figures"]],
        "decision": {k: ctx["decision"][k] for k in ("next_step", "mtd", "maturity", "branches", "reason")},
        "asks": list(ctx["asks"]),
        "missing_note": ctx["missing_note"], "checks_note": ctx["checks_note"], "problems": list(ctx["problems"]),
        "boxes": ctx["boxes"],
        "chapters": [
            {"anchor": c["anchor"], "number": c["number"], "title": c["title"], "lead": c["lead"],
             "items": [_item_data(i) for i in c["items"]],
             "landscape_items": [_item_data(i) for i in c["landscape_items"]]}
            for c in ctx["chapters"]
        ],
        "abbreviations": [list(a) for a in ctx["abbreviations"]],
    }


# DejaVu Sans as matplotlib bundles it: the report's font on every machine (the figures assume it).
DEJAVU_SANS = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf")


@functools.cache
def _fonts() -> Any:
    """The fonts the PDF may use: matplotlib's DejaVu Sans and every system font except the
    system's own DejaVu Sans (fallbacks, e.g. for Chinese free text), with Typst's embedded fonts.
    Scanned once per process.

    typst-py lists system fonts before ``font_paths`` and takes the first of equal matches, so a
    system DejaVu Sans (another version) would win; and a folder is scanned whole, so matplotlib's
    font folder (with its LastResort font, which would catch every missing glyph) cannot be given
    as it is. The chosen files are linked into a scratch folder that is scanned once; the fonts
    keep their real paths (Typst loads a font when a page first uses it), so the folder goes at once.
    Where links cannot be made, the files are copied and the folder stays until the process ends."""
    import matplotlib
    import typst

    own = [Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name for name in DEJAVU_SANS]
    system = typst.Fonts(include_system_fonts=True, include_embedded_fonts=False).fonts()
    fallbacks = dict.fromkeys(Path(f.path) for f in system if f.path and f.family != "DejaVu Sans")
    folder = Path(tempfile.mkdtemp(prefix="dsmb-fonts-"))
    copied = False
    try:
        for n, path in enumerate([*own, *fallbacks]):
            link = folder / f"{n:05d}-{path.name}"
            try:
                os.symlink(path, link)
            except OSError:
                shutil.copyfile(path, link)
                copied = True
        fonts = typst.Fonts(include_system_fonts=False, include_embedded_fonts=True, font_paths=[folder])
        fonts.fonts()
    finally:
        if copied:
            atexit.register(shutil.rmtree, folder, True)
        else:
            shutil.rmtree(folder, ignore_errors=True)
    return fonts


def render_pdf(ctx: dict[str, Any]) -> bytes:
    """The report as PDF (report_templates/dsmb.typ, compiled by Typst); the document date is the
    data cut-off. Untagged, as the report always was: Typst's accessibility tags would make the file
    five times larger. Typst releases the GIL while it compiles: a thread can render while Python works."""
    import typst

    data = json.dumps(typst_data(ctx), ensure_ascii=False, sort_keys=True)
    return typst.compile(str(TEMPLATE_DIR / TYPST_TEMPLATE), font_paths=_fonts(), sys_inputs={"data": data},
                         pdf_tags=False)


def write_pdf(ctx: dict[str, Any], out: Path | str) -> Path:
    """:func:`render_pdf` into the file ``out``."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(render_pdf(ctx))
    return out


def write_dsmb_pdf(
    tables: ReportTables,
    cfg: StudyConfig,
    data_cut: dt.date | str,
    out: Path | str,
    **kwargs: Any,
) -> Path:
    """:func:`dsmb_context` + :func:`write_pdf`; keyword arguments go to dsmb_context."""
    return write_pdf(dsmb_context(tables, cfg, data_cut, **kwargs), out)
