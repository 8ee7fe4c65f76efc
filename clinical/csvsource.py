"""Read one form's CSV file into :class:`~clinical.records.FormRecords`, without trusting its shape.

What a site's CSV can be: UTF-8 with or without BOM, GB18030 from Excel on Chinese Windows, comma
or semicolon separated, CRLF or LF line ends, quoted values with line breaks inside. What it must not
do silently: drop or shift a row. So the structure is worked out before any value is read, over the
whole file at once (NumPy over the bytes, no loop over rows):

* a line break ends a record only where an even number of quotes precedes it (RFC 4180 quoting,
  ``""`` inside a quoted value keeps the count even), which gives every record its first line;
* the delimiters outside quotes, counted per record, give its number of fields.

Then:

* an odd number of quotes in the file (a quoted value never closed) or a last record that stops
  short with no final line break: the file was cut off, a blocking ``FILE-TRUNCATED``;
* a record with the wrong number of fields: quarantined (``CSV-FIELD-COUNT``) with its line and
  text, the rest loads; when no data record has the header's number of fields, a blocking
  ``FILE-FIELD-COUNT`` (the data is not separated like the header);
* blank lines are not records.

The well-formed records are parsed by Polars from a cleaned copy held in memory (UTF-8, only the
good records): the export file itself is only ever read.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import polars as pl

from clinical.crf import Form
from clinical.encoding import decode
from clinical.records import (
    LINE,
    REJECT_COLUMNS,
    STUDY,
    FormRecords,
    IngestSettings,
    file_error,
)

CANDIDATE_DELIMITERS = (",", ";", "\t", "|")
DELIMITER_NAMES = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}


def _split_header(text: str, delimiter: str) -> list[str]:
    # A stream, not a list of lines: a quoted column name may hold a line break (then an unknown column).
    return [h.strip().lstrip("\ufeff").strip() for h in next(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter), [])]


def detect_delimiter(header_text: str, known: set[str], accepted: tuple[str, ...], file: str) -> str:
    """The delimiter that splits the header into the most known column names (ties: accepted first)."""
    order = list(accepted) + [d for d in CANDIDATE_DELIMITERS if d not in accepted]
    scores = {d: len(set(_split_header(header_text, d)) & known) for d in order}
    best = max(order, key=lambda d: scores[d])  # max keeps the first of equal scores
    if scores[best] == 0:
        best = order[0]
    if best not in accepted:
        raise file_error(
            file, "FILE-DELIMITER",
            f"columns are separated by {DELIMITER_NAMES.get(best, repr(best))}; the study accepts "
            f"{', '.join(DELIMITER_NAMES.get(d, repr(d)) for d in accepted)} (input.delimiters)",
            line=1,
        )
    return best


def _classify_header(form: Form, header: list[str], settings: IngestSettings, file: str) -> list[str]:
    """Check the header against the form's allow-list; the identifier columns to drop."""
    seen: set[str] = set()
    for h in header:
        if h in seen:
            raise file_error(file, "FILE-DUP-COLUMN", "duplicate column", line=1, column=h)
        seen.add(h)
    contract = {f.name for f in form.fields}
    identifiers = []
    for h in header:
        if h in contract:
            if form.field(h).identifier:
                identifiers.append(h)
        elif h == "STUDYID":
            continue  # EDC exports carry the study on every form: checked, not loaded
        elif settings.is_identifier_column(h):
            identifiers.append(h)
        else:
            raise file_error(file, "FILE-UNKNOWN-COLUMN", f"not in the {form.id} contract", line=1, column=h)
    missing = [f.name for f in form.loaded_fields if f.name not in header]
    if missing:
        raise file_error(file, "FILE-MISSING-COLUMN", "missing from the header", line=1, column=missing[0])
    return identifiers


def _known(form: Form) -> set[str]:
    return {f.name for f in form.fields} | {"STUDYID"}


