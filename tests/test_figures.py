"""DSMB figures (deliverables.figures): deterministic, escaped, well-formed SVG with the right marks in the right place."""

from __future__ import annotations

import datetime as dt
import itertools
import re
import xml.etree.ElementTree as ET

import duckdb
import pytest

from deliverables.figures import (
    EMPTY_TEXT,
    PALETTE,
    FigureData,
    accrual_svg,
    dose_colours,
    load_figure_data,
    log_axis,
    log_position,
    render_figures,
    swimmer_svg,
    transgene_day_scale,
    transgene_svg,
)

SVG = "{http://www.w3.org/2000/svg}"
DOSES = [
    {"DOSE": "DL1", "DOSEN": 1, "DOSELBL": "5x10^8 cells", "CELLS": 5e8},
    {"DOSE": "DL2", "DOSEN": 2, "DOSELBL": "1x10^9 cells", "CELLS": 1e9},
]
HOSTILE = '<script>alert("x")</script>&\'01'


def d(s: str) -> dt.date:
    return dt.date.fromisoformat(s)


ADSL = [
    {"SUBJID": "01-001", "RFICDT": d("2024-06-15"), "ENRLDT": d("2024-06-24"), "TRTSDT": d("2024-07-22"), "DOSEP": "DL1"},
    {"SUBJID": "01-002", "RFICDT": d("2024-06-29"), "ENRLDT": None, "TRTSDT": None, "DOSEP": None},
    {"SUBJID": "01-003", "RFICDT": d("2024-07-13"), "ENRLDT": d("2024-07-26"), "TRTSDT": None, "DOSEP": "DL1"},
    {"SUBJID": "01-004", "RFICDT": d("2024-09-01"), "ENRLDT": d("2024-09-10"), "TRTSDT": d("2024-10-08"), "DOSEP": "DL2"},
]
ADPC = [
    {"SUBJID": "01-001", "ADY": 0, "AVAL": 0.0, "BLQFL": "Y", "LLOQ": 50.0, "DOSEA": "DL1"},
    {"SUBJID": "01-001", "ADY": 7, "AVAL": 1000.0, "BLQFL": "N", "LLOQ": 50.0, "DOSEA": "DL1"},
    {"SUBJID": "01-001", "ADY": 28, "AVAL": 100.0, "BLQFL": "N", "LLOQ": 50.0, "DOSEA": "DL1"},
    {"SUBJID": "01-004", "ADY": 7, "AVAL": 10000.0, "BLQFL": "N", "LLOQ": 50.0, "DOSEA": "DL2"},
    {"SUBJID": "01-004", "ADY": 14, "AVAL": None, "BLQFL": "N", "LLOQ": 50.0, "DOSEA": "DL2"},  # no result: left out
]
RESPONSE = [
    {"SUBJID": "01-001", "DOSEA": "DL1", "BOR": "PR", "LSTCNDY": 120, "DTHDY": None, "ONGOING": "Y"},
    {"SUBJID": "01-004", "DOSEA": "DL2", "BOR": "PD", "LSTCNDY": 60, "DTHDY": 60, "ONGOING": "N"},
    {"SUBJID": "01-005", "DOSEA": "DL1", "BOR": "NE", "LSTCNDY": 10, "DTHDY": None, "ONGOING": "N"},
]
ADRS = [
    {"SUBJID": "01-001", "ADY": 28, "AVALC": "SD"},
    {"SUBJID": "01-001", "ADY": 90, "AVALC": "PR"},
    {"SUBJID": "01-004", "ADY": 29, "AVALC": "PD"},
]


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    assert root.get("viewBox", "").startswith("0 0 482 ")
    return root


def texts(root: ET.Element) -> list[str]:
    return ["".join(t.itertext()) for t in root.iter(f"{SVG}text")]


