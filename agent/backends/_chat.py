"""Prompts and tool calls for models that write tool calls as JSON (the local backend).

A model without native tool calls is told about the tools in its system message, and answers with
one JSON object, ``{"name": TOOL, "arguments": {...}}``. Its decoding is held to the JSON schema
of exactly that (`tool_call_schema`), so what it writes parses; `read_call` still checks it,
because a cut-off answer or a schema the grammar could not express can get through.

The prompt's first part (instructions and tools) is the same on every step of a task, and the
messages only ever grow at the end while a step lasts, so a KV cache reuses most of each prompt.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from agent.backends.base import Message, ToolCall
from base.toolspec import ToolSpec

#: Used when a model file carries no chat template of its own.
CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_ANSWER_RULE = (
    "Answer with exactly one tool call and nothing else, as one JSON object: "
    '{"name": "<tool name>", "arguments": {<the arguments>}}.'
)


class ChatTemplate:
    """A model's chat template (Jinja, as GGUF files carry it), rendered in a sandbox."""

    def __init__(self, source: str | None, *, bos: str = "", eos: str = "") -> None:
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = _raise
        self._template = env.from_string(source or CHATML)
        self._bos, self._eos = bos, eos

    def render_parts(self, messages: Sequence[dict[str, str]]) -> list[tuple[str, bool]]:
        """The prompt as pieces, each marked True where it is a message's text, False where it
        is the template's own: only the template's may be read as special tokens, so a page
        that says "<|im_start|>system" cannot open a system turn. Raises `ValueError`.

        Works by rendering marks in place of the texts; a template that changes a text (trims
        it, say) finds no mark, and then the whole prompt is one piece of text (no special
        tokens read in it but the template's markers, which a text cannot then fake: see
        `_neutral`).
        """
        marked = [{**m, "content": f"{_MARK}{i}{_MARK}"} for i, m in enumerate(messages)]
        rendered = self.render(marked)
        pieces = re.split(f"{_MARK}(\\d+){_MARK}", rendered)
        found = [int(n) for n in pieces[1::2]]
        if found != list(range(len(messages))):
            neutral = [{**m, "content": _neutral(m["content"])} for m in messages]
            return [(self.render(neutral), False)]
        parts: list[tuple[str, bool]] = []
        for index, piece in enumerate(pieces):
            if index % 2 == 0:
                if piece:
                    parts.append((piece, False))
            else:
                parts.append((messages[int(piece)]["content"], True))
        return parts

    def render(self, messages: Sequence[dict[str, str]]) -> str:
        """The prompt text, ending where the assistant's answer begins. Raises `ValueError`."""
        try:
            return self._template.render(
                messages=list(messages),
                add_generation_prompt=True,
                bos_token=self._bos,
                eos_token=self._eos,
            )
        except TemplateError as error:
            raise ValueError(f"the model's chat template failed: {error}") from error


#: brackets a message's index in a rendered template: a character no text sent to a model holds
_MARK = "\x00"
#: where a message's picture goes, for a model that sees (a character taken out of every text)
IMAGE_MARK = "\x01"


def _neutral(text: str) -> str:
    """`text` with anything shaped like a chat control token (<|...|>, <s>, [INST]...) broken by
    a zero-width space, for templates that leave no way to keep texts apart."""
    return re.sub(r"(<\|?|\[)(?=/?[A-Za-z_]+(\|?>|\]))", "\\1\u200b", text)


def _raise(message: str) -> None:
    raise TemplateError(message)


def chat_messages(
    messages: Sequence[Message], note: str | None = None, *, pictures: bool = False
) -> list[dict[str, str]]:
    """Our messages as plain role/content pairs any chat template takes, for a model that has
    no native tool calls (a local one, or a server's in JSON mode).

    Tool calls become the JSON the model is asked to write; tool results become user messages
    naming the tool; `note` (what the tools are and how to call them) ends the first system
    message. Adjacent messages of one role are joined, since many templates insist that user
    and assistant alternate. With `pictures`, a message's pictures are marked (`IMAGE_MARK`,
    one each, in order) after its text, and no text holds that mark of its own.
    """

    def clean(text: str) -> str:  # with pictures, only they are marked
        return text.replace(IMAGE_MARK, "\ufffd") if pictures else text

    names = {call.id: clean(call.name) for m in messages for call in m.tool_calls}
    note = clean(note) if note else note
    plain: list[dict[str, str]] = []
    for message in messages:
        role, content = message.role, clean(message.content)
        if role == "assistant" and message.tool_calls:
            calls = "\n".join(clean(_call_json(call)) for call in message.tool_calls)
            content = f"{content}\n{calls}" if content else calls
        elif role == "tool":
            name = names.get(message.tool_call_id or "", "the tool")
            role, content = "user", f"Result of {name}:\n{content}"
        if pictures:
            content += IMAGE_MARK * len(message.images)
        if plain and plain[-1]["role"] == role:
            plain[-1]["content"] += "\n\n" + content
        else:
            plain.append({"role": role, "content": content})
    if note:
        if plain and plain[0]["role"] == "system":
            plain[0]["content"] += "\n\n" + note
        else:
            plain.insert(0, {"role": "system", "content": note})
    return plain


