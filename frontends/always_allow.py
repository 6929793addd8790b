"""`agent approve --always task|project` (and `agent review`'s `r`): the rule that allows calls
exactly like the one approved, shown to the reviewer and confirmed before it is saved (see
`agent.always`)."""

from __future__ import annotations

from rich.console import Console

from agent.always import Proposal, Scope, propose
from agent.approvals import Seen
from agent.config import EngineConfig
from agent.events import ApprovalDecided, ApprovalGiven
from agent.state import TaskState
from agent.store import Store
from base.errors import ConfigError
from frontends._deciding import decide_on_its_engine
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
    engine: EngineConfig | None = None,
) -> ApprovalDecided | ApprovalGiven:
    """Show the rule, have the reviewer say yes (`asked`: True when they already did, as with
    --yes; None when no one can be asked), then save it and approve (for a task of the
    Temporal engine, through its workflow, on the service `engine` names). Raises
    `ConfigError` when they do not (nothing is saved or decided), and what `allow_always` and
    `decide_on_its_engine` raise."""
    proposal = propose(store, state, seen, scope=scope, reviewer=reviewer)
    show_rule(out, proposal)
    if asked is None:
        raise ConfigError("give --yes to save it without being asked (nothing is saved or decided)")
    if not asked:
        out.print("save it and approve? \\[y/N] ", end="")
        if read_line(stdin).strip().lower() not in ("y", "yes"):
            raise ConfigError("not saved, and nothing is decided")
    decision = decide_on_its_engine(
        store,
        state,
        seen,
        engine=engine,
        approved=True,
        reason=reason,
        reviewer=reviewer,
        origin=origin,
        always=(scope, proposal.digest),
    )
    out.print(
        f"saved at the top of {shown(str(proposal.path))}: calls exactly like this one run "
        "unasked from now on",
        soft_wrap=True,
    )
    return decision
