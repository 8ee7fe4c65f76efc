"""The DSMB report's clinical sections as display tables: baseline characteristics, exposure,
CRS and ICANS, haematological toxicity and recovery, cellular kinetics (PK) and response.

Same conventions as :mod:`deliverables.tables`: the numbers come from the analysis tables
(``analysis.exposure_summary``, ``crs_icans_summary``, ``lab_summary``, ``pk_summary``,
``response_summary``) or from one set-based query over an analysis table (baseline over
``analysis.adsl``, recovery over ``analysis.lab_toxicity``), read by
:func:`deliverables.tables.load_report_tables`. Nothing is counted here row by row; percentages
that are not stored are computed from a stored n and N with :func:`pct_half_up`.

Every table has one column per dose level and a Total; ``dose_columns`` marks the per-dose
columns so the open-session report can show the Total (pooled) column alone.
"""

from __future__ import annotations

import functools
import math
from typing import Any

from deliverables.registry import (
    AGE_CATEGORIES,
    ETHNIC_CATEGORIES,
    RACE_CATEGORIES,
    SEX_CATEGORIES,
)
from deliverables.tables import (
    BASELINE_CATEGORICAL,
    BASELINE_CONTINUOUS,
    TOTAL,
    Cell,
    DisplayTable,
    ReportTables,
    _group_order,
    _listing_dose,
    _missing_note,
    _yn,
    fmt_date,
    fmt_npct,
    pct_half_up,
    round_half_up,
    round_sig,
    safety_headers,
)

# Display precision of summary statistics: PK values to 3 significant figures (NCA convention),
# other continuous values to one decimal more than they are recorded with.
PK_SIGNIFICANT = 3


def fmt_sig(x: float | None, sig: int = PK_SIGNIFICANT, *, trailing_zeros: bool = True) -> str:
    """3 significant figures (halves up, :func:`deliverables.tables.round_sig`, as the registry)
    with thousands separators: 18415.3 -> '18,400', 0.06094 -> '0.0609', 45.25 -> '45.3';
    'NE' (not estimable) for None or NaN. ``trailing_zeros=False`` is the registry's presentation
    (``registry._num``), used for PK times in days: 7.25 -> '7.25', 10.0 -> '10', 8.50 -> '8.5'."""
    if x is None or math.isnan(x):
        return "NE"
    q = round_sig(x, sig)
    places = max(-(q if trailing_zeros else q.normalize()).as_tuple().exponent, 0)
    return f"{q:,.{places}f}"


def fmt_num(x: float | None, decimals: int = 1) -> str:
    """``decimals`` places, halves up on the number as written (:func:`deliverables.tables.round_half_up`),
    as every other rounding of the reports: 30.5 -> '31' with 0 places, 898.95 -> '899.0'."""
    return "" if x is None else f"{round_half_up(x, decimals):,.{decimals}f}"


def fmt_range(median: float | None, lo: float | None, hi: float | None, decimals: int = 1) -> str:
    """'median (min, max)'; '' without data."""
    if median is None:
        return ""
    return f"{fmt_num(median, decimals)} ({fmt_num(lo, decimals)}, {fmt_num(hi, decimals)})"


class _Lines:
    """The rows of a display table and their styles, appended together."""

    def __init__(self, width: int) -> None:
        self.width = width  # value cells after the label
        self.rows: list[list[Cell]] = []
        self.styles: list[str] = []

    def group(self, label: str, style: str = "group") -> None:
        """A heading row: the label and empty value cells."""
        self.add(label, [None] * self.width, style)

    def add(self, label: Cell, values: list[Cell], style: str = "indent") -> None:
        self.rows.append([label, *values])
        self.styles.append(style)


def _columns(t: ReportTables, heads: list[tuple[str, str]]) -> tuple[list[str], list[int]]:
    """Header texts and the indices of the per-dose columns (everything but Total), after the label."""
    return [h for _, h in heads], [i + 1 for i, (d, _) in enumerate(heads) if d != TOTAL]


