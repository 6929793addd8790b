"""`agent serve`: the reviewers' HTTP API, on the same store as every other command.

    GET  /api/requests                      the requests waiting, oldest first
                                            (?task=ID&tool=T&risk=R&limit=N)
    GET  /api/requests/{approval_id}        one request, with its task's status
    POST /api/requests/{approval_id}/decision
         {"approved": true|false, "call_hash": "...", "reason": "...",
          "edit": {...}, "always": {"scope": "task"|"project", "digest": "..."}}
    GET  /api/requests/{approval_id}/rule?scope=task|project
                                            the rule "always allow" would save, and its digest
    GET  /api/stream                        server-sent events: `inbox`, with the requests
                                            waiting (as /api/requests), whenever they change

Every call carries `Authorization: Bearer TOKEN`, a token from `agent reviewers add`; a decision
is recorded with that reviewer's name and the address it came from. The web inbox (`/`, see
`web_inbox`) is served beside the API, on the same data. A decision names the hash
of the call the reviewer was shown, as everywhere: one on another request, one decided already,
one that expired, or one that lost a race with another reviewer is refused (409) saying what is
pending now, and records nothing. The API's reads also accept the web inbox's session cookie
(its live list reads the stream); a decision through the API takes only a token, so no other
site can decide through a reviewer's browser (the web inbox's own forms carry a CSRF token).
The server listens on loopback unless told otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from rich.console import Console
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from agent import inbox, reviewers
from agent.always import SCOPES, RuleRefused, Scope, propose
from agent.approvals import NothingToApprove, NotPending, Seen
from agent.config import Config, EngineConfig
from agent.events import ApprovalGiven
from agent.state import TaskState
from agent.store import Store
from base.errors import ConfigError, TaskNotFound
from frontends import web_inbox
from frontends._deciding import Refused, decide_request
from frontends._web_sessions import Sessions
from frontends.inbox_commands import as_json

DEFAULT_PORT = 8717
#: how often the stream looks for a change (another process's request or decision)
STREAM_POLL = 0.25


def add_serve_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    parser = sub.add_parser(
        "serve",
        parents=[common],
        help="the reviewers' web inbox and HTTP API (tokens: agent reviewers add)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument(
        "--port",
        type=int,
        choices=range(1, 65536),
        metavar="PORT",
        default=DEFAULT_PORT,
        help=f"({DEFAULT_PORT})",
    )
    parser.add_argument(
        "--public",
        action="store_true",
        help="allow an address other than loopback (put TLS in front of it)",
    )


def serve_command(args: argparse.Namespace, config: Config, out: Console) -> int:
    import uvicorn  # noqa: PLC0415 - only for this command

    if not args.public and not _loopback(args.host):
        raise ConfigError(
            f"{args.host} is not a loopback address: give --public to serve beyond this host "
            "(behind TLS: tokens travel in every request)"
        )
    with Store.open() as store:
        if not reviewers.listing(store.reader()):
            out.print("[yellow]no reviewers yet[/]: agent reviewers add NAME makes one")
        # Named `localhost`, not 127.0.0.1, where the tasks' deployments are published: a
        # browser sends a site's cookies to every port of its host name.
        shown_host = "localhost" if args.host in ("127.0.0.1", "localhost") else args.host
        out.print(f"reviewers' inbox on http://{shown_host}:{args.port}/ (sign in with a token)")
        out.print(f"reviewers' API on http://{args.host}:{args.port}/api/requests")
        engine = config.engine if config.engine.kind == "temporal" else None
        uvicorn.run(app(store, engine), host=args.host, port=args.port, log_level="warning")
    return 0


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        raise ConfigError(f"--host {host!r} is not an IP address (or localhost)") from None


def app(store: Store, engine: EngineConfig | None = None) -> Starlette:
    """The API over `store`, and the web inbox beside it. SQLite is called inline: each call is
    a local read or write of microseconds, and the event loop is this server's only thread."""
    api = _Api(store, Sessions(), engine)
    return Starlette(
        routes=[
            Route("/api/stream", api.stream),
            Route("/api/requests", api.listing),
            Route("/api/requests/{approval_id}", api.one),
            Route("/api/requests/{approval_id}/rule", api.rule),
            Route("/api/requests/{approval_id}/decision", api.decision, methods=["POST"]),
            *web_inbox.routes(store, api.sessions, engine),
        ]
    )


