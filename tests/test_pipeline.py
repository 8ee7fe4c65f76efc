"""The whole Dagster job on the simulated demo export: outputs, exact counts against the simulator's
ground truth, and a blocking failure that leaves the previous outputs in place."""

import hashlib
import json

import duckdb
import polars as pl
import pytest

from conftest import DEMO_CUT, STUDY, copy_export

ROLES = {"database", "dsmb_pdf", "dsmb_html", "sponsor_xlsx", "registry_json", "registry_xml", "queries_xlsx"}


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def db(demo_run):
    con = duckdb.connect(str(demo_run.final / "trial.duckdb"), read_only=True)
    yield con
    con.close()


def test_run_succeeds_and_manifest_lists_every_role(demo_run):
    assert demo_run.returncode == 0
    manifest = json.loads((demo_run.final / "manifest.json").read_text())
    assert manifest["study"] == "IM83" and manifest["data_cut"] == DEMO_CUT
    assert ROLES <= {o["role"] for o in manifest["outputs"]}
    for out in manifest["outputs"]:
        assert _sha(demo_run.final / out["path"]) == out["sha256"], out["role"]
    inputs = {p["path"].rsplit("/", 1)[-1]: p for p in manifest["inputs"]}
    assert set(inputs) == {f"{f}.csv" for f in demo_run.truth["form_rows"]}
    for form, rows in demo_run.truth["form_rows"].items():
        assert inputs[f"{form}.csv"]["rows"] == rows
        assert inputs[f"{form}.csv"]["sha256"] == _sha(demo_run.export / f"{form}.csv")
    assert not (demo_run.out / "IM83" / ".work" / DEMO_CUT).exists()


def test_population_counts_equal_simulator_truth(demo_run, db):
    t = demo_run.truth["counts"]
    got = db.execute(
        """SELECT count(*), count(*) FILTER (ENRLFL = 'N'), count(*) FILTER (ENRLFL = 'Y'),
                  count(*) FILTER (APHFL = 'Y'), count(*) FILTER (LDFL = 'Y'), count(*) FILTER (SAFFL = 'Y'),
                  count(*) FILTER (DLTEVLFL = 'Y'), count(*) FILTER (DLTFL = 'Y'), count(*) FILTER (DTHDT IS NOT NULL)
           FROM analysis.adsl"""
    ).fetchone()
    assert got == (
        t["screened"], t["screen_failures"], t["enrolled"], t["leukapheresed"], t["lymphodepleted"],
        t["infused"], t["dlt_evaluable"], t["dlt"], t["deaths"],
    )


def test_dlt_participants_and_dose_path_equal_truth(demo_run, db):
    truth = demo_run.truth
    dlt = {p["SUBJID"] for p in truth["participants"] if p["dlt"]}
    assert {r[0] for r in db.execute("SELECT SUBJID FROM analysis.adsl WHERE DLTFL = 'Y'").fetchall()} == dlt
    assert db.execute("SELECT OUTCOMES FROM analysis.escalation_decision").fetchone()[0] == truth["escalation"]
    rows = db.execute("SELECT DOSE, ENROLLED, INFUSED, EVALUABLE, DLTS FROM analysis.dose_escalation ORDER BY DOSEN").fetchall()
    per_dose = truth["per_dose"]
    assert rows == [
        (d, per_dose[d]["enrolled"], per_dose[d]["infused"], per_dose[d]["dlt_evaluable"], per_dose[d]["dlt"])
        for d in ("DL1", "DL2", "DL3")
    ]


def test_demo_escalation_decision(db):
    # Seed 83 at 2025-12-31: DL1 0/3, DL2 1/6, DL3 "NT" in progress with one window open: stay at DL3, immature.
    assert db.execute("SELECT NEXT_DOSE, CONTINUE_TRIAL, MTD, MATURE FROM analysis.escalation_decision").fetchone() == (
        "DL3", True, None, False
    )


