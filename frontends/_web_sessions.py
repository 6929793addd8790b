"""The web inbox's sign-in sessions: kept in this process's memory, by the digest of their
cookie; a restart, a revoked token or eight idle hours ends one."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass, field

from starlette.requests import Request

from agent import reviewers
from agent.store import Store

SESSION_COOKIE = "agent_session"
#: the sign-in form's own CSRF token, held in a cookie until a session replaces it
LOGIN_COOKIE = "agent_login"
#: a session unused this long is over
IDLE = 8 * 3600.0


@dataclass
class Session:
    reviewer: str
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    used: float = field(default_factory=time.monotonic)


class Sessions:
    """The signed-in browsers, by the digest of their cookie (the cookie itself is kept
    nowhere)."""

    def __init__(self) -> None:
        self._by_digest: dict[str, Session] = {}

    def open(self, reviewer: str) -> tuple[str, Session]:
        cookie = secrets.token_urlsafe(32)
        session = self._by_digest[_digest(cookie)] = Session(reviewer)
        return cookie, session

    def find(self, request: Request, store: Store) -> Session | None:
        """The request's session, if it has one that is live and whose reviewer may still
        decide."""
        digest = _digest(request.cookies.get(SESSION_COOKIE, ""))
        session = self._by_digest.get(digest)
        if session is None:
            return None
        now = time.monotonic()
        if now - session.used > IDLE or not reviewers.active(store.reader(), session.reviewer):
            del self._by_digest[digest]
            return None
        session.used = now
        return session

    def close(self, request: Request) -> None:
        self._by_digest.pop(_digest(request.cookies.get(SESSION_COOKIE, "")), None)


def _digest(cookie: str) -> str:
    return hashlib.sha256(cookie.encode()).hexdigest()
