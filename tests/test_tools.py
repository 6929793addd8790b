"""The tool registry through real parts: decorated functions, real modules and files on disk, and
the importlib entry points of the installed project."""

from __future__ import annotations

import asyncio
import importlib
import json
import math
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import pytest
from pydantic import BaseModel, Field, PlainSerializer

import tools.builtin
from base.errors import ConfigError
from examples import tally_tool
from tools import (
    TOUCHES,
    InvalidArguments,
    Registry,
    Tool,
    ToolContext,
    ToolError,
    ToolResult,
    tool,
)
from tools.builtin import calculate, current_time
from tools.sources import ToolSource

CTX = ToolContext(task_id="task-1", call_id="call-1", idempotency_key="task-1:call-1:0")


# --- tools used across the tests -------------------------------------------------------------


@tool
def search(query: str, limit: int = 10, exact: bool = False) -> str:
    """Search the notes for a phrase,
    newest first.

    Only the titles are returned; open a note to read it.

    Args:
        query: the words to look for. Quotes
            are not needed.
        limit: how many titles at most.
        exact (bool): match the whole phrase only.

    Returns:
        the titles, one a line. This text must not reach any argument.
    """
    return f"{query}|{limit}|{exact}"


@tool
def rename(
    name: Annotated[str, Field(min_length=1)],
    stars: Annotated[int, Field(ge=1, le=5)] = 3,
) -> str:
    """Rename a thing and rate it.

    Args:
        name: the new name.
        stars: a rating from 1 to 5.
    """
    return f"{name}:{stars}"


@tool(touches="external", idempotent=True)
def send(message: str, ctx: ToolContext) -> str:
    """Send a message.

    Args:
        message: what to say.
    """
    return f"{ctx.task_id}/{ctx.call_id}/{ctx.idempotency_key}: {message}"


@tool(name="send")
def other_send(message: str) -> str:
    """Send a message another way."""
    return message


@tool
def maybe_send(message: str, context: ToolContext | None = None) -> str:
    """Send a message, context optional."""
    assert context is not None
    return f"{context.idempotency_key}: {message}"


class Point(BaseModel):
    x: int
    y: int


# --- helpers -----------------------------------------------------------------------------------


@pytest.fixture
def fresh_modules() -> Iterator[None]:
    """Forget the modules a test imported from its temporary folder."""
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.startswith(("agent_tools_", "tmp_toolmod_")):
            del sys.modules[name]


TOOL_FILE = '''
from tools import tool


@tool
def {name}(x: int) -> int:
    """Double a number."""
    return 2 * x
'''


