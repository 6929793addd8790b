"""Matching machinery for the gate: rules compiled once, a lazy view of one call's arguments.

Everything here is pure and allocation-light because the gate runs on every step of the loop:
patterns are compiled when the gate is built, and a call's derived values (the readings of its
command, the hosts of its URL, its method and path; see `policies._call_text`) are computed at most
once, and only if some rule asks for them.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from policies._call_text import command_readings, literal_commands, normalise_path, url_hosts

if TYPE_CHECKING:
    from policies.rules import Rule


def path_glob(pattern: str) -> str:
    """Translate a path glob to a regular expression (anchored by the caller with fullmatch).

    ``*`` and ``?`` stay within one path segment; ``[...]`` is a character class (``[!...]``
    negates); ``**/`` matches zero or more whole directories; a trailing ``/**`` matches the
    directory itself and everything under it; ``**`` anywhere else matches any characters.
    """
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        at_segment_start = i == 0 or pattern[i - 1] == "/"
        if pattern.startswith("**/", i) and at_segment_start:
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("/**", i) and i + 3 == n:
            out.append("(?:/.*)?")
            i = n
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and (end := _class_end(pattern, i)) > 0:
            out.append(_char_class(pattern[i + 1 : end]))
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return "".join(out)


def _class_end(pattern: str, start: int) -> int:
    """Index of the `]` closing the class opened at `start`, or -1 (then `[` is literal)."""
    j = start + 1
    if j < len(pattern) and pattern[j] == "!":
        j += 1
    if j < len(pattern) and pattern[j] == "]":
        j += 1  # a `]` first in the class is a member, as in fnmatch
    return pattern.find("]", j)


def _char_class(body: str) -> str:
    negate = body.startswith("!")
    if negate:
        body = body[1:]
    # Escape what `re` would read as class syntax of its own; keep `-` so ranges work.
    escaped = "".join("\\" + c if c in "\\[]^&~|" else c for c in body)
    return f"[{'^' if negate else ''}{escaped}]"