def test_renders_are_deterministic_and_parse_as_xml():
    data = FigureData(dose_levels=DOSES, adsl=ADSL, adpc=ADPC, response=RESPONSE, adrs=ADRS, data_cut=d("2024-12-31"))
    first = render_figures(data)
    assert set(first) == {"accrual", "transgene", "swimmer"}
    # Shuffled input rows give the same bytes: the figures sort what they draw.
    shuffled = FigureData(
        dose_levels=DOSES[::-1], adsl=ADSL[::-1], adpc=ADPC[::-1], response=RESPONSE[::-1], adrs=ADRS[::-1],
        data_cut=d("2024-12-31"),
    )
    assert render_figures(data) == first == render_figures(shuffled)
    for svg in first.values():
        parse(svg)
        assert not svg.startswith("<?xml")
        # Fixed number formatting: no coordinate with more than two decimals, no exponent notation.
        assert not re.search(r"\d\.\d{3,}", svg)
        assert not re.search(r"\de[-+]?\d", svg)


def test_hostile_participant_ids_and_labels_are_escaped():
    doses = [{"DOSE": "DL1", "DOSEN": 1, "DOSELBL": "<b>5x10^8</b> & co", "CELLS": 5e8}]
    pc = [{"SUBJID": HOSTILE, "ADY": 7, "AVAL": 500.0, "BLQFL": "N", "LLOQ": 50.0, "DOSEA": "DL1"}]
    rsp = [{"SUBJID": HOSTILE, "DOSEA": "DL1", "BOR": "<i>", "LSTCNDY": 30, "DTHDY": None, "ONGOING": "Y"}]
    rs = [{"SUBJID": HOSTILE, "ADY": 28, "AVALC": "SD"}]
    adsl = [{"SUBJID": HOSTILE, "RFICDT": d("2024-01-02"), "ENRLDT": d("2024-01-05"), "TRTSDT": d("2024-02-01"), "DOSEP": "DL1"}]
    for svg in (transgene_svg(pc, doses), swimmer_svg(rsp, rs, doses), accrual_svg(adsl, doses)):
        assert "<script" not in svg and "<b>" not in svg and "<i>" not in svg
        root = parse(svg)  # still well-formed
        assert any("<b>5x10^8</b> & co" in t for t in texts(root))
    root = parse(swimmer_svg(rsp, rs, doses))
    assert [g.get("data-subjid") for g in root.iter(f"{SVG}g") if g.get("class") == "participant"] == [HOSTILE]


def test_log_axis_places_known_values():
    assert log_axis([25, 49286]) == (1, 5)
    assert log_axis([10, 1000]) == (1, 3)
    assert log_axis([100]) == (2, 3)
    assert log_position(1000, 1, 5, 200, 0) == pytest.approx(100)
    assert log_position(10, 1, 5, 200, 0) == pytest.approx(200)
    assert log_position(100000, 1, 5, 200, 0) == pytest.approx(0)
    # In the figure: 10, 100, 1000 on a 10^1..10^3 axis sit on the bottom, middle and top decade lines.
    pc = [{"SUBJID": "01-001", "ADY": day, "AVAL": v, "BLQFL": "N", "LLOQ": 5.0, "DOSEA": "DL1"}
          for day, v in ((0, 10.0), (7, 1000.0), (14, 100.0))]
    root = parse(transgene_svg(pc, DOSES))
    line = next(p for p in root.iter(f"{SVG}polyline") if p.get("class") == "subject")
    ys = [float(pt.split(",")[1]) for pt in line.get("points").split()]
    # LLOQ 5 widens the axis to 10^0..10^3: four decade labels.
    assert len([t for t in root.iter(f"{SVG}text") if t.get("class") == "decade"]) == 4
    y_lines = sorted({float(ln.get("y1")) for ln in root.iter(f"{SVG}line")
                      if ln.get("y1") == ln.get("y2") and ln.get("stroke") == "#E3E3E3"})
    assert len(y_lines) == 4  # 10^0, 10^1, 10^2, 10^3
    bottom = y_lines[-1]
    step = (y_lines[-1] - y_lines[0]) / 3
    assert ys[0] == pytest.approx(bottom - step, abs=0.01)  # 10
    assert ys[2] == pytest.approx(bottom - 2 * step, abs=0.01)  # 100
    assert ys[1] == pytest.approx(bottom - 3 * step, abs=0.01)  # 1000


