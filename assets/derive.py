"""Derive: analysis tables in the DuckDB ``analysis`` schema.

Every analysis table is a :class:`Derivation`: an ``AssetSpec`` (its key, upstream assets and
description, as the UI shows it) and a builder ``(trial, con, log) -> metadata`` that reads the
database, calls a pure function of ``clinical`` and returns what the asset reports (row counts under
``dagster/row_count``). They run in two Dagster steps (docs/performance.md):

* ``adsl``: the subject-level table alone, because cross-form rules of severity ERROR guard it
  (``clinical.rules``): their blocking checks run right after it and stop everything downstream;
* ``derive``: every other table of :data:`DERIVATIONS`, in list order, on one database connection.

Adding a table (``analysis/response`` below was added this way; ``analysis/xyz`` is an example)::

    def _xyz(trial, con, log):
        n = build_xyz(con, trial.cfg)                      # a pure function in clinical/
        return {"dagster/row_count": n}

    xyz = dg.AssetSpec(key=["analysis", "xyz"], deps=[adsl_spec.key, *_raw("rs")],
                       description="...", **SPEC)

then add ``Derivation(xyz, _xyz)`` to the :data:`DERIVATIONS` list, after every table it reads
(before ``data_queries`` if a rule guards it), and list the spec in ``assets.report.TABLE_ASSETS``
if a deliverable reads the table. A table that an ERROR rule guards cannot be in the ``derive``
step (checked at import: it needs a step of its own, like ADSL).
"""


import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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
from clinical.expectation_runner import form_suite
from clinical.exposure import build_exposure
from clinical.flow import build_flow, funnel_violations
from clinical.pk import build_pk
from clinical.queries import build_queries
from clinical.response import build_response
from clinical.rules import RULES
from clinical.safety_tables import build_ae_by_grade, build_safety_tables
from pipelines.resources import DATABASE_NAME, TrialResource
from pipelines.taskgraph import Task, run_in_order

SPEC = dict(group_name="derive", kinds={"duckdb"}, owners=OWNERS)
POOL = "trial_db"

Builder = Callable[[TrialResource, Any, Any], dict]


@dataclass(frozen=True)
class Derivation:
    """One analysis table: its asset spec and the builder that writes it and returns its metadata."""

    spec: dg.AssetSpec
    build: Builder


def _raw(*forms: str) -> list[dg.AssetKey]:
    return [dg.AssetKey(["raw", f]) for f in forms]


def _counts(build, row_table: str) -> Builder:
    """A builder for a ``clinical`` function returning {table: row count} (row_table's is the row count)."""

    def _build(trial: TrialResource, con, log) -> dict:
        counts = build(trial, con)
        return {"dagster/row_count": counts[row_table], **counts}

    return _build


# -- ADSL: its own step (ERROR rules guard it) ----------------------------------------------------

adsl_spec = dg.AssetSpec(
    key=["analysis", "adsl"],
    deps=_raw("dm", "enrol", "ie", "sc", "apher", "mfg", "ld", "inf", "ae", "pc", "ds"),
    description="Subject-level analysis table (ADSL-like): dose levels planned and actual, key dates, "
    "population flags (screened ... DLT-evaluable, PK-evaluable) with reasons.",
    **SPEC,
)


@dg.asset(
    key=adsl_spec.key,
    deps=adsl_spec.deps,
    description=adsl_spec.description,
    pool=POOL,
    **SPEC,
)
def adsl(trial: TrialResource) -> dg.MaterializeResult:
    with trial.connect() as con:
        n = build_adsl(con, trial.cfg, trial.cut)
        infused = con.execute("SELECT count(*) FROM analysis.adsl WHERE SAFFL = 'Y'").fetchone()[0]
        after_cut = con.execute("SELECT count(*) FROM cut.after_cut").fetchone()[0]
    # after_cut: records (and end dates) after the cut-off the analysis leaves out (cut.after_cut).
    return dg.MaterializeResult(metadata={"dagster/row_count": n, "infused": infused, "records_after_cut": after_cut})


# -- the other tables: one step --------------------------------------------------------------------


def _adae(trial: TrialResource, con, log) -> dict:
    n = build_adae(con, trial.cfg)
    te = con.execute("SELECT count(*) FROM analysis.adae WHERE TRTEMFL = 'Y'").fetchone()[0]
    return {"dagster/row_count": n, "treatment_emergent": te, "anchor": trial.cfg.safety.treatment_emergent_anchor}


def _participant_flow(trial: TrialResource, con, log) -> dict:
    counts = build_flow(con)
    bad = funnel_violations(con)
    if bad:
        raise dg.Failure(description=f"participant flow increases down the funnel: {bad}", allow_retries=False)
    return {"dagster/row_count": counts["participant_flow"], **counts}


def _dose_escalation(trial: TrialResource, con, log) -> dict:
    decision = build_escalation(con, trial.cfg)
    return {k: dg.MetadataValue.text(str(v)) for k, v in decision.items()}


