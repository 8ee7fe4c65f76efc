"""Tests of the CAR-T NCA against the PKNCA vectors in domain.md section 4 (tests/testthat/test-auc.R,
test-half.life.R) and hand-computed values."""

from __future__ import annotations

import math

import polars as pl
import pytest

from clinical.nca import (
    NCA_COLUMNS,
    NOT_DERIVED,
    NcaError,
    auc_inf_obs,
    cli_nca,
    format_number,
    geometric_cv_pct,
    geometric_mean,
    median_min_max,
    nca_profile,
    nca_table,
)

LN2 = math.log(2)
LIN, LOG = "linear", "linear-up-log-down"


def approx(x):
    return pytest.approx(x, abs=1e-4)


# ---- PKNCA unit vectors (domain.md section 4) ---------------------------------------------------


def test_pknca_0_1_1_linear():
    r = nca_profile([0, 1, 2], [0, 1, 1], LIN)
    assert r.auclast == approx(1.5)
    assert r.aucall == approx(1.5)


def test_pknca_0_1_0_linear():
    r = nca_profile([0, 1, 2], [0, 1, 0], LIN)
    assert r.auclast == approx(0.5)
    assert r.aucall == approx(1.0)
    assert auc_inf_obs([0, 1, 2], [0, 1, 0], lambda_z=1.0, auc_method=LIN) == approx(1.5)


def test_pknca_0_1_0_with_many_trailing_blq():
    r = nca_profile(range(7), [0, 1, 0, 0, 0, 0, 0], LIN)
    assert (r.auclast, r.aucall) == (approx(0.5), approx(1.0))
    assert auc_inf_obs(range(7), [0, 1, 0, 0, 0, 0, 0], 1.0, LIN) == approx(1.5)


@pytest.mark.parametrize(
    "method,auclast,aucinf",
    [(LIN, 1 + 1 + 0.5 + 1.5 + 1.5, 5.5 + 1), (LOG, 1 + 1 + 0.5 + 1.5 + 1 / LN2, 5.4427 + 1)],
)
def test_pknca_middle_blq_kept(method, auclast, aucinf):
    times, concs = range(6), [0, 2, 0, 1, 2, 1]
    r = nca_profile(times, concs, method, blq="keep")
    assert r.auclast == approx(auclast)
    assert r.aucall == approx(auclast)  # no BLQ after Tlast
    assert auc_inf_obs(times, concs, 1.0, method, blq="keep") == approx(aucinf)


def test_pknca_middle_blq_kept_values():
    assert nca_profile(range(6), [0, 2, 0, 1, 2, 1], LIN, blq="keep").auclast == approx(5.5)
    assert nca_profile(range(6), [0, 2, 0, 1, 2, 1], LOG, blq="keep").auclast == approx(5.4427)


@pytest.mark.parametrize("method,aucall", [(LIN, 6.0), (LOG, 5.9427)])
def test_pknca_trailing_blq_kept(method, aucall):
    r = nca_profile(range(8), [0, 2, 0, 1, 2, 1, 0, 0], method, blq="keep")
    assert r.aucall == approx(aucall)
    assert r.aucall == approx(4.0 + (1 / LN2 if method == LOG else 1.5) + 0.5)


@pytest.mark.parametrize(
    "method,auclast,aucall",
    [(LIN, 7.0, 7.5), (LOG, 6.8281, 7.3281)],
)
def test_pknca_default_blq_first_keep_middle_drop_last_keep(method, auclast, aucall):
    r = nca_profile(range(8), [0, 2, 0, 1, 2, 1, 0, 0], method)  # blq="pknca" is the default
    assert r.auclast == approx(auclast)
    assert r.aucall == approx(aucall)
    assert r.n_obs == 7  # the BLQ at t=2 is dropped, the leading and trailing ones kept
    if method == LOG:
        assert r.auclast == approx(1 + 2 / LN2 + 1.5 + 1 / LN2)


# ---- Lambda-z (PKNCA best fit) -------------------------------------------------------------------