def write_tool_file(path: Path, name: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(TOOL_FILE.format(name=name))
    return path


def names(registry: Registry) -> list[str]:
    return [t.name for t in registry]


# --- the schema --------------------------------------------------------------------------------


def test_schema_comes_from_the_signature_and_the_docstring() -> None:
    spec = search.spec
    assert spec.name == "search"
    # The whole docstring, summary and body (all four peers keep the body too).
    assert spec.description == (
        "Search the notes for a phrase, newest first.\n\n"
        "Only the titles are returned; open a note to read it."
    )
    params = spec.parameters
    assert params["type"] == "object"
    assert params["additionalProperties"] is False
    assert params["required"] == ["query"]
    props = params["properties"]
    assert set(props) == {"query", "limit", "exact"}
    assert props["query"]["type"] == "string"
    assert props["query"]["description"] == "the words to look for. Quotes are not needed."
    assert props["limit"] == {
        "type": "integer",
        "default": 10,
        "description": "how many titles at most.",
        "title": "Limit",
    }
    assert props["exact"]["type"] == "boolean"
    assert props["exact"]["default"] is False
    # `exact (bool): ...` is read too, and the Returns: section stays out of every argument.
    assert props["exact"]["description"] == "match the whole phrase only."
    assert "Returns" not in json.dumps(params)
    assert "must not reach" not in json.dumps(params)


def test_schema_is_valid_json() -> None:
    assert json.loads(json.dumps(search.spec.parameters)) == search.spec.parameters


def test_without_a_docstring_the_name_is_the_description() -> None:
    @tool
    def ping(host: str) -> str:
        return host

    assert ping.spec.description == "ping"
    assert "description" not in ping.spec.parameters["properties"]["host"]
    assert ping.spec.parameters["required"] == ["host"]


def test_a_description_may_start_on_the_line_after_the_name() -> None:
    @tool
    def fetch(url: str, retries: int = 0) -> str:
        """Fetch a page.

        Args:
            url:
                the address,
                with its scheme.
            retries: how often to try again.
        Raises:
            ToolError: on a 404.
        """
        return url

    props = fetch.spec.parameters["properties"]
    assert props["url"]["description"] == "the address, with its scheme."
    assert props["retries"]["description"] == "how often to try again."


def test_annotated_constraints_appear_in_the_schema() -> None:
    props = rename.spec.parameters["properties"]
    assert props["name"]["minLength"] == 1
    assert props["name"]["description"] == "the new name."
    assert props["stars"]["minimum"] == 1
    assert props["stars"]["maximum"] == 5
    assert props["stars"]["default"] == 3
    assert rename.spec.parameters["required"] == ["name"]


def test_annotated_constraints_are_enforced_by_parse() -> None:
    assert rename.parse({"name": "x", "stars": 5}) == {"name": "x", "stars": 5}
    assert rename.parse('{"name": "x"}') == {"name": "x", "stars": 3}
    with pytest.raises(InvalidArguments, match=r"field 'name': String should have at least 1"):
        rename.parse({"name": ""})
    with pytest.raises(InvalidArguments, match=r"field 'stars': .*less than or equal to 5.*got 6"):
        rename.parse({"name": "x", "stars": 6})
    with pytest.raises(InvalidArguments, match=r"field 'stars': .*greater than or equal to 1"):
        rename.parse({"name": "x", "stars": 0})


@pytest.mark.parametrize(("t", "param"), [(send, "ctx"), (maybe_send, "context")])
def test_a_context_parameter_is_not_in_the_schema(t: Tool, param: str) -> None:
    assert t.wants_context
    assert param not in t.spec.parameters["properties"]
    assert param not in t.spec.parameters.get("required", [])
    assert list(t.spec.parameters["properties"]) == ["message"]
    with pytest.raises(InvalidArguments, match=f"unexpected field '{param}'"):
        t.parse({"message": "hi", param: {"task_id": "t"}})


async def test_the_context_is_injected_at_invoke_time() -> None:
    result = await send.invoke(send.validate({"message": "hi"}), CTX)
    assert result == ToolResult(ok=True, content="task-1/call-1/task-1:call-1:0: hi")
    other = ToolContext(task_id="task-1", call_id="call-2", idempotency_key="key-2")
    result = await maybe_send.invoke({"message": "yo"}, other)
    assert result.content == "key-2: yo"


async def test_a_tool_that_wants_a_context_refuses_to_run_without_one() -> None:
    with pytest.raises(TypeError, match="send needs a ToolContext"):
        await send.invoke({"message": "hi"}, None)


async def test_a_tool_without_a_context_parameter_runs_without_one() -> None:
    assert not search.wants_context
    result = await search.invoke({"query": "q"}, None)
    assert result.content == "q|10|False"


def test_the_tally_example_declares_its_effects() -> None:
    tally = tally_tool.tally
    assert tally.touches == "external"
    assert tally.has_side_effects
    assert tally.reconcile is tally_tool.already_tallied
    assert tally.timeout == 10
    assert not tally.idempotent
    assert tally.wants_context
    assert tally.spec.parameters["required"] == ["counter"]
    assert tally.spec.parameters["properties"]["amount"]["default"] == 1


async def test_the_tally_example_records_the_idempotency_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TALLY_LEDGER", str(tmp_path / "ledger.jsonl"))
    tally = tally_tool.tally
    result = await tally.invoke(tally.validate({"counter": "desk", "amount": 2}), CTX)
    assert result == ToolResult(ok=True, content="desk is now 2")
    assert tally_tool.read_ledger() == [
        {"key": CTX.idempotency_key, "counter": "desk", "amount": 2, "total": 2}
    ]
    assert tally_tool.already_tallied(CTX) == "desk is now 2"
    assert tally_tool.already_tallied(ToolContext("task-1", "call-9", "other")) is None
    refused = await tally.invoke({"counter": "desk", "amount": 5000}, CTX)
    assert refused.ok is False
    assert refused.error_code == "tool_error"


# --- the decorator -----------------------------------------------------------------------------


def test_bare_decorator_uses_the_defaults() -> None:
    assert isinstance(search, Tool)
    assert search.name == "search"
    assert search.touches == "read"
    assert not search.has_side_effects
    assert search.timeout == 30.0
    assert search.reconcile is None
    assert search.idempotent is False
    assert repr(search) == "<Tool search touches=read>"


def test_called_decorator_keeps_its_metadata() -> None:
    def seen(ctx: ToolContext) -> str | None:
        return None

    @tool(name="deploy-site", touches="deploy", timeout=2.5, reconcile=seen, idempotent=True)
    def deploy(site: str) -> str:
        """Deploy a site."""
        return site

    assert deploy.name == "deploy-site"
    assert deploy.spec.name == "deploy-site"
    assert deploy.touches == "deploy"
    assert deploy.has_side_effects
    assert deploy.timeout == 2.5
    assert deploy.reconcile is seen
    assert deploy.idempotent is True
    assert deploy.fn("x") == "x"

    @tool()
    def plain() -> str:
        """Nothing."""
        return ""

    assert plain.name == "plain"
    assert plain.touches == "read"
    assert plain.spec.parameters["properties"] == {}


@pytest.mark.parametrize("touches", TOUCHES)
def test_every_declared_touch_is_accepted(touches: Any) -> None:
    @tool(touches=touches)
    def act() -> str:
        """Act."""
        return ""

    assert act.touches == touches
    assert act.has_side_effects is (touches != "read")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"name": "bad name"}, r"tool name 'bad name' must match"),
        ({"name": "9lives"}, r"tool name '9lives' must match"),
        ({"name": "x" * 65}, r"tool name 'x{65}' must match"),
        ({"name": "dots.not.allowed"}, r"must match"),
        ({"touches": "delete"}, r"touches='delete' is not one of read, write, external, deploy"),
        ({"timeout": 0}, r"timeout must be positive, got 0"),
        ({"timeout": -1.5}, r"timeout must be positive, got -1.5"),
        ({"timeout": math.nan}, r"timeout must be positive, got nan"),
    ],
)
def test_bad_metadata_is_a_config_error(options: dict[str, Any], message: str) -> None:
    def act() -> str:
        return ""

    with pytest.raises(ConfigError, match=message) as info:
        tool(**options)(act)
    assert info.value.code == "config_invalid"


