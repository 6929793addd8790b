"""OpenAPI tools: the example spec (11 operations with path, query and header parameters, JSON
bodies, `$ref`s and enums) becomes typed tools; a bad argument is refused before any request; a
scripted run calls them against the real example service, through a real sandbox's egress
proxy, with the API key filled in from a secret; a spec that cannot be read says where."""

from __future__ import annotations

import base64
import json
import secrets as random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.events import ToolResulted
from agent.runner import Runner
from agent.store import Store
from base.errors import ConfigError
from examples.openapi.inventory_server import Inventory, serve
from policies import Gate
from sandbox.manager import Sandboxes
from tools import InvalidArguments, Registry, ToolContext
from tools.builtin import registry as builtin
from tools.openapi import OpenAPISource, openapi_tools
from tools.secrets import Secret, Secrets
from tools.tool import Tool

from .apis import SMALL, boxes_fixture  # noqa: F401 - a fixture
from .conftest import REPO, scripted

SPEC = REPO / "examples" / "openapi" / "inventory.yaml"
KEY = "inv-key-" + random.token_hex(8)


def _tools(server: str = "http://127.0.0.1:8710") -> dict[str, Tool]:
    source = OpenAPISource(spec=str(SPEC), server=server, secret="INVENTORY_KEY")
    return {t.name: t for t in openapi_tools(source)}


def test_every_operation_is_a_typed_tool() -> None:
    tools = _tools()
    assert sorted(tools) == sorted(
        [
            *("listItems", "createItem", "getItem", "replaceItem", "updateItem", "deleteItem"),
            *("listItemTags", "tagItem", "searchItems", "getStats", "health"),
        ]
    )
    reads = {name for name, t in tools.items() if t.touches == "read"}
    assert reads == {"listItems", "getItem", "listItemTags", "searchItems", "getStats", "health"}
    listing = tools["listItems"].spec.parameters["properties"]
    assert listing["status"]["enum"] == ["in_stock", "sold_out"]  # through a $ref
    assert listing["limit"] == {"type": "integer", "minimum": 1, "maximum": 100}
    assert "X-Request-Id" in listing  # a header parameter
    item = tools["getItem"].spec.parameters
    assert item["required"] == ["itemId"]  # a path parameter from the path's shared $ref
    assert item["properties"]["itemId"]["description"] == "the item's number"
    body = tools["createItem"].spec.parameters["properties"]["body"]
    assert body["required"] == ["name", "price"]
    assert body["properties"]["note"]["type"] == ["string", "null"]  # 3.0's nullable
    assert tools["createItem"].description.startswith("Add an item.")
    assert tools["createItem"].description.endswith("POST /items")


@pytest.mark.parametrize(
    ("tool", "arguments", "said"),
    [
        ("getItem", {"itemId": "seven"}, "field 'itemId': 'seven' is not of type 'integer'"),
        ("getItem", {}, "'itemId' is a required property"),
        ("listItems", {"status": "lost"}, "'lost' is not one of ['in_stock', 'sold_out']"),
        ("listItems", {"limit": 500}, "500 is greater than the maximum of 100"),
        ("createItem", {"body": {"name": "x"}}, "field 'body': 'price' is a required property"),
        ("tagItem", {"itemId": 1, "body": {"tag": "Bad Tag"}}, "does not match"),
        ("getStats", {"colour": "red"}, "Additional properties are not allowed"),
    ],
)
def test_a_bad_argument_is_refused_before_any_request(
    tool: str, arguments: dict[str, Any], said: str
) -> None:
    with pytest.raises(InvalidArguments, match=None) as refused:
        _tools()[tool].parse(arguments)
    assert said in str(refused.value)
    assert str(refused.value).startswith(f"invalid arguments for {tool}: ")


def _spec(tmp_path: Path, text: str) -> OpenAPISource:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return OpenAPISource(spec=str(path), server="http://127.0.0.1:1")


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("openapi: 3.0.0\npaths: [\n", "not YAML or JSON at line 3"),
        ('swagger: "2.0"\npaths: {}\n', "only OpenAPI 3.0 and 3.1 are read (no openapi field)"),
        ("openapi: 3.1.0\n", "it has no paths"),
        (
            "openapi: 3.1.0\npaths:\n  /x:\n    get:\n      parameters:\n"
            "        - $ref: '#/components/parameters/Nope'\n",
            "#/paths/~1x/get/parameters/0: $ref '#/components/parameters/Nope' leads nowhere",
        ),
        (
            "openapi: 3.1.0\npaths:\n  /x:\n    get:\n      parameters:\n"
            "        - {name: a, in: query, schema: {type: 7}}\n",
            "#/paths/~1x/get: tool get_x: not a JSON schema",
        ),
    ],
)
def test_a_spec_that_cannot_be_read_says_where(tmp_path: Path, text: str, said: str) -> None:
    with pytest.raises(ConfigError, match=None) as refused:
        openapi_tools(_spec(tmp_path, text))
    assert said in str(refused.value)
    assert "spec.yaml" in str(refused.value)


