""" "Always allow calls like this": the text of a rule that allows exactly one call, and writing
it into a policy file ahead of every other rule.

The rule is never wider than the call: it names the tool (glob characters escaped) and what it
touches, and pins the whole call with `[rule.exactly]`: every argument the call was judged with
(its effect among them: a form's values, where a browser action goes), each to its exact value
and type, and no argument more or fewer. Scoped to a task, it also names the task. Before it is
offered, it is read back as the gate reads it and must allow the call, and a call with any one
argument changed or left out must fall through it. The file is written whole, to a new file that
takes the old one's place, and must load first; so a crash leaves one or the other.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from base.errors import ConfigError
from policies._compiled import CallView, CompiledRule
from policies.rules import load_rules, parse_rules

_GLOB = {"*": "[*]", "?": "[?]", "[": "[[]"}


def rule_for(
    tool: str,
    touches: str,
    arguments: Mapping[str, Any],
    *,
    task: str | None,
    who: str,
    request: str,
) -> str:
    """The TOML of a rule that allows calls of `tool` with exactly `arguments` (in `task` alone,
    when given). Raises `ConfigError` for a call no rule can pin exactly."""
    reviewer = who or "a reviewer"
    where = f" in task {task}" if task else ""
    lines = [
        "[[rule]]",
        f"# always allowed by {_comment(reviewer)} on {time.strftime('%Y-%m-%d')}, from request "
        f"{_comment(request)}",
        'action = "allow"',
        f"reason = {_quoted(f'{reviewer} allowed calls exactly like this one{where}')}",
        f"tool = {_quoted(''.join(_GLOB.get(c, c) for c in tool))}",
        f"touches = {_quoted(touches)}",
        *([f"task = {_quoted(task)}"] if task else []),
        "[rule.exactly]",
        *(f"{_quoted(name)} = {_value(name, v)}" for name, v in sorted(arguments.items())),
    ]
    text = "\n".join(lines) + "\n"
    _check(text, tool, touches, arguments, task)
    return text


def _check(
    text: str, tool: str, touches: str, arguments: Mapping[str, Any], task: str | None
) -> None:
    """Refuse a rule that does not allow the call, or that allows a call unlike it."""
    rules = parse_rules(text, source="the new rule")
    rule = CompiledRule(rules.rules[0], "the new rule", 0)

    def allows(args: Mapping[str, Any]) -> bool:
        return rule.applies_to(tool, touches) and rule.matches(CallView(args, task))

    if not allows(arguments):
        raise ConfigError("the rule made for this call does not allow it: nothing is saved")
    for name in arguments:
        fewer = {k: v for k, v in arguments.items() if k != name}
        other = {**arguments, name: [arguments[name]]}
        if allows(fewer) or allows(other):
            raise ConfigError(f"the rule made for this call does not pin {name}: nothing is saved")


def add_rule(path: Path, rule: str) -> str:
    """Put `rule` ahead of every rule of the policy file at `path`; the file's text before (to
    put back with `restore`). Raises `ConfigError` when the file cannot be read, written, or
    loaded with the rule in it (it is then unchanged)."""
    try:
        old = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the policy file {path}: {exc.strerror or exc}") from None
    at = _first_rule(old)
    new = old[:at] + rule + "\n" + old[at:] if at is not None else old.rstrip("\n") + "\n\n" + rule
    _replace(path, new)
    return old


def restore(path: Path, text: str) -> None:
    """Put the policy file at `path` back to `text` (what `add_rule` returned)."""
    _replace(path, text)


def _replace(path: Path, text: str) -> None:
    try:
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(temporary, path.stat().st_mode & 0o7777)
            load_rules(temporary)  # the file as it will be: refused whole if it does not load
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise ConfigError(f"cannot write the policy file {path}: {exc.strerror or exc}") from None


def _first_rule(text: str) -> int | None:
    """Where the first `[[rule]]` table begins, with the comment lines just above it (they
    describe it); None when there is none."""
    lines = text.splitlines(keepends=True)
    for index, line in enumerate(lines):
        if line.strip() == "[[rule]]":
            start = index
            while start > 0 and lines[start - 1].lstrip().startswith("#"):
                start -= 1
            return sum(len(earlier) for earlier in lines[:start])
    return None


def _value(name: str, value: Any) -> str:
    """`value` as a TOML value that reads back as exactly it. Raises `ConfigError` for one TOML
    cannot hold (null, a number that is not finite)."""
    if value is None:
        raise ConfigError(
            f"the argument {name} is null, which a policy file (TOML) cannot hold: no rule can "
            "pin this call; approve or deny it as it is"
        )
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"the argument {name} is {value}: no rule can pin this call")
        return repr(value)
    if isinstance(value, str):
        return _quoted(value)
    if isinstance(value, list):
        return "[" + ", ".join(_value(name, item) for item in value) + "]"
    if isinstance(value, dict):
        pairs = ", ".join(f"{_quoted(str(k))} = {_value(name, v)}" for k, v in value.items())
        return "{" + pairs + "}"
    raise ConfigError(f"the argument {name} is not a JSON value: no rule can pin this call")


def _quoted(text: str) -> str:
    # A TOML basic string reads JSON's escapes. All but printable ASCII is escaped, so nothing
    # in the file can hide or reorder what a reader of it sees (DEL too, which JSON leaves).
    return json.dumps(text, ensure_ascii=True).replace("\x7f", "\\u007f")


def _comment(text: str) -> str:
    """`text` fit for a one-line comment: what would end the line or hide is escaped."""
    return json.dumps(text, ensure_ascii=True)[1:-1].replace("\x7f", "\\u007f")
