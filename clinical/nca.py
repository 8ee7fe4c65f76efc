"""Non-compartmental analysis (NCA) of CAR-T cellular kinetics, following R PKNCA's defaults.

Pure Python (profiles are short); :func:`nca_table` takes a polars DataFrame with columns
``subject, time, conc``. Time 0 is the infusion, times in days; ``conc`` 0 means below the LLOQ
(BLQ); a missing concentration (None/NaN) is dropped (PKNCA ``conc.na = "drop"``). A profile with two
non-missing samples at one time, a missing time or a negative concentration is invalid
(:class:`NcaError`); ``nca_table(..., errors="collect")`` then gives that subject a row of None
parameters with the reason (column ``not_derived``) instead of failing the whole table.
Reference: domain.md section 4 and PKNCA (``R/auc.R``, ``R/interpolate.conc.R``, ``R/cleaners.R``,
``R/half.life.R``, ``tests/testthat/test-auc.R``).

BLQ handling (``blq``):
  ``"pknca"`` (default; PKNCA ``conc.blq = list(first="keep", middle="drop", last="keep")``): BLQ up
  to the first quantifiable sample and from the last one on are kept as 0; BLQ between quantifiable
  samples are dropped. ``"keep"``: every BLQ sample is kept as 0.

AUC (``auc_method``):
  ``"linear"``: linear trapezoids. ``"linear-up-log-down"`` (PKNCA "lin up/log down"): the log
  trapezoid ``dt*(C1-C2)/ln(C1/C2)`` only where both levels are > 0 and falling, linear otherwise;
  a segment touching 0 is always linear. AUClast runs from the first sample to Tlast; AUCall adds the
  linear segment from Tlast down to the next (BLQ) sample.

AUC0-T (``t_end``, e.g. 28 days): the AUCall rules over [0, t_end]. The level at t_end is interpolated
inside its segment by the same rule as the AUC (log-linear on a log-down segment), and after Tlast
along the AUCall line down to the next BLQ sample (0 beyond it). When the profile has no sample at or
after ``t_end`` (last sample before the end) or no sample at or before time 0, AUC0-T is None: the
level there is unknown, and extrapolating (PKNCA would count 0) would silently under-state exposure.

Lambda-z (PKNCA "best fit", ``pk.calc.half.life``): log-linear least squares on the last k >= 3
quantifiable samples after Tmax (Tmax itself excluded), for every k; among fits with lambda_z > 0
and adjusted R^2 > (best adjusted R^2 - 1e-4), the one with the most points wins. None when fewer
than 3 such points, when all levels are equal, or when no fit qualifies.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal

import polars as pl

AUC_METHODS = ("linear-up-log-down", "linear")
BLQ_RULES = ("pknca", "keep")
MIN_HL_POINTS = 3
ADJ_R2_FACTOR = 1e-4


class NcaError(ValueError):
    """Invalid concentration-time data or option."""


@dataclass(frozen=True)
class NcaResult:
    n_obs: int  # non-missing samples after BLQ cleaning
    cmax: float | None  # 0.0 when nothing is quantifiable (Cmax = BLQ)
    tmax: float | None  # first time of Cmax; None when nothing is quantifiable
    tlast: float | None
    clast: float | None  # PKNCA clast.obs: 0.0 when nothing is quantifiable
    auclast: float | None  # None with fewer than 2 samples
    aucall: float | None
    auc_0_t: float | None  # AUC over [0, t_end]; None when t_end not given or not covered
    t_end: float | None
    lambda_z: float | None
    half_life: float | None
    lambda_z_n_points: int | None
    r2_adj: float | None
    aucinf_obs: float | None  # AUClast + Clast/lambda_z


# --------------------------------------------------------------------------------------------------
# Data cleaning


def _check_options(auc_method: str, blq: str) -> None:
    """The options of an NCA, checked once per call (not per subject)."""
    if auc_method not in AUC_METHODS:
        raise NcaError(f"unknown auc_method {auc_method!r}; expected one of {', '.join(AUC_METHODS)}")
    if blq not in BLQ_RULES:
        raise NcaError(f"unknown blq rule {blq!r}; expected one of {', '.join(BLQ_RULES)}")


def _clean(times: Sequence[float], concs: Sequence[float | None], blq: str) -> tuple[list[float], list[float]]:
    if len(times) != len(concs):
        raise NcaError(f"times and concs differ in length ({len(times)} vs {len(concs)})")
    pairs = []
    for t, c in zip(times, concs):
        if t is None or (isinstance(t, float) and math.isnan(t)):
            raise NcaError("a sample time is missing")
        t = float(t)
        if not math.isfinite(t):
            raise NcaError(f"sample time {t} is not finite")
        if c is None or (isinstance(c, float) and math.isnan(c)):
            continue  # missing concentration: dropped
        c = float(c)
        if not math.isfinite(c) or c < 0:
            raise NcaError(f"concentration {c} at time {t:g} is not a finite value >= 0")
        pairs.append((t, c))
    pairs.sort()
    for (t1, _), (t2, _) in zip(pairs, pairs[1:]):
        if t1 == t2:
            raise NcaError(f"more than one sample at time {t1:g}")
    if blq == "pknca":
        quantifiable = [t for t, c in pairs if c > 0]
        if quantifiable:
            tfirst, tlast = quantifiable[0], quantifiable[-1]
            # first="keep", middle="drop", last="keep"
            pairs = [(t, c) for t, c in pairs if c > 0 or not (tfirst < t < tlast)]
    return [t for t, _ in pairs], [c for _, c in pairs]


def _tlast_index(concs: Sequence[float]) -> int | None:
    idx = [i for i, c in enumerate(concs) if c > 0]
    return idx[-1] if idx else None


# --------------------------------------------------------------------------------------------------
# AUC


def _segment_methods(concs: Sequence[float], auc_method: str, aucall: bool) -> list[str]:
    """Integration rule of each segment i -> i+1: "linear", "log" or "zero" (PKNCA choose_interval_method)."""
    k = _tlast_index(concs)
    n_seg = len(concs) - 1
    if k is None:
        return ["zero"] * n_seg
    out = []
    for i in range(n_seg):
        c1, c2 = concs[i], concs[i + 1]
        if i > k or (i == k and not aucall):
            out.append("zero")  # after Tlast nothing counts, except AUCall's segment from Tlast
        elif c1 == 0 and c2 == 0:
            out.append("zero")
        elif auc_method == "linear-up-log-down" and 0 < c2 < c1:
            out.append("log")  # log only when both > 0 and falling; touching 0 stays linear
        else:
            out.append("linear")
    return out


def _integrate(times: Sequence[float], concs: Sequence[float], methods: Sequence[str]) -> float:
    total = 0.0
    for i, m in enumerate(methods):
        t1, t2, c1, c2 = times[i], times[i + 1], concs[i], concs[i + 1]
        if m == "linear":
            total += (t2 - t1) * (c1 + c2) / 2
        elif m == "log":
            total += (t2 - t1) * (c1 - c2) / math.log(c1 / c2)
    return total


def _auc(times: list[float], concs: list[float], auc_method: str, aucall: bool) -> float | None:
    if len(times) < 2:
        return None  # PKNCA: an AUC needs two samples
    if all(c == 0 for c in concs):
        return 0.0
    return _integrate(times, concs, _segment_methods(concs, auc_method, aucall))


def _conc_at(times: list[float], concs: list[float], t: float, auc_method: str) -> float | None:
    """Level at time t inside the sampled range, by the AUCall integration rules; None outside."""
    if not times or t < times[0] or t > times[-1]:
        return None
    if t in times:
        return concs[times.index(t)]
    i = max(j for j, tj in enumerate(times) if tj < t)  # segment i -> i+1 contains t
    t1, t2, c1, c2 = times[i], times[i + 1], concs[i], concs[i + 1]
    method = _segment_methods(concs, auc_method, aucall=True)[i]
    if method == "zero":
        return 0.0
    if method == "log":
        return math.exp(math.log(c1) + (t - t1) / (t2 - t1) * (math.log(c2) - math.log(c1)))
    return c1 + (t - t1) / (t2 - t1) * (c2 - c1)


def _auc_window(times: list[float], concs: list[float], start: float, end: float, auc_method: str) -> float | None:
    if end <= start:
        raise NcaError(f"AUC window end {end:g} must be after its start {start:g}")
    c_start = _conc_at(times, concs, start, auc_method)
    c_end = _conc_at(times, concs, end, auc_method)
    if c_start is None or c_end is None:
        return None
    inner = [(t, c) for t, c in zip(times, concs) if start < t < end]
    ts = [start] + [t for t, _ in inner] + [end]
    cs = [c_start] + [c for _, c in inner] + [c_end]
    return _auc(ts, cs, auc_method, aucall=True)


# --------------------------------------------------------------------------------------------------
# Lambda-z


@dataclass(frozen=True)
class _Fit:
    lambda_z: float
    adj_r2: float  # NaN when undefined (all levels in the fit equal)
    n: int


def _loglinear_fit(ts: Sequence[float], cs: Sequence[float]) -> _Fit:
    n = len(ts)
    ys = [math.log(c) for c in cs]
    mt, my = sum(ts) / n, sum(ys) / n
    sxx = sum((t - mt) ** 2 for t in ts)
    sxy = sum((t - mt) * (y - my) for t, y in zip(ts, ys))
    slope = sxy / sxx
    intercept = my - slope * mt
    ss_res = sum((y - (intercept + slope * t)) ** 2 for t, y in zip(ts, ys))
    ss_tot = sum((y - my) ** 2 for y in ys)
    r2 = 1 - ss_res / ss_tot if ss_tot > 0 else math.nan
    adj = 1 - (1 - r2) * (n - 1) / (n - 2)
    return _Fit(lambda_z=-slope, adj_r2=adj, n=n)


def _lambda_z(times: list[float], concs: list[float], tmax: float | None) -> _Fit | None:
    if tmax is None:
        return None
    positive = [(t, c) for t, c in zip(times, concs) if c > 0]
    if len({c for _, c in positive}) <= 1:
        return None  # no variability in the levels (PKNCA #503)
    tail = [(t, c) for t, c in positive if t > tmax]  # PKNCA allow.tmax.in.half.life = FALSE
    if len(tail) < MIN_HL_POINTS:
        return None
    fits = []
    for k in range(MIN_HL_POINTS, len(tail) + 1):
        pts = tail[-k:]
        fits.append(_loglinear_fit([t for t, _ in pts], [c for _, c in pts]))
    finite = [f.adj_r2 for f in fits if not math.isnan(f.adj_r2)]
    if not finite:
        return None
    best = max(finite)
    ok = [f for f in fits if f.lambda_z > 0 and not math.isnan(f.adj_r2) and f.adj_r2 > best - ADJ_R2_FACTOR]
    return max(ok, key=lambda f: f.n) if ok else None


# --------------------------------------------------------------------------------------------------
# Public API


def nca_profile(
    times: Sequence[float],
    concs: Sequence[float | None],
    auc_method: str = "linear-up-log-down",
    blq: str = "pknca",
    t_end: float | None = None,
) -> NcaResult:
    """NCA parameters of one subject's profile (see the module docstring for the rules)."""
    _check_options(auc_method, blq)
    ts, cs = _clean(times, concs, blq)
    if not ts:
        empty = dict.fromkeys(NcaResult.__dataclass_fields__)
        return NcaResult(**(empty | {"n_obs": 0, "t_end": t_end}))
    cmax = max(cs)
    k = _tlast_index(cs)
    tmax = ts[cs.index(cmax)] if k is not None else None  # first occurrence of Cmax
    tlast = ts[k] if k is not None else None
    clast = cs[k] if k is not None else 0.0
    auclast = _auc(ts, cs, auc_method, aucall=False)
    aucall = _auc(ts, cs, auc_method, aucall=True)
    auc_0_t = None
    if t_end is not None and len(ts) >= 2:
        auc_0_t = _auc_window(ts, cs, 0.0, float(t_end), auc_method)
    fit = _lambda_z(ts, cs, tmax)
    lz = fit.lambda_z if fit else None
    return NcaResult(
        n_obs=len(ts),
        cmax=cmax,
        tmax=tmax,
        tlast=tlast,
        clast=clast,
        auclast=auclast,
        aucall=aucall,
        auc_0_t=auc_0_t,
        t_end=t_end,
        lambda_z=lz,
        half_life=math.log(2) / lz if lz else None,
        lambda_z_n_points=fit.n if fit else None,
        r2_adj=fit.adj_r2 if fit else None,
        aucinf_obs=auclast + clast / lz if (lz and auclast is not None) else None,
    )


