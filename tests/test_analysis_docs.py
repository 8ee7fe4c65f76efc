"""docs/analysis-data.md is generated from the code: regenerating it from the demo run changes nothing."""

from pathlib import Path

import duckdb

from clinical.analysis_docs import render_analysis_docs

DOC = Path(__file__).resolve().parent.parent / "docs" / "analysis-data.md"


def test_analysis_docs_match_the_code(demo_run):
    expected = render_analysis_docs(demo_run.final / "trial.duckdb")
    assert DOC.read_text(encoding="utf-8") == expected, (
        "docs/analysis-data.md is out of date: run `python -m pipelines analysis-docs --database "
        "output/IM83/2025-12-31/trial.duckdb` after `make run`"
    )


def test_every_analysis_table_is_documented(demo_run):
    con = duckdb.connect(str(demo_run.final / "trial.duckdb"), read_only=True)
    tables = [r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() WHERE schema_name = 'analysis'").fetchall()]
    con.close()
    text = render_analysis_docs(demo_run.final / "trial.duckdb")
    assert [t for t in tables if f"### `analysis.{t}`" not in text] == []
