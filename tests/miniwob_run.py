"""Running MiniWoB++ tasks end to end: the real runner, the browser tools, and the Chromium in
the task's sandbox, on MiniWoB++ pages served on loopback. Each task's own reward is the verdict.

The model is the only stand-in: `MiniWobModel`, a backend at the model seam that reads what the
run shows it (the task text, the plan step, the latest tool result) and answers with the next
tool call, as a model would; what it calls comes from a task's `Solver`, which reads only the tool
results it is sent. The test itself starts each seeded episode (with a long time limit) and reads
the reward, over its own DevTools connection to the same Chromium: the model calls
`EpisodePage.start` when it sees the task page open, and `EpisodePage.finish` after its last
click, before it completes the step (a finished task's sandbox is removed at once).
"""

import asyncio
import json
import re
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from playwright.async_api import Browser, Page, Playwright, async_playwright

from agent.approvals import decide
from agent.backends.base import (
    DeltaSink,
    ModelBackend,
    ModelRequest,
    ModelResponse,
    ToolCall,
)
from agent.events import Limits, ToolResulted
from agent.runner import Runner
from agent.state import TaskState
from agent.store import Store
from base.errors import ErrorCode, ScriptError
from browser.manager import connect
from policies import Gate
from sandbox.limits import SandboxConfig, SandboxLimits
from sandbox.manager import Sandboxes, store_scope
from tools import Registry
from tools.browser import registry as browser_tools
from tools.browser_pointer import registry as pointer_tools

from .conftest import pending, tool_results
from .miniwob_site import (
    EPISODE_STATE_JS,
    PAGE_READY_JS,
    START_EPISODE_JS,
    UTTERANCE_JS,
    EpisodeState,
    start_args,
    task_url,
)

# ---- reading a snapshot ---------------------------------------------------------------------

# One element of a snapshot: `[e3] link "1" href=...`; pagination items are listed ("- [e6] ...").
_ELEMENT = re.compile(r'(?P<item>- )?\[(?P<ref>[ef]\d+)\] (?P<role>\w+)(?: "(?P<name>[^"]*)")?')


@dataclass(frozen=True)
class Element:
    ref: str
    role: str
    name: str
    at: int  # where it is in the snapshot
    listed: bool  # an item of a list


def elements(shot: str) -> list[Element]:
    return [
        Element(m["ref"], m["role"], m["name"] or "", m.start(), m["item"] is not None)
        for m in _ELEMENT.finditer(shot)
    ]


def diverged(what: str) -> ScriptError:
    """The page or a tool said something this model has no answer for: the task pauses."""
    return ScriptError(what, code=ErrorCode.SCRIPT_DIVERGED)


def ref_of(shot: str, role: str, name: str | None = None, *, after: str | None = None) -> str:
    """The reference of the first `role` element (named `name`) in the snapshot, or of the first
    one after the line `after` (a label the page does not tie to its field)."""
    start = 0
    if after is not None:
        start = shot.find(f"\n{after}\n")
        if start < 0:
            raise diverged(f"no line {after!r} in the snapshot:\n{shot}")
    for e in elements(shot):
        if e.at > start and e.role == role and (name is None or e.name == name):
            return e.ref
    raise diverged(f"no {role} {name or ''} in the snapshot:\n{shot}")


def instruction(shot: str, pattern: str) -> re.Match[str]:
    found = re.search(pattern, shot)
    if found is None:
        raise diverged(f"no instruction like {pattern!r} in the snapshot:\n{shot}")
    return found


# ---- how each task is solved, from its first snapshot --------------------------------------


@dataclass(frozen=True)
class Call:
    name: str
    args: dict[str, Any] = field(default_factory=dict)


#: a task's solver: given the first snapshot, yields tool calls and is sent each one's result
Solver = Callable[[str], AsyncGenerator[Call, str]]


# ---- the test's own view of the page: starting episodes, reading rewards ----------------------


@dataclass
class Episode:
    seed: int
    utterance: str = ""
    state: EpisodeState | None = None
    #: the tool calls the model made for it, after opening the page
    calls: list[Call] = field(default_factory=list)
    #: why the model gave up on it (a tolerant model goes on to the next episode)
    failure: str | None = None

    @property
    def solved(self) -> bool:
        return self.state is not None and self.state["done"] and self.state["raw_reward"] == 1


