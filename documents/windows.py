"""Windows: what a search finds and returns, a few neighbouring passages of one file joined.

Passages are cut at every heading, and reference documentation has a heading per function: a
quarter of the Python documentation's passages are under 20 words (a label, a signature),
too little for either ranking to know what they are about. A window joins a file's passages
in order, across headings but never across pages, until it holds at least `LEAST_WORDS` words
and the next would take it past `MOST_WORDS`, or it holds `MOST_PASSAGES`. Over the Python
documentation (`bench/retrieval.py`) windows of about 210 words found the gold line in the
first five for 0.69 of the questions, against 0.625 for the passages alone.

A window is named by its first passage's id and covers the ids up to its last (a file's
passages have consecutive ids: they are written in one transaction). Its keywords are searched
in `window_words` (its document's title, all its sections' titles, its text); its vector score
is the best of its passages' (their vectors stay as they are embedded).
"""

from __future__ import annotations

import sqlite3

#: a window is not closed before it holds this many words ...
LEAST_WORDS = 150
#: ... and is closed before the next passage would take it past this many
MOST_WORDS = 312
#: the most passages one window joins
MOST_PASSAGES = 4

SCHEMA = """
CREATE TABLE IF NOT EXISTS windows (
    first INTEGER PRIMARY KEY, last INTEGER NOT NULL, path TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS windows_of ON windows (path);
CREATE VIRTUAL TABLE IF NOT EXISTS window_words USING fts5(
    title, sections, text, tokenize='porter unicode61');
"""


def grouped(passages: list[tuple[int, int | None, int]]) -> list[tuple[int, int]]:
    """The windows of one file's passages, given as (id, page, words) in order: (first id, last
    id) of each."""
    windows: list[tuple[int, int]] = []
    first = last = page = None
    words = members = 0
    for pid, on_page, count in passages:
        full = words >= LEAST_WORDS and words + count > MOST_WORDS
        if first is not None and (full or members >= MOST_PASSAGES or on_page != page):
            assert last is not None
            windows.append((first, last))
            first = None
        if first is None:
            first, page, words, members = pid, on_page, 0, 0
        last, words, members = pid, words + count, members + 1
    if first is not None and last is not None:
        windows.append((first, last))
    return windows


def make(db: sqlite3.Connection, path: str) -> int:
    """Make the windows of the file `path`'s passages (in the caller's transaction), in place
    of any it had; how many."""
    drop(db, path)
    rows = db.execute(
        "SELECT id, page, title, section, text FROM passages WHERE path = ? ORDER BY id", (path,)
    ).fetchall()
    texts = {int(r[0]): r for r in rows}
    spans = grouped([(int(r[0]), r[1], len(str(r[4]).split())) for r in rows])
    for first, last in spans:
        members = [texts[i] for i in range(first, last + 1)]
        sections = " · ".join(dict.fromkeys(str(m[3]) for m in members))
        db.execute("INSERT INTO windows VALUES (?, ?, ?)", (first, last, path))
        db.execute(
            "INSERT INTO window_words (rowid, title, sections, text) VALUES (?, ?, ?, ?)",
            (first, members[0][2], sections, "\n\n".join(str(m[4]) for m in members)),
        )
    return len(spans)


def drop(db: sqlite3.Connection, path: str) -> None:
    """Remove the file `path`'s windows (in the caller's transaction)."""
    db.execute(
        "DELETE FROM window_words WHERE rowid IN (SELECT first FROM windows WHERE path = ?)",
        (path,),
    )
    db.execute("DELETE FROM windows WHERE path = ?", (path,))


def missing(db: sqlite3.Connection) -> list[str]:
    """The files whose passages have no windows (an index made before there were any)."""
    rows = db.execute(
        "SELECT DISTINCT path FROM passages WHERE path NOT IN (SELECT path FROM windows)"
    ).fetchall()
    return [str(r[0]) for r in rows]
