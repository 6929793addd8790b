"""A tool's arguments and description, read from its signature and docstring: the pydantic
model that validates a call's arguments (and gives the JSON schema a model is shown), and the
error a model reads when its arguments do not fit."""

from __future__ import annotations

import inspect
import json
import re
import typing
from collections.abc import Callable
from typing import Any

import pydantic_core
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PydanticInvalidForJsonSchema,
    PydanticSchemaGenerationError,
    PydanticUserError,
    RootModel,
    TypeAdapter,
    ValidationError,
    WrapSerializer,
    create_model,
)

from base.errors import ConfigError
from tools._docs import Docs, read_docs

_NOT_IN_A_NAME = re.compile(r"[^A-Za-z0-9_-]+")


def name_of(text: str) -> str:
    """`text` as a tool's or an argument's name: each run of other characters than letters,
    digits, `_` and `-` made one `_` (what model APIs accept in a name)."""
    return _NOT_IN_A_NAME.sub("_", text)


def render_value(value: Any, render: Callable[[Any], str] | None = None) -> str:
    """A tool's return value as the model reads it: a str as it is, anything else as JSON (what
    pydantic can write: models, dataclasses, dates, enums and the like), or through the tool's
    declared `render`. Raises `TypeError` for a value none of these can write (a bug in the tool:
    it is not made up into a `<object at 0x…>` for the model)."""
    if isinstance(value, str):
        return value
    if render is not None:
        return render(value)
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        pass
    try:
        return pydantic_core.to_json(value).decode()
    except pydantic_core.PydanticSerializationError:
        raise TypeError(
            f"the tool returned a value of type {type(value).__qualname__}, which is not JSON: "
            "return text, numbers, lists and dicts of them, or a pydantic model (bytes are kept "
            "as an artifact), or declare @tool(render=...) to turn it into text"
        ) from None


def check_returns(fn: Callable[..., Any], name: str) -> None:
    """Refuse a return type that cannot be written as JSON (bytes and `Any` pass: bytes are kept
    as an artifact, and an unannotated value is checked when it comes). Raises `ConfigError`."""
    try:
        returned = typing.get_type_hints(fn).get("return")
    except NameError:
        return  # the arguments' check says which annotation cannot be resolved
    if returned in (None, type(None), Any, object, bytes, str):
        return
    try:
        TypeAdapter(returned).json_schema(mode="serialization")
    except (PydanticSchemaGenerationError, PydanticInvalidForJsonSchema) as exc:
        raise ConfigError(
            f"tool {name}: its return type {getattr(returned, '__qualname__', returned)} cannot be "
            "written as JSON for the model: return text, numbers, lists and dicts of them, or a "
            "pydantic model, or declare @tool(render=...) to turn it into text"
        ) from exc


def describe_error(tool_name: str, exc: ValidationError) -> str:
    problems = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "(arguments)"
        if err["type"] == "missing":
            problems.append(f"missing field '{where}'")
        elif err["type"] == "extra_forbidden":
            problems.append(f"unexpected field '{where}'")
        elif err["type"].startswith("json_"):
            problems.append(f"arguments are not valid JSON ({err['msg']})")
        else:
            got = json.dumps(err.get("input"), default=str)
            if len(got) > 60:
                got = got[:57] + "..."
            problems.append(f"field '{where}': {err['msg']} (got {got})")
    return f"invalid arguments for {tool_name}: " + "; ".join(problems)


def arguments_model(
    fn: Callable[..., Any], name: str, context: type
) -> tuple[type[BaseModel], str | None, Docs]:
    """The model of `fn`'s arguments, the name of its parameter of type `context` (given the
    tool's context, not the model's arguments) if it has one, and its docs."""
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except NameError as exc:
        raise ConfigError(f"tool {name}: cannot resolve an annotation: {exc}") from exc
    parameters = inspect.signature(fn).parameters.values()
    ctx_param = next(
        (
            p.name
            for p in parameters
            if hints.get(p.name) is context or context in typing.get_args(hints.get(p.name))
        ),
        None,
    )
    docs = read_docs(fn, [p.name for p in parameters if p.name != ctx_param])
    fields: dict[str, Any] = {}
    for param in parameters:
        annotation = hints.get(param.name)
        if param.name == ctx_param:
            continue
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise ConfigError(f"tool {name}: *args and **kwargs cannot be described to a model")
        if annotation is None:
            raise ConfigError(f"tool {name}: parameter {param.name!r} needs a type annotation")
        default = ... if param.default is param.empty else param.default
        fields[param.name] = (annotation, Field(default, description=docs.params.get(param.name)))
    # No NaN or infinity: a policy rule reading "Infinity" would not see the number the tool gets.
    config = ConfigDict(extra="forbid", allow_inf_nan=False)
    try:
        model = create_model(f"{name}_arguments", __config__=config, **fields)
        model.model_json_schema()  # fail here, not when a model is first told about the tool
    except PydanticUserError as exc:
        raise ConfigError(f"tool {name}: {exc.message}") from exc
    _refuse_disguised_fields(model, name)
    return model, ctx_param, docs


def _refuse_disguised_fields(model: type[BaseModel], name: str) -> None:
    """The gate, the log and the reviewer see the arguments as serialised; the tool gets them as
    validated. A field whose two forms differ (an alias, an excluded field, a custom serializer)
    would let a call be judged on something other than what runs."""
    for field_name, info in model.model_fields.items():
        disguised = (
            info.alias not in (None, field_name)
            or info.validation_alias not in (None, field_name)
            or info.serialization_alias not in (None, field_name)
            or info.exclude
            or any(isinstance(m, PlainSerializer | WrapSerializer) for m in info.metadata)
        )
        if disguised:
            raise ConfigError(
                f"tool {name}: parameter {field_name!r} has an alias, is excluded, or has its own "
                "serializer; the policy gate must judge arguments as the tool receives them"
            )


def closed_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` with every object that lists its properties closed to others (as the top level
    is): nested models too, so a model held to the schema cannot invent fields anywhere."""

    def close(node: Any) -> Any:
        if isinstance(node, dict):
            node = {k: close(v) for k, v in node.items()}
            if node.get("type") == "object" and "properties" in node:
                node.setdefault("additionalProperties", False)
            return node
        if isinstance(node, list):
            return [close(v) for v in node]
        return node

    closed: dict[str, Any] = close(schema)
    return closed


class SchemaArguments(RootModel[dict[str, Any]]):
    """The arguments of a tool described by a JSON schema (an OpenAPI operation, an MCP tool),
    as one object; the schema itself is checked by `schema_checker`."""


def schema_checker(name: str, schema: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    """A check of arguments against `schema` (JSON Schema 2020-12) that raises `ValueError`
    naming each wrong field. Raises `ConfigError` for a schema that is not one."""
    import jsonschema  # noqa: PLC0415 - only for tools described by a schema
    import jsonschema.exceptions  # noqa: PLC0415

    if schema.get("type", "object") != "object":
        raise ConfigError(f"tool {name}: its arguments' schema must be an object's")
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.exceptions.SchemaError as exc:
        where = "/".join(map(str, exc.path)) or "(top)"
        raise ConfigError(f"tool {name}: not a JSON schema at {where}: {exc.message}") from None
    validator = jsonschema.Draft202012Validator(schema)

    def check(arguments: dict[str, Any]) -> None:
        problems = [
            f"field '{'.'.join(map(str, error.absolute_path)) or '(arguments)'}': {error.message}"
            for error in sorted(
                validator.iter_errors(arguments), key=lambda e: list(map(str, e.path))
            )
        ]
        if problems:
            raise ValueError("; ".join(problems))

    return check
