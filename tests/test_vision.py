"""A screenshot with marks reaches a model that sees as a picture, end to end: the runner, the
browser in the task's sandbox, and an HTTP backend talking to a local server that speaks the
provider's wire format (OpenAI's and Anthropic's, as `test_http_conformance` scripts them)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import pytest

from agent.events import Limits
from agent.runner import Runner
from agent.store import Store
from policies import Gate
from sandbox.limits import SandboxConfig, SandboxLimits
from sandbox.manager import Sandboxes, store_scope
from tools import Registry
from tools.browser import registry as browser_tools

from .conftest import tool_results
from .site_server import Site, serve_site
from .test_http_conformance import NO_WAIT, AnthropicWire, OpenAIWire, Wire
from .wire_server import WireServer


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    with serve_site() as served:
        yield served


async def see(store: Store, site: Site, wire: Wire, *, vision: bool) -> list[dict[str, object]]:
    """Run a one-step task whose model opens the form page, takes a screenshot and is done; the
    request bodies the model's server received."""
    with WireServer() as server:
        url = site.url("site/form.html")
        server.reply(
            wire.tool_call("call_1", "browser_open", json.dumps({"url": url})),
            wire.tool_call("call_2", "browser_screenshot", "{}"),
            wire.tool_call("call_3", "complete_step", json.dumps({"summary": "seen"})),
        )
        model = wire.backend(server.url, retry=NO_WAIT)
        model.vision = vision
        sandboxes = Sandboxes(
            SandboxConfig(pool_size=0, allow_private=True), scope=store_scope(store.path)
        )  # the site is on loopback
        runner = Runner(
            store, Registry(browser_tools), Gate.default(), planner=model, sandboxes=sandboxes
        )
        limits = SandboxLimits(network="proxy", allow_domains=(site.host,))
        task_id = runner.create("Look at the sign-up form.", Limits(), sandbox=limits, plan=False)
        try:
            state = await runner.run(task_id)
        finally:
            assert runner.browsers is not None
            await runner.browsers.aclose()
            await sandboxes.release(task_id)
            await sandboxes.aclose()
            await model.aclose()
        assert state.status == "done", state.pause
        shot = tool_results(store, task_id)[1]
        assert shot.ok, shot.content
        assert "elements are framed and tagged with their refs" in shot.content
        return [r.json for r in server.requests]


@pytest.mark.parametrize("wire", [OpenAIWire(), AnthropicWire()], ids=["openai", "anthropic"])
async def test_a_marked_screenshot_reaches_a_model_that_sees_as_a_picture(
    store: Store, site: Site, wire: Wire
) -> None:
    bodies = await see(store, site, wire, vision=True)
    assert len(bodies) == 3
    assert wire.pictures(bodies[1]) == []  # nothing to see before the screenshot
    [(answers, url)] = wire.pictures(bodies[2])
    assert answers == "call_2"
    head, _, data = url.partition(",")
    assert head == "data:image/jpeg;base64"
    picture = base64.b64decode(data)
    assert picture.startswith(b"\xff\xd8")  # a JPEG
    assert 2_000 < len(picture) <= 400_000


async def test_a_model_that_cannot_see_is_sent_the_text_only(store: Store, site: Site) -> None:
    wire = OpenAIWire()
    bodies = await see(store, site, wire, vision=False)
    assert [wire.pictures(body) for body in bodies] == [[], [], []]
    assert "elements are framed and tagged with their refs" in json.dumps(bodies[2])
