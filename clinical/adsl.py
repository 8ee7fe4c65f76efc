"""ADSL-like subject-level analysis table ``analysis.adsl``: one row per screened participant.

Population flags follow the participant funnel and are cumulative by construction (a participant
is lymphodepleted only if leukapheresed, and so on), so flow counts can never increase. An infused
participant has passed every step before the infusion even when a record of one is missing or says
otherwise (a data query then asks for it): the safety population is everyone enrolled and infused.

  SCRNFL   screened (in demographics)
  ENRLFL   enrolled: eligible and assigned to a dose level
  APHFL    leukapheresed
  MFGFL    product released (out-of-specification products that were infused count as released)
  LDFL     lymphodepletion started
  SAFFL    infused with IM83 CAR-T (safety population)
  DLTEVLFL DLT-evaluable: infused within the dose tolerance of the assigned level, and either had
           a DLT in the window or completed the window on study (DLTEVLRS gives the reason when not)
  COMPLFL  completed protocol follow-up

AGEGR1 is the age group of the ClinicalTrials.gov baseline ("Age, Categorical": <=18, 19-64, >=65
years; :data:`AGE_GROUPS`), derived here once for the registry and the DSMB baseline table.

COUNTRY is the country of enrolment as every deliverable shows it (DSMB baseline table, workbook,
registry "Region of Enrollment"), derived here once from the demographics form's free text (trimmed,
blank -> NULL at ingest): spellings that differ only in case are one country, written as most
participants' forms write it (ties: the first in sort order), so "CHINA" on one form and "China" on
nine are one row "China" everywhere; a spelling nobody entered is never made up.

Every date is as at the data cut-off: ADSL and every analysis table read the forms through the
``cut`` views (clinical/datacut.py), so an infusion, end of study or death after the cut-off is not
in the cut. DTHDT is the date of death, or -- when the disposition is death without one -- the end
of study date (DTHDTSRC says which: DS.DTHDAT or DS.DSSTDAT; a data query asks for the date), so a
death is never uncounted for want of its date.

DLTFL is the adjudicated DLT: an AE the investigator flagged as DLT (AEDLT = Y) with onset inside
the DLT window (day 0 to the configured window). Candidate DLTs derived from the rules are a
separate listing (issue 5); the 3+3 uses the adjudicated flag.
"""

from __future__ import annotations

import datetime as dt

import duckdb

from clinical.datacut import apply_data_cut
from clinical.pk import blq_sql
from clinical.study import StudyConfig

# Age groups (label, highest age in the group; None: no upper limit). The registry's categories: its
# labels overlap at 18, and 18-year-olds go to "<=18 years".
AGE_GROUPS: tuple[tuple[str, int | None], ...] = (
    ("<=18 years", 18), ("Between 18 and 65 years", 64), (">=65 years", None),
)

_PARTIAL_RANGE = """\
CASE WHEN regexp_full_match(<s>, '[0-9]{4}-[0-9]{2}-[0-9]{2}') THEN [try_cast(<s> AS DATE), try_cast(<s> AS DATE)]
       WHEN regexp_full_match(<s>, '[0-9]{4}-[0-9]{2}') AND <highest> IN ('D', 'M')
         THEN [try_cast(<s> || '-01' AS DATE), last_day(try_cast(<s> || '-01' AS DATE))]
       WHEN regexp_full_match(<s>, '[0-9]{4}') AND <highest> = 'M'
         THEN [try_cast(<s> || '-01-01' AS DATE), try_cast(<s> || '-12-31' AS DATE)] END"""


def partial_range_sql(s: str, highest: str) -> str:
    """SQL for [first, last] date a CDASH date text can stand for, over the SQL expressions ``s`` (the
    text) and ``highest`` ('D' or 'M', the highest component that may be missing): YYYY-MM-DD itself,
    YYYY-MM its month's first and last day, and with 'M' YYYY its 1 January and 31 December; NULL
    when ``s`` has none of these forms (NULL bounds when it has one but is no date, e.g. 2024-13).
    The macro ``partial_range`` below, and the partial-date comparisons of clinical.rules."""
    return _PARTIAL_RANGE.replace("<s>", s).replace("<highest>", highest)