def enrolled_headers(t: ReportTables) -> list[tuple[str, str]]:
    """(dose id, 'DL1 5x10^8 cells (N=6)') with N = enrolled by planned dose (analysis.participant_flow)."""
    n = {r["DOSE"]: r["N"] for r in t.participant_flow if r["STAGE"] == "enrolled"}
    out = [(d["DOSE"], f"{t.dose_label(d['DOSE'])} (N={n.get(d['DOSE'], 0)})") for d in t.dose_levels]
    return out + [(TOTAL, f"Total (N={n.get(TOTAL, 0)})")]


# --------------------------------------------------------------------------------------------------
# Baseline characteristics (enrolled participants by planned dose level, as the registry's baseline)

# The variables and their labels: deliverables.tables.BASELINE_CATEGORICAL / BASELINE_CONTINUOUS,
# which the baseline query (tables.baseline_sql) reads too.

# Category labels and order as the registry shows them, so a category reads the same in both.
BASELINE_CATEGORIES: dict[str, tuple[tuple[str, str], ...]] = {
    "AGEGR1": AGE_CATEGORIES,
    "SEX": SEX_CATEGORIES,
    "RACE": RACE_CATEGORIES,
    "ETHNIC": ETHNIC_CATEGORIES,
}


def _category_order(var: str, values: list[str]) -> list[tuple[str, str]]:
    """(value, label) in the registry's order, then other values alphabetically, 'Missing' last. A null
    race or ethnicity is already the registry's UNKNOWN ("Unknown or Not Reported"), see
    :func:`deliverables.tables.baseline_sql`."""
    known = BASELINE_CATEGORIES.get(var, ())
    codes = [c for c, _ in known]
    ordered = [(c, lbl) for c, lbl in known if c in values]
    rest = sorted((v for v in values if v not in codes), key=lambda v: (v == "Missing", v.lower()))
    return ordered + [(v, v.title() if v.isupper() and var == "GPC3" else v) for v in rest]


def layout_baseline(t: ReportTables) -> DisplayTable:
    heads = enrolled_headers(t)
    cols, dose_cols = _columns(t, heads)
    lines = _Lines(len(heads))
    cont = {(r["VAR"], r["DOSE"]): r for r in t.baseline if r["KIND"] == "CONT"}
    cats: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
    for r in t.baseline:
        if r["KIND"] == "CAT":
            cats.setdefault(r["VAR"], {}).setdefault(r["CAT"], {})[r["DOSE"]] = r
    for var, label, decimals in BASELINE_CONTINUOUS:
        if not any(k[0] == var for k in cont):
            continue
        lines.group(label)
        stats = (
            ("n", lambda c: c["N"]),
            ("Mean (SD)", lambda c, dec=decimals: "" if c["MEAN"] is None else
             f"{fmt_num(c['MEAN'], dec)} ({fmt_num(c['SD'], dec + 1) if c['SD'] is not None else 'NE'})"),
            ("Median", lambda c, dec=decimals: fmt_num(c["MEDIAN"], dec)),
            ("Min, max", lambda c: "" if c["MIN"] is None else f"{fmt_num(c['MIN'], 0)}, {fmt_num(c['MAX'], 0)}"),
        )
        for name, fn in stats:
            lines.add(name, [fn(cont[(var, d)]) if (var, d) in cont else None for d, _ in heads])
    for var, label in BASELINE_CATEGORICAL:
        if var not in cats:
            continue
        lines.group(label)
        for cat, cat_label in _category_order(var, list(cats[var])):
            cells = cats[var][cat]
            lines.add(cat_label, [fmt_npct(cells[d]["N"], cells[d]["PCT"]) if d in cells else fmt_npct(0, None) for d, _ in heads])
    return DisplayTable(
        id="baseline",
        title="Baseline characteristics by planned dose level (enrolled participants)",
        columns=["Characteristic"] + cols,
        rows=lines.rows,
        row_styles=lines.styles,
        dose_columns=dose_cols,
        sheet="Baseline",
        footnote=(
            "Enrolled participants (ADSL ENRLFL = 'Y') by planned dose level (DOSEP), as in the registry's "
            "baseline characteristics; N = enrolled. n (%) of the column N. Age at consent; age groups as "
            "ClinicalTrials.gov categories. Race or ethnicity not recorded: Unknown or Not Reported, as in the "
            "registry; any other characteristic not recorded: Missing. SD: sample standard deviation; NE: not "
            "estimable (n < 2). "
            "Source: analysis.adsl." + (" " + _missing_note(t, "adsl")).rstrip()
        ),
    )