class EpisodePage:
    """The task's page, as the test sees it over its own DevTools connection to the task's
    Chromium: it starts seeded episodes and reads their rewards."""

    def __init__(self, playwright: Playwright, sandboxes: Sandboxes) -> None:
        self.playwright = playwright
        self.sandboxes = sandboxes
        self._browser: Browser | None = None
        self._page: Page | None = None

    async def start(self, task_id: str, url: str, seed: int) -> str:
        """Start the episode of `seed` on the page the task's browser shows; its utterance."""
        sandbox = await self.sandboxes.for_task(task_id)  # the task's, opened by the runner
        assert sandbox.devtools is not None
        self._browser = await connect(self.playwright, sandbox)
        pages = [p for c in self._browser.contexts for p in c.pages if p.url == url]
        assert len(pages) == 1, [p.url for c in self._browser.contexts for p in c.pages]
        self._page = pages[0]
        await self._page.wait_for_function(PAGE_READY_JS)
        assert await self._page.evaluate(START_EPISODE_JS, start_args(seed)) is True
        utterance: str = await self._page.evaluate(UTTERANCE_JS)
        return utterance

    async def finish(self) -> EpisodeState:
        """The episode's reward; then the connection goes (before the runner removes the
        sandbox)."""
        assert self._page is not None
        state: EpisodeState = await self._page.evaluate(EPISODE_STATE_JS)
        await self.close()
        return state

    async def close(self) -> None:
        browser, self._browser, self._page = self._browser, None, None
        if browser is not None:
            await browser.close()  # over DevTools this disconnects; Chromium goes on


# ---- the model ------------------------------------------------------------------------------

_TASK = re.compile(
    r"Task: Solve the MiniWoB\+\+ task (?P<name>\S+) at (?P<url>\S+) "
    r"with seeds (?P<seeds>[\d, ]+)\."
)
_STEP = re.compile(r"Current step \(\d+ of \d+\): Solve the episode of seed (?P<seed>\d+)")


class MiniWobModel(ModelBackend):
    """Plans one step per seed; in each step opens the page, has the test start the episode,
    takes a snapshot, runs the task's solver on it, has the test read the reward, and completes
    the step. Raises `ScriptError` (the task pauses, saying why) when a tool fails."""

    name = "miniwob-solver"

    def __init__(
        self, page: EpisodePage, solvers: dict[str, Solver], *, tolerant: bool = False
    ) -> None:
        self.page = page
        self.solvers = solvers
        #: an episode whose call failed or whose solver gave up is recorded, and the next goes on
        self.tolerant = tolerant
        self.episodes: list[Episode] = []
        self._run: AsyncGenerator[Call, str] | None = None
        self._summary = ""

    async def complete(
        self, request: ModelRequest, *, on_delta: DeltaSink | None = None
    ) -> ModelResponse:
        told = _TASK.search(request.messages[1].content)
        if told is None:
            raise diverged(f"not a MiniWoB++ task: {request.messages[1].content}")
        if request.purpose == "plan":
            seeds = [int(s) for s in told["seeds"].split(",")]
            steps = [f"Solve the episode of seed {s}" for s in seeds]
            return _respond(request, Call("submit_plan", {"steps": steps}))
        last = request.messages[-1]
        if len(request.messages) == 2:  # a new step: only its instructions so far
            step = _STEP.search(last.content)
            if step is None:
                raise diverged(f"no seed in the step: {last.content}")
            self._run = self._episode(request.task_id, told, int(step["seed"]))
            return _respond(request, await anext(self._run))
        assert self._run is not None
        try:
            if last.role != "tool" or last.content.startswith("Error:"):
                failed = diverged(f"the last call did not work: {last.content}")
                if not self.tolerant:
                    raise failed
                return _respond(request, await self._run.athrow(failed))
            return _respond(request, await self._run.asend(last.content))
        except StopAsyncIteration:
            return _respond(request, Call("complete_step", {"summary": self._summary}))

    async def _episode(
        self, task_id: str, told: re.Match[str], seed: int
    ) -> AsyncGenerator[Call, str]:
        url = told["url"]
        opened = yield Call("browser_open", {"url": url})
        if not opened.startswith(f"opened {url}"):
            raise diverged(f"the page did not open: {opened}")
        episode = Episode(seed, await self.page.start(task_id, url, seed))
        self.episodes.append(episode)
        shot = yield Call("browser_snapshot")
        solver = self.solvers[told["name"]](shot)
        result: str | None = None
        try:
            while True:
                try:
                    call = await (anext(solver) if result is None else solver.asend(result))
                except StopAsyncIteration:
                    break
                episode.calls.append(call)
                result = yield call
        except ScriptError as exc:
            if not self.tolerant:
                raise
            episode.failure = str(exc)
        episode.state = state = await self.page.finish()
        self._summary = f"seed {seed}: reward {state['raw_reward']} ({state['reward']:.4f})"


