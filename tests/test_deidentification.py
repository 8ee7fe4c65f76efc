"""De-identification end to end (issue 3, item 5), on a hostile but loadable delivery of the demo trial.

The demo export is re-delivered as a Guangdong site's Excel would save it (GB18030, semicolons,
CRLF) with every kind of direct identifier in it: the contract's identifier fields (initials, date
of birth, one participant with only a date of birth and no age), extra identifier columns with
English and Chinese headers (name, ID-card number, phone, address), and a phone number typed into
an adverse-event term. Free text also carries Chinese, a spreadsheet formula and HTML.

The whole pipeline runs on it; then every output file (the DuckDB database, the DSMB report HTML and
PDF text, the workbooks' XML, the registry JSON/XML/HTML, the manifest) is scanned: no identifier
may appear anywhere. Chinese free text must survive intact; the formula and the markup are
quarantined and listed as data queries, as text. Finally a failed load (a truncated file) leaves
every output of the good run byte for byte as it was.
"""

import hashlib
import html
import json
import shutil
import zipfile
from pathlib import Path

import duckdb
import openpyxl
import pytest
from conftest import DEMO_CUT, copy_export
from fixtures.exports import read_rows, rewrite_csv, study_with_input, write_rows
from lxml import etree

NAMES = ["王小明", "李四光", "张伟"]
ID_CARDS = ["440106198703154512", "44030519900101123X", "440104196502283318"]
PHONES = ["13812345678", "15999887766", "020-87654321"]
ADDRESSES = ["广州市天河区体育西路103号", "深圳市南山区科技园南区8栋", "12 Harbour Road, Wan Chai"]
PHONE_IN_TEXT = "13900001111"
CHINESE_TERM = "发热伴寒战（39.2℃）"
CHINESE_PT = "发热"  # MedDRA's Chinese preferred term for pyrexia, as a Chinese site may code
CHINESE_REASON = "外周静脉通路不足，无法采集"
FORMULA = '=HYPERLINK("http://evil.example","click")'
MARKUP = "<script>alert('x')</script>Rash"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def hostile(demo_run, tmp_path_factory):
    from pipelines.run import run_export

    base = tmp_path_factory.mktemp("hostile")
    src = copy_export(demo_run.export, base / "utf8")
    header, rows = read_rows(src / "dm.csv")
    # Identifier columns the contract does not know, with English and Chinese headers.
    header = header + ["NAME", "身份证号", "PHONE", "ADDRESS"]
    initials, births = [], []
    for i, r in enumerate(rows):
        r[header.index("SUBJINIT")] = f"QZ{chr(65 + i)}{chr(75 + i)}"
        initials.append(r[header.index("SUBJINIT")])
        births.append(r[header.index("BRTHDAT")])
        r += [NAMES[i % 3] + str(i), ID_CARDS[i % 3], PHONES[i % 3], ADDRESSES[i % 3]]
    age_of_first = rows[0][header.index("AGE")]
    rows[0][header.index("AGE")] = ""  # only a date of birth: age at consent is derived
    write_rows(src / "dm.csv", header, rows)
    header, rows = read_rows(src / "ae.csv")
    plain = [i for i, r in enumerate(rows) if r[header.index("AEDLT")] == "N" and r[header.index("AECAT")] == "OTHER"]
    t = header.index("AETERM")
    rows[plain[0]][t] = CHINESE_TERM
    rows[plain[0]][header.index("AEDECOD")] = CHINESE_PT
    rows[plain[0]][header.index("AESER")] = "Y"  # serious: listed by its term in the SAE listings
    rows[plain[1]][t] = f"Rash, patient asks to be called on {PHONE_IN_TEXT}"
    rows[plain[2]][t] = FORMULA
    rows[plain[3]][t] = MARKUP
    write_rows(src / "ae.csv", header, rows)
    header, rows = read_rows(src / "apher.csv")
    not_done = [r for r in rows if r[header.index("PRYN")] == "N"]
    not_done[0][header.index("PRREASND")] = CHINESE_REASON
    write_rows(src / "apher.csv", header, rows)
    header, rows = read_rows(src / "cm.csv")
    write_rows(src / "cm.csv", header, [*rows, ["01-001", "99", "Paracetamol"]])  # a record cut short
    export = rewrite_csv(src, base / "export", encoding="gb18030", delimiter=";", newline="\r\n")
    study = study_with_input(base, {"encodings": ["utf-8", "gb18030"]})
    out = base / "out"
    rc = run_export(str(study), str(export), str(out), DEMO_CUT)
    return {
        "rc": rc, "export": export, "study": study, "out": out, "final": out / "IM83" / DEMO_CUT,
        "identifiers": [*initials, *births, *NAMES, *ID_CARDS, *PHONES, *ADDRESSES, PHONE_IN_TEXT],
        "age_of_first": age_of_first, "first": read_rows(src / "dm.csv")[1][0][2],
    }


