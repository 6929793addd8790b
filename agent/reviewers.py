"""Named reviewers and their tokens, for deciding through the HTTP API (`agent serve`).

A token is made once, shown once, and kept only as its SHA-256: whoever reads the store learns
no token. It is long and random, so its digest is looked up directly (nothing to guess a digit
at a time). A revoked reviewer's token answers no more; their past decisions keep their name.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass

from agent._db import Db
from base.errors import ConfigError

SCHEMA = """
CREATE TABLE IF NOT EXISTS reviewers (
    name TEXT PRIMARY KEY, token_hash TEXT NOT NULL UNIQUE, created REAL NOT NULL, revoked REAL);
"""
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
#: what every token starts with, so that one pasted in the wrong place is recognised
PREFIX = "rvw_"


@dataclass(frozen=True)
class Reviewer:
    name: str
    created: float
    revoked: float | None


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def add(db: Db, name: str) -> str:
    """Make `name` a reviewer, inside the caller's write transaction; their token (shown once,
    kept only as its digest). Raises `ConfigError` for a bad or taken name."""
    if not NAME.fullmatch(name):
        raise ConfigError(
            f"{name!r} is not a reviewer's name: letters, digits and . _ @ -, up to 64"
        )
    if db.execute("SELECT 1 FROM reviewers WHERE name = ?", (name,)).fetchone() is not None:
        raise ConfigError(
            f"there is a reviewer {name} already (revoked ones keep their name, for the record): "
            "choose another name"
        )
    token = PREFIX + secrets.token_urlsafe(32)
    db.execute("INSERT INTO reviewers VALUES (?, ?, ?, NULL)", (name, _digest(token), time.time()))
    return token


def revoke(db: Db, name: str) -> None:
    """Refuse `name`'s token from now on, inside the caller's write transaction. Raises
    `ConfigError` for no such reviewer, or one revoked already."""
    row = db.execute("SELECT revoked FROM reviewers WHERE name = ?", (name,)).fetchone()
    if row is None:
        raise ConfigError(f"no reviewer is named {name} (`agent reviewers list`)")
    if row[0] is not None:
        raise ConfigError(f"{name}'s token was revoked already")
    db.execute("UPDATE reviewers SET revoked = ? WHERE name = ?", (time.time(), name))


def listing(db: Db) -> list[Reviewer]:
    rows = db.execute("SELECT name, created, revoked FROM reviewers ORDER BY created").fetchall()
    return [Reviewer(*row) for row in rows]


def who(db: Db, token: str) -> str | None:
    """The reviewer whose token `token` is, if it is one and not revoked."""
    if not token.startswith(PREFIX):
        return None
    row = db.execute(
        "SELECT name FROM reviewers WHERE token_hash = ? AND revoked IS NULL", (_digest(token),)
    ).fetchone()
    return None if row is None else str(row[0])


def active(db: Db, name: str) -> bool:
    """Whether `name` is a reviewer whose token was not revoked."""
    row = db.execute(
        "SELECT 1 FROM reviewers WHERE name = ? AND revoked IS NULL", (name,)
    ).fetchone()
    return row is not None