def _respond(request: ModelRequest, call: Call) -> ModelResponse:
    wire = ToolCall(id=f"call_{request.turn}", name=call.name, arguments=json.dumps(call.args))
    return ModelResponse(tool_calls=(wire,), model=MiniWobModel.name)


# ---- running a task -------------------------------------------------------------------------


@dataclass
class Solved:
    state: TaskState
    episodes: list[Episode]
    results: list[ToolResulted]
    approvals: int

    def said(self, text: str) -> bool:
        """Whether a tool result says `text`."""
        return any(text in r.content for r in self.results)


#: how long one task's run may take, and more for each seed (a few seconds an episode is usual)
RUN_SECONDS = 60
SEED_SECONDS = 20


async def solve(
    store: Store,
    base_url: str,
    task: str,
    seeds: tuple[int, ...],
    solvers: dict[str, Solver],
    *,
    tolerant: bool = False,
    calls_per_seed: int = 15,
) -> Solved:
    """Run the task "solve `task` with `seeds`" through the runner, with `solvers[task]` as the
    model's policy (see `MiniWobModel` for `tolerant`); approve what it asks."""
    limits = SandboxLimits(network="proxy", allow_domains=(urlsplit(base_url).netloc,))
    sandboxes = Sandboxes(
        SandboxConfig(pool_size=0, allow_private=True), scope=store_scope(store.path)
    )  # a loopback site
    async with async_playwright() as playwright:
        page = EpisodePage(playwright, sandboxes)
        model = MiniWobModel(page, solvers, tolerant=tolerant)
        tools = Registry(browser_tools)
        tools.include(pointer_tools)
        runner = Runner(store, tools, Gate.default(), planner=model, sandboxes=sandboxes)
        listed = ", ".join(str(s) for s in seeds)
        task_id = runner.create(
            f"Solve the MiniWoB++ task {task} at {task_url(base_url, task)} with seeds {listed}.",
            Limits(max_steps=calls_per_seed * len(seeds)),
            sandbox=limits,
        )
        approvals = 0
        try:
            # A hung browser or daemon fails the test rather than blocking the suite.
            async with asyncio.timeout(RUN_SECONDS + SEED_SECONDS * len(seeds)):
                state = await runner.run(task_id)
                while state.status == "awaiting_approval":  # a submit: none is expected here
                    decide(store, state, pending(state), approved=True, reviewer="test")
                    approvals += 1
                    state = await runner.run(task_id)
        finally:
            await page.close()
            assert runner.browsers is not None
            await runner.browsers.aclose()
            await sandboxes.release(task_id)
            await sandboxes.aclose()
    return Solved(state, model.episodes, tool_results(store, task_id), approvals)


def assert_all_solved(solved: Solved, seeds: tuple[int, ...]) -> None:
    assert solved.state.status == "done", solved.state.pause
    assert [e.seed for e in solved.episodes] == list(seeds)
    for episode in solved.episodes:
        assert episode.state is not None
        assert episode.state["done"], episode
        assert episode.state["raw_reward"] == 1, episode
        assert episode.state["reward"] > 0.99  # the hour-long limit barely scales it
    assert all(r.ok for r in solved.results), [r.content for r in solved.results if not r.ok]
    assert (solved.state.answer or "").startswith(f"seed {seeds[-1]}: reward 1 ")
