"""CTCAE lab grading at every cut-point, ASTCT CRS/ICANS tables, and Python/SQL agreement
(clinical/grading.py; domain.md sections 2.1-2.3, admiral ncictcaev5/v6 metadata)."""

from __future__ import annotations

import itertools

import duckdb
import pytest

from clinical import crf
from clinical.grading import (
    CTCAE_LAB,
    GRADABLE_TESTS,
    astct_crs_grade,
    astct_icans_grade,
    create_ctcae_macros,
    crs_grade_sql,
    ctcae_lab_grade,
    icans_grade_sql,
)

# ---- CTCAE v5.0: decreased tests (test, LLN, [(value, grade)]) -----------------------------------

DECREASED_V5 = [
    ("NEUT", 2.0, [(2.5, 0), (2.0, 0), (1.99, 1), (1.5, 1), (1.49, 2), (1.0, 2), (0.99, 3), (0.5, 3), (0.49, 4), (0.0, 4)]),
    ("PLAT", 150.0, [(150, 0), (149.9, 1), (75, 1), (74.9, 2), (50, 2), (49.9, 3), (25, 3), (24.9, 4), (0, 4)]),
    ("HGB", 120.0, [(120, 0), (119, 1), (100, 1), (99.9, 2), (80, 2), (79.9, 3), (10, 3)]),  # no lab G4
    ("LYM", 1.0, [(1.0, 0), (0.99, 1), (0.8, 1), (0.79, 2), (0.5, 2), (0.49, 3), (0.2, 3), (0.19, 4)]),
    ("WBC", 3.5, [(3.5, 0), (3.49, 1), (3.0, 1), (2.99, 2), (2.0, 2), (1.99, 3), (1.0, 3), (0.99, 4)]),
]


@pytest.mark.parametrize("test,lln,cases", DECREASED_V5, ids=[c[0] for c in DECREASED_V5])
def test_v5_decreased_cut_points(test, lln, cases):
    for value, grade in cases:
        assert ctcae_lab_grade(test, value, lln, None, "5.0") == grade, (test, value)


@pytest.mark.parametrize("test,first_fixed", [("NEUT", 1.5), ("PLAT", 75.0), ("HGB", 100.0), ("LYM", 0.8), ("WBC", 3.0)])
def test_v5_decreased_missing_lln(test, first_fixed):
    # Grade 1 vs 0 needs the LLN; below the fixed grade-2 cut-point the LLN is not needed.
    assert ctcae_lab_grade(test, first_fixed, None, None) is None
    assert ctcae_lab_grade(test, first_fixed * 10, None, None) is None
    assert ctcae_lab_grade(test, first_fixed * 0.999, None, None) == 2


def test_fixed_cut_point_wins_over_a_low_lln():
    # admiral order: NEUT 1.4 with LLN 1.3 is grade 2 (<1.5), not 0.
    assert ctcae_lab_grade("NEUT", 1.4, 1.3, None) == 2


def test_missing_value_is_none_for_every_test():
    for version, test in itertools.product(("5.0", "6.0"), GRADABLE_TESTS):
        assert ctcae_lab_grade(test, None, 1.0, 1.0, version, 1.0) is None


def test_not_gradable_tests_and_unknown_version():
    for test in ("LYMPCT", "CRCL", "PT"):
        assert ctcae_lab_grade(test, 1.0, 0.5, 2.0) is None
    with pytest.raises(ValueError, match="CTCAE version"):
        ctcae_lab_grade("NEUT", 1.0, 2.0, None, "4.03")


# ---- CTCAE v5.0: increased tests -----------------------------------------------------------------


@pytest.mark.parametrize("test,uln", [("ALT", 40.0), ("AST", 35.0)])
def test_v5_transaminases_baseline_normal(test, uln):
    cases = [(uln, 0), (uln + 0.1, 1), (3 * uln, 1), (3 * uln + 0.1, 2), (5 * uln, 2), (5 * uln + 0.1, 3),
             (20 * uln, 3), (20 * uln + 0.1, 4), (10.0, 0)]
    for value, grade in cases:
        assert ctcae_lab_grade(test, value, None, uln) == grade, (test, value)
        assert ctcae_lab_grade(test, value, None, uln, baseline=uln) == grade  # baseline = ULN is normal
    assert ctcae_lab_grade(test, 1000.0, None, None) is None  # ULN needed for every grade


@pytest.mark.parametrize("test", ["ALT", "AST"])
def test_v5_transaminases_baseline_abnormal(test):
    uln, base = 40.0, 60.0  # baseline above ULN: multiples of baseline
    cases = [(89.9, 0), (90, 1), (180, 1), (180.1, 2), (300, 2), (300.1, 3), (1200, 3), (1200.1, 4)]
    for value, grade in cases:
        assert ctcae_lab_grade(test, value, None, uln, "5.0", base) == grade, value


