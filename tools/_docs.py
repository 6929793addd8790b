"""What a tool's author wrote for the model, read from its docstring: the description (summary
and body, unwrapped, within `DESCRIPTION_LIMIT`) and each parameter's, in Google, Sphinx (reST)
or NumPy style (by `docstring_parser`); and, as warnings for the author at load, what is missing
from it or names nothing."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import docstring_parser

#: the most of a docstring a model is shown as the tool's description (it goes with every call)
DESCRIPTION_LIMIT = 1024
_LIST_ITEM = re.compile(r"^\s*([-*•]|\d+[.)])\s")


@dataclass(frozen=True)
class Docs:
    description: str
    params: dict[str, str]
    warnings: tuple[str, ...]


def read_docs(fn: Callable[..., Any], parameters: Iterable[str]) -> Docs:
    """The description and parameter docs of `fn`, and warnings about its docstring for the
    parameters the model fills in (`parameters`)."""
    doc = inspect.getdoc(fn) or ""
    parsed = docstring_parser.parse(doc)
    text = parsed.short_description or ""
    if parsed.long_description:
        text += ("\n\n" if parsed.blank_after_short_description else "\n") + parsed.long_description
    description = _unwrapped(text)
    params = {p.arg_name: " ".join(p.description.split()) for p in parsed.params if p.description}
    warnings: list[str] = []
    if not doc.strip():
        warnings.append("it has no docstring, so the model sees only its name: say what it does")
    elif len(description) > DESCRIPTION_LIMIT:
        warnings.append(
            f"its description is {len(description):,} characters; the model is shown the first "
            f"{DESCRIPTION_LIMIT:,}"
        )
        description = description[: DESCRIPTION_LIMIT - 1].rstrip() + "…"
    wanted = list(parameters)
    if doc.strip():
        warnings += [
            f"parameter {name!r} is not documented: the model sees only its name and type"
            for name in wanted
            if name not in params
        ]
    warnings += [
        f"the docstring documents {name!r}, which is not a parameter (misspelt?)"
        for name in params
        if name not in wanted
    ]
    return Docs(description, params, tuple(warnings))


def _unwrapped(text: str) -> str:
    """Paragraphs as single lines (list items kept on lines of their own)."""
    paragraphs = []
    for paragraph in re.split(r"\n\s*\n", text.strip()):
        lines: list[str] = []
        for line in paragraph.splitlines():
            if lines and not _LIST_ITEM.match(line):
                lines[-1] += " " + line.strip()
            else:
                lines.append(line.strip())
        paragraphs.append("\n".join(lines))
    return "\n\n".join(p for p in paragraphs if p)