def test_blq_samples_are_drawn_at_half_the_lloq_with_open_markers():
    root = parse(transgene_svg(ADPC, DOSES))
    circles = [c for g in root.iter(f"{SVG}g") if g.get("class") == "participant" for c in g.iter(f"{SVG}circle")]
    assert len(circles) == 4  # 5 samples, one without a result
    open_ = [c for c in circles if c.get("fill") == "#FFFFFF"]
    assert len(open_) == 1
    lloq = next(ln for ln in root.iter(f"{SVG}line") if ln.get("class") == "lloq")
    # LLOQ/2 lies log10(2) of a decade below the LLOQ line.
    decade_lines = sorted({float(ln.get("y1")) for ln in root.iter(f"{SVG}line")
                           if ln.get("y1") == ln.get("y2") and ln.get("stroke") == "#E3E3E3"})
    decade = decade_lines[1] - decade_lines[0]
    assert float(open_[0].get("cy")) - float(lloq.get("y1")) == pytest.approx(decade * 0.30103, abs=0.02)


def test_one_line_and_one_bar_per_participant():
    root = parse(transgene_svg(ADPC, DOSES))
    lines = [p for p in root.iter(f"{SVG}polyline") if p.get("class") == "subject"]
    assert len(lines) == 2
    colours = dose_colours(DOSES)
    assert colours == {"DL1": PALETTE[0], "DL2": PALETTE[1]}
    assert [ln.get("stroke") for ln in lines] == [PALETTE[0], PALETTE[1]]

    root = parse(swimmer_svg(RESPONSE, ADRS, DOSES))
    bars = [r for r in root.iter(f"{SVG}rect") if r.get("class") == "bar"]
    assert len(bars) == len(RESPONSE)
    ids = [g.get("data-subjid") for g in root.iter(f"{SVG}g") if g.get("class") == "participant"]
    assert ids == ["01-001", "01-005", "01-004"]  # by dose level, then longest first
    assert [b.get("fill") for b in bars] == [PALETTE[0], PALETTE[0], PALETTE[1]]
    assert len([p for p in root.iter(f"{SVG}path") if p.get("class") == "death"]) == 1
    assert len([p for p in root.iter(f"{SVG}path") if p.get("class") == "ongoing"]) == 1
    widths = [float(b.get("width")) for b in bars]
    assert widths[0] == pytest.approx(2 * widths[2], abs=0.02)  # 120 vs 60 days


def test_accrual_counts_and_stacks_by_dose():
    root = parse(accrual_svg(ADSL, DOSES, data_cut="2024-12-31"))
    stacks = [p for p in root.iter(f"{SVG}polygon") if p.get("class") == "enrolled"]
    assert [p.get("data-dose") for p in stacks] == ["DL1", "DL2"]
    assert [p.get("class") for p in root.iter(f"{SVG}polyline")] == ["screened", "infused"]
    t = texts(root)
    assert "Screened (informed consent), n=4" in t
    assert "Enrolled, DL1 5x10^8 cells: n=2" in t and "Enrolled, DL2 1x10^9 cells: n=1" in t
    assert "Infused, n=2" in t
    assert "Jun" in t and "2024" in t


