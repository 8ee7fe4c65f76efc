"""CDISC ODM 1.3 clinical data (Medidata Rave, OpenClinica, REDCap) as CRF form records.

An ODM export holds, per ``ClinicalData`` (a study or site), ``SubjectData`` > ``StudyEventData`` >
``FormData`` > ``ItemGroupData`` > ``ItemData``. One ``ItemGroupData`` is one record of a form: the
mapping file (``input.odm_mapping``) says which FormOIDs (and optionally ItemGroupOIDs and
StudyEventOIDs) make a CRF form, and which ItemOID fills which field::

    study_oids: [S_IM83]              # ClinicalData StudyOIDs of this study (sites included)
    subject: "@SubjectKey"            # or "@StudySubjectID" (OpenClinica)
    forms:
      ae:
        form_oids: [F_AE]
        item_group_oids: [IG_AE]      # optional
        fields:
          AETERM: I_AE_AETERM
          AETOXGR: {from: I_AE_AETOXGR}
          SITEID: {from: "@SiteOID", map: {SITE_01: "01"}}

Fields follow :mod:`clinical.mapping`; a source starting with ``@`` is an attribute of the record's
context: ``@SubjectKey``, ``@StudySubjectID``, ``@Sex`` (OpenClinica), ``@StudyOID``, ``@SiteOID``
(``SiteRef``), ``@StudyEventOID``, ``@StudyEventRepeatKey``, ``@StartDate`` (OpenClinica event start),
``@FormOID``, ``@ItemGroupOID``, ``@ItemGroupRepeatKey``. Nothing else of the file is read: items
that are not mapped, OpenClinica audit logs (which name EDC users), subject attributes such as a
date of birth or a unique identifier never leave the parser.

Provenance: the line of the ``ItemGroupData`` element in the XML file (or, if a form's records share
lines, as in a file without line breaks, the record's position among the file's item groups).
The file is parsed once, streaming (``iterparse``), elements freed as they are read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl
from lxml import etree

from clinical.crf import Form
from clinical.mapping import (
    FieldSpec,
    MappingError,
    field_expr,
    load_yaml,
    parse_field,
    parse_fields,
)
from clinical.records import LINE, STUDY, FormRecords, IngestSettings, file_error

OC_NS = "http://www.openclinica.org/ns/odm_ext_v130/v3.1"
ATTRIBUTES = (
    "SubjectKey", "StudySubjectID", "Sex", "StudyOID", "SiteOID", "StudyEventOID", "StudyEventRepeatKey",
    "StartDate", "FormOID", "ItemGroupOID", "ItemGroupRepeatKey",
)


@dataclass(frozen=True)
class OdmFormMap:
    form: str
    form_oids: tuple[str, ...]
    item_group_oids: tuple[str, ...] | None
    event_oids: tuple[str, ...] | None
    fields: tuple[FieldSpec, ...]


@dataclass(frozen=True)
class OdmMapping:
    path: Path
    study_oids: tuple[str, ...]
    subject: FieldSpec
    forms: dict[str, OdmFormMap]


def _oids(v, where: str) -> tuple[str, ...] | None:
    if v is None:
        return None
    v = [v] if isinstance(v, str) else v
    if not isinstance(v, list) or not v or not all(isinstance(x, str) for x in v):
        raise MappingError(f"{where}: an OID or a list of OIDs")
    return tuple(v)


def load_odm_mapping(path: Path) -> OdmMapping:
    data = load_yaml(path, "ODM")
    forms = {}
    for form_id, spec in data["forms"].items():
        where = f"{path}: forms.{form_id}"
        if not isinstance(spec, dict) or "form_oids" not in spec or "fields" not in spec:
            raise MappingError(f"{where}: needs form_oids and fields")
        fields = parse_fields(form_id, spec["fields"], f"{where}.fields")
        for f in fields:
            _check_attribute(f, f"{where}.fields.{f.name}")
        forms[form_id] = OdmFormMap(
            form_id,
            _oids(spec["form_oids"], f"{where}.form_oids"),
            _oids(spec.get("item_group_oids"), f"{where}.item_group_oids"),
            _oids(spec.get("event_oids"), f"{where}.event_oids"),
            fields,
        )
    study_oids = _oids(data.get("study_oids"), f"{path}: study_oids")
    if not study_oids:
        raise MappingError(f"{path}: study_oids: the ClinicalData StudyOIDs of this study")
    subject = parse_field("SUBJID", data.get("subject", "@SubjectKey"), f"{path}: subject")
    _check_attribute(subject, f"{path}: subject")
    return OdmMapping(Path(path), study_oids, subject, forms)


def _check_attribute(f: FieldSpec, where: str) -> None:
    """An ``@attribute`` source must be one the parser keeps (checked when the mapping loads)."""
    if f.source and f.source.startswith("@") and f.source[1:] not in ATTRIBUTES:
        raise MappingError(f"{where}: unknown attribute {f.source} (one of {', '.join('@' + a for a in ATTRIBUTES)})")


@dataclass(frozen=True)
class ParsedOdm:
    file: str
    encoding: str
    groups: pl.DataFrame  # one row per ItemGroupData: gid, line and the ATTRIBUTES of its context
    items: pl.DataFrame  # gid, ItemOID, Value
    decodes: pl.DataFrame  # ItemOID, CodedValue, Decode (from the metadata's CodeLists)


def _local(tag) -> str:
    return etree.QName(tag).localname if isinstance(tag, str) else ""


def parse_odm(path: Path) -> ParsedOdm:
    """Stream one ODM file into three tables; raises ExportFileError naming the line on a parse error."""
    groups: dict[str, list] = {k: [] for k in ("gid", LINE, *ATTRIBUTES)}
    items: dict[str, list] = {"gid": [], "ItemOID": [], "Value": []}
    item_codelist: dict[str, str] = {}
    codes: dict[str, list] = {"CodeListOID": [], "CodedValue": [], "Decode": []}
    ctx: dict[str, str | None] = dict.fromkeys(ATTRIBUTES)
    gid = 0
    codelist = coded = None
    try:
        parser = etree.iterparse(str(path), events=("start", "end"), huge_tree=True, remove_comments=True)
        for event, el in parser:
            tag = _local(el.tag)
            if event == "start":
                if tag == "ODM" and el.get("FileType") == "Transactional":
                    raise file_error(path.name, "FILE-FORMAT", "a transactional ODM file (FileType=Transactional): "
                                     "export a Snapshot", line=el.sourceline)
                elif tag == "ClinicalData":
                    ctx.update(dict.fromkeys(ATTRIBUTES), StudyOID=el.get("StudyOID"))
                elif tag == "SubjectData":
                    ctx.update(SubjectKey=el.get("SubjectKey"), StudySubjectID=el.get(f"{{{OC_NS}}}StudySubjectID"),
                               Sex=el.get(f"{{{OC_NS}}}Sex"), SiteOID=None)
                elif tag == "SiteRef":
                    ctx["SiteOID"] = el.get("LocationOID")
                elif tag == "StudyEventData":
                    ctx.update(StudyEventOID=el.get("StudyEventOID"), StudyEventRepeatKey=el.get("StudyEventRepeatKey"),
                               StartDate=el.get(f"{{{OC_NS}}}StartDate"))
                elif tag == "FormData":
                    ctx["FormOID"] = el.get("FormOID")
                elif tag == "ItemGroupData":
                    gid += 1
                    ctx.update(ItemGroupOID=el.get("ItemGroupOID"), ItemGroupRepeatKey=el.get("ItemGroupRepeatKey"))
                    groups["gid"].append(gid)
                    groups[LINE].append(el.sourceline)
                    for k in ATTRIBUTES:
                        groups[k].append(ctx[k])
                elif tag == "CodeList":
                    codelist = el.get("OID")
                elif tag in ("CodeListItem", "EnumeratedItem"):
                    coded = el.get("CodedValue")
                    if tag == "EnumeratedItem":
                        codes["CodeListOID"].append(codelist)
                        codes["CodedValue"].append(coded)
                        codes["Decode"].append(coded)
                continue
            # end events
            if tag.startswith("ItemData") and ctx["ItemGroupOID"] is not None:
                value = el.get("Value") if tag == "ItemData" else el.text
                if el.get("IsNull") == "Yes":
                    value = None
                items["gid"].append(gid)
                items["ItemOID"].append(el.get("ItemOID"))
                items["Value"].append(value)
                el.clear(keep_tail=False)
            elif tag == "ItemGroupData":
                ctx.update(ItemGroupOID=None, ItemGroupRepeatKey=None)
                el.clear(keep_tail=False)
            elif tag == "TranslatedText" and coded is not None and _local(el.getparent().getparent().tag) == "CodeListItem":
                if len(codes["CodedValue"]) == 0 or codes["CodedValue"][-1] != coded or codes["CodeListOID"][-1] != codelist:
                    codes["CodeListOID"].append(codelist)
                    codes["CodedValue"].append(coded)
                    codes["Decode"].append((el.text or "").strip())
            elif tag == "CodeListRef":
                parent = el.getparent()
                if parent is not None and _local(parent.tag) == "ItemDef":
                    item_codelist[parent.get("OID")] = el.get("CodeListOID")
            elif tag in ("FormData", "StudyEventData", "SubjectData"):
                el.clear(keep_tail=False)
            elif tag == "CodeListItem":
                coded = None
        encoding = parser.root.getroottree().docinfo.encoding or "utf-8"
    except etree.XMLSyntaxError as exc:
        line, col = exc.position if exc.position else (None, None)
        raise file_error(path.name, "FILE-PARSE", f"not well-formed XML: {exc.msg} (column {col})", line=line) from None
    decodes = pl.DataFrame(codes, schema={"CodeListOID": pl.String, "CodedValue": pl.String, "Decode": pl.String}).join(
        pl.DataFrame({"ItemOID": list(item_codelist), "CodeListOID": list(item_codelist.values())},
                     schema={"ItemOID": pl.String, "CodeListOID": pl.String}),
        on="CodeListOID",
    ).select("ItemOID", "CodedValue", "Decode").unique(["ItemOID", "CodedValue"], keep="first")
    return ParsedOdm(
        path.name,
        encoding.lower(),
        pl.DataFrame(groups, schema={"gid": pl.Int64, LINE: pl.Int64, **{k: pl.String for k in ATTRIBUTES}}),
        pl.DataFrame(items, schema={"gid": pl.Int64, "ItemOID": pl.String, "Value": pl.String}),
        decodes,
    )


class OdmSource:
    """The records of every mapped form of an ODM export (one ClinicalData file)."""

    def __init__(self, files: list[Path], mapping: OdmMapping, settings: IngestSettings) -> None:
        if len(files) != 1:
            raise file_error(
                files[0].parent.name if files else "export", "FILE-FORMAT",
                f"an ODM export must hold exactly one ODM file with ClinicalData, found {len(files)}",
            )
        self.path = files[0]
        self.mapping = mapping
        self.settings = settings
        self._parsed: ParsedOdm | None = None

    @property
    def parsed(self) -> ParsedOdm:
        """The parsed file; parsed once (``ExportSource.open`` does it before any form is read)."""
        if self._parsed is None:
            self._parsed = parse_odm(self.path)
        return self._parsed

    def read_form(self, form: Form) -> FormRecords:
        spec = self.mapping.forms.get(form.id)
        p = self.parsed
        if spec is None:
            raise file_error(
                p.file, "FILE-MISSING",
                f"form {form.id} is collected by the study but not in the ODM mapping {self.mapping.path.name}",
            )
        groups = p.groups.filter(pl.col("FormOID").is_in(spec.form_oids))
        if spec.item_group_oids:
            groups = groups.filter(pl.col("ItemGroupOID").is_in(spec.item_group_oids))
        if spec.event_oids:
            groups = groups.filter(pl.col("StudyEventOID").is_in(spec.event_oids))
        fields = (self.mapping.subject, *[f for f in spec.fields if f.name != "SUBJID"]) if not any(
            f.name == "SUBJID" for f in spec.fields) else spec.fields
        item_oids = sorted({f.source for f in fields if f.source and not f.source.startswith("@")})
        items = p.items.join(groups.select("gid"), on="gid", how="semi").filter(pl.col("ItemOID").is_in(item_oids))
        dup = items.group_by("gid", "ItemOID").len().filter(pl.col("len") > 1)
        if dup.height:
            g = dup.join(groups, on="gid").sort(LINE).row(0, named=True)
            raise file_error(p.file, "FILE-PARSE", f"ItemOID {g['ItemOID']} occurs twice in one ItemGroupData", line=g[LINE])
        decoded = {f.source for f in fields if f.decode and f.source}
        if decoded:
            items = items.join(p.decodes, left_on=["ItemOID", "Value"], right_on=["ItemOID", "CodedValue"], how="left").with_columns(
                pl.when(pl.col("ItemOID").is_in(list(decoded)) & pl.col("Decode").is_not_null())
                .then(pl.col("Decode")).otherwise(pl.col("Value")).alias("Value")
            ).drop("Decode")
        wide = items.pivot(on="ItemOID", index="gid", values="Value") if items.height else pl.DataFrame(schema={"gid": pl.Int64})
        frame = groups.join(wide, on="gid", how="left").sort("gid")
        exprs = []
        for f in fields:
            if f.value is not None:
                exprs.append(field_expr(f))
                continue
            col = f.source.removeprefix("@")
            if col not in frame.columns:
                frame = frame.with_columns(pl.lit(None, dtype=pl.String).alias(col))
            exprs.append(field_expr(f, col))
        study = pl.when(pl.col("StudyOID").is_in(self.mapping.study_oids)).then(pl.lit(self.settings.study_id)).otherwise(pl.col("StudyOID"))
        out = frame.select(pl.col(LINE), pl.col("gid"), *exprs, study.alias(STUDY))
        if out[LINE].n_unique() != out.height:  # several records on one line: number them instead
            out = out.with_columns(pl.col("gid").alias(LINE))
        return FormRecords(file=p.file, format="odm", frame=out.drop("gid"), encoding=p.encoding)
