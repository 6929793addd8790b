"""Policy rules: a TOML file, validated at load, refused with the line that is wrong.

The format (``policies/default.toml`` is a worked example)::

    # The first rule that matches a call decides it. When none matches, [default] decides.
    [default]
    action = "ask"                   # allow | ask | deny; "ask" when the table is left out

    [[rule]]
    action = "deny"                  # required: allow | ask | deny
    reason = "destructive command"   # said to the model (deny) or to the reviewer (ask)
    approvers = 2                    # ask: how many reviewers must approve (default 1)
    tool = "shell"                   # glob on the tool name, or a list of globs
    touches = ["external", "deploy"] # what the tool declares it touches: read/write/external/deploy
    command_prefix = ["rm -rf / "]   # the `command` argument starts with one of these
    url_host = ["*.internal"]        # the host of the `url` argument matches a glob
    method = ["POST", "DELETE"]      # the `method` argument is one of these
    path = ["/etc/**"]               # the `path` argument matches a path glob
    [rule.args]                      # any argument by name -> a glob, or a list of globs
    branch = "main"

    [[rule]]                         # what "always allow calls like this" writes:
    action = "allow"
    tool = "tally"
    touches = "external"
    task = "f372b294c0de4a1b"        # only in this task (left out: in every task)
    [rule.exactly]                   # every argument, each exactly this value, and no other
    counter = "front"
    amount = 1

Every key but `action`, `reason` and `approvers` is a matcher, and a rule needs at least one
(the catch-all is `[default]`). All matchers in a rule must match; within a list, any entry
may. A string stands for a list of one. A matcher about an argument the call does not have does
not match. `approvers` (a rule that asks) is how many reviewers must approve, each once.

- ``tool`` and ``[rule.args]`` are shell-style globs (``*``, ``?``, ``[abc]``, ``[!abc]``),
  case-sensitive; ``*`` matches any characters. ``[rule.args]`` sees the value as written. An
  argument that is not a string is matched in its compact JSON form: ``force = "true"`` matches
  ``true``, ``ids = "[1,2]"`` matches ``[1, 2]``; but a ``command`` given as a list of strings is
  joined with spaces, as ``command_prefix`` reads it.
- ``command_prefix`` compares against each simple command of the ``command`` argument: the line
  is split at ``;``, ``&&``, ``||``, ``|``, ``&``, newlines, parentheses and backquotes; each
  part is split into words as a POSIX shell does (quotes removed); leading ``sudo``, ``env``,
  ``command``, ``exec``, ``nice``, ``nohup`` and ``time`` (with their options), ``VAR=value``
  words and shell words such as ``then`` or ``{`` are dropped; the program loses a leading
  backslash and its directory (``/bin/rm`` is ``rm``); words are joined by one space (with an
  unclosed quote, the line is split at whitespace instead). The end of each part counts as a
  space, so a prefix ending in a space matches a whole word: ``"rm -rf / "`` matches
  ``rm -rf /``, ``true && sudo /bin/rm -rf '/';`` and ``rm -rf / --no-preserve-root``, not
  ``rm -rf /tmp``, while ``"mkfs"`` matches ``mkfs.ext4``. The whole line (whitespace runs
  made one space) is compared too, for prefixes that span operators. A deny or ask rule matches
  if any part does; an allow rule only if every simple command does. A list-of-strings command
  is joined first.
- ``url_host`` globs are case-insensitive. The host of the ``url`` argument is read by three
  parsers: Python's ``urlsplit`` (a URL without a scheme is read as if it had one), the same with
  backslashes read as slashes, and the WHATWG URL standard browsers and HTTP clients follow
  (``pydantic_core.Url``: ``http:\\\\host\\``, ``http:/host``, ``http:host`` and
  ``http:///host`` name ``host``). Each host is then put in one spelling: percent-escapes decoded,
  Unicode compatibility forms folded (fullwidth digits and letters) and the full stops U+3002,
  U+FF0E and U+FF61 read as ``.``, lower case, no trailing dot, IPv6 brackets and zone ID
  dropped, and an IP address in its standard form from the spellings ``inet_aton`` and IPv6
  accept (``2852039166``, ``0xa9fea9fe``, ``0251.0376.0251.0376``, ``169.254.43518``,
  ``::ffff:169.254.169.254``). A deny or ask rule matches if any reading matches; an allow rule
  only if every one does. A ``url`` argument from which no host can be read (a bare path, a
  broken URL, ``file:///x``) matches every deny and ask ``url_host`` rule and no allow rule.
- ``exactly`` pins the whole call: the call must have exactly these arguments (none missing,
  none more) and each must be exactly this value, of this type (``1`` is not ``1.0``, ``"1"`` or
  ``true``; a list is compared whole, in order; a table key by key). A tool's effect, read beside
  its arguments (a form's values, where a browser action goes), is the argument ``effect``.
  An empty ``[rule.exactly]`` matches only a call with no arguments. TOML has no null: the
  arguments that are null are named in ``exactly_null = ["body"]`` beside it.
- ``task`` is a task's id: the rule applies in that task alone.
- ``method`` is case-insensitive.
- ``path`` is first normalised lexically (``/tmp/../etc/x`` is ``/etc/x``). A leading ``~`` or
  ``~user`` is a home directory, so absolute: ``~/x`` stays ``~/x`` and a path that climbs out of
  it is read from the root (``~/../etc/x`` is ``/etc/x``). In the glob, ``*`` and ``?`` stay
  within one segment; ``**/`` matches zero or more directories (``**/.ssh/*`` matches ``.ssh/id``
  and ``/root/.ssh/id``); a trailing ``/**`` matches the directory and everything under it
  (``/etc/**`` matches ``/etc`` and ``/etc/a/b``).

Command, URL and path matching are best-effort tripwires against literal spellings in the
arguments named ``command``, ``url`` and ``path``, not a boundary. They do not see other flag
spellings (``rm -r -f -v /``), commands run by other commands (``sh -c '...'``, ``xargs``),
other destructive programs, a host a name resolves to, or an argument with another name; the
sandbox, not these rules, is the boundary that holds.

Unknown keys are errors: a typo such as ``comand_prefix`` must not silently widen a policy.
"""

