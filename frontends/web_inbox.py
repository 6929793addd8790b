"""The web inbox: the reviewers' inbox in a browser, served by `agent serve` beside its API.

    GET  /login, POST /login    sign in with a reviewer's token (from `agent reviewers add`)
    POST /logout
    GET  /                      the requests waiting, oldest first (?task=&tool=&risk=), live
    GET  /rows                  the list's rows alone (what the page fetches when it changes)
    GET  /requests/{id}         one request: why it was asked, its preview, the task's last
                                events, and (while it waits) the form that decides it
    POST /requests/{id}         approve, approve with the arguments as edited, or deny

A token signs a reviewer in once; the browser then holds only a session cookie (HttpOnly,
SameSite=Strict), kept in this process's memory: a restart, a revoked token or eight idle hours
sign everyone out. Every form that changes something carries the session's CSRF token and is
refused when the browser says it came from another site. Pages run no inline script and may not
be framed. Everything from a model, a page or a tool passes the one neutraliser (`in_html`), so
nothing in a request can change what the reviewer sees.
"""

from __future__ import annotations

import hashlib
import io
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from hmac import compare_digest
from typing import Any
from urllib.parse import urlsplit

from rich.console import Console
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from agent import inbox, reviewers
from agent.approvals import duration
from agent.events import SHORT_HASH, ApprovalDecided, ApprovalGiven
from agent.inbox import Waiting
from agent.state import TaskState
from agent.store import Store
from base.errors import TaskNotFound
from frontends._deciding import Refused, decide_request
from frontends._web_assets import SCRIPT, STYLE
from frontends.render import Renderer
from frontends.screen import editable_json, in_html

SESSION_COOKIE = "agent_session"
#: the sign-in form's own CSRF token, held in a cookie until a session replaces it
LOGIN_COOKIE = "agent_login"
#: a session unused this long is over
IDLE = 8 * 3600.0
#: how many of a task's last events a request's page shows
RECENT = 8
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


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


Handler = Callable[[Request], Awaitable[Response]]


def routes(store: Store, sessions: Sessions) -> list[Route]:
    """The web inbox's pages over `store`, signed in through `sessions`."""

    def signed_in(page: Callable[[Request, Session], Awaitable[Response]]) -> Handler:
        async def handler(request: Request) -> Response:
            session = sessions.find(request, store)
            if session is None:
                return RedirectResponse("/login", status_code=303)
            return await page(request, session)

        return handler

    async def login_form(request: Request) -> Response:
        return _login_page(request, status=200)

    async def login(request: Request) -> Response:
        form = await request.form()
        expected = request.cookies.get(LOGIN_COOKIE, "")
        if not _same_site(request) or not expected or not _matches(form, expected):
            return _login_page(request, status=403, said="Sign-in refused: reload this page.")
        name = reviewers.who(store.reader(), str(form.get("token", "")).strip())
        if name is None:
            return _login_page(request, status=401, said="That is not a reviewer's token.")
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
            return _page("Refused", "<p>Sign-out refused: reload the page.</p>", None, 403)
        sessions.close(request)
        answer = RedirectResponse("/login", status_code=303)
        answer.delete_cookie(SESSION_COOKIE)
        return answer

    async def listing(request: Request, session: Session) -> Response:
        found = _listed(request, store)
        rows = found if isinstance(found, str) else _rows(found)
        return _page("Inbox", _inbox_body(request, rows), session)

    async def rows(request: Request, session: Session) -> Response:
        found = _listed(request, store)
        return HTMLResponse(found if isinstance(found, str) else _rows(found), headers=HEADERS)

    async def one(request: Request, session: Session) -> Response:
        found = inbox.find(store.reader(), request.path_params["approval_id"])
        if found is None:
            return _page("Not found", "<p>No such request.</p>", session, 404)
        return _request_page(store, found, session)

    async def decision(request: Request, session: Session) -> Response:
        form = await request.form()
        if not _same_site(request) or not _matches(form, session.csrf):
            return _page("Refused", "<p>Refused: reload the page and decide again.</p>", None, 403)
        found = inbox.find(store.reader(), request.path_params["approval_id"])
        if found is None:
            return _page("Not found", "<p>No such request.</p>", session, 404)
        action = str(form.get("action", ""))
        edit: dict[str, Any] | None = None
        if action in ("approve", "edit"):
            state = TaskState.from_store(store, found.task_id)
            call = state.awaiting
            original = call.arguments if call is not None and call.arguments else {}
            changed = _changes(str(form.get("arguments", "")), original)
            if isinstance(changed, str):
                return _request_page(store, found, session, Refused(400, changed, "edit"))
            if action == "approve" and changed:
                said = (
                    "You changed the arguments: press “Approve with my edit” to approve them as "
                    "changed, or reload the page to approve them as asked."
                )
                return _request_page(store, found, session, Refused(400, said, "edit"))
            edit = changed if action == "edit" else None
        elif action != "deny":
            return _request_page(store, found, session, Refused(400, "Choose a decision.", "form"))
        outcome = decide_request(
            store,
            found,
            str(form.get("call_hash", "")),
            approved=action != "deny",
            reason=str(form.get("reason", "")),
            reviewer=session.reviewer,
            origin=f"http {request.client.host if request.client else '?'}",
            edit=edit,
        )
        return _request_page(store, found, session, outcome)

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


