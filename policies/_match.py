"""Matching machinery for the gate: rules compiled once, a lazy view of one call's arguments.

Everything here is pure and allocation-light because the gate runs on every step of the loop:
patterns are compiled when the gate is built, and a call's derived values (its normalised command,
URL host, method, path) are computed at most once, and only if some rule asks for them.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import json
import posixpath
import re
import socket
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from policies.rules import Rule

_WHITESPACE = re.compile(r"\s+")
_LEGACY_IPV4 = re.compile(r"^[0-9][0-9a-fx.]*$")


def normalise_command(command: str) -> str:
    """A command as prefixes see it: whitespace runs made one space, ending in one space.

    The trailing space stands for the end of the command, so a prefix that ends in a space matches
    a whole word: ``"rm -rf / "`` matches ``rm -rf /`` and ``rm -rf / --x`` but not ``rm -rf /tmp``.
    """
    return _WHITESPACE.sub(" ", command.strip()) + " "


def normalise_prefix(prefix: str) -> str:
    """A `command_prefix` entry: leading whitespace dropped, whitespace runs made one space."""
    return _WHITESPACE.sub(" ", prefix.lstrip())


def canonical_host(host: str) -> str:
    """A host in the one spelling rules compare against: lower case, no trailing dot, and an IP
    address in its standard form, whatever legacy spelling (``2852039166``, ``0xa9.0xfe.43518``,
    ``::ffff:169.254.169.254``) names it. A deny list that missed another spelling of the same
    address would be no deny list."""
    host = host.lower().rstrip(".")
    if ":" in host:
        try:
            address = ipaddress.IPv6Address(host)
        except ValueError:
            return host
        return str(address.ipv4_mapped or address)
    if _LEGACY_IPV4.match(host):
        try:
            # inet_aton is a pure parser (no lookup) and accepts the forms HTTP clients accept.
            return socket.inet_ntoa(socket.inet_aton(host))
        except OSError:
            return host
    return host


def url_hosts(url: str) -> tuple[str, ...]:
    """Every host a URL could be read to name: none when it has no host, two when parsers differ.

    A URL without a scheme (``example.com/x``) is read as if it had one. A backslash in the
    authority is read by some clients as the end of the host and by others as part of the user
    info (``http://a.com\\@b.com``): both readings are returned, so that an allow rule must cover
    both and a deny rule catches either.
    """
    readings = [url]
    if "://" not in url and not url.startswith("/"):
        readings = ["//" + url]
    if "\\" in url:
        readings.append(readings[0].replace("\\", "/"))
    hosts: list[str] = []
    for text in readings:
        try:
            host = urlsplit(text).hostname
        except ValueError:  # e.g. an unclosed IPv6 bracket: no parseable host
            continue
        if host:
            canonical = canonical_host(host)
            if canonical not in hosts:
                hosts.append(canonical)
    return tuple(hosts)


def normalise_path(path: str) -> str:
    """A path with ``.`` and ``..`` resolved lexically (no file system), so ``/tmp/../etc/x`` is
    seen as ``/etc/x``. POSIX keeps a leading ``//`` distinct; nothing here does, so it is one."""
    normal = posixpath.normpath(path)
    if normal.startswith("//"):
        normal = "/" + normal.lstrip("/")
    return normal


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


def render_argument(value: Any) -> str:
    """An argument as `[rule.args]` globs see it: a string as is, anything else as compact JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


_UNSET: Any = object()


class Call:
    """A lazy view of one call's arguments: each derived value is computed once, on first use.

    (Hand-written rather than `functools.cached_property`, whose per-access lock on Python 3.11
    cost more than the matching itself.)
    """

    __slots__ = ("_command", "_hosts", "_method", "_path", "arguments")

    def __init__(self, arguments: Mapping[str, Any]) -> None:
        self.arguments = arguments
        self._command = self._hosts = self._method = self._path = _UNSET

    @property
    def command(self) -> str | None:
        if self._command is _UNSET:
            value = self.arguments.get("command")
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                value = " ".join(value)  # an argv list runs the same program as its joined form
            self._command = normalise_command(value) if isinstance(value, str) else None
        result: str | None = self._command
        return result

    @property
    def hosts(self) -> tuple[str, ...]:
        if self._hosts is _UNSET:
            value = self.arguments.get("url")
            self._hosts = url_hosts(value) if isinstance(value, str) else ()
        result: tuple[str, ...] = self._hosts
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
        if name not in self.arguments:
            return None
        return render_argument(self.arguments[name])


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
    """One rule, ready to test calls against. `explain` says what matched, for previews."""

    __slots__ = (
        "action",
        "args",
        "command",
        "hosts",
        "inspects_arguments",
        "label",
        "methods",
        "path",
        "reason",
        "tool",
        "touches",
    )

    def __init__(self, rule: Rule, label: str) -> None:
        self.action = rule.action
        self.reason = rule.reason
        self.label = label
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
        #: whether matching looks at the arguments at all (most rules look only at the tool)
        self.inspects_arguments = any(
            m is not None for m in (self.methods, self.command, self.path, self.hosts, self.args)
        )

    def applies_to(self, tool_name: str, touches: str) -> bool:
        """Whether the tool-level matchers (`tool`, `touches`) accept this tool."""
        if self.tool is not None and not self.tool.match(tool_name):
            return False
        return self.touches is None or touches in self.touches

    def matches(self, call: Call) -> bool:
        """Whether the argument-level matchers accept the call (the tool was checked before)."""
        if self.methods is not None and call.method not in self.methods:
            return False
        if self.command is not None:
            command = call.command
            if command is None or not command.startswith(self.command):
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

    def _hosts_match(self, hosts: tuple[str, ...]) -> bool:
        assert self.hosts is not None
        if not hosts:
            return False
        # Where a URL reads two ways, allowing needs both readings covered, refusing needs one.
        test = all if self.action == "allow" else any
        return test(self.hosts.match(h) for h in hosts)

    def explain(self, call: Call) -> Iterator[str]:
        """Lines saying which argument values made this rule match, for a reviewer."""
        if self.hosts is not None:
            for host in call.hosts:
                yield f"host: {host}{_because(self.hosts.which(host))}"
        if self.methods is not None and call.method is not None:
            yield f"method: {call.method}"
        if self.path is not None and call.path is not None:
            yield f"path: {call.path}{_because(self.path.which(call.path))}"
        if self.command is not None and call.command is not None:
            prefix = next((p for p in self.command if call.command.startswith(p)), None)
            shown = call.command.rstrip()
            yield f"command: {shown}" + (f' (starts with "{prefix.rstrip()}")' if prefix else "")
        for name, patterns in self.args or ():
            value = call.rendered(name)
            if value is not None:
                yield f"{name}: {value}{_because(patterns.which(value))}"


def _because(pattern: str | None) -> str:
    return f' (matches "{pattern}")' if pattern is not None else ""
