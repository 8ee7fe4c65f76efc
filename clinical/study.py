"""Study configuration: the protocol as data, validated at load.

Every study-specific fact (ids, dose levels, escalation rules, windows, eligibility thresholds)
comes from a YAML file in ``studies/``. An invalid file fails at load with a message that names
the offending key, e.g. ``studies/im83.yaml: escalation.variant: Input should be ...``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path
from typing import Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator


class StudyConfigError(ValueError):
    """The study configuration file is missing, unreadable or invalid."""


class _Strict(BaseModel):
    # Unknown keys are errors: a misspelt key must not silently fall back to a default.
    model_config = ConfigDict(extra="forbid", frozen=True)


class Site(_Strict):
    id: str
    name: str
    country: str


class StudyInfo(_Strict):
    id: str = Field(pattern=r"^[A-Za-z0-9_-]+$")
    protocol_id: str
    nct_id: str = Field(pattern=r"^NCT\d{8}$")
    title: str
    short_title: str
    sponsor: str
    phase: str
    design: str
    product: str
    start_date: dt.date
    planned_enrolment: int = Field(gt=0)
    time_zone: str
    sites: list[Site] = Field(min_length=1)
    confidentiality: str

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA time zone {v!r}") from exc
        return v


class DoseLevel(_Strict):
    id: str = Field(pattern=r"^[A-Za-z0-9_-]+$")
    label: str
    cells: float = Field(ge=0)


class Escalation(_Strict):
    variant: Literal["escalation-only", "korn"]
    cohort_size: int = Field(default=3, ge=1)
    max_per_dose: int = Field(default=6, ge=1)
    require_six_at_mtd: bool = False
    # V5: a dose with >= 2 DLTs exceeds the MTD at once, its cohort in progress or not (clinical practice:
    # no one else is treated at a dose already known to be too toxic). false: the cohort continues, as
    # in the R escalation package.
    stop_at_two_dlts: bool = True
    wait_for_window_close: bool = True
    dlt_window_days: int = Field(gt=0)
    dose_tolerance: float = Field(ge=0, lt=1)


class Agent(_Strict):
    name: str
    dose: float = Field(gt=0)
    unit: str


class Lymphodepletion(_Strict):
    start_day: int
    end_day: int
    dose_tolerance: float = Field(ge=0, lt=1)
    agents: list[Agent] = Field(min_length=1)

    @model_validator(mode="after")
    def _ordered(self) -> "Lymphodepletion":
        if not self.start_day <= self.end_day < 0:
            raise ValueError("start_day <= end_day < 0 (days before infusion) is required")
        return self


class Visit(_Strict):
    id: str
    label: str
    day: int | None


def _crit(info: ValidationInfo) -> str:
    """'criterion <id>: ' for an error message, when the criterion's id is known."""
    return f"criterion {info.data['id']}: " if "id" in info.data else ""


class Criterion(_Strict):
    """One inclusion criterion (clinical/eligibility.py). Checked here, at load, rather than when the
    eligibility table is derived: a misspelt field, lab test or operator would otherwise only fail
    at the derive step, or leave the criterion silently not evaluable for every participant."""

    id: str
    label: str
    source: Literal["dm", "sc", "lb"]
    param: str
    op: Literal[">=", "<=", ">", "<", "=="]
    value: float | str
    value_liver_metastases: float | None = None
    unit: str | None = None
    basis: Literal["value", "xuln"] = "value"

    # Field validators see the fields declared before theirs (info.data), so each error is reported
    # at its own key (eligibility.<n>.param ...); a field that failed itself is absent and not rechecked.
    @field_validator("param")
    @classmethod
    def _known_param(cls, v: str, info: ValidationInfo) -> str:
        from clinical.crf import form

        source = info.data.get("source")
        if source in ("dm", "sc"):
            # Only these contract names enter the SQL text of the eligibility table.
            fields = [f.name for f in form(source).loaded_fields]
            if v not in fields:
                raise ValueError(f"{_crit(info)}{v!r} is not a field of the {source} form; it has {fields}")
        elif source == "lb":
            tests = form("lb").field("LBTESTCD").codelist
            # A lab test outside the contract's codelist is quarantined at ingest: never evaluable.
            if isinstance(tests, list) and v not in tests:
                raise ValueError(f"{_crit(info)}{v!r} is not a lab test of the lb form (LBTESTCD); it has {tests}")
        return v

    @field_validator("value")
    @classmethod
    def _coded_needs_equality(cls, v: float | str, info: ValidationInfo) -> float | str:
        op = info.data.get("op")
        if isinstance(v, str) and op is not None and op != "==":
            try:
                float(v)
            except ValueError:
                raise ValueError(f"{_crit(info)}a coded value ({v!r}) needs op '==', not {op!r}") from None
        return v

    @field_validator("basis")
    @classmethod
    def _xuln_needs_lab(cls, v: str, info: ValidationInfo) -> str:
        # Only a lab result carries an upper limit of normal (lb LBORNRHI).
        source = info.data.get("source")
        if v == "xuln" and source is not None and source != "lb":
            raise ValueError(f"{_crit(info)}basis 'xuln' needs source 'lb' (an upper limit of normal), not {source!r}")
        return v