from __future__ import annotations

import difflib
import json
import re
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic_core import ErrorDetails

from base.errors import ConfigError
from policies._call_text import canonical_host, normalise_prefix
from tools.tool import Touches

Action = Literal["allow", "ask", "deny"]
MATCHERS = (
    "tool",
    "touches",
    "task",
    "command_prefix",
    "url_host",
    "method",
    "path",
    "args",
    "exactly",
)


def _one_or_many(value: object) -> object:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list | tuple):
        return value  # each entry is checked by the field's own type
    raise ValueError("expected a string or a list of strings")


def _each(check: Callable[[str], str]) -> AfterValidator:
    def apply(values: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(check(v) for v in values)

    return AfterValidator(apply)


def _non_empty(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _method(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z]+", value):
        raise ValueError("not an HTTP method")
    return value.upper()


def _host(value: str) -> str:
    if "/" in value or "@" in value:
        raise ValueError("a URL, not a host pattern (write just the host)")
    # The same spelling as hosts read from URLs: `[FD00:EC2:0::254]` is `fd00:ec2::254` (as a
    # glob, the brackets would be a class), `ｍｅｔａｄａｔａ` is `metadata`.
    return canonical_host(_non_empty(value).strip())


def _prefix(value: str) -> str:
    return normalise_prefix(_non_empty(value))


def _json_value(value: Any) -> Any:
    """A value a call's argument can have: what JSON holds (TOML's dates and times are not)."""
    if isinstance(value, dict):
        for item in value.values():
            _json_value(item)
    elif isinstance(value, list):
        for item in value:
            _json_value(item)
    elif not isinstance(value, str | int | float | bool):
        raise ValueError(  # noqa: TRY004 - pydantic reports a ValueError as the line's error
            f"{value!r} is not a value a call's argument can have (write it as text)"
        )
    return value


# A matcher field: a string or a non-empty list of them, each entry checked (and normalised).
_AS_LIST = BeforeValidator(_one_or_many)
Globs = Annotated[tuple[str, ...], _AS_LIST, Field(min_length=1), _each(_non_empty)]
Prefixes = Annotated[tuple[str, ...], _AS_LIST, Field(min_length=1), _each(_prefix)]
Hosts = Annotated[tuple[str, ...], _AS_LIST, Field(min_length=1), _each(_host)]
Methods = Annotated[tuple[str, ...], _AS_LIST, Field(min_length=1), _each(_method)]
TouchesList = Annotated[tuple[Touches, ...], _AS_LIST, Field(min_length=1)]


class Rule(BaseModel):
    """One `[[rule]]` table. Build from TOML with `parse_rules`; see the module for the format."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    action: Action
    reason: str = ""
    approvers: int = Field(1, ge=1, le=5)
    tool: Globs | None = None
    touches: TouchesList | None = None
    command_prefix: Prefixes | None = None
    url_host: Hosts | None = None
    method: Methods | None = None
    path: Globs | None = None
    args: Annotated[dict[str, Globs], Field(min_length=1)] | None = None
    task: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")] | None = None
    exactly: dict[str, Annotated[Any, AfterValidator(_json_value)]] | None = None
    exactly_null: Annotated[tuple[str, ...], Field(min_length=1)] | None = None

    @model_validator(mode="after")
    def _has_a_matcher(self) -> Rule:
        if all(getattr(self, name) is None for name in MATCHERS):
            raise ValueError(
                "a rule needs at least one matcher ("
                + ", ".join(MATCHERS)
                + "); to decide every other call, set [default] action"
            )
        if self.exactly_null is not None and (
            self.exactly is None or set(self.exactly_null) & set(self.exactly)
        ):
            raise ValueError(
                "exactly_null names the arguments of an [rule.exactly] call that are null: "
                "give [rule.exactly] too, and name each argument in one of them only"
            )
        if self.approvers > 1 and self.action != "ask":
            raise ValueError('approvers is for a rule that asks (action = "ask")')
        return self


class _Default(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    action: Action = "ask"


@dataclass(frozen=True)
class RuleSet:
    """A loaded policy: its rules in order, the default action, and where each came from.

    `lines[i]` is the line of rule i's `[[rule]]` header in `source` (empty when the rules were
    not read from text; for rules written inline, `rule = [{...}, {...}]`, all share the line of
    `rule =`), `default_line` the line of `[default] action` (None when implicit).
    """

    rules: tuple[Rule, ...] = ()
    default: Action = "ask"
    source: str = "<rules>"
    lines: tuple[int, ...] = ()
    default_line: int | None = None

    def label(self, index: int) -> str:
        """A short name for rule `index`, unique in the rule set: ``policies.toml:14`` for a
        ``[[rule]]`` table, ``policies.toml:3 rule 2`` where rules share a line (inline rules),
        ``<rules>:rule 2`` without lines."""
        if index < len(self.lines):
            line = self.lines[index]
            if self.lines.count(line) == 1:
                return f"{self.source}:{line}"
            return f"{self.source}:{line} rule {index + 1}"
        return f"{self.source}:rule {index + 1}"

    @property
    def default_label(self) -> str:
        """A short name for the default action, such as ``policies.toml:2 [default]``."""
        where = f"{self.source}:{self.default_line}" if self.default_line else self.source
        return f"{where} [default]"


def load_rules(path: str | PathLike[str]) -> RuleSet:
    """Read and validate a rules file.

    Raises `ConfigError` when the file cannot be read or is malformed; the message names the file
    and the line (``rules.toml:7: rule 2: unknown key 'comand_prefix' ...``).
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: policy file not found", source=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read policy file: {exc}", source=str(path)) from exc
    return parse_rules(text, source=str(path))


