"""The web inbox: the reviewers' inbox in a browser, served by `agent serve` beside its API.

    GET  /login, POST /login    sign in with a reviewer's token (from `agent reviewers add`)
    POST /logout
    GET  /                      the requests waiting, oldest first (?task=&tool=&risk=), live
    GET  /rows                  the list's rows alone (what the page fetches when it changes)
    GET  /requests/{id}         one request: why it was asked, its preview, the task's last
                                events, and (while it waits) the form that decides it
    POST /requests/{id}         approve, approve with the arguments as edited, deny; or
                                always allow calls like it (the rule is shown first, and
                                saved only when the reviewer presses "Save this rule")

A token signs a reviewer in once; the browser then holds only a session cookie (HttpOnly,
SameSite=Strict), kept in this process's memory: a restart, a revoked token or eight idle hours
sign everyone out. Every form that changes something carries the session's CSRF token and is
refused when the browser says it came from another site. Pages run no inline script and may not
be framed. Everything from a model, a page or a tool passes the one neutraliser (`in_html`), so
nothing in a request can change what the reviewer sees.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from hmac import compare_digest
from typing import Any
from urllib.parse import urlsplit

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from agent import inbox, reviewers
from agent.always import Scope
from agent.approvals import NothingToApprove, NotPending, Seen, named_pending
from agent.config import EngineConfig
from agent.inbox import Waiting
from agent.state import TaskState
from agent.store import Store
from base.errors import TaskNotFound
from frontends._deciding import Refused, decide_request
from frontends._web_assets import SCRIPT, STYLE
from frontends._web_pages import (
    HEADERS,
    inbox_body,
    listed_rows,
    login_page,
    page,
    request_page,
    rule_page,
)
from frontends._web_sessions import LOGIN_COOKIE, SESSION_COOKIE, Session, Sessions
from frontends.screen import in_html

Handler = Callable[[Request], Awaitable[Response]]


def routes(store: Store, sessions: Sessions, engine: EngineConfig | None = None) -> list[Route]:
    """The web inbox's pages over `store`, signed in through `sessions`."""

    def signed_in(page: Callable[[Request, Session], Awaitable[Response]]) -> Handler:
        async def handler(request: Request) -> Response:
            session = sessions.find(request, store)
            if session is None and request.url.path == "/rows":
                return HTMLResponse("", status_code=401)  # the page's script reloads it
            if session is None:
                return RedirectResponse("/login", status_code=303)
            return await page(request, session)

        return handler

    async def login_form(request: Request) -> Response:
        return login_page(request, status=200)

    async def login(request: Request) -> Response:
        form = await request.form()
        expected = request.cookies.get(LOGIN_COOKIE, "")
        if not _same_site(request):
            said = (
                f"Sign-in refused: the page's origin ({request.headers.get('origin')}) is not "
                f"this server's ({request.headers.get('host')}). Behind a proxy, pass the "
                "Host header through."
            )
            return login_page(request, status=403, said=said)
        if not expected or not _matches(form, expected):
            return login_page(request, status=403, said="Sign-in refused: reload this page.")
        name = reviewers.who(store.reader(), str(form.get("token", "")).strip())
        if name is None:
            return login_page(request, status=401, said="That is not a reviewer's token.")
        cookie, _ = sessions.open(name)
        answer = RedirectResponse("/", status_code=303)
        answer.set_cookie(
            SESSION_COOKIE,
            cookie,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        answer.delete_cookie(LOGIN_COOKIE)
        return answer

    async def logout(request: Request, session: Session) -> Response:
        if not _same_site(request) or not _matches(await request.form(), session.csrf):
            return page("Refused", "<p>Sign-out refused: reload the page.</p>", None, 403)
        sessions.close(request)
        answer = RedirectResponse("/login", status_code=303)
        answer.delete_cookie(SESSION_COOKIE)
        return answer

    async def listing(request: Request, session: Session) -> Response:
        found = _listed(request, store)
        shown = found if isinstance(found, str) else listed_rows(found)
        return page("Inbox", inbox_body(request, shown), session)

    async def rows(request: Request, session: Session) -> Response:
        found = _listed(request, store)
        return HTMLResponse(
            found if isinstance(found, str) else listed_rows(found), headers=HEADERS
        )

    async def one(request: Request, session: Session) -> Response:
        found = inbox.find(store.reader(), request.path_params["approval_id"])
        if found is None:
            return page("Not found", "<p>No such request.</p>", session, 404)
        return request_page(store, found, session)

    async def decision(request: Request, session: Session) -> Response:
        form = await request.form()
        if not _same_site(request) or not _matches(form, session.csrf):
            return page("Refused", "<p>Refused: reload the page and decide again.</p>", None, 403)
        found = inbox.find(store.reader(), request.path_params["approval_id"])
        if found is None:
            return page("Not found", "<p>No such request.</p>", session, 404)
        origin = f"http {request.client.host if request.client else '?'}"
        return _decided(store, found, session, form, (origin, engine))

    async def script(request: Request) -> Response:
        return Response(SCRIPT, media_type="text/javascript", headers=HEADERS)

    async def style(request: Request) -> Response:
        return Response(STYLE, media_type="text/css", headers=HEADERS)

    return [
        Route("/login", login_form),
        Route("/login", login, methods=["POST"]),
        Route("/logout", signed_in(logout), methods=["POST"]),
        Route("/", signed_in(listing)),
        Route("/rows", signed_in(rows)),
        Route("/requests/{approval_id}", signed_in(one)),
        Route("/requests/{approval_id}", signed_in(decision), methods=["POST"]),
        Route("/static/inbox.js", script),
        Route("/static/inbox.css", style),
    ]


def _decided(
    store: Store,
    found: Waiting,
    session: Session,
    form: FormData,
    where: tuple[str, EngineConfig | None],
) -> Response:
    """The request's page once the reviewer's form is acted on: approve, approve with an edit,
    deny; always allow (the rule is shown, and saved only when the reviewer confirms it).
    `where`: the request's origin, and the engine a Temporal task's decision is sent to."""
    origin, engine = where
    action = str(form.get("action", ""))
    call_hash = str(form.get("call_hash", ""))
    edit: dict[str, Any] | None = None
    if action in ("approve", "edit", "always"):
        state = TaskState.from_store(store, found.task_id)
        try:  # decided meanwhile, or another request shown: said as `decide` says it
            named_pending(store, state, Seen(found.approval_id, call_hash))
        except (NotPending, NothingToApprove) as exc:
            refused = Refused(409, exc.message, str(exc.code))
            return request_page(store, found, session, refused)
        call = state.awaiting
        original = call.arguments if call is not None and call.arguments else {}
        changed = _changes(str(form.get("arguments", "")), original)
        if isinstance(changed, str):
            return request_page(store, found, session, Refused(400, changed, "edit"))
        if action != "edit" and changed:
            said = (
                "You changed the arguments: press “Approve with my edit” to approve them as "
                "changed, or reload the page to decide on them as asked."
            )
            return request_page(store, found, session, Refused(400, said, "edit"))
        if action == "always":
            return rule_page(
                store, found, session, scope=_scope(form), call_hash=str(form.get("call_hash", ""))
            )
        edit = changed if action == "edit" else None
    elif action not in ("deny", "always-save"):
        return request_page(store, found, session, Refused(400, "Choose a decision.", "form"))
    scope = _scope(form)
    outcome = decide_request(
        store,
        found,
        call_hash,
        approved=action != "deny",
        reason=str(form.get("reason", "")),
        reviewer=session.reviewer,
        origin=origin,
        edit=edit,
        always=(scope, str(form.get("digest", ""))) if action == "always-save" else None,
        engine=engine,
    )
    return request_page(store, found, session, outcome)


def _scope(form: FormData) -> Scope:
    return "project" if form.get("scope") == "project" else "task"


def _same_site(request: Request) -> bool:
    """Whether the browser says the request came from this site's own page (a browser that
    says nothing is left to the CSRF token)."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    return origin is None or urlsplit(origin).netloc == request.headers.get("host")


def _matches(form: FormData, expected: str) -> bool:
    given = form.get("csrf")
    return isinstance(given, str) and compare_digest(given.encode(), expected.encode())


def _changes(text: str, original: dict[str, Any]) -> dict[str, Any] | str:
    """The arguments the reviewer changed in `text` (the call's arguments as JSON, as the form
    showed them), each with its new value; or what is wrong with the text."""
    try:
        edited = json.loads(text.replace("\r\n", "\n"))
    except (ValueError, RecursionError) as exc:
        return f"The arguments are not JSON: {exc}. Nothing was decided."
    if not isinstance(edited, dict):
        return "The arguments must stay a JSON object. Nothing was decided."
    if missing := sorted(set(original) - set(edited)):
        return (
            f"An edit changes arguments; it cannot remove them ({', '.join(missing)}). "
            "Nothing was decided."
        )

    def canonical(value: Any) -> str:
        return json.dumps(value, sort_keys=True)

    return {
        name: value
        for name, value in edited.items()
        if name not in original or canonical(value) != canonical(original[name])
    }


def _listed(request: Request, store: Store) -> list[Waiting] | str:
    """The requests the page's filters select, or (as rows) what is wrong with a filter."""
    query = request.query_params
    try:
        task = store.resolve(query["task"]) if query.get("task") else None
    except TaskNotFound as exc:
        return f'<tr><td colspan="7">{in_html(exc.message)}</td></tr>'
    return inbox.waiting(
        store.reader(),
        task=task,
        tools=[t for t in query.getlist("tool") if t],
        risks=[r for r in query.getlist("risk") if r],
        limit=200,
    )