def _texts(final: Path) -> dict[str, str]:
    """Every output file as text: database values, workbook XML, PDF text, and the text files as they are."""
    from pypdf import PdfReader

    out = {}
    for path in sorted(p for p in final.rglob("*") if p.is_file()):
        if path.suffix == ".duckdb":
            con = duckdb.connect(str(path), read_only=True)
            parts = []
            for schema, table in con.execute(
                "SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = current_database()"
            ).fetchall():
                rows = con.execute(f'SELECT * FROM "{schema}"."{table}"').fetchall()
                cols = [c[0] for c in con.execute(f'DESCRIBE "{schema}"."{table}"').fetchall()]
                parts.append(f"{schema}.{table} {cols} {rows}")
            con.close()
            out[path.name] = "\n".join(parts)
            out[path.name + " (bytes)"] = path.read_bytes().decode("utf-8", "replace")
        elif path.suffix == ".xlsx":  # the XML as stored and its text with character references resolved
            with zipfile.ZipFile(path) as z:
                parts = [z.read(n) for n in z.namelist() if n.endswith((".xml", ".rels"))]
            out[path.name] = "\n".join(p.decode("utf-8") + "".join(etree.fromstring(p).itertext()) for p in parts)
        elif path.suffix == ".pdf":
            out[path.name] = "\n".join(page.extract_text() or "" for page in PdfReader(path).pages)
        else:
            text = path.read_text(encoding="utf-8")
            out[path.name] = text + "\n" + html.unescape(text)
    return out


def test_the_hostile_delivery_loads(hostile):
    assert hostile["rc"] == 0
    con = duckdb.connect(str(hostile["final"] / "trial.duckdb"), read_only=True)
    files = {f: (e, d) for f, e, d in con.execute("SELECT file, encoding, delimiter FROM raw.export_files").fetchall()}
    # Files with Chinese text are GB18030; the all-ASCII ones are byte for byte UTF-8 too, and recorded so.
    assert {f: files[f] for f in ("dm.csv", "ae.csv", "apher.csv", "lb.csv")} == {
        "dm.csv": ("gb18030", ";"), "ae.csv": ("gb18030", ";"), "apher.csv": ("gb18030", ";"), "lb.csv": ("utf-8", ";"),
    }


def test_no_identifier_reaches_the_database_or_any_output(hostile):
    texts = _texts(hostile["final"])
    assert {"trial.duckdb", "dsmb_report.pdf", "dsmb_report.html", "sponsor_workbook.xlsx", "data_queries.xlsx",
            "registry_results.json", "registry_results.xml", "manifest.json"} <= set(texts)
    found = [(name, ident) for name, text in texts.items() for ident in hostile["identifiers"] if ident in text]
    assert found == []
    con = duckdb.connect(str(hostile["final"] / "trial.duckdb"), read_only=True)
    columns = {c[0] for c in con.execute("SELECT column_name FROM duckdb_columns() WHERE schema_name IN ('raw', 'stage')").fetchall()}
    assert not columns & {"SUBJINIT", "BRTHDAT", "NAME", "身份证号", "PHONE", "ADDRESS"}


def test_date_of_birth_becomes_age_at_consent(hostile):
    con = duckdb.connect(str(hostile["final"] / "trial.duckdb"), read_only=True)
    assert con.execute("SELECT AGE FROM stage.dm WHERE SUBJID = ?", [hostile["first"]]).fetchone() == (int(hostile["age_of_first"]),)


def test_a_phone_number_in_free_text_is_removed_and_queried(hostile):
    con = duckdb.connect(str(hostile["final"] / "trial.duckdb"), read_only=True)
    assert con.execute("SELECT count(*) FROM raw.ae WHERE AETERM = '[removed at ingest]'").fetchone() == (1,)
    rule, value, message = con.execute("SELECT rule, value, message FROM raw.quarantine WHERE rule = 'PII-IN-TEXT'").fetchone()
    assert (rule, value) == ("PII-IN-TEXT", "[removed at ingest]") and "a mobile phone number" in message
    # The record itself is analysed, with the text replaced: only the identifier is held back.
    assert con.execute("SELECT count(*) FROM stage.ae WHERE AETERM = '[removed at ingest]'").fetchone() == (1,)


