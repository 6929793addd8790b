"""Everything a tool's author documented reaches the model (the whole docstring; parameters in
Google, Sphinx and NumPy style), what is missing is said at load, and return values are what
they say: JSON, bytes kept as an artifact, or refused with the reason."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from agent.events import TaskPaused
from agent.store import Store
from base.errors import ConfigError
from tests.conftest import make_runner, tool_results
from tools import Registry, tool
from tools._docs import DESCRIPTION_LIMIT

AGENT = Path(sys.executable).parent / "agent"


@tool(touches="read")
def google(city: str, days: int = 1) -> str:
    """The forecast for a city.

    Uses the national weather service; figures are in Celsius.

    Args:
        city: the city's name, as on a map.
        days: how many days ahead.
    """
    return city


@tool(touches="read")
def sphinx(city: str, days: int = 1) -> str:
    """The forecast for a city.

    :param city: the city's name, as on a map.
    :param days: how many days ahead.
    """
    return city


@tool(touches="read")
def numpy(city: str, days: int = 1) -> str:
    """The forecast for a city.

    Parameters
    ----------
    city : str
        the city's name, as on a map.
    days : int
        how many days ahead.
    """
    return city


@pytest.mark.parametrize("documented", [google, sphinx, numpy], ids=lambda t: t.name)
def test_parameter_docs_in_every_style_reach_the_schema(documented: Any) -> None:
    properties = documented.spec.parameters["properties"]
    assert properties["city"]["description"] == "the city's name, as on a map."
    assert properties["days"]["description"] == "how many days ahead."
    assert documented.warnings == ()


def test_the_whole_docstring_is_the_description() -> None:
    assert google.spec.description == (
        "The forecast for a city.\n\nUses the national weather service; figures are in Celsius."
    )


def test_a_long_docstring_is_cut_and_said() -> None:
    @tool(touches="read")
    def wordy() -> str:
        return "ok"

    wordy_doc = "Do it.\n\n" + "Many words here. " * 200
    wordy.fn.__doc__ = wordy_doc
    again = tool(touches="read")(wordy.fn)
    assert len(again.description) == DESCRIPTION_LIMIT
    assert again.description.endswith("…")
    assert any("the model is shown the first 1,024" in w for w in again.warnings)


def test_what_is_missing_from_a_tool_is_said() -> None:
    @tool
    def bare(city: str) -> str:
        return city

    @tool(touches="read")
    def misspelt(city: str, days: int) -> str:
        """The forecast.

        Args:
            cty: the city.
        """
        return city

    assert bare.description == "bare"
    assert bare.warnings == (
        "it has no docstring, so the model sees only its name: say what it does",
        "touches is not declared, so it is taken for a read, which the default policy allows "
        "unasked: declare touches='read' if it changes nothing, or what it changes",
    )
    assert misspelt.warnings == (
        "parameter 'city' is not documented: the model sees only its name and type",
        "parameter 'days' is not documented: the model sees only its name and type",
        "the docstring documents 'cty', which is not a parameter (misspelt?)",
    )


def test_warnings_are_said_once_at_load_for_tools_that_are_not_built_in(
    home: Path, tmp_path: Path
) -> None:
    path = tmp_path / "bare_tools.py"
    path.write_text(
        "from agent_runtime import tool\n\n\n@tool\ndef bare(city: str) -> str:\n    return city\n"
    )
    listed = subprocess.run(
        [str(AGENT), "tools", "list", "--tools", str(path)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "COLUMNS": "300"},
    )
    lines = [line for line in listed.stderr.splitlines() if "warning:" in line]
    assert lines == [
        f"warning: tool bare (file {path}): it has no docstring, so the model sees only its "
        "name: say what it does",
        f"warning: tool bare (file {path}): touches is not declared, so it is taken for a read, "
        "which the default policy allows unasked: declare touches='read' if it changes "
        "nothing, or what it changes",
    ]


class Point(BaseModel):
    x: int
    y: int


class Opaque:
    """Not JSON, and nothing says how to write it."""


@dataclasses.dataclass
class Pair:
    a: int
    b: str


class Address(BaseModel):
    street: str


def test_a_return_type_that_is_not_json_is_refused_at_registration() -> None:
    with pytest.raises(ConfigError, match=r"tool opaque: its return type Opaque cannot be written"):

        @tool(touches="read")
        def opaque() -> Opaque:
            """Give one."""
            return Opaque()

    @tool(touches="read", render=lambda o: "an opaque thing")
    def rendered() -> Opaque:
        """Give one."""
        return Opaque()

    @tool(touches="read")
    def point() -> Point:
        """Give one."""
        return Point(x=1, y=2)

    @tool(touches="read")
    def pair() -> Pair:
        """Give one."""
        return Pair(1, "b")

    assert rendered.render is not None
    assert point.render is None
    assert pair.render is None


async def test_return_values_as_the_model_reads_them(store: Store, tmp_path: Path) -> None:
    @tool(touches="read")
    def blob() -> bytes:
        """A small picture."""
        return b"\x89PNG\r\n\x1a\n\x00\x01"

    @tool(touches="read", render=lambda o: "an opaque thing")
    def rendered() -> Opaque:
        """Give one."""
        return Opaque()

    turns: list[Any] = [
        {"plan": ["Get them"]},
        {"tool": "blob", "args": {}},
        {"tool": "rendered", "args": {}},
        {"done": "got them"},
    ]
    runner, _ = make_runner(store, turns, registry=Registry([blob, rendered]))
    task_id = runner.create("get")
    state = await runner.run(task_id)
    assert state.status == "done"
    kept, text = tool_results(store, task_id)
    assert kept.content.startswith("10 bytes of binary data, kept with the task as the artifact")
    name = kept.content.rsplit(" ", 1)[-1]
    artifact = store.path.parent / "artifacts" / task_id / name
    assert artifact.read_bytes() == b"\x89PNG\r\n\x1a\n\x00\x01"
    assert text.content == "an opaque thing"


async def test_a_value_that_is_not_json_pauses_the_task_naming_the_tool_s_file(
    store: Store,
) -> None:
    @tool(touches="read")
    def sloppy() -> Any:
        """Give something."""
        return Opaque()

    turns: list[Any] = [{"plan": ["Get it"]}, {"tool": "sloppy", "args": {}}]
    runner, _ = make_runner(store, turns, registry=Registry([sloppy]))
    task_id = runner.create("get")
    state = await runner.run(task_id)
    assert state.status == "paused"
    [paused] = [e.event for e in store.events(task_id) if isinstance(e.event, TaskPaused)]
    assert paused.reason == "tool_crashed"
    assert f"sloppy ({__file__}:" in paused.detail
    assert "returned a value of type Opaque, which is not JSON" in paused.detail
    assert "<" not in paused.detail.split("\n")[0], "no <object at 0x...> made up for the model"


def test_nested_models_are_closed_like_the_top_level() -> None:
    @tool(touches="read")
    def mail(to: Address) -> str:
        """Mail someone.

        Args:
            to: where.
        """
        return to.street

    schema = mail.spec.parameters
    assert schema["additionalProperties"] is False
    assert schema["$defs"]["Address"]["additionalProperties"] is False
    json.dumps(schema)


def test_needs_approval_asks_where_the_policy_allows_and_never_overrides_a_denial() -> None:
    from policies import Allow, Deny, Gate, RequireApproval

    @tool(touches="read", needs_approval=True)
    def always(city: str) -> str:
        """Ask always.

        Args:
            city: where.
        """
        return city

    @tool(touches="read", needs_approval=lambda args: args["amount"] > 100)
    def pay(amount: int) -> str:
        """Pay.

        Args:
            amount: how much.
        """
        return str(amount)

    gate = Gate.default()
    asked = gate.evaluate(always, {"city": "Oslo"})
    assert isinstance(asked, RequireApproval)
    assert asked.rule == "tool:needs_approval"
    assert "the tool always asks a reviewer (needs_approval)" in asked.reason
    assert '"city": "Oslo"' in asked.preview
    assert isinstance(gate.evaluate(pay, {"amount": 5}), Allow)
    assert isinstance(gate.evaluate(pay, {"amount": 500}), RequireApproval)
    denying = Gate.from_text(
        '[default]\naction = "allow"\n[[rule]]\ntool = "always"\naction = "deny"\n',
        source="t.toml",
    )
    assert isinstance(denying.evaluate(always, {"city": "Oslo"}), Deny)


async def test_the_tools_offered_are_recorded_when_they_change(store: Store) -> None:
    from agent.events import ToolsOffered
    from agent.runner import Runner
    from policies import Gate
    from tests.conftest import scripted

    turns: list[Any] = [{"plan": ["Look"]}, {"tool": "google", "args": {"city": "Oslo"}}]
    runner, _ = make_runner(store, [*turns, {"done": "sunny"}], registry=Registry([google]))
    task_id = runner.create("weather")
    await runner.run(task_id)

    def offered() -> list[ToolsOffered]:
        return [e.event for e in store.events(task_id) if isinstance(e.event, ToolsOffered)]

    [first] = offered()
    assert [t.name for t in first.tools] == ["google", *[s.name for s in first.tools[1:]]]
    assert first.tools[0] == google.spec  # the schema as the model was told it
    # Run again with the same tools: nothing new recorded; with others: recorded again.
    same = Runner(store, Registry([google]), Gate.default(), planner=scripted([]))
    await same.resume(task_id)
    assert len(offered()) == 1
    more = Runner(store, Registry([google, sphinx]), Gate.default(), planner=scripted([]))
    await more.resume(task_id)
    assert [t.name for t in offered()[-1].tools][:2] == ["google", "sphinx"]
    assert len(offered()) == 2
