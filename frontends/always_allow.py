"""`agent approve --always`: the rule that allows calls exactly like the one approved, shown
to the reviewer before it goes into the task's policy file (see policies/allowing.py)."""

from __future__ import annotations

import argparse
import getpass
from pathlib import Path

from rich.console import Console

from agent.runner import Runner
from agent.state import TaskState
from base.errors import ConfigError
from frontends.line_input import LineSource, read_line
from frontends.screen import shown
from policies.allowing import rule_for


def always_rule(
    args: argparse.Namespace,
    out: Console,
    stdin: LineSource,
    runner: Runner,
    state: TaskState,
    *,
    can_ask: bool,
) -> tuple[Path, str]:
    """The rule that allows the pending call exactly, and the policy file it goes in, once the
    reviewer has read it and said yes. Raises `ConfigError` (nothing is decided then)."""
    call = state.awaiting
    if args.edit is not None:
        raise ConfigError("--always allows the call as it is: give it without --edit")
    if call is None or call.arguments is None or state.created is None:
        raise ConfigError(f"task {state.task_id} is not waiting for an approval")
    if state.created.policy is None:
        raise ConfigError(
            "this task runs with the packaged default policy, which is not yours to change: "
            "copy policies/default.toml, give it to tasks with --policy or [policy] file, and "
            "--always writes its rules there"
        )
    tool = runner.registry.get(call.wire.name)
    if tool is None:
        raise ConfigError(f"the tool {call.wire.name} is not registered here")
    path = Path(state.created.policy)
    request = call.approval.approval_id if call.approval is not None else call.ref
    rule = rule_for(tool, call.arguments, who=getpass.getuser(), request=request)
    out.print(f"this rule goes at the top of {path}:", soft_wrap=True)
    out.print(shown(rule), highlight=False, soft_wrap=True)
    if args.yes:
        return path, rule
    if not can_ask:
        raise ConfigError("give --yes to save it without being asked (nothing is decided)")
    out.print("save it and approve? [y/N] ", end="")
    if read_line(stdin).strip().lower() not in ("y", "yes"):
        raise ConfigError("not saved, and nothing is decided")
    return path, rule