@pytest.mark.parametrize(
    "svg",
    [
        accrual_svg([], DOSES),
        accrual_svg([{"SUBJID": "01-001", "RFICDT": None, "ENRLDT": None, "TRTSDT": None, "DOSEP": None}], DOSES),
        transgene_svg([], DOSES),
        transgene_svg([{"SUBJID": "01-001", "ADY": 0, "AVAL": 0.0, "BLQFL": "Y", "LLOQ": None, "DOSEA": "DL1"}], DOSES),
        swimmer_svg([], ADRS, DOSES),
        swimmer_svg([], [], []),
    ],
)
def test_empty_inputs_give_a_readable_figure(svg):
    root = parse(svg)
    assert texts(root) == [EMPTY_TEXT]


def _db() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(":memory:")
    con.execute("CREATE SCHEMA analysis")
    con.execute("CREATE TABLE analysis.dose_levels AS SELECT * FROM (VALUES ('DL2', 2, '1x10^9 cells', 1e9), "
                "('DL1', 1, '5x10^8 cells', 5e8)) t(DOSE, DOSEN, DOSELBL, CELLS)")
    con.execute("CREATE TABLE analysis.adsl AS SELECT * FROM (VALUES ('01-002', DATE '2024-06-02', NULL::DATE, NULL::DATE, "
                "NULL, NULL), ('01-001', DATE '2024-06-01', DATE '2024-06-05', DATE '2024-07-01', 'DL1', 'DL1')) "
                "t(SUBJID, RFICDT, ENRLDT, TRTSDT, DOSEP, DOSEA)")
    con.execute("CREATE TABLE analysis.adpc AS SELECT * FROM (VALUES ('01-001', 7, 100.0, 'N', 50.0, 'DL1', DATE '2024-07-08', 'D7'), "
                "('01-001', 0, 0.0, 'Y', 50.0, 'DL1', DATE '2024-07-01', 'D0')) t(SUBJID, ADY, AVAL, BLQFL, LLOQ, DOSEA, PCDAT, PCTPT)")
    return con


def test_load_figure_data_tolerates_missing_response_tables():
    con = _db()
    data = load_figure_data(con, data_cut="2024-12-31")
    assert [r["DOSE"] for r in data.dose_levels] == ["DL1", "DL2"]
    assert [r["SUBJID"] for r in data.adsl] == ["01-001", "01-002"]
    assert [r["ADY"] for r in data.adpc] == [0, 7]
    assert data.response == [] and data.adrs == [] and data.missing == ["response", "adrs"]
    assert data.data_cut == dt.date(2024, 12, 31)
    figs = render_figures(data)
    assert texts(parse(figs["swimmer"])) == [EMPTY_TEXT]
    assert EMPTY_TEXT not in figs["accrual"] and EMPTY_TEXT not in figs["transgene"]


def test_load_figure_data_reads_response_tables():
    con = _db()
    con.execute("CREATE TABLE analysis.response AS SELECT * FROM (VALUES ('01-001', 'DL1', 1, DATE '2024-07-01', 'SD', "
                "DATE '2024-10-01', 92, NULL::DATE, NULL::BIGINT, NULL, 'Y')) "
                "t(SUBJID, DOSEA, DOSEAN, TRTSDT, BOR, LSTCNDT, LSTCNDY, DTHDT, DTHDY, EOSSTT, ONGOING)")
    con.execute("CREATE TABLE analysis.adrs AS SELECT * FROM (VALUES ('01-001', 'D28', DATE '2024-07-29', 28, 'SD')) "
                "t(SUBJID, VISIT, RSDAT, ADY, AVALC)")
    data = load_figure_data(con)
    assert data.missing == [] and len(data.response) == 1 and len(data.adrs) == 1
    root = parse(render_figures(data)["swimmer"])
    assert len([r for r in root.iter(f"{SVG}rect") if r.get("class") == "bar"]) == 1


