"""The rule catalogue docs/validation-rules.md lists every rule in code, and nothing else; every rule
is its own Dagster asset check on the asset it guards, blocking exactly when its severity is ERROR."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import dagster as dg

from clinical.rules import (
    CATALOGUE_PATH,
    INGEST_RULES,
    RULES,
    Severity,
    catalogue_ids,
    catalogue_rule_ids,
    check_name,
    gx_expectations,
    render_catalogue,
)

ROOT = Path(__file__).resolve().parent.parent
REGENERATE = "regenerate with: .venv/bin/python -m clinical.rules"


def _doc() -> str:
    return (ROOT / CATALOGUE_PATH).read_text(encoding="utf-8")


def test_every_rule_in_code_is_in_the_catalogue_and_back():
    listed = catalogue_rule_ids(_doc())
    in_code = catalogue_ids()
    assert not in_code - listed, f"rules in code but not in {CATALOGUE_PATH}: {sorted(in_code - listed)}; {REGENERATE}"
    assert not listed - in_code, f"rules in {CATALOGUE_PATH} but not in code: {sorted(listed - in_code)}; {REGENERATE}"


def test_catalogue_is_generated_from_code():
    assert _doc() == render_catalogue(), f"{CATALOGUE_PATH} is out of date; {REGENERATE}"


# --------------------------------------------------------------------------------------------------
# The ingest rule ids in code, read from the ingest source: only these tests use it, so it lives here
# rather than in clinical/rules.py.

_RULE_ID = r"[A-Z][A-Z0-9]*(?:-[A-Z0-9]+)*"
_NOT_INGEST = {"crf", "study", "rules", "queries", "eligibility"}


def ingest_modules(root: Path | None = None) -> list[Path]:
    """clinical/ingest.py, clinical/sources.py (the export readers) and every clinical module they import."""
    base = (root or ROOT) / "clinical"
    todo, seen = ["ingest", "sources"], []
    while todo:
        name = todo.pop()
        path = base / f"{name}.py"
        if name in seen or name in _NOT_INGEST or not path.is_file():
            continue
        seen.append(name)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("clinical."):
                todo.append(node.module.split(".", 1)[1])
    return [base / f"{n}.py" for n in sorted(seen)]


def _const(node: ast.AST | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def ingest_rule_ids_in_code(root: Path | None = None) -> dict[str, Severity]:
    """The rule ids the ingest code can raise or write, read from its source (:func:`ingest_modules`):
    blocking file rules (ERROR) and quarantine rules (WARN, as ``INGEST-<rule>``).

    Blocking: a literal ``(rule X)`` in a message, or the rule argument of ``file_error(file, "X", ...)``.
    Quarantine: the rule argument of the check builder ``add(column, "X", ...)``; the rule of a
    ``return predicate, "X"``; ``pl.lit("X").alias("rule")``; ``{"rule": ["X"] ...}``; a constant
    ``<NAME>_RULE = "X"``; and a quoted hyphenated id in SQL text (``'DUPLICATE-KEY'``).
    """
    blocking: set[str] = set()
    quarantine: set[str] = set()
    for path in ingest_modules(root):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = {
            id(n.body[0].value)
            for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
            and n.body and isinstance(n.body[0], ast.Expr) and _const(n.body[0].value) is not None
        }
        for node in ast.walk(tree):
            text = _const(node)
            if text is not None and id(node) not in docstrings:
                blocking.update(re.findall(rf"\(rule ({_RULE_ID})\)", text))
                quarantine.update(re.findall(r"'([A-Z][A-Z0-9]*(?:-[A-Z0-9]+)+)'", text))
            if isinstance(node, ast.Call):
                fname = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                arg1 = _const(node.args[1]) if len(node.args) > 1 else None
                if fname == "file_error" and arg1:
                    blocking.add(arg1)
                elif fname == "add" and arg1 and re.fullmatch(_RULE_ID, arg1):
                    quarantine.add(arg1)
                elif fname == "alias" and node.args and _const(node.args[0]) == "rule":
                    inner = node.func.value if isinstance(node.func, ast.Attribute) else None
                    if isinstance(inner, ast.Call) and inner.args and _const(inner.args[0]):
                        quarantine.add(_const(inner.args[0]))
            elif isinstance(node, ast.Return) and isinstance(node.value, ast.Tuple) and len(node.value.elts) == 2:
                rid = _const(node.value.elts[1])
                if rid and re.fullmatch(_RULE_ID, rid) and len(rid) > 2:
                    quarantine.add(rid)
            elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id.endswith("_RULE")
                                                      for t in node.targets):
                rid = _const(node.value)  # a rule id named once, e.g. PII_RULE = "PII-IN-TEXT"
                if rid and re.fullmatch(_RULE_ID, rid):
                    quarantine.add(rid)
            elif isinstance(node, ast.Dict):
                for k, v in zip(node.keys, node.values):
                    if _const(k) == "rule":
                        quarantine.update(c for c in (_const(x) for x in ast.walk(v)) if c)
    ids: dict[str, Severity] = {f"INGEST-{r}": "WARN" for r in quarantine - blocking}
    ids.update({r: "ERROR" for r in blocking})
    return ids


def test_ingest_rules_declared_for_the_catalogue_match_the_ingest_code():
    in_code = ingest_rule_ids_in_code()
    declared = {k: sev for k, (sev, _) in INGEST_RULES.items()}
    assert set(in_code) - set(declared) == set(), (
        "ingest code raises or writes rule ids missing from clinical.rules.INGEST_RULES (add them, then "
        f"{REGENERATE}): {sorted(set(in_code) - set(declared))}"
    )
    assert set(declared) - set(in_code) == set(), f"INGEST_RULES lists ids the ingest code no longer has: {sorted(set(declared) - set(in_code))}"
    assert in_code == declared  # blocking file rules are ERROR, quarantine rules WARN


def test_ingest_rule_scanner_finds_each_kind_of_rule(tmp_path):
    """The scanner reads rule ids from the shapes the ingest code writes them in (not from docstrings)."""
    pkg = tmp_path / "clinical"
    pkg.mkdir()
    (pkg / "ingest.py").write_text(
        '"""Docstring mentioning (rule FILE-NOT-A-RULE) and \'NOT-A-RULE\'."""\n'
        "from clinical.helper import x\n"
        "def f(col):\n"
        "    raise E(f'{col}: missing (rule FILE-ONE)')\n"
        "def g(file):\n"
        "    raise file_error(file, 'FILE-TWO', 'what')\n"
        "def h(add):\n"
        "    add('C', 'REQUIRED', 'c IS NULL', 'm')\n"
        "    return 'NOT x', 'TYPE-X'\n"
        "sql = \"SELECT _line, 'K', 'DUPLICATE-KEY', v\"\n"
    )
    (pkg / "helper.py").write_text(
        "import polars as pl\n"
        "x = pl.lit('PII-X').alias('rule')\n"
        "y = {'rule': ['CSV-X'] * 3}\n"
    )
    assert ingest_rule_ids_in_code(tmp_path) == {
        "FILE-ONE": "ERROR", "FILE-TWO": "ERROR", "INGEST-REQUIRED": "WARN", "INGEST-TYPE-X": "WARN",
        "INGEST-DUPLICATE-KEY": "WARN", "INGEST-PII-X": "WARN", "INGEST-CSV-X": "WARN",
    }


