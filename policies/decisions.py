"""What the gate decides about one tool call: `Allow | Deny | RequireApproval`.

Every decision carries a `reason` (said to the model for a denial, to the reviewer for an approval
request) and a `rule`: a short label of what decided it (``policies.toml:14`` for a rule, or
``policies.toml:2 [default]`` when no rule matched), so a recorded decision always says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal


@dataclass(frozen=True, slots=True)
class Allow:
    """The call may run now."""

    reason: str
    rule: str
    kind: ClassVar[Literal["allow"]] = "allow"


@dataclass(frozen=True, slots=True)
class Deny:
    """The call must not run. `reason` becomes an observation the model can act on."""

    reason: str
    rule: str
    kind: ClassVar[Literal["deny"]] = "deny"


@dataclass(frozen=True, slots=True)
class RequireApproval:
    """The call waits for a reviewer.

    `preview` renders exactly what will happen, for the reviewer: the tool, what it touches, its
    arguments as pretty JSON, and the host, method, path or command that made the rule match.
    """

    reason: str
    rule: str
    preview: str
    #: how many reviewers must approve it (each once); one denial denies it
    approvers: int = 1
    kind: ClassVar[Literal["ask"]] = "ask"


Decision = Allow | Deny | RequireApproval
