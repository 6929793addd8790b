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

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PydanticUserError,
    ValidationError,
    WrapSerializer,
    create_model,
)

from base.errors import ConfigError


def render_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    return json.dumps(value, default=str, ensure_ascii=False)


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


_ARG_LINE = re.compile(r"^(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")


def docstring(fn: Callable[..., Any]) -> tuple[str, dict[str, str]]:
    """The summary of a docstring and the descriptions in its `Args:` section (Google style)."""
    doc = inspect.getdoc(fn) or ""
    head, _, rest = doc.partition("\nArgs:\n")
    summary = " ".join(head.split("\n\n")[0].split())
    params: dict[str, str] = {}
    base: int | None = None
    current = None
    for line in rest.splitlines():
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        if base is None:
            base = indent
        if indent < base or (indent == base and not _ARG_LINE.match(line.strip())):
            break  # the next section (Returns:, Raises:) or the end of Args
        match = _ARG_LINE.match(line.strip())
        if indent == base and match:
            current = match.group(1)
            params[current] = match.group(2).strip()
        elif current:
            params[current] = f"{params[current]} {line.strip()}".lstrip()
    return summary, params


def arguments_model(
    fn: Callable[..., Any], name: str, context: type
) -> tuple[type[BaseModel], str | None]:
    """The model of `fn`'s arguments, and the name of its parameter of type `context` (given the
    tool's context, not the model's arguments) if it has one."""
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except NameError as exc:
        raise ConfigError(f"tool {name}: cannot resolve an annotation: {exc}") from exc
    _, arg_docs = docstring(fn)
    fields: dict[str, Any] = {}
    ctx_param = None
    for param in inspect.signature(fn).parameters.values():
        annotation = hints.get(param.name)
        if annotation is context or context in typing.get_args(annotation):
            ctx_param = param.name
            continue
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise ConfigError(f"tool {name}: *args and **kwargs cannot be described to a model")
        if annotation is None:
            raise ConfigError(f"tool {name}: parameter {param.name!r} needs a type annotation")
        default = ... if param.default is param.empty else param.default
        fields[param.name] = (annotation, Field(default, description=arg_docs.get(param.name)))
    # No NaN or infinity: a policy rule reading "Infinity" would not see the number the tool gets.
    config = ConfigDict(extra="forbid", allow_inf_nan=False)
    try:
        model = create_model(f"{name}_arguments", __config__=config, **fields)
        model.model_json_schema()  # fail here, not when a model is first told about the tool
    except PydanticUserError as exc:
        raise ConfigError(f"tool {name}: {exc.message}") from exc
    _refuse_disguised_fields(model, name)
    return model, ctx_param


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
