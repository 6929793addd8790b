"""How the gate reads the text of a call: its command, the host of its URL, its path.

A rule compares against what a program will make of the text, not the text as written, so each
function here returns the forms rules see. Where programs read the same text differently (a shell
splitting a command line, two URL parsers disagreeing on a host), every reading is returned and
the rule decides: a deny or ask rule matches if any reading does, an allow rule only if all do.

This is best-effort reading of literal spellings. A shell and an HTTP client accept far more than
is modelled here (a command inside `sh -c '...'`, a flag spelt another way, a host that resolves
somewhere unexpected); the sandbox, not these readings, is the boundary that holds.
"""

from __future__ import annotations

import ipaddress
import posixpath
import re
import shlex
import socket
import unicodedata
from collections.abc import Iterator
from urllib.parse import unquote, urlsplit

from pydantic_core import Url

_WHITESPACE = re.compile(r"\s+")

# --- commands -----------------------------------------------------------------------------------

# What ends a simple command: ; & | (so && || |& too), newlines, ( ) of subshells and `$(...)`,
# and backquotes of command substitution.
_OPERATOR_CHARS = ";&|()\n`"
_OPERATORS = re.compile(r"[;&|()\n`]+")
_SHELL_WHITESPACE = " \t\r\f\v"  # not the newline: it ends a command
# Without quotes or backslashes, shlex's tokens are just these (and ten times cheaper to find).
_TOKENS = re.compile(r"[;&|()\n`]+|[^ \t\r\f\v;&|()\n`]+")
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
# Programs that run the rest of their words as a command, and shell words that may stand before
# one: each is dropped with its options and `VAR=value` words, so the program compared is the one
# that runs (`sudo -E env X=1 /bin/rm -rf /` is compared as `rm -rf /`).
_WRAPPERS = frozenset(
    {"sudo", "env", "command", "exec", "nice", "nohup", "time"}
    | {"!", "{", "if", "then", "elif", "else", "while", "until", "do"}
)
# Wrapper options whose value is the next word (`sudo -u root rm`, `nice -n 5 rm`).
_TAKES_VALUE = {
    "sudo": frozenset(
        {"-u", "-g", "-C", "-D", "-p", "-r", "-t", "-T", "-U"}
        | {"--user", "--group", "--chdir", "--prompt", "--role", "--type", "--other-user"}
        | {"--close-from", "--command-timeout"}
    ),
    "env": frozenset({"-u", "-C", "--unset", "--chdir"}),
    "nice": frozenset({"-n", "--adjustment"}),
    "time": frozenset({"-f", "-o", "--format", "--output"}),
    "exec": frozenset({"-a"}),
}


def command_readings(command: str) -> tuple[str, ...]:
    """Every reading of a command line that `command_prefix` rules compare against.

    The first is the whole line with whitespace runs made one space (so that prefixes spanning
    operators, such as a fork bomb's ``:(){``, are seen). Then come the simple commands of the
    line, which are what runs (there are none in a line of operators only): split at ``;``,
    ``&&``, ``||``, ``|``, ``&``, newlines, parentheses and backquotes; split into words as a
    POSIX shell does (quotes removed; with an unclosed quote, at whitespace instead); leading
    wrappers (``sudo``, ``env``, ``command``, ``exec``, ``nice``, ``nohup``, ``time``, with their
    options), ``VAR=value`` words and shell words such as ``then`` or ``{`` dropped; and the
    program named without a leading backslash or its directory (``\\rm`` and ``/bin/rm`` are
    ``rm``).

    Every reading ends in one space, which stands for the end of the (simple) command, so a prefix
    ending in a space matches a whole word: ``"rm -rf / "`` matches ``rm -rf /`` and
    ``true; rm -rf /;`` but not ``rm -rf /tmp``.
    """
    readings = [_WHITESPACE.sub(" ", command.strip()) + " "]
    # Also split the raw text at every operator character: quotes do not stop a shell from running
    # `$(...)` or backquotes inside double quotes (`echo "$(rm -rf /)"`). Only deny and ask rules
    # see these readings; for allow rules, see `literal_commands`.
    raw = [piece.split() for piece in _OPERATORS.split(command)]
    for simple in [*_simple_commands(command), *raw]:
        words = _program_words(simple)
        if words:
            reading = _WHITESPACE.sub(" ", " ".join(words).strip()) + " "
            if reading not in readings[1:]:
                readings.append(reading)
    return tuple(readings)


def literal_commands(command: str) -> tuple[str, ...] | None:
    """The simple commands of a line exactly as written (only quotes removed), which an allow rule
    must cover, every one. Nothing is stripped: `sudo ls`, `/tmp/x/ls` and `LD_PRELOAD=... ls` are
    not `ls` for an allow rule. None when what runs cannot be told from the text: the line
    substitutes commands (`$(...)`, backquotes, `<(...)`), redirects (`>`, `<`: a file is written
    or read that the words do not name as an argument), or cannot be split into words.
    """
    if "$(" in command or "`" in command or "<" in command or ">" in command:
        return None
    try:
        words = _split(command)
    except ValueError:
        return None
    found = tuple(" ".join(simple) + " " for simple in words if simple)
    return found or None


def normalise_prefix(prefix: str) -> str:
    """A `command_prefix` entry: leading whitespace dropped, whitespace runs made one space."""
    return _WHITESPACE.sub(" ", prefix.lstrip())


def _simple_commands(command: str) -> list[list[str]]:
    """The words of each simple command in a command line (see `command_readings`)."""
    try:
        return _split(command)
    except ValueError:  # an unclosed quote, or a backslash at the very end
        return [piece.split() for piece in _OPERATORS.split(command)]


