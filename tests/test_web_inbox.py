"""The web inbox (`agent serve`'s pages), in process: a reviewer signs in with a token, lists,
opens and decides requests with forms; a form from another site, one without the session's
CSRF token, a revoked reviewer's session, and a cookie alone on the API are refused and record
nothing; text from a model or a tool is shown, never obeyed, and an argument that round-trips
through the edit box unchanged is no edit."""

from __future__ import annotations

import asyncio
import html
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from agent import reviewers
from agent.events import ApprovalDecided
from agent.state import TaskState
from agent.store import Store
from examples.tally_tool import read_ledger
from frontends.cli import main
from frontends.serve import app

from .apis import task_waiting
from .conftest import pending

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
#: the text the browser would show in the arguments box (the newline after <textarea> is not
#: part of it)
BOX = re.compile(r'<textarea name="arguments"[^>]*>\n(.*?)</textarea>', re.S)
HOSTILE = "x \x1b[2J\x1b]0;owned\x07 [bold]APPROVED[/] <script>alert(1)</script> \u202eevil\x85"


@pytest.fixture(name="web")
async def web_fixture(home: Path) -> AsyncIterator[httpx.AsyncClient]:
    with Store.open() as store:
        transport = httpx.ASGITransport(app=app(store), client=("127.0.0.1", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://agent") as client:
            yield client


def _reviewer(name: str = "ann") -> str:
    with Store.open() as store, store.writing() as db:
        return reviewers.add(db, name)


async def _sign_in(web: httpx.AsyncClient, token: str) -> str:
    """Sign in as the browser would; the session's CSRF token, as its pages carry it."""
    form = await web.get("/login")
    [login_csrf] = CSRF.findall(form.text)
    answer = await web.post("/login", data={"csrf": login_csrf, "token": token})
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/"
    cookie = answer.headers["set-cookie"].lower()
    assert "httponly" in cookie
    assert "samesite=strict" in cookie
    home = await web.get("/")
    assert home.status_code == 200
    [csrf] = CSRF.findall(home.text)
    assert isinstance(csrf, str)
    return csrf


def _decisions(task: str) -> list[ApprovalDecided]:
    with Store.open() as store:
        return [e.event for e in store.events(task) if isinstance(e.event, ApprovalDecided)]


def _asked(task: str) -> tuple[str, str]:
    with Store.open() as store:
        request = pending(TaskState.from_store(store, task))
    return request.approval_id, request.call_hash


async def test_a_reviewer_signs_in_opens_a_request_and_approves_it_edited(
    web: httpx.AsyncClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    task = await asyncio.to_thread(task_waiting, tmp_path, capsys)
    approval_id, call_hash = _asked(task)
    assert (await web.get("/", follow_redirects=False)).headers["location"] == "/login"
    csrf = await _sign_in(web, _reviewer())
    listing = await web.get("/")
    assert f'href="/requests/{approval_id}"' in listing.text
    assert listing.headers["x-frame-options"] == "DENY"
    assert "script-src 'self'" in listing.headers["content-security-policy"]
    assert (await web.get("/rows?tool=shell")).text.count("<tr>") == 1  # "nothing is waiting"
    page = await web.get(f"/requests/{approval_id}")
    assert "tally" in page.text
    assert "Approve with my edit" in page.text
    [box] = BOX.findall(page.text)
    edited = html.unescape(box).replace('"amount": 1', '"amount": 4')
    answer = await web.post(
        f"/requests/{approval_id}",
        data={"csrf": csrf, "call_hash": call_hash, "action": "edit", "arguments": edited},
    )
    assert answer.status_code == 200, answer.text
    assert "Approved with your edit" in answer.text
    assert "Approved by ann (http 127.0.0.1)" in answer.text  # the form is gone
    [decided] = _decisions(task)
    assert (decided.reviewer, decided.origin, decided.edited) == (
        "ann",
        "http 127.0.0.1",
        {"counter": "front", "amount": 4},
    )
    assert await asyncio.to_thread(main, ["worker", "--once"]) == 0
    assert [e["amount"] for e in read_ledger()] == [4]


async def test_forms_from_elsewhere_or_without_the_token_record_nothing(
    web: httpx.AsyncClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    task = await asyncio.to_thread(task_waiting, tmp_path, capsys)
    approval_id, call_hash = _asked(task)
    token = _reviewer()
    wrong = await web.post("/login", data={"csrf": "x", "token": token})
    assert wrong.status_code == 403  # no sign-in form was loaded: no login cookie
    form = await web.get("/login")
    [login_csrf] = CSRF.findall(form.text)
    assert (
        await web.post("/login", data={"csrf": login_csrf, "token": "rvw_no"})
    ).status_code == 401
    csrf = await _sign_in(web, token)
    approve = {"csrf": csrf, "call_hash": call_hash, "action": "approve"}
    path = f"/requests/{approval_id}"
    for data, headers in (
        ({**approve, "csrf": ""}, {}),
        ({**approve, "csrf": csrf[:-1] + "x"}, {}),
        (approve, {"origin": "http://attacker.invalid"}),
        (approve, {"sec-fetch-site": "cross-site"}),
    ):
        answer = await web.post(path, data=data, headers=headers)
        assert answer.status_code == 403, (data, headers)
    # The API's decision takes a token, never the browser's cookie.
    api = await web.post(
        f"/api/requests/{approval_id}/decision", json={"approved": True, "call_hash": call_hash}
    )
    assert api.status_code == 401
    # A stale hash, arguments changed under "Approve", or an edit that is not an object.
    page = await web.get(path)
    [box] = BOX.findall(page.text)
    shown = html.unescape(box)
    for data, said in (
        ({**approve, "call_hash": "0" * 64, "arguments": shown}, "is not the one pending"),
        ({**approve, "arguments": shown.replace("front", "back")}, "You changed the arguments"),
        ({**approve, "action": "edit", "arguments": "[1]"}, "must stay a JSON object"),
        ({**approve, "action": "edit", "arguments": '{"amount": 2}'}, "cannot remove them"),
        ({**approve, "action": "edit", "arguments": "{"}, "are not JSON"),
        ({**approve, "action": "edit", "arguments": shown}, "the edit changes nothing"),
    ):
        answer = await web.post(path, data=data)
        assert answer.status_code in (400, 409), data
        assert said in html.unescape(answer.text), answer.text
    assert _decisions(task) == []
    # Revoked, the reviewer's session ends with their token.
    with Store.open() as store, store.writing() as db:
        reviewers.revoke(db, "ann")
    assert (await web.get("/", follow_redirects=False)).status_code == 303
    assert (await web.post(path, data={**approve, "arguments": shown})).status_code == 303
    assert _decisions(task) == []


async def test_signing_out_ends_the_session_and_a_denial_reaches_the_model(
    web: httpx.AsyncClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    task = await asyncio.to_thread(task_waiting, tmp_path, capsys)
    approval_id, call_hash = _asked(task)
    csrf = await _sign_in(web, _reviewer())
    answer = await web.post(
        f"/requests/{approval_id}",
        data={"csrf": csrf, "call_hash": call_hash, "action": "deny", "reason": "not today"},
    )
    assert "Denied" in answer.text
    [decided] = _decisions(task)
    assert (decided.approved, decided.reason) == (False, "not today")
    assert (await web.post("/logout", data={"csrf": csrf})).status_code == 303
    assert (await web.get("/", follow_redirects=False)).status_code == 303
    assert await asyncio.to_thread(main, ["worker", "--once"]) == 0
    assert read_ledger() == []


async def test_text_from_the_model_is_shown_not_obeyed_and_round_trips_exactly(
    web: httpx.AsyncClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    task = await asyncio.to_thread(task_waiting, tmp_path, capsys, counter=HOSTILE)
    approval_id, call_hash = _asked(task)
    csrf = await _sign_in(web, _reviewer())
    page = await web.get(f"/requests/{approval_id}")
    for obeyed in ("\x1b", "\x07", "\u202e", "\x85", "<script>alert"):
        assert obeyed not in page.text, obeyed
    assert "<script" not in page.text.replace('<script src="/static/inbox.js" defer>', "")
    preview = re.search(r'<pre class="preview">(.*?)</pre>', page.text, re.S)
    assert preview is not None
    # made visible, in the preview and in the task's history alike
    for text in (preview[1], " ".join(page.text.split('class="history"')[1].split())):
        assert re.search(r"\\(x1b|u001b)\[2J\\(x1b|u001b)\]0;owned\\(x07|u0007) ", text), text
        assert "[bold]APPROVED[/] &lt;script&gt;alert(1)&lt;/script&gt; &lt;U+202E&gt;evil" in text
    # The box shows the same argument as JSON escapes, and gives back exactly what it was.
    [box] = BOX.findall(page.text)
    assert "\\u202eevil\\u0085" in box
    assert json.loads(html.unescape(box))["counter"] == HOSTILE
    answer = await web.post(
        f"/requests/{approval_id}",
        # as a browser sends a textarea: its lines end CR LF
        data={
            "csrf": csrf,
            "call_hash": call_hash,
            "action": "approve",
            "arguments": html.unescape(box).replace("\n", "\r\n"),
        },
    )
    assert answer.status_code == 200, answer.text
    [decided] = _decisions(task)
    assert decided.approved
    assert decided.edited is None


async def test_always_allow_shows_the_rule_and_saves_only_that_one(
    web: httpx.AsyncClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text('[default]\naction = "ask"\n')
    task = await asyncio.to_thread(task_waiting, tmp_path, capsys, "--policy", str(policy))
    approval_id, call_hash = _asked(task)
    csrf = await _sign_in(web, _reviewer())
    page = await web.get(f"/requests/{approval_id}")
    [box] = BOX.findall(page.text)
    form = {"csrf": csrf, "call_hash": call_hash, "arguments": html.unescape(box)}
    shown = await web.post(
        f"/requests/{approval_id}", data={**form, "action": "always", "scope": "task"}
    )
    rule = re.search(r'<pre class="rule">(.*?)</pre>', shown.text, re.S)
    assert rule is not None
    assert f"task = &quot;{task}&quot;" in rule[1]
    [digest] = re.findall(r'name="digest" value="([^"]+)"', shown.text)
    assert _decisions(task) == []  # shown, not saved
    assert policy.read_text() == '[default]\naction = "ask"\n'
    # Confirmed for another scope than the one shown: refused.
    other = {**form, "action": "always-save", "scope": "project", "digest": digest}
    refused = await web.post(f"/requests/{approval_id}", data=other)
    assert "not the one you were shown" in refused.text
    saved = await web.post(f"/requests/{approval_id}", data={**other, "scope": "task"})
    assert "the rule is saved" in saved.text
    assert html.unescape(rule[1]) in policy.read_text()
    [decided] = _decisions(task)
    assert decided.always == html.unescape(rule[1])


async def test_a_form_sent_again_by_two_reviewers_at_once_or_too_late_decides_once(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "agent.toml"
    config.write_text("[approvals]\nexpire_after = 1.5\n")
    task = await asyncio.to_thread(task_waiting, tmp_path, capsys, "--config", str(config))
    approval_id, call_hash = _asked(task)
    with Store.open() as store:
        clients = []
        for name in ("ann", "bo"):
            transport = httpx.ASGITransport(app=app(store), client=("127.0.0.1", 5000))
            client = httpx.AsyncClient(transport=transport, base_url="http://agent")
            clients.append((client, await _sign_in(client, _reviewer(name))))
        page = await clients[0][0].get(f"/requests/{approval_id}")
        [box] = BOX.findall(page.text)
        form = {"call_hash": call_hash, "action": "approve", "arguments": html.unescape(box)}
        # Two reviewers at once, each sending the form twice: one decision.
        answers = await asyncio.gather(
            *(
                client.post(f"/requests/{approval_id}", data={**form, "csrf": csrf})
                for client, csrf in clients * 2
            )
        )
        assert sorted(a.status_code for a in answers) == [200, 409, 409, 409]
        assert len(_decisions(task)) == 1
        for client, _ in clients:
            await client.aclose()
    # Too late: the next request of another task expires before the form is sent.
    late = await asyncio.to_thread(task_waiting, tmp_path, capsys, "--config", str(config))
    approval_id, call_hash = _asked(late)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app(Store.open()), client=("127.0.0.1", 5000)),
        base_url="http://agent",
    ) as web:
        csrf = await _sign_in(web, _reviewer("cy"))
        page = await web.get(f"/requests/{approval_id}")
        [box] = BOX.findall(page.text)
        await asyncio.sleep(1.6)
        answer = await web.post(
            f"/requests/{approval_id}",
            data={**form, "call_hash": call_hash, "csrf": csrf, "arguments": html.unescape(box)},
        )
    assert answer.status_code == 409
    assert "expired at" in answer.text
    [denied] = _decisions(late)
    assert denied.expired
