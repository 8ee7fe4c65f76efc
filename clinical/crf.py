"""The CRF export contract: one CSV file per form, CDASH-style variable names.

This module is the single source of truth for the export format. ``docs/crf-export.md`` and the
Great Expectations suites in ``expectations/`` are generated from it (``python -m pipelines contract``)
and a test fails when they drift.

Field types:
  text    free text (escaped in HTML, never a formula in Excel)
  code    a value from ``codelist``; a codelist starting with "@" is taken from the study
          configuration (``@dose_levels``, ``@sites``, ``@lab_tests``, ``@eligibility``, ``@visits``)
  int     whole number
  float   decimal number (point as decimal separator, no units or thousands separators)
  date    ISO 8601 date ``YYYY-MM-DD``; ``partial=True`` also allows ``YYYY-MM`` and ``YYYY``
          (CDASH's UNK day or month), imputed in the derivations with a flag
  id      identifier of the participant (``SUBJID``), pattern ``SUBJID_PATTERN``

``identifier=True`` marks a direct identifier: it may arrive in the export but never passes ingest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

FieldType = Literal["text", "code", "int", "float", "date", "id"]

SUBJID_PATTERN = r"^[0-9]{2}-[0-9]{3}$"  # site-number: "01-007"
# Number syntax of the contract, for ingest (SQL) and the GX suites alike: optional sign, a point
# as decimal separator, no thousands separators or units. A decimal may carry an exponent
# ("1.94E9": EDC systems write cell doses that way); a whole number may not.
INT_TEXT = r"^[+-]?[0-9]+$"
FLOAT_TEXT = r"^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$"
SEX = ["M", "F"]
YN = ["Y", "N"]
RACE = [
    "AMERICAN INDIAN OR ALASKA NATIVE",
    "ASIAN",
    "BLACK OR AFRICAN AMERICAN",
    "NATIVE HAWAIIAN OR OTHER PACIFIC ISLANDER",
    "WHITE",
    "MORE THAN ONE RACE",
    "UNKNOWN",
]
ETHNIC = ["HISPANIC OR LATINO", "NOT HISPANIC OR LATINO", "UNKNOWN"]
LAB_TESTS = ["WBC", "NEUT", "LYM", "LYMPCT", "PLAT", "HGB", "CREAT", "CRCL", "BILI", "ALT", "AST", "PT"]
AE_CATEGORY = ["CRS", "ICANS", "OTHER"]
RELATIONSHIP = ["NOT RELATED", "UNLIKELY", "POSSIBLE", "PROBABLE", "DEFINITE"]
OUTCOME = ["RECOVERED/RESOLVED", "RECOVERING/RESOLVING", "NOT RECOVERED/NOT RESOLVED", "RECOVERED/RESOLVED WITH SEQUELAE", "FATAL", "UNKNOWN"]
HYPOTENSION = ["NONE", "NO VASOPRESSOR", "ONE VASOPRESSOR", "MULTIPLE VASOPRESSORS"]
HYPOXIA = ["NONE", "LOW FLOW", "HIGH FLOW", "POSITIVE PRESSURE"]
CONSCIOUSNESS = ["NORMAL", "AWAKENS SPONTANEOUSLY", "AWAKENS TO VOICE", "AWAKENS TO TACTILE STIMULUS", "UNAROUSABLE"]
SEIZURE = ["NONE", "RAPIDLY RESOLVING", "PROLONGED OR REPETITIVE"]
CEREBRAL_OEDEMA = ["NONE", "FOCAL", "DIFFUSE"]
RELEASE_STATUS = ["RELEASED", "OUT OF SPECIFICATION", "FAILED"]
LD_AGENTS = "@lymphodepletion_agents"
CM_CLASS = ["TOCILIZUMAB", "CORTICOSTEROID", "VASOPRESSOR", "ANTI-INFECTIVE", "OTHER"]
RECIST = ["CR", "PR", "SD", "PD", "NE"]
DS_DECOD = [
    "COMPLETED",
    "DEATH",
    "WITHDRAWAL BY SUBJECT",
    "LOST TO FOLLOW-UP",
    "PHYSICIAN DECISION",
    "ADVERSE EVENT",
    "PROGRESSIVE DISEASE",
    "MANUFACTURING FAILURE",
    "SCREEN FAILURE",
    # Further CDISC CT disposition terms (NCOMPLT, C66727), as SDTM deliveries use them.
    "PROTOCOL VIOLATION",
    "LACK OF EFFICACY",
    "STUDY TERMINATED BY SPONSOR",
]


@dataclass(frozen=True)
class Field:
    name: str
    type: FieldType
    label: str
    required: bool = True
    codelist: list[str] | str | None = None
    min: float | None = None
    max: float | None = None
    partial: bool = False
    identifier: bool = False
    unit: str | None = None


@dataclass(frozen=True)
class Form:
    id: str
    title: str
    key: tuple[str, ...]
    fields: tuple[Field, ...]
    description: str = ""
    per_subject: bool = True

    @property
    def file(self) -> str:
        return f"{self.id}.csv"

    @property
    def loaded_fields(self) -> tuple[Field, ...]:
        """Fields that pass ingest: everything but direct identifiers."""
        return tuple(f for f in self.fields if not f.identifier)

    def field(self, name: str) -> Field:
        return next(f for f in self.fields if f.name == name)


def _subj() -> Field:
    return Field("SUBJID", "id", "Participant identifier (site-number)")


FORMS: tuple[Form, ...] = (
    Form(
        "dm",
        "Demographics",
        ("SUBJID",),
        (
            Field("STUDYID", "code", "Study identifier", codelist="@study_id"),
            Field("SITEID", "code", "Site identifier", codelist="@sites"),
            _subj(),
            Field("SUBJINIT", "text", "Participant initials", required=False, identifier=True),
            Field("BRTHDAT", "date", "Date of birth", required=False, identifier=True),
            Field("AGE", "int", "Age at informed consent", min=0, max=120, unit="years"),
            Field("SEX", "code", "Sex", codelist=SEX),
            Field("RACE", "code", "Race", codelist=RACE),
            Field("ETHNIC", "code", "Ethnicity", codelist=ETHNIC),
            Field("COUNTRY", "text", "Country of enrolment"),
        ),
        "One row per screened participant. Date of birth and initials may be present in the site's "
        "export; ingest drops them (AGE at consent is the only age that passes).",
    ),
    Form(
        "enrol",
        "Informed consent and enrolment",
        ("SUBJID",),
        (
            _subj(),
            Field("RFICDAT", "date", "Date of informed consent"),
            Field("ENRLYN", "code", "Enrolled (eligible and assigned to a dose level)", codelist=YN),
            Field("ENRLDAT", "date", "Date of enrolment", required=False),
            Field("DOSELVL", "code", "Assigned dose level", required=False, codelist="@dose_levels"),
        ),
        "One row per consented participant; DOSELVL is blank for screen failures.",
    ),
    Form(
        "ie",
        "Eligibility criteria results",
        ("SUBJID", "IETESTCD"),
        (
            _subj(),
            Field("IETESTCD", "code", "Criterion identifier", codelist="@eligibility"),
            Field("IECAT", "code", "Criterion category", codelist=["INCLUSION", "EXCLUSION"]),
            Field("IEYN", "code", "Criterion met", codelist=YN),
        ),
        "One row per participant and inclusion criterion, as assessed by the investigator.",
    ),
    Form(
        "sc",
        "Screening assessments",
        ("SUBJID",),
        (
            _subj(),
            Field("SCDAT", "date", "Date of screening assessment"),
            Field("KPS", "int", "Karnofsky performance status", min=0, max=100, unit="%"),
            Field("GPC3", "code", "GPC3 immunohistochemistry", codelist=["POSITIVE", "NEGATIVE"]),
            Field("LIVERMET", "code", "Liver metastases", codelist=YN),
            Field("LVEF", "float", "Left ventricular ejection fraction", min=0, max=100, unit="%"),
            Field("SPO2", "float", "Oxygen saturation on room air", min=0, max=100, unit="%"),
        ),
    ),
    Form(
        "lb",
        "Laboratory results (screening and follow-up)",
        ("SUBJID", "VISIT", "LBTESTCD"),
        (
            _subj(),
            Field("VISIT", "code", "Visit", codelist="@visits"),
            Field("LBDAT", "date", "Date of sample"),
            Field("LBTESTCD", "code", "Lab test code", codelist=LAB_TESTS),
            Field("LBORRES", "float", "Result in original units", required=False),
            Field("LBORRESU", "text", "Original units", required=False),
            Field("LBORNRLO", "float", "Normal range lower limit", required=False),
            Field("LBORNRHI", "float", "Normal range upper limit", required=False),
        ),
        "Units: WBC, NEUT, LYM, PLAT in 10^9/L; LYMPCT %; HGB g/L; CREAT umol/L; CRCL mL/min; "
        "BILI umol/L; ALT, AST U/L; PT seconds. Normal ranges are the site laboratory's own.",
    ),
    Form(
        "apher",
        "Leukapheresis",
        ("SUBJID",),
        (
            _subj(),
            Field("PRYN", "code", "Leukapheresis performed", codelist=YN),
            Field("PRSTDAT", "date", "Date of leukapheresis", required=False),
            Field("PRREASND", "text", "Reason not performed", required=False),
        ),
        "One row per enrolled participant.",
    ),
    Form(
        "mfg",
        "Product manufacturing and release",
        ("SUBJID",),
        (
            _subj(),
            Field("LOTID", "text", "Product lot number"),
            Field("RELSTAT", "code", "Release status", codelist=RELEASE_STATUS),
            Field("RELDAT", "date", "Date of release decision"),
            Field("VIABPCT", "float", "Viability", required=False, min=0, max=100, unit="%"),
            Field("TRANSPCT", "float", "Transduction efficiency", required=False, min=0, max=100, unit="%"),
        ),
        "One row per leukapheresed participant whose product entered manufacturing.",
    ),
    Form(
        "ld",
        "Lymphodepletion administration",
        ("SUBJID", "EXTRT", "EXSTDAT"),
        (
            _subj(),
            Field("EXTRT", "code", "Agent", codelist=LD_AGENTS),
            Field("EXSTDAT", "date", "Date of administration"),
            Field("EXDOSE", "float", "Dose", min=0, unit="mg/m2"),
            Field("EXDOSU", "text", "Dose unit"),
        ),
        "One row per agent and day of administration.",
    ),
    Form(
        "inf",
        "CAR-T infusion",
        ("SUBJID",),
        (
            _subj(),
            Field("EXSTDAT", "date", "Date of infusion (protocol day 0)"),
            Field("DOSELVL", "code", "Dose level administered", codelist="@dose_levels"),
            Field("EXDOSE", "float", "Viable CAR-T cells infused", min=0, unit="cells"),
        ),
        "One row per infused participant.",
    ),
    Form(
        "ae",
        "Adverse events",
        ("SUBJID", "AESPID"),
        (
            _subj(),
            Field("AESPID", "int", "Sponsor-defined AE number", min=1),
            Field("AETERM", "text", "Reported term"),
            Field("AEDECOD", "text", "MedDRA preferred term", required=False),
            Field("AEBODSYS", "text", "MedDRA system organ class", required=False),
            Field("AECAT", "code", "Category", codelist=AE_CATEGORY),
            Field("AESTDAT", "date", "Start date", partial=True),
            Field("AEENDAT", "date", "End date", required=False, partial=True),
            Field("AETOXGR", "int", "Grade (CTCAE; ASTCT for CRS and ICANS)", min=1, max=5),
            Field("AESER", "code", "Serious", codelist=YN),
            # Blank is allowed (and queried): the AE still counts, analysed as related until answered.
            Field("AEREL", "code", "Relationship to IM83 CAR-T", required=False, codelist=RELATIONSHIP),
            Field("AEOUT", "code", "Outcome", codelist=OUTCOME),
            Field("AEDLT", "code", "Investigator: dose-limiting toxicity", codelist=YN),
            Field("AEFEVER", "code", "CRS: fever >= 38 C", required=False, codelist=YN),
            Field("AEHYPOT", "code", "CRS: hypotension", required=False, codelist=HYPOTENSION),
            Field("AEHYPOX", "code", "CRS: hypoxia / oxygen support", required=False, codelist=HYPOXIA),
            Field("AEICE", "int", "ICANS: ICE score (0-10)", required=False, min=0, max=10),
            Field("AECONSC", "code", "ICANS: level of consciousness", required=False, codelist=CONSCIOUSNESS),
            Field("AESEIZ", "code", "ICANS: seizure", required=False, codelist=SEIZURE),
            Field("AEMOTOR", "code", "ICANS: deep focal motor weakness", required=False, codelist=YN),
            Field("AEEDEMA", "code", "ICANS: cerebral oedema", required=False, codelist=CEREBRAL_OEDEMA),
        ),
        "One row per event at its worst grade. CRS and ICANS rows carry the items the ASTCT grade is "
        "derived from.",
    ),
    Form(
        "cm",
        "Concomitant medication",
        ("SUBJID", "CMSPID"),
        (
            _subj(),
            Field("CMSPID", "int", "Sponsor-defined medication number", min=1),
            Field("CMTRT", "text", "Medication"),
            Field("CMCLAS", "code", "Class", codelist=CM_CLASS),
            Field("CMSTDAT", "date", "Start date", partial=True),
            Field("CMENDAT", "date", "End date", required=False, partial=True),
            Field("CMAESPID", "int", "Treated AE number", required=False, min=1),
        ),
    ),
    Form(
        "pc",
        "PK samples (CAR transgene by qPCR)",
        ("SUBJID", "PCTPT"),
        (
            _subj(),
            Field("PCTPT", "code", "Nominal time point", codelist="@visits"),
            Field("PCDAT", "date", "Date of sample"),
            Field("PCORRES", "float", "Transgene copies/ug gDNA (blank when below LLOQ)", required=False, min=0),
            Field("PCBLQ", "code", "Below the assay's LLOQ", codelist=YN),
            Field("PCLLOQ", "float", "Assay LLOQ", min=0, unit="copies/ug gDNA"),
        ),
    ),
    Form(
        "rs",
        "Tumour response (RECIST 1.1)",
        ("SUBJID", "VISIT"),
        (
            _subj(),
            Field("VISIT", "code", "Visit", codelist="@visits"),
            Field("RSDAT", "date", "Date of assessment"),
            Field("RSORRES", "code", "Overall response", codelist=RECIST),
        ),
    ),
    Form(
        "ds",
        "Disposition and death",
        ("SUBJID",),
        (
            _subj(),
            Field("DSDECOD", "code", "End-of-study status", codelist=DS_DECOD),
            Field("DSSTDAT", "date", "Date of end of study"),
            Field("DTHDAT", "date", "Date of death", required=False),
            Field("DTHCAUS", "text", "Cause of death", required=False),
        ),
        "One row per participant who has left the study (including screen failures).",
    ),
)

FORM_IDS: tuple[str, ...] = tuple(f.id for f in FORMS)


def form(form_id: str) -> Form:
    return next(f for f in FORMS if f.id == form_id)


def form_label(form_id: str) -> str:
    """A form as a reader names it: "Adverse events (ae)"; an id outside the contract as it is."""
    title = next((f.title for f in FORMS if f.id == form_id), None)
    return f"{title} ({form_id})" if title else str(form_id)


@dataclass(frozen=True)
class ResolvedCodelists:
    """Study-specific codelists, resolved from the configuration."""

    values: dict[str, list[str]] = field(default_factory=dict)

    def resolve(self, codelist: list[str] | str | None) -> list[str] | None:
        if codelist is None or isinstance(codelist, list):
            return codelist
        return self.values[codelist]


def study_codelists(cfg) -> ResolvedCodelists:  # cfg: clinical.study.StudyConfig
    return ResolvedCodelists(
        {
            "@study_id": [cfg.study.id],
            "@sites": [s.id for s in cfg.study.sites],
            "@dose_levels": cfg.dose_ids,
            "@visits": [v.id for v in cfg.visits],
            "@eligibility": [c.id for c in cfg.eligibility],
            "@lymphodepletion_agents": [a.name for a in cfg.lymphodepletion.agents],
            "@subjid_pattern": [cfg.input.subject_id_pattern or SUBJID_PATTERN],
        }
    )
