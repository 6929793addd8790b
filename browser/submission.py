"""What a form submission sends, read from the page before a reviewer approves it: `Submission`.
The request the page then sends is held to it (see `browser/_guard.py`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from browser._bodies import sent_fields


@dataclass(frozen=True)
class Submission:
    """What a submit would send, read from the page just before: the approval is bound to it.
    `fields`: every value of every field, by name, in the order the form sends them."""

    action: str
    method: str
    fields: dict[str, list[str]]

    @property
    def origin(self) -> str:
        parts = urlsplit(self.action)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def values(self) -> dict[str, str | list[str]]:
        """The fields as a reviewer reads them: a name's value, or its values where it has
        several."""
        return {n: v[0] if len(v) == 1 else list(v) for n, v in self.fields.items()}

    def matches(self, method: str, url: str, content_type: str = "", body: bytes = b"") -> bool:
        """Whether a request sends this submission: the same method and URL, and a body that
        sends, in whatever form encoding, the approved fields with the approved values (a
        masked password checked by its length), every one of them, and no others. A body that
        cannot be read (an unknown encoding) sends nothing approved."""
        same = url.split("#", maxsplit=1)[0] == self.action.split("#", maxsplit=1)[0]
        if not same or method.upper() != self.method:
            return False
        if not body and not self.fields:
            return True
        sent = sent_fields(content_type, body)
        if sent is None or set(sent) != set(self.fields):
            return False
        return all(
            len(sent[name]) == len(values)
            and all(_same(given, value) for given, value in zip(sent[name], values, strict=True))
            for name, values in self.fields.items()
        )

    def as_effect(self) -> dict[str, Any]:
        return {
            "submits": {
                "origin": self.origin,
                "action": self.action,
                "method": self.method,
                "values": self.values,
            }
        }


def _same(sent: str, approved: str) -> bool:
    """A sent value is the approved one (a password, shown masked, by its length)."""
    return sent == approved or (set(approved) == {"•"} and len(sent) == len(approved))
