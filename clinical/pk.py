"""CAR-T cellular kinetics: ``analysis.adpc``, ``analysis.adpp`` and ``analysis.pk_summary``.

``analysis.adpc``: one row per PK sample (``cut.pc``) of the infused participants (SAFFL = 'Y').
  ADY      PCDAT - TRTSDT in days (day 0 = infusion); the NCA time unit is the day.
  LLOQ     the sample's assay LLOQ (PCLLOQ), or the configured ``pk.lloq`` when blank.
  BLQFL    'Y' when the site recorded the sample below the LLOQ (PCBLQ = 'Y') or its value is below
           LLOQ; PCBLQ keeps what the site recorded.
  AVAL     PCORRES, 0 when BLQFL = 'Y' (NCA convention: BLQ = 0); NULL when no result.
  NCATIME  the time used by the NCA: ADY for samples on or after day 0. A participant without a
           day-0 sample gets the last pre-infusion sample as the time-0 (pre-dose) level when it is
           below the LLOQ (BLQFL = 'Y', as a pre-infusion CAR-T level should be); a quantifiable one
           is not used, so it can never be the Cmax. Other pre-infusion samples are not used (an AUC
           from the first sample would otherwise start at screening).
``analysis.adpp``: one row per participant with NCA samples and PARAMCD (CMAX, TMAX, AUC<window>,
AUCLAST, TLAST, CLAST, LAMZ, THALF), AVAL (NULL when not estimable), AVALU, from
:func:`clinical.nca.nca_table` with ``auc_method = pk.auc_method``, ``t_end = pk.auc_window_days``
and PKNCA's BLQ rule (leading/trailing BLQ kept as 0, BLQ between quantifiable samples dropped).
The AUC over the window is PARAMCD ``AUC<pk.auc_window_days>`` (AUC28 for IM83); it is NULL when no
sample lies on or after the window's end (see clinical/nca.py). A profile with nothing quantifiable
has CMAX = CLAST = 0 and AUC = 0. A profile the NCA cannot analyse (two samples with a result at one
NCATIME, i.e. on one date: data query XF-PC-SAME-DAY) keeps its rows with every AVAL NULL; the reason
is in the derive step's log and metadata (``nca_not_derived``), and the rest is derived as usual.
``analysis.pk_summary``: per PARAMCD and DOSE (dose level received, or 'TOTAL' with DOSEN 99) over
the PK-evaluable participants (ADSL PKEVLFL = 'Y'): N (non-missing values: a participant without NCA
parameters is not counted), geometric mean and geometric CV% (CMAX, the window AUC and AUCLAST only;
NULL when any value is <= 0 or, for the CV, N < 2), MEDIAN, MIN, MAX. Every parameter x column row is
present.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import polars as pl

from clinical.nca import NOT_DERIVED, geometric_cv_pct, geometric_mean, median_min_max, nca_table
from clinical.study import StudyConfig

def blq_sql(blq: str, result: str, lloq: str) -> str:
    """SQL: a PK sample is below the LLOQ -- recorded so by the site, or its value under the LLOQ. The
    one definition of analysis.adpc BLQFL and of ADSL's PK-evaluable count (clinical/adsl.py)."""
    return f"({blq} = 'Y' OR {result} < {lloq})"


TOTAL = "TOTAL"
TOTAL_DOSEN = 99

ADPC_SQL = """
CREATE OR REPLACE TABLE analysis.adpc AS
WITH p AS (
  SELECT pc.SUBJID, pc.PCTPT, pc.PCDAT, pc.PCDAT - s.TRTSDT AS ADY, pc.PCORRES, pc.PCBLQ,
         coalesce(pc.PCLLOQ, $lloq) AS LLOQ, s.TRTSDT, s.DOSEA, s.DOSEAN, s.PKEVLFL
  FROM cut.pc pc JOIN analysis.adsl s USING (SUBJID)
  WHERE s.SAFFL = 'Y'),
f AS (
  SELECT *,
    CASE WHEN <blq> THEN 'Y' ELSE 'N' END AS BLQFL,
    bool_or(ADY = 0) OVER (PARTITION BY SUBJID) AS HAS_D0,
    max(CASE WHEN ADY < 0 THEN ADY END) OVER (PARTITION BY SUBJID) AS LAST_PRE
  FROM p)
SELECT SUBJID, PCTPT, PCDAT, ADY, PCORRES, PCBLQ, BLQFL,
       CASE WHEN BLQFL = 'Y' THEN 0.0 ELSE PCORRES END AS AVAL, $unit AS AVALU, LLOQ,
       CASE WHEN ADY >= 0 THEN ADY WHEN NOT HAS_D0 AND ADY = LAST_PRE AND BLQFL = 'Y' THEN 0 END AS NCATIME,
       TRTSDT, DOSEA, DOSEAN, PKEVLFL
FROM f
ORDER BY SUBJID, PCDAT
""".replace("<blq>", blq_sql("PCBLQ", "PCORRES", "LLOQ"))


def pk_parameters(cfg: StudyConfig) -> list[tuple[str, str, str, str]]:
    """(PARAMCD, NcaResult field, PARAM label with unit, AVALU) in display order."""
    unit, w = cfg.pk.unit, cfg.pk.auc_window_days
    auc_unit = f"{unit}*day"
    return [
        ("CMAX", "cmax", f"Cmax ({unit})", unit),
        ("TMAX", "tmax", "Tmax (day)", "day"),
        (f"AUC{w}", "auc_0_t", f"AUC0-{w}d ({auc_unit})", auc_unit),
        ("AUCLAST", "auclast", f"AUClast ({auc_unit})", auc_unit),
        ("TLAST", "tlast", "Tlast (day)", "day"),
        ("CLAST", "clast", f"Clast ({unit})", unit),
        ("LAMZ", "lambda_z", "Lambda-z (1/day)", "1/day"),
        ("THALF", "half_life", "Terminal half-life (day)", "day"),
    ]


