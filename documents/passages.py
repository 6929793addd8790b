"""Passages: a document cut into pieces a model reads whole and an embedder sees whole, each
with what cites it (its file, page, section and lines).

A passage is whole paragraphs (blocks between blank lines) up to about `WORDS` words; a longer
paragraph is cut at its lines, and a longer line at its words. Its section is the last heading
above it: a Markdown heading (`# Title`), a reStructuredText title (a line underlined with
`=`, `-`, `~`...), or an object a reStructuredText page describes (`.. function:: name(...)`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from documents.extract import Page

#: about how many words a passage holds (most passages then fit the embedder's 256 tokens:
#: prose takes about 1.3 tokens a word, code and markup up to 2.5)
WORDS = 110
#: the most characters a passage holds (a line with few spaces, minified JSON say, is cut
#: at this many)
CHARS = 2000

_MARKDOWN = re.compile(r"^#{1,6}\s+(\S.*)$")
_UNDERLINE = re.compile(r"^([=\-~^\"'`#*+.:_])\1{2,}\s*$")
_DESCRIBED = re.compile(
    r"^\.\. (?:py:)?(?:function|class|method|decorator|attribute|data|exception|module|"
    r"classmethod|staticmethod|envvar|opcode|cmdoption|option|describe)::\s+(\S.*)$"
)
_ROLES = re.compile(r":[a-z:]+:`~?([^`<]+?)(?:\s*<[^>]*>)?`")


@dataclass(frozen=True)
class Passage:
    """A passage of a document: its text, and where it is (lines count from 1 in its page)."""

    text: str
    page: int | None
    section: str
    line_start: int
    line_end: int


def headings(lines: list[str]) -> dict[int, str]:
    """The lines (0-based) where a section begins, with its title."""
    found: dict[int, str] = {}
    for i, line in enumerate(lines):
        stripped = line.strip()
        if (m := _MARKDOWN.match(stripped)) or (m := _DESCRIBED.match(stripped)):
            found[i] = _plain(m.group(1))
        elif (
            i > 0
            and _UNDERLINE.match(stripped)
            and lines[i - 1].strip()
            and not _UNDERLINE.match(lines[i - 1].strip())
            and len(stripped) >= len(lines[i - 1].strip()) * 0.8
        ):
            found[i - 1] = _plain(lines[i - 1].strip())
    return found


def _cut(line: str) -> Iterator[str]:
    """A line too long for a passage, a passage's worth at a time: WORDS words, at most CHARS
    characters."""
    words = line.split()
    for start in range(0, len(words), WORDS):
        piece = " ".join(words[start : start + WORDS])
        for at in range(0, len(piece), CHARS):
            yield piece[at : at + CHARS]


def _plain(title: str) -> str:
    """A title without reStructuredText's roles (`:mod:\\`functools\\``) and rules (`---`)."""
    return _ROLES.sub(r"\1", title).replace(" --- ", " — ").strip()[:200]


def passages(page: Page, title: str = "") -> Iterator[Passage]:
    """The passages of `page`, in order; `title` is the section of what precedes any heading."""
    lines = page.text.split("\n")
    titles = headings(lines)
    section = title
    block: list[tuple[int, str]] = []  # (line number from 1, text) of the passage being made
    words = chars = 0

    def made() -> Passage | None:
        kept = [i for i, (_, text) in enumerate(block) if text.strip()]
        if not kept:
            return None
        lines = block[kept[0] : kept[-1] + 1]  # no blank line at either end
        text = "\n".join(t for _, t in lines)
        return Passage(text, page.number, section, lines[0][0], lines[-1][0])

    for i, line in enumerate(lines):
        if i in titles:  # a section begins: what came before is a passage of its own
            if (done := made()) is not None:
                yield done
            block, words, chars, section = [], 0, 0, titles[i]
        count = len(line.split())
        if count > WORDS or len(line) > CHARS:  # a line too long on its own: cut by itself
            if (done := made()) is not None:
                yield done
            for piece in _cut(line):
                yield Passage(piece, page.number, section, i + 1, i + 1)
            block, words, chars = [], 0, 0
            continue
        paragraph_ends = not line.strip()
        too_long = words + count > WORDS * 1.3 or chars + len(line) > CHARS
        if too_long or (paragraph_ends and words >= WORDS):
            if (done := made()) is not None:
                yield done
            block, words, chars = [], 0, 0
        if block or line.strip():
            block.append((i + 1, line))
            words, chars = words + count, chars + len(line) + 1
    if (done := made()) is not None:
        yield done
