"""Toxicity grading: CTCAE laboratory grades and ASTCT CRS / ICANS grades.

Pure functions (no database), plus SQL generated from the **same** tables, so the Python and the
DuckDB versions cannot drift (tests/test_grading.py checks that they agree on a grid of values).
Reference: domain.md sections 2.1-2.3; pharmaverse/admiral ``data-raw/adlb_grading/ncictcaev5.json``
and ``ncictcaev6.json`` (the rule order and the missing-value rules below follow admiral's).

CTCAE laboratory grades (``CTCAE_LAB``, :func:`ctcae_lab_grade`, :func:`ctcae_grade_sql`)
--------------------------------------------------------------------------------------------
One table of cut-points per CTCAE version and test. Each test's cut-points are tried from the most
severe down and the first that matches gives the grade; none matching gives grade 0. Boundaries are
as CTCAE writes them: "<LLN - 1.5" for grade 1 and "<1.5 - 1.0" for grade 2 mean
1.5 <= x < LLN is grade 1 and 1.0 <= x < 1.5 is grade 2; ">ULN - 3.0 x ULN" means ULN < x <= 3 ULN.

  Decreased (x10^9/L; HGB g/L)  G1            G2          G3          G4
  NEUT (v5.0)                   <LLN-1.5      <1.5-1.0    <1.0-0.5    <0.5
  NEUT (v6.0)                   <1.5-1.0      <1.0-0.5    <0.5-0.1    <0.1     (no LLN needed)
  PLAT                          <LLN-75       <75-50      <50-25      <25
  HGB                           <LLN-100      <100-80     <80         -  (G4 is clinical, not a lab value)
  LYM                           <LLN-0.8      <0.8-0.5    <0.5-0.2    <0.2
  WBC                           <LLN-3.0      <3.0-2.0    <2.0-1.0    <1.0

  Increased (x ULN; baseline normal)   G1          G2          G3          G4
  ALT, AST                             >ULN-3.0    >3.0-5.0    >5.0-20.0   >20.0
  BILI                                 >ULN-1.5    >1.5-3.0    >3.0-10.0   >10.0
  CREAT                                >ULN-1.5    >1.5-3.0    >3.0-6.0    >6.0
  (CREAT grade 2 also >1.5-3.0 x baseline, grade 3 also >3.0 x baseline)

Baseline: for ALT, AST and BILI an abnormal baseline (baseline value above the ULN) switches to
multiples of the baseline value (v5.0: ALT/AST G1 >=1.5x, G2 >3x, G3 >5x, G4 >20x baseline;
BILI G1 >1.0x, G2 >1.5x, G3 >3x, G4 >10x baseline). CREAT grades 2-3 are met by the ULN or by
the baseline multiple. CTCAE v6.0 changes the neutrophil grades (domain.md note) and, per
admiral's v6.0 metadata, the baseline-abnormal multiples of ALT/AST (G1 >=1.0x, G2 >1.5x, G3 >2x,
G4 >4x) and BILI (G1 >=1.0x, G2 >1.5x, G3 >2.5x, G4 >10x), and CREAT uses baseline multiples only
when the baseline was below the LLN; the other tests are unchanged.

Missing values: no value -> None. A limit a grade needs that is missing -> None: the decreased
tests need the LLN only to tell grade 1 from grade 0 (a value below the fixed grade 2 cut-point is
graded without it); ALT, AST and BILI need the ULN for every grade; CREAT needs the ULN for grades
4, 1 and 0, and can still reach grades 2-3 from the baseline. A missing baseline means "baseline
normal". As in admiral, the fixed cut-points win over the LLN (NEUT 1.4 with LLN 1.3 is grade 2),
and both sides of every comparison are rounded to 12 significant digits, so that 3 x 0.7 equals 2.1.
Tests without a rule here (LYMPCT, CRCL, PT) are not gradable: None. Units are the CRF contract's
(clinical/crf.py): counts in 10^9/L, HGB in g/L.

ASTCT consensus grades (Lee et al. 2019)
----------------------------------------
CRS (:func:`astct_crs_grade`): fever >= 38 C is required, unless tocilizumab or steroids were given,
after which hypotension/hypoxia alone grade it. The grade is the more severe of hypotension (no
vasopressor G2, one vasopressor +/- vasopressin G3, multiple G4) and hypoxia (low flow <= 6 L/min G2,
high flow / facemask G3, positive pressure G4); fever with neither is G1. No fever and no treatment,
or treatment with neither hypotension nor hypoxia, is 0 (no CRS criteria recorded). A missing
item counts as absent.
ICANS (:func:`astct_icans_grade`): the most severe domain: ICE 7-9 G1, 3-6 G2, 0-2 G3; consciousness
awakens spontaneously G1 / to voice G2 / only to touch G3 / unarousable G4; seizure rapidly resolving
G3, prolonged or repetitive G4; deep focal motor weakness G4; cerebral oedema focal G3, diffuse G4.
ICE 10 with nothing else is 0. A missing item counts as absent.
Grade 5 (death) is not in these functions: the caller sets it from the AE outcome.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from clinical import crf

CTCAE_VERSIONS = ("5.0", "6.0")
SIGNIF_DIGITS = 12

Ref = Literal["ABS", "LLN", "ULN", "BASE"]
When = Literal["ALWAYS", "BASE_HIGH", "BASE_NOT_HIGH", "BASE_LOW", "BASE_NOT_LOW"]


@dataclass(frozen=True)
class Cut:
    """One cut-point: ``value <op> factor * ref`` gives ``grade`` (ref "ABS": the factor itself)."""

    grade: int
    op: Literal["<", ">", ">="]
    factor: float
    ref: Ref = "ABS"
    when: When = "ALWAYS"  # baseline condition under which the cut-point applies
    if_missing: Literal["skip", "null"] = "skip"  # ref missing: try the next cut-point, or no grade


@dataclass(frozen=True)
class LabGrading:
    test: str
    term: str  # CTCAE term
    direction: Literal["L", "H"]  # decreased / increased
    unit: str
    cuts: tuple[Cut, ...]  # most severe first; first match wins; no match -> grade 0
    requires: tuple[Ref, ...] = ()  # limits without which no grade at all


def _decreased(
    test: str, term: str, unit: str, fixed: tuple[tuple[int, float], ...], lln_grade1: bool = True
) -> LabGrading:
    cuts = tuple(Cut(g, "<", v) for g, v in fixed)
    if lln_grade1:
        cuts += (Cut(1, "<", 1.0, "LLN", if_missing="null"),)
    return LabGrading(test, term, "L", unit, cuts)


def _uln_or_baseline(
    test: str, term: str, uln_x: tuple[float, float, float, float], base_x: tuple[tuple[float, Literal[">", ">="]], ...]
) -> LabGrading:
    """ALT/AST/BILI: multiples of the ULN (baseline normal) or of the baseline (baseline above ULN).

    ``uln_x`` are the G4, G3, G2, G1 multipliers of the ULN (all ">"); ``base_x`` the G4..G1
    (multiplier, operator) of the baseline: G1 is ">=" where CTCAE writes "1.5 - 3.0 x baseline" and
    ">" where it writes ">1.0 - 1.5 x baseline" (bilirubin v5.0)."""
    cuts: list[Cut] = []
    for i, grade in enumerate((4, 3, 2, 1)):
        cuts.append(Cut(grade, ">", uln_x[i], "ULN", "BASE_NOT_HIGH"))
        factor, op = base_x[i]
        cuts.append(Cut(grade, op, factor, "BASE", "BASE_HIGH"))
    return LabGrading(test, term, "H", "", tuple(cuts), requires=("ULN",))


_COMMON: dict[str, LabGrading] = {
    "PLAT": _decreased("PLAT", "Platelet count decreased", "10^9/L", ((4, 25.0), (3, 50.0), (2, 75.0))),
    "HGB": _decreased("HGB", "Anemia", "g/L", ((3, 80.0), (2, 100.0))),
    "LYM": _decreased("LYM", "Lymphocyte count decreased", "10^9/L", ((4, 0.2), (3, 0.5), (2, 0.8))),
    "WBC": _decreased("WBC", "White blood cell decreased", "10^9/L", ((4, 1.0), (3, 2.0), (2, 3.0))),
}

_V5: dict[str, LabGrading] = {
    "NEUT": _decreased("NEUT", "Neutrophil count decreased", "10^9/L", ((4, 0.5), (3, 1.0), (2, 1.5))),
    **_COMMON,
    "ALT": _uln_or_baseline("ALT", "Alanine aminotransferase increased", (20.0, 5.0, 3.0, 1.0),
                            ((20.0, ">"), (5.0, ">"), (3.0, ">"), (1.5, ">="))),
    "AST": _uln_or_baseline("AST", "Aspartate aminotransferase increased", (20.0, 5.0, 3.0, 1.0),
                            ((20.0, ">"), (5.0, ">"), (3.0, ">"), (1.5, ">="))),
    "BILI": _uln_or_baseline("BILI", "Blood bilirubin increased", (10.0, 3.0, 1.5, 1.0),
                             ((10.0, ">"), (3.0, ">"), (1.5, ">"), (1.0, ">"))),
    "CREAT": LabGrading(
        "CREAT", "Creatinine increased", "H", "",
        (
            Cut(4, ">", 6.0, "ULN"),
            Cut(3, ">", 3.0, "ULN"),
            Cut(3, ">", 3.0, "BASE"),
            Cut(2, ">", 1.5, "ULN"),
            Cut(2, ">", 1.5, "BASE"),
            Cut(1, ">", 1.0, "ULN", if_missing="null"),
        ),
    ),
}

_V6: dict[str, LabGrading] = {
    **_V5,
    "NEUT": _decreased("NEUT", "Neutrophil count decreased", "10^9/L",
                       ((4, 0.1), (3, 0.5), (2, 1.0), (1, 1.5)), lln_grade1=False),
    "ALT": _uln_or_baseline("ALT", "Alanine aminotransferase increased", (20.0, 5.0, 3.0, 1.0),
                            ((4.0, ">"), (2.0, ">"), (1.5, ">"), (1.0, ">="))),
    "AST": _uln_or_baseline("AST", "Aspartate aminotransferase increased", (20.0, 5.0, 3.0, 1.0),
                            ((4.0, ">"), (2.0, ">"), (1.5, ">"), (1.0, ">="))),
    "BILI": _uln_or_baseline("BILI", "Blood bilirubin increased", (10.0, 3.0, 1.5, 1.0),
                             ((10.0, ">"), (2.5, ">"), (1.5, ">"), (1.0, ">="))),
    "CREAT": LabGrading(
        "CREAT", "Creatinine increased", "H", "",
        (
            Cut(4, ">", 6.0, "ULN"),
            Cut(3, ">", 3.0, "ULN", "BASE_NOT_LOW"),
            Cut(3, ">", 3.0, "BASE", "BASE_LOW"),
            Cut(2, ">", 1.5, "ULN", "BASE_NOT_LOW"),
            Cut(2, ">", 1.5, "BASE", "BASE_LOW"),
            Cut(1, ">", 1.0, "ULN", if_missing="null"),
        ),
    ),
}

# The one table of cut-points: version -> test -> grading rule.
CTCAE_LAB: dict[str, dict[str, LabGrading]] = {"5.0": _V5, "6.0": _V6}
GRADABLE_TESTS: tuple[str, ...] = tuple(_V5)
assert set(GRADABLE_TESTS) <= set(crf.LAB_TESTS), "graded tests must be CRF lab tests"


def _signif(x: float) -> float:
    if x == 0 or not math.isfinite(x):
        return x
    return round(x, SIGNIF_DIGITS - 1 - math.floor(math.log10(abs(x))))


def _condition(when: When, lln: float | None, uln: float | None, base: float | None) -> bool:
    high = base is not None and uln is not None and _signif(base) > _signif(uln)
    low = base is not None and lln is not None and _signif(base) < _signif(lln)
    return {
        "ALWAYS": True, "BASE_HIGH": high, "BASE_NOT_HIGH": not high, "BASE_LOW": low, "BASE_NOT_LOW": not low
    }[when]


def _compare(x: float, op: str, y: float) -> bool:
    return {"<": x < y, ">": x > y, ">=": x >= y}[op]


def range_unusable_sql(lln: str, uln: str) -> str:
    """SQL: TRUE when a normal range cannot be one -- the lower limit above the upper, or an upper limit
    <= 0. Such a range grades as no range (both limits missing) and is queried (XF-LB-RANGE-ORDER)."""
    return f"(({lln}) > ({uln}) OR ({uln}) <= 0)"


def _range_unusable(lln: float | None, uln: float | None) -> bool:
    return (lln is not None and uln is not None and lln > uln) or (uln is not None and uln <= 0)


def ctcae_lab_grade(
    test: str,
    value: float | None,
    lln: float | None,
    uln: float | None,
    version: str = "5.0",
    baseline: float | None = None,
) -> int | None:
    """CTCAE grade (0-4) of one lab value; None when not gradable (see the module docstring)."""
    if version not in CTCAE_LAB:
        raise ValueError(f"unknown CTCAE version {version!r}; expected one of {', '.join(CTCAE_VERSIONS)}")
    rule = CTCAE_LAB[version].get(test)
    if rule is None or value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if _range_unusable(lln, uln):
        lln = uln = None
    limits = {"LLN": lln, "ULN": uln, "BASE": baseline}
    if any(limits[r] is None for r in rule.requires):
        return None
    v = _signif(float(value))
    for cut in rule.cuts:
        if not _condition(cut.when, lln, uln, baseline):
            continue
        if cut.ref == "ABS":
            threshold = cut.factor
        else:
            ref = limits[cut.ref]
            if ref is None:
                if cut.if_missing == "null":
                    return None
                continue
            threshold = cut.factor * float(ref)
        if _compare(v, cut.op, _signif(threshold)):
            return cut.grade
    return 0


# --------------------------------------------------------------------------------------------------
# The same table as SQL


SIGNIF_MACRO_SQL = f"""
CREATE OR REPLACE MACRO ctcae_signif(x) AS
  CASE WHEN x IS NULL OR x = 0 OR isinf(x) OR isnan(x) THEN x
       ELSE round(x, ({SIGNIF_DIGITS - 1} - floor(log10(abs(x))))::INTEGER) END