def geometric_parameters(cfg: StudyConfig) -> set[str]:
    return {"CMAX", f"AUC{cfg.pk.auc_window_days}", "AUCLAST"}


def _write(con: duckdb.DuckDBPyConnection, name: str, df: pl.DataFrame, select_sql: str) -> None:
    view = f"_pk_{name}"
    con.register(view, df)
    try:
        con.execute(select_sql.format(view=view))
    finally:
        con.unregister(view)


@dataclass(frozen=True)
class PkBuild:
    """What :func:`build_pk` wrote."""

    counts: dict[str, int]  # rows of analysis.adpc, adpp and pk_summary
    not_derived: dict[str, str]  # SUBJID -> why the NCA could not analyse the profile (ADPP AVALs NULL)


def build_pk(con: duckdb.DuckDBPyConnection, cfg: StudyConfig) -> PkBuild:
    """Write analysis.adpc, analysis.adpp and analysis.pk_summary; return their row counts and the
    participants whose NCA parameters could not be derived, with the reason (never raises for one
    participant's invalid profile: their parameters are NULL, every other participant is derived)."""
    con.execute("CREATE SCHEMA IF NOT EXISTS analysis")
    con.execute(ADPC_SQL, {"lloq": cfg.pk.lloq, "unit": cfg.pk.unit})

    params = pk_parameters(cfg)
    samples = con.sql(
        "SELECT SUBJID AS subject, NCATIME::DOUBLE AS time, AVAL::DOUBLE AS conc FROM analysis.adpc "
        "WHERE NCATIME IS NOT NULL ORDER BY SUBJID, NCATIME"
    ).pl()
    samples = samples.with_columns(pl.col("subject").cast(pl.String), pl.col("conc").cast(pl.Float64))
    nca = nca_table(samples, auc_method=cfg.pk.auc_method, t_end=cfg.pk.auc_window_days, errors="collect")
    failed = nca.filter(pl.col(NOT_DERIVED).is_not_null())
    not_derived = dict(zip(failed["subject"].to_list(), failed[NOT_DERIVED].to_list()))
    # Long form: one row per participant and parameter, in parameter order (built column-wise).
    subjects = nca["subject"].to_list()
    k = len(params)
    long = pl.DataFrame(
        {
            "SUBJID": [s for s in subjects for _ in range(k)],
            "PARAMCD": [code for _ in subjects for code, _f, _l, _u in params],
            "PARAMN": [i + 1 for _ in subjects for i in range(k)],
            "PARAM": [label for _ in subjects for _c, _f, label, _u in params],
            "AVAL": [v for vals in zip(*(nca[field].to_list() for _c, field, _l, _u in params)) for v in vals]
            if subjects else [],
            "AVALU": [unit for _ in subjects for _c, _f, _l, unit in params],
        },
        schema={"SUBJID": pl.String, "PARAMCD": pl.String, "PARAMN": pl.Int32, "PARAM": pl.String,
                "AVAL": pl.Float64, "AVALU": pl.String},
    )
    _write(
        con,
        "adpp",
        long,
        """
        CREATE OR REPLACE TABLE analysis.adpp AS
        SELECT n.SUBJID, s.DOSEA, s.DOSEAN, s.PKEVLFL, n.PARAMCD, n.PARAMN, n.PARAM, n.AVAL, n.AVALU
        FROM {view} n JOIN analysis.adsl s USING (SUBJID)
        ORDER BY n.SUBJID, n.PARAMN
        """,
    )

    values = con.sql("SELECT SUBJID, DOSEA, PARAMCD, AVAL FROM analysis.adpp WHERE PKEVLFL = 'Y'").pl()
    geometric = geometric_parameters(cfg)
    columns = [(d, i + 1) for i, d in enumerate(cfg.dose_ids)] + [(TOTAL, TOTAL_DOSEN)]
    rows = []
    for paramn, (code, _field, label, _unit) in enumerate(params, start=1):
        p = values.filter(pl.col("PARAMCD") == code)
        for dose, dosen in columns:
            vals = (p if dose == TOTAL else p.filter(pl.col("DOSEA") == dose))["AVAL"].drop_nulls().to_list()
            mmm = median_min_max(vals)
            rows.append(
                {
                    "PARAMCD": code,
                    "PARAMN": paramn,
                    "PARAM": label,
                    "DOSE": dose,
                    "DOSEN": dosen,
                    "N": len(vals),
                    "GEOMEAN": geometric_mean(vals) if code in geometric else None,
                    "GEOCV": geometric_cv_pct(vals) if code in geometric else None,
                    "MEDIAN": mmm[0] if mmm else None,
                    "MIN": mmm[1] if mmm else None,
                    "MAX": mmm[2] if mmm else None,
                }
            )
    summary = pl.DataFrame(
        rows,
        schema={"PARAMCD": pl.String, "PARAMN": pl.Int32, "PARAM": pl.String, "DOSE": pl.String, "DOSEN": pl.Int32,
                "N": pl.Int64, "GEOMEAN": pl.Float64, "GEOCV": pl.Float64, "MEDIAN": pl.Float64,
                "MIN": pl.Float64, "MAX": pl.Float64},
    )
    _write(
        con,
        "summary",
        summary,
        "CREATE OR REPLACE TABLE analysis.pk_summary AS SELECT * FROM {view} ORDER BY PARAMN, DOSEN",
    )
    tables = ("adpc", "adpp", "pk_summary")
    counts = {t: con.execute(f"SELECT count(*) FROM analysis.{t}").fetchall()[0][0] for t in tables}
    return PkBuild(counts=counts, not_derived=not_derived)