# --------------------------------------------------------------------------------------------------
# TEAEs by highest grade (AET04-like)


def layout_teae_by_grade(t: ReportTables) -> DisplayTable:
    """Each preferred term, then indented one row per highest grade with participants in Total
    (each participant counted once per term, at the highest grade). From analysis.ae_by_grade."""
    heads = safety_headers(t)
    cols, dose_cols = _columns(t, heads)
    cells: dict[tuple[str, str | None], dict[int, dict[str, dict[str, Any]]]] = {}
    for r in t.ae_by_grade:
        cells.setdefault((r["AEBODSYS"], r["AEDECOD"]), {}).setdefault(r["GRADE"], {})[r["DOSE"]] = r
    lines = _Lines(len(heads))

    def term_total(key: tuple[str, str | None]) -> int:
        return sum(g.get(TOTAL, {}).get("N", 0) for g in cells[key].values())

    def emit(key: tuple[str, str | None], label: str, style: str) -> None:
        lines.group(label, style)
        for grade in sorted(cells[key]):
            by = cells[key][grade]
            if not by.get(TOTAL, {}).get("N"):
                continue  # a grade nobody had (chevron prune_0)
            lines.add(f"Grade {grade}", [
                fmt_npct(by[d]["N"], pct_half_up(by[d]["N"], by[d]["N_AT_RISK"])) if d in by else fmt_npct(0, None) for d, _ in heads])

    overall = [k for k in cells if k[1] is None]
    for key in overall:
        emit(key, f"{key[0]}, by highest grade", "group")
    socs = sorted({k[0] for k in cells if k[1] is not None}, key=str.lower)
    for soc in socs:
        lines.group(soc)
        terms = sorted((k for k in cells if k[0] == soc and k[1] is not None),
                       key=lambda k: (-term_total(k), str(k[1]).lower()))
        for key in terms:
            emit(key, str(key[1]), "")
    return DisplayTable(
        id="teae_by_grade",
        title="Treatment-emergent adverse events by preferred term and highest grade",
        columns=["System organ class / Preferred term / Highest grade"] + cols,
        rows=lines.rows,
        row_styles=lines.styles,
        dose_columns=dose_cols,
        sheet="TEAE by highest grade",
        footnote=(
            "Each participant is counted once per preferred term, at the highest CTCAE grade (ASTCT for CRS "
            "and ICANS) of the term's treatment-emergent events; grades no participant had are not shown. "
            "n (%) of the column N. Source: analysis.ae_by_grade." + (" " + _missing_note(t, "ae_by_grade")).rstrip()
        ),
    )


# --------------------------------------------------------------------------------------------------
# Exposure: lymphodepletion and cells infused, against the dose level

EXPOSURE_DECIMALS = {"V2VDAYS": 0}