def test_a_spec_with_no_server_asks_for_one(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text("openapi: 3.1.0\npaths: {}\n")
    with pytest.raises(ConfigError, match="names no http"):
        openapi_tools(OpenAPISource(spec=str(path)))
    with pytest.raises(ConfigError, match="No such file"):
        openapi_tools(OpenAPISource(spec=str(tmp_path / "missing.yaml")))


@pytest.fixture
def inventory() -> Iterator[tuple[str, Inventory]]:
    server, made = serve(KEY)
    yield f"http://127.0.0.1:{server.server_address[1]}", made
    server.shutdown()
    server.server_close()


async def test_a_scripted_run_calls_the_operations_against_the_service(
    store: Store, boxes: Sandboxes, inventory: tuple[str, Inventory]
) -> None:
    url, service = inventory
    port = int(url.rsplit(":", 1)[1])
    registry = Registry()
    registry.include(builtin)
    registry.include(list(_tools(url).values()))
    calls: list[tuple[str, dict[str, Any]]] = [
        ("createItem", {"body": {"name": "blue lamp", "price": 30}}),
        ("createItem", {"body": {"name": "red chair", "price": 45.5, "status": "sold_out"}}),
        ("listItems", {"status": "in_stock", "limit": 10, "X-Request-Id": "trace-1"}),
        ("updateItem", {"itemId": 1, "body": {"price": 25}}),
        ("tagItem", {"itemId": 1, "body": {"tag": "lighting"}}),
        ("searchItems", {"q": "chair"}),
        ("getStats", {}),
        ("deleteItem", {"itemId": 2}),
        ("getItem", {"itemId": 2}),
    ]
    turns: list[dict[str, Any]] = [{"plan": ["Stock the inventory"]}]
    turns += [{"tool": name, "args": arguments} for name, arguments in calls]
    turns.append({"done": "stocked"})
    keyring = Secrets(
        {"INVENTORY_KEY": Secret("INVENTORY_KEY", (f"127.0.0.1:{port}",), "file", KEY)}
    )
    runner = Runner(
        store,
        registry,
        Gate.from_text('[default]\naction = "allow"\n'),
        planner=scripted(turns),
        sandboxes=boxes,
        secrets=keyring,
    )
    limits = SMALL.model_copy(update={"network": "proxy", "allow_domains": (f"127.0.0.1:{port}",)})
    task = runner.create("Stock the inventory", sandbox=limits)
    state = await runner.run(task)
    assert state.status == "done"
    results = [e.event for e in store.events(task) if isinstance(e.event, ToolResulted)]
    said = [r.content for r in results]
    assert "POST 127.0.0.1/items → 201 Created" in said[0]
    assert json.loads(said[2].split("\n\n", 1)[1]) == [
        {"id": 1, "status": "in_stock", "note": None, "name": "blue lamp", "price": 30}
    ]
    assert '"price": 25' in said[3]
    assert '"lighting"' in said[4]
    assert '"red chair"' in said[5]
    assert '"worth": 70.5' in said[6]  # 25 (after the update) and 45.5
    assert "DELETE 127.0.0.1/items/2 → 204" in said[7]
    assert "GET 127.0.0.1/items/2 → 404 Not Found" in said[8]
    # Every request carried the key, which the log never did.
    assert len(service.seen) == len(calls)
    assert all(headers.get("X-Api-Key") == KEY for *_, headers in service.seen)
    assert service.seen[2][2] == {"status": "in_stock", "limit": "10"}
    assert service.seen[2][3]["X-Request-Id"] == "trace-1"
    assert KEY not in json.dumps([r.model_dump() for r in results])


BASIC = """\
openapi: 3.1.0
servers: [{url: "https://api.example.com"}]
security: [{basic: []}]
components:
  securitySchemes:
    basic: {type: http, scheme: basic}
paths:
  /things/{id}:
    get:
      operationId: getThing
      parameters:
        - {name: id, in: path, required: true, schema: {type: string}}
      responses: {"200": {description: it}}
    post:
      operationId: addThing
      requestBody:
        content:
          application/json:
            schema:
              type: object
              properties:
                example: {type: string, description: a property named like a keyword}
      responses: {"200": {description: added}}
"""


async def test_basic_auth_a_keyword_named_property_and_a_path_that_climbs(tmp_path: Path) -> None:
    path = tmp_path / "basic.yaml"
    path.write_text(BASIC)
    tools = {t.name: t for t in openapi_tools(OpenAPISource(spec=str(path), secret="PAIR"))}
    # Basic auth sends user:password base64-encoded, filled in at the boundary.
    sending = getattr(tools["getThing"].fn, "__self__")  # noqa: B009 - the operation it sends
    assert sending.auth.value == "Basic {{secret:PAIR:base64}}"
    pair = Secrets({"PAIR": Secret("PAIR", ("api.example.com",), "file", "ann:s3cret-pw")})
    filled = pair.fill(sending.auth.value, "api.example.com", 443)
    assert filled == "Basic " + base64.b64encode(b"ann:s3cret-pw").decode()
    # A property named `example` is a property, not the keyword OpenAPI 3.0 has.
    body = tools["addThing"].spec.parameters["properties"]["body"]
    assert "example" in body["properties"]
    # A path parameter cannot take the request to another path.
    refused = await tools["getThing"].invoke({"id": ".."}, ToolContext("t", "c", "t/1"))
    assert (refused.ok, "cannot be '..'" in refused.content) == (False, True)
