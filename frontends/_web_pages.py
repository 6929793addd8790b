"""The web inbox's pages (see `web_inbox`), rendered on the server: everything from a model, a
page or a tool passes the one neutraliser (`in_html`) on its way in."""

from __future__ import annotations

import io
import secrets
import time
from typing import Any

from rich.console import Console
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from agent import inbox
from agent.always import RuleRefused, Scope, propose
from agent.approvals import NothingToApprove, NotPending, Seen, duration
from agent.events import SHORT_HASH, ApprovalDecided, ApprovalGiven
from agent.inbox import Waiting
from agent.state import TaskState
from agent.store import Store
from frontends._deciding import Refused
from frontends._web_sessions import LOGIN_COOKIE, Session
from frontends.inbox_commands import escalated_to
from frontends.render import Renderer
from frontends.screen import editable_json, in_html

#: how many of a task's last events a request's page shows
RECENT = 8
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # same-origin, not no-referrer: with no referrer, a browser sends `Origin: null` with the
    # page's own forms, and the origin check could not tell them from another site's
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def request_page(
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
        ("who may decide", _deciders(found, approvers)),
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
    return page(f"Request {found.approval_id}", body, session, status, found.approval_id)


def _deciders(found: Waiting, approvers: int) -> str:
    if (names := escalated_to(found)) is not None:
        return f"only {', '.join(names)} (it was escalated to them)"
    return "any reviewer" if approvers == 1 else f"{approvers} reviewers"


def _said(outcome: ApprovalDecided | ApprovalGiven) -> str:
    if isinstance(outcome, ApprovalGiven):
        return "Approved: it waits for more reviewers."
    if not outcome.approved:
        return "Denied: the task is told why when it runs on."
    if outcome.always:
        return (
            "Approved, and the rule is saved: calls exactly like this one run unasked from now "
            "on. A worker (agent worker) carries this one out."
        )
    edited = " with your edit" if outcome.edited else ""
    return f"Approved{edited}: a worker (agent worker) carries it out."


def _fate(store: Store, found: Waiting) -> str:
    """What became of a request that no longer waits."""
    decided = inbox.decision(store.reader(), found.approval_id)
    if decided is None:
        return "This request is not waiting for a decision: its task moved on."
    ago = duration(time.time() - decided.decided)
    word = "Approved" if decided.approved else "Denied"
    return f"{word} by {decided.reviewer or 'no one'} ({decided.origin or '?'}) {ago} ago."


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
        '<button name="action" value="deny">Deny</button></p>'
        '<p><button name="action" value="always">Always allow calls like this…</button> in '
        '<select name="scope"><option value="task">this task only</option>'
        '<option value="project">every task of its policy file</option></select></p></form>'
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


def page(
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


def login_page(request: Request, *, status: int, said: str = "") -> HTMLResponse:
    csrf = secrets.token_urlsafe(32)
    banner = f'<p class="banner refused">{in_html(said)}</p>' if said else ""
    body = (
        f'<h1>Sign in</h1>{banner}<form method="post" action="/login">'
        f'<input type="hidden" name="csrf" value="{csrf}">'
        "<p>Reviewer's token (from <code>agent reviewers add NAME</code>):<br>"
        '<input type="password" name="token" size="60" autocomplete="off" autofocus></p>'
        "<p><button>Sign in</button></p></form>"
    )
    answer = page("Sign in", body, None, status)
    answer.set_cookie(
        LOGIN_COOKIE, csrf, httponly=True, samesite="strict", secure=request.url.scheme == "https"
    )
    return answer


def listed_rows(found: list[Waiting]) -> str:
    if not found:
        return '<tr><td colspan="7">Nothing is waiting for a reviewer.</td></tr>'
    now = time.time()
    lines = []
    for request in found:
        why = request.reason.strip().splitlines()[0] if request.reason.strip() else ""
        if (names := escalated_to(request)) is not None:
            why = f"escalated to {', '.join(names)}: {why}"
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


def inbox_body(request: Request, rows: str) -> str:
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


def rule_page(
    store: Store, found: Waiting, session: Session, *, scope: Scope, call_hash: str
) -> Response:
    """The rule "always allow" would save, for the reviewer to read before saving it."""
    state = TaskState.from_store(store, found.task_id)
    try:
        proposal = propose(
            store, state, Seen(found.approval_id, call_hash), scope=scope, reviewer=session.reviewer
        )
    except (NotPending, NothingToApprove, RuleRefused) as exc:
        return request_page(store, found, session, Refused(409, exc.message, str(exc.code)))
    where = "this task only" if scope == "task" else "every task of this policy file"
    body = (
        f"<h1>Always allow calls like this?</h1><p>This rule goes at the top of "
        f"<code>{in_html(str(proposal.path))}</code> ({where}): calls exactly like request "
        f"{in_html(found.approval_id)} (every argument the same) then run without asking.</p>"
        f'<pre class="rule">{in_html(proposal.rule)}</pre>'
        '<form method="post" class="decide">'
        f'<input type="hidden" name="csrf" value="{in_html(session.csrf)}">'
        f'<input type="hidden" name="call_hash" value="{in_html(call_hash)}">'
        f'<input type="hidden" name="scope" value="{scope}">'
        f'<input type="hidden" name="digest" value="{in_html(proposal.digest)}">'
        '<p><button name="action" value="always-save">Save this rule and approve</button>'
        f'<a href="/requests/{in_html(found.approval_id)}">Back</a></p></form>'
    )
    return page("Always allow", body, session, 200, found.approval_id)