def auc_inf_obs(
    times: Sequence[float],
    concs: Sequence[float | None],
    lambda_z: float,
    auc_method: str = "linear-up-log-down",
    blq: str = "pknca",
) -> float | None:
    """AUCinf,obs = AUClast + Clast/lambda_z for a given lambda_z (PKNCA pk.calc.auc.inf.obs)."""
    _check_options(auc_method, blq)
    if not lambda_z > 0:
        raise NcaError(f"lambda_z must be > 0, got {lambda_z!r}")
    ts, cs = _clean(times, concs, blq)
    auclast = _auc(ts, cs, auc_method, aucall=False)
    if auclast is None:
        return None
    k = _tlast_index(cs)
    return auclast + (cs[k] / lambda_z if k is not None else 0.0)


NCA_COLUMNS = [f for f in NcaResult.__dataclass_fields__ if f != "t_end"]
NOT_DERIVED = "not_derived"  # nca_table(errors="collect"): why a subject's parameters are all None
ERROR_MODES = ("raise", "collect")


def nca_table(
    df: pl.DataFrame,
    auc_method: str = "linear-up-log-down",
    blq: str = "pknca",
    t_end: float | None = None,
    errors: str = "raise",
) -> pl.DataFrame:
    """One row of NCA parameters per subject (sorted by subject) from columns subject, time, conc.

    A subject whose profile is invalid (:class:`NcaError` from :func:`nca_profile`: two samples at one
    time, a missing time, a negative concentration) raises ``NcaError("subject <id>: ...")`` with
    ``errors="raise"`` (the default). With ``errors="collect"`` that subject still gets its row, with
    every parameter (``n_obs`` included) None and the reason in the extra column ``not_derived``
    (None on the other rows), and every other subject is computed as without it. Invalid options
    (``auc_method``, ``blq``, ``t_end`` <= 0, ``errors``) and missing columns raise in both modes.
    """
    if errors not in ERROR_MODES:
        raise NcaError(f"unknown errors mode {errors!r}; expected one of {', '.join(ERROR_MODES)}")
    _check_options(auc_method, blq)
    if t_end is not None and not t_end > 0:
        raise NcaError(f"AUC window end {t_end!r} must be after time 0")
    missing = {"subject", "time", "conc"} - set(df.columns)
    if missing:
        raise NcaError(f"missing column(s): {', '.join(sorted(missing))}")
    collect = errors == "collect"
    # One pass over plain lists (a polars partition per subject costs more than the NCA itself).
    ordered = df.select("subject", "time", "conc").with_row_index("_i").sort(["subject", "_i"])
    subjects = ordered["subject"].to_list()
    times = ordered["time"].to_list()
    concs = ordered["conc"].to_list()
    rows = []
    start = 0
    n = len(subjects)
    while start < n:
        subject = subjects[start]
        end = start + 1
        while end < n and subjects[end] == subject:
            end += 1
        try:
            res = nca_profile(times[start:end], concs[start:end], auc_method, blq, t_end)
        except NcaError as exc:
            if not collect:
                raise NcaError(f"subject {subject}: {exc}") from None
            rows.append({"subject": subject, **dict.fromkeys(NCA_COLUMNS), NOT_DERIVED: str(exc)})
        else:
            row = {"subject": subject, **{c: getattr(res, c) for c in NCA_COLUMNS}}
            rows.append((row | {NOT_DERIVED: None}) if collect else row)
        start = end
    schema: dict[str, pl.DataType] = {"subject": df.schema["subject"]}
    schema |= {c: pl.Int64 if c in ("n_obs", "lambda_z_n_points") else pl.Float64 for c in NCA_COLUMNS}
    if collect:
        schema[NOT_DERIVED] = pl.String
    return pl.DataFrame(rows, schema=schema)


