"""Derive: analysis tables in the DuckDB ``analysis`` schema. Each asset reads, calls, writes, reports."""


import datetime as dt

import dagster as dg

from assets.ingest import OWNERS, raw_forms
from clinical.adae import build_adae
from clinical.adlb import build_adlb
from clinical.adsl import build_adsl
from clinical.crf import FORMS
from clinical.crs_icans import build_crs_icans
from clinical.dlt import build_dlt_review
from clinical.dose_escalation import build_escalation
from clinical.eligibility import build_eligibility
from clinical.expectation_runner import load_suite, resolve_suite
from clinical.exposure import build_exposure
from clinical.flow import build_flow, funnel_violations
from clinical.pk import build_pk
from clinical.queries import build_queries
from clinical.rules import RULES
from clinical.safety_tables import build_ae_by_grade, build_safety_tables
from pipelines.resources import DATABASE_NAME, REPO_ROOT, TrialResource

COMMON = dict(group_name="derive", kinds={"duckdb"}, owners=OWNERS, pool="trial_db")


def _counts_result(trial: TrialResource, build, row_table: str) -> dg.MaterializeResult:
    """Run a builder that returns {table: row count} and report the counts (row_table's as the row count)."""
    with trial.connect() as con:
        counts = build(con)
    return dg.MaterializeResult(metadata={"dagster/row_count": counts[row_table], **counts})


def _raw(*forms: str) -> list[dg.AssetKey]:
    return [dg.AssetKey(["raw", f]) for f in forms]


@dg.asset(
    key=["analysis", "adsl"],
    deps=_raw("dm", "enrol", "ie", "sc", "apher", "mfg", "ld", "inf", "ae", "pc", "ds"),
    description="Subject-level analysis table (ADSL-like): dose levels planned and actual, key dates, "
    "population flags (screened ... DLT-evaluable, PK-evaluable) with reasons.",
    **COMMON,
)
def adsl(trial: TrialResource) -> dg.MaterializeResult:
    with trial.connect() as con:
        n = build_adsl(con, trial.cfg, trial.cut)
        infused = con.execute("SELECT count(*) FROM analysis.adsl WHERE SAFFL = 'Y'").fetchone()[0]
    return dg.MaterializeResult(metadata={"dagster/row_count": n, "infused": infused})


@dg.asset(
    key=["analysis", "adae"],
    deps=[adsl, *_raw("ae")],
    description="Adverse-event analysis table (ADAE-like): imputed dates with flags, protocol day (day 0 = "
    "infusion) and CDISC study day, period, treatment-emergent flag by the configured anchor, DLT.",
    **COMMON,
)
def adae(trial: TrialResource) -> dg.MaterializeResult:
    with trial.connect() as con:
        n = build_adae(con, trial.cfg)
        te = con.execute("SELECT count(*) FROM analysis.adae WHERE TRTEMFL = 'Y'").fetchone()[0]
    return dg.MaterializeResult(
        metadata={"dagster/row_count": n, "treatment_emergent": te, "anchor": trial.cfg.safety.treatment_emergent_anchor}
    )


@dg.asset(
    key=["analysis", "participant_flow"],
    deps=[adsl],
    description="Participant flow per dose level: screening, funnel stages and the reasons at every exit.",
    **COMMON,
)
def participant_flow(trial: TrialResource) -> dg.MaterializeResult:
    with trial.connect() as con:
        counts = build_flow(con)
        bad = funnel_violations(con)
    if bad:
        raise dg.Failure(description=f"participant flow increases down the funnel: {bad}", allow_retries=False)
    return dg.MaterializeResult(metadata={"dagster/row_count": counts["participant_flow"], **counts})


@dg.asset(
    key=["analysis", "dose_escalation"],
    deps=[adsl],
    description="3+3 dose-escalation status per dose level and the next step the configured rules give.",
    **COMMON,
)
def dose_escalation(trial: TrialResource) -> dg.MaterializeResult:
    with trial.connect() as con:
        decision = build_escalation(con, trial.cfg)
    return dg.MaterializeResult(metadata={k: dg.MetadataValue.text(str(v)) for k, v in decision.items()})


@dg.asset(
    key=["analysis", "safety_tables"],
    deps=[adsl, adae],
    description="Treatment-emergent AE overview per dose level, AEs by SOC and PT (all, serious, non-serious) "
    "and by worst grade.",
    **COMMON,
)
def safety_tables(trial: TrialResource) -> dg.MaterializeResult:
    with trial.connect() as con:
        counts = build_safety_tables(con)
        counts["ae_by_grade"] = build_ae_by_grade(con)
    return dg.MaterializeResult(metadata={"dagster/row_count": counts["teae_summary"], **counts})


