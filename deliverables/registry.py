"""ClinicalTrials.gov results draft for IM83, built from the analysis tables (no recounting).

Reference: ``shared/reference/registry.md`` (data model, PRS upload mapping, rules in section 4).

Outputs, all pure functions of a DuckDB connection / the built dict:

  build_results_section  API v2 ``resultsSection`` dict (ctg-oas-v2.yaml shapes: flow, baseline and
                         outcome numbers are strings, AE counts integers, enums in ENUM_CASE)
  results_json           the v2 study JSON (identification + resultsSection + hasResults), as bytes
  results_xml            the PRS results upload XML (RRSUploadSchema.xsd, partialUpload="true")
  validate_xml           lxml XMLSchema validation, errors with line numbers
  validate_against_oas   walks the OpenAPI component schemas ($ref, type, enum, properties)
  precheck               registry.md section 4 rules that can be checked on the draft -> Findings
  render_draft_html      human-readable draft in the order of the PRS data-entry screens

Group ids. JSON: module-local ``FG000``/``BG000``/``OG000``/``EG000`` + 3 digits in dose-level order
(DOSEN), as PRS assigns them; ``OG000`` restarts in every outcome measure; the baseline Total
column is the last BG id and exists only with >= 2 groups. XML: ids must be unique xs:IDs in the
whole document, so flow/baseline/event groups keep their JSON ids (distinct prefixes) and outcome
groups become ``OG000_1`` = JSON id + "_" + 1-based position of the measure.

Populations. Flow and baseline: enrolled participants (assigned to a dose level), by planned dose
(DOSEP); baseline N therefore equals STARTED (rule 29). Outcomes: DLT among DLT-evaluable
participants by assigned dose; TEAE outcomes and the adverse-event module: safety population
(infused), by dose received (DOSEA), the same columns as the DSMB report and workbook.
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import json
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import duckdb
import jinja2
import yaml
from lxml import etree

from clinical.adsl import AGE_GROUPS
from clinical.safety_tables import ANY_TEAE_ROWN, GRADE3_TEAE_ROWN, SERIOUS_TEAE_ROWN
from clinical.study import StudyConfig
from deliverables.tables import QUERIES, baseline_sql, round_sig, sentence_case

RRS_NS = "http://clinicaltrials.gov/rrs"
TOTAL = "TOTAL"

# Funnel stages of analysis.participant_flow after "enrolled" (flow_exits stages 2..6): every
# enrolled participant who did not complete appears in exactly one of them.
EXIT_STAGES = ("leukapheresed", "released", "lymphodepleted", "infused", "completed")
CUSTOM_MILESTONES = (
    ("leukapheresed", "Leukapheresed"),
    ("released", "Product released"),
    ("lymphodepleted", "Lymphodepleted"),
    ("infused", "Received IM83 CAR-T infusion"),
)

# Reasons not completed: ADSL / flow_exits codes -> PRS picklist display strings (DropWithdrawReasonTypeUtil).
# Values seen in posted records: Adverse Event, Lost to Follow-up, Physician Decision, Protocol Violation,
# Withdrawal by Subject, Lack of Efficacy; "Death" and "Pregnancy" are believed standard (UNVERIFIED:
# the full picklist is only visible inside PRS). Anything else is type "Other" with the reason as comment
# (XML otherReasonName), as rule 17 requires.
STANDARD_REASONS = {
    "ADVERSE EVENT": "Adverse Event",
    "DEATH": "Death",
    "LACK OF EFFICACY": "Lack of Efficacy",
    "LOST TO FOLLOW-UP": "Lost to Follow-up",
    "PHYSICIAN DECISION": "Physician Decision",
    "PREGNANCY": "Pregnancy",
    "PROTOCOL VIOLATION": "Protocol Violation",
    "WITHDRAWAL BY SUBJECT": "Withdrawal by Subject",
}
REASON_ORDER = list(STANDARD_REASONS.values())
OTHER = "Other"
OTHER_COMMENTS = {
    "PROGRESSIVE DISEASE": "Progressive disease",
    "MANUFACTURING FAILURE": "Manufacturing failure (product not released)",
    "ONGOING AT DATA CUT": "Ongoing at data cut-off",
}

RACE_CATEGORIES = (  # NIH/OMB, order as in posted records
    ("AMERICAN INDIAN OR ALASKA NATIVE", "American Indian or Alaska Native"),
    ("ASIAN", "Asian"),
    (
        "NATIVE HAWAIIAN OR OTHER PACIFIC ISLANDER",
        "Native Hawaiian or Other Pacific Islander",
    ),
    ("BLACK OR AFRICAN AMERICAN", "Black or African American"),
    ("WHITE", "White"),
    ("MORE THAN ONE RACE", "More than one race"),
    ("UNKNOWN", "Unknown or Not Reported"),
)
ETHNIC_CATEGORIES = (
    ("HISPANIC OR LATINO", "Hispanic or Latino"),
    ("NOT HISPANIC OR LATINO", "Not Hispanic or Latino"),
    ("UNKNOWN", "Unknown or Not Reported"),
)
SEX_CATEGORIES = (("F", "Female"), ("M", "Male"))
# PRS "Age, Categorical" categories: ADSL AGEGR1 (clinical/adsl.py derives it), as (code, label) pairs
# like the ones above; the code is the label.
AGE_CATEGORIES = tuple((label, label) for label, _ in AGE_GROUPS)

# MedDRA SOC names as ClinicalTrials.gov words (27 SOCs; cran/eudract inst/extdata/soc.xml).
PRS_SOCS = (
    "Blood and lymphatic system disorders",
    "Cardiac disorders",
    "Congenital, familial and genetic disorders",
    "Ear and labyrinth disorders",
    "Endocrine disorders",
    "Eye disorders",
    "Gastrointestinal disorders",
    "General disorders and administration site conditions",
    "Hepatobiliary disorders",
    "Immune system disorders",
    "Infections and infestations",
    "Injury, poisoning and procedural complications",
    "Investigations",
    "Metabolism and nutrition disorders",
    "Musculoskeletal and connective tissue disorders",
    "Neoplasms benign, malignant and unspecified (incl cysts and polyps)",
    "Nervous system disorders",
    "Pregnancy, puerperium and perinatal conditions",
    "Product issues",
    "Psychiatric disorders",
    "Renal and urinary disorders",
    "Reproductive system and breast disorders",
    "Respiratory, thoracic and mediastinal disorders",
    "Skin and subcutaneous tissue disorders",
    "Social circumstances",
    "Surgical and medical procedures",
    "Vascular disorders",
)
_SOC_BY_LOWER = {s.lower(): s for s in PRS_SOCS}

# v2 enums -> PRS XML display strings (registry.md section 3; legacy display strings).
PARAM_DISPLAY = {
    "GEOMETRIC_MEAN": "Geometric Mean",
    "GEOMETRIC_LEAST_SQUARES_MEAN": "Geometric Least Squares Mean",
    "LEAST_SQUARES_MEAN": "Least Squares Mean",
    "LOG_MEAN": "Log Mean",
    "MEAN": "Mean",
    "MEDIAN": "Median",
    "NUMBER": "Number",
    "COUNT_OF_PARTICIPANTS": "Count of Participants",
    "COUNT_OF_UNITS": "Count of Units",
}
BASELINE_DISPERSION_DISPLAY = {
    "NA": "Not Applicable",
    "STANDARD_DEVIATION": "Standard Deviation",
    "STANDARD_ERROR": "Standard Error",
    "INTER_QUARTILE_RANGE": "Inter-Quartile Range",
    "FULL_RANGE": "Full Range",
    "CONFIDENCE_80": "80% Confidence Interval",
    "CONFIDENCE_90": "90% Confidence Interval",
    "CONFIDENCE_95": "95% Confidence Interval",
    "CONFIDENCE_975": "97.5% Confidence Interval",
    "CONFIDENCE_99": "99% Confidence Interval",
    "CONFIDENCE_OTHER": "Other Confidence Interval",
    "GEOMETRIC_COEFFICIENT": "Geometric Coefficient of Variation",
}
OUTCOME_TYPE_DISPLAY = {
    "PRIMARY": "Primary",
    "SECONDARY": "Secondary",
    "OTHER_PRE_SPECIFIED": "Other Pre-specified",
    "POST_HOC": "Post-Hoc",
}
ASSESSMENT_DISPLAY = {
    "SYSTEMATIC_ASSESSMENT": "Systematic Assessment",
    "NON_SYSTEMATIC_ASSESSMENT": "Non-Systematic Assessment",
}
# Continuous parameter types need a dispersion (rule 20); counts do not.
CONTINUOUS_PARAMS = {
    "GEOMETRIC_MEAN",
    "GEOMETRIC_LEAST_SQUARES_MEAN",
    "LEAST_SQUARES_MEAN",
    "LOG_MEAN",
    "MEAN",
    "MEDIAN",
}
RANGE_DISPERSIONS = {
    "FULL_RANGE",
    "INTER_QUARTILE_RANGE",
    "Full Range",
    "Inter-Quartile Range",
}


class RegistryDataError(ValueError):
    """The analysis tables cannot be turned into a results draft (missing table, unmapped code)."""


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: Literal["ERROR", "WARNING"]
    where: str
    message: str


# --------------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------------


def _rows(
    con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None
) -> list[dict[str, Any]]:
    cur = con.execute(sql, params or [])
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]


def _table_exists(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    return bool(
        con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'analysis' AND table_name = ?",
            [name],
        ).fetchone()[0]
    )


def _n(x: Any) -> str:
    """A count as the string the v2 JSON uses."""
    return str(int(x or 0))


def _num(x: float | None, sig: int = 3) -> str | None:
    """A statistic rounded to ``sig`` significant digits (half up, :func:`deliverables.tables.round_sig`, the
    rounding of the DSMB report and workbook too), as a plain decimal string without exponent, thousands
    separators or trailing zeros: 12345.678 -> "12300", 45.25 -> "45.3" (sig=3), 7.0 -> "7"."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return None
    s = format(round_sig(x, sig), "f")
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return s


def _date_text(d: dt.date) -> str:
    return f"{d.day} {d:%B %Y}"


def _treatment_description(cfg: StudyConfig, label: str) -> str:
    ld = cfg.lymphodepletion
    agents = " and ".join(f"{a.name.lower()} {a.dose:g} {a.unit}" for a in ld.agents)
    return (
        f"{cfg.study.product}, single intravenous infusion at a target dose of {label} on Day 0, after "
        f"lymphodepleting chemotherapy with {agents} on Days {ld.start_day} to {ld.end_day}."
    )


def _anchor_text(cfg: StudyConfig) -> str:
    return (
        "IM83 CAR-T infusion (Day 0)"
        if cfg.safety.treatment_emergent_anchor == "infusion"
        else "the start of lymphodepleting chemotherapy"
    )


def _last_visit_text(cfg: StudyConfig) -> str:
    last = max((v for v in cfg.visits if v.day is not None), key=lambda v: v.day)
    return f"{last.label}, Day {last.day}"


def _follow_up_end_text(cfg: StudyConfig) -> str:
    if cfg.safety.treatment_emergent_end_days is not None:
        return f"Day {cfg.safety.treatment_emergent_end_days} after infusion"
    return f"the end of protocol follow-up ({_last_visit_text(cfg)})"


