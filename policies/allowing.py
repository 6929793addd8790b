""" "Always allow calls like this": the text of a rule that allows exactly one call, and writing
it into a policy file ahead of every other rule.

The rule is never wider than the call: it names the tool (glob characters escaped) and what it
touches, and pins the whole call with `[rule.exactly]` (and `exactly_null` for arguments that
are null, which TOML cannot write): every argument the call was judged with (its effect among
them: a form's values, where a browser action goes), each to its exact value and type, and no
argument more or fewer. Scoped to a task, it also names the task. Before it is offered, it is
read back as the gate reads it and must allow the call, and a call with any one argument changed
or left out must fall through it.

`adding` holds the policy file's lock (a `.NAME.lock` file beside it) while the caller records
its decision: the new file is written and checked first (it must load, and the new rule must be
the first that matches the call), and takes the old one's place only when the caller commits,
so a decision that cannot be recorded saves nothing, and two reviewers saving rules at once
each keep theirs.
"""

from __future__ import annotations

import fcntl
import math
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from base.errors import ConfigError
from policies._compiled import CallView, CompiledRule
from policies.rules import Rule, parse_rules

_GLOB = {"*": "[*]", "?": "[?]", "[": "[[]"}
_RULE_HEADER = re.compile(r"\s*\[\[\s*rule\s*\]\]\s*(#.*)?")


@dataclass(frozen=True)
class Pinned:
    """The call a rule is made for: its tool, what the tool touches, the arguments it was
    judged with, and the task it is allowed in (None: every task)."""

    tool: str
    touches: str
    arguments: Mapping[str, Any]
    task: str | None


def rule_for(call: Pinned, *, who: str, request: str) -> str:
    """The TOML of a rule that allows calls exactly like `call`. Raises `ConfigError` for a
    call no rule can pin exactly."""
    reviewer = who or "a reviewer"
    where = f" in task {call.task}" if call.task else ""
    nulls = sorted(name for name, value in call.arguments.items() if value is None)
    lines = [
        "[[rule]]",
        f"# always allowed by {_escaped(reviewer)} on {time.strftime('%Y-%m-%d')}, from request "
        f"{_escaped(request)}",
        'action = "allow"',
        f"reason = {_quoted(f'{reviewer} allowed calls exactly like this one{where}')}",
        f"tool = {_quoted(''.join(_GLOB.get(c, c) for c in call.tool))}",
        f"touches = {_quoted(call.touches)}",
        *([f"task = {_quoted(call.task)}"] if call.task else []),
        *([f"exactly_null = [{', '.join(map(_quoted, nulls))}]"] if nulls else []),
        "[rule.exactly]",
        *(
            f"{_quoted(name)} = {_value(name, value)}"
            for name, value in sorted(call.arguments.items())
            if value is not None
        ),
    ]
    text = "\n".join(lines) + "\n"
    _check(text, call)
    return text


def _check(text: str, call: Pinned) -> None:
    """Refuse a rule that does not allow the call, or that allows a call unlike it."""
    rule = _compiled(parse_rules(text, source="the new rule").rules[0])

    def allows(arguments: Mapping[str, Any]) -> bool:
        return rule.applies_to(call.tool, call.touches) and rule.matches(
            CallView(arguments, call.task)
        )

    if not allows(call.arguments):
        raise ConfigError("the rule made for this call does not allow it: nothing is saved")
    for name, value in call.arguments.items():
        fewer = {k: v for k, v in call.arguments.items() if k != name}
        other = {**call.arguments, name: [value]}
        if allows(fewer) or allows(other):
            raise ConfigError(f"the rule made for this call does not pin {name}: nothing is saved")


def _compiled(rule: Rule) -> CompiledRule:
    return CompiledRule(rule, "the new rule", 0)


@contextmanager
def adding(path: Path, rule: str, call: Pinned) -> Iterator[Callable[[], None]]:
    """Hold the lock of the policy file at `path` and ready it with `rule` ahead of its rules;
    yield the function that puts it in place. Left uncalled, the file is unchanged. Raises
    `ConfigError` when the file cannot be read or written, does not load with the rule in it,
    or would decide the call by another rule first."""
    try:
        with open(path.with_name(f".{path.name}.lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            old = path.read_text(encoding="utf-8")
            at = _first_rule(old)
            new = (
                old[:at] + rule + "\n" + old[at:]
                if at is not None
                else old.rstrip("\n") + "\n\n" + rule
            )
            _first_match_is(new, rule, call, source=str(path))
            handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
            try:
                with os.fdopen(handle, "w", encoding="utf-8") as out:
                    out.write(new)
                    out.flush()
                    os.fsync(out.fileno())
                os.chmod(temporary, path.stat().st_mode & 0o7777)
                yield lambda: os.replace(temporary, path)
            finally:
                Path(temporary).unlink(missing_ok=True)  # gone already once put in place
    except OSError as exc:
        raise ConfigError(f"cannot write the policy file {path}: {exc.strerror or exc}") from None


def _first_match_is(text: str, rule: str, call: Pinned, *, source: str) -> None:
    """Refuse a policy `text` in which a rule other than `rule` decides `call` first."""
    ours = parse_rules(rule, source="the new rule").rules[0]
    view = CallView(call.arguments, call.task)
    for parsed in parse_rules(text, source=source).rules:
        compiled = _compiled(parsed)
        if compiled.applies_to(call.tool, call.touches) and (
            not compiled.inspects_arguments or compiled.matches(view)
        ):
            if parsed != ours:
                raise ConfigError(
                    f"in {source}, a rule ahead of the new one ({parsed.action}) would still "
                    "decide this call: nothing is saved"
                )
            return
    raise ConfigError(f"the new rule does not decide this call in {source}: nothing is saved")


def _first_rule(text: str) -> int | None:
    """Where the first `[[rule]]` table begins, with the comment lines just above it (they
    describe it); None when there is none."""
    lines = text.splitlines(keepends=True)
    for index, line in enumerate(lines):
        if _RULE_HEADER.fullmatch(line.rstrip("\r\n")):
            start = index
            while start > 0 and lines[start - 1].lstrip().startswith("#"):
                start -= 1
            return sum(len(earlier) for earlier in lines[:start])
    return None


def _value(name: str, value: Any) -> str:
    """`value` as a TOML value that reads back as exactly it. Raises `ConfigError` for one TOML
    cannot hold (a null inside a list or table, a number that is not finite)."""
    if value is None:
        raise ConfigError(
            f"the argument {name} holds a null inside it, which a policy file (TOML) cannot "
            "write: no rule can pin this call; approve or deny it as it is"
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
    """`text` as a TOML basic string."""
    return f'"{_escaped(text)}"'


def _escaped(text: str) -> str:
    """`text` with everything but printable ASCII escaped as TOML reads it (`\\uXXXX`, and
    `\\UXXXXXXXX` beyond the Basic Multilingual Plane), so nothing in the file can hide or
    reorder what a reader of it sees; fit for a one-line comment, too."""
    out = []
    for char in text:
        code = ord(char)
        if char in '"\\':
            out.append("\\" + char)
        elif 0x20 <= code < 0x7F:
            out.append(char)
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return "".join(out)
