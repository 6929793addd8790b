"""The agent runtime: a planner-executor loop over a durable event log.

What a program embedding the runtime uses, in one place::

    from agent import Runner, Registry, Gate, Store, tool, backend_from_uri

    @tool
    def add(a: int, b: int) -> int:
        \"\"\"Add two numbers.\"\"\"
        return a + b

    with Store.open() as store:
        runner = Runner(store, Registry([add]), Gate.default(), planner=backend_from_uri("..."))
        runner.subscribe(print)                       # the live stream (agent.live)
        state = await runner.run(runner.create("add 2 and 3"))

Each name is imported from its module on first use, so `import agent.events` (or the model
worker) does not load the runner, Docker's client or Playwright. `PUBLIC` says where each lives;
tests/test_public_surface.py pins the list.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from agent.backends import backend_from_uri
    from agent.backends.anthropic import AnthropicBackend
    from agent.backends.base import ModelBackend, ModelRequest, ModelResponse, ToolCall
    from agent.backends.local import LocalBackend
    from agent.backends.openai_compat import OpenAICompatibleBackend
    from agent.backends.scripted import ScriptedBackend
    from agent.effects import Effects, LocalEffects
    from agent.events import Event, Limits
    from agent.live import CommandOutput, Live, ModelDelta
    from agent.prices import Price
    from agent.runner import Runner
    from agent.state import TaskState
    from agent.store import Store, StoredEvent
    from base.errors import AgentError, BackendError, ConfigError, SandboxError, StoreError
    from policies import Allow, Deny, Gate, RequireApproval
    from tools.registry import Registry
    from tools.tool import ToolContext, ToolError, ToolResult, tool

#: each public name and the module it comes from
PUBLIC: dict[str, str] = {
    # the loop
    "Runner": "agent.runner",
    "Limits": "agent.events",
    "Price": "agent.prices",
    "TaskState": "agent.state",
    "Effects": "agent.effects",
    "LocalEffects": "agent.effects",
    # the log and the live stream
    "Store": "agent.store",
    "StoredEvent": "agent.store",
    "Event": "agent.events",
    "Live": "agent.live",
    "CommandOutput": "agent.live",
    "ModelDelta": "agent.live",
    # tools
    "tool": "tools.tool",
    "Registry": "tools.registry",
    "ToolContext": "tools.tool",
    "ToolResult": "tools.tool",
    "ToolError": "tools.tool",
    # the policy gate
    "Gate": "policies",
    "Allow": "policies",
    "Deny": "policies",
    "RequireApproval": "policies",
    # models
    "backend_from_uri": "agent.backends",
    "ModelBackend": "agent.backends.base",
    "ModelRequest": "agent.backends.base",
    "ModelResponse": "agent.backends.base",
    "ToolCall": "agent.backends.base",
    "ScriptedBackend": "agent.backends.scripted",
    "OpenAICompatibleBackend": "agent.backends.openai_compat",
    "AnthropicBackend": "agent.backends.anthropic",
    "LocalBackend": "agent.backends.local",
    # errors
    "AgentError": "base.errors",
    "ConfigError": "base.errors",
    "BackendError": "base.errors",
    "StoreError": "base.errors",
    "SandboxError": "base.errors",
}

__all__ = [
    "AgentError",
    "Allow",
    "AnthropicBackend",
    "BackendError",
    "CommandOutput",
    "ConfigError",
    "Deny",
    "Effects",
    "Event",
    "Gate",
    "Limits",
    "Live",
    "LocalBackend",
    "LocalEffects",
    "ModelBackend",
    "ModelDelta",
    "ModelRequest",
    "ModelResponse",
    "OpenAICompatibleBackend",
    "Price",
    "Registry",
    "RequireApproval",
    "Runner",
    "SandboxError",
    "ScriptedBackend",
    "Store",
    "StoreError",
    "StoredEvent",
    "TaskState",
    "ToolCall",
    "ToolContext",
    "ToolError",
    "ToolResult",
    "backend_from_uri",
    "tool",
]


def __getattr__(name: str) -> Any:
    module = PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'agent' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next use is a plain lookup
    return value