# --------------------------------------------------------------------------------------------------
# Summary statistics for cohort tables


def _present(values: Iterable[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]


def geometric_mean(values: Iterable[float | None]) -> float | None:
    """exp(mean(ln x)); missing values ignored; None if empty or any value <= 0 (undefined)."""
    xs = _present(values)
    if not xs or any(x <= 0 for x in xs):
        return None
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


def geometric_cv_pct(values: Iterable[float | None]) -> float | None:
    """100*sqrt(exp(s^2)-1), s = SD of ln x (n-1); None if n < 2 or any value <= 0."""
    xs = _present(values)
    if len(xs) < 2 or any(x <= 0 for x in xs):
        return None
    logs = [math.log(x) for x in xs]
    m = sum(logs) / len(logs)
    s2 = sum((v - m) ** 2 for v in logs) / (len(logs) - 1)
    return 100 * math.sqrt(math.exp(s2) - 1)


def median_min_max(values: Iterable[float | None]) -> tuple[float, float, float] | None:
    """(median, min, max); missing values ignored; None if empty."""
    xs = sorted(_present(values))
    if not xs:
        return None
    n = len(xs)
    median = xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2
    return median, xs[0], xs[-1]


# --------------------------------------------------------------------------------------------------
# Command line: python -m pipelines nca FILE.csv [--auc linear|linear-up-log-down]

CLI_COLUMNS = ["subject", "cmax", "tmax", "tlast", "clast", "auclast", "aucall", "lambda_z", "half_life"]


def format_number(x: float | int | None) -> str:
    """6 significant digits in plain decimal notation (no exponent); empty for None."""
    if x is None:
        return ""
    if x == 0:
        return "0"
    d = Decimal(f"{x:.6g}")
    text = format(d, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


class _ArgError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _ArgError(message)


def cli_nca(argv: list[str]) -> int:
    """Print per-subject NCA as CSV; 2 with a one-line error on invalid input."""
    parser = _Parser(prog="python -m pipelines nca", description="CAR-T NCA from a CSV with columns subject,time,conc.")
    parser.add_argument("file", metavar="FILE.csv")
    parser.add_argument("--auc", choices=AUC_METHODS, default="linear-up-log-down")
    try:
        args = parser.parse_args(argv)
        df = pl.read_csv(args.file, schema_overrides={"subject": pl.String, "time": pl.Float64, "conc": pl.Float64})
        table = nca_table(df, auc_method=args.auc)
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    except (_ArgError, NcaError, OSError, pl.exceptions.PolarsError) as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"nca: error: {msg}", file=sys.stderr)
        return 2
    w = csv.writer(sys.stdout, lineterminator="\n")
    w.writerow(CLI_COLUMNS)
    for row in table.iter_rows(named=True):
        w.writerow([row["subject"]] + [format_number(row[c]) for c in CLI_COLUMNS[1:]])
    return 0