SETUP_SQL = """
CREATE SCHEMA IF NOT EXISTS analysis;
-- Partial-date imputation as admiral's derive_vars_dt(): a missing day (YYYY-MM) and, with highest
-- level 'M', a missing month (YYYY) are imputed to the first possible date ("first", start dates) or
-- the last ("last", end dates), never outside what the known parts allow. min_date / max_date bound
-- the result only when they fall inside that range (admiral's min_dates / max_dates).
CREATE OR REPLACE MACRO partial_range(s, highest) AS
  <partial_range>;
CREATE OR REPLACE MACRO impute_first(s, highest, min_date) AS
  CASE WHEN min_date BETWEEN partial_range(s, highest)[1] AND partial_range(s, highest)[2] THEN min_date
       ELSE partial_range(s, highest)[1] END;
CREATE OR REPLACE MACRO impute_last(s, highest, max_date) AS
  CASE WHEN max_date BETWEEN partial_range(s, highest)[1] AND partial_range(s, highest)[2] THEN max_date
       ELSE partial_range(s, highest)[2] END;
-- The flag names the highest component imputed: 'D' day, 'M' month (and day); NULL when none was.
CREATE OR REPLACE MACRO impute_flag(s, highest) AS
  CASE WHEN partial_range(s, highest) IS NULL THEN NULL
       WHEN regexp_full_match(s, '[0-9]{4}-[0-9]{2}') THEN 'D'
       WHEN regexp_full_match(s, '[0-9]{4}') THEN 'M' END;
""".replace("<partial_range>", partial_range_sql("s", "highest"))



def write_reference_tables(con: duckdb.DuckDBPyConnection, cfg: StudyConfig) -> None:
    """The study configuration's dose levels and criteria as tables, so SQL can join them."""
    con.execute(SETUP_SQL)
    con.execute(
        "CREATE OR REPLACE TABLE analysis.dose_levels (DOSE VARCHAR, DOSEN INTEGER, DOSELBL VARCHAR, CELLS DOUBLE)"
    )
    con.executemany(
        "INSERT INTO analysis.dose_levels VALUES (?, ?, ?, ?)",
        [(d.id, i + 1, d.label, d.cells) for i, d in enumerate(cfg.dose_levels)],
    )
    con.execute("CREATE OR REPLACE TABLE analysis.criteria (CRIT VARCHAR, CRITN INTEGER, CRITLBL VARCHAR)")
    con.executemany(
        "INSERT INTO analysis.criteria VALUES (?, ?, ?)",
        [(c.id, i + 1, c.label) for i, c in enumerate(cfg.eligibility)],
    )


def _agegr1_sql() -> str:
    """AGEGR1 as a CASE over :data:`AGE_GROUPS`: group i's label is $agegr<i>, its highest age $age<i>
    (parameters; only the group numbers enter the text). A group without an upper limit is the ELSE."""
    arms = ["WHEN dm.AGE IS NULL THEN NULL"]
    for i, (_, highest) in enumerate(AGE_GROUPS, start=1):
        arms.append(f"ELSE $agegr{i}" if highest is None else f"WHEN dm.AGE <= $age{i} THEN $agegr{i}")
    return "CASE " + " ".join(arms) + " END"