def test_transgene_day_axis_widens_the_first_28_days_of_a_long_follow_up():
    scale, ticks = transgene_day_scale(0, 184, 0.0, 400.0)
    assert scale.pivot == 28 and scale(0) == 0 and scale(28) == pytest.approx(200) and scale(ticks[-1]) == pytest.approx(400)
    assert ticks[:5] == [0, 7, 14, 21, 28] and ticks[-1] >= 184
    assert all(a < b for a, b in itertools.pairwise(ticks))
    short, ticks = transgene_day_scale(0, 29, 0.0, 400.0)
    assert short.pivot is None and short(ticks[-1]) == pytest.approx(400)


def test_swimmer_keeps_to_a_page():
    many = [{"SUBJID": f"01-{i:03d}", "DOSEA": "DL1", "BOR": "SD", "LSTCNDY": i, "DTHDY": None, "ONGOING": "N"}
            for i in range(100)]
    root = parse(swimmer_svg(many, [], DOSES, max_rows=60))
    assert len([r for r in root.iter(f"{SVG}rect") if r.get("class") == "bar"]) == 60
    assert any(t.startswith("Showing 60 of 100 infused participants") for t in texts(root))
    ids = [g.get("data-subjid") for g in root.iter(f"{SVG}g") if g.get("class") == "participant"]
    assert ids[0] == "01-099" and ids[-1] == "01-040"  # longest first


def test_transgene_figure_summarises_many_participants_as_medians_per_dose():
    """Beyond MAX_TRANSGENE_PARTICIPANTS the figure draws one median profile per dose level."""
    import duckdb

    from deliverables import figures as fg

    con = duckdb.connect()
    con.execute("CREATE SCHEMA analysis")
    con.execute("""CREATE TABLE analysis.adpc AS
        SELECT printf('%03d', s) AS SUBJID, CASE WHEN s % 2 = 0 THEN 'DL1' ELSE 'DL2' END AS DOSEA,
               t.PCTPT, t.ADY, CASE WHEN s % 2 = 0 THEN 100.0 ELSE 1000.0 END * t.f AS AVAL, 'N' AS BLQFL,
               50.0 AS LLOQ, DATE '2025-01-01' + t.ADY AS PCDAT
        FROM range(1, 71) r(s), (VALUES ('D1', 1, 1.0), ('D7', 7, 10.0)) t(PCTPT, ADY, f)""")
    data = fg.load_figure_data(con)
    assert data.transgene_median_of == {"DL1": 35, "DL2": 35}
    assert [(r["SUBJID"], r["ADY"], r["AVAL"]) for r in data.adpc] == [
        ("DL1 median", 1, 100.0), ("DL1 median", 7, 1000.0), ("DL2 median", 1, 1000.0), ("DL2 median", 7, 10000.0)]
    svg = fg.render_figures(data)["transgene"]
    assert "median of n=35" in svg and svg.count("<polyline") <= 4


def test_swimmer_beyond_a_page_shows_every_dose_level():
    from deliverables import figures as fg

    doses = [{"DOSE": f"DL{i}", "DOSEN": i, "DOSELBL": f"{i}", "CELLS": i * 1e8} for i in (1, 2, 3)]
    rows = [{"SUBJID": f"{d}-{k:03d}", "DOSEA": d, "LSTCNDY": k, "DTHDY": None, "ONGOING": "Y", "BOR": "SD"}
            for d, n in (("DL1", 100), ("DL2", 100), ("DL3", 5)) for k in range(n)]
    svg = fg.swimmer_svg(rows, [], doses, max_rows=40)
    shown = {d: sum(f">{d}-" in svg for _ in [0]) for d in ("DL1", "DL2", "DL3")}
    assert all(shown.values())
    # 40 rows: DL3 has 5, the other 35 split 18 / 17 between DL1 and DL2, longest on study first.
    assert svg.count(">DL1-") == 18 and svg.count(">DL2-") == 17 and svg.count(">DL3-") == 5
    assert ">DL1-099<" in svg and ">DL1-081<" not in svg
    assert "Showing 40 of 205 infused participants: the longest on study of each dose level." in svg