def layout_exposure(t: ReportTables) -> DisplayTable:
    heads = safety_headers(t)
    cols, dose_cols = _columns(t, heads)
    by: dict[str, dict[str, dict[str, Any]]] = {}
    order: list[tuple[str, str]] = []
    for r in t.exposure_summary:
        if r["PARAMCD"] not in by:
            order.append((r["PARAMCD"], r["PARAM"]))
        by.setdefault(r["PARAMCD"], {})[r["DOSE"]] = r
    lines = _Lines(len(heads))
    for code, param in order:
        dec = EXPOSURE_DECIMALS.get(code, 1)
        lines.group(param)
        lines.add("n", [by[code][d]["N"] if d in by[code] else 0 for d, _ in heads])
        cell = by[code]
        lines.add("Median", [fmt_num(cell[d]["MEDIAN"], dec) if d in cell else "" for d, _ in heads])
        lines.add("Min, max", [
            f"{fmt_num(cell[d]['MIN'], dec)}, {fmt_num(cell[d]['MAX'], dec)}" if d in cell and cell[d]["MIN"] is not None
            else "" for d, _ in heads])
    plan = "; ".join(t.dose_label(d["DOSE"]) for d in t.dose_levels)
    return DisplayTable(
        id="exposure",
        title="Exposure: lymphodepletion and CAR-T cells infused by dose level",
        columns=["Parameter"] + cols,
        rows=lines.rows,
        row_styles=lines.styles,
        dose_columns=dose_cols,
        sheet="Exposure",
        footnote=(
            "Infused participants (safety population) by dose level received. Cumulative lymphodepletion "
            "doses over days -5 to -3 (mg/m2); cells infused as counted at release; % of dose level = cells "
            f"infused / the dose level's planned cells x 100 (dose levels: {plan}). "
            "Source: analysis.exposure_summary (per participant: analysis.exposure)."
            + (" " + _missing_note(t, "exposure_summary")).rstrip()
        ),
    )


def layout_exposure_listing(t: ReportTables) -> DisplayTable:
    cols = ["Dose level", "Participant", "Lymphodepletion start", "Fludarabine days", "Fludarabine mg/m2",
            "Cyclophosphamide days", "Cyclophosphamide mg/m2", "Infusion date", "Cells infused (x10^6)",
            "% of dose level", "Leukapheresis to infusion (days)"]
    rows: list[list[Cell]] = [
        [_listing_dose(r), r["SUBJID"], fmt_date(r["LDSTDT"]), r["FLUDAYS"],
         fmt_num(r["FLUCUM"]), r["CYDAYS"], fmt_num(r["CYCUM"]), fmt_date(r["TRTSDT"]),
         fmt_num(None if r["CELLS"] is None else r["CELLS"] / 1e6), fmt_num(r["CELLSPCT"]), r["V2VDAYS"]]
        for r in t.exposure
    ]
    return DisplayTable(
        id="exposure_listing",
        title="Listing of exposure by participant",
        columns=cols,
        rows=rows,
        kind="listing",
        sheet="Exposure listing",
        empty_text="No participant has started lymphodepletion at this data cut.",
        footnote="Participants who started lymphodepletion or were infused. Source: analysis.exposure."
        + (" " + _missing_note(t, "exposure")).rstrip(),
    )


# --------------------------------------------------------------------------------------------------
# CRS and ICANS (ASTCT)

CRS_ICANS_TITLES = {"CRS": "Cytokine release syndrome", "ICANS": "Immune effector cell-associated neurotoxicity"}