def _split(command: str) -> list[list[str]]:
    """A command line as a shell splits it: the words of each simple command, quotes removed.
    Raises `ValueError` where the line cannot be split (an unclosed quote)."""
    if "'" in command or '"' in command or "\\" in command:
        lexer = shlex.shlex(command, posix=True, punctuation_chars=_OPERATOR_CHARS)
        lexer.whitespace = _SHELL_WHITESPACE
        lexer.whitespace_split = True
        lexer.commenters = ""  # text after `#` is read too: a deny rule may as well see it
        tokens = list(lexer)
    else:
        tokens = _TOKENS.findall(command)
    commands: list[list[str]] = [[]]
    for token in tokens:
        # A quoted `';'` comes out like an operator; splitting there too only adds a reading.
        if token and token.strip(_OPERATOR_CHARS) == "":
            commands.append([])
        else:
            commands[-1].append(token)
    return commands


def _program_words(words: list[str]) -> list[str]:
    """The words from the program that runs on: wrappers and assignments before it dropped."""
    i = 0
    while i < len(words):
        word = words[i]
        if _ASSIGNMENT.match(word):
            i += 1
            continue
        name = _program(word)
        if name not in _WRAPPERS:
            break
        i += 1
        takes_value = _TAKES_VALUE.get(name, frozenset())
        while i < len(words) and words[i].startswith("-"):
            i += 2 if words[i] in takes_value else 1
    rest = words[i:]
    if rest:
        rest[0] = _program(rest[0])
    return rest


def _program(word: str) -> str:
    """A program as named in rules: ``\\rm`` and ``/usr/bin/rm`` are ``rm``."""
    name = word.lstrip("\\")
    return name.rpartition("/")[2] or name


# --- URL hosts ----------------------------------------------------------------------------------

_LEGACY_IPV4 = re.compile(r"^[0-9][0-9a-fx.]*$")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
# Full stops that IDNA (and so browsers, curl and httpx) read as `.`; NFKC maps U+FF0E and turns
# U+FF61 into U+3002, which no normal form maps.
_DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})


def canonical_host(host: str) -> str:
    """A host in the one spelling rules compare against.

    Percent-escapes decoded (``%31%36%39.254.169.254``); Unicode compatibility forms folded
    (NFKC: fullwidth digits and letters are ASCII ones) and the Unicode full stops U+3002,
    U+FF0E and U+FF61 read as ``.``; lower case; no trailing dot; no IPv6 brackets or zone ID
    (``%eth0``); and an IP address
    in its standard form, whatever legacy spelling HTTP clients accept for it (``2852039166``,
    ``0xa9.0xfe.43518``, ``0251.0376.0251.0376``, ``::ffff:169.254.169.254``). A deny list that
    missed another spelling of the same host would be no deny list.
    """
    if "%" in host:
        host = unquote(host)
    if not host.isascii():
        host = unicodedata.normalize("NFKC", host).translate(_DOTS)
    host = host.lower().rstrip(".")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if ":" in host:
        try:
            address = ipaddress.IPv6Address(host.partition("%")[0])
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
    """Every host a URL could be read to name, each by `canonical_host`; none if it has none.

    Three parsers read it: Python's `urlsplit` (a URL without a scheme is read as if it had
    one), the same with backslashes read as slashes (some clients end the host at a backslash,
    others read ``http://a.com\\@b.com`` as user info and host ``b.com``), and the WHATWG URL
    standard that browsers and most HTTP clients follow (`pydantic_core.Url`), which reads
    ``http:\\\\host\\``, ``http:/host/``, ``http:host/`` and ``http:///host/`` as naming ``host``
    and applies IDNA. An allow rule must cover every reading; a deny or ask rule needs one.
    """
    hosts: list[str] = []
    for host in _host_readings(url):
        if host:
            canonical = canonical_host(host)
            if canonical and canonical not in hosts:
                hosts.append(canonical)
    return tuple(hosts)


def _host_readings(url: str) -> Iterator[str | None]:
    text = url if "://" in url or url.startswith("/") else "//" + url
    yield _split_host(text)
    if "\\" in text:
        yield _split_host(text.replace("\\", "/"))
    yield _whatwg_host(url)


def _split_host(url: str) -> str | None:
    try:
        return urlsplit(url).hostname
    except ValueError:  # e.g. an unclosed IPv6 bracket: no parseable host
        return None


def _whatwg_host(url: str) -> str | None:
    try:
        return Url(url).host
    except ValueError:  # pydantic_core.ValidationError: not a URL on its own
        pass
    # As with `urlsplit`, a URL without a scheme is read as if it had one; a path is not a host.
    text = url.strip()
    if _SCHEME.match(text) or (text.startswith("/") and not text.startswith("//")):
        return None
    try:
        return Url(("http:" if text.startswith("//") else "http://") + text).host
    except ValueError:
        return None


# --- paths --------------------------------------------------------------------------------------


def normalise_path(path: str) -> str:
    """A path with ``.`` and ``..`` resolved lexically (no file system), so ``/tmp/../etc/x`` is
    seen as ``/etc/x``. POSIX keeps a leading ``//`` distinct; nothing here does, so it is one.

    A leading ``~`` or ``~user`` is a home directory, so absolute: ``~/a/../b`` is ``~/b``, and a
    path that climbs out of it is read from the root, as if home were one level down (``~/../etc/x``
    is ``/etc/x``), never as the relative ``etc/x``.
    """
    normal = posixpath.normpath(path)
    if path.startswith("~"):
        home = path.partition("/")[0]
        if normal != home and not normal.startswith(home + "/"):
            normal = posixpath.normpath("/" + path[len(home) :].lstrip("/"))
    if normal.startswith("//"):
        normal = "/" + normal.lstrip("/")
    return normal