def _safety_tables(trial: TrialResource, con, log) -> dict:
    counts = build_safety_tables(con)
    counts["ae_by_grade"] = build_ae_by_grade(con)
    return {"dagster/row_count": counts["teae_summary"], **counts}


def _pharmacokinetics(trial: TrialResource, con, log) -> dict:
    built = build_pk(con, trial.cfg)
    # A participant whose profile the NCA cannot analyse has NULL parameters (the data query
    # XF-PC-SAME-DAY names the samples); the run goes on and says who and why.
    for subjid, reason in built.not_derived.items():
        log.info(f"PK: NCA parameters of {subjid} not derived (analysis.adpp AVAL NULL): {reason}")
    reasons = "; ".join(f"{s}: {r}" for s, r in built.not_derived.items())
    return {"dagster/row_count": built.counts["adpp"], **built.counts,
            "nca_not_derived": len(built.not_derived), "nca_not_derived_reasons": reasons or "none"}


def _data_queries(trial: TrialResource, con, log) -> dict:
    previous = trial.previous_final_dir()
    suites = {f.id: form_suite(f.id, trial.codelists) for f in FORMS}
    counts = build_queries(
        con, trial.cfg, trial.export_id, trial.cut,
        previous_db=previous / DATABASE_NAME if previous else None,
        previous_cut=dt.date.fromisoformat(previous.name) if previous else None,
        suites=suites,
    )
    log.info(f"data queries: {counts} (history from {previous or 'no earlier data cut'})")
    return {"dagster/row_count": counts["total"], **{k: v for k, v in counts.items() if k != "total"},
            "previous_data_cut": previous.name if previous else "none"}


exposure = dg.AssetSpec(
    key=["analysis", "exposure"],
    deps=[adsl_spec.key, *_raw("ld", "mfg")],
    description="Exposure: lymphodepletion cumulative doses against the protocol, product release and quality, "
    "cells infused against the dose level, vein-to-vein time; summary per dose level.",
    **SPEC,
)
adae = dg.AssetSpec(
    key=["analysis", "adae"],
    deps=[adsl_spec.key, *_raw("ae")],
    description="Adverse-event analysis table (ADAE-like): imputed dates with flags, protocol day (day 0 = "
    "infusion) and CDISC study day, period, treatment-emergent flag by the configured anchor, DLT.",
    **SPEC,
)
participant_flow = dg.AssetSpec(
    key=["analysis", "participant_flow"],
    deps=[adsl_spec.key],
    description="Participant flow per dose level: screening, funnel stages and the reasons at every exit.",
    **SPEC,
)
dose_escalation = dg.AssetSpec(
    key=["analysis", "dose_escalation"],
    deps=[adsl_spec.key],
    description="3+3 dose-escalation status per dose level and the next step the configured rules give.",
    **SPEC,
)
safety_tables = dg.AssetSpec(
    key=["analysis", "safety_tables"],
    deps=[adsl_spec.key, adae.key],
    description="Treatment-emergent AE overview per dose level, AEs by SOC and PT (all, serious, non-serious) "
    "and by worst grade.",
    **SPEC,
)
adlb = dg.AssetSpec(
    key=["analysis", "adlb"],
    deps=[adsl_spec.key, *_raw("lb")],
    description="Lab analysis table (ADLB-like) with CTCAE grades from value and the lab's normal range; worst grade, "
    "nadir, neutrophil recovery and day-28 cytopenia per participant; worst-grade summary per dose level.",
    **SPEC,
)
crs_icans = dg.AssetSpec(
    key=["analysis", "crs_icans"],
    deps=[adae.key, *_raw("cm")],
    description="CRS and ICANS events with the ASTCT grade re-derived from the recorded items next to the "
    "investigator's, onset, duration, tocilizumab and steroid use; summary per dose level.",
    **SPEC,
)
pharmacokinetics = dg.AssetSpec(
    key=["analysis", "pharmacokinetics"],
    deps=[adsl_spec.key, *_raw("pc")],
    description="CAR-T cellular kinetics: concentrations (ADPC-like), NCA parameters per participant (ADPP-like: "
    "Cmax, Tmax, AUC0-28d, AUClast, lambda-z, half-life) and summaries per dose level.",
    **SPEC,
)
dlt_review = dg.AssetSpec(
    key=["analysis", "dlt_review"],
    deps=[adae.key, adlb.key],
    description="Candidate DLTs from the configured DLT rules (AEs and labs in the window) next to the "
    "investigator's adjudication; disagreements listed for the medical monitor.",
    **SPEC,
)
response = dg.AssetSpec(
    key=["analysis", "response"],
    deps=[adsl_spec.key, *_raw("rs")],
    description="Tumour response (RECIST 1.1): assessments from infusion (ADRS-like), best overall response per "
    "infused participant with the SD minimum and confirmation of the study configuration, last contact for the "
    "swimmer plot; BOR and objective response rate per dose level.",
    **SPEC,
)
eligibility = dg.AssetSpec(
    key=["analysis", "eligibility"],
    deps=[adsl_spec.key, *_raw("dm", "enrol", "ie", "sc", "lb")],
    description="Eligibility: every inclusion criterion of the study configuration evaluated on the screening "
    "values (x ULN from the lab's own range), next to the investigator's assessment; protocol deviations of "
    "enrolled participants who miss one (analysis.protocol_deviations).",
    **SPEC,
)
data_queries = dg.AssetSpec(
    key=["analysis", "data_queries"],
    # Every asset a rule guards (its WARN rules run again here), and every raw form (quarantine, WARN expectations).
    deps=[*[dg.AssetKey(list(p)) for p in dict.fromkeys(r.asset_path for r in RULES)], *[a.key for a in raw_forms]],
    description="Data queries tracked across exports: every failing record of a WARN rule (cross-form rules, "
    "quarantined rows, WARN expectations) with a stable id, status Open / Closed / Re-opened against the "
    "previous data cut, first and last seen, days open.",
    **SPEC,
)