def layout_crs_icans(t: ReportTables) -> DisplayTable:
    heads = safety_headers(t)
    cols, dose_cols = _columns(t, heads)
    by: dict[str, dict[str, dict[str, Any]]] = {}
    for r in t.crs_icans_summary:
        by.setdefault(r["AECAT"], {})[r["DOSE"]] = r
    lines = _Lines(len(heads))

    def line(label: str, fn) -> None:
        lines.add(label, [fn(c[d]) if d in c else None for d, _ in heads])

    for cat in sorted(by, key=lambda k: min(r["AECATN"] for r in by[k].values())):
        c = by[cat]
        lines.group(f"{CRS_ICANS_TITLES.get(cat, cat)} ({cat})")
        line("Any grade", lambda r: fmt_npct(r["N_ANY"], r["PCT_ANY"]))
        for g in range(1, 6):
            line(f"Maximum grade {g}", lambda r, g=g: fmt_npct(r[f"N_GR{g}"], pct_half_up(r[f"N_GR{g}"], r["DENOM"])))
        line("Grade >= 3", lambda r: fmt_npct(
            r["N_GR3"] + r["N_GR4"] + r["N_GR5"], pct_half_up(r["N_GR3"] + r["N_GR4"] + r["N_GR5"], r["DENOM"])))
        line("Onset, day after infusion: median (min, max)",
             lambda r: fmt_range(r["ONSET_MEDIAN"], r["ONSET_MIN"], r["ONSET_MAX"], 0) if r["N_ANY"] else "")
        line("Duration, days: median (min, max)",
             lambda r: fmt_range(r["DUR_MEDIAN"], r["DUR_MIN"], r["DUR_MAX"], 0) if r["DUR_N"] else "")
        line("Events with a duration (resolved), n", lambda r: r["DUR_N"])
        line("Treated with tocilizumab", lambda r: fmt_npct(r["N_TOCI"], pct_half_up(r["N_TOCI"], r["DENOM"])))
        line("Treated with corticosteroids",
             lambda r: fmt_npct(r["N_STEROID"], pct_half_up(r["N_STEROID"], r["DENOM"])))
        line("CRF grade differs from the ASTCT re-derivation", lambda r: r["N_DISCORD"])
    return DisplayTable(
        id="crs_icans",
        title="Cytokine release syndrome and ICANS by dose level (ASTCT consensus grading)",
        columns=["Participants"] + cols,
        rows=lines.rows,
        row_styles=lines.styles,
        dose_columns=dose_cols,
        sheet="CRS and ICANS",
        footnote=(
            "Treatment-emergent CRS and ICANS; n (%) of infused participants of the column. Grades are the "
            "investigator's ASTCT grade, each participant counted once at the maximum grade. Onset: day of "
            "the participant's first event (day 0 = infusion). Duration: end - onset + 1 of every resolved "
            "event with complete dates. Management: tocilizumab or corticosteroid given for the event. "
            "Source: analysis.crs_icans_summary (events: analysis.crs_icans)."
            + (" " + _missing_note(t, "crs_icans_summary")).rstrip()
        ),
    )


def layout_crs_icans_listing(t: ReportTables) -> DisplayTable:
    cols = ["Dose level", "Participant", "AE no.", "Category", "Onset date", "Day", "Duration (days)",
            "Grade (CRF)", "Grade (ASTCT re-derived)", "Tocilizumab", "Corticosteroid", "Serious", "Outcome"]
    rows: list[list[Cell]] = [
        [r["DOSEA"], r["SUBJID"], r["AESPID"], r["AECAT"], fmt_date(r["ASTDT"]), r["ADY"],
         r["DURATION"] if r["DURATION"] is not None else ("ongoing" if r["AENDT"] is None else ""),
         r["ATOXGR"], r["ASTCTGR"], _yn(r["TOCIFL"]), _yn(r["STERFL"]), _yn(r["AESER"]),
         r["AEOUT"]]
        for r in t.crs_icans
    ]
    return DisplayTable(
        id="crs_icans_listing",
        title="Listing of CRS and ICANS events",
        columns=cols,
        rows=rows,
        kind="listing",
        sheet="CRS-ICANS listing",
        empty_text="No CRS or ICANS event has been reported at this data cut.",
        footnote="Every CRS and ICANS event of the safety population. Duration empty: imputed partial date. "
        "Source: analysis.crs_icans." + (" " + _missing_note(t, "crs_icans")).rstrip(),
    )


# --------------------------------------------------------------------------------------------------
# Haematological toxicity and recovery


