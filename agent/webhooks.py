"""Webhooks for reviewers' tools: a POST when a request for approval is queued and when it is
decided, signed with HMAC-SHA256, sent by `agent worker`, retried with backoff, never in a
task's way.

Each notice is written to an outbox in the store, in the transaction that asks or decides, so
none is lost to a crash and none is sent for something that did not happen; a worker claims the
due ones (several workers never send one twice at once) and posts them:

    POST <[approvals] webhook>
    Content-Type: application/json
    X-Agent-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>" with the key>

    {"event": "approval.requested" | "approval.escalated" | "approval.decided", "sent_at": ...,
     "request": {...}}

A receiver recomputes the HMAC with the key (the variable `[approvals] webhook_key_env` names)
and refuses a stale `t`. A notice that fails (no answer, or not 2xx) is tried again after 1, 2,
4, ... seconds (at most 5 minutes apart), MAX_ATTEMPTS times in all, then kept as failed, with
why, in the outbox.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import httpx

from agent._db import Db

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    n INTEGER PRIMARY KEY, event TEXT NOT NULL, approval_id TEXT NOT NULL, made REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, due REAL NOT NULL, sent REAL, failed TEXT);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (sent, due);
"""
MAX_ATTEMPTS = 10
#: how long a worker holds the notices it claimed before another may take them
CLAIM_SECONDS = 30.0
BATCH = 20


def queue(db: Db, event: str, approval_id: str, ts: float) -> None:
    """Put a notice in the outbox, inside the caller's write transaction."""
    db.execute(
        "INSERT INTO outbox (event, approval_id, made, due) VALUES (?, ?, ?, ?)",
        (event, approval_id, ts, ts),
    )


def sign(key: bytes, body: bytes, at: int) -> str:
    """The signature header's value for `body` sent at `at`."""
    digest = hmac.new(key, f"{at}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={at},v1={digest}"


@dataclass(frozen=True)
class Webhook:
    url: str
    key: bytes


@dataclass(frozen=True)
class Sent:
    """What one round of delivery did."""

    delivered: int
    failed: int


async def deliver(
    hook: Webhook,
    client: httpx.AsyncClient,
    writing: Callable[[], AbstractContextManager[Db]],
    describe: Callable[[str], dict[str, Any] | None],
) -> Sent:
    """Post the notices due now. `writing` opens a write transaction on the store; `describe`
    gives a request's fields by its id (None if the inbox has none)."""
    now = time.time()
    with writing() as db:
        claimed = db.execute(
            "UPDATE outbox SET due = ? WHERE n IN (SELECT n FROM outbox WHERE sent IS NULL AND "
            "failed IS NULL AND due <= ? ORDER BY n LIMIT ?) RETURNING n, event, approval_id, "
            "attempts",
            (now + CLAIM_SECONDS, now, BATCH),
        ).fetchall()
    delivered = failed = 0
    for n, event, approval_id, attempts in sorted(claimed):
        request = describe(approval_id)
        body = json.dumps(
            {"event": event, "sent_at": now, "request": request}, ensure_ascii=False
        ).encode()
        at = int(time.time())
        try:
            answer = await client.post(
                hook.url,
                content=body,
                headers={
                    "Content-Type": "application/json",
                    "X-Agent-Signature": sign(hook.key, body, at),
                },
            )
            problem = None if answer.is_success else f"answered {answer.status_code}"
        except httpx.HTTPError as exc:
            problem = f"{type(exc).__name__}: {exc}"
        with writing() as db:
            if problem is None:
                db.execute("UPDATE outbox SET sent = ? WHERE n = ?", (time.time(), n))
                delivered += 1
                continue
            tries = attempts + 1
            if tries >= MAX_ATTEMPTS:
                db.execute(
                    "UPDATE outbox SET attempts = ?, failed = ? WHERE n = ?",
                    (tries, f"gave up after {tries} attempts: {problem}", n),
                )
            else:
                wait = min(2.0 ** (tries - 1), 300.0)
                db.execute(
                    "UPDATE outbox SET attempts = ?, due = ? WHERE n = ?",
                    (tries, time.time() + wait, n),
                )
            failed += 1
    return Sent(delivered, failed)
