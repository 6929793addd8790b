"""`search_documents`: passages of the documents indexed (`agent index`, and files given with a
task that did not fit its model's window), each with the citation an answer quotes.

The index is opened once per process and folder, and shared by every task's calls: its vectors
are read into memory once, and again only when the index changed.
"""

from __future__ import annotations

import ast
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import Field

from base.errors import ConfigError, StoreError
from documents.index import Hit, Index
from tools.registry import Registry
from tools.tool import ToolContext, ToolError, tool

#: how much of a window (a few neighbouring passages, about 210 words) the model is shown
SHOWN = 2400

_OPEN: dict[Path, Index] = {}
_LOCK = threading.Lock()


def indexed(folder: Path) -> bool:
    """Whether `folder` holds an index (made by `agent index`)."""
    return (folder / "index.db").is_file()


def opened(folder: Path) -> Index:
    """The index in `folder`, opened once per process."""
    with _LOCK:
        if folder not in _OPEN:
            _OPEN[folder] = Index.open(folder)
        return _OPEN[folder]


def shown(hits: list[Hit]) -> str:
    """Hits as the model reads them: each with its citation first."""
    parts = []
    for n, hit in enumerate(hits, start=1):
        text = hit.text if len(hit.text) <= SHOWN else hit.text[:SHOWN] + " [...]"
        page = f", page {hit.page}" if hit.page is not None else ""
        parts.append(
            f"[{n}] [cite: {hit.cite}] {hit.path}{page}, section {hit.section!r}, lines "
            f"{hit.line_start}-{hit.line_end}\n{text}"
        )
    return "\n\n".join(parts)


_SHOWN_HIT = re.compile(
    r"^\[\d+\] \[cite: (?P<cite>[^\]]+)\] (?P<path>.+?)(?:, page (?P<page>\d+))?, "
    r"section (?P<section>'.*'|\".*\"), lines (?P<lines>\d+-\d+)$",
    re.MULTILINE,
)
_CITED = re.compile(r"\[cite: ([^\]]+)\]")


@dataclass(frozen=True)
class Citation:
    """A passage an answer cites, as the search that found it said where it is."""

    cite: str
    path: str
    page: int | None
    section: str
    lines: str


def cited(answer: str, results: Iterable[str]) -> list[Citation]:
    """The passages `answer` cites ([cite: ...]) that one of the searches' `results` returned,
    in the order the answer first cites them; a cite no search returned is left out."""
    found: dict[str, Citation] = {}
    for result in results:
        for m in _SHOWN_HIT.finditer(result):
            page = int(m["page"]) if m["page"] else None
            try:
                section = str(ast.literal_eval(m["section"]))
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                continue  # not a line this wrote
            found.setdefault(m["cite"], Citation(m["cite"], m["path"], page, section, m["lines"]))
    wanted = dict.fromkeys(_CITED.findall(answer))
    return [found[c] for c in wanted if c in found]


@tool(touches="read", needs_documents=True, timeout=60.0)
def search_documents(
    ctx: ToolContext,
    query: Annotated[str, Field(min_length=1, max_length=1000)],
    k: Annotated[int, Field(ge=1, le=20)] = 5,
) -> str:
    """Search the documents indexed here (files given with tasks that were too long to show,
    folders indexed with `agent index`) by meaning and by keywords. Each passage comes with
    its citation, e.g. [cite: guide.pdf:p.3:10-24]: when your answer uses a passage, quote its
    [cite: ...] beside what it supports.

    Args:
        query: what to look for, in words (a question, or the terms to find).
        k: how many passages to return.
    """
    if ctx.library is None or not indexed(ctx.library):
        raise ToolError("no documents are indexed here: `agent index PATH` indexes a folder")
    try:
        hits = opened(ctx.library).search(query, k)
    except (ConfigError, StoreError) as exc:
        raise ToolError(f"the documents index cannot be searched: {exc}") from exc
    if not hits:
        return f"no passage matches {query!r}"
    return shown(hits)


registry = Registry([search_documents])