def _rows(found: list[Waiting]) -> str:
    if not found:
        return '<tr><td colspan="7">Nothing is waiting for a reviewer.</td></tr>'
    now = time.time()
    lines = []
    for request in found:
        why = request.reason.strip().splitlines()[0] if request.reason.strip() else ""
        lines.append(
            f"<tr><td>{in_html(request.task_id)}</td>"
            f'<td><a href="/requests/{in_html(request.approval_id)}">'
            f"{in_html(request.approval_id)} {in_html(request.call_hash[:SHORT_HASH])}</a></td>"
            f"<td>{in_html(request.tool or '?')}</td>"
            f'<td class="risk">{in_html(request.risk or "?")}</td>'
            f"<td>{duration(now - request.asked)}</td><td>{_expires(request, now)}</td>"
            f"<td>{in_html(why[:120])}</td></tr>"
        )
    return "\n".join(lines)


def _expires(request: Waiting, now: float) -> str:
    if request.expires is None:
        return "never"
    if request.expires <= now:
        return "expired"
    return f"in {duration(request.expires - now)}"


def _inbox_body(request: Request, rows: str) -> str:
    query = request.query_params
    return (
        '<h1>Waiting for a reviewer</h1><form method="get" class="filters">'
        f'task <input name="task" size="14" value="{in_html(query.get("task", ""))}"> '
        f'tool <input name="tool" size="14" value="{in_html(query.get("tool", ""))}"> '
        f'risk <input name="risk" size="10" value="{in_html(query.get("risk", ""))}"> '
        "<button>Filter</button></form><table><thead><tr><th>task</th><th>request</th>"
        "<th>tool</th><th>risk</th><th>waiting</th><th>expires</th><th>why</th></tr></thead>"
        f'<tbody id="rows">{rows}</tbody></table>'
    )


def _request_page(
    store: Store,
    found: Waiting,
    session: Session,
    outcome: ApprovalDecided | ApprovalGiven | Refused | None = None,
) -> Response:
    """One request whole; with what just became of the reviewer's decision, if they made
    one."""
    state = TaskState.from_store(store, found.task_id)
    call = state.awaiting
    open_now = (
        call is not None
        and call.approval is not None
        and call.approval.approval_id == found.approval_id
        and state.status == "awaiting_approval"
    )
    status = 200
    banner = ""
    if isinstance(outcome, Refused):
        status = outcome.status
        banner = f'<p class="banner refused">{in_html(outcome.message)}</p>'
    elif outcome is not None:
        banner = f'<p class="banner ok">{in_html(_said(outcome))}</p>'
    expires = "never" if found.expires is None else _expires(found, time.time())
    approvers = call.approval.approvers if open_now and call and call.approval else 1
    facts = [
        ("task", f"{found.task_id}: {state.task}"),
        ("task status", state.status),
        ("request", f"{found.approval_id} · {found.call_hash[:SHORT_HASH]}"),
        ("tool", found.tool or "?"),
        ("risk", found.risk or "?"),
        ("rule", found.rule or "?"),
        ("waiting", duration(time.time() - found.asked)),
        ("expires", expires),
        ("who may decide", "any reviewer" if approvers == 1 else f"{approvers} reviewers"),
    ]
    body = (
        f"<h1>Request {in_html(found.approval_id)}</h1>{banner}"
        '<p id="elsewhere" class="banner note" hidden>This request was decided elsewhere: '
        "reload the page.</p><dl>"
        + "".join(f"<dt>{name}</dt><dd>{in_html(value)}</dd>" for name, value in facts)
        + f'</dl><h2>Why</h2><p class="reason">{in_html(found.reason)}</p>'
        f'<h2>What will happen</h2><pre class="preview">{in_html(found.preview)}</pre>'
        + (
            _decision_form(found, session, call.arguments if call else None)
            if open_now
            else f'<p class="banner note">{in_html(_fate(store, found))}</p>'
        )
        + f'<h2>The task so far</h2><pre class="history">{_history(store, found.task_id)}</pre>'
    )
    return _page(f"Request {found.approval_id}", body, session, status, found.approval_id)


