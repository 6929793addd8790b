"""The policy gate: every tool call passes `Gate.evaluate` before it may run.

The gate is pure: it reads its rules once, when built, and then decides from the tool and the
arguments alone, with no I/O, in a few microseconds (it runs on every step of the loop).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from importlib import resources
from os import PathLike
from pathlib import Path
from typing import Any

from base.errors import ConfigError
from policies._compiled import CallView, CompiledRule
from policies._destination import destination_lines
from policies.decisions import Allow, Decision, Deny, RequireApproval
from policies.rules import RuleSet, load_rules, parse_rules
from tools.tool import EFFECT, Tool

# Tool names come from a registry, so this stays small; the bound only stops a caller that
# invents names from growing it without end.
_MAX_CACHED_TOOLS = 4096


class Gate:
    """Decides `Allow | Deny | RequireApproval` for a tool call from an ordered rule set.

    The first rule that matches decides; when none does, the rule set's default action does.
    """

    def __init__(
        self, rules: RuleSet, *, read_from: tuple[Path, tuple[int, int]] | None = None
    ) -> None:
        self.rules = rules
        #: the file the rules were read from, and its modification time and size then
        self._read_from = read_from
        self._compiled = tuple(
            CompiledRule(rule, rules.label(i), i) for i, rule in enumerate(rules.rules)
        )
        # The rules whose `tool`/`touches` matchers accept a tool depend on its name and touches
        # only, so they are worked out once per tool rather than on every call.
        self._by_tool: dict[Tool, tuple[CompiledRule, ...]] = {}
        # Allow and Deny decisions by (rule index, tool name): the index, not the label, names a
        # rule, so that no two rules can ever share a cached decision.
        self._fixed: dict[tuple[int, str], Allow | Deny] = {}

    def __repr__(self) -> str:
        return (
            f"<Gate {self.rules.source}: {len(self._compiled)} rules, default {self.rules.default}>"
        )

    @classmethod
    def from_file(cls, path: str | PathLike[str]) -> Gate:
        """A gate from a TOML rules file. Raises `ConfigError` naming the file and bad line."""
        where = Path(path)
        seen = _stamp(where)
        return cls(load_rules(where), read_from=(where, seen) if seen else None)

    def current(self) -> Gate:
        """This gate, or one read again from its file if the file changed since (a rule a
        reviewer saved meanwhile: "always allow"). Raises `ConfigError` for a file that no
        longer loads."""
        if self._read_from is None:
            return self
        path, seen = self._read_from
        return self if _stamp(path) == seen else Gate.from_file(path)

    @classmethod
    def from_text(cls, text: str, source: str = "<rules>") -> Gate:
        """A gate from TOML text; `source` names it in errors and decision labels.

        Raises `ConfigError` naming `source` and the bad line.
        """
        return cls(parse_rules(text, source=source))

    @staticmethod
    def text_of(path: str | PathLike[str] | None) -> tuple[str, str]:
        """The rules `from_file(path)` (None: `default()`) reads, as text and the source that
        names them: what a workflow, which reads no file, builds the same gate from. Raises
        `ConfigError` for a file that cannot be read."""
        if path is None:
            text = resources.files("policies").joinpath("default.toml").read_text(encoding="utf-8")
            return text, "policies/default.toml"
        try:
            return Path(path).read_text(encoding="utf-8"), str(path)
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read policy file: {exc}", source=str(path)) from exc

    @classmethod
    def default(cls) -> Gate:
        """The gate of the packaged `policies/default.toml`: literal spellings of destructive
        commands, cloud metadata hosts and system paths denied; every command and every absolute
        path asked of a reviewer (until the sandbox contains them); reads and writes to relative
        paths allowed; external and deploy effects asked of a reviewer."""
        return cls.from_text(*cls.text_of(None))

    def evaluate(
        self, tool: Tool, arguments: Mapping[str, Any], *, task: str | None = None
    ) -> Decision:
        """Decide whether `tool` may run with `arguments` (already validated by `Tool.parse`) in
        the task `task` (a rule scoped to a task applies only there)."""
        call = CallView(arguments, task)
        for rule in self._rules_for(tool):
            if not rule.inspects_arguments or rule.matches(call):
                decision = self._decide(rule, tool, call)
                break
        else:
            decision = self._default(tool, call)
        if isinstance(decision, Allow) and tool.needs_approval is not False:
            return self._tool_asks(tool, call, decision) or decision
        return decision

    @staticmethod
    def _tool_asks(tool: Tool, call: CallView, allowed: Allow) -> RequireApproval | None:
        """A tool declared with `needs_approval` asks a reviewer for what the policy allows (a
        denial stands)."""
        asks = tool.needs_approval
        if callable(asks):
            asks = bool(asks(dict(call.arguments)))
        if not asks:
            return None
        reason = f"the tool {tool.name} asks a reviewer (needs_approval); the policy would allow it"
        return RequireApproval(
            f"{reason}: {allowed.reason}", "tool:needs_approval", _preview(tool, call.arguments, ())
        )

    def _rules_for(self, tool: Tool) -> tuple[CompiledRule, ...]:
        """The rules that can apply to this tool, worked out once per tool: its name and what it
        touches must fit, and it must have every argument the rule reads (a shell rule can never
        match a tool with no `command`), so most calls test only a rule or two."""
        found = self._by_tool.get(tool)
        if found is None:
            if len(self._by_tool) >= _MAX_CACHED_TOOLS:
                self._by_tool.clear()
            parameters = set(tool.parameters)
            if tool.effect is not None:
                parameters.add(EFFECT)  # judged beside the arguments when the call has one
            found = tuple(
                r
                for r in self._compiled
                if r.applies_to(tool.name, tool.touches) and r.reads <= parameters
            )
            self._by_tool[tool] = found
        return found

    def _decide(self, rule: CompiledRule, tool: Tool, call: CallView) -> Decision:
        if rule.action != "ask":
            # Allow and Deny do not depend on the arguments: made once per (rule, tool).
            key = (rule.index, tool.name)
            decision = self._fixed.get(key)
            if decision is None:
                if len(self._fixed) >= _MAX_CACHED_TOOLS:
                    self._fixed.clear()
                decision = self._fixed[key] = self._fixed_decision(rule, tool)
            return decision
        return RequireApproval(
            rule.reason or f"policy rule {rule.label} asks a reviewer",
            rule.label,
            _preview(tool, call.arguments, rule.explain(call)),
            approvers=rule.approvers,
        )

    @staticmethod
    def _fixed_decision(rule: CompiledRule, tool: Tool) -> Allow | Deny:
        if rule.action == "allow":
            return Allow(rule.reason or f"allowed by policy rule {rule.label}", rule.label)
        return Deny(
            rule.reason
            or f"{tool.name} with these arguments is denied by policy rule {rule.label}",
            rule.label,
        )

    def _default(self, tool: Tool, call: CallView) -> Decision:
        label = self.rules.default_label
        what = f"no rule matched {tool.name} (touches {tool.touches})"
        action = self.rules.default
        if action == "allow":
            return Allow(f"{what}; the default is to allow", label)
        if action == "deny":
            return Deny(f"{what}; the default is to deny", label)
        return RequireApproval(
            f"{what}; the default is to ask a reviewer", label, _preview(tool, call.arguments, ())
        )


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_mtime_ns, info.st_size


def _preview(tool: Tool, arguments: Mapping[str, Any], matched: Iterable[str]) -> str:
    """Render what a call will do, for a reviewer: where it goes (first, see `_destination`),
    the tool, what it touches, why the rule matched
    (`matched`: lines such as ``host: api.example.com (matches "*.example.com")``), and the
    arguments as pretty JSON."""
    lines = [
        *destination_lines(arguments),
        f"tool: {tool.name} (touches {tool.touches})",
        *matched,
        "arguments:",
        json.dumps(dict(arguments), indent=2, sort_keys=True, ensure_ascii=False, default=str),
    ]
    return "\n".join(lines)