ADSL_SQL = """
CREATE OR REPLACE TABLE analysis.adsl AS
WITH
ie_fail AS (
  SELECT i.SUBJID, string_agg(i.IETESTCD, '; ' ORDER BY c.CRITN) AS SCRFLRS
  FROM cut.ie i LEFT JOIN analysis.criteria c ON c.CRIT = i.IETESTCD
  WHERE i.IEYN = 'N' GROUP BY i.SUBJID),
ld AS (SELECT SUBJID, min(EXSTDAT) AS LDSTDT, max(EXSTDAT) AS LDENDT FROM cut.ld GROUP BY SUBJID),
dlt AS (
  SELECT a.SUBJID, min(impute_first(a.AESTDAT, $highest, i.EXSTDAT)) AS DLTDT
  FROM cut.ae a JOIN cut.inf i USING (SUBJID)
  WHERE a.AEDLT = 'Y'
    AND impute_first(a.AESTDAT, $highest, i.EXSTDAT) BETWEEN i.EXSTDAT AND i.EXSTDAT + $window
  GROUP BY a.SUBJID),
-- Last dated assessment (labs, PK samples, tumour assessments): with the milestone dates it gives the
-- last date the participant was known to be in contact (admiral's LSTALVDT idea; complete dates only).
seen AS (
  SELECT SUBJID, max(D) AS LASTASDT FROM (
    SELECT SUBJID, LBDAT AS D FROM cut.lb UNION ALL SELECT SUBJID, PCDAT FROM cut.pc
    UNION ALL SELECT SUBJID, RSDAT FROM cut.rs) GROUP BY SUBJID),
-- One spelling per country (see COUNTRY above): the most used of the spellings equal ignoring case.
ct AS (
  SELECT lower(COUNTRY) AS KEY, first(COUNTRY ORDER BY N DESC, COUNTRY) AS SPELLING
  FROM (SELECT COUNTRY, count(*) AS N FROM cut.dm WHERE COUNTRY IS NOT NULL GROUP BY COUNTRY)
  GROUP BY lower(COUNTRY)),
pk AS (
  -- Quantifiable as analysis.adpc reads a sample (clinical.pk.blq_sql): a result not below the LLOQ.
  SELECT p.SUBJID, count(*) FILTER (WHERE p.PCORRES IS NOT NULL AND NOT coalesce(<pc_blq>, FALSE)
                                          AND p.PCDAT >= i.EXSTDAT) AS n_quant
  FROM cut.pc p JOIN cut.inf i USING (SUBJID) GROUP BY p.SUBJID),
base AS (
  SELECT
    dm.STUDYID, dm.SITEID, dm.SUBJID, dm.STUDYID || '-' || dm.SUBJID AS USUBJID,
    dm.AGE,
    <agegr1> AS AGEGR1,
    dm.SEX, dm.RACE, dm.ETHNIC, coalesce(ct.SPELLING, dm.COUNTRY) AS COUNTRY, sc.KPS, sc.GPC3, sc.LIVERMET,
    en.RFICDT, en.ENRLDT, en.DOSEP, dp.DOSEN AS DOSEPN, dp.DOSELBL AS DOSEPLBL,
    ap.PRSTDAT AS APHDT, ap.PRYN, ap.PRREASND, mf.RELSTAT AS MFGSTAT,
    ld.LDSTDT, ld.LDENDT,
    inf.EXSTDAT AS TRTSDT, inf.DOSELVL AS DOSEA, da.DOSEN AS DOSEAN, da.DOSELBL AS DOSEALBL,
    inf.EXDOSE AS CELLS, inf.EXDOSE / nullif(da.CELLS, 0) - 1 AS DOSEDEV,
    inf.EXSTDAT + $window AS DLTWEND,
    ds.DSDECOD AS EOSSTT, ds.DSSTDAT AS EOSDT,
    coalesce(ds.DTHDAT, CASE WHEN ds.DSDECOD = 'DEATH' THEN ds.DSSTDAT END) AS DTHDT,
    CASE WHEN ds.DTHDAT IS NOT NULL THEN 'DS.DTHDAT' WHEN ds.DSDECOD = 'DEATH' AND ds.DSSTDAT IS NOT NULL
         THEN 'DS.DSSTDAT' END AS DTHDTSRC, ds.DTHCAUS,
    iefail.SCRFLRS, dlt.DLTDT, coalesce(pk.n_quant, 0) AS PKNQUANT, seen.LASTASDT
  FROM cut.dm dm
  LEFT JOIN (SELECT SUBJID, RFICDAT AS RFICDT, ENRLDAT AS ENRLDT, ENRLYN,
                    CASE WHEN ENRLYN = 'Y' THEN DOSELVL END AS DOSEP FROM cut.enrol) en USING (SUBJID)
  LEFT JOIN analysis.dose_levels dp ON dp.DOSE = en.DOSEP
  LEFT JOIN cut.sc sc USING (SUBJID)
  LEFT JOIN cut.apher ap ON ap.SUBJID = dm.SUBJID AND en.DOSEP IS NOT NULL
  LEFT JOIN cut.mfg mf USING (SUBJID)
  LEFT JOIN ld USING (SUBJID)
  LEFT JOIN cut.inf inf USING (SUBJID)
  LEFT JOIN analysis.dose_levels da ON da.DOSE = inf.DOSELVL
  LEFT JOIN cut.ds ds USING (SUBJID)
  LEFT JOIN ie_fail iefail USING (SUBJID)
  LEFT JOIN dlt USING (SUBJID)
  LEFT JOIN pk USING (SUBJID)
  LEFT JOIN seen USING (SUBJID)
  LEFT JOIN ct ON ct.KEY = lower(dm.COUNTRY)
),
-- Each step of the funnel reached on its own record. A stage whose form the study does not collect
-- (configuration forms:) holds no one back.
steps AS (
  SELECT *,
    DOSEP IS NOT NULL AND TRTSDT IS NOT NULL AS INF_,
    PRYN = 'Y' OR NOT $apher_collected AS APH_,
    -- an out-of-specification product counts as released only once infused (INF_ below)
    MFGSTAT = 'RELEASED' OR NOT $mfg_collected AS REL_,
    LDSTDT IS NOT NULL OR NOT $ld_collected AS LD_
  FROM base),
flags AS (
  SELECT *,
    'Y' AS SCRNFL,
    CASE WHEN DOSEP IS NOT NULL THEN 'Y' ELSE 'N' END AS ENRLFL,
    -- Cumulative; an infused participant has been through every step before: a missing or failed
    -- record of one (a query: XF-INF-NO-PRIOR-STEP) never takes them out of the flow.
    CASE WHEN DOSEP IS NOT NULL AND (INF_ OR APH_) THEN 'Y' ELSE 'N' END AS APHFL,
    CASE WHEN DOSEP IS NOT NULL AND (INF_ OR (APH_ AND REL_)) THEN 'Y' ELSE 'N' END AS MFGFL,
    CASE WHEN DOSEP IS NOT NULL AND (INF_ OR (APH_ AND REL_ AND LD_)) THEN 'Y' ELSE 'N' END AS LDFL,
    CASE WHEN INF_ THEN 'Y' ELSE 'N' END AS SAFFL,
    CASE WHEN DLTDT IS NOT NULL THEN 'Y' ELSE 'N' END AS DLTFL,
    -- Last date the participant is known to be on study, used for window completion.
    least(coalesce(EOSDT, $cut), coalesce(DTHDT, $cut), $cut) AS ONSTDT
  FROM steps
)
SELECT * EXCLUDE (PRYN, ONSTDT, PKNQUANT, LASTASDT, INF_, APH_, REL_, LD_),
  CASE WHEN SAFFL = 'Y' AND DOSEA = DOSEP AND abs(DOSEDEV) <= $tolerance
            AND (DLTFL = 'Y' OR ONSTDT >= DLTWEND) THEN 'Y' ELSE 'N' END AS DLTEVLFL,
  CASE WHEN SAFFL = 'N' THEN 'Not infused'
       WHEN DOSEA IS DISTINCT FROM DOSEP THEN 'Infused at a dose level other than assigned'
       WHEN abs(DOSEDEV) > $tolerance THEN 'Cells infused outside the dose-level tolerance'
       WHEN DLTFL = 'Y' OR ONSTDT >= DLTWEND THEN NULL
       WHEN $cut < DLTWEND AND EOSDT IS NULL AND DTHDT IS NULL THEN 'DLT window open'
       ELSE 'Left study before the end of the DLT window without a DLT' END AS DLTEVLRS,
  CASE WHEN SAFFL = 'Y' AND DLTFL = 'N' AND $cut < DLTWEND AND EOSDT IS NULL AND DTHDT IS NULL
       THEN 'Y' ELSE 'N' END AS WINOPFL,
  CASE WHEN SAFFL = 'Y' AND PKNQUANT > 0 THEN 'Y' ELSE 'N' END AS PKEVLFL,
  CASE WHEN EOSSTT = 'COMPLETED' AND SAFFL = 'Y' THEN 'Y' ELSE 'N' END AS COMPLFL,
  CASE WHEN EOSSTT IS NOT NULL AND EOSSTT <> 'COMPLETED' THEN EOSSTT END AS DCSREAS,
  greatest(RFICDT, ENRLDT, APHDT, LDENDT, TRTSDT, EOSDT, DTHDT, LASTASDT) AS LSTCNDT
FROM flags
ORDER BY SUBJID
""".replace("<agegr1>", _agegr1_sql()).replace("<pc_blq>", blq_sql("p.PCBLQ", "p.PCORRES", "coalesce(p.PCLLOQ, $lloq)"))


