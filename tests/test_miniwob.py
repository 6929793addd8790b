"""The first six MiniWoB++ tasks solved end to end through the runner and the browser tools
(see `miniwob_run`): forms, dates, an autocomplete, checkboxes and a paged search. Each task's own
reward is the verdict."""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator

from agent.store import Store

from .miniwob_run import (
    Call,
    Solved,
    Solver,
    assert_all_solved,
    diverged,
    elements,
    instruction,
    ref_of,
    solve,
)

# ---- how each task is solved, from its first snapshot --------------------------------------


def _iso(found: re.Match[str]) -> str:
    return f"{found['yyyy']}-{found['mm']}-{found['dd']}"


async def login_user(shot: str) -> AsyncGenerator[Call, str]:
    found = instruction(shot, r'username "(?P<user>[^"]*)" and the password "(?P<pw>[^"]*)"')
    # The labels are bare text before their fields, not tied to them.
    yield Call(
        "browser_type", {"target": ref_of(shot, "textbox", after="Username"), "text": found["user"]}
    )
    yield Call(
        "browser_type", {"target": ref_of(shot, "textbox", after="Password"), "text": found["pw"]}
    )
    yield Call("browser_click", {"target": "Login"})


async def enter_date(shot: str) -> AsyncGenerator[Call, str]:
    found = instruction(shot, r"Enter (?P<mm>\d\d)/(?P<dd>\d\d)/(?P<yyyy>\d{4}) as the date")
    yield Call("browser_set_date", {"target": ref_of(shot, "textbox"), "value": _iso(found)})
    yield Call("browser_click", {"target": ref_of(shot, "button", "Submit")})


async def choose_date(shot: str) -> AsyncGenerator[Call, str]:
    # A read-only field with a jQuery UI date picker: browser_set_date pages its calendar.
    found = instruction(shot, r"Select (?P<mm>\d\d)/(?P<dd>\d\d)/(?P<yyyy>\d{4}) as the date")
    field_ = ref_of(shot, "textbox", after="Date:")
    yield Call("browser_set_date", {"target": field_, "value": _iso(found)})
    yield Call("browser_click", {"target": ref_of(shot, "button", "Submit")})


async def use_autocomplete(shot: str) -> AsyncGenerator[Call, str]:
    found = instruction(shot, r'starts with "(?P<pre>[^"]+)"(?: and ends with "(?P<suf>[^"]+)")?')
    pre, suf = found["pre"], found["suf"] or ""
    tags = ref_of(shot, "textbox", "Tags:")
    # A click first: the menu must not open under a resting mouse (a jQuery UI hover bug).
    yield Call("browser_click", {"target": tags})
    yield Call("browser_type", {"target": tags, "text": pre})
    yield Call(
        "browser_wait", {"target": "css=.ui-autocomplete .ui-menu-item:first-child", "seconds": 5}
    )
    menu = yield Call("browser_snapshot")
    fits = [
        e
        for e in elements(menu)
        if e.role == "clickable" and e.name.startswith(pre) and e.name.endswith(suf)
    ]
    if not fits:
        raise diverged(f"no suggestion starts with {pre!r} and ends with {suf!r}:\n{menu}")
    yield Call("browser_click", {"target": fits[0].ref})
    yield Call("browser_click", {"target": ref_of(shot, "button", "Submit")})


async def click_checkboxes(shot: str) -> AsyncGenerator[Call, str]:
    listed = instruction(shot, r"\nSelect (?P<names>.*) and click Submit\.\n")["names"]
    for name in [] if listed == "nothing" else listed.split(", "):
        yield Call("browser_check", {"target": ref_of(shot, "checkbox", name)})
    yield Call("browser_click", {"target": ref_of(shot, "button", "Submit")})


async def search_engine(shot: str) -> AsyncGenerator[Call, str]:
    found = instruction(
        shot,
        r'enter "(?P<q>[^"]+)" and press "Search", then find and click the '
        r"(?P<n>\d+)(?:st|nd|rd|th) search result",
    )
    n = int(found["n"])
    yield Call("browser_type", {"target": ref_of(shot, "textbox"), "text": found["q"]})
    yield Call("browser_click", {"target": ref_of(shot, "button", "Search")})
    results = yield Call("browser_snapshot")
    page = (n - 1) // 3 + 1  # three results a page
    if page > 1:
        pager = [e for e in elements(results) if e.listed and e.name == str(page)]
        if not pager:
            raise diverged(f"no link to page {page}:\n{results}")
        yield Call("browser_click", {"target": pager[0].ref})
        results = yield Call("browser_snapshot")
    # By position, not by name: result titles repeat.
    titles = [e for e in elements(results) if e.role == "link" and not e.listed]
    if len(titles) <= (n - 1) % 3:
        raise diverged(f"no result {n} on page {page}:\n{results}")
    yield Call("browser_click", {"target": titles[(n - 1) % 3].ref})


