"""The text of a document, page by page, with the headings that name its sections: what a
passage is cut from and cited by.

Text, Markdown, reStructuredText and code are read as they are (a page of their own); HTML has
its tags taken out, its headings kept as Markdown headings; a PDF gives one page per page, from
its text layer (`pypdfium2`): a scanned PDF, with no text layer, gives empty pages (the index
makes no passage of them; `--file` refuses such a PDF, saying why).
"""

from __future__ import annotations

import html.parser
import re
from dataclasses import dataclass
from pathlib import Path

from base.errors import ConfigError

#: what is read as text, by suffix (a `.rst.txt` is text too)
TEXT_SUFFIXES = frozenset(
    {".txt", ".md", ".markdown", ".rst", ".py", ".toml", ".yaml", ".yml", ".json", ".csv"}
)
HTML_SUFFIXES = frozenset({".html", ".htm"})
PDF_SUFFIXES = frozenset({".pdf"})
SUFFIXES = TEXT_SUFFIXES | HTML_SUFFIXES | PDF_SUFFIXES
#: the most bytes a text document may have (a PDF is read a page at a time)
MOST_BYTES = 50_000_000


@dataclass(frozen=True)
class Page:
    """A page's text (lines joined by "\\n"); `number` counts from 1 in a PDF, None elsewhere."""

    text: str
    number: int | None = None


def kind_of(path: Path) -> str | None:
    """ "text", "html" or "pdf"; None for a file this cannot read."""
    suffix = path.suffix.lower()
    if suffix in PDF_SUFFIXES:
        return "pdf"
    if suffix in HTML_SUFFIXES:
        return "html"
    if suffix in TEXT_SUFFIXES:
        return "text"
    return None


def pages(path: Path) -> list[Page]:
    """The pages of the document at `path` (one of another kind is read as text). Raises
    `ConfigError` for one that cannot be read (not UTF-8 text, too large, a damaged PDF)."""
    kind = kind_of(path)
    if kind == "pdf":
        return _pdf_pages(path)
    if path.stat().st_size > MOST_BYTES:
        raise ConfigError(
            f"{path} is {path.stat().st_size / 1e6:,.0f} MB, more than the "
            f"{MOST_BYTES // 1_000_000} MB of text a document may hold here"
        )
    try:
        text = path.read_bytes().decode("utf-8-sig")  # a byte order mark is not text
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror or exc}") from exc
    return [Page(html_text(text) if kind == "html" else _lines(text))]


def _lines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _pdf_pages(path: Path) -> list[Page]:
    import pypdfium2  # noqa: PLC0415 - loaded for PDFs only

    try:
        pdf = pypdfium2.PdfDocument(path)
    except (pypdfium2.PdfiumError, OSError) as exc:
        raise ConfigError(f"{path}: cannot be read as a PDF ({exc})") from exc
    found: list[Page] = []
    try:
        for number, page in enumerate(pdf, start=1):
            textpage = page.get_textpage()
            try:
                found.append(Page(_lines(textpage.get_text_range()), number))
            finally:
                textpage.close()
                page.close()
    finally:
        pdf.close()
    return found


class _Text(html.parser.HTMLParser):
    """An HTML page's text: blocks on lines of their own, headings as Markdown headings, what a
    browser does not show (scripts, styles) left out."""

    _BLOCKS = frozenset(
        {"p", "div", "br", "li", "tr", "pre", "section", "article", "table", "ul", "ol", "dd"}
    )
    _HIDDEN = frozenset({"script", "style", "template", "noscript", "head"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._HIDDEN:
            self._hidden += 1
        elif re.fullmatch(r"h[1-6]", tag):
            self.parts.append("\n\n" + "#" * int(tag[1]) + " ")
        elif tag in self._BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._HIDDEN:
            self._hidden = max(0, self._hidden - 1)
        elif re.fullmatch(r"h[1-6]", tag):
            self.parts.append("\n\n")
        elif tag in self._BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.parts.append(data)


def html_text(source: str) -> str:
    """The text of an HTML page, its headings as Markdown headings."""
    parser = _Text()
    parser.feed(source)
    parser.close()
    lines = [re.sub(r"[ \t\xa0]+", " ", line).strip() for line in "".join(parser.parts).split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"
