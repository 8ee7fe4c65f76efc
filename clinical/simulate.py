"""A realistic, deterministic simulator of the IM83 trial: raw CRF exports plus the ground truth.

``simulate(cfg, seed, data_cut)`` plays the whole trial from the seed, independently of the data
cut, and then cuts it at ``data_cut``. Everything study-specific comes from the study configuration
(dose levels, 3+3 variant, cohort size, DLT window, visit days, lymphodepletion agents, doses and
days, eligibility thresholds, PK LLOQ, CTCAE version); the export follows ``clinical.crf`` exactly.

Two modes:

* **3+3 conduct** (default). Participants are screened one every 1-3 weeks while a cohort has an
  open slot; ~25 % fail screening on exactly one criterion (their values really breach it).
  Cohorts of ``escalation.cohort_size`` DLT-evaluable participants are treated at the current dose;
  non-evaluable participants (not leukapheresed, manufacturing failure, not infused, left the study
  before the end of the DLT window without a DLT) are replaced at the same dose. A cohort opens
  when every DLT window of the previous one has closed (plus a safety-review lag) and the next
  dose comes from ``clinical.escalation.recommend`` on the outcome notation (``"1NNN 2NTN"``).
* **Benchmark** (``participants=N``): exactly N participants are screened over one year from the
  study start, and enrolled participants are assigned to dose levels in round-robin cohorts (no
  stopping rule, no waiting for DLT windows). The SUBJID pattern allows 999 participants per site;
  beyond the configured sites' capacity, extra site numbers are made up (they are not in the
  ``@sites`` codelist: use a benchmark study configuration with enough sites to avoid that).

Data cut: rows dated after the cut are left out; an AE or medication ongoing at the cut has a blank
end date (and an AE outcome NOT RECOVERED/NOT RESOLVED). Because the timeline never depends on the
cut, a later cut extends an earlier one: every other row of the earlier export is unchanged.

Randomness: ``random.Random`` instances seeded from strings (``seed``, stream name, participant
number); never the global generator, never the clock. Per-participant streams keep a participant's
data identical whatever happens to the others.

CLI (wired by the lead as ``python -m pipelines simulate``)::

    --study STUDY.yaml --seed S --data-cut YYYY-MM-DD [--participants N] --out DIR [--truth FILE]
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import math
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from clinical import crf
from clinical.escalation import parse_outcomes, recommend
from clinical.study import StudyConfig, StudyConfigError, load_study

DEFAULT_DLT_PROBABILITIES = (0.05, 0.15, 0.35)

# Names the random streams. The value is arbitrary; this one was chosen so that the default demo
# (``--seed 83 --data-cut 2025-12-31``) shows every feature (three dose levels, DLTs, screen failures,
# a manufacturing failure, deaths, a DLT window open at the cut). Changing it reshuffles every seed.
_STREAM_SALT = "im83-simulate-v391"

_NRN = "NOT RECOVERED/NOT RESOLVED"
_REC = "RECOVERED/RESOLVED"

# --------------------------------------------------------------------------------------------------
# Reference data: site laboratory ranges, CTCAE bands, MedDRA coding


@dataclass(frozen=True)
class _LabDef:
    unit: str
    dec: int
    male: tuple[float, float]
    female: tuple[float, float]


# Site laboratory (Chinese WS/T 404/405 style) ranges; sex-specific where the standard is.
_LABS: dict[str, _LabDef] = {
    "WBC": _LabDef("10^9/L", 2, (3.5, 9.5), (3.5, 9.5)),
    "NEUT": _LabDef("10^9/L", 2, (1.8, 6.3), (1.8, 6.3)),
    "LYM": _LabDef("10^9/L", 2, (1.1, 3.2), (1.1, 3.2)),
    "LYMPCT": _LabDef("%", 1, (20.0, 50.0), (20.0, 50.0)),
    "PLAT": _LabDef("10^9/L", 0, (125.0, 350.0), (125.0, 350.0)),
    "HGB": _LabDef("g/L", 0, (130.0, 175.0), (115.0, 150.0)),
    "CREAT": _LabDef("umol/L", 0, (57.0, 111.0), (41.0, 81.0)),
    "CRCL": _LabDef("mL/min", 1, (80.0, 140.0), (80.0, 140.0)),
    "BILI": _LabDef("umol/L", 1, (3.4, 20.5), (3.4, 20.5)),
    "ALT": _LabDef("U/L", 0, (9.0, 50.0), (7.0, 40.0)),
    "AST": _LabDef("U/L", 0, (15.0, 40.0), (13.0, 35.0)),
    "PT": _LabDef("s", 1, (9.4, 12.5), (9.4, 12.5)),
}

# (reported term, MedDRA preferred term, MedDRA system organ class)
_SOC_GEN = "General disorders and administration site conditions"
_SOC_GI = "Gastrointestinal disorders"
_SOC_INV = "Investigations"
_SOC_BLOOD = "Blood and lymphatic system disorders"
_SOC_INF = "Infections and infestations"
_SOC_MET = "Metabolism and nutrition disorders"
_SOC_NERV = "Nervous system disorders"
_SOC_RESP = "Respiratory, thoracic and mediastinal disorders"
_SOC_MSK = "Musculoskeletal and connective tissue disorders"

_CRS = ("Cytokine release syndrome", "Cytokine release syndrome", "Immune system disorders")
_ICANS = (
    "Immune effector cell-associated neurotoxicity syndrome",
    "Immune effector cell-associated neurotoxicity syndrome",
    _SOC_NERV,
)
_CYTO_TERMS = {
    "NEUT": ("Neutrophil count decreased", "Neutrophil count decreased", _SOC_INV),
    "LYM": ("Lymphocyte count decreased", "Lymphocyte count decreased", _SOC_INV),
    "PLAT": ("Platelet count decreased", "Platelet count decreased", _SOC_INV),
    "HGB": ("Anemia", "Anaemia", _SOC_BLOOD),
}
_LIVER_TERMS = {
    "ALT": ("ALT increased", "Alanine aminotransferase increased", _SOC_INV),
    "AST": ("AST increased", "Aspartate aminotransferase increased", _SOC_INV),
}
_FEBRILE_NEUTROPENIA = ("Febrile neutropenia", "Febrile neutropenia", _SOC_BLOOD)
_TREMOR = ("Tremor", "Tremor", _SOC_NERV)


@dataclass(frozen=True)
class _AEDef:
    term: tuple[str, str, str]
    prob: float
    days: tuple[int, int]  # onset window, protocol days relative to infusion
    grades: tuple[tuple[int, float], ...]
    duration: tuple[int, int]
    rel: tuple[tuple[str, float], ...]
    serious_from: int = 9  # AESER = Y from this grade
    med: tuple[str, str] | None = None  # (CMTRT, CMCLAS) given for the event
    med_prob: float = 0.0


_REL_LOW = (("NOT RELATED", 0.3), ("UNLIKELY", 0.45), ("POSSIBLE", 0.25))
_REL_MID = (("UNLIKELY", 0.3), ("POSSIBLE", 0.5), ("PROBABLE", 0.2))
_REL_HIGH = (("POSSIBLE", 0.4), ("PROBABLE", 0.45), ("DEFINITE", 0.15))

# Events after infusion, independent of the lab-driven and CRS/ICANS events.
_POST_AES: tuple[_AEDef, ...] = (
    _AEDef(("Fatigue", "Fatigue", _SOC_GEN), 0.40, (0, 20), ((1, 0.6), (2, 0.35), (3, 0.05)), (5, 30), _REL_MID),
    _AEDef(("Decreased appetite", "Decreased appetite", _SOC_MET), 0.25, (1, 14), ((1, 0.6), (2, 0.4)), (4, 20), _REL_MID),
    _AEDef(("Headache", "Headache", _SOC_NERV), 0.20, (0, 10), ((1, 0.7), (2, 0.3)), (1, 4), _REL_MID,
           med=("Paracetamol", "OTHER"), med_prob=0.5),
    _AEDef(("Diarrhea", "Diarrhoea", _SOC_GI), 0.12, (1, 20), ((1, 0.7), (2, 0.3)), (2, 5), _REL_MID),
    _AEDef(("Constipation", "Constipation", _SOC_GI), 0.15, (0, 14), ((1, 0.8), (2, 0.2)), (3, 10), _REL_LOW),
    _AEDef(("Hypokalemia", "Hypokalaemia", _SOC_MET), 0.20, (1, 14), ((1, 0.5), (2, 0.3), (3, 0.2)), (2, 8), _REL_MID,
           med=("Potassium chloride", "OTHER"), med_prob=0.8),
    _AEDef(("Hypophosphatemia", "Hypophosphataemia", _SOC_MET), 0.15, (1, 14), ((1, 0.4), (2, 0.4), (3, 0.2)), (3, 10),
           _REL_MID),
    _AEDef(("Sinus tachycardia", "Sinus tachycardia", "Cardiac disorders"), 0.12, (1, 7), ((1, 0.7), (2, 0.3)), (1, 4),
           _REL_MID),
    _AEDef(("Cough", "Cough", _SOC_RESP), 0.15, (0, 150), ((1, 0.8), (2, 0.2)), (5, 20), _REL_LOW),
    _AEDef(("Rash maculo-papular", "Rash maculo-papular", "Skin and subcutaneous tissue disorders"), 0.06, (3, 30),
           ((1, 0.6), (2, 0.4)), (4, 12), _REL_MID),
    _AEDef(("Pain in extremity", "Pain in extremity", _SOC_MSK), 0.20, (0, 250), ((1, 0.5), (2, 0.4), (3, 0.1)),
           (5, 40), _REL_LOW, med=("Tramadol", "OTHER"), med_prob=0.4),
    _AEDef(("Hypogammaglobulinemia", "Hypogammaglobulinaemia", "Immune system disorders"), 0.10, (28, 120),
           ((1, 0.3), (2, 0.6), (3, 0.1)), (60, 200), (("PROBABLE", 0.7), ("DEFINITE", 0.3)),
           med=("Immunoglobulin human normal", "OTHER"), med_prob=0.6),
    _AEDef(("Insomnia", "Insomnia", "Psychiatric disorders"), 0.08, (0, 30), ((1, 0.9), (2, 0.1)), (3, 15), _REL_LOW),
    _AEDef(("Pleural effusion", "Pleural effusion", _SOC_RESP), 0.05, (3, 90), ((1, 0.4), (2, 0.5), (3, 0.1)),
           (7, 30), _REL_LOW, serious_from=3),
    _AEDef(("Fever", "Pyrexia", _SOC_GEN), 0.10, (30, 120), ((1, 0.7), (2, 0.3)), (1, 3), _REL_LOW,
           med=("Paracetamol", "OTHER"), med_prob=0.7),
    _AEDef(("Hypotension", "Hypotension", "Vascular disorders"), 0.05, (30, 90), ((1, 0.5), (2, 0.5)), (1, 3),
           _REL_LOW),
    # Infections
    _AEDef(("Upper respiratory tract infection", "Upper respiratory tract infection", _SOC_INF), 0.15, (14, 300),
           ((1, 0.3), (2, 0.7)), (5, 14), _REL_LOW, med=("Amoxicillin", "ANTI-INFECTIVE"), med_prob=0.3),
    _AEDef(("Pneumonia", "Pneumonia", _SOC_INF), 0.08, (7, 200), ((2, 0.15), (3, 0.85)), (7, 21), _REL_MID,
           serious_from=3, med=("Piperacillin/tazobactam", "ANTI-INFECTIVE"), med_prob=1.0),
    _AEDef(("Urinary tract infection", "Urinary tract infection", _SOC_INF), 0.05, (7, 150), ((2, 0.8), (3, 0.2)),
           (5, 10), _REL_LOW, serious_from=3, med=("Levofloxacin", "ANTI-INFECTIVE"), med_prob=1.0),
    _AEDef(("CMV reactivation", "Cytomegalovirus infection reactivation", _SOC_INF), 0.05, (14, 90), ((2, 1.0),),
           (10, 28), _REL_MID, med=("Ganciclovir", "ANTI-INFECTIVE"), med_prob=1.0),
    _AEDef(("Herpes zoster", "Herpes zoster", _SOC_INF), 0.04, (60, 330), ((2, 1.0),), (10, 21), _REL_LOW,
           med=("Valaciclovir", "ANTI-INFECTIVE"), med_prob=1.0),
    _AEDef(("Sepsis", "Sepsis", _SOC_INF), 0.03, (5, 60), ((3, 0.4), (4, 0.6)), (7, 18), _REL_MID, serious_from=3,
           med=("Meropenem", "ANTI-INFECTIVE"), med_prob=1.0),
    _AEDef(("Catheter related infection", "Device related infection", _SOC_INF), 0.04, (7, 90), ((2, 0.5), (3, 0.5)),
           (7, 14), _REL_LOW, serious_from=3, med=("Vancomycin", "ANTI-INFECTIVE"), med_prob=1.0),
)

# Events between consent and infusion; never related to the (not yet given) CAR-T.
_PRE_AES: tuple[tuple[tuple[str, str, str], float, tuple[int, int], tuple[tuple[int, float], ...], tuple[int, int]], ...] = (
    (("Pain in extremity", "Pain in extremity", _SOC_MSK), 0.25, (0, 0), ((1, 0.5), (2, 0.45), (3, 0.05)), (10, 60)),
    (("Cough", "Cough", _SOC_RESP), 0.10, (0, 0), ((1, 0.9), (2, 0.1)), (5, 25)),
    (("Constipation", "Constipation", _SOC_GI), 0.10, (0, 0), ((1, 0.8), (2, 0.2)), (3, 14)),
    (("Insomnia", "Insomnia", "Psychiatric disorders"), 0.05, (0, 0), ((1, 1.0),), (5, 20)),
)
# Lymphodepletion-period events (days relative to infusion), NOT RELATED / UNLIKELY to the CAR-T.
_LD_AES: tuple[tuple[tuple[str, str, str], float, tuple[tuple[int, float], ...], tuple[int, int]], ...] = (
    (("Nausea", "Nausea", _SOC_GI), 0.35, ((1, 0.7), (2, 0.3)), (1, 4)),
    (("Vomiting", "Vomiting", _SOC_GI), 0.15, ((1, 0.7), (2, 0.3)), (1, 2)),
    (("Fatigue", "Fatigue", _SOC_GEN), 0.15, ((1, 0.8), (2, 0.2)), (2, 6)),
    (("Hypotension", "Hypotension", "Vascular disorders"), 0.04, ((1, 0.5), (2, 0.5)), (1, 2)),
)

_INITIALS = "ZWLCYHGXSMJFTDKQPRBNO"
_APHER_NOT_DONE = (
    ("Withdrew consent before leukapheresis", "WITHDRAWAL BY SUBJECT"),
    ("Rapid disease progression", "PROGRESSIVE DISEASE"),
    ("Clinical deterioration (investigator decision)", "PHYSICIAN DECISION"),
)
_SF_WEIGHTS = {
    "GPC3": 5.0, "KPS": 1.5, "NEUT": 1.0, "LYM": 1.0, "LYMPCT": 0.7, "PLAT": 1.0, "HGB": 1.0, "CRCL": 0.7,
    "BILI": 0.5, "ALT": 0.6, "AST": 0.4, "PT": 0.4, "LVEF": 0.5, "SPO2": 0.4, "AGE": 0.3, "CREAT": 0.5,
    "WBC": 0.5, "LIVERMET": 0.3,
}
_HYPOT = crf.HYPOTENSION
_HYPOX = crf.HYPOXIA
_CONSC = crf.CONSCIOUSNESS


# --------------------------------------------------------------------------------------------------
# Small helpers

_ISO: dict[int, str] = {}


def _iso(o: int) -> str:
    s = _ISO.get(o)
    if s is None:
        s = dt.date.fromordinal(o).isoformat()
        _ISO[o] = s
    return s


def _month(o: int) -> str:
    return _iso(o)[:7]


def _fmt(v: float, dec: int) -> str:
    s = f"{v:.{dec}f}"
    return "0" if s in ("-0", "-0.0", "-0.00") else s


def _plain(v: float) -> str:
    """Shortest plain decimal (no exponent) for configuration numbers such as 50.0 -> '50'."""
    s = f"{v:.6f}".rstrip("0").rstrip(".")
    return s or "0"


def _rnd(v: float, dec: int) -> float:
    return float(f"{v:.{dec}f}")


def _pick(rng: random.Random, weighted: Sequence[tuple[Any, float]]) -> Any:
    total = sum(w for _, w in weighted)
    u = rng.random() * total
    acc = 0.0
    for item, w in weighted:
        acc += w
        if u < acc:
            return item
    return weighted[-1][0]


def _interp(knots: Sequence[tuple[float, float]], d: float) -> float:
    """Log-linear interpolation through (day, value) knots; flat outside."""
    if d <= knots[0][0]:
        return knots[0][1]
    for (d0, v0), (d1, v1) in zip(knots, knots[1:]):
        if d <= d1:
            if d1 == d0:
                return v1
            f = (d - d0) / (d1 - d0)
            return math.exp(math.log(v0) + f * (math.log(v1) - math.log(v0)))
    return knots[-1][1]


def _bands(test: str, lln: float, uln: float, ctcae: str) -> dict[int, tuple[float, float]]:
    """CTCAE grade -> [lo, hi) value band (decreasing tests) or (lo, hi] (increasing tests)."""
    if test == "NEUT":
        if ctcae == "6.0":
            return {1: (1.0, 1.5), 2: (0.5, 1.0), 3: (0.1, 0.5), 4: (0.0, 0.1)}
        return {1: (1.5, lln), 2: (1.0, 1.5), 3: (0.5, 1.0), 4: (0.0, 0.5)}
    if test == "LYM":
        return {1: (0.8, lln), 2: (0.5, 0.8), 3: (0.2, 0.5), 4: (0.0, 0.2)}
    if test == "PLAT":
        return {1: (75.0, lln), 2: (50.0, 75.0), 3: (25.0, 50.0), 4: (0.0, 25.0)}
    if test == "HGB":
        return {1: (100.0, lln), 2: (80.0, 100.0), 3: (0.0, 80.0)}
    # ALT / AST, baseline normal
    return {1: (uln, 3 * uln), 2: (3 * uln, 5 * uln), 3: (5 * uln, 20 * uln), 4: (20 * uln, 30 * uln)}


_FLOOR = {"NEUT": 0.03, "LYM": 0.03, "PLAT": 4.0, "HGB": 62.0}


def _in_band(rng: random.Random, band: tuple[float, float], test: str) -> float:
    lo, hi = band
    lo = max(lo, _FLOOR.get(test, lo))
    m = 0.15 * (hi - lo)
    return rng.uniform(lo + m, hi - m)


# --------------------------------------------------------------------------------------------------
# Public result


@dataclass
class SimulatedTrial:
    """The export (one frame per form, all columns text exactly as written; blank = "") and the truth."""

    forms: dict[str, pl.DataFrame]
    truth: dict[str, Any]
    data_cut: dt.date | None = None
    seed: int | None = None


# --------------------------------------------------------------------------------------------------
# Per-participant records


@dataclass
class _AE:
    start: int
    end: int | None
    term: tuple[str, str, str]
    cat: str
    grade: int
    ser: str
    rel: str
    out: str = _REC
    dlt: str = "N"
    crs: tuple[str, str, str] | None = None
    icans: tuple[str, str, str, str, str] | None = None
    partial: bool = False
    seq: int = 0
    spid: int = 0


@dataclass
class _CM:
    start: int
    end: int | None
    trt: str
    cls: str
    ae: _AE | None = None
    partial: bool = False
    known: int | None = None  # date the record exists (pre-study medications: consent)
    spid: int = 0


@dataclass
class _Subj:
    k: int
    subjid: str
    site: str
    country: str
    consent: int
    rng: random.Random
    sex: str = "M"
    age: int = 0
    scdat: int = 0
    decision: int = 0
    eligible: bool = True
    fail_crit: str | None = None
    state: dict[str, Any] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)
    base: dict[str, float] = field(default_factory=dict)
    vdates: dict[int, int] = field(default_factory=dict)
    ie: list[tuple[str, str]] = field(default_factory=list)
    # enrolment and treatment (full timeline)
    enrolled: int | None = None
    dose: int | None = None  # 0-based
    cohort: int | None = None
    apher: int | None = None
    apher_planned: int | None = None
    apher_reason: str | None = None
    mfg_status: str | None = None
    reldat: int | None = None
    ld_days: list[int] = field(default_factory=list)
    d0: int | None = None
    cells: int | None = None
    exit_decod: str | None = None
    exit_date: int | None = None
    death: int | None = None
    death_cause: str | None = None
    dlt_type: str | None = None
    dlt_ae: _AE | None = None
    evaluable: bool = False
    ne_reason: str | None = None
    ne_known: int | None = None
    window_end: int | None = None
    aes: list[_AE] = field(default_factory=list)
    cms: list[_CM] = field(default_factory=list)
    # rows per form, each (known date, values, open end) where open end = (end date, {col: value if open})
    rows: dict[str, list[tuple[int, list[str], tuple[int, dict[int, str]] | None]]] = field(default_factory=dict)
    # (date known, row) of the tumour assessments in the export at the cut, kept for the truth
    # when the rows are released after the cut.
    rs_at_cut: list[tuple[int, list[str]]] = field(default_factory=list)

    def add(self, form_id: str, known: int, values: list[str], open_end: tuple[int, dict[int, str]] | None = None):
        self.rows.setdefault(form_id, []).append((known, values, open_end))


# --------------------------------------------------------------------------------------------------
# The simulator


class _Sim:
    def __init__(self, cfg: StudyConfig, seed: int, dlt_probabilities: Sequence[float] | None, n_sites: int):
        self.cfg = cfg
        self.seed = seed
        nd = len(cfg.dose_levels)
        if dlt_probabilities is None:
            if nd == len(DEFAULT_DLT_PROBABILITIES):
                dlt_probabilities = DEFAULT_DLT_PROBABILITIES
            else:
                dlt_probabilities = [0.05 + 0.30 * (i / (nd - 1) if nd > 1 else 0) for i in range(nd)]
        if len(dlt_probabilities) != nd or any(not 0 <= p <= 1 for p in dlt_probabilities):
            raise ValueError(f"dlt_probabilities must be {nd} probabilities in [0, 1], got {list(dlt_probabilities)}")
        self.p_dlt = [float(p) for p in dlt_probabilities]
        self.nd = nd
        self.ctcae = cfg.safety.ctcae_version
        self.window = cfg.escalation.dlt_window_days
        self.ld = cfg.lymphodepletion
        self.start = cfg.study.start_date.toordinal()
        # sites: configured, then made-up numbers when the 999-per-site capacity is exceeded
        sites = [(s.id, s.country) for s in cfg.study.sites]
        used = {s for s, _ in sites}
        nxt = 1
        while len(sites) < n_sites:
            while f"{nxt:02d}" in used:
                nxt += 1
            sites.append((f"{nxt:02d}", cfg.study.sites[0].country))
            used.add(f"{nxt:02d}")
        self.sites = sites
        # visits
        visits = [v for v in cfg.visits]
        self.visit_index = {v.id: i for i, v in enumerate(visits)}
        nodays = [v.id for v in visits if v.day is None]
        self.screen_visit = "SCREENING" if "SCREENING" in self.visit_index else (nodays[0] if nodays else visits[0].id)
        self.lab_visits = [(v.id, v.day) for v in visits if v.day is not None and v.day >= self.ld.start_day]
        self.pk_visits = [(v.id, v.day) for v in visits if v.day is not None and v.day >= 0]
        rs: list[tuple[str, int]] = []
        for v in visits:
            if v.day is not None and v.day >= 28 and (not rs or v.day - rs[-1][1] >= 56):
                rs.append((v.id, v.day))
        self.rs_visits = rs
        self.early_visit_days = sorted({d for _, d in self.lab_visits if 1 <= d <= 14})
        self.m12_day = max((d for _, d in self.lab_visits), default=365)
        self.lab_tests = list(crf.LAB_TESTS)
        self.crit = list(cfg.eligibility)
        self.lloq = cfg.pk.lloq
        self.lloq_s = _plain(cfg.pk.lloq)
        self.gm_cmax = [15000.0 * (d.cells / cfg.dose_levels[0].cells if cfg.dose_levels[0].cells else 1.0) ** 0.7
                        for d in cfg.dose_levels]
        # per-sex lab range strings
        self.ranges: dict[str, dict[str, tuple[float, float]]] = {}
        self.range_str: dict[str, dict[str, tuple[str, str, str]]] = {}
        for sex in ("M", "F"):
            r = {t: (_LABS[t].male if sex == "M" else _LABS[t].female) for t in self.lab_tests}
            self.ranges[sex] = r
            self.range_str[sex] = {t: (_LABS[t].unit, _plain(r[t][0]), _plain(r[t][1])) for t in self.lab_tests}
        self.sort_keys = {f.id: self._key_func(f) for f in crf.FORMS}

    # ---------------------------------------------------------------- ids and rngs

    def _rng(self, stream: str, k: int) -> random.Random:
        return random.Random(f"{_STREAM_SALT}|{self.seed}|{stream}|{k}")

    def subjid(self, k: int) -> tuple[str, str, str]:
        n = len(self.sites)
        site, country = self.sites[k % n]
        return f"{site}-{k // n + 1:03d}", site, country

    # ---------------------------------------------------------------- screening

    def _base_state(self, rng: random.Random, sex: str, age: int) -> dict[str, Any]:
        r = self.ranges[sex]
        st: dict[str, Any] = {"AGE": age, "SEX": sex}
        st["WT"] = rng.uniform(50, 82) if sex == "M" else rng.uniform(42, 68)
        st["KPS"] = _pick(rng, ((60, 0.05), (70, 0.2), (80, 0.35), (90, 0.3), (100, 0.1)))
        st["GPC3"] = "POSITIVE"
        st["LIVERMET"] = "Y" if rng.random() < 0.06 else "N"
        st["LVEF"] = _rnd(min(75.0, max(52.0, rng.gauss(63, 5))), 1)
        st["SPO2"] = float(rng.randint(94, 99))
        st["NEUT"] = min(6.0, max(1.95, math.exp(rng.gauss(math.log(3.3), 0.3))))
        st["LYM"] = min(2.8, max(1.16, math.exp(rng.gauss(math.log(1.6), 0.25))))
        st["OTH"] = rng.uniform(0.3, 0.9)
        st["PLAT"] = min(330.0, max(140.0, rng.gauss(230, 45)))
        st["HGB"] = rng.uniform(r["HGB"][0] + 1, r["HGB"][0] + 30)
        st["CREAT"] = rng.uniform(r["CREAT"][0] + 1, r["CREAT"][1] - 8)
        st["BILI"] = rng.uniform(4.0, 16.0)
        st["ALT"] = rng.uniform(0.3, 0.85) * r["ALT"][1]
        st["AST"] = rng.uniform(0.4, 0.85) * r["AST"][1]
        st["PT"] = rng.uniform(10.0, 12.2)
        return st

    def _derive(self, st: dict[str, Any]) -> dict[str, Any]:
        """Rounded values as recorded, with WBC, LYMPCT and CRCL derived from them."""
        v: dict[str, Any] = {k: st[k] for k in ("AGE", "KPS", "GPC3", "LIVERMET", "LVEF", "SPO2")}
        for t in ("NEUT", "LYM", "PLAT", "HGB", "CREAT", "BILI", "ALT", "AST", "PT"):
            v[t] = _rnd(st[t], _LABS[t].dec)
        v["WBC"] = _rnd(v["NEUT"] + v["LYM"] + st["OTH"], 2)
        v["LYMPCT"] = _rnd(100 * v["LYM"] / v["WBC"], 1)
        v["CRCL"] = self._crcl(st["AGE"], st["WT"], st["SEX"], v["CREAT"])
        return v

    @staticmethod
    def _crcl(age: int, wt: float, sex: str, creat: float) -> float:
        # Cockcroft-Gault with creatinine in umol/L
        return _rnd(1.2285 * (140 - age) * wt * (0.85 if sex == "F" else 1.0) / max(creat, 1.0), 1)

    def _limit(self, c, v: dict[str, Any], sex: str) -> float:
        lim = c.value
        if c.value_liver_metastases is not None and v.get("LIVERMET") == "Y":
            lim = c.value_liver_metastases
        lim = float(lim)
        if c.basis == "xuln":
            lim *= self.ranges[sex][c.param][1] if c.param in self.ranges[sex] else 1.0
        return lim

    def _met(self, c, v: dict[str, Any], sex: str) -> bool:
        if c.param not in v:
            return True
        x = v[c.param]
        if c.op == "==":
            if isinstance(c.value, str):
                return str(x) == c.value
            return float(x) == float(c.value)
        lim = self._limit(c, v, sex)
        x = float(x)
        return {">=": x >= lim, "<=": x <= lim, ">": x > lim, "<": x < lim}[c.op]

    def _make_fail(self, c, st: dict[str, Any], rng: random.Random) -> None:
        p = c.param
        sex = st["SEX"]
        if c.op == "==":
            if p == "GPC3":
                st["GPC3"] = "NEGATIVE" if c.value == "POSITIVE" else "POSITIVE"
            elif p == "LIVERMET":
                st["LIVERMET"] = "N" if c.value == "Y" else "Y"
            else:
                st[p] = (float(c.value) + 1) if not isinstance(c.value, str) else "NEGATIVE"
            return
        lim = self._limit(c, self._derive(st), sex)
        low = c.op in (">=", ">")
        target = lim * (rng.uniform(0.55, 0.92) if low else rng.uniform(1.12, 1.8))
        if p == "AGE":
            st["AGE"] = rng.randint(max(1, math.floor(lim * 0.75)), math.ceil(lim) - 1) if low else math.floor(lim) + rng.randint(1, 8)
        elif p == "KPS":
            opts = [x for x in range(30, 101, 10) if (x < lim if low else x > lim)]
            st["KPS"] = rng.choice(opts[-2:] if low else opts[:2])
        elif p in ("LVEF", "SPO2"):
            st[p] = _rnd(target if p == "LVEF" else min(target, lim - 1), 1 if p == "LVEF" else 0)
        elif p == "LYM":
            st["LYM"] = target
            pct_lim = next((self._limit(x, self._derive(st), sex) for x in self.crit if x.param == "LYMPCT"), 10.0)
            pct = rng.uniform(max(pct_lim * 1.2, 11.0), max(pct_lim * 2.0, 22.0))
            st["NEUT"] = max(0.5, target * 100 / pct - target - st["OTH"])
        elif p == "LYMPCT":
            st["LYM"] = rng.uniform(0.7, 1.0)
            wbc = st["LYM"] * 100 / target
            st["NEUT"] = max(0.5, wbc - st["LYM"] - st["OTH"])
        elif p == "WBC":
            f = target / (st["NEUT"] + st["LYM"] + st["OTH"])
            for t in ("NEUT", "LYM", "OTH"):
                st[t] *= f
        elif p == "CRCL":
            st["CREAT"] = 1.2285 * (140 - st["AGE"]) * st["WT"] * (0.85 if sex == "F" else 1.0) / target
        elif p in st:
            st[p] = target

    def screen(self, k: int, consent: int) -> _Subj:
        rng = self._rng("screen", k)
        subjid, site, country = self.subjid(k)
        s = _Subj(k=k, subjid=subjid, site=site, country=country, consent=consent, rng=self._rng("participant", k))
        s.sex = "M" if rng.random() < 0.58 else "F"
        age = rng.randint(16, 30) if rng.random() < 0.7 else rng.randint(31, 65)
        fail = None
        if rng.random() < 0.25:
            cands = [(c, _SF_WEIGHTS.get(c.param, 0.0)) for c in self.crit if _SF_WEIGHTS.get(c.param, 0.0) > 0]
            if cands:
                fail = _pick(rng, cands)
        for _attempt in range(200):
            st = self._base_state(rng, s.sex, age)
            if fail is not None:
                self._make_fail(fail, st, rng)
            v = self._derive(st)
            failed = [c.id for c in self.crit if not self._met(c, v, s.sex)]
            if failed == ([fail.id] if fail is not None else []):
                break
            age = rng.randint(16, 30) if rng.random() < 0.7 else rng.randint(31, 65)
        else:  # pragma: no cover - only with a contradictory configuration
            raise ValueError(f"cannot generate screening values for criterion {fail.id if fail else '(all met)'}")
        s.state, s.age = st, st["AGE"]
        s.values = v
        s.eligible = fail is None
        s.fail_crit = fail.id if fail is not None else None
        s.ie = [(c.id, "Y" if self._met(c, v, s.sex) else "N") for c in self.crit]
        s.scdat = consent + rng.randint(0, 3)
        s.decision = s.scdat + rng.randint(1, 5)
        self._screening_rows(s, rng)
        return s

    def _screening_rows(self, s: _Subj, rng: random.Random) -> None:
        cfg = self.cfg
        v = s.values
        # demographics: initials, date of birth consistent with the age at consent
        n_init = 3 if rng.random() < 0.6 else 2
        initials = "".join(rng.choice(_INITIALS) for _ in range(n_init))
        c = dt.date.fromordinal(s.consent)

        def years_before(d: dt.date, y: int) -> dt.date:
            try:
                return d.replace(year=d.year - y)
            except ValueError:  # 29 February
                return d.replace(year=d.year - y, day=28)

        latest = years_before(c, s.age).toordinal()
        earliest = years_before(c, s.age + 1).toordinal() + 1
        brth = rng.randint(earliest, latest)
        race = "ASIAN" if rng.random() < 0.97 else "UNKNOWN"
        s.add("dm", s.consent, [cfg.study.id, s.site, s.subjid, initials, _iso(brth), str(s.age), s.sex, race,
                                "NOT HISPANIC OR LATINO", s.country])
        s.add("sc", s.scdat, [s.subjid, _iso(s.scdat), str(v["KPS"]), v["GPC3"], v["LIVERMET"],
                              _fmt(v["LVEF"], 1), _fmt(v["SPO2"], 0)])
        for cid, yn in s.ie:
            s.add("ie", s.decision, [s.subjid, cid, "INCLUSION", yn])
        rs = self.range_str[s.sex]
        for t in self.lab_tests:
            u, lo, hi = rs[t]
            s.add("lb", s.scdat, [s.subjid, self.screen_visit, _iso(s.scdat), t, _fmt(v[t], _LABS[t].dec), u, lo, hi])
        if not s.eligible:
            s.add("enrol", s.decision, [s.subjid, _iso(s.consent), "N", "", ""])
            s.exit_decod, s.exit_date = "SCREEN FAILURE", s.decision
            s.add("ds", s.decision, [s.subjid, "SCREEN FAILURE", _iso(s.decision), "", ""])
            self._sort_rows(s)

    # ---------------------------------------------------------------- treatment course

    def treat(self, s: _Subj, dose: int, cohort: int) -> None:
        """Enrol an eligible participant at ``dose`` (0-based) and simulate the whole course."""
        rng = s.rng
        cfg = self.cfg
        s.dose, s.cohort = dose, cohort
        f = dose / (self.nd - 1) if self.nd > 1 else 0.0
        s.enrolled = max(s.decision, s.consent + rng.randint(7, 14))
        s.add("enrol", s.enrolled, [s.subjid, _iso(s.consent), "Y", _iso(s.enrolled), cfg.dose_levels[dose].id])
        # draws made up front so that the rest of the course does not shift them
        u_dlt = rng.random()
        z = rng.gauss(0, 1)  # latent expansion: PK Cmax and CRS severity
        s.apher_planned = s.enrolled + rng.randint(2, 6)
        self._pre_treatment_aes(s, rng)
        if rng.random() < 0.03:
            reason, decod = rng.choice(_APHER_NOT_DONE)
            s.apher_reason = reason
            s.add("apher", s.apher_planned, [s.subjid, "N", "", reason])
            self._exit(s, decod, s.apher_planned + rng.randint(0, 4))
            self._not_evaluable(s, "Not leukapheresed", s.exit_date)
            self._finish(s)
            return
        s.apher = s.apher_planned
        s.add("apher", s.apher, [s.subjid, "Y", _iso(s.apher), ""])
        # manufacturing
        s.reldat = s.apher + rng.randint(14, 24)
        u = rng.random()
        s.mfg_status = "FAILED" if u < 0.05 else ("OUT OF SPECIFICATION" if u < 0.10 else "RELEASED")
        lot = f"{cfg.study.id}-{s.subjid.replace('-', '')}-A"
        if s.mfg_status == "RELEASED":
            viab, trans = rng.uniform(80, 97), rng.uniform(20, 60)
        elif s.mfg_status == "OUT OF SPECIFICATION":
            viab, trans = (rng.uniform(64, 69.5), rng.uniform(20, 45)) if rng.random() < 0.5 else (
                rng.uniform(80, 92), rng.uniform(8, 9.8))
        else:
            viab, trans = rng.uniform(35, 60), rng.uniform(2, 8)
        keep_blank = s.mfg_status == "FAILED" and rng.random() < 0.5
        s.add("mfg", s.reldat, [s.subjid, lot, s.mfg_status, _iso(s.reldat),
                                "" if keep_blank else _fmt(viab, 1), "" if keep_blank else _fmt(trans, 1)])
        if s.mfg_status == "FAILED":
            self._exit(s, "MANUFACTURING FAILURE", s.reldat + rng.randint(1, 7))
            self._not_evaluable(s, "Manufacturing failure", s.reldat)
            self._finish(s)
            return
        # lymphodepletion and infusion
        d0 = s.reldat + rng.randint(1 - self.ld.start_day, 7 - self.ld.start_day)
        if rng.random() < 0.04:
            # disease progression while the product was made: never lymphodepleted
            when = s.reldat + rng.randint(0, 3)
            if rng.random() < 0.25:
                self._exit(s, "DEATH", when + rng.randint(2, 10), None, "Disease progression")
                s.death = s.exit_date
            else:
                self._exit(s, "PROGRESSIVE DISEASE", when + rng.randint(1, 5))
            self._not_evaluable(s, "Not lymphodepleted (disease progression)", s.exit_date)
            self._finish(s)
            return
        s.d0 = d0
        reduce_first = rng.random() < 0.02
        for i, agent in enumerate(self.ld.agents):
            for day in range(self.ld.start_day, self.ld.end_day + 1):
                dose_mg = agent.dose * (1 + max(-0.05, min(0.05, rng.gauss(0, 0.015))))
                if reduce_first and i == 0:
                    dose_mg = agent.dose * rng.uniform(0.74, 0.8)
                s.add("ld", d0 + day, [s.subjid, agent.name, _iso(d0 + day), _fmt(dose_mg, 1), agent.unit])
        s.ld_days = list(range(d0 + self.ld.start_day, d0 + self.ld.end_day + 1))
        self._ld_aes(s, rng)
        self._cm(s, d0 + self.ld.start_day, d0 + self.ld.end_day, "Ondansetron", "OTHER")
        self._cm(s, d0 + self.ld.start_day, d0 + 364, "Aciclovir", "ANTI-INFECTIVE")
        if rng.random() < 0.5:
            self._cm(s, d0 + self.ld.start_day, d0 + 7, "Allopurinol", "OTHER")
        ld_visit = [vid for vid, day in self.lab_visits if day == self.ld.start_day]
        base = s.base = self._lab_baseline(s, rng)
        days = sorted({day for _, day in self.lab_visits + self.pk_visits + self.rs_visits})
        s.vdates = {day: self._visit_date(s, d0, day) for day in days}
        if ld_visit:
            self._lab_rows(s, ld_visit[0], d0 + self.ld.start_day, base, None, self.ld.start_day)
        if rng.random() < 0.012:
            # lymphodepleted, not infused: infection before infusion
            ae = _AE(d0 - rng.randint(1, 2), None, ("Pneumonia", "Pneumonia", _SOC_INF), "OTHER", 3, "Y", "NOT RELATED")
            ae.end = ae.start + rng.randint(7, 14)
            s.aes.append(ae)
            self._cm(s, ae.start, ae.end, "Piperacillin/tazobactam", "ANTI-INFECTIVE", ae)
            s.d0 = None
            self._exit(s, "ADVERSE EVENT", d0 + rng.randint(0, 3))
            self._not_evaluable(s, "Lymphodepleted but not infused", s.exit_date)
            self._finish(s)
            return
        s.cells = int(round(cfg.dose_levels[dose].cells * (1 + rng.uniform(-0.10, 0.10)) / 1e5) * 1e5)
        s.add("inf", d0, [s.subjid, _iso(d0), cfg.dose_levels[dose].id, str(s.cells)])
        s.window_end = d0 + self.window
        if rng.random() < 0.6:
            self._cm(s, d0, d0 + 29, "Levetiracetam", "OTHER")
        self._cm(s, d0, d0 + 179, "Sulfamethoxazole/trimethoprim", "ANTI-INFECTIVE")
        # ---- what happens after infusion (all drawn, then the earliest exit wins)
        dlt = u_dlt < self.p_dlt[dose]
        if dlt:
            s.dlt_type = _pick(rng, (("CRS", 0.35), ("ICANS", 0.25), ("NEUT", 0.20), ("PLAT", 0.08), ("ALT", 0.12)))
        exits: list[tuple[int, str, int | None, str | None]] = []  # (date, decod, death, cause)
        if not dlt and rng.random() < 0.03:
            dd = d0 + rng.randint(12, self.window - 1)
            exits.append((dd, "DEATH", dd, "Disease progression"))
        if not dlt and rng.random() < 0.01:
            exits.append((d0 + rng.randint(8, self.window - 1), "WITHDRAWAL BY SUBJECT", None, None))
        rs_rows, pd_date = self._response(s, rng, f)
        if pd_date is not None:
            if rng.random() < 0.45:
                exits.append((pd_date + rng.randint(3, 21), "PROGRESSIVE DISEASE", None, None))
            dd = pd_date + 21 + int(rng.expovariate(math.log(2) / 150))
            exits.append((dd, "DEATH", dd, "Disease progression"))
        if rng.random() < 0.025:
            fd = d0 + rng.randint(35, 250)
            exits.append((fd, "DEATH", fd, "FATAL_AE"))
        if rng.random() < 0.04:
            exits.append((d0 + rng.randint(30, 330), "WITHDRAWAL BY SUBJECT", None, None))
        if rng.random() < 0.02:
            exits.append((d0 + rng.randint(60, 330), "LOST TO FOLLOW-UP", None, None))
        m12 = s.vdates[self.m12_day]
        exits.append((m12, "COMPLETED", None, None))
        exits.sort(key=lambda e: (e[0], e[1]))
        edate, decod, death, cause = exits[0]
        # ---- safety profile
        crs_ae, icans_ae = self._crs_icans(s, rng, f, z, dlt)
        cyto = self._cytopenias(s, rng, dlt)
        liver = self._liver(s, rng, crs_ae, dlt)
        self._other_aes(s, rng, cyto)
        if decod == "DEATH" and cause == "FATAL_AE":
            term = rng.choice(((("Sepsis", "Sepsis", _SOC_INF), "Meropenem"),
                               (("Pneumonia", "Pneumonia", _SOC_INF), "Piperacillin/tazobactam")))
            ae = _AE(death - rng.randint(2, 10), death, term[0], "OTHER", 5, "Y", "POSSIBLE", out="FATAL")
            s.aes.append(ae)
            self._cm(s, ae.start, death, term[1], "ANTI-INFECTIVE", ae)
            cause = term[0][1]
        if decod == "DEATH" and death is not None and death < s.window_end and not dlt:
            self._not_evaluable(s, "Died before the end of the DLT window", death)
        elif decod != "COMPLETED" and edate < s.window_end and not dlt:
            self._not_evaluable(s, "Left the study before the end of the DLT window", edate)
        else:
            s.evaluable = True
        self._exit(s, decod, edate, death, cause)
        # ---- visits: labs, PK, response (only while on study)
        last_visit = edate - 1 if death is not None else edate
        for vid, day in self.lab_visits:
            if day == self.ld.start_day:
                continue
            vd = s.vdates[day]
            if vd > last_visit:
                break
            self._lab_rows(s, vid, vd, base, (cyto, liver), vd - d0)
        self._pk(s, rng, z, last_visit)
        for vid, vd, res in rs_rows:
            if vd <= last_visit:
                s.add("rs", vd, [s.subjid, vid, _iso(vd), res])
        self._finish(s)

    # ---- helpers for the course

    @staticmethod
    def _visit_date(s: _Subj, d0: int, day: int) -> int:
        # the visit window grows with the distance from infusion
        if day <= 14:
            return d0 + day
        w = 1 if day <= 28 else (3 if day <= 90 else 7)
        return d0 + day + s.rng.randint(-w, w)

    def _exit(self, s: _Subj, decod: str, date: int, death: int | None = None, cause: str | None = None) -> None:
        s.exit_decod, s.exit_date, s.death, s.death_cause = decod, date, death, cause

    @staticmethod
    def _not_evaluable(s: _Subj, reason: str, known: int | None) -> None:
        s.evaluable, s.ne_reason, s.ne_known = False, reason, known

    def _cm(self, s: _Subj, start: int, end: int | None, trt: str, cls: str, ae: _AE | None = None,
            partial: bool = False, known: int | None = None) -> None:
        s.cms.append(_CM(start, end, trt, cls, ae, partial, known))

    def _pre_treatment_aes(self, s: _Subj, rng: random.Random) -> None:
        horizon = s.enrolled + 14  # before lymphodepletion
        for term, p, _w, grades, dur in _PRE_AES:
            if rng.random() < p:
                start = rng.randint(s.consent + 1, horizon)
                ae = _AE(start, start + rng.randint(*dur), term, "OTHER", _pick(rng, grades), "N",
                         "NOT RELATED")
                # CDASH UNK day: only for events well before treatment and not in the consent month
                if start < s.enrolled + 10 and _month(start) != _month(s.consent) and rng.random() < 0.6:
                    ae.partial = True
                s.aes.append(ae)
        if rng.random() < 0.3:
            st = s.consent - rng.randint(30, 200)
            self._cm(s, st, None if rng.random() < 0.7 else s.consent + rng.randint(5, 60), "Morphine sulfate",
                     "OTHER", partial=rng.random() < 0.5, known=s.consent)

    def _ld_aes(self, s: _Subj, rng: random.Random) -> None:
        d0 = s.d0
        for term, p, grades, dur in _LD_AES:
            if rng.random() < p:
                st = d0 + rng.randint(self.ld.start_day, -1)
                s.aes.append(_AE(st, st + rng.randint(*dur) - 1, term, "OTHER", _pick(rng, grades), "N",
                                 "NOT RELATED"))

    def _crs_icans(self, s: _Subj, rng: random.Random, f: float, z: float, dlt: bool):
        d0 = s.d0
        crs = icans = None
        p_crs = 0.72 + 0.18 * f
        dlt_crs = dlt and s.dlt_type == "CRS"
        dlt_icans = dlt and s.dlt_type == "ICANS"
        if dlt_crs or rng.random() < p_crs:
            onset = _pick(rng, ((1, 0.3), (2, 0.25), (3, 0.15), (4, 0.1), (5, 0.08), (6, 0.07), (7, 0.05)))
            long_g3 = False
            if dlt_crs:
                g = 4 if rng.random() < 0.7 else 3
                long_g3 = g == 3
                dur = rng.randint(8, 14) if long_g3 else rng.randint(7, 14)
            else:
                g = _pick(rng, ((1, 0.62 - 0.25 * f), (2, (0.30 + 0.10 * f) * math.exp(0.4 * z)),
                                (3, (0.08 + 0.15 * f) * math.exp(0.8 * z))))
                dur = rng.randint(*{1: (2, 5), 2: (3, 7), 3: (3, 6)}[g])
            hyp = (0, 0)
            if g >= 2:
                lvl = g - 1
                drive = _pick(rng, (("hypot", 0.45), ("hypox", 0.35), ("both", 0.2)))
                other = rng.randint(0, lvl) if rng.random() < 0.4 else 0
                hyp = {"hypot": (lvl, other), "hypox": (other, lvl), "both": (lvl, lvl)}[drive]
            st = d0 + onset
            crs = _AE(st, st + dur - 1, _CRS, "CRS", g, "Y" if g >= 3 else "N",
                      "DEFINITE" if rng.random() < 0.7 else "PROBABLE",
                      dlt="Y" if dlt_crs else "N", crs=("Y", _HYPOT[hyp[0]], _HYPOX[hyp[1]]))
            s.aes.append(crs)
            if dlt_crs:
                s.dlt_ae = crs
            if rng.random() < 0.6:
                self._cm(s, st, st + min(dur - 1, rng.randint(1, 3)), "Paracetamol", "OTHER", crs)
            if g >= 2:
                t0 = st + rng.randint(0, min(2, dur - 1))
                self._cm(s, t0, t0 + (1 if (g >= 3 or rng.random() < 0.3) else 0), "Tocilizumab", "TOCILIZUMAB", crs)
            if g >= 3:
                t0 = st + rng.randint(1, min(2, dur - 1))
                self._cm(s, t0, t0 + rng.randint(2, 6), "Dexamethasone", "CORTICOSTEROID", crs)
            if hyp[0] >= 2:
                t0 = st + rng.randint(0, min(2, dur - 1))
                self._cm(s, t0, t0 + rng.randint(1, 3), "Norepinephrine", "VASOPRESSOR", crs)
                if hyp[0] == 3:
                    self._cm(s, t0 + 1, t0 + rng.randint(2, 4), "Dopamine", "VASOPRESSOR", crs)
        p_icans = (0.10 + 0.18 * f) * (1.5 if crs is not None and crs.grade >= 2 else 1.0)
        if dlt_icans or rng.random() < p_icans:
            onset = (crs.start - d0 + rng.randint(1, 5)) if crs is not None else rng.randint(3, 10)
            if dlt_icans:
                g = 3 if rng.random() < 0.6 else 4
                dur = rng.randint(5, 12) if g == 3 else rng.randint(6, 14)
            else:
                g = 1 if rng.random() < 0.6 else 2
                dur = rng.randint(1, 4) if g == 1 else rng.randint(2, 6)
            st = d0 + onset
            icans = _AE(st, st + dur - 1, _ICANS, "ICANS", g, "Y" if g >= 3 else "N",
                        "DEFINITE" if rng.random() < 0.6 else "PROBABLE",
                        dlt="Y" if dlt_icans else "N", icans=self._icans_items(rng, g))
            s.aes.append(icans)
            if dlt_icans:
                s.dlt_ae = icans
            if g >= 2:
                t0 = st + rng.randint(0, min(1, dur - 1))
                self._cm(s, t0, t0 + rng.randint(2, 6), "Dexamethasone", "CORTICOSTEROID", icans)
            if g >= 4:
                self._cm(s, st + 1, st + rng.randint(3, 5), "Methylprednisolone", "CORTICOSTEROID", icans)
            if icans.icans[2] != "NONE":
                self._cm(s, st, st + rng.randint(14, 30), "Levetiracetam", "OTHER", icans)
            if g >= 2 and rng.random() < 0.3:
                s.aes.append(_AE(st + 1, st + rng.randint(5, 15), _TREMOR, "OTHER", 1, "N", "PROBABLE"))
        return crs, icans

    @staticmethod
    def _icans_items(rng: random.Random, g: int) -> tuple[str, str, str, str, str]:
        def ice_for(level: int) -> int:
            return {0: 10, 1: rng.randint(7, 9), 2: rng.randint(3, 6), 3: rng.randint(0, 2), 4: 0}[level]

        seiz, motor, edema = "NONE", "N", "NONE"
        if g == 1:
            if rng.random() < 0.7:
                ice, consc = ice_for(1), rng.choice(("NORMAL", "AWAKENS SPONTANEOUSLY"))
            else:
                ice, consc = rng.choice((10, ice_for(1))), "AWAKENS SPONTANEOUSLY"
        elif g == 2:
            d = _pick(rng, (("ice", 0.6), ("consc", 0.15), ("both", 0.25)))
            ice = ice_for(2) if d != "consc" else ice_for(rng.randint(0, 2))
            consc = "AWAKENS TO VOICE" if d != "ice" else rng.choice(("NORMAL", "AWAKENS SPONTANEOUSLY", "AWAKENS TO VOICE"))
        elif g == 3:
            d = _pick(rng, (("ice", 0.45), ("consc", 0.25), ("seizure", 0.2), ("edema", 0.1)))
            if d == "ice":
                ice, consc = ice_for(3), rng.choice(("AWAKENS TO VOICE", "AWAKENS TO TACTILE STIMULUS"))
            elif d == "consc":
                ice, consc = ice_for(3), "AWAKENS TO TACTILE STIMULUS"
            else:
                lvl = rng.randint(1, 3)
                ice, consc = ice_for(lvl), _CONSC[min(lvl, 3)]
                if d == "seizure":
                    seiz = "RAPIDLY RESOLVING"
                else:
                    edema = "FOCAL"
        else:
            d = _pick(rng, (("consc", 0.5), ("seizure", 0.2), ("motor", 0.1), ("edema", 0.2)))
            if d == "consc":
                ice, consc = 0, "UNAROUSABLE"
            else:
                lvl = rng.randint(2, 3)
                ice, consc = ice_for(lvl), _CONSC[lvl]
                if d == "seizure":
                    seiz = "PROLONGED OR REPETITIVE"
                elif d == "motor":
                    motor = "Y"
                else:
                    edema = "DIFFUSE"
            if rng.random() < 0.3 and d != "seizure":
                seiz = "RAPIDLY RESOLVING"
        return str(ice), consc, seiz, motor, edema

    # ---- laboratory course

    def _lab_baseline(self, s: _Subj, rng: random.Random) -> dict[str, float]:
        v = s.values
        r = self.ranges[s.sex]
        b: dict[str, float] = {}
        for t in ("NEUT", "LYM", "PLAT", "HGB"):
            b[t] = max(r[t][0] * 1.05, v[t] * rng.uniform(0.92, 1.08))
        for t in ("ALT", "AST"):
            b[t] = min(r[t][1] * 0.9, max(r[t][0] * 1.05, v[t] * rng.uniform(0.9, 1.1)))
        for t in ("CREAT", "BILI", "PT"):
            b[t] = min(r[t][1] * 0.97, max(r[t][0] * 1.03, v[t] * rng.uniform(0.93, 1.07)))
        b["OTH"] = s.state["OTH"]
        return b

    def _cytopenias(self, s: _Subj, rng: random.Random, dlt: bool) -> dict[str, dict[str, Any]]:
        """Per cytopenia test: the curve knots and the AE (if any), consistent with each other."""
        d0 = s.d0
        r = self.ranges[s.sex]
        base = s.base
        early = self.early_visit_days or [7]
        spec = {
            "LYM": (0.97, ((2, 0.05), (3, 0.35), (4, 0.6)), (-2, 0), [d for d in early if d <= 4] or early, (14, 35)),
            "NEUT": (0.90, ((1, 0.05), (2, 0.1), (3, 0.3), (4, 0.55)), (-1, 3), [d for d in early if 7 <= d <= 10] or early, (14, 35)),
            "PLAT": (0.60, ((1, 0.2), (2, 0.25), (3, 0.3), (4, 0.25)), (0, 3), [d for d in early if 7 <= d <= 14] or early, (14, 35)),
            "HGB": (0.60, ((1, 0.3), (2, 0.4), (3, 0.3)), (-1, 3), [d for d in early if 7 <= d <= 14] or early, (21, 42)),
        }
        out: dict[str, dict[str, Any]] = {}
        for t, (p, grades, s_rng, nadirs, e_rng) in spec.items():
            lln = r[t][0]
            bands = _bands(t, lln, r[t][1], self.ctcae)
            b = base[t]
            prolonged = dlt and s.dlt_type == t
            if prolonged or rng.random() < p:
                g = 4 if prolonged else _pick(rng, grades)
                sday = rng.randint(0 if prolonged else s_rng[0], s_rng[1])
                tn = rng.choice([d for d in nadirs if d > sday] or [sday + 4])
                n = _in_band(rng, bands[g], t)
                if g == 1 and t == "NEUT" and self.ctcae == "6.0":
                    n = min(n, lln * 0.98)
                knots = [(self.ld.start_day, b), (sday, lln), (tn, n)]
                tp = None
                if prolonged:
                    tp = rng.randint(self.window + 3, self.window + 10)
                    knots.append((tp, _in_band(rng, bands[4], t)))
                    e = tp + rng.randint(7, 20)
                else:
                    lo_e, hi_e = e_rng
                    if t == "NEUT" and g == 4:
                        hi_e = min(hi_e, self.window - 1)
                    e = rng.randint(max(lo_e, tn + 4), max(hi_e, tn + 4))
                knots += [(e, lln), (e + 28, max(lln * 1.05, b * rng.uniform(0.85, 1.0)))]
                rel = _pick(rng, (("UNLIKELY", 0.2), ("POSSIBLE", 0.5), ("PROBABLE", 0.3)))
                if prolonged:
                    rel = rng.choice(("POSSIBLE", "PROBABLE"))
                elif sday < 0:
                    rel = "NOT RELATED"  # began after lymphodepletion, before the CAR-T
                ae = _AE(d0 + sday, d0 + e, _CYTO_TERMS[t], "OTHER", g, "N", rel, dlt="Y" if prolonged else "N")
                s.aes.append(ae)
                if prolonged:
                    s.dlt_ae = ae
                if t == "NEUT" and g == 4 and rng.random() < 0.5:
                    self._cm(s, d0 + tn - rng.randint(0, 2), d0 + tn + rng.randint(3, 8), "Filgrastim", "OTHER", ae)
                if t == "PLAT" and g == 4:
                    self._cm(s, d0 + tn, d0 + tn, "Platelet transfusion", "OTHER", ae)
                if t == "HGB" and g == 3:
                    self._cm(s, d0 + tn, d0 + tn + rng.randint(0, 1), "Red blood cell transfusion", "OTHER", ae)
                out[t] = {"knots": knots, "ae": (sday, tn, e, g, tp, n), "bands": bands, "lln": lln}
            else:
                tn = rng.choice(nadirs)
                n = max(lln * rng.uniform(1.03, 1.25), min(b, lln * 1.3) * 0.95)
                n = min(n, b)
                knots = [(self.ld.start_day, b), (tn, n), (tn + 21, max(n, b * rng.uniform(0.9, 1.0)))]
                out[t] = {"knots": knots, "ae": None, "bands": bands, "lln": lln}
        return out

    def _liver(self, s: _Subj, rng: random.Random, crs: _AE | None, dlt: bool) -> dict[str, dict[str, Any]]:
        d0 = s.d0
        r = self.ranges[s.sex]
        base = s.base
        out: dict[str, dict[str, Any]] = {}
        prolonged = dlt and s.dlt_type == "ALT"
        p = 0.12 + (0.2 if crs is not None and crs.grade >= 2 else 0.0)
        peaks = [d for d in (self.early_visit_days or [7]) if 4 <= d <= 14] or [7]
        alt = None
        if prolonged or rng.random() < p:
            g = 3 if prolonged else _pick(rng, ((1, 0.45), (2, 0.35), (3, 0.2)))
            lo = (crs.start - d0) if crs is not None else 2
            sday = min(lo + rng.randint(0, 2), max(peaks) - 1)
            tp = rng.choice([d for d in peaks if d > sday])
            alt = (g, sday, tp)
        for t in ("ALT", "AST"):
            lln, uln = r[t]
            bands = _bands(t, lln, uln, self.ctcae)
            b = base[t]
            ae_spec = None
            if alt is not None and (t == "ALT" or rng.random() < 0.7):
                g, sday, tp = alt
                if t == "AST":
                    g = rng.randint(1, g)
                peak = _in_band(rng, bands[g], t)
                knots = [(self.ld.start_day, b), (sday, uln), (tp, peak)]
                tp2 = None
                if prolonged and t == "ALT":
                    tp2 = tp + rng.randint(9, 12)
                    knots.append((tp2, _in_band(rng, bands[3], t)))
                    e = tp2 + rng.randint(4, 8)
                else:
                    e = tp + rng.randint(5, 14)
                knots += [(e, uln), (e + 14, b)]
                rel = rng.choice(("POSSIBLE", "PROBABLE")) if (prolonged and t == "ALT") else _pick(rng, _REL_MID)
                ae = _AE(d0 + sday, d0 + e, _LIVER_TERMS[t], "OTHER", g, "N", rel,
                         dlt="Y" if (prolonged and t == "ALT") else "N")
                s.aes.append(ae)
                if prolonged and t == "ALT":
                    s.dlt_ae = ae
                ae_spec = (sday, tp, e, g, tp2, peak)
            else:
                knots = [(self.ld.start_day, b)]
            out[t] = {"knots": knots, "ae": ae_spec, "bands": bands, "uln": uln}
        return out

    def _lab_rows(self, s: _Subj, vid: str, vdate: int, base: dict[str, float], course, day: int) -> None:
        rng = s.rng
        r = self.ranges[s.sex]
        vals: dict[str, float | None] = {}
        cyto, liver = course if course is not None else ({}, {})
        for t in ("NEUT", "LYM", "PLAT", "HGB"):
            dec = _LABS[t].dec
            c = cyto.get(t)
            if c is None:
                vals[t] = _rnd(base[t] * math.exp(rng.gauss(0, 0.05)), dec)
                vals[t] = max(vals[t], _rnd(r[t][0], dec))
                continue
            vals[t] = self._constrained(c, day, rng, dec, decreasing=True)
        for t in ("ALT", "AST"):
            dec = _LABS[t].dec
            c = liver.get(t)
            if c is None or c["ae"] is None:
                v = base[t] * math.exp(rng.gauss(0, 0.08))
                vals[t] = min(_rnd(r[t][1], dec), max(_rnd(r[t][0], dec), _rnd(v, dec)))
            else:
                vals[t] = self._constrained(c, day, rng, dec, decreasing=False)
        for t in ("CREAT", "BILI", "PT"):
            dec = _LABS[t].dec
            v = base[t] * math.exp(rng.gauss(0, 0.06))
            vals[t] = min(_rnd(r[t][1], dec), max(_rnd(r[t][0], dec), _rnd(v, dec)))
        oth = base["OTH"] * (_interp(((self.ld.start_day, 1.0), (7, 0.3), (21, 0.9), (60, 1.0)), day) if course else 1.0)
        wbc = _rnd(vals["NEUT"] + vals["LYM"] + max(0.05, oth), 2)
        vals["WBC"] = wbc
        vals["LYMPCT"] = _rnd(100 * vals["LYM"] / wbc, 1)
        vals["CRCL"] = self._crcl(s.age, s.state["WT"], s.sex, vals["CREAT"])
        if course is not None and rng.random() < 0.01:
            vals["PT"] = None  # sample clotted: result missing
        rs = self.range_str[s.sex]
        iso = _iso(vdate)
        for t in self.lab_tests:
            u, lo, hi = rs[t]
            v = vals.get(t)
            s.add("lb", vdate, [s.subjid, vid, iso, t, "" if v is None else _fmt(v, _LABS[t].dec), u, lo, hi])

    @staticmethod
    def _constrained(c: dict[str, Any], day: int, rng: random.Random, dec: int, decreasing: bool) -> float:
        unit = 10.0 ** -dec
        v = _interp(c["knots"], day) * math.exp(rng.gauss(0, 0.05))
        ae = c["ae"]
        if ae is not None and day == ae[1]:
            v = ae[5]  # the nadir (peak) visit shows exactly the AE grade
        r = _rnd(v, dec)
        if decreasing:
            lln = c["lln"]
            if ae is not None and ae[0] < day < ae[2]:
                sday, tn, e, g, tp, n = ae
                lo = c["bands"][g][0]
                hi = _rnd(lln, dec) - unit
                if tp is not None and tn <= day <= tp:
                    hi = min(hi, _rnd(c["bands"][g][1], dec) - unit)
                lo_r = math.ceil(max(lo, unit) / unit - 1e-9) * unit
                r = _rnd(min(max(r, lo_r), hi), dec)
            elif r < lln:
                r = _rnd(math.ceil(lln / unit - 1e-9) * unit, dec)
        else:
            uln = c["uln"]
            if ae is not None and ae[0] < day < ae[2]:
                sday, tp, e, g, tp2, peak = ae
                hi = math.floor(c["bands"][g][1] / unit + 1e-9) * unit
                lo = math.floor(uln / unit + 1e-9) * unit + unit
                if tp2 is not None and tp <= day <= tp2:
                    lo = max(lo, math.floor(c["bands"][g][0] / unit + 1e-9) * unit + unit)
                r = _rnd(min(max(r, lo), hi), dec)
            elif r > uln:
                r = _rnd(math.floor(uln / unit + 1e-9) * unit, dec)
        return r

    def _other_aes(self, s: _Subj, rng: random.Random, cyto: dict[str, dict[str, Any]]) -> None:
        d0 = s.d0
        for a in _POST_AES:
            if rng.random() >= a.prob:
                continue
            st = d0 + rng.randint(*a.days)
            g = _pick(rng, a.grades)
            ae = _AE(st, st + rng.randint(*a.duration) - 1, a.term, "OTHER", g, "Y" if g >= a.serious_from else "N",
                     _pick(rng, a.rel))
            s.aes.append(ae)
            if a.med is not None and rng.random() < a.med_prob:
                self._cm(s, st, min(ae.end, st + rng.randint(3, 14)), a.med[0], a.med[1], ae)
        neut = cyto.get("NEUT", {}).get("ae")
        if neut is not None and neut[3] >= 3 and rng.random() < 0.25:
            sday, e = neut[0], neut[2]
            lo, hi = max(sday + 1, 1), min(e - 1, 14)
            if lo <= hi:
                st = d0 + rng.randint(lo, hi)
                ae = _AE(st, st + rng.randint(3, 7), _FEBRILE_NEUTROPENIA, "OTHER", 3, "Y" if rng.random() < 0.5 else "N",
                         _pick(rng, _REL_MID))
                s.aes.append(ae)
                self._cm(s, st, ae.end, "Cefoperazone/sulbactam", "ANTI-INFECTIVE", ae)

    def _response(self, s: _Subj, rng: random.Random, f: float) -> tuple[list[tuple[str, int, str]], int | None]:
        t_pd = rng.expovariate(math.log(2) / (70 + 40 * f))
        best = _pick(rng, (("SD", 0.80 - 0.1 * f), ("PR", 0.16 + 0.08 * f), ("CR", 0.04 + 0.02 * f)))
        rows = []
        pd_date = None
        for i, (vid, day) in enumerate(self.rs_visits):
            vd = s.vdates[day]
            if day >= t_pd:
                rows.append((vid, vd, "PD"))
                pd_date = vd
                break
            res = "SD" if i == 0 and best != "SD" and rng.random() < 0.6 else best
            if res == "CR" and i == 0:
                res = "PR"
            if rng.random() < 0.03:
                res = "NE"
            rows.append((vid, vd, res))
        return rows, pd_date

    def _pk(self, s: _Subj, rng: random.Random, z: float, last: int) -> None:
        d0 = s.d0
        cmax = self.gm_cmax[s.dose] * math.exp(0.9 * z)
        tmax = rng.uniform(6, 14)
        c1 = min(cmax / 3, rng.uniform(100, 600))
        a = math.log(2) / rng.uniform(3, 7)
        b = math.log(2) / rng.uniform(30, 120)
        fr = rng.uniform(0.95, 0.995)
        for vid, day in self.pk_visits:
            vd = s.vdates[day]
            if vd > last:
                break
            t = vd - d0
            if day == 0:
                conc = 0.0
            elif t <= tmax:
                conc = _interp(((1, c1), (tmax, cmax)), t)
            else:
                conc = cmax * (fr * math.exp(-a * (t - tmax)) + (1 - fr) * math.exp(-b * (t - tmax)))
            conc *= math.exp(rng.gauss(0, 0.2))
            blq = conc < self.lloq
            s.add("pc", vd, [s.subjid, vid, _iso(vd), "" if blq else _fmt(conc, 1), "Y" if blq else "N", self.lloq_s])

    # ---- final records: clip to the exit, number AEs and medications, emit rows

    def _finish(self, s: _Subj) -> None:
        x = s.exit_date
        death = s.death
        last = x if x is not None else None
        aes = []
        for i, ae in enumerate(s.aes):
            ae.seq = i
            if last is not None and ae.start > last:
                continue
            if ae.end is not None and last is not None and ae.end > last and ae.out != "FATAL":
                ae.end, ae.out = None, _NRN
            if death is not None and ae.out != "FATAL" and ae.end is not None and ae.end >= death:
                ae.end, ae.out = None, _NRN
            aes.append(ae)
        aes.sort(key=lambda a: (a.start, a.seq))
        for i, ae in enumerate(aes, start=1):
            ae.spid = i
        s.aes = aes
        for ae in aes:
            st = _month(ae.start) if ae.partial else _iso(ae.start)
            crs = ae.crs or ("", "", "")
            ic = ae.icans or ("", "", "", "", "")
            vals = [s.subjid, str(ae.spid), ae.term[0], ae.term[1], ae.term[2], ae.cat, st,
                    "" if ae.end is None else _iso(ae.end), str(ae.grade), ae.ser, ae.rel, ae.out, ae.dlt,
                    *crs, *ic]
            open_end = (ae.end, {7: "", 11: _NRN}) if ae.end is not None else None
            s.add("ae", ae.start, vals, open_end)
        kept_ae = {id(a) for a in aes}
        cms = []
        for i, cm in enumerate(s.cms):
            if last is not None and cm.start > last:
                continue
            if cm.ae is not None and id(cm.ae) not in kept_ae:
                continue
            if cm.end is not None and last is not None and cm.end > last:
                cm.end = None
            cms.append((cm.start, i, cm))
        cms.sort(key=lambda t: (t[0], t[1]))
        for n, (_, _, cm) in enumerate(cms, start=1):
            cm.spid = n
            vals = [s.subjid, str(n), cm.trt, cm.cls, _month(cm.start) if cm.partial else _iso(cm.start),
                    "" if cm.end is None else _iso(cm.end), "" if cm.ae is None else str(cm.ae.spid)]
            open_end = (cm.end, {5: ""}) if cm.end is not None else None
            s.add("cm", cm.known if cm.known is not None else cm.start, vals, open_end)
        if s.exit_decod is not None and s.exit_decod != "SCREEN FAILURE":
            cause = s.death_cause or ""
            s.add("ds", s.exit_date, [s.subjid, s.exit_decod, _iso(s.exit_date),
                                      "" if death is None else _iso(death), cause])
        self._sort_rows(s)

    def _sort_rows(self, s: _Subj) -> None:
        # Rows are generated in key order (visits and lab tests in schedule / contract order, AEs and
        # medications numbered in order); only forms that could hold rows out of order are sorted.
        for fid in ("ld",):
            rows = s.rows.get(fid)
            if rows is not None and len(rows) > 1:
                rows.sort(key=lambda r, kf=self.sort_keys[fid]: kf(r[1]))

    def _key_func(self, form: crf.Form):
        return row_sort_key(form, crf.study_codelists(self.cfg))

    # ---------------------------------------------------------------- trial conduct

    def run_33(self) -> tuple[list[_Subj], list[str], list[dict[str, Any]]]:
        cfg = self.cfg
        rng = self._rng("trial", 0)
        cs = cfg.escalation.cohort_size
        subjects: list[_Subj] = []
        tokens: list[str] = []
        decisions: list[dict[str, Any]] = []
        dose = 1
        open_day = self.start
        k = 0
        max_cohorts = 2 * self.nd * max(1, cfg.escalation.max_per_dose // max(cs, 1)) + 2
        for cohort_no in range(1, max_cohorts + 1):
            members: list[_Subj] = []
            t = open_day + rng.randint(0, 6)
            while True:
                filled = sum(1 for p in members if not (p.ne_known is not None and p.ne_known <= t))
                if filled < cs:
                    s = self.screen(k, t)
                    k += 1
                    subjects.append(s)
                    if s.eligible:
                        self.treat(s, dose - 1, cohort_no)
                        members.append(s)
                    t += rng.randint(7, 21)
                else:
                    waits = [p.ne_known for p in members if p.ne_known is not None and p.ne_known > t]
                    if not waits:
                        break
                    t = min(waits) + rng.randint(1, 7)
                if len(members) > 10 * cs:  # pragma: no cover - pathological probabilities
                    raise RuntimeError("cohort cannot be filled with evaluable participants")
            ev = sorted((p for p in members if p.evaluable), key=lambda p: (p.d0, p.subjid))
            tokens.append(f"{dose}" + "".join("T" if p.dlt_ae is not None else "N" for p in ev))
            if cfg.escalation.wait_for_window_close:
                close = max(p.window_end for p in ev)
            else:
                close = max(p.d0 for p in ev) + 7
            decision = recommend(parse_outcomes(" ".join(tokens)), self.nd, variant=cfg.escalation.variant,
                                 require_six_at_mtd=cfg.escalation.require_six_at_mtd,
                                 stop_at_two_dlts=cfg.escalation.stop_at_two_dlts)
            decisions.append({
                "cohort": cohort_no,
                "outcomes": " ".join(tokens),
                "decision_date": _iso(close),
                "next_dose": cfg.dose_levels[decision.next_dose - 1].id if decision.next_dose else None,
                "continue": decision.continue_trial,
                "mtd": cfg.dose_levels[decision.mtd - 1].id if decision.mtd else None,
                "reason": decision.reason,
            })
            if not decision.continue_trial or decision.next_dose is None:
                break
            dose = decision.next_dose
            open_day = close + rng.randint(3, 10)  # safety review committee
        return subjects, tokens, decisions

    def run_benchmark(self, n: int) -> tuple[list[_Subj], list[str], list[dict[str, Any]]]:
        cs = self.cfg.escalation.cohort_size
        subjects: list[_Subj] = []
        j = 0
        cohorts: dict[int, list[_Subj]] = {}
        for k in range(n):
            s = self.screen(k, self.start + (k * 365) // n)
            subjects.append(s)
            if s.eligible:
                cohort = j // cs
                self.treat(s, cohort % self.nd, cohort + 1)
                cohorts.setdefault(cohort, []).append(s)
                j += 1
        tokens = []
        for cohort, members in sorted(cohorts.items()):
            ev = sorted((p for p in members if p.evaluable), key=lambda p: (p.d0, p.subjid))
            if ev:
                tokens.append(f"{cohort % self.nd + 1}" + "".join("T" if p.dlt_ae is not None else "N" for p in ev))
        return subjects, tokens, []


def row_sort_key(form: crf.Form, codelists: crf.ResolvedCodelists):
    """Sort key of a row (list of strings in ``form.fields`` order) by the form key.

    Coded key fields sort in codelist order (visits in schedule order, lab tests in contract
    order), integer fields numerically, the rest as text.
    """
    names = [f.name for f in form.fields]
    parts = []
    for k in form.key:
        i = names.index(k)
        fld = form.fields[i]
        if fld.type == "int":
            parts.append((i, lambda v: (int(v) if v else -1, v)))
        elif fld.type == "code":
            order = {c: n for n, c in enumerate(codelists.resolve(fld.codelist) or [])}
            parts.append((i, lambda v, o=order: (o.get(v, len(o)), v)))
        else:
            parts.append((i, lambda v: (0, v)))
    return lambda row: tuple(fn(row[i]) for i, fn in parts)


# --------------------------------------------------------------------------------------------------
# Cutting the full timeline at the data cut


def _cut_rows(s: _Subj, cut: int) -> dict[str, list[list[str]]]:
    out: dict[str, list[list[str]]] = {}
    for fid, rows in s.rows.items():
        kept = []
        for known, vals, open_end in rows:
            if known > cut:
                continue
            if open_end is not None and open_end[0] > cut:
                vals = list(vals)
                for i, v in open_end[1].items():
                    vals[i] = v
            kept.append(vals)
        if kept:
            out[fid] = kept
    return out


def _truth_subject(sim: _Sim, s: _Subj, cut: int) -> dict[str, Any]:
    cfg = sim.cfg

    def on(d: int | None) -> bool:
        return d is not None and d <= cut

    def iso(d: int | None) -> str | None:
        return _iso(d) if on(d) else None

    decided = on(s.decision)
    enrolled = on(s.enrolled)
    infused = on(s.d0) and s.cells is not None
    ld_started = bool(s.ld_days) and on(s.ld_days[0])
    dlt = s.dlt_ae is not None and on(s.dlt_ae.start)
    died = on(s.death)
    exited = on(s.exit_date)
    crs = max((a.grade for a in s.aes if a.cat == "CRS" and on(a.start)), default=0)
    icans = max((a.grade for a in s.aes if a.cat == "ICANS" and on(a.start)), default=0)
    if not enrolled:
        evaluable, reason = (False, "Not enrolled") if decided else (None, "Screening")
    elif s.ne_reason is not None and on(s.ne_known):
        evaluable, reason = False, s.ne_reason
    elif dlt:
        evaluable, reason = True, None
    elif infused and s.evaluable and s.window_end <= cut:
        evaluable, reason = True, None
    elif infused:
        evaluable, reason = None, "DLT window open"
    else:
        evaluable, reason = None, "Not yet infused"
    apher = None
    if enrolled:
        if on(s.apher):
            apher = True
        elif s.apher is None and s.apher_reason is not None and on(s.apher_planned):
            apher = False
    return {
        "SUBJID": s.subjid,
        "site": s.site,
        "screened": True,
        "consent_date": _iso(s.consent),
        "screen_failure": (not s.eligible) if decided else None,
        "screen_failure_criterion": s.fail_crit if decided else None,
        "enrolled": enrolled,
        "enrolment_date": iso(s.enrolled),
        "dose_level": cfg.dose_levels[s.dose].id if enrolled and s.dose is not None else None,
        "cohort": s.cohort if enrolled else None,
        "leukapheresed": apher,
        "leukapheresis_not_done_reason": s.apher_reason if apher is False else None,
        "manufactured": s.mfg_status if on(s.reldat) else None,
        "lymphodepleted": ld_started,
        "infused": infused,
        "infusion_date": iso(s.d0) if infused else None,
        "cells_infused": s.cells if infused else None,
        "dlt": dlt,
        "dlt_type": s.dlt_type if dlt else None,
        "dlt_aespid": s.dlt_ae.spid if dlt else None,
        "dlt_window_end": _iso(s.window_end) if infused else None,
        "dlt_evaluable": evaluable,
        "not_evaluable_reason": reason,
        "max_crs_grade": crs,
        "max_icans_grade": icans,
        "died": died,
        "death_date": iso(s.death),
        "death_cause": s.death_cause if died else None,
        "disposition": s.exit_decod if exited else None,
        "disposition_date": iso(s.exit_date),
        "adverse_events": [_truth_ae(s, ae, cut, infused) for ae in s.aes if on(ae.start)],
        "best_overall_response": _truth_bor(s, cfg.response.sd_min_days) if infused else None,
    }


# RECIST 1.1 categories, best first.
_BOR_RANK = ("CR", "PR", "SD", "PD", "NE")


def _truth_bor(s: _Subj, sd_min_days: int) -> str:
    """Best overall response from the tumour assessments the export holds at the cut, written here
    independently of clinical/response.py (unconfirmed responses, as the demo configuration says):
    assessments after infusion up to the first PD; CR/PR count as they are, SD from ``sd_min_days``
    after infusion, PD; otherwise NE."""
    assert s.d0 is not None
    seen = sorted(s.rs_at_cut)
    cats = []
    for known, (_, _, _, res) in seen:
        day = known - s.d0
        if day < 1:
            continue
        if res in ("CR", "PR"):
            cats.append(res)
        elif res == "SD" and day >= sd_min_days:
            cats.append("SD")
        elif res == "PD":
            cats.append("PD")
            break
        else:
            cats.append("NE")
    return min(cats, key=_BOR_RANK.index) if cats else "NE"


def _truth_ae(s: _Subj, ae: _AE, cut: int, infused: bool) -> dict[str, Any]:
    """One AE as it stands at the cut (the export's row, with the true onset date beside the recorded one).

    end / outcome: blank end and NOT RECOVERED/NOT RESOLVED while the event is ongoing at the cut.
    grade and seriousness never change between cuts: the simulator records each AE once, at its
    final grade (it does not simulate a worsening recorded as a new row).
    dlt: the investigator's DLT flag (AEDLT = Y; always inside the DLT window in the simulator).
    treatment_emergent: infused by the cut and the true onset on or after the infusion day.
    """
    ongoing = ae.end is None or ae.end > cut
    return {
        "AESPID": ae.spid,
        "term": ae.term[0],
        "decod": ae.term[1],
        "soc": ae.term[2],
        "category": ae.cat,
        "start": _iso(ae.start),
        "start_recorded": _month(ae.start) if ae.partial else _iso(ae.start),
        "end": None if ongoing else _iso(ae.end),
        "grade": ae.grade,
        "serious": ae.ser == "Y",
        "relationship": ae.rel,
        "outcome": _NRN if ongoing else ae.out,
        "dlt": ae.dlt == "Y",
        "treatment_emergent": infused and s.d0 is not None and ae.start >= s.d0,
    }


def _notation_at_cut(sim: _Sim, subjects: list[_Subj], cut: int) -> str:
    """Complete DLT data at the cut, grouped per dose in infusion order into cohorts (as the pipeline does)."""
    cs = sim.cfg.escalation.cohort_size
    complete: dict[int, list[_Subj]] = {}
    for s in sorted((s for s in subjects if s.d0 is not None and s.cells is not None and s.d0 <= cut),
                    key=lambda s: (s.d0, s.subjid)):
        if s.dlt_ae is not None and s.dlt_ae.start <= cut:
            complete.setdefault(s.dose, []).append(s)
        elif s.evaluable and s.window_end <= cut:
            complete.setdefault(s.dose, []).append(s)
    grouped = []
    for dose, ss in complete.items():
        for i in range(0, len(ss), cs):
            chunk = ss[i:i + cs]
            grouped.append(((chunk[0].d0, chunk[0].subjid),
                            f"{dose + 1}" + "".join("T" if (p.dlt_ae is not None and p.dlt_ae.start <= cut) else "N"
                                                    for p in chunk)))
    return " ".join(t for _, t in sorted(grouped))


# --------------------------------------------------------------------------------------------------
# Public API


def simulate(
    cfg: StudyConfig,
    seed: int,
    data_cut: dt.date,
    participants: int | None = None,
    dlt_probabilities: Sequence[float] | None = None,
) -> SimulatedTrial:
    """Simulate the trial from ``seed`` and cut it at ``data_cut`` (see the module docstring)."""
    if participants is not None and participants < 1:
        raise ValueError(f"participants must be a positive number, got {participants}")
    n_sites = len(cfg.study.sites)
    if participants is not None:
        n_sites = max(n_sites, math.ceil(participants / 999))
    sim = _Sim(cfg, int(seed), dlt_probabilities, n_sites)
    if participants is None:
        subjects, tokens, decisions = sim.run_33()
        mode = "3+3"
    else:
        subjects, tokens, decisions = sim.run_benchmark(participants)
        mode = "benchmark"
    cut = data_cut.toordinal()
    subjects = sorted((s for s in subjects if s.consent <= cut), key=lambda s: s.subjid)
    rows: dict[str, list[list[str]]] = {f.id: [] for f in crf.FORMS}
    for s in subjects:
        for fid, rs in _cut_rows(s, cut).items():
            rows[fid].extend(rs)
        s.rs_at_cut = [(known, v) for known, v, _ in s.rows.get("rs", []) if known <= cut]
        s.rows = {}
    forms = {}
    for f in crf.FORMS:
        cols = [x.name for x in f.fields]
        data = rows.pop(f.id)
        columns = list(zip(*data)) if data else [() for _ in cols]
        del data
        forms[f.id] = pl.DataFrame({c: pl.Series(c, list(v), dtype=pl.String) for c, v in zip(cols, columns)})
        del columns
    per_subject = [_truth_subject(sim, s, cut) for s in subjects]
    per_dose = {}
    for i, d in enumerate(cfg.dose_levels):
        ps = [p for p in per_subject if p["dose_level"] == d.id]
        per_dose[d.id] = {
            "enrolled": len(ps),
            "infused": sum(p["infused"] for p in ps),
            "dlt_evaluable": sum(p["dlt_evaluable"] is True for p in ps),
            "dlt": sum(p["dlt"] for p in ps),
            "window_open": sum(p["not_evaluable_reason"] == "DLT window open" for p in ps),
            "true_dlt_probability": sim.p_dlt[i],
        }
    truth = {
        "study_id": cfg.study.id,
        "seed": int(seed),
        "data_cut": data_cut.isoformat(),
        "mode": mode,
        "dlt_probabilities": sim.p_dlt,
        "escalation": _notation_at_cut(sim, subjects, cut),
        "escalation_final": " ".join(tokens),
        "decisions": decisions,
        "decisions_by_cut": [d for d in decisions if d["decision_date"] <= data_cut.isoformat()],
        "per_dose": per_dose,
        "counts": {
            "screened": len(per_subject),
            "screen_failures": sum(p["screen_failure"] is True for p in per_subject),
            "enrolled": sum(p["enrolled"] for p in per_subject),
            "leukapheresed": sum(p["leukapheresed"] is True for p in per_subject),
            "lymphodepleted": sum(p["lymphodepleted"] for p in per_subject),
            "infused": sum(p["infused"] for p in per_subject),
            "dlt_evaluable": sum(p["dlt_evaluable"] is True for p in per_subject),
            "dlt": sum(p["dlt"] for p in per_subject),
            "deaths": sum(p["died"] for p in per_subject),
        },
        "participants": per_subject,
        "form_rows": {f.id: forms[f.id].height for f in crf.FORMS},
    }
    return SimulatedTrial(forms=forms, truth=truth, data_cut=data_cut, seed=int(seed))


def write_export(trial: SimulatedTrial, out_dir: Path) -> None:
    """One UTF-8 CSV per form (``<form>.csv``), header row, "\\n" line ends, minimal quoting.

    Existing ``.csv`` files of the folder that are not forms are removed, so the folder holds the
    export and nothing else of that kind.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = {f.file for f in crf.FORMS}
    for p in sorted(out_dir.iterdir()):
        if p.is_file() and p.suffix == ".csv" and p.name not in names:
            p.unlink()
    for f in crf.FORMS:
        df = trial.forms[f.id]
        cols = [x.name for x in f.fields]
        with (out_dir / f.file).open("w", encoding="utf-8", newline="") as fh:
            w = csv.writer(fh, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
            w.writerow(cols)
            for offset in range(0, df.height, 200_000):  # in slices: bounded memory for large exports
                part = df.slice(offset, 200_000)
                w.writerows(zip(*(part.get_column(c).fill_null("").to_list() for c in cols)))


def write_truth(trial: SimulatedTrial, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(trial.truth, sort_keys=True, indent=2) + "\n", encoding="utf-8")


def _summary(trial: SimulatedTrial, out: Path) -> str:
    t = trial.truth
    c = t["counts"]
    path = (
        f"; at cut '{t['escalation']}', full path '{t['escalation_final']}'"
        if t["mode"] == "3+3"
        else "; round-robin cohorts"
    )
    return (
        f"simulate: {t['study_id']} seed {t['seed']} cut {t['data_cut']} ({t['mode']}): {c['screened']} screened, "
        f"{c['screen_failures']} screen failures, {c['enrolled']} enrolled, {c['infused']} infused, "
        f"{c['dlt']} DLT, {c['deaths']} deaths{path} -> {out} ({len(crf.FORMS)} files)"
    )


class _ArgError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _ArgError(message)


def cli_simulate(argv: list[str]) -> int:
    """``--study STUDY.yaml --seed S --data-cut YYYY-MM-DD [--participants N] --out DIR [--truth FILE]``."""
    parser = _Parser(prog="python -m pipelines simulate", description="Simulate an IM83 CRF export.")
    parser.add_argument("--study", required=True, type=Path)
    parser.add_argument("--seed", required=True, type=int)
    parser.add_argument("--data-cut", required=True, type=dt.date.fromisoformat)
    parser.add_argument("--participants", type=int, default=None, help="benchmark mode: N screened participants")
    parser.add_argument("--dlt-probabilities", default=None,
                        help="comma-separated true DLT probability per dose level (default 0.05,0.15,0.35)")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--truth", type=Path, default=None)
    try:
        args = parser.parse_args(argv)
        cfg = load_study(args.study)
        probs = None
        if args.dlt_probabilities:
            probs = [float(x) for x in args.dlt_probabilities.split(",")]
        trial = simulate(cfg, args.seed, args.data_cut, participants=args.participants, dlt_probabilities=probs)
        write_export(trial, args.out)
        if args.truth is not None:
            write_truth(trial, args.truth)
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    except (_ArgError, StudyConfigError, ValueError, OSError) as exc:
        print(f"simulate: error: {exc}".replace("\n", " "), file=sys.stderr)
        return 2
    print(_summary(trial, args.out))
    return 0
