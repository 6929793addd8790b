"""The fields a form's request body sends, in each encoding a browser uses.

A browser sends a form as `application/x-www-form-urlencoded`, `multipart/form-data` or
`text/plain`. An approval is bound to the fields and values the reviewer saw; the request the
page then sends is read back into fields here and compared, whatever its encoding. A body that
cannot be read as its declared encoding reads as None (and matches no approval).

Fields are grouped by name, in the order sent: a name sent twice (`to=mallory&to=alice`) keeps
both values.
"""

from __future__ import annotations

from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from urllib.parse import parse_qsl

Fields = dict[str, list[str]]


def grouped(pairs: list[tuple[str, str]]) -> Fields:
    """Name/value pairs grouped by name, values in the order given."""
    fields: Fields = {}
    for name, value in pairs:
        fields.setdefault(name, []).append(value)
    return fields


def sent_fields(content_type: str, body: bytes) -> Fields | None:
    """The fields a request body sends, by its content type; None if it cannot be read as one
    of the three form encodings. A file part is read as its file name."""
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind == "application/x-www-form-urlencoded":
        try:
            text = body.decode("ascii")
        except UnicodeDecodeError:
            return None
        return grouped(parse_qsl(text, keep_blank_values=True))
    if kind == "text/plain":
        lines = body.decode("utf-8", errors="replace").split("\r\n")
        if lines and lines[-1] == "":
            lines.pop()
        pairs = [line.partition("=") for line in lines]
        if any(not sep for _, sep, _ in pairs):
            return None
        return grouped([(name, value) for name, _, value in pairs])
    if kind == "multipart/form-data":
        return _multipart(content_type, body)
    return None


def _multipart(content_type: str, body: bytes) -> Fields | None:
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = BytesParser(policy=policy.HTTP).parsebytes(head + body)
    if not isinstance(message, EmailMessage) or not message.is_multipart():
        return None
    pairs: list[tuple[str, str]] = []
    files: dict[str, list[str]] = {}
    for part in message.iter_parts():
        if not isinstance(part, EmailMessage):
            return None
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            return None
        filename = part.get_filename()
        if filename is not None:
            files.setdefault(name, []).append(filename)
            continue
        payload = part.get_payload(decode=True)
        value = payload.decode("utf-8", errors="replace") if isinstance(payload, bytes) else ""
        pairs.append((name, value))
    fields = grouped(pairs)
    for name, names in files.items():
        # As the page shows a file field: its files' names, joined.
        fields.setdefault(name, []).append(", ".join(n for n in names if n))
    return fields