def test_half_life_pknca_vector_tmax_excluded():
    # test-half.life.R: conc (1, 0.5, 0.25, 0.1251), allow.tmax.in.half.life=FALSE -> 1.000577
    r = nca_profile([0, 1, 2, 3], [1, 0.5, 0.25, 0.1251])
    assert r.half_life == pytest.approx(1.000577, abs=1e-5)
    assert r.lambda_z_n_points == 3
    assert r.lambda_z == pytest.approx(LN2 / 1.000577, abs=1e-5)
    assert r.aucinf_obs == pytest.approx(r.auclast + 0.1251 / r.lambda_z)


def test_half_life_exact_decay():
    # points after tmax: 8, 4, 1 at days 2, 4, 8 -> exactly half every 2 days
    r = nca_profile([0, 1, 2, 4, 8], [0, 10, 8, 4, 1])
    assert r.lambda_z == pytest.approx(LN2 / 2, abs=1e-9)
    assert r.half_life == pytest.approx(2.0, abs=1e-9)
    assert r.r2_adj == pytest.approx(1.0, abs=1e-12)


def test_half_life_prefers_more_points_within_tolerance():
    # 4 points after tmax, all on a near-exact line: the 4-point fit is within 1e-4 of the best
    r = nca_profile([0, 1, 2, 3, 4, 5], [0, 2, 1, 0.5, 0.2501, 0.125])
    assert r.lambda_z_n_points == 4
    assert r.lambda_z == pytest.approx(LN2, abs=1e-3)


def test_half_life_drops_early_points_off_the_line():
    # the point at day 2 is far above the terminal line: the best fit uses the last 3 only
    r = nca_profile([0, 1, 2, 3, 4, 5], [0, 10, 9, 2, 1, 0.5])
    assert r.lambda_z_n_points == 3
    assert r.lambda_z == pytest.approx(LN2, abs=1e-9)
    assert r.half_life == pytest.approx(1.0, abs=1e-9)


def test_half_life_not_estimable():
    assert nca_profile([0, 1, 2, 3], [0, 5, 4, 3]).lambda_z is None  # only 2 points after tmax
    assert nca_profile([0, 1, 2, 3, 4], [0, 2, 2, 2, 2]).lambda_z is None  # no variability (tmax first)
    r = nca_profile([0, 1, 2, 3, 4], [0, 1, 2, 3, 4])  # rising: tmax is last
    assert (r.lambda_z, r.half_life, r.lambda_z_n_points, r.r2_adj, r.aucinf_obs) == (None,) * 5
    # rising tail: lambda_z <= 0 is never selected
    assert nca_profile([0, 1, 2, 3, 4, 5], [0, 10, 1, 2, 3, 4]).lambda_z is None


def test_half_life_ignores_blq_tail_and_middle():
    r = nca_profile([0, 1, 2, 3, 4, 5, 6], [0, 8, 4, 0, 1, 0.5, 0])
    # middle BLQ at t=3 dropped, trailing BLQ kept but never in the fit
    assert r.lambda_z_n_points == 3
    assert r.tlast == 5 and r.clast == 0.5


# ---- basic parameters ---------------------------------------------------------------------------


def test_cmax_tmax_first_occurrence_tlast_clast():
    r = nca_profile([0, 7, 14, 21, 28], [0, 50, 50, 10, 0])
    assert (r.cmax, r.tmax, r.tlast, r.clast) == (50, 7, 21, 10)


def test_unsorted_input_and_missing_values():
    r = nca_profile([14, 0, 7, 21], [20, 0, None, float("nan")])
    assert (r.n_obs, r.cmax, r.tmax, r.tlast) == (2, 20, 14, 14)
    assert r.auclast == approx(140.0)


def test_all_blq_profile():
    r = nca_profile([0, 7, 14], [0, 0, 0])
    assert (r.cmax, r.tmax, r.tlast, r.clast, r.auclast, r.aucall) == (0.0, None, None, 0.0, 0.0, 0.0)
    assert nca_profile([0, 7, 14], [0, 0, 0], t_end=14).auc_0_t == 0.0


def test_single_and_empty_profiles():
    r = nca_profile([7], [5])
    assert (r.cmax, r.tmax, r.auclast, r.aucall) == (5, 7, None, None)
    r = nca_profile([], [])
    assert (r.n_obs, r.cmax, r.auclast) == (0, None, None)


