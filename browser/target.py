"""How a tool names an element of the page: one string, read here.

"e12"                 a reference from the snapshot ("f1e3" in the first frame inside it)
"text=Sign in"        visible text
"label=Email"         the label of a form control
"placeholder=Search"  the placeholder of a field
"name=q"              an accessible name, or the `name` or `id` of a form control
"css=form > button"   a CSS selector (it reaches into open shadow roots)
"Sign in"             anything else: visible text, then label, then name, then placeholder
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Kind = Literal["ref", "text", "label", "placeholder", "name", "css"]
KINDS: tuple[Kind, ...] = ("ref", "text", "label", "placeholder", "name", "css")
#: the kinds a bare string is tried as, in order, until one finds something
GUESSES: tuple[Kind, ...] = ("text", "label", "name", "placeholder")
_REF = re.compile(r"^(?:f\d+)?e\d+$")


@dataclass(frozen=True)
class Target:
    kind: Kind | None  # None: a bare string, tried as each of GUESSES
    value: str

    def __str__(self) -> str:
        return self.value if self.kind in (None, "ref") else f"{self.kind}={self.value}"


def parse_target(text: str) -> Target:
    """Read a target. Raises ValueError for an empty one or an unknown `kind=`."""
    text = text.strip()
    if not text:
        raise ValueError("the target is empty: give a reference such as e12, or text=...")
    if _REF.match(text):
        return Target("ref", text)
    head, eq, rest = text.partition("=")
    if eq and re.fullmatch(r"[a-z]+", head):
        if head not in KINDS:
            raise ValueError(
                f"unknown target kind {head!r}: use one of " + ", ".join(f"{k}=" for k in KINDS)
            )
        if not rest.strip():
            raise ValueError(f"the target {text!r} names no {head}")
        return Target(head, rest.strip())
    return Target(None, text)


def frame_prefix(ref: str) -> str:
    """The prefix of the frame a reference belongs to: "e" for the page, "f1e" for frame 1."""
    return ref[: ref.index("e") + 1]