def test_a_parameter_without_an_annotation_is_a_config_error() -> None:
    def act(path: str, mode) -> str:  # type: ignore[no-untyped-def]
        return path

    with pytest.raises(ConfigError, match=r"tool act: parameter 'mode' needs a type annotation"):
        tool(act)


def test_var_positional_is_a_config_error() -> None:
    def act(*paths: str) -> str:
        return ""

    with pytest.raises(ConfigError, match=r"tool act: \*args and \*\*kwargs cannot be described"):
        tool(act)


def test_var_keyword_is_a_config_error() -> None:
    def act(path: str, **options: str) -> str:
        return path

    with pytest.raises(ConfigError, match=r"tool act: \*args and \*\*kwargs cannot be described"):
        tool(act)


def test_an_unresolvable_annotation_is_a_config_error() -> None:
    def act(path: int) -> int:
        return path

    act.__annotations__ = {"path": "NoSuchType", "return": "int"}
    with pytest.raises(ConfigError, match=r"tool act: cannot resolve an annotation: .*NoSuchType"):
        tool(act)


class Opaque:
    """A type pydantic cannot describe."""


def test_a_type_pydantic_cannot_validate_is_a_config_error() -> None:
    def act(thing: Opaque) -> str:
        return ""

    with pytest.raises(ConfigError, match=r"tool act: Unable to generate pydantic-core schema"):
        tool(act)


def test_a_type_without_a_json_schema_is_a_config_error() -> None:
    def act(callback: Callable[[], int]) -> str:
        return ""

    with pytest.raises(ConfigError, match=r"tool act: Cannot generate a JsonSchema"):
        tool(act)


def test_a_private_parameter_name_is_a_config_error() -> None:
    def act(_secret: str) -> str:
        return _secret

    with pytest.raises(ConfigError, match=r"tool act: Fields must not use names with leading"):
        tool(act)


# --- the registry ------------------------------------------------------------------------------


def test_a_registry_holds_tools_by_name() -> None:
    registry = Registry([search, rename])
    assert len(registry) == 2
    assert names(registry) == ["search", "rename"]
    assert registry.get("search") is search
    assert registry.get("nope") is None
    assert "rename" in registry
    assert "nope" not in registry
    assert registry.specs() == (search.spec, rename.spec)
    assert registry.add(send) is send
    assert names(registry) == ["search", "rename", "send"]


def test_duplicate_names_are_a_config_error() -> None:
    @tool(name="search")
    def other_search(text: str) -> str:
        """Another search."""
        return text

    registry = Registry([search])
    with pytest.raises(ConfigError, match=r"a tool named 'search' is already registered"):
        registry.add(other_search)
    registry.add(search)  # the same tool again is still one tool
    with pytest.raises(ConfigError, match=r"'search' is already registered"):
        Registry([search, other_search])
    assert registry.get("search") is search
    assert len(registry) == 1


def test_include_a_tool_a_list_and_a_registry() -> None:
    registry = Registry()
    registry.include(search)
    registry.include([rename, send])
    registry.include(Registry([maybe_send]))
    assert names(registry) == ["search", "rename", "send", "maybe_send"]
    with pytest.raises(ConfigError, match=r"'send' is already registered"):
        registry.include(Registry([other_send]))


