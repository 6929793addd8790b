"""The one way untrusted text reaches a screen: `shown`.

Whatever came from a model, a page, a tool, a file or a command may carry characters that a
terminal obeys rather than shows: escape sequences (clear the screen, move the cursor, set the
window title, hide text), the 8-bit CSI, bidi controls that reorder what follows (so
`exe.txt` reads `txt.exe`), line separators. `shown` makes each of them visible as an escape
(`\\x1b`, `<U+202E>`) and rich markup inert, so that what a person reads is what was there. Every
frontend prints untrusted text through it; `--json` output is JSON, exact, and never through it
(`json_line` writes it, one line per value).
"""

from __future__ import annotations

import html
import json
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final, TextIO

from rich.console import Console
from rich.markup import escape

#: C0 controls but tab and newline, DEL, C1 controls (U+0085 and U+009B, the 8-bit CSI, among
#: them), the bidi controls (marks, embeddings, overrides, isolates), the line and paragraph
#: separators, and the invisible formatting characters a screen cannot show
_HIDDEN: Final = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f"
    "\u061c\u200b-\u200f\u202a-\u202e\u2028\u2029\u2060-\u2064\u2066-\u2069\ufeff]"
)


def _visible(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"<U+{code:04X}>"


def plain(text: str) -> str:
    """`text` with every character a terminal would obey or hide made visible; tabs and
    newlines kept (a CR LF line ending is a newline)."""
    return _HIDDEN.sub(_visible, text.replace("\r\n", "\n"))


def shown(text: str) -> str:
    """`text` made safe to print through rich: visible controls (see `plain`), inert markup."""
    return escape(plain(text))


def in_html(text: str) -> str:
    """`text` made safe to put in an HTML page (as an element's text or an attribute's value):
    visible controls (see `plain`), inert markup."""
    return html.escape(plain(text), quote=True)


def editable_json(value: Any) -> str:
    """`value` as indented JSON for a person to edit: exact once decoded, with every character a
    screen would obey or hide written as a JSON escape (`\\u202e`), so what is edited is what
    is there."""
    text = json.dumps(value, ensure_ascii=False, indent=2)
    return _HIDDEN.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


#: characters that JSON may carry raw but that split a line for many readers (Python's
#: `str.splitlines`, JavaScript before ES2019): written escaped in `--json` output
_LINE_BREAKING: Final = {"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def json_line(value: Any) -> str:
    """`value` as one line of JSON: UTF-8 kept readable, every string exact once decoded, and
    nothing in it that a line-oriented reader would take for the end of a line."""
    text = json.dumps(value, ensure_ascii=False)
    for char, escaped in _LINE_BREAKING.items():
        text = text.replace(char, escaped)
    return text


#: where `print_json` writes: the process's stdout, kept aside while `--json` sends everything
#: else printed to stderr (see `json_document`)
_document: list[TextIO] = []


def print_json(value: Any) -> None:
    """Print `value` as the command's JSON document (see `json_line`)."""
    out = _document[-1] if _document else sys.stdout
    out.write(json_line(value) + "\n")
    out.flush()


def say(as_json: bool, out: Console, data: dict[str, Any], text: str) -> None:
    """What a command did: `data` as its JSON document, or `text` (untrusted parts neutralised)
    for a person."""
    if as_json:
        print_json(data)
    else:
        out.print(shown(text))


@contextmanager
def json_document(enabled: bool) -> Iterator[None]:
    """While the block runs, stdout holds only what `print_json` writes: anything else printed
    (by a tool's thread, a library, a stray `print`) goes to stderr, so that a `--json` command's
    stdout is one JSON document a script can read."""
    if not enabled:
        yield
        return
    _document.append(sys.stdout)
    sys.stdout = sys.stderr
    try:
        yield
    finally:
        sys.stdout = _document.pop()