def _dose_levels(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """The dose levels in the report tables' order (their query: by DOSEN, then DOSE)."""
    return _rows(con, QUERIES["dose_levels"])


def _group_ids(prefix: str, doses: list[dict[str, Any]]) -> dict[str, str]:
    return {d["DOSE"]: f"{prefix}{i:03d}" for i, d in enumerate(doses)}


def _by_dose(rows: Iterable[dict[str, Any]], key: str = "N") -> dict[str, int]:
    return {r["DOSE"]: int(r[key] or 0) for r in rows}


# --------------------------------------------------------------------------------------------------
# 1. resultsSection
# --------------------------------------------------------------------------------------------------


def map_reason(reason: str | None) -> tuple[str, str | None]:
    """(PRS reason type, comment) for a flow_exits REASON; comment only for type "Other"."""
    raw = (reason or "Ongoing at data cut").strip()
    key = raw.upper()
    if key in STANDARD_REASONS:
        return STANDARD_REASONS[key], None
    if key in OTHER_COMMENTS:
        return OTHER, OTHER_COMMENTS[key]
    # free text of flow_exits (e.g. "Leukapheresis not performed: Withdrew consent before leukapheresis"):
    # a withdrawal of consent is the standard category; the stage it happened at shows in the milestones
    if re.search(
        r"\bwithdr[a-z]*\b.*\bconsent\b|\bconsent\b.*\bwithdrawn\b", raw, re.IGNORECASE
    ):
        return STANDARD_REASONS["WITHDRAWAL BY SUBJECT"], None
    return OTHER, sentence_case(raw)


def _flow_module(
    con: duckdb.DuckDBPyConnection, cfg: StudyConfig, data_cut: dt.date, doses
) -> dict[str, Any]:
    gid = _group_ids("FG", doses)
    flow = _rows(
        con,
        "SELECT STAGE, DOSE, N FROM analysis.participant_flow WHERE STAGEKIND = 'STAGE' AND DOSE <> ?",
        [TOTAL],
    )
    n: dict[str, dict[str, int]] = {}
    for r in flow:
        n.setdefault(r["STAGE"], {})[r["DOSE"]] = int(r["N"] or 0)
    for stage in ("enrolled", "completed", *EXIT_STAGES):
        if stage not in n:
            raise RegistryDataError(f"analysis.participant_flow has no stage {stage!r}")

    def achievements(values: dict[str, int]) -> list[dict[str, str]]:
        return [
            {"groupId": gid[d["DOSE"]], "numSubjects": _n(values.get(d["DOSE"], 0))}
            for d in doses
        ]

    # What a milestone counts where its title does not say it all (ADSL's population flags).
    comments = {
        "released": "Includes an out-of-specification product that was infused.",
        "completed": f"Completed protocol follow-up ({_last_visit_text(cfg)} after infusion).",
    }
    milestones = [{"type": "STARTED", "achievements": achievements(n["enrolled"])}]
    for stage, title in CUSTOM_MILESTONES:
        milestones.append({"type": title, **({"comment": comments[stage]} if stage in comments else {}),
                           "achievements": achievements(n[stage])})
    milestones.append(
        {"type": "COMPLETED", "comment": comments["completed"], "achievements": achievements(n["completed"])}
    )
    not_completed = {
        d["DOSE"]: n["enrolled"].get(d["DOSE"], 0) - n["completed"].get(d["DOSE"], 0)
        for d in doses
    }
    milestones.append(
        {"type": "NOT COMPLETED", "achievements": achievements(not_completed)}
    )

    exits = _rows(
        con,
        f"""SELECT REASON, DOSE, sum(N) AS N FROM analysis.flow_exits
            WHERE STAGE IN ({", ".join("?" for _ in EXIT_STAGES)}) AND DOSE <> ?
            GROUP BY REASON, DOSE ORDER BY REASON, DOSE""",
        [*EXIT_STAGES, TOTAL],
    )
    reasons: dict[tuple[str, str | None], dict[str, int]] = {}
    for r in exits:
        key = map_reason(r["REASON"])
        cell = reasons.setdefault(key, {})
        cell[r["DOSE"]] = cell.get(r["DOSE"], 0) + int(r["N"] or 0)

    def order(key: tuple[str, str | None]) -> tuple:
        t, c = key
        return (
            (REASON_ORDER.index(t), "")
            if t in REASON_ORDER
            else (len(REASON_ORDER), c or "")
        )

    drop_withdraws = []
    for key in sorted(reasons, key=order):
        t, comment = key
        dw: dict[str, Any] = {"type": t}
        if comment:
            dw["comment"] = comment
        dw["reasons"] = [
            {
                "groupId": gid[d["DOSE"]],
                "numSubjects": _n(reasons[key].get(d["DOSE"], 0)),
            }
            for d in doses
        ]
        drop_withdraws.append(dw)

    scr = {
        r["ROWN"]: r
        for r in _rows(
            con, "SELECT ROWN, ROWLBL, N FROM analysis.flow_screening ORDER BY ROWN"
        )
    }
    screened = int(scr[1]["N"]) if 1 in scr else 0
    not_enrolled = int(scr[2]["N"]) if 2 in scr else 0
    enrolled_total = sum(n["enrolled"].values())
    failed = [
        f"{r['ROWLBL'].strip().removeprefix('Failed:').strip()} ({int(r['N'])})"
        for k, r in sorted(scr.items())
        if 2 < k < 1000 and int(r["N"] or 0) > 0
    ]
    no_crit = int(scr[1000]["N"] or 0) if 1000 in scr else 0
    why = []
    if failed:
        why.append(
            "Failed eligibility criteria (a participant may fail more than one): "
            + "; ".join(failed)
            + "."
        )
    if no_crit:
        why.append(f"No failed criterion recorded: {no_crit}.")
    pre = (
        f"{screened} participants were screened; {not_enrolled} were not enrolled. "
        + "".join(w + " " for w in why)
        + f"{enrolled_total} eligible participants were enrolled and assigned to a dose level "
        "(STARTED). Leukapheresis, product release, lymphodepletion and CAR-T infusion are reported as milestones."
    )
    sites = cfg.study.sites
    countries = sorted({s.country for s in sites})
    where = (
        f"{sites[0].name}, {sites[0].country}"
        if len(sites) == 1
        else f"{len(sites)} sites in {', '.join(countries)}"
    )
    recruitment = (
        f"Participants were recruited at {where}, from {_date_text(cfg.study.start_date)} "
        f"(study start). Data cut-off for this draft: {_date_text(data_cut)}."
    )
    return {
        "preAssignmentDetails": pre,
        "recruitmentDetails": recruitment,
        "groups": [
            {
                "id": gid[d["DOSE"]],
                "title": d["DOSELBL"],
                "description": _treatment_description(cfg, d["DOSELBL"]),
            }
            for d in doses
        ],
        "periods": [
            {
                "title": "Overall Study",
                "milestones": milestones,
                "dropWithdraws": drop_withdraws,
            }
        ],
    }


# The baseline characteristics the registry reports. Their counts, median ages and age ranges are the
# rows of deliverables.tables.baseline_sql, the query of the DSMB report's and workbook's baseline
# table, so all three count them one way: sex, race and ethnicity upper-cased, a missing race or
# ethnicity as code UNKNOWN ("Unknown or Not Reported"), any other missing value as 'Missing'.
BASELINE_VARIABLES = {"AGE", "AGEGR1", "SEX", "RACE", "ETHNIC", "COUNTRY"}


def _check_enrolled(con: duckdb.DuckDBPyConnection, doses) -> None:
    """Refuse enrolled participants the baseline cannot show, naming the first: without a dose level of
    analysis.dose_levels (baseline_sql would count one without DOSEP in its Total) or without an age."""
    bad = _rows(
        con,
        """SELECT SUBJID, DOSEP FROM analysis.adsl
           WHERE ENRLFL = 'Y' AND (DOSEP IS NULL OR NOT list_contains(?, DOSEP) OR AGE IS NULL)
           ORDER BY SUBJID""",
        [[d["DOSE"] for d in doses]],
    )
    known = {d["DOSE"] for d in doses}
    for s in bad:
        if s["DOSEP"] not in known:
            raise RegistryDataError(
                f"adsl: enrolled participant {s['SUBJID']} has unknown dose level {s['DOSEP']!r}"
            )
    if bad:
        raise RegistryDataError(f"adsl.AGE missing for enrolled participant {bad[0]['SUBJID']}")


def _baseline_module(
    con: duckdb.DuckDBPyConnection, cfg: StudyConfig, doses
) -> dict[str, Any]:
    gid = _group_ids("BG", doses)
    total_id = f"BG{len(doses):03d}" if len(doses) >= 2 else None
    _check_enrolled(con, doses)
    n_cat: dict[tuple[str, str, str], int] = {}  # (variable, category, dose or TOTAL) -> participants
    denom: dict[str, int] = {}  # dose or TOTAL -> enrolled participants
    age: dict[str, dict[str, Any]] = {}  # dose or TOTAL -> age's median, min and max
    for r in _rows(con, baseline_sql(BASELINE_VARIABLES)):
        if r["KIND"] == "CAT":
            n_cat[(r["VAR"], r["CAT"], r["DOSE"])] = r["N"]
            denom[r["DOSE"]] = r["DENOM"]
        elif r["VAR"] == "AGE":
            age[r["DOSE"]] = r
    # (group id, the rows' DOSE); a dose level without participants has no rows: zero counts.
    columns = [(gid[d["DOSE"]], d["DOSE"]) for d in doses]
    if total_id:
        columns.append((total_id, TOTAL))

    def counts(var: str, cat: str) -> list[dict[str, str]]:
        return [{"groupId": g, "value": _n(n_cat.get((var, cat, dose)))} for g, dose in columns]

    denoms = [
        {
            "units": "Participants",
            "counts": [{"groupId": g, "value": _n(denom.get(dose))} for g, dose in columns],
        }
    ]

    def categorical(
        title: str, var: str, cats: tuple[tuple[str, str], ...]
    ) -> dict[str, Any]:
        codes = {c for c, _ in cats}
        for (v, cat, dose), n in n_cat.items():
            if v == var and dose == TOTAL and cat not in codes:
                raise RegistryDataError(
                    f"adsl.{var} {cat!r} of {n} enrolled participant(s) has no {title} category"
                )
        return {
            "title": title,
            "paramType": "COUNT_OF_PARTICIPANTS",
            "unitOfMeasure": "Participants",
            "classes": [
                {
                    "categories": [
                        {"title": label, "measurements": counts(var, code)}
                        for code, label in cats
                    ]
                }
            ],
        }

    age_cont = {
        "title": "Age, Continuous",
        "paramType": "MEDIAN",
        "dispersionType": "FULL_RANGE",
        "unitOfMeasure": "years",
        "classes": [
            {
                "categories": [
                    {
                        "measurements": [
                            {
                                "groupId": g,
                                "value": _num(age[dose]["MEDIAN"], sig=6),  # ages: 35.5 stays 35.5
                                "lowerLimit": _n(age[dose]["MIN"]),
                                "upperLimit": _n(age[dose]["MAX"]),
                            }
                            for g, dose in columns
                            if dose in age  # a group with no participants has no value (omitted, as PRS shows it)
                        ]
                    }
                ]
            }
        ],
    }
    age_categorical = categorical("Age, Categorical", "AGEGR1", AGE_CATEGORIES)

    # Regions are ADSL COUNTRY as is: clinical.adsl already made one spelling of each country ("CHINA"
    # on one form, "China" on nine -> "China"), the one the DSMB baseline table shows; a missing country is "Missing".
    regions: dict[str, dict[str, int]] = {}  # region -> dose or TOTAL -> participants
    for (var, cat, dose), n in n_cat.items():
        if var == "COUNTRY":
            regions.setdefault(cat, {})[dose] = n
    region = {
        "title": "Region of Enrollment",
        "paramType": "NUMBER",
        "unitOfMeasure": "participants",
        "classes": [
            {
                "title": c,
                "categories": [
                    {
                        "measurements": [
                            {"groupId": g, "value": _n(regions[c].get(dose))}
                            for g, dose in columns
                        ]
                    }
                ],
            }
            for c in sorted(regions)
        ],
    }
    groups = [
        {
            "id": gid[d["DOSE"]],
            "title": d["DOSELBL"],
            "description": _treatment_description(cfg, d["DOSELBL"]),
        }
        for d in doses
    ]
    if total_id:
        groups.append(
            {
                "id": total_id,
                "title": "Total",
                "description": "Total of all reporting groups",
            }
        )
    return {
        "populationDescription": (
            "All enrolled participants (eligible and assigned to a dose level), analysed by assigned dose level, "
            "whether or not they received IM83 CAR-T cells; the same participants as STARTED in the participant flow."
        ),
        "groups": groups,
        "denoms": denoms,
        "measures": [
            age_cont,
            age_categorical,
            categorical("Sex: Female, Male", "SEX", SEX_CATEGORIES),
            categorical("Race (NIH/OMB)", "RACE", RACE_CATEGORIES),
            categorical("Ethnicity (NIH/OMB)", "ETHNIC", ETHNIC_CATEGORIES),
            region,
        ],
    }


def _measure_groups(gid: dict[str, str], doses, description: str) -> list[dict[str, str]]:
    """An outcome measure's groups: one per dose level, described as '<description> <dose label>.'."""
    return [{"id": gid[d["DOSE"]], "title": d["DOSELBL"], "description": f"{description} {d['DOSELBL']}."}
            for d in doses]


def _measure_denoms(gid: dict[str, str], doses, n: dict[str, int]) -> list[dict[str, Any]]:
    """An outcome measure's participants analysed per group (0 for a dose level absent from ``n``)."""
    return [{"units": "Participants",
             "counts": [{"groupId": gid[d["DOSE"]], "value": _n(n.get(d["DOSE"], 0))} for d in doses]}]


def _outcome_count(
    *,
    type_: str,
    title: str,
    description: str,
    population: str,
    time_frame: str,
    doses,
    group_desc: str,
    denom: dict[str, int],
    value: dict[str, int],
) -> dict[str, Any]:
    gid = _group_ids("OG", doses)
    empty = [d["DOSELBL"] for d in doses if denom.get(d["DOSE"], 0) == 0]
    if empty:
        population += (
            f" No participant was analysable at {', '.join(empty)} at the data cut-off."
        )
    return {
        "type": type_,
        "title": title,
        "description": description,
        "populationDescription": population,
        "paramType": "COUNT_OF_PARTICIPANTS",
        "unitOfMeasure": "Participants",
        "timeFrame": time_frame,
        "groups": _measure_groups(gid, doses, group_desc),
        "denoms": _measure_denoms(gid, doses, denom),
        "classes": [
            {
                "categories": [
                    {
                        "measurements": [
                            {
                                "groupId": gid[d["DOSE"]],
                                "value": _n(value.get(d["DOSE"], 0)),
                            }
                            for d in doses
                            if denom.get(d["DOSE"], 0) > 0
                        ]
                    }
                ]
            }
        ],
    }


# PK parameters of analysis.pk_summary reported as outcomes: (PARAMCD, title, paramType, unit, population note).
# Matched on PARAMCD (clinical/pk.py: CMAX, TMAX, AUC<window>, AUCLAST, ...); a table without PARAMCD is matched
# on the start of PARAM ("Cmax ...") with the window AUC as "AUC0-<w>". Other parameters (AUClast, Tlast, Clast,
# lambda-z, half-life) are not registered outcomes and are not reported.
PK_PARAMS = (
    (
        "CMAX",
        "Maximum Transgene Level (Cmax) of IM83 CAR-T Cells in Peripheral Blood",
        "GEOMETRIC_MEAN",
        "{unit}",
        "",
    ),
    (
        "TMAX",
        "Time to Maximum Transgene Level (Tmax) of IM83 CAR-T Cells in Peripheral Blood",
        "MEDIAN",
        "days",
        "",
    ),
    (
        "AUC{w}",
        "Area Under the Transgene Level-time Curve From Day 0 to Day {w} (AUC0-{w}) of IM83 CAR-T Cells",
        "GEOMETRIC_MEAN",
        "{unit}*days",
        " AUC0-{w} needs a sample on or after Day {w}.",
    ),
)


def _pk_rows(
    rows: list[dict[str, Any]], code: str, w: int
) -> dict[str, dict[str, Any]]:
    if rows and "PARAMCD" in rows[0]:
        return {r["DOSE"]: r for r in rows if str(r["PARAMCD"]).upper() == code}
    label = {"CMAX": "CMAX", "TMAX": "TMAX"}.get(code, f"AUC0-{w}")
    return {
        r["DOSE"]: r
        for r in rows
        if str(r["PARAM"]).upper().replace(" ", "").startswith(label)
    }


def _pk_outcomes(
    con: duckdb.DuckDBPyConnection, cfg: StudyConfig, doses
) -> list[dict[str, Any]]:
    if not _table_exists(con, "pk_summary"):
        return []
    cols = {
        r["column_name"]
        for r in _rows(
            con,
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'analysis' AND table_name = 'pk_summary'",
        )
    }
    rows = _rows(
        con,
        f"SELECT {'PARAMCD, ' if 'PARAMCD' in cols else ''}PARAM, DOSE, N, GEOMEAN, GEOCV, MEDIAN, MIN, MAX "
        "FROM analysis.pk_summary WHERE DOSE <> ?",
        [TOTAL],
    )
    w = cfg.pk.auc_window_days
    days = sorted({v.day for v in cfg.visits if v.day is not None and 0 < v.day <= w})
    time_frame = (
        f"Day 0 (infusion) and Days {', '.join(str(d) for d in days)} after infusion"
    )
    gid = _group_ids("OG", doses)
    out = []
    for code, title, param, unit, pop_note in PK_PARAMS:
        prow = _pk_rows(rows, code.format(w=w), w)
        if not prow:
            continue
        geo = param == "GEOMETRIC_MEAN"
        measurements = []
        for d in doses:
            r = prow.get(d["DOSE"])
            if not r or not int(r["N"] or 0):
                continue  # no participant analysed: no value (denominator 0)
            if geo:
                m = {"groupId": gid[d["DOSE"]], "value": _num(r["GEOMEAN"]) or "NA"}
                cv = _num(r["GEOCV"], sig=3) if m["value"] != "NA" else None
                m["spread"] = cv if cv is not None else "NA"
                if m["value"] == "NA":
                    m["comment"] = (
                        "Geometric mean not calculable: a participant had no quantifiable level (value 0)."
                    )
                elif cv is None:
                    m["comment"] = (
                        "Geometric coefficient of variation not calculable with 1 participant."
                    )
            else:
                m = {
                    "groupId": gid[d["DOSE"]],
                    "value": _num(r["MEDIAN"]) or "NA",
                    "lowerLimit": _num(r["MIN"]) or "NA",
                    "upperLimit": _num(r["MAX"]) or "NA",
                }
                if "NA" in (m["value"], m["lowerLimit"], m["upperLimit"]):
                    m["comment"] = "Not calculable."
            measurements.append(m)
        out.append(
            {
                "type": "SECONDARY",
                "title": title.format(w=w),
                "description": (
                    f"{cfg.pk.analyte} in peripheral blood (lower limit of quantification {cfg.pk.lloq:g} "
                    f"{cfg.pk.unit}); non-compartmental analysis, AUC by the {cfg.pk.auc_method} trapezoidal method."
                ),
                "populationDescription": (
                    "PK-evaluable participants: infused, with at least one quantifiable post-infusion sample, by dose "
                    "level received." + pop_note.format(w=w)
                ),
                "paramType": param,
                "dispersionType": "Geometric Coefficient of Variation"
                if geo
                else "Full Range",
                "unitOfMeasure": unit.format(unit=cfg.pk.unit),
                "timeFrame": time_frame,
                "groups": _measure_groups(gid, doses, "PK-evaluable participants infused at"),
                "denoms": _measure_denoms(gid, doses, {d: r["N"] for d, r in prow.items()}),
                "classes": [{"categories": [{"measurements": measurements}]}],
            }
        )
    return out


def _outcomes_module(
    con: duckdb.DuckDBPyConnection, cfg: StudyConfig, doses
) -> dict[str, Any]:
    win = cfg.escalation.dlt_window_days
    if _table_exists(con, "dose_escalation"):
        esc = _rows(con, "SELECT DOSE, EVALUABLE, DLTS FROM analysis.dose_escalation")
        evaluable, dlts = _by_dose(esc, "EVALUABLE"), _by_dose(esc, "DLTS")
    else:  # same definitions: DLT-evaluable analysis set, adjudicated DLT flag, by assigned dose
        evaluable = _by_dose(
            _rows(
                con,
                "SELECT DOSE, N FROM analysis.participant_flow WHERE STAGE = 'dlt_evaluable' AND DOSE <> ?",
                [TOTAL],
            )
        )
        dlts = _by_dose(
            _rows(
                con,
                """SELECT DOSEP AS DOSE, count(*) AS N FROM analysis.adsl
                   WHERE DLTEVLFL = 'Y' AND DLTFL = 'Y' GROUP BY DOSEP""",
            )
        )
    dlt = _outcome_count(
        type_="PRIMARY",
        title="Number of Participants With Dose-limiting Toxicity (DLT)",
        description=(
            f"A DLT is an adverse event with onset from Day 0 to Day {win} after IM83 CAR-T infusion, graded "
            f"by NCI CTCAE v{cfg.safety.ctcae_version} (cytokine release syndrome and ICANS by {cfg.safety.crs_ics_grading}), "
            "that meets the protocol's DLT criteria as adjudicated by the investigator. Dose escalation: 3+3 design "
            f"({cfg.escalation.variant}), cohorts of {cfg.escalation.cohort_size} participants."
        ),
        population=(
            "DLT-evaluable participants: infused at the assigned dose level with a cell dose within "
            f"{cfg.escalation.dose_tolerance:.0%} of the target, who either had a DLT or completed the {win}-day DLT "
            "window. Participants whose window was still open at the data cut-off are not included."
        ),
        time_frame=f"Day 0 to Day {win} after infusion",
        doses=doses,
        group_desc="DLT-evaluable participants assigned to and infused at",
        denom=evaluable,
        value=dlts,
    )
    summ = _rows(
        con,
        "SELECT ROWN, DOSE, N, DENOM FROM analysis.teae_summary WHERE ROWN IN (?, ?) AND DOSE <> ?",
        [ANY_TEAE_ROWN, GRADE3_TEAE_ROWN, TOTAL],
    )
    denom = {r["DOSE"]: int(r["DENOM"] or 0) for r in summ if r["ROWN"] == ANY_TEAE_ROWN}
    te_def = (
        f"Treatment-emergent adverse events (TEAEs): adverse events starting on or after {_anchor_text(cfg)}, "
        f"coded with {cfg.registry.source_vocabulary} and graded by NCI CTCAE v{cfg.safety.ctcae_version} "
        f"(cytokine release syndrome and ICANS by {cfg.safety.crs_ics_grading}). A participant is counted once."
    )
    te_frame = f"From {_anchor_text(cfg)} to {_follow_up_end_text(cfg)}"
    te_pop = "Safety population: all participants who received IM83 CAR-T cells, by dose level received."
    teae = _outcome_count(
        type_="PRIMARY",
        title="Number of Participants With Treatment-emergent Adverse Events (TEAEs)",
        description=te_def,
        population=te_pop,
        time_frame=te_frame,
        doses=doses,
        group_desc="Participants infused at",
        denom=denom,
        value={r["DOSE"]: int(r["N"] or 0) for r in summ if r["ROWN"] == ANY_TEAE_ROWN},
    )
    teae3 = _outcome_count(
        type_="SECONDARY",
        title="Number of Participants With Grade 3 or Higher Treatment-emergent Adverse Events (TEAEs)",
        description=te_def + " Grade 3 or higher: worst CTCAE grade >= 3.",
        population=te_pop,
        time_frame=te_frame,
        doses=doses,
        group_desc="Participants infused at",
        denom=denom,
        value={r["DOSE"]: int(r["N"] or 0) for r in summ if r["ROWN"] == GRADE3_TEAE_ROWN},
    )
    return {"outcomeMeasures": [dlt, teae, teae3, *_pk_outcomes(con, cfg, doses)]}


def _ae_module(
    con: duckdb.DuckDBPyConnection, cfg: StudyConfig, doses, data_cut: dt.date
) -> dict[str, Any]:
    gid = _group_ids("EG", doses)
    at_risk = _by_dose(
        _rows(
            con,
            "SELECT DOSE, N_AT_RISK FROM analysis.safety_groups WHERE DOSE <> ?",
            [TOTAL],
        ),
        "N_AT_RISK",
    )
    serious_aff = _by_dose(
        _rows(
            con,
            "SELECT DOSE, N FROM analysis.teae_summary WHERE ROWN = ? AND DOSE <> ?",
            [SERIOUS_TEAE_ROWN, TOTAL],
        )
    )
    deaths = _by_dose(
        _rows(
            con,
            """SELECT DOSEA AS DOSE, count(DISTINCT SUBJID) AS N FROM analysis.adsl
               WHERE SAFFL = 'Y' AND DTHDT IS NOT NULL GROUP BY DOSEA""",
        )
    )
    threshold = float(cfg.safety.registry_frequency_threshold)
    vocab, assess = cfg.registry.source_vocabulary, cfg.registry.assessment_type

    def events(scope: str) -> list[dict[str, Any]]:
        rows = _rows(
            con,
            """SELECT AEBODSYS, AEDECOD, DOSE, N_AFFECTED, N_EVENTS, N_AT_RISK FROM analysis.ae_by_term
               WHERE SCOPE = ? AND DOSE <> ? ORDER BY AEBODSYS, AEDECOD""",
            [scope, TOTAL],
        )
        terms: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
        for r in rows:
            terms.setdefault((r["AEBODSYS"], r["AEDECOD"]), {})[r["DOSE"]] = r
        out = []
        for (soc, pt), cells in sorted(terms.items()):
            if scope == "NON-SERIOUS" and not any(
                int(c["N_AT_RISK"] or 0) > 0
                and int(c["N_AFFECTED"] or 0) > 0
                and 100.0 * int(c["N_AFFECTED"]) / int(c["N_AT_RISK"]) >= threshold
                for c in cells.values()
            ):
                continue
            out.append(
                {
                    "term": pt,
                    "organSystem": _SOC_BY_LOWER.get(str(soc).lower(), soc),
                    "sourceVocabulary": vocab,
                    "assessmentType": assess,
                    "stats": [
                        {
                            "groupId": gid[d["DOSE"]],
                            "numEvents": int(
                                cells.get(d["DOSE"], {}).get("N_EVENTS") or 0
                            ),
                            "numAffected": int(
                                cells.get(d["DOSE"], {}).get("N_AFFECTED") or 0
                            ),
                            # at risk = the safety column's N (same as the DSMB tables), also for absent cells
                            "numAtRisk": at_risk.get(d["DOSE"], 0),
                        }
                        for d in doses
                    ],
                }
            )
        return out

    serious, other = events("SERIOUS"), events("NON-SERIOUS")
    other_aff = _other_affected(con, {(e["organSystem"], e["term"]) for e in other})
    period_end = f"{_follow_up_end_text(cfg)} or the data cut-off ({_date_text(data_cut)}), whichever is earlier"
    return {
        "frequencyThreshold": cfg.safety.registry_frequency_threshold,
        "timeFrame": cfg.registry.ae_time_frame,
        # The adverse events and the deaths are counted over one period, said the same way in both.
        "description": (
            f"Tables report treatment-emergent adverse events, starting from {_anchor_text(cfg)} to "
            f"{period_end}, in the safety population (all participants who received IM83 CAR-T "
            f"cells), by dose level received. Coded with {vocab}; graded by NCI CTCAE v{cfg.safety.ctcae_version} "
            f"(CRS and ICANS by {cfg.safety.crs_ics_grading}). Adverse events before {_anchor_text(cfg)} "
            "were collected but are not treatment-emergent and are not reported here."
        ),
        "allCauseMortalityComment": (
            f"All-cause mortality in the safety population, from {_anchor_text(cfg)} to {period_end}. Deaths of "
            "enrolled participants who were not infused are reported in the participant flow."
        ),
        "eventGroups": [
            {
                "id": gid[d["DOSE"]],
                "title": d["DOSELBL"],
                "description": f"Participants who received IM83 CAR-T cells at {d['DOSELBL']}.",
                "deathsNumAffected": deaths.get(d["DOSE"], 0),
                "deathsNumAtRisk": at_risk.get(d["DOSE"], 0),
                "seriousNumAffected": serious_aff.get(d["DOSE"], 0),
                "seriousNumAtRisk": at_risk.get(d["DOSE"], 0),
                "otherNumAffected": other_aff.get(d["DOSE"], 0),
                "otherNumAtRisk": at_risk.get(d["DOSE"], 0),
            }
            for d in doses
        ],
        "seriousEvents": serious,
        "otherEvents": other,
    }


def _other_affected(
    con: duckdb.DuckDBPyConnection, listed: set[tuple[str, str]]
) -> dict[str, int]:
    """Participants per dose with >= 1 of the listed non-serious TEAE terms (distinct participants can't be
    summed from ae_by_term, so this reads analysis.adae with the exact filters of analysis.ae_by_term).

    ``listed`` holds (organ system, term) pairs whose organ system is the PRS SOC name
    (``_SOC_BY_LOWER.get(soc.lower(), soc)``); adae's SOC is put into the same words in SQL through the
    same lower-case -> PRS name mapping, passed as parameters like the pairs (no data in the SQL text).
    Counted in DuckDB: count(DISTINCT SUBJID) per DOSEA."""
    if not listed:
        return {}
    if not _table_exists(con, "adae"):
        raise RegistryDataError(
            "analysis.adae is needed for otherNumAffected (participants with any other AE)"
        )
    pairs = sorted(listed, key=lambda p: (str(p[0]), str(p[1])))
    rows = _rows(
        con,
        """WITH listed AS (SELECT unnest(?::VARCHAR[]) AS SOC, unnest(?::VARCHAR[]) AS PT),
           soc_names AS (SELECT unnest(?::VARCHAR[]) AS LOWER_SOC, unnest(?::VARCHAR[]) AS PRS_SOC),
           ae AS (SELECT DOSEA AS DOSE, SUBJID, coalesce(AEBODSYS, 'Uncoded') AS SOC,
                         coalesce(AEDECOD, 'Uncoded: ' || AETERM) AS PT
                  FROM analysis.adae WHERE TRTEMFL = 'Y' AND SAFFL = 'Y' AND AESER = 'N')
           SELECT ae.DOSE, count(DISTINCT ae.SUBJID) AS N
           FROM ae LEFT JOIN soc_names n ON n.LOWER_SOC = lower(ae.SOC)
           JOIN listed l ON l.SOC = coalesce(n.PRS_SOC, ae.SOC) AND l.PT IS NOT DISTINCT FROM ae.PT
           GROUP BY ae.DOSE""",
        [
            [p[0] for p in pairs],
            [p[1] for p in pairs],
            list(_SOC_BY_LOWER),
            list(_SOC_BY_LOWER.values()),
        ],
    )
    return {r["DOSE"]: int(r["N"]) for r in rows}


def build_results_section(
    con: duckdb.DuckDBPyConnection, cfg: StudyConfig, data_cut: dt.date
) -> dict[str, Any]:
    """The API v2 ``resultsSection`` of the draft, from the ``analysis`` tables of ``con``."""
    doses = _dose_levels(con)
    if not doses:
        raise RegistryDataError("analysis.dose_levels is empty")
    poc = cfg.registry.point_of_contact
    return {
        "participantFlowModule": _flow_module(con, cfg, data_cut, doses),
        "baselineCharacteristicsModule": _baseline_module(con, cfg, doses),
        "outcomeMeasuresModule": _outcomes_module(con, cfg, doses),
        "adverseEventsModule": _ae_module(con, cfg, doses, data_cut),
        "moreInfoModule": {
            "limitationsAndCaveats": {
                "description": (
                    f"DRAFT generated from the clinical database at the data cut-off of {_date_text(data_cut)}; "
                    "not reviewed or released. The study was ongoing at the data cut-off: participants still on "
                    "study and open DLT windows mean that results are incomplete and will change."
                )
            },
            "pointOfContact": {
                "title": poc.title,
                "organization": poc.organization,
                "email": poc.email,
                "phone": poc.phone,
            },
        },
    }


# --------------------------------------------------------------------------------------------------
# 2. JSON
# --------------------------------------------------------------------------------------------------


def results_json(results_section: dict[str, Any], cfg: StudyConfig) -> bytes:
    """The v2 study JSON; key order as built (the spec's property order), so bytes are deterministic."""
    study = {
        "protocolSection": {
            "identificationModule": {
                "nctId": cfg.study.nct_id,
                "orgStudyIdInfo": {"id": cfg.study.protocol_id},
                "briefTitle": " ".join(cfg.study.title.split()),
            }
        },
        "resultsSection": results_section,
        "hasResults": False,
    }
    return (json.dumps(study, ensure_ascii=False, indent=2) + "\n").encode("utf-8")


# --------------------------------------------------------------------------------------------------
# 3. PRS upload XML
# --------------------------------------------------------------------------------------------------


def _sub(parent: etree._Element, tag: str, text: Any = None) -> etree._Element:
    el = etree.SubElement(parent, tag)
    if text is not None:
        el.text = str(text)
    return el


def _opt(parent: etree._Element, tag: str, text: Any) -> None:
    if text is not None and text != "":
        _sub(parent, tag, text)


def _xml_measure_rows(parent: etree._Element, classes: list[dict], id_of) -> None:
    rows = _sub(parent, "measureRows")
    for cls in classes:
        row = _sub(rows, "measureRow")
        values = _sub(row, "reportedValues")
        by_group: dict[str, list[tuple[str | None, dict]]] = {}
        order: list[str] = []
        for cat in cls.get("categories", []):
            for m in cat.get("measurements", []):
                if m["groupId"] not in by_group:
                    order.append(m["groupId"])
                by_group.setdefault(m["groupId"], []).append((cat.get("title"), m))
        for g in order:
            rv = _sub(values, "reportedValue")
            _sub(rv, "reportingGroupId", id_of(g))
            entries = _sub(rv, "reportedEntries")
            for cat_title, m in by_group[g]:
                e = _sub(entries, "reportedEntry")
                _opt(e, "catName", cat_title)
                _opt(e, "dispersionLowerLimit", m.get("lowerLimit"))
                _opt(e, "dispersionSpread", m.get("spread"))
                _opt(e, "dispersionUpperLimit", m.get("upperLimit"))
                _opt(e, "naComment", m.get("comment"))
                _opt(e, "parameterValue", m.get("value"))
        _opt(row, "title", cls.get("title"))


def _xml_measure_common(el: etree._Element, m: dict, id_of, *, outcome: bool) -> None:
    """Elements of the abstract Measure type, in XSD order."""
    if "calculatePct" in m:
        _sub(el, "calculatePct", "Yes" if m["calculatePct"] else "No")
    disp = m.get("dispersionType")
    if disp is not None:
        _sub(
            el, "dispersionType", disp if outcome else BASELINE_DISPERSION_DISPLAY[disp]
        )
    _xml_measure_rows(el, m.get("classes", []), id_of)
    _opt(el, "measureDescription", m.get("description"))
    _opt(
        el,
        "parameterType",
        PARAM_DISPLAY.get(m.get("paramType")) if m.get("paramType") else None,
    )
    _opt(el, "populationAnalysisDescription", m.get("populationDescription"))
    _opt(el, "selectedUnitOfAnalysis", m.get("denomUnitsSelected"))
    if outcome:
        _opt(el, "timeFrame", m.get("timeFrame"))
    _opt(el, "title", m.get("title"))
    _opt(el, "unitOfMeasure", m.get("unitOfMeasure"))


def _denom_counts(module_or_measure: dict) -> dict[str, str]:
    out: dict[str, str] = {}
    for den in module_or_measure.get("denoms", []):
        if den.get("units", "Participants") == "Participants":
            out.update({c["groupId"]: c["value"] for c in den.get("counts", [])})
    return out


def _xml_baseline(root: etree._Element, b: dict) -> None:
    el = _sub(root, "baseline")
    measures = _sub(el, "baselineMeasures")
    for m in b.get("measures", []):
        _xml_measure_common(
            _sub(measures, "baselineMeasure"), m, lambda g: g, outcome=False
        )
    groups = b.get("groups", [])
    total = (
        groups[-1] if len(groups) >= 3 and groups[-1].get("title") == "Total" else None
    )
    counts = _denom_counts(b)
    rg = _sub(el, "baselineReportingGroups")
    for g in groups:
        if g is total:
            continue
        _xml_group(_sub(rg, "baselineReportingGroup", None), g, counts)
    _opt(el, "populationAnalysisDescription", b.get("populationDescription"))
    if total is not None:
        _xml_group(_sub(el, "totalBaselineReportingGroup"), total, counts)
    _opt(el, "typeUnitsAnalyzed", b.get("typeUnitsAnalyzed"))


def _xml_group(
    el: etree._Element, g: dict, counts: dict[str, str], xml_id: str | None = None
) -> None:
    el.set("id", xml_id or g["id"])
    _opt(el, "description", g.get("description"))
    _opt(el, "subjectsAnalyzed", counts.get(g["id"]))
    _opt(el, "title", g.get("title"))


def outcome_xml_id(json_id: str, measure_index: int) -> str:
    """Document-unique xs:ID of an outcome group: OG000 of the 1st measure -> OG000_1."""
    return f"{json_id}_{measure_index}"


def _xml_outcomes(root: etree._Element, om: dict) -> None:
    el = _sub(root, "outcomeMeasures")
    for i, m in enumerate(om.get("outcomeMeasures", []), start=1):
        o = _sub(el, "outcomeMeasure")

        def id_of(g: str, i: int = i) -> str:
            return outcome_xml_id(g, i)

        _xml_measure_common(o, m, id_of, outcome=True)
        _sub(o, "measureType", OUTCOME_TYPE_DISPLAY[m["type"]])
        analyses = _sub(o, "outcomeMeasureAnalyses")
        for a in m.get(
            "analyses", []
        ):  # none are built for IM83; kept for completeness
            ma = _sub(analyses, "measureAnalysis")
            grp = _sub(ma, "outcomeReportingGroups")
            for g in a.get("groupIds", []):
                _sub(grp, "outcomeReportingGroupId", id_of(g))
            _sub(ma, "parameterType", a.get("paramType", "Other"))
        counts = _denom_counts(m)
        groups = _sub(o, "outcomeReportingGroups")
        for g in m.get("groups", []):
            _xml_group(_sub(groups, "outcomeReportingGroup"), g, counts, id_of(g["id"]))
        _opt(o, "typeUnitsAnalyzed", m.get("typeUnitsAnalyzed"))


def _xml_achievements(parent: etree._Element, achievements: list[dict]) -> None:
    ach = _sub(parent, "milestoneAchievements")
    for a in achievements:
        x = _sub(ach, "milestoneAchievement")
        _sub(x, "reportingGroupId", a["groupId"])
        _opt(x, "comment", a.get("comment"))
        _opt(x, "subjectsAchieve", a.get("numSubjects"))
        _opt(x, "unitsAchieve", a.get("numUnits"))


def _xml_flow(root: etree._Element, f: dict) -> None:
    el = _sub(root, "participantFlow")
    groups = _sub(el, "participantFlowGroups")
    for g in f.get("groups", []):
        fg = _sub(groups, "flowGroup")
        fg.set("id", g["id"])
        _opt(fg, "description", g.get("description"))
        _opt(fg, "title", g.get("title"))
    periods = _sub(el, "periods")
    for p in f.get("periods", []):
        pe = _sub(periods, "period")
        ms = {m["type"]: m for m in p.get("milestones", [])}
        completed = _sub(pe, "completedMilestone")
        _opt(completed, "comment", ms.get("COMPLETED", {}).get("comment"))
        _xml_achievements(completed, ms.get("COMPLETED", {}).get("achievements", []))
        dwr = _sub(pe, "dropWithdrawReasons")
        for dw in p.get("dropWithdraws", []):
            r = _sub(dwr, "dropWithdrawReason")
            det = _sub(r, "dropWithdrawReasonDetails")
            for x in dw.get("reasons", []):
                d = _sub(det, "reasonDetail")
                _sub(d, "reportingGroupId", x["groupId"])
                _opt(d, "subjectsAffected", x.get("numSubjects"))
            _opt(
                r, "otherReasonName", dw.get("comment") if dw["type"] == OTHER else None
            )
            _sub(r, "reasonType", dw["type"])
        misc = _sub(pe, "milestones")
        for m in p.get("milestones", []):
            if m["type"] in (
                "STARTED",
                "COMPLETED",
                "NOT COMPLETED",
            ):  # NOT COMPLETED is derived by PRS
                continue
            x = _sub(misc, "milestone")
            _opt(x, "comment", m.get("comment"))
            _xml_achievements(x, m.get("achievements", []))
            _sub(x, "titleOther", m["type"])
        started = _sub(pe, "startedMilestone")
        _opt(started, "comment", ms.get("STARTED", {}).get("comment"))
        _xml_achievements(started, ms.get("STARTED", {}).get("achievements", []))
        _opt(pe, "title", p.get("title"))
    _opt(el, "preAssignmentDescription", f.get("preAssignmentDetails"))
    _opt(el, "recruitmentDetails", f.get("recruitmentDetails"))
    _opt(el, "typeUnitsAnalyzed", f.get("typeUnitsAnalyzed"))


def _xml_events(parent: etree._Element, tag: str, events: list[dict]) -> None:
    for e in events:
        x = _sub(parent, tag)
        stats = _sub(x, "adverseEventStats")
        for s in e.get("stats", []):
            st = _sub(stats, "eventStats")
            _sub(st, "reportingGroupId", s["groupId"])
            _opt(st, "numEvents", s.get("numEvents"))
            _opt(st, "numSubjectsAffected", s.get("numAffected"))
            _opt(st, "numSubjects", s.get("numAtRisk"))
        _opt(
            x,
            "assessmentType",
            ASSESSMENT_DISPLAY.get(e.get("assessmentType"))
            if e.get("assessmentType")
            else None,
        )
        _opt(x, "notes", e.get("notes"))
        _opt(x, "organSystemName", e.get("organSystem"))
        _opt(x, "sourceVocabulary", e.get("sourceVocabulary"))
        _opt(x, "term", e.get("term"))


def _xml_events_module(root: etree._Element, ae: dict) -> None:
    el = _sub(root, "reportedEvents")
    _opt(el, "allCauseMortComment", ae.get("allCauseMortalityComment"))
    all_events = ae.get("seriousEvents", []) + ae.get("otherEvents", [])
    assess = {e.get("assessmentType") for e in all_events} - {None}
    vocab = {e.get("sourceVocabulary") for e in all_events} - {None}
    _opt(
        el,
        "assessmentType",
        ASSESSMENT_DISPLAY[assess.pop()] if len(assess) == 1 else None,
    )
    _opt(el, "frequencyReportingThreshold", ae.get("frequencyThreshold"))
    _xml_events(
        _sub(el, "frequentAdverseEvents"), "frequentEvent", ae.get("otherEvents", [])
    )
    groups = _sub(el, "interventionGroups")
    for g in ae.get("eventGroups", []):
        x = _sub(groups, "interventionGroup")
        x.set("id", g["id"])
        _opt(x, "description", g.get("description"))
        _opt(x, "numDeaths", g.get("deathsNumAffected"))
        _opt(x, "numSubjectsFrequentEvents", g.get("otherNumAffected"))
        _opt(x, "numSubjectsSeriousEvents", g.get("seriousNumAffected"))
        _opt(x, "partAtRiskAllCauseMort", g.get("deathsNumAtRisk"))
        _opt(x, "partAtRiskFrequentEvents", g.get("otherNumAtRisk"))
        _opt(x, "partAtRiskSeriousEvents", g.get("seriousNumAtRisk"))
        _opt(x, "title", g.get("title"))
    _opt(el, "notes", ae.get("description"))
    _xml_events(
        _sub(el, "seriousAdverseEvents"), "seriousEvent", ae.get("seriousEvents", [])
    )
    _opt(el, "sourceVocabulary", vocab.pop() if len(vocab) == 1 else None)
    _opt(el, "timeFrame", ae.get("timeFrame"))


def results_xml(results_section: dict[str, Any], cfg: StudyConfig) -> bytes:
    """PRS results upload XML (partial upload: subsets not in the file are kept in PRS)."""
    root = etree.Element(f"{{{RRS_NS}}}result", nsmap={"tns": RRS_NS})
    root.set("partialUpload", "true")
    rs = results_section
    more = rs.get("moreInfoModule", {})
    if "baselineCharacteristicsModule" in rs:
        _xml_baseline(root, rs["baselineCharacteristicsModule"])
    ca = more.get("certainAgreement")
    if ca:
        el = _sub(root, "certainAgreement")
        _opt(el, "otherDetails", ca.get("otherDetails"))
        for k in ("piSponsorEmployee",):
            if k in ca:
                _sub(el, k, "Yes" if ca[k] else "No")
        _opt(el, "restrictionType", ca.get("restrictionType"))
        if "restrictiveAgreement" in ca:
            _sub(
                el,
                "restrictiveAgreement",
                "Yes" if ca["restrictiveAgreement"] else "No",
            )
    lim = more.get("limitationsAndCaveats")
    if lim:
        _opt(_sub(root, "limitationsAndCaveats"), "description", lim.get("description"))
    _xml_outcomes(root, rs.get("outcomeMeasuresModule", {}))
    if "participantFlowModule" in rs:
        _xml_flow(root, rs["participantFlowModule"])
    poc = more.get("pointOfContact")
    if poc:
        el = _sub(root, "pointOfContact")
        _opt(el, "email", poc.get("email"))
        _opt(el, "organizationName", poc.get("organization"))
        _opt(el, "phoneExtension", poc.get("phoneExt"))
        _opt(el, "phoneNumber", poc.get("phone"))
        _opt(el, "title", poc.get("title"))
    if "adverseEventsModule" in rs:
        _xml_events_module(root, rs["adverseEventsModule"])
    return etree.tostring(
        root, xml_declaration=True, encoding="UTF-8", pretty_print=True
    )


# --------------------------------------------------------------------------------------------------
# 4. Validation
# --------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _schema(xsd_path: str, mtime: float) -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(xsd_path))


def validate_xml(xml: bytes, xsd_path: Path) -> list[str]:
    """Schema errors as "line N: message"; an empty list means valid."""
    xsd_path = Path(xsd_path)
    schema = _schema(str(xsd_path), xsd_path.stat().st_mtime)
    try:
        doc = etree.fromstring(
            xml, etree.XMLParser(resolve_entities=False, no_network=True)
        )
    except etree.XMLSyntaxError as exc:
        return [f"line {exc.lineno}: not well-formed: {exc.msg}"]
    if schema.validate(doc):
        return []
    return [f"line {e.line}: {e.message}" for e in schema.error_log]


@functools.lru_cache(maxsize=2)
def _oas_schemas(spec_path: str) -> dict[str, Any]:
    with open(spec_path, encoding="utf-8") as fh:
        return yaml.safe_load(fh)["components"]["schemas"]


def validate_against_oas(
    obj: Any,
    spec_path: Path,
    schema_name: str = "ResultsSection",
    *,
    check_order: bool = False,
) -> list[str]:
    """Unknown keys, wrong JSON types and enum violations of ``obj`` against a component schema of the
    ClinicalTrials.gov OpenAPI spec (handles $ref, type, enum, properties, items, min/maxLength).
    ``check_order`` also reports objects whose keys are not in the spec's property order."""
    schemas = _oas_schemas(str(spec_path))
    errors: list[str] = []

    def resolve(s: dict) -> dict:
        while "$ref" in s:
            s = schemas[s["$ref"].rsplit("/", 1)[-1]]
        return s

    def walk(value: Any, schema: dict, path: str) -> None:
        schema = resolve(schema)
        typ = schema.get("type")
        ok = {
            "object": lambda v: isinstance(v, dict),
            "array": lambda v: isinstance(v, list),
            "string": lambda v: isinstance(v, str),
            "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
            "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
            "boolean": lambda v: isinstance(v, bool),
        }
        if typ in ok and not ok[typ](value):
            errors.append(
                f"{path}: expected {typ}, got {type(value).__name__} ({value!r:.60})"
            )
            return
        if "enum" in schema and value not in schema["enum"]:
            errors.append(f"{path}: {value!r} is not one of {schema['enum']}")
        if typ == "string":
            if "minLength" in schema and len(value) < schema["minLength"]:
                errors.append(f"{path}: shorter than {schema['minLength']}")
            if "maxLength" in schema and len(value) > schema["maxLength"]:
                errors.append(f"{path}: longer than {schema['maxLength']}")
        if typ == "object" and "properties" in schema:
            props = schema["properties"]
            if check_order:
                rank = [list(props).index(k) for k in value if k in props]
                if rank != sorted(rank):
                    errors.append(
                        f"{path}: keys {list(value)} are not in the spec's property order"
                    )
            for k, v in value.items():
                if k not in props:
                    errors.append(f"{path}.{k}: unknown key")
                else:
                    walk(v, props[k], f"{path}.{k}")
        if typ == "array" and "items" in schema:
            for i, v in enumerate(value):
                walk(v, schema["items"], f"{path}[{i}]")

    walk(obj, {"$ref": f"#/components/schemas/{schema_name}"}, schema_name)
    return errors


# --------------------------------------------------------------------------------------------------
# 5. Pre-check (registry.md section 4)
# --------------------------------------------------------------------------------------------------


def _int(s: Any) -> int | None:
    try:
        return int(str(s))
    except (TypeError, ValueError):
        return None


def precheck(
    results_section: dict[str, Any],
    xml_errors: list[str],
    *,
    cfg: StudyConfig | None = None,
    actual_enrollment: int | None = None,
) -> list[Finding]:
    """Rules of registry.md section 4 checkable on the draft. ``cfg`` adds the dose-level group check;
    ``actual_enrollment`` (protocol section's enrollment) adds rule 18's comparison."""
    out: list[Finding] = []

    def add(rule: str, sev: str, where: str, msg: str) -> None:
        out.append(Finding(rule, sev, where, msg))  # type: ignore[arg-type]

    for e in xml_errors:
        add("1-3", "ERROR", "PRS XML", f"upload schema: {e}")

    rs = results_section
    flow = rs.get("participantFlowModule")
    base = rs.get("baselineCharacteristicsModule")
    oms = rs.get("outcomeMeasuresModule", {}).get("outcomeMeasures", [])
    ae = rs.get("adverseEventsModule")
    more = rs.get("moreInfoModule", {})

    # Rule 5: modules that must exist before release
    for key, name in (
        ("participantFlowModule", "Participant Flow"),
        ("baselineCharacteristicsModule", "Baseline"),
        ("adverseEventsModule", "Adverse Events"),
    ):
        if key not in rs:
            add(
                "5",
                "WARNING",
                name,
                f"{name} module is missing; it must be entered before release",
            )
    if "certainAgreement" not in more:
        add(
            "5",
            "WARNING",
            "More Information",
            "Certain Agreements (PI employed by sponsor / results disclosure restriction) not in the study configuration; enter in PRS before release",
        )
    if "pointOfContact" not in more:
        add("5", "WARNING", "More Information", "Results Point of Contact is missing")

    expected_titles = [d.label for d in cfg.dose_levels] if cfg else None

    def check_groups(
        where: str, groups: list[dict], prefix: str, total: bool = False
    ) -> set[str]:
        ids = [g.get("id") for g in groups]
        want = [f"{prefix}{i:03d}" for i in range(len(groups))]
        if ids != want:
            add("2", "ERROR", where, f"group ids {ids} are not the sequence {want}")
        if expected_titles is not None:
            titles = [g.get("title") for g in groups]
            if total and len(expected_titles) >= 2:
                titles, last = titles[:-1], titles[-1] if titles else None
                if last != "Total":
                    add(
                        "28",
                        "ERROR",
                        where,
                        "the last baseline group must be the Total column",
                    )
            if titles != expected_titles:
                add(
                    "GROUPS",
                    "ERROR",
                    where,
                    f"group titles {titles} do not match the configured dose levels {expected_titles}",
                )
        return set(ids)

    def refs(where: str, items: Iterable[dict], ids: set[str]) -> None:
        for x in items:
            if x.get("groupId") not in ids:
                add(
                    "2",
                    "ERROR",
                    where,
                    f"groupId {x.get('groupId')!r} is not a group of this module",
                )

    # ---- Participant flow
    started_by_title: dict[str, int] = {}
    flow_deaths: dict[str, int] = {}
    if flow:
        ids = check_groups("Participant Flow: groups", flow.get("groups", []), "FG")
        title_of = {g["id"]: g.get("title") for g in flow.get("groups", [])}
        rd = flow.get("recruitmentDetails") or ""
        if len(rd) > 500:
            add(
                "13",
                "ERROR",
                "Participant Flow: Recruitment Details",
                f"{len(rd)} characters (limit 500)",
            )
        pad = flow.get("preAssignmentDetails") or ""
        if len(pad) > 500:
            add(
                "13",
                "WARNING",
                "Participant Flow: Pre-assignment Details",
                f"{len(pad)} characters; PRS limit believed to be 500 (UNVERIFIED)",
            )
        for p in flow.get("periods", []):
            pw = f"Participant Flow: period {p.get('title')!r}"
            ms = p.get("milestones", [])
            types = [m.get("type") for m in ms]
            for req in ("STARTED", "COMPLETED"):
                if req not in types:
                    add("3", "ERROR", pw, f"milestone {req} is required")
            for m in ms:
                refs(f"{pw}, milestone {m.get('type')}", m.get("achievements", []), ids)
            val = {
                m.get("type"): {
                    a["groupId"]: _int(a.get("numSubjects"))
                    for a in m.get("achievements", [])
                }
                for m in ms
            }
            for dw in p.get("dropWithdraws", []):
                refs(f"{pw}, reason {dw.get('type')}", dw.get("reasons", []), ids)
                if (
                    dw.get("type") in (OTHER, "Other than specified above")
                    and not (dw.get("comment") or "").strip()
                ):
                    add(
                        "17",
                        "ERROR",
                        f"{pw}, reason Other",
                        "reason type Other needs a comment (specify)",
                    )
                if dw.get("type") == "Death":
                    for r in dw.get("reasons", []):
                        flow_deaths[title_of.get(r["groupId"])] = flow_deaths.get(
                            title_of.get(r["groupId"]), 0
                        ) + (_int(r.get("numSubjects")) or 0)
            # funnel: STARTED >= custom milestones (in order) >= COMPLETED
            funnel = [t for t in types if t != "NOT COMPLETED"]
            for g in sorted(ids):
                seq = [(t, val[t].get(g)) for t in funnel if val[t].get(g) is not None]
                for (t1, a), (t2, b) in itertools.pairwise(seq):
                    if b > a:
                        add(
                            "MILESTONES",
                            "ERROR",
                            f"{pw}, {g}",
                            f"milestone {t2!r} ({b}) exceeds the preceding {t1!r} ({a}); counts must not increase",
                        )
                s, c = val.get("STARTED", {}).get(g), val.get("COMPLETED", {}).get(g)
                if s is None or c is None:
                    continue
                if g in title_of:
                    started_by_title[title_of[g]] = s
                nc = val.get("NOT COMPLETED", {}).get(g)
                if nc is not None and nc != s - c:
                    add(
                        "27",
                        "ERROR",
                        f"{pw}, {g}",
                        f"NOT COMPLETED {nc} != STARTED {s} - COMPLETED {c}",
                    )
                reasons = sum(
                    _int(r.get("numSubjects")) or 0
                    for dw in p.get("dropWithdraws", [])
                    for r in dw.get("reasons", [])
                    if r.get("groupId") == g
                )
                if reasons != s - c:
                    add(
                        "27",
                        "ERROR",
                        f"{pw}, {g}",
                        f"reasons not completed sum to {reasons}, but STARTED {s} - COMPLETED {c} = {s - c}",
                    )
        total_started = sum(started_by_title.values())
        if (
            actual_enrollment is not None
            and total_started != actual_enrollment
            and str(actual_enrollment) not in pad
        ):
            add(
                "18",
                "WARNING",
                "Participant Flow",
                f"total STARTED {total_started} differs from actual enrollment {actual_enrollment}; explain in Pre-assignment Details",
            )
        if actual_enrollment is not None and total_started > actual_enrollment:
            add(
                "19",
                "ERROR",
                "Participant Flow",
                f"total STARTED {total_started} exceeds enrollment {actual_enrollment}",
            )
        if not pad:
            add(
                "18",
                "WARNING",
                "Participant Flow",
                "no Pre-assignment Details: enrolment vs STARTED is not explained",
            )

    # ---- Measures (baseline and outcomes)
    def check_measure(where: str, m: dict, ids: set[str], outcome: bool) -> None:
        param, disp, unit = (
            m.get("paramType"),
            m.get("dispersionType"),
            (m.get("unitOfMeasure") or ""),
        )
        meas = [
            x
            for c in m.get("classes", [])
            for cat in c.get("categories", [])
            for x in cat.get("measurements", [])
        ]
        refs(where, meas, ids)
        for d in m.get("denoms", []):
            refs(where + " (denominator)", d.get("counts", []), ids)
        if param in CONTINUOUS_PARAMS:
            if not disp or disp == "NA":
                add(
                    "20",
                    "ERROR",
                    where,
                    f"continuous measure ({param}) without a measure of dispersion",
                )
            else:
                for x in meas:
                    has = x.get("spread") is not None or (
                        x.get("lowerLimit") is not None
                        and x.get("upperLimit") is not None
                    )
                    if not has:
                        add(
                            "20",
                            "ERROR",
                            where,
                            f"{x.get('groupId')}: value without its dispersion ({disp})",
                        )
                    elif "NA" in (
                        x.get("value"),
                        x.get("spread"),
                        x.get("lowerLimit"),
                        x.get("upperLimit"),
                    ) and not x.get("comment"):
                        add(
                            "20",
                            "ERROR",
                            where,
                            f"{x.get('groupId')}: NA without an explanation",
                        )
                    if disp in RANGE_DISPERSIONS and x.get("spread") is not None:
                        add(
                            "7",
                            "ERROR",
                            where,
                            f"{x.get('groupId')}: {disp} goes in lower/upper limits, not spread",
                        )
        if param == "NUMBER" and not outcome and disp not in (None, "NA"):
            add(
                "7",
                "ERROR",
                where,
                "baseline measure of type NUMBER cannot have a dispersion",
            )
        if param in ("COUNT_OF_PARTICIPANTS", "COUNT_OF_UNITS"):
            if disp not in (None, "NA"):
                add("7", "ERROR", where, f"{param} has no dispersion")
            want = "participants" if param == "COUNT_OF_PARTICIPANTS" else None
            if want and unit.lower() != want:
                add(
                    "25",
                    "ERROR",
                    where,
                    f"count of participants with unit {unit!r} (should be 'Participants')",
                )
        title = (m.get("title") or "").lower()
        if title.startswith("number of participants") and (
            param != "COUNT_OF_PARTICIPANTS" or unit.lower() != "participants"
        ):
            add(
                "25",
                "ERROR",
                where,
                f"'Number of participants' measure reported as {param} in {unit!r}",
            )
        if title.startswith("percentage") and unit.lower() == "participants":
            add(
                "25", "ERROR", where, "a percentage cannot have the unit 'Participants'"
            )
        if not unit:
            add("25", "ERROR", where, "unit of measure is missing")

    if base:
        groups = base.get("groups", [])
        bids = check_groups("Baseline: groups", groups, "BG", total=True)
        total_id = (
            groups[-1]["id"]
            if len(groups) >= 3 and groups[-1].get("title") == "Total"
            else None
        )
        if len(groups) == 2 and groups[-1].get("title") == "Total":
            add(
                "28",
                "ERROR",
                "Baseline: groups",
                "a Total column is only reported with >= 2 groups",
            )
        arm_ids = [g["id"] for g in groups if g["id"] != total_id]
        btitle = {g["id"]: g.get("title") for g in groups}

        def total_check(where: str, values: dict[str, Any]) -> None:
            if not total_id or total_id not in values:
                return
            parts = [_int(values.get(g)) for g in arm_ids]
            if None in parts:
                return
            if _int(values[total_id]) != sum(parts):
                add(
                    "28",
                    "ERROR",
                    where,
                    f"Total {values[total_id]} != sum of groups {sum(parts)}",
                )

        overall = _denom_counts(base)
        refs("Baseline: overall number", [{"groupId": g} for g in overall], bids)
        total_check("Baseline: overall number of participants", overall)
        for g, v in overall.items():
            if (
                g != total_id
                and btitle.get(g) in started_by_title
                and _int(v) != started_by_title[btitle[g]]
            ):
                add(
                    "29",
                    "WARNING",
                    f"Baseline: {g}",
                    f"baseline N {v} differs from STARTED {started_by_title[btitle[g]]}; explain in the population description",
                )
        for m in base.get("measures", []):
            where = f"Baseline: {m.get('title')}"
            check_measure(where, m, bids, outcome=False)
            if m.get("paramType") in ("COUNT_OF_PARTICIPANTS", "NUMBER"):
                sums: dict[str, int] = {}
                for c in m.get("classes", []):
                    for cat in c.get("categories", []):
                        vals = {
                            x["groupId"]: x.get("value")
                            for x in cat.get("measurements", [])
                        }
                        total_check(
                            f"{where}: {c.get('title') or ''}{cat.get('title') or ''}",
                            vals,
                        )
                        for g, v in vals.items():
                            sums[g] = sums.get(g, 0) + (_int(v) or 0)
                denom = _denom_counts(m) or overall
                for g, s in sums.items():
                    if _int(denom.get(g)) is not None and s != _int(denom[g]):
                        add(
                            "21",
                            "ERROR",
                            where,
                            f"{g}: categories sum to {s}, not the {denom[g]} analysed",
                        )

    for i, m in enumerate(oms, start=1):
        where = f"Outcome {i}: {m.get('title')}"
        if m.get("type") not in OUTCOME_TYPE_DISPLAY:
            add("3", "ERROR", where, "outcome measure type is required")
        if not m.get("timeFrame"):
            add("REG", "ERROR", where, "time frame is required")
        ids = {g.get("id") for g in m.get("groups", [])}
        check_measure(where, m, ids, outcome=True)
        den = _denom_counts(m)
        for g, v in den.items():
            present = {
                x["groupId"]
                for c in m.get("classes", [])
                for cat in c.get("categories", [])
                for x in cat.get("measurements", [])
            }
            if _int(v) == 0 and g in present:
                add(
                    "26",
                    "ERROR",
                    where,
                    f"{g}: a value is reported for a group with 0 participants analysed",
                )
            if (_int(v) or 0) > 0 and g not in present:
                add(
                    "21",
                    "ERROR",
                    where,
                    f"{g}: {v} participants analysed but no value reported",
                )
            if m.get("paramType") == "COUNT_OF_PARTICIPANTS":
                for c in m.get("classes", []):
                    for cat in c.get("categories", []):
                        for x in cat.get("measurements", []):
                            if x["groupId"] == g and (_int(x.get("value")) or 0) > (
                                _int(v) or 0
                            ):
                                add(
                                    "21",
                                    "ERROR",
                                    where,
                                    f"{g}: count {x.get('value')} exceeds the {v} analysed",
                                )
        if (
            den
            and all(_int(v) == 0 for v in den.values())
            and not m.get("populationDescription")
        ):
            add(
                "26",
                "ERROR",
                where,
                "no data: explain in the analysis population description",
            )

    # ---- Adverse events
    if ae:
        where = "Adverse Events"
        egs = ae.get("eventGroups", [])
        eids = check_groups(f"{where}: groups", egs, "EG")
        for k in ("timeFrame", "frequencyThreshold"):
            if not ae.get(k):
                add("11", "ERROR", where, f"{k} is required")
        try:
            thr = float(ae.get("frequencyThreshold", "0"))
            if thr > 5:
                add(
                    "11",
                    "ERROR",
                    where,
                    f"frequency threshold {thr:g}% exceeds the 5% maximum",
                )
        except ValueError:
            add(
                "11",
                "ERROR",
                where,
                f"frequency threshold {ae.get('frequencyThreshold')!r} is not a number",
            )
            thr = 0.0
        tf, desc = (
            (ae.get("timeFrame") or "").lower(),
            (ae.get("description") or "").lower(),
        )
        if "consent" in tf and "treatment-emergent" in desc:
            add(
                "22",
                "WARNING",
                where,
                "the AE time frame starts at informed consent but the tables hold treatment-emergent AEs only; "
                "AEs collected before the treatment-emergent anchor must be reported too or the time frame narrowed",
            )
        g_by_id = {g["id"]: g for g in egs}
        for g in egs:
            for k in (
                "deathsNumAffected",
                "deathsNumAtRisk",
                "seriousNumAffected",
                "seriousNumAtRisk",
                "otherNumAffected",
                "otherNumAtRisk",
            ):
                if not isinstance(g.get(k), int):
                    add("11", "ERROR", f"{where}: {g['id']}", f"{k} is required")
            for kind in ("deaths", "serious", "other"):
                a, r = g.get(f"{kind}NumAffected"), g.get(f"{kind}NumAtRisk")
                if isinstance(a, int) and isinstance(r, int) and a > r:
                    add(
                        "30",
                        "ERROR",
                        f"{where}: {g['id']}",
                        f"{kind}: {a} affected > {r} at risk",
                    )
        for table, kind in (("seriousEvents", "serious"), ("otherEvents", "other")):
            events = ae.get(table, [])
            max_aff: dict[str, int] = {}
            sum_aff: dict[str, int] = {}
            for e in events:
                ew = f"{where}: {kind} '{e.get('term')}'"
                refs(ew, e.get("stats", []), eids)
                if e.get("organSystem") not in PRS_SOCS:
                    add(
                        "SOC",
                        "WARNING",
                        ew,
                        f"organ system {e.get('organSystem')!r} is not a PRS MedDRA SOC name",
                    )
                reaches = False
                for s in e.get("stats", []):
                    g = g_by_id.get(s.get("groupId"), {})
                    n_aff, n_risk, n_ev = (
                        s.get("numAffected"),
                        s.get("numAtRisk"),
                        s.get("numEvents"),
                    )
                    if n_risk != g.get(f"{kind}NumAtRisk"):
                        add(
                            "30",
                            "ERROR",
                            ew,
                            f"{s.get('groupId')}: numAtRisk {n_risk} != group {kind} at risk {g.get(f'{kind}NumAtRisk')}",
                        )
                    if (
                        isinstance(n_aff, int)
                        and isinstance(n_risk, int)
                        and n_aff > n_risk
                    ):
                        add(
                            "30",
                            "ERROR",
                            ew,
                            f"{s.get('groupId')}: {n_aff} affected > {n_risk} at risk",
                        )
                    if (
                        isinstance(n_ev, int)
                        and isinstance(n_aff, int)
                        and n_ev < n_aff
                    ):
                        add(
                            "30",
                            "ERROR",
                            ew,
                            f"{s.get('groupId')}: {n_ev} events < {n_aff} affected",
                        )
                    if isinstance(n_aff, int):
                        gid = s.get("groupId")
                        max_aff[gid] = max(max_aff.get(gid, 0), n_aff)
                        sum_aff[gid] = sum_aff.get(gid, 0) + n_aff
                        if (
                            n_aff > 0
                            and isinstance(n_risk, int)
                            and n_risk > 0
                            and 100.0 * n_aff / n_risk >= thr
                        ):
                            reaches = True
                if kind == "other" and not reaches:
                    add(
                        "30",
                        "ERROR",
                        ew,
                        f"does not reach the {thr:g}% frequency threshold in any group",
                    )
            for g in egs:
                a = g.get(f"{kind}NumAffected")
                if not isinstance(a, int):
                    continue
                if a < max_aff.get(g["id"], 0):
                    add(
                        "30",
                        "ERROR",
                        f"{where}: {g['id']}",
                        f"{kind}NumAffected {a} < the largest term count {max_aff[g['id']]}",
                    )
                if a > sum_aff.get(g["id"], 0):
                    add(
                        "30",
                        "ERROR",
                        f"{where}: {g['id']}",
                        f"{kind}NumAffected {a} > the sum of term counts {sum_aff.get(g['id'], 0)} (a term is missing)",
                    )
        # all-cause deaths vs deaths as reason not completed (flow groups: assigned dose, all enrolled;
        # event groups: dose received, infused only) -> a difference needs an explanation, not an error
        if flow:
            for g in egs:
                t = g.get("title")
                if (
                    t in flow_deaths
                    and isinstance(g.get("deathsNumAffected"), int)
                    and g["deathsNumAffected"] != flow_deaths[t]
                ):
                    add(
                        "21",
                        "WARNING",
                        f"{where}: {g['id']} ({t})",
                        f"all-cause deaths {g['deathsNumAffected']} != {flow_deaths[t]} 'Death' reasons in the participant flow; "
                        "expected only for deaths before infusion or deaths recorded with another end-of-study reason - "
                        "explain in the all-cause mortality comment",
                    )
            total_ae = sum(g.get("deathsNumAffected") or 0 for g in egs)
            total_flow = sum(flow_deaths.values())
            if total_ae > total_flow:
                add(
                    "21",
                    "WARNING",
                    where,
                    f"{total_ae} all-cause deaths among infused participants but {total_flow} 'Death' reasons in the participant flow",
                )
    _release_readiness(rs, cfg, add, sum(started_by_title.values()))
    return sorted(
        out, key=lambda f: (f.severity != "ERROR", f.rule, f.where, f.message)
    )


# Contact details that cannot be real: reserved example domains, a run of zeros as the number.
_PLACEHOLDER_EMAIL = re.compile(r"@(.+\.)?example\.(org|com|net)$", re.IGNORECASE)
_PLACEHOLDER_PHONE = re.compile(r"0{6,}")


def _release_readiness(
    rs: dict[str, Any], cfg: StudyConfig | None, add: Callable[[str, str, str, str], None], started: int
) -> None:
    """What stops this draft from being released as it is, though PRS would accept it: placeholder
    contact details and the draft's own notice (public text; a partial upload replaces these
    sections in PRS), participants still on study at the cut (interim results; the record's status
    must agree), and a STARTED total (``started``, from the flow checks) other than the record's planned
    enrolment."""
    more = rs.get("moreInfoModule", {})
    poc = more.get("pointOfContact") or {}
    if _PLACEHOLDER_EMAIL.search(poc.get("email") or "") or _PLACEHOLDER_PHONE.search(poc.get("phone") or ""):
        add("5", "WARNING", "More Information: Results Point of Contact",
            f"placeholder contact ({poc.get('email')}, {poc.get('phone')}): enter the real one in the study "
            "configuration (registry.point_of_contact) before upload; a partial upload replaces the contact in PRS")
    lim = (more.get("limitationsAndCaveats") or {}).get("description") or ""
    if lim.startswith("DRAFT"):
        add("21", "WARNING", "More Information: Limitations and Caveats",
            "holds this draft's notice ('DRAFT ... not reviewed or released'), which would be posted: replace it "
            "with the study's limitations before upload")
    flow = rs.get("participantFlowModule") or {}
    ongoing = sum(
        _int(r.get("numSubjects")) or 0
        for p in flow.get("periods", []) for dw in p.get("dropWithdraws", [])
        if dw.get("comment") == OTHER_COMMENTS["ONGOING AT DATA CUT"]
        for r in dw.get("reasons", [])
    )
    if ongoing:
        add("21", "WARNING", "Participant Flow",
            f"{ongoing} participant(s) still on study at the data cut-off: these are interim results; the record's "
            "overall status and completion date must agree before results are submitted")
    if cfg is not None and flow and started != cfg.study.planned_enrolment:
        add("18", "WARNING", "Participant Flow",
            f"total STARTED {started} differs from the planned enrolment {cfg.study.planned_enrolment} of the "
            "record: the record's enrollment becomes the actual number when results are submitted")


# --------------------------------------------------------------------------------------------------
# 6. HTML draft
# --------------------------------------------------------------------------------------------------

_TEMPLATE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{ study.id }} ClinicalTrials.gov results draft ({{ data_cut }})</title>
<style>
body { font-family: Arial, Helvetica, sans-serif; font-size: 13px; margin: 24px; color: #222; }
h1 { font-size: 20px; } h2 { font-size: 16px; border-bottom: 2px solid #355; margin-top: 28px; } h3 { font-size: 14px; }
table { border-collapse: collapse; margin: 8px 0 16px; } th, td { border: 1px solid #bbb; padding: 3px 7px; vertical-align: top; }
th { background: #eef2f2; text-align: left; } td.n { text-align: right; }
.banner { background: #fff3cd; border: 1px solid #e0c060; padding: 8px; } .ERROR { color: #a00; font-weight: bold; }
.WARNING { color: #955e00; } dl { display: grid; grid-template-columns: 220px 1fr; gap: 4px 12px; } dt { font-weight: bold; }
</style>
</head>
<body>
<h1>{{ study.nct_id }} &mdash; {{ study.title }}</h1>
<p class="banner">DRAFT results for ClinicalTrials.gov (PRS), protocol {{ study.protocol_id }}, data cut-off {{ data_cut }}.
Not reviewed; not for submission. Numbers come from the analysis tables shared with the DSMB report and workbook.</p>

<h2>Pre-check findings</h2>
{% if findings %}
<table><tr><th>Severity</th><th>Rule</th><th>Where</th><th>Message</th></tr>
{% for f in findings %}<tr><td class="{{ f.severity }}">{{ f.severity }}</td><td>{{ f.rule }}</td><td>{{ f.where }}</td><td>{{ f.message }}</td></tr>
{% endfor %}</table>
<p>{{ n_errors }} error(s), {{ n_warnings }} warning(s).</p>
{% else %}<p>No findings.</p>{% endif %}

{% set pf = rs.participantFlowModule %}
{% if pf %}
<h2>Participant Flow</h2>
<dl><dt>Recruitment Details</dt><dd>{{ pf.recruitmentDetails }}</dd>
<dt>Pre-assignment Details</dt><dd>{{ pf.preAssignmentDetails }}</dd></dl>
<table><tr><th>Group</th><th>Title</th><th>Description</th></tr>
{% for g in pf.groups %}<tr><td>{{ g.id }}</td><td>{{ g.title }}</td><td>{{ g.description }}</td></tr>{% endfor %}</table>
{% for p in pf.periods %}
<h3>Period: {{ p.title }}</h3>
<table><tr><th>Milestone</th>{% for g in pf.groups %}<th>{{ g.title }}</th>{% endfor %}</tr>
{% for m in p.milestones %}<tr><td>{{ m.type }}{% if m.comment %}<br><small>{{ m.comment }}</small>{% endif %}</td>{% for g in pf.groups %}<td class="n">{{ cell(m.achievements, g.id, 'numSubjects') }}</td>{% endfor %}</tr>{% endfor %}
</table>
<table><tr><th>Reason not completed</th>{% for g in pf.groups %}<th>{{ g.title }}</th>{% endfor %}</tr>
{% for dw in p.dropWithdraws %}<tr><td>{{ dw.type }}{% if dw.comment %}: {{ dw.comment }}{% endif %}</td>{% for g in pf.groups %}<td class="n">{{ cell(dw.reasons, g.id, 'numSubjects') }}</td>{% endfor %}</tr>{% endfor %}
</table>
{% endfor %}
{% endif %}

{% set b = rs.baselineCharacteristicsModule %}
{% if b %}
<h2>Baseline Characteristics</h2>
<dl><dt>Population</dt><dd>{{ b.populationDescription }}</dd></dl>
<table><tr><th></th>{% for g in b.groups %}<th>{{ g.title }}</th>{% endfor %}</tr>
{% for d in b.denoms %}<tr><td>Overall Number of Baseline Participants ({{ d.units }})</td>{% for g in b.groups %}<td class="n">{{ cell(d.counts, g.id, 'value') }}</td>{% endfor %}</tr>{% endfor %}
{% for m in b.measures %}
<tr><th colspan="{{ b.groups|length + 1 }}">{{ m.title }} &mdash; {{ m.paramType | prs }}{% if m.dispersionType %} ({{ m.dispersionType | prs }}){% endif %}, {{ m.unitOfMeasure }}</th></tr>
{% for c in m.classes %}{% for cat in c.categories %}
<tr><td>{{ c.title or '' }}{% if c.title and cat.title %} / {% endif %}{{ cat.title or '' }}</td>{% for g in b.groups %}<td class="n">{{ value(cat.measurements, g.id) }}</td>{% endfor %}</tr>
{% endfor %}{% endfor %}
{% endfor %}
</table>
{% endif %}

{% set om = rs.outcomeMeasuresModule %}
{% if om %}
<h2>Outcome Measures</h2>
{% for m in om.outcomeMeasures %}
<h3>{{ loop.index }}. {{ m.type | prs }}: {{ m.title }}</h3>
<dl><dt>Description</dt><dd>{{ m.description }}</dd><dt>Time Frame</dt><dd>{{ m.timeFrame }}</dd>
<dt>Population</dt><dd>{{ m.populationDescription }}</dd>
<dt>Measure type</dt><dd>{{ m.paramType | prs }}{% if m.dispersionType %} ({{ m.dispersionType | prs }}){% endif %}; unit {{ m.unitOfMeasure }}</dd></dl>
<table><tr><th></th>{% for g in m.groups %}<th>{{ g.title }}</th>{% endfor %}</tr>
{% for d in m.denoms %}<tr><td>Number analysed ({{ d.units }})</td>{% for g in m.groups %}<td class="n">{{ cell(d.counts, g.id, 'value') }}</td>{% endfor %}</tr>{% endfor %}
{% for c in m.classes %}{% for cat in c.categories %}<tr><td>{{ c.title or '' }}{{ cat.title or '' }}</td>{% for g in m.groups %}<td class="n">{{ value(cat.measurements, g.id) }}</td>{% endfor %}</tr>{% endfor %}{% endfor %}
</table>
{% endfor %}
{% endif %}

{% set ae = rs.adverseEventsModule %}
{% if ae %}
<h2>Adverse Events</h2>
<dl><dt>Time Frame</dt><dd>{{ ae.timeFrame }}</dd><dt>Description</dt><dd>{{ ae.description }}</dd>
<dt>All-cause mortality</dt><dd>{{ ae.allCauseMortalityComment }}</dd>
<dt>Frequency threshold</dt><dd>{{ ae.frequencyThreshold }}%</dd></dl>
<table><tr><th></th>{% for g in ae.eventGroups %}<th>{{ g.title }}</th>{% endfor %}</tr>
<tr><td>All-cause mortality</td>{% for g in ae.eventGroups %}<td class="n">{{ g.deathsNumAffected }}/{{ g.deathsNumAtRisk }}</td>{% endfor %}</tr>
<tr><td>Serious adverse events</td>{% for g in ae.eventGroups %}<td class="n">{{ g.seriousNumAffected }}/{{ g.seriousNumAtRisk }}</td>{% endfor %}</tr>
<tr><td>Other (not including serious) adverse events</td>{% for g in ae.eventGroups %}<td class="n">{{ g.otherNumAffected }}/{{ g.otherNumAtRisk }}</td>{% endfor %}</tr>
</table>
{% for name, events in [('Serious Adverse Events', ae.seriousEvents), ('Other (Not Including Serious) Adverse Events', ae.otherEvents)] %}
<h3>{{ name }}</h3>
{% if events %}
<table><tr><th>Organ system</th><th>Term</th>{% for g in ae.eventGroups %}<th>{{ g.title }}<br>affected/at risk (events)</th>{% endfor %}</tr>
{% for e in events %}<tr><td>{{ e.organSystem }}</td><td>{{ e.term }}</td>{% for g in ae.eventGroups %}{% set s = stat(e.stats, g.id) %}<td class="n">{% if s %}{{ s.numAffected }}/{{ s.numAtRisk }}{% if s.numEvents is not none %} ({{ s.numEvents }}){% endif %}{% endif %}</td>{% endfor %}</tr>
{% endfor %}</table>
<p>Vocabulary: {{ events[0].sourceVocabulary }}; assessment: {{ events[0].assessmentType | prs }}.</p>
{% else %}<p>None.</p>{% endif %}
{% endfor %}
{% endif %}

{% set mi = rs.moreInfoModule %}
{% if mi %}
<h2>More Information</h2>
<dl>{% if mi.limitationsAndCaveats %}<dt>Limitations and Caveats</dt><dd>{{ mi.limitationsAndCaveats.description }}</dd>{% endif %}
{% if mi.certainAgreement %}<dt>Certain Agreements</dt><dd>{{ mi.certainAgreement }}</dd>{% else %}<dt>Certain Agreements</dt><dd>(not yet entered)</dd>{% endif %}
{% if mi.pointOfContact %}<dt>Results Point of Contact</dt><dd>{{ mi.pointOfContact.title }}, {{ mi.pointOfContact.organization }},
{{ mi.pointOfContact.email }}, {{ mi.pointOfContact.phone }}{% if mi.pointOfContact.phoneExt %} ext. {{ mi.pointOfContact.phoneExt }}{% endif %}</dd>{% endif %}</dl>
{% endif %}
</body>
</html>
"""


def _cell(items: list[dict], group_id: str, key: str) -> str:
    for x in items or []:
        if x.get("groupId") == group_id:
            return "" if x.get(key) is None else str(x[key])
    return ""


def _value(measurements: list[dict], group_id: str) -> str:
    for m in measurements or []:
        if m.get("groupId") == group_id:
            s = str(m.get("value", ""))
            if m.get("spread") is not None:
                s += f" ({m['spread']})"
            elif m.get("lowerLimit") is not None or m.get("upperLimit") is not None:
                s += f" ({m.get('lowerLimit', '')} to {m.get('upperLimit', '')})"
            if m.get("comment"):
                s += f" [{m['comment']}]"
            return s
    return ""


def _stat(stats: list[dict], group_id: str) -> dict | None:
    return next((s for s in stats or [] if s.get("groupId") == group_id), None)


# ChainableUndefined: optional keys absent from the dict (e.g. phoneExt) render as empty text.
_ENV = jinja2.Environment(
    autoescape=True, undefined=jinja2.ChainableUndefined, keep_trailing_newline=True
)
# The draft shows the wording of the PRS screens a registry officer keys into, not the API codes.
_PRS_WORDING = {**PARAM_DISPLAY, **BASELINE_DISPERSION_DISPLAY, **OUTCOME_TYPE_DISPLAY, **ASSESSMENT_DISPLAY}
_ENV.filters["prs"] = lambda code: _PRS_WORDING.get(code, code)
_HTML = _ENV.from_string(_TEMPLATE)


def render_draft_html(
    results_section: dict[str, Any],
    findings: list[Finding],
    cfg: StudyConfig,
    data_cut: dt.date,
) -> str:
    """Registry draft for human review (role registry_draft_html): findings first, then the PRS
    data-entry screens in order. All text is HTML-escaped (autoescape)."""
    return _HTML.render(
        study=cfg.study,
        data_cut=data_cut.isoformat(),
        findings=findings,
        n_errors=sum(f.severity == "ERROR" for f in findings),
        n_warnings=sum(f.severity == "WARNING" for f in findings),
        rs=results_section,
        cell=_cell,
        value=_value,
        stat=_stat,
    )