def _said(outcome: ApprovalDecided | ApprovalGiven) -> str:
    if isinstance(outcome, ApprovalGiven):
        return "Approved: it waits for more reviewers."
    if not outcome.approved:
        return "Denied: the task is told why when it runs on."
    edited = " with your edit" if outcome.edited else ""
    return f"Approved{edited}: a worker (agent worker) carries it out."


def _fate(store: Store, found: Waiting) -> str:
    """What became of a request that no longer waits."""
    row = inbox.describe(store.reader(), found.approval_id)
    if row is None or row["decided"] is None:
        return "This request is not waiting for a decision: its task moved on."
    ago = duration(time.time() - float(str(row["decided"])))
    word = "Approved" if row["approved"] else "Denied"
    return f"{word} by {row['reviewer'] or 'no one'} ({row['origin'] or '?'}) {ago} ago."


def _decision_form(found: Waiting, session: Session, arguments: dict[str, Any] | None) -> str:
    hidden = (
        f'<input type="hidden" name="csrf" value="{in_html(session.csrf)}">'
        f'<input type="hidden" name="call_hash" value="{in_html(found.call_hash)}">'
    )
    editable = arguments is not None
    # A newline right after <textarea> is dropped by the parser: one is given, so the value's
    # own first character is kept whatever it is.
    field_ = (
        '<h2>Arguments</h2><textarea name="arguments" rows="8" spellcheck="false">\n'
        f"{in_html(editable_json(arguments))}</textarea>"
        if editable
        else "<p>(the arguments cannot be edited)</p>"
    )
    edit_button = (
        '<button name="action" value="edit">Approve with my edit</button>' if editable else ""
    )
    return (
        f'<form method="post" class="decide">{hidden}{field_}'
        '<p><button name="action" value="approve">Approve</button>'
        f"{edit_button}</p>"
        '<p>Reason (the model reads it): <input name="reason" size="50"> '
        '<button name="action" value="deny">Deny</button></p></form>'
    )


def _history(store: Store, task_id: str) -> str:
    """The task's last events as `agent show` prints them, in text (already neutralised by the
    renderer; escaped here for HTML)."""
    text = io.StringIO()
    render = Renderer(
        Console(file=text, width=100, color_system=None, highlight=False, soft_wrap=True)
    )
    for stored in store.events(task_id)[-RECENT:]:
        render(stored)
    return in_html(text.getvalue())


def _page(
    title: str, body: str, session: Session | None, status: int = 200, request_id: str = ""
) -> HTMLResponse:
    who = (
        f'<span class="who">{in_html(session.reviewer)}</span>'
        '<form method="post" action="/logout" class="inline">'
        f'<input type="hidden" name="csrf" value="{in_html(session.csrf)}">'
        "<button>Sign out</button></form>"
        if session
        else ""
    )
    opened = f' data-request="{in_html(request_id)}"' if request_id else ""
    page = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{in_html(title)} · '
        'agent</title><link rel="stylesheet" href="/static/inbox.css">'
        f'<script src="/static/inbox.js" defer></script></head><body{opened}>'
        f'<header><a href="/">agent · reviewers</a>{who}</header><main>{body}</main></body></html>'
    )
    return HTMLResponse(page, status_code=status, headers=HEADERS)


def _login_page(request: Request, *, status: int, said: str = "") -> HTMLResponse:
    csrf = secrets.token_urlsafe(32)
    banner = f'<p class="banner refused">{in_html(said)}</p>' if said else ""
    body = (
        f'<h1>Sign in</h1>{banner}<form method="post" action="/login">'
        f'<input type="hidden" name="csrf" value="{csrf}">'
        "<p>Reviewer's token (from <code>agent reviewers add NAME</code>):<br>"
        '<input type="password" name="token" size="60" autocomplete="off" autofocus></p>'
        "<p><button>Sign in</button></p></form>"
    )
    answer = _page("Sign in", body, None, status)
    answer.set_cookie(
        LOGIN_COOKIE, csrf, httponly=True, samesite="strict", secure=request.url.scheme == "https"
    )
    return answer