# In dependency order: a table after every table it reads.
DERIVATIONS: list[Derivation] = [
    Derivation(exposure, _counts(lambda trial, con: build_exposure(con, trial.cfg), "exposure")),
    Derivation(adae, _adae),
    Derivation(participant_flow, _participant_flow),
    Derivation(dose_escalation, _dose_escalation),
    Derivation(safety_tables, _safety_tables),
    Derivation(adlb, _counts(lambda trial, con: build_adlb(con, trial.cfg, baseline_visit=trial.cfg.screening_visit),
                             "adlb")),
    Derivation(crs_icans, _counts(lambda trial, con: build_crs_icans(con, trial.cfg), "crs_icans")),
    Derivation(pharmacokinetics, _pharmacokinetics),
    Derivation(dlt_review, _counts(lambda trial, con: build_dlt_review(con, trial.cfg, trial.cut), "candidates")),
    Derivation(response, _counts(lambda trial, con: build_response(con, trial.cfg.response), "response")),
    Derivation(eligibility, _counts(lambda trial, con: build_eligibility(con, trial.cfg), "eligibility")),
    Derivation(data_queries, _data_queries),
]


def _check_order(derivations: list[Derivation]) -> None:
    """Each table after the tables it reads; no table an ERROR rule guards is derived in this step."""
    done = {adsl_spec.key}
    gated = {dg.AssetKey(list(r.asset_path)) for r in RULES if r.severity == "ERROR"}
    for d in derivations:
        if d.spec.key in gated:
            raise ValueError(
                f"{d.spec.key.to_user_string()}: an ERROR rule guards it, so it needs a step of its own (like adsl) "
                "for its blocking check to stop the tables that read it"
            )
        later = [k for k in d.spec.deps if k.asset_key.path[0] == "analysis" and k.asset_key not in done]
        if later:
            raise ValueError(f"{d.spec.key.to_user_string()} reads {later[0].asset_key.to_user_string()}, derived after it")
        done.add(d.spec.key)


_check_order(DERIVATIONS)


# Tables built at once in the derive step: while one table's Python runs (NCA), another's DuckDB query can.
DERIVE_THREADS = 2


class _DeferredLog:
    """A builder's log lines, kept until its table is handed to Dagster (in list order, from the step's thread)."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, str]] = []

    def info(self, message: str) -> None:
        self.messages.append(("info", message))


def _derive_step(derivations: list[Derivation]) -> dg.AssetsDefinition:
    @dg.multi_asset(
        name="derive",
        specs=[d.spec for d in derivations],
        pool=POOL,
        can_subset=True,
        description="Every analysis table but ADSL, in dependency order, in one step.",
    )
    def _derive(context: dg.AssetExecutionContext, trial: TrialResource):
        selected = context.selected_asset_keys

        def task(d: Derivation) -> Task:
            def run() -> tuple[dict, list[tuple[str, str]]]:
                log = _DeferredLog()
                with trial.connect() as con:
                    return d.build(trial, con, log), log.messages

            return Task(d.spec.key, frozenset(dep.asset_key for dep in d.spec.deps), run)

        chosen = [task(d) for d in derivations if d.spec.key in selected]
        # Two tables at a time where neither reads the other (pipelines.taskgraph); results and
        # log lines in list order.
        for t, (metadata, messages) in run_in_order(chosen, workers=DERIVE_THREADS):
            for level, message in messages:
                getattr(context.log, level)(message)
            yield dg.MaterializeResult(asset_key=t.key, metadata=metadata)
        # The last write of the run: what follows (rule checks, reports) only reads. When the run goes
        # on to the manifest, the database is made read-only and its canonical copy starts now, on
        # the other core while the reports are written (pipelines.resources, seal_database).
        steps = context.run.step_keys_to_execute
        if steps is None or "report__manifest" in steps:
            trial.seal_database()

    return _derive


derive = _derive_step(DERIVATIONS)

derived = [adsl, derive]