@pytest.mark.parametrize(
    "times,concs,match",
    [
        ([0, 1, 1], [0, 1, 2], "more than one sample at time 1"),
        ([0, 1], [0, -1], "not a finite value >= 0"),
        ([0, 1], [0], "differ in length"),
        ([0, None], [0, 1], "time is missing"),
    ],
)
def test_invalid_profiles(times, concs, match):
    with pytest.raises(NcaError, match=match):
        nca_profile(times, concs)


def test_invalid_options():
    with pytest.raises(NcaError, match="auc_method"):
        nca_profile([0, 1], [0, 1], "log")
    with pytest.raises(NcaError, match="blq"):
        nca_profile([0, 1], [0, 1], blq="drop")


# ---- AUC0-T -------------------------------------------------------------------------------------

PROFILE_T = [0, 1, 2, 4, 8]
PROFILE_C = [0, 10, 8, 4, 1]


def test_auc_0_t_log_down_interpolation():
    # level at t=3 on the log-down segment 8 -> 4: sqrt(32)
    c3 = math.sqrt(32)
    expected = 5 + 2 / math.log(10 / 8) + (8 - c3) / math.log(8 / c3)
    assert nca_profile(PROFILE_T, PROFILE_C, LOG, t_end=3).auc_0_t == approx(expected)
    assert expected == approx(20.7237)


def test_auc_0_t_linear_interpolation():
    assert nca_profile(PROFILE_T, PROFILE_C, LIN, t_end=3).auc_0_t == approx(5 + 9 + 7)


def test_auc_0_t_at_last_sample_equals_auclast():
    r = nca_profile(PROFILE_T, PROFILE_C, LOG, t_end=8)
    assert r.auc_0_t == approx(r.auclast)
    assert r.auclast == approx(5 + 2 / math.log(10 / 8) + 8 / LN2 + 12 / math.log(4))


def test_auc_0_t_after_tlast_follows_the_aucall_line():
    times, concs = [0, 1, 7, 14, 28], [0, 10, 5, 2, 0]
    # D21 is halfway down the AUCall line from 2 (D14) to 0 (D28): level 1
    assert nca_profile(times, concs, LIN, t_end=21).auc_0_t == approx(5 + 45 + 24.5 + 10.5)
    r = nca_profile(times, concs, LOG, t_end=28)
    assert r.auc_0_t == approx(r.aucall)
    assert r.aucall == approx(5 + 30 / LN2 + 21 / math.log(2.5) + 14)
    # as PKNCA: within [0, 21] the interpolated level is quantifiable, so 14 -> 21 is log-down
    assert nca_profile(times, concs, LOG, t_end=21).auc_0_t == approx(5 + 30 / LN2 + 21 / math.log(2.5) + 7 / LN2)


def test_auc_0_t_not_estimable_outside_the_samples():
    assert nca_profile(PROFILE_T, PROFILE_C, t_end=28).auc_0_t is None  # last sample day 8
    assert nca_profile([1, 2, 3], [5, 4, 3], t_end=2).auc_0_t is None  # no sample at time 0
    assert nca_profile(PROFILE_T, PROFILE_C).auc_0_t is None  # no t_end


def test_auc_0_t_with_pre_infusion_sample():
    # baseline at day -5 (BLQ), first level day 1: the level at 0 is interpolated on 0 -> 10
    r = nca_profile([-5, 1, 2], [0, 12, 6], LIN, t_end=2)
    assert r.auc_0_t == approx((10 + 12) / 2 * 1 + 9)


# ---- nca_table and the CLI ----------------------------------------------------------------------


def _df():
    return pl.DataFrame(
        {
            "subject": ["02-001", "02-001", "02-001", "01-001", "01-001", "01-001", "01-001", "01-001"],
            "time": [0.0, 1.0, 2.0, 0.0, 1.0, 2.0, 4.0, 8.0],
            "conc": [0.0, 1.0, 0.0, 0.0, 10.0, 8.0, 4.0, 1.0],
        }
    )