def layout_haematology(t: ReportTables) -> DisplayTable:
    """Worst post-infusion CTCAE grade of each decreased (cytopenia) test, and recovery."""
    heads = safety_headers(t)
    cols, dose_cols = _columns(t, heads)
    cells: dict[tuple[str, int], dict[str, dict[str, Any]]] = {}
    params: list[tuple[int, str, str]] = []
    for r in t.lab_summary:
        if r["ATOXDIR"] != "L":
            continue
        if (r["PARAMN"], r["PARAMCD"], r["ATOXTERM"]) not in params:
            params.append((r["PARAMN"], r["PARAMCD"], r["ATOXTERM"]))
        cells.setdefault((r["PARAMCD"], r["WORSTGR"]), {})[r["DOSE"]] = r
    lines = _Lines(len(heads))
    for _, code, term in sorted(params):
        lines.group(f"{term} ({code})")
        denom = cells.get((code, 0), {})
        lines.add("Participants with a graded value, N", [denom[d]["DENOM"] if d in denom else 0 for d, _ in heads])
        for g in (3, 4):
            c = cells.get((code, g), {})
            lines.add(f"Worst grade {g}", [fmt_npct(c[d]["N"], c[d]["PCT"]) if d in c else fmt_npct(0, None) for d, _ in heads])
        g34 = {d: (cells.get((code, 3), {}).get(d, {}).get("N", 0) + cells.get((code, 4), {}).get(d, {}).get("N", 0))
               for d, _ in heads}
        lines.add("Worst grade 3 or 4", [fmt_npct(g34[d], pct_half_up(g34[d], denom.get(d, {}).get("DENOM")))
                                              for d, _ in heads])
    rec = {(r["ROW"], r["DOSE"]): r for r in t.haem_recovery}
    if t.haem_recovery:
        lines.group("Recovery")
        lines.add("ANC nadir < 0.5 x10^9/L", [rec.get(("ANC_LT05", d), {}).get("N", 0) for d, _ in heads])
        lines.add("  recovered to ANC >= 0.5 x10^9/L", [rec.get(("ANC_REC", d), {}).get("N", 0) for d, _ in heads])
        lines.add("  day of recovery: median (min, max)", [
            fmt_range(r["MEDIAN"], r["MIN"], r["MAX"], 0) if (r := rec.get(("ANC_REC", d))) and r["N"] else ""
            for d, _ in heads])
        for code in sorted({k[0] for k in rec if k[0].startswith("D28_")}):
            term = next((p[2] for p in params if "D28_" + p[1] == code), code[4:])
            lines.add(f"Grade >= 3 {term.lower()} at day 28 (n / assessed)", [
                f"{r['N']}/{r['DENOM']}" if (r := rec.get((code, d))) and r["DENOM"] else "" for d, _ in heads])
    return DisplayTable(
        id="haematology",
        title="Haematological toxicity after infusion and recovery by dose level",
        columns=["Test / measure"] + cols,
        rows=lines.rows,
        row_styles=lines.styles,
        dose_columns=dose_cols,
        sheet="Haematology",
        footnote=(
            "Worst post-infusion CTCAE grade (day 0 onwards) of each decreased-direction laboratory test, "
            "each participant counted once; % of N = infused participants with a graded post-infusion value "
            "of the test. Recovery: first visit after the nadir from which ANC stays >= 0.5 x10^9/L (day 0 = "
            "infusion). Day 28: the graded sample nearest to day 28 within days 21-35. Sources: "
            "analysis.lab_summary, analysis.lab_toxicity."
            + (" " + _missing_note(t, "lab_summary", "lab_toxicity")).rstrip()
        ),
    )


# --------------------------------------------------------------------------------------------------
# Cellular kinetics (PK)

# Parameters in days: to significant figures like every PK value, without trailing zeros, as the registry
# reports Tmax (7.25 -> '7.25', 10.0 -> '10').
PK_DAYS = ("TMAX", "TLAST", "THALF")