def test_flow_funnel_counts(demo_run, db):
    flow = dict(
        ((s, d), n) for s, d, n in db.execute("SELECT STAGE, DOSE, N FROM analysis.participant_flow").fetchall()
    )
    for dose, t in demo_run.truth["per_dose"].items():
        assert flow[("enrolled", dose)] == t["enrolled"]
        assert flow[("infused", dose)] == t["infused"]
        assert flow[("dlt_evaluable", dose)] == t["dlt_evaluable"]
    assert flow[("enrolled", "TOTAL")] == demo_run.truth["counts"]["enrolled"]
    # Exits explain every step down: previous stage - this stage = sum of reasons.
    stages = ["enrolled", "leukapheresed", "released", "lymphodepleted", "infused", "completed"]
    exits = db.execute("SELECT STAGE, DOSE, sum(N) FROM analysis.flow_exits GROUP BY ALL").fetchall()
    exits = {(s, d): n for s, d, n in exits}
    for dose in ("DL1", "DL2", "DL3", "TOTAL"):
        for prev, stage in zip(stages, stages[1:]):
            assert flow[(prev, dose)] - flow[(stage, dose)] == exits.get((stage, dose), 0), (stage, dose)


def test_teae_overview_matches_an_independent_count_from_the_export(demo_run, db):
    """Participants with a TEAE (onset on or after infusion), recounted from the CSV files with Polars."""
    ae = pl.read_csv(demo_run.export / "ae.csv", infer_schema=False)
    inf = pl.read_csv(demo_run.export / "inf.csv", infer_schema=False)
    # Demo post-infusion AEs all have full dates; partial ones lie before lymphodepletion.
    te = ae.join(inf, on="SUBJID").filter(pl.col("AESTDAT").str.len_chars() == 10).filter(
        pl.col("AESTDAT") >= pl.col("EXSTDAT")
    )
    expected = {d: te.filter(pl.col("DOSELVL") == d)["SUBJID"].n_unique() for d in ("DL1", "DL2", "DL3")}
    expected["TOTAL"] = te["SUBJID"].n_unique()
    expected_g3 = {
        d: te.filter((pl.col("DOSELVL") == d) & (pl.col("AETOXGR").cast(pl.Int64) >= 3))["SUBJID"].n_unique()
        for d in ("DL1", "DL2", "DL3")
    }
    got = dict(db.execute("SELECT DOSE, N FROM analysis.teae_summary WHERE ROWN = 1").fetchall())
    got_g3 = dict(db.execute("SELECT DOSE, N FROM analysis.teae_summary WHERE ROWN = 3 AND DOSE <> 'TOTAL'").fetchall())
    assert got == expected
    assert got_g3 == expected_g3
    events = dict(db.execute("SELECT DOSE, N FROM analysis.teae_summary WHERE ROWN = 11").fetchall())
    assert events["TOTAL"] == te.height


def test_every_check_ran_and_passed(demo_run):
    # The demo export is clean: no quarantined rows and no data queries.
    con = duckdb.connect(str(demo_run.final / "trial.duckdb"), read_only=True)
    assert con.execute("SELECT count(*) FROM raw.quarantine").fetchone()[0] == 0
    assert con.execute("SELECT count(*) FROM analysis.data_queries").fetchone()[0] == 0
    con.close()


def test_blocking_check_stops_reports_and_keeps_previous_outputs(demo_run, tmp_path, capsys, monkeypatch):
    from pipelines.run import run_export

    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    before = (demo_run.final / "manifest.json").read_bytes()
    pdf_before = _sha(demo_run.final / "dsmb_report.pdf")
    bad = copy_export(demo_run.export, tmp_path / "bad")
    # An AE for a participant who is not in demographics: ERROR rule XF-SUBJ-NOT-IN-DM.
    lines = (bad / "ae.csv").read_text().splitlines()
    fields = lines[1].split(",")
    fields[0], fields[1] = "01-099", "1"
    (bad / "ae.csv").write_text("\n".join([*lines, ",".join(fields)]) + "\n")
    rc = run_export(str(STUDY), str(bad), str(demo_run.out), DEMO_CUT)
    err = capsys.readouterr().err
    assert rc == 1
    assert "check xf_subj_not_in_dm on analysis/adsl failed" in err
    assert "01-099" in err and "in form ae but not in demographics" in err
    assert (demo_run.final / "manifest.json").read_bytes() == before
    assert _sha(demo_run.final / "dsmb_report.pdf") == pdf_before


