"""`agent approve --always task|project` (and `agent review`'s `r`): the rule that allows calls
exactly like the one approved, shown to the reviewer and confirmed before it is saved (see
`agent.always`)."""

from __future__ import annotations

from rich.console import Console

from agent.always import Proposal, Scope, allow_always, propose
from agent.approvals import Seen
from agent.events import ApprovalDecided
from agent.state import TaskState
from agent.store import Store
from base.errors import ConfigError
from frontends.line_input import LineSource, read_line
from frontends.screen import shown


def show_rule(out: Console, proposal: Proposal) -> None:
    where = "this task only" if proposal.scope == "task" else "every task of this policy"
    out.print(
        f"this rule goes at the top of {shown(str(proposal.path))} ({where}):", soft_wrap=True
    )
    out.print(shown(proposal.rule), highlight=False, soft_wrap=True)


def approve_always(
    out: Console,
    stdin: LineSource,
    store: Store,
    state: TaskState,
    seen: Seen,
    *,
    scope: Scope,
    reviewer: str,
    origin: str,
    asked: bool | None,
    reason: str = "",
) -> ApprovalDecided:
    """Show the rule, have the reviewer say yes (`asked`: True when they already did, as with
    --yes; None when no one can be asked), then save it and approve. Raises `ConfigError` when
    they do not (nothing is saved or decided), and what `allow_always` raises."""
    proposal = propose(store, state, seen, scope=scope, reviewer=reviewer)
    show_rule(out, proposal)
    if asked is None:
        raise ConfigError("give --yes to save it without being asked (nothing is saved or decided)")
    if not asked:
        out.print("save it and approve? \\[y/N] ", end="")
        if read_line(stdin).strip().lower() not in ("y", "yes"):
            raise ConfigError("not saved, and nothing is decided")
    decision = allow_always(
        store,
        state,
        seen,
        scope=scope,
        confirmed=proposal.digest,
        reviewer=reviewer,
        origin=origin,
        reason=reason,
    )
    out.print(
        f"saved at the top of {shown(str(proposal.path))}: calls exactly like this one run "
        "unasked from now on",
        soft_wrap=True,
    )
    return decision
