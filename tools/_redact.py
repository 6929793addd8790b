"""Taking secret values out of text and bytes before anything keeps or shows them.

A value is looked for in the forms a server, a page or a program echoes it back in: as it is,
JSON-escaped, URL-encoded (`%XX` and `+` for space), hex (either case), and base64 (standard and
URL-safe, at each of the three alignments it can have inside a longer encoded string: a Basic
`Authorization` header carries `user:password` encoded as one), JSON with escaped slashes, and
HTML-escaped. Each found form is replaced by
`[secret:NAME]`. What is left of a base64 form at its edges (a character or two that also
depend on the bytes around it) says nothing of the value.
"""

from __future__ import annotations

import base64
import html
import json
import re
import urllib.parse
from collections.abc import Mapping

from base.artifacts import ArtifactStore

#: forms shorter than this are not looked for: they would be found by chance
_SHORTEST = 6
_PERCENT = re.compile(r"%[0-9A-F]{2}")


def forms(value: str) -> set[str]:
    """The forms of `value` that are looked for (see the module's docstring)."""
    raw = value.encode()
    escaped = json.dumps(value)[1:-1]
    found = {
        value,
        escaped,
        escaped.replace("/", "\\/"),  # JSON writers that escape the slash
        json.dumps(value, ensure_ascii=False)[1:-1],
        html.escape(value),
        html.escape(value).replace("&#x27;", "&#39;"),
        raw.hex(),
        raw.hex().upper(),
    }
    # Percent-encoded as URLs and forms have it (each writer leaves its own characters be), in
    # either case of the hex digits.
    for safe in ("", "/", "!$&'()*+,;=:@/~", "!'()*~"):
        for encoded in (urllib.parse.quote(value, safe=safe), urllib.parse.quote_plus(value, safe)):
            found |= {encoded, _PERCENT.sub(lambda m: m.group().lower(), encoded)}
    for offset in range(3):
        # The characters that depend on the value's bytes alone, with `offset` bytes before it.
        start, end = -(-8 * offset // 6), 8 * (offset + len(raw)) // 6
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            found.add(encode(b"\0" * offset + raw).decode()[start:end])
    return {form for form in found if len(form) >= _SHORTEST}


class Redactor:
    """Replaces the forms of each named value with `[secret:NAME]`, in text and in bytes."""

    def __init__(self, values: Mapping[str, str]) -> None:
        names: dict[str, str] = {}
        for name, value in values.items():
            for form in forms(value):
                names.setdefault(form, name)
        # Longest first: a form that contains another is replaced whole.
        ordered = sorted(names, key=len, reverse=True)
        #: the length of the longest form looked for (0: none)
        self.longest = len(ordered[0]) if ordered else 0
        self._names = names
        self._text = re.compile("|".join(map(re.escape, ordered))) if ordered else None
        self._bytes = (
            re.compile(b"|".join(re.escape(form.encode()) for form in ordered)) if ordered else None
        )

    def __bool__(self) -> bool:
        return self._text is not None

    def text(self, text: str) -> str:
        if self._text is None:
            return text
        return self._text.sub(lambda found: f"[secret:{self._names[found.group()]}]", text)

    def data(self, data: bytes) -> bytes:
        if self._bytes is None:
            return data
        return self._bytes.sub(
            lambda found: f"[secret:{self._names[found.group().decode()]}]".encode(), data
        )


class LiveText:
    """Text shown as it comes, in pieces (a command's output), redacted: the end of each
    stream's text is held back until its next piece, or `flush`, so that a value split between
    two pieces is found whole."""

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor
        self._keep = max(redactor.longest - 1, 0)
        self._held: dict[str, str] = {}

    def feed(self, stream: str, text: str) -> str:
        """What of `text` (and what was held of `stream`) may be shown now."""
        if not self._keep:
            return self._redactor.text(text)
        joined = self._redactor.text(self._held.pop(stream, "") + text)
        # A form that starts before the held end is wholly in `joined`, and was replaced.
        shown, self._held[stream] = joined[: -self._keep], joined[-self._keep :]
        return shown

    def flush(self) -> list[tuple[str, str]]:
        """What is still held, by stream, to show at the end."""
        held = [(stream, text) for stream, text in self._held.items() if text]
        self._held.clear()
        return held


class RedactedArtifacts:
    """An `ArtifactStore` that keeps what it is given without the redactor's values."""

    def __init__(self, inner: ArtifactStore, redactor: Redactor) -> None:
        self.inner, self.redactor = inner, redactor

    def keep(self, name: str, data: bytes) -> str:
        return self.inner.keep(name, self.redactor.data(data))

    def read(self, name: str) -> bytes:
        return self.inner.read(name)

    def names(self) -> list[str]:
        return self.inner.names()