def test_include_a_module_takes_its_tools() -> None:
    registry = Registry()
    registry.include(tally_tool)
    assert names(registry) == ["tally"]
    assert registry.get("tally") is tally_tool.tally


def test_include_a_module_with_tools_and_their_registry_takes_each_tool_once() -> None:
    # tools.builtin defines its tools and a registry holding them.
    registry = Registry()
    registry.include(tools.builtin)
    assert sorted(names(registry)) == ["calculate", "current_time", "read_artifact"]
    assert registry.get("calculate") is calculate


def test_include_a_module_without_tools_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"module json defines no tools"):
        Registry().include(json)


def test_load_module_by_dotted_name() -> None:
    registry = Registry()
    registry.load_module("examples.tally_tool")
    assert names(registry) == ["tally"]
    builtin = Registry()
    builtin.load_module("tools.builtin")
    assert sorted(names(builtin)) == ["calculate", "current_time", "read_artifact"]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("tools.builtin:calculate", ["calculate"]),
        ("tools.builtin:registry", ["calculate", "current_time", "read_artifact"]),
        ("examples.tally_tool:tally", ["tally"]),
    ],
)
def test_load_module_with_an_attribute(spec: str, expected: list[str]) -> None:
    registry = Registry()
    registry.load_module(spec)
    assert names(registry) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("tools.builtin:nothing_here", r"tools.builtin:nothing_here is not a tool, a registry"),
        ("json:dumps", r"json:dumps is not a tool, a registry or a module"),
        ("json", r"module json defines no tools"),
        ("no_such_tool_module", r"cannot import tool module 'no_such_tool_module'"),
        ("tools.no_such_thing:x", r"cannot import tool module 'tools.no_such_thing'"),
    ],
)
def test_load_module_errors_are_config_errors(spec: str, message: str) -> None:
    registry = Registry()
    with pytest.raises(ConfigError, match=message):
        registry.load_module(spec)
    assert len(registry) == 0


@pytest.mark.usefixtures("fresh_modules")
def test_load_module_that_raises_on_import_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "tmp_toolmod_boom.py").write_text("raise RuntimeError('no network here')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(
        ConfigError,
        match=r"cannot import tool module 'tmp_toolmod_boom': RuntimeError: no network here",
    ):
        Registry().load_module("tmp_toolmod_boom")


@pytest.mark.usefixtures("fresh_modules")
def test_load_module_from_a_file(tmp_path: Path) -> None:
    path = write_tool_file(tmp_path / "mytools.py", "double")
    registry = Registry()
    registry.load_module(str(path))
    assert names(registry) == ["double"]
    t = registry.get("double")
    assert t is not None
    assert t.spec.description == "Double a number."
    assert t.fn(21) == 42
    # The same file loaded again is the same module, not a second copy of its tools.
    again = Registry()
    again.load_module(str(path))
    assert again.get("double") is t


@pytest.mark.usefixtures("fresh_modules")
def test_load_files_with_the_same_name_from_two_folders(tmp_path: Path) -> None:
    first = write_tool_file(tmp_path / "a" / "tools_here.py", "first_double")
    second = write_tool_file(tmp_path / "b" / "tools_here.py", "second_double")
    registry = Registry()
    registry.load_module(str(first))
    registry.load_module(str(second))
    assert names(registry) == ["first_double", "second_double"]


def test_load_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.py"
    with pytest.raises(ConfigError, match=r"no tool file .*nowhere\.py"):
        Registry().load_module(str(missing))


@pytest.mark.usefixtures("fresh_modules")
def test_load_a_file_that_raises_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "broken_tools.py"
    path.write_text("import no_such_dependency_for_tools\n")
    before = set(sys.modules)
    with pytest.raises(
        ConfigError,
        match=r"tool file .*broken_tools\.py failed to load: ModuleNotFoundError: .*"
        r"no_such_dependency_for_tools",
    ):
        Registry().load_module(str(path))
    # A failed file leaves nothing behind, so a fixed file loads next time.
    assert {m for m in set(sys.modules) - before if m.startswith("agent_tools_")} == set()
    write_tool_file(path, "fixed")
    registry = Registry()
    registry.load_module(str(path))
    assert names(registry) == ["fixed"]


@pytest.mark.usefixtures("fresh_modules")
def test_load_a_file_without_tools_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "empty_tools.py"
    path.write_text("VALUE = 1\n")
    with pytest.raises(ConfigError, match=r"file \S*empty_tools\.py defines no tools"):
        Registry().load_module(str(path))


