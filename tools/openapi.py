"""Tools from an OpenAPI 3.0 or 3.1 spec: every operation becomes a typed tool.

    [[tools.openapi]]                    # in agent.toml; as many as you like
    spec = "petstore.yaml"               # a file (relative to agent.toml) or an http(s) URL
    server = "http://127.0.0.1:8080/v1"  # default: the spec's first server
    secret = "PETSTORE_KEY"              # the secret its security scheme takes (see
                                         # `agent secrets`); default: none
    prefix = "pets_"                     # put before each tool's name; default: none

A tool's arguments are the operation's parameters (path, query and header; by name, or
`query_NAME` where two share a name) and `body`, its JSON or form request body, with every `$ref`
resolved; its description is the operation's summary and description; its name its
`operationId` (else the method and path). A call is validated against that schema before
anything is sent, then sent as the HTTP tool sends (tools/http.py): through the task's egress
proxy, with the secret filled in at the boundary for the server's host only. GET, HEAD and
OPTIONS operations only read (the default policy lets them through); the others are external
effects a reviewer is asked about.

A spec that cannot be read says where: the file, the line, or the JSON pointer of a `$ref`
that leads nowhere.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from pydantic import BaseModel, ConfigDict

from base.errors import ConfigError
from tools._schema import name_of
from tools.http import send
from tools.tool import Tool, ToolContext, ToolError

METHODS = ("get", "put", "post", "delete", "options", "head", "patch")
READS = frozenset({"get", "head", "options"})
#: the longest description a tool is given (a spec's can run to pages)
_DESCRIPTION = 1500


class OpenAPISource(BaseModel):
    """One `[[tools.openapi]]` entry of agent.toml."""

    model_config = ConfigDict(extra="forbid")

    spec: str
    server: str | None = None
    secret: str | None = None
    prefix: str = ""


@dataclass(frozen=True)
class _Parameter:
    name: str  # as the API knows it
    where: str  # path, query or header
    argument: str  # as the tool's argument


def load_spec(where: str, base: Path | None = None) -> dict[str, Any]:
    """The spec at `where` (a file, relative to `base`, or an http(s) URL), parsed. Raises
    `ConfigError` saying where it could not be read."""
    if where.startswith(("http://", "https://")):
        try:
            response = httpx.get(where, timeout=30, follow_redirects=True)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise ConfigError(f"OpenAPI spec {where}: {exc}") from None
        text = response.text
    else:
        path = Path(where) if base is None or Path(where).is_absolute() else base / where
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"OpenAPI spec {path}: {exc.strerror or exc}") from None
        where = str(path)
    try:
        spec = yaml.safe_load(text)  # JSON is YAML too
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or exc
        raise ConfigError(f"OpenAPI spec {where}: not YAML or JSON{line}: {problem}") from None
    if not isinstance(spec, dict):
        raise ConfigError(f"OpenAPI spec {where}: not an OpenAPI document (no top-level object)")
    version = str(spec.get("openapi", ""))
    if not version.startswith("3."):
        found = f"openapi: {version}" if version else "no openapi field"
        raise ConfigError(f"OpenAPI spec {where}: only OpenAPI 3.0 and 3.1 are read ({found})")
    if not isinstance(spec.get("paths"), dict):
        raise ConfigError(f"OpenAPI spec {where}: it has no paths")
    return spec


def openapi_tools(source: OpenAPISource, base: Path | None = None) -> list[Tool]:
    """The tools of every operation of `source`'s spec. Raises `ConfigError` for a spec that
    cannot be read, or one whose operations cannot be made tools (saying which)."""
    spec = load_spec(source.spec, base)
    resolve = _Resolver(spec, source.spec)
    server = source.server or _first_server(spec, source.spec)
    schemes = spec.get("components", {}).get("securitySchemes", {})
    found: list[Tool] = []
    for path, listed in spec["paths"].items():
        item = resolve(listed, f"#/paths/{_pointer(path)}")
        shared = item.get("parameters", [])
        for method in METHODS:
            if method not in item:
                continue
            where = f"#/paths/{_pointer(path)}/{method}"
            operation = resolve(item[method], where)
            security = operation.get("security", spec.get("security", []))
            auth = _auth(security, schemes, source.secret, resolve)
            found.append(
                _operation_tool(
                    source,
                    server=server,
                    path=path,
                    method=method,
                    operation=operation,
                    shared=shared,
                    auth=auth,
                )
            )
    return found


def _first_server(spec: dict[str, Any], where: str) -> str:
    servers = spec.get("servers") or []
    url = servers[0].get("url") if servers and isinstance(servers[0], dict) else None
    if not url or not str(url).startswith(("http://", "https://")):
        raise ConfigError(
            f"OpenAPI spec {where}: it names no http(s) server; give one in agent.toml "
            '(server = "https://api.example.com")'
        )
    return str(url)


def _pointer(path: str) -> str:
    return path.replace("~", "~0").replace("/", "~1")


class _Resolver:
    """Resolves the spec's internal `$ref`s (`#/components/...`), nested ones too; a schema that
    refers to itself is cut where it would repeat (an object of any shape)."""

    def __init__(self, spec: dict[str, Any], where: str) -> None:
        self.spec, self.where = spec, where

    def __call__(self, node: Any, at: str, seen: tuple[str, ...] = ()) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                ref = str(node["$ref"])
                if ref in seen:
                    return {"type": "object", "description": f"(recursive: {ref})"}
                target = self._follow(ref, at)
                return self(target, ref, (*seen, ref))
            return {k: self(v, f"{at}/{_pointer(str(k))}", seen) for k, v in node.items()}
        if isinstance(node, list):
            return [self(v, f"{at}/{i}", seen) for i, v in enumerate(node)]
        return node

    def _follow(self, ref: str, at: str) -> Any:
        if not ref.startswith("#/"):
            raise ConfigError(
                f"OpenAPI spec {self.where}: {at}: $ref {ref!r} is outside the spec (only refs "
                "within it, #/..., are read)"
            )
        node: Any = self.spec
        for escaped in ref[2:].split("/"):
            part = urllib.parse.unquote(escaped).replace("~1", "/").replace("~0", "~")
            if not isinstance(node, dict) or part not in node:
                raise ConfigError(f"OpenAPI spec {self.where}: {at}: $ref {ref!r} leads nowhere")
            node = node[part]
        return node


@dataclass(frozen=True)
class _Auth:
    """Where a call puts its secret: a header or a query parameter, and its text around the
    placeholder (filled in at the boundary, for the server's host only). `place` None: none."""

    place: str | None = None
    key: str = ""
    value: str = ""

    def apply(self, headers: dict[str, str], query: dict[str, Any]) -> None:
        if self.place == "header":
            headers[self.key] = self.value
        elif self.place == "query":
            query[self.key] = self.value


def _auth(
    security: list[dict[str, Any]], schemes: dict[str, Any], secret: str | None, resolve: _Resolver
) -> _Auth:
    """How the operation's security scheme takes `secret`: an API key in a header or the query,
    or HTTP bearer or basic (the secret's value is then `user:password`)."""
    if secret is None or not security:
        return _Auth()
    placeholder = f"{{{{secret:{secret}}}}}"
    for requirement in security:
        for name in requirement:
            scheme = resolve(schemes.get(name, {}), f"#/components/securitySchemes/{name}")
            kind, scheme_name = scheme.get("type"), str(scheme.get("scheme", "")).lower()
            if kind == "apiKey" and scheme.get("in") in ("header", "query"):
                return _Auth(str(scheme["in"]), str(scheme["name"]), placeholder)
            if kind == "http" and scheme_name == "bearer":
                return _Auth("header", "Authorization", f"Bearer {placeholder}")
            if kind == "http" and scheme_name == "basic":  # the secret is user:password
                return _Auth("header", "Authorization", f"Basic {{{{secret:{secret}:base64}}}}")
    return _Auth()


def _schema_of(parameter: Mapping[str, Any]) -> dict[str, Any]:
    schema = dict(parameter.get("schema") or {"type": "string"})
    if parameter.get("description") and "description" not in schema:
        schema["description"] = str(parameter["description"])
    converted: dict[str, Any] = _json_schema(schema)
    return converted


def _json_schema(node: Any) -> Any:
    """An OpenAPI 3.0 schema as JSON Schema 2020-12 (3.1's already is): `nullable`, boolean
    `exclusiveMinimum`/`exclusiveMaximum`, and the keywords JSON Schema does not know."""
    if isinstance(node, list):
        return [_json_schema(v) for v in node]
    if not isinstance(node, dict):
        return node
    schema = {
        k: _properties(v) if k in ("properties", "patternProperties") else _json_schema(v)
        for k, v in node.items()
        if k not in ("nullable", "example", "xml", "externalDocs", "discriminator")
    }
    if node.get("nullable") is True and isinstance(schema.get("type"), str):
        schema["type"] = [schema["type"], "null"]
    for bound, limit in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(schema.get(bound), bool):
            exclusive = schema.pop(bound)
            if exclusive and limit in schema:
                schema[bound] = schema.pop(limit)
    return schema


def _properties(node: Any) -> Any:
    """A schema's properties: by name (any name, `example` too), each a schema."""
    if not isinstance(node, dict):
        return node
    return {name: _json_schema(schema) for name, schema in node.items()}


def _operation_tool(
    source: OpenAPISource,
    *,
    server: str,
    path: str,
    method: str,
    operation: dict[str, Any],
    shared: list[Any],
    auth: _Auth,
) -> Tool:
    where = f"#/paths/{_pointer(path)}/{method}"
    schema, parameters, body_kind = _arguments(operation, shared)
    operation_id = operation.get("operationId") or f"{method}_{path.strip('/')}"
    name = name_of(str(operation_id)).strip("_")[: 64 - len(source.prefix)]
    text = "\n\n".join(
        str(part) for part in (operation.get("summary"), operation.get("description")) if part
    )
    sending = _Operation(
        source.prefix + name, server.rstrip("/"), path, method.upper(), parameters, body_kind, auth
    )
    try:
        return Tool(
            sending.call,
            name=sending.name,
            description=f"{text[:_DESCRIPTION]}\n\n{method.upper()} {path}".strip(),
            touches="read" if method in READS else "external",
            timeout=120.0,
            reconcile=None,
            idempotent=True,
            needs_network=True,
            fills_secrets=True,
            schema=schema,
        )
    except ConfigError as exc:
        raise ConfigError(f"OpenAPI spec {source.spec}: {where}: {exc}") from None


def _arguments(
    operation: dict[str, Any], shared: list[Any]
) -> tuple[dict[str, Any], list[_Parameter], str | None]:
    """An operation's arguments: their JSON schema, its parameters (by where each goes), and the
    media type of its body (None: it takes none)."""
    listed = {(p["name"], p["in"]): p for p in [*shared, *operation.get("parameters", [])]}
    names = [name for name, _ in listed]
    properties: dict[str, Any] = {}
    required: list[str] = []
    parameters: list[_Parameter] = []
    for (name, place), parameter in listed.items():
        if place not in ("path", "query", "header"):
            continue  # cookies: not sent
        argument = name_of(name if names.count(name) == 1 else f"{place}_{name}")
        parameters.append(_Parameter(name, place, argument))
        properties[argument] = _schema_of(parameter)
        if parameter.get("required") or place == "path":
            required.append(argument)
    body_kind = None
    if body := operation.get("requestBody"):
        content = body.get("content", {})
        kinds = [
            k for k in ("application/json", "application/x-www-form-urlencoded") if k in content
        ]
        body_kind = next(iter(kinds), None) or next((k for k in content if "json" in k), None)
        if body_kind is not None:
            properties["body"] = _json_schema(content[body_kind].get("schema") or {})
            if body.get("required"):
                required.append("body")
    schema = {"type": "object", "properties": properties, "additionalProperties": False}
    return ({**schema, "required": required} if required else schema), parameters, body_kind


@dataclass(frozen=True)
class _Operation:
    """How a call of an operation's tool is sent."""

    name: str
    server: str
    path: str
    method: str
    parameters: list[_Parameter]
    body_kind: str | None
    auth: _Auth

    async def call(self, ctx: ToolContext, arguments: dict[str, Any]) -> str:
        path, headers, query = self.path, {}, {}
        for parameter in self.parameters:
            if parameter.argument not in arguments:
                continue
            value = arguments[parameter.argument]
            text = value if isinstance(value, str) else json.dumps(value)
            if parameter.where == "path":
                if text in (".", ".."):  # it would take the request to another path
                    raise ToolError(f"{self.name}: {parameter.argument} cannot be {text!r}")
                path = path.replace(f"{{{parameter.name}}}", urllib.parse.quote(text, safe=""))
            elif parameter.where == "query":
                query[parameter.name] = json.dumps(value) if isinstance(value, dict) else value
            else:
                headers[parameter.name] = text
        if "{" in path:
            raise ToolError(f"{self.name}: a path parameter has no value: {path}")
        self.auth.apply(headers, query)
        body = arguments.get("body")
        form = body if self.body_kind and "form" in self.body_kind else None
        return await send(
            ctx,
            self.method,
            self.server + path,
            headers=headers,
            query=query,
            json_body=body if form is None else None,
            form=form,
        )
