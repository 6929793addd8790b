"""Reading what can be read of a damaged event store: the damage found, the rows around it, and
how to recover the rest."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from agent._db import Db


def recovery(path: Path) -> str:
    """How to get back what can be read of a damaged store at `path`."""
    return (
        f"Recover what is readable: sqlite3 {path} .recover | sqlite3 {path}.recovered "
        f"(then move {path}.recovered in its place), or put back a backup."
    )


def damaged(exc: sqlite3.DatabaseError) -> bool:
    """Whether SQLite found a page of the file damaged (not a busy or missing database)."""
    return getattr(exc, "sqlite_errorname", "") == "SQLITE_CORRUPT" or "malformed" in str(exc)


#: how many queries a read round a damaged part may take before it gives the rest up as lost
_SALVAGE_QUERIES = 4000


def salvage(
    db: Db, query: str, args: tuple[object, ...], low: int
) -> tuple[list[tuple[Any, ...]], list[tuple[int, int]]]:
    """The rows of `query` (whose last two parameters are a range of keys) that can be read
    from `low` on, and the ranges of keys that cannot: a failing range is halved until what
    fails is a single key (or the queries run out)."""
    high = 2**62
    rows: list[tuple[Any, ...]] = []
    lost: list[tuple[int, int]] = []
    ranges, asked = [(low, high)], 0
    while ranges:
        first, last = ranges.pop()
        asked += 1
        try:
            rows.extend(db.execute(query, (*args, first, last)).fetchall())
        except sqlite3.DatabaseError:
            if first == last or asked >= _SALVAGE_QUERIES:
                lost.append((first, last))
                continue
            middle = (first + last) // 2
            ranges += [(middle + 1, last), (first, middle)]
    return rows, merged(lost)


def merged(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for first, last in sorted(ranges):
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(last, merged[-1][1]))
        else:
            merged.append((first, last))
    return merged


def ranges_text(ranges: list[tuple[int, int]]) -> str:
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges) or "none"