def test_v5_bilirubin():
    uln = 21.0
    for value, grade in [(21, 0), (21.1, 1), (31.5, 1), (31.6, 2), (63, 2), (63.1, 3), (210, 3), (210.1, 4)]:
        assert ctcae_lab_grade("BILI", value, None, uln) == grade, value
    base = 30.0  # abnormal baseline: >1.0, >1.5, >3, >10 x baseline
    for value, grade in [(30, 0), (30.1, 1), (45, 1), (45.1, 2), (90, 2), (90.1, 3), (300, 3), (300.1, 4)]:
        assert ctcae_lab_grade("BILI", value, None, uln, "5.0", base) == grade, value
    assert ctcae_lab_grade("BILI", 500.0, None, None) is None


def test_v5_creatinine():
    uln = 100.0
    for value, grade in [(100, 0), (100.1, 1), (150, 1), (150.1, 2), (300, 2), (300.1, 3), (600, 3), (600.1, 4)]:
        assert ctcae_lab_grade("CREAT", value, None, uln) == grade, value
    # grades 2-3 also from the baseline multiple
    assert ctcae_lab_grade("CREAT", 60.0, None, uln, baseline=40.0) == 0
    assert ctcae_lab_grade("CREAT", 60.1, None, uln, baseline=40.0) == 2
    assert ctcae_lab_grade("CREAT", 120.0, None, uln, baseline=40.0) == 2
    assert ctcae_lab_grade("CREAT", 120.1, None, uln, baseline=40.0) == 3
    # ULN missing: the baseline can still give 2-3; grades 1/0 (and 4) need the ULN
    assert ctcae_lab_grade("CREAT", 130.0, None, None, baseline=40.0) == 3
    assert ctcae_lab_grade("CREAT", 70.0, None, None, baseline=40.0) == 2
    assert ctcae_lab_grade("CREAT", 50.0, None, None, baseline=40.0) is None
    assert ctcae_lab_grade("CREAT", 1000.0, None, None) is None


def test_cut_points_compare_at_12_significant_digits():
    # 3 x 0.7 is 2.0999999999999996 in binary; CTCAE ">1.5 - 3.0 x ULN" puts exactly 3 x ULN in G2.
    assert ctcae_lab_grade("CREAT", 2.1, None, 0.7) == 2
    assert ctcae_lab_grade("CREAT", 2.1000001, None, 0.7) == 3


# ---- CTCAE v6.0 ----------------------------------------------------------------------------------


def test_v6_neutrophils():
    cases = [(3.0, 0), (1.5, 0), (1.49, 1), (1.0, 1), (0.99, 2), (0.5, 2), (0.49, 3), (0.1, 3), (0.09, 4), (0.0, 4)]
    for value, grade in cases:
        assert ctcae_lab_grade("NEUT", value, None, None, "6.0") == grade, value  # no LLN needed
        assert ctcae_lab_grade("NEUT", value, 2.0, None, "6.0") == grade, value
    # the other decreased tests are unchanged
    assert ctcae_lab_grade("PLAT", 74.9, 150.0, None, "6.0") == 2


def test_v6_baseline_abnormal_liver_and_creatinine():
    uln, base = 40.0, 60.0
    for value, grade in [(59.9, 0), (60, 1), (90, 1), (90.1, 2), (120, 2), (120.1, 3), (240, 3), (240.1, 4)]:
        assert ctcae_lab_grade("ALT", value, None, uln, "6.0", base) == grade, value
    assert ctcae_lab_grade("ALT", 120.1, None, uln, "6.0", 30.0) == 2  # baseline normal: ULN multiples
    for value, grade in [(30, 1), (45.1, 2), (75, 2), (75.1, 3), (300.1, 4)]:
        assert ctcae_lab_grade("BILI", value, None, 21.0, "6.0", 30.0) == grade, value
    # creatinine: baseline multiples only when the baseline is below the LLN
    assert ctcae_lab_grade("CREAT", 60.1, 50.0, 100.0, "6.0", 40.0) == 2
    assert ctcae_lab_grade("CREAT", 120.1, 50.0, 100.0, "6.0", 40.0) == 3
    assert ctcae_lab_grade("CREAT", 91.0, 50.0, 100.0, "6.0", 60.0) == 0
    assert ctcae_lab_grade("CREAT", 91.0, 50.0, 100.0, "5.0", 60.0) == 2  # v5: >1.5 x baseline


# ---- Python and SQL agree --------------------------------------------------------------------------

LIMITS = {  # typical (LLN, ULN) per test
    "NEUT": (2.0, 7.5), "PLAT": (150.0, 400.0), "HGB": (120.0, 160.0), "LYM": (1.0, 3.2), "WBC": (3.5, 9.5),
    "ALT": (7.0, 40.0), "AST": (13.0, 35.0), "BILI": (3.4, 21.0), "CREAT": (0.5, 0.7),
}