def test_catalogue_rows_carry_id_severity_form_and_meaning():
    rows = [line.split(" | ") for line in _doc().splitlines() if line.startswith("| `")]
    assert len(rows) == len(catalogue_ids())
    for cells in rows:
        assert len(cells) == 5 and cells[1] in ("ERROR", "WARN") and cells[2] and cells[4].strip(" |"), cells


def test_every_rule_is_its_own_asset_check_on_the_asset_it_guards():
    from pipelines.definitions import defs

    graph = defs.resolve_asset_graph()
    specs = {k.name: graph.get_check_spec(k) for k in graph.asset_check_keys}
    for rule in RULES:
        spec = specs[check_name(rule.id)]
        assert spec.asset_key == dg.AssetKey(list(rule.asset_path)), rule.id
        assert spec.blocking == (rule.severity == "ERROR"), rule.id
        assert f"[{rule.severity}] {rule.id}" in spec.description
    for form_id, exp in gx_expectations():
        spec = specs[check_name(exp["meta"]["rule_id"])]
        assert spec.asset_key == dg.AssetKey(["raw", form_id])
        assert spec.blocking == (exp["meta"]["severity"] == "ERROR")


def test_form_suites_cover_the_contract():
    """Item 1 of the issue: per form, required fields, types, unique keys, code lists (study-specific
    from the configuration), ranges, date formats and the id pattern."""
    from clinical.crf import FORMS

    by_form: dict[str, dict[str, dict]] = {}
    for form_id, exp in gx_expectations():
        by_form.setdefault(form_id, {})[exp["meta"]["rule_id"]] = exp
    for f in FORMS:
        rules = by_form[f.id]
        up = f.id.upper()
        assert f"GX-{up}-COLUMNS" in rules and f"GX-{up}-KEY" in rules
        for fld in f.loaded_fields:
            if fld.required:
                assert f"GX-{up}-{fld.name}-NOTNULL" in rules
            if fld.type in ("int", "float", "date", "id"):
                assert rules[f"GX-{up}-{fld.name}-FORMAT"]["type"] == "expect_column_values_to_match_regex"
            if fld.type == "code":
                assert rules[f"GX-{up}-{fld.name}-CODELIST"]["type"] == "expect_column_values_to_be_in_set"
            if fld.min is not None or fld.max is not None:
                assert f"GX-{up}-{fld.name}-RANGE" in rules
    assert by_form["inf"]["GX-INF-DOSELVL-CODELIST"]["kwargs"]["value_set"] == "@dose_levels"
    assert by_form["dm"]["GX-DM-SITEID-CODELIST"]["kwargs"]["value_set"] == "@sites"
    assert by_form["dm"]["GX-DM-SUBJID-FORMAT"]["kwargs"]["regex"] == "@subjid_pattern"