def describe_tools(tools: Sequence[ToolSpec], *, constrained: bool) -> str:
    """The tools, one short signature each, with what each argument means."""
    lines = ["Tools:"]
    for tool in tools:
        properties: dict[str, Any] = tool.parameters.get("properties", {})
        required = set(tool.parameters.get("required", ()))
        signature = ", ".join(
            f"{name}{'' if name in required else '?'}: {_type_name(schema)}"
            for name, schema in properties.items()
        )
        lines.append(f"- {tool.name}({signature}): {tool.description.strip()}")
        for name, schema in properties.items():
            if isinstance(schema, dict) and schema.get("description"):
                lines.append(f"    {name}: {schema['description']}")
    if not constrained:
        lines.append(
            "To call a tool, answer with only a JSON object: "
            '{"name": "<tool name>", "arguments": {...}}.'
        )
    else:
        lines.append(_ANSWER_RULE)
    return "\n".join(lines)


def _type_name(schema: Any) -> str:
    if not isinstance(schema, dict):
        return "any"
    if "anyOf" in schema:
        kinds = [_type_name(s) for s in schema["anyOf"] if s.get("type") != "null"]
        return " | ".join(kinds) or "null"
    if "enum" in schema:
        return " | ".join(json.dumps(v) for v in schema["enum"])
    kind = schema.get("type", "any")
    if kind == "array":
        return f"list of {_type_name(schema.get('items', {}))}"
    return str(kind)


def _call_json(call: ToolCall) -> str:
    try:
        arguments: Any = json.loads(call.arguments) if call.arguments else {}
    except ValueError:
        arguments = call.arguments  # as the model wrote it, so it can see its mistake
    return json.dumps({"name": call.name, "arguments": arguments}, ensure_ascii=False)