def _grid(version: str, test: str) -> list[tuple]:
    lln0, uln0 = LIMITS[test]
    bases = [None, lln0 * 0.8, (lln0 + uln0) / 2, uln0 * 1.5]
    rows = []
    for lln, uln, base in itertools.product([None, lln0], [None, uln0], bases):
        anchors = {0.0}
        for cut in CTCAE_LAB[version][test].cuts:
            ref = {"ABS": 1.0, "LLN": lln, "ULN": uln, "BASE": base}[cut.ref]
            if ref is not None:
                anchors.add(cut.factor * ref)
        for lim in (lln, uln, base):
            if lim is not None:
                anchors.add(lim)
        values = {None}
        for a in anchors:
            values |= {a, a * 0.999, a * 1.001, a + 1e-9}
        rows += [(test, version, v, lln, uln, base) for v in values]
    return rows


def test_sql_macro_agrees_with_python_on_a_grid():
    con = duckdb.connect()
    create_ctcae_macros(con)
    rows = [r for version in CTCAE_LAB for test in GRADABLE_TESTS for r in _grid(version, test)]
    rows += [("CRCL", "5.0", 50.0, 60.0, None, None), ("NEUT", "4.03", 0.1, 2.0, None, None)]
    con.execute("CREATE TABLE g (test VARCHAR, version VARCHAR, aval DOUBLE, lln DOUBLE, uln DOUBLE, base DOUBLE)")
    con.executemany("INSERT INTO g VALUES (?, ?, ?, ?, ?, ?)", rows)
    got = con.execute(
        "SELECT test, version, aval, lln, uln, base, ctcae_grade(test, version, aval, lln, uln, base) FROM g"
    ).fetchall()
    assert len(got) == len(rows) > 5000
    mismatches = []
    for test, version, aval, lln, uln, base, sql_grade in got:
        py = None if version == "4.03" else ctcae_lab_grade(test, aval, lln, uln, version, base)
        if py != sql_grade:
            mismatches.append((test, version, aval, lln, uln, base, py, sql_grade))
    assert not mismatches, mismatches[:10]
    assert {g for *_, g in got} >= {None, 0, 1, 2, 3, 4}


# ---- ASTCT CRS -----------------------------------------------------------------------------------

CRS_TABLE = [
    # (fever, hypotension, hypoxia, treated, grade)
    (True, "NONE", "NONE", False, 1),
    (True, None, None, False, 1),
    (True, "NO VASOPRESSOR", "NONE", False, 2),
    (True, "NONE", "LOW FLOW", False, 2),
    (True, "ONE VASOPRESSOR", "NONE", False, 3),
    (True, "NONE", "HIGH FLOW", False, 3),
    (True, "MULTIPLE VASOPRESSORS", "NONE", False, 4),
    (True, "NONE", "POSITIVE PRESSURE", False, 4),
    # the more severe domain wins
    (True, "ONE VASOPRESSOR", "LOW FLOW", False, 3),
    (True, "NO VASOPRESSOR", "HIGH FLOW", False, 3),
    (True, "NO VASOPRESSOR", "POSITIVE PRESSURE", False, 4),
    (True, "MULTIPLE VASOPRESSORS", "LOW FLOW", False, 4),
    # fever required unless tocilizumab/steroids were given
    (False, "ONE VASOPRESSOR", "LOW FLOW", False, 0),
    (None, "MULTIPLE VASOPRESSORS", "NONE", False, 0),
    (False, "ONE VASOPRESSOR", "LOW FLOW", True, 3),
    (False, "NO VASOPRESSOR", "NONE", True, 2),
    (None, "NONE", "POSITIVE PRESSURE", True, 4),
    (False, "NONE", "NONE", True, 0),
    (True, "NONE", "NONE", True, 1),
    (None, None, None, False, 0),
]


@pytest.mark.parametrize("fever,hypot,hypox,treated,grade", CRS_TABLE)
def test_astct_crs(fever, hypot, hypox, treated, grade):
    assert astct_crs_grade(fever, hypot, hypox, treated) == grade


def test_astct_crs_rejects_values_outside_the_codelist():
    with pytest.raises(ValueError, match="hypotension"):
        astct_crs_grade(True, "TWO VASOPRESSORS", "NONE")
    with pytest.raises(ValueError, match="hypoxia"):
        astct_crs_grade(True, "NONE", "CPAP")


# ---- ASTCT ICANS ---------------------------------------------------------------------------------