class DltRule(_Strict):
    """One dose-limiting-toxicity rule, evaluated on AEs or labs inside the DLT window."""

    id: str = Field(pattern=r"^[A-Z0-9_]+$")
    label: str
    source: Literal["ae", "lab"] = "ae"
    min_grade: int = Field(ge=1, le=5)
    categories: list[str] | None = None  # AE categories (CRS, ICANS, OTHER); None = any
    terms: list[str] | None = None  # MedDRA preferred terms; None = any
    exclude_socs: list[str] = []
    exclude_terms: list[str] = []
    min_duration_days: int | None = Field(default=None, ge=1)  # ongoing events count to the data cut
    related: bool = False  # attribution among safety.related_values
    params: list[str] | None = None  # lab PARAMCDs, for source "lab"
    persists_from_day: int | None = None  # lab: graded value on or after this protocol day


class Safety(_Strict):
    ctcae_version: Literal["5.0", "6.0"]
    meddra_version: str
    crs_ics_grading: str
    treatment_emergent_anchor: Literal["infusion", "lymphodepletion_start"]
    treatment_emergent_end_days: int | None = None
    related_values: list[str] = Field(min_length=1)
    registry_frequency_threshold: str = Field(pattern=r"^\d+(\.\d+)?$")
    # default: admiral's ADAE template: partial dates imputed up to the month ("M": a missing day, or a
    # missing month and day); "D" imputes a missing day only, leaving year-only dates missing.
    date_imputation: Literal["D", "M"] = "M"
    # DLT rules that give candidate DLTs for comparison with the investigator's adjudication.
    dlt_rules: list[DltRule] = []
    # default: a death from these causes (ds DTHCAUS, case-insensitive) needs no grade-5 AE (CTCAE v5:
    # death from disease progression is not reported as an AE); any other death does (rule XF-DEATH-NO-G5).
    death_causes_not_ae: list[str] = ["Disease progression"]


class PK(_Strict):
    analyte: str
    unit: str
    lloq: float = Field(gt=0)
    auc_method: Literal["linear", "linear-up-log-down"]
    auc_window_days: int = Field(gt=0)


class Contact(_Strict):
    title: str
    organization: str
    email: str
    phone: str


class Registry(_Strict):
    source_vocabulary: str
    assessment_type: Literal["SYSTEMATIC_ASSESSMENT", "NON_SYSTEMATIC_ASSESSMENT"]
    ae_time_frame: str
    point_of_contact: Contact


class Response(_Strict):
    """Best overall response (RECIST 1.1; clinical/response.py). Defaults are the usual reading of a
    phase 1 escalation trial: unconfirmed responses, and stable disease counts when assessed at least
    28 days after infusion. A protocol whose first assessment visit has a window (e.g. day 28 +/- 1)
    sets ``sd_min_days`` to the window's first day so that the scheduled assessment counts."""

    sd_min_days: int = Field(default=28, ge=0)
    confirm: bool = False
    confirm_days: int = Field(default=28, ge=1)


class DataCut(_Strict):
    """What the analysis of a data cut reads (clinical/datacut.py). Default, as is common practice:
    the data as they stood at the cut-off -- records dated after it are not analysed and end dates
    after it are blank (ongoing at the cut); they are listed in ``cut.after_cut``. ``apply: false``
    analyses every staged record as it is."""

    apply: bool = True


# ADSL population flags a form can be expected of (deliverables: form completeness).
PopulationFlag = Literal["SCRNFL", "ENRLFL", "APHFL", "MFGFL", "LDFL", "SAFFL"]
POPULATION_FLAGS: tuple[str, ...] = get_args(PopulationFlag)


class DataQuality(_Strict):
    """Form completeness in the DSMB data-quality section: which participants are expected to have at
    least one record of a form at the data cut, by ADSL population flag. Default: every screened
    participant has the screening forms; each later form is expected of the participants who
    reached the step before it (leukapheresis of the enrolled, manufacturing of the leukapheresed,
    lymphodepletion of those whose product was released, infusion of the lymphodepleted, PK and
    response of the infused). Forms not listed (AEs, medications, disposition) have no expected
    population; their records are still counted."""

    expected_forms: dict[str, PopulationFlag] = {
        "dm": "SCRNFL", "enrol": "SCRNFL", "ie": "SCRNFL", "sc": "SCRNFL", "lb": "SCRNFL",
        "apher": "ENRLFL", "mfg": "APHFL", "ld": "MFGFL", "inf": "LDFL", "pc": "SAFFL", "rs": "SAFFL",
    }