def test_missing_form_file_fails_naming_the_file(demo_run, tmp_path, capsys, monkeypatch):
    from pipelines.run import run_export

    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    bad = copy_export(demo_run.export, tmp_path / "nolab")
    (bad / "lb.csv").unlink()
    rc = run_export(str(STUDY), str(bad), str(tmp_path / "out"), DEMO_CUT)
    err = capsys.readouterr().err
    assert rc == 1
    assert "lb.csv: file missing from export nolab (rule FILE-MISSING)" in err


def test_dlt_rules_and_astct_grades_agree_with_truth(demo_run, db):
    truth = {p["SUBJID"]: p for p in demo_run.truth["participants"] if p["infused"]}
    # Every simulated DLT meets a configured DLT rule and no other participant does.
    candidates = {r[0] for r in db.execute("SELECT DISTINCT SUBJID FROM analysis.dlt_candidates").fetchall()}
    assert candidates == {s for s, p in truth.items() if p["dlt"]}
    assert db.execute("SELECT count(*) FROM analysis.dlt_review WHERE AGREEFL = 'N'").fetchone()[0] == 0
    # The ASTCT grade re-derived from the recorded items equals the simulated maximum grade.
    for cat, key in (("CRS", "max_crs_grade"), ("ICANS", "max_icans_grade")):
        got = dict(
            db.execute(
                "SELECT SUBJID, max(ASTCTGR) FROM analysis.crs_icans WHERE AECAT = ? GROUP BY SUBJID", [cat]
            ).fetchall()
        )
        assert {s: got.get(s, 0) for s in truth} == {s: p[key] for s, p in truth.items()}, cat


def _run_with_broken_report_part(demo_run, tmp_path, capsys, monkeypatch, name: str, message: str):
    """Run the demo export with ``assets.report.<name>`` raising ``message``: (exit code, stderr,
    files written in the work folder). Nothing may be published."""
    import assets.report
    from pipelines.run import run_export

    monkeypatch.delenv("DAGSTER_HOME", raising=False)

    def broken(*args, **kwargs):
        raise RuntimeError(message)

    monkeypatch.setattr(assets.report, name, broken)
    out = tmp_path / "out"
    rc = run_export(str(STUDY), str(demo_run.export), str(out), DEMO_CUT)
    assert not (out / demo_run.cfg.study.id / DEMO_CUT).exists()
    written = {p.name for p in (out / demo_run.cfg.study.id / ".work" / DEMO_CUT).iterdir()}
    return rc, capsys.readouterr().err, written


def test_a_failing_deliverable_does_not_stop_the_others_and_nothing_is_published(demo_run, tmp_path, capsys, monkeypatch):
    """The four deliverables share the `reports` step; each still fails on its own: the others are
    written, the step fails naming the one that failed, and no manifest publishes the cut."""
    rc, err, written = _run_with_broken_report_part(
        demo_run, tmp_path, capsys, monkeypatch, "_registry_results", "registry draft broken on purpose")
    assert rc == 1
    assert "step reports failed" in err and "registry draft broken on purpose" in err
    assert {"dsmb_report.pdf", "dsmb_report_open.pdf", "sponsor_workbook.xlsx", "data_queries.xlsx"} <= written
    assert "registry_results.json" not in written


def test_report_tables_that_cannot_be_read_stop_only_the_deliverables_that_need_them(demo_run, tmp_path, capsys, monkeypatch):
    rc, err, written = _run_with_broken_report_part(
        demo_run, tmp_path, capsys, monkeypatch, "load_report_tables", "report tables unreadable on purpose")
    assert rc == 1
    assert "report/dsmb_report: report tables unreadable on purpose" in err
    assert "report/sponsor_workbook: report tables unreadable on purpose" in err
    assert {"registry_results.json", "registry_results.xml", "data_queries.xlsx"} <= written
    assert not written & {"dsmb_report.pdf", "sponsor_workbook.xlsx"}
