""" "Always allow calls like this": a rule that allows exactly one call, written into the policy
file a reviewer chose, ahead of every other rule.

The rule names the tool and pins every argument the call was judged with to its exact value
(glob characters escaped; a value that is not a string in the compact JSON the matcher reads),
so it is never wider than the call: no wildcard the reviewer did not write. Before it is saved,
it is read back as the gate would read it, and must allow the call; the file with it must load.
It is written whole to a new file that takes the old one's place, so a crash leaves one or the
other. The reviewer sees the rule's text before it is saved.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from base.errors import ConfigError
from policies._compiled import render_argument
from policies.decisions import Allow
from policies.gate import Gate
from policies.rules import load_rules
from tools.tool import Tool

_GLOB = {"*": "[*]", "?": "[?]", "[": "[[]"}


def rule_for(tool: Tool, arguments: dict[str, Any], *, who: str, request: str) -> str:
    """The TOML of a rule that allows calls of `tool` with exactly `arguments`. Raises
    `ConfigError` for a call no rule can pin exactly."""
    reviewer = who or "a reviewer"
    when = time.strftime("%Y-%m-%d %H:%M")
    lines = [
        "[[rule]]",
        f"# always allowed by {_comment(reviewer)} on {when}, from request {_comment(request)}",
        'action = "allow"',
        f"reason = {_quoted(reviewer + ' allowed calls exactly like this one')}",
        f"tool = {_quoted(_literal(tool.name))}",
    ]
    if arguments:
        lines.append("[rule.args]")
    for name, value in sorted(arguments.items()):
        if name == "command" and isinstance(value, list):
            raise ConfigError(
                "a command given as a list is matched joined with spaces, so no rule can pin it "
                "exactly: approve or deny it as it is"
            )
        lines.append(f"{_quoted(name)} = {_quoted(_literal(render_argument(value)))}")
    text = "\n".join(lines) + "\n"
    gate = Gate.from_text(text + '\n[default]\naction = "deny"\n', source="the new rule")
    if not isinstance(gate.evaluate(tool, arguments), Allow):
        raise ConfigError("the rule made for this call does not allow it: nothing is saved")
    return text


def add_rule(path: Path, rule: str) -> None:
    """Put `rule` ahead of every rule of the policy file at `path`. Raises `ConfigError` when
    the file cannot be read, written, or loaded with the rule in it (it is then unchanged)."""
    try:
        old = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the policy file {path}: {exc.strerror or exc}") from None
    at = _first_rule(old)
    new = old[:at] + rule + "\n" + old[at:] if at is not None else old.rstrip("\n") + "\n\n" + rule
    try:
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(new)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, path.stat().st_mode & 0o7777)
        try:
            load_rules(temporary)  # the file as it will be: refused whole if it does not load
        except ConfigError:
            os.unlink(temporary)
            raise
        os.replace(temporary, path)
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


def _literal(text: str) -> str:
    return "".join(_GLOB.get(char, char) for char in text)


def _quoted(text: str) -> str:
    # A TOML basic string reads JSON's escapes. All but printable ASCII is escaped, so nothing
    # in the file can hide or reorder what a reader of it sees (DEL too, which JSON leaves).
    return json.dumps(text, ensure_ascii=True).replace("\x7f", "\\u007f")


def _comment(text: str) -> str:
    """`text` fit for a one-line comment: what would end the line or hide is escaped."""
    return json.dumps(text, ensure_ascii=True)[1:-1]