FUNNEL_FORMS = ("apher", "mfg", "ld")


def collected_params(cfg: StudyConfig, forms: tuple[str, ...] = FUNNEL_FORMS) -> dict[str, bool]:
    """$<form>_collected (by default $apher_collected, $mfg_collected, $ld_collected): whether the
    study collects the form (a form it does not collect is loaded empty and holds no one back)."""
    return {f"{f}_collected": cfg.forms is None or f in cfg.forms for f in forms}


def build_adsl(con: duckdb.DuckDBPyConnection, cfg: StudyConfig, data_cut: dt.date) -> int:
    # Every derivation reads the forms as at the cut-off (cut.*), ADSL first.
    apply_data_cut(con, data_cut, cfg.data_cut.apply)
    write_reference_tables(con, cfg)
    con.execute(
        ADSL_SQL,
        {
            "window": cfg.escalation.dlt_window_days,
            "cut": data_cut,
            "tolerance": cfg.escalation.dose_tolerance,
            "highest": cfg.safety.date_imputation,
            "lloq": cfg.pk.lloq,
            **collected_params(cfg),
            **{f"age{i}": highest for i, (_, highest) in enumerate(AGE_GROUPS, start=1) if highest is not None},
            **{f"agegr{i}": label for i, (label, _) in enumerate(AGE_GROUPS, start=1)},
        },
    )
    return con.execute("SELECT count(*) FROM analysis.adsl").fetchone()[0]