def exact_form(value: Any) -> str:
    """A value as `exactly` compares it: JSON with its types kept (`1`, `1.0` and `true` are
    three values), keys sorted."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def render_argument(value: Any) -> str:
    """An argument as `[rule.args]` globs see it: a string as is, anything else as compact JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def _command_text(value: object) -> str | None:
    """A `command` argument as text: a string, or an argv list joined with spaces (it runs the
    same program as its joined form); None for anything else."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return " ".join(value)
    return None


_UNSET: Any = object()


class CallView:
    """A lazy view of one call's arguments: each derived value is computed once, on first use.

    (Hand-written rather than `functools.cached_property`, whose per-access lock on Python 3.11
    cost more than the matching itself.)
    """

    __slots__ = ("_commands", "_hosts", "_literal", "_method", "_path", "arguments", "task")

    def __init__(self, arguments: Mapping[str, Any], task: str | None = None) -> None:
        self.arguments = arguments
        #: the task the call is made in (None: not known, and no task's rule matches it)
        self.task = task
        self._commands = self._hosts = self._method = self._path = self._literal = _UNSET

    @property
    def commands(self) -> tuple[str, ...] | None:
        """The readings of the `command` argument (`command_readings`); None without one."""
        if self._commands is _UNSET:
            text = _command_text(self.arguments.get("command"))
            self._commands = command_readings(text) if text is not None else None
        result: tuple[str, ...] | None = self._commands
        return result

    @property
    def literal_commands(self) -> tuple[str, ...] | None:
        """The simple commands as written, for allow rules (`literal_commands`); None without a
        `command` argument, or when what runs cannot be told from it."""
        if self._literal is _UNSET:
            text = _command_text(self.arguments.get("command"))
            self._literal = literal_commands(text) if text is not None else None
        result: tuple[str, ...] | None = self._literal
        return result

    @property
    def hosts(self) -> tuple[str, ...] | None:
        """The hosts the `url` argument may name (`url_hosts`): None without a `url` argument,
        empty when there is one but no host can be read from it."""
        if self._hosts is _UNSET:
            value = self.arguments.get("url")
            if value is None:
                self._hosts = None
            else:
                self._hosts = url_hosts(value) if isinstance(value, str) else ()
        result: tuple[str, ...] | None = self._hosts
        return result

    @property
    def method(self) -> str | None:
        if self._method is _UNSET:
            value = self.arguments.get("method")
            self._method = value.strip().upper() if isinstance(value, str) else None
        result: str | None = self._method
        return result

    @property
    def path(self) -> str | None:
        if self._path is _UNSET:
            value = self.arguments.get("path")
            self._path = normalise_path(value) if isinstance(value, str) and value else None
        result: str | None = self._path
        return result

    def rendered(self, name: str) -> str | None:
        """Argument `name` as `[rule.args]` globs see it (`render_argument`; a `command` argv
        list joined with spaces, as `command_prefix` reads it); None when the call lacks it."""
        if name not in self.arguments:
            return None
        value = self.arguments[name]
        if name == "command" and (text := _command_text(value)) is not None:
            return text
        return render_argument(value)


@dataclass(frozen=True, slots=True)
class _Patterns:
    """Globs compiled into one alternation for matching, kept apart to say which one matched."""

    texts: tuple[str, ...]
    each: tuple[re.Pattern[str], ...]
    any: re.Pattern[str]

    @classmethod
    def compile(
        cls, texts: tuple[str, ...], translate: Callable[[str], str] = fnmatch.translate
    ) -> _Patterns:
        regexes = [f"(?s:{translate(text)})" for text in texts]
        return cls(texts, tuple(re.compile(r) for r in regexes), re.compile("|".join(regexes)))

    def match(self, text: str) -> bool:
        return self.any.fullmatch(text) is not None

    def which(self, text: str) -> str | None:
        return next(
            (t for t, p in zip(self.texts, self.each, strict=True) if p.fullmatch(text)), None
        )


class CompiledRule:
    """Rule number `index` of a rule set, ready to test calls against; `label` names it uniquely
    in decisions. `explain` says what matched, for previews."""

    __slots__ = (
        "action",
        "approvers",
        "args",
        "command",
        "exactly",
        "hosts",
        "index",
        "inspects_arguments",
        "label",
        "methods",
        "path",
        "reads",
        "reason",
        "task",
        "tool",
        "touches",
    )

    def __init__(self, rule: Rule, label: str, index: int) -> None:
        self.action = rule.action
        self.approvers = rule.approvers
        self.reason = rule.reason
        self.label = label
        self.index = index
        self.tool = _Patterns.compile(rule.tool) if rule.tool else None
        self.touches = frozenset(rule.touches) if rule.touches else None
        self.methods = frozenset(rule.method) if rule.method else None
        self.command = rule.command_prefix
        self.path = _Patterns.compile(rule.path, path_glob) if rule.path else None
        self.hosts = _Patterns.compile(rule.url_host) if rule.url_host else None
        self.args = (
            tuple((name, _Patterns.compile(globs)) for name, globs in rule.args.items())
            if rule.args
            else None
        )
        self.task = rule.task
        self.exactly = (
            {name: exact_form(value) for name, value in rule.exactly.items()}
            | dict.fromkeys(rule.exactly_null or (), exact_form(None))
            if rule.exactly is not None
            else None
        )
        #: the arguments its matchers read; a tool without one of them can never match the rule
        self.reads = (
            frozenset(self.exactly or ())
            | frozenset(
                name
                for name, matcher in (
                    ("method", self.methods),
                    ("command", self.command),
                    ("path", self.path),
                    ("url", self.hosts),
                )
                if matcher is not None
            )
            | frozenset(name for name, _ in self.args or ())
        )
        #: whether matching looks at the arguments at all (most rules look only at the tool)
        self.inspects_arguments = (
            bool(self.reads) or self.exactly is not None or self.task is not None
        )

    def applies_to(self, tool_name: str, touches: str) -> bool:
        """Whether the tool-level matchers (`tool`, `touches`) accept this tool."""
        if self.tool is not None and not self.tool.match(tool_name):
            return False
        return self.touches is None or touches in self.touches

    def matches(self, call: CallView) -> bool:
        """Whether the argument-level matchers accept the call (the tool was checked before).

        Where the text reads several ways (a command line's simple commands, a URL's hosts), an
        allow rule needs every reading to match and a deny or ask rule needs one.
        """
        if self.task is not None and call.task != self.task:
            return False
        if self.exactly is not None and not self._exactly_matches(call.arguments):
            return False
        if self.methods is not None and call.method not in self.methods:
            return False
        if self.command is not None and not self._command_matches(call):
            return False
        if self.path is not None:
            path = call.path
            if path is None or not self.path.match(path):
                return False
        if self.hosts is not None and not self._hosts_match(call.hosts):
            return False
        if self.args is not None:
            for name, patterns in self.args:
                value = call.rendered(name)
                if value is None or not patterns.match(value):
                    return False
        return True

    def _exactly_matches(self, arguments: Mapping[str, Any]) -> bool:
        assert self.exactly is not None
        if len(arguments) != len(self.exactly):
            return False
        for name, value in arguments.items():
            wanted = self.exactly.get(name)
            if wanted is None or exact_form(value) != wanted:
                return False
        return True

    def _command_matches(self, call: CallView) -> bool:
        assert self.command is not None
        if self.action != "allow":
            readings = call.commands
            return readings is not None and any(r.startswith(self.command) for r in readings)
        # Allowing needs every command that runs covered, as written: stripping wrappers or a
        # program's directory helps a deny rule see through them, but would widen an allow.
        runs = call.literal_commands
        return runs is not None and all(r.startswith(self.command) for r in runs)

    def _hosts_match(self, hosts: tuple[str, ...] | None) -> bool:
        assert self.hosts is not None
        if hosts is None:
            return False
        if not hosts:
            # A URL no parser could read a host from: a deny or ask rule fails closed (it
            # matches), an allow rule does not match.
            return self.action != "allow"
        test = all if self.action == "allow" else any
        return test(self.hosts.match(h) for h in hosts)

    def explain(self, call: CallView) -> Iterator[str]:
        """Lines saying which argument values made this rule match, for a reviewer."""
        if self.hosts is not None and call.hosts is not None:
            for host in call.hosts:
                yield f"host: {host}{_because(self.hosts.which(host))}"
            if not call.hosts:
                yield "host: none could be read from the url"
        if self.methods is not None and call.method is not None:
            yield f"method: {call.method}"
        if self.path is not None and call.path is not None:
            yield f"path: {call.path}{_because(self.path.which(call.path))}"
        if self.command is not None and call.commands is not None:
            yield _explain_command(call.commands, self.command)
        for name, patterns in self.args or ():
            value = call.rendered(name)
            if value is not None:
                yield f"{name}: {value}{_because(patterns.which(value))}"


def _explain_command(readings: tuple[str, ...], prefixes: tuple[str, ...]) -> str:
    shown = f"command: {readings[0].rstrip()}"
    for index, reading in enumerate(readings):
        prefix = next((p for p in prefixes if reading.startswith(p)), None)
        if prefix is None:
            continue
        if index == 0:  # the whole line
            return f'{shown} (starts with "{prefix.rstrip()}")'
        return f'{shown} (runs "{reading.rstrip()}", which starts with "{prefix.rstrip()}")'
    return shown


def _because(pattern: str | None) -> str:
    return f' (matches "{pattern}")' if pattern is not None else ""
