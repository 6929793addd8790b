"""What a program embedding the runtime imports: `from agent import ...`. The list is pinned here,
so that a name leaving it (or coming in) is a decision, not an accident."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import agent

from .conftest import REPO

PINNED = [
    "AgentError", "Allow", "AnthropicBackend", "BackendError", "CommandOutput", "ConfigError",
    "Deny", "Effects", "Event", "Gate", "Limits", "Live", "LocalBackend", "LocalEffects",
    "ModelBackend", "ModelDelta", "ModelRequest", "ModelResponse", "OpenAICompatibleBackend",
    "Price", "Registry", "RequireApproval", "Runner", "SandboxError", "ScriptedBackend", "Store",
    "StoreError", "StoredEvent", "TaskState", "ToolCall", "ToolContext", "ToolError", "ToolResult",
    "backend_from_uri", "tool",
]  # fmt: skip


def test_the_public_names_are_the_pinned_ones_and_each_is_its_module_s_own() -> None:
    assert agent.__all__ == PINNED
    assert sorted(agent.PUBLIC) == PINNED  # every name says where it lives
    for name in PINNED:
        home = importlib.import_module(agent.PUBLIC[name])
        assert getattr(agent, name) is getattr(home, name), name


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="Nonesuch"):
        agent.Nonesuch  # noqa: B018


def test_importing_a_piece_of_the_core_does_not_load_the_runner() -> None:
    # The model worker and the CLI's quick commands import pieces; the surface must stay lazy.
    probe = (
        "import sys, agent.events; print('agent.runner' in sys.modules, 'docker' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["False", "False"]
    # The positive control: asking for Runner does load it.
    probe = "import sys, agent; agent.Runner; print('agent.runner' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["True"]