@dg.asset(
    key=["analysis", "data_queries"],
    # Every asset a rule guards (the rules run again here), and every raw form (quarantine, WARN expectations).
    deps=[*[dg.AssetKey(list(p)) for p in dict.fromkeys(r.asset_path for r in RULES)], *[a.key for a in raw_forms]],
    description="Data queries tracked across exports: every failing record of a WARN rule (cross-form rules, "
    "quarantined rows, WARN expectations) with a stable id, status Open / Closed / Re-opened against the "
    "previous data cut, first and last seen, days open.",
    **COMMON,
)
def data_queries(context: dg.AssetExecutionContext, trial: TrialResource) -> dg.MaterializeResult:
    previous = trial.previous_final_dir()
    suites = {
        f.id: resolve_suite(load_suite(REPO_ROOT / "expectations" / f"{f.id}.json"), trial.codelists) for f in FORMS
    }
    with trial.connect() as con:
        counts = build_queries(
            con, trial.cfg, trial.export_id, trial.cut,
            previous_db=previous / DATABASE_NAME if previous else None,
            previous_cut=dt.date.fromisoformat(previous.name) if previous else None,
            suites=suites,
        )
    context.log.info(f"data queries: {counts} (history from {previous or 'no earlier data cut'})")
    return dg.MaterializeResult(
        metadata={"dagster/row_count": counts["total"], **{k: v for k, v in counts.items() if k != "total"},
                  "previous_data_cut": previous.name if previous else "none"}
    )


@dg.asset(
    key=["analysis", "eligibility"],
    deps=[adsl, *_raw("dm", "enrol", "ie", "sc", "lb")],
    description="Eligibility: every inclusion criterion of the study configuration evaluated on the screening "
    "values (x ULN from the lab's own range), next to the investigator's assessment; protocol deviations of "
    "enrolled participants who miss one (analysis.protocol_deviations).",
    **COMMON,
)
def eligibility(trial: TrialResource) -> dg.MaterializeResult:
    return _counts_result(trial, lambda con: build_eligibility(con, trial.cfg), "eligibility")


@dg.asset(
    key=["analysis", "adlb"],
    deps=[adsl, *_raw("lb")],
    description="Lab analysis table (ADLB-like) with CTCAE grades from value and the lab's normal range; worst grade, "
    "nadir, neutrophil recovery and day-28 cytopenia per participant; worst-grade summary per dose level.",
    **COMMON,
)
def adlb(trial: TrialResource) -> dg.MaterializeResult:
    return _counts_result(trial, lambda con: build_adlb(con, trial.cfg, baseline_visit=trial.cfg.screening_visit), "adlb")


@dg.asset(
    key=["analysis", "crs_icans"],
    deps=[adae, *_raw("cm")],
    description="CRS and ICANS events with the ASTCT grade re-derived from the recorded items next to the "
    "investigator's, onset, duration, tocilizumab and steroid use; summary per dose level.",
    **COMMON,
)
def crs_icans(trial: TrialResource) -> dg.MaterializeResult:
    return _counts_result(trial, lambda con: build_crs_icans(con, trial.cfg), "crs_icans")


@dg.asset(
    key=["analysis", "pharmacokinetics"],
    deps=[adsl, *_raw("pc")],
    description="CAR-T cellular kinetics: concentrations (ADPC-like), NCA parameters per participant (ADPP-like: "
    "Cmax, Tmax, AUC0-28d, AUClast, lambda-z, half-life) and summaries per dose level.",
    **COMMON,
)
def pharmacokinetics(trial: TrialResource) -> dg.MaterializeResult:
    return _counts_result(trial, lambda con: build_pk(con, trial.cfg), "adpp")


@dg.asset(
    key=["analysis", "dlt_review"],
    deps=[adae, adlb],
    description="Candidate DLTs from the configured DLT rules (AEs and labs in the window) next to the "
    "investigator's adjudication; disagreements listed for the medical monitor.",
    **COMMON,
)
def dlt_review(trial: TrialResource) -> dg.MaterializeResult:
    return _counts_result(trial, lambda con: build_dlt_review(con, trial.cfg, trial.cut), "candidates")


@dg.asset(
    key=["analysis", "exposure"],
    deps=[adsl, *_raw("ld", "mfg")],
    description="Exposure: lymphodepletion cumulative doses against the protocol, product release and quality, "
    "cells infused against the dose level, vein-to-vein time; summary per dose level.",
    **COMMON,
)
def exposure(trial: TrialResource) -> dg.MaterializeResult:
    return _counts_result(trial, lambda con: build_exposure(con, trial.cfg), "exposure")


derived = [exposure, adsl, adae, participant_flow, dose_escalation, safety_tables, data_queries, adlb, crs_icans, pharmacokinetics, dlt_review,
           eligibility]
