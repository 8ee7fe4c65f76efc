"""Derive: analysis tables in the DuckDB ``analysis`` schema. Each asset reads, calls, writes, reports."""


import dagster as dg

from assets.ingest import OWNERS, raw_forms
from clinical.adae import build_adae
from clinical.adlb import build_adlb
from clinical.adsl import build_adsl
from clinical.crs_icans import build_crs_icans
from clinical.dose_escalation import build_escalation
from clinical.flow import build_flow, funnel_violations
from clinical.pk import build_pk
from clinical.queries import build_queries
from clinical.safety_tables import build_safety_tables
from pipelines.resources import TrialResource

COMMON = dict(group_name="derive", kinds={"duckdb"}, owners=OWNERS, pool="trial_db")


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
        raise dg.Failure(description=f"participant flow increases down the funnel: {bad}")
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
    description="Treatment-emergent AE overview per dose level and AEs by SOC and PT (all, serious, non-serious).",
    **COMMON,
)
def safety_tables(trial: TrialResource) -> dg.MaterializeResult:
    with trial.connect() as con:
        counts = build_safety_tables(con)
    return dg.MaterializeResult(metadata={"dagster/row_count": counts["teae_summary"], **counts})


@dg.asset(
    key=["analysis", "data_queries"],
    deps=[adsl, adae, *[a.key for a in raw_forms]],
    description="Data queries: every failing record of a cross-form rule and every quarantined row, with stable ids.",
    **COMMON,
)
def data_queries(trial: TrialResource) -> dg.MaterializeResult:
    with trial.connect() as con:
        n = build_queries(con, trial.cfg, trial.export_id)
    return dg.MaterializeResult(metadata={"dagster/row_count": n})


@dg.asset(
    key=["analysis", "adlb"],
    deps=[adsl, *_raw("lb")],
    description="Lab analysis table (ADLB-like) with CTCAE grades from value and the lab's normal range; worst grade, "
    "nadir, neutrophil recovery and day-28 cytopenia per participant; worst-grade summary per dose level.",
    **COMMON,
)
def adlb(trial: TrialResource) -> dg.MaterializeResult:
    with trial.connect() as con:
        counts = build_adlb(con, trial.cfg)
    return dg.MaterializeResult(metadata={"dagster/row_count": counts["adlb"], **counts})


@dg.asset(
    key=["analysis", "crs_icans"],
    deps=[adae, *_raw("cm")],
    description="CRS and ICANS events with the ASTCT grade re-derived from the recorded items next to the "
    "investigator's, onset, duration, tocilizumab and steroid use; summary per dose level.",
    **COMMON,
)
def crs_icans(trial: TrialResource) -> dg.MaterializeResult:
    with trial.connect() as con:
        counts = build_crs_icans(con, trial.cfg)
    return dg.MaterializeResult(metadata={"dagster/row_count": counts["crs_icans"], **counts})


@dg.asset(
    key=["analysis", "pharmacokinetics"],
    deps=[adsl, *_raw("pc")],
    description="CAR-T cellular kinetics: concentrations (ADPC-like), NCA parameters per participant (ADPP-like: "
    "Cmax, Tmax, AUC0-28d, AUClast, lambda-z, half-life) and summaries per dose level.",
    **COMMON,
)
def pharmacokinetics(trial: TrialResource) -> dg.MaterializeResult:
    with trial.connect() as con:
        counts = build_pk(con, trial.cfg)
    return dg.MaterializeResult(metadata={"dagster/row_count": counts["adpp"], **counts})


derived = [adsl, adae, participant_flow, dose_escalation, safety_tables, data_queries, adlb, crs_icans, pharmacokinetics]