ICANS_TABLE = [
    # (ice, consciousness, seizure, motor, oedema, grade)
    (10, "NORMAL", "NONE", False, "NONE", 0),
    (None, None, None, None, None, 0),
    (9, None, None, None, None, 1),
    (7, None, None, None, None, 1),
    (6, None, None, None, None, 2),
    (3, None, None, None, None, 2),
    (2, None, None, None, None, 3),
    (0, None, None, None, None, 3),  # ICE 0, awake (e.g. global aphasia) -> G3
    (None, "AWAKENS SPONTANEOUSLY", None, None, None, 1),
    (None, "AWAKENS TO VOICE", None, None, None, 2),
    (None, "AWAKENS TO TACTILE STIMULUS", None, None, None, 3),
    (None, "UNAROUSABLE", None, None, None, 4),
    (None, None, "RAPIDLY RESOLVING", None, None, 3),
    (None, None, "PROLONGED OR REPETITIVE", None, None, 4),
    (None, None, None, True, None, 4),
    (None, None, None, None, "FOCAL", 3),
    (None, None, None, None, "DIFFUSE", 4),
    # the most severe domain wins
    (3, None, "RAPIDLY RESOLVING", None, None, 3),  # ICE 3 + seizure -> 3
    (0, "UNAROUSABLE", None, None, None, 4),  # ICE 0 + unarousable -> 4
    (8, "AWAKENS TO VOICE", "NONE", False, "NONE", 2),
    (5, "AWAKENS SPONTANEOUSLY", "NONE", False, "FOCAL", 3),
    (9, "NORMAL", "NONE", True, "NONE", 4),
    (10, "NORMAL", "NONE", False, "DIFFUSE", 4),
]


@pytest.mark.parametrize("ice,consc,seiz,motor,oedema,grade", ICANS_TABLE)
def test_astct_icans(ice, consc, seiz, motor, oedema, grade):
    assert astct_icans_grade(ice, consc, seiz, motor, oedema) == grade


def test_astct_icans_rejects_invalid_items():
    for ice in (-1, 11):
        with pytest.raises(ValueError, match="ICE"):
            astct_icans_grade(ice, None, None, None, None)
    with pytest.raises(ValueError, match="consciousness"):
        astct_icans_grade(10, "DROWSY", None, None, None)


def _yn(b):
    return None if b is None else ("Y" if b else "N")


def test_crs_and_icans_sql_agree_with_python_on_every_combination():
    con = duckdb.connect()
    crs_rows = list(itertools.product([True, False, None], crf.HYPOTENSION + [None], crf.HYPOXIA + [None], [True, False]))
    con.execute("CREATE TABLE c (fever VARCHAR, hypot VARCHAR, hypox VARCHAR, treated BOOLEAN)")
    con.executemany("INSERT INTO c VALUES (?, ?, ?, ?)", [(_yn(f), h, x, t) for f, h, x, t in crs_rows])
    got = con.execute(f"SELECT {crs_grade_sql('fever', 'hypot', 'hypox', 'treated')} FROM c").fetchall()
    assert [g for (g,) in got] == [astct_crs_grade(*r) for r in crs_rows]

    icans_rows = list(itertools.product(
        list(range(11)) + [None], crf.CONSCIOUSNESS + [None], crf.SEIZURE + [None], [True, False, None],
        crf.CEREBRAL_OEDEMA + [None]))
    con.execute("CREATE TABLE i (ice INTEGER, consc VARCHAR, seiz VARCHAR, motor VARCHAR, oedema VARCHAR)")
    con.executemany("INSERT INTO i VALUES (?, ?, ?, ?, ?)", [(a, b, c, _yn(d), e) for a, b, c, d, e in icans_rows])
    got = con.execute(f"SELECT {icans_grade_sql('ice', 'consc', 'seiz', 'motor', 'oedema')} FROM i").fetchall()
    assert [g for (g,) in got] == [astct_icans_grade(*r) for r in icans_rows]

    with pytest.raises(duckdb.Error, match="hypotension"):
        con.execute(f"SELECT {crs_grade_sql(repr('Y'), repr('TWO'), 'NULL', 'FALSE')}").fetchall()


@pytest.mark.parametrize(("lln", "uln"), [(9.0, 7.0), (None, 0.0), (0.0, -1.0)])
def test_a_range_that_cannot_be_one_grades_as_no_range_in_python_and_sql(lln, uln):
    """Lower limit above the upper, or an upper limit <= 0: the grader reads no range (as both limits
    missing), in the Python function and the DuckDB macro alike."""
    import duckdb

    from clinical.grading import create_ctcae_macros, ctcae_lab_grade

    con = duckdb.connect()
    create_ctcae_macros(con)
    for test, value in (("CREAT", 300.0), ("ALT", 400.0), ("NEUT", 0.4)):
        py = ctcae_lab_grade(test, value, lln, uln)
        assert py == ctcae_lab_grade(test, value, None, None), test
        sql = con.execute("SELECT ctcae_grade(?, '5.0', ?, ?, ?, NULL)", [test, value, lln, uln]).fetchone()[0]
        assert sql == py, test