def test_nca_table():
    t = nca_table(_df(), LOG, t_end=8)
    assert t["subject"].to_list() == ["01-001", "02-001"]
    assert t.columns[:8] == ["subject", "n_obs", "cmax", "tmax", "tlast", "clast", "auclast", "aucall"]
    a, b = t.to_dicts()
    assert (a["cmax"], a["tmax"], a["tlast"], a["lambda_z_n_points"]) == (10.0, 1.0, 8.0, 3)
    assert a["half_life"] == approx(2.0)
    assert a["auc_0_t"] == approx(a["auclast"])
    assert (b["auclast"], b["aucall"], b["lambda_z"], b["auc_0_t"]) == (0.5, 1.0, None, None)
    assert t.schema["n_obs"] == pl.Int64 and t.schema["cmax"] == pl.Float64


def test_nca_table_linear_matches_profile():
    t = nca_table(_df(), LIN)
    assert t.filter(pl.col("subject") == "01-001")["auclast"].item() == approx(5 + 9 + 12 + 10)


def test_nca_table_errors():
    with pytest.raises(NcaError, match="missing column"):
        nca_table(pl.DataFrame({"subject": ["a"], "time": [0.0]}))
    bad = pl.DataFrame({"subject": ["a", "a"], "time": [0.0, 0.0], "conc": [1.0, 2.0]})
    with pytest.raises(NcaError, match="subject a: more than one sample"):
        nca_table(bad)


def _with_bad_subject():
    """_df() and subject 01-002 with two levels at day 1 (a date entered twice): the NCA rejects it."""
    bad = pl.DataFrame({"subject": ["01-002"] * 4, "time": [0.0, 1.0, 1.0, 4.0], "conc": [0.0, 5.0, 7.0, 2.0]})
    return pl.concat([_df(), bad])


def test_nca_table_collect_keeps_the_other_subjects():
    """errors="collect": the invalid subject gets a row of None parameters and the reason; every other
    subject's values are exactly those of a table without it."""
    good = nca_table(_df(), LOG, t_end=8)
    t = nca_table(_with_bad_subject(), LOG, t_end=8, errors="collect")
    assert t["subject"].to_list() == ["01-001", "01-002", "02-001"]
    assert t.columns == good.columns + [NOT_DERIVED]
    assert t.schema[NOT_DERIVED] == pl.String and t.schema["n_obs"] == pl.Int64 and t.schema["cmax"] == pl.Float64
    assert t.filter(pl.col("subject") != "01-002").drop(NOT_DERIVED).equals(good)
    a, bad, b = t.to_dicts()
    assert a[NOT_DERIVED] is None and b[NOT_DERIVED] is None
    assert bad == {"subject": "01-002", **dict.fromkeys(NCA_COLUMNS), NOT_DERIVED: "more than one sample at time 1"}
    # the default still fails the table, naming the subject
    with pytest.raises(NcaError, match="^subject 01-002: more than one sample at time 1$"):
        nca_table(_with_bad_subject(), LOG, t_end=8)


def test_nca_table_collect_every_invalid_profile_and_a_missing_level():
    df = pl.DataFrame(
        {
            "subject": ["a", "a", "b", "b", "c", "c", "c"],
            "time": [0.0, 1.0, 0.0, None, 0.0, 1.0, 1.0],
            "conc": [0.0, -3.0, 0.0, 4.0, 0.0, 6.0, None],  # c: a second level at day 1 that is missing
        }
    )
    t = nca_table(df, errors="collect")
    assert dict(zip(t["subject"], t[NOT_DERIVED])) == {
        "a": "concentration -3.0 at time 1 is not a finite value >= 0",
        "b": "a sample time is missing",
        "c": None,  # missing levels are dropped first (PKNCA conc.na = "drop"): one sample at day 1
    }
    c = t.filter(pl.col("subject") == "c").to_dicts()[0]
    assert (c["n_obs"], c["cmax"], c["tmax"], c["auclast"]) == (2, 6.0, 1.0, 3.0)
    assert t.filter(pl.col("subject") != "c").drop("subject", NOT_DERIVED).null_count().row(0) == (2,) * len(NCA_COLUMNS)