def parse_rules(text: str, source: str = "<rules>") -> RuleSet:
    """Validate rules written in TOML; `source` names them in errors and decision labels.

    Raises `ConfigError` listing every problem, one per line, each as ``source:LINE: ...``;
    the error's `line` field holds the first problem's line.
    """
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line, message = _syntax_error_line(exc, text)
        raise ConfigError(
            f"{source}:{line}: TOML syntax error: {message}", source=source, line=line
        ) from None
    lines = _Lines(text)
    problems: list[tuple[int, str]] = []

    for key in raw:
        if key not in ("default", "rule"):
            problems.append(
                (
                    lines.top_level(key),
                    f"unknown table or key {key!r}"
                    f"{_did_you_mean(key, ('default', 'rule'))}"
                    " (a policy has [default] and [[rule]] tables)",
                )
            )

    default, default_line = _parse_default(raw, lines, problems)
    rules = _parse_rules(raw, lines, problems)

    if problems:
        problems.sort(key=lambda p: p[0])
        raise ConfigError(
            "\n".join(f"{source}:{line}: {message}" for line, message in problems),
            source=source,
            line=problems[0][0],
        )
    return RuleSet(
        rules=tuple(rules),
        default=default,
        source=source,
        lines=tuple(lines.rule_header(i) for i in range(len(rules))),
        default_line=default_line,
    )