def test_load_entry_points_finds_the_builtin_tools() -> None:
    registry = Registry()
    registry.load_entry_points()
    assert {"calculate", "current_time"} <= set(names(registry))
    assert registry.get("calculate") is calculate
    assert registry.get("current_time") is current_time


@pytest.fixture
def fake_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An installed distribution (a dist-info folder on sys.path) declaring tool entry points."""
    info = tmp_path / "agent_tools_fixture-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: agent-tools-fixture\nVersion: 0.1\n"
    )
    (info / "entry_points.txt").write_text(
        "[agent.tools.test-good]\n"
        "calc = tools.builtin:calculate\n"
        "tally = examples.tally_tool\n"
        "\n"
        "[agent.tools.test-missing-module]\n"
        "ghost = no_such_module_for_tool_tests:thing\n"
        "\n"
        "[agent.tools.test-missing-attribute]\n"
        "absent = tools.builtin:not_there\n"
        "\n"
        "[agent.tools.test-not-a-tool]\n"
        "dumper = json:dumps\n"
        "\n"
        "[agent.tools.test-mixed]\n"
        "ghost = no_such_module_for_tool_tests:thing\n"
        "tally = examples.tally_tool\n"
        "dumper = json:dumps\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()


@pytest.mark.usefixtures("fake_dist")
def test_load_entry_points_of_another_group() -> None:
    registry = Registry()
    registry.load_entry_points(group="agent.tools.test-good")
    assert sorted(names(registry)) == ["calculate", "tally"]


@pytest.mark.usefixtures("fake_dist")
@pytest.mark.parametrize(
    ("group", "message"),
    [
        (
            "agent.tools.test-missing-module",
            r"skipped the tools of entry point ghost = no_such_module_for_tool_tests:thing "
            r"\(package agent-tools-fixture 0.1\): ModuleNotFoundError: No module named "
            r"'no_such_module_for_tool_tests'",
        ),
        (
            "agent.tools.test-missing-attribute",
            r"skipped the tools of entry point absent = tools.builtin:not_there "
            r"\(package agent-tools-fixture 0.1\): AttributeError",
        ),
        (
            "agent.tools.test-not-a-tool",
            r"entry point dumper = json:dumps \(package agent-tools-fixture 0.1\): ConfigError: "
            r"json:dumps is not a tool, a registry or a module",
        ),
    ],
)
def test_a_broken_entry_point_is_skipped_and_said(group: str, message: str) -> None:
    registry = Registry()
    registry.load_entry_points(group=group)  # no exception: the runtime goes on
    assert len(registry) == 0
    [problem] = registry.problems
    assert re.search(message, str(problem)), str(problem)
    assert "Traceback" in problem.trace


@pytest.mark.usefixtures("fake_dist")
def test_a_broken_plugin_beside_good_ones_stops_none_of_them() -> None:
    registry = Registry()
    registry.load_entry_points(group="agent.tools.test-mixed")
    assert names(registry) == ["tally"]
    assert registry.source_of("tally") == ToolSource(
        "entry point", "tally = examples.tally_tool (package agent-tools-fixture 0.1)"
    )
    assert sorted(p.source.name.split(" ")[0] for p in registry.problems) == ["dumper", "ghost"]


def test_an_empty_entry_point_group_loads_nothing() -> None:
    registry = Registry()
    registry.load_entry_points(group="agent.tools.no-such-group")
    assert len(registry) == 0


# --- parse and validate ------------------------------------------------------------------------


def test_parse_fills_defaults_and_returns_plain_values() -> None:
    assert search.parse('{"query": "cats"}') == {"query": "cats", "limit": 10, "exact": False}
    assert search.parse({"query": "cats", "limit": 2}) == {
        "query": "cats",
        "limit": 2,
        "exact": False,
    }
    model = search.validate('{"query": "cats", "exact": true}')
    assert isinstance(model, search.args_model)
    assert model.model_dump() == {"query": "cats", "limit": 10, "exact": True}


def test_empty_arguments_mean_no_arguments() -> None:
    assert current_time.parse("") == {}
    assert current_time.parse({}) == {}
    with pytest.raises(InvalidArguments, match=r"missing field 'query'"):
        search.parse("")


def test_each_wrong_field_is_named() -> None:
    with pytest.raises(InvalidArguments) as info:
        search.parse({"limit": "ten", "bogus": 1, "extra": None})
    message = str(info.value)
    assert message.startswith("invalid arguments for search: ")
    assert "missing field 'query'" in message
    assert "unexpected field 'bogus'" in message
    assert "unexpected field 'extra'" in message
    assert "field 'limit': Input should be a valid integer" in message
    assert '(got "ten")' in message
    assert message.count(";") == 3


def test_a_wrong_type_says_what_was_got() -> None:
    with pytest.raises(InvalidArguments, match=r"field 'exact': .*boolean.* \(got \[1, 2\]\)"):
        search.parse('{"query": "q", "exact": [1, 2]}')
    with pytest.raises(InvalidArguments, match=r"field 'query': .*string.* \(got 42\)"):
        search.parse({"query": 42})


def test_invalid_json_is_named() -> None:
    with pytest.raises(InvalidArguments, match=r"invalid arguments for search: arguments are not"):
        search.parse('{"query": ')
    with pytest.raises(InvalidArguments, match=r"not valid JSON"):
        search.parse("query=cats")


def test_arguments_that_are_not_an_object_are_named() -> None:
    with pytest.raises(InvalidArguments, match=r"field '\(arguments\)'.* \(got \[1\]\)"):
        search.parse("[1]")


def test_a_very_long_got_value_is_shortened() -> None:
    long_value = "z" * 500
    with pytest.raises(InvalidArguments) as info:
        search.parse({"query": "q", "limit": long_value})
    message = str(info.value)
    assert long_value not in message
    got = message.split("(got ", 1)[1].removesuffix(")")
    assert got == '"' + "z" * 56 + "..."
    assert len(got) == 60


def test_a_got_value_of_exactly_sixty_characters_is_kept() -> None:
    value = "y" * 58  # 60 with its quotes
    with pytest.raises(InvalidArguments) as info:
        search.parse({"query": "q", "limit": value})
    assert f'(got "{value}")' in str(info.value)


def test_nested_fields_are_named_with_their_path() -> None:
    @tool
    def tag(labels: list[int]) -> str:
        """Tag."""
        return ""

    with pytest.raises(InvalidArguments, match=r"field 'labels\.1': .*integer.* \(got \"b\"\)"):
        tag.parse({"labels": [1, "b"]})


# --- invoke ------------------------------------------------------------------------------------


@tool
def add(a: int, b: int = 1) -> int:
    """Add two numbers."""
    return a + b


@tool
async def add_later(a: int, b: int = 1) -> int:
    """Add two numbers, after a pause."""
    await asyncio.sleep(0.01)
    return a + b


@pytest.mark.parametrize("t", [add, add_later])
@pytest.mark.parametrize("form", ["model", "dict"])
async def test_invoke_sync_and_async_tools(t: Tool, form: str) -> None:
    arguments = t.validate('{"a": 40, "b": 2}') if form == "model" else t.parse({"a": 40, "b": 2})
    result = await t.invoke(arguments, None)
    assert result == ToolResult(ok=True, content="42", error_code=None)


async def test_invoke_validates_a_dict_it_is_given() -> None:
    with pytest.raises(InvalidArguments, match=r"missing field 'a'"):
        await add.invoke({"b": 2}, None)


async def test_invoke_restores_rich_types_from_parsed_arguments() -> None:
    seen: list[datetime] = []

    @tool
    def schedule(when: datetime) -> str:
        """Schedule."""
        seen.append(when)
        return when.isoformat()

    recorded = schedule.parse({"when": "2025-01-02T03:04:05+00:00"})
    assert recorded == {"when": "2025-01-02T03:04:05Z"}
    result = await schedule.invoke(recorded, None)
    assert result.ok
    assert seen == [datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)]


@tool
def lookup(key: str) -> str:
    """Look a key up."""
    if key == "missing":
        raise ToolError(f"no entry {key!r}", code="not_found")
    if key == "plain":
        raise ToolError("plain failure")
    return key


@tool
async def lookup_later(key: str) -> str:
    """Look a key up, asynchronously."""
    return lookup.fn(key)  # type: ignore[no-any-return]


@pytest.mark.parametrize("t", [lookup, lookup_later])
async def test_a_tool_error_becomes_a_failed_result(t: Tool) -> None:
    result = await t.invoke({"key": "missing"}, None)
    assert result == ToolResult(ok=False, content="no entry 'missing'", error_code="not_found")
    result = await t.invoke({"key": "plain"}, None)
    assert result == ToolResult(ok=False, content="plain failure", error_code="tool_error")
    assert (await t.invoke({"key": "k"}, None)).ok


async def test_an_async_tool_that_overruns_times_out() -> None:
    @tool(timeout=0.2)
    async def stall() -> str:
        """Stall."""
        await asyncio.sleep(30)
        return "done"

    started = time.monotonic()
    result = await stall.invoke({}, None)
    elapsed = time.monotonic() - started
    assert result == ToolResult(
        ok=False, content="stall timed out after 0.2 s", error_code="timeout"
    )
    assert 0.15 <= elapsed < 2


async def test_a_sync_tool_that_overruns_times_out() -> None:
    release = threading.Event()

    @tool(timeout=0.2)
    def block() -> str:
        """Block."""
        release.wait(30)
        return "done"

    started = time.monotonic()
    try:
        result = await block.invoke({}, None)
        elapsed = time.monotonic() - started
    finally:
        release.set()  # the abandoned thread ends, so the loop can close its executor
    assert result.ok is False
    assert result.error_code == "timeout"
    assert result.content == "block timed out after 0.2 s"
    assert 0.15 <= elapsed < 2


async def test_a_tool_within_its_timeout_is_not_cut_short() -> None:
    @tool(timeout=2)
    async def brief() -> str:
        """Brief."""
        await asyncio.sleep(0.05)
        return "done"

    assert await brief.invoke({}, None) == ToolResult(ok=True, content="done")


async def test_any_other_exception_from_a_sync_tool_propagates() -> None:
    @tool
    def buggy(n: int) -> int:
        """Buggy."""
        return [1, 2][n]

    with pytest.raises(IndexError, match="list index out of range"):
        await buggy.invoke({"n": 5}, None)


async def test_any_other_exception_from_an_async_tool_propagates() -> None:
    @tool
    async def buggy() -> str:
        """Buggy."""
        raise KeyError("state")

    with pytest.raises(KeyError, match="state"):
        await buggy.invoke({}, None)


@pytest.mark.parametrize(
    ("value", "content"),
    [
        ({"a": [1, 2], "b": None}, '{"a": [1, 2], "b": null}'),
        ([1, "two", 3.5], '[1, "two", 3.5]'),
        (7, "7"),
        (True, "true"),
        (None, "null"),
        ("as is", "as is"),
        ({"name": "Zoë ✓"}, '{"name": "Zoë ✓"}'),
        (Point(x=1, y=2), '{"x":1,"y":2}'),
        # Beyond what json writes, as pydantic does (ISO 8601), not str() of the value.
        ({"at": datetime(2025, 1, 2, tzinfo=UTC)}, '{"at":"2025-01-02T00:00:00Z"}'),
    ],
)
async def test_non_string_values_are_rendered_as_json(value: Any, content: str) -> None:
    @tool
    def give() -> Any:
        """Give a value."""
        return value

    result = await give.invoke({}, None)
    assert result == ToolResult(ok=True, content=content)


# --- the builtin tools -------------------------------------------------------------------------


def test_the_builtin_registry() -> None:
    assert names(tools.builtin.registry) == ["calculate", "current_time", "read_artifact"]
    spec = calculate.spec
    assert spec.description == "Evaluate an arithmetic expression exactly as written, e.g. " + (
        "`(17 * 3) / 4`."
    )
    assert spec.parameters["required"] == ["expression"]
    described = spec.parameters["properties"]["expression"]["description"]
    assert described.startswith("numbers, + - * / // % ** and parentheses; sqrt, log")
    assert described.endswith("max; the constants pi and e.")
    assert calculate.touches == "read"
    assert current_time.touches == "read"


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("(17 * 3) / 4", "12.75"),
        ("1 + 2 * 3", "7"),
        ("7 // 2", "3"),
        ("7 % 3", "1"),
        ("-7 // 2", "-4"),
        ("2 ** 10", "1024"),
        ("2 ** -1", "0.5"),
        ("2 ** 0.5", str(math.sqrt(2))),
        ("-3 + +2", "-1"),
        ("1.5e3", "1500.0"),
        ("sqrt(16)", "4.0"),
        ("log(e)", "1.0"),
        ("log(8, 2)", "3.0"),
        ("exp(0)", "1.0"),
        ("abs(-2.5)", "2.5"),
        ("round(2.567, 2)", "2.57"),
        ("round(7.5)", "8"),
        ("min(3, -1, 2)", "-1"),
        ("max(1, 5, 3)", "5"),
        ("pi", str(math.pi)),
        ("2 * pi", str(2 * math.pi)),
        ("2 ** 10000 % 7", "2"),
    ],
)
async def test_calculate(expression: str, value: str) -> None:
    result = await calculate.invoke({"expression": expression}, None)
    assert result == ToolResult(ok=True, content=value)


@pytest.mark.parametrize(
    "expression",
    [
        "__import__('os')",
        "__import__('os').system('true')",
        "open('x')",
        "(1).__class__",
        "().__class__.__bases__[0].__subclasses__()",
        "math.sqrt(4)",
        "print(1)",
        "eval('1')",
        "x + 1",
        "'a' * 3",
        "[1, 2]",
        "True + 1",
        "1j",
        "1 < 2",
        "1 << 2",
        "1 if 1 else 2",
        "lambda: 1",
        "sqrt(x=4)",
        "max(*[1, 2])",
        "(lambda: 1)()",
    ],
)
def test_calculate_refuses_what_is_not_arithmetic(expression: str) -> None:
    with pytest.raises(ToolError, match=r"not allowed in an expression: ") as info:
        calculate.fn(expression)
    assert info.value.code == "tool_error"
    assert "pi and e are" in str(info.value)


async def test_a_refused_expression_is_a_failed_result_for_the_model() -> None:
    result = await calculate.invoke({"expression": "__import__('os')"}, None)
    assert result.ok is False
    assert result.error_code == "tool_error"
    assert result.content.startswith("not allowed in an expression: \"__import__('os')\"")


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("9 ** 99999", r"exponent 99999 is too large"),
        ("2 ** -20000", r"exponent -20000 is too large"),
        ("2 ** 2 ** 20", r"exponent 1048576 is too large"),
        ("(9 ** 9999) ** 9999", r"the result of \*\* would be too large"),
        ("(10 ** 5000) ** 100", r"the result of \*\* would be too large"),
        ("(2 ** 9999) * " * 12 + "1", r"a number in the expression is too large"),
        ("round(1, -10 ** 7)", r"cannot round to -10000000 digits"),
        ("2.0 ** 5000", r"OverflowError"),
        ("exp(1000)", r"OverflowError: math range error"),
        ("10 ** 5000", r"ValueError: Exceeds the limit .* digits"),
    ],
)
def test_calculate_refuses_huge_numbers_quickly(expression: str, message: str) -> None:
    started = time.monotonic()
    with pytest.raises(ToolError, match=message):
        calculate.fn(expression)
    assert time.monotonic() - started < 1


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("1 / 0", r"ZeroDivisionError: division by zero"),
        ("1 // 0", r"ZeroDivisionError"),
        ("5 % 0", r"ZeroDivisionError"),
        ("1.0 / 0", r"ZeroDivisionError"),
        ("log(0)", r"ValueError: math domain error"),
        ("sqrt(-1)", r"ValueError: math domain error"),
        ("min()", r"TypeError: min expected at least 1 argument"),
        ("round(1.5, 0.5)", r"TypeError"),
        ("1 +", r"not an expression: "),
        ("", r"not an expression: "),
        ("1; 2", r"not an expression: "),
        ("-" * 5000 + "1", r"not an expression: nested too deeply|RecursionError"),
        ("-" * 2000 + "1", r"RecursionError|nested too deeply"),
    ],
)
def test_calculate_errors_are_tool_errors(expression: str, message: str) -> None:
    with pytest.raises(ToolError, match=message):
        calculate.fn(expression)


async def test_current_time_is_now_in_utc() -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    result = await current_time.invoke({}, None)
    after = datetime.now(UTC)
    assert result.ok
    stamp = datetime.fromisoformat(result.content)
    assert stamp.utcoffset() == timedelta(0)
    assert stamp.microsecond == 0
    assert before <= stamp <= after


@pytest.mark.parametrize(
    "annotation",
    [
        Annotated[str, Field(alias="url")],
        Annotated[str, Field(validation_alias="url")],
        Annotated[str, Field(exclude=True)],
        Annotated[str, PlainSerializer(lambda v: "https://example.com/")],
    ],
    ids=["alias", "validation_alias", "exclude", "serializer"],
)
def test_a_parameter_seen_differently_by_the_gate_and_the_tool_is_refused(
    annotation: Any,
) -> None:
    """The gate judges the serialised arguments; the tool gets the validated ones. A field whose
    two forms differ would let `http://169.254.169.254/` run while the gate saw something else."""

    def fetch(target: str) -> str:
        """Fetch a URL.

        Args:
            target: the URL.
        """
        return target

    fetch.__annotations__["target"] = annotation
    with pytest.raises(ConfigError, match="the policy gate must judge arguments as the tool"):
        tool(fetch)


@pytest.mark.parametrize(
    "raw", ['{"amount": "Infinity"}', '{"amount": "NaN"}', '{"amount": 1e999}']
)
def test_non_finite_numbers_are_refused(raw: str) -> None:
    @tool
    def pay(amount: float) -> str:
        """Pay.

        Args:
            amount: euros.
        """
        return str(amount)

    with pytest.raises(InvalidArguments, match="finite number"):
        pay.parse(raw)


def test_calculate_refuses_long_input_before_parsing_it() -> None:
    with pytest.raises(InvalidArguments, match="at most 1000 characters"):
        calculate.parse(json.dumps({"expression": "-" * 20_000 + "1"}))