SOLVERS: dict[str, Solver] = {
    "login-user": login_user,
    "enter-date": enter_date,
    "choose-date": choose_date,
    "use-autocomplete": use_autocomplete,
    "click-checkboxes": click_checkboxes,
    "search-engine": search_engine,
}


def dates_set(solved: Solved) -> list[str]:
    return [
        c.args["value"] for e in solved.episodes for c in e.calls if c.name == "browser_set_date"
    ]


# ---- the tasks ------------------------------------------------------------------------------


async def test_login_user_a_form_whose_labels_are_not_tied_to_its_fields(
    store: Store, base_url: str
) -> None:
    solved = await solve(store, base_url, "login-user", (1,), SOLVERS)
    assert_all_solved(solved, (1,))
    assert solved.episodes[0].utterance == (
        'Enter the username "vina" and the password "US" into the text fields and press login.'
    )
    assert solved.said("typed 'vina' into [e1] textbox")
    assert solved.said("typed 'US' into [e2] textbox type=password")
    assert solved.said('clicked [e3] button "Login"')
    assert solved.approvals == 0  # the button is in no form: a click, not a submission


async def test_enter_date_a_native_date_field(store: Store, base_url: str) -> None:
    solved = await solve(store, base_url, "enter-date", (1,), SOLVERS)
    assert_all_solved(solved, (1,))
    assert solved.episodes[0].utterance == "Enter 10/11/2011 as the date and hit submit."
    assert solved.said("set '2011-10-11' in [e1] textbox type=date")
    assert solved.said('clicked [e2] button "Submit"')


async def test_choose_date_pages_a_jquery_ui_calendar(store: Store, base_url: str) -> None:
    seeds = (1, 2, 3)
    solved = await solve(store, base_url, "choose-date", seeds, SOLVERS)
    assert_all_solved(solved, seeds)
    assert solved.episodes[0].utterance == "Select 03/05/2016 as the date and hit submit."
    assert solved.said("set '2016-03-05' in [e1] textbox readonly")
    # Each seed its own date, set by paging the calendar back from December 2016.
    wanted = [re.search(r"(\d\d)/(\d\d)/(\d{4})", e.utterance) for e in solved.episodes]
    assert dates_set(solved) == [f"{m[3]}-{m[1]}-{m[2]}" for m in wanted if m]
    assert len(set(dates_set(solved))) == len(seeds)


async def test_use_autocomplete_picks_a_suggestion_that_fits(store: Store, base_url: str) -> None:
    seeds = (1, 2, 3)
    solved = await solve(store, base_url, "use-autocomplete", seeds, SOLVERS)
    assert_all_solved(solved, seeds)
    assert solved.episodes[0].utterance == (
        'Enter an item that starts with "Ce" and ends with "lic".'
    )
    assert solved.said('clicked [e4] clickable "Central African Republic"')
    assert len({e.utterance for e in solved.episodes}) == len(seeds)


async def test_click_checkboxes_checks_exactly_the_named_boxes(store: Store, base_url: str) -> None:
    seeds = (1, 2, 3)
    solved = await solve(store, base_url, "click-checkboxes", seeds, SOLVERS)
    assert_all_solved(solved, seeds)
    assert solved.episodes[0].utterance == "Select DKkQH and click Submit."
    assert solved.said('checked [e2] checkbox "DKkQH"')
    assert not solved.said('checked [e1] checkbox "USa"')


async def test_search_engine_searches_pages_and_clicks_the_nth_result(
    store: Store, base_url: str
) -> None:
    seeds = (1, 2, 3)
    solved = await solve(store, base_url, "search-engine", seeds, SOLVERS)
    assert_all_solved(solved, seeds)
    assert solved.episodes[0].utterance == (
        'Use the textbox to enter "Riley" and press "Search", then find and click the 7th '
        "search result."
    )
    assert solved.said("typed 'Riley' into [e1] textbox")
    assert solved.said('clicked [e9] link "3"')  # the 7th of three a page is on page 3
    assert solved.said('clicked [e11] link "Riley"')  # the first there
    assert "the 4th search result" in solved.episodes[2].utterance
    assert solved.said('clicked [e8] link "2"')  # the 4th is on page 2