def _parse_default(
    raw: dict[str, Any], lines: _Lines, problems: list[tuple[int, str]]
) -> tuple[Action, int | None]:
    """The [default] action and its line (ask, and none, when there is no [default])."""
    if "default" not in raw:
        return "ask", None
    try:
        default = _Default.model_validate(raw["default"]).action
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            problems.append((lines.default_key(err["loc"]), f"[default]: {_describe(err)}"))
        return "ask", None
    return default, lines.default_key(("action",)) if "action" in raw["default"] else None


def _parse_rules(raw: dict[str, Any], lines: _Lines, problems: list[tuple[int, str]]) -> list[Rule]:
    """The [[rule]] tables, validated; what is wrong with each goes to `problems`."""
    raw_rules = raw.get("rule", [])
    if isinstance(raw_rules, dict):
        problems.append(
            (
                lines.top_level("rule"),
                "write each rule as [[rule]] (an array of tables), not [rule]",
            )
        )
        return []
    if not isinstance(raw_rules, list):
        problems.append((lines.top_level("rule"), "`rule` must be [[rule]] tables"))
        return []
    rules: list[Rule] = []
    for index, entry in enumerate(raw_rules):
        number = index + 1
        if not isinstance(entry, dict):
            problems.append((lines.rule_key(index, ()), f"rule {number}: must be a table"))
        elif not entry:
            problems.append(
                (
                    lines.rule_key(index, ()),
                    f"rule {number}: is empty (it needs an action and a matcher)",
                )
            )
        else:
            try:
                rules.append(Rule.model_validate(entry))
            except ValidationError as exc:
                for err in exc.errors(include_url=False):
                    problems.append(
                        (lines.rule_key(index, err["loc"]), f"rule {number}: {_describe(err)}")
                    )
    return rules


_AT_LINE = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
_AT_END = re.compile(r"\s*\(at end of document\)$")


def _syntax_error_line(exc: tomllib.TOMLDecodeError, text: str) -> tuple[int, str]:
    """The line and the bare message of a TOML syntax error (tomllib puts both in the text)."""
    message = str(exc)
    if match := _AT_LINE.search(message):
        return int(match.group(1)), f"{message[: match.start()]} (column {match.group(2)})"
    if match := _AT_END.search(message):
        return max(1, len(text.splitlines())), f"{message[: match.start()]} at end of file"
    return 1, message


def _describe(err: ErrorDetails) -> str:
    """One validation problem, in the words of the rules file rather than of pydantic."""
    loc = err["loc"]
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
    kind = err["type"]
    if kind == "extra_forbidden":
        key = str(loc[-1])
        known = ("action", "reason", "approvers", *MATCHERS)
        return f"unknown key {key!r}{_did_you_mean(key, known)}"
    if kind == "missing":
        return f"missing key {where!r}"
    if kind == "too_short":
        return f"{where}: must not be empty"
    message = err["msg"].removeprefix("Value error, ").replace("Input should be", "should be")
    if not where:
        return message
    got = json.dumps(err.get("input"), default=str)
    return f"{where}: {message} (got {got})"