def layout_pk(t: ReportTables) -> DisplayTable:
    heads = _group_order(t)
    cols, dose_cols = _columns(t, heads)
    by: dict[str, dict[str, dict[str, Any]]] = {}
    order: list[tuple[int, str, str]] = []
    for r in t.pk_summary:
        if r["PARAMCD"] not in by:
            order.append((r["PARAMN"], r["PARAMCD"], r["PARAM"]))
        by.setdefault(r["PARAMCD"], {})[r["DOSE"]] = r
    lines = _Lines(len(heads))
    for _, code, param in sorted(order):
        c = by[code]
        days = code in PK_DAYS
        lines.group(param)
        lines.add("n", [c[d]["N"] if d in c else 0 for d, _ in heads])
        fmt = functools.partial(fmt_sig, trailing_zeros=not days)
        if any(r["GEOMEAN"] is not None for r in c.values()):
            lines.add("Geometric mean", [
                "" if d not in c or c[d]["GEOMEAN"] is None else fmt_sig(c[d]["GEOMEAN"]) for d, _ in heads])
            lines.add("Geometric CV%", [
                "" if d not in c or c[d]["GEOMEAN"] is None else
                fmt_sig(c[d]["GEOCV"]) for d, _ in heads])
        lines.add("Median", ["" if d not in c or c[d]["MEDIAN"] is None else fmt(c[d]["MEDIAN"]) for d, _ in heads])
        lines.add("Min, max", [
            "" if d not in c or c[d]["MIN"] is None else f"{fmt(c[d]['MIN'])}, {fmt(c[d]['MAX'])}" for d, _ in heads])
    short = _short_profiles(by)
    return DisplayTable(
        id="pk",
        title="CAR-T cellular kinetics (transgene copies in blood) by dose level",
        columns=["Parameter"] + cols,
        rows=lines.rows,
        row_styles=lines.styles,
        dose_columns=dose_cols,
        sheet="Pharmacokinetics",
        footnote=(
            (f"{short} " if short else "")
            + "PK-evaluable participants (ADSL PKEVLFL = 'Y'); n = participants with the parameter estimated. "
            "Non-compartmental analysis of transgene copies/ug gDNA by qPCR (day 0 = infusion); AUC0-28d by "
            "the configured trapezoidal method. Geometric CV% = sqrt(exp(s^2) - 1) x 100 of the log values. "
            "Values, geometric CV% included, to 3 significant figures with halves rounded up, as in the registry "
            "draft; times in days likewise, without trailing zeros. NE: not estimable. Source: analysis.pk_summary "
            "(per participant: analysis.adpp)." + (" " + _missing_note(t, "pk_summary")).rstrip()
        ),
    )


def _short_profiles(by: dict[str, dict[str, dict[str, Any]]]) -> str:
    """The profiles with a Cmax but no AUC0-28d (the Total column's counts of the two): they end
    before day 28 -- death, withdrawal, or an infusion fewer than 28 days before the data cut-off --
    so their Cmax and Tmax are of the samples so far. Empty when every profile reaches day 28."""
    short = (by.get("CMAX", {}).get(TOTAL, {}).get("N") or 0) - (by.get("AUC28", {}).get(TOTAL, {}).get("N") or 0)
    if short <= 0:
        return ""
    # The total only: the open session shows this table pooled (the n rows give it by dose level).
    return (f"{short} profile(s) end before day 28 (death, withdrawal or an infusion fewer than "
            "28 days before the data cut-off): their AUC0-28d is not derived, and their Cmax and Tmax are of "
            "the samples taken so far.")


# --------------------------------------------------------------------------------------------------
# Response (RECIST 1.1 best overall response)

def layout_response(t: ReportTables) -> DisplayTable:
    heads = safety_headers(t)
    cols, dose_cols = _columns(t, heads)
    by: dict[tuple[int, str, str], dict[str, dict[str, Any]]] = {}
    for r in t.response_summary:
        by.setdefault((r["ROWN"], r["ROWCD"], r["ROWLBL"]), {})[r["DOSE"]] = r
    lines = _Lines(len(heads))
    if by:
        lines.group("Best overall response")
    for key in sorted(by):
        cells = by[key]
        # The rate (CR + PR) is a summary line under the categories, not one of them.
        lines.add(key[2], [fmt_npct(cells[d]["N"], cells[d]["PCT"]) if d in cells else fmt_npct(0, None) for d, _ in heads],
                  "" if key[1] == "ORR" else "indent")
    return DisplayTable(
        id="response",
        title="Best overall response (RECIST 1.1) by dose level",
        columns=["Participants"] + cols,
        rows=lines.rows,
        row_styles=lines.styles,
        dose_columns=dose_cols,
        sheet="Response",
        empty_text="Response data are not available at this data cut.",
        footnote=(
            "Infused participants; n (%) of the column N. Best overall response after infusion per RECIST 1.1 "
            "(unconfirmed responses; stable disease needs the minimum duration of analysis.response). "
            "Source: analysis.response_summary (per participant: analysis.response)."
            + (" " + _missing_note(t, "response_summary")).rstrip()
        ),
    )