@pytest.mark.parametrize(("text", "kind"), [
    ("Fatigue (daughter's mobile 138-1234-5678)", "a mobile phone number"),
    ("call 138 1234 5678", "a mobile phone number"),
    ("+86 138 1234 5678 after 6pm", "a mobile phone number"),
    ("home (010) 1234 5678", "a telephone number"),
    ("clinic 0755 8765 4321", "a telephone number"),
    ("Grade 3 neutropenia on 2024-07-25, ANC 0.5 x10^9/L, lot 2024-0612-0031", None),
])
def test_phone_numbers_written_in_groups_are_found(text, kind):
    import polars as pl

    from clinical.ingest import REMOVED, _remove_pii

    frame = pl.DataFrame({"_line": [2], "SUBJID": ["01-001"], "AETERM": [text]})
    cleaned, found = _remove_pii(frame, ["AETERM"])
    if kind is None:
        assert found.height == 0 and cleaned["AETERM"][0] == text
    else:
        assert cleaned["AETERM"][0] == REMOVED and found["message"][0].startswith(f"looks like {kind}")


def test_chinese_free_text_survives_to_every_output_that_shows_it(hostile):
    texts = _texts(hostile["final"])
    # The reported term and the reason leukapheresis was not done, where they are shown.
    for name in ("trial.duckdb", "sponsor_workbook.xlsx", "dsmb_report.html", "dsmb_report.pdf"):
        assert CHINESE_TERM in texts[name] and CHINESE_REASON in texts[name].replace("\n", ""), name
    # The Chinese MedDRA term in every table by preferred term, down to the registry drafts.
    for name in ("trial.duckdb", "sponsor_workbook.xlsx", "dsmb_report.html", "dsmb_report.pdf", "registry_results.json",
                 "registry_results.xml", "registry_draft.html"):
        assert CHINESE_PT in texts[name], name


def test_formula_and_markup_are_quarantined_and_listed_as_text(hostile):
    con = duckdb.connect(str(hostile["final"] / "trial.duckdb"), read_only=True)
    got = dict(con.execute("SELECT rule, value FROM raw.quarantine WHERE rule LIKE 'TEXT-%' AND \"column\" = 'AETERM'").fetchall())
    assert got == {"TEXT-FORMULA": FORMULA, "TEXT-MARKUP": MARKUP}
    wb = openpyxl.load_workbook(hostile["final"] / "data_queries.xlsx")
    cells = [c for ws in wb.worksheets for row in ws.iter_rows() for c in row if isinstance(c.value, str) and "HYPERLINK" in c.value]
    assert cells and all(c.data_type == "s" for c in cells)  # text, never a formula
    assert MARKUP not in _texts(hostile["final"])["dsmb_report.html"]


def test_every_quarantined_row_is_a_data_query_in_the_workbook(hostile):
    con = duckdb.connect(str(hostile["final"] / "trial.duckdb"), read_only=True)
    quarantined = con.execute("SELECT form, line, rule FROM raw.quarantine ORDER BY ALL").fetchall()
    assert {r for _, _, r in quarantined} == {"PII-IN-TEXT", "TEXT-FORMULA", "TEXT-MARKUP", "CSV-FIELD-COUNT"}
    wb = openpyxl.load_workbook(hostile["final"] / "data_queries.xlsx")
    listed = [str(v) for ws in wb.worksheets for row in ws.iter_rows(values_only=True) for v in row if v is not None]
    for form, line, rule in quarantined:
        assert any(f"INGEST-{rule}" == v for v in listed), rule
        assert any(f"{form}.csv line {line}," in v for v in listed), (form, line)


def test_a_failed_load_leaves_the_earlier_outputs_unchanged(hostile, tmp_path, capsys):
    from pipelines.run import run_export

    final = hostile["final"]
    before = {p.name: _sha(p) for p in final.iterdir() if p.is_file()}
    bad = tmp_path / "truncated"
    shutil.copytree(hostile["export"], bad)
    data = (bad / "lb.csv").read_bytes()
    (bad / "lb.csv").write_bytes(data[: len(data) - 40])  # cut off mid-record, no final line break
    rc = run_export(str(hostile["study"]), str(bad), str(hostile["out"]), DEMO_CUT)
    err = capsys.readouterr().err
    assert rc == 1
    assert "lb.csv: line " in err and "the file looks truncated (rule FILE-TRUNCATED)" in err
    assert {p.name: _sha(p) for p in final.iterdir() if p.is_file()} == before
    assert json.loads((final / "manifest.json").read_text())["data_cut"] == DEMO_CUT
