"""The benchmark command (``python -m pipelines bench``) at a small N, and what it relies on at scale.

No timing is asserted here: timings depend on the machine and its load (docs/performance.md).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import duckdb
import pytest

from clinical.crf import study_codelists
from clinical.dose_escalation import build_escalation
from clinical.study import load_study
from pipelines import bench

ROOT = Path(__file__).resolve().parent.parent
STUDY = ROOT / "studies" / "im83.yaml"


def test_bench_study_config_has_a_site_per_999_participants(tmp_path):
    path = bench.bench_study_config(2500, tmp_path / "bench.yaml")
    cfg = load_study(path)
    assert [s.id for s in cfg.study.sites] == ["01", "02", "03"]
    assert set(study_codelists(cfg).resolve("@sites")) == {"01", "02", "03"}
    base = load_study(STUDY)
    assert cfg.dose_levels == base.dose_levels and cfg.escalation == base.escalation
    # Few participants: the study's own sites.
    assert [s.id for s in load_study(bench.bench_study_config(30, tmp_path / "small.yaml")).study.sites] == ["01"]


def test_every_asset_step_has_a_stage():
    from pipelines.definitions import defs

    stages = bench.stage_of_steps(defs)
    assert stages and set(stages.values()) <= set(bench.STAGES)
    # Multi-asset steps are named after their op: the export snapshot and every form in "ingest", every
    # analysis table but ADSL in "derive".
    assert stages["ingest"] == "ingest"
    assert stages["analysis__adsl"] == "derive" and stages["derive"] == "derive"
    assert stages["reports"] == "report"
    # Every asset that is computed (not the export files) is written by a step that has a stage.
    graph = defs.resolve_asset_graph()
    computed = {k for ad in graph.assets_defs if ad.is_executable for k in ad.keys}
    assert {"ingest/export_snapshot", "raw/lb", "analysis/adlb", "report/manifest"} <= {k.to_user_string() for k in computed}
    assert {ad.node_def.name for ad in graph.assets_defs if ad.is_executable and ad.keys} == set(stages)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> tuple[int, dict, Path]:
    base = tmp_path_factory.mktemp("bench")
    out = base / "bench_40.json"
    rc = bench.cli_bench(
        ["--participants", "40", "--out", str(out), "--workdir", str(base / "work"), "--floor-repeats", "1"]
    )
    return rc, json.loads(out.read_text(encoding="utf-8")), base


def test_bench_writes_the_json(smoke):
    rc, doc, base = smoke
    assert rc == 0, doc.get("stderr_tail")
    assert doc["success"] is True
    for key in ("participants", "cores", "floor_s", "total_s", "peak_rss_mb", "stages", "export_rows",
                "export_bytes", "process_s", "targets", "load_average", "dagster_instance"):
        assert key in doc, key
    assert doc["participants"] == 40
    assert doc["cores"] >= 1
    assert doc["dagster_instance"] == "sqlite"
    assert doc["export_rows"] > 40 and doc["export_bytes"] > 0
    assert set(doc["export_files"]) >= {"dm.csv", "lb.csv", "ae.csv", "pc.csv"}
    assert doc["floor_s"] > 0 and doc["total_s"] > 0 and doc["peak_rss_mb"] > 0
    assert set(doc["stages"]) == set(bench.STAGES)
    for name, st in doc["stages"].items():
        assert st["wall_s"] > 0 and st["peak_rss_mb"] > 0 and st["steps"] > 0, name
        assert st["peak_rss_mb"] <= doc["peak_rss_mb"] + 1
    # The stages and what ran outside any step add up to the run.
    parts = sum(st["wall_s"] for st in doc["stages"].values()) + doc["orchestration_s"]
    assert math.isclose(parts, doc["total_s"], abs_tol=0.05)
    assert doc["process_s"] >= doc["total_s"]
    assert set(doc["targets"]) == {"ingest_validate_derive_x_floor", "total_x_floor", "peak_rss_mb"}
    # The work folder holds the export, the scratch Dagster home and the published outputs.
    assert (base / "work" / "export" / "lb.csv").is_file()
    assert list((base / "work" / "output").glob("*/2025-12-31/manifest.json"))


def test_markdown_table(smoke):
    _, doc, _ = smoke
    table = bench.markdown_table([doc])
    assert table.startswith("|  | N = 40 |")
    assert "ingest+validate+derive" in table and "peak RSS MB: process" in table


# --------------------------------------------------------------------------------------------------
# Benchmark mode: more than 6 participants per dose is no 3+3 path; the step must not fail


def _escalation_db(path: Path, per_dose: int) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(str(path))
    con.execute("CREATE SCHEMA analysis")
    con.execute(
        """CREATE TABLE analysis.dose_levels AS SELECT * FROM (VALUES
             ('DL1', 1, '5x10^8 cells', 5e8), ('DL2', 2, '1x10^9 cells', 1e9), ('DL3', 3, '2x10^9 cells', 2e9))
           t(DOSE, DOSEN, DOSELBL, CELLS)"""
    )
    rows = []
    day = dt.date(2025, 1, 1)
    for i in range(per_dose * 3):
        dose = i % 3 + 1
        trt = day + dt.timedelta(days=i)
        rows.append((f"01-{i + 1:03d}", f"DL{dose}", dose, "Y", "Y", "Y", None,
                     "Y" if i % 7 == 0 else "N", trt, trt + dt.timedelta(days=28)))
    con.execute(
        """CREATE TABLE analysis.adsl (SUBJID VARCHAR, DOSEP VARCHAR, DOSEPN INTEGER, ENRLFL VARCHAR, SAFFL VARCHAR,
             DLTEVLFL VARCHAR, WINOPFL VARCHAR, DLTFL VARCHAR, TRTSDT DATE, DLTWEND DATE)"""
    )
    con.executemany("INSERT INTO analysis.adsl VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    return con


def test_escalation_beyond_three_plus_three_is_reported_not_raised(tmp_path):
    cfg = load_study(STUDY)
    con = _escalation_db(tmp_path / "esc.duckdb", per_dose=400)
    out = build_escalation(con, cfg)
    assert out["determined"] is False
    row = con.execute(
        "SELECT NEXT_DOSE, CONTINUE_TRIAL, MTD, DETERMINED, REASON FROM analysis.escalation_decision"
    ).fetchone()
    assert row[:4] == (None, None, None, False)
    assert "no 3+3 decision" in row[4] and "400 participants" in row[4]
    per_dose = con.execute("SELECT DOSE, INFUSED, EVALUABLE, DLTS FROM analysis.dose_escalation ORDER BY DOSEN").fetchall()
    assert [r[1] for r in per_dose] == [400, 400, 400]
    assert sum(r[3] for r in per_dose) == sum(1 for i in range(1200) if i % 7 == 0)
    con.close()


def test_escalation_on_a_3_plus_3_path_is_still_decided(tmp_path):
    cfg = load_study(STUDY)
    con = _escalation_db(tmp_path / "esc.duckdb", per_dose=1)  # 1N 2N 3N: three cohorts in progress
    out = build_escalation(con, cfg)
    assert out["determined"] is True
    assert con.execute("SELECT DETERMINED FROM analysis.escalation_decision").fetchone() == (True,)
    con.close()