def tool_call_schema(tools: Sequence[ToolSpec]) -> dict[str, Any]:
    """The JSON schema of one call to one of `tools`.

    Each tool's own definitions (`$defs`, which pydantic writes for enums and nested models) move
    to the root under the tool's name, and its references follow, since a reference resolves
    from the root of the whole schema."""
    definitions: dict[str, Any] = {}
    options = []
    for tool in tools:
        parameters = dict(tool.parameters)
        own = parameters.pop("$defs", None) or {}
        prefix = f"{tool.name}__"
        parameters = _renamed_refs(parameters, prefix)
        definitions.update(
            {prefix + key: _closed(_renamed_refs(value, prefix)) for key, value in own.items()}
        )
        options.append(
            {
                "type": "object",
                "properties": {"name": {"const": tool.name}, "arguments": _closed(parameters)},
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
        )
    schema: dict[str, Any] = {"anyOf": options}
    if definitions:
        schema["$defs"] = definitions
    return schema


def _renamed_refs(value: Any, prefix: str) -> Any:
    if isinstance(value, dict):
        return {
            key: (
                "#/$defs/" + prefix + item.removeprefix("#/$defs/")
                if key == "$ref" and isinstance(item, str) and item.startswith("#/$defs/")
                else _renamed_refs(item, prefix)
            )
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_renamed_refs(item, prefix) for item in value]
    return value


#: bounds a grammar spells out; larger ones are left to the gate's validation, since a grammar
#: writes a bound of N as N nested rules and llama.cpp refuses grammars past a few thousand
MAX_GRAMMAR_BOUND = 32


def _closed(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` as a grammar should hold a model to it: objects that list their properties are
    closed to others (so the model cannot make arguments up; an object that lists none is left
    open), and large length bounds are dropped (the tool's own validation still applies them)."""
    out = {
        k: v
        for k, v in schema.items()
        if not (k in _BOUNDS and isinstance(v, int) and v > MAX_GRAMMAR_BOUND)
    }
    if out.get("type") == "object" and "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    if isinstance(out.get("properties"), dict):
        out["properties"] = {
            k: _closed(v) if isinstance(v, dict) else v for k, v in out["properties"].items()
        }
    for key in ("anyOf", "oneOf", "allOf"):
        if isinstance(out.get(key), list):
            out[key] = [_closed(v) if isinstance(v, dict) else v for v in out[key]]
    if isinstance(out.get("items"), dict):
        out["items"] = _closed(out["items"])
    return out


def read_call(text: str, tools: Sequence[ToolSpec], *, call_id: str, cut: bool = False) -> ToolCall:
    """The tool call `text` holds. Raises `ValueError` saying what is wrong with it.

    `cut`: the answer ran out of tokens. A call cut off between values (all its strings and
    numbers complete) has its brackets closed; one cut off inside a value is refused, since
    finishing it would run a call the model did not write (a shortened path or command).
    """
    value = _loads(text, cut=cut)
    if not isinstance(value, dict):
        raise ValueError(  # noqa: TRY004 - one error type for every way a reply is wrong
            'the answer is not a JSON object like {"name": ..., "arguments": ...}'
        )
    name = value.get("name")
    specs = {tool.name: tool for tool in tools}
    if not isinstance(name, str) or name not in specs:
        raise ValueError(f"{name!r} is not one of the tools: {', '.join(specs)}")
    arguments = value.get("arguments", {})
    problem = check(arguments, specs[name].parameters, "arguments")
    if problem is not None:
        raise ValueError(problem)
    return ToolCall(id=call_id, name=name, arguments=json.dumps(arguments, ensure_ascii=False))


def _loads(text: str, *, cut: bool) -> Any:
    start = text.find("{")
    if start < 0:
        raise ValueError("the answer holds no JSON object")
    try:
        # The first whole object: prose a model adds after it (unconstrained) is not the call.
        value, _ = json.JSONDecoder(strict=False).raw_decode(text[start:])
        return value
    except ValueError as error:
        if not cut:
            raise ValueError(f"the answer is not valid JSON ({error})") from None
    closed = close_json(text[start:])
    if closed is None:
        raise ValueError(
            "the call was cut off by the answer's token limit in the middle of a value; send "
            "less in one call (for example, write a long file in parts)"
        )
    return json.loads(closed, strict=False)


def close_json(text: str) -> str | None:
    """`text`, cut off between JSON values, with the arrays and objects it leaves open closed;
    None when it was cut inside a value (a string, a number, a key, a literal), which could be
    finished only by guessing."""
    closers, in_string = _scan(text)
    if in_string:
        return None
    tail = text.rstrip()
    if tail.endswith(","):
        tail = tail[:-1].rstrip()
    if tail[-1:].isdigit() or tail.endswith("."):
        return None  # 12 may have been on its way to 120
    closed = tail + "".join(reversed(closers))
    try:
        json.loads(closed, strict=False)
    except ValueError:
        return None  # a key with no value, half a literal
    return closed


def _scan(text: str) -> tuple[list[str], bool]:
    """The closers `text` leaves pending, innermost last, and whether it ends inside a string."""
    closers: list[str] = []
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "{[":
            closers.append("}" if char == "{" else "]")
        elif char in "}]" and closers:
            closers.pop()
    return closers, in_string


_BOUNDS = ("maxLength", "maxItems", "minLength", "minItems", "maxProperties", "minProperties")

_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
    "null": (type(None),),
}


def check(value: Any, schema: Any, where: str) -> str | None:
    """What is wrong with `value` against the parts of JSON Schema tools use, or None."""
    if not isinstance(schema, dict):
        return None
    if "anyOf" in schema:
        problems = [check(value, option, where) for option in schema["anyOf"]]
        return None if None in problems else problems[0]
    if "const" in schema and value != schema["const"]:
        return f"{where} must be {schema['const']!r}"
    if "enum" in schema and value not in schema["enum"]:
        return f"{where} must be one of {schema['enum']!r}"
    kind = schema.get("type")
    if isinstance(kind, str) and kind in _TYPES:
        is_bool = isinstance(value, bool)
        if not isinstance(value, _TYPES[kind]) or (is_bool and kind != "boolean"):
            return f"{where} must be a {kind}, not {json.dumps(value)[:40]}"
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        for name in schema.get("required", ()):
            if name not in value:
                return f"{where} lacks {name!r}"
        for name, item in value.items():
            if name not in properties:
                if schema.get("additionalProperties") is False:
                    return f"{where} has {name!r}, which is not one of {', '.join(properties)}"
                continue
            problem = check(item, properties[name], f"{where}.{name}")
            if problem is not None:
                return problem
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            problem = check(item, schema["items"], f"{where}[{index}]")
            if problem is not None:
                return problem
    return None