class Input(_Strict):
    """How the study's exports arrive (see docs/ingest.md). Paths are relative to the configuration file."""

    # Encodings a CSV may be in besides UTF-8 (with or without BOM), tried strictly in this order.
    encodings: list[str] = ["utf-8"]
    delimiters: list[Literal[",", ";", "\t", "|"]] = [",", ";"]
    # Participant identifier pattern when it is not the contract's site-number (e.g. SDTM USUBJID).
    subject_id_pattern: str | None = None
    max_text_chars: int = Field(default=2000, gt=0)
    # Further column names that are direct identifiers and are dropped (besides the built-in list).
    identifier_columns: list[str] = []
    odm_mapping: str | None = None  # FormOID/ItemGroupOID/ItemOID -> form and field
    sdtm_mapping: str | None = None  # SDTM domains and variables -> form and field

    @field_validator("encodings")
    @classmethod
    def _known_codecs(cls, v: list[str]) -> list[str]:
        import codecs

        for name in v:
            try:
                codecs.lookup(name)
            except LookupError as exc:
                raise ValueError(f"unknown encoding {name!r}") from exc
        return v


class StudyConfig(_Strict):
    study: StudyInfo
    dose_levels: list[DoseLevel] = Field(min_length=1)
    escalation: Escalation
    lymphodepletion: Lymphodepletion
    visits: list[Visit] = Field(min_length=1)
    eligibility: list[Criterion]
    # default: the visit (visits[].id) whose lab results are the screening values for eligibility.
    screening_visit: str = "SCREENING"
    safety: Safety
    pk: PK
    registry: Registry
    # The CRF forms the study collects (default: all). The others are loaded as empty tables.
    forms: list[str] | None = None
    input: Input = Input()
    data_quality: DataQuality = DataQuality()
    response: Response = Response()
    data_cut: DataCut = DataCut()
    # Filled by load_study, not by the file: sha256 of the file's bytes, for the audit trail.
    config_sha256: str = ""
    config_path: str = ""

    @field_validator("screening_visit")
    @classmethod
    def _known_screening_visit(cls, v: str, info: ValidationInfo) -> str:
        # A misspelt visit would leave every lab criterion without a screening value.
        visits = [visit.id for visit in info.data.get("visits", [])]
        if visits and v not in visits:
            raise ValueError(f"{v!r} is not a visit id; visits has {visits}")
        return v

    @model_validator(mode="after")
    def _unique_ids(self) -> "StudyConfig":
        for name, ids in (
            ("dose_levels", [d.id for d in self.dose_levels]),
            ("visits", [v.id for v in self.visits]),
            ("eligibility", [c.id for c in self.eligibility]),
        ):
            dupes = sorted({i for i in ids if ids.count(i) > 1})
            if dupes:
                raise ValueError(f"{name}: duplicate id(s) {dupes}")
        from clinical.crf import FORM_IDS

        unknown = sorted(set(self.forms or []) - set(FORM_IDS))
        if unknown:
            raise ValueError(f"forms: unknown form(s) {unknown}; the contract has {list(FORM_IDS)}")
        unknown = sorted(set(self.data_quality.expected_forms) - set(FORM_IDS))
        if unknown:
            raise ValueError(f"data_quality.expected_forms: unknown form(s) {unknown}; the contract has {list(FORM_IDS)}")
        cells = [d.cells for d in self.dose_levels]
        if cells != sorted(cells):
            raise ValueError("dose_levels: must be listed from lowest to highest dose")
        return self

    @property
    def dose_ids(self) -> list[str]:
        return [d.id for d in self.dose_levels]

    def dose(self, dose_id: str) -> DoseLevel:
        return next(d for d in self.dose_levels if d.id == dose_id)


def load_study(path: str | Path) -> StudyConfig:
    """Read and validate a study configuration; errors name the file and the key."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise StudyConfigError(f"{path}: cannot read study configuration ({exc.strerror})") from exc
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise StudyConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise StudyConfigError(f"{path}: top level must be a mapping of keys")
    data["config_sha256"] = hashlib.sha256(raw).hexdigest()
    data["config_path"] = str(path)
    try:
        return StudyConfig.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "(top level)"
            lines.append(f"{path}: {key}: {err['msg']}")
        raise StudyConfigError("\n".join(lines)) from None
