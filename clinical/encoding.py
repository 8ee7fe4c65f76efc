"""Which encoding a text file is in: detected from its bytes, within what the study declares.

Nothing is guessed silently. The order is fixed and the answer is recorded (``raw.export_files``):

1. a byte-order mark decides: UTF-8 with BOM, or UTF-16/32 (accepted only if the study lists them);
2. an encoding the export declares for itself (``export.json`` ``"encoding"``) is used, strictly;
3. otherwise strict UTF-8 (pure ASCII is UTF-8);
4. otherwise each further encoding the study configuration accepts (``input.encodings``, e.g.
   ``gb18030`` for a site whose Excel saves in the Chinese Windows code page), strictly, in order.

A file that decodes under none of them is a blocking error naming the line and column of the first
byte that does not decode. GB18030 is a superset of GBK and GB2312, so one entry covers all three.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

from clinical.records import file_error

_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


@dataclass(frozen=True)
class Decoded:
    text: str
    encoding: str  # the codec that decoded it, normalised: "utf-8", "utf-8-sig", "gb18030", ...


def normalise(name: str) -> str:
    """Python's canonical codec name ("GBK" -> "gbk", "utf8" -> "utf-8"); raises LookupError if unknown."""
    return codecs.lookup(name).name


def _position(data: bytes, offset: int, delimiter: bytes | None, header: list[str] | None) -> tuple[int, str | None]:
    """(line, column name or None) of a byte offset, for the message."""
    line_start = data.rfind(b"\n", 0, offset) + 1
    line = data.count(b"\n", 0, offset) + 1
    column = None
    if delimiter and header:
        index = data[line_start:offset].count(delimiter)  # approximate: ignores quoted delimiters
        column = header[index] if index < len(header) else None
    return line, column


def decode(
    data: bytes,
    file: str,
    accepted: tuple[str, ...] = ("utf-8",),
    declared: str | None = None,
    delimiter: str | None = None,
    header: list[str] | None = None,
) -> Decoded:
    """Decode ``data`` by the rules above or raise ``ExportFileError`` (rule FILE-ENCODING)."""
    accepted_names = [normalise(a) for a in accepted]
    for bom, codec in _BOMS:
        if data.startswith(bom):
            wide = codec in ("utf-16", "utf-32")
            if wide and codec not in accepted_names and not (declared and normalise(declared) == codec):
                raise file_error(
                    file, "FILE-ENCODING",
                    f"starts with a {codec.upper()} byte-order mark, but the study accepts only {', '.join(accepted)}",
                    line=1,
                )
            return _strict(data, codec, file, "bom", delimiter, header)
    if declared:
        return _strict(data, normalise(declared), file, "declared", delimiter, header)
    try:
        return Decoded(data.decode("utf-8"), "utf-8")
    except UnicodeDecodeError as exc:
        first_error = exc
    for codec in accepted_names:
        if codec == "utf-8":
            continue
        try:
            return Decoded(data.decode(codec), codec)
        except UnicodeDecodeError:
            continue
    line, column = _position(data, first_error.start, delimiter.encode() if delimiter else None, header)
    bad = data[first_error.start : first_error.start + 1].hex().upper()
    raise file_error(
        file, "FILE-ENCODING",
        f"byte 0x{bad} is not UTF-8, and the file does not decode as any encoding the study accepts "
        f"({', '.join(accepted)}); declare its encoding (input.encodings, or \"encoding\" in export.json)",
        line=line, column=column,
    )


def _strict(data: bytes, codec: str, file: str, how: str, delimiter: str | None, header: list[str] | None) -> Decoded:
    try:
        text = data.decode(codec)
    except UnicodeDecodeError as exc:
        line, column = _position(data, exc.start, delimiter.encode() if delimiter else None, header)
        raise file_error(
            file, "FILE-ENCODING", f"does not decode as {codec} (as {'declared' if how == 'declared' else 'marked'}): "
            f"byte 0x{data[exc.start:exc.start + 1].hex().upper()}",
            line=line, column=column,
        ) from None
    if codec.startswith(("utf-16", "utf-32")):
        text = text.lstrip("\ufeff")
    return Decoded(text, codec)
