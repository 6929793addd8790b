"""The policy gate: every tool call is allowed, denied, or held for a reviewer.

`Gate.evaluate(tool, arguments)` returns a typed `Decision` (`Allow | Deny | RequireApproval`),
each naming the rule that made it. Rules are TOML (see `policies.rules` for the format and
`policies/default.toml` for the packaged default); a malformed file raises `ConfigError` naming
the line that is wrong.
"""

from policies.decisions import Allow, Decision, Deny, RequireApproval
from policies.gate import Gate
from policies.rules import Action, Rule, RuleSet, load_rules, parse_rules

__all__ = [
    "Action",
    "Allow",
    "Decision",
    "Deny",
    "Gate",
    "RequireApproval",
    "Rule",
    "RuleSet",
    "load_rules",
    "parse_rules",
]
