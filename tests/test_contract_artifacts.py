"""Drift test: docs/crf-export.md and expectations/*.json are what clinical/crf.py generates.

Regenerate after changing the contract:
    .venv/bin/python -c "from pathlib import Path; from clinical.contract_docs import write_artifacts; write_artifacts(Path('.'))"
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

from clinical import contract_docs as cd
from clinical.crf import FORMS, study_codelists
from clinical.study import load_study

ROOT = Path(__file__).resolve().parents[1]

if importlib.util.find_spec("xdist") is not None:  # keep the GX-importing test with the other GX tests
    pytestmark = pytest.mark.xdist_group("great_expectations")


def test_generated_artifacts_are_up_to_date():
    stale = cd.check_artifacts(ROOT)
    assert stale == [], f"regenerate with clinical.contract_docs.write_artifacts: {stale}"


def test_check_artifacts_reports_drift(tmp_path):
    written = cd.write_artifacts(tmp_path)
    assert len(written) == 1 + len(FORMS)
    assert cd.check_artifacts(tmp_path) == []
    (tmp_path / "expectations" / "ae.json").write_text("{}\n", encoding="utf-8")
    (tmp_path / "docs" / "crf-export.md").unlink()
    assert cd.check_artifacts(tmp_path) == ["docs/crf-export.md", "expectations/ae.json"]


def test_output_is_deterministic():
    assert cd.render_crf_markdown() == cd.render_crf_markdown()
    assert cd.expected_artifacts() == cd.expected_artifacts()


def test_markdown_covers_every_form_field_and_identifier():
    md = cd.render_crf_markdown()
    for form in FORMS:
        assert f"`{form.file}`" in md
        for f in form.fields:
            assert f"| `{f.name}` | " in md
    assert md.count("direct identifier: dropped at ingest") == sum(f.identifier for fm in FORMS for f in fm.fields)
    assert "partial date allowed" in md


def test_study_codelists_are_named_not_hard_coded():
    cfg = load_study(ROOT / "studies" / "im83.yaml")
    resolved = study_codelists(cfg).values
    # Every placeholder the contract uses has a documented configuration key, and vice versa.
    assert set(cd.STUDY_CODELIST_SOURCES) == set(resolved)
    md = cd.render_crf_markdown()
    # The IM83 values themselves are not in the document (they would go stale with the config).
    for value in cfg.dose_ids + [a.name for a in cfg.lymphodepletion.agents]:
        assert value not in md


def _suite_files() -> list[Path]:
    return sorted((ROOT / "expectations").glob("*.json"))


def test_one_suite_file_per_form():
    assert sorted(p.stem for p in _suite_files()) == sorted(f.id for f in FORMS)


@pytest.mark.parametrize("path", _suite_files(), ids=lambda p: p.stem)
def test_suite_file_shape(path):
    suite = json.loads(path.read_text(encoding="utf-8"))
    assert suite["name"] == path.stem
    rule_ids = [e["meta"]["rule_id"] for e in suite["expectations"]]
    assert len(rule_ids) == len(set(rule_ids))
    form_tag = path.stem.upper()
    for exp in suite["expectations"]:
        assert exp["type"].startswith("expect_")
        assert re.fullmatch(rf"GX-{form_tag}-[A-Z0-9]+(-[A-Z]+)?", exp["meta"]["rule_id"])
        assert exp["meta"]["severity"] in ("ERROR", "WARN")
        assert exp["severity"] == {"ERROR": "critical", "WARN": "warning"}[exp["meta"]["severity"]]
        assert exp["meta"]["description"]
        if exp["type"] == "expect_column_values_to_be_between":
            assert exp["meta"]["input"] == "numeric"
    assert rule_ids[:2] == [f"GX-{form_tag}-COLUMNS", f"GX-{form_tag}-KEY"]


def test_identifiers_never_reach_a_suite():
    for form in FORMS:
        text = json.dumps(cd.build_suite(form))
        for f in form.fields:
            if f.identifier:
                assert f'"{f.name}"' not in text


@pytest.mark.parametrize(
    "regex, good, bad",
    [
        (
            cd.DATE_REGEX,
            ["2025-03-25", "2024-02-29", "2000-02-29", "2025-12-31", "2025-04-30"],
            ["2025-02-30", "2025-02-29", "1900-02-29", "2025-04-31", "25/03/2025", "2025-3-5", "2025-03", "2025",
             "2025-13-01", "2025-00-10", "2025-03-25T10:00", " 2025-03-25"],
        ),
        (
            cd.PARTIAL_DATE_REGEX,
            ["2025-03-25", "2024-02-29", "2025-03", "2025"],
            ["2025-02-30", "2025-13", "2025-3", "25", "03/2025", "UNK-03-2025"],
        ),
        (cd.INT_REGEX, ["0", "5", "-3", "+4", "120"], ["1.0", "1e3", " 5", "5 ", "five", "٣", ""]),
        (cd.FLOAT_REGEX, ["0", "1.5", "-0.25", "+2", ".5", "5.", "5e8", "1.94E9", "-2.5e-3", "3E+02"],
         ["1,5", "1 000", "12%", "abc", "1.2.3", ".", "", "e8", "5e", "1.9E9.5", "1.9 E9", "1.9x10^9"]),
    ],
)
def test_format_regexes(regex, good, bad):
    for v in good:
        assert re.search(regex, v), v
    for v in bad:
        assert not re.search(regex, v), v


def test_suite_files_load_in_great_expectations():
    """Every expectation type exists in great_expectations.expectations and GX accepts each file."""
    from clinical.expectation_runner import resolve_suite, warm_up

    warm_up()  # lazy GX import + ephemeral context, shared with test_expectation_runner
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    codelists = study_codelists(load_study(ROOT / "studies" / "im83.yaml"))
    for path in _suite_files():
        suite = json.loads(path.read_text(encoding="utf-8"))
        for exp in suite["expectations"]:
            cls_name = "".join(part.capitalize() for part in exp["type"].split("_"))
            assert hasattr(gxe, cls_name), f"{path.name}: unknown GX expectation {exp['type']}"
        resolved = resolve_suite(suite, codelists)
        objs = [
            ExpectationConfiguration(type=e["type"], kwargs=e["kwargs"], meta=e["meta"]).to_domain_obj()
            for e in resolved["expectations"]
        ]
        gx_suite = gx.ExpectationSuite(name=suite["name"], expectations=objs, meta=suite["meta"])
        assert len(gx_suite.expectations) == len(suite["expectations"])
        # GX's own loader accepts the file as written (dicts with "severity"), dropping nothing.
        assert len(gx.ExpectationSuite(**resolved).expectations) == len(suite["expectations"])
