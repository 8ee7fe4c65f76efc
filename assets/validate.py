"""Validate: asset checks. Great Expectations suites per form, quarantine checks, cross-form SQL rules.

- Every expectation of ``expectations/<form>.json`` is its own check on ``raw/<form>``, run by Great
  Expectations over the rows that passed ingest (as text). ERROR expectations are blocking: a row
  that reached staging while breaking one stops the reports.
- ``<form>_quarantine_empty`` (WARN) lists the rows ingest kept out of staging, with their reasons.
- Every rule of ``clinical.rules`` is its own check on the analysis table it guards, blocking when
  its severity is ERROR.
"""


import re

import dagster as dg

from assets.derive import adae, adsl
from clinical.crf import FORMS, Form
from clinical.expectation_runner import load_suite, resolve_suite, run_suite
from clinical.rules import RULES, Rule, run_rule
from pipelines.resources import REPO_ROOT, TrialResource

SUITES_DIR = REPO_ROOT / "expectations"
MAX_EXAMPLES = 10

# Rules that read only stage.* guard ADSL (they run once all forms are staged); ADAE rules guard ADAE.
RULE_ASSET = {"ae": adae.key}


def check_name(rule_id: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", rule_id.lower()).strip("_")


def _severity(level: str) -> dg.AssetCheckSeverity:
    return dg.AssetCheckSeverity.ERROR if level == "ERROR" else dg.AssetCheckSeverity.WARN


def _gx_checks(form: Form) -> dg.AssetChecksDefinition:
    suite_file = SUITES_DIR / f"{form.id}.json"
    expectations = load_suite(suite_file)["expectations"]
    asset_key = dg.AssetKey(["raw", form.id])
    specs = [
        dg.AssetCheckSpec(
            check_name(e["meta"]["rule_id"]),
            asset=asset_key,
            blocking=e["meta"]["severity"] == "ERROR",
            description=f"[{e['meta']['severity']}] {e['meta']['description']} (Great Expectations: {e['type']})",
        )
        for e in expectations
    ]

    @dg.multi_asset_check(specs=specs, name=f"{form.id}_expectations", can_subset=False)
    def _run(trial: TrialResource):
        suite = resolve_suite(load_suite(suite_file), trial.codelists)
        with trial.connect(read_only=False) as con:
            frame = con.sql(
                f"SELECT * EXCLUDE (_export_id, _file, _line) FROM raw.{form.id} "
                f"WHERE _line IN (SELECT _line FROM stage.{form.id}) ORDER BY _line"
            ).pl()
        for outcome in run_suite(suite, frame):
            yield dg.AssetCheckResult(
                check_name=check_name(outcome.rule_id),
                asset_key=asset_key,
                passed=outcome.success,
                severity=_severity(outcome.severity),
                metadata={
                    "rule_id": outcome.rule_id,
                    "unexpected_count": outcome.unexpected_count,
                    "element_count": outcome.element_count,
                    "errored": outcome.errored,
                    "examples": dg.MetadataValue.json(outcome.examples[:MAX_EXAMPLES]),
                    "rows": dg.MetadataValue.json(outcome.rows[:MAX_EXAMPLES]),
                },
            )

    return _run


def _quarantine_check(form: Form) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=dg.AssetKey(["raw", form.id]),
        name=f"{form.id}_quarantine_empty",
        description=f"[WARN] No row of {form.file} was kept out of staging (quarantined rows become data queries).",
    )
    def _check(trial: TrialResource) -> dg.AssetCheckResult:
        with trial.connect() as con:
            rows = con.execute(
                """SELECT line, subjid, "column", rule, value FROM raw.quarantine
                   WHERE export_id = ? AND form = ? ORDER BY line, "column", rule""",
                [trial.export_id, form.id],
            ).fetchall()
        return dg.AssetCheckResult(
            passed=not rows,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "quarantined": len(rows),
                "first_rows": dg.MetadataValue.json(
                    [dict(zip(("line", "subjid", "column", "rule", "value"), r)) for r in rows[:MAX_EXAMPLES]]
                ),
            },
        )

    return _check


def _rule_check(rule: Rule) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=RULE_ASSET.get(rule.form, adsl.key),
        name=check_name(rule.id),
        blocking=rule.severity == "ERROR",
        description=f"[{rule.severity}] {rule.id}: {rule.description}",
    )
    def _check(trial: TrialResource) -> dg.AssetCheckResult:
        with trial.connect() as con:
            failing = run_rule(con, rule, trial.cfg)
        return dg.AssetCheckResult(
            passed=not failing,
            severity=_severity(rule.severity),
            metadata={
                "rule_id": rule.id,
                "failing_records": len(failing),
                "first_records": dg.MetadataValue.json(
                    [{"SUBJID": s, "detail": d} for s, d in failing[:MAX_EXAMPLES]]
                ),
            },
        )

    return _check


checks = [
    *[_gx_checks(f) for f in FORMS],
    *[_quarantine_check(f) for f in FORMS],
    *[_rule_check(r) for r in RULES],
]