class _Api:
    """The API's handlers, over one store."""

    def __init__(self, store: Store, sessions: Sessions, engine: EngineConfig | None) -> None:
        self.store = store
        self.sessions = sessions
        #: where a decision on a task of the Temporal engine is sent
        self.engine = engine

    def reviewer(self, request: Request, *, reading: bool = True) -> str | JSONResponse:
        """Who calls: a token's reviewer; for reading, also the web inbox's signed-in one."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            name = reviewers.who(self.store.reader(), token.strip())
        elif reading and (session := self.sessions.find(request, self.store)) is not None:
            name = session.reviewer
        else:
            name = None
        if name is None:
            return _error(401, "give a reviewer's token: Authorization: Bearer TOKEN")
        return name

    async def listing(self, request: Request) -> JSONResponse:
        if isinstance(who := self.reviewer(request), JSONResponse):
            return who
        query = request.query_params
        try:
            limit = int(query.get("limit", "100"))
            task = self.store.resolve(query["task"]) if "task" in query else None
        except (ValueError, TaskNotFound) as exc:
            return _error(400, str(exc))
        found = inbox.waiting(
            self.store.reader(),
            task=task,
            tools=query.getlist("tool"),
            risks=query.getlist("risk"),
            limit=limit,
        )
        return JSONResponse([as_json(w) for w in found])

    async def one(self, request: Request) -> JSONResponse:
        if isinstance(who := self.reviewer(request), JSONResponse):
            return who
        found = inbox.find(self.store.reader(), request.path_params["approval_id"])
        if found is None:
            return _error(404, "no such request")
        state = TaskState.from_store(self.store, found.task_id)
        decided = inbox.decision(self.store.reader(), found.approval_id)
        return JSONResponse(
            {
                **as_json(found),
                "task_status": state.status,
                "task": state.task,
                "decided": decided is not None,
            }
        )

    async def decision(self, request: Request) -> JSONResponse:
        if isinstance(who := self.reviewer(request, reading=False), JSONResponse):
            return who
        try:
            body = _Decision.model_validate_json(await request.body())
        except ValidationError as exc:
            said = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            return _error(
                400,
                'send {"approved": true|false, "call_hash": "...", "reason": "..."} (and '
                'optionally "edit": {...} or "always": {"scope": ..., "digest": ...}) '
                f"({said})",
            )
        found = inbox.find(self.store.reader(), request.path_params["approval_id"])
        if found is None:
            return _error(404, "no such request")
        decided = decide_request(
            self.store,
            found,
            body.call_hash,
            approved=body.approved,
            reason=body.reason,
            reviewer=who,
            origin=f"http {request.client.host if request.client else '?'}",
            edit=body.edit,
            always=(body.always.scope, body.always.digest) if body.always else None,
            engine=self.engine,
        )
        if isinstance(decided, Refused):
            return _error(decided.status, decided.message, code=decided.code)
        return JSONResponse(
            {
                "approval_id": decided.approval_id,
                "approved": decided.approved,
                "reviewer": decided.reviewer,
                "task_id": found.task_id,
                "edited": decided.edited,
                # one approval of several: the request waits for more reviewers
                "final": not isinstance(decided, ApprovalGiven),
            }
        )

    async def rule(self, request: Request) -> JSONResponse:
        if isinstance(who := self.reviewer(request), JSONResponse):
            return who
        found = inbox.find(self.store.reader(), request.path_params["approval_id"])
        if found is None:
            return _error(404, "no such request")
        scope = request.query_params.get("scope", "task")
        if scope not in SCOPES:
            return _error(400, "scope is task or project")
        state = TaskState.from_store(self.store, found.task_id)
        try:
            proposal = propose(
                self.store,
                state,
                Seen(found.approval_id, found.call_hash),
                scope="task" if scope == "task" else "project",
                reviewer=who,
            )
        except (NotPending, NothingToApprove, RuleRefused) as exc:
            return _error(409, exc.message, code=str(exc.code))
        return JSONResponse(
            {
                "rule": proposal.rule,
                "path": str(proposal.path),
                "scope": proposal.scope,
                "digest": proposal.digest,
            }
        )

    async def stream(self, request: Request) -> Response:
        if isinstance(who := self.reviewer(request), JSONResponse):
            return who

        async def changes() -> AsyncIterator[str]:
            seen: object = None
            while not await request.is_disconnected():
                if isinstance(self.reviewer(request), JSONResponse):
                    return  # revoked, signed out, or idle too long: the stream ends
                marker = inbox.marker(self.store.reader())
                if marker != seen:
                    seen = marker
                    found = [as_json(w) for w in inbox.waiting(self.store.reader(), limit=100)]
                    yield f"event: inbox\ndata: {json.dumps(found)}\n\n"
                await asyncio.sleep(STREAM_POLL)

        return StreamingResponse(changes(), media_type="text/event-stream")


class _Always(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    scope: Scope
    digest: str = Field(min_length=1, max_length=64)


class _Decision(BaseModel):
    """A decision's body, as a reviewer's client sends it."""

    model_config = ConfigDict(extra="forbid", strict=True)

    approved: bool
    call_hash: str = Field(min_length=1, max_length=64)
    reason: str = Field("", max_length=2000)
    #: arguments to change before approving (each replaces the model's)
    edit: dict[str, Any] | None = None
    #: approve, and save the rule GET .../rule showed (its digest): calls exactly like this one
    #: run unasked from then on
    always: _Always | None = None

    @model_validator(mode="after")
    def _one_decision(self) -> _Decision:
        if self.always is not None and (not self.approved or self.edit is not None):
            raise ValueError("always approves the call as it is: not with approved false or edit")
        return self


def _error(status: int, message: str, *, code: str = "") -> JSONResponse:
    return JSONResponse({"error": message, "code": code or str(status)}, status_code=status)