def _utf8(
    path: Path, form: Form, settings: IngestSettings, declared_encoding: str | None, encoding: str | None = None
) -> tuple[bytes, str]:
    """The file's text as UTF-8 bytes (in memory) and the encoding it was decoded from.

    ``encoding``: the one :func:`csv_dialect` already found for this file; the bytes are then only
    converted (UTF-8 is used as it is), not decoded again under each candidate."""
    data = path.read_bytes()
    if not data.strip(b" \t\r\n\xef\xbb\xbf"):
        raise file_error(path.name, "FILE-EMPTY", "file is empty", line=1)
    if encoding is not None:
        if encoding == "utf-8":
            return data, encoding
        return data.decode(encoding).lstrip("\ufeff").encode("utf-8"), encoding
    # A first look at the header (it is ASCII in every real export) only to name positions in errors.
    peek = data[: data.find(b"\n") if b"\n" in data else len(data)].decode("utf-8", "replace").lstrip("\ufeff")
    peek_delim = max(CANDIDATE_DELIMITERS, key=lambda d: len(set(_split_header(peek, d)) & _known(form)))
    decoded = decode(data, path.name, settings.encodings, declared_encoding, peek_delim, _split_header(peek, peek_delim))
    if decoded.encoding == "utf-8":
        return data, decoded.encoding  # already UTF-8: no copy
    return decoded.text.lstrip("\ufeff").encode("utf-8"), decoded.encoding


def _first_line(raw: bytes) -> str:
    return (raw[: raw.find(b"\n")] if b"\n" in raw else raw).decode("utf-8").rstrip("\r")


def csv_dialect(path: Path, form: Form, settings: IngestSettings, declared_encoding: str | None = None) -> tuple[str, str]:
    """(encoding, delimiter) of a form file, from its bytes and its first line only."""
    raw, encoding = _utf8(path, form, settings, declared_encoding)
    return encoding, detect_delimiter(_first_line(raw), _known(form), settings.delimiters, path.name)