def test_nca_table_collect_still_raises_for_invalid_options():
    """Options are the caller's, not one subject's data: they fail the table in both modes."""
    for kwargs, match in [
        ({"auc_method": "log"}, "auc_method"),
        ({"blq": "drop"}, "blq"),
        ({"t_end": 0}, "AUC window end 0 must be after time 0"),
        ({"errors": "ignore"}, "errors mode"),
    ]:
        with pytest.raises(NcaError, match=match):
            nca_table(_with_bad_subject(), **{"errors": "collect"} | kwargs)
    with pytest.raises(NcaError, match="missing column"):
        nca_table(pl.DataFrame({"subject": ["a"], "time": [0.0]}), errors="collect")
    empty = nca_table(_df().clear(), errors="collect")
    assert empty.height == 0 and empty.columns[-1] == NOT_DERIVED


def test_format_number():
    assert [format_number(x) for x in (None, 0.0, 7.0, 0.5, 5.442695040888963, 1234567.8, 1.23456789e-7, -2.5)] == [
        "", "0", "7", "0.5", "5.4427", "1234570", "0.000000123457", "-2.5"
    ]


def test_cli_nca(tmp_path, capsys):
    f = tmp_path / "pk.csv"
    f.write_text(
        "subject,time,conc\n"
        "02-001,0,0\n02-001,1,1\n02-001,2,0\n"
        "01-001,0,0\n01-001,1,10\n01-001,2,8\n01-001,3,\n01-001,4,4\n01-001,8,1\n"
    )
    assert cli_nca([str(f)]) == 0
    assert capsys.readouterr().out == (
        "subject,cmax,tmax,tlast,clast,auclast,aucall,lambda_z,half_life\n"
        "01-001,10,1,8,1,34.1606,34.1606,0.346574,2\n"
        "02-001,1,1,1,1,0.5,1,,\n"
    )
    assert cli_nca([str(f), "--auc", "linear"]) == 0
    assert capsys.readouterr().out.splitlines()[1] == "01-001,10,1,8,1,36,36,0.346574,2"


@pytest.mark.parametrize(
    "content,argv_extra,message",
    [
        (None, [], "No such file"),
        ("subject,time\n1,0\n", [], "missing column(s): conc"),
        ("subject,time,conc\n1,0,0\n1,1,-3\n", [], "not a finite value >= 0"),
        ("subject,time,conc\n1,0,0\n", ["--auc", "log"], "invalid choice"),
    ],
)
def test_cli_nca_errors(tmp_path, capsys, content, argv_extra, message):
    f = tmp_path / "pk.csv"
    if content is not None:
        f.write_text(content)
    assert cli_nca([str(f)] + argv_extra) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("nca: error: ")
    assert message in captured.err
    assert captured.err.count("\n") == 1


# ---- cohort summaries ---------------------------------------------------------------------------


def test_geometric_mean():
    assert geometric_mean([2, 8]) == pytest.approx(4.0, abs=1e-12)
    assert geometric_mean([1, 10, 100]) == pytest.approx(10.0, abs=1e-12)
    assert geometric_mean([5, None]) == pytest.approx(5.0)
    assert geometric_mean([]) is None
    assert geometric_mean([3, 0]) is None
    assert geometric_mean([3, -1]) is None


def test_geometric_cv_pct():
    # s^2 of logs of (2, 8) = 2*ln(2)^2 (n-1 denominator)
    assert geometric_cv_pct([2, 8]) == pytest.approx(100 * math.sqrt(math.exp(2 * LN2**2) - 1), abs=1e-9)
    assert geometric_cv_pct([2, 8]) == pytest.approx(127.0458, abs=1e-4)
    assert geometric_cv_pct([5, 5, 5]) == pytest.approx(0.0, abs=1e-12)
    assert geometric_cv_pct([5]) is None
    assert geometric_cv_pct([]) is None
    assert geometric_cv_pct([5, 0]) is None


def test_median_min_max():
    assert median_min_max([3, 1, 2, 4]) == (2.5, 1, 4)
    assert median_min_max([7, None, 0, 14]) == (7, 0, 14)
    assert median_min_max([5]) == (5, 5, 5)
    assert median_min_max([]) is None
    assert median_min_max([None]) is None