def _did_you_mean(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class _Lines:
    """Finds the line of a key in the raw text, which tomllib does not report.

    It reads table headers and `key =` lines only; text inside multi-line strings that happens to
    look like a header could mislead it, so every lookup falls back to the enclosing header.
    """

    _HEADER = re.compile(r"^\s*(\[\[?)\s*([^\[\]]+?)\s*\]\]?\s*(?:#.*)?$")

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        # (line number, dotted table name, is an array-of-tables header)
        self.headers: list[tuple[int, str, bool]] = []
        for number, line in enumerate(self.lines, start=1):
            if match := self._HEADER.match(line):
                name = re.sub(r"[\s\"']", "", match.group(2))
                self.headers.append((number, name, match.group(1) == "[["))
        self.rule_headers = [n for n, name, array in self.headers if name == "rule" and array]

    def _key(self, key: str, start: int, stop: int, parent: str | None = None) -> int | None:
        """First line in (start, stop) setting `key` (or `parent.key` with a dotted key)."""
        name = re.escape(key)
        quoted = rf"(?:{name}|\"{name}\"|'{name}')"
        if parent is not None:
            pattern = re.compile(rf"^\s*{re.escape(parent)}\s*\.\s*{quoted}\s*=")
        else:
            pattern = re.compile(rf"^\s*{quoted}\s*[=.]")
        for number in range(start + 1, min(stop, len(self.lines) + 1)):
            if pattern.match(self.lines[number - 1]):
                return number
        return None

    def _next_header(self, after: int, within: str | None = None) -> int:
        """The line of the first header after line `after` (outside the `within.` subtables)."""
        for number, name, _ in self.headers:
            if number > after and not (within and name.startswith(within + ".")):
                return number
        return len(self.lines) + 1

    def top_level(self, key: str) -> int:
        for number, name, _ in self.headers:
            if name == key or name.startswith(key + "."):
                return number
        first = self.headers[0][0] if self.headers else len(self.lines) + 1
        return self._key(key, 0, first) or 1

    def default_key(self, loc: tuple[int | str, ...]) -> int:
        header = next(
            (n for n, name, array in self.headers if name == "default" and not array), None
        )
        if header is None:
            return self.top_level("default")
        if loc and isinstance(loc[0], str):
            return self._key(loc[0], header, self._next_header(header)) or header
        return header

    def rule_header(self, index: int) -> int:
        if index < len(self.rule_headers):
            return self.rule_headers[index]
        return self.top_level("rule")  # rules written inline: `rule = [{...}]`

    def rule_key(self, index: int, loc: tuple[int | str, ...]) -> int:
        header = self.rule_header(index)
        if not loc or not isinstance(loc[0], str):
            return header
        body_end = self._next_header(header)
        key_line = self._key(loc[0], header, body_end)
        table = loc[0]
        if table in ("args", "exactly") and len(loc) > 1 and isinstance(loc[1], str):
            # The argument may be set in a [rule.args] table, as `args.name =`, or inline.
            rule_end = self._next_header(header, within="rule")
            for number, name, _ in self.headers:
                if header < number < rule_end and name == f"rule.{table}":
                    found = self._key(loc[1], number, self._next_header(number))
                    if found:
                        return found
                    key_line = key_line or number
            return self._key(loc[1], header, body_end, parent=table) or key_line or header
        if key_line is None:
            # An unknown subtable such as `[rule.arg]` is reported at its own header.
            rule_end = self._next_header(header, within="rule")
            key_line = next(
                (
                    n
                    for n, name, _ in self.headers
                    if header < n < rule_end and name == f"rule.{loc[0]}"
                ),
                None,
            )
        return key_line or header