def read_csv_form(
    path: Path,
    form: Form,
    settings: IngestSettings,
    declared_encoding: str | None = None,
    dialect: tuple[str, str] | None = None,
) -> FormRecords:
    """One form's records from its CSV file. ``dialect``: the file's (encoding, delimiter) when
    :func:`csv_dialect` has found them already (an export's files are described before they load);
    they are not detected again."""
    file = path.name
    known = _known(form)
    raw, encoding = _utf8(path, form, settings, declared_encoding, dialect[0] if dialect else None)
    arr = np.frombuffer(raw, dtype=np.uint8)
    size = len(raw)

    quotes = np.flatnonzero(arr == ord('"'))
    newlines = np.flatnonzero(arr == ord("\n"))

    def line_of(pos: np.ndarray | int) -> np.ndarray | int:
        return np.searchsorted(newlines, pos) + 1

    boundaries = newlines[np.searchsorted(quotes, newlines) % 2 == 0]
    starts = np.concatenate(([0], boundaries + 1))
    ends = np.concatenate((boundaries, [size]))
    if starts[-1] >= size:  # the file ends with a line break: no record after it
        starts, ends = starts[:-1], ends[:-1]
    # Content end: without the CR of a CRLF line end.
    content_end = ends - ((ends > starts) & (arr[np.maximum(ends - 1, 0)] == ord("\r")))
    header_text = raw[starts[0] : content_end[0]].decode("utf-8")
    # csv_dialect's delimiter holds when it was detected from this same text: not when a quoted
    # column name holds a line break (the header record is then longer than the first line).
    if dialect and header_text == _first_line(raw):
        delimiter = dialect[1]
    else:
        delimiter = detect_delimiter(header_text, known, settings.delimiters, file)
    header = _split_header(header_text, delimiter)
    identifiers = _classify_header(form, header, settings, file)
    ncols = len(header)

    if len(quotes) % 2:
        q = int(quotes[-1])
        start = int(starts[np.searchsorted(starts, q, side="right") - 1])
        field_no = int(np.count_nonzero(arr[start:q] == ord(delimiter)))
        raise file_error(
            file, "FILE-TRUNCATED",
            "a quoted value opened here is never closed before the end of the file: the file looks truncated",
            line=int(line_of(q)), column=header[field_no] if field_no < ncols else None,
        )

    # Fields per record: the delimiters outside quotes from a record's start to the next one's.
    # (Each record start is looked up among the delimiters, not each delimiter among the records.)
    delims = np.flatnonzero(arr == ord(delimiter))
    if len(quotes):
        delims = delims[np.searchsorted(quotes, delims) % 2 == 0]
    bounds = np.append(starts, size)
    nfields = np.diff(np.searchsorted(delims, bounds)) + 1
    del delims
    # A blank record has nothing but spaces, tabs and line ends between its start and the next one;
    # it has no delimiter, so only the one-field records need a look.
    blank = np.zeros(len(starts), dtype=bool)
    for i in np.flatnonzero(nfields == 1):
        blank[i] = not raw[bounds[i] : bounds[i + 1]].strip(b" \t\r\n")
    lines = line_of(starts)

    data_idx = np.flatnonzero(~blank)
    data_idx = data_idx[data_idx > 0]  # record 0 is the header
    ok = nfields[data_idx] == ncols
    bad_idx = data_idx[~ok]
    if len(bad_idx):
        last = int(data_idx[-1])
        if last in bad_idx and nfields[last] < ncols and not raw.endswith(b"\n"):
            raise file_error(
                file, "FILE-TRUNCATED",
                f"the last record ends after {int(nfields[last])} of {ncols} fields and the file has no final line "
                f"break: the file looks truncated",
                line=int(lines[last]), column=header[int(nfields[last])],
            )
        if not ok.any():
            first = int(bad_idx[0])
            raise file_error(
                file, "FILE-FIELD-COUNT",
                f"no data record has the header's {ncols} fields (this one has {int(nfields[first])}, separated by "
                f"{DELIMITER_NAMES.get(delimiter, delimiter)} like the header): the rows are not separated like the header",
                line=int(lines[first]),
            )
    # The malformed records' full text: the loader keeps a preview of a long one in quarantine.
    rejects = pl.DataFrame(
        {
            LINE: pl.Series(lines[bad_idx].astype(np.int64)),
            "column": [header[int(n)] if n < ncols else None for n in nfields[bad_idx]],
            "rule": ["CSV-FIELD-COUNT"] * len(bad_idx),
            "value": [raw[starts[i] : content_end[i]].decode("utf-8") for i in bad_idx],
            "message": [f"record has {int(n)} fields, the header has {ncols}" for n in nfields[bad_idx]],
        },
        schema=REJECT_COLUMNS,
    )

    good = data_idx[ok]
    if len(good) == len(starts) - 1:  # every record after the header is good: parse the rest as it is
        cleaned = raw[starts[1]:] if len(good) else b""
    else:  # the good records only, each [start, end] with its line break: one slice per run of them
        breaks = np.flatnonzero(np.diff(good) != 1)
        run_first = np.concatenate((good[:1], good[breaks + 1]))
        run_last = np.concatenate((good[breaks], good[-1:]))
        cleaned = b"".join(raw[starts[a] : min(int(ends[b]) + 1, size)] for a, b in zip(run_first, run_last))
    if cleaned and not cleaned.endswith(b"\n"):
        cleaned += b"\n"
    frame = pl.read_csv(
        io.BytesIO(cleaned),
        has_header=False,
        new_columns=header,
        schema={h: pl.String for h in header},
        separator=delimiter,
        quote_char='"',
        raise_if_empty=False,
        truncate_ragged_lines=False,
    )
    if frame.height != len(good):
        raise file_error(file, "FILE-PARSE", f"parsed {frame.height} records where the structure has {len(good)}")
    frame = frame.with_columns(pl.Series(LINE, lines[good].astype(np.int64)))
    if "STUDYID" in header:  # the study each record says it belongs to (a contract field or not)
        frame = frame.with_columns(pl.col("STUDYID").str.strip_chars().alias(STUDY))
    # Only contract fields stay; identifier columns outside the contract go here, before any use.
    contract = {f.name for f in form.fields}
    frame = frame.drop([h for h in header if h not in contract])
    return FormRecords(
        file=file,
        format="csv",
        frame=frame,
        encoding=encoding,
        delimiter=delimiter,
        rejects=rejects,
        identifier_columns=tuple(identifiers),
    )
