"""DSMB report figures as hand-written inline SVG: accrual, transgene kinetics, swimmer plot.

    data = load_figure_data(con)            # the analysis tables, read once, in a fixed order
    svgs = render_figures(data)             # {"accrual": svg, "transgene": svg, "swimmer": svg}

Each ``*_svg`` function is pure: plain lists of row dicts (as read from the analysis tables) and the
dose levels (``[{DOSE, DOSEN, DOSELBL, CELLS}]``) in, an ``<svg>`` element (no XML declaration, so it
can be placed in HTML as it is; it also parses as XML) out. No plotting library: the HTML report shows the
SVG as it is and Typst draws it in the PDF.

Conventions:
  * Size: 482 pt wide (170 mm, the A4 portrait text width of the DSMB report), height by content;
    the viewBox is in points, fonts 7.5-9 pt sans-serif (DejaVu Sans, as the report's stylesheet).
  * Colours: one colour per dose level, in dose order, from the Okabe-Ito colour-blind-safe palette
    (``PALETTE``), the same in every figure; grey for a dose level that is not configured.
  * Determinism: rows are sorted here (whatever order they come in), every coordinate is written with
    at most two decimals (``_num``), nothing reads the clock: the same input gives the same bytes.
  * Every text from the data (participant ids, dose labels) is escaped; long ids are shortened.
  * Transgene figure: BLQ samples are drawn at LLOQ/2 with an open marker (white fill), the line of the
    participant passes through them, and the LLOQ is a dashed line; samples without a result are left out.
    The y axis is log10 with a tick at every decade (10^k) that holds the data and the LLOQ. When
    follow-up is longer than 56 days, the x axis changes scale at day 28: days 0-28 (expansion, the DLT
    and AUC0-28 window) take half the width, weekly ticks; the axis title says so.
  * Swimmer plot: bar from infusion (day 0) to last contact (``analysis.response`` LSTCNDY: the latest
    of ADSL last contact, last response assessment and death); response assessments marked by shape,
    death by a cross, an arrow when the participant is still on study at the data cut, the best overall
    response written at the right.
  * No data: each figure is a short SVG saying "No data at this data cut".
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Any

import duckdb

from deliverables.tables import QUERIES, dose_level_label

Row = dict[str, Any]

WIDTH = 482.0  # pt = 170 mm
FONT = "DejaVu Sans, Noto Sans CJK SC, Noto Sans SC, sans-serif"
TICK_PT = 7.5
LABEL_PT = 8.0
TITLE_PT = 8.5
# Okabe & Ito (2008) colour-blind-safe palette, without yellow (too light on white).
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#000000")
OTHER_COLOUR = "#888888"
AXIS_COLOUR = "#333333"
GRID_COLOUR = "#E3E3E3"
EMPTY_TEXT = "No data at this data cut"
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
MAX_ID_CHARS = 12
MAX_SWIMMER_ROWS = 40  # participants in one swimmer plot: it then fits one A4 portrait page with its caption
RESPONSES = ("CR", "PR", "SD", "PD", "NE")
RESPONSE_LABELS = {
    "CR": "Complete response",
    "PR": "Partial response",
    "SD": "Stable disease",
    "PD": "Progressive disease",
    "NE": "Not evaluable",
}


# --------------------------------------------------------------------------------------------------
# Small helpers


def _num(x: float) -> str:
    """A coordinate: at most two decimals, no trailing zeros, never '-0'."""
    s = f"{x:.2f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def _t(value: Any) -> str:
    """Text from the data, escaped for XML text and attributes."""
    return escape("" if value is None else str(value), quote=True)


def _short(value: Any, n: int = MAX_ID_CHARS) -> str:
    s = "" if value is None else str(value)
    return s if len(s) <= n else s[: n - 1] + "\u2026"


def _text_width(s: str, size: float) -> float:
    """Rough advance width of DejaVu Sans text (no font metrics here): 0.6 em per character."""
    return 0.6 * size * len(s)


def _date(v: Any) -> dt.date | None:
    if v is None:
        return None
    if isinstance(v, dt.datetime):
        return v.date()
    if isinstance(v, dt.date):
        return v
    try:
        return dt.date.fromisoformat(str(v)[:10])
    except ValueError:
        return None


def _float(v: Any) -> float | None:
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def dose_colours(dose_levels: Sequence[Row]) -> dict[str, str]:
    """Dose id -> colour, by position in dose order (DOSEN): the same in every figure."""
    ordered = sorted(dose_levels, key=lambda d: (d.get("DOSEN") is None, d.get("DOSEN"), str(d.get("DOSE"))))
    return {str(d["DOSE"]): PALETTE[i % len(PALETTE)] for i, d in enumerate(ordered)}


def _dose_order(dose_levels: Sequence[Row]) -> dict[str, int]:
    ordered = sorted(dose_levels, key=lambda d: (d.get("DOSEN") is None, d.get("DOSEN"), str(d.get("DOSE"))))
    return {str(d["DOSE"]): i for i, d in enumerate(ordered)}


def _open(height: float, label: str) -> list[str]:
    h = _num(height)
    return [
        (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{_num(WIDTH)}pt" height="{h}pt" '
            f'viewBox="0 0 {_num(WIDTH)} {h}" font-family="{_t(FONT)}" font-size="{_num(LABEL_PT)}" '
            f'role="img" aria-label="{_t(label)}">'
        )
    ]


def empty_svg(label: str, message: str = EMPTY_TEXT) -> str:
    """A small figure that says there is nothing to plot."""
    h = 60.0
    parts = _open(h, label)
    parts.append(
        f'<rect x="0.5" y="0.5" width="{_num(WIDTH - 1)}" height="{_num(h - 1)}" fill="#FFFFFF" '
        f'stroke="{GRID_COLOUR}" stroke-width="1"/>'
    )
    parts.append(
        f'<text x="{_num(WIDTH / 2)}" y="{_num(h / 2 + 3)}" text-anchor="middle" font-size="{_num(TITLE_PT)}" '
        f'fill="#555555" font-style="italic">{_t(message)}</text>'
    )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _nice_step(span: float, max_ticks: int, steps: Sequence[float]) -> float:
    for s in steps:
        if span / s <= max_ticks:
            return s
    mag = 10 ** math.ceil(math.log10(span / max_ticks))
    return float(mag)


DAY_STEPS = (1, 2, 5, 7, 14, 30, 60, 90, 180, 365, 730, 1095)
COUNT_STEPS = (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000)


def _day_axis(lo: float, hi: float) -> tuple[float, float, list[float]]:
    """Axis range and ticks for days from infusion."""
    lo = min(lo, 0.0)
    hi = max(hi, lo + 1.0)
    step = _nice_step(hi - lo, 8, DAY_STEPS)
    a = math.floor(lo / step) * step
    b = math.ceil(hi / step) * step
    ticks = [a + i * step for i in range(round((b - a) / step) + 1)]
    return a, b, ticks


def _day_ticks(xticks: Sequence[float], x: Any, top: float, bottom: float) -> list[str]:
    """Grid line, tick and label of each day on the x axis (transgene and swimmer figures)."""
    out = []
    for t in xticks:
        xt = x(t)
        out.append(f'<line x1="{_num(xt)}" y1="{_num(top)}" x2="{_num(xt)}" y2="{_num(bottom)}" stroke="{GRID_COLOUR}" stroke-width="0.5"/>')
        out.append(f'<line x1="{_num(xt)}" y1="{_num(bottom)}" x2="{_num(xt)}" y2="{_num(bottom + 3)}" stroke="{AXIS_COLOUR}" stroke-width="0.6"/>')
        out.append(f'<text x="{_num(xt)}" y="{_num(bottom + 12)}" text-anchor="middle" font-size="{_num(TICK_PT)}">{_num(t)}</text>')
    return out


def _legend(items: list[tuple[str, str]], x0: float, y0: float, width: float, size: float = LABEL_PT) -> tuple[list[str], float]:
    """Legend items (symbol svg drawn at (0, 0) centred, label) laid out in rows; returns (parts, height)."""
    parts: list[str] = []
    x, y = x0, y0
    row_h = size + 5
    for symbol, label in items:
        w = 18 + _text_width(label, size) + 12
        if x > x0 and x + w > x0 + width:
            x = x0
            y += row_h
        parts.append(f'<g transform="translate({_num(x + 7)} {_num(y)})">{symbol}</g>')
        parts.append(f'<text x="{_num(x + 17)}" y="{_num(y + size * 0.35)}">{_t(label)}</text>')
        x += w
    return parts, (y - y0) + row_h


def _line_symbol(colour: str, dash: str = "", marker: str = "") -> str:
    d = f' stroke-dasharray="{dash}"' if dash else ""
    return f'<line x1="-7" y1="0" x2="7" y2="0" stroke="{colour}" stroke-width="1.6"{d}/>' + marker


def _box_symbol(colour: str) -> str:
    return f'<rect x="-6" y="-4" width="12" height="8" fill="{colour}" stroke="{colour}" stroke-width="0.5"/>'


# --------------------------------------------------------------------------------------------------
# Accrual


def _month_start(d: dt.date) -> dt.date:
    return dt.date(d.year, d.month, 1)


def _add_months(d: dt.date, n: int) -> dt.date:
    m = d.month - 1 + n
    return dt.date(d.year + m // 12, m % 12 + 1, 1)


def _cumulative(dates: Iterable[dt.date]) -> list[tuple[dt.date, int]]:
    """(date, cumulative count on that date) at every date with an event, in date order."""
    counts: dict[dt.date, int] = {}
    for d in dates:
        counts[d] = counts.get(d, 0) + 1
    out, n = [], 0
    for d in sorted(counts):
        n += counts[d]
        out.append((d, n))
    return out


def accrual_svg(rows: Sequence[Row], dose_levels: Sequence[Row], *, data_cut: dt.date | str | None = None) -> str:
    """Cumulative screened (informed consent), enrolled (stacked by assigned dose level) and infused
    participants over calendar time. rows: analysis.adsl (RFICDT, ENRLDT, TRTSDT, DOSEP)."""
    label = "Enrolment and accrual over time"
    screened = sorted(d for d in (_date(r.get("RFICDT")) for r in rows) if d is not None)
    enrolled = [(d, str(r.get("DOSEP") or "")) for r in rows if (d := _date(r.get("ENRLDT"))) is not None]
    infused = sorted(d for d in (_date(r.get("TRTSDT")) for r in rows) if d is not None)
    if not screened and not enrolled and not infused:
        return empty_svg(label)
    cut = _date(data_cut)
    all_dates = screened + [d for d, _ in enrolled] + infused + ([cut] if cut else [])
    start = _month_start(min(all_dates))
    last = max(all_dates)
    end = _add_months(_month_start(last), 1)
    x_end_data = cut if cut else last  # the step lines run to the data cut (or the last event)
    n_total = max(len(screened), len(enrolled), len(infused), 1)

    colours = dose_colours(dose_levels)
    order = _dose_order(dose_levels)
    doses = sorted({d for _, d in enrolled}, key=lambda d: (d not in order, order.get(d, 0), d))

    # Legend first: its height sets the figure's height.
    items = [(_line_symbol("#555555"), f"Screened (informed consent), n={len(screened)}")]
    for dose in doses:
        n = sum(1 for _, d in enrolled if d == dose)
        name = dose_level_label(dose_levels, dose) if dose else "no dose level"
        items.append((_box_symbol(colours.get(dose, OTHER_COLOUR)), f"Enrolled, {name}: n={n}"))
    items.append((_line_symbol("#000000", "4 2"), f"Infused, n={len(infused)}"))

    left, right, top = 40.0, WIDTH - 28.0, 10.0
    plot_h = 190.0
    bottom = top + plot_h
    legend_parts, legend_h = _legend(items, left - 10, bottom + 44, right - left + 10)
    height = bottom + 44 + legend_h + 2

    span = (end - start).days

    def x(d: dt.date) -> float:
        return left + (right - left) * (d - start).days / span

    ystep = _nice_step(n_total, 6, COUNT_STEPS)
    ymax = math.ceil(n_total / ystep) * ystep

    def y(n: float) -> float:
        return bottom - plot_h * n / ymax

    parts = _open(height, label)
    # grid and y axis
    k = 0
    while k * ystep <= ymax + 1e-9:
        v = k * ystep
        parts.append(f'<line x1="{_num(left)}" y1="{_num(y(v))}" x2="{_num(right)}" y2="{_num(y(v))}" stroke="{GRID_COLOUR}" stroke-width="0.5"/>')
        parts.append(f'<text x="{_num(left - 4)}" y="{_num(y(v) + 2.7)}" text-anchor="end" font-size="{_num(TICK_PT)}">{_num(v)}</text>')
        k += 1
    parts.append(
        f'<text transform="translate({_num(11)} {_num(top + plot_h / 2)}) rotate(-90)" text-anchor="middle" '
        f'font-size="{_num(TITLE_PT)}">Participants (cumulative)</text>'
    )
    # month ticks
    months = (end.year - start.year) * 12 + end.month - start.month
    mstep = next(s for s in (1, 2, 3, 6, 12, 24) if months / s <= 13)
    for i in range(months + 1):
        m = _add_months(start, i)
        xm = x(m)
        parts.append(f'<line x1="{_num(xm)}" y1="{_num(bottom)}" x2="{_num(xm)}" y2="{_num(bottom + 3)}" stroke="{AXIS_COLOUR}" stroke-width="0.6"/>')
        if i % mstep == 0 and i < months:
            xc = x(_add_months(start, i)) + (x(_add_months(start, i + 1)) - x(_add_months(start, i))) / 2 if mstep == 1 else xm
            parts.append(f'<text x="{_num(xc)}" y="{_num(bottom + 12)}" text-anchor="middle" font-size="{_num(TICK_PT)}">{MONTHS[m.month - 1]}</text>')
            if i == 0 or m.month <= mstep:
                parts.append(f'<text x="{_num(xc)}" y="{_num(bottom + 21)}" text-anchor="middle" font-size="{_num(TICK_PT)}">{m.year}</text>')
    parts.append(
        f'<text x="{_num((left + right) / 2)}" y="{_num(bottom + 34)}" text-anchor="middle" font-size="{_num(TITLE_PT)}">'
        f"Calendar month{_t(' (data cut-off ' + cut.isoformat() + ')') if cut else ''}</text>"
    )

    # stacked enrolled areas, by dose level (first dose level at the bottom)
    events = sorted({d for d, _ in enrolled})
    on_date = Counter(enrolled)  # (date, dose) -> participants enrolled that day: one pass
    cum: dict[str, list[int]] = {dose: list(itertools.accumulate(on_date[e, dose] for e in events)) for dose in doses}
    below = [0] * len(events)
    xe = x(x_end_data)
    for dose in doses:
        top_ = [b + c for b, c in zip(below, cum[dose])]
        if top_ and top_[-1] > (below[-1] if below else 0):
            pts = _step_points(events, top_, x, y, xe) + list(reversed(_step_points(events, below, x, y, xe)))
            colour = colours.get(dose, OTHER_COLOUR)
            parts.append(
                f'<polygon class="enrolled" data-dose="{_t(dose)}" points="{" ".join(f"{_num(a)},{_num(b)}" for a, b in pts)}" '
                f'fill="{colour}" fill-opacity="0.55" stroke="{colour}" stroke-width="0.8"/>'
            )
        below = top_
    # screened and infused step lines
    for name, dates, colour, dash in (("screened", screened, "#555555", ""), ("infused", infused, "#000000", "4 2")):
        if not dates:
            continue
        c = _cumulative(dates)
        pts = _step_points([d for d, _ in c], [n for _, n in c], x, y, xe)
        d_attr = f' stroke-dasharray="{dash}"' if dash else ""
        parts.append(
            f'<polyline class="{name}" points="{" ".join(f"{_num(a)},{_num(b)}" for a, b in pts)}" fill="none" '
            f'stroke="{colour}" stroke-width="1.4"{d_attr}/>'
        )
    # end-of-line counts
    ends = [(len(screened), "#555555"), (len(enrolled), "#000000"), (len(infused), "#000000")]
    used: list[float] = []
    for n, colour in ends:
        if n == 0:
            continue
        yy = y(n) + 2.7
        while any(abs(yy - u) < 8 for u in used):
            yy += 8
        used.append(yy)
        parts.append(f'<text x="{_num(xe + 3)}" y="{_num(yy)}" font-size="{_num(TICK_PT)}" fill="{colour}">{n}</text>')
    # axes
    parts.append(f'<line x1="{_num(left)}" y1="{_num(bottom)}" x2="{_num(right)}" y2="{_num(bottom)}" stroke="{AXIS_COLOUR}" stroke-width="0.8"/>')
    parts.append(f'<line x1="{_num(left)}" y1="{_num(top)}" x2="{_num(left)}" y2="{_num(bottom)}" stroke="{AXIS_COLOUR}" stroke-width="0.8"/>')
    parts.extend(legend_parts)
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _step_points(dates: Sequence[dt.date], values: Sequence[int], x, y, x_end: float) -> list[tuple[float, float]]:
    """A step function from 0 at the first date, rising at each date, held to x_end."""
    if not dates:
        return []
    pts = [(x(dates[0]), y(0))]
    prev = 0
    for d, v in zip(dates, values):
        xd = x(d)
        if v != prev:
            pts.append((xd, y(prev)))
            pts.append((xd, y(v)))
        prev = v
    pts.append((max(x_end, pts[-1][0]), y(prev)))
    # drop repeated points (same coordinates) for a compact path
    out: list[tuple[float, float]] = []
    for p in pts:
        if not out or (_num(p[0]), _num(p[1])) != (_num(out[-1][0]), _num(out[-1][1])):
            out.append(p)
    return out


# --------------------------------------------------------------------------------------------------
# Transgene kinetics


def log_axis(values: Iterable[float]) -> tuple[int, int]:
    """Decades (lo, hi) of a log10 axis that holds every positive value: 10^lo <= v <= 10^hi, at least one decade."""
    logs = [math.log10(v) for v in values if v is not None and v > 0]
    if not logs:
        return 0, 1
    lo = math.floor(min(logs) + 1e-9)
    hi = math.ceil(max(logs) - 1e-9)
    if hi <= lo:
        hi = lo + 1
    return lo, hi


def log_position(value: float, lo: int, hi: int, y_bottom: float, y_top: float) -> float:
    """The y coordinate of a positive value on a log10 axis from 10^lo (at y_bottom) to 10^hi (at y_top)."""
    return y_bottom - (y_bottom - y_top) * (math.log10(value) - lo) / (hi - lo)


# The transgene figure widens the expansion phase: days up to EXPANSION_DAYS (the DLT window / AUC0-28
# window) take EXPANSION_SHARE of the width when follow-up is longer than twice that.
EXPANSION_DAYS = 28
EXPANSION_SHARE = 0.5


@dataclass(frozen=True)
class DayScale:
    """Days from infusion to x: linear, or two linear pieces that meet at ``pivot`` (day 28)."""

    lo: float
    hi: float
    left: float
    right: float
    pivot: float | None = None
    share: float = EXPANSION_SHARE

    def __call__(self, day: float) -> float:
        w = self.right - self.left
        if self.pivot is None:
            return self.left + w * (day - self.lo) / (self.hi - self.lo)
        if day <= self.pivot:
            return self.left + self.share * w * (day - self.lo) / (self.pivot - self.lo)
        return self.left + self.share * w + (1 - self.share) * w * (day - self.pivot) / (self.hi - self.pivot)


def transgene_day_scale(lo: float, hi: float, left: float, right: float) -> tuple[DayScale, list[float]]:
    """The x scale and ticks of the transgene figure: weekly ticks to day 28 then wider ones when
    follow-up goes beyond twice 28 days (the scale changes at day 28), else one linear scale."""
    if hi <= 2 * EXPANSION_DAYS:
        a, b, ticks = _day_axis(lo, hi)
        return DayScale(a, b, left, right), ticks
    a = min(0.0, math.floor(lo / 7) * 7)
    piv = float(EXPANSION_DAYS)
    step = _nice_step(hi - piv, 6, DAY_STEPS)
    b = math.ceil(hi / step) * step
    first = [a + 7 * i for i in range(int((piv - a) // 7) + 1)]
    if first[-1] != piv:
        first.append(piv)
    scale = DayScale(a, b, left, right, pivot=piv)
    second = []
    t = math.ceil((piv + 1) / step) * step
    while t <= b + 1e-9:
        if scale(t) - scale(piv) >= 14:  # keep clear of the day-28 label
            second.append(t)
        t += step
    return scale, first + second


def _marker(cx: float, cy: float, colour: str, filled: bool = True, r: float = 2.2) -> str:
    """A sample of the transgene figure: a circle, open (white fill) when filled is False."""
    fill = colour if filled else "#FFFFFF"
    return f'<circle cx="{_num(cx)}" cy="{_num(cy)}" r="{_num(r)}" fill="{fill}" stroke="{colour}" stroke-width="0.9"/>'


def transgene_svg(rows: Sequence[Row], dose_levels: Sequence[Row], median_of: dict[str, int] | None = None) -> str:
    """CAR transgene (copies/ug gDNA) over days from infusion, one line per participant coloured by
    dose level, log10 y axis. rows: analysis.adpc (SUBJID, ADY, AVAL, BLQFL, LLOQ, DOSEA).
    BLQ samples are drawn at LLOQ/2 with an open marker; samples without a result are left out.
    median_of (dose -> participants): the rows are one median line per dose level (see
    :data:`MAX_TRANSGENE_PARTICIPANTS`) and the legend gives how many participants each summarises."""
    label = ("CAR transgene levels in blood over time, median by dose level" if median_of
             else "CAR transgene levels in blood over time by participant")
    order = _dose_order(dose_levels)
    colours = dose_colours(dose_levels)
    pts_by_subj: dict[str, list[tuple[float, float, bool]]] = {}
    dose_of: dict[str, str] = {}
    lloqs: set[float] = set()
    for r in rows:
        day = _float(r.get("ADY"))
        if day is None or r.get("SUBJID") is None:
            continue
        subj = str(r["SUBJID"])
        lloq = _float(r.get("LLOQ"))
        blq = str(r.get("BLQFL") or "").upper() == "Y"
        if blq:
            if lloq is None or lloq <= 0:
                continue
            val = lloq / 2
        else:
            val = _float(r.get("AVAL"))
            if val is None or val <= 0:
                continue
        if lloq is not None and lloq > 0:
            lloqs.add(lloq)
        pts_by_subj.setdefault(subj, []).append((day, val, blq))
        dose_of.setdefault(subj, str(r.get("DOSEA") or ""))
    if not pts_by_subj:
        return empty_svg(label)
    subjects = sorted(pts_by_subj, key=lambda s: (dose_of[s] not in order, order.get(dose_of[s], 0), dose_of[s], s))

    all_pts = [p for s in subjects for p in pts_by_subj[s]]
    lo, hi = log_axis([v for _, v, _ in all_pts] + list(lloqs))
    doses = sorted({dose_of[s] for s in subjects}, key=lambda d: (d not in order, order.get(d, 0), d))
    items = []
    for dose in doses:
        n = median_of.get(dose, 0) if median_of else sum(1 for s in subjects if dose_of[s] == dose)
        c = colours.get(dose, OTHER_COLOUR)
        what = f"median of n={n}" if median_of else f"n={n}"
        items.append((_line_symbol(c, marker=_marker(0, 0, c)), f"{dose_level_label(dose_levels, dose) or 'no dose level'} ({what})"))
    if any(blq for _, _, blq in all_pts):
        items.append((_marker(0, 0, "#555555", filled=False), "Below LLOQ, drawn at LLOQ/2"))
    if lloqs:
        items.append((_line_symbol("#555555", "3 2"), f"LLOQ ({', '.join(_num(v) for v in sorted(lloqs))} copies/\u00b5g gDNA)"))

    left, right, top = 44.0, WIDTH - 12.0, 10.0
    plot_h = 40.0 * (hi - lo) if hi - lo >= 5 else 200.0
    plot_h = min(max(plot_h, 160.0), 240.0)
    bottom = top + plot_h
    legend_parts, legend_h = _legend(items, left - 14, bottom + 36, right - left + 14)
    height = bottom + 36 + legend_h + 2

    x, xticks = transgene_day_scale(min(d for d, _, _ in all_pts), max(d for d, _, _ in all_pts), left, right)

    def y(v: float) -> float:
        return log_position(v, lo, hi, bottom, top)

    parts = _open(height, label)
    # y axis: decades with labels 10^k, minor ticks at 2..9
    for k in range(lo, hi + 1):
        yk = y(10.0**k)
        parts.append(f'<line x1="{_num(left)}" y1="{_num(yk)}" x2="{_num(right)}" y2="{_num(yk)}" stroke="{GRID_COLOUR}" stroke-width="0.5"/>')
        parts.append(
            f'<text class="decade" x="{_num(left - 8)}" y="{_num(yk + 2.7)}" text-anchor="end" font-size="{_num(TICK_PT)}">10</text>'
            f'<text x="{_num(left - 7.5)}" y="{_num(yk - 0.8)}" font-size="{_num(TICK_PT * 0.75)}">{k}</text>'
        )
        if k < hi:
            for m in range(2, 10):
                ym = y(m * 10.0**k)
                parts.append(f'<line x1="{_num(left - 2)}" y1="{_num(ym)}" x2="{_num(left)}" y2="{_num(ym)}" stroke="{AXIS_COLOUR}" stroke-width="0.4"/>')
    parts.append(
        f'<text transform="translate({_num(10)} {_num(top + plot_h / 2)}) rotate(-90)" text-anchor="middle" '
        f'font-size="{_num(TITLE_PT)}">Transgene copies/\u00b5g gDNA (log scale)</text>'
    )
    parts += _day_ticks(xticks, x, top, bottom)
    parts.append(
        f'<text x="{_num((left + right) / 2)}" y="{_num(bottom + 25)}" text-anchor="middle" font-size="{_num(TITLE_PT)}">'
        "Days since CAR-T infusion (day 0)"
        + (f"; scale changes at day {EXPANSION_DAYS}" if x.pivot is not None else "")
        + "</text>"
    )
    if x.pivot is not None:
        xp = x(x.pivot)
        parts.append(
            f'<line class="pivot" x1="{_num(xp)}" y1="{_num(top)}" x2="{_num(xp)}" y2="{_num(bottom)}" '
            f'stroke="#999999" stroke-width="0.6" stroke-dasharray="1 2"/>'
        )
    for lq in sorted(lloqs):
        yl = y(lq)
        parts.append(
            f'<line class="lloq" x1="{_num(left)}" y1="{_num(yl)}" x2="{_num(right)}" y2="{_num(yl)}" '
            f'stroke="#555555" stroke-width="0.8" stroke-dasharray="3 2"/>'
        )
    for s in subjects:
        c = colours.get(dose_of[s], OTHER_COLOUR)
        pts = sorted(pts_by_subj[s])
        coords = " ".join(f"{_num(x(d))},{_num(y(v))}" for d, v, _ in pts)
        parts.append(f'<g class="participant" data-subjid="{_t(s)}" data-dose="{_t(dose_of[s])}">')
        parts.append(f'<polyline class="subject" points="{coords}" fill="none" stroke="{c}" stroke-width="1.1" stroke-linejoin="round"/>')
        for d, v, blq in pts:
            parts.append(_marker(x(d), y(v), c, filled=not blq, r=1.9))
        parts.append("</g>")
    parts.append(f'<line x1="{_num(left)}" y1="{_num(bottom)}" x2="{_num(right)}" y2="{_num(bottom)}" stroke="{AXIS_COLOUR}" stroke-width="0.8"/>')
    parts.append(f'<line x1="{_num(left)}" y1="{_num(top)}" x2="{_num(left)}" y2="{_num(bottom)}" stroke="{AXIS_COLOUR}" stroke-width="0.8"/>')
    parts.extend(legend_parts)
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


# --------------------------------------------------------------------------------------------------
# Swimmer plot


def _response_marker(code: str, cx: float, cy: float) -> str:
    """Black-and-white shapes, readable on any bar colour: CR diamond, PR triangle, SD circle (open),
    PD square, NE open square."""
    c = "#000000"
    if code == "CR":
        return f'<path d="M{_num(cx)} {_num(cy - 4)} L{_num(cx + 4)} {_num(cy)} L{_num(cx)} {_num(cy + 4)} L{_num(cx - 4)} {_num(cy)} Z" fill="{c}" stroke="#FFFFFF" stroke-width="0.5"/>'
    if code == "PR":
        return f'<path d="M{_num(cx)} {_num(cy - 3.8)} L{_num(cx + 3.8)} {_num(cy + 3)} L{_num(cx - 3.8)} {_num(cy + 3)} Z" fill="{c}" stroke="#FFFFFF" stroke-width="0.5"/>'
    if code == "SD":
        return f'<circle cx="{_num(cx)}" cy="{_num(cy)}" r="2.8" fill="#FFFFFF" stroke="{c}" stroke-width="1.1"/>'
    if code == "PD":
        return f'<rect x="{_num(cx - 2.8)}" y="{_num(cy - 2.8)}" width="5.6" height="5.6" fill="{c}" stroke="#FFFFFF" stroke-width="0.5"/>'
    return f'<rect x="{_num(cx - 2.5)}" y="{_num(cy - 2.5)}" width="5" height="5" fill="#FFFFFF" stroke="{c}" stroke-width="0.9"/>'


def _death_marker(cx: float, cy: float, cls: str = "death") -> str:
    a = 3.2
    return (
        f'<path class="{cls}" d="M{_num(cx - a)} {_num(cy - a)} L{_num(cx + a)} {_num(cy + a)} '
        f'M{_num(cx - a)} {_num(cy + a)} L{_num(cx + a)} {_num(cy - a)}" stroke="#000000" stroke-width="1.6" fill="none"/>'
    )


def _ongoing_arrow(x0: float, cy: float, cls: str = "ongoing") -> str:
    return (
        f'<path class="{cls}" d="M{_num(x0)} {_num(cy)} L{_num(x0 + 6)} {_num(cy)} M{_num(x0 + 5)} {_num(cy - 3)} '
        f'L{_num(x0 + 9)} {_num(cy)} L{_num(x0 + 5)} {_num(cy + 3)} Z" stroke="#000000" stroke-width="1" fill="#000000"/>'
    )


def _swimmer_selection(ordered: list[Row], max_rows: int) -> list[Row]:
    """At most ``max_rows`` of the participants (ordered by dose level, then longest first): an equal
    share of each dose level, the first dose levels taking the remainder and the rows a smaller dose
    level leaves unused, so that every dose level is seen when there are more than a page."""
    if len(ordered) <= max_rows:
        return ordered
    groups: dict[str, list[Row]] = {}
    for r in ordered:
        groups.setdefault(str(r.get("DOSEA") or ""), []).append(r)
    take = {d: 0 for d in groups}
    left = max_rows
    while left:  # round-robin over the dose levels in order
        progressed = False
        for d, rs in groups.items():
            if left and take[d] < len(rs):
                take[d] += 1
                left -= 1
                progressed = True
        if not progressed:
            break
    return [r for d, rs in groups.items() for r in rs[: take[d]]]


def swimmer_svg(
    rows: Sequence[Row], assessments: Sequence[Row], dose_levels: Sequence[Row], *, max_rows: int = MAX_SWIMMER_ROWS
) -> str:
    """One bar per infused participant from infusion (day 0) to last contact, coloured by dose level,
    sorted by dose level then duration (longest first), with response assessments, death and
    ongoing. rows: analysis.response (SUBJID, DOSEA, LSTCNDY, DTHDY, ONGOING, BOR);
    assessments: analysis.adrs (SUBJID, ADY, AVALC). More than max_rows participants (a page): the
    first max_rows in that order are drawn and a line under the axis says how many are not."""
    label = "Swimmer plot: time on study and response by participant"
    subjects = [r for r in rows if r.get("SUBJID") is not None]
    if not subjects:
        return empty_svg(label)
    order = _dose_order(dose_levels)
    colours = dose_colours(dose_levels)

    def dur(r: Row) -> float:
        v = _float(r.get("LSTCNDY"))
        return max(v, 0.0) if v is not None else 0.0

    subjects = sorted(
        subjects,
        key=lambda r: (str(r.get("DOSEA") or "") not in order, order.get(str(r.get("DOSEA") or ""), 0),
                       str(r.get("DOSEA") or ""), -dur(r), str(r["SUBJID"])),
    )
    n_all = len(subjects)
    subjects = _swimmer_selection(subjects, max(max_rows, 1))
    ids = {str(r["SUBJID"]) for r in subjects}
    by_subj: dict[str, list[tuple[float, str]]] = {}
    for a in assessments:
        day = _float(a.get("ADY"))
        code = str(a.get("AVALC") or "").upper()
        if str(a.get("SUBJID")) not in ids or day is None or code not in RESPONSES:
            continue
        by_subj.setdefault(str(a["SUBJID"]), []).append((day, code))
    max_day = max([dur(r) for r in subjects] + [d for v in by_subj.values() for d, _ in v] + [1.0])
    xa, xb, xticks = _day_axis(0.0, max_day)

    row_h = 13.0
    left, right, top = 58.0, WIDTH - 34.0, 16.0
    bottom = top + row_h * len(subjects) + 4
    doses = []
    for r in subjects:
        d = str(r.get("DOSEA") or "")
        if d not in doses:
            doses.append(d)
    items = [(_box_symbol(colours.get(d, OTHER_COLOUR)), dose_level_label(dose_levels, d) or "no dose level") for d in doses]
    codes_present = sorted({c for v in by_subj.values() for _, c in v}, key=RESPONSES.index)
    items += [(_response_marker(c, 0, 0), f"{RESPONSE_LABELS[c]} ({c})") for c in codes_present]
    if any(_float(r.get("DTHDY")) is not None for r in subjects):
        items.append((_death_marker(0, 0, "legend"), "Death"))
    if any(str(r.get("ONGOING") or "") == "Y" for r in subjects):
        items.append((_ongoing_arrow(-5, 0, "legend"), "On study at data cut-off"))
    legend_parts, legend_h = _legend(items, left - 50, bottom + 36, right - left + 80)
    height = bottom + 36 + legend_h + 2 + (12 if n_all > len(subjects) else 0)

    def x(d: float) -> float:
        return left + (right - left) * (d - xa) / (xb - xa)

    parts = _open(height, label)
    parts.append(f'<text x="{_num(left - 6)}" y="{_num(top - 5)}" text-anchor="end" font-size="{_num(TICK_PT)}" font-weight="bold">Participant</text>')
    parts.append(f'<text x="{_num(WIDTH - 4)}" y="{_num(top - 5)}" text-anchor="end" font-size="{_num(TICK_PT)}" font-weight="bold">BOR</text>')
    parts += _day_ticks(xticks, x, top, bottom)
    parts.append(
        f'<text x="{_num((left + right) / 2)}" y="{_num(bottom + 25)}" text-anchor="middle" font-size="{_num(TITLE_PT)}">'
        "Days since CAR-T infusion (day 0)</text>"
    )
    if n_all > len(subjects):
        parts.append(
            f'<text class="truncated" x="{_num(left)}" y="{_num(height - 3)}" font-size="{_num(TICK_PT)}" font-style="italic">'
            f"Showing {len(subjects)} of {n_all:,} infused participants: the longest on study of each dose level."
            "</text>"
        )
    prev_dose = None
    for i, r in enumerate(subjects):
        cy = top + row_h * i + row_h / 2 + 2
        dose = str(r.get("DOSEA") or "")
        if prev_dose is not None and dose != prev_dose:
            yl = cy - row_h / 2
            parts.append(f'<line x1="{_num(4)}" y1="{_num(yl)}" x2="{_num(right)}" y2="{_num(yl)}" stroke="#BBBBBB" stroke-width="0.5" stroke-dasharray="2 2"/>')
        prev_dose = dose
        c = colours.get(dose, OTHER_COLOUR)
        subj = str(r["SUBJID"])
        x1 = x(dur(r))
        width = max(x1 - x(0), 1.0)
        parts.append(f'<g class="participant" data-subjid="{_t(subj)}" data-dose="{_t(dose)}">')
        parts.append(f'<text x="{_num(left - 6)}" y="{_num(cy + 2.7)}" text-anchor="end" font-size="{_num(TICK_PT)}">{_t(_short(subj))}</text>')
        parts.append(f'<rect class="bar" x="{_num(x(0))}" y="{_num(cy - 4)}" width="{_num(width)}" height="8" fill="{c}"/>')
        for day, code in sorted(by_subj.get(subj, []), key=lambda p: (p[0], RESPONSES.index(p[1]))):
            parts.append(_response_marker(code, x(day), cy))
        dth = _float(r.get("DTHDY"))
        if dth is not None:
            parts.append(_death_marker(x(max(dth, 0.0)), cy))
        if str(r.get("ONGOING") or "") == "Y":
            parts.append(_ongoing_arrow(x(0) + width + 1.5, cy))
        bor = _short(r.get("BOR") or "", 4)
        parts.append(f'<text x="{_num(WIDTH - 4)}" y="{_num(cy + 2.7)}" text-anchor="end" font-size="{_num(TICK_PT)}">{_t(bor)}</text>')
        parts.append("</g>")
    parts.append(f'<line x1="{_num(left)}" y1="{_num(bottom)}" x2="{_num(right)}" y2="{_num(bottom)}" stroke="{AXIS_COLOUR}" stroke-width="0.8"/>')
    parts.append(f'<line x1="{_num(x(0))}" y1="{_num(top)}" x2="{_num(x(0))}" y2="{_num(bottom)}" stroke="{AXIS_COLOUR}" stroke-width="0.8"/>')
    parts.extend(legend_parts)
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


# --------------------------------------------------------------------------------------------------
# Data and rendering


@dataclass
class FigureData:
    """The rows the figures are drawn from, read from the analysis tables in a fixed order."""

    dose_levels: list[Row] = field(default_factory=list)
    adsl: list[Row] = field(default_factory=list)
    adpc: list[Row] = field(default_factory=list)
    response: list[Row] = field(default_factory=list)
    adrs: list[Row] = field(default_factory=list)
    data_cut: dt.date | None = None
    # Set when adpc holds more participants than one figure can show: adpc then holds one median
    # profile per dose level (dose -> participants summarised).
    transgene_median_of: dict[str, int] | None = None
    # Analysis tables that did not exist (their figure shows "No data at this data cut").
    missing: list[str] = field(default_factory=list)


FIGURE_QUERIES: dict[str, str] = {
    "dose_levels": QUERIES["dose_levels"],  # the report tables' query
    "adsl": "SELECT SUBJID, RFICDT, ENRLDT, TRTSDT, DOSEP, DOSEA FROM analysis.adsl ORDER BY SUBJID",
    "adpc": """SELECT SUBJID, ADY, AVAL, BLQFL, LLOQ, DOSEA FROM analysis.adpc
               ORDER BY SUBJID, ADY NULLS LAST, PCDAT NULLS LAST, PCTPT""",
    "response": """SELECT SUBJID, DOSEA, DOSEAN, TRTSDT, BOR, LSTCNDT, LSTCNDY, DTHDT, DTHDY, EOSSTT, ONGOING
                   FROM analysis.response ORDER BY DOSEAN NULLS LAST, SUBJID""",
    "adrs": "SELECT SUBJID, VISIT, RSDAT, ADY, AVALC FROM analysis.adrs ORDER BY SUBJID, RSDAT, VISIT",
}

# More participants than this and the transgene figure shows one median profile per dose level by
# nominal time point (BLQ at LLOQ/2) instead of a line per participant: hundreds of lines are
# unreadable, and at 10,000 participants the SVG alone would be megabytes for the PDF renderer.
MAX_TRANSGENE_PARTICIPANTS = 60
TRANSGENE_MEDIAN_SQL = """
    SELECT DOSEA || ' median' AS SUBJID, median(ADY) AS ADY,
           median(CASE WHEN BLQFL = 'Y' THEN LLOQ / 2 ELSE AVAL END) AS AVAL, 'N' AS BLQFL, max(LLOQ) AS LLOQ, DOSEA
    FROM analysis.adpc WHERE DOSEA IS NOT NULL AND ADY IS NOT NULL
    GROUP BY DOSEA, PCTPT ORDER BY DOSEA, ADY, PCTPT"""

def load_figure_data(con: duckdb.DuckDBPyConnection, data_cut: dt.date | str | None = None) -> FigureData:
    """Read the analysis tables the figures need; a table that does not exist reads as no rows."""
    have = {
        r[0].lower()
        for r in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'analysis'"
        ).fetchall()
    }
    out: dict[str, list[Row]] = {}
    missing: list[str] = []
    median_of: dict[str, int] | None = None
    for name, sql in FIGURE_QUERIES.items():
        if name not in have:
            out[name] = []
            missing.append(name)
            continue
        if name == "adpc":
            per_dose = dict(con.execute(
                "SELECT DOSEA, count(DISTINCT SUBJID) FROM analysis.adpc WHERE DOSEA IS NOT NULL GROUP BY DOSEA"
            ).fetchall())
            if sum(per_dose.values()) > MAX_TRANSGENE_PARTICIPANTS:
                median_of = per_dose
                sql = TRANSGENE_MEDIAN_SQL
        cur = con.execute(sql)
        names = [d[0] for d in cur.description]
        out[name] = [dict(zip(names, row)) for row in cur.fetchall()]
    return FigureData(**out, data_cut=_date(data_cut), transgene_median_of=median_of, missing=missing)


def render_figures(data: FigureData) -> dict[str, str]:
    """{"accrual": svg, "transgene": svg, "swimmer": svg}."""
    return {
        "accrual": accrual_svg(data.adsl, data.dose_levels, data_cut=data.data_cut),
        "transgene": transgene_svg(data.adpc, data.dose_levels, median_of=data.transgene_median_of),
        "swimmer": swimmer_svg(data.response, data.adrs, data.dose_levels),
    }