"""


def _num(x: float) -> str:
    return f"CAST({float(x)!r} AS DOUBLE)"


def _cond_sql(when: When, lln: str, uln: str, base: str) -> str:
    high = f"({base} IS NOT NULL AND {uln} IS NOT NULL AND ctcae_signif({base}) > ctcae_signif({uln}))"
    low = f"({base} IS NOT NULL AND {lln} IS NOT NULL AND ctcae_signif({base}) < ctcae_signif({lln}))"
    return {"ALWAYS": "TRUE", "BASE_HIGH": high, "BASE_NOT_HIGH": f"NOT {high}", "BASE_LOW": low,
            "BASE_NOT_LOW": f"NOT {low}"}[when]


def _rule_sql(rule: LabGrading, aval: str, lln: str, uln: str, base: str) -> str:
    refs = {"LLN": lln, "ULN": uln, "BASE": base}
    whens = [f"WHEN {refs[r]} IS NULL THEN NULL" for r in rule.requires]
    for cut in rule.cuts:
        cond = _cond_sql(cut.when, lln, uln, base)
        if cut.ref == "ABS":
            whens.append(
                f"WHEN {cond} AND ctcae_signif({aval}) {cut.op} ctcae_signif({_num(cut.factor)}) THEN {cut.grade}"
            )
            continue
        ref = refs[cut.ref]
        if cut.if_missing == "null":
            whens.append(f"WHEN {cond} AND {ref} IS NULL THEN NULL")
        whens.append(
            f"WHEN {cond} AND {ref} IS NOT NULL "
            f"AND ctcae_signif({aval}) {cut.op} ctcae_signif({_num(cut.factor)} * {ref}) THEN {cut.grade}"
        )
    return "CASE " + " ".join(whens) + " ELSE 0 END"


def ctcae_grade_sql(test: str, version: str, aval: str, lln: str, uln: str, base: str) -> str:
    """A SQL CASE expression giving the CTCAE grade (INTEGER, NULL when not gradable).

    The arguments are SQL expressions (column names, macro parameters); the cut-points come from
    ``CTCAE_LAB``. Needs the ``ctcae_signif`` macro (:func:`create_ctcae_macros`)."""
    branches = []
    for ver, rules in CTCAE_LAB.items():
        for code, rule in rules.items():
            rule_sql = _rule_sql(rule, aval, lln, uln, base)
            branches.append(f"WHEN {version} = '{ver}' AND {test} = '{code}' THEN ({rule_sql})")
    return f"(CASE WHEN {aval} IS NULL OR isnan({aval}) THEN NULL {' '.join(branches)} ELSE NULL END)::INTEGER"


def create_ctcae_macros(con) -> None:  # con: duckdb.DuckDBPyConnection
    """Create ``ctcae_signif(x)`` and ``ctcae_grade(test, version, aval, lln, uln, base)`` in DuckDB."""
    con.execute(SIGNIF_MACRO_SQL)
    unusable = range_unusable_sql("p_lln", "p_uln")
    body = ctcae_grade_sql("p_test", "p_version", "p_aval", f"(CASE WHEN {unusable} THEN NULL ELSE p_lln END)",
                           f"(CASE WHEN {unusable} THEN NULL ELSE p_uln END)", "p_base")
    con.execute(f"CREATE OR REPLACE MACRO ctcae_grade(p_test, p_version, p_aval, p_lln, p_uln, p_base) AS {body}")


def ctcae_tests_reading(version: str, ref: Ref) -> tuple[str, ...]:
    """The tests whose grade (in ``version``) reads the limit ``ref`` ("LLN", "ULN" or "BASE"): in
    their required limits, a cut-point's reference or a baseline condition. For the other tests the
    grade is the same whatever that limit is (e.g. a baseline passed for NEUT changes nothing)."""
    conds = {"BASE_HIGH": ("BASE", "ULN"), "BASE_NOT_HIGH": ("BASE", "ULN"), "BASE_LOW": ("BASE", "LLN"),
             "BASE_NOT_LOW": ("BASE", "LLN"), "ALWAYS": ()}
    out = []
    for test, rule in CTCAE_LAB[version].items():
        reads = set(rule.requires)
        for cut in rule.cuts:
            reads.add(cut.ref)
            reads.update(conds[cut.when])
        if ref in reads:
            out.append(test)
    return tuple(out)


def ctcae_terms() -> list[tuple[str, str, str, str]]:
    """(test, CTCAE term, direction L/H, unit) of every gradable test, in table order."""
    return [(r.test, r.term, r.direction, r.unit) for r in _V5.values()]


# --------------------------------------------------------------------------------------------------
# ASTCT CRS and ICANS

CRS_HYPOTENSION_GRADE: dict[str, int] = {
    "NONE": 0, "NO VASOPRESSOR": 2, "ONE VASOPRESSOR": 3, "MULTIPLE VASOPRESSORS": 4
}
CRS_HYPOXIA_GRADE: dict[str, int] = {"NONE": 0, "LOW FLOW": 2, "HIGH FLOW": 3, "POSITIVE PRESSURE": 4}
ICANS_CONSCIOUSNESS_GRADE: dict[str, int] = {
    "NORMAL": 0,
    "AWAKENS SPONTANEOUSLY": 1,
    "AWAKENS TO VOICE": 2,
    "AWAKENS TO TACTILE STIMULUS": 3,
    "UNAROUSABLE": 4,
}
ICANS_SEIZURE_GRADE: dict[str, int] = {"NONE": 0, "RAPIDLY RESOLVING": 3, "PROLONGED OR REPETITIVE": 4}
ICANS_OEDEMA_GRADE: dict[str, int] = {"NONE": 0, "FOCAL": 3, "DIFFUSE": 4}
ICANS_MOTOR_GRADE = 4  # deep focal motor weakness
ICE_GRADE: tuple[tuple[int, int, int], ...] = ((10, 10, 0), (7, 9, 1), (3, 6, 2), (0, 2, 3))  # (lo, hi, grade)

for _table, _codelist in (
    (CRS_HYPOTENSION_GRADE, crf.HYPOTENSION),
    (CRS_HYPOXIA_GRADE, crf.HYPOXIA),
    (ICANS_CONSCIOUSNESS_GRADE, crf.CONSCIOUSNESS),
    (ICANS_SEIZURE_GRADE, crf.SEIZURE),
    (ICANS_OEDEMA_GRADE, crf.CEREBRAL_OEDEMA),
):
    assert list(_table) == list(_codelist), f"grading table {list(_table)} differs from the CRF codelist {_codelist}"


def _lookup(table: dict[str, int], value: str | None, item: str) -> int:
    if value is None:
        return 0
    try:
        return table[value]
    except KeyError:
        raise ValueError(f"{item}: {value!r} is not in the CRF codelist {list(table)}") from None


def _ice_grade(ice: int | None) -> int:
    if ice is None:
        return 0
    for lo, hi, grade in ICE_GRADE:
        if lo <= ice <= hi:
            return grade
    raise ValueError(f"ICE score {ice!r} is outside 0-10")


def astct_crs_grade(
    fever: bool | None,
    hypotension: str | None,
    hypoxia: str | None,
    tocilizumab_or_steroid_given: bool = False,
) -> int:
    """ASTCT CRS grade 0-4 from the CRF items (AEFEVER, AEHYPOT, AEHYPOX) and anti-cytokine treatment."""
    organ = max(
        _lookup(CRS_HYPOTENSION_GRADE, hypotension, "hypotension"),
        _lookup(CRS_HYPOXIA_GRADE, hypoxia, "hypoxia"),
    )
    if fever is True:
        return max(1, organ)
    if tocilizumab_or_steroid_given:
        return organ
    return 0


def astct_icans_grade(
    ice: int | None,
    consciousness: str | None,
    seizure: str | None,
    motor: bool | None,
    oedema: str | None,
) -> int:
    """ASTCT ICANS grade 0-4 (adults): the most severe of the five domains."""
    return max(
        _ice_grade(ice),
        _lookup(ICANS_CONSCIOUSNESS_GRADE, consciousness, "consciousness"),
        _lookup(ICANS_SEIZURE_GRADE, seizure, "seizure"),
        ICANS_MOTOR_GRADE if motor is True else 0,
        _lookup(ICANS_OEDEMA_GRADE, oedema, "cerebral oedema"),
    )


def _lookup_sql(table: dict[str, int], expr: str, item: str) -> str:
    whens = " ".join(f"WHEN '{k}' THEN {v}" for k, v in table.items())
    bad = f"error('{item}: not in the CRF codelist: ' || {expr})"
    return f"(CASE WHEN {expr} IS NULL THEN 0 ELSE CASE {expr} {whens} ELSE {bad} END END)"


def crs_grade_sql(fever: str, hypotension: str, hypoxia: str, treated: str) -> str:
    """SQL for :func:`astct_crs_grade`; ``fever`` is a 'Y'/'N' column, ``treated`` a boolean expression."""
    organ = (
        f"greatest({_lookup_sql(CRS_HYPOTENSION_GRADE, hypotension, 'hypotension')}, "
        f"{_lookup_sql(CRS_HYPOXIA_GRADE, hypoxia, 'hypoxia')})"
    )
    return (
        f"(CASE WHEN {fever} = 'Y' THEN greatest(1, {organ}) "
        f"WHEN coalesce({treated}, FALSE) THEN {organ} ELSE 0 END)::INTEGER"
    )


def icans_grade_sql(ice: str, consciousness: str, seizure: str, motor: str, oedema: str) -> str:
    """SQL for :func:`astct_icans_grade`; ``motor`` is a 'Y'/'N' column."""
    ice_whens = " ".join(f"WHEN {ice} BETWEEN {lo} AND {hi} THEN {g}" for lo, hi, g in ICE_GRADE)
    ice_sql = f"(CASE WHEN {ice} IS NULL THEN 0 {ice_whens} ELSE error('ICE score outside 0-10: ' || {ice}) END)"
    return (
        f"greatest({ice_sql}, {_lookup_sql(ICANS_CONSCIOUSNESS_GRADE, consciousness, 'consciousness')}, "
        f"{_lookup_sql(ICANS_SEIZURE_GRADE, seizure, 'seizure')}, "
        f"(CASE WHEN {motor} = 'Y' THEN {ICANS_MOTOR_GRADE} ELSE 0 END), "
        f"{_lookup_sql(ICANS_OEDEMA_GRADE, oedema, 'cerebral oedema')})::INTEGER"
    )
